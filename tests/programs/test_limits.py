"""The limits of a process (SPEC section 10, docs/memory.md): --memory
counts everything the VM holds for it (pages, tree nodes, stacks, frames,
thread structs, finished threads not yet joined), --max-threads the
threads at once; going over either is a runtime error naming the limit,
never the host running out of memory. Peak memory is read from the
high-water mark `flock run --stats` reports."""
import os
import re

import pytest

from flockrun import run_flock

# Sanitizer builds (make asan-check) take far more host memory per byte
# the VM holds: peak-memory bounds only hold for plain builds.
SANITIZED = bool(os.environ.get("FLOCK_SAN", "").strip())

BOMB = """
fn child() { while 1 { yield(); } return 0; }
fn main() { while 1 { spawn child(); } return 0; }
"""

PARKED_AND_DEEP = """
global gate = 0;
fn waiter() { wait(&gate, 0); return 0; }
fn deep(n) { if n == 0 { return 0; } return deep(n - 1) + 1; }
fn main() {
    for i in 0..200000 { spawn waiter(); }
    print("%d\\n", deep(90000));
    return 0;
}
"""

SPAWN_PARKED = """
global gate = 0;
fn waiter() { wait(&gate, 0); return 0; }
fn main() {
    var n = 0;
    while 1 { spawn waiter(); n += 1; }
    return 0;
}
"""

SPAWN_JOIN = """
fn child(i) { return i; }
fn main() {
    var s = 0;
    for i in 0..5000 { s += join(spawn child(i)); }
    print("%d\\n", s);
    return 0;
}
"""

BIG_GALLOC = """
fn main() {
    var g = galloc(256 * 1024 * 1024);
    store64(g + 4096 * 1000, 7);
    print("%d\\n", load64(g + 4096 * 1000));
    return 0;
}
"""

DEEP = """
fn deep(n) { return deep(n + 1) + 1; }
fn main() { return deep(0); }
"""


def run(tmp_path, src, *flags):
    """Run @src with --stats; (status, stdout, stderr, peak host memory in
    KiB as --stats reports it: the process's own high-water mark)."""
    prog = tmp_path / "prog.fl"
    prog.write_text(src)
    r = run_flock(["run", str(prog), "--stats"] + list(flags))
    err = r.stderr.decode(errors="replace")
    m = re.search(r"flock: stats: .* peak host memory (\d+) KiB\n", err)
    return r.returncode, r.stdout, err, int(m.group(1)) if m else None


def test_thread_bomb_ends_at_the_memory_limit(tmp_path):
    rc, out, err, rss = run(tmp_path, BOMB, "--memory", "256MiB")
    assert rc == 70, err
    assert "out of memory (spawn; the process's memory limit, --memory, " \
           "is 256 MiB)" in err
    if not SANITIZED:
        # everything counted: the host holds little beyond the limit
        assert rss < 256 * 1024 * 1.2, "peak RSS %d KiB" % rss


def test_parked_threads_and_recursion_under_a_tiny_limit(tmp_path):
    rc, out, err, rss = run(tmp_path, PARKED_AND_DEEP, "--memory", "16KiB")
    assert rc == 70, err
    assert "the process's memory limit, --memory, is 16 KiB" in err
    if not SANITIZED:
        assert rss < 16 * 1024, "peak RSS %d KiB" % rss


def test_deep_recursion_stops_at_the_memory_limit(tmp_path):
    # No call depth or stack limit in the way: frames and stack grow until
    # the memory limit says no.
    rc, out, err, rss = run(tmp_path, DEEP, "--memory", "32MiB",
                            "--call-depth", "2147483647",
                            "--stack-words", "2147483647")
    assert rc == 70, err
    assert "the process's memory limit, --memory, is 32 MiB" in err
    if not SANITIZED:
        assert rss < 64 * 1024, "peak RSS %d KiB" % rss


def test_max_threads_counts_threads_at_once(tmp_path):
    rc, out, err, _ = run(tmp_path, SPAWN_PARKED, "--max-threads", "1000")
    assert rc == 70, err
    assert "too many threads (spawn; the process's thread limit, " \
           "--max-threads, is 1000)" in err
    # Joined threads no longer count.
    rc, out, err, _ = run(tmp_path, SPAWN_JOIN, "--max-threads", "2")
    assert rc == 0, err
    assert out == b"12497500\n"


def test_galloc_backs_pages_lazily(tmp_path):
    rc, out, err, rss = run(tmp_path, BIG_GALLOC)
    assert rc == 0, err
    assert out == b"7\n"
    if not SANITIZED:
        # 256 MiB asked, one page touched: the page table, not the pages
        assert rss < 48 * 1024, "peak RSS %d KiB" % rss


@pytest.mark.parametrize("flag,value", [
    ("--stack-words", "2147483648"), ("--call-depth", "2147483648"),
    ("--stack-words", "0"), ("--max-threads", "0"),
    ("--max-threads", "4294967296"), ("--memory", "0")])
def test_limits_out_of_range_are_usage_errors(tmp_path, flag, value):
    prog = tmp_path / "prog.fl"
    prog.write_text(SPAWN_JOIN)
    r = run_flock(["run", str(prog), flag, value])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 64
    assert flag in err and value in err
    assert err.count("\n") == 1
