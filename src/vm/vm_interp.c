/* The interpreter: runs VM threads on a module's linked code (vm_link.c).
 *
 * The loop keeps pc, sp and bp in locals and dispatches with computed goto
 * (define VM_SWITCH_DISPATCH for a portable switch). Nothing the verifier
 * proved is checked again here: operand ranges, stack depth per
 * instruction, jump targets. What is checked: the frame fits the data
 * stack and call-depth limits at every call, memory addresses (through the
 * worker's TLB fast path, else vm__xlate), division by zero, and
 * everything else that depends on run-time values.
 *
 * Registers: pc points at the running instruction's handler cell until the
 * handler moves it, so on any error it names the faulting instruction. The
 * top of the operand stack is cached in tos; sp points at the word below
 * it (the top word in memory); bp at slot 0 of the frame. With an empty
 * operand stack tos mirrors the word at sp + 1 (the frame's last slot, or
 * below the frame), so pushing it there is harmless; handlers that write
 * a slot other than SET's way keep the mirror (MIRROR). Handlers that are
 * not on the hot path spill tos first (SPILL: the memory then holds the
 * whole stack, sp at the top word, as the thread's saved state does) and
 * reload it at the end (NEXT_FILL). SAVE() writes the spilled registers
 * to the thread (as indices) before it stops or is handed to another
 * worker; a thread is resumed from exactly that state.
 *
 * Parking (vm_thread.c): a slow path that must wait -- a join, wait or
 * lock, stdio, anything the page source must fetch (global memory goes
 * through it, vm_gsrc.h: translations on a TLB miss, atomics, fences,
 * galloc/free) -- returns VM_PARK, and SLOW() stops the thread *at* the
 * instruction, its stack as the instruction found it. When the thread is
 * resumed the instruction runs again and takes its reply; copy and fill
 * keep their progress in their operands, write in t->partial, join its
 * result in t->held. The fences SPEC 3.1 asks for are page source calls:
 * spawn (release), a thread's end (release), join (acquire), fence.
 *
 * Scheduling: every backward jump and call spends one unit of the thread's
 * budget; when it runs out the node's inbox and timers get a look, and
 * the thread yields if anything else waits, or notices if the process has
 * ended.
 *
 * A runtime error ends the process (exit 70) with one line on stderr:
 *   FILE:LINE: runtime error: WHAT (in function NAME, thread N)
 * Runs on worker OS threads; no global state. */
#include "vm/vm_gsrc.h"
#include "vm/vm_peer.h"
#include "vm/vm_xops.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "Flock memory is little-endian; this interpreter assumes a little-endian host"
#endif

#if !defined(VM_SWITCH_DISPATCH) && !defined(__GNUC__)
#define VM_SWITCH_DISPATCH 1
#endif

static VM_PROGRAM_MEMORY enum vm_stop run(struct vm_worker *w,
					   struct vm_thread *t,
					   const void *const **table);

/* ---- Slow paths, out of the loop ---- */

static enum vm_res load_slow(struct vm_worker *w, vm_word a, unsigned n,
			     const char *what, vm_word *v)
{
	uint8_t b[8];
	enum vm_res rc = vm__mem_read(w, b, a, n, what);

	*v = 0;
	memcpy(v, b, n);
	return rc;
}

static enum vm_res store_slow(struct vm_worker *w, vm_word a, unsigned n,
			      vm_word v, const char *what)
{
	return vm__mem_write(w, a, &v, n, what);
}

static enum vm_res do_argv(struct vm_worker *w, int64_t i, vm_word buf,
			   vm_word n, vm_word *res)
{
	const struct vm_options *o = &w->cur->proc->opt;
	enum vm_res rc;
	size_t len;

	if (i < 0 || i >= o->argc) {
		*res = (vm_word)-FL_EINVAL;
		return VM_OK;
	}
	len = strlen(o->argv[i]);
	w->stay = true; /* the arguments are this machine's */
	rc = vm__mem_write(w, buf, o->argv[i], len < n ? len : n, "argv");
	if (rc == VM_OK && len < n)
		rc = vm__mem_write(w, buf + len, "", 1, "argv");
	w->stay = false;
	*res = len;
	return rc;
}

static bool aligned(struct vm_worker *w, vm_word a, const char *what)
{
	if ((a & 7) == 0)
		return true;
	vm__fault(w, "%s at unaligned address 0x%" PRIx64
		     " (atomics need 8-byte alignment)",
		  what, a);
	return false;
}

/* The host word of local 8-byte-aligned @a for an atomic access. */
static enum vm_res local_word(struct vm_worker *w, vm_word a, const char *what,
			      uint64_t **q)
{
	struct vm_tlb_entry *e = &w->wtlb[(a >> VM_PAGE_SHIFT) % VM_TLB_SIZE];
	uint8_t *d;
	enum vm_res rc;

	if (e->key == a >> VM_PAGE_SHIFT) {
		*q = (uint64_t *)(e->data + (a & (VM_PAGE_SIZE - 1)));
		return VM_OK;
	}
	rc = vm__xlate(w, a, 8, true, what, &d);
	*q = (uint64_t *)d;
	return rc;
}

/* cas, xadd, xchg: global words at the page source, local ones here. */
static VM_PROGRAM_MEMORY enum vm_res atomic_op(struct vm_worker *w, enum vm_gop op, vm_word addr,
			     vm_word a, vm_word b, const char *what,
			     vm_word *old)
{
	struct vm_gsrc *g = w->cur->proc->gs;
	uint64_t *q;
	enum vm_res rc;

	if (!aligned(w, addr, what))
		return VM_FAULT;
	if (addr & VM_GLOBAL_BIT)
		return g->ops->atomic(g, w, op, addr, a, b, what, old);
	if ((rc = local_word(w, addr, what, &q)) != VM_OK)
		return rc;
	/* Local memory is the thread's own: nothing to order. */
	switch (op) {
	case VM_GOP_CAS:
		*old = *q;
		if (*q == a)
			*q = b;
		break;
	case VM_GOP_XADD:
		*old = *q;
		*q += a;
		break;
	case VM_GOP_XCHG:
		*old = *q;
		*q = a;
		break;
	}
	return VM_OK;
}

static enum vm_res fence(struct vm_worker *w, enum vm_fence kind)
{
	struct vm_gsrc *g = w->cur->proc->gs;

	return g->ops->fence(g, w, kind);
}

static enum vm_res do_alloc(struct vm_worker *w, vm_word n, vm_word *a)
{
	struct vm_space *s = &w->cur->local;
	uint64_t copies = s->copies;
	vm_word slab = vm__heap_slab_for(s, n);
	struct vm_page *pg = slab ? vm__page_get(s, slab) : NULL;
	enum vm_res rc;

	/* The slot it takes is zeroed: an absent page's bytes come first. */
	if (pg != NULL && pg->lent != NULL &&
	    (rc = vm__lent_fetch(w, pg, slab << VM_PAGE_SHIFT)) != VM_OK)
		return rc;
	*a = vm__heap_alloc(s, n);
	if (s->copies != copies) /* moved pages: cached translations stale */
		vm__tlb_flush(w);
	if (*a == 0) {
		char what[64];
		snprintf(what, sizeof what, "alloc of %" PRIu64 " bytes", n);
		vm__oom_msg(&w->fault, w->cur->proc, what, vm__alloc_cost(n));
		return VM_FAULT;
	}
	return VM_OK;
}

static enum vm_res do_free(struct vm_worker *w, vm_word a)
{
	struct vm_thread *t = w->cur;
	struct vm_space *s = &t->local;
	uint64_t copies = s->copies;
	vm_word first, n;
	int rc;

	if (a & VM_GLOBAL_BIT)
		return t->proc->gs->ops->free(t->proc->gs, w, a);
	rc = vm__heap_free(s, a, &first, &n);
	if (rc == FL_ENOMEM) {
		vm__fault(w, "out of memory (free)");
		return VM_FAULT;
	}
	if (rc != 0) {
		vm__fault(w, "free of 0x%" PRIx64 ", which is not a live block", a);
		return VM_FAULT;
	}
	if (s->copies != copies)
		vm__tlb_flush(w);
	else
		vm__tlb_drop_pages(w, 0, first, n);
	return VM_OK;
}

static vm_word now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (vm_word)ts.tv_sec * 1000000000u + (vm_word)ts.tv_nsec;
}

/* Thread @t returned @r from its function. */
static enum vm_stop finish(struct vm_worker *w, struct vm_thread *t, vm_word r)
{
	struct vm_proc *p = t->proc;
	struct vm_thread *j;

	bool rj;

	if (t->tid == p->main_tid) {
		vm__proc_end(p, (int)(r & 255));
		return VM_STOP_END;
	}
	/* Its memory is no longer needed; only the result is. */
	vm__space_close(&t->local);
	vm__thread_free_stacks(t);
	if (p->peer != NULL &&
	    vm_peer_home(p->peer, vm_gslot(t->tid)) != p->peer->self) {
		/* A guest: its home keeps its entry and answers joins. */
		bool census = p->opt.survive;
		if (census)
			pthread_rwlock_rdlock(&p->depart);
		pthread_mutex_lock(&p->tlock);
		vm__thread_unlist(p, t->tid);
		pthread_mutex_unlock(&p->tlock);
		p->peer->ops->done(p->peer, t->tid, r);
		if (census)
			pthread_rwlock_unlock(&p->depart);
		vm__thread_free(t);
		return VM_STOP_DONE;
	}
	pthread_mutex_lock(&p->tlock);
	t->result = r;
	atomic_store(&t->state, VM_T_DONE);
	j = t->joiner;
	rj = t->rjoined;
	if (j != NULL || rj)
		vm__thread_unlist(p, t->tid);
	pthread_mutex_unlock(&p->tlock);
	if (j != NULL) {
		vm__thread_free(t);
		vm__resume(w, j, 0, r); /* the result, as a reply */
	} else if (rj) {
		vm_word tid = t->tid;
		vm__thread_free(t);
		p->peer->ops->joined(p->peer, tid, r);
	}
	return VM_STOP_DONE;
}

enum join_result { JOIN_DONE, JOIN_PARKED, JOIN_ERROR };

/* Join thread @tid from @t, whose registers are saved at the join. */
static enum join_result join(struct vm_worker *w, struct vm_thread *t,
			     vm_word tid, vm_word *r)
{
	struct vm_proc *p = t->proc;
	struct vm_thread *c;

	if (p->peer != NULL &&
	    vm_peer_home(p->peer, vm_gslot(tid)) != p->peer->self &&
	    tid != t->tid) {
		/* Its home, another machine, has its entry: ask there. */
		vm__park_begin(t, VM_PARK_JOIN, tid);
		p->peer->ops->join(p->peer, t, tid);
		return JOIN_PARKED;
	}
	pthread_mutex_lock(&p->tlock);
	c = vm__thread_find(p, tid);
	if (c == NULL || c->joined || c == t) {
		pthread_mutex_unlock(&p->tlock);
		if (c == t)
			vm__fault(w, "thread %" PRIu64 " joins itself", tid);
		else
			vm__fault(w, "join of thread %" PRIu64 ", which does not "
				     "exist or was already joined",
				  tid);
		return JOIN_ERROR;
	}
	c->joined = true;
	if (atomic_load(&c->state) == VM_T_DONE) {
		*r = c->result;
		vm__thread_unlist(p, tid);
		pthread_mutex_unlock(&p->tlock);
		vm__thread_free(c);
		return JOIN_DONE;
	}
	vm__park_begin(t, VM_PARK_JOIN, tid);
	c->joiner = t;
	pthread_mutex_unlock(&p->tlock);
	return JOIN_PARKED;
}

/* ---- The loop ---- */

enum vm_stop vm__interp(struct vm_worker *w, struct vm_thread *t)
{
	/* A thread that moved here sees what was released before it left
	 * (its spawn, its last fence): its first act is an acquire. */
	if (__builtin_expect(t->arrive, 0)) {
		switch (fence(w, VM_FENCE_ACQUIRE)) {
		case VM_OK:
			t->arrive = false;
			break;
		case VM_PARK:
			return VM_STOP_PARK;
		case VM_FAULT:
			vm__proc_fail(t->proc, t, t->pc, w->fault.msg);
			return VM_STOP_END;
		default:
			return VM_STOP_END;
		}
	}
	return run(w, t, NULL);
}

const void *const *vm__interp_handlers(void)
{
	const void *const *table;

	run(NULL, NULL, &table);
	return table;
}

/* Backward jumps and calls a thread runs before it lets others run. */
#define VM_BUDGET 10000

static VM_PROGRAM_MEMORY enum vm_stop run(struct vm_worker *w,
					   struct vm_thread *t,
					   const void *const **table)
{
#ifndef VM_SWITCH_DISPATCH
	static const void *const labels[VM_XOP__COUNT] = {
#define OP(name, mn, opnd, pops, pushes, flags, effect, doc) &&op_##name,
#include "vm/vm_opcodes.def"
#undef OP
#define X(name) &&op_##name,
		VM_XOPS(X)
#undef X
	};
	if (t == NULL) {
		*table = labels;
		return VM_STOP_END;
	}
#else
	if (t == NULL) {
		*table = NULL;
		return VM_STOP_END;
	}
#endif
	struct vm_proc *p = t->proc;
	const union vm_cell *const cells = p->x.cells;
	struct vm_tlb_entry *const rtlb = w->rtlb, *const wtlb = w->wtlb;
	const union vm_cell *pc = cells + t->pc;
	vm_word *sp = t->stack + t->sp, *bp = t->stack + t->bp, a, b;
	vm_word tos = *sp--; /* stack[-1] exists: see vm__thread_grow_stack */
	int64_t sa, sb;
	int budget = VM_BUDGET;
	struct vm_reply reply;

	if (atomic_load(&p->ending))
		return VM_STOP_END;
#ifdef VM_SWITCH_DISPATCH
#define CASE(name) case VM_OP_##name:
#define NEXT(n)                                                               \
	do {                                                                  \
		pc += (n);                                                    \
		goto dispatch;                                                \
	} while (0)
#define JUMP(to)                                                              \
	do {                                                                  \
		pc = (to);                                                    \
		goto dispatch;                                                \
	} while (0)
#else
#define CASE(name) op_##name:
#define NEXT(n)                                                               \
	do {                                                                  \
		pc += (n);                                                    \
		goto *pc->h;                                                  \
	} while (0)
#define JUMP(to)                                                              \
	do {                                                                  \
		pc = (to);                                                    \
		goto *pc->h;                                                  \
	} while (0)
#endif
#define OPND (pc[1])
/* After writing slot @x other than by SET: with an empty stack, tos must
 * mirror the word at sp + 1 (see the register notes), which is the
 * frame's last slot -- maybe @x. */
#define MIRROR(x)                                                             \
	do {                                                                  \
		if (sp + 1 == bp + (x))                                          \
			tos = bp[(x)];                                        \
	} while (0)
/* tos into memory (sp then points at the top word) and back. */
#define SPILL() (*++sp = tos)
#define NEXT_FILL(n)                                                          \
	do {                                                                  \
		tos = *sp--;                                                  \
		NEXT(n);                                                      \
	} while (0)
#define FAIL(...)                                                             \
	do {                                                                  \
		vm__fault(w, __VA_ARGS__);                                    \
		goto error;                                                   \
	} while (0)
/* The result of a slow path (enum vm_res) called with the stack spilled
 * and as the instruction found it: on VM_PARK the thread stops at this
 * instruction, which runs again when it is resumed. */
#define SLOW(expr)                                                            \
	do {                                                                  \
		switch (expr) {                                               \
		case VM_OK:                                                   \
			break;                                                \
		case VM_FAULT:                                                \
			goto error;                                           \
		case VM_PARK:                                                 \
			SAVE(pc);                                             \
			return VM_STOP_PARK;                                  \
		case VM_END:                                                  \
			return VM_STOP_END;                                   \
		case VM_MOVE:                                                 \
			SAVE(pc);                                             \
			return VM_STOP_MOVE;                                  \
		}                                                             \
	} while (0)
/* Registers into the thread, with pc at @next (a cell pointer). */
#define SAVE(next)                                                            \
	do {                                                                  \
		t->pc = (uint32_t)((next) - cells);                           \
		t->sp = (int32_t)(sp - t->stack);                             \
		t->bp = (uint32_t)(bp - t->stack);                            \
	} while (0)
/* Spend budget at a backward jump or call to @to; maybe let others run. */
#define TICK(to)                                                              \
	do {                                                                  \
		if (--budget == 0) {                                          \
			budget = VM_BUDGET;                                   \
			if (atomic_load(&p->ending))                          \
				return VM_STOP_END;                           \
			if (vm__node_poll(w) && atomic_load(&p->ending))      \
				return VM_STOP_END;                           \
			if (atomic_load(&w->node->nqueued) > 0 ||             \
			    w->lifo != NULL || p->opt.migrate) {              \
				SPILL();                                      \
				SAVE(to);                                     \
				return VM_STOP_YIELD;                         \
			}                                                     \
		}                                                             \
	} while (0)
/* Host pointer to @n bytes at @addr when the TLB has the page and the
 * access stays inside it, else NULL (then take the slow path). */
#define FAST(tlb, addr, n)                                                    \
	(tlb[((addr) >> VM_PAGE_SHIFT) % VM_TLB_SIZE].key ==                  \
			 ((addr) >> VM_PAGE_SHIFT) &&                         \
		 ((addr) & (VM_PAGE_SIZE - 1)) <= VM_PAGE_SIZE - (n)          \
	 ? tlb[((addr) >> VM_PAGE_SHIFT) % VM_TLB_SIZE].data +                \
		   ((addr) & (VM_PAGE_SIZE - 1))                              \
	 : NULL)
#define LOAD(n, type, name)                                                   \
	{                                                                     \
		const uint8_t *q_ = FAST(rtlb, tos, n);                       \
		type v_;                                                      \
		if (q_ != NULL) {                                             \
			memcpy(&v_, q_, n);                                   \
			tos = (vm_word)v_;                                    \
		} else {                                                      \
			switch (load_slow(w, tos, n, name, &a)) {             \
			case VM_OK:                                           \
				break;                                        \
			case VM_PARK: /* the address is still in tos */       \
				SPILL();                                      \
				SAVE(pc);                                     \
				return VM_STOP_PARK;                          \
			case VM_MOVE: /* to the page's home */                \
				SPILL();                                      \
				SAVE(pc);                                     \
				return VM_STOP_MOVE;                          \
			default:                                              \
				goto error;                                   \
			}                                                     \
			memcpy(&v_, &a, n);                                   \
			tos = (vm_word)v_;                                    \
		}                                                             \
		NEXT(1);                                                      \
	}
#define STORE(n, name)                                                        \
	{                                                                     \
		uint8_t *q_ = FAST(wtlb, sp[0], n);                           \
		if (q_ != NULL)                                               \
			memcpy(q_, &tos, n);                                  \
		else                                                          \
			switch (store_slow(w, sp[0], n, tos, name)) {         \
			case VM_OK:                                           \
				break;                                        \
			case VM_PARK:                                         \
				SPILL();                                      \
				SAVE(pc);                                     \
				return VM_STOP_PARK;                          \
			case VM_MOVE: /* to the page's home */                \
				SPILL();                                      \
				SAVE(pc);                                     \
				return VM_STOP_MOVE;                          \
			default:                                              \
				goto error;                                   \
			}                                                     \
		tos = sp[-1];                                                 \
		sp -= 2;                                                      \
		NEXT(1);                                                      \
	}
#define BINOP(expr)                                                           \
	{                                                                     \
		a = *sp--;                                                    \
		b = tos;                                                      \
		tos = (expr);                                                 \
		NEXT(1);                                                      \
	}

#ifdef VM_SWITCH_DISPATCH
dispatch:
	switch ((int)pc->op)
#else
	goto *pc->h;
#endif
	{
	CASE(PUSH)
	CASE(PUSHA)
	{
		SPILL();
		tos = OPND.u;
		NEXT(2);
	}
	CASE(DUP)
	{
		SPILL();
		NEXT(1);
	}
	CASE(DROP)
	{
		tos = *sp--;
		NEXT(1);
	}
	CASE(SWAP)
	{
		a = *sp;
		*sp = tos;
		tos = a;
		NEXT(1);
	}
	CASE(OVER)
	{
		a = *sp;
		SPILL();
		tos = a;
		NEXT(1);
	}
	CASE(ROT)
	{
		a = sp[-1];
		sp[-1] = sp[0];
		sp[0] = tos;
		tos = a;
		NEXT(1);
	}
	CASE(PICK)
	{
		a = OPND.u == 0 ? tos : sp[1 - (ptrdiff_t)OPND.u];
		SPILL();
		tos = a;
		NEXT(2);
	}
	CASE(GET)
	{
		SPILL();
		tos = bp[OPND.u];
		NEXT(2);
	}
	CASE(SET)
	{
		bp[OPND.u] = tos;
		tos = *sp--;
		NEXT(2);
	}
	CASE(ADD) BINOP(a + b)
	CASE(SUB) BINOP(a - b)
	CASE(MUL) BINOP(a * b)
	CASE(DIV)
	{
		sa = (int64_t)*sp;
		sb = (int64_t)tos;
		if (sb == 0)
			FAIL("division by zero");
		sp--;
		tos = sb == -1 ? (vm_word)0 - (vm_word)sa : (vm_word)(sa / sb);
		NEXT(1);
	}
	CASE(MOD)
	{
		sa = (int64_t)*sp;
		sb = (int64_t)tos;
		if (sb == 0)
			FAIL("division by zero");
		sp--;
		tos = sb == -1 ? 0 : (vm_word)(sa % sb);
		NEXT(1);
	}
	CASE(DIVU)
	{
		if (tos == 0)
			FAIL("division by zero");
		tos = *sp-- / tos;
		NEXT(1);
	}
	CASE(MODU)
	{
		if (tos == 0)
			FAIL("division by zero");
		tos = *sp-- % tos;
		NEXT(1);
	}
	CASE(NEG)
	{
		tos = (vm_word)0 - tos;
		NEXT(1);
	}
	CASE(AND) BINOP(a & b)
	CASE(OR) BINOP(a | b)
	CASE(XOR) BINOP(a ^ b)
	CASE(NOT)
	{
		tos = ~tos;
		NEXT(1);
	}
	CASE(SHL) BINOP(a << (b & 63))
	CASE(SHR) BINOP(a >> (b & 63))
	CASE(SAR) BINOP((vm_word)((int64_t)a >> (b & 63)))
	CASE(EQ) BINOP(a == b)
	CASE(NE) BINOP(a != b)
	CASE(LT) BINOP((int64_t)a < (int64_t)b)
	CASE(LE) BINOP((int64_t)a <= (int64_t)b)
	CASE(GT) BINOP((int64_t)a > (int64_t)b)
	CASE(GE) BINOP((int64_t)a >= (int64_t)b)
	CASE(LTU) BINOP(a < b)
	CASE(LEU) BINOP(a <= b)
	CASE(GTU) BINOP(a > b)
	CASE(GEU) BINOP(a >= b)
	CASE(JMP)
	{
		JUMP(OPND.target);
	}
	CASE(JZ)
	{
		a = tos;
		tos = *sp--;
		if (a == 0)
			JUMP(OPND.target);
		NEXT(2);
	}
	CASE(JNZ)
	{
		a = tos;
		tos = *sp--;
		if (a != 0)
			JUMP(OPND.target);
		NEXT(2);
	}
	CASE(JMPB)
	{
		TICK(OPND.target);
		JUMP(OPND.target);
	}
	CASE(JZB)
	{
		a = tos;
		tos = *sp--;
		if (a == 0) {
			TICK(OPND.target);
			JUMP(OPND.target);
		}
		NEXT(2);
	}
	CASE(JNZB)
	{
		a = tos;
		tos = *sp--;
		if (a != 0) {
			TICK(OPND.target);
			JUMP(OPND.target);
		}
		NEXT(2);
	}
	/* Superinstructions (vm_link.c lists their sequences): operands are
	 * read from the cells of the instructions they replace. */
#define X(unused, name, expr)                                                 \
	CASE(name##_S)                                                        \
	{                                                                     \
		a = tos;                                                      \
		b = bp[pc[1].u];                                              \
		tos = (expr);                                                 \
		NEXT(3);                                                      \
	}                                                                     \
	CASE(name##_K)                                                        \
	{                                                                     \
		a = tos;                                                      \
		b = pc[1].u;                                                  \
		tos = (expr);                                                 \
		NEXT(3);                                                      \
	}                                                                     \
	CASE(name##_SET)                                                      \
	{                                                                     \
		a = *sp--;                                                    \
		b = tos;                                                      \
		bp[pc[2].u] = (expr);                                         \
		tos = *sp--; /* after the store: see MIRROR */                \
		NEXT(3);                                                      \
	}                                                                     \
	CASE(name##_SSS)                                                      \
	{                                                                     \
		a = bp[pc[1].u];                                              \
		b = bp[pc[3].u];                                              \
		bp[pc[6].u] = (expr);                                         \
		MIRROR(pc[6].u);                                              \
		NEXT(7);                                                      \
	}
	VM_FUSED_BINOPS(X, _)
#undef X
/* Fused compare-and-branch: the operands (a below, b top) of each form,
 * then the branch: to a forward target when the compare is false (jz), or
 * to a backward one when it is true (jnz, spending budget); @t is the
 * target's cell, @size the cells the sequence spans. */
#define OPS_STACK a = sp[0], b = tos, tos = sp[-1], sp -= 2
#define OPS_S a = tos, b = bp[pc[1].u], tos = *sp--
#define OPS_K a = tos, b = pc[1].u, tos = *sp--
#define OPS_SS a = bp[pc[1].u], b = bp[pc[3].u]
#define OPS_SK a = bp[pc[1].u], b = pc[3].u
#define BR_JZ(cond, t, size)                                                  \
	{                                                                     \
		if (!(cond))                                                  \
			JUMP(pc[t].target);                                   \
		NEXT(size);                                                   \
	}
#define BR_JNZB(cond, t, size)                                                \
	{                                                                     \
		if (cond) {                                                   \
			TICK(pc[t].target);                                   \
			JUMP(pc[t].target);                                   \
		}                                                             \
		NEXT(size);                                                   \
	}
#define X(unused, name, expr)                                                 \
	CASE(name##_JZ) { OPS_STACK; BR_JZ(expr, 2, 3) }                      \
	CASE(name##_S_JZ) { OPS_S; BR_JZ(expr, 4, 5) }                        \
	CASE(name##_K_JZ) { OPS_K; BR_JZ(expr, 4, 5) }                        \
	CASE(name##_SS_JZ) { OPS_SS; BR_JZ(expr, 6, 7) }                      \
	CASE(name##_SK_JZ) { OPS_SK; BR_JZ(expr, 6, 7) }                      \
	CASE(name##_JNZB) { OPS_STACK; BR_JNZB(expr, 2, 3) }                  \
	CASE(name##_S_JNZB) { OPS_S; BR_JNZB(expr, 4, 5) }                    \
	CASE(name##_K_JNZB) { OPS_K; BR_JNZB(expr, 4, 5) }                    \
	CASE(name##_SS_JNZB) { OPS_SS; BR_JNZB(expr, 6, 7) }                  \
	CASE(name##_SK_JNZB) { OPS_SK; BR_JNZB(expr, 6, 7) }
	VM_FUSED_CMPS(X, _)
#undef X
#undef OPS_STACK
#undef OPS_S
#undef OPS_K
#undef OPS_SS
#undef OPS_SK
#undef BR_JZ
#undef BR_JNZB
	CASE(DIV_K) /* k is neither 0 nor -1 */
	{
		tos = (vm_word)((int64_t)tos / pc[1].i);
		NEXT(3);
	}
	CASE(MOD_K)
	{
		tos = (vm_word)((int64_t)tos % pc[1].i);
		NEXT(3);
	}
	CASE(INC_S)
	{
		bp[pc[1].u] += pc[3].u;
		MIRROR(pc[1].u);
		NEXT(7);
	}
	CASE(FORLOOP) /* i += 1; if i < hi: jump back */
	{
		a = ++bp[pc[1].u];
		MIRROR(pc[1].u);
		if ((int64_t)a < (int64_t)bp[pc[10].u]) {
			TICK(pc[13].target);
			JUMP(pc[13].target);
		}
		NEXT(14);
	}
	CASE(IDX8_S)
	{
		tos += bp[pc[1].u] << 3;
		NEXT(6);
	}
/* A fused load of @n bytes (1 or 8) from @addr: on a TLB miss the load
 * instruction itself, cell @at, runs with the address (a fault names it). */
#define FUSED_LOAD(n, addr, at, size)                                         \
	{                                                                     \
		a = (addr);                                                   \
		const uint8_t *q_ = FAST(rtlb, a, n);                         \
		if (q_ != NULL) {                                             \
			tos = 0;                                              \
			memcpy(&tos, q_, n);                                  \
			NEXT(size);                                           \
		}                                                             \
		tos = a;                                                      \
		JUMP(pc + (at));                                              \
	}
	CASE(LDIDX8_S) FUSED_LOAD(8, tos + (bp[pc[1].u] << 3), 6, 7)
	CASE(IDX8)
	{
		tos = *sp-- + (tos << 3);
		NEXT(4);
	}
	CASE(LDIDX8) FUSED_LOAD(8, *sp-- + (tos << 3), 4, 5)
	CASE(SET_K)
	{
		bp[pc[3].u] = pc[1].u;
		MIRROR(pc[3].u);
		NEXT(4);
	}
	CASE(LD8_S) FUSED_LOAD(1, tos + bp[pc[1].u], 3, 4)
	CASE(GET_E) /* GET on an empty stack: tos is the mirror */
	{
		sp++;
		tos = bp[OPND.u];
		NEXT(2);
	}
	CASE(PUSH_E)
	{
		sp++;
		tos = OPND.u;
		NEXT(2);
	}
	CASE(GET2_E)
	{
		sp[2] = bp[pc[1].u];
		sp += 2;
		tos = bp[pc[3].u];
		NEXT(4);
	}
	CASE(GET2)
	{
		sp[1] = tos;
		sp[2] = bp[pc[1].u];
		sp += 2;
		tos = bp[pc[3].u];
		NEXT(4);
	}
	CASE(CALL)
	{
		const struct vm_xfunc *callee = OPND.fn;
		vm_word *nbp;
		size_t need;
		TICK(pc);
		SPILL();
		nbp = sp - callee->nargs + 1;
		need = (size_t)(nbp - t->stack) + callee->frame_words + 1;
		if (need > t->stack_cap) {
			size_t osp = (size_t)(sp - t->stack);
			size_t obp = (size_t)(bp - t->stack);
			if (!vm__thread_grow_stack(t, &w->fault, need))
				goto error;
			sp = t->stack + osp;
			bp = t->stack + obp;
			nbp = sp - callee->nargs + 1;
		}
		if (t->depth == t->frames_cap &&
		    !vm__thread_grow_frames(t, &w->fault, t->depth + 1))
			goto error;
		t->frames[t->depth].ret = (uint32_t)(pc + 2 - cells);
		t->frames[t->depth].bp = (uint32_t)(bp - t->stack);
		t->depth++;
		for (uint32_t i = callee->nargs; i < callee->nslots; i++)
			nbp[i] = 0;
		bp = nbp;
		sp = nbp + callee->nslots - 1;
		tos = *sp--;
		JUMP(callee->entry);
	}
	CASE(RET)
	{
		if (t->depth == 0) {
			SPILL();
			/* Its writes are released before its result is. */
			SLOW(fence(w, VM_FENCE_RELEASE));
			SAVE(pc);
			return finish(w, t, tos);
		}
		t->depth--;
		sp = bp - 1; /* tos, the result, replaces the frame */
		bp = t->stack + t->frames[t->depth].bp;
		JUMP(cells + t->frames[t->depth].ret);
	}
	CASE(EXIT)
	{
		SPILL();
		vm__proc_end(p, (int)(*sp & 255));
		return VM_STOP_END;
	}
	CASE(TRAP)
	{
		SPILL();
		FAIL("trap %" PRId64, (int64_t)*sp);
	}
	CASE(LD8) LOAD(1, uint8_t, "ld8")
	CASE(LD16) LOAD(2, uint16_t, "ld16")
	CASE(LD32) LOAD(4, uint32_t, "ld32")
	CASE(LD64) LOAD(8, uint64_t, "ld64")
	CASE(LDS8) LOAD(1, int8_t, "lds8")
	CASE(LDS16) LOAD(2, int16_t, "lds16")
	CASE(LDS32) LOAD(4, int32_t, "lds32")
	CASE(ST8) STORE(1, "st8")
	CASE(ST16) STORE(2, "st16")
	CASE(ST32) STORE(4, "st32")
	CASE(ST64) STORE(8, "st64")
	CASE(ALLOC)
	{
		SPILL();
		if (*sp != 0) {
			SLOW(do_alloc(w, *sp, &a));
			*sp = a;
		}
		NEXT_FILL(1);
	}
	CASE(GALLOC)
	{
		SPILL();
		if (*sp != 0) {
			SLOW(p->gs->ops->alloc(p->gs, w, *sp, &a));
			*sp = a;
		}
		NEXT_FILL(1);
	}
	CASE(FREE)
	{
		SPILL();
		if (*sp != 0)
			SLOW(do_free(w, *sp));
		sp--;
		NEXT_FILL(1);
	}
	CASE(COPY) /* the operands track progress: see vm__mem_copy */
	{
		SPILL();
		SLOW(vm__mem_copy(w, &sp[-2], &sp[-1], &sp[0]));
		sp -= 3;
		NEXT_FILL(1);
	}
	CASE(FILL)
	{
		SPILL();
		SLOW(vm__mem_fill(w, &sp[-2], (uint8_t)sp[-1], &sp[0]));
		sp -= 3;
		NEXT_FILL(1);
	}
	CASE(SPAWN)
	{
		SPILL();
		const struct vm_xfunc *callee = OPND.fn;
		struct vm_thread *c;
		/* The parent's writes are released before the child exists. */
		SLOW(fence(w, VM_FENCE_RELEASE));
		/* Local pages become shared copy-on-write: no cached
		 * translation may write them in place any more. */
		vm__tlb_drop_local_writes(w);
		c = vm__thread_make(p, callee, sp - callee->nargs + 1,
				    callee->nargs, t, &w->fault);
		if (c == NULL)
			goto error;
		sp -= callee->nargs;
		*++sp = c->tid;
		/* Another machine wants work: the child goes there. */
		if (p->peer != NULL && p->peer->ops->spawned(p->peer, w, c))
			NEXT_FILL(2);
		/* Work first: run the child now; the parent waits on this
		 * worker (vm_sched.c). A short child then ends before the
		 * parent writes again, so the pages they share are seldom
		 * copied. */
		SAVE(pc + 2);
		w->now = c;
		return VM_STOP_SPAWN;
	}
	CASE(JOIN)
	{
		SPILL();
		/* The result comes now, or as the reply that resumes it, or it
		 * was held while the acquire after it parked. */
		if (t->held) {
			a = t->partial;
		} else if (vm__reply_take(t, VM_PARK_JOIN, &reply)) {
			if (reply.status != 0) /* asked of another machine */
				FAIL("join of thread %" PRIu64 ", which does not "
				     "exist or was already joined",
				     *sp);
			a = reply.value;
		} else {
			SAVE(pc);
			switch (join(w, t, *sp, &a)) {
			case JOIN_DONE:
				break;
			case JOIN_PARKED:
				return VM_STOP_PARK;
			case JOIN_ERROR:
				goto error;
			}
		}
		t->held = true;
		t->partial = a;
		SLOW(fence(w, VM_FENCE_ACQUIRE));
		t->held = false;
		t->partial = 0;
		*sp = a;
		NEXT_FILL(1);
	}
	CASE(SELF)
	{
		SPILL();
		*++sp = t->tid;
		NEXT_FILL(1);
	}
	CASE(YIELD)
	{
		SPILL();
		SAVE(pc + 1);
		return VM_STOP_YIELD;
	}
	CASE(CAS)
	{
		SPILL();
		SLOW(atomic_op(w, VM_GOP_CAS, sp[-2], sp[-1], sp[0], "cas", &a));
		sp -= 2;
		*sp = a;
		NEXT_FILL(1);
	}
	CASE(XADD)
	{
		SPILL();
		SLOW(atomic_op(w, VM_GOP_XADD, sp[-1], sp[0], 0, "xadd", &a));
		*--sp = a;
		NEXT_FILL(1);
	}
	CASE(XCHG)
	{
		SPILL();
		SLOW(atomic_op(w, VM_GOP_XCHG, sp[-1], sp[0], 0, "xchg", &a));
		*--sp = a;
		NEXT_FILL(1);
	}
	CASE(FENCE)
	{
		SPILL();
		SLOW(fence(w, VM_FENCE_FULL));
		NEXT_FILL(1);
	}
	/* wait, wake, lock, unlock: on global words at the page source; on
	 * local ones (which only this thread can see) here. */
	CASE(WAIT)
	{
		SPILL();
		if (!aligned(w, sp[-1], "wait"))
			goto error;
		if (sp[-1] & VM_GLOBAL_BIT) {
			SLOW(p->gs->ops->wait(p->gs, w, sp[-1], sp[0]));
		} else if (!vm__reply_take(t, VM_PARK_WAIT, &reply)) {
			uint64_t *q;
			SLOW(local_word(w, sp[-1], "wait", &q));
			SAVE(pc);
			if (vm__wait(w, t, q, sp[-1], sp[0]))
				return VM_STOP_PARK;
		}
		sp -= 2;
		NEXT_FILL(1);
	}
	CASE(WAKE)
	{
		SPILL();
		if (!aligned(w, sp[-1], "wake"))
			goto error;
		if (sp[-1] & VM_GLOBAL_BIT)
			SLOW(p->gs->ops->wake(p->gs, w, sp[-1], sp[0], &a));
		else
			a = vm__wake(w, t, sp[-1], sp[0]);
		*--sp = a;
		NEXT_FILL(1);
	}
	CASE(LOCK)
	{
		SPILL();
		if (!aligned(w, *sp, "lock"))
			goto error;
		if (*sp & VM_GLOBAL_BIT) {
			SLOW(p->gs->ops->lock(p->gs, w, *sp, &a));
		} else if (vm__reply_take(t, VM_PARK_LOCK, &reply)) {
			a = reply.value; /* handed over */
		} else {
			uint64_t *q;
			SLOW(local_word(w, *sp, "lock", &q));
			SAVE(pc);
			if (vm__lock(w, t, q, *sp))
				return VM_STOP_PARK;
			a = 0; /* status: the owner was not lost */
		}
		*sp = a;
		NEXT_FILL(1);
	}
	CASE(UNLOCK)
	{
		SPILL();
		if (!aligned(w, *sp, "unlock"))
			goto error;
		if (*sp & VM_GLOBAL_BIT) {
			SLOW(p->gs->ops->unlock(p->gs, w, *sp));
		} else {
			uint64_t *q;
			SLOW(local_word(w, *sp, "unlock", &q));
			if (!vm__unlock(w, t, q, *sp))
				FAIL("unlock of 0x%" PRIx64 ", which is not locked",
				     *sp);
		}
		sp--;
		NEXT_FILL(1);
	}
	CASE(WRITE)
	{
		SPILL();
		SLOW(vm__io_write(w, t, (int64_t)sp[-2], sp[-1], sp[0], &a));
		sp -= 2;
		*sp = a;
		NEXT_FILL(1);
	}
	CASE(READ)
	{
		SPILL();
		SLOW(vm__io_read(w, t, (int64_t)sp[-2], sp[-1], sp[0], &a));
		sp -= 2;
		*sp = a;
		NEXT_FILL(1);
	}
	CASE(PRINTI)
	{
		SPILL();
		char s_[24];
		int n_ = snprintf(s_, sizeof s_, "%" PRId64, (int64_t)*sp);
		SLOW(vm__io_print(w, t, s_, (size_t)n_));
		sp--;
		NEXT_FILL(1);
	}
	CASE(OPEN)
	CASE(SEEK)
	CASE(CLOSE)
	CASE(SYNC)
	CASE(STAT)
	CASE(MKDIR)
	CASE(REMOVE)
	CASE(RENAME)
	CASE(LIST)
	CASE(SETATTR)
	{
		SPILL();
		/* Storage arrives with the cluster; until then every storage
		 * instruction fails the way a program can handle. */
		const struct vm_opinfo *oi =
			&vm_opinfo[p->m->code[p->x.cell_off[pc - cells]]];
		sp -= oi->pops;
		*++sp = (vm_word)-FL_ENOSYS;
		NEXT_FILL(1);
	}
	CASE(CLOCK)
	{
		SPILL();
		*++sp = now_ns();
		NEXT_FILL(1);
	}
	CASE(NODE)
	{
		SPILL();
		*++sp = p->peer != NULL ? (vm_word)p->peer->self : 0;
		NEXT_FILL(1);
	}
	CASE(NCPU)
	{
		SPILL();
		*++sp = (vm_word)p->ncpu;
		NEXT_FILL(1);
	}
	CASE(ARGC)
	{
		SPILL();
		*++sp = (vm_word)p->opt.argc;
		NEXT_FILL(1);
	}
	CASE(ARGV)
	{
		SPILL();
		SLOW(do_argv(w, (int64_t)sp[-2], sp[-1], sp[0], &a));
		sp -= 2;
		*sp = a;
		NEXT_FILL(1);
	}
#ifdef VM_SWITCH_DISPATCH
	default:
		break; /* not an instruction: the verifier rejects it */
#endif
	}
#undef CASE
#undef NEXT
#undef JUMP
#undef OPND
#undef MIRROR
#undef FAIL
#undef SAVE
#undef SLOW
#undef TICK
#undef FAST
#undef LOAD
#undef STORE
#undef BINOP
#undef FUSED_LOAD

error:
	vm__proc_fail(p, t, (uint32_t)(pc - cells), w->fault.msg);
	return VM_STOP_END;
}
