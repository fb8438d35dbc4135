/* Unit tests for the node (vm_node.c, vm_sched.c) and the life of the
 * processes it hosts (vm_proc.c): two nodes in one OS process running
 * programs at once; one node running sixteen different processes started
 * together; a process ending (exit, runtime error, deadlock) while
 * another on the same node runs on, and freed meanwhile; a thread parked
 * on an outside request (a tiny page source answered from another OS
 * thread or from a timer) is never taken for a deadlock, while a real one
 * is still found when nothing is pending; the inbox runs events in the
 * order posted and timers in due order, a stopped timer never fires; a
 * node whose workers partly fail to start still runs programs and finds
 * deadlocks; vm_node_free once every process is freed.
 *
 * Programs are .fla text made here (printf templates), run with memfds or
 * pipes as stdio (unit_run.h). Where a test needs a process to be still
 * running at some point, it makes it wait for input the test has not
 * written yet, so nothing depends on timing; every wait is bounded, and a
 * watchdog aborts the binary naming the test if one ever hangs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "unit_run.h"
#include "vm/vm_gsrc.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CONTAINER(p, type, field)                                              \
	((type *)((char *)(p) - offsetof(type, field)))

/* ---- Programs ---- */

#define PRINTLN                                                                \
	"func println 1 0\n"                                                   \
	"        get 0\n"                                                      \
	"        printi\n"                                                     \
	"        push 1\n"                                                     \
	"        push nl\n"                                                    \
	"        push 1\n"                                                     \
	"        write\n"                                                      \
	"        drop\n"                                                       \
	"        push 0\n"                                                     \
	"        ret\n"                                                        \
	"end\n"                                                                \
	".rodata\n"                                                            \
	"nl:     .bytes \"\\n\"\n"

/* T threads each add 1 to a global N times; main joins them, prints the
 * count (T*N) and returns S. */
static const char adders[] =
	".data\n"
	"count:  .word 0\n"
	".text\n"
	"func main 0 2\n"
	"        push %u\n" /* 8*T */
	"        alloc\n"
	"        set 1\n"
	"spawn:  get 0\n"
	"        push %u\n" /* T */
	"        ge\n"
	"        jnz joins\n"
	"        get 1\n"
	"        get 0\n"
	"        push 8\n"
	"        mul\n"
	"        add\n"
	"        spawn adder\n"
	"        st64\n"
	"        get 0\n"
	"        push 1\n"
	"        add\n"
	"        set 0\n"
	"        jmp spawn\n"
	"joins:  push 0\n"
	"        set 0\n"
	"join:   get 0\n"
	"        push %u\n" /* T */
	"        ge\n"
	"        jnz done\n"
	"        get 1\n"
	"        get 0\n"
	"        push 8\n"
	"        mul\n"
	"        add\n"
	"        ld64\n"
	"        join\n"
	"        drop\n"
	"        get 0\n"
	"        push 1\n"
	"        add\n"
	"        set 0\n"
	"        jmp join\n"
	"done:   push count\n"
	"        ld64\n"
	"        call println\n"
	"        drop\n"
	"        push %u\n" /* S */
	"        ret\n"
	"end\n"
	"func adder 0 1\n"
	"loop:   get 0\n"
	"        push %u\n" /* N */
	"        ge\n"
	"        jnz done\n"
	"        push count\n"
	"        push 1\n"
	"        xadd\n"
	"        drop\n"
	"        get 0\n"
	"        push 1\n"
	"        add\n"
	"        set 0\n"
	"        jmp loop\n"
	"done:   push 0\n"
	"        ret\n"
	"end\n" PRINTLN;

/* Prints K, then a child divides by zero: status 70. */
static const char crash[] =
	".text\n"
	"func main 0 0\n"
	"        push %u\n"
	"        call println\n"
	"        drop\n"
	"        spawn crash\n"
	"        join\n"
	"        ret\n"
	"end\n"
	"func crash 0 0\n"
	"        push 1\n"
	"        push 0\n"
	"        div\n"
	"        ret\n"
	"end\n" PRINTLN;

/* Prints K, then waits on a word nobody wakes: a deadlock. */
static const char deadlock[] =
	".data\n"
	"never:  .word 0\n"
	".text\n"
	"func main 0 0\n"
	"        push %u\n"
	"        call println\n"
	"        drop\n"
	"        push never\n"
	"        push 0\n"
	"        wait\n"
	"        push 0\n"
	"        ret\n"
	"end\n" PRINTLN;

/* Echoes one read of stdin, then a child exits with K while main waits
 * for good. */
static const char echo_exit[] =
	".data\n"
	"never:  .word 0\n"
	".text\n"
	"func main 0 2\n"
	"        push 256\n"
	"        alloc\n"
	"        set 0\n"
	"        push 0\n"
	"        get 0\n"
	"        push 256\n"
	"        read\n"
	"        set 1\n"
	"        push 1\n"
	"        get 0\n"
	"        get 1\n"
	"        write\n"
	"        drop\n"
	"        spawn quit\n"
	"        drop\n"
	"wait:   push never\n"
	"        push 0\n"
	"        wait\n"
	"        jmp wait\n"
	"end\n"
	"func quit 0 0\n"
	"        push %u\n"
	"        exit\n"
	"end\n";

/* Four children yield in a loop until main, having read a line of stdin,
 * sets go (on two workers, two of them are always queued meanwhile);
 * main prints how many came back (4) and the line. */
static const char spin_read[] =
	".data\n"
	"go:     .word 0\n"
	".text\n"
	"func main 0 6\n"
	"        spawn spin\n"
	"        set 2\n"
	"        spawn spin\n"
	"        set 3\n"
	"        spawn spin\n"
	"        set 4\n"
	"        spawn spin\n"
	"        set 5\n"
	"        push 256\n"
	"        alloc\n"
	"        set 0\n"
	"        push 0\n"
	"        get 0\n"
	"        push 256\n"
	"        read\n"
	"        set 1\n"
	"        push go\n"
	"        push 1\n"
	"        xchg\n"
	"        drop\n"
	"        get 2\n"
	"        join\n"
	"        get 3\n"
	"        join\n"
	"        add\n"
	"        get 4\n"
	"        join\n"
	"        add\n"
	"        get 5\n"
	"        join\n"
	"        add\n"
	"        call println\n"
	"        drop\n"
	"        push 1\n"
	"        get 0\n"
	"        get 1\n"
	"        write\n"
	"        drop\n"
	"        push 0\n"
	"        ret\n"
	"end\n"
	"func spin 0 0\n"
	"loop:   push go\n"
	"        push 0\n"
	"        xadd\n"
	"        jnz done\n"
	"        yield\n"
	"        jmp loop\n"
	"done:   push 1\n"
	"        ret\n"
	"end\n" PRINTLN;

/* A module from template @fmt and its numbers, named "node_test.fla"
 * (which stderr patterns name). */
static struct vm_module *program(const char *fmt, ...)
{
	char text[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof text)
		unit_die("program text too long");
	return unit_assemble("node_test.fla", text, (size_t)n);
}

/* ---- Running them ---- */

struct run {
	struct vm_module *m;
	struct vm_proc *p;
	struct unit_io io;
	int feed;   /* write end of a stdin pipe, or -1 */
	int status; /* once waited for */
	char *out, *err;
	size_t out_len, err_len;
};

static struct vm_node *node_new(uint32_t cpus)
{
	struct vm_node_options no;
	struct vm_node *n;
	struct fl_err err;

	vm_node_options_init(&no);
	no.cpus = cpus;
	if (vm_node_new(&no, &n, &err) != 0)
		unit_die("vm_node_new: %s", err.msg);
	assert_int_equal(vm_node_workers(n), (int)cpus);
	return n;
}

/* Start @r->m on @n with @in as stdin, or with a pipe the test feeds
 * later (@piped). */
static void start(struct vm_node *n, struct run *r, const char *in,
		  bool piped)
{
	struct vm_options o;
	struct fl_err err;

	vm_options_init(&o);
	unit_io_open(&r->io, in, in ? strlen(in) : 0, &o);
	r->feed = -1;
	if (piped) {
		int fds[2];
		if (pipe(fds) != 0)
			unit_die("pipe: %s", strerror(errno));
		close(r->io.in);
		r->io.in = o.fd_in = fds[0];
		r->feed = fds[1];
	}
	if (vm_proc_start(n, r->m, &o, &r->p, &err) != 0)
		unit_die("vm_proc_start: %s", err.msg);
}

static void feed(struct run *r, const char *s)
{
	if (write(r->feed, s, strlen(s)) != (ssize_t)strlen(s))
		unit_die("pipe write: %s", strerror(errno));
	close(r->feed);
	r->feed = -1;
}

/* Wait for @r's process, read what it wrote and free it (and its
 * module). */
static void finish(struct run *r)
{
	r->status = vm_proc_wait(r->p);
	vm_proc_free(r->p);
	r->p = NULL;
	r->out = unit_fd_text(r->io.out, &r->out_len);
	r->err = unit_fd_text(r->io.err, &r->err_len);
	unit_io_close(&r->io);
	if (r->feed >= 0)
		close(r->feed);
	vm_module_free(r->m);
	r->m = NULL;
}

static void run_close(struct run *r)
{
	free(r->out);
	free(r->err);
}

/* @r ended with @status, stdout @out and stderr matching @rx (or
 * empty when NULL). */
static void expect(const struct run *r, int status, const char *out,
		   const char *rx)
{
	size_t pos = 0;
	bool err_ok = rx == NULL ? r->err_len == 0
				 : unit_rx_search(rx, r->err, r->err_len, &pos);

	if (r->status != status || strcmp(r->out, out) != 0 || !err_ok)
		print_error("status %d (want %d), stdout '%s' (want '%s'), "
			    "stderr '%s' (want /%s/)\n",
			    r->status, status, r->out, out, r->err,
			    rx ? rx : "");
	assert_int_equal(r->status, status);
	assert_string_equal(r->out, out);
	assert_true(err_ok);
}

/* Bounded waiting for something another thread does: true once @cond
 * holds, false after 30 s. */
#define WAIT_UNTIL(cond)                                                       \
	({                                                                     \
		bool ok_ = false;                                              \
		for (int i_ = 0; i_ < 30000 && !(ok_ = (cond)); i_++)          \
			usleep(1000);                                          \
		ok_;                                                           \
	})

static bool running(const struct vm_proc *p)
{
	return !atomic_load(&p->ending);
}

/* ---- Several nodes, several processes ---- */

/* Two nodes, each with a process waiting for input and one computing:
 * the computing ones end while the waiting ones are still there, on both
 * nodes; then one node's waiting process gets its input and ends, and
 * that node is freed while the other still hosts one, which then ends
 * right too. */
static void test_two_nodes(void **state)
{
	struct vm_node *x = node_new(2), *y = node_new(2);
	struct run wx = {.m = program(spin_read)}, wy = {.m = program(spin_read)};
	struct run cx = {.m = program(adders, 8 * 4, 4, 4, 3, 1000)};
	struct run cy = {.m = program(adders, 8 * 3, 3, 3, 5, 2000)};

	(void)state;
	start(x, &wx, NULL, true);
	start(y, &wy, NULL, true);
	start(x, &cx, NULL, false);
	start(y, &cy, NULL, false);
	finish(&cx);
	finish(&cy);
	expect(&cx, 3, "4000\n", NULL);
	expect(&cy, 5, "6000\n", NULL);
	assert_true(running(wx.p) && running(wy.p));
	feed(&wx, "to x\n");
	finish(&wx);
	expect(&wx, 0, "4\nto x\n", NULL);
	vm_node_free(x);
	assert_true(running(wy.p));
	feed(&wy, "to y\n");
	finish(&wy);
	expect(&wy, 0, "4\nto y\n", NULL);
	run_close(&wx);
	run_close(&wy);
	run_close(&cx);
	run_close(&cy);
	vm_node_free(y);
}

#define NPROC 16

/* Sixteen processes of four kinds, with different numbers, started
 * together on one node: every status, output and error line is its own. */
static void many_on(uint32_t cpus)
{
	struct vm_node *n = node_new(cpus);
	struct run r[NPROC] = {{0}};
	char in[NPROC][32], out[NPROC][64];

	for (unsigned k = 0; k < NPROC; k++) {
		unsigned t = k % 3 + 1, iters = 100 * k + 1;
		snprintf(in[k], sizeof in[k], "input %u\n", k);
		switch (k % 4) {
		case 0:
			r[k].m = program(adders, 8 * t, t, t, k, iters);
			snprintf(out[k], sizeof out[k], "%u\n", t * iters);
			break;
		case 1:
			r[k].m = program(crash, k);
			snprintf(out[k], sizeof out[k], "%u\n", k);
			break;
		case 2:
			r[k].m = program(deadlock, k);
			snprintf(out[k], sizeof out[k], "%u\n", k);
			break;
		case 3:
			r[k].m = program(echo_exit, k);
			snprintf(out[k], sizeof out[k], "input %u\n", k);
			break;
		}
	}
	for (unsigned k = 0; k < NPROC; k++)
		start(n, &r[k], in[k], false);
	for (unsigned k = NPROC; k-- > 0;) {
		finish(&r[k]);
		switch (k % 4) {
		case 0:
			expect(&r[k], (int)k, out[k], NULL);
			break;
		case 1:
			expect(&r[k], 70, out[k],
			       "\\Anode_test\\.fla:[0-9]+: runtime error: division "
			       "by zero \\(in function crash, thread 2\\)\\n\\Z");
			break;
		case 2:
			expect(&r[k], 70, out[k],
			       "\\Anode_test\\.fla:[0-9]+: runtime error: deadlock: "
			       "all 1 thread is blocked for good \\(in function "
			       "main, thread 1\\)\\n\\Z");
			break;
		case 3:
			expect(&r[k], (int)k, out[k], NULL);
			break;
		}
		run_close(&r[k]);
	}
	vm_node_free(n);
}

static void test_many_processes(void **state)
{
	(void)state;
	many_on(2);
	many_on(1);
}

/* A process ends (exit from a child, a runtime error, a deadlock) while
 * another on the same node runs -- its threads queued and spinning on
 * the same workers -- and is freed meanwhile; the other then finishes
 * right. */
static void test_end_while_other_runs(void **state)
{
	struct vm_node *n = node_new(2);
	struct run keep = {.m = program(spin_read)};
	struct run ex = {.m = program(echo_exit, 42)};
	struct run err = {.m = program(crash, 7)};
	struct run dl = {.m = program(deadlock, 9)};

	(void)state;
	start(n, &keep, NULL, true);
	start(n, &ex, "bye\n", false);
	start(n, &err, NULL, false);
	start(n, &dl, NULL, false);
	finish(&ex); /* freed while keep runs */
	expect(&ex, 42, "bye\n", NULL);
	assert_true(running(keep.p));
	finish(&err);
	expect(&err, 70, "7\n", "division by zero \\(in function crash");
	assert_true(running(keep.p));
	finish(&dl);
	expect(&dl, 70, "9\n", "deadlock: all 1 thread is blocked");
	assert_true(running(keep.p));
	feed(&keep, "still here\n");
	finish(&keep);
	expect(&keep, 0, "4\nstill here\n", NULL);
	run_close(&keep);
	run_close(&ex);
	run_close(&err);
	run_close(&dl);
	vm_node_free(n);
}

/* A node with a memory offer holds its processes under it together: with
 * 4 MiB for all, one holding 3 MiB leaves too little for another's 3 MiB
 * (a runtime error naming the offer), and once it ends there is room. */
static const char hold3[] =
	".text\n"
	"func main 0 1\n"
	"        push 3145728\n"
	"        alloc\n"
	"        set 0\n"
	"        push 0\n"
	"        get 0\n"
	"        push 1\n"
	"        read\n"
	"        drop\n"
	"        push 0\n"
	"        ret\n"
	"end\n";

static void test_node_memory_offer(void **state)
{
	struct vm_node_options no;
	struct vm_node *n;
	struct fl_err err;
	struct run a = {.m = program(hold3)}, b = {.m = program(hold3)},
		   c = {.m = program(hold3)};

	(void)state;
	vm_node_options_init(&no);
	no.cpus = 2;
	no.memory = 4u << 20;
	if (vm_node_new(&no, &n, &err) != 0)
		unit_die("vm_node_new: %s", err.msg);
	start(n, &a, NULL, true); /* holds 3 MiB until fed */
	/* a has its 3 MiB before b asks for as much */
	assert_true(WAIT_UNTIL(atomic_load(&n->budget.left) <= (1 << 20)));
	start(n, &b, "x", false);
	finish(&b);
	expect(&b, 70, "", "out of memory \\(.*this machine's memory for "
			  "processes, ram:, is 4 MiB\\)");
	assert_true(running(a.p));
	feed(&a, "x");
	finish(&a);
	expect(&a, 0, "", NULL);
	start(n, &c, "x", false);
	finish(&c);
	expect(&c, 0, "", NULL);
	run_close(&a);
	run_close(&b);
	run_close(&c);
	vm_node_free(n);
}

/* ---- Parking on an outside request ----
 *
 * A page source over the local one that serves slot OUTSIDE_SLOT from
 * "outside": a translation there parks the thread until the test answers
 * it with vm_gsrc_resume() -- from its own OS thread, or from a timer on
 * the node -- with the host address of a page of its own. */

#define OUTSIDE_SLOT 7

struct outside {
	struct vm_gsrc base;
	struct vm_gsrc *local;
	struct vm_node *node;
	bool by_timer;
	uint8_t *page;
	pthread_mutex_t lock;
	struct vm_thread *asked; /* parked on the outside, or NULL */
	int nasked, nanswered;
	struct vm_timer tm;
};

static struct outside *outside_of(struct vm_gsrc *g)
{
	return (struct outside *)g;
}

static void answer_event(struct vm_node *n, struct vm_event *ev)
{
	struct outside *O = CONTAINER(ev, struct outside, tm.ev);
	struct vm_thread *t;

	(void)n;
	pthread_mutex_lock(&O->lock);
	t = O->asked;
	O->asked = NULL;
	O->nanswered++;
	pthread_mutex_unlock(&O->lock);
	vm_gsrc_resume(t, 0, (vm_word)(uintptr_t)O->page);
}

static enum vm_res o_page(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, bool write, const char *what,
			  uint8_t **data, bool *cache)
{
	struct outside *O = outside_of(g);
	struct vm_thread *t;
	int32_t st;
	vm_word v;

	if (vm_gslot(addr) != OUTSIDE_SLOT)
		return O->local->ops->page(O->local, w, addr, n, write, what,
					   data, cache);
	if (vm_gsrc_reply(w, &st, &v)) {
		*data = (uint8_t *)(uintptr_t)v + (addr & (VM_PAGE_SIZE - 1));
		*cache = false;
		return VM_OK;
	}
	t = vm_gsrc_park(w, addr);
	pthread_mutex_lock(&O->lock);
	O->asked = t;
	O->nasked++;
	pthread_mutex_unlock(&O->lock);
	if (O->by_timer)
		vm_node_timer_start(O->node, &O->tm, 2000000);
	return VM_PARK;
}

static enum vm_res o_fence(struct vm_gsrc *g, struct vm_worker *w,
			   enum vm_fence kind)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->fence(l, w, kind);
}

static enum vm_res o_atomic(struct vm_gsrc *g, struct vm_worker *w,
			    enum vm_gop op, vm_word addr, vm_word a, vm_word b,
			    const char *what, vm_word *old)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->atomic(l, w, op, addr, a, b, what, old);
}

static enum vm_res o_wait(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word expected)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->wait(l, w, addr, expected);
}

static enum vm_res o_wake(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word n, vm_word *woken)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->wake(l, w, addr, n, woken);
}

static enum vm_res o_lock(struct vm_gsrc *g, struct vm_worker *w, vm_word addr,
			  vm_word *status)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->lock(l, w, addr, status);
}

static enum vm_res o_unlock(struct vm_gsrc *g, struct vm_worker *w,
			    vm_word addr)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->unlock(l, w, addr);
}

static enum vm_res o_alloc(struct vm_gsrc *g, struct vm_worker *w, vm_word n,
			   vm_word *addr)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->alloc(l, w, n, addr);
}

static enum vm_res o_free(struct vm_gsrc *g, struct vm_worker *w, vm_word addr)
{
	struct vm_gsrc *l = outside_of(g)->local;

	return l->ops->free(l, w, addr);
}

/* The test keeps the struct (it looks at it after the end). */
static void o_close(struct vm_gsrc *g)
{
	struct vm_gsrc *l = outside_of(g)->local;

	l->ops->close(l);
}

static const struct vm_gsrc_ops outside_ops = {
	.page = o_page,
	.fence = o_fence,
	.atomic = o_atomic,
	.wait = o_wait,
	.wake = o_wake,
	.lock = o_lock,
	.unlock = o_unlock,
	.alloc = o_alloc,
	.free = o_free,
	.close = o_close,
};

/* Loads a word from the outside page and prints it; then returns 0, or
 * (@stuck) waits on a word nobody wakes. */
static const char outside_prog[] =
	".data\n"
	"never:  .word 0\n"
	".text\n"
	"func main 0 0\n"
	"        push %" PRId64 "\n"
	"        ld64\n"
	"        call println\n"
	"        drop\n"
	"        push %d\n"
	"        jz done\n"
	"        push never\n"
	"        push 0\n"
	"        wait\n"
	"done:   push 0\n"
	"        ret\n"
	"end\n" PRINTLN;

/* Run outside_prog on @n with its source answered by @by_timer or by
 * this thread; @stuck as above. */
static void outside_run(struct vm_node *n, bool by_timer, bool stuck)
{
	vm_word addr = vm_gslot_base(OUTSIDE_SLOT) | (VM_PAGE_SIZE + 8);
	struct run r = {.m = program(outside_prog, (int64_t)addr, stuck)};
	struct outside O = {.base.ops = &outside_ops, .node = n,
			    .by_timer = by_timer};
	struct vm_options o;
	struct vm_thread *t;
	struct fl_err err;

	O.page = aligned_alloc(VM_PAGE_SIZE, VM_PAGE_SIZE);
	if (O.page == NULL)
		unit_die("out of memory");
	memset(O.page, 0, VM_PAGE_SIZE);
	uint64_t v = 4242;
	memcpy(O.page + 8, &v, 8);
	pthread_mutex_init(&O.lock, NULL);
	O.tm.idx = SIZE_MAX;
	O.tm.ev.fn = answer_event;
	vm_options_init(&o);
	unit_io_open(&r.io, NULL, 0, &o);
	r.feed = -1;
	if (vm__proc_new(n, r.m, &o, &r.p, &err) != 0)
		unit_die("vm__proc_new: %s", err.msg);
	O.local = r.p->gs;
	r.p->gs = &O.base;
	t = vm__thread_new(r.p, &r.p->x.funcs[vm_module_find_func(r.m, "main")],
			   NULL, 0, NULL);
	assert_non_null(t);
	vm__sched_push(n, NULL, t);
	if (!by_timer) {
		/* Asked, and parked for good on its worker: nothing of the
		 * process can run, only the request keeps it alive. */
		assert_true(WAIT_UNTIL(({
			pthread_mutex_lock(&O.lock);
			bool a_ = O.nasked == 1;
			pthread_mutex_unlock(&O.lock);
			a_;
		})));
		assert_true(WAIT_UNTIL(atomic_load(&t->pstate) == VM_P_PARKED));
		assert_true(running(r.p));
		usleep(20000); /* a wrong deadlock report has time to come */
		assert_true(running(r.p));
		pthread_mutex_lock(&O.lock);
		O.asked = NULL;
		O.nanswered++;
		pthread_mutex_unlock(&O.lock);
		vm_gsrc_resume(t, 0, (vm_word)(uintptr_t)O.page);
	}
	finish(&r);
	assert_int_equal(O.nasked, 1);
	assert_int_equal(O.nanswered, 1);
	if (stuck)
		expect(&r, 70, "4242\n",
		       "\\Anode_test\\.fla:13: runtime error: deadlock: all 1 "
		       "thread is blocked for good \\(in function main, thread "
		       "1\\)\\n\\Z");
	else
		expect(&r, 0, "4242\n", NULL);
	run_close(&r);
	pthread_mutex_destroy(&O.lock);
	free(O.page);
}

static void test_outside_request(void **state)
{
	struct vm_node *n1 = node_new(1), *n2 = node_new(2);

	(void)state;
	for (int stuck = 0; stuck <= 1; stuck++) {
		outside_run(n1, false, stuck);
		outside_run(n2, false, stuck);
		outside_run(n1, true, stuck);
		outside_run(n2, true, stuck);
	}
	vm_node_free(n1);
	vm_node_free(n2);
}

/* ---- Inbox and timers ---- */

#define NEV 200
#define NTIMERS 16
#define NSTOPPED 4

struct evlog {
	pthread_mutex_t lock;
	int *order;
	int n;
};

struct rec {
	struct vm_event ev;
	struct vm_timer tm;
	struct evlog *log;
	int id;
	struct rec *then; /* posted from this one's event */
};

static void log_id(struct evlog *log, int id)
{
	pthread_mutex_lock(&log->lock);
	log->order[log->n++] = id;
	pthread_mutex_unlock(&log->lock);
}

static void rec_fn(struct vm_node *n, struct vm_event *ev)
{
	struct rec *r = CONTAINER(ev, struct rec, ev);

	log_id(r->log, r->id);
	if (r->then != NULL)
		vm_node_post(n, &r->then->ev);
}

static void rec_timer_fn(struct vm_node *n, struct vm_event *ev)
{
	struct rec *r = CONTAINER(ev, struct rec, tm.ev);

	(void)n;
	log_id(r->log, r->id);
}

static int logged(struct evlog *log)
{
	int n;

	pthread_mutex_lock(&log->lock);
	n = log->n;
	pthread_mutex_unlock(&log->lock);
	return n;
}

static void log_init(struct evlog *log, int cap)
{
	pthread_mutex_init(&log->lock, NULL);
	log->order = calloc((size_t)cap, sizeof *log->order);
	assert_non_null(log->order);
	log->n = 0;
}

static void log_close(struct evlog *log)
{
	pthread_mutex_destroy(&log->lock);
	free(log->order);
}

/* Events run in the order posted (on one worker, one after the other),
 * also one an event posts; timers in the order they are due; a stopped
 * timer never fires, and stopping says whether it was armed. */
static void test_inbox_and_timers(void **state)
{
	struct vm_node *n = node_new(1);
	struct rec ev[NEV], tm[NTIMERS + NSTOPPED];
	struct evlog log;
	uint64_t seed = 12345;

	(void)state;
	log_init(&log, NEV);
	for (int i = 0; i < NEV; i++)
		ev[i] = (struct rec){.ev.fn = rec_fn, .log = &log, .id = i};
	ev[NEV - 2].then = &ev[NEV - 1]; /* posted by an event */
	for (int i = 0; i < NEV - 1; i++)
		vm_node_post(n, &ev[i].ev);
	assert_true(WAIT_UNTIL(logged(&log) == NEV));
	for (int i = 0; i < NEV; i++)
		assert_int_equal(log.order[i], i);
	log_close(&log);

	/* The stopped ones would be due before all the others (200 ms, the
	 * others 250..300 ms: ample time to stop them first): had one
	 * fired, it would have before the last of the others. */
	log_init(&log, NTIMERS + NSTOPPED + 1);
	for (int i = 0; i < NTIMERS + NSTOPPED; i++) {
		tm[i] = (struct rec){.log = &log, .id = i};
		tm[i].tm.ev.fn = rec_timer_fn;
		tm[i].tm.idx = SIZE_MAX;
	}
	assert_false(vm_node_timer_stop(n, &tm[NTIMERS].tm)); /* never armed */
	for (int i = NTIMERS; i < NTIMERS + NSTOPPED; i++) {
		vm_node_timer_start(n, &tm[i].tm, 200000000);
		assert_true(vm_node_timer_stop(n, &tm[i].tm));
		assert_false(vm_node_timer_stop(n, &tm[i].tm));
	}
	for (int i = 0; i < NTIMERS; i++) { /* delays in a shuffled order */
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		vm_node_timer_start(n, &tm[i].tm,
				    250000000 + (seed >> 33) % 50000000);
	}
	assert_true(WAIT_UNTIL(logged(&log) == NTIMERS));
	for (int k = 0; k < NTIMERS; k++)
		assert_true(log.order[k] < NTIMERS);
	for (int k = 1; k < NTIMERS; k++)
		assert_true(tm[log.order[k - 1]].tm.due <=
			    tm[log.order[k]].tm.due);
	for (int i = 0; i < NTIMERS; i++) /* fired: no longer armed */
		assert_false(vm_node_timer_stop(n, &tm[i].tm));
	/* a stopped timer may start again, and fires then */
	vm_node_timer_start(n, &tm[NTIMERS].tm, 0);
	assert_true(WAIT_UNTIL(logged(&log) == NTIMERS + 1));
	assert_int_equal(log.order[NTIMERS], NTIMERS);
	vm_node_free(n);
	assert_int_equal(log.n, NTIMERS + 1);
	log_close(&log);
}

#define NPOSTERS 4
#define NEACH 1000

struct poster {
	pthread_t th;
	struct vm_node *node;
	struct rec *recs;
};

static void *post_all(void *arg)
{
	struct poster *ps = arg;

	for (int i = 0; i < NEACH; i++)
		vm_node_post(ps->node, &ps->recs[i].ev);
	return NULL;
}

/* Events posted from several OS threads at once to a node of several
 * workers all run, each once. */
static void test_inbox_many_posters(void **state)
{
	static struct rec recs[NPOSTERS][NEACH];
	static int seen[NPOSTERS * NEACH];
	struct vm_node *n = node_new(3);
	struct poster ps[NPOSTERS];
	struct evlog log;

	(void)state;
	log_init(&log, NPOSTERS * NEACH);
	memset(seen, 0, sizeof seen);
	for (int p = 0; p < NPOSTERS; p++) {
		for (int i = 0; i < NEACH; i++)
			recs[p][i] = (struct rec){.ev.fn = rec_fn, .log = &log,
						  .id = p * NEACH + i};
		ps[p] = (struct poster){.node = n, .recs = recs[p]};
	}
	for (int p = 0; p < NPOSTERS; p++)
		assert_int_equal(
			pthread_create(&ps[p].th, NULL, post_all, &ps[p]), 0);
	for (int p = 0; p < NPOSTERS; p++)
		pthread_join(ps[p].th, NULL);
	assert_true(WAIT_UNTIL(logged(&log) == NPOSTERS * NEACH));
	vm_node_free(n);
	for (int k = 0; k < NPOSTERS * NEACH; k++)
		seen[log.order[k]]++;
	for (int k = 0; k < NPOSTERS * NEACH; k++)
		assert_int_equal(seen[k], 1);
	log_close(&log);
}

/* ---- Workers that fail to start ---- */

/* Three of four workers fail: the node runs on one, finds a deadlock and
 * runs a program of several threads; all failing is an error. */
static void test_fail_workers(void **state)
{
	struct vm_node_options no;
	struct vm_node *n;
	struct fl_err err;
	struct run dl = {.m = program(deadlock, 3)};
	struct run ad = {.m = program(adders, 8 * 4, 4, 4, 0, 500)};
	struct run dj = {.m = program(crash, 5)};

	(void)state;
	vm_node_options_init(&no);
	no.cpus = 4;
	no.debug_fail_workers = 3;
	assert_int_equal(vm_node_new(&no, &n, &err), 0);
	assert_int_equal(vm_node_workers(n), 1);
	start(n, &dl, NULL, false);
	start(n, &ad, NULL, false);
	start(n, &dj, NULL, false);
	finish(&dl);
	finish(&ad);
	finish(&dj);
	expect(&dl, 70, "3\n", "deadlock: all 1 thread is blocked for good");
	expect(&ad, 0, "2000\n", NULL);
	expect(&dj, 70, "5\n", "division by zero");
	run_close(&dl);
	run_close(&ad);
	run_close(&dj);
	vm_node_free(n);

	no.cpus = 3;
	no.debug_fail_workers = 1;
	assert_int_equal(vm_node_new(&no, &n, &err), 0);
	assert_int_equal(vm_node_workers(n), 2);
	vm_node_free(n);

	no.debug_fail_workers = 3;
	n = (struct vm_node *)&no; /* must be cleared */
	assert_int_equal(vm_node_new(&no, &n, &err), FL_EIO);
	assert_null(n);
	assert_non_null(strstr(err.msg, "no worker thread could start"));
}

/* ---- The end of a node ---- */

/* A node is freed once every process on it is: after some ran at once,
 * after none ran, and NULL. Under ASan nothing of it may leak. */
static void test_node_free(void **state)
{
	struct vm_node *n = node_new(2);
	struct run r[3] = {{.m = program(adders, 8 * 2, 2, 2, 1, 100)},
			   {.m = program(crash, 2)},
			   {.m = program(echo_exit, 3)}};

	(void)state;
	for (int k = 0; k < 3; k++)
		start(n, &r[k], "x\n", false);
	for (int k = 0; k < 3; k++)
		finish(&r[k]);
	expect(&r[0], 1, "200\n", NULL);
	expect(&r[1], 70, "2\n", "division by zero");
	expect(&r[2], 3, "x\n", NULL);
	for (int k = 0; k < 3; k++)
		run_close(&r[k]);
	vm_node_free(n);
	vm_node_free(node_new(1));
	vm_node_free(NULL);
}

/* ---- Bounded time ---- */

/* A test still running after this long hangs: abort, under the name
 * cmocka printed last. */
#define TEST_SECONDS 120

static void watchdog(int sig)
{
	static const char msg[] = "\ntest_node: no end within the time limit "
				  "(hung?)\n";
	ssize_t rc;

	(void)sig;
	rc = write(2, msg, sizeof msg - 1);
	(void)rc;
	abort();
}

static int setup(void **state)
{
	(void)state;
	alarm(TEST_SECONDS);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	alarm(0);
	return 0;
}

#define TEST(f)                                                                \
	{                                                                      \
		#f, f, setup, teardown, NULL                                   \
	}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TEST(test_two_nodes),
		TEST(test_many_processes),
		TEST(test_end_while_other_runs),
		TEST(test_node_memory_offer),
		TEST(test_outside_request),
		TEST(test_inbox_and_timers),
		TEST(test_inbox_many_posters),
		TEST(test_fail_workers),
		TEST(test_node_free),
	};

	signal(SIGALRM, watchdog);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
