/* A DSM node: its lifecycle, its table of pages, the requests it awaits,
 * and the dispatcher every message enters by.
 *
 * dsm_deliver() decodes (dsm_wire.c), then checks the roles before any
 * handler runs: the claimed sender is the one the transport names, not
 * this node, and inside the node count; a request (GET, DIFF, NOTE_ACK,
 * ATOMIC, SYNC, SYNC_ACK, FREE) is for a page homed here; a reply or
 * note (PAGE, UNMAPPED, DIFF_ACK, NOTE, ATOMIC_REPLY, SYNC_REPLY,
 * QUEUED, FREE_REPLY) comes from the page's home; node masks name only
 * existing nodes. Anything else is counted in @malformed and dropped.
 * Handlers live in dsm_cache.c (the caching side), dsm_home.c (the home
 * side), dsm_sync.c (sync ops, both sides) and dsm_free.c (frees, both
 * sides), one per type, named in DSM_MESSAGES.
 *
 * Requests awaiting replies are a small array (a node has a handful in
 * flight: one GET per missing page, one DIFF per page, one ATOMIC, SYNC
 * or FREE per parked thread); a reply that matches none is a duplicate
 * or stale, counted in @dups and dropped. @done, sent with every
 * message, skips requests their home said are queued: a thread may wait
 * in a queue for as long as it likes without pinning the home's memory
 * of every later request.
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>
#include <string.h>

/* ---- Pages ---- */

static size_t bucket(const struct dsm_node *n, uint64_t page)
{
	return (size_t)((page * 0x9e3779b97f4a7c15ull) >> 32) & (n->tab_cap - 1);
}

static bool grow(struct dsm_node *n)
{
	size_t cap = n->tab_cap * 2;
	struct dsm_page **tab = calloc(cap, sizeof *tab);

	if (tab == NULL)
		return false;
	for (size_t i = 0; i < n->tab_cap; i++) {
		struct dsm_page *pg = n->tab[i], *next;
		for (; pg != NULL; pg = next) {
			size_t b = (size_t)((pg->page * 0x9e3779b97f4a7c15ull) >> 32) &
				   (cap - 1);
			next = pg->hnext;
			pg->hnext = tab[b];
			tab[b] = pg;
		}
	}
	free(n->tab);
	n->tab = tab;
	n->tab_cap = cap;
	return true;
}

struct dsm_page *dsm__page(struct dsm_node *n, uint64_t page, bool create)
{
	struct dsm_page *pg;
	bool home;

	for (pg = n->tab[bucket(n, page)]; pg != NULL; pg = pg->hnext)
		if (pg->page == page)
			return pg;
	if (!create)
		return NULL;
	if (n->tab_len >= n->tab_cap && !grow(n))
		return NULL;
	home = dsm__home(n, page) == n->self;
	pg = calloc(1, sizeof *pg);
	if (pg == NULL)
		return NULL;
	if (home && (pg->data = calloc(1, DSM_PAGE_SIZE)) == NULL) {
		free(pg); /* a master copy starts zero-filled */
		return NULL;
	}
	pg->page = page;
	pg->holds_tail = &pg->holds;
	pg->hnext = n->tab[bucket(n, page)];
	n->tab[bucket(n, page)] = pg;
	n->tab_len++;
	return pg;
}

bool dsm__charge_page(struct dsm_node *n)
{
	return n->io.charge == NULL || n->io.charge(n->io.ctx, DSM_PAGE_SIZE);
}

void dsm__credit_page(struct dsm_node *n)
{
	if (n->io.charge != NULL)
		(void)n->io.charge(n->io.ctx, -(int64_t)DSM_PAGE_SIZE);
}

int dsm__home(const struct dsm_node *n, uint64_t page)
{
	int h = n->home(n->home_ctx, page);

	return h >= 0 && h < n->nodes ? h : -1;
}

const uint8_t *dsm_home_page(const struct dsm_node *n, uint64_t page)
{
	struct dsm_page *pg;

	if (dsm__home(n, page) != n->self)
		return NULL;
	pg = dsm__page((struct dsm_node *)n, page, false);
	return pg != NULL ? pg->data : NULL;
}

/* ---- Lifecycle ---- */

int dsm_node_new(const struct dsm_config *cfg, struct dsm_node **out,
		 struct fl_err *err)
{
	struct dsm_node *n;

	*out = NULL;
	if (cfg->nodes < 1 || cfg->nodes > DSM_MAX_NODES || cfg->self < 0 ||
	    cfg->self >= cfg->nodes || cfg->home == NULL ||
	    cfg->io.send == NULL || cfg->io.wake == NULL)
		return fl_err_set(err, FL_EINVAL,
				  "dsm: node %d of %d: bad configuration",
				  cfg->self, cfg->nodes);
	n = calloc(1, sizeof *n);
	if (n == NULL)
		goto fail;
	n->tab_cap = 64;
	n->tab = calloc(n->tab_cap, sizeof *n->tab);
	if (n->tab == NULL)
		goto fail_node;
	n->self = cfg->self;
	n->nodes = cfg->nodes;
	n->home = cfg->home;
	n->home_ctx = cfg->home_ctx;
	n->robust = cfg->robust;
	n->io = cfg->io;
	n->next_rid = 1;
	fl_buf_init(&n->out);
	*out = n;
	return 0;
fail_node:
	free(n);
fail:
	return fl_err_set(err, FL_ENOMEM, "dsm: node %d: out of memory",
			  cfg->self);
}

void dsm_node_free(struct dsm_node *n)
{
	if (n == NULL)
		return;
	/* A reply is freed with the last thing that holds it. */
	for (size_t i = 0; i < n->nacks; i++)
		if (--n->acks[i].r->wait == 0)
			free(n->acks[i].r);
	for (size_t i = 0; i < n->tab_cap; i++) {
		struct dsm_page *pg = n->tab[i], *next;
		for (; pg != NULL; pg = next) {
			struct dsm_hold *h = pg->holds, *hn;
			for (; h != NULL; h = hn) {
				struct dsm_reply *r = h->r;
				hn = h->next;
				if (h->owned)
					free(h);
				if (--r->wait == 0)
					free(r);
			}
			next = pg->hnext;
			if (dsm__home(n, pg->page) != n->self) { /* io.charge's */
				int k = (pg->data != NULL) + (pg->stale != NULL) +
					(pg->twin != NULL);
				while (k-- > 0)
					dsm__credit_page(n);
			}
			dsm__queues_free(pg);
			free(pg->data);
			free(pg->stale);
			free(pg->twin);
			free(pg->live);
			free(pg);
		}
	}
	for (int i = 0; i < DSM_MAX_NODES; i++)
		free(n->peer[i].c);
	free(n->tab);
	free(n->reqs);
	free(n->notes);
	free(n->acks);
	fl_buf_close(&n->out);
	free(n);
}

void dsm_wait_init(struct dsm_wait *w, void *user)
{
	memset(w, 0, sizeof *w);
	w->user = user;
}

void dsm_wait_current(const struct dsm_node *n, struct dsm_wait *w)
{
	w->acq = n->acq_epoch;
}

void dsm_counts(const struct dsm_node *n, uint64_t except, uint64_t *sent,
		uint64_t *recv)
{
	*sent = *recv = 0;
	for (int i = 0; i < n->nodes; i++)
		if (!(except & dsm__bit(i))) {
			*sent += n->peer[i].sent;
			*recv += n->peer[i].recv;
		}
}

void dsm_stats(const struct dsm_node *n, struct dsm_stats *out)
{
	*out = n->st;
}

/* ---- Sending, and the requests awaiting replies ---- */

void dsm__send(struct dsm_node *n, int to, struct dsm_msg *m)
{
	uint64_t done = n->next_rid;

	for (size_t i = 0; i < n->nreqs; i++)
		if (n->reqs[i].rid < done && !n->reqs[i].queued)
			done = n->reqs[i].rid;
	m->from = (uint16_t)n->self;
	m->done = done;
	n->out.len = 0;
	dsm__msg_encode(m, &n->out);
	if (fl_buf_failed(&n->out)) {
		/* No retransmission yet (no drops in this brick): counted. */
		n->st.refused++;
		fl_buf_close(&n->out);
		return;
	}
	n->st.msgs_sent++;
	n->st.bytes_sent += n->out.len;
	n->peer[to].sent++;
	n->io.send(n->io.ctx, to, n->out.data, n->out.len);
}

bool dsm__req_add(struct dsm_node *n, uint8_t type, int to, uint64_t page,
		  struct dsm_wait *w, uint64_t *rid)
{
	struct dsm_req *r;

	if (n->nreqs == n->capreqs) {
		size_t cap = n->capreqs ? n->capreqs * 2 : 16;
		struct dsm_req *a = realloc(n->reqs, cap * sizeof *a);
		if (a == NULL)
			return false;
		n->reqs = a;
		n->capreqs = cap;
	}
	r = &n->reqs[n->nreqs++];
	r->rid = n->next_rid++;
	r->type = type;
	r->to = (uint16_t)to;
	r->page = page;
	r->w = w;
	r->queued = false;
	*rid = r->rid;
	return true;
}

struct dsm_req *dsm__req_find(struct dsm_node *n, uint64_t rid, uint8_t type,
			      int from)
{
	for (size_t i = 0; i < n->nreqs; i++) {
		struct dsm_req *r = &n->reqs[i];
		if (r->rid == rid)
			return r->type == type && r->to == from ? r : NULL;
	}
	return NULL;
}

bool dsm__req_take(struct dsm_node *n, uint64_t rid, uint8_t type, int from,
		   struct dsm_req *out)
{
	for (size_t i = 0; i < n->nreqs; i++) {
		struct dsm_req *r = &n->reqs[i];
		if (r->rid != rid)
			continue;
		if (r->type != type || r->to != from)
			return false;
		*out = *r;
		*r = n->reqs[--n->nreqs];
		return true;
	}
	return false;
}

void dsm__wake_all(struct dsm_node *n, struct dsm_wait **list)
{
	struct dsm_wait *w = *list, *next;

	*list = NULL;
	for (; w != NULL; w = next) {
		next = w->next;
		w->next = NULL;
		n->io.wake(n->io.ctx, w);
	}
}

void dsm__outstanding_dec(struct dsm_node *n)
{
	if (--n->outstanding == 0)
		dsm__wake_all(n, &n->rel_waiters);
}

/* ---- The dispatcher ---- */

typedef void recv_fn(struct dsm_node *n, const struct dsm_msg *m);

static recv_fn *const recv[DSM_MSG_END] = {
#define DSM__RECV(name, code, min, max, home, fn, text) [code] = fn,
	DSM_MESSAGES(DSM__RECV)
#undef DSM__RECV
};

void dsm_deliver(struct dsm_node *n, int from, const void *msg, size_t len)
{
	struct dsm_msg m;
	uint64_t all = n->nodes == 64 ? ~0ull : dsm__bit(n->nodes) - 1;
	int home;

	n->st.msgs_recv++;
	n->st.bytes_recv += len;
	if (from >= 0 && from < n->nodes)
		n->peer[from].recv++; /* as its sender counted it */
	if (dsm__msg_decode(msg, len, &m) != 0 || from < 0 || from >= n->nodes ||
	    from == n->self || m.from != from || (m.writers & ~all) != 0 ||
	    (m.sharers & ~all) != 0) {
		n->st.malformed++;
		return;
	}
	home = dsm__home(n, m.page);
	if (home < 0 || (dsm__msg_to_home(m.type) ? home != n->self : home != from)) {
		n->st.malformed++;
		return;
	}
	recv[m.type](n, &m);
}
