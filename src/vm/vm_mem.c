/* Address spaces and checked access to program memory.
 *
 * A space maps page numbers to struct vm_page through a 6-level radix tree
 * of struct vm_radix (64 slots, VM_RADIX_BITS, per level: small nodes keep
 * the copies that copy-on-write makes small). Page 0 is never mapped, so
 * null and small offsets from it always fault. A local page's bytes are
 * allocated on its first write; until then loads read a shared zero page.
 * A page whose bytes another machine lent (vm_int.h: @lent set, @data
 * NULL) is *absent*, which is not zero: xlate_local, the TLB-miss path,
 * fetches it first (vm__lent_fetch: through the peer, parking the thread
 * as a page source does), so the interpreter's hot loop never sees one
 * and the zero page is only ever read for a page that was never lent.
 * A copy-on-write copy of an absent page is absent too (same lent).
 *
 * Copy-on-write: spawn gives the child the parent's root node (one
 * reference more), so it costs O(1). Nodes and pages with more than one
 * reference are immutable; whoever wants to change one (a store, an
 * allocation, a free) first walks down with walk_w(), which copies every
 * shared node on the path and the page itself, each copy taking a
 * reference on its children. The last reference frees a node or page.
 *
 * A global space (the local page source's, vm_gmem.c) is never shared
 * this way (refs stay 1); instead many workers read its tree while one
 * thread at a time (under the source's lock) maps or unmaps pages. Slots
 * are read and written with atomics, nodes are never freed before the
 * process ends, and unmapped pages are kept on a reuse list rather than
 * freed, so a reader racing with an unmap never touches freed host memory.
 *
 * Happy path of a load: the interpreter looks the page up in its worker's
 * read TLB (direct-mapped on the page number); on a miss it calls
 * vm__xlate(), which walks the thread's local tree, or asks the process's
 * page source for a global address, checks the page and fills the TLB.
 * Stores use a separate write TLB that never holds read-only or shared
 * pages. Failure modes: an unmapped, null or read-only page, or (under
 * --check) an access outside a live block, sets the worker's fault and
 * returns VM_FAULT; the interpreter turns that into a runtime error. A
 * page source may also answer VM_PARK: the thread waits for the page and
 * its instruction runs again. */
#include "vm/vm_gsrc.h"
#include "vm/vm_peer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t zero_page[VM_PAGE_SIZE] __attribute__((aligned(64)));

#define LEAF (VM_RADIX_LEVELS - 1)

static void *load_slot(void *const *slot)
{
	return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

static void store_slot(void **slot, void *v)
{
	__atomic_store_n(slot, v, __ATOMIC_RELEASE);
}

static unsigned radix_index(vm_word pageno, int level)
{
	int shift = VM_RADIX_BITS * (VM_RADIX_LEVELS - 1 - level);
	return (unsigned)(pageno >> shift) & (VM_RADIX_FAN - 1);
}

/* ---- Pages and nodes ---- */

/* Zero a page's bytes, which racy program threads may be reading. */
static VM_PROGRAM_MEMORY void prog_zero(uint8_t *d)
{
#ifdef VM_TSAN
	volatile uint8_t *vd = d;
	for (size_t i = 0; i < VM_PAGE_SIZE; i++)
		vd[i] = 0;
#else
	memset(d, 0, VM_PAGE_SIZE);
#endif
}

static void page_free(struct vm_page *pg)
{
	if (pg->lent != NULL)
		vm__lent_unref(pg->lent);
	free(pg->data);
	free(pg->sizes);
	free(pg);
}

void vm__lent_unref(struct vm_lent *l)
{
	if (atomic_fetch_sub(&l->refs, 1) == 1)
		l->gone(l);
}

bool vm__charge(struct vm_budget *budget, int64_t n)
{
	if (budget == NULL || n <= 0)
		return true;
	if (atomic_fetch_sub(&budget->left, n) < n) {
		atomic_fetch_add(&budget->left, n);
		return false;
	}
	if (!vm__charge(budget->parent, n)) {
		atomic_fetch_add(&budget->left, n);
		return false;
	}
	return true;
}

int64_t vm__budget_left(const struct vm_budget *budget)
{
	int64_t left = INT64_MAX;

	for (; budget != NULL; budget = budget->parent) {
		int64_t v = atomic_load(&budget->left);
		if (v < left)
			left = v;
	}
	return left;
}

void vm__credit(struct vm_budget *budget, int64_t n)
{
	for (; budget != NULL && n > 0; budget = budget->parent)
		atomic_fetch_add(&budget->left, n);
}

/* The process's memory limit counts every page and tree node, whoever
 * references them: charged when created (mapped or copied on write),
 * credited when the last reference goes. @budget may be NULL: no limit. */
static bool charge(struct vm_budget *budget)
{
	return vm__charge(budget, VM_COST_PAGE);
}

static void credit(struct vm_budget *budget)
{
	vm__credit(budget, VM_COST_PAGE);
}

/* A page's cost: a slab page under --check has a size table too. */
static int64_t page_cost(const struct vm_page *pg)
{
	return VM_COST_PAGE +
	       (pg->kind == VM_PAGE_SLAB && pg->sizes != NULL ? VM_COST_SIZES : 0);
}

static void page_unref(struct vm_page *pg, struct vm_budget *budget)
{
	if (atomic_fetch_sub(&pg->refs, 1) == 1) {
		vm__credit(budget, page_cost(pg));
		page_free(pg);
	}
}

void vm__page_unref(struct vm_page *pg, struct vm_budget *budget)
{
	page_unref(pg, budget);
}

static struct vm_page *page_clone(const struct vm_page *pg,
				  struct vm_budget *budget)
{
	int64_t cost = page_cost(pg);
	struct vm_page *c;

	if (!vm__charge(budget, cost))
		return NULL;
	c = malloc(sizeof *c);
	if (c == NULL) {
		vm__credit(budget, cost);
		return NULL;
	}
	atomic_init(&c->refs, 1);
	c->kind = pg->kind;
	c->cls = pg->cls;
	c->nlive = pg->nlive;
	c->pidx = pg->pidx;
	c->head = pg->head;
	c->bytes = pg->bytes;
	memcpy(c->live, pg->live, sizeof c->live);
	c->next_retired = NULL;
	c->lent = NULL;
	c->data = NULL;
	c->sizes = NULL;
	/* A local page: its bytes change no more (an absent one's may come
	 * meanwhile, once, from another worker). */
	uint8_t *d = __atomic_load_n(&pg->data, __ATOMIC_ACQUIRE);
	if (d != NULL) {
		c->data = malloc(VM_PAGE_SIZE);
		if (c->data == NULL)
			goto fail;
		memcpy(c->data, d, VM_PAGE_SIZE);
	} else if (pg->lent != NULL) { /* absent: so is the copy */
		c->lent = pg->lent;
		atomic_fetch_add(&c->lent->refs, 1);
	}
	if (pg->sizes != NULL) {
		c->sizes = malloc(VM_SIZES_MAX * sizeof *c->sizes);
		if (c->sizes == NULL)
			goto fail;
		memcpy(c->sizes, pg->sizes, VM_SIZES_MAX * sizeof *c->sizes);
	}
	return c;
fail:
	page_free(c);
	vm__credit(budget, cost);
	return NULL;
}

static void node_unref(struct vm_radix *n, int level, struct vm_budget *budget)
{
	if (n == NULL || atomic_fetch_sub(&n->refs, 1) != 1)
		return;
	for (unsigned i = 0; i < VM_RADIX_FAN; i++) {
		if (n->slot[i] == NULL)
			continue;
		if (level == LEAF)
			page_unref(n->slot[i], budget);
		else
			node_unref(n->slot[i], level + 1, budget);
	}
	free(n);
	vm__credit(budget, VM_COST_NODE);
}

static struct vm_radix *node_new(struct vm_budget *budget)
{
	struct vm_radix *n;

	if (!vm__charge(budget, VM_COST_NODE))
		return NULL;
	n = calloc(1, sizeof *n);
	if (n == NULL) {
		vm__credit(budget, VM_COST_NODE);
		return NULL;
	}
	atomic_init(&n->refs, 1);
	return n;
}

/* A private copy of shared node @n; the copy references @n's children. */
static struct vm_radix *node_clone(const struct vm_radix *n, int level,
				   struct vm_budget *budget)
{
	struct vm_radix *c = node_new(budget);

	if (c == NULL)
		return NULL;
	memcpy(c->slot, n->slot, sizeof c->slot);
	for (unsigned i = 0; i < VM_RADIX_FAN; i++) {
		if (c->slot[i] == NULL)
			continue;
		if (level == LEAF)
			atomic_fetch_add(&((struct vm_page *)c->slot[i])->refs, 1);
		else
			atomic_fetch_add(&((struct vm_radix *)c->slot[i])->refs, 1);
	}
	return c;
}

/* Make the node in *@slot private (refs == 1); creates it when @create.
 * Returns it, or NULL (absent, or out of memory: *@nomem). */
static struct vm_radix *own_node(struct vm_space *s, void **slot, int level,
				bool create, bool *nomem)
{
	struct vm_radix *n = load_slot(slot), *c;

	if (n == NULL) {
		if (!create)
			return NULL;
		c = node_new(s->budget);
	} else if (atomic_load(&n->refs) > 1) {
		c = node_clone(n, level, s->budget);
	} else {
		return n;
	}
	if (c == NULL) {
		*nomem = true;
		return NULL;
	}
	store_slot(slot, c);
	if (n != NULL)
		node_unref(n, level, s->budget);
	return c;
}

/* The leaf node for @pageno, private, created when @create. */
static struct vm_radix *walk_w(struct vm_space *s, vm_word pageno, bool create,
			      bool *nomem)
{
	void **slot = (void **)&s->root;
	struct vm_radix *n = NULL;

	for (int level = 0; level <= LEAF; level++) {
		n = own_node(s, slot, level, create, nomem);
		if (n == NULL)
			return NULL;
		if (level < LEAF)
			slot = &n->slot[radix_index(pageno, level)];
	}
	return n;
}

/* ---- Spaces ---- */

int vm__space_init(struct vm_space *s, vm_word base, bool check, bool global)
{
	memset(s, 0, sizeof *s);
	s->base = base;
	s->check = check;
	s->global = global;
	s->heap = calloc(1, sizeof *s->heap);
	if (s->heap == NULL)
		return FL_ENOMEM;
	atomic_init(&s->heap->refs, 1);
	s->heap->top = 1; /* page 0 stays unmapped: null */
	return 0;
}

void vm__space_close(struct vm_space *s)
{
	node_unref(s->root, 0, s->global ? NULL : s->budget);
	vm__heap_unref(s->heap, s->global ? NULL : s->budget);
	while (s->retired != NULL) {
		struct vm_page *pg = s->retired;
		s->retired = pg->next_retired;
		page_free(pg);
	}
	memset(s, 0, sizeof *s);
}

void vm__space_fork(struct vm_space *to, const struct vm_space *from)
{
	*to = *from;
	to->retired = NULL;
	if (to->root != NULL)
		atomic_fetch_add(&to->root->refs, 1);
	atomic_fetch_add(&to->heap->refs, 1);
}

struct vm_page *vm__page_get(const struct vm_space *s, vm_word pageno)
{
	void *const *slot = (void *const *)&s->root;
	struct vm_radix *n;

	if (pageno >= VM_MAX_PAGE)
		return NULL;
	for (int level = 0; level <= LEAF; level++) {
		n = load_slot(slot);
		if (n == NULL)
			return NULL;
		slot = &n->slot[radix_index(pageno, level)];
	}
	return load_slot(slot);
}

struct vm_page *vm__page_get_w(struct vm_space *s, vm_word pageno,
			       bool *nomem)
{
	struct vm_radix *leaf;
	struct vm_page *pg, *c;
	void **slot;

	*nomem = false;
	if (pageno >= VM_MAX_PAGE || vm__page_get(s, pageno) == NULL)
		return NULL;
	leaf = walk_w(s, pageno, false, nomem);
	if (leaf == NULL)
		return NULL;
	slot = &leaf->slot[radix_index(pageno, LEAF)];
	pg = load_slot(slot);
	if (pg == NULL || atomic_load(&pg->refs) == 1)
		return pg;
	c = page_clone(pg, s->budget);
	if (c == NULL) {
		*nomem = true;
		return NULL;
	}
	store_slot(slot, c);
	page_unref(pg, s->budget);
	s->copies++;
	return c;
}

struct vm_page *vm__page_map(struct vm_space *s, vm_word pageno)
{
	struct vm_radix *leaf;
	struct vm_page *pg;
	bool nomem = false;

	if (pageno == 0 || pageno >= VM_MAX_PAGE)
		return NULL;
	leaf = walk_w(s, pageno, true, &nomem);
	if (leaf == NULL || !charge(s->budget))
		return NULL;
	if (s->retired != NULL) {
		/* A racy program's workers may still read this struct (a
		 * translation made before the unmap): its fields change one by
		 * one to values as valid as before, its bytes and size table
		 * stay where they are. */
		pg = s->retired;
		s->retired = pg->next_retired;
		pg->next_retired = NULL;
		VM_SET(pg->kind, 0);
		VM_SET(pg->cls, 0);
		pg->nlive = 0;
		pg->pidx = 0;
		VM_SET(pg->head, 0);
		VM_SET(pg->bytes, 0);
		for (unsigned i = 0; i < VM_SLAB_WORDS; i++)
			VM_SET(pg->live[i], 0);
		uint8_t *data = VM_GET(pg->data);
		if (data != NULL)
			prog_zero(data);
	} else {
		pg = calloc(1, sizeof *pg);
		if (pg == NULL) {
			credit(s->budget);
			return NULL;
		}
	}
	atomic_init(&pg->refs, 1);
	store_slot(&leaf->slot[radix_index(pageno, LEAF)], pg);
	return pg;
}

void vm__page_unmap(struct vm_space *s, vm_word pageno)
{
	bool nomem = false;
	struct vm_radix *leaf = walk_w(s, pageno, false, &nomem);
	void **slot;
	struct vm_page *pg;

	if (leaf == NULL)
		return; /* out of memory copying the path: the page stays */
	slot = &leaf->slot[radix_index(pageno, LEAF)];
	pg = load_slot(slot);
	if (pg == NULL)
		return;
	store_slot(slot, NULL);
	if (s->global) {
		/* Kept whole, size table included: racy readers (vm_gmem.c). */
		vm__credit(s->budget, page_cost(pg));
		VM_SET(pg->kind, VM_PAGE_RODATA); /* uncharged sizes from now */
		pg->next_retired = s->retired;
		s->retired = pg;
	} else {
		page_unref(pg, s->budget);
	}
}

uint8_t *vm__page_bytes(struct vm_page *pg)
{
	uint8_t *d = __atomic_load_n(&pg->data, __ATOMIC_ACQUIRE), *none = NULL;

	if (d != NULL)
		return d;
	if (pg->lent != NULL) {
		/* Absent: only the lent bytes will do, never zeros. Threads
		 * of one batch share the page: one installs its copy. */
		const uint8_t *src = __atomic_load_n(&pg->lent->data,
						     __ATOMIC_ACQUIRE);
		if (src == NULL || (d = malloc(VM_PAGE_SIZE)) == NULL)
			return NULL;
		memcpy(d, src, VM_PAGE_SIZE);
	} else {
		/* The first touch: racing workers (a global page) may both
		 * get here; one installs its bytes, which then never
		 * change. */
		d = calloc(1, VM_PAGE_SIZE);
		if (d == NULL)
			return NULL;
	}
	if (!__atomic_compare_exchange_n(&pg->data, &none, d, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		free(d);
		return none;
	}
	return d;
}

/* ---- Translation ---- */

void vm__fault(struct vm_worker *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->fault.msg, sizeof w->fault.msg, fmt, ap);
	va_end(ap);
}

void vm__tlb_flush(struct vm_worker *w)
{
	if (w->nfilled <= VM_TLB_TRACK) {
		for (unsigned i = 0; i < w->nfilled; i++) {
			w->rtlb[w->filled[i]].key = ~(vm_word)0;
			w->wtlb[w->filled[i]].key = ~(vm_word)0;
		}
	} else {
		for (int i = 0; i < VM_TLB_SIZE; i++) {
			w->rtlb[i].key = ~(vm_word)0;
			w->wtlb[i].key = ~(vm_word)0;
		}
	}
	w->nfilled = 0;
}

void vm__tlb_drop_local_writes(struct vm_worker *w)
{
	bool tracked = w->nfilled <= VM_TLB_TRACK;
	unsigned n = tracked ? w->nfilled : VM_TLB_SIZE;

	for (unsigned k = 0; k < n; k++) {
		struct vm_tlb_entry *e = &w->wtlb[tracked ? w->filled[k] : k];
		if (!(e->key >> (63 - VM_PAGE_SHIFT) & 1)) /* a local page */
			e->key = ~(vm_word)0;
	}
}

static void tlb_fill(struct vm_worker *w, struct vm_tlb_entry *tlb,
		     vm_word key, uint8_t *data)
{
	unsigned i = (unsigned)(key % VM_TLB_SIZE);

	if (tlb[i].key == ~(vm_word)0 && w->rtlb[i].key == ~(vm_word)0 &&
	    w->wtlb[i].key == ~(vm_word)0) {
		if (w->nfilled < VM_TLB_TRACK)
			w->filled[w->nfilled] = (uint16_t)i;
		if (w->nfilled <= VM_TLB_TRACK)
			w->nfilled++;
	}
	tlb[i].key = key;
	tlb[i].data = data;
}

void vm__tlb_drop_pages(struct vm_worker *w, vm_word base, vm_word first,
			vm_word n)
{
	if (n >= VM_TLB_SIZE) {
		vm__tlb_flush(w);
		return;
	}
	for (vm_word i = 0; i < n; i++) {
		vm_word key = (base | ((first + i) << VM_PAGE_SHIFT)) >> VM_PAGE_SHIFT;
		if (w->rtlb[key % VM_TLB_SIZE].key == key)
			w->rtlb[key % VM_TLB_SIZE].key = ~(vm_word)0;
		if (w->wtlb[key % VM_TLB_SIZE].key == key)
			w->wtlb[key % VM_TLB_SIZE].key = ~(vm_word)0;
	}
}

/* Local memory: the running thread's own space. */
static enum vm_res xlate_local(struct vm_worker *w, vm_word addr, vm_word n,
			       bool write, const char *what, uint8_t **out,
			       bool *cache)
{
	struct vm_space *s = &w->cur->local;
	vm_word pageno = addr >> VM_PAGE_SHIFT;
	struct vm_page *pg;
	uint8_t *data;
	bool nomem = false;

	if (pageno == 0) {
		vm__fault(w, "%s at null address 0x%llx", what,
			  (unsigned long long)addr);
		return VM_FAULT;
	}
	pg = vm__page_get(s, pageno);
	/* Absent: fetched first, then (for a write) copied if shared. */
	if (pg != NULL && pg->lent != NULL) {
		enum vm_res rc = vm__lent_fetch(w, pg, addr);
		if (rc != VM_OK)
			return rc;
	}
	if (pg != NULL && write)
		pg = vm__page_get_w(s, pageno, &nomem);
	if (pg == NULL) {
		if (nomem) /* copying a shared page (and its path) */
			vm__oom_msg(&w->fault, w->cur->proc, "copy on write",
				    VM_COST_PAGE + VM_RADIX_LEVELS * VM_COST_NODE);
		else
			vm__fault(w, "%s at unmapped address 0x%llx", what,
				  (unsigned long long)addr);
		return VM_FAULT;
	}
	if (s->check && !vm__heap_live(s, addr, n)) {
		vm__fault(w, "%s at 0x%llx outside any live block", what,
			  (unsigned long long)addr);
		return VM_FAULT;
	}
	if (write) {
		data = vm__page_bytes(pg);
		if (data == NULL) {
			vm__fault(w, "out of memory");
			return VM_FAULT;
		}
	} else {
		/* The zero page only for a page that was never lent. */
		data = __atomic_load_n(&pg->data, __ATOMIC_ACQUIRE);
		if (data == NULL && pg->lent != NULL) {
			vm__fault(w, "%s at 0x%llx: its page is absent", what,
				  (unsigned long long)addr);
			return VM_FAULT;
		}
		if (data == NULL)
			data = (uint8_t *)zero_page;
	}
	*out = data + (addr & (VM_PAGE_SIZE - 1));
	*cache = !s->check;
	return VM_OK;
}

enum vm_res vm__lent_fetch(struct vm_worker *w, struct vm_page *pg,
			   vm_word addr)
{
	struct vm_thread *t = w->cur;
	struct vm_peer *pe = t->proc->peer;
	struct vm_reply r;
	enum vm_res rc;

	/* The reply of a park for these bytes, if this is the instruction
	 * running again: it carries nothing, the bytes are in the lent. */
	(void)vm__reply_take(t, VM_PARK_GLOBAL, &r);
	if (!vm__page_absent(pg))
		return VM_OK;
	if (__atomic_load_n(&pg->lent->data, __ATOMIC_ACQUIRE) == NULL) {
		if (pe == NULL) { /* only a peer makes absent pages */
			vm__fault(w, "page at 0x%llx is absent and nothing "
				     "here can fetch it",
				  (unsigned long long)addr);
			return VM_FAULT;
		}
		rc = pe->ops->fetch(pe, w, pg->lent, addr);
		if (rc != VM_OK)
			return rc;
	}
	if (vm__page_bytes(pg) == NULL) {
		vm__fault(w, "out of memory (a lent page's bytes)");
		return VM_FAULT;
	}
	return VM_OK;
}

enum vm_res vm__xlate(struct vm_worker *w, vm_word addr, vm_word n, bool write,
		      const char *what, uint8_t **out)
{
	struct vm_gsrc *g = w->cur->proc->gs;
	bool cache = false;
	enum vm_res rc;

	if (addr & VM_GLOBAL_BIT)
		rc = g->ops->page(g, w, addr, n, write, what, out, &cache);
	else
		rc = xlate_local(w, addr, n, write, what, out, &cache);
	if (rc == VM_OK && cache) {
		vm_word key = addr >> VM_PAGE_SHIFT;
		uint8_t *page = *out - (addr & (VM_PAGE_SIZE - 1));
		tlb_fill(w, w->rtlb, key, page);
		if (write)
			tlb_fill(w, w->wtlb, key, page);
	}
	return rc;
}

/* ---- Bulk access ---- */

/* memmove/memset on program memory; see VM_PROGRAM_MEMORY. Under TSAN
 * byte by byte through volatile, so no intercepted libc call sees it. */
static VM_PROGRAM_MEMORY void prog_move(void *d, const void *s, size_t n)
{
#ifdef VM_TSAN
	volatile uint8_t *vd = d;
	const volatile uint8_t *vs = s;
	if (vd < vs)
		for (size_t i = 0; i < n; i++)
			vd[i] = vs[i];
	else
		for (size_t i = n; i-- > 0;)
			vd[i] = vs[i];
#else
	memmove(d, s, n);
#endif
}

static VM_PROGRAM_MEMORY void prog_set(void *d, uint8_t byte, size_t n)
{
#ifdef VM_TSAN
	volatile uint8_t *vd = d;
	for (size_t i = 0; i < n; i++)
		vd[i] = byte;
#else
	memset(d, byte, n);
#endif
}

static vm_word page_left(vm_word addr)
{
	return VM_PAGE_SIZE - (addr & (VM_PAGE_SIZE - 1));
}

static vm_word min3(vm_word a, vm_word b, vm_word c)
{
	vm_word m = a < b ? a : b;
	return m < c ? m : c;
}

enum vm_res vm__mem_read(struct vm_worker *w, void *dst, vm_word addr,
			 vm_word n, const char *what)
{
	uint8_t *d = dst;

	while (n > 0) {
		vm_word k = n < page_left(addr) ? n : page_left(addr);
		uint8_t *p;
		enum vm_res rc = vm__xlate(w, addr, k, false, what, &p);
		if (rc != VM_OK)
			return rc;
		prog_move(d, p, k);
		d += k;
		addr += k;
		n -= k;
	}
	return VM_OK;
}

enum vm_res vm__mem_write(struct vm_worker *w, vm_word addr, const void *src,
			  vm_word n, const char *what)
{
	const uint8_t *q = src;

	while (n > 0) {
		vm_word k = n < page_left(addr) ? n : page_left(addr);
		uint8_t *p;
		enum vm_res rc = vm__xlate(w, addr, k, true, what, &p);
		if (rc != VM_OK)
			return rc;
		prog_move(p, q, k);
		q += k;
		addr += k;
		n -= k;
	}
	return VM_OK;
}

/* memmove semantics: when dst overlaps the tail of src, go backwards
 * (from the end, so only *@n shrinks; forwards all three move). Each step
 * copies a run that stays inside one page on both sides; the source is
 * translated after the destination, since making the destination
 * writable may have copied the page the source is on. The direction
 * chosen again after a park is the same, or forwards once what is left
 * no longer overlaps, which is as right. */
enum vm_res vm__mem_copy(struct vm_worker *w, vm_word *dst, vm_word *src,
			 vm_word *n)
{
	bool backward = *dst > *src && *dst - *src < *n;

	while (*n > 0) {
		vm_word k, s0, d0;
		uint8_t *d, *s;
		enum vm_res rc;
		if (!backward) {
			k = min3(*n, page_left(*src), page_left(*dst));
			s0 = *src;
			d0 = *dst;
		} else {
			vm_word se = *src + *n, de = *dst + *n; /* exclusive ends */
			k = min3(*n, ((se - 1) & (VM_PAGE_SIZE - 1)) + 1,
				 ((de - 1) & (VM_PAGE_SIZE - 1)) + 1);
			s0 = se - k;
			d0 = de - k;
		}
		if ((rc = vm__xlate(w, d0, k, true, "copy", &d)) != VM_OK ||
		    (rc = vm__xlate(w, s0, k, false, "copy", &s)) != VM_OK)
			return rc;
		prog_move(d, s, k);
		if (!backward) {
			*src += k;
			*dst += k;
		}
		*n -= k;
	}
	return VM_OK;
}

enum vm_res vm__mem_fill(struct vm_worker *w, vm_word *dst, uint8_t byte,
			 vm_word *n)
{
	while (*n > 0) {
		vm_word k = *n < page_left(*dst) ? *n : page_left(*dst);
		uint8_t *d;
		enum vm_res rc = vm__xlate(w, *dst, k, true, "fill", &d);
		if (rc != VM_OK)
			return rc;
		prog_set(d, byte, k);
		*dst += k;
		*n -= k;
	}
	return VM_OK;
}
