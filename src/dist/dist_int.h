/* Inside src/dist (dist.h says what it does): what dist.c (threads,
 * stealing, joins, the end, deadlock waves) and dist_lend.c (local pages
 * lent with threads) share -- the messages, a part's state, and the few
 * functions each calls of the other. */
#ifndef FLOCK_DIST_DIST_INT_H
#define FLOCK_DIST_DIST_INT_H

#include "dist/dist.h"
#include "vm/vm_gsrc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIST_VERSION 1
/* Most threads one STEAL takes, and the longest END line carried. */
#define STEAL_MAX 64
#define LINE_MAX_BYTES 4096
/* After a round of STEALs that all came back NOTHING, the parts that
 * answered so and sent no thread since are asked again only once this
 * long has passed (doubling from MIN to MAX with each empty round): they
 * remember that this part starves, and send it a child when they have a
 * backlog; the full round now and then is for threads queued there
 * without a spawn (resumed, preempted). So a part that goes idle often
 * (a join waiting on a thread elsewhere, say) does not send a round to
 * every machine each time. */
#define STEAL_BACKOFF_MIN_NS 1000000
#define STEAL_BACKOFF_MAX_NS 64000000
/* A part that asked and got NOTHING asks again within
 * STEAL_BACKOFF_MAX_NS while it stays idle, each NOTHING marking it
 * starving anew: a mark older than twice that is stale (the part found
 * work elsewhere) and gives no room (op_room). */
#define STARVING_TTL_NS (2 * (uint64_t)STEAL_BACKOFF_MAX_NS)
/* A part that runs threads but has none waiting asks the others in turn
 * whether they have more than their share (BALANCE, with its load and
 * cores) this often: from MIN, doubling to MAX while no thread comes
 * (a part with nothing to run steals instead). Idle spawns go to idle
 * parts one at a time, so without it a burst of long threads would
 * stay where it was spawned but for one a machine, each of those
 * machines running one while the spawner time-slices the rest. */
#define BALANCE_MIN_NS 4000000
#define BALANCE_MAX_NS 128000000
/* How long the origin waits, once a part fell idle, before it asks every
 * part whether all are: most idle spells (a join waiting for a thread
 * elsewhere) end sooner, so a busy process sends few waves. */
#define WAVE_DELAY_NS 2000000
/* A part other than the origin tells it (IDLE) only once it has been
 * idle this long, for the same reason: a spawn-and-join loop whose
 * children run elsewhere leaves that part idle between two children,
 * and an IDLE for each would be as many messages as the children. */
#define IDLE_DELAY_NS 2000000
/* A batch of threads whose local pages with bytes hold more than this
 * sends those pages lent (their metadata and an id; the bytes come when
 * first touched) instead of whole. 64 KiB go over a 10 Gb/s link in
 * about 50 us, one round trip on a LAN: below that, sending eagerly
 * costs less than even one fetch would (a round trip and a park per
 * page), and the common small spawned thread still moves in one
 * message and runs at once. Above it, a thread that touches little of
 * a large heap it inherited (a snapshot of its parent's) no longer
 * carries all of it. */
#define LEND_MIN_BYTES (64u << 10)

/* name, number, counted: a message that may make threads run, which the
 * deadlock waves count. */
#define DIST_MESSAGES(X)                                                      \
	X(MOVE, 1, true)                                                      \
	X(STEAL, 2, false)                                                    \
	X(NOTHING, 3, false)                                                  \
	X(JOIN, 4, true)                                                      \
	X(JOIN_REPLY, 5, true)                                                \
	X(DONE, 6, true)                                                      \
	X(END, 7, true)                                                       \
	X(IDLE, 8, false)                                                     \
	X(PROBE, 9, false)                                                    \
	X(PROBE_REPLY, 10, false)                                             \
	X(LGET, 11, true)                                                     \
	X(LPAGE, 12, true)                                                    \
	X(LRELEASE, 13, false)                                                \
	X(BALANCE, 14, false)                                                 \
	X(CENSUS, 15, true)                                                   \
	X(MARK, 16, true)                                                     \
	X(HELD, 17, true)                                                     \
	X(LOSTT, 18, true)

enum {
#define X(name, num, counted) M_##name = num,
	DIST_MESSAGES(X)
#undef X
	M__LIMIT
};

static inline bool counted(unsigned type)
{
	switch (type) {
#define X(name, num, c)                                                       \
	case num:                                                             \
		return c;
		DIST_MESSAGES(X)
#undef X
	}
	return false;
}

struct entry {
	uint64_t key; /* asked: request id; owed: thread id */
	uint64_t req; /* owed: the asker's request id */
	int part;     /* owed: the asker */
	struct vm_thread *t; /* asked: the joiner */
};

struct table {
	struct entry *v;
	size_t n, cap;
};

/* An open-addressing map from nonzero u64 keys (lent pages). */
struct umap {
	uint64_t *k; /* 0: empty */
	void **v;
	size_t n, cap;
};

/* A growable list of thread ids. */
struct tids {
	uint64_t *v;
	size_t n, cap;
};

/* A census of a survive process's threads (dist_census.c), on the
 * delivery thread (under @dlock). */
struct census {
	uint32_t round; /* the newest this part took part in; 0: none */
	bool recorded;	/* this part recorded @round */
	bool told;	/* and sent its HELDs */
	bool over;	/* and, as a home, settled its threads */
	uint64_t live;	/* the parts of @round, this one included */
	uint64_t marks; /* those whose MARK came (this one: recorded) */
	uint64_t helds; /* those whose last HELD came (this one: told) */
	/* Threads here (recorded, or come before their sender's MARK) by
	 * their home; as a home: its stand-ins for threads elsewhere, ends
	 * of those that came before their sender's MARK, and the threads
	 * others hold. */
	struct tids held[DIST_MAX_PARTS];
	struct tids away, ended, seen;
	/* Threads whose home was lost that some live part holds (every
	 * part's HELD carries its own): a lock holder whose home was lost
	 * and that is not among them was lost. */
	struct tids orphans;
};

/* A part's answer to a deadlock wave: idle, its counted messages to
 * and from the parts the wave counts (not those it was told are lost),
 * its live threads, and the parts it knows are lost. */
struct report {
	bool passive;
	uint64_t sent, recv, live, lost;
};

struct dist_part {
	struct vm_peer base;
	struct vm_proc *p;
	struct dist_config cfg;
	uint32_t ids[DIST_MAX_PARTS]; /* cfg.ids' copy, when given */
	pthread_mutex_t dlock;
	pthread_mutex_t lock;
	bool closed, dropping, told_end;
	uint64_t next_req, next_xfer;
	struct table asked, owed;
	_Atomic uint64_t starving; /* parts that asked and got NOTHING */
	_Atomic uint64_t starved_ns[DIST_MAX_PARTS]; /* each one's last mark */
	bool stealing;		   /* a STEAL is out */
	int victim;
	/* This round's victims still to ask; the parts that answered
	 * NOTHING and sent no thread since (they keep this part marked
	 * starving: their next spawn with a backlog comes here); and how
	 * long to ask only the others, after an empty round at @empty_ns
	 * (STEAL_BACKOFF_*). */
	uint64_t round, answered_empty;
	uint64_t empty_ns, backoff_ns;
	/* The origin's deadlock waves. */
	uint64_t wave;
	int replies;
	bool wave_on, again, prev_ok;
	bool wave_armed; /* @wave_tm is armed (and holds a reference) */
	struct vm_timer wave_tm;
	/* Idle after an empty round: ask again once the backoff passed
	 * (armed: holds a reference), for threads queued elsewhere without
	 * a spawn. */
	bool steal_armed;
	struct vm_timer steal_tm;
	/* IDLE_DELAY_NS after falling idle (armed: holds a reference). */
	bool idle_armed;
	struct vm_timer idle_tm;
	/* BALANCE: armed from the start till close (holds a reference);
	 * the next interval, and the part asked last. */
	bool balance_armed;
	struct vm_timer balance_tm;
	uint64_t balance_ns;
	int balance_victim;
	/* What this part last heard of each other part's load (threads
	 * running or queued, UINT32_MAX: nothing yet) and cores, from its
	 * STEAL and BALANCE, plus the threads sent it since. */
	_Atomic uint32_t est[DIST_MAX_PARTS];
	_Atomic uint32_t cpus_of[DIST_MAX_PARTS];
	struct report cur[DIST_MAX_PARTS], prev[DIST_MAX_PARTS];
	bool got[DIST_MAX_PARTS];
	/* Counted messages to and from each part (the deadlock waves'). */
	_Atomic uint64_t sent_to[DIST_MAX_PARTS], recv_from[DIST_MAX_PARTS];
	uint64_t wave_lost; /* the parts the current wave leaves out */
	struct dist_stats st;	     /* under @lock */
	/* Lent pages (below, "Lent pages"), under @lock. */
	uint64_t next_lend;
	struct umap lends, lent_pages, borrows;
	/* Namings of each lent page out to each part: (key << 6 | part) ->
	 * count (as a pointer-sized integer), so that a part lost lets go
	 * of its namings (dist__lend_lost). */
	struct umap lent_to;
	struct fl_buf rel[DIST_MAX_PARTS]; /* releases to send each lender */
	uint32_t nrel[DIST_MAX_PARTS];
	uint64_t lost; /* parts whose machines were lost, under @lock */
	struct census cs;
	uint32_t next_round; /* the origin's census rounds */
	uint64_t threads_lost; /* settled lost by this home (stats) */
	_Atomic int refs;
};

static inline struct dist_part *part_of(struct vm_peer *pe)
{
	return (struct dist_part *)pe;
}

/* vm_lending's context when threads leave for part @to. */
struct lend_ctx {
	struct dist_part *d;
	int to;
};

struct borrow_ctx {
	struct dist_part *d;
	int from;
};

/* dist.c */
void dist__start(struct fl_buf *b, unsigned type);
bool dist__send_buf(struct dist_part *d, int to, struct fl_buf *b);
/* How messages name part @part's machine: "m3", or "machine 2" when the
 * config gave no ids. */
void dist__machine(const struct dist_part *d, int part, char *out, size_t n);
void dist__malformed(struct dist_part *d);

/* dist_lend.c: the vm_lending callbacks (lend_ctx for threads leaving,
 * borrow_ctx for threads arriving), the LGET/LPAGE/LRELEASE handlers,
 * the peer's fetch op, and what the end and close let go. */
void dist__umap_close(struct umap *m);
uint64_t dist__lend_page(void *ctx, struct vm_page *pg);
uint64_t dist__home_page(void *ctx, const struct vm_page *pg);
int dist__own_page(void *ctx, uint64_t key, uint8_t *bytes,
		   struct vm_lent **lent);
struct vm_lent *dist__borrow_page(void *ctx, uint64_t key);
/* Send the releases kept for each lender (@full: only batches of
 * RELEASE_BATCH). */
void dist__flush_releases(struct dist_part *d, bool full);
enum vm_res dist__op_fetch(struct vm_peer *pe, struct vm_worker *w,
			   struct vm_lent *l, vm_word addr);
void dist__on_lget(struct dist_part *d, int from, struct fl_reader *r);
void dist__on_lpage(struct dist_part *d, int from, struct fl_reader *r);
void dist__on_lrelease(struct dist_part *d, int from, struct fl_reader *r);
void dist__lent_wake_all(struct dist_part *d);
void dist__lent_close(struct dist_part *d);

/* dist.c: mark part @part lost (under @dlock): what waits on it
 * resumes. */
void dist__lost(struct dist_part *d, int part);

/* dist_census.c: a survive process's census of its threads, run on the
 * delivery thread (under @dlock). The origin starts a round after a
 * loss; the handlers of CENSUS, MARK, HELD and LOSTT; on_move and
 * on_done tell it what came from @from (before its MARK, it counts). */
void dist__census_start(struct dist_part *d);
void dist__on_census(struct dist_part *d, int from, struct fl_reader *r,
		     unsigned type);
void dist__census_moved(struct dist_part *d, int from, const uint64_t *tids,
			size_t n);
void dist__census_ended(struct dist_part *d, int from, uint64_t tid);
void dist__census_close(struct census *cs);

/* dist_lend.c: part @part was lost; what waits on pages it lent this
 * part fails (the waiting threads resume and fault), and what it asked
 * of this part is forgotten. Under @dlock, not @lock. */
void dist__lend_lost(struct dist_part *d, int part);

#endif
