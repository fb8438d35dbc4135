/* What clients ask of a machine (dm_int.h): processes, their output, the
 * tables of ps and status, kill, wait, leave.
 *
 * A submission. The client picks a submission id (a random client id and
 * sequence number 1) and sends it with the module. The machine proposes
 * SUBMIT with that pair: the first time it applies, the process gets its
 * pid and this machine starts it; any retry -- the client reconnecting,
 * here or to another machine -- gets the same pid back as a replay and
 * only attaches to the output, so a process is never started twice.
 *
 * Output. The process's stdout and stderr are pipes the loop reads; every
 * chunk becomes a record (stream, bytes) with the next sequence number,
 * appended to --data/logs/PID. A client follows a process from a sequence
 * number; it writes each record once, skipping numbers it has, so output
 * the network repeats is written once. A client that reads slowly is
 * served from the log file once it drains: nothing is dropped and memory
 * stays bounded. stdin comes as INPUT records with sequence numbers,
 * applied once each, in order. */
#include "cluster/dm_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist.h"
#include "lang/lang.h"

#define KILLED_STATUS 137 /* 128 + SIGKILL, as a shell shows a kill -9 */
/* What ended processes did is kept for this many of them (ps -v). */
#define DM_FINS_MAX 256

/* What one process did, part by part, once it was over everywhere. */
struct dm_fin {
	struct dm_fin *next;
	uint64_t pid;
	int n;
	uint32_t ids[DIST_MAX_PARTS];
	struct dm_pstats s[DIST_MAX_PARTS];
};

struct dm_watch {
	struct dm_link *link;
	uint64_t next_seq; /* the next record it needs */
	uint64_t off;      /* where that record starts in the log */
	bool output;       /* wants records (run, logs), not only the end */
	bool follow;       /* until the end (run, wait), not what is there */
	uint64_t req;
	uint64_t since; /* when it came (ms) */
	struct dm_watch *next;
};

struct dm_proc {
	struct dm *d;
	uint64_t pid;
	char owner[CTL_NAME_MAX + 1];
	struct vm_module *m;
	struct vm_proc *vp;
	struct vm_options o;
	char **argv;
	int argc;
	uv_pipe_t out, err, in;
	int out_w, err_w, in_r;
	int open_reads; /* stdout and stderr still open */
	bool in_open, in_eof;
	uint64_t in_seq;
	unsigned in_pending; /* writes to stdin's pipe in flight */
	pthread_t waiter;
	bool has_waiter;
	uv_async_t done;
	bool waited; /* the waiter returned: status set, pipes' write ends closed */
	int status;
	bool ended; /* waited and both pipes at their end */
	/* Its end is in the process table (or the table ended it as lost
	 * and @status says so): only then do its clients hear it, so that
	 * a machine cut off from the control plane's majority never tells
	 * a status the VM does not hold. When it last asked (ms). */
	bool recorded;
	uint64_t record_ms;
	bool freed;
	int logfd;
	uint64_t nrec, logsize;
	uint64_t started_ms;
	uint64_t memory;
	struct dm_watch *watch;
	struct dm_part *part; /* spread over machines: its part here */
	struct dm_proc *next;
};

/* ---- Output records ---- */

static void log_path(struct dm *d, uint64_t pid, char *out, size_t n)
{
	snprintf(out, n, "%s/logs/%" PRIu64, d->cfg->data, pid);
}

static void watch_free(struct dm_proc *p, struct dm_watch *w)
{
	for (struct dm_watch **q = &p->watch; *q != NULL; q = &(*q)->next)
		if (*q == w) {
			*q = w->next;
			break;
		}
	free(w);
}

/* Send @w what it lacks from the log, then the end if there is one. */
static void watch_pump(struct dm_proc *p, struct dm_watch *w)
{
	uint8_t hdr[5], buf[65536 + 17];

	while (w->output && w->next_seq < p->nrec) {
		uint32_t len;
		if (pread(p->logfd, hdr, 5, (off_t)w->off) != 5)
			break;
		memcpy(&len, hdr + 1, 4);
		if (len > 65536 ||
		    pread(p->logfd, buf + 17, len, (off_t)w->off + 5) != (ssize_t)len)
			break;
		memcpy(buf, &p->pid, 8);
		memcpy(buf + 8, &w->next_seq, 8);
		buf[16] = hdr[0];
		if (dm_send(w->link, NET_MSG_OUTPUT, 0, w->req, buf, 17 + len) != 0)
			return; /* on_drain brings us back */
		w->next_seq++;
		w->off += 5 + len;
	}
	/* (a spread process is over once every part is: proc_release) */
	if ((p->ended && p->part == NULL && p->recorded) || !w->follow) {
		uint8_t st[12];
		int32_t status = p->ended && p->part == NULL && p->recorded
					 ? p->status
					 : -1;
		memcpy(st, &p->pid, 8);
		memcpy(st + 8, &status, 4);
		if (dm_send(w->link, NET_MSG_STATUS, NET_FLAG_REPLY, w->req, st,
			    sizeof st) == FL_EAGAIN)
			return;
		watch_free(p, w);
	}
}

static void proc_record(struct dm_proc *p, uint8_t stream, const char *b,
			size_t n)
{
	uint8_t hdr[5];
	uint32_t len = (uint32_t)n;

	hdr[0] = stream;
	memcpy(hdr + 1, &len, 4);
	if (pwrite(p->logfd, hdr, 5, (off_t)p->logsize) != 5 ||
	    pwrite(p->logfd, b, n, (off_t)p->logsize + 5) != (ssize_t)n) {
		dm_log(p->d, "process %" PRIu64 ": cannot write its log: %s",
		       p->pid, strerror(errno));
		return;
	}
	p->logsize += 5 + n;
	p->nrec++;
	for (struct dm_watch *w = p->watch, *next; w != NULL; w = next) {
		next = w->next;
		watch_pump(p, w);
	}
}

static void pipe_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf)
{
	(void)h;
	(void)want;
	buf->base = malloc(65536);
	buf->len = buf->base != NULL ? 65536 : 0;
}

static void proc_maybe_end(struct dm_proc *p);

static void pipe_closed(uv_handle_t *h)
{
	(void)h;
}

static void pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct dm_proc *p = s->data;

	if (n > 0)
		proc_record(p, s == (uv_stream_t *)&p->out ? 1 : 2, buf->base,
			    (size_t)n);
	free(buf->base);
	if (n < 0) {
		uv_read_stop(s);
		uv_close((uv_handle_t *)s, pipe_closed);
		p->open_reads--;
		proc_maybe_end(p);
	}
}

/* ---- Processes ---- */

static struct dm_proc *proc_find(struct dm *d, uint64_t pid);
static void proc_record(struct dm_proc *p, uint8_t stream, const char *b,
			size_t n);

/* The process table says how @p ended, with the line it gives a client
 * of a process lost with its machine when that is what it says. */
static void end_recorded(struct dm_proc *p, const struct ctl_proc *cp)
{
	if (cp != NULL && cp->lost && p->status != cp->status) {
		char line[160];
		int n = snprintf(line, sizeof line,
				 "flock: process %" PRIu64 " lost: this machine, "
				 "m%" PRIu32 ", was declared lost\n",
				 p->pid, p->d->me.id);
		p->status = cp->status;
		proc_record(p, 2, line, (size_t)n);
	}
	p->recorded = true;
	for (struct dm_watch *w = p->watch, *next; w != NULL; w = next) {
		next = w->next;
		watch_pump(p, w);
	}
}

static void end_proposed(struct dm_prop *pr, struct ctl_result r)
{
	struct dm_proc *p = proc_find(pr->d, pr->data2);
	const struct ctl_proc *cp = ctl_proc_find(&pr->d->st, pr->data2);

	if (p == NULL || p->recorded)
		return;
	/* Applied now, or before (an answer lost on the way: ended is
	 * final, so the retry is refused): the table has it. */
	if (r.rc == 0 || (cp != NULL && cp->state == CTL_P_ENDED))
		end_recorded(p, cp);
	/* else no leader now: dm_procs_tick asks again */
}

static void record_end(struct dm_proc *p)
{
	struct ctl_command c = {.type = CTL_CMD_PROC_STATE};

	c.u.pstate.pid = p->pid;
	c.u.pstate.state = CTL_P_ENDED;
	c.u.pstate.status = p->status;
	c.u.pstate.machine = p->d->me.id;
	p->record_ms = dm_now_ms();
	dm_propose(p->d, &c, end_proposed, NULL, p->pid);
}

static void async_closed(uv_handle_t *h)
{
	struct dm_proc *p = h->data;

	p->freed = true;
}

/* What @p (its VM process still there) did so far, part by part, into
 * @f (zeroed): a process on this machine alone is one part. */
static void proc_parts(const struct dm_proc *p, struct dm_fin *f)
{
	struct vm_proc_info info;

	f->pid = p->pid;
	if (p->part != NULL) {
		f->n = dm_part_stats(p->part, f->s, f->ids);
		return;
	}
	vm_proc_info(p->vp, &info);
	f->n = 1;
	f->ids[0] = p->d->me.id;
	f->s[0].threads = info.threads;
	f->s[0].memory = info.memory;
	f->s[0].cpu_ns = info.cpu_ns;
}

/* Keep what @p did, part by part, for ps -v. */
static void proc_keep_stats(struct dm_proc *p)
{
	struct dm *d = p->d;
	struct dm_fin *f = calloc(1, sizeof *f), **q;

	if (f == NULL)
		return; /* ps -v shows less: no harm */
	proc_parts(p, f);
	f->next = d->fins;
	d->fins = f;
	if (++d->nfins <= DM_FINS_MAX)
		return;
	for (q = &d->fins; (*q)->next != NULL; q = &(*q)->next)
		;
	free(*q);
	*q = NULL;
	d->nfins--;
}

/* Free @p's VM process and module (its record stays); a spread one's
 * end goes to its followers now that every part is quiet. */
static void proc_release(void *arg)
{
	struct dm_proc *p = arg;
	struct vm_proc_info info;

	if (p->vp == NULL)
		return;
	vm_proc_info(p->vp, &info);
	proc_keep_stats(p);
	p->d->cpu_done_ns += info.cpu_ns;
	vm_proc_free(p->vp);
	p->vp = NULL;
	vm_module_free(p->m);
	p->m = NULL;
	if (p->part != NULL && p->ended) {
		p->part = NULL;
		for (struct dm_watch *w = p->watch, *next; w != NULL; w = next) {
			next = w->next;
			watch_pump(p, w);
		}
	}
	p->part = NULL;
}

static void proc_maybe_end(struct dm_proc *p)
{
	struct dm *d = p->d;

	if (!p->waited || p->open_reads > 0 || p->ended)
		return;
	p->ended = true;
	if (p->has_waiter)
		pthread_join(p->waiter, NULL);
	p->has_waiter = false;
	/* Spread over machines, the process stays until every part is
	 * quiet: its pages' home answers them till then. */
	if (p->part != NULL)
		dm_part_origin_done(p->part, proc_release, p);
	else
		proc_release(p);
	if (p->in_open) {
		uv_close((uv_handle_t *)&p->in, pipe_closed);
		p->in_open = false;
	}
	d->ram_used -= p->memory;
	dm_log(d, "process %" PRIu64 " ended with status %d", p->pid, p->status);
	record_end(p);
	for (struct dm_watch *w = p->watch, *next; w != NULL; w = next) {
		next = w->next;
		watch_pump(p, w);
	}
	uv_close((uv_handle_t *)&p->done, async_closed);
}

static void *waiter_main(void *arg)
{
	struct dm_proc *p = arg;

	p->status = vm_proc_wait(p->vp);
	/* the loop closes the pipes' other ends: descriptors are closed on
	 * the thread that reuses them (libuv's pool opens files from the
	 * loop's requests) */
	uv_async_send(&p->done);
	return NULL;
}

static void proc_done_cb(uv_async_t *a)
{
	struct dm_proc *p = a->data;

	if (p->waited)
		return;
	/* The waiter saw the end; waiting here too returns at once, and
	 * orders the stdio thread's last writes before the closes below
	 * for ThreadSanitizer, which does not see through libuv's async
	 * handle. */
	vm_proc_wait(p->vp);
	close(p->out_w); /* the process's output is all written */
	close(p->err_w);
	close(p->in_r);
	p->waited = true;
	proc_maybe_end(p);
}

static struct dm_proc *proc_find(struct dm *d, uint64_t pid)
{
	for (struct dm_proc *p = d->procs; p != NULL; p = p->next)
		if (p->pid == pid)
			return p;
	return NULL;
}

/* A process record for @pid whose log exists (it ran here before). */
static struct dm_proc *proc_archived(struct dm *d, uint64_t pid, int status)
{
	char path[4200];
	struct dm_proc *p;
	struct stat sb;
	int fd;

	log_path(d, pid, path, sizeof path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	p = calloc(1, sizeof *p);
	if (p == NULL) {
		close(fd);
		return NULL;
	}
	p->d = d;
	p->pid = pid;
	p->logfd = fd;
	p->ended = p->waited = p->freed = p->recorded = true;
	p->status = status;
	if (fstat(fd, &sb) == 0)
		p->logsize = (uint64_t)sb.st_size;
	/* count the records */
	for (uint64_t off = 0; off + 5 <= p->logsize;) {
		uint8_t hdr[5];
		uint32_t len;
		if (pread(fd, hdr, 5, (off_t)off) != 5)
			break;
		memcpy(&len, hdr + 1, 4);
		off += 5 + len;
		if (off > p->logsize)
			break;
		p->nrec++;
	}
	p->next = d->procs;
	d->procs = p;
	return p;
}

static void watch_add(struct dm_proc *p, struct dm_link *l, uint64_t req,
		      uint64_t from, bool output, bool follow)
{
	struct dm_watch *w = calloc(1, sizeof *w);

	if (w == NULL) {
		dm_send_error(l, NET_MSG_ATTACH, req, FL_ENOMEM, "out of memory");
		return;
	}
	w->link = l;
	w->req = req;
	w->since = dm_now_ms();
	w->output = output;
	w->follow = follow;
	/* skip to @from */
	while (w->next_seq < from && w->next_seq < p->nrec) {
		uint8_t hdr[5];
		uint32_t len;
		if (pread(p->logfd, hdr, 5, (off_t)w->off) != 5)
			break;
		memcpy(&len, hdr + 1, 4);
		w->off += 5 + len;
		w->next_seq++;
	}
	w->next = p->watch;
	p->watch = w;
	watch_pump(p, w);
}

struct submit {
	struct dm_link *link;
	uint64_t req, from;
	bool detach;
	struct vm_module *m;
	struct vm_options o;
	char **argv;
	int argc;
};

static void submit_free(struct submit *s)
{
	if (s == NULL)
		return;
	vm_module_free(s->m);
	for (int i = 0; i < s->argc; i++)
		free(s->argv[i]);
	free(s->argv);
	free(s);
}

static bool link_alive(struct dm *d, struct dm_link *l)
{
	for (struct dm_link *x = d->links; x != NULL; x = x->next)
		if (x == l)
			return true;
	return false;
}

static void running_proposed(struct dm_prop *pr, struct ctl_result r)
{
	(void)pr;
	(void)r;
}

static int proc_start(struct dm *d, struct submit *s, uint64_t pid,
		      const char *owner, struct fl_err *err)
{
	struct dm_proc *p = calloc(1, sizeof *p);
	int outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1};
	char path[4200];
	int rc;

	if (p == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	log_path(d, pid, path, sizeof path);
	p->logfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (p->logfd < 0 || pipe2(outp, O_CLOEXEC) != 0 ||
	    pipe2(errp, O_CLOEXEC) != 0 || pipe2(inp, O_CLOEXEC) != 0) {
		rc = fl_err_set(err, FL_EIO, "cannot set up the process's output: %s",
				strerror(errno));
		goto fail;
	}
	p->d = d;
	p->pid = pid;
	snprintf(p->owner, sizeof p->owner, "%s", owner);
	p->m = s->m;
	p->argv = s->argv;
	p->argc = s->argc;
	p->o = s->o;
	p->o.argc = s->argc;
	p->o.argv = s->argv;
	p->o.fd_in = inp[0];
	p->o.fd_out = outp[1];
	p->o.fd_err = errp[1];
	p->o.prog = "flock";
	p->out_w = outp[1];
	p->err_w = errp[1];
	p->in_r = inp[0];
	p->memory = p->o.memory;
	rc = dm_part_start(d, pid, p->m, &p->o, &p->vp, &p->part, err);
	if (rc)
		goto fail;
	s->m = NULL;
	s->argv = NULL;
	s->argc = 0;
	uv_pipe_init(&d->loop, &p->out, 0);
	uv_pipe_init(&d->loop, &p->err, 0);
	uv_pipe_init(&d->loop, &p->in, 0);
	uv_pipe_open(&p->out, outp[0]);
	uv_pipe_open(&p->err, errp[0]);
	uv_pipe_open(&p->in, inp[1]);
	p->out.data = p->err.data = p->in.data = p;
	p->open_reads = 2;
	p->in_open = true;
	uv_read_start((uv_stream_t *)&p->out, pipe_alloc, pipe_read);
	uv_read_start((uv_stream_t *)&p->err, pipe_alloc, pipe_read);
	uv_async_init(&d->loop, &p->done, proc_done_cb);
	p->done.data = p;
	p->started_ms = dm_now_ms();
	d->ram_used += p->memory;
	p->next = d->procs;
	d->procs = p;
	if (pthread_create(&p->waiter, NULL, waiter_main, p) != 0) {
		/* cannot wait for it: end it now, and wait here */
		vm_proc_kill(p->vp, 70);
		waiter_main(p);
	} else {
		p->has_waiter = true;
	}
	if (s->detach) {
		/* no stdin for a detached process */
		uv_close((uv_handle_t *)&p->in, pipe_closed);
		p->in_open = false;
	}
	dm_log(d, "process %" PRIu64 " of %s started", pid, owner);
	return 0;
fail:
	if (p->logfd >= 0)
		close(p->logfd);
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0)
			close(outp[i]);
		if (errp[i] >= 0)
			close(errp[i]);
		if (inp[i] >= 0)
			close(inp[i]);
	}
	free(p);
	return rc;
}

static void submit_reply_pid(struct dm_link *l, uint64_t req, uint64_t pid)
{
	dm_send(l, NET_MSG_SUBMIT, NET_FLAG_REPLY, req, &pid, 8);
}

static void redirect(struct dm *d, struct dm_link *l, uint8_t type,
		     uint64_t req, uint32_t machine)
{
	const struct ctl_member *m = ctl_member_find(&d->st, machine);

	if (m == NULL) {
		dm_send_error(l, type, req, FL_ENOENT, "machine %" PRIu32 " is gone",
			      machine);
		return;
	}
	dm_send(l, NET_MSG_REDIRECT, NET_FLAG_REPLY, req, m->addr, strlen(m->addr));
}

static void submit_done(struct dm_prop *pr, struct ctl_result r)
{
	struct dm *d = pr->d;
	struct submit *s = pr->data;
	struct dm_link *l = s->link;
	const struct ctl_proc *cp;
	struct fl_err err;

	if (!link_alive(d, l)) {
		/* The client went; it may come back and attach: start
		 * anyway, it was submitted. */
		if (r.rc != 0 || r.replay) {
			submit_free(s);
			return;
		}
		l = NULL;
	}
	if (r.rc != 0) {
		if (l != NULL)
			dm_send_error(l, NET_MSG_SUBMIT, s->req, r.rc,
				      r.rc == FL_EAGAIN
					      ? "the VM's control plane has no leader"
					      : r.rc == FL_EPERM ? "not a user of this VM"
								 : "the VM refused the "
								   "submission (%s)",
				      fl_errname(r.rc));
		submit_free(s);
		return;
	}
	if (!r.replay) {
		const char *owner = l != NULL ? l->user : "?";
		cp = ctl_proc_find(&d->st, r.value);
		if (cp != NULL)
			owner = cp->owner;
		if (proc_start(d, s, r.value, owner, &err) != 0) {
			struct ctl_command c = {.type = CTL_CMD_PROC_STATE};
			c.u.pstate.pid = r.value;
			c.u.pstate.state = CTL_P_ENDED;
			c.u.pstate.status = 70;
			dm_propose(d, &c, end_proposed, NULL, 0);
			if (l != NULL)
				dm_send_error(l, NET_MSG_SUBMIT, s->req, FL_ENOMEM,
					      "the process could not start: %s",
					      err.msg);
			submit_free(s);
			return;
		}
		struct ctl_command c = {.type = CTL_CMD_PROC_STATE};
		c.u.pstate.pid = r.value;
		c.u.pstate.state = CTL_P_RUNNING;
		c.u.pstate.machine = d->me.id;
		dm_propose(d, &c, running_proposed, NULL, 0);
	}
	if (l != NULL) {
		struct dm_proc *p = proc_find(d, r.value);
		submit_reply_pid(l, s->req, r.value);
		if (!s->detach) {
			if (p != NULL) {
				watch_add(p, l, s->req, s->from, true, true);
			} else {
				cp = ctl_proc_find(&d->st, r.value);
				if (cp != NULL && cp->machine != 0 &&
				    cp->machine != d->me.id)
					redirect(d, l, NET_MSG_SUBMIT, s->req,
						 cp->machine);
				else if (cp != NULL && cp->state == CTL_P_ENDED &&
					 (p = proc_archived(d, cp->pid, cp->status)) != NULL)
					watch_add(p, l, s->req, s->from, true, true);
				else
					dm_send_error(l, NET_MSG_SUBMIT, s->req,
						      FL_EAGAIN,
						      "process %" PRIu64
						      " is starting elsewhere",
						      r.value);
			}
		}
	}
	submit_free(s);
}

static void human_bytes(uint64_t b, char *out, size_t n);

/* Where a new process goes: the machine with the fewest running
 * processes per core, from the heartbeats, among those that are active
 * and connected; this machine when it is as good as any (no move for
 * nothing), 0 when none serves. */
static uint32_t pick_machine(struct dm *d)
{
	const struct ctl_member *me = ctl_member_find(&d->st, d->me.id);
	struct dm_load self;
	uint32_t best = 0;
	double best_load = 0;

	dm_load_self(d, &self);
	if (me != NULL && me->state == CTL_M_ACTIVE &&
	    me->incarnation == d->me.incarnation && !d->leaving) {
		best = d->me.id;
		best_load = (double)self.procs / (me->cpu ? me->cpu : 1);
	}
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		struct dm_peer *p;
		double load;
		if (m->id == d->me.id || m->state != CTL_M_ACTIVE)
			continue;
		p = dm_peer_get(d, m->id, false);
		if (p == NULL || p->link == NULL || !p->has_load)
			continue;
		load = (double)p->load.procs / (m->cpu ? m->cpu : 1);
		/* another machine only when it is less loaded by a whole
		 * process per core: heartbeats are half a second old */
		if (best == 0 || load + 1.0 <= best_load) {
			best = m->id;
			best_load = load;
		}
	}
	return best;
}

static void on_submit(struct dm_link *l, const struct net_header *h,
		      const uint8_t *pay)
{
	struct dm *d = l->d;
	struct submit *s = calloc(1, sizeof *s);
	struct ctl_command c = {.type = CTL_CMD_SUBMIT};
	struct dm_submit msg;
	const struct ctl_member *me;
	struct fl_err err;

	if (s == NULL) {
		dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_ENOMEM,
			      "out of memory");
		return;
	}
	s->link = l;
	s->req = h->request;
	vm_options_init(&s->o);
	if (dm_submit_decode(pay, h->length, &msg, &err) != 0) {
		dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_EFORMAT, "%s",
			      err.msg);
		submit_free(s);
		return;
	}
	c.client = msg.client;
	c.seq = msg.seq;
	s->detach = msg.detach;
	s->o.check = msg.check;
	s->o.memory = msg.memory;
	s->o.max_threads = msg.max_threads;
	s->o.stack_words = msg.stack_words;
	s->o.max_depth = msg.call_depth;
	s->o.cpus = msg.cpus;
	s->o.spread_eager = msg.eager;
	s->o.survive = msg.survive;
	s->from = msg.from;
	s->argv = msg.argv; /* taken */
	s->argc = (int)msg.argc;
	msg.argv = NULL;
	if (s->o.stack_words == 0 || s->o.stack_words > VM_MAX_STACK_WORDS ||
	    s->o.max_depth == 0 || s->o.max_depth > VM_MAX_CALL_DEPTH ||
	    s->o.max_threads == 0) {
		dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_EFORMAT,
			      "submission: a limit out of range");
		submit_free(s);
		return;
	}
	/* The rest is the module: hostile bytes like any other. */
	if (vm_module_decode(msg.module, msg.module_len, &s->m, &err) != 0 ||
	    vm_verify(s->m, true, &err) != 0) {
		dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_EFORMAT,
			      "%s: the module failed verification: %s",
			      s->argv[0], err.msg);
		submit_free(s);
		return;
	}
	if (s->o.memory > d->cfg->provide.ram) {
		/* a machine that offers that much, else a clear no */
		uint64_t most = d->cfg->provide.ram;
		uint32_t to = 0;
		char want[32], have[32];
		for (size_t i = 0; i < d->st.nmembers; i++) {
			const struct ctl_member *m = &d->st.members[i];
			struct dm_peer *pe = dm_peer_get(d, m->id, false);
			if (m->state != CTL_M_ACTIVE || m->id == d->me.id)
				continue;
			if (m->ram > most)
				most = m->ram;
			if (to == 0 && m->ram >= s->o.memory && pe != NULL &&
			    pe->link != NULL)
				to = m->id;
		}
		if (to != 0) {
			redirect(d, l, NET_MSG_SUBMIT, h->request, to);
			submit_free(s);
			return;
		}
		human_bytes(s->o.memory, want, sizeof want);
		human_bytes(most, have, sizeof have);
		dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_ENOSPC,
			      "--memory %s is more than any machine of VM %s "
			      "provides (the most: ram:%s)",
			      want, d->me.vm, have);
		submit_free(s);
		return;
	}
	if (s->o.memory == 0)
		s->o.memory = d->cfg->provide.ram;
	if (!msg.placed || d->leaving) {
		/* The VM picks the machine: the least loaded that serves. */
		uint32_t to = pick_machine(d);
		if (to != d->me.id && to != 0) {
			redirect(d, l, NET_MSG_SUBMIT, h->request, to);
			submit_free(s);
			return;
		}
		if (d->leaving) {
			dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_EAGAIN,
				      "this machine is leaving the VM and no other "
				      "takes processes now");
			submit_free(s);
			return;
		}
	}
	me = ctl_member_find(&d->st, d->me.id);
	if (me == NULL || me->state != CTL_M_ACTIVE ||
	    me->incarnation != d->me.incarnation) {
		/* Restarted or fenced, and not back yet: a process started
		 * now would end with the old incarnation's loss. */
		dm_send_error(l, NET_MSG_SUBMIT, h->request, FL_EAGAIN,
			      "machine m%" PRIu32 " is coming back as "
			      "incarnation %" PRIu32 ": it takes processes once "
			      "the VM has it back",
			      d->me.id, d->me.incarnation);
		submit_free(s);
		return;
	}
	snprintf(c.u.submit.owner, sizeof c.u.submit.owner, "%s", l->user);
	c.u.submit.machine = d->me.id; /* it starts here */
	dm_propose(d, &c, submit_done, s, 0);
}

/* stdin's end closes the pipe once what came before it is written
 * (closing at once would cancel those writes). */
static void input_maybe_close(struct dm_proc *p)
{
	if (p->in_open && p->in_eof && p->in_pending == 0) {
		uv_close((uv_handle_t *)&p->in, pipe_closed);
		p->in_open = false;
	}
}

static void input_written(uv_write_t *w, int status)
{
	struct dm_proc *p = w->data;

	(void)status;
	free(w); /* the request is the first member of its block */
	p->in_pending--;
	input_maybe_close(p);
}

static void on_input(struct dm_link *l, const struct net_header *h,
		     const uint8_t *pay)
{
	struct dm_proc *p;
	uint64_t pid, seq;

	memcpy(&pid, pay, 8);
	memcpy(&seq, pay + 8, 8);
	p = proc_find(l->d, pid);
	if (p == NULL || !p->in_open || seq != p->in_seq)
		return; /* gone, or a repeat: applied once */
	if (!l->admin && strcmp(l->user, p->owner) != 0)
		return; /* not this user's process */
	p->in_seq++;
	if (h->length == 16) {
		p->in_eof = true;
		input_maybe_close(p);
		return;
	}
	{
		size_t n = h->length - 16;
		struct {
			uv_write_t w;
			char b[];
		} *w = malloc(sizeof *w + n);
		uv_buf_t b;
		if (w == NULL)
			return;
		memcpy(w->b, pay + 16, n);
		b = uv_buf_init(w->b, (unsigned)n);
		w->w.data = p;
		if (uv_write(&w->w, (uv_stream_t *)&p->in, &b, 1, input_written) != 0)
			free(w);
		else
			p->in_pending++;
	}
}

static bool may_touch(struct dm_link *l, const struct ctl_proc *cp)
{
	return l->admin || strcmp(l->user, cp->owner) == 0;
}

/* Whether @l may ask of process @pid (its record @cp): if not, the error
 * is sent. */
static bool proc_allowed(struct dm_link *l, const struct net_header *h,
			 uint64_t pid, const struct ctl_proc *cp)
{
	if (cp == NULL) {
		dm_send_error(l, h->type, h->request, FL_ENOENT,
			      "no process %" PRIu64 " in VM %s", pid, l->d->me.vm);
		return false;
	}
	if (!may_touch(l, cp)) {
		dm_send_error(l, h->type, h->request, FL_EPERM,
			      "process %" PRIu64 " is %s's", pid, cp->owner);
		return false;
	}
	return true;
}

/* The active machines' addresses, a line each: where a client may go
 * on when the machine it talks to is lost. */
static void addrs_text(struct dm *d, struct fl_buf *b)
{
	for (size_t i = 0; i < d->st.nmembers; i++)
		if (d->st.members[i].state == CTL_M_ACTIVE)
			fl_buf_printf(b, "%s\n", d->st.members[i].addr);
}

/* A process whose machine was declared lost: its client (back at another
 * machine, or at the machine come back) hears its end here, with a line saying why, as its next
 * record; true when answered so. */
static bool lost_there(struct dm_link *l, const struct net_header *h,
		       const struct ctl_proc *cp, uint64_t from)
{
	uint8_t st[12], rec[17 + 160];
	int n;

	if (!cp->lost)
		return false;
	if (h->type == NET_MSG_KILL) {
		dm_send_error(l, h->type, h->request, FL_ENOENT,
			      "process %" PRIu64 " has ended", cp->pid);
		return true;
	}
	if (h->type == NET_MSG_ATTACH) {
		n = snprintf((char *)rec + 17, sizeof rec - 17,
			     "flock: process %" PRIu64 " lost with machine "
			     "m%" PRIu32 ", which ran it\n",
			     cp->pid, cp->machine);
		memcpy(rec, &cp->pid, 8);
		memcpy(rec + 8, &from, 8);
		rec[16] = 2; /* stderr */
		dm_send(l, NET_MSG_OUTPUT, 0, h->request, rec, 17 + (size_t)n);
	}
	memcpy(st, &cp->pid, 8);
	memcpy(st + 8, &cp->status, 4);
	dm_send(l, NET_MSG_STATUS, NET_FLAG_REPLY, h->request, st, sizeof st);
	return true;
}

/* ATTACH, WAIT, KILL: the process is here, elsewhere, or ended. */
static void on_pid_request(struct dm_link *l, const struct net_header *h,
			   const uint8_t *pay)
{
	struct dm *d = l->d;
	uint64_t pid, from = 0;
	const struct ctl_proc *cp;
	struct dm_proc *p;
	bool follow = true;

	if (h->type == NET_MSG_ATTACH && h->length != 17) {
		dm_send_error(l, h->type, h->request, FL_EFORMAT, "a short attach");
		return;
	}
	memcpy(&pid, pay, 8);
	if (h->type == NET_MSG_ATTACH) {
		memcpy(&from, pay + 8, 8);
		follow = pay[16] != 0;
	}
	cp = ctl_proc_find(&d->st, pid);
	if (!proc_allowed(l, h, pid, cp))
		return;
	p = proc_find(d, pid);
	if (p == NULL && lost_there(l, h, cp, from))
		return;
	if (p == NULL && cp->machine != 0 && cp->machine != d->me.id) {
		redirect(d, l, h->type, h->request, cp->machine);
		return;
	}
	if (h->type == NET_MSG_KILL) {
		if (cp->state == CTL_P_ENDED || p == NULL || p->ended) {
			dm_send_error(l, h->type, h->request, FL_ENOENT,
				      "process %" PRIu64 " has ended", pid);
			return;
		}
		if (p->vp != NULL)
			vm_proc_kill(p->vp, KILLED_STATUS);
		dm_log(d, "process %" PRIu64 " killed by %s", pid, l->user);
		dm_send(l, NET_MSG_OK, NET_FLAG_REPLY, h->request, NULL, 0);
		return;
	}
	if (p == NULL && cp->state == CTL_P_ENDED)
		p = proc_archived(d, pid, cp->status);
	if (p == NULL) {
		if (cp->state == CTL_P_ENDED && h->type == NET_MSG_WAIT) {
			uint8_t st[12];
			memcpy(st, &pid, 8);
			memcpy(st + 8, &cp->status, 4);
			dm_send(l, NET_MSG_STATUS, NET_FLAG_REPLY, h->request, st,
				sizeof st);
			return;
		}
		dm_send_error(l, h->type, h->request, FL_EAGAIN,
			      "process %" PRIu64 " has not started yet, or its "
			      "output is not on this machine",
			      pid);
		return;
	}
	if (h->type == NET_MSG_ATTACH && follow) {
		/* a run coming back: the input it should send again */
		uint64_t lacks = p->in_open && !p->in_eof ? p->in_seq : UINT64_MAX;
		dm_send(l, NET_MSG_ATTACH, NET_FLAG_REPLY, h->request, &lacks, 8);
	}
	watch_add(p, l, h->request, from, h->type == NET_MSG_ATTACH, follow);
}

static const char *state_name(uint8_t s)
{
	return s == CTL_P_SUBMITTED ? "submitted"
	       : s == CTL_P_RUNNING ? "running"
	       : s == CTL_P_ENDED   ? "ended"
				    : "?";
}

static void human_bytes(uint64_t b, char *out, size_t n)
{
	if (b >= (1ull << 30))
		snprintf(out, n, "%.1fGiB", (double)b / (double)(1ull << 30));
	else if (b >= (1ull << 20))
		snprintf(out, n, "%.1fMiB", (double)b / (double)(1ull << 20));
	else if (b >= 1024)
		snprintf(out, n, "%.1fKiB", (double)b / 1024.0);
	else
		snprintf(out, n, "%" PRIu64 "B", b);
}

/* Unix ms as "2026-12-02 08:10:11 UTC". */
static void utc_text(uint64_t ms, char *out, size_t n)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static void human_age(uint64_t ms, char *out, size_t n)
{
	uint64_t s = ms / 1000;

	if (s < 60)
		snprintf(out, n, "%" PRIu64 "s", s);
	else if (s < 3600)
		snprintf(out, n, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
	else
		snprintf(out, n, "%" PRIu64 "h%02" PRIu64 "m", s / 3600,
			 s / 60 % 60);
}

/* What a process holds now, from us or the heartbeat of its machine. */
static bool proc_load(struct dm *d, const struct ctl_proc *cp,
		      struct dm_pload *out)
{
	if (cp->machine == d->me.id) {
		struct dm_proc *p = proc_find(d, cp->pid);
		struct vm_proc_info info;
		if (p == NULL || p->vp == NULL)
			return false;
		vm_proc_info(p->vp, &info);
		if (p->part != NULL)
			dm_part_add_others(p->part, &info);
		out->threads = info.threads;
		out->memory = info.memory;
		out->cpu_ns = info.cpu_ns;
		out->age_ms = dm_now_ms() - p->started_ms;
		return true;
	}
	struct dm_peer *pe = dm_peer_get(d, cp->machine, false);
	if (pe == NULL || !pe->has_load)
		return false;
	for (uint32_t i = 0; i < pe->load.np; i++)
		if (pe->load.p[i].pid == cp->pid) {
			*out = pe->load.p[i];
			return true;
		}
	return false;
}

static void ps_text(struct dm *d, struct dm_link *l, uint64_t only,
		    struct fl_buf *b)
{
	fl_buf_printf(b, "%-6s %-12s %-9s %-8s %8s %10s %8s %8s %s\n", "PID",
		      "USER", "STATE", "MACHINE", "THREADS", "MEMORY", "CPU", "AGE",
		      "STATUS");
	for (size_t i = 0; i < d->st.nprocs; i++) {
		const struct ctl_proc *cp = &d->st.procs[i];
		struct dm_pload ld;
		char mach[16] = "-", thr[24] = "-", mem[24] = "-", age[24] = "-",
		     st[16] = "-", cpu[24] = "-";
		if (only != 0 && cp->pid != only)
			continue;
		if (!l->admin && strcmp(cp->owner, l->user) != 0)
			continue;
		if (cp->machine != 0)
			snprintf(mach, sizeof mach, "m%" PRIu32, cp->machine);
		if (cp->state == CTL_P_RUNNING && proc_load(d, cp, &ld)) {
			snprintf(thr, sizeof thr, "%" PRIu64, ld.threads);
			human_bytes(ld.memory, mem, sizeof mem);
			human_age(ld.age_ms, age, sizeof age);
			snprintf(cpu, sizeof cpu, "%.2fs", (double)ld.cpu_ns / 1e9);
		}
		if (cp->state == CTL_P_ENDED)
			snprintf(st, sizeof st, "%d", (int)cp->status);
		fl_buf_printf(b, "%-6" PRIu64 " %-12s %-9s %-8s %8s %10s %8s %8s %s\n",
			      cp->pid, cp->owner,
			      cp->lost ? "lost" : state_name(cp->state), mach, thr,
			      mem, cpu, age, st);
	}
}

static const struct dm_fin *fin_find(const struct dm *d, uint64_t pid)
{
	for (const struct dm_fin *f = d->fins; f != NULL; f = f->next)
		if (f->pid == pid)
			return f;
	return NULL;
}

/* "why threads left" for one part: ", " between reasons. */
static void why_text(struct fl_buf *b, uint32_t id, const struct dm_pstats *s,
		     bool *first)
{
	const struct {
		uint64_t n;
		const char *why;
	} w[] = {
		{s->out_stolen, "stolen by idle machines"},
		{s->out_pushed, "sent at spawn to less loaded machines"},
		{s->out_stdio, "to the origin for stdio"},
		{s->out_data, "to the home of their data"},
		{s->out_balance, "taken by less loaded machines"},
	};
	bool any = false;

	for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
		if (w[i].n == 0)
			continue;
		if (!any)
			fl_buf_printf(b, "%sfrom m%" PRIu32 " ",
				      *first ? "" : "; ", id);
		fl_buf_printf(b, "%s%" PRIu64 " %s", any ? ", " : "", w[i].n,
			      w[i].why);
		any = true;
		*first = false;
	}
}

/* ps -v: what each part of the process did (@f once it is over, else
 * its parts now). */
static void ps_parts_text(const struct dm_proc *p, const struct dm_fin *f,
			  struct fl_buf *b)
{
	struct dm_fin now;
	struct dm_pstats all = {0};
	char c[6][24];
	bool over = p == NULL || p->vp == NULL;
	bool first = true;

	if (f == NULL) {
		memset(&now, 0, sizeof now);
		proc_parts(p, &now);
		f = &now;
	}
	if (f->n == 1) {
		fl_buf_printf(b, over ? "\nit ran on m%" PRIu32 " alone: no "
					"thread or page crossed machines\n"
				      : "\nit runs on m%" PRIu32 " alone: no "
					"thread or page crosses machines\n",
			      f->ids[0]);
		return;
	}
	fl_buf_printf(b, "\nits parts, one a machine (* its origin)%s:\n",
		      !over
			      ? "; the others' counts as of their last report, "
				"at most a quarter second old"
			      : "");
	fl_buf_printf(b, "%-8s %7s %8s %8s %8s %10s %7s %8s %7s %10s %9s %9s "
			 "%10s %10s\n",
		      "MACHINE", "THREADS", "CPU", "MOVED IN", "OUT", "STATE OUT",
		      "STEALS", "PAGES IN", "DIFFS", "DIFF BYTES", "MSGS OUT",
		      "MSGS IN", "BYTES OUT", "BYTES IN");
	for (int i = 0; i <= f->n; i++) {
		const struct dm_pstats *x = i < f->n ? &f->s[i] : &all;
		char name[16];
		if (i < f->n) {
			/* (the origin is part 0) */
			snprintf(name, sizeof name, "m%" PRIu32 "%s", f->ids[i],
				 i == 0 ? "*" : "");
#define X(field) all.field += x->field;
			DM_PSTATS(X)
#undef X
		} else {
			snprintf(name, sizeof name, "all");
		}
		snprintf(c[0], sizeof c[0], "%.2fs", (double)x->cpu_ns / 1e9);
		snprintf(c[5], sizeof c[5], over ? "-" : "%" PRIu64, x->threads);
		human_bytes(x->move_bytes, c[1], sizeof c[1]);
		human_bytes(x->diff_bytes, c[2], sizeof c[2]);
		human_bytes(x->bytes_sent, c[3], sizeof c[3]);
		human_bytes(x->bytes_recv, c[4], sizeof c[4]);
		fl_buf_printf(b,
			      "%-8s %7s %8s %8" PRIu64 " %8" PRIu64
			      " %10s %7" PRIu64 " %8" PRIu64 " %7" PRIu64
			      " %10s %9" PRIu64 " %9" PRIu64 " %10s %10s\n",
			      name, c[5], c[0], x->moved_in, x->moved_out,
			      c[1], x->steals, x->pages_fetched, x->diffs_sent,
			      c[2], x->msgs_sent, x->msgs_recv, c[3], c[4]);
	}
	fl_buf_printf(b, "threads moved: ");
	for (int i = 0; i < f->n; i++)
		why_text(b, f->ids[i], &f->s[i], &first);
	fl_buf_printf(b, "%s\n", first ? "none" : "");
	if (all.lazy_pages + all.lazy_fetched > 0) {
		/* local memory that moved lazily (dist.h) */
		const char *sep = "local pages lent with threads: ";
		for (int i = 0; i < f->n; i++)
			if (f->s[i].lazy_pages + f->s[i].lazy_fetched > 0) {
				human_bytes(f->s[i].lazy_bytes, c[1], sizeof c[1]);
				fl_buf_printf(b, "%sm%" PRIu32 " lent %" PRIu64
						 ", fetched %" PRIu64 " (%s)",
					      sep, f->ids[i], f->s[i].lazy_pages,
					      f->s[i].lazy_fetched, c[1]);
				sep = "; ";
			}
		fl_buf_printf(b, "\n");
	}
	for (int i = 0; i < f->n; i++)
		if (f->s[i].data_to != 0)
			fl_buf_printf(b, "m%" PRIu32 ": thread %" PRIu64
					 " moved to m%" PRIu64 ": %" PRIu64
					 " faults on pages homed there\n",
				      f->ids[i], f->s[i].data_tid, f->s[i].data_to,
				      f->s[i].data_faults);
}

/* ps -v PID: the process's line, then its parts. Asked where it does
 * not run (nor ran), the client goes where it does. */
static void ps_verbose(struct dm_link *l, const struct net_header *h,
		       uint64_t pid)
{
	struct dm *d = l->d;
	const struct ctl_proc *cp = ctl_proc_find(&d->st, pid);
	struct dm_proc *p = proc_find(d, pid);
	const struct dm_fin *f = fin_find(d, pid);
	struct fl_buf b;

	if (!proc_allowed(l, h, pid, cp))
		return;
	if (p != NULL && p->vp == NULL)
		p = NULL;
	if (p == NULL && f == NULL && cp->machine != 0 &&
	    cp->machine != d->me.id) {
		redirect(d, l, h->type, h->request, cp->machine);
		return;
	}
	fl_buf_init(&b);
	ps_text(d, l, pid, &b);
	if (p != NULL || f != NULL)
		ps_parts_text(p, f, &b);
	else if (cp->state == CTL_P_ENDED)
		fl_buf_printf(&b, "\nwhat it did is no longer kept (the last "
				  "%d processes' are)\n", DM_FINS_MAX);
	if (!fl_buf_failed(&b))
		dm_send(l, h->type, NET_FLAG_REPLY, h->request, b.data, b.len);
	fl_buf_close(&b);
}

void dm_load_self(struct dm *d, struct dm_load *l)
{
	uint64_t now = dm_now_ms(), cpu = d->cpu_done_ns;

	memset(l, 0, sizeof *l);
	l->uptime_ms = now - d->started_ms;
	for (struct dm_proc *p = d->procs; p != NULL; p = p->next) {
		struct vm_proc_info info, all;
		if (p->vp == NULL || p->ended)
			continue;
		vm_proc_info(p->vp, &info);
		l->procs++;
		l->threads += info.threads;
		l->memory += info.memory;
		cpu += info.cpu_ns;
		/* the process (ps): all its parts */
		all = info;
		if (p->part != NULL)
			dm_part_add_others(p->part, &all);
		if (l->np < 64) {
			l->p[l->np].pid = p->pid;
			l->p[l->np].threads = all.threads;
			l->p[l->np].memory = all.memory;
			l->p[l->np].cpu_ns = all.cpu_ns;
			l->p[l->np].age_ms = dm_now_ms() - p->started_ms;
			l->np++;
		}
	}
	/* the machine (status): parts of processes from elsewhere too */
	dm_parts_load(d, &l->threads, &l->memory, &cpu);
	/* busy cores over the last half second or so */
	if (d->cpu_sample_ms == 0) {
		d->cpu_sample_ms = now;
		d->cpu_sample_ns = cpu;
	} else if (now - d->cpu_sample_ms >= 400) {
		uint64_t dns = cpu >= d->cpu_sample_ns ? cpu - d->cpu_sample_ns : 0;
		d->cpu_milli = (uint32_t)(dns / ((now - d->cpu_sample_ms) * 1000));
		d->cpu_sample_ms = now;
		d->cpu_sample_ns = cpu;
	}
	l->cpu_milli = d->cpu_milli;
}

void dm_status_text(struct dm *d, struct fl_buf *b)
{
	uint32_t leader = dm_leader(d);

	if (leader != 0)
		fl_buf_printf(b, "VM %s, %zu machine%s, leader m%" PRIu32 "\n",
			      d->me.vm, d->st.nmembers,
			      d->st.nmembers == 1 ? "" : "s", leader);
	else
		fl_buf_printf(b, "VM %s, %zu machine%s, no leader (this machine "
				 "sees no majority of the voters)\n",
			      d->me.vm, d->st.nmembers,
			      d->st.nmembers == 1 ? "" : "s");
	fl_buf_printf(b, "%-4s %-22s %-11s %-8s %9s %19s %10s %8s %6s %8s\n",
		      "ID", "ADDRESS", "STATE", "ROLE", "CPU used", "RAM used/provided",
		      "DISK", "THREADS", "PROCS", "UPTIME");
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		struct dm_load ld;
		bool have = false, silent = false;
		char ram[48] = "", rp[24], ru[24], disk[24], up[24] = "-",
		     thr[24] = "-", procs[16] = "-", role[16], state[24],
		     cpu[24];
		if (m->id == d->me.id) {
			dm_load_self(d, &ld);
			have = true;
		} else {
			struct dm_peer *p = dm_peer_get(d, m->id, false);
			uint64_t now = dm_now_ms(), since = d->started_ms;
			if (p != NULL && p->has_load && p->link != NULL) {
				ld = p->load;
				have = true;
			}
			/* Not connected for 3 s (a new member is dialed, and a
			 * restarted machine redials, well within that). */
			if (p != NULL && p->since > since)
				since = p->since;
			silent = !have && (p == NULL || p->link == NULL) &&
				 now - since > 3000;
		}
		human_bytes(m->ram, rp, sizeof rp);
		human_bytes(m->disk, disk, sizeof disk);
		if (have) {
			human_bytes(ld.memory, ru, sizeof ru);
			snprintf(ram, sizeof ram, "%s/%s", ru, rp);
			snprintf(cpu, sizeof cpu, "%.1f/%" PRIu32,
				 ld.cpu_milli / 1000.0, m->cpu);
			snprintf(thr, sizeof thr, "%" PRIu64, ld.threads);
			snprintf(procs, sizeof procs, "%" PRIu32, ld.procs);
			human_age(ld.uptime_ms, up, sizeof up);
		} else {
			snprintf(ram, sizeof ram, "-/%s", rp);
			snprintf(cpu, sizeof cpu, "-/%" PRIu32, m->cpu);
		}
		snprintf(role, sizeof role, "%s%s",
			 m->role == CTL_VOTER ? "voter" : "standby",
			 m->id == leader ? "*" : "");
		snprintf(state, sizeof state, "%s",
			 m->state == CTL_M_ACTIVE
				 ? (silent ? "unreachable" : "active")
			 : m->state == CTL_M_LEAVING ? "leaving"
			 : m->state == CTL_M_LEFT    ? "left"
						     : "lost");
		fl_buf_printf(b,
			      "m%-3" PRIu32 " %-22s %-11s %-8s %9s %19s %10s %8s %6s %8s\n",
			      m->id, m->addr, state, role, cpu, ram, disk, thr,
			      procs, up);
	}
	/* Losses: when, and when each came back. */
	for (size_t i = 0; i < d->st.nmembers; i++) {
		const struct ctl_member *m = &d->st.members[i];
		char lost[32], back[32];
		if (m->lost_at == 0)
			continue;
		utc_text(m->lost_at, lost, sizeof lost);
		if (m->state == CTL_M_LOST || m->back_at < m->lost_at) {
			fl_buf_printf(b, "m%" PRIu32 ": lost at %s\n", m->id, lost);
			continue;
		}
		utc_text(m->back_at, back, sizeof back);
		fl_buf_printf(b, "m%" PRIu32 ": lost at %s, back at %s (incarnation "
			      "%" PRIu32 ")\n",
			      m->id, lost, back, m->incarnation);
	}
}

/* ---- Leaving ---- */

static void left_proposed(struct dm_prop *pr, struct ctl_result r)
{
	struct dm *d = pr->d;

	if (d->leave_link != NULL && link_alive(d, d->leave_link)) {
		if (r.rc == 0)
			dm_send(d->leave_link, NET_MSG_OK, NET_FLAG_REPLY,
				d->leave_req, NULL, 0);
		else
			dm_send_error(d->leave_link, NET_MSG_LEAVE, d->leave_req,
				      r.rc, "the VM did not record the leave (%s)",
				      fl_errname(r.rc));
	}
	if (r.rc == 0)
		d->leave_done_ms = dm_now_ms();
}

static void leaving_proposed(struct dm_prop *pr, struct ctl_result r)
{
	struct dm *d = pr->d;

	if (r.rc != 0) {
		d->leaving = false;
		if (d->leave_link != NULL && link_alive(d, d->leave_link))
			dm_send_error(d->leave_link, NET_MSG_LEAVE, d->leave_req,
				      r.rc, "the VM did not record the leave (%s)",
				      fl_errname(r.rc));
	}
}

static void on_leave(struct dm_link *l, const struct net_header *h)
{
	struct dm *d = l->d;
	const struct ctl_member *m = ctl_member_find(&d->st, d->me.id);
	struct ctl_command c = {.type = CTL_CMD_MEMBER_STATE};

	if (!l->admin) {
		dm_send_error(l, h->type, h->request, FL_EPERM,
			      "only the VM's admin may take a machine out");
		return;
	}
	if (m == NULL || d->leaving) {
		dm_send_error(l, h->type, h->request, FL_EEXIST,
			      "this machine is already leaving");
		return;
	}
	d->leaving = true;
	d->leave_link = l;
	d->leave_req = h->request;
	c.u.mstate.id = m->id;
	c.u.mstate.incarnation = m->incarnation;
	c.u.mstate.state = CTL_M_LEAVING;
	c.u.mstate.role = m->role;
	dm_propose(d, &c, leaving_proposed, NULL, 0);
	dm_log(d, "leaving: waiting for the processes here to end");
}

/* How long a client waits for the end of a process that ended here to
 * be recorded before it hears why not (69). */
#define UNRECORDED_MS 20000

/* @p ended and its end is not in the table yet (no leader answers):
 * ask again each second; a client that waited UNRECORDED_MS for it
 * hears why it gets no status (a cut-off minority), and exits 69. */
static void end_unrecorded(struct dm_proc *p)
{
	uint64_t now = dm_now_ms();

	if (now - p->record_ms >= 1000)
		record_end(p);
	for (struct dm_watch *w = p->watch, *next; w != NULL; w = next) {
		next = w->next;
		if (now - w->since < UNRECORDED_MS || !w->follow)
			continue;
		dm_send_error(w->link, NET_MSG_ERROR, w->req, FL_EPIPE,
			      "process %" PRIu64 " ended on machine m%" PRIu32
			      ", but its end could not be recorded: that "
			      "machine cannot reach a majority of the VM's "
			      "control plane (flock wait %" PRIu64 " tells "
			      "its status once it can)",
			      p->pid, p->d->me.id, p->pid);
		watch_free(p, w);
	}
}

/* A request naming a pid this machine has not applied yet. The client
 * heard the pid from the machine that started the process, once the
 * submission was committed; this machine applies that entry a
 * heartbeat later. Rather than answer "no process", the request waits
 * for the entry here, DM_LATER_MS at most (a pid that never comes, a
 * typing mistake, is answered so then). */
#define DM_LATER_MS 3000
#define DM_LATER_PAY 64 /* the longest payload deferred: attach's 17 */

struct dm_later {
	struct dm_later *next;
	struct dm_link *link;
	uint64_t pid, since;
	struct net_header h;
	uint8_t pay[DM_LATER_PAY];
};

/* The pid a request names, 0 when none (ps of all, or not a pid
 * request). */
static uint64_t named_pid(const struct net_header *h, const uint8_t *p)
{
	uint64_t pid = 0;

	switch (h->type) {
	case NET_MSG_ATTACH:
	case NET_MSG_WAIT:
	case NET_MSG_KILL:
	case NET_MSG_PS:
		if (h->length >= 8)
			memcpy(&pid, p, 8);
		return pid;
	default:
		return 0;
	}
}

static bool defer(struct dm_link *l, const struct net_header *h,
		  const uint8_t *p)
{
	struct dm *d = l->d;
	uint64_t pid = named_pid(h, p);
	struct dm_later *w;

	if (pid == 0 || pid < d->st.next_pid || h->length > DM_LATER_PAY)
		return false;
	w = calloc(1, sizeof *w);
	if (w == NULL)
		return false; /* answered now: "no process" */
	w->link = l;
	w->pid = pid;
	w->since = dm_now_ms();
	w->h = *h;
	memcpy(w->pay, p, h->length);
	w->next = d->later;
	d->later = w;
	return true;
}

static void client_request(struct dm_link *l, const struct net_header *h,
			   const uint8_t *p);

/* On every tick: answer what waited for its pid, or long enough; drop
 * what waited for a client now gone. */
static void later_tick(struct dm *d)
{
	uint64_t now = dm_now_ms();

	for (struct dm_later **q = &d->later; *q != NULL;) {
		struct dm_later *w = *q;
		if (w->pid >= d->st.next_pid && now - w->since < DM_LATER_MS) {
			q = &w->next;
			continue;
		}
		*q = w->next;
		client_request(w->link, &w->h, w->pay);
		free(w);
	}
}

/* @l went (NULL: the machine stops): what it asked is not answered. */
static void later_drop(struct dm *d, struct dm_link *l)
{
	for (struct dm_later **q = &d->later; *q != NULL;) {
		struct dm_later *w = *q;
		if (l != NULL && w->link != l) {
			q = &w->next;
			continue;
		}
		*q = w->next;
		free(w);
	}
}

void dm_procs_tick(struct dm *d)
{
	bool busy = false;

	dm_parts_tick(d);
	later_tick(d);
	/* free what has ended and no one follows */
	for (struct dm_proc **q = &d->procs; *q != NULL;) {
		struct dm_proc *p = *q;
		if (p->ended && !p->recorded)
			end_unrecorded(p);
		/* (a spread process's VM process is freed once its parts
		 * elsewhere are quiet: dm_part_origin_done) */
		if (p->ended && p->freed && p->watch == NULL && p->vp == NULL) {
			*q = p->next;
			close(p->logfd);
			for (int i = 0; i < p->argc; i++)
				free(p->argv[i]);
			free(p->argv);
			free(p);
			continue;
		}
		busy |= !p->ended;
		q = &p->next;
	}
	if (d->leaving && !busy && !d->leave_proposed) {
		const struct ctl_member *m = ctl_member_find(&d->st, d->me.id);
		struct ctl_command c = {.type = CTL_CMD_MEMBER_STATE};
		if (m != NULL && m->state == CTL_M_LEAVING) {
			d->leave_proposed = true;
			c.u.mstate.id = m->id;
			c.u.mstate.incarnation = m->incarnation;
			c.u.mstate.state = CTL_M_LEFT;
			c.u.mstate.role = CTL_STANDBY;
			dm_propose(d, &c, left_proposed, NULL, 0);
		}
	}
	/* Left: once Raft no longer counts us (or a few seconds passed),
	 * stop. */
	if (d->leave_done_ms != 0) {
		bool in_conf = false;
		for (unsigned i = 0; i < d->raft.configuration.n; i++)
			in_conf |= d->raft.configuration.servers[i].id == d->me.id &&
				   d->raft.configuration.servers[i].role == RAFT_VOTER;
		if (!in_conf || dm_now_ms() - d->leave_done_ms > 5000) {
			dm_log(d, "left the VM");
			dm_stop(d, 0);
		}
	}
}

void dm_procs_fenced(struct dm *d)
{
	for (struct dm_proc *p = d->procs; p != NULL; p = p->next) {
		char line[160];
		if (p->ended && !p->recorded) {
			/* ended in the dark: the VM has it lost */
			struct ctl_proc lost = {.pid = p->pid, .lost = 1,
						.status = DM_LOST_STATUS};
			end_recorded(p, &lost);
			continue;
		}
		if (p->vp == NULL || p->ended)
			continue;
		snprintf(line, sizeof line,
			 "flock: process %" PRIu64 " lost: this machine, m%" PRIu32
			 ", was declared lost\n",
			 p->pid, d->me.id);
		vm_proc_kill_line(p->vp, DM_LOST_STATUS, line);
	}
}

void dm_procs_close(struct dm *d)
{
	uint64_t until = dm_now_ms() + 10000;
	bool waiting = true;

	for (struct dm_proc *p = d->procs; p != NULL; p = p->next)
		if (p->vp != NULL && !p->ended)
			vm_proc_kill(p->vp, KILLED_STATUS);
	/* Keep the loop reading their output (a full pipe would hold a
	 * process's last writes, and its end) until each has ended. */
	while (waiting && dm_now_ms() < until) {
		waiting = false;
		for (struct dm_proc *p = d->procs; p != NULL; p = p->next)
			waiting |= p->has_waiter && !p->ended;
		if (waiting)
			uv_run(&d->loop, UV_RUN_ONCE);
	}
	for (struct dm_proc *p = d->procs; p != NULL; p = p->next) {
		if (p->has_waiter) {
			pthread_join(p->waiter, NULL);
			p->has_waiter = false;
		}
		/* a spread one whose other parts never said they were
		 * quiet is freed all the same (dm_parts_close frees its
		 * part) */
		proc_release(p);
	}
	later_drop(d, NULL);
	while (d->fins != NULL) {
		struct dm_fin *f = d->fins;
		d->fins = f->next;
		free(f);
	}
	d->nfins = 0;
	while (d->procs != NULL) {
		struct dm_proc *p = d->procs;
		d->procs = p->next;
		if (p->logfd >= 0)
			close(p->logfd);
		while (p->watch != NULL)
			watch_free(p, p->watch);
		for (int i = 0; i < p->argc; i++)
			free(p->argv[i]);
		free(p->argv);
		free(p);
	}
}

/* ---- Dispatch ---- */

/* @fn on every watch of client @l (it may free the watch). */
static void each_watch(struct dm_link *l,
		       void (*fn)(struct dm_proc *p, struct dm_watch *w))
{
	for (struct dm_proc *p = l->d->procs; p != NULL; p = p->next)
		for (struct dm_watch *w = p->watch, *next; w != NULL; w = next) {
			next = w->next;
			if (w->link == l)
				fn(p, w);
		}
}

void dm_client_gone(struct dm_link *l)
{
	later_drop(l->d, l);
	each_watch(l, watch_free);
	if (l->d->leave_link == l)
		l->d->leave_link = NULL;
}

void dm_client_drain(struct dm_link *l)
{
	each_watch(l, watch_pump);
}

void dm_client_frame(struct dm_link *l, const struct net_header *h,
		     const uint8_t *p)
{
	if (h->flags & NET_FLAG_REPLY) {
		net_conn_close(l->conn, "a client sent a reply");
		return;
	}
	if (!defer(l, h, p))
		client_request(l, h, p);
}

static void client_request(struct dm_link *l, const struct net_header *h,
			   const uint8_t *p)
{
	struct dm *d = l->d;
	struct fl_buf b;

	switch (h->type) {
	case NET_MSG_SUBMIT:
		on_submit(l, h, p);
		return;
	case NET_MSG_INPUT:
		on_input(l, h, p);
		return;
	case NET_MSG_ATTACH:
	case NET_MSG_WAIT:
	case NET_MSG_KILL:
		on_pid_request(l, h, p);
		return;
	case NET_MSG_PS:
	case NET_MSG_MACHINES: {
		uint64_t only = 0;
		if (h->type == NET_MSG_PS && h->length >= 8)
			memcpy(&only, p, 8);
		if (h->type == NET_MSG_PS && h->length == 9 && (p[8] & 1) &&
		    only != 0) {
			ps_verbose(l, h, only);
			return;
		}
		fl_buf_init(&b);
		if (h->type == NET_MSG_PS)
			ps_text(d, l, only, &b);
		else if (h->length == 1 && p[0] == 1)
			addrs_text(d, &b);
		else
			dm_status_text(d, &b);
		if (!fl_buf_failed(&b))
			dm_send(l, h->type, NET_FLAG_REPLY, h->request, b.data,
				b.len);
		fl_buf_close(&b);
		return;
	}
	case NET_MSG_LEAVE:
		on_leave(l, h);
		return;
	default:
		net_conn_close(l->conn, "a message clients do not send");
	}
}
