/* The home side of a node: the master copies and the directory of the
 * pages homed here, and the requests other nodes send about them (GET,
 * DIFF, ATOMIC, NOTE_ACK).
 *
 * The directory classifies each page as ArgoDSM does, by two node masks:
 * its sharers (nodes that fetched a copy: one is private, more shared)
 * and its writers (none, one, many). A cache may keep its copy across an
 * acquire exactly when no node but itself writes the page: read-only
 * (no writer), private, or its own single-writer page. Writers only
 * grow. When a new writer makes some sharer's copy unsafe to keep, the
 * home sends that sharer a NOTE; every reply that completes a release
 * or an atomic touching the page (DIFF_ACK, ATOMIC_REPLY, the home's own
 * release) is held on the page until every NOTE about it was acked. So
 * a node that acquires after a release completed has heard of every
 * writer that release added: the invariant docs/memory.md leans on.
 *
 * Happy path of a DIFF: admitted once (below), merged byte for byte into
 * the master (runs from several writers of one page interleave: false
 * sharing costs diffs, not ping-pong), the sender recorded as a writer,
 * DIFF_ACK when no note is outstanding. An ATOMIC runs on the master
 * word, makes the home a writer of the page if it stored, and answers
 * the same way. A GET is answered at once with the bytes and the
 * classification; it is idempotent.
 *
 * At most once: a DIFF or ATOMIC is remembered per sender by its request
 * id until the sender's @done passes it. A duplicate of one remembered
 * is answered again if its reply went out (the atomic's same old value),
 * ignored if still held; one below @done is dropped. A sender that
 * leaves more than DSM_PEER_CACHE_MAX requests unanswered is refused.
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- Atomics on a word ---- */

static uint64_t load64(const uint8_t *p)
{
	return fl_load_u64(p);
}

static void store64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

bool dsm__atomic_stores(const uint8_t *page, uint32_t off, enum dsm_op op,
			uint64_t a)
{
	return op != DSM_CAS || load64(page + off) == a;
}

uint64_t dsm__atomic_run(uint8_t *page, uint32_t off, enum dsm_op op,
			 uint64_t a, uint64_t b, bool *stored)
{
	uint64_t old = load64(page + off);

	*stored = dsm__atomic_stores(page, off, op, a);
	switch (op) {
	case DSM_CAS:
		if (*stored)
			store64(page + off, b);
		break;
	case DSM_XADD:
		store64(page + off, old + a);
		break;
	case DSM_XCHG:
		store64(page + off, a);
		break;
	}
	return old;
}

/* ---- The reply cache ---- */

/* Forget what @from's @done says it no longer needs. */
static void observe_done(struct dsm_node *n, const struct dsm_msg *m)
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

static struct dsm_cached *cached(struct dsm_node *n, int from, uint64_t rid)
{
	struct dsm_peer *p = &n->peer[from];

	for (size_t i = 0; i < p->n; i++)
		if (p->c[i].rid == rid)
			return &p->c[i];
	return NULL;
}

static void reply(struct dsm_node *n, const struct dsm_page *pg, int to,
		  uint64_t rid, uint8_t type, uint64_t old)
{
	struct dsm_msg m = {.type = type, .rid = rid, .page = pg->page};

	if (type == DSM_MSG_DIFF_ACK) {
		m.type = DSM_MSG_DIFF_ACK;
		m.writers = pg->writers;
		m.dver = pg->dver;
	} else {
		m.type = DSM_MSG_ATOMIC_REPLY;
		m.old = old;
	}
	dsm__send(n, to, &m);
}

/* Whether @m is new; then it is remembered (*@out). Otherwise it was
 * answered again or dropped, and counted. */
static bool admit(struct dsm_node *n, const struct dsm_msg *m,
		  struct dsm_page *pg, struct dsm_cached **out)
{
	struct dsm_peer *p = &n->peer[m->from];
	struct dsm_cached *c;

	observe_done(n, m);
	if (m->rid < p->done) {
		n->st.dups++; /* its reply arrived: a late duplicate */
		return false;
	}
	if ((c = cached(n, m->from, m->rid)) != NULL) {
		n->st.dups++;
		if (c->done && c->type == m->type)
			reply(n, pg, m->from, m->rid,
			      c->type == DSM_MSG_DIFF ? DSM_MSG_DIFF_ACK
						      : DSM_MSG_ATOMIC_REPLY,
			      c->old);
		return false;
	}
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		struct dsm_cached *a;
		if (cap > DSM_PEER_CACHE_MAX ||
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

/* Undo admit() for the entry it just made (a later step had no memory). */
static void unadmit(struct dsm_node *n, int from)
{
	n->peer[from].n--;
	n->st.refused++;
}

/* ---- The directory ---- */

static void fire(struct dsm_node *n, struct dsm_page *pg,
		 const struct dsm_hold *h)
{
	struct dsm_cached *c = cached(n, h->to, h->rid);

	if (c != NULL)
		c->done = true;
	reply(n, pg, h->to, h->rid,
	      h->kind == DSM_HOLD_DIFF_ACK ? DSM_MSG_DIFF_ACK
					   : DSM_MSG_ATOMIC_REPLY,
	      h->old);
}

/* The sharers whose copy is safe to keep under @old writers but not
 * under @now: they must hear of it. */
static uint64_t must_note(const struct dsm_node *n, const struct dsm_page *pg,
			  uint64_t old, uint64_t now)
{
	uint64_t who = 0;

	for (int s = 0; s < n->nodes; s++) {
		uint64_t me = dsm__bit(s);
		if (s == n->self || !(pg->sharers & me))
			continue;
		if ((old & ~me) == 0 && (now & ~me) != 0)
			who |= me;
	}
	return who;
}

bool dsm__dir_write(struct dsm_node *n, struct dsm_page *pg, int writer,
		    const struct dsm_hold *h)
{
	uint64_t now = pg->writers | (writer >= 0 ? dsm__bit(writer) : 0);
	uint64_t who = must_note(n, pg, pg->writers, now);
	size_t k = (size_t)__builtin_popcountll(who);
	struct dsm_hold *held = NULL;

	/* Everything that can fail, first. */
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
	if (h != NULL && pg->notes_out + k > 0 &&
	    (held = malloc(sizeof *held)) == NULL)
		return false;

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
	if (pg->notes_out == 0) {
		if (h != NULL)
			fire(n, pg, h);
		return true;
	}
	if (h == NULL) {
		pg->local_holds++;
		n->outstanding++;
		return true;
	}
	*held = *h;
	held->next = NULL;
	*pg->holds_tail = held;
	pg->holds_tail = &held->next;
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
	struct dsm_page *pg = dsm__page(n, m->page, true);
	struct dsm_msg r = {.type = DSM_MSG_PAGE, .rid = m->rid, .page = m->page};

	observe_done(n, m);
	if (pg == NULL) {
		n->st.refused++;
		return;
	}
	pg->sharers |= dsm__bit(m->from);
	r.writers = pg->writers;
	r.sharers = pg->sharers;
	r.dver = pg->dver;
	r.bytes = pg->data;
	r.nbytes = DSM_PAGE_SIZE;
	dsm__send(n, m->from, &r);
}

void dsm__recv_diff(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = dsm__page(n, m->page, true);
	struct dsm_hold h = {.kind = DSM_HOLD_DIFF_ACK, .to = m->from,
			     .rid = m->rid};
	struct dsm_cached *c;

	if (pg == NULL) {
		n->st.refused++;
		return;
	}
	if (!admit(n, m, pg, &c))
		return;
	pg->sharers |= dsm__bit(m->from); /* a writer holds a copy */
	if (!dsm__dir_write(n, pg, m->from, &h)) {
		unadmit(n, m->from);
		return;
	}
	dsm__diff_apply(pg->data, m->bytes, m->nbytes);
}

void dsm__recv_atomic(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = dsm__page(n, m->page, true);
	struct dsm_hold h = {.kind = DSM_HOLD_ATOMIC_REPLY, .to = m->from,
			     .rid = m->rid};
	struct dsm_cached *c;
	bool stores, stored;

	if (pg == NULL) {
		n->st.refused++;
		return;
	}
	if (!admit(n, m, pg, &c))
		return;
	/* The home becomes the page's writer if the word changes; the
	 * reply waits for the notes that causes. Both before the store,
	 * so that a refusal leaves the word as it was. */
	stores = dsm__atomic_stores(pg->data, m->off, m->op, m->a);
	c->old = h.old = load64(pg->data + m->off);
	if (!dsm__dir_write(n, pg, stores ? n->self : -1, &h)) {
		unadmit(n, m->from);
		return;
	}
	dsm__atomic_run(pg->data, m->off, m->op, m->a, m->b, &stored);
	n->st.atomics_served++;
}

void dsm__recv_note_ack(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = NULL;
	size_t i;

	observe_done(n, m);
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
		pg->holds = h->next;
		fire(n, pg, h);
		free(h);
	}
	pg->holds_tail = &pg->holds;
	while (pg->local_holds > 0) {
		pg->local_holds--;
		dsm__outstanding_dec(n);
	}
}
