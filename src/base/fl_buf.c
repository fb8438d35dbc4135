/* Byte buffers, readers and whole-file I/O (see fl_buf.h). No shared state;
 * any thread may use its own buffers. */
#include "base/fl_buf.h"

#include "base/fl_error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void fl_buf_init(struct fl_buf *b)
{
	memset(b, 0, sizeof *b);
}

void fl_buf_close(struct fl_buf *b)
{
	free(b->data);
	fl_buf_init(b);
}

bool fl_buf_reserve(struct fl_buf *b, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (b->failed)
		return false;
	if (n <= b->cap - b->len)
		return true;
	if (n > SIZE_MAX / 2 - b->len)
		goto fail;
	cap = b->cap ? b->cap : 64;
	while (cap - b->len < n)
		cap *= 2;
	p = realloc(b->data, cap);
	if (p == NULL)
		goto fail;
	b->data = p;
	b->cap = cap;
	return true;
fail:
	b->failed = true;
	return false;
}

void fl_buf_put(struct fl_buf *b, const void *p, size_t n)
{
	if (n == 0 || !fl_buf_reserve(b, n))
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void fl_buf_put_u8(struct fl_buf *b, uint8_t v)
{
	fl_buf_put(b, &v, 1);
}

void fl_buf_put_u16(struct fl_buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
	fl_buf_put(b, x, 2);
}

void fl_buf_put_u32(struct fl_buf *b, uint32_t v)
{
	uint8_t x[4];
	for (int i = 0; i < 4; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	fl_buf_put(b, x, 4);
}

void fl_buf_put_u64(struct fl_buf *b, uint64_t v)
{
	uint8_t x[8];
	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t)(v >> (8 * i));
	fl_buf_put(b, x, 8);
}

void fl_buf_put_str(struct fl_buf *b, const char *s)
{
	fl_buf_put(b, s, strlen(s));
}

void fl_buf_put_str16(struct fl_buf *b, const char *s)
{
	size_t n = strnlen(s, UINT16_MAX);

	fl_buf_put_u16(b, (uint16_t)n);
	fl_buf_put(b, s, n);
}

void fl_buf_put_str8(struct fl_buf *b, const char *s)
{
	size_t n = strnlen(s, UINT8_MAX);

	fl_buf_put_u8(b, (uint8_t)n);
	fl_buf_put(b, s, n);
}

void fl_buf_printf(struct fl_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !fl_buf_reserve(b, (size_t)n + 1))
		return;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

uint8_t *fl_buf_take(struct fl_buf *b, size_t *len)
{
	uint8_t *p = b->data;

	*len = b->len;
	fl_buf_init(b);
	return p;
}

void fl_reader_init(struct fl_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->off = 0;
	r->failed = false;
}

const uint8_t *fl_get_bytes(struct fl_reader *r, size_t n)
{
	const uint8_t *p;

	if (r->failed || n > r->len - r->off) {
		r->failed = true;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

uint8_t fl_get_u8(struct fl_reader *r)
{
	const uint8_t *p = fl_get_bytes(r, 1);
	return p ? p[0] : 0;
}

uint16_t fl_get_u16(struct fl_reader *r)
{
	const uint8_t *p = fl_get_bytes(r, 2);
	return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

uint32_t fl_get_u32(struct fl_reader *r)
{
	const uint8_t *p = fl_get_bytes(r, 4);
	return p ? fl_load_u32(p) : 0;
}

uint64_t fl_get_u64(struct fl_reader *r)
{
	const uint8_t *p = fl_get_bytes(r, 8);
	return p ? fl_load_u64(p) : 0;
}

/* A string of @len bytes, its length just read (0 if cut off). */
static const uint8_t *get_str(struct fl_reader *r, size_t len, size_t *n)
{
	const uint8_t *p = fl_get_bytes(r, len);

	*n = p != NULL ? len : 0;
	return p;
}

const uint8_t *fl_get_str16(struct fl_reader *r, size_t *n)
{
	return get_str(r, fl_get_u16(r), n);
}

const uint8_t *fl_get_str8(struct fl_reader *r, size_t *n)
{
	return get_str(r, fl_get_u8(r), n);
}

int fl_read_file(const char *path, uint8_t **out, size_t *len,
		 struct fl_err *err)
{
	bool is_stdin = strcmp(path, "-") == 0;
	struct fl_buf b;
	int fd, rc = 0;
	ssize_t n;

	fl_buf_init(&b);
	fd = is_stdin ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fl_err_set(err, errno == ENOENT ? FL_ENOENT : FL_EIO,
				  "%s: %s", path, strerror(errno));
	for (;;) {
		if (!fl_buf_reserve(&b, 65536)) {
			rc = fl_err_set(err, FL_ENOMEM, "%s: out of memory",
					path);
			goto out;
		}
		n = read(fd, b.data + b.len, b.cap - b.len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = fl_err_set(err, FL_EIO, "%s: %s", path,
					strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		b.len += (size_t)n;
	}
	b.data[b.len] = 0;
	*out = fl_buf_take(&b, len);
out:
	if (!is_stdin)
		close(fd);
	fl_buf_close(&b);
	return rc;
}

size_t fl_write_all(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	size_t done = 0;

	while (done < n) {
		ssize_t k = write(fd, p + done, n - done);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			if (k == 0)
				errno = EIO;
			break;
		}
		done += (size_t)k;
	}
	return done;
}

int fl_write_file(const char *path, const void *p, size_t len,
		  struct fl_err *err)
{
	char tmp[4096];
	int fd;

	if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >=
	    (int)sizeof tmp)
		return fl_err_set(err, FL_EINVAL, "%s: path too long", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fl_err_set(err, FL_EIO, "%s: %s", path,
				  strerror(errno));
	if (fl_write_all(fd, p, len) < len)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	fl_err_set(err, FL_EIO, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return FL_EIO;
}
