/* Private to the .fl compiler (src/lang/lang_*.c): tokens, the AST, and the
 * compiler state shared by the lexer (lang_lex.c), the parser
 * (lang_parse.c) and the code generator (lang_gen.c). Not for use outside
 * src/lang/. Nothing here keeps global state: one struct lang_comp per
 * lang_compile() call owns everything (files, nodes, diagnostics). */
#ifndef FLOCK_LANG_LANG_FL_H
#define FLOCK_LANG_LANG_FL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/fl_buf.h"

enum lang_tok_kind {
	FT_EOF,
	FT_ERROR, /* a byte the lexer rejected (already reported) */
	FT_NAME,
	FT_INT, /* decimal, 0x, 'c' */
	FT_STR, /* decoded bytes in comp->strs[soff .. soff+slen) */
	FT_KW_FN, FT_KW_CONST, FT_KW_GLOBAL, FT_KW_USE, FT_KW_VAR, FT_KW_IF,
	FT_KW_ELSE, FT_KW_WHILE, FT_KW_FOR, FT_KW_IN, FT_KW_BREAK,
	FT_KW_CONTINUE, FT_KW_RETURN, FT_KW_SPAWN,
	/* punctuation */
	FT_LPAREN, FT_RPAREN, FT_LBRACE, FT_RBRACE, FT_LBRACK, FT_RBRACK,
	FT_COMMA, FT_SEMI, FT_DOTDOT,
	/* operators */
	FT_OROR, FT_ANDAND, FT_OR, FT_XOR, FT_AND, FT_EQ, FT_NE, FT_LT, FT_LE,
	FT_GT, FT_GE, FT_SHL, FT_SHR, FT_PLUS, FT_MINUS, FT_STAR, FT_SLASH,
	FT_PERCENT, FT_BANG, FT_TILDE,
	/* assignments */
	FT_ASSIGN, FT_ADD_ASSIGN, FT_SUB_ASSIGN, FT_MUL_ASSIGN, FT_DIV_ASSIGN,
	FT_MOD_ASSIGN, FT_AND_ASSIGN, FT_OR_ASSIGN, FT_XOR_ASSIGN,
	FT_SHL_ASSIGN, FT_SHR_ASSIGN,
};

struct lang_tok {
	enum lang_tok_kind kind;
	uint32_t line, col;
	const char *p; /* source text, borrowed from the file */
	size_t n;
	uint64_t val;      /* FT_INT */
	size_t soff, slen; /* FT_STR */
};

enum lang_node_kind {
	/* expressions */
	FN_NUM, FN_STR, FN_NAME, FN_ADDR, FN_UNARY, FN_BINARY, FN_ANDAND,
	FN_OROR, FN_INDEX, FN_CALL, FN_SPAWN,
	/* statements */
	FN_VAR, FN_IF, FN_WHILE, FN_FOR, FN_BREAK, FN_CONTINUE, FN_RETURN,
	FN_EXPR, FN_ASSIGN, FN_BLOCK,
	/* items */
	FN_FUNC, FN_CONST, FN_GLOBAL,
};

enum lang_fold {
	LANG_FOLD_NOT_YET, /* not looked at */
	LANG_FOLD_CONST,   /* a constant: lang_node.cval */
	LANG_FOLD_NOT,     /* not a constant */
};

/* Levels of nesting the parser takes (parentheses, indexes, call
 * arguments, unary operators, blocks; see lang_parse.c). */
#define LANG_NEST_MAX 256

/* One AST node. Lists (statements, arguments, parameters) chain through
 * @next; @a..@c are the children, by kind:
 *   UNARY/BINARY op, a, b;  INDEX a[b];  CALL/SPAWN name(args a, val=count)
 *   VAR name = a;  IF a {b} else c;  WHILE a {b};  FOR name in a..b {c}
 *   RETURN a;  EXPR a;  ASSIGN op a = b;  BLOCK a;
 *   FUNC name(params a, val=count) {b};  CONST/GLOBAL name = a
 * Depth: lists, the left operand @a of BINARY/ANDAND/OROR, the array @a of
 * INDEX and an IF's else-if @c can chain as long as the source; other
 * children nest at most LANG_NEST_MAX levels deep (a dozen nodes a level,
 * at most: right operands of higher precedence). A pass that recurses
 * must walk the former with loops. */
struct lang_node {
	enum lang_node_kind kind;
	int op; /* enum lang_tok_kind */
	uint16_t file;
	uint32_t line, col;
	const char *name;
	size_t nlen;
	int64_t val;
	size_t soff, slen; /* FN_STR */
	struct lang_node *a, *b, *c, *next;
	/* resolution state of CONST items: 0 new, 1 being folded, 2 done */
	int state;
	/* An expression's constant folding (lang_gen.c), done once per node:
	 * LANG_FOLD_*, and @cval the value when LANG_FOLD_CONST. */
	uint8_t fold;
	int64_t cval;
	uint32_t index; /* FUNC: function index; GLOBAL: data word index */
	bool bad; /* CONST failed to fold */
};

struct lang_file {
	char *path;
	char *canon; /* realpath(path), or a copy of it: for `use` once */
	char *src;
	size_t len;
};

/* One compilation. Files are kept to the end: AST names point into their
 * source, and diagnostics quote it. */
struct lang_comp {
	FILE *diag;
	bool nomem;
	int nerrors;
	struct lang_file *files;
	size_t nfiles, capfiles;
	struct fl_buf diags; /* struct lang_diag[] */
	struct fl_buf dtext; /* their messages */
	struct fl_buf strs;  /* decoded string literal bytes */
	struct fl_buf arena; /* struct lang_node *[] of malloc'd chunks */
	struct lang_node *chunk;
	size_t chunk_used;
	struct fl_buf items; /* struct lang_node *[]: fn, const, global */
	int depth;   /* use nesting */
	bool prints; /* a call to print or eprint was parsed */
};

/* lang_lex.c */
/* Tokens of file @file into *@out (malloc'd, ends with FT_EOF). Lexical
 * errors are reported; returns false only when out of memory. */
bool lang__lex(struct lang_comp *c, uint16_t file, struct lang_tok **out,
	     size_t *n);

/* lang_parse.c */
/* Lex and parse file @file, appending its items to c->items (and those of
 * the files it uses). */
void lang__parse_file(struct lang_comp *c, uint16_t file);
/* Add a file (takes @path and @src); returns its index or -1 on no memory. */
int lang__add_file(struct lang_comp *c, char *path, char *src, size_t len);
struct lang_node *lang__node(struct lang_comp *c, enum lang_node_kind kind,
			 uint16_t file, uint32_t line, uint32_t col);

/* lang_gen.c */
/* Resolve names and generate the module from c->items; reports name
 * errors with lang__error(). Returns 0 (with *@out set unless errors were
 * reported) or FL_ENOMEM. */
struct vm_module;
int lang__generate(struct lang_comp *c, struct vm_module **out);

/* lang_compile.c */
/* Record an error at @file:@line:@col (1-based); printed, sorted, when the
 * compilation ends. */
void lang__error(struct lang_comp *c, uint16_t file, uint32_t line,
	       uint32_t col, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* The print/eprint runtime, in .fl, compiled when a program prints. */
extern const char lang__prelude[];

#endif
