/* libFuzzer target for the module loader: vm_module_decode() and
 * vm_verify() on arbitrary bytes (`make fuzz`, seeds in tests/fuzz/seeds/,
 * written by tests/fuzz/make_seeds.py).
 *
 * Properties checked, beyond "no crash, no leak, no undefined behaviour"
 * (the build adds ASan and UBSan):
 *   - a module that decodes and verifies re-encodes to exactly the input
 *     bytes: decode and encode are inverse on valid modules;
 *   - a verified module's functions tile its code, so vm_module_func_at()
 *     maps each function's first byte back to that function, and
 *     vm_module_find_func() finds each function under its own name;
 *   - a verified module's line table is canonical (it starts at code
 *     offset 0 when there is code, each entry changes the line), so every
 *     byte of code has a line;
 *   - a verified module disassembles (asm_disasm()) to text that assembles
 *     (asm_assemble()) back to exactly the input bytes -- the promise the
 *     canonical line table is there to keep.
 * A violated property calls abort(), which libFuzzer reports as a crash
 * with the input saved as the reproducer. */
#include "lang/lang.h"
#include "vm/vm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_module: property violated: %s\n", what);
		abort();
	}
}

static void check_verified(const struct vm_module *m, const uint8_t *data,
			   size_t size)
{
	struct fl_buf b;

	fl_buf_init(&b);
	check(vm_module_encode(m, &b) == 0, "encode failed");
	check(b.len == size && memcmp(b.data, data, size) == 0,
	      "encode(decode(x)) != x");
	fl_buf_close(&b);

	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		check(vm_module_func_at(m, f->code_off) == (int)i,
		      "func_at(code_off) is not the function");
		check(vm_module_func_at(m, f->code_off + f->code_len - 1) ==
			  (int)i,
		      "func_at(last byte) is not the function");
		check(vm_module_find_func(m, f->name) == (int)i,
		      "find_func(name) is not the function");
	}
	check(vm_module_func_at(m, m->code_len) == -1,
	      "func_at(code_len) found a function");

	if (m->code_len > 0)
		check(m->nlines > 0 && m->lines[0].code_off == 0,
		      "line table does not start at offset 0");
	for (uint32_t i = 1; i < m->nlines; i++)
		check(m->lines[i].line != m->lines[i - 1].line ||
			      m->lines[i].file != m->lines[i - 1].file,
		      "line table entries repeat a line");
	for (uint32_t i = 0; i < m->nlines; i++)
		check(m->lines[i].file <= m->nfiles,
		      "line table entry names a file not in the table");
	for (uint32_t i = 0; i < m->nfuncs; i++)
		check(vm_module_line(m, m->funcs[i].code_off, NULL) != 0,
		      "a function's first instruction has no line");
}

/* disasm -> assemble -> encode gives @data back. */
static void check_disasm_round_trip(const struct vm_module *m,
				    const uint8_t *data, size_t size)
{
	struct vm_module *m2 = NULL;
	char *text = NULL;
	size_t len = 0;
	struct fl_buf b;
	FILE *f = open_memstream(&text, &len);
	int rc;

	check(f != NULL, "open_memstream failed");
	rc = asm_disasm(m, f);
	check(fclose(f) == 0, "fclose of the text failed");
	check(rc == 0, "disasm failed");
	rc = asm_assemble("fuzz.fla", text, len, &m2, stderr);
	if (rc != 0)
		fprintf(stderr, "fuzz_module: text:\n%s", text);
	check(rc == 0, "the disassembly does not assemble");
	fl_buf_init(&b);
	check(vm_module_encode(m2, &b) == 0,
	      "encode of the reassembled failed");
	if (b.len != size || memcmp(b.data, data, size) != 0)
		fprintf(stderr, "fuzz_module: text:\n%s", text);
	check(b.len == size && memcmp(b.data, data, size) == 0,
	      "assemble(disasm(m)) != m");
	fl_buf_close(&b);
	vm_module_free(m2);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm_module *m = NULL;
	struct fl_err err;

	if (vm_module_decode(data, size, &m, &err) != 0) {
		check(m == NULL, "failed decode produced a module");
		return 0;
	}
	check(m != NULL, "successful decode produced no module");
	if (vm_verify(m, false, &err) == 0) {
		check_verified(m, data, size);
		check_disasm_round_trip(m, data, size);
	}
	vm_module_free(m);
	return 0;
}
