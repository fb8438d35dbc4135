/* The DSM page source: vm_gsrc's ops on one struct dsm_node, for the
 * workers of the node that runs the process (dsm_gsrc.h says what is
 * delegated to a local stand-in).
 *
 * Reads in place: a read translation is the node's copy (dsm_map), which
 * the TLB may cache until the thread's next fence; the core keeps a
 * copy's buffer across invalidations, so the address stays host memory,
 * and at the thread's fences this source drops the worker's TLB, so the
 * thread then maps again and sees what the acquire let in.
 *
 * Writes through a private copy per thread. The core is one node for
 * all the workers, and a fence is node-wide: one thread's release diffs
 * and cleans every dirty page of the node, one thread's acquire drops
 * copies. A page another thread holds writable in its TLB would be
 * written behind those backs -- after a release its new bytes have no
 * twin and are never sent, after an invalidation a refetch overwrites
 * them. So a write translation gives the thread its own copy of the
 * page and a twin of it (taken from the node's copy, fetched first if
 * need be), valid until the thread's next fence; its reads of that page
 * go to the copy too (program order). At each of its fences the bytes
 * where copy and twin differ go into the node with dsm_write (which
 * twins the node's copy for the node's release), the copies are freed
 * and the worker's TLB dropped, then the core's release or acquire runs.
 * This is SPEC 3.1 with the thread, not the node, as the unit between
 * threads of one node as well.
 *
 * Parking: every call into the core passes the thread's struct dsm_wait;
 * DSM_WAIT parks the thread (vm_gsrc_park) under the source's mutex, so
 * the wake -- which comes inside a later delivery, under the same mutex
 * -- cannot precede the park. io.wake only links the thread on a list;
 * the delivery resumes them once it let go of the mutex, reading each
 * link before it resumes that thread (the last resume may let the
 * process end). The instruction runs again and makes the same op, which
 * takes the reply and goes on where the thread's phase says: ops of
 * several steps (wait, wake, lock, unlock, galloc) keep their progress
 * in the thread's record, so no step applies twice.
 *
 * Failure modes: the stand-in's faults, word for word; out of memory;
 * an address the core refuses (DSM_BAD: outside the page numbers it
 * takes), a runtime error saying so.
 *
 * Threads: any worker of the process, concurrently; @lock serializes the
 * node, the thread table, and deliveries (the driver's thread). */
#include "dsm/dsm_gsrc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* A page a thread writes until its next fence: its copy and the twin
 * (the node's bytes when it was taken). */
struct priv {
	uint64_t page;
	uint8_t *data, *twin;
};

/* What the source keeps of one VM thread, by tid (a --debug-migrate copy
 * takes over its original's). Touched by the worker running the thread,
 * under @lock but for @phase's steps that call the stand-in. */
struct dthread {
	struct dthread *hnext;
	vm_word tid;
	struct vm_thread *t; /* as parked: what vm_gsrc_resume takes */
	struct dsm_wait wait;
	struct dthread *wnext; /* woken, in the delivery running now */
	int phase;	       /* of a multi-step op; 0 between ops */
	vm_word saved;	       /* what an earlier step produced */
	uint64_t seen;	       /* wait: wakes counted before its acquire */
	vm_word zero_at, zero_end; /* galloc: what is left to zero */
	struct priv *priv;
	size_t npriv, cappriv;
};

struct dsm_gsrc {
	struct vm_gsrc base;
	struct vm_proc *p;
	struct vm_gsrc *meta;	  /* the stand-in (vm_gmem.c) */
	struct vm_space *mspace;  /* its slot 0: the mapping */
	bool check;
	pthread_mutex_t lock;	  /* everything below */
	struct dsm_node *node;
	struct dsm_gsrc_config cfg;
	struct dthread **tab;	  /* threads by tid, chained */
	size_t tab_cap, tab_len;
	struct dthread *woken;	  /* io.wake's, during a delivery */
	bool closed;
	struct dsm_stats final;	  /* the node's counters when it closed */
	pthread_mutex_t alloc_lock; /* galloc: the stand-in's heap top */
	uint64_t wakes;		  /* wake instructions so far (atomic) */
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
	b = tid_bucket(t->tid, G->tab_cap);
	dt->hnext = G->tab[b];
	G->tab[b] = dt;
	G->tab_len++;
	return dt;
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
		pthread_mutex_unlock(&G->lock);
		vm_gsrc_fault(w, "out of memory");
	}
	return dt;
}

/* ---- Results ---- */

/* End an op under lock with core result @r (not OK): park on DSM_WAIT,
 * else a fault. The source is unlocked after. */
static enum vm_res leave(struct dsm_gsrc *G, struct vm_worker *w,
			 struct dthread *dt, enum dsm_res r, const char *what,
			 vm_word addr)
{
	if (r == DSM_WAIT) {
		dt->t = vm_gsrc_park(w, addr);
		pthread_mutex_unlock(&G->lock);
		return VM_PARK;
	}
	dt->phase = 0;
	pthread_mutex_unlock(&G->lock);
	if (r == DSM_NOMEM)
		vm_gsrc_fault(w, "out of memory");
	else
		vm_gsrc_fault(w, "%s at 0x%" PRIx64 ": the DSM refused the "
			      "address", what, addr);
	return VM_FAULT;
}

/* The mapping checks the stand-in's translation makes, with its words. */
static enum vm_res check_map(struct dsm_gsrc *G, struct vm_worker *w,
			     vm_word addr, vm_word n, bool write,
			     const char *what)
{
	const struct vm_space *s = G->mspace;
	vm_word pageno = (addr & VM_OFFSET_MASK) >> VM_PAGE_SHIFT;
	const struct vm_page *pg = NULL;

	if (vm_gslot(addr) == 0 && pageno == 0) {
		vm_gsrc_fault(w, "%s at null address 0x%" PRIx64, what, addr);
		return VM_FAULT;
	}
	if (vm_gslot(addr) == 0)
		pg = vm__page_get(s, pageno);
	if (pg == NULL) {
		vm_gsrc_fault(w, "%s at unmapped address 0x%" PRIx64, what, addr);
		return VM_FAULT;
	}
	if (write && pg->kind == VM_PAGE_RODATA) {
		vm_gsrc_fault(w, "%s at read-only address 0x%" PRIx64, what,
			      addr);
		return VM_FAULT;
	}
	if (s->check && !vm__heap_live(s, addr, n)) {
		vm_gsrc_fault(w, "%s at 0x%" PRIx64 " outside any live block",
			      what, addr);
		return VM_FAULT;
	}
	return VM_OK;
}

/* ---- Private copies ---- */

static struct priv *priv_find(struct dthread *dt, uint64_t page)
{
	for (size_t i = 0; i < dt->npriv; i++)
		if (dt->priv[i].page == page)
			return &dt->priv[i];
	return NULL;
}

/* A private copy of @page, from the node's bytes @src; NULL: no memory. */
static struct priv *priv_add(struct dthread *dt, uint64_t page,
			     const uint8_t *src)
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
	pv->data = malloc(DSM_PAGE_SIZE);
	pv->twin = malloc(DSM_PAGE_SIZE);
	if (pv->data == NULL || pv->twin == NULL) {
		free(pv->data);
		free(pv->twin);
		return NULL;
	}
	memcpy(pv->data, src, DSM_PAGE_SIZE);
	memcpy(pv->twin, src, DSM_PAGE_SIZE);
	dt->npriv++;
	return pv;
}

static void priv_free(struct priv *pv)
{
	free(pv->data);
	free(pv->twin);
}

/* Write what @dt changed in its private copies into the node, run by
 * run, and free them (the worker's TLB, which may point into them, is
 * dropped). DSM_OK once none is left; DSM_WAIT when a page's copy is
 * missing in the node (nothing of that page written yet: the next call
 * starts it again). Under lock. */
static enum dsm_res flush(struct dsm_gsrc *G, struct vm_worker *w,
			  struct dthread *dt)
{
	bool freed = false;
	enum dsm_res r = DSM_OK;

	while (dt->npriv > 0) {
		struct priv *pv = &dt->priv[dt->npriv - 1];
		for (uint32_t i = 0; i < DSM_PAGE_SIZE && r == DSM_OK;) {
			uint32_t j = i;
			while (j < DSM_PAGE_SIZE && pv->data[j] != pv->twin[j])
				j++;
			if (j > i)
				r = dsm_write(G->node, &dt->wait, pv->page, i,
					      j - i, pv->data + i);
			i = j + 1;
		}
		if (r != DSM_OK)
			break;
		priv_free(pv);
		dt->npriv--;
		freed = true;
	}
	if (freed)
		vm_gsrc_tlb_flush(w);
	return r;
}

/* ---- The ops ---- */

static enum vm_res d_page(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, bool write, const char *what,
			  uint8_t **data, bool *cache)
{
	struct dsm_gsrc *G = gsrc_of(g);
	uint64_t page = dsm_gsrc_page(addr);
	vm_word off = addr & (VM_PAGE_SIZE - 1);
	struct dthread *dt;
	struct priv *pv;
	const uint8_t *src;
	enum dsm_res r;

	if (check_map(G, w, addr, n, write, what) != VM_OK)
		return VM_FAULT;
	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	if ((pv = priv_find(dt, page)) == NULL) {
		if ((r = dsm_map(G->node, &dt->wait, page, write, (uint32_t)off,
				    (uint32_t)n, &src)) != DSM_OK)
			return leave(G, w, dt, r, what, addr);
		if (!write) {
			/* the TLB's read entries are never written through */
			*data = (uint8_t *)(uintptr_t)src + off;
			goto ok;
		}
		if ((pv = priv_add(dt, page, src)) == NULL)
			return leave(G, w, dt, DSM_NOMEM, what, addr);
	}
	*data = pv->data + off;
ok:
	pthread_mutex_unlock(&G->lock);
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
	pthread_mutex_unlock(&G->lock);
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

	if (check_map(G, w, addr, 8, true, what) != VM_OK)
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
	pthread_mutex_unlock(&G->lock);
	vm_gsrc_tlb_flush(w);
	*old = o;
	return VM_OK;
}

/* The last step of wait, wake, lock, unlock: the acquire; then the op is
 * done (unlocked, the TLB dropped). */
static enum vm_res acquire_step(struct dsm_gsrc *G, struct vm_worker *w,
				struct dthread *dt, const char *what,
				vm_word addr)
{
	enum dsm_res r = flush(G, w, dt);

	if (r == DSM_OK)
		r = dsm_acquire(G->node, &dt->wait);
	if (r != DSM_OK)
		return leave(G, w, dt, r, what, addr);
	dt->phase = 0;
	pthread_mutex_unlock(&G->lock);
	vm_gsrc_tlb_flush(w);
	return VM_OK;
}

/* Phases of wait. */
enum { W_START, W_ACQUIRE, W_READ, W_QUEUED, W_WOKEN };

static enum vm_res d_wait(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word expected)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt;
	struct vm_reply rep;
	enum dsm_res r;
	uint64_t v;

	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
again:
	switch (dt->phase) {
	case W_START:
		pthread_mutex_unlock(&G->lock);
		if (check_map(G, w, addr, 8, true, "wait") != VM_OK)
			return VM_FAULT;
		pthread_mutex_lock(&G->lock);
		if ((r = flush(G, w, dt)) != DSM_OK)
			return leave(G, w, dt, r, "wait", addr);
		/* Before the acquire: a wake whose release our acquire
		 * missed counts after this (see below). */
		dt->seen = __atomic_load_n(&G->wakes, __ATOMIC_SEQ_CST);
		dt->phase = W_ACQUIRE;
		/* fall through */
	case W_ACQUIRE:
		if ((r = dsm_acquire(G->node, &dt->wait)) != DSM_OK)
			return leave(G, w, dt, r, "wait", addr);
		vm_gsrc_tlb_flush(w);
		dt->phase = W_READ;
		/* fall through */
	case W_READ:
		r = dsm_read(G->node, &dt->wait, dsm_gsrc_page(addr),
			     (uint32_t)(addr & (VM_PAGE_SIZE - 1)), 8, &v);
		if (r != DSM_OK)
			return leave(G, w, dt, r, "wait", addr);
		if (v != expected) {
			dt->phase = 0;
			pthread_mutex_unlock(&G->lock);
			return VM_OK;
		}
		/* Equal: park unless a wake came since @seen. A waker
		 * counts its wake after its release completed, and queues
		 * are searched under the bucket lock vm__wait compares
		 * under: either it counted before our compare, or it finds
		 * us queued. If it counted, the word may have changed:
		 * read it again after another acquire (never a spurious
		 * return: programs may count wake-ups). */
		dt->phase = W_QUEUED;
		pthread_mutex_unlock(&G->lock);
		if (vm__wait(w, vm_gsrc_thread(w), &G->wakes, addr, dt->seen))
			return VM_PARK;
		pthread_mutex_lock(&G->lock);
		dt->seen = __atomic_load_n(&G->wakes, __ATOMIC_SEQ_CST);
		dt->phase = W_ACQUIRE;
		goto again;
	case W_QUEUED:
		/* woken (or resumed for nothing: as spurious) */
		(void)vm__reply_take(vm_gsrc_thread(w), VM_PARK_WAIT, &rep);
		break;
	default:
		break;
	}
	dt->phase = W_WOKEN;
	return acquire_step(G, w, dt, "wait", addr);
}

static enum vm_res d_wake(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, vm_word *woken)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt;
	enum dsm_res r;
	enum vm_res rc;

	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	if (dt->phase == 0) {
		if ((r = flush(G, w, dt)) != DSM_OK ||
		    (r = dsm_release(G->node, &dt->wait)) != DSM_OK)
			return leave(G, w, dt, r, "wake", addr);
		__atomic_fetch_add(&G->wakes, 1, __ATOMIC_SEQ_CST);
		pthread_mutex_unlock(&G->lock);
		dt->saved = vm__wake(w, vm_gsrc_thread(w), addr, n);
		pthread_mutex_lock(&G->lock);
		dt->phase = 1;
	}
	rc = acquire_step(G, w, dt, "wake", addr);
	if (rc == VM_OK)
		*woken = dt->saved;
	return rc;
}

/* lock and unlock: release, the stand-in's op, acquire. */
static enum vm_res mutex_op(struct dsm_gsrc *G, struct vm_worker *w,
			    vm_word addr, bool lock, vm_word *status)
{
	const char *what = lock ? "lock" : "unlock";
	struct dthread *dt;
	enum dsm_res r;
	enum vm_res rc;

	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	if (dt->phase == 0) {
		if ((r = flush(G, w, dt)) != DSM_OK ||
		    (r = dsm_release(G->node, &dt->wait)) != DSM_OK)
			return leave(G, w, dt, r, what, addr);
		dt->phase = 1;
	}
	if (dt->phase == 1) {
		vm_word st = 0;
		pthread_mutex_unlock(&G->lock);
		rc = lock ? G->meta->ops->lock(G->meta, w, addr, &st)
			  : G->meta->ops->unlock(G->meta, w, addr);
		if (rc == VM_PARK) /* queued: the op runs again, handed over */
			return VM_PARK;
		pthread_mutex_lock(&G->lock);
		if (rc != VM_OK) {
			dt->phase = 0;
			pthread_mutex_unlock(&G->lock);
			return rc;
		}
		dt->saved = st;
		dt->phase = 2;
	}
	rc = acquire_step(G, w, dt, what, addr);
	if (rc == VM_OK && status != NULL)
		*status = dt->saved;
	return rc;
}

static enum vm_res d_lock(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word *status)
{
	return mutex_op(gsrc_of(g), w, addr, true, status);
}

static enum vm_res d_unlock(struct vm_gsrc *g, struct vm_worker *w,
			    vm_word addr)
{
	return mutex_op(gsrc_of(g), w, addr, false, NULL);
}

/* galloc: the stand-in's allocator; then zeros, through the node, over
 * the pages of the block it had handed out before (the others are zero
 * at their home: never mapped, never written). The thread's own copies
 * are written back first, so none holds the block's old bytes. */
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
		enum vm_res rc;
		if ((r = flush(G, w, dt)) != DSM_OK)
			return leave(G, w, dt, r, "galloc", 0);
		pthread_mutex_unlock(&G->lock);
		pthread_mutex_lock(&G->alloc_lock);
		top = G->mspace->heap->top;
		rc = G->meta->ops->alloc(G->meta, w, n, &a);
		pthread_mutex_unlock(&G->alloc_lock);
		if (rc != VM_OK)
			return rc;
		used = vm_gslot_base(0) + top * VM_PAGE_SIZE;
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
	pthread_mutex_unlock(&G->lock);
	return VM_OK;
}

/* free: the thread's copies written back first (none may write into the
 * block once another thread has it again), then the stand-in's free. */
static enum vm_res d_free(struct vm_gsrc *g, struct vm_worker *w, vm_word addr)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt;
	enum dsm_res r;

	if ((dt = enter(G, w)) == NULL)
		return VM_FAULT;
	if ((r = flush(G, w, dt)) != DSM_OK)
		return leave(G, w, dt, r, "free", addr);
	pthread_mutex_unlock(&G->lock);
	return G->meta->ops->free(G->meta, w, addr);
}

static void threads_free(struct dsm_gsrc *G)
{
	for (size_t i = 0; i < G->tab_cap; i++) {
		struct dthread *dt = G->tab[i], *next;
		for (; dt != NULL; dt = next) {
			next = dt->hnext;
			for (size_t k = 0; k < dt->npriv; k++)
				priv_free(&dt->priv[k]);
			free(dt->priv);
			free(dt);
		}
	}
	free(G->tab);
	G->tab = NULL;
	G->tab_cap = G->tab_len = 0;
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
	threads_free(G);
	dsm_node_free(G->node);
	G->node = NULL;
	pthread_mutex_unlock(&G->lock);
	if (G->meta != NULL)
		G->meta->ops->close(G->meta);
	G->meta = NULL;
	dsm_gsrc_unref(g);
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
};

/* io.send, under lock: the driver's. */
static void on_send(void *ctx, int to, const void *msg, size_t len)
{
	struct dsm_gsrc *G = ctx;

	G->cfg.send(G->cfg.send_ctx, to, msg, len);
}

/* io.wake, inside dsm_deliver under lock: only remember the thread. */
static void on_wake(void *ctx, struct dsm_wait *wt)
{
	struct dsm_gsrc *G = ctx;
	struct dthread *dt = wt->user;

	dt->wnext = G->woken;
	G->woken = dt;
}

void dsm_gsrc_deliver(struct vm_gsrc *g, int from, const void *msg,
		      size_t len)
{
	struct dsm_gsrc *G = gsrc_of(g);
	struct dthread *dt, *next;

	pthread_mutex_lock(&G->lock);
	if (G->closed) {
		pthread_mutex_unlock(&G->lock);
		return;
	}
	dsm_deliver(G->node, from, msg, len);
	dt = G->woken;
	G->woken = NULL;
	pthread_mutex_unlock(&G->lock);
	/* Each parked thread holds its process up: read before resuming. */
	for (; dt != NULL; dt = next) {
		struct vm_thread *t = dt->t;
		next = dt->wnext;
		vm_gsrc_resume(t, 0, 0);
	}
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
	struct dsm_gsrc *G = calloc(1, sizeof *G);
	struct dsm_config dc = {
		.self = cfg->self,
		.nodes = cfg->nodes,
		.home = cfg->home,
		.home_ctx = cfg->home_ctx,
		.io = {.send = on_send, .wake = on_wake, .ctx = G},
	};
	uint64_t first = dsm_gsrc_page(vm_module_seg_base(p->m, VM_SEG_RODATA));
	int rc;

	*out = NULL;
	if (G == NULL)
		return fl_err_set(err, FL_ENOMEM, "dsm: out of memory");
	if (cfg->send == NULL || cfg->home == NULL) {
		free(G);
		return fl_err_set(err, FL_EINVAL, "dsm: node %d: no transport "
				  "or no home function", cfg->self);
	}
	G->base.ops = &dsm_ops;
	G->p = p;
	G->check = p->opt.check;
	pthread_mutex_init(&G->lock, NULL);
	pthread_mutex_init(&G->alloc_lock, NULL);
	atomic_init(&G->refs, 2);
	G->cfg = *cfg;
	if ((rc = vm__glocal_new(p, &G->meta, err)) != 0)
		goto fail;
	G->mspace = vm__glocal_space(G->meta);
	if ((rc = dsm_node_new(&dc, &G->node, err)) != 0)
		goto fail_meta;
	if (cfg->home(cfg->home_ctx, first) == cfg->self &&
	    (rc = dsm_gsrc_load_home(G->node, p, err)) != 0)
		goto fail_node;
	*out = &G->base;
	return 0;
fail_node:
	dsm_node_free(G->node);
fail_meta:
	G->meta->ops->close(G->meta);
fail:
	pthread_mutex_destroy(&G->alloc_lock);
	pthread_mutex_destroy(&G->lock);
	free(G);
	return rc;
}
