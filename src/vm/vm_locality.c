/* Locality: a thread on one part of a process that keeps faulting on
 * pages another part homes moves there, instead of fetching them one
 * round trip at a time (vm_peer.h, "Locality").
 *
 * The page source calls vm_gsrc_remote_fault() on its slow path, for a
 * translation that needs the network. The thread counts the fault with
 * a Boyer-Moore majority vote over the homes (two words: the candidate
 * and its votes; a fault elsewhere takes one vote, and at 0 the next
 * home becomes the candidate), so a home holding most of its recent
 * faults wins however many parts there are, with no table. The thread
 * moves when, at a fault on the candidate's pages:
 *   - the candidate has VM_DATA_MOVE_FAULTS votes or more;
 *   - the thread may move: it is not main (which never moves), and its
 *     instruction can start again anywhere (not stdio or argv: w->stay);
 *   - moving is cheaper than the pages: its state (stack, frames, local
 *     pages, as vm_tstate.c sends them; capacities, an upper bound) is
 *     smaller than the votes' pages, taking the pages it fetched from
 *     there as the measure of those it will;
 *   - the home has room (the peer's room op: it asked for work and got
 *     none), claimed after the thread's writes are released and the
 *     source's movable op agrees, so two threads never rush to one idle
 *     part on the same news.
 * A moved thread's counts start again from 0 (they are not in its
 * state), so it moves again only for as many faults at its new place.
 *
 * Failure modes: none here; the source's release may park or fail, and
 * the peer's move may run out of memory (it ends the process, as for
 * stdio).
 *
 * Threads: the worker running the thread; nothing shared but the peer's
 * room op (atomic). */
#include "vm/vm_gsrc.h"
#include "vm/vm_peer.h"

/* An estimate of what moving @t sends: its state's fixed part, stack and
 * frames as allocated, and every page of its local heap. */
static uint64_t state_bytes(const struct vm_thread *t)
{
	uint64_t b = sizeof *t + (uint64_t)t->stack_cap * sizeof(vm_word) +
		     (uint64_t)t->frames_cap * sizeof(struct vm_frame);

	if (t->local.heap != NULL)
		b += (uint64_t)t->local.heap->top * VM_PAGE_SIZE;
	return b;
}

int vm_gsrc_remote_fault(struct vm_worker *w, vm_word addr)
{
	struct vm_thread *t = w->cur;
	struct vm_proc *p = t->proc;
	struct vm_peer *pe = p->peer;
	int home;

	if (pe == NULL)
		return -1;
	home = vm_peer_home(pe, vm_gslot(addr));
	if (home == pe->self)
		return -1;
	t->faults++;
	if (t->fault_votes == 0) {
		t->fault_home = home;
		t->fault_votes = 1;
	} else if (t->fault_home == home) {
		t->fault_votes++;
	} else {
		t->fault_votes--;
		return -1;
	}
	if (t->fault_votes < VM_DATA_MOVE_FAULTS || w->stay ||
	    t->tid == p->main_tid || pe->ops->room == NULL)
		return -1;
	if (state_bytes(t) >= (uint64_t)t->fault_votes * VM_PAGE_SIZE)
		return -1;
	return pe->ops->room(pe, home, false) ? home : -1;
}

bool vm_gsrc_move(struct vm_worker *w, int to)
{
	struct vm_thread *t = w->cur;
	struct vm_proc *p = t->proc;
	struct vm_peer *pe = p->peer;

	/* Released, it holds nothing here; the source has the last word. */
	if (p->gs->ops->movable != NULL && !p->gs->ops->movable(p->gs, t))
		return false;
	if (!pe->ops->room(pe, to, true))
		return false;
	t->move_to = to;
	t->move_why = VM_MOVE_DATA;
	return true;
}
