/* A node lost (dsm.h, dsm_node_lost): what waited on it is resolved, so
 * nothing hangs on a machine that will never answer.
 *
 * As a cache and caller: a request it was to answer ends DSM_LOST (a
 * page fetch wakes its waiters, who then find the home lost); a diff it
 * was to ack is given up (its bytes are gone with the home); from then on
 * every access, atomic, sync op or free of a page it homed ends DSM_LOST
 * at once, and a release drops the dirty pages homed there.
 *
 * As a home: notes it was to ack count as acked and acks of sync replies
 * as come, so replies held for them go to the others; its callers queued
 * on words here leave the queues; its requests' remembered replies go.
 *
 * Threads: one at a time per node (dsm.h). */
#include "dsm/dsm_int.h"

#include <stdlib.h>

bool dsm__lost(const struct dsm_node *n, int node)
{
	return node >= 0 && (n->lost & dsm__bit(node)) != 0;
}

/* Its request @rq, taken off the list: answered "lost". */
static void req_lost(struct dsm_node *n, const struct dsm_req *rq)
{
	struct dsm_page *pg;

	switch (rq->type) {
	case DSM_MSG_GET:
		pg = dsm__page(n, rq->page, false);
		if (pg != NULL && pg->fetch_rid == rq->rid) {
			pg->fetch_rid = 0;
			dsm__wake_all(n, &pg->waiters);
		}
		return;
	case DSM_MSG_DIFF:
		pg = dsm__page(n, rq->page, false);
		if (pg != NULL)
			pg->diff_inflight = false;
		dsm__outstanding_dec(n);
		return;
	default: /* ATOMIC, SYNC, FREE */
		if (rq->w != NULL) {
			rq->w->res = DSM_LOST;
			rq->w->phase = DSM_PH_ACQUIRE;
			n->io.wake(n->io.ctx, rq->w);
		}
		return;
	}
}

void dsm_node_lost(struct dsm_node *n, int node)
{
	struct dsm_msg m = {.from = node};

	if (node < 0 || node >= n->nodes || node == n->self ||
	    dsm__lost(n, node))
		return;
	n->lost |= dsm__bit(node);
	/* Each wake may let its thread call again (not inside this call:
	 * the caller resumes woken threads afterwards), so the lists are
	 * walked from the start after every answer. */
	for (size_t i = 0; i < n->nreqs;) {
		struct dsm_req rq = n->reqs[i];
		if (rq.to != node) {
			i++;
			continue;
		}
		n->reqs[i] = n->reqs[--n->nreqs];
		req_lost(n, &rq);
	}
	/* Home side: its acks, as if they came. */
	for (size_t i = 0; i < n->nnotes;)
		if (n->notes[i].to == node) {
			m.type = DSM_MSG_NOTE_ACK;
			m.rid = n->notes[i].rid;
			m.page = n->notes[i].pg->page;
			dsm__recv_note_ack(n, &m);
			i = 0;
		} else {
			i++;
		}
	for (size_t i = 0; i < n->nacks;)
		if (n->acks[i].from == node) {
			m.type = DSM_MSG_SYNC_ACK;
			m.rid = n->acks[i].rid;
			dsm__recv_sync_ack(n, &m);
			i = 0;
		} else {
			i++;
		}
	dsm__queues_lost(n, node);
	free(n->peer[node].c);
	n->peer[node] = (struct dsm_peer){0};
}
