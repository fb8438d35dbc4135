/* libFuzzer target for the control plane's decoders (src/cluster/ctl_fsm.c):
 * a Raft entry and a snapshot are bytes from the log or from a peer.
 *
 * The input is tried both ways:
 * - as an entry, applied to a small state made once (a VM with two
 *   members, two users, a process and a session): whatever it does, the
 *   state must still snapshot and restore to the same bytes -- apply
 *   never makes a state the snapshot decoder would refuse;
 * - as a snapshot, restored into a state: refused with FL_EFORMAT and the
 *   state unchanged, or accepted, and then the state encodes back to
 *   exactly the input, and that restores again to the same bytes.
 * tests/fuzz/seeds-ctl holds an entry of each type and two snapshots
 * (tests/fuzz/make_ctl_seeds.py). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct fl_buf base; /* the small state's snapshot */

static void must(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_ctl: %s\n", what);
		abort();
	}
}

static void build_base(void)
{
	struct ctl_state st;
	struct ctl_command c;

	ctl_state_init(&st);
	memset(&c, 0, sizeof c);
	c.type = CTL_CMD_CREATE;
	strcpy(c.u.create.vm, "lab");
	strcpy(c.u.create.first.addr, "10.0.0.1:7000");
	memset(c.u.create.first.key, 1, CTL_KEY);
	c.u.create.first.cpu = 4;
	c.u.create.first.state = CTL_M_ACTIVE;
	c.u.create.first.role = CTL_VOTER;
	strcpy(c.u.create.admin.name, "root");
	memset(c.u.create.admin.key, 0xa0, CTL_KEY);
	must(ctl_apply(&st, &c).rc == 0, "CREATE");
	struct ctl_member second = c.u.create.first; /* (one union) */
	c.type = CTL_CMD_MEMBER_ADD;
	c.u.member = second;
	strcpy(c.u.member.addr, "10.0.0.2:7000");
	memset(c.u.member.key, 2, CTL_KEY);
	must(ctl_apply(&st, &c).rc == 0, "MEMBER_ADD");
	memset(&c, 0, sizeof c);
	c.type = CTL_CMD_USER_ADD;
	strcpy(c.u.user.name, "alice");
	memset(c.u.user.key, 0x10, CTL_KEY);
	must(ctl_apply(&st, &c).rc == 0, "USER_ADD");
	memset(&c, 0, sizeof c);
	c.type = CTL_CMD_SUBMIT;
	c.client = 1; /* the seeds use clients 1 and 2 */
	c.seq = 1;
	strcpy(c.u.submit.owner, "alice");
	must(ctl_apply(&st, &c).rc == 0, "SUBMIT");
	fl_buf_init(&base);
	ctl_snapshot_encode(&st, &base);
	must(!fl_buf_failed(&base), "encode");
	ctl_state_close(&st);
}

/* @st must encode to a snapshot that restores to the same bytes; the
 * encoding is left in @out. */
static void check_round_trip(const struct ctl_state *st, struct fl_buf *out)
{
	struct ctl_state again;
	struct fl_buf b;
	struct fl_err err;

	fl_buf_init(out);
	ctl_snapshot_encode(st, out);
	must(!fl_buf_failed(out) && out->len % 8 == 0, "encode");
	ctl_state_init(&again);
	if (ctl_snapshot_restore(&again, out->data, out->len, &err) != 0) {
		fprintf(stderr, "fuzz_ctl: own snapshot refused: %s\n", err.msg);
		abort();
	}
	fl_buf_init(&b);
	ctl_snapshot_encode(&again, &b);
	must(b.len == out->len && memcmp(b.data, out->data, b.len) == 0,
	     "restored state encodes otherwise");
	fl_buf_close(&b);
	ctl_state_close(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_state st;
	struct ctl_command c;
	struct ctl_result r;
	struct fl_err err;
	struct fl_buf b;
	int rc;

	if (base.data == NULL)
		build_base();

	/* As an entry. */
	ctl_state_init(&st);
	must(ctl_snapshot_restore(&st, base.data, base.len, NULL) == 0, "base");
	rc = ctl_command_decode(data, size, &c, &err);
	must(rc == 0 || rc == FL_EFORMAT, "decode: an unexpected code");
	if (rc == 0) {
		/* a decoded entry encodes to the same bytes */
		fl_buf_init(&b);
		ctl_command_encode(&c, &b);
		must(b.len == size && memcmp(b.data, data, size) == 0,
		     "entry encodes otherwise");
		fl_buf_close(&b);
	}
	r = ctl_apply_entry(&st, data, size);
	must((rc != 0) == (r.rc == FL_EFORMAT), "apply_entry: FL_EFORMAT iff malformed");
	if (rc == 0) {
		/* applied twice: the second is a replay, changing nothing
		 * but the entry count */
		struct fl_buf b1, b2;
		uint64_t applied;
		check_round_trip(&st, &b1);
		r = ctl_apply_entry(&st, data, size);
		must(c.client == 0 || c.seq == 0 || r.replay, "no replay");
		applied = st.applied;
		if (c.client != 0) {
			st.applied--;
			fl_buf_init(&b2);
			ctl_snapshot_encode(&st, &b2);
			must(b2.len == b1.len &&
				     memcmp(b1.data, b2.data, b1.len) == 0,
			     "a replay changed the state");
			fl_buf_close(&b2);
			st.applied = applied;
		}
		fl_buf_close(&b1);
	}
	check_round_trip(&st, &b);
	fl_buf_close(&b);
	ctl_state_close(&st);

	/* As a snapshot. */
	ctl_state_init(&st);
	must(ctl_snapshot_restore(&st, base.data, base.len, NULL) == 0, "base");
	rc = ctl_snapshot_restore(&st, data, size, &err);
	must(rc == 0 || rc == FL_EFORMAT, "restore: an unexpected code");
	check_round_trip(&st, &b);
	if (rc == 0)
		must(b.len == size && memcmp(b.data, data, size) == 0,
		     "snapshot encodes otherwise");
	else
		must(b.len == base.len && memcmp(b.data, base.data, b.len) == 0,
		     "a refused snapshot changed the state");
	fl_buf_close(&b);
	ctl_state_close(&st);
	return 0;
}
