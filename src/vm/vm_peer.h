/* The peer: what a process running on several machines needs from the
 * layer that links its parts. This header is for implementers (src/dist/);
 * the VM calls these ops, and only when p->peer is set (a process on one
 * machine has none and behaves exactly as before).
 *
 * A process spread over N machines is N parts, one struct vm_proc on each
 * machine's node, all of one module; they share global memory through
 * their page sources (vm_gsrc.h) and everything else through the peer.
 * Part @origin is where the process was started: it runs main (which
 * never moves), holds the process's stdio and status, and is the home of
 * thread ids of slot 0; part m homes the ids it makes, of slot m + 1
 * (vm.h), as it homes its galloc range. A thread's *home* keeps its
 * table entry for as long as the thread is not joined: the thread itself
 * while it runs there, else a stand-in of state VM_T_AWAY that the
 * thread's end (wherever it ran) turns into a finished thread; so join,
 * which always asks the id's home, needs no directory of where threads
 * are now.
 *
 * Locality: a thread goes to its data. The page source tells the VM of
 * every fault of a running thread that another machine must serve
 * (vm_gsrc_remote_fault); the VM counts them per thread by home, and
 * once one home has VM_DATA_MOVE_FAULTS of them, the thread is not
 * main, that home has room (ops->room) and the thread's state is
 * smaller than the pages it fetched from there, the source releases
 * the thread's writes and the thread moves there (VM_MOVE_DATA) instead
 * of fetching; the instruction runs again at the home, where the page is
 * local. The counts start again from 0 after every move.
 *
 * What the VM guarantees: every op is called without any of the
 * process's locks held, on a worker or (ended, idle) on whatever thread
 * ended the process or lowers its busy count; ops must not block. While
 * an op runs the process lives (idle is called before the caller's share
 * of the busy count goes).
 *
 * What implementations guarantee: whatever ends the process from
 * outside its threads -- a message, a deadlock found -- holds a share of
 * its busy count while it does (vm__proc_busy_inc/dec around it), and
 * raises the count only while the process has not ended here (ops->ended
 * tells). A part's count falls to 0 whenever it is idle, so without the
 * share an end would never become quiet, and a raise after the end
 * could let it be freed under a running thread. */
#ifndef FLOCK_VM_VM_PEER_H
#define FLOCK_VM_VM_PEER_H

#include "vm/vm_int.h"

struct vm_peer;

struct vm_peer_ops {
	/* Thread @t leaves for machine @to, for t->move_why (enum
	 * vm_move_why): the origin, for stdio; for its data, the home of
	 * the pages it faults on, where it has t->fault_votes faults
	 * (vm_gsrc_remote_fault). It stopped at an instruction that runs
	 * again there, its registers saved and its writes released. It
	 * still counts in nbusy; from this call on the peer owns it
	 * (vm__thread_emigrate). */
	void (*move)(struct vm_peer *pe, struct vm_worker *w,
		     struct vm_thread *t, int to);
	/* @t joins @tid, which another machine homes: @t is parking
	 * (vm__park_begin VM_PARK_JOIN done); ask the home, then resume it
	 * with vm__resume(NULL, t, 0, result), or status FL_ENOENT when no
	 * such thread exists or it was joined already. */
	void (*join)(struct vm_peer *pe, struct vm_thread *t, vm_word tid);
	/* A thread whose id another machine homes finished here with
	 * result @r (its writes released): tell the home. */
	void (*done)(struct vm_peer *pe, vm_word tid, vm_word r);
	/* The home's thread @tid, joined from another machine, finished
	 * with @r: answer that join. */
	void (*joined)(struct vm_peer *pe, vm_word tid, vm_word r);
	/* The process ended here first, with @status and, for a runtime
	 * error, the line it printed (else NULL). */
	void (*ended)(struct vm_peer *pe, int status, const char *line);
	/* nbusy fell to 0 before the end: nothing here can run until a
	 * message comes (a deadlock only if that holds everywhere). */
	void (*idle)(struct vm_peer *pe);
	/* A spawn on @w made @c, not yet run: true when the peer took it
	 * (sent it to a machine that wants work: vm__thread_emigrate); the
	 * parent then goes on. */
	bool (*spawned)(struct vm_peer *pe, struct vm_worker *w,
			struct vm_thread *c);
	/* Has machine @to room for one more thread -- it asked this part
	 * for work and got none, so it is idle as far as this part knows?
	 * With @take, claim that room: true for one caller per ask, and a
	 * thread then goes there (its move op follows). NULL: never. */
	bool (*room)(struct vm_peer *pe, int to, bool take);
	/* The thread @w runs touched an absent page (vm_int.h) whose lent
	 * bytes @l have not come: ask for them. VM_PARK after parking it
	 * (vm_gsrc_park; vm_gsrc_resume once the bytes are in @l->data, or
	 * they cannot come, which its next try then finds), VM_OK when
	 * they came meanwhile, VM_FAULT (fault set) when they cannot come,
	 * VM_END once the process ended here. */
	enum vm_res (*fetch)(struct vm_peer *pe, struct vm_worker *w,
			     struct vm_lent *l, vm_word addr);
	/* vm_proc_free: no more calls into the process. */
	void (*close)(struct vm_peer *pe);
};

/* An implementation's state begins with this. */
struct vm_peer {
	const struct vm_peer_ops *ops;
	int self;   /* this machine's index in the process (node()) */
	int origin; /* the part that runs main */
};

/* The machine that homes thread ids (and global addresses) of @slot. */
static inline int vm_peer_home(const struct vm_peer *pe, uint32_t slot)
{
	return slot == VM_ORIGIN_SLOT ? pe->origin : (int)slot - 1;
}

/* The slot this part makes ids and galloc blocks in. */
static inline uint32_t vm_peer_slot(const struct vm_peer *pe)
{
	return pe->self == pe->origin ? VM_ORIGIN_SLOT : (uint32_t)pe->self + 1;
}

/* ---- What implementations call ---- */

/* Attach @pe to @p (made by vm__proc_new, no thread yet): ids from the
 * part's slot, ncpu() @ncpu (the whole VM's cores). */
void vm__proc_attach(struct vm_proc *p, struct vm_peer *pe, long ncpu);
/* The origin: start main (vm_proc_start's second half). 0 or FL_ENOMEM
 * with @err. */
int vm__proc_start_main(struct vm_proc *p, struct fl_err *err);

/* Take thread @t (not running, in no queue, counted in nbusy, its
 * writes released) out of this part for a move: it leaves the thread
 * table -- its home keeps a VM_T_AWAY stand-in -- and its nbusy share
 * goes. The caller encodes it first, then frees it with
 * vm__thread_free. False when there was no memory for the stand-in:
 * the thread left all the same, and the caller must end the process
 * (a join of it would wait for good). */
bool vm__thread_emigrate(struct vm_proc *p, struct vm_thread *t);
/* Install decoded threads here (they arrived): listed (taking over
 * their stand-ins at their home), counted, queued, each acquiring
 * before it runs on. */
void vm__thread_immigrate(struct vm_proc *p, struct vm_thread **ts, size_t n);
/* Up to @max queued threads of @p that may move (not main, not running
 * or parked, not just arrived; never yet run when @fresh, else any the
 * page source lets go: vm_gsrc_ops.movable), out of the node's run
 * queues
 * into @out (they stay counted in nbusy). */
size_t vm__sched_take(struct vm_proc *p, bool fresh, struct vm_thread **out,
		      size_t max);
/* At the home: thread @tid, which another machine ran, finished with
 * @r. False when the home has no such stand-in. */
bool vm__thread_finished(struct vm_proc *p, vm_word tid, vm_word r);
/* At the home: a join of @tid from another machine. 0 with *@r when it
 * had finished (then it is gone), 1 when it runs on (the home answers
 * through ops->joined when it ends), FL_ENOENT when no such thread
 * exists or it was joined already. */
int vm__thread_join_remote(struct vm_proc *p, vm_word tid, vm_word *r);
/* Threads of @p here that have not finished (stand-ins excluded). */
uint64_t vm__proc_live_threads(struct vm_proc *p);
/* The origin: every part is idle, so every thread (@n in all) is
 * blocked for good: fail the process as a deadlock. */
void vm__proc_deadlock(struct vm_proc *p, uint64_t n);
/* Nothing runs here (nbusy is 0)? */
static inline bool vm__proc_idle(struct vm_proc *p)
{
	return atomic_load(&p->nbusy) == 0;
}

#endif
