/* Frees at a block's home: dsm_free, its messages (FREE, FREE_REPLY),
 * and what a free does to the pages it touched.
 *
 * The allocator is the home's (io.free): the core knows no blocks. What
 * it adds is that a free is seen everywhere as the memory model says.
 * The home records itself as a writer of every page the free touched --
 * the block's first page (its live blocks changed) and every page it
 * unmapped -- exactly as if it had stored into them, so each sharer of
 * one is noted and drops its copy at its next acquire; a later GET of an
 * unmapped page is answered UNMAPPED (io.map says so), of the first page
 * with its new live blocks. The reply waits for those notes, like any
 * reply completing a write (dsm_home.c), so a node that acquires after
 * the freeing node's next release knows. The freeing node drops its own
 * clean copies of those pages when the reply comes: its next access
 * fetches and is refused at once, as on one machine.
 *
 * Happy path of a remote free: release (no diff of ours may reach the
 * block's pages after the free: they could be reused), FREE; the home
 * admits it once (the reply cache), runs io.free, notes, FREE_REPLY with
 * the result and the pages unmapped; the caller drops its copies. A
 * free at the home runs io.free directly; its own next release waits
 * for the notes.
 *
 * Failure modes: io.free's DSM_NOTBLOCK (not the start of a live block)
 * and DSM_NOMEM are the caller's result; a refused FREE (the home out of
 * memory before io.free ran) leaves the caller waiting, as any refused
 * message does. Out of memory for the notes after the allocator freed
 * the block cannot undo it: that page's sharers may read its last bytes
 * until their copies go for another reason (never freed host memory),
 * and the failure is counted in @refused.
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>

/* Call @fn on every page entry of @n in [@first, @first + @np) and on
 * @also, each once. */
static void each_page(struct dsm_node *n, uint64_t also, uint64_t first,
		      uint64_t np, void (*fn)(struct dsm_node *, struct dsm_page *,
					      void *),
		      void *arg)
{
	struct dsm_page *pg;

	if ((pg = dsm__page(n, also, false)) != NULL)
		fn(n, pg, arg);
	if (np <= n->tab_len) {
		for (uint64_t p = first; p < first + np; p++)
			if (p != also && (pg = dsm__page(n, p, false)) != NULL)
				fn(n, pg, arg);
		return;
	}
	for (size_t i = 0; i < n->tab_cap; i++)
		for (pg = n->tab[i]; pg != NULL; pg = pg->hnext)
			if (pg->page >= first && pg->page - first < np &&
			    pg->page != also)
				fn(n, pg, arg);
}

/* ---- At the home ---- */

/* A page the free touched: written by the home (@arg: the reply to
 * hold, or NULL for the home's own free). */
static void touched(struct dsm_node *n, struct dsm_page *pg, void *arg)
{
	if (dsm__home(n, pg->page) != n->self)
		return; /* io.free named a page that is not ours */
	if (!dsm__dir_write(n, pg, n->self) || !dsm__hold(n, pg, arg))
		n->st.refused++;
}

/* io.free on the block at @off of @page, and the notes it causes. */
static enum dsm_res home_free(struct dsm_node *n, uint64_t page, uint32_t off,
			      struct dsm_reply *r, uint64_t *first,
			      uint64_t *np)
{
	enum dsm_res res;

	*first = page;
	*np = 0;
	if (n->io.free == NULL)
		return DSM_NOTBLOCK;
	res = n->io.free(n->io.ctx, page, off, first, np);
	if (res != DSM_OK) {
		*first = page;
		*np = 0;
		return res == DSM_NOMEM ? DSM_NOMEM : DSM_NOTBLOCK;
	}
	if (*first >= DSM_PAGE_LIMIT || *np > DSM_PAGE_LIMIT - *first)
		*np = 0; /* ours, but keep the wire's bounds */
	each_page(n, page, *first, *np, touched, r);
	return DSM_OK;
}

void dsm__recv_free(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_reply *r;
	struct dsm_cached *c;

	if (!dsm__admit(n, m, &c))
		return;
	if ((r = dsm__reply_new(DSM_MSG_FREE_REPLY, m->from, m->rid,
				m->page)) == NULL) {
		dsm__unadmit(n, m->from);
		return;
	}
	r->res = home_free(n, m->page, m->off, r, &r->first, &r->npages);
	n->st.frees_served++;
	dsm__reply_done(n, r);
}

/* ---- At the caller ---- */

static void drop_clean(struct dsm_node *n, struct dsm_page *pg, void *arg)
{
	int from = *(const int *)arg;

	/* A dirty copy keeps its bytes: they may be another thread's
	 * writes into a block allocated there since. */
	if (pg->data != NULL && !pg->dirty && dsm__home(n, pg->page) == from)
		dsm__drop_copy(n, pg);
}

enum dsm_res dsm_free(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		      uint32_t off)
{
	enum dsm_res r;
	int home;

	if (off >= DSM_PAGE_SIZE || page >= DSM_PAGE_LIMIT ||
	    (home = dsm__home(n, page)) < 0)
		return DSM_BAD;
	switch (w->phase) {
	case DSM_PH_START:
		if (dsm__lost(n, home))
			return DSM_LOST;
		if ((r = dsm_release(n, w)) != DSM_OK)
			return r;
		if (home == n->self) {
			uint64_t first, np;
			return home_free(n, page, off, NULL, &first, &np);
		} else {
			struct dsm_msg m = {.type = DSM_MSG_FREE,
					    .page = page,
					    .off = (uint16_t)off};
			if (!dsm__req_add(n, DSM_MSG_FREE, home, page, w, &m.rid))
				return DSM_NOMEM;
			dsm__send(n, home, &m);
			w->phase = DSM_PH_REMOTE;
			return DSM_WAIT;
		}
	case DSM_PH_REMOTE:
		return DSM_WAIT; /* not answered yet: the wake still follows */
	default:
		w->phase = DSM_PH_START;
		return (enum dsm_res)w->res;
	}
}

void dsm__recv_free_reply(struct dsm_node *n, const struct dsm_msg *m)
{
	struct dsm_req rq;
	int from = m->from;

	if (!dsm__req_take(n, m->rid, DSM_MSG_FREE, m->from, &rq) ||
	    rq.page != m->page || rq.w == NULL) {
		n->st.dups++;
		return;
	}
	each_page(n, m->page, m->first, m->npages, drop_clean, &from);
	rq.w->res = dsm__code_res(m->res);
	rq.w->phase = DSM_PH_ACQUIRE;
	n->io.wake(n->io.ctx, rq.w);
}
