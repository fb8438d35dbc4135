/* The DSM page source: vm_gsrc's ops on one struct dsm_node, for the
 * workers of one part of a process (dsm_gsrc.h says what maps onto the
 * core), and the home side the core asks about this node's slot: its
 * mapping (io.map) and its allocator (io.free), over a struct vm_space
 * that holds only metadata -- the bytes are the core's master copies.
 *
 * Reads in place: a read translation is the node's copy (dsm_map), which
 * the TLB may cache until the thread's next fence; the core keeps a
 * copy's buffer across invalidations, so the address stays host memory,
 * and at the thread's fences this source drops the worker's TLB, so the
 * thread then maps again and sees what the acquire let in.
 *
 * Writes through a private copy per thread. The core is one node for
 * all the workers, and a release is node-wide: one thread's release
 * diffs and cleans every dirty page of the node; a copy stale to one
 * thread after its acquire is fetched again in place for it. A page
 * another thread holds writable in its TLB would be written behind
 * those backs -- after a release its new bytes have no twin and are
 * never sent, after a refetch they are overwritten. Each thread's
 * struct dsm_wait carries its own acquires (a new one starts as of the
 * node's latest: dsm_wait_current). So a write translation gives the
 * thread its own copy of the page and a twin of it (taken from the
 * node's copy, fetched first if need be), valid until the thread's next
 * fence; its reads of that page go to the copy too (program order). At
 * each of its fences the bytes where copy and twin differ go into the
 * node with dsm_write_diff (which twins the node's copy for the node's
 * release), the copies are freed and the worker's TLB dropped, then the
 * core's release or acquire runs.
 * This is SPEC 3.1 with the thread, not the node, as the unit between
 * threads of one node as well. Under --check every access maps through
 * the core (nothing is cached), which checks it against the page's live
 * blocks.
 *
 * Locality: a translation of a page with neither a private copy nor a
 * node copy, homed elsewhere (dsm_missing), is a remote fault of the
 * thread, told to the VM (vm_gsrc_remote_fault) before the fetch. When
 * the VM answers with a machine, the thread's writes are released (a
 * release fence, which may park: the instruction then runs again and
 * decides again) and, if the VM still claims room there, the source
 * returns VM_MOVE: the thread holds no private copy, so it is movable.
 *
 * Parking: every call into the core passes the thread's struct dsm_wait;
 * DSM_WAIT parks the thread (vm_gsrc_park) under the source's mutex, so
 * the wake -- which comes inside a later delivery, or inside another
 * thread's unlock or wake at this home, under the same mutex -- cannot
 * precede the park. io.wake only links the thread on a list; whoever
 * holds the mutex resumes them once it let go of it, reading each link
 * before it resumes that thread (the last resume may let the process
 * end). The instruction runs again and makes the same op, which takes
 * the reply and goes on where the core's phase (in the thread's struct
 * dsm_wait) says; galloc keeps its own progress in the thread's record.
 * No step applies twice.
 *
 * Busy count (dsm_gsrc.h, "Deadlocks"): io.queued lowers it for a parked
 * thread at once, for one still inside its call (a home-local queue)
 * when it parks; io.wake raises it again for a thread it was lowered
 * for, under the mutex, before the thread is resumed.
 *
 * Failure modes: the home's refusals as the local source's faults, word
 * for word; out of memory; an address the core refuses (DSM_BAD: a page
 * no node homes, as for another slot on one machine, is unmapped).
 *
 * Threads: any worker of the process, concurrently; @lock serializes the
 * node, the thread table, and deliveries (the driver's thread);
 * @alloc_lock the allocator (galloc without @lock; free and io.map under
 * it, from inside the core). */
#include "dsm/dsm_gsrc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRIV_COST (2 * DSM_PAGE_SIZE) /* a private copy and its twin */

/* A page a thread writes until its next fence: its copy and the twin
 * (the node's bytes when it was taken). */
struct priv {
	uint64_t page;
	uint8_t *data, *twin;
};

/* What the source keeps of one VM thread, by tid (a --debug-migrate copy
 * takes over its original's). Touched under @lock, by the worker running
 * the thread and (@parked, @lowered, @wnext) by whoever wakes it. */
struct dthread {
	struct dthread *hnext;
	vm_word tid;
	struct vm_thread *t; /* as parked: what vm_gsrc_resume takes */
	struct dsm_wait wait;
	struct dthread *wnext; /* woken, to resume once @lock is let go */
	bool parked;	       /* by vm_gsrc_park, not woken yet */
	bool lower;	       /* queued while still in its call */
	bool lowered;	       /* the busy count does not count it */
	int phase;	       /* galloc's: 0, or zero-filling */
	vm_word saved;	       /* galloc: the block */
	vm_word zero_at, zero_end; /* galloc: what is left to zero */
	struct priv *priv;
	size_t npriv, cappriv;
};

struct dsm_gsrc {
	struct vm_gsrc base;
	struct vm_proc *p;
	bool check;
	uint32_t slot;
	struct vm_space space;	  /* @slot's allocator and mapping */
	pthread_mutex_t alloc_lock; /* @space's changes */
	pthread_mutex_t lock;	  /* everything below */
	struct dsm_node *node;
	struct dsm_gsrc_config cfg;
	struct dthread **tab;	  /* threads by tid, chained */
	size_t tab_cap, tab_len;
	struct dthread *woken;	  /* io.wake's, to resume */
	_Atomic uint32_t nwaiting; /* parked, counted busy: on a reply */
	bool closed;
	struct dsm_stats final;	  /* the node's counters when it closed */
	uint32_t ids[DSM_MAX_NODES]; /* cfg.ids' copy */
	_Atomic int refs;
};

static struct dsm_gsrc *gsrc_of(struct vm_gsrc *g)
{
	return (struct dsm_gsrc *)g;
}

static const uint8_t zeros[DSM_PAGE_SIZE];

/* ---- Threads ---- */

static size_t tid_bucket(vm_word tid, size_t cap)
{
	return (size_t)((tid * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

static bool tab_grow(struct dsm_gsrc *G)
{
	size_t cap = G->tab_cap ? G->tab_cap * 2 : 64;
	struct dthread **tab = calloc(cap, sizeof *tab);

	if (tab == NULL)
		return false;
	for (size_t i = 0; i < G->tab_cap; i++) {
		struct dthread *dt = G->tab[i], *next;
		for (; dt != NULL; dt = next) {
			size_t b = tid_bucket(dt->tid, cap);
			next = dt->hnext;
			dt->hnext = tab[b];
			tab[b] = dt;
		}
	}
	free(G->tab);
	G->tab = tab;
	G->tab_cap = cap;
	return true;
}

/* @t's record, made on first use; NULL when out of memory. Under lock. */
static struct dthread *thread_of(struct dsm_gsrc *G, struct vm_thread *t)
{
	struct dthread *dt;
	size_t b;

	if (G->tab_cap > 0)
		for (dt = G->tab[tid_bucket(t->tid, G->tab_cap)]; dt != NULL;
		     dt = dt->hnext)
			if (dt->tid == t->tid)
				return dt;
	if (G->tab_len >= G->tab_cap && !tab_grow(G))
		return NULL;
	if ((dt = calloc(1, sizeof *dt)) == NULL)
		return NULL;
	dt->tid = t->tid;
	dsm_wait_init(&dt->wait, dt);
	/* New here (spawned, or arrived from another part): it sees at
	 * least what this node's last acquire let in. */
	dsm_wait_current(G->node, &dt->wait);
	b = tid_bucket(t->tid, G->tab_cap);
	dt->hnext = G->tab[b];
	G->tab[b] = dt;
	G->tab_len++;
	return dt;
}

/* Let go of @lock, then resume the threads io.wake linked meanwhile. */
static void unlock(struct dsm_gsrc *G)
{
	struct dthread *dt = G->woken, *next;

	G->woken = NULL;
	pthread_mutex_unlock(&G->lock);
	/* Each parked thread holds its process up: read before resuming. */
	for (; dt != NULL; dt = next) {
		struct vm_thread *t = dt->t;
		next = dt->wnext;
		vm_gsrc_resume(t, 0, 0);
	}
}

/* The running thread's record, with the source locked and the reply of
 * a park taken (a wake carries nothing: the op runs again); NULL, with
 * a fault raised and the source unlocked, when out of memory. */
static struct dthread *enter(struct dsm_gsrc *G, struct vm_worker *w)
{
	struct dthread *dt;
	int32_t st;
	vm_word v;

	(void)vm_gsrc_reply(w, &st, &v);
	pthread_mutex_lock(&G->lock);
	dt = thread_of(G, vm_gsrc_thread(w));
	if (dt == NULL) {
		unlock(G);
		vm_gsrc_fault(w, "out of memory");
	}
	return dt;
}

/* The busy count stops counting @dt: queued at a home, it waits for
 * another thread. Under lock. */
static void lower(struct dsm_gsrc *G, struct dthread *dt)
{
	dt->lowered = true;
	if (dt->parked)
		atomic_fetch_sub(&G->nwaiting, 1);
	vm__proc_busy_dec(G->p);
}

/* ---- Results ---- */

/* Whether @addr is the null page (the first page of slot 0), and whether
 * any node homes its page. */
static bool is_null(vm_word addr)
{
	return vm_gslot(addr) == VM_ORIGIN_SLOT &&
	       (addr & VM_OFFSET_MASK) >> VM_PAGE_SHIFT == 0;
}

static bool homed(const struct dsm_gsrc *G, vm_word addr)
{
	int h = G->cfg.home(G->cfg.home_ctx, dsm_gsrc_page(addr));

	return h >= 0 && h < G->cfg.nodes;
}

/* The local source's fault for what the core said of @what at @addr. */
static enum vm_res fault(const struct dsm_gsrc *G, struct vm_worker *w,
			 enum dsm_res r, const char *what,
			 vm_word addr)
{
	switch (r) {
	case DSM_UNMAPPED:
		vm_gsrc_fault(w, "%s at unmapped address 0x%" PRIx64, what, addr);
		break;
	case DSM_RDONLY:
		vm_gsrc_fault(w, "%s at read-only address 0x%" PRIx64, what, addr);
		break;
	case DSM_OUTSIDE:
		vm_gsrc_fault(w, "%s at 0x%" PRIx64 " outside any live block", what,
			      addr);
		break;
	case DSM_NOTLOCKED:
		vm_gsrc_fault(w, "unlock of 0x%" PRIx64 ", which is not locked",
			      addr);
		break;
	case DSM_NOTBLOCK:
		vm_gsrc_fault(w, "free of 0x%" PRIx64 ", which is not a live block",
			      addr);
		break;
	case DSM_NOMEM:
		vm_gsrc_fault(w, strcmp(what, "free") == 0 ? "out of memory (free)"
							   : "out of memory");
		break;
	case DSM_LOST: {
		int h = G->cfg.home(G->cfg.home_ctx, dsm_gsrc_page(addr));
		if (G->cfg.ids != NULL && h >= 0 && h < G->cfg.nodes)
			vm_gsrc_fault(w, "%s at 0x%" PRIx64 ": global memory on "
				      "machine m%" PRIu32 ", which was lost",
				      what, addr, G->cfg.ids[h]);
		else
			vm_gsrc_fault(w, "%s at 0x%" PRIx64 ": global memory on "
				      "a machine that was lost", what, addr);
		break;
	}
	default:
		vm_gsrc_fault(w, "%s at 0x%" PRIx64 ": the DSM refused the "
			      "address", what, addr);
		break;
	}
	return VM_FAULT;
}

/* The checks a translation makes before the core sees it: null, and a
 * page no node homes (unmapped, as another slot on one machine). */
static enum vm_res precheck(const struct dsm_gsrc *G, struct vm_worker *w,
			    vm_word addr, const char *what)
{
	if (is_null(addr)) {
		vm_gsrc_fault(w, "%s at null address 0x%" PRIx64, what, addr);
		return VM_FAULT;
	}
	if (!homed(G, addr))
		return fault(G, w, DSM_UNMAPPED, what, addr);
	return VM_OK;
}

/* End an op under lock with core result @r (not OK): park on DSM_WAIT,
 * else a fault. The source is unlocked after. */
static enum vm_res leave(struct dsm_gsrc *G, struct vm_worker *w,
			 struct dthread *dt, enum dsm_res r, const char *what,
			 vm_word addr)
{
	if (r == DSM_WAIT) {
		dt->t = vm_gsrc_park(w, addr);
		dt->parked = true;
		atomic_fetch_add(&G->nwaiting, 1);
		if (dt->lower) { /* queued at this home inside its call */
			dt->lower = false;
			lower(G, dt);
		}
		unlock(G);
		return VM_PARK;
	}
	dt->phase = 0;
	unlock(G);
	return fault(G, w, r, what, addr);
}

/* ---- Private copies ---- */

static struct priv *priv_find(struct dthread *dt, uint64_t page)
{
	for (size_t i = 0; i < dt->npriv; i++)
		if (dt->priv[i].page == page)
			return &dt->priv[i];
	return NULL;
}

/* A private copy of @page, from the node's bytes @src, charged to the
 * process (copy and twin); NULL: no memory. */
static struct priv *priv_add(struct dsm_gsrc *G, struct dthread *dt,
			     uint64_t page, const uint8_t *src)
{
	struct priv *pv;

	if (dt->npriv == dt->cappriv) {
		size_t cap = dt->cappriv ? dt->cappriv * 2 : 8;
		struct priv *a = realloc(dt->priv, cap * sizeof *a);
		if (a == NULL)
			return NULL;
		dt->priv = a;
		dt->cappriv = cap;
	}
	pv = &dt->priv[dt->npriv];
	pv->page = page;
	if (!vm__charge(&G->p->budget, PRIV_COST))
		return NULL;
	pv->data = malloc(DSM_PAGE_SIZE);
	pv->twin = malloc(DSM_PAGE_SIZE);
	if (pv->data == NULL || pv->twin == NULL) {
		free(pv->data);
		free(pv->twin);
		vm__credit(&G->p->budget, PRIV_COST);
		return NULL;
	}
	memcpy(pv->data, src, DSM_PAGE_SIZE);
	memcpy(pv->twin, src, DSM_PAGE_SIZE);
	dt->npriv++;
	return pv;
}

static void priv_free(struct dsm_gsrc *G, struct priv *pv)
{
	free(pv->data);
	free(pv->twin);
	vm__credit(&G->p->budget, PRIV_COST);
}

/* Write what @dt changed in its private copies into the node, page by
 * page, and free them (the worker's TLB, which may point into them, is
 * dropped). DSM_OK once none is left; DSM_WAIT when a page's copy is
 * missing in the node (nothing of that page written yet: the next call
 * starts it again). A page unmapped since (freed by another thread: a
 * racy write) keeps none of the writes, as a freed page's bytes on one
 * machine are nobody's. Under lock. */
static enum dsm_res flush(struct dsm_gsrc *G, struct vm_worker *w,
			  struct dthread *dt)
{
	bool freed = false;
	enum dsm_res r = DSM_OK;

	while (dt->npriv > 0) {
		struct priv *pv = &dt->priv[dt->npriv - 1];
		r = dsm_write_diff(G->node, &dt->wait, pv->page, pv->data,
				   pv->twin);
		if (r == DSM_UNMAPPED || r == DSM_RDONLY)
			r = DSM_OK; /* dropped, see above */
		if (r != DSM_OK)
			break;
		priv_free(G, pv);
		dt->npriv--;
		freed = true;
	}
	if (freed)
		vm_gsrc_tlb_flush(w);
	return r;
}

/* ---- The ops ---- */

static enum vm_res d_fence(struct vm_gsrc *g, struct vm_worker *w,
			   enum vm_fence kind);

/* A miss that needs the network is a remote fault of the thread
 * (vm_gsrc_remote_fault): counted, and when the VM says so the thread
 * moves to the page's home instead of fetching it. */
static enum vm_res d_page(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, bool write, const char *what,
			  uint8_t **data, bool *cache)
{
	struct dsm_gsrc *G = gsrc_of(g);
	uint64_t page = dsm_gsrc_page(addr);
	uint32_t off = (uint32_t)(addr & (VM_PAGE_SIZE - 1));
	struct dthread *dt;
	struct priv *pv;
	const uint8_t *src = NULL;
	enum dsm_res r;
	enum vm_res rc;
	int to;

	if (precheck(G, w, addr, what) != VM_OK)
		return VM_FAULT;
	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	pv = priv_find(dt, page);
	if (pv == NULL && dsm_missing(G->node, &dt->wait, page) &&
	    (to = vm_gsrc_remote_fault(w, addr)) >= 0) {
		/* The thread goes to the page instead (its writes home
		 * first: then it holds nothing here, d_movable). */
		unlock(G);
		if ((rc = d_fence(g, w, VM_FENCE_RELEASE)) != VM_OK)
			return rc;
		if (vm_gsrc_move(w, to))
			return VM_MOVE;
		if ((dt = enter(G, w)) == NULL)
			return VM_FAULT;
	}
	if (pv == NULL || G->check) { /* the mapping's checks */
		r = dsm_map(G->node, &dt->wait, page, write, off, (uint32_t)n,
			    &src);
		if (r != DSM_OK)
			return leave(G, w, dt, r, what, addr);
	}
	if (pv == NULL && !write) {
		/* the TLB's read entries are never written through */
		*data = (uint8_t *)(uintptr_t)src + off;
	} else {
		if (pv == NULL && (pv = priv_add(G, dt, page, src)) == NULL)
			return leave(G, w, dt, DSM_NOMEM, what, addr);
		*data = pv->data + off;
	}
	unlock(G);
	*cache = !G->check;
	return VM_OK;
}

static enum vm_res d_fence(struct vm_gsrc *g, struct vm_worker *w,
			   enum vm_fence kind)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt = enter(G, w);
	enum dsm_res r;

	if (dt == NULL)
		return VM_FAULT;
	r = flush(G, w, dt);
	if (r == DSM_OK)
		r = (kind & VM_FENCE_ACQUIRE) ? dsm_acquire(G->node, &dt->wait)
					      : dsm_release(G->node, &dt->wait);
	if (r != DSM_OK)
		return leave(G, w, dt, r, "fence", 0);
	unlock(G);
	vm_gsrc_tlb_flush(w);
	return VM_OK;
}

static enum vm_res d_atomic(struct vm_gsrc *g, struct vm_worker *w,
			    enum vm_gop op, vm_word addr, vm_word a, vm_word b,
			    const char *what, vm_word *old)
{
	static const enum dsm_op ops[] = {
		[VM_GOP_CAS] = DSM_CAS,
		[VM_GOP_XADD] = DSM_XADD,
		[VM_GOP_XCHG] = DSM_XCHG,
	};
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt;
	enum dsm_res r;
	uint64_t o = 0;

	if (precheck(G, w, addr, what) != VM_OK)
		return VM_FAULT;
	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	r = flush(G, w, dt); /* none left once the core's atomic began */
	if (r == DSM_OK)
		r = dsm_atomic(G->node, &dt->wait, dsm_gsrc_page(addr),
			       (uint32_t)(addr & (VM_PAGE_SIZE - 1)), ops[op], a,
			       b, &o);
	if (r != DSM_OK)
		return leave(G, w, dt, r, what, addr);
	unlock(G);
	vm_gsrc_tlb_flush(w);
	*old = o;
	return VM_OK;
}

/* wait, wake, lock, unlock: the thread's copies into the node, then the
 * core's sync op (release, the op at the word's home, acquire). */
static enum vm_res sync_op(struct dsm_gsrc *G, struct vm_worker *w,
			   vm_word addr, enum dsm_sync_op op, vm_word arg,
			   const char *what, vm_word *out)
{
	struct dthread *dt;
	enum dsm_res r;
	uint64_t o = 0;

	if (op == DSM_WAKE && !homed(G, addr)) {
		/* No home, no waiter; a wake is a fence all the same (the
		 * local source does not look at the word either). */
		*out = 0;
		return d_fence(&G->base, w, VM_FENCE_FULL);
	}
	if (op != DSM_WAKE && precheck(G, w, addr, what) != VM_OK)
		return VM_FAULT;
	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	r = flush(G, w, dt); /* none left once the core's op began */
	if (r == DSM_OK)
		r = dsm_sync(G->node, &dt->wait, dsm_gsrc_page(addr),
			     (uint32_t)(addr & (VM_PAGE_SIZE - 1)), op, arg, &o);
	if (r != DSM_OK)
		return leave(G, w, dt, r, what, addr);
	unlock(G);
	vm_gsrc_tlb_flush(w);
	*out = o;
	return VM_OK;
}

static enum vm_res d_wait(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word expected)
{
	vm_word o;

	return sync_op(gsrc_of(g), w, addr, DSM_WAITEQ, expected, "wait", &o);
}

static enum vm_res d_wake(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, vm_word *woken)
{
	return sync_op(gsrc_of(g), w, addr, DSM_WAKE, n, "wake", woken);
}

static enum vm_res d_lock(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word *status)
{
	/* The locker's id: a robust home keeps it (dsm_config) */
	return sync_op(gsrc_of(g), w, addr, DSM_LOCK, w->cur->tid, "lock",
		       status);
}

static enum vm_res d_unlock(struct vm_gsrc *g, struct vm_worker *w,
			    vm_word addr)
{
	vm_word o;

	return sync_op(gsrc_of(g), w, addr, DSM_UNLOCK, 0, "unlock", &o);
}

/* galloc: this node's slot's allocator; then zeros, through the node
 * (the pages are homed here: into the masters), over the pages of the
 * block it had handed out before (the others are zero at their home:
 * never mapped, never written). The thread's own copies are written
 * back first, so none holds the block's old bytes. */
static enum vm_res d_alloc(struct vm_gsrc *g, struct vm_worker *w, vm_word n,
			   vm_word *addr)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt;
	enum dsm_res r;

	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	if (dt->phase == 0) {
		vm_word a, top, used;
		if ((r = flush(G, w, dt)) != DSM_OK)
			return leave(G, w, dt, r, "galloc", 0);
		unlock(G);
		pthread_mutex_lock(&G->alloc_lock);
		top = G->space.heap->top;
		a = vm__heap_alloc(&G->space, n);
		pthread_mutex_unlock(&G->alloc_lock);
		if (a == 0) {
			char what[64];
			snprintf(what, sizeof what, "galloc of %" PRIu64 " bytes", n);
			vm__oom_msg(&w->fault, G->p, what, vm__alloc_cost(n));
			return VM_FAULT;
		}
		used = vm_gslot_base(G->slot) + top * VM_PAGE_SIZE;
		pthread_mutex_lock(&G->lock);
		dt->saved = a;
		dt->zero_at = a;
		dt->zero_end = (a + n + 7) & ~(vm_word)7;
		if (dt->zero_end > used)
			dt->zero_end = used > a ? used : a;
		dt->phase = 1;
	}
	while (dt->zero_at < dt->zero_end) {
		vm_word at = dt->zero_at;
		vm_word k = VM_PAGE_SIZE - (at & (VM_PAGE_SIZE - 1));
		if (k > dt->zero_end - at)
			k = dt->zero_end - at;
		r = dsm_write(G->node, &dt->wait, dsm_gsrc_page(at),
			      (uint32_t)(at & (VM_PAGE_SIZE - 1)), (uint32_t)k,
			      zeros);
		if (r != DSM_OK)
			return leave(G, w, dt, r, "galloc", at);
		dt->zero_at = at + k;
	}
	dt->phase = 0;
	*addr = dt->saved;
	unlock(G);
	return VM_OK;
}

/* free: the thread's copies written back first (none may write into the
 * block once another thread has it again), then the core's free at the
 * block's home. */
static enum vm_res d_free(struct vm_gsrc *g, struct vm_worker *w, vm_word addr)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt;
	enum dsm_res r;

	if (!homed(G, addr))
		return fault(G, w, DSM_NOTBLOCK, "free", addr);
	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	r = flush(G, w, dt);
	if (r == DSM_OK)
		r = dsm_free(G->node, &dt->wait, dsm_gsrc_page(addr),
			     (uint32_t)(addr & (VM_PAGE_SIZE - 1)));
	if (r != DSM_OK)
		return leave(G, w, dt, r, "free", addr);
	unlock(G);
	vm_gsrc_tlb_flush(w); /* the pages it unmapped, among others */
	return VM_OK;
}

static void threads_free(struct dsm_gsrc *G)
{
	for (size_t i = 0; i < G->tab_cap; i++) {
		struct dthread *dt = G->tab[i], *next;
		for (; dt != NULL; dt = next) {
			next = dt->hnext;
			for (size_t k = 0; k < dt->npriv; k++)
				priv_free(G, &dt->priv[k]);
			free(dt->priv);
			free(dt);
		}
	}
	free(G->tab);
	G->tab = NULL;
	G->tab_cap = G->tab_len = 0;
}

/* ---- The home side: this node's slot ---- */

/* The page number in @G's slot of DSM page @page, or 0 (never mapped)
 * for a page of another slot. */
static vm_word slot_pageno(const struct dsm_gsrc *G, uint64_t page)
{
	if (dsm_gsrc_page_slot(page) != G->slot)
		return 0;
	return page & (((uint64_t)1 << (VM_SLOT_SHIFT - VM_PAGE_SHIFT)) - 1);
}

/* The live blocks on page @pageno (@pg), as vm__heap_live sees them:
 * every field read once, each valid alone (the allocator may run). */
static uint32_t live_blocks(const struct vm_page *pg, vm_word pageno,
			    struct dsm_extent *live)
{
	uint32_t k = 0;

	if (VM_GET(pg->kind) == VM_PAGE_SLAB) {
		uint32_t size = vm__class_size[VM_GET(pg->cls) % VM_NCLASSES];
		const uint32_t *sizes = __atomic_load_n(&pg->sizes, __ATOMIC_ACQUIRE);
		for (uint32_t i = 0; i < VM_PAGE_SIZE / size && k < DSM_LIVE_MAX;
		     i++) {
			uint32_t len;
			if (!(VM_GET(pg->live[i / 64]) >> (i % 64) & 1))
				continue;
			len = sizes ? VM_GET(sizes[i]) : size;
			if (len == 0 || len > size)
				continue; /* being made or unmade: not live yet */
			live[k++] = (struct dsm_extent){(uint16_t)(i * size),
							(uint16_t)len};
		}
	} else {
		vm_word start = VM_GET(pg->head) << VM_PAGE_SHIFT;
		vm_word end = start + VM_GET(pg->bytes);
		vm_word lo = pageno << VM_PAGE_SHIFT, hi = lo + VM_PAGE_SIZE;
		if (start > lo)
			lo = start;
		if (end < hi)
			hi = end;
		if (hi > lo)
			live[k++] = (struct dsm_extent){
				(uint16_t)(lo & (VM_PAGE_SIZE - 1)),
				(uint16_t)(hi - lo)};
	}
	return k;
}

/* io.map, inside the core (under lock). */
static enum dsm_access on_map(void *ctx, uint64_t page, struct dsm_extent *live,
			      uint32_t *nlive)
{
	struct dsm_gsrc *G = ctx;
	vm_word pageno = slot_pageno(G, page);
	const struct vm_page *pg;

	*nlive = 0;
	if (pageno == 0 || (pg = vm__page_get(&G->space, pageno)) == NULL)
		return DSM_MAP_NONE;
	if (G->check)
		*nlive = live_blocks(pg, pageno, live);
	return VM_GET(pg->kind) == VM_PAGE_RODATA ? DSM_MAP_RO : DSM_MAP_RW;
}

/* io.free, inside the core (under lock). */
static enum dsm_res on_free(void *ctx, uint64_t page, uint32_t off,
			    uint64_t *first, uint64_t *npages)
{
	struct dsm_gsrc *G = ctx;
	vm_word addr = vm_gslot_base(dsm_gsrc_page_slot(page)) |
		       (slot_pageno(G, page) << VM_PAGE_SHIFT) | off;
	vm_word f = 0, n = 0;
	int rc = FL_EFAULT;

	if (slot_pageno(G, page) != 0) {
		pthread_mutex_lock(&G->alloc_lock);
		rc = vm__heap_free(&G->space, addr, &f, &n);
		pthread_mutex_unlock(&G->alloc_lock);
	}
	if (rc == FL_ENOMEM)
		return DSM_NOMEM;
	if (rc != 0)
		return DSM_NOTBLOCK;
	*first = ((uint64_t)G->slot << (VM_SLOT_SHIFT - VM_PAGE_SHIFT)) | f;
	*npages = n;
	return DSM_OK;
}

/* Map the module's segment @seg at its fixed place in slot 0, metadata
 * only (its bytes go into the masters: dsm_gsrc_load_home). */
static int map_segment(struct dsm_gsrc *G, enum vm_segment seg, uint32_t len,
		       struct fl_err *err)
{
	vm_word base = vm_module_seg_base(G->p->m, seg) & VM_OFFSET_MASK;
	vm_word first = base >> VM_PAGE_SHIFT;
	vm_word np = ((vm_word)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
	struct vm_space *s = &G->space;

	for (vm_word i = 0; i < np; i++) {
		struct vm_page *pg = vm__page_map(s, first + i);
		if (pg == NULL) {
			struct vm_fault f;
			vm__oom_msg(&f, G->p, "the module's data", VM_COST_PAGE);
			return fl_err_set(err, FL_ENOMEM, "dsm: %s of %" PRIu32
					  " bytes: %s",
					  seg == VM_SEG_RODATA ? "read-only data"
							       : "globals",
					  len, f.msg);
		}
		pg->kind = seg == VM_SEG_RODATA ? VM_PAGE_RODATA : VM_PAGE_DATA;
		pg->head = first;
		pg->bytes = len;
	}
	if (first + np > s->heap->top)
		s->heap->top = first + np;
	return 0;
}

/* ---- Lifecycle and the driver's side ---- */

void dsm_gsrc_unref(struct vm_gsrc *g)
{
	struct dsm_gsrc *G = gsrc_of(g);

	if (G == NULL || atomic_fetch_sub(&G->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&G->alloc_lock);
	pthread_mutex_destroy(&G->lock);
	free(G);
}

/* The process is quiet: no op runs or will. */
static void d_close(struct vm_gsrc *g)
{
	struct dsm_gsrc *G = gsrc_of(g);

	pthread_mutex_lock(&G->lock);
	G->closed = true;
	dsm_stats(G->node, &G->final);
	/* Threads still parked (queued at a home when the process ended)
	 * are never resumed: they wait on no machine's answer any more. */
	for (size_t i = 0; i < G->tab_cap; i++)
		for (struct dthread *dt = G->tab[i]; dt != NULL; dt = dt->hnext)
			if (dt->parked)
				atomic_fetch_sub(&G->p->node->net_waits, 1);
	threads_free(G);
	dsm_node_free(G->node);
	G->node = NULL;
	G->woken = NULL;
	pthread_mutex_unlock(&G->lock);
	if (G->space.heap != NULL)
		vm__space_close(&G->space);
	dsm_gsrc_unref(g);
}

/* A thread may move when it has no private copies (its writes since its
 * last fence) and is between the steps of no op. */
static bool d_movable(struct vm_gsrc *g, const struct vm_thread *t)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt = NULL;
	bool ok;

	pthread_mutex_lock(&G->lock);
	if (G->tab_cap > 0)
		for (dt = G->tab[tid_bucket(t->tid, G->tab_cap)]; dt != NULL;
		     dt = dt->hnext)
			if (dt->tid == t->tid)
				break;
	ok = dt == NULL || (dt->npriv == 0 && dt->phase == 0);
	pthread_mutex_unlock(&G->lock);
	return ok;
}

static uint32_t d_waiting(struct vm_gsrc *g)
{
	return atomic_load(&gsrc_of(g)->nwaiting);
}

static const struct vm_gsrc_ops dsm_ops = {
	.page = d_page,
	.fence = d_fence,
	.atomic = d_atomic,
	.wait = d_wait,
	.wake = d_wake,
	.lock = d_lock,
	.unlock = d_unlock,
	.alloc = d_alloc,
	.free = d_free,
	.close = d_close,
	.movable = d_movable,
	.waiting = d_waiting,
};

/* io.charge: the process's budget. */
static bool on_charge(void *ctx, int64_t bytes)
{
	struct dsm_gsrc *G = ctx;

	if (bytes < 0) {
		vm__credit(&G->p->budget, -bytes);
		return true;
	}
	return vm__charge(&G->p->budget, bytes);
}

/* io.room: the budget's least, as of now. */
static int64_t on_room(void *ctx)
{
	const struct dsm_gsrc *G = ctx;

	return vm__budget_left(&G->p->budget);
}

/* io.send, under lock: the driver's. */
static void on_send(void *ctx, int to, const void *msg, size_t len)
{
	struct dsm_gsrc *G = ctx;

	G->cfg.send(G->cfg.send_ctx, to, msg, len);
}

/* io.wake, under lock (a delivery, or another thread's op at this
 * home): counted again if it was lowered, then linked for unlock(). */
static void on_wake(void *ctx, struct dsm_wait *wt)
{
	struct dsm_gsrc *G = ctx;
	struct dthread *dt = wt->user;

	dt->parked = false;
	if (dt->lowered) {
		dt->lowered = false;
		vm__proc_busy_inc(G->p);
	} else {
		atomic_fetch_sub(&G->nwaiting, 1);
	}
	dt->wnext = G->woken;
	G->woken = dt;
}

/* io.queued, under lock. */
static void on_queued(void *ctx, struct dsm_wait *wt)
{
	struct dsm_gsrc *G = ctx;
	struct dthread *dt = wt->user;

	if (dt->parked)
		lower(G, dt); /* may be the last: touch nothing after */
	else
		dt->lower = true; /* still in its call: at its park */
}

void dsm_gsrc_deliver(struct vm_gsrc *g, int from, const void *msg,
		      size_t len)
{
	struct dsm_gsrc *G = gsrc_of(g);

	pthread_mutex_lock(&G->lock);
	if (G->closed) {
		pthread_mutex_unlock(&G->lock);
		return;
	}
	dsm_deliver(G->node, from, msg, len);
	unlock(G);
}

void dsm_gsrc_node_lost(struct vm_gsrc *g, int node)
{
	struct dsm_gsrc *G = gsrc_of(g);

	pthread_mutex_lock(&G->lock);
	if (G->closed) {
		pthread_mutex_unlock(&G->lock);
		return;
	}
	dsm_node_lost(G->node, node);
	unlock(G);
}

void dsm_gsrc_threads_lost(struct vm_gsrc *g,
			   bool (*lost)(void *ctx, uint64_t tid), void *ctx)
{
	struct dsm_gsrc *G = gsrc_of(g);

	pthread_mutex_lock(&G->lock);
	if (G->closed) {
		pthread_mutex_unlock(&G->lock);
		return;
	}
	bool failed = dsm_threads_lost(G->node, lost, ctx) != DSM_OK;
	unlock(G);
	if (failed) /* some locker would wait for good */
		vm__proc_end_line(G->p, 70, "flock: out of memory (passing on "
					    "the locks of lost threads)\n");
}

void dsm_gsrc_stats(struct vm_gsrc *g, struct dsm_stats *out)
{
	struct dsm_gsrc *G = gsrc_of(g);

	pthread_mutex_lock(&G->lock);
	if (G->node != NULL)
		dsm_stats(G->node, out);
	else
		*out = G->final;
	pthread_mutex_unlock(&G->lock);
}

void dsm_gsrc_counts(struct vm_gsrc *g, uint64_t except, uint64_t *sent,
		     uint64_t *recv)
{
	struct dsm_gsrc *G = gsrc_of(g);

	pthread_mutex_lock(&G->lock);
	if (G->node != NULL) {
		dsm_counts(G->node, except, sent, recv);
	} else {
		*sent = G->final.msgs_sent;
		*recv = G->final.msgs_recv;
	}
	pthread_mutex_unlock(&G->lock);
}

/* One module segment into @home's master copies. */
static int load_segment(struct dsm_node *home, const struct vm_proc *p,
			enum vm_segment seg, const uint8_t *bytes, uint32_t len,
			struct fl_err *err)
{
	vm_word base = vm_module_seg_base(p->m, seg);

	for (uint32_t off = 0; off < len; off += VM_PAGE_SIZE) {
		uint32_t k = len - off < VM_PAGE_SIZE ? len - off : VM_PAGE_SIZE;
		enum dsm_res r = dsm_home_load(home, dsm_gsrc_page(base + off), 0,
					       k, bytes + off);
		if (r == DSM_NOMEM)
			return fl_err_set(err, FL_ENOMEM, "dsm: module data: out "
					  "of memory");
		if (r != DSM_OK)
			return fl_err_set(err, FL_EINVAL, "dsm: module data at "
					  "0x%" PRIx64 ": not homed here, or "
					  "fetched already", base + off);
	}
	return 0;
}

int dsm_gsrc_load_home(struct dsm_node *home, const struct vm_proc *p,
		       struct fl_err *err)
{
	const struct vm_module *m = p->m;
	int rc = load_segment(home, p, VM_SEG_RODATA, m->rodata, m->rodata_len,
			      err);

	return rc ? rc
		  : load_segment(home, p, VM_SEG_DATA, m->data, m->data_len, err);
}

int dsm_gsrc_new(struct vm_proc *p, const struct dsm_gsrc_config *cfg,
		 struct vm_gsrc **out, struct fl_err *err)
{
	struct dsm_gsrc *G;
	struct dsm_config dc = {
		.self = cfg->self,
		.nodes = cfg->nodes,
		.home = cfg->home,
		.home_ctx = cfg->home_ctx,
		.robust = cfg->robust,
		.io = {.send = on_send,
		       .wake = on_wake,
		       .queued = on_queued,
		       .map = on_map,
		       .free = on_free,
		       .charge = on_charge,
		       .room = on_room},
	};
	int rc;

	*out = NULL;
	if (cfg->send == NULL || cfg->home == NULL || cfg->slot > VM_SLOT_MASK)
		return fl_err_set(err, FL_EINVAL, "dsm: node %d: no transport, "
				  "no home function, or slot %" PRIu32,
				  cfg->self, cfg->slot);
	if (cfg->home(cfg->home_ctx, dsm_gsrc_page(vm_gslot_base(cfg->slot) +
						   VM_PAGE_SIZE)) != cfg->self)
		return fl_err_set(err, FL_EINVAL, "dsm: node %d does not home "
				  "slot %" PRIu32 ", where it would galloc",
				  cfg->self, cfg->slot);
	if ((G = calloc(1, sizeof *G)) == NULL)
		return fl_err_set(err, FL_ENOMEM, "dsm: out of memory");
	dc.io.ctx = G;
	G->base.ops = &dsm_ops;
	G->p = p;
	G->check = p->opt.check;
	G->slot = cfg->slot;
	pthread_mutex_init(&G->lock, NULL);
	pthread_mutex_init(&G->alloc_lock, NULL);
	atomic_init(&G->refs, 2);
	G->cfg = *cfg;
	if (cfg->ids != NULL) {
		memcpy(G->ids, cfg->ids,
		       (size_t)(cfg->nodes > DSM_MAX_NODES ? DSM_MAX_NODES
							   : cfg->nodes) *
			       sizeof *G->ids);
		G->cfg.ids = G->ids;
	}
	if ((rc = vm__space_init(&G->space, vm_gslot_base(cfg->slot), G->check,
				 true)) != 0) {
		fl_err_set(err, rc, "dsm: out of memory");
		goto fail;
	}
	G->space.budget = &p->budget;
	if ((rc = dsm_node_new(&dc, &G->node, err)) != 0)
		goto fail_space;
	if (cfg->slot == VM_ORIGIN_SLOT &&
	    ((rc = map_segment(G, VM_SEG_RODATA, p->m->rodata_len, err)) != 0 ||
	     (rc = map_segment(G, VM_SEG_DATA, p->m->data_len, err)) != 0 ||
	     (rc = dsm_gsrc_load_home(G->node, p, err)) != 0))
		goto fail_node;
	*out = &G->base;
	return 0;
fail_node:
	dsm_node_free(G->node);
fail_space:
	vm__space_close(&G->space);
fail:
	pthread_mutex_destroy(&G->alloc_lock);
	pthread_mutex_destroy(&G->lock);
	free(G);
	return rc;
}
