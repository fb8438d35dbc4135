/* A process on the embedded VM: load a verified module, run main, end.
 *
 * vm_run() builds a struct vm_proc (global space with the module's
 * read-only data and globals at their fixed addresses, linked code, the
 * buffered stdout), a struct vm_thread for main, and runs the interpreter
 * until the process ends. Output is buffered per process and flushed when
 * the process ends for any reason, before anything goes to stderr, before
 * reading stdin, and at once when stdout is a terminal: output written
 * before a runtime error is never lost.
 *
 * Runs on the caller's thread. */
#include "vm/vm_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void vm_options_init(struct vm_options *o)
{
	memset(o, 0, sizeof *o);
	o->stack_words = VM_DEFAULT_STACK_WORDS;
	o->max_depth = VM_DEFAULT_MAX_DEPTH;
	o->fd_in = 0;
	o->fd_out = 1;
	o->fd_err = 2;
	o->prog = "flock";
	o->memory = 0;
}

/* ---- Output ---- */

#define OUT_FLUSH_AT 65536

static void write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return; /* the reader went away; nothing to keep */
		p += k;
		n -= (size_t)k;
	}
}

void vm__out_flush(struct vm_out *o)
{
	write_all(o->fd, o->buf.data, o->buf.len);
	o->buf.len = 0;
}

void vm__out_write(struct vm_out *o, const void *p, size_t n)
{
	if (o->buf.len + n > OUT_FLUSH_AT)
		vm__out_flush(o);
	if (n >= OUT_FLUSH_AT) {
		write_all(o->fd, p, n);
		return;
	}
	fl_buf_put(&o->buf, p, n);
	if (o->tty || fl_buf_failed(&o->buf)) {
		if (fl_buf_failed(&o->buf)) { /* out of memory: write through */
			fl_buf_close(&o->buf);
			write_all(o->fd, p, n);
			return;
		}
		vm__out_flush(o);
	}
}

/* ---- Loading ---- */

static int load_segment(struct vm_proc *p, enum vm_segment seg,
			const uint8_t *bytes, uint32_t len, struct fl_err *err)
{
	vm_word base = vm_module_seg_base(p->m, seg) & ~VM_GLOBAL_BIT;
	vm_word first = base >> VM_PAGE_SHIFT;
	vm_word np = ((vm_word)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;

	for (vm_word i = 0; i < np; i++) {
		struct vm_page *pg = vm__page_map(&p->global, first + i);
		uint32_t k = len - (uint32_t)(i * VM_PAGE_SIZE);
		if (pg == NULL || vm__page_bytes(pg) == NULL)
			return fl_err_set(err, FL_ENOMEM, "out of memory");
		pg->kind = seg == VM_SEG_RODATA ? VM_PAGE_RODATA : VM_PAGE_DATA;
		pg->head = first;
		pg->bytes = len;
		memcpy(pg->data, bytes + i * VM_PAGE_SIZE,
		       k < VM_PAGE_SIZE ? k : VM_PAGE_SIZE);
	}
	if (first + np > p->global.top)
		p->global.top = first + np;
	p->budget -= (int64_t)(np * VM_PAGE_SIZE);
	return 0;
}

int vm__load_segments(struct vm_proc *p, struct fl_err *err)
{
	int rc = load_segment(p, VM_SEG_RODATA, p->m->rodata, p->m->rodata_len,
			      err);
	if (rc == 0)
		rc = load_segment(p, VM_SEG_DATA, p->m->data, p->m->data_len,
				  err);
	return rc;
}

/* ---- Threads ---- */

static int thread_init(struct vm_thread *t, struct vm_proc *p, vm_word tid)
{
	memset(t, 0, sizeof *t);
	t->proc = p;
	t->tid = tid;
	vm__space_init(&t->local, 0, p->opt.check);
	vm__tlb_flush(t);
	return 0;
}

static void thread_close(struct vm_thread *t)
{
	vm__space_close(&t->local);
	free(t->stack);
	free(t->frames);
}

int vm_run(const struct vm_module *m, const struct vm_options *o)
{
	struct vm_proc *p;
	struct vm_thread *t;
	struct fl_err err;
	int status;
	long ncpu;

	p = calloc(1, sizeof *p);
	t = malloc(sizeof *t);
	if (p == NULL || t == NULL) {
		free(p);
		free(t);
		dprintf(o->fd_err, "%s: out of memory\n", o->prog);
		return 70;
	}
	p->m = m;
	p->opt = *o;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	p->ncpu = ncpu > 0 ? ncpu : 1;
	if (o->memory == 0) {
		long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
		p->budget = pages > 0 && size > 0 ? (int64_t)pages * size / 2
						  : (int64_t)1 << 32;
	} else {
		p->budget = (int64_t)o->memory;
	}
	p->out.fd = o->fd_out;
	p->out.tty = isatty(o->fd_out) == 1;
	fl_buf_init(&p->out.buf);
	vm__space_init(&p->global, VM_GLOBAL_BIT, o->check);
	thread_init(t, p, 1);

	if (vm__load_segments(p, &err) != 0 || vm__link(p) != 0) {
		dprintf(o->fd_err, "%s: cannot load %s: out of memory\n",
			o->prog, m->source);
		status = 70;
	} else {
		status = vm__interp(t);
	}
	vm__out_flush(&p->out);
	fl_buf_close(&p->out.buf);
	thread_close(t);
	vm__unlink(p);
	vm__space_close(&p->global);
	free(t);
	free(p);
	return status;
}
