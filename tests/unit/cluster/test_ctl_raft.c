/* Unit tests for src/cluster/ctl_raft.c on libraft's in-memory fixture:
 * three servers, each with its own struct ctl_state. Commands applied
 * through raft_apply() on the leader reach every server's state alike; a
 * new leader commits a barrier first and the states stay alike; a command
 * retried with the same (client, seq) after leadership was lost applies
 * once; a server that was down comes back through a snapshot to the same
 * state. Every wait is bounded in simulated milliseconds (the fixture's
 * clock): no sleeps, no real time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <raft.h>
#include <raft/fixture.h>

#include "cluster/ctl_raft.h"

#include <stdlib.h>
#include <string.h>

#define N 3
#define WAIT 10000 /* simulated ms: a bound on every wait */

struct cluster {
	struct raft_fixture f;
	struct ctl_state st[N];
	struct ctl_raft cr[N];
};

static int setup(void **state)
{
	struct cluster *c = calloc(1, sizeof *c);
	struct raft_configuration conf;

	if (c == NULL || raft_fixture_initialize(&c->f) != 0)
		return -1;
	for (unsigned i = 0; i < N; i++) {
		ctl_state_init(&c->st[i]);
		ctl_raft_init(&c->cr[i], &c->st[i]);
		if (raft_fixture_grow(&c->f, &c->cr[i].fsm) != 0)
			return -1;
	}
	if (raft_fixture_configuration(&c->f, N, &conf) != 0)
		return -1;
	if (raft_fixture_bootstrap(&c->f, &conf) != 0)
		return -1;
	raft_configuration_close(&conf);
	if (raft_fixture_start(&c->f) != 0)
		return -1;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct cluster *c = *state;

	raft_fixture_close(&c->f);
	for (unsigned i = 0; i < N; i++) {
		ctl_raft_close(&c->cr[i]);
		ctl_state_close(&c->st[i]);
	}
	free(c);
	return 0;
}

/* ---- Requests ---- */

struct req {
	union {
		struct raft_apply apply;
		struct raft_barrier barrier;
	} u;
	struct cluster *c;
	unsigned server;
	bool done;
	int status;
	struct ctl_result result;
	bool has_result;
};

static void apply_cb(struct raft_apply *a, int status, void *result)
{
	struct req *q = a->data;

	q->done = true;
	q->status = status;
	q->has_result = result != NULL;
	if (result != NULL) {
		/* The glue's latest result: borrowed, read now (ctl_raft.h). */
		assert_ptr_equal(result, q->c->cr[q->server].last);
		q->result = *(struct ctl_result *)result;
	}
}

static void barrier_cb(struct raft_barrier *b, int status)
{
	struct req *q = b->data;

	q->done = true;
	q->status = status;
}

static bool is_done(struct raft_fixture *f, void *arg)
{
	(void)f;
	return ((struct req *)arg)->done;
}

/* Start applying @cmd on server @i; the request is @q. */
static void start_apply(struct cluster *c, unsigned i, const struct ctl_command *cmd,
			struct req *q)
{
	struct raft_buffer buf;

	memset(q, 0, sizeof *q);
	q->c = c;
	q->server = i;
	q->u.apply.data = q;
	assert_int_equal(ctl_raft_buffer(cmd, &buf), 0);
	assert_int_equal(buf.len % 8, 0);
	int rv = raft_apply(raft_fixture_get(&c->f, i), &q->u.apply, &buf, 1,
			    apply_cb);
	if (rv != 0) {
		raft_free(buf.base);
		fail_msg("raft_apply: %s", raft_strerror(rv));
	}
}

/* Apply @cmd through the leader @i and wait until every live server has
 * applied it; its result. */
static struct ctl_result apply_all(struct cluster *c, unsigned i,
				   struct ctl_command cmd)
{
	struct req q;

	start_apply(c, i, &cmd, &q);
	assert_true(raft_fixture_step_until(&c->f, is_done, &q, WAIT));
	assert_int_equal(q.status, 0);
	assert_true(q.has_result);
	for (unsigned k = 0; k < N; k++)
		if (raft_fixture_alive(&c->f, k))
			assert_true(raft_fixture_step_until_applied(
			    &c->f, k, q.u.apply.index, WAIT));
	return q.result;
}

/* A new leader's first duty: a barrier, committed, before serving. */
static void barrier(struct cluster *c, unsigned i)
{
	struct req q;

	memset(&q, 0, sizeof q);
	q.u.barrier.data = &q;
	assert_int_equal(raft_barrier(raft_fixture_get(&c->f, i), &q.u.barrier,
				      barrier_cb),
			 0);
	assert_true(raft_fixture_step_until(&c->f, is_done, &q, WAIT));
	assert_int_equal(q.status, 0);
}

static void elect(struct cluster *c, unsigned i)
{
	raft_fixture_elect(&c->f, i);
	assert_int_equal(raft_fixture_leader_index(&c->f), i);
	barrier(c, i);
}

/* ---- Commands ---- */

static struct ctl_command cmd(unsigned type, uint64_t client, uint64_t seq)
{
	struct ctl_command x;

	memset(&x, 0, sizeof x);
	x.type = (uint8_t)type;
	x.client = client;
	x.seq = seq;
	return x;
}

static struct ctl_command create_cmd(void)
{
	struct ctl_command x = cmd(CTL_CMD_CREATE, 1, 1);

	strcpy(x.u.create.vm, "lab");
	strcpy(x.u.create.first.addr, "10.0.0.1:7000");
	memset(x.u.create.first.key, 1, CTL_KEY);
	x.u.create.first.cpu = 4;
	x.u.create.first.state = CTL_M_ACTIVE;
	x.u.create.first.role = CTL_VOTER;
	strcpy(x.u.create.admin.name, "root");
	memset(x.u.create.admin.key, 0xa0, CTL_KEY);
	return x;
}

static struct ctl_command submit_cmd(uint64_t client, uint64_t seq)
{
	struct ctl_command x = cmd(CTL_CMD_SUBMIT, client, seq);

	strcpy(x.u.submit.owner, "root");
	return x;
}

static struct ctl_command member_cmd(unsigned k)
{
	struct ctl_command x = cmd(CTL_CMD_MEMBER_ADD, 1, 100 + k);

	x.u.member = create_cmd().u.create.first;
	snprintf(x.u.member.addr, sizeof x.u.member.addr, "10.0.1.%u:7000", k);
	memset(x.u.member.key, (int)(0x10 + k), CTL_KEY);
	return x;
}

/* Every server's state encodes to the same snapshot. */
static void assert_same_states(struct cluster *c)
{
	struct fl_buf b[N];

	for (unsigned i = 0; i < N; i++) {
		fl_buf_init(&b[i]);
		ctl_snapshot_encode(&c->st[i], &b[i]);
		assert_false(fl_buf_failed(&b[i]));
	}
	for (unsigned i = 1; i < N; i++) {
		assert_int_equal(b[i].len, b[0].len);
		assert_memory_equal(b[i].data, b[0].data, b[0].len);
	}
	for (unsigned i = 0; i < N; i++)
		fl_buf_close(&b[i]);
}

/* ---- Tests ---- */

static void test_commands_reach_every_server(void **state)
{
	struct cluster *c = *state;
	struct ctl_result r;

	elect(c, 0);
	r = apply_all(c, 0, create_cmd());
	assert_int_equal(r.rc, 0);
	for (unsigned k = 0; k < 4; k++) {
		r = apply_all(c, 0, member_cmd(k));
		assert_int_equal(r.rc, 0);
		assert_true(r.value == 2 + k);
	}
	for (uint64_t s = 1; s <= 3; s++) {
		r = apply_all(c, 0, submit_cmd(7, s));
		assert_int_equal(r.rc, 0);
		assert_true(r.value == s);
	}
	/* A refusal is a result too, the same everywhere. */
	r = apply_all(c, 0, create_cmd());
	assert_true(r.replay); /* client 1's seq 1, older than its last */
	assert_int_equal(r.rc, FL_ERANGE);
	struct ctl_command again = create_cmd();
	again.seq = 200; /* after the MEMBER_ADDs of client 1 */
	r = apply_all(c, 0, again);
	assert_int_equal(r.rc, FL_EEXIST);
	assert_same_states(c);
	for (unsigned i = 0; i < N; i++) {
		assert_string_equal(c->st[i].vm, "lab");
		assert_int_equal(c->st[i].nmembers, 5);
		assert_int_equal(c->st[i].nprocs, 3);
	}
}

static void test_new_leader_barrier_first(void **state)
{
	struct cluster *c = *state;
	struct ctl_result r;

	elect(c, 0);
	apply_all(c, 0, create_cmd());
	apply_all(c, 0, submit_cmd(7, 1));
	raft_fixture_depose(&c->f);
	assert_int_equal(raft_fixture_leader_index(&c->f), N);
	elect(c, 1); /* barrier committed before anything else */
	r = apply_all(c, 1, submit_cmd(7, 2));
	assert_int_equal(r.rc, 0);
	assert_true(r.value == 2);
	assert_same_states(c);
	/* And once more, to the third server. */
	raft_fixture_depose(&c->f);
	elect(c, 2);
	r = apply_all(c, 2, submit_cmd(8, 1));
	assert_true(r.value == 3);
	assert_same_states(c);
}

static void test_retry_after_leadership_lost(void **state)
{
	struct cluster *c = *state;
	struct ctl_result r;
	struct req q;

	elect(c, 0);
	apply_all(c, 0, create_cmd());
	/* The leader appends and sends the entry, but never hears back: it
	 * steps down, and the client learns nothing. */
	struct ctl_command first = submit_cmd(9, 1);

	start_apply(c, 0, &first, &q);
	raft_fixture_depose(&c->f);
	assert_true(raft_fixture_step_until(&c->f, is_done, &q, WAIT));
	assert_int_equal(q.status, RAFT_LEADERSHIPLOST);
	assert_false(q.has_result);
	/* A new leader; the client retries the same (client, seq) there. */
	elect(c, 1);
	r = apply_all(c, 1, submit_cmd(9, 1));
	assert_int_equal(r.rc, 0);
	assert_true(r.value == 1);
	/* The first try had reached server 1's log and was committed by
	 * the barrier: the retry is a replay. Either way, once. */
	assert_true(r.replay);
	assert_same_states(c);
	for (unsigned i = 0; i < N; i++)
		assert_int_equal(c->st[i].nprocs, 1);
}

static void test_snapshot_to_revived_server(void **state)
{
	struct cluster *c = *state;
	struct ctl_result r;

	for (unsigned i = 0; i < N; i++) {
		raft_set_snapshot_threshold(raft_fixture_get(&c->f, i), 4);
		raft_set_snapshot_trailing(raft_fixture_get(&c->f, i), 2);
	}
	elect(c, 0);
	apply_all(c, 0, create_cmd());
	raft_fixture_kill(&c->f, 2);
	for (uint64_t s = 1; s <= 12; s++) {
		r = apply_all(c, 0, submit_cmd(7, s));
		assert_true(r.value == s);
	}
	apply_all(c, 0, member_cmd(1));
	assert_true(raft_fixture_get(&c->f, 0)->log.snapshot.last_index > 0);
	/* Server 2 is far behind the leader's log: it gets a snapshot. */
	raft_fixture_revive(&c->f, 2);
	r = apply_all(c, 0, submit_cmd(7, 13));
	assert_true(r.value == 13);
	assert_true(c->cr[2].restores >= 1);
	assert_int_equal(c->cr[0].restores, 0);
	assert_same_states(c);
	assert_int_equal(c->st[2].nprocs, 13);
	/* The restored server goes on applying like the others. */
	apply_all(c, 0, submit_cmd(8, 1));
	assert_same_states(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_commands_reach_every_server,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_new_leader_barrier_first, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_retry_after_leadership_lost,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_to_revived_server,
					    setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
