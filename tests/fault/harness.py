#!/usr/bin/env python3
"""The fault harness: real daemons on loopback addresses, a workload of
processes whose every output line is known in advance, one fault a
schedule, and a checker over what was recorded (docs/cluster.md, "When
machines fail").

A schedule (seeded): a VM of three cpu:1 machines (--lost-after 1.5);
four runs of tests/fault/work.fl, each submitted through a machine picked
by the seed (half of them, as the seed says, tests/fault/survive.fl with
--survive: the same output, lost workers redone by main), all running
(`flock ps`) before the fault; then, at a seeded
moment, one fault on a seeded machine:
  kill   kill -9 of its daemon, restarted from its data after a while
  stop   SIGSTOP past --lost-after, then SIGCONT (it must find out it
         was fenced and come back by itself)
  part   cut off from the other two (iptables DROP between the
         machines, as root; clients still reach it) past --lost-after,
         then healed: the majority declares it lost and goes on, the
         minority side records nothing; healed, it finds out it was
         fenced and comes back
  cut    its connections reset (iptables, as root) three times for
         0.1-0.4 s, well inside --lost-after: unless the leader declared
         it lost all the same (then as for the others), every run must
         end 0 with every line once (what was on its way when a link
         broke is sent again, and taken in once)
Then every client is awaited (bounded), the machine healed, and the VM
must serve again: every machine active in `flock status` and a spread
run correct.

The checker, over the recorded history (printed when a check fails):
  - each run ended 0 with exactly the expected lines, or 75 with a prefix
    of them (no line lost in the middle, none twice, none wrong: a thread
    resumed on two machines would add twice and break every later line)
    and a line naming the faulted machine -- a --survive run only when
    that machine ran its main, and one that ended 0 added at most once
    per worker and once per worker not lost (its stderr says), and lost
    none to a cut;
  - no other status (69 would be a client left without an answer);
  - the process table holds exactly one process per submission (none
    started twice);
  - the VM serves after the heal;
  - no part of a process is left on any machine when it stops (a
    thread waiting for an answer from a lost machine would keep one).

  python3 tests/fault/harness.py [--schedules N] [--seed S]
Exit 0 when every schedule passed. Every daemon is ended by its pid
(tests/cluster/cluster.py); every wait is bounded.
"""
import argparse
import json
import pathlib
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
from cluster import Cluster, Cut, Partition, flock_path  # noqa: E402

WORK = "tests/fault/work.fl"
SURVIVE = "tests/fault/survive.fl"
# --survive runs that ended 0, and those of them that lost workers
SURVIVED = {"runs": 0, "lost": 0}
LOST_AFTER = 1.5
RUNS = 4
CLIENT_TIMEOUT = 90


def expected_lines():
    r = subprocess.run([flock_path(), "run", WORK], capture_output=True,
                       cwd=str(ROOT), timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().splitlines()


class Schedule:
    def __init__(self, seed, tmp, want, kinds=("kill", "stop", "cut", "part")):
        self.rng = random.Random(seed)
        self.kinds = list(kinds)
        self.seed = seed
        self.tmp = tmp
        self.want = want
        self.history = []
        self.t0 = time.time()

    def log(self, what, **kw):
        kw["t"] = round(time.time() - self.t0, 3)
        kw["what"] = what
        self.history.append(kw)

    def fail(self, msg):
        raise AssertionError("schedule %d: %s\nhistory:\n%s" % (
            self.seed, msg, "\n".join(json.dumps(h) for h in self.history)))

    def pids(self, c):
        ps = c.flock(["ps"], timeout=20).stdout.decode()
        return [int(p) for p in re.findall(r"^(\d+)\s", ps, re.M)]

    def run(self):
        rng = self.rng
        # at 127.0.0.2-4: the clients alone at 127.0.0.1, so that any
        # machine's connections can be cut
        c = Cluster(self.tmp, daemon_args=["--lost-after", str(LOST_AFTER)],
                    first=2)
        try:
            c.up(3)
            self.log("vm up")
            clients = []
            self.survive = []
            for k in range(RUNS):
                n = rng.randint(1, 3)
                # half of them --survive (SURVIVE: work.fl's output,
                # lost workers redone)
                surv = rng.random() < 0.5
                args = [SURVIVE, "--survive"] if surv else [WORK]
                p = subprocess.Popen(
                    [flock_path(), "run"] + args + ["--vm", c.addr(n)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, env=c.env(), cwd=str(ROOT))
                clients.append(p)
                self.survive.append(surv)
                self.log("submit", run=k, via=n, survive=surv)
            # all running before the fault: a submission in flight when
            # its machine dies may fairly end 69 (nothing started)
            deadline = time.time() + 30
            while len(self.pids(c)) < RUNS:
                if time.time() > deadline:
                    self.fail("the runs never all started")
                time.sleep(0.05)
            self.log("all running", pids=self.pids(c))
            victim = rng.randint(1, 3)
            kind = rng.choice(self.kinds)
            if kind in ("cut", "part") and not Cut.usable():
                kind = rng.choice([k for k in self.kinds
                                   if k not in ("cut", "part")] or ["kill"])
            time.sleep(rng.uniform(0.1, 1.0))
            m = [x for x in c.machines if x.n == victim][0]
            self.log("fault", kind=kind, machine=victim)
            if kind == "cut":
                with Cut(c, victim) as cut:
                    for _ in range(3):
                        cut.on()
                        time.sleep(rng.uniform(0.1, 0.4))
                        cut.off()
                        self.log("reconnect", machine=victim)
                        time.sleep(rng.uniform(0.5, 1.5))
            elif kind == "part":
                with Partition(c, [victim]) as part:
                    part.on()
                    time.sleep(LOST_AFTER + rng.uniform(1.0, 2.0))
                    st = c.flock(["status"], n=1 + victim % 3).stdout.decode()
                    self.log("apart", machine=victim,
                             seen=re.findall(r"^m%d .*" % victim, st, re.M))
                    part.off()
                self.log("healed", machine=victim)
            elif kind == "kill":
                m.kill(signal.SIGKILL)
            else:
                m.signal(signal.SIGSTOP)
                time.sleep(LOST_AFTER + rng.uniform(1.0, 2.5))
                m.signal(signal.SIGCONT)
                self.log("continued", machine=victim)
            if kind == "kill":
                time.sleep(rng.uniform(0.5, 3.0))
                c.restart(m)
                self.log("restarted", machine=victim)
            results = []
            for k, p in enumerate(clients):
                try:
                    out, err = p.communicate(timeout=CLIENT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, err = p.communicate()
                    self.log("client hung", run=k)
                    self.fail("run %d: no answer in %d s" % (k, CLIENT_TIMEOUT))
                results.append((p.returncode, out.decode(), err.decode()))
                self.log("ended", run=k, status=p.returncode,
                         lines=len(out.decode().splitlines()),
                         stderr=err.decode()[-300:])
            if kind == "cut":
                st = c.flock(["status"], n=1 + victim % 3).stdout.decode()
                if re.search(r"^m%d: lost at" % victim, st, re.M):
                    self.log("cut became a loss", machine=victim)
                    kind = "cut-lost"
            self.check(results, victim, kind)
            # healed, as another machine sees it: every machine active,
            # the victim back if it was declared lost
            other = 1 if victim != 1 else 2

            def healed(t):
                m = re.search(r"^m%d: lost at .*$" % victim, t, re.M)
                return t.count(" active ") == 3 and (
                    m is None or "back at" in m.group(0))
            text = c.wait_status(healed, n=other, timeout=40)
            self.log("healed", status=text.splitlines()[-1])
            r = c.run("tests/cluster/progs/spread.fl", n=victim)
            if r.returncode != 0 or r.stdout != b"179999994\nspread\n":
                self.fail("after the heal: %d %r %r" % (r.returncode, r.stdout,
                                                         r.stderr))
            # every submission once in the table, as m1 has it: a
            # machine just back catches up on the entries it missed (a
            # spare until Raft has it again), within a bound
            t_table = time.time()
            deadline = t_table + 20
            while True:
                pids = self.pids(c)
                if len(set(pids)) != len(pids) or len(pids) > RUNS + 1:
                    self.fail("process table: %s for %d submissions" %
                              (pids, RUNS + 1))
                if len(pids) == RUNS + 1:
                    if time.time() - t_table > 0.5:
                        self.log("table caught up",
                                 after=round(time.time() - t_table, 2))
                    break
                if time.time() >= deadline:
                    self.fail("process table: %s for %d submissions, 20 s "
                              "after the heal" % (pids, RUNS + 1))
                time.sleep(0.2)
            self.log("served")
            # every part of every process over, on every machine: a
            # thread left waiting on a lost machine would keep one
            machines = list(c.machines)
            c.stop()
            for x in machines:
                left = re.findall(r"process \d+'s part did not end", x.log())
                if left:
                    self.fail("m%d at its stop: %s" % (x.n, "; ".join(left)))
            return kind
        finally:
            c.stop()

    def check(self, results, victim, kind):
        lost = re.compile(r"^flock: process \d+ lost( with machine m%d|: "
                          r"this machine, m%d, was declared lost)" %
                          (victim, victim), re.M)
        # a --survive run ends 75 only with its origin (main's machine)
        origin_lost = re.compile(r"^flock: process \d+ lost( with machine "
                                 r"m%d, which ran it|: this machine, m%d, "
                                 r"was declared lost)" % (victim, victim),
                                 re.M)
        said = re.compile(r"^survive: lost (\d+) adds (\d+)$", re.M)
        for k, (status, out, err) in enumerate(results):
            lines = out.splitlines()
            surv = self.survive[k]
            if status == 0:
                if lines != self.want:
                    self.fail("run %d ended 0 with other lines: %r" % (k, lines))
                m = said.search(err)
                if surv and m is None:
                    self.fail("run %d (--survive) said nothing of its "
                              "workers: %r" % (k, err))
                if surv:
                    nlost, adds = int(m.group(1)), int(m.group(2))
                    # each worker not lost added once, a lost one at
                    # most once: a thread run twice shows
                    if not (160 - nlost <= adds <= 160):
                        self.fail("run %d (--survive): %d lost, %d adds" %
                                  (k, nlost, adds))
                    if nlost and kind == "cut":
                        self.fail("run %d (--survive) lost %d workers to "
                                  "cuts shorter than --lost-after" %
                                  (k, nlost))
                    self.log("survived", run=k, lost=nlost, adds=adds)
                    SURVIVED["runs"] += 1
                    SURVIVED["lost"] += nlost > 0
            elif kind == "cut":
                self.fail("run %d ended %d after cuts shorter than "
                          "--lost-after: %r" % (k, status, err))
            elif status == 75:
                if lines != self.want[:len(lines)]:
                    self.fail("run %d ended 75 with lines that are not a "
                              "prefix of the expected: %r" % (k, lines))
                if not lost.search(err):
                    self.fail("run %d ended 75 without naming m%d: %r" %
                              (k, victim, err))
                if surv and not origin_lost.search(err):
                    self.fail("run %d (--survive) ended 75, but m%d did "
                              "not run its main: %r" % (k, victim, err))
            else:
                self.fail("run %d ended %d: %r" % (k, status, err))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schedules", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR",
                    help="keep each schedule's machines' data and logs "
                         "under DIR/SEED (to read after a failure)")
    ap.add_argument("--kind", action="append",
                    choices=["kill", "stop", "cut", "part"],
                    help="only faults of this kind (again for more kinds); "
                         "cut and part need root and iptables, and become "
                         "kill or stop without them")
    ap.add_argument("--each", action="store_true",
                    help="every seed once per kind (kill, stop, cut, part, or "
                         "those --kind names): the short run make test "
                         "does")
    a = ap.parse_args(argv)
    want = expected_lines()
    kinds = {}
    kinds_each = a.kind or ["kill", "stop", "cut", "part"]
    plan = [(s, [k] if a.each else kinds_each)
            for s in range(a.seed, a.seed + a.schedules)
            for k in (kinds_each if a.each else [None])]
    for s, ks in plan:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.time()
            where = (pathlib.Path(a.keep) / ("%d%s" % (s, "-" + ks[0] if a.each else ""))
                     if a.keep else pathlib.Path(tmp) / "vm")
            kind = Schedule(s, where, want, ks).run()
            kinds[kind] = kinds.get(kind, 0) + 1
            print("schedule %d (%s): passed in %.1f s" % (s, kind,
                                                          time.time() - t),
                  flush=True)
    print("fault harness: %d schedules passed (%s); %d --survive runs "
          "ended 0, %d of them after losing workers" % (
              len(plan), ", ".join("%d %s" % (v, k)
                                   for k, v in sorted(kinds.items())),
              SURVIVED["runs"], SURVIVED["lost"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
