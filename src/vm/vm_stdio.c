/* A process's stdin, stdout and stderr, off the workers.
 *
 * Workers never do the I/O of a program's write, read or printi: they
 * queue output records (fd, bytes) in the process's queue and take input
 * from its buffer, and a driver does the system calls. The embedded VM's
 * driver (below) is one thread per process writing to and reading from
 * the fds of vm_options; a daemon's will carry the same records to the
 * client instead.
 *
 * Output: stdout is buffered: the driver is woken when 64 KiB are queued,
 * before a read of stdin, at every write to stderr or (when stdout is a
 * terminal) to stdout, and at the end; records keep the order the program
 * wrote, so stdout and stderr interleave as written. A writer finding
 * VM_OUT_MAX bytes queued parks (VM_PARK_OUTPUT) until the driver has
 * written some; its write resumes where it stopped (t->partial counts the
 * bytes queued so far) and returns the whole count. A resumed reader or
 * writer takes its reply (which says nothing more than "go on"), so that
 * no reply stays waiting in a thread that runs on.
 *
 * Output errors are reported, never dropped. When writing a stream fails
 * (EPIPE: its reader went away; ENOSPC, EIO, EBADF), its queued bytes are
 * discarded and the program's next write to it returns the negative code
 * (-FL_EPIPE, ...); so do later ones. A program that writes to a stdout
 * whose reader went away after being told so, or prints with printi, ends
 * with status 141 (128 + SIGPIPE), as a shell expects of a program in a
 * pipe whose reader has left, and without a message. An error the program
 * never saw (its last output, flushed at the end) turns an exit status of
 * 0 into 141 for EPIPE, or 74 (EX_IOERR) with a line on stderr otherwise.
 *
 * Input: a read takes what the buffer holds (up to its n), 0 at end of
 * input; with nothing there it asks the driver for more and parks
 * (VM_PARK_INPUT). The destination is translated for writing before any
 * input is taken, so a bad address loses none. A parked reader or writer
 * counts as a request in flight (nbusy), so it is never a deadlock; when
 * the process ends they are released at once and the driver stops
 * reading, so an exit never waits for input that may never come.
 *
 * Threads: the queue and buffer under io.lock, taken by workers and the
 * driver; parked threads are resumed by the io event, which the driver
 * posts to the node's inbox and which runs on a worker. The event is
 * posted only while threads wait, which keeps the process alive (nbusy)
 * until it has run. */
#include "vm/vm_int.h"
#include "vm/vm_gsrc.h"
#include "vm/vm_peer.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define VM_OUT_FLUSH (64 * 1024) /* queued stdout bytes that wake the driver */
#define VM_OUT_MAX (256 * 1024)  /* queued bytes past which writers wait */
#define VM_IN_MAX (64 * 1024)    /* bytes of input read ahead */
#define REC_HDR 5                /* u8 fd, u32 length */

#define STATUS_SIGPIPE 141
#define STATUS_IOERR 74

static int err_of(int e)
{
	switch (e) {
	case EPIPE:
		return FL_EPIPE;
	case ENOSPC:
		return FL_ENOSPC;
	case EBADF:
		return FL_EBADF;
	default:
		return FL_EIO;
	}
}

/* Wake the driver; any thread. A syscall only when it was not woken yet. */
static void kick(struct vm_pio *io)
{
	uint64_t one = 1;

	if (atomic_exchange(&io->kicked, true))
		return;
	if (write(io->evfd, &one, sizeof one) < 0) {
		/* only EAGAIN, with the counter already nonzero: it will
		 * wake */
	}
}

/* ---- Resuming parked readers and writers (on a worker) ---- */

static void take_list(struct vm_thread **list, struct vm_thread **into)
{
	while (*list != NULL) {
		struct vm_thread *t = *list;
		*list = (struct vm_thread *)t->waiter.next;
		t->waiter.next = (struct vm_waiter *)*into;
		*into = t;
	}
}

static void io_event(struct vm_node *n, struct vm_event *ev)
{
	struct vm_proc *p =
		(struct vm_proc *)((char *)ev - offsetof(struct vm_proc, io.ev));
	struct vm_pio *io = &p->io;
	struct vm_thread *go = NULL;
	bool ending = atomic_load(&p->ending);

	(void)n;
	pthread_mutex_lock(&io->lock);
	io->ev_posted = false;
	if (ending || io->queued < VM_OUT_MAX)
		take_list(&io->out_wait, &go);
	if (ending || io->in_len > io->in_off || io->in_eof || io->in_err)
		take_list(&io->in_wait, &go);
	pthread_mutex_unlock(&io->lock);
	while (go != NULL) {
		struct vm_thread *t = go;
		go = (struct vm_thread *)t->waiter.next;
		/* After the end they stay parked, freed with the process. */
		if (!ending)
			vm__resume(NULL, t, 0, 0);
		vm__proc_busy_dec(p); /* its request is over */
	}
}

/* Post the io event unless it is posted already; under io->lock. */
static void post_locked(struct vm_proc *p)
{
	if (p->io.ev_posted)
		return;
	p->io.ev_posted = true;
	p->io.ev.fn = io_event;
	vm_node_post(p->node, &p->io.ev);
}

/* Park @t on @list (under io->lock); it is a request in flight. After
 * the end it does not: vm__io_ending() may have released the lists
 * already, and nobody would release it. */
static enum vm_res wait_on(struct vm_proc *p, struct vm_thread **list,
			   struct vm_thread *t, enum vm_park kind)
{
	if (atomic_load(&p->ending))
		return VM_END;
	vm__proc_busy_inc(p);
	vm__park_begin(t, kind, 0);
	t->waiter.next = (struct vm_waiter *)*list;
	*list = t;
	return VM_PARK;
}

void vm__io_ending(struct vm_proc *p)
{
	pthread_mutex_lock(&p->io.lock);
	if (p->io.out_wait != NULL || p->io.in_wait != NULL)
		post_locked(p);
	pthread_mutex_unlock(&p->io.lock);
	kick(&p->io);
}

/* ---- Output, on the workers ---- */

/* Append @n bytes for @fd to the queue (under io->lock). */
static void queue_locked(struct vm_pio *io, int fd, const void *b, size_t n)
{
	struct fl_buf *q = &io->q;

	if (io->last != SIZE_MAX && q->data[io->last] == fd) {
		uint32_t len = fl_load_u32(q->data + io->last + 1) + (uint32_t)n;
		fl_buf_put(q, b, n);
		if (fl_buf_failed(q))
			return;
		for (int i = 0; i < 4; i++)
			q->data[io->last + 1 + i] = (uint8_t)(len >> (8 * i));
	} else {
		io->last = q->len;
		fl_buf_put_u8(q, (uint8_t)fd);
		fl_buf_put_u32(q, (uint32_t)n);
		fl_buf_put(q, b, n);
	}
	io->queued += n;
}

/* Should the driver write now? Under io->lock, after queueing to @fd. */
static bool urgent(const struct vm_pio *io, int fd)
{
	return fd == 2 || io->tty || io->queued >= VM_OUT_FLUSH;
}

/* The stream broke: what this write does (under io->lock); *@res set
 * when it returns VM_OK. VM_END: the caller ends the process, unlocked. */
static enum vm_res broken(struct vm_proc *p, int fd, vm_word done,
			  vm_word *res)
{
	struct vm_stream *st = &p->io.out[fd];

	if (fd == 1 && st->err == FL_EPIPE && st->told)
		return VM_END; /* it was told and went on */
	st->told = true;
	*res = done ? done : (vm_word)-st->err;
	return VM_OK;
}

/* The process's stdio is on its origin: a thread elsewhere moves there
 * (vm_peer.h), its writes released first, and the instruction runs
 * again on arrival. VM_OK when @p is on the origin. */
static enum vm_res to_origin(struct vm_worker *w, struct vm_proc *p)
{
	enum vm_res rc;

	if (p->peer == NULL || p->peer->self == p->peer->origin)
		return VM_OK;
	rc = p->gs->ops->fence(p->gs, w, VM_FENCE_RELEASE);
	if (rc != VM_OK)
		return rc;
	w->cur->move_to = p->peer->origin;
	w->cur->move_why = VM_MOVE_STDIO;
	return VM_MOVE;
}

/* write and read run on the origin, where the process's stdio is; their
 * page faults never move the thread for its data (w->stay): a write
 * would lose its progress, and either would come back for its stdio. */
static enum vm_res io_write(struct vm_worker *w, struct vm_thread *t,
			    int64_t fd, vm_word addr, vm_word n, vm_word *res);
static enum vm_res io_read(struct vm_worker *w, struct vm_thread *t,
			   int64_t fd, vm_word addr, vm_word n, vm_word *res);

enum vm_res vm__io_write(struct vm_worker *w, struct vm_thread *t, int64_t fd,
			 vm_word addr, vm_word n, vm_word *res)
{
	enum vm_res rc;

	w->stay = true;
	rc = io_write(w, t, fd, addr, n, res);
	w->stay = false;
	return rc;
}

enum vm_res vm__io_read(struct vm_worker *w, struct vm_thread *t, int64_t fd,
			vm_word addr, vm_word n, vm_word *res)
{
	enum vm_res rc;

	w->stay = true;
	rc = io_read(w, t, fd, addr, n, res);
	w->stay = false;
	return rc;
}

static enum vm_res io_write(struct vm_worker *w, struct vm_thread *t,
			    int64_t fd, vm_word addr, vm_word n, vm_word *res)
{
	struct vm_proc *p = t->proc;
	struct vm_pio *io = &p->io;
	uint8_t buf[4096];
	vm_word done = t->partial;
	enum vm_res rc = VM_OK;
	bool wake = false;
	struct vm_reply r;

	if ((rc = to_origin(w, p)) != VM_OK)
		return rc;
	/* Resumed: the reply only says "go on". Take it, or it would stay
	 * ready (and travel with the thread's state) as the thread runs on. */
	vm__reply_take(t, VM_PARK_OUTPUT, &r);
	if (fd != 1 && fd != 2) {
		*res = (vm_word)-FL_EBADF;
		return VM_OK;
	}
	while (done < n) {
		vm_word k = n - done < sizeof buf ? n - done : sizeof buf;
		rc = vm__mem_read(w, buf, addr + done, k, "write");
		if (rc != VM_OK) {
			t->partial = rc == VM_PARK ? done : 0; /* resume here */
			if (wake)
				kick(io);
			return rc;
		}
		pthread_mutex_lock(&io->lock);
		if (io->out[fd].err) {
			rc = broken(p, (int)fd, done, res);
			pthread_mutex_unlock(&io->lock);
			t->partial = 0;
			if (wake)
				kick(io);
			if (rc == VM_END)
				vm__proc_end(p, STATUS_SIGPIPE);
			return rc;
		}
		if (io->queued >= VM_OUT_MAX) {
			rc = wait_on(p, &io->out_wait, t, VM_PARK_OUTPUT);
			pthread_mutex_unlock(&io->lock);
			t->partial = done;
			kick(io);
			return rc;
		}
		queue_locked(io, (int)fd, buf, k);
		wake |= urgent(io, (int)fd);
		pthread_mutex_unlock(&io->lock);
		done += k;
	}
	t->partial = 0;
	if (wake)
		kick(io);
	*res = done;
	return rc;
}

enum vm_res vm__io_print(struct vm_worker *w, struct vm_thread *t,
			 const char *s, size_t n)
{
	struct vm_proc *p = t->proc;
	struct vm_pio *io = &p->io;
	struct vm_reply r;
	enum vm_res rc;
	bool wake;

	if ((rc = to_origin(w, p)) != VM_OK)
		return rc;
	vm__reply_take(t, VM_PARK_OUTPUT, &r); /* as in vm__io_write */
	pthread_mutex_lock(&io->lock);
	if (io->out[1].err) {
		/* It cannot be told: a reader gone ends it, as SIGPIPE
		 * would; other errors wait for the end. */
		bool pipe = io->out[1].err == FL_EPIPE;
		pthread_mutex_unlock(&io->lock);
		if (pipe) {
			vm__proc_end(p, STATUS_SIGPIPE);
			return VM_END;
		}
		return VM_OK;
	}
	if (io->queued >= VM_OUT_MAX) {
		rc = wait_on(p, &io->out_wait, t, VM_PARK_OUTPUT);
		pthread_mutex_unlock(&io->lock);
		kick(io);
		return rc;
	}
	queue_locked(io, 1, s, n);
	wake = urgent(io, 1);
	pthread_mutex_unlock(&io->lock);
	if (wake)
		kick(io);
	return VM_OK;
}

void vm__io_errline(struct vm_proc *p, const char *s)
{
	pthread_mutex_lock(&p->io.lock);
	queue_locked(&p->io, 2, s, strlen(s));
	pthread_mutex_unlock(&p->io.lock);
	kick(&p->io);
}

/* ---- Input, on the workers ---- */

static enum vm_res io_read(struct vm_worker *w, struct vm_thread *t,
			   int64_t fd, vm_word addr, vm_word n, vm_word *res)
{
	struct vm_proc *p = t->proc;
	struct vm_pio *io = &p->io;
	uint8_t buf[VM_IN_MAX];
	struct vm_reply r;
	enum vm_res rc;
	size_t k;

	if ((rc = to_origin(w, p)) != VM_OK)
		return rc;
	vm__reply_take(t, VM_PARK_INPUT, &r); /* as in vm__io_write */
	if (fd != 0) {
		*res = (vm_word)-FL_EBADF;
		return VM_OK;
	}
	if (n > VM_IN_MAX)
		n = VM_IN_MAX;
	/* The whole destination first: a bad address consumes no input, and
	 * a page source keeps what it translated for writing until this
	 * thread's next fence (vm_gsrc.h), so the copy below cannot park. */
	for (vm_word a = addr; a - addr < n; a = (a | (VM_PAGE_SIZE - 1)) + 1) {
		uint8_t *d;
		rc = vm__xlate(w, a, 1, true, "read", &d);
		if (rc != VM_OK)
			return rc;
	}
	pthread_mutex_lock(&io->lock);
	k = io->in_len - io->in_off;
	if (k == 0) {
		if (io->in_err) {
			*res = (vm_word)-io->in_err;
			io->in_err = 0;
		} else if (io->in_eof) {
			*res = 0;
		} else {
			/* Ask for more; stdout goes out first (the driver
			 * writes what is queued before it reads). */
			io->in_wanted = true;
			rc = wait_on(p, &io->in_wait, t, VM_PARK_INPUT);
			pthread_mutex_unlock(&io->lock);
			kick(io);
			return rc;
		}
		pthread_mutex_unlock(&io->lock);
		return VM_OK;
	}
	if (k > n)
		k = n;
	memcpy(buf, io->in + io->in_off, k);
	io->in_off += k;
	pthread_mutex_unlock(&io->lock);
	*res = k;
	return vm__mem_write(w, addr, buf, k, "read") == VM_OK ? VM_OK : VM_FAULT;
}

/* ---- The fd driver: one thread per process ---- */

static int out_fd(const struct vm_proc *p, int fd)
{
	return fd == 1 ? p->opt.fd_out : p->opt.fd_err;
}

/* Write the records in @b; returns the payload bytes they held. */
static size_t write_records(struct vm_proc *p, const struct fl_buf *b)
{
	struct vm_pio *io = &p->io;
	size_t off = 0, payload = 0;

	while (off + REC_HDR <= b->len) {
		int fd = b->data[off];
		uint32_t len = fl_load_u32(b->data + off + 1);
		int err = 0;
		off += REC_HDR;
		pthread_mutex_lock(&io->lock);
		err = io->out[fd].err;
		pthread_mutex_unlock(&io->lock);
		if (err == 0 && fl_write_all(out_fd(p, fd), b->data + off, len) < len) {
			err = err_of(errno);
			if (errno == EPIPE) {
				/* SIGPIPE is blocked in this thread: take the
				 * one the write raised, so none is left. */
				sigset_t set;
				struct timespec zero = {0, 0};
				sigemptyset(&set);
				sigaddset(&set, SIGPIPE);
				sigtimedwait(&set, NULL, &zero);
			}
			pthread_mutex_lock(&io->lock);
			io->out[fd].err = err;
			pthread_mutex_unlock(&io->lock);
		}
		off += len;
		payload += len;
	}
	return payload;
}

/* Read what stdin has (it polled readable) into the buffer. */
static void read_input(struct vm_proc *p)
{
	struct vm_pio *io = &p->io;
	ssize_t got;

	if (io->in == NULL)
		io->in = malloc(VM_IN_MAX);
	do
		got = io->in ? read(p->opt.fd_in, io->in, VM_IN_MAX) : -1;
	while (got < 0 && errno == EINTR);
	pthread_mutex_lock(&io->lock);
	io->in_off = 0;
	io->in_len = got > 0 ? (size_t)got : 0;
	if (got == 0)
		io->in_eof = true;
	else if (got < 0)
		io->in_err = io->in ? err_of(errno) : FL_ENOMEM;
	io->in_wanted = false;
	/* Only with readers waiting: they keep the process from being
	 * freed before the event runs. */
	if (io->in_wait != NULL)
		post_locked(p);
	pthread_mutex_unlock(&io->lock);
}

static void *driver_main(void *arg)
{
	struct vm_proc *p = arg;
	struct vm_pio *io = &p->io;
	struct fl_buf batch;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	fl_buf_init(&batch);
	for (;;) {
		struct pollfd pfd[2];
		struct fl_buf tmp;
		bool want_in, done;
		atomic_store(&io->kicked, false);
		pthread_mutex_lock(&io->lock);
		tmp = io->q;
		io->q = batch;
		batch = tmp;
		io->last = SIZE_MAX;
		want_in = io->in_wanted && !atomic_load(&p->ending);
		done = batch.len == 0 && atomic_load(&p->quiet);
		pthread_mutex_unlock(&io->lock);
		if (batch.len > 0) {
			size_t n = write_records(p, &batch);
			batch.len = 0;
			batch.failed = false;
			pthread_mutex_lock(&io->lock);
			io->queued -= n;
			if (io->out_wait != NULL)
				post_locked(p);
			pthread_mutex_unlock(&io->lock);
			continue; /* more may have come meanwhile */
		}
		if (done)
			break;
		pfd[0] = (struct pollfd){.fd = io->evfd, .events = POLLIN};
		pfd[1] = (struct pollfd){.fd = p->opt.fd_in, .events = POLLIN};
		if (poll(pfd, want_in ? 2 : 1, -1) < 0)
			continue; /* EINTR */
		if (pfd[0].revents) {
			uint64_t v;
			if (read(io->evfd, &v, sizeof v) < 0) {
				/* EAGAIN: someone else drained it */
			}
		}
		if (want_in && pfd[1].revents)
			read_input(p);
	}
	fl_buf_close(&batch);
	pthread_mutex_lock(&p->endlock);
	io->closed = true;
	pthread_cond_broadcast(&p->endcond);
	pthread_mutex_unlock(&p->endlock);
	return NULL;
}

/* ---- Life ---- */

int vm__io_init(struct vm_proc *p, struct fl_err *err)
{
	struct vm_pio *io = &p->io;

	/* First, so that vm__io_close() is right whatever fails after. */
	pthread_mutex_init(&io->lock, NULL);
	fl_buf_init(&io->q);
	io->last = SIZE_MAX;
	io->tty = isatty(p->opt.fd_out) == 1;
	io->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (io->evfd < 0)
		return fl_err_set(err, FL_EIO, "stdio: eventfd: %s",
				  strerror(errno));
	if (pthread_create(&io->th, NULL, driver_main, p) != 0)
		return fl_err_set(err, FL_EIO, "stdio: cannot start its thread");
	io->th_started = true;
	return 0;
}

int vm__io_wait(struct vm_proc *p, int status)
{
	struct vm_pio *io = &p->io;
	int final = status;

	kick(io);
	pthread_mutex_lock(&p->endlock);
	while (io->th_started && !io->closed)
		pthread_cond_wait(&p->endcond, &p->endlock);
	pthread_mutex_unlock(&p->endlock);
	/* Output the program never heard had failed (its last, written at
	 * the end) must not go unnoticed. */
	if (status == 0 && io->out[1].err && !io->out[1].told) {
		if (io->out[1].err == FL_EPIPE) {
			final = STATUS_SIGPIPE;
		} else {
			dprintf(p->opt.fd_err, "%s: writing stdout: %s\n",
				p->opt.prog, fl_strerror(io->out[1].err));
			final = STATUS_IOERR;
		}
	}
	return final;
}

void vm__io_close(struct vm_proc *p)
{
	struct vm_pio *io = &p->io;

	if (io->th_started) {
		kick(io);
		pthread_join(io->th, NULL);
		io->th_started = false;
	}
	if (io->evfd >= 0)
		close(io->evfd);
	io->evfd = -1;
	fl_buf_close(&io->q);
	free(io->in);
	io->in = NULL;
	pthread_mutex_destroy(&io->lock);
}
