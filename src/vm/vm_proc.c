/* A process on the embedded VM: load a verified module, run it on the
 * scheduler's workers until it ends, clean up.
 *
 * vm_run() builds a struct vm_proc (global space with the module's
 * read-only data and globals at their fixed addresses, linked code, the
 * buffered stdout, wait queues, the thread table), creates main as thread
 * 1, and runs the scheduler. The process ends exactly once (vm__proc_end):
 * when main returns, when any thread executes exit, on a runtime error in
 * any thread, or on deadlock; every worker then stops at its next check
 * and the threads still alive are simply freed.
 *
 * Output is buffered per process under a mutex, so each write or printi is
 * atomic, and flushed when the process ends for any reason, before
 * anything goes to stderr, before reading stdin, and at once when stdout is
 * a terminal: output written before a runtime error is never lost. */
#include "vm/vm_int.h"

#include <errno.h>
#include <inttypes.h>
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
}

/* ---- Output ---- */

#define OUT_FLUSH_AT 65536

static void flush_locked(struct vm_out *o)
{
	fl_write_all(o->fd, o->buf.data, o->buf.len);
	o->buf.len = 0;
}

void vm__out_flush(struct vm_out *o)
{
	pthread_mutex_lock(&o->lock);
	flush_locked(o);
	pthread_mutex_unlock(&o->lock);
}

void vm__out_write(struct vm_out *o, const void *p, size_t n)
{
	pthread_mutex_lock(&o->lock);
	if (o->buf.len + n > OUT_FLUSH_AT)
		flush_locked(o);
	if (n >= OUT_FLUSH_AT) {
		fl_write_all(o->fd, p, n);
	} else {
		fl_buf_put(&o->buf, p, n);
		if (fl_buf_failed(&o->buf)) { /* out of memory: write through */
			fl_buf_close(&o->buf);
			fl_write_all(o->fd, p, n);
		} else if (o->tty) {
			flush_locked(o);
		}
	}
	pthread_mutex_unlock(&o->lock);
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
	if (first + np > p->global.heap->top)
		p->global.heap->top = first + np;
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

/* ---- The end ---- */

bool vm__proc_end(struct vm_proc *p, int status)
{
	bool first = false;

	pthread_mutex_lock(&p->endlock);
	if (!atomic_load(&p->ending)) {
		p->status = status;
		atomic_store(&p->ending, true);
		first = true;
	}
	pthread_mutex_unlock(&p->endlock);
	if (first)
		vm__sched_stop(&p->sched);
	return first;
}

void vm__proc_fail(struct vm_proc *p, const struct vm_thread *t, uint32_t pc,
		   const char *msg)
{
	const struct vm_module *m = p->m;
	uint32_t off = p->x.cell_off[pc], depth = t->depth;
	int f = vm_module_func_at(m, off);
	const char *file, *inside = NULL;
	uint32_t line = vm_module_line(m, off, &file);
	char where[VM_NAME_MAX + 16] = "";

	/* A source file named <...> is code the compiler supplied (print's
	 * implementation, "<prelude>"): report the error where the program
	 * called into it, naming the function it happened in. */
	while (file[0] == '<' && depth > 0) {
		if (inside == NULL)
			inside = f >= 0 ? m->funcs[f].name : "?";
		depth--;
		/* the return cell follows the call's operand cell */
		off = p->x.cell_off[t->frames[depth].ret - 1];
		f = vm_module_func_at(m, off);
		line = vm_module_line(m, off, &file);
	}
	if (inside != NULL)
		snprintf(where, sizeof where, ", inside %s", inside);

	pthread_mutex_lock(&p->endlock);
	if (!atomic_load(&p->ending)) {
		p->status = 70;
		atomic_store(&p->ending, true);
		vm__out_flush(&p->out);
		dprintf(p->opt.fd_err,
			"%s:%" PRIu32 ": runtime error: %s (in function %s, "
			"thread %" PRIu64 "%s)\n",
			file, line, msg, f >= 0 ? m->funcs[f].name : "?", t->tid,
			where);
	}
	pthread_mutex_unlock(&p->endlock);
	vm__sched_stop(&p->sched);
}

void vm__proc_deadlock(struct vm_proc *p)
{
	char msg[96];
	int64_t n = atomic_load(&p->live);

	snprintf(msg, sizeof msg,
		 "deadlock: all %" PRId64 " thread%s blocked for good", n,
		 n == 1 ? " is" : "s are");
	/* main is parked, so its saved pc is the instruction after the one
	 * it waits in. */
	vm__proc_fail(p, p->main, p->main->pc ? p->main->pc - 1 : 0, msg);
}

/* ---- Running ---- */

static int nworkers(const struct vm_options *o, long ncpu)
{
	if (o->cpus > 0)
		return o->cpus > VM_MAX_CPUS ? VM_MAX_CPUS : (int)o->cpus;
	return ncpu > VM_MAX_CPUS ? VM_MAX_CPUS : (int)ncpu;
}

void vm__proc_free(struct vm_proc *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->threads_cap; i++)
		vm__thread_free(p->threads[i]);
	free(p->threads);
	vm__sched_close(&p->sched);
	vm__unlink(p);
	if (p->global.heap != NULL)
		vm__space_close(&p->global);
	fl_buf_close(&p->out.buf);
	for (int i = 0; i < VM_WAIT_BUCKETS; i++)
		pthread_mutex_destroy(&p->waitq[i].lock);
	pthread_mutex_destroy(&p->out.lock);
	pthread_mutex_destroy(&p->glock);
	pthread_mutex_destroy(&p->tlock);
	pthread_mutex_destroy(&p->endlock);
	free(p);
}

struct vm_proc *vm__proc_new(const struct vm_module *m,
			     const struct vm_options *o)
{
	struct vm_proc *p = calloc(1, sizeof *p);
	struct fl_err err;
	long ncpu;

	if (p == NULL)
		return NULL;
	p->m = m;
	p->opt = *o;
	ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	p->ncpu = nworkers(o, ncpu > 0 ? ncpu : 1);
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
	pthread_mutex_init(&p->out.lock, NULL);
	pthread_mutex_init(&p->glock, NULL);
	pthread_mutex_init(&p->tlock, NULL);
	pthread_mutex_init(&p->endlock, NULL);
	for (int i = 0; i < VM_WAIT_BUCKETS; i++)
		pthread_mutex_init(&p->waitq[i].lock, NULL);
	atomic_init(&p->next_tid, 1);
	if (vm__space_init(&p->global, VM_GLOBAL_BIT, o->check, true) != 0)
		goto fail;
	p->global.budget = &p->budget;
	if (vm__load_segments(p, &err) != 0 || vm__link(p) != 0 ||
	    vm__sched_init(&p->sched, p, (int)p->ncpu) != 0)
		goto fail;
	return p;
fail:
	vm__proc_free(p);
	return NULL;
}

int vm_run(const struct vm_module *m, const struct vm_options *o)
{
	struct vm_proc *p = vm__proc_new(m, o);
	const struct vm_xfunc *fn;
	int status;

	if (p == NULL)
		goto nomem;
	fn = &p->x.funcs[vm_module_find_func(m, "main")];
	if (fn->frame_words + 1 > o->stack_words) {
		const char *file;
		uint32_t line = vm_module_line(
			m, m->funcs[fn->index].code_off, &file);
		dprintf(o->fd_err,
			"%s:%" PRIu32 ": runtime error: stack overflow (data "
			"stack limit of %" PRIu32 " words) (in function main, "
			"thread 1)\n",
			file, line, o->stack_words);
		vm__proc_free(p);
		return 70;
	}
	p->main = vm__thread_new(p, fn, NULL, 0, NULL);
	if (p->main == NULL)
		goto nomem;
	vm__sched_push(&p->sched, NULL, p->main);
	vm__sched_run(&p->sched);
	vm__out_flush(&p->out);
	status = p->status;
	vm__proc_free(p);
	return status;
nomem:
	dprintf(o->fd_err, "%s: cannot load %s: out of memory\n", o->prog,
		m->source);
	vm__proc_free(p);
	return 70;
}
