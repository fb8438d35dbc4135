/* Front ends: the .fla assembler, the disassembler and the .fl
 * compiler. They turn text into struct vm_module and back; they depend on
 * vm/ only for the module format and instruction table, never on the
 * runtime. Nothing here keeps global state. */
#ifndef FLOCK_LANG_LANG_H
#define FLOCK_LANG_LANG_H

#include <stddef.h>
#include <stdio.h>

#include "vm/vm.h"

/* Assemble .fla text @src (@len bytes, NUL-terminated) read from @path.
 * Every error in the file is written to @diag as "PATH:LINE: error: MSG"
 * (not only the first). On success *@out is a new module (source name @path,
 * unless a .source directive says otherwise) the caller frees with
 * vm_module_free(). Returns 0, FL_ESYNTAX after diagnostics, or FL_ENOMEM.
 * The result is not verified: callers run vm_verify(). */
int asm_assemble(const char *path, const char *src, size_t len,
		 struct vm_module **out, FILE *diag);

/* Compile .fl source @src (@len bytes, NUL-terminated) read from @path to a
 * module. Every lexical, syntax and name error is written to @diag as
 * "PATH:LINE:COL: error: MESSAGE", then the source line (100 bytes of it
 * around the column, "..." at each end cut, when longer) and a caret line;
 * returns FL_ESYNTAX after diagnostics (no module), FL_ENOMEM, or 0. `use`
 * paths are resolved relative to the including file and read with
 * fl_read_file. The result is not verified: callers run vm_verify().
 * Time is linear in the source, whatever its shape; recursion is bounded
 * by the nesting limit (256 levels): the deepest source takes under 512
 * KiB of C stack in an -O2 build, under 1 MiB with ASan. */
int lang_compile(const char *path, const char *src, size_t len,
		 struct vm_module **out, FILE *diag);

/* Write @m as .fla text to @out. For any module that passes vm_verify(),
 * asm_assemble() of the text yields a byte-identical module. Borrows @m.
 * Returns 0, FL_EIO or FL_ENOMEM. */
int asm_disasm(const struct vm_module *m, FILE *out);

/* A source file's text for asm_disasm_source() (@text NULL: unknown). */
struct asm_text {
	const char *text;
	size_t len;
};

/* The same, with each source line the line table names shown as a
 * comment after its .line directive. @texts (NULL, or m->nfiles + 1
 * entries) holds the text of each file of the line table: [0] the
 * module's source, [i] m->files[i - 1]. Comments do not change what it
 * assembles to. */
int asm_disasm_source(const struct vm_module *m, const struct asm_text *texts,
		      FILE *out);

/* The text of a source file the compiler supplies itself ("<prelude>",
 * print's implementation), or NULL when @name is not one. */
const char *lang_builtin_source(const char *name, size_t *len);

#endif
