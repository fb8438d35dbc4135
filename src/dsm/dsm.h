/* Global memory across machines: the DSM protocol core, sans I/O.
 *
 * Home-based lazy release consistency over 4096-byte pages for one
 * process spread over N nodes (ids 0 .. N-1). Every page has a home node,
 * given by a function the caller passes (in the VM: the slot in its
 * address); the home holds the master copy, the page's directory entry,
 * and -- through io.map and io.free -- its mapping and allocator. Other
 * nodes cache copies. The core owns no socket, timer or thread: the
 * driver feeds it calls and messages (dsm_deliver) and it answers through
 * struct dsm_io. docs/memory.md, "Across machines", describes the
 * protocol.
 *
 * The contract a program relies on is SPEC 3.1, with the node as the
 * unit: a write made on node A before A's dsm_release() completes is
 * seen by node B's reads after a dsm_acquire() that B starts once A's
 * release completed (returned DSM_OK). dsm_atomic() and dsm_sync() are
 * linearizable and full fences (release, the operation at the word's
 * home, acquire).
 *
 * Waiting. A call that needs the network, or another caller (a lock
 * held, a wait on an equal word), returns DSM_WAIT; the core then calls
 * io.wake(ctx, w) exactly once, from inside a later dsm_deliver() or --
 * at the home, for a caller queued there -- a later call on the node by
 * another caller, and the caller makes the same call again with the same
 * @w (the parked thread's instruction running again, as vm_gsrc.h's
 * VM_PARK contract has it). The repeated call takes what arrived and
 * either completes or returns DSM_WAIT again (another wake will follow).
 * No effect applies twice: a write, atomic, sync op or free that
 * returned DSM_WAIT has not happened yet, except the remote (or queued)
 * half of one, whose result waits in @w. A struct dsm_wait belongs to
 * one caller (one VM thread) and is lent to the core from a DSM_WAIT
 * until its wake; io.wake and io.queued must not call back into the node
 * (queue the thread instead).
 *
 * Threads: none of its own. One node is called by one thread at a time
 * (the driver serializes calls and deliveries); nodes share nothing, so
 * a test can run many in one process. */
#ifndef FLOCK_DSM_DSM_H
#define FLOCK_DSM_DSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fl_error.h"

#define DSM_PAGE_SIZE 4096
#define DSM_MAX_NODES 64
/* Page numbers of 64-bit addresses: below 2^52. */
#define DSM_PAGE_LIMIT (1ull << 52)

enum dsm_res {
	DSM_OK,	   /* done */
	DSM_WAIT,  /* parked: io.wake(w) follows once, then call again */
	DSM_BAD,   /* the arguments: outside the page, misaligned, bad op,
		    * a page no node homes */
	DSM_NOMEM, /* the host refused memory; nothing happened */
	/* What the page's home says, through its io.map and io.free
	 * (nothing happened): */
	DSM_UNMAPPED,  /* the page is not mapped */
	DSM_RDONLY,    /* a write, atomic or sync op on a read-only page */
	DSM_OUTSIDE,   /* not inside one live block (the home keeps them) */
	DSM_NOTLOCKED, /* unlock of a word that is 0 */
	DSM_NOTBLOCK,  /* free of an address that starts no live block */
	/* The page's home was lost (dsm_node_lost): nothing happened, or
	 * what was sent there is gone. Never on the wire. */
	DSM_LOST,
};

enum dsm_op { DSM_CAS, DSM_XADD, DSM_XCHG };

/* Blocking synchronisation on a word, run at its home (dsm_sync). */
enum dsm_sync_op { DSM_LOCK, DSM_UNLOCK, DSM_WAITEQ, DSM_WAKE };

/* How the home maps a page (io.map). */
enum dsm_access { DSM_MAP_NONE, DSM_MAP_RO, DSM_MAP_RW };

/* A live block's bytes on one page (the part of it on that page). */
struct dsm_extent {
	uint16_t off, len; /* len 1 .. DSM_PAGE_SIZE - off */
};
#define DSM_LIVE_MAX (DSM_PAGE_SIZE / 8) /* blocks are 8-aligned */

/* A caller's parking place (one per VM thread). Initialize with
 * dsm_wait_init(); @user is the caller's, the rest the core's. */
struct dsm_wait {
	void *user;
	struct dsm_wait *next; /* on one of the core's wait lists */
	uint64_t old;	       /* an atomic's or sync op's value, once in */
	int phase;	       /* an atomic's, sync op's or free's progress */
	int res;	       /* and its result (enum dsm_res) */
	uint64_t acq;	       /* the node's acquires as of its last one */
};

struct dsm_io {
	/* Send @len bytes to node @to (never the sender itself). The bytes
	 * are borrowed for the call. */
	void (*send)(void *ctx, int to, const void *msg, size_t len);
	/* What @w waited for arrived: retry its call. */
	void (*wake)(void *ctx, struct dsm_wait *w);
	/* @w's lock or wait went into the word's queue at its home: from
	 * now until its wake it waits for another caller, not for the
	 * network (a driver counting what can still make progress stops
	 * counting it). At most once per call, before its wake: inside
	 * dsm_deliver() (the home's QUEUED) or, at the home, inside the
	 * call that queued it. NULL: not told. */
	void (*queued)(void *ctx, struct dsm_wait *w);
	/* The home's side (its mapping and allocator), asked only about
	 * pages homed here, from inside the node's calls and deliveries;
	 * neither calls back into the node. NULL: every page mapped
	 * writable, no live blocks kept, every free DSM_NOTBLOCK.
	 *
	 * map: how @page is mapped; when the home keeps live blocks
	 * (--check), also those on it into @live (at most DSM_LIVE_MAX,
	 * increasing offsets, never overlapping) and their count into
	 * *@nlive; 0: not kept. A mapped page that keeps them has at least
	 * one. */
	enum dsm_access (*map)(void *ctx, uint64_t page, struct dsm_extent *live,
			       uint32_t *nlive);
	/* free: the block that starts at @off of @page: DSM_OK, with
	 * [*@first, *@first + *@npages) the pages the free unmapped
	 * (*@npages 0: none), or DSM_NOTBLOCK, or DSM_NOMEM. */
	enum dsm_res (*free)(void *ctx, uint64_t page, uint32_t off,
			     uint64_t *first, uint64_t *npages);
	/* The memory the node takes for pages homed elsewhere (copies,
	 * twins): @bytes more (false: over the process's limit, nothing
	 * taken: the access is DSM_NOMEM), or given back (@bytes < 0).
	 * Master copies are the home's allocator's to count. NULL: not
	 * counted. */
	bool (*charge)(void *ctx, int64_t bytes);
	/* What charge would still take, as of now (a guess: nothing is
	 * taken). NULL: no limit. */
	int64_t (*room)(void *ctx);
	void *ctx;
};

struct dsm_config {
	int self;  /* this node's id */
	int nodes; /* 1 .. DSM_MAX_NODES */
	/* The home of @page: 0 .. nodes-1, the same on every node. */
	int (*home)(void *ctx, uint64_t page);
	void *home_ctx;
	struct dsm_io io;
	/* Robust mutexes (flock run --survive): a home keeps which thread
	 * holds each mutex word it homes (DSM_LOCK's @arg names the
	 * locker), so that dsm_threads_lost can pass on those a lost thread
	 * held. */
	bool robust;
};

/* Counters, per node, since it was made. */
struct dsm_stats {
	uint64_t pages_fetched; /* page copies installed from a home */
	uint64_t prefetched;	/* GETs sent ahead of a scan, none waiting */
	uint64_t prefetch_dropped; /* their pages that found no memory */
	uint64_t diffs_sent;
	uint64_t diff_bytes;	/* changed bytes those diffs carried */
	uint64_t msgs_sent, bytes_sent;
	uint64_t msgs_recv, bytes_recv;
	uint64_t invalidations; /* cached copies dropped (acquire, free) */
	uint64_t notes_sent;	/* home: "this page has a new writer" */
	uint64_t atomics_served; /* home: atomics run here for others */
	uint64_t syncs_served;	/* home: sync ops run here for others */
	uint64_t queued;	/* home: locks and waits queued here */
	uint64_t frees_served;	/* home: frees run here for others */
	uint64_t dups;		/* duplicates recognized and not applied */
	uint64_t malformed;	/* messages dropped: bytes or roles wrong */
	uint64_t refused;	/* well-formed but dropped: no memory, cache full */
};

struct dsm_node;

/* Make node @cfg->self. 0, FL_EINVAL (a bad config) or FL_ENOMEM, with
 * @err saying which. */
int dsm_node_new(const struct dsm_config *cfg, struct dsm_node **out,
		 struct fl_err *err);
/* Free @n and everything it holds; NULL is a no-op. Waits lent to it
 * are forgotten, never woken. */
void dsm_node_free(struct dsm_node *n);

void dsm_wait_init(struct dsm_wait *w, void *user);
/* @w sees what the node's latest acquire lets in (as if it had made
 * it): for a caller new to the node, which may start after any of
 * them. dsm_wait_init's caller has seen none, so any copy serves it. */
void dsm_wait_current(const struct dsm_node *n, struct dsm_wait *w);

/* Node @node is gone for good (its machine was declared lost): every
 * call waiting on it is woken (its call then ends DSM_LOST), what it was
 * to acknowledge here counts as acknowledged, its callers queued on
 * words homed here are dropped, and every later access to a page it
 * homed ends DSM_LOST. Its later messages must not be delivered. */
void dsm_node_lost(struct dsm_node *n, int node);

/* Copy [@off, @off + @len) of @page to @out, or from @in. A miss fetches
 * the page from its home (DSM_WAIT). A write at the home changes the
 * master copy; elsewhere the first write after a release keeps a twin
 * of the page, to diff against at the next release. The page must be
 * mapped (else DSM_UNMAPPED), for a write writable (DSM_RDONLY), as its
 * home's io.map says -- at a cache, as it said when the copy was
 * fetched; a page found unmapped stays so here until the next acquire.
 * Live blocks are not checked (the range may be any run of bytes). */
enum dsm_res dsm_read(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		      uint32_t off, uint32_t len, void *out);
enum dsm_res dsm_write(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		       uint32_t off, uint32_t len, const void *in);
/* dsm_write of every byte where @now differs from @was (a page each):
 * a writer's private copy against its twin, merged in one call -- the
 * bytes it left alone are not written, so another writer's changes to
 * them stand. Nothing happens (not even a fetch) when none differs. */
enum dsm_res dsm_write_diff(struct dsm_node *n, struct dsm_wait *w,
			    uint64_t page, const uint8_t *now,
			    const uint8_t *was);

/* The node's copy of @page (or, at its home, the master), for reading in
 * place: fetched on a miss like dsm_read (DSM_WAIT), with the same
 * mapping checks (@write: the caller means to write the page, through
 * dsm_write), and [@off, @off + @len) must lie inside one live block
 * when the home keeps them (DSM_OUTSIDE). *@data is borrowed
 * and stays valid host memory until the node is freed -- an acquire that
 * invalidates the copy keeps its buffer, and the next fetch refills it
 * in place -- but its bytes change under the reader at later calls on
 * the node (a fetch refilling it, a dsm_write, at the home a merged
 * diff or an atomic). So a reader that keeps the address between calls
 * sees the page as of some moment since, byte by byte, which is what a
 * racy reader may see (SPEC 3.1); after its next dsm_acquire it must map
 * again to see what others released. Never written through: writes go
 * through dsm_write, which keeps the twin. */
enum dsm_res dsm_map(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		     bool write, uint32_t off, uint32_t len,
		     const uint8_t **data);

/* Whether an access to @page by @w now needs the network: homed on
 * another node, and this node has no copy of it that @w may use (nor its
 * home's word that it is unmapped), so dsm_read, dsm_write or dsm_map
 * would fetch it (or wait for a fetch in flight). Nothing changes; false for a page no node
 * homes. */
bool dsm_missing(struct dsm_node *n, const struct dsm_wait *w, uint64_t page);

/* Send every dirty page's diff home; DSM_OK once every home acked all
 * this node's diffs (and every directory note they caused was acked). */
enum dsm_res dsm_release(struct dsm_node *n, struct dsm_wait *w);
/* Release first if anything is unreleased; then the copies of pages
 * another node may have written (the home's directory says which:
 * read-only, private and own-single-writer pages stay) that were
 * fetched before this no longer serve @w: its next access to one drops
 * it and fetches it again (releasing first, if the page is dirty), while
 * callers that have not acquired since go on reading it. */
enum dsm_res dsm_acquire(struct dsm_node *n, struct dsm_wait *w);

/* cas (@a expected, @b new), xadd (@a delta), xchg (@a value) on the
 * 8-byte-aligned little-endian word at @off of @page, run at its home: a
 * release, the operation, an acquire. *@old: the word before. The word
 * must be mapped writable and inside a live block when the home keeps
 * them (DSM_UNMAPPED, DSM_RDONLY, DSM_OUTSIDE: nothing ran). */
enum dsm_res dsm_atomic(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
			uint32_t off, enum dsm_op op, uint64_t a, uint64_t b,
			uint64_t *old);

/* Blocking synchronisation on the 8-byte-aligned word at @off of @page,
 * run at its home: a release, the operation, an acquire. The word lives
 * in the page (a read sees it), and each word has one FIFO queue of
 * callers at its home, home-local callers and other nodes' alike:
 *   DSM_LOCK: a mutex word is 0 free, 1 locked, 2 locked with callers
 *     queued. 0 becomes 1 and the call completes (*@out 0: the
 *     previous owner was not lost); otherwise the word becomes 2 and
 *     the caller queues until an unlock hands it the mutex.
 *   DSM_UNLOCK: 0 is DSM_NOTLOCKED (nothing changes). Otherwise, with
 *     lockers queued, the first is handed the mutex: the word stays
 *     locked, 2 while more are queued, else 1; with none it becomes 0.
 *   DSM_WAITEQ: if the word equals @arg the caller queues until a wake
 *     (compare and enqueue are one step at the home: no wake-up is
 *     lost); else it completes at once. *@out 0.
 *   DSM_WAKE: completes up to @arg queued waiters of the word, first
 *     queued first; *@out how many.
 * A queued caller gets io.queued, then (when answered) its wake. A sync
 * op that answers callers queued by the caller's own node completes only
 * after that node took their answers (so a driver counting runnable
 * callers never sees the count fall between the two). The word must be
 * mapped writable and inside a live block (not checked for DSM_WAKE). */
enum dsm_res dsm_sync(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		      uint32_t off, enum dsm_sync_op op, uint64_t arg,
		      uint64_t *out);

/* Threads were lost with their machine, those for which @lost(@ctx,
 * tid) says so: each mutex word homed here that one of them held goes
 * to its first queued locker, whose lock completes with *@out 1; with
 * none queued it stays locked until the next DSM_LOCK, which takes it
 * with 1. Only on a robust node (dsm_config); DSM_NOMEM: some were not
 * passed on. */
enum dsm_res dsm_threads_lost(struct dsm_node *n,
			      bool (*lost)(void *ctx, uint64_t tid), void *ctx);

/* Free the block that starts at @off of @page, at the page's home (its
 * io.free): a release first (no diff of this node's reaches the block's
 * pages after it), then the free. DSM_OK, DSM_NOTBLOCK or DSM_NOMEM (as
 * the allocator says). The home records itself as a writer of every page
 * the free touched, so every other node that caches one drops it at its
 * next acquire (and is then told DSM_UNMAPPED, or sees the new live
 * blocks); this node drops its clean copies of them at once. */
enum dsm_res dsm_free(struct dsm_node *n, struct dsm_wait *w, uint64_t page,
		      uint32_t off);

/* At the home of @page, before any node fetched or wrote it: set
 * [@off, @off + @len) of its master copy as the process's initial
 * contents (the module's data). No writer is recorded, so copies of a
 * page only ever loaded stay valid across acquires. DSM_BAD when @page
 * is not homed here or some node already has a copy; DSM_NOMEM. */
enum dsm_res dsm_home_load(struct dsm_node *n, uint64_t page, uint32_t off,
			   uint32_t len, const void *in);

/* A message from node @from (as the transport authenticated it). Bytes
 * are borrowed and hostile: a malformed message, or one whose claimed
 * sender or role does not fit, is dropped and counted. */
void dsm_deliver(struct dsm_node *n, int from, const void *msg, size_t len);

void dsm_stats(const struct dsm_node *n, struct dsm_stats *out);
/* Messages sent to and received from the nodes not in @except (a mask:
 * lost ones), for a deadlock check's counts that must add up over the
 * nodes that live. */
void dsm_counts(const struct dsm_node *n, uint64_t except, uint64_t *sent,
		uint64_t *recv);

/* For tests and debugging: the master copy of @page if @n is its home
 * and has it, else NULL. Borrowed until the next call on @n. */
const uint8_t *dsm_home_page(const struct dsm_node *n, uint64_t page);

#endif
