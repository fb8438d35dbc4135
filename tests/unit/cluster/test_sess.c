/* Unit tests for src/cluster/dm_sess.c: the sessions that carry the part
 * layer's frames between two machines once each and in order, across
 * broken connections, restarts and losses.
 *
 * The real dm_sess.c runs here against a model of what surrounds it in
 * the daemon, written at its link seams (dm_send, dm_peer_get, dm_log,
 * net_conn_*, uv_async_*): two machines whose connections carry frames
 * in order each way and break at seeded points -- what was in flight is
 * lost but for a prefix, which still arrives before the close -- and
 * whose ends learn of a new connection one at a time, a newer connection
 * replacing an older one at each end as dm_net.c does (the replaced
 * link's late frames are dropped there); write queues with a cap
 * (FL_EAGAIN, then a drain); sends from a worker thread
 * (net_conn_send_direct: gone, partly gone so the loop must flush, or
 * not possible from there so the loop is woken); machines restarting as
 * a new incarnation (their state gone), fenced (the same daemon, a new
 * incarnation), and declared lost by the other (whose frames from then
 * on are dropped, dm_fail_frame_ok). Each seed runs a random schedule of
 * these, then heals (a connection, everything delivered, acks) and
 * checks:
 *   - no frame is taken twice, by any incarnation;
 *   - frames are taken in the order they were sent, within each pair of
 *     incarnations; without restarts or fences, every frame sent is
 *     taken, exactly once, in order;
 *   - frames sent after the heal are taken (the session serves again);
 *   - the session layer never closes a connection (it does so on a
 *     protocol violation, which this model never commits);
 *   - once acknowledged, nothing is kept (dm_sess_kept).
 * SESS_SEEDS seeds (default 400; make stress runs thousands). A failing
 * seed prints its schedule: SESS_SEED=N reruns one, SESS_VERBOSE=1 says
 * every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/dm_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 3000
#define MAX_SENT 4096  /* frames one machine sends in a run, at most */
#define MAX_CONNS 256

/* ---- The model ---- */

struct frame {
	struct frame *next;
	struct net_header h;
	size_t len;
	uint8_t p[];
};

struct conn;

/* One end of a connection; the test's struct net_conn. */
struct net_conn {
	struct conn *k;
	int side;        /* the machine at this end */
	bool ready;      /* on_ready came here */
	bool broken;     /* the connection broke, or this end was closed */
	bool gone;       /* on_close came here */
	bool drain;      /* FL_EAGAIN was given here: a drain is owed */
	bool flush;      /* a direct send left a rest for the loop */
	int cap;         /* the write queue's cap, in frames */
	struct dm_link link;
};

struct conn {
	struct net_conn end[2];
	/* w[i]: frames written at end i, in order, for end 1 - i */
	struct frame *head[2], **tail[2];
	int n[2];
	int inc[2]; /* each end's machine's incarnation when it was made */
};

struct mach {
	struct dm *d;
	uint32_t id, inc;
	struct dm_peer peer; /* the other machine */
	uv_async_cb wake;    /* dm_sess_init's */
	bool woken;
	uint32_t lost_inc;   /* the other's incarnation declared lost here */
	uint32_t restarts;   /* of the other since this one declared loss */
};

/* What the runs went through, summed over the seeds (printed at the
 * end, and each must have come: a schedule that never reaches a case
 * tests nothing of it). A repeated frame never comes in this model: a
 * connection is replaced at each end at once, and a closed end reads
 * nothing more (net_conn.h), so a RESUME's count is never stale; the
 * session drops one all the same. */
enum ev {
	EV_BREAK, EV_FULL, EV_DRAIN, EV_NOT_DIRECT, EV_PARTLY, EV_WAKE,
	EV_RESUME, EV_RESENT, EV_RESTART, EV_FENCE, EV_LOST, EV_LOST_DROP,
	EV_OLD_DROPPED, EV__N
};
static const char *const ev_name[EV__N] = {
	"breaks", "full queues", "drains", "direct refused", "direct partly",
	"loop wakes", "resumes", "resumes sending again", "restarts",
	"fences", "losses declared", "lost-incarnation drops",
	"old sessions dropped",
};
static unsigned long counts[EV__N];

static struct {
	unsigned seed;
	uint64_t rng;
	bool verbose, faults, restarts;
	struct mach m[2];
	struct conn *conns[MAX_CONNS];
	int nconns;
	pthread_t worker; /* a thread id that is not the loop's */
	/* frames: counter -> times taken, per sending machine */
	uint8_t taken[2][MAX_SENT];
	uint32_t sent[2];       /* counters given out */
	/* the last counter taken from each sender in the current pair of
	 * incarnations (reset when either changes), and that pair */
	int64_t last[2];
	uint32_t last_inc[2][2];
	int complaints;
	char complaint[256];
	struct fl_buf trace;
} S;

static uint64_t rnd(void)
{
	S.rng ^= S.rng << 13;
	S.rng ^= S.rng >> 7;
	S.rng ^= S.rng << 17;
	return S.rng;
}

static bool chance(unsigned per_mille)
{
	return rnd() % 1000 < per_mille;
}

static void note(const char *fmt, ...)
{
	va_list ap;
	char line[256];

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (S.verbose)
		fprintf(stderr, "seed %u: %s\n", S.seed, line);
	if (S.trace.len < (64u << 10))
		fl_buf_printf(&S.trace, "%s\n", line);
}

static int mach_of(const struct dm *d)
{
	return d == S.m[0].d ? 0 : 1;
}

/* ---- The seams ---- */

void dm_log(struct dm *d, const char *fmt, ...)
{
	va_list ap;
	char line[256];

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	note("m%d log: %s", mach_of(d), line);
	if (strstr(line, "sent again") != NULL)
		counts[EV_RESENT]++;
	if (strstr(line, "kept for the old one dropped") != NULL)
		counts[EV_OLD_DROPPED]++;
}

struct dm_peer *dm_peer_get(struct dm *d, uint32_t id, bool make)
{
	struct mach *m = &S.m[mach_of(d)];

	(void)make;
	return id == m->peer.id ? &m->peer : NULL;
}

static int wire_put(struct net_conn *e, const struct net_header *h,
		    const void *p, size_t len)
{
	struct conn *k = e->k;
	struct frame *f = malloc(sizeof *f + len);

	assert_non_null(f);
	f->next = NULL;
	f->h = *h;
	f->h.length = (uint32_t)len;
	f->len = len;
	if (len > 0)
		memcpy(f->p, p, len);
	*k->tail[e->side] = f;
	k->tail[e->side] = &f->next;
	k->n[e->side]++;
	return 0;
}

int net_conn_send(struct net_conn *c, const struct net_header *h,
		  const void *payload, size_t len)
{
	if (c->broken || !c->ready)
		return c->broken ? FL_EPIPE : FL_EINVAL;
	if (c->k->n[c->side] >= c->cap) {
		note("m%d send %s %" PRIu64 ": full", c->side,
		     net_msg_name(h->type), h->request);
		c->drain = true;
		counts[EV_FULL]++;
		return FL_EAGAIN;
	}
	note("m%d send %s %" PRIu64, c->side, net_msg_name(h->type),
	     h->request);
	return wire_put(c, h, payload, len);
}

int net_conn_send_direct(struct net_conn *c, const struct net_header *h,
			 const void *payload, size_t len)
{
	if (c->broken || !c->ready || c->flush ||
	    c->k->n[c->side] >= c->cap || chance(200)) {
		note("m%d direct %" PRIu64 ": not from here", c->side, h->request);
		counts[EV_NOT_DIRECT]++;
		return FL_EAGAIN; /* not from here: the loop's turn */
	}
	wire_put(c, h, payload, len);
	if (chance(200)) {
		note("m%d direct %" PRIu64 ": partly", c->side, h->request);
		counts[EV_PARTLY]++;
		c->flush = true; /* the socket took part of it */
		return 1;
	}
	note("m%d direct %" PRIu64 ": went", c->side, h->request);
	return 0;
}

void net_conn_flush(struct net_conn *c)
{
	c->flush = false;
}

static void end_close(struct net_conn *e);

void net_conn_close(struct net_conn *c, const char *reason)
{
	/* only the session layer closes connections in this model */
	S.complaints++;
	snprintf(S.complaint, sizeof S.complaint, "%s", reason);
	note("m%d closes a connection: %s", c->side, reason);
	end_close(c);
}

int uv_async_init(uv_loop_t *loop, uv_async_t *a, uv_async_cb cb)
{
	(void)loop;
	for (int i = 0; i < 2; i++)
		if (S.m[i].d != NULL && a == &S.m[i].d->sess_async)
			S.m[i].wake = cb;
	return 0;
}

int uv_async_send(uv_async_t *a)
{
	for (int i = 0; i < 2; i++)
		if (S.m[i].d != NULL && a == &S.m[i].d->sess_async)
			S.m[i].woken = true;
	return 0;
}

int dm_send(struct dm_link *l, uint8_t type, uint16_t flags, uint64_t req,
	    const void *p, size_t n)
{
	struct net_header h = {.version = NET_VERSION, .type = type,
			       .flags = flags, .request = req,
			       .machine = l->d->me.id,
			       .incarnation = l->d->me.incarnation};

	if (l->conn == NULL)
		return FL_EPIPE;
	return net_conn_send(l->conn, &h, p, n);
}

/* ---- Machines ---- */

static void mach_start(int i)
{
	struct mach *m = &S.m[i];
	struct dm *d = calloc(1, sizeof *d);

	assert_non_null(d);
	m->d = d;
	m->id = (uint32_t)i + 1;
	d->me.id = m->id;
	d->me.incarnation = m->inc;
	d->loop_thread = pthread_self();
	pthread_rwlock_init(&d->sess_lock, NULL);
	memset(&m->peer, 0, sizeof m->peer);
	m->peer.d = d;
	m->peer.id = (uint32_t)(1 - i) + 1;
	m->woken = false;
	assert_int_equal(dm_sess_init(d), 0);
	assert_non_null(m->wake);
}

static void mach_stop(int i)
{
	dm_sess_close(S.m[i].d);
	free(S.m[i].d);
	S.m[i].d = NULL;
}

/* ---- Connections ---- */

static void frames_free(struct conn *k, int side)
{
	while (k->head[side] != NULL) {
		struct frame *f = k->head[side];
		k->head[side] = f->next;
		free(f);
	}
	k->tail[side] = &k->head[side];
	k->n[side] = 0;
}

/* What end @side wrote that is still in flight: all but a prefix of
 * @keep frames lost. */
static void frames_keep(struct conn *k, int side, int keep)
{
	struct frame **q = &k->head[side];
	int n = 0;

	while (*q != NULL && n < keep) {
		q = &(*q)->next;
		n++;
	}
	while (*q != NULL) {
		struct frame *f = *q;
		*q = f->next;
		free(f);
	}
	k->tail[side] = q;
	k->n[side] = n;
}

static void conn_new(void)
{
	struct conn *k;

	if (S.nconns == MAX_CONNS)
		return;
	k = calloc(1, sizeof *k);
	assert_non_null(k);
	for (int s = 0; s < 2; s++) {
		struct net_conn *e = &k->end[s];
		e->k = k;
		e->side = s;
		e->cap = 2 + (int)(rnd() % 16);
		e->link.d = S.m[s].d;
		e->link.conn = e;
		e->link.kind = DM_PEER;
		e->link.peer_id = S.m[1 - s].id;
		k->tail[s] = &k->head[s];
		k->inc[s] = (int)S.m[s].inc;
	}
	S.conns[S.nconns++] = k;
	note("connection %d dialed", S.nconns - 1);
}

/* dm_net.c's peer_detach, as far as sessions go. */
static void peer_detach(int side)
{
	struct mach *m = &S.m[side];

	dm_sess_detach(m->d, m->peer.id);
	m->peer.link = NULL;
}

/* on_ready at end @e: it replaces the peer's older link, if any. */
static void end_ready(struct net_conn *e)
{
	struct mach *m = &S.m[e->side];

	e->ready = true;
	e->link.ready = true;
	if (m->peer.link != NULL && m->peer.link != &e->link) {
		struct dm_link *old = m->peer.link;
		peer_detach(e->side);
		old->peer = NULL;
		end_close(old->conn);
	}
	m->peer.link = &e->link;
	e->link.peer = &m->peer;
	dm_sess_ready(m->d, &e->link);
}

/* This end is closed (by its machine, or the connection broke): nothing
 * more arrives here, what it had not written yet is dropped, what it
 * wrote may still arrive but for a lost tail; on_close comes later. */
static void end_close(struct net_conn *e)
{
	struct conn *k = e->k;

	frames_free(k, 1 - e->side); /* nothing more arrives here */
	if (e->broken)
		return;
	e->broken = true;
	frames_keep(k, e->side, (int)(rnd() % (unsigned)(k->n[e->side] + 1)));
	k->end[1 - e->side].broken = true; /* its writes fail from now */
}

/* on_close at end @e (dm_net.c's link_close). */
static void end_gone(struct net_conn *e)
{
	struct mach *m = &S.m[e->side];

	e->gone = true;
	if (e->link.peer != NULL && m->peer.link == &e->link)
		peer_detach(e->side);
	e->link.peer = NULL;
	e->link.conn = NULL;
}

/* The connection breaks under both ends: each way, what was in flight
 * is lost but for a prefix, which each end still reads before its
 * on_close. */
static void conn_break(struct conn *k)
{
	for (int s = 0; s < 2; s++) {
		if (!k->end[s].broken)
			frames_keep(k, s, (int)(rnd() % (unsigned)(k->n[s] + 1)));
		k->end[s].broken = true;
	}
}

/* ---- Frames ---- */

static void send_one(int side, bool from_worker)
{
	struct mach *m = &S.m[side];
	uint8_t p[80];
	size_t n = 16 + rnd() % 64;
	uint32_t c = S.sent[side];
	int rc;

	if (c >= MAX_SENT)
		return;
	memset(p, 0xab, sizeof p);
	memcpy(p, &c, 4);
	memcpy(p + 4, &m->inc, 4);
	if (from_worker)
		m->d->loop_thread = S.worker;
	rc = dm_sess_send(m->d, m->peer.id, NET_MSG_PROC, p, 8, p + 8, n - 8);
	m->d->loop_thread = pthread_self();
	if (rc == 0)
		S.sent[side]++;
	else
		assert_int_equal(rc, FL_EPIPE); /* the other was lost */
	note("m%d sends %u%s: %d", side, c, from_worker ? " (worker)" : "", rc);
}

static void take(int side, const struct frame *f)
{
	int from = 1 - side;
	uint32_t c, inc;

	assert_true(f->len >= 8);
	memcpy(&c, f->p, 4);
	memcpy(&inc, f->p + 4, 4);
	note("m%d takes %u from m%d's incarnation %u", side, c, from, inc);
	assert_true(c < S.sent[from]);
	if (S.taken[from][c]++ != 0)
		fail_msg("seed %u: frame %u from m%d taken twice\n%s", S.seed, c,
			 from, S.trace.data);
	if (S.last_inc[from][0] != inc ||
	    S.last_inc[from][1] != S.m[side].inc) {
		S.last_inc[from][0] = inc;
		S.last_inc[from][1] = S.m[side].inc;
		S.last[from] = -1;
	}
	if ((int64_t)c <= S.last[from])
		fail_msg("seed %u: frame %u from m%d after %" PRId64 "\n%s",
			 S.seed, c, from, S.last[from], S.trace.data);
	if (!S.restarts && (int64_t)c != S.last[from] + 1)
		fail_msg("seed %u: frame %u from m%d after %" PRId64
			 " (a gap)\n%s",
			 S.seed, c, from, S.last[from], S.trace.data);
	S.last[from] = c;
}

/* The next frame at end @e (written at the other end), as dm_net.c's
 * link_frame hands it on. */
static void deliver(struct net_conn *e)
{
	struct conn *k = e->k;
	int w = 1 - e->side;
	struct frame *f = k->head[w];
	struct mach *m = &S.m[e->side];

	k->head[w] = f->next;
	if (k->head[w] == NULL)
		k->tail[w] = &k->head[w];
	k->n[w]--;
	if (e->link.peer == NULL) {
		note("m%d drops a frame of a replaced connection", e->side);
	} else if (f->h.incarnation <= m->lost_inc) {
		note("m%d drops a frame of lost incarnation %u", e->side,
		     f->h.incarnation);
		counts[EV_LOST_DROP]++;
	} else if (f->h.type == NET_MSG_RESUME) {
		assert_int_equal(f->len, 16);
		note("m%d resume from incarnation %u", e->side, f->h.incarnation);
		counts[EV_RESUME]++;
		dm_sess_resume(m->d, &e->link, &f->h, f->p);
	} else if (f->h.type == NET_MSG_ACK) {
		assert_int_equal(f->len, 8);
		dm_sess_ack(m->d, &e->link, &f->h, f->p);
	} else {
		assert_int_equal(f->h.type, NET_MSG_PROC);
		note("m%d gets frame %" PRIu64, e->side, f->h.request);
		if (dm_sess_take(m->d, &e->link, &f->h))
			take(e->side, f);
	}
	free(f);
}

/* ---- Faults ---- */

/* Machine @side restarts (a new daemon, a new incarnation) or is fenced
 * (the same daemon comes back as one): its connections break. */
static void renew(int side, bool restart)
{
	struct mach *m = &S.m[side];

	for (int i = 0; i < S.nconns; i++) {
		struct conn *k = S.conns[i];
		struct net_conn *e = &k->end[side];
		if (k->inc[side] != (int)m->inc || e->gone)
			continue;
		/* a handshake under way with the old incarnation fails */
		if (!k->end[1 - side].ready)
			k->end[1 - side].broken = true;
		if (restart) {
			/* gone with the daemon: what it wrote may still
			 * arrive but for a tail, nothing more arrives there,
			 * and no on_close comes there */
			conn_break(k);
			frames_free(k, 1 - side);
			e->gone = true;
			e->link.peer = NULL;
		} else {
			/* dm_fail_fenced closes every link */
			end_close(e);
		}
	}
	m->inc++;
	S.m[1 - side].restarts++;
	counts[restart ? EV_RESTART : EV_FENCE]++;
	note("m%d %s: incarnation %u", side, restart ? "restarts" : "fenced",
	     m->inc);
	if (restart) {
		mach_stop(side);
		mach_start(side);
	} else {
		m->d->me.incarnation = m->inc;
		dm_sess_fenced(m->d);
	}
}

/* Machine @side is declared lost by the other. */
static void declare_lost(int side)
{
	struct mach *o = &S.m[1 - side];
	uint32_t inc = S.m[side].inc - 1;

	if (o->restarts == 0 || inc <= o->lost_inc)
		return;
	o->lost_inc = inc;
	o->restarts = 0;
	note("m%d declares m%d's incarnation %u lost", 1 - side, side, inc);
	counts[EV_LOST]++;
	dm_sess_lost(o->d, S.m[side].id, inc);
}

/* ---- Steps ---- */

static struct net_conn *pick_deliverable(void)
{
	struct net_conn *c[2 * MAX_CONNS];
	int n = 0;

	for (int i = 0; i < S.nconns; i++) {
		struct conn *k = S.conns[i];
		for (int s = 0; s < 2; s++)
			if (k->n[1 - s] > 0 && k->end[s].ready && !k->end[s].gone)
				c[n++] = &k->end[s];
	}
	return n > 0 ? c[rnd() % (unsigned)n] : NULL;
}

/* What the loop does besides frames: readies, on_close, drains, wakes.
 * One of them, at random; false when none is due. */
static bool housekeeping(void)
{
	struct net_conn *c[2 * MAX_CONNS + 2];
	int n = 0, wakes = 0;

	for (int i = 0; i < S.nconns; i++) {
		struct conn *k = S.conns[i];
		for (int s = 0; s < 2; s++) {
			struct net_conn *e = &k->end[s];
			bool drained = k->n[1 - s] == 0;
			if (e->gone)
				continue;
			if ((!e->ready && !e->broken) ||
			    (e->broken && drained) ||
			    (e->drain && k->n[s] < e->cap))
				c[n++] = e;
		}
	}
	for (int i = 0; i < 2; i++)
		wakes += S.m[i].woken;
	if (n + wakes == 0)
		return false;
	{
		unsigned r = (unsigned)(rnd() % (unsigned)(n + wakes));
		if (r >= (unsigned)n) {
			int i = S.m[0].woken ? (S.m[1].woken && chance(500)) : 1;
			S.m[i].woken = false;
			counts[EV_WAKE]++;
			S.m[i].wake(&S.m[i].d->sess_async);
			return true;
		}
		struct net_conn *e = c[r];
		struct mach *m = &S.m[e->side];
		if (!e->ready && !e->broken) {
			note("m%d: connection ready", e->side);
			end_ready(e);
		} else if (e->broken && e->k->n[1 - e->side] == 0) {
			note("m%d: connection closed", e->side);
			end_gone(e);
		} else {
			e->drain = false;
			counts[EV_DRAIN]++;
			if (m->peer.link == &e->link)
				dm_sess_drain(m->d, m->peer.id);
		}
	}
	return true;
}

static bool connected(void)
{
	for (int i = 0; i < S.nconns; i++) {
		struct conn *k = S.conns[i];
		if (S.m[0].peer.link == &k->end[0].link &&
		    S.m[1].peer.link == &k->end[1].link && !k->end[0].broken)
			return true;
	}
	return false;
}

static void step(void)
{
	unsigned r = (unsigned)(rnd() % 1000);
	int side = (int)(rnd() % 2);
	struct net_conn *e;

	if (r < 250) {
		send_one(side, chance(300));
	} else if (r < 650) {
		if ((e = pick_deliverable()) != NULL)
			deliver(e);
	} else if (r < 850) {
		housekeeping();
	} else if (r < 900) {
		dm_sess_tick(S.m[side].d);
	} else if (r < 940) {
		if (!connected() || chance(100))
			conn_new();
	} else if (r < 970) {
		if (S.faults && S.nconns > 0) {
			struct conn *k = S.conns[rnd() % (unsigned)S.nconns];
			if (!k->end[0].broken || !k->end[1].broken) {
				note("connection breaks");
				counts[EV_BREAK]++;
				conn_break(k);
			}
		}
	} else if (S.restarts && r < 975) {
		renew(side, chance(500));
	} else if (S.restarts && r < 990) {
		declare_lost(side);
	}
}

/* Everything delivered, every close and ready seen, and a live
 * connection both ways; acks told. */
static void heal(void)
{
	for (int round = 0; round < 100; round++) {
		bool busy = false;
		struct net_conn *e;
		while ((e = pick_deliverable()) != NULL || housekeeping()) {
			if (e != NULL)
				deliver(e);
			busy = true;
		}
		if (!connected()) {
			conn_new();
			continue;
		}
		for (int i = 0; i < 2; i++) {
			dm_sess_tick(S.m[i].d);
			if (dm_sess_kept(S.m[i].d, S.m[1 - i].id) != 0)
				busy = true;
		}
		if (!busy && pick_deliverable() == NULL)
			return;
	}
	fail_msg("seed %u: no quiet after healing\n%s", S.seed, S.trace.data);
}

static void run_seed(unsigned seed)
{
	memset(&S.taken, 0, sizeof S.taken);
	memset(S.sent, 0, sizeof S.sent);
	memset(S.last_inc, 0, sizeof S.last_inc);
	S.last[0] = S.last[1] = -1;
	S.seed = seed;
	S.rng = 0x9e3779b97f4a7c15ull * (seed + 1);
	S.faults = seed % 8 != 0;
	S.restarts = seed % 2 == 1;
	S.complaints = 0;
	S.nconns = 0;
	fl_buf_init(&S.trace);
	for (int i = 0; i < 2; i++) {
		S.m[i].inc = 1;
		S.m[i].lost_inc = 0;
		S.m[i].restarts = 0;
		mach_start(i);
	}
	note("seed %u: faults %d, restarts %d", seed, S.faults, S.restarts);
	for (int i = 0; i < STEPS; i++)
		step();
	heal();
	/* the session serves again: a few frames each way */
	uint32_t c0[2] = {S.sent[0], S.sent[1]};
	for (int n = 0; n < 5; n++)
		for (int i = 0; i < 2; i++)
			send_one(i, n % 2 == 1);
	heal();
	if (S.complaints != 0)
		fail_msg("seed %u: the session closed a connection: %s\n%s",
			 seed, S.complaint, S.trace.data);
	for (int i = 0; i < 2; i++) {
		int from = 1 - i;
		assert_int_equal(S.sent[from], c0[from] + 5);
		for (uint32_t c = S.restarts ? c0[from] : 0; c < S.sent[from];
		     c++)
			if (S.taken[from][c] != 1)
				fail_msg("seed %u: frame %u from m%d taken %d "
					 "times\n%s",
					 seed, c, from, S.taken[from][c],
					 S.trace.data);
		assert_int_equal(dm_sess_kept(S.m[i].d, S.m[from].id), 0);
	}
	for (int i = 0; i < 2; i++)
		mach_stop(i);
	for (int i = 0; i < S.nconns; i++) {
		frames_free(S.conns[i], 0);
		frames_free(S.conns[i], 1);
		free(S.conns[i]);
	}
	fl_buf_close(&S.trace);
}

static void *nothing(void *arg)
{
	return arg;
}

static void test_sessions(void **state)
{
	const char *one = getenv("SESS_SEED"), *n = getenv("SESS_SEEDS");
	int seeds = n != NULL && atoi(n) > 0 ? atoi(n) : 400;

	(void)state;
	S.verbose = getenv("SESS_VERBOSE") != NULL;
	assert_int_equal(pthread_create(&S.worker, NULL, nothing, NULL), 0);
	pthread_join(S.worker, NULL);
	if (one != NULL) {
		run_seed((unsigned)atoi(one));
		return;
	}
	for (int s = 0; s < seeds; s++)
		run_seed((unsigned)s);
	fprintf(stderr, "%d seeds:", seeds);
	for (int e = 0; e < EV__N; e++)
		fprintf(stderr, "%s %lu %s", e ? "," : "", counts[e], ev_name[e]);
	fprintf(stderr, "\n");
	for (int e = 0; e < EV__N; e++)
		assert_true(counts[e] > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sessions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
