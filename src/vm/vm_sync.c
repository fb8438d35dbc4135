/* Blocking synchronisation: wait/wake (futex semantics) and lock/unlock on
 * a mutex word, for global and local memory.
 *
 * Parked threads hang in wait queues, one per hash bucket of the word's
 * address, each under its own mutex. A waiter is identified by the word's
 * address and its space (the process for global memory, the thread itself
 * for local memory, which no other thread can see).
 *
 * wait: under the bucket lock, compare the word with @expected and park if
 * equal, so a wake that follows a store cannot be missed. wake: under the
 * same lock, take up to n waiters of that word.
 *
 * Mutex words: 0 free, 1 locked, 2 locked with waiters. lock takes 0 -> 1
 * with one compare-and-swap when uncontended; held by someone, it spins
 * briefly (unless others already wait), then marks the word 2 and joins
 * the bucket's queue. unlock of a word with waiters hands the mutex
 * straight to the first one (the word never becomes 0 meanwhile), so
 * waiters are served in order and none starves; only a thread that has not
 * queued yet can win a race against another such thread.
 *
 * Queues hold struct vm_waiter entries: a local thread's own (its wake
 * resumes it with a reply: woken, or handed the mutex), or a page
 * source's stand-in for a thread elsewhere. Callers (the interpreter)
 * have saved the thread's registers at the instruction before any call
 * that may park it: once it is in a queue, another worker may resume it
 * at any moment, and the instruction then runs again and takes the reply.
 * Runs on any worker. */
#include "vm/vm_int.h"

#include <stddef.h>

static struct vm_waitq *bucket(struct vm_proc *p, vm_word addr)
{
	return &p->waitq[((addr >> 3) * 0x9e3779b97f4a7c15ull >> 56) %
			 VM_WAIT_BUCKETS];
}

static const void *space_id(const struct vm_thread *t, vm_word addr)
{
	return (addr & VM_GLOBAL_BIT) ? (const void *)t->proc : (const void *)t;
}

static void enqueue(struct vm_waitq *q, struct vm_waiter *wt)
{
	wt->next = NULL;
	if (q->tail != NULL)
		q->tail->next = wt;
	else
		q->head = wt;
	q->tail = wt;
}

/* Remove and return the first waiter of (@addr, @space) of @kind. */
static struct vm_waiter *dequeue(struct vm_waitq *q, vm_word addr,
				 const void *space, uint8_t kind)
{
	struct vm_waiter *prev = NULL;

	for (struct vm_waiter *x = q->head; x != NULL; prev = x, x = x->next) {
		if (x->addr != addr || x->space != space || x->kind != kind)
			continue;
		if (prev != NULL)
			prev->next = x->next;
		else
			q->head = x->next;
		if (q->tail == x)
			q->tail = prev;
		x->next = NULL;
		return x;
	}
	return NULL;
}

static bool has_waiter(const struct vm_waitq *q, vm_word addr,
		       const void *space, uint8_t kind)
{
	for (const struct vm_waiter *x = q->head; x != NULL; x = x->next)
		if (x->addr == addr && x->space == space && x->kind == kind)
			return true;
	return false;
}

/* A local thread's waiter: resume it with the reply. */
static void thread_wake(struct vm_waiter *wt, struct vm_worker *w,
			vm_word value)
{
	struct vm_thread *t =
		(struct vm_thread *)((char *)wt - offsetof(struct vm_thread, waiter));

	vm__resume(w, t, 0, value);
}

static void park(struct vm_waitq *q, struct vm_thread *t, vm_word addr,
		 uint8_t kind)
{
	struct vm_waiter *wt = &t->waiter;

	vm__park_begin(t, kind, addr);
	wt->addr = addr;
	wt->space = space_id(t, addr);
	wt->kind = kind;
	wt->wake = thread_wake;
	enqueue(q, wt);
}

bool vm__wait(struct vm_worker *w, struct vm_thread *t, uint64_t *word,
	      vm_word addr, vm_word expected)
{
	struct vm_waitq *q = bucket(t->proc, addr);
	bool parked = false;

	pthread_mutex_lock(&q->lock);
	if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == expected) {
		park(q, t, addr, VM_PARK_WAIT);
		parked = true;
	}
	pthread_mutex_unlock(&q->lock);
	(void)w;
	return parked;
}

vm_word vm__wake(struct vm_worker *w, struct vm_thread *t, vm_word addr,
		 vm_word n)
{
	struct vm_waitq *q = bucket(t->proc, addr);
	const void *space = space_id(t, addr);
	vm_word woken = 0;
	struct vm_waiter *x;

	pthread_mutex_lock(&q->lock);
	while (woken < n && (x = dequeue(q, addr, space, VM_PARK_WAIT)) != NULL) {
		x->wake(x, w, 0);
		woken++;
	}
	pthread_mutex_unlock(&q->lock);
	return woken;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* Spins before parking: a holder on another worker usually lets go
 * within a few hundred nanoseconds, far less than a park and a wake. */
#define LOCK_SPINS 100

bool vm__lock(struct vm_worker *w, struct vm_thread *t, uint64_t *word,
	      vm_word addr)
{
	struct vm_waitq *q;
	uint64_t v = 0;

	for (int i = 0; i < LOCK_SPINS; i++) {
		v = 0;
		if (__atomic_compare_exchange_n(word, &v, 1, false,
						__ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return false;
		if (v == 2) /* others wait already: queue behind them */
			break;
		cpu_relax();
	}
	q = bucket(t->proc, addr);
	pthread_mutex_lock(&q->lock);
	for (;;) {
		v = __atomic_load_n(word, __ATOMIC_SEQ_CST);
		if (v == 0) {
			if (__atomic_compare_exchange_n(word, &v, 1, false,
							__ATOMIC_SEQ_CST,
							__ATOMIC_SEQ_CST))
				break;
			continue;
		}
		if (v != 2 && !__atomic_compare_exchange_n(word, &v, 2, false,
							   __ATOMIC_SEQ_CST,
							   __ATOMIC_SEQ_CST))
			continue;
		park(q, t, addr, VM_PARK_LOCK);
		pthread_mutex_unlock(&q->lock);
		return true;
	}
	pthread_mutex_unlock(&q->lock);
	(void)w;
	return false;
}

bool vm__unlock(struct vm_worker *w, struct vm_thread *t, uint64_t *word,
		vm_word addr)
{
	struct vm_waitq *q;
	struct vm_waiter *x;
	const void *space;
	uint64_t v = __atomic_load_n(word, __ATOMIC_SEQ_CST);

	if (v == 0)
		return false;
	if (v == 1 && __atomic_compare_exchange_n(word, &v, 0, false,
						  __ATOMIC_SEQ_CST,
						  __ATOMIC_SEQ_CST))
		return true;
	q = bucket(t->proc, addr);
	space = space_id(t, addr);
	pthread_mutex_lock(&q->lock);
	x = dequeue(q, addr, space, VM_PARK_LOCK);
	if (x != NULL) {
		/* Hand over: the word stays locked; the new owner's lock
		 * instruction completes with the status in the reply (0: the
		 * previous owner was not lost). */
		__atomic_store_n(word, has_waiter(q, addr, space, VM_PARK_LOCK) ? 2 : 1,
				 __ATOMIC_SEQ_CST);
		x->wake(x, w, 0);
	} else {
		__atomic_store_n(word, 0, __ATOMIC_SEQ_CST);
	}
	pthread_mutex_unlock(&q->lock);
	return true;
}
