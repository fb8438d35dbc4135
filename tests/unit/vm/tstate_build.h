/* Building thread states, for the two that test the thread-state codec
 * (src/vm/vm_tstate.c): tests/unit/vm/test_tstate.c and
 * tests/fuzz/fuzz_tstate.c. What both make their states from is here,
 * once.
 *
 * Their programs share main's start (TSB_MAIN_START), f's start
 * (TSB_F_START) and the functions after locker (TSB_SHARED_FUNCS); each
 * adds the rest of main and of f, its own locker, and functions of its
 * own, around them. main's start makes a 64 KiB block filled with 7s
 * (slot 0) and a 64-byte block whose first word is a held mutex (slot 1),
 * then children: locker (parks in lock on its copy of the mutex), waiter
 * (parks in wait on word 8), finisher (returns 42), slow (yields once,
 * returns 7) and joiner (joins slow); it yields, then calls f with the
 * block, 1 and 2. f's start stores 1 + 2 in the block's first word and
 * yields. writer is never run: threads are placed at its write.
 *
 * Run by hand (handrun.h) from a thread at main's start, the threads stop
 * as tsb_state_a[] lists, one slice each, and are then in state A: every
 * child stopped, main yielded before calling f. tsb_op_at() finds where
 * to place a thread by hand; tsb_rich_heap() gives a thread full and
 * partial slabs, a large block and a free run.
 *
 * Nothing here fails by itself: each helper says what went wrong and its
 * caller fails as it does (cmocka's asserts, the fuzzer's abort). */
#ifndef FLOCK_TESTS_UNIT_VM_TSTATE_BUILD_H
#define FLOCK_TESTS_UNIT_VM_TSTATE_BUILD_H

#include "handrun.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define TSB_MAIN_START                                                         \
	".text\n"                                                              \
	"func main 0 3\n"                                                      \
	"        push 65536\n"                                                 \
	"        alloc\n"                                                      \
	"        set 0\n"                                                      \
	"        get 0\n"                                                      \
	"        push 7\n"                                                     \
	"        push 65536\n"                                                 \
	"        fill\n"                                                       \
	"        push 64\n"                                                    \
	"        alloc\n"                                                      \
	"        set 1\n"                                                      \
	"        get 1\n"                                                      \
	"        push 1\n"                                                     \
	"        st64\n"                                                       \
	"        get 1\n"                                                      \
	"        spawn locker\n"                                               \
	"        drop\n"                                                       \
	"        get 1\n"                                                      \
	"        spawn waiter\n"                                               \
	"        drop\n"                                                       \
	"        spawn finisher\n"                                             \
	"        drop\n"                                                       \
	"        spawn slow\n"                                                 \
	"        set 2\n"                                                      \
	"        get 2\n"                                                      \
	"        spawn joiner\n"                                               \
	"        drop\n"                                                       \
	"        yield\n"                                                      \
	"        get 0\n"                                                      \
	"        push 1\n"                                                     \
	"        push 2\n"                                                     \
	"        call f\n"

#define TSB_F_START                                                            \
	"func f 3 1\n"                                                         \
	"        get 0\n"                                                      \
	"        get 1\n"                                                      \
	"        get 2\n"                                                      \
	"        add\n"                                                        \
	"        st64\n"                                                       \
	"        yield\n"

#define TSB_SHARED_FUNCS                                                       \
	"func waiter 1 0\n"                                                    \
	"        get 0\n"                                                      \
	"        push 8\n"                                                     \
	"        add\n"                                                        \
	"        push 0\n"                                                     \
	"        wait\n"                                                       \
	"        push 0\n"                                                     \
	"        ret\n"                                                        \
	"end\n"                                                                \
	"func finisher 0 0\n"                                                  \
	"        push 42\n"                                                    \
	"        ret\n"                                                        \
	"end\n"                                                                \
	"func slow 0 0\n"                                                      \
	"        yield\n"                                                      \
	"        push 7\n"                                                     \
	"        ret\n"                                                        \
	"end\n"                                                                \
	"func joiner 1 0\n"                                                    \
	"        get 0\n"                                                      \
	"        join\n"                                                       \
	"        ret\n"                                                        \
	"end\n"                                                                \
	"func writer 1 0\n"                                                    \
	"        push 1\n"                                                     \
	"        get 0\n"                                                      \
	"        push 10\n"                                                    \
	"        write\n"                                                      \
	"        ret\n"                                                        \
	"end\n"

/* The thread ids: main's, then its children's in the order it spawns
 * them. */
enum {
	TSB_MAIN = 1,
	TSB_LOCKER,
	TSB_WAITER,
	TSB_FINISHER,
	TSB_SLOW,
	TSB_JOINER
};

/* A thread stopping, as hr_step() reports it. */
struct tsb_stop {
	vm_word tid;
	enum vm_stop how;
};

/* From main's start to state A: who runs each slice, and how it stops. */
static const struct tsb_stop tsb_state_a[] = {
    {TSB_MAIN, VM_STOP_SPAWN}, {TSB_LOCKER, VM_STOP_PARK},
    {TSB_MAIN, VM_STOP_SPAWN}, {TSB_WAITER, VM_STOP_PARK},
    {TSB_MAIN, VM_STOP_SPAWN}, {TSB_FINISHER, VM_STOP_DONE},
    {TSB_MAIN, VM_STOP_SPAWN}, {TSB_SLOW, VM_STOP_YIELD},
    {TSB_MAIN, VM_STOP_SPAWN}, {TSB_JOINER, VM_STOP_PARK},
    {TSB_MAIN, VM_STOP_YIELD},
};
#define TSB_STATE_A_STEPS (sizeof tsb_state_a / sizeof tsb_state_a[0])

/* The module code offset of the @nth (from 0) instruction @op of
 * function @name of @m; UINT32_MAX if there is none. */
static inline uint32_t tsb_op_at(const struct vm_module *m, const char *name,
				 enum vm_op op, int nth)
{
	int fi = vm_module_find_func(m, name);
	const struct vm_function *fn;
	struct vm_insn in;

	if (fi < 0)
		return UINT32_MAX;
	fn = &m->funcs[fi];
	for (uint32_t off = fn->code_off; off < fn->code_off + fn->code_len;
	     off += in.size) {
		if (vm_insn_decode(m->code, m->code_len, off, &in, NULL) != 0)
			break;
		if (in.op == op && nth-- == 0)
			return off;
	}
	return UINT32_MAX;
}

/* Where tsb_rich_heap() put its blocks. */
struct tsb_rich {
	vm_word last8;	  /* the 513th 8-byte block: alone on its slab */
	vm_word b100;	  /* the 100-byte block, its bytes 0x5a */
	vm_word big;	  /* the 9000-byte block */
	vm_word second2k; /* the second 2000-byte block */
	vm_word freed;	  /* the 20000-byte block, freed again */
};

/* Allocates on @t's fresh heap, in this order: 513 8-byte blocks (a full
 * slab and one more block on a second), a 100-byte block (the first on
 * its page, whose first 100 bytes are then written with 0x5a), a
 * 9000-byte (large) block, two 2000-byte blocks (a full slab of that
 * class), and a 20000-byte block, freed again (a free run). Fills @r;
 * false if an allocation or the free fails. */
static inline bool tsb_rich_heap(struct vm_thread *t, struct tsb_rich *r)
{
	struct vm_page *pg;
	vm_word first, n;
	bool nomem;

	*r = (struct tsb_rich){0};
	for (int i = 0; i < 513; i++)
		if ((r->last8 = vm__heap_alloc(&t->local, 8)) == 0)
			return false;
	if ((r->b100 = vm__heap_alloc(&t->local, 100)) == 0)
		return false;
	pg = vm__page_get_w(&t->local, r->b100 >> VM_PAGE_SHIFT, &nomem);
	if (pg == NULL || vm__page_bytes(pg) == NULL)
		return false;
	memset(pg->data, 0x5a, 100);
	return (r->big = vm__heap_alloc(&t->local, 9000)) != 0 &&
	       vm__heap_alloc(&t->local, 2000) != 0 &&
	       (r->second2k = vm__heap_alloc(&t->local, 2000)) != 0 &&
	       (r->freed = vm__heap_alloc(&t->local, 20000)) != 0 &&
	       vm__heap_free(&t->local, r->freed, &first, &n) == 0;
}

#endif
