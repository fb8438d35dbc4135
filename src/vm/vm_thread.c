/* VM threads: creation with a copy-on-spawn snapshot of local memory, the
 * process's thread table, stack growth, and freeing.
 *
 * A thread is a small struct plus its data stack and frames, both grown on
 * demand from a few words, so a parked thread with a small stack costs a
 * few hundred bytes beyond its pages. Thread ids start at 1 (main) and are
 * never reused within a process. The table maps ids to live (not yet
 * joined) threads with open addressing; it is what makes join of an
 * unknown or already joined id a clean runtime error.
 *
 * Threads: vm__thread_new() and the table functions may run on any worker;
 * the table is guarded by proc->tlock (callers of find/unlist hold it). */
#include "vm/vm_int.h"

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

/* ---- Threads ---- */

bool vm__thread_grow_stack(struct vm_thread *t, struct vm_fault *f,
			   size_t need)
{
	size_t cap = t->stack_cap ? t->stack_cap : MIN_STACK;
	uint32_t limit = t->proc->opt.stack_words;
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
	/* One more word below stack[0]: the interpreter caches the top of
	 * the stack in a register and may spill it to stack[-1] while a
	 * frame without slots has an empty stack (see vm_interp.c). */
	s = realloc(t->stack ? t->stack - 1 : NULL, (cap + 1) * sizeof *s);
	if (s == NULL) {
		snprintf(f->msg, sizeof f->msg,
			 "out of memory (data stack of %zu words)", cap);
		return false;
	}
	if (t->stack == NULL)
		s[0] = 0;
	t->stack = s + 1;
	t->stack_cap = (uint32_t)cap;
	return true;
}

void vm__thread_free_stack(struct vm_thread *t)
{
	if (t->stack != NULL)
		free(t->stack - 1);
	t->stack = NULL;
	t->stack_cap = 0;
}

struct vm_thread *vm__thread_new(struct vm_proc *p, const struct vm_xfunc *fn,
				 const vm_word *args, uint32_t nargs,
				 const struct vm_thread *parent)
{
	struct vm_thread *t = calloc(1, sizeof *t);
	struct vm_fault f;
	bool listed;

	if (t == NULL)
		return NULL;
	t->proc = p;
	t->tid = atomic_fetch_add(&p->next_tid, 1);
	atomic_init(&t->state, VM_T_RUNNABLE);
	if (parent != NULL)
		vm__space_fork(&t->local, &parent->local);
	else if (vm__space_init(&t->local, 0, p->opt.check, false) != 0)
		goto fail;
	t->local.budget = &p->budget;
	if (!vm__thread_grow_stack(t, &f, fn->frame_words + 1))
		goto fail;
	t->frames = malloc(MIN_FRAMES * sizeof *t->frames);
	if (t->frames == NULL)
		goto fail;
	t->frames_cap = MIN_FRAMES;
	if (nargs > 0)
		memcpy(t->stack, args, nargs * sizeof *args);
	memset(t->stack + nargs, 0, (fn->nslots - nargs) * sizeof *t->stack);
	t->bp = 0;
	t->sp = (int32_t)fn->nslots - 1;
	t->pc = (uint32_t)(fn->entry - p->x.cells);
	pthread_mutex_lock(&p->tlock);
	listed = table_add(p, t);
	pthread_mutex_unlock(&p->tlock);
	if (!listed)
		goto fail;
	atomic_fetch_add(&p->live, 1);
	return t;
fail:
	vm__thread_free(t);
	return NULL;
}

void vm__thread_free(struct vm_thread *t)
{
	if (t == NULL)
		return;
	if (t->local.heap != NULL)
		vm__space_close(&t->local);
	vm__thread_free_stack(t);
	free(t->frames);
	free(t);
}
