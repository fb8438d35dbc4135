/* Unit tests for src/vm/vm_heap.c and src/vm/vm_mem.c: the per-space
 * allocator (size classes, zero fill, large blocks, frees that must fail,
 * unmapping empty pages, the page budget, address reuse, --check block
 * sizes) and checked access to program memory (translation faults, the
 * TLB, bulk reads, writes, copies and fills across page boundaries).
 *
 * The allocator is driven on a bare struct vm_space; translation needs a
 * struct vm_thread and struct vm_proc, set up here by hand (zeroed, two
 * spaces, a budget, flushed TLBs) the way vm_run() would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "vm/vm_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUDGET ((int64_t)1 << 30)
#define PAGE   ((vm_word)VM_PAGE_SIZE)

static vm_word pageno(vm_word addr)
{
	return (addr & ~VM_GLOBAL_BIT) >> VM_PAGE_SHIFT;
}

static uint64_t rng(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static vm_word alloc_ok(struct vm_space *s, vm_word n, _Atomic int64_t *b)
{
	vm_word a = vm__heap_alloc(s, n, b);

	assert_true(a != 0);
	assert_true((a & 7) == 0);
	assert_true(pageno(a) != 0);
	assert_true((a & VM_GLOBAL_BIT) == s->base);
	return a;
}

static int free_block(struct vm_space *s, vm_word a, _Atomic int64_t *b)
{
	vm_word first = 12345, unmapped = 12345;
	int rc = vm__heap_free(s, a, b, &first, &unmapped);

	if (rc != 0)
		assert_true(unmapped == 0);
	return rc;
}

/* ---- Allocator ---- */

/* A bare space per test, closed by the teardown even when the test fails
 * (so a failure is not followed by a leak report). */
static int setup_space(void **state, vm_word base, bool check)
{
	struct vm_space *s = malloc(sizeof *s);

	if (s == NULL)
		return -1;
	vm__space_init(s, base, check);
	*state = s;
	return 0;
}

static int setup_local(void **state)
{
	return setup_space(state, 0, false);
}

static int setup_global(void **state)
{
	return setup_space(state, VM_GLOBAL_BIT, false);
}

static int setup_check_local(void **state)
{
	return setup_space(state, 0, true);
}

static int teardown_space(void **state)
{
	vm__space_close(*state);
	free(*state);
	return 0;
}

static void test_rounding_and_classes(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, c;
	struct vm_page *pg;

	/* 1 byte takes an 8-byte slot; a fresh page starts at slot 0. */
	a = alloc_ok(s, 1, &b);
	assert_true(a % PAGE == 0);
	assert_true(alloc_ok(s, 1, &b) == a + 8);
	assert_true(alloc_ok(s, 8, &b) == a + 16);
	pg = vm__page_get(s, pageno(a));
	assert_non_null(pg);
	assert_int_equal(pg->kind, VM_PAGE_SLAB);
	assert_int_equal(vm__class_size[pg->cls], 8);
	assert_int_equal(pg->nlive, 3);
	assert_true(b == BUDGET - (int64_t)PAGE);

	/* 9 and 12 round to 16: consecutive 16-byte slots of a new page. */
	c = alloc_ok(s, 9, &b);
	assert_true(pageno(c) != pageno(a));
	assert_true(alloc_ok(s, 12, &b) == c + 16);
	assert_true(alloc_ok(s, 16, &b) == c + 32);
	assert_true(b == BUDGET - 2 * (int64_t)PAGE);

	/* 17 -> 24, 33 -> 40 (class 48), 2041 -> 2048. */
	c = alloc_ok(s, 17, &b);
	assert_true(alloc_ok(s, 24, &b) == c + 24);
	c = alloc_ok(s, 33, &b);
	assert_int_equal(vm__class_size[vm__page_get(s, pageno(c))->cls], 48);
	assert_true(alloc_ok(s, 48, &b) == c + 48);
	c = alloc_ok(s, 2041, &b);
	assert_true(alloc_ok(s, 2048, &b) == c + 2048);

	/* 2049 rounds to 2056: bigger than the largest class, whole pages. */
	c = alloc_ok(s, 2049, &b);
	assert_true(c % PAGE == 0);
	pg = vm__page_get(s, pageno(c));
	assert_int_equal(pg->kind, VM_PAGE_LARGE);
	assert_true(pg->head == pageno(c));
	assert_true(pg->bytes >= 2049 && pg->bytes <= 2056);
}

static void test_page_table_limits(void **state)
{
	struct vm_space *s = *state;

	assert_null(vm__page_map(s, 0)); /* null page */
	assert_null(vm__page_map(s, VM_MAX_PAGE));
	assert_null(vm__page_get(s, 0));
	assert_null(vm__page_get(s, VM_MAX_PAGE));
	assert_null(vm__page_get(s, ~(vm_word)0));
	assert_non_null(vm__page_map(s, VM_MAX_PAGE - 1));
	assert_non_null(vm__page_get(s, VM_MAX_PAGE - 1));
	assert_null(vm__page_get(s, VM_MAX_PAGE - 2));
	vm__page_unmap(s, VM_MAX_PAGE - 1);
	assert_null(vm__page_get(s, VM_MAX_PAGE - 1));
	vm__page_unmap(s, 77); /* never mapped: harmless */
}

static void test_zero_filled(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, c, d;
	uint8_t *bytes;

	a = alloc_ok(s, 64, &b);
	c = alloc_ok(s, 64, &b);
	/* Scribble over the whole page, free slots included. */
	bytes = vm__page_bytes(vm__page_get(s, pageno(a)));
	assert_non_null(bytes);
	memset(bytes, 0xab, VM_PAGE_SIZE);
	assert_int_equal(free_block(s, a, &b), 0);
	/* The same slot comes back, zeroed; its neighbour is untouched. */
	assert_true(alloc_ok(s, 64, &b) == a);
	for (vm_word i = 0; i < 64; i++)
		assert_int_equal(bytes[a % PAGE + i], 0);
	assert_int_equal(bytes[c % PAGE], 0xab);
	/* A never-used slot of a scribbled page is zeroed too. */
	d = alloc_ok(s, 60, &b);
	assert_true(d == c + 64);
	for (vm_word i = 0; i < 64; i++)
		assert_int_equal(bytes[d % PAGE + i], 0);
	assert_int_equal(bytes[d % PAGE + 64], 0xab);

	/* Large blocks: pages come back zero after a free. */
	a = alloc_ok(s, 3 * PAGE, &b);
	for (vm_word i = 0; i < 3; i++)
		memset(vm__page_bytes(vm__page_get(s, pageno(a) + i)), 0xcd,
		       VM_PAGE_SIZE);
	assert_int_equal(free_block(s, a, &b), 0);
	assert_true(alloc_ok(s, 3 * PAGE, &b) == a);
	for (vm_word i = 0; i < 3; i++) {
		struct vm_page *pg = vm__page_get(s, pageno(a) + i);
		for (vm_word j = 0; pg->data != NULL && j < PAGE; j++)
			assert_int_equal(pg->data[j], 0);
	}
}

struct blk {
	vm_word a, n;
};

static int cmp_blk(const void *x, const void *y)
{
	const struct blk *p = x, *q = y;

	return p->a < q->a ? -1 : p->a > q->a;
}

/* Many blocks of every class, several pages of each, plus large blocks:
 * all distinct, none overlapping, none straddling a slab page. Then free
 * them all in random order: every page goes away and the budget is whole
 * again. */
static void check_distinct(struct vm_space *s)
{
	_Atomic int64_t b = BUDGET;
	struct blk *blks = NULL;
	size_t nblk = 0, cap = 0;
	uint64_t x = 0x2545f4914f6cdd1dull;

	for (int round = 0; round < 3; round++) {
		for (int c = 0; c < VM_NCLASSES; c++) {
			uint32_t size = vm__class_size[c];
			uint32_t req = c ? vm__class_size[c - 1] + 1 : 1;
			uint32_t n = VM_PAGE_SIZE / size + 3;
			for (uint32_t i = 0; i < n; i++) {
				vm_word a;
				if (nblk == cap) {
					cap = cap ? 2 * cap : 256;
					blks =
					    realloc(blks, cap * sizeof *blks);
					assert_non_null(blks);
				}
				a = alloc_ok(s, i % 2 ? req : size, &b);
				assert_int_equal(
				    vm__page_get(s, pageno(a))->cls, c);
				assert_true(a % PAGE + size <= PAGE);
				blks[nblk++] = (struct blk){a, size};
			}
		}
		static const vm_word large[] = {2056, 5000, 8192, 12289};
		for (size_t i = 0; i < 4; i++) {
			if (nblk == cap) {
				cap = 2 * cap;
				blks = realloc(blks, cap * sizeof *blks);
				assert_non_null(blks);
			}
			vm_word a = alloc_ok(s, large[i], &b);
			assert_true(a % PAGE == 0);
			blks[nblk++] = (struct blk){a, large[i]};
		}
	}
	qsort(blks, nblk, sizeof *blks, cmp_blk);
	for (size_t i = 1; i < nblk; i++)
		assert_true(blks[i - 1].a + blks[i - 1].n <= blks[i].a);

	for (size_t i = nblk; i > 1; i--) {
		size_t j = rng(&x) % i;
		struct blk t = blks[i - 1];
		blks[i - 1] = blks[j];
		blks[j] = t;
	}
	for (size_t i = 0; i < nblk; i++)
		assert_int_equal(free_block(s, blks[i].a, &b), 0);
	for (size_t i = 0; i < nblk; i++)
		assert_null(vm__page_get(s, pageno(blks[i].a)));
	assert_true(b == BUDGET);
	for (int c = 0; c < VM_NCLASSES; c++)
		assert_int_equal(s->npartial[c], 0);
	free(blks);
}

static void test_distinct_blocks_local(void **state)
{
	check_distinct(*state);
}

static void test_distinct_blocks_global(void **state)
{
	check_distinct(*state);
}

static void test_large_blocks(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, first, n;

	a = alloc_ok(s, 10000, &b);
	assert_true(a % PAGE == 0);
	assert_true(b == BUDGET - 3 * (int64_t)PAGE);
	for (vm_word i = 0; i < 3; i++) {
		struct vm_page *pg = vm__page_get(s, pageno(a) + i);
		assert_non_null(pg);
		assert_int_equal(pg->kind, VM_PAGE_LARGE);
		assert_true(pg->head == pageno(a));
		assert_true(pg->bytes == 10000);
	}
	assert_null(vm__page_get(s, pageno(a) + 3));
	/* Exactly one page. */
	vm_word one = alloc_ok(s, PAGE, &b);
	assert_true(vm__page_get(s, pageno(one))->kind == VM_PAGE_LARGE);
	assert_null(vm__page_get(s, pageno(one) + 1));

	assert_int_equal(vm__heap_free(s, a, &b, &first, &n), 0);
	assert_true(first == pageno(a));
	assert_true(n == 3);
	for (vm_word i = 0; i < 3; i++)
		assert_null(vm__page_get(s, pageno(a) + i));
	assert_int_equal(vm__heap_free(s, one, &b, &first, &n), 0);
	assert_true(n == 1);
	assert_true(b == BUDGET);

	/* Larger than a space: refused outright, budget untouched. */
	assert_true(vm__heap_alloc(s, ((vm_word)1 << VM_SPACE_BITS) + 1, &b) ==
		    0);
	assert_true(vm__heap_alloc(s, ~(vm_word)0, &b) == 0);
	assert_true(vm__heap_alloc(s, ~(vm_word)0 - 6, &b) == 0);
	assert_true(b == BUDGET);
}

static void test_bad_frees(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, c, l, t24;
	struct vm_page *ro;

	/* Never allocated. */
	assert_int_equal(free_block(s, 0, &b), FL_EFAULT);
	assert_int_equal(free_block(s, 8, &b), FL_EFAULT);
	assert_int_equal(free_block(s, 0x10000, &b), FL_EFAULT);
	assert_int_equal(free_block(s, (vm_word)1 << 62, &b), FL_EFAULT);
	assert_int_equal(free_block(s, ~(vm_word)0, &b), FL_EFAULT);

	a = alloc_ok(s, 32, &b);
	c = alloc_ok(s, 32, &b);
	/* Interior pointers. */
	assert_int_equal(free_block(s, a + 1, &b), FL_EFAULT);
	assert_int_equal(free_block(s, a + 8, &b), FL_EFAULT);
	assert_int_equal(free_block(s, a + 16, &b), FL_EFAULT);
	/* A slot of a live page that was never handed out. */
	assert_int_equal(free_block(s, c + 32, &b), FL_EFAULT);
	assert_int_equal(free_block(s, a + PAGE - 32, &b), FL_EFAULT);
	/* Double free. */
	assert_int_equal(free_block(s, a, &b), 0);
	assert_int_equal(free_block(s, a, &b), FL_EFAULT);
	/* Freeing the last block unmaps the page; then it is unmapped. */
	assert_int_equal(free_block(s, c, &b), 0);
	assert_int_equal(free_block(s, c, &b), FL_EFAULT);

	/* Past the last slot of a class that does not divide the page:
	 * 4096 / 24 = 170 slots, offset 4080 would be slot 170. */
	t24 = alloc_ok(s, 24, &b);
	assert_int_equal(free_block(s, t24 + 170 * 24, &b), FL_EFAULT);
	assert_int_equal(free_block(s, t24 + 169 * 24, &b), FL_EFAULT);

	/* Large blocks: only the first byte of the first page. */
	l = alloc_ok(s, 3 * PAGE, &b);
	assert_int_equal(free_block(s, l + 8, &b), FL_EFAULT);
	assert_int_equal(free_block(s, l + PAGE, &b), FL_EFAULT);
	assert_int_equal(free_block(s, l + 2 * PAGE + 16, &b), FL_EFAULT);
	assert_int_equal(free_block(s, l + 3 * PAGE, &b), FL_EFAULT);

	/* Module segments are not heap blocks. */
	ro = vm__page_map(s, 1000);
	assert_non_null(ro);
	ro->kind = VM_PAGE_RODATA;
	ro->head = 1000;
	ro->bytes = PAGE;
	assert_int_equal(free_block(s, 1000 * PAGE, &b), FL_EFAULT);
	ro->kind = VM_PAGE_DATA;
	assert_int_equal(free_block(s, 1000 * PAGE, &b), FL_EFAULT);

	/* Failed frees changed nothing: the live blocks are still live and
	 * the allocator hands out what is really free. */
	assert_int_equal(free_block(s, l, &b), 0);
	assert_int_equal(free_block(s, t24, &b), 0);
	assert_true(b == BUDGET);
}

static void test_last_block_unmaps_page(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, x, first, n;
	int64_t after;

	a = alloc_ok(s, 100, &b);
	assert_true(a & VM_GLOBAL_BIT);
	after = b;
	x = alloc_ok(s, 100, &b);
	assert_true(pageno(x) == pageno(a));
	assert_true(b == after);
	assert_int_equal(vm__heap_free(s, x, &b, &first, &n), 0);
	assert_true(n == 0);
	assert_non_null(vm__page_get(s, pageno(a)));

	assert_int_equal(vm__heap_free(s, a, &b, &first, &n), 0);
	assert_true(first == pageno(a)); /* without the global bit */
	assert_true(n == 1);
	assert_null(vm__page_get(s, pageno(a)));
	assert_true(b == BUDGET);
	assert_int_equal(s->npartial[7], 0);
}

/* A full page leaves its class's partial stack; a free puts it back. */
static void test_full_page_comes_back(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a[5];

	for (int i = 0; i < 5; i++)
		a[i] = alloc_ok(s, 2048, &b);
	/* Two per page: pages of a[0,1], a[2,3], a[4]. */
	assert_true(a[1] == a[0] + 2048);
	assert_true(pageno(a[2]) != pageno(a[0]));
	assert_true(a[3] == a[2] + 2048);
	assert_true(b == BUDGET - 3 * (int64_t)PAGE);
	assert_int_equal(free_block(s, a[0], &b), 0);
	assert_int_equal(free_block(s, a[3], &b), 0);
	/* The holes are reused before any new page is mapped. */
	vm_word p = alloc_ok(s, 2048, &b), q = alloc_ok(s, 2048, &b);
	vm_word r = alloc_ok(s, 2048, &b);
	assert_true(b == BUDGET - 3 * (int64_t)PAGE);
	vm_word all[] = {a[0], a[3], a[4] + 2048};
	for (int i = 0; i < 3; i++) {
		vm_word got[] = {p, q, r};
		bool found = false;
		for (int j = 0; j < 3; j++)
			found |= got[j] == all[i];
		assert_true(found);
	}
	/* Everything in use: the next one needs a fresh page. */
	vm_word z = alloc_ok(s, 2048, &b);
	assert_true(b == BUDGET - 4 * (int64_t)PAGE);
	assert_true(pageno(z) != pageno(a[0]) && pageno(z) != pageno(a[2]) &&
		    pageno(z) != pageno(a[4]));
}

static void test_budget(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = 2 * PAGE;
	vm_word a1, a2, a3;

	a1 = alloc_ok(s, 8, &b);
	assert_true(b == PAGE);
	a2 = alloc_ok(s, 16, &b);
	assert_true(b == 0);
	/* A new page is over budget; the budget is restored. */
	assert_true(vm__heap_alloc(s, 24, &b) == 0);
	assert_true(b == 0);
	assert_true(vm__heap_alloc(s, 5000, &b) == 0);
	assert_true(b == 0);
	/* A slot on an existing page costs nothing. */
	a3 = alloc_ok(s, 8, &b);
	assert_true(pageno(a3) == pageno(a1));
	assert_true(b == 0);
	/* Freeing a page gives its budget back. */
	assert_int_equal(free_block(s, a2, &b), 0);
	assert_true(b == PAGE);
	a2 = alloc_ok(s, 24, &b);
	assert_true(b == 0);
	vm__space_close(s);

	/* Large: all or nothing. */
	vm__space_init(s, 0, false);
	b = 3 * PAGE;
	assert_true(vm__heap_alloc(s, 3 * PAGE + 1, &b) == 0);
	assert_true(b == 3 * PAGE);
	a1 = alloc_ok(s, 3 * PAGE, &b);
	assert_true(b == 0);
	assert_int_equal(free_block(s, a1, &b), 0);
	assert_true(b == 3 * PAGE);
	/* Less than a page left. */
	b = 100;
	assert_true(vm__heap_alloc(s, 1, &b) == 0);
	assert_true(b == 100);
	b = 0;
	assert_true(vm__heap_alloc(s, 1, &b) == 0);
	assert_true(b == 0);
}

static void test_address_reuse(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, c, d, s1, s2;

	a = alloc_ok(s, 3 * PAGE, &b);
	assert_int_equal(free_block(s, a, &b), 0);
	/* Freed page numbers are reused, first fit, split as needed. */
	c = alloc_ok(s, 2 * PAGE, &b);
	assert_true(c == a);
	d = alloc_ok(s, PAGE, &b);
	assert_true(d == a + 2 * PAGE);
	/* A slab page's number too. */
	s1 = alloc_ok(s, 8, &b);
	assert_int_equal(free_block(s, s1, &b), 0);
	s2 = alloc_ok(s, 8, &b);
	assert_true(s2 == s1);
	/* A run too small is skipped, not split across. */
	assert_int_equal(free_block(s, d, &b), 0);
	vm_word e = alloc_ok(s, 2 * PAGE, &b);
	assert_true(e != d);
	assert_true(alloc_ok(s, PAGE, &b) == d);
}

/* ---- --check: exact live ranges ---- */

static void test_check_mode_live(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, c, l;

	c = alloc_ok(s, 40, &b); /* class 48 */
	assert_true(vm__heap_live(s, c, 40));
	assert_true(vm__heap_live(s, c + 39, 1));
	assert_true(vm__heap_live(s, c + 32, 8));
	assert_false(vm__heap_live(s, c + 40, 1));
	assert_false(vm__heap_live(s, c + 47, 1));
	assert_false(vm__heap_live(s, c + 33, 8));
	assert_false(vm__heap_live(s, c, 41));
	assert_false(vm__heap_live(s, c + 48, 1)); /* next slot: free */

	l = alloc_ok(s, 5000, &b);
	assert_true(vm__heap_live(s, l, 5000));
	assert_true(vm__heap_live(s, l + 4999, 1));
	assert_true(vm__heap_live(s, l + PAGE, 5000 - PAGE));
	assert_false(vm__heap_live(s, l + 5000, 1));
	assert_false(vm__heap_live(s, l + 4990, 11));

	a = alloc_ok(s, 8, &b);
	assert_int_equal(free_block(s, a, &b), 0);
	assert_false(vm__heap_live(s, a, 1));
	assert_false(vm__heap_live(s, 0, 1));
	assert_false(vm__heap_live(s, 1 << 20, 1));
	vm__space_close(s);

	/* Without --check a small block is live up to its class size. */
	vm__space_init(s, 0, false);
	a = alloc_ok(s, 40, &b);
	assert_true(vm__heap_live(s, a + 47, 1));
	assert_false(vm__heap_live(s, a + 48, 1));
}

/* --check catches every access outside a live block, so the live range is
 * the size the program asked for: a 12-byte block is [0, 12), byte 12 is
 * outside it even though the block takes a 16-byte slot. */
/* A live block is what alloc returned: n rounded up to a multiple of 8
 * (SPEC section 3), not the whole size-class slot. */
static void test_check_mode_exact_sizes(void **state)
{
	struct vm_space *s = *state;
	_Atomic int64_t b = BUDGET;
	vm_word a, c, l;

	a = alloc_ok(s, 12, &b); /* a 16-byte block in the 16-byte class */
	assert_true(vm__heap_live(s, a, 16));
	assert_true(vm__heap_live(s, a + 15, 1));
	assert_true(vm__heap_live(s, a + 8, 8));
	assert_false(vm__heap_live(s, a + 16, 1));
	assert_false(vm__heap_live(s, a + 12, 8));
	c = alloc_ok(s, 40, &b); /* a 40-byte block in the 48-byte class */
	assert_true(vm__heap_live(s, c + 32, 8));
	assert_false(vm__heap_live(s, c + 40, 1));
	assert_false(vm__heap_live(s, c + 36, 8));
	l = alloc_ok(s, 5001, &b); /* 5008 bytes over two pages */
	assert_true(vm__heap_live(s, l + 5007, 1));
	assert_false(vm__heap_live(s, l + 5008, 1));
}

/* ---- Threads, translation, bulk access ---- */

struct env {
	struct vm_proc *p;
	struct vm_thread *t;
};

static struct env *env_new(bool check)
{
	struct env *e = calloc(1, sizeof *e);

	assert_non_null(e);
	e->p = calloc(1, sizeof *e->p);
	e->t = calloc(1, sizeof *e->t);
	assert_non_null(e->p);
	assert_non_null(e->t);
	e->t->proc = e->p;
	e->p->budget = BUDGET;
	vm__space_init(&e->p->global, VM_GLOBAL_BIT, check);
	vm__space_init(&e->t->local, 0, check);
	vm__tlb_flush(e->t);
	return e;
}

static int setup(void **state)
{
	*state = env_new(false);
	return 0;
}

static int setup_check(void **state)
{
	*state = env_new(true);
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	vm__space_close(&e->t->local);
	vm__space_close(&e->p->global);
	free(e->t);
	free(e->p);
	free(e);
	return 0;
}

static vm_word lalloc(struct env *e, vm_word n)
{
	return alloc_ok(&e->t->local, n, &e->p->budget);
}

static vm_word galloc(struct env *e, vm_word n)
{
	return alloc_ok(&e->p->global, n, &e->p->budget);
}

static void expect_fault(struct env *e, const char *msg)
{
	if (strcmp(e->t->fault.msg, msg) != 0)
		fail_msg("fault '%s', expected '%s'", e->t->fault.msg, msg);
}

static void test_xlate_null(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;

	assert_null(vm__xlate(t, 0, 1, false, "ld8"));
	expect_fault(e, "ld8 at null address 0x0");
	assert_null(vm__xlate(t, 0xff8, 8, true, "st64"));
	expect_fault(e, "st64 at null address 0xff8");
	assert_null(vm__xlate(t, VM_GLOBAL_BIT, 8, false, "ld64"));
	expect_fault(e, "ld64 at null address 0x8000000000000000");
	assert_null(vm__xlate(t, VM_GLOBAL_BIT | 16, 1, true, "st8"));
	expect_fault(e, "st8 at null address 0x8000000000000010");
}

static void test_xlate_unmapped(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word a;

	assert_null(vm__xlate(t, 0x5000, 1, false, "ld8"));
	expect_fault(e, "ld8 at unmapped address 0x5000");
	assert_null(vm__xlate(t, 0x7fffffffffffffffull, 1, false, "ld8"));
	expect_fault(e, "ld8 at unmapped address 0x7fffffffffffffff");
	assert_null(vm__xlate(t, ~(vm_word)0, 1, true, "st8"));
	expect_fault(e, "st8 at unmapped address 0xffffffffffffffff");
	/* Freed: the page is gone. */
	a = galloc(e, 16);
	assert_non_null(vm__xlate(t, a, 8, true, "st64"));
	assert_int_equal(free_block(&e->p->global, a, &e->p->budget), 0);
	vm__tlb_flush(t);
	assert_null(vm__xlate(t, a + 8, 8, false, "ld64"));
	char want[80];
	snprintf(want, sizeof want, "ld64 at unmapped address 0x%llx",
		 (unsigned long long)(a + 8));
	expect_fault(e, want);
	/* A local address never reaches the global space and vice versa. */
	assert_null(vm__xlate(t, a & ~VM_GLOBAL_BIT, 1, false, "ld8"));
}

static void test_xlate_read_only(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	struct vm_page *pg = vm__page_map(&e->p->global, 5);
	vm_word addr = VM_GLOBAL_BIT | (5 << VM_PAGE_SHIFT);
	uint8_t *d, *r;

	assert_non_null(pg);
	pg->kind = VM_PAGE_RODATA;
	pg->head = 5;
	pg->bytes = PAGE;
	d = vm__page_bytes(pg);
	assert_non_null(d);
	memcpy(d, "constant", 8);

	r = vm__xlate(t, addr + 2, 3, false, "ld8");
	assert_ptr_equal(r, d + 2);
	assert_memory_equal(r, "nst", 3);
	assert_null(vm__xlate(t, addr + 2, 1, true, "st8"));
	expect_fault(e, "st8 at read-only address 0x8000000000005002");
	/* Even with the read translation cached. */
	assert_non_null(vm__xlate(t, addr, 8, false, "ld64"));
	assert_null(vm__xlate(t, addr, 8, true, "st64"));
	for (int i = 0; i < VM_TLB_SIZE; i++)
		assert_true(t->wtlb[i].key == ~(vm_word)0);
	/* Bulk writes fault the same way and change nothing. */
	assert_int_equal(vm__mem_write(t, addr, "XX", 2, "write"), FL_EFAULT);
	expect_fault(e, "write at read-only address 0x8000000000005000");
	assert_int_equal(vm__mem_fill(t, addr + 4, 'X', 10), FL_EFAULT);
	expect_fault(e, "fill at read-only address 0x8000000000005004");
	vm_word g = galloc(e, 64);
	assert_int_equal(vm__mem_copy(t, addr, g, 8), FL_EFAULT);
	expect_fault(e, "copy at read-only address 0x8000000000005000");
	assert_int_equal(vm__mem_copy(t, addr + 1, addr, 8), FL_EFAULT);
	assert_memory_equal(d, "constant", 8);
	/* Copying *from* read-only data is fine. */
	uint8_t got[8];
	assert_int_equal(vm__mem_copy(t, g, addr, 8), 0);
	assert_int_equal(vm__mem_read(t, got, g, 8, "read"), 0);
	assert_memory_equal(got, "constant", 8);
	/* Module globals are writable. */
	pg->kind = VM_PAGE_DATA;
	vm__tlb_flush(t);
	assert_ptr_equal(vm__xlate(t, addr, 1, true, "st8"), d);
}

/* A page's bytes exist only once written; reads before that see zeros,
 * and the read TLB follows the page once it is materialised. */
static void test_xlate_zero_page_then_write(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word a = lalloc(e, 100);
	struct vm_page *pg = vm__page_get(&t->local, pageno(a));
	vm_word key = a >> VM_PAGE_SHIFT;
	uint8_t *r, *w;

	assert_null(pg->data);
	r = vm__xlate(t, a, 8, false, "ld64");
	assert_non_null(r);
	for (int i = 0; i < 8; i++)
		assert_int_equal(r[i], 0);
	assert_null(pg->data); /* no allocation on read */
	assert_true(t->rtlb[key % VM_TLB_SIZE].key == key);

	w = vm__xlate(t, a + 8, 8, true, "st64");
	assert_non_null(pg->data);
	assert_ptr_equal(w, pg->data + (a + 8) % PAGE);
	w[0] = 42;
	assert_true(t->wtlb[key % VM_TLB_SIZE].key == key);
	assert_ptr_equal(t->wtlb[key % VM_TLB_SIZE].data, pg->data);
	assert_ptr_equal(t->rtlb[key % VM_TLB_SIZE].data, pg->data);
	r = vm__xlate(t, a + 8, 1, false, "ld8");
	assert_int_equal(*r, 42);

	vm__tlb_flush(t);
	for (int i = 0; i < VM_TLB_SIZE; i++) {
		assert_true(t->rtlb[i].key == ~(vm_word)0);
		assert_true(t->wtlb[i].key == ~(vm_word)0);
	}
}

/* Local and global memory are separate spaces, even at the same offset. */
static void test_spaces_are_separate(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word l = lalloc(e, 8), g = galloc(e, 8), x = 0;

	assert_true((g & ~VM_GLOBAL_BIT) == l);
	assert_int_equal(vm__mem_write(t, l, "local!!", 8, "st"), 0);
	assert_int_equal(vm__mem_write(t, g, "global!", 8, "st"), 0);
	assert_int_equal(vm__mem_read(t, &x, l, 8, "ld"), 0);
	assert_memory_equal(&x, "local!!", 8);
	assert_int_equal(vm__mem_read(t, &x, g, 8, "ld"), 0);
	assert_memory_equal(&x, "global!", 8);
}

static void test_read_write_across_pages(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word bases[] = {lalloc(e, 3 * PAGE), galloc(e, 3 * PAGE)};
	uint8_t src[3 * VM_PAGE_SIZE], dst[3 * VM_PAGE_SIZE];

	for (size_t i = 0; i < sizeof src; i++)
		src[i] = (uint8_t)(i * 13 + 5);
	for (int k = 0; k < 2; k++) {
		vm_word a = bases[k];
		struct vm_space *s = k ? &e->p->global : &t->local;
		/* 100 bytes straddling the first boundary. */
		assert_int_equal(vm__mem_write(t, a + PAGE - 50, src, 100, "w"),
				 0);
		memset(dst, 0, sizeof dst);
		assert_int_equal(vm__mem_read(t, dst, a + PAGE - 50, 100, "r"),
				 0);
		assert_memory_equal(dst, src, 100);
		assert_memory_equal(
		    vm__page_get(s, pageno(a))->data + PAGE - 50, src, 50);
		assert_memory_equal(vm__page_get(s, pageno(a) + 1)->data,
				    src + 50, 50);
		/* Across all three pages. */
		assert_int_equal(
		    vm__mem_write(t, a + 10, src, 3 * PAGE - 20, "w"), 0);
		assert_int_equal(vm__mem_read(t, dst, a, 3 * PAGE, "r"), 0);
		for (int i = 0; i < 10; i++)
			assert_int_equal(dst[i], 0);
		assert_memory_equal(dst + 10, src, 3 * PAGE - 20);
		/* Zero length: nothing, not even at a bad address. */
		assert_int_equal(vm__mem_read(t, dst, 0, 0, "r"), 0);
		assert_int_equal(vm__mem_write(t, 0, src, 0, "w"), 0);
	}
	/* Running off the end of mapped memory faults at the first byte of
	 * the unmapped page. */
	vm_word last = lalloc(e, PAGE);
	assert_null(vm__page_get(&t->local, pageno(last) + 1));
	assert_int_equal(vm__mem_write(t, last + PAGE - 4, src, 8, "st64"),
			 FL_EFAULT);
	char want[80];
	snprintf(want, sizeof want, "st64 at unmapped address 0x%llx",
		 (unsigned long long)(last + PAGE));
	expect_fault(e, want);
	assert_int_equal(vm__mem_read(t, dst, last + 8, PAGE, "read"),
			 FL_EFAULT);
	assert_int_equal(vm__mem_read(t, dst, 16, 8, "read"), FL_EFAULT);
	expect_fault(e, "read at null address 0x10");
}

/* vm__mem_copy against memmove on a host mirror, for overlapping ranges
 * in both directions across page boundaries. */
static void test_copy_overlapping(void **state)
{
	enum { N = 4 * VM_PAGE_SIZE };
	static const vm_word cases[][3] = {
	    /* dst, src, n */
	    {100, 4000, 9000}, {4090, 4100, 8000}, {0, 1, N - 1},
	    {4000, 100, 9000}, {4100, 4090, 8000}, {1, 0, N - 1},
	    {4096, 0, 8192},   {0, 4096, 8192},	   {8192, 4096, 8192},
	    {0, 8192, 5000},   {8192, 0, 5000},	   {777, 777, 5000},
	    {4095, 4096, 1},   {4096, 4095, 1},	   {12, 4, 4090},
	    {4, 12, 4090},     {8191, 8190, 4097}, {0, 0, 0},
	};
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word a = lalloc(e, N);
	uint8_t *host = malloc(N), *got = malloc(N);
	uint64_t x = 0x9e3779b97f4a7c15ull;

	assert_non_null(host);
	assert_non_null(got);
	for (int i = 0; i < N; i++)
		host[i] = (uint8_t)(i * 7 + i / 251);
	assert_int_equal(vm__mem_write(t, a, host, N, "w"), 0);
	for (size_t c = 0; c < sizeof cases / sizeof *cases + 400; c++) {
		vm_word d, s, n;
		if (c < sizeof cases / sizeof *cases) {
			d = cases[c][0], s = cases[c][1], n = cases[c][2];
		} else {
			d = rng(&x) % N, s = rng(&x) % N;
			vm_word room = N - (d > s ? d : s);
			n = rng(&x) % 3 ? rng(&x) % (room + 1)
					: rng(&x) % (VM_PAGE_SIZE + 2);
			if (n > room)
				n = room;
		}
		assert_int_equal(vm__mem_copy(t, a + d, a + s, n), 0);
		memmove(host + d, host + s, n);
		assert_int_equal(vm__mem_read(t, got, a, N, "r"), 0);
		if (memcmp(got, host, N) != 0)
			fail_msg("copy dst %llu src %llu n %llu differs",
				 (unsigned long long)d, (unsigned long long)s,
				 (unsigned long long)n);
	}
	free(host);
	free(got);
}

static void test_copy_between_spaces_and_zero_pages(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word l = lalloc(e, 3 * PAGE), g = galloc(e, 3 * PAGE);
	uint8_t buf[3 * VM_PAGE_SIZE], got[3 * VM_PAGE_SIZE];

	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i % 251 + 1);
	assert_int_equal(vm__mem_write(t, l, buf, sizeof buf, "w"), 0);
	assert_int_equal(vm__mem_copy(t, g + 5, l, 2 * PAGE), 0);
	assert_int_equal(vm__mem_read(t, got, g, sizeof got, "r"), 0);
	assert_memory_equal(got + 5, buf, 2 * PAGE);
	assert_int_equal(got[0], 0);
	assert_int_equal(got[2 * PAGE + 5], 0);

	/* From never-written pages: zeros arrive, in both directions. */
	vm_word z = lalloc(e, 2 * PAGE);
	assert_int_equal(vm__mem_copy(t, l + 3, z + 100, PAGE), 0);
	assert_int_equal(vm__mem_read(t, got, l, 4 * 1024 + 10, "r"), 0);
	assert_memory_equal(got, buf, 3);
	for (vm_word i = 3; i < 3 + PAGE; i++)
		assert_int_equal(got[i], 0);
	assert_int_equal(got[3 + PAGE], buf[3 + PAGE]);

	/* Within one never-written block, overlapping both ways: the first
	 * write materialises the page the source is then read from. */
	vm_word y = lalloc(e, 2 * PAGE);
	assert_int_equal(vm__mem_write(t, y + PAGE + 10, "abcdef", 6, "w"), 0);
	assert_int_equal(vm__mem_copy(t, y + PAGE + 12, y + PAGE + 10, 6), 0);
	assert_int_equal(vm__mem_read(t, got, y + PAGE + 10, 8, "r"), 0);
	assert_memory_equal(got, "ababcdef", 8);
	assert_int_equal(vm__mem_copy(t, y + PAGE + 8, y + PAGE + 10, 8), 0);
	assert_int_equal(vm__mem_read(t, got, y + PAGE + 8, 10, "r"), 0);
	assert_memory_equal(got, "ababcdefef", 10);
	/* First page of y still zero-backed: copy it over data. */
	assert_null(vm__page_get(&t->local, pageno(y))->data);
	assert_int_equal(vm__mem_copy(t, y + PAGE - 2, y + PAGE - 10, 20), 0);
	assert_int_equal(vm__mem_read(t, got, y + PAGE - 2, 20, "r"), 0);
	for (int i = 0; i < 18; i++)
		assert_int_equal(got[i], 0);
	assert_memory_equal(got + 18, "ab", 2); /* was at y+PAGE+8 */

	/* Faults: unmapped source, null destination; n = 0 never faults. */
	assert_int_equal(vm__mem_copy(t, l, 0x7000000, 8), FL_EFAULT);
	expect_fault(e, "copy at unmapped address 0x7000000");
	assert_int_equal(vm__mem_copy(t, 8, l, 8), FL_EFAULT);
	expect_fault(e, "copy at null address 0x8");
	assert_int_equal(vm__mem_copy(t, 0, 0, 0), 0);
}

static void test_fill(void **state)
{
	enum { N = 3 * VM_PAGE_SIZE };
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word a = galloc(e, N);
	uint8_t host[N], got[N];

	memset(host, 0, sizeof host);
	assert_int_equal(vm__mem_fill(t, a + 4000, 0x5a, 5000), 0);
	memset(host + 4000, 0x5a, 5000);
	assert_int_equal(vm__mem_fill(t, a + 1, 0xff, 1), 0);
	host[1] = 0xff;
	assert_int_equal(vm__mem_fill(t, a + N - 7, 7, 7), 0);
	memset(host + N - 7, 7, 7);
	assert_int_equal(vm__mem_fill(t, a, 9, 0), 0);
	assert_int_equal(vm__mem_read(t, got, a, N, "r"), 0);
	assert_memory_equal(got, host, N);
	/* Past the end of the block's pages. */
	assert_null(vm__page_get(&e->p->global, pageno(a) + 3));
	assert_int_equal(vm__mem_fill(t, a + N - 1, 1, 2), FL_EFAULT);
	assert_int_equal(vm__mem_fill(t, 0, 1, 0), 0);
	assert_int_equal(vm__mem_fill(t, 0, 1, 1), FL_EFAULT);
	expect_fault(e, "fill at null address 0x0");
}

/* Under --check every access must lie inside one live block, and no
 * translation is cached (each access is checked). */
static void test_check_mode_access(void **state)
{
	struct env *e = *state;
	struct vm_thread *t = e->t;
	vm_word a = lalloc(e, 40), c = lalloc(e, 40);
	char want[100];

	assert_true(c == a + 48);
	assert_non_null(vm__xlate(t, a, 8, true, "st64"));
	assert_non_null(vm__xlate(t, a + 32, 8, false, "ld64"));
	assert_null(vm__xlate(t, a + 36, 8, false, "ld64"));
	snprintf(want, sizeof want, "ld64 at 0x%llx outside any live block",
		 (unsigned long long)(a + 36));
	expect_fault(e, want);
	assert_null(vm__xlate(t, a + 40, 1, true, "st8"));
	for (int i = 0; i < VM_TLB_SIZE; i++) {
		assert_true(t->rtlb[i].key == ~(vm_word)0);
		assert_true(t->wtlb[i].key == ~(vm_word)0);
	}
	/* Bulk operations are checked chunk by chunk. */
	assert_int_equal(vm__mem_fill(t, a, 1, 40), 0);
	assert_int_equal(vm__mem_fill(t, a, 1, 41), FL_EFAULT);
	assert_int_equal(vm__mem_copy(t, c, a, 40), 0);
	assert_int_equal(vm__mem_copy(t, c, a, 48), FL_EFAULT);
	/* After a free, even the still-mapped page's slot is dead. */
	assert_int_equal(free_block(&t->local, a, &e->p->budget), 0);
	assert_null(vm__xlate(t, a, 1, false, "ld8"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_rounding_and_classes,
					    setup_local, teardown_space),
	    cmocka_unit_test_setup_teardown(test_page_table_limits, setup_local,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_zero_filled, setup_local,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_distinct_blocks_local,
					    setup_local, teardown_space),
	    cmocka_unit_test_setup_teardown(test_distinct_blocks_global,
					    setup_global, teardown_space),
	    cmocka_unit_test_setup_teardown(test_large_blocks, setup_local,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_bad_frees, setup_local,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_last_block_unmaps_page,
					    setup_global, teardown_space),
	    cmocka_unit_test_setup_teardown(test_full_page_comes_back,
					    setup_local, teardown_space),
	    cmocka_unit_test_setup_teardown(test_budget, setup_local,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_address_reuse, setup_local,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_check_mode_live,
					    setup_check_local, teardown_space),
	    cmocka_unit_test_setup_teardown(test_check_mode_exact_sizes,
					    setup_check_local, teardown_space),
	    cmocka_unit_test_setup_teardown(test_xlate_null, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_xlate_unmapped, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_xlate_read_only, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_xlate_zero_page_then_write,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spaces_are_separate, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_read_write_across_pages, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_copy_overlapping, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(
		test_copy_between_spaces_and_zero_pages, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_check_mode_access, setup_check,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
