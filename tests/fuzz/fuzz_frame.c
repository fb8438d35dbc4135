/* libFuzzer target for the frame decoder (src/cluster/net_frame.c), the
 * first code to see what a peer sends once the secure channel opened it.
 *
 * The input is a byte stream as a connection would deliver it: headers
 * are decoded one after another, each valid one's payload skipped, until
 * the decoder asks for more or refuses a header (which would close the
 * connection). A valid header is encoded again and must give the same 24
 * bytes. Nothing may crash, read out of bounds or accept a length outside
 * its type's bounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/net.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	for (;;) {
		struct net_header h;
		struct fl_err err;
		struct fl_buf b;
		int rc = net_header_decode(data + off, size - off, &h, &err);
		if (rc == FL_EAGAIN || rc == FL_EFORMAT)
			return 0;
		if (rc != 0 || h.length > NET_FRAME_MAX || net_msg_name(h.type) == NULL)
			abort();
		fl_buf_init(&b);
		net_frame_put(&b, &h, NULL, 0);
		if (fl_buf_failed(&b) || b.len != NET_HEADER_SIZE ||
		    memcmp(b.data, data + off, 4) != 0 ||
		    memcmp(b.data + 8, data + off + 8, NET_HEADER_SIZE - 8) != 0)
			abort();
		fl_buf_close(&b);
		off += NET_HEADER_SIZE;
		if (h.length > size - off)
			return 0; /* the payload has not all arrived */
		off += h.length;
	}
}
