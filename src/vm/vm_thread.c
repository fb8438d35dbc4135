/* VM threads: creation with a copy-on-spawn snapshot of local memory, the
 * process's thread table, stack growth, parking, and freeing.
 *
 * A thread is a small struct plus its data stack and frames, both grown on
 * demand from a few words, so a parked thread with a small stack costs a
 * few hundred bytes beyond its pages. Thread ids start at 1 (main) and are
 * never reused within a process. The table maps ids to live (not yet
 * joined) threads with open addressing; it is what makes join of an
 * unknown or already joined id a clean runtime error.
 *
 * Parking: an instruction that must wait (join, wait, lock, a request to
 * the outside world) registers its thread with whoever will wake it,
 * having called vm__park_begin(), and stops; the thread's saved pc stays
 * at that instruction. The waker calls vm__resume() with a reply, which
 * the re-executed instruction takes (vm__reply_take) and completes with,
 * as if it had never stopped. The waker may come before the parking
 * worker has let go of the thread (pstate EARLY, see vm_int.h); then that
 * worker queues it. Replies are values in the thread, never writes into
 * its saved stack, so a parked thread's state is complete as it is.
 *
 * Threads: vm__thread_new() and the table functions may run on any worker;
 * the table is guarded by proc->tlock (callers of find/unlist hold it). */
#include "vm/vm_int.h"
#include "vm/vm_peer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIN_STACK 16
#define MIN_FRAMES 4

/* ---- The table ---- */

static size_t slot_of(vm_word tid, size_t cap)
{
	return (size_t)((tid * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static bool table_grow(struct vm_proc *p)
{
	size_t cap = p->threads_cap ? 2 * p->threads_cap : 64;
	struct vm_thread **t = calloc(cap, sizeof *t);

	if (t == NULL)
		return false;
	for (size_t i = 0; i < p->threads_cap; i++) {
		struct vm_thread *x = p->threads[i];
		if (x == NULL)
			continue;
		size_t j = slot_of(x->tid, cap);
		while (t[j] != NULL)
			j = (j + 1) & (cap - 1);
		t[j] = x;
	}
	free(p->threads);
	p->threads = t;
	p->threads_cap = cap;
	return true;
}

static bool table_add(struct vm_proc *p, struct vm_thread *t)
{
	size_t j;

	if ((p->nthreads + 1) * 4 > p->threads_cap * 3 && !table_grow(p))
		return false;
	j = slot_of(t->tid, p->threads_cap);
	while (p->threads[j] != NULL)
		j = (j + 1) & (p->threads_cap - 1);
	p->threads[j] = t;
	p->nthreads++;
	return true;
}

void vm__threads_each(struct vm_proc *p,
		      void (*fn)(void *ctx, vm_word tid, bool away), void *ctx)
{
	pthread_mutex_lock(&p->tlock);
	for (size_t j = 0; j < p->threads_cap; j++) {
		struct vm_thread *t = p->threads[j];
		int st = t != NULL ? (int)atomic_load(&t->state) : VM_T_DONE;
		if (st != VM_T_DONE)
			fn(ctx, t->tid, st == VM_T_AWAY);
	}
	pthread_mutex_unlock(&p->tlock);
}

struct vm_thread *vm__thread_find(struct vm_proc *p, vm_word tid)
{
	if (p->threads_cap == 0)
		return NULL;
	for (size_t j = slot_of(tid, p->threads_cap); p->threads[j] != NULL;
	     j = (j + 1) & (p->threads_cap - 1))
		if (p->threads[j]->tid == tid)
			return p->threads[j];
	return NULL;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
void vm__thread_unlist(struct vm_proc *p, vm_word tid)
{
	size_t cap = p->threads_cap, i, j;

	if (cap == 0)
		return;
	for (i = slot_of(tid, cap); p->threads[i] != NULL; i = (i + 1) & (cap - 1))
		if (p->threads[i]->tid == tid)
			break;
	if (p->threads[i] == NULL)
		return;
	p->threads[i] = NULL;
	p->nthreads--;
	for (j = (i + 1) & (cap - 1); p->threads[j] != NULL; j = (j + 1) & (cap - 1)) {
		size_t home = slot_of(p->threads[j]->tid, cap);
		/* Move j back to the hole i if its home is not in (i, j]. */
		bool between = i <= j ? (home > i && home <= j)
				      : (home > i || home <= j);
		if (!between) {
			p->threads[i] = p->threads[j];
			p->threads[j] = NULL;
			i = j;
		}
	}
}

void vm__thread_relist(struct vm_proc *p, struct vm_thread *old,
		       struct vm_thread *new_t)
{
	if (p->threads_cap == 0)
		return;
	/* By @new_t's id (the same): @old may be freed memory, only compared. */
	for (size_t j = slot_of(new_t->tid, p->threads_cap); p->threads[j] != NULL;
	     j = (j + 1) & (p->threads_cap - 1))
		if (p->threads[j] == old) {
			p->threads[j] = new_t;
			return;
		}
}

/* ---- Parking ---- */

void vm__park_begin(struct vm_thread *t, enum vm_park kind, vm_word arg)
{
	t->park = (uint8_t)kind;
	t->park_arg = arg;
	t->reply.ready = false;
	atomic_store(&t->pstate, VM_P_PARKING);
}

void vm__park_commit(struct vm_worker *w, struct vm_thread *t)
{
	struct vm_proc *p = t->proc;
	int s = VM_P_PARKING;

	/* Once PARKED, @t is another's: a resume on another worker may run
	 * it, move it or free it (--debug-migrate's copy) before this line
	 * ends, so nothing of @t is read after the exchange. */
	if (atomic_compare_exchange_strong(&t->pstate, &s, VM_P_PARKED)) {
		vm__proc_busy_dec(p);
		return;
	}
	/* Resumed while parking (EARLY): it never stopped being busy. */
	atomic_store(&t->pstate, VM_P_RUN);
	vm__sched_push(w->node, w, t);
}

void vm__resume(struct vm_worker *w, struct vm_thread *t, int32_t status,
		vm_word value)
{
	int s;

	t->reply.kind = t->park;
	t->reply.status = status;
	t->reply.value = value;
	t->reply.ready = true;
	s = atomic_load(&t->pstate);
	for (;;) {
		if (s == VM_P_PARKED) {
			if (!atomic_compare_exchange_weak(&t->pstate, &s,
							  VM_P_RUN))
				continue;
			vm__proc_busy_inc(t->proc);
			/* Not from a worker (an event): back where it ran. */
			if (w == NULL)
				w = t->last_worker;
			vm__sched_push(t->proc->node, w, t);
			return;
		}
		if (s == VM_P_PARKING) {
			if (!atomic_compare_exchange_weak(&t->pstate, &s,
							  VM_P_EARLY))
				continue;
			return;
		}
		return; /* not parked: nothing to wake */
	}
}

bool vm__reply_take(struct vm_thread *t, enum vm_park kind,
		    struct vm_reply *out)
{
	if (!t->reply.ready || t->reply.kind != kind)
		return false;
	*out = t->reply;
	t->reply.ready = false;
	return true;
}

/* ---- Threads ---- */

/* What a thread's parts cost against the memory limit (vm_int.h). */
static int64_t stack_cost(uint32_t cap)
{
	return cap ? (int64_t)(cap + 1) * 8 + VM_MALLOC_OVERHEAD : 0;
}

static int64_t frames_cost(uint32_t cap)
{
	return cap ? (int64_t)(cap * sizeof(struct vm_frame)) + VM_MALLOC_OVERHEAD
		   : 0;
}

#define THREAD_COST ((int64_t)(sizeof(struct vm_thread) + VM_MALLOC_OVERHEAD))

bool vm__thread_grow_stack(struct vm_thread *t, struct vm_fault *f,
			   size_t need)
{
	struct vm_proc *p = t->proc;
	uint64_t cap = t->stack_cap ? t->stack_cap : MIN_STACK;
	uint32_t limit = p->opt.stack_words;
	int64_t more;
	vm_word *s;

	if (need > limit) {
		snprintf(f->msg, sizeof f->msg,
			 "stack overflow (data stack limit of %" PRIu32 " words)",
			 limit);
		return false;
	}
	while (cap < need)
		cap *= 2;
	if (cap > limit)
		cap = limit;
	more = stack_cost((uint32_t)cap) - stack_cost(t->stack_cap);
	if (!vm__charge(&p->budget, more)) {
		char what[64];
		snprintf(what, sizeof what, "data stack of %" PRIu64 " words", cap);
		vm__oom_msg(f, p, what, more);
		return false;
	}
	/* One more word below stack[0]: the interpreter caches the top of
	 * the stack in a register and may spill it to stack[-1] while a
	 * frame without slots has an empty stack (see vm_interp.c). */
	s = realloc(t->stack ? t->stack - 1 : NULL, (cap + 1) * sizeof *s);
	if (s == NULL) {
		vm__credit(&p->budget, more);
		snprintf(f->msg, sizeof f->msg,
			 "out of memory (data stack of %" PRIu64 " words)", cap);
		return false;
	}
	if (t->stack == NULL)
		s[0] = 0;
	t->stack = s + 1;
	t->stack_cap = (uint32_t)cap;
	return true;
}

bool vm__thread_grow_frames(struct vm_thread *t, struct vm_fault *f,
			    uint32_t need)
{
	struct vm_proc *p = t->proc;
	uint32_t limit = p->opt.max_depth;
	uint64_t cap = t->frames_cap ? t->frames_cap : MIN_FRAMES;
	struct vm_frame *fr;
	int64_t more;

	if (need > limit) {
		snprintf(f->msg, sizeof f->msg,
			 "stack overflow (call depth limit of %" PRIu32 ")", limit);
		return false;
	}
	while (cap < need)
		cap *= 2;
	if (cap > limit)
		cap = limit;
	if (cap <= t->frames_cap)
		return true;
	more = frames_cost((uint32_t)cap) - frames_cost(t->frames_cap);
	if (!vm__charge(&p->budget, more)) {
		vm__oom_msg(f, p, "call frames", more);
		return false;
	}
	fr = realloc(t->frames, cap * sizeof *fr);
	if (fr == NULL) {
		vm__credit(&p->budget, more);
		snprintf(f->msg, sizeof f->msg, "out of memory (call frames)");
		return false;
	}
	t->frames = fr;
	t->frames_cap = (uint32_t)cap;
	return true;
}

void vm__thread_free_stack(struct vm_thread *t)
{
	vm__credit(&t->proc->budget, stack_cost(t->stack_cap));
	if (t->stack != NULL)
		free(t->stack - 1);
	t->stack = NULL;
	t->stack_cap = 0;
}

void vm__thread_free_frames(struct vm_thread *t)
{
	vm__credit(&t->proc->budget, frames_cost(t->frames_cap));
	free(t->frames);
	t->frames = NULL;
	t->frames_cap = 0;
}

void vm__thread_free_stacks(struct vm_thread *t)
{
	vm__credit(&t->proc->budget,
		   stack_cost(t->stack_cap) + frames_cost(t->frames_cap));
	if (t->stack != NULL)
		free(t->stack - 1);
	free(t->frames);
	t->stack = NULL;
	t->frames = NULL;
	t->stack_cap = t->frames_cap = 0;
}

struct vm_thread *vm__thread_alloc(struct vm_proc *p, struct vm_fault *f)
{
	struct vm_thread *t;

	if (!vm__charge(&p->budget, THREAD_COST)) {
		vm__oom_msg(f, p, "spawn", THREAD_COST);
		return NULL;
	}
	t = calloc(1, sizeof *t);
	if (t == NULL) {
		vm__credit(&p->budget, THREAD_COST);
		snprintf(f->msg, sizeof f->msg, "out of memory (spawn)");
		return NULL;
	}
	t->proc = p;
	atomic_init(&t->state, VM_T_RUNNABLE);
	atomic_init(&t->pstate, VM_P_RUN);
	return t;
}

/* A new thread's struct, first stack of @need words and frames, charged
 * at once (a spawn is hot: one atomic on the budget, not three). */
static struct vm_thread *thread_parts(struct vm_proc *p, struct vm_fault *f,
				      size_t need)
{
	uint64_t cap = MIN_STACK;
	struct vm_thread *t;
	int64_t cost;

	while (cap < need)
		cap *= 2;
	if (cap > p->opt.stack_words)
		cap = p->opt.stack_words;
	cost = THREAD_COST + stack_cost((uint32_t)cap) + frames_cost(MIN_FRAMES);
	if (!vm__charge(&p->budget, cost)) {
		vm__oom_msg(f, p, "spawn", cost);
		return NULL;
	}
	t = calloc(1, sizeof *t);
	vm_word *stack = malloc((cap + 1) * sizeof *stack);
	struct vm_frame *frames = malloc(MIN_FRAMES * sizeof *frames);
	if (t == NULL || stack == NULL || frames == NULL) {
		free(t);
		free(stack);
		free(frames);
		vm__credit(&p->budget, cost);
		snprintf(f->msg, sizeof f->msg, "out of memory (spawn)");
		return NULL;
	}
	t->proc = p;
	atomic_init(&t->state, VM_T_RUNNABLE);
	atomic_init(&t->pstate, VM_P_RUN);
	stack[0] = 0; /* the guard word below stack[0] */
	t->stack = stack + 1;
	t->stack_cap = (uint32_t)cap;
	t->frames = frames;
	t->frames_cap = MIN_FRAMES;
	return t;
}

struct vm_thread *vm__thread_make(struct vm_proc *p, const struct vm_xfunc *fn,
				  const vm_word *args, uint32_t nargs,
				  const struct vm_thread *parent,
				  struct vm_fault *f)
{
	size_t need = fn->frame_words + 1;
	struct vm_thread *t;
	bool listed;

	if (need > p->opt.stack_words) {
		snprintf(f->msg, sizeof f->msg,
			 "stack overflow (data stack limit of %" PRIu32 " words)",
			 p->opt.stack_words);
		return NULL;
	}
	t = thread_parts(p, f, need);
	if (t == NULL)
		return NULL;
	if (parent != NULL) {
		vm__space_fork(&t->local, &parent->local);
	} else if (vm__space_init(&t->local, 0, p->opt.check, false) != 0) {
		snprintf(f->msg, sizeof f->msg, "out of memory (spawn)");
		goto fail;
	}
	t->local.budget = &p->budget;
	if (nargs > 0)
		memcpy(t->stack, args, nargs * sizeof *args);
	memset(t->stack + nargs, 0, (fn->nslots - nargs) * sizeof *t->stack);
	t->bp = 0;
	t->sp = (int32_t)fn->nslots - 1;
	t->pc = (uint32_t)(fn->entry - p->x.cells);
	pthread_mutex_lock(&p->tlock);
	if (p->nthreads >= p->opt.max_threads) {
		pthread_mutex_unlock(&p->tlock);
		snprintf(f->msg, sizeof f->msg,
			 "too many threads (spawn; the process's thread limit, "
			 "--max-threads, is %" PRIu32 ")",
			 p->opt.max_threads);
		goto fail;
	}
	t->tid = atomic_fetch_add(&p->next_tid, 1);
	listed = table_add(p, t);
	pthread_mutex_unlock(&p->tlock);
	if (!listed) {
		snprintf(f->msg, sizeof f->msg, "out of memory (spawn)");
		goto fail;
	}
	vm__proc_busy_inc(p);
	return t;
fail:
	vm__thread_free(t);
	return NULL;
}

struct vm_thread *vm__thread_new(struct vm_proc *p, const struct vm_xfunc *fn,
				 const vm_word *args, uint32_t nargs,
				 const struct vm_thread *parent)
{
	struct vm_fault f;

	return vm__thread_make(p, fn, args, nargs, parent, &f);
}

void vm__thread_free(struct vm_thread *t)
{
	if (t == NULL)
		return;

	if (t->local.heap != NULL)
		vm__space_close(&t->local);
	vm__thread_free_stack(t);
	vm__thread_free_frames(t);
	vm__credit(&t->proc->budget, THREAD_COST);
	free(t);
}

/* ---- Threads that move between machines (vm_peer.h) ---- */

static bool homed_here(const struct vm_proc *p, vm_word tid)
{
	return vm_peer_home(p->peer, vm_gslot(tid)) == p->peer->self;
}

bool vm__thread_emigrate(struct vm_proc *p, struct vm_thread *t)
{
	struct vm_thread *away = NULL;
	struct vm_fault f;

	if (homed_here(p, t->tid)) {
		/* Its home keeps a stand-in that joins find. */
		away = vm__thread_alloc(p, &f);
		if (away != NULL) {
			away->tid = t->tid;
			atomic_store(&away->state, VM_T_AWAY);
		}
	}
	pthread_mutex_lock(&p->tlock);
	if (away != NULL) {
		away->joined = t->joined;
		away->rjoined = t->rjoined;
		away->joiner = t->joiner;
		vm__thread_relist(p, t, away);
		p->naway++;
	} else {
		vm__thread_unlist(p, t->tid);
	}
	pthread_mutex_unlock(&p->tlock);
	vm__proc_busy_dec(p);
	return away != NULL || !homed_here(p, t->tid);
}

void vm__thread_immigrate(struct vm_proc *p, struct vm_thread **ts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct vm_thread *t = ts[i], *away = NULL;
		bool listed = true;
		pthread_mutex_lock(&p->tlock);
		if (homed_here(p, t->tid))
			away = vm__thread_find(p, t->tid);
		if (away != NULL && atomic_load(&away->state) == VM_T_AWAY) {
			t->joined = away->joined;
			t->rjoined = away->rjoined;
			t->joiner = away->joiner;
			vm__thread_relist(p, away, t);
			p->naway--;
		} else {
			away = NULL;
			t->joined = t->rjoined = false;
			t->joiner = NULL;
			listed = table_add(p, t);
		}
		pthread_mutex_unlock(&p->tlock);
		vm__thread_free(away);
		if (!listed) {
			vm__thread_free(t);
			vm__proc_end_line(p, 70, "flock: out of memory (a thread "
						 "arriving from another machine)\n");
			continue;
		}
		t->arrive = true;
		/* Its faults elsewhere say nothing of its data here. */
		t->fault_votes = t->faults = 0;
		vm__proc_busy_inc(p);
		vm__sched_push(p->node, NULL, t);
	}
}

/* A finished home thread that was joined: answer the join. */
static void answer(struct vm_proc *p, struct vm_thread *c, vm_word r)
{
	struct vm_thread *j = c->joiner;
	vm_word tid = c->tid;
	bool rj = c->rjoined;

	vm__thread_free(c);
	if (j != NULL)
		vm__resume(NULL, j, 0, r);
	else if (rj)
		p->peer->ops->joined(p->peer, tid, r);
}

bool vm__thread_finished(struct vm_proc *p, vm_word tid, vm_word r)
{
	struct vm_thread *c;
	bool joined;

	pthread_mutex_lock(&p->tlock);
	c = vm__thread_find(p, tid);
	if (c == NULL || atomic_load(&c->state) != VM_T_AWAY) {
		pthread_mutex_unlock(&p->tlock);
		return false;
	}
	c->result = r;
	atomic_store(&c->state, VM_T_DONE);
	p->naway--;
	joined = c->joiner != NULL || c->rjoined;
	if (joined)
		vm__thread_unlist(p, tid);
	pthread_mutex_unlock(&p->tlock);
	if (joined)
		answer(p, c, r);
	return true;
}

int vm__thread_join_remote(struct vm_proc *p, vm_word tid, vm_word *r)
{
	struct vm_thread *c;

	pthread_mutex_lock(&p->tlock);
	c = vm__thread_find(p, tid);
	if (c == NULL || c->joined) {
		pthread_mutex_unlock(&p->tlock);
		return FL_ENOENT;
	}
	c->joined = true;
	if (atomic_load(&c->state) == VM_T_DONE) {
		*r = c->result;
		vm__thread_unlist(p, tid);
		pthread_mutex_unlock(&p->tlock);
		vm__thread_free(c);
		return 0;
	}
	c->rjoined = true;
	pthread_mutex_unlock(&p->tlock);
	return 1;
}
