/* A process on a node: load a verified module, run it on the node's
 * workers until it ends, clean up.
 *
 * vm_proc_start() builds a struct vm_proc (global space with the module's
 * read-only data and globals at their fixed addresses, linked code, the
 * buffered stdout, wait queues, the thread table), creates main and
 * queues it on the node. The process ends exactly once (vm__proc_end):
 * when main returns, when any thread executes exit, on a runtime error in
 * any thread, or on deadlock. Its threads then stop at their next check
 * or are dropped from the run queues; once nbusy is 0 no worker holds any
 * of them, the output is flushed and vm_proc_wait() returns the status.
 * vm_proc_free() frees what is left (parked and finished threads).
 *
 * Deadlock: nbusy counts the threads that can run plus the requests to
 * the outside world in flight. A thread that parks on another thread
 * (join, wait, lock) lowers it; whoever wakes it raises it first. When it
 * reaches 0 before the end, nothing can ever run again: the process ends
 * with a runtime error naming where main waits. This is per process and
 * independent of how many workers the node has or how busy they are.
 *
 * stdio is vm_stdio.c's: workers queue output and take input, a driver
 * does the I/O. A runtime error's line goes into the same queue, after
 * everything written before it.
 *
 * Runs on workers (the end, failures, counts) and on the thread that
 * started the process (start, wait, free). */
#include "vm/vm_gsrc.h"
#include "vm/vm_peer.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

void vm_options_init(struct vm_options *o)
{
	memset(o, 0, sizeof *o);
	o->stack_words = VM_DEFAULT_STACK_WORDS;
	o->max_depth = VM_DEFAULT_MAX_DEPTH;
	o->max_threads = VM_DEFAULT_MAX_THREADS;
	o->fd_in = 0;
	o->fd_out = 1;
	o->fd_err = 2;
	o->prog = "flock";
}

/* ---- Limits ---- */

/* @n bytes as the user wrote them, e.g. "256 MiB", else "N bytes". */
static void fmt_size(char *buf, size_t len, int64_t n)
{
	static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};

	for (int i = 0; i < 4; i++) {
		int64_t u = (int64_t)1 << (10 * (4 - i));
		if (n >= u && n % u == 0) {
			snprintf(buf, len, "%" PRId64 " %s", n / u, units[i]);
			return;
		}
	}
	snprintf(buf, len, "%" PRId64 " bytes", n);
}

int64_t vm__alloc_cost(vm_word n)
{
	if (n > ((vm_word)1 << 46))
		return INT64_MAX;
	return (int64_t)(n / VM_PAGE_SIZE + 1) * VM_COST_PAGE;
}

void vm__oom_msg(struct vm_fault *f, const struct vm_proc *p, const char *what,
		 int64_t need)
{
	char size[32];

	if (atomic_load(&p->budget.left) >= need) {
		const struct vm_node *n = p->node;
		if (p->budget.parent != NULL &&
		    atomic_load(&p->budget.parent->left) < need) {
			/* the machine's memory for all its processes */
			fmt_size(size, sizeof size, (int64_t)n->opt.memory);
			snprintf(f->msg, sizeof f->msg,
				 "out of memory (%s; this machine's memory for "
				 "processes, ram:, is %s)",
				 what, size);
			return;
		}
		/* the host's memory, not ours */
		snprintf(f->msg, sizeof f->msg, "out of memory (%s)", what);
		return;
	}
	fmt_size(size, sizeof size, p->limit);
	snprintf(f->msg, sizeof f->msg,
		 "out of memory (%s; the process's memory limit, --memory, is "
		 "%s)",
		 what, size);
}

/* ---- The end ---- */

/* The process is over and nothing runs or waits for it any more. From
 * the moment @quiet is set its owner may free it: touch only the node. */
static void quiet(struct vm_proc *p)
{
	struct vm_node *n = p->node;

	pthread_mutex_lock(&p->endlock);
	atomic_store(&p->quiet, true);
	pthread_cond_broadcast(&p->endcond);
	pthread_mutex_unlock(&p->endlock);
	/* A vm_node_serve() of it may sleep as an idle worker. (Its stdio
	 * driver is woken by vm_proc_wait, which then waits for it.) */
	pthread_mutex_lock(&n->lock);
	pthread_cond_broadcast(&n->wake);
	pthread_mutex_unlock(&n->lock);
}

static void deadlock(struct vm_proc *p);

/* In nbusy of a process spread over machines: it has ended (added once,
 * by whoever ends it, who holds a share). */
#define BUSY_ENDED ((int64_t)1 << 40)

void vm__proc_busy_inc(struct vm_proc *p)
{
	atomic_fetch_add(&p->nbusy, 1);
}

void vm__proc_busy_dec(struct vm_proc *p)
{
	struct vm_peer *pe = p->peer;

	if (pe != NULL) {
		/* Spread over machines, a deadlock is nothing running on any
		 * of them: the peer finds out. A part falls idle and busy
		 * again all the time (a message may raise its count from 0,
		 * end it and let it be freed), so the thread that takes the
		 * count from 1 to 0 tells the peer just before, while its
		 * share keeps the process alive; the end is a bit in the
		 * count itself (end_with), so whoever takes the count to
		 * exactly that bit is the last and makes it quiet. */
		int64_t v = atomic_load(&p->nbusy);
		for (;;) {
			if (v == 1)
				pe->ops->idle(pe);
			if (atomic_compare_exchange_weak(&p->nbusy, &v, v - 1))
				break;
		}
		if (v - 1 == BUSY_ENDED)
			quiet(p);
		return;
	}
	if (atomic_fetch_sub(&p->nbusy, 1) != 1)
		return;
	if (!atomic_load(&p->ending))
		deadlock(p);
	quiet(p);
}

/* Does this part write the process's stdio (not a part elsewhere)? */
static bool has_stdio(const struct vm_proc *p)
{
	return p->peer == NULL || p->peer->self == p->peer->origin;
}

/* End @p with @status and, unless NULL, runtime error line @line on its
 * stderr, unless it ended already; true when this call ended it. */
static bool end_with(struct vm_proc *p, int status, const char *line)
{
	bool first = false;

	pthread_mutex_lock(&p->endlock);
	if (!atomic_load(&p->ending)) {
		p->status = status;
		atomic_store(&p->ending, true);
		if (line != NULL && has_stdio(p))
			vm__io_errline(p, line);
		first = true;
	}
	pthread_mutex_unlock(&p->endlock);
	if (first) {
		vm__io_ending(p);
		if (p->peer != NULL) {
			p->peer->ops->ended(p->peer, status, line);
			atomic_fetch_add(&p->nbusy, BUSY_ENDED);
		}
	}
	return first;
}

bool vm__proc_end(struct vm_proc *p, int status)
{
	return end_with(p, status, NULL);
}

bool vm__proc_end_line(struct vm_proc *p, int status, const char *line)
{
	return end_with(p, status, line);
}

void vm__proc_fail(struct vm_proc *p, const struct vm_thread *t, uint32_t pc,
		   const char *msg)
{
	const struct vm_module *m = p->m;
	uint32_t off = p->x.cell_off[pc], depth = t->depth;
	int f = vm_module_func_at(m, off);
	const char *file, *inside = NULL;
	uint32_t line = vm_module_line(m, off, &file);
	char where[VM_NAME_MAX + 16] = "";

	/* A source file named <...> is code the compiler supplied (print's
	 * implementation, "<prelude>"): report the error where the program
	 * called into it, naming the function it happened in. */
	while (file[0] == '<' && depth > 0) {
		if (inside == NULL)
			inside = f >= 0 ? m->funcs[f].name : "?";
		depth--;
		/* the return cell follows the call's operand cell */
		off = p->x.cell_off[t->frames[depth].ret - 1];
		f = vm_module_func_at(m, off);
		line = vm_module_line(m, off, &file);
	}
	if (inside != NULL)
		snprintf(where, sizeof where, ", inside %s", inside);

	char text[FL_ERR_MAX + 2 * VM_NAME_MAX + 64];
	if (atomic_load(&p->ending))
		return;
	snprintf(text, sizeof text,
		 "%s:%" PRIu32 ": runtime error: %s (in function %s, "
		 "thread %" PRIu64 "%s)\n",
		 file, line, msg, f >= 0 ? m->funcs[f].name : "?", t->tid,
		 where);
	end_with(p, 70, text);
}

uint64_t vm__proc_live_threads(struct vm_proc *p)
{
	uint64_t n = 0;

	pthread_mutex_lock(&p->tlock);
	for (size_t i = 0; i < p->threads_cap; i++)
		if (p->threads[i] != NULL &&
		    atomic_load(&p->threads[i]->state) == VM_T_RUNNABLE)
			n++;
	pthread_mutex_unlock(&p->tlock);
	return n;
}

void vm__proc_deadlock(struct vm_proc *p, uint64_t n)
{
	struct vm_thread *main_t;
	char msg[96];

	/* Nothing runs: main is parked, its saved pc at the instruction it
	 * waits in. */
	pthread_mutex_lock(&p->tlock);
	main_t = vm__thread_find(p, p->main_tid);
	pthread_mutex_unlock(&p->tlock);
	snprintf(msg, sizeof msg,
		 "deadlock: all %" PRIu64 " thread%s blocked for good", n,
		 n == 1 ? " is" : "s are");
	if (main_t != NULL)
		vm__proc_fail(p, main_t, main_t->pc, msg);
	else
		vm__proc_end(p, 70);
}

/* Every thread is blocked for good (nbusy fell to 0 before the end). */
static void deadlock(struct vm_proc *p)
{
	vm__proc_deadlock(p, vm__proc_live_threads(p));
}

/* ---- Life ---- */

bool vm_proc_kill_line(struct vm_proc *p, int status, const char *line)
{
	bool ended;

	if (p->peer == NULL)
		return vm__proc_end_line(p, status, line);
	/* A share, so that an idle part spread over machines becomes
	 * quiet once ended (vm__proc_busy_dec). */
	vm__proc_busy_inc(p);
	ended = vm__proc_end_line(p, status, line);
	vm__proc_busy_dec(p);
	return ended;
}

bool vm_proc_kill(struct vm_proc *p, int status)
{
	return vm_proc_kill_line(p, status, NULL);
}

void vm_proc_info(struct vm_proc *p, struct vm_proc_info *info)
{
	int64_t left = atomic_load(&p->budget.left);

	pthread_mutex_lock(&p->tlock);
	info->threads = p->nthreads - p->naway; /* those here */
	pthread_mutex_unlock(&p->tlock);
	info->memory = left >= p->limit ? 0 : (uint64_t)(p->limit - left);
	info->ended = atomic_load(&p->ending);
	info->cpu_ns = atomic_load_explicit(&p->cpu_ns, memory_order_relaxed);
}

void vm_proc_free(struct vm_proc *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->endlock);
	while (!atomic_load(&p->quiet))
		pthread_cond_wait(&p->endcond, &p->endlock);
	pthread_mutex_unlock(&p->endlock);
	for (size_t i = 0; i < p->threads_cap; i++)
		vm__thread_free(p->threads[i]);
	free(p->threads);
	vm__unlink(p);
	if (p->gs != NULL)
		p->gs->ops->close(p->gs);
	if (p->peer != NULL)
		p->peer->ops->close(p->peer);
	vm__io_close(p);
	for (int i = 0; i < VM_WAIT_BUCKETS; i++)
		pthread_mutex_destroy(&p->waitq[i].lock);
	pthread_mutex_destroy(&p->tlock);
	pthread_rwlock_destroy(&p->depart);
	pthread_cond_destroy(&p->endcond);
	pthread_mutex_destroy(&p->endlock);
	free(p);
}

/* End @p before it ran anything, with a runtime error at the start of
 * main (its first frame does not fit the limits). */
static void fail_at_start(struct vm_proc *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail_at_start(struct vm_proc *p, const char *fmt, ...)
{
	const struct vm_function *mf =
		&p->m->funcs[vm_module_find_func(p->m, "main")];
	const char *file;
	uint32_t line = vm_module_line(p->m, mf->code_off, &file);
	char msg[200];
	va_list ap;

	char text[sizeof msg + VM_PATH_MAX + 64];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(text, sizeof text,
		 "%s:%" PRIu32 ": runtime error: %s (in function main, thread "
		 "%" PRIu64 ")\n",
		 file, line, msg, p->main_tid);
	vm__io_errline(p, text);
	p->status = 70;
	atomic_store(&p->ending, true);
	atomic_store(&p->quiet, true);
}

/* The module's identity: a hash of its encoding, which threads moving
 * between machines carry (vm_tstate.c). */
static int module_hash(struct vm_proc *p, struct fl_err *err)
{
	struct fl_buf b;
	int rc;

	fl_buf_init(&b);
	rc = vm_module_encode(p->m, &b);
	if (rc == 0)
		crypto_generichash(p->module_hash, sizeof p->module_hash, b.data,
				   b.len, NULL, 0);
	fl_buf_close(&b);
	return rc ? fl_err_set(err, rc, "module hash: out of memory") : 0;
}

int vm__proc_new(struct vm_node *n, const struct vm_module *m,
		 const struct vm_options *o, struct vm_proc **out,
		 struct fl_err *err)
{
	struct vm_proc *p;
	int rc;

	*out = NULL;
	if (o->stack_words == 0 || o->stack_words > VM_MAX_STACK_WORDS)
		return fl_err_set(err, FL_EUSAGE,
				  "options: a data stack of %" PRIu32 " words "
				  "(1 to %u)",
				  o->stack_words, VM_MAX_STACK_WORDS);
	if (o->max_depth == 0 || o->max_depth > VM_MAX_CALL_DEPTH)
		return fl_err_set(err, FL_EUSAGE,
				  "options: a call depth of %" PRIu32 " (1 to %u)",
				  o->max_depth, VM_MAX_CALL_DEPTH);
	if (o->max_threads == 0)
		return fl_err_set(err, FL_EUSAGE, "options: a thread limit of 0");
	p = calloc(1, sizeof *p);
	if (p == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	p->node = n;
	p->m = m;
	p->opt = *o;
	p->pid = atomic_fetch_add(&n->next_pid, 1);
	p->ncpu = vm_node_workers(n);
	if (o->memory == 0) {
		long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
		p->limit = pages > 0 && size > 0 ? (int64_t)pages * size / 2
						 : (int64_t)1 << 32;
	} else {
		p->limit = o->memory > INT64_MAX ? INT64_MAX : (int64_t)o->memory;
	}
	atomic_store(&p->budget.left, p->limit);
	/* A node with a memory offer (a machine's ram:) holds all its
	 * processes under it too. */
	p->budget.parent = n->opt.memory > 0 ? &n->budget : NULL;
	pthread_mutex_init(&p->tlock, NULL);
	pthread_rwlock_init(&p->depart, NULL);
	pthread_mutex_init(&p->endlock, NULL);
	pthread_cond_init(&p->endcond, NULL);
	for (int i = 0; i < VM_WAIT_BUCKETS; i++)
		pthread_mutex_init(&p->waitq[i].lock, NULL);
	/* Thread ids carry the slot of the machine that made them, as
	 * global addresses do (vm.h), so ids made on different machines
	 * never collide. This node is the process's origin: slot 0, ids
	 * 1, 2, 3, ... */
	atomic_init(&p->next_tid, ((vm_word)VM_ORIGIN_SLOT << VM_SLOT_SHIFT) | 1);
	p->main_tid = atomic_load(&p->next_tid);
	if ((rc = vm__io_init(p, err)) != 0)
		goto fail;
	if ((rc = vm__glocal_new(p, &p->gs, err)) != 0) {
		fl_err_wrap(err, "global memory");
		goto fail;
	}
	if ((rc = vm__link(p)) != 0) {
		fl_err_set(err, rc, "link: out of memory");
		goto fail;
	}
	if ((rc = module_hash(p, err)) != 0)
		goto fail;
	*out = p;
	return 0;
fail:
	vm__proc_abandon(p);
	vm_proc_free(p);
	return rc;
}

void vm__proc_abandon(struct vm_proc *p)
{
	atomic_store(&p->ending, true);
	atomic_store(&p->quiet, true);
}

int vm_proc_start(struct vm_node *n, const struct vm_module *m,
		  const struct vm_options *o, struct vm_proc **out,
		  struct fl_err *err)
{
	const struct vm_xfunc *fn;
	struct vm_thread *main_t;
	struct vm_proc *p;
	struct vm_fault f;
	int rc;

	*out = NULL;
	if ((rc = vm__proc_new(n, m, o, &p, err)) != 0)
		return rc;
	fn = &p->x.funcs[vm_module_find_func(m, "main")];
	if (fn->frame_words + 1 > o->stack_words) {
		fail_at_start(p, "stack overflow (data stack limit of %" PRIu32
				 " words)",
			      o->stack_words);
		*out = p;
		return 0;
	}
	main_t = vm__thread_make(p, fn, NULL, 0, NULL, &f);
	if (main_t == NULL) {
		vm__proc_abandon(p);
		vm_proc_free(p);
		return fl_err_set(err, FL_ENOMEM, "main thread: %s", f.msg);
	}
	if (n->opt.caller_worker &&
	    pthread_equal(pthread_self(), n->workers[0].os))
		n->workers[0].now = main_t; /* we are worker 0: run it first */
	else
		vm__sched_push(n, NULL, main_t);
	*out = p;
	return 0;
}

void vm__proc_attach(struct vm_proc *p, struct vm_peer *pe, long ncpu)
{
	p->peer = pe;
	p->ncpu = ncpu;
	atomic_store(&p->next_tid,
		     ((vm_word)vm_peer_slot(pe) << VM_SLOT_SHIFT) | 2);
}

int vm__proc_start_main(struct vm_proc *p, struct fl_err *err)
{
	const struct vm_xfunc *fn =
		&p->x.funcs[vm_module_find_func(p->m, "main")];
	struct vm_thread *main_t;
	struct vm_fault f;

	/* main's id is the origin's first, whatever next_tid says. */
	atomic_store(&p->next_tid, p->main_tid);
	if (fn->frame_words + 1 > p->opt.stack_words) {
		fail_at_start(p, "stack overflow (data stack limit of %" PRIu32
				 " words)",
			      p->opt.stack_words);
		p->peer->ops->ended(p->peer, 70, NULL); /* the other parts */
		return 0;
	}
	main_t = vm__thread_make(p, fn, NULL, 0, NULL, &f);
	if (main_t == NULL)
		return fl_err_set(err, FL_ENOMEM, "main thread: %s", f.msg);
	vm__sched_push(p->node, NULL, main_t);
	return 0;
}

int vm_proc_wait(struct vm_proc *p)
{
	int status;

	pthread_mutex_lock(&p->endlock);
	while (!atomic_load(&p->quiet))
		pthread_cond_wait(&p->endcond, &p->endlock);
	status = p->status;
	pthread_mutex_unlock(&p->endlock);
	if (p->opt.stats != NULL) {
		p->opt.stats->threads = atomic_load(&p->next_tid) - 1;
		p->opt.stats->limit = (uint64_t)p->limit;
	}
	return vm__io_wait(p, status);
}

int vm_run(const struct vm_module *m, const struct vm_options *o)
{
	struct vm_node_options no;
	struct vm_node *n;
	struct vm_proc *p;
	struct fl_err err;
	int status;

	vm_node_options_init(&no);
	no.cpus = o->cpus;
	no.caller_worker = true;
	if (vm_node_new(&no, &n, &err) != 0)
		goto fail;
	if (vm_proc_start(n, m, o, &p, &err) != 0) {
		vm_node_free(n);
		goto fail;
	}
	vm_node_serve(n, p);
	status = vm_proc_wait(p);
	vm_proc_free(p);
	vm_node_free(n);
	return status;
fail:
	dprintf(o->fd_err, "%s: cannot load %s: %s\n", o->prog, m->source,
		err.msg);
	return 70;
}
