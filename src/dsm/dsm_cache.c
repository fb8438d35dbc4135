/* The caching side of a node: reads and writes, release, acquire and
 * atomics as the caller sees them, and the replies that complete them
 * (PAGE, UNMAPPED, DIFF_ACK, NOTE, ATOMIC_REPLY).
 *
 * Happy path of a read of a page homed elsewhere: a miss sends GET and
 * parks the caller on the page; PAGE installs the copy with what the
 * directory says of its writers, and wakes every caller parked on it;
 * their calls, made again, hit. A write hits the same way; the first
 * write since the last release keeps a twin and puts the page on the
 * dirty list. dsm_release() diffs each dirty page against its twin,
 * sends DIFF home, and completes when @outstanding falls to zero: every
 * diff acked (the home acks only once every sharer acked the notes the
 * diff caused). dsm_acquire() releases first if needed; then each copy
 * fetched before it whose writers (as last heard from its home) include
 * another node is stale to its caller (stale_to: the caller's acquire
 * count against the copy's), dropped at that caller's next access and
 * fetched again, while callers that have not acquired since keep
 * reading it; the buffer of a dropped copy is kept and the next PAGE
 * refills it in place, so an address dsm_map() handed out stays valid
 * memory. A page's writers only grow, and the home tells every sharer
 * whose copy stops being safe to keep before it acks the writer's
 * release: so a node acquiring after that release knows.
 *
 * Mapping: a copy carries the access its home gave it (read-only or
 * writable) and, under --check, the page's live blocks, both as of the
 * fetch; a page the home answered UNMAPPED is remembered so until the
 * next acquire (it may be mapped again by then). Whatever changes a
 * page's mapping at its home -- a galloc's zero-fill, a free, an unmap --
 * is a write by the home, so sharers drop their copy at their next
 * acquire and fetch the new mapping with it.
 *
 * At the home itself a read or write touches the master copy, checked
 * against io.map at each call; a write records the home as a writer
 * (dsm_home.c), and if that needs notes, the home's own next release
 * waits for them.
 *
 * Failure modes: duplicated or stale replies match no request and are
 * counted (dsm.c); a PAGE that answers a GET sent before an acquire is
 * installed all the same, and waiters to whom it is stale fetch again
 * (an UNMAPPED then is dropped: a galloc may have mapped the page
 * since); out of memory (the host's, or the process's limit as
 * io.charge says: copies and twins count) is DSM_NOMEM to the caller,
 * nothing done -- for a PAGE that finds none, to each caller waiting on
 * it, which may try again (a prefetched one nobody waits for is
 * dropped).
 * There are no drops yet, hence no retransmission.
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>
#include <string.h>

static bool others_write(const struct dsm_node *n, const struct dsm_page *pg)
{
	return (pg->writers & ~dsm__bit(n->self)) != 0;
}

/* @pg's copy was fetched before @w's last acquire, which it would not
 * have survived: it must not serve @w. (A GET sent with the node's
 * acquire count at e is answered with the home's bytes after every
 * release that preceded acquires 1..e; @w's last acquire is w->acq.) */
static bool stale_to(const struct dsm_node *n, const struct dsm_page *pg,
		     const struct dsm_wait *w)
{
	return pg->data != NULL && pg->fetch_epoch < w->acq &&
	       others_write(n, pg);
}

/* A GET of @pg to @home; false: no memory for the request. */
static bool send_get(struct dsm_node *n, struct dsm_page *pg, int home)
{
	struct dsm_msg m = {.type = DSM_MSG_GET, .page = pg->page};

	if (!dsm__req_add(n, DSM_MSG_GET, home, pg->page, NULL, &m.rid))
		return false;
	pg->fetch_rid = m.rid;
	pg->fetch_epoch = n->acq_epoch;
	dsm__send(n, home, &m);
	return true;
}

/* A miss on @page right after one on the page before it (a copy there,
 * or its GET in flight) is a scan: GET the next DSM_PREFETCH pages of
 * the same home too, with no caller waiting, so the scan waits about a
 * round trip per DSM_PREFETCH pages instead of one a page. Pages this
 * node has (fresh to @w), asks for already, or was told are unmapped
 * are skipped; a prefetched copy that finds no memory is dropped
 * (dsm__recv_page). */
static void prefetch(struct dsm_node *n, const struct dsm_wait *w,
		     uint64_t page, int home)
{
	struct dsm_page *prev = page > 0 ? dsm__page(n, page - 1, false) : NULL;
	const int64_t room = 2 * DSM_PREFETCH * (int64_t)DSM_PAGE_SIZE;

	if (prev == NULL || (prev->data == NULL && prev->fetch_rid == 0))
		return;
	/* Only with room to spare under the process's limit: a guess must
	 * not take the memory a page it asks for next would need. */
	if (n->io.room != NULL && n->io.room(n->io.ctx) < room)
		return;
	for (uint64_t q = page + 1;
	     q <= page + DSM_PREFETCH && q < DSM_PAGE_LIMIT; q++) {
		struct dsm_page *pg;
		if (dsm__home(n, q) != home || (pg = dsm__page(n, q, true)) == NULL)
			return;
		if (pg->fetch_rid != 0 || pg->gone)
			continue;
		/* A copy stale to the scanner goes (unless the node has
		 * unreleased bytes in it): others who may still read it get
		 * the newer one. */
		if (pg->data != NULL &&
		    (!stale_to(n, pg, w) || pg->dirty || pg->diff_inflight))
			continue;
		if (pg->data != NULL)
			dsm__drop_copy(n, pg);
		if (!send_get(n, pg, home))
			return;
		n->st.prefetched++;
	}
}

static enum dsm_res fetch(struct dsm_node *n, struct dsm_page *pg,
			  struct dsm_wait *w, int home)
{
	if (pg->fetch_rid == 0) {
		if (!send_get(n, pg, home))
			return DSM_NOMEM;
		prefetch(n, w, pg->page, home);
	}
	w->next = pg->waiters;
	pg->waiters = w;
	return DSM_WAIT;
}

/* The page for an access, or a result to return: mapped (writable for
 * @write) as the home says, and with @live [@off, @off + @len) inside
 * one of its live blocks when the home keeps them. */
static enum dsm_res access_page(struct dsm_node *n, struct dsm_wait *w,
				uint64_t page, uint32_t off, uint32_t len,
				bool write, bool live, struct dsm_page **out)
{
	struct dsm_page *pg;
	int home;

	if (off > DSM_PAGE_SIZE || len > DSM_PAGE_SIZE - off ||
	    page >= DSM_PAGE_LIMIT || (home = dsm__home(n, page)) < 0)
		return DSM_BAD;
	if (home == n->self) {
		uint32_t nlive;
		enum dsm_access a = dsm__home_map(n, page, live, &nlive);
		if (a == DSM_MAP_NONE)
			return DSM_UNMAPPED;
		if (write && a == DSM_MAP_RO)
			return DSM_RDONLY;
		if (nlive > 0 && !dsm__inside(n->live, nlive, off, len))
			return DSM_OUTSIDE;
		if ((*out = dsm__page(n, page, true)) == NULL)
			return DSM_NOMEM;
		return DSM_OK;
	}
	if (dsm__lost(n, home))
		return DSM_LOST;
	if ((*out = pg = dsm__page(n, page, true)) == NULL)
		return DSM_NOMEM;
	if (stale_to(n, pg, w)) {
		/* Bytes other threads wrote into it go home first. */
		if (pg->dirty || pg->diff_inflight) {
			enum dsm_res r = dsm_release(n, w);
			if (r != DSM_OK)
				return r;
		}
		dsm__drop_copy(n, pg);
	}
	if (pg->data == NULL && pg->nomem) { /* no memory for the copy */
		pg->nomem = false;
		return DSM_NOMEM;
	}
	if (pg->data == NULL)
		return pg->gone ? DSM_UNMAPPED : fetch(n, pg, w, home);
	if (write && pg->access == DSM_MAP_RO)
		return DSM_RDONLY;
	if (live && pg->nlive > 0 && !dsm__inside(pg->live, pg->nlive, off, len))
		return DSM_OUTSIDE;
	return DSM_OK;
}

enum dsm_res dsm_map(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		     bool write, uint32_t off, uint32_t len,
		     const uint8_t **data)
{
	struct dsm_page *pg;
	enum dsm_res r = access_page(n, w, page, off, len, write, true, &pg);

	if (r == DSM_OK)
		*data = pg->data;
	return r;
}

bool dsm_missing(struct dsm_node *n, const struct dsm_wait *w, uint64_t page)
{
	int home = page < DSM_PAGE_LIMIT ? dsm__home(n, page) : -1;
	struct dsm_page *pg;

	if (home < 0 || home == n->self || dsm__lost(n, home))
		return false;
	pg = dsm__page(n, page, false);
	return pg == NULL || (pg->data == NULL && !pg->gone) ||
	       stale_to(n, pg, w);
}

enum dsm_res dsm_read(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		      uint32_t off, uint32_t len, void *out)
{
	struct dsm_page *pg;
	enum dsm_res r = access_page(n, w, page, off, len, false, false, &pg);

	if (r != DSM_OK)
		return r;
	memcpy(out, pg->data + off, len);
	return DSM_OK;
}

/* @page ready to take writes of [@off, @off + @len) (access_page's
 * checks): at its home the directory told of this node's write, at a
 * cache its twin kept from the first write after a release. */
static enum dsm_res begin_write(struct dsm_node *n, struct dsm_wait *w,
				uint64_t page, uint32_t off, uint32_t len,
				struct dsm_page **out)
{
	struct dsm_page *pg;
	enum dsm_res r = access_page(n, w, page, off, len, true, false, &pg);

	if (r != DSM_OK)
		return r;
	if (dsm__home(n, page) == n->self) {
		if (!dsm__dir_write(n, pg, n->self))
			return DSM_NOMEM;
		(void)dsm__hold(n, pg, NULL);
	} else if (!pg->dirty) {
		if (!dsm__charge_page(n))
			return DSM_NOMEM;
		pg->twin = malloc(DSM_PAGE_SIZE);
		if (pg->twin == NULL) {
			dsm__credit_page(n);
			return DSM_NOMEM;
		}
		memcpy(pg->twin, pg->data, DSM_PAGE_SIZE);
		pg->dirty = true;
		pg->dnext = n->dirty;
		n->dirty = pg;
	}
	*out = pg;
	return DSM_OK;
}

enum dsm_res dsm_write(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		       uint32_t off, uint32_t len, const void *in)
{
	struct dsm_page *pg;
	enum dsm_res r = begin_write(n, w, page, off, len, &pg);

	if (r == DSM_OK)
		memcpy(pg->data + off, in, len);
	return r;
}

/* Word by word, then byte by byte inside the words that differ. */
enum dsm_res dsm_write_diff(struct dsm_node *n, struct dsm_wait *w,
			    uint64_t page, const uint8_t *now,
			    const uint8_t *was)
{
	struct dsm_page *pg;
	enum dsm_res r;

	if (memcmp(now, was, DSM_PAGE_SIZE) == 0)
		return DSM_OK;
	if ((r = begin_write(n, w, page, 0, DSM_PAGE_SIZE, &pg)) != DSM_OK)
		return r;
	for (uint32_t i = 0; i < DSM_PAGE_SIZE; i += 8) {
		uint64_t a, b;
		memcpy(&a, now + i, 8);
		memcpy(&b, was + i, 8);
		if (a == b)
			continue;
		for (uint32_t k = i; k < i + 8; k++)
			if (now[k] != was[k])
				pg->data[k] = now[k];
	}
	return DSM_OK;
}

/* ---- Release ---- */

/* Send @pg's diff home (or nothing, if its bytes came back to the
 * twin's); false: no memory, @pg stays dirty. */
static bool send_diff(struct dsm_node *n, struct dsm_page *pg)
{
	struct fl_buf runs;
	struct dsm_msg m = {.type = DSM_MSG_DIFF, .page = pg->page};
	int home = dsm__home(n, pg->page);
	size_t changed;

	fl_buf_init(&runs);
	changed = dsm__diff_encode(pg->twin, pg->data, &runs);
	if (fl_buf_failed(&runs))
		return false;
	if (changed > 0) {
		if (!dsm__req_add(n, DSM_MSG_DIFF, home, pg->page, NULL, &m.rid)) {
			fl_buf_close(&runs);
			return false;
		}
		m.bytes = runs.data;
		m.nbytes = runs.len;
		dsm__send(n, home, &m);
		pg->diff_inflight = true;
		n->outstanding++;
		n->st.diffs_sent++;
		n->st.diff_bytes += changed;
	}
	fl_buf_close(&runs);
	free(pg->twin);
	dsm__credit_page(n);
	pg->twin = NULL;
	pg->dirty = false;
	return true;
}

enum dsm_res dsm_release(struct dsm_node *n, struct dsm_wait *w)
{
	struct dsm_page **pp = &n->dirty;

	while (*pp != NULL) {
		struct dsm_page *pg = *pp;
		/* One diff of a page in flight at a time: two could reach
		 * the home out of order, the older bytes last. */
		if (pg->diff_inflight) {
			pp = &pg->dnext;
			continue;
		}
		if (dsm__lost(n, dsm__home(n, pg->page))) {
			/* its home is gone, and these bytes with it */
			free(pg->twin);
			dsm__credit_page(n);
			pg->twin = NULL;
			pg->dirty = false;
		} else if (!send_diff(n, pg)) {
			return DSM_NOMEM;
		}
		*pp = pg->dnext;
		pg->dnext = NULL;
	}
	if (n->dirty == NULL && n->outstanding == 0)
		return DSM_OK;
	/* Woken when outstanding reaches 0 (a page left dirty behind an
	 * in-flight diff has one too: its ack is outstanding). */
	w->next = n->rel_waiters;
	n->rel_waiters = w;
	return DSM_WAIT;
}

/* ---- Acquire ---- */

enum dsm_res dsm_acquire(struct dsm_node *n, struct dsm_wait *w)
{
	enum dsm_res r = dsm_release(n, w);

	if (r != DSM_OK)
		return r;
	w->acq = ++n->acq_epoch; /* stale_to: copies go at @w's next use */
	for (size_t i = 0; i < n->tab_cap; i++)
		for (struct dsm_page *pg = n->tab[i]; pg != NULL; pg = pg->hnext)
			pg->gone = false; /* maybe mapped again since */
	return DSM_OK;
}

void dsm__drop_copy(struct dsm_node *n, struct dsm_page *pg)
{
	pg->stale = pg->data; /* kept: dsm_map's addresses */
	pg->data = NULL;
	n->st.invalidations++;
}

/* ---- Atomics ---- */

enum dsm_res dsm_atomic(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
			uint32_t off, enum dsm_op op, uint64_t a, uint64_t b,
			uint64_t *old)
{
	enum dsm_res r;
	int home;

	if (off % 8 != 0 || off > DSM_PAGE_SIZE - 8 || (unsigned)op > DSM_XCHG ||
	    page >= DSM_PAGE_LIMIT || (home = dsm__home(n, page)) < 0)
		return DSM_BAD;
	switch (w->phase) {
	case DSM_PH_START:
		if (dsm__lost(n, home))
			return DSM_LOST;
		if ((r = dsm_release(n, w)) != DSM_OK)
			return r;
		if (home == n->self) {
			struct dsm_page *pg;
			bool stored;
			if ((r = dsm__word_check(n, page, off)) != DSM_OK)
				return r;
			if ((pg = dsm__page(n, page, true)) == NULL)
				return DSM_NOMEM;
			/* The word changes under every cached copy: the home
			 * is its writer. If that needs notes, the acquire
			 * below waits for them (outstanding). */
			if (dsm__atomic_stores(pg->data, off, op, a)) {
				if (!dsm__dir_write(n, pg, n->self))
					return DSM_NOMEM;
				(void)dsm__hold(n, pg, NULL);
			}
			w->old = dsm__atomic_run(pg->data, off, op, a, b, &stored);
			w->res = DSM_OK;
		} else {
			struct dsm_msg m = {.type = DSM_MSG_ATOMIC,
					    .page = page,
					    .op = (uint8_t)op,
					    .off = (uint16_t)off,
					    .a = a,
					    .b = b};
			if (!dsm__req_add(n, DSM_MSG_ATOMIC, home, page, w, &m.rid))
				return DSM_NOMEM;
			dsm__send(n, home, &m);
			w->phase = DSM_PH_REMOTE;
			return DSM_WAIT;
		}
		w->phase = DSM_PH_ACQUIRE;
		break;
	case DSM_PH_REMOTE:
		return DSM_WAIT; /* not woken yet: the wake still follows */
	default:
		break;
	}
	if (w->res != DSM_OK) { /* the home refused it: nothing ran */
		w->phase = DSM_PH_START;
		return (enum dsm_res)w->res;
	}
	if ((r = dsm_acquire(n, w)) != DSM_OK)
		return r;
	*old = w->old;
	w->phase = DSM_PH_START;
	return DSM_OK;
}

/* ---- Replies ---- */

/* Take the newer of what we knew and what @m says of the writers. */
static void learn(struct dsm_page *pg, const struct dsm_msg *m)
{
	if (m->dver > pg->dver) {
		pg->writers = m->writers;
		pg->dver = m->dver;
	}
}

void dsm__recv_page(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req rq;
	struct dsm_page *pg;

	if (!dsm__req_take(n, m->rid, DSM_MSG_GET, m->from, &rq) ||
	    rq.page != m->page ||
	    (pg = dsm__page(n, m->page, false)) == NULL || pg->fetch_rid != m->rid) {
		n->st.dups++;
		return;
	}
	pg->fetch_rid = 0;
	learn(pg, m);
	pg->sharers = m->sharers;
	/* Served maybe before an acquire made since the GET: it still
	 * serves callers that have not acquired since (stale_to). */
	if (pg->data == NULL) {
		uint8_t *buf = pg->stale;
		struct dsm_extent *live = NULL;
		if (buf == NULL && dsm__charge_page(n) &&
		    (buf = malloc(DSM_PAGE_SIZE)) == NULL)
			dsm__credit_page(n);
		if (m->nlive > 0 && buf != NULL &&
		    (live = malloc(m->nlive * sizeof *live)) == NULL) {
			if (pg->stale == NULL) {
				free(buf);
				dsm__credit_page(n);
			}
			buf = NULL;
		}
		if (buf == NULL && pg->waiters == NULL) {
			n->st.prefetch_dropped++; /* nobody asked for it yet */
		} else if (buf == NULL) { /* its waiters fail: DSM_NOMEM */
			pg->nomem = true;
			n->st.refused++;
		}
		if (buf != NULL) {
			memcpy(buf, m->bytes, DSM_PAGE_SIZE);
			for (uint32_t i = 0; i < m->nlive; i++) {
				uint32_t e = fl_load_u32(m->live + 4 * i);
				live[i].off = (uint16_t)e;
				live[i].len = (uint16_t)(e >> 16);
			}
			free(pg->live);
			pg->live = live;
			pg->nlive = m->nlive;
			pg->access = m->access;
			pg->gone = false;
			pg->data = buf;
			pg->stale = NULL;
			n->st.pages_fetched++;
		}
	}
	dsm__wake_all(n, &pg->waiters); /* a miss again fetches again */
}

void dsm__recv_unmapped(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req rq;
	struct dsm_page *pg;

	if (!dsm__req_take(n, m->rid, DSM_MSG_GET, m->from, &rq) ||
	    rq.page != m->page ||
	    (pg = dsm__page(n, m->page, false)) == NULL || pg->fetch_rid != m->rid) {
		n->st.dups++;
		return;
	}
	pg->fetch_rid = 0;
	/* As for a page: an acquire since the GET may have let in a galloc
	 * that maps it again; then ask again. */
	if (pg->data == NULL && pg->fetch_epoch == n->acq_epoch)
		pg->gone = true;
	dsm__wake_all(n, &pg->waiters);
}

void dsm__recv_diff_ack(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req rq;
	struct dsm_page *pg;

	if (!dsm__req_take(n, m->rid, DSM_MSG_DIFF, m->from, &rq) ||
	    rq.page != m->page || (pg = dsm__page(n, m->page, false)) == NULL) {
		n->st.dups++;
		return;
	}
	learn(pg, m);
	pg->diff_inflight = false;
	dsm__outstanding_dec(n);
}

void dsm__recv_note(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = dsm__page(n, m->page, false);
	struct dsm_msg ack = {.type = DSM_MSG_NOTE_ACK, .rid = m->rid,
			      .page = m->page};

	/* Idempotent: a duplicate changes nothing and is acked again. A
	 * page we never asked for has no copy to keep: nothing to learn. */
	if (pg != NULL)
		learn(pg, m);
	dsm__send(n, m->from, &ack);
}

void dsm__recv_atomic_reply(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req rq;

	if (!dsm__req_take(n, m->rid, DSM_MSG_ATOMIC, m->from, &rq) ||
	    rq.page != m->page || rq.w == NULL) {
		n->st.dups++;
		return;
	}
	rq.w->old = m->old;
	rq.w->res = dsm__code_res(m->res);
	rq.w->phase = DSM_PH_ACQUIRE;
	n->io.wake(n->io.ctx, rq.w);
}
