/* Thread state to bytes and back: what lets a thread move between
 * machines.
 *
 * A thread that is not running (its registers saved) encodes to:
 *   "FLKT" u16 version
 *   u64 tid, u32 pc (module code offset), i32 sp, u32 bp
 *   u32 depth, depth x { u32 return code offset, u32 bp }
 *   u32 n, n x u64 stack words (sp + 1 of them)
 *   local memory: u64 heap top, u32 n, n x { u64 first, u64 count }
 *     (free page runs), 16 x { u32 n, n x u64 page } (partial slabs),
 *     u32 npages, each { u64 pageno, u8 kind, u8 cls, u16 nlive,
 *     u32 pidx, u64 head, u64 bytes, 8 x u64 live bits, u8 has_sizes
 *     [+ blocks x u32], u8 has_data [+ 4096 bytes] }
 * all little-endian. Code positions are module code offsets, not cell
 * indices, so the bytes mean the same to any machine that loaded the
 * module. Pages shared copy-on-write are written out in full; the
 * restored thread owns private copies, which is what a snapshot means.
 *
 * Decoding treats the bytes as hostile: every count is checked against
 * the bytes left, every position against the module and the frame
 * limits, before anything is allocated or trusted. Runs on any thread. */
#include "vm/vm_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TSTATE_MAGIC "FLKT"
#define TSTATE_VERSION 1

static void put_i32(struct fl_buf *b, int32_t v)
{
	fl_buf_put_u32(b, (uint32_t)v);
}

/* Visit every mapped page of @s in page order. */
static void each_page(const void *const *node, int level, vm_word prefix,
		      void (*fn)(void *, vm_word, const struct vm_page *),
		      void *arg)
{
	for (unsigned i = 0; i < VM_RADIX_FAN; i++) {
		const void *c = node[i];
		vm_word pn = prefix << VM_RADIX_BITS | i;
		if (c == NULL)
			continue;
		if (level == VM_RADIX_LEVELS - 1)
			fn(arg, pn, c);
		else
			each_page((const void *const *)((const struct vm_radix *)c)->slot,
				  level + 1, pn, fn, arg);
	}
}

static void count_page(void *arg, vm_word pn, const struct vm_page *pg)
{
	(void)pn;
	(void)pg;
	(*(uint32_t *)arg)++;
}

static void put_page(void *arg, vm_word pn, const struct vm_page *pg)
{
	struct fl_buf *b = arg;

	fl_buf_put_u64(b, pn);
	fl_buf_put_u8(b, pg->kind);
	fl_buf_put_u8(b, pg->cls);
	fl_buf_put_u16(b, pg->nlive);
	fl_buf_put_u32(b, pg->pidx);
	fl_buf_put_u64(b, pg->head);
	fl_buf_put_u64(b, pg->bytes);
	for (unsigned i = 0; i < VM_SLAB_WORDS; i++)
		fl_buf_put_u64(b, pg->live[i]);
	fl_buf_put_u8(b, pg->sizes != NULL);
	if (pg->sizes != NULL)
		for (uint32_t i = 0; i < VM_PAGE_SIZE / vm__class_size[pg->cls]; i++)
			fl_buf_put_u32(b, pg->sizes[i]);
	fl_buf_put_u8(b, pg->data != NULL);
	if (pg->data != NULL)
		fl_buf_put(b, pg->data, VM_PAGE_SIZE);
}

int vm__thread_encode(const struct vm_thread *t, struct fl_buf *b)
{
	const struct vm_xcode *x = &t->proc->x;
	const struct vm_heap *h = t->local.heap;
	uint32_t npages = 0;

	fl_buf_put(b, TSTATE_MAGIC, 4);
	fl_buf_put_u16(b, TSTATE_VERSION);
	fl_buf_put_u64(b, t->tid);
	fl_buf_put_u32(b, x->cell_off[t->pc]);
	put_i32(b, t->sp);
	fl_buf_put_u32(b, t->bp);
	fl_buf_put_u32(b, t->depth);
	for (uint32_t i = 0; i < t->depth; i++) {
		fl_buf_put_u32(b, x->cell_off[t->frames[i].ret]);
		fl_buf_put_u32(b, t->frames[i].bp);
	}
	fl_buf_put_u32(b, (uint32_t)(t->sp + 1));
	for (int32_t i = 0; i <= t->sp; i++)
		fl_buf_put_u64(b, t->stack[i]);
	fl_buf_put_u64(b, h->top);
	fl_buf_put_u32(b, (uint32_t)h->nfree);
	for (size_t i = 0; i < h->nfree; i++) {
		fl_buf_put_u64(b, h->free_ranges[i].first);
		fl_buf_put_u64(b, h->free_ranges[i].n);
	}
	for (int c = 0; c < VM_NCLASSES; c++) {
		fl_buf_put_u32(b, (uint32_t)h->npartial[c]);
		for (size_t i = 0; i < h->npartial[c]; i++)
			fl_buf_put_u64(b, h->partial[c][i]);
	}
	if (t->local.root != NULL)
		each_page((const void *const *)t->local.root->slot, 0, 0,
			  count_page, &npages);
	fl_buf_put_u32(b, npages);
	if (t->local.root != NULL)
		each_page((const void *const *)t->local.root->slot, 0, 0,
			  put_page, b);
	return fl_buf_failed(b) ? FL_ENOMEM : 0;
}

/* ---- Decoding ---- */

struct dec {
	struct fl_reader r;
	struct fl_err *err;
};

static int bad(struct dec *d, const char *what)
{
	return fl_err_set(d->err, FL_EFORMAT, "thread state: %s", what);
}

static bool fits(struct dec *d, uint64_t n, size_t each)
{
	return !d->r.failed && n <= fl_reader_left(&d->r) / each;
}

/* A code position: a module offset that starts an instruction. */
static bool code_pos(const struct vm_proc *p, uint32_t off, uint32_t *cell)
{
	if (off >= p->m->code_len)
		return false;
	*cell = p->x.cell_at[off];
	return p->x.cell_off[*cell] == off &&
	       (*cell == 0 || p->x.cell_off[*cell - 1] != off);
}

static int decode_space(struct dec *d, struct vm_thread *t)
{
	struct vm_space *s = &t->local;
	struct vm_heap *h = s->heap;
	uint32_t n;

	h->top = fl_get_u64(&d->r);
	if (h->top == 0 || h->top > VM_MAX_PAGE)
		return bad(d, "heap top out of range");
	n = fl_get_u32(&d->r);
	if (!fits(d, n, 16))
		return bad(d, "free runs cut off");
	if (n > 0) {
		h->free_ranges = malloc(n * sizeof *h->free_ranges);
		if (h->free_ranges == NULL)
			return FL_ENOMEM;
		h->nfree = h->free_cap = n;
		for (uint32_t i = 0; i < n; i++) {
			h->free_ranges[i].first = fl_get_u64(&d->r);
			h->free_ranges[i].n = fl_get_u64(&d->r);
			if (h->free_ranges[i].first == 0 ||
			    h->free_ranges[i].first > h->top ||
			    h->free_ranges[i].n > h->top - h->free_ranges[i].first)
				return bad(d, "free run out of range");
		}
	}
	for (int c = 0; c < VM_NCLASSES; c++) {
		n = fl_get_u32(&d->r);
		if (!fits(d, n, 8))
			return bad(d, "partial slab list cut off");
		if (n == 0)
			continue;
		h->partial[c] = malloc(n * sizeof(vm_word));
		if (h->partial[c] == NULL)
			return FL_ENOMEM;
		h->npartial[c] = h->partial_cap[c] = n;
		for (uint32_t i = 0; i < n; i++)
			h->partial[c][i] = fl_get_u64(&d->r);
	}
	n = fl_get_u32(&d->r);
	if (!fits(d, n, 8 + 4 + 4 + 16 + 64 + 2))
		return bad(d, "pages cut off");
	for (uint32_t i = 0; i < n; i++) {
		vm_word pn = fl_get_u64(&d->r);
		struct vm_page *pg;
		uint8_t kind = fl_get_u8(&d->r), cls = fl_get_u8(&d->r);
		if (d->r.failed || pn == 0 || pn >= h->top || kind > VM_PAGE_LARGE ||
		    kind < VM_PAGE_SLAB || cls >= VM_NCLASSES ||
		    vm__page_get(s, pn) != NULL)
			return bad(d, "bad page header");
		pg = vm__page_map(s, pn);
		if (pg == NULL)
			return FL_ENOMEM;
		pg->kind = kind;
		pg->cls = cls;
		pg->nlive = fl_get_u16(&d->r);
		pg->pidx = fl_get_u32(&d->r);
		pg->head = fl_get_u64(&d->r);
		pg->bytes = fl_get_u64(&d->r);
		for (unsigned k = 0; k < VM_SLAB_WORDS; k++)
			pg->live[k] = fl_get_u64(&d->r);
		if (fl_get_u8(&d->r)) {
			uint32_t nb = VM_PAGE_SIZE / vm__class_size[cls];
			if (!fits(d, nb, 4) || !s->check)
				return bad(d, "block sizes");
			pg->sizes = malloc(nb * sizeof *pg->sizes);
			if (pg->sizes == NULL)
				return FL_ENOMEM;
			for (uint32_t k = 0; k < nb; k++)
				pg->sizes[k] = fl_get_u32(&d->r);
		} else if (s->check && kind == VM_PAGE_SLAB) {
			return bad(d, "block sizes missing");
		}
		if (fl_get_u8(&d->r)) {
			const uint8_t *q = fl_get_bytes(&d->r, VM_PAGE_SIZE);
			if (q == NULL || vm__page_bytes(pg) == NULL)
				return q ? FL_ENOMEM : bad(d, "page cut off");
			memcpy(pg->data, q, VM_PAGE_SIZE);
		}
		if (d->r.failed)
			return bad(d, "page cut off");
	}
	/* The allocator's lists must name real slab pages of their class
	 * with their own positions, or a later alloc/free would misbehave. */
	for (int c = 0; c < VM_NCLASSES; c++)
		for (size_t i = 0; i < h->npartial[c]; i++) {
			const struct vm_page *pg = vm__page_get(s, h->partial[c][i]);
			if (pg == NULL || pg->kind != VM_PAGE_SLAB || pg->cls != c ||
			    pg->pidx != i || pg->nlive == 0 ||
			    pg->nlive >= VM_PAGE_SIZE / vm__class_size[c])
				return bad(d, "partial slab list inconsistent");
		}
	return 0;
}

/* Function index at cell @cell, or -1. */
static int func_of(const struct vm_proc *p, uint32_t cell)
{
	return vm_module_func_at(p->m, p->x.cell_off[cell]);
}

/* The stack layout the verifier proved for every pc: each frame's slots
 * plus the operand depth at its resume point reach exactly the next
 * frame's base (where the callee's arguments were), and the top frame's
 * depth at pc gives sp. Without this a forged state could make the
 * interpreter read or write outside the stack. */
static bool frames_fit(const struct vm_proc *p, const struct vm_thread *t)
{
	const struct vm_module *m = p->m;
	int f = func_of(p, t->pc);
	int64_t want;

	if (f < 0 || m->depth == NULL)
		return false;
	want = (int64_t)t->bp + p->x.funcs[f].nslots - 1 +
	       m->depth[p->x.cell_off[t->pc]];
	if (m->depth[p->x.cell_off[t->pc]] < 0 || want != t->sp)
		return false;
	for (uint32_t i = 0; i < t->depth; i++) {
		uint32_t ret = t->frames[i].ret;
		uint32_t callee_bp = i + 1 < t->depth ? t->frames[i + 1].bp
						      : t->bp;
		int caller = func_of(p, ret);
		int32_t d;
		if (caller < 0 || ret < 2)
			return false;
		d = m->depth[p->x.cell_off[ret]];
		/* After the call returns, the result sits at callee_bp. */
		if (d < 1 || (int64_t)t->frames[i].bp +
					 p->x.funcs[caller].nslots - 1 + d !=
				     (int64_t)callee_bp)
			return false;
		/* ret must follow a call instruction. */
		if (m->code[p->x.cell_off[ret - 2]] != VM_OP_CALL ||
		    p->x.cell_off[ret - 1] != p->x.cell_off[ret - 2])
			return false;
	}
	return true;
}

int vm__thread_decode(struct vm_proc *p, const uint8_t *bytes, size_t len,
		      struct vm_thread **out, struct fl_err *err)
{
	struct dec d = {.err = err};
	struct vm_thread *t;
	const uint8_t *magic;
	const struct vm_xfunc *fn;
	uint32_t off, n;
	struct vm_fault f;
	int rc;

	fl_reader_init(&d.r, bytes, len);
	magic = fl_get_bytes(&d.r, 4);
	if (magic == NULL || memcmp(magic, TSTATE_MAGIC, 4) != 0 ||
	    fl_get_u16(&d.r) != TSTATE_VERSION)
		return bad(&d, "bad magic or version");
	t = calloc(1, sizeof *t);
	if (t == NULL)
		return FL_ENOMEM;
	t->proc = p;
	atomic_init(&t->state, VM_T_RUNNABLE);
	atomic_init(&t->pstate, VM_P_RUN);
	rc = vm__space_init(&t->local, 0, p->opt.check, false);
	if (rc)
		goto fail;
	t->local.budget = &p->budget;
	t->tid = fl_get_u64(&d.r);
	off = fl_get_u32(&d.r);
	t->sp = (int32_t)fl_get_u32(&d.r);
	t->bp = fl_get_u32(&d.r);
	t->depth = fl_get_u32(&d.r);
	rc = FL_EFORMAT;
	if (d.r.failed || t->tid == 0 || !code_pos(p, off, &t->pc)) {
		bad(&d, "bad thread header");
		goto fail;
	}
	if (t->depth > p->opt.max_depth || !fits(&d, t->depth, 8)) {
		bad(&d, "frames cut off or too deep");
		goto fail;
	}
	t->frames_cap = t->depth > 4 ? t->depth : 4;
	t->frames = malloc(t->frames_cap * sizeof *t->frames);
	if (t->frames == NULL) {
		rc = FL_ENOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < t->depth; i++) {
		uint32_t ret = fl_get_u32(&d.r);
		t->frames[i].bp = fl_get_u32(&d.r);
		if (!code_pos(p, ret, &t->frames[i].ret) ||
		    (i > 0 && t->frames[i].bp < t->frames[i - 1].bp) ||
		    t->frames[i].bp > t->bp) {
			bad(&d, "bad frame");
			goto fail;
		}
	}
	n = fl_get_u32(&d.r);
	if (n != (uint32_t)(t->sp + 1) || t->sp < -1 || !fits(&d, n, 8) ||
	    !frames_fit(p, t)) {
		bad(&d, "stack does not match the code");
		goto fail;
	}
	/* Room for everything the current function may still push. */
	fn = &p->x.funcs[vm_module_func_at(p->m, off)];
	if (!vm__thread_grow_stack(t, &f, (size_t)t->bp + fn->frame_words + 1)) {
		bad(&d, f.msg);
		goto fail;
	}
	for (uint32_t i = 0; i < n; i++)
		t->stack[i] = fl_get_u64(&d.r);
	rc = decode_space(&d, t);
	if (rc)
		goto fail;
	if (fl_reader_left(&d.r) != 0) {
		rc = bad(&d, "trailing bytes");
		goto fail;
	}
	*out = t;
	return 0;
fail:
	vm__thread_free(t);
	return rc;
}

struct vm_thread *vm__thread_roundtrip(struct vm_worker *w,
				       struct vm_thread *t)
{
	struct vm_proc *p = t->proc;
	struct vm_thread *c = NULL;
	struct fl_buf b;
	struct fl_err err;
	int rc;

	fl_buf_init(&b);
	rc = vm__thread_encode(t, &b);
	if (rc != 0)
		fl_err_set(&err, rc, "encode: %s", fl_strerror(rc));
	else
		rc = vm__thread_decode(p, b.data, b.len, &c, &err);
	fl_buf_close(&b);
	if (rc != 0) {
		/* A test aid that quietly kept the old thread would make
		 * every test that relies on it unable to fail. */
		vm__fault(w, "debug-migrate: round trip failed: %.160s", err.msg);
		vm__proc_fail(p, t, t->pc, w->fault.msg);
		return NULL;
	}
	/* Relations kept by the process, not by the thread itself. */
	pthread_mutex_lock(&p->tlock);
	c->joined = t->joined;
	c->joiner = t->joiner;
	vm__thread_relist(p, t, c);
	pthread_mutex_unlock(&p->tlock);
	vm__thread_free(t);
	return c;
}
