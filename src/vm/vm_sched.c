/* The scheduler: worker OS threads running VM threads from run queues.
 *
 * Each worker has a FIFO run queue under its own mutex; a worker whose
 * queue is empty steals from the others, and when there is nothing
 * anywhere it sleeps on the scheduler's condition variable. A VM thread
 * runs until it spends its instruction budget (counted at backward jumps
 * and calls, vm_interp.c), yields, parks (join, wait, lock: someone else
 * queues it again) or ends. A parked thread is in no queue and costs no
 * CPU.
 *
 * Sleeping without lost wake-ups: a worker going idle raises nidle and
 * then checks nqueued under s->lock; a pusher raises nqueued and then, if
 * nidle > 0, signals under s->lock. With sequentially consistent atomics
 * one of the two sees the other.
 *
 * Deadlock: when every worker is idle and no thread is queued, nothing can
 * ever run again (this VM has no outside events that wake threads), so the
 * process ends with a runtime error naming where main waits.
 *
 * Runs on the worker OS threads; worker 0 is the thread that called
 * vm__sched_run(). */
#include "vm/vm_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vm__sched_init(struct vm_sched *s, struct vm_proc *p, int nworkers)
{
	memset(s, 0, sizeof *s);
	s->proc = p;
	s->workers = calloc((size_t)nworkers, sizeof *s->workers);
	if (s->workers == NULL)
		return FL_ENOMEM;
	s->nworkers = nworkers;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	for (int i = 0; i < nworkers; i++) {
		struct vm_worker *w = &s->workers[i];
		w->sched = s;
		w->id = i;
		pthread_mutex_init(&w->lock, NULL);
		w->nfilled = VM_TLB_TRACK + 1; /* calloc'd keys: clear all */
		vm__tlb_flush(w);
	}
	return 0;
}

void vm__sched_close(struct vm_sched *s)
{
	for (int i = 0; i < s->nworkers; i++)
		pthread_mutex_destroy(&s->workers[i].lock);
	free(s->workers);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->wake);
	memset(s, 0, sizeof *s);
}

/* One more queued thread: wake an idle worker if there is one. */
static void queued(struct vm_sched *s)
{
	atomic_fetch_add(&s->nqueued, 1);
	if (atomic_load(&s->nidle) > 0) {
		pthread_mutex_lock(&s->lock);
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->lock);
	}
}

void vm__sched_push(struct vm_sched *s, struct vm_worker *w,
		    struct vm_thread *t)
{
	if (w == NULL)
		w = &s->workers[0];
	t->next = NULL;
	pthread_mutex_lock(&w->lock);
	if (w->tail != NULL)
		w->tail->next = t;
	else
		w->head = t;
	w->tail = t;
	pthread_mutex_unlock(&w->lock);
	queued(s);
}

void vm__sched_push_front(struct vm_sched *s, struct vm_worker *w,
			  struct vm_thread *t)
{
	pthread_mutex_lock(&w->lock);
	t->next = w->head;
	w->head = t;
	if (w->tail == NULL)
		w->tail = t;
	pthread_mutex_unlock(&w->lock);
	queued(s);
}

static struct vm_thread *pop(struct vm_sched *s, struct vm_worker *w)
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
		atomic_fetch_sub(&s->nqueued, 1);
	return t;
}

static struct vm_thread *next_thread(struct vm_sched *s, struct vm_worker *w)
{
	struct vm_thread *t = pop(s, w);

	for (int i = 1; t == NULL && i < s->nworkers; i++) {
		struct vm_worker *v = &s->workers[(w->id + i) % s->nworkers];
		if (atomic_load(&s->nqueued) > 0)
			t = pop(s, v);
	}
	return t;
}

void vm__sched_stop(struct vm_sched *s)
{
	pthread_mutex_lock(&s->lock);
	atomic_store(&s->stop, true);
	pthread_cond_broadcast(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

/* Sleep until there is work or the process ends. */
static void idle(struct vm_sched *s)
{
	bool deadlock = false;

	pthread_mutex_lock(&s->lock);
	atomic_fetch_add(&s->nidle, 1);
	while (!atomic_load(&s->stop) && atomic_load(&s->nqueued) == 0) {
		if (atomic_load(&s->nidle) == s->nworkers) {
			deadlock = true;
			break;
		}
		pthread_cond_wait(&s->wake, &s->lock);
	}
	atomic_fetch_sub(&s->nidle, 1);
	pthread_mutex_unlock(&s->lock);
	if (deadlock)
		vm__proc_deadlock(s->proc);
}

static void *worker_main(void *arg)
{
	struct vm_worker *w = arg;
	struct vm_sched *s = w->sched;

	while (!atomic_load(&s->stop)) {
		struct vm_thread *t = w->next ? w->next : next_thread(s, w);
		w->next = NULL;
		if (t == NULL) {
			idle(s);
			continue;
		}
		/* The TLB may hold another thread's local pages, or this
		 * thread's from before it ran elsewhere. */
		if (t->last_worker != w || t->last_run != w->runs)
			vm__tlb_flush(w);
		t->last_worker = w;
		t->last_run = ++w->runs;
		w->cur = t;
		switch (vm__interp(w, t)) {
		case VM_STOP_YIELD:
			if (s->proc->opt.migrate)
				t = vm__thread_roundtrip(t);
			vm__sched_push(s, w, t);
			break;
		case VM_STOP_PARK:
		case VM_STOP_DONE:
		case VM_STOP_SPAWN:
			break;
		case VM_STOP_END:
			vm__sched_stop(s);
			break;
		}
		w->cur = NULL;
	}
	return NULL;
}

void vm__sched_run(struct vm_sched *s)
{
	int started = 1;

	for (int i = 1; i < s->nworkers; i++) {
		if (pthread_create(&s->workers[i].os, NULL, worker_main,
				   &s->workers[i]) != 0)
			break; /* run with the workers we got */
		started++;
	}
	worker_main(&s->workers[0]);
	for (int i = 1; i < started; i++)
		pthread_join(s->workers[i].os, NULL);
}
