#!/usr/bin/env python3
"""One process over two machines, side by side with the loopback round
trip and with two C processes, measured in the same run.

  bench/cluster/dist.py   a VM of two machines on 127.0.0.1-2 (cpu:1
                          each), the process started on the first:
    rtt         a TCP round trip on loopback (a 1-byte ping-pong between
                two Python threads, TCP_NODELAY: Python's own cost is in it)
    spawnjoin   spawnjoin.fl: a child spawned and joined at a time, each
                sent to the idle machine (--debug-spread: by default a
                child that would run at once stays; target: at most 3
                round trips)
    throughput  throughput.fl: 20000 children in a burst, then joined,
                with --debug-spread and without (target: 100,000
                threads/s)
    xadd        xadd.fl: a thread on the second machine (sent there by
                --debug-spread, as for fault) adds to a word
                homed on the first (target: within 1.5 round trips)
    fault       fault.fl: threads sent to the second machine read one word
                of each of 510 pages homed on the first, every other page
                (a miss after one on the page before asks ahead), 15 pages
                each (a
                16th fault on one home would send an idle home's reader
                to its data instead; target: a round trip + 20 us)
    primes      primes.fl, hash.fl: `--vm` on the two machines against
                `flock run --cpus 1` (target: 1.8x), each held against two
                C processes (work.c) against one on the same work, run
                right after in each run (the box is shared: its speed
                swings by a fifth within a minute); and `--cpus 2` on one
                machine, what the interpreter gets from the box's two
                cores with nothing crossing machines
The figures inside programs are their own clock (flock's start and the
handshake are not in them); the speed-ups are wall times of whole runs,
the median of the runs' ratios over BENCH_SPEED_RUNS runs (default 9,
the one-machine run first in every other one); the other figures are the
median of BENCH_RUNS runs (default 5). Bytes moved: what
`flock ps -v PID` says of the process (its `all` row: threads moved out,
bytes sent by both layers, pages fetched).
"""
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))
sys.path.insert(0, str(HERE))
from cluster import Cluster, flock_path  # noqa: E402
from latency import rtt_us  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
# The speed-ups swing most (a run's two halves meet the box at different
# moments): more runs, the one-machine run first in every other one.
SPEED_RUNS = int(os.environ.get("BENCH_SPEED_RUNS", str(max(RUNS, 9))))
def run(cmd, env):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       env=env, timeout=300, cwd=str(ROOT))
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (cmd, r.returncode,
                                                  r.stderr.decode()))
    return dt, r.stdout.decode()


def moved(c, pid):
    """What crossed machines, as `flock ps -v` says of the process once it
    is over: threads moved, bytes sent (threads' and memory's messages),
    pages fetched -- the `all` row."""
    ps = c.flock(["ps", "-v", str(pid)]).stdout.decode()
    for line in ps.splitlines():
        f = line.split()
        if len(f) == 14 and f[0] == "all":
            return int(f[4]), parse_bytes(f[12]), int(f[7])
    raise SystemExit("flock ps -v %d: no parts table:\n%s" % (pid, ps))


def parse_bytes(s):
    """ps's 12.3KiB and the like, back to bytes (to its precision)."""
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10),
                       ("B", 1)):
        if s.endswith(unit):
            return int(float(s[:-len(unit)]) * mult)
    raise ValueError(s)


def last_pid(c):
    ps = c.flock(["ps"]).stdout.decode().split("\n")[1:]
    return max(int(l.split()[0]) for l in ps if l.strip())


def in_program(c, env, name, flags=("--debug-spread",), runs=None):
    """Median of the first number a program prints, and what moved;
    with @runs, every run's numbers go there too."""
    vals, rest, mv = [], None, None
    for _ in range(RUNS):
        _, out = run([flock_path(), "run", str(HERE / name), "--vm",
                      c.addr(1)] + list(flags), env)
        f = [int(x) for x in out.split()]
        vals.append(f[0])
        rest = f[1:]
        mv = moved(c, last_pid(c))
        if runs is not None:
            runs.append(f)
    return statistics.median(vals), rest, mv


def speedup(c, env, name, exe, job):
    """Each run: the program with --cpus 1 and over the two machines, then
    with --cpus 2 on one machine (what the interpreter itself gets from
    the box's two cores, with nothing crossing machines), then the C pair
    on the same work (work.c: one process, then two), so that all meet
    the same moment of a shared box. Medians of the runs' times, of their
    flock ratios, of their C ratios, of each run's flock ratio over its C
    ratio, and of each run's --cpus 2 ratio; what moved (the last run)."""
    one, two, fr, cr, held, local2 = [], [], [], [], [], []
    whole, halves = job
    for i in range(SPEED_RUNS):
        a = b = None
        for first in ((True, False) if i % 2 == 0 else (False, True)):
            if first:
                a = run([flock_path(), "run", str(HERE / name), "--cpus",
                         "1"], env)[0]
            else:
                b = run([flock_path(), "run", str(HERE / name), "--vm",
                         c.addr(1)], env)[0]
        l2 = run([flock_path(), "run", str(HERE / name), "--cpus", "2"],
                 env)[0]
        c1, c2 = c_pair(exe, whole), c_pair(exe, halves)
        one.append(a)
        two.append(b)
        fr.append(a / b)
        cr.append(c1 / c2)
        held.append((a / b) / (c1 / c2))
        local2.append(a / l2)
    med = statistics.median
    return (med(one), med(two), med(fr), med(cr), med(held),
            moved(c, last_pid(c)), med(local2))


def c_build(tmp):
    exe = pathlib.Path(tmp) / "work"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "work.c")],
                   check=True)
    return exe


def c_pair(exe, argvs):
    """Wall time of work.c's processes @argvs, run at once."""
    t0 = time.perf_counter()
    ps = [subprocess.Popen([str(exe)] + a, stdout=subprocess.DEVNULL)
          for a in argvs]
    for p in ps:
        p.wait()
    return time.perf_counter() - t0


# primes.fl's and hash.fl's work for work.c: the whole, and two halves
N, MID = 3000000, 1889882  # halves of equal work (primes.fl's split)
WORDS, ROUNDS = 262144, 4000  # hash.fl's array; rounds for ~1 s
C_JOBS = {
    "primes": ([["primes", "0", str(N)]],
               [["primes", "0", str(MID)], ["primes", str(MID), str(N)]]),
    "hash": ([["hash", "0", str(WORDS), str(ROUNDS)]],
             [["hash", "0", str(WORDS // 2), str(ROUNDS)],
              ["hash", str(WORDS // 2), str(WORDS), str(ROUNDS)]]),
}


def main():
    with tempfile.TemporaryDirectory() as tmp:
        c = Cluster(pathlib.Path(tmp) / "vm", vm="bench",
                    provide="cpu:1,ram:1GiB,disk:64MiB")
        try:
            c.new()
            c.join(2)
            for n in (1, 2):
                c.wait_status(lambda t: t.count(" active ") == 2, n=n)
            env = c.env()
            rtt = rtt_us()
            sj_runs = []
            sj, sj_rest, sj_mv = in_program(c, env, "spawnjoin.fl",
                                            runs=sj_runs)
            # a local spawn+join, to take out of the mix: the children that
            # stayed ran at the embedded VM's speed
            local = statistics.median(
                int(run([flock_path(), "run", str(HERE / "spawnjoin.fl"),
                         "--cpus", "1"], env)[1].split()[0])
                for _ in range(RUNS))
            tp, tp_rest, tp_mv = in_program(c, env, "throughput.fl")
            tq, tq_rest, tq_mv = in_program(c, env, "throughput.fl", ())
            xa, xa_rest, xa_mv = in_program(c, env, "xadd.fl")
            fa, fa_rest, fa_mv = in_program(c, env, "fault.fl")
            exe = c_build(tmp)
            p1, p2, pr, cref, pheld, p_mv, pl2 = speedup(
                c, env, "primes.fl", exe, C_JOBS["primes"])
            h1, h2, hr, chash, hheld, h_mv, hl2 = speedup(
                c, env, "hash.fl", exe, C_JOBS["hash"])
            rtt = (rtt + rtt_us()) / 2
        finally:
            c.stop()
    rt = rtt * 1e3  # ns
    print("one process over two machines (cpu:1 each, loopback; median "
          "of %d runs)" % RUNS)
    print("  %-40s %10.1f us" % ("loopback TCP round trip", rtt))

    def line(what, v, ratio, tgt, mv):
        print("  %-40s %10s  %-22s target %-10s moved: %d threads, %d bytes, "
              "%d pages" % (what, v, ratio, tgt, mv[0], mv[1], mv[2]))
    # each run: the children sent away cost what the run took beyond
    # the ones that stayed (runs that sent fewer than 100 say little)
    per = [(t * 2000 - (2000 - a) * local) / a for t, a in sj_runs if a >= 100]
    remote = statistics.median(per) if per else float("nan")
    line("remote spawn+join", "%.1f us" % (remote / 1e3),
         "%.2f round trips" % (remote / rt), "<= 3", sj_mv)
    print("    (children sent away in the %d runs: %s of 2000; the rest ran "
          "here at %.2f us)" % (len(sj_runs), ", ".join(str(a) for _, a in sj_runs),
                                local / 1e3))
    line("batched spawn+join (--debug-spread)", "%.0f /s" % (20000 / (tp / 1e9)),
         "%d moved of 20000" % tp_rest[0], ">= 100000", tp_mv)
    line("batched spawn+join (default)", "%.0f /s" % (20000 / (tq / 1e9)),
         "%d moved of 20000" % tq_rest[0], ">= 100000", tq_mv)
    line("remote xadd", "%.1f us" % (xa / 1e3),
         "%.2f round trips" % (xa / rt), "<= 1.5", xa_mv)
    print("    (the adder ran on machine %d; count %d)" % (xa_rest[0], xa_rest[1]))
    line("global page read fault", "%.1f us" % (fa / 1e3),
         "rtt + %.1f us" % ((fa - rt) / 1e3), "rtt + 20", fa_mv)
    print("    (the last reader ran on machine %d)" % fa_rest[0])
    line("primes, 2 machines vs --cpus 1", "%.2fx" % pr,
         "%.3f s vs %.3f s" % (p2, p1), ">= 1.8", p_mv)
    line("hash 2 MiB, 2 machines vs --cpus 1", "%.2fx" % hr,
         "%.3f s vs %.3f s" % (h2, h1), ">= 1.8", h_mv)
    print("  %-40s %10s" % ("two C processes vs one, primes' work",
                            "%.2fx" % cref))
    print("  %-40s %10s" % ("two C processes vs one, hash's work",
                            "%.2fx" % chash))
    print("  %-40s %10s" % ("flock --cpus 2 vs --cpus 1, primes",
                            "%.2fx" % pl2))
    print("  %-40s %10s" % ("flock --cpus 2 vs --cpus 1, hash",
                            "%.2fx" % hl2))
    print("  speed-ups held against C's (each run's against the C pair "
          "run right after it): primes %.2f, hash %.2f of it"
          % (pheld, hheld))


if __name__ == "__main__":
    main()
