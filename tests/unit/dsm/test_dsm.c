/* Unit tests for src/dsm/: the DSM protocol core on a deterministic
 * simulator (dsm_sim.h; the sync ops at the home are test_dsm_sync.c's).
 *
 * The simulator runs N nodes (2..5) in this process. Each node runs one
 * or more threads (MAXT), each a small program, a state machine that
 * makes one DSM call per step and, on DSM_WAIT, parks until the core
 * wakes it (a wake of a node that is
 * not parked fails the test: the wake-once contract). Every message sent
 * is copied into a queue with a random delay (1..20 ticks) and, by
 * default, duplicated one time in ten; each tick the scheduler, from a
 * seeded PRNG, either delivers a random message that is due (so
 * messages are reordered freely) or steps a random runnable node. No
 * drops but a crash's. A run ends when every program finished and the queue is
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
 *    again with each node writing as the page source does, a copy of
 *    the page merged back with dsm_write_diff;
 *  - read-only and private pages survive acquires: one GET each;
 *  - an acquire is its caller's: a thread that has not acquired since
 *    keeps reading its node's copy while another thread there acquires,
 *    and fetches it again after its own;
 *  - a scan of one home's pages asks ahead (DSM_PREFETCH), each page
 *    fetched once a round, and reads after an acquire what was released
 *    before it;
 *  - duplicates change nothing: the same seeds with no duplication and
 *    with 40%, then every message of the run delivered once more, give
 *    the same master copies;
 *  - a node crashes at a seeded tick (what is in flight to or from it is
 *    dropped, the others are told, dsm_node_lost): nothing is left
 *    waiting on it, a call that needs it ends DSM_LOST, and each xadd on
 *    a total homed elsewhere applied once;
 * The homes' maps and allocators are the simulator's (io.map, io.free:
 * per page an access, live blocks, blocks of whole pages); pages no test
 * maps otherwise are writable with no live blocks kept. */
#include "dsm_sim.h"

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
	bool diff; /* as the page source writes: a copy, then its diff */
	uint8_t now[MAXN][DSM_PAGE_SIZE];
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
		if (t->diff) {
			/* the whole page as this node has it, its bytes
			 * changed in a copy, then only what differs */
			DO(dsm_read(NODE, &p->w, t->page, 0, DSM_PAGE_SIZE,
				    p->buf));
			memcpy(t->now[p->id], p->buf, DSM_PAGE_SIZE);
			for (int j = p->id; j < FS_BYTES; j += s->n)
				t->now[p->id][j] = fs_val(p->round, p->id);
			p->pc = 5;
			return;
		}
		v = fs_val(p->round, p->id);
		DO(dsm_write(NODE, &p->w, t->page,
			     (uint32_t)(p->id + p->i * s->n), 1, &v));
		if (p->id + ++p->i * s->n >= FS_BYTES)
			p->pc = 1;
		return;
	case 1:
		DO(dsm_release(NODE, &p->w));
		p->i = 0;
		if (t->diff) {
			p->pc = 6;
			return;
		}
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
	case 5: /* a while with the copy (others' diffs land meanwhile) */
		if (++p->i < 12)
			return;
		DO(dsm_write_diff(NODE, &p->w, t->page, t->now[p->id], p->buf));
		p->pc = 1;
		return;
	case 6: /* a barrier a round: the next round's copies are fresh,
		 * and the home's copy lives while the others' diffs land */
		DO(dsm_atomic(NODE, &p->w, t->bpage, t->boff ^ 8, DSM_XADD, 1, 0,
			      &p->old));
		p->pc = 7;
		return;
	case 7:
		DO(dsm_atomic(NODE, &p->w, t->bpage, t->boff ^ 8, DSM_XADD, 0, 0,
			      &p->old));
		if (p->old >= (uint64_t)s->n * (uint64_t)(p->round + 1))
			p->pc = ++p->round < FS_ROUNDS ? 0 : 2;
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
		/* No ping-pong: one fetch to write, one after the barrier
		 * (with a barrier a round, one a round and one after). */
		unsigned gets = t->diff ? FS_ROUNDS + 1 : 2;
		if (s->gets[i][t->page] != gets)
			FAIL(s, "node %d fetched the falsely shared page %u times, "
				"not %u",
			     i, s->gets[i][t->page], gets);
		if (st.diffs_sent != FS_ROUNDS || st.diff_bytes != FS_ROUNDS * mine)
			FAIL(s, "node %d sent %" PRIu64 " diffs of %" PRIu64
				" bytes, not %d of %u",
			     i, st.diffs_sent, st.diff_bytes, FS_ROUNDS,
			     FS_ROUNDS * mine);
	}
}

static void fs_run(uint64_t seed, bool diff)
{
	struct sim s;
	static struct fs t;

	sim_init(&s, seed, nodes_for(seed), fs_step, &t);
	t.diff = diff;
	fs_setup(&s, &t);
	sim_start(&s);
	sim_run(&s);
	fs_check_traffic(&s, &t);
	sim_close(&s);
}

static void fs_one(uint64_t seed)
{
	fs_run(seed, false);
}

/* Writers' copies merged with dsm_write_diff: the bytes a copy left
 * alone, stale there, must not overwrite the other nodes' bytes. */
static void fs_diff_one(uint64_t seed)
{
	fs_run(seed, true);
}

static void test_false_sharing(void **state)
{
	(void)state;
	each_seed(fs_one);
	each_seed(fs_diff_one);
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

/* ---- An acquire is its caller's ---- */

#define LZ_ACQS 5
#define LZ_READS 10

struct lz {
	int reader;		/* its thread 0 reads, thread 1 acquires */
	uint64_t page, fpage;	/* written at its home; the flag */
	uint32_t off, foff;
	uint64_t val;
	bool have, acquired;	/* the test's own, not the DSM's */
	unsigned gets;		/* the reader's GETs of @page before its acquire */
};

static void lz_step(struct sim *s, struct proc *p)
{
	struct lz *t = s->sc;
	int home = s->homes[t->page];

	if (p->id == home && p->tid == 0) {
		switch (p->pc) {
		case 0:
			DO(dsm_write(NODE, &p->w, t->page, t->off, 8, &t->val));
			p->pc = 1;
			return;
		case 1: /* a release first */
			DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff, DSM_XCHG, 1,
				      0, &p->old));
			p->done = true;
			return;
		}
	}
	if (p->id != t->reader || p->tid > 1) {
		p->done = true;
		return;
	}
	if (p->tid == 1) { /* acquires while the reader reads */
		if (!t->have)
			return;
		if (p->i < LZ_ACQS) {
			DO(dsm_acquire(NODE, &p->w));
			p->i++;
			return;
		}
		t->acquired = true;
		p->done = true;
		return;
	}
	switch (p->pc) {
	case 0: /* the flag (an acquire), then the page */
		DO(dsm_atomic(NODE, &p->w, t->fpage, t->foff, DSM_XADD, 0, 0,
			      &p->old));
		if (p->old == 1)
			p->pc = 1;
		return;
	case 1: /* reads with no fence of its own while thread 1 acquires */
		DO(dsm_read(NODE, &p->w, t->page, t->off, 8, p->buf));
		if (get64(p->buf) != t->val)
			FAIL(s, "the reader saw %" PRIx64 " after the flag, not %" PRIx64,
			     get64(p->buf), t->val);
		t->have = true;
		if (++p->i >= LZ_READS && t->acquired) {
			t->gets = s->gets[p->id][t->page];
			p->pc = 2;
		}
		return;
	case 2:
		DO(dsm_acquire(NODE, &p->w));
		p->pc = 3;
		return;
	case 3: /* now the copy is stale to it: fetched again */
		DO(dsm_read(NODE, &p->w, t->page, t->off, 8, p->buf));
		p->done = true;
		return;
	}
}

static void lz_one(uint64_t seed)
{
	struct sim s;
	struct lz t = {0};

	sim_init(&s, seed, nodes_for(seed), lz_step, &t);
	t.page = 1 + below(&s, NPAGES - 1);
	t.fpage = other_page(&s, &t.page, 1);
	t.off = 8 * below(&s, 512);
	t.foff = 8 * below(&s, 512);
	t.val = rnd(&s) | 1;
	t.reader = (s.homes[t.page] + 1 + (int)below(&s, (unsigned)s.n - 1)) % s.n;
	sim_start_threads(&s, 2);
	sim_run(&s);
	if (t.gets != 1)
		FAIL(&s, "node %d fetched the page %u times while another of its "
			 "threads acquired, not once",
		     t.reader, t.gets);
	if (s.gets[t.reader][t.page] != 2)
		FAIL(&s, "node %d fetched the page %u times in all, not twice (once "
			 "more after its reader's own acquire)",
		     t.reader, s.gets[t.reader][t.page]);
	sim_close(&s);
}

/* A thread's acquire drops its node's copies for that thread only: one
 * that has not acquired since goes on reading its copy (as lazily as
 * SPEC 3.1 allows), and fetches it again after an acquire of its own. */
static void test_lazy_acquire(void **state)
{
	(void)state;
	each_seed(lz_one);
}

/* ---- A scan asks ahead ---- */

#define SC_FIRST 8
#define SC_PAGES 16 /* pages SC_FIRST.. homed at one node */

struct sc {
	int home, reader;
	uint64_t fpage;		/* the flags: written v1, scanned, written v2 */
	uint64_t v[2];
};

static void sc_step(struct sim *s, struct proc *p)
{
	struct sc *t = s->sc;
	uint64_t page = SC_FIRST + (uint64_t)p->i;

	if (p->tid > 0 || (p->id != t->home && p->id != t->reader)) {
		p->done = true;
		return;
	}
	if (p->id == t->home) {
		switch (p->pc) {
		case 0: /* round's value into every page, then its flag */
		case 3:
			DO(dsm_write(NODE, &p->w, page, 8 * (uint32_t)p->i, 8,
				     &t->v[p->pc / 3]));
			if (++p->i == SC_PAGES) {
				p->i = 0;
				p->pc++;
			}
			return;
		case 1:
		case 4:
			DO(dsm_atomic(NODE, &p->w, t->fpage, p->pc == 1 ? 0 : 16,
				      DSM_XCHG, 1, 0, &p->old));
			p->pc = p->pc == 1 ? 2 : 5;
			if (p->pc == 5)
				p->done = true;
			return;
		case 2: /* the reader scanned once */
			DO(dsm_atomic(NODE, &p->w, t->fpage, 8, DSM_XADD, 0, 0,
				      &p->old));
			if (p->old == 1)
				p->pc = 3;
			return;
		}
		return;
	}
	switch (p->pc) {
	case 0: /* wait for round 0's flag, 2 for round 1's */
	case 2:
		DO(dsm_atomic(NODE, &p->w, t->fpage, p->pc == 0 ? 0 : 16, DSM_XADD,
			      0, 0, &p->old));
		if (p->old == 1) {
			p->k = p->pc / 2; /* the round */
			p->pc++;
		}
		return;
	case 1: /* the scan, in order */
	case 3:
		DO(dsm_read(NODE, &p->w, page, 8 * (uint32_t)p->i, 8, p->buf));
		if (get64(p->buf) != t->v[p->k])
			FAIL(s, "round %d: page %" PRIu64 " reads %" PRIx64 ", not %"
				PRIx64, p->k, page, get64(p->buf), t->v[p->k]);
		if (++p->i < SC_PAGES)
			return;
		p->i = 0;
		p->pc = p->pc == 1 ? 4 : 5;
		if (p->pc == 5)
			p->done = true;
		return;
	case 4: /* say so */
		DO(dsm_atomic(NODE, &p->w, t->fpage, 8, DSM_XCHG, 1, 0, &p->old));
		p->pc = 2;
		return;
	}
}

static void sc_one(uint64_t seed)
{
	struct sim s;
	struct sc t = {0};
	struct dsm_stats st;

	sim_init(&s, seed, nodes_for(seed), sc_step, &t);
	t.home = (int)below(&s, (unsigned)s.n);
	t.reader = (t.home + 1 + (int)below(&s, (unsigned)s.n - 1)) % s.n;
	for (int i = 0; i < SC_PAGES; i++)
		s.homes[SC_FIRST + i] = t.home;
	s.homes[SC_FIRST + SC_PAGES] = t.reader; /* the scan's end */
	t.fpage = 1;
	t.v[0] = rnd(&s) | 1;
	t.v[1] = t.v[0] + 1;
	sim_start_threads(&s, 1);
	sim_run(&s);
	dsm_stats(s.node[t.reader], &st);
	/* Each round: the first two pages are misses, the second starts a
	 * prefetch; later misses on a scanned run ask ahead again. Every
	 * page crossed once a round: no GET twice for one copy. */
	if (st.prefetched < SC_PAGES)
		FAIL(&s, "the reader asked ahead for %" PRIu64 " pages in two "
			 "scans of %d, not at least %d",
		     st.prefetched, SC_PAGES, SC_PAGES);
	for (int i = 0; i < SC_PAGES; i++)
		if (s.gets[t.reader][SC_FIRST + i] != 2)
			FAIL(&s, "the reader fetched page %d %u times, not twice",
			     SC_FIRST + i, s.gets[t.reader][SC_FIRST + i]);
	sim_close(&s);
}

/* A scan of a run of pages of one home asks for the next ones before it
 * reaches them; what it reads after an acquire is what was released
 * before it, prefetched copies included. */
static void test_prefetch(void **state)
{
	(void)state;
	each_seed(sc_one);
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

/* ---- A node crashes ---- */

#define CRASH_K 10

struct crash {
	uint64_t total, wpage[2], rpage;
	uint8_t seen[MAXN * CRASH_K];
	int ok[MAXN]; /* xadds on the total that returned */
};

/* Each node: write its word of a shared page, release, xadd the total,
 * read another page after an acquire; CRASH_K times. Any call may find
 * the crashed node was the home it needs: that program ends there. */
static void crash_step(struct sim *s, struct proc *p)
{
	struct crash *t = s->sc;
	uint64_t v = (uint64_t)p->k + 1;

	switch (p->pc) {
	case 0:
		DO(dsm_write(NODE, &p->w, t->wpage[p->k % 2],
			     8 * (uint32_t)(1 + p->id), 8, &v));
		p->pc = 1;
		return;
	case 1:
		DO(dsm_release(NODE, &p->w));
		p->pc = 2;
		return;
	case 2:
		DO(dsm_atomic(NODE, &p->w, t->total, 0, DSM_XADD, 1, 0, &p->old));
		if (p->old >= (uint64_t)s->n * CRASH_K || t->seen[p->old]++)
			FAIL(s, "xadd on the total returned %" PRIu64 " twice or "
				"out of range",
			     p->old);
		t->ok[p->id]++;
		p->pc = 3;
		return;
	case 3:
		DO(dsm_acquire(NODE, &p->w));
		p->pc = 4;
		return;
	case 4:
		DO(dsm_read(NODE, &p->w, t->rpage, 0, 8, p->buf));
		p->pc = 0;
		if (++p->k == CRASH_K)
			p->done = true;
		return;
	}
}

static uint64_t crash_lost_calls, crash_runs_lost;

static void crash_one(uint64_t seed)
{
	struct sim s;
	struct crash t;
	int ok = 0;

	memset(&t, 0, sizeof t);
	sim_init(&s, seed, nodes_for(seed), crash_step, &t);
	t.total = 1 + below(&s, NPAGES - 1);
	t.wpage[0] = 1 + below(&s, NPAGES - 1);
	t.wpage[1] = 1 + below(&s, NPAGES - 1);
	t.rpage = 1 + below(&s, NPAGES - 1);
	s.crash = (int)below(&s, (unsigned)s.n);
	s.crash_at = below(&s, 1500);
	sim_start(&s);
	sim_run(&s); /* no survivor left parked: sim_run fails on that */
	for (int i = 0; i < s.n; i++)
		if (i != s.crash)
			ok += t.ok[i];
	/* The total, if its home lives: every xadd that returned was
	 * applied once, and at most the crashed node's one in flight more
	 * (duplicates of a request apply once). */
	if (s.homes[t.total] != s.crash) {
		uint64_t got = home64(&s, t.total, 0);
		if (got < (uint64_t)(ok + t.ok[s.crash]) ||
		    got > (uint64_t)(ok + t.ok[s.crash] + 1))
			FAIL(&s, "total %" PRIu64 " after %d xadds returned", got,
			     ok + t.ok[s.crash]);
	}
	crash_lost_calls += (uint64_t)s.lost_calls;
	crash_runs_lost += s.lost_calls > 0;
	sim_close(&s);
}

static void test_crash(void **state)
{
	(void)state;
	crash_lost_calls = crash_runs_lost = 0;
	each_seed(crash_one);
	print_message("%" PRIu64 " calls ended DSM_LOST, in %" PRIu64 " runs\n",
		      crash_lost_calls, crash_runs_lost);
	assert_true(crash_runs_lost > 0); /* crashes did cut calls short */
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
	    cmocka_unit_test(test_lazy_acquire),
	    cmocka_unit_test(test_prefetch),
	    cmocka_unit_test(test_duplicates),
	    cmocka_unit_test(test_crash),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
