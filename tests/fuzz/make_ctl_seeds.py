#!/usr/bin/env python3
"""Write the control plane's fuzz seeds: tests/fuzz/seeds-ctl/.

The encoder here is independent of the C one: it follows the layouts
documented at the top of src/cluster/ctl_fsm.c and takes command codes
from CTL_COMMANDS in src/cluster/ctl.h, so seeds that decode and encode
back to the same bytes (checked by test_fuzz_seeds_are_valid in
tests/unit/cluster/test_ctl.c) cross-check the C code against the
documentation. One seed per command type (entry-*) and two snapshots
(snap-*): an empty state and one with something in every table.

Run from anywhere: python3 tests/fuzz/make_ctl_seeds.py. The output is
deterministic; rerun it after the format changes, and commit the result.
"""
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fuzz" / "seeds-ctl"

HEADER = (ROOT / "src" / "cluster" / "ctl.h").read_text()
CMD = {m.group(1): int(m.group(2))
       for m in re.finditer(r"^\s*X\((\w+), (\d+), \"", HEADER, re.M)}
VERSION = int(re.search(r"#define CTL_VERSION (\d+)", HEADER).group(1))
ACTIVE, LEAVING, LEFT, LOST = 1, 2, 3, 4
VOTER, STANDBY = 1, 2
SUBMITTED, RUNNING, ENDED = 1, 2, 3


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v & 0xFFFFFFFF)
def u64(v): return struct.pack("<Q", v)
def string(s): return u16(len(s)) + s.encode()
def pad8(b): return b + b"\0" * (-len(b) % 8)


def member(mid, addr, key, state=ACTIVE, role=VOTER, inc=1, lost_at=0,
           back_at=0):
    return (u32(mid) + string(addr) + bytes([key]) * 32 + u32(4) +
            u64(1 << 33) + u64(1 << 40) + u32(inc) + u8(state) + u8(role) +
            u64(lost_at) + u64(back_at))


def user(name, key, admin):
    return string(name) + bytes([key]) * 32 + u8(admin)


def entry(name, payload, client=0, seq=0):
    return pad8(u8(VERSION) + u8(CMD[name]) + u16(0) + u32(len(payload)) +
                u64(client) + u64(seq) + payload)


ENTRIES = {
    "create": entry("CREATE", string("lab") + member(0, "10.0.0.1:7000", 1) +
                    user("root", 0xA0, 1), 1, 1),
    "member-add": entry("MEMBER_ADD", member(0, "10.0.0.2:7000", 2), 1, 2),
    "member-state": entry("MEMBER_STATE", u32(2) + u32(2) + u8(LOST) +
                          u8(VOTER) + u64(1764633600000), 1, 3),
    "user-add": entry("USER_ADD", user("alice", 0x10, 0), 1, 4),
    "user-remove": entry("USER_REMOVE", string("alice"), 1, 5),
    "submit": entry("SUBMIT", string("root") + u32(1), 2, 1),
    "proc-state": entry("PROC_STATE", u64(1) + u32(1) + u8(RUNNING) + u32(0),
                        2, 2),
    "barrier": entry("BARRIER", b""),
}


def snapshot(vm, next_pid, next_member, applied, members, users, procs,
             sessions):
    b = b"FLKS" + u16(VERSION) + string(vm) + u64(next_pid) + \
        u32(next_member) + u64(applied)
    b += u32(len(members)) + b"".join(members)
    b += u32(len(users)) + b"".join(users)
    b += u32(len(procs))
    for pid, owner, client, seq, machine, state, status, lost in procs:
        b += (u64(pid) + string(owner) + u64(client) + u64(seq) +
              u32(machine) + u8(state) + u32(status) + u8(lost))
    b += u32(len(sessions))
    for client, seq, rc, value, last in sessions:
        b += u64(client) + u64(seq) + u32(rc) + u64(value) + u64(last)
    return pad8(b)


SNAPSHOTS = {
    "empty": snapshot("", 1, 1, 0, [], [], [], []),
    "rich": snapshot(
        "lab", 4, 4, 9,
        [member(1, "10.0.0.1:7000", 1),
         member(2, "10.0.0.2:7000", 2, LOST, VOTER, 3, 1764633600000),
         member(3, "[::1]:7001", 3, ACTIVE, STANDBY)],
        [user("root", 0xA0, 1), user("alice", 0x10, 0)],
        [(1, "root", 2, 1, 1, RUNNING, 0, 0),
         (2, "root", 3, 1, 2, ENDED, 75, 1),
         (3, "alice", 0, 0, 0, ENDED, -2, 0)],
        [(1, 5, 0, 0, 6), (2, 2, 1, 0, 9)]),
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, b in ENTRIES.items():
        (OUT / f"entry-{name}").write_bytes(b)
    for name, b in SNAPSHOTS.items():
        (OUT / f"snap-{name}").write_bytes(b)


if __name__ == "__main__":
    main()
