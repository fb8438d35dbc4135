/* The home side of a node: the master copies and the directory of the
 * pages homed here, the replies it owes and remembers, and the requests
 * other nodes send about its pages' bytes (GET, DIFF, ATOMIC, NOTE_ACK).
 * Sync ops (dsm_sync.c) and frees (dsm_free.c) use the same directory
 * and replies.
 *
 * The directory classifies each page as ArgoDSM does, by two node masks:
 * its sharers (nodes that fetched a copy: one is private, more shared)
 * and its writers (none, one, many). A cache may keep its copy across an
 * acquire exactly when no node but itself writes the page: read-only
 * (no writer), private, or its own single-writer page. Writers only
 * grow. When a new writer makes some sharer's copy unsafe to keep, the
 * home sends that sharer a NOTE; every reply that completes a release,
 * an atomic, a sync op or a free touching the page (DIFF_ACK,
 * ATOMIC_REPLY, SYNC_REPLY, FREE_REPLY, the home's own release) is held
 * on the page until every NOTE about it was acked. So a node that
 * acquires after a release completed has heard of every writer that
 * release added: the invariant docs/memory.md leans on.
 *
 * Happy path of a DIFF: admitted once (below), merged byte for byte into
 * the master (runs from several writers of one page interleave: false
 * sharing costs diffs, not ping-pong), the sender recorded as a writer,
 * DIFF_ACK when no note is outstanding. An ATOMIC is checked against the
 * home's mapping (io.map), runs on the master word, makes the home a
 * writer of the page if it stored, and answers the same way. A GET is
 * answered at once with the bytes, the page's access and (when the home
 * keeps them) its live blocks -- or UNMAPPED, recording no sharer; it is
 * idempotent.
 *
 * At most once: a DIFF, ATOMIC, SYNC or FREE is remembered per sender by
 * its request id until the sender's @done passes it. A duplicate of one
 * remembered is answered again if its reply went out (the same result,
 * value and flags), told QUEUED again if it waits in a word's queue,
 * ignored if its reply is still held; one below @done is dropped. A sender that
 * leaves more than DSM_PEER_CACHE_MAX requests unanswered (besides
 * queued ones) is refused.
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- Words ---- */

uint64_t dsm__load64(const uint8_t *p)
{
	return fl_load_u64(p);
}

void dsm__store64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

bool dsm__atomic_stores(const uint8_t *page, uint32_t off, enum dsm_op op,
			uint64_t a)
{
	return op != DSM_CAS || dsm__load64(page + off) == a;
}

uint64_t dsm__atomic_run(uint8_t *page, uint32_t off, enum dsm_op op,
			 uint64_t a, uint64_t b, bool *stored)
{
	uint64_t old = dsm__load64(page + off);

	*stored = dsm__atomic_stores(page, off, op, a);
	switch (op) {
	case DSM_CAS:
		if (*stored)
			dsm__store64(page + off, b);
		break;
	case DSM_XADD:
		dsm__store64(page + off, old + a);
		break;
	case DSM_XCHG:
		dsm__store64(page + off, a);
		break;
	}
	return old;
}

/* ---- The home's mapping ---- */

enum dsm_access dsm__home_map(struct dsm_node *n, uint64_t page, bool live,
			      uint32_t *nlive)
{
	enum dsm_access a;
	uint32_t k = 0;

	*nlive = 0;
	if (n->io.map == NULL)
		return DSM_MAP_RW;
	a = n->io.map(n->io.ctx, page, n->live, &k);
	if (a != DSM_MAP_RO && a != DSM_MAP_RW)
		return DSM_MAP_NONE;
	/* The callback is ours, but the copies it shapes go out: keep what
	 * goes on the wire well-formed whatever it said. */
	if (live && k <= DSM_LIVE_MAX) {
		uint32_t end = 0, i;
		for (i = 0; i < k; i++) {
			const struct dsm_extent *e = &n->live[i];
			if (e->len == 0 || e->off >= DSM_PAGE_SIZE ||
			    e->len > DSM_PAGE_SIZE - e->off || e->off < end)
				break;
			end = (uint32_t)e->off + e->len;
		}
		*nlive = i;
	}
	return a;
}

bool dsm__inside(const struct dsm_extent *live, uint32_t nlive, uint32_t off,
		 uint32_t len)
{
	for (uint32_t i = 0; i < nlive; i++)
		if (off >= live[i].off && off - live[i].off < live[i].len)
			return len <= live[i].len - (off - live[i].off);
	return false;
}

enum dsm_res dsm__word_check(struct dsm_node *n, uint64_t page, uint32_t off)
{
	uint32_t nlive;
	enum dsm_access a = dsm__home_map(n, page, true, &nlive);

	if (a == DSM_MAP_NONE)
		return DSM_UNMAPPED;
	if (a == DSM_MAP_RO)
		return DSM_RDONLY;
	if (nlive > 0 && !dsm__inside(n->live, nlive, off, 8))
		return DSM_OUTSIDE;
	return DSM_OK;
}

/* ---- The reply cache ---- */

void dsm__observe_done(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_peer *p = &n->peer[m->from];

	if (m->done <= p->done)
		return;
	p->done = m->done;
	for (size_t i = 0; i < p->n;)
		if (p->c[i].rid < p->done && p->c[i].done)
			p->c[i] = p->c[--p->n];
		else
			i++;
}

struct dsm_cached *dsm__cached(struct dsm_node *n, int from, uint64_t rid)
{
	struct dsm_peer *p = &n->peer[from];

	for (size_t i = 0; i < p->n; i++)
		if (p->c[i].rid == rid)
			return &p->c[i];
	return NULL;
}

/* The reply to a request of @type. */
static uint8_t reply_type(uint8_t type)
{
	switch (type) {
	case DSM_MSG_DIFF:
		return DSM_MSG_DIFF_ACK;
	case DSM_MSG_ATOMIC:
		return DSM_MSG_ATOMIC_REPLY;
	case DSM_MSG_SYNC:
		return DSM_MSG_SYNC_REPLY;
	default:
		return DSM_MSG_FREE_REPLY;
	}
}

/* Send the reply of @type about @page with these values. */
static void send_reply(struct dsm_node *n, int to, uint8_t type, uint64_t rid,
		       uint64_t page, enum dsm_res res, uint8_t flags,
		       uint64_t old, uint64_t first, uint64_t npages)
{
	struct dsm_msg m = {.type = type, .rid = rid, .page = page};
	struct dsm_page *pg;

	switch (type) {
	case DSM_MSG_DIFF_ACK:
		if ((pg = dsm__page(n, page, false)) != NULL) {
			m.writers = pg->writers;
			m.dver = pg->dver;
		}
		break;
	case DSM_MSG_ATOMIC_REPLY:
		m.res = dsm__res_code(res);
		m.old = old;
		break;
	case DSM_MSG_SYNC_REPLY:
		m.res = dsm__res_code(res);
		m.flags = flags;
		m.old = old;
		break;
	default:
		m.res = dsm__res_code(res);
		m.first = first;
		m.npages = npages;
		break;
	}
	dsm__send(n, to, &m);
}

bool dsm__admit(struct dsm_node *n, const struct dsm_msg *m,
		struct dsm_cached **out)
{
	struct dsm_peer *p = &n->peer[m->from];
	struct dsm_cached *c;

	dsm__observe_done(n, m);
	if (m->rid < p->done) {
		n->st.dups++; /* its reply arrived, or it waits queued */
		return false;
	}
	if ((c = dsm__cached(n, m->from, m->rid)) != NULL) {
		n->st.dups++;
		if (c->type != m->type)
			return false;
		if (c->done) {
			send_reply(n, m->from, reply_type(c->type), m->rid, m->page,
				   c->res, c->flags, c->old, c->first, c->npages);
		} else if (c->queued) {
			struct dsm_msg q = {.type = DSM_MSG_QUEUED, .rid = m->rid,
					    .page = m->page};
			dsm__send(n, m->from, &q);
		}
		return false;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		struct dsm_cached *a;
		if (p->n - p->nqueued >= DSM_PEER_CACHE_MAX ||
		    (a = realloc(p->c, cap * sizeof *a)) == NULL) {
			n->st.refused++;
			return false;
		}
		p->c = a;
		p->cap = cap;
	}
	c = &p->c[p->n++];
	memset(c, 0, sizeof *c);
	c->rid = m->rid;
	c->type = m->type;
	*out = c;
	return true;
}

void dsm__unadmit(struct dsm_node *n, int from)
{
	n->peer[from].n--;
	n->st.refused++;
}

/* ---- Replies owed ---- */

struct dsm_reply *dsm__reply_new(uint8_t type, int to, uint64_t rid,
				 uint64_t page)
{
	struct dsm_reply *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->wait = 1;
	r->type = type;
	r->to = (uint16_t)to;
	r->rid = rid;
	r->page = page;
	r->res = DSM_OK;
	return r;
}

void dsm__reply_done(struct dsm_node *n, struct dsm_reply *r)
{
	struct dsm_cached *c;

	if (--r->wait > 0)
		return;
	if ((c = dsm__cached(n, r->to, r->rid)) != NULL) {
		c->done = true;
		c->res = r->res;
		c->flags = r->flags;
		c->old = r->old;
		c->first = r->first;
		c->npages = r->npages;
	}
	send_reply(n, r->to, r->type, r->rid, r->page, r->res, r->flags, r->old,
		   r->first, r->npages);
	free(r);
}

bool dsm__hold(struct dsm_node *n, struct dsm_page *pg, struct dsm_reply *r)
{
	struct dsm_hold *h;

	if (pg->notes_out == 0)
		return true;
	if (r == NULL) {
		pg->local_holds++;
		n->outstanding++;
		return true;
	}
	if (!r->linked) {
		h = &r->link;
		h->owned = false;
		r->linked = true;
	} else if ((h = malloc(sizeof *h)) != NULL) {
		h->owned = true;
	} else {
		return false;
	}
	h->r = r;
	h->next = NULL;
	*pg->holds_tail = h;
	pg->holds_tail = &h->next;
	r->wait++;
	return true;
}

/* ---- The directory ---- */

/* The sharers whose copy is safe to keep under @old writers but not
 * under @now: they must hear of it. */
static uint64_t must_note(const struct dsm_node *n, const struct dsm_page *pg,
			  uint64_t old, uint64_t now)
{
	uint64_t who = 0;

	for (int s = 0; s < n->nodes; s++) {
		uint64_t me = dsm__bit(s);
		if (s == n->self || !(pg->sharers & me) || (n->lost & me))
			continue; /* a lost node's copy is gone with it */
		if ((old & ~me) == 0 && (now & ~me) != 0)
			who |= me;
	}
	return who;
}

bool dsm__dir_write(struct dsm_node *n, struct dsm_page *pg, int writer)
{
	uint64_t now = pg->writers | (writer >= 0 ? dsm__bit(writer) : 0);
	uint64_t who = must_note(n, pg, pg->writers, now);
	size_t k = (size_t)__builtin_popcountll(who);

	if (n->nnotes + k > n->capnotes) {
		size_t cap = n->capnotes ? n->capnotes : 16;
		struct dsm_note *a;
		while (cap < n->nnotes + k)
			cap *= 2;
		if ((a = realloc(n->notes, cap * sizeof *a)) == NULL)
			return false;
		n->notes = a;
		n->capnotes = cap;
	}
	if (now != pg->writers) {
		pg->writers = now;
		pg->dver++;
	}
	for (int s = 0; s < n->nodes; s++) {
		struct dsm_msg m = {.type = DSM_MSG_NOTE, .page = pg->page,
				    .writers = pg->writers, .dver = pg->dver};
		if (!(who & dsm__bit(s)))
			continue;
		m.rid = n->next_rid++;
		n->notes[n->nnotes++] = (struct dsm_note){m.rid, (uint16_t)s, pg};
		pg->notes_out++;
		n->st.notes_sent++;
		dsm__send(n, s, &m);
	}
	return true;
}

/* ---- Initial contents ---- */

enum dsm_res dsm_home_load(struct dsm_node *n, uint64_t page, uint32_t off,
			   uint32_t len, const void *in)
{
	struct dsm_page *pg;

	if (off > DSM_PAGE_SIZE || len > DSM_PAGE_SIZE - off ||
	    page >= DSM_PAGE_LIMIT || dsm__home(n, page) != n->self)
		return DSM_BAD;
	if ((pg = dsm__page(n, page, true)) == NULL)
		return DSM_NOMEM;
	if (pg->sharers != 0 || pg->writers != 0)
		return DSM_BAD; /* too late: someone holds or wrote a copy */
	memcpy(pg->data + off, in, len);
	return DSM_OK;
}

/* ---- Handlers ---- */

void dsm__recv_get(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_msg r = {.type = DSM_MSG_PAGE, .rid = m->rid, .page = m->page};
	uint8_t live[4 * DSM_LIVE_MAX];
	struct dsm_page *pg;
	uint32_t nlive;
	enum dsm_access a;

	dsm__observe_done(n, m);
	if ((a = dsm__home_map(n, m->page, true, &nlive)) == DSM_MAP_NONE) {
		r.type = DSM_MSG_UNMAPPED; /* no copy: no sharer */
		dsm__send(n, m->from, &r);
		return;
	}
	if ((pg = dsm__page(n, m->page, true)) == NULL) {
		n->st.refused++;
		return;
	}
	pg->sharers |= dsm__bit(m->from);
	for (uint32_t i = 0; i < nlive; i++) {
		uint8_t *e = live + 4 * i;
		e[0] = (uint8_t)n->live[i].off;
		e[1] = (uint8_t)(n->live[i].off >> 8);
		e[2] = (uint8_t)n->live[i].len;
		e[3] = (uint8_t)(n->live[i].len >> 8);
	}
	r.writers = pg->writers;
	r.sharers = pg->sharers;
	r.dver = pg->dver;
	r.access = (uint8_t)a;
	r.nlive = (uint16_t)nlive;
	r.live = live;
	r.bytes = pg->data;
	r.nbytes = DSM_PAGE_SIZE;
	dsm__send(n, m->from, &r);
}

void dsm__recv_diff(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = dsm__page(n, m->page, true);
	struct dsm_reply *r;
	struct dsm_cached *c;

	if (pg == NULL) {
		n->st.refused++;
		return;
	}
	if (!dsm__admit(n, m, &c))
		return;
	r = dsm__reply_new(DSM_MSG_DIFF_ACK, m->from, m->rid, m->page);
	pg->sharers |= dsm__bit(m->from); /* a writer holds a copy */
	if (r == NULL || !dsm__dir_write(n, pg, m->from)) {
		free(r);
		dsm__unadmit(n, m->from);
		return;
	}
	/* A diff of a page since unmapped lands in bytes no block holds:
	 * merged all the same (a late writer raced with the free). */
	dsm__diff_apply(pg->data, m->bytes, m->nbytes);
	(void)dsm__hold(n, pg, r); /* its first hold cannot fail */
	dsm__reply_done(n, r);
}

void dsm__recv_atomic(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = dsm__page(n, m->page, true);
	struct dsm_reply *r;
	struct dsm_cached *c;
	bool stores, stored;

	if (pg == NULL) {
		n->st.refused++;
		return;
	}
	if (!dsm__admit(n, m, &c))
		return;
	if ((r = dsm__reply_new(DSM_MSG_ATOMIC_REPLY, m->from, m->rid,
				m->page)) == NULL) {
		dsm__unadmit(n, m->from);
		return;
	}
	if ((r->res = dsm__word_check(n, m->page, m->off)) != DSM_OK) {
		dsm__reply_done(n, r);
		return;
	}
	/* The home becomes the page's writer if the word changes; the
	 * reply waits for the notes that causes. Both before the store,
	 * so that a refusal leaves the word as it was. */
	stores = dsm__atomic_stores(pg->data, m->off, m->op, m->a);
	if (!dsm__dir_write(n, pg, stores ? n->self : -1)) {
		free(r);
		dsm__unadmit(n, m->from);
		return;
	}
	r->old = dsm__atomic_run(pg->data, m->off, m->op, m->a, m->b, &stored);
	n->st.atomics_served++;
	(void)dsm__hold(n, pg, r);
	dsm__reply_done(n, r);
}

void dsm__recv_note_ack(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = NULL;
	size_t i;

	dsm__observe_done(n, m);
	for (i = 0; i < n->nnotes; i++)
		if (n->notes[i].rid == m->rid && n->notes[i].to == m->from)
			break;
	if (i == n->nnotes || n->notes[i].pg->page != m->page) {
		n->st.dups++;
		return;
	}
	pg = n->notes[i].pg;
	n->notes[i] = n->notes[--n->nnotes];
	if (--pg->notes_out > 0)
		return;
	while (pg->holds != NULL) {
		struct dsm_hold *h = pg->holds;
		struct dsm_reply *r = h->r;
		pg->holds = h->next;
		if (h->owned)
			free(h);
		else
			r->linked = false;
		dsm__reply_done(n, r);
	}
	pg->holds_tail = &pg->holds;
	while (pg->local_holds > 0) {
		pg->local_holds--;
		dsm__outstanding_dec(n);
	}
}
