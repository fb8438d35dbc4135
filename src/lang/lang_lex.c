/* The .fl lexer: one file's bytes to an array of tokens.
 *
 * Owns: token boundaries, keywords, integer and character literals (decimal,
 * 0x hex, 'c' with C escapes), string literals (escapes decoded into the
 * compiler's string buffer), // and block comments, line and column
 * numbers (1-based, in bytes).
 *
 * Happy path: one pass, longest-match operators, FT_EOF at the end.
 * Failure modes: a lexical error (stray bytes, a run of them reported
 * once; an unterminated literal or comment, a bad escape, a number too
 * large) is reported with lang__error() at its line:col and lexing
 * continues after it, so the parser still sees the rest of the file. Out
 * of memory returns false. Runs on the compiling thread only. */
#include <string.h>
#include <stdlib.h>

#include "lang/lang_fl.h"

struct lx {
	struct lang_comp *c;
	uint16_t file;
	const char *s;
	size_t len, i;
	uint32_t line;
	size_t line_start;
	bool dollar; /* the built-in prelude may use '$' in names */
};

static const struct {
	const char *w;
	enum lang_tok_kind k;
} keywords[] = {
	{"fn", FT_KW_FN},       {"const", FT_KW_CONST},
	{"global", FT_KW_GLOBAL}, {"use", FT_KW_USE},
	{"var", FT_KW_VAR},     {"if", FT_KW_IF},
	{"else", FT_KW_ELSE},   {"while", FT_KW_WHILE},
	{"for", FT_KW_FOR},     {"in", FT_KW_IN},
	{"break", FT_KW_BREAK}, {"continue", FT_KW_CONTINUE},
	{"return", FT_KW_RETURN}, {"spawn", FT_KW_SPAWN},
};

/* Operators, longest first. */
static const struct {
	const char *o;
	enum lang_tok_kind k;
} ops[] = {
	{"<<=", FT_SHL_ASSIGN}, {">>=", FT_SHR_ASSIGN}, {"||", FT_OROR},
	{"&&", FT_ANDAND},      {"==", FT_EQ},          {"!=", FT_NE},
	{"<=", FT_LE},          {">=", FT_GE},          {"<<", FT_SHL},
	{">>", FT_SHR},         {"+=", FT_ADD_ASSIGN},  {"-=", FT_SUB_ASSIGN},
	{"*=", FT_MUL_ASSIGN},  {"/=", FT_DIV_ASSIGN},  {"%=", FT_MOD_ASSIGN},
	{"&=", FT_AND_ASSIGN},  {"|=", FT_OR_ASSIGN},   {"^=", FT_XOR_ASSIGN},
	{"..", FT_DOTDOT},      {"(", FT_LPAREN},       {")", FT_RPAREN},
	{"{", FT_LBRACE},       {"}", FT_RBRACE},       {"[", FT_LBRACK},
	{"]", FT_RBRACK},       {",", FT_COMMA},        {";", FT_SEMI},
	{"|", FT_OR},           {"^", FT_XOR},          {"&", FT_AND},
	{"<", FT_LT},           {">", FT_GT},           {"+", FT_PLUS},
	{"-", FT_MINUS},        {"*", FT_STAR},         {"/", FT_SLASH},
	{"%", FT_PERCENT},      {"!", FT_BANG},         {"~", FT_TILDE},
	{"=", FT_ASSIGN},
};

static uint32_t col_at(const struct lx *x, size_t at)
{
	return (uint32_t)(at - x->line_start + 1);
}

static bool is_alpha(int ch, bool dollar)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       ch == '_' || (dollar && ch == '$');
}

static bool is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

static int hexval(int ch)
{
	if (is_digit(ch))
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* The operator at byte @i (longest first), or -1. */
static int match_op(const struct lx *x, size_t i)
{
	for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
		if (ops[k].o[0] != x->s[i])
			continue;
		size_t n = strlen(ops[k].o);
		if (x->len - i >= n && memcmp(ops[k].o, x->s + i, n) == 0)
			return (int)k;
	}
	return -1;
}

/* Does byte @i start no token (nor a blank or comment)? */
static bool stray(const struct lx *x, size_t i)
{
	unsigned char ch = (unsigned char)x->s[i];

	return !is_alpha(ch, x->dollar) && !is_digit(ch) && ch != '"' &&
	       ch != '\'' && ch != ' ' && ch != '\t' && ch != '\n' &&
	       ch != '\r' && ch != '\f' && ch != '\v' && match_op(x, i) < 0;
}

static void newline(struct lx *x, size_t at)
{
	x->line++;
	x->line_start = at + 1;
}

/* Decode one escape after the backslash at x->i; returns the byte or -1
 * after reporting. Advances x->i past it. */
static int escape(struct lx *x)
{
	size_t at = x->i;
	int ch = x->i + 1 < x->len ? (unsigned char)x->s[x->i + 1] : 0;

	x->i += 2;
	switch (ch) {
	case 'n': return '\n';
	case 't': return '\t';
	case 'r': return '\r';
	case '0': return 0;
	case '\\': return '\\';
	case '"': return '"';
	case '\'': return '\'';
	case 'x': {
		int h = x->i < x->len ? hexval((unsigned char)x->s[x->i]) : -1;
		int l = x->i + 1 < x->len
				? hexval((unsigned char)x->s[x->i + 1]) : -1;
		if (h < 0 || l < 0)
			break;
		x->i += 2;
		return h * 16 + l;
	}
	default:
		break;
	}
	lang__error(x->c, x->file, x->line, col_at(x, at),
		  "invalid escape sequence in literal");
	if (ch == '\n' || ch == 0)
		x->i--; /* leave the newline / end for the caller */
	return -1;
}

static void lex_number(struct lx *x, struct lang_tok *t)
{
	size_t at = x->i;
	uint64_t v = 0;
	bool big = false, bad = false;

	if (x->s[at] == '0' && at + 1 < x->len &&
	    (x->s[at + 1] == 'x' || x->s[at + 1] == 'X')) {
		size_t nd = 0;
		x->i += 2;
		while (x->i < x->len &&
		       hexval((unsigned char)x->s[x->i]) >= 0) {
			if (v >> 60)
				big = true;
			v = v << 4 | (uint64_t)hexval((unsigned char)x->s[x->i]);
			x->i++;
			nd++;
		}
		bad = nd == 0;
	} else {
		while (x->i < x->len && is_digit(x->s[x->i])) {
			uint64_t d = (uint64_t)(x->s[x->i] - '0');
			if (v > (UINT64_MAX - d) / 10)
				big = true;
			v = v * 10 + d;
			x->i++;
		}
	}
	while (x->i < x->len && (is_alpha(x->s[x->i], false) ||
				 is_digit(x->s[x->i]))) {
		bad = true;
		x->i++;
	}
	t->val = v;
	if (bad)
		lang__error(x->c, x->file, t->line, t->col,
			  "malformed number '%.*s'", (int)(x->i - at),
			  x->s + at);
	else if (big)
		lang__error(x->c, x->file, t->line, t->col,
			  "number '%.*s' does not fit in 64 bits",
			  (int)(x->i - at), x->s + at);
}

/* 'c' or "string"; an unterminated one becomes FT_ERROR. */
static void lex_quoted(struct lx *x, struct lang_tok *t, char q)
{
	size_t nbytes = 0;
	int first = 0;
	bool bad = false;

	x->i++;
	t->soff = x->c->strs.len;
	while (x->i < x->len && x->s[x->i] != q && x->s[x->i] != '\n') {
		int b;
		if (x->s[x->i] == '\\')
			b = escape(x);
		else
			b = (unsigned char)x->s[x->i++];
		if (b < 0) {
			bad = true;
			continue;
		}
		if (nbytes == 0)
			first = b;
		nbytes++;
		if (q == '"')
			fl_buf_put_u8(&x->c->strs, (uint8_t)b);
	}
	if (x->i >= x->len || x->s[x->i] != q) {
		lang__error(x->c, x->file, t->line, t->col,
			  q == '"' ? "unterminated string literal"
				   : "unterminated character literal");
		if (q == '"')
			fl_buf_put_u8(&x->c->strs, 0);
		t->kind = FT_ERROR; /* the parser says nothing more here */
		return;
	} else {
		x->i++;
		if (q == '\'' && nbytes != 1 && !bad)
			lang__error(x->c, x->file, t->line, t->col,
				  "a character literal holds exactly one "
				  "character");
	}
	if (q == '"') {
		t->kind = FT_STR;
		t->slen = x->c->strs.len - t->soff;
		fl_buf_put_u8(&x->c->strs, 0);
	} else {
		t->kind = FT_INT;
		t->val = (uint64_t)first;
	}
}

/* Skip blanks and comments (an unterminated block comment is reported). */
static void skip(struct lx *x)
{
	while (x->i < x->len) {
		char ch = x->s[x->i];
		if (ch == '\n') {
			newline(x, x->i);
			x->i++;
		} else if (ch == ' ' || ch == '\t' || ch == '\r' ||
			   ch == '\f' || ch == '\v') {
			x->i++;
		} else if (ch == '/' && x->i + 1 < x->len &&
			   x->s[x->i + 1] == '/') {
			while (x->i < x->len && x->s[x->i] != '\n')
				x->i++;
		} else if (ch == '/' && x->i + 1 < x->len &&
			   x->s[x->i + 1] == '*') {
			uint32_t line = x->line, col = col_at(x, x->i);
			x->i += 2;
			while (x->i < x->len &&
			       !(x->s[x->i] == '*' && x->i + 1 < x->len &&
				 x->s[x->i + 1] == '/')) {
				if (x->s[x->i] == '\n')
					newline(x, x->i);
				x->i++;
			}
			if (x->i >= x->len) {
				lang__error(x->c, x->file, line, col,
					  "unterminated comment");
				return;
			}
			x->i += 2;
		} else {
			return;
		}
	}
}

static void next(struct lx *x, struct lang_tok *t)
{
	memset(t, 0, sizeof *t);
	skip(x);
	t->line = x->line;
	t->col = col_at(x, x->i);
	t->p = x->s + x->i;
	if (x->i >= x->len) {
		t->kind = FT_EOF;
		return;
	}
	unsigned char ch = (unsigned char)x->s[x->i];
	size_t at = x->i;
	if (is_alpha(ch, x->dollar)) {
		while (x->i < x->len && (is_alpha(x->s[x->i], x->dollar) ||
					 is_digit(x->s[x->i])))
			x->i++;
		t->kind = FT_NAME;
		t->n = x->i - at;
		for (size_t k = 0; k < sizeof keywords / sizeof *keywords; k++)
			if (strlen(keywords[k].w) == t->n &&
			    memcmp(keywords[k].w, t->p, t->n) == 0)
				t->kind = keywords[k].k;
		return;
	}
	if (is_digit(ch)) {
		t->kind = FT_INT;
		lex_number(x, t);
		t->n = x->i - at;
		return;
	}
	if (ch == '"' || ch == '\'') {
		lex_quoted(x, t, (char)ch);
		t->n = x->i - at;
		return;
	}
	int k = match_op(x, x->i);
	if (k >= 0) {
		t->kind = ops[k].k;
		t->n = strlen(ops[k].o);
		x->i += t->n;
		return;
	}
	/* A run of such bytes (say a UTF-8 character) is one error. */
	size_t run = 1;
	char more[48] = "";
	while (x->i + run < x->len && stray(x, x->i + run))
		run++;
	if (run > 1)
		snprintf(more, sizeof more, " (and %zu more)", run - 1);
	if (ch >= 0x21 && ch < 0x7f)
		lang__error(x->c, x->file, t->line, t->col,
			  "unexpected character '%c'%s", ch, more);
	else
		lang__error(x->c, x->file, t->line, t->col,
			  "unexpected byte 0x%02x%s", ch, more);
	x->i += run;
	t->kind = FT_ERROR;
	t->n = run;
}

bool lang__lex(struct lang_comp *c, uint16_t file, struct lang_tok **out,
	     size_t *n)
{
	struct lx x = {
		.c = c,
		.file = file,
		.s = c->files[file].src,
		.len = c->files[file].len,
		.line = 1,
		.dollar = c->files[file].path[0] == '<',
	};
	struct fl_buf b;

	fl_buf_init(&b);
	for (;;) {
		struct lang_tok t;
		next(&x, &t);
		fl_buf_put(&b, &t, sizeof t);
		if (t.kind == FT_EOF || b.failed)
			break;
	}
	if (b.failed || c->strs.failed) {
		fl_buf_close(&b);
		*out = NULL;
		*n = 0;
		return false;
	}
	size_t bytes;
	*out = (struct lang_tok *)(void *)fl_buf_take(&b, &bytes);
	*n = bytes / sizeof(struct lang_tok);
	return true;
}
