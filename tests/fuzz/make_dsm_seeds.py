#!/usr/bin/env python3
"""Write the DSM fuzz seeds: scripts for tests/fuzz/fuzz_dsm.c in
tests/fuzz/seeds-dsm/.

The encoder here is independent of the C one: it follows the wire format
documented at the top of src/dsm/dsm_int.h (a 28-byte header: u8 version,
u8 type, u16 sender, u64 request id, u64 done, u64 page; then each type's
payload, all little-endian). A script record is u8 what (< 128: a message,
then u8 sender, u16 length, the bytes; >= 128: a local call, then u8 page,
u8 value). Node 0 of 3 is fuzzed; page p is homed at p % 3.

Run from anywhere: python3 tests/fuzz/make_dsm_seeds.py. The output is
deterministic; commit it.
"""
import pathlib
import struct

GET, PAGE, DIFF, DIFF_ACK, NOTE, NOTE_ACK, ATOMIC, ATOMIC_REPLY = range(1, 9)


def msg(type_, frm, rid, page, payload=b"", done=1):
    return struct.pack("<BBHQQQ", 1, type_, frm, rid, done, page) + payload


def deliver(frm, m):
    return struct.pack("<BBH", 0, frm, len(m)) + m


def call(kind, wait, page, value):
    # kind: 0 read, 1 write, 2 release, 3 acquire, 4 atomic
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
    + deliver(1, msg(DIFF, 1, 2, 3, diff([(0, b"\x01\x02")])))  # a duplicate
    + deliver(2, msg(NOTE_ACK, 2, 9, 3)),
    # Node 0 caches page 1 (homed at 1): a miss, the page, a write, a
    # release and its ack, a note.
    "cache": call(0, 0, 1, 0)
    + deliver(1, msg(PAGE, 1, 1, 1, struct.pack("<QQQ", 0, 1, 0) + bytes(4096)))
    + call(1, 1, 1, 7)
    + call(2, 1, 0, 0)
    + deliver(1, msg(DIFF_ACK, 1, 2, 1, struct.pack("<QQ", 1, 1)))
    + deliver(1, msg(NOTE, 1, 5, 1, struct.pack("<QQ", 6, 2)))
    + call(3, 2, 0, 0),
    # An atomic at page 2's home (node 2) and its reply.
    "atomic": call(4, 3, 2, 1)
    + deliver(2, msg(ATOMIC_REPLY, 2, 1, 2, struct.pack("<Q", 41))),
    # The home's own write to a page another node shares: a note out.
    "note": deliver(1, msg(GET, 1, 1, 0))
    + call(1, 0, 0, 3)
    + call(2, 0, 0, 0)
    + deliver(1, msg(NOTE_ACK, 1, 1, 0)),
}

out = pathlib.Path(__file__).resolve().parent / "seeds-dsm"
out.mkdir(exist_ok=True)
for name, data in seeds.items():
    (out / name).write_bytes(data)
