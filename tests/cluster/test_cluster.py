"""A Flock VM of real daemons on loopback addresses (cluster.py): forming
it, who may join, the client commands, every golden program against the
embedded VM, restarts, the leader's loss, and at-most-once submission.

One VM of three machines serves the module; tests that kill or restart
machines come last and use their own VMs.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cluster import ROOT, Cluster, flock_path

sys.path.insert(0, str(ROOT / "tests" / "programs"))
from flockrun import PROGRAMS, Spec, run_flock  # noqa: E402

ALL = sorted(list(PROGRAMS.glob("**/*.fla")) +
             [p for p in PROGRAMS.glob("**/*.fl") if "lib" not in p.parts])


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    # ram:50% is also the embedded VM's default memory limit, which
    # messages about the limit name
    c = Cluster(tmp_path_factory.mktemp("vm"), provide="cpu:1,ram:50%,disk:1GiB")
    try:
        yield c.up(3)
    finally:
        c.stop()


def test_status_lists_every_machine(vm):
    r = vm.flock(["status"], n=2)
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    for n in (1, 2, 3):
        assert re.search(r"^m%d\s+127\.0\.0\.%d:%d\s+active\s+voter" % (n, n, vm.port),
                         out, re.M), out
    assert out.count("*") == 1  # one leader
    assert "VM testvm, 3 machines" in out


def test_credentials_and_token_files(vm):
    m1 = vm.machines[0]
    tok = m1.data / "token"
    assert oct(tok.stat().st_mode & 0o777) == "0o600"
    assert tok.read_text().strip() == vm.token
    cred = vm.admin_home / "vms" / "testvm"
    assert oct(cred.stat().st_mode & 0o777) == "0o600"
    assert (m1.data / "identity").exists()


def test_wrong_token_refused(vm, tmp_path):
    bad = "A" * 43
    r = subprocess.run(
        [flock_path(), "join", vm.addr(1), "--token", bad, "--listen",
         "127.0.0.9:%d" % vm.port, "--data", str(tmp_path / "m9"),
         "--provide", "cpu:1,ram:64MiB,disk:64MiB", "--foreground"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=40,
        env=vm.env(tmp_path / "h9"))
    assert r.returncode == 77, r.stderr
    assert b"refused" in r.stderr
    # the VM did not change
    assert "3 machines" in vm.flock(["status"]).stdout.decode()


def test_malformed_token_is_a_usage_error(vm, tmp_path):
    r = subprocess.run(
        [flock_path(), "join", vm.addr(1), "--token", "short",
         "--data", str(tmp_path / "m9")], capture_output=True, timeout=20,
        env=vm.env(tmp_path / "h9"))
    assert r.returncode == 64
    assert b"token is malformed" in r.stderr


def test_client_without_credentials_gets_77(vm, tmp_path):
    r = subprocess.run([flock_path(), "status", "--vm", vm.addr(1)],
                       capture_output=True, timeout=20,
                       env=vm.env(tmp_path / "nobody"))
    assert r.returncode == 77, r.stderr
    assert r.stderr.count(b"\n") == 1


def test_client_with_another_vms_credentials_gets_77(vm, tmp_path):
    # credentials for a VM of the same name made elsewhere: wrong keys
    other = Cluster(tmp_path / "other", vm="testvm")
    try:
        other.new()
        r = subprocess.run([flock_path(), "status", "--vm", vm.addr(1)],
                           capture_output=True, timeout=20,
                           env=vm.env(other.admin_home))
        assert r.returncode == 77, r.stderr
        assert r.stderr.count(b"\n") == 1
    finally:
        other.stop()


def test_unreachable_vm_gets_69(vm):
    r = subprocess.run([flock_path(), "status", "--vm", "testvm@127.0.0.1:1"],
                       capture_output=True, timeout=20, env=vm.env())
    assert r.returncode == 69, r.stderr
    assert r.stderr.count(b"\n") == 1


def test_bad_vm_address_is_a_usage_error(vm):
    r = subprocess.run([flock_path(), "status", "--vm", "BAD@@x"],
                       capture_output=True, timeout=20, env=vm.env())
    assert r.returncode == 64, r.stderr


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(ROOT)) for p in ALL])
def test_golden_program_same_as_embedded(vm, path):
    spec = Spec(path)
    flags = [f for f in spec.flags if not f.startswith("--debug")]
    local = run_flock(["run", spec.rel] + flags +
                      (["--"] + spec.args if spec.args else []),
                      stdin=spec.stdin_bytes())
    n = 1 + hash(spec.rel) % 3
    remote = vm.run(spec.rel, flags=flags, args=spec.args, n=n,
                    stdin=spec.stdin_bytes())
    assert remote.returncode == local.returncode, remote.stderr
    assert remote.stdout == local.stdout
    assert same_but_remote_ids(remote.stderr, local.stderr), remote.stderr


EXAMPLES = sorted(list((ROOT / "examples").glob("*.fl")) +
                  list((ROOT / "examples").glob("*.fla")))


@pytest.mark.parametrize("cpus", [2, 3], ids=["2 machines", "3 machines"])
@pytest.mark.parametrize("path", EXAMPLES,
                         ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_example_same_as_embedded(vm, path, cpus):
    # --cpus 2 spreads the process over two of the cpu:1 machines
    spec = Spec(path)
    local = run_flock(["run", spec.rel] + spec.flags +
                      (["--"] + spec.args if spec.args else []),
                      stdin=spec.stdin_bytes())
    remote = vm.run(spec.rel, flags=spec.flags + ["--cpus", str(cpus)],
                    args=spec.args, n=1 + hash(spec.rel) % 3,
                    stdin=spec.stdin_bytes())
    assert remote.returncode == local.returncode, remote.stderr
    assert remote.stdout == local.stdout
    assert same_but_remote_ids(remote.stderr, local.stderr), remote.stderr


# A thread spawned on another machine than the origin has an id that
# carries that machine's slot, 2^47 * (m + 1) + a counter (docs/
# cluster.md); where the VM's line names such a thread, the embedded
# VM's names its own id. Everything else must be the same bytes.
REMOTE_ID = re.compile(rb"thread (\d+)")


def same_but_remote_ids(remote, local):
    if remote == local:
        return True
    ids = [int(m.group(1)) for m in REMOTE_ID.finditer(remote)]
    if not any(i >= 1 << 47 for i in ids):
        return False
    lids = [int(m.group(1)) for m in REMOTE_ID.finditer(local)]
    if len(ids) != len(lids) or any(i != j for i, j in zip(ids, lids) if i < 1 << 47):
        return False
    return REMOTE_ID.sub(b"thread N", remote) == REMOTE_ID.sub(b"thread N", local)


def test_threads_spread_over_the_machines(vm):
    # three cpu:1 machines: the idle ones steal workers from the origin;
    # the sum is exact wherever they ran (docs/cluster.md, placement)
    for n in (1, 2, 3):
        r = vm.run("tests/cluster/progs/spread.fl", n=n)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"179999994\nspread\n", (n, r.stdout, r.stderr)


def parts_table(text):
    """The per-machine rows of `ps -v` (and `run --stats`): {name: columns}."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(m\d+\*?|all)\s+(.*)$", line)
        if m and len(m.group(2).split()) == 13:
            rows[m.group(1)] = m.group(2).split()
    return rows


def test_stats_and_ps_v_say_what_crossed_machines(vm, tmp_path):
    # --stats: what each machine's part did, once the process is over
    # everywhere; the threads that left the origin (stolen by the idle
    # machines, sent to them at spawn, or taken to even the load) are
    # counted where they left and
    # where they arrived (docs/cluster.md)
    r = vm.run("tests/cluster/progs/spread.fl", flags=["--stats"], n=2)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"179999994\nspread\n", r.stderr
    err = r.stderr.decode()
    pid = re.search(r"^flock: stats: process (\d+)$", err, re.M).group(1)
    rows = parts_table(err)
    assert len(rows) == 4 and "all" in rows, err
    origin = [k for k in rows if k.endswith("*")]
    assert len(origin) == 1, err
    moved_in, moved_out = int(rows["all"][2]), int(rows["all"][3])
    assert moved_in == moved_out >= 1, err
    assert re.search(r"^threads moved: from %s \d+ (stolen by idle machines|"
                     r"sent at spawn to less loaded machines|"
                     r"taken by less loaded machines)"
                     % origin[0][:-1], err, re.M), err
    # messages out and in (a part's last ones may cross its end)
    assert int(rows["all"][9]) > 0 and int(rows["all"][10]) > 0, err
    # ps -v asked elsewhere: the machine it ran on answers, the same
    ps = vm.flock(["ps", "-v", pid], n=3)
    assert ps.returncode == 0, ps.stderr
    assert parts_table(ps.stdout.decode()) == rows, ps.stdout
    # a thread that left for its data: why, and how many faults
    r = vm.run("tests/cluster/progs/data.fl",
               flags=["--stats", "--debug-spread", "--cpus", "2"], n=1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"1024 0\n", r.stderr
    err = r.stderr.decode()
    assert re.search(r"(: |; )from m\d+ 1 to the home of their data", err), err
    assert re.search(r"^m\d+: thread \d+ moved to m\d+: (1[6-9]|[2-9]\d) "
                     r"faults on pages homed there$", err, re.M), err
    # a child's snapshot of 1 MiB of local memory is lent, not sent
    r = vm.run("tests/cluster/progs/lazy.fl",
               flags=["--stats", "--debug-spread", "--cpus", "2"], n=2)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"61440\n", r.stderr
    err = r.stderr.decode()
    line = re.search(r"^local pages lent with threads: (.*)$", err, re.M)
    assert line, err
    parts = re.findall(r"m\d+ lent (\d+), fetched (\d+)", line.group(1))
    lent = sum(int(a) for a, _ in parts)
    fetched = sum(int(b) for _, b in parts)
    assert lent >= 256 and 1 <= fetched <= 16, err
    bad = vm.flock(["ps", "-v"])
    assert bad.returncode == 64 and b"needs a PID" in bad.stderr
    # while it runs: its threads where they are now
    prog = tmp_path / "spin.fl"
    prog.write_text("fn spin() { var i = 0; while (1) { i = i + 1; } return 0; }\n"
                    "fn main() { for w in 0..6 { spawn spin(); } spin(); return 0; }\n")
    r = vm.run(str(prog), flags=["--detach"], n=1)
    assert r.returncode == 0, r.stderr
    pid = r.stdout.decode().strip()
    deadline = time.time() + 10
    while True:
        ps = vm.flock(["ps", "-v", pid], n=2).stdout.decode()
        rows = parts_table(ps)
        busy = [k for k in rows if k != "all" and rows[k][0] not in ("0", "-")]
        # (threads on their way, and reports a quarter second old, are
        # counted nowhere for a moment)
        if (len(busy) >= 2 and int(rows["all"][0]) == 7) or \
                time.time() > deadline:
            break
        time.sleep(0.1)
    assert len(busy) >= 2 and int(rows["all"][0]) == 7, ps
    assert vm.flock(["kill", pid]).returncode == 0
    assert vm.flock(["wait", pid]).returncode == 137


def test_stdin_is_forwarded(vm):
    # read_stdin echoes what it reads; a megabyte crosses in many records
    data = b"".join(b"line %06d\n" % i for i in range(90000))
    local = run_flock(["run", "tests/programs/io/read_loop.fla"], stdin=data)
    r = vm.run("tests/programs/io/read_loop.fla", stdin=data, n=2)
    assert r.returncode == local.returncode, r.stderr
    assert r.stdout == local.stdout


def test_detach_ps_logs_wait(vm):
    r = vm.run("examples/primes.fl", flags=["--detach"], n=2)
    assert r.returncode == 0, r.stderr
    pid = r.stdout.decode().strip()
    assert pid.isdigit()
    w = vm.flock(["wait", pid], n=3)
    assert w.returncode == 0, w.stderr
    logs = vm.flock(["logs", pid], n=1)
    assert logs.returncode == 0, logs.stderr
    local = run_flock(["run", "examples/primes.fl"])
    assert logs.stdout == local.stdout
    ps = vm.flock(["ps"]).stdout.decode()
    assert re.search(r"^%s\s+admin\s+ended\s+m2\s.*\s0$" % pid, ps, re.M), ps


def test_kill(vm, tmp_path):
    prog = tmp_path / "forever.fl"
    prog.write_text("fn main() { var i = 0; while (1) { i = i + 1; } return 0; }\n")
    r = vm.run(str(prog), flags=["--detach"], n=3)
    assert r.returncode == 0, r.stderr
    pid = r.stdout.decode().strip()
    ps = vm.wait_running(pid)
    assert "running" in ps, ps
    k = vm.flock(["kill", pid], n=1)
    assert k.returncode == 0, k.stderr
    w = vm.flock(["wait", pid], n=2)
    assert w.returncode == 137
    again = vm.flock(["kill", pid])
    assert again.returncode == 64 and b"has ended" in again.stderr


def test_unknown_pid(vm):
    r = vm.flock(["wait", "999999"])
    assert r.returncode == 64
    assert b"no process 999999" in r.stderr


def test_submission_retried_starts_once(vm):
    """The client sends its submission, drops the connection before the
    answer, comes back and submits again with the same id: one process,
    its output once."""
    before = vm.flock(["ps"]).stdout.decode().count("\n")
    r = vm.run("examples/primes.fl", flags=["--debug-resubmit"], n=2)
    assert r.returncode == 0, r.stderr
    assert r.stdout == run_flock(["run", "examples/primes.fl"]).stdout
    after = vm.flock(["ps"]).stdout.decode().count("\n")
    assert after == before + 1


def test_daemon_restarted_from_its_data(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.new()
        c.join(2)
        c.join(3)
        c.wait_status(lambda t: t.count(" active ") == 3)
        m2 = c.machines[1]
        m2.kill(signal.SIGTERM)
        m2 = c.restart(m2)
        assert "m2 joined" in m2.banner or "machine m2" in m2.banner
        c.wait_status(lambda t: t.count(" active ") == 3)
        r = c.run("examples/hello.fl" if (ROOT / "examples/hello.fl").exists()
                  else "examples/primes.fl", n=2)
        assert r.returncode == 0, r.stderr
    finally:
        c.stop()


def test_leader_killed_another_answers(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.new()
        c.join(2)
        c.join(3)
        c.wait_status(lambda t: t.count(" active ") == 3)
        status = c.flock(["status"]).stdout.decode()
        leader = int(re.search(r"leader m(\d)", status).group(1))
        lm = [m for m in c.machines if m.n == leader][0]
        t0 = time.time()
        lm.kill(signal.SIGKILL)
        other = [m.n for m in c.machines if m.n != leader][0]
        text = c.wait_status(lambda t: re.search(r"leader m(?!%d)\d" % leader, t),
                             n=other, timeout=10)
        elapsed = time.time() - t0
        print("fail-over: %.2f s" % elapsed)
        r = c.run("examples/primes.fl", n=other)
        assert r.returncode == 0, r.stderr
        assert r.stdout == run_flock(["run", "examples/primes.fl"]).stdout
    finally:
        c.stop()


def test_leave(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.new()
        c.join(2)
        c.join(3)
        c.join(4)
        c.wait_status(lambda t: t.count(" active ") == 4)
        m4 = c.machines[3]
        r = c.flock(["leave"], n=4, timeout=60)
        assert r.returncode == 0, r.stderr + m4.log().encode()
        m4.proc.wait(timeout=20)
        text = c.wait_status(lambda t: re.search(r"^m4 .* left ", t, re.M), n=1)
        r = c.run("examples/primes.fl", n=1)
        assert r.returncode == 0
    finally:
        c.stop()


def test_standby_promoted_when_a_voter_leaves(tmp_path):
    """Five voters at most: a sixth machine is a standby, promoted when a
    voter leaves -- here the leader itself, which hands over first."""
    c = Cluster(tmp_path, provide="cpu:1,ram:256MiB,disk:64MiB")
    try:
        c.new()
        for n in range(2, 7):
            c.join(n)
        text = c.wait_status(lambda t: t.count(" active ") == 6 and
                             t.count("voter") == 5, n=2)
        assert re.search(r"^m6 .* standby", text, re.M), text
        leader = int(re.search(r"leader m(\d)", text).group(1))
        r = c.flock(["leave"], n=leader, timeout=60)
        assert r.returncode == 0, r.stderr
        lm = [m for m in c.machines if m.n == leader][0]
        lm.proc.wait(timeout=30)
        other = 1 + leader % 6
        text = c.wait_status(
            lambda t: re.search(r"^m%d .* left " % leader, t, re.M) and
            re.search(r"^m6 .* voter", t, re.M) and
            re.search(r"leader m(?!%d)\d" % leader, t), n=other, timeout=30)
        r = c.run("examples/primes.fl", n=6)
        assert r.returncode == 0, r.stderr
    finally:
        c.stop()


def test_garbage_does_not_hurt_the_vm(vm):
    """Bytes that are no handshake, a handshake cut short, a flood: each
    connection is closed and the VM serves on."""
    import socket
    for payload in (b"GET / HTTP/1.0\r\n\r\n", b"\x00\x20" + b"\xff" * 32,
                    b"\xff\xff" + os.urandom(70000), b""):
        s = socket.create_connection(("127.0.0.1", vm.port), timeout=5)
        try:
            s.sendall(payload)
            s.settimeout(6)
            try:
                while s.recv(65536):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
        finally:
            s.close()
    r = vm.flock(["status"])
    assert r.returncode == 0 and "3 machines" in r.stdout.decode()


def test_run_reconnects_without_losing_or_repeating(vm):
    """The connection breaks after the first output record: the client
    attaches again from the next record and sends again the input the
    machine lacks -- every byte out once, every byte in once."""
    data = b"".join(b"line %06d\n" % i for i in range(90000))
    local = run_flock(["run", "tests/programs/io/read_loop.fla"], stdin=data)
    r = vm.run("tests/programs/io/read_loop.fla", flags=["--debug-reconnect"],
               stdin=data, n=3)
    assert r.returncode == local.returncode, r.stderr
    assert r.stdout == local.stdout
    r = vm.run("examples/primes.fl", flags=["--debug-reconnect"], n=1)
    assert r.stdout == run_flock(["run", "examples/primes.fl"]).stdout


def test_machine_ram_holds_all_its_processes(tmp_path):
    """ram: is what a machine's processes hold together: one holding 40 MiB
    leaves too little for another's 40 MiB; more than the offer at once
    is refused before it starts."""
    c = Cluster(tmp_path, provide="cpu:1,ram:64MiB,disk:64MiB")
    hold = tmp_path / "hold.fl"
    hold.write_text("fn main() { var p = alloc(40 * 1024 * 1024); "
                    "while (1) { p[0] = p[0] + 1; } return 0; }\n")
    once = tmp_path / "once.fl"
    once.write_text("fn main() { var p = alloc(40 * 1024 * 1024); p[0] = 1; "
                    "print(\"ok\\n\"); return 0; }\n")
    try:
        c.new()
        r = c.run(str(once))
        assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr
        r = c.run(str(hold), flags=["--detach"])
        assert r.returncode == 0, r.stderr
        pid = r.stdout.decode().strip()
        c.wait_running(pid)
        r = c.run(str(once))
        assert r.returncode == 70, r.stderr
        assert b"this machine's memory for processes, ram:, is 64 MiB" in r.stderr
        assert c.flock(["kill", pid]).returncode == 0
        assert c.flock(["wait", pid]).returncode == 137
        r = c.run(str(once))
        assert r.returncode == 0 and r.stdout == b"ok\n", r.stderr
        r = c.run(str(once), flags=["--memory", "1GiB"])
        assert r.returncode == 64
        assert b"more than any machine of VM testvm provides (the most: ram:64.0MiB)" in r.stderr
    finally:
        c.stop()


def test_the_vm_spreads_processes(tmp_path):
    """Each machine has one core: running processes go where fewer run
    (heartbeats carry the load), whichever machine the client asked."""
    c = Cluster(tmp_path, provide="cpu:1,ram:256MiB,disk:64MiB")
    spin = tmp_path / "spin.fl"
    spin.write_text("fn main() { var i = 0; while (1) { i = i + 1; } return 0; }\n")
    try:
        c.new()
        c.join(2)
        c.join(3)
        for n in (1, 2, 3):
            c.wait_status(lambda t: t.count(" active ") == 3, n=n)
        pids = []
        for _ in range(3):
            r = c.run(str(spin), flags=["--detach"], n=1)
            assert r.returncode == 0, r.stderr
            pids.append(r.stdout.decode().strip())
            time.sleep(1.2)  # two heartbeats: every machine knows the load
        ps = c.flock(["ps"]).stdout.decode()
        machines = set(re.findall(r"^\d+\s+admin\s+running\s+(m\d)", ps, re.M))
        assert machines == {"m1", "m2", "m3"}, ps
        for pid in pids:
            assert c.flock(["kill", pid]).returncode == 0
    finally:
        c.stop()


def test_snapshots_join_and_restart(tmp_path):
    """With a snapshot every 8 entries: a machine that joins later gets the
    state from a snapshot, and a machine restarted comes back from its
    snapshot and log -- the same process table everywhere."""
    c = Cluster(tmp_path, daemon_args=["--debug-snapshot", "8"])
    try:
        c.new()
        for i in range(12):
            r = c.run("examples/hello.fl")
            assert r.returncode == 0, r.stderr
        m1 = c.machines[0]
        assert list((m1.data / "raft").glob("snapshot-*")), \
            sorted(p.name for p in (m1.data / "raft").iterdir())
        c.join(2)
        c.join(3)
        c.wait_status(lambda t: t.count(" active ") == 3, n=3)
        want = c.flock(["ps"], n=1).stdout.decode()
        assert want.count(" ended ") == 12
        def table(n):
            return c.flock(["ps"], n=n).stdout.decode()
        deadline = time.time() + 10
        while time.time() < deadline and table(3) != want:
            time.sleep(0.2)
        assert table(3) == want
        # m3 joined after the log was cut: it got there by a snapshot
        assert list((c.machines[2].data / "raft").glob("snapshot-*"))
        m1.kill(signal.SIGTERM)
        assert m1.proc.returncode == 0, m1.log()
        m1 = c.restart(m1)
        c.wait_status(lambda t: t.count(" active ") == 3, n=1)
        assert table(1) == want
        r = c.run("examples/hello.fl", n=1)
        assert r.returncode == 0, r.stderr
    finally:
        c.stop()


def test_host_names(vm):
    r = subprocess.run([flock_path(), "status", "--vm", "testvm@localhost:%d" % vm.port],
                       capture_output=True, timeout=20, env=vm.env())
    assert r.returncode == 0, r.stderr
    assert "3 machines" in r.stdout.decode()


def test_ipv6(tmp_path):
    """Machines on [::1]: one joins through the other's IPv6 address, a
    client names a machine by its IPv6 address."""
    import socket
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    from cluster import free_port
    p1, p2 = free_port(), free_port()
    home = tmp_path / "home"
    env = dict(os.environ, FLOCK_HOME=str(home))
    env.pop("FLOCK_VM", None)
    procs = []
    try:
        a = subprocess.Popen([flock_path(), "new", "six", "--listen", "[::1]:%d" % p1,
                              "--data", str(tmp_path / "a"), "--provide",
                              "cpu:1,ram:256MiB,disk:64MiB", "--foreground"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, env=env)
        procs.append(a)
        line = a.stdout.readline().decode()
        assert "six@[::1]:%d" % p1 in line, line
        a.stdout.readline()
        tok = re.search(r"--token (\S+)", a.stdout.readline().decode()).group(1)
        b = subprocess.Popen([flock_path(), "join", "six@[::1]:%d" % p1,
                              "--token", tok, "--listen", "[::1]:%d" % p2,
                              "--data", str(tmp_path / "b"), "--provide",
                              "cpu:1,ram:256MiB,disk:64MiB", "--foreground"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, env=dict(env, FLOCK_HOME=str(tmp_path / "hb")))
        procs.append(b)
        assert "joined VM six" in b.stdout.readline().decode()
        r = subprocess.run([flock_path(), "run", "examples/primes.fl", "--vm",
                            "six@[::1]:%d" % p2], capture_output=True, cwd=str(ROOT),
                           env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout == run_flock(["run", "examples/primes.fl"]).stdout
        st = subprocess.run([flock_path(), "status", "--vm", "six@[::1]:%d" % p1],
                            capture_output=True, env=env, timeout=30).stdout.decode()
        assert "[::1]:%d" % p2 in st, st
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=20)
