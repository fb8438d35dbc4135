/* flock build: compile a program to a verified .flb module. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
	"usage: flock build FILE [-o OUT.flb]\n"
	"\n"
	"Compile FILE (.fl Flock or .fla assembly) to a bytecode module, verified as\n"
	"`flock run` would. OUT defaults to FILE with its extension replaced\n"
	"by .flb. Diagnostics go to stderr; exit 65 if FILE does not compile.\n";

int cli_build(int argc, char **argv)
{
	const char *file = NULL, *out = NULL;
	struct vm_module *m;
	struct fl_buf b;
	struct fl_err err;
	char *def = NULL;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(help, stdout);
			return CLI_EX_OK;
		} else if (strcmp(argv[i], "-o") == 0) {
			if (i + 1 >= argc)
				return cli_fail(CLI_EX_USAGE,
						"build: -o needs a file name");
			out = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1] != 0) {
			return cli_fail(CLI_EX_USAGE,
					"build: unknown option '%s' (see flock "
					"build --help)",
					argv[i]);
		} else if (file == NULL) {
			file = argv[i];
		} else {
			return cli_fail(CLI_EX_USAGE,
					"build: unexpected argument '%s'",
					argv[i]);
		}
	}
	if (file == NULL)
		return cli_fail(CLI_EX_USAGE, "build: no FILE (see flock build "
					      "--help)");
	rc = cli_load(file, &m);
	if (rc)
		return rc;
	if (out == NULL) {
		const char *dot = strrchr(file, '.');
		size_t stem = (size_t)(dot - file);
		def = malloc(stem + 5);
		if (def == NULL) {
			vm_module_free(m);
			return cli_fail(CLI_EX_SOFTWARE, "out of memory");
		}
		memcpy(def, file, stem);
		memcpy(def + stem, ".flb", 5);
		out = def;
	}
	if (strcmp(out, file) == 0) {
		rc = cli_fail(CLI_EX_USAGE,
			      "build: output %s would overwrite the input", out);
		goto done;
	}
	fl_buf_init(&b);
	if (vm_module_encode(m, &b) != 0) {
		rc = cli_fail(CLI_EX_SOFTWARE, "out of memory");
	} else if (fl_write_file(out, b.data, b.len, &err) != 0) {
		rc = cli_fail(CLI_EX_CANTCREAT, "build: %s", err.msg);
	}
	fl_buf_close(&b);
done:
	free(def);
	vm_module_free(m);
	return rc;
}
