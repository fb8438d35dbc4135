/* Error codes and context messages (see fl_error.h). Pure functions, safe
 * from any thread. */
#include "base/fl_error.h"

#include <stdio.h>
#include <string.h>

const char *fl_strerror(int code)
{
	switch (code) {
	case FL_OK:
		return "success";
#define FL__TEXT(name, value, text)                                           \
	case name:                                                            \
		return text;
		FL_ERRORS(FL__TEXT)
#undef FL__TEXT
	}
	return "unknown error";
}

const char *fl_errname(int code)
{
	switch (code) {
#define FL__NAME(name, value, text)                                           \
	case name:                                                            \
		return &(#name)[3];
		FL_ERRORS(FL__NAME)
#undef FL__NAME
	}
	return NULL;
}

int fl_err_set(struct fl_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err != NULL) {
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return code;
}

void fl_err_wrap(struct fl_err *err, const char *fmt, ...)
{
	char prefix[FL_ERR_MAX];
	char joined[2 * FL_ERR_MAX + 2];
	va_list ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	snprintf(joined, sizeof joined, "%s: %s", prefix, err->msg);
	memcpy(err->msg, joined, sizeof err->msg - 1);
	err->msg[sizeof err->msg - 1] = 0;
}
