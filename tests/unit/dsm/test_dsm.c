/* Unit tests for src/dsm/: the DSM protocol core on a deterministic
 * simulator.
 *
 * The simulator runs N nodes (2..5) in this process. Each node runs one
 * or more threads (MAXT), each a small program, a state machine that makes one DSM call per step and,
 * on DSM_WAIT, parks until the core wakes it (a wake of a node that is
 * not parked fails the test: the wake-once contract). Every message sent
 * is copied into a queue with a random delay (1..20 ticks) and, by
 * default, duplicated one time in ten; each tick the scheduler, from a
 * seeded PRNG, either delivers a random message that is due (so
 * messages are reordered freely) or steps a random runnable node. No
 * drops yet. A run ends when every program finished and the queue is
 * empty; it fails if no program can run and no message is in flight
 * (a deadlock) or after a bound on ticks. Page homes are drawn per seed.
 *
 * Each test runs 200 seeds (DSM_STRESS_SEEDS=N runs N, DSM_SEED=S runs
 * only seed S); a failure names its seed, and a seed replays exactly.
 *
 *  - litmus MP, with fences and with an atomic flag: data then flag
 *    released on one node; a node that saw the flag and acquired sees
 *    the data; again with more threads on the reader's node, reading
 *    the data with no fence (a copy they fetch before the acquire must
 *    not serve reads after it);
 *  - threads of one node overwriting one word between releases: the
 *    home ends with the node's last write (one diff of a page in flight
 *    at a time);
 *  - xadd counters from every node: exact totals, every old value of
 *    the shared counter seen once (linearizable);
 *  - a cas lock guarding two words that must be equal inside it;
 *  - false sharing down to interleaved bytes of one page: the home
 *    merges every writer's bytes; each node fetches the page twice
 *    (first write, after the barrier) and sends one diff per round;
 *  - read-only and private pages survive acquires: one GET each;
 *  - duplicates change nothing: the same seeds with no duplication and
 *    with 40%, then every message of the run delivered once more, give
 *    the same master copies;
 *  - sync ops at the home (dsm_sync): a mutex word guarding two words
 *    that must be equal inside it, taken by every thread of every node
 *    (exact totals; the holder reads the word as 1 or 2; the homes hand
 *    it to queued lockers in the order they queued them, which the
 *    simulator sees from QUEUED and the replies); message passing with
 *    wait and wake (no wake-up lost: a waiter left queued would be the
 *    simulator's deadlock; every waiter woken sees the flag and the
 *    data; the wakes woke exactly the waiters the homes queued); unlock
 *    of an unlocked word (DSM_NOTLOCKED, nothing changed); callers
 *    blocked on a held mutex or an unwoken word each told io.queued
 *    once, then let go;
 *  - frees at the home (dsm_free) and the home's mapping (io.map): a
 *    block freed by any node is refused to the freer at once and to
 *    every other node after its next acquire, its first page's live
 *    blocks shrink, a second free is DSM_NOTBLOCK; read-only and never
 *    mapped pages refuse what they must;
 *  - duplicates and sync ops: the mutex, a wait/wake barrier and a free
 *    give the same master copies, maps and empty queues with 0% and 40%
 *    duplication and with every message delivered again.
 *
 * The homes' maps and allocators are the simulator's (io.map, io.free:
 * per page an access, live blocks, blocks of whole pages); pages no test
 * maps otherwise are writable with no live blocks kept. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dsm/dsm_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 5
#define MAXT 3 /* threads per node */
#define NPAGES 32
#define MAX_TICKS 4000000u

/* ---- The simulator ---- */

struct sim;

struct proc {
	struct sim *s;
	int id;	 /* its node */
	int tid; /* which of the node's threads */
	struct dsm_wait w;
	bool parked, done;
	int pc, i, k, round;
	bool flag;
	uint64_t old;
	uint8_t buf[DSM_PAGE_SIZE];
	/* Sync ops (sync_call): the word, and what the home did with it. */
	uint64_t qpage;
	uint32_t qoff;
	int qop;
	uint64_t rid;	/* the SYNC request in flight, 0 none */
	int queued;	/* io.queued calls during this op */
	int qstate;	/* 0, 1 in the home's queue, 2 answered there */
	bool qlocal;	/* queued at its own node (the home) */
};

struct msg {
	int from, to;
	uint64_t due;
	size_t len;
	uint8_t *bytes;
};

typedef void step_fn(struct sim *s, struct proc *p);

struct sim {
	uint64_t seed, rng;
	int n;
	int homes[NPAGES];
	struct dsm_node *node[MAXN];
	struct proc proc[MAXN * MAXT];
	int nproc;
	struct nodectx {
		struct sim *s;
		int id;
	} ctx[MAXN];
	struct msg *q;
	size_t nq, capq;
	struct msg *log; /* every message sent, when @record */
	size_t nlog, caplog;
	bool record;
	uint64_t now;
	unsigned dup_pct, max_delay;
	unsigned gets[MAXN][NPAGES]; /* GETs sent, by node and page */
	step_fn *step;
	void *sc; /* the scenario */
	struct proc *cur; /* the one stepping */
	bool delivering;
	bool allow_stuck; /* sim_run may end with callers parked */
	/* The homes' queues as seen from outside: procs in the order their
	 * home queued them, and whether a grant must be the first. */
	struct proc *fifo[MAXN * MAXT];
	int nfifo;
	bool fifo_lock;
	int queued_total;
	/* The homes' memory maps (io.map, io.free) by page: access, the
	 * live blocks kept (nlive 0: none), and blocks of whole pages
	 * (@large: how many pages the block starting at offset 0 spans). */
	uint8_t access[NPAGES];
	uint8_t nlive[NPAGES];
	struct dsm_extent live[NPAGES][4];
	uint8_t large[NPAGES];
	int frees;
};

#define FAIL(s, ...)                                                          \
	do {                                                                  \
		print_error("seed %" PRIu64 ": ", (s)->seed);                \
		fail_msg(__VA_ARGS__);                                        \
	} while (0)

static uint64_t rnd(struct sim *s)
{
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned below(struct sim *s, unsigned n)
{
	return (unsigned)(rnd(s) % n);
}

static int home_of(void *ctx, uint64_t page)
{
	struct sim *s = ctx;

	return s->homes[page % NPAGES];
}

static void push(struct msg **a, size_t *n, size_t *cap, struct msg m)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*a = realloc(*a, *cap * sizeof **a);
		assert_non_null(*a);
	}
	(*a)[(*n)++] = m;
}

static struct msg copy_msg(int from, int to, uint64_t due, const void *p,
			   size_t len)
{
	struct msg m = {from, to, due, len, malloc(len)};

	assert_non_null(m.bytes);
	memcpy(m.bytes, p, len);
	return m;
}

static void enqueue(struct sim *s, int from, int to, const void *p, size_t len)
{
	/* One message in twenty is slow: ten times the usual delay. */
	unsigned span = below(s, 20) == 0 ? 10 * s->max_delay : s->max_delay;
	uint64_t due = s->now + 1 + below(s, span);

	push(&s->q, &s->nq, &s->capq, copy_msg(from, to, due, p, len));
}

/* ---- What the homes' queues do, seen from outside ---- */

static struct proc *proc_by_rid(struct sim *s, int node, uint64_t rid)
{
	for (int i = 0; i < s->nproc; i++)
		if (s->proc[i].id == node && s->proc[i].rid == rid && rid != 0)
			return &s->proc[i];
	return NULL;
}

/* @q's home queued it. */
static void fifo_add(struct sim *s, struct proc *q)
{
	if (q->qstate != 0)
		return; /* told again (a duplicate) */
	q->qstate = 1;
	s->fifo[s->nfifo++] = q;
	s->queued_total++;
}

/* @q's home answered it: with @fifo_lock, it must be the first of its
 * word's queue. */
static void fifo_grant(struct sim *s, struct proc *q)
{
	int i, first = -1;

	if (q->qstate != 1)
		return;
	for (i = 0; i < s->nfifo; i++) {
		struct proc *x = s->fifo[i];
		if (x->qpage == q->qpage && x->qoff == q->qoff && x->qop == q->qop) {
			if (first < 0)
				first = i;
			if (x == q)
				break;
		}
	}
	if (i == s->nfifo)
		FAIL(s, "node %d thread %d answered, never queued", q->id, q->tid);
	if (s->fifo_lock && first != i)
		FAIL(s, "FIFO: node %d thread %d got the mutex before node %d "
			"thread %d, queued earlier",
		     q->id, q->tid, s->fifo[first]->id, s->fifo[first]->tid);
	memmove(&s->fifo[i], &s->fifo[i + 1],
		(size_t)(s->nfifo - i - 1) * sizeof s->fifo[0]);
	s->nfifo--;
	q->qstate = 2;
}

static void io_queued(void *ctx, struct dsm_wait *w)
{
	struct nodectx *nc = ctx;
	struct sim *s = nc->s;
	struct proc *pr = w->user;

	if (pr->id != nc->id || w != &pr->w)
		FAIL(s, "node %d: told queued with a wait not its own", nc->id);
	if (++pr->queued > 1)
		FAIL(s, "node %d thread %d told queued twice in one op", pr->id,
		     pr->tid);
	if (!s->delivering) { /* at the home, inside its own call */
		if (pr != s->cur)
			FAIL(s, "node %d: queued a caller that is not calling",
			     nc->id);
		pr->qlocal = true;
		fifo_add(s, pr);
	}
}

static void io_send(void *ctx, int to, const void *p, size_t len)
{
	struct nodectx *pr = ctx;
	struct sim *s = pr->s;
	struct dsm_msg m;
	struct proc *q;

	if (to < 0 || to >= s->n || to == pr->id)
		FAIL(s, "node %d sends to %d", pr->id, to);
	if (dsm__msg_decode(p, len, &m) != 0)
		FAIL(s, "node %d sent a message its own decoder refuses", pr->id);
	if (m.type == DSM_MSG_GET)
		s->gets[pr->id][m.page % NPAGES]++;
	if (m.type == DSM_MSG_SYNC && !s->delivering && s->cur != NULL)
		s->cur->rid = m.rid;
	if (m.type == DSM_MSG_QUEUED && (q = proc_by_rid(s, to, m.rid)) != NULL)
		fifo_add(s, q);
	if (m.type == DSM_MSG_SYNC_REPLY && (q = proc_by_rid(s, to, m.rid)) != NULL &&
	    !q->qlocal)
		fifo_grant(s, q);
	enqueue(s, pr->id, to, p, len);
	if (below(s, 100) < s->dup_pct)
		enqueue(s, pr->id, to, p, len);
	if (s->record)
		push(&s->log, &s->nlog, &s->caplog, copy_msg(pr->id, to, 0, p, len));
}

static void io_wake(void *ctx, struct dsm_wait *w)
{
	struct nodectx *nc = ctx;
	struct proc *pr = w->user;

	if (pr->id != nc->id || w != &pr->w)
		FAIL(nc->s, "node %d: woken with a wait not its own", nc->id);
	if (!pr->parked)
		FAIL(pr->s, "node %d: woken while not parked (pc %d)", pr->id, pr->pc);
	pr->parked = false;
	if (pr->qlocal)
		fifo_grant(pr->s, pr);
}

/* ---- The homes' memory maps ---- */

static enum dsm_access io_map(void *ctx, uint64_t page, struct dsm_extent *live,
			      uint32_t *nlive)
{
	struct nodectx *nc = ctx;
	struct sim *s = nc->s;
	unsigned pg = (unsigned)(page % NPAGES);

	if (s->homes[pg] != nc->id)
		FAIL(s, "node %d asked for the mapping of page %u, homed at %d",
		     nc->id, pg, s->homes[pg]);
	*nlive = s->nlive[pg];
	memcpy(live, s->live[pg], s->nlive[pg] * sizeof *live);
	return (enum dsm_access)s->access[pg];
}

static enum dsm_res io_free(void *ctx, uint64_t page, uint32_t off,
			    uint64_t *first, uint64_t *npages)
{
	struct nodectx *nc = ctx;
	struct sim *s = nc->s;
	unsigned pg = (unsigned)(page % NPAGES);

	if (s->homes[pg] != nc->id)
		FAIL(s, "node %d freed on page %u, homed at %d", nc->id, pg,
		     s->homes[pg]);
	*first = page;
	*npages = 0;
	if (s->access[pg] != DSM_MAP_RW)
		return DSM_NOTBLOCK;
	if (s->large[pg] > 0 && off == 0) {
		*npages = s->large[pg];
		for (unsigned k = 0; k < s->large[pg]; k++)
			s->access[pg + k] = DSM_MAP_NONE;
		s->large[pg] = 0;
		s->frees++;
		return DSM_OK;
	}
	for (unsigned k = 0; k < s->nlive[pg]; k++) {
		if (s->live[pg][k].off != off)
			continue;
		memmove(&s->live[pg][k], &s->live[pg][k + 1],
			(s->nlive[pg] - k - 1) * sizeof s->live[pg][0]);
		if (--s->nlive[pg] == 0) {
			s->access[pg] = DSM_MAP_NONE; /* its last block */
			*npages = 1;
		}
		s->frees++;
		return DSM_OK;
	}
	return DSM_NOTBLOCK;
}

static void sim_init(struct sim *s, uint64_t seed, int n, step_fn *step,
		     void *sc)
{
	memset(s, 0, sizeof *s);
	s->seed = seed;
	s->rng = seed * 0x2545f4914f6cdd1dull + 1;
	s->n = n;
	s->dup_pct = 10;
	s->max_delay = 20;
	s->step = step;
	s->sc = sc;
	for (int i = 0; i < NPAGES; i++) {
		s->homes[i] = (int)below(s, (unsigned)n);
		s->access[i] = DSM_MAP_RW;
	}
}

/* Make the nodes (after the scenario set the homes it wants), each
 * running @threads programs. */
static void sim_start_threads(struct sim *s, int threads)
{
	s->nproc = s->n * threads;
	for (int i = 0; i < s->nproc; i++) {
		struct proc *p = &s->proc[i];
		p->s = s;
		p->id = i % s->n;
		p->tid = i / s->n;
		dsm_wait_init(&p->w, p);
	}
	for (int i = 0; i < s->n; i++) {
		struct dsm_config cfg = {
		    .self = i,
		    .nodes = s->n,
		    .home = home_of,
		    .home_ctx = s,
		    .io = {.send = io_send,
			   .wake = io_wake,
			   .queued = io_queued,
			   .map = io_map,
			   .free = io_free,
			   .ctx = &s->ctx[i]},
		};
		struct fl_err err;
		s->ctx[i].s = s;
		s->ctx[i].id = i;
		assert_int_equal(dsm_node_new(&cfg, &s->node[i], &err), 0);
	}
}

static void sim_start(struct sim *s)
{
	sim_start_threads(s, 1);
}

/* What the runs of one test added up to, printed after it. */
static struct dsm_stats total;
static uint64_t total_runs, total_ticks;

static void sim_close(struct sim *s)
{
	for (int i = 0; i < s->n && s->node[i] != NULL; i++) {
		struct dsm_stats st;
		dsm_stats(s->node[i], &st);
		total.pages_fetched += st.pages_fetched;
		total.diffs_sent += st.diffs_sent;
		total.msgs_sent += st.msgs_sent;
		total.invalidations += st.invalidations;
		total.notes_sent += st.notes_sent;
		total.atomics_served += st.atomics_served;
		total.dups += st.dups;
	}
	total_runs++;
	total_ticks += s->now;
	for (int i = 0; i < s->n; i++)
		dsm_node_free(s->node[i]);
	for (size_t i = 0; i < s->nq; i++)
		free(s->q[i].bytes);
	for (size_t i = 0; i < s->nlog; i++)
		free(s->log[i].bytes);
	free(s->q);
	free(s->log);
}

static void deliver(struct sim *s, size_t i)
{
	struct msg m = s->q[i];

	s->q[i] = s->q[--s->nq];
	s->delivering = true;
	dsm_deliver(s->node[m.to], m.from, m.bytes, m.len);
	s->delivering = false;
	free(m.bytes);
}

static void sim_run(struct sim *s)
{
	for (uint64_t ticks = 0;; ticks++, s->now++) {
		int run[MAXN * MAXT], nrun = 0;
		size_t ndue = 0;
		bool alldone = true;

		for (int i = 0; i < s->nproc; i++) {
			alldone &= s->proc[i].done;
			if (!s->proc[i].done && !s->proc[i].parked)
				run[nrun++] = i;
		}
		for (size_t i = 0; i < s->nq; i++)
			ndue += s->q[i].due <= s->now;
		if (s->nq == 0 && nrun == 0) {
			if (!alldone && !s->allow_stuck)
				for (int i = 0; i < s->nproc; i++)
					if (!s->proc[i].done)
						FAIL(s, "deadlock: node %d thread %d parked "
							"at pc %d, nothing in flight",
						     s->proc[i].id, s->proc[i].tid,
						     s->proc[i].pc);
			return;
		}
		if (ticks > MAX_TICKS)
			FAIL(s, "no end after %u ticks", MAX_TICKS);
		if (ndue > 0 && (nrun == 0 || below(s, 2) == 0)) {
			size_t k = below(s, (unsigned)ndue);
			for (size_t i = 0; i < s->nq; i++)
				if (s->q[i].due <= s->now && k-- == 0) {
					deliver(s, i);
					break;
				}
		} else if (nrun > 0) {
			s->cur = &s->proc[run[below(s, (unsigned)nrun)]];
			s->step(s, s->cur);
			s->cur = NULL;
		}
	}
}

/* Deliver every message the run sent once more, in a random order and
 * with random delays, and let the replies settle. */
static void sim_replay(struct sim *s)
{
	for (size_t i = s->nlog; i > 1; i--) {
		size_t j = below(s, (unsigned)i);
		struct msg t = s->log[i - 1];
		s->log[i - 1] = s->log[j];
		s->log[j] = t;
	}
	s->record = false;
	for (size_t i = 0; i < s->nlog; i++)
		enqueue(s, s->log[i].from, s->log[i].to, s->log[i].bytes,
			s->log[i].len);
	sim_run(s);
}

static uint64_t seeds(void)
{
	const char *e = getenv("DSM_STRESS_SEEDS");

	return e != NULL && atoi(e) > 0 ? (uint64_t)atoi(e) : 200;
}

/* Run @one for each seed (or only DSM_SEED). */
static void each_seed(void (*one)(uint64_t seed))
{
	const char *only = getenv("DSM_SEED");
	uint64_t n = seeds();

	memset(&total, 0, sizeof total);
	total_runs = total_ticks = 0;
	if (only != NULL)
		one(strtoull(only, NULL, 0));
	else
		for (uint64_t seed = 1; seed <= n; seed++)
			one(seed);
	print_message("%" PRIu64 " runs, %" PRIu64 " ticks: %" PRIu64
		      " messages, %" PRIu64 " fetches, %" PRIu64 " diffs, %" PRIu64
		      " invalidations, %" PRIu64 " notes, %" PRIu64
		      " atomics, %" PRIu64 " duplicates dropped\n",
		      total_runs, total_ticks, total.msgs_sent, total.pages_fetched,
		      total.diffs_sent, total.invalidations, total.notes_sent,
		      total.atomics_served, total.dups);
}

/* A step makes one call; on DSM_WAIT the node parks and the same step
 * runs again once woken. */
#define DO(call)                                                              \
	do {                                                                  \
		enum dsm_res r_ = (call);                                     \
		if (r_ == DSM_WAIT) {                                         \
			p->parked = true;                                     \
			return;                                               \
		}                                                             \
		if (r_ != DSM_OK)                                             \
			FAIL(s, "node %d pc %d: %s: %d", p->id, p->pc, #call, \
			     (int)r_);                                        \
	} while (0)

#define NODE (s->node[p->id])

#define FAIL_SEED(seed, ...)                                                  \
	do {                                                                  \
		print_error("seed %" PRIu64 ": ", (uint64_t)(seed));          \
		fail_msg(__VA_ARGS__);                                        \
	} while (0)

static uint64_t get64(const uint8_t *b)
{
	return fl_load_u64(b);
}

static uint64_t home64(struct sim *s, uint64_t page, uint32_t off)
{
	const uint8_t *pg = dsm_home_page(s->node[s->homes[page]], page);

	return pg != NULL ? get64(pg + off) : 0;
}

static int nodes_for(uint64_t seed)
{
	return 2 + (int)(seed % (MAXN - 1));
}

/* A page not in @avoid[0..n). */
static uint64_t other_page(struct sim *s, const uint64_t *avoid, int n)
{
	for (;;) {
		uint64_t pg = 1 + below(s, NPAGES - 1);
		bool ok = true;
		for (int i = 0; i < n; i++)
			ok &= pg != avoid[i];
		if (ok)
			return pg;
	}
}

/* ---- Litmus MP ---- */

struct mp {
	int a, b;
	bool atomic, prime;
	uint64_t dpage[2], fpage;
	uint32_t doff[4], foff;
	uint64_t val;
};

static void mp_step(struct sim *s, struct proc *p)
{
	struct mp *t = s->sc;
	uint64_t v, one = 1;

	if (p->tid > 0) {
		/* More threads on B's node read the data with no fence: a
		 * copy they fetch may predate A's release, and must not
		 * serve B's reads after its acquire. */
		if (p->id != t->b || p->i == 40) {
			p->done = true;
			return;
		}
		DO(dsm_read(NODE, &p->w, t->dpage[p->i % 2], t->doff[p->i % 4], 8,
			    p->buf));
		p->i++;
		return;
	}
	if (p->id == t->a) {
		switch (p->pc) {
		case 0: /* the data, on two pages */
			v = t->val + (uint64_t)p->i;
			DO(dsm_write(NODE, &p->w, t->dpage[p->i % 2], t->doff[p->i],
				     8, &v));
			if (++p->i == 4)
				p->pc = t->atomic ? 4 : 1;
			return;
		case 1:
			DO(dsm_release(NODE, &p->w));
			p->pc = 2;
			return;
		case 2:
			DO(dsm_write(NODE, &p->w, t->fpage, t->foff, 8, &one));
			p->pc = 3;
			return;
		case 3:
			DO(dsm_release(NODE, &p->w));
			p->done = true;
			return;
		case 4:
			DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff, DSM_XCHG, 1, 0,
				      &p->old));
			p->done = true;
			return;
		}
	} else if (p->id == t->b) {
		switch (p->pc) {
		case 0: /* cache the data pages first: acquire must drop them */
			if (!t->prime) {
				p->pc = t->atomic ? 3 : 1;
				return;
			}
			DO(dsm_read(NODE, &p->w, t->dpage[p->i % 2], t->doff[p->i], 8,
				    p->buf));
			if (++p->i == 4) {
				p->i = 0;
				p->pc = t->atomic ? 3 : 1;
			}
			return;
		case 1:
			DO(dsm_acquire(NODE, &p->w));
			p->pc = 2;
			return;
		case 2:
			DO(dsm_read(NODE, &p->w, t->fpage, t->foff, 8, p->buf));
			p->pc = get64(p->buf) == 1 ? 4 : 1;
			return;
		case 3:
			DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff, DSM_XADD, 0, 0,
				      &p->old));
			p->pc = p->old == 1 ? 5 : 3;
			return;
		case 4: /* saw the flag: a fence, then the data */
			DO(dsm_acquire(NODE, &p->w));
			p->pc = 5;
			return;
		case 5:
			DO(dsm_read(NODE, &p->w, t->dpage[p->i % 2], t->doff[p->i], 8,
				    p->buf));
			if (get64(p->buf) != t->val + (uint64_t)p->i)
				FAIL(s, "MP%s: node %d saw the flag but data word %d "
					"is %" PRIu64 ", not %" PRIu64,
				     t->atomic ? " (atomic)" : "", p->id, p->i,
				     get64(p->buf), t->val + (uint64_t)p->i);
			if (++p->i == 4)
				p->done = true;
			return;
		}
	} else {
		/* Bystanders read everything and acquire: more sharers to
		 * note, more traffic to reorder. */
		switch (p->pc) {
		case 0:
			DO(dsm_read(NODE, &p->w, p->i % 3 == 2 ? t->fpage
							       : t->dpage[p->i % 3],
				    p->i % 3 == 2 ? t->foff : t->doff[p->i % 3], 8,
				    p->buf));
			p->pc = 1;
			return;
		case 1:
			DO(dsm_acquire(NODE, &p->w));
			p->pc = 0;
			if (++p->i == 12)
				p->done = true;
			return;
		}
	}
}

static int mp_threads = 1;

static void mp_one(uint64_t seed)
{
	struct sim s;
	struct mp t;

	memset(&t, 0, sizeof t);
	sim_init(&s, seed, nodes_for(seed), mp_step, &t);
	t.atomic = seed % 2 == 0;
	t.prime = seed / 2 % 2 == 0;
	t.a = (int)below(&s, (unsigned)s.n);
	t.b = (t.a + 1 + (int)below(&s, (unsigned)s.n - 1)) % s.n;
	t.dpage[0] = 1 + below(&s, NPAGES - 1);
	t.dpage[1] = 1 + below(&s, NPAGES - 1);
	t.fpage = other_page(&s, t.dpage, 2);
	for (int k = 0; k < 4; k++)
		t.doff[k] = 8 * (uint32_t)k + 32 * below(&s, 120); /* distinct */
	t.foff = 8 * below(&s, 512);
	t.val = rnd(&s) | 1;
	sim_start_threads(&s, mp_threads);
	sim_run(&s);
	sim_close(&s);
}

static void test_mp(void **state)
{
	(void)state;
	mp_threads = 1;
	each_seed(mp_one);
}

static void test_mp_threads(void **state)
{
	(void)state;
	mp_threads = MAXT;
	each_seed(mp_one);
}

/* ---- Threads of one node writing one word ---- */

#define SW_ROUNDS 8

struct sw {
	int writer;
	uint64_t page;
	uint32_t off;
};

static void sw_step(struct sim *s, struct proc *p)
{
	struct sw *t = s->sc;
	uint64_t v = (uint64_t)p->tid << 32 | (uint64_t)p->round;

	if (p->id != t->writer) {
		p->done = true;
		return;
	}
	/* Racy on purpose: the node's threads overwrite each other; what
	 * must hold is that the home ends with what the node last wrote. */
	switch (p->pc) {
	case 0:
		DO(dsm_write(NODE, &p->w, t->page, t->off, 8, &v));
		p->pc = 1;
		return;
	case 1:
		DO(dsm_release(NODE, &p->w));
		p->pc = 0;
		if (++p->round == SW_ROUNDS)
			p->done = true;
		return;
	}
}

static void sw_one(uint64_t seed)
{
	struct sim s;
	struct sw t;
	struct proc *p;
	uint8_t mine[8];

	sim_init(&s, seed, nodes_for(seed), sw_step, &t);
	t.page = 1 + below(&s, NPAGES - 1);
	t.off = 8 * below(&s, 512);
	t.writer = (s.homes[t.page] + 1 + (int)below(&s, (unsigned)s.n - 1)) % s.n;
	sim_start_threads(&s, MAXT);
	sim_run(&s);
	p = &s.proc[t.writer];
	/* The writer's copy survives (it is the only writer): it and the
	 * master must agree. */
	assert_int_equal(dsm_read(s.node[t.writer], &p->w, t.page, t.off, 8, mine),
			 DSM_OK);
	if (get64(mine) != home64(&s, t.page, t.off))
		FAIL(&s, "the writer's copy holds %" PRIx64 ", the home %" PRIx64,
		     get64(mine), home64(&s, t.page, t.off));
	sim_close(&s);
}

static void test_threads_one_word(void **state)
{
	(void)state;
	each_seed(sw_one);
}

/* ---- Counters ---- */

#define CNT_K 12

struct cnt {
	uint64_t page[2];
	uint8_t seen[MAXN * CNT_K];
};

static uint32_t cnt_off(int c)
{
	return 8 * (uint32_t)(1 + c);
}

static void cnt_step(struct sim *s, struct proc *p)
{
	struct cnt *t = s->sc;
	int c = (p->id + p->k) % s->n;

	switch (p->pc) {
	case 0:
		DO(dsm_atomic(NODE, &p->w, t->page[c % 2], cnt_off(c), DSM_XADD, 1,
			      0, &p->old));
		p->pc = 1;
		return;
	case 1:
		DO(dsm_atomic(NODE, &p->w, t->page[0], 0, DSM_XADD, 1, 0, &p->old));
		if (p->old >= (uint64_t)s->n * CNT_K || t->seen[p->old]++)
			FAIL(s, "xadd on the total returned %" PRIu64 " twice or "
				"out of range",
			     p->old);
		p->pc = 0;
		if (++p->k == CNT_K)
			p->done = true;
		return;
	}
}

static void cnt_one(uint64_t seed)
{
	struct sim s;
	struct cnt t;

	memset(&t, 0, sizeof t);
	sim_init(&s, seed, nodes_for(seed), cnt_step, &t);
	t.page[0] = 1 + below(&s, NPAGES - 1);
	t.page[1] = 1 + below(&s, NPAGES - 1);
	sim_start(&s);
	sim_run(&s);
	if (home64(&s, t.page[0], 0) != (uint64_t)s.n * CNT_K)
		FAIL(&s, "total %" PRIu64 ", not %d", home64(&s, t.page[0], 0),
		     s.n * CNT_K);
	for (int c = 0; c < s.n; c++)
		if (home64(&s, t.page[c % 2], cnt_off(c)) != CNT_K)
			FAIL(&s, "counter %d is %" PRIu64 ", not %d", c,
			     home64(&s, t.page[c % 2], cnt_off(c)), CNT_K);
	sim_close(&s);
}

static void test_counters(void **state)
{
	(void)state;
	each_seed(cnt_one);
}

/* ---- A lock built from cas ---- */

#define LOCK_K 6

struct lk {
	uint64_t lpage, xpage, ypage;
	uint32_t loff, xoff, yoff;
	int owner;
};

static void lock_step(struct sim *s, struct proc *p)
{
	struct lk *t = s->sc;
	uint64_t v;

	switch (p->pc) {
	case 0:
		DO(dsm_atomic(NODE, &p->w, t->lpage, t->loff, DSM_CAS, 0, 1,
			      &p->old));
		if (p->old != 0)
			return; /* held: spin */
		if (t->owner != -1)
			FAIL(s, "node %d took the lock node %d holds", p->id,
			     t->owner);
		t->owner = p->id;
		p->pc = 1;
		return;
	case 1:
		DO(dsm_read(NODE, &p->w, t->xpage, t->xoff, 8, p->buf));
		p->pc = 2;
		return;
	case 2:
		DO(dsm_read(NODE, &p->w, t->ypage, t->yoff, 8, p->buf + 8));
		if (get64(p->buf) != get64(p->buf + 8))
			FAIL(s, "node %d holds the lock and sees x %" PRIu64
				" != y %" PRIu64,
			     p->id, get64(p->buf), get64(p->buf + 8));
		p->pc = 3;
		return;
	case 3:
		v = get64(p->buf) + 1;
		DO(dsm_write(NODE, &p->w, t->xpage, t->xoff, 8, &v));
		p->pc = 4;
		return;
	case 4:
		v = get64(p->buf) + 1;
		DO(dsm_write(NODE, &p->w, t->ypage, t->yoff, 8, &v));
		p->pc = 5;
		return;
	case 5:
		if (!p->flag) {
			p->flag = true;
			t->owner = -1;
		}
		DO(dsm_atomic(NODE, &p->w, t->lpage, t->loff, DSM_XCHG, 0, 0,
			      &p->old));
		if (p->old != 1)
			FAIL(s, "node %d unlocked a lock word of %" PRIu64, p->id,
			     p->old);
		p->flag = false;
		p->pc = 0;
		if (++p->k == LOCK_K)
			p->done = true;
		return;
	}
}

static void lock_setup(struct sim *s, struct lk *t)
{
	t->owner = -1;
	t->lpage = 1 + below(s, NPAGES - 1);
	t->xpage = 1 + below(s, NPAGES - 1);
	t->ypage = 1 + below(s, NPAGES - 1);
	t->loff = 8 * below(s, 100);
	t->xoff = 800 + 8 * below(s, 100);
	t->yoff = 1600 + 8 * below(s, 100);
}

static void lock_check(struct sim *s, const struct lk *t)
{
	uint64_t x = home64(s, t->xpage, t->xoff), y = home64(s, t->ypage, t->yoff);

	if (x != (uint64_t)s->n * LOCK_K || y != x)
		FAIL(s, "after the run x %" PRIu64 ", y %" PRIu64 ", not %d", x, y,
		     s->n * LOCK_K);
}

static void lock_one(uint64_t seed)
{
	struct sim s;
	struct lk t;

	sim_init(&s, seed, nodes_for(seed), lock_step, &t);
	lock_setup(&s, &t);
	sim_start(&s);
	sim_run(&s);
	lock_check(&s, &t);
	sim_close(&s);
}

static void test_lock(void **state)
{
	(void)state;
	each_seed(lock_one);
}

/* ---- False sharing ---- */

#define FS_BYTES 480 /* interleaved: byte j belongs to node j % n */
#define FS_ROUNDS 3

struct fs {
	uint64_t page, bpage;
	uint32_t boff;
};

static uint8_t fs_val(int round, int node)
{
	return (uint8_t)(round + 1 + node * 8);
}

static void fs_step(struct sim *s, struct proc *p)
{
	struct fs *t = s->sc;
	uint8_t v;

	switch (p->pc) {
	case 0: /* this node's bytes: id, id + n, id + 2n, ... */
		v = fs_val(p->round, p->id);
		DO(dsm_write(NODE, &p->w, t->page,
			     (uint32_t)(p->id + p->i * s->n), 1, &v));
		if (p->id + ++p->i * s->n >= FS_BYTES)
			p->pc = 1;
		return;
	case 1:
		DO(dsm_release(NODE, &p->w));
		p->i = 0;
		p->pc = ++p->round < FS_ROUNDS ? 0 : 2;
		return;
	case 2: /* a barrier */
		DO(dsm_atomic(NODE, &p->w, t->bpage, t->boff, DSM_XADD, 1, 0,
			      &p->old));
		p->pc = 3;
		return;
	case 3:
		DO(dsm_atomic(NODE, &p->w, t->bpage, t->boff, DSM_XADD, 0, 0,
			      &p->old));
		if (p->old == (uint64_t)s->n)
			p->pc = 4;
		return;
	case 4:
		DO(dsm_read(NODE, &p->w, t->page, 0, DSM_PAGE_SIZE, p->buf));
		for (int j = 0; j < DSM_PAGE_SIZE; j++) {
			uint8_t want = j < FS_BYTES ? fs_val(FS_ROUNDS - 1, j % s->n)
						    : 0;
			if (p->buf[j] != want)
				FAIL(s, "node %d reads byte %d as %u, not %u (its "
					"writer node %d's last)",
				     p->id, j, p->buf[j], want, j % s->n);
		}
		p->done = true;
		return;
	}
}

static void fs_setup(struct sim *s, struct fs *t)
{
	t->page = 1 + below(s, NPAGES - 1);
	t->bpage = other_page(s, &t->page, 1);
	t->boff = 8 * below(s, 512);
}

static void fs_check_traffic(struct sim *s, const struct fs *t)
{
	for (int i = 0; i < s->n; i++) {
		struct dsm_stats st;
		unsigned mine = 0;
		for (int j = i; j < FS_BYTES; j += s->n)
			mine++;
		dsm_stats(s->node[i], &st);
		if (i == s->homes[t->page]) {
			if (s->gets[i][t->page] != 0 || st.diffs_sent != 0)
				FAIL(s, "the home node %d fetched or diffed its page", i);
			continue;
		}
		/* No ping-pong: one fetch to write, one after the barrier. */
		if (s->gets[i][t->page] != 2)
			FAIL(s, "node %d fetched the falsely shared page %u times, "
				"not 2",
			     i, s->gets[i][t->page]);
		if (st.diffs_sent != FS_ROUNDS || st.diff_bytes != FS_ROUNDS * mine)
			FAIL(s, "node %d sent %" PRIu64 " diffs of %" PRIu64
				" bytes, not %d of %u",
			     i, st.diffs_sent, st.diff_bytes, FS_ROUNDS,
			     FS_ROUNDS * mine);
	}
}

static void fs_one(uint64_t seed)
{
	struct sim s;
	struct fs t;

	sim_init(&s, seed, nodes_for(seed), fs_step, &t);
	fs_setup(&s, &t);
	sim_start(&s);
	sim_run(&s);
	fs_check_traffic(&s, &t);
	sim_close(&s);
}

static void test_false_sharing(void **state)
{
	(void)state;
	each_seed(fs_one);
}

/* ---- Read-only and private pages ---- */

#define RO_PAGES 3
#define RO_ROUNDS 6

struct ro {
	uint64_t r[RO_PAGES], q[MAXN], wpage, cpage;
};

static void ro_step(struct sim *s, struct proc *p)
{
	struct ro *t = s->sc;
	uint64_t v;

	switch (p->pc) {
	case 0: /* read every read-only page */
		DO(dsm_read(NODE, &p->w, t->r[p->i], 8 * (uint32_t)p->i, 8, p->buf));
		if (++p->i == RO_PAGES) {
			p->i = 0;
			p->pc = 1;
		}
		return;
	case 1: /* write this node's private page */
		v = (uint64_t)p->id + 1;
		DO(dsm_write(NODE, &p->w, t->q[p->id], 16, 8, &v));
		p->pc = 2;
		return;
	case 2: /* node 0 writes a shared page every round */
		if (p->id == 0) {
			v = (uint64_t)p->round + 1;
			DO(dsm_write(NODE, &p->w, t->wpage, 0, 8, &v));
		}
		p->pc = 3;
		return;
	case 3: /* a fence: an acquire, or an atomic */
		if (p->round % 2 == 0)
			DO(dsm_acquire(NODE, &p->w));
		else
			DO(dsm_atomic(NODE, &p->w, t->cpage, 0, DSM_XADD, 1, 0,
				      &p->old));
		p->pc = 4;
		return;
	case 4:
		DO(dsm_read(NODE, &p->w, t->r[p->i], 8 * (uint32_t)p->i, 8, p->buf));
		if (get64(p->buf) != 0)
			FAIL(s, "read-only page %" PRIu64 " changed", t->r[p->i]);
		if (++p->i == RO_PAGES) {
			p->i = 0;
			p->pc = 5;
		}
		return;
	case 5:
		DO(dsm_read(NODE, &p->w, t->q[p->id], 16, 8, p->buf));
		if (get64(p->buf) != (uint64_t)p->id + 1)
			FAIL(s, "node %d's private page lost its write", p->id);
		p->pc = 6;
		return;
	case 6:
		DO(dsm_read(NODE, &p->w, t->wpage, 0, 8, p->buf));
		p->pc = ++p->round < RO_ROUNDS ? 2 : 7;
		return;
	case 7:
		DO(dsm_release(NODE, &p->w));
		p->done = true;
		return;
	}
}

static void ro_one(uint64_t seed)
{
	struct sim s;
	struct ro t;
	uint64_t pg = 1;

	sim_init(&s, seed, nodes_for(seed), ro_step, &t);
	for (int i = 0; i < RO_PAGES; i++)
		t.r[i] = pg++;
	for (int i = 0; i < s.n; i++) {
		t.q[i] = pg++;
		s.homes[t.q[i]] = (i + 1 + (int)below(&s, (unsigned)s.n - 1)) % s.n;
	}
	t.wpage = pg++;
	t.cpage = pg++;
	sim_start(&s);
	sim_run(&s);
	for (int i = 0; i < s.n; i++) {
		for (int k = 0; k < RO_PAGES; k++)
			if (s.gets[i][t.r[k]] != (s.homes[t.r[k]] == i ? 0u : 1u))
				FAIL(&s, "node %d fetched read-only page %" PRIu64
					 " %u times",
				     i, t.r[k], s.gets[i][t.r[k]]);
		if (s.gets[i][t.q[i]] != 1)
			FAIL(&s, "node %d fetched its private page %u times", i,
			     s.gets[i][t.q[i]]);
	}
	sim_close(&s);
}

static void test_read_only(void **state)
{
	(void)state;
	each_seed(ro_one);
}

/* ---- Duplicates change nothing ---- */

/* A lock and false sharing at once, on disjoint pages. */
struct mixed {
	struct lk lk;
	struct fs fs;
};

static void mixed_step(struct sim *s, struct proc *p)
{
	struct mixed *t = s->sc;

	/* Each node runs the lock program (pc < 100), then the false
	 * sharing one (its pc + 100). */
	if (p->pc < 100) {
		s->sc = &t->lk;
		lock_step(s, p);
		s->sc = t;
		if (p->done) {
			p->done = false;
			p->pc = 100;
			p->i = p->k = p->round = 0;
		}
		return;
	}
	p->pc -= 100;
	s->sc = &t->fs;
	fs_step(s, p);
	s->sc = t;
	p->pc += 100;
}

/* The master copies of every page, home by home. */
static void masters(struct sim *s, uint8_t *out)
{
	for (int pg = 0; pg < NPAGES; pg++) {
		const uint8_t *m = dsm_home_page(s->node[s->homes[pg]], (uint64_t)pg);
		if (m != NULL)
			memcpy(out + (size_t)pg * DSM_PAGE_SIZE, m, DSM_PAGE_SIZE);
		else
			memset(out + (size_t)pg * DSM_PAGE_SIZE, 0, DSM_PAGE_SIZE);
	}
}

static void mixed_run(uint64_t seed, unsigned dup_pct, bool replay,
		      uint8_t *out, uint64_t *dups)
{
	struct sim s;
	struct mixed t;

	sim_init(&s, seed, nodes_for(seed), mixed_step, &t);
	lock_setup(&s, &t.lk);
	{
		uint64_t used[3] = {t.lk.lpage, t.lk.xpage, t.lk.ypage};
		t.fs.page = other_page(&s, used, 3);
		t.fs.bpage = t.lk.lpage; /* the lock's page, another word */
		t.fs.boff = 2400 + 8 * below(&s, 100);
	}
	s.dup_pct = dup_pct;
	s.record = replay;
	sim_start(&s);
	sim_run(&s);
	lock_check(&s, &t.lk);
	masters(&s, out);
	if (replay) {
		uint8_t *again = malloc((size_t)NPAGES * DSM_PAGE_SIZE);
		assert_non_null(again);
		sim_replay(&s);
		masters(&s, again);
		if (memcmp(again, out, (size_t)NPAGES * DSM_PAGE_SIZE) != 0)
			FAIL(&s, "delivering every message again changed memory");
		free(again);
	}
	*dups = 0;
	for (int i = 0; i < s.n; i++) {
		struct dsm_stats st;
		dsm_stats(s.node[i], &st);
		*dups += st.dups;
		if (st.malformed != 0 || st.refused != 0)
			FAIL(&s, "node %d dropped %" PRIu64 " malformed, %" PRIu64
				 " refused",
			     i, st.malformed, st.refused);
	}
	sim_close(&s);
}

static uint64_t dup_total;

static void dup_one(uint64_t seed)
{
	size_t size = (size_t)NPAGES * DSM_PAGE_SIZE;
	uint8_t *plain = malloc(size), *dup = malloc(size);
	uint64_t d0, d1;

	assert_non_null(plain);
	assert_non_null(dup);
	mixed_run(seed, 0, false, plain, &d0);
	mixed_run(seed, 40, true, dup, &d1);
	if (d0 != 0)
		print_error("seed %" PRIu64 ": %" PRIu64 " duplicates without "
			    "duplication\n",
			    seed, d0);
	assert_int_equal(d0, 0);
	if (memcmp(plain, dup, size) != 0) {
		print_error("seed %" PRIu64 ": ", seed);
		fail_msg("memory after a run with duplicates differs");
	}
	dup_total += d1;
	free(plain);
	free(dup);
}

static void test_duplicates(void **state)
{
	(void)state;
	dup_total = 0;
	each_seed(dup_one);
	assert_true(dup_total > 0); /* duplicates did arrive, and were seen */
}

/* ---- Blocking synchronisation at the home ---- */

/* dsm_sync() for @p on the word at @off of @page, remembered so the
 * queue checks (fifo_add, fifo_grant) know it; its result. An op ends on
 * anything but DSM_WAIT: what the homes recorded of it is cleared. */
static enum dsm_res sync_call(struct sim *s, struct proc *p, uint64_t page,
			      uint32_t off, enum dsm_sync_op op, uint64_t arg,
			      uint64_t *out)
{
	enum dsm_res r;

	p->qpage = page;
	p->qoff = off;
	p->qop = op;
	r = dsm_sync(s->node[p->id], &p->w, page, off, op, arg, out);
	if (r == DSM_WAIT)
		return r;
	if (p->qstate == 1)
		FAIL(s, "node %d thread %d: its op completed while queued", p->id,
		     p->tid);
	p->rid = 0;
	p->queued = 0;
	p->qstate = 0;
	p->qlocal = false;
	return r;
}

/* Like DO, for a call that must end with @want. */
#define DO_EXPECT(call, want)                                                 \
	do {                                                                  \
		enum dsm_res r_ = (call);                                     \
		if (r_ == DSM_WAIT) {                                         \
			p->parked = true;                                     \
			return;                                               \
		}                                                             \
		if (r_ != (want))                                             \
			FAIL(s, "node %d pc %d: %s: %d, not %d", p->id, p->pc, \
			     #call, (int)r_, (int)(want));                    \
	} while (0)

#define SYNC(page, off, op, arg, out)                                         \
	DO(sync_call(s, p, page, off, op, arg, out))

/* A mutex word (dsm_sync LOCK/UNLOCK) guarding two words that must be
 * equal inside it, taken by every thread of every node LK_K times. The
 * holder also reads the mutex word plainly: 1 or 2, never 0. */
#define LK_K 5

static void slock_step(struct sim *s, struct proc *p)
{
	struct lk *t = s->sc;
	uint64_t v;

	switch (p->pc) {
	case 0:
		SYNC(t->lpage, t->loff, DSM_LOCK, 0, &p->old);
		if (p->old != 0)
			FAIL(s, "lock status %" PRIu64, p->old);
		if (t->owner != -1)
			FAIL(s, "node %d took the mutex node %d holds", p->id,
			     t->owner);
		t->owner = p->id;
		p->pc = 1;
		return;
	case 1:
		DO(dsm_read(NODE, &p->w, t->lpage, t->loff, 8, p->buf));
		if (get64(p->buf) != 1 && get64(p->buf) != 2)
			FAIL(s, "node %d holds the mutex and reads its word as "
				"%" PRIu64,
			     p->id, get64(p->buf));
		p->pc = 2;
		return;
	case 2:
		DO(dsm_read(NODE, &p->w, t->xpage, t->xoff, 8, p->buf));
		p->pc = 3;
		return;
	case 3:
		DO(dsm_read(NODE, &p->w, t->ypage, t->yoff, 8, p->buf + 8));
		if (get64(p->buf) != get64(p->buf + 8))
			FAIL(s, "node %d holds the mutex and sees x %" PRIu64
				" != y %" PRIu64,
			     p->id, get64(p->buf), get64(p->buf + 8));
		p->pc = 4;
		return;
	case 4:
		v = get64(p->buf) + 1;
		DO(dsm_write(NODE, &p->w, t->xpage, t->xoff, 8, &v));
		p->pc = 5;
		return;
	case 5:
		v = get64(p->buf) + 1;
		DO(dsm_write(NODE, &p->w, t->ypage, t->yoff, 8, &v));
		p->pc = 6;
		return;
	case 6:
		if (!p->flag) {
			p->flag = true;
			t->owner = -1;
		}
		SYNC(t->lpage, t->loff, DSM_UNLOCK, 0, &p->old);
		p->flag = false;
		p->pc = 0;
		if (++p->k == LK_K)
			p->done = true;
		return;
	}
}

static int slock_threads(uint64_t seed)
{
	return 1 + (int)(seed / 4 % 2);
}

/* After the run: the invariant's words, the mutex free, no queue left. */
static void slock_check(struct sim *s, const struct lk *t)
{
	uint64_t want = (uint64_t)s->nproc * LK_K;
	uint64_t x = home64(s, t->xpage, t->xoff), y = home64(s, t->ypage, t->yoff);
	struct dsm_page *pg;

	if (x != want || y != want)
		FAIL(s, "after the run x %" PRIu64 ", y %" PRIu64 ", not %" PRIu64,
		     x, y, want);
	if (home64(s, t->lpage, t->loff) != 0)
		FAIL(s, "the mutex word is %" PRIu64 " after the run",
		     home64(s, t->lpage, t->loff));
	pg = dsm__page(s->node[s->homes[t->lpage]], t->lpage, false);
	if (pg != NULL && pg->qhead != NULL)
		FAIL(s, "callers left in the mutex's queue");
	if (s->nfifo != 0)
		FAIL(s, "%d callers queued and never answered", s->nfifo);
}

static uint64_t slock_queued;

static void slock_one(uint64_t seed)
{
	struct sim s;
	struct lk t;

	sim_init(&s, seed, nodes_for(seed), slock_step, &t);
	lock_setup(&s, &t);
	s.fifo_lock = true;
	sim_start_threads(&s, slock_threads(seed));
	sim_run(&s);
	slock_check(&s, &t);
	slock_queued += (uint64_t)s.queued_total;
	sim_close(&s);
}

static void test_sync_lock(void **state)
{
	(void)state;
	slock_queued = 0;
	each_seed(slock_one);
	print_message("%" PRIu64 " lockers queued, handed the mutex in FIFO order\n",
		      slock_queued);
	assert_true(slock_queued > 0); /* contention happened */
}

/* Message passing with wait and wake, two rounds on two words of one
 * page: the producer writes the data, releases, writes the round's flag
 * (plain stores) and wakes everyone; each consumer waits while the flag
 * is 0. (Without the release a wait could see the flag at its home
 * before the data reached theirs: a plain store is no release, as SPEC
 * 3.1 says.) A wake-up lost (a consumer queued after the wake) leaves it parked
 * for good: the simulator's deadlock. A consumer that returns from wait
 * sees the flag set (woken after the producer's release, or the word
 * differed) and then the data. The wakes woke exactly the consumers
 * the homes queued. */
#define WW_ROUNDS 2

struct ww {
	int producer;
	uint64_t fpage, dpage;
	uint32_t foff[WW_ROUNDS], doff;
	uint64_t woken;
	int queued_before; /* queued_total at the round's start */
};

static void ww_step(struct sim *s, struct proc *p)
{
	struct ww *t = s->sc;
	uint64_t v;
	bool producer = p->id == t->producer && p->tid == 0;

	if (p->round == WW_ROUNDS) {
		p->done = true;
		return;
	}
	if (producer) {
		switch (p->pc) {
		case 0:
			v = 100 + (uint64_t)p->round;
			DO(dsm_write(NODE, &p->w, t->dpage, t->doff + 8 * (uint32_t)p->round,
				     8, &v));
			p->pc = 1;
			return;
		case 1: /* the data out before the flag can be seen */
			DO(dsm_release(NODE, &p->w));
			p->pc = 2;
			return;
		case 2:
			v = 1;
			DO(dsm_write(NODE, &p->w, t->fpage, t->foff[p->round], 8, &v));
			p->pc = 3;
			return;
		case 3:
			SYNC(t->fpage, t->foff[p->round], DSM_WAKE, 1000, &p->old);
			t->woken += p->old;
			p->pc = 0;
			p->round++;
			return;
		}
	}
	switch (p->pc) {
	case 0:
		SYNC(t->fpage, t->foff[p->round], DSM_WAITEQ, 0, &p->old);
		p->pc = 1;
		return;
	case 1:
		DO(dsm_read(NODE, &p->w, t->fpage, t->foff[p->round], 8, p->buf));
		if (get64(p->buf) != 1)
			FAIL(s, "node %d thread %d returned from wait in round %d "
				"and reads the flag as %" PRIu64,
			     p->id, p->tid, p->round, get64(p->buf));
		p->pc = 2;
		return;
	case 2:
		DO(dsm_read(NODE, &p->w, t->dpage, t->doff + 8 * (uint32_t)p->round,
			    8, p->buf));
		if (get64(p->buf) != 100 + (uint64_t)p->round)
			FAIL(s, "node %d saw round %d's flag, data %" PRIu64, p->id,
			     p->round, get64(p->buf));
		p->pc = 0;
		p->round++;
		return;
	}
}

static uint64_t ww_woken;

static void ww_one(uint64_t seed)
{
	struct sim s;
	struct ww t;

	memset(&t, 0, sizeof t);
	sim_init(&s, seed, nodes_for(seed), ww_step, &t);
	t.producer = (int)below(&s, (unsigned)s.n);
	t.fpage = 1 + below(&s, NPAGES - 1);
	t.dpage = other_page(&s, &t.fpage, 1);
	t.foff[0] = 8 * below(&s, 256);
	t.foff[1] = 2048 + 8 * below(&s, 256);
	t.doff = 8 * below(&s, 500);
	sim_start_threads(&s, 1 + (int)(seed / 4 % 2));
	sim_run(&s);
	if (t.woken != (uint64_t)s.queued_total)
		FAIL(&s, "the wakes woke %" PRIu64 ", the homes queued %d",
		     t.woken, s.queued_total);
	ww_woken += t.woken;
	sim_close(&s);
}

static void test_sync_wait(void **state)
{
	(void)state;
	ww_woken = 0;
	each_seed(ww_one);
	print_message("%" PRIu64 " waiters queued and woken\n", ww_woken);
	assert_true(ww_woken > 0);
}

/* unlock of a word that is 0 is DSM_NOTLOCKED and changes nothing, at
 * the home and elsewhere; lock and unlock then work on it as usual. Each
 * thread has its own word. */
static void unl_step(struct sim *s, struct proc *p)
{
	struct lk *t = s->sc;
	uint32_t off = t->loff + 8 * (uint32_t)(p - s->proc);

	switch (p->pc) {
	case 0:
		DO_EXPECT(sync_call(s, p, t->lpage, off, DSM_UNLOCK, 0, &p->old),
			  DSM_NOTLOCKED);
		p->pc = 1;
		return;
	case 1:
		SYNC(t->lpage, off, DSM_LOCK, 0, &p->old);
		p->pc = 2;
		return;
	case 2:
		DO(dsm_read(NODE, &p->w, t->lpage, off, 8, p->buf));
		if (get64(p->buf) != 1)
			FAIL(s, "node %d locked its word and reads %" PRIu64, p->id,
			     get64(p->buf));
		p->pc = 3;
		return;
	case 3:
		SYNC(t->lpage, off, DSM_UNLOCK, 0, &p->old);
		p->pc = 4;
		return;
	case 4:
		DO_EXPECT(sync_call(s, p, t->lpage, off, DSM_UNLOCK, 0, &p->old),
			  DSM_NOTLOCKED);
		p->done = true;
		return;
	}
}

static void unl_one(uint64_t seed)
{
	struct sim s;
	struct lk t;

	sim_init(&s, seed, nodes_for(seed), unl_step, &t);
	lock_setup(&s, &t);
	sim_start_threads(&s, MAXT);
	sim_run(&s);
	for (int i = 0; i < s.nproc; i++)
		if (home64(&s, t.lpage, t.loff + 8 * (uint32_t)i) != 0)
			FAIL(&s, "word %d is not 0 after the run", i);
	sim_close(&s);
}

static void test_sync_unlock_unlocked(void **state)
{
	(void)state;
	each_seed(unl_one);
}

/* Callers blocked on other callers are told so: one thread takes a
 * mutex and stops holding it; every other one locks it, or waits on a
 * word nobody wakes. With nothing left in flight, each parked caller got
 * io.queued exactly once (a driver would now see all of them blocked on
 * one another: a deadlock) and none is counted as waiting for the
 * network. Then the holder comes back, wakes the waiters and unlocks:
 * each completes, lockers in FIFO order. */
struct stuck {
	struct lk lk;
	uint32_t woff;
	int holder;
	bool rescue;
};

static void stuck_step(struct sim *s, struct proc *p)
{
	struct stuck *t = s->sc;
	bool holder = p - s->proc == t->holder;

	if (holder) {
		switch (p->pc) {
		case 0:
			SYNC(t->lk.lpage, t->lk.loff, DSM_LOCK, 0, &p->old);
			p->pc = 1;
			return;
		case 1: /* parks "for good": only the test brings it back */
			if (!t->rescue) {
				p->parked = true;
				return;
			}
			SYNC(t->lk.lpage, t->woff, DSM_WAKE, 1000, &p->old);
			p->pc = 2;
			return;
		case 2:
			SYNC(t->lk.lpage, t->lk.loff, DSM_UNLOCK, 0, &p->old);
			p->done = true;
			return;
		}
	}
	if (p->pc == 0) {
		if (t->holder >= 0 && s->proc[t->holder].pc == 0)
			return; /* the holder goes first */
		if ((p - s->proc) % 2 == 0)
			SYNC(t->lk.lpage, t->lk.loff, DSM_LOCK, 0, &p->old);
		else
			SYNC(t->lk.lpage, t->woff, DSM_WAITEQ, 0, &p->old);
		p->pc = 1;
		return;
	}
	if ((p - s->proc) % 2 == 0)
		SYNC(t->lk.lpage, t->lk.loff, DSM_UNLOCK, 0, &p->old);
	p->done = true;
}

static void stuck_one(uint64_t seed)
{
	struct sim s;
	struct stuck t;

	sim_init(&s, seed, nodes_for(seed), stuck_step, &t);
	lock_setup(&s, &t.lk);
	t.woff = t.lk.loff + 8;
	t.rescue = false;
	s.fifo_lock = true;
	sim_start_threads(&s, 1 + (int)(seed / 4 % 2));
	t.holder = (int)below(&s, (unsigned)s.nproc);
	s.allow_stuck = true;
	sim_run(&s);
	for (int i = 0; i < s.nproc; i++) {
		struct proc *p = &s.proc[i];
		if (i == t.holder)
			continue;
		if (!p->parked || p->done)
			FAIL(&s, "node %d thread %d is not blocked", p->id, p->tid);
		if (p->queued != 1)
			FAIL(&s, "node %d thread %d blocked on another caller, "
				 "told queued %d times",
			     p->id, p->tid, p->queued);
	}
	if (s.nfifo != s.nproc - 1)
		FAIL(&s, "%d callers in the homes' queues, not %d", s.nfifo,
		     s.nproc - 1);
	t.rescue = true;
	s.allow_stuck = false;
	s.proc[t.holder].parked = false;
	sim_run(&s);
	if (s.nfifo != 0 || home64(&s, t.lk.lpage, t.lk.loff) != 0)
		FAIL(&s, "queues left after the rescue");
	sim_close(&s);
}

static void test_sync_queued(void **state)
{
	(void)state;
	each_seed(stuck_one);
}

/* ---- Frees at the home, and the home's mapping ---- */

/* A two-page block (pages b, b + 1, one home) and a page of two small
 * blocks (c: [0, 64) and [64, 128)), cached by every node; then one node
 * frees the large block and c's second block, checks what it sees at
 * once (its own copies dropped), frees them again (not a live block),
 * and raises a flag. Every other node, once it saw the flag (an atomic:
 * an acquire), is refused the large block's pages (unmapped) and c's
 * freed block (outside any live block), and still reads c's first. A
 * read-only page takes reads and refuses writes, atomics and locks
 * everywhere; a page never mapped refuses all. */
struct fr {
	int freer;
	uint64_t b, c, ro, un, fpage;
	uint32_t foff;
};

static void fr_step(struct sim *s, struct proc *p)
{
	struct fr *t = s->sc;
	uint64_t v = 1;
	const uint8_t *d;

	switch (p->pc) {
	case 0: /* cache everything */
		DO(dsm_read(NODE, &p->w, t->b, 0, 8, p->buf));
		if (get64(p->buf) != 77)
			FAIL(s, "node %d reads the block as %" PRIu64, p->id,
			     get64(p->buf));
		p->pc = 1;
		return;
	case 1:
		DO(dsm_read(NODE, &p->w, t->b + 1, 0, 8, p->buf));
		p->pc = 2;
		return;
	case 2:
		DO(dsm_map(NODE, &p->w, t->c, false, 64, 8, &d));
		p->pc = 3;
		return;
	case 3:
		DO_EXPECT(dsm_map(NODE, &p->w, t->c, false, 60, 8, &d), DSM_OUTSIDE);
		p->pc = 4;
		return;
	case 4: /* read-only: reads yes, the rest no */
		DO(dsm_read(NODE, &p->w, t->ro, 8, 8, p->buf));
		p->pc = 5;
		return;
	case 5:
		DO_EXPECT(dsm_write(NODE, &p->w, t->ro, 8, 8, &v), DSM_RDONLY);
		p->pc = 6;
		return;
	case 6:
		DO_EXPECT(dsm_atomic(NODE, &p->w, t->ro, 8, DSM_XADD, 1, 0, &p->old),
			  DSM_RDONLY);
		p->pc = 7;
		return;
	case 7:
		DO_EXPECT(sync_call(s, p, t->ro, 8, DSM_LOCK, 0, &p->old),
			  DSM_RDONLY);
		p->pc = 8;
		return;
	case 8: /* never mapped */
		DO_EXPECT(dsm_read(NODE, &p->w, t->un, 0, 8, p->buf), DSM_UNMAPPED);
		p->pc = 9;
		return;
	case 9:
		DO_EXPECT(dsm_atomic(NODE, &p->w, t->un, 0, DSM_XADD, 1, 0, &p->old),
			  DSM_UNMAPPED);
		p->pc = 10;
		return;
	case 10: /* a barrier: everyone has cached the pages */
		DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff + 8, DSM_XADD, 1, 0,
			      &p->old));
		p->pc = 11;
		return;
	case 11:
		DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff + 8, DSM_XADD, 0, 0,
			      &p->old));
		if (p->old == (uint64_t)s->n)
			p->pc = p->id == t->freer ? 20 : 30;
		return;
	/* The freer. */
	case 20:
		DO(dsm_free(NODE, &p->w, t->b, 0));
		p->pc = 21;
		return;
	case 21:
		DO(dsm_free(NODE, &p->w, t->c, 64));
		p->pc = 22;
		return;
	case 22: /* at once, with no fence: its own copies went */
		DO_EXPECT(dsm_read(NODE, &p->w, t->b + 1, 0, 8, p->buf),
			  DSM_UNMAPPED);
		p->pc = 23;
		return;
	case 23:
		DO_EXPECT(dsm_map(NODE, &p->w, t->c, false, 64, 8, &d), DSM_OUTSIDE);
		p->pc = 24;
		return;
	case 24:
		DO_EXPECT(dsm_free(NODE, &p->w, t->b, 0), DSM_NOTBLOCK);
		p->pc = 25;
		return;
	case 25:
		DO_EXPECT(dsm_free(NODE, &p->w, t->c, 64), DSM_NOTBLOCK);
		p->pc = 26;
		return;
	case 26:
		DO_EXPECT(dsm_free(NODE, &p->w, t->c, 8), DSM_NOTBLOCK);
		p->pc = 27;
		return;
	case 27:
		DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff, DSM_XCHG, 1, 0,
			      &p->old));
		p->done = true;
		return;
	/* Everyone else. */
	case 30:
		DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff, DSM_XADD, 0, 0,
			      &p->old));
		if (p->old == 1)
			p->pc = 31;
		return;
	case 31:
		DO_EXPECT(dsm_read(NODE, &p->w, t->b, 0, 8, p->buf), DSM_UNMAPPED);
		p->pc = 32;
		return;
	case 32:
		DO_EXPECT(dsm_map(NODE, &p->w, t->b + 1, false, 0, 8, &d),
			  DSM_UNMAPPED);
		p->pc = 33;
		return;
	case 33:
		DO_EXPECT(dsm_map(NODE, &p->w, t->c, false, 64, 8, &d), DSM_OUTSIDE);
		p->pc = 34;
		return;
	case 34:
		DO(dsm_map(NODE, &p->w, t->c, false, 0, 64, &d));
		p->done = true;
		return;
	}
}

static void fr_one(uint64_t seed)
{
	struct sim s;
	struct fr t;
	uint64_t used[4];
	uint64_t v = 77;

	sim_init(&s, seed, nodes_for(seed), fr_step, &t);
	t.b = 1 + below(&s, NPAGES - 2);
	s.homes[t.b + 1] = s.homes[t.b];
	s.large[t.b] = 2;
	used[0] = t.b;
	used[1] = t.b + 1;
	t.c = other_page(&s, used, 2);
	s.nlive[t.c] = 2;
	s.live[t.c][0] = (struct dsm_extent){0, 64};
	s.live[t.c][1] = (struct dsm_extent){64, 64};
	used[2] = t.c;
	t.ro = other_page(&s, used, 3);
	s.access[t.ro] = DSM_MAP_RO;
	used[3] = t.ro;
	t.un = other_page(&s, used, 4);
	s.access[t.un] = DSM_MAP_NONE;
	do
		t.fpage = 1 + below(&s, NPAGES - 1);
	while (s.access[t.fpage] != DSM_MAP_RW || t.fpage == t.b ||
	       t.fpage == t.b + 1 || t.fpage == t.c);
	t.foff = 8 * below(&s, 500);
	t.freer = (int)below(&s, (unsigned)s.n);
	sim_start(&s);
	assert_int_equal(dsm_home_load(s.node[s.homes[t.b]], t.b, 0, 8, &v), DSM_OK);
	sim_run(&s);
	if (s.frees != 2 || s.access[t.b] != DSM_MAP_NONE ||
	    s.access[t.b + 1] != DSM_MAP_NONE || s.nlive[t.c] != 1)
		FAIL(&s, "the homes' maps after the run are not as freed");
	sim_close(&s);
}

static void test_free_at_home(void **state)
{
	(void)state;
	each_seed(fr_one);
}

/* ---- Duplicates and sync ops ---- */

/* The mutex program on every thread, then a barrier of wait and wake
 * (the last to arrive sets the flag and wakes the rest), then one node
 * frees a block: the same master copies, maps and empty queues whether
 * messages come once, 40% twice, or all again at the end. */
struct syncmix {
	struct lk lk;
	uint64_t bpage, blk;
	uint32_t boff;
	int freer;
};

static void syncmix_step(struct sim *s, struct proc *p)
{
	struct syncmix *t = s->sc;
	uint64_t one = 1;

	if (p->pc < 100) {
		s->sc = &t->lk;
		slock_step(s, p);
		s->sc = t;
		if (p->done) {
			p->done = false;
			p->pc = 100;
		}
		return;
	}
	switch (p->pc) {
	case 100:
		DO(dsm_atomic(NODE, &p->w, t->bpage, t->boff, DSM_XADD, 1, 0,
			      &p->old));
		p->pc = p->old + 1 == (uint64_t)s->nproc ? 101 : 103;
		return;
	case 101: /* the last: the flag, then wake */
		DO(dsm_write(NODE, &p->w, t->bpage, t->boff + 8, 8, &one));
		p->pc = 102;
		return;
	case 102:
		SYNC(t->bpage, t->boff + 8, DSM_WAKE, 1000, &p->old);
		p->pc = 104;
		return;
	case 103:
		SYNC(t->bpage, t->boff + 8, DSM_WAITEQ, 0, &p->old);
		p->pc = 105;
		return;
	case 105:
		DO(dsm_read(NODE, &p->w, t->bpage, t->boff + 8, 8, p->buf));
		if (get64(p->buf) != 1)
			FAIL(s, "past the barrier with its flag 0");
		p->pc = 104;
		return;
	case 104:
		if (p - s->proc == t->freer)
			DO(dsm_free(NODE, &p->w, t->blk, 0));
		p->done = true;
		return;
	}
}

static void syncmix_run(uint64_t seed, unsigned dup_pct, bool replay,
			uint8_t *out, uint64_t *dups)
{
	struct sim s;
	struct syncmix t;
	uint64_t used[4];

	sim_init(&s, seed, nodes_for(seed), syncmix_step, &t);
	lock_setup(&s, &t.lk);
	used[0] = t.lk.lpage;
	used[1] = t.lk.xpage;
	used[2] = t.lk.ypage;
	t.bpage = other_page(&s, used, 3);
	used[3] = t.bpage;
	t.blk = other_page(&s, used, 4);
	s.large[t.blk] = 1;
	t.boff = 8 * below(&s, 500);
	s.dup_pct = dup_pct;
	s.record = replay;
	s.fifo_lock = true;
	sim_start_threads(&s, slock_threads(seed));
	t.freer = (int)below(&s, (unsigned)s.nproc);
	sim_run(&s);
	slock_check(&s, &t.lk);
	masters(&s, out);
	if (replay) {
		uint8_t *again = malloc((size_t)NPAGES * DSM_PAGE_SIZE);
		assert_non_null(again);
		sim_replay(&s);
		masters(&s, again);
		if (memcmp(again, out, (size_t)NPAGES * DSM_PAGE_SIZE) != 0)
			FAIL(&s, "delivering every message again changed memory");
		free(again);
		slock_check(&s, &t.lk);
	}
	if (s.frees != 1 || s.access[t.blk] != DSM_MAP_NONE)
		FAIL(&s, "the block was freed %d times", s.frees);
	*dups = 0;
	for (int i = 0; i < s.n; i++) {
		struct dsm_stats st;
		dsm_stats(s.node[i], &st);
		*dups += st.dups;
		if (st.malformed != 0 || st.refused != 0)
			FAIL(&s, "node %d dropped %" PRIu64 " malformed, %" PRIu64
				 " refused",
			     i, st.malformed, st.refused);
		for (size_t b = 0; b < s.node[i]->tab_cap; b++)
			for (struct dsm_page *pg = s.node[i]->tab[b]; pg != NULL;
			     pg = pg->hnext)
				if (pg->qhead != NULL || pg->holds != NULL)
					FAIL(&s, "node %d: a queue or a held reply "
						 "left on page %" PRIu64,
					     i, pg->page);
		if (s.node[i]->nacks != 0)
			FAIL(&s, "node %d waits for %zu acks", i, s.node[i]->nacks);
	}
	sim_close(&s);
}

static void syncdup_one(uint64_t seed)
{
	size_t size = (size_t)NPAGES * DSM_PAGE_SIZE;
	uint8_t *plain = malloc(size), *dup = malloc(size);
	uint64_t d0, d1;

	assert_non_null(plain);
	assert_non_null(dup);
	syncmix_run(seed, 0, false, plain, &d0);
	syncmix_run(seed, 40, true, dup, &d1);
	if (d0 != 0)
		FAIL_SEED(seed, "%" PRIu64 " duplicates without duplication", d0);
	if (memcmp(plain, dup, size) != 0)
		FAIL_SEED(seed, "memory after a run with duplicates differs");
	dup_total += d1;
	free(plain);
	free(dup);
}

static void test_sync_duplicates(void **state)
{
	(void)state;
	dup_total = 0;
	each_seed(syncdup_one);
	assert_true(dup_total > 0);
}

/* ---- Hostile bytes, API misuse ---- */

static void test_malformed(void **state)
{
	struct sim s;
	uint8_t buf[64];
	struct dsm_msg m = {.type = DSM_MSG_GET, .rid = 1, .page = 2};
	struct fl_buf b;
	struct dsm_stats st;

	(void)state;
	sim_init(&s, 1, 2, mp_step, NULL);
	s.homes[2] = 0;
	sim_start(&s);
	/* A good GET to node 0, then cuts and corruptions of it. */
	m.from = 1;
	fl_buf_init(&b);
	dsm__msg_encode(&m, &b);
	assert_int_equal(b.len, DSM_HEADER_SIZE);
	memcpy(buf, b.data, b.len);
	fl_buf_close(&b);
	dsm_deliver(s.node[0], 1, buf, DSM_HEADER_SIZE);
	dsm_stats(s.node[0], &st);
	assert_int_equal(st.malformed, 0);
	assert_int_equal(st.msgs_sent, 1); /* the PAGE */
	for (size_t len = 0; len < DSM_HEADER_SIZE; len++)
		dsm_deliver(s.node[0], 1, buf, len);
	dsm_deliver(s.node[0], 0, buf, DSM_HEADER_SIZE); /* from itself */
	buf[2] = 0; /* claims node 0 */
	dsm_deliver(s.node[0], 1, buf, DSM_HEADER_SIZE);
	buf[2] = 1;
	buf[0] = DSM_VERSION + 1; /* version */
	dsm_deliver(s.node[0], 1, buf, DSM_HEADER_SIZE);
	buf[0] = DSM_VERSION;
	buf[1] = 99; /* type */
	dsm_deliver(s.node[0], 1, buf, DSM_HEADER_SIZE);
	buf[1] = DSM_MSG_PAGE; /* a reply to the home, short */
	dsm_deliver(s.node[0], 1, buf, DSM_HEADER_SIZE);
	dsm_stats(s.node[0], &st);
	assert_int_equal(st.malformed, DSM_HEADER_SIZE + 5);
	assert_int_equal(st.msgs_sent, 1);
	/* Misuse is DSM_BAD, and touches nothing. */
	assert_int_equal(dsm_read(s.node[1], &s.proc[1].w, 2, 4090, 8, buf), DSM_BAD);
	assert_int_equal(dsm_atomic(s.node[1], &s.proc[1].w, 2, 4, DSM_XADD, 1, 0,
				    &m.old),
			 DSM_BAD);
	assert_int_equal(dsm_atomic(s.node[1], &s.proc[1].w, 2, 0, (enum dsm_op)7, 1, 0,
				    &m.old),
			 DSM_BAD);
	sim_close(&s);
}

static void test_diff_roundtrip(void **state)
{
	uint8_t twin[DSM_PAGE_SIZE], data[DSM_PAGE_SIZE], page[DSM_PAGE_SIZE];
	struct sim s;

	(void)state;
	sim_init(&s, 7, 2, mp_step, NULL);
	for (int round = 0; round < 200; round++) {
		struct fl_buf b;
		struct dsm_msg m = {.type = DSM_MSG_DIFF, .page = 3}, d;
		size_t changed, want = 0;
		for (int i = 0; i < DSM_PAGE_SIZE; i++)
			twin[i] = data[i] = (uint8_t)rnd(&s);
		for (int i = 0, n = (int)below(&s, 3000); i < n; i++)
			data[below(&s, DSM_PAGE_SIZE)] ^= (uint8_t)(1 + below(&s, 255));
		if (round == 0) /* every other byte: the most runs */
			for (int i = 0; i < DSM_PAGE_SIZE; i += 2)
				data[i] = (uint8_t)~twin[i];
		for (int i = 0; i < DSM_PAGE_SIZE; i++)
			want += twin[i] != data[i];
		fl_buf_init(&b);
		changed = dsm__diff_encode(twin, data, &b);
		assert_int_equal(changed, want);
		if (changed == 0) {
			fl_buf_close(&b);
			continue;
		}
		m.bytes = b.data;
		m.nbytes = b.len;
		{
			struct fl_buf e;
			fl_buf_init(&e);
			dsm__msg_encode(&m, &e);
			assert_int_equal(dsm__msg_decode(e.data, e.len, &d), 0);
			memcpy(page, twin, sizeof page);
			dsm__diff_apply(page, d.bytes, d.nbytes);
			assert_memory_equal(page, data, sizeof page);
			fl_buf_close(&e);
		}
		fl_buf_close(&b);
	}
	sim_close(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_diff_roundtrip),
	    cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_mp),
	    cmocka_unit_test(test_mp_threads),
	    cmocka_unit_test(test_threads_one_word),
	    cmocka_unit_test(test_counters),
	    cmocka_unit_test(test_lock),
	    cmocka_unit_test(test_false_sharing),
	    cmocka_unit_test(test_read_only),
	    cmocka_unit_test(test_duplicates),
	    cmocka_unit_test(test_sync_lock),
	    cmocka_unit_test(test_sync_wait),
	    cmocka_unit_test(test_sync_unlock_unlocked),
	    cmocka_unit_test(test_sync_queued),
	    cmocka_unit_test(test_free_at_home),
	    cmocka_unit_test(test_sync_duplicates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
