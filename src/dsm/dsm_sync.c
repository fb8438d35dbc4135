/* Blocking synchronisation at a word's home: lock, unlock, wait and wake
 * (dsm_sync), the queues of callers they keep there, and their messages
 * (SYNC, SYNC_REPLY, QUEUED, SYNC_ACK).
 *
 * The word lives in its page's master copy; each word has one FIFO
 * queue at its home (entries on the page's list, in arrival order),
 * where home-local callers (their struct dsm_wait) and other nodes'
 * requests (sender and request id) wait alike. The semantics are
 * vm_sync.c's: a mutex word is 0 free, 1 locked, 2 locked with lockers
 * queued; unlock hands the mutex to the first queued locker (the word
 * stays locked: 2 while more wait, else 1) or frees it (0); unlock of 0
 * is DSM_NOTLOCKED; wait queues if the word equals its argument -- the
 * compare and the enqueue one step, under the node's one-at-a-time
 * rule, so a wake that follows a store cannot be missed; wake answers up
 * to n waiters of the word, first queued first.
 *
 * Happy path of a remote lock: the caller releases, sends SYNC; the home
 * admits it once (the reply cache, dsm_home.c), finds the word 0, stores
 * 1 (a write by the home: sharers are noted) and answers SYNC_REPLY once
 * the page's notes are acked; the caller acquires. Contended: the home
 * stores 2, queues the request and sends QUEUED, on which the caller's
 * node calls io.queued (a driver then counts the caller as blocked on
 * another caller, not on the network); a later unlock dequeues it and
 * answers it with SYNC_REPLY. A duplicate of a queued request is told
 * QUEUED again, never queued twice; its one reply goes when it is
 * answered.
 *
 * Ordering for drivers that count runnable callers per node: when an
 * unlock or wake from node X answers callers queued by X too, their
 * replies ask for SYNC_ACK, and X's own reply waits for those acks. So
 * X has taken (and counted) the callers it made runnable before its
 * unlocker goes on -- else X could see every caller it counts blocked
 * while the answers are still on the wire, and report a deadlock that is
 * not one. Callers of another node are answered without that wait (each
 * node's count is its own). Home-local callers are woken at once.
 *
 * Failure modes: a word not writable at its home (io.map: unmapped,
 * read-only, outside any live block) is that result and changes nothing
 * (wake does not look); out of memory before anything changed refuses
 * the request (counted; the sender waits, as for any refused message),
 * out of memory in the middle of a wake ends it early (it woke fewer).
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>

/* ---- Queues ---- */

/* The first entry of @pg's queue waiting in @op on the word at @off, and
 * the link that points at it. */
static struct dsm_qent *q_first(struct dsm_page *pg, uint16_t off, uint8_t op,
				struct dsm_qent ***link, struct dsm_qent **prev)
{
	struct dsm_qent **l = &pg->qhead, *p = NULL;

	for (; *l != NULL; p = *l, l = &(*l)->next)
		if ((*l)->off == off && (*l)->op == op) {
			*link = l;
			*prev = p;
			return *l;
		}
	return NULL;
}

static void q_remove(struct dsm_page *pg, struct dsm_qent **link,
		     struct dsm_qent *prev)
{
	struct dsm_qent *x = *link;

	*link = x->next;
	if (pg->qtail == x)
		pg->qtail = prev;
}

static void q_append(struct dsm_page *pg, struct dsm_qent *x)
{
	x->next = NULL;
	if (pg->qtail != NULL)
		pg->qtail->next = x;
	else
		pg->qhead = x;
	pg->qtail = x;
}

void dsm__queues_free(struct dsm_page *pg)
{
	struct dsm_qent *x = pg->qhead, *next;
	struct dsm_holder *h = pg->holders, *hn;

	for (; x != NULL; x = next) {
		next = x->next;
		free(x);
	}
	pg->qhead = pg->qtail = NULL;
	for (; h != NULL; h = hn) {
		hn = h->next;
		free(h);
	}
	pg->holders = NULL;
}

/* ---- Holders (robust mutexes) ---- */

static struct dsm_holder *holder_find(struct dsm_page *pg, uint32_t off)
{
	for (struct dsm_holder *h = pg->holders; h != NULL; h = h->next)
		if (h->off == off)
			return h;
	return NULL;
}

/* The word at @off is held by @tid now; false: no memory (nothing
 * changed). */
static bool holder_set(struct dsm_page *pg, uint32_t off, uint64_t tid)
{
	struct dsm_holder *h = holder_find(pg, off);

	if (h == NULL) {
		if ((h = malloc(sizeof *h)) == NULL)
			return false;
		h->off = (uint16_t)off;
		h->next = pg->holders;
		pg->holders = h;
	}
	h->tid = tid;
	h->dead = false;
	return true;
}

static void holder_drop(struct dsm_page *pg, uint32_t off)
{
	for (struct dsm_holder **l = &pg->holders; *l != NULL; l = &(*l)->next)
		if ((*l)->off == off) {
			struct dsm_holder *h = *l;
			*l = h->next;
			free(h);
			return;
		}
}

void dsm__queues_lost(struct dsm_node *n, int node)
{
	for (size_t i = 0; i < n->tab_cap; i++)
		for (struct dsm_page *pg = n->tab[i]; pg != NULL;
		     pg = pg->hnext) {
			struct dsm_qent **l = &pg->qhead, *prev = NULL;
			while (*l != NULL) {
				struct dsm_qent *x = *l;
				if (x->from != node) {
					prev = x;
					l = &x->next;
					continue;
				}
				q_remove(pg, l, prev);
				free(x);
				if (n->peer[node].nqueued > 0)
					n->peer[node].nqueued--;
			}
		}
}

static bool acks_reserve(struct dsm_node *n)
{
	struct dsm_ackwait *a;
	size_t cap;

	if (n->nacks < n->capacks)
		return true;
	cap = n->capacks ? 2 * n->capacks : 16;
	if ((a = realloc(n->acks, cap * sizeof *a)) == NULL)
		return false;
	n->acks = a;
	n->capacks = cap;
	return true;
}

/* ---- At the home ---- */

/* Who asks: a node's request (@from, @rid, its reply @r) or the home's
 * own caller (@from -1, @w). */
struct asker {
	int from;
	uint64_t rid;
	struct dsm_reply *r;
	struct dsm_wait *w;
};

/* Answer queued entry @x (taken out of the queue) of @pg: it completes
 * with @value (a lock's status: 1 when its holder was lost). @rx: its
 * reply (a remote entry's, made beforehand). */
static void answer(struct dsm_node *n, struct dsm_page *pg, struct dsm_qent *x,
		   struct dsm_reply *rx, const struct asker *by, uint64_t value)
{
	if (x->from < 0) {
		struct dsm_wait *w = x->w;
		w->old = value;
		w->res = DSM_OK;
		w->phase = DSM_PH_ACQUIRE;
		/* Its acquire waits for the notes of the store that
		 * answered it (the home's own write). */
		(void)dsm__hold(n, pg, NULL);
		n->io.wake(n->io.ctx, w);
	} else {
		struct dsm_cached *c = dsm__cached(n, x->from, x->rid);
		if (c != NULL && c->queued) {
			c->queued = false;
			n->peer[x->from].nqueued--;
		}
		if (by->from == x->from) { /* ack reserved by the caller */
			rx->flags = DSM_SYNC_ACK_WANTED;
			n->acks[n->nacks++] = (struct dsm_ackwait){
				(uint16_t)x->from, x->rid, by->r};
			by->r->wait++;
		}
		rx->old = value;
		(void)dsm__hold(n, pg, rx);
		dsm__reply_done(n, rx);
	}
	free(x);
}

/* What a remote entry's answer needs, made before anything changes:
 * its reply, and room for the ack the asker's reply will wait for.
 * false: no memory (*@rx freed). */
static bool answer_prepare(struct dsm_node *n, const struct dsm_page *pg,
			   const struct dsm_qent *x, const struct asker *by,
			   struct dsm_reply **rx)
{
	*rx = NULL;
	if (x->from < 0)
		return true;
	if ((*rx = dsm__reply_new(DSM_MSG_SYNC_REPLY, x->from, x->rid,
				  pg->page)) == NULL)
		return false;
	if (by->from == x->from && !acks_reserve(n)) {
		free(*rx);
		*rx = NULL;
		return false;
	}
	return true;
}

/* Store @v into the word at @off of home page @pg, a write by the home
 * (its notes hold @by's reply, or the home's own next release). */
static bool store(struct dsm_node *n, struct dsm_page *pg, uint32_t off,
		  uint64_t v)
{
	if (dsm__load64(pg->data + off) == v)
		return true;
	if (!dsm__dir_write(n, pg, n->self))
		return false;
	dsm__store64(pg->data + off, v);
	return true;
}

/* Run @op on the word at @off of home page @pg for @by. DSM_OK with
 * *@value (*@queued: waits in the queue, unanswered), DSM_NOTLOCKED, or
 * DSM_NOMEM (nothing changed). Unless queued, the page's notes hold
 * @by->r (the answer tells of the word), or, for the home's own caller
 * when the word changed, the home's next release (its acquire). */
static enum dsm_res run(struct dsm_node *n, struct dsm_page *pg, uint32_t off,
			enum dsm_sync_op op, uint64_t arg,
			const struct asker *by, uint64_t *value, bool *queued)
{
	uint64_t v = dsm__load64(pg->data + off);
	struct dsm_qent *x, **link, *prev;
	struct dsm_holder *h;
	struct dsm_reply *rx;
	uint64_t k;

	*value = 0;
	*queued = false;
	switch (op) {
	case DSM_LOCK:
	case DSM_WAITEQ:
		if (op == DSM_LOCK && n->robust && v != 0 &&
		    (h = holder_find(pg, off)) != NULL && h->dead) {
			/* Its holder was lost with nobody queued: taken,
			 * status 1 (the word says locked, no waiters). */
			if (v != 1 && !store(n, pg, off, 1))
				return DSM_NOMEM;
			h->dead = false;
			h->tid = arg;
			*value = 1;
			break;
		}
		if (op == DSM_LOCK ? v == 0 : v != arg) {
			if (op == DSM_LOCK && n->robust &&
			    !holder_set(pg, off, arg))
				return DSM_NOMEM;
			if (op == DSM_LOCK && !store(n, pg, off, 1))
				return DSM_NOMEM;
			break;
		}
		if ((x = malloc(sizeof *x)) == NULL)
			return DSM_NOMEM;
		if (op == DSM_LOCK && !store(n, pg, off, 2)) {
			free(x);
			return DSM_NOMEM;
		}
		if (op == DSM_LOCK && v != 2)
			(void)dsm__hold(n, pg, NULL); /* the home's own write */
		x->off = (uint16_t)off;
		x->op = (uint8_t)op;
		x->from = by->from;
		x->rid = by->rid;
		x->w = by->w;
		x->tid = op == DSM_LOCK ? arg : 0;
		q_append(pg, x);
		n->st.queued++;
		*queued = true;
		return DSM_OK;
	case DSM_UNLOCK:
		if (v == 0)
			break; /* DSM_NOTLOCKED, below */
		x = q_first(pg, (uint16_t)off, DSM_LOCK, &link, &prev);
		if (x == NULL) {
			if (!store(n, pg, off, 0))
				return DSM_NOMEM;
			if (n->robust)
				holder_drop(pg, off);
			break;
		}
		if (!answer_prepare(n, pg, x, by, &rx))
			return DSM_NOMEM;
		q_remove(pg, link, prev);
		{
			struct dsm_qent **l2, *p2;
			bool more = q_first(pg, (uint16_t)off, DSM_LOCK, &l2,
					    &p2) != NULL;
			if (!store(n, pg, off, more ? 2 : 1)) {
				/* Put it back where it was: nothing changed. */
				x->next = *link;
				*link = x;
				if (pg->qtail == prev)
					pg->qtail = x;
				free(rx);
				return DSM_NOMEM;
			}
		}
		if (n->robust && (h = holder_find(pg, off)) != NULL) {
			h->tid = x->tid;
			h->dead = false;
		}
		answer(n, pg, x, rx, by, 0); /* handed over: stays locked */
		break;
	case DSM_WAKE:
		for (k = 0; k < arg; k++) {
			x = q_first(pg, (uint16_t)off, DSM_WAITEQ, &link, &prev);
			if (x == NULL || !answer_prepare(n, pg, x, by, &rx))
				break; /* none left, or no memory: fewer */
			q_remove(pg, link, prev);
			answer(n, pg, x, rx, by, 0);
		}
		*value = k;
		break;
	}
	if (by->r != NULL)
		(void)dsm__hold(n, pg, by->r);
	else if (dsm__load64(pg->data + off) != v)
		(void)dsm__hold(n, pg, NULL);
	return op == DSM_UNLOCK && v == 0 ? DSM_NOTLOCKED : DSM_OK;
}

/* The word at @off of @pg, held by a lost thread (@h): to its first
 * queued locker with status 1, or marked for the next lock. */
static enum dsm_res pass_on(struct dsm_node *n, struct dsm_page *pg,
			    struct dsm_holder *h)
{
	const struct asker none = {.from = -2};
	struct dsm_qent *x, **link, *prev, **l2, *p2;
	struct dsm_reply *rx;
	bool more;

	x = q_first(pg, h->off, DSM_LOCK, &link, &prev);
	if (x == NULL) {
		h->dead = true;
		return DSM_OK;
	}
	if (!answer_prepare(n, pg, x, &none, &rx))
		return DSM_NOMEM;
	q_remove(pg, link, prev);
	more = q_first(pg, h->off, DSM_LOCK, &l2, &p2) != NULL;
	if (!store(n, pg, h->off, more ? 2 : 1)) {
		x->next = *link; /* put back: nothing changed */
		*link = x;
		if (pg->qtail == prev)
			pg->qtail = x;
		free(rx);
		return DSM_NOMEM;
	}
	h->tid = x->tid;
	h->dead = false;
	answer(n, pg, x, rx, &none, 1);
	return DSM_OK;
}

enum dsm_res dsm_threads_lost(struct dsm_node *n,
			      bool (*lost)(void *ctx, uint64_t tid), void *ctx)
{
	enum dsm_res res = DSM_OK;

	if (!n->robust)
		return DSM_OK;
	for (size_t i = 0; i < n->tab_cap; i++)
		for (struct dsm_page *pg = n->tab[i]; pg != NULL;
		     pg = pg->hnext)
			for (struct dsm_holder *h = pg->holders; h != NULL;
			     h = h->next) {
				if (h->dead || h->tid == 0 ||
				    dsm__load64(pg->data + h->off) == 0 ||
				    !lost(ctx, h->tid))
					continue;
				if (pass_on(n, pg, h) != DSM_OK)
					res = DSM_NOMEM;
			}
	return res;
}

void dsm__recv_sync(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_page *pg = dsm__page(n, m->page, true);
	struct asker by = {.from = m->from, .rid = m->rid};
	struct dsm_cached *c;
	enum dsm_res res;
	uint64_t value;
	bool queued;

	if (pg == NULL) {
		n->st.refused++;
		return;
	}
	if (!dsm__admit(n, m, &c))
		return;
	if ((by.r = dsm__reply_new(DSM_MSG_SYNC_REPLY, m->from, m->rid,
				   m->page)) == NULL) {
		dsm__unadmit(n, m->from);
		return;
	}
	if (m->op != DSM_WAKE &&
	    (by.r->res = dsm__word_check(n, m->page, m->off)) != DSM_OK) {
		dsm__reply_done(n, by.r);
		return;
	}
	res = run(n, pg, m->off, (enum dsm_sync_op)m->op, m->a, &by, &value,
		  &queued);
	if (res == DSM_NOMEM) {
		free(by.r);
		dsm__unadmit(n, m->from);
		return;
	}
	n->st.syncs_served++;
	if (queued) {
		struct dsm_msg q = {.type = DSM_MSG_QUEUED, .rid = m->rid,
				    .page = m->page};
		/* Its reply is made when an unlock or wake answers it. */
		free(by.r);
		c->queued = true;
		n->peer[m->from].nqueued++;
		dsm__send(n, m->from, &q);
		return;
	}
	by.r->res = res;
	by.r->old = value;
	dsm__reply_done(n, by.r);
}

void dsm__recv_sync_ack(struct dsm_node *n, const struct dsm_msg *m)
{
	dsm__observe_done(n, m);
	for (size_t i = 0; i < n->nacks; i++) {
		struct dsm_ackwait *a = &n->acks[i];
		struct dsm_reply *r;
		if (a->from != m->from || a->rid != m->rid)
			continue;
		r = a->r;
		*a = n->acks[--n->nacks];
		dsm__reply_done(n, r);
		return;
	}
	n->st.dups++; /* acked again, or never asked */
}

/* ---- At the caller ---- */

enum dsm_res dsm_sync(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		      uint32_t off, enum dsm_sync_op op, uint64_t arg,
		      uint64_t *out)
{
	enum dsm_res r;
	int home;

	if (off % 8 != 0 || off > DSM_PAGE_SIZE - 8 || (unsigned)op > DSM_WAKE ||
	    page >= DSM_PAGE_LIMIT || (home = dsm__home(n, page)) < 0)
		return DSM_BAD;
	switch (w->phase) {
	case DSM_PH_START:
		if (dsm__lost(n, home))
			return DSM_LOST;
		if ((r = dsm_release(n, w)) != DSM_OK)
			return r;
		if (home == n->self) {
			struct asker by = {.from = -1, .w = w};
			struct dsm_page *pg;
			uint64_t value;
			bool queued;
			if (op != DSM_WAKE &&
			    (r = dsm__word_check(n, page, off)) != DSM_OK)
				return r;
			if ((pg = dsm__page(n, page, true)) == NULL)
				return DSM_NOMEM;
			r = run(n, pg, off, op, arg, &by, &value, &queued);
			if (r != DSM_OK)
				return r;
			if (queued) {
				w->phase = DSM_PH_REMOTE;
				if (n->io.queued != NULL)
					n->io.queued(n->io.ctx, w);
				return DSM_WAIT;
			}
			w->old = value;
			w->res = DSM_OK;
		} else {
			struct dsm_msg m = {.type = DSM_MSG_SYNC,
					    .page = page,
					    .op = (uint8_t)op,
					    .off = (uint16_t)off,
					    .a = arg};
			if (!dsm__req_add(n, DSM_MSG_SYNC, home, page, w, &m.rid))
				return DSM_NOMEM;
			dsm__send(n, home, &m);
			w->phase = DSM_PH_REMOTE;
			return DSM_WAIT;
		}
		w->phase = DSM_PH_ACQUIRE;
		break;
	case DSM_PH_REMOTE:
		return DSM_WAIT; /* not answered yet: the wake still follows */
	default:
		break;
	}
	if (w->res != DSM_OK) { /* refused, or unlock of 0: no acquire */
		w->phase = DSM_PH_START;
		return (enum dsm_res)w->res;
	}
	if ((r = dsm_acquire(n, w)) != DSM_OK)
		return r;
	*out = w->old;
	w->phase = DSM_PH_START;
	return DSM_OK;
}

void dsm__recv_sync_reply(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req rq;

	if (m->flags & DSM_SYNC_ACK_WANTED) {
		/* Acked even as a duplicate: the home ignores an ack it
		 * does not wait for. */
		struct dsm_msg a = {.type = DSM_MSG_SYNC_ACK, .rid = m->rid,
				    .page = m->page};
		dsm__send(n, m->from, &a);
	}
	if (!dsm__req_take(n, m->rid, DSM_MSG_SYNC, m->from, &rq) ||
	    rq.page != m->page || rq.w == NULL) {
		n->st.dups++;
		return;
	}
	rq.w->old = m->old;
	rq.w->res = dsm__code_res(m->res);
	rq.w->phase = DSM_PH_ACQUIRE;
	n->io.wake(n->io.ctx, rq.w);
}

void dsm__recv_queued(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req *rq = dsm__req_find(n, m->rid, DSM_MSG_SYNC, m->from);

	if (rq == NULL)
		return; /* overtaken by its reply: nothing left to tell */
	if (rq->page != m->page || rq->queued) {
		n->st.dups++; /* told again */
		return;
	}
	rq->queued = true;
	if (n->io.queued != NULL)
		n->io.queued(n->io.ctx, rq->w);
}
