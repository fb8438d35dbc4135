#!/usr/bin/env python3
"""Write the DSM fuzz seeds: scripts for tests/fuzz/fuzz_dsm.c in
tests/fuzz/seeds-dsm/.

The encoder here is independent of the C one: it follows the wire format
documented at the top of src/dsm/dsm_int.h and in DSM_MESSAGES (a 28-byte
header: u8 version, u8 type, u16 sender, u64 request id, u64 done, u64
page; then each type's payload, all little-endian). A script record is u8
what (< 128: a message, then u8 sender, u16 length, the bytes; >= 128: a
local call, kind (what >> 2) & 31, wait what & 3, then u8 page, u8 value).
Node 0 of 3 is fuzzed; page p is homed at p % 3. Node 0's own map: page
% 5 == 4 unmapped, == 3 read-only; page % 7 == 1 keeps live blocks.

Run from anywhere: python3 tests/fuzz/make_dsm_seeds.py. The output is
deterministic; commit it.
"""
import pathlib
import struct

(GET, PAGE, DIFF, DIFF_ACK, NOTE, NOTE_ACK, ATOMIC, ATOMIC_REPLY, UNMAPPED,
 SYNC, SYNC_REPLY, QUEUED, SYNC_ACK, FREE, FREE_REPLY) = range(1, 16)
VERSION = 2
LOCK, UNLOCK, WAITEQ, WAKE = range(4)
RO, RW = 1, 2


def msg(type_, frm, rid, page, payload=b"", done=1):
    return struct.pack("<BBHQQQ", VERSION, type_, frm, rid, done, page) + payload


def page(writers, sharers, dver, access=RW, live=(), data=bytes(4096)):
    out = struct.pack("<QQQBH", writers, sharers, dver, access, len(live)) + data
    for off, n in live:
        out += struct.pack("<HH", off, n)
    return out


def deliver(frm, m):
    return struct.pack("<BBH", 0, frm, len(m)) + m


def call(kind, wait, page, value):
    # kind: 0 read, 1 write, 2 release, 3 acquire, 4 atomic, 5 lock,
    # 6 unlock, 7 wait (for 0..: value / 8), 8 wake, 9 free, 10 map,
    # 11 write (at value * 16)
    return bytes([128 | (kind << 2) | wait, page, value])


def diff(runs):
    out = struct.pack("<H", len(runs))
    for off, data in runs:
        out += struct.pack("<HH", off, len(data)) + data
    return out


seeds = {
    # The home (node 0) serves a page, merges a diff, runs an atomic.
    "home": deliver(1, msg(GET, 1, 1, 3))
    + deliver(1, msg(DIFF, 1, 2, 3, diff([(0, b"\x01\x02"), (8, b"\xff")])))
    + deliver(2, msg(ATOMIC, 2, 1, 6, struct.pack("<BHQQ", 1, 16, 5, 0)))
    + deliver(1, msg(GET, 1, 3, 9))  # page 9: read-only, unmapped at 4
    + deliver(1, msg(DIFF, 1, 2, 3, diff([(0, b"\x01\x02")])))  # a duplicate
    + deliver(2, msg(NOTE_ACK, 2, 9, 3)),
    # Node 0 caches page 1 (homed at 1): a miss, the page, a write, a
    # release and its ack, a note.
    "cache": call(0, 0, 1, 0)
    + deliver(1, msg(PAGE, 1, 1, 1, page(0, 1, 0, RW, [(0, 64), (64, 8)])))
    + call(1, 1, 1, 7)
    + call(2, 1, 0, 0)
    + deliver(1, msg(DIFF_ACK, 1, 2, 1, struct.pack("<QQ", 1, 1)))
    + deliver(1, msg(NOTE, 1, 5, 1, struct.pack("<QQ", 6, 2)))
    + call(3, 2, 0, 0),
    # An atomic at page 2's home (node 2) and its reply.
    "atomic": call(4, 3, 2, 1)
    + deliver(2, msg(ATOMIC_REPLY, 2, 1, 2, struct.pack("<BQ", 0, 41))),
    # The home's own write to a page another node shares: a note out.
    "note": deliver(1, msg(GET, 1, 1, 0))
    + call(1, 0, 0, 3)
    + call(2, 0, 0, 0)
    + deliver(1, msg(NOTE_ACK, 1, 1, 0)),
    # Sync ops at node 0's home: node 1 locks page 3's word, node 2
    # queues behind it (twice: a duplicate), node 0's own caller queues
    # too; node 1 unlocks (hands it to node 2); node 2's ack is not
    # needed, node 1's unlock of 0 later is refused; a wait and a wake.
    "sync": deliver(1, msg(SYNC, 1, 1, 3, struct.pack("<BHQ", LOCK, 8, 0)))
    + deliver(2, msg(SYNC, 2, 1, 3, struct.pack("<BHQ", LOCK, 8, 0)))
    + deliver(2, msg(SYNC, 2, 1, 3, struct.pack("<BHQ", LOCK, 8, 0)))
    + call(5, 0, 3, 8)
    + deliver(1, msg(SYNC, 1, 2, 3, struct.pack("<BHQ", UNLOCK, 8, 0), 2))
    + deliver(2, msg(SYNC, 2, 2, 3, struct.pack("<BHQ", UNLOCK, 8, 0), 2))
    + deliver(2, msg(SYNC, 2, 3, 3, struct.pack("<BHQ", WAITEQ, 16, 0), 3))
    + call(8, 1, 3, 16)
    + deliver(1, msg(SYNC_ACK, 1, 7, 3)),
    # Node 0 waits at node 1's home (page 1): queued, then answered
    # asking for an ack; a late QUEUED.
    "queued": call(7, 2, 1, 0)
    + deliver(1, msg(QUEUED, 1, 1, 1))
    + deliver(1, msg(SYNC_REPLY, 1, 1, 1, struct.pack("<BBQ", 0, 1, 0)))
    + deliver(1, msg(QUEUED, 1, 1, 1)),
    # Frees: one from node 2 at node 0's home (page 6), one of node 0's
    # at node 1's (page 4) and its reply; a page unmapped there.
    "free": deliver(2, msg(FREE, 2, 1, 6, struct.pack("<H", 16)))
    + deliver(2, msg(FREE, 2, 2, 6, struct.pack("<H", 8)))
    + call(0, 3, 4, 0)
    + deliver(1, msg(PAGE, 1, 1, 4, page(2, 1, 1)))
    + call(9, 0, 4, 2)
    + deliver(1, msg(FREE_REPLY, 1, 2, 4, struct.pack("<BQQ", 0, 4, 1)))
    + call(0, 1, 7, 0)
    + deliver(1, msg(UNMAPPED, 1, 3, 7)),
}

out = pathlib.Path(__file__).resolve().parent / "seeds-dsm"
out.mkdir(exist_ok=True)
for name, data in seeds.items():
    (out / name).write_bytes(data)
