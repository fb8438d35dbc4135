/* The allocator behind alloc, galloc and free, one instance per space.
 *
 * Small blocks (up to VM_SMALL_MAX bytes, 8-byte rounded) come from slab
 * pages of one size class; a page's live blocks are a bitmap in its struct
 * vm_page, outside program memory, so no program can corrupt the allocator.
 * Each class keeps a stack of its pages that have a free slot; a page knows
 * its position in that stack (pidx) so it can leave it in O(1). Larger
 * blocks take whole pages. A page whose last block is freed is unmapped at
 * once, so a later access to it faults; its page number is kept for reuse.
 *
 * Invariants: a slab page is in its class's partial stack iff 0 < nlive <
 * blocks-per-page; an empty slab page is unmapped. The process's memory
 * budget is charged per page and node by vm_mem.c, and here for the
 * allocator's own state: a private copy of it (a spawned thread's first
 * allocation) and its lists' growth (h->charged, credited when it goes).
 *
 * Failure modes: out of address space or budget or host memory -> 0, the
 * caller raises "out of memory"; free of anything but a live block start ->
 * FL_EFAULT.
 *
 * Threads: a local space's allocator runs on its owner's thread; its state
 * (struct vm_heap) and pages may be shared copy-on-write with a parent or
 * child, so every change first makes them private (vm__heap_own,
 * vm__page_get_w). The global space's allocator runs under proc->glock;
 * concurrent readers see live bits through relaxed atomics. */
#include "vm/vm_int.h"

#include <stdlib.h>
#include <string.h>

const uint32_t vm__class_size[VM_NCLASSES] = {
	8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
};

static int class_of(vm_word n)
{
	int c = 0;

	while (vm__class_size[c] < n)
		c++;
	return c;
}

static uint32_t blocks_per_page(int c)
{
	return VM_PAGE_SIZE / vm__class_size[c];
}

static vm_word pages_for(vm_word n)
{
	return (n + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
}

static bool live_bit(const struct vm_page *pg, uint32_t i)
{
	return __atomic_load_n(&pg->live[i / 64], __ATOMIC_RELAXED) >> (i % 64) & 1;
}

static void set_live(struct vm_page *pg, uint32_t i, bool on)
{
	uint64_t w = pg->live[i / 64], bit = (uint64_t)1 << (i % 64);

	__atomic_store_n(&pg->live[i / 64], on ? w | bit : w & ~bit,
			 __ATOMIC_RELAXED);
}

/* What a copy of @h costs against the limit. */
static int64_t heap_cost(const struct vm_heap *h)
{
	int64_t n = (int64_t)(sizeof *h + VM_MALLOC_OVERHEAD) +
		    (int64_t)(h->nfree * sizeof(struct vm_range));

	for (int k = 0; k < VM_NCLASSES; k++)
		n += (int64_t)(h->npartial[k] * sizeof(vm_word));
	return n;
}

bool vm__heap_own(struct vm_space *s)
{
	struct vm_heap *h = s->heap, *c;
	int64_t cost;

	if (atomic_load(&h->refs) == 1)
		return true;
	cost = heap_cost(h);
	if (!vm__charge(s->budget, cost))
		return false;
	c = calloc(1, sizeof *c);
	if (c == NULL) {
		vm__credit(s->budget, cost);
		return false;
	}
	atomic_init(&c->refs, 1);
	c->charged = cost;
	c->top = h->top;
	if (h->nfree > 0) {
		c->free_ranges = malloc(h->nfree * sizeof *c->free_ranges);
		if (c->free_ranges == NULL)
			goto fail;
		memcpy(c->free_ranges, h->free_ranges,
		       h->nfree * sizeof *c->free_ranges);
		c->nfree = c->free_cap = h->nfree;
	}
	for (int k = 0; k < VM_NCLASSES; k++) {
		if (h->npartial[k] == 0)
			continue;
		c->partial[k] = malloc(h->npartial[k] * sizeof(vm_word));
		if (c->partial[k] == NULL)
			goto fail;
		memcpy(c->partial[k], h->partial[k],
		       h->npartial[k] * sizeof(vm_word));
		c->npartial[k] = c->partial_cap[k] = h->npartial[k];
	}
	s->heap = c;
	vm__heap_unref(h, s->budget); /* the other side may have let go */
	return true;
fail:
	free(c->free_ranges);
	for (int k = 0; k < VM_NCLASSES; k++)
		free(c->partial[k]);
	free(c);
	vm__credit(s->budget, cost);
	return false;
}

void vm__heap_unref(struct vm_heap *h, struct vm_budget *budget)
{
	if (h == NULL || atomic_fetch_sub(&h->refs, 1) != 1)
		return;
	vm__credit(budget, h->charged);
	free(h->free_ranges);
	for (int c = 0; c < VM_NCLASSES; c++)
		free(h->partial[c]);
	free(h);
}

/* Grow a list of @h from @cap to @ncap entries of @size bytes, charged. */
static void *grow_list(struct vm_space *s, void *list, size_t cap,
		       size_t ncap, size_t size)
{
	int64_t more = (int64_t)((ncap - cap) * size);
	void *l;

	if (!vm__charge(s->budget, more))
		return NULL;
	l = realloc(list, ncap * size);
	if (l == NULL) {
		vm__credit(s->budget, more);
		return NULL;
	}
	s->heap->charged += more;
	return l;
}

/* A run of @n unused page numbers: first fit among freed runs, else fresh. */
static vm_word reserve_pages(struct vm_heap *h, vm_word n)
{
	for (size_t i = h->nfree; i-- > 0;) {
		struct vm_range *r = &h->free_ranges[i];
		if (r->n < n)
			continue;
		vm_word first = r->first;
		r->first += n;
		r->n -= n;
		if (r->n == 0)
			h->free_ranges[i] = h->free_ranges[--h->nfree];
		return first;
	}
	if (n > VM_MAX_PAGE - h->top)
		return 0;
	h->top += n;
	return h->top - n;
}

static void release_pages(struct vm_space *s, vm_word first, vm_word n)
{
	struct vm_heap *h = s->heap;

	if (h->nfree == h->free_cap) {
		size_t cap = h->free_cap ? 2 * h->free_cap : 16;
		struct vm_range *r = grow_list(s, h->free_ranges, h->free_cap,
					       cap, sizeof *r);
		if (r == NULL)
			return; /* the page numbers are lost, nothing else */
		h->free_ranges = r;
		h->free_cap = cap;
	}
	h->free_ranges[h->nfree++] = (struct vm_range){first, n};
}

static bool partial_push(struct vm_space *s, int c, vm_word pageno,
			 struct vm_page *pg)
{
	struct vm_heap *h = s->heap;

	if (h->npartial[c] == h->partial_cap[c]) {
		size_t cap = h->partial_cap[c] ? 2 * h->partial_cap[c] : 8;
		vm_word *p = grow_list(s, h->partial[c], h->partial_cap[c], cap,
				       sizeof *p);
		if (p == NULL)
			return false;
		h->partial[c] = p;
		h->partial_cap[c] = cap;
	}
	pg->pidx = (uint32_t)h->npartial[c];
	h->partial[c][h->npartial[c]++] = pageno;
	return true;
}

/* Take @pg off its class's stack; false when out of memory (copying the
 * page that moves into its place). */
static bool partial_remove(struct vm_space *s, int c, struct vm_page *pg)
{
	struct vm_heap *h = s->heap;
	vm_word last = h->partial[c][h->npartial[c] - 1];

	if (pg->pidx < h->npartial[c] - 1) {
		bool nomem;
		struct vm_page *lp = vm__page_get_w(s, last, &nomem);
		if (lp == NULL)
			return false;
		h->partial[c][pg->pidx] = last;
		lp->pidx = pg->pidx;
	}
	h->npartial[c]--;
	return true;
}

static vm_word alloc_small(struct vm_space *s, vm_word n)
{
	struct vm_heap *h = s->heap;
	int c = class_of(n);
	uint32_t nb = blocks_per_page(c), size = vm__class_size[c], i;
	struct vm_page *pg;
	vm_word pageno = 0;
	bool nomem;

	if (h->npartial[c] > 0) {
		pageno = h->partial[c][h->npartial[c] - 1];
		/* An absent page's slot could not be zeroed: the caller
		 * fetches it first (vm__heap_slab_for). */
		pg = vm__page_get(s, pageno);
		if (pg == NULL || vm__page_absent(pg))
			return 0;
		pg = vm__page_get_w(s, pageno, &nomem);
		if (pg == NULL)
			return 0;
	} else {
		pageno = reserve_pages(h, 1);
		pg = pageno ? vm__page_map(s, pageno) : NULL;
		if (pg == NULL)
			goto fail_page;
		/* --check: a size per block, in a table of the largest count
		 * (a global page's may be read by racing workers after the
		 * page is reused for another class). */
		if (s->check) {
			if (!vm__charge(s->budget, VM_COST_SIZES))
				goto fail_mapped;
			if (pg->sizes == NULL) {
				uint32_t *z = calloc(VM_SIZES_MAX, sizeof *z);
				if (z == NULL) {
					vm__credit(s->budget, VM_COST_SIZES);
					goto fail_mapped;
				}
				__atomic_store_n(&pg->sizes, z, __ATOMIC_RELEASE);
			} else {
				for (uint32_t k = 0; k < VM_SIZES_MAX; k++)
					VM_SET(pg->sizes[k], 0);
			}
		}
		VM_SET(pg->cls, (uint8_t)c);
		VM_SET(pg->kind, VM_PAGE_SLAB); /* its sizes are charged now */
		if (!partial_push(s, c, pageno, pg))
			goto fail_mapped;
	}
	for (i = 0; i < nb; i++)
		if (!live_bit(pg, i))
			break;
	if ((uint32_t)pg->nlive + 1 == nb && !partial_remove(s, c, pg))
		return 0;
	set_live(pg, i, true);
	pg->nlive++;
	if (pg->sizes != NULL)
		VM_SET(pg->sizes[i], (uint32_t)n);
	uint8_t *bytes = __atomic_load_n(&pg->data, __ATOMIC_ACQUIRE);
	if (bytes != NULL) /* else still all zero */
		memset(bytes + i * size, 0, size);
	return s->base | (pageno << VM_PAGE_SHIFT) | (vm_word)i * size;

fail_mapped:
	vm__page_unmap(s, pageno);
fail_page:
	if (pageno)
		release_pages(s, pageno, 1);
	return 0;
}

static vm_word alloc_large(struct vm_space *s, vm_word n)
{
	vm_word np = pages_for(n), first, i;

	if (s->budget != NULL &&
	    (int64_t)np > atomic_load(&s->budget->left) / VM_COST_PAGE)
		return 0; /* clearly too big: fail before mapping anything */
	first = reserve_pages(s->heap, np);
	if (first == 0)
		return 0;
	for (i = 0; i < np; i++) {
		struct vm_page *pg = vm__page_map(s, first + i);
		if (pg == NULL)
			goto fail_mapped;
		VM_SET(pg->head, first);
		VM_SET(pg->bytes, n);
		VM_SET(pg->kind, VM_PAGE_LARGE);
	}
	return s->base | (first << VM_PAGE_SHIFT);

fail_mapped:
	while (i-- > 0)
		vm__page_unmap(s, first + i);
	release_pages(s, first, np);
	return 0;
}

vm_word vm__heap_alloc(struct vm_space *s, vm_word n)
{
	if (n > ((vm_word)1 << VM_SPACE_BITS))
		return 0;
	n = (n + 7) & ~(vm_word)7;
	if (!vm__heap_own(s))
		return 0;
	return n <= VM_SMALL_MAX ? alloc_small(s, n) : alloc_large(s, n);
}

int vm__heap_free(struct vm_space *s, vm_word addr, vm_word *first,
		  vm_word *unmapped)
{
	vm_word off = addr & VM_OFFSET_MASK, pageno = off >> VM_PAGE_SHIFT;
	uint32_t o = (uint32_t)(off & (VM_PAGE_SIZE - 1));
	struct vm_page *pg = NULL;
	bool nomem;

	*first = pageno;
	*unmapped = 0;
	if ((addr & ~VM_OFFSET_MASK) == s->base) /* this space's slot */
		pg = vm__page_get(s, pageno);
	if (pg == NULL)
		return FL_EFAULT;
	if (pg->kind == VM_PAGE_SLAB) {
		int c = pg->cls;
		uint32_t size = vm__class_size[c], nb = blocks_per_page(c);
		uint32_t i = o / size;
		if (o % size != 0 || i >= nb || !live_bit(pg, i))
			return FL_EFAULT;
		if (!vm__heap_own(s) || !(pg = vm__page_get_w(s, pageno, &nomem)))
			return FL_ENOMEM;
		if (pg->nlive == nb && !partial_push(s, c, pageno, pg))
			return FL_ENOMEM;
		set_live(pg, i, false);
		pg->nlive--;
		if (pg->nlive == 0) {
			if (!partial_remove(s, c, pg)) {
				/* Keep the empty page mapped; it is reused. */
				return 0;
			}
			vm__page_unmap(s, pageno);
			release_pages(s, pageno, 1);
			*unmapped = 1;
		}
		return 0;
	}
	if (pg->kind == VM_PAGE_LARGE && pg->head == pageno && o == 0) {
		vm_word np = pages_for(pg->bytes);
		if (!vm__heap_own(s))
			return FL_ENOMEM;
		for (vm_word i = 0; i < np; i++)
			vm__page_unmap(s, pageno + i);
		release_pages(s, pageno, np);
		*unmapped = np;
		return 0;
	}
	return FL_EFAULT;
}

vm_word vm__heap_slab_for(const struct vm_space *s, vm_word n)
{
	const struct vm_heap *h = s->heap;
	int c;

	if (n == 0 || n > VM_SMALL_MAX)
		return 0;
	c = class_of((n + 7) & ~(vm_word)7);
	return h->npartial[c] > 0 ? h->partial[c][h->npartial[c] - 1] : 0;
}

bool vm__heap_live(const struct vm_space *s, vm_word addr, vm_word n)
{
	vm_word off = addr & VM_OFFSET_MASK;
	const struct vm_page *pg = vm__page_get(s, off >> VM_PAGE_SHIFT);
	vm_word start, len;

	/* Racing workers may change a global page's metadata meanwhile:
	 * every field is read once, and each value is valid alone. */
	if (pg == NULL)
		return false;
	if (VM_GET(pg->kind) == VM_PAGE_SLAB) {
		uint32_t size = vm__class_size[VM_GET(pg->cls) % VM_NCLASSES];
		uint32_t o = (uint32_t)(off & (VM_PAGE_SIZE - 1)), i = o / size;
		const uint32_t *sizes = __atomic_load_n(&pg->sizes, __ATOMIC_ACQUIRE);
		if (!live_bit(pg, i))
			return false;
		start = (off & ~(vm_word)(VM_PAGE_SIZE - 1)) + (vm_word)i * size;
		len = sizes ? VM_GET(sizes[i]) : size;
	} else {
		start = VM_GET(pg->head) << VM_PAGE_SHIFT;
		len = VM_GET(pg->bytes);
	}
	return off >= start && off - start < len && n <= len - (off - start);
}
