/* Error codes shared by every layer, declared once in FL_ERRORS.
 *
 * Functions return int: 0 on success or a positive FL_E* code. Human context
 * travels separately in a struct fl_err message buffer, wrapped on the way up
 * ("module: function 3: jump outside its function"). Instructions that fail
 * for reasons outside the program push the negated code (-FL_ENOENT, ...);
 * docs/isa.md lists the values. */
#ifndef FLOCK_BASE_FL_ERROR_H
#define FLOCK_BASE_FL_ERROR_H

#include <stdarg.h>
#include <stddef.h>

/* X(name, value, description) -- values are part of the program ABI: never
 * renumber, only append. */
#define FL_ERRORS(X)                                                          \
	X(FL_EPERM, 1, "permission denied")                                   \
	X(FL_ENOENT, 2, "no such file or directory")                          \
	X(FL_EIO, 5, "input/output error")                                    \
	X(FL_EBADF, 9, "bad file descriptor")                                 \
	X(FL_EAGAIN, 11, "not yet: more input needed")                         \
	X(FL_ENOMEM, 12, "out of memory")                                     \
	X(FL_EFAULT, 14, "bad address")                                       \
	X(FL_EEXIST, 17, "file exists")                                       \
	X(FL_ENOTDIR, 20, "not a directory")                                  \
	X(FL_EISDIR, 21, "is a directory")                                    \
	X(FL_EINVAL, 22, "invalid argument")                                  \
	X(FL_ENOSPC, 28, "no space left")                                     \
	X(FL_EPIPE, 32, "broken pipe")                                        \
	X(FL_ERANGE, 34, "result out of range")                               \
	X(FL_ENOSYS, 38, "not supported by this VM")                          \
	X(FL_ELOST, 75, "lost with its machine")                              \
	X(FL_EFORMAT, 100, "malformed module")                                \
	X(FL_ESYNTAX, 101, "program did not compile")                         \
	X(FL_EUSAGE, 102, "usage error")

enum {
	FL_OK = 0,
#define FL__ENUM(name, value, text) name = value,
	FL_ERRORS(FL__ENUM)
#undef FL__ENUM
};

/* The description of @code (positive), or "unknown error". */
const char *fl_strerror(int code);

/* The symbolic name of @code ("FL_ENOENT" -> "ENOENT"), or NULL. */
const char *fl_errname(int code);

/* A context message carried up with an error code. */
#define FL_ERR_MAX 512
struct fl_err {
	char msg[FL_ERR_MAX];
};

/* Set @err's message (printf-style) and return @code, so a failure site
 * reads: return fl_err_set(err, FL_EFORMAT, "bad magic"). @err may be NULL. */
int fl_err_set(struct fl_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefix @err's message with a formatted context and ": ". */
void fl_err_wrap(struct fl_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
