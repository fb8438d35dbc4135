/* Framing of the messages between machines (net.h): encode a frame,
 * decode and check a header, count traffic.
 *
 * The decoder is the first code that sees bytes a peer sent (after the
 * secure channel opened them): it checks the version, the type against
 * NET_MESSAGES, the flags against those it knows and the payload length
 * against the type's bounds before anyone allocates or reads a payload,
 * so a peer cannot make a machine buffer more than a type allows.
 * Failure modes: FL_EFORMAT naming the field; the caller closes that
 * connection. Threads: any; no state. */
#include "cluster/net.h"

#include <inttypes.h>

static const struct {
	const char *name;
	uint32_t min, max;
} msgs[NET_MSG__END] = {
#define NET__INFO(name, code, lo, hi, doc) [code] = {#name, lo, hi},
	NET_MESSAGES(NET__INFO)
#undef NET__INFO
};

const char *net_msg_name(unsigned type)
{
	return type < NET_MSG__END ? msgs[type].name : NULL;
}

void net_frame_put(struct fl_buf *b, const struct net_header *h,
		   const void *payload, size_t len)
{
	fl_buf_put_u8(b, h->version);
	fl_buf_put_u8(b, h->type);
	fl_buf_put_u16(b, h->flags);
	fl_buf_put_u32(b, (uint32_t)len);
	fl_buf_put_u64(b, h->request);
	fl_buf_put_u32(b, h->machine);
	fl_buf_put_u32(b, h->incarnation);
	fl_buf_put(b, payload, len);
}

int net_header_decode(const uint8_t *p, size_t n, struct net_header *h,
		      struct fl_err *err)
{
	struct fl_reader r;

	if (n < NET_HEADER_SIZE)
		return FL_EAGAIN;
	fl_reader_init(&r, p, NET_HEADER_SIZE);
	h->version = fl_get_u8(&r);
	h->type = fl_get_u8(&r);
	h->flags = fl_get_u16(&r);
	h->length = fl_get_u32(&r);
	h->request = fl_get_u64(&r);
	h->machine = fl_get_u32(&r);
	h->incarnation = fl_get_u32(&r);
	if (h->version != NET_VERSION)
		return fl_err_set(err, FL_EFORMAT, "frame: version %u (this "
						  "machine speaks %u)",
				  h->version, NET_VERSION);
	if (net_msg_name(h->type) == NULL)
		return fl_err_set(err, FL_EFORMAT, "frame: unknown type %u",
				  h->type);
	if (h->flags & ~NET_FLAGS_KNOWN)
		return fl_err_set(err, FL_EFORMAT,
				  "frame: %s with unknown flags 0x%04x",
				  msgs[h->type].name, h->flags);
	if (h->length < msgs[h->type].min || h->length > msgs[h->type].max)
		return fl_err_set(err, FL_EFORMAT,
				  "frame: %s of %" PRIu32 " payload bytes (%" PRIu32
				  " to %" PRIu32 ")",
				  msgs[h->type].name, h->length, msgs[h->type].min,
				  msgs[h->type].max);
	return 0;
}

void net_count(struct net_counters *c, const struct net_header *h)
{
	if (h->type < NET_MSG__END) {
		c->frames[h->type]++;
		c->bytes[h->type] += NET_HEADER_SIZE + (uint64_t)h->length;
	}
}
