/* A page source (vm_gsrc.h) over the DSM core (dsm.h): a process's
 * global memory as one node of a DSM sees it, the other nodes reached
 * through messages the caller carries.
 *
 * A process may run threads on several nodes at once: each node has its
 * own struct vm_proc, a "part" of the process with its own source, all
 * of them nodes of one DSM. Everything that happens at a word's or a
 * page's home happens there, through the core:
 *   - translations onto dsm_map(): read in place from the node's copy
 *     (one that must be fetched is first a remote fault of the thread,
 *     which may move it to the page's home instead: vm_gsrc.h); a
 *     write translation gives the thread a private copy of the page and
 *     its twin (dsm_gsrc.c says why); every fence, and the fence half of
 *     every atomic, wait/wake/lock/unlock and free, onto writing the
 *     thread's private changes into the node (dsm_write_diff), then
 *     dsm_release()/dsm_acquire();
 *   - atomics onto dsm_atomic(); wait, wake, lock and unlock onto
 *     dsm_sync(): the mutex words and wait queues live at the word's
 *     home (a plain load of a mutex word sees 0, 1 or 2);
 *   - the mapping: the home's, through io.map -- the null, unmapped,
 *     read-only and (--check) outside-any-live-block faults, word for
 *     word as the local source's (vm_gmem.c), for pages of any slot. A
 *     copy carries its page's live blocks from the home, so --check
 *     checks pages homed elsewhere too (as of the fetch: a block freed
 *     at its home becomes a fault here at this node's next acquire);
 *   - galloc: part of slot @cfg->slot (VM_SLOT_* in vm.h: slot 0 on the
 *     origin, which also holds the module's data; slot m + 1 on machine
 *     m elsewhere), which this node homes: its allocator runs here,
 *     charged to the process's budget, and zero-fills in the DSM only the
 *     pages it hands out again (fresh pages are zero at their home);
 *   - free: at the block's home (dsm_free), which answers "not a live
 *     block" for what is not one; the pages it unmaps become unmapped at
 *     every node that caches them by its next acquire;
 *   - DSM_WAIT onto vm_gsrc_park(), the core's wake onto
 *     vm_gsrc_resume().
 *
 * Deadlocks. A thread queued at a home (a lock held by another, a wait
 * on an equal word) is blocked on another thread, not on the network:
 * when the home says so (io.queued) the source lowers its process's busy
 * count, and raises it again when the thread's answer comes, before it
 * is resumed (vm_proc.c: at 0 the process is deadlocked). The answer to
 * a thread of this node always comes while the count is held up by the
 * thread that answers it, if that one runs here too (it is still inside
 * its unlock or wake: the core completes that only once this node took
 * the answers it caused, dsm_sync), so the count never falls to 0
 * while a thread can still be woken -- for a process all of whose
 * threads run on one node, whatever the homes. A process spread over
 * several parts is deadlocked only when all of them are: a part's count
 * at 0 says only that its own threads wait (on locks, words, joins), so
 * the layer that links the parts decides -- test_dsm_gsrc.c keeps each
 * part's count raised while the other may still wake one of its
 * threads -- and keeps every part's source open until no part can send
 * it more (a home answers whatever a part still asks).
 *
 * Memory the DSM node holds (copies, twins, master copies, private
 * pages) is not charged to the process's budget yet; the allocator's
 * pages are, as on one machine.
 *
 * Threads: the ops run on the process's workers, concurrently; one mutex
 * serializes every call into the node, deliveries included. The driver's
 * @send is called with it held and must not call back into the source. */
#ifndef FLOCK_DSM_DSM_GSRC_H
#define FLOCK_DSM_DSM_GSRC_H

#include "dsm/dsm.h"
#include "vm/vm_gsrc.h"

struct dsm_gsrc_config {
	int self;  /* this node's id in the DSM */
	int nodes; /* how many */
	/* The slot this node gallocs in, homed here (cfg->home says so for
	 * its pages). 0 only on the process's origin, which also holds the
	 * module's data. dsm_gsrc_node_slot() is the VM's choice. */
	uint32_t slot;
	/* The home of DSM page @page (dsm_gsrc_page()), as dsm_config's. */
	int (*home)(void *ctx, uint64_t page);
	void *home_ctx;
	/* Carry @len bytes to node @to (borrowed for the call), which the
	 * driver delivers there later, in any order. */
	void (*send)(void *ctx, int to, const void *msg, size_t len);
	void *send_ctx;
	/* Each node's machine (its member id), for the error that names a
	 * lost one; NULL: not named. Copied. */
	const uint32_t *ids;
	/* Robust mutexes (dsm_config): flock run --survive. */
	bool robust;
};

/* The DSM page of global address @addr: its slot and page number in it
 * (below DSM_PAGE_LIMIT). */
static inline uint64_t dsm_gsrc_page(vm_word addr)
{
	return (addr & ~VM_GLOBAL_BIT) >> VM_PAGE_SHIFT;
}

/* The slot of a DSM page. */
static inline uint32_t dsm_gsrc_page_slot(uint64_t page)
{
	return (uint32_t)(page >> (VM_SLOT_SHIFT - VM_PAGE_SHIFT));
}

/* When DSM node 0 is the process's origin and node m > 0 is the VM's
 * machine m: the slot node @node gallocs in (vm.h), and the home among
 * @nodes of a page of @slot (-1: none). A driver's home function may be
 * dsm_gsrc_slot_home(dsm_gsrc_page_slot(page), nodes). */
static inline uint32_t dsm_gsrc_node_slot(int node)
{
	return node == 0 ? VM_ORIGIN_SLOT : (uint32_t)node + 1;
}
static inline int dsm_gsrc_slot_home(uint32_t slot, int nodes)
{
	if (slot == VM_ORIGIN_SLOT)
		return 0;
	return slot >= 2 && slot - 1 < (uint32_t)nodes ? (int)slot - 1 : -1;
}

/* A source for @p on node @cfg->self, to become p->gs; 0, or FL_ENOMEM /
 * FL_EINVAL with @err saying why. On the origin (slot 0) it loads the
 * module's data into its master copies and maps it. It holds two
 * references: the process's (dropped by its close op) and the driver's
 * (dsm_gsrc_unref()), so deliveries may race with the process's end. */
int dsm_gsrc_new(struct vm_proc *p, const struct dsm_gsrc_config *cfg,
		 struct vm_gsrc **out, struct fl_err *err);
/* A message from node @from, borrowed. After the process closed the
 * source it is dropped. Any thread but a worker inside an op. */
void dsm_gsrc_deliver(struct vm_gsrc *g, int from, const void *msg,
		      size_t len);
/* Node @node's machine was lost (dsm_node_lost): what waits on it
 * resumes, and its pages fault ("global memory on a machine that was
 * lost"). Any thread but a worker inside an op; its later messages must
 * not be delivered. */
void dsm_gsrc_node_lost(struct vm_gsrc *g, int node);
/* Threads of the process were lost, those @lost says (dist.h's
 * threads_lost): the mutexes they held here pass on (dsm_threads_lost). */
void dsm_gsrc_threads_lost(struct vm_gsrc *g,
			   bool (*lost)(void *ctx, uint64_t tid), void *ctx);
/* The node's counters. */
void dsm_gsrc_stats(struct vm_gsrc *g, struct dsm_stats *out);
/* dsm_counts of the node (once it is closed, its totals). */
void dsm_gsrc_counts(struct vm_gsrc *g, uint64_t except, uint64_t *sent,
		     uint64_t *recv);
/* Drop the driver's reference (once it delivers no more). */
void dsm_gsrc_unref(struct vm_gsrc *g);

/* At node @home, the home of the module's pages: load @p's read-only
 * data and globals into their master copies (no mapping: for a bare
 * node standing in for the origin; dsm_gsrc_new does this and maps them
 * on the origin). 0, or FL_ENOMEM / FL_EINVAL (not homed there, or
 * fetched already) with @err. */
int dsm_gsrc_load_home(struct dsm_node *home, const struct vm_proc *p,
		       struct fl_err *err);

#endif
