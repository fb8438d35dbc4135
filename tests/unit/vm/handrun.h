/* Running VM threads by hand, for the tests and fuzzers that need threads
 * stopped at known points (parked, finished, just resumed) instead of run
 * to the end by the scheduler.
 *
 * hr_open() makes a node whose one worker is the caller's (caller_worker:
 * the node starts no OS thread) and a process on it without threads
 * (vm__proc_new). hr_step() does for one thread what vm_sched.c's worker
 * loop does: take the next thread (the child a spawn just made, then the
 * parent, then the run queue), run it for one slice, and queue, park or
 * drop it by how it stopped. Nothing else runs the threads, so a test
 * sees every state they pass through. The test holds one count of the
 * process's nbusy, so parked threads never look like a deadlock.
 *
 * Threads a decode made are no thread the process knows: hr_adopt()
 * counts one as runnable (live, nbusy), as a machine receiving it would,
 * and queues it; the caller frees it (vm__thread_free), since it is in no
 * thread table. hr_close() abandons the process and frees the process
 * (and the threads in its table) and the node.
 *
 * Allocation failures abort: there is nothing useful a test can do. */
#ifndef FLOCK_TESTS_UNIT_VM_HANDRUN_H
#define FLOCK_TESTS_UNIT_VM_HANDRUN_H

#include "vm/vm_int.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct handrun {
	struct vm_node *node;
	struct vm_proc *p;
	struct vm_worker *w;
	int null_fd;
};

/* Options for hr_open: the defaults, one worker, stdio on /dev/null
 * (opened into @h->null_fd, closed by hr_close). */
static inline void hr_options(struct handrun *h, struct vm_options *o)
{
	memset(h, 0, sizeof *h);
	h->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (h->null_fd < 0) {
		perror("handrun: /dev/null");
		abort();
	}
	vm_options_init(o);
	o->cpus = 1;
	o->fd_in = o->fd_out = o->fd_err = h->null_fd;
}

/* A node and a process of verified module @m on it; 0 or an error. */
static inline int hr_open(struct handrun *h, const struct vm_module *m,
			  const struct vm_options *o, struct fl_err *err)
{
	struct vm_node_options no;
	int rc;

	vm_node_options_init(&no);
	no.cpus = 1;
	no.caller_worker = true;
	if ((rc = vm_node_new(&no, &h->node, err)) != 0)
		return rc;
	if ((rc = vm__proc_new(h->node, m, o, &h->p, err)) != 0) {
		vm_node_free(h->node);
		h->node = NULL;
		return rc;
	}
	h->w = &h->node->workers[0];
	vm__proc_busy_inc(h->p); /* the test's: never a deadlock */
	return 0;
}

/* The next thread the worker would run, taken off its slot or queue. */
static inline struct vm_thread *hr_next(struct handrun *h)
{
	return vm__sched_next(h->w);
}

/* Run @t for one slice and deal with how it stopped, as vm_sched.c's
 * worker does. After VM_STOP_DONE @t may have been freed (a joiner
 * waited for it). */
static inline enum vm_stop hr_slice(struct handrun *h, struct vm_thread *t)
{
	struct vm_worker *w = h->w;
	struct vm_proc *p = t->proc;
	enum vm_stop s;

	if (t->last_worker != w || t->last_run != w->runs)
		vm__tlb_flush(w);
	t->last_worker = w;
	t->last_run = ++w->runs;
	w->cur = t;
	s = vm__interp(w, t);
	switch (s) {
	case VM_STOP_YIELD:
		vm__sched_push(h->node, w, t);
		break;
	case VM_STOP_PARK:
		vm__park_commit(w, t);
		break;
	case VM_STOP_SPAWN:
		if (w->lifo != NULL)
			vm__sched_push(h->node, w, w->lifo);
		w->lifo = t;
		break;
	case VM_STOP_DONE:
	case VM_STOP_END:
		vm__proc_busy_dec(p);
		break;
	case VM_STOP_MOVE: /* only a process with a peer moves */
		fprintf(stderr, "hand-run thread asked to move\n");
		abort();
	}
	w->cur = NULL;
	return s;
}

/* Run the next thread for one slice; false when there is none. *@who
 * (may be NULL) is the thread's id. */
static inline bool hr_step(struct handrun *h, vm_word *who, enum vm_stop *how)
{
	struct vm_thread *t = hr_next(h);

	if (t == NULL)
		return false;
	if (who != NULL)
		*who = t->tid;
	*how = hr_slice(h, t);
	return true;
}

/* Count decoded thread @t as a runnable thread of its process (a parked
 * one runs its instruction again, which parks it anew): hr_slice() may
 * then run it. hr_adopt() also queues it. */
static inline void hr_count(struct vm_thread *t)
{
	atomic_store(&t->pstate, VM_P_RUN);
	vm__proc_busy_inc(t->proc);
}

static inline void hr_adopt(struct handrun *h, struct vm_thread *t)
{
	hr_count(t);
	vm__sched_push(h->node, h->w, t);
}

/* The thread @tid of the process's table, or NULL. */
static inline struct vm_thread *hr_thread(struct handrun *h, vm_word tid)
{
	struct vm_thread *t;

	pthread_mutex_lock(&h->p->tlock);
	t = vm__thread_find(h->p, tid);
	pthread_mutex_unlock(&h->p->tlock);
	return t;
}

static inline void hr_close(struct handrun *h)
{
	if (h->p != NULL) {
		vm__proc_abandon(h->p);
		vm_proc_free(h->p);
	}
	vm_node_free(h->node);
	if (h->null_fd >= 0)
		close(h->null_fd);
	memset(h, 0, sizeof *h);
	h->null_fd = -1;
}

#endif
