/* flock's entry point: picks the subcommand from CLI_COMMANDS, prints the
 * top-level help, and holds the small helpers every subcommand shares. */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lang/lang.h"

#define FLOCK_VERSION "0.1.0"

int cli_fail(int status, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("flock: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

bool cli_is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

bool cli_parse_u64(const char *s, bool size, uint64_t *out)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {
		{"", 1},          {"B", 1},
		{"KiB", 1ull << 10}, {"MiB", 1ull << 20},
		{"GiB", 1ull << 30}, {"TiB", 1ull << 40},
		{"KB", 1000ull},  {"MB", 1000000ull},
		{"GB", 1000000000ull}, {"TB", 1000000000000ull},
	};
	unsigned long long v;
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return false;
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (strcmp(end, units[i].unit) != 0 || (!size && i > 0))
			continue;
		if (v > UINT64_MAX / units[i].mult)
			return false;
		*out = v * units[i].mult;
		return true;
	}
	return false;
}

static bool has_ext(const char *path, const char *ext)
{
	size_t n = strlen(path), e = strlen(ext);
	return n > e && strcmp(path + n - e, ext) == 0;
}

int cli_load(const char *path, struct vm_module **out)
{
	struct vm_module *m = NULL;
	struct fl_err err;
	uint8_t *bytes;
	size_t len;
	int rc;

	if (!has_ext(path, ".fla") && !has_ext(path, ".flb") &&
	    !has_ext(path, ".fl"))
		return cli_fail(CLI_EX_USAGE,
				"%s: unknown kind of file (expected .fl, .fla "
				"or .flb)",
				path);
	rc = fl_read_file(path, &bytes, &len, &err);
	if (rc)
		return cli_fail(CLI_EX_NOINPUT, "%s", err.msg);
	if (!has_ext(path, ".flb")) {
		fflush(stdout);
		if (has_ext(path, ".fla"))
			rc = asm_assemble(path, (const char *)bytes, len, &m,
					  stderr);
		else
			rc = lang_compile(path, (const char *)bytes, len, &m,
					  stderr);
		free(bytes);
		if (rc == FL_ENOMEM)
			return cli_fail(CLI_EX_SOFTWARE, "%s: out of memory",
					path);
		if (rc)
			return CLI_EX_DATAERR;
	} else {
		rc = vm_module_decode(bytes, len, &m, &err);
		free(bytes);
		if (rc)
			return cli_fail(CLI_EX_DATAERR, "%s: %s", path,
					err.msg);
	}
	rc = vm_verify(m, true, &err);
	if (rc) {
		vm_module_free(m);
		/* Errors located in the program come as FILE:LINE: error:. */
		if (strstr(err.msg, ": error: ") != NULL) {
			fprintf(stderr, "%s\n", err.msg);
			return CLI_EX_DATAERR;
		}
		return cli_fail(CLI_EX_DATAERR, "%s: verification failed: %s",
				path, err.msg);
	}
	*out = m;
	return 0;
}

static void usage(FILE *f)
{
	fputs("usage: flock COMMAND [ARGS...]\n"
	      "\n"
	      "Flock is a virtual machine that many machines join; a program\n"
	      "sees one machine with all their cores, memory and disks. This\n"
	      "build runs programs on the embedded single-machine VM.\n"
	      "\n"
	      "commands:\n",
	      f);
#define CLI__HELP(name, summary) fprintf(f, "  %-8s %s\n", #name, summary);
	CLI_COMMANDS(CLI__HELP)
#undef CLI__HELP
	fputs("\n`flock COMMAND --help` describes a command. Exit statuses: the\n"
	      "program's own (0-255), 64 usage, 65 compile/verify error, 66\n"
	      "missing input, 69 VM unreachable, 70 runtime error, 73 output\n"
	      "not written, 74 the program's last output not written, 141 its\n"
	      "stdout's reader gone (docs/commands.md).\n",
	      f);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return CLI_EX_USAGE;
	}
	if (cli_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return CLI_EX_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("flock %s (module format %u)\n", FLOCK_VERSION,
		       VM_MODULE_VERSION);
		return CLI_EX_OK;
	}
#define CLI__DISPATCH(name, summary)                                          \
	if (strcmp(argv[1], #name) == 0)                                      \
		return cli_##name(argc - 1, argv + 1);
	CLI_COMMANDS(CLI__DISPATCH)
#undef CLI__DISPATCH
	return cli_fail(CLI_EX_USAGE, "unknown command '%s' (see flock --help)",
			argv[1]);
}
