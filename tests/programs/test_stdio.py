"""A process's stdin, stdout and stderr (src/vm/vm_stdio.c): reads that
never hold a worker or the end of the process, output errors reported to
the program and to the shell, output that outruns its reader, and stdout
and stderr kept in the order they were written."""
import os
import select
import subprocess
import time

from flockrun import ROOT, flock_path

# A thread blocks reading stdin; main exits at once. The process must end
# with main's status although stdin stays open with no data.
READER_EXIT = """
fn reader() {
    var b = alloc(16);
    return read(0, b, 16);
}
fn main() {
    spawn reader();
    yield();
    exit(3);
}
"""

# Writes until a write fails, then reports the code on stderr.
WRITE_UNTIL_ERROR = """
fn main() {
    var line = "0123456789012345678901234567890123456789\\n";
    var n = 0;
    while 1 {
        var r = write(1, line, 41);
        if r < 0 {
            eprint("write returned %d after %d lines\\n", r, n);
            return 5;
        }
        n += 1;
    }
    return 0;
}
"""

# Ignores every error: a shell's `yes`.
YES = """
fn main() {
    while 1 { write(1, "y\\n", 2); }
    return 0;
}
"""

BIG = """
fn main() {
    var n = 4 * 1024 * 1024;
    var b = alloc(n);
    fill(b, 'x', n);
    var total = 0;
    for i in 0..4 { total += write(1, b, n); }
    eprint("%d\\n", total);
    return 0;
}
"""

INTERLEAVE = """
fn main() {
    for i in 0..5 {
        print("out %d\\n", i);
        eprint("err %d\\n", i);
    }
    return 0;
}
"""


def popen(tmp_path, src, **kw):
    prog = tmp_path / "prog.fl"
    prog.write_text(src)
    env = dict(os.environ)
    env.pop("FLOCK_VM", None)
    return subprocess.Popen([flock_path(), "run", str(prog)], cwd=str(ROOT),
                            env=env, **kw)


def test_exit_does_not_wait_for_a_pending_read(tmp_path):
    p = popen(tmp_path, READER_EXIT, stdin=subprocess.PIPE,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        rc = p.wait(timeout=10)  # stdin stays open, with nothing in it
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
    assert rc == 3, p.stderr.read()


def test_read_parks_without_holding_the_only_worker(tmp_path):
    # One worker: a thread waiting for input must not stop main, which
    # prints before any input arrives.
    src = """
    fn reader() {
        var b = alloc(16);
        var n = read(0, b, 16);
        write(1, b, n);
        return 0;
    }
    fn main() {
        var t = spawn reader();
        yield();
        var s = 0;
        for i in 0..1000000 { s += i; }
        print("%d\\n", s);
        write(2, "x", 1);
        join(t);
        return 0;
    }
    """
    prog = tmp_path / "prog.fl"
    prog.write_text(src)
    p = subprocess.Popen([flock_path(), "run", str(prog), "--cpus", "1"],
                         cwd=str(ROOT), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([p.stderr], [], [], 10)
        assert ready, "main did not run while a thread waited for input"
        assert p.stderr.read(1) == b"x"
        p.stdin.write(b"late\n")
        p.stdin.close()
        out, err = p.stdout.read(), p.stderr.read()
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert out == b"499999500000\nlate\n"


def test_closed_pipe_write_returns_epipe(tmp_path):
    # `flock run prog | head -c 100`: the program sees -32 (EPIPE).
    p = popen(tmp_path, WRITE_UNTIL_ERROR, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    p.stdout.read(100)
    p.stdout.close()
    try:
        rc = p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode()
    assert rc == 5, err
    assert "write returned -32 after" in err


def test_closed_pipe_ends_a_program_that_ignores_it(tmp_path):
    # `yes | head`: the program never checks; it ends as SIGPIPE would
    # end it, with 128 + 13 and no message.
    p = popen(tmp_path, YES, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    try:
        rc = p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == 141
    assert p.stderr.read() == b""


def test_full_disk_is_reported(tmp_path):
    # The last output fails at the end: the status says so, with a line.
    prog = tmp_path / "prog.fl"
    prog.write_text('fn main() { print("hello\\n"); return 0; }\n')
    with open("/dev/full", "wb") as full:
        r = subprocess.run([flock_path(), "run", str(prog)], cwd=str(ROOT),
                           stdout=full, stderr=subprocess.PIPE, timeout=10)
    assert r.returncode == 74
    assert b"writing stdout: no space left" in r.stderr


def test_full_disk_error_seen_by_the_program(tmp_path):
    with open("/dev/full", "wb") as full:
        p = popen(tmp_path, WRITE_UNTIL_ERROR, stdout=full,
                  stderr=subprocess.PIPE)
        try:
            rc = p.wait(timeout=10)
        finally:
            if p.poll() is None:
                p.kill()  # a flock that never reports the error
                p.wait()
    err = p.stderr.read().decode()
    assert rc == 5, err
    assert "write returned -28 after" in err


def test_output_larger_than_the_queue_all_arrives(tmp_path):
    # 16 MiB through a reader that takes its time: writers park and resume
    # where they stopped, and every byte arrives once.
    p = popen(tmp_path, BIG, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = 0
    time.sleep(0.3)
    while True:
        b = p.stdout.read(65536)
        if not b:
            break
        assert set(b) == {ord("x")}
        got += len(b)
    rc = p.wait(timeout=30)
    assert rc == 0
    assert got == 16 * 1024 * 1024
    assert p.stderr.read() == b"16777216\n"


def test_stdout_and_stderr_keep_their_order(tmp_path):
    prog = tmp_path / "prog.fl"
    prog.write_text(INTERLEAVE)
    r = subprocess.run([flock_path(), "run", str(prog)], cwd=str(ROOT),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    assert r.returncode == 0
    want = "".join("out %d\nerr %d\n" % (i, i) for i in range(5))
    assert r.stdout.decode() == want
