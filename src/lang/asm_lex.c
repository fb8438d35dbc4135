/* The .fla lexer: one source line in, a token array out.
 *
 * It owns the spelling of everything the assembler reads: names
 * ([A-Za-z_.$][A-Za-z0-9_.$]*), integers (decimal or 0x hex, optional
 * leading '-'), character literals ('c') and strings ("..."), both with the
 * escapes \n \t \r \0 \\ \" \' \xNN (exactly two hex digits), the
 * punctuation ':' and ',', and `;` comments. The disassembler's quoting
 * (asm_disasm.c) writes only what this file reads back.
 *
 * Happy path: asm.c splits the input at newlines and calls asm__lex() per
 * line; tokens borrow the input text, strings are decoded into the line's
 * buffer, integers carry their magnitude and sign so each use can check its
 * own range (a byte, a slot, a 64-bit immediate). Failure modes: a lexical
 * error (bad character, bad escape, unterminated literal, malformed number)
 * fails the whole line with one message, which asm.c prints with the
 * location; memory exhaustion returns FL_ENOMEM. Any byte value, NUL
 * included, is handled; work is linear in the line length. No global state. */
#include "lang/lang_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fl_error.h"

void asm__line_init(struct asm_line *l)
{
	memset(l, 0, sizeof *l);
	fl_buf_init(&l->str);
}

void asm__line_close(struct asm_line *l)
{
	free(l->toks);
	fl_buf_close(&l->str);
	asm__line_init(l);
}

bool asm__is_name_char(unsigned char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
	    c == '.' || c == '$')
		return true;
	return !first && c >= '0' && c <= '9';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

const char *asm__show(char *buf, const char *p, size_t n)
{
	size_t o = 0, max = 40;

	for (size_t i = 0; i < n && i < max; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x20 && c < 0x7f)
			buf[o++] = (char)c;
		else
			o += (size_t)snprintf(buf + o, ASM_SHOW_MAX - o,
					      "\\x%02x", c);
	}
	if (n > max) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = 0;
	return buf;
}

static struct asm_tok *new_tok(struct asm_line *l)
{
	struct asm_tok *t;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		t = realloc(l->toks, cap * sizeof *t);
		if (t == NULL)
			return NULL;
		l->toks = t;
		l->cap = cap;
	}
	t = &l->toks[l->n++];
	memset(t, 0, sizeof *t);
	return t;
}

/* Decode the escape whose backslash is at p[*i]; advance *i past it. */
static int escape(const char *p, size_t n, size_t *i, uint8_t *out,
		  const char *where, char *msg)
{
	char shown[ASM_SHOW_MAX];
	size_t j = *i + 1;
	int hi, lo;

	if (j >= n) {
		snprintf(msg, ASM_MSG_MAX, "unterminated %s", where);
		return FL_ESYNTAX;
	}
	switch (p[j]) {
	case 'n':
		*out = '\n';
		break;
	case 't':
		*out = '\t';
		break;
	case 'r':
		*out = '\r';
		break;
	case '0':
		*out = 0;
		break;
	case '\\':
	case '"':
	case '\'':
		*out = (uint8_t)p[j];
		break;
	case 'x':
		hi = j + 1 < n ? hex_value((unsigned char)p[j + 1]) : -1;
		lo = j + 2 < n ? hex_value((unsigned char)p[j + 2]) : -1;
		if (hi < 0 || lo < 0) {
			size_t k = j + 1;
			while (k < n && k < j + 3 && p[k] != '"' &&
			       p[k] != '\'')
				k++;
			snprintf(msg, ASM_MSG_MAX,
				 "bad escape '%s' in %s (\\x takes two hex "
				 "digits)",
				 asm__show(shown, p + *i, k - *i), where);
			return FL_ESYNTAX;
		}
		*out = (uint8_t)(hi << 4 | lo);
		j += 2;
		break;
	default:
		snprintf(msg, ASM_MSG_MAX, "bad escape '%s' in %s",
			 asm__show(shown, p + *i, 2), where);
		return FL_ESYNTAX;
	}
	*i = j + 1;
	return 0;
}

static int lex_string(struct asm_line *l, struct asm_tok *t, const char *p,
		      size_t n, size_t *i, char *msg)
{
	size_t j = *i + 1;

	t->kind = ASM_T_STR;
	t->off = l->str.len;
	for (;;) {
		uint8_t c;
		if (j >= n) {
			snprintf(msg, ASM_MSG_MAX, "unterminated string");
			return FL_ESYNTAX;
		}
		if (p[j] == '"')
			break;
		if (p[j] == '\\') {
			int rc = escape(p, n, &j, &c, "string", msg);
			if (rc)
				return rc;
		} else {
			c = (uint8_t)p[j++];
		}
		fl_buf_put_u8(&l->str, c);
	}
	if (fl_buf_failed(&l->str))
		return FL_ENOMEM;
	t->len = l->str.len - t->off;
	*i = j + 1;
	return 0;
}

static int lex_char(struct asm_tok *t, const char *p, size_t n, size_t *i,
		    char *msg)
{
	size_t j = *i + 1;
	uint8_t c;

	t->kind = ASM_T_INT;
	t->chr = true;
	if (j >= n) {
		snprintf(msg, ASM_MSG_MAX, "unterminated character literal");
		return FL_ESYNTAX;
	}
	if (p[j] == '\'') {
		snprintf(msg, ASM_MSG_MAX, "empty character literal");
		return FL_ESYNTAX;
	}
	if (p[j] == '\\') {
		int rc = escape(p, n, &j, &c, "character literal", msg);
		if (rc)
			return rc;
	} else {
		c = (uint8_t)p[j++];
	}
	if (j >= n) {
		snprintf(msg, ASM_MSG_MAX, "unterminated character literal");
		return FL_ESYNTAX;
	}
	if (p[j] != '\'') {
		snprintf(msg, ASM_MSG_MAX,
			 "character literal holds more than one character");
		return FL_ESYNTAX;
	}
	t->mag = c;
	*i = j + 1;
	return 0;
}

/* An integer: the token runs over every name character so that "12ab" or
 * "1.5" is one bad number rather than a number and a name. */
static int lex_number(struct asm_tok *t, const char *p, size_t n, size_t *i,
		      char *msg)
{
	char shown[ASM_SHOW_MAX];
	size_t j = *i, k;
	uint64_t v = 0;
	bool big = false, ok = true;

	t->kind = ASM_T_INT;
	if (p[j] == '-') {
		t->neg = true;
		j++;
	}
	k = j;
	while (k < n && asm__is_name_char((unsigned char)p[k], false))
		k++;
	if (k - j > 2 && p[j] == '0' && (p[j + 1] == 'x' || p[j + 1] == 'X')) {
		for (size_t q = j + 2; q < k && ok; q++) {
			int d = hex_value((unsigned char)p[q]);
			if (d < 0)
				ok = false;
			else if (v >> 60 != 0)
				big = true;
			else
				v = v << 4 | (uint64_t)d;
		}
	} else {
		for (size_t q = j; q < k && ok; q++) {
			unsigned d = (unsigned char)p[q] - '0';
			if (!is_digit((unsigned char)p[q]))
				ok = false;
			else if (v > (UINT64_MAX - d) / 10)
				big = true;
			else
				v = v * 10 + d;
		}
	}
	t->n = k - *i;
	if (!ok) {
		snprintf(msg, ASM_MSG_MAX, "bad number '%s'",
			 asm__show(shown, t->p, t->n));
		return FL_ESYNTAX;
	}
	t->mag = big ? 0 : v;
	t->big = big;
	*i = k;
	return 0;
}

int asm__lex(struct asm_line *l, const char *p, size_t n, char *msg)
{
	char shown[ASM_SHOW_MAX];
	size_t i = 0;
	int rc;

	l->n = 0;
	l->str.len = 0;
	while (i < n) {
		unsigned char c = (unsigned char)p[i];
		struct asm_tok *t;

		if (c == ' ' || c == '\t' || c == '\r' || c == '\v' ||
		    c == '\f') {
			i++;
			continue;
		}
		if (c == ';')
			break;
		t = new_tok(l);
		if (t == NULL)
			return FL_ENOMEM;
		t->p = p + i;
		t->n = 1;
		if (c == ':' || c == ',') {
			t->kind = c == ':' ? ASM_T_COLON : ASM_T_COMMA;
			i++;
		} else if (asm__is_name_char(c, true)) {
			size_t j = i + 1;
			while (j < n &&
			       asm__is_name_char((unsigned char)p[j], false))
				j++;
			t->kind = ASM_T_NAME;
			t->n = j - i;
			i = j;
		} else if (is_digit(c) || (c == '-' && i + 1 < n &&
					   is_digit((unsigned char)p[i + 1]))) {
			rc = lex_number(t, p, n, &i, msg);
			if (rc)
				return rc;
		} else if (c == '"' || c == '\'') {
			size_t start = i;
			rc = c == '"' ? lex_string(l, t, p, n, &i, msg)
				      : lex_char(t, p, n, &i, msg);
			if (rc)
				return rc;
			t->n = i - start;
		} else {
			snprintf(msg, ASM_MSG_MAX, "unexpected character '%s'",
				 asm__show(shown, p + i, 1));
			return FL_ESYNTAX;
		}
	}
	return 0;
}
