/* The daemon's start-up, its Raft and its proposals (dm_int.h).
 *
 * Raft (libraft 0.15) runs on the loop thread with raft_uv's disk I/O
 * under --data/raft and our own transport (dm_net.c). What 0.15 needs
 * guarding against (docs/design.md):
 *   - a new leader may commit earlier terms' entries by counting
 *     replicas: it serves only once a barrier of its own term committed;
 *   - RAFT_LEADERSHIPLOST means "outcome unknown": every command carries
 *     a (client, seq) pair and the state machine applies it once, so a
 *     proposal is simply retried with the same pair until some leader
 *     answers;
 *   - entries are padded to 8 bytes (ctl_command_encode does it);
 *   - pre-vote on, and election/heartbeat timeouts tuned for fail-over in
 *     about a second on a LAN.
 * A follower forwards proposals to the leader over the peer connection
 * (PROPOSE); a proposal that meets no leader for DM_PROPOSE_MS fails with
 * FL_EAGAIN, and the client hears that the VM cannot be reached. */
#include "cluster/dm_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cluster/ctl_raft.h"

#define ELECTION_MS 500
#define HEARTBEAT_MS 50
#define SNAPSHOT_MS 2000
#define READY_MS 30000 /* to join, or come back, at most */

uint64_t dm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void dm_log(struct dm *d, const char *fmt, ...)
{
	char when[32];
	time_t t = time(NULL);
	struct tm tm;
	va_list ap;

	if (d == NULL || d->log == NULL)
		return;
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(d->log, "%s m%" PRIu32 " ", when, d->me.id);
	va_start(ap, fmt);
	vfprintf(d->log, fmt, ap);
	va_end(ap);
	fputc('\n', d->log);
	fflush(d->log);
}

void dm_ready(struct dm *d, const char *err)
{
	char line[512];
	int fd = d->cfg->ready_fd;

	if (d->ready_sent)
		return;
	d->ready_sent = true;
	if (d->cfg->ready != NULL) {
		char addr[CTL_NAME_MAX + CTL_ADDR_MAX + 2];
		snprintf(addr, sizeof addr, "%s@%s", d->me.vm, d->me.advertise);
		if (err != NULL)
			dm_log(d, "not serving: %s", err);
		else
			dm_log(d, "serving as machine %" PRIu32 " of VM %s at %s",
			       d->me.id, d->me.vm, d->me.advertise);
		d->cfg->ready(d->cfg, addr, d->me.id, err);
		return;
	}
	if (err != NULL) {
		snprintf(line, sizeof line, "error %s\n", err);
		dm_log(d, "not serving: %s", err);
	} else {
		snprintf(line, sizeof line, "ok %s@%s %" PRIu32 "\n", d->me.vm,
			 d->me.advertise, d->me.id);
		dm_log(d, "serving as machine %" PRIu32 " of VM %s at %s",
		       d->me.id, d->me.vm, d->me.advertise);
	}
	if (fd >= 0) {
		(void)fl_write_all(fd, line, strlen(line));
		close(fd);
	}
}

void dm_stop(struct dm *d, int status)
{
	if (d->stopping)
		return;
	d->stopping = true;
	d->exit_status = status;
	dm_log(d, "stopping");
	uv_stop(&d->loop);
}

bool dm_is_leader(struct dm *d)
{
	return d->raft_started && raft_state(&d->raft) == RAFT_LEADER &&
	       d->barrier_term == d->raft.current_term;
}

uint32_t dm_leader(struct dm *d)
{
	raft_id id = 0;
	const char *addr = NULL;

	if (!d->raft_started)
		return 0;
	raft_leader(&d->raft, &id, &addr);
	return (uint32_t)id;
}

/* ---- Proposals ---- */

static void prop_done(struct dm_prop *p, struct ctl_result r)
{
	struct dm *d = p->d;

	for (struct dm_prop **q = &d->props; *q != NULL; q = &(*q)->next)
		if (*q == p) {
			*q = p->next;
			break;
		}
	p->cb(p, r);
	fl_buf_close(&p->enc);
	free(p);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
	struct dm_prop *p = req->data;
	struct ctl_result r = {.rc = FL_EAGAIN};

	if (status == 0 && result != NULL) {
		r = *(struct ctl_result *)result; /* borrowed: copied */
		prop_done(p, r);
		return;
	}
	/* Lost leadership, or not leader any more: the outcome is unknown;
	 * retrying with the same (client, seq) applies it at most once. */
	p->state = DM_P_WAIT;
	if (p->d->stopping)
		prop_done(p, r);
}

static void prop_try(struct dm_prop *p)
{
	struct dm *d = p->d;
	uint32_t leader;

	if (dm_is_leader(d)) {
		struct raft_buffer b;
		b.len = p->enc.len;
		b.base = raft_malloc(b.len);
		if (b.base == NULL)
			return;
		memcpy(b.base, p->enc.data, b.len);
		p->ra.data = p;
		if (raft_apply(&d->raft, &p->ra, &b, 1, apply_cb) != 0) {
			raft_free(b.base);
			return; /* next tick */
		}
		p->state = DM_P_LOCAL;
		return;
	}
	if (p->here_only) {
		struct ctl_result r = {.rc = FL_EAGAIN};
		prop_done(p, r);
		return;
	}
	leader = dm_leader(d);
	if (leader == 0 || leader == d->me.id)
		return; /* an election, or our barrier: next tick */
	struct dm_peer *peer = dm_peer_get(d, leader, false);
	if (peer == NULL || peer->link == NULL)
		return;
	p->req = ++d->next_req;
	if (dm_send(peer->link, NET_MSG_PROPOSE, 0, p->req, p->enc.data,
		    p->enc.len) == 0) {
		p->state = DM_P_REMOTE;
		p->data2 = p->data2; /* unchanged: the caller's */
	}
}

static void propose(struct dm *d, const struct ctl_command *c,
		    void (*cb)(struct dm_prop *p, struct ctl_result r),
		    void *data, uint64_t data2, bool here_only)
{
	struct dm_prop *p = calloc(1, sizeof *p);

	if (p == NULL) {
		struct dm_prop tmp = {.d = d, .data = data, .data2 = data2};
		struct ctl_result r = {.rc = FL_ENOMEM};
		cb(&tmp, r);
		return;
	}
	p->d = d;
	p->cmd = *c;
	if (p->cmd.client == 0) {
		randombytes_buf(&p->cmd.client, sizeof p->cmd.client);
		p->cmd.client |= 1;
		p->cmd.seq = 1;
	}
	p->cb = cb;
	p->data = data;
	p->data2 = data2;
	p->here_only = here_only;
	p->deadline = dm_now_ms() + DM_PROPOSE_MS;
	fl_buf_init(&p->enc);
	ctl_command_encode(&p->cmd, &p->enc);
	p->next = d->props;
	d->props = p;
	prop_try(p);
}

void dm_propose(struct dm *d, const struct ctl_command *c,
		void (*cb)(struct dm_prop *p, struct ctl_result r), void *data,
		uint64_t data2)
{
	propose(d, c, cb, data, data2, false);
}

void dm_propose_here(struct dm *d, const struct ctl_command *c,
		     void (*cb)(struct dm_prop *p, struct ctl_result r),
		     uint64_t data2)
{
	propose(d, c, cb, NULL, data2, true);
}

void dm_on_propose_reply(struct dm *d, const struct net_header *h,
			 const uint8_t *pay)
{
	for (struct dm_prop *p = d->props; p != NULL; p = p->next) {
		if (p->state != DM_P_REMOTE || p->req != h->request)
			continue;
		if (h->type == NET_MSG_PROPOSE && h->length == 13) {
			struct fl_reader r;
			struct ctl_result res;
			fl_reader_init(&r, pay, h->length);
			res.rc = (int32_t)fl_get_u32(&r);
			res.value = fl_get_u64(&r);
			res.replay = fl_get_u8(&r) != 0;
			prop_done(p, res);
		} else {
			p->state = DM_P_WAIT; /* not the leader any more */
		}
		return;
	}
}

void dm_props_peer_lost(struct dm *d, uint32_t peer)
{
	(void)peer;
	for (struct dm_prop *p = d->props; p != NULL; p = p->next)
		if (p->state == DM_P_REMOTE)
			p->state = DM_P_WAIT;
}

/* The leader's side of a forwarded proposal. */
struct fwd {
	struct raft_apply ra;
	struct dm *d;
	uint32_t peer;
	uint64_t req;
};

static void fwd_reply(struct fwd *f, int rc, const struct ctl_result *r)
{
	struct dm_peer *peer = dm_peer_get(f->d, f->peer, false);

	if (peer != NULL && peer->link != NULL) {
		if (r != NULL) {
			uint8_t out[13];
			struct fl_buf b;
			fl_buf_init(&b);
			fl_buf_put_u32(&b, (uint32_t)r->rc);
			fl_buf_put_u64(&b, r->value);
			fl_buf_put_u8(&b, r->replay);
			if (!fl_buf_failed(&b) && b.len == sizeof out)
				dm_send(peer->link, NET_MSG_PROPOSE,
					NET_FLAG_REPLY, f->req, b.data, b.len);
			fl_buf_close(&b);
		} else {
			dm_send_error(peer->link, NET_MSG_PROPOSE, f->req, rc,
				      "not the leader");
		}
	}
	free(f);
}

static void fwd_apply_cb(struct raft_apply *req, int status, void *result)
{
	struct fwd *f = req->data;

	if (status == 0 && result != NULL) {
		struct ctl_result r = *(struct ctl_result *)result;
		fwd_reply(f, 0, &r);
		return;
	}
	fwd_reply(f, FL_EAGAIN, NULL);
}

void dm_on_propose(struct dm *d, struct dm_link *l, const struct net_header *h,
		   const uint8_t *pay)
{
	struct ctl_command c;
	struct fl_err err;
	struct raft_buffer b;
	struct fwd *f;

	if (ctl_command_decode(pay, h->length, &c, &err) != 0) {
		dm_send_error(l, NET_MSG_PROPOSE, h->request, FL_EFORMAT, "%s",
			      err.msg);
		return;
	}
	/* A machine may not create a VM or make itself admin. */
	if (c.type == CTL_CMD_CREATE || c.client == 0) {
		dm_send_error(l, NET_MSG_PROPOSE, h->request, FL_EPERM,
			      "a peer may not propose %s", ctl_cmd_name(c.type));
		return;
	}
	if (!dm_is_leader(d)) {
		dm_send_error(l, NET_MSG_PROPOSE, h->request, FL_EAGAIN,
			      "not the leader");
		return;
	}
	f = calloc(1, sizeof *f);
	b.len = h->length;
	b.base = f != NULL ? raft_malloc(b.len) : NULL;
	if (b.base == NULL) {
		free(f);
		dm_send_error(l, NET_MSG_PROPOSE, h->request, FL_ENOMEM,
			      "out of memory");
		return;
	}
	memcpy(b.base, pay, b.len);
	f->d = d;
	f->peer = l->peer_id;
	f->req = h->request;
	f->ra.data = f;
	if (raft_apply(&d->raft, &f->ra, &b, 1, fwd_apply_cb) != 0) {
		raft_free(b.base);
		fwd_reply(f, FL_EAGAIN, NULL);
	}
}

static void props_tick(struct dm *d)
{
	uint64_t now = dm_now_ms();
	struct dm_prop *p = d->props, *next;

	for (; p != NULL; p = next) {
		next = p->next;
		if (p->state != DM_P_WAIT)
			continue;
		if (now >= p->deadline) {
			struct ctl_result r = {.rc = FL_EAGAIN};
			prop_done(p, r);
			continue;
		}
		prop_try(p);
	}
}

/* ---- The leader's duties ---- */

static void barrier_cb(struct raft_barrier *req, int status)
{
	struct dm *d = req->data;
	raft_term term = (raft_term)(uintptr_t)0;

	(void)term;
	d->barrier_pending = false;
	if (status == 0 && raft_state(&d->raft) == RAFT_LEADER) {
		d->barrier_term = d->raft.current_term;
		dm_log(d, "leader for term %" PRIu64, (uint64_t)d->barrier_term);
	}
	free(req);
}

static void change_cb(struct raft_change *req, int status)
{
	struct dm *d = req->data;

	d->change_pending = false;
	if (status != 0)
		dm_log(d, "membership change failed: %s", raft_strerror(status));
	free(req);
}

static const struct raft_server *conf_find(struct dm *d, uint32_t id)
{
	for (unsigned i = 0; i < d->raft.configuration.n; i++)
		if (d->raft.configuration.servers[i].id == id)
			return &d->raft.configuration.servers[i];
	return NULL;
}

static void promote_cb(struct dm_prop *p, struct ctl_result r)
{
	(void)p;
	(void)r;
}

/* Bring Raft's configuration to what the member table says, one change at
 * a time: new members in (as spares, then their role), roles, leavers
 * out; and a standby promoted while voters are fewer than the maximum. */
static void reconcile(struct dm *d)
{
	struct raft_change *ch;
	size_t voters = 0;
	const struct ctl_member *standby = NULL;

	if (d->change_pending)
		return;
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		bool live = m->state == CTL_M_ACTIVE || m->state == CTL_M_LEAVING;
		voters += live && m->role == CTL_VOTER;
		if (live && m->role == CTL_STANDBY && standby == NULL &&
		    m->state == CTL_M_ACTIVE)
			standby = m;
	}
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		const struct raft_server *s = conf_find(d, m->id);
		bool live = m->state == CTL_M_ACTIVE || m->state == CTL_M_LEAVING;
		int want = m->role == CTL_VOTER ? RAFT_VOTER : RAFT_STANDBY;
		int rc = 0;

		if ((live && s != NULL && s->role == want) || (!live && s == NULL))
			continue;
		if (!live && m->id == d->me.id)
			continue; /* the leader leaving: it hands over first */
		ch = calloc(1, sizeof *ch);
		if (ch == NULL)
			return;
		ch->data = d;
		if (!live)
			rc = raft_remove(&d->raft, ch, m->id, change_cb);
		else if (s == NULL)
			rc = raft_add(&d->raft, ch, m->id, m->addr, change_cb);
		else
			rc = raft_assign(&d->raft, ch, m->id, want, change_cb);
		if (rc != 0) {
			free(ch);
			continue;
		}
		d->change_pending = true;
		dm_log(d, "membership: %s machine %" PRIu32,
		       !live ? "removing" : s == NULL ? "adding" : "assigning",
		       m->id);
		return;
	}
	if (voters < CTL_VOTERS_MAX && standby != NULL) {
		struct ctl_command c = {.type = CTL_CMD_MEMBER_STATE};
		c.u.mstate.id = standby->id;
		c.u.mstate.incarnation = standby->incarnation;
		c.u.mstate.state = standby->state;
		c.u.mstate.role = CTL_VOTER;
		d->change_pending = true; /* until it applies */
		dm_propose(d, &c, promote_cb, NULL, 0);
		d->change_pending = false;
	}
}

static void create_cb(struct dm_prop *p, struct ctl_result r)
{
	struct dm *d = p->d;

	if (r.rc != 0) {
		dm_log(d, "CREATE: %s", fl_errname(r.rc));
		dm_ready(d, "could not record the new VM");
		dm_stop(d, 70);
	}
}

static void transfer_cb(struct raft_transfer *req)
{
	struct dm *d = req->data;

	d->transfer_pending = false;
	free(req);
}

/* A leader that left the VM hands leadership over, so that the next
 * leader takes it out of Raft's configuration. */
static void hand_over(struct dm *d)
{
	struct raft_transfer *t;

	if (d->transfer_pending)
		return;
	t = calloc(1, sizeof *t);
	if (t == NULL)
		return;
	t->data = d;
	if (raft_transfer(&d->raft, t, 0, transfer_cb) != 0) {
		free(t);
		return;
	}
	d->transfer_pending = true;
	dm_log(d, "left: handing leadership over");
}

static void leader_tick(struct dm *d)
{
	const struct ctl_member *me;

	if (raft_state(&d->raft) != RAFT_LEADER)
		return;
	me = ctl_member_find(&d->st, d->me.id);
	if (me != NULL && me->state == CTL_M_LEFT && dm_is_leader(d)) {
		hand_over(d);
		return;
	}
	if (d->barrier_term != d->raft.current_term) {
		struct raft_barrier *b;
		if (d->barrier_pending)
			return;
		b = calloc(1, sizeof *b);
		if (b == NULL)
			return;
		b->data = d;
		if (raft_barrier(&d->raft, b, barrier_cb) != 0) {
			free(b);
			return;
		}
		d->barrier_pending = true;
		return;
	}
	if (d->cfg->create && !d->created && d->st.vm[0] == 0) {
		struct ctl_command c = {.type = CTL_CMD_CREATE};
		d->created = true;
		snprintf(c.u.create.vm, sizeof c.u.create.vm, "%s", d->me.vm);
		c.u.create.first.id = d->me.id;
		snprintf(c.u.create.first.addr, sizeof c.u.create.first.addr,
			 "%s", d->me.advertise);
		memcpy(c.u.create.first.key, d->me.key.pub, NET_KEY);
		c.u.create.first.cpu = d->cfg->provide.cpu;
		c.u.create.first.ram = d->cfg->provide.ram;
		c.u.create.first.disk = d->cfg->provide.disk;
		c.u.create.first.incarnation = d->me.incarnation;
		c.u.create.first.state = CTL_M_ACTIVE;
		c.u.create.first.role = CTL_VOTER;
		snprintf(c.u.create.admin.name, sizeof c.u.create.admin.name,
			 "admin");
		memcpy(c.u.create.admin.key, d->admin_pub, NET_KEY);
		dm_propose(d, &c, create_cb, NULL, 0);
	}
	if (d->st.vm[0] != 0)
		reconcile(d);
}

/* The loop polls without sleeping until @spin_until (DM_SPIN_NS),
 * yielding the core between polls. */
static void spin_cb(uv_idle_t *h)
{
	struct dm *d = h->data;

	if (uv_hrtime() >= d->spin_until)
		uv_idle_stop(h);
	else
		sched_yield();
}

void dm_spin(struct dm *d)
{
	if (d->spin.data == NULL) /* before the loop runs */
		return;
	d->spin_until = uv_hrtime() + DM_SPIN_NS;
	if (!uv_is_active((uv_handle_t *)&d->spin))
		uv_idle_start(&d->spin, spin_cb);
}

static void tick_cb(uv_timer_t *t)
{
	struct dm *d = t->data;

	if (d->stopping)
		return;
	if (d->raft_started)
		leader_tick(d);
	props_tick(d);
	dm_net_tick(d);
	dm_fail_tick(d);
	dm_procs_tick(d);
	if (!d->ready_sent) {
		const struct ctl_member *m = ctl_member_find(&d->st, d->me.id);
		if (d->st.vm[0] != 0 && m != NULL)
			dm_ready(d, NULL);
		else if (dm_now_ms() - d->started_ms > READY_MS) {
			dm_ready(d, d->cfg->join ? "the VM did not take this "
						   "machine in within 30 s"
						 : "the VM's control plane did "
						   "not answer within 30 s");
			dm_stop(d, 69);
		}
	}
}

static void signal_cb(uv_signal_t *s, int signum)
{
	struct dm *d = s->data;

	dm_log(d, "signal %d", signum);
	dm_stop(d, 0);
}

/* ---- Start-up ---- */

static int mkdir_p(const char *dir, struct fl_err *err)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return fl_err_set(err, FL_EIO, "%s: %s", dir, strerror(errno));
	return 0;
}

static int raft_begin(struct dm *d, bool bootstrap, struct fl_err *err)
{
	char dir[4096];
	int rc;

	snprintf(dir, sizeof dir, "%s/raft", d->cfg->data);
	if ((rc = mkdir_p(dir, err)))
		return rc;
	dm_transport_init(d);
	rc = raft_uv_init(&d->io, &d->loop, dir, &d->transport);
	if (rc != 0)
		return fl_err_set(err, FL_EIO, "raft: %s: %s", dir,
				  d->io.errmsg);
	ctl_raft_init(&d->fsm, &d->st);
	rc = raft_init(&d->raft, &d->io, &d->fsm.fsm, d->me.id, d->me.advertise);
	if (rc != 0) {
		raft_uv_close(&d->io);
		return fl_err_set(err, FL_EIO, "raft: %s", raft_strerror(rc));
	}
	raft_set_election_timeout(&d->raft, ELECTION_MS);
	raft_set_heartbeat_timeout(&d->raft, HEARTBEAT_MS);
	raft_set_install_snapshot_timeout(&d->raft, SNAPSHOT_MS);
	raft_set_pre_vote(&d->raft, true);
	{
		unsigned every = d->cfg->snapshot_every ? d->cfg->snapshot_every
							: 1024;
		raft_set_snapshot_threshold(&d->raft, every);
		raft_set_snapshot_trailing(&d->raft, every / 4 ? every / 4 : 1);
	}
	if (bootstrap) {
		struct raft_configuration conf;
		raft_configuration_init(&conf);
		rc = raft_configuration_add(&conf, d->me.id, d->me.advertise,
					    RAFT_VOTER);
		if (rc == 0)
			rc = raft_bootstrap(&d->raft, &conf);
		raft_configuration_close(&conf);
		if (rc != 0)
			return fl_err_set(err, FL_EIO, "raft bootstrap: %s",
					  raft_strerror(rc));
	}
	rc = raft_start(&d->raft);
	if (rc != 0)
		return fl_err_set(err, FL_EIO, "raft start: %s",
				  raft_errmsg(&d->raft));
	d->raft_started = true;
	return 0;
}

static void on_raft_closed(struct raft *r)
{
	struct dm *d = r->data;

	d->raft_closed = true;
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int dm_run(const struct dm_config *cfg)
{
	struct dm *d = calloc(1, sizeof *d);
	struct fl_err err;
	struct vm_node_options no;
	bool fresh = false;
	int rc, status;

	if (d == NULL) {
		fprintf(stderr, "flock: out of memory\n");
		return 70;
	}
	signal(SIGPIPE, SIG_IGN);
	pthread_rwlock_init(&d->sess_lock, NULL);
	d->cfg = cfg;
	d->log = stderr;
	d->started_ms = dm_now_ms();
	ctl_state_init(&d->st);
	if (net_crypto_init() != 0 || uv_loop_init(&d->loop) != 0) {
		dm_ready(d, "cannot set up libsodium or libuv");
		free(d);
		return 70;
	}
	rc = cl_identity_load(cfg->data, &d->me, &err);
	if (rc == FL_ENOENT && (cfg->create || cfg->join)) {
		fresh = true;
		memset(&d->me, 0, sizeof d->me);
		snprintf(d->me.vm, sizeof d->me.vm, "%s", cfg->vm);
		net_keypair_new(&d->me.key);
		snprintf(d->me.listen, sizeof d->me.listen, "%s", cfg->listen);
		snprintf(d->me.advertise, sizeof d->me.advertise, "%s",
			 cfg->advertise);
		d->me.id = cfg->create ? 1 : 0;
	} else if (rc == FL_ENOENT) {
		dm_ready(d, "no machine identity in --data (flock new or "
			    "flock join make one)");
		status = 66;
		goto out;
	} else if (rc) {
		dm_ready(d, err.msg);
		status = 66;
		goto out;
	} else if ((cfg->create || cfg->join) && cfg->vm[0] != 0 &&
		   strcmp(cfg->vm, d->me.vm) != 0) {
		char msg[256];
		snprintf(msg, sizeof msg,
			 "--data belongs to a machine of VM %s, not %s",
			 d->me.vm, cfg->vm);
		dm_ready(d, msg);
		status = 64;
		goto out;
	}
	d->me.incarnation++;
	{
		char tok[NET_TOKEN_TEXT];
		if (fresh && cfg->create)
			memcpy(tok, cfg->token, NET_TOKEN_TEXT);
		else if (fresh)
			memcpy(tok, cfg->token, NET_TOKEN_TEXT);
		else if (cl_token_load(cfg->data, tok, &err) != 0) {
			dm_ready(d, err.msg);
			status = 66;
			goto out;
		}
		if (net_token_psk(tok, d->token_psk) != 0) {
			dm_ready(d, "the join token is malformed");
			status = 64;
			goto out;
		}
		net_client_psk(d->token_psk, d->client_psk);
		if (fresh && (rc = cl_token_save(cfg->data, tok, &err)) != 0) {
			dm_ready(d, err.msg);
			status = 73;
			goto out;
		}
		sodium_memzero(tok, sizeof tok);
	}
	snprintf(d->prologue, sizeof d->prologue, "flock/1 %s", d->me.vm);

	vm_node_options_init(&no);
	no.cpus = cfg->provide.cpu;
	no.machine = d->me.id;
	no.memory = cfg->provide.ram; /* all its processes together */
	if ((rc = vm_node_new(&no, &d->node, &err)) != 0 ||
	    (rc = dm_parts_init(d, &err)) != 0) {
		dm_ready(d, err.msg);
		status = 70;
		goto out;
	}
	if ((rc = dm_net_start(d, &err)) != 0) {
		dm_ready(d, err.msg);
		status = 69;
		goto out;
	}
	if (fresh && cfg->join && (rc = dm_join(d, &err)) != 0) {
		dm_ready(d, err.msg);
		status = rc == FL_EPERM ? 77 : 69;
		goto out;
	}
	if (fresh && cfg->create) {
		/* The admin's client credentials, for `flock run --vm` from
		 * this account. */
		struct cl_cred cr;
		memset(&cr, 0, sizeof cr);
		snprintf(cr.vm, sizeof cr.vm, "%s", d->me.vm);
		snprintf(cr.user, sizeof cr.user, "admin");
		net_keypair_new(&cr.key);
		memcpy(cr.psk, d->client_psk, NET_KEY);
		snprintf(cr.addr, sizeof cr.addr, "%s", d->me.advertise);
		memcpy(d->admin_pub, cr.key.pub, NET_KEY);
		char dir[4200];
		snprintf(dir, sizeof dir, "%s/vms", cfg->home);
		rc = cl_cred_save(dir, &cr, &err);
		sodium_memzero(&cr, sizeof cr);
		if (rc) {
			dm_ready(d, err.msg);
			status = 73;
			goto out;
		}
	}
	if ((rc = cl_identity_save(cfg->data, &d->me, &err)) != 0) {
		dm_ready(d, err.msg);
		status = 73;
		goto out;
	}
	if ((rc = raft_begin(d, fresh && cfg->create, &err)) != 0) {
		dm_ready(d, err.msg);
		status = 70;
		goto out;
	}
	d->raft.data = d;
	uv_timer_init(&d->loop, &d->tick);
	d->tick.data = d;
	uv_timer_start(&d->tick, tick_cb, DM_TICK_MS, DM_TICK_MS);
	uv_idle_init(&d->loop, &d->spin);
	d->spin.data = d;
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	d->sigterm.data = d->sigint.data = d;
	uv_signal_start(&d->sigterm, signal_cb, SIGTERM);
	uv_signal_start(&d->sigint, signal_cb, SIGINT);
	dm_log(d, "started (incarnation %" PRIu32 ")", d->me.incarnation);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	status = d->exit_status;

out:
	dm_ready(d, "stopped before serving");
	dm_procs_close(d);
	dm_parts_close(d);
	if (d->raft_started) {
		raft_close(&d->raft, on_raft_closed);
		/* Raft closes once its disk writes are done (a snapshot may be
		 * on the thread pool): the tick timer wakes the loop meanwhile */
		uint64_t until = dm_now_ms() + 10000;
		while (!d->raft_closed && dm_now_ms() < until)
			uv_run(&d->loop, UV_RUN_ONCE);
		if (d->raft_closed)
			raft_uv_close(&d->io); /* after raft_close's callback */
	}
	dm_net_close(d);
	/* Every handle closed and every request done (a name being
	 * resolved on libuv's thread pool still points at the loop) before
	 * the loop, which lives in @d, goes. */
	{
		uint64_t until = dm_now_ms() + 10000;
		do {
			uv_walk(&d->loop, walk_close, NULL);
			uv_run(&d->loop, UV_RUN_NOWAIT);
			if (uv_loop_alive(&d->loop))
				uv_run(&d->loop, UV_RUN_ONCE);
		} while (uv_loop_close(&d->loop) == UV_EBUSY &&
			 dm_now_ms() < until);
	}
	while (d->props != NULL) {
		struct dm_prop *p = d->props;
		d->props = p->next;
		fl_buf_close(&p->enc);
		free(p);
	}
	vm_node_free(d->node);
	dm_sess_close(d); /* after the node's workers and the loop */
	ctl_raft_close(&d->fsm);
	ctl_state_close(&d->st);
	sodium_memzero(&d->me.key, sizeof d->me.key);
	free(d);
	return status;
}
