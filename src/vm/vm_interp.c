/* The interpreter: links a verified module into threaded code and runs it.
 *
 * Linking turns each instruction into a handler cell followed by at most
 * one operand cell: immediates and data addresses become values, jump
 * targets become cell pointers, functions become struct vm_xfunc pointers.
 * The loop keeps pc, sp and bp in locals and dispatches with computed goto
 * (define VM_SWITCH_DISPATCH for a portable switch). Nothing the verifier
 * proved is checked again here: operand ranges, stack depth per
 * instruction, jump targets. What is checked: the frame fits the data
 * stack and call-depth limits at every call, memory addresses (through the
 * TLB fast path, else vm__xlate), division by zero, and everything else
 * that depends on run-time values.
 *
 * Registers: pc points at the running instruction's handler cell until the
 * handler moves it, so on any error cell_off[pc - cells] names the faulting
 * instruction. sp points at the top word; bp at slot 0 of the frame.
 *
 * A runtime error ends the process (exit 70) with one line on stderr:
 *   FILE:LINE: runtime error: WHAT (in function NAME)
 * Runs on the process's thread; no global state. */
#include "vm/vm_int.h"

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

enum { RUN_LINK = 0 };

static int run(struct vm_thread *t, const void *const **table);

/* ---- Linking ---- */

int vm__link(struct vm_proc *p)
{
	const struct vm_module *m = p->m;
	struct vm_xcode *x = &p->x;
	const void *const *table = NULL;
	uint32_t *cell_at = NULL; /* module offset -> cell index */
	size_t n = 0;
	struct vm_insn in;

	run(NULL, &table);
	for (uint32_t off = 0; off < m->code_len; off += in.size) {
		vm_insn_decode(m->code, m->code_len, off, &in, NULL);
		n += in.size > 1 ? 2 : 1;
	}
	x->ncells = n;
	x->cells = calloc(n ? n : 1, sizeof *x->cells);
	x->cell_off = calloc(n ? n : 1, sizeof *x->cell_off);
	x->funcs = calloc(m->nfuncs ? m->nfuncs : 1, sizeof *x->funcs);
	cell_at = calloc(m->code_len ? m->code_len : 1, sizeof *cell_at);
	if (!x->cells || !x->cell_off || !x->funcs || !cell_at)
		goto nomem;

	n = 0;
	for (uint32_t off = 0; off < m->code_len; off += in.size) {
		vm_insn_decode(m->code, m->code_len, off, &in, NULL);
		cell_at[off] = (uint32_t)n;
		x->cell_off[n] = off;
		if (in.size > 1)
			x->cell_off[n + 1] = off;
		n += in.size > 1 ? 2 : 1;
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		struct vm_xfunc *xf = &x->funcs[i];
		xf->entry = &x->cells[cell_at[f->code_off]];
		xf->nargs = f->nargs;
		xf->nslots = f->nargs + f->nlocals;
		xf->frame_words = xf->nslots + f->max_stack;
		xf->index = i;
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		uint32_t end = f->code_off + f->code_len;
		for (uint32_t off = f->code_off; off < end; off += in.size) {
			union vm_cell *c = &x->cells[cell_at[off]];
			const struct vm_symbol *s;
			vm_insn_decode(m->code, m->code_len, off, &in, NULL);
			enum vm_op op = in.op == VM_OP_PUSHA ? VM_OP_PUSH : in.op;
#ifdef VM_SWITCH_DISPATCH
			c[0].op = op;
#else
			c[0].h = table[op];
#endif
			switch (vm_opinfo[in.op].operand) {
			case VM_OPND_NONE:
				break;
			case VM_OPND_ADDR:
				s = &m->syms[in.imm];
				c[1].u = vm_module_seg_base(m, s->segment) +
					 s->offset;
				break;
			case VM_OPND_LABEL:
				c[1].target =
					&x->cells[cell_at[f->code_off + in.imm]];
				break;
			case VM_OPND_FUNC:
				c[1].fn = &x->funcs[in.imm];
				break;
			default:
				c[1].i = in.imm;
				break;
			}
		}
	}
	free(cell_at);
	return 0;
nomem:
	free(cell_at);
	vm__unlink(p);
	return FL_ENOMEM;
}

void vm__unlink(struct vm_proc *p)
{
	free(p->x.cells);
	free(p->x.cell_off);
	free(p->x.funcs);
	memset(&p->x, 0, sizeof p->x);
}

/* ---- Slow paths, out of the loop ---- */

static void report(struct vm_thread *t, const union vm_cell *pc)
{
	const struct vm_proc *p = t->proc;
	const struct vm_module *m = p->m;
	uint32_t off = p->x.cell_off[pc - p->x.cells];
	uint32_t line = vm_module_line(m, off);
	int f = vm_module_func_at(m, off);
	const char *fname = f >= 0 ? m->funcs[f].name : "?";

	vm__out_flush(&t->proc->out);
	if (line)
		dprintf(p->opt.fd_err, "%s:%" PRIu32 ": runtime error: %s (in function %s)\n",
			m->source, line, t->fault.msg, fname);
	else
		dprintf(p->opt.fd_err,
			"%s: runtime error: %s (in function %s, offset %" PRIu32 ")\n",
			m->source, t->fault.msg, fname,
			f >= 0 ? off - m->funcs[f].code_off : off);
}

static bool load_slow(struct vm_thread *t, vm_word a, unsigned n,
		      const char *what, vm_word *v)
{
	uint8_t b[8];

	if (vm__mem_read(t, b, a, n, what) != 0)
		return false;
	*v = 0;
	memcpy(v, b, n);
	return true;
}

static bool store_slow(struct vm_thread *t, vm_word a, unsigned n, vm_word v,
		       const char *what)
{
	return vm__mem_write(t, a, &v, n, what) == 0;
}

/* Grow the data stack so @need words fit; false past the limit. */
static bool grow_stack(struct vm_thread *t, size_t need)
{
	size_t cap = t->stack_cap ? t->stack_cap : 256;
	vm_word *s;

	if (need > t->proc->opt.stack_words) {
		vm__fault(t, "stack overflow (data stack limit of %" PRIu32 " words)",
			  t->proc->opt.stack_words);
		return false;
	}
	while (cap < need)
		cap *= 2;
	if (cap > t->proc->opt.stack_words)
		cap = t->proc->opt.stack_words;
	s = realloc(t->stack, cap * sizeof *s);
	if (s == NULL) {
		vm__fault(t, "out of memory (data stack of %zu words)", cap);
		return false;
	}
	t->stack = s;
	t->stack_cap = (uint32_t)cap;
	return true;
}

static bool grow_frames(struct vm_thread *t)
{
	uint32_t cap = t->frames_cap ? 2 * t->frames_cap : 64;
	struct vm_frame *f;

	if (t->depth >= t->proc->opt.max_depth) {
		vm__fault(t, "stack overflow (call depth limit of %" PRIu32 ")",
			  t->proc->opt.max_depth);
		return false;
	}
	if (cap > t->proc->opt.max_depth)
		cap = t->proc->opt.max_depth;
	f = realloc(t->frames, cap * sizeof *f);
	if (f == NULL) {
		vm__fault(t, "out of memory (call frames)");
		return false;
	}
	t->frames = f;
	t->frames_cap = cap;
	return true;
}

static vm_word do_write(struct vm_thread *t, int64_t fd, vm_word addr,
			vm_word n, bool *ok)
{
	struct vm_proc *p = t->proc;
	uint8_t buf[4096];
	vm_word done = 0;

	*ok = true;
	if (fd != 1 && fd != 2)
		return (vm_word)-FL_EBADF;
	if (fd == 2)
		vm__out_flush(&p->out);
	while (done < n) {
		vm_word k = n - done < sizeof buf ? n - done : sizeof buf;
		if (vm__mem_read(t, buf, addr + done, k, "write") != 0) {
			*ok = false;
			return 0;
		}
		if (fd == 1) {
			vm__out_write(&p->out, buf, k);
		} else {
			const uint8_t *q = buf;
			vm_word left = k;
			while (left > 0) {
				ssize_t w = write(p->opt.fd_err, q, left);
				if (w < 0 && errno == EINTR)
					continue;
				if (w <= 0)
					return done ? done : (vm_word)-FL_EIO;
				q += w;
				left -= (vm_word)w;
			}
		}
		done += k;
	}
	return done;
}

static vm_word do_read(struct vm_thread *t, int64_t fd, vm_word addr,
		       vm_word n, bool *ok)
{
	struct vm_proc *p = t->proc;
	uint8_t buf[65536];
	ssize_t got;

	*ok = true;
	if (fd != 0)
		return (vm_word)-FL_EBADF;
	if (n > sizeof buf)
		n = sizeof buf;
	/* Check the whole destination before consuming any input. */
	for (vm_word a = addr; a - addr < n; a = (a | (VM_PAGE_SIZE - 1)) + 1)
		if (vm__xlate(t, a, 1, true, "read") == NULL) {
			*ok = false;
			return 0;
		}
	vm__out_flush(&p->out);
	do
		got = read(p->opt.fd_in, buf, n);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return (vm_word)-FL_EIO;
	if (vm__mem_write(t, addr, buf, (vm_word)got, "read") != 0) {
		*ok = false;
		return 0;
	}
	return (vm_word)got;
}

static vm_word do_argv(struct vm_thread *t, int64_t i, vm_word buf, vm_word n,
		       bool *ok)
{
	const struct vm_options *o = &t->proc->opt;
	size_t len;

	*ok = true;
	if (i < 0 || i >= o->argc)
		return (vm_word)-FL_EINVAL;
	len = strlen(o->argv[i]);
	if (vm__mem_write(t, buf, o->argv[i], len < n ? len : n, "argv") != 0 ||
	    (len < n && vm__mem_write(t, buf + len, "", 1, "argv") != 0)) {
		*ok = false;
		return 0;
	}
	return len;
}

static void do_printi(struct vm_thread *t, int64_t v)
{
	char s[24];
	int n = snprintf(s, sizeof s, "%" PRId64, v);

	vm__out_write(&t->proc->out, s, (size_t)n);
}

static void flush_pages(struct vm_thread *t, vm_word space, vm_word first,
			vm_word n)
{
	if (n >= VM_TLB_SIZE) {
		vm__tlb_flush(t);
		return;
	}
	for (vm_word i = 0; i < n; i++) {
		vm_word key = (space | ((first + i) << VM_PAGE_SHIFT)) >> VM_PAGE_SHIFT;
		if (t->rtlb[key % VM_TLB_SIZE].key == key)
			t->rtlb[key % VM_TLB_SIZE].key = ~(vm_word)0;
		if (t->wtlb[key % VM_TLB_SIZE].key == key)
			t->wtlb[key % VM_TLB_SIZE].key = ~(vm_word)0;
	}
}

static uint8_t *atomic_ptr(struct vm_thread *t, vm_word a, const char *what)
{
	if (a & 7) {
		vm__fault(t, "%s at unaligned address 0x%" PRIx64
			     " (atomics need 8-byte alignment)",
			  what, a);
		return NULL;
	}
	return vm__xlate(t, a, 8, true, what);
}

static vm_word alloc(struct vm_thread *t, struct vm_space *s, vm_word n,
		     const char *what)
{
	vm_word a = vm__heap_alloc(s, n, &t->proc->budget);

	if (a == 0)
		vm__fault(t, "out of memory (%s of %" PRIu64 " bytes)", what, n);
	return a;
}

static vm_word now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (vm_word)ts.tv_sec * 1000000000u + (vm_word)ts.tv_nsec;
}

/* ---- The loop ---- */

int vm__interp(struct vm_thread *t)
{
	return run(t, NULL);
}

static int run(struct vm_thread *t, const void *const **table)
{
#ifndef VM_SWITCH_DISPATCH
	static const void *const labels[VM_OP__COUNT] = {
#define OP(name, mn, opnd, pops, pushes, flags, effect, doc) &&op_##name,
#include "vm/vm_opcodes.def"
#undef OP
	};
	if (t == NULL) {
		*table = labels;
		return 0;
	}
#else
	if (t == NULL) {
		*table = NULL;
		return 0;
	}
#endif
	struct vm_proc *p = t->proc;
	const union vm_cell *const cells = p->x.cells;
	struct vm_tlb_entry *const rtlb = t->rtlb, *const wtlb = t->wtlb;
	const struct vm_xfunc *fn;
	const union vm_cell *pc;
	vm_word *sp, *bp, a, b;
	int64_t sa, sb;
	int status = 0;
	bool ok;

	/* Enter main. */
	fn = &p->x.funcs[vm_module_find_func(p->m, "main")];
	if (!grow_stack(t, fn->frame_words + 1)) {
		pc = fn->entry;
		goto error;
	}
	bp = t->stack;
	memset(bp, 0, fn->nslots * sizeof *bp);
	sp = bp + fn->nslots - 1;
	pc = fn->entry;
	t->depth = 0;

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
#define FAIL(...)                                                             \
	do {                                                                  \
		vm__fault(t, __VA_ARGS__);                                    \
		goto error;                                                   \
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
		const uint8_t *q_ = FAST(rtlb, *sp, n);                       \
		type v_;                                                      \
		if (q_ != NULL) {                                             \
			memcpy(&v_, q_, n);                                   \
			*sp = (vm_word)v_;                                    \
		} else {                                                      \
			if (!load_slow(t, *sp, n, name, &a))                  \
				goto error;                                   \
			memcpy(&v_, &a, n);                                   \
			*sp = (vm_word)v_;                                    \
		}                                                             \
		NEXT(1);                                                      \
	}
#define STORE(n, name)                                                        \
	{                                                                     \
		uint8_t *q_ = FAST(wtlb, sp[-1], n);                          \
		if (q_ != NULL)                                               \
			memcpy(q_, sp, n);                                    \
		else if (!store_slow(t, sp[-1], n, sp[0], name))              \
			goto error;                                           \
		sp -= 2;                                                      \
		NEXT(1);                                                      \
	}
#define BINOP(expr)                                                           \
	{                                                                     \
		a = sp[-1];                                                   \
		b = sp[0];                                                    \
		*--sp = (expr);                                               \
		NEXT(1);                                                      \
	}

#ifdef VM_SWITCH_DISPATCH
dispatch:
	switch ((enum vm_op)pc->op)
#else
	goto *pc->h;
#endif
	{
	CASE(PUSH)
	CASE(PUSHA)
	{
		*++sp = OPND.u;
		NEXT(2);
	}
	CASE(DUP)
	{
		sp[1] = sp[0];
		sp++;
		NEXT(1);
	}
	CASE(DROP)
	{
		sp--;
		NEXT(1);
	}
	CASE(SWAP)
	{
		a = sp[0];
		sp[0] = sp[-1];
		sp[-1] = a;
		NEXT(1);
	}
	CASE(OVER)
	{
		sp[1] = sp[-1];
		sp++;
		NEXT(1);
	}
	CASE(ROT)
	{
		a = sp[-2];
		sp[-2] = sp[-1];
		sp[-1] = sp[0];
		sp[0] = a;
		NEXT(1);
	}
	CASE(PICK)
	{
		sp[1] = sp[-(ptrdiff_t)OPND.u];
		sp++;
		NEXT(2);
	}
	CASE(GET)
	{
		*++sp = bp[OPND.u];
		NEXT(2);
	}
	CASE(SET)
	{
		bp[OPND.u] = *sp--;
		NEXT(2);
	}
	CASE(ADD) BINOP(a + b)
	CASE(SUB) BINOP(a - b)
	CASE(MUL) BINOP(a * b)
	CASE(DIV)
	{
		sa = (int64_t)sp[-1];
		sb = (int64_t)sp[0];
		if (sb == 0)
			FAIL("division by zero");
		*--sp = sb == -1 ? (vm_word)0 - (vm_word)sa : (vm_word)(sa / sb);
		NEXT(1);
	}
	CASE(MOD)
	{
		sa = (int64_t)sp[-1];
		sb = (int64_t)sp[0];
		if (sb == 0)
			FAIL("division by zero");
		*--sp = sb == -1 ? 0 : (vm_word)(sa % sb);
		NEXT(1);
	}
	CASE(DIVU)
	{
		if (sp[0] == 0)
			FAIL("division by zero");
		a = sp[-1] / sp[0];
		*--sp = a;
		NEXT(1);
	}
	CASE(MODU)
	{
		if (sp[0] == 0)
			FAIL("division by zero");
		a = sp[-1] % sp[0];
		*--sp = a;
		NEXT(1);
	}
	CASE(NEG)
	{
		*sp = (vm_word)0 - *sp;
		NEXT(1);
	}
	CASE(AND) BINOP(a & b)
	CASE(OR) BINOP(a | b)
	CASE(XOR) BINOP(a ^ b)
	CASE(NOT)
	{
		*sp = ~*sp;
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
		if (*sp-- == 0)
			JUMP(OPND.target);
		NEXT(2);
	}
	CASE(JNZ)
	{
		if (*sp-- != 0)
			JUMP(OPND.target);
		NEXT(2);
	}
	CASE(CALL)
	{
		const struct vm_xfunc *callee = OPND.fn;
		vm_word *nbp = sp - callee->nargs + 1;
		size_t need = (size_t)(nbp - t->stack) + callee->frame_words + 1;
		if (need > t->stack_cap) {
			size_t osp = (size_t)(sp - t->stack);
			size_t obp = (size_t)(bp - t->stack);
			if (!grow_stack(t, need))
				goto error;
			sp = t->stack + osp;
			bp = t->stack + obp;
			nbp = sp - callee->nargs + 1;
		}
		if (t->depth == t->frames_cap && !grow_frames(t))
			goto error;
		t->frames[t->depth].ret = (uint32_t)(pc + 2 - cells);
		t->frames[t->depth].bp = (uint32_t)(bp - t->stack);
		t->depth++;
		for (uint32_t i = callee->nargs; i < callee->nslots; i++)
			nbp[i] = 0;
		bp = nbp;
		sp = nbp + callee->nslots - 1;
		JUMP(callee->entry);
	}
	CASE(RET)
	{
		a = *sp;
		if (t->depth == 0) {
			status = (int)(a & 255);
			goto done;
		}
		t->depth--;
		sp = bp;
		*sp = a;
		bp = t->stack + t->frames[t->depth].bp;
		JUMP(cells + t->frames[t->depth].ret);
	}
	CASE(EXIT)
	{
		status = (int)(*sp & 255);
		goto done;
	}
	CASE(TRAP)
	{
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
		if (*sp != 0 && (*sp = alloc(t, &t->local, *sp, "alloc")) == 0)
			goto error;
		NEXT(1);
	}
	CASE(GALLOC)
	{
		if (*sp != 0 && (*sp = alloc(t, &p->global, *sp, "galloc")) == 0)
			goto error;
		NEXT(1);
	}
	CASE(FREE)
	{
		vm_word first, n;
		a = *sp--;
		if (a == 0)
			NEXT(1);
		if (vm__heap_free((a & VM_GLOBAL_BIT) ? &p->global : &t->local,
				  a, &p->budget, &first, &n) != 0)
			FAIL("free of 0x%" PRIx64 ", which is not a live block", a);
		flush_pages(t, a & VM_GLOBAL_BIT, first, n);
		NEXT(1);
	}
	CASE(COPY)
	{
		if (vm__mem_copy(t, sp[-2], sp[-1], sp[0]) != 0)
			goto error;
		sp -= 3;
		NEXT(1);
	}
	CASE(FILL)
	{
		if (vm__mem_fill(t, sp[-2], (uint8_t)sp[-1], sp[0]) != 0)
			goto error;
		sp -= 3;
		NEXT(1);
	}
	CASE(SELF)
	{
		*++sp = t->tid;
		NEXT(1);
	}
	CASE(YIELD)
	{
		NEXT(1);
	}
	CASE(CAS)
	{
		uint64_t *q = (uint64_t *)atomic_ptr(t, sp[-2], "cas");
		if (q == NULL)
			goto error;
		a = sp[-1];
		__atomic_compare_exchange_n(q, &a, sp[0], false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
		sp -= 2;
		*sp = a;
		NEXT(1);
	}
	CASE(XADD)
	{
		uint64_t *q = (uint64_t *)atomic_ptr(t, sp[-1], "xadd");
		if (q == NULL)
			goto error;
		a = __atomic_fetch_add(q, sp[0], __ATOMIC_SEQ_CST);
		*--sp = a;
		NEXT(1);
	}
	CASE(XCHG)
	{
		uint64_t *q = (uint64_t *)atomic_ptr(t, sp[-1], "xchg");
		if (q == NULL)
			goto error;
		a = __atomic_exchange_n(q, sp[0], __ATOMIC_SEQ_CST);
		*--sp = a;
		NEXT(1);
	}
	CASE(FENCE)
	{
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		NEXT(1);
	}
	CASE(SPAWN)
	CASE(JOIN)
	CASE(WAIT)
	CASE(WAKE)
	CASE(LOCK)
	CASE(UNLOCK)
	{
		FAIL("'%s' is not supported by this VM yet",
		     vm_opinfo[p->m->code[p->x.cell_off[pc - cells]]].mnemonic);
	}
	CASE(WRITE)
	{
		a = do_write(t, (int64_t)sp[-2], sp[-1], sp[0], &ok);
		if (!ok)
			goto error;
		sp -= 2;
		*sp = a;
		NEXT(1);
	}
	CASE(READ)
	{
		a = do_read(t, (int64_t)sp[-2], sp[-1], sp[0], &ok);
		if (!ok)
			goto error;
		sp -= 2;
		*sp = a;
		NEXT(1);
	}
	CASE(PRINTI)
	{
		do_printi(t, (int64_t)*sp--);
		NEXT(1);
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
		/* Storage arrives with the cluster; until then every storage
		 * instruction fails the way a program can handle. */
		const struct vm_opinfo *oi =
			&vm_opinfo[p->m->code[p->x.cell_off[pc - cells]]];
		sp -= oi->pops;
		*++sp = (vm_word)-FL_ENOSYS;
		NEXT(1);
	}
	CASE(CLOCK)
	{
		*++sp = now_ns();
		NEXT(1);
	}
	CASE(NODE)
	{
		*++sp = 0;
		NEXT(1);
	}
	CASE(NCPU)
	{
		*++sp = (vm_word)p->ncpu;
		NEXT(1);
	}
	CASE(ARGC)
	{
		*++sp = (vm_word)p->opt.argc;
		NEXT(1);
	}
	CASE(ARGV)
	{
		a = do_argv(t, (int64_t)sp[-2], sp[-1], sp[0], &ok);
		if (!ok)
			goto error;
		sp -= 2;
		*sp = a;
		NEXT(1);
	}
#ifdef VM_SWITCH_DISPATCH
	case VM_OP__COUNT:
		break; /* not an instruction: the verifier rejects it */
#endif
	}
#undef CASE
#undef NEXT
#undef JUMP
#undef OPND
#undef FAIL
#undef FAST
#undef LOAD
#undef STORE
#undef BINOP

error:
	report(t, pc);
	status = 70;
done:
	return status;
}
