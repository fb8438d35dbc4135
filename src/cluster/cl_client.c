/* A VM client over one secure connection (cl_client.h). */
#include "cluster/cl_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "cluster/net_conn.h"

struct frame {
	struct net_header h;
	struct frame *next;
	uint8_t p[];
};

struct cl_client {
	struct cl_cred cred;
	uv_loop_t loop;
	struct net_conn *conn;
	bool ready, closed;
	char why[256];
	struct frame *head, *tail, *cur;
	uint64_t next_req;
	uv_timer_t timer;
	bool timed_out;
	/* stdin */
	uv_async_t async;
	bool has_async;
	pthread_t in_thread;
	pthread_mutex_t in_lock;
	struct frame *in_head, *in_tail; /* chunks read, not yet sent */
	/* Chunks sent, kept until a reconnect says they arrived (at most
	 * IN_KEEP bytes: the oldest go first). */
	struct frame *sent_head, *sent_tail;
	size_t sent_bytes;
	bool in_eof;
	bool in_closed; /* under in_lock: the loop is going, post nothing */
	uint64_t pid, in_seq;
};

int cl_status_for(int code)
{
	switch (code) {
	case FL_EPERM:
		return 77;
	case FL_EAGAIN:
	case FL_EPIPE:
		return 69;
	case FL_EFORMAT:
		return 65;
	case FL_ENOENT:
	case FL_EINVAL:
	case FL_ENOSPC:
	case FL_EEXIST:
		return 64;
	default:
		return 70;
	}
}

int cl_client_target(const char *vm_arg, struct cl_cred *cred,
		     struct cl_addr *where, struct fl_err *err)
{
	char home[4096];
	const char *v = vm_arg;
	int rc;

	if ((rc = cl_cred_dir(home, sizeof home, err)) != 0)
		return rc;
	if (v == NULL || v[0] == 0)
		v = getenv("FLOCK_VM");
	if (v != NULL && v[0] != 0) {
		if ((rc = cl_addr_parse(v, true, where, err)) != 0)
			return rc;
		return cl_cred_load(home, where->vm, cred, err);
	}
	if ((rc = cl_cred_only(home, cred, err)) != 0)
		return rc;
	{
		char tmp[CTL_NAME_MAX + CTL_ADDR_MAX + 2];
		snprintf(tmp, sizeof tmp, "%s@%s", cred->vm, cred->addr);
		return cl_addr_parse(tmp, true, where, err);
	}
}

static void c_ready(struct net_conn *nc, const uint8_t peer[NET_KEY],
		    const uint8_t *payload, size_t len)
{
	struct cl_client *c = net_conn_user(nc);

	(void)peer;
	(void)payload;
	(void)len;
	c->ready = true;
}

static void c_frame(struct net_conn *nc, const struct net_header *h,
		    const uint8_t *p)
{
	struct cl_client *c = net_conn_user(nc);
	struct frame *f = malloc(sizeof *f + h->length);

	if (f == NULL) {
		net_conn_close(nc, "out of memory");
		return;
	}
	f->h = *h;
	f->next = NULL;
	memcpy(f->p, p, h->length);
	if (c->tail != NULL)
		c->tail->next = f;
	else
		c->head = f;
	c->tail = f;
}

static void c_close(struct net_conn *nc, const char *reason)
{
	struct cl_client *c = net_conn_user(nc);

	c->closed = true;
	c->conn = NULL;
	snprintf(c->why, sizeof c->why, "%s", reason);
}

static const struct net_conn_callbacks client_cb = {
	.on_ready = c_ready,
	.on_frame = c_frame,
	.on_close = c_close,
};

static void timer_cb(uv_timer_t *t)
{
	struct cl_client *c = t->data;

	c->timed_out = true;
}

/* Dial @host:@port with @c's credentials and wait for the handshake. */
static int dial(struct cl_client *c, const char *host, uint16_t port,
		struct fl_err *err)
{
	const struct cl_cred *cred = &c->cred;
	struct net_conn_options o = {0};
	char prologue[96];
	uint8_t hello = 2; /* a client (dm_int.h's DM_CLIENT) */
	int rc;

	c->ready = c->closed = false;
	c->why[0] = 0;
	snprintf(prologue, sizeof prologue, "flock/1 %s", cred->vm);
	o.keys = &cred->key;
	o.psk = cred->psk;
	o.prologue = prologue;
	o.prologue_len = strlen(prologue);
	o.hello = &hello;
	o.hello_len = 1;
	o.payload = cred->user;
	o.payload_len = strlen(cred->user);
	rc = net_conn_dial(&c->loop, host, port, &o, &client_cb, c, &c->conn);
	if (rc != 0) {
		c->conn = NULL;
		return fl_err_set(err, FL_EAGAIN, "cannot dial %s:%u", host, port);
	}
	while (!c->ready && !c->closed)
		uv_run(&c->loop, UV_RUN_ONCE);
	if (!c->ready) {
		/* the machine answered but the handshake failed: it does not
		 * take our credentials */
		bool refused = strncmp(c->why, "dial ", 5) != 0;
		return fl_err_set(err, refused ? FL_EPERM : FL_EAGAIN,
				  refused ? "VM %s at %s:%u refused us: %s (the "
					    "credentials are not this VM's)"
					  : "cannot reach VM %s at %s:%u: %s",
				  cred->vm, host, port, c->why);
	}
	return 0;
}

int cl_client_open(const struct cl_cred *cred, const char *host,
		   uint16_t port, struct cl_client **out, struct fl_err *err)
{
	struct cl_client *c = calloc(1, sizeof *c);
	int rc;

	if (c == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	if (net_crypto_init() != 0 || uv_loop_init(&c->loop) != 0) {
		free(c);
		return fl_err_set(err, FL_EIO, "cannot set up libsodium or libuv");
	}
	c->cred = *cred;
	pthread_mutex_init(&c->in_lock, NULL);
	uv_timer_init(&c->loop, &c->timer);
	c->timer.data = c;
	rc = dial(c, host, port, err);
	if (rc != 0) {
		cl_client_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

int cl_client_reopen(struct cl_client *c, const char *host, uint16_t port,
		     struct fl_err *err)
{
	if (c->conn != NULL) {
		net_conn_close(c->conn, "reconnecting");
		while (c->conn != NULL)
			uv_run(&c->loop, UV_RUN_ONCE);
	}
	while (c->head != NULL) { /* frames of the old connection */
		struct frame *f = c->head;
		c->head = f->next;
		free(f);
	}
	c->tail = NULL;
	return dial(c, host, port, err);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void cl_client_close(struct cl_client *c)
{
	if (c == NULL)
		return;
	pthread_mutex_lock(&c->in_lock);
	c->in_closed = true;
	pthread_mutex_unlock(&c->in_lock);
	if (c->conn != NULL)
		net_conn_close(c->conn, "done");
	while (c->conn != NULL)
		uv_run(&c->loop, UV_RUN_ONCE);
	/* every handle closed and every request (a name being resolved)
	 * done before the loop goes */
	do {
		uv_walk(&c->loop, walk_close, NULL);
		uv_run(&c->loop, UV_RUN_NOWAIT);
		if (uv_loop_alive(&c->loop))
			uv_run(&c->loop, UV_RUN_ONCE);
	} while (uv_loop_close(&c->loop) == UV_EBUSY);
	free(c->cur);
	while (c->sent_head != NULL) {
		struct frame *f = c->sent_head;
		c->sent_head = f->next;
		free(f);
	}
	while (c->head != NULL) {
		struct frame *f = c->head;
		c->head = f->next;
		free(f);
	}
	/* The stdin thread, if any, may still be blocked in read(2) and
	 * holds @c: it stays (the process is about to exit). */
	if (!c->has_async)
		free(c);
}

uint64_t cl_client_send(struct cl_client *c, uint8_t type, const void *p,
			size_t n)
{
	uint64_t req = ++c->next_req;

	return cl_client_send_req(c, type, req, p, n) == 0 ? req : 0;
}

int cl_client_send_req(struct cl_client *c, uint8_t type, uint64_t req,
		       const void *p, size_t n)
{
	struct net_header h = {.version = NET_VERSION, .type = type, .request = req};
	int rc;

	if (c->conn == NULL)
		return FL_EPIPE;
	while ((rc = net_conn_send(c->conn, &h, p, n)) == FL_EAGAIN) {
		uv_run(&c->loop, UV_RUN_ONCE);
		if (c->conn == NULL)
			return FL_EPIPE;
	}
	return rc;
}

void cl_client_flush(struct cl_client *c)
{
	while (c->conn != NULL && net_conn_pending(c->conn) > 0)
		uv_run(&c->loop, UV_RUN_ONCE);
}

int cl_client_next(struct cl_client *c, struct net_header *h,
		   const uint8_t **p, int timeout_ms, struct fl_err *err)
{
	free(c->cur);
	c->cur = NULL;
	c->timed_out = false;
	if (timeout_ms >= 0)
		uv_timer_start(&c->timer, timer_cb, (uint64_t)timeout_ms, 0);
	while (c->head == NULL && !c->closed && !c->timed_out)
		uv_run(&c->loop, UV_RUN_ONCE);
	uv_timer_stop(&c->timer);
	if (c->head == NULL) {
		if (c->closed)
			return fl_err_set(err, FL_EPIPE, "the connection closed: %s",
					  c->why);
		return fl_err_set(err, FL_EAGAIN, "no answer in time");
	}
	c->cur = c->head;
	c->head = c->cur->next;
	if (c->head == NULL)
		c->tail = NULL;
	*h = c->cur->h;
	*p = c->cur->p;
	return 0;
}

/* ---- stdin ---- */

#define IN_KEEP ((size_t)16 << 20)

static void keep_sent(struct cl_client *c, struct frame *f)
{
	f->next = NULL;
	if (c->sent_tail != NULL)
		c->sent_tail->next = f;
	else
		c->sent_head = f;
	c->sent_tail = f;
	c->sent_bytes += f->h.length;
	while (c->sent_bytes > IN_KEEP && c->sent_head != f) {
		struct frame *old = c->sent_head;
		c->sent_head = old->next;
		c->sent_bytes -= old->h.length;
		free(old);
	}
}

static void in_async(uv_async_t *a)
{
	struct cl_client *c = a->data;

	for (;;) {
		struct frame *f;
		pthread_mutex_lock(&c->in_lock);
		f = c->in_head;
		if (f != NULL) {
			c->in_head = f->next;
			if (c->in_head == NULL)
				c->in_tail = NULL;
		}
		pthread_mutex_unlock(&c->in_lock);
		if (f == NULL)
			return;
		memcpy(f->p + 8, &c->in_seq, 8);
		c->in_seq++;
		cl_client_send_req(c, NET_MSG_INPUT, 0, f->p, f->h.length);
		keep_sent(c, f);
	}
}

uint64_t cl_client_resend_input(struct cl_client *c, uint64_t from)
{
	uint64_t first = UINT64_MAX;

	for (struct frame *f = c->sent_head; f != NULL; f = f->next) {
		uint64_t seq = fl_load_u64(f->p + 8);
		if (first == UINT64_MAX)
			first = seq;
		if (seq >= from)
			cl_client_send_req(c, NET_MSG_INPUT, 0, f->p, f->h.length);
	}
	/* what the machine lacks and we no longer have */
	if (from < c->in_seq && (first == UINT64_MAX || from < first))
		return from;
	return UINT64_MAX;
}

static void *in_main(void *arg)
{
	struct cl_client *c = arg;

	for (;;) {
		struct frame *f = malloc(sizeof *f + 16 + 65536);
		ssize_t n;
		if (f == NULL)
			return NULL;
		do
			n = read(0, f->p + 16, 65536);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			n = 0;
		memcpy(f->p, &c->pid, 8);
		f->h.length = (uint32_t)(16 + n);
		f->next = NULL;
		pthread_mutex_lock(&c->in_lock);
		if (c->in_tail != NULL)
			c->in_tail->next = f;
		else
			c->in_head = f;
		c->in_tail = f;
		if (c->in_closed) {
			pthread_mutex_unlock(&c->in_lock);
			return NULL;
		}
		uv_async_send(&c->async);
		pthread_mutex_unlock(&c->in_lock);
		if (n == 0)
			return NULL;
	}
}

int cl_client_stdin(struct cl_client *c, uint64_t pid, uint64_t seq)
{
	c->pid = pid;
	c->in_seq = seq;
	uv_async_init(&c->loop, &c->async, in_async);
	c->async.data = c;
	c->has_async = true;
	if (pthread_create(&c->in_thread, NULL, in_main, c) != 0)
		return FL_EIO;
	pthread_detach(c->in_thread);
	return 0;
}

uint64_t cl_client_stdin_seq(struct cl_client *c)
{
	return c->in_seq;
}
