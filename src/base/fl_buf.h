/* Growable byte buffers for encoders, and bounds-checked readers for
 * decoders of untrusted bytes.
 *
 * A struct fl_buf owns its bytes; fl_buf_close() frees them. Appends never
 * fail silently: on allocation failure the buffer is marked failed, further
 * appends are ignored, and fl_buf_failed() reports it once at the end, so an
 * encoder checks a single flag instead of every call.
 *
 * A struct fl_reader borrows its bytes. Every get checks the remaining length;
 * past the end it returns zero values and sets the reader's failed flag, so a
 * decoder can read a whole record and test once. All integers little-endian. */
#ifndef FLOCK_BASE_FL_BUF_H
#define FLOCK_BASE_FL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fl_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
	bool failed;
};

void fl_buf_init(struct fl_buf *b);
void fl_buf_close(struct fl_buf *b);
/* Make room for @n more bytes; returns false (and marks failure) if not. */
bool fl_buf_reserve(struct fl_buf *b, size_t n);
void fl_buf_put(struct fl_buf *b, const void *p, size_t n);
void fl_buf_put_u8(struct fl_buf *b, uint8_t v);
void fl_buf_put_u16(struct fl_buf *b, uint16_t v);
void fl_buf_put_u32(struct fl_buf *b, uint32_t v);
void fl_buf_put_u64(struct fl_buf *b, uint64_t v);
/* @s's bytes, no length, no NUL. */
void fl_buf_put_str(struct fl_buf *b, const char *s);
/* A length-prefixed string: @s's length as a u16, then its bytes (no NUL).
 * A longer @s than the u16 can count is cut at 65535 bytes. */
void fl_buf_put_str16(struct fl_buf *b, const char *s);
/* The same with a u8 length: at most 255 bytes. */
void fl_buf_put_str8(struct fl_buf *b, const char *s);
void fl_buf_printf(struct fl_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline bool fl_buf_failed(const struct fl_buf *b)
{
	return b->failed;
}
/* Hand the bytes to the caller (who frees them with free()); @b is reset. */
uint8_t *fl_buf_take(struct fl_buf *b, size_t *len);

struct fl_reader {
	const uint8_t *p;
	size_t len;
	size_t off;
	bool failed;
};

void fl_reader_init(struct fl_reader *r, const void *p, size_t len);
static inline size_t fl_reader_left(const struct fl_reader *r)
{
	return r->len - r->off;
}
uint8_t fl_get_u8(struct fl_reader *r);
uint16_t fl_get_u16(struct fl_reader *r);
uint32_t fl_get_u32(struct fl_reader *r);
uint64_t fl_get_u64(struct fl_reader *r);
/* Borrow @n bytes in place, or NULL (and failed) if fewer remain. */
const uint8_t *fl_get_bytes(struct fl_reader *r, size_t n);
/* Borrow a string fl_buf_put_str16 (or _str8) wrote: its bytes in place
 * (not NUL-terminated; checking them is the caller's) with their count in
 * *@n, or NULL (and failed, *@n 0) if the length or the bytes are cut
 * off. */
const uint8_t *fl_get_str16(struct fl_reader *r, size_t *n);
const uint8_t *fl_get_str8(struct fl_reader *r, size_t *n);

/* Little-endian loads and stores on raw memory. */
static inline uint32_t fl_load_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}
static inline uint64_t fl_load_u64(const uint8_t *p)
{
	return (uint64_t)fl_load_u32(p) | (uint64_t)fl_load_u32(p + 4) << 32;
}

/* Read a whole file into memory (plus a NUL after the end, not counted in
 * @len). Returns 0 or an FL_E* code with @err naming the file. The caller
 * frees *@out with free(). "-" reads standard input. */
struct fl_err;
int fl_read_file(const char *path, uint8_t **out, size_t *len,
		 struct fl_err *err);

/* Write all @n bytes to @fd, retrying short writes and EINTR; returns how
 * many were written before an error (errno tells which). */
size_t fl_write_all(int fd, const void *buf, size_t n);

/* Write @len bytes to @path atomically (temporary file + rename). */
int fl_write_file(const char *path, const void *p, size_t len,
		  struct fl_err *err);

#endif
