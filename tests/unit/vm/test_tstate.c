/* Unit tests for src/vm/vm_tstate.c: thread state format 2, batches that
 * keep copy-on-write sharing, and the decoder's refusals.
 *
 * What round-trips: a thread with slab pages of several classes, a
 * large block, a free run and written bytes; the threads of a running
 * program parked in lock, wait and join, a finished one and a queued one,
 * as one batch; a thread just resumed with its join's reply, which it
 * still takes after the trip; a thread two calls deep. Parent and
 * children sharing a 64 KiB block encode it once, decode to shared pages,
 * and a store by one decoded thread leaves the others' bytes alone.
 *
 * What is refused: one test per check of the decoder. Each forges a bad
 * state from a real one -- a decoded private copy whose fields are
 * patched in memory and encoded again (the encoder writes what it finds),
 * or bytes patched at offsets found by walk() below, which follows the
 * byte layout of docs/design.md -- and asserts the decoder refuses it
 * with a message naming the problem. --debug-migrate's round trip of a
 * corrupted thread ends the process with that message.
 *
 * The threads come from running the program below by hand on a node's
 * worker 0 (tests/unit/vm/handrun.h; what it shares with
 * tests/fuzz/fuzz_tstate.c is in tstate_build.h), so every state is one
 * the VM made.
 * Run it under ASan as well: the count checks must come before any
 * allocation (a huge count would otherwise be a huge calloc). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tstate_build.h"
#include "lang/lang.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The program of tstate_build.h: here main returns after f, f returns 0
 * after its yield, and locker returns from its lock. dead's second push
 * is unreachable code. */
static const char program[] =
	TSB_MAIN_START
	"        ret\n"
	"end\n"
	TSB_F_START
	"        push 0\n"
	"        ret\n"
	"end\n"
	"func locker 1 0\n"
	"        get 0\n"
	"        lock\n"
	"        ret\n"
	"end\n"
	TSB_SHARED_FUNCS
	"func dead 0 2\n"
	"        push 1\n"
	"        ret\n"
	"        push 2\n"
	"        ret\n"
	"end\n";

/* The rich thread's pages (see make_rich). */
enum {
	P_FULL8 = 1, /* class 0 (8 bytes), all 512 blocks live */
	P_PART8,     /* class 0, one block live: partial[0][0] */
	P_PART128,   /* class 7 (128 bytes), one block (100 bytes) */
	P_BIG,       /* 3 pages: a 9000-byte block */
	P_FULL2K = 7, /* class 15 (2048), both blocks live */
	P_FREE = 8,  /* 5 pages freed: the free run 8..12 */
	P_TOP = 13,
};

struct fx {
	struct vm_module *m;
	struct handrun h;
	struct vm_proc *p;
	int err_r, err_w; /* the process's stderr, a pipe */
	bool closed;
	struct vm_thread *rich; /* listed, never run */
	uint8_t *base;          /* its encoding */
	size_t base_len;
};

static void die(const char *what)
{
	fprintf(stderr, "test_tstate: %s\n", what);
	abort();
}

/* ---- Fixture ---- */

static int open_fx(void **state, bool check)
{
	struct fx *f = calloc(1, sizeof *f);
	struct vm_options o;
	struct fl_err err;
	int pipefd[2];

	if (f == NULL)
		return -1;
	if (asm_assemble("tstate.fla", program, sizeof program - 1, &f->m,
			 stderr) != 0 ||
	    vm_verify(f->m, true, &err) != 0)
		die("module");
	hr_options(&f->h, &o);
	o.check = check;
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0)
		die("pipe");
	o.fd_err = f->err_w = pipefd[1];
	f->err_r = pipefd[0];
	if (hr_open(&f->h, f->m, &o, &err) != 0) {
		fprintf(stderr, "%s\n", err.msg);
		die("process");
	}
	f->p = f->h.p;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (!f->closed)
		hr_close(&f->h);
	close(f->err_r);
	close(f->err_w);
	vm_module_free(f->m);
	free(f->base);
	free(f);
	return 0;
}

static const struct vm_xfunc *func(struct fx *f, const char *name)
{
	int i = vm_module_find_func(f->m, name);

	assert_true(i >= 0);
	return &f->p->x.funcs[i];
}

static uint8_t *encode_n(struct vm_thread *const *ts, size_t n, size_t *len)
{
	struct fl_buf b;

	fl_buf_init(&b);
	assert_int_equal(vm__threads_encode(ts, n, &b), 0);
	return fl_buf_take(&b, len);
}

static uint8_t *encode1(struct vm_thread *t, size_t *len)
{
	return encode_n(&t, 1, len);
}

static struct vm_thread *decode1(struct fx *f, const uint8_t *b, size_t len)
{
	struct vm_thread *t = NULL;
	struct fl_err err;
	int rc = vm__thread_decode(f->p, b, len, &t, &err);

	if (rc != 0)
		fail_msg("decode: %s", err.msg);
	return t;
}

/* The decoder must refuse @b with a message containing @want. */
static void refuse(struct fx *f, const uint8_t *b, size_t len,
		   const char *want)
{
	struct vm_thread **ts = NULL;
	struct fl_err err = {{0}};
	size_t n = 0;
	int rc = vm__threads_decode(f->p, b, len, &ts, &n, &err);

	if (rc == 0) {
		for (size_t i = 0; i < n; i++)
			vm__thread_free(ts[i]);
		free(ts);
		fail_msg("decoded a state that should be refused (%s)", want);
	}
	assert_int_equal(rc, FL_EFORMAT);
	if (strstr(err.msg, want) == NULL)
		fail_msg("message \"%s\" does not say \"%s\"", err.msg, want);
	assert_non_null(strstr(err.msg, "thread state: "));
}

/* Encode (patched) @t and refuse it. */
static void refuse_t(struct fx *f, struct vm_thread *t, const char *want)
{
	size_t len;
	uint8_t *b = encode1(t, &len);

	refuse(f, b, len, want);
	free(b);
}

static void refuse_n(struct fx *f, struct vm_thread *const *ts, size_t n,
		     const char *want)
{
	size_t len;
	uint8_t *b = encode_n(ts, n, &len);

	refuse(f, b, len, want);
	free(b);
}

static void put32(uint8_t *b, size_t off, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b[off + i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *b, size_t off, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b[off + i] = (uint8_t)(v >> (8 * i));
}

/* ---- The byte layout (docs/design.md), to patch bytes ---- */

#define MAX_PAGES 64

struct layout {
	size_t nthreads_at, npages_at;
	uint32_t nthreads, npages;
	size_t page_at[MAX_PAGES]; /* each page record */
	size_t thread_at;          /* the first thread record */
	/* In the first thread record, when runnable: */
	size_t pc_at, park_arg_at, reply_at, depth_at, nstack_at, top_at,
		nfree_at, npartial_at[VM_NCLASSES], nrefs_at;
	uint32_t nrefs;
	size_t end; /* after the first thread record */
};

static uint32_t get32(const uint8_t *b, size_t off)
{
	return fl_load_u32(b + off);
}

static void walk(const uint8_t *b, size_t len, struct layout *l)
{
	size_t o = 4 + 2 + 8 + 32;

	memset(l, 0, sizeof *l);
	l->nthreads_at = o;
	l->nthreads = get32(b, o);
	l->npages_at = o + 4;
	l->npages = get32(b, o + 4);
	o += 8;
	assert_true(l->npages <= MAX_PAGES);
	for (uint32_t i = 0; i < l->npages; i++) {
		uint8_t kind = b[o + 8], flags = b[o + 9];
		uint8_t cls = b[o + 10];
		l->page_at[i] = o;
		o += 10;
		if (kind == VM_PAGE_SLAB)
			o += 1 + 2 + 4 + 8 * VM_SLAB_WORDS;
		else
			o += 16;
		if (flags & 1)
			o += 4 * (VM_PAGE_SIZE / vm__class_size[cls]);
		if (flags & 2)
			o += VM_PAGE_SIZE;
		if (flags & 4)
			o += 8; /* a lent id */
	}
	l->thread_at = o;
	if (b[o + 8] != 0) {
		l->end = o + 17;
		return;
	}
	o += 9;
	l->pc_at = o;
	o += 12;
	l->park_arg_at = o + 1;
	o += 9;
	l->reply_at = o;
	o += 14 + 9;
	l->depth_at = o;
	o += 4 + 8 * (size_t)get32(b, o);
	l->nstack_at = o;
	o += 4 + 8 * (size_t)get32(b, o);
	l->top_at = o;
	o += 8;
	l->nfree_at = o;
	o += 4 + 16 * (size_t)get32(b, o);
	for (int c = 0; c < VM_NCLASSES; c++) {
		l->npartial_at[c] = o;
		o += 4 + 8 * (size_t)get32(b, o);
	}
	l->nrefs_at = o;
	l->nrefs = get32(b, o);
	o += 4 + 4 * (size_t)l->nrefs;
	l->end = o;
	assert_true(o <= len);
}

/* ---- States ---- */

static vm_word alloc_ok(struct vm_thread *t, vm_word n)
{
	vm_word a = vm__heap_alloc(&t->local, n);

	assert_true(a != 0);
	return a;
}

static struct vm_page *page_w(struct vm_thread *t, vm_word pn)
{
	bool nomem;
	struct vm_page *pg = vm__page_get_w(&t->local, pn, &nomem);

	assert_non_null(pg);
	assert_non_null(vm__page_bytes(pg));
	return pg;
}

/* A thread at main's start with the pages of the P_ enum, from
 * tsb_rich_heap(): full and partial slabs of three classes, a large
 * block, a free run, and bytes written on two pages. */
static void make_rich(struct fx *f)
{
	struct vm_thread *t =
		vm__thread_new(f->p, func(f, "main"), NULL, 0, NULL);
	struct tsb_rich r;

	assert_non_null(t);
	assert_true(tsb_rich_heap(t, &r));
	assert_true(r.last8 >> VM_PAGE_SHIFT == P_PART8);
	assert_true(r.b100 >> VM_PAGE_SHIFT == P_PART128);
	assert_true(r.big >> VM_PAGE_SHIFT == P_BIG);
	assert_true(r.second2k >> VM_PAGE_SHIFT == P_FULL2K);
	assert_true(r.freed >> VM_PAGE_SHIFT == P_FREE);
	assert_true(t->local.heap->top == P_TOP);
	memset(page_w(t, P_BIG)->data, 0xa5, VM_PAGE_SIZE);
	f->rich = t;
	f->base = encode1(t, &f->base_len);
}

static int setup_rich(void **state)
{
	if (open_fx(state, false) != 0)
		return -1;
	make_rich(*state);
	return 0;
}

static int setup_rich_check(void **state)
{
	if (open_fx(state, true) != 0)
		return -1;
	make_rich(*state);
	return 0;
}

/* A private copy of the rich thread (in no table: the test frees it). */
static struct vm_thread *rich_copy(struct fx *f)
{
	return decode1(f, f->base, f->base_len);
}

static void step(struct fx *f, vm_word tid, enum vm_stop want)
{
	vm_word who = 0;
	enum vm_stop how;

	assert_true(hr_step(&f->h, &who, &how));
	assert_int_equal(who, tid);
	assert_int_equal(how, want);
}

/* State A: every child stopped, main yielded before calling f. */
static int setup_run(void **state)
{
	struct fx *f;

	if (open_fx(state, false) != 0)
		return -1;
	f = *state;
	f->h.w->now = vm__thread_new(f->p, func(f, "main"), NULL, 0, NULL);
	assert_non_null(f->h.w->now);
	for (size_t i = 0; i < TSB_STATE_A_STEPS; i++)
		step(f, tsb_state_a[i].tid, tsb_state_a[i].how);
	return 0;
}

static struct vm_thread *thread(struct fx *f, vm_word tid)
{
	struct vm_thread *t = hr_thread(&f->h, tid);

	assert_non_null(t);
	return t;
}

/* A decoded copy of thread @tid of the running program. */
static struct vm_thread *copy_of(struct fx *f, vm_word tid)
{
	size_t len;
	uint8_t *b = encode1(thread(f, tid), &len);
	struct vm_thread *t = decode1(f, b, len);

	free(b);
	return t;
}

/* The module code offset of the @nth (from 0) instruction @op of
 * function @name. */
static uint32_t op_at(struct fx *f, const char *name, enum vm_op op, int nth)
{
	uint32_t off = tsb_op_at(f->m, name, op, nth);

	if (off == UINT32_MAX)
		fail_msg("no %s in %s", vm_opinfo[op].mnemonic, name);
	return off;
}

/* Put @t at the start of instruction @off of a function called from
 * nowhere (depth 0, bp 0): zero slots, then the @n operand words. */
static void place(struct fx *f, struct vm_thread *t, uint32_t off,
		  const vm_word *ops, uint32_t n)
{
	int fi = vm_module_func_at(f->m, off);
	const struct vm_xfunc *fn = &f->p->x.funcs[fi];
	struct vm_fault fault;

	assert_int_equal(f->m->depth[off], (int32_t)n);
	assert_true(vm__thread_grow_stack(t, &fault, fn->frame_words + 1));
	t->pc = f->p->x.cell_at[off];
	t->depth = 0;
	t->bp = 0;
	memset(t->stack, 0, fn->nslots * sizeof *t->stack);
	memcpy(t->stack + fn->nslots, ops, n * sizeof *ops);
	t->sp = (int32_t)(fn->nslots + n) - 1;
}

static void set_partial(struct vm_heap *h, int c, const vm_word *pages,
			size_t n)
{
	h->partial[c] = realloc(h->partial[c], (n ? n : 1) * sizeof(vm_word));
	if (h->partial[c] == NULL)
		die("memory");
	memcpy(h->partial[c], pages, n * sizeof(vm_word));
	h->npartial[c] = h->partial_cap[c] = n;
}

static void set_free(struct vm_heap *h, const struct vm_range *r, size_t n)
{
	h->free_ranges = realloc(h->free_ranges, (n ? n : 1) * sizeof *r);
	if (h->free_ranges == NULL)
		die("memory");
	memcpy(h->free_ranges, r, n * sizeof *r);
	h->nfree = h->free_cap = n;
}

static struct vm_page *pg(struct vm_thread *t, vm_word pn)
{
	struct vm_page *p = vm__page_get(&t->local, pn);

	assert_non_null(p);
	return p;
}

/* ---- What round-trips ---- */

static void test_rich_roundtrip(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	size_t len;
	uint8_t *again = encode1(d, &len);
	const struct vm_heap *h = d->local.heap;

	assert_int_equal(len, f->base_len);
	assert_memory_equal(again, f->base, len);
	assert_int_equal(d->tid, TSB_MAIN);
	assert_int_equal(d->pc, f->rich->pc);
	assert_int_equal(d->sp, f->rich->sp);
	assert_true(h->top == P_TOP);
	assert_int_equal(h->nfree, 1);
	assert_true(h->free_ranges[0].first == P_FREE &&
		    h->free_ranges[0].n == 5);
	assert_int_equal(h->npartial[0], 1);
	assert_true(h->partial[0][0] == P_PART8);
	assert_int_equal(pg(d, P_FULL8)->nlive, 512);
	assert_int_equal(pg(d, P_BIG + 2)->head, P_BIG);
	assert_int_equal(pg(d, P_BIG + 2)->bytes, 9000);
	assert_memory_equal(pg(d, P_PART128)->data, pg(f->rich, P_PART128)->data,
			    VM_PAGE_SIZE);
	assert_null(pg(d, P_FULL8)->data); /* never written: still none */
	assert_int_equal(atomic_load(&pg(d, P_BIG)->refs), 1);
	free(again);
	vm__thread_free(d);
}

/* The decoded allocator is one vm_heap.c can go on with: frees unmap
 * emptied pages and runs, allocations reuse them. */
static void test_decoded_allocator_works(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	vm_word first, n;

	assert_int_equal(vm__heap_free(&d->local, P_PART8 << VM_PAGE_SHIFT,
				       &first, &n),
			 0);
	assert_true(n == 1 && vm__page_get(&d->local, P_PART8) == NULL);
	assert_int_equal(d->local.heap->npartial[0], 0);
	assert_int_equal(vm__heap_free(&d->local, P_FULL8 << VM_PAGE_SHIFT,
				       &first, &n),
			 0);
	assert_int_equal(d->local.heap->npartial[0], 1); /* now partial */
	assert_int_equal(vm__heap_free(&d->local, P_BIG << VM_PAGE_SHIFT,
				       &first, &n),
			 0);
	assert_true(n == 3);
	assert_true(vm__heap_alloc(&d->local, 8) >> VM_PAGE_SHIFT == P_FULL8);
	assert_true(vm__heap_alloc(&d->local, 20000) != 0);
	vm__thread_free(d);
}

/* State A as one batch: the parked, finished and queued threads come
 * back as they were, sharing main's 64 KiB block. */
static void test_parked_batch_roundtrip(void **state)
{
	struct fx *f = *state;
	struct vm_thread *ts[6], **ds;
	vm_word block = thread(f, TSB_MAIN)->stack[0];
	vm_word word = thread(f, TSB_MAIN)->stack[1];
	size_t len, n, one_len, singles = 0;
	uint8_t *b, *again;
	struct fl_err err;

	for (int i = 0; i < 6; i++) {
		size_t one;
		ts[i] = thread(f, TSB_MAIN + i);
		free(encode1(ts[i], &one));
		singles += one;
	}
	b = encode_n(ts, 6, &len);
	print_message("state A: %zu bytes as a batch, %zu one by one\n", len,
		      singles);
	assert_true(len < singles / 3);
	if (vm__threads_decode(f->p, b, len, &ds, &n, &err) != 0)
		fail_msg("%s", err.msg);
	assert_int_equal(n, 6);
	assert_int_equal(ds[TSB_LOCKER - 1]->park, VM_PARK_LOCK);
	assert_true(ds[TSB_LOCKER - 1]->park_arg == word);
	assert_int_equal(atomic_load(&ds[TSB_LOCKER - 1]->pstate), VM_P_PARKED);
	assert_int_equal(ds[TSB_WAITER - 1]->park, VM_PARK_WAIT);
	assert_true(ds[TSB_WAITER - 1]->park_arg == word + 8);
	assert_int_equal(ds[TSB_JOINER - 1]->park, VM_PARK_JOIN);
	assert_true(ds[TSB_JOINER - 1]->park_arg == TSB_SLOW);
	assert_int_equal(atomic_load(&ds[TSB_FINISHER - 1]->state), VM_T_DONE);
	assert_true(ds[TSB_FINISHER - 1]->result == 42);
	assert_null(ds[TSB_FINISHER - 1]->local.heap);
	assert_int_equal(ds[TSB_SLOW - 1]->park, VM_PARK_NONE);
	assert_int_equal(atomic_load(&ds[TSB_SLOW - 1]->pstate), VM_P_RUN);
	/* The block: one page for main and its four running children. */
	for (vm_word pn = block >> VM_PAGE_SHIFT; pn < (block >> VM_PAGE_SHIFT) + 16;
	     pn++) {
		const struct vm_page *p0 = vm__page_get(&ds[0]->local, pn);
		assert_non_null(p0);
		assert_int_equal(atomic_load(&p0->refs), 5);
		for (int i = 1; i < 6; i++)
			if (i != TSB_FINISHER - 1)
				assert_ptr_equal(vm__page_get(&ds[i]->local, pn), p0);
	}
	again = encode_n(ds, n, &one_len);
	assert_int_equal(one_len, len);
	assert_memory_equal(again, b, len);
	free(again);
	for (int i = 0; i < 6; i++)
		vm__thread_free(ds[i]);
	free(ds);
	free(b);
}

/* State B: slow ended, joiner was resumed with 7 and not yet run. The
 * reply travels, and the decoded joiner's join takes it. */
static void test_reply_carried(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d;

	step(f, TSB_SLOW, VM_STOP_DONE);
	assert_true(thread(f, TSB_JOINER)->reply.ready);
	d = copy_of(f, TSB_JOINER);
	assert_true(d->reply.ready);
	assert_int_equal(d->reply.kind, VM_PARK_JOIN);
	assert_true(d->reply.value == 7);
	assert_int_equal(d->park, VM_PARK_NONE);
	hr_count(d);
	assert_int_equal(hr_slice(&f->h, d), VM_STOP_DONE);
	assert_int_equal(atomic_load(&d->state), VM_T_DONE);
	assert_true(d->result == 7);
	vm__thread_free(d);
}

/* A decoded parked thread queued again re-executes its lock, parks
 * anew, and is the same state as before. */
static void test_parked_rerun(void **state)
{
	struct fx *f = *state;
	size_t len, len2;
	uint8_t *b = encode1(thread(f, TSB_LOCKER), &len), *b2;
	struct vm_thread *d = decode1(f, b, len);

	hr_count(d);
	assert_int_equal(hr_slice(&f->h, d), VM_STOP_PARK);
	assert_int_equal(atomic_load(&d->pstate), VM_P_PARKED);
	b2 = encode1(d, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(b2, b, len);
	free(b2);
	free(b);
	/* d stays in a wait queue, which nothing reads after this. */
	vm__thread_free(d);
}

/* State C: main two frames deep in f, after f's store. The copy goes on
 * from there: f returns, main returns 0. */
static void test_call_depth_roundtrip(void **state)
{
	struct fx *f = *state;
	struct vm_thread *m, *d;
	vm_word block;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	m = thread(f, TSB_MAIN);
	assert_int_equal(m->depth, 1);
	d = copy_of(f, TSB_MAIN);
	assert_int_equal(d->depth, 1);
	assert_int_equal(d->frames[0].ret, m->frames[0].ret);
	assert_int_equal(d->frames[0].bp, m->frames[0].bp);
	block = d->stack[0];
	assert_true(fl_load_u64(pg(d, block >> VM_PAGE_SHIFT)->data) == 3);
	assert_true(fl_load_u64(pg(thread(f, TSB_LOCKER), block >> VM_PAGE_SHIFT)->data) ==
		    0x0707070707070707ull);
	hr_count(d);
	assert_int_equal(hr_slice(&f->h, d), VM_STOP_END);
	assert_int_equal(f->p->status, 0);
	vm__thread_free(d);
}

/* Parent and three children sharing a 64 KiB block after spawn: the
 * batch holds the block once; decoded, each page is one struct vm_page
 * referenced by the four trees (refs 4), charged once; a store through
 * vm__xlate by one copy copies the page for it alone. */
static void test_shared_pages(void **state)
{
	struct fx *f = *state;
	const struct vm_xfunc *fn = func(f, "finisher");
	struct vm_thread *ts[4], **ds;
	struct vm_worker *w = f->h.w;
	vm_word a, pn0;
	size_t len, one, n;
	uint8_t *b, *q;
	int64_t before;
	struct fl_err err;

	ts[0] = vm__thread_new(f->p, fn, NULL, 0, NULL);
	assert_non_null(ts[0]);
	a = alloc_ok(ts[0], 65536);
	pn0 = a >> VM_PAGE_SHIFT;
	for (vm_word i = 0; i < 16; i++)
		memset(page_w(ts[0], pn0 + i)->data, (int)(0x10 + i), VM_PAGE_SIZE);
	for (int i = 1; i < 4; i++) {
		ts[i] = vm__thread_new(f->p, fn, NULL, 0, ts[0]);
		assert_non_null(ts[i]);
	}
	free(encode1(ts[0], &one));
	b = encode_n(ts, 4, &len);
	print_message("parent + 3 children sharing 64 KiB: %zu bytes as a batch "
		      "(one thread alone: %zu; 16 pages: %u)\n",
		      len, one, 16 * VM_PAGE_SIZE);
	assert_true(len < one + 2048);
	before = atomic_load(&f->p->budget.left);
	if (vm__threads_decode(f->p, b, len, &ds, &n, &err) != 0)
		fail_msg("%s", err.msg);
	/* The 16 pages once, not once per thread; the rest is the four
	 * threads' own (structs, stacks, frames, tree nodes, lists). */
	int64_t drop = before - atomic_load(&f->p->budget.left);
	assert_true(drop >= 16 * VM_COST_PAGE && drop < 32 * VM_COST_PAGE);
	for (vm_word i = 0; i < 16; i++) {
		struct vm_page *p0 = vm__page_get(&ds[0]->local, pn0 + i);
		assert_non_null(p0);
		assert_ptr_not_equal(p0, vm__page_get(&ts[0]->local, pn0 + i));
		assert_int_equal(atomic_load(&p0->refs), 4);
		for (int k = 1; k < 4; k++)
			assert_ptr_equal(vm__page_get(&ds[k]->local, pn0 + i), p0);
	}
	/* Child 1 stores as the interpreter does. */
	w->cur = ds[1];
	vm__tlb_flush(w);
	assert_int_equal(vm__xlate(w, a + 8, 8, true, "st64", &q), VM_OK);
	memcpy(q, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	assert_ptr_not_equal(vm__page_get(&ds[1]->local, pn0),
			     vm__page_get(&ds[0]->local, pn0));
	assert_int_equal(atomic_load(&vm__page_get(&ds[0]->local, pn0)->refs), 3);
	assert_int_equal(atomic_load(&vm__page_get(&ds[1]->local, pn0)->refs), 1);
	for (int k = 0; k < 4; k++) {
		uint8_t *r;
		w->cur = ds[k];
		vm__tlb_flush(w);
		assert_int_equal(vm__xlate(w, a + 8, 8, false, "ld64", &r), VM_OK);
		assert_true(fl_load_u64(r) == (k == 1 ? 0x0807060504030201ull
						       : 0x1010101010101010ull));
	}
	assert_true(fl_load_u64(vm__page_get(&ts[0]->local, pn0)->data + 8) ==
		    0x1010101010101010ull);
	w->cur = NULL;
	vm__tlb_flush(w);
	for (int k = 0; k < 4; k++)
		vm__thread_free(ds[k]);
	assert_true(atomic_load(&f->p->budget.left) == before);
	free(ds);
	free(b);
}

static void test_single_decode_refuses_batch(void **state)
{
	struct fx *f = *state;
	struct vm_thread *ts[2] = {thread(f, TSB_LOCKER), thread(f, TSB_WAITER)}, *t;
	size_t len;
	uint8_t *b = encode_n(ts, 2, &len);
	struct fl_err err;

	assert_int_equal(vm__thread_decode(f->p, b, len, &t, &err), FL_EFORMAT);
	assert_non_null(strstr(err.msg, "2 threads, not one"));
	free(b);
}

/* --debug-migrate's round trip of a thread whose allocator state is
 * broken ends the process with a runtime error saying what is wrong
 * (and keeps nothing quietly). */
static void test_roundtrip_failure_is_loud(void **state)
{
	struct fx *f = *state;
	struct vm_heap *h = f->rich->local.heap;
	char out[2048];
	ssize_t got;

	h->npartial[0] = 0; /* P_PART8, with room, no longer listed */
	assert_null(vm__thread_roundtrip(f->h.w, f->rich));
	assert_true(atomic_load(&f->p->ending));
	assert_int_equal(f->p->status, 70);
	assert_ptr_equal(thread(f, TSB_MAIN), f->rich); /* still in the table */
	h->npartial[0] = 1;
	hr_close(&f->h);
	f->closed = true;
	got = read(f->err_r, out, sizeof out - 1);
	assert_true(got > 0);
	out[got] = '\0';
	print_message("the process printed (as it should): %s", out);
	assert_non_null(strstr(out, "runtime error: debug-migrate: round trip "
				    "failed: thread state: thread 1: slab page 2 "
				    "(class 0, 1 of 512 blocks live) is not in "
				    "its class's partial list"));
}

/* ---- Refused: the header and the batch ---- */

static void test_refuses_bad_magic(void **state)
{
	struct fx *f = *state;

	f->base[0] = 'X';
	refuse(f, f->base, f->base_len, "not a thread state (bad magic)");
}

static void test_refuses_other_version(void **state)
{
	struct fx *f = *state;

	f->base[4] = 1;
	refuse(f, f->base, f->base_len, "format version 1, not 3");
}

static void test_refuses_other_module(void **state)
{
	struct fx *f = *state;

	f->p->module_hash[17] ^= 1;
	refuse(f, f->base, f->base_len, "thread state: made for another module");
	f->p->module_hash[17] ^= 1;
}

static void test_refuses_other_process(void **state)
{
	struct fx *f = *state;

	f->p->pid++;
	refuse(f, f->base, f->base_len, "made for process 1, not 2");
	f->p->pid--;
}

static void test_refuses_no_threads(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put32(f->base, l.nthreads_at, 0);
	refuse(f, f->base, f->base_len, "no threads");
}

/* What the decoder must say about @b cut to @cut bytes: the part of the
 * layout the cut falls in. The header's counts come first: fewer bytes
 * than that many minimal page records (26 bytes), then thread records
 * (17), is the count's fault. After the first thread record only a
 * finished one may follow. */
static const char *cut_msg(const uint8_t *b, const struct layout *l,
			   size_t cut, char *buf, size_t size)
{
	if (cut < 54)
		return "header cut off";
	if (cut < 54 + 26 * (size_t)l->npages) {
		snprintf(buf, size, "thread state: %" PRIu32 " pages cut off",
			 l->npages);
		return buf;
	}
	for (uint32_t i = 0; i < l->npages; i++) {
		size_t at = l->page_at[i];
		uint8_t kind = b[at + 8], flags = b[at + 9];
		size_t fixed = at + 10 + (kind == VM_PAGE_SLAB ? 71 : 16);
		size_t sizes = flags & 1 ? 4 * (VM_PAGE_SIZE /
						vm__class_size[b[at + 10]])
					 : 0;
		if (cut >= (i + 1 < l->npages ? l->page_at[i + 1] : l->thread_at))
			continue;
		if (cut < fixed)
			snprintf(buf, size, "page record %" PRIu32 " cut off", i);
		else
			snprintf(buf, size, "page %" PRIu64 ": %s cut off",
				 fl_load_u64(b + at),
				 cut < fixed + sizes ? "block sizes" : "bytes");
		return buf;
	}
	if (cut < l->thread_at + 17 * (size_t)l->nthreads)
		return "threads cut off";
	if (cut >= l->end) /* in the second record, a finished thread's */
		return cut < l->end + 9 ? "thread record 1: cut off"
					: "result cut off";
	if (cut < l->thread_at + 9)
		return "thread record 0: cut off";
	if (l->pc_at == 0)
		return "result cut off";
	if (cut < l->depth_at + 4)
		return "registers cut off";
	if (cut < l->nstack_at)
		return "frames cut off";
	if (cut < l->nstack_at + 4)
		return "stack cut off";
	if (cut < l->top_at)
		return "stack words cut off";
	if (cut < l->top_at + 8)
		return "heap cut off";
	if (cut < l->npartial_at[0])
		return "free runs cut off";
	for (int c = 0; c < VM_NCLASSES; c++)
		if (cut < (c + 1 < VM_NCLASSES ? l->npartial_at[c + 1]
					       : l->nrefs_at)) {
			snprintf(buf, size, "partial list of class %d (", c);
			return buf;
		}
	return "pages cut off";
}

/* Refuse every prefix of @b (but only every 251st inside page bytes),
 * each with the message for where it was cut. */
static void refuse_prefixes(struct fx *f, const uint8_t *b, size_t len)
{
	struct layout l;
	char buf[64];

	walk(b, len, &l);
	assert_int_equal(l.end + (l.nthreads > 1 ? 17 : 0), len);
	for (size_t cut = 0; cut < len; cut++) {
		bool in_bytes = false;
		for (uint32_t i = 0; i < l.npages && !in_bytes; i++) {
			size_t next = i + 1 < l.npages ? l.page_at[i + 1] : l.thread_at;
			size_t start = next - (b[l.page_at[i] + 9] & 2 ? VM_PAGE_SIZE : 0);
			in_bytes = cut >= start && cut < next && (cut - start) % 251;
		}
		if (!in_bytes)
			refuse(f, b, cut, cut_msg(b, &l, cut, buf, sizeof buf));
	}
}

/* Every prefix of a state is refused, with a message saying what was
 * cut: the header, a page record, a page's block sizes or bytes, the
 * thread's registers, stack, heap or page list. */
static void test_refuses_cut_off(void **state)
{
	struct fx *f = *state;

	refuse_prefixes(f, f->base, f->base_len);
}

/* The same for a thread two frames deep (its frames cut) followed by a
 * finished one (its record, its result cut), and that one alone. */
static void test_refuses_cut_off_run(void **state)
{
	struct fx *f = *state;
	struct vm_thread *ts[2];
	size_t len;
	uint8_t *b;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	ts[0] = thread(f, TSB_MAIN);
	ts[1] = thread(f, TSB_FINISHER);
	b = encode_n(ts, 2, &len);
	refuse_prefixes(f, b, len);
	free(b);
	b = encode1(ts[1], &len);
	refuse_prefixes(f, b, len);
	free(b);
}

/* Counts far beyond the bytes left are refused before anything is
 * allocated for them (under ASan a calloc of that size would abort). */
static void test_refuses_huge_counts(void **state)
{
	struct fx *f = *state;
	struct layout l;
	uint8_t *b = malloc(f->base_len);

	walk(f->base, f->base_len, &l);
#define HUGE(at, v, want)                                                     \
	do {                                                                  \
		memcpy(b, f->base, f->base_len);                              \
		put32(b, (at), (v));                                          \
		refuse(f, b, f->base_len, (want));                            \
	} while (0)
	HUGE(l.npages_at, 0xffffffffu, "4294967295 pages cut off");
	HUGE(l.nthreads_at, 0xffffffffu, "4294967295 threads cut off");
	HUGE(l.nfree_at, 0x40000000u, "1073741824 free runs cut off");
	HUGE(l.npartial_at[3], 0x20000000u,
	     "partial list of class 3 (536870912 pages) cut off");
	HUGE(l.nrefs_at, 0x40000000u, "1073741824 pages cut off");
	f->p->opt.max_depth = UINT32_MAX;
	HUGE(l.depth_at, 0x10000000u, "268435456 frames cut off");
#undef HUGE
	free(b);
}

static void test_refuses_trailing_bytes(void **state)
{
	struct fx *f = *state;
	uint8_t *b = malloc(f->base_len + 3);

	memcpy(b, f->base, f->base_len);
	memset(b + f->base_len, 0, 3);
	refuse(f, b, f->base_len + 3, "3 bytes after the last thread");
	free(b);
}

static void test_refuses_tid_zero(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	d->tid = 0;
	refuse_t(f, d, "thread record 0: thread id 0");
	vm__thread_free(d);
}

static void test_refuses_duplicate_tid(void **state)
{
	struct fx *f = *state;
	struct vm_thread *ts[2] = {rich_copy(f), rich_copy(f)};

	refuse_n(f, ts, 2, "thread 1 appears twice");
	vm__thread_free(ts[0]);
	vm__thread_free(ts[1]);
}

static void test_refuses_bad_state(void **state)
{
	struct fx *f = *state;
	size_t len;
	uint8_t *b = encode1(thread(f, TSB_FINISHER), &len);

	assert_int_equal(b[len - 9], 1); /* tid, state, result */
	b[len - 9] = 2;
	refuse(f, b, len, "thread 4: state 2 is neither runnable (0) nor "
			  "finished (1)");
	free(b);
}

static void test_refuses_unused_page(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	/* The thread no longer lists its last page (P_FULL2K). */
	put32(f->base, l.nrefs_at, l.nrefs - 1);
	refuse(f, f->base, f->base_len - 4,
	       "page 7 (record 6) is used by no thread");
}

/* ---- Refused: registers, frames, stack ---- */

static void test_refuses_bad_pc(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put32(f->base, l.pc_at, 1); /* inside main's first push */
	refuse(f, f->base, f->base_len,
	       "thread 1: pc 1 is not the start of an instruction");
}

static void test_refuses_sp_mismatch(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	d->sp++;
	refuse_t(f, d, "stack does not match the code at code offset 0: sp is "
		       "not what the code has at pc");
	vm__thread_free(d);
}

/* Unreachable code has no stack depth the verifier proved: no thread
 * may stand there (its stack would be whatever the bytes say). */
static void test_refuses_unreachable_pc(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	uint32_t off = op_at(f, "dead", VM_OP_PUSH, 1);

	assert_int_equal(f->m->depth[off], -1);
	d->pc = f->p->x.cell_at[off];
	d->sp = 0; /* what slots + depth -1 would give */
	refuse_t(f, d, "stack does not match the code at code offset");
	refuse_t(f, d, "pc is not reachable code");
	vm__thread_free(d);
}

static void test_refuses_stack_count(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put32(f->base, l.nstack_at, 2);
	refuse(f, f->base, f->base_len, "2 stack words for sp 2");
}

static void test_refuses_call_depth_limit(void **state)
{
	struct fx *f = *state;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	f->p->opt.max_depth = 0;
	refuse_t(f, thread(f, TSB_MAIN), "call depth 1 over the limit of 0");
}

static void test_refuses_stack_limit(void **state)
{
	struct fx *f = *state;

	f->p->opt.stack_words = 3;
	refuse(f, f->base, f->base_len, "stack words, over the limit of 3");
}

static void test_refuses_bad_return_position(void **state)
{
	struct fx *f = *state;
	struct layout l;
	size_t len;
	uint8_t *b;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	b = encode1(thread(f, TSB_MAIN), &len);
	walk(b, len, &l);
	put32(b, l.depth_at + 4, 1);
	refuse(f, b, len, "frame 0: return position 1 is not the start of an "
			  "instruction");
	free(b);
}

static void test_refuses_return_not_after_call(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	d = copy_of(f, TSB_MAIN);
	d->frames[0].ret = f->p->x.cell_at[op_at(f, "main", VM_OP_ALLOC, 0)];
	refuse_t(f, d, "a return position does not follow a call");
	vm__thread_free(d);
}

static void test_refuses_frame_base(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	d = copy_of(f, TSB_MAIN);
	d->frames[0].bp = 1;
	refuse_t(f, d, "a frame's base does not match its caller's code");
	vm__thread_free(d);
}

static void test_refuses_frame_order(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d;

	step(f, TSB_SLOW, VM_STOP_DONE);
	step(f, TSB_MAIN, VM_STOP_YIELD);
	d = copy_of(f, TSB_MAIN);
	d->frames[0].bp = d->bp + 1;
	refuse_t(f, d, "frame 0: base");
	refuse_t(f, d, "out of order");
	vm__thread_free(d);
}

/* ---- Refused: the parked state ---- */

static void test_refuses_park_kind_range(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_JOINER);

	d->park = VM_PARK__COUNT;
	refuse_t(f, d, "thread 6: park kind 7 out of range");
	vm__thread_free(d);
}

/* join parks only at a join (and so on): joiner's ret has the join's
 * stack depth, so only the park can be wrong. */
static void test_refuses_park_wrong_instruction(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_JOINER), *e = copy_of(f, TSB_WAITER);

	d->pc = f->p->x.cell_at[op_at(f, "joiner", VM_OP_RET, 0)];
	refuse_t(f, d, "parked in join at ret (code offset");
	e->pc = f->p->x.cell_at[op_at(f, "waiter", VM_OP_ADD, 0)];
	refuse_t(f, e, "parked in wait at add (code offset");
	vm__thread_free(d);
	vm__thread_free(e);
}

static void test_refuses_park_arg(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_JOINER), *e = copy_of(f, TSB_LOCKER);

	d->park_arg = 99;
	refuse_t(f, d, "parked in join on 0x63, but the instruction's operand "
		       "is 0x5");
	e->park_arg += 8;
	refuse_t(f, e, "parked in lock on");
	vm__thread_free(d);
	vm__thread_free(e);
}

static void test_refuses_park_arg_unparked(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put64(f->base, l.park_arg_at, 5);
	refuse(f, f->base, f->base_len, "not parked, but with a park argument");
}

static void test_refuses_parked_with_reply(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_JOINER);

	d->reply = (struct vm_reply){VM_PARK_JOIN, true, 0, 7};
	refuse_t(f, d, "parked, but its reply has come");
	vm__thread_free(d);
}

static void test_refuses_reply_kind_range(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_JOINER);

	atomic_store(&d->pstate, VM_P_RUN);
	d->reply = (struct vm_reply){200, true, 0, 7};
	refuse_t(f, d, "reply kind 200 out of range");
	vm__thread_free(d);
}

static void test_refuses_reply_wrong_instruction(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_JOINER);

	atomic_store(&d->pstate, VM_P_RUN);
	d->reply = (struct vm_reply){VM_PARK_LOCK, true, 0, 0};
	refuse_t(f, d, "a reply to lock at join (code offset");
	d->reply = (struct vm_reply){VM_PARK_INPUT, true, 0, 0};
	refuse_t(f, d, "a reply to input at join");
	vm__thread_free(d);
}

static void test_refuses_reply_contents(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put32(f->base, l.reply_at + 2, 0xfffffff2); /* status, not ready */
	refuse(f, f->base, f->base_len, "a reply that has not come has contents");
}

static void test_refuses_flag_byte(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	f->base[l.reply_at + 1] = 2; /* ready */
	refuse(f, f->base, f->base_len, "a flag byte is neither 0 nor 1");
}

static void test_refuses_held_not_at_join(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	d->held = true;
	d->partial = 5;
	refuse_t(f, d, "holds a join result at push (code offset 0)");
	vm__thread_free(d);
}

/* A write's progress: only at a write, and at most its n; a held join
 * result at a join is fine. */
static void test_refuses_partial_not_at_write(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = copy_of(f, TSB_MAIN), *e;
	const vm_word ops[3] = {1, 0x1000, 10};
	size_t len;
	uint8_t *b;

	d->partial = 5;
	refuse_t(f, d, "progress 5 at get (code offset");
	refuse_t(f, d, "which is not a write of that many bytes");
	place(f, d, op_at(f, "writer", VM_OP_WRITE, 0), ops, 3);
	d->partial = 11;
	refuse_t(f, d, "progress 11 at write");
	d->partial = 10;
	b = encode1(d, &len);
	e = decode1(f, b, len);
	assert_true(e->partial == 10);
	vm__thread_free(e);
	free(b);
	d->partial = 0;
	vm__thread_free(d);
	d = copy_of(f, TSB_JOINER);
	atomic_store(&d->pstate, VM_P_RUN);
	d->held = true;
	d->partial = 77;
	b = encode1(d, &len);
	e = decode1(f, b, len);
	assert_true(e->held && e->partial == 77);
	vm__thread_free(e);
	vm__thread_free(d);
	free(b);
}

/* ---- Refused: pages on their own ---- */

static void test_refuses_page_number(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put64(f->base, l.page_at[0], 0);
	refuse(f, f->base, f->base_len, "page record 0: page number 0 out of "
					"range");
	put64(f->base, l.page_at[0], VM_MAX_PAGE);
	refuse(f, f->base, f->base_len, "page number 34359738368 out of range");
}

static void test_refuses_page_kind(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_PART128)->kind = VM_PAGE_DATA;
	refuse_t(f, d, "page 3: kind 1 is not one of local memory");
	pg(d, P_PART128)->kind = VM_PAGE_RODATA;
	refuse_t(f, d, "page 3: kind 0 is not one of local memory");
	vm__thread_free(d);
}

static void test_refuses_page_flags(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	f->base[l.page_at[0] + 9] |= 0x80;
	refuse(f, f->base, f->base_len, "page 1: unknown flags 0x80");
}

static void test_refuses_slab_class(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_PART8)->cls = VM_NCLASSES;
	refuse_t(f, d, "page 2: slab class 16 out of range");
	vm__thread_free(d);
}

static void test_refuses_nlive_mismatch(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_PART8)->nlive = 3;
	refuse_t(f, d, "page 2: nlive is 3 but 1 blocks are live");
	vm__thread_free(d);
}

static void test_refuses_live_bit_beyond_blocks(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_PART128)->live[0] |= (uint64_t)1 << 40;
	pg(d, P_PART128)->nlive = 2;
	refuse_t(f, d, "page 3: live bit 40 beyond the 32 blocks of a "
		       "128-byte slab");
	vm__thread_free(d);
}

static void test_refuses_sizes_unchecked(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	f->base[l.page_at[1] + 9] |= 1; /* P_PART8: block sizes follow */
	refuse(f, f->base, f->base_len, "page 2: block sizes, but the process "
					"does not run with --check");
}

static void test_refuses_large_sizes(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	f->base[l.page_at[3] + 9] |= 1; /* P_BIG */
	refuse(f, f->base, f->base_len, "page 4: block sizes on a large "
					"block's page");
}

static void test_refuses_sizes_missing(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	free(pg(d, P_PART128)->sizes);
	pg(d, P_PART128)->sizes = NULL;
	refuse_t(f, d, "page 3: block sizes missing (the process runs with "
		       "--check)");
	vm__thread_free(d);
}

static void test_refuses_bad_block_size(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	size_t len;
	uint8_t *b;

	assert_int_equal(pg(d, P_PART128)->sizes[0], 104);
	pg(d, P_PART128)->sizes[0] = 0;
	refuse_t(f, d, "page 3: live block 0 has size 0, not 1..128");
	pg(d, P_PART128)->sizes[0] = 136;
	refuse_t(f, d, "page 3: live block 0 has size 136, not 1..128");
	pg(d, P_PART128)->sizes[0] = 128;
	pg(d, P_PART128)->sizes[5] = 0; /* not live: any value */
	b = encode1(d, &len);
	vm__thread_free(decode1(f, b, len));
	free(b);
	vm__thread_free(d);
}

/* A large block's size near 2^63 would make free unmap ~2^51 pages. */
static void test_refuses_large_size_range(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	const vm_word bad[] = {(vm_word)1 << 62, ((vm_word)1 << 47) + 8, 2048,
			       9001};

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		char want[96];
		for (vm_word i = 0; i < 3; i++)
			pg(d, P_BIG + i)->bytes = bad[k];
		snprintf(want, sizeof want, "page 4: large block of %" PRIu64
					    " bytes (not a multiple of 8 in",
			 bad[k]);
		refuse_t(f, d, want);
	}
	vm__thread_free(d);
}

static void test_refuses_large_page_outside_run(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_BIG + 2)->bytes = 8192; /* pages 4..5 */
	refuse_t(f, d, "page 6 lies outside its large block (pages 4..5)");
	pg(d, P_BIG + 2)->bytes = 9000;
	pg(d, P_BIG + 2)->head = P_BIG + 3;
	refuse_t(f, d, "page 6 lies outside its large block (pages 7..9)");
	vm__thread_free(d);
}

/* ---- Refused: a thread's pages and allocator ---- */

static void test_refuses_heap_top(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	d->local.heap->top = 0;
	refuse_t(f, d, "heap top 0 out of range");
	d->local.heap->top = VM_MAX_PAGE + 1;
	refuse_t(f, d, "heap top 34359738369 out of range");
	d->local.heap->top = P_TOP;
	vm__thread_free(d);
}

static void test_refuses_page_above_top(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	d->local.heap->top = P_FULL2K;
	refuse_t(f, d, "page 7 at or above the heap top 7");
	vm__thread_free(d);
}

static void test_refuses_page_index_range(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put32(f->base, l.nrefs_at + 4 * l.nrefs, 1000);
	refuse(f, f->base, f->base_len, "page index 1000 out of range (7 pages)");
}

static void test_refuses_page_index_order(void **state)
{
	struct fx *f = *state;
	struct layout l;

	walk(f->base, f->base_len, &l);
	put32(f->base, l.nrefs_at + 4, 1);
	put32(f->base, l.nrefs_at + 8, 0);
	refuse(f, f->base, f->base_len, "page index 1 used before index 0");
}

/* A thread's pages come by increasing page number (and none twice):
 * here a child lists its shared pages in the wrong order. */
static void test_refuses_page_order(void **state)
{
	struct fx *f = *state;
	struct vm_thread *ts[2];
	struct layout l;
	size_t len;
	uint8_t *b;

	ts[0] = rich_copy(f);
	ts[0]->tid = 77;
	ts[1] = vm__thread_new(f->p, func(f, "finisher"), NULL, 0, ts[0]);
	assert_non_null(ts[1]);
	b = encode_n(ts, 2, &len);
	walk(b, len, &l);
	/* The child's list is the last 7 words. */
	put32(b, len - 28, 1);
	put32(b, len - 24, 0);
	refuse(f, b, len, "page 1 listed after page 2");
	put32(b, len - 24, 1);
	refuse(f, b, len, "page 2 listed after page 2");
	free(b);
	vm__thread_free(ts[0]);
}

/* The state that decoded before: a slab page with room that is in no
 * partial list (the first free on it then crashed the VM). */
static void test_refuses_slab_missing_from_list(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	d->local.heap->npartial[0] = 0;
	refuse_t(f, d, "slab page 2 (class 0, 1 of 512 blocks live) is not in "
		       "its class's partial list");
	d->local.heap->npartial[0] = 1;
	vm__thread_free(d);
}

static void test_refuses_slab_wrong_position(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_PART8)->pidx = 3;
	refuse_t(f, d, "the partial list of class 0 has page 2 at position 0, "
		       "but the page says 3");
	vm__thread_free(d);
}

static void test_refuses_partial_duplicate(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	const vm_word list[] = {P_PART8, P_PART8};

	set_partial(d->local.heap, 0, list, 2);
	refuse_t(f, d, "the partial list of class 0 names page 2 twice");
	vm__thread_free(d);
}

static void test_refuses_partial_bad_page(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	vm_word list[] = {P_PART8, 0};
	static const struct {
		vm_word page;
		const char *want;
	} bad[] = {
		{P_FULL8, "class 0 (8-byte blocks) names page 1, which is full"},
		{P_PART128, "names page 3, a slab of another class"},
		{P_BIG, "names page 4, which is not a slab page"},
		{10, "names page 10, which is not mapped"},
	};

	pg(d, P_FULL8)->pidx = 1;
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		list[1] = bad[k].page;
		set_partial(d->local.heap, 0, list, 2);
		refuse_t(f, d, bad[k].want);
	}
	vm__thread_free(d);
}

static void test_refuses_large_missing_page(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	vm__page_unmap(&d->local, P_BIG + 1);
	refuse_t(f, d, "large block at page 4 (9000 bytes): page 5 is missing");
	vm__thread_free(d);
}

static void test_refuses_large_other_block(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_BIG + 1)->bytes = 12288;
	refuse_t(f, d, "large block at page 4 (9000 bytes): page 5 belongs to "
		       "another block");
	vm__thread_free(d);
}

static void test_refuses_large_no_head(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	vm__page_unmap(&d->local, P_BIG);
	refuse_t(f, d, "large page 5: the first page of its block, 4, is not "
		       "mapped");
	vm__thread_free(d);
}

static void test_refuses_large_not_in_block(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	pg(d, P_BIG)->bytes = 4096; /* a block of its own */
	refuse_t(f, d, "large page 5 is not part of the block at page 4");
	vm__thread_free(d);
}

static void test_refuses_large_past_top(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);

	for (vm_word i = 0; i < 3; i++)
		pg(d, P_BIG + i)->bytes = 10 * VM_PAGE_SIZE;
	refuse_t(f, d, "large block at page 4 (40960 bytes) runs past the heap "
		       "top 13");
	vm__thread_free(d);
}

static void test_refuses_free_run_bounds(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	static const struct vm_range bad[] = {{0, 1}, {8, 6}, {8, 0}, {13, 1}};

	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		set_free(d->local.heap, &bad[k], 1);
		refuse_t(f, d, "is not inside pages 1..12");
	}
	vm__thread_free(d);
}

static void test_refuses_free_runs_overlap(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	static const struct vm_range r[] = {{10, 3}, {8, 5}};

	set_free(d->local.heap, r, 2);
	refuse_t(f, d, "free runs at pages 8 and 10 overlap");
	vm__thread_free(d);
}

static void test_refuses_free_run_over_page(void **state)
{
	struct fx *f = *state;
	struct vm_thread *d = rich_copy(f);
	static const struct vm_range r[] = {{8, 5}, {3, 1}};

	set_free(d->local.heap, r, 2);
	refuse_t(f, d, "page 3 is mapped but inside the free run at page 3");
	vm__thread_free(d);
}

/* ---- Lent pages ----
 *
 * A lender that keeps what it lends (a reference each, the id its
 * index + 1) and a borrower whose lents count their ends. */

#define MAX_LENT 64

struct lender {
	struct vm_page *pg[MAX_LENT];
	uint64_t n;
	int gone;
};

struct test_lent {
	struct vm_lent base;
	struct lender *ld;
	uint64_t key;
};

static uint64_t t_lend(void *ctx, struct vm_page *p)
{
	struct lender *ld = ctx;

	for (uint64_t i = 0; i < ld->n; i++)
		if (ld->pg[i] == p)
			return i + 1;
	assert_true(ld->n < MAX_LENT);
	atomic_fetch_add(&p->refs, 1);
	ld->pg[ld->n] = p;
	return ++ld->n;
}

static void t_gone(struct vm_lent *l)
{
	struct test_lent *tl = (struct test_lent *)l;

	tl->ld->gone++;
	free(tl->base.data);
	free(tl);
}

static struct vm_lent *t_borrow(void *ctx, uint64_t key)
{
	struct test_lent *tl = calloc(1, sizeof *tl);

	assert_non_null(tl);
	atomic_init(&tl->base.refs, 1);
	tl->base.gone = t_gone;
	tl->ld = ctx;
	tl->key = key;
	return &tl->base;
}

static void lender_close(struct fx *f, struct lender *ld)
{
	for (uint64_t i = 0; i < ld->n; i++)
		vm__page_unref(ld->pg[i], &f->p->budget);
}

static uint8_t *encode_lent(struct vm_thread *t, struct lender *ld,
			    size_t threshold, size_t *len)
{
	const struct vm_lending l = {.ctx = ld, .threshold = threshold,
				     .lend = t_lend};
	struct fl_buf b;

	fl_buf_init(&b);
	assert_int_equal(vm__threads_encode_lent(&t, 1, &b, &l), 0);
	return fl_buf_take(&b, len);
}

/* Over the threshold every page with bytes goes lent: metadata and an
 * id; decoded, those pages are absent -- never read as zero, their
 * bytes only from the lent -- and moving on they are lent again. */
static void test_lent_roundtrip(void **state)
{
	struct fx *f = *state;
	struct lender ld = {0}, again = {0};
	const struct vm_lending bl = {.ctx = &ld, .borrow = t_borrow};
	struct vm_thread **ts, *d;
	struct vm_page *p;
	struct fl_err err;
	struct fl_buf b;
	uint8_t *lent, *more;
	size_t len, len2, n;

	/* under the threshold: the bytes go, as without lending */
	lent = encode_lent(f->rich, &ld, (size_t)1 << 30, &len);
	assert_int_equal(len, f->base_len);
	assert_memory_equal(lent, f->base, len);
	assert_int_equal(ld.n, 0);
	free(lent);
	lent = encode_lent(f->rich, &ld, 0, &len);
	assert_true(ld.n > 0);
	assert_true(len + ld.n * (VM_PAGE_SIZE - 8) == f->base_len);
	/* without a borrower nothing here can fetch them */
	refuse(f, lent, len, "its bytes are lent (id 1), and nothing here "
			     "can fetch them");
	assert_int_equal(vm__threads_decode_lent(f->p, lent, len, &bl, &ts, &n,
						 &err), 0);
	assert_int_equal(n, 1);
	d = ts[0];
	free(ts);
	p = pg(d, P_PART128);
	assert_true(vm__page_absent(p));
	assert_null(vm__page_bytes(p)); /* no zeros in its place */
	assert_true(vm__page_absent(p));
	assert_false(vm__page_absent(pg(d, P_FULL8))); /* all zero: not lent */
	/* moving on: the absent pages are lent again, or it cannot move */
	more = encode_lent(d, &again, (size_t)1 << 30, &len2);
	assert_int_equal(again.n, ld.n);
	assert_int_equal(len2, len);
	free(more);
	fl_buf_init(&b);
	assert_int_equal(vm__threads_encode(&d, 1, &b), FL_EINVAL);
	fl_buf_close(&b);
	/* the bytes come: a copy of the lender's page */
	p->lent->data = malloc(VM_PAGE_SIZE);
	assert_non_null(p->lent->data);
	memcpy(p->lent->data, pg(f->rich, P_PART128)->data, VM_PAGE_SIZE);
	assert_non_null(vm__page_bytes(p));
	assert_false(vm__page_absent(p));
	assert_memory_equal(p->data, pg(f->rich, P_PART128)->data,
			    VM_PAGE_SIZE);
	lender_close(f, &again);
	vm__thread_free(d);
	assert_int_equal(ld.gone, (int)ld.n); /* every lent let go */
	lender_close(f, &ld);
	free(lent);
}

/* vm_lending.own of a machine that lent nothing. */
static int t_own_nothing(void *ctx, uint64_t key, uint8_t *bytes,
			 struct vm_lent **lent)
{
	(void)ctx;
	(void)key;
	(void)bytes;
	(void)lent;
	return 0;
}

/* A page record that names a lent id must name a good one, and not its
 * bytes too. */
static void test_refuses_bad_lent_id(void **state)
{
	struct fx *f = *state;
	struct lender ld = {0};
	const struct vm_lending bl = {.ctx = &ld, .borrow = t_borrow};
	struct vm_thread **ts = NULL;
	struct fl_err err = {{0}};
	struct layout l;
	size_t len, n, at;
	uint8_t *lent = encode_lent(f->rich, &ld, 0, &len);
	uint32_t i;

	walk(lent, len, &l);
	for (i = 0; i < l.npages && !(lent[l.page_at[i] + 9] & 4); i++)
		;
	assert_true(i < l.npages);
	at = (i + 1 < l.npages ? l.page_at[i + 1] : l.thread_at) - 8;
	assert_true(fl_load_u64(lent + at) != 0);
	memset(lent + at, 0, 8);
	assert_int_equal(vm__threads_decode_lent(f->p, lent, len, &bl, &ts, &n,
						 &err), FL_EFORMAT);
	assert_non_null(strstr(err.msg, "lent id 0 (no lent page has it)"));
	lent[l.page_at[i] + 9] |= 2;
	assert_int_equal(vm__threads_decode_lent(f->p, lent, len, &bl, &ts, &n,
						 &err), FL_EFORMAT);
	assert_non_null(strstr(err.msg, "more than one of its bytes, a lent "
					"id and an id of ours"));
	/* an id of ours: refused where nothing lends, or lent nothing so */
	lent[l.page_at[i] + 9] = (uint8_t)((lent[l.page_at[i] + 9] & ~6) | 8);
	memset(lent + at, 0x11, 8);
	assert_int_equal(vm__threads_decode_lent(f->p, lent, len, &bl, &ts, &n,
						 &err), FL_EFORMAT);
	assert_non_null(strstr(err.msg, "are ours (id 1229782938247303441), "
					"and nothing here lends"));
	{
		const struct vm_lending own = {.ctx = &ld, .borrow = t_borrow,
					       .own = t_own_nothing};
		assert_int_equal(vm__threads_decode_lent(f->p, lent, len, &own,
							 &ts, &n, &err),
				 FL_EFORMAT);
		assert_non_null(strstr(err.msg, "no page of ours has id "
						"1229782938247303441"));
	}
	assert_int_equal(ld.gone, 0); /* refused before anything was borrowed */
	lender_close(f, &ld);
	free(lent);
}

int main(void)
{
#define RICH(t) cmocka_unit_test_setup_teardown(t, setup_rich, teardown)
#define CHECK(t) cmocka_unit_test_setup_teardown(t, setup_rich_check, teardown)
#define RUN(t) cmocka_unit_test_setup_teardown(t, setup_run, teardown)
	const struct CMUnitTest tests[] = {
	    RICH(test_rich_roundtrip),
	    CHECK(test_rich_roundtrip),
	    RICH(test_lent_roundtrip),
	    CHECK(test_lent_roundtrip),
	    RICH(test_refuses_bad_lent_id),
	    RICH(test_decoded_allocator_works),
	    RUN(test_parked_batch_roundtrip),
	    RUN(test_reply_carried),
	    RUN(test_parked_rerun),
	    RUN(test_call_depth_roundtrip),
	    RICH(test_shared_pages),
	    RUN(test_single_decode_refuses_batch),
	    RICH(test_roundtrip_failure_is_loud),
	    RICH(test_refuses_bad_magic),
	    RICH(test_refuses_other_version),
	    RICH(test_refuses_other_module),
	    RICH(test_refuses_other_process),
	    RICH(test_refuses_no_threads),
	    RICH(test_refuses_cut_off),
	    CHECK(test_refuses_cut_off),
	    RUN(test_refuses_cut_off_run),
	    RICH(test_refuses_huge_counts),
	    RICH(test_refuses_trailing_bytes),
	    RICH(test_refuses_tid_zero),
	    RICH(test_refuses_duplicate_tid),
	    RUN(test_refuses_bad_state),
	    RICH(test_refuses_unused_page),
	    RICH(test_refuses_bad_pc),
	    RICH(test_refuses_sp_mismatch),
	    RICH(test_refuses_unreachable_pc),
	    RICH(test_refuses_stack_count),
	    RUN(test_refuses_call_depth_limit),
	    RICH(test_refuses_stack_limit),
	    RUN(test_refuses_bad_return_position),
	    RUN(test_refuses_return_not_after_call),
	    RUN(test_refuses_frame_base),
	    RUN(test_refuses_frame_order),
	    RUN(test_refuses_park_kind_range),
	    RUN(test_refuses_park_wrong_instruction),
	    RUN(test_refuses_park_arg),
	    RICH(test_refuses_park_arg_unparked),
	    RUN(test_refuses_parked_with_reply),
	    RUN(test_refuses_reply_kind_range),
	    RUN(test_refuses_reply_wrong_instruction),
	    RICH(test_refuses_reply_contents),
	    RICH(test_refuses_flag_byte),
	    RICH(test_refuses_held_not_at_join),
	    RUN(test_refuses_partial_not_at_write),
	    RICH(test_refuses_page_number),
	    RICH(test_refuses_page_kind),
	    RICH(test_refuses_page_flags),
	    RICH(test_refuses_slab_class),
	    RICH(test_refuses_nlive_mismatch),
	    RICH(test_refuses_live_bit_beyond_blocks),
	    RICH(test_refuses_sizes_unchecked),
	    RICH(test_refuses_large_sizes),
	    CHECK(test_refuses_sizes_missing),
	    CHECK(test_refuses_bad_block_size),
	    RICH(test_refuses_large_size_range),
	    RICH(test_refuses_large_page_outside_run),
	    RICH(test_refuses_heap_top),
	    RICH(test_refuses_page_above_top),
	    RICH(test_refuses_page_index_range),
	    RICH(test_refuses_page_index_order),
	    RICH(test_refuses_page_order),
	    RICH(test_refuses_slab_missing_from_list),
	    RICH(test_refuses_slab_wrong_position),
	    RICH(test_refuses_partial_duplicate),
	    RICH(test_refuses_partial_bad_page),
	    RICH(test_refuses_large_missing_page),
	    RICH(test_refuses_large_other_block),
	    RICH(test_refuses_large_no_head),
	    RICH(test_refuses_large_not_in_block),
	    RICH(test_refuses_large_past_top),
	    RICH(test_refuses_free_run_bounds),
	    RICH(test_refuses_free_runs_overlap),
	    RICH(test_refuses_free_run_over_page),
	};
#undef RICH
#undef CHECK
#undef RUN
	return cmocka_run_group_tests(tests, NULL, NULL);
}
