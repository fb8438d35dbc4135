/* The Flock virtual machine on one machine: instruction table, module format
 * and verifier, memory, interpreter. This is the interface other layers
 * (lang/, cli/, later cluster/) use; vm_int.h is private to src/vm/.
 *
 * Life of a program: bytes -> vm_module_decode() -> vm_verify() -> vm_run().
 * A module that has not passed vm_verify() must never reach the
 * interpreter: the hot loop trusts what the verifier proved (operands in
 * range, jumps inside their function, stack depth known at every pc). */
#ifndef FLOCK_VM_VM_H
#define FLOCK_VM_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fl_buf.h"
#include "base/fl_error.h"

typedef uint64_t vm_word;

/* ---- Instructions (generated from vm_opcodes.def) ---- */

enum vm_operand {
	VM_OPND_NONE,
	VM_OPND_IMM,   /* signed 64-bit immediate, 8 bytes */
	VM_OPND_ADDR,  /* index into the module's data symbols, 4 bytes */
	VM_OPND_SLOT,  /* frame slot, 4 bytes */
	VM_OPND_COUNT, /* pick depth, 4 bytes */
	VM_OPND_LABEL, /* code offset from the function's start, 4 bytes */
	VM_OPND_FUNC,  /* function index, 4 bytes */
};

#define VM_ARITY (-1)       /* pops: the FUNC operand's arity */
#define VM_OPF_END (1u << 0) /* never falls through */
#define VM_OPF_NYI (1u << 1) /* not implemented by this VM yet */

enum vm_op {
#define OP(name, mn, opnd, pops, pushes, flags, effect, doc) VM_OP_##name,
#include "vm/vm_opcodes.def"
#undef OP
	VM_OP__COUNT
};

struct vm_opinfo {
	const char *name;     /* enum name without VM_OP_, e.g. "PUSHA" */
	const char *mnemonic; /* assembly mnemonic, e.g. "push" */
	enum vm_operand operand;
	int pops; /* or VM_ARITY */
	int pushes;
	unsigned flags;
	const char *effect; /* "( a b -- a+b )" */
	const char *doc;
};

extern const struct vm_opinfo vm_opinfo[VM_OP__COUNT];

/* Bytes an operand of @kind takes in module code (0, 4 or 8). */
int vm_operand_size(enum vm_operand kind);
const char *vm_operand_name(enum vm_operand kind);

/* One decoded instruction. */
struct vm_insn {
	enum vm_op op;
	int64_t imm; /* IMM value, or the 4-byte operand zero-extended */
	uint32_t size; /* encoded size in bytes */
};

/* Decode the instruction at @code[@off] (of @len bytes). Returns 0, or
 * FL_EFORMAT with @err naming the problem (unknown opcode, truncated); the
 * caller adds where. */
int vm_insn_decode(const uint8_t *code, size_t len, size_t off,
		   struct vm_insn *out, struct fl_err *err);

/* Append an encoded instruction to @b. @operand is ignored for NONE. */
void vm_insn_encode(struct fl_buf *b, enum vm_op op, int64_t operand);

/* ---- Modules (.flb) ---- */

#define VM_MODULE_MAGIC "FLKB"
#define VM_MODULE_VERSION 2
#define VM_NAME_MAX 255          /* function and symbol names, bytes */
#define VM_PATH_MAX 4096         /* names in the source file table, bytes */
#define VM_SEGMENT_MAX (1u << 28) /* rodata/data/code bytes */
#define VM_FRAME_MAX 65535       /* nargs + nlocals */

enum vm_segment { VM_SEG_RODATA = 0, VM_SEG_DATA = 1 };

struct vm_symbol {
	char *name;
	uint8_t segment; /* enum vm_segment */
	uint32_t offset; /* within its segment; may equal the segment size */
};

struct vm_function {
	char *name;
	uint32_t nargs;
	uint32_t nlocals;
	uint32_t code_off; /* functions are contiguous, in table order */
	uint32_t code_len;
	uint32_t max_stack; /* operand words above the slots; set by vm_verify */
};

/* Instructions at code offsets >= code_off (up to the next entry) come from
 * line @line of source file @file: 0 is the module's source, i > 0 is
 * files[i - 1] (e.g. a file the program `use`s). Entries are sorted by
 * code_off, lines never 0. */
struct vm_line {
	uint32_t code_off;
	uint32_t line;
	uint32_t file;
};

struct vm_module {
	char *source; /* source file name, for messages; never NULL */
	uint8_t *rodata;
	uint32_t rodata_len;
	uint8_t *data;
	uint32_t data_len;
	struct vm_symbol *syms;
	uint32_t nsyms;
	struct vm_function *funcs;
	uint32_t nfuncs;
	uint8_t *code;
	uint32_t code_len;
	char **files; /* more source files the line table names */
	uint32_t nfiles;
	struct vm_line *lines;
	uint32_t nlines;
	/* Set by vm_verify(): the operand stack depth (words above the
	 * frame's slots) on entry to the instruction at each code offset;
	 * -1 where no instruction starts or none is reachable. */
	int32_t *depth;
};

/* An empty module (source "?"), or NULL when out of memory. */
struct vm_module *vm_module_new(void);
void vm_module_free(struct vm_module *m);

/* Encode @m as .flb bytes appended to @out. Fails only on memory. */
int vm_module_encode(const struct vm_module *m, struct fl_buf *out);

/* Decode .flb bytes (treated as hostile). On success *@out is a module the
 * caller frees with vm_module_free(); it is structurally sound (sizes
 * consistent) but not yet verified. On failure returns FL_EFORMAT or
 * FL_ENOMEM with @err naming the problem. */
int vm_module_decode(const uint8_t *p, size_t len, struct vm_module **out,
		     struct fl_err *err);

/* Verify @m for execution: names, symbols, function table, every
 * instruction's operands, jump targets, stack depth at every pc (consistent
 * at joins, no underflow), and that it has `main` with no arguments when
 * @need_main. Fills each function's max_stack. Returns 0 or FL_EFORMAT with
 * @err naming the function and code offset. */
int vm_verify(struct vm_module *m, bool need_main, struct fl_err *err);

/* Is @s a valid function or symbol name: [A-Za-z_$][A-Za-z0-9_.$]*, at
 * most VM_NAME_MAX bytes? (No leading '.', so no name is ever mistaken for
 * an assembler directive and every verified module disassembles.) */
bool vm_name_valid(const char *s, size_t len);

/* Index of function @name, or -1. */
int vm_module_find_func(const struct vm_module *m, const char *name);

/* Source line of the instruction at code offset @off (0 if unknown); its
 * file's name into *@file when @file is not NULL (the module's source when
 * unknown). */
uint32_t vm_module_line(const struct vm_module *m, uint32_t off,
			const char **file);

/* Name of source file @i of the line table (0: the module's source). */
const char *vm_module_file(const struct vm_module *m, uint32_t i);

/* Function containing code offset @off, or -1. */
int vm_module_func_at(const struct vm_module *m, uint32_t off);

/* Global address of data symbol/segment offsets once loaded. The layout is
 * fixed: read-only data starts at VM_GLOBAL_BASE + one page, writable data
 * at the next page boundary after it. */
#define VM_PAGE_SIZE 4096u
#define VM_GLOBAL_BIT ((vm_word)1 << 63)

/* Global addresses (docs/memory.md): bit 63 set, bits 62..47 a slot,
 * bits 46..0 the offset in it. Slot 0 is the process's origin machine's
 * (module data, and galloc there); slot m + 1 is machine m's galloc
 * range elsewhere. Local addresses are offsets alone. */
#define VM_SLOT_SHIFT 47
#define VM_SLOT_MASK ((vm_word)0xffff)
#define VM_OFFSET_MASK (((vm_word)1 << VM_SLOT_SHIFT) - 1)

/* The slot of the process's origin machine; machine m elsewhere uses
 * slot m + 1 (for galloc, and in the thread ids it makes). */
#define VM_ORIGIN_SLOT 0u

/* The slot of global address @a, and the base address of slot @s. */
static inline uint32_t vm_gslot(vm_word a)
{
	return (uint32_t)(a >> VM_SLOT_SHIFT & VM_SLOT_MASK);
}
static inline vm_word vm_gslot_base(uint32_t s)
{
	return VM_GLOBAL_BIT | (vm_word)s << VM_SLOT_SHIFT;
}
vm_word vm_module_seg_base(const struct vm_module *m, enum vm_segment seg);

/* ---- Nodes ----
 *
 * A node is one machine's runtime: worker OS threads with run queues, an
 * inbox of outside events, timers. It hosts any number of processes,
 * which start and end while it runs; two nodes may live in one OS
 * process. vm_run() is a node with one process. */

struct vm_node;
struct vm_proc;

struct vm_node_options {
	uint32_t cpus;    /* worker OS threads; 0: one per core */
	uint32_t machine; /* this machine's index in its VM (embedded: 0) */
	/* What all its processes together may hold (a machine's ram:
	 * offer), on top of each one's own --memory; 0: no such limit. */
	uint64_t memory;
	/* Worker 0 is the thread that calls vm_node_serve(), not one the
	 * node starts: for a node that runs one process while its starter
	 * waits (the embedded VM). The main thread's allocator arena grows
	 * cheaply; a new thread's grows a page at a time. */
	bool caller_worker;
	/* test aid: this many workers (the last ones) fail to start */
	uint32_t debug_fail_workers;
};

void vm_node_options_init(struct vm_node_options *o);

/* Start a node's workers. 0, or FL_ENOMEM / FL_EIO with @err saying what
 * failed (a worker that cannot start leaves the node with fewer; none at
 * all is an error). Free with vm_node_free(). */
int vm_node_new(const struct vm_node_options *o, struct vm_node **out,
		struct fl_err *err);
/* Stop the workers and free @n; every process on it must have been freed
 * with vm_proc_free() first. NULL is a no-op. */
void vm_node_free(struct vm_node *n);
/* Workers running (with caller_worker, worker 0 counts). */
int vm_node_workers(const struct vm_node *n);
/* caller_worker: run worker 0 on the calling thread until @p has ended
 * and no worker holds any of its threads. */
void vm_node_serve(struct vm_node *n, struct vm_proc *p);

/* An outside event: @fn runs on one of the node's workers, soon. It must
 * not block. The event stays the poster's memory; it must stay valid
 * until @fn has started (it may free it there). */
struct vm_event {
	struct vm_event *next;
	void (*fn)(struct vm_node *n, struct vm_event *ev);
};

/* Post @ev to @n's inbox. Any thread. */
void vm_node_post(struct vm_node *n, struct vm_event *ev);

/* A timer: @ev runs on a worker once @delay_ns have passed. */
struct vm_timer {
	uint64_t due;
	size_t idx; /* in the node's heap, or SIZE_MAX when not armed */
	struct vm_event ev;
};

/* Arm @tm (not armed now) to post @tm->ev after @delay_ns. Any thread. */
void vm_node_timer_start(struct vm_node *n, struct vm_timer *tm,
			 uint64_t delay_ns);
/* Disarm @tm if it has not fired; true if it was armed. Any thread. */
bool vm_node_timer_stop(struct vm_node *n, struct vm_timer *tm);

/* ---- Running ---- */

struct vm_options {
	uint32_t stack_words; /* data stack limit per thread, words */
	uint32_t max_depth;   /* call depth limit per thread */
	bool check;           /* --check: catch accesses outside live blocks */
	uint64_t memory;      /* bytes the VM may hold for the process
				 (pages, stacks, frames, threads, tables);
				 0: half the machine's RAM */
	uint32_t max_threads; /* threads at once, not yet joined */
	uint32_t cpus;        /* worker OS threads; 0: one per core */
	bool migrate;         /* debug: round-trip threads through their
				 serialised state at every preemption */
	bool no_fuse;         /* debug: link without superinstructions */
	bool spread_eager;    /* debug, on a VM: every spawn goes to a
				 machine that asked for work (dist.h) */
	bool survive;         /* on a VM: the loss of a machine other than
				 main's ends only what ran there (dist.h) */
	int argc;             /* program arguments; argv[0] is the file name */
	char **argv;
	int fd_in, fd_out, fd_err; /* the process's stdin/stdout/stderr */
	const char *prog;          /* prefix for runtime error lines */
	struct vm_stats *stats;    /* filled when the process ends, or NULL */
};

/* What a process did (flock run --stats). */
struct vm_stats {
	uint64_t threads; /* threads it made, main included */
	uint64_t limit;   /* its memory limit, bytes (--memory) */
};

#define VM_DEFAULT_STACK_WORDS (1u << 20)
#define VM_DEFAULT_MAX_DEPTH 100000u
#define VM_DEFAULT_MAX_THREADS (1u << 22)
/* What the saved registers hold: sp is a signed 32-bit word index. */
#define VM_MAX_STACK_WORDS 0x7fffffffu
#define VM_MAX_CALL_DEPTH 0x7fffffffu

void vm_options_init(struct vm_options *o);

#define VM_MAX_CPUS 1024

/* Start verified module @m (borrowed until vm_proc_free) as a new
 * process on @n: 0, or an error with @err saying what failed (the
 * options, memory, the memory limit). */
int vm_proc_start(struct vm_node *n, const struct vm_module *m,
		  const struct vm_options *o, struct vm_proc **out,
		  struct fl_err *err);
/* Wait until @p has ended and its output is written; its exit status:
 * main's return value or exit's operand (low 8 bits), or 70 after a
 * runtime error line on o->fd_err. */
int vm_proc_wait(struct vm_proc *p);
/* Free an ended process, once no worker holds any of its threads (waits
 * for that). NULL is a no-op. */
void vm_proc_free(struct vm_proc *p);
/* End @p from outside (flock kill) with exit status @status, unless it
 * has ended already: its threads stop at their next instruction. Any
 * thread; false when it had ended. */
bool vm_proc_kill(struct vm_proc *p, int status);
/* vm_proc_kill, with @line (a whole line, "\n" ended) on its stderr as
 * a runtime error's is (a process lost with a machine). */
bool vm_proc_kill_line(struct vm_proc *p, int status, const char *line);

/* What a running process holds now (flock ps); any thread, a moment's
 * view. */
struct vm_proc_info {
	uint64_t threads; /* threads not yet joined, main included (of a
			   * process over many machines: this one's) */
	uint64_t memory;  /* bytes charged to its memory limit */
	uint64_t cpu_ns;  /* time workers ran its threads (coarse) */
	bool ended;
};
void vm_proc_info(struct vm_proc *p, struct vm_proc_info *info);

/* Run verified module @m as a process on the embedded VM -- a node of
 * o->cpus workers with this one process -- and return its exit status
 * as vm_proc_wait() does (70 also when it cannot start, with a line on
 * o->fd_err saying why). */
int vm_run(const struct vm_module *m, const struct vm_options *o);

#endif
