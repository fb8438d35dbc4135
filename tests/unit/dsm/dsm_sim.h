/* The deterministic simulator the DSM core's unit tests run on
 * (test_dsm.c: the protocol and the memory model; test_dsm_sync.c: sync
 * ops and frees at the home). test_dsm.c's opening comment says how it
 * schedules, delays, reorders and duplicates messages. */
#ifndef FLOCK_TESTS_UNIT_DSM_DSM_SIM_H
#define FLOCK_TESTS_UNIT_DSM_DSM_SIM_H

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
	/* A crash (crash >= 0): at tick @crash_at node @crash stops for
	 * good, what is in flight to or from it is dropped and so is what
	 * is sent to it later, and every other node is told
	 * (dsm_node_lost). Then DO ends a program whose call says DSM_LOST
	 * (its thread would fault). */
	int crash;
	uint64_t crash_at;
	bool crashed;
	int lost_calls;
};

#define FAIL(s, ...)                                                          \
	do {                                                                  \
		print_error("seed %" PRIu64 ": ", (s)->seed);                \
		fail_msg(__VA_ARGS__);                                        \
	} while (0)

static inline uint64_t rnd(struct sim *s)
{
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static inline unsigned below(struct sim *s, unsigned n)
{
	return (unsigned)(rnd(s) % n);
}

static inline int home_of(void *ctx, uint64_t page)
{
	struct sim *s = ctx;

	return s->homes[page % NPAGES];
}

static inline void push(struct msg **a, size_t *n, size_t *cap, struct msg m)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		*a = realloc(*a, *cap * sizeof **a);
		assert_non_null(*a);
	}
	(*a)[(*n)++] = m;
}

static inline struct msg copy_msg(int from, int to, uint64_t due, const void *p,
			   size_t len)
{
	struct msg m = {from, to, due, len, malloc(len)};

	assert_non_null(m.bytes);
	memcpy(m.bytes, p, len);
	return m;
}

static inline void enqueue(struct sim *s, int from, int to, const void *p, size_t len)
{
	/* One message in twenty is slow: ten times the usual delay. */
	unsigned span = below(s, 20) == 0 ? 10 * s->max_delay : s->max_delay;
	uint64_t due = s->now + 1 + below(s, span);

	push(&s->q, &s->nq, &s->capq, copy_msg(from, to, due, p, len));
}

/* ---- What the homes' queues do, seen from outside ---- */

static inline struct proc *proc_by_rid(struct sim *s, int node, uint64_t rid)
{
	for (int i = 0; i < s->nproc; i++)
		if (s->proc[i].id == node && s->proc[i].rid == rid && rid != 0)
			return &s->proc[i];
	return NULL;
}

/* @q's home queued it. */
static inline void fifo_add(struct sim *s, struct proc *q)
{
	if (q->qstate != 0)
		return; /* told again (a duplicate) */
	q->qstate = 1;
	s->fifo[s->nfifo++] = q;
	s->queued_total++;
}

/* @q's home answered it: with @fifo_lock, it must be the first of its
 * word's queue. */
static inline void fifo_grant(struct sim *s, struct proc *q)
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

static inline void io_queued(void *ctx, struct dsm_wait *w)
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

static inline void io_send(void *ctx, int to, const void *p, size_t len)
{
	struct nodectx *pr = ctx;
	struct sim *s = pr->s;
	struct dsm_msg m;
	struct proc *q;

	if (to < 0 || to >= s->n || to == pr->id)
		FAIL(s, "node %d sends to %d", pr->id, to);
	if (dsm__msg_decode(p, len, &m) != 0)
		FAIL(s, "node %d sent a message its own decoder refuses", pr->id);
	if (s->crashed && (to == s->crash || pr->id == s->crash)) {
		if (pr->id == s->crash)
			FAIL(s, "node %d sends after its crash", pr->id);
		return; /* into the void */
	}
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

static inline void io_wake(void *ctx, struct dsm_wait *w)
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

static inline enum dsm_access io_map(void *ctx, uint64_t page, struct dsm_extent *live,
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

static inline enum dsm_res io_free(void *ctx, uint64_t page, uint32_t off,
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

static inline void sim_init(struct sim *s, uint64_t seed, int n, step_fn *step,
		     void *sc)
{
	memset(s, 0, sizeof *s);
	s->seed = seed;
	s->rng = seed * 0x2545f4914f6cdd1dull + 1;
	s->n = n;
	s->dup_pct = 10;
	s->max_delay = 20;
	s->crash = -1;
	s->step = step;
	s->sc = sc;
	for (int i = 0; i < NPAGES; i++) {
		s->homes[i] = (int)below(s, (unsigned)n);
		s->access[i] = DSM_MAP_RW;
	}
}

/* Make the nodes (after the scenario set the homes it wants), each
 * running @threads programs. */
static inline void sim_start_threads(struct sim *s, int threads)
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

static inline void sim_start(struct sim *s)
{
	sim_start_threads(s, 1);
}

/* What the runs of one test added up to, printed after it. */
static struct dsm_stats total;
static uint64_t total_runs, total_ticks;

static inline void sim_close(struct sim *s)
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

static inline void deliver(struct sim *s, size_t i)
{
	struct msg m = s->q[i];

	s->q[i] = s->q[--s->nq];
	s->delivering = true;
	dsm_deliver(s->node[m.to], m.from, m.bytes, m.len);
	s->delivering = false;
	free(m.bytes);
}

/* Node s->crash stops: its programs end where they are, its messages
 * and those to it go, and the others are told. */
static inline void sim_crash(struct sim *s)
{
	s->crashed = true;
	for (int i = 0; i < s->nproc; i++)
		if (s->proc[i].id == s->crash) {
			s->proc[i].done = true;
			s->proc[i].parked = false;
		}
	for (size_t i = 0; i < s->nq;)
		if (s->q[i].from == s->crash || s->q[i].to == s->crash) {
			free(s->q[i].bytes);
			s->q[i] = s->q[--s->nq];
		} else {
			i++;
		}
	s->delivering = true; /* the wakes come as from a delivery */
	for (int j = 0; j < s->n; j++)
		if (j != s->crash)
			dsm_node_lost(s->node[j], s->crash);
	s->delivering = false;
}

static inline void sim_run(struct sim *s)
{
	for (uint64_t ticks = 0;; ticks++, s->now++) {
		int run[MAXN * MAXT], nrun = 0;
		size_t ndue = 0;
		bool alldone = true;

		if (s->crash >= 0 && !s->crashed && s->now >= s->crash_at)
			sim_crash(s);

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
static inline void sim_replay(struct sim *s)
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

static inline uint64_t seeds(void)
{
	const char *e = getenv("DSM_STRESS_SEEDS");

	return e != NULL && atoi(e) > 0 ? (uint64_t)atoi(e) : 200;
}

/* Run @one for each seed (or only DSM_SEED). */
static inline void each_seed(void (*one)(uint64_t seed))
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
		if (r_ == DSM_LOST && s->crashed) {                           \
			s->lost_calls++;                                      \
			p->done = true; /* it faults */                       \
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

static inline uint64_t get64(const uint8_t *b)
{
	return fl_load_u64(b);
}

static inline uint64_t home64(struct sim *s, uint64_t page, uint32_t off)
{
	const uint8_t *pg = dsm_home_page(s->node[s->homes[page]], page);

	return pg != NULL ? get64(pg + off) : 0;
}

static inline int nodes_for(uint64_t seed)
{
	return 2 + (int)(seed % (MAXN - 1));
}

/* A page not in @avoid[0..n). */
static inline uint64_t other_page(struct sim *s, const uint64_t *avoid, int n)
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

/* A lock's words (test_dsm.c's cas lock, test_dsm_sync.c's mutex). */
struct lk {
	uint64_t lpage, xpage, ypage;
	uint32_t loff, xoff, yoff;
	int owner;
};

static inline void lock_setup(struct sim *s, struct lk *t)
{
	t->owner = -1;
	t->lpage = 1 + below(s, NPAGES - 1);
	t->xpage = 1 + below(s, NPAGES - 1);
	t->ypage = 1 + below(s, NPAGES - 1);
	t->loff = 8 * below(s, 100);
	t->xoff = 800 + 8 * below(s, 100);
	t->yoff = 1600 + 8 * below(s, 100);
}

/* The master copies of every page, home by home. */
static inline void masters(struct sim *s, uint8_t *out)
{
	for (int pg = 0; pg < NPAGES; pg++) {
		const uint8_t *m = dsm_home_page(s->node[s->homes[pg]], (uint64_t)pg);
		if (m != NULL)
			memcpy(out + (size_t)pg * DSM_PAGE_SIZE, m, DSM_PAGE_SIZE);
		else
			memset(out + (size_t)pg * DSM_PAGE_SIZE, 0, DSM_PAGE_SIZE);
	}
}

#endif
