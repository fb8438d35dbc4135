/* flock disasm: print a module as assembly that `flock build` accepts. */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "lang/lang.h"

static const char help[] =
	"usage: flock disasm FILE\n"
	"\n"
	"Print FILE (a .flb module, or a program to compile first) as .fla\n"
	"assembly on stdout, with the source lines (when the module's source\n"
	"file can be read) as comments. `flock build` of the output gives\n"
	"back an identical module.\n";

/* The module's source file, when it is a readable regular file of sane
 * size (its lines become comments); NULL otherwise. */
static char *read_source(const char *path, size_t *len)
{
	struct stat st;
	struct fl_err err;
	uint8_t *p;

	*len = 0;
	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > (16 << 20))
		return NULL;
	if (fl_read_file(path, &p, len, &err) != 0)
		return NULL;
	return (char *)p;
}

int cli_disasm(int argc, char **argv)
{
	const char *file = NULL;
	struct vm_module *m;
	struct asm_text *texts;
	size_t len;
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
	texts = calloc((size_t)m->nfiles + 1, sizeof *texts);
	if (texts == NULL) {
		vm_module_free(m);
		return cli_fail(CLI_EX_SOFTWARE, "disasm: out of memory");
	}
	for (uint32_t i = 0; i <= m->nfiles; i++) {
		const char *name = vm_module_file(m, i);
		texts[i].text = lang_builtin_source(name, &texts[i].len);
		if (texts[i].text == NULL)
			texts[i].text = read_source(name, &texts[i].len);
	}
	if (asm_disasm_source(m, texts, stdout) != 0 || fflush(stdout) != 0)
		rc = cli_fail(CLI_EX_CANTCREAT, "disasm: cannot write output");
	for (uint32_t i = 0; i <= m->nfiles; i++)
		if (lang_builtin_source(vm_module_file(m, i), &len) == NULL)
			free((char *)texts[i].text);
	free(texts);
	vm_module_free(m);
	return rc;
}
