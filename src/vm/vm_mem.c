/* Address spaces and checked access to program memory.
 *
 * A space maps page numbers to struct vm_page through a 4-level radix tree
 * (VM_RADIX_BITS per level). Page 0 is never mapped, so null and small
 * offsets from it always fault. A page's bytes are allocated on its first
 * write; until then loads read a shared zero page.
 *
 * Happy path of a load: the interpreter looks the page up in the thread's
 * read TLB (direct-mapped on the page number); on a miss it calls
 * vm__xlate(), which walks the tree, checks the page and fills the TLB.
 * Stores use a separate write TLB that never holds read-only pages.
 *
 * Failure modes: an unmapped, null or read-only page, or (under --check) an
 * access outside a live block, sets t->fault and returns NULL; the
 * interpreter turns that into a runtime error. Freeing pages flushes the
 * TLBs (vm__tlb_flush) so no stale translation survives.
 *
 * Runs on the thread that owns the space (local) or, for now, the only
 * thread of the process (global). */
#include "vm/vm_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t zero_page[VM_PAGE_SIZE] __attribute__((aligned(64)));

void vm__space_init(struct vm_space *s, vm_word base, bool check)
{
	memset(s, 0, sizeof *s);
	s->base = base;
	s->top = 1; /* page 0 stays unmapped: null */
	s->check = check;
}

static void free_page(struct vm_page *pg)
{
	free(pg->data);
	free(pg->sizes);
	free(pg);
}

static void free_node(void **node, int level)
{
	if (node == NULL)
		return;
	for (unsigned i = 0; i < VM_RADIX_FAN; i++) {
		if (node[i] == NULL)
			continue;
		if (level == VM_RADIX_LEVELS - 1)
			free_page(node[i]);
		else
			free_node(node[i], level + 1);
	}
	free(node);
}

void vm__space_close(struct vm_space *s)
{
	free_node(s->root, 0);
	free(s->free_ranges);
	for (int c = 0; c < VM_NCLASSES; c++)
		free(s->partial[c]);
	memset(s, 0, sizeof *s);
}

static unsigned radix_index(vm_word pageno, int level)
{
	int shift = VM_RADIX_BITS * (VM_RADIX_LEVELS - 1 - level);
	return (unsigned)(pageno >> shift) & (VM_RADIX_FAN - 1);
}

struct vm_page *vm__page_get(const struct vm_space *s, vm_word pageno)
{
	void **node = s->root;

	if (pageno >= VM_MAX_PAGE)
		return NULL;
	for (int level = 0; node != NULL && level < VM_RADIX_LEVELS - 1; level++)
		node = node[radix_index(pageno, level)];
	return node ? node[radix_index(pageno, VM_RADIX_LEVELS - 1)] : NULL;
}

struct vm_page *vm__page_map(struct vm_space *s, vm_word pageno)
{
	void ***slot = (void ***)&s->root;
	struct vm_page *pg;

	if (pageno == 0 || pageno >= VM_MAX_PAGE)
		return NULL;
	for (int level = 0; level < VM_RADIX_LEVELS; level++) {
		if (*slot == NULL) {
			*slot = calloc(VM_RADIX_FAN, sizeof(void *));
			if (*slot == NULL)
				return NULL;
		}
		if (level == VM_RADIX_LEVELS - 1)
			break;
		slot = (void ***)&(*slot)[radix_index(pageno, level)];
	}
	pg = calloc(1, sizeof *pg);
	if (pg == NULL)
		return NULL;
	(*slot)[radix_index(pageno, VM_RADIX_LEVELS - 1)] = pg;
	return pg;
}

void vm__page_unmap(struct vm_space *s, vm_word pageno)
{
	void **node = s->root;

	for (int level = 0; node != NULL && level < VM_RADIX_LEVELS - 1; level++)
		node = node[radix_index(pageno, level)];
	if (node == NULL)
		return;
	unsigned i = radix_index(pageno, VM_RADIX_LEVELS - 1);
	if (node[i] != NULL)
		free_page(node[i]);
	node[i] = NULL;
}

uint8_t *vm__page_bytes(struct vm_page *pg)
{
	if (pg->data == NULL) {
		pg->data = aligned_alloc(VM_PAGE_SIZE, VM_PAGE_SIZE);
		if (pg->data != NULL)
			memset(pg->data, 0, VM_PAGE_SIZE);
	}
	return pg->data;
}

/* ---- Translation ---- */

void vm__fault(struct vm_thread *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->fault.msg, sizeof t->fault.msg, fmt, ap);
	va_end(ap);
}

void vm__tlb_flush(struct vm_thread *t)
{
	for (int i = 0; i < VM_TLB_SIZE; i++) {
		t->rtlb[i].key = ~(vm_word)0;
		t->wtlb[i].key = ~(vm_word)0;
	}
}

static struct vm_space *space_of(struct vm_thread *t, vm_word addr)
{
	return (addr & VM_GLOBAL_BIT) ? &t->proc->global : &t->local;
}

uint8_t *vm__xlate(struct vm_thread *t, vm_word addr, vm_word n, bool write,
		   const char *what)
{
	struct vm_space *s = space_of(t, addr);
	vm_word off = addr & ~VM_GLOBAL_BIT;
	vm_word pageno = off >> VM_PAGE_SHIFT;
	struct vm_page *pg;
	struct vm_tlb_entry *e;
	uint8_t *data;

	if (pageno == 0) {
		vm__fault(t, "%s at null address 0x%llx", what,
			  (unsigned long long)addr);
		return NULL;
	}
	pg = vm__page_get(s, pageno);
	if (pg == NULL) {
		vm__fault(t, "%s at unmapped address 0x%llx", what,
			  (unsigned long long)addr);
		return NULL;
	}
	if (write && pg->kind == VM_PAGE_RODATA) {
		vm__fault(t, "%s at read-only address 0x%llx", what,
			  (unsigned long long)addr);
		return NULL;
	}
	if (s->check && !vm__heap_live(s, addr, n)) {
		vm__fault(t, "%s at 0x%llx outside any live block", what,
			  (unsigned long long)addr);
		return NULL;
	}
	if (write) {
		data = vm__page_bytes(pg);
		if (data == NULL) {
			vm__fault(t, "out of memory");
			return NULL;
		}
	} else {
		data = pg->data ? pg->data : (uint8_t *)zero_page;
	}
	if (!s->check) {
		vm_word key = addr >> VM_PAGE_SHIFT;
		e = write ? &t->wtlb[key % VM_TLB_SIZE]
			  : &t->rtlb[key % VM_TLB_SIZE];
		e->key = key;
		e->data = data;
		if (write) { /* the read side sees the same, now real, bytes */
			e = &t->rtlb[key % VM_TLB_SIZE];
			e->key = key;
			e->data = data;
		}
	}
	return data + (off & (VM_PAGE_SIZE - 1));
}

/* ---- Bulk access ---- */

static vm_word page_left(vm_word addr)
{
	return VM_PAGE_SIZE - (addr & (VM_PAGE_SIZE - 1));
}

static vm_word min3(vm_word a, vm_word b, vm_word c)
{
	vm_word m = a < b ? a : b;
	return m < c ? m : c;
}

int vm__mem_read(struct vm_thread *t, void *dst, vm_word addr, vm_word n,
		 const char *what)
{
	uint8_t *d = dst;

	while (n > 0) {
		vm_word k = n < page_left(addr) ? n : page_left(addr);
		const uint8_t *p = vm__xlate(t, addr, k, false, what);
		if (p == NULL)
			return FL_EFAULT;
		memcpy(d, p, k);
		d += k;
		addr += k;
		n -= k;
	}
	return 0;
}

int vm__mem_write(struct vm_thread *t, vm_word addr, const void *src,
		  vm_word n, const char *what)
{
	const uint8_t *q = src;

	while (n > 0) {
		vm_word k = n < page_left(addr) ? n : page_left(addr);
		uint8_t *p = vm__xlate(t, addr, k, true, what);
		if (p == NULL)
			return FL_EFAULT;
		memcpy(p, q, k);
		q += k;
		addr += k;
		n -= k;
	}
	return 0;
}

/* memmove semantics: when dst overlaps the tail of src, go backwards. Each
 * step copies a run that stays inside one page on both sides. */
int vm__mem_copy(struct vm_thread *t, vm_word dst, vm_word src, vm_word n)
{
	bool backward = dst > src && dst - src < n;

	if (n == 0)
		return 0;
	if (!backward) {
		while (n > 0) {
			vm_word k = min3(n, page_left(src), page_left(dst));
			const uint8_t *s = vm__xlate(t, src, k, false, "copy");
			if (s == NULL)
				return FL_EFAULT;
			uint8_t *d = vm__xlate(t, dst, k, true, "copy");
			if (d == NULL)
				return FL_EFAULT;
			/* d's translation may have materialised s's page */
			s = vm__xlate(t, src, k, false, "copy");
			memmove(d, s, k);
			src += k;
			dst += k;
			n -= k;
		}
		return 0;
	}
	while (n > 0) {
		vm_word se = src + n, de = dst + n; /* exclusive ends */
		vm_word sk = ((se - 1) & (VM_PAGE_SIZE - 1)) + 1;
		vm_word dk = ((de - 1) & (VM_PAGE_SIZE - 1)) + 1;
		vm_word k = min3(n, sk, dk);
		uint8_t *d = vm__xlate(t, de - k, k, true, "copy");
		if (d == NULL)
			return FL_EFAULT;
		const uint8_t *s = vm__xlate(t, se - k, k, false, "copy");
		if (s == NULL)
			return FL_EFAULT;
		memmove(d, s, k);
		n -= k;
	}
	return 0;
}

int vm__mem_fill(struct vm_thread *t, vm_word dst, uint8_t byte, vm_word n)
{
	while (n > 0) {
		vm_word k = n < page_left(dst) ? n : page_left(dst);
		uint8_t *d = vm__xlate(t, dst, k, true, "fill");
		if (d == NULL)
			return FL_EFAULT;
		memset(d, byte, k);
		dst += k;
		n -= k;
	}
	return 0;
}
