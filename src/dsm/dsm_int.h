/* The DSM core's private header: the wire format, a node's state, and
 * what its files share. Not for code outside src/dsm/ (tests and the
 * fuzz target excepted).
 *
 * A message is a 28-byte header and a payload, all little-endian:
 *   u8 version, u8 type, u16 sender node,
 *   u64 request id, u64 done, u64 page number.
 * A request carries a fresh id from its sender's counter; its reply
 * carries the same id. @done is the sender's lowest id still awaiting a
 * reply (every id below it was answered), so a home can forget replies
 * below it and drop late duplicates of them. Payloads per type are in
 * DSM_MESSAGES; a diff is u16 run count, then runs of
 *   u16 offset, u16 length, length bytes
 * in increasing offset order, never touching or overlapping, inside the
 * page. */
#ifndef FLOCK_DSM_DSM_INT_H
#define FLOCK_DSM_DSM_INT_H

#include "base/fl_buf.h"
#include "dsm/dsm.h"

#define DSM_VERSION 1
#define DSM_HEADER_SIZE 28
#define DSM_DIFF_MAX_RUNS (DSM_PAGE_SIZE / 2)
#define DSM_DIFF_MAX (2 + DSM_DIFF_MAX_RUNS * 4 + DSM_PAGE_SIZE / 2)
/* Replies a home remembers per sender (requests not yet forgotten). */
#define DSM_PEER_CACHE_MAX 4096

/* X(name, code, min payload, max payload, to the page's home?, handler,
 * what it carries). Codes are part of the wire format: never renumber,
 * only append. */
#define DSM_MESSAGES(X)                                                       \
	X(GET, 1, 0, 0, true, dsm__recv_get,                                  \
	  "a node asks the home for a copy of the page")                     \
	X(PAGE, 2, 24 + DSM_PAGE_SIZE, 24 + DSM_PAGE_SIZE, false,             \
	  dsm__recv_page,                                                     \
	  "the copy: u64 writers, u64 sharers, u64 directory version, "      \
	  "the bytes")                                                        \
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
	X(ATOMIC_REPLY, 8, 8, 8, false, dsm__recv_atomic_reply,               \
	  "its result: u64 the word's old value")

enum dsm_msg_type {
#define DSM__ENUM(name, code, min, max, home, fn, text) DSM_MSG_##name = code,
	DSM_MESSAGES(DSM__ENUM)
#undef DSM__ENUM
	DSM_MSG_END
};

/* A decoded message: its pointers borrow the bytes it came from. */
struct dsm_msg {
	uint8_t type;
	uint16_t from;
	uint64_t rid, done, page;
	uint64_t writers, sharers, dver; /* PAGE, DIFF_ACK, NOTE */
	const uint8_t *bytes;		 /* PAGE: the page; DIFF: the runs */
	size_t nbytes;
	uint8_t op; /* ATOMIC */
	uint16_t off;
	uint64_t a, b;
	uint64_t old; /* ATOMIC_REPLY */
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

/* ---- A node's state ---- */

/* Deferred completions at a home, queued on a page until every note
 * about its writers was acked (so nobody learns of a release before
 * every sharer learned the page has a new writer). */
enum dsm_hold_kind {
	DSM_HOLD_DIFF_ACK,     /* send DIFF_ACK to @to for @rid */
	DSM_HOLD_ATOMIC_REPLY, /* send ATOMIC_REPLY (@old) to @to for @rid */
};

struct dsm_hold {
	struct dsm_hold *next;
	enum dsm_hold_kind kind;
	uint16_t to;
	uint64_t rid;
	uint64_t old;
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
	uint64_t fetch_rid; /* the GET in flight, 0 none */
	uint64_t fetch_epoch;
	struct dsm_wait *waiters; /* callers waiting for the fetch */
	/* Home side. */
	uint32_t notes_out;   /* notes not yet acked */
	uint32_t local_holds; /* own writes waiting for them (outstanding) */
	struct dsm_hold *holds, **holds_tail;
};

/* A request of ours awaiting its reply. */
struct dsm_req {
	uint64_t rid;
	uint8_t type;
	uint16_t to;
	uint64_t page;
	struct dsm_wait *w; /* ATOMIC: whom the reply wakes */
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
	bool done; /* replied (else its hold is queued) */
	uint64_t old;
};

struct dsm_peer {
	uint64_t done; /* the highest @done it sent */
	struct dsm_cached *c;
	size_t n, cap;
};

struct dsm_node {
	int self, nodes;
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
	struct dsm_peer peer[DSM_MAX_NODES];
	struct fl_buf out; /* encoding scratch */
	struct dsm_stats st;
};

static inline uint64_t dsm__bit(int node)
{
	return 1ull << node;
}

/* dsm.c */
struct dsm_page *dsm__page(struct dsm_node *n, uint64_t page, bool create);
int dsm__home(const struct dsm_node *n, uint64_t page);
/* Encode and send @m (its @from and @done filled in here). */
void dsm__send(struct dsm_node *n, int to, struct dsm_msg *m);
/* A fresh request id, remembered until its reply (dsm__req_take). */
bool dsm__req_add(struct dsm_node *n, uint8_t type, int to, uint64_t page,
		  struct dsm_wait *w, uint64_t *rid);
/* Take the request @rid of @type sent to @from, if there is one. */
bool dsm__req_take(struct dsm_node *n, uint64_t rid, uint8_t type, int from,
		   struct dsm_req *out);
void dsm__wake_all(struct dsm_node *n, struct dsm_wait **list);
void dsm__outstanding_dec(struct dsm_node *n);

/* dsm_home.c: the home side. */
/* Record @writer (-1: none) as a writer of home page @pg, noting every sharer whose
 * copy stops being safe to keep; then, once no note about @pg is
 * unacked, complete @h (a reply to send), or with @h NULL the home's
 * own write (its outstanding count). false: no memory, nothing done. */
bool dsm__dir_write(struct dsm_node *n, struct dsm_page *pg, int writer,
		    const struct dsm_hold *h);
/* Run @op on the word at @off of @page (8-aligned, inside): its old
 * value; *@stored whether it wrote. */
uint64_t dsm__atomic_run(uint8_t *page, uint32_t off, enum dsm_op op,
			 uint64_t a, uint64_t b, bool *stored);
/* Whether @op would write (a cas that fails does not). */
bool dsm__atomic_stores(const uint8_t *page, uint32_t off, enum dsm_op op,
			uint64_t a);

/* The handlers, one per message type; dsm_deliver checked the roles. */
#define DSM__DECL(name, code, min, max, home, fn, text)                       \
	void fn(struct dsm_node *n, const struct dsm_msg *m);
DSM_MESSAGES(DSM__DECL)
#undef DSM__DECL

#endif
