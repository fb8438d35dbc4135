"""Machines that fail (docs/cluster.md, "When machines fail"): real
daemons on loopback addresses, --lost-after 2 s. A machine killed under a
process spread over it: the process ends 75 naming it within 10 s, a
process elsewhere finishes, `flock status` shows the loss, the machine
restarted comes back as a new incarnation and serves. A machine paused
past the limit: fenced when it wakes, its own processes end 75, and it
comes back by itself. A machine cut off from the majority: a process
that ends there is never told as ended before the VM holds its end
(its client hears why, 69), and healed, the end is recorded.

Every daemon is ended by its pid (cluster.py); every wait is bounded.
"""
import re
import signal
import subprocess
import time

import pytest

from cluster import ROOT, Cluster, Cut, Partition, _Rules, flock_path

LOST_AFTER = "2"
SEQUENTIAL = "examples/primes.fl"  # no threads: one machine runs it


def start_run(c, prog, n=1, flags=()):
    return subprocess.Popen(
        [flock_path(), "run", prog] + list(flags) + ["--vm", c.addr(n)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=c.env(), cwd=str(ROOT))


def pid_of_newest(c, n=1, after=0, timeout=15):
    """The newest pid above @after in `ps` (polled: a client just started
    submits in a moment)."""
    deadline = time.time() + timeout
    while True:
        ps = c.flock(["ps"], n=n).stdout.decode()
        pids = [int(p) for p in re.findall(r"^(\d+)\s", ps, re.M)]
        if pids and max(pids) > after:
            return max(pids)
        if time.time() >= deadline:
            raise AssertionError("no new process:\n" + ps)
        time.sleep(0.1)


def machine_of(c, pid, timeout=15):
    """The machine that runs @pid (its origin), once `ps` shows one."""
    deadline = time.time() + timeout
    while True:
        ps = c.flock(["ps", str(pid)]).stdout.decode()
        m = re.search(r"^%d\s+\S+\s+\S+\s+m(\d+)" % pid, ps, re.M)
        if m:
            return int(m.group(1))
        if time.time() >= deadline:
            raise AssertionError("process %d runs nowhere:\n%s" % (pid, ps))
        time.sleep(0.1)


def wait_spread(c, pid, machines, timeout=15):
    """Until `ps -v` shows threads of @pid on each of @machines."""
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        text = c.flock(["ps", "-v", str(pid)]).stdout.decode()
        rows = {l.split()[0].rstrip("*"): l.split() for l in text.splitlines()
                if re.match(r"^m\d+\*?\s", l)}
        if all(m in rows and rows[m][1] not in ("0", "-") for m in machines):
            return text
        time.sleep(0.1)
    raise AssertionError("never spread over %s:\n%s" % (machines, text))


def three(tmp_path):
    return Cluster(tmp_path, daemon_args=["--lost-after", LOST_AFTER]).up(3)


def test_machine_killed_its_processes_end_lost_and_it_comes_back(tmp_path):
    c = three(tmp_path)
    try:
        want = subprocess.run([flock_path(), "run", SEQUENTIAL],
                              capture_output=True, cwd=str(ROOT)).stdout
        spread = start_run(c, "tests/cluster/progs/lost.fl")
        pid = pid_of_newest(c)
        wait_spread(c, pid, ("m1", "m2", "m3"))
        # a process that is not on m3: it must not notice (asked at m2,
        # the VM may still place it on m3: then it is lost with it)
        elsewhere = start_run(c, SEQUENTIAL, n=2, flags=["--cpus", "1"])
        pid2 = pid_of_newest(c, after=pid)
        where = machine_of(c, pid2)
        m3 = c.machines[2]
        t0 = time.time()
        m3.kill(signal.SIGKILL)
        out, err = spread.communicate(timeout=30)
        took = time.time() - t0
        print("the spread process ended %.2f s after the kill" % took)
        assert spread.returncode == 75, err
        assert re.search(r"^flock: process %d lost with machine m3, which "
                         r"ran some of its threads or held some of its "
                         r"memory$" % pid, err.decode(), re.M), err
        assert took < 10
        out2, err2 = elsewhere.communicate(timeout=60)
        if where == 3:
            print("process %d was placed on m3" % pid2)
            assert elsewhere.returncode == 75, err2
            assert re.search(r"^flock: process %d lost with machine m3, "
                             r"which ran it$" % pid2, err2.decode(),
                             re.M), err2
        else:
            assert elsewhere.returncode == 0, err2
            assert out2 == want
        text = c.wait_status(lambda t: re.search(r"^m3 .* lost ", t, re.M),
                             n=2, timeout=10)
        assert re.search(r"^m3: lost at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$",
                         text, re.M), text
        # the process table says so too, asked anywhere (once its origin
        # recorded the end)
        deadline = time.time() + 10
        while True:
            ps = c.flock(["ps", str(pid)], n=2).stdout.decode()
            if re.search(r"^%d .* ended .* 75$" % pid, ps, re.M):
                break
            assert time.time() < deadline, ps
            time.sleep(0.1)
        # back: restarted from its data, a new incarnation
        m3 = c.restart(m3)
        text = c.wait_status(lambda t: t.count(" active ") == 3 and
                             "back at" in t, n=1, timeout=30)
        assert re.search(r"^m3: lost at .* UTC, back at .* UTC "
                         r"\(incarnation \d+\)$", text, re.M), text
        r = c.run("tests/cluster/progs/spread.fl", n=3)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"179999994\nspread\n", r.stderr
    finally:
        c.stop()


def test_machine_paused_is_fenced_and_comes_back(tmp_path):
    c = three(tmp_path)
    try:
        # a process whose origin is m3: m3's own
        mine = start_run(c, "tests/cluster/progs/lost.fl", n=3)
        pid = pid_of_newest(c, n=3)
        m3 = c.machines[2]
        m3.signal(signal.SIGSTOP)
        try:
            c.wait_status(lambda t: re.search(r"^m3 .* lost ", t, re.M),
                          n=1, timeout=15)
        finally:
            m3.signal(signal.SIGCONT)
        # it wakes, hears it was declared lost, ends what it ran
        out, err = mine.communicate(timeout=30)
        assert mine.returncode == 75, err
        assert re.search(r"^flock: process %d lost: this machine, m3, was "
                         r"declared lost$" % pid, err.decode(), re.M), err
        text = c.wait_status(lambda t: t.count(" active ") == 3 and
                             "back at" in t, n=1, timeout=30)
        assert "fenced" in m3.log(), m3.log()[-2000:]
        r = c.run("tests/cluster/progs/spread.fl", n=3)
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"179999994\nspread\n", r.stderr
    finally:
        c.stop()


def test_the_machine_the_client_talks_to_is_lost(tmp_path):
    """The client's own machine, the process's origin, is killed: the
    client goes on at another machine and hears the process's end there,
    75 and why."""
    c = three(tmp_path)
    try:
        run = start_run(c, "tests/cluster/progs/lost.fl", n=2)
        pid = pid_of_newest(c, n=2)
        # the machine that runs it (its origin): the client talks to it
        origin = machine_of(c, pid)
        wait_spread(c, pid, ("m%d" % origin,))
        time.sleep(0.5)  # the client has asked for the other machines
        victim = [m for m in c.machines if m.n == origin][0]
        t0 = time.time()
        victim.kill(signal.SIGKILL)
        out, err = run.communicate(timeout=40)
        print("the client heard the end %.2f s after the kill" %
              (time.time() - t0))
        assert run.returncode == 75, err
        assert re.search(r"^flock: process %d lost with machine m%d, which "
                         r"ran it$" % (pid, origin), err.decode(), re.M), err
    finally:
        c.stop()


def test_survive_a_machine_other_than_mains(tmp_path):
    """flock run --survive: a machine that runs some of its workers, not
    main's, is killed; the process goes on, its joins of the lost workers
    give -75 (ELOST), the mutex goes on being taken (status 1 if a lost
    worker held it), the others finish, and it ends 0."""
    c = three(tmp_path)
    try:
        run = start_run(c, "tests/cluster/progs/survive.fl",
                        flags=["--survive"])
        pid = pid_of_newest(c)
        origin = machine_of(c, pid)
        wait_spread(c, pid, ("m1", "m2", "m3"))
        victim = [m for m in c.machines if m.n != origin][-1]
        t0 = time.time()
        victim.kill(signal.SIGKILL)
        out, err = run.communicate(timeout=40)
        print("ended %.2f s after the kill: %s %s" %
              (time.time() - t0, out, err))
        assert run.returncode == 0, err
        m = re.match(rb"ok (\d+) lost (\d+)\nrecovered (\d+)\n$", out)
        assert m, out
        ok, lost = int(m.group(1)), int(m.group(2))
        assert ok + lost == 6 and ok >= 1 and lost >= 1, out
        assert re.search(r"process %d survives the loss of machine %d" %
                         (pid, victim.n),
                         [x for x in c.machines if x.n == origin][0].log())
    finally:
        c.stop()


@pytest.mark.skipif(not Cut.usable(), reason="needs root and iptables")
def test_cut_off_machine_never_tells_an_unrecorded_end(tmp_path):
    """A process runs alone on a machine (no threads) that is cut off
    from the other two, long enough that no one declares it lost: it
    ends there, but its end cannot enter the process table, so its
    client is not told 0 (the VM holds it running) and after a bounded
    wait hears why (69). Healed, the end is recorded: flock wait says
    0 anywhere."""
    c = Cluster(tmp_path, daemon_args=["--lost-after", "60"], first=2).up(3)
    try:
        st = c.flock(["status"]).stdout.decode()
        leader = int(re.search(r"leader m(\d)", st).group(1))
        n = 3 if leader != 3 else 2
        other = [m.n for m in c.machines if m.n != n][0]
        run = start_run(c, "tests/cluster/progs/dark.fl", n=n)
        pid = pid_of_newest(c, n=n)
        ps = c.flock(["ps", str(pid)], n=other).stdout.decode()
        assert re.search(r"^%d .* running +m%d " % (pid, n), ps, re.M), ps
        with Partition(c, [n]) as part:
            part.on()
            t0 = time.time()
            out, err = run.communicate(timeout=90)
            print("the client heard after %.1f s" % (time.time() - t0))
            assert run.returncode == 69, (out, err)
            assert out == b"done in the dark\n", out
            assert re.search(r"process %d ended on machine m%d, but its end "
                             r"could not be recorded" % (pid, n),
                             err.decode()), err
            # the majority was never told it ended
            ps = c.flock(["ps", str(pid)], n=other).stdout.decode()
            assert re.search(r"^%d .* running " % pid, ps, re.M), ps
        r = c.flock(["wait", str(pid)], n=other, timeout=30)
        assert r.returncode == 0, r.stderr
        ps = c.flock(["ps", str(pid)], n=other).stdout.decode()
        assert re.search(r"^%d .* ended .* 0$" % pid, ps, re.M), ps
    finally:
        c.stop()


@pytest.mark.skipif(not Cut.usable(), reason="needs root and iptables")
def test_client_notices_a_connection_broken_only_at_the_machine(tmp_path):
    """While a process prints and its client sends nothing, every segment
    from the machine is rejected for a moment: the machine's end of the
    client's connection is reset, the client's end hears nothing. The
    client finds out by itself (TCP keepalive), goes back and gets the
    rest of the output, each line once, and the status."""
    c = Cluster(tmp_path, first=2).up(1)
    try:
        run = start_run(c, "tests/cluster/progs/ticks.fl")
        pid_of_newest(c)
        time.sleep(1.0)  # output flowing
        rules = _Rules(c, [["-s", c.ip(1)]],
                       ["-j", "REJECT", "--reject-with", "tcp-reset"])
        with rules:
            rules.on()
            time.sleep(0.5)
        t0 = time.time()
        out, err = run.communicate(timeout=40)
        print("the client ended %.1f s after the break" % (time.time() - t0))
        assert run.returncode == 0, err
        assert err == b"".join(b"tick %d\n" % i for i in range(80)), err
    finally:
        c.stop()


@pytest.mark.skipif(not Cut.usable(), reason="needs root and iptables")
def test_a_machine_behind_waits_for_a_pid_just_given(tmp_path):
    """A client hears its pid from the machine that started the process,
    once the submission is committed; another machine applies the entry
    a moment later. Asked there in that moment (flock wait), it waits for
    the entry instead of saying there is no such process. Here one
    machine is held behind by a partition until the wait reaches it,
    then healed: the wait ends 0. A pid no one gave is still answered
    "no process"."""
    c = Cluster(tmp_path, daemon_args=["--lost-after", "60"], first=2).up(3)
    try:
        st = c.flock(["status"]).stdout.decode()
        leader = int(re.search(r"leader m(\d)", st).group(1))
        behind = 3 if leader != 3 else 2
        with Partition(c, [behind]) as part:
            part.on()
            r = c.run(SEQUENTIAL, flags=["--detach"], n=leader)
            assert r.returncode == 0, r.stderr
            pid = r.stdout.decode().strip()
            w = subprocess.Popen(
                [flock_path(), "wait", pid, "--vm", c.addr(behind)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=c.env(), cwd=str(ROOT))
            time.sleep(0.3)
        out, err = w.communicate(timeout=30)
        assert w.returncode == 0, err
        r = c.flock(["wait", str(int(pid) + 1000)], n=behind)
        assert r.returncode == 64, r.stderr
        assert b"no process %d in VM" % (int(pid) + 1000) in r.stderr
    finally:
        c.stop()
