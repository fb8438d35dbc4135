/* Private to src/vm/: the structures behind vm.h. Not for other layers.
 *
 * Objects and who owns what:
 *   struct vm_proc    one running program: its verified module, linked
 *                     code, global memory space, output buffer, options.
 *   struct vm_thread  one VM thread: data stack, call frames, local memory
 *                     space, translation caches. Everything a thread needs
 *                     to continue is here as plain data (indices, not host
 *                     pointers, across frames) so it can be serialised.
 *   struct vm_space   a 63-bit address space of 4 KiB pages: a radix tree
 *                     of page pointers plus the allocator's state. Used for
 *                     a thread's local memory and a process's global memory.
 *   struct vm_page    one mapped page: the allocator's metadata for it and
 *                     its bytes. The VM's metadata never lives in program-
 *                     addressable memory. */
#ifndef FLOCK_VM_VM_INT_H
#define FLOCK_VM_VM_INT_H

#include "vm/vm.h"

#include <stdatomic.h>

/* ---- Pages and spaces (vm_mem.c, vm_heap.c) ---- */

#define VM_PAGE_SHIFT 12
/* Each space addresses 2^VM_SPACE_BITS bytes; the radix tree has
 * VM_RADIX_LEVELS levels of VM_RADIX_BITS each (the top one smaller). */
#define VM_SPACE_BITS 47
#define VM_RADIX_BITS 9
#define VM_RADIX_LEVELS 4
#define VM_RADIX_FAN (1u << VM_RADIX_BITS)
#define VM_MAX_PAGE ((vm_word)1 << (VM_SPACE_BITS - VM_PAGE_SHIFT))

enum vm_page_kind {
	VM_PAGE_RODATA, /* module read-only data: never writable */
	VM_PAGE_DATA,   /* module globals */
	VM_PAGE_SLAB,   /* small blocks of one size class */
	VM_PAGE_LARGE,  /* part of one block of whole pages */
};

#define VM_NCLASSES 16
#define VM_SMALL_MAX 2048 /* larger blocks take whole pages */
#define VM_SLAB_WORDS (VM_PAGE_SIZE / 8 / 64) /* bitmap words: 8-byte class */

struct vm_page {
	uint8_t *data;   /* VM_PAGE_SIZE bytes, or NULL while all zero */
	uint8_t kind;    /* enum vm_page_kind */
	uint8_t cls;     /* SLAB: size class index */
	uint16_t nlive;  /* SLAB: live blocks */
	uint32_t pidx;   /* SLAB: position in its class's partial stack */
	vm_word head;    /* LARGE, RODATA, DATA: first page of the block */
	vm_word bytes;   /* LARGE, RODATA, DATA: the block's size in bytes */
	uint64_t live[VM_SLAB_WORDS]; /* SLAB: a bit per block slot */
	uint32_t *sizes; /* SLAB under --check: each live block's size */
};

/* A freed run of pages available for reuse. */
struct vm_range {
	vm_word first;
	vm_word n;
};

struct vm_space {
	void **root;         /* radix tree; leaves are struct vm_page * */
	vm_word top;         /* next never-used page number */
	vm_word base;        /* VM_GLOBAL_BIT or 0 */
	struct vm_range *free_ranges; /* reusable page runs */
	size_t nfree, free_cap;
	/* Per size class: pages with a free slot (a stack of page numbers). */
	vm_word *partial[VM_NCLASSES];
	size_t npartial[VM_NCLASSES], partial_cap[VM_NCLASSES];
	bool check; /* keep per-block sizes for --check */
};

extern const uint32_t vm__class_size[VM_NCLASSES];

void vm__space_init(struct vm_space *s, vm_word base, bool check);
void vm__space_close(struct vm_space *s);
struct vm_page *vm__page_get(const struct vm_space *s, vm_word pageno);
/* Map a new page (zero) at @pageno; NULL when out of memory. */
struct vm_page *vm__page_map(struct vm_space *s, vm_word pageno);
void vm__page_unmap(struct vm_space *s, vm_word pageno);
/* The page's bytes for writing, allocated on first write. */
uint8_t *vm__page_bytes(struct vm_page *pg);

/* Allocate @n bytes (already nonzero); 0 when out of memory or over the
 * process limit @budget (bytes still available, updated). */
vm_word vm__heap_alloc(struct vm_space *s, vm_word n, _Atomic int64_t *budget);
/* 0, or FL_EFAULT when @addr is not a live block start. Pages the free
 * unmapped are *@unmapped pages from *@first (translations to flush). */
int vm__heap_free(struct vm_space *s, vm_word addr, _Atomic int64_t *budget,
		  vm_word *first, vm_word *unmapped);
/* --check: is [addr, addr+n) inside one live block (or segment)? */
bool vm__heap_live(const struct vm_space *s, vm_word addr, vm_word n);

/* ---- Processes and threads (vm_proc.c, vm_interp.c) ---- */

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
	size_t ncells;
	struct vm_xfunc *funcs;
};

#define VM_TLB_SIZE 256

struct vm_tlb_entry {
	vm_word key; /* address >> VM_PAGE_SHIFT, or ~0 when empty */
	uint8_t *data;
};

struct vm_frame {
	uint32_t ret;  /* cell index to return to */
	uint32_t bp;   /* caller's slot base (word index in the stack) */
	uint32_t fn;   /* caller's function index */
};

/* What went wrong, filled where a runtime error is raised. */
struct vm_fault {
	char msg[200];
};

struct vm_proc;

struct vm_thread {
	struct vm_proc *proc;
	vm_word tid;
	vm_word *stack;
	uint32_t stack_cap;  /* words allocated; grows to opt.stack_words */
	struct vm_frame *frames;
	uint32_t depth, frames_cap;
	struct vm_space local;
	struct vm_tlb_entry rtlb[VM_TLB_SIZE]; /* readable pages */
	struct vm_tlb_entry wtlb[VM_TLB_SIZE]; /* writable pages */
	struct vm_fault fault;
};

struct vm_out {
	int fd;
	bool tty;
	struct fl_buf buf;
};

struct vm_proc {
	const struct vm_module *m;
	struct vm_xcode x;
	struct vm_space global;
	struct vm_options opt;
	_Atomic int64_t budget; /* bytes of pages the process may still map */
	struct vm_out out;       /* buffered stdout */
	long ncpu;
};

/* Translate [addr, addr+n) -- within one page -- for a load (write=false)
 * or store; fills the thread's TLB. NULL with t->fault set on a bad
 * address. @what names the instruction for the message. */
uint8_t *vm__xlate(struct vm_thread *t, vm_word addr, vm_word n, bool write,
		   const char *what);
void vm__tlb_flush(struct vm_thread *t);

/* Copy between program memory and the host, any length, page by page. */
int vm__mem_read(struct vm_thread *t, void *dst, vm_word addr, vm_word n,
		 const char *what);
int vm__mem_write(struct vm_thread *t, vm_word addr, const void *src,
		  vm_word n, const char *what);
int vm__mem_copy(struct vm_thread *t, vm_word dst, vm_word src, vm_word n);
int vm__mem_fill(struct vm_thread *t, vm_word dst, uint8_t byte, vm_word n);

void vm__fault(struct vm_thread *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Load the module's segments into @p's global space. */
int vm__load_segments(struct vm_proc *p, struct fl_err *err);

/* Linking (vm_interp.c): build p->x from the verified module. */
int vm__link(struct vm_proc *p);
void vm__unlink(struct vm_proc *p);
/* Run @t from main until the process ends; returns the exit status. */
int vm__interp(struct vm_thread *t);

/* Output (vm_proc.c). */
void vm__out_write(struct vm_out *o, const void *p, size_t n);
void vm__out_flush(struct vm_out *o);

#endif
