/* The daemon's links (dm_int.h): every connection, who is at its other
 * end, heartbeats, joining, and the Raft transport.
 *
 * Who is who. The first handshake message says what the initiator is (a
 * peer machine, a client, or a machine that joins), and the responder
 * picks the pre-shared key that kind must prove: the token's for machines,
 * the clients' (derived one-way from it) for clients. The last message
 * names the initiator: a peer gives its member id, which must be a member
 * whose static key is the one recorded at its join; a client gives a user
 * name whose recorded key must be the one it proved. The responder's
 * payload gives its member id, which a dialing peer checks the same way.
 * One connection per pair of machines: the lower id dials; a newer
 * connection from the same member replaces an older one.
 *
 * Raft's transport. Raft asks to connect to a server: we make a
 * socketpair, hand Raft one end as its stream, and relay the other end's
 * bytes as RAFT frames over the peer's secure connection; the receiving
 * machine makes its own socketpair and hands Raft the accepted end. Raft
 * never sees the network, and the id it is told a stream comes from is
 * the one the handshake proved. A connection that goes closes its
 * streams; Raft reconnects by itself. */
#include "cluster/dm_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#define PING_MS 500
#define IDLE_MS 5000
#define DIAL_MIN_MS 100
#define DIAL_MAX_MS 2000

static void link_ready(struct net_conn *c, const uint8_t peer[NET_KEY],
		       const uint8_t *payload, size_t len);
static void link_frame(struct net_conn *c, const struct net_header *h,
		       const uint8_t *payload);
static void link_drain(struct net_conn *c);
static void link_close(struct net_conn *c, const char *reason);

static const struct net_conn_callbacks link_cb = {
	.on_ready = link_ready,
	.on_frame = link_frame,
	.on_drain = link_drain,
	.on_close = link_close,
};

int dm_send(struct dm_link *l, uint8_t type, uint16_t flags, uint64_t req,
	    const void *p, size_t n)
{
	struct net_header h = {
		.version = NET_VERSION,
		.type = type,
		.flags = flags,
		.request = req,
		.machine = l->d->me.id,
		.incarnation = l->d->me.incarnation,
	};

	if (l->conn == NULL)
		return FL_EPIPE;
	return net_conn_send(l->conn, &h, p, n);
}

int dm_send_error(struct dm_link *l, uint8_t type, uint64_t req, int code,
		  const char *fmt, ...)
{
	char msg[1024];
	struct fl_buf b;
	va_list ap;
	int rc;

	(void)type;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fl_buf_init(&b);
	dm_error_encode(code, msg, &b);
	rc = fl_buf_failed(&b) ? FL_ENOMEM
			       : dm_send(l, NET_MSG_ERROR, NET_FLAG_REPLY, req,
					 b.data, b.len);
	fl_buf_close(&b);
	return rc;
}

struct dm_peer *dm_peer_get(struct dm *d, uint32_t id, bool make)
{
	struct dm_peer *p;

	for (p = d->peers; p != NULL; p = p->next)
		if (p->id == id)
			return p;
	if (!make || id == 0 || id == d->me.id)
		return NULL;
	p = calloc(1, sizeof *p);
	if (p == NULL)
		return NULL;
	p->d = d;
	p->id = id;
	p->backoff = DIAL_MIN_MS;
	p->since = dm_now_ms();
	p->next = d->peers;
	d->peers = p;
	return p;
}

/* The key member @id must prove: the member table's, else what our join
 * reply or peers file said. */
static bool member_key(struct dm *d, uint32_t id, uint8_t key[NET_KEY],
		       char *addr, size_t an)
{
	const struct ctl_member *m = ctl_member_find(&d->st, id);
	struct dm_peer *p;

	if (m != NULL) {
		/* A lost member may come back (as a newer incarnation: its
		 * older one's frames are refused, dm_fail.c). */
		if (m->state == CTL_M_LEFT)
			return false;
		memcpy(key, m->key, NET_KEY);
		if (addr != NULL)
			snprintf(addr, an, "%s", m->addr);
		return true;
	}
	p = dm_peer_get(d, id, false);
	if (p == NULL || sodium_is_zero(p->key, NET_KEY))
		return false;
	memcpy(key, p->key, NET_KEY);
	if (addr != NULL)
		snprintf(addr, an, "%s", p->addr);
	return true;
}

/* ---- Raft streams ---- */

static void rs_closed(uv_handle_t *h)
{
	free(h->data);
}

static void rs_close(struct dm_rstream *s, bool tell)
{
	struct dm_peer *p = s->peer;

	if (s->closing)
		return;
	s->closing = true;
	if (p != NULL) {
		for (struct dm_rstream **q = &p->streams; *q != NULL;
		     q = &(*q)->next)
			if (*q == s) {
				*q = s->next;
				break;
			}
		if (tell && p->link != NULL) {
			uint8_t m[5];
			m[0] = s->mine ? 0 : 1;
			memcpy(m + 1, &s->id, 4);
			dm_send(p->link, NET_MSG_RAFT, 0, 0, m, sizeof m);
		}
	}
	s->peer = NULL;
	uv_close((uv_handle_t *)&s->pipe, rs_closed);
}

static void rs_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf)
{
	(void)h;
	if (want > 65536)
		want = 65536;
	buf->base = malloc(want);
	buf->len = buf->base != NULL ? want : 0;
}

static void rs_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct dm_rstream *s = st->data;

	if (n > 0 && s->peer != NULL && s->peer->link != NULL) {
		struct fl_buf b;
		int rc;
		fl_buf_init(&b);
		/* direction: 0 when the sender opened the stream */
		fl_buf_put_u8(&b, s->mine ? 0 : 1);
		fl_buf_put(&b, &s->id, 4);
		fl_buf_put(&b, buf->base, (size_t)n);
		rc = fl_buf_failed(&b) ? FL_ENOMEM
				       : dm_send(s->peer->link, NET_MSG_RAFT, 0, 0,
						 b.data, b.len);
		fl_buf_close(&b);
		if (rc != 0)
			rs_close(s, true); /* Raft reconnects */
	} else if (n < 0) {
		rs_close(s, true);
	}
	free(buf->base);
}

/* A socketpair: @raft_end becomes Raft's stream (allocated with
 * raft_malloc, which Raft frees), the other end our relay. */
static struct dm_rstream *rs_new(struct dm_peer *p, bool mine, uint32_t id,
				 uv_stream_t **raft_end)
{
	struct dm *d = p->d;
	struct dm_rstream *s;
	uv_pipe_t *rp;
	int fds[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
		return NULL;
	s = calloc(1, sizeof *s);
	rp = raft_malloc(sizeof *rp);
	if (s == NULL || rp == NULL) {
		free(s);
		raft_free(rp);
		close(fds[0]);
		close(fds[1]);
		return NULL;
	}
	uv_pipe_init(&d->loop, rp, 0);
	uv_pipe_init(&d->loop, &s->pipe, 0);
	if (uv_pipe_open(rp, fds[0]) != 0 || uv_pipe_open(&s->pipe, fds[1]) != 0) {
		/* cannot happen for a fresh socketpair; give up cleanly */
		close(fds[0]);
		close(fds[1]);
		uv_close((uv_handle_t *)rp, (uv_close_cb)raft_free);
		s->pipe.data = s;
		uv_close((uv_handle_t *)&s->pipe, rs_closed);
		return NULL;
	}
	s->peer = p;
	s->mine = mine;
	s->id = id;
	s->pipe.data = s;
	s->next = p->streams;
	p->streams = s;
	uv_read_start((uv_stream_t *)&s->pipe, rs_alloc, rs_read);
	*raft_end = (uv_stream_t *)rp;
	return s;
}

struct rs_write {
	uv_write_t w;
	char data[];
};

static void rs_written(uv_write_t *w, int status)
{
	(void)status;
	free(w);
}

static void on_raft_frame(struct dm *d, struct dm_peer *p, const uint8_t *pay,
			  size_t n)
{
	uint8_t dir = pay[0];
	uint32_t id;
	struct dm_rstream *s;

	memcpy(&id, pay + 1, 4);
	/* dir 0: the sender opened it, so it is one we accepted (mine =
	 * false); dir 1: we opened it. */
	for (s = p->streams; s != NULL; s = s->next)
		if (s->id == id && s->mine == (dir == 1))
			break;
	if (n == 5) { /* closed over there */
		if (s != NULL)
			rs_close(s, false);
		return;
	}
	if (s == NULL) {
		uv_stream_t *raft_end;
		if (dir != 0 || d->accept_cb == NULL || p->link == NULL)
			return; /* a stream of ours that went: drop */
		s = rs_new(p, false, id, &raft_end);
		if (s == NULL)
			return;
		d->accept_cb(&d->transport, p->id, p->addr, raft_end);
	}
	{
		struct rs_write *w = malloc(sizeof *w + (n - 5));
		uv_buf_t b;
		if (w == NULL) {
			rs_close(s, true);
			return;
		}
		memcpy(w->data, pay + 5, n - 5);
		b = uv_buf_init(w->data, (unsigned)(n - 5));
		if (uv_write(&w->w, (uv_stream_t *)&s->pipe, &b, 1, rs_written) != 0) {
			free(w);
			rs_close(s, true);
		}
	}
}

static int tr_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
	(void)t;
	(void)id;
	(void)address;
	return 0;
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
	struct dm *d = t->impl; /* raft_uv owns t->data */

	d->accept_cb = cb;
	return 0;
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req,
		      raft_id id, const char *address, raft_uv_connect_cb cb)
{
	struct dm *d = t->impl; /* raft_uv owns t->data */
	struct dm_peer *p = dm_peer_get(d, (uint32_t)id, true);
	uv_stream_t *raft_end;

	(void)address;
	if (p == NULL || p->link == NULL || d->stopping)
		return RAFT_NOCONNECTION; /* Raft retries */
	if (rs_new(p, true, ++p->next_stream, &raft_end) == NULL)
		return RAFT_NOCONNECTION;
	cb(req, raft_end, 0);
	return 0;
}

static void tr_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
	struct dm *d = t->impl; /* raft_uv owns t->data */

	d->accept_cb = NULL;
	if (cb != NULL)
		cb(t);
}

void dm_transport_init(struct dm *d)
{
	memset(&d->transport, 0, sizeof d->transport);
	d->transport.impl = d;
	d->transport.init = tr_init;
	d->transport.listen = tr_listen;
	d->transport.connect = tr_connect;
	d->transport.close = tr_close;
}

/* ---- Links ---- */

static struct dm_link *link_new(struct dm *d)
{
	struct dm_link *l = calloc(1, sizeof *l);

	if (l == NULL)
		return NULL;
	l->d = d;
	l->next = d->links;
	d->links = l;
	return l;
}

/* Take @l off the daemon's list and free it. */
static void link_forget(struct dm *d, struct dm_link *l)
{
	for (struct dm_link **q = &d->links; *q != NULL; q = &(*q)->next)
		if (*q == l) {
			*q = l->next;
			break;
		}
	free(l);
}

/* What every connection a machine dials starts with: our key, the
 * token's pre-shared key, the VM's prologue, and what we are. */
static void dial_options(struct dm *d, struct net_conn_options *o,
			 const uint8_t *hello)
{
	memset(o, 0, sizeof *o);
	o->keys = &d->me.key;
	o->psk = d->token_psk;
	o->prologue = d->prologue;
	o->prologue_len = strlen(d->prologue);
	o->hello = hello;
	o->hello_len = 1;
}

static void peer_detach(struct dm_peer *p)
{
	struct dm *d = p->d;

	dm_sess_detach(d, p->id);
	p->link = NULL;
	p->since = dm_now_ms();
	while (p->streams != NULL)
		rs_close(p->streams, false);
	dm_props_peer_lost(d, p->id);
}

static void link_close(struct net_conn *c, const char *reason)
{
	struct dm_link *l = net_conn_user(c);
	struct dm *d = l->d;

	if (l->kind == DM_PEER && l->peer != NULL && l->peer->link == l) {
		dm_log(d, "machine %" PRIu32 ": connection closed: %s",
		       l->peer_id, reason);
		l->peer->dialing = false;
		peer_detach(l->peer);
	} else if (l->kind == DM_PEER && l->dialed && l->peer != NULL) {
		l->peer->dialing = false;
	}
	if (l->kind == DM_CLIENT && l->ready)
		dm_client_gone(l);
	l->conn = NULL;
	link_forget(d, l);
}

static void link_drain(struct net_conn *c)
{
	struct dm_link *l = net_conn_user(c);

	if (l->kind == DM_CLIENT)
		dm_client_drain(l);
	else if (l->kind == DM_PEER && l->peer != NULL && l->peer->link == l)
		dm_sess_drain(l->d, l->peer_id);
}

/* The responder's choice of pre-shared key, from the first message's
 * payload: what the initiator says it is. */
static int link_hello(struct net_conn *c, const uint8_t *p, size_t n,
		      uint8_t psk[NET_KEY])
{
	struct dm_link *l = net_conn_user(c);

	if (n != 1 || (p[0] != DM_PEER && p[0] != DM_CLIENT && p[0] != DM_JOINER))
		return FL_EFORMAT;
	l->kind = p[0];
	memcpy(psk, l->kind == DM_CLIENT ? l->d->client_psk : l->d->token_psk,
	       NET_KEY);
	return 0;
}

static void link_ready(struct net_conn *c, const uint8_t peer[NET_KEY],
		       const uint8_t *payload, size_t len)
{
	struct dm_link *l = net_conn_user(c);
	struct dm *d = l->d;
	uint8_t key[NET_KEY];
	struct fl_reader r;

	memcpy(l->key, peer, NET_KEY);
	fl_reader_init(&r, payload, len);
	if (l->dialed) {
		/* a peer we dialed: its payload is its member id */
		uint32_t id = len == 4 ? fl_get_u32(&r) : 0;
		if (id != l->peer_id || !member_key(d, id, key, NULL, 0) ||
		    sodium_memcmp(key, peer, NET_KEY) != 0) {
			net_conn_close(c, "the machine's key is not the one "
					  "its member id has");
			return;
		}
	} else if (l->kind == DM_PEER) {
		uint32_t id = len == 8 ? fl_get_u32(&r) : 0;
		if (id == 0 || id == d->me.id || !member_key(d, id, key, NULL, 0) ||
		    sodium_memcmp(key, peer, NET_KEY) != 0) {
			dm_log(d, "refused a machine claiming id %" PRIu32
				  " from %s: not a member with that key",
			       id, net_conn_peer(c));
			net_conn_close(c, "not a member of this VM");
			return;
		}
		l->peer_id = id;
	} else if (l->kind == DM_CLIENT) {
		const struct ctl_user *u;
		if (len == 0 || len > CTL_NAME_MAX) {
			net_conn_close(c, "no user name");
			return;
		}
		memcpy(l->user, payload, len);
		l->user[len] = 0;
		if (d->st.vm[0] == 0) {
			/* Restarted, its control-plane state not back yet: no
			 * table to find the user in. Again in a moment. */
			l->ready = true;
			dm_send_error(l, NET_MSG_ERROR, 0, FL_EAGAIN,
				      "machine %" PRIu32 " is starting: its "
				      "control-plane state is not back yet",
				      d->me.id);
			l->ready = false;
			net_conn_close(c, "starting");
			return;
		}
		u = ctl_user_find(&d->st, l->user);
		if (u == NULL || sodium_memcmp(u->key, peer, NET_KEY) != 0) {
			/* Say so before closing: the client exits 77. */
			l->ready = true;
			dm_send_error(l, NET_MSG_ERROR, 0, FL_EPERM,
				      "not a user of VM %s: %s", d->me.vm,
				      u == NULL ? "no such user"
						: "the key is not that user's");
			l->ready = false;
			net_conn_close(c, "unknown user");
			return;
		}
		l->admin = u->admin;
	}
	l->ready = true;
	if (l->kind == DM_PEER) {
		struct dm_peer *p = dm_peer_get(d, l->peer_id, true);
		if (p == NULL) {
			net_conn_close(c, "out of memory");
			return;
		}
		if (p->link != NULL && p->link != l) {
			struct dm_link *old = p->link;
			peer_detach(p);
			old->peer = NULL;
			net_conn_close(old->conn, "replaced by a newer connection");
		}
		p->link = l;
		p->dialing = false;
		p->backoff = DIAL_MIN_MS;
		p->last_heard = dm_now_ms();
		l->peer = p;
		member_key(d, p->id, key, p->addr, sizeof p->addr);
		dm_log(d, "machine %" PRIu32 ": connected (%s)", p->id,
		       net_conn_peer(c));
		dm_sess_ready(d, l);
	}
}

static void on_join(struct dm_link *l, const struct net_header *h,
		    const uint8_t *p);

static void link_frame(struct net_conn *c, const struct net_header *h,
		       const uint8_t *p)
{
	struct dm_link *l = net_conn_user(c);
	struct dm *d = l->d;
	bool reply = (h->flags & NET_FLAG_REPLY) != 0;

	if (l->kind == DM_CLIENT) {
		if (h->machine != 0) {
			net_conn_close(c, "a client's frame names a machine");
			return;
		}
		dm_client_frame(l, h, p);
		return;
	}
	if (l->kind == DM_JOINER) {
		if (h->type != NET_MSG_JOIN || reply) {
			net_conn_close(c, "a joining machine may only ask to join");
			return;
		}
		on_join(l, h, p);
		return;
	}
	/* a peer */
	if (l->peer == NULL)
		return; /* replaced by a newer connection: closing */
	if (h->machine != l->peer_id) {
		net_conn_close(c, "a frame from another machine's id");
		return;
	}
	if (!dm_fail_frame_ok(d, l, h))
		return;
	if (l->peer != NULL)
		l->peer->last_heard = dm_now_ms();
	switch (h->type) {
	case NET_MSG_PING: {
		struct fl_err err;
		uint64_t clock;
		if (dm_ping_decode(p, h->length, &clock, &l->peer->load, &err) != 0) {
			net_conn_close(c, err.msg);
			return;
		}
		l->peer->has_load = true;
		dm_send(l, NET_MSG_PONG, NET_FLAG_REPLY, h->request, &clock, 8);
		return;
	}
	case NET_MSG_PONG:
		return;
	case NET_MSG_FENCED:
		dm_fail_fenced(d, l, p);
		return;
	case NET_MSG_RAFT:
		if (l->peer != NULL)
			on_raft_frame(d, l->peer, p, h->length);
		return;
	case NET_MSG_PROPOSE:
		if (reply)
			dm_on_propose_reply(d, h, p);
		else
			dm_on_propose(d, l, h, p);
		return;
	case NET_MSG_RESUME:
		dm_sess_resume(d, l, h, p);
		return;
	case NET_MSG_ACK:
		dm_sess_ack(d, l, h, p);
		return;
	case NET_MSG_PART:
	case NET_MSG_PROC:
	case NET_MSG_PART_QUIET:
	case NET_MSG_PART_FREE:
	case NET_MSG_PART_STATS:
		if (!reply && dm_sess_take(d, l, h))
			dm_part_frame(d, h, p);
		dm_spin(d);
		return;
	case NET_MSG_ERROR:
		if (reply) {
			struct net_header h2 = *h;
			h2.type = NET_MSG_ERROR;
			dm_on_propose_reply(d, &h2, p);
		}
		return;
	default:
		net_conn_close(c, "a message machines do not send each other");
	}
}

static void server_conn(uv_stream_t *server, int status)
{
	struct dm *d = server->data;
	struct dm_link *l;
	uint8_t payload[4];
	struct net_conn_options o = {0};

	if (status < 0 || d->stopping)
		return;
	l = link_new(d);
	if (l == NULL)
		return;
	memcpy(payload, &d->me.id, 4);
	o.keys = &d->me.key;
	o.psk = d->token_psk; /* replaced by link_hello */
	o.prologue = d->prologue;
	o.prologue_len = strlen(d->prologue);
	o.payload = payload;
	o.payload_len = sizeof payload;
	o.idle_ms = IDLE_MS * 6;
	o.on_hello = link_hello;
	if (net_conn_accept(server, &o, &link_cb, l, &l->conn) != 0) {
		link_forget(d, l);
	}
}

static int host_port(const char *hp, char *host, size_t hn, uint16_t *port)
{
	struct cl_addr a;
	struct fl_err err;

	if (cl_addr_parse(hp, false, &a, &err) != 0)
		return FL_EINVAL;
	snprintf(host, hn, "%s", a.host);
	*port = a.port;
	return 0;
}

static void dial_peer(struct dm *d, struct dm_peer *p, const char *addr)
{
	struct net_conn_options o = {0};
	uint8_t hello = DM_PEER, payload[8];
	char host[CL_HOST_MAX + 1], src[CL_HOST_MAX + 1];
	uint16_t port, sport;
	struct dm_link *l;

	if (host_port(addr, host, sizeof host, &port) != 0)
		return;
	/* From the address we listen on, unless that is every address:
	 * peers (and their firewalls) see us where we are known. */
	if (host_port(d->me.listen, src, sizeof src, &sport) != 0 ||
	    strcmp(src, "0.0.0.0") == 0 || strcmp(src, "::") == 0)
		src[0] = 0;
	l = link_new(d);
	if (l == NULL)
		return;
	l->dialed = true;
	l->kind = DM_PEER;
	l->peer_id = p->id;
	l->peer = p;
	memcpy(payload, &d->me.id, 4);
	memcpy(payload + 4, &d->me.incarnation, 4);
	dial_options(d, &o, &hello);
	o.payload = payload;
	o.payload_len = sizeof payload;
	o.idle_ms = IDLE_MS;
	o.source = src[0] != 0 ? src : NULL;
	if (net_conn_dial(&d->loop, host, port, &o, &link_cb, l, &l->conn) != 0) {
		link_forget(d, l);
		return;
	}
	p->dialing = true;
}

void dm_load_self(struct dm *d, struct dm_load *l);

static void send_ping(struct dm *d, struct dm_peer *p)
{
	struct dm_load ld;
	struct fl_buf b;

	dm_load_self(d, &ld);
	fl_buf_init(&b);
	dm_ping_encode(dm_now_ms(), &ld, &b);
	if (!fl_buf_failed(&b))
		dm_send(p->link, NET_MSG_PING, 0, 0, b.data, b.len);
	fl_buf_close(&b);
}

/* The members we know, kept in --data/peers so that a machine that
 * restarts can reach the others before its Raft has caught up. */
static void save_peers(struct dm *d)
{
	static uint64_t last_hash;
	char path[4096], tmp[4200], pub[65];
	uint64_t hash = 1469598103934665603ull;
	FILE *f;

	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		const uint8_t *b = (const uint8_t *)m;
		for (size_t k = 0; k < sizeof *m; k++)
			hash = (hash ^ b[k]) * 1099511628211ull;
	}
	if (d->st.nmembers == 0 || hash == last_hash)
		return;
	last_hash = hash;
	snprintf(path, sizeof path, "%s/peers", d->cfg->data);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL)
		return;
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		if (m->state == CTL_M_LEFT)
			continue;
		sodium_bin2hex(pub, sizeof pub, m->key, NET_KEY);
		fprintf(f, "%" PRIu32 " %s %s\n", m->id, pub, m->addr);
	}
	if (fflush(f) == 0 && fsync(fileno(f)) == 0) {
		fclose(f);
		rename(tmp, path);
	} else {
		fclose(f);
		unlink(tmp);
	}
}

static void load_peers(struct dm *d)
{
	char path[4096], line[512], pub[65], addr[CTL_ADDR_MAX + 1];
	unsigned id;
	FILE *f;

	snprintf(path, sizeof path, "%s/peers", d->cfg->data);
	f = fopen(path, "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof line, f) != NULL) {
		struct dm_peer *p;
		size_t got = 0;
		if (sscanf(line, "%u %64s %255s", &id, pub, addr) != 3)
			continue;
		p = dm_peer_get(d, id, true);
		if (p == NULL)
			continue;
		if (sodium_hex2bin(p->key, NET_KEY, pub, strlen(pub), NULL, &got,
				   NULL) != 0 || got != NET_KEY)
			memset(p->key, 0, NET_KEY);
		snprintf(p->addr, sizeof p->addr, "%s", addr);
	}
	fclose(f);
}

void dm_net_tick(struct dm *d)
{
	static uint64_t last_ping;
	uint64_t now = dm_now_ms();
	bool ping = now - last_ping >= PING_MS;
	/* Redial at least four times within --lost-after: a link that
	 * broke while both ends live is back before either is lost. */
	uint64_t after = d->cfg->lost_after_ms ? d->cfg->lost_after_ms
					       : DM_LOST_AFTER_MS;
	uint32_t dial_max = after / 4 < DIAL_MAX_MS ? (uint32_t)(after / 4)
						    : DIAL_MAX_MS;

	if (ping)
		last_ping = now;
	save_peers(d);
	/* the lower id dials */
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		if (m->id > d->me.id && m->state != CTL_M_LEFT)
			dm_peer_get(d, m->id, true);
	}
	for (struct dm_peer *p = d->peers; p != NULL; p = p->next) {
		char addr[CTL_ADDR_MAX + 1];
		uint8_t key[NET_KEY];
		if (p->link != NULL) {
			if (ping)
				send_ping(d, p);
			continue;
		}
		if (p->id < d->me.id || p->dialing || now < p->next_dial ||
		    !member_key(d, p->id, key, addr, sizeof addr))
			continue;
		p->next_dial = now + p->backoff;
		p->backoff = p->backoff * 2 > dial_max ? dial_max
						       : p->backoff * 2;
		dial_peer(d, p, addr);
	}
	dm_sess_tick(d);
}

int dm_net_start(struct dm *d, struct fl_err *err)
{
	char host[CL_HOST_MAX + 1];
	uint16_t port;
	struct sockaddr_storage sa;
	int rc;

	if (host_port(d->me.listen, host, sizeof host, &port) != 0)
		return fl_err_set(err, FL_EINVAL, "--listen %s: not IP:PORT",
				  d->me.listen);
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&sa) != 0 &&
	    uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa) != 0)
		return fl_err_set(err, FL_EINVAL,
				  "--listen %s: '%s' is not an IP address",
				  d->me.listen, host);
	uv_tcp_init(&d->loop, &d->listener);
	d->listener.data = d;
	rc = uv_tcp_bind(&d->listener, (struct sockaddr *)&sa, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&d->listener, 128, server_conn);
	if (rc != 0)
		return fl_err_set(err, FL_EIO, "cannot listen on %s: %s",
				  d->me.listen, uv_strerror(rc));
	load_peers(d);
	return 0;
}

void dm_net_close(struct dm *d)
{
	for (struct dm_link *l = d->links; l != NULL; l = l->next)
		if (l->conn != NULL)
			net_conn_close(l->conn, "the machine is stopping");
	/* each link's on_close runs from the loop; the peers it points to
	 * go only after (the tick timer wakes the loop meanwhile) */
	uint64_t until = dm_now_ms() + 10000;
	while (d->links != NULL && dm_now_ms() < until)
		uv_run(&d->loop, UV_RUN_ONCE);
	for (struct dm_link *l = d->links; l != NULL; l = l->next)
		l->peer = NULL; /* still closing: must not see the peers */
	while (d->peers != NULL) {
		struct dm_peer *p = d->peers;
		d->peers = p->next;
		while (p->streams != NULL)
			rs_close(p->streams, false);
		free(p);
	}
}

/* ---- Joining ---- */

struct join_req {
	struct dm_link *l;
	uint64_t req;
};

static void join_done(struct dm_prop *pr, struct ctl_result r)
{
	struct dm *d = pr->d;
	uint64_t req = pr->data2;
	struct dm_link *l = NULL;
	const struct ctl_member *m;
	struct fl_buf b;

	for (struct dm_link *x = d->links; x != NULL; x = x->next)
		if (x == pr->data)
			l = x;
	if (l == NULL)
		return; /* it went away; its retry gets the same id */
	m = r.rc == 0 || r.rc == FL_EEXIST ? ctl_member_find(&d->st, (uint32_t)r.value)
					    : NULL;
	if (m == NULL || sodium_memcmp(m->key, l->key, NET_KEY) != 0) {
		dm_send_error(l, NET_MSG_JOIN, req, r.rc == FL_EAGAIN ? FL_EAGAIN : FL_EEXIST,
			      r.rc == FL_EAGAIN ? "the VM's control plane did not answer"
				  : r.rc == FL_EEXIST ? "another machine of the VM has that address"
				  : "the VM refused the machine (%s)",
			      fl_errname(r.rc));
		return;
	}
	fl_buf_init(&b);
	dm_join_reply_start(&b, m->id, (uint32_t)d->st.nmembers);
	for (size_t i = 0; i < d->st.nmembers; i++) {
		struct dm_join_member jm;
		jm.id = d->st.members[i].id;
		memcpy(jm.key, d->st.members[i].key, NET_KEY);
		snprintf(jm.addr, sizeof jm.addr, "%s", d->st.members[i].addr);
		dm_join_reply_member(&b, &jm);
	}
	if (!fl_buf_failed(&b))
		dm_send(l, NET_MSG_JOIN, NET_FLAG_REPLY, req, b.data, b.len);
	fl_buf_close(&b);
	dm_log(d, "machine %" PRIu32 " joined from %s", m->id, m->addr);
}

static void on_join(struct dm_link *l, const struct net_header *h,
		    const uint8_t *p)
{
	struct ctl_command c = {.type = CTL_CMD_MEMBER_ADD};
	struct dm_join j;
	struct fl_err err;

	if (dm_join_decode(p, h->length, &j, &err) != 0) {
		dm_send_error(l, NET_MSG_JOIN, h->request, FL_EFORMAT, "%s", err.msg);
		return;
	}
	memcpy(c.u.member.addr, j.addr, sizeof j.addr);
	c.u.member.cpu = j.cpu;
	c.u.member.ram = j.ram;
	c.u.member.disk = j.disk;
	memcpy(c.u.member.key, l->key, NET_KEY);
	c.u.member.incarnation = 1;
	c.u.member.state = CTL_M_ACTIVE;
	c.u.member.role = CTL_VOTER; /* the state machine decides */
	/* The machine's key is its identity: one join per key, whatever
	 * the retries (the state machine refuses a second key with
	 * FL_EEXIST and names the member that has it). */
	dm_propose(l->d, &c, join_done, l, h->request);
}

struct join_wait {
	bool done, closed;
	int rc;
	char msg[512];
	struct dm *d;
};

static void joiner_ready(struct net_conn *c, const uint8_t peer[NET_KEY],
			 const uint8_t *payload, size_t len)
{
	struct dm_link *l = net_conn_user(c);
	struct dm *d = l->d;
	struct fl_buf b;
	struct dm_join j;

	(void)peer;
	(void)payload;
	(void)len;
	memset(&j, 0, sizeof j);
	snprintf(j.addr, sizeof j.addr, "%s", d->me.advertise);
	j.cpu = d->cfg->provide.cpu;
	j.ram = d->cfg->provide.ram;
	j.disk = d->cfg->provide.disk;
	fl_buf_init(&b);
	dm_join_encode(&j, &b);
	l->ready = true;
	if (!fl_buf_failed(&b))
		dm_send(l, NET_MSG_JOIN, 0, 1, b.data, b.len);
	fl_buf_close(&b);
}

static struct join_wait *join_state;

/* A member the join reply names: trusted (its key pinned) until Raft
 * brings the member table. */
static void trust_member(void *arg, const struct dm_join_member *m)
{
	struct dm *d = arg;
	struct dm_peer *pe;

	if (m->id == d->me.id)
		return;
	pe = dm_peer_get(d, m->id, true);
	if (pe == NULL)
		return;
	memcpy(pe->key, m->key, NET_KEY);
	snprintf(pe->addr, sizeof pe->addr, "%s", m->addr);
}

static void joiner_frame(struct net_conn *c, const struct net_header *h,
			 const uint8_t *p)
{
	struct dm_link *l = net_conn_user(c);
	struct dm *d = l->d;
	struct join_wait *w = join_state;

	if (h->type == NET_MSG_ERROR) {
		char msg[400];
		struct fl_err err;
		int code = 0;
		dm_error_decode(p, h->length, &code, msg, sizeof msg, &err);
		w->rc = code == FL_EAGAIN ? FL_EAGAIN : FL_EPERM;
		snprintf(w->msg, sizeof w->msg, "join refused: %s", msg);
		w->done = true;
		net_conn_close(c, "done");
		return;
	}
	if (h->type != NET_MSG_JOIN || !(h->flags & NET_FLAG_REPLY)) {
		net_conn_close(c, "unexpected");
		return;
	}
	{
		struct fl_err err;
		if (dm_join_reply_decode(p, h->length, &d->me.id, trust_member, d,
					 &err) != 0) {
			d->me.id = 0;
			w->rc = FL_EFORMAT;
			snprintf(w->msg, sizeof w->msg, "%s", err.msg);
		} else {
			w->rc = 0;
		}
	}
	w->done = true;
	net_conn_close(c, "joined");
}

static void joiner_close(struct net_conn *c, const char *reason)
{
	struct dm_link *l = net_conn_user(c);
	struct join_wait *w = join_state;

	if (w == NULL) {
		free(l);
		return;
	}
	w->closed = true;
	if (!w->done) {
		w->done = true;
		/* Dialing failed: unreachable. The handshake failed: the
		 * machine is there but refused our token (or is not VM x). */
		bool dialed = strncmp(reason, "dial ", 5) != 0;
		w->rc = l->ready || !dialed ? FL_EAGAIN : FL_EPERM;
		if (!dialed)
			snprintf(w->msg, sizeof w->msg, "cannot reach %s:%u: %s",
				 l->d->cfg->contact.host, l->d->cfg->contact.port,
				 reason);
		else if (!l->ready)
			snprintf(w->msg, sizeof w->msg,
				 "refused by %s:%u: the token is not VM %s's (%s)",
				 l->d->cfg->contact.host, l->d->cfg->contact.port,
				 l->d->me.vm, reason);
		else
			snprintf(w->msg, sizeof w->msg, "%s", reason);
	}
	free(l);
}

static void join_deadline(uv_timer_t *t)
{
	(void)t; /* dm_join's loop looks at the clock */
}

static void join_deadline_closed(uv_handle_t *h)
{
	*(bool *)h->data = true;
}

int dm_join(struct dm *d, struct fl_err *err)
{
	static const struct net_conn_callbacks cb = {
		.on_ready = joiner_ready,
		.on_frame = joiner_frame,
		.on_close = joiner_close,
	};
	struct join_wait w = {.d = d};
	struct net_conn_options o = {0};
	uint8_t hello = DM_JOINER;
	struct dm_link *l = calloc(1, sizeof *l);
	uint64_t until = dm_now_ms() + 15000;
	uv_timer_t deadline;
	bool timed_out, deadline_closed = false;

	if (l == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	l->d = d;
	l->kind = DM_JOINER;
	dial_options(d, &o, &hello);
	join_state = &w;
	if (net_conn_dial(&d->loop, d->cfg->contact.host, d->cfg->contact.port,
			  &o, &cb, l, &l->conn) != 0) {
		free(l);
		join_state = NULL;
		return fl_err_set(err, FL_EIO, "cannot dial %s",
				  d->cfg->contact.host);
	}
	/* a timer, so that the loop wakes at the deadline whatever the
	 * contact does */
	uv_timer_init(&d->loop, &deadline);
	uv_timer_start(&deadline, join_deadline, 15000, 0);
	while (!w.done && dm_now_ms() < until)
		uv_run(&d->loop, UV_RUN_ONCE);
	timed_out = !w.done;
	if (timed_out)
		net_conn_close(l->conn, "timed out");
	while (!w.closed) /* let the connection's close run */
		uv_run(&d->loop, UV_RUN_ONCE);
	uv_timer_stop(&deadline);
	deadline.data = &deadline_closed;
	uv_close((uv_handle_t *)&deadline, join_deadline_closed);
	while (!deadline_closed) /* it lives on this stack */
		uv_run(&d->loop, UV_RUN_ONCE);
	join_state = NULL;
	if (timed_out)
		return fl_err_set(err, FL_EAGAIN, "the VM did not answer the "
						  "join within 15 s");
	if (w.rc != 0)
		return fl_err_set(err, w.rc, "%s", w.msg);
	return 0;
}
