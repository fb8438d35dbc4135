/* flock disasm: print a module as assembly that `flock build` accepts. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "lang/lang.h"

static const char help[] =
	"usage: flock disasm FILE\n"
	"\n"
	"Print FILE (a .flb module, or a program to compile first) as .fla\n"
	"assembly on stdout. `flock build` of the output gives back an\n"
	"identical module.\n";

int cli_disasm(int argc, char **argv)
{
	const char *file = NULL;
	struct vm_module *m;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (cli_is_help(argv[i])) {
			fputs(help, stdout);
			return CLI_EX_OK;
		} else if (argv[i][0] == '-' && argv[i][1] != 0) {
			return cli_fail(CLI_EX_USAGE,
					"disasm: unknown option '%s'", argv[i]);
		} else if (file == NULL) {
			file = argv[i];
		} else {
			return cli_fail(CLI_EX_USAGE,
					"disasm: unexpected argument '%s'",
					argv[i]);
		}
	}
	if (file == NULL)
		return cli_fail(CLI_EX_USAGE, "disasm: no FILE (see flock "
					      "disasm --help)");
	rc = cli_load(file, &m);
	if (rc)
		return rc;
	if (asm_disasm(m, stdout) != 0 || fflush(stdout) != 0)
		rc = cli_fail(CLI_EX_CANTCREAT, "disasm: cannot write output");
	vm_module_free(m);
	return rc;
}
