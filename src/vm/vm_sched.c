/* The scheduler: a node's worker OS threads running VM threads of any of
 * its processes.
 *
 * Each worker has a FIFO run queue under its own mutex, which idle
 * workers steal from, and two private slots: @now, a child spawn just
 * made (it runs first), and @lifo, the parent that spawned it (it runs
 * when the child stops). Thieves never see the private slots, so a short
 * child ends and its parent goes on on the same worker, with its TLB and
 * caches warm, instead of being stolen at every spawn; a second spawn
 * pushes the older parent to the front of the queue, where it is
 * stealable. A VM thread runs until it spends its instruction budget
 * (backward jumps and calls, vm_interp.c), yields, parks, ends or its
 * process ends. A parked thread is in no queue and costs no CPU.
 *
 * Sleeping without lost wake-ups: a worker going idle raises nidle and
 * then checks nqueued (and the inbox and timers) under n->lock; a pusher
 * raises nqueued and then, if nidle > 0, signals under n->lock. With
 * sequentially consistent atomics one of the two sees the other. Idle
 * workers sleep until the earliest timer.
 *
 * Threads of a process that has ended are dropped when a worker meets
 * them; the process counts them (vm__proc_busy_dec) until none is left.
 *
 * --debug-migrate (opt.migrate) sends every thread that yields, and every
 * thread about to take a reply (just resumed), through its serialised
 * state (vm__thread_roundtrip) and runs the copy.
 *
 * Runs on the worker OS threads vm_node_new() starts. */
#include "vm/vm_int.h"
#include "vm/vm_gsrc.h"
#include "vm/vm_peer.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One more queued thread: wake an idle worker if there is one. */
static void queued(struct vm_node *n)
{
	atomic_fetch_add(&n->nqueued, 1);
	if (atomic_load(&n->nidle) > 0) {
		pthread_mutex_lock(&n->lock);
		pthread_cond_signal(&n->wake);
		pthread_mutex_unlock(&n->lock);
	}
}

void vm__sched_push(struct vm_node *n, struct vm_worker *w,
		    struct vm_thread *t)
{
	if (w == NULL)
		w = &n->workers[0];
	t->next = NULL;
	pthread_mutex_lock(&w->lock);
	if (w->tail != NULL)
		w->tail->next = t;
	else
		w->head = t;
	w->tail = t;
	pthread_mutex_unlock(&w->lock);
	queued(n);
}

static void push_front(struct vm_node *n, struct vm_worker *w,
		       struct vm_thread *t)
{
	pthread_mutex_lock(&w->lock);
	t->next = w->head;
	w->head = t;
	if (w->tail == NULL)
		w->tail = t;
	pthread_mutex_unlock(&w->lock);
	queued(n);
}

static struct vm_thread *pop(struct vm_node *n, struct vm_worker *w)
{
	struct vm_thread *t;

	pthread_mutex_lock(&w->lock);
	t = w->head;
	if (t != NULL) {
		w->head = t->next;
		if (w->head == NULL)
			w->tail = NULL;
	}
	pthread_mutex_unlock(&w->lock);
	if (t != NULL)
		atomic_fetch_sub(&n->nqueued, 1);
	return t;
}

struct vm_thread *vm__sched_next(struct vm_worker *w)
{
	struct vm_node *n = w->node;
	struct vm_thread *t;
	int nw;

	if (w->now != NULL) {
		t = w->now;
		w->now = NULL;
		return t;
	}
	if (w->lifo != NULL) {
		t = w->lifo;
		w->lifo = NULL;
		return t;
	}
	t = pop(n, w);
	nw = atomic_load(&n->nworkers);
	for (int i = 1; t == NULL && i < nw; i++) {
		struct vm_worker *v = &n->workers[(w->id + i) % nw];
		if (atomic_load(&n->nqueued) > 0)
			t = pop(n, v);
	}
	return t;
}

size_t vm__sched_take(struct vm_proc *p, bool fresh, struct vm_thread **out,
		      size_t max)
{
	struct vm_node *n = p->node;
	int nw = atomic_load(&n->nworkers);
	size_t k = 0;

	for (int i = 0; i < nw && k < max; i++) {
		struct vm_worker *v = &n->workers[i];
		struct vm_thread **link, *t;
		pthread_mutex_lock(&v->lock);
		v->tail = NULL;
		for (link = &v->head; (t = *link) != NULL && k < max;) {
			/* One that just arrived runs before it moves again;
			 * one about to take a reply takes it here, where
			 * its page source knows what it asked. */
			if (t->proc == p && t->tid != p->main_tid &&
			    !t->reply.ready &&
			    (fresh ? t->last_run == 0
				   : p->gs->ops->movable == NULL ||
					     p->gs->ops->movable(p->gs, t)) &&
			    !t->arrive) {
				*link = t->next;
				t->next = NULL;
				out[k++] = t;
				continue;
			}
			v->tail = t;
			link = &t->next;
		}
		while (*link != NULL) { /* stopped early: the tail is further */
			v->tail = *link;
			link = &(*link)->next;
		}
		pthread_mutex_unlock(&v->lock);
	}
	atomic_fetch_sub(&n->nqueued, (int64_t)k);
	return k;
}

/* Sleep until there is work, an event or a due timer, or the node stops. */
/* How long a worker with threads of the node parked on another
 * machine's answer spins before it sleeps: waking a sleeping thread
 * costs ten to thirty microseconds, about what an answer takes to come
 * on a local network, so the answer finds the worker awake. It spins
 * yielding the core, so that the threads that bring the answer (the
 * daemon's loop, another daemon's on the same box) run at once where
 * it spins: on two cores with two machines' daemons, a spin that held
 * its core cost a remote atomic more than it saved. */
#define IDLE_SPIN_NS 50000

static bool work_came(struct vm_node *n, struct vm_proc *serve)
{
	return atomic_load(&n->stop) || atomic_load(&n->nqueued) != 0 ||
	       atomic_load(&n->ninbox) != 0 ||
	       (serve != NULL && atomic_load(&serve->quiet));
}

static void idle(struct vm_node *n, struct vm_proc *serve)
{
	if (atomic_load(&n->net_waits) > 0) {
		uint64_t until = vm__now() + IDLE_SPIN_NS;
		for (;;) {
			if (work_came(n, serve))
				return;
			if (vm__now() >= until)
				break;
			sched_yield();
		}
	}
	pthread_mutex_lock(&n->lock);
	atomic_fetch_add(&n->nidle, 1);
	while (!atomic_load(&n->stop) && atomic_load(&n->nqueued) == 0 &&
	       atomic_load(&n->ninbox) == 0 &&
	       (serve == NULL || !atomic_load(&serve->quiet))) {
		uint64_t due = atomic_load(&n->next_due);
		if (due == UINT64_MAX) {
			pthread_cond_wait(&n->wake, &n->lock);
			continue;
		}
		if (due <= vm__now())
			break;
		struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
				      .tv_nsec = (long)(due % 1000000000u)};
		pthread_cond_timedwait(&n->wake, &n->lock, &ts);
	}
	atomic_fetch_sub(&n->nidle, 1);
	pthread_mutex_unlock(&n->lock);
}

static uint64_t coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void vm__cpu_charge(struct vm_worker *w, struct vm_proc *p)
{
	uint64_t now = coarse_ns();

	if (now != w->slice_t) {
		atomic_fetch_add_explicit(&p->cpu_ns, now - w->slice_t,
					  memory_order_relaxed);
		w->slice_t = now;
	}
}

/* The worker loop, until the node stops or, for the caller's worker 0,
 * until @serve is quiet. */
static void work(struct vm_worker *w, struct vm_proc *serve)
{
	struct vm_node *n = w->node;

	w->slice_t = coarse_ns();
	while (!atomic_load(&n->stop) &&
	       (serve == NULL || !atomic_load(&serve->quiet))) {
		struct vm_thread *t;
		struct vm_proc *p;
		if (atomic_load(&n->ninbox) > 0 ||
		    atomic_load(&n->next_due) != UINT64_MAX)
			vm__node_poll(w);
		t = vm__sched_next(w);
		if (t == NULL) {
			idle(n, serve);
			w->slice_t = coarse_ns();
			continue;
		}
		p = t->proc;
		if (atomic_load(&p->ending)) {
			vm__proc_busy_dec(p); /* dropped: the process is over */
			continue;
		}
		/* --debug-migrate: a thread just resumed moves too, with the
		 * reply its instruction is about to take. */
		if (p->opt.migrate && t->reply.ready) {
			struct vm_thread *c = vm__thread_roundtrip(w, t);
			if (c == NULL) { /* it failed the process */
				vm__proc_busy_dec(p);
				continue;
			}
			t = c;
		}
		/* The TLB may hold another thread's pages, or this thread's
		 * from before it ran elsewhere. */
		if (t->last_worker != w || t->last_run != w->runs)
			vm__tlb_flush(w);
		t->last_worker = w;
		t->last_run = ++w->runs;
		w->cur = t;
		enum vm_stop stop = vm__interp(w, t);
		/* Every 16th slice (the clock costs a spawn+join's tenth):
		 * the time since the last charge goes to this slice's
		 * process, which is right on average. p is alive: this
		 * thread still counts in its nbusy. */
		if ((w->runs & 15) == 0)
			vm__cpu_charge(w, p);
		switch (stop) {
		case VM_STOP_YIELD:
			if (p->opt.migrate) {
				struct vm_thread *c = vm__thread_roundtrip(w, t);
				if (c == NULL) { /* it failed the process */
					vm__proc_busy_dec(p);
					break;
				}
				t = c;
			}
			vm__sched_push(n, w, t);
			break;
		case VM_STOP_PARK:
			vm__park_commit(w, t);
			break;
		case VM_STOP_SPAWN:
			/* The child runs next; the parent waits privately,
			 * and an older parent becomes stealable. */
			if (w->lifo != NULL)
				push_front(n, w, w->lifo);
			w->lifo = t;
			break;
		case VM_STOP_DONE:
		case VM_STOP_END:
			vm__proc_busy_dec(p);
			break;
		case VM_STOP_MOVE: /* stdio: to the origin; data: its home */
			p->peer->ops->move(p->peer, w, t, t->move_to);
			break;
		}
		w->cur = NULL;
	}
}

void *vm__worker_main(void *arg)
{
	work(arg, NULL);
	return NULL;
}

void vm_node_serve(struct vm_node *n, struct vm_proc *p)
{
	work(&n->workers[0], p);
}
