/* The peer over messages: dist.h says what it does; this is how.
 *
 * State and locks: @dlock is held for a whole delivery and by close, so
 * the process outlives every delivery that started; @lock guards the
 * tables below it and is never held across a call into the VM that may
 * call back (an op). A delivery that may make threads run (the counted
 * types) raises the process's busy count under @lock, after checking
 * that the process has not ended here (@dropping, which the ended op
 * sets under @lock): since whatever ends a process holds a share of
 * that count or is this delivery thread, the count never rises again
 * from 0 after the end, when the process may be freed. Its fall at the
 * delivery's end is what lets an idle part report itself idle.
 *
 * Tables: joins this part asked (request id -> the parked thread) and
 * joins it owes (thread id -> the asking part and its request id):
 * short lists, searched linearly. Lent pages: hash maps, in
 * dist_lend.c; a page is never freed under @lock (its last reference
 * may let a borrow go, which takes @lock). */
#include "dist/dist_int.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Tables ---- */

static bool table_put(struct table *tb, struct entry e)
{
	if (tb->n == tb->cap) {
		size_t cap = tb->cap ? 2 * tb->cap : 16;
		struct entry *v = realloc(tb->v, cap * sizeof *v);
		if (v == NULL)
			return false;
		tb->v = v;
		tb->cap = cap;
	}
	tb->v[tb->n++] = e;
	return true;
}

/* Remove the entry of @key into *@out; false when there is none. */
static bool table_take(struct table *tb, uint64_t key, struct entry *out)
{
	for (size_t i = 0; i < tb->n; i++)
		if (tb->v[i].key == key) {
			*out = tb->v[i];
			tb->v[i] = tb->v[--tb->n];
			return true;
		}
	return false;
}

/* ---- Sending ---- */

void dist__start(struct fl_buf *b, unsigned type)
{
	fl_buf_init(b);
	fl_buf_put_u8(b, DIST_VERSION);
	fl_buf_put_u8(b, (uint8_t)type);
}

/* Send @b (then closed) to @to; false when building it ran out of
 * memory (nothing sent). */
bool dist__send_buf(struct dist_part *d, int to, struct fl_buf *b)
{
	bool ok = !fl_buf_failed(b);

	if (ok) {
		if (counted(b->data[1]) && to >= 0 && to < d->cfg.nparts)
			atomic_fetch_add(&d->sent_to[to], 1);
		pthread_mutex_lock(&d->lock);
		d->st.msgs_sent++;
		d->st.bytes_sent += b->len;
		pthread_mutex_unlock(&d->lock);
		d->cfg.send(d->cfg.send_ctx, to, b->data, b->len);
	}
	fl_buf_close(b);
	return ok;
}

static void send_end(struct dist_part *d, int to, int status, const char *line)
{
	struct fl_buf b;
	size_t n = line != NULL ? strnlen(line, LINE_MAX_BYTES) : 0;

	dist__start(&b, M_END);
	fl_buf_put_u8(&b, (uint8_t)status);
	fl_buf_put_u32(&b, (uint32_t)n);
	fl_buf_put(&b, line, n);
	dist__send_buf(d, to, &b);
}

static void send_simple(struct dist_part *d, int to, unsigned type)
{
	struct fl_buf b;

	dist__start(&b, type);
	dist__send_buf(d, to, &b);
}

/* Threads of this node running or queued, the process's threads parked
 * on a reply from another machine (a page on its way: they run again at
 * once, so a part whose threads all wait for pages is not idle), and its
 * cores. */
static void node_load(const struct dist_part *d, uint32_t *load,
		      uint32_t *cpus)
{
	const struct vm_node *n = d->p->node;
	struct vm_gsrc *gs = d->p->gs;
	int64_t q = atomic_load(&n->nqueued);
	int w = atomic_load(&n->nworkers), idle = atomic_load(&n->nidle);
	uint32_t waiting = gs != NULL && gs->ops->waiting != NULL
				   ? gs->ops->waiting(gs)
				   : 0;

	*cpus = w > 0 ? (uint32_t)w : 1;
	*load = (uint32_t)((q > 0 ? q : 0) + (w > idle ? w - idle : 0)) +
		waiting;
}

/* STEAL or BALANCE: this node's load and cores. */
static void send_load(struct dist_part *d, int to, unsigned type)
{
	struct fl_buf b;
	uint32_t load, cpus;

	node_load(d, &load, &cpus);
	dist__start(&b, type);
	fl_buf_put_u32(&b, load);
	fl_buf_put_u32(&b, cpus);
	dist__send_buf(d, to, &b);
}

/* What @from's STEAL or BALANCE says of it; false when malformed. */
static bool heard_load(struct dist_part *d, int from, struct fl_reader *r,
		       uint32_t *load, uint32_t *cpus)
{
	*load = fl_get_u32(r);
	*cpus = fl_get_u32(r);
	if (r->failed || fl_reader_left(r) != 0 || *cpus == 0 ||
	    *load == UINT32_MAX) {
		dist__malformed(d);
		return false;
	}
	atomic_store(&d->cpus_of[from], *cpus);
	atomic_store(&d->est[from], *load);
	if (*load >= *cpus) /* a thread a core or more: it starves no more */
		atomic_fetch_and(&d->starving, ~(1ull << from));
	return true;
}

/* @part asked and got NOTHING, as of now. */
static void mark_starving(struct dist_part *d, int part)
{
	atomic_store(&d->starved_ns[part], vm__now());
	atomic_fetch_or(&d->starving, 1ull << part);
}

/* Move threads @ts (out of any queue, counted in nbusy, their writes
 * released) to part @to, for @why, and free them here. False when out
 * of memory for their state: nothing moved. */
static bool ship(struct dist_part *d, int to, struct vm_thread **ts, size_t n,
		 enum dist_why why)
{
	struct vm_proc *p = d->p;
	struct lend_ctx lc = {.d = d, .to = to};
	const struct vm_lending lend = {.ctx = &lc, .threshold = LEND_MIN_BYTES,
					.lend = dist__lend_page, .home = dist__home_page};
	struct fl_buf b;
	uint64_t xfer, dtid, dfaults;
	size_t len;
	bool lost;

	pthread_mutex_lock(&d->lock);
	xfer = ++d->next_xfer;
	lost = (d->lost & (1ull << to)) != 0;
	pthread_mutex_unlock(&d->lock);
	if (lost) /* it would never arrive: the threads stay */
		return false;
	/* For ps -v: the last thread that left for its data, with its
	 * faults on pages homed there (0: placed there at its spawn). */
	dtid = ts[0]->tid;
	dfaults = ts[0]->fault_votes;
	dist__start(&b, M_MOVE);
	fl_buf_put_u64(&b, xfer);
	len = b.len;
	if (fl_buf_failed(&b) || vm__threads_encode_lent(ts, n, &b, &lend) != 0) {
		fl_buf_close(&b);
		return false;
	}
	/* Each thread's share of the busy count goes as it leaves, and its
	 * memory is the process's until it is freed: a share of our own
	 * (the threads' keep the count up to here) holds the process up
	 * till then, or it could end (the threads may end it where they
	 * arrive) and be freed under us. */
	vm__proc_busy_inc(p);
	/* A census sees them here or in the message (dist_census.c). */
	if (d->cfg.survive)
		pthread_rwlock_rdlock(&p->depart);
	for (size_t i = 0; i < n; i++)
		if (!vm__thread_emigrate(p, ts[i]))
			vm__proc_end_line(p, 70, "flock: out of memory (a thread "
						 "leaving for another machine)\n");
	pthread_mutex_lock(&d->lock);
	d->st.moved_out += n;
	d->st.out_why[why] += n;
	d->st.move_bytes += b.len - len;
	if (why == DIST_WHY_DATA) { /* before it can arrive and end */
		d->st.data_tid = dtid;
		d->st.data_to = to;
		d->st.data_faults = dfaults;
	}
	pthread_mutex_unlock(&d->lock);
	dist__send_buf(d, to, &b);
	if (d->cfg.survive)
		pthread_rwlock_unlock(&p->depart);
	for (size_t i = 0; i < n; i++)
		vm__thread_free(ts[i]);
	dist__flush_releases(d, true);
	vm__proc_busy_dec(p); /* last: it may free the process */
	return true;
}

/* ---- Stealing ---- */

/* The next part of @mask after @after, in turn; -1 when none. */
static int next_in(const struct dist_part *d, uint64_t mask, int after)
{
	for (int i = 1; i <= d->cfg.nparts; i++) {
		int k = (after + i) % d->cfg.nparts;
		if (mask & (1ull << k))
			return k;
	}
	return -1;
}

/* Idle here: the part to ask for threads (a STEAL, or a DONE that asks
 * too), from @first (or the next in turn when -1) -- after an empty
 * round, for a while only those that did not answer NOTHING
 * (STEAL_BACKOFF_*); @first is asked all the same. -1: none now (one
 * is out, or every one knows). */
static int steal_pick(struct dist_part *d, int first)
{
	uint64_t all = (d->cfg.nparts == 64 ? ~0ull
					     : (1ull << d->cfg.nparts) - 1) &
		       ~(1ull << d->cfg.self);
	int to;

	if (d->cfg.nparts < 2)
		return -1;
	pthread_mutex_lock(&d->lock);
	if (d->stealing || d->dropping) {
		pthread_mutex_unlock(&d->lock);
		return -1;
	}
	d->round = all & ~d->lost;
	if (d->backoff_ns != 0 &&
	    vm__now() - d->empty_ns < d->backoff_ns)
		d->round &= ~d->answered_empty;
	if (first >= 0 && first != d->cfg.self &&
	    !(d->lost & (1ull << first))) {
		d->round |= 1ull << first;
		to = first;
	} else {
		to = next_in(d, d->round, d->victim);
	}
	if (to < 0) { /* every one knows: wait for their pushes */
		pthread_mutex_unlock(&d->lock);
		return -1;
	}
	d->stealing = true;
	d->victim = to;
	d->round &= ~(1ull << to);
	d->st.steals++;
	pthread_mutex_unlock(&d->lock);
	return to;
}

/* steal_pick, and the STEAL to the part it picked. */
static void steal_from(struct dist_part *d, int first)
{
	int to = steal_pick(d, first);

	if (to >= 0)
		send_load(d, to, M_STEAL);
}

static void steal(struct dist_part *d)
{
	steal_from(d, -1);
}

/* A timer of @d fired: @dlock taken (the process outlives the callback,
 * as it does a delivery), *@armed cleared; true unless the part is closed
 * or its process ended here. The callback then calls fired_end. */
static bool fired(struct dist_part *d, bool *armed)
{
	bool open;

	pthread_mutex_lock(&d->dlock);
	pthread_mutex_lock(&d->lock);
	*armed = false;
	open = !d->closed && !d->dropping;
	pthread_mutex_unlock(&d->lock);
	return open;
}

/* The end of a timer's callback: @dlock and the timer's reference go. */
static void fired_end(struct dist_part *d)
{
	pthread_mutex_unlock(&d->dlock);
	dist_unref(d);
}

static void steal_fire(struct vm_node *n, struct vm_event *ev)
{
	struct dist_part *d = (struct dist_part *)((char *)ev -
		offsetof(struct dist_part, steal_tm.ev));

	(void)n;
	/* still idle: nothing here runs, nothing came */
	if (fired(d, &d->steal_armed) && atomic_load(&d->p->nbusy) == 0)
		steal(d);
	fired_end(d);
}

/* An empty round ended while this part is idle: a full one once the
 * backoff passed. Under @lock; true: the caller arms @steal_tm once it
 * let go of @lock (a reference is taken for it). */
static bool steal_later(struct dist_part *d)
{
	if (d->steal_armed || d->dropping || d->closed ||
	    atomic_load(&d->p->nbusy) != 0)
		return false;
	d->steal_armed = true;
	atomic_fetch_add(&d->refs, 1);
	return true;
}

/* ---- Balancing ---- */

static void balance_fire(struct vm_node *n, struct vm_event *ev)
{
	struct dist_part *d = (struct dist_part *)((char *)ev -
		offsetof(struct dist_part, balance_tm.ev));
	uint64_t all = (d->cfg.nparts == 64 ? ~0ull
					     : (1ull << d->cfg.nparts) - 1) &
		       ~(1ull << d->cfg.self);
	bool ask, closed;
	uint64_t next;
	int to = -1;

	/* @dlock: the process outlives this, as it does a delivery */
	pthread_mutex_lock(&d->dlock);
	pthread_mutex_lock(&d->lock);
	d->balance_armed = false;
	closed = d->closed || d->dropping;
	/* Running threads, none waiting: others may have more. */
	ask = !closed && atomic_load(&d->p->nbusy) > 0 &&
	      atomic_load(&n->nqueued) == 0;
	if (ask && !d->stealing && (all & ~d->lost) != 0) {
		to = d->balance_victim = next_in(d, all & ~d->lost,
						 d->balance_victim);
		next = d->balance_ns;
		d->balance_ns = next >= BALANCE_MAX_NS / 2 ? BALANCE_MAX_NS
							   : 2 * next;
	} else {
		/* idle (it steals) or loaded: look again soon, cheaply */
		next = !closed && atomic_load(&d->p->nbusy) > 0
			       ? BALANCE_MIN_NS
			       : BALANCE_MAX_NS;
	}
	if (!closed) {
		d->balance_armed = true;
		atomic_fetch_add(&d->refs, 1);
	}
	pthread_mutex_unlock(&d->lock);
	if (to >= 0)
		send_load(d, to, M_BALANCE);
	if (!closed)
		vm_node_timer_start(n, &d->balance_tm, next);
	pthread_mutex_unlock(&d->dlock);
	dist_unref(d);
}

/* @from runs @load threads on @cpus cores and has none waiting: send it
 * enough of ours that both have about as many a core. */
static void on_balance(struct dist_part *d, int from, struct fl_reader *r)
{
	struct vm_thread *ts[STEAL_MAX];
	uint32_t load, cpus, mine, mycpus;
	int64_t q = atomic_load(&d->p->node->nqueued), k;
	size_t got;

	if (!heard_load(d, from, r, &load, &cpus))
		return;
	node_load(d, &mine, &mycpus);
	/* k moved evens mine/mycpus and load/cpus: k = (mine * cpus -
	 * load * mycpus) / (cpus + mycpus), rounded down. */
	k = ((int64_t)mine * cpus - (int64_t)load * mycpus) /
	    ((int64_t)cpus + mycpus);
	if (k > q)
		k = q;
	if (k > STEAL_MAX)
		k = STEAL_MAX;
	if (k < 1)
		return;
	got = vm__sched_take(d->p, true, ts, (size_t)k);
	if (got < (size_t)k)
		got += vm__sched_take(d->p, false, ts + got, (size_t)k - got);
	if (got > 0 && ship(d, from, ts, got, DIST_WHY_BALANCE)) {
		atomic_fetch_add(&d->est[from], (uint32_t)got);
		return;
	}
	for (size_t i = 0; i < got; i++) /* could not: they stay */
		vm__sched_push(d->p->node, NULL, ts[i]);
}

/* ---- Deadlock waves (the origin) ---- */

/* This part's answer to a wave that leaves out the parts in @except. */
static void report_here(struct dist_part *d, uint64_t except,
			struct report *r)
{
	uint64_t s = 0, v = 0;

	r->passive = vm__proc_idle(d->p);
	if (d->cfg.counters != NULL)
		d->cfg.counters(d->cfg.counters_ctx, except, &s, &v);
	r->sent = s;
	r->recv = v;
	for (int i = 0; i < d->cfg.nparts; i++)
		if (!(except & (1ull << i))) {
			r->sent += atomic_load(&d->sent_to[i]);
			r->recv += atomic_load(&d->recv_from[i]);
		}
	r->live = vm__proc_live_threads(d->p);
	pthread_mutex_lock(&d->lock);
	r->lost = d->lost;
	pthread_mutex_unlock(&d->lock);
}

static void evaluate(struct dist_part *d);
static void start_wave(struct dist_part *d);

static void wave_fire(struct vm_node *n, struct vm_event *ev)
{
	struct dist_part *d = (struct dist_part *)((char *)ev -
		offsetof(struct dist_part, wave_tm.ev));
	bool closed;

	(void)n;
	pthread_mutex_lock(&d->dlock);
	pthread_mutex_lock(&d->lock);
	d->wave_armed = false;
	closed = d->closed;
	pthread_mutex_unlock(&d->lock);
	if (!closed)
		start_wave(d);
	pthread_mutex_unlock(&d->dlock);
	dist_unref(d);
}

/* A part fell idle: run a wave soon, unless one is due already. */
static void wave_soon(struct dist_part *d)
{
	pthread_mutex_lock(&d->lock);
	if (d->wave_armed || d->dropping) {
		pthread_mutex_unlock(&d->lock);
		return;
	}
	d->wave_armed = true;
	atomic_fetch_add(&d->refs, 1);
	pthread_mutex_unlock(&d->lock);
	vm_node_timer_start(d->p->node, &d->wave_tm, WAVE_DELAY_NS);
}

/* The answers a wave that leaves out @lost (never this part) waits
 * for: every other part's. */
static int wave_answers(const struct dist_part *d, uint64_t lost)
{
	return d->cfg.nparts - 1 - __builtin_popcountll(lost);
}

static void start_wave(struct dist_part *d)
{
	struct report here;
	struct fl_buf b;
	uint64_t wave, lost;

	pthread_mutex_lock(&d->lock);
	if (d->dropping) {
		pthread_mutex_unlock(&d->lock);
		return;
	}
	if (d->wave_on) {
		d->again = true;
		pthread_mutex_unlock(&d->lock);
		return;
	}
	d->wave_on = true;
	d->again = false;
	wave = ++d->wave;
	d->st.waves++;
	d->replies = 0;
	memset(d->got, 0, sizeof d->got);
	/* Lost parts are not asked, and what went to or came from them is
	 * not counted (dist.h, "Survive"). */
	lost = d->wave_lost = d->lost;
	pthread_mutex_unlock(&d->lock);
	report_here(d, lost, &here);
	pthread_mutex_lock(&d->lock);
	d->cur[d->cfg.self] = here;
	pthread_mutex_unlock(&d->lock);
	for (int i = 0; i < d->cfg.nparts; i++) {
		if (i == d->cfg.self || (lost & (1ull << i)))
			continue;
		dist__start(&b, M_PROBE);
		fl_buf_put_u64(&b, wave);
		fl_buf_put_u64(&b, lost);
		dist__send_buf(d, i, &b);
	}
	if (wave_answers(d, lost) == 0)
		evaluate(d);
}

/* Every part answered the wave: is this the end? */
static void evaluate(struct dist_part *d)
{
	uint64_t sent = 0, recv = 0, live = 0;
	bool passive = true, behind = false, same, rerun, again;

	pthread_mutex_lock(&d->lock);
	same = d->prev_ok;
	for (int i = 0; i < d->cfg.nparts; i++) {
		const struct report *c = &d->cur[i], *q = &d->prev[i];
		bool knows = c->lost == d->wave_lost;
		if (d->wave_lost & (1ull << i))
			continue;
		/* a part that has not heard of a loss yet may still take
		 * what the lost one sent: not conclusive, ask again soon */
		behind |= !knows;
		passive &= c->passive && knows;
		sent += c->sent;
		recv += c->recv;
		live += c->live;
		same &= q->passive == c->passive && q->sent == c->sent &&
			q->recv == c->recv && q->lost == c->lost;
	}
	d->wave_on = false;
	if (passive && same && sent == recv) {
		/* Twice idle everywhere, nothing sent or received between,
		 * nothing on its way: blocked for good. */
		pthread_mutex_unlock(&d->lock);
		vm__proc_busy_inc(d->p);
		vm__proc_deadlock(d->p, live);
		vm__proc_busy_dec(d->p);
		return;
	}
	d->prev_ok = passive;
	memcpy(d->prev, d->cur, sizeof d->prev);
	/* Idle everywhere once: confirm with another wave at once. */
	rerun = passive;
	again = d->again || behind;
	pthread_mutex_unlock(&d->lock);
	if (rerun)
		start_wave(d);
	else if (again)
		wave_soon(d);
}

/* ---- The ops ---- */

static void op_move(struct vm_peer *pe, struct vm_worker *w,
		    struct vm_thread *t, int to)
{
	struct dist_part *d = part_of(pe);
	bool data = t->move_why == VM_MOVE_DATA;
	bool lost;

	(void)w;
	pthread_mutex_lock(&d->lock);
	lost = (d->lost & (1ull << to)) != 0;
	pthread_mutex_unlock(&d->lock);
	if (lost && data) {
		/* Its data's machine was lost: it stays, and faults there */
		t->fault_votes = t->faults = 0;
		vm__sched_push(d->p->node, NULL, t);
	} else if (!ship(d, to, &t, 1, data ? DIST_WHY_DATA : DIST_WHY_STDIO)) {
		char msg[96], m[24];
		dist__machine(d, to, m, sizeof m);
		snprintf(msg, sizeof msg,
			 "out of memory (moving the thread to %s)", m);
		vm__proc_fail(d->p, t, t->pc, msg);
		vm__proc_busy_dec(d->p);
	}
}

static void op_join(struct vm_peer *pe, struct vm_thread *t, vm_word tid)
{
	struct dist_part *d = part_of(pe);
	struct fl_buf b;
	uint64_t req;
	bool ok, lost;
	int home = vm_peer_home(pe, vm_gslot(tid));

	pthread_mutex_lock(&d->lock);
	req = ++d->next_req;
	lost = home >= 0 && home < d->cfg.nparts &&
	       (d->lost & (1ull << home)) != 0;
	ok = lost || table_put(&d->asked, (struct entry){.key = req, .t = t});
	d->st.remote_joins++;
	pthread_mutex_unlock(&d->lock);
	if (lost) { /* its entry was there */
		if (d->cfg.survive)
			vm__resume(NULL, t, 0, (vm_word)-(int64_t)FL_ELOST);
		else
			vm__resume(NULL, t, FL_EPIPE, 0);
		return;
	}
	if (!ok) {
		vm__resume(NULL, t, FL_ENOMEM, 0);
		return;
	}
	dist__start(&b, M_JOIN);
	fl_buf_put_u64(&b, req);
	fl_buf_put_u64(&b, tid);
	dist__send_buf(d, home, &b);
}

static void op_done(struct vm_peer *pe, vm_word tid, vm_word r)
{
	struct dist_part *d = part_of(pe);
	int home = vm_peer_home(pe, vm_gslot(tid)), to = -1;
	uint32_t load, cpus;
	struct fl_buf b;

	/* Nothing else to run here: the DONE asks its home for work too
	 * (this part's load after it, as a STEAL would), so that the home
	 * knows before the join it wakes spawns again. Not "the busy count
	 * is 1": the message that brought the thread may still hold a
	 * share of it while a short thread ends. */
	if (atomic_load(&d->p->node->nqueued) == 0)
		to = steal_pick(d, home);
	dist__start(&b, M_DONE);
	fl_buf_put_u64(&b, tid);
	fl_buf_put_u64(&b, r);
	if (to == home) {
		node_load(d, &load, &cpus);
		fl_buf_put_u32(&b, load);
		fl_buf_put_u32(&b, cpus);
	}
	dist__send_buf(d, home, &b);
}

static void send_join_reply(struct dist_part *d, int to, uint64_t req,
			    uint8_t status, vm_word r)
{
	struct fl_buf b;

	dist__start(&b, M_JOIN_REPLY);
	fl_buf_put_u64(&b, req);
	fl_buf_put_u8(&b, status);
	fl_buf_put_u64(&b, r);
	dist__send_buf(d, to, &b);
}

static void op_joined(struct vm_peer *pe, vm_word tid, vm_word r)
{
	struct dist_part *d = part_of(pe);
	struct entry e;
	bool found;

	pthread_mutex_lock(&d->lock);
	found = table_take(&d->owed, tid, &e);
	pthread_mutex_unlock(&d->lock);
	if (found)
		send_join_reply(d, e.part, e.req, 0, r);
}

static void op_ended(struct vm_peer *pe, int status, const char *line)
{
	struct dist_part *d = part_of(pe);
	bool told;

	pthread_mutex_lock(&d->lock);
	d->dropping = true;
	told = d->told_end;
	pthread_mutex_unlock(&d->lock);
	dist__lent_wake_all(d);
	if (d->cfg.self == d->cfg.origin) {
		for (int i = 0; i < d->cfg.nparts; i++)
			if (i != d->cfg.self)
				send_end(d, i, status, NULL);
	} else if (!told) {
		send_end(d, d->cfg.origin, status, line);
	}
}

static void op_idle(struct vm_peer *pe)
{
	struct dist_part *d = part_of(pe);

	bool arm = false;

	dist__flush_releases(d, false);
	steal(d);
	if (d->cfg.self == d->cfg.origin) {
		wave_soon(d);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (!d->idle_armed && !d->dropping) {
		d->idle_armed = arm = true;
		atomic_fetch_add(&d->refs, 1);
	}
	pthread_mutex_unlock(&d->lock);
	if (arm)
		vm_node_timer_start(d->p->node, &d->idle_tm, IDLE_DELAY_NS);
}

/* Still idle a while after falling idle (or idle again): tell the
 * origin, which may then look for a deadlock. */
static void idle_fire(struct vm_node *n, struct vm_event *ev)
{
	struct dist_part *d = (struct dist_part *)((char *)ev -
		offsetof(struct dist_part, idle_tm.ev));

	(void)n;
	if (fired(d, &d->idle_armed) && atomic_load(&d->p->nbusy) == 0)
		send_simple(d, d->cfg.origin, M_IDLE);
	fired_end(d);
}

/* The part that homes @c's first argument, when that is a global
 * address another part homes; else -1. A guess: the word may be any
 * number with bit 63 set, which at worst places the child badly. */
static int arg_home(const struct dist_part *d, const struct vm_thread *c)
{
	vm_word a;
	int home;

	if (c->sp < 0) /* no slots: stack[0] was never written */
		return -1;
	a = c->stack[0];
	if (!(a & VM_GLOBAL_BIT))
		return -1;
	home = vm_peer_home(&d->base, vm_gslot(a));
	return home >= 0 && home < d->cfg.nparts && home != d->cfg.self ? home
									 : -1;
}

/* A part with fewer threads a core than this one would have without
 * @c, as far as this part heard (heard_load, plus what it sent since):
 * @home if it is one, else the least loaded; -1 when none is. */
static int lighter(struct dist_part *d, int home)
{
	uint32_t mine, mycpus;
	uint64_t best_l = 0, best_c = 1;
	int best = -1;

	node_load(d, &mine, &mycpus);
	for (int i = 0; i < d->cfg.nparts; i++) {
		uint64_t l = atomic_load(&d->est[i]);
		uint64_t cpus = atomic_load(&d->cpus_of[i]);
		if (i == d->cfg.self || l == UINT32_MAX ||
		    (l + 1) * mycpus > (uint64_t)mine * cpus)
			continue;
		if (i == home)
			return i;
		if (best < 0 || l * best_c < best_l * cpus) {
			best = i;
			best_l = l;
			best_c = cpus;
		}
	}
	return best;
}

/* --debug-spread: to a part that asked and got NOTHING, backlog or not;
 * the one that homes the child's first argument if it did. */
static int starving_part(struct dist_part *d, int home, enum dist_why *why)
{
	uint64_t mask;

	if (home >= 0 && (atomic_fetch_and(&d->starving, ~(1ull << home)) &
			  (1ull << home))) {
		*why = DIST_WHY_DATA;
		return home;
	}
	mask = atomic_load(&d->starving);
	while (mask != 0 &&
	       !atomic_compare_exchange_weak(&d->starving, &mask,
					     mask & (mask - 1)))
		;
	return mask == 0 ? -1 : __builtin_ctzll(mask);
}

static bool op_spawned(struct vm_peer *pe, struct vm_worker *w,
		       struct vm_thread *c)
{
	struct dist_part *d = part_of(pe);
	enum dist_why why = DIST_WHY_PUSHED;
	int to, home;

	(void)w;
	home = arg_home(d, c);
	if (d->cfg.eager) {
		if (atomic_load_explicit(&d->starving, memory_order_relaxed) ==
		    0)
			return false;
		to = starving_part(d, home, &why);
	} else {
		/* Only when this machine has a backlog (threads queued, no
		 * worker idle): a child that would run at once here is
		 * faster here than a round trip away, as in a
		 * spawn-and-join loop. Then to a part with fewer threads a
		 * core, so a burst of long threads ends up even. */
		if (atomic_load(&d->p->node->nqueued) == 0 ||
		    atomic_load(&d->p->node->nidle) > 0)
			return false;
		to = lighter(d, home);
		if (to == home)
			why = DIST_WHY_DATA;
		if (to >= 0)
			atomic_fetch_and(&d->starving, ~(1ull << to));
	}
	if (to < 0)
		return false;
	atomic_fetch_add(&d->est[to], 1);
	if (!ship(d, to, &c, 1, why)) {
		bool lost;
		pthread_mutex_lock(&d->lock);
		lost = (d->lost & (1ull << to)) != 0;
		pthread_mutex_unlock(&d->lock);
		if (lost) { /* never again */
			atomic_store(&d->est[to], UINT32_MAX);
			return false;
		}
		atomic_fetch_sub(&d->est[to], 1);
		if (d->cfg.eager)
			mark_starving(d, to);
		return false;
	}
	return true;
}

static bool op_room(struct vm_peer *pe, int to, bool take)
{
	struct dist_part *d = part_of(pe);
	uint64_t bit;

	if (to < 0 || to >= d->cfg.nparts || to == d->cfg.self)
		return false;
	bit = 1ull << to;
	if (!(atomic_load_explicit(&d->starving, memory_order_relaxed) & bit))
		return false;
	if (vm__now() - atomic_load(&d->starved_ns[to]) > STARVING_TTL_NS) {
		atomic_fetch_and(&d->starving, ~bit); /* stale: see the TTL */
		return false;
	}
	if (!take)
		return true;
	return atomic_fetch_and(&d->starving, ~bit) & bit;
}

/* At close: disarm @tm if @armed (under @lock) says it is, and drop the
 * reference it held. A timer that fired already runs after this, sees
 * @closed and drops its reference itself. */
static void timer_close(struct dist_part *d, struct vm_timer *tm, bool *armed)
{
	bool was;

	pthread_mutex_lock(&d->lock);
	was = *armed;
	pthread_mutex_unlock(&d->lock);
	if (was && vm_node_timer_stop(d->p->node, tm)) {
		pthread_mutex_lock(&d->lock);
		*armed = false;
		pthread_mutex_unlock(&d->lock);
		dist_unref(d);
	}
}

static void op_close(struct vm_peer *pe)
{
	struct dist_part *d = part_of(pe);

	pthread_mutex_lock(&d->dlock);
	pthread_mutex_lock(&d->lock);
	d->closed = true;
	d->dropping = true;
	pthread_mutex_unlock(&d->lock);
	timer_close(d, &d->wave_tm, &d->wave_armed);
	timer_close(d, &d->steal_tm, &d->steal_armed);
	timer_close(d, &d->balance_tm, &d->balance_armed);
	timer_close(d, &d->idle_tm, &d->idle_armed);
	pthread_mutex_unlock(&d->dlock);
	dist__lent_close(d);
	dist_unref(d);
}

static const struct vm_peer_ops dist_ops = {
	.move = op_move,
	.join = op_join,
	.done = op_done,
	.joined = op_joined,
	.ended = op_ended,
	.idle = op_idle,
	.spawned = op_spawned,
	.room = op_room,
	.fetch = dist__op_fetch,
	.close = op_close,
};

/* ---- Receiving ---- */

void dist__machine(const struct dist_part *d, int part, char *out, size_t n)
{
	if (d->cfg.ids != NULL && part >= 0 && part < d->cfg.nparts)
		snprintf(out, n, "m%" PRIu32, d->cfg.ids[part]);
	else
		snprintf(out, n, "machine %d", part);
}

void dist__malformed(struct dist_part *d)
{
	pthread_mutex_lock(&d->lock);
	d->st.malformed++;
	pthread_mutex_unlock(&d->lock);
}

static void on_move(struct dist_part *d, int from, struct fl_reader *r)
{
	struct borrow_ctx bc = {d, from};
	const struct vm_lending lend = {.ctx = &bc, .borrow = dist__borrow_page,
					.own = dist__own_page};
	struct vm_thread **ts;
	struct fl_err err;
	size_t n;

	(void)fl_get_u64(r); /* the transfer id: settled in the failure issue */
	if (r->failed) {
		dist__malformed(d);
		return;
	}
	if (vm__threads_decode_lent(d->p, r->p + r->off, fl_reader_left(r),
				    &lend, &ts, &n, &err) != 0) {
		char line[FL_ERR_MAX + 96], m[24];
		dist__machine(d, from, m, sizeof m);
		snprintf(line, sizeof line,
			 "flock: a thread from %s does not install here: %s\n",
			 m, err.msg);
		vm__proc_end_line(d->p, 70, line);
		return;
	}
	if (d->cfg.survive && d->cs.recorded) {
		uint64_t tids[STEAL_MAX];
		for (size_t i = 0; i < n; i += STEAL_MAX) {
			size_t k = n - i > STEAL_MAX ? STEAL_MAX : n - i;
			for (size_t j = 0; j < k; j++)
				tids[j] = ts[i + j]->tid;
			dist__census_moved(d, from, tids, k);
		}
	}
	pthread_mutex_lock(&d->lock);
	d->st.moved_in += n;
	d->stealing = false;
	/* @from gave: it no longer counts this part as starving (the
	 * others still do) */
	d->answered_empty &= ~(1ull << from);
	d->balance_ns = BALANCE_MIN_NS;
	pthread_mutex_unlock(&d->lock);
	vm__thread_immigrate(d->p, ts, n);
	free(ts);
	dist__flush_releases(d, false);
}

/* @from asked for work (STEAL, or a DONE that asks too): send it up to
 * half of what is queued here, true; or remember it starves, false
 * (the caller answers NOTHING). */
static bool give(struct dist_part *d, int from)
{
	struct vm_thread *ts[STEAL_MAX];
	int64_t q = atomic_load(&d->p->node->nqueued);
	size_t max = q > 2 * STEAL_MAX ? STEAL_MAX : (size_t)(q / 2 + 1);
	size_t k = vm__sched_take(d->p, true, ts, max);

	/* Threads that never ran first; then those that did. */
	if (k < max)
		k += vm__sched_take(d->p, false, ts + k, max - k);

	if (k > 0 && ship(d, from, ts, k, DIST_WHY_STOLEN)) {
		atomic_fetch_add(&d->est[from], (uint32_t)k);
		return true;
	}
	for (size_t i = 0; i < k; i++) /* could not: they stay */
		vm__sched_push(d->p->node, NULL, ts[i]);
	mark_starving(d, from);
	return false;
}

static void on_steal(struct dist_part *d, int from, struct fl_reader *r)
{
	uint32_t load, cpus;

	if (heard_load(d, from, r, &load, &cpus) && !give(d, from))
		send_simple(d, from, M_NOTHING);
}

static void on_nothing(struct dist_part *d, int from)
{
	bool arm = false;
	int to = -1;

	pthread_mutex_lock(&d->lock);
	d->st.steals_empty++;
	d->answered_empty |= 1ull << from;
	if (d->stealing) {
		if (d->round != 0 && !d->dropping) {
			to = d->victim = next_in(d, d->round, d->victim);
			d->round &= ~(1ull << to);
			d->st.steals++;
		} else {
			/* a round for nothing: leave them be a while */
			d->stealing = false;
			d->empty_ns = vm__now();
			d->backoff_ns = d->backoff_ns == 0
						? STEAL_BACKOFF_MIN_NS
					: d->backoff_ns >= STEAL_BACKOFF_MAX_NS / 2
						? STEAL_BACKOFF_MAX_NS
						: 2 * d->backoff_ns;
			arm = steal_later(d);
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (arm)
		vm_node_timer_start(d->p->node, &d->steal_tm, d->backoff_ns);
	if (to >= 0)
		send_load(d, to, M_STEAL);
}

static bool homed_here(const struct dist_part *d, vm_word tid)
{
	return vm_peer_home(&d->base, vm_gslot(tid)) == d->cfg.self;
}

static void on_join(struct dist_part *d, int from, struct fl_reader *r)
{
	uint64_t req = fl_get_u64(r), tid = fl_get_u64(r);
	struct entry e;
	vm_word res = 0;
	bool ok;
	int rc;

	if (r->failed || !homed_here(d, tid)) {
		dist__malformed(d);
		return;
	}
	/* Owed before the thread can see it was joined, so that its end
	 * finds whom to answer. */
	pthread_mutex_lock(&d->lock);
	ok = table_put(&d->owed, (struct entry){.key = tid, .req = req,
						 .part = from});
	pthread_mutex_unlock(&d->lock);
	if (!ok) {
		send_join_reply(d, from, req, 1, 0);
		return;
	}
	rc = vm__thread_join_remote(d->p, tid, &res);
	if (rc == 1)
		return;
	pthread_mutex_lock(&d->lock);
	table_take(&d->owed, tid, &e);
	pthread_mutex_unlock(&d->lock);
	send_join_reply(d, from, req, rc == 0 ? 0 : 1, res);
}

static void on_join_reply(struct dist_part *d, struct fl_reader *r)
{
	uint64_t req = fl_get_u64(r);
	uint8_t status = fl_get_u8(r);
	uint64_t res = fl_get_u64(r);
	struct entry e;
	bool found;

	if (r->failed || status > 1) {
		dist__malformed(d);
		return;
	}
	pthread_mutex_lock(&d->lock);
	found = table_take(&d->asked, req, &e);
	pthread_mutex_unlock(&d->lock);
	if (!found) {
		dist__malformed(d);
		return;
	}
	vm__resume(NULL, e.t, status ? FL_ENOENT : 0, res);
}

/* A thread homed here ended at @from; with its load after it, @from
 * asks for work too (op_done). The asker is answered (threads, or
 * remembered as starving) before the joiner wakes, and NOTHING after. */
static void on_done(struct dist_part *d, int from, struct fl_reader *r)
{
	uint64_t tid = fl_get_u64(r), res = fl_get_u64(r);
	bool asks = false, gave = false;
	uint32_t load, cpus;

	if (r->failed || !homed_here(d, tid)) {
		dist__malformed(d);
		return;
	}
	if (fl_reader_left(r) != 0 && heard_load(d, from, r, &load, &cpus)) {
		asks = true;
		gave = give(d, from);
	}
	if (d->cfg.survive)
		dist__census_ended(d, from, tid);
	if (!vm__thread_finished(d->p, tid, res))
		dist__malformed(d);
	if (asks && !gave)
		send_simple(d, from, M_NOTHING);
}

static void on_end(struct dist_part *d, int from, struct fl_reader *r)
{
	uint8_t status = fl_get_u8(r);
	uint32_t n = fl_get_u32(r);
	const uint8_t *s;
	char *line = NULL;

	if (r->failed || n > LINE_MAX_BYTES ||
	    (s = fl_get_bytes(r, n)) == NULL ||
	    (d->cfg.self != d->cfg.origin && from != d->cfg.origin)) {
		dist__malformed(d);
		return;
	}
	if (n > 0 && (line = malloc(n + 1)) != NULL) {
		memcpy(line, s, n);
		line[n] = 0;
	}
	if (d->cfg.self == d->cfg.origin) {
		vm__proc_end_line(d->p, status, line);
	} else {
		pthread_mutex_lock(&d->lock);
		d->told_end = true;
		pthread_mutex_unlock(&d->lock);
		vm__proc_end(d->p, status);
	}
	free(line);
}

static void on_probe(struct dist_part *d, int from, struct fl_reader *r)
{
	uint64_t wave = fl_get_u64(r), except = fl_get_u64(r);
	struct report rep;
	struct fl_buf b;

	if (r->failed || from != d->cfg.origin) {
		dist__malformed(d);
		return;
	}
	report_here(d, except, &rep);
	dist__start(&b, M_PROBE_REPLY);
	fl_buf_put_u64(&b, wave);
	fl_buf_put_u8(&b, rep.passive);
	fl_buf_put_u64(&b, rep.sent);
	fl_buf_put_u64(&b, rep.recv);
	fl_buf_put_u64(&b, rep.live);
	fl_buf_put_u64(&b, rep.lost);
	dist__send_buf(d, from, &b);
}

static void on_probe_reply(struct dist_part *d, int from, struct fl_reader *r)
{
	uint64_t wave = fl_get_u64(r);
	uint8_t passive = fl_get_u8(r);
	struct report rep = {.passive = passive == 1};
	bool all;

	rep.sent = fl_get_u64(r);
	rep.recv = fl_get_u64(r);
	rep.live = fl_get_u64(r);
	rep.lost = fl_get_u64(r);

	if (r->failed || passive > 1 || d->cfg.self != d->cfg.origin) {
		dist__malformed(d);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (!d->wave_on || wave != d->wave || d->got[from]) {
		pthread_mutex_unlock(&d->lock); /* an old wave's */
		return;
	}
	d->got[from] = true;
	d->cur[from] = rep;
	all = ++d->replies == wave_answers(d, d->wave_lost);
	pthread_mutex_unlock(&d->lock);
	if (all)
		evaluate(d);
}

void dist_deliver(struct dist_part *d, int from, const void *msg, size_t len)
{
	struct fl_reader r;
	unsigned type;
	bool busy = false;

	fl_reader_init(&r, msg, len);
	pthread_mutex_lock(&d->dlock);
	pthread_mutex_lock(&d->lock);
	d->st.msgs_recv++;
	d->st.bytes_recv += len;
	pthread_mutex_unlock(&d->lock);
	if (fl_get_u8(&r) != DIST_VERSION || (type = fl_get_u8(&r)) == 0 ||
	    type >= M__LIMIT || from < 0 || from >= d->cfg.nparts ||
	    from == d->cfg.self) {
		dist__malformed(d);
		goto out;
	}
	pthread_mutex_lock(&d->lock);
	if (d->dropping || (d->lost & (1ull << from))) {
		pthread_mutex_unlock(&d->lock);
		goto out;
	}
	if (counted(type)) {
		atomic_fetch_add(&d->recv_from[from], 1);
		vm__proc_busy_inc(d->p);
		busy = true;
	}
	pthread_mutex_unlock(&d->lock);
	switch (type) {
	case M_MOVE:
		on_move(d, from, &r);
		break;
	case M_STEAL:
		on_steal(d, from, &r);
		break;
	case M_NOTHING:
		on_nothing(d, from);
		break;
	case M_JOIN:
		on_join(d, from, &r);
		break;
	case M_JOIN_REPLY:
		on_join_reply(d, &r);
		break;
	case M_DONE:
		on_done(d, from, &r);
		break;
	case M_END:
		on_end(d, from, &r);
		break;
	case M_IDLE:
		if (d->cfg.self == d->cfg.origin)
			wave_soon(d);
		else
			dist__malformed(d);
		break;
	case M_PROBE:
		on_probe(d, from, &r);
		break;
	case M_PROBE_REPLY:
		on_probe_reply(d, from, &r);
		break;
	case M_LGET:
		dist__on_lget(d, from, &r);
		break;
	case M_LPAGE:
		dist__on_lpage(d, from, &r);
		break;
	case M_LRELEASE:
		dist__on_lrelease(d, from, &r);
		break;
	case M_BALANCE:
		on_balance(d, from, &r);
		break;
	case M_CENSUS:
	case M_MARK:
	case M_HELD:
	case M_LOSTT:
		dist__on_census(d, from, &r, type);
		break;
	}
	if (busy)
		vm__proc_busy_dec(d->p);
out:
	pthread_mutex_unlock(&d->dlock);
}

/* ---- Life ---- */

int dist_part_new(struct vm_proc *p, const struct dist_config *cfg,
		  struct dist_part **out, struct fl_err *err)
{
	struct dist_part *d;

	*out = NULL;
	if (cfg->nparts < 1 || cfg->nparts > DIST_MAX_PARTS || cfg->self < 0 ||
	    cfg->self >= cfg->nparts || cfg->origin < 0 ||
	    cfg->origin >= cfg->nparts || cfg->send == NULL || cfg->ncpu < 1)
		return fl_err_set(err, FL_EINVAL,
				  "a part %d of %d parts (origin %d)", cfg->self,
				  cfg->nparts, cfg->origin);
	d = calloc(1, sizeof *d);
	if (d == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");
	d->base.ops = &dist_ops;
	d->base.self = cfg->self;
	d->base.origin = cfg->origin;
	d->p = p;
	d->cfg = *cfg;
	if (cfg->ids != NULL) {
		memcpy(d->ids, cfg->ids, (size_t)cfg->nparts * sizeof *d->ids);
		d->cfg.ids = d->ids;
	}
	d->victim = cfg->self;
	d->st.data_to = -1;
	d->wave_tm.idx = SIZE_MAX;
	d->wave_tm.ev.fn = wave_fire;
	d->steal_tm.idx = SIZE_MAX;
	d->steal_tm.ev.fn = steal_fire;
	d->balance_tm.idx = SIZE_MAX;
	d->balance_tm.ev.fn = balance_fire;
	d->idle_tm.idx = SIZE_MAX;
	d->idle_tm.ev.fn = idle_fire;
	d->balance_ns = BALANCE_MIN_NS;
	d->balance_victim = cfg->self;
	for (int i = 0; i < DIST_MAX_PARTS; i++) {
		atomic_init(&d->est[i], UINT32_MAX);
		atomic_init(&d->cpus_of[i], 1);
	}
	pthread_mutex_init(&d->dlock, NULL);
	pthread_mutex_init(&d->lock, NULL);
	for (int i = 0; i < DIST_MAX_PARTS; i++)
		fl_buf_init(&d->rel[i]);
	atomic_init(&d->refs, 2);
	vm__proc_attach(p, &d->base, cfg->ncpu);
	if (cfg->pid != 0)
		p->pid = cfg->pid;
	if (cfg->nparts > 1) {
		d->balance_armed = true;
		atomic_fetch_add(&d->refs, 1);
		vm_node_timer_start(p->node, &d->balance_tm, BALANCE_MIN_NS);
	}
	/* A part that is not the origin starts with nothing to run. */
	if (cfg->self != cfg->origin)
		steal(d);
	*out = d;
	return 0;
}

void dist__lost(struct dist_part *d, int part)
{
	struct vm_thread **js = NULL;
	size_t nj = 0;
	bool rewave = false;

	pthread_mutex_lock(&d->lock);
	if (d->closed || (d->lost & (1ull << part)) != 0) {
		pthread_mutex_unlock(&d->lock);
		return;
	}
	d->lost |= 1ull << part;
	/* A wave that waits for its answer: abandoned, another comes. */
	if (d->wave_on && !(d->wave_lost & (1ull << part))) {
		d->wave_on = false;
		d->prev_ok = false;
		rewave = true;
	}
	atomic_store(&d->est[part], UINT32_MAX); /* place nothing there */
	atomic_fetch_and(&d->starving, ~(1ull << part));
	/* Joins asked of it (the joined thread's home): they fail. */
	js = malloc((d->asked.n ? d->asked.n : 1) * sizeof *js);
	for (size_t i = 0; js != NULL && i < d->asked.n;) {
		struct vm_thread *t = d->asked.v[i].t;
		if (vm_peer_home(&d->base, vm_gslot(t->park_arg)) != part) {
			i++;
			continue;
		}
		js[nj++] = t;
		d->asked.v[i] = d->asked.v[--d->asked.n];
	}
	/* Joins it asked here: nobody to answer. */
	for (size_t i = 0; i < d->owed.n;)
		if (d->owed.v[i].part == part)
			d->owed.v[i] = d->owed.v[--d->owed.n];
		else
			i++;
	pthread_mutex_unlock(&d->lock);
	dist__lend_lost(d, part);
	/* A survive process's joiners hear "lost"; another's fault (it has
	 * ended, or is ending). */
	for (size_t i = 0; i < nj; i++)
		if (d->cfg.survive)
			vm__resume(NULL, js[i], 0,
				   (vm_word)-(int64_t)FL_ELOST);
		else
			vm__resume(NULL, js[i], FL_EPIPE, 0);
	free(js);
	if (rewave)
		wave_soon(d);
}

void dist_part_lost(struct dist_part *d, int part)
{
	bool census;

	if (part < 0 || part >= d->cfg.nparts || part == d->cfg.self)
		return;
	pthread_mutex_lock(&d->dlock); /* as a delivery */
	pthread_mutex_lock(&d->lock);
	census = !d->closed && !d->dropping && d->cfg.survive &&
		 d->cfg.self == d->cfg.origin &&
		 (d->lost & (1ull << part)) == 0;
	pthread_mutex_unlock(&d->lock);
	dist__lost(d, part);
	if (census)
		dist__census_start(d);
	pthread_mutex_unlock(&d->dlock);
}

void dist_stats(struct dist_part *d, struct dist_stats *out)
{
	pthread_mutex_lock(&d->lock);
	*out = d->st;
	pthread_mutex_unlock(&d->lock);
}

void dist_unref(struct dist_part *d)
{
	if (d == NULL || atomic_fetch_sub(&d->refs, 1) != 1)
		return;
	free(d->asked.v);
	free(d->owed.v);
	dist__census_close(&d->cs);
	dist__umap_close(&d->lends);
	dist__umap_close(&d->lent_pages);
	dist__umap_close(&d->lent_to);
	dist__umap_close(&d->borrows);
	for (int i = 0; i < DIST_MAX_PARTS; i++)
		fl_buf_close(&d->rel[i]);
	pthread_mutex_destroy(&d->dlock);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
