/* Global memory on one machine: the local page source (vm_gsrc.h), and
 * the helpers every page source uses to park and resume threads.
 *
 * The local source serves a process whose threads all run on its origin
 * machine: slot 0 of the global address space (the module's read-only
 * data and globals at their fixed addresses, then galloc blocks), one
 * struct vm_space shared by every worker. Addresses in other slots are
 * unmapped here. Many workers read its radix tree while one at a time
 * (under lock) maps or unmaps pages: slots are read and written with
 * atomics, nodes are never freed before the process ends, and unmapped
 * pages are kept on a reuse list rather than freed, so a reader racing
 * with an unmap never touches freed host memory. Each unmap bumps @gen;
 * a worker drops its cached global translations at its next acquire when
 * @gen moved (SPEC 3.1: a free becomes visible at fences).
 *
 * Atomics are the host's sequentially consistent atomics on the word
 * itself, wait/wake and mutexes the process's wait queues (vm_sync.c):
 * one copy of memory needs no more. Nothing here parks on the outside
 * world; wait and lock park on other threads of the process.
 *
 * Runs on any worker of the process, concurrently. */
#include "vm/vm_gsrc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Parking and resuming, for every source ---- */

static void resume_event(struct vm_node *n, struct vm_event *ev)
{
	struct vm_thread *t =
		(struct vm_thread *)((char *)ev - offsetof(struct vm_thread, rq.ev));
	struct vm_proc *p = t->proc;

	atomic_fetch_sub(&n->net_waits, 1);
	vm__resume(NULL, t, t->rq.status, t->rq.value);
	vm__proc_busy_dec(p); /* the request is answered */
}

struct vm_thread *vm_gsrc_park(struct vm_worker *w, vm_word addr)
{
	struct vm_thread *t = w->cur;

	vm__proc_busy_inc(t->proc); /* a request in flight */
	atomic_fetch_add(&t->proc->node->net_waits, 1);
	vm__park_begin(t, VM_PARK_GLOBAL, addr);
	return t;
}

void vm_gsrc_resume(struct vm_thread *t, int32_t status, vm_word value)
{
	t->rq.status = status;
	t->rq.value = value;
	t->rq.ev.fn = resume_event;
	vm_node_post(t->proc->node, &t->rq.ev);
}

bool vm_gsrc_reply(struct vm_worker *w, int32_t *status, vm_word *value)
{
	struct vm_reply r;

	if (!vm__reply_take(w->cur, VM_PARK_GLOBAL, &r))
		return false;
	*status = r.status;
	*value = r.value;
	return true;
}

void vm_gsrc_tlb_flush(struct vm_worker *w)
{
	vm__tlb_flush(w);
}

/* ---- The local source ---- */

struct glocal {
	struct vm_gsrc base;
	struct vm_proc *p;
	struct vm_space space; /* slot 0 */
	pthread_mutex_t lock;  /* the page table's and the heap's changes */
	_Atomic uint64_t gen;  /* bumped at every unmap */
};

static struct glocal *local_of(struct vm_gsrc *g)
{
	return (struct glocal *)g;
}

static enum vm_res l_page(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, bool write, const char *what,
			  uint8_t **data, bool *cache)
{
	struct glocal *L = local_of(g);
	struct vm_space *s = &L->space;
	vm_word pageno = (addr & VM_OFFSET_MASK) >> VM_PAGE_SHIFT;
	struct vm_page *pg = NULL;
	uint8_t *bytes;

	if (vm_gslot(addr) == 0 && pageno == 0) {
		vm__fault(w, "%s at null address 0x%" PRIx64, what, addr);
		return VM_FAULT;
	}
	if (vm_gslot(addr) == 0)
		pg = vm__page_get(s, pageno);
	if (pg == NULL) {
		vm__fault(w, "%s at unmapped address 0x%" PRIx64, what, addr);
		return VM_FAULT;
	}
	if (write && pg->kind == VM_PAGE_RODATA) {
		vm__fault(w, "%s at read-only address 0x%" PRIx64, what, addr);
		return VM_FAULT;
	}
	if (s->check && !vm__heap_live(s, addr, n)) {
		vm__fault(w, "%s at 0x%" PRIx64 " outside any live block", what,
			  addr);
		return VM_FAULT;
	}
	bytes = vm__page_bytes(pg);
	if (bytes == NULL) {
		vm__fault(w, "out of memory");
		return VM_FAULT;
	}
	*data = bytes + (addr & (VM_PAGE_SIZE - 1));
	*cache = !s->check;
	return VM_OK;
}

/* An acquire: cached translations of pages unmapped since this worker
 * last looked must go. */
static void acquire(struct glocal *L, struct vm_worker *w)
{
	uint64_t g = atomic_load(&L->gen);

	if (g != w->gen || w->gen_owner != L) {
		vm__tlb_flush(w);
		w->gen = g;
		w->gen_owner = L;
	}
}

/* One copy of memory: a fence is the host's. Release and acquire alone
 * (spawn, a thread's end, join) cost nothing on a TSO host; only the full
 * fence instruction orders a store before a later load. */
static enum vm_res l_fence(struct vm_gsrc *g, struct vm_worker *w,
			   enum vm_fence kind)
{
	switch (kind) {
	case VM_FENCE_RELEASE:
		__atomic_thread_fence(__ATOMIC_RELEASE);
		return VM_OK;
	case VM_FENCE_ACQUIRE:
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		break;
	case VM_FENCE_FULL:
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		break;
	}
	acquire(local_of(g), w);
	return VM_OK;
}

/* The host word at 8-byte-aligned @addr, for an atomic access. */
static enum vm_res word_at(struct vm_gsrc *g, struct vm_worker *w,
			   vm_word addr, const char *what, uint64_t **q)
{
	uint8_t *d;
	bool cache;
	enum vm_res rc = l_page(g, w, addr, 8, true, what, &d, &cache);

	*q = (uint64_t *)d;
	return rc;
}

static enum vm_res l_atomic(struct vm_gsrc *g, struct vm_worker *w,
			    enum vm_gop op, vm_word addr, vm_word a, vm_word b,
			    const char *what, vm_word *old)
{
	uint64_t *q;
	enum vm_res rc = word_at(g, w, addr, what, &q);

	if (rc != VM_OK)
		return rc;
	switch (op) {
	case VM_GOP_CAS:
		__atomic_compare_exchange_n(q, &a, b, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
		*old = a;
		break;
	case VM_GOP_XADD:
		*old = __atomic_fetch_add(q, a, __ATOMIC_SEQ_CST);
		break;
	case VM_GOP_XCHG:
		*old = __atomic_exchange_n(q, a, __ATOMIC_SEQ_CST);
		break;
	}
	acquire(local_of(g), w);
	return VM_OK;
}

static enum vm_res l_wait(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word expected)
{
	struct vm_reply r;
	uint64_t *q;
	enum vm_res rc;

	if (vm__reply_take(w->cur, VM_PARK_WAIT, &r)) { /* woken */
		acquire(local_of(g), w);
		return VM_OK;
	}
	rc = word_at(g, w, addr, "wait", &q);
	if (rc != VM_OK)
		return rc;
	if (vm__wait(w, w->cur, q, addr, expected))
		return VM_PARK;
	acquire(local_of(g), w);
	return VM_OK;
}

static enum vm_res l_wake(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, vm_word *woken)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	*woken = vm__wake(w, w->cur, addr, n);
	acquire(local_of(g), w);
	return VM_OK;
}

static enum vm_res l_lock(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word *status)
{
	struct vm_reply r;
	uint64_t *q;
	enum vm_res rc;

	if (vm__reply_take(w->cur, VM_PARK_LOCK, &r)) { /* handed over */
		*status = r.value;
		acquire(local_of(g), w);
		return VM_OK;
	}
	rc = word_at(g, w, addr, "lock", &q);
	if (rc != VM_OK)
		return rc;
	if (vm__lock(w, w->cur, q, addr))
		return VM_PARK;
	*status = 0;
	acquire(local_of(g), w);
	return VM_OK;
}

static enum vm_res l_unlock(struct vm_gsrc *g, struct vm_worker *w,
			    vm_word addr)
{
	uint64_t *q;
	enum vm_res rc = word_at(g, w, addr, "unlock", &q);

	if (rc != VM_OK)
		return rc;
	if (!vm__unlock(w, w->cur, q, addr)) {
		vm__fault(w, "unlock of 0x%" PRIx64 ", which is not locked", addr);
		return VM_FAULT;
	}
	acquire(local_of(g), w);
	return VM_OK;
}

static enum vm_res l_alloc(struct vm_gsrc *g, struct vm_worker *w, vm_word n,
			   vm_word *addr)
{
	struct glocal *L = local_of(g);

	pthread_mutex_lock(&L->lock);
	*addr = vm__heap_alloc(&L->space, n);
	pthread_mutex_unlock(&L->lock);
	if (*addr == 0) {
		char what[64];
		snprintf(what, sizeof what, "galloc of %" PRIu64 " bytes", n);
		vm__oom_msg(&w->fault, L->p, what, vm__alloc_cost(n));
		return VM_FAULT;
	}
	return VM_OK;
}

static enum vm_res l_free(struct vm_gsrc *g, struct vm_worker *w, vm_word addr)
{
	struct glocal *L = local_of(g);
	vm_word first = 0, n = 0;
	int rc = FL_EFAULT;

	pthread_mutex_lock(&L->lock);
	if (vm_gslot(addr) == 0)
		rc = vm__heap_free(&L->space, addr, &first, &n);
	if (n > 0)
		atomic_fetch_add(&L->gen, 1);
	pthread_mutex_unlock(&L->lock);
	if (rc == FL_ENOMEM) {
		vm__fault(w, "out of memory (free)");
		return VM_FAULT;
	}
	if (rc != 0) {
		vm__fault(w, "free of 0x%" PRIx64 ", which is not a live block",
			  addr);
		return VM_FAULT;
	}
	vm__tlb_drop_pages(w, L->space.base, first, n);
	return VM_OK;
}

static void l_close(struct vm_gsrc *g)
{
	struct glocal *L = local_of(g);

	if (L->space.heap != NULL)
		vm__space_close(&L->space);
	pthread_mutex_destroy(&L->lock);
	free(L);
}

struct vm_space *vm__glocal_space(struct vm_gsrc *g)
{
	return &local_of(g)->space;
}

static const struct vm_gsrc_ops local_ops = {
	.page = l_page,
	.fence = l_fence,
	.atomic = l_atomic,
	.wait = l_wait,
	.wake = l_wake,
	.lock = l_lock,
	.unlock = l_unlock,
	.alloc = l_alloc,
	.free = l_free,
	.close = l_close,
};

/* Map the module's segment @seg at its fixed place in slot 0. */
static int load_segment(struct vm_space *s, const struct vm_proc *p,
			enum vm_segment seg, const uint8_t *bytes, uint32_t len,
			struct fl_err *err)
{
	vm_word base = vm_module_seg_base(p->m, seg) & VM_OFFSET_MASK;
	vm_word first = base >> VM_PAGE_SHIFT;
	vm_word np = ((vm_word)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
	const char *name = seg == VM_SEG_RODATA ? "read-only data" : "globals";

	for (vm_word i = 0; i < np; i++) {
		struct vm_page *pg = vm__page_map(s, first + i);
		uint32_t k = len - (uint32_t)(i * VM_PAGE_SIZE);
		if (pg == NULL || vm__page_bytes(pg) == NULL) {
			struct vm_fault f;
			vm__oom_msg(&f, p, "the module's data", VM_COST_PAGE);
			return fl_err_set(err, FL_ENOMEM, "%s of %" PRIu32 " bytes: %s",
					  name, len, f.msg);
		}
		pg->kind = seg == VM_SEG_RODATA ? VM_PAGE_RODATA : VM_PAGE_DATA;
		pg->head = first;
		pg->bytes = len;
		memcpy(pg->data, bytes + i * VM_PAGE_SIZE,
		       k < VM_PAGE_SIZE ? k : VM_PAGE_SIZE);
	}
	if (first + np > s->heap->top)
		s->heap->top = first + np;
	return 0;
}

int vm__gspace_load(struct vm_space *s, const struct vm_proc *p,
		    struct fl_err *err)
{
	const struct vm_module *m = p->m;
	int rc = load_segment(s, p, VM_SEG_RODATA, m->rodata, m->rodata_len, err);

	return rc ? rc : load_segment(s, p, VM_SEG_DATA, m->data, m->data_len, err);
}

int vm__glocal_new(struct vm_proc *p, struct vm_gsrc **out, struct fl_err *err)
{
	struct glocal *L = calloc(1, sizeof *L);
	int rc;

	*out = NULL;
	if (L == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	L->base.ops = &local_ops;
	L->p = p;
	pthread_mutex_init(&L->lock, NULL);
	rc = vm__space_init(&L->space, vm_gslot_base(0), p->opt.check, true);
	if (rc) {
		fl_err_set(err, rc, "out of memory");
		goto fail;
	}
	L->space.budget = &p->budget;
	if ((rc = vm__gspace_load(&L->space, p, err)) != 0)
		goto fail;
	*out = &L->base;
	return 0;
fail:
	l_close(&L->base);
	return rc;
}
