/* The DSM page source (src/dsm/dsm_gsrc.c), and the golden programs run
 * over it.
 *
 * A process runs as parts on DSM nodes, each a struct vm_proc with its
 * own source, in this OS process. For the golden programs: the program
 * runs on DSM node 1 ("A", a part off its origin, which gallocs in slot
 * 2 and homes it); DSM node 0 ("B") is the origin part, which runs no
 * thread but holds slot 0 -- the module's data (loaded into its master
 * copies and mapped there), its mapping, and the queues of every mutex
 * and wait word in it. So the programs' globals, mutex words and wait
 * words are B's, reached through messages; their gallocs are A's own.
 * Nothing is shared between the parts but messages: a delivery thread
 * (the "network") carries each one after a seeded random delay -- so
 * messages overtake each other, as the core's contract allows -- and
 * duplicates a few (which the core must apply once).
 *
 * The golden programs of tests/programs/threads and memory (directives
 * read from the files, golden.h) run on A with 1 and 2 workers and a few
 * seeds, once more on 2 workers with --debug-migrate, and those of
 * check/ and io/ on 2 workers: output, stderr patterns and status as the
 * local source gives them (the files say what that is) -- deadlocks
 * included: a thread queued at B's home counts as blocked on another
 * thread. Programs that are long chains of round trips get a plan of
 * their own (fewer seeds, one worker count, or fewer delays;
 * spinlock_xchg is skipped), with the reason. Every run is bounded by a
 * watchdog, and the counters must show that the DSM's paths were taken
 * (fetches, diffs, invalidations, atomics and sync ops at the home,
 * waiters queued there, duplicates dropped).
 *
 * Then programs whose threads run on two parts at once (test_parts):
 * the origin runs main, part 1 its own entry function, both over the
 * same module: a mutex taken by threads of both, wait and wake between
 * them, blocks of one part read and freed by the other (refused after
 * the free: at once for the freer, after an acquire for the one that
 * cached them), a free of what is not a block at another home, and a
 * store to read-only data homed elsewhere; each part's output, errors
 * and status as expected. The driver keeps each part's busy count
 * raised until the other one ended (dsm_gsrc.h, "Deadlocks").
 *
 * FLOCK_DSM_ONLY=TEXT runs only the programs whose name holds TEXT,
 * FLOCK_DSM_VERBOSE=1 times each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "dsm/dsm_gsrc.h"
#include "golden.h"
#include "simnet.h"
#include "unit_run.h"

#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- The network ---- */

/* How the network behaves: a delay is 0 for @zero_ppm parts per million
 * of the messages, else 1 ns .. @max_ns; @dup_ppm of them are delivered
 * twice (each copy its own delay). */
struct profile {
	const char *name;
	unsigned zero_ppm;
	uint64_t max_ns;
	unsigned dup_ppm;
	bool fifo; /* each direction delivers in the order it was given */
};

/* The default: half the delays 0, the rest up to 50 us; 2% twice. */
static const struct profile jitter = {"jitter", 500000, 50000, 20000, false};
/* Jitter on links that keep their order, as a connection does. */
static const struct profile fifo = {"fifo", 500000, 50000, 20000, true};
/* For long chains of round trips: one delay in 1000, up to 50 us. */
static const struct profile calm = {"calm", 999000, 50000, 1000, false};

#define NSEEDS 3

#define MAX_PARTS 3

struct net;

/* What a node's source sends through. */
struct port {
	struct net *N;
	int id;
};

struct net {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct sim_heap q; /* messages on their way */
	uint64_t seq, rng;
	int nodes;
	uint64_t last_due[MAX_PARTS][MAX_PARTS]; /* fifo: per link */
	const struct profile *prof;
	bool stop;
	struct vm_gsrc *src[MAX_PARTS];
	struct port port[MAX_PARTS];
	pthread_t th;
	uint64_t carried, doubled;
};

static uint64_t delay(struct net *N)
{
	uint64_t r = sim_splitmix(&N->rng);

	if (r % 1000000 < N->prof->zero_ppm)
		return 0;
	return 1 + (r >> 24) % N->prof->max_ns;
}

/* Every source's send: under that source's mutex. */
static void net_send(void *ctx, int to, const void *bytes, size_t len)
{
	struct port *pt = ctx;
	struct net *N = pt->N;
	int copies = 1;

	if (to < 0 || to >= N->nodes || to == pt->id)
		unit_die("dsm: node %d sends to node %d", pt->id, to);
	pthread_mutex_lock(&N->lock);
	if (sim_splitmix(&N->rng) % 1000000 < N->prof->dup_ppm) {
		copies = 2;
		N->doubled++;
	}
	for (int c = 0; c < copies; c++) {
		struct sim_msg m = {.due = sim_now_ns() + delay(N), .seq = N->seq++,
				.from = pt->id, .to = to, .len = len,
				.bytes = malloc(len)};
		if (m.bytes == NULL)
			unit_die("out of memory");
		if (N->prof->fifo) { /* ties go by @seq: in order */
			uint64_t *last = &N->last_due[pt->id][to];
			if (m.due < *last)
				m.due = *last;
			*last = m.due;
		}
		memcpy(m.bytes, bytes, len);
		sim_heap_push(&N->q, m);
	}
	N->carried++;
	pthread_cond_signal(&N->cond);
	pthread_mutex_unlock(&N->lock);
}

/* The most threads of one part seen parked on a reply (the source's
 * waiting op, which the VM counts as load), and the runs that ended
 * with status 0 and some still counted. */
static uint32_t max_waiting;
static unsigned waiting_left;

static void note_waiting(struct vm_gsrc *g)
{
	uint32_t n = g->ops->waiting(g);

	if (n > max_waiting)
		max_waiting = n;
}

static void *net_main(void *arg)
{
	struct net *N = arg;

	pthread_mutex_lock(&N->lock);
	while (!N->stop) {
		struct sim_msg m;
		if (N->q.n == 0) {
			pthread_cond_wait(&N->cond, &N->lock);
			continue;
		}
		if (N->q.v[0].due > sim_now_ns()) {
			uint64_t d = N->q.v[0].due;
			struct timespec ts = {(time_t)(d / 1000000000ull),
					      (long)(d % 1000000000ull)};
			pthread_cond_timedwait(&N->cond, &N->lock, &ts);
			continue;
		}
		m = sim_heap_pop(&N->q);
		pthread_mutex_unlock(&N->lock);
		note_waiting(N->src[m.to]);
		dsm_gsrc_deliver(N->src[m.to], m.from, m.bytes, m.len);
		free(m.bytes);
		pthread_mutex_lock(&N->lock);
	}
	pthread_mutex_unlock(&N->lock);
	return NULL;
}

/* The VM's layout: node 0 the origin (slot 0), node m the slot m + 1. */
static int home_of(void *ctx, uint64_t page)
{
	const struct net *N = ctx;

	return dsm_gsrc_slot_home(dsm_gsrc_page_slot(page), N->nodes);
}

static void net_init(struct net *N, const struct profile *prof, uint64_t seed,
		     int nodes)
{
	pthread_condattr_t ca;

	memset(N, 0, sizeof *N);
	N->prof = prof;
	N->nodes = nodes;
	N->rng = seed * 0xd1b54a32d192ed03ull;
	for (int i = 0; i < nodes; i++)
		N->port[i] = (struct port){N, i};
	pthread_mutex_init(&N->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&N->cond, &ca);
	pthread_condattr_destroy(&ca);
}

static void net_start(struct net *N)
{
	if (pthread_create(&N->th, NULL, net_main, N) != 0)
		unit_die("pthread_create");
}

/* Stop carrying (what is left is dropped: the process is over). */
static void net_close(struct net *N)
{
	pthread_mutex_lock(&N->lock);
	N->stop = true;
	pthread_cond_signal(&N->cond);
	pthread_mutex_unlock(&N->lock);
	pthread_join(N->th, NULL);
	sim_heap_close(&N->q);
	pthread_cond_destroy(&N->cond);
	pthread_mutex_destroy(&N->lock);
}

/* ---- Running a program over it ---- */

/* What the runs did, summed, so the tests can tell the paths were taken. */
static struct dsm_stats total_a, total_b;
static uint64_t total_doubled;

static void stats_add(struct dsm_stats *to, const struct dsm_stats *s)
{
	to->pages_fetched += s->pages_fetched;
	to->diffs_sent += s->diffs_sent;
	to->diff_bytes += s->diff_bytes;
	to->msgs_sent += s->msgs_sent;
	to->bytes_sent += s->bytes_sent;
	to->msgs_recv += s->msgs_recv;
	to->bytes_recv += s->bytes_recv;
	to->invalidations += s->invalidations;
	to->notes_sent += s->notes_sent;
	to->atomics_served += s->atomics_served;
	to->syncs_served += s->syncs_served;
	to->queued += s->queued;
	to->frees_served += s->frees_served;
	to->dups += s->dups;
	to->malformed += s->malformed;
	to->refused += s->refused;
}

static int64_t seg_pages(uint32_t len)
{
	return ((int64_t)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
}

/* One part of a process: a struct vm_proc of its own on a VM node, over
 * the DSM source of DSM node @id, its stdio memfds. */
struct part {
	int id;
	struct vm_proc *p;
	struct vm_gsrc *g;
	struct unit_io io;
};

static void part_new(struct part *pt, struct net *N, int id, struct vm_node *vn,
		     const struct vm_module *m, const struct vm_options *o0,
		     const char *in, size_t in_len)
{
	struct vm_options o = *o0;
	struct dsm_gsrc_config cfg = {
		.self = id,
		.nodes = N->nodes,
		.slot = dsm_gsrc_node_slot(id),
		.home = home_of,
		.home_ctx = N,
		.send = net_send,
		.send_ctx = &N->port[id],
	};
	struct fl_err err;

	pt->id = id;
	unit_io_open(&pt->io, in, in_len, &o);
	if (vm__proc_new(vn, m, &o, &pt->p, &err) != 0)
		unit_die("vm__proc_new: %s", err.msg);
	/* The local source's segment pages are never credited back (as a
	 * global space's are not). The origin's DSM source maps and
	 * charges its own: give those back there. Elsewhere the module's
	 * data is not this part's, but the charge stays, so that the
	 * budget left for galloc is what it is on one machine. */
	pt->p->gs->ops->close(pt->p->gs);
	if (id == 0)
		atomic_fetch_add(&pt->p->budget.left,
				 (int64_t)VM_PAGE_SIZE * (seg_pages(m->rodata_len) +
							  seg_pages(m->data_len)));
	if (dsm_gsrc_new(pt->p, &cfg, &pt->g, &err) != 0)
		unit_die("dsm_gsrc_new: %s", err.msg);
	pt->p->gs = pt->g;
	N->src[id] = pt->g;
}

/* Start @pt's first thread in @entry: its "main" (when it returns, the
 * part ends). */
static void part_start(struct part *pt, struct vm_node *vn, const char *entry)
{
	const struct vm_module *m = pt->p->m;
	int f = vm_module_find_func(m, entry);
	struct vm_thread *t;

	if (f < 0)
		unit_die("no function %s", entry);
	t = vm__thread_new(pt->p, &pt->p->x.funcs[f], NULL, 0, NULL);
	if (t == NULL)
		unit_die("%s thread: out of memory", entry);
	vm__sched_push(vn, NULL, t);
}

/* Free @pt (it is quiet: vm_proc_wait returned, or it never ran), then
 * its source's counters into @st, its output into @r. */
static void part_free(struct part *pt, struct dsm_stats *st, struct result *r)
{
	vm_proc_free(pt->p); /* closes the source: deliveries are dropped */
	if (st != NULL) {
		struct dsm_stats one;
		dsm_gsrc_stats(pt->g, &one);
		stats_add(st, &one);
	}
	if (r != NULL) {
		r->out = unit_fd_text(pt->io.out, &r->out_len);
		r->err = unit_fd_text(pt->io.err, &r->err_len);
	}
	unit_io_close(&pt->io);
}

/* Run @m's main on node @a as DSM node 1 (part 1), over a DSM whose
 * node 0 is the origin part, which runs nothing but homes the module's
 * data: @o's options, @in as stdin. */
static void run_dsm(struct vm_node *a, const struct vm_module *m,
		    const struct vm_options *o, const char *in, size_t in_len,
		    const struct profile *prof, uint64_t seed,
		    struct result *r)
{
	struct part A, B;
	struct net N;

	net_init(&N, prof, seed, 2);
	part_new(&B, &N, 0, a, m, o, "", 0);
	part_new(&A, &N, 1, a, m, o, in, in_len);
	net_start(&N);
	part_start(&A, a, "main");
	r->status = vm_proc_wait(A.p);
	if (r->status == 0 && A.g->ops->waiting(A.g) != 0)
		waiting_left++;
	part_free(&A, &total_a, r);
	vm__proc_abandon(B.p); /* it never ran */
	part_free(&B, &total_b, NULL);
	net_close(&N);
	dsm_gsrc_unref(A.g);
	dsm_gsrc_unref(B.g);
	total_doubled += N.doubled;
}

/* ---- The golden programs ---- */

/* How each program runs when not the default (jitter, every seed, every
 * worker count): those that are long chains of round trips the other
 * threads wait for run fewer times or with fewer delays, or they would
 * take minutes (a NULL profile skips the program). The reasons: what
 * costs a round trip here is an atomic (always at the home) and a miss after an acquire dropped the page. */
static const struct golden_plan plans[] = {
	{"counter_cas.fla", &calm, 1, 2,
	 "64000 contended cas, each a round trip to the home"},
	{"spawn_100k.fla", &calm, 1, 2,
	 "100000 spawns, each a release of main's writes (a diff, its ack) "
	 "and a join's acquire: 12 s a run at jitter"},
	{"mutex_counter.fla", &calm, 1, 0,
	 "8000 hand-offs of a mutex, each a release and an acquire that "
	 "drops the counter's page: 3 s a run at jitter"},
	{"mailbox.fla", &jitter, 1, 2,
	 "1000 items through a one-slot mailbox, a few round trips each: "
	 "1 s a run"},
	{"lock_fifo.fla", &fifo, NSEEDS, 0,
	 "its order argument (thread i is queued on the mutex before main "
	 "runs again) needs thread i's xadd reply to reach it before main's "
	 "later one: links that keep their order, as connections do"},
	{"spinlock_xchg.fla", NULL, 0, 0,
	 "16 threads spinning on xchg, every try a round trip to the "
	 "home and every win an acquire that refetches the counter's page: "
	 "12 million atomics for 16000 increments, 30 s on 2 workers, over "
	 "300 s under ASan (counter_* and mutex_counter cover the paths)"},
	{"counter_xadd.fla", &jitter, 1, 0,
	 "64 threads x 1000 xadd, each a round trip"},
	{"counter_xchg.fla", &jitter, 1, 0,
	 "64 threads x 1000 xchg, each a round trip"},
	{NULL, NULL, 0, 0, NULL},
};

static struct golden_plan plan_of(const char *file)
{
	for (size_t i = 0; plans[i].file != NULL; i++)
		if (strcmp(plans[i].file, file) == 0)
			return plans[i];
	return (struct golden_plan){file, &jitter, NSEEDS, 0, NULL};
}

static const char *prof_name(const void *prof)
{
	return ((const struct profile *)prof)->name;
}

static void run_one(void *ctx, struct vm_node *node, const struct vm_module *m,
		    const struct vm_options *o, const char *in, size_t in_len,
		    const void *prof, uint64_t seed, struct result *r)
{
	(void)ctx;
	run_dsm(node, m, o, in, in_len, prof, seed, r);
}

/* Every program of @dir over the DSM source, as @ps says (golden.h). */
static void run_dir(const char *dir, const struct golden_pass *ps)
{
	const struct golden_driver dr = {
		.plan = plan_of, .prof_name = prof_name, .run = run_one,
		.only = "FLOCK_DSM_ONLY", .verbose = "FLOCK_DSM_VERBOSE",
		.over = "the DSM source"};

	assert_int_equal(golden_run_dir(dir, ps, &dr), 0);
}

static void print_totals(void)
{
	printf("  node A: %" PRIu64 " fetches, %" PRIu64 " diffs (%" PRIu64
	       " bytes), %" PRIu64 " invalidations, %" PRIu64 " messages, %"
	       PRIu64 " duplicates dropped; node B: %" PRIu64 " atomics, %"
	       PRIu64 " sync ops, %" PRIu64 " queued, %" PRIu64
	       " duplicates dropped; %" PRIu64 " messages doubled\n",
	       total_a.pages_fetched, total_a.diffs_sent, total_a.diff_bytes,
	       total_a.invalidations, total_a.msgs_sent, total_a.dups,
	       total_b.atomics_served, total_b.syncs_served, total_b.queued,
	       total_b.dups, total_doubled);
}

/* The thread programs on 1 and 2 workers, and on 2 with every preempted
 * thread going through its serialised state. */
static void test_golden_threads(void **state)
{
	static const uint32_t one_two[] = {1, 2}, two[] = {2};
	const struct golden_pass all = {one_two, 2, NSEEDS, NULL, false};
	const struct golden_pass migrate = {two, 1, 1, NULL, true};

	(void)state;
	memset(&total_a, 0, sizeof total_a);
	memset(&total_b, 0, sizeof total_b);
	total_doubled = 0;
	max_waiting = 0;
	waiting_left = 0;
	run_dir("tests/programs/threads", &all);
	run_dir("tests/programs/threads", &migrate);
	print_totals();
	if (getenv("FLOCK_DSM_ONLY") != NULL)
		return;
	assert_true(total_a.pages_fetched > 0);
	assert_true(total_a.diffs_sent > 0);
	assert_true(total_a.invalidations > 0);
	assert_true(total_b.atomics_served > 0);
	assert_true(total_b.syncs_served > 0);
	assert_true(total_b.queued > 0);
	assert_true(total_doubled > 0);
	assert_true(total_a.dups + total_b.dups > 0);
	assert_int_equal(total_a.malformed + total_b.malformed, 0);
	assert_int_equal(total_a.refused + total_b.refused, 0);
	assert_true(max_waiting > 0);
	assert_int_equal(waiting_left, 0);
}

/* The memory programs on 1 and 2 workers -- galloc, copy and fill across
 * pages, globals, atomics -- and those of check/ (--check's faults) and
 * io/ (read into and write from global memory) on 2. */
static void test_golden_memory(void **state)
{
	static const uint32_t one_two[] = {1, 2}, two[] = {2};
	const struct golden_pass all = {one_two, 2, NSEEDS, NULL, false};
	const struct golden_pass once = {two, 1, 1, NULL, false};

	(void)state;
	memset(&total_a, 0, sizeof total_a);
	memset(&total_b, 0, sizeof total_b);
	total_doubled = 0;
	run_dir("tests/programs/memory", &all);
	run_dir("tests/programs/check", &once);
	run_dir("tests/programs/io", &once);
	print_totals();
	if (getenv("FLOCK_DSM_ONLY") != NULL)
		return;
	assert_true(total_a.pages_fetched > 0);
	assert_true(total_a.diffs_sent > 0);
	assert_int_equal(total_a.malformed + total_b.malformed, 0);
}

/* ---- Threads on two parts at once ---- */

/* A program whose origin part (node 0) runs main and whose part 1 runs
 * part1, and what each must give: status, stdout, a stderr pattern
 * (NULL: nothing on stderr). */
struct two {
	const char *name;
	const char *text;
	int status[2];
	const char *out[2];
	const char *err[2];
	uint64_t memory[2]; /* each part's --memory; 0: the default */
};

#define PARTS_PRINTLN                                                         \
	"func println 1 0\n"                                                  \
	"        get 0\n"                                                     \
	"        printi\n"                                                    \
	"        push 1\n"                                                    \
	"        push nl\n"                                                   \
	"        push 1\n"                                                    \
	"        write\n"                                                     \
	"        drop\n"                                                      \
	"        push 0\n"                                                    \
	"        ret\n"                                                       \
	"end\n"                                                               \
	".rodata\n"                                                           \
	"nl:     .bytes \"\\n\"\n"

/* wait until [@word] != 0, leaving it on the stack: LABEL is unique. */
#define PARTS_AWAIT(label, word)                                              \
	label ":  push " word "\n"                                            \
	"        push 0\n"                                                    \
	"        xadd\n"                                                      \
	"        dup\n"                                                       \
	"        jnz " label "_ok\n"                                          \
	"        drop\n"                                                      \
	"        push " word "\n"                                             \
	"        push 0\n"                                                    \
	"        wait\n"                                                      \
	"        jmp " label "\n"                                             \
	label "_ok:\n"

/* [@word] = @value (xchg: a release first), then wake its waiters. */
#define PARTS_SIGNAL(word, value)                                             \
	"        push " word "\n"                                             \
	"        push " value "\n"                                            \
	"        xchg\n"                                                      \
	"        drop\n"                                                      \
	"        push " word "\n"                                             \
	"        push 100\n"                                                  \
	"        wake\n"                                                      \
	"        drop\n"

/* [@word] = local 0 (xchg: a release first), then wake one waiter. */
#define PARTS_PUBLISH(word)                                                   \
	"        push " word "\n"                                             \
	"        get 0\n"                                                     \
	"        xchg\n"                                                      \
	"        drop\n"                                                      \
	"        push " word "\n"                                             \
	"        push 1\n"                                                    \
	"        wake\n"                                                      \
	"        drop\n"

static const struct two parts_programs[] = {
	{"parts_lock.fla",
	 /* 3 threads on each part x 200 increments of a plain counter
	  * under one mutex (homed at the origin, queued there); part 1
	  * then says so; the origin waits for it and prints the total,
	  * how often a holder read the mutex word (a plain load) as 0,
	  * and the word. */
	 ".data\n"
	 "m:      .word 0\n"
	 "count:  .word 0\n"
	 "done:   .word 0\n"
	 "zero:   .word 0\n"
	 ".text\n"
	 "func main 0 0\n"
	 "        call work\n"
	 "        drop\n"
	 PARTS_AWAIT("w", "done")
	 "        drop\n"
	 "        push count\n"
	 "        ld64\n"
	 "        call println\n"
	 "        drop\n"
	 "        push zero\n"
	 "        ld64\n"
	 "        call println\n"
	 "        drop\n"
	 "        push m\n"
	 "        ld64\n"
	 "        call println\n"
	 "        ret\n"
	 "end\n"
	 "func part1 0 0\n"
	 "        call work\n"
	 "        drop\n"
	 PARTS_SIGNAL("done", "1")
	 "        push 0\n"
	 "        ret\n"
	 "end\n"
	 "func work 0 2\n"
	 "        push 24\n"
	 "        alloc\n"
	 "        set 1\n"
	 "sp:     get 0\n"
	 "        push 3\n"
	 "        ge\n"
	 "        jnz js\n"
	 "        get 1\n"
	 "        get 0\n"
	 "        push 8\n"
	 "        mul\n"
	 "        add\n"
	 "        spawn worker\n"
	 "        st64\n"
	 "        get 0\n"
	 "        push 1\n"
	 "        add\n"
	 "        set 0\n"
	 "        jmp sp\n"
	 "js:     push 0\n"
	 "        set 0\n"
	 "jl:     get 0\n"
	 "        push 3\n"
	 "        ge\n"
	 "        jnz jd\n"
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
	 "        jmp jl\n"
	 "jd:     push 0\n"
	 "        ret\n"
	 "end\n"
	 "func worker 0 1\n"
	 "loop:   get 0\n"
	 "        push 200\n"
	 "        ge\n"
	 "        jnz out\n"
	 "        push m\n"
	 "        lock\n"
	 "        drop\n"
	 "        push m\n"
	 "        ld64\n"
	 "        jnz held\n"
	 "        push zero\n"
	 "        push 1\n"
	 "        xadd\n"
	 "        drop\n"
	 "held:   push count\n"
	 "        push count\n"
	 "        ld64\n"
	 "        push 1\n"
	 "        add\n"
	 "        st64\n"
	 "        push m\n"
	 "        unlock\n"
	 "        get 0\n"
	 "        push 1\n"
	 "        add\n"
	 "        set 0\n"
	 "        jmp loop\n"
	 "out:    push 0\n"
	 "        ret\n"
	 "end\n" PARTS_PRINTLN,
	 {0, 0},
	 {"1200\n0\n0\n", ""},
	 {NULL, NULL},
	 {0, 0}},
	{"parts_child_sees.fla",
	 /* A child sees what its parent's acquire let in: part 1 caches
	  * y's page (y 0), the origin then writes y and signals (a
	  * release), part 1's main takes the signal with an atomic (an
	  * acquire, y's page untouched after it) and spawns a child
	  * there, which reads y: 1, not its node's copy from before. The
	  * origin waits for part 1 to say it is done (its wait is at its
	  * own home): the driver holds a part's count up only while the
	  * other runs, and part 1's wake is an answer from the origin. */
	 ".data\n"
	 "flag:   .word 0\n"
	 "rd:     .word 0\n"
	 "done:   .word 0\n"
	 "        .zero 8192\n"
	 "y:      .word 0\n"
	 ".text\n"
	 "func main 0 0\n"
	 PARTS_AWAIT("w", "rd")
	 "        drop\n"
	 "        push y\n"
	 "        push 1\n"
	 "        st64\n"
	 PARTS_SIGNAL("flag", "1")
	 PARTS_AWAIT("w2", "done")
	 "        drop\n"
	 "        push 0\n"
	 "        ret\n"
	 "end\n"
	 "func part1 0 0\n"
	 "        push y\n"
	 "        ld64\n"
	 "        drop\n"
	 PARTS_SIGNAL("rd", "1")
	 PARTS_AWAIT("w", "flag")
	 "        drop\n"
	 "        spawn child\n"
	 "        join\n"
	 "        call println\n"
	 "        drop\n"
	 PARTS_SIGNAL("done", "1")
	 "        push 0\n"
	 "        ret\n"
	 "end\n"
	 "func child 0 0\n"
	 "        push y\n"
	 "        ld64\n"
	 "        ret\n"
	 "end\n" PARTS_PRINTLN,
	 {0, 0},
	 {"", "1\n"},
	 {NULL, NULL},
	 {0, 0}},
	{"parts_free_there.fla",
	 /* The origin's block, read on part 1 and freed there (a FREE to
	  * the origin): refused to part 1 at once, and to the origin. */
	 ".data\n"
	 "ptr:    .word 0\n"
	 "freed:  .word 0\n"
	 ".text\n"
	 "func main 0 1\n"
	 "        push 64\n"
	 "        galloc\n"
	 "        set 0\n"
	 "        get 0\n"
	 "        push 7\n"
	 "        st64\n"
	 PARTS_PUBLISH("ptr")
	 PARTS_AWAIT("w", "freed")
	 "        drop\n"
	 "        get 0\n"
	 "        ld64\n" /* <- error */
	 "        ret\n"
	 "end\n"
	 "func part1 0 1\n"
	 PARTS_AWAIT("w", "ptr")
	 "        set 0\n"
	 "        get 0\n"
	 "        ld64\n"
	 "        call println\n"
	 "        drop\n"
	 "        get 0\n"
	 "        free\n"
	 PARTS_SIGNAL("freed", "1")
	 "        get 0\n"
	 "        ld64\n" /* <- error */
	 "        ret\n"
	 "end\n" PARTS_PRINTLN,
	 {70, 70},
	 {"", "7\n"},
	 {"\\Aparts_free_there\\.fla:[0-9]+: runtime error: ld64 at unmapped "
	  "address 0x8000[0-9a-f]+ \\(in function main, thread 1\\)\\n\\Z",
	  "\\Aparts_free_there\\.fla:[0-9]+: runtime error: ld64 at unmapped "
	  "address 0x8000[0-9a-f]+ \\(in function part1, thread 1\\)\\n\\Z"},
	 {0, 0}},
	{"parts_free_here.fla",
	 /* Part 1's block (never written by part 1: the origin's copy of
	  * it is private, kept across acquires), written and read on the
	  * origin, freed at its home on part 1: gone for the origin after
	  * its next acquire. */
	 ".data\n"
	 "ptr:    .word 0\n"
	 "rd:     .word 0\n"
	 "gone:   .word 0\n"
	 ".text\n"
	 "func main 0 1\n"
	 PARTS_AWAIT("w", "ptr")
	 "        set 0\n"
	 "        get 0\n"
	 "        push 5\n"
	 "        st64\n"
	 "        fence\n"
	 "        get 0\n"
	 "        ld64\n"
	 "        call println\n"
	 "        drop\n"
	 PARTS_SIGNAL("rd", "1")
	 PARTS_AWAIT("w2", "gone")
	 "        drop\n"
	 "        get 0\n"
	 "        ld64\n" /* <- error */
	 "        ret\n"
	 "end\n"
	 "func part1 0 1\n"
	 "        push 64\n"
	 "        galloc\n"
	 "        set 0\n"
	 PARTS_PUBLISH("ptr")
	 PARTS_AWAIT("w", "rd")
	 "        drop\n"
	 "        get 0\n"
	 "        free\n"
	 PARTS_SIGNAL("gone", "1")
	 "        push 0\n"
	 "        ret\n"
	 "end\n" PARTS_PRINTLN,
	 {70, 0},
	 {"5\n", ""},
	 {"\\Aparts_free_here\\.fla:[0-9]+: runtime error: ld64 at unmapped "
	  "address 0x8001[0-9a-f]+ \\(in function main, thread 1\\)\\n\\Z",
	  NULL},
	 {0, 0}},
	{"parts_refused.fla",
	 /* A free at another home of what is not a block (an interior
	  * pointer into part 1's block), and a store to read-only data
	  * homed on the origin, from part 1. */
	 ".rodata\n"
	 "ro:     .word 3\n"
	 ".data\n"
	 "ptr:    .word 0\n"
	 ".text\n"
	 "func main 0 0\n"
	 PARTS_AWAIT("w", "ptr")
	 "        free\n" /* <- error */
	 "        push 0\n"
	 "        ret\n"
	 "end\n"
	 "func part1 0 0\n"
	 "        push 16\n"
	 "        galloc\n"
	 "        push 8\n"
	 "        add\n"
	 "        push ptr\n"
	 "        swap\n"
	 "        xchg\n"
	 "        drop\n"
	 "        push ptr\n"
	 "        push 1\n"
	 "        wake\n"
	 "        drop\n"
	 "        push ro\n"
	 "        push 4\n"
	 "        st64\n" /* <- error */
	 "        push 0\n"
	 "        ret\n"
	 "end\n" PARTS_PRINTLN,
	 {70, 70},
	 {"", ""},
	 {"\\Aparts_refused\\.fla:[0-9]+: runtime error: free of "
	  "0x8001[0-9a-f]+, which is not a live block \\(in function main, "
	  "thread 1\\)\\n\\Z",
	  "\\Aparts_refused\\.fla:[0-9]+: runtime error: st64 at read-only "
	  "address 0x8000000000001000 \\(in function part1, thread 1\\)\\n\\Z"},
	 {0, 0}},
	{"parts_cache.fla",
	 /* A part's copies of pages homed elsewhere count against its
	  * --memory: part 1 (256 KiB) reads a 400 KiB block homed at the
	  * origin, a word a page, and fails before the end; the origin,
	  * which only wrote it, ends 0 (after a while: see below). */
	 ".data\n"
	 "ptr:    .word 0\n"
	 ".text\n"
	 "func main 0 1\n"
	 "        push 409600\n"
	 "        galloc\n"
	 "        set 0\n"
	 "        get 0\n"
	 "        push 7\n"
	 "        push 409600\n"
	 "        fill\n"
	 PARTS_PUBLISH("ptr")
	 /* busy a while: the wake reaches part 1 before this part ends
	  * (the driver then stops holding part 1's count up) */
	 "        push 3000000\n"
	 "        set 0\n"
	 "bz:     get 0\n"
	 "        jz bzd\n"
	 "        get 0\n"
	 "        push 1\n"
	 "        sub\n"
	 "        set 0\n"
	 "        jmp bz\n"
	 "bzd:    push 0\n"
	 "        ret\n"
	 "end\n"
	 "func part1 0 2\n"
	 PARTS_AWAIT("w", "ptr")
	 "        set 0\n"
	 "rd:     get 1\n"
	 "        push 409600\n"
	 "        ge\n"
	 "        jnz done\n"
	 "        get 0\n"
	 "        get 1\n"
	 "        add\n"
	 "        ld64\n"
	 "        drop\n"
	 "        get 1\n"
	 "        push 4096\n"
	 "        add\n"
	 "        set 1\n"
	 "        jmp rd\n"
	 "done:   push 0\n"
	 "        ret\n"
	 "end\n" PARTS_PRINTLN,
	 {0, 70},
	 {"", ""},
	 {NULL,
	  "\\Aparts_cache\\.fla:[0-9]+: runtime error: out of memory \\(in "
	  "function part1, thread 1\\)\\n\\Z"},
	 {0, 256 << 10}},
};

/* Whether part @p ended (its status is decided). */
static bool part_ended(const struct part *pt)
{
	struct vm_proc_info info;

	vm_proc_info(pt->p, &info);
	return info.ended;
}

/* Run @t on two parts (a fresh node each, @cpus workers) and check each
 * against what it must give; the failures, described in @why. */
static int run_two(const struct two *t, uint32_t cpus, uint64_t seed,
		   struct fl_buf *why)
{
	struct vm_module *m = unit_assemble(t->name, t->text, strlen(t->text));
	struct vm_node *vn[2] = {golden_node_new(cpus), golden_node_new(cpus)};
	const char *entry[2] = {"main", "part1"};
	struct part pt[2];
	struct result r[2];
	struct vm_options o;
	bool held[2] = {true, true};
	int failed = 0;
	struct net N;

	vm_options_init(&o);
	net_init(&N, &jitter, seed, 2);
	for (int i = 0; i < 2; i++) {
		o.memory = t->memory[i]; /* 0: the default */
		part_new(&pt[i], &N, i, vn[i], m, &o, "", 0);
		/* Held up while the other part may still wake one of its
		 * threads: a deadlock needs both parts stuck. */
		vm__proc_busy_inc(pt[i].p);
	}
	net_start(&N);
	for (int i = 0; i < 2; i++)
		part_start(&pt[i], vn[i], entry[i]);
	while (held[0] || held[1]) {
		struct timespec ts = {0, 1000000};
		for (int i = 0; i < 2; i++)
			if (held[i] && part_ended(&pt[1 - i])) {
				held[i] = false;
				vm__proc_busy_dec(pt[i].p);
			}
		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < 2; i++)
		r[i].status = vm_proc_wait(pt[i].p);
	for (int i = 0; i < 2; i++)
		part_free(&pt[i], i == 0 ? &total_b : &total_a, &r[i]);
	net_close(&N);
	for (int i = 0; i < 2; i++) {
		size_t pos = 0;
		dsm_gsrc_unref(pt[i].g);
		if (r[i].status != t->status[i] || strcmp(r[i].out, t->out[i]) != 0 ||
		    (t->err[i] == NULL ? r[i].err_len != 0
				       : !unit_rx_search(t->err[i], r[i].err,
							 r[i].err_len, &pos))) {
			fl_buf_printf(why, "    part %d: status %d (expected %d), "
				      "stdout:\n%s--- stderr:\n%s---\n",
				      i, r[i].status, t->status[i], r[i].out,
				      r[i].err);
			failed++;
		}
		result_free(&r[i]);
		vm_node_free(vn[i]);
	}
	total_doubled += N.doubled;
	vm_module_free(m);
	return failed;
}

/* Each two-part program on 1 and 2 workers a part, seeds 1 .. NSEEDS. */
static void test_parts(void **state)
{
	const char *only = getenv("FLOCK_DSM_ONLY");
	int failures = 0, runs = 0, limited_runs = 0;
	struct fl_buf why;

	(void)state;
	memset(&total_a, 0, sizeof total_a);
	memset(&total_b, 0, sizeof total_b);
	total_doubled = 0;
	fl_buf_init(&why);
	for (size_t i = 0; i < sizeof parts_programs / sizeof parts_programs[0];
	     i++) {
		const struct two *t = &parts_programs[i];
		if (only != NULL && strstr(t->name, only) == NULL)
			continue;
		for (uint32_t cpus = 1; cpus <= 2; cpus++)
			for (int seed = 1; seed <= NSEEDS; seed++) {
				snprintf(golden_running, sizeof golden_running,
					 "%s on two parts of %u workers, seed %d",
					 t->name, cpus, seed);
				alarm(GOLDEN_RUN_SECONDS);
				runs++;
				limited_runs += t->memory[0] + t->memory[1] != 0;
				if (run_two(t, cpus, (uint64_t)seed, &why) > 0) {
					printf("  FAILED %s\n%s", golden_running,
					       (const char *)why.data);
					why.len = 0;
					failures++;
				}
				alarm(0);
			}
	}
	fl_buf_close(&why);
	printf("  %d runs on two parts, %d failed\n", runs, failures);
	print_totals();
	assert_int_equal(failures, 0);
	if (only != NULL)
		return;
	/* Both sides served: part 1 (A) the origin's frees of its blocks,
	 * the origin (B) sync ops and frees from part 1. */
	assert_true(total_b.syncs_served > 0 && total_b.queued > 0);
	assert_true(total_a.frees_served > 0 && total_b.frees_served > 0);
	assert_int_equal(total_a.malformed + total_b.malformed, 0);
	/* refused: a PAGE that found no memory, once in each run of the
	 * program with a limit */
	assert_int_equal(total_a.refused + total_b.refused, limited_runs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_memory),
		cmocka_unit_test(test_golden_threads),
		cmocka_unit_test(test_parts),
	};

	golden_binary = "test_dsm_gsrc";
	signal(SIGALRM, golden_watchdog);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
