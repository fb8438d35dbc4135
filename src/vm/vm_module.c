/* The .flb module format: explicit encode and a defensive decode.
 *
 * Layout (all integers little-endian; "str" is u16 length + bytes):
 *   "FLKB" u16 version u16 flags(0)
 *   str source
 *   u32 rodata_len, bytes      u32 data_len, bytes
 *   u32 nsyms,  each: str name, u8 segment, u32 offset
 *   u32 nfuncs, each: str name, u32 nargs, u32 nlocals, u32 code_off,
 *                     u32 code_len
 *   u32 code_len, bytes
 *   u32 nfiles, each: str name      (source files besides `source`)
 *   u32 nlines, each: u32 code_off, u32 line, u32 file
 * and nothing after. The decoder checks every length against the bytes that
 * remain before allocating, so a hostile header cannot make it allocate more
 * than the input's size; it checks structure (sizes, offsets, ordering).
 * Whether the code makes sense is vm_verify()'s job (vm_verify.c). */
#include "vm/vm.h"

#include <stdlib.h>
#include <string.h>

struct vm_module *vm_module_new(void)
{
	struct vm_module *m = calloc(1, sizeof *m);

	if (m == NULL)
		return NULL;
	m->source = strdup("?");
	if (m->source == NULL) {
		free(m);
		return NULL;
	}
	return m;
}

void vm_module_free(struct vm_module *m)
{
	if (m == NULL)
		return;
	for (uint32_t i = 0; i < m->nsyms; i++)
		free(m->syms[i].name);
	for (uint32_t i = 0; i < m->nfuncs; i++)
		free(m->funcs[i].name);
	for (uint32_t i = 0; i < m->nfiles; i++)
		free(m->files[i]);
	free(m->files);
	free(m->source);
	free(m->rodata);
	free(m->data);
	free(m->syms);
	free(m->funcs);
	free(m->code);
	free(m->lines);
	free(m->depth);
	free(m);
}

static void put_str(struct fl_buf *b, const char *s)
{
	size_t n = strlen(s);

	if (n > UINT16_MAX)
		n = UINT16_MAX;
	fl_buf_put_u16(b, (uint16_t)n);
	fl_buf_put(b, s, n);
}

int vm_module_encode(const struct vm_module *m, struct fl_buf *b)
{
	fl_buf_put(b, VM_MODULE_MAGIC, 4);
	fl_buf_put_u16(b, VM_MODULE_VERSION);
	fl_buf_put_u16(b, 0);
	put_str(b, m->source);
	fl_buf_put_u32(b, m->rodata_len);
	fl_buf_put(b, m->rodata, m->rodata_len);
	fl_buf_put_u32(b, m->data_len);
	fl_buf_put(b, m->data, m->data_len);
	fl_buf_put_u32(b, m->nsyms);
	for (uint32_t i = 0; i < m->nsyms; i++) {
		put_str(b, m->syms[i].name);
		fl_buf_put_u8(b, m->syms[i].segment);
		fl_buf_put_u32(b, m->syms[i].offset);
	}
	fl_buf_put_u32(b, m->nfuncs);
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		put_str(b, f->name);
		fl_buf_put_u32(b, f->nargs);
		fl_buf_put_u32(b, f->nlocals);
		fl_buf_put_u32(b, f->code_off);
		fl_buf_put_u32(b, f->code_len);
	}
	fl_buf_put_u32(b, m->code_len);
	fl_buf_put(b, m->code, m->code_len);
	fl_buf_put_u32(b, m->nfiles);
	for (uint32_t i = 0; i < m->nfiles; i++)
		put_str(b, m->files[i]);
	fl_buf_put_u32(b, m->nlines);
	for (uint32_t i = 0; i < m->nlines; i++) {
		fl_buf_put_u32(b, m->lines[i].code_off);
		fl_buf_put_u32(b, m->lines[i].line);
		fl_buf_put_u32(b, m->lines[i].file);
	}
	return fl_buf_failed(b) ? FL_ENOMEM : 0;
}

/* ---- Decoding ---- */

struct dec {
	struct fl_reader r;
	struct fl_err *err;
	int rc;
};

static int fail(struct dec *d, const char *what)
{
	if (d->rc == 0)
		d->rc = fl_err_set(d->err, FL_EFORMAT,
				   "truncated module: %s cut off at byte %zu",
				   what, d->r.len);
	return d->rc;
}

/* A length-prefixed string of at most @max bytes without NUL; empty only
 * when @max is UINT16_MAX (the module's source name). */
static char *get_str(struct dec *d, const char *what, size_t max)
{
	uint16_t n = fl_get_u16(&d->r);
	const uint8_t *p = fl_get_bytes(&d->r, n);
	char *s;

	if (d->r.failed) {
		fail(d, what);
		return NULL;
	}
	if (n > max || memchr(p, 0, n) != NULL || (max != UINT16_MAX && n == 0)) {
		d->rc = fl_err_set(d->err, FL_EFORMAT, "bad %s (length %u)",
				   what, n);
		return NULL;
	}
	s = malloc((size_t)n + 1);
	if (s == NULL) {
		d->rc = fl_err_set(d->err, FL_ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(s, p, n);
	s[n] = 0;
	return s;
}

/* A u32 count of records of at least @min_size bytes each; fails rather
 * than trusting a count the remaining input cannot hold. */
static uint32_t get_count(struct dec *d, const char *what, size_t min_size)
{
	uint32_t n = fl_get_u32(&d->r);

	if (d->r.failed) {
		fail(d, what);
		return 0;
	}
	if ((uint64_t)n * min_size > fl_reader_left(&d->r)) {
		d->rc = fl_err_set(d->err, FL_EFORMAT,
				   "%s count %u exceeds the module's size",
				   what, n);
		return 0;
	}
	return n;
}

static uint8_t *get_blob(struct dec *d, const char *what, uint32_t *len)
{
	uint32_t n = get_count(d, what, 1);
	const uint8_t *p;
	uint8_t *q;

	if (d->rc)
		return NULL;
	if (n > VM_SEGMENT_MAX) {
		d->rc = fl_err_set(d->err, FL_EFORMAT,
				   "%s is %u bytes, more than %u", what, n,
				   VM_SEGMENT_MAX);
		return NULL;
	}
	p = fl_get_bytes(&d->r, n);
	q = malloc(n ? n : 1);
	if (q == NULL) {
		d->rc = fl_err_set(d->err, FL_ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(q, p, n);
	*len = n;
	return q;
}

static void *get_array(struct dec *d, uint32_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size);

	if (p == NULL)
		d->rc = fl_err_set(d->err, FL_ENOMEM, "out of memory");
	return p;
}

int vm_module_decode(const uint8_t *p, size_t len, struct vm_module **out,
		     struct fl_err *err)
{
	struct dec d = {.err = err};
	struct vm_module *m;
	const uint8_t *magic;
	uint16_t version, flags;

	fl_reader_init(&d.r, p, len);
	magic = fl_get_bytes(&d.r, 4);
	if (magic == NULL || memcmp(magic, VM_MODULE_MAGIC, 4) != 0)
		return fl_err_set(err, FL_EFORMAT,
				  "not a Flock module (bad magic)");
	version = fl_get_u16(&d.r);
	flags = fl_get_u16(&d.r);
	if (d.r.failed)
		return fail(&d, "header");
	if (version != VM_MODULE_VERSION)
		return fl_err_set(err, FL_EFORMAT,
				  "module format version %u, this VM reads %u",
				  version, VM_MODULE_VERSION);
	if (flags != 0)
		return fl_err_set(err, FL_EFORMAT, "unknown module flags 0x%x",
				  flags);
	m = calloc(1, sizeof *m);
	if (m == NULL)
		return fl_err_set(err, FL_ENOMEM, "out of memory");

	m->source = get_str(&d, "source name", UINT16_MAX);
	if (d.rc)
		goto fail;
	m->rodata = get_blob(&d, "read-only data", &m->rodata_len);
	if (d.rc)
		goto fail;
	m->data = get_blob(&d, "data", &m->data_len);
	if (d.rc)
		goto fail;

	m->nsyms = get_count(&d, "symbol", 2 + 1 + 1 + 4);
	if (d.rc)
		goto fail;
	m->syms = get_array(&d, m->nsyms, sizeof *m->syms);
	if (d.rc) {
		m->nsyms = 0;
		goto fail;
	}
	for (uint32_t i = 0; i < m->nsyms; i++) {
		struct vm_symbol *s = &m->syms[i];
		s->name = get_str(&d, "symbol name", VM_NAME_MAX);
		s->segment = fl_get_u8(&d.r);
		s->offset = fl_get_u32(&d.r);
		if (d.rc)
			goto fail;
		if (d.r.failed) {
			fail(&d, "symbol table");
			goto fail;
		}
	}

	m->nfuncs = get_count(&d, "function", 2 + 1 + 16);
	if (d.rc)
		goto fail;
	m->funcs = get_array(&d, m->nfuncs, sizeof *m->funcs);
	if (d.rc) {
		m->nfuncs = 0;
		goto fail;
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		struct vm_function *f = &m->funcs[i];
		f->name = get_str(&d, "function name", VM_NAME_MAX);
		f->nargs = fl_get_u32(&d.r);
		f->nlocals = fl_get_u32(&d.r);
		f->code_off = fl_get_u32(&d.r);
		f->code_len = fl_get_u32(&d.r);
		if (d.rc)
			goto fail;
		if (d.r.failed) {
			fail(&d, "function table");
			goto fail;
		}
	}

	m->code = get_blob(&d, "code", &m->code_len);
	if (d.rc)
		goto fail;

	m->nfiles = get_count(&d, "source file", 3);
	if (d.rc)
		goto fail;
	m->files = get_array(&d, m->nfiles, sizeof *m->files);
	if (d.rc) {
		m->nfiles = 0;
		goto fail;
	}
	for (uint32_t i = 0; i < m->nfiles; i++) {
		m->files[i] = get_str(&d, "source file name", VM_PATH_MAX);
		if (m->files[i] == NULL)
			goto fail;
	}

	m->nlines = get_count(&d, "line table entry", 12);
	if (d.rc)
		goto fail;
	m->lines = get_array(&d, m->nlines, sizeof *m->lines);
	if (d.rc) {
		m->nlines = 0;
		goto fail;
	}
	for (uint32_t i = 0; i < m->nlines; i++) {
		m->lines[i].code_off = fl_get_u32(&d.r);
		m->lines[i].line = fl_get_u32(&d.r);
		m->lines[i].file = fl_get_u32(&d.r);
	}
	if (d.r.failed) {
		fail(&d, "line table");
		goto fail;
	}
	if (fl_reader_left(&d.r) != 0) {
		d.rc = fl_err_set(err, FL_EFORMAT,
				  "%zu unexpected bytes after the line table",
				  fl_reader_left(&d.r));
		goto fail;
	}
	*out = m;
	return 0;
fail:
	vm_module_free(m);
	return d.rc;
}

/* ---- Queries ---- */

static bool name_char(char c, bool first)
{
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') ||
	       (c >= 'A' && c <= 'Z') ||
	       (!first && (c == '.' || (c >= '0' && c <= '9')));
}

bool vm_name_valid(const char *s, size_t len)
{
	if (len == 0 || len > VM_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!name_char(s[i], i == 0))
			return false;
	return true;
}

int vm_module_find_func(const struct vm_module *m, const char *name)
{
	for (uint32_t i = 0; i < m->nfuncs; i++)
		if (strcmp(m->funcs[i].name, name) == 0)
			return (int)i;
	return -1;
}

const char *vm_module_file(const struct vm_module *m, uint32_t i)
{
	return i > 0 && i <= m->nfiles ? m->files[i - 1] : m->source;
}

uint32_t vm_module_line(const struct vm_module *m, uint32_t off,
			const char **file)
{
	uint32_t lo = 0, hi = m->nlines;

	/* Last entry with code_off <= off. */
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (m->lines[mid].code_off <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (file != NULL)
		*file = vm_module_file(m, lo == 0 ? 0 : m->lines[lo - 1].file);
	return lo == 0 ? 0 : m->lines[lo - 1].line;
}

int vm_module_func_at(const struct vm_module *m, uint32_t off)
{
	for (uint32_t i = 0; i < m->nfuncs; i++)
		if (off >= m->funcs[i].code_off &&
		    off - m->funcs[i].code_off < m->funcs[i].code_len)
			return (int)i;
	return -1;
}

static vm_word pages(uint32_t n)
{
	return ((vm_word)n + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE * VM_PAGE_SIZE;
}

vm_word vm_module_seg_base(const struct vm_module *m, enum vm_segment seg)
{
	vm_word ro = VM_GLOBAL_BIT + VM_PAGE_SIZE;

	if (seg == VM_SEG_RODATA)
		return ro;
	return ro + pages(m->rodata_len);
}
