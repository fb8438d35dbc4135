/* A page source that serves global memory "remotely" (vm_gsrc.h), and the
 * golden thread programs run over it.
 *
 * The process runs on node A; its global memory's home is node B, a
 * second struct vm_node in this OS process (one worker). Every call that
 * needs the home -- a translation the thread does not hold, an atomic, a
 * fence (release and acquire alike), wait/wake/lock/unlock, galloc and
 * free -- parks the thread (vm_gsrc_park) and sends a request over the
 * link A -> B: a timer on B (vm_node_timer_start) after a seeded random
 * delay, so it runs on B's worker. There the home executes it under its
 * own lock against its struct vm_space (the module's read-only data and
 * globals loaded as the local source loads them, then galloc blocks)
 * and answers over the link B -> A: another timer on B, after another
 * delay, whose event calls vm_gsrc_resume() -- which reaches A through
 * A's inbox. The thread's instruction runs again, its call takes the
 * reply (vm_gsrc_reply) and completes. Each link delivers in the order
 * it was given messages (due times strictly increase, B has one worker),
 * as a connection between two machines would.
 *
 * What a thread holds: a translation the home answered is a grant (the
 * page's host address -- same OS process -- readable or writable) the
 * thread keeps until its next acquire (an acquire fence, an atomic,
 * wait/wake/lock/unlock) or its own free; so a page translated for
 * writing stays writable until its next fence (vm_gsrc.h), and an
 * instruction that needs two pages (copy, a load across a page boundary)
 * gets both however often it re-executes. Whether the TLB may cache a
 * translation is a seeded coin, so misses repeat for some pages. Under
 * --check nothing is cached, and a grant comes with the page's live
 * blocks as the home saw them, which the thread checks each access
 * against (an access outside them is a fault at once, never a park) until
 * its next acquire, its own galloc or free.
 *
 * Waiters: a wait or lock that must block stays at the home in a FIFO
 * queue of its own (the request is not answered yet); wake answers up to
 * n of them, unlock hands the mutex to the first (the word stays locked,
 * 2 while more wait), as vm_sync.c does. The compare of wait and the
 * enqueue happen under the home's lock, as does wake's dequeue, so no
 * wake-up is lost. A queued waiter is blocked on another thread, not on
 * the outside world: the home lowers its process's busy count when it
 * queues one and raises it again before answering it, so a deadlock is
 * still found (vm_proc.c) -- that last lowering is the handler's very last
 * act, since it may let the process be freed.
 *
 * Errors are found at the home and reported by the node with the local
 * source's messages (unmapped, null, read-only, outside any live block,
 * unlock of an unlocked word, free of a non-block, out of memory), so the
 * golden programs' stderr patterns still match.
 *
 * Failure modes of the source itself -- a reply nobody asked for, a call
 * that takes another call's reply, a request asked and never answered
 * (found when the process closes it) -- abort the binary with a line
 * saying so.
 *
 * The tests: small programs side by side with the local source (status,
 * output and error lines identical, addresses and all); every golden
 * program in tests/programs/threads (directives read from the file, as
 * test_programs.py does) on nodes of 1 and 2 workers with seeds 1-3, and
 * with --debug-migrate; those of memory/, check/ and io/ once with the
 * TLB caching and once without. Programs that are long chains of round
 * trips run fewer times or with fewer delays (plans[], with the reason).
 * Runs are bounded by a watchdog. FLOCK_REMOTE_ONLY=TEXT runs only the
 * programs whose name holds TEXT, FLOCK_REMOTE_VERBOSE=1 times each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "golden.h"
#include "simnet.h"
#include "unit_run.h"
#include "vm/vm_gsrc.h"

#include <dirent.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONTAINER(p, type, field)                                              \
	((type *)((char *)(p) - offsetof(type, field)))

/* ---- Injected delays and coins ---- */

/* How the links and the TLB behave: a delay is 0 for @zero_ppm parts per
 * million of the messages, else 1 ns .. @max_ns; the TLB may cache a
 * translation in @cache_pct percent of the answers. */
struct profile {
	const char *name;
	unsigned zero_ppm;
	uint64_t max_ns;
	unsigned cache_pct;
};

/* The default: a quarter of the delays 0, the rest up to 200 us. */
static const struct profile jitter = {"jitter", 250000, 200000, 50};
/* For programs that are long chains of round trips: one delay in 10000
 * up to 200 us, the rest 0. */
static const struct profile calm = {"calm", 999900, 200000, 50};
/* Jitter, and the TLB never caches: every access asks the source. */
static const struct profile uncached = {"uncached", 250000, 200000, 0};

#define NSEEDS 3

/* What the runs did, so the tests can tell the source was exercised. */
static struct {
	_Atomic uint64_t requests, replies, zero, delayed;
	_Atomic uint64_t cached, uncached, queued, handed, woken, abandoned;
} stats;

/* ---- The source's state ---- */

enum rop {
	OP_PAGE, OP_FENCE, OP_ATOMIC, OP_WAIT, OP_WAKE, OP_LOCK, OP_UNLOCK,
	OP_ALLOC, OP_FREE,
};

/* Statuses the home answers besides 0: the local source's errors. */
enum {
	E_NULL = 1,
	E_UNMAPPED,
	E_RDONLY,
	E_NOTLIVE,
	E_NOMEM,
	E_NOTLOCKED,
	E_NOTBLOCK,
	E_FREE_NOMEM,
	E_GALLOC_NOMEM,
};

/* A request: PAGE addr n write; FENCE kind; ATOMIC kind addr a b; WAIT
 * addr a (expected); WAKE addr n; LOCK, UNLOCK addr; ALLOC n; FREE addr. */
struct rreq {
	uint8_t op;
	uint8_t kind;
	bool write;
	vm_word addr, n, a, b;
};

/* A live block's bytes within a page, as offsets [lo, hi). */
struct extent {
	uint16_t lo, hi;
};

/* A translation a thread holds: page @page (its address >> 12) at host
 * @bytes; under --check with the page's live blocks as they were then
 * (@live, @nlive), which the thread checks its accesses against. */
struct grant {
	vm_word page;
	uint8_t *bytes;
	bool write;
	struct extent *live;
	uint32_t nlive;
};

struct remote;

/* The source's view of one thread. Touched by the worker running the
 * thread, or by the home while a request of it is in flight. */
struct rthread {
	struct remote *R;
	struct vm_thread *t;
	uint64_t rng;
	struct rreq rq;
	bool inflight; /* asked; the reply not taken yet */
	bool done;     /* a reply taken that its call has not used yet */
	int32_t status;
	vm_word value;
	/* The home's answer (for a page under --check, its live blocks:
	 * the node takes the array). */
	int32_t hstatus;
	vm_word hvalue;
	struct extent *hlive;
	uint32_t hnlive;
	struct vm_timer to_home, to_node;
	struct rthread *qnext; /* in the home's wait queue */
	uint64_t asks, answers;  /* requests made, answers sent */
	struct grant *grants;
	size_t ngrants, grants_cap;
};

struct remote {
	struct vm_gsrc base;
	struct vm_proc *p;
	struct vm_node *home_node;
	const struct profile *prof;
	uint64_t seed;
	bool check;
	pthread_mutex_t lock; /* rts[] */
	struct rthread **rts; /* by tid */
	size_t rts_cap;
	pthread_mutex_t link; /* the links' last due times */
	uint64_t out_due, back_due;
	/* The home, touched only by B's worker, under hlock. */
	pthread_mutex_t hlock;
	struct vm_space space;
	struct rthread *qhead, *qtail;
};

static struct remote *remote_of(struct vm_gsrc *g)
{
	return (struct remote *)g;
}

/* ---- The links ---- */

static uint64_t delay_ns(const struct profile *pr, uint64_t *rng)
{
	uint64_t r = sim_splitmix(rng);

	if (r % 1000000 < pr->zero_ppm) {
		atomic_fetch_add(&stats.zero, 1);
		return 0;
	}
	atomic_fetch_add(&stats.delayed, 1);
	return 1 + (r >> 8) % pr->max_ns;
}

/* Send over a link whose last due time is *@last: @tm's event runs on B
 * after @d ns, and after everything sent on that link before. */
static void link_send(struct remote *R, uint64_t *last, struct vm_timer *tm,
		      void (*fn)(struct vm_node *, struct vm_event *),
		      uint64_t d)
{
	uint64_t now, want;

	tm->ev.fn = fn;
	pthread_mutex_lock(&R->link);
	now = vm__now();
	want = now + d;
	if (want <= *last)
		want = *last + 1;
	vm_node_timer_start(R->home_node, tm, want - now);
	*last = tm->due; /* >= want: the timer read the clock later */
	pthread_mutex_unlock(&R->link);
}

static void home_event(struct vm_node *n, struct vm_event *ev);

/* B -> A: the answer reaches the thread through its node's inbox. */
static void node_event(struct vm_node *n, struct vm_event *ev)
{
	struct rthread *rt = CONTAINER(ev, struct rthread, to_node.ev);
	struct vm_thread *t = rt->t;
	int32_t st = rt->hstatus;
	vm_word v = rt->hvalue;

	(void)n;
	rt->answers++;
	atomic_fetch_add(&stats.replies, 1);
	vm_gsrc_resume(t, st, v); /* last: the process may end and go */
}

/* At the home: answer @rt's request. */
static void reply(struct remote *R, struct rthread *rt, int32_t st, vm_word v)
{
	rt->hstatus = st;
	rt->hvalue = v;
	link_send(R, &R->back_due, &rt->to_node, node_event,
		  delay_ns(R->prof, &rt->rng));
}

/* ---- The home (B's worker) ---- */

/* The live block around [addr, addr+n) within its page, as page offsets
 * [*lo, *hi): vm__heap_live is monotone in both ends. */
static void live_extent(const struct vm_space *s, vm_word addr, vm_word n,
			uint16_t *lo, uint16_t *hi)
{
	vm_word base = addr & ~(vm_word)(VM_PAGE_SIZE - 1);
	vm_word off = addr - base, a = 0, b = off;

	while (a < b) { /* smallest start still inside the block */
		vm_word m = (a + b) / 2;
		if (vm__heap_live(s, base + m, off + n - m))
			b = m;
		else
			a = m + 1;
	}
	*lo = (uint16_t)a;
	a = off + n;
	b = VM_PAGE_SIZE;
	while (a < b) { /* largest end still inside it */
		vm_word m = (a + b + 1) / 2;
		if (vm__heap_live(s, addr, m - off))
			a = m;
		else
			b = m - 1;
	}
	*hi = (uint16_t)a;
}

/* --check: the live blocks of the page at @base, in *@live (the caller
 * frees it) and *@n; false when out of memory. Blocks start 8-aligned. */
static bool page_live(const struct vm_space *s, vm_word base,
		      struct extent **live, uint32_t *n)
{
	uint32_t cap = 0;

	*live = NULL;
	*n = 0;
	for (vm_word off = 0; off < VM_PAGE_SIZE;) {
		struct extent e;
		if (!vm__heap_live(s, base + off, 1)) {
			off += 8;
			continue;
		}
		live_extent(s, base + off, 1, &e.lo, &e.hi);
		if (*n == cap) {
			struct extent *a;
			cap = cap ? 2 * cap : 8;
			a = realloc(*live, cap * sizeof *a);
			if (a == NULL) {
				free(*live);
				*live = NULL;
				return false;
			}
			*live = a;
		}
		(*live)[(*n)++] = e;
		off = ((vm_word)e.hi + 7) & ~(vm_word)7;
	}
	return true;
}

/* Check [addr, addr+n) as the local source's l_page does; 0 and the
 * page's bytes (and under --check its live blocks, when @live), or an
 * E_* status. */
static int32_t home_page(struct remote *R, vm_word addr, vm_word n, bool write,
			 uint8_t **bytes, struct extent **live, uint32_t *nlive)
{
	struct vm_space *s = &R->space;
	vm_word pageno = (addr & VM_OFFSET_MASK) >> VM_PAGE_SHIFT;
	struct vm_page *pg = NULL;

	if (vm_gslot(addr) == 0 && pageno == 0)
		return E_NULL;
	if (vm_gslot(addr) == 0)
		pg = vm__page_get(s, pageno);
	if (pg == NULL)
		return E_UNMAPPED;
	if (write && pg->kind == VM_PAGE_RODATA)
		return E_RDONLY;
	if (s->check && !vm__heap_live(s, addr, n))
		return E_NOTLIVE;
	*bytes = vm__page_bytes(pg);
	if (*bytes == NULL)
		return E_NOMEM;
	if (live != NULL && s->check &&
	    !page_live(s, addr & ~(vm_word)(VM_PAGE_SIZE - 1), live, nlive))
		return E_NOMEM;
	return 0;
}

static int32_t home_word(struct remote *R, vm_word addr, uint64_t **q)
{
	uint8_t *b;
	int32_t st = home_page(R, addr, 8, true, &b, NULL, NULL);

	if (st == 0)
		*q = (uint64_t *)(b + (addr & (VM_PAGE_SIZE - 1)));
	return st;
}

static void enqueue(struct remote *R, struct rthread *rt)
{
	rt->qnext = NULL;
	if (R->qtail != NULL)
		R->qtail->qnext = rt;
	else
		R->qhead = rt;
	R->qtail = rt;
	atomic_fetch_add(&stats.queued, 1);
}

/* The first waiter in @op on @addr, taken out of the queue. */
static struct rthread *dequeue(struct remote *R, uint8_t op, vm_word addr)
{
	struct rthread *prev = NULL;

	for (struct rthread *x = R->qhead; x != NULL; prev = x, x = x->qnext) {
		if (x->rq.op != op || x->rq.addr != addr)
			continue;
		if (prev != NULL)
			prev->qnext = x->qnext;
		else
			R->qhead = x->qnext;
		if (R->qtail == x)
			R->qtail = prev;
		x->qnext = NULL;
		return x;
	}
	return NULL;
}

static bool has_waiter(const struct remote *R, uint8_t op, vm_word addr)
{
	for (const struct rthread *x = R->qhead; x != NULL; x = x->qnext)
		if (x->rq.op == op && x->rq.addr == addr)
			return true;
	return false;
}

/* A queued waiter becomes runnable: counted before its answer can come. */
static void unqueue(struct remote *R, struct rthread *x, vm_word value)
{
	vm__proc_busy_inc(R->p);
	reply(R, x, 0, value);
}

/* Execute @rt's request under hlock; true when it waits in the queue
 * (unanswered), which the caller then uncounts. */
static bool serve(struct remote *R, struct rthread *rt)
{
	const struct rreq *q = &rt->rq;
	uint64_t *w, v = 0;
	uint8_t *bytes;
	vm_word first, n, k;
	int32_t st;
	int rc;

	switch (q->op) {
	case OP_PAGE:
		st = home_page(R, q->addr, q->n, q->write, &bytes, &rt->hlive,
			       &rt->hnlive);
		reply(R, rt, st, st ? 0 : (vm_word)(uintptr_t)bytes);
		return false;
	case OP_FENCE:
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		reply(R, rt, 0, 0);
		return false;
	case OP_ATOMIC:
		if ((st = home_word(R, q->addr, &w)) != 0)
			break;
		switch (q->kind) {
		case VM_GOP_CAS:
			v = q->a;
			__atomic_compare_exchange_n(w, &v, q->b, false,
						    __ATOMIC_SEQ_CST,
						    __ATOMIC_SEQ_CST);
			break;
		case VM_GOP_XADD:
			v = __atomic_fetch_add(w, q->a, __ATOMIC_SEQ_CST);
			break;
		default:
			v = __atomic_exchange_n(w, q->a, __ATOMIC_SEQ_CST);
			break;
		}
		break;
	case OP_WAIT:
		if ((st = home_word(R, q->addr, &w)) != 0)
			break;
		if (__atomic_load_n(w, __ATOMIC_SEQ_CST) == q->a) {
			enqueue(R, rt);
			return true;
		}
		break;
	case OP_WAKE:
		st = 0;
		for (k = 0; k < q->n; k++) {
			struct rthread *x = dequeue(R, OP_WAIT, q->addr);
			if (x == NULL)
				break;
			unqueue(R, x, 0);
			atomic_fetch_add(&stats.woken, 1);
		}
		v = k;
		break;
	case OP_LOCK:
		if ((st = home_word(R, q->addr, &w)) != 0)
			break;
		v = __atomic_load_n(w, __ATOMIC_SEQ_CST);
		if (v != 0) {
			__atomic_store_n(w, 2, __ATOMIC_SEQ_CST);
			enqueue(R, rt);
			return true;
		}
		__atomic_store_n(w, 1, __ATOMIC_SEQ_CST);
		break; /* status 0: the owner was not lost */
	case OP_UNLOCK: {
		struct rthread *x;
		if ((st = home_word(R, q->addr, &w)) != 0)
			break;
		if (__atomic_load_n(w, __ATOMIC_SEQ_CST) == 0) {
			st = E_NOTLOCKED;
			break;
		}
		x = dequeue(R, OP_LOCK, q->addr);
		if (x != NULL) { /* hand over: the word stays locked */
			__atomic_store_n(w, has_waiter(R, OP_LOCK, q->addr) ? 2 : 1,
					 __ATOMIC_SEQ_CST);
			unqueue(R, x, 0);
			atomic_fetch_add(&stats.handed, 1);
		} else {
			__atomic_store_n(w, 0, __ATOMIC_SEQ_CST);
		}
		break;
	}
	case OP_ALLOC:
		v = vm__heap_alloc(&R->space, q->n);
		st = v ? 0 : E_GALLOC_NOMEM;
		break;
	case OP_FREE:
		rc = vm_gslot(q->addr) == 0
			     ? vm__heap_free(&R->space, q->addr, &first, &n)
			     : FL_EFAULT;
		st = rc == 0 ? 0 : rc == FL_ENOMEM ? E_FREE_NOMEM : E_NOTBLOCK;
		break;
	default:
		unit_die("remote: request %d", q->op);
	}
	reply(R, rt, st, v);
	return false;
}

static void home_event(struct vm_node *n, struct vm_event *ev)
{
	struct rthread *rt = CONTAINER(ev, struct rthread, to_home.ev);
	struct remote *R = rt->R;
	struct vm_proc *p = R->p;
	bool queued;

	(void)n;
	pthread_mutex_lock(&R->hlock);
	queued = serve(R, rt);
	pthread_mutex_unlock(&R->hlock);
	if (queued)
		vm__proc_busy_dec(p); /* last: it may let the process go */
}

/* ---- The node's side (A's workers) ---- */

static struct rthread *rthread_of(struct remote *R, struct vm_thread *t)
{
	struct rthread *rt = NULL;

	pthread_mutex_lock(&R->lock);
	if (t->tid >= R->rts_cap) {
		size_t cap = R->rts_cap ? R->rts_cap : 64;
		while (cap <= t->tid)
			cap *= 2;
		struct rthread **a = realloc(R->rts, cap * sizeof *a);
		if (a == NULL)
			goto out;
		memset(a + R->rts_cap, 0, (cap - R->rts_cap) * sizeof *a);
		R->rts = a;
		R->rts_cap = cap;
	}
	rt = R->rts[t->tid];
	if (rt == NULL) {
		rt = calloc(1, sizeof *rt);
		if (rt == NULL)
			goto out;
		uint64_t s = R->seed ^ (t->tid * 0xd1b54a32d192ed03ull);
		rt->R = R;
		rt->t = t;
		rt->rng = sim_splitmix(&s);
		rt->to_home.idx = rt->to_node.idx = SIZE_MAX;
		R->rts[t->tid] = rt;
	}
	/* --debug-migrate made it anew: between requests, or resumed with
	 * our answer in its reply, which the copy carries. Never while the
	 * home still has the question. (The answer was counted before the
	 * reply went through A's inbox, which orders the two.) */
	if (rt->t != t) {
		if (rt->inflight && rt->answers != rt->asks)
			unit_die("remote: thread %" PRIu64 " moved while parked",
				 t->tid);
		rt->t = t;
	}
out:
	pthread_mutex_unlock(&R->lock);
	return rt;
}

static struct grant *grant_find(struct rthread *rt, vm_word page, bool write)
{
	for (size_t i = 0; i < rt->ngrants; i++) {
		struct grant *g = &rt->grants[i];
		if (g->page == page && (g->write || !write))
			return g;
	}
	return NULL;
}

/* --check: is [off, off+n) inside one of @g's live blocks? */
static bool grant_live(const struct grant *g, vm_word off, vm_word n)
{
	if (g->live == NULL)
		return true;
	for (uint32_t i = 0; i < g->nlive; i++)
		if (off >= g->live[i].lo && off + n <= g->live[i].hi)
			return true;
	return false;
}

/* Hold page @page; takes @live. */
static void grant_add(struct rthread *rt, vm_word page, uint8_t *bytes,
		      bool write, struct extent *live, uint32_t nlive)
{
	struct grant *g = NULL;

	for (size_t i = 0; i < rt->ngrants && g == NULL; i++)
		if (rt->grants[i].page == page)
			g = &rt->grants[i];
	if (g == NULL) {
		if (rt->ngrants == rt->grants_cap) {
			size_t cap = rt->grants_cap ? 2 * rt->grants_cap : 8;
			struct grant *a = realloc(rt->grants, cap * sizeof *a);
			if (a == NULL) {
				free(live);
				return; /* not kept: the next access asks again */
			}
			rt->grants = a;
			rt->grants_cap = cap;
		}
		g = &rt->grants[rt->ngrants++];
		*g = (struct grant){.page = page};
	}
	g->bytes = bytes;
	g->write |= write;
	free(g->live);
	g->live = live;
	g->nlive = nlive;
}

/* Let go of everything @rt holds. */
static void grants_drop(struct rthread *rt)
{
	for (size_t i = 0; i < rt->ngrants; i++)
		free(rt->grants[i].live);
	rt->ngrants = 0;
}

/* The reply for @rt, if one came: a page becomes a grant; anything else
 * waits in @rt for the call it answers. */
static void take(struct vm_worker *w, struct rthread *rt)
{
	int32_t st;
	vm_word v;

	if (!vm_gsrc_reply(w, &st, &v))
		return;
	if (!rt->inflight)
		unit_die("remote: thread %" PRIu64 " got a reply to nothing",
			 rt->t->tid);
	rt->inflight = false;
	if (rt->rq.op == OP_PAGE && st == 0) {
		grant_add(rt, rt->rq.addr >> VM_PAGE_SHIFT, (uint8_t *)(uintptr_t)v,
			  rt->rq.write, rt->hlive, rt->hnlive);
		rt->hlive = NULL;
		return;
	}
	rt->done = true;
	rt->status = st;
	rt->value = v;
}

static bool same(const struct rreq *a, const struct rreq *b)
{
	return a->op == b->op && a->kind == b->kind && a->write == b->write &&
	       a->addr == b->addr && a->n == b->n && a->a == b->a &&
	       a->b == b->b;
}

/* Has @q been answered? Then the answer is used up. */
static bool answered(struct rthread *rt, const struct rreq *q)
{
	if (!rt->done)
		return false;
	if (!same(&rt->rq, q))
		unit_die("remote: thread %" PRIu64 ": the reply to request %d "
			 "taken by request %d", rt->t->tid, rt->rq.op, q->op);
	rt->done = false;
	return true;
}

static enum vm_res ask(struct remote *R, struct vm_worker *w,
		       struct rthread *rt, const struct rreq *q)
{
	if (rt->inflight || rt->done)
		unit_die("remote: thread %" PRIu64 " asks twice", rt->t->tid);
	rt->rq = *q;
	rt->inflight = true;
	rt->asks++;
	atomic_fetch_add(&stats.requests, 1);
	if (vm_gsrc_park(w, q->addr) != rt->t)
		unit_die("remote: parked another thread");
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	link_send(R, &R->out_due, &rt->to_home, home_event,
		  delay_ns(R->prof, &rt->rng));
	return VM_PARK;
}

/* An acquire completed: what this thread held may be stale now. */
static void acquired(struct vm_worker *w, struct rthread *rt)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	grants_drop(rt);
	vm_gsrc_tlb_flush(w);
}

/* The local source's message for home status @st. */
static enum vm_res home_fault(struct vm_worker *w, int32_t st, const char *what,
			vm_word addr, vm_word n)
{
	switch (st) {
	case E_NULL:
		vm_gsrc_fault(w, "%s at null address 0x%" PRIx64, what, addr);
		break;
	case E_UNMAPPED:
		vm_gsrc_fault(w, "%s at unmapped address 0x%" PRIx64, what, addr);
		break;
	case E_RDONLY:
		vm_gsrc_fault(w, "%s at read-only address 0x%" PRIx64, what, addr);
		break;
	case E_NOTLIVE:
		vm_gsrc_fault(w, "%s at 0x%" PRIx64 " outside any live block",
			      what, addr);
		break;
	case E_NOMEM:
		vm_gsrc_fault(w, "out of memory");
		break;
	case E_NOTLOCKED:
		vm_gsrc_fault(w, "unlock of 0x%" PRIx64 ", which is not locked",
			      addr);
		break;
	case E_NOTBLOCK:
		vm_gsrc_fault(w, "free of 0x%" PRIx64 ", which is not a live block",
			      addr);
		break;
	case E_FREE_NOMEM:
		vm_gsrc_fault(w, "out of memory (free)");
		break;
	case E_GALLOC_NOMEM: {
		/* worded as the local source words it, limit and all */
		char op[64];
		snprintf(op, sizeof op, "galloc of %" PRIu64 " bytes", n);
		vm__oom_msg(&w->fault, vm_gsrc_thread(w)->proc, op,
			    vm__alloc_cost(n));
		break;
	}
	default:
		unit_die("remote: home status %" PRId32, st);
	}
	return VM_FAULT;
}

/* The running thread's record with its reply taken; NULL (a fault) when
 * out of memory. */
static struct rthread *enter(struct remote *R, struct vm_worker *w)
{
	struct rthread *rt = rthread_of(R, vm_gsrc_thread(w));

	if (rt == NULL) {
		vm_gsrc_fault(w, "out of memory");
		return NULL;
	}
	take(w, rt);
	return rt;
}

static enum vm_res r_page(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, bool write, const char *what,
			  uint8_t **data, bool *cache)
{
	struct remote *R = remote_of(g);
	struct rthread *rt = enter(R, w);
	vm_word off = addr & (VM_PAGE_SIZE - 1);
	struct rreq q = {.op = OP_PAGE, .write = write, .addr = addr, .n = n};
	struct grant *gr;

	if (rt == NULL)
		return VM_FAULT;
	gr = grant_find(rt, addr >> VM_PAGE_SHIFT, write);
	if (gr != NULL && !grant_live(gr, off, n))
		return home_fault(w, E_NOTLIVE, what, addr, n);
	if (gr != NULL) {
		*data = gr->bytes + off;
		*cache = !R->check && sim_splitmix(&rt->rng) % 100 < R->prof->cache_pct;
		atomic_fetch_add(*cache ? &stats.cached : &stats.uncached, 1);
		return VM_OK;
	}
	if (answered(rt, &q))
		return home_fault(w, rt->status, what, addr, n);
	return ask(R, w, rt, &q);
}

static enum vm_res r_fence(struct vm_gsrc *g, struct vm_worker *w,
			   enum vm_fence kind)
{
	struct remote *R = remote_of(g);
	struct rthread *rt = enter(R, w);
	struct rreq q = {.op = OP_FENCE, .kind = (uint8_t)kind};

	if (rt == NULL)
		return VM_FAULT;
	if (answered(rt, &q)) {
		if (kind & VM_FENCE_ACQUIRE)
			acquired(w, rt);
		return VM_OK;
	}
	return ask(R, w, rt, &q);
}

static enum vm_res r_atomic(struct vm_gsrc *g, struct vm_worker *w,
			    enum vm_gop op, vm_word addr, vm_word a, vm_word b,
			    const char *what, vm_word *old)
{
	struct remote *R = remote_of(g);
	struct rthread *rt = enter(R, w);
	struct rreq q = {.op = OP_ATOMIC, .kind = (uint8_t)op, .addr = addr,
			 .a = a, .b = b};

	if (rt == NULL)
		return VM_FAULT;
	if (!answered(rt, &q))
		return ask(R, w, rt, &q);
	if (rt->status)
		return home_fault(w, rt->status, what, addr, 8);
	*old = rt->value;
	acquired(w, rt);
	return VM_OK;
}

/* wait, lock, unlock: answered with a status and maybe a value. */
static enum vm_res word_op(struct vm_gsrc *g, struct vm_worker *w,
			   struct rreq *q, const char *what, vm_word *value)
{
	struct remote *R = remote_of(g);
	struct rthread *rt = enter(R, w);

	if (rt == NULL)
		return VM_FAULT;
	if (!answered(rt, q))
		return ask(R, w, rt, q);
	if (rt->status)
		return home_fault(w, rt->status, what, q->addr, 8);
	if (value != NULL)
		*value = rt->value;
	acquired(w, rt);
	return VM_OK;
}

static enum vm_res r_wait(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word expected)
{
	struct rreq q = {.op = OP_WAIT, .addr = addr, .a = expected};

	return word_op(g, w, &q, "wait", NULL);
}

static enum vm_res r_wake(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, vm_word *woken)
{
	struct rreq q = {.op = OP_WAKE, .addr = addr, .n = n};

	return word_op(g, w, &q, "wake", woken);
}

static enum vm_res r_lock(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word *status)
{
	struct rreq q = {.op = OP_LOCK, .addr = addr};

	return word_op(g, w, &q, "lock", status);
}

static enum vm_res r_unlock(struct vm_gsrc *g, struct vm_worker *w,
			    vm_word addr)
{
	struct rreq q = {.op = OP_UNLOCK, .addr = addr};

	return word_op(g, w, &q, "unlock", NULL);
}

static enum vm_res r_alloc(struct vm_gsrc *g, struct vm_worker *w, vm_word n,
			   vm_word *addr)
{
	struct remote *R = remote_of(g);
	struct rthread *rt = enter(R, w);
	struct rreq q = {.op = OP_ALLOC, .n = n};

	if (rt == NULL)
		return VM_FAULT;
	if (!answered(rt, &q))
		return ask(R, w, rt, &q);
	if (rt->status)
		return home_fault(w, rt->status, "galloc", 0, n);
	*addr = rt->value;
	if (R->check) /* what it holds does not show its new block live */
		grants_drop(rt);
	return VM_OK;
}

static enum vm_res r_free(struct vm_gsrc *g, struct vm_worker *w, vm_word addr)
{
	struct remote *R = remote_of(g);
	struct rthread *rt = enter(R, w);
	struct rreq q = {.op = OP_FREE, .addr = addr};

	if (rt == NULL)
		return VM_FAULT;
	if (!answered(rt, &q))
		return ask(R, w, rt, &q);
	if (rt->status)
		return home_fault(w, rt->status, "free", addr, 0);
	/* Its own free is visible to it at once: what it held may be gone. */
	grants_drop(rt);
	vm_gsrc_tlb_flush(w);
	return VM_OK;
}

static void r_close(struct vm_gsrc *g)
{
	struct remote *R = remote_of(g);
	uint64_t queued = 0;

	/* Quiet: nothing is on the links. Every request was answered once
	 * (the thread may not have taken it, when its process ended first),
	 * but for waiters still in the home's queue, unanswered for good. */
	for (struct rthread *x = R->qhead; x != NULL; x = x->qnext) {
		x->answers++;
		queued++;
	}
	for (size_t i = 0; i < R->rts_cap; i++)
		if (R->rts[i] != NULL && R->rts[i]->answers != R->rts[i]->asks)
			unit_die("remote: thread %zu asked %" PRIu64 " times, "
				 "was answered %" PRIu64 " times", i,
				 R->rts[i]->asks, R->rts[i]->answers);
	atomic_fetch_add(&stats.abandoned, queued);
	for (size_t i = 0; i < R->rts_cap; i++) {
		if (R->rts[i] == NULL)
			continue;
		grants_drop(R->rts[i]);
		free(R->rts[i]->grants);
		free(R->rts[i]->hlive); /* answered, never taken */
		free(R->rts[i]);
	}
	free(R->rts);
	if (R->space.heap != NULL)
		vm__space_close(&R->space);
	pthread_mutex_destroy(&R->hlock);
	pthread_mutex_destroy(&R->link);
	pthread_mutex_destroy(&R->lock);
	free(R);
}

static const struct vm_gsrc_ops remote_ops = {
	.page = r_page,
	.fence = r_fence,
	.atomic = r_atomic,
	.wait = r_wait,
	.wake = r_wake,
	.lock = r_lock,
	.unlock = r_unlock,
	.alloc = r_alloc,
	.free = r_free,
	.close = r_close,
};

/* Serve @p's global memory from node @home with profile @prof. */
static struct vm_gsrc *remote_new(struct vm_proc *p, struct vm_node *home,
				  const struct profile *prof, uint64_t seed)
{
	struct remote *R = calloc(1, sizeof *R);

	if (R == NULL)
		unit_die("out of memory");
	R->base.ops = &remote_ops;
	R->p = p;
	R->home_node = home;
	R->prof = prof;
	R->seed = seed;
	R->check = p->opt.check;
	pthread_mutex_init(&R->lock, NULL);
	pthread_mutex_init(&R->link, NULL);
	pthread_mutex_init(&R->hlock, NULL);
	if (vm__space_init(&R->space, vm_gslot_base(0), p->opt.check, true))
		unit_die("out of memory");
	R->space.budget = &p->budget;
	struct fl_err err;
	if (vm__gspace_load(&R->space, p, &err) != 0) /* as the local one */
		unit_die("remote: %s", err.msg);
	return &R->base;
}

/* ---- Running a program over it ---- */

static int64_t seg_pages(uint32_t len)
{
	return ((int64_t)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
}

/* Run @m on node @a with its global memory at @home: @o's options, @in
 * as stdin. */
static void run_remote(struct vm_node *a, struct vm_node *home,
		       const struct vm_module *m, const struct vm_options *o0,
		       const char *in, size_t in_len, const struct profile *prof,
		       uint64_t seed, struct result *r)
{
	struct vm_options o = *o0;
	struct unit_io io;
	struct vm_proc *p;
	struct vm_thread *t;
	struct fl_err err;

	unit_io_open(&io, in, in_len, &o);
	if (vm__proc_new(a, m, &o, &p, &err) != 0)
		unit_die("vm__proc_new: %s", err.msg);
	/* The local source's pages (the segments) are never credited back,
	 * as a global space's are not (vm_mem.c): give them back here, for
	 * the home charges its own. */
	p->gs->ops->close(p->gs);
	atomic_fetch_add(&p->budget.left, (int64_t)VM_PAGE_SIZE *
			 (seg_pages(m->rodata_len) + seg_pages(m->data_len)));
	p->gs = remote_new(p, home, prof, seed);
	t = vm__thread_new(p, &p->x.funcs[vm_module_find_func(m, "main")], NULL,
			   0, NULL);
	if (t == NULL)
		unit_die("main thread: out of memory");
	vm__sched_push(a, NULL, t);
	r->status = vm_proc_wait(p);
	vm_proc_free(p);
	r->out = unit_fd_text(io.out, &r->out_len);
	r->err = unit_fd_text(io.err, &r->err_len);
	unit_io_close(&io);
}

/* ---- The tests ---- */

/* How each program runs, when not the default (the jitter profile, every
 * seed, every worker count): those that are long chains of round trips
 * other threads wait for get fewer delays, runs or worker counts, or
 * they would take minutes (the times are for one run of a normal build
 * at jitter). A NULL profile skips the program. */
static const struct golden_plan plans[] = {
	{"counter_cas.fla", &calm, 1, 2,
	 "64000 contended cas, a round trip per success: 30 s"},
	{"spinlock_xchg.fla", &calm, 1, 2,
	 "16000 hand-offs of an xchg lock, several round trips each: 18 s"},
	{"mutex_counter.fla", &calm, 1, 0,
	 "8000 hand-offs of a mutex, a round trip each: 9 s"},
	{"spawn_100k.fla", &calm, 1, 2,
	 "300000 fences in main, one after the other: minutes"},
	{"mailbox.fla", &jitter, 1, 2,
	 "1000 items through a one-slot mailbox, a few round trips each: 2 s"},
	{"counter_xadd.fla", &jitter, 1, 0,
	 "64 threads x 1000 xadd, each a round trip: 0.5 s"},
	{"counter_xchg.fla", &jitter, 1, 0,
	 "64 threads x 1000 xchg, each a round trip: 0.5 s"},
	{NULL, NULL, 0, 0, NULL},
};

static struct golden_plan plan_of(const char *file)
{
	for (size_t i = 0; plans[i].file != NULL; i++)
		if (strcmp(plans[i].file, file) == 0)
			return plans[i];
	return (struct golden_plan){file, &jitter, NSEEDS, 0, NULL};
}

static const char *prof_name(const void *prof)
{
	return ((const struct profile *)prof)->name;
}

/* One run over the remote source, its home node @ctx. */
static void run_one(void *ctx, struct vm_node *node, const struct vm_module *m,
		    const struct vm_options *o, const char *in, size_t in_len,
		    const void *prof, uint64_t seed, struct result *r)
{
	run_remote(node, ctx, m, o, in, in_len, prof, seed, r);
}

/* Every program of @dir over the remote source, as @ps says (golden.h). */
static void run_dir(const char *dir, const struct golden_pass *ps)
{
	struct vm_node *home = golden_node_new(1);
	const struct golden_driver dr = {
		.plan = plan_of, .prof_name = prof_name, .run = run_one,
		.ctx = home, .only = "FLOCK_REMOTE_ONLY",
		.verbose = "FLOCK_REMOTE_VERBOSE", .over = "the remote source"};
	int failures = golden_run_dir(dir, ps, &dr);

	vm_node_free(home);
	assert_int_equal(failures, 0);
}

/* The golden thread programs on 1 and 2 workers, once more on 2 with
 * every preempted thread going through its serialised state (as
 * test_programs.py's -migrate runs), and every path of the source
 * taken. */
static void test_golden_threads(void **state)
{
	static const uint32_t one_two[] = {1, 2}, two[] = {2};
	const struct golden_pass all = {one_two, 2, NSEEDS, NULL, false};
	const struct golden_pass migrate = {two, 1, 1, NULL, true};

	(void)state;
	memset(&stats, 0, sizeof stats);
	run_dir("tests/programs/threads", &all);
	run_dir("tests/programs/threads", &migrate);
	if (getenv("FLOCK_REMOTE_ONLY") != NULL)
		return;
	assert_true(atomic_load(&stats.requests) > 0);
	/* One answer per request, but for waiters still queued at the end. */
	assert_int_equal(atomic_load(&stats.requests),
			 atomic_load(&stats.replies) + atomic_load(&stats.abandoned));
	assert_true(atomic_load(&stats.zero) > 0);
	assert_true(atomic_load(&stats.delayed) > 0);
	assert_true(atomic_load(&stats.cached) > 0);
	assert_true(atomic_load(&stats.uncached) > 0);
	assert_true(atomic_load(&stats.queued) > 0);
	assert_true(atomic_load(&stats.handed) > 0);
	assert_true(atomic_load(&stats.woken) > 0);
}

/* The other programs that use global memory -- galloc, copy and fill
 * across pages, --check, read into global blocks -- on 2 workers, once
 * with the TLB caching some translations and once none: an instruction
 * that needs two pages must get both however often it runs again. */
static void test_golden_memory(void **state)
{
	static const char *const dirs[] = {"tests/programs/memory",
					   "tests/programs/check",
					   "tests/programs/io"};
	static const uint32_t two[] = {2};
	const struct golden_pass cached = {two, 1, 1, &jitter, false};
	const struct golden_pass none = {two, 1, 1, &uncached, false};

	(void)state;
	for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
		run_dir(dirs[i], &cached);
		run_dir(dirs[i], &none);
	}
}

/* ---- Remote and local, side by side ---- */

/* Bulk access to global memory across page boundaries: fill, an
 * overlapping copy backwards, a copy between blocks, loads and a store
 * across a page boundary, writes to stdout from two and three pages, a
 * read into two pages. */
static const char bulk_prog[] =
	".text\n"
	"func main 0 3\n"
	"        push 10000\n"
	"        galloc\n"
	"        set 0\n"
	"        push 10000\n"
	"        galloc\n"
	"        set 1\n"
	"        get 0\n"
	"        push 49\n"
	"        push 10000\n"
	"        fill\n"
	"        get 0\n"
	"        push 4000\n"
	"        add\n"
	"        push 50\n"
	"        push 200\n"
	"        fill\n"
	"        get 0\n"
	"        push 1\n"
	"        add\n"
	"        get 0\n"
	"        push 9999\n"
	"        copy\n"
	"        get 1\n"
	"        get 0\n"
	"        push 3990\n"
	"        add\n"
	"        push 6000\n"
	"        copy\n"
	"        get 1\n"
	"        push 4093\n"
	"        add\n"
	"        ld64\n"
	"        printi\n"
	"        get 1\n"
	"        push 4094\n"
	"        add\n"
	"        push 5000000000\n"
	"        st64\n"
	"        get 1\n"
	"        push 4092\n"
	"        add\n"
	"        ld64\n"
	"        printi\n"
	"        push 1\n"
	"        get 1\n"
	"        push 3950\n"
	"        add\n"
	"        push 300\n"
	"        write\n"
	"        drop\n"
	"        push 1\n"
	"        get 0\n"
	"        push 9000\n"
	"        write\n"
	"        drop\n"
	"        push 0\n"
	"        get 0\n"
	"        push 4090\n"
	"        add\n"
	"        push 100\n"
	"        read\n"
	"        set 2\n"
	"        push 1\n"
	"        get 0\n"
	"        push 4090\n"
	"        add\n"
	"        get 2\n"
	"        write\n"
	"        drop\n"
	"        push 0\n"
	"        ret\n"
	"end\n";

/* galloc, free and galloc again at the same address; then a double free. */
static const char free_prog[] =
	".text\n"
	"func main 0 2\n"
	"        push 100\n"
	"        galloc\n"
	"        set 0\n"
	"        get 0\n"
	"        free\n"
	"        push 100\n"
	"        galloc\n"
	"        set 1\n"
	"        get 0\n"
	"        get 1\n"
	"        eq\n"
	"        printi\n"
	"        get 1\n"
	"        free\n"
	"        get 1\n"
	"        free\n"
	"        push 0\n"
	"        ret\n"
	"end\n";

/* --check: a read of more than a 16-byte block holds. */
static const char check_read_prog[] =
	".text\n"
	"func main 0 1\n"
	"        push 16\n"
	"        galloc\n"
	"        set 0\n"
	"        push 0\n"
	"        get 0\n"
	"        push 64\n"
	"        read\n"
	"        ret\n"
	"end\n";

/* One faulting access each, on global memory: the remote source must
 * say what the local one says (the address for slot 5, which no machine
 * serves here, is spliced in as %1$s). */
static const char *const fault_snippets[] = {
	"push ro\n push 0\n push 1\n cas\n",
	"push ro\n push 7\n st64\n push 0\n",
	"push ro\n lock\n",
	"push ro\n push 0\n wait\n push 0\n",
	"push %1$s\n push 0\n wait\n push 0\n",
	"push %1$s\n push 3\n wake\n",
	"push %1$s\n ld64\n",
	"push %1$s\n free\n push 0\n",
	"push %1$s\n push 1\n xadd\n",
	"push -9223372036854775800\n lock\n", /* slot 0, page 0: null */
	"push -9223372036854775800\n ld8\n",
	"push 70368744177664\n galloc\n", /* 2^46: no budget for it */
	"push 5000\n galloc\n dup\n push 4000\n add\n swap\n push 9000\n"
	" copy\n push 0\n",
	"push 100\n galloc\n dup\n free\n unlock\n push 0\n",
	"push 100\n galloc\n dup\n dup\n lock\n drop\n unlock\n unlock\n"
	" push 0\n",
};

static char *fault_prog(const char *snippet)
{
	char addr[32], body[512], *text;
	int n;

	snprintf(addr, sizeof addr, "%" PRId64,
		 (int64_t)(vm_gslot_base(5) | VM_PAGE_SIZE));
	n = snprintf(body, sizeof body, snippet, addr);
	if (n < 0 || (size_t)n >= sizeof body)
		unit_die("snippet too long");
	text = malloc(1024);
	if (text == NULL)
		unit_die("out of memory");
	snprintf(text, 1024,
		 ".rodata\n"
		 "ro:     .word 5\n"
		 ".text\n"
		 "func main 0 0\n"
		 "%s"
		 "        printi\n"
		 "        push 0\n"
		 "        ret\n"
		 "end\n", body);
	return text;
}

/* Run @text (with @check, stdin @in) on the local source and over the
 * remote one with each profile and a few seeds: the same status, output
 * and error line, addresses and all (the home's allocator is the local
 * one). */
static void same_as_local(struct vm_node *a, struct vm_node *home,
			  const char *text, bool check, const char *in)
{
	static const struct profile *const profs[] = {&jitter, &uncached,
						      &calm};
	struct vm_module *m = unit_assemble("same.fla", text, strlen(text));
	struct vm_options o;
	struct unit_io io;
	struct result loc, rem;
	struct vm_proc *p;
	struct fl_err err;

	vm_options_init(&o);
	o.check = check;
	unit_io_open(&io, in, strlen(in), &o);
	if (vm_proc_start(a, m, &o, &p, &err) != 0)
		unit_die("vm_proc_start: %s", err.msg);
	loc.status = vm_proc_wait(p);
	vm_proc_free(p);
	loc.out = unit_fd_text(io.out, &loc.out_len);
	loc.err = unit_fd_text(io.err, &loc.err_len);
	unit_io_close(&io);
	if (getenv("FLOCK_REMOTE_VERBOSE") != NULL)
		printf("  local: status %d, out '%s', err '%s'\n", loc.status,
		       loc.out, loc.err);
	for (size_t i = 0; i < sizeof profs / sizeof *profs; i++)
		for (uint64_t seed = 1; seed <= 3; seed++) {
			run_remote(a, home, m, &o, in, strlen(in), profs[i], seed,
				   &rem);
			bool same = rem.status == loc.status &&
				    rem.out_len == loc.out_len &&
				    memcmp(rem.out, loc.out, loc.out_len) == 0 &&
				    strcmp(rem.err, loc.err) == 0;
			if (!same)
				print_error("%s seed %" PRIu64 ": status %d, out "
					    "'%s', err '%s'; local: %d '%s' "
					    "'%s'\n", profs[i]->name, seed,
					    rem.status, rem.out, rem.err,
					    loc.status, loc.out, loc.err);
			assert_true(same);
			result_free(&rem);
		}
	result_free(&loc);
	vm_module_free(m);
}

static void test_same_as_local(void **state)
{
	struct vm_node *a = golden_node_new(2), *home = golden_node_new(1);

	(void)state;
	same_as_local(a, home, bulk_prog, false, "from stdin, over two pages\n");
	same_as_local(a, home, free_prog, false, "");
	same_as_local(a, home, free_prog, true, "");
	same_as_local(a, home, check_read_prog, true, "0123456789abcdefXYZ\n");
	same_as_local(a, home, check_read_prog, true, "0123456789abcde\n");
	for (size_t i = 0; i < sizeof fault_snippets / sizeof *fault_snippets;
	     i++) {
		char *text = fault_prog(fault_snippets[i]);
		same_as_local(a, home, text, false, "");
		same_as_local(a, home, text, true, "");
		free(text);
	}
	vm_node_free(a);
	vm_node_free(home);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_as_local),
		cmocka_unit_test(test_golden_threads),
		cmocka_unit_test(test_golden_memory),
	};

	golden_binary = "test_remote";
	signal(SIGALRM, golden_watchdog);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
