/* Unit tests for src/base/fl_buf.c and src/base/fl_error.c: growable
 * buffers (appends, growth, the sticky failure flag, take), bounds-checked
 * readers (little-endian gets, reading past the end), length-prefixed
 * strings, whole-file I/O, and the error table and message buffers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/fl_buf.h"
#include "base/fl_error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Buffers ---- */

static void test_buf_init_empty(void **state)
{
	struct fl_buf b;

	(void)state;
	memset(&b, 0xa5, sizeof b);
	fl_buf_init(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	assert_false(fl_buf_failed(&b));
	/* A zero-length put allocates nothing. */
	fl_buf_put(&b, "x", 0);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	fl_buf_close(&b);
	fl_buf_close(&b); /* closing twice is harmless: close re-inits */
}

static void test_buf_little_endian(void **state)
{
	static const uint8_t want[] = {
	    0x5a,					    /* u8 */
	    0x34, 0x12,					    /* u16 */
	    0x78, 0x56, 0x34, 0x12,			    /* u32 */
	    0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, /* u64 */
	    0xff, 0xff,					    /* u16 max */
	    0x00, 0x00, 0x00, 0x80,			    /* u32 top bit */
	    'h',  'i',					    /* str */
	};
	struct fl_buf b;

	(void)state;
	fl_buf_init(&b);
	fl_buf_put_u8(&b, 0x5a);
	fl_buf_put_u16(&b, 0x1234);
	fl_buf_put_u32(&b, 0x12345678);
	fl_buf_put_u64(&b, 0x0123456789abcdefull);
	fl_buf_put_u16(&b, 0xffff);
	fl_buf_put_u32(&b, 0x80000000u);
	fl_buf_put_str(&b, "hi");
	assert_false(fl_buf_failed(&b));
	assert_int_equal(b.len, sizeof want);
	assert_memory_equal(b.data, want, sizeof want);
	assert_int_equal(fl_load_u32(want + 3), 0x12345678);
	assert_true(fl_load_u64(want + 7) == 0x0123456789abcdefull);
	assert_int_equal(fl_load_u32(want + 17), 0x80000000u);
	fl_buf_close(&b);
}

static void test_buf_growth_keeps_contents(void **state)
{
	struct fl_buf b;
	size_t last_cap = 0, grows = 0;

	(void)state;
	fl_buf_init(&b);
	for (size_t i = 0; i < 100000; i++) {
		fl_buf_put_u8(&b, (uint8_t)(i * 31 + 7));
		assert_true(b.len <= b.cap);
		if (b.cap != last_cap) {
			/* Geometric growth: few reallocations. */
			assert_true(b.cap >= 2 * last_cap);
			last_cap = b.cap;
			grows++;
		}
	}
	assert_false(fl_buf_failed(&b));
	assert_int_equal(b.len, 100000);
	assert_true(grows <= 20);
	for (size_t i = 0; i < 100000; i++)
		assert_int_equal(b.data[i], (uint8_t)(i * 31 + 7));
	fl_buf_close(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
}

static void test_buf_big_put(void **state)
{
	struct fl_buf b;
	size_t n = 1 << 20;
	uint8_t *src = malloc(n);

	(void)state;
	assert_non_null(src);
	for (size_t i = 0; i < n; i++)
		src[i] = (uint8_t)(i ^ (i >> 8));
	fl_buf_init(&b);
	fl_buf_put(&b, "ab", 2);
	fl_buf_put(&b, src, n);
	assert_false(fl_buf_failed(&b));
	assert_int_equal(b.len, n + 2);
	assert_memory_equal(b.data, "ab", 2);
	assert_memory_equal(b.data + 2, src, n);
	fl_buf_close(&b);
	free(src);
}

static void test_buf_reserve(void **state)
{
	struct fl_buf b;

	(void)state;
	fl_buf_init(&b);
	assert_true(fl_buf_reserve(&b, 1000));
	assert_true(b.cap >= 1000);
	assert_int_equal(b.len, 0);
	/* Already room: no change. */
	uint8_t *data = b.data;
	size_t cap = b.cap;
	assert_true(fl_buf_reserve(&b, cap));
	assert_ptr_equal(b.data, data);
	assert_int_equal(b.cap, cap);
	fl_buf_close(&b);
}

static void test_buf_failure_is_sticky(void **state)
{
	struct fl_buf b;

	(void)state;
	fl_buf_init(&b);
	fl_buf_put_str(&b, "keep");
	/* An impossible reservation fails without touching the contents. */
	assert_false(fl_buf_reserve(&b, SIZE_MAX));
	assert_true(fl_buf_failed(&b));
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "keep", 4);
	/* Every later append is ignored, even small ones. */
	fl_buf_put_u32(&b, 1);
	fl_buf_put_str(&b, "more");
	fl_buf_printf(&b, "%d", 42);
	assert_false(fl_buf_reserve(&b, 1));
	assert_int_equal(b.len, 4);
	assert_true(fl_buf_failed(&b));
	fl_buf_close(&b);
	assert_false(fl_buf_failed(&b));

	/* Overflowing len + n fails too, from a non-empty buffer. */
	fl_buf_init(&b);
	fl_buf_put_u8(&b, 1);
	assert_false(fl_buf_reserve(&b, SIZE_MAX / 2));
	assert_true(fl_buf_failed(&b));
	fl_buf_close(&b);
}

static void test_buf_printf(void **state)
{
	struct fl_buf b;
	char big[300];

	(void)state;
	fl_buf_init(&b);
	fl_buf_printf(&b, "%s=%d", "x", -12);
	fl_buf_printf(&b, "|%05u|", 42u);
	fl_buf_printf(&b, "%s", "");
	assert_int_equal(b.len, strlen("x=-12|00042|"));
	assert_memory_equal(b.data, "x=-12|00042|", b.len);
	/* Longer than the initial capacity. */
	memset(big, 'q', sizeof big - 1);
	big[sizeof big - 1] = 0;
	fl_buf_printf(&b, "[%s]", big);
	assert_int_equal(b.len, 12 + 2 + 299);
	assert_int_equal(b.data[12], '[');
	assert_int_equal(b.data[12 + 1 + 298], 'q');
	assert_int_equal(b.data[b.len - 1], ']');
	assert_false(fl_buf_failed(&b));
	fl_buf_close(&b);
}

static void test_buf_take(void **state)
{
	struct fl_buf b;
	uint8_t *p;
	size_t len = 123;

	(void)state;
	fl_buf_init(&b);
	p = fl_buf_take(&b, &len);
	assert_null(p);
	assert_int_equal(len, 0);

	fl_buf_put_str(&b, "hello");
	p = fl_buf_take(&b, &len);
	assert_non_null(p);
	assert_int_equal(len, 5);
	assert_memory_equal(p, "hello", 5);
	/* The buffer is reset and reusable; the bytes are the caller's. */
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	fl_buf_put_str(&b, "again");
	assert_int_equal(b.len, 5);
	assert_memory_equal(p, "hello", 5);
	free(p);
	fl_buf_close(&b);
}

/* ---- Readers ---- */

static void test_reader_gets(void **state)
{
	static const uint8_t in[] = {
	    0x5a, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 0xef, 0xcd,
	    0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 'x',  'y',
	};
	struct fl_reader r;
	const uint8_t *p;

	(void)state;
	fl_reader_init(&r, in, sizeof in);
	assert_int_equal(fl_reader_left(&r), sizeof in);
	assert_int_equal(fl_get_u8(&r), 0x5a);
	assert_int_equal(fl_get_u16(&r), 0x1234);
	assert_int_equal(fl_get_u32(&r), 0x12345678);
	assert_true(fl_get_u64(&r) == 0x0123456789abcdefull);
	assert_int_equal(fl_reader_left(&r), 2);
	p = fl_get_bytes(&r, 2);
	/* Borrowed in place, not copied. */
	assert_ptr_equal(p, in + 15);
	assert_int_equal(fl_reader_left(&r), 0);
	/* Zero bytes at the very end is fine. */
	assert_non_null(fl_get_bytes(&r, 0));
	assert_false(r.failed);
}

static void test_reader_past_end(void **state)
{
	static const uint8_t in[] = {1, 2, 3, 4, 5, 6, 7};
	struct fl_reader r;

	(void)state;
	/* Each get, when too few bytes remain, returns zero and fails without
	 * consuming anything. */
	fl_reader_init(&r, in, 1);
	assert_int_equal(fl_get_u16(&r), 0);
	assert_true(r.failed);
	assert_int_equal(r.off, 0);

	fl_reader_init(&r, in, 3);
	assert_int_equal(fl_get_u32(&r), 0);
	assert_true(r.failed);
	assert_int_equal(r.off, 0);

	fl_reader_init(&r, in, 7);
	assert_true(fl_get_u64(&r) == 0);
	assert_true(r.failed);

	fl_reader_init(&r, in, 0);
	assert_int_equal(fl_get_u8(&r), 0);
	assert_true(r.failed);

	fl_reader_init(&r, in, 7);
	assert_null(fl_get_bytes(&r, 8));
	assert_true(r.failed);

	/* A huge request must not wrap around the bounds check. */
	fl_reader_init(&r, in, 7);
	fl_get_u8(&r);
	assert_null(fl_get_bytes(&r, SIZE_MAX));
	assert_true(r.failed);
	assert_int_equal(r.off, 1);

	/* Failure is sticky: once failed, even gets that would fit return
	 * zero, so a decoder can test once at the end of a record. */
	fl_reader_init(&r, in, 7);
	assert_int_equal(fl_get_u32(&r), fl_load_u32(in));
	assert_int_equal(fl_get_u32(&r), 0); /* 3 left */
	assert_int_equal(fl_get_u8(&r), 0);
	assert_int_equal(fl_get_u16(&r), 0);
	assert_null(fl_get_bytes(&r, 0));
	assert_true(r.failed);
	assert_int_equal(r.off, 4);
}

static void test_reader_round_trip(void **state)
{
	struct fl_buf b;
	struct fl_reader r;
	uint64_t x = 0x9e3779b97f4a7c15ull;

	(void)state;
	fl_buf_init(&b);
	for (int i = 0; i < 1000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		fl_buf_put_u8(&b, (uint8_t)x);
		fl_buf_put_u16(&b, (uint16_t)x);
		fl_buf_put_u32(&b, (uint32_t)x);
		fl_buf_put_u64(&b, x);
	}
	assert_int_equal(b.len, 1000 * 15);
	x = 0x9e3779b97f4a7c15ull;
	fl_reader_init(&r, b.data, b.len);
	for (int i = 0; i < 1000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		assert_int_equal(fl_get_u8(&r), (uint8_t)x);
		assert_int_equal(fl_get_u16(&r), (uint16_t)x);
		assert_int_equal(fl_get_u32(&r), (uint32_t)x);
		assert_true(fl_get_u64(&r) == x);
	}
	assert_false(r.failed);
	assert_int_equal(fl_reader_left(&r), 0);
	fl_buf_close(&b);
}

/* Length-prefixed strings: the bytes on the wire, the round trip, the cut
 * at the width's maximum, and a reader that meets a cut-off string. */
static void test_str_prefixed(void **state)
{
	static const uint8_t want[] = {3, 0, 'a', 'b', 'c', 0, 0, 2, 'h', 'i', 0};
	static char big[70000];
	struct fl_buf b;
	struct fl_reader r;
	const uint8_t *p;
	size_t n;

	(void)state;
	fl_buf_init(&b);
	fl_buf_put_str16(&b, "abc");
	fl_buf_put_str16(&b, "");
	fl_buf_put_str8(&b, "hi");
	fl_buf_put_str8(&b, "");
	assert_int_equal(b.len, sizeof want);
	assert_memory_equal(b.data, want, sizeof want);

	fl_reader_init(&r, b.data, b.len);
	p = fl_get_str16(&r, &n);
	assert_ptr_equal(p, b.data + 2); /* borrowed in place */
	assert_int_equal(n, 3);
	assert_non_null(fl_get_str16(&r, &n));
	assert_int_equal(n, 0);
	p = fl_get_str8(&r, &n);
	assert_int_equal(n, 2);
	assert_memory_equal(p, "hi", 2);
	assert_non_null(fl_get_str8(&r, &n));
	assert_int_equal(n, 0);
	assert_false(r.failed);
	assert_int_equal(fl_reader_left(&r), 0);

	/* Longer than the width counts: cut at 65535 and 255 bytes. */
	memset(big, 'x', sizeof big - 1);
	fl_buf_close(&b);
	fl_buf_put_str16(&b, big);
	fl_buf_put_str8(&b, big);
	assert_int_equal(b.len, 2 + 65535 + 1 + 255);
	fl_reader_init(&r, b.data, b.len);
	assert_non_null(fl_get_str16(&r, &n));
	assert_int_equal(n, 65535);
	assert_non_null(fl_get_str8(&r, &n));
	assert_int_equal(n, 255);
	assert_false(r.failed);
	fl_buf_close(&b);

	/* Cut off in the length or in the bytes: NULL, a count of 0, and the
	 * reader failed. */
	fl_reader_init(&r, want, 1);
	n = 99;
	assert_null(fl_get_str16(&r, &n));
	assert_int_equal(n, 0);
	assert_true(r.failed);
	fl_reader_init(&r, want, 4);
	n = 99;
	assert_null(fl_get_str16(&r, &n));
	assert_int_equal(n, 0);
	assert_true(r.failed);
	fl_reader_init(&r, want + 7, 2);
	n = 99;
	assert_null(fl_get_str8(&r, &n));
	assert_int_equal(n, 0);
	assert_true(r.failed);
	fl_reader_init(&r, want, 0);
	assert_null(fl_get_str8(&r, &n));
	assert_true(r.failed);
}

/* ---- Files ---- */

static void test_file_round_trip(void **state)
{
	char dir[] = "/tmp/flock-test-buf-XXXXXX";
	char path[sizeof dir + 16];
	struct fl_err err = {{0}};
	uint8_t *p = NULL;
	size_t len = 0;
	uint8_t bytes[70000];

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/f.bin", dir);
	for (size_t i = 0; i < sizeof bytes; i++)
		bytes[i] = (uint8_t)(i * 7);
	bytes[10] = 0;
	assert_int_equal(fl_write_file(path, bytes, sizeof bytes, &err), 0);
	assert_int_equal(fl_read_file(path, &p, &len, &err), 0);
	assert_int_equal(len, sizeof bytes);
	assert_memory_equal(p, bytes, sizeof bytes);
	assert_int_equal(p[len], 0); /* NUL after the end */
	free(p);

	/* Overwrite with an empty file. */
	assert_int_equal(fl_write_file(path, "", 0, &err), 0);
	assert_int_equal(fl_read_file(path, &p, &len, &err), 0);
	assert_int_equal(len, 0);
	assert_int_equal(p[0], 0);
	free(p);
	assert_int_equal(unlink(path), 0);

	/* Missing file: ENOENT and a message naming it. */
	p = NULL;
	assert_int_equal(fl_read_file(path, &p, &len, &err), FL_ENOENT);
	assert_null(p);
	assert_non_null(strstr(err.msg, path));
	/* Reading a directory is an I/O error, not a crash. */
	assert_int_equal(fl_read_file(dir, &p, &len, &err), FL_EIO);
	assert_null(p);
	/* Writing into a missing directory fails and names the path. */
	snprintf(path, sizeof path, "%s/no/f", dir);
	assert_int_equal(fl_write_file(path, "x", 1, &err), FL_EIO);
	assert_non_null(strstr(err.msg, path));
	assert_int_equal(rmdir(dir), 0);
}

/* ---- Errors ---- */

static void test_err_set(void **state)
{
	struct fl_err err;
	char longer[2 * FL_ERR_MAX];

	(void)state;
	assert_int_equal(
	    fl_err_set(&err, FL_EFORMAT, "bad %s at %d", "magic", 7),
	    FL_EFORMAT);
	assert_string_equal(err.msg, "bad magic at 7");
	/* A NULL buffer still returns the code. */
	assert_int_equal(fl_err_set(NULL, FL_ENOENT, "x"), FL_ENOENT);
	/* Truncated to the buffer, always terminated. */
	memset(longer, 'z', sizeof longer - 1);
	longer[sizeof longer - 1] = 0;
	assert_int_equal(fl_err_set(&err, FL_EIO, "%s", longer), FL_EIO);
	assert_int_equal(strlen(err.msg), FL_ERR_MAX - 1);
}

static void test_err_wrap(void **state)
{
	struct fl_err err;
	char longer[FL_ERR_MAX];

	(void)state;
	fl_err_set(&err, FL_EFORMAT, "jump outside its function");
	fl_err_wrap(&err, "function %d", 3);
	assert_string_equal(err.msg, "function 3: jump outside its function");
	fl_err_wrap(&err, "module");
	assert_string_equal(err.msg,
			    "module: function 3: jump outside its function");
	fl_err_wrap(NULL, "ignored"); /* no crash */

	/* A long context still leaves a terminated message. */
	memset(longer, 'p', sizeof longer - 1);
	longer[sizeof longer - 1] = 0;
	fl_err_wrap(&err, "%s", longer);
	assert_int_equal(strlen(err.msg), FL_ERR_MAX - 1);
	assert_int_equal(err.msg[0], 'p');

	/* A long message under a short context is cut at the end. */
	memset(longer, 'm', sizeof longer - 1);
	fl_err_set(&err, FL_EIO, "%s", longer);
	fl_err_wrap(&err, "ctx");
	assert_int_equal(strlen(err.msg), FL_ERR_MAX - 1);
	assert_memory_equal(err.msg, "ctx: mmm", 8);
}

static void test_strerror_and_names(void **state)
{
	(void)state;
	/* Every declared code has its own description and name. */
#define CHECK(name, value, text)                                               \
	assert_int_equal(name, value);                                         \
	assert_string_equal(fl_strerror(name), text);                          \
	assert_string_equal(fl_errname(name), &#name[3]);
	FL_ERRORS(CHECK)
#undef CHECK
	/* Values are ABI: spot-check a few against the documented numbers. */
	assert_int_equal(FL_ENOENT, 2);
	assert_int_equal(FL_ENOMEM, 12);
	assert_int_equal(FL_EFAULT, 14);
	assert_int_equal(FL_EFORMAT, 100);
	assert_string_equal(fl_errname(FL_ENOENT), "ENOENT");
	assert_string_equal(fl_errname(FL_EFORMAT), "EFORMAT");
	assert_string_equal(fl_strerror(FL_ENOMEM), "out of memory");
	assert_string_equal(fl_strerror(0), "success");
	assert_null(fl_errname(0));
	/* Unknown codes. */
	assert_string_equal(fl_strerror(3), "unknown error");
	assert_string_equal(fl_strerror(-2), "unknown error");
	assert_string_equal(fl_strerror(99999), "unknown error");
	assert_null(fl_errname(3));
	assert_null(fl_errname(-FL_ENOENT));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_buf_init_empty),
	    cmocka_unit_test(test_buf_little_endian),
	    cmocka_unit_test(test_buf_growth_keeps_contents),
	    cmocka_unit_test(test_buf_big_put),
	    cmocka_unit_test(test_buf_reserve),
	    cmocka_unit_test(test_buf_failure_is_sticky),
	    cmocka_unit_test(test_buf_printf),
	    cmocka_unit_test(test_buf_take),
	    cmocka_unit_test(test_reader_gets),
	    cmocka_unit_test(test_reader_past_end),
	    cmocka_unit_test(test_reader_round_trip),
	    cmocka_unit_test(test_str_prefixed),
	    cmocka_unit_test(test_file_round_trip),
	    cmocka_unit_test(test_err_set),
	    cmocka_unit_test(test_err_wrap),
	    cmocka_unit_test(test_strerror_and_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
