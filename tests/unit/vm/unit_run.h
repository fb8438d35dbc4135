/* Helpers shared by the VM unit tests that run programs on nodes
 * (test_node.c, test_remote.c): assemble and verify .fla text, give a
 * process in-memory stdin, stdout and stderr (memfds), read back what it
 * wrote, and match stderr the way tests/programs/test_programs.py does.
 *
 * Failures of the helpers themselves (a program that does not assemble,
 * no memfd) abort the test binary with a line saying why: a test aid
 * must fail loudly. Nothing here keeps global state. */
#ifndef FLOCK_TESTS_UNIT_VM_UNIT_RUN_H
#define FLOCK_TESTS_UNIT_VM_UNIT_RUN_H

#include "lang/lang.h"
#include "vm/vm.h"

#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static inline void unit_die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

static inline void unit_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("unit: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static inline char *unit_xstrdup(const char *s)
{
	char *d = strdup(s);

	if (d == NULL)
		unit_die("out of memory");
	return d;
}

/* Assemble .fla @text as source file @name and verify it (with main);
 * returns a module the caller frees with vm_module_free(). */
static inline struct vm_module *unit_assemble(const char *name,
					      const char *text, size_t len)
{
	struct vm_module *m = NULL;
	struct fl_err err;

	if (asm_assemble(name, text, len, &m, stderr) != 0)
		unit_die("%s does not assemble", name);
	if (vm_verify(m, true, &err) != 0)
		unit_die("%s does not verify: %s", name, err.msg);
	return m;
}

/* A memfd holding @len bytes of @bytes, positioned at its start. */
static inline int unit_memfd(const char *name, const void *bytes, size_t len)
{
	int fd = memfd_create(name, MFD_CLOEXEC);

	if (fd < 0)
		unit_die("memfd_create: %s", strerror(errno));
	if (len > 0 && write(fd, bytes, len) != (ssize_t)len)
		unit_die("memfd write: %s", strerror(errno));
	if (lseek(fd, 0, SEEK_SET) != 0)
		unit_die("memfd seek: %s", strerror(errno));
	return fd;
}

/* Everything in file @fd from its start, NUL-terminated (*@len bytes
 * before the NUL); the caller frees it. */
static inline char *unit_fd_text(int fd, size_t *len)
{
	off_t end = lseek(fd, 0, SEEK_END);
	char *s;

	if (end < 0 || lseek(fd, 0, SEEK_SET) != 0)
		unit_die("seek: %s", strerror(errno));
	s = malloc((size_t)end + 1);
	if (s == NULL)
		unit_die("out of memory");
	if (end > 0 && read(fd, s, (size_t)end) != (ssize_t)end)
		unit_die("read: %s", strerror(errno));
	s[end] = 0;
	*len = (size_t)end;
	return s;
}

/* A process's stdio as memfds: stdin holds @in (may be empty). */
struct unit_io {
	int in, out, err;
};

static inline void unit_io_open(struct unit_io *io, const void *in,
				size_t in_len, struct vm_options *o)
{
	io->in = unit_memfd("stdin", in, in_len);
	io->out = unit_memfd("stdout", NULL, 0);
	io->err = unit_memfd("stderr", NULL, 0);
	o->fd_in = io->in;
	o->fd_out = io->out;
	o->fd_err = io->err;
}

static inline void unit_io_close(struct unit_io *io)
{
	close(io->in);
	close(io->out);
	close(io->err);
}

/* ---- stderr patterns ----
 *
 * The golden programs' `; stderr:` lines are Python regular expressions
 * (re.search with MULTILINE). They are matched here with POSIX extended
 * ones: \A at the start and \Z at the end anchor to the whole text,
 * \n \t \d \D \s \S \w stand for what Python means, and a backslash
 * before any other punctuation is a literal in both. Anything else (a
 * backslash inside brackets, other letter escapes) is refused loudly
 * rather than matched differently. */

/* Translate @py into *@ere (the caller frees it). */
static inline void unit_rx_translate(const char *py, char **ere, bool *at_start,
				     bool *at_end)
{
	size_t n = strlen(py), o = 0;
	char *e = malloc(4 * n + 16);
	bool in_class = false;

	if (e == NULL)
		unit_die("out of memory");
	*at_start = *at_end = false;
	if (strncmp(py, "\\A", 2) == 0) {
		*at_start = true;
		py += 2;
		n -= 2;
	}
	if (n >= 2 && strcmp(py + n - 2, "\\Z") == 0 &&
	    (n < 3 || py[n - 3] != '\\')) {
		*at_end = true;
		n -= 2;
	}
	for (size_t i = 0; i < n; i++) {
		char c = py[i];
		if (in_class) {
			if (c == '\\')
				unit_die("stderr pattern /%s/: backslash in []", py);
			if (c == ']')
				in_class = false;
			e[o++] = c;
			continue;
		}
		if (c == '[') {
			in_class = true;
			e[o++] = c;
			if (py[i + 1] == '^')
				e[o++] = py[++i];
			if (py[i + 1] == ']')
				e[o++] = py[++i];
			continue;
		}
		if (c != '\\') {
			e[o++] = c;
			continue;
		}
		if (++i >= n)
			unit_die("stderr pattern /%s/ ends in a backslash", py);
		c = py[i];
		if (c == 'n') {
			e[o++] = '\n';
		} else if (c == 't') {
			e[o++] = '\t';
		} else if (c == 'd') {
			memcpy(e + o, "[0-9]", 5);
			o += 5;
		} else if (c == 's' || c == 'S' || c == 'w' || c == 'D') {
			const char *cls = c == 's'   ? "[[:space:]]"
					  : c == 'S' ? "[^[:space:]]"
					  : c == 'w' ? "[[:alnum:]_]"
						     : "[^0-9]";
			memcpy(e + o, cls, strlen(cls));
			o += strlen(cls);
		} else if (isalnum((unsigned char)c)) {
			unit_die("stderr pattern /%s/: \\%c is not supported", py, c);
		} else {
			e[o++] = '\\';
			e[o++] = c;
		}
	}
	e[o] = 0;
	*ere = e;
}

/* Does Python pattern @py match @text (of @len bytes) at or after *@pos?
 * On a match *@pos moves to its end, as test_programs.py chains them. */
static inline bool unit_rx_search(const char *py, const char *text, size_t len,
				  size_t *pos)
{
	bool at_start, at_end, found = false;
	regex_t re;
	char *ere;
	size_t k = *pos;
	int rc;

	unit_rx_translate(py, &ere, &at_start, &at_end);
	rc = regcomp(&re, ere, REG_EXTENDED | REG_NEWLINE);
	if (rc != 0)
		unit_die("stderr pattern /%s/ (as /%s/) does not compile", py, ere);
	while (k <= len && !(at_start && k > 0)) {
		regmatch_t m;
		int flags = k > 0 && text[k - 1] != '\n' ? REG_NOTBOL : 0;
		if (regexec(&re, text + k, 1, &m, flags) != 0)
			break;
		size_t s = k + (size_t)m.rm_so, e = k + (size_t)m.rm_eo;
		if (at_start && s != 0)
			break;
		/* POSIX takes the longest match at the leftmost start: when
		 * one from there ends at the end, that one is it. */
		if (!at_end || e == len) {
			*pos = e;
			found = true;
			break;
		}
		k = s + 1;
	}
	regfree(&re);
	free(ere);
	return found;
}

#endif
