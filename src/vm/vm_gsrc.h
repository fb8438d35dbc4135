/* The page source: the only way a process's threads reach its global
 * memory. vm_gmem.c implements it on one machine (plain memory); the DSM
 * implements the same interface over the network, and the unit tests
 * have one that serves pages "remotely", from another node after
 * injected delays. This header is for implementers; the interpreter is
 * the only caller.
 *
 * Global addresses (docs/memory.md): bit 63 set; bits 62..47 a slot;
 * bits 46..0 the offset inside the slot. Slot 0 holds the module's data
 * and what galloc gives on the machine that started the process (its
 * origin); slot m + 1 is what galloc gives on machine m elsewhere. So a
 * page's home is computed from its address alone, and galloc on any
 * machine needs no coordination. The first page of every slot is never
 * mapped.
 *
 * What the interpreter guarantees: translations come only on a miss of
 * the worker's TLB, fences and atomics only where SPEC 3.1 puts them
 * (fence, cas/xadd/xchg, wait/wake/lock/unlock, spawn: release before
 * the child exists, thread end: release before its result is published,
 * join: acquire after the result). Every call is made by the thread a
 * worker runs (w->cur), from inside its instruction; when the call
 * returns VM_PARK the interpreter saves the thread's registers at the
 * instruction (the operand stack as the instruction found it, or with
 * its progress in its operands: copy, fill) before the thread stops, and
 * a resume that comes sooner waits for that (vm__park_commit).
 *
 * What a source guarantees: each call returns VM_OK, VM_FAULT (with
 * vm_gsrc_fault() called: a runtime error naming what is wrong), or
 * VM_PARK; a translation also VM_MOVE, when vm_gsrc_move() said so (the
 * thread's writes released: it may move, as the movable op says).
 * VM_PARK means the source called vm_gsrc_park() and will, from
 * any thread, later call vm_gsrc_resume() exactly once for it; the
 * thread stops, and when resumed its instruction runs again and makes the
 * same call, which must then take the reply (vm_gsrc_reply) and complete,
 * never apply an effect twice. While parked the thread counts as a
 * request in flight, so its process is neither deadlocked nor freed. A
 * page translated for writing stays writable, and translations the
 * source let the TLB cache stay valid host memory, until that thread's
 * next fence (vm_gsrc_tlb_flush drops this worker's cached
 * translations).
 *
 * Threads: sources are called on any worker of the process's node,
 * concurrently; they do their own locking. */
#ifndef FLOCK_VM_VM_GSRC_H
#define FLOCK_VM_VM_GSRC_H

#include "vm/vm_int.h"

enum vm_gop { VM_GOP_CAS, VM_GOP_XADD, VM_GOP_XCHG };

enum vm_fence {
	VM_FENCE_ACQUIRE = 1, /* see what others released */
	VM_FENCE_RELEASE = 2, /* make this thread's writes visible */
	VM_FENCE_FULL = 3,
};

struct vm_gsrc;

struct vm_gsrc_ops {
	/* Translate [addr, addr+n), inside one page, for a load (@write
	 * false) or a store; @what names the instruction in a fault. OK:
	 * *@data is the host address of @addr, and *@cache says whether the
	 * page's translation may stay in the worker's TLB (until a fence). */
	enum vm_res (*page)(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			    vm_word n, bool write, const char *what,
			    uint8_t **data, bool *cache);
	enum vm_res (*fence)(struct vm_gsrc *g, struct vm_worker *w,
			     enum vm_fence kind);
	/* cas (a expected, b new), xadd (a delta), xchg (a value) on the
	 * 8-byte-aligned word at @addr: a full fence; *@old its old value. */
	enum vm_res (*atomic)(struct vm_gsrc *g, struct vm_worker *w,
			      enum vm_gop op, vm_word addr, vm_word a,
			      vm_word b, const char *what, vm_word *old);
	/* wait: park while [addr] == @expected (OK: it differs, or the
	 * thread was woken); wake up to @n waiters; lock (*@status 0, or 1
	 * when the previous owner was lost); unlock (a fault when the word
	 * is not locked). All fences. */
	enum vm_res (*wait)(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			    vm_word expected);
	enum vm_res (*wake)(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			    vm_word n, vm_word *woken);
	enum vm_res (*lock)(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			    vm_word *status);
	enum vm_res (*unlock)(struct vm_gsrc *g, struct vm_worker *w,
			      vm_word addr);
	/* galloc of @n (nonzero) bytes, on this machine's range; free of a
	 * global block. */
	enum vm_res (*alloc)(struct vm_gsrc *g, struct vm_worker *w, vm_word n,
			     vm_word *addr);
	enum vm_res (*free)(struct vm_gsrc *g, struct vm_worker *w, vm_word addr);
	/* Release everything, once the process is quiet. */
	void (*close)(struct vm_gsrc *g);
	/* May thread @t (stopped between instructions, in a run queue)
	 * move to another machine now: it holds nothing here that is not
	 * released (written home)? Called under a run queue's lock: no
	 * parking, no waiting. NULL: always. */
	bool (*movable)(struct vm_gsrc *g, const struct vm_thread *t);
	/* Threads parked on a reply from another machine (a page, an
	 * atomic at the word's home), not on another thread: they run
	 * again as soon as it comes, so they are load. Any thread, no
	 * lock (a moment's count). NULL: none ever. */
	uint32_t (*waiting)(struct vm_gsrc *g);
};

/* An implementation's state begins with this. */
struct vm_gsrc {
	const struct vm_gsrc_ops *ops;
};

/* Map @p's module segments (read-only data, globals) at their fixed
 * places in slot-0 space @s, charged to its budget: what a source holding
 * slot 0 starts with. 0 or FL_ENOMEM with @err saying which and why. */
int vm__gspace_load(struct vm_space *s, const struct vm_proc *p,
		    struct fl_err *err);

/* The local source: the process's global memory on its own machine. */
int vm__glocal_new(struct vm_proc *p, struct vm_gsrc **out, struct fl_err *err);
/* Its space (slot 0), for tests that look inside. */
struct vm_space *vm__glocal_space(struct vm_gsrc *g);

/* ---- Helpers for implementations ---- */

/* Raise a runtime error for the running thread (then return VM_FAULT). */
#define vm_gsrc_fault vm__fault
/* The thread @w runs, and its process. */
static inline struct vm_thread *vm_gsrc_thread(struct vm_worker *w)
{
	return w->cur;
}
/* Park the running thread on a request to @addr (then return VM_PARK);
 * the returned thread is what vm_gsrc_resume() takes. */
struct vm_thread *vm_gsrc_park(struct vm_worker *w, vm_word addr);
/* Answer a parked thread's request, from any thread: it is queued on its
 * node (through the inbox) and its instruction runs again. The event
 * that carries the answer is the thread's own (t->rq): the caller lends
 * nothing, and must not touch @t or its process after the call, which
 * may let the process end and be freed. */
void vm_gsrc_resume(struct vm_thread *t, int32_t status, vm_word value);
/* The reply the re-executed instruction's call takes, if any. */
bool vm_gsrc_reply(struct vm_worker *w, int32_t *status, vm_word *value);
/* Drop the translations this worker caches (at a fence). */
void vm_gsrc_tlb_flush(struct vm_worker *w);

/* A translation of the running thread misses here: @addr's page is
 * homed on another machine and must be fetched. Counts the fault for the
 * thread (vm_peer.h, "Locality"); returns the machine the thread should
 * move to instead, or -1 to fetch. Then the source releases the
 * thread's writes (a fence: VM_PARK, VM_FAULT return as they are) and
 * calls vm_gsrc_move(). Cheap; call it only on that slow path, with or
 * without the source's locks. */
int vm_gsrc_remote_fault(struct vm_worker *w, vm_word addr);
/* The running thread's writes are released (it holds nothing here):
 * claim room on machine @to. True: return VM_MOVE, and the thread moves
 * there for its data; false (another took the room, or the movable op
 * says no): fetch after all. Called without the source's locks. */
bool vm_gsrc_move(struct vm_worker *w, int to);

#endif
