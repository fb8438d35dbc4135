/* The DSM core's private header: the wire format, a node's state, and
 * what its files share. Not for code outside src/dsm/ (tests and the
 * fuzz target excepted).
 *
 * A message is a 28-byte header and a payload, all little-endian:
 *   u8 version, u8 type, u16 sender node,
 *   u64 request id, u64 done, u64 page number.
 * A request carries a fresh id from its sender's counter; its reply
 * carries the same id. @done is the sender's lowest id still awaiting a
 * reply (every id below it was answered), not counting requests their
 * home reported queued (it keeps those until it answers them), so a
 * home can forget replies below it and drop late duplicates of them.
 * Payloads per type are in DSM_MESSAGES; a diff is u16 run count, then
 * runs of
 *   u16 offset, u16 length, length bytes
 * in increasing offset order, never touching or overlapping, inside the
 * page. A result (u8) is one of DSM_RESULTS' codes. */
#ifndef FLOCK_DSM_DSM_INT_H
#define FLOCK_DSM_DSM_INT_H

#include "base/fl_buf.h"
#include "dsm/dsm.h"

#define DSM_VERSION 2
#define DSM_HEADER_SIZE 28
#define DSM_DIFF_MAX_RUNS (DSM_PAGE_SIZE / 2)
#define DSM_DIFF_MAX (2 + DSM_DIFF_MAX_RUNS * 4 + DSM_PAGE_SIZE / 2)
#define DSM_PAGE_MIN (27 + DSM_PAGE_SIZE)
#define DSM_PAGE_MAX (DSM_PAGE_MIN + 4 * DSM_LIVE_MAX)
/* Replies a home remembers per sender (requests not yet forgotten),
 * besides those queued on its words. */
#define DSM_PEER_CACHE_MAX 4096
#define DSM_PREFETCH 8 /* pages asked for ahead of a scan (dsm_cache.c) */

/* X(name, code, min payload, max payload, to the page's home?, handler,
 * what it carries). Codes are part of the wire format: never renumber,
 * only append. */
#define DSM_MESSAGES(X)                                                       \
	X(GET, 1, 0, 0, true, dsm__recv_get,                                  \
	  "a node asks the home for a copy of the page")                     \
	X(PAGE, 2, DSM_PAGE_MIN, DSM_PAGE_MAX, false, dsm__recv_page,         \
	  "the copy: u64 writers, u64 sharers, u64 directory version, u8 "   \
	  "access (1 read-only, 2 writable), u16 live blocks kept (0: "      \
	  "none), the bytes, then each live block's part on the page: u16 "  \
	  "offset, u16 length, increasing, never overlapping")               \
	X(DIFF, 3, 2, DSM_DIFF_MAX, true, dsm__recv_diff,                    \
	  "a node's changes to its copy since its last release: runs")       \
	X(DIFF_ACK, 4, 16, 16, false, dsm__recv_diff_ack,                     \
	  "the diff is merged: u64 writers, u64 directory version")          \
	X(NOTE, 5, 16, 16, false, dsm__recv_note,                             \
	  "to a sharer: the page's writers changed: u64 writers, u64 "       \
	  "directory version")                                                \
	X(NOTE_ACK, 6, 0, 0, true, dsm__recv_note_ack,                        \
	  "the sharer knows the new writers")                                 \
	X(ATOMIC, 7, 19, 19, true, dsm__recv_atomic,                          \
	  "run an atomic at the home: u8 op, u16 offset, u64 a, u64 b")      \
	X(ATOMIC_REPLY, 8, 9, 9, false, dsm__recv_atomic_reply,               \
	  "its result: u8 result, u64 the word's old value")                 \
	X(UNMAPPED, 9, 0, 0, false, dsm__recv_unmapped,                       \
	  "the answer to GET when the page is not mapped at its home")       \
	X(SYNC, 10, 11, 11, true, dsm__recv_sync,                             \
	  "lock, unlock, wait or wake at the word's home: u8 op, u16 "       \
	  "offset, u64 argument (wait: the expected word; wake: how many)")  \
	X(SYNC_REPLY, 11, 10, 10, false, dsm__recv_sync_reply,                \
	  "its answer, maybe long after (queued): u8 result, u8 flags (1: "  \
	  "send SYNC_ACK), u64 value (wake: how many it woke)")             \
	X(QUEUED, 12, 0, 0, false, dsm__recv_queued,                          \
	  "the lock or wait waits in the word's queue; its reply comes "     \
	  "when another caller answers it")                                  \
	X(SYNC_ACK, 13, 0, 0, true, dsm__recv_sync_ack,                       \
	  "a SYNC_REPLY that asked for it arrived")                          \
	X(FREE, 14, 2, 2, true, dsm__recv_free,                               \
	  "free the block that starts at u16 offset of the page")            \
	X(FREE_REPLY, 15, 17, 17, false, dsm__recv_free_reply,                \
	  "its result: u8 result, u64 first page unmapped, u64 how many")

enum dsm_msg_type {
#define DSM__ENUM(name, code, min, max, home, fn, text) DSM_MSG_##name = code,
	DSM_MESSAGES(DSM__ENUM)
#undef DSM__ENUM
	DSM_MSG_END
};

/* X(result, wire code): the results a reply carries. Part of the wire
 * format: never renumber. */
#define DSM_RESULTS(X)                                                        \
	X(DSM_OK, 0)                                                          \
	X(DSM_UNMAPPED, 1)                                                    \
	X(DSM_RDONLY, 2)                                                      \
	X(DSM_OUTSIDE, 3)                                                     \
	X(DSM_NOTLOCKED, 4)                                                   \
	X(DSM_NOTBLOCK, 5)                                                    \
	X(DSM_NOMEM, 6)
#define DSM_RESULT_CODES 7

/* SYNC_REPLY's flags. */
#define DSM_SYNC_ACK_WANTED 1

/* A decoded message: its pointers borrow the bytes it came from. */
struct dsm_msg {
	uint8_t type;
	uint16_t from;
	uint64_t rid, done, page;
	uint64_t writers, sharers, dver; /* PAGE, DIFF_ACK, NOTE */
	const uint8_t *bytes;		 /* PAGE: the page; DIFF: the runs */
	size_t nbytes;
	uint8_t access;	      /* PAGE */
	uint16_t nlive;	      /* PAGE: live blocks, */
	const uint8_t *live;  /* as on the wire (checked) */
	uint8_t op;	      /* ATOMIC, SYNC */
	uint16_t off;	      /* ATOMIC, SYNC, FREE */
	uint64_t a, b;	      /* ATOMIC; a: SYNC's argument */
	uint8_t res;	      /* ATOMIC_REPLY, SYNC_REPLY, FREE_REPLY: wire code */
	uint8_t flags;	      /* SYNC_REPLY */
	uint64_t old;	      /* ATOMIC_REPLY; SYNC_REPLY's value */
	uint64_t first, npages; /* FREE_REPLY */
};

/* The name of @type, or NULL. */
const char *dsm__msg_name(unsigned type);
/* Whether @type is a request to the page's home (else a home's reply or
 * note to a cache). @type must be known. */
bool dsm__msg_to_home(unsigned type);
/* 0 or FL_EFORMAT; every byte hostile. */
int dsm__msg_decode(const void *p, size_t len, struct dsm_msg *m);
/* Append @m's encoding to @b (fl_buf_failed tells). */
void dsm__msg_encode(const struct dsm_msg *m, struct fl_buf *b);

/* Append the runs where @data differs from @twin (the DIFF payload) to
 * @b; returns the number of changed bytes. */
size_t dsm__diff_encode(const uint8_t *twin, const uint8_t *data,
			struct fl_buf *b);
/* Apply a DIFF payload (already validated by the decoder) to @page. */
void dsm__diff_apply(uint8_t *page, const uint8_t *runs, size_t len);
/* A result's wire code, and back (an unknown code: -1). */
uint8_t dsm__res_code(enum dsm_res r);
int dsm__code_res(uint8_t code);

/* ---- A node's state ---- */

/* A reply a home owes, sent once nothing holds it any more: every note
 * about the writers of the pages it concerns acked (so nobody learns of
 * a release before every sharer learned the page has a new writer), and
 * every SYNC_ACK it waits for in (a sync op that answered waiters of the
 * requester's own node). @wait counts what holds it, plus one while its
 * maker still fills it in (dsm__reply_done drops that one). */
struct dsm_reply;

/* A reply held on one page until the page's notes are acked. */
struct dsm_hold {
	struct dsm_hold *next;
	struct dsm_reply *r;
	bool owned; /* malloc'd (else the reply's own @link) */
};

struct dsm_reply {
	uint32_t wait;
	uint8_t type; /* DIFF_ACK, ATOMIC_REPLY, SYNC_REPLY, FREE_REPLY */
	uint16_t to;
	uint64_t rid, page;
	enum dsm_res res;
	uint8_t flags;	      /* SYNC_REPLY */
	uint64_t old;	      /* ATOMIC_REPLY, SYNC_REPLY: the value */
	uint64_t first, npages; /* FREE_REPLY */
	struct dsm_hold link; /* the first page it is held on */
	bool linked;
};

/* A SYNC_ACK a reply waits for: node @from's answer to request @rid. */
struct dsm_ackwait {
	uint16_t from;
	uint64_t rid;
	struct dsm_reply *r;
};

/* A caller queued on a word at its home (lock, wait), in arrival order
 * per page. */
struct dsm_qent {
	struct dsm_qent *next;
	uint16_t off;
	uint8_t op;	    /* DSM_LOCK or DSM_WAITEQ */
	int from;	    /* its node, or -1: the home's own caller */
	uint64_t rid;	    /* the request (from >= 0) */
	struct dsm_wait *w; /* the caller (from < 0) */
	uint64_t tid;	    /* DSM_LOCK's locker (robust) */
};

/* Robust mutexes: the thread that holds a mutex word at its home (0:
 * not named), or that it was lost holding it (@dead). */
struct dsm_holder {
	struct dsm_holder *next;
	uint16_t off;
	bool dead;
	uint64_t tid;
};

/* One page as a node knows it: a cached copy (elsewhere) or the master
 * copy and directory entry (at its home). */
struct dsm_page {
	struct dsm_page *hnext; /* hash chain */
	uint64_t page;
	uint8_t *data; /* the copy (NULL: none, invalid) or the master */
	/* Cache side: the buffer of a copy an acquire invalidated, kept and
	 * refilled in place by the next PAGE, so that host addresses
	 * dsm_map() handed out stay valid memory while the node lives. */
	uint8_t *stale;
	/* What the directory says: writers and sharers as node bit masks,
	 * and its version (bumped at every change of writers). At the home
	 * these are the directory; in a cache, the newest heard of. */
	uint64_t writers, sharers, dver;
	/* Cache side. */
	uint8_t *twin;		/* the copy at the first write since release */
	struct dsm_page *dnext; /* dirty list */
	bool dirty;
	bool diff_inflight; /* a diff of it awaits its ack */
	bool gone;	    /* the home said unmapped (until an acquire) */
	bool nomem;	    /* its PAGE found no memory: the next access fails */
	uint8_t access;	    /* the copy's, as the home mapped it */
	uint16_t nlive;	    /* live blocks the home sent (0: not kept) */
	struct dsm_extent *live;
	uint64_t fetch_rid; /* the GET in flight, 0 none */
	uint64_t fetch_epoch;
	struct dsm_wait *waiters; /* callers waiting for the fetch */
	/* Home side. */
	uint32_t notes_out;   /* notes not yet acked */
	uint32_t local_holds; /* own writes waiting for them (outstanding) */
	struct dsm_hold *holds, **holds_tail;
	struct dsm_qent *qhead, *qtail; /* callers queued on its words */
	struct dsm_holder *holders; /* robust: its locked words' holders */
};

/* A request of ours awaiting its reply. */
struct dsm_req {
	uint64_t rid;
	uint8_t type;
	uint16_t to;
	bool queued; /* its home said QUEUED: not counted in @done */
	uint64_t page;
	struct dsm_wait *w; /* ATOMIC, SYNC, FREE: whom the reply wakes */
};

/* A note of ours (at a home) awaiting its ack. */
struct dsm_note {
	uint64_t rid;
	uint16_t to;
	struct dsm_page *pg;
};

/* A home's memory of a request it applied, to answer duplicates. */
struct dsm_cached {
	uint64_t rid;
	uint8_t type;
	bool done;   /* replied (else held, or queued) */
	bool queued; /* waits in a word's queue */
	enum dsm_res res; /* the reply's, once done */
	uint8_t flags;
	uint64_t old, first, npages;
};

struct dsm_peer {
	uint64_t done; /* the highest @done it sent */
	uint64_t sent, recv; /* messages to it and from it (dsm_counts) */
	struct dsm_cached *c;
	size_t n, cap;
	size_t nqueued; /* of @c: queued on words */
};

struct dsm_node {
	int self, nodes;
	bool robust;
	int (*home)(void *ctx, uint64_t page);
	void *home_ctx;
	struct dsm_io io;
	/* Pages by number: chained hash, power-of-two buckets. */
	struct dsm_page **tab;
	size_t tab_cap, tab_len;
	struct dsm_page *dirty;
	uint64_t next_rid;
	uint64_t acq_epoch;	/* acquires so far */
	uint32_t outstanding;	/* diffs unacked + own writes held */
	struct dsm_wait *rel_waiters;
	struct dsm_req *reqs;
	size_t nreqs, capreqs;
	struct dsm_note *notes;
	size_t nnotes, capnotes;
	struct dsm_ackwait *acks;
	size_t nacks, capacks;
	struct dsm_peer peer[DSM_MAX_NODES];
	uint64_t lost; /* nodes lost (dsm_node_lost), a bit each */
	struct dsm_extent live[DSM_LIVE_MAX]; /* io.map's, for one call */
	struct fl_buf out; /* encoding scratch */
	struct dsm_stats st;
};

/* Progress of a call that goes to a home (struct dsm_wait's @phase). */
enum { DSM_PH_START, DSM_PH_REMOTE, DSM_PH_ACQUIRE };

static inline uint64_t dsm__bit(int node)
{
	return 1ull << node;
}

/* dsm.c */
struct dsm_page *dsm__page(struct dsm_node *n, uint64_t page, bool create);
/* io.charge: a page's bytes taken (false: over the limit) or given
 * back. */
bool dsm__charge_page(struct dsm_node *n);
void dsm__credit_page(struct dsm_node *n);
int dsm__home(const struct dsm_node *n, uint64_t page);
/* Encode and send @m (its @from and @done filled in here). */
void dsm__send(struct dsm_node *n, int to, struct dsm_msg *m);
/* A fresh request id, remembered until its reply (dsm__req_take). */
bool dsm__req_add(struct dsm_node *n, uint8_t type, int to, uint64_t page,
		  struct dsm_wait *w, uint64_t *rid);
/* Take the request @rid of @type sent to @from, if there is one. */
bool dsm__req_take(struct dsm_node *n, uint64_t rid, uint8_t type, int from,
		   struct dsm_req *out);
/* The request @rid of @type sent to @from, left in place, or NULL. */
struct dsm_req *dsm__req_find(struct dsm_node *n, uint64_t rid, uint8_t type,
			      int from);
void dsm__wake_all(struct dsm_node *n, struct dsm_wait **list);
void dsm__outstanding_dec(struct dsm_node *n);
/* Drop the copy of @pg (a cache's, not dirty) as an acquire does. */
void dsm__drop_copy(struct dsm_node *n, struct dsm_page *pg);

/* dsm_lost.c: whether @node was lost. */
bool dsm__lost(const struct dsm_node *n, int node);
/* dsm_sync.c: @node's callers leave the word queues here. */
void dsm__queues_lost(struct dsm_node *n, int node);

/* dsm_home.c: the home side's directory and reply cache. */
/* Record @writer (-1: none) as a writer of home page @pg, noting every
 * sharer whose copy stops being safe to keep. false: no memory, nothing
 * done. */
bool dsm__dir_write(struct dsm_node *n, struct dsm_page *pg, int writer);
/* Hold @r on @pg until its notes are acked (nothing to hold: nothing
 * done); @r NULL: the home's own write, which its next release waits
 * for. false: no memory for a second hold of @r (it is not held). */
bool dsm__hold(struct dsm_node *n, struct dsm_page *pg, struct dsm_reply *r);
/* A reply of @type to @to for request @rid about @page (res DSM_OK,
 * @wait 1); NULL: no memory. */
struct dsm_reply *dsm__reply_new(uint8_t type, int to, uint64_t rid,
				 uint64_t page);
/* One thing less holds @r (its maker's, or a hold, or an ack); at none,
 * it is sent, recorded in the reply cache and freed. */
void dsm__reply_done(struct dsm_node *n, struct dsm_reply *r);
/* Whether request @m is new; then it is remembered (*@out). Otherwise it
 * was answered again (a reply, or QUEUED) or dropped, and counted. */
bool dsm__admit(struct dsm_node *n, const struct dsm_msg *m,
		struct dsm_cached **out);
/* Undo dsm__admit() for the entry it just made (a later step had no
 * memory): the request is refused. */
void dsm__unadmit(struct dsm_node *n, int from);
struct dsm_cached *dsm__cached(struct dsm_node *n, int from, uint64_t rid);
/* Forget what @m's @done says its sender no longer needs. */
void dsm__observe_done(struct dsm_node *n, const struct dsm_msg *m);
/* The home's mapping of @page (io.map); with @live, its live blocks
 * into n->live (*@nlive; 0: not kept). */
enum dsm_access dsm__home_map(struct dsm_node *n, uint64_t page, bool live,
			      uint32_t *nlive);
/* Whether [@off, @off + @len) lies inside one of @nlive extents. */
bool dsm__inside(const struct dsm_extent *live, uint32_t nlive, uint32_t off,
		 uint32_t len);
/* At the home: may the word at @off of @page be written by an atomic or
 * sync op? DSM_OK, DSM_UNMAPPED, DSM_RDONLY or DSM_OUTSIDE. */
enum dsm_res dsm__word_check(struct dsm_node *n, uint64_t page, uint32_t off);
/* Run @op on the word at @off of @page (8-aligned, inside): its old
 * value; *@stored whether it wrote. */
uint64_t dsm__atomic_run(uint8_t *page, uint32_t off, enum dsm_op op,
			 uint64_t a, uint64_t b, bool *stored);
/* Whether @op would write (a cas that fails does not). */
bool dsm__atomic_stores(const uint8_t *page, uint32_t off, enum dsm_op op,
			uint64_t a);
uint64_t dsm__load64(const uint8_t *p);
void dsm__store64(uint8_t *p, uint64_t v);

/* dsm_sync.c: a node's free of its home's queues (dsm_node_free). */
void dsm__queues_free(struct dsm_page *pg);

/* The handlers, one per message type; dsm_deliver checked the roles. */
#define DSM__DECL(name, code, min, max, home, fn, text)                       \
	void fn(struct dsm_node *n, const struct dsm_msg *m);
DSM_MESSAGES(DSM__DECL)
#undef DSM__DECL

#endif
