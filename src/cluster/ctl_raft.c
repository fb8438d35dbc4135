/* The glue between libraft 0.15 and the control plane's state machine
 * (ctl_raft.h): struct raft_fsm's apply, snapshot, snapshot_finalize and
 * restore over a struct ctl_state.
 *
 * Happy path of an entry: raft commits it and calls apply, which
 * allocates the result first, then decodes and applies the entry
 * (ctl_apply_entry: a malformed entry is a refusal like any other, the
 * same on every machine), frees the previous result and returns the new
 * one; raft hands it to the raft_apply callback, if this server has one
 * waiting.
 *
 * Failure modes: out of memory before applying returns RAFT_NOMEM with
 * the state untouched (raft tries the entry again later); once applied,
 * apply cannot fail. A snapshot that does not decode is refused with
 * RAFT_MALFORMED and the state kept (ctl_snapshot_restore changes nothing
 * then); raft keeps ownership of its buffer. On success restore frees it
 * with raft_free(), as raft requires.
 *
 * Snapshots: version 2 of struct raft_fsm, so raft takes no ownership of
 * the snapshot's buffers: snapshot makes one raft_malloc'd buffer (and the
 * array holding it), snapshot_finalize frees both, whether the snapshot
 * was written or not. Threads: raft's. */
#include "cluster/ctl_raft.h"

#include <stdlib.h>
#include <string.h>

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
		     void **result)
{
	struct ctl_raft *cr = fsm->data;
	struct ctl_result *r = malloc(sizeof *r);

	if (r == NULL)
		return RAFT_NOMEM;
	*r = ctl_apply_entry(cr->st, buf->base, buf->len);
	free(cr->last);
	cr->last = r;
	*result = r;
	return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
			unsigned *n_bufs)
{
	struct ctl_raft *cr = fsm->data;
	struct raft_buffer *b;
	struct fl_buf out;

	fl_buf_init(&out);
	ctl_snapshot_encode(cr->st, &out);
	if (fl_buf_failed(&out))
		goto err;
	b = raft_malloc(sizeof *b);
	if (b == NULL)
		goto err;
	b->len = out.len;
	b->base = raft_malloc(out.len);
	if (b->base == NULL) {
		raft_free(b);
		goto err;
	}
	memcpy(b->base, out.data, out.len);
	fl_buf_close(&out);
	*bufs = b;
	*n_bufs = 1;
	return 0;
err:
	fl_buf_close(&out);
	return RAFT_NOMEM;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm,
				 struct raft_buffer *bufs[], unsigned *n_bufs)
{
	(void)fsm;
	for (unsigned i = 0; i < *n_bufs; i++)
		raft_free((*bufs)[i].base);
	raft_free(*bufs);
	*bufs = NULL;
	*n_bufs = 0;
	return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	struct ctl_raft *cr = fsm->data;

	if (ctl_snapshot_restore(cr->st, buf->base, buf->len, &cr->err) != 0)
		return RAFT_MALFORMED;
	raft_free(buf->base);
	cr->restores++;
	return 0;
}

void ctl_raft_init(struct ctl_raft *cr, struct ctl_state *st)
{
	memset(cr, 0, sizeof *cr);
	cr->st = st;
	cr->fsm.version = 2;
	cr->fsm.data = cr;
	cr->fsm.apply = fsm_apply;
	cr->fsm.snapshot = fsm_snapshot;
	cr->fsm.restore = fsm_restore;
	cr->fsm.snapshot_finalize = fsm_snapshot_finalize;
}

void ctl_raft_close(struct ctl_raft *cr)
{
	free(cr->last);
	cr->last = NULL;
}

int ctl_raft_buffer(const struct ctl_command *c, struct raft_buffer *buf)
{
	struct fl_buf out;

	fl_buf_init(&out);
	ctl_command_encode(c, &out);
	buf->base = fl_buf_failed(&out) ? NULL : raft_malloc(out.len);
	if (buf->base == NULL) {
		fl_buf_close(&out);
		return FL_ENOMEM;
	}
	memcpy(buf->base, out.data, out.len);
	buf->len = out.len;
	fl_buf_close(&out);
	return 0;
}
