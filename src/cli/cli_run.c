/* flock run: load (assembling if needed), verify and run a program on the
 * embedded VM, exiting with its status. */
#include "cli/cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char help[] =
	"usage: flock run FILE [OPTIONS] [-- ARGS...]\n"
	"\n"
	"Run FILE (.fl Flock, .fla assembly or .flb module) as a new process on the\n"
	"embedded VM and exit with its status. ARGS after -- are the\n"
	"program's arguments 1..n (argument 0 is FILE).\n"
	"\n"
	"options:\n"
	"  --cpus N            worker OS threads running VM threads\n"
	"                      (default: one per core); with --vm, the cores\n"
	"                      the process spreads over (default: the VM's)\n"
	"  --check             catch every access outside a live block\n"
	"  --stack-words N     data stack limit per thread (default 1048576,\n"
	"                      at most 2147483647)\n"
	"  --call-depth N      call depth limit per thread (default 100000,\n"
	"                      at most 2147483647)\n"
	"  --memory SIZE       everything the VM may hold for the process:\n"
	"                      pages, stacks, frames, threads; e.g. 512MiB\n"
	"                      (default: half the machine's RAM)\n"
	"  --max-threads N     threads at once, counting finished ones not\n"
	"                      yet joined (default 4194304)\n"
	"  --stats             at the end, a summary on stderr: wall time,\n"
	"                      threads made, memory limit, peak host memory\n"
	"  --debug-migrate     test aid: at every preemption and resumption,\n"
	"                      encode the thread's state to bytes and continue\n"
	"                      from a copy decoded from them\n"
	"  --debug-no-fuse     test aid: run without superinstructions (one\n"
	"                      handler per instruction), to measure them\n"
	"  --data DIR          the embedded VM's storage directory (default\n"
	"                      ~/.flock/local; no instruction uses it yet)\n"
	"  --vm VM@HOST:PORT   run on a Flock VM (any of its machines); also\n"
	"                      FLOCK_VM. Output streams back; stdin is\n"
	"                      forwarded; the exit status is the process's\n"
	"  --survive           with --vm: outlive the loss of a machine other\n"
	"                      than main's: joining a thread lost with it\n"
	"                      gives -75 (ELOST), a mutex it held is taken\n"
	"                      with status 1 (docs/cluster.md)\n"
	"  --detach            with --vm: print the process's pid and return\n"
	"                      (flock logs / wait / kill PID later)\n"
	"  --debug-resubmit    test aid, with --vm: drop the connection right\n"
	"                      after submitting, then submit again with the\n"
	"                      same submission id (the VM starts it once)\n"
	"  --debug-spread      test aid, with --vm: every spawn goes to a\n"
	"                      machine that asked for work, not only when\n"
	"                      this one has a backlog (bench/cluster)\n"
	"  --debug-reconnect   test aid, with --vm: drop the connection after\n"
	"                      the first output record, then attach again (no\n"
	"                      output twice, no input lost)\n"
	"  -h, --help          show this help\n";

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The most host memory this process held (its VmHWM: this executable
 * only, unlike getrusage, which counts what a parent had before exec). */
static long peak_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void print_stats(const struct vm_stats *st, double secs)
{
	fprintf(stderr,
		"flock: stats: %.3f s, %" PRIu64 " threads, memory limit %" PRIu64
		" bytes, peak host memory %ld KiB\n",
		secs, st->threads, st->limit, peak_rss_kib());
}

static int need_value(int i, int argc, char **argv)
{
	if (i + 1 >= argc)
		return cli_fail(CLI_EX_USAGE, "run: %s needs a value", argv[i]);
	return 0;
}

int cli_run(int argc, char **argv)
{
	struct vm_options o;
	struct vm_stats stats = {0};
	struct vm_module *m;
	double t0;
	const char *file = NULL, *vm = NULL;
	bool detach = false, resubmit = false, reconnect = false;
	int i, rc, nargs = 0;
	char **args = NULL;
	uint64_t v;

	vm_options_init(&o);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			args = argv + i + 1;
			nargs = argc - i - 1;
			break;
		} else if (cli_is_help(a)) {
			fputs(help, stdout);
			return CLI_EX_OK;
		} else if (strcmp(a, "--check") == 0) {
			o.check = true;
		} else if (strcmp(a, "--stats") == 0) {
			o.stats = &stats;
		} else if (strcmp(a, "--debug-migrate") == 0) {
			o.migrate = true;
		} else if (strcmp(a, "--debug-no-fuse") == 0) {
			o.no_fuse = true;
		} else if (strcmp(a, "--stack-words") == 0 ||
			   strcmp(a, "--call-depth") == 0) {
			if ((rc = need_value(i, argc, argv)))
				return rc;
			if (!cli_parse_u64(argv[++i], false, &v) || v == 0 ||
			    v > VM_MAX_STACK_WORDS)
				return cli_fail(CLI_EX_USAGE,
						"run: %s: '%s' is not a count "
						"between 1 and %u",
						a, argv[i], VM_MAX_STACK_WORDS);
			if (a[2] == 's')
				o.stack_words = (uint32_t)v;
			else
				o.max_depth = (uint32_t)v;
		} else if (strcmp(a, "--max-threads") == 0) {
			if ((rc = need_value(i, argc, argv)))
				return rc;
			if (!cli_parse_u64(argv[++i], false, &v) || v == 0 ||
			    v > UINT32_MAX)
				return cli_fail(CLI_EX_USAGE,
						"run: --max-threads: '%s' is not a "
						"count between 1 and %u",
						argv[i], UINT32_MAX);
			o.max_threads = (uint32_t)v;
		} else if (strcmp(a, "--cpus") == 0) {
			if ((rc = need_value(i, argc, argv)))
				return rc;
			if (!cli_parse_u64(argv[++i], false, &v) || v == 0 ||
			    v > VM_MAX_CPUS)
				return cli_fail(CLI_EX_USAGE,
						"run: --cpus: '%s' is not a count "
						"between 1 and %u",
						argv[i], VM_MAX_CPUS);
			o.cpus = (uint32_t)v;
		} else if (strcmp(a, "--memory") == 0) {
			if ((rc = need_value(i, argc, argv)))
				return rc;
			if (!cli_parse_u64(argv[++i], true, &v) || v == 0)
				return cli_fail(CLI_EX_USAGE,
						"run: --memory: '%s' is not a "
						"size such as 512MiB",
						argv[i]);
			o.memory = v;
		} else if (strcmp(a, "--data") == 0) {
			/* Storage arrives later; the option is accepted now so
			 * command lines written against SPEC keep working. */
			if ((rc = need_value(i, argc, argv)))
				return rc;
			if (argv[++i][0] == 0)
				return cli_fail(CLI_EX_USAGE,
						"run: --data: empty directory "
						"name");
		} else if (strcmp(a, "--vm") == 0) {
			if ((rc = need_value(i, argc, argv)))
				return rc;
			vm = argv[++i];
		} else if (strcmp(a, "--detach") == 0) {
			detach = true;
		} else if (strcmp(a, "--debug-resubmit") == 0) {
			resubmit = true;
		} else if (strcmp(a, "--debug-reconnect") == 0) {
			reconnect = true;
		} else if (strcmp(a, "--survive") == 0) {
			o.survive = true;
		} else if (strcmp(a, "--debug-spread") == 0) {
			o.spread_eager = true;
		} else if (a[0] == '-' && a[1] != 0) {
			return cli_fail(CLI_EX_USAGE,
					"run: unknown option '%s' (see flock "
					"run --help)",
					a);
		} else if (file == NULL) {
			file = a;
		} else {
			return cli_fail(CLI_EX_USAGE,
					"run: unexpected argument '%s' (program "
					"arguments go after --)",
					a);
		}
	}
	if (file == NULL)
		return cli_fail(CLI_EX_USAGE, "run: no FILE (see flock run "
					      "--help)");
	if (vm == NULL && getenv("FLOCK_VM") != NULL && *getenv("FLOCK_VM") != 0)
		vm = getenv("FLOCK_VM");
	if (detach && vm == NULL)
		return cli_fail(CLI_EX_USAGE, "run: --detach needs a VM (--vm or "
					      "FLOCK_VM)");
	rc = cli_load(file, &m);
	if (rc)
		return rc;
	o.argc = nargs + 1;
	o.argv = calloc((size_t)o.argc + 1, sizeof *o.argv);
	if (o.argv == NULL) {
		vm_module_free(m);
		return cli_fail(CLI_EX_SOFTWARE, "out of memory");
	}
	o.argv[0] = (char *)file;
	for (i = 0; i < nargs; i++)
		o.argv[i + 1] = args[i];
	fflush(stdout);
	t0 = now_s();
	if (vm != NULL) {
		double submit_s = -1;
		rc = cli_run_vm(vm, m, &o, detach, resubmit, reconnect,
				&submit_s);
		if (o.stats != NULL)
			fprintf(stderr,
				"flock: stats: %.3f s, submitted (the VM's control "
				"plane agreed on it) in %.3f ms\n",
				now_s() - t0, submit_s * 1e3);
	} else {
		rc = vm_run(m, &o);
		if (o.stats != NULL)
			print_stats(&stats, now_s() - t0);
	}
	free(o.argv);
	vm_module_free(m);
	return rc;
}
