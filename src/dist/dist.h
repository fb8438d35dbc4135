/* One process over many machines: the peer (vm_peer.h) that links a
 * process's parts, sans I/O. A part is a struct vm_proc on one machine's
 * node; this layer moves threads between parts, answers joins at a
 * thread's home, ends every part when one ends, and finds a deadlock
 * that spans machines. Global memory is the page source's business
 * (src/dsm/dsm_gsrc.h); the driver carries both layers' messages.
 *
 * Placement: a spawn runs its child locally, and a part with nothing to
 * run steals: it asks the other parts in turn (STEAL) for threads that
 * never ran; one that has some sends up to half of them (MOVE), one that
 * has none says NOTHING and remembers the thief, whose next spawn there
 * sends the child straight to it when that machine has a backlog (a
 * thread queued, no worker idle). After a round that came back all
 * NOTHING, a part asks again at its next idle spell only those that did
 * not say NOTHING or have sent it a thread since (the others still mark
 * it); all of them again once a backoff has passed (1 ms, doubling to
 * 64 ms while rounds stay empty). A part still idle when the backoff
 * ends asks by itself (a timer): threads queued elsewhere without a
 * spawn (woken, preempted) reach it too. A part that runs threads with
 * none waiting asks the others in turn, now and then (BALANCE_*_NS),
 * whether they have more than their share: one whose threads a core
 * (running and queued) exceed the asker's sends the difference's half
 * (DIST_WHY_BALANCE). So a burst of spawns spreads within a
 * few round trips, long threads end up even over the cores, and a thread moves while it is small (its state and
 * the snapshot of local memory its spawn gave it). A batch whose local
 * pages with bytes hold more than 64 KiB sends them lent: metadata and
 * an id; the sender keeps each page (a reference) until every part it
 * named it to has released it, the receiver maps it absent and fetches
 * it on first touch (LGET, answered by LPAGE), then keeps the bytes for
 * the process's life, so a page lent again -- it keeps its id -- crosses
 * to a machine once. A part lets a lent page go (LRELEASE, batched)
 * when its last page naming it went unfetched; the lender counts the
 * namings out to each part (a part may release only its own), and those
 * out to a part that was lost come back at the loss; everything goes at
 * the process's end. A thread moving on with absent pages lends them on: the
 * next part asks this one, which asks the first if it has not the bytes
 * yet. A thread that reaches
 * stdio on another machine moves to the origin, its writes released
 * first, and the instruction runs there; main never moves.
 *
 * Locality: a thread also moves to its data (vm_peer.h, "Locality"):
 * once 16 of its faults here were served by one other part
 * (VM_DATA_MOVE_FAULTS, a majority vote over the homes) and that part
 * has room -- it asked for work and got NOTHING, so it is idle as far as
 * this part knows (the room op reads @starving) -- the thread goes there
 * (DIST_WHY_DATA) instead of fetching more pages, if its state is
 * smaller than the pages it fetched from there. Taking the room clears
 * that part's bit, as a push does, so one idle part gets one thread per
 * ask however many want to go there; the bit comes back when it asks
 * again (idle again) and has nothing; a part heard to run a thread a core
 * or more (its STEAL, BALANCE or DONE's load) loses it, and a mark older
 * than STARVING_TTL_NS gives no room (the part, idle still, would have
 * asked again). And a spawn pushed to a part that
 * asked (a backlog here) goes to the one that homes what the child's
 * first argument points to, if that one asked (DIST_WHY_DATA too, no
 * faults). dist_stats keeps the last such move.
 *
 * Joins: a thread's home (the part that made its id) keeps its entry;
 * JOIN goes there, JOIN_REPLY comes back with the result (or "no such
 * thread") once the thread has ended, wherever it ran (DONE tells the
 * home).
 *
 * The end: the part where the process ends (main's return or exit on
 * the origin, exit or a runtime error anywhere) tells the origin (END,
 * with the error line), which ends and tells every other part.
 *
 * Deadlock: a part whose busy count falls to 0 tells the origin (IDLE);
 * the origin then asks every part (PROBE, with the parts it knows were
 * lost) whether it is idle and how many messages it has sent to and
 * received from the others -- this layer's that wake threads, and the
 * page source's (the driver's @counters) -- and which parts it knows
 * were lost (PROBE_REPLY). Two waves in
 * a row in which every part is idle and reports the same counts, with
 * as many received as sent in all, mean nothing is running and nothing
 * is on its way: every thread is blocked for good, and the origin fails
 * the process as a deadlock, naming how many threads there are.
 *
 * Survive (flock run --survive, dist_config.survive): the loss of a part
 * other than the origin (dist_part_lost) does not end the process. Joins
 * asked of it answer -75 (ELOST); nothing is sent there any more (no
 * steal, push, balance or move: a thread that would go to its data there
 * stays, and faults on it); what comes from it is dropped. The origin
 * then runs a census (dist_census.c): a consistent cut of where every
 * thread is, after which each home ends the stand-ins of threads no live
 * part holds as if they had returned -75 (their joiners wake) and tells
 * every part which threads were lost (dist_config.threads_lost: the
 * mutexes they held pass on, status 1). Threads whose home was the lost
 * part run on where they are; a join of one answers -75. Deadlock waves
 * go on over the parts that live: each part counts what it sent to and
 * took from each part, and a wave adds up only what went between live
 * ones, once every part knows of every loss (the census's messages are
 * counted: none is on its way when a wave concludes). The origin's loss
 * still ends every part.
 *
 * Messages (DIST_MESSAGES, dist.c): a version byte and a type byte, then
 * the type's fields; decoded as hostile bytes (a malformed message is
 * dropped and counted; a thread state that does not decode ends the
 * process with a runtime error naming the machine). Links must keep
 * order (as a connection does) and lose nothing; duplicates and losses
 * are the failure issue's.
 *
 * Threads: dist_deliver runs on the driver's thread, one message at a
 * time per part; the vm_peer ops on the process's workers. */
#ifndef FLOCK_DIST_DIST_H
#define FLOCK_DIST_DIST_H

#include "vm/vm_peer.h"

#define DIST_MAX_PARTS 64

struct dist_config {
	int self;   /* this part's machine index, 0 .. nparts-1 */
	int nparts; /* machines the process spans, 1 .. DIST_MAX_PARTS */
	int origin; /* the part that runs main */
	long ncpu;  /* cores of all of them: ncpu() */
	/* The process's id on every part (thread states carry it); 0:
	 * the one vm__proc_new gave this part. */
	uint64_t pid;
	/* test aid: every spawn goes to a part that asked for work, backlog
	 * or not (so that threads move as often as they can) */
	bool eager;
	/* Carry @len bytes (borrowed) to part @to, in order; any thread,
	 * never calls back into this layer. */
	void (*send)(void *ctx, int to, const void *msg, size_t len);
	void *send_ctx;
	/* The driver's other messages for this part so far (the page
	 * source's) to and from the parts not in @except, counted in the
	 * deadlock waves; NULL: none. */
	void (*counters)(void *ctx, uint64_t except, uint64_t *sent,
			 uint64_t *recv);
	void *counters_ctx;
	/* --survive: the loss of a part other than the origin ends only the
	 * threads that were there ("Survive", above). */
	bool survive;
	/* Survive: threads were found lost, those @lost(@lost_ctx, tid)
	 * says (valid during the call); every part hears of every lost
	 * thread, once or more (robust mutexes: dsm_gsrc). NULL: none. */
	void (*threads_lost)(void *ctx, bool (*lost)(void *lost_ctx,
						    uint64_t tid),
			     void *lost_ctx);
	void *threads_lost_ctx;
	/* Each part's machine (its member id), for messages that name one
	 * ("m3"); NULL: named by part index. Copied. */
	const uint32_t *ids;
};

/* Why a thread left a part. */
enum dist_why {
	DIST_WHY_STOLEN, /* an idle part asked for work */
	DIST_WHY_PUSHED, /* spawned here, sent to a part that had asked */
	DIST_WHY_STDIO,	 /* stdio runs on the origin */
	DIST_WHY_DATA,	 /* to the home of the pages it faults on */
	DIST_WHY_BALANCE, /* to a part that had fewer threads a core */
	DIST_WHY__N
};

/* What one part did (flock run --stats, ps -v). */
struct dist_stats {
	uint64_t moved_out, moved_in; /* threads */
	uint64_t out_why[DIST_WHY__N]; /* moved_out by enum dist_why */
	uint64_t move_bytes;          /* thread states sent */
	uint64_t steals, steals_empty; /* STEALs asked, answered NOTHING */
	uint64_t remote_joins;        /* joins asked of another part */
	uint64_t msgs_sent, bytes_sent, msgs_recv, bytes_recv;
	uint64_t waves;               /* deadlock waves run (origin) */
	/* Local pages sent lent (metadata and an id, not their bytes: one
	 * per page a thread state named), and those whose bytes were
	 * fetched here on demand, and their bytes. */
	uint64_t lazy_pages, lazy_fetched, lazy_bytes;
	/* Namings of lent pages let go because the part they were lent to
	 * was lost (survive). */
	uint64_t lent_dropped;
	uint64_t malformed;
	/* The last thread that left for its data (out_why[DIST_WHY_DATA]):
	 * its id, the part it went to (-1: none yet), and its majority
	 * count of faults on pages homed there -- those faults less the
	 * ones elsewhere since that home led, so at least that many; 0
	 * for a child placed there at its spawn. */
	uint64_t data_tid, data_faults;
	int32_t data_to;
};

struct dist_part;

/* Attach a part to @p (made by vm__proc_new, with its page source, no
 * thread yet); the origin then starts main with vm__proc_start_main,
 * and any other part asks for work at once (@cfg->send may queue it
 * until the network runs).
 * Two references, as dsm_gsrc's: the process's (dropped by vm_proc_free)
 * and the driver's (dist_unref). 0, FL_EINVAL or FL_ENOMEM with @err. */
int dist_part_new(struct vm_proc *p, const struct dist_config *cfg,
		  struct dist_part **out, struct fl_err *err);
/* A message from part @from, borrowed. Dropped once the process has
 * ended here. */
void dist_deliver(struct dist_part *d, int from, const void *msg, size_t len);
void dist_stats(struct dist_part *d, struct dist_stats *out);
/* Part @part's machine was lost: joins asked of it resume failed (the
 * joiner faults), threads waiting for pages it lent fault, and what it
 * asked of this part is forgotten. Its later messages must not be
 * delivered. Any thread but a worker inside an op. */
void dist_part_lost(struct dist_part *d, int part);
void dist_unref(struct dist_part *d);

#endif
