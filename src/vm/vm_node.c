/* The node: one machine's runtime. It owns the worker OS threads (their
 * loop and run queues are vm_sched.c's), the inbox of outside events and
 * the timers, and hosts any number of processes (vm_proc.c), which only
 * borrow its workers: a process starts, ends and is freed while the node
 * runs on. Nothing here is global: two nodes may live in one OS process,
 * which is how the tests put several machines in one binary.
 *
 * Inbox: vm_node_post() appends an event under n->lock from any thread
 * (a page source's reply, an I/O completion, a client's input) and wakes
 * an idle worker; workers drain it between threads (vm__node_poll) and at
 * a running thread's budget ticks, so an event waits at most one time
 * slice even when every worker is busy. Events run on a worker, in the
 * order posted, and must not block.
 *
 * Timers: a binary min-heap on the due time under n->lock; n->next_due
 * mirrors the earliest so that workers check it without the lock. Idle
 * workers sleep until the earliest due time. A due timer's event runs like
 * an inbox event.
 *
 * Failure modes: a worker that cannot start leaves the node with fewer
 * (vm_node_workers says how many); none at all fails vm_node_new. Nothing
 * here depends on how many workers exist: deadlock detection counts a
 * process's runnable threads and outside requests (vm_proc.c). */
#include "vm/vm_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

uint64_t vm__now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void vm_node_options_init(struct vm_node_options *o)
{
	memset(o, 0, sizeof *o);
}

int vm_node_workers(const struct vm_node *n)
{
	return atomic_load(&n->nworkers);
}

/* Wake one sleeping worker, if any sleeps; under n->lock. */
static void wake_one_locked(struct vm_node *n)
{
	if (atomic_load(&n->nidle) > 0)
		pthread_cond_signal(&n->wake);
}

/* ---- Inbox ---- */

void vm_node_post(struct vm_node *n, struct vm_event *ev)
{
	ev->next = NULL;
	pthread_mutex_lock(&n->lock);
	if (n->inbox_tail != NULL)
		n->inbox_tail->next = ev;
	else
		n->inbox_head = ev;
	n->inbox_tail = ev;
	atomic_fetch_add(&n->ninbox, 1);
	wake_one_locked(n);
	pthread_mutex_unlock(&n->lock);
}

/* ---- Timers ---- */

static bool earlier(const struct vm_timer *a, const struct vm_timer *b)
{
	return a->due < b->due;
}

static void heap_set(struct vm_node *n, size_t i, struct vm_timer *tm)
{
	n->timers[i] = tm;
	tm->idx = i;
}

static void sift_up(struct vm_node *n, size_t i)
{
	struct vm_timer *tm = n->timers[i];

	while (i > 0 && earlier(tm, n->timers[(i - 1) / 2])) {
		heap_set(n, i, n->timers[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(n, i, tm);
}

static void sift_down(struct vm_node *n, size_t i)
{
	struct vm_timer *tm = n->timers[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n->ntimers)
			break;
		if (c + 1 < n->ntimers && earlier(n->timers[c + 1], n->timers[c]))
			c++;
		if (!earlier(n->timers[c], tm))
			break;
		heap_set(n, i, n->timers[c]);
		i = c;
	}
	heap_set(n, i, tm);
}

static void heap_remove(struct vm_node *n, size_t i)
{
	struct vm_timer *last = n->timers[--n->ntimers];

	n->timers[i]->idx = SIZE_MAX;
	if (i < n->ntimers) {
		heap_set(n, i, last);
		sift_up(n, i);
		sift_down(n, last->idx);
	}
}

static void set_next_due(struct vm_node *n)
{
	atomic_store(&n->next_due,
		     n->ntimers ? n->timers[0]->due : UINT64_MAX);
}

void vm_node_timer_start(struct vm_node *n, struct vm_timer *tm,
			 uint64_t delay_ns)
{
	tm->due = vm__now() + delay_ns;
	pthread_mutex_lock(&n->lock);
	if (n->ntimers == n->timers_cap) {
		size_t cap = n->timers_cap ? 2 * n->timers_cap : 16;
		struct vm_timer **t = realloc(n->timers, cap * sizeof *t);
		if (t == NULL) {
			/* No room to wait: fire at once rather than never. */
			pthread_mutex_unlock(&n->lock);
			tm->idx = SIZE_MAX;
			vm_node_post(n, &tm->ev);
			return;
		}
		n->timers = t;
		n->timers_cap = cap;
	}
	n->timers[n->ntimers] = tm;
	tm->idx = n->ntimers++;
	sift_up(n, tm->idx);
	set_next_due(n);
	if (tm->idx == 0)
		wake_one_locked(n); /* a sleeper may need to wake sooner */
	pthread_mutex_unlock(&n->lock);
}

bool vm_node_timer_stop(struct vm_node *n, struct vm_timer *tm)
{
	bool armed;

	pthread_mutex_lock(&n->lock);
	armed = tm->idx < n->ntimers && n->timers[tm->idx] == tm;
	if (armed) {
		heap_remove(n, tm->idx);
		set_next_due(n);
	}
	pthread_mutex_unlock(&n->lock);
	return armed;
}

/* ---- Polling, on the workers ---- */

bool vm__node_poll(struct vm_worker *w)
{
	struct vm_node *n = w->node;
	struct vm_event *ev = NULL, *due = NULL, **tail = &due;
	uint64_t nd = atomic_load(&n->next_due);
	bool ran = false;

	/* a long slice spent its budget: charge its process so far */
	if (w->cur != NULL)
		vm__cpu_charge(w, w->cur->proc);
	if (atomic_load(&n->ninbox) == 0 && (nd == UINT64_MAX || nd > vm__now()))
		return false;
	pthread_mutex_lock(&n->lock);
	if (n->ntimers > 0) {
		uint64_t now = vm__now();
		while (n->ntimers > 0 && n->timers[0]->due <= now) {
			struct vm_timer *tm = n->timers[0];
			heap_remove(n, 0);
			tm->ev.next = NULL;
			*tail = &tm->ev;
			tail = &tm->ev.next;
		}
		set_next_due(n);
	}
	ev = n->inbox_head;
	n->inbox_head = n->inbox_tail = NULL;
	for (struct vm_event *e = ev; e != NULL; e = e->next)
		atomic_fetch_sub(&n->ninbox, 1);
	pthread_mutex_unlock(&n->lock);
	/* Timers first: they were due before anything posted now. */
	*tail = ev;
	while (due != NULL) {
		struct vm_event *e = due;
		due = e->next;
		e->fn(n, e); /* may free e */
		ran = true;
	}
	return ran;
}

/* ---- Life ---- */

int vm_node_new(const struct vm_node_options *o, struct vm_node **out,
		struct fl_err *err)
{
	struct vm_node *n = calloc(1, sizeof *n);
	pthread_condattr_t ca;
	long ncpu;
	int want;

	*out = NULL;
	if (n == NULL)
		return fl_err_set(err, FL_ENOMEM, "node: out of memory");
	n->opt = *o;
	atomic_store(&n->budget.left, o->memory > INT64_MAX ? INT64_MAX
							     : (int64_t)o->memory);
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	want = o->cpus > 0 ? (int)o->cpus : (ncpu > 0 ? (int)ncpu : 1);
	if (want > VM_MAX_CPUS)
		want = VM_MAX_CPUS;
	n->workers = calloc((size_t)want, sizeof *n->workers);
	if (n->workers == NULL) {
		free(n);
		return fl_err_set(err, FL_ENOMEM, "node: out of memory");
	}
	n->workers_cap = want;
	pthread_mutex_init(&n->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->wake, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&n->next_due, UINT64_MAX);
	atomic_init(&n->next_pid, 1);
	for (int i = 0; i < want; i++) {
		struct vm_worker *w = &n->workers[i];
		w->node = n;
		w->id = i;
		pthread_mutex_init(&w->lock, NULL);
		w->nfilled = VM_TLB_TRACK + 1; /* calloc'd keys: clear all */
		vm__tlb_flush(w);
	}
	/* Workers are published one by one: a started worker only looks at
	 * workers[0 .. nworkers). */
	for (int i = 0; i < want; i++) {
		struct vm_worker *w = &n->workers[i];
		bool fail = (uint32_t)(want - i) <= o->debug_fail_workers;
		if (fail)
			break;
		if (i == 0 && o->caller_worker) {
			w->os = pthread_self(); /* vm_node_serve() runs it */
		} else if (pthread_create(&w->os, NULL, vm__worker_main, w) != 0) {
			break;
		}
		atomic_store(&n->nworkers, i + 1);
	}
	if (atomic_load(&n->nworkers) == 0) {
		vm_node_free(n);
		return fl_err_set(err, FL_EIO, "node: no worker thread could "
					       "start");
	}
	*out = n;
	return 0;
}

void vm_node_free(struct vm_node *n)
{
	int started;

	if (n == NULL)
		return;
	pthread_mutex_lock(&n->lock);
	atomic_store(&n->stop, true);
	pthread_cond_broadcast(&n->wake);
	started = atomic_load(&n->nworkers);
	pthread_mutex_unlock(&n->lock);
	for (int i = n->opt.caller_worker ? 1 : 0; i < started; i++)
		pthread_join(n->workers[i].os, NULL);
	for (int i = 0; i < n->workers_cap; i++)
		pthread_mutex_destroy(&n->workers[i].lock);
	free(n->timers);
	pthread_cond_destroy(&n->wake);
	pthread_mutex_destroy(&n->lock);
	free(n->workers);
	free(n);
}
