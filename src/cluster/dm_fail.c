/* Machines that fail (dm_int.h): found, declared lost, fenced, back.
 *
 * Finding: every machine pings every other every PING_MS (dm_net.c), so a
 * peer's last_heard is fresh while it lives. The serving leader declares
 * a member lost when nothing came from it for --lost-after (since the
 * leader began to serve, at least): a MEMBER_STATE LOST entry with the
 * incarnation it had (the epoch it ends) and the leader's clock; applying
 * it ends every process that ran there (ENDED 75, lost: ctl_fsm.c), and
 * Raft drops the machine from the configuration (reconcile).
 *
 * What every machine does once the entry applied (here, from the tick):
 * it closes its link to the lost incarnation, ends each process it is
 * the origin of that had a part there (status 75 and a line naming the
 * machine), and ends each part it runs for a process whose origin was
 * there. A frame from a lost incarnation is dropped, answered once with
 * FENCED (the incarnation declared lost) and its link closed.
 *
 * Back: a machine told FENCED for its own incarnation ends everything it
 * ran (its clients see 75), raises its incarnation past the lost one,
 * saves it, and drops its links, so it reconnects as the new
 * incarnation; a machine that restarted is one already. The leader,
 * hearing a lost member at a newer incarnation, makes it ACTIVE again
 * (a standby; reconcile adds it to Raft) with the time it came back. */
#include "cluster/dm_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void state_cb(struct dm_prop *p, struct ctl_result r)
{
	struct dm_peer *pe = dm_peer_get(p->d, (uint32_t)p->data2, false);

	if ((uint32_t)p->data2 == p->d->me.id)
		p->d->self_pending = false;
	else if (pe != NULL)
		pe->fail_pending = false;
	if (r.rc != 0)
		dm_log(p->d, "machine %" PRIu64 ": its new state: %s", p->data2,
		       fl_errname(r.rc));
}

static void propose_state(struct dm *d, struct dm_peer *pe,
			  const struct ctl_member *m, uint32_t incarnation,
			  uint8_t state, uint8_t role)
{
	struct ctl_command c = {.type = CTL_CMD_MEMBER_STATE};

	c.u.mstate.id = m->id;
	c.u.mstate.incarnation = incarnation;
	c.u.mstate.state = state;
	c.u.mstate.role = role;
	c.u.mstate.at = unix_ms();
	if (pe != NULL)
		pe->fail_pending = true;
	else
		d->self_pending = true;
	dm_propose_here(d, &c, state_cb, m->id);
}

static void leader_duties(struct dm *d, uint64_t now)
{
	uint64_t after = d->cfg->lost_after_ms ? d->cfg->lost_after_ms
					       : DM_LOST_AFTER_MS;

	/* This daemon was stopped a while (SIGSTOP, a stuck host): what it
	 * heard of the others is as old; it leads, if it still does, only
	 * from now on. */
	if (d->fail_tick_ms != 0 && now - d->fail_tick_ms > after / 2)
		d->lead_ms = now;
	d->fail_tick_ms = now;
	if (!dm_is_leader(d))
		return;
	if (d->lead_term != d->barrier_term) { /* it begins to serve */
		d->lead_term = d->barrier_term;
		d->lead_ms = now;
	}
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		struct dm_peer *pe;
		uint64_t heard;

		if (m->id == d->me.id) {
			/* This machine restarted (and leads again): what its
			 * older incarnation ran elsewhere is lost too. */
			if (d->self_pending || m->incarnation >= d->me.incarnation)
				continue;
			if (m->state == CTL_M_ACTIVE || m->state == CTL_M_LEAVING)
				propose_state(d, NULL, m, m->incarnation,
					      CTL_M_LOST, m->role);
			else if (m->state == CTL_M_LOST)
				propose_state(d, NULL, m, d->me.incarnation,
					      CTL_M_ACTIVE, m->role);
			continue;
		}
		pe = dm_peer_get(d, m->id, true);
		if (pe == NULL || pe->fail_pending)
			continue;
		if ((m->state == CTL_M_ACTIVE || m->state == CTL_M_LEAVING) &&
		    pe->link != NULL && pe->heard_inc > m->incarnation) {
			/* It restarted before it was found silent: its older
			 * incarnation, and what that ran, are gone. */
			dm_log(d, "machine %" PRIu32 ": restarted as incarnation "
				  "%" PRIu32 ": declaring %" PRIu32 " lost",
			       m->id, pe->heard_inc, m->incarnation);
			propose_state(d, pe, m, m->incarnation, CTL_M_LOST,
				      m->role);
		} else if (m->state == CTL_M_ACTIVE ||
			   m->state == CTL_M_LEAVING) {
			heard = pe->last_heard > d->lead_ms ? pe->last_heard
							    : d->lead_ms;
			if (now - heard < after)
				continue;
			dm_log(d, "machine %" PRIu32 ": nothing from it for "
				  "%" PRIu64 " ms: declaring it lost",
			       m->id, now - heard);
			propose_state(d, pe, m, m->incarnation, CTL_M_LOST,
				      m->role);
		} else if (m->state == CTL_M_LOST && pe->link != NULL &&
			   pe->heard_inc > m->incarnation) {
			dm_log(d, "machine %" PRIu32 ": back as incarnation "
				  "%" PRIu32,
			       m->id, pe->heard_inc);
			propose_state(d, pe, m, pe->heard_inc, CTL_M_ACTIVE,
				      CTL_STANDBY);
		}
	}
}

void dm_fail_tick(struct dm *d)
{
	uint64_t now = dm_now_ms();

	if (d->raft_started)
		leader_duties(d, now);
	/* Every machine: the losses it has not acted on yet. A member's
	 * incarnation rises only once the one before was declared lost, so
	 * the newest lost incarnation is its own when it is LOST, else the
	 * one before: polled, a loss is acted on even when the member was
	 * back (ACTIVE again) before this machine's tick, or when a
	 * snapshot brought both at once. */
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		uint32_t lost;
		struct dm_peer *pe;

		if (m->id == d->me.id)
			continue;
		lost = m->state == CTL_M_LOST ? m->incarnation
					      : m->incarnation - 1;
		if (lost == 0)
			continue;
		pe = dm_peer_get(d, m->id, true);
		if (pe == NULL || pe->lost_done > lost)
			continue;
		pe->lost_done = lost + 1;
		dm_log(d, "machine %" PRIu32 ": declared lost (incarnation "
			  "%" PRIu32 ")",
		       m->id, lost);
		if (pe->link != NULL && pe->heard_inc <= lost)
			net_conn_close(pe->link->conn, "declared lost");
		dm_sess_lost(d, m->id, lost);
		dm_parts_machine_lost(d, m->id, lost);
	}
}

bool dm_fail_frame_ok(struct dm *d, struct dm_link *l,
		      const struct net_header *h)
{
	const struct ctl_member *m = ctl_member_find(&d->st, h->machine);
	uint8_t out[4];

	if (l->peer != NULL && h->incarnation > l->peer->heard_inc)
		l->peer->heard_inc = h->incarnation;
	if (m == NULL || m->state != CTL_M_LOST ||
	    h->incarnation > m->incarnation)
		return true;
	/* A lost incarnation: tell it, once, and hear nothing more. */
	for (int i = 0; i < 4; i++)
		out[i] = (uint8_t)(m->incarnation >> (8 * i));
	dm_send(l, NET_MSG_FENCED, 0, 0, out, sizeof out);
	net_conn_close(l->conn, "a frame from an incarnation declared lost");
	return false;
}

void dm_fail_fenced(struct dm *d, struct dm_link *l, const uint8_t *p)
{
	uint32_t inc = fl_load_u32(p);
	struct fl_err err;

	if (inc != d->me.incarnation)
		return; /* an older incarnation's: not us any more */
	dm_log(d, "fenced: machine %" PRIu32 " (%s) says this machine was "
		  "declared lost as incarnation %" PRIu32
		  "; ending what ran here and coming back as %" PRIu32,
	       l->peer_id, net_conn_peer(l->conn), inc, inc + 1);
	dm_parts_fenced(d);
	d->me.incarnation = inc + 1;
	dm_sess_fenced(d);
	if (cl_identity_save(d->cfg->data, &d->me, &err) != 0)
		dm_log(d, "fenced: %s", err.msg);
	/* Every link carried the old incarnation: all go, and come back. */
	for (struct dm_peer *pe = d->peers; pe != NULL; pe = pe->next)
		if (pe->link != NULL)
			net_conn_close(pe->link->conn, "fenced");
}
