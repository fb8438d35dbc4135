/* The golden programs of tests/programs as unit tests see them (for
 * test_remote.c and test_dsm_gsrc.c, which run them over page sources of
 * their own): a program's directives read from its file as
 * tests/programs/test_programs.py reads them (expect, status, stderr,
 * args, flags, stdin; NAME.out), what a run produced, and the check of
 * one against the other, and a driver that runs a directory's programs
 * through a test's run function. Failures of the helpers themselves
 * abort the
 * binary with a line saying why. The only global state is the
 * watchdog's note of what runs (golden_running). */
#ifndef FLOCK_TESTS_UNIT_VM_GOLDEN_H
#define FLOCK_TESTS_UNIT_VM_GOLDEN_H

#include "unit_run.h"
#include "base/fl_buf.h"
#include "base/fl_error.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- Bounded time ----
 *
 * Each run must end within GOLDEN_RUN_SECONDS (alarm(); the watchdog
 * aborts the binary naming the run): far above what the slowest takes
 * under the sanitizers. */
#define GOLDEN_RUN_SECONDS 300

static char golden_running[400];   /* what runs now */
static const char *golden_binary;  /* the test binary's name */

static inline void golden_watchdog(int sig)
{
	static const char msg[] = ": no end within the time limit (hung?), "
				  "while running: ";
	ssize_t rc;

	(void)sig;
	rc = write(2, "\n", 1);
	rc = write(2, golden_binary, strlen(golden_binary));
	rc = write(2, msg, sizeof msg - 1);
	rc = write(2, golden_running, strnlen(golden_running, sizeof golden_running));
	rc = write(2, "\n", 1);
	(void)rc;
	abort();
}

/* A node of @cpus workers (unit_die when it cannot start them all). */
static inline struct vm_node *golden_node_new(uint32_t cpus)
{
	struct vm_node_options no;
	struct vm_node *n;
	struct fl_err err;

	vm_node_options_init(&no);
	no.cpus = cpus;
	if (vm_node_new(&no, &n, &err) != 0)
		unit_die("vm_node_new: %s", err.msg);
	if (vm_node_workers(n) != (int)cpus)
		unit_die("vm_node_new: %d workers, not %u", vm_node_workers(n),
			 cpus);
	return n;
}

/* What a run did. */
struct result {
	int status;
	char *out, *err;
	size_t out_len, err_len;
};

static inline void result_free(struct result *r)
{
	free(r->out);
	free(r->err);
}

/* A program and what it must do, from its directives (flockrun.py). */
struct spec {
	char name[300]; /* tests/programs/threads/NAME.fla */
	char *text;
	size_t len;
	struct fl_buf expect;
	int status;
	char *rx[8];
	int nrx;
	char *args[8];
	int nargs;
	struct fl_buf in;
	bool has_in;
	uint32_t cpus; /* 0: not fixed by its flags */
	bool check;
	uint32_t max_depth, stack_words;
	uint64_t memory;
};

/* @o for running @s as its directives say (--check, limits, argv[0] its
 * name and its arguments after), on --debug-migrate when @migrate.
 * @argv needs room for its arguments and a NULL. */
static inline void golden_options(const struct spec *s, struct vm_options *o,
				  char **argv, bool migrate)
{
	vm_options_init(o);
	o->check = s->check;
	if (s->max_depth)
		o->max_depth = s->max_depth;
	if (s->stack_words)
		o->stack_words = s->stack_words;
	o->memory = s->memory;
	o->migrate = migrate;
	argv[0] = (char *)s->name;
	for (int k = 0; k < s->nargs; k++)
		argv[k + 1] = s->args[k];
	argv[s->nargs + 1] = NULL;
	o->argc = s->nargs + 1;
	o->argv = argv;
}


static inline char *root_path(const char *rel)
{
	/* This file is ROOT/tests/unit/vm/golden.h as the compiler saw
	 * it; the tests run from ROOT, which make does. */
	static const char me[] = __FILE__, tail[] = "tests/unit/vm/golden.h";
	size_t n = strlen(me) - strlen(tail);
	char *s;

	if (strlen(me) < strlen(tail) || strcmp(&me[n], tail) != 0)
		n = 0;
	s = malloc(n + strlen(rel) + 1);
	if (s == NULL)
		unit_die("out of memory");
	memcpy(s, me, n);
	strcpy(s + n, rel);
	return s;
}

static inline uint32_t flag_count(const struct spec *s, const char *flag,
			   const char *v)
{
	char *end;
	unsigned long n;

	if (v == NULL)
		unit_die("%s: %s needs a value", s->name, flag);
	n = strtoul(v, &end, 10);
	if (*end != 0 || n == 0 || n > UINT32_MAX)
		unit_die("%s: %s %s", s->name, flag, v);
	return (uint32_t)n;
}

/* N, NKiB, NMiB or NGiB */
static inline uint64_t flag_size(const struct spec *s, const char *flag, const char *v)
{
	char *end;
	unsigned long long n;

	if (v == NULL)
		unit_die("%s: %s needs a value", s->name, flag);
	n = strtoull(v, &end, 10);
	if (strcmp(end, "KiB") == 0)
		n <<= 10;
	else if (strcmp(end, "MiB") == 0)
		n <<= 20;
	else if (strcmp(end, "GiB") == 0)
		n <<= 30;
	else if (*end != 0)
		unit_die("%s: %s %s", s->name, flag, v);
	return n;
}

static inline void spec_flags(struct spec *s, char *val)
{
	char *save = NULL;

	for (char *f = strtok_r(val, " \t", &save); f != NULL;
	     f = strtok_r(NULL, " \t", &save)) {
		if (strcmp(f, "--check") == 0)
			s->check = true;
		else if (strcmp(f, "--cpus") == 0)
			s->cpus = flag_count(s, f, strtok_r(NULL, " \t", &save));
		else if (strcmp(f, "--call-depth") == 0)
			s->max_depth = flag_count(s, f, strtok_r(NULL, " \t", &save));
		else if (strcmp(f, "--stack-words") == 0)
			s->stack_words = flag_count(s, f, strtok_r(NULL, " \t", &save));
		else if (strcmp(f, "--memory") == 0)
			s->memory = flag_size(s, f, strtok_r(NULL, " \t", &save));
		else
			unit_die("%s: flag %s is not supported here", s->name, f);
	}
}

/* One directive line: "NAME: TEXT" after ';' (one leading space off). */
static inline void spec_line(struct spec *s, char *line)
{
	static const char *const keys[] = {"expect", "status", "stderr",
					   "args", "flags", "stdin"};
	char *p = line;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != ';')
		return;
	p++;
	while (*p == ' ' || *p == '\t')
		p++;
	for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
		size_t kl = strlen(keys[k]);
		if (strncmp(p, keys[k], kl) != 0 || p[kl] != ':')
			continue;
		char *val = p + kl + 1;
		if (*val == ' ')
			val++;
		switch (k) {
		case 0:
			fl_buf_put(&s->expect, val, strlen(val));
			fl_buf_put_u8(&s->expect, '\n');
			break;
		case 1:
			s->status = atoi(val);
			break;
		case 2:
			if (s->nrx == 8)
				unit_die("%s: too many stderr lines", s->name);
			s->rx[s->nrx++] = unit_xstrdup(val);
			break;
		case 3: {
			char *save = NULL;
			for (char *a = strtok_r(val, " \t", &save); a != NULL;
			     a = strtok_r(NULL, " \t", &save)) {
				if (s->nargs == 8)
					unit_die("%s: too many args", s->name);
				s->args[s->nargs++] = unit_xstrdup(a);
			}
			break;
		}
		case 4:
			spec_flags(s, val);
			break;
		case 5:
			if (s->has_in)
				fl_buf_put_u8(&s->in, '\n');
			fl_buf_put(&s->in, val, strlen(val));
			s->has_in = true;
			break;
		}
		return;
	}
}

static inline void spec_load(struct spec *s, const char *dir, const char *file)
{
	struct fl_err err;
	uint8_t *bytes;
	size_t len;
	char *path, *out;

	memset(s, 0, sizeof *s);
	fl_buf_init(&s->expect);
	fl_buf_init(&s->in);
	snprintf(s->name, sizeof s->name, "%s/%s", dir, file);
	path = root_path(s->name);
	if (fl_read_file(path, &bytes, &len, &err) != 0)
		unit_die("%s", err.msg);
	s->text = (char *)bytes;
	s->len = len;
	for (char *line = s->text; line < s->text + len;) {
		char *nl = memchr(line, '\n', (size_t)(s->text + len - line));
		size_t k = nl ? (size_t)(nl - line) : (size_t)(s->text + len - line);
		char *copy = malloc(k + 1);
		if (copy == NULL)
			unit_die("out of memory");
		memcpy(copy, line, k);
		copy[k] = 0;
		spec_line(s, copy);
		free(copy);
		line += k + 1;
	}
	if (s->has_in)
		fl_buf_put_u8(&s->in, '\n');
	/* NAME.out replaces the expect lines */
	out = malloc(strlen(path) + 1);
	if (out == NULL)
		unit_die("out of memory");
	strcpy(out, path);
	strcpy(out + strlen(out) - 4, ".out");
	if (access(out, F_OK) == 0) {
		if (fl_read_file(out, &bytes, &len, &err) != 0)
			unit_die("%s", err.msg);
		s->expect.len = 0;
		fl_buf_put(&s->expect, bytes, len);
		free(bytes);
	}
	free(out);
	free(path);
	if (fl_buf_failed(&s->expect) || fl_buf_failed(&s->in))
		unit_die("out of memory");
}

static inline void spec_free(struct spec *s)
{
	free(s->text);
	for (int i = 0; i < s->nrx; i++)
		free(s->rx[i]);
	for (int i = 0; i < s->nargs; i++)
		free(s->args[i]);
	fl_buf_close(&s->expect);
	fl_buf_close(&s->in);
}

/* Problems of @r against @s, as test_programs.py's check_once finds
 * them, appended to @why; how many. */
static inline int check(const struct spec *s, const struct result *r,
		 struct fl_buf *why)
{
	int n = 0;

	if (r->status != s->status) {
		fl_buf_printf(why, "    status %d, expected %d\n", r->status,
			      s->status);
		n++;
	}
	if (r->out_len != s->expect.len ||
	    (r->out_len > 0 && memcmp(r->out, s->expect.data, r->out_len))) {
		fl_buf_printf(why, "    stdout differs:\n--- expected\n%.*s"
			      "--- got\n%s\n", (int)s->expect.len,
			      (const char *)s->expect.data, r->out);
		n++;
	}
	if (s->nrx > 0) {
		size_t pos = 0;
		for (int i = 0; i < s->nrx; i++)
			if (!unit_rx_search(s->rx[i], r->err, r->err_len, &pos)) {
				fl_buf_printf(why, "    stderr does not match /%s/ "
					      "(after offset %zu)\n", s->rx[i], pos);
				n++;
				break;
			}
	} else if (r->err_len > 0) {
		fl_buf_printf(why, "    unexpected stderr\n");
		n++;
	}
	if (n > 0)
		fl_buf_printf(why, "--- stderr\n%s\n", r->err);
	return n;
}

static inline int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .fla files of @dir (under the repository root), sorted. */
static inline char **list_programs(const char *dir, size_t *n)
{
	char *path = root_path(dir);
	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t cap = 0;

	if (d == NULL)
		unit_die("%s: %s", path, strerror(errno));
	*n = 0;
	while ((e = readdir(d)) != NULL) {
		size_t k = strlen(e->d_name);
		if (k < 5 || strcmp(e->d_name + k - 4, ".fla") != 0)
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof *names);
			if (names == NULL)
				unit_die("out of memory");
		}
		names[(*n)++] = unit_xstrdup(e->d_name);
	}
	closedir(d);
	free(path);
	qsort(names, *n, sizeof *names, by_name);
	return names;
}

/* Check what a run of @s gave (@r, freed here): 1 when it differs, said
 * with what golden_running names, else 0. */
static inline int golden_report(const struct spec *s, struct result *r,
				struct fl_buf *why)
{
	int failed = check(s, r, why) > 0;

	if (failed) {
		printf("  FAILED %s\n%s", golden_running, (const char *)why->data);
		why->len = 0;
	}
	result_free(r);
	return failed;
}

/* ---- Running a directory's programs ---- */

#define GOLDEN_MAX_CPUS 8

/* How a test's page source runs one program: its delay profile (the
 * test's own struct; NULL: the program is skipped, for @why), how many
 * seeds, and on how many workers only (0: each the pass asks). */
struct golden_plan {
	const char *file;
	const void *prof;
	int seeds;
	uint32_t cpus;
	const char *why;
};

/* How golden_run_dir runs a directory's programs: on nodes of each of the
 * @ncpus worker counts in @cpus (or the one a program's flags choose),
 * with seeds 1 .. its plan's (at most @max_seeds), its plan's profile
 * unless @prof says; @migrate as --debug-migrate, and then only those
 * without a plan's note or --cpus of their own (as test_programs.py). */
struct golden_pass {
	const uint32_t *cpus;
	int ncpus;
	int max_seeds;
	const void *prof;
	bool migrate;
};

/* The test's side: its plans, its profiles' names, and one run of a
 * program on @node under @prof with @seed into @r. @only and @verbose
 * name its environment variables (run only programs whose file holds
 * the text; say how long each took), @over what the runs go over. */
struct golden_driver {
	struct golden_plan (*plan)(const char *file);
	const char *(*prof_name)(const void *prof);
	void (*run)(void *ctx, struct vm_node *node, const struct vm_module *m,
		    const struct vm_options *o, const char *in, size_t in_len,
		    const void *prof, uint64_t seed, struct result *r);
	void *ctx;
	const char *only, *verbose, *over;
};

static inline uint64_t golden_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Every program of @dir as @ps says, through @dr: how many runs differ,
 * each reported. */
static inline int golden_run_dir(const char *dir, const struct golden_pass *ps,
				  const struct golden_driver *dr)
{
	struct vm_node *nodes[GOLDEN_MAX_CPUS + 1] = {NULL};
	const char *only = getenv(dr->only);
	bool verbose = getenv(dr->verbose) != NULL;
	int failures = 0, runs = 0;
	size_t nprog;
	char **files = list_programs(dir, &nprog);
	struct fl_buf why;

	fl_buf_init(&why);
	for (size_t i = 0; i < nprog; i++) {
		struct golden_plan pl = dr->plan(files[i]);
		const void *pr = ps->prof != NULL ? ps->prof : pl.prof;
		uint32_t fixed[1];
		const uint32_t *cs = ps->cpus;
		int ncs = ps->ncpus;
		uint64_t t0 = golden_now_ns();
		struct spec s;
		struct vm_module *m;
		struct vm_options o;
		char *argv[10];

		if (only != NULL && strstr(files[i], only) == NULL) {
			free(files[i]);
			continue;
		}
		if (pl.prof == NULL) {
			printf("  skipped %s/%s: %s\n", dir, files[i], pl.why);
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
			if (s.cpus > GOLDEN_MAX_CPUS)
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
					 dr->prof_name(pr), seed);
				alarm(GOLDEN_RUN_SECONDS);
				dr->run(dr->ctx, nodes[cs[c]], m, &o,
					(const char *)s.in.data, s.in.len, pr,
					(uint64_t)seed, &r);
				alarm(0);
				runs++;
				failures += golden_report(&s, &r, &why);
			}
		}
		if (verbose)
			printf("  %s: %.2f s\n", s.name,
			       (double)(golden_now_ns() - t0) / 1e9);
		vm_module_free(m);
		spec_free(&s);
		free(files[i]);
	}
	free(files);
	fl_buf_close(&why);
	for (int c = 0; c <= GOLDEN_MAX_CPUS; c++)
		vm_node_free(nodes[c]);
	printf("  %s (%s%s): %d runs over %s, %d failed\n", dir,
	       ps->prof != NULL ? dr->prof_name(ps->prof) : "plans",
	       ps->migrate ? ", migrate" : "", runs, dr->over, failures);
	return failures;
}

#endif
