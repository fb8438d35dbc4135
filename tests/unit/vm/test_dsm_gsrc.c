/* The DSM page source (src/dsm/dsm_gsrc.c), and the golden programs run
 * over it.
 *
 * The process runs on VM node A, whose DSM node (0) is its page source;
 * every page of its global memory is homed on DSM node 1 ("B"), a bare
 * struct dsm_node in this OS process that holds the master copies (the
 * module's data loaded into it with dsm_gsrc_load_home). Nothing is
 * shared between them but messages: a delivery thread (the "network")
 * carries each one after a seeded random delay -- so messages overtake
 * each other, as the core's contract allows -- and duplicates a few
 * (which the core must apply once). Node B is touched by that thread
 * only; A's source takes deliveries under its own mutex.
 *
 * The golden programs of tests/programs/threads and memory (directives
 * read from the files, golden.h) run on A with 1 and 2 workers and a few
 * seeds, once more on 2 workers with --debug-migrate, and those of
 * check/ and io/ on 2 workers: output, stderr patterns and status as the
 * local source gives them (the files say what that is). Programs that
 * are long chains of round trips get a plan of their own (fewer seeds,
 * one worker count, or fewer delays; spinlock_xchg is skipped), with
 * the reason. Every run is
 * bounded by a watchdog, and the counters must show that the DSM's paths
 * were taken (fetches, diffs, invalidations, atomics at the home,
 * duplicates dropped).
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

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct msg {
	uint64_t due, seq;
	int to;
	size_t len;
	uint8_t *bytes;
};

struct net {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct msg *heap; /* a min-heap on (due, seq) */
	size_t n, cap;
	uint64_t seq, rng;
	uint64_t last_due[2]; /* fifo: the latest due time to each node */
	const struct profile *prof;
	bool stop;
	struct dsm_node *home; /* node 1 */
	struct vm_gsrc *src;   /* node 0 */
	pthread_t th;
	uint64_t carried, doubled;
};

static bool before(const struct msg *a, const struct msg *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void heap_push(struct net *N, struct msg m)
{
	size_t i;

	if (N->n == N->cap) {
		N->cap = N->cap ? 2 * N->cap : 64;
		N->heap = realloc(N->heap, N->cap * sizeof *N->heap);
		if (N->heap == NULL)
			unit_die("out of memory");
	}
	i = N->n++;
	while (i > 0 && before(&m, &N->heap[(i - 1) / 2])) {
		N->heap[i] = N->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	N->heap[i] = m;
}

static struct msg heap_pop(struct net *N)
{
	struct msg top = N->heap[0], last = N->heap[--N->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= N->n)
			break;
		if (c + 1 < N->n && before(&N->heap[c + 1], &N->heap[c]))
			c++;
		if (!before(&N->heap[c], &last))
			break;
		N->heap[i] = N->heap[c];
		i = c;
	}
	if (N->n > 0)
		N->heap[i] = last;
	return top;
}

static uint64_t delay(struct net *N)
{
	uint64_t r = splitmix(&N->rng);

	if (r % 1000000 < N->prof->zero_ppm)
		return 0;
	return 1 + (r >> 24) % N->prof->max_ns;
}

/* io.send of both nodes: A's under its source's mutex, B's on the
 * delivery thread. */
static void net_send(void *ctx, int to, const void *bytes, size_t len)
{
	struct net *N = ctx;
	int copies = 1;

	pthread_mutex_lock(&N->lock);
	if (splitmix(&N->rng) % 1000000 < N->prof->dup_ppm) {
		copies = 2;
		N->doubled++;
	}
	for (int c = 0; c < copies; c++) {
		struct msg m = {.due = now_ns() + delay(N), .seq = N->seq++,
				.to = to, .len = len, .bytes = malloc(len)};
		if (m.bytes == NULL)
			unit_die("out of memory");
		if (N->prof->fifo) { /* ties go by @seq: in order */
			if (m.due < N->last_due[to])
				m.due = N->last_due[to];
			N->last_due[to] = m.due;
		}
		memcpy(m.bytes, bytes, len);
		heap_push(N, m);
	}
	N->carried++;
	pthread_cond_signal(&N->cond);
	pthread_mutex_unlock(&N->lock);
}

static void *net_main(void *arg)
{
	struct net *N = arg;

	pthread_mutex_lock(&N->lock);
	while (!N->stop) {
		struct msg m;
		if (N->n == 0) {
			pthread_cond_wait(&N->cond, &N->lock);
			continue;
		}
		if (N->heap[0].due > now_ns()) {
			uint64_t d = N->heap[0].due;
			struct timespec ts = {(time_t)(d / 1000000000ull),
					      (long)(d % 1000000000ull)};
			pthread_cond_timedwait(&N->cond, &N->lock, &ts);
			continue;
		}
		m = heap_pop(N);
		pthread_mutex_unlock(&N->lock);
		if (m.to == 1)
			dsm_deliver(N->home, 0, m.bytes, m.len);
		else
			dsm_gsrc_deliver(N->src, 1, m.bytes, m.len);
		free(m.bytes);
		pthread_mutex_lock(&N->lock);
	}
	pthread_mutex_unlock(&N->lock);
	return NULL;
}

static int home_of(void *ctx, uint64_t page)
{
	(void)ctx;
	(void)page;
	return 1; /* all of it on B */
}

static void home_wake(void *ctx, struct dsm_wait *w)
{
	(void)ctx;
	(void)w;
	unit_die("dsm: node B woke a caller it never had");
}

static void net_init(struct net *N, const struct profile *prof, uint64_t seed)
{
	struct dsm_config hc = {.self = 1, .nodes = 2, .home = home_of,
				.io = {.send = net_send, .wake = home_wake,
				       .ctx = N}};
	pthread_condattr_t ca;
	struct fl_err err;

	memset(N, 0, sizeof *N);
	N->prof = prof;
	N->rng = seed * 0xd1b54a32d192ed03ull;
	pthread_mutex_init(&N->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&N->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (dsm_node_new(&hc, &N->home, &err) != 0)
		unit_die("%s", err.msg);
}

static void net_start(struct net *N)
{
	if (pthread_create(&N->th, NULL, net_main, N) != 0)
		unit_die("pthread_create");
}

/* Stop carrying (what is left is dropped: the process is over). */
static void net_close(struct net *N, struct dsm_stats *home)
{
	pthread_mutex_lock(&N->lock);
	N->stop = true;
	pthread_cond_signal(&N->cond);
	pthread_mutex_unlock(&N->lock);
	pthread_join(N->th, NULL);
	while (N->n > 0)
		free(heap_pop(N).bytes);
	free(N->heap);
	dsm_stats(N->home, home);
	dsm_node_free(N->home);
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
	to->dups += s->dups;
	to->malformed += s->malformed;
	to->refused += s->refused;
}

static int64_t seg_pages(uint32_t len)
{
	return ((int64_t)len + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE;
}

/* Run @m on node @a over the DSM source, its memory homed on a fresh
 * node B: @o's options, @in as stdin. */
static void run_dsm(struct vm_node *a, const struct vm_module *m,
		    const struct vm_options *o0, const char *in, size_t in_len,
		    const struct profile *prof, uint64_t seed,
		    struct result *r)
{
	struct vm_options o = *o0;
	struct dsm_gsrc_config cfg = {.self = 0, .nodes = 2, .home = home_of};
	struct dsm_stats sa, sb;
	struct unit_io io;
	struct vm_proc *p;
	struct vm_thread *t;
	struct vm_gsrc *g;
	struct fl_err err;
	struct net N;

	net_init(&N, prof, seed);
	cfg.send = net_send;
	cfg.send_ctx = &N;
	unit_io_open(&io, in, in_len, &o);
	if (vm__proc_new(a, m, &o, &p, &err) != 0)
		unit_die("vm__proc_new: %s", err.msg);
	/* The local source's segment pages are never credited back (as a
	 * global space's are not): give them back, for the DSM source's
	 * stand-in charges its own. */
	p->gs->ops->close(p->gs);
	atomic_fetch_add(&p->budget.left, (int64_t)VM_PAGE_SIZE *
			 (seg_pages(m->rodata_len) + seg_pages(m->data_len)));
	if (dsm_gsrc_new(p, &cfg, &g, &err) != 0)
		unit_die("dsm_gsrc_new: %s", err.msg);
	if (dsm_gsrc_load_home(N.home, p, &err) != 0)
		unit_die("dsm_gsrc_load_home: %s", err.msg);
	p->gs = g;
	N.src = g;
	net_start(&N);
	t = vm__thread_new(p, &p->x.funcs[vm_module_find_func(m, "main")], NULL,
			   0, NULL);
	if (t == NULL)
		unit_die("main thread: out of memory");
	vm__sched_push(a, NULL, t);
	r->status = vm_proc_wait(p);
	vm_proc_free(p); /* closes the source: deliveries are dropped now */
	net_close(&N, &sb);
	dsm_gsrc_stats(g, &sa);
	dsm_gsrc_unref(g);
	stats_add(&total_a, &sa);
	stats_add(&total_b, &sb);
	total_doubled += N.doubled;
	r->out = unit_fd_text(io.out, &r->out_len);
	r->err = unit_fd_text(io.err, &r->err_len);
	unit_io_close(&io);
}

/* ---- The golden programs ---- */

/* How each program runs when not the default (jitter, every seed, every
 * worker count): those that are long chains of round trips the other
 * threads wait for run fewer times or with fewer delays, or they would
 * take minutes (a NULL profile skips the program). The reasons: what
 * costs a round trip here is an atomic (always at the home) and a miss after an acquire dropped the page. */
static const struct plan {
	const char *file;
	const struct profile *prof;
	int seeds;
	uint32_t cpus; /* only on this many workers; 0: on each */
	const char *why;
} plans[] = {
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
	 "skipped: 16 threads spinning on xchg, every try a round trip to the "
	 "home and every win an acquire that refetches the counter's page: "
	 "12 million atomics for 16000 increments, 30 s on 2 workers, over "
	 "300 s under ASan (counter_* and mutex_counter cover the paths)"},
	{"counter_xadd.fla", &jitter, 1, 0,
	 "64 threads x 1000 xadd, each a round trip"},
	{"counter_xchg.fla", &jitter, 1, 0,
	 "64 threads x 1000 xchg, each a round trip"},
	{NULL, NULL, 0, 0, NULL},
};

static struct plan plan_of(const char *file)
{
	for (size_t i = 0; plans[i].file != NULL; i++)
		if (strcmp(plans[i].file, file) == 0)
			return plans[i];
	return (struct plan){file, &jitter, NSEEDS, 0, NULL};
}

#define MAX_CPUS 8

/* How run_dir runs a directory: on each of @ncpus worker counts in
 * @cpus (or the one a program's flags choose), seeds 1 .. its plan's (at
 * most @max_seeds); @migrate as --debug-migrate, and then only programs
 * without a plan or --cpus of their own. */
struct pass {
	const uint32_t *cpus;
	int ncpus;
	int max_seeds;
	bool migrate;
};

static void run_dir(const char *dir, const struct pass *ps)
{
	struct vm_node *nodes[MAX_CPUS + 1] = {NULL};
	const char *only = getenv("FLOCK_DSM_ONLY");
	bool verbose = getenv("FLOCK_DSM_VERBOSE") != NULL;
	int failures = 0, runs = 0;
	size_t nprog;
	char **files = list_programs(dir, &nprog);
	struct fl_buf why;

	fl_buf_init(&why);
	for (size_t i = 0; i < nprog; i++) {
		struct plan pl = plan_of(files[i]);
		uint32_t fixed[1];
		const uint32_t *cs = ps->cpus;
		int ncs = ps->ncpus;
		uint64_t t0 = now_ns();
		struct spec s;
		struct vm_module *m;
		struct vm_options o;
		char *argv[10];

		if (only != NULL && strstr(files[i], only) == NULL) {
			free(files[i]);
			continue;
		}
		if (pl.prof == NULL) {
			printf("  %s/%s %s\n", dir, files[i], pl.why);
			free(files[i]);
			continue;
		}
		spec_load(&s, dir, files[i]);
		if (ps->migrate && (s.cpus || pl.why != NULL)) {
			spec_free(&s);
			free(files[i]);
			continue;
		}
		m = unit_assemble(s.name, s.text, s.len);
		golden_options(&s, &o, argv, ps->migrate);
		if (s.cpus) {
			if (s.cpus > MAX_CPUS)
				unit_die("%s: --cpus %u", s.name, s.cpus);
			fixed[0] = s.cpus;
			cs = fixed;
			ncs = 1;
		}
		for (int c = 0; c < ncs; c++) {
			if (pl.cpus != 0 && !s.cpus && cs[c] != pl.cpus)
				continue;
			if (nodes[cs[c]] == NULL)
				nodes[cs[c]] = golden_node_new(cs[c]);
			for (int seed = 1; seed <= pl.seeds && seed <= ps->max_seeds;
			     seed++) {
				struct result r;
				snprintf(golden_running, sizeof golden_running,
					 "%s on %u workers%s, %s seed %d",
					 s.name, cs[c],
					 ps->migrate ? " (migrate)" : "",
					 pl.prof->name, seed);
				alarm(GOLDEN_RUN_SECONDS);
				run_dsm(nodes[cs[c]], m, &o,
					(const char *)s.in.data, s.in.len, pl.prof,
					(uint64_t)seed, &r);
				alarm(0);
				runs++;
				if (check(&s, &r, &why) > 0) {
					printf("  FAILED %s\n%s", golden_running,
					       (const char *)why.data);
					why.len = 0;
					failures++;
				}
				result_free(&r);
			}
		}
		if (verbose)
			printf("  %s: %.2f s\n", s.name,
			       (double)(now_ns() - t0) / 1e9);
		vm_module_free(m);
		spec_free(&s);
		free(files[i]);
	}
	free(files);
	fl_buf_close(&why);
	for (int c = 0; c <= MAX_CPUS; c++)
		vm_node_free(nodes[c]);
	printf("  %s (%s): %d runs over the DSM source, %d failed\n", dir,
	       ps->migrate ? "migrate" : "plans", runs, failures);
	assert_int_equal(failures, 0);
}

static void print_totals(void)
{
	printf("  node A: %" PRIu64 " fetches, %" PRIu64 " diffs (%" PRIu64
	       " bytes), %" PRIu64 " invalidations, %" PRIu64 " messages, %"
	       PRIu64 " duplicates dropped; node B: %" PRIu64 " atomics, %"
	       PRIu64 " duplicates dropped; %" PRIu64 " messages doubled\n",
	       total_a.pages_fetched, total_a.diffs_sent, total_a.diff_bytes,
	       total_a.invalidations, total_a.msgs_sent, total_a.dups,
	       total_b.atomics_served, total_b.dups, total_doubled);
}

/* The thread programs on 1 and 2 workers, and on 2 with every preempted
 * thread going through its serialised state. */
static void test_golden_threads(void **state)
{
	static const uint32_t one_two[] = {1, 2}, two[] = {2};
	const struct pass all = {one_two, 2, NSEEDS, false};
	const struct pass migrate = {two, 1, 1, true};

	(void)state;
	memset(&total_a, 0, sizeof total_a);
	memset(&total_b, 0, sizeof total_b);
	total_doubled = 0;
	run_dir("tests/programs/threads", &all);
	run_dir("tests/programs/threads", &migrate);
	print_totals();
	if (getenv("FLOCK_DSM_ONLY") != NULL)
		return;
	assert_true(total_a.pages_fetched > 0);
	assert_true(total_a.diffs_sent > 0);
	assert_true(total_a.invalidations > 0);
	assert_true(total_b.atomics_served > 0);
	assert_true(total_doubled > 0);
	assert_true(total_a.dups + total_b.dups > 0);
	assert_int_equal(total_a.malformed + total_b.malformed, 0);
	assert_int_equal(total_a.refused + total_b.refused, 0);
}

/* The memory programs on 1 and 2 workers -- galloc, copy and fill across
 * pages, globals, atomics -- and those of check/ (--check's faults) and
 * io/ (read into and write from global memory) on 2. */
static void test_golden_memory(void **state)
{
	static const uint32_t one_two[] = {1, 2}, two[] = {2};
	const struct pass all = {one_two, 2, NSEEDS, false};
	const struct pass once = {two, 1, 1, false};

	(void)state;
	memset(&total_a, 0, sizeof total_a);
	memset(&total_b, 0, sizeof total_b);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_memory),
		cmocka_unit_test(test_golden_threads),
	};

	golden_binary = "test_dsm_gsrc";
	signal(SIGALRM, golden_watchdog);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
