"""Real Flock VMs on loopback addresses for the cluster tests.

A Cluster starts daemons with `flock new` / `flock join --foreground`
(children of the test, so they are ended by pid and reaped), each on its
own loopback address (127.0.0.1, .2, .3 ..., or from another with
first=N) and port, with its own --data
and FLOCK_HOME under a temporary directory. Every wait is bounded.
"""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "programs"))
from flockrun import flock_path  # noqa: E402

START_TIMEOUT = 40
RUN_TIMEOUT = 60


def free_port():
    """A TCP port free on every loopback address we use (probe .1)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Machine:
    def __init__(self, cluster, n, proc, data, home, listen):
        self.cluster = cluster
        self.n = n
        self.proc = proc
        self.data = data
        self.home = home
        self.listen = listen

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)

    def signal(self, sig):
        """Send @sig (SIGSTOP, SIGCONT) by its pid, without waiting."""
        if self.alive():
            os.kill(self.proc.pid, sig)

    def log(self):
        try:
            return self.proc_log.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""


def _iptables(op, rule, check=True):
    return subprocess.run(["iptables", "-w", op, "OUTPUT"] + rule,
                          check=check, capture_output=True, timeout=20)


class _Rules:
    """iptables rules on OUTPUT, each tagged with a comment naming this
    test process and the cluster's port; off() (or the end of a with
    block) deletes exactly them."""

    @staticmethod
    def usable():
        return os.geteuid() == 0 and shutil.which("iptables") is not None

    def __init__(self, cluster, matches, target):
        tag = ["-m", "comment", "--comment",
               "flock-test-%d-%d" % (os.getpid(), cluster.port)]
        ports = ["-p", "tcp", "-m", "multiport", "--ports", str(cluster.port)]
        self.rules = [ports + m + tag + target for m in matches]
        self.active = False

    def on(self):
        self.active = True
        for r in self.rules:
            _iptables("-I", r)

    def off(self):
        if self.active:
            self.active = False
            for r in self.rules:
                _iptables("-D", r, check=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.off()


class Cut(_Rules):
    """Machine @n's connections cut while on: every TCP segment to or
    from its address on the cluster's port (its peers' links, its
    clients') rejected with a reset, so both ends see the connection
    break and redials fail until off(). Not for a machine at 127.0.0.1,
    where the clients are (Cluster(first=2) has none there)."""

    def __init__(self, cluster, n):
        ip = cluster.ip(n)
        assert ip != "127.0.0.1", "the clients are at 127.0.0.1 too"
        super().__init__(cluster, [["-s", ip], ["-d", ip]],
                         ["-j", "REJECT", "--reject-with", "tcp-reset"])


class Partition(_Rules):
    """The machines of @side apart from the others while on: what one
    side sends the other is dropped (silence, as a cable cut makes);
    clients still reach every machine."""

    def __init__(self, cluster, side):
        a = [cluster.ip(n) for n in side]
        b = [cluster.ip(m.n) for m in cluster.machines if m.n not in side]
        assert "127.0.0.1" not in a + b, "the clients are at 127.0.0.1"
        super().__init__(cluster, [["-s", x, "-d", y]
                                   for x in a for y in b] +
                         [["-s", y, "-d", x] for x in a for y in b],
                         ["-j", "DROP"])


class Cluster:
    def __init__(self, tmp, vm="testvm", port=None, provide="cpu:1,ram:1GiB,disk:1GiB",
                 daemon_args=(), first=1):
        self.daemon_args = list(daemon_args)
        self.first = first  # machine n is at 127.0.0.(first + n - 1)
        self.tmp = pathlib.Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.vm = vm
        self.port = port or free_port()
        self.provide = provide
        self.machines = []
        self.admin_home = self.tmp / "admin-home"
        self.token = None

    def addr(self, n=1):
        return "%s@%s:%d" % (self.vm, self.ip(n), self.port)

    def ip(self, n):
        return "127.0.0.%d" % (self.first + n - 1)

    def env(self, home=None, extra=None):
        e = dict(os.environ)
        e.pop("FLOCK_VM", None)
        e.pop("FLOCK_TOKEN", None)
        e["FLOCK_HOME"] = str(home or self.admin_home)
        if extra:
            e.update(extra)
        return e

    def _start(self, n, args, home):
        data = self.tmp / ("m%d" % n)
        listen = "%s:%d" % (self.ip(n), self.port)
        logf = self.tmp / ("m%d.log" % n)
        out = open(logf, "wb")
        proc = subprocess.Popen(
            [flock_path()] + args + ["--listen", listen, "--data", str(data),
                                     "--provide", self.provide, "--foreground"] +
            self.daemon_args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out,
            env=self.env(home), cwd=str(ROOT))
        m = Machine(self, n, proc, data, home, listen)
        m.proc_log = logf
        # the banner comes once it serves
        deadline = time.time() + START_TIMEOUT
        banner = b""
        os.set_blocking(proc.stdout.fileno(), False)
        while time.time() < deadline and proc.poll() is None:
            try:
                chunk = proc.stdout.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                banner += chunk
                if b"is up" in banner and b"--token" in banner or b"joined VM" in banner:
                    break
            time.sleep(0.05)
        m.banner = banner.decode(errors="replace")
        if "is up" not in m.banner and "joined VM" not in m.banner:
            m.kill()
            raise RuntimeError("machine %d did not start: %s\n%s" %
                               (n, m.banner, logf.read_text(errors="replace")))
        return m

    def new(self):
        m = self._start(1, ["new", self.vm], self.admin_home)
        tok = re.search(r"--token (\S+)", m.banner)
        assert tok, m.banner
        self.token = tok.group(1)
        self.machines.append(m)
        return m

    def join(self, n, token=None):
        home = self.tmp / ("home%d" % n)
        m = self._start(n, ["join", self.addr(1), "--token", token or self.token], home)
        self.machines.append(m)
        return m

    def up(self, machines=3):
        """A VM of @machines: the first makes it, the others join, and each
        sees every one active (stopped again if that fails, so that no
        daemon outlives the caller)."""
        try:
            self.new()
            for n in range(2, machines + 1):
                self.join(n)
            for n in range(1, machines + 1):
                self.wait_status(lambda t: t.count(" active ") == machines,
                                 n=n)
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self, m):
        """Start machine @m again from its --data (stopping it first if it
        still runs, so that no daemon outlives the test)."""
        args = ["new", self.vm] if m.n == 1 else ["join", self.addr(1)]
        m.kill(signal.SIGTERM)
        self.machines.remove(m)
        m2 = self._start(m.n, args, m.home)
        self.machines.append(m2)
        return m2

    def flock(self, args, n=1, stdin=None, timeout=RUN_TIMEOUT, env=None):
        """Run a client command against machine @n as the admin."""
        return subprocess.run(
            [flock_path()] + list(args) + ["--vm", self.addr(n)],
            input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env(extra=env), cwd=str(ROOT), timeout=timeout)

    def run(self, file, flags=(), args=(), n=1, stdin=None, env=None):
        argv = ["run", file] + list(flags)
        argv += ["--vm", self.addr(n)]
        if args:
            argv += ["--"] + list(args)
        return subprocess.run(
            [flock_path()] + argv, input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self.env(extra=env), cwd=str(ROOT), timeout=RUN_TIMEOUT)

    def wait_status(self, pred, n=1, timeout=20):
        """Poll `flock status` on machine @n until @pred(text) holds."""
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            r = self.flock(["status"], n=n, timeout=10)
            last = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
            if r.returncode == 0 and pred(last):
                return last
            time.sleep(0.2)
        raise AssertionError("status never matched; last:\n" + last)

    def wait_running(self, pid, n=1, timeout=10):
        """Poll `flock ps PID` until it says running (or @timeout s
        passed); the last table."""
        deadline = time.time() + timeout
        while True:
            ps = self.flock(["ps", pid], n=n).stdout.decode()
            if "running" in ps or time.time() >= deadline:
                return ps
            time.sleep(0.1)

    def stop(self):
        """SIGTERM every daemon; each must exit 0 (a sanitizer's report
        would make it fail): raises with the logs otherwise."""
        bad = []
        for m in self.machines:
            was_alive = m.alive()
            m.kill(signal.SIGTERM)
            if was_alive and m.proc.returncode != 0:
                bad.append("machine %d exited %s:\n%s" %
                           (m.n, m.proc.returncode, m.log()[-4000:]))
        self.machines = []
        if bad:
            raise AssertionError("\n".join(bad))
