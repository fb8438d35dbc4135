/* Unit tests for src/dsm/: sync ops and frees at the home, on the
 * simulator of dsm_sim.h (test_dsm.c says how it runs; 200 seeds a test,
 * DSM_STRESS_SEEDS=N runs N, DSM_SEED=S only seed S):
 *
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
 *    duplication and with every message delivered again. */
#include "dsm_sim.h"

static uint64_t dup_total;

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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sync_lock),
	    cmocka_unit_test(test_sync_wait),
	    cmocka_unit_test(test_sync_unlock_unlocked),
	    cmocka_unit_test(test_sync_queued),
	    cmocka_unit_test(test_free_at_home),
	    cmocka_unit_test(test_sync_duplicates),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
