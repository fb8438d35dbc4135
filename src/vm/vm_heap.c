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
 * blocks-per-page; an empty slab page is unmapped. Every mapped page costs
 * VM_PAGE_SIZE bytes of the process's budget until unmapped.
 *
 * Failure modes: out of address space or budget or host memory -> 0, the
 * caller raises "out of memory"; free of anything but a live block start ->
 * FL_EFAULT. Runs on the space owner's thread. */
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

static bool take_budget(_Atomic int64_t *budget, vm_word npages)
{
	int64_t want = (int64_t)(npages * VM_PAGE_SIZE);

	if (atomic_fetch_sub(budget, want) < want) {
		atomic_fetch_add(budget, want);
		return false;
	}
	return true;
}

/* A run of @n unused page numbers: first fit among freed runs, else fresh. */
static vm_word reserve_pages(struct vm_space *s, vm_word n)
{
	for (size_t i = s->nfree; i-- > 0;) {
		struct vm_range *r = &s->free_ranges[i];
		if (r->n < n)
			continue;
		vm_word first = r->first;
		r->first += n;
		r->n -= n;
		if (r->n == 0)
			s->free_ranges[i] = s->free_ranges[--s->nfree];
		return first;
	}
	if (n > VM_MAX_PAGE - s->top)
		return 0;
	s->top += n;
	return s->top - n;
}

static void release_pages(struct vm_space *s, vm_word first, vm_word n)
{
	if (s->nfree == s->free_cap) {
		size_t cap = s->free_cap ? 2 * s->free_cap : 16;
		struct vm_range *r = realloc(s->free_ranges, cap * sizeof *r);
		if (r == NULL)
			return; /* the page numbers are lost, nothing else */
		s->free_ranges = r;
		s->free_cap = cap;
	}
	s->free_ranges[s->nfree++] = (struct vm_range){first, n};
}

static bool partial_push(struct vm_space *s, int c, vm_word pageno,
			 struct vm_page *pg)
{
	if (s->npartial[c] == s->partial_cap[c]) {
		size_t cap = s->partial_cap[c] ? 2 * s->partial_cap[c] : 8;
		vm_word *p = realloc(s->partial[c], cap * sizeof *p);
		if (p == NULL)
			return false;
		s->partial[c] = p;
		s->partial_cap[c] = cap;
	}
	pg->pidx = (uint32_t)s->npartial[c];
	s->partial[c][s->npartial[c]++] = pageno;
	return true;
}

static void partial_remove(struct vm_space *s, int c, struct vm_page *pg)
{
	vm_word last = s->partial[c][--s->npartial[c]];

	if (pg->pidx < s->npartial[c]) {
		s->partial[c][pg->pidx] = last;
		vm__page_get(s, last)->pidx = pg->pidx;
	}
}

static vm_word alloc_small(struct vm_space *s, vm_word n,
			   _Atomic int64_t *budget)
{
	int c = class_of(n);
	uint32_t nb = blocks_per_page(c), size = vm__class_size[c], i;
	struct vm_page *pg;
	vm_word pageno;

	if (s->npartial[c] > 0) {
		pageno = s->partial[c][s->npartial[c] - 1];
		pg = vm__page_get(s, pageno);
	} else {
		if (!take_budget(budget, 1))
			return 0;
		pageno = reserve_pages(s, 1);
		pg = pageno ? vm__page_map(s, pageno) : NULL;
		if (pg == NULL)
			goto fail_page;
		pg->kind = VM_PAGE_SLAB;
		pg->cls = (uint8_t)c;
		if (s->check) {
			pg->sizes = calloc(nb, sizeof *pg->sizes);
			if (pg->sizes == NULL)
				goto fail_mapped;
		}
		if (!partial_push(s, c, pageno, pg))
			goto fail_mapped;
	}
	for (i = 0; i < nb; i++)
		if (!(pg->live[i / 64] >> (i % 64) & 1))
			break;
	pg->live[i / 64] |= (uint64_t)1 << (i % 64);
	if (++pg->nlive == nb)
		partial_remove(s, c, pg);
	if (pg->sizes != NULL)
		pg->sizes[i] = (uint32_t)n;
	if (pg->data != NULL)
		memset(pg->data + i * size, 0, size);
	return s->base | (pageno << VM_PAGE_SHIFT) | (vm_word)i * size;

fail_mapped:
	vm__page_unmap(s, pageno);
fail_page:
	if (pageno)
		release_pages(s, pageno, 1);
	atomic_fetch_add(budget, (int64_t)VM_PAGE_SIZE);
	return 0;
}

static vm_word alloc_large(struct vm_space *s, vm_word n,
			   _Atomic int64_t *budget)
{
	vm_word np = pages_for(n), first, i;

	if (!take_budget(budget, np))
		return 0;
	first = reserve_pages(s, np);
	if (first == 0)
		goto fail;
	for (i = 0; i < np; i++) {
		struct vm_page *pg = vm__page_map(s, first + i);
		if (pg == NULL)
			goto fail_mapped;
		pg->kind = VM_PAGE_LARGE;
		pg->head = first;
		pg->bytes = n;
	}
	return s->base | (first << VM_PAGE_SHIFT);

fail_mapped:
	while (i-- > 0)
		vm__page_unmap(s, first + i);
	release_pages(s, first, np);
fail:
	atomic_fetch_add(budget, (int64_t)(np * VM_PAGE_SIZE));
	return 0;
}

vm_word vm__heap_alloc(struct vm_space *s, vm_word n, _Atomic int64_t *budget)
{
	if (n > ((vm_word)1 << VM_SPACE_BITS))
		return 0;
	n = (n + 7) & ~(vm_word)7;
	return n <= VM_SMALL_MAX ? alloc_small(s, n, budget)
				 : alloc_large(s, n, budget);
}

int vm__heap_free(struct vm_space *s, vm_word addr, _Atomic int64_t *budget,
		  vm_word *first, vm_word *unmapped)
{
	vm_word off = addr & ~VM_GLOBAL_BIT, pageno = off >> VM_PAGE_SHIFT;
	uint32_t o = (uint32_t)(off & (VM_PAGE_SIZE - 1));
	struct vm_page *pg = vm__page_get(s, pageno);

	*first = pageno;
	*unmapped = 0;
	if (pg == NULL)
		return FL_EFAULT;
	if (pg->kind == VM_PAGE_SLAB) {
		int c = pg->cls;
		uint32_t size = vm__class_size[c], nb = blocks_per_page(c);
		uint32_t i = o / size;
		if (o % size != 0 || i >= nb ||
		    !(pg->live[i / 64] >> (i % 64) & 1))
			return FL_EFAULT;
		pg->live[i / 64] &= ~((uint64_t)1 << (i % 64));
		if (pg->nlive-- == nb) {
			if (!partial_push(s, c, pageno, pg)) {
				/* Cannot track it: leave the block live. */
				pg->live[i / 64] |= (uint64_t)1 << (i % 64);
				pg->nlive++;
				return 0;
			}
		}
		if (pg->nlive == 0) {
			partial_remove(s, c, pg);
			vm__page_unmap(s, pageno);
			release_pages(s, pageno, 1);
			atomic_fetch_add(budget, (int64_t)VM_PAGE_SIZE);
			*unmapped = 1;
		}
		return 0;
	}
	if (pg->kind == VM_PAGE_LARGE && pg->head == pageno && o == 0) {
		vm_word np = pages_for(pg->bytes);
		for (vm_word i = 0; i < np; i++)
			vm__page_unmap(s, pageno + i);
		release_pages(s, pageno, np);
		atomic_fetch_add(budget, (int64_t)(np * VM_PAGE_SIZE));
		*unmapped = np;
		return 0;
	}
	return FL_EFAULT;
}

bool vm__heap_live(const struct vm_space *s, vm_word addr, vm_word n)
{
	vm_word off = addr & ~VM_GLOBAL_BIT;
	const struct vm_page *pg = vm__page_get(s, off >> VM_PAGE_SHIFT);
	vm_word start, len;

	if (pg == NULL)
		return false;
	if (pg->kind == VM_PAGE_SLAB) {
		uint32_t size = vm__class_size[pg->cls];
		uint32_t o = (uint32_t)(off & (VM_PAGE_SIZE - 1)), i = o / size;
		if (!(pg->live[i / 64] >> (i % 64) & 1))
			return false;
		start = (off & ~(vm_word)(VM_PAGE_SIZE - 1)) + (vm_word)i * size;
		len = pg->sizes ? pg->sizes[i] : size;
	} else {
		start = pg->head << VM_PAGE_SHIFT;
		len = pg->bytes;
	}
	return off >= start && off - start < len && n <= len - (off - start);
}
