/* One secure connection on a libuv loop (net_conn.h): dial or accept,
 * the handshake's three length-prefixed messages, the responder's empty
 * confirmation record, then one sealed record per frame.
 *
 * Happy path of a dial: uv_getaddrinfo -> for each address, a TCP handle
 * and uv_tcp_connect (a failed attempt closes its handle and the next
 * address gets a new one) -> TCP_NODELAY, message 1 -> read message 2 and
 * send message 3 -> read the empty confirmation -> on_ready -> frames.
 * An accept: message 1 -> send message 2 -> read message 3 -> on_ready,
 * then the confirmation (sent before any frame of ours) -> frames.
 *
 * Reading: bytes land at the end of c->in (the alloc callback points libuv
 * there), and every complete message or record in it is taken at once; a
 * partial one waits for more. c->in never holds more than one incomplete
 * record (at most NET_RECORD_MAX + 4 bytes, its length checked by net_open
 * on its first 4 bytes) plus one read.
 *
 * Writing: a frame is sealed into c->out; when nothing is queued,
 * uv_try_write takes what the socket takes now, and the rest is copied
 * into a write request. c->pending counts the queued bytes against the
 * cap.
 *
 * Closing: close() marks the connection closing, stops reading, closes
 * every open handle and cancels a pending getaddrinfo; c->busy counts the
 * libuv callbacks still to come that point at c (open handles, the
 * getaddrinfo). Write and connect requests end (ECANCELED) before their
 * handle's close callback, so they need no count. When busy reaches zero,
 * on_close runs and c is freed -- always from a libuv callback, never
 * from inside a net_conn_* call, so callbacks may close or send freely;
 * every loop that calls back checks c->closing after each call.
 *
 * Threads: the loop's thread, but for net_conn_send_direct. Once ready,
 * a frame may be sealed and written from any thread: @txlock guards
 * everything sending touches (the cipher, the frame and out buffers,
 * pending, the spill, the sent counters, @direct), and the loop takes it
 * too when it sends. A direct write happens only when nothing is queued
 * (pending 0: the socket has every byte sealed before), straight to the
 * socket; what it does not take goes to @spill, counted in pending,
 * which the loop writes before anything else (net_conn_flush, or its
 * next send). close() clears @direct under the lock before it closes the
 * socket, so no thread writes to a closed (or reused) descriptor. */
#include "cluster/net_conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sodium.h>

/* The longest handshake message: message 2 with the largest payload. */
#define HS_MSG_MAX (2 * NET_KEY + 2 * NET_TAG + 1 + NET_HS_PAYLOAD_MAX)
#define READ_CHUNK 65536
/* Buffers that grew past this for one big frame are given back. */
#define KEEP_MAX ((size_t)1 << 20)
#define REASON_MAX 256

enum state {
	ST_RESOLVING,
	ST_CONNECTING,
	ST_HANDSHAKE, /* messages 1..3 */
	ST_CONFIRM,   /* initiator: waiting for the empty record */
	ST_READY,
};

struct net_conn {
	uv_loop_t *loop;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_getaddrinfo_t gai;
	uv_connect_t connect;
	struct net_conn_callbacks cb;
	void *user;
	enum state state;
	bool initiator;
	bool closing;
	bool silent;    /* made by a call that failed: no on_close */
	bool tcp_open;  /* tcp initialised and not closed */
	bool timer_open;
	bool confirmed; /* responder: the empty record is queued */
	bool want_drain;
	int busy;
	/* dialing */
	struct addrinfo *ai, *ai_next;
	char dial_err[128];
	char host[256];
	char source[64]; /* dial from this address ("": the kernel's pick) */
	uint16_t port;
	/* limits */
	uint32_t handshake_ms, idle_ms;
	size_t write_max;
	uint64_t last_read;
	/* the channel */
	struct net_hs hs;
	struct net_cipher tx, rx;
	uint8_t peer_key[NET_KEY];
	uint8_t payload[NET_HS_PAYLOAD_MAX];
	size_t payload_len;
	uint8_t hello[NET_CONN_HELLO_MAX];
	size_t hello_len;
	int (*on_hello)(struct net_conn *c, const uint8_t *hello, size_t len,
			uint8_t psk[NET_KEY]);
	struct fl_buf peer_payload;
	struct fl_buf in; /* bytes read, not yet taken */
	struct fl_buf plain; /* one opened record */
	struct fl_buf frame; /* one frame to seal */
	struct fl_buf out;   /* sealed bytes to write */
	size_t pending;
	struct net_counters sent, received;
	pthread_mutex_t txlock;
	bool direct; /* ready: any thread may send (net_conn_send_direct) */
	int fd;
	struct fl_buf spill; /* sealed by a direct send, not yet written */
	/* a write failed under @txlock: close once it is let go */
	bool wfailed;
	char wfail[REASON_MAX];
	char peer[NET_CONN_ADDR];
	char reason[REASON_MAX];
};

struct write_req {
	uv_write_t req;
	struct net_conn *c;
	size_t len;
	uint8_t data[];
};

/* ---- Closing ---- */

static void finish(struct net_conn *c)
{
	if (!c->silent && c->cb.on_close != NULL)
		c->cb.on_close(c, c->reason);
	if (c->ai != NULL)
		uv_freeaddrinfo(c->ai);
	fl_buf_close(&c->peer_payload);
	fl_buf_close(&c->in);
	sodium_memzero(c->plain.data, c->plain.len);
	fl_buf_close(&c->plain);
	fl_buf_close(&c->frame);
	fl_buf_close(&c->out);
	fl_buf_close(&c->spill);
	pthread_mutex_destroy(&c->txlock);
	sodium_memzero(c, sizeof *c);
	free(c);
}

static void release(struct net_conn *c)
{
	if (--c->busy == 0 && c->closing)
		finish(c);
}

static void on_handle_closed(uv_handle_t *h)
{
	release(h->data);
}

static void close_tcp(struct net_conn *c, uv_close_cb cb)
{
	if (c->tcp_open) {
		c->tcp_open = false;
		uv_close((uv_handle_t *)&c->tcp, cb);
	}
}

static void conn_close(struct net_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void conn_close(struct net_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->closing)
		return;
	c->closing = true;
	pthread_mutex_lock(&c->txlock);
	c->direct = false; /* before the socket closes */
	pthread_mutex_unlock(&c->txlock);
	va_start(ap, fmt);
	vsnprintf(c->reason, sizeof c->reason, fmt, ap);
	va_end(ap);
	if (c->state == ST_RESOLVING)
		uv_cancel((uv_req_t *)&c->gai); /* its callback still comes */
	if (c->tcp_open)
		uv_read_stop((uv_stream_t *)&c->tcp);
	close_tcp(c, on_handle_closed);
	if (c->timer_open) {
		c->timer_open = false;
		uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	}
	/* The timer is open until now, so busy > 0: finish comes from a
	 * close callback, never from inside this call. */
}

void net_conn_close(struct net_conn *c, const char *reason)
{
	conn_close(c, "%s", reason != NULL ? reason : "closed");
}

/* ---- Timers ---- */

static void on_timer(uv_timer_t *t)
{
	struct net_conn *c = t->data;
	uint64_t now = uv_now(c->loop), quiet;

	if (c->state != ST_READY) {
		conn_close(c, "handshake: not done within %u ms",
			   c->handshake_ms);
		return;
	}
	quiet = now - c->last_read;
	if (quiet >= c->idle_ms)
		conn_close(c, "idle: nothing received for %u ms", c->idle_ms);
	else
		uv_timer_start(&c->timer, on_timer, c->idle_ms - quiet, 0);
}

/* ---- Writing ---- */

/* Under @txlock: a write failed; close once the lock is let go
 * (settle). */
static void wfail(struct net_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void wfail(struct net_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->wfailed)
		return;
	c->wfailed = true;
	c->direct = false;
	va_start(ap, fmt);
	vsnprintf(c->wfail, sizeof c->wfail, fmt, ap);
	va_end(ap);
}

/* The loop, @txlock let go: close if a write under it failed. */
static void settle(struct net_conn *c)
{
	if (c->wfailed && !c->closing)
		conn_close(c, "%s", c->wfail);
}

static void on_written(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct net_conn *c = w->c;
	bool drain = false;

	pthread_mutex_lock(&c->txlock);
	c->pending -= w->len;
	if (status >= 0 && c->want_drain && c->pending <= c->write_max / 2 &&
	    !c->closing) {
		c->want_drain = false;
		drain = true;
	}
	pthread_mutex_unlock(&c->txlock);
	free(w);
	if (status < 0) {
		conn_close(c, "write: %s", uv_strerror(status));
		return;
	}
	if (drain && c->cb.on_drain != NULL)
		c->cb.on_drain(c);
}

/* Under @txlock, on the loop: queue @n bytes behind what is queued,
 * counted in pending unless @counted already. */
static int queue_write(struct net_conn *c, const uint8_t *p, size_t n,
		       bool counted)
{
	struct write_req *w = malloc(sizeof *w + n);
	uv_buf_t b;
	int r;

	if (w == NULL) {
		wfail(c, "write: out of memory");
		return FL_ENOMEM;
	}
	w->c = c;
	w->len = n;
	memcpy(w->data, p, n);
	b = uv_buf_init((char *)w->data, (unsigned)n);
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
	if (r < 0) {
		free(w);
		wfail(c, "write: %s", uv_strerror(r));
		return FL_EPIPE;
	}
	if (!counted)
		c->pending += n;
	return 0;
}

/* Under @txlock, on the loop: what a direct send left goes first. */
static int write_spill(struct net_conn *c)
{
	int rc = 0;

	if (c->spill.len > 0) {
		rc = queue_write(c, c->spill.data, c->spill.len, true);
		c->spill.len = 0;
		if (c->spill.cap > KEEP_MAX)
			fl_buf_close(&c->spill);
	}
	return rc;
}

/* Under @txlock, on the loop: write c->out's bytes, or queue what the
 * socket does not take now. */
static int write_out(struct net_conn *c)
{
	uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
	size_t at = 0;
	int r;

	r = write_spill(c);
	if (r != 0)
		return r;
	if (c->pending == 0 && c->tcp.write_queue_size == 0) {
		r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
		if (r >= 0)
			at = (size_t)r;
		else if (r != UV_EAGAIN) {
			wfail(c, "write: %s", uv_strerror(r));
			return FL_EPIPE;
		}
	}
	if (at < c->out.len) {
		r = queue_write(c, c->out.data + at, c->out.len - at, false);
		if (r != 0)
			return r;
	}
	c->out.len = 0;
	if (c->out.cap > KEEP_MAX)
		fl_buf_close(&c->out);
	return 0;
}

/* Send one handshake message: u16 length, then the message. */
static int send_hs(struct net_conn *c)
{
	struct fl_buf msg;
	int rc;

	fl_buf_init(&msg);
	rc = net_hs_write(&c->hs, c->initiator && c->hs.step == 0 ? c->hello
								   : c->payload,
			  c->initiator && c->hs.step == 0 ? c->hello_len
							  : c->payload_len,
			  &msg);
	pthread_mutex_lock(&c->txlock);
	if (rc == 0) {
		fl_buf_put_u16(&c->out, (uint16_t)msg.len);
		fl_buf_put(&c->out, msg.data, msg.len);
		if (fl_buf_failed(&c->out))
			rc = FL_ENOMEM;
	}
	fl_buf_close(&msg);
	if (rc != 0) {
		fl_buf_close(&c->out);
		pthread_mutex_unlock(&c->txlock);
		conn_close(c, "handshake: cannot write message %d: %s",
			   c->hs.step + 1, fl_strerror(rc));
		return rc;
	}
	rc = write_out(c);
	pthread_mutex_unlock(&c->txlock);
	settle(c);
	return rc;
}

/* Under @txlock: seal @n bytes of plaintext into c->out, one record. */
static int seal(struct net_conn *c, const void *p, size_t n)
{
	int rc = net_seal(&c->tx, p, n, &c->out);

	if (rc == 0 && fl_buf_failed(&c->out))
		rc = FL_ENOMEM;
	if (rc != 0) {
		fl_buf_close(&c->out); /* clears the failed flag too */
		if (rc == FL_ERANGE && n <= NET_RECORD_MAX - NET_TAG)
			wfail(c, "send: the channel used all its nonces");
	}
	return rc;
}

/* Under @txlock, on the loop: the responder's empty record, before any
 * frame of its own. */
static int confirm(struct net_conn *c)
{
	int rc;

	if (c->initiator || c->confirmed)
		return 0;
	c->confirmed = true;
	rc = seal(c, NULL, 0);
	return rc != 0 ? rc : write_out(c);
}

/* Under @txlock: @h and @payload into c->frame, checked, then sealed
 * into c->out; @check gets the header back. */
static int seal_frame(struct net_conn *c, const struct net_header *h,
		      const void *payload, size_t len,
		      struct net_header *check)
{
	int rc;

	c->frame.len = 0;
	net_frame_put(&c->frame, h, payload, len);
	if (fl_buf_failed(&c->frame)) {
		fl_buf_close(&c->frame);
		return FL_ENOMEM;
	}
	/* Never send what the peer must refuse. */
	if (net_header_decode(c->frame.data, c->frame.len, check, NULL) != 0)
		return FL_EINVAL;
	rc = seal(c, c->frame.data, c->frame.len);
	if (c->frame.cap > KEEP_MAX)
		fl_buf_close(&c->frame);
	return rc;
}

int net_conn_send(struct net_conn *c, const struct net_header *h,
		  const void *payload, size_t len)
{
	struct net_header check;
	int rc;

	if (c->closing || c->state != ST_READY || len > NET_FRAME_MAX)
		return FL_EINVAL;
	pthread_mutex_lock(&c->txlock);
	rc = confirm(c);
	if (rc != 0)
		goto out;
	if (c->pending > 0 && c->pending + len + NET_HEADER_SIZE + NET_TAG + 4 >
				      c->write_max) {
		c->want_drain = true;
		rc = FL_EAGAIN;
		goto out;
	}
	rc = seal_frame(c, h, payload, len, &check);
	if (rc == 0)
		rc = write_out(c);
	if (rc == 0)
		net_count(&c->sent, &check);
out:
	pthread_mutex_unlock(&c->txlock);
	settle(c);
	return rc;
}

int net_conn_send_direct(struct net_conn *c, const struct net_header *h,
			 const void *payload, size_t len)
{
	struct net_header check;
	ssize_t n;
	size_t at;
	int rc;

	if (len > NET_FRAME_MAX)
		return FL_EINVAL;
	pthread_mutex_lock(&c->txlock);
	if (!c->direct || c->pending > 0) {
		pthread_mutex_unlock(&c->txlock);
		return FL_EAGAIN;
	}
	rc = seal_frame(c, h, payload, len, &check);
	if (rc != 0) { /* nothing sealed: the loop's send says why */
		pthread_mutex_unlock(&c->txlock);
		return FL_EAGAIN;
	}
	/* Sealed, so it goes: to the socket, or what that does not take
	 * to the spill (an error too: the loop's write then meets it). */
	do
		n = send(c->fd, c->out.data, c->out.len,
			 MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	at = n > 0 ? (size_t)n : 0;
	if (at < c->out.len) {
		fl_buf_put(&c->spill, c->out.data + at, c->out.len - at);
		if (fl_buf_failed(&c->spill)) {
			/* a record cut short: the stream is lost */
			fl_buf_close(&c->spill);
			wfail(c, "write: out of memory");
		} else {
			c->pending += c->out.len - at;
		}
		rc = 1;
	}
	c->out.len = 0;
	if (c->out.cap > KEEP_MAX)
		fl_buf_close(&c->out);
	net_count(&c->sent, &check);
	pthread_mutex_unlock(&c->txlock);
	return rc;
}

void net_conn_flush(struct net_conn *c)
{
	if (c->closing)
		return;
	pthread_mutex_lock(&c->txlock);
	if (c->wfailed)
		fl_buf_close(&c->spill);
	else
		write_spill(c);
	pthread_mutex_unlock(&c->txlock);
	settle(c);
}

/* ---- Reading ---- */

static void become_ready(struct net_conn *c)
{
	c->state = ST_READY;
	c->last_read = uv_now(c->loop);
	if (c->idle_ms > 0)
		uv_timer_start(&c->timer, on_timer, c->idle_ms, 0);
	else
		uv_timer_stop(&c->timer);
	if (c->cb.on_ready != NULL)
		c->cb.on_ready(c, c->peer_key, c->peer_payload.data,
			       c->peer_payload.len);
	fl_buf_close(&c->peer_payload);
	if (c->closing)
		return;
	pthread_mutex_lock(&c->txlock);
	if (confirm(c) == 0 && !c->wfailed &&
	    uv_fileno((uv_handle_t *)&c->tcp, &c->fd) == 0)
		c->direct = true;
	pthread_mutex_unlock(&c->txlock);
	settle(c);
}

/* One handshake message from the peer. */
static void take_hs(struct net_conn *c, const uint8_t *msg, size_t n)
{
	struct fl_err err;
	bool last = c->hs.step >= 1; /* message 2 or 3 carries the payload */
	bool first = !c->initiator && c->hs.step == 0;
	struct fl_buf hello;

	fl_buf_init(&hello);
	if (net_hs_read(&c->hs, msg, n,
			last ? &c->peer_payload : first ? &hello : NULL, &err) != 0) {
		fl_buf_close(&hello);
		conn_close(c, "%s", err.msg);
		return;
	}
	if (first && c->on_hello != NULL) {
		/* The responder picks the pre-shared key from what message 1
		 * says the initiator is (it is mixed in at message 3). */
		uint8_t psk[NET_KEY];
		int rc = hello.len > NET_CONN_HELLO_MAX || fl_buf_failed(&hello)
				 ? FL_EFORMAT
				 : c->on_hello(c, hello.data, hello.len, psk);
		if (rc == 0)
			rc = net_hs_set_psk(&c->hs, psk);
		sodium_memzero(psk, sizeof psk);
		if (rc != 0) {
			fl_buf_close(&hello);
			conn_close(c, "handshake: the initiator's first message "
				      "names no kind of peer this side takes");
			return;
		}
	}
	fl_buf_close(&hello);
	if (fl_buf_failed(&c->peer_payload)) {
		conn_close(c, "handshake: out of memory");
		return;
	}
	if (c->initiator && send_hs(c) != 0) /* message 3 */
		return;
	if (!c->initiator && !net_hs_done(&c->hs)) {
		send_hs(c); /* message 2 */
		return;
	}
	if (!net_hs_done(&c->hs))
		return;
	net_hs_split(&c->hs, &c->tx, &c->rx, c->peer_key);
	if (c->initiator)
		c->state = ST_CONFIRM;
	else
		become_ready(c);
}

/* One opened record: the confirmation or a frame. */
static void take_record(struct net_conn *c)
{
	struct net_header h;
	struct fl_err err;

	if (c->state == ST_CONFIRM) {
		if (c->plain.len != 0) {
			conn_close(c, "handshake: a frame before the "
				      "confirmation");
			return;
		}
		become_ready(c);
		return;
	}
	if (net_header_decode(c->plain.data, c->plain.len, &h, &err) != 0) {
		conn_close(c, "%s", c->plain.len < NET_HEADER_SIZE
					    ? "frame: shorter than its header"
					    : err.msg);
		return;
	}
	if (h.length != c->plain.len - NET_HEADER_SIZE) {
		conn_close(c, "frame: %u payload bytes in a record of %zu",
			   h.length, c->plain.len - NET_HEADER_SIZE);
		return;
	}
	net_count(&c->received, &h);
	c->cb.on_frame(c, &h, c->plain.data + NET_HEADER_SIZE);
}

/* Take every complete message or record in c->in. */
static void take_input(struct net_conn *c)
{
	size_t off = 0, n, used, len;
	const uint8_t *p;
	struct fl_err err;
	int rc;

	while (!c->closing) {
		p = c->in.data + off;
		n = c->in.len - off;
		if (c->state == ST_HANDSHAKE) {
			if (n < 2)
				break;
			len = (size_t)p[0] | (size_t)p[1] << 8;
			if (len == 0 || len > HS_MSG_MAX) {
				conn_close(c, "handshake: message of %zu bytes "
					      "(not a Flock peer?)",
					   len);
				return;
			}
			if (n - 2 < len)
				break;
			off += 2 + len;
			take_hs(c, p + 2, len);
			continue;
		}
		/* Until the confirmation, the peer has not shown it holds the
		 * token: take nothing larger than the empty record. */
		if (c->state == ST_CONFIRM && n >= 4 &&
		    fl_load_u32(p) != NET_TAG) {
			conn_close(c, "handshake: a record of %u bytes where "
				      "the confirmation belongs",
				   fl_load_u32(p));
			return;
		}
		c->plain.len = 0;
		rc = net_open(&c->rx, p, n, &used, &c->plain, &err);
		if (rc == FL_EAGAIN)
			break;
		if (rc != 0) {
			conn_close(c, "%s", err.msg);
			return;
		}
		off += used;
		take_record(c);
	}
	if (c->closing)
		return;
	memmove(c->in.data, c->in.data + off, c->in.len - off);
	c->in.len -= off;
	if (c->in.len == 0 && c->in.cap > KEEP_MAX)
		fl_buf_close(&c->in);
	if (c->plain.cap > KEEP_MAX) {
		sodium_memzero(c->plain.data, c->plain.len);
		fl_buf_close(&c->plain);
	}
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct net_conn *c = h->data;

	(void)hint;
	if (!fl_buf_reserve(&c->in, READ_CHUNK)) {
		*buf = uv_buf_init(NULL, 0); /* read callback gets UV_ENOBUFS */
		return;
	}
	*buf = uv_buf_init((char *)c->in.data + c->in.len,
			   (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct net_conn *c = s->data;

	(void)buf;
	if (c->closing)
		return;
	if (nread == UV_EOF) {
		conn_close(c, "%s closed the connection%s", c->peer,
			   c->state == ST_READY ? "" : " during the handshake");
		return;
	}
	if (nread < 0) {
		conn_close(c, "read: %s", nread == UV_ENOBUFS
						  ? "out of memory"
						  : uv_strerror((int)nread));
		return;
	}
	c->in.len += (size_t)nread;
	c->last_read = uv_now(c->loop);
	take_input(c);
}

/* ---- Setting up ---- */

static void peer_text(struct net_conn *c)
{
	struct sockaddr_storage sa;
	int len = sizeof sa;
	char ip[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) != 0)
		return;
	if (sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&sa;

		uv_ip6_name(a, ip, sizeof ip);
		port = ntohs(a->sin6_port);
		snprintf(c->peer, sizeof c->peer, "[%s]:%u", ip, port);
	} else {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&sa;

		uv_ip4_name(a, ip, sizeof ip);
		port = ntohs(a->sin_port);
		snprintf(c->peer, sizeof c->peer, "%s:%u", ip, port);
	}
}

/* A peer that went without a word — a power cut, a pulled cable, or a
 * reset that only its end saw — is found by TCP keepalive even when
 * nothing is sent: probes after KEEP_IDLE_S of silence, every
 * KEEP_INTVL_S, and the connection closes at a reset or after KEEP_CNT
 * unanswered. A client waiting for a quiet process's output then goes
 * back to the VM (cli_vm.c) instead of waiting for good. */
#define KEEP_IDLE_S 2
#define KEEP_INTVL_S 1
#define KEEP_CNT 3

static void keepalive(struct net_conn *c)
{
	uv_os_fd_t fd;
	int v;

	if (uv_tcp_keepalive(&c->tcp, 1, KEEP_IDLE_S) != 0 ||
	    uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
		return; /* only slower to notice */
	v = KEEP_INTVL_S;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof v);
	v = KEEP_CNT;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof v);
}

static void start_reading(struct net_conn *c)
{
	int r;

	uv_tcp_nodelay(&c->tcp, 1);
	keepalive(c);
	peer_text(c);
	c->state = ST_HANDSHAKE;
	r = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (r < 0) {
		conn_close(c, "read: %s", uv_strerror(r));
		return;
	}
	if (c->initiator)
		send_hs(c); /* message 1 */
}

static int conn_new(uv_loop_t *loop, const struct net_conn_options *opt,
		    const struct net_conn_callbacks *cb, void *user,
		    bool initiator, struct net_conn **out)
{
	struct net_conn *c;

	if (opt == NULL || opt->keys == NULL || opt->psk == NULL ||
	    (opt->prologue == NULL && opt->prologue_len > 0) ||
	    (opt->payload == NULL && opt->payload_len > 0) ||
	    opt->payload_len > NET_HS_PAYLOAD_MAX || cb == NULL ||
	    (opt->hello == NULL && opt->hello_len > 0) ||
	    opt->hello_len > NET_CONN_HELLO_MAX ||
	    cb->on_frame == NULL)
		return FL_EINVAL;
	c = calloc(1, sizeof *c);
	if (c == NULL)
		return FL_ENOMEM;
	c->loop = loop;
	c->cb = *cb;
	c->user = user;
	c->initiator = initiator;
	c->handshake_ms = opt->handshake_ms ? opt->handshake_ms
					    : NET_CONN_HANDSHAKE_MS;
	c->idle_ms = opt->idle_ms;
	if (opt->source != NULL)
		snprintf(c->source, sizeof c->source, "%s", opt->source);
	c->write_max = opt->write_max ? opt->write_max : NET_CONN_WRITE_MAX;
	if (opt->payload_len > 0)
		memcpy(c->payload, opt->payload, opt->payload_len);
	c->payload_len = opt->payload_len;
	if (opt->hello_len > 0)
		memcpy(c->hello, opt->hello, opt->hello_len);
	c->hello_len = opt->hello_len;
	c->on_hello = opt->on_hello;
	net_hs_init(&c->hs, initiator, opt->keys, opt->psk, opt->prologue,
		    opt->prologue_len);
	fl_buf_init(&c->peer_payload);
	fl_buf_init(&c->in);
	fl_buf_init(&c->plain);
	fl_buf_init(&c->frame);
	fl_buf_init(&c->out);
	fl_buf_init(&c->spill);
	pthread_mutex_init(&c->txlock, NULL);
	c->fd = -1;
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	c->timer_open = true;
	c->busy = 1;
	uv_timer_start(&c->timer, on_timer, c->handshake_ms, 0);
	*out = c;
	return 0;
}

/* A call that made @c failed: close it without telling the user. */
static int fail_silently(struct net_conn *c, int rc)
{
	c->silent = true;
	conn_close(c, "not made");
	return rc;
}

int net_conn_accept(uv_stream_t *server, const struct net_conn_options *opt,
		    const struct net_conn_callbacks *cb, void *user,
		    struct net_conn **out)
{
	struct net_conn *c;
	int rc = conn_new(server->loop, opt, cb, user, false, &c);

	if (rc != 0)
		return rc;
	uv_tcp_init(server->loop, &c->tcp);
	c->tcp.data = c;
	c->tcp_open = true;
	c->busy++;
	if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0)
		return fail_silently(c, FL_EIO);
	start_reading(c);
	*out = c;
	return 0;
}

/* ---- Dialing ---- */

static void try_next(struct net_conn *c);

static void on_attempt_closed(uv_handle_t *h)
{
	struct net_conn *c = h->data;

	c->busy--;
	if (c->closing) {
		if (c->busy == 0)
			finish(c);
		return;
	}
	try_next(c);
}

static void on_connect(uv_connect_t *req, int status)
{
	struct net_conn *c = req->data;

	if (c->closing)
		return; /* ECANCELED: the handle's close callback follows */
	if (status < 0) {
		snprintf(c->dial_err, sizeof c->dial_err, "%s",
			 uv_strerror(status));
		close_tcp(c, on_attempt_closed);
		return;
	}
	start_reading(c);
}

/* Dial from c->source when it is an address of @family; when it is
 * not, or the bind fails, the kernel picks as usual. */
static void bind_source(struct net_conn *c, int family)
{
	struct sockaddr_storage sa;

	if (c->source[0] == 0)
		return;
	if (family == AF_INET &&
	    uv_ip4_addr(c->source, 0, (struct sockaddr_in *)&sa) == 0)
		(void)uv_tcp_bind(&c->tcp, (struct sockaddr *)&sa, 0);
	else if (family == AF_INET6 &&
		 uv_ip6_addr(c->source, 0, (struct sockaddr_in6 *)&sa) == 0)
		(void)uv_tcp_bind(&c->tcp, (struct sockaddr *)&sa, 0);
}

/* Connect to the next address, or close when none is left. */
static void try_next(struct net_conn *c)
{
	struct addrinfo *ai = c->ai_next;
	int r;

	while (ai != NULL && ai->ai_family != AF_INET &&
	       ai->ai_family != AF_INET6)
		ai = ai->ai_next;
	if (ai == NULL) {
		conn_close(c, "dial %s port %u: %s", c->host, c->port,
			   c->dial_err[0] ? c->dial_err : "no address");
		return;
	}
	c->ai_next = ai->ai_next;
	c->state = ST_CONNECTING;
	uv_tcp_init(c->loop, &c->tcp);
	c->tcp.data = c;
	c->tcp_open = true;
	c->busy++;
	c->connect.data = c;
	bind_source(c, ai->ai_family);
	r = uv_tcp_connect(&c->connect, &c->tcp, ai->ai_addr, on_connect);
	if (r < 0) {
		snprintf(c->dial_err, sizeof c->dial_err, "%s", uv_strerror(r));
		close_tcp(c, on_attempt_closed);
	}
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
	struct net_conn *c = req->data;

	c->ai = ai;
	c->ai_next = ai;
	c->state = ST_CONNECTING;
	if (c->closing) {
		release(c);
		return;
	}
	c->busy--;
	if (status < 0) {
		conn_close(c, "dial %s: %s", c->host, uv_strerror(status));
		return;
	}
	try_next(c);
}

int net_conn_dial(uv_loop_t *loop, const char *host, uint16_t port,
		  const struct net_conn_options *opt,
		  const struct net_conn_callbacks *cb, void *user,
		  struct net_conn **out)
{
	struct addrinfo hints;
	struct net_conn *c;
	char service[8];
	int rc, r;

	if (host == NULL || strlen(host) >= sizeof c->host || port == 0)
		return FL_EINVAL;
	rc = conn_new(loop, opt, cb, user, true, &c);
	if (rc != 0)
		return rc;
	snprintf(c->host, sizeof c->host, "%s", host);
	c->port = port;
	snprintf(service, sizeof service, "%u", port);
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_NUMERICSERV;
	c->gai.data = c;
	c->state = ST_RESOLVING;
	c->busy++;
	r = uv_getaddrinfo(loop, &c->gai, on_resolved, host, service, &hints);
	if (r < 0) {
		c->busy--;
		c->state = ST_CONNECTING;
		return fail_silently(c, r == UV_ENOMEM ? FL_ENOMEM : FL_EINVAL);
	}
	*out = c;
	return 0;
}

/* ---- Accessors ---- */

void *net_conn_user(const struct net_conn *c)
{
	return c->user;
}

const char *net_conn_peer(const struct net_conn *c)
{
	return c->peer;
}

void net_conn_counters(const struct net_conn *c, struct net_counters *sent,
		       struct net_counters *received)
{
	struct net_conn *m = (struct net_conn *)c; /* the lock only */

	pthread_mutex_lock(&m->txlock);
	if (sent != NULL)
		*sent = c->sent;
	pthread_mutex_unlock(&m->txlock);
	if (received != NULL)
		*received = c->received;
}

size_t net_conn_pending(const struct net_conn *c)
{
	struct net_conn *m = (struct net_conn *)c;
	size_t n;

	pthread_mutex_lock(&m->txlock);
	n = c->pending;
	pthread_mutex_unlock(&m->txlock);
	return n;
}
