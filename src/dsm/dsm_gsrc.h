/* A page source (vm_gsrc.h) over the DSM core (dsm.h): a process's
 * global memory as one node of a DSM sees it, the other nodes (its
 * pages' homes) reached through messages the caller carries.
 *
 * What maps onto the core: a translation onto dsm_map() (read in place
 * from the node's copy; a write translation gives the thread a private
 * copy of the page and its twin, see dsm_gsrc.c); every fence, and the
 * fence half of every atomic, wait/wake/lock/unlock, galloc and free
 * onto writing the thread's private changes into the node (dsm_write)
 * then dsm_release()/dsm_acquire(); atomics onto dsm_atomic(); DSM_WAIT
 * onto vm_gsrc_park(), the core's wake onto vm_gsrc_resume().
 *
 * What the core does not do yet, and this first step delegates to a
 * local source (vm_gmem.c) standing in for the home of slot 0, in the
 * same OS process, called synchronously:
 *   - galloc and free (the allocator), and the mapping a translation is
 *     checked against (null, unmapped, read-only, --check's live blocks):
 *     faults word for word as the local source's. galloc zero-fills in
 *     the DSM only the pages it hands out again (fresh pages are zero at
 *     their home);
 *   - lock and unlock: the mutex word lives in the stand-in's memory, not
 *     in the DSM's, so a plain load of a mutex word does not see its
 *     state (golden programs do not look); both are still full fences
 *     over the DSM;
 *   - the wait queues: wait reads the word through the DSM after an
 *     acquire and parks on the process's own queues (vm_sync.c), so it
 *     serves threads of this node only; a wake counter closes the race
 *     with a wake (a wait may then return spuriously, as it may anyway).
 * So one node runs the process's threads, and the homes only hold
 * memory. Module data: dsm_gsrc_load_home() fills the home's master
 * copies (done by dsm_gsrc_new when this node is their home).
 *
 * Memory the DSM node holds (copies, twins, private pages) is not
 * charged to the process's budget yet.
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
	/* The home of DSM page @page (dsm_gsrc_page()), as dsm_config's. */
	int (*home)(void *ctx, uint64_t page);
	void *home_ctx;
	/* Carry @len bytes to node @to (borrowed for the call), which the
	 * driver delivers there later, in any order. */
	void (*send)(void *ctx, int to, const void *msg, size_t len);
	void *send_ctx;
};

/* The DSM page of global address @addr: its slot and page number in it
 * (below DSM_PAGE_LIMIT). */
static inline uint64_t dsm_gsrc_page(vm_word addr)
{
	return (addr & ~VM_GLOBAL_BIT) >> VM_PAGE_SHIFT;
}

/* A source for @p on node @cfg->self, to become p->gs; 0, or FL_ENOMEM /
 * FL_EINVAL with @err saying why. It holds two references: the
 * process's (dropped by its close op) and the driver's
 * (dsm_gsrc_unref()), so deliveries may race with the process's end. */
int dsm_gsrc_new(struct vm_proc *p, const struct dsm_gsrc_config *cfg,
		 struct vm_gsrc **out, struct fl_err *err);
/* A message from node @from, borrowed. After the process closed the
 * source it is dropped. Any thread but a worker inside an op. */
void dsm_gsrc_deliver(struct vm_gsrc *g, int from, const void *msg,
		      size_t len);
/* The node's counters. */
void dsm_gsrc_stats(struct vm_gsrc *g, struct dsm_stats *out);
/* Drop the driver's reference (once it delivers no more). */
void dsm_gsrc_unref(struct vm_gsrc *g);

/* At node @home, the home of the module's pages: load @p's read-only
 * data and globals into their master copies. 0, or FL_ENOMEM /
 * FL_EINVAL (not homed there, or fetched already) with @err. */
int dsm_gsrc_load_home(struct dsm_node *home, const struct vm_proc *p,
		       struct fl_err *err);

#endif
