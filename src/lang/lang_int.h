/* Private to src/lang/: the .fla lexer shared by the assembler (asm.c) and
 * the helpers the disassembler needs to print what the lexer reads back.
 * Not for use outside src/lang/. */
#ifndef FLOCK_LANG_LANG_INT_H
#define FLOCK_LANG_LANG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/fl_buf.h"

enum asm_tok_kind {
	ASM_T_NAME,  /* names, mnemonics, directives */
	ASM_T_INT,   /* integer or 'c' character literal */
	ASM_T_STR,   /* "string", escapes decoded */
	ASM_T_COLON, /* : */
	ASM_T_COMMA, /* , */
};

struct asm_tok {
	enum asm_tok_kind kind;
	const char *p; /* the token's source text, borrowed from the input */
	size_t n;
	/* ASM_T_INT: magnitude and sign; @big when the magnitude does not fit
	 * in 64 bits; @chr for a character literal (0..255, never negative). */
	uint64_t mag;
	bool neg;
	bool big;
	bool chr;
	/* ASM_T_STR: the decoded bytes are str.data[off .. off+len). */
	size_t off;
	size_t len;
};

/* One lexed line. Reused from line to line; asm__line_close() frees it. */
struct asm_line {
	struct asm_tok *toks;
	size_t n;
	size_t cap;
	struct fl_buf str; /* decoded string bytes of this line */
};

#define ASM_MSG_MAX  512 /* room for one diagnostic message */
#define ASM_SHOW_MAX 176 /* room for asm__show() output */

void asm__line_init(struct asm_line *l);
void asm__line_close(struct asm_line *l);

/* Split the @n bytes at @p (one line, no newline) into tokens, stopping at
 * a `;` comment. Returns 0; FL_ESYNTAX with the problem in @msg (the line
 * must be skipped); or FL_ENOMEM. */
int asm__lex(struct asm_line *l, const char *p, size_t n, char *msg);

/* Quote the @n bytes at @p for a diagnostic: printable ASCII as is, other
 * bytes as \xNN, cut with "..." when long. Returns @buf (ASM_SHOW_MAX). */
const char *asm__show(char *buf, const char *p, size_t n);

/* True for a byte that may start (@first) or continue a name. */
bool asm__is_name_char(unsigned char c, bool first);

#endif
