/* Thread state to bytes and back: what lets threads move between
 * machines. One batch holds any number of threads of one process; a page
 * several of them share copy-on-write is written once and is one page
 * again when decoded.
 *
 * Format "FLKT" version 3, all little-endian (docs/design.md has the
 * byte table):
 *   header   "FLKT", u16 version, u64 pid, 32 bytes module hash,
 *            u32 nthreads, u32 npages
 *   pages    npages x { u64 pageno, u8 kind, u8 flags, then a slab's
 *            u8 class, u16 nlive, u32 pidx, 8 x u64 live bits, or a
 *            large block page's u64 head, u64 bytes; then the block
 *            sizes (flag 1: blocks x u32) and the bytes (flag 2: 4096)
 *            or the id they are lent under (flag 4: u64, never 0), or
 *            the id the receiver itself lent them under (flag 8: u64,
 *            never 0: the page goes back where its bytes are); at most
 *            one of flags 2, 4 and 8 }
 *   threads  nthreads x { u64 tid, u8 state; a finished thread (1): u64
 *            result; a runnable one (0): u32 pc, i32 sp, u32 bp, u8 park,
 *            u64 park_arg, reply { u8 kind, u8 ready, i32 status, u64
 *            value }, u8 held, u64 partial, u32 depth x { u32 ret, u32
 *            bp }, u32 n x u64 stack word, heap { u64 top, u32 n x { u64
 *            first, u64 count } free runs, 16 x (u32 n x u64 page)
 *            partial slabs }, u32 n x u32 page (an index into pages, by
 *            increasing page number) }
 * Code positions (pc, return positions) are module code offsets, never
 * cell indices, so the bytes mean the same on any machine that loaded
 * the module; the hash says which module that is. A thread not parked
 * is written with park 0, a reply not waiting as all zero, so equal
 * states give equal bytes.
 *
 * Sharing: the encoder numbers the distinct struct vm_page of all the
 * threads in the order it meets them. Decoded, the first thread to use
 * a page maps it (vm__page_map: charged to the process's budget once),
 * the others point their own new tree at the same page, which gains a
 * reference per leaf (vm_mem.c's rule), so a write by any of them still
 * copies it. Radix nodes and allocator state are not shared after a
 * decode: each thread gets its own (small) ones.
 *
 * Lending (vm__threads_encode_lent, the peer's struct vm_lending):
 * when the batch's pages with bytes hold more than the peer's threshold,
 * each goes as its metadata and an id the peer lends it under (holding a
 * reference, so it stays immutable), and an absent page (vm_int.h) always
 * does -- the thread passes the reference on, its bytes are not here --
 * so a thread moving again never needs to fetch first. Decoded, such a
 * page is mapped absent, pointing at the peer's struct vm_lent for the
 * id; its bytes come on first access (vm_mem.c). Without a peer, an
 * absent page cannot be encoded (FL_EINVAL) nor a lent record decoded.
 *
 * Not in the bytes: what the process keeps about a thread (the thread
 * table, joiner/joined, wait queue and run queue membership), and its
 * counts of remote faults (vm_locality.c), which start from 0 where it
 * arrives. A decoded
 * thread is in no table or queue and not counted in live/nbusy; one
 * whose state says it is parked has pstate PARKED and must be registered
 * with a waker again, or queued (its instruction runs again and parks
 * anew, which is the same).
 *
 * Decoding treats the bytes as hostile and checks, before allocating or
 * trusting anything: every count against the bytes left; positions
 * against the module (an instruction start; the verifier's stack depth
 * there must give sp; every return position follows a call) and the
 * limits (call depth, stack words); the parked state against the
 * instruction at pc (join parks only at a join, a reply only where its
 * instruction takes it, held only at a join, partial only at a write);
 * and every allocator invariant vm_heap.c relies on later (slab lists,
 * live bits, large block runs, free page runs, --check block sizes; the
 * list is in docs/memory.md). A failure is FL_EFORMAT with a message
 * naming the thread and what is wrong.
 *
 * Runs on any thread. The threads encoded must not run meanwhile
 * (parked, queued, or stopped on the caller's own worker). */
#include "vm/vm_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TSTATE_MAGIC "FLKT"
#define TSTATE_VERSION 3

/* Thread states in the bytes. */
#define STATE_RUNNABLE 0
#define STATE_DONE 1

/* Page record flags. */
#define PAGE_SIZES 0x01 /* block sizes follow (a slab page under --check) */
#define PAGE_DATA 0x02  /* the page's bytes follow (else all zero) */
#define PAGE_LENT 0x04  /* the id its bytes are lent under follows */
#define PAGE_HOME 0x08  /* the id the receiver lent these bytes under */

/* The smallest records, to check counts against the bytes left. */
#define PAGE_MIN_BYTES (8 + 1 + 1 + 8 + 8) /* a large block's page */
#define THREAD_MIN_BYTES (8 + 1 + 8)       /* a finished thread */

_Static_assert(VM_PARK__COUNT <= 256, "a park kind fits a byte");
_Static_assert(VM_NCLASSES <= 256, "a size class fits a byte");

static uint32_t blocks_of(unsigned cls)
{
	return VM_PAGE_SIZE / vm__class_size[cls];
}

static vm_word pages_of(vm_word bytes)
{
	return (bytes + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
}

static void put_i32(struct fl_buf *b, int32_t v)
{
	fl_buf_put_u32(b, (uint32_t)v);
}

/* ---- Encoding ---- */

/* The batch's distinct pages in the order first met, found by address
 * through an open-addressing map, and each thread's page list. */
struct pool {
	const struct vm_page **page;
	vm_word *pageno;
	uint32_t n, cap;
	uint32_t *map; /* pool index + 1, 0 empty; at most half full */
	size_t map_cap;
	uint32_t *ref; /* every thread's page indices, one after another */
	size_t nref, ref_cap;
	bool failed;
};

static size_t map_slot(const void *pg, size_t cap)
{
	return (size_t)(((uint64_t)(uintptr_t)pg * 0x9e3779b97f4a7c15ull) >> 32) &
	       (cap - 1);
}

static bool map_grow(struct pool *pl)
{
	size_t cap = pl->map_cap ? 2 * pl->map_cap : 256;
	uint32_t *m = calloc(cap, sizeof *m);

	if (m == NULL)
		return false;
	for (uint32_t i = 0; i < pl->n; i++) {
		size_t j = map_slot(pl->page[i], cap);
		while (m[j] != 0)
			j = (j + 1) & (cap - 1);
		m[j] = i + 1;
	}
	free(pl->map);
	pl->map = m;
	pl->map_cap = cap;
	return true;
}

static bool pool_add(struct pool *pl, const struct vm_page *pg, vm_word pn,
		     uint32_t *idx)
{
	size_t j;

	if (((size_t)pl->n + 1) * 2 > pl->map_cap && !map_grow(pl))
		return false;
	for (j = map_slot(pg, pl->map_cap); pl->map[j] != 0;
	     j = (j + 1) & (pl->map_cap - 1))
		if (pl->page[pl->map[j] - 1] == pg) {
			*idx = pl->map[j] - 1;
			return true;
		}
	if (pl->n == UINT32_MAX - 1)
		return false;
	if (pl->n == pl->cap) {
		uint32_t cap = pl->cap ? 2 * pl->cap : 64;
		const struct vm_page **p = realloc(pl->page, cap * sizeof *p);
		vm_word *q;
		if (p == NULL)
			return false;
		pl->page = p;
		q = realloc(pl->pageno, cap * sizeof *q);
		if (q == NULL)
			return false;
		pl->pageno = q;
		pl->cap = cap;
	}
	pl->page[pl->n] = pg;
	pl->pageno[pl->n] = pn;
	pl->map[j] = pl->n + 1;
	*idx = pl->n++;
	return true;
}

static bool ref_push(struct pool *pl, uint32_t idx)
{
	if (pl->nref == pl->ref_cap) {
		size_t cap = pl->ref_cap ? 2 * pl->ref_cap : 256;
		uint32_t *r = realloc(pl->ref, cap * sizeof *r);
		if (r == NULL)
			return false;
		pl->ref = r;
		pl->ref_cap = cap;
	}
	pl->ref[pl->nref++] = idx;
	return true;
}

/* Every page under radix node @n (at @level, page numbers from @prefix)
 * into the pool and the current thread's list, in page order. */
static void collect(struct pool *pl, const struct vm_radix *n, int level,
		    vm_word prefix)
{
	for (unsigned i = 0; i < VM_RADIX_FAN && !pl->failed; i++) {
		const void *c = n->slot[i];
		vm_word pn = prefix << VM_RADIX_BITS | i;
		uint32_t idx;
		if (c == NULL)
			continue;
		if (level < VM_RADIX_LEVELS - 1)
			collect(pl, c, level + 1, pn);
		else if (!pool_add(pl, c, pn, &idx) || !ref_push(pl, idx))
			pl->failed = true;
	}
}

/* Page @pg at @pn: its bytes, or (@lent nonzero) the id they are lent
 * under, or neither (all zero). */
static void put_page(struct fl_buf *b, vm_word pn, const struct vm_page *pg,
		     uint64_t lent)
{
	bool slab = pg->kind == VM_PAGE_SLAB;
	bool sizes = slab && pg->sizes != NULL;
	const uint8_t *data = __atomic_load_n(&pg->data, __ATOMIC_ACQUIRE);

	fl_buf_put_u64(b, pn);
	fl_buf_put_u8(b, pg->kind);
	fl_buf_put_u8(b, (sizes ? PAGE_SIZES : 0) |
			 ((lent & VM_LENT_HOME) ? PAGE_HOME
			  : lent != 0		? PAGE_LENT
			  : data != NULL	? PAGE_DATA
						: 0));
	if (slab) {
		fl_buf_put_u8(b, pg->cls);
		fl_buf_put_u16(b, pg->nlive);
		fl_buf_put_u32(b, pg->pidx);
		for (unsigned i = 0; i < VM_SLAB_WORDS; i++)
			fl_buf_put_u64(b, pg->live[i]);
	} else {
		fl_buf_put_u64(b, pg->head);
		fl_buf_put_u64(b, pg->bytes);
	}
	if (sizes)
		for (uint32_t i = 0; i < blocks_of(pg->cls); i++)
			fl_buf_put_u32(b, pg->sizes[i]);
	if (lent != 0)
		fl_buf_put_u64(b, lent & ~VM_LENT_HOME);
	else if (data != NULL)
		fl_buf_put(b, data, VM_PAGE_SIZE);
}

/* Thread @t, whose pages are pl->ref[from .. to). */
static void put_thread(struct fl_buf *b, const struct vm_thread *t,
		       const struct pool *pl, size_t from, size_t to)
{
	const struct vm_xcode *x = &t->proc->x;
	const struct vm_heap *h;
	bool parked, ready;

	fl_buf_put_u64(b, t->tid);
	if (atomic_load(&t->state) == VM_T_DONE) {
		/* only its result is left (vm_interp.c's finish) */
		fl_buf_put_u8(b, STATE_DONE);
		fl_buf_put_u64(b, t->result);
		return;
	}
	h = t->local.heap;
	parked = atomic_load(&t->pstate) == VM_P_PARKED;
	ready = t->reply.ready;
	fl_buf_put_u8(b, STATE_RUNNABLE);
	fl_buf_put_u32(b, x->cell_off[t->pc]);
	put_i32(b, t->sp);
	fl_buf_put_u32(b, t->bp);
	fl_buf_put_u8(b, parked ? t->park : VM_PARK_NONE);
	fl_buf_put_u64(b, parked ? t->park_arg : 0);
	fl_buf_put_u8(b, ready ? t->reply.kind : 0);
	fl_buf_put_u8(b, ready);
	put_i32(b, ready ? t->reply.status : 0);
	fl_buf_put_u64(b, ready ? t->reply.value : 0);
	fl_buf_put_u8(b, t->held);
	fl_buf_put_u64(b, t->partial);
	fl_buf_put_u32(b, t->depth);
	for (uint32_t i = 0; i < t->depth; i++) {
		fl_buf_put_u32(b, x->cell_off[t->frames[i].ret]);
		fl_buf_put_u32(b, t->frames[i].bp);
	}
	fl_buf_put_u32(b, (uint32_t)(t->sp + 1));
	for (int32_t i = 0; i <= t->sp; i++)
		fl_buf_put_u64(b, t->stack[i]);
	fl_buf_put_u64(b, h->top);
	fl_buf_put_u32(b, (uint32_t)h->nfree);
	for (size_t i = 0; i < h->nfree; i++) {
		fl_buf_put_u64(b, h->free_ranges[i].first);
		fl_buf_put_u64(b, h->free_ranges[i].n);
	}
	for (int c = 0; c < VM_NCLASSES; c++) {
		fl_buf_put_u32(b, (uint32_t)h->npartial[c]);
		for (size_t i = 0; i < h->npartial[c]; i++)
			fl_buf_put_u64(b, h->partial[c][i]);
	}
	fl_buf_put_u32(b, (uint32_t)(to - from));
	for (size_t i = from; i < to; i++)
		fl_buf_put_u32(b, pl->ref[i]);
}

/* Which pages of the pool go lent (*@lent: an id per page, 0 for those
 * whose bytes go): when those with bytes exceed the threshold, all of
 * them, and absent pages always. 0, FL_ENOMEM or FL_EINVAL (an absent
 * page, and nothing to lend it with). */
static int lend_pages(const struct pool *pl, const struct vm_lending *l,
		      uint64_t **lent)
{
	size_t with_data = 0;
	bool all;

	*lent = NULL;
	for (uint32_t i = 0; i < pl->n; i++) {
		const struct vm_page *pg = pl->page[i];
		if (vm__page_absent(pg) && l == NULL)
			return FL_EINVAL;
		if (__atomic_load_n(&pg->data, __ATOMIC_ACQUIRE) != NULL ||
		    pg->lent != NULL)
			with_data++;
	}
	if (l == NULL || with_data == 0)
		return 0;
	all = with_data * VM_PAGE_SIZE > l->threshold;
	*lent = calloc(pl->n, sizeof **lent);
	if (*lent == NULL)
		return FL_ENOMEM;
	for (uint32_t i = 0; i < pl->n; i++) {
		struct vm_page *pg = (struct vm_page *)pl->page[i];
		bool absent = vm__page_absent(pg);
		uint64_t home = absent && l->home != NULL ? l->home(l->ctx, pg) : 0;
		if (home != 0) /* the receiver's own bytes: named, not lent */
			(*lent)[i] = home | VM_LENT_HOME;
		else if (absent || (all && (pg->data != NULL || pg->lent != NULL)))
			(*lent)[i] = l->lend(l->ctx, pg);
		if (absent && (*lent)[i] == 0)
			return FL_ENOMEM; /* no bytes here to send instead */
	}
	return 0;
}

static int encode(const struct vm_thread *const *ts, size_t n,
		  struct fl_buf *b, const struct vm_lending *l)
{
	const struct vm_proc *p;
	struct pool pl = {0};
	uint64_t *lent = NULL;
	size_t *first;
	int rc = FL_ENOMEM;

	if (n == 0 || n > UINT32_MAX)
		return FL_EINVAL;
	p = ts[0]->proc;
	for (size_t i = 1; i < n; i++)
		if (ts[i]->proc != p)
			return FL_EINVAL;
	first = malloc((n + 1) * sizeof *first);
	if (first == NULL)
		return FL_ENOMEM;
	for (size_t i = 0; i < n && !pl.failed; i++) {
		first[i] = pl.nref;
		if (atomic_load(&ts[i]->state) != VM_T_DONE &&
		    ts[i]->local.root != NULL)
			collect(&pl, ts[i]->local.root, 0, 0);
	}
	first[n] = pl.nref;
	if (pl.failed)
		goto out;
	if ((rc = lend_pages(&pl, l, &lent)) != 0)
		goto out;
	rc = FL_ENOMEM;
	fl_buf_put(b, TSTATE_MAGIC, 4);
	fl_buf_put_u16(b, TSTATE_VERSION);
	fl_buf_put_u64(b, p->pid);
	fl_buf_put(b, p->module_hash, sizeof p->module_hash);
	fl_buf_put_u32(b, (uint32_t)n);
	fl_buf_put_u32(b, pl.n);
	for (uint32_t i = 0; i < pl.n; i++)
		put_page(b, pl.pageno[i], pl.page[i], lent ? lent[i] : 0);
	for (size_t i = 0; i < n; i++)
		put_thread(b, ts[i], &pl, first[i], first[i + 1]);
	rc = fl_buf_failed(b) ? FL_ENOMEM : 0;
out:
	free(lent);
	free(first);
	free(pl.page);
	free(pl.pageno);
	free(pl.map);
	free(pl.ref);
	return rc;
}

int vm__threads_encode(struct vm_thread *const *ts, size_t n, struct fl_buf *b)
{
	return encode((const struct vm_thread *const *)ts, n, b, NULL);
}

int vm__threads_encode_lent(struct vm_thread *const *ts, size_t n,
			    struct fl_buf *b, const struct vm_lending *l)
{
	return encode((const struct vm_thread *const *)ts, n, b, l);
}

int vm__thread_encode(const struct vm_thread *t, struct fl_buf *b)
{
	return encode(&t, 1, b, NULL);
}

/* ---- Decoding: the reader and its messages ---- */

/* A page record, checked on its own, until (and after) a thread maps it. */
struct page_rec {
	vm_word pn;
	uint8_t kind, flags, cls;
	uint16_t nlive;
	uint32_t pidx;
	vm_word head, bytes;
	uint64_t live[VM_SLAB_WORDS];
	const uint8_t *sizes; /* blocks x u32 in the input, or NULL */
	const uint8_t *data;  /* VM_PAGE_SIZE bytes in the input, or NULL */
	uint64_t lent;        /* PAGE_LENT: the id its bytes are lent under */
	uint64_t home;        /* PAGE_HOME: the id this machine lent them under */
	struct vm_page *pg;   /* once the first thread using it mapped it */
};

struct dec {
	struct fl_reader r;
	struct fl_err *err;
	struct vm_proc *p;
	const struct vm_lending *lending; /* NULL: nothing may be lent */
	struct page_rec *pages;
	uint32_t npages;
	uint32_t next_new; /* pages mapped so far: they come in this order */
	char where[48];    /* "thread 5: " while decoding one */
};

static int bad(struct dec *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int bad(struct dec *d, const char *fmt, ...)
{
	char msg[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return fl_err_set(d->err, FL_EFORMAT, "thread state: %s%s", d->where,
			  msg);
}

static int nomem(struct dec *d, const char *what, vm_word n)
{
	return fl_err_set(d->err, FL_ENOMEM,
			  "thread state: %sout of memory (%s %" PRIu64 ")",
			  d->where, what, n);
}

static bool fits(struct dec *d, uint64_t n, size_t each)
{
	return !d->r.failed && n <= fl_reader_left(&d->r) / each;
}

/* ---- Decoding: pages ---- */

/* A slab page's own consistency: class, live bits, --check sizes. */
static int check_slab_rec(struct dec *d, struct page_rec *pr)
{
	uint32_t nb, size, live = 0;
	bool want_sizes = d->p->opt.check;

	if (pr->cls >= VM_NCLASSES)
		return bad(d, "page %" PRIu64 ": slab class %u out of range",
			   pr->pn, pr->cls);
	nb = blocks_of(pr->cls);
	size = vm__class_size[pr->cls];
	for (uint32_t k = 0; k < VM_SLAB_WORDS; k++) {
		uint64_t w = pr->live[k], beyond = 0;
		if (nb <= 64 * k)
			beyond = w;
		else if (nb < 64 * (k + 1))
			beyond = w & ~(((uint64_t)1 << (nb - 64 * k)) - 1);
		if (beyond != 0)
			return bad(d, "page %" PRIu64 ": live bit %u beyond the "
				      "%" PRIu32 " blocks of a %" PRIu32
				      "-byte slab",
				   pr->pn, 64 * k + (unsigned)__builtin_ctzll(beyond),
				   nb, size);
		live += (uint32_t)__builtin_popcountll(w);
	}
	if (live != pr->nlive)
		return bad(d, "page %" PRIu64 ": nlive is %u but %" PRIu32
			      " blocks are live",
			   pr->pn, pr->nlive, live);
	if (!!(pr->flags & PAGE_SIZES) != want_sizes)
		return bad(d, want_sizes
				      ? "page %" PRIu64 ": block sizes missing "
					"(the process runs with --check)"
				      : "page %" PRIu64 ": block sizes, but the "
					"process does not run with --check",
			   pr->pn);
	if (!want_sizes)
		return 0;
	pr->sizes = fl_get_bytes(&d->r, (size_t)nb * 4);
	if (pr->sizes == NULL)
		return bad(d, "page %" PRIu64 ": block sizes cut off", pr->pn);
	for (uint32_t i = 0; i < nb; i++) {
		uint32_t n = fl_load_u32(pr->sizes + 4 * i);
		if ((pr->live[i / 64] >> (i % 64) & 1) && (n == 0 || n > size))
			return bad(d, "page %" PRIu64 ": live block %" PRIu32
				      " has size %" PRIu32 ", not 1..%" PRIu32,
				   pr->pn, i, n, size);
	}
	return 0;
}

/* A large block page's own consistency: the block's size, and that the
 * page lies inside the run of pages it describes. */
static int check_large_rec(struct dec *d, const struct page_rec *pr)
{
	vm_word np;

	if (pr->flags & PAGE_SIZES)
		return bad(d, "page %" PRIu64 ": block sizes on a large "
			      "block's page",
			   pr->pn);
	if (pr->bytes <= VM_SMALL_MAX ||
	    pr->bytes > (vm_word)1 << VM_SPACE_BITS || pr->bytes % 8 != 0)
		return bad(d, "page %" PRIu64 ": large block of %" PRIu64
			      " bytes (not a multiple of 8 in %u+8..2^47)",
			   pr->pn, pr->bytes, VM_SMALL_MAX);
	np = pages_of(pr->bytes);
	if (pr->head == 0 || pr->head > pr->pn || pr->pn - pr->head >= np)
		return bad(d, "page %" PRIu64 " lies outside its large block "
			      "(pages %" PRIu64 "..%" PRIu64 ")",
			   pr->pn, pr->head, pr->head + np - 1);
	return 0;
}

static int decode_page_rec(struct dec *d, uint32_t i, struct page_rec *pr)
{
	int rc;

	pr->pn = fl_get_u64(&d->r);
	pr->kind = fl_get_u8(&d->r);
	pr->flags = fl_get_u8(&d->r);
	if (pr->kind == VM_PAGE_SLAB) {
		pr->cls = fl_get_u8(&d->r);
		pr->nlive = fl_get_u16(&d->r);
		pr->pidx = fl_get_u32(&d->r);
		for (unsigned k = 0; k < VM_SLAB_WORDS; k++)
			pr->live[k] = fl_get_u64(&d->r);
	} else if (pr->kind == VM_PAGE_LARGE) {
		pr->head = fl_get_u64(&d->r);
		pr->bytes = fl_get_u64(&d->r);
	}
	if (d->r.failed)
		return bad(d, "page record %" PRIu32 " cut off", i);
	if (pr->pn == 0 || pr->pn >= VM_MAX_PAGE)
		return bad(d, "page record %" PRIu32 ": page number %" PRIu64
			      " out of range",
			   i, pr->pn);
	if (pr->kind != VM_PAGE_SLAB && pr->kind != VM_PAGE_LARGE)
		return bad(d, "page %" PRIu64 ": kind %u is not one of local "
			      "memory (slab or large block)",
			   pr->pn, pr->kind);
	if (pr->flags & ~(PAGE_SIZES | PAGE_DATA | PAGE_LENT | PAGE_HOME))
		return bad(d, "page %" PRIu64 ": unknown flags 0x%02x", pr->pn,
			   pr->flags);
	if (__builtin_popcount(pr->flags & (PAGE_DATA | PAGE_LENT | PAGE_HOME)) >
	    1)
		return bad(d, "page %" PRIu64 ": more than one of its bytes, a "
			      "lent id and an id of ours",
			   pr->pn);
	rc = pr->kind == VM_PAGE_SLAB ? check_slab_rec(d, pr)
				      : check_large_rec(d, pr);
	if (rc != 0)
		return rc;
	if (pr->flags & PAGE_DATA) {
		pr->data = fl_get_bytes(&d->r, VM_PAGE_SIZE);
		if (pr->data == NULL)
			return bad(d, "page %" PRIu64 ": bytes cut off", pr->pn);
	}
	if (pr->flags & PAGE_LENT) {
		pr->lent = fl_get_u64(&d->r);
		if (d->r.failed)
			return bad(d, "page %" PRIu64 ": lent id cut off", pr->pn);
		if (pr->lent == 0)
			return bad(d, "page %" PRIu64 ": lent id 0 (no lent page "
				      "has it)",
				   pr->pn);
		if (d->lending == NULL)
			return bad(d, "page %" PRIu64 ": its bytes are lent (id "
				      "%" PRIu64 "), and nothing here can fetch "
				      "them",
				   pr->pn, pr->lent);
	}
	if (pr->flags & PAGE_HOME) {
		pr->home = fl_get_u64(&d->r);
		if (d->r.failed)
			return bad(d, "page %" PRIu64 ": the id of ours cut off",
				   pr->pn);
		if (d->lending == NULL || d->lending->own == NULL)
			return bad(d, "page %" PRIu64 ": its bytes are ours (id "
				      "%" PRIu64 "), and nothing here lends",
				   pr->pn, pr->home);
		if (pr->home == 0)
			return bad(d, "page %" PRIu64 ": an id of ours of 0",
				   pr->pn);
	}
	return 0;
}

/* The first thread to use @pr maps it (charged to the budget). */
static int page_make(struct dec *d, struct vm_space *s, struct page_rec *pr)
{
	struct vm_page *pg = vm__page_map(s, pr->pn);

	if (pg == NULL)
		return nomem(d, "page", pr->pn);
	pr->pg = pg;
	pg->kind = pr->kind;
	pg->cls = pr->cls;
	pg->nlive = pr->nlive;
	pg->pidx = pr->pidx;
	pg->head = pr->head;
	pg->bytes = pr->bytes;
	memcpy(pg->live, pr->live, sizeof pg->live);
	if (pr->sizes != NULL) {
		/* A table of the largest count, charged (vm_heap.c). */
		uint32_t nb = blocks_of(pr->cls);
		if (!vm__charge(s->budget, VM_COST_SIZES))
			return nomem(d, "block sizes of page", pr->pn);
		pg->sizes = calloc(VM_SIZES_MAX, sizeof *pg->sizes);
		if (pg->sizes == NULL) {
			vm__credit(s->budget, VM_COST_SIZES);
			return nomem(d, "block sizes of page", pr->pn);
		}
		for (uint32_t k = 0; k < nb; k++)
			pg->sizes[k] = fl_load_u32(pr->sizes + 4 * k);
	}
	if (pr->data != NULL) {
		if (vm__page_bytes(pg) == NULL)
			return nomem(d, "page", pr->pn);
		memcpy(pg->data, pr->data, VM_PAGE_SIZE);
	}
	if (pr->lent != 0) { /* absent: its bytes come when first touched */
		pg->lent = d->lending->borrow(d->lending->ctx, pr->lent);
		if (pg->lent == NULL)
			return nomem(d, "lent page", pr->pn);
	}
	if (pr->home != 0) { /* back where it was lent: the bytes are here */
		uint8_t *bytes = vm__page_bytes(pg);
		struct vm_lent *l = NULL;
		int got;
		if (bytes == NULL)
			return nomem(d, "page", pr->pn);
		got = d->lending->own(d->lending->ctx, pr->home, bytes, &l);
		if (got == 0)
			return bad(d, "page %" PRIu64 ": no page of ours has id "
				      "%" PRIu64,
				   pr->pn, pr->home);
		if (got == 2) { /* lent to us too: absent here as well */
			free(pg->data);
			pg->data = NULL;
			pg->lent = l;
		}
	}
	return 0;
}

/* Later threads point their tree at the same page. The tree is new and
 * this decode's alone, so the path is simply created (the walk is
 * vm__page_get's), and the page gains a reference: one more leaf. */
static bool page_share(struct vm_space *s, vm_word pn, struct vm_page *pg)
{
	void **slot = (void **)&s->root;

	for (int level = 0; level < VM_RADIX_LEVELS; level++) {
		struct vm_radix *n = *slot;
		int shift = VM_RADIX_BITS * (VM_RADIX_LEVELS - 1 - level);
		if (n == NULL) {
			if (!vm__charge(s->budget, VM_COST_NODE))
				return false;
			n = calloc(1, sizeof *n);
			if (n == NULL) {
				vm__credit(s->budget, VM_COST_NODE);
				return false;
			}
			atomic_init(&n->refs, 1);
			*slot = n;
		}
		slot = &n->slot[(pn >> shift) & (VM_RADIX_FAN - 1)];
	}
	*slot = pg;
	atomic_fetch_add(&pg->refs, 1);
	return true;
}

/* ---- Decoding: the allocator's invariants ---- */

static int cmp_range(const void *a, const void *b)
{
	const struct vm_range *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

/* The record of page @pn among a thread's (sorted by page number). */
static const struct page_rec *find_rec(struct page_rec *const *recs,
				       uint32_t n, vm_word pn)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (recs[mid]->pn == pn)
			return recs[mid];
		if (recs[mid]->pn < pn)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* Free page runs: inside [1, top), disjoint, over no mapped page -- or a
 * page number would be handed out twice. */
static int check_free_runs(struct dec *d, const struct vm_heap *h,
			   struct page_rec *const *recs, uint32_t n)
{
	struct vm_range *s;
	size_t j = 0;
	int rc = 0;

	for (size_t i = 0; i < h->nfree; i++) {
		const struct vm_range *r = &h->free_ranges[i];
		if (r->n == 0 || r->first == 0 || r->first >= h->top ||
		    r->n > h->top - r->first)
			return bad(d, "free run of %" PRIu64 " pages at page %" PRIu64
				      " is not inside pages 1..%" PRIu64,
				   r->n, r->first, h->top - 1);
	}
	if (h->nfree == 0)
		return 0;
	s = malloc(h->nfree * sizeof *s);
	if (s == NULL)
		return nomem(d, "free runs", h->nfree);
	memcpy(s, h->free_ranges, h->nfree * sizeof *s);
	qsort(s, h->nfree, sizeof *s, cmp_range);
	for (size_t i = 1; i < h->nfree && rc == 0; i++)
		if (s[i - 1].first + s[i - 1].n > s[i].first)
			rc = bad(d, "free runs at pages %" PRIu64 " and %" PRIu64
				    " overlap",
				 s[i - 1].first, s[i].first);
	for (uint32_t k = 0; k < n && rc == 0; k++) {
		vm_word pn = recs[k]->pn;
		while (j < h->nfree && s[j].first + s[j].n <= pn)
			j++;
		if (j < h->nfree && s[j].first <= pn)
			rc = bad(d, "page %" PRIu64 " is mapped but inside the "
				    "free run at page %" PRIu64,
				 pn, s[j].first);
	}
	free(s);
	return rc;
}

/* Each class's partial list names slab pages of that class with a free
 * slot, each once, at the position the page records (pidx); and every
 * slab page with a free slot is in it. Otherwise alloc would fill a
 * full page past its end, or free would take the wrong page off. */
static int check_slabs(struct dec *d, const struct vm_heap *h,
		       struct page_rec *const *recs, uint32_t n)
{
	for (int c = 0; c < VM_NCLASSES; c++) {
		uint32_t nb = blocks_of((unsigned)c);
		for (size_t i = 0; i < h->npartial[c]; i++) {
			vm_word pn = h->partial[c][i];
			const struct page_rec *pr = find_rec(recs, n, pn);
			const char *what = NULL;
			if (pr == NULL)
				what = "which is not mapped";
			else if (pr->kind != VM_PAGE_SLAB)
				what = "which is not a slab page";
			else if (pr->cls != c)
				what = "a slab of another class";
			else if (pr->nlive >= nb)
				what = "which is full";
			if (what != NULL)
				return bad(d, "the partial list of class %d (%" PRIu32
					      "-byte blocks) names page %" PRIu64
					      ", %s",
					   c, vm__class_size[c], pn, what);
			if (pr->pidx < h->npartial[c] &&
			    pr->pidx != i && h->partial[c][pr->pidx] == pn)
				return bad(d, "the partial list of class %d names "
					      "page %" PRIu64 " twice",
					   c, pn);
			if (pr->pidx != i)
				return bad(d, "the partial list of class %d has page "
					      "%" PRIu64 " at position %zu, but "
					      "the page says %" PRIu32,
					   c, pn, i, pr->pidx);
		}
	}
	for (uint32_t k = 0; k < n; k++) {
		const struct page_rec *pr = recs[k];
		if (pr->kind != VM_PAGE_SLAB || pr->nlive >= blocks_of(pr->cls))
			continue;
		if (pr->pidx >= h->npartial[pr->cls] ||
		    h->partial[pr->cls][pr->pidx] != pr->pn)
			return bad(d, "slab page %" PRIu64 " (class %u, %u of %" PRIu32
				      " blocks live) is not in its class's "
				      "partial list",
				   pr->pn, pr->cls, pr->nlive, blocks_of(pr->cls));
	}
	return 0;
}

/* A large block is a run of pages from its head, all mapped, all large,
 * all saying the same head and size; free unmaps exactly that run. */
static int check_large_runs(struct dec *d, const struct vm_heap *h,
			    struct page_rec *const *recs, uint32_t n)
{
	for (uint32_t k = 0; k < n;) {
		const struct page_rec *pr = recs[k];
		vm_word np;
		if (pr->kind != VM_PAGE_LARGE) {
			k++;
			continue;
		}
		if (pr->pn != pr->head) {
			if (find_rec(recs, n, pr->head) == NULL)
				return bad(d, "large page %" PRIu64 ": the first "
					      "page of its block, %" PRIu64
					      ", is not mapped",
					   pr->pn, pr->head);
			return bad(d, "large page %" PRIu64 " is not part of the "
				      "block at page %" PRIu64 " (another head "
				      "or size)",
				   pr->pn, pr->head);
		}
		np = pages_of(pr->bytes);
		if (np > h->top - pr->head)
			return bad(d, "large block at page %" PRIu64 " (%" PRIu64
				      " bytes) runs past the heap top %" PRIu64,
				   pr->head, pr->bytes, h->top);
		for (vm_word j = 1; j < np; j++) {
			const struct page_rec *q = k + j < n ? recs[k + j] : NULL;
			if (q == NULL || q->pn != pr->head + j)
				return bad(d, "large block at page %" PRIu64
					      " (%" PRIu64 " bytes): page %" PRIu64
					      " is missing",
					   pr->head, pr->bytes, pr->head + j);
			if (q->kind != VM_PAGE_LARGE || q->head != pr->head ||
			    q->bytes != pr->bytes)
				return bad(d, "large block at page %" PRIu64
					      " (%" PRIu64 " bytes): page %" PRIu64
					      " belongs to another block",
					   pr->head, pr->bytes, q->pn);
		}
		k += (uint32_t)np;
	}
	return 0;
}

/* ---- Decoding: a thread's local memory ---- */

/* A list of @n entries of @size for the heap of @s, charged. */
static void *heap_list(struct vm_space *s, uint32_t n, size_t size)
{
	int64_t cost = (int64_t)(n * size);
	void *l;

	if (!vm__charge(s->budget, cost))
		return NULL;
	l = malloc(n * size);
	if (l == NULL)
		vm__credit(s->budget, cost);
	else
		s->heap->charged += cost;
	return l;
}

static int decode_heap(struct dec *d, struct vm_space *s)
{
	struct vm_heap *h = s->heap;
	uint32_t n;

	h->top = fl_get_u64(&d->r);
	if (d->r.failed)
		return bad(d, "heap cut off");
	if (h->top == 0 || h->top > VM_MAX_PAGE)
		return bad(d, "heap top %" PRIu64 " out of range", h->top);
	n = fl_get_u32(&d->r);
	if (!fits(d, n, 16))
		return bad(d, "%" PRIu32 " free runs cut off", n);
	if (n > 0) {
		h->free_ranges = heap_list(s, n, sizeof *h->free_ranges);
		if (h->free_ranges == NULL)
			return nomem(d, "free runs", n);
		h->nfree = h->free_cap = n;
		for (uint32_t i = 0; i < n; i++) {
			h->free_ranges[i].first = fl_get_u64(&d->r);
			h->free_ranges[i].n = fl_get_u64(&d->r);
		}
	}
	for (int c = 0; c < VM_NCLASSES; c++) {
		n = fl_get_u32(&d->r);
		if (!fits(d, n, 8))
			return bad(d, "partial list of class %d (%" PRIu32
				      " pages) cut off",
				   c, n);
		if (n == 0)
			continue;
		h->partial[c] = heap_list(s, n, sizeof(vm_word));
		if (h->partial[c] == NULL)
			return nomem(d, "partial list", n);
		h->npartial[c] = h->partial_cap[c] = n;
		for (uint32_t i = 0; i < n; i++)
			h->partial[c][i] = fl_get_u64(&d->r);
	}
	return 0;
}

/* The thread's pages: indices into the batch's pages, by increasing page
 * number; a page's first use anywhere maps it, later ones share it. */
static int decode_pages(struct dec *d, struct vm_space *s,
			struct page_rec **recs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		uint32_t idx = fl_get_u32(&d->r);
		struct page_rec *pr;
		int rc;
		if (idx >= d->npages)
			return bad(d, "page index %" PRIu32 " out of range (%" PRIu32
				      " pages)",
				   idx, d->npages);
		pr = &d->pages[idx];
		if (i > 0 && pr->pn <= recs[i - 1]->pn)
			return bad(d, "page %" PRIu64 " listed after page %" PRIu64,
				   pr->pn, recs[i - 1]->pn);
		if (pr->pn >= s->heap->top)
			return bad(d, "page %" PRIu64 " at or above the heap top "
				      "%" PRIu64,
				   pr->pn, s->heap->top);
		if (idx > d->next_new)
			return bad(d, "page index %" PRIu32 " used before index "
				      "%" PRIu32,
				   idx, d->next_new);
		if (idx == d->next_new) {
			if ((rc = page_make(d, s, pr)) != 0)
				return rc;
			d->next_new++;
		} else if (!page_share(s, pr->pn, pr->pg)) {
			return nomem(d, "page", pr->pn);
		}
		recs[i] = pr;
	}
	return 0;
}

static int decode_space(struct dec *d, struct vm_thread *t)
{
	struct vm_space *s = &t->local;
	struct page_rec **recs = NULL;
	uint32_t n;
	int rc;

	if (vm__space_init(s, 0, d->p->opt.check, false) != 0)
		return nomem(d, "local memory", 0);
	s->budget = &d->p->budget;
	if ((rc = decode_heap(d, s)) != 0)
		return rc;
	n = fl_get_u32(&d->r);
	if (!fits(d, n, 4))
		return bad(d, "%" PRIu32 " pages cut off", n);
	if (n > 0 && (recs = malloc(n * sizeof *recs)) == NULL)
		return nomem(d, "pages", n);
	rc = decode_pages(d, s, recs, n);
	if (rc == 0)
		rc = check_free_runs(d, s->heap, recs, n);
	if (rc == 0)
		rc = check_slabs(d, s->heap, recs, n);
	if (rc == 0)
		rc = check_large_runs(d, s->heap, recs, n);
	free(recs);
	return rc;
}

/* ---- Decoding: registers, frames, the parked state ---- */

/* A code position: a module offset that starts an instruction. */
static bool code_pos(const struct vm_proc *p, uint32_t off, uint32_t *cell)
{
	if (off >= p->m->code_len)
		return false;
	*cell = p->x.cell_at[off];
	return p->x.cell_off[*cell] == off &&
	       (*cell == 0 || p->x.cell_off[*cell - 1] != off);
}

/* Function index at cell @cell, or -1. */
static int func_of(const struct vm_proc *p, uint32_t cell)
{
	return vm_module_func_at(p->m, p->x.cell_off[cell]);
}

/* The stack layout the verifier proved for every pc: each frame's slots
 * plus the operand depth at its resume point reach exactly the next
 * frame's base (where the callee's arguments were), and the top frame's
 * depth at pc gives sp. Without this a forged state could make the
 * interpreter read or write outside the stack. NULL, or what is wrong. */
static const char *frames_fit(const struct vm_proc *p,
			      const struct vm_thread *t)
{
	const struct vm_module *m = p->m;
	int f = func_of(p, t->pc);
	int64_t want;

	if (f < 0 || m->depth == NULL || m->depth[p->x.cell_off[t->pc]] < 0)
		return "pc is not reachable code";
	want = (int64_t)t->bp + p->x.funcs[f].nslots - 1 +
	       m->depth[p->x.cell_off[t->pc]];
	if (want != t->sp)
		return "sp is not what the code has at pc";
	for (uint32_t i = 0; i < t->depth; i++) {
		uint32_t ret = t->frames[i].ret;
		uint32_t callee_bp = i + 1 < t->depth ? t->frames[i + 1].bp
						      : t->bp;
		int caller = func_of(p, ret);
		int32_t dp;
		/* ret must follow a call instruction. */
		if (caller < 0 || ret < 2 ||
		    m->code[p->x.cell_off[ret - 2]] != VM_OP_CALL ||
		    p->x.cell_off[ret - 1] != p->x.cell_off[ret - 2])
			return "a return position does not follow a call";
		/* After the call returns, the result sits at callee_bp. */
		dp = m->depth[p->x.cell_off[ret]];
		if (dp < 1 || (int64_t)t->frames[i].bp +
					  p->x.funcs[caller].nslots - 1 + dp !=
				      (int64_t)callee_bp)
			return "a frame's base does not match its caller's code";
	}
	return NULL;
}

static const char *const park_name[VM_PARK__COUNT] = {
	[VM_PARK_NONE] = "nothing",  [VM_PARK_JOIN] = "join",
	[VM_PARK_WAIT] = "wait",     [VM_PARK_LOCK] = "lock",
	[VM_PARK_INPUT] = "input",   [VM_PARK_OUTPUT] = "output",
	[VM_PARK_GLOBAL] = "global memory",
};

/* Instructions that may wait for a page source (global memory) or for
 * a lent local page's bytes (the same park). */
static bool uses_global(uint8_t op, uint32_t depth)
{
	switch (op) {
	case VM_OP_LD8: case VM_OP_LD16: case VM_OP_LD32: case VM_OP_LD64:
	case VM_OP_LDS8: case VM_OP_LDS16: case VM_OP_LDS32:
	case VM_OP_ST8: case VM_OP_ST16: case VM_OP_ST32: case VM_OP_ST64:
	case VM_OP_GALLOC: case VM_OP_FREE: case VM_OP_COPY: case VM_OP_FILL:
	case VM_OP_ALLOC: /* a lent slab page's bytes */
	case VM_OP_SPAWN: case VM_OP_JOIN: case VM_OP_CAS: case VM_OP_XADD:
	case VM_OP_XCHG: case VM_OP_FENCE: case VM_OP_WAIT: case VM_OP_WAKE:
	case VM_OP_LOCK: case VM_OP_UNLOCK: case VM_OP_WRITE: case VM_OP_READ:
	case VM_OP_ARGV:
		return true;
	case VM_OP_RET: /* its release fence, at the thread's end */
		return depth == 0;
	default:
		return false;
	}
}

/* Does instruction @op park for @kind (and take a reply of it)? */
static bool parks_at(uint8_t op, enum vm_park kind, uint32_t depth)
{
	switch (kind) {
	case VM_PARK_NONE:
	case VM_PARK__COUNT:
		return false;
	case VM_PARK_JOIN:
		return op == VM_OP_JOIN;
	case VM_PARK_WAIT:
		return op == VM_OP_WAIT;
	case VM_PARK_LOCK:
		return op == VM_OP_LOCK;
	case VM_PARK_INPUT:
		return op == VM_OP_READ;
	case VM_PARK_OUTPUT:
		return op == VM_OP_WRITE || op == VM_OP_PRINTI;
	case VM_PARK_GLOBAL:
		return uses_global(op, depth);
	}
	return false;
}

/* The argument a thread parked for @kind must have (the operand its
 * instruction parked on), or false when it can be anything. */
static bool park_arg_of(const struct vm_thread *t, enum vm_park kind,
			vm_word *want)
{
	switch (kind) {
	case VM_PARK_JOIN: /* ( tid -- r ) */
	case VM_PARK_LOCK: /* ( addr -- status ) */
		*want = t->stack[t->sp];
		return true;
	case VM_PARK_WAIT: /* ( addr expected -- ) */
		*want = t->stack[t->sp - 1];
		return true;
	case VM_PARK_INPUT:
	case VM_PARK_OUTPUT:
		*want = 0;
		return true;
	default:
		return false;
	}
}

/* What the thread waits for, or has been answered, must be what the
 * instruction at pc waits for and takes; a write's progress and a held
 * join result only where those instructions keep them. */
static int check_waiting(struct dec *d, struct vm_thread *t, uint8_t park,
			 uint8_t rkind, uint8_t ready, uint8_t held)
{
	const struct vm_proc *p = d->p;
	uint32_t off = p->x.cell_off[t->pc];
	uint8_t op = p->m->code[off];
	const char *name = vm_opinfo[op].mnemonic;
	vm_word want;

	if (park >= VM_PARK__COUNT)
		return bad(d, "park kind %u out of range", park);
	if (rkind >= VM_PARK__COUNT)
		return bad(d, "reply kind %u out of range", rkind);
	if (ready > 1 || held > 1)
		return bad(d, "a flag byte is neither 0 nor 1");
	if (park == VM_PARK_NONE && t->park_arg != 0)
		return bad(d, "not parked, but with a park argument");
	if (park != VM_PARK_NONE) {
		if (!parks_at(op, park, t->depth))
			return bad(d, "parked in %s at %s (code offset %" PRIu32
				      "), which does not wait for it",
				   park_name[park], name, off);
		if (ready)
			return bad(d, "parked, but its reply has come");
		if (park_arg_of(t, park, &want) && t->park_arg != want)
			return bad(d, "parked in %s on 0x%" PRIx64 ", but the "
				      "instruction's operand is 0x%" PRIx64,
				   park_name[park], t->park_arg, want);
	}
	if (!ready && (rkind != 0 || t->reply.status != 0 ||
		       t->reply.value != 0))
		return bad(d, "a reply that has not come has contents");
	if (ready && !parks_at(op, rkind, t->depth))
		return bad(d, "a reply to %s at %s (code offset %" PRIu32
			      "), which does not take it",
			   park_name[rkind], name, off);
	if (held && op != VM_OP_JOIN)
		return bad(d, "holds a join result at %s (code offset %" PRIu32
			      ")",
			   name, off);
	if (!held && t->partial != 0 &&
	    (op != VM_OP_WRITE || t->partial > t->stack[t->sp]))
		return bad(d, "progress %" PRIu64 " at %s (code offset %" PRIu32
			      "), which is not a write of that many bytes",
			   t->partial, name, off);
	t->park = park;
	t->reply.kind = rkind;
	t->reply.ready = ready;
	t->held = held;
	if (park != VM_PARK_NONE)
		atomic_store(&t->pstate, VM_P_PARKED);
	return 0;
}

static int decode_registers(struct dec *d, struct vm_thread *t)
{
	struct vm_proc *p = d->p;
	const struct vm_xfunc *fn;
	uint8_t park, rkind, ready, held;
	uint32_t off, n;
	const char *why;
	size_t need;
	struct vm_fault f;

	off = fl_get_u32(&d->r);
	t->sp = (int32_t)fl_get_u32(&d->r);
	t->bp = fl_get_u32(&d->r);
	park = fl_get_u8(&d->r);
	t->park_arg = fl_get_u64(&d->r);
	rkind = fl_get_u8(&d->r);
	ready = fl_get_u8(&d->r);
	t->reply.status = (int32_t)fl_get_u32(&d->r);
	t->reply.value = fl_get_u64(&d->r);
	held = fl_get_u8(&d->r);
	t->partial = fl_get_u64(&d->r);
	t->depth = fl_get_u32(&d->r);
	if (d->r.failed)
		return bad(d, "registers cut off");
	if (!code_pos(p, off, &t->pc))
		return bad(d, "pc %" PRIu32 " is not the start of an instruction",
			   off);
	if (t->depth > p->opt.max_depth)
		return bad(d, "call depth %" PRIu32 " over the limit of %" PRIu32,
			   t->depth, p->opt.max_depth);
	if (!fits(d, t->depth, 8))
		return bad(d, "%" PRIu32 " frames cut off", t->depth);
	if (!vm__thread_grow_frames(t, &f, t->depth > 4 ? t->depth : 4))
		return nomem(d, "frames", t->depth);
	for (uint32_t i = 0; i < t->depth; i++) {
		uint32_t ret = fl_get_u32(&d->r);
		t->frames[i].bp = fl_get_u32(&d->r);
		if (!code_pos(p, ret, &t->frames[i].ret))
			return bad(d, "frame %" PRIu32 ": return position %" PRIu32
				      " is not the start of an instruction",
				   i, ret);
		if ((i > 0 && t->frames[i].bp < t->frames[i - 1].bp) ||
		    t->frames[i].bp > t->bp)
			return bad(d, "frame %" PRIu32 ": base %" PRIu32
				      " out of order",
				   i, t->frames[i].bp);
	}
	n = fl_get_u32(&d->r);
	if (d->r.failed)
		return bad(d, "stack cut off");
	if (t->sp < -1 || n != (uint32_t)(t->sp + 1))
		return bad(d, "%" PRIu32 " stack words for sp %" PRId32, n, t->sp);
	if (!fits(d, n, 8))
		return bad(d, "%" PRIu32 " stack words cut off", n);
	if ((why = frames_fit(p, t)) != NULL)
		return bad(d, "stack does not match the code at code offset "
			      "%" PRIu32 ": %s",
			   off, why);
	/* Room for everything the current function may still push. */
	fn = &p->x.funcs[func_of(p, t->pc)];
	need = (size_t)t->bp + fn->frame_words + 1;
	if (need > p->opt.stack_words)
		return bad(d, "needs %zu stack words, over the limit of %" PRIu32,
			   need, p->opt.stack_words);
	if (!vm__thread_grow_stack(t, &f, need))
		return nomem(d, "stack words", need);
	for (uint32_t i = 0; i < n; i++)
		t->stack[i] = fl_get_u64(&d->r);
	return check_waiting(d, t, park, rkind, ready, held);
}

/* One thread record into a new thread (*@out, freed by the caller also
 * on failure). */
static int decode_thread(struct dec *d, uint32_t i, struct vm_thread **out)
{
	struct vm_fault f;
	struct vm_thread *t = vm__thread_alloc(d->p, &f); /* charged */
	uint8_t state;
	int rc;

	*out = t;
	snprintf(d->where, sizeof d->where, "thread record %" PRIu32 ": ", i);
	if (t == NULL)
		return nomem(d, "thread", i);
	t->tid = fl_get_u64(&d->r);
	state = fl_get_u8(&d->r);
	if (d->r.failed)
		return bad(d, "cut off");
	if (t->tid == 0)
		return bad(d, "thread id 0");
	snprintf(d->where, sizeof d->where, "thread %" PRIu64 ": ", t->tid);
	if (state == STATE_DONE) {
		/* Finished: only its result is left (vm_interp.c's finish). */
		t->result = fl_get_u64(&d->r);
		if (d->r.failed)
			return bad(d, "result cut off");
		atomic_store(&t->state, VM_T_DONE);
		return 0;
	}
	if (state != STATE_RUNNABLE)
		return bad(d, "state %u is neither runnable (0) nor finished (1)",
			   state);
	if ((rc = decode_registers(d, t)) != 0)
		return rc;
	return decode_space(d, t);
}

static int cmp_tid(const void *a, const void *b)
{
	vm_word x = *(const vm_word *)a, y = *(const vm_word *)b;

	return x < y ? -1 : x > y;
}

static int check_tids(struct dec *d, struct vm_thread *const *ts, uint32_t n)
{
	vm_word *tid = malloc(n * sizeof *tid);
	int rc = 0;

	if (tid == NULL)
		return nomem(d, "thread ids", n);
	for (uint32_t i = 0; i < n; i++)
		tid[i] = ts[i]->tid;
	qsort(tid, n, sizeof *tid, cmp_tid);
	for (uint32_t i = 1; i < n && rc == 0; i++)
		if (tid[i] == tid[i - 1])
			rc = bad(d, "thread %" PRIu64 " appears twice", tid[i]);
	free(tid);
	return rc;
}

static int decode(struct dec *d, struct vm_thread ***out, size_t *nout)
{
	struct vm_proc *p = d->p;
	struct vm_thread **ts = NULL;
	const uint8_t *magic, *hash;
	uint32_t nthreads = 0, i;
	uint16_t version;
	vm_word pid;
	int rc;

	magic = fl_get_bytes(&d->r, 4);
	if (magic == NULL)
		return bad(d, "header cut off");
	if (memcmp(magic, TSTATE_MAGIC, 4) != 0)
		return bad(d, "not a thread state (bad magic)");
	version = fl_get_u16(&d->r);
	pid = fl_get_u64(&d->r);
	hash = fl_get_bytes(&d->r, sizeof p->module_hash);
	nthreads = fl_get_u32(&d->r);
	d->npages = fl_get_u32(&d->r);
	if (d->r.failed)
		return bad(d, "header cut off");
	if (version != TSTATE_VERSION)
		return bad(d, "format version %u, not %u", version,
			   TSTATE_VERSION);
	if (memcmp(hash, p->module_hash, sizeof p->module_hash) != 0)
		return bad(d, "made for another module");
	if (pid != p->pid)
		return bad(d, "made for process %" PRIu64 ", not %" PRIu64, pid,
			   p->pid);
	if (nthreads == 0)
		return bad(d, "no threads");
	if (!fits(d, d->npages, PAGE_MIN_BYTES))
		return bad(d, "%" PRIu32 " pages cut off", d->npages);
	if (d->npages > 0) {
		d->pages = calloc(d->npages, sizeof *d->pages);
		if (d->pages == NULL)
			return nomem(d, "page records", d->npages);
	}
	for (i = 0; i < d->npages; i++)
		if ((rc = decode_page_rec(d, i, &d->pages[i])) != 0)
			return rc;
	if (!fits(d, nthreads, THREAD_MIN_BYTES))
		return bad(d, "%" PRIu32 " threads cut off", nthreads);
	ts = calloc(nthreads, sizeof *ts);
	if (ts == NULL)
		return nomem(d, "threads", nthreads);
	for (i = 0; i < nthreads; i++)
		if ((rc = decode_thread(d, i, &ts[i])) != 0)
			goto fail;
	d->where[0] = '\0';
	rc = FL_EFORMAT;
	if (d->next_new != d->npages) {
		bad(d, "page %" PRIu64 " (record %" PRIu32 ") is used by no "
		       "thread",
		    d->pages[d->next_new].pn, d->next_new);
		goto fail;
	}
	if ((rc = check_tids(d, ts, nthreads)) != 0)
		goto fail;
	if (fl_reader_left(&d->r) != 0) {
		rc = bad(d, "%zu bytes after the last thread",
			 fl_reader_left(&d->r));
		goto fail;
	}
	*out = ts;
	*nout = nthreads;
	return 0;
fail:
	for (i = 0; i < nthreads; i++)
		vm__thread_free(ts[i]);
	free(ts);
	return rc;
}

int vm__threads_decode(struct vm_proc *p, const uint8_t *bytes, size_t len,
		       struct vm_thread ***out, size_t *n, struct fl_err *err)
{
	return vm__threads_decode_lent(p, bytes, len, NULL, out, n, err);
}

int vm__threads_decode_lent(struct vm_proc *p, const uint8_t *bytes,
			    size_t len, const struct vm_lending *l,
			    struct vm_thread ***out, size_t *n,
			    struct fl_err *err)
{
	struct dec d = {.err = err, .p = p, .lending = l};
	int rc;

	*out = NULL;
	*n = 0;
	fl_reader_init(&d.r, bytes, len);
	rc = decode(&d, out, n);
	free(d.pages);
	return rc;
}

int vm__thread_decode(struct vm_proc *p, const uint8_t *bytes, size_t len,
		      struct vm_thread **out, struct fl_err *err)
{
	struct vm_thread **ts;
	size_t n;
	int rc = vm__threads_decode(p, bytes, len, &ts, &n, err);

	*out = NULL;
	if (rc != 0)
		return rc;
	if (n != 1) {
		for (size_t i = 0; i < n; i++)
			vm__thread_free(ts[i]);
		free(ts);
		return fl_err_set(err, FL_EFORMAT,
				  "thread state: %zu threads, not one", n);
	}
	*out = ts[0];
	free(ts);
	return 0;
}

/* ---- --debug-migrate ---- */

struct vm_thread *vm__thread_roundtrip(struct vm_worker *w,
				       struct vm_thread *t)
{
	struct vm_proc *p = t->proc;
	struct vm_thread *c = NULL;
	struct fl_buf b, again;
	struct fl_err err;
	int rc;

	fl_buf_init(&b);
	fl_buf_init(&again);
	rc = vm__thread_encode(t, &b);
	if (rc != 0)
		fl_err_set(&err, rc, "encode: %s", fl_strerror(rc));
	else
		rc = vm__thread_decode(p, b.data, b.len, &c, &err);
	/* What the copy holds must be all the bytes said: encoded again,
	 * it gives the same bytes, or the decoder lost something. */
	if (rc == 0 && (rc = vm__thread_encode(c, &again)) != 0) {
		fl_err_set(&err, rc, "encode of the copy: %s", fl_strerror(rc));
	} else if (rc == 0 && (again.len != b.len ||
			       memcmp(again.data, b.data, b.len) != 0)) {
		size_t at = 0;
		while (at < b.len && at < again.len && b.data[at] == again.data[at])
			at++;
		rc = fl_err_set(&err, FL_EFORMAT,
				"thread state: the copy encodes differently "
				"(from byte %zu of %zu)",
				at, b.len);
	}
	fl_buf_close(&b);
	fl_buf_close(&again);
	if (rc != 0) {
		/* A test aid that quietly kept the old thread would make
		 * every test that relies on it unable to fail. */
		vm__thread_free(c);
		vm__fault(w, "debug-migrate: round trip failed: %.160s", err.msg);
		vm__proc_fail(p, t, t->pc, w->fault.msg);
		return NULL;
	}
	/* Relations kept by the process, not by the thread itself; and its
	 * fault counts (vm_locality.c), which a real move resets but this
	 * copy, staying here, keeps. */
	c->fault_home = t->fault_home;
	c->fault_votes = t->fault_votes;
	c->faults = t->faults;
	pthread_mutex_lock(&p->tlock);
	c->joined = t->joined;
	c->joiner = t->joiner;
	vm__thread_relist(p, t, c);
	pthread_mutex_unlock(&p->tlock);
	vm__thread_free(t);
	return c;
}
