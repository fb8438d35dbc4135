/* Sessions (dm_int.h): what the parts of processes send each other
 * arrives once, in order, across broken connections.
 *
 * The part layer's frames (PART, PROC, PART_QUIET, PART_FREE,
 * PART_STATS) to a machine are numbered 1, 2, 3 ... for the pair of
 * incarnations at the two ends, the number in the header's request id.
 * The sender keeps each frame until the receiver says it has taken it in
 * (ACK, now and then); the receiver takes only the next number, drops
 * what it has (a frame sent twice) and closes a connection that skips
 * one. A new connection starts with RESUME both ways: the sender's
 * incarnation, the receiver's as the sender knows it, and the last
 * number the sender took in from the receiver; each side then writes
 * again what came after that, and only then anything new. So a thread
 * handed to another machine, a diff, an atomic's request or its reply is
 * applied once: never lost while both machines live, never twice.
 *
 * A new incarnation at the other end (it restarted, or was fenced and
 * came back) starts a new session: what was kept for the old one goes,
 * as the old one's processes do (dm_fail.c). So does everything, both
 * ways, when this machine comes back as a new incarnation. A machine
 * declared lost gets nothing more until a new incarnation of it resumes.
 *
 * What is kept waits while the link is down: the part layer's protocols
 * ask and wait for answers, so what piles up is bounded by what the
 * processes have in flight, and a machine silent for --lost-after is
 * declared lost, which lets it all go.
 *
 * Threads: a session's sending side is under its lock (any thread: the
 * node's workers send straight to the socket when nothing is before
 * them, as net_conn_send_direct allows); the table of sessions is under
 * a rwlock (sessions are made on first use, freed at the end); the
 * receiving side and everything else is the loop thread's. Lock order:
 * a session's lock, then its connection's. */
#include "cluster/dm_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The receiver acknowledges at least every this many frames or bytes,
 * and on every tick (DM_TICK_MS) when it took something in since. */
#define ACK_FRAMES 64
#define ACK_BYTES (256u << 10)

struct dm_sframe {
	struct dm_sframe *next;
	uint64_t seq;
	uint8_t type;
	size_t len;
	uint8_t bytes[];
};

struct dm_sess {
	struct dm *d;
	uint32_t id;
	pthread_mutex_t lock;
	/* Under @lock. */
	struct net_conn *conn; /* resumed: frames may go on it */
	bool dead;             /* its incarnation was declared lost */
	uint64_t seq;          /* the last number given */
	/* kept, oldest first; @wpos: the first not written on @conn */
	struct dm_sframe *head, *tail, *wpos;
	size_t kept;
	/* The loop's. */
	uint32_t peer_inc;   /* the incarnation at the other end; 0: none */
	uint64_t rx, rx_told; /* the last number taken in, and told */
	size_t rx_bytes;      /* taken in since the last ACK */
};

bool dm_sess_type(uint8_t type)
{
	return type == NET_MSG_PART || type == NET_MSG_PROC ||
	       type == NET_MSG_PART_QUIET || type == NET_MSG_PART_FREE ||
	       type == NET_MSG_PART_STATS;
}

static void store(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ---- The table ---- */

static struct dm_sess *sess_find(struct dm *d, uint32_t id)
{
	for (size_t i = 0; i < d->nsess; i++)
		if (d->sess[i]->id == id)
			return d->sess[i];
	return NULL;
}

static struct dm_sess *sess_get(struct dm *d, uint32_t id)
{
	struct dm_sess *s, **v;

	pthread_rwlock_rdlock(&d->sess_lock);
	s = sess_find(d, id);
	pthread_rwlock_unlock(&d->sess_lock);
	if (s != NULL || id == 0 || id == d->me.id)
		return s;
	pthread_rwlock_wrlock(&d->sess_lock);
	s = sess_find(d, id);
	if (s == NULL && (v = realloc(d->sess, (d->nsess + 1) * sizeof *v))) {
		d->sess = v;
		s = calloc(1, sizeof *s);
		if (s != NULL) {
			s->d = d;
			s->id = id;
			pthread_mutex_init(&s->lock, NULL);
			d->sess[d->nsess++] = s;
		}
	}
	pthread_rwlock_unlock(&d->sess_lock);
	return s;
}

/* ---- Sending ---- */

/* Under @s->lock: drop what the other end has taken in (up to @upto). */
static void trim(struct dm_sess *s, uint64_t upto)
{
	while (s->head != NULL && s->head->seq <= upto) {
		struct dm_sframe *f = s->head;
		s->head = f->next;
		if (s->wpos == f)
			s->wpos = f->next;
		s->kept--;
		free(f);
	}
	if (s->head == NULL)
		s->tail = NULL;
}

/* Under @s->lock: a new session (both ways' numbers start again). */
static void forget(struct dm_sess *s)
{
	trim(s, UINT64_MAX);
	s->seq = 0;
	s->wpos = NULL;
	s->rx = s->rx_told = 0;
	s->rx_bytes = 0;
}

/* Under @s->lock: write what is not written yet, in order, while the
 * connection takes it. On a worker only straight to the socket; what
 * cannot go so waits for the loop, which is woken. */
static void pump(struct dm_sess *s, bool on_loop)
{
	struct dm *d = s->d;
	bool wake = false;

	while (s->conn != NULL && s->wpos != NULL) {
		struct dm_sframe *f = s->wpos;
		struct net_header h = {
			.version = NET_VERSION,
			.type = f->type,
			.request = f->seq,
			.machine = d->me.id,
			.incarnation = d->me.incarnation,
		};
		int rc = on_loop ? net_conn_send(s->conn, &h, f->bytes, f->len)
				 : net_conn_send_direct(s->conn, &h, f->bytes,
							f->len);
		if (rc != 0 && rc != 1) {
			/* (FL_ codes are positive) full: on_drain comes;
			 * closing: on_close comes; or not possible from
			 * here: the loop's turn. The frame is still to
			 * write. */
			wake = !on_loop && rc == FL_EAGAIN;
			break;
		}
		s->wpos = f->next;
		if (rc == 1) { /* the rest of it waits for the loop */
			wake = true;
			break;
		}
	}
	if (wake)
		uv_async_send(&d->sess_async);
}

int dm_sess_send(struct dm *d, uint32_t to, uint8_t type, const void *head,
		 size_t head_len, const void *p, size_t n)
{
	struct dm_sess *s = sess_get(d, to);
	struct dm_sframe *f;

	if (s == NULL)
		return FL_ENOMEM;
	f = malloc(sizeof *f + head_len + n);
	if (f == NULL)
		return FL_ENOMEM;
	f->next = NULL;
	f->type = type;
	f->len = head_len + n;
	if (head_len > 0)
		memcpy(f->bytes, head, head_len);
	if (n > 0)
		memcpy(f->bytes + head_len, p, n);
	pthread_mutex_lock(&s->lock);
	if (s->dead) {
		pthread_mutex_unlock(&s->lock);
		free(f);
		return FL_EPIPE;
	}
	f->seq = ++s->seq;
	if (s->tail != NULL)
		s->tail->next = f;
	else
		s->head = f;
	s->tail = f;
	if (s->wpos == NULL)
		s->wpos = f;
	s->kept++;
	pump(s, pthread_equal(pthread_self(), d->loop_thread));
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* The loop, woken by a worker: what direct sends left, then the rest. */
static void wake_cb(uv_async_t *a)
{
	struct dm *d = a->data;

	pthread_rwlock_rdlock(&d->sess_lock);
	for (size_t i = 0; i < d->nsess; i++) {
		struct dm_sess *s = d->sess[i];
		pthread_mutex_lock(&s->lock);
		if (s->conn != NULL) {
			net_conn_flush(s->conn);
			pump(s, true);
		}
		pthread_mutex_unlock(&s->lock);
	}
	pthread_rwlock_unlock(&d->sess_lock);
}

void dm_sess_drain(struct dm *d, uint32_t id)
{
	struct dm_sess *s = sess_get(d, id);

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	pump(s, true);
	pthread_mutex_unlock(&s->lock);
}

/* ---- Connections ---- */

void dm_sess_ready(struct dm *d, struct dm_link *l)
{
	struct dm_sess *s = sess_get(d, l->peer_id);
	uint8_t out[16];

	if (s == NULL) {
		net_conn_close(l->conn, "out of memory");
		return;
	}
	store(out, d->me.incarnation, 4);
	store(out + 4, s->peer_inc, 4);
	store(out + 8, s->rx, 8);
	dm_send(l, NET_MSG_RESUME, 0, 0, out, sizeof out);
	s->rx_told = s->rx;
	s->rx_bytes = 0;
}

void dm_sess_detach(struct dm *d, uint32_t id)
{
	struct dm_sess *s = sess_get(d, id);

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	s->conn = NULL;
	pthread_mutex_unlock(&s->lock);
}

void dm_sess_resume(struct dm *d, struct dm_link *l,
		    const struct net_header *h, const uint8_t *p)
{
	struct dm_sess *s = sess_get(d, l->peer_id);
	uint32_t inc = fl_load_u32(p), mine = fl_load_u32(p + 4);
	uint64_t rx = fl_load_u64(p + 8);
	size_t again = 0;

	if (s == NULL || inc != h->incarnation) {
		net_conn_close(l->conn, s == NULL ? "out of memory"
						  : "a RESUME for another "
						    "incarnation");
		return;
	}
	pthread_mutex_lock(&s->lock);
	if (inc < s->peer_inc) {
		pthread_mutex_unlock(&s->lock);
		net_conn_close(l->conn, "a RESUME from an older incarnation");
		return;
	}
	if (inc != s->peer_inc) {
		/* A new incarnation there: a new session. What was kept
		 * for an old one goes; what was sent before any session
		 * (none since this incarnation of ours began) is this
		 * one's. */
		if (s->peer_inc != 0) {
			dm_log(d, "machine %" PRIu32 ": incarnation %" PRIu32
				  " after %" PRIu32 ": %zu frames kept for "
				  "the old one dropped",
			       s->id, inc, s->peer_inc, s->kept);
			forget(s);
		}
		s->peer_inc = inc;
		s->dead = false;
	}
	if (mine != d->me.incarnation)
		rx = 0; /* what it took in was an older incarnation's of ours */
	if (rx > s->seq) {
		pthread_mutex_unlock(&s->lock);
		net_conn_close(l->conn, "RESUME after a frame never sent");
		return;
	}
	trim(s, rx);
	s->wpos = s->head;
	again = s->kept; /* written before (again) or not yet */
	s->conn = l->conn;
	pump(s, true);
	pthread_mutex_unlock(&s->lock);
	if (again > 0)
		dm_log(d, "machine %" PRIu32 ": resumed after frame %" PRIu64
			  ": %zu frames sent again or for the first time",
		       s->id, rx, again);
}

void dm_sess_ack(struct dm *d, struct dm_link *l, const struct net_header *h,
		 const uint8_t *p)
{
	struct dm_sess *s = sess_get(d, l->peer_id);
	uint64_t rx = fl_load_u64(p);

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	if (h->incarnation != s->peer_inc || rx > s->seq) {
		pthread_mutex_unlock(&s->lock);
		net_conn_close(l->conn, "an ACK of frames never sent");
		return;
	}
	trim(s, rx);
	pthread_mutex_unlock(&s->lock);
}

static void send_ack(struct dm_sess *s, struct dm_link *l)
{
	uint8_t out[8];

	store(out, s->rx, 8);
	if (dm_send(l, NET_MSG_ACK, 0, 0, out, sizeof out) == 0) {
		s->rx_told = s->rx;
		s->rx_bytes = 0;
	}
}

bool dm_sess_take(struct dm *d, struct dm_link *l, const struct net_header *h)
{
	struct dm_sess *s = sess_get(d, l->peer_id);

	if (s == NULL)
		return false;
	if (h->incarnation != s->peer_inc) {
		net_conn_close(l->conn, "a part frame before RESUME");
		return false;
	}
	if (h->request <= s->rx)
		return false; /* had it: sent again after a reconnect */
	if (h->request != s->rx + 1) {
		net_conn_close(l->conn, "a part frame out of sequence");
		return false;
	}
	s->rx++;
	s->rx_bytes += h->length;
	if (s->rx - s->rx_told >= ACK_FRAMES || s->rx_bytes >= ACK_BYTES)
		send_ack(s, l);
	return true;
}

size_t dm_sess_kept(struct dm *d, uint32_t id)
{
	struct dm_sess *s = sess_get(d, id);
	size_t n;

	if (s == NULL)
		return 0;
	pthread_mutex_lock(&s->lock);
	n = s->kept;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/* ---- Losses, ticks ---- */

void dm_sess_lost(struct dm *d, uint32_t id, uint32_t incarnation)
{
	struct dm_sess *s = sess_get(d, id);

	if (s == NULL)
		return;
	pthread_mutex_lock(&s->lock);
	/* (No session yet: the lost incarnation's RESUME, like all its
	 * frames, is dropped as it comes; a newer one's starts it.) */
	if (s->peer_inc != 0 && s->peer_inc <= incarnation) {
		forget(s);
		s->conn = NULL;
		s->dead = true;
	}
	pthread_mutex_unlock(&s->lock);
}

void dm_sess_fenced(struct dm *d)
{
	pthread_rwlock_rdlock(&d->sess_lock);
	for (size_t i = 0; i < d->nsess; i++) {
		struct dm_sess *s = d->sess[i];
		pthread_mutex_lock(&s->lock);
		forget(s);
		s->conn = NULL;
		s->peer_inc = 0;
		pthread_mutex_unlock(&s->lock);
	}
	pthread_rwlock_unlock(&d->sess_lock);
}

void dm_sess_tick(struct dm *d)
{
	pthread_rwlock_rdlock(&d->sess_lock);
	for (size_t i = 0; i < d->nsess; i++) {
		struct dm_sess *s = d->sess[i];
		struct dm_peer *pe;

		if (s->rx == s->rx_told)
			continue;
		pe = dm_peer_get(d, s->id, false);
		if (pe != NULL && pe->link != NULL && pe->link->ready)
			send_ack(s, pe->link);
	}
	pthread_rwlock_unlock(&d->sess_lock);
}

int dm_sess_init(struct dm *d)
{
	if (uv_async_init(&d->loop, &d->sess_async, wake_cb) != 0)
		return FL_EIO;
	d->sess_async.data = d;
	return 0;
}

void dm_sess_close(struct dm *d)
{
	for (size_t i = 0; i < d->nsess; i++) {
		struct dm_sess *s = d->sess[i];
		trim(s, UINT64_MAX);
		pthread_mutex_destroy(&s->lock);
		free(s);
	}
	free(d->sess);
	d->sess = NULL;
	d->nsess = 0;
	pthread_rwlock_destroy(&d->sess_lock);
}
