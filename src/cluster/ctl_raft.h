/* The control plane's state machine as libraft 0.15 sees it: a struct
 * raft_fsm (version 2) over a struct ctl_state.
 *
 * Use: ctl_raft_init(&cr, &st) and hand &cr.fsm to raft_init() (or
 * raft_fixture_grow()); make each command's entry with ctl_raft_buffer()
 * and pass it to raft_apply(); close raft first, then ctl_raft_close().
 *
 * The result of an entry: libraft passes the pointer that fsm->apply set
 * to the raft_apply callback of the request that appended the entry, if
 * this server still has that request, and drops it otherwise (on every
 * follower, on a leader that restarted). So the glue owns the results:
 * the callback's @result is a struct ctl_result the callback BORROWS; it
 * stays valid until the next entry is applied on that server or
 * ctl_raft_close(), when the glue frees it. Copy it out; never free it.
 * (libraft 0.15 calls the callback from inside the apply loop, right
 * after fsm->apply returned, which this relies on; a libraft that queues
 * callbacks would read freed memory, which ASan reports in the tests.)
 * A callback with a status other than 0 has no result (NULL): with
 * RAFT_LEADERSHIPLOST the entry may or may not apply later; retry with
 * the same (client, seq) to learn its result once (a replay).
 *
 * Every leader must commit a barrier (raft_barrier()) and wait for it
 * before serving reads or trusting the state: libraft 0.15 can commit
 * entries of earlier terms by counting replicas (upstream #220).
 *
 * Threads: the thread that runs raft, as for struct ctl_state. */
#ifndef FLOCK_CLUSTER_CTL_RAFT_H
#define FLOCK_CLUSTER_CTL_RAFT_H

#include <raft.h>

#include "cluster/ctl.h"

struct ctl_raft {
	struct raft_fsm fsm;     /* handed to raft; fsm.data is this */
	struct ctl_state *st;    /* borrowed */
	struct ctl_result *last; /* the last entry's result (owned) */
	unsigned restores;       /* snapshots restored, for tests and status */
	struct fl_err err;       /* why the last restore failed */
};

/* Make @cr the raft_fsm of @st, which it borrows: @st must outlive it. */
void ctl_raft_init(struct ctl_raft *cr, struct ctl_state *st);
/* Free the last result; @st stays as it is. Call after raft_close()'s
 * callback (or raft_fixture_close()). */
void ctl_raft_close(struct ctl_raft *cr);

/* The entry of @c in a buffer for raft_apply(): 0, or FL_ENOMEM. The
 * memory comes from raft_malloc(); raft_apply() takes ownership of it when
 * it returns 0; otherwise the caller frees buf->base with raft_free(). */
int ctl_raft_buffer(const struct ctl_command *c, struct raft_buffer *buf);

#endif
