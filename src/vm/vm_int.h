/* Private to src/vm/: the structures behind vm.h. Not for other layers.
 *
 * Objects and who owns what:
 *   struct vm_node    one machine's runtime: worker OS threads and their
 *                     run queues, the inbox of outside events, timers. It
 *                     hosts any number of processes.
 *   struct vm_proc    one running program on a node: its verified module,
 *                     linked code, global memory space, thread table, wait
 *                     queues, output buffer, options.
 *   struct vm_thread  one VM thread: data stack, call frames, saved
 *                     registers, local memory space, what it is parked on.
 *                     Everything a thread needs to continue is plain data
 *                     (indices, not host pointers, and replies as values)
 *                     so a thread can be serialised (vm_tstate.c) and
 *                     moved to another machine.
 *   struct vm_worker  one OS thread of a node, running VM threads of any
 *                     of its processes; owns the translation caches (TLBs)
 *                     of whatever thread it runs.
 *   struct vm_space   a 63-bit address space of 4 KiB pages: a radix tree
 *                     of refcounted nodes (struct vm_radix) and pages,
 *                     plus the allocator. Local spaces are shared
 *                     copy-on-write after spawn; the global space is
 *                     shared by all the process's threads and changed
 *                     only under proc->glock.
 *   struct vm_page    one mapped page: the allocator's metadata for it and
 *                     its bytes. The VM's metadata never lives in program-
 *                     addressable memory. */
#ifndef FLOCK_VM_VM_INT_H
#define FLOCK_VM_VM_INT_H

#include "vm/vm.h"

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>

/* Program memory is the program's business: under SPEC 3.1 a plain store
 * and a plain load of one word by two threads, ordered only by fences, is
 * correct, but it is a C data race inside the VM. ThreadSanitizer builds
 * therefore leave the code that touches program memory uninstrumented
 * (the interpreter loop and the bulk copies), so that they report races in
 * the VM's own data, not the program's. */
#if defined(__SANITIZE_THREAD__)
#define VM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VM_TSAN 1
#endif
#endif
#ifdef VM_TSAN
#define VM_PROGRAM_MEMORY __attribute__((no_sanitize("thread")))
#else
#define VM_PROGRAM_MEMORY
#endif

/* ---- Pages and spaces (vm_mem.c, vm_heap.c) ---- */

#define VM_PAGE_SHIFT 12
/* Each space addresses 2^VM_SPACE_BITS bytes; the radix tree has
 * VM_RADIX_LEVELS levels of VM_RADIX_BITS each (the top one smaller). */
#define VM_SPACE_BITS 47
#define VM_RADIX_BITS 6
#define VM_RADIX_LEVELS 6
#define VM_RADIX_FAN (1u << VM_RADIX_BITS)
#define VM_MAX_PAGE ((vm_word)1 << (VM_SPACE_BITS - VM_PAGE_SHIFT))

/* Part of the thread-state format (vm_tstate.c): never renumber. */
enum vm_page_kind {
	VM_PAGE_RODATA, /* module read-only data: never writable */
	VM_PAGE_DATA,   /* module globals */
	VM_PAGE_SLAB,   /* small blocks of one size class */
	VM_PAGE_LARGE,  /* part of one block of whole pages */
};

#define VM_NCLASSES 16
#define VM_SMALL_MAX 2048 /* larger blocks take whole pages */
#define VM_SLAB_WORDS (VM_PAGE_SIZE / 8 / 64) /* bitmap words: 8-byte class */

/* Bytes of a local page that another machine lent (vm_peer.h, dist.h):
 * what an *absent* page points at. Its metadata came with the thread;
 * its 4096 bytes stay with the lender until the first access asks for
 * them (vm__lent_fetch), then sit in @data, which never changes again.
 * @refs counts the pages that point here (a copy-on-write copy of an
 * absent page is absent too, and points here as well) plus whatever the
 * peer keeps; the last reference calls @gone, the peer's, which frees
 * it. Made and freed only by the peer. */
struct vm_lent {
	_Atomic uint32_t refs;
	uint8_t *data; /* VM_PAGE_SIZE bytes once fetched (atomic), or NULL */
	void (*gone)(struct vm_lent *l);
};

/* A mapped page. @refs counts the radix-tree leaves that point at it: more
 * than one only in local spaces after spawn, and then nobody writes the
 * page or its metadata -- a writer copies it first (vm_mem.c).
 *
 * Local page bytes have three states: @data set (present); @data NULL and
 * @lent NULL (all zero: the shared zero page is read); @data NULL and
 * @lent set (absent: the bytes are on another machine). An absent page
 * is never read as zero and never put into a TLB: the TLB-miss path
 * fetches it first, installing @data once (atomically: threads of one
 * batch share the page). @lent stays set after the fetch, naming where
 * the bytes came from, until the page is freed. */
struct vm_page {
	_Atomic uint32_t refs;
	uint8_t kind;    /* enum vm_page_kind */
	uint8_t cls;     /* SLAB: size class index */
	uint16_t nlive;  /* SLAB: live blocks */
	uint32_t pidx;   /* SLAB: position in its class's partial stack */
	uint8_t *data;   /* VM_PAGE_SIZE bytes, or NULL while all zero */
	vm_word head;    /* LARGE, RODATA, DATA: first page of the block */
	vm_word bytes;   /* LARGE, RODATA, DATA: the block's size in bytes */
	uint64_t live[VM_SLAB_WORDS]; /* SLAB: a bit per block slot */
	uint32_t *sizes; /* SLAB under --check: each live block's size
			  * (VM_SIZES_MAX entries) */
	struct vm_page *next_retired; /* global: on the reuse list */
	struct vm_lent *lent; /* local: lent bytes (one reference), or NULL */
};

/* An interior radix-tree node; refcounted like pages. */
struct vm_radix {
	_Atomic uint32_t refs;
	void *slot[VM_RADIX_FAN];
};

/* A freed run of pages available for reuse. */
struct vm_range {
	vm_word first;
	vm_word n;
};

/* The allocator's state for one space. Shared copy-on-write between a
 * parent's and a child's local space after spawn (@refs > 1). */
struct vm_heap {
	_Atomic uint32_t refs;
	vm_word top; /* next never-used page number */
	struct vm_range *free_ranges;
	size_t nfree, free_cap;
	/* Per size class: pages with a free slot (a stack of page numbers). */
	vm_word *partial[VM_NCLASSES];
	size_t npartial[VM_NCLASSES], partial_cap[VM_NCLASSES];
	int64_t charged; /* bytes of it the budget was charged for */
};

struct vm_space {
	struct vm_radix *root;
	struct vm_heap *heap;
	vm_word base; /* VM_GLOBAL_BIT or 0 */
	bool check;   /* keep per-block sizes for --check */
	bool global;  /* never shared: pages are retired, not freed */
	uint64_t copies; /* pages copied on write so far (see vm__page_get_w) */
	struct vm_page *retired; /* global: unmapped pages kept for reuse */
	/* Bytes of pages the process may still create, shared by all its
	 * spaces (NULL: no limit); see charge() in vm_mem.c. */
	struct vm_budget *budget;
};

extern const uint32_t vm__class_size[VM_NCLASSES];

/* What the VM's own memory for a process costs against its limit
 * (--memory): every allocation it makes, with the host allocator's
 * overhead, so that the limit bounds the host memory the process takes. */
#define VM_MALLOC_OVERHEAD 16
#define VM_COST_PAGE                                                          \
	((int64_t)(VM_PAGE_SIZE + sizeof(struct vm_page) + 2 * VM_MALLOC_OVERHEAD))
#define VM_COST_NODE ((int64_t)(sizeof(struct vm_radix) + VM_MALLOC_OVERHEAD))
/* --check: a slab page's table of block sizes, for the smallest class. */
#define VM_SIZES_MAX (VM_PAGE_SIZE / 8)
#define VM_COST_SIZES ((int64_t)(VM_SIZES_MAX * 4 + VM_MALLOC_OVERHEAD))

/* Take @n bytes from / give them back to @budget (NULL: no limit); false
 * when fewer are left. Any thread. */
/* A memory budget: bytes left, and the budget it draws on too (the
 * node's, for a machine's offer to its processes; NULL: none). */
struct vm_budget {
	_Atomic int64_t left;
	struct vm_budget *parent;
};

/* Take @n bytes from @budget and its parents: false, and nothing
 * taken, when one of them has less. NULL: no limit. */
bool vm__charge(struct vm_budget *budget, int64_t n);
void vm__credit(struct vm_budget *budget, int64_t n);
/* What @budget and those above it have left, the least of them, as of
 * now (INT64_MAX: no limit); nothing taken. */
int64_t vm__budget_left(const struct vm_budget *budget);

/* Fields of a global page that racing workers may read while its owner
 * changes them (vm_gmem.c): relaxed atomics, each value valid alone. */
#define VM_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define VM_SET(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* 0 or FL_ENOMEM. */
int vm__space_init(struct vm_space *s, vm_word base, bool check, bool global);
void vm__space_close(struct vm_space *s);
/* Share @from's pages and allocator with @to, copy-on-write: O(1). */
void vm__space_fork(struct vm_space *to, const struct vm_space *from);
/* The page (for reading only), or NULL. Safe against concurrent mapping
 * in the global space. */
struct vm_page *vm__page_get(const struct vm_space *s, vm_word pageno);
/* The page, made private to this space so it may be written; NULL if
 * unmapped or out of memory (*@nomem tells which). A copy moves the page
 * to new host memory and bumps s->copies: cached translations of it are
 * stale and the caller must drop them. */
struct vm_page *vm__page_get_w(struct vm_space *s, vm_word pageno,
			       bool *nomem);
/* Map a new page (zero) at @pageno; NULL when out of memory. */
struct vm_page *vm__page_map(struct vm_space *s, vm_word pageno);
void vm__page_unmap(struct vm_space *s, vm_word pageno);
/* The page's bytes for writing, allocated on first write; an absent
 * page's only once its lent bytes came (copied), else NULL as when out
 * of memory: never zeros in place of lent bytes. */
uint8_t *vm__page_bytes(struct vm_page *pg);
/* Drop a reference to @pg (not of a global space); the last one frees
 * it, crediting @budget. */
void vm__page_unref(struct vm_page *pg, struct vm_budget *budget);
/* Is @pg absent (its bytes lent, not fetched yet)? */
static inline bool vm__page_absent(const struct vm_page *pg)
{
	return pg->lent != NULL && __atomic_load_n(&pg->data, __ATOMIC_ACQUIRE) == NULL;
}
void vm__lent_unref(struct vm_lent *l);

/* Allocate @n bytes (already nonzero); 0 when out of memory, of address
 * space, or of the process's budget. */
vm_word vm__heap_alloc(struct vm_space *s, vm_word n);
/* 0, FL_ENOMEM, or FL_EFAULT when @addr is not a live block start. Pages
 * the free unmapped are *@unmapped pages from *@first (translations to
 * flush). */
int vm__heap_free(struct vm_space *s, vm_word addr, vm_word *first,
		  vm_word *unmapped);
/* The slab page an alloc of @n bytes would take a slot of (its bytes
 * are zeroed there), or 0 when it would map a new page. */
vm_word vm__heap_slab_for(const struct vm_space *s, vm_word n);
/* --check: is [addr, addr+n) inside one live block (or segment)? */
bool vm__heap_live(const struct vm_space *s, vm_word addr, vm_word n);
/* Make @s's allocator state private (copy it if shared); false on ENOMEM
 * or when over the budget. */
bool vm__heap_own(struct vm_space *s);
/* Drop a reference to @h; the last one frees it, crediting @budget. */
void vm__heap_unref(struct vm_heap *h, struct vm_budget *budget);

/* ---- Linked code (vm_interp.c) ---- */

union vm_cell; /* linked code: a handler or an operand */

struct vm_xfunc {
	const union vm_cell *entry;
	uint32_t nargs;
	uint32_t nslots;      /* nargs + nlocals */
	uint32_t frame_words; /* nslots + max_stack */
	uint32_t index;       /* in the module's function table */
};

union vm_cell {
	const void *h;        /* handler address (computed goto) */
	uintptr_t op;         /* opcode (switch dispatch) */
	int64_t i;
	vm_word u;
	const union vm_cell *target;
	const struct vm_xfunc *fn;
};

struct vm_xcode {
	union vm_cell *cells;
	uint32_t *cell_off; /* module code offset of each cell, for errors */
	uint32_t *cell_at;  /* module code offset -> cell index */
	size_t ncells;
	struct vm_xfunc *funcs;
};

/* ---- Threads (vm_thread.c) ---- */

struct vm_frame {
	uint32_t ret; /* cell index to return to */
	uint32_t bp;  /* caller's slot base (word index in the stack) */
};

enum vm_tstate {
	VM_T_RUNNABLE, /* in a run queue, running, or parked */
	VM_T_DONE,     /* returned; @result is valid until joined */
	VM_T_AWAY,     /* its home's stand-in while it runs on another
			  machine (vm_peer.h): no stacks, no memory */
};

/* What a parked thread waits for (its instruction re-executes when the
 * reply comes). Part of the thread-state format: never renumber. */
enum vm_park {
	VM_PARK_NONE = 0,
	VM_PARK_JOIN = 1,   /* arg: the thread joined */
	VM_PARK_WAIT = 2,   /* arg: the word */
	VM_PARK_LOCK = 3,   /* arg: the mutex word */
	VM_PARK_INPUT = 4,  /* stdin: data or its end */
	VM_PARK_OUTPUT = 5, /* room in the output stream */
	VM_PARK_GLOBAL = 6, /* a page source request; arg: the address */
	VM_PARK__COUNT
};

/* The park protocol (vm__park_begin, vm__park_commit, vm__resume):
 *   RUN      running, queued, or just resumed
 *   PARKING  its instruction registered it with a waker and is stopping
 *   PARKED   stopped on its worker, in no run queue
 *   EARLY    resumed while still PARKING: its worker requeues it
 * A waker may resume a thread as soon as it was registered, before its
 * worker has let go of it; the states make exactly one side queue it. */
enum { VM_P_RUN, VM_P_PARKING, VM_P_PARKED, VM_P_EARLY };

/* A reply to a parked thread: what its instruction finds when it runs
 * again. @kind is the vm_park it answers. */
struct vm_reply {
	uint8_t kind;
	bool ready;
	int32_t status; /* 0, or an FL_E* code for the instruction */
	vm_word value;
};

struct vm_worker;

/* An entry in a wait queue (vm_sync.c): a thread waiting in wait or lock
 * on a word, or, for a page source serving other machines, a stand-in
 * for a remote thread. @wake runs under the queue's lock and must not
 * block. */
struct vm_waiter {
	struct vm_waiter *next;
	vm_word addr;
	const void *space; /* whose word: a process (global), a thread (local) */
	uint8_t kind;      /* VM_PARK_WAIT or VM_PARK_LOCK */
	void (*wake)(struct vm_waiter *wt, struct vm_worker *w, vm_word value);
};

struct vm_proc;

struct vm_thread {
	struct vm_proc *proc;
	vm_word tid;
	vm_word result;     /* DONE: main's or the function's return value */
	_Atomic int state;  /* enum vm_tstate */
	bool joined;        /* a join has claimed it */
	bool rjoined;       /* ... from another machine (vm_peer.h) */
	bool arrive;        /* moved here: acquire before it runs on */
	/* Saved registers while not running: cell index, stack indices of
	 * the top word (sp, -1 when empty) and of slot 0 (bp). A parked
	 * thread's pc is the instruction it parked in, which runs again. */
	uint32_t pc;
	int32_t sp;
	uint32_t bp;
	uint32_t stack_cap; /* words allocated; grows to opt.stack_words */
	vm_word *stack;
	uint32_t depth, frames_cap;
	struct vm_frame *frames;
	struct vm_space local;
	_Atomic int pstate; /* VM_P_*: the park protocol */
	uint8_t park;       /* enum vm_park: what it waits for */
	bool held;          /* see @partial */
	vm_word park_arg;
	struct vm_reply reply;
	/* Progress of a restartable instruction it parked in (bytes a write
	 * has queued so far), or a result it already has (@held: a join
	 * whose acquire fence parked); 0 and false between instructions. */
	vm_word partial;
	struct vm_thread *joiner; /* parked in join on this thread */
	struct vm_thread *next;   /* run queue link */
	/* What it is parked in: a wait queue (wait, lock; stdio's lists
	 * use the link), or a page source's request, whose reply is on its
	 * way through the inbox. Never both at once. */
	union {
		struct vm_waiter waiter;
		struct {
			struct vm_event ev;
			int32_t status;
			vm_word value;
		} rq;
	};
	/* Where it last ran: its worker's TLB is still valid for it only if
	 * that worker has run nothing else since (vm_sched.c). */
	struct vm_worker *last_worker;
	uint64_t last_run;
	/* Its page faults served by another machine since it last moved
	 * (vm_gsrc_remote_fault, on the page source's slow path): a
	 * Boyer-Moore majority vote over their homes -- @fault_home the
	 * candidate part, @fault_votes its count, which at 0 lets the next
	 * home take over -- and @faults all of them. Not in its state (a
	 * moved thread starts again from 0). */
	int32_t fault_home;
	uint32_t fault_votes, faults;
	/* Where a VM_STOP_MOVE sends it, and why (enum vm_move_why). */
	int32_t move_to;
	uint8_t move_why;
};

/* Remote faults on one home's pages after which a thread may move there
 * (vm_locality.c). Each costs a round trip and a page (4 KiB) fetched;
 * a thread's state is a few hundred bytes plus its stack and local
 * pages, and moving costs one trip. Sixteen is few enough that a thread
 * sweeping a remote array moves within its first 64 KiB, and enough that
 * a few stray reads (a shared counter, a flag) never move it. */
#define VM_DATA_MOVE_FAULTS 16

/* Why a thread stopped with VM_STOP_MOVE. */
enum vm_move_why {
	VM_MOVE_STDIO, /* stdio runs on the origin */
	VM_MOVE_DATA,  /* to the home of the pages it faults on */
};

/* ---- The node: workers, run queues, inbox, timers (vm_node.c,
 * vm_sched.c) ---- */

#define VM_TLB_SIZE 256
#define VM_TLB_TRACK 32 /* filled entries remembered for a cheap flush */

struct vm_tlb_entry {
	vm_word key; /* address >> VM_PAGE_SHIFT, or ~0 when empty */
	uint8_t *data;
};

/* What went wrong, filled where a runtime error is raised. */
struct vm_fault {
	char msg[200];
};

struct vm_worker {
	struct vm_node *node;
	int id;
	pthread_t os;
	pthread_mutex_t lock; /* guards the run queue */
	struct vm_thread *head, *tail; /* run queue (FIFO), stealable */
	struct vm_thread *cur;         /* running now, or NULL */
	/* Run @now next (a spawned child); @lifo after the thread running
	 * now stops (a spawning parent). Private to the worker: thieves see
	 * only the run queue, so a short child ends and its parent goes on
	 * where it was, without moving to another worker. */
	struct vm_thread *now, *lifo;
	uint64_t runs;                 /* threads run so far */
	uint64_t slice_t; /* coarse clock at the last slice's end (cpu time) */
	uint64_t gen;                  /* page source generation seen ... */
	const void *gen_owner;         /* ... of this source (vm_gmem.c) */
	struct vm_tlb_entry rtlb[VM_TLB_SIZE]; /* readable pages */
	struct vm_tlb_entry wtlb[VM_TLB_SIZE]; /* writable pages */
	/* Indices filled since the last flush (VM_TLB_TRACK + 1: too many
	 * to track, flush everything). */
	uint16_t filled[VM_TLB_TRACK];
	unsigned nfilled;
	/* The instruction running cannot start again on another machine
	 * (stdio on the origin, argv): its faults never move the thread
	 * for its data (vm_gsrc_remote_fault). */
	bool stay;
	struct vm_fault fault;
};

struct vm_timer;
struct vm_gsrc;

struct vm_node {
	struct vm_node_options opt;
	struct vm_budget budget; /* opt.memory: what its processes may hold */
	_Atomic int nworkers; /* started: workers[0 .. nworkers) run */
	int workers_cap;      /* workers[] allocated */
	struct vm_worker *workers;
	/* @lock guards sleeping (@wake), the inbox and the timers. */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	_Atomic int nidle;
	_Atomic int64_t nqueued; /* threads in run queues */
	_Atomic bool stop;
	struct vm_event *inbox_head, *inbox_tail;
	_Atomic int64_t ninbox;
	struct vm_timer **timers; /* a binary min-heap on @due */
	size_t ntimers, timers_cap;
	_Atomic uint64_t next_due; /* earliest due time, UINT64_MAX: none */
	_Atomic uint64_t next_pid;
	/* Threads parked on a page source's request (another machine's
	 * answer): while there are some, a worker going idle spins a
	 * little before it sleeps (vm_sched.c). */
	_Atomic int64_t net_waits;
};

/* Make @t runnable at the back of @w's queue (w may be NULL: worker 0). */
void vm__sched_push(struct vm_node *n, struct vm_worker *w,
		    struct vm_thread *t);
/* The thread @w runs next: its private slots, its queue, then another
 * worker's (stolen); NULL when there is none. On @w's OS thread. */
struct vm_thread *vm__sched_next(struct vm_worker *w);
/* The worker loop (a worker's OS thread). */
void *vm__worker_main(void *arg);
/* Run due timers and inbox events; called by workers between threads.
 * Returns whether it ran anything. */
bool vm__node_poll(struct vm_worker *w);
/* Nanoseconds on the monotonic clock. */
uint64_t vm__now(void);

/* ---- Processes (vm_proc.c) ---- */

/* A process's stdio (vm_stdio.c). Output is a queue of records (u8 fd,
 * u32 length, bytes) that a driver writes out; input a buffer a driver
 * fills when a reader wants more. Workers never do the I/O itself. */
struct vm_stream {
	int err;   /* 0, or the FL_E* code writing it failed with */
	bool told; /* the program's write got that code */
};

struct vm_pio {
	pthread_mutex_t lock;
	struct fl_buf q;      /* output records not yet taken by the driver */
	size_t last;          /* offset of q's last record header, or SIZE_MAX */
	size_t queued;        /* payload bytes in q or being written */
	struct vm_stream out[3]; /* [1] stdout, [2] stderr */
	bool tty;             /* stdout is a terminal: written at every write */
	uint8_t *in;          /* input not yet read (VM_IN_MAX bytes) */
	size_t in_off, in_len;
	int in_err;           /* FL_E* reading failed with, reported once */
	bool in_eof, in_wanted;
	struct vm_thread *out_wait, *in_wait; /* parked writers, readers */
	struct vm_event ev;   /* resumes them (posted by the driver) */
	bool ev_posted;
	/* The embedded fd driver: its thread, the eventfd that wakes it. */
	pthread_t th;
	bool th_started;
	int evfd;
	_Atomic bool kicked;
	bool closed; /* the driver is done, all output out (under endlock) */
};

#define VM_WAIT_BUCKETS 256

struct vm_waitq {
	pthread_mutex_t lock;
	struct vm_waiter *head, *tail;
};

struct vm_proc {
	struct vm_node *node;
	const struct vm_module *m;
	vm_word pid;
	uint8_t module_hash[32]; /* BLAKE2b-256 of the module's encoding */
	struct vm_xcode x;
	struct vm_options opt;
	struct vm_gsrc *gs;     /* global memory (vm_gsrc.h) */
	struct vm_peer *peer;   /* its other machines' parts, or NULL */
	struct vm_budget budget; /* bytes the VM may still take for it */
	int64_t limit;          /* its memory limit, bytes (--memory) */
	struct vm_pio io;       /* stdin, stdout, stderr */
	long ncpu;
	/* Threads by id (open addressing, tid 0 = empty), under @tlock. */
	pthread_mutex_t tlock;
	struct vm_thread **threads;
	size_t nthreads, threads_cap;
	size_t naway; /* of them VM_T_AWAY stand-ins (vm_peer.h) */
	/* A process that survives the loss of machines (--survive): a
	 * thread that leaves this part's table and the message that says
	 * where it went (a move, or a guest's end told its home) are one
	 * step for a census of its threads (dist.h, "Survive"), which holds
	 * this for writing. Readers: those departures. */
	pthread_rwlock_t depart;
	_Atomic vm_word next_tid;
	vm_word main_tid;
	/* Threads that can run (queued, running, just resumed) plus requests
	 * to the outside world in flight. Zero before the end: nothing can
	 * ever run again, a deadlock. Zero after the end: no worker holds any
	 * of its threads and nothing will answer, so it may be freed. Whoever
	 * makes a thread runnable (a waker, a reply) raises it before its own
	 * share can fall. */
	_Atomic int64_t nbusy;
	/* Time workers spent running its threads, from a coarse clock read
	 * every 16th slice and when a long slice spends its budget: a
	 * sample that saw the clock tick is charged the tick, right on
	 * average, and the counter is written only a few hundred times a
	 * second per worker. */
	_Atomic uint64_t cpu_ns;
	struct vm_waitq waitq[VM_WAIT_BUCKETS];
	/* The end: @ending is set once, by main's return, exit, a runtime
	 * error or a deadlock; @quiet once nbusy is 0 after that, and
	 * io.closed once its output is out (vm_proc_wait/free). */
	_Atomic bool ending;
	int status;
	_Atomic bool quiet;
	pthread_mutex_t endlock;
	pthread_cond_t endcond;
};

/* End the process with @status (first caller wins); returns whether this
 * call was the one that ended it. */
bool vm__proc_end(struct vm_proc *p, int status);
/* The same, printing runtime error line @line (unless NULL) on its
 * stderr when this call ends it. */
bool vm__proc_end_line(struct vm_proc *p, int status, const char *line);
/* End it with a runtime error: print "FILE:LINE: runtime error: MSG (in
 * function F, thread N)" for @t at cell @pc, unless it already ended. */
void vm__proc_fail(struct vm_proc *p, const struct vm_thread *t, uint32_t pc,
		   const char *msg);
/* A loaded and linked process on @n with no threads yet (vm_proc_start
 * adds main); 0 or an error with @err saying what failed. */
int vm__proc_new(struct vm_node *n, const struct vm_module *m,
		 const struct vm_options *o, struct vm_proc **out,
		 struct fl_err *err);
/* End a process none of whose threads was ever queued (tests, fuzzers):
 * it may be freed at once. */
void vm__proc_abandon(struct vm_proc *p);
/* About what an allocation of @n bytes costs the budget (saturating). */
int64_t vm__alloc_cost(vm_word n);
/* "out of memory (@what)" in @f, naming the memory limit when fewer than
 * @need bytes of it are left (vm_proc.c). */
void vm__oom_msg(struct vm_fault *f, const struct vm_proc *p, const char *what,
		 int64_t need);
/* One more / one fewer thread of @p can run, or request of it is in
 * flight (vm_proc.c): the last decrement before the end is a deadlock,
 * after the end it lets the process be freed. */
void vm__proc_busy_inc(struct vm_proc *p);
void vm__proc_busy_dec(struct vm_proc *p);

/* A new thread running function @fn with @nargs arguments from @args;
 * its local memory is a copy-on-write snapshot of @parent's (or empty).
 * Registered in the thread table and counted as runnable. NULL when out
 * of memory. */
struct vm_thread *vm__thread_new(struct vm_proc *p, const struct vm_xfunc *fn,
				 const vm_word *args, uint32_t nargs,
				 const struct vm_thread *parent);
/* The same, saying in @f why it failed: memory, the memory limit, the
 * thread limit (--max-threads, counting threads not yet joined). */
struct vm_thread *vm__thread_make(struct vm_proc *p, const struct vm_xfunc *fn,
				  const vm_word *args, uint32_t nargs,
				  const struct vm_thread *parent,
				  struct vm_fault *f);
/* A zeroed thread struct of @p, charged to its memory limit (what every
 * way of making a thread starts from; vm__thread_free gives it back). */
struct vm_thread *vm__thread_alloc(struct vm_proc *p, struct vm_fault *f);
void vm__thread_free(struct vm_thread *t);
/* Look up @tid in the table (under p->tlock by the caller). */
struct vm_thread *vm__thread_find(struct vm_proc *p, vm_word tid);
void vm__thread_unlist(struct vm_proc *p, vm_word tid);
/* Every listed thread, under p->tlock (taken here): @fn(ctx, tid, away)
 * for each that is here (runnable, running or parked: away false) or
 * is a stand-in for one of ours elsewhere (VM_T_AWAY: away true); done
 * ones are skipped. */
void vm__threads_each(struct vm_proc *p,
		      void (*fn)(void *ctx, vm_word tid, bool away), void *ctx);
/* Replace @old by @new_t (same tid) in the table, under p->tlock; @old
 * is only compared, so it may be freed already. */
void vm__thread_relist(struct vm_proc *p, struct vm_thread *old,
		       struct vm_thread *new_t);
/* Grow the data stack so @need words fit; false (fault set) past the
 * limit or out of memory. */
bool vm__thread_grow_stack(struct vm_thread *t, struct vm_fault *f,
			   size_t need);
/* Grow the frame stack so @need frames fit; false (fault set) past the
 * call depth limit or out of memory. */
bool vm__thread_grow_frames(struct vm_thread *t, struct vm_fault *f,
			    uint32_t need);
/* Free @t's data stack (it has a guard word below stack[0]) / frames,
 * crediting the memory limit. */
void vm__thread_free_stack(struct vm_thread *t);
void vm__thread_free_frames(struct vm_thread *t);
/* Both at once (a thread's end keeps only its struct). */
void vm__thread_free_stacks(struct vm_thread *t);

/* Parking. The instruction calls vm__park_begin() before it makes @t
 * known to whoever will wake it, then stops with VM_STOP_PARK; its worker
 * then calls vm__park_commit(). vm__resume() gives @t its reply and
 * queues it (on @w's queue, or where it last ran when @w is NULL: an
 * event), whichever of the two comes second. The
 * resumed thread re-executes the instruction, which takes the reply with
 * vm__reply_take(). */
void vm__park_begin(struct vm_thread *t, enum vm_park kind, vm_word arg);
void vm__park_commit(struct vm_worker *w, struct vm_thread *t);
void vm__resume(struct vm_worker *w, struct vm_thread *t, int32_t status,
		vm_word value);
/* The reply waiting for @t's re-executed instruction of @kind, if any
 * (taken: a second call returns false). */
bool vm__reply_take(struct vm_thread *t, enum vm_park kind,
		    struct vm_reply *out);

/* ---- Thread state (vm_tstate.c) ---- */

/* Append the state of the @n threads @ts of one process -- none running,
 * registers saved; parked, finished or runnable -- to @b (format "FLKT"
 * 3): pages they share copy-on-write once, every page's bytes in them.
 * 0, FL_ENOMEM, or FL_EINVAL (@n is 0, the threads are of different
 * processes, or one has an absent page: see vm__threads_encode_lent). */
int vm__threads_encode(struct vm_thread *const *ts, size_t n,
		       struct fl_buf *b);
/* New threads of @p from bytes made by vm__threads_encode for @p's
 * module (hostile input: every byte is checked; FL_EFORMAT with @err
 * naming the thread and the problem, or FL_ENOMEM). On success *@out is
 * an array of *@n threads, in the encoded order, that the caller frees
 * with free() (the threads with vm__thread_free). Pages shared in the
 * bytes are shared by the new threads. The threads are in no table or
 * queue and not counted (live, nbusy); one whose state is parked has
 * pstate VM_P_PARKED and needs a waker, or to be queued again. */
int vm__threads_decode(struct vm_proc *p, const uint8_t *bytes, size_t len,
		       struct vm_thread ***out, size_t *n, struct fl_err *err);
/* Lending local memory instead of sending it (format "FLKT" 3): what
 * the peer gives the encoder and the decoder. Encoding: when the batch's
 * pages with bytes hold more than @threshold bytes, each of them is
 * lent -- @lend takes a reference on the page (keeping it immutable, as
 * copy-on-write does) and returns the nonzero id the bytes carry, or 0
 * when out of memory (then the bytes go) -- and so is every absent page
 * whatever the size (it has no bytes here to send: the thread passes
 * the reference on, the peer answering for it). Decoding: @borrow
 * returns a reference to the lent bytes of id @key from the machine
 * that sent them (NULL: out of memory, *@why saying so). Both run on
 * the encoding or decoding thread with no VM lock held. */
struct vm_lending {
	void *ctx;
	size_t threshold;
	uint64_t (*lend)(void *ctx, struct vm_page *pg);
	struct vm_lent *(*borrow)(void *ctx, uint64_t key);
	/* A page going back to the machine that lent it. Encoding: for an
	 * absent page, the id the receiver lent it under if the bytes are
	 * the receiver's own, else 0 (then it is lent on); NULL: never.
	 * Decoding: the receiver's own page of id @key, as this machine
	 * holds it: 1 with its bytes copied to @bytes, 2 with *@lent a
	 * reference to the bytes it was lent itself (still absent here),
	 * 0 when it lent nothing under @key. VM_LENT_HOME marks such an id
	 * among @lend's. */
	uint64_t (*home)(void *ctx, const struct vm_page *pg);
	int (*own)(void *ctx, uint64_t key, uint8_t *bytes,
		   struct vm_lent **lent);
};
#define VM_LENT_HOME ((uint64_t)1 << 63)

/* vm__threads_encode/decode with lending (@l may be NULL: nothing is
 * lent, and an absent page makes the encode fail with FL_EINVAL, a lent
 * record the decode with FL_EFORMAT). */
int vm__threads_encode_lent(struct vm_thread *const *ts, size_t n,
			    struct fl_buf *b, const struct vm_lending *l);
int vm__threads_decode_lent(struct vm_proc *p, const uint8_t *bytes,
			    size_t len, const struct vm_lending *l,
			    struct vm_thread ***out, size_t *n,
			    struct fl_err *err);
/* The same for one thread (the bytes must hold exactly one). */
int vm__thread_encode(const struct vm_thread *t, struct fl_buf *b);
int vm__thread_decode(struct vm_proc *p, const uint8_t *bytes, size_t len,
		      struct vm_thread **out, struct fl_err *err);
/* --debug-migrate: replace runnable @t (on @w) by a thread decoded from
 * its own encoding, as a move to another machine would, and check that
 * the copy encodes to the same bytes. Returns the new thread; when the
 * round trip fails it fails the process with a runtime error saying why
 * and returns NULL (@t stays in the table, not queued). */
struct vm_thread *vm__thread_roundtrip(struct vm_worker *w,
				       struct vm_thread *t);

/* ---- Blocking synchronisation (vm_sync.c) ---- */

/* @word is the host address of the 8-byte-aligned word at @addr. The
 * caller has saved @t's registers at the instruction: a true return means
 * @t is parking (vm__park_begin) and stops with VM_STOP_PARK; when it is
 * resumed, the instruction runs again and these calls take the reply
 * (woken, or handed the mutex). */
bool vm__wait(struct vm_worker *w, struct vm_thread *t, uint64_t *word,
	      vm_word addr, vm_word expected);
vm_word vm__wake(struct vm_worker *w, struct vm_thread *t, vm_word addr,
		 vm_word n);
bool vm__lock(struct vm_worker *w, struct vm_thread *t, uint64_t *word,
	      vm_word addr);
/* False when the word was not locked (a runtime error for the caller). */
bool vm__unlock(struct vm_worker *w, struct vm_thread *t, uint64_t *word,
		vm_word addr);

/* ---- Memory access (vm_mem.c) ---- */

/* What a slow path did: done, a runtime error (w->fault set), the thread
 * is parking (the instruction runs again when it is resumed), the
 * process ended, or the instruction must run on another machine, the
 * thread's @move_to (stdio on the origin; a page source's pages at their
 * home: the thread moves there, vm_peer.h). */
enum vm_res { VM_OK = 0, VM_FAULT, VM_PARK, VM_END, VM_MOVE };

/* Translate [addr, addr+n) -- within one page -- for a load (write=false)
 * or store by the thread @w runs, into *@out; fills @w's TLB. Global
 * addresses go to the process's page source. @what names the instruction
 * for a fault's message. */
enum vm_res vm__xlate(struct vm_worker *w, vm_word addr, vm_word n, bool write,
		      const char *what, uint8_t **out);
/* Make absent page @pg (of the running thread's local space, at @addr)
 * present: its lent bytes copied in when they came, else asked of the
 * peer (VM_PARK: the instruction runs again once they come), VM_FAULT
 * when they cannot come, VM_END when the process ended. */
enum vm_res vm__lent_fetch(struct vm_worker *w, struct vm_page *pg,
			   vm_word addr);
void vm__tlb_flush(struct vm_worker *w);
/* Forget @w's writable translations of local pages (a spawn makes them
 * shared copy-on-write); cheap while few entries were filled. */
void vm__tlb_drop_local_writes(struct vm_worker *w);
/* Forget @w's translations of @n pages from page @first of the space at
 * @base (they were unmapped). */
void vm__tlb_drop_pages(struct vm_worker *w, vm_word base, vm_word first,
			vm_word n);

/* Copy between program memory and the host, any length, page by page. A
 * VM_PARK leaves nothing to undo: doing it again from the start is the
 * same (reads), or stores the same bytes again (writes). */
enum vm_res vm__mem_read(struct vm_worker *w, void *dst, vm_word addr,
			 vm_word n, const char *what);
enum vm_res vm__mem_write(struct vm_worker *w, vm_word addr, const void *src,
			  vm_word n, const char *what);
/* copy and fill, restartable: the operands are updated in place as the
 * work proceeds, so after a VM_PARK they describe what is left. */
enum vm_res vm__mem_copy(struct vm_worker *w, vm_word *dst, vm_word *src,
			 vm_word *n);
enum vm_res vm__mem_fill(struct vm_worker *w, vm_word *dst, uint8_t byte,
			 vm_word *n);

void vm__fault(struct vm_worker *w, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- Linking (vm_link.c) and the interpreter (vm_interp.c) ---- */

/* Link @p's module into p->x (threaded code, superinstructions unless
 * opt.no_fuse); 0 or FL_ENOMEM. */
int vm__link(struct vm_proc *p);
void vm__unlink(struct vm_proc *p);
/* The handler addresses, indexed by vm_xops.h's numbering (NULL when the
 * interpreter is built with a switch, which dispatches on the number). */
const void *const *vm__interp_handlers(void);

enum vm_stop {
	VM_STOP_YIELD, /* budget spent or yield: queue it again */
	VM_STOP_PARK,  /* parked; someone else will queue it */
	VM_STOP_DONE,  /* the thread returned */
	VM_STOP_END,   /* the process ended */
	VM_STOP_SPAWN, /* spawned w->now: run it now; the parent is w->lifo */
	VM_STOP_MOVE,  /* at an instruction that runs on t->move_to */
};

/* Run @t on @w until it yields, parks, finishes or the process ends. */
enum vm_stop vm__interp(struct vm_worker *w, struct vm_thread *t);
/* Charge @p the time since @w's last charge (vm_proc's cpu_ns): at the
 * end of every slice, and when a long slice spends its budget. */
void vm__cpu_charge(struct vm_worker *w, struct vm_proc *p);

/* ---- stdio (vm_stdio.c) ---- */

/* Set up @p's stdio and start its driver (the fd driver on
 * p->opt.fd_in/out/err); 0 or an error with @err saying what failed. */
int vm__io_init(struct vm_proc *p, struct fl_err *err);
/* Wait for the driver to finish (after quiet) and release everything. */
void vm__io_close(struct vm_proc *p);
/* write ( fd addr n -- written ) for @t: *@res is the result word. */
enum vm_res vm__io_write(struct vm_worker *w, struct vm_thread *t, int64_t fd,
			 vm_word addr, vm_word n, vm_word *res);
/* read ( fd addr n -- got ). */
enum vm_res vm__io_read(struct vm_worker *w, struct vm_thread *t, int64_t fd,
			vm_word addr, vm_word n, vm_word *res);
/* printi: @s of @n bytes to stdout (no result). */
enum vm_res vm__io_print(struct vm_worker *w, struct vm_thread *t,
			 const char *s, size_t n);
/* Queue @s on stderr whatever the queue holds (runtime error lines). */
void vm__io_errline(struct vm_proc *p, const char *s);
/* The process ended / became quiet: cancel parked readers and writers,
 * let the driver finish. Any thread. */
void vm__io_ending(struct vm_proc *p);
/* Wait until the driver has written everything; the exit status, which
 * an unreported output error may change (vm_stdio.c). */
int vm__io_wait(struct vm_proc *p, int status);

#endif
