/* libFuzzer target for the thread-state decoder (src/vm/vm_tstate.c), the
 * bytes another machine sends when threads move -- and for the VM running
 * whatever it accepts.
 *
 * Base states: at start-up a fixed module is run by hand on a node's
 * worker 0 (tests/unit/vm/handrun.h; the program's start, the run to
 * state A and the rich allocator are test_tstate.c's too, in
 * tests/unit/vm/tstate_build.h) and its threads are encoded where
 * the VM leaves them: parked in lock, wait and join, finished, resumed
 * with a reply, two calls deep, with pages shared copy-on-write, as
 * batches and one by one; plus a thread whose allocator has full and
 * partial slabs, a large block and a free run, and two forged but valid
 * ones (a held join result, a write's progress). All of it once without
 * and once with --check.
 *
 * An input is either raw bytes (first byte 0; bit 0 of the second byte
 * picks --check) or selects a base state (first byte k > 0), then a cut
 * length (3 bytes, 0: none) and patches: an op byte (low 2 bits: set a
 * byte, xor a byte, set a u32, set a u64), a 3-byte offset (modulo the
 * length) and the value. tests/fuzz/seeds-tstate holds one input per
 * base state.
 *
 * Each input gets a fresh node and process (pid 1, as the bases were made
 * for; memory limited to 16 MiB, stdio on /dev/null). Whatever decodes
 * must encode and decode to the same bytes again; then its threads are
 * counted, queued and run for at most 20 slices (opt.migrate makes every
 * budget tick yield), and, unless the process ended meanwhile, all its
 * threads must encode and decode again: a state the VM made from an
 * accepted one is never refused. Nothing may crash, leak, read out of
 * bounds or hang. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/vm/tstate_build.h"
#include "lang/lang.h"

#define SLICES 20
#define MEMORY (16u << 20)
#define MAX_BASES 32

/* The program of tstate_build.h: here main, after f, frees its 64-byte
 * block, churns the allocator and frees the 64 KiB one; f copies within
 * the block and writes its first 16 bytes out; locker unlocks. */
static const char program[] =
	TSB_MAIN_START
	"        drop\n"
	"        get 1\n"
	"        free\n"
	"        push 40\n"
	"        call churn\n"
	"        drop\n"
	"        get 0\n"
	"        free\n"
	"        push 0\n"
	"        ret\n"
	"end\n"
	TSB_F_START
	"        get 0\n"
	"        push 8\n"
	"        add\n"
	"        get 0\n"
	"        push 100\n"
	"        copy\n"
	"        push 1\n"
	"        get 0\n"
	"        push 16\n"
	"        write\n"
	"        ret\n"
	"end\n"
	"; churn ( n -- 0 ): n rounds of alloc and free of growing sizes\n"
	"func churn 1 2\n"
	"loop:   get 1\n"
	"        get 0\n"
	"        ge\n"
	"        jnz done\n"
	"        get 1\n"
	"        push 97\n"
	"        mul\n"
	"        push 1\n"
	"        add\n"
	"        alloc\n"
	"        set 2\n"
	"        get 2\n"
	"        get 1\n"
	"        st8\n"
	"        get 1\n"
	"        push 3\n"
	"        mod\n"
	"        jz keep\n"
	"        get 2\n"
	"        free\n"
	"keep:   get 1\n"
	"        push 1\n"
	"        add\n"
	"        set 1\n"
	"        jmp loop\n"
	"done:   push 0\n"
	"        ret\n"
	"end\n"
	"func locker 1 0\n"
	"        get 0\n"
	"        lock\n"
	"        get 0\n"
	"        unlock\n"
	"        ret\n"
	"end\n"
	TSB_SHARED_FUNCS;

struct base {
	uint8_t *b;
	size_t len;
	bool check;
};

static struct vm_module *mod;
static struct base bases[MAX_BASES];
static int nbases;

/* What the inputs did, printed at exit. */
static struct {
	uint64_t inputs, decoded, threads, slices, rechecked;
} stats;

static void print_stats(void)
{
	fprintf(stderr,
		"fuzz_tstate: %llu inputs, %llu decoded (%llu threads), %llu "
		"slices run, %llu re-encoded after running\n",
		(unsigned long long)stats.inputs,
		(unsigned long long)stats.decoded,
		(unsigned long long)stats.threads,
		(unsigned long long)stats.slices,
		(unsigned long long)stats.rechecked);
}

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_tstate: %s%s%s\n", what, detail ? ": " : "",
		detail ? detail : "");
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void open_proc(struct handrun *h, bool check)
{
	struct vm_options o;
	struct fl_err err;

	hr_options(h, &o);
	o.check = check;
	o.migrate = true;
	o.memory = MEMORY;
	if (hr_open(h, mod, &o, &err) != 0)
		die("process", err.msg);
}

static const struct vm_xfunc *func(struct handrun *h, const char *name)
{
	return &h->p->x.funcs[vm_module_find_func(mod, name)];
}

static void add_base(struct vm_thread *const *ts, size_t n, bool check)
{
	struct fl_buf b;

	if (nbases == MAX_BASES)
		die("too many base states", NULL);
	fl_buf_init(&b);
	if (vm__threads_encode(ts, n, &b) != 0)
		die("encode of a base state", NULL);
	bases[nbases].b = fl_buf_take(&b, &bases[nbases].len);
	bases[nbases].check = check;
	nbases++;
}

static void add_one(struct handrun *h, vm_word tid, bool check)
{
	struct vm_thread *t = hr_thread(h, tid);

	if (t == NULL)
		die("no such thread", NULL);
	add_base(&t, 1, check);
}

/* Every thread in @h's table, as one base state. */
static void add_all(struct handrun *h, bool check)
{
	struct vm_thread *ts[16];
	size_t n = 0;

	for (size_t i = 0; i < h->p->threads_cap; i++)
		if (h->p->threads[i] != NULL && n < 16)
			ts[n++] = h->p->threads[i];
	add_base(ts, n, check);
}

static void expect_step(struct handrun *h, vm_word tid, enum vm_stop want)
{
	vm_word who = 0;
	enum vm_stop how;

	if (!hr_step(h, &who, &how) || who != tid || how != want)
		die("the base program did not stop where expected", NULL);
}

/* The module code offset of the first instruction @op of function @name. */
static uint32_t op_at(const char *name, enum vm_op op)
{
	uint32_t off = tsb_op_at(mod, name, op, 0);

	if (off == UINT32_MAX)
		die("no such instruction", name);
	return off;
}

static void make_bases(bool check)
{
	struct handrun h;
	struct vm_thread *t;
	struct tsb_rich rich;
	struct vm_fault f;

	open_proc(&h, check);
	/* State A: every child stopped, main yielded. */
	h.w->now = vm__thread_new(h.p, func(&h, "main"), NULL, 0, NULL);
	for (size_t i = 0; i < TSB_STATE_A_STEPS; i++)
		expect_step(&h, tsb_state_a[i].tid, tsb_state_a[i].how);
	add_all(&h, check);
	add_one(&h, TSB_LOCKER, check);
	add_one(&h, TSB_WAITER, check);
	add_one(&h, TSB_FINISHER, check);
	add_one(&h, TSB_JOINER, check);
	/* State B: slow ended, joiner resumed with its reply. */
	expect_step(&h, TSB_SLOW, VM_STOP_DONE);
	add_one(&h, TSB_JOINER, check);
	/* State C: main two frames deep, after a store. */
	expect_step(&h, TSB_MAIN, VM_STOP_YIELD);
	add_one(&h, TSB_MAIN, check);
	add_all(&h, check);
	/* Forged but valid: a held join result; a write's progress. */
	t = hr_thread(&h, TSB_LOCKER);
	t = vm__thread_new(h.p, func(&h, "joiner"), (vm_word[]){5}, 1, t);
	if (t == NULL || !vm__thread_grow_stack(t, &f, 8))
		die("thread", NULL);
	t->pc = h.p->x.cell_at[op_at("joiner", VM_OP_JOIN)];
	t->sp = 1; /* the slot, then join's operand */
	t->stack[1] = 5;
	t->held = true;
	t->partial = 77;
	add_base(&t, 1, check);
	t->held = false;
	t->partial = 3;
	t->pc = h.p->x.cell_at[op_at("writer", VM_OP_WRITE)];
	t->stack[0] = hr_thread(&h, TSB_LOCKER)->stack[0];
	t->stack[1] = 1;
	t->stack[2] = t->stack[0];
	t->stack[3] = 10;
	t->sp = 3;
	add_base(&t, 1, check);
	t->partial = 0;
	/* A rich allocator: full and partial slabs of three classes, a
	 * large block, a free run. */
	t = vm__thread_new(h.p, func(&h, "churn"), (vm_word[]){30}, 1, NULL);
	if (!tsb_rich_heap(t, &rich))
		die("rich heap", NULL);
	add_base(&t, 1, check);
	hr_close(&h);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct fl_err err;

	(void)argc;
	(void)argv;
	if (asm_assemble("fuzz.fla", program, sizeof program - 1, &mod,
			 stderr) != 0 ||
	    vm_verify(mod, true, &err) != 0)
		die("module", err.msg);
	make_bases(false);
	make_bases(true);
	atexit(print_stats);
	/* Every base state decodes in a fresh process. */
	for (int i = 0; i < nbases; i++) {
		struct handrun h;
		struct vm_thread **ts;
		size_t n;
		open_proc(&h, bases[i].check);
		if (vm__threads_decode(h.p, bases[i].b, bases[i].len, &ts, &n,
				       &err) != 0)
			die("decode of a base state", err.msg);
		for (size_t k = 0; k < n; k++)
			vm__thread_free(ts[k]);
		free(ts);
		hr_close(&h);
	}
	return 0;
}

/* ---- One input ---- */

static uint32_t u24(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

/* The bytes to decode (malloc'd) and whether with --check. */
static uint8_t *make_input(const uint8_t *data, size_t size, size_t *len,
			   bool *check)
{
	const struct base *bs;
	uint8_t *buf;
	size_t i;

	if (data[0] == 0) {
		*check = size > 1 && (data[1] & 1);
		*len = size > 2 ? size - 2 : 0;
		buf = malloc(*len + 1);
		if (buf != NULL && *len > 0)
			memcpy(buf, data + 2, *len);
		return buf;
	}
	bs = &bases[(data[0] - 1) % nbases];
	*check = bs->check;
	*len = bs->len;
	buf = malloc(bs->len);
	if (buf == NULL)
		return NULL;
	memcpy(buf, bs->b, bs->len);
	if (size >= 4 && u24(data + 1) != 0 && u24(data + 1) < *len)
		*len = u24(data + 1);
	for (i = 4; i + 4 <= size && *len > 0;) {
		uint8_t op = data[i] & 3;
		size_t off = u24(data + i + 1) % *len, vlen = op < 2 ? 1 : op == 2 ? 4 : 8;
		i += 4;
		if (i + vlen > size)
			break;
		for (size_t k = 0; k < vlen && off + k < *len; k++) {
			if (op == 1)
				buf[off + k] ^= data[i + k];
			else
				buf[off + k] = data[i + k];
		}
		i += vlen;
	}
	return buf;
}

static int cmp_tid(const void *a, const void *b)
{
	vm_word x = *(const vm_word *)a, y = *(const vm_word *)b;

	return x < y ? -1 : x > y;
}

/* A first id from which SLICES + 1 ids are free of @ts's: spawns take
 * them, so that every thread id stays unique. */
static vm_word free_tids(struct vm_thread *const *ts, size_t n)
{
	vm_word *tid = malloc((n ? n : 1) * sizeof *tid), start = 1;

	if (tid == NULL)
		return 0;
	for (size_t i = 0; i < n; i++)
		tid[i] = ts[i]->tid;
	qsort(tid, n, sizeof *tid, cmp_tid);
	for (size_t i = 0; i < n; i++) {
		if (tid[i] - start > SLICES + 1)
			break;
		start = tid[i] + 1;
	}
	free(tid);
	return start;
}

/* Encode @ts and decode them again: the same bytes both times. */
static void check_stable(struct vm_proc *p, struct vm_thread *const *ts,
			 size_t n)
{
	struct fl_buf b1, b2;
	struct vm_thread **cs;
	struct fl_err err;
	size_t nc;

	fl_buf_init(&b1);
	fl_buf_init(&b2);
	if (vm__threads_encode(ts, n, &b1) != 0)
		die("re-encode", NULL);
	if (vm__threads_decode(p, b1.data, b1.len, &cs, &nc, &err) != 0)
		die("decode of a re-encoded state", err.msg);
	if (vm__threads_encode(cs, nc, &b2) != 0 || b1.len != b2.len ||
	    memcmp(b1.data, b2.data, b1.len) != 0)
		die("encode/decode not inverse", NULL);
	for (size_t i = 0; i < nc; i++)
		vm__thread_free(cs[i]);
	free(cs);
	fl_buf_close(&b1);
	fl_buf_close(&b2);
}

/* What the VM made of them: every thread now, decoded ones and those
 * their spawns made, still encodes to a state the decoder takes. */
static void check_after_run(struct handrun *h, struct vm_thread *const *ds,
			    size_t nd)
{
	struct vm_proc *p = h->p;
	size_t cap = nd + p->nthreads, n = 0;
	struct vm_thread **all = malloc((cap ? cap : 1) * sizeof *all);

	if (all == NULL)
		return;
	for (size_t i = 0; i < nd; i++)
		all[n++] = ds[i];
	for (size_t i = 0; i < p->threads_cap; i++)
		if (p->threads[i] != NULL && n < cap)
			all[n++] = p->threads[i];
	check_stable(p, all, n);
	stats.rechecked++;
	free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_thread **ts;
	struct handrun h;
	struct fl_err err;
	vm_word first;
	size_t len, n;
	uint8_t *buf;
	bool check;

	if (size == 0)
		return 0;
	stats.inputs++;
	buf = make_input(data, size, &len, &check);
	if (buf == NULL)
		return 0;
	open_proc(&h, check);
	if (vm__threads_decode(h.p, buf, len, &ts, &n, &err) != 0) {
		hr_close(&h);
		free(buf);
		return 0;
	}
	stats.decoded++;
	stats.threads += n;
	check_stable(h.p, ts, n);
	/* Run them; threads they spawn take ids none of them has. */
	if ((first = free_tids(ts, n)) == 0)
		goto out;
	atomic_store(&h.p->next_tid, first);
	for (size_t i = 0; i < n; i++)
		if (atomic_load(&ts[i]->state) != VM_T_DONE)
			hr_adopt(&h, ts[i]);
	for (int s = 0; s < SLICES && !atomic_load(&h.p->ending); s++) {
		enum vm_stop how;
		if (!hr_step(&h, NULL, &how))
			break;
		stats.slices++;
	}
	if (!atomic_load(&h.p->ending))
		check_after_run(&h, ts, n);
out:
	vm__proc_abandon(h.p);
	for (size_t i = 0; i < n; i++)
		vm__thread_free(ts[i]);
	free(ts);
	hr_close(&h);
	free(buf);
	return 0;
}
