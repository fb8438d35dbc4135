/* Unit tests for src/cluster/net_conn.c, one secure connection on a real
 * libuv loop over 127.0.0.1 (port 0, the bound port read back). Every test
 * runs the loop under a guard timer that fails it after GUARD_MS.
 *
 * A good handshake reports each side's key and payload to the other and
 * carries frames both ways; a wrong token is refused on both sides (no
 * on_ready on the responder); a client speaking garbage, or stalling the
 * handshake, is closed and the server keeps serving; 10,000 small frames
 * arrive in order and one 8 MiB frame intact; a man in the middle that
 * modifies one byte (of a handshake message, of a record, of a record's
 * length: 4 GiB; of the confirmation's length) gets the connection
 * closed; a peer that stops reading
 * fills the write queue to its cap (FL_EAGAIN, then on_drain); closing
 * from inside on_frame is safe; dialing "localhost", "::1" (skipped
 * without IPv6 loopback) and a closed port; a peer that resets while our
 * writes are queued closes the connection (reading sees the reset first:
 * no SIGPIPE); a write after the peer's RST fails with EPIPE and does
 * raise SIGPIPE (libuv uses write(2)), which the process must ignore. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cluster/net_conn.h"

#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_MS 8000
#define SIDES 4

static const char vm[] = "flock 1 test";

struct side {
	struct fx *fx;
	struct net_conn *c;
	int ready, closed, frames, drained;
	char reason[256];
	uint8_t peer[NET_KEY];
	char payload[NET_HS_PAYLOAD_MAX + 1];
	uint64_t next_request; /* frames must come in order */
	uint64_t bytes;
	bool close_in_frame;
	bool big_ok;
	/* called from on_ready */
	void (*then)(struct side *s);
};

/* A raw-TCP relay between a client and the server that can modify,
 * or stop forwarding, the client's bytes. */
struct mitm {
	struct fx *fx;
	uv_tcp_t listen, down, up;
	uv_connect_t connect;
	uint64_t seen;       /* client -> server bytes so far */
	uint64_t flip_at;    /* xor this byte with 0x01 (UINT64_MAX: none) */
	uint64_t set_len_at; /* write 0xffffffff here */
	uint64_t pause_at;   /* stop reading the client once this many */
	uint64_t s2c_len_at; /* server -> client: write s2c_len here */
	uint32_t s2c_len;
	uint64_t s2c_seen;
	bool paused;
	int open;
};

struct fx {
	uv_loop_t loop;
	uv_tcp_t server;
	uv_timer_t guard;
	bool timed_out;
	int port;
	struct net_keypair ks, kc;
	uint8_t psk[NET_KEY], other_psk[NET_KEY];
	struct net_conn_options sopt, copt;
	struct side srv[SIDES];
	int nsrv;
	struct side cli;
	struct mitm m;
	uv_tcp_t raw;
	uv_connect_t raw_connect;
	bool raw_open, raw_connected;
};

static int sigpipes;

static void on_sigpipe(int sig)
{
	(void)sig;
	sigpipes++;
}

/* ---- Callbacks that record ---- */

static void rec_ready(struct net_conn *c, const uint8_t peer[NET_KEY],
		      const uint8_t *payload, size_t len)
{
	struct side *s = net_conn_user(c);

	s->ready++;
	memcpy(s->peer, peer, NET_KEY);
	assert_true(len <= NET_HS_PAYLOAD_MAX);
	if (len > 0)
		memcpy(s->payload, payload, len);
	s->payload[len] = 0;
	if (s->then != NULL)
		s->then(s);
}

static void rec_frame(struct net_conn *c, const struct net_header *h,
		      const uint8_t *payload)
{
	struct side *s = net_conn_user(c);

	assert_int_equal(s->ready, 1);
	assert_int_equal(s->closed, 0);
	assert_true(h->request == s->next_request);
	s->next_request++;
	s->frames++;
	s->bytes += h->length;
	if (h->type == NET_MSG_RAFT && h->length == (8u << 20)) {
		s->big_ok = true;
		for (uint32_t i = 0; i < h->length; i++)
			if (payload[i] != (uint8_t)(i * 7 + 1)) {
				s->big_ok = false;
				break;
			}
	}
	if (s->close_in_frame) {
		net_conn_close(c, "enough");
		/* closed: sends refused, closing again is a no-op */
		assert_int_equal(net_conn_send(c, h, payload, h->length),
				 FL_EINVAL);
		net_conn_close(c, "again");
	}
}

static void rec_drain(struct net_conn *c)
{
	struct side *s = net_conn_user(c);

	s->drained++;
}

static void rec_close(struct net_conn *c, const char *reason)
{
	struct side *s = net_conn_user(c);

	assert_ptr_equal(s->c, c);
	s->closed++;
	snprintf(s->reason, sizeof s->reason, "%s", reason);
	s->c = NULL;
}

static const struct net_conn_callbacks rec = {
	.on_ready = rec_ready,
	.on_frame = rec_frame,
	.on_drain = rec_drain,
	.on_close = rec_close,
};

/* ---- The fixture ---- */

static void on_guard(uv_timer_t *t)
{
	struct fx *fx = t->data;

	fx->timed_out = true;
}

static void on_accept(uv_stream_t *server, int status)
{
	struct fx *fx = server->data;
	struct side *s;

	assert_int_equal(status, 0);
	assert_true(fx->nsrv < SIDES);
	s = &fx->srv[fx->nsrv++];
	assert_int_equal(net_conn_accept(server, &fx->sopt, &rec, s, &s->c), 0);
}

static int listen_on(uv_loop_t *loop, uv_tcp_t *t, const char *ip, void *data,
		     uv_connection_cb cb)
{
	struct sockaddr_storage sa;
	int len = sizeof sa, r;

	if (strchr(ip, ':') != NULL)
		r = uv_ip6_addr(ip, 0, (struct sockaddr_in6 *)&sa);
	else
		r = uv_ip4_addr(ip, 0, (struct sockaddr_in *)&sa);
	assert_int_equal(r, 0);
	assert_int_equal(uv_tcp_init(loop, t), 0);
	t->data = data;
	r = uv_tcp_bind(t, (struct sockaddr *)&sa, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)t, 16, cb);
	if (r != 0)
		return -1;
	assert_int_equal(uv_tcp_getsockname(t, (struct sockaddr *)&sa, &len), 0);
	return ntohs(sa.ss_family == AF_INET6
			     ? ((struct sockaddr_in6 *)&sa)->sin6_port
			     : ((struct sockaddr_in *)&sa)->sin_port);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);

	if (fx == NULL || net_crypto_init() != 0)
		return -1;
	uv_loop_init(&fx->loop);
	net_keypair_new(&fx->ks);
	net_keypair_new(&fx->kc);
	randombytes_buf(fx->psk, NET_KEY);
	randombytes_buf(fx->other_psk, NET_KEY);
	fx->sopt = (struct net_conn_options){
		.keys = &fx->ks,
		.psk = fx->psk,
		.prologue = vm,
		.prologue_len = sizeof vm,
		.payload = "server hello",
		.payload_len = 12,
	};
	fx->copt = fx->sopt;
	fx->copt.keys = &fx->kc;
	fx->copt.payload = "client says hi";
	fx->copt.payload_len = 14;
	for (int i = 0; i < SIDES; i++)
		fx->srv[i].fx = fx;
	fx->cli.fx = fx;
	fx->port = listen_on(&fx->loop, &fx->server, "127.0.0.1", fx, on_accept);
	if (fx->port <= 0)
		return -1;
	uv_timer_init(&fx->loop, &fx->guard);
	fx->guard.data = fx;
	uv_timer_start(&fx->guard, on_guard, GUARD_MS, 0);
	fx->m.flip_at = fx->m.set_len_at = fx->m.pause_at = UINT64_MAX;
	fx->m.s2c_len_at = UINT64_MAX;
	*state = fx;
	return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	/* Connections still open close through the layer first. */
	for (int i = 0; i < fx->nsrv; i++)
		if (fx->srv[i].c != NULL)
			net_conn_close(fx->srv[i].c, "teardown");
	if (fx->cli.c != NULL)
		net_conn_close(fx->cli.c, "teardown");
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	uv_walk(&fx->loop, close_walk, NULL);
	uv_run(&fx->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx->loop), 0);
	free(fx);
	return 0;
}

#define RUN_UNTIL(fx, cond)                                                   \
	do {                                                                  \
		while (!(cond) && !(fx)->timed_out)                           \
			uv_run(&(fx)->loop, UV_RUN_ONCE);                     \
		if ((fx)->timed_out)                                          \
			fail_msg("timed out waiting for %s", #cond);          \
	} while (0)

static void dial(struct fx *fx, const char *host, int port)
{
	assert_int_equal(net_conn_dial(&fx->loop, host, (uint16_t)port,
				       &fx->copt, &rec, &fx->cli, &fx->cli.c),
			 0);
}

static struct net_header hdr(unsigned type, uint64_t request)
{
	struct net_header h = {
		.version = NET_VERSION,
		.type = (uint8_t)type,
		.request = request,
		.machine = 2,
		.incarnation = 1,
	};
	return h;
}

/* ---- Handshakes ---- */

static void send_ping(struct side *s)
{
	struct net_header h = hdr(NET_MSG_PING, 0);

	assert_int_equal(net_conn_send(s->c, &h, "12345678", 8), 0);
}

static void test_handshake(void **state)
{
	struct fx *fx = *state;
	struct net_counters sent, got;
	struct side *srv = &fx->srv[0];

	fx->cli.then = send_ping;
	srv->then = send_ping;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->cli.frames == 1 && srv->frames == 1);
	assert_int_equal(fx->cli.ready, 1);
	assert_int_equal(srv->ready, 1);
	assert_memory_equal(fx->cli.peer, fx->ks.pub, NET_KEY);
	assert_memory_equal(srv->peer, fx->kc.pub, NET_KEY);
	assert_string_equal(fx->cli.payload, "server hello");
	assert_string_equal(srv->payload, "client says hi");
	assert_true(strncmp(net_conn_peer(fx->cli.c), "127.0.0.1:", 10) == 0);
	assert_true(strncmp(net_conn_peer(srv->c), "127.0.0.1:", 10) == 0);
	net_conn_counters(fx->cli.c, &sent, &got);
	assert_true(sent.frames[NET_MSG_PING] == 1);
	assert_true(got.frames[NET_MSG_PING] == 1);
	assert_true(got.bytes[NET_MSG_PING] == NET_HEADER_SIZE + 8);
	/* A frame the peer must refuse is never sent. */
	{
		struct net_header bad = hdr(NET_MSG_PING, 1);

		assert_int_equal(net_conn_send(fx->cli.c, &bad, "1234", 4),
				 FL_EINVAL);
		bad.type = 200;
		assert_int_equal(net_conn_send(fx->cli.c, &bad, "12345678", 8),
				 FL_EINVAL);
	}
	net_conn_close(fx->cli.c, "bye");
	assert_int_equal(fx->cli.closed, 0); /* on_close comes from the loop */
	RUN_UNTIL(fx, fx->cli.closed && srv->closed);
	assert_string_equal(fx->cli.reason, "bye");
	assert_non_null(strstr(srv->reason, "closed the connection"));
	assert_int_equal(fx->cli.closed, 1);
	assert_int_equal(srv->closed, 1);
}

static void test_wrong_psk(void **state)
{
	struct fx *fx = *state;

	fx->copt.psk = fx->other_psk;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->cli.closed && fx->nsrv == 1 && fx->srv[0].closed);
	assert_int_equal(fx->srv[0].ready, 0);
	assert_int_equal(fx->cli.ready, 0);
	assert_non_null(strstr(fx->srv[0].reason, "wrong token"));
	assert_non_null(strstr(fx->cli.reason, "during the handshake"));
}

static void test_wrong_prologue(void **state)
{
	struct fx *fx = *state;

	fx->copt.prologue = "flock 1 other";
	fx->copt.prologue_len = 14;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->cli.closed && fx->nsrv == 1 && fx->srv[0].closed);
	assert_int_equal(fx->srv[0].ready, 0);
	assert_int_equal(fx->cli.ready, 0);
	assert_non_null(strstr(fx->srv[0].reason, "handshake"));
}

/* The responder refuses the peer's key in on_ready. */
static void refuse(struct side *s)
{
	net_conn_close(s->c, "not a member");
}

static void test_refused_in_on_ready(void **state)
{
	struct fx *fx = *state;

	fx->srv[0].then = refuse;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->cli.closed && fx->srv[0].closed);
	assert_string_equal(fx->srv[0].reason, "not a member");
	/* The confirmation never went out: the client was never ready. */
	assert_int_equal(fx->cli.ready, 0);
}

/* ---- Raw peers ---- */

static void raw_written(uv_write_t *req, int status)
{
	(void)status;
	free(req);
}

static void raw_write(uv_stream_t *s, const void *p, size_t n)
{
	uv_write_t *req = malloc(sizeof *req + n);
	uv_buf_t b;

	assert_non_null(req);
	memcpy(req + 1, p, n);
	b = uv_buf_init((char *)(req + 1), (unsigned)n);
	assert_int_equal(uv_write(req, s, &b, 1, raw_written), 0);
}

static const char *raw_bytes;
static size_t raw_len;

static void raw_connected(uv_connect_t *req, int status)
{
	struct fx *fx = req->data;

	assert_int_equal(status, 0);
	fx->raw_connected = true;
	if (raw_len > 0)
		raw_write((uv_stream_t *)&fx->raw, raw_bytes, raw_len);
}

/* Connect a raw TCP client to the server and send @n bytes of @p. */
static void raw_client(struct fx *fx, const char *p, size_t n)
{
	struct sockaddr_in sa;

	raw_bytes = p;
	raw_len = n;
	uv_ip4_addr("127.0.0.1", fx->port, &sa);
	uv_tcp_init(&fx->loop, &fx->raw);
	fx->raw_open = true;
	fx->raw_connect.data = fx;
	assert_int_equal(uv_tcp_connect(&fx->raw_connect, &fx->raw,
					(struct sockaddr *)&sa, raw_connected),
			 0);
}

static void test_garbage_then_good_client(void **state)
{
	static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	struct fx *fx = *state;

	raw_client(fx, get, sizeof get - 1);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed);
	assert_int_equal(fx->srv[0].ready, 0);
	assert_non_null(strstr(fx->srv[0].reason, "not a Flock peer"));
	/* The server goes on serving. */
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->cli.ready && fx->nsrv == 2 && fx->srv[1].ready);
}

static void test_garbage_short_message(void **state)
{
	/* A plausible length, then bytes that are no handshake message. */
	static const char junk[] = "\x30\x00"
				   "0123456789abcdef0123456789abcdef"
				   "0123456789abcdef";
	struct fx *fx = *state;

	raw_client(fx, junk, sizeof junk - 1);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed);
	assert_int_equal(fx->srv[0].ready, 0);
	assert_non_null(strstr(fx->srv[0].reason, "handshake: message 1"));
}

static void test_stalled_handshake(void **state)
{
	static const char half[] = "\x30\x00"
				   "0123456789";
	struct fx *fx = *state;

	fx->sopt.handshake_ms = 200;
	raw_client(fx, half, sizeof half - 1);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed);
	assert_non_null(strstr(fx->srv[0].reason, "not done within 200 ms"));
	/* A good client still gets through. */
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->cli.ready && fx->nsrv == 2 && fx->srv[1].ready);
}

static void test_idle_limit(void **state)
{
	struct fx *fx = *state;

	fx->sopt.idle_ms = 150;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->srv[0].closed && fx->cli.closed);
	assert_int_equal(fx->srv[0].ready, 1);
	assert_non_null(strstr(fx->srv[0].reason, "idle"));
}

/* ---- Many frames, big frames ---- */

static void send_many(struct side *s)
{
	static uint8_t small[24]; /* an OUTPUT carries at least 17 */
	struct net_header h;
	uint8_t *big;

	for (uint64_t i = 0; i < 10000; i++) {
		h = hdr(NET_MSG_OUTPUT, i);
		memcpy(small, &i, sizeof i);
		assert_int_equal(net_conn_send(s->c, &h, small, sizeof small), 0);
	}
	big = malloc(8u << 20);
	assert_non_null(big);
	for (uint32_t i = 0; i < (8u << 20); i++)
		big[i] = (uint8_t)(i * 7 + 1);
	h = hdr(NET_MSG_RAFT, 10000);
	assert_int_equal(net_conn_send(s->c, &h, big, 8u << 20), 0);
	free(big);
}

static void test_many_frames_and_a_big_one(void **state)
{
	struct fx *fx = *state;
	struct net_counters sent, got;

	fx->cli.then = send_many;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].frames == 10001);
	assert_true(fx->srv[0].big_ok);
	net_conn_counters(fx->srv[0].c, NULL, &got);
	net_conn_counters(fx->cli.c, &sent, NULL);
	assert_true(got.frames[NET_MSG_OUTPUT] == 10000);
	assert_true(got.frames[NET_MSG_RAFT] == 1);
	assert_true(got.bytes[NET_MSG_RAFT] == NET_HEADER_SIZE + (8u << 20));
	assert_memory_equal(&sent, &got, sizeof sent);
	assert_int_equal(fx->srv[0].closed, 0);
}

/* ---- Closing from inside on_frame ---- */

static void send_hundred(struct side *s)
{
	for (uint64_t i = 0; i < 100; i++) {
		struct net_header h = hdr(NET_MSG_PING, i);

		assert_int_equal(net_conn_send(s->c, &h, "abcdefgh", 8), 0);
	}
}

static void test_close_inside_on_frame(void **state)
{
	struct fx *fx = *state;

	fx->cli.then = send_hundred;
	fx->srv[0].close_in_frame = true;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->srv[0].closed && fx->cli.closed);
	assert_int_equal(fx->srv[0].frames, 1); /* none after the close */
	assert_int_equal(fx->srv[0].closed, 1);
	assert_string_equal(fx->srv[0].reason, "enough");
}

/* ---- A man in the middle ---- */

static void mitm_closed(uv_handle_t *h)
{
	struct mitm *m = h->data;

	m->open--;
}

static void mitm_close(struct mitm *m)
{
	if (!uv_is_closing((uv_handle_t *)&m->down))
		uv_close((uv_handle_t *)&m->down, mitm_closed);
	if (!uv_is_closing((uv_handle_t *)&m->up))
		uv_close((uv_handle_t *)&m->up, mitm_closed);
}

static void mitm_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	(void)h;
	buf->base = malloc(hint);
	buf->len = buf->base != NULL ? hint : 0;
}

static void mitm_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct mitm *m = s->data;
	bool from_client = s == (uv_stream_t *)&m->down;
	uint8_t *p = (uint8_t *)buf->base;

	if (nread < 0) {
		mitm_close(m);
	} else if (nread > 0 && from_client) {
		for (ssize_t i = 0; i < nread; i++) {
			uint64_t at = m->seen + (uint64_t)i;

			if (at == m->flip_at)
				p[i] ^= 0x01;
			if (at >= m->set_len_at && at < m->set_len_at + 4)
				p[i] = 0xff;
		}
		m->seen += (uint64_t)nread;
		raw_write((uv_stream_t *)&m->up, p, (size_t)nread);
		if (m->seen >= m->pause_at && !m->paused) {
			m->paused = true;
			uv_read_stop(s);
		}
	} else if (nread > 0) {
		for (ssize_t i = 0; i < nread; i++) {
			uint64_t at = m->s2c_seen + (uint64_t)i;

			if (at >= m->s2c_len_at && at < m->s2c_len_at + 4)
				p[i] = (uint8_t)(m->s2c_len >> (8 * (at - m->s2c_len_at)));
		}
		m->s2c_seen += (uint64_t)nread;
		raw_write((uv_stream_t *)&m->down, p, (size_t)nread);
	}
	free(buf->base);
}

static void mitm_up(uv_connect_t *req, int status)
{
	struct mitm *m = req->data;

	if (status < 0) {
		mitm_close(m);
		return;
	}
	uv_read_start((uv_stream_t *)&m->down, mitm_alloc, mitm_read);
	uv_read_start((uv_stream_t *)&m->up, mitm_alloc, mitm_read);
}

static void mitm_accept(uv_stream_t *server, int status)
{
	struct mitm *m = server->data;
	struct sockaddr_in sa;

	assert_int_equal(status, 0);
	uv_tcp_init(server->loop, &m->down);
	uv_tcp_init(server->loop, &m->up);
	m->down.data = m->up.data = m;
	m->open = 2;
	assert_int_equal(uv_accept(server, (uv_stream_t *)&m->down), 0);
	uv_ip4_addr("127.0.0.1", m->fx->port, &sa);
	m->connect.data = m;
	assert_int_equal(uv_tcp_connect(&m->connect, &m->up,
					(struct sockaddr *)&sa, mitm_up),
			 0);
}

/* Dial the server through the relay. */
static void dial_via_mitm(struct fx *fx)
{
	int port;

	fx->m.fx = fx;
	port = listen_on(&fx->loop, &fx->m.listen, "127.0.0.1", &fx->m,
			 mitm_accept);
	assert_true(port > 0);
	dial(fx, "127.0.0.1", port);
}

/* Where the client's first record starts: messages 1 and 3, each after
 * its u16 length (message 1: e and the empty payload's tag; message 3:
 * the sealed static key, the ciphers' byte, the payload and its tag). */
static uint64_t first_record(const struct fx *fx)
{
	return 2 + NET_KEY + NET_TAG + 2 + NET_KEY + NET_TAG + 1 +
	       fx->copt.payload_len + NET_TAG;
}

static void test_mitm_untouched(void **state)
{
	struct fx *fx = *state;

	fx->cli.then = send_hundred;
	dial_via_mitm(fx);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].frames == 100);
	assert_int_equal(fx->srv[0].closed, 0);
}

static void test_mitm_modified_record(void **state)
{
	struct fx *fx = *state;

	fx->cli.then = send_hundred;
	fx->m.flip_at = first_record(fx) + 4 + 30; /* in the 1st frame */
	dial_via_mitm(fx);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed && fx->cli.closed);
	assert_int_equal(fx->srv[0].ready, 1);
	assert_int_equal(fx->srv[0].frames, 0);
	assert_non_null(strstr(fx->srv[0].reason, "record: refused"));
}

static void test_mitm_record_of_4gib(void **state)
{
	struct fx *fx = *state;

	fx->cli.then = send_hundred;
	fx->m.set_len_at = first_record(fx);
	dial_via_mitm(fx);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed && fx->cli.closed);
	assert_int_equal(fx->srv[0].frames, 0);
	assert_non_null(strstr(fx->srv[0].reason, "record of 4294967295 bytes"));
}

static void test_mitm_modified_handshake(void **state)
{
	struct fx *fx = *state;

	fx->m.flip_at = 2 + NET_KEY + NET_TAG + 2 + 5; /* message 3 */
	dial_via_mitm(fx);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed && fx->cli.closed);
	assert_int_equal(fx->srv[0].ready, 0);
	assert_int_equal(fx->cli.ready, 0);
	assert_non_null(strstr(fx->srv[0].reason, "handshake: message 3"));
}

/* The responder's first record must be the empty confirmation: one
 * claiming more is refused at its length, not waited for. */
static void test_mitm_big_confirmation(void **state)
{
	struct fx *fx = *state;

	/* message 2: e, the sealed static key, the payload and its tag */
	fx->m.s2c_len_at = 2 + NET_KEY + NET_KEY + NET_TAG + 1 +
			   fx->sopt.payload_len + NET_TAG;
	fx->m.s2c_len = 1000;
	dial_via_mitm(fx);
	RUN_UNTIL(fx, fx->cli.closed);
	assert_int_equal(fx->cli.ready, 0);
	assert_non_null(strstr(fx->cli.reason, "record of 1000 bytes where "
					       "the confirmation belongs"));
}

/* ---- A peer that stops reading ---- */

static bool got_eagain;
static int sent_ok;

static void flood(struct side *s)
{
	static uint8_t chunk[256 << 10];
	int rc = 0;

	for (int i = 0; i < 2000 && rc == 0; i++) {
		struct net_header h = hdr(NET_MSG_RAFT, (uint64_t)i);

		rc = net_conn_send(s->c, &h, chunk, sizeof chunk);
		if (rc == 0)
			sent_ok++;
	}
	assert_int_equal(rc, FL_EAGAIN);
	got_eagain = true;
	/* Pending never passes the cap by more than one frame. */
	assert_true(net_conn_pending(s->c) <= (1u << 20) + sizeof chunk + 64);
}

static void test_peer_stops_reading(void **state)
{
	struct fx *fx = *state;

	got_eagain = false;
	sent_ok = 0;
	fx->copt.write_max = 1u << 20;
	fx->cli.then = flood;
	fx->m.pause_at = first_record(fx);
	dial_via_mitm(fx);
	RUN_UNTIL(fx, got_eagain);
	assert_int_equal(fx->cli.drained, 0);
	/* The relay reads again: the queue drains, every frame arrives. */
	fx->m.pause_at = UINT64_MAX;
	uv_read_start((uv_stream_t *)&fx->m.down, mitm_alloc, mitm_read);
	RUN_UNTIL(fx, fx->cli.drained == 1 && fx->nsrv == 1 &&
			      fx->srv[0].frames == sent_ok);
	assert_int_equal(fx->cli.closed, 0);
}

/* A peer that resets while our writes are queued: the connection closes
 * with a reason, and no SIGPIPE is raised (the handler counts them). */
static void test_reset_with_queued_writes(void **state)
{
	struct fx *fx = *state;
	struct sigaction sa, old;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigpipe;
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	got_eagain = false;
	sent_ok = 0;
	fx->copt.write_max = 1u << 20;
	fx->cli.then = flood;
	fx->m.pause_at = first_record(fx);
	dial_via_mitm(fx);
	RUN_UNTIL(fx, got_eagain);
	uv_tcp_close_reset(&fx->m.down, mitm_closed);
	uv_close((uv_handle_t *)&fx->m.up, mitm_closed);
	RUN_UNTIL(fx, fx->cli.closed && fx->nsrv == 1 && fx->srv[0].closed);
	assert_int_equal(sigpipes, 0);
	assert_non_null(strstr(fx->cli.reason, "connection reset"));
	sigaction(SIGPIPE, &old, NULL);
}

/* A peer that closed, and whose RST answered our next record: the write
 * after that fails with EPIPE. libuv writes with write(2), not
 * send(MSG_NOSIGNAL), so that write raises SIGPIPE on Linux (this test
 * pins it down: the process must ignore SIGPIPE, which the daemon does);
 * the connection closes with the write's reason and nothing else
 * happens. */
static void test_write_after_peer_closed(void **state)
{
	struct fx *fx = *state;
	struct sigaction sa, old;
	struct net_header h = hdr(NET_MSG_PING, 1);
	int rc;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigpipe;
	sigaction(SIGPIPE, &sa, &old);
	sigpipes = 0;
	fx->cli.then = send_ping;
	fx->srv[0].close_in_frame = true;
	dial(fx, "127.0.0.1", fx->port);
	RUN_UNTIL(fx, fx->nsrv == 1 && fx->srv[0].closed);
	/* The loop has not run since: the client has not seen the FIN. */
	assert_int_equal(fx->cli.closed, 0);
	uv_sleep(50);
	assert_int_equal(net_conn_send(fx->cli.c, &h, "12345678", 8), 0);
	uv_sleep(50); /* the peer's RST arrives */
	h.request = 2;
	rc = net_conn_send(fx->cli.c, &h, "12345678", 8);
	assert_int_equal(rc, FL_EPIPE);
	assert_int_equal(sigpipes, 1);
	/* Closing: sends are refused, on_close comes from the loop. */
	assert_int_equal(net_conn_send(fx->cli.c, &h, "12345678", 8), FL_EINVAL);
	RUN_UNTIL(fx, fx->cli.closed);
	assert_string_equal(fx->cli.reason, "write: broken pipe");
	sigaction(SIGPIPE, &old, NULL);
}

/* ---- Dialing ---- */

static void test_dial_localhost(void **state)
{
	struct fx *fx = *state;

	dial(fx, "localhost", fx->port);
	RUN_UNTIL(fx, fx->cli.ready && fx->nsrv == 1 && fx->srv[0].ready);
	assert_true(strncmp(net_conn_peer(fx->cli.c), "127.0.0.1:", 10) == 0);
}

static void test_dial_ipv6_loopback(void **state)
{
	struct fx *fx = *state;
	uv_tcp_t server6;
	int port = listen_on(&fx->loop, &server6, "::1", fx, on_accept);

	if (port <= 0) {
		uv_close((uv_handle_t *)&server6, NULL);
		uv_run(&fx->loop, UV_RUN_NOWAIT);
		skip(); /* no IPv6 loopback on this machine */
	}
	dial(fx, "::1", port);
	RUN_UNTIL(fx, fx->cli.ready && fx->nsrv == 1 && fx->srv[0].ready);
	assert_true(strncmp(net_conn_peer(fx->cli.c), "[::1]:", 6) == 0);
	net_conn_close(fx->cli.c, "done");
	RUN_UNTIL(fx, fx->cli.closed && fx->srv[0].closed);
	uv_close((uv_handle_t *)&server6, NULL);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
}

static void test_dial_closed_port(void **state)
{
	struct fx *fx = *state;
	uv_tcp_t t;
	int port = listen_on(&fx->loop, &t, "127.0.0.1", fx, on_accept);

	/* A port just freed: nothing listens there. */
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(&fx->loop, UV_RUN_NOWAIT);
	dial(fx, "127.0.0.1", port);
	RUN_UNTIL(fx, fx->cli.closed);
	assert_int_equal(fx->cli.ready, 0);
	assert_non_null(strstr(fx->cli.reason, "connection refused"));
}

static void test_close_while_dialing(void **state)
{
	struct fx *fx = *state;

	dial(fx, "localhost", fx->port);
	net_conn_close(fx->cli.c, "changed my mind");
	RUN_UNTIL(fx, fx->cli.closed);
	assert_string_equal(fx->cli.reason, "changed my mind");
	assert_int_equal(fx->cli.ready, 0);
}

static void test_bad_options(void **state)
{
	struct fx *fx = *state;
	struct net_conn *c = NULL;

	fx->copt.payload_len = NET_HS_PAYLOAD_MAX + 1;
	assert_int_equal(net_conn_dial(&fx->loop, "127.0.0.1", 1, &fx->copt,
				       &rec, &fx->cli, &c),
			 FL_EINVAL);
	fx->copt.payload_len = 0;
	fx->copt.psk = NULL;
	assert_int_equal(net_conn_dial(&fx->loop, "127.0.0.1", 1, &fx->copt,
				       &rec, &fx->cli, &c),
			 FL_EINVAL);
	assert_null(c);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_handshake),
	    T(test_wrong_psk),
	    T(test_wrong_prologue),
	    T(test_refused_in_on_ready),
	    T(test_garbage_then_good_client),
	    T(test_garbage_short_message),
	    T(test_stalled_handshake),
	    T(test_idle_limit),
	    T(test_many_frames_and_a_big_one),
	    T(test_close_inside_on_frame),
	    T(test_mitm_untouched),
	    T(test_mitm_modified_record),
	    T(test_mitm_record_of_4gib),
	    T(test_mitm_modified_handshake),
	    T(test_mitm_big_confirmation),
	    T(test_peer_stops_reading),
	    T(test_reset_with_queued_writes),
	    T(test_write_after_peer_closed),
	    T(test_dial_localhost),
	    T(test_dial_ipv6_loopback),
	    T(test_dial_closed_port),
	    T(test_close_while_dialing),
	    T(test_bad_options),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
