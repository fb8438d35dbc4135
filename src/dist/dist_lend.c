/* Local pages lent with threads (dist.h, "Placement"; vm_tstate.c's
 * format 3): the lender's and the borrower's tables, LGET/LPAGE/LRELEASE,
 * and the peer's fetch op. Locks as dist.c says: @lock guards the maps,
 * and a page is never freed under it. */
#include "dist/dist_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Lent pages ----
 *
 * The lender: @lends maps an id to a struct lend (a reference on the
 * page, and how many namings of it went out in thread states and have
 * not been released), @lent_pages the page to the same entry, so a page
 * lent again (another batch, another part) keeps its id. The borrower:
 * @borrows maps (lender, id) to a struct borrow, the struct vm_lent its
 * absent pages point at. Both are open-addressing maps on a u64. */

struct lend {
	uint64_t key;
	struct vm_page *pg; /* a reference */
	uint64_t out;       /* namings sent, not released */
};

struct remote_ask {
	int part;
	uint64_t key; /* its id here */
};

struct borrow {
	struct vm_lent base; /* first: what the pages point at */
	struct dist_part *d; /* a reference */
	int from;
	uint64_t key;
	uint64_t named; /* namings received, not released */
	bool asked, failed, pinned;
	bool nomem; /* failed: the bytes came, the memory limit had no room */
	struct vm_thread **waiting; /* parked on it (vm_gsrc_park) */
	size_t nwaiting, waiting_cap;
	struct remote_ask *remote; /* parts that asked us for it (re-lent) */
	size_t nremote, remote_cap;
};

static size_t umap_slot(uint64_t k, size_t cap)
{
	return (size_t)((k * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

/* Where @k's value is, or NULL when @k is not there. */
static void **umap_at(const struct umap *m, uint64_t k)
{
	if (m->cap == 0)
		return NULL;
	for (size_t j = umap_slot(k, m->cap); m->k[j] != 0;
	     j = (j + 1) & (m->cap - 1))
		if (m->k[j] == k)
			return &m->v[j];
	return NULL;
}

static void *umap_get(const struct umap *m, uint64_t k)
{
	void **v = umap_at(m, k);

	return v != NULL ? *v : NULL;
}

static bool umap_grow(struct umap *m)
{
	size_t cap = m->cap ? 2 * m->cap : 64;
	uint64_t *k = calloc(cap, sizeof *k);
	void **v = calloc(cap, sizeof *v);

	if (k == NULL || v == NULL) {
		free(k);
		free(v);
		return false;
	}
	for (size_t i = 0; i < m->cap; i++) {
		size_t j;
		if (m->k[i] == 0)
			continue;
		for (j = umap_slot(m->k[i], cap); k[j] != 0; j = (j + 1) & (cap - 1))
			;
		k[j] = m->k[i];
		v[j] = m->v[i];
	}
	free(m->k);
	free(m->v);
	m->k = k;
	m->v = v;
	m->cap = cap;
	return true;
}

/* Set @k (nonzero) to @v, replacing what it had; false when out of
 * memory. */
static bool umap_put(struct umap *m, uint64_t k, void *v)
{
	size_t j;

	if ((m->n + 1) * 2 > m->cap && !umap_grow(m))
		return false;
	for (j = umap_slot(k, m->cap); m->k[j] != 0 && m->k[j] != k;
	     j = (j + 1) & (m->cap - 1))
		;
	if (m->k[j] == 0)
		m->n++;
	m->k[j] = k;
	m->v[j] = v;
	return true;
}

/* Remove @k; later entries of its run shift back (no tombstones). */
static void umap_del(struct umap *m, uint64_t k)
{
	size_t j, i;

	if (m->cap == 0)
		return;
	for (j = umap_slot(k, m->cap); m->k[j] != k; j = (j + 1) & (m->cap - 1))
		if (m->k[j] == 0)
			return;
	m->k[j] = 0;
	m->n--;
	for (i = (j + 1) & (m->cap - 1); m->k[i] != 0; i = (i + 1) & (m->cap - 1)) {
		size_t want = umap_slot(m->k[i], m->cap);
		/* Does slot j lie cyclically in [want, i)? Then it moves. */
		if (((i - want) & (m->cap - 1)) >= ((i - j) & (m->cap - 1))) {
			m->k[j] = m->k[i];
			m->v[j] = m->v[i];
			m->k[i] = 0;
			j = i;
		}
	}
}

/* Room for one more entry (so that a umap_put of a new key cannot
 * fail); false when out of memory. */
static bool umap_room(struct umap *m)
{
	return (m->n + 1) * 2 <= m->cap || umap_grow(m);
}

void dist__umap_close(struct umap *m)
{
	free(m->k);
	free(m->v);
	memset(m, 0, sizeof *m);
}

/* lent_to's key: a lend's id (below 2^56) and a part (below 64). */
static uint64_t out_key(uint64_t key, int part)
{
	return key << 6 | (uint64_t)part;
}

static uint64_t page_key(const struct vm_page *pg)
{
	return (uint64_t)(uintptr_t)pg;
}

/* Lent ids are below 2^56: with the lender's index above, one key. */
static uint64_t borrow_key(int from, uint64_t key)
{
	return (uint64_t)(from + 1) << 56 | key;
}

/* vm_lending.lend: page @pg goes out lent once more. */
uint64_t dist__lend_page(void *ctx, struct vm_page *pg)
{
	struct dist_part *d = ((struct lend_ctx *)ctx)->d;
	int to = ((struct lend_ctx *)ctx)->to;
	struct lend *e;
	uint64_t key = 0;

	pthread_mutex_lock(&d->lock);
	if (!umap_room(&d->lent_to)) {
		pthread_mutex_unlock(&d->lock);
		return 0; /* its bytes go instead */
	}
	e = umap_get(&d->lent_pages, page_key(pg));
	if (e == NULL && d->next_lend + 1 < (uint64_t)1 << 56 &&
	    (e = calloc(1, sizeof *e)) != NULL) {
		e->key = ++d->next_lend;
		e->pg = pg;
		if (!umap_put(&d->lends, e->key, e)) {
			free(e);
			e = NULL;
		} else if (!umap_put(&d->lent_pages, page_key(pg), e)) {
			umap_del(&d->lends, e->key);
			free(e);
			e = NULL;
		} else {
			atomic_fetch_add(&pg->refs, 1); /* immutable now */
		}
	}
	if (e != NULL) {
		void **n = umap_at(&d->lent_to, out_key(e->key, to));
		if (n != NULL)
			*n = (void *)((uintptr_t)*n + 1);
		else /* (room made above) */
			umap_put(&d->lent_to, out_key(e->key, to), (void *)1);
		e->out++;
		d->st.lazy_pages++;
		key = e->key;
	}
	pthread_mutex_unlock(&d->lock);
	return key;
}

static void borrow_gone(struct vm_lent *l);

/* vm_lending.home: an absent page going back to the part that lent it
 * goes as that part's own id, not lent on (its bytes are there). */
uint64_t dist__home_page(void *ctx, const struct vm_page *pg)
{
	const struct lend_ctx *c = ctx;
	const struct borrow *b = (const struct borrow *)pg->lent;

	return pg->lent->gone == borrow_gone && b->from == c->to ? b->key : 0;
}

/* vm_lending.own: a page of a thread coming back names what this part
 * lent under @key: its bytes, or (lent here itself) its lent bytes. */
int dist__own_page(void *ctx, uint64_t key, uint8_t *bytes,
		    struct vm_lent **lent)
{
	struct dist_part *d = ((struct borrow_ctx *)ctx)->d;
	const struct lend *e;
	const uint8_t *data;
	int got = 0;

	pthread_mutex_lock(&d->lock);
	/* (the entry holds its page until the last naming is released,
	 * and the sender's naming of it outlives this message) */
	if ((e = umap_get(&d->lends, key)) != NULL) {
		data = __atomic_load_n(&e->pg->data, __ATOMIC_ACQUIRE);
		got = 1;
		if (data != NULL) {
			memcpy(bytes, data, VM_PAGE_SIZE);
		} else if (e->pg->lent != NULL) {
			atomic_fetch_add(&e->pg->lent->refs, 1);
			*lent = e->pg->lent;
			got = 2;
		} else {
			memset(bytes, 0, VM_PAGE_SIZE);
		}
	}
	pthread_mutex_unlock(&d->lock);
	return got;
}

/* vm_lending.borrow: a page of a thread state from @from names lent id
 * @key: the bytes here for it, shared with every page that named it
 * before and still lives (or that fetched it: pinned). */
struct vm_lent *dist__borrow_page(void *ctx, uint64_t key)
{
	struct borrow_ctx *c = ctx;
	struct dist_part *d = c->d;
	uint64_t bk = borrow_key(c->from, key);
	struct borrow *b;
	uint32_t refs;

	pthread_mutex_lock(&d->lock);
	b = umap_get(&d->borrows, bk);
	/* One whose last page went is on its way out (borrow_gone): not
	 * revived, replaced. */
	if (b != NULL) {
		refs = atomic_load(&b->base.refs);
		while (refs != 0 && !atomic_compare_exchange_weak(&b->base.refs,
								  &refs, refs + 1))
			;
		if (refs == 0)
			b = NULL;
	}
	if (b == NULL && (b = calloc(1, sizeof *b)) != NULL) {
		atomic_init(&b->base.refs, 1);
		b->base.gone = borrow_gone;
		b->d = d;
		b->from = c->from;
		b->key = key;
		if (!umap_put(&d->borrows, bk, b)) {
			free(b);
			b = NULL;
		} else {
			atomic_fetch_add(&d->refs, 1);
		}
	}
	if (b != NULL)
		b->named++;
	pthread_mutex_unlock(&d->lock);
	return b != NULL ? &b->base : NULL;
}

/* Release @n namings of @key to lender @to, sent with others (LRELEASE)
 * at the next flush. Under @lock. */
static void release_later(struct dist_part *d, int to, uint64_t key, uint64_t n)
{
	if (d->dropping || n == 0)
		return; /* the lender lets everything go at its end */
	fl_buf_put_u64(&d->rel[to], key);
	fl_buf_put_u64(&d->rel[to], n);
	d->nrel[to]++;
}

#define RELEASE_BATCH 256

/* Send the releases collected (all, or only full batches when @full). */
void dist__flush_releases(struct dist_part *d, bool full)
{
	for (int i = 0; i < d->cfg.nparts; i++) {
		struct fl_buf b, list;
		uint32_t n;
		pthread_mutex_lock(&d->lock);
		n = d->nrel[i];
		if (n == 0 || (full && n < RELEASE_BATCH) || d->dropping) {
			pthread_mutex_unlock(&d->lock);
			continue;
		}
		list = d->rel[i];
		fl_buf_init(&d->rel[i]);
		d->nrel[i] = 0;
		pthread_mutex_unlock(&d->lock);
		dist__start(&b, M_LRELEASE);
		fl_buf_put_u32(&b, n);
		fl_buf_put(&b, list.data, list.len);
		if (fl_buf_failed(&list))
			fl_buf_close(&b); /* lost: kept until the end there */
		else
			dist__send_buf(d, i, &b);
		fl_buf_close(&list);
	}
}

/* The last page naming @l went (and it was never fetched, or the
 * process is over): the lender may let its page go. Never called under
 * @lock (pages are freed outside it). */
static void borrow_gone(struct vm_lent *l)
{
	struct borrow *b = (struct borrow *)l;
	struct dist_part *d = b->d;
	bool flush;

	pthread_mutex_lock(&d->lock);
	if (umap_get(&d->borrows, borrow_key(b->from, b->key)) == b)
		umap_del(&d->borrows, borrow_key(b->from, b->key));
	release_later(d, b->from, b->key, b->named);
	flush = d->nrel[b->from] >= RELEASE_BATCH;
	pthread_mutex_unlock(&d->lock);
	if (flush)
		dist__flush_releases(d, true);
	/* (a fetched one goes at the part's close, its process still
	 * there: lent_close) */
	if (b->base.data != NULL)
		vm__credit(&d->p->budget, VM_PAGE_SIZE);
	free(b->base.data);
	free(b->waiting);
	free(b->remote);
	free(b);
	dist_unref(d);
}

static void send_lpage(struct dist_part *d, int to, uint64_t key,
		       const uint8_t *bytes)
{
	struct fl_buf b;

	dist__start(&b, M_LPAGE);
	fl_buf_put_u64(&b, key);
	fl_buf_put_u8(&b, bytes != NULL ? 0 : 1);
	if (bytes != NULL)
		fl_buf_put(&b, bytes, VM_PAGE_SIZE);
	dist__send_buf(d, to, &b);
}

static void send_lget(struct dist_part *d, int to, uint64_t key)
{
	struct fl_buf b;

	dist__start(&b, M_LGET);
	fl_buf_put_u64(&b, key);
	dist__send_buf(d, to, &b);
}

static bool grow(void **v, size_t *cap, size_t n, size_t each)
{
	size_t c;
	void *q;

	if (n < *cap)
		return true;
	c = *cap ? 2 * *cap : 4;
	q = realloc(*v, c * each);
	if (q == NULL)
		return false;
	*v = q;
	*cap = c;
	return true;
}

/* ---- Lent pages: fetching and serving ---- */

enum vm_res dist__op_fetch(struct vm_peer *pe, struct vm_worker *w,
			    struct vm_lent *l, vm_word addr)
{
	struct dist_part *d = part_of(pe);
	struct borrow *b = (struct borrow *)l;
	bool ask;

	pthread_mutex_lock(&d->lock);
	if (__atomic_load_n(&b->base.data, __ATOMIC_ACQUIRE) != NULL) {
		pthread_mutex_unlock(&d->lock);
		return VM_OK;
	}
	if (d->dropping) {
		pthread_mutex_unlock(&d->lock);
		return VM_END;
	}
	if (b->failed || !grow((void **)&b->waiting, &b->waiting_cap,
			       b->nwaiting, sizeof *b->waiting)) {
		bool failed = b->failed, nomem = b->nomem;
		pthread_mutex_unlock(&d->lock);
		char m[24];
		dist__machine(d, b->from, m, sizeof m);
		if (failed && !nomem)
			vm__fault(w, "the local page at 0x%" PRIx64 " was lent "
				     "by %s (id %" PRIu64 "), which no longer "
				     "has it",
				  addr, m, b->key);
		else
			vm__fault(w, "out of memory (fetching a lent page)");
		return VM_FAULT;
	}
	b->waiting[b->nwaiting++] = vm_gsrc_park(w, addr);
	ask = !b->asked;
	b->asked = true;
	pthread_mutex_unlock(&d->lock);
	if (ask)
		send_lget(d, b->from, b->key);
	return VM_PARK;
}

/* A part asks for the bytes of a page lent to it. */
void dist__on_lget(struct dist_part *d, int from, struct fl_reader *r)
{
	uint64_t key = fl_get_u64(r);
	struct lend *e;
	struct borrow *b = NULL;
	const uint8_t *bytes = NULL;
	bool ask = false, known;

	if (r->failed || key == 0 || fl_reader_left(r) != 0) {
		dist__malformed(d);
		return;
	}
	pthread_mutex_lock(&d->lock);
	e = umap_get(&d->lends, key);
	known = e != NULL;
	if (e != NULL) {
		/* Immutable while lent: the bytes, or, for an absent page
		 * this part lent on, the bytes once they come here. */
		bytes = __atomic_load_n(&e->pg->data, __ATOMIC_ACQUIRE);
		b = (struct borrow *)e->pg->lent;
		if (bytes == NULL && b != NULL)
			bytes = __atomic_load_n(&b->base.data, __ATOMIC_ACQUIRE);
		if (bytes == NULL && b != NULL && !b->failed &&
		    grow((void **)&b->remote, &b->remote_cap, b->nremote,
			 sizeof *b->remote)) {
			b->remote[b->nremote++] = (struct remote_ask){from, key};
			ask = !b->asked;
			b->asked = true;
			pthread_mutex_unlock(&d->lock);
			if (ask)
				send_lget(d, b->from, b->key);
			return;
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (!known)
		dist__malformed(d); /* released already, or never lent */
	send_lpage(d, from, key, bytes); /* NULL: it cannot come */
}

/* The bytes of a page lent to this part came (or cannot come). */
void dist__on_lpage(struct dist_part *d, int from, struct fl_reader *r)
{
	uint64_t key = fl_get_u64(r);
	uint8_t status = fl_get_u8(r);
	const uint8_t *bytes = status == 0 ? fl_get_bytes(r, VM_PAGE_SIZE) : NULL;
	struct vm_thread **waiting;
	struct remote_ask *remote;
	size_t nwaiting, nremote;
	struct borrow *b;
	uint8_t *data = NULL;

	if (r->failed || status > 1 || (status == 0 && bytes == NULL) ||
	    fl_reader_left(r) != 0) {
		dist__malformed(d);
		return;
	}
	/* The bytes kept count against this part's memory limit, as the
	 * page's own copy does: past it the page cannot come (the thread
	 * that wants it fails with out of memory). */
	if (bytes != NULL && vm__charge(&d->p->budget, VM_PAGE_SIZE)) {
		if ((data = malloc(VM_PAGE_SIZE)) != NULL)
			memcpy(data, bytes, VM_PAGE_SIZE);
		else
			vm__credit(&d->p->budget, VM_PAGE_SIZE);
	}
	pthread_mutex_lock(&d->lock);
	b = umap_get(&d->borrows, borrow_key(from, key));
	if (b == NULL || !b->asked || atomic_load(&b->base.refs) == 0) {
		pthread_mutex_unlock(&d->lock);
		if (data != NULL) {
			free(data);
			vm__credit(&d->p->budget, VM_PAGE_SIZE);
		}
		dist__malformed(d);
		return;
	}
	b->asked = false;
	if (data != NULL) {
		__atomic_store_n(&b->base.data, data, __ATOMIC_RELEASE);
		/* Kept for the process's life: a later batch naming the
		 * same page finds its bytes here (at most once a machine). */
		atomic_fetch_add(&b->base.refs, 1);
		b->pinned = true;
		d->st.lazy_fetched++;
		d->st.lazy_bytes += VM_PAGE_SIZE;
	} else {
		b->failed = true;
		b->nomem = bytes != NULL; /* they came: no room for them */
	}
	waiting = b->waiting;
	nwaiting = b->nwaiting;
	remote = b->remote;
	nremote = b->nremote;
	b->waiting = NULL;
	b->nwaiting = b->waiting_cap = 0;
	b->remote = NULL;
	b->nremote = b->remote_cap = 0;
	pthread_mutex_unlock(&d->lock);
	/* Woken, each runs its instruction again and finds the bytes (or
	 * the failure) in the lent. */
	for (size_t i = 0; i < nwaiting; i++)
		vm_gsrc_resume(waiting[i], 0, 0);
	for (size_t i = 0; i < nremote; i++)
		send_lpage(d, remote[i].part, remote[i].key, data);
	free(waiting);
	free(remote);
}

/* Under @lock: @k of lend @e's namings, out to @part, come back; the
 * page when the last did (to unref outside @lock), else NULL. False
 * (nothing done) when @part does not hold that many. */
static bool lend_back(struct dist_part *d, struct lend *e, int part,
		      uint64_t k, struct vm_page **drop)
{
	uint64_t ok = out_key(e->key, part);
	void **n = umap_at(&d->lent_to, ok);
	uintptr_t has = n != NULL ? (uintptr_t)*n : 0;

	*drop = NULL;
	if (k == 0 || k > has || k > e->out)
		return false;
	if (has == k)
		umap_del(&d->lent_to, ok);
	else
		*n = (void *)(has - k);
	e->out -= k;
	if (e->out > 0)
		return true;
	umap_del(&d->lends, e->key);
	umap_del(&d->lent_pages, page_key(e->pg));
	*drop = e->pg;
	free(e);
	return true;
}

/* A borrower lets namings of pages lent to it go. */
void dist__on_lrelease(struct dist_part *d, int from, struct fl_reader *r)
{
	uint32_t n = fl_get_u32(r);
	struct vm_page **drop;
	size_t ndrop = 0;
	bool bad = false;

	if (r->failed || n == 0 || n > fl_reader_left(r) / 16 ||
	    fl_reader_left(r) != (size_t)n * 16) {
		dist__malformed(d);
		return;
	}
	if ((drop = malloc(n * sizeof *drop)) == NULL)
		return; /* the namings stay, their pages until the end */
	pthread_mutex_lock(&d->lock);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t key = fl_get_u64(r), k = fl_get_u64(r);
		struct lend *e = umap_get(&d->lends, key);
		struct vm_page *pg;
		/* (a part releases only what was lent to it) */
		if (e == NULL || !lend_back(d, e, from, k, &pg)) {
			bad = true;
			continue;
		}
		if (pg != NULL)
			drop[ndrop++] = pg;
	}
	pthread_mutex_unlock(&d->lock);
	if (bad)
		dist__malformed(d);
	/* Outside @lock: a page freed may be one lent on, whose borrow
	 * goes (borrow_gone). */
	for (size_t i = 0; i < ndrop; i++)
		vm__page_unref(drop[i], &d->p->budget);
	free(drop);
}

/* Under @lock: move @b's waiting threads onto *@ts (to resume once
 * @lock is let go); out of memory for the list, the rest stay parked
 * on @b. */
static void take_waiting(struct borrow *b, struct vm_thread ***ts, size_t *n,
			 size_t *cap)
{
	size_t k = 0;

	while (k < b->nwaiting && grow((void **)ts, cap, *n, sizeof **ts))
		(*ts)[(*n)++] = b->waiting[k++];
	if (k == 0)
		return; /* none (b->waiting may be NULL) */
	memmove(b->waiting, b->waiting + k,
		(b->nwaiting - k) * sizeof *b->waiting);
	b->nwaiting -= k;
}

/* Outside @lock: each runs its instruction again. */
static void resume_taken(struct vm_thread **ts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		vm_gsrc_resume(ts[i], 0, 0);
	free(ts);
}

/* The process ended here: threads waiting for lent bytes run on to see
 * it; and at its close every page lent and every pinned borrow goes. */
void dist__lent_wake_all(struct dist_part *d)
{
	struct vm_thread **ts = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < d->borrows.cap; i++)
		if (d->borrows.k[i] != 0)
			take_waiting(d->borrows.v[i], &ts, &n, &cap);
	pthread_mutex_unlock(&d->lock);
	resume_taken(ts, n);
}

void dist__lent_close(struct dist_part *d)
{
	struct vm_page **pages = NULL;
	struct borrow **pinned = NULL;
	size_t np = 0, nb = 0;

	pthread_mutex_lock(&d->lock);
	if (d->lends.n > 0)
		pages = malloc(d->lends.n * sizeof *pages);
	if (d->borrows.n > 0)
		pinned = malloc(d->borrows.n * sizeof *pinned);
	for (size_t i = 0; i < d->lends.cap; i++) {
		struct lend *e = d->lends.v[i];
		if (d->lends.k[i] == 0)
			continue;
		if (pages != NULL)
			pages[np++] = e->pg;
		free(e);
	}
	for (size_t i = 0; i < d->borrows.cap; i++) {
		struct borrow *b = d->borrows.v[i];
		if (d->borrows.k[i] == 0 || !b->pinned || pinned == NULL)
			continue;
		b->pinned = false;
		pinned[nb++] = b;
	}
	dist__umap_close(&d->lends);
	dist__umap_close(&d->lent_pages);
	pthread_mutex_unlock(&d->lock);
	for (size_t i = 0; i < np; i++)
		vm__page_unref(pages[i], &d->p->budget);
	for (size_t i = 0; i < nb; i++)
		vm__lent_unref(&pinned[i]->base);
	free(pages);
	free(pinned);
}

void dist__lend_lost(struct dist_part *d, int part)
{
	struct vm_thread **ts = NULL;
	size_t n = 0, cap = 0, nback = 0, ndrop = 0;
	uint64_t *back = NULL;
	struct vm_page **drop = NULL;

	pthread_mutex_lock(&d->lock);
	/* What was lent to it comes back: its namings went with it. (The
	 * keys first: umap_del moves entries.) */
	if (d->lent_to.n > 0) {
		back = malloc(d->lent_to.n * sizeof *back);
		drop = malloc(d->lent_to.n * sizeof *drop);
	}
	for (size_t j = 0; back != NULL && drop != NULL && j < d->lent_to.cap; j++)
		if (d->lent_to.k[j] != 0 && (d->lent_to.k[j] & 63) == (uint64_t)part)
			back[nback++] = d->lent_to.k[j];
	for (size_t i = 0; i < nback; i++) {
		struct lend *e = umap_get(&d->lends, back[i] >> 6);
		uintptr_t k = (uintptr_t)umap_get(&d->lent_to, back[i]);
		struct vm_page *pg;
		if (e != NULL && lend_back(d, e, part, k, &pg)) {
			d->st.lent_dropped += k;
			if (pg != NULL)
				drop[ndrop++] = pg;
		}
	}
	for (size_t j = 0; j < d->borrows.cap; j++) {
		struct borrow *b = d->borrows.v[j];
		size_t keep = 0;
		if (d->borrows.k[j] == 0)
			continue;
		/* Asks of the lost part for pages it re-lent us: dropped. */
		for (size_t i = 0; i < b->nremote; i++)
			if (b->remote[i].part != part)
				b->remote[keep++] = b->remote[i];
		b->nremote = keep;
		if (b->from != part || b->base.data != NULL)
			continue;
		/* Its bytes cannot come: as an LPAGE that says so. */
		b->failed = true;
		b->asked = false;
		take_waiting(b, &ts, &n, &cap);
	}
	pthread_mutex_unlock(&d->lock);
	/* Each faults: the lender is gone. */
	resume_taken(ts, n);
	for (size_t i = 0; i < ndrop; i++)
		vm__page_unref(drop[i], &d->p->budget);
	free(back);
	free(drop);
}
