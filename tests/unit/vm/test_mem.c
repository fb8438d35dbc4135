/* Unit tests for src/vm/vm_heap.c and src/vm/vm_mem.c: the per-space
 * allocator (size classes, zero fill, large blocks, frees that must fail,
 * unmapping empty pages, the page budget, address reuse, --check block
 * sizes), checked access to program memory (translation faults, the TLBs,
 * bulk reads, writes, copies and fills across page boundaries), local
 * spaces shared copy-on-write after spawn (isolation of writes, allocators
 * and frees on each side, closing either side, a randomised model), the
 * memory limit (a page charged once when created or copied on write,
 * credited when its last reference goes, whatever space held it), and the
 * global space's reuse list of retired pages.
 *
 * The allocator is driven on a bare struct vm_space whose budget, when a
 * test wants one, is a local of the test (s->budget = &b; the teardown
 * clears it before closing the space); translation needs a struct
 * vm_proc, struct vm_thread and struct vm_worker, set up here by hand
 * (zeroed, the spaces pointing at proc->budget, empty TLBs) the way
 * vm_run(), vm__thread_new() and vm__sched_init() would: worker w[i] runs
 * thread t[i], and a spawn is vm__space_fork() of one thread's local
 * space into another's. expect_charged() checks the budget against the
 * distinct pages all open spaces hold. Run it under ASan as well: several
 * tests are about who frees a shared page. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "vm/vm_gsrc.h"

#include <pthread.h>
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

/* The class index of @size. */
static int class_index(uint32_t size)
{
	int c = 0;

	while (vm__class_size[c] != size)
		c++;
	return c;
}

static vm_word alloc_ok(struct vm_space *s, vm_word n)
{
	vm_word a = vm__heap_alloc(s, n);

	assert_true(a != 0);
	assert_true((a & 7) == 0);
	assert_true(pageno(a) != 0);
	assert_true((a & VM_GLOBAL_BIT) == s->base);
	return a;
}

static int free_block(struct vm_space *s, vm_word a)
{
	vm_word first = 12345, unmapped = 12345;
	int rc = vm__heap_free(s, a, &first, &unmapped);

	if (rc != 0)
		assert_true(unmapped == 0);
	return rc;
}

/* The calls under test, with the results these tests check: a pointer or
 * NULL, 0 or FL_EFAULT (local memory and the local page source never
 * park). */
static uint8_t *xl(struct vm_worker *w, vm_word a, vm_word n, bool write,
		   const char *what)
{
	uint8_t *p = NULL;
	enum vm_res rc = vm__xlate(w, a, n, write, what, &p);

	assert_true(rc == VM_OK || rc == VM_FAULT);
	return rc == VM_OK ? p : NULL;
}

static int res_code(enum vm_res rc)
{
	assert_true(rc == VM_OK || rc == VM_FAULT);
	return rc == VM_OK ? 0 : FL_EFAULT;
}

static int mread(struct vm_worker *w, void *d, vm_word a, vm_word n,
		 const char *what)
{
	return res_code(vm__mem_read(w, d, a, n, what));
}

static int mwrite(struct vm_worker *w, vm_word a, const void *s, vm_word n,
		  const char *what)
{
	return res_code(vm__mem_write(w, a, s, n, what));
}

static int mcopy(struct vm_worker *w, vm_word d, vm_word s, vm_word n)
{
	return res_code(vm__mem_copy(w, &d, &s, &n));
}

static int mfill(struct vm_worker *w, vm_word d, uint8_t b, vm_word n)
{
	return res_code(vm__mem_fill(w, &d, b, &n));
}

/* ---- What the budget holds ----
 *
 * The memory limit charges every distinct page (VM_COST_PAGE, plus a
 * size table's cost for a slab page under --check), every distinct radix
 * node (VM_COST_NODE) and what each distinct allocator state was charged
 * (h->charged), however many spaces share them. held() counts them by
 * walking the trees, so tests can say how many pages they expect and
 * check the budget against everything the spaces really hold. */
struct ptrset {
	const void **p;
	size_t n, cap;
};

static void ptr_add(struct ptrset *ps, const void *x)
{
	if (ps->n == ps->cap) {
		ps->cap = ps->cap ? 2 * ps->cap : 256;
		ps->p = realloc(ps->p, ps->cap * sizeof *ps->p);
		assert_non_null(ps->p);
	}
	ps->p[ps->n++] = x;
}

static int cmp_ptr(const void *x, const void *y)
{
	uintptr_t p = (uintptr_t)*(const void *const *)x;
	uintptr_t q = (uintptr_t)*(const void *const *)y;

	return p < q ? -1 : p > q;
}

/* Sort @ps and drop repeats; returns the count. */
static size_t ptr_distinct(struct ptrset *ps)
{
	size_t n = 0;

	if (ps->n > 0)
		qsort(ps->p, ps->n, sizeof *ps->p, cmp_ptr);
	for (size_t i = 0; i < ps->n; i++)
		if (i == 0 || ps->p[i] != ps->p[i - 1])
			ps->p[n++] = ps->p[i];
	ps->n = n;
	return n;
}

static void collect(const struct vm_radix *n, int level, struct ptrset *nodes,
		    struct ptrset *pages)
{
	if (n == NULL)
		return;
	ptr_add(nodes, n);
	for (unsigned i = 0; i < VM_RADIX_FAN; i++) {
		const void *c = n->slot[i];
		if (c == NULL)
			continue;
		if (level < VM_RADIX_LEVELS - 1)
			collect(c, level + 1, nodes, pages);
		else
			ptr_add(pages, c);
	}
}

/* The bytes the open spaces @ss hold against the budget; their distinct
 * pages in *@npages. */
static int64_t held(struct vm_space *const *ss, int nss, int64_t *npages)
{
	struct ptrset nodes = {0}, pages = {0}, heaps = {0};
	int64_t bytes = 0;

	for (int i = 0; i < nss; i++) {
		if (ss[i]->heap == NULL)
			continue;
		collect(ss[i]->root, 0, &nodes, &pages);
		ptr_add(&heaps, ss[i]->heap);
	}
	bytes += (int64_t)ptr_distinct(&nodes) * VM_COST_NODE;
	*npages = (int64_t)ptr_distinct(&pages);
	for (size_t i = 0; i < pages.n; i++) {
		const struct vm_page *pg = pages.p[i];
		bytes += VM_COST_PAGE;
		if (pg->kind == VM_PAGE_SLAB && pg->sizes != NULL)
			bytes += VM_COST_SIZES;
	}
	ptr_distinct(&heaps);
	for (size_t i = 0; i < heaps.n; i++)
		bytes += ((const struct vm_heap *)heaps.p[i])->charged;
	free(nodes.p);
	free(pages.p);
	free(heaps.p);
	return bytes;
}

/* Space @s, alone on budget *@b that started at @start, holds @n pages
 * and the budget is charged exactly what it holds. */
static void expect_held_from(struct vm_space *s, struct vm_budget *b,
			     int64_t start, int64_t n)
{
	int64_t pages, bytes = held(&s, 1, &pages);

	if (pages != n)
		fail_msg("%lld pages mapped, expected %lld", (long long)pages,
			 (long long)n);
	if (atomic_load(&b->left) != start - bytes)
		fail_msg("budget is start %+lld bytes, %lld held",
			 (long long)(atomic_load(&b->left) - start), (long long)bytes);
}

static void expect_held(struct vm_space *s, struct vm_budget *b, int64_t n)
{
	expect_held_from(s, b, BUDGET, n);
}

/* ---- Allocator ---- */

/* A bare space per test, closed by the teardown even when the test fails
 * (so a failure is not followed by a leak report). */
static int setup_space(void **state, vm_word base, bool check)
{
	struct vm_space *s = malloc(sizeof *s);

	if (s == NULL)
		return -1;
	if (vm__space_init(s, base, check, base == VM_GLOBAL_BIT) != 0) {
		free(s);
		return -1;
	}
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

static int setup_check_global(void **state)
{
	return setup_space(state, VM_GLOBAL_BIT, true);
}

static int setup_check_local(void **state)
{
	return setup_space(state, 0, true);
}

static int teardown_space(void **state)
{
	struct vm_space *s = *state;

	/* A test points s->budget at a local of its own, gone by now (and
	 * the close of a local space would credit it). */
	s->budget = NULL;
	vm__space_close(s);
	free(*state);
	return 0;
}

static void test_rounding_and_classes(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a, c;
	struct vm_page *pg;

	s->budget = &b;
	/* 1 byte takes an 8-byte slot; a fresh page starts at slot 0. */
	a = alloc_ok(s, 1);
	assert_true(a % PAGE == 0);
	assert_true(alloc_ok(s, 1) == a + 8);
	assert_true(alloc_ok(s, 8) == a + 16);
	pg = vm__page_get(s, pageno(a));
	assert_non_null(pg);
	assert_int_equal(pg->kind, VM_PAGE_SLAB);
	assert_int_equal(vm__class_size[pg->cls], 8);
	assert_int_equal(pg->nlive, 3);
	expect_held(s, &b, 1);

	/* 9 and 12 round to 16: consecutive 16-byte slots of a new page. */
	c = alloc_ok(s, 9);
	assert_true(pageno(c) != pageno(a));
	assert_true(alloc_ok(s, 12) == c + 16);
	assert_true(alloc_ok(s, 16) == c + 32);
	expect_held(s, &b, 2);

	/* 17 -> 24, 33 -> 40 (class 48), 2041 -> 2048. */
	c = alloc_ok(s, 17);
	assert_true(alloc_ok(s, 24) == c + 24);
	c = alloc_ok(s, 33);
	assert_int_equal(vm__class_size[vm__page_get(s, pageno(c))->cls], 48);
	assert_true(alloc_ok(s, 48) == c + 48);
	c = alloc_ok(s, 2041);
	assert_true(alloc_ok(s, 2048) == c + 2048);

	/* 2049 rounds to 2056: bigger than the largest class, whole pages. */
	c = alloc_ok(s, 2049);
	assert_true(c % PAGE == 0);
	pg = vm__page_get(s, pageno(c));
	assert_int_equal(pg->kind, VM_PAGE_LARGE);
	assert_true(pg->head == pageno(c));
	assert_true(pg->bytes >= 2049 && pg->bytes <= 2056);
}

static void test_page_table_limits(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};

	s->budget = &b;
	assert_null(vm__page_map(s, 0)); /* null page */
	assert_null(vm__page_map(s, VM_MAX_PAGE));
	expect_held(s, &b, 0); /* refused: nothing charged */
	assert_null(vm__page_get(s, 0));
	assert_null(vm__page_get(s, VM_MAX_PAGE));
	assert_null(vm__page_get(s, ~(vm_word)0));
	assert_non_null(vm__page_map(s, VM_MAX_PAGE - 1));
	expect_held(s, &b, 1);
	assert_non_null(vm__page_get(s, VM_MAX_PAGE - 1));
	assert_null(vm__page_get(s, VM_MAX_PAGE - 2));
	vm__page_unmap(s, VM_MAX_PAGE - 1);
	assert_null(vm__page_get(s, VM_MAX_PAGE - 1));
	expect_held(s, &b, 0);
	vm__page_unmap(s, 77); /* never mapped: harmless */
	vm__page_unmap(s, VM_MAX_PAGE - 1);
	expect_held(s, &b, 0);
}

static void test_zero_filled(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a, c, d;
	uint8_t *bytes;

	s->budget = &b;
	a = alloc_ok(s, 64);
	c = alloc_ok(s, 64);
	/* Scribble over the whole page, free slots included. */
	bytes = vm__page_bytes(vm__page_get(s, pageno(a)));
	assert_non_null(bytes);
	memset(bytes, 0xab, VM_PAGE_SIZE);
	assert_int_equal(free_block(s, a), 0);
	/* The same slot comes back, zeroed; its neighbour is untouched. */
	assert_true(alloc_ok(s, 64) == a);
	for (vm_word i = 0; i < 64; i++)
		assert_int_equal(bytes[a % PAGE + i], 0);
	assert_int_equal(bytes[c % PAGE], 0xab);
	/* A never-used slot of a scribbled page is zeroed too. */
	d = alloc_ok(s, 60);
	assert_true(d == c + 64);
	for (vm_word i = 0; i < 64; i++)
		assert_int_equal(bytes[d % PAGE + i], 0);
	assert_int_equal(bytes[d % PAGE + 64], 0xab);

	/* Large blocks: pages come back zero after a free. */
	a = alloc_ok(s, 3 * PAGE);
	for (vm_word i = 0; i < 3; i++)
		memset(vm__page_bytes(vm__page_get(s, pageno(a) + i)), 0xcd,
		       VM_PAGE_SIZE);
	assert_int_equal(free_block(s, a), 0);
	assert_true(alloc_ok(s, 3 * PAGE) == a);
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
	struct vm_budget b = {.left = BUDGET};
	struct blk *blks = NULL;
	size_t nblk = 0, cap = 0;
	uint64_t x = 0x2545f4914f6cdd1dull;

	s->budget = &b;
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
				a = alloc_ok(s, i % 2 ? req : size);
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
			vm_word a = alloc_ok(s, large[i]);
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
		assert_int_equal(free_block(s, blks[i].a), 0);
	for (size_t i = 0; i < nblk; i++)
		assert_null(vm__page_get(s, pageno(blks[i].a)));
	expect_held(s, &b, 0);
	for (int c = 0; c < VM_NCLASSES; c++)
		assert_int_equal(s->heap->npartial[c], 0);
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
	struct vm_budget b = {.left = BUDGET};
	vm_word a, first, n;

	s->budget = &b;
	a = alloc_ok(s, 10000);
	assert_true(a % PAGE == 0);
	expect_held(s, &b, 3);
	for (vm_word i = 0; i < 3; i++) {
		struct vm_page *pg = vm__page_get(s, pageno(a) + i);
		assert_non_null(pg);
		assert_int_equal(pg->kind, VM_PAGE_LARGE);
		assert_true(pg->head == pageno(a));
		assert_true(pg->bytes == 10000);
	}
	assert_null(vm__page_get(s, pageno(a) + 3));
	/* Exactly one page. */
	vm_word one = alloc_ok(s, PAGE);
	assert_true(vm__page_get(s, pageno(one))->kind == VM_PAGE_LARGE);
	assert_null(vm__page_get(s, pageno(one) + 1));

	assert_int_equal(vm__heap_free(s, a, &first, &n), 0);
	assert_true(first == pageno(a));
	assert_true(n == 3);
	for (vm_word i = 0; i < 3; i++)
		assert_null(vm__page_get(s, pageno(a) + i));
	assert_int_equal(vm__heap_free(s, one, &first, &n), 0);
	assert_true(n == 1);
	expect_held(s, &b, 0);

	/* Larger than a space: refused outright, budget untouched. */
	assert_true(vm__heap_alloc(s, ((vm_word)1 << VM_SPACE_BITS) + 1) ==
		    0);
	assert_true(vm__heap_alloc(s, ~(vm_word)0) == 0);
	assert_true(vm__heap_alloc(s, ~(vm_word)0 - 6) == 0);
	expect_held(s, &b, 0);
}

static void test_bad_frees(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a, c, l, t24;
	struct vm_page *ro;

	s->budget = &b;
	/* Never allocated. */
	assert_int_equal(free_block(s, 0), FL_EFAULT);
	assert_int_equal(free_block(s, 8), FL_EFAULT);
	assert_int_equal(free_block(s, 0x10000), FL_EFAULT);
	assert_int_equal(free_block(s, (vm_word)1 << 62), FL_EFAULT);
	assert_int_equal(free_block(s, ~(vm_word)0), FL_EFAULT);

	a = alloc_ok(s, 32);
	c = alloc_ok(s, 32);
	/* Interior pointers. */
	assert_int_equal(free_block(s, a + 1), FL_EFAULT);
	assert_int_equal(free_block(s, a + 8), FL_EFAULT);
	assert_int_equal(free_block(s, a + 16), FL_EFAULT);
	/* A slot of a live page that was never handed out. */
	assert_int_equal(free_block(s, c + 32), FL_EFAULT);
	assert_int_equal(free_block(s, a + PAGE - 32), FL_EFAULT);
	/* Double free. */
	assert_int_equal(free_block(s, a), 0);
	assert_int_equal(free_block(s, a), FL_EFAULT);
	/* Freeing the last block unmaps the page; then it is unmapped. */
	assert_int_equal(free_block(s, c), 0);
	assert_int_equal(free_block(s, c), FL_EFAULT);

	/* Past the last slot of a class that does not divide the page:
	 * 4096 / 24 = 170 slots, offset 4080 would be slot 170. */
	t24 = alloc_ok(s, 24);
	assert_int_equal(free_block(s, t24 + 170 * 24), FL_EFAULT);
	assert_int_equal(free_block(s, t24 + 169 * 24), FL_EFAULT);

	/* Large blocks: only the first byte of the first page. */
	l = alloc_ok(s, 3 * PAGE);
	assert_int_equal(free_block(s, l + 8), FL_EFAULT);
	assert_int_equal(free_block(s, l + PAGE), FL_EFAULT);
	assert_int_equal(free_block(s, l + 2 * PAGE + 16), FL_EFAULT);
	assert_int_equal(free_block(s, l + 3 * PAGE), FL_EFAULT);

	/* Module segments are not heap blocks. */
	expect_held(s, &b, 4); /* t24's and l's */
	ro = vm__page_map(s, 1000);
	assert_non_null(ro);
	expect_held(s, &b, 5); /* mapped: charged */
	ro->kind = VM_PAGE_RODATA;
	ro->head = 1000;
	ro->bytes = PAGE;
	assert_int_equal(free_block(s, 1000 * PAGE), FL_EFAULT);
	ro->kind = VM_PAGE_DATA;
	assert_int_equal(free_block(s, 1000 * PAGE), FL_EFAULT);

	/* Failed frees changed nothing: the live blocks are still live and
	 * the allocator hands out what is really free. */
	assert_int_equal(free_block(s, l), 0);
	assert_int_equal(free_block(s, t24), 0);
	expect_held(s, &b, 1); /* the segment page */
	vm__page_unmap(s, 1000);
	expect_held(s, &b, 0);
}

static void test_last_block_unmaps_page(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a, x, first, n;
	int64_t after;

	s->budget = &b;
	a = alloc_ok(s, 100);
	assert_true(a & VM_GLOBAL_BIT);
	after = atomic_load(&b.left);
	x = alloc_ok(s, 100);
	assert_true(pageno(x) == pageno(a));
	assert_true(atomic_load(&b.left) == after);
	assert_int_equal(vm__heap_free(s, x, &first, &n), 0);
	assert_true(n == 0);
	assert_non_null(vm__page_get(s, pageno(a)));

	assert_int_equal(vm__heap_free(s, a, &first, &n), 0);
	assert_true(first == pageno(a)); /* without the global bit */
	assert_true(n == 1);
	assert_null(vm__page_get(s, pageno(a)));
	expect_held(s, &b, 0);
	assert_int_equal(s->heap->npartial[7], 0);
}

/* A full page leaves its class's partial stack; a free puts it back. */
static void test_full_page_comes_back(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a[5];

	s->budget = &b;
	for (int i = 0; i < 5; i++)
		a[i] = alloc_ok(s, 2048);
	/* Two per page: pages of a[0,1], a[2,3], a[4]. */
	assert_true(a[1] == a[0] + 2048);
	assert_true(pageno(a[2]) != pageno(a[0]));
	assert_true(a[3] == a[2] + 2048);
	expect_held(s, &b, 3);
	assert_int_equal(free_block(s, a[0]), 0);
	assert_int_equal(free_block(s, a[3]), 0);
	/* The holes are reused before any new page is mapped. */
	vm_word p = alloc_ok(s, 2048), q = alloc_ok(s, 2048);
	vm_word r = alloc_ok(s, 2048);
	expect_held(s, &b, 3);
	vm_word all[] = {a[0], a[3], a[4] + 2048};
	for (int i = 0; i < 3; i++) {
		vm_word got[] = {p, q, r};
		bool found = false;
		for (int j = 0; j < 3; j++)
			found |= got[j] == all[i];
		assert_true(found);
	}
	/* Everything in use: the next one needs a fresh page. */
	vm_word z = alloc_ok(s, 2048);
	expect_held(s, &b, 4);
	assert_true(pageno(z) != pageno(a[0]) && pageno(z) != pageno(a[2]) &&
		    pageno(z) != pageno(a[4]));
}

/* The budget counts what the VM makes: a block on a new page charges the
 * page (and the tree nodes on its path, the first time), a slot on a page
 * already mapped costs nothing, the page's unmapping (its last block
 * freed, or the space closed) credits it; closing the space credits the
 * nodes too. */
#define CP VM_COST_PAGE
#define PATH ((int64_t)VM_RADIX_LEVELS * VM_COST_NODE)
#define LIST ((int64_t)(8 * sizeof(vm_word))) /* a class's first partial list */
#define FR ((int64_t)(16 * sizeof(struct vm_range))) /* the first free-run list */

/* A fresh space on budget *@b of @n bytes. */
static void fresh(struct vm_space *s, struct vm_budget *b, int64_t n)
{
	vm__space_close(s);
	assert_int_equal(vm__space_init(s, 0, false, false), 0);
	atomic_store(&b->left, n);
	s->budget = b;
}

static void test_budget(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = PATH + 2 * CP + 2 * LIST + FR};
	vm_word a1, a2, a3, top;

	s->budget = &b;
	a1 = alloc_ok(s, 8); /* page 1, the path to it, class 8's list */
	assert_true(atomic_load(&b.left) == CP + LIST + FR);
	a2 = alloc_ok(s, 16); /* page 2 shares page 1's leaf node */
	assert_true(atomic_load(&b.left) == FR);
	/* A new page is over budget: refused, nothing left mapped (the page
	 * number it took goes to the free-run list, which takes its own). */
	top = s->heap->top;
	assert_true(vm__heap_alloc(s, 24) == 0);
	assert_true(atomic_load(&b.left) == 0);
	assert_null(vm__page_get(s, top));
	assert_int_equal(s->heap->npartial[class_index(24)], 0);
	assert_true(vm__heap_alloc(s, 5000) == 0);
	assert_true(atomic_load(&b.left) == 0);
	for (vm_word k = 0; k < 3; k++)
		assert_null(vm__page_get(s, top + k));
	/* A slot on an existing page costs nothing. */
	a3 = alloc_ok(s, 8);
	assert_true(pageno(a3) == pageno(a1));
	assert_true(atomic_load(&b.left) == 0);
	/* Freeing a page gives its budget back; freeing a block of a page
	 * that stays mapped does not. */
	assert_int_equal(free_block(s, a3), 0);
	assert_true(atomic_load(&b.left) == 0);
	assert_int_equal(free_block(s, a2), 0);
	assert_true(atomic_load(&b.left) == CP);
	a2 = alloc_ok(s, 16);
	assert_true(atomic_load(&b.left) == 0);
	/* Closing the space credits every page, node and list it has. */
	vm__space_close(s);
	assert_true(atomic_load(&b.left) == PATH + 2 * CP + 2 * LIST + FR);

	/* Large: refused before a page is mapped or a page number taken
	 * when clearly too big for what is left. */
	assert_int_equal(vm__space_init(s, 0, false, false), 0);
	fresh(s, &b, PATH + 3 * CP);
	assert_true(vm__heap_alloc(s, 3 * PAGE + 1) == 0); /* 4 pages */
	assert_true(atomic_load(&b.left) == PATH + 3 * CP);
	assert_true(s->heap->top == 1);
	fresh(s, &b, 3 * CP - 1); /* two whole pages and a bit */
	assert_true(vm__heap_alloc(s, 2 * PAGE + 1) == 0);
	assert_true(atomic_load(&b.left) == 3 * CP - 1);
	assert_true(s->heap->top == 1);
	a1 = alloc_ok(s, 2 * PAGE);
	assert_true(atomic_load(&b.left) == CP - 1 - PATH);
	fresh(s, &b, PATH + 3 * CP);
	a1 = alloc_ok(s, 3 * PAGE);
	assert_true(atomic_load(&b.left) == 0);
	/* Freed: its pages come back, and the free-run list takes its
	 * first room from them. */
	assert_int_equal(free_block(s, a1), 0);
	assert_true(atomic_load(&b.left) == 3 * CP - FR);
	/* Less than a node left: nothing is made. */
	fresh(s, &b, 100);
	assert_true(vm__heap_alloc(s, 1) == 0);
	assert_true(atomic_load(&b.left) == 100);
	assert_true(vm__heap_alloc(s, PAGE) == 0);
	assert_true(atomic_load(&b.left) == 100);
	atomic_store(&b.left, 0);
	assert_true(vm__heap_alloc(s, 1) == 0);
	assert_true(atomic_load(&b.left) == 0);
	assert_null(vm__page_map(s, 500));
	assert_true(atomic_load(&b.left) == 0);

	/* No budget: no limit, nothing counted. */
	s->budget = NULL;
	a1 = alloc_ok(s, 1000 * PAGE);
	a2 = alloc_ok(s, 8);
	assert_true(atomic_load(&b.left) == 0);
	assert_int_equal(free_block(s, a1), 0);
	assert_int_equal(free_block(s, a2), 0);
}

static void test_address_reuse(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a, c, d, s1, s2;

	s->budget = &b;
	a = alloc_ok(s, 3 * PAGE);
	assert_int_equal(free_block(s, a), 0);
	/* Freed page numbers are reused, first fit, split as needed. */
	c = alloc_ok(s, 2 * PAGE);
	assert_true(c == a);
	d = alloc_ok(s, PAGE);
	assert_true(d == a + 2 * PAGE);
	/* A slab page's number too. */
	s1 = alloc_ok(s, 8);
	assert_int_equal(free_block(s, s1), 0);
	s2 = alloc_ok(s, 8);
	assert_true(s2 == s1);
	/* A run too small is skipped, not split across. */
	assert_int_equal(free_block(s, d), 0);
	vm_word e = alloc_ok(s, 2 * PAGE);
	assert_true(e != d);
	assert_true(alloc_ok(s, PAGE) == d);
}

/* ---- --check: exact live ranges ---- */

static void test_check_mode_live(void **state)
{
	struct vm_space *s = *state;
	struct vm_budget b = {.left = BUDGET};
	vm_word a, c, l;

	s->budget = &b;
	c = alloc_ok(s, 40); /* class 48 */
	assert_true(vm__heap_live(s, c, 40));
	assert_true(vm__heap_live(s, c + 39, 1));
	assert_true(vm__heap_live(s, c + 32, 8));
	assert_false(vm__heap_live(s, c + 40, 1));
	assert_false(vm__heap_live(s, c + 47, 1));
	assert_false(vm__heap_live(s, c + 33, 8));
	assert_false(vm__heap_live(s, c, 41));
	assert_false(vm__heap_live(s, c + 48, 1)); /* next slot: free */

	l = alloc_ok(s, 5000);
	assert_true(vm__heap_live(s, l, 5000));
	assert_true(vm__heap_live(s, l + 4999, 1));
	assert_true(vm__heap_live(s, l + PAGE, 5000 - PAGE));
	assert_false(vm__heap_live(s, l + 5000, 1));
	assert_false(vm__heap_live(s, l + 4990, 11));

	a = alloc_ok(s, 8);
	assert_int_equal(free_block(s, a), 0);
	assert_false(vm__heap_live(s, a, 1));
	assert_false(vm__heap_live(s, 0, 1));
	assert_false(vm__heap_live(s, 1 << 20, 1));
	vm__space_close(s);

	/* Without --check a small block is live up to its class size. */
	assert_int_equal(vm__space_init(s, 0, false, false), 0);
	s->budget = &b;
	a = alloc_ok(s, 40);
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
	struct vm_budget b = {.left = BUDGET};
	vm_word a, c, l;

	s->budget = &b;
	a = alloc_ok(s, 12); /* a 16-byte block in the 16-byte class */
	assert_true(vm__heap_live(s, a, 16));
	assert_true(vm__heap_live(s, a + 15, 1));
	assert_true(vm__heap_live(s, a + 8, 8));
	assert_false(vm__heap_live(s, a + 16, 1));
	assert_false(vm__heap_live(s, a + 12, 8));
	c = alloc_ok(s, 40); /* a 40-byte block in the 48-byte class */
	assert_true(vm__heap_live(s, c + 32, 8));
	assert_false(vm__heap_live(s, c + 40, 1));
	assert_false(vm__heap_live(s, c + 36, 8));
	l = alloc_ok(s, 5001); /* 5008 bytes over two pages */
	assert_true(vm__heap_live(s, l + 5007, 1));
	assert_false(vm__heap_live(s, l + 5008, 1));
}

/* ---- Threads, workers, translation, bulk access ---- */

/* Threads per test environment: t[0] is thread 1 (with a fresh local
 * space); the others get a local space only when a test forks one (spawn).
 * Worker w[i] runs thread t[i]. */
#define NT 6

/* The local page source's space: slot 0 of global memory. */
#define gspace(e) vm__glocal_space((e)->p->gs)

struct env {
	struct vm_module *m; /* empty: no segments */
	struct vm_proc *p;
	struct vm_thread *t[NT];
	struct vm_worker *w[NT];
	bool check;
};

/* What vm__sched_init() does to a calloc'd worker: its translation caches
 * start empty (the flush only clears entries it knows were filled, so a
 * fresh worker is marked as having too many to know). */
static void worker_init(struct vm_worker *w)
{
	w->nfilled = VM_TLB_TRACK + 1;
	vm__tlb_flush(w);
}

static struct vm_space *lspace(struct env *e, int i)
{
	return &e->t[i]->local;
}

/* Thread @i gets a fresh local space charged to the process, as
 * vm__thread_new() does for a thread without a parent. */
static void new_space(struct env *e, int i)
{
	assert_null(lspace(e, i)->heap);
	assert_int_equal(vm__space_init(lspace(e, i), 0, e->check, false), 0);
	lspace(e, i)->budget = &e->p->budget;
}

static struct env *env_new(bool check)
{
	struct env *e = calloc(1, sizeof *e);

	assert_non_null(e);
	e->check = check;
	e->p = calloc(1, sizeof *e->p);
	assert_non_null(e->p);
	atomic_store(&e->p->budget.left, BUDGET);
	e->p->limit = BUDGET;
	for (int i = 0; i < NT; i++) {
		e->t[i] = calloc(1, sizeof *e->t[i]);
		e->w[i] = calloc(1, sizeof *e->w[i]);
		assert_non_null(e->t[i]);
		assert_non_null(e->w[i]);
		e->t[i]->proc = e->p;
		e->t[i]->tid = (vm_word)i + 1;
		e->w[i]->id = i;
		e->w[i]->cur = e->t[i];
		worker_init(e->w[i]);
	}
	/* Global memory is the local page source, as vm_proc_start() makes
	 * it, on an empty module. */
	e->m = vm_module_new();
	assert_non_null(e->m);
	e->p->m = e->m;
	e->p->opt.check = check;
	struct fl_err err;
	assert_int_equal(vm__glocal_new(e->p, &e->p->gs, &err), 0);
	new_space(e, 0);
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

/* Is thread @i's local space open? (A closed space is all zero.) */
static bool live_space(const struct env *e, int i)
{
	return e->t[i]->local.heap != NULL;
}

static int teardown(void **state)
{
	struct env *e = *state;

	for (int i = 0; i < NT; i++) {
		if (live_space(e, i))
			vm__space_close(&e->t[i]->local);
		free(e->t[i]);
		free(e->w[i]);
	}
	e->p->gs->ops->close(e->p->gs);
	vm_module_free(e->m);
	free(e->p);
	free(e);
	return 0;
}

/* Thread @to starts with a copy-on-write snapshot of @from's local memory,
 * as vm__thread_new() does for spawn; its worker starts with no cached
 * translations, as after a thread switch, and @from's worker drops its
 * local write translations, as the interpreter's spawn does. */
static void fork_space(struct env *e, int to, int from)
{
	struct vm_worker *w = e->w[from];

	assert_false(live_space(e, to));
	assert_true(live_space(e, from));
	for (int i = 0; i < VM_TLB_SIZE; i++)
		if (!(w->wtlb[i].key >> (63 - VM_PAGE_SHIFT) & 1))
			w->wtlb[i].key = ~(vm_word)0;
	vm__space_fork(lspace(e, to), lspace(e, from));
	vm__tlb_flush(e->w[to]);
}

static void close_space(struct env *e, int i)
{
	assert_true(live_space(e, i));
	vm__space_close(lspace(e, i));
	assert_false(live_space(e, i));
}

static vm_word lalloc_in(struct env *e, int i, vm_word n)
{
	return alloc_ok(lspace(e, i), n);
}

static vm_word lalloc(struct env *e, vm_word n)
{
	return lalloc_in(e, 0, n);
}

static vm_word galloc(struct env *e, vm_word n)
{
	return alloc_ok(gspace(e), n);
}

static int lfree_in(struct env *e, int i, vm_word a)
{
	return free_block(lspace(e, i), a);
}

static void expect_fault_w(struct vm_worker *w, const char *msg)
{
	if (strcmp(w->fault.msg, msg) != 0)
		fail_msg("fault '%s', expected '%s'", w->fault.msg, msg);
}

static void expect_fault(struct env *e, const char *msg)
{
	expect_fault_w(e->w[0], msg);
}

/* The bytes pattern @seed puts at [@addr, @addr+@n): a function of the
 * address, so any part of a block can be checked on its own; never 0. */
static void pattern(uint8_t *buf, vm_word addr, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t v = (addr + i) * 0x9e3779b97f4a7c15ull ^
			     (uint64_t)seed * 0xc2b2ae3d27d4eb4full;
		buf[i] = (uint8_t)((v >> 29) % 255 + 1);
	}
}

/* Thread @i writes @n bytes of pattern @seed at @a. */
static void put(struct env *e, int i, vm_word a, vm_word n, unsigned seed)
{
	uint8_t *buf = malloc(n);

	assert_non_null(buf);
	pattern(buf, a, n, seed);
	assert_int_equal(mwrite(e->w[i], a, buf, n, "st"), 0);
	free(buf);
}

/* Thread @i reads pattern @seed at [@a, @a+@n) (seed 0: zeros). */
static void expect_at(struct env *e, int i, vm_word a, vm_word n, unsigned seed)
{
	uint8_t *want = malloc(n), *got = malloc(n);

	assert_non_null(want);
	assert_non_null(got);
	if (seed == 0)
		memset(want, 0, n);
	else
		pattern(want, a, n, seed);
	memset(got, 0xee, n);
	assert_int_equal(mread(e->w[i], got, a, n, "ld"), 0);
	for (vm_word k = 0; k < n; k++)
		if (got[k] != want[k])
			fail_msg("thread %d: byte 0x%llx is 0x%02x, expected "
				 "0x%02x (seed %u)",
				 i + 1, (unsigned long long)(a + k), got[k],
				 want[k], seed);
	free(want);
	free(got);
}

static uint32_t refs_of(const struct vm_page *pg)
{
	return atomic_load(&((struct vm_page *)pg)->refs);
}

/* The memory limit counts pages: the process is charged for each distinct
 * page mapped in any open local space or in the global space, however
 * many spaces share it (retired global pages are free). Walk the trees. */
/* Every open space of @e: the global one and the threads' local ones. */
static int env_spaces(struct env *e, struct vm_space **ss)
{
	int n = 0;

	ss[n++] = gspace(e);
	for (int i = 0; i < NT; i++)
		if (live_space(e, i))
			ss[n++] = lspace(e, i);
	return n;
}

static int64_t pages_held(struct env *e)
{
	struct vm_space *ss[NT + 1];
	int64_t pages;

	held(ss, env_spaces(e, ss), &pages);
	return pages;
}

/* The budget charges exactly what the process holds. */
static void expect_charged(struct env *e)
{
	struct vm_space *ss[NT + 1];
	int64_t pages, bytes = held(ss, env_spaces(e, ss), &pages);
	int64_t b = atomic_load(&e->p->budget.left);

	if (b != BUDGET - bytes)
		fail_msg("budget is BUDGET %+lld bytes, %lld held (%lld pages)",
			 (long long)(b - BUDGET), (long long)bytes,
			 (long long)pages);
}

/* What the allocator states of @e's spaces were charged (copies after a
 * spawn, their lists' growth). */
static int64_t heaps_charged(struct env *e)
{
	struct vm_space *ss[NT + 1];
	struct ptrset hs = {0};
	int64_t n = 0;
	int k = env_spaces(e, ss);

	for (int i = 0; i < k; i++)
		ptr_add(&hs, ss[i]->heap);
	ptr_distinct(&hs);
	for (size_t i = 0; i < hs.n; i++)
		n += ((const struct vm_heap *)hs.p[i])->charged;
	free(hs.p);
	return n;
}

/* The process holds @n distinct pages and is charged exactly that. */
static void expect_budget(struct env *e, int64_t n)
{
	int64_t pages = pages_held(e);

	if (pages != n)
		fail_msg("%lld pages held, expected %lld", (long long)pages,
			 (long long)n);
	expect_charged(e);
}

static void test_xlate_null(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];

	assert_null(xl(w, 0, 1, false, "ld8"));
	expect_fault(e, "ld8 at null address 0x0");
	assert_null(xl(w, 0xff8, 8, true, "st64"));
	expect_fault(e, "st64 at null address 0xff8");
	assert_null(xl(w, VM_GLOBAL_BIT, 8, false, "ld64"));
	expect_fault(e, "ld64 at null address 0x8000000000000000");
	assert_null(xl(w, VM_GLOBAL_BIT | 16, 1, true, "st8"));
	expect_fault(e, "st8 at null address 0x8000000000000010");
}

static void test_xlate_unmapped(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	vm_word a;

	assert_null(xl(w, 0x5000, 1, false, "ld8"));
	expect_fault(e, "ld8 at unmapped address 0x5000");
	assert_null(xl(w, 0x7fffffffffffffffull, 1, false, "ld8"));
	expect_fault(e, "ld8 at unmapped address 0x7fffffffffffffff");
	assert_null(xl(w, ~(vm_word)0, 1, true, "st8"));
	expect_fault(e, "st8 at unmapped address 0xffffffffffffffff");
	/* Freed: the page is gone. */
	a = galloc(e, 16);
	assert_non_null(xl(w, a, 8, true, "st64"));
	assert_int_equal(free_block(gspace(e), a), 0);
	vm__tlb_flush(w);
	assert_null(xl(w, a + 8, 8, false, "ld64"));
	char want[80];
	snprintf(want, sizeof want, "ld64 at unmapped address 0x%llx",
		 (unsigned long long)(a + 8));
	expect_fault(e, want);
	/* A local address never reaches the global space and vice versa. */
	assert_null(xl(w, a & ~VM_GLOBAL_BIT, 1, false, "ld8"));
}

static void test_xlate_read_only(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	struct vm_page *pg = vm__page_map(gspace(e), 5);
	vm_word addr = VM_GLOBAL_BIT | (5 << VM_PAGE_SHIFT);
	uint8_t *d, *r;

	assert_non_null(pg);
	pg->kind = VM_PAGE_RODATA;
	pg->head = 5;
	pg->bytes = PAGE;
	d = vm__page_bytes(pg);
	assert_non_null(d);
	memcpy(d, "constant", 8);

	r = xl(w, addr + 2, 3, false, "ld8");
	assert_ptr_equal(r, d + 2);
	assert_memory_equal(r, "nst", 3);
	assert_null(xl(w, addr + 2, 1, true, "st8"));
	expect_fault(e, "st8 at read-only address 0x8000000000005002");
	/* Even with the read translation cached. */
	assert_non_null(xl(w, addr, 8, false, "ld64"));
	assert_null(xl(w, addr, 8, true, "st64"));
	for (int i = 0; i < VM_TLB_SIZE; i++)
		assert_true(w->wtlb[i].key == ~(vm_word)0);
	/* Bulk writes fault the same way and change nothing. */
	assert_int_equal(mwrite(w, addr, "XX", 2, "write"), FL_EFAULT);
	expect_fault(e, "write at read-only address 0x8000000000005000");
	assert_int_equal(mfill(w, addr + 4, 'X', 10), FL_EFAULT);
	expect_fault(e, "fill at read-only address 0x8000000000005004");
	vm_word g = galloc(e, 64);
	assert_int_equal(mcopy(w, addr, g, 8), FL_EFAULT);
	expect_fault(e, "copy at read-only address 0x8000000000005000");
	assert_int_equal(mcopy(w, addr + 1, addr, 8), FL_EFAULT);
	assert_memory_equal(d, "constant", 8);
	/* Copying *from* read-only data is fine. */
	uint8_t got[8];
	assert_int_equal(mcopy(w, g, addr, 8), 0);
	assert_int_equal(mread(w, got, g, 8, "read"), 0);
	assert_memory_equal(got, "constant", 8);
	/* Module globals are writable. */
	pg->kind = VM_PAGE_DATA;
	vm__tlb_flush(w);
	assert_ptr_equal(xl(w, addr, 1, true, "st8"), d);
}

/* A page's bytes exist only once written; reads before that see zeros,
 * and the read TLB follows the page once it is materialised. */
static void test_xlate_zero_page_then_write(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	struct vm_thread *t = e->t[0];
	vm_word a = lalloc(e, 100);
	struct vm_page *pg = vm__page_get(&t->local, pageno(a));
	vm_word key = a >> VM_PAGE_SHIFT;
	uint8_t *r, *wp;

	assert_null(pg->data);
	r = xl(w, a, 8, false, "ld64");
	assert_non_null(r);
	for (int i = 0; i < 8; i++)
		assert_int_equal(r[i], 0);
	assert_null(pg->data); /* no allocation on read */
	assert_true(w->rtlb[key % VM_TLB_SIZE].key == key);

	wp = xl(w, a + 8, 8, true, "st64");
	assert_non_null(pg->data);
	assert_ptr_equal(wp, pg->data + (a + 8) % PAGE);
	wp[0] = 42;
	assert_true(w->wtlb[key % VM_TLB_SIZE].key == key);
	assert_ptr_equal(w->wtlb[key % VM_TLB_SIZE].data, pg->data);
	assert_ptr_equal(w->rtlb[key % VM_TLB_SIZE].data, pg->data);
	r = xl(w, a + 8, 1, false, "ld8");
	assert_int_equal(*r, 42);

	vm__tlb_flush(w);
	for (int i = 0; i < VM_TLB_SIZE; i++) {
		assert_true(w->rtlb[i].key == ~(vm_word)0);
		assert_true(w->wtlb[i].key == ~(vm_word)0);
	}
}

/* Local and global memory are separate spaces, even at the same offset. */
static void test_spaces_are_separate(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	vm_word l = lalloc(e, 8), g = galloc(e, 8), x = 0;

	assert_true((g & ~VM_GLOBAL_BIT) == l);
	assert_int_equal(mwrite(w, l, "local!!", 8, "st"), 0);
	assert_int_equal(mwrite(w, g, "global!", 8, "st"), 0);
	assert_int_equal(mread(w, &x, l, 8, "ld"), 0);
	assert_memory_equal(&x, "local!!", 8);
	assert_int_equal(mread(w, &x, g, 8, "ld"), 0);
	assert_memory_equal(&x, "global!", 8);
}

static void test_read_write_across_pages(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	struct vm_thread *t = e->t[0];
	vm_word bases[] = {lalloc(e, 3 * PAGE), galloc(e, 3 * PAGE)};
	uint8_t src[3 * VM_PAGE_SIZE], dst[3 * VM_PAGE_SIZE];

	for (size_t i = 0; i < sizeof src; i++)
		src[i] = (uint8_t)(i * 13 + 5);
	for (int k = 0; k < 2; k++) {
		vm_word a = bases[k];
		struct vm_space *s = k ? gspace(e) : &t->local;
		/* 100 bytes straddling the first boundary. */
		assert_int_equal(mwrite(w, a + PAGE - 50, src, 100, "w"),
				 0);
		memset(dst, 0, sizeof dst);
		assert_int_equal(mread(w, dst, a + PAGE - 50, 100, "r"),
				 0);
		assert_memory_equal(dst, src, 100);
		assert_memory_equal(
		    vm__page_get(s, pageno(a))->data + PAGE - 50, src, 50);
		assert_memory_equal(vm__page_get(s, pageno(a) + 1)->data,
				    src + 50, 50);
		/* Across all three pages. */
		assert_int_equal(
		    mwrite(w, a + 10, src, 3 * PAGE - 20, "w"), 0);
		assert_int_equal(mread(w, dst, a, 3 * PAGE, "r"), 0);
		for (int i = 0; i < 10; i++)
			assert_int_equal(dst[i], 0);
		assert_memory_equal(dst + 10, src, 3 * PAGE - 20);
		/* Zero length: nothing, not even at a bad address. */
		assert_int_equal(mread(w, dst, 0, 0, "r"), 0);
		assert_int_equal(mwrite(w, 0, src, 0, "w"), 0);
	}
	/* Running off the end of mapped memory faults at the first byte of
	 * the unmapped page. */
	vm_word last = lalloc(e, PAGE);
	assert_null(vm__page_get(&t->local, pageno(last) + 1));
	assert_int_equal(mwrite(w, last + PAGE - 4, src, 8, "st64"),
			 FL_EFAULT);
	char want[80];
	snprintf(want, sizeof want, "st64 at unmapped address 0x%llx",
		 (unsigned long long)(last + PAGE));
	expect_fault(e, want);
	assert_int_equal(mread(w, dst, last + 8, PAGE, "read"),
			 FL_EFAULT);
	assert_int_equal(mread(w, dst, 16, 8, "read"), FL_EFAULT);
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
	struct vm_worker *w = e->w[0];
	vm_word a = lalloc(e, N);
	uint8_t *host = malloc(N), *got = malloc(N);
	uint64_t x = 0x9e3779b97f4a7c15ull;

	assert_non_null(host);
	assert_non_null(got);
	for (int i = 0; i < N; i++)
		host[i] = (uint8_t)(i * 7 + i / 251);
	assert_int_equal(mwrite(w, a, host, N, "w"), 0);
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
		assert_int_equal(mcopy(w, a + d, a + s, n), 0);
		memmove(host + d, host + s, n);
		assert_int_equal(mread(w, got, a, N, "r"), 0);
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
	struct vm_worker *w = e->w[0];
	struct vm_thread *t = e->t[0];
	vm_word l = lalloc(e, 3 * PAGE), g = galloc(e, 3 * PAGE);
	uint8_t buf[3 * VM_PAGE_SIZE], got[3 * VM_PAGE_SIZE];

	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i % 251 + 1);
	assert_int_equal(mwrite(w, l, buf, sizeof buf, "w"), 0);
	assert_int_equal(mcopy(w, g + 5, l, 2 * PAGE), 0);
	assert_int_equal(mread(w, got, g, sizeof got, "r"), 0);
	assert_memory_equal(got + 5, buf, 2 * PAGE);
	assert_int_equal(got[0], 0);
	assert_int_equal(got[2 * PAGE + 5], 0);

	/* From never-written pages: zeros arrive, in both directions. */
	vm_word z = lalloc(e, 2 * PAGE);
	assert_int_equal(mcopy(w, l + 3, z + 100, PAGE), 0);
	assert_int_equal(mread(w, got, l, 4 * 1024 + 10, "r"), 0);
	assert_memory_equal(got, buf, 3);
	for (vm_word i = 3; i < 3 + PAGE; i++)
		assert_int_equal(got[i], 0);
	assert_int_equal(got[3 + PAGE], buf[3 + PAGE]);

	/* Within one never-written block, overlapping both ways: the first
	 * write materialises the page the source is then read from. */
	vm_word y = lalloc(e, 2 * PAGE);
	assert_int_equal(mwrite(w, y + PAGE + 10, "abcdef", 6, "w"), 0);
	assert_int_equal(mcopy(w, y + PAGE + 12, y + PAGE + 10, 6), 0);
	assert_int_equal(mread(w, got, y + PAGE + 10, 8, "r"), 0);
	assert_memory_equal(got, "ababcdef", 8);
	assert_int_equal(mcopy(w, y + PAGE + 8, y + PAGE + 10, 8), 0);
	assert_int_equal(mread(w, got, y + PAGE + 8, 10, "r"), 0);
	assert_memory_equal(got, "ababcdefef", 10);
	/* First page of y still zero-backed: copy it over data. */
	assert_null(vm__page_get(&t->local, pageno(y))->data);
	assert_int_equal(mcopy(w, y + PAGE - 2, y + PAGE - 10, 20), 0);
	assert_int_equal(mread(w, got, y + PAGE - 2, 20, "r"), 0);
	for (int i = 0; i < 18; i++)
		assert_int_equal(got[i], 0);
	assert_memory_equal(got + 18, "ab", 2); /* was at y+PAGE+8 */

	/* Faults: unmapped source, null destination; n = 0 never faults. */
	assert_int_equal(mcopy(w, l, 0x7000000, 8), FL_EFAULT);
	expect_fault(e, "copy at unmapped address 0x7000000");
	assert_int_equal(mcopy(w, 8, l, 8), FL_EFAULT);
	expect_fault(e, "copy at null address 0x8");
	assert_int_equal(mcopy(w, 0, 0, 0), 0);
}

static void test_fill(void **state)
{
	enum { N = 3 * VM_PAGE_SIZE };
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	vm_word a = galloc(e, N);
	uint8_t host[N], got[N];

	memset(host, 0, sizeof host);
	assert_int_equal(mfill(w, a + 4000, 0x5a, 5000), 0);
	memset(host + 4000, 0x5a, 5000);
	assert_int_equal(mfill(w, a + 1, 0xff, 1), 0);
	host[1] = 0xff;
	assert_int_equal(mfill(w, a + N - 7, 7, 7), 0);
	memset(host + N - 7, 7, 7);
	assert_int_equal(mfill(w, a, 9, 0), 0);
	assert_int_equal(mread(w, got, a, N, "r"), 0);
	assert_memory_equal(got, host, N);
	/* Past the end of the block's pages. */
	assert_null(vm__page_get(gspace(e), pageno(a) + 3));
	assert_int_equal(mfill(w, a + N - 1, 1, 2), FL_EFAULT);
	assert_int_equal(mfill(w, 0, 1, 0), 0);
	assert_int_equal(mfill(w, 0, 1, 1), FL_EFAULT);
	expect_fault(e, "fill at null address 0x0");
}

/* Under --check every access must lie inside one live block, and no
 * translation is cached (each access is checked). */
static void test_check_mode_access(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	struct vm_thread *t = e->t[0];
	vm_word a = lalloc(e, 40), c = lalloc(e, 40);
	char want[100];

	assert_true(c == a + 48);
	assert_non_null(xl(w, a, 8, true, "st64"));
	assert_non_null(xl(w, a + 32, 8, false, "ld64"));
	assert_null(xl(w, a + 36, 8, false, "ld64"));
	snprintf(want, sizeof want, "ld64 at 0x%llx outside any live block",
		 (unsigned long long)(a + 36));
	expect_fault(e, want);
	assert_null(xl(w, a + 40, 1, true, "st8"));
	for (int i = 0; i < VM_TLB_SIZE; i++) {
		assert_true(w->rtlb[i].key == ~(vm_word)0);
		assert_true(w->wtlb[i].key == ~(vm_word)0);
	}
	/* Bulk operations are checked chunk by chunk. */
	assert_int_equal(mfill(w, a, 1, 40), 0);
	assert_int_equal(mfill(w, a, 1, 41), FL_EFAULT);
	assert_int_equal(mcopy(w, c, a, 40), 0);
	assert_int_equal(mcopy(w, c, a, 48), FL_EFAULT);
	/* After a free, even the still-mapped page's slot is dead. */
	assert_int_equal(free_block(&t->local, a), 0);
	assert_null(xl(w, a, 1, false, "ld8"));
}

/* ---- Translation caches ---- */

/* After vm__tlb_flush() a worker caches nothing: a new worker set up as
 * vm__sched_init() does, and a worker that cached a few, a few dozen or
 * more translations than the cache holds, local and global, reads and
 * writes (the flush may only clear the entries it knows were filled). */
static void test_tlb_flush_empties(void **state)
{
	static const int counts[] = {1, 2, 5, 31, 32, 33, 40, 255, 300};
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	struct vm_worker *fresh = calloc(1, sizeof *fresh);
	vm_word l = lalloc(e, 300 * PAGE), g = galloc(e, 40 * PAGE);

	assert_non_null(fresh);
	worker_init(fresh);
	for (int i = 0; i < VM_TLB_SIZE; i++) {
		assert_true(fresh->rtlb[i].key == ~(vm_word)0);
		assert_true(fresh->wtlb[i].key == ~(vm_word)0);
	}
	free(fresh);

	for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
		int n = counts[c];
		for (int k = 0; k < n; k++) {
			vm_word a = k % 7 == 3 && k / 7 < 40
					? g + (vm_word)(k / 7) * PAGE
					: l + (vm_word)k * PAGE;
			assert_non_null(
			    xl(w, a + 8, 8, k % 2 == 0, "ld64"));
			vm_word key = a >> VM_PAGE_SHIFT;
			assert_true(w->rtlb[key % VM_TLB_SIZE].key == key);
		}
		/* A local page just translated is cached... */
		vm_word key = (l + (vm_word)(n - 1) * PAGE) >> VM_PAGE_SHIFT;
		assert_true(w->rtlb[key % VM_TLB_SIZE].key == key ||
			    (n - 1) % 7 == 3);
		vm__tlb_flush(w);
		/* ... and nothing is after the flush. */
		for (int i = 0; i < VM_TLB_SIZE; i++) {
			if (w->rtlb[i].key != ~(vm_word)0 ||
			    w->wtlb[i].key != ~(vm_word)0)
				fail_msg("after %d translations and a flush, "
					 "entry %d still holds r=0x%llx "
					 "w=0x%llx",
					 n, i,
					 (unsigned long long)w->rtlb[i].key,
					 (unsigned long long)w->wtlb[i].key);
		}
	}
}

/* A worker that ran thread 1 and switches to thread 2 flushes its caches
 * (as the scheduler does): thread 2 then cannot reach thread 1's pages
 * through a stale entry, even at the same local address. */
static void test_tlb_thread_switch(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	vm_word a, b;
	uint8_t got[8];

	new_space(e, 1);
	a = lalloc_in(e, 0, 64);
	put(e, 0, a, 64, 1);
	expect_at(e, 0, a, 64, 1);
	assert_true(w->rtlb[(a >> VM_PAGE_SHIFT) % VM_TLB_SIZE].key ==
		    a >> VM_PAGE_SHIFT);
	/* Thread 2 runs on worker 1 (thread 1's worker) now: nothing of
	 * thread 1's is cached any more. */
	w->cur = e->t[1];
	vm__tlb_flush(w);
	assert_true(w->rtlb[(a >> VM_PAGE_SHIFT) % VM_TLB_SIZE].key ==
		    ~(vm_word)0);
	assert_true(w->wtlb[(a >> VM_PAGE_SHIFT) % VM_TLB_SIZE].key ==
		    ~(vm_word)0);
	assert_int_equal(mread(w, got, a, 8, "ld64"), FL_EFAULT);
	expect_fault_w(w, "ld64 at unmapped address 0x1000");
	b = lalloc_in(e, 1, 64);
	assert_true(b == a);
	assert_int_equal(mread(w, got, b, 8, "ld64"), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(got[i], 0);
	w->cur = e->t[0];
	vm__tlb_flush(w);
	expect_at(e, 0, a, 64, 1);
}

/* ---- Copy-on-write local spaces (spawn) ---- */

static vm_word round8(vm_word n)
{
	return (n + 7) & ~(vm_word)7;
}

/* A store through one side of a fork never shows on the other side, in
 * small and multi-page blocks, in written and never-written pages, through
 * writes, copies and fills; the pages stay shared until written. */
static void test_cow_write_isolation(void **state)
{
	static const vm_word sizes[] = {24, 24, 24, 24, 200, 2048};
	enum { NSM = 6 };
	struct env *e = *state;
	struct vm_worker *w1 = e->w[0], *w2 = e->w[1];
	struct vm_space *s1 = lspace(e, 0), *s2 = lspace(e, 1);
	vm_word sm[NSM], big, z, q, bign = 3 * PAGE + 100;
	uint8_t got[2048], want[2048];
	struct vm_page *pg;
	bool nomem;

	for (int i = 0; i < NSM; i++) {
		sm[i] = lalloc(e, sizes[i]);
		put(e, 0, sm[i], sizes[i], 10 + (unsigned)i);
	}
	assert_true(sm[3] == sm[0] + 3 * 24);
	big = lalloc(e, bign); /* 4 pages */
	put(e, 0, big, bign, 20);
	z = lalloc(e, 5000); /* 2 pages, never written */
	q = lalloc(e, 1000);
	put(e, 0, q, 1000, 21);

	expect_budget(e, 10);
	fork_space(e, 1, 0);
	expect_budget(e, 10); /* the child's pages are the parent's */
	/* O(1): the child shares the parent's tree and allocator. */
	assert_ptr_equal(s2->root, s1->root);
	assert_int_equal(atomic_load(&s1->root->refs), 2);
	assert_ptr_equal(s2->heap, s1->heap);
	assert_int_equal(atomic_load(&s1->heap->refs), 2);
	for (vm_word k = 0; k < 4; k++)
		assert_ptr_equal(vm__page_get(s1, pageno(big) + k),
				 vm__page_get(s2, pageno(big) + k));
	/* The child sees what the parent wrote, and zeros where it did not. */
	for (int i = 0; i < NSM; i++)
		expect_at(e, 1, sm[i], sizes[i], 10 + (unsigned)i);
	expect_at(e, 1, big, bign, 20);
	expect_at(e, 1, z, 5000, 0);
	expect_at(e, 1, q, 1000, 21);
	/* ... which left a read translation of big's third page in worker
	 * 2's cache. */
	vm_word key = (big + 2 * PAGE) >> VM_PAGE_SHIFT;
	uint8_t *cached = vm__page_get(s2, pageno(big) + 2)->data;
	assert_non_null(cached);
	assert_true(w2->rtlb[key % VM_TLB_SIZE].key == key);
	assert_ptr_equal(w2->rtlb[key % VM_TLB_SIZE].data, cached);

	/* The parent writes: its copy changes, the child's does not. */
	put(e, 0, sm[1], 24, 30);
	put(e, 0, big + PAGE - 50, 100, 31); /* across pages 0 and 1 */
	put(e, 0, big + 2 * PAGE + 8, 16, 32);
	put(e, 0, z + PAGE + 40, 8, 33); /* z's second, zero-backed page */
	expect_at(e, 0, sm[1], 24, 30);
	expect_at(e, 0, big, PAGE - 50, 20);
	expect_at(e, 0, big + PAGE - 50, 100, 31);
	expect_at(e, 0, big + PAGE + 50, PAGE - 42, 20);
	expect_at(e, 0, big + 2 * PAGE + 8, 16, 32);
	expect_at(e, 0, big + 2 * PAGE + 24, bign - 2 * PAGE - 24, 20);
	expect_at(e, 0, z, PAGE + 40, 0);
	expect_at(e, 0, z + PAGE + 40, 8, 33);
	expect_at(e, 1, sm[1], 24, 11);
	expect_at(e, 1, big, bign, 20);
	expect_at(e, 1, z, 5000, 0);
	assert_null(vm__page_get(s2, pageno(z) + 1)->data);
	assert_non_null(vm__page_get(s1, pageno(z) + 1)->data);
	/* Written pages were copied; the others are still one page. */
	assert_ptr_not_equal(vm__page_get(s1, pageno(sm[1])),
			     vm__page_get(s2, pageno(sm[1])));
	for (vm_word k = 0; k < 3; k++)
		assert_ptr_not_equal(vm__page_get(s1, pageno(big) + k),
				     vm__page_get(s2, pageno(big) + k));
	pg = vm__page_get(s1, pageno(big) + 3);
	assert_ptr_equal(pg, vm__page_get(s2, pageno(big) + 3));
	assert_int_equal(refs_of(pg), 2);
	assert_ptr_equal(vm__page_get(s1, pageno(z)),
			 vm__page_get(s2, pageno(z)));
	assert_ptr_equal(vm__page_get(s1, pageno(sm[4])),
			 vm__page_get(s2, pageno(sm[4])));
	/* Worker 2's cached translation is still the child's page, with the
	 * child's bytes. */
	assert_ptr_equal(w2->rtlb[key % VM_TLB_SIZE].data, cached);
	assert_ptr_equal(vm__page_get(s2, pageno(big) + 2)->data, cached);
	memcpy(got, cached + 8, 16);
	expect_at(e, 1, big + 2 * PAGE + 8, 16, 20);
	assert_int_equal(mread(w2, want, big + 2 * PAGE + 8, 16, "ld"),
			 0);
	assert_memory_equal(got, want, 16);

	/* The child writes: the parent does not see it. */
	put(e, 1, sm[0], 24, 40);
	put(e, 1, sm[1] + 8, 8, 41);
	put(e, 1, big + 3 * PAGE, 100, 42);
	put(e, 1, z, 16, 43);
	expect_at(e, 1, sm[0], 24, 40);
	expect_at(e, 1, sm[1], 8, 11);
	expect_at(e, 1, sm[1] + 8, 8, 41);
	expect_at(e, 1, sm[1] + 16, 8, 11);
	expect_at(e, 1, big + 3 * PAGE, 100, 42);
	expect_at(e, 1, z, 16, 43);
	expect_at(e, 0, sm[0], 24, 10);
	expect_at(e, 0, sm[1], 24, 30);
	expect_at(e, 0, big + 3 * PAGE, 100, 20);
	expect_at(e, 0, z, PAGE, 0);
	assert_null(vm__page_get(s1, pageno(z))->data);

	/* Both write the same bytes, differently. */
	put(e, 0, sm[4], 200, 50);
	put(e, 1, sm[4], 200, 51);
	expect_at(e, 0, sm[4], 200, 50);
	expect_at(e, 1, sm[4], 200, 51);

	/* Copies and fills take private pages too. */
	assert_int_equal(mcopy(w2, sm[3], sm[2], 24), 0);
	assert_int_equal(mread(w2, got, sm[3], 24, "ld"), 0);
	pattern(want, sm[2], 24, 12);
	assert_memory_equal(got, want, 24);
	expect_at(e, 0, sm[3], 24, 13);
	assert_int_equal(mfill(w1, sm[5], 0x77, 2048), 0);
	assert_int_equal(mread(w1, got, sm[5], 2048, "ld"), 0);
	for (int i = 0; i < 2048; i++)
		assert_int_equal(got[i], 0x77);
	expect_at(e, 1, sm[5], 2048, 15);
	/* A copy whose destination and source share one page (big's last,
	 * still shared): the source is read from the copy just made. */
	assert_int_equal(mcopy(w1, big + 3 * PAGE + 4, big + 3 * PAGE,
				      96),
			 0);
	pattern(want, big + 3 * PAGE, 96, 20);
	assert_int_equal(mread(w1, got, big + 3 * PAGE + 4, 96, "ld"),
			 0);
	assert_memory_equal(got, want, 96);
	expect_at(e, 1, big + 3 * PAGE, 100, 42);

	/* Stores never copy the allocator state. */
	assert_ptr_equal(s1->heap, s2->heap);
	assert_int_equal(atomic_load(&s1->heap->refs), 2);

	/* vm__page_get_w: a private copy once, then that same copy; the
	 * other side keeps the original, now unshared. */
	pg = vm__page_get(s1, pageno(q));
	assert_ptr_equal(pg, vm__page_get(s2, pageno(q)));
	assert_int_equal(refs_of(pg), 2);
	struct vm_page *mine = vm__page_get_w(s2, pageno(q), &nomem);
	assert_non_null(mine);
	assert_false(nomem);
	assert_ptr_not_equal(mine, pg);
	assert_int_equal(refs_of(mine), 1);
	assert_int_equal(refs_of(pg), 1);
	assert_ptr_equal(vm__page_get(s2, pageno(q)), mine);
	assert_ptr_equal(vm__page_get(s1, pageno(q)), pg);
	assert_ptr_not_equal(mine->data, pg->data);
	assert_memory_equal(mine->data, pg->data, VM_PAGE_SIZE);
	assert_int_equal(mine->nlive, pg->nlive);
	assert_int_equal(mine->cls, pg->cls);
	assert_ptr_equal(vm__page_get_w(s2, pageno(q), &nomem), mine);
	assert_ptr_equal(vm__page_get_w(s1, pageno(q), &nomem), pg);
	assert_null(vm__page_get_w(s2, 400, &nomem));
	assert_false(nomem);
	assert_null(vm__page_get_w(s2, VM_MAX_PAGE, &nomem));
	assert_false(nomem);
	expect_at(e, 0, q, 1000, 21);
	expect_at(e, 1, q, 1000, 21);
	/* Ten pages before the fork; each side's first write to a page the
	 * other still had took a copy, one page more each: the parent's of
	 * sm[1]'s page, big's first three and z's second, the child's of
	 * big's last and z's first (the pages the parent had copied were
	 * the child's alone by then), sm[4]'s, sm[5]'s and q's. */
	expect_budget(e, 10 + 5 + 2 + 3);
}

/* After a fork each side allocates and frees on its own: the child's free
 * of a block the parent allocated frees it in the child only, and both
 * sides may hand out the same address for different blocks. */
static void cow_allocators(struct env *e)
{
	struct vm_space *s1 = lspace(e, 0), *s2 = lspace(e, 1);
	vm_word a[6], f[2], l, g, ln = 2 * PAGE + 8, first, n;
	uint8_t got[8];
	char want[100];

	for (int i = 0; i < 6; i++) {
		a[i] = lalloc(e, 48);
		assert_true(a[i] == a[0] + (vm_word)i * 48);
		put(e, 0, a[i], 48, 100 + (unsigned)i);
	}
	f[0] = lalloc(e, 2048); /* a full page of the 2048 class */
	f[1] = lalloc(e, 2048);
	assert_true(f[1] == f[0] + 2048);
	put(e, 0, f[0], 2048, 106);
	put(e, 0, f[1], 2048, 107);
	l = lalloc(e, ln);
	put(e, 0, l, ln, 110);
	g = lalloc(e, 2 * PAGE); /* freed before the fork: free on both sides */
	put(e, 0, g, 2 * PAGE, 111);
	assert_int_equal(lfree_in(e, 0, g), 0);

	fork_space(e, 1, 0);
	expect_charged(e);

	/* The child frees a[1]: only its copy of the block dies. */
	assert_int_equal(lfree_in(e, 1, a[1]), 0);
	expect_charged(e); /* the child's copy of a[1]'s page */
	assert_ptr_not_equal(s2->heap, s1->heap);
	assert_int_equal(atomic_load(&s1->heap->refs), 1);
	assert_int_equal(atomic_load(&s2->heap->refs), 1);
	assert_int_equal(lfree_in(e, 1, a[1]), FL_EFAULT); /* double free */
	assert_true(vm__heap_live(s1, a[1], 48));
	assert_false(vm__heap_live(s2, a[1], 8));
	assert_int_equal(vm__page_get(s1, pageno(a[0]))->nlive, 6);
	assert_int_equal(vm__page_get(s2, pageno(a[0]))->nlive, 5);
	expect_at(e, 0, a[1], 48, 101);
	if (e->check) {
		assert_int_equal(mread(e->w[1], got, a[1], 8, "ld64"),
				 FL_EFAULT);
		snprintf(want, sizeof want,
			 "ld64 at 0x%llx outside any live block",
			 (unsigned long long)a[1]);
		expect_fault_w(e->w[1], want);
	}
	expect_at(e, 1, a[0], 48, 100);
	expect_at(e, 1, a[2], 48, 102);
	if (e->check) {
		/* The child's copy of the page keeps the exact block sizes. */
		assert_true(vm__heap_live(s2, a[0], 48));
		assert_false(vm__heap_live(s2, a[0], 49));
		assert_false(vm__heap_live(s2, a[2] + 40, 16));
		assert_false(vm__heap_live(s1, a[0], 49));
	}

	/* Both allocate: the child gets a[1]'s slot back, zeroed, the parent
	 * the next free slot; the child's next block has the same address as
	 * the parent's, and each side sees its own. */
	vm_word c1 = lalloc_in(e, 1, 48);
	assert_true(c1 == a[1]);
	expect_at(e, 1, c1, 48, 0);
	expect_at(e, 0, a[1], 48, 101);
	vm_word p1 = lalloc_in(e, 0, 48);
	assert_true(p1 == a[0] + 6 * 48);
	vm_word c2 = lalloc_in(e, 1, 48);
	assert_true(c2 == p1);
	put(e, 0, p1, 48, 120);
	put(e, 1, c2, 48, 121);
	expect_at(e, 0, p1, 48, 120);
	expect_at(e, 1, c2, 48, 121);
	put(e, 1, c1, 48, 122);
	expect_at(e, 0, a[1], 48, 101);

	/* Page numbers freed before the fork are reused by each side. */
	vm_word cg = lalloc_in(e, 1, 2 * PAGE);
	assert_true(cg == g);
	put(e, 1, cg, 2 * PAGE, 124);
	vm_word pg2 = lalloc_in(e, 0, 2 * PAGE);
	assert_true(pg2 == g);
	expect_at(e, 0, pg2, 2 * PAGE, 0);
	expect_at(e, 1, cg, 2 * PAGE, 124);

	/* A full page: the child's free puts it on the child's partial
	 * stack only; the parent's page stays full. */
	assert_int_equal(lfree_in(e, 1, f[0]), 0);
	vm_word cf = lalloc_in(e, 1, 2048);
	assert_true(cf == f[0]);
	expect_at(e, 1, cf, 2048, 0);
	expect_at(e, 0, f[0], 2048, 106);
	vm_word pf = lalloc_in(e, 0, 2048);
	assert_true(pageno(pf) != pageno(f[0]));
	vm_word cf2 = lalloc_in(e, 1, 2048);
	assert_true(cf2 == pf); /* the same fresh page number on each side */
	assert_ptr_not_equal(vm__page_get(s1, pageno(pf)),
			     vm__page_get(s2, pageno(pf)));
	put(e, 0, pf, 2048, 123);
	expect_at(e, 1, cf2, 2048, 0);

	/* A large block: the child's free unmaps its pages in the child. */
	assert_int_equal(
	    vm__heap_free(s2, l, &first, &n), 0);
	assert_true(first == pageno(l));
	assert_true(n == 3);
	for (vm_word k = 0; k < 3; k++) {
		assert_null(vm__page_get(s2, pageno(l) + k));
		assert_non_null(vm__page_get(s1, pageno(l) + k));
	}
	expect_at(e, 0, l, ln, 110);
	vm__tlb_flush(e->w[1]);
	assert_int_equal(mread(e->w[1], got, l + PAGE, 8, "ld64"),
			 FL_EFAULT);
	snprintf(want, sizeof want, "ld64 at unmapped address 0x%llx",
		 (unsigned long long)(l + PAGE));
	expect_fault_w(e->w[1], want);
	assert_int_equal(lfree_in(e, 1, l), FL_EFAULT);
	/* The child reuses the page numbers, with fresh zero pages. */
	vm_word cl = lalloc_in(e, 1, 3 * PAGE);
	assert_true(cl == l);
	expect_at(e, 1, cl, 3 * PAGE, 0);
	put(e, 1, cl, 3 * PAGE, 130);
	expect_at(e, 0, l, ln, 110);

	/* The parent's frees of blocks the child freed still work, once. */
	assert_int_equal(lfree_in(e, 0, a[1]), 0);
	assert_int_equal(lfree_in(e, 0, a[1]), FL_EFAULT);
	assert_int_equal(lfree_in(e, 0, l), 0);
	assert_int_equal(lfree_in(e, 0, f[0]), 0);
	expect_at(e, 1, cl, 3 * PAGE, 130);
	expect_at(e, 1, c1, 48, 122);
	expect_at(e, 1, f[1], 2048, 107);
	/* A block the parent allocates now is not the child's to free. */
	vm_word x = lalloc_in(e, 0, 5 * PAGE);
	assert_null(vm__page_get(s2, pageno(x)));
	assert_int_equal(lfree_in(e, 1, x), FL_EFAULT);
	assert_int_equal(lfree_in(e, 0, x), 0);
	/* The child's own blocks free cleanly on its side only. */
	assert_int_equal(lfree_in(e, 1, cl), 0);
	assert_int_equal(lfree_in(e, 1, c2), 0);
	expect_at(e, 0, p1, 48, 120);
	assert_int_equal(lfree_in(e, 0, p1), 0);
	assert_int_equal(lfree_in(e, 0, p1), FL_EFAULT);
	assert_int_equal(lfree_in(e, 0, pg2), 0);
	expect_at(e, 1, cg, 2 * PAGE, 124);
	assert_int_equal(lfree_in(e, 1, cg), 0);
	expect_charged(e);
}

static void test_cow_allocators_independent(void **state)
{
	cow_allocators(*state);
}

static void test_cow_allocators_independent_check(void **state)
{
	cow_allocators(*state);
}

/* Freeing the last block of a slab page that is not on top of its class's
 * partial stack moves the top page into its place, which changes that
 * page's metadata (pidx): after a fork, in the freeing side's copy only. */
static void test_cow_partial_stack(void **state)
{
	struct env *e = *state;
	struct vm_space *s1 = lspace(e, 0), *s2 = lspace(e, 1);
	int c = class_index(64);
	vm_word p1[64], q;

	for (int i = 0; i < 64; i++)
		p1[i] = lalloc(e, 64); /* page P1, full: off the stack */
	q = lalloc(e, 64);             /* page P2: the stack is [P2] */
	assert_true(pageno(q) != pageno(p1[0]));
	assert_int_equal(lfree_in(e, 0, p1[5]), 0); /* [P2, P1] */
	assert_int_equal(s1->heap->npartial[c], 2);
	put(e, 0, q, 64, 1);
	put(e, 0, p1[0], 64, 2);

	expect_budget(e, 2);
	fork_space(e, 1, 0);
	/* The child frees P2's only block: P2 leaves the child's stack and P1
	 * takes its place there. */
	assert_int_equal(lfree_in(e, 1, q), 0);
	expect_budget(e, 3); /* the child's copy of P1, for its pidx */
	assert_null(vm__page_get(s2, pageno(q)));
	assert_non_null(vm__page_get(s1, pageno(q)));
	struct vm_page *cp1 = vm__page_get(s2, pageno(p1[0]));
	struct vm_page *pp1 = vm__page_get(s1, pageno(p1[0]));
	assert_ptr_not_equal(cp1, pp1);
	assert_int_equal(cp1->pidx, 0);
	assert_int_equal(pp1->pidx, 1);
	assert_int_equal(vm__page_get(s1, pageno(q))->pidx, 0);
	assert_int_equal(s2->heap->npartial[c], 1);
	assert_true(s2->heap->partial[c][0] == pageno(p1[0]));
	assert_int_equal(s1->heap->npartial[c], 2);
	assert_true(s1->heap->partial[c][0] == pageno(q));
	assert_true(s1->heap->partial[c][1] == pageno(p1[0]));

	/* Both allocators carry on consistently. */
	assert_true(lalloc_in(e, 0, 64) == p1[5]); /* P1 full: [P2] */
	assert_true(lalloc_in(e, 1, 64) == p1[5]); /* P1 full: [] */
	assert_true(lalloc_in(e, 0, 64) == q + 64);
	/* The child maps a new page at P2's number, which it freed. */
	vm_word cq = lalloc_in(e, 1, 64);
	assert_true(cq == q);
	expect_at(e, 1, q, 64, 0);
	expect_at(e, 0, q, 64, 1);
	expect_at(e, 0, p1[0], 64, 2);
	expect_at(e, 1, p1[0], 64, 2);

	/* Everything freed on both sides: no page left, stacks empty. */
	for (int side = 0; side < 2; side++) {
		for (int i = 0; i < 64; i++)
			assert_int_equal(lfree_in(e, side, p1[i]), 0);
		assert_int_equal(lfree_in(e, side, q), 0);
		if (side == 0)
			assert_int_equal(lfree_in(e, 0, q + 64), 0);
		assert_null(vm__page_get(lspace(e, side), pageno(q)));
		assert_null(vm__page_get(lspace(e, side), pageno(p1[0])));
		assert_int_equal(lspace(e, side)->heap->npartial[c], 0);
		expect_charged(e);
	}
	expect_budget(e, 0);
}

/* A page shared by a fork and then freed on both sides is released once
 * (under ASan/LSan: no leak, no double free), whichever side frees first,
 * and whether or not that side wrote it first. */
static void test_cow_free_both_sides(void **state)
{
	struct env *e = *state;

	for (int order = 0; order < 4; order++) {
		int one = order & 1, two = 1 - one; /* who frees first */
		vm_word sm[3], big, bign = 2 * PAGE + 500, first, n;

		for (int i = 0; i < 3; i++) {
			sm[i] = lalloc(e, 64);
			put(e, 0, sm[i], 64, 1 + (unsigned)i);
		}
		big = lalloc(e, bign);
		put(e, 0, big, bign, 4);
		fork_space(e, 1, 0);
		expect_budget(e, 4);
		if (order & 2) { /* @one takes private copies first */
			put(e, one, sm[1], 64, 5);
			put(e, one, big + PAGE, 8, 6);
			expect_budget(e, 6);
		}
		for (int i = 0; i < 3; i++)
			assert_int_equal(lfree_in(e, one, sm[i]), 0);
		assert_int_equal(
		    vm__heap_free(lspace(e, one), big, &first, &n), 0);
		assert_true(n == 3);
		/* Its copies are gone; the originals are @two's alone. */
		expect_budget(e, 4);
		assert_null(vm__page_get(lspace(e, one), pageno(sm[0])));
		for (vm_word k = 0; k < 3; k++) {
			struct vm_page *pg =
			    vm__page_get(lspace(e, two), pageno(big) + k);
			assert_null(vm__page_get(lspace(e, one), pageno(big) + k));
			assert_non_null(pg);
			assert_int_equal(refs_of(pg), 1);
		}
		assert_int_equal(
		    refs_of(vm__page_get(lspace(e, two), pageno(sm[0]))), 1);
		/* The other side still has every byte. */
		for (int i = 0; i < 3; i++)
			expect_at(e, two, sm[i], 64, 1 + (unsigned)i);
		expect_at(e, two, big, bign, 4);
		/* Then it frees them too; each side's double free fails. */
		for (int i = 0; i < 3; i++) {
			assert_int_equal(lfree_in(e, two, sm[i]), 0);
			assert_int_equal(lfree_in(e, two, sm[i]), FL_EFAULT);
			assert_int_equal(lfree_in(e, one, sm[i]), FL_EFAULT);
		}
		assert_int_equal(lfree_in(e, two, big), 0);
		assert_int_equal(lfree_in(e, two, big), FL_EFAULT);
		assert_int_equal(lfree_in(e, one, big), FL_EFAULT);
		expect_budget(e, 0);
		for (int side = 0; side < 2; side++) {
			assert_null(vm__page_get(lspace(e, side), pageno(sm[0])));
			for (vm_word k = 0; k < 3; k++)
				assert_null(vm__page_get(lspace(e, side),
							 pageno(big) + k));
		}
		close_space(e, 1);
		close_space(e, 0);
		assert_true(atomic_load(&e->p->budget.left) == BUDGET);
		new_space(e, 0);
	}
}

/* Closing either side of a fork (a thread ending) leaves the other intact;
 * the survivor then holds the only references and writes in place. */
static void test_cow_close_either_side(void **state)
{
	struct env *e = *state;

	for (int round = 0; round < 4; round++) {
		int victim = round & 1, other = 1 - victim;
		struct vm_space *so = lspace(e, other);
		vm_word sm[3], big, z, bign = 2 * PAGE + 300;

		for (int i = 0; i < 3; i++) {
			sm[i] = lalloc(e, 100);
			put(e, 0, sm[i], 100, 1 + (unsigned)i);
		}
		big = lalloc(e, bign);
		put(e, 0, big, bign, 4);
		z = lalloc(e, PAGE);
		fork_space(e, 1, 0);
		expect_budget(e, 5);
		if (round & 2) { /* the victim took private copies first */
			put(e, victim, sm[0], 100, 5);
			put(e, victim, big + PAGE, 100, 6);
			put(e, victim, z, 8, 7);
			assert_int_equal(lfree_in(e, victim, sm[2]), 0);
			(void)lalloc_in(e, victim, 3000);
			expect_budget(e, 9); /* three copies, a new page */
		}
		close_space(e, victim);
		expect_budget(e, 5); /* the victim's own pages are gone */

		for (int i = 0; i < 3; i++)
			expect_at(e, other, sm[i], 100, 1 + (unsigned)i);
		expect_at(e, other, big, bign, 4);
		expect_at(e, other, z, PAGE, 0);
		/* Only references left: no copy on write or allocation. */
		assert_int_equal(atomic_load(&so->root->refs), 1);
		assert_int_equal(atomic_load(&so->heap->refs), 1);
		struct vm_page *pg[3];
		for (vm_word k = 0; k < 3; k++) {
			pg[k] = vm__page_get(so, pageno(big) + k);
			assert_int_equal(refs_of(pg[k]), 1);
		}
		struct vm_radix *root = so->root;
		struct vm_heap *heap = so->heap;
		put(e, other, big, bign, 8);
		for (vm_word k = 0; k < 3; k++)
			assert_ptr_equal(vm__page_get(so, pageno(big) + k), pg[k]);
		assert_ptr_equal(so->root, root);
		vm_word x = lalloc_in(e, other, 64);
		assert_ptr_equal(so->heap, heap);
		put(e, other, x, 64, 9);
		expect_at(e, other, big, bign, 8);
		expect_budget(e, 6); /* x's page */
		/* It frees and closes normally. */
		for (int i = 0; i < 3; i++)
			assert_int_equal(lfree_in(e, other, sm[i]), 0);
		assert_int_equal(lfree_in(e, other, big), 0);
		assert_int_equal(lfree_in(e, other, x), 0);
		close_space(e, other);
		assert_true(atomic_load(&e->p->budget.left) == BUDGET);
		new_space(e, 0);
	}
}

/* Three generations and siblings: a chain of forks, each side writing,
 * closing the middle one first. */
static void test_cow_generations(void **state)
{
	struct env *e = *state;
	vm_word a = lalloc(e, 3 * PAGE), s = lalloc(e, 40);

	put(e, 0, a, 3 * PAGE, 1);
	put(e, 0, s, 40, 2);
	expect_budget(e, 4);
	fork_space(e, 1, 0); /* child */
	put(e, 1, a + PAGE, 100, 3);
	fork_space(e, 2, 1); /* grandchild: sees the child's write */
	fork_space(e, 3, 0); /* sibling: does not */
	put(e, 2, s, 40, 4);
	put(e, 0, a, 8, 5);
	expect_at(e, 2, a, PAGE, 1);
	expect_at(e, 2, a + PAGE, 100, 3);
	expect_at(e, 3, a + PAGE, 100, 1);
	expect_at(e, 3, a, 8, 1);
	expect_at(e, 1, s, 40, 2);
	expect_budget(e, 7); /* copies: a's second page, s's, a's first */
	close_space(e, 1);
	/* The child's one private page is the grandchild's too. */
	expect_budget(e, 7);
	expect_at(e, 2, a + PAGE, 100, 3);
	expect_at(e, 2, s, 40, 4);
	expect_at(e, 0, a, 8, 5);
	expect_at(e, 0, a + 8, 3 * PAGE - 8, 1);
	expect_at(e, 3, s, 40, 2);
	assert_int_equal(lfree_in(e, 2, a), 0);
	expect_budget(e, 6); /* the child's copy of a's second page */
	assert_int_equal(lfree_in(e, 3, s), 0);
	expect_budget(e, 6); /* its copy of s's page, made and gone */
	expect_at(e, 0, s, 40, 2);
	close_space(e, 0);
	/* Its copy of a's first page and s's page, now its alone. */
	expect_budget(e, 4);
	expect_at(e, 3, a, 3 * PAGE, 1);
	expect_at(e, 2, s, 40, 4);
	close_space(e, 2);
	close_space(e, 3);
	expect_budget(e, 0);
}

/* Randomised: up to NT local spaces forked from each other, allocating,
 * freeing, writing, copying, filling and closing in random order, each
 * checked against a host model of its blocks. */
struct mblk {
	vm_word a, n; /* n rounded up to 8: the live range */
	uint8_t *bytes;
};

struct mspace {
	struct mblk b[48];
	int nb;
};

static void mspace_clear(struct mspace *m)
{
	for (int i = 0; i < m->nb; i++)
		free(m->b[i].bytes);
	m->nb = 0;
}

static void model_check_block(struct env *e, int i, const struct mblk *b)
{
	uint8_t *got = malloc(b->n);

	assert_non_null(got);
	assert_int_equal(mread(e->w[i], got, b->a, b->n, "ld"), 0);
	if (e->check) { /* the live range is exactly the block */
		assert_true(vm__heap_live(lspace(e, i), b->a, b->n));
		assert_false(vm__heap_live(lspace(e, i), b->a, b->n + 1));
		assert_false(vm__heap_live(lspace(e, i), b->a + b->n - 1, 2));
	}
	if (memcmp(got, b->bytes, b->n) != 0) {
		vm_word k = 0;
		while (got[k] == b->bytes[k])
			k++;
		fail_msg("thread %d: block 0x%llx (%llu bytes) differs at +%llu: "
			 "0x%02x, expected 0x%02x",
			 i + 1, (unsigned long long)b->a,
			 (unsigned long long)b->n, (unsigned long long)k,
			 got[k], b->bytes[k]);
	}
	free(got);
}

static void cow_model(struct env *e, uint64_t x, int steps)
{
	struct mspace *m = calloc(NT, sizeof *m);
	uint8_t *buf = malloc(4 * VM_PAGE_SIZE);

	assert_non_null(m);
	assert_non_null(buf);
	for (int step = 0; step < steps; step++) {
		int live[NT], nlive = 0, i, r = (int)(rng(&x) % 100);
		for (int k = 0; k < NT; k++)
			if (live_space(e, k))
				live[nlive++] = k;
		if (nlive == 0) {
			assert_true(atomic_load(&e->p->budget.left) == BUDGET);
			new_space(e, 0);
			continue;
		}
		i = live[rng(&x) % (uint64_t)nlive];
		struct mspace *ms = &m[i];
		if (ms->nb == 0 || (r < 18 && ms->nb < 48)) {
			/* alloc */
			vm_word n = rng(&x) % 4 ? 1 + rng(&x) % 2048
						: 2049 + rng(&x) % (3 * PAGE);
			vm_word a = lalloc_in(e, i, n);
			struct mblk *nb = &ms->b[ms->nb];
			n = round8(n);
			for (int k = 0; k < ms->nb; k++)
				if (a < ms->b[k].a + ms->b[k].n &&
				    ms->b[k].a < a + n)
					fail_msg("thread %d: new block 0x%llx+%llu "
						 "overlaps 0x%llx+%llu",
						 i + 1, (unsigned long long)a,
						 (unsigned long long)n,
						 (unsigned long long)ms->b[k].a,
						 (unsigned long long)ms->b[k].n);
			nb->a = a;
			nb->n = n;
			nb->bytes = calloc(1, n);
			assert_non_null(nb->bytes);
			ms->nb++;
			model_check_block(e, i, nb); /* zero-filled */
		} else if (r < 30 || ms->nb == 48) {
			/* free */
			int k = (int)(rng(&x) % (uint64_t)ms->nb);
			vm_word a = ms->b[k].a;
			assert_int_equal(lfree_in(e, i, a), 0);
			free(ms->b[k].bytes);
			ms->b[k] = ms->b[--ms->nb];
			if (rng(&x) % 4 == 0)
				assert_int_equal(lfree_in(e, i, a), FL_EFAULT);
			vm__tlb_flush(e->w[i]);
		} else if (r < 55) {
			/* write */
			struct mblk *b = &ms->b[rng(&x) % (uint64_t)ms->nb];
			vm_word off = rng(&x) % b->n;
			vm_word n = 1 + rng(&x) % (b->n - off);
			for (vm_word k = 0; k < n; k++)
				buf[k] = (uint8_t)rng(&x);
			assert_int_equal(
			    mwrite(e->w[i], b->a + off, buf, n, "st"), 0);
			memcpy(b->bytes + off, buf, n);
		} else if (r < 63) {
			/* copy, maybe within one block */
			struct mblk *d = &ms->b[rng(&x) % (uint64_t)ms->nb];
			struct mblk *s = &ms->b[rng(&x) % (uint64_t)ms->nb];
			vm_word doff = rng(&x) % d->n, soff = rng(&x) % s->n;
			vm_word room = d->n - doff < s->n - soff ? d->n - doff
								 : s->n - soff;
			vm_word n = rng(&x) % (room + 1);
			assert_int_equal(mcopy(e->w[i], d->a + doff,
						      s->a + soff, n),
					 0);
			memmove(d->bytes + doff, s->bytes + soff, n);
		} else if (r < 68) {
			/* fill */
			struct mblk *b = &ms->b[rng(&x) % (uint64_t)ms->nb];
			vm_word off = rng(&x) % b->n;
			vm_word n = rng(&x) % (b->n - off + 1);
			uint8_t v = (uint8_t)rng(&x);
			assert_int_equal(mfill(e->w[i], b->a + off, v, n),
					 0);
			memset(b->bytes + off, v, n);
		} else if (r < 88) {
			/* check one block */
			model_check_block(e, i, &ms->b[rng(&x) % (uint64_t)ms->nb]);
		} else if (r < 95) {
			/* spawn */
			int j = 0;
			while (j < NT && live_space(e, j))
				j++;
			if (j == NT)
				continue;
			fork_space(e, j, i);
			m[j].nb = ms->nb;
			for (int k = 0; k < ms->nb; k++) {
				m[j].b[k] = ms->b[k];
				m[j].b[k].bytes = malloc(ms->b[k].n);
				assert_non_null(m[j].b[k].bytes);
				memcpy(m[j].b[k].bytes, ms->b[k].bytes,
				       ms->b[k].n);
			}
		} else {
			/* the thread ends */
			close_space(e, i);
			mspace_clear(ms);
		}
		expect_charged(e);
		if (step % 500 == 499)
			for (int k = 0; k < NT; k++)
				for (int b = 0; live_space(e, k) && b < m[k].nb;
				     b++)
					model_check_block(e, k, &m[k].b[b]);
	}
	for (int k = 0; k < NT; k++) {
		for (int b = 0; live_space(e, k) && b < m[k].nb; b++)
			model_check_block(e, k, &m[k].b[b]);
		mspace_clear(&m[k]);
	}
	/* Every thread ends: all the budget comes back. */
	for (int k = 0; k < NT; k++)
		if (live_space(e, k))
			close_space(e, k);
	expect_budget(e, 0);
	free(m);
	free(buf);
}

static void test_cow_random(void **state)
{
	cow_model(*state, 0x243f6a8885a308d3ull, 6000);
}

static void test_cow_random_check(void **state)
{
	cow_model(*state, 0x13198a2e03707344ull, 4000);
}

/* ---- The memory limit: pages, charged once however shared ---- */

/* Pages mapped before a spawn are charged once, whoever references them,
 * and credited when the last side lets go, whichever side frees first:
 * frees on both sides give back exactly what was charged, and spawn +
 * free repeated leaves the limit where it was. (Before the budget moved
 * into vm_mem.c each side's free credited the shared pages, so the
 * process could map more than its --memory limit.) */
static void test_cow_budget(void **state)
{
	struct env *e = *state;

	for (int round = 0; round < 6; round++) {
		int one = round & 1, two = 1 - one; /* who frees first */
		vm_word a = lalloc(e, 64), l = lalloc(e, 3 * PAGE);

		expect_budget(e, 4);
		put(e, 0, a, 64, 1);
		fork_space(e, 1, 0);
		expect_budget(e, 4);
		/* The first side's free of a copies a's page (its live bits
		 * change), then unmaps the copy; l's pages are still the
		 * other side's. */
		assert_int_equal(lfree_in(e, one, a), 0);
		expect_budget(e, 4);
		assert_int_equal(lfree_in(e, one, l), 0);
		expect_budget(e, 4);
		expect_at(e, two, a, 64, 1);
		/* The last references go: credited, once. */
		assert_int_equal(lfree_in(e, two, a), 0);
		expect_budget(e, 3);
		assert_int_equal(lfree_in(e, two, l), 0);
		expect_budget(e, 0);
		close_space(e, 1);
		expect_budget(e, 0);
	}
}

/* A page shared by a spawn and written by both sides becomes two pages,
 * both charged: the first writer's copy, and the original, now the other
 * side's alone (its write takes no copy). Closing the child gives its
 * page back, whichever side copied. */
static void test_cow_both_write_budget(void **state)
{
	struct env *e = *state;

	for (int round = 0; round < 4; round++) {
		int w1 = round & 1, w2 = 1 - w1; /* who writes first */
		int victim = round & 2 ? 0 : 1, other = 1 - victim;
		vm_word a = lalloc(e, 64), l = lalloc(e, 2 * PAGE);
		struct vm_page *orig = vm__page_get(lspace(e, 0), pageno(a));

		put(e, 0, a, 64, 1);
		put(e, 0, l, 2 * PAGE, 2);
		expect_budget(e, 3);
		fork_space(e, 1, 0);
		assert_ptr_equal(lspace(e, 1)->budget, &e->p->budget);
		expect_budget(e, 3);
		put(e, w1, a, 8, 3);
		expect_budget(e, 4);
		/* The other side has the original to itself now. */
		assert_ptr_equal(vm__page_get(lspace(e, w2), pageno(a)), orig);
		assert_int_equal(refs_of(orig), 1);
		put(e, w2, a + 8, 8, 4);
		expect_budget(e, 4);
		assert_ptr_equal(vm__page_get(lspace(e, w2), pageno(a)), orig);
		/* Across l's two pages: both copied, once. */
		put(e, w2, l + PAGE - 4, 8, 5);
		expect_budget(e, 6);
		put(e, w1, l + PAGE - 8, 16, 6);
		expect_budget(e, 6);
		expect_at(e, w1, a, 8, 3);
		expect_at(e, w1, a + 8, 56, 1);
		expect_at(e, w2, a, 8, 1);
		expect_at(e, w2, a + 8, 8, 4);
		expect_at(e, w2, l + PAGE - 4, 8, 5);
		expect_at(e, w1, l + PAGE - 8, 16, 6);

		/* One side ends: its pages go, the other's stay. */
		close_space(e, victim);
		expect_budget(e, 3);
		expect_at(e, other, a + 16, 48, 1);
		expect_at(e, other, l, PAGE - 8, 2);
		assert_int_equal(lfree_in(e, other, a), 0);
		expect_budget(e, 2);
		close_space(e, other);
		expect_budget(e, 0);
		new_space(e, 0);
	}
}

/* A thread's end (its space closed, as vm__thread_free() does) credits
 * every page only it holds: those it mapped and the copies it took on
 * write, not those it still shares with its parent. */
static void test_close_credits_private_pages(void **state)
{
	struct env *e = *state;
	vm_word a = lalloc(e, 100), l = lalloc(e, 2 * PAGE), x[8];

	put(e, 0, a, 100, 1);
	put(e, 0, l, 2 * PAGE, 2);
	expect_budget(e, 3);

	/* A thread without a parent: every page it has is its own. */
	new_space(e, 2);
	x[0] = lalloc_in(e, 2, 5 * PAGE);
	for (int i = 1; i < 8; i++)
		x[i] = lalloc_in(e, 2, i < 4 ? 2048 : 8 << i);
	put(e, 2, x[0] + 2 * PAGE, 100, 3);
	put(e, 2, x[3], 2048, 4);
	/* 5 pages, 2048-byte blocks on two, one page for each of 128, 256,
	 * 512 and 1024 bytes. */
	expect_budget(e, 3 + 5 + 2 + 4);
	close_space(e, 2);
	expect_budget(e, 3);

	/* A spawned thread: its copies and its own blocks go, the pages it
	 * shares stay, with the parent's bytes. */
	fork_space(e, 1, 0);
	put(e, 1, a, 8, 5);            /* a copy of a's page */
	put(e, 1, l + PAGE, 8, 6);     /* of l's second */
	vm_word c = lalloc_in(e, 1, 3 * PAGE);
	vm_word d = lalloc_in(e, 1, 16);
	vm_word f = lalloc_in(e, 1, 100); /* on its copy of a's page */
	assert_true(pageno(f) == pageno(a));
	put(e, 1, c, 3 * PAGE, 7);
	put(e, 1, d, 16, 8);
	expect_budget(e, 3 + 2 + 3 + 1);
	close_space(e, 1);
	expect_budget(e, 3);
	expect_at(e, 0, a, 100, 1);
	expect_at(e, 0, l, 2 * PAGE, 2);
	for (vm_word k = 0; k < 2; k++)
		assert_int_equal(
		    refs_of(vm__page_get(lspace(e, 0), pageno(l) + k)), 1);

	/* The last thread ends: everything comes back. */
	close_space(e, 0);
	expect_budget(e, 0);
}

/* Copy on write needs budget for the page and the tree nodes on its
 * path: at the limit, a store to a shared page faults "out of memory",
 * naming the limit, and changes nothing (the page stays shared, the
 * budget is as it was), on either side and through any path; so do a
 * free of a block on a shared slab page (it changes the page's live bits)
 * and an allocation on one. Given enough, the store takes its copy; the
 * other side then writes the original in place, needing nothing. */
static void test_cow_write_over_budget(void **state)
{
	struct env *e = *state;
	vm_word a = lalloc(e, 64), a2 = lalloc(e, 64), l = lalloc(e, 2 * PAGE);
	const char *oom = "out of memory (copy on write; the process's memory "
			  "limit, --memory, is 1 GiB)";
	struct vm_page *pg, *lp;
	/* A slab page's copy under --check copies its size table too. */
	int64_t pc = CP + (e->check ? VM_COST_SIZES : 0);
	int64_t spare, heaps0, more;
	bool nomem;

	assert_true(pageno(a2) == pageno(a));
	put(e, 0, a, 64, 1);
	put(e, 0, l, 2 * PAGE, 2);
	fork_space(e, 1, 0);
	expect_budget(e, 3);
	pg = vm__page_get(lspace(e, 0), pageno(a));
	lp = vm__page_get(lspace(e, 0), pageno(l) + 1);

	/* Less than any copy left: a large page's and its path (the rest
	 * set aside, given back below). */
	heaps0 = heaps_charged(e);
	spare = atomic_load(&e->p->budget.left) - (CP + PATH - 1);
	atomic_fetch_sub(&e->p->budget.left, spare);
	for (int side = 0; side < 2; side++) {
		struct vm_space *s = lspace(e, side);
		struct vm_worker *w = e->w[side];

		assert_int_equal(mwrite(w, a, "x", 1, "st8"), FL_EFAULT);
		expect_fault_w(w, oom);
		/* The first failed store has made its path private (the
		 * nodes fit); the page is still shared. */
		assert_true(atomic_load(&e->p->budget.left) ==
			    CP - 1 - (heaps_charged(e) - heaps0));
		assert_int_equal(mfill(w, a + 8, 0, 8), FL_EFAULT);
		expect_fault_w(w, oom);
		assert_int_equal(mcopy(w, a + 16, a, 8), FL_EFAULT);
		expect_fault_w(w, oom);
		assert_int_equal(mwrite(w, l + PAGE - 4, "12345678", 8,
					       "st"),
				 FL_EFAULT);
		expect_fault_w(w, oom);
		assert_null(xl(w, l + PAGE, 8, true, "st64"));
		expect_fault_w(w, oom);
		assert_null(vm__page_get_w(s, pageno(a), &nomem));
		assert_true(nomem);
		/* Changing the shared allocator state takes a private copy of
		 * it (which fits), then the page's copy (which does not). */
		assert_int_equal(lfree_in(e, side, a), FL_ENOMEM);
		assert_true(vm__heap_alloc(s, 64) == 0);
		assert_true(atomic_load(&e->p->budget.left) ==
			    CP - 1 - (heaps_charged(e) - heaps0));
		/* Still one page each, shared. */
		assert_ptr_equal(vm__page_get(s, pageno(a)), pg);
		assert_ptr_equal(vm__page_get(s, pageno(l) + 1), lp);
		assert_int_equal(pg->nlive, 2);
		for (int i = 0; i < VM_TLB_SIZE; i++)
			assert_true(w->wtlb[i].key == ~(vm_word)0);
	}
	assert_int_equal(refs_of(pg), 2);
	assert_int_equal(refs_of(lp), 2);
	/* Reads need no budget; nothing changed. */
	for (int side = 0; side < 2; side++) {
		expect_at(e, side, a, 64, 1);
		expect_at(e, side, l, 2 * PAGE, 2);
	}

	/* Exactly a page: the child's store takes its copy... */
	more = pc - (CP - 1) + (heaps_charged(e) - heaps0);
	atomic_fetch_add(&e->p->budget.left, more);
	spare -= more;
	put(e, 1, a, 8, 3);
	assert_true(atomic_load(&e->p->budget.left) == 0);
	assert_int_equal(refs_of(pg), 1);
	/* ... and the parent, the original's only holder, writes in place
	 * with nothing left. */
	put(e, 0, a, 8, 4);
	assert_true(atomic_load(&e->p->budget.left) == 0);
	/* The rest back: frees on both sides (each side's first takes its
	 * own copy of the allocator state), the failed ones left a live. */
	atomic_fetch_add(&e->p->budget.left, spare);
	expect_charged(e);
	assert_int_equal(lfree_in(e, 0, a2), 0);
	assert_int_equal(lfree_in(e, 1, a2), 0); /* on the child's copy */
	assert_int_equal(lfree_in(e, 0, a), 0);
	assert_int_equal(lfree_in(e, 0, a), FL_EFAULT);
	expect_at(e, 1, a, 8, 3);
	expect_at(e, 1, a + 8, 56, 1);
	expect_budget(e, 3);
}

static void test_cow_write_over_budget_check(void **state)
{
	test_cow_write_over_budget(state);
}

/* ---- The global space: retired pages ---- */

static int count_retired(const struct vm_space *s)
{
	int n = 0;

	for (const struct vm_page *pg = s->retired; pg != NULL;
	     pg = pg->next_retired)
		n++;
	return n;
}

static bool is_retired(const struct vm_space *s, const struct vm_page *p)
{
	for (const struct vm_page *pg = s->retired; pg != NULL;
	     pg = pg->next_retired)
		if (pg == p)
			return true;
	return false;
}

static void expect_zero_page(const struct vm_page *pg)
{
	if (pg->data == NULL) /* never touched: reads see zeros */
		return;
	for (vm_word i = 0; i < PAGE; i++)
		if (pg->data[i] != 0)
			fail_msg("reused page: byte %llu is 0x%02x",
				 (unsigned long long)i, pg->data[i]);
}

/* Global pages get their bytes when first touched; unmapping retires the
 * page (struct, bytes and size table) to the space's reuse list, and the
 * next mapping takes it back, zeroed, in any role. */
static void global_reuse(struct vm_space *s)
{
	struct vm_budget b = {.left = BUDGET};
	struct vm_page *pg, *pl[3], *set[4];
	vm_word a, c, l, m, k, first, n;
	uint8_t *data;

	s->budget = &b;
	assert_true(s->global);
	a = alloc_ok(s, 40);
	pg = vm__page_get(s, pageno(a));
	assert_null(pg->data); /* before any touch: galloc is lazy */
	data = vm__page_bytes(pg);
	assert_non_null(data);
	assert_ptr_equal(vm__page_bytes(pg), data); /* once */
	assert_true((s->check) == (pg->sizes != NULL));
	memset(data, 0x5c, VM_PAGE_SIZE);
	assert_null(s->retired);

	assert_int_equal(vm__heap_free(s, a, &first, &n), 0);
	assert_true(n == 1);
	assert_null(vm__page_get(s, pageno(a)));
	assert_ptr_equal(s->retired, pg);
	assert_null(pg->next_retired);
	assert_ptr_equal(pg->data, data); /* kept for racing readers */
	assert_true((s->check) == (pg->sizes != NULL)); /* so is this */
	expect_held(s, &b, 0); /* retired pages cost no budget */

	/* One page: the same struct and bytes come back, zeroed, and are
	 * charged again. */
	c = alloc_ok(s, 3000); /* one large page */
	expect_held(s, &b, 1);
	assert_ptr_equal(vm__page_get(s, pageno(c)), pg);
	assert_null(s->retired);
	assert_ptr_equal(pg->data, data);
	expect_zero_page(pg);
	assert_int_equal(pg->kind, VM_PAGE_LARGE);
	assert_true(pg->head == pageno(c));
	assert_true(pg->bytes == 3000);
	assert_int_equal(refs_of(pg), 1);
	assert_null(pg->next_retired);
	for (unsigned i = 0; i < VM_SLAB_WORDS; i++)
		assert_true(pg->live[i] == 0);

	/* Several: kept and reused last in, first out, each once. */
	l = alloc_ok(s, 3 * PAGE);
	expect_held(s, &b, 4);
	for (int i = 0; i < 3; i++) {
		pl[i] = vm__page_get(s, pageno(l) + (vm_word)i);
		memset(vm__page_bytes(pl[i]), 0xa5, VM_PAGE_SIZE);
	}
	memset(pg->data, 0x11, VM_PAGE_SIZE);
	assert_int_equal(vm__heap_free(s, c, &first, &n), 0);
	assert_int_equal(vm__heap_free(s, l, &first, &n), 0);
	assert_int_equal(count_retired(s), 4);
	set[0] = pg;
	for (int i = 0; i < 3; i++) {
		set[i + 1] = pl[i];
		assert_true(is_retired(s, pl[i]));
	}
	assert_true(is_retired(s, pg));
	expect_held(s, &b, 0);

	m = alloc_ok(s, 2 * PAGE);
	assert_int_equal(count_retired(s), 2);
	expect_held(s, &b, 2);
	for (vm_word i = 0; i < 2; i++) {
		struct vm_page *q = vm__page_get(s, pageno(m) + i);
		bool found = false;
		for (int j = 0; j < 4; j++)
			found |= q == set[j];
		assert_true(found);
		assert_false(is_retired(s, q));
		expect_zero_page(q);
		assert_int_equal(q->kind, VM_PAGE_LARGE);
		assert_true(q->head == pageno(m));
	}
	k = alloc_ok(s, 8); /* a slab page */
	assert_int_equal(count_retired(s), 1);
	expect_held(s, &b, 3);
	pg = vm__page_get(s, pageno(k));
	assert_false(is_retired(s, pg));
	expect_zero_page(pg);
	assert_int_equal(pg->kind, VM_PAGE_SLAB);
	assert_int_equal(pg->nlive, 1);
	assert_true((s->check) == (pg->sizes != NULL));
	if (s->check) {
		assert_int_equal(pg->sizes[0], 8);
		assert_true(vm__heap_live(s, k, 8));
		assert_false(vm__heap_live(s, k + 8, 1));
	}
	/* Mapping directly takes the last retired page, then fresh ones. */
	struct vm_page *d = vm__page_map(s, 5000);
	assert_non_null(d);
	assert_null(s->retired);
	expect_held(s, &b, 4);
	expect_zero_page(d);
	assert_null(d->next_retired);
	struct vm_page *f = vm__page_map(s, 5001);
	assert_non_null(f);
	for (int j = 0; j < 4; j++)
		assert_ptr_not_equal(f, set[j]);
	expect_zero_page(f);
	expect_held(s, &b, 5);
	vm__page_unmap(s, 5000);
	vm__page_unmap(s, 5001);
	assert_int_equal(count_retired(s), 2);
	assert_ptr_equal(s->retired, f);
	expect_held(s, &b, 3);
	/* Over budget, a retired page is not taken: the list stays. */
	int64_t saved = atomic_load(&b.left);
	atomic_store(&b.left, VM_COST_PAGE - 1);
	assert_null(vm__page_map(s, 5002));
	assert_true(vm__heap_alloc(s, 100) == 0);
	assert_int_equal(count_retired(s), 2);
	assert_ptr_equal(s->retired, f);
	assert_true(atomic_load(&b.left) == VM_COST_PAGE - 1);
	atomic_store(&b.left, saved);
	/* The space's close frees the retired pages (LSan). */
	assert_int_equal(vm__heap_free(s, m, &first, &n), 0);
	assert_int_equal(count_retired(s), 4);
	expect_held(s, &b, 1); /* k's */
}

static void test_global_reuse(void **state)
{
	global_reuse(*state);
}

static void test_global_reuse_check(void **state)
{
	global_reuse(*state);
}

/* A worker that cached a translation of a global page that another thread
 * then freed may still read through it until its next fence: the bytes
 * are retired, not freed, so that is never a use after free (ASan). */
static void test_global_stale_translation(void **state)
{
	struct env *e = *state;
	struct vm_worker *w = e->w[0];
	vm_word g = galloc(e, 128), key = g >> VM_PAGE_SHIFT;
	uint8_t *cached, got[8];

	put(e, 0, g, 128, 1);
	expect_at(e, 0, g, 128, 1);
	assert_true(w->rtlb[key % VM_TLB_SIZE].key == key);
	cached = w->rtlb[key % VM_TLB_SIZE].data;
	assert_int_equal(free_block(gspace(e), g), 0);
	assert_null(vm__page_get(gspace(e), pageno(g)));
	assert_ptr_equal(gspace(e)->retired->data, cached);
	memcpy(got, (const uint8_t *)cached + (g & (PAGE - 1)), 8);
	/* Reused: the stale reader sees the new page's zeros. */
	vm_word h = galloc(e, 3 * PAGE);
	assert_null(gspace(e)->retired);
	assert_true(vm__page_get(gspace(e), pageno(h))->data == cached ||
		    vm__page_get(gspace(e), pageno(h) + 1)->data == cached ||
		    vm__page_get(gspace(e), pageno(h) + 2)->data == cached);
	for (vm_word i = 0; i < PAGE; i++)
		assert_int_equal(cached[i], 0);
	/* After the fence's flush the freed address faults. */
	vm__tlb_flush(w);
	if (pageno(h) > pageno(g) || pageno(h) + 2 < pageno(g)) {
		assert_null(xl(w, g, 8, false, "ld64"));
		char want[80];
		snprintf(want, sizeof want, "ld64 at unmapped address 0x%llx",
			 (unsigned long long)g);
		expect_fault(e, want);
	}
}

/* The global space and the threads' spaces draw on one budget. A global
 * page is charged when mapped, credited when unmapped (retired to the
 * reuse list), and charged again when reused; a thread's end does not
 * touch the global pages. Over budget a retired page stays on the list. */
static void test_global_budget(void **state)
{
	struct env *e = *state;
	struct vm_space *gs = gspace(e);
	vm_word g, h, g2, k, first, n;
	int64_t spare;

	g = galloc(e, 64);
	expect_budget(e, 1);
	h = galloc(e, 2 * PAGE);
	expect_budget(e, 3);
	assert_int_equal(free_block(gs, g), 0);
	expect_budget(e, 2);
	assert_int_equal(count_retired(gs), 1);
	assert_int_equal(vm__heap_free(gs, h, &first, &n), 0);
	assert_true(n == 2);
	expect_budget(e, 0);
	assert_int_equal(count_retired(gs), 3);
	/* Reused: charged again, page by page. */
	g2 = galloc(e, 3 * PAGE);
	assert_null(gs->retired);
	expect_budget(e, 3);
	k = galloc(e, 8); /* a fresh page */
	expect_budget(e, 4);
	assert_non_null(vm__page_map(gs, 9000));
	expect_budget(e, 5);
	vm__page_unmap(gs, 9000);
	expect_budget(e, 4);
	assert_int_equal(count_retired(gs), 1);
	vm__page_unmap(gs, 9000); /* not mapped: nothing */
	expect_budget(e, 4);

	/* A thread's pages count against the same limit... */
	(void)lalloc(e, 2 * PAGE);
	expect_budget(e, 6);
	/* ... and its end gives back its own, not the global ones. */
	close_space(e, 0);
	expect_budget(e, 4);
	new_space(e, 0);

	/* Less than a page left: no global page, fresh or reused. */
	spare = atomic_load(&e->p->budget.left) - (VM_COST_PAGE - 1);
	atomic_fetch_sub(&e->p->budget.left, spare);
	assert_true(vm__heap_alloc(gs, 100) == 0);
	assert_true(vm__heap_alloc(gs, 2 * PAGE) == 0);
	assert_null(vm__page_map(gs, 9001));
	assert_true(atomic_load(&e->p->budget.left) == VM_COST_PAGE - 1);
	/* The thread's first page does not fit either (the tree nodes on
	 * its path do, and stay, and so does the page number it had taken,
	 * in a free-run list). */
	assert_true(vm__heap_alloc(lspace(e, 0), 8) == 0);
	assert_int_equal(count_retired(gs), 1);
	assert_true(atomic_load(&e->p->budget.left) == VM_COST_PAGE - 1 - PATH - FR);
	/* A slot on a global page already mapped costs nothing. */
	assert_true(pageno(galloc(e, 8)) == pageno(k));
	atomic_fetch_add(&e->p->budget.left, spare);
	expect_budget(e, 4);
	assert_int_equal(free_block(gs, g2), 0);
	expect_budget(e, 1);
}

/* A racy program's workers may read a global page's metadata while
 * another thread frees its last block (the page is retired), allocates
 * again (it is reused, zeroed, for another class) and so on: what they
 * read is stale or fresh but never freed memory -- the size table of a
 * --check page and the page's bytes stay with the struct -- and the bytes
 * pointer, once set, never changes. ASan would report a use after free
 * (the size table freed at the unmap, as it once was) and LSan the bytes
 * of a page whose pointer a reader's first touch replaced. */
struct race {
	struct vm_space *s;
	_Atomic vm_word addr;
	_Atomic bool stop;
	uint64_t reads;
};

static void *race_reader(void *arg)
{
	struct race *r = arg;

	while (!atomic_load(&r->stop)) {
		vm_word a = atomic_load(&r->addr);
		struct vm_page *pg = vm__page_get(r->s, pageno(a));
		if (pg != NULL) {
			uint8_t *d = vm__page_bytes(pg); /* a first touch */
			(void)VM_GET(pg->kind);
			if (d != NULL)
				(void)__atomic_load_n(d + (a & (PAGE - 1)),
						      __ATOMIC_RELAXED);
		}
		(void)vm__heap_live(r->s, a, 8);
		r->reads++;
	}
	return NULL;
}

static void test_global_racy_readers(void **state)
{
	struct env *e = *state;
	struct race r = {.s = gspace(e)};
	pthread_t th[2];
	static const vm_word sizes[] = {8, 48, 2048, 5000};

	atomic_store(&r.addr, galloc(e, 8));
	assert_int_equal(free_block(r.s, atomic_load(&r.addr)), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, race_reader, &r), 0);
	for (int i = 0; i < 20000; i++) {
		vm_word a = alloc_ok(r.s, sizes[i % 4]);
		atomic_store(&r.addr, a);
		assert_int_equal(free_block(r.s, a), 0);
	}
	atomic_store(&r.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_true(r.reads > 0);
	expect_budget(e, 0);
}

static void test_global_racy_readers_check(void **state)
{
	test_global_racy_readers(state);
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
	    cmocka_unit_test_setup_teardown(test_tlb_flush_empties, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_tlb_thread_switch, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_write_isolation, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_allocators_independent,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_cow_allocators_independent_check, setup_check, teardown),
	    cmocka_unit_test_setup_teardown(test_cow_partial_stack, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_free_both_sides, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_close_either_side, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_generations, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cow_random_check, setup_check,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_budget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cow_both_write_budget, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_close_credits_private_pages,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cow_write_over_budget, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_cow_write_over_budget_check,
					    setup_check, teardown),
	    cmocka_unit_test_setup_teardown(test_global_reuse, setup_global,
					    teardown_space),
	    cmocka_unit_test_setup_teardown(test_global_reuse_check,
					    setup_check_global, teardown_space),
	    cmocka_unit_test_setup_teardown(test_global_stale_translation,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_global_racy_readers_check,
					    setup_check, teardown),
	    cmocka_unit_test_setup_teardown(test_global_racy_readers, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_global_budget, setup,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
