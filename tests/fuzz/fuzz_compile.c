/* libFuzzer target for the .fl compiler: lang_compile() on arbitrary text
 * (`make fuzz`, seeds in tests/fuzz/seeds-fl/).
 *
 * Properties checked, beyond "no crash, no leak, no undefined behaviour"
 * (the build adds ASan and UBSan):
 *   - a failed compilation leaves no module;
 *   - a successful one gives a module that passes vm_verify() (need_main
 *     false: a file without `main` is still a valid module). A module the
 *     verifier rejects is a compiler bug.
 * A violated property calls abort(), which libFuzzer reports as a crash
 * with the input saved as the reproducer.
 *
 * `use` reads files. So that fuzz inputs cannot read arbitrary files (or
 * block on stdin, a FIFO or /dev/zero), each input is compiled as
 * DIR/fuzz.fl, DIR a fresh directory (made once, by LLVMFuzzerInitialize)
 * that holds only a few library files of the target's own, so `use` paths
 * resolve inside DIR; and an input that says "use" is skipped when it has a
 * backslash (escapes can spell any byte) or a string starting with '/',
 * '.' or '-'. DIR has no subdirectories or links, so no other path leaves
 * it (a missing file is just a diagnostic).
 *
 * FUZZ_COMPILE_SKIP_LONG_NAMES=1 skips inputs with a run of more than
 * VM_NAME_MAX identifier bytes: a known compiler bug (a global or function
 * name over 255 bytes compiles to a module that fails verification), so a
 * run can look past it. */
#define _GNU_SOURCE
#include "lang/lang.h"
#include "vm/vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *devnull;
static char path[512]; /* DIR/fuzz.fl, DIR a fresh directory */
static bool skip_long_names;

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_compile: property violated: %s\n", what);
		abort();
	}
}

static void put(const char *dir, const char *name, const char *text)
{
	char p[512];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	check(f != NULL, "cannot create a library file");
	fputs(text, f);
	check(fclose(f) == 0, "cannot write a library file");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char dir[] = "/tmp/fuzz_compile.XXXXXX";
	const char *e = getenv("FUZZ_COMPILE_SKIP_LONG_NAMES");

	(void)argc;
	(void)argv;
	check(mkdtemp(dir) != NULL, "mkdtemp failed");
	check(snprintf(path, sizeof(path), "%s/fuzz.fl", dir) <
		      (int)sizeof(path),
	      "temporary path too long");
	put(dir, "lib.fl", "const LIBK = 6 * 7;\nglobal libg = LIBK;\n"
			   "fn libf(a, b) { return a * b + libg; }\n");
	put(dir, "rec.fl", "use \"rec.fl\";\nuse \"lib.fl\";\n"
			   "fn recf() { return libf(1, 2); }\n");
	put(dir, "bad.fl", "fn broken( { return 1 +; }\nconst = ;\n\"\n");
	skip_long_names = e != NULL && e[0] != 0 && e[0] != '0';
	devnull = fopen("/dev/null", "w");
	check(devnull != NULL, "cannot open /dev/null");
	return 0;
}

/* Has @s (@n bytes) a run of more than VM_NAME_MAX identifier bytes? */
static bool long_name(const uint8_t *s, size_t n)
{
	size_t run = 0;

	for (size_t i = 0; i < n; i++) {
		bool id = (s[i] >= 'a' && s[i] <= 'z') ||
			  (s[i] >= 'A' && s[i] <= 'Z') ||
			  (s[i] >= '0' && s[i] <= '9') || s[i] == '_';
		run = id ? run + 1 : 0;
		if (run > VM_NAME_MAX)
			return true;
	}
	return false;
}

/* Could a `use` in @s (NUL-terminated) name a file outside the directory? */
static bool unsafe_use(const char *s)
{
	if (strstr(s, "use") == NULL)
		return false;
	return strchr(s, '\\') != NULL || strstr(s, "\"/") != NULL ||
	       strstr(s, "\".") != NULL || strstr(s, "\"-") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_module *m = NULL;
	struct fl_err err;
	char *src = malloc(size + 1);
	int rc;

	if (src == NULL)
		return 0;
	memcpy(src, data, size);
	src[size] = 0;
	/* An embedded NUL ends the text for strstr(): be conservative. */
	if (memchr(data, 0, size) != NULL && memmem(data, size, "use", 3)) {
		free(src);
		return 0;
	}
	if (unsafe_use(src) || (skip_long_names && long_name(data, size))) {
		free(src);
		return 0;
	}
	rc = lang_compile(path, src, size, &m, devnull);
	if (rc != 0) {
		check(m == NULL, "failed compilation produced a module");
	} else {
		check(m != NULL, "successful compilation produced no module");
		if (vm_verify(m, false, &err) != 0) {
			fprintf(stderr, "fuzz_compile: verify: %s\n",
				err.msg);
			check(false, "the compiled module does not verify");
		}
		vm_module_free(m);
	}
	free(src);
	return 0;
}
