/* A census of a survive process's threads after a loss (dist.h,
 * "Survive"): which threads were on the lost machine, so that their
 * homes answer their joins "lost".
 *
 * A thread's home keeps a stand-in (VM_T_AWAY) while the thread runs
 * elsewhere; the thread may have moved on many times since. Whatever
 * stand-in no live part holds the thread of was lost. Threads move while
 * the census runs, so it takes a consistent cut (a snapshot in the way of
 * Chandy and Lamport): the links between parts keep order and lose
 * nothing while both ends live (the driver's sessions), which is all
 * the snapshot needs.
 *
 * - The origin, told of a loss, starts round r: CENSUS(r, lost) to every
 *   part it thinks lives.
 * - A part records at the first CENSUS(r) or MARK(r) it sees: it takes
 *   the lost parts as lost, lists the threads it holds (by their home)
 *   and its stand-ins, and sends MARK(r, lost) to every other live part
 *   -- all under the process's @depart lock, so no thread is between
 *   leaving its table and the message that says where it went.
 * - Until @from's MARK(r) comes, what @from sends counts as this part's
 *   too: threads it moved here join the held lists, ends it told of
 *   threads homed here strike their stand-ins.
 * - Once every live part's MARK came, a part sends each other home the
 *   threads it holds of that home (HELD(r, last, tids), in chunks).
 * - A home that has every live part's last HELD settles: a stand-in
 *   neither ended nor held anywhere was lost. It ends as a thread that
 *   returned -75 (ELOST) -- its joiner, here or elsewhere, is answered --
 *   and the home tells every other live part of those threads (LOSTT),
 *   for the locks they held (dist_config.threads_lost).
 *
 * A newer round (a second loss) supersedes an older one that has not
 * finished: a part forgets what it had of the old. A round can wait
 * forever only on a part that was lost meanwhile, and the origin starts
 * a new round then. A part that was lost is never asked and never heard
 * again (dist_deliver drops what comes from it).
 *
 * Threads whose home was the lost machine keep running where they are;
 * their joins answer -75 at once (the stand-in was there). Runs on the
 * delivery thread, under @dlock. */
#include "dist/dist_int.h"

#include <stdlib.h>
#include <string.h>

/* Thread ids a HELD or LOSTT carries at most (512 KiB). */
#define TIDS_CHUNK 65536

static bool tids_add(struct tids *l, uint64_t tid)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		uint64_t *v = realloc(l->v, cap * sizeof *v);
		if (v == NULL)
			return false;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = tid;
	return true;
}

static void tids_close(struct tids *l)
{
	free(l->v);
	*l = (struct tids){0};
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void tids_sort(struct tids *l)
{
	if (l->n > 1)
		qsort(l->v, l->n, sizeof *l->v, cmp_u64);
}

static bool tids_has(const struct tids *l, uint64_t tid)
{
	return l->n != 0 &&
	       bsearch(&tid, l->v, l->n, sizeof tid, cmp_u64) != NULL;
}

void dist__census_close(struct census *cs)
{
	for (int i = 0; i < DIST_MAX_PARTS; i++)
		tids_close(&cs->held[i]);
	tids_close(&cs->away);
	tids_close(&cs->ended);
	tids_close(&cs->seen);
	tids_close(&cs->orphans);
}

static uint64_t all_parts(const struct dist_part *d)
{
	return d->cfg.nparts == 64 ? ~0ull : (1ull << d->cfg.nparts) - 1;
}

static int home_of(const struct dist_part *d, uint64_t tid)
{
	return vm_peer_home(&d->base, vm_gslot(tid));
}

/* The census failed here (out of memory): the process cannot tell lost
 * threads from live ones, so it ends, as one without --survive would. */
static void census_fail(struct dist_part *d)
{
	vm__proc_end_line(d->p, 70, "flock: out of memory (the census of "
				    "threads after a machine was lost)\n");
}

static void send_round(struct dist_part *d, int to, unsigned type,
		       uint32_t round, uint64_t lost)
{
	struct fl_buf b;

	dist__start(&b, type);
	fl_buf_put_u32(&b, round);
	fl_buf_put_u64(&b, lost);
	dist__send_buf(d, to, &b);
}

/* HELD's flags: the last of this part's HELDs of the round; its ids are
 * orphans (threads whose home was lost), not threads of the receiver. */
#define HELD_LAST 1
#define HELD_ORPHANS 2

/* Send @to the ids @v[0..n) as @type (HELD with @flags, or LOSTT)
 * messages of round @round, in chunks (at least one); HELD_LAST goes on
 * the last chunk only. */
static void send_tids(struct dist_part *d, int to, unsigned type,
		      uint32_t round, uint8_t flags, const uint64_t *v,
		      size_t n)
{
	size_t at = 0;

	do {
		size_t k = n - at > TIDS_CHUNK ? TIDS_CHUNK : n - at;
		struct fl_buf b;
		dist__start(&b, type);
		fl_buf_put_u32(&b, round);
		if (type == M_HELD)
			fl_buf_put_u8(&b, at + k == n ? flags
						      : flags & ~HELD_LAST);
		fl_buf_put_u32(&b, (uint32_t)k);
		for (size_t i = 0; i < k; i++)
			fl_buf_put_u64(&b, v[at + i]);
		dist__send_buf(d, to, &b);
		at += k;
	} while (at < n);
}

struct record_ctx {
	struct dist_part *d;
	bool failed;
};

static void record_one(void *ctx, vm_word tid, bool away)
{
	struct record_ctx *rc = ctx;
	struct census *cs = &rc->d->cs;
	int home = home_of(rc->d, tid);

	if (home < 0 || home >= rc->d->cfg.nparts)
		return;
	if (!(away ? tids_add(&cs->away, tid) : tids_add(&cs->held[home], tid)))
		rc->failed = true;
}

static void settle(struct dist_part *d);

/* threads_lost's predicates: a thread of a sorted list; a thread whose
 * home is not live and that no live part held at the cut. */
static bool in_list(void *ctx, uint64_t tid)
{
	return tids_has(ctx, tid);
}

struct orphan_ctx {
	struct dist_part *d;
	uint64_t live;
};

static bool orphan_lost(void *ctx, uint64_t tid)
{
	struct orphan_ctx *oc = ctx;
	int home = home_of(oc->d, tid);

	return home >= 0 && home < oc->d->cfg.nparts &&
	       !(oc->live & (1ull << home)) &&
	       !tids_has(&oc->d->cs.orphans, tid);
}

/* Once every live part's MARK came: tell each other home what this part
 * holds of it. */
static void progress(struct dist_part *d)
{
	struct census *cs = &d->cs;
	int self = d->cfg.self;

	if (!cs->recorded || cs->told || (cs->marks & cs->live) != cs->live)
		return;
	cs->told = true;
	/* The threads here whose home was lost: for everyone's locks. */
	for (int i = 0; i < d->cfg.nparts; i++)
		if (i != self && !(cs->live & (1ull << i)))
			for (size_t k = 0; k < cs->held[i].n; k++)
				if (!tids_add(&cs->orphans, cs->held[i].v[k])) {
					census_fail(d);
					return;
				}
	for (int i = 0; i < d->cfg.nparts; i++)
		if (i != self && (cs->live & (1ull << i))) {
			send_tids(d, i, M_HELD, cs->round, 0, cs->held[i].v,
				  cs->held[i].n);
			send_tids(d, i, M_HELD, cs->round,
				  HELD_LAST | HELD_ORPHANS, cs->orphans.v,
				  cs->orphans.n);
		}
	/* Its own: a thread of ours that came back here is no stand-in. */
	for (size_t k = 0; k < cs->held[self].n; k++)
		if (!tids_add(&cs->seen, cs->held[self].v[k])) {
			census_fail(d);
			return;
		}
	cs->helds |= 1ull << self;
	settle(d);
}

/* Take part in round @round (the others lost: @lost): record, unless
 * done already or the round is older than one seen. False: an old
 * round, to be ignored. */
static bool enter(struct dist_part *d, uint32_t round, uint64_t lost)
{
	struct census *cs = &d->cs;
	struct record_ctx rc = {d, false};
	uint64_t newly;
	int self = d->cfg.self;

	if (round < cs->round || (round == cs->round && cs->recorded))
		return round == cs->round;
	lost &= all_parts(d) & ~(1ull << self);
	pthread_mutex_lock(&d->lock);
	newly = lost & ~d->lost;
	pthread_mutex_unlock(&d->lock);
	for (int i = 0; i < d->cfg.nparts; i++)
		if (newly & (1ull << i))
			dist__lost(d, i);
	dist__census_close(cs);
	memset(cs, 0, sizeof *cs);
	cs->round = round;
	pthread_mutex_lock(&d->lock);
	cs->live = all_parts(d) & ~d->lost;
	pthread_mutex_unlock(&d->lock);
	/* No thread between its table and its message while we look, and
	 * our MARKs go after every such message. */
	pthread_rwlock_wrlock(&d->p->depart);
	vm__threads_each(d->p, record_one, &rc);
	for (int i = 0; i < d->cfg.nparts; i++)
		if (i != self && (cs->live & (1ull << i)))
			send_round(d, i, M_MARK, round, ~cs->live & all_parts(d));
	pthread_rwlock_unlock(&d->p->depart);
	cs->recorded = true;
	cs->marks = 1ull << self;
	if (rc.failed) {
		census_fail(d);
		return false;
	}
	tids_sort(&cs->away);
	progress(d);
	return true;
}

/* A home with every live part's HELD: its stand-ins that no one holds
 * and that did not end were lost. */
static void settle(struct dist_part *d)
{
	struct census *cs = &d->cs;
	struct tids lost = {0};
	int self = d->cfg.self;

	if (!cs->told || cs->over || (cs->helds & cs->live) != cs->live)
		return;
	cs->over = true;
	tids_sort(&cs->seen);
	tids_sort(&cs->ended);
	for (size_t i = 0; i < cs->away.n; i++) {
		uint64_t t = cs->away.v[i];
		if (tids_has(&cs->seen, t) || tids_has(&cs->ended, t))
			continue;
		if (!tids_add(&lost, t)) {
			tids_close(&lost);
			census_fail(d);
			return;
		}
	}
	/* Still a stand-in: nothing can end it now but this. */
	for (size_t i = 0; i < lost.n; i++)
		(void)vm__thread_finished(d->p, lost.v[i],
					  (vm_word)-(int64_t)FL_ELOST);
	pthread_mutex_lock(&d->lock);
	d->threads_lost += lost.n;
	pthread_mutex_unlock(&d->lock);
	if (lost.n != 0) {
		for (int i = 0; i < d->cfg.nparts; i++)
			if (i != self && (cs->live & (1ull << i)))
				send_tids(d, i, M_LOSTT, cs->round, 0, lost.v,
					  lost.n);
		if (d->cfg.threads_lost != NULL)
			d->cfg.threads_lost(d->cfg.threads_lost_ctx, in_list,
					    &lost);
	}
	tids_close(&lost);
	/* Threads whose home was lost, gone with it: every part knows them
	 * now (every HELD carried the orphans its sender holds). */
	if (d->cfg.threads_lost != NULL) {
		struct orphan_ctx oc = {d, cs->live};
		tids_sort(&cs->orphans);
		d->cfg.threads_lost(d->cfg.threads_lost_ctx, orphan_lost, &oc);
	}
	/* What the round kept is no longer needed. */
	dist__census_close(cs);
}

void dist__census_start(struct dist_part *d)
{
	uint32_t round;
	uint64_t lost;

	pthread_mutex_lock(&d->lock);
	round = ++d->next_round;
	lost = d->lost;
	pthread_mutex_unlock(&d->lock);
	if (round <= d->cs.round) /* a part's rounds are the origin's */
		round = d->next_round = d->cs.round + 1;
	for (int i = 0; i < d->cfg.nparts; i++)
		if (i != d->cfg.self && !(lost & (1ull << i)))
			send_round(d, i, M_CENSUS, round, lost);
	enter(d, round, lost);
}

void dist__census_moved(struct dist_part *d, int from, const uint64_t *tids,
			size_t n)
{
	struct census *cs = &d->cs;

	if (!cs->recorded || cs->told || (cs->marks & (1ull << from)))
		return;
	for (size_t i = 0; i < n; i++) {
		int home = home_of(d, tids[i]);
		if (home >= 0 && home < d->cfg.nparts &&
		    !tids_add(&cs->held[home], tids[i])) {
			census_fail(d);
			return;
		}
	}
}

void dist__census_ended(struct dist_part *d, int from, uint64_t tid)
{
	struct census *cs = &d->cs;

	if (cs->recorded && !cs->over && !(cs->marks & (1ull << from)) &&
	    !tids_add(&cs->ended, tid))
		census_fail(d);
}

static void on_tids(struct dist_part *d, int from, struct fl_reader *r,
		    unsigned type)
{
	struct census *cs = &d->cs;
	uint32_t round = fl_get_u32(r);
	uint8_t flags = type == M_HELD ? fl_get_u8(r) : 0;
	uint32_t n = fl_get_u32(r);
	struct tids v = {0};

	if (r->failed || flags > (HELD_LAST | HELD_ORPHANS) ||
	    n > TIDS_CHUNK || fl_reader_left(r) != (size_t)n * 8) {
		dist__malformed(d);
		return;
	}
	if (type == M_LOSTT) {
		/* Another home's lost threads: for the locks here. */
		if (n == 0 || d->cfg.threads_lost == NULL)
			return;
		for (uint32_t i = 0; i < n; i++)
			if (!tids_add(&v, fl_get_u64(r))) {
				tids_close(&v);
				census_fail(d);
				return;
			}
		tids_sort(&v);
		d->cfg.threads_lost(d->cfg.threads_lost_ctx, in_list, &v);
		tids_close(&v);
		return;
	}
	/* A HELD: after our MARK, so this part is in its round, or newer */
	if (round != cs->round || !cs->recorded || cs->over ||
	    (cs->helds & (1ull << from)))
		return; /* an old round's, or one this part left */
	for (uint32_t i = 0; i < n; i++)
		if (!tids_add(flags & HELD_ORPHANS ? &cs->orphans : &cs->seen,
			      fl_get_u64(r))) {
			census_fail(d);
			return;
		}
	if (flags & HELD_LAST) {
		cs->helds |= 1ull << from;
		settle(d);
	}
}

void dist__on_census(struct dist_part *d, int from, struct fl_reader *r,
		     unsigned type)
{
	uint32_t round;
	uint64_t lost;

	if (!d->cfg.survive) {
		dist__malformed(d);
		return;
	}
	if (type == M_HELD || type == M_LOSTT) {
		on_tids(d, from, r, type);
		return;
	}
	round = fl_get_u32(r);
	lost = fl_get_u64(r);
	if (r->failed || fl_reader_left(r) != 0 || round == 0 ||
	    (type == M_CENSUS && from != d->cfg.origin)) {
		dist__malformed(d);
		return;
	}
	if (!enter(d, round, lost) || round != d->cs.round)
		return;
	if (type == M_MARK) {
		d->cs.marks |= 1ull << from;
		progress(d);
	}
}
