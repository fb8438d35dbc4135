#!/usr/bin/env python3
"""Flock benchmarks side by side with other runtimes.

  bench/run.py            CPU benchmarks, then thread benchmarks
  bench/run.py --cpu      only the CPU benchmarks (vs lua5.4 and luajit -joff):
                          fib, loop, sieve, matmul, calls, words
  bench/run.py --threads  only the thread benchmarks (vs Erlang and Go):
                          spawnjoin, parked, primes, xadd, mutex

Each benchmark is one algorithm written twice: bench/NAME.fl for Flock and
NAME.lua (run by lua5.4 and by LuaJIT's interpreter, luajit -joff), NAME.go
or NAME.erl for the competitor, given the same arguments. Every program is
built ahead (flock build, erlc, go build into a temporary directory) and each
measurement runs it in a fresh child process: one warm-up run, then
BENCH_RUNS runs (default 5; BENCH_RUNS_BIG, default 3, for the million-thread
case). A line shows the median wall time and the median peak RSS (GNU time's
%M) of each side and the ratios flock/other; the CPU table ends with the
geometric mean of the ratios for each competitor. Both sides must print the
same answer (the thread benchmarks: the expected one). When a side cannot
run a benchmark, its numbers are shown as n/a with the reason.
BENCH_QUICK=1 shrinks every input (about 10x) for a quick smoke test.
Exit status 1 when some program printed a wrong answer or a competitor failed.
"""
import argparse, math, os, shutil, signal, statistics, subprocess, sys
import tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
FLOCK = os.environ.get("FLOCK", os.path.join(ROOT, "build", "flock"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
RUNS_BIG = int(os.environ.get("BENCH_RUNS_BIG", "3"))
TIMEOUT = float(os.environ.get("BENCH_TIMEOUT", "120"))  # seconds per run
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
NCPU = len(os.sched_getaffinity(0))
TIME = "/usr/bin/time"  # GNU time, package "time"

failed = False  # a wrong answer or a broken competitor: exit status 1


class NA(Exception):
    """This side cannot run this benchmark; str() says why."""


def run_once(cmd, env):
    """Run cmd once: (wall seconds, peak RSS KiB, stdout). The peak RSS comes
    from /usr/bin/time: the ru_maxrss Python itself could get from wait4 would
    include the pages of the forked Python (about 16 MiB) the child ran in
    before its exec."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(mode="r") as rss:
        t0 = time.perf_counter()
        p = subprocess.Popen([TIME, "-f", "%M", "-o", rss.name] + cmd,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             env=env, start_new_session=True)
        timer = threading.Timer(TIMEOUT, os.killpg, (p.pid, signal.SIGKILL))
        timer.start()
        rc = p.wait()
        dt = time.perf_counter() - t0
        timer.cancel()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace").strip()
        report = rss.read().split()
    if rc != 0:
        lines = [l for l in stderr.splitlines() if not l.startswith("Command ")]
        why = lines[-1] if lines else ""
        if "runtime error: " in why:
            why = why.split("runtime error: ", 1)[1]
        if rc == -signal.SIGKILL and dt >= TIMEOUT:
            why = f"timed out after {TIMEOUT:g} s"
        raise NA(f"exit status {rc}" + (f": {why}" if why else ""))
    return dt, int(report[-1]), stdout.strip()


_cache = {}


def measure(cmd, env=None, runs=RUNS):
    """Warm-up, then `runs` runs: (median s, median peak RSS KiB, stdout)."""
    key = (tuple(cmd), tuple(sorted((env or {}).items())), runs)
    if key not in _cache:
        full_env = dict(os.environ, **(env or {}))
        try:
            res = []
            for i in range(runs + 1):  # run 0 is the warm-up
                try:
                    res.append(run_once(cmd, full_env))
                except NA as e:
                    raise NA(f"run {i + 1} of {runs + 1}: {e}") if i else e
            res = res[1:]
            outs = {r[2] for r in res}
            if len(outs) != 1:
                raise NA(f"printed different answers: {sorted(outs)}")
            _cache[key] = (statistics.median(r[0] for r in res),
                           statistics.median(r[1] for r in res), res[0][2])
        except NA as e:
            _cache[key] = e
    r = _cache[key]
    if isinstance(r, NA):
        raise r
    return r


# ---- the three sides -------------------------------------------------------

class Flock:
    name = "flock"

    def __init__(self, tmp):
        self.tmp = tmp
        help_text = subprocess.run([FLOCK, "run", "--help"], capture_output=True,
                                   text=True).stdout
        self.has_cpus = "--cpus" in help_text

    def build(self, prog):
        out = os.path.join(self.tmp, prog + ".flb")
        if not os.path.exists(out):
            p = subprocess.run([FLOCK, "build", os.path.join(BENCH, prog + ".fl"),
                                "-o", out], capture_output=True, text=True)
            if p.returncode != 0:
                sys.exit(f"bench: flock build {prog}.fl failed: {p.stderr.strip()}")
        return out

    def cmd(self, prog, args, cpus=None):
        opts = ["--cpus", str(cpus)] if cpus and self.has_cpus else []
        return [FLOCK, "run", self.build(prog)] + opts + ["--", *map(str, args)], None


class Lua:
    """lua5.4, or LuaJIT's interpreter alone (luajit -joff), on NAME.lua."""

    def __init__(self, name, argv0, *opts):
        self.name = name
        if not shutil.which(argv0):
            raise NA(f"{argv0} not installed (scripts/deps.sh bench)")
        self.argv = [argv0, *opts]

    def cmd(self, prog, args, cpus=None):
        return self.argv + [os.path.join(BENCH, prog + ".lua"), *map(str, args)], None


class Erlang:
    name = "erlang"
    BIG = {"spawnjoin", "parked"}  # need a larger process limit than 262144

    def __init__(self, tmp):
        if not (shutil.which("erl") and shutil.which("erlc")):
            raise NA("erl/erlc not installed (scripts/deps.sh bench)")
        self.ebin = os.path.join(tmp, "ebin")
        os.mkdir(self.ebin)
        srcs = [os.path.join(BENCH, f) for f in sorted(os.listdir(BENCH)) if f.endswith(".erl")]
        p = subprocess.run(["erlc", "-o", self.ebin] + srcs, capture_output=True, text=True)
        if p.returncode != 0:
            raise NA(f"erlc failed: {p.stdout.strip()} {p.stderr.strip()}")

    def cmd(self, prog, args, cpus=None):
        opts = ["+S", str(cpus)] if cpus else []
        if prog in self.BIG:
            opts += ["+P", "2000000"]
        return (["erl"] + opts + ["-noshell", "-pa", self.ebin, "-run", prog, "main",
                                  *map(str, args)], None)


class Go:
    name = "go"

    def __init__(self, tmp):
        if not shutil.which("go"):
            raise NA("go not installed (scripts/deps.sh bench)")
        self.tmp = tmp
        env = dict(os.environ, GOCACHE=os.path.join(tmp, "gocache"),
                   GOPATH=os.path.join(tmp, "gopath"), GO111MODULE="off",
                   GOPROXY="off", GOFLAGS="", CGO_ENABLED="0")
        for f in sorted(os.listdir(BENCH)):
            if f.endswith(".go"):
                p = subprocess.run(["go", "build", "-o", os.path.join(tmp, f[:-3]),
                                    os.path.join(BENCH, f)], capture_output=True,
                                   text=True, env=env)
                if p.returncode != 0:
                    raise NA(f"go build {f} failed: {p.stderr.strip()}")

    def cmd(self, prog, args, cpus=None):
        return ([os.path.join(self.tmp, prog), *map(str, args)],
                {"GOMAXPROCS": str(cpus)} if cpus else None)


# ---- output ----------------------------------------------------------------

VS = 12  # width of the 'vs' column: "luajit -joff"
HEADER_CPU = (f"{'benchmark':<18} {'vs':<{VS}} {'flock s':>8} {'other s':>8} {'ratio':>6} "
              f"{'flock MiB':>9} {'other MiB':>9} {'ratio':>6}")
HEADER = HEADER_CPU + "  derived (flock vs other)"


def mib(kib):
    return f"{kib / 1024:9.1f}"


def check(side, bench, out, expected):
    global failed
    if out != str(expected):
        failed = True
        print(f"bench: {bench}: {side} printed {out!r}, expected {expected}")
        return False
    return True


def row(bench, other, f, o, derived="", flock_na=None):
    """f, o: (s, KiB, out) of flock and the competitor; f None if n/a."""
    if f is None:
        line = (f"{bench:<18} {other:<{VS}} {'-':>8} {o[0]:8.3f} {'-':>6} "
                f"{'-':>9} {mib(o[1])} {'-':>6}  {derived}")
        line = line.rstrip() + f"  flock: n/a ({flock_na})"
    else:
        line = (f"{bench:<18} {other:<{VS}} {f[0]:8.3f} {o[0]:8.3f} {f[0] / o[0]:6.2f} "
                f"{mib(f[1])} {mib(o[1])} {f[1] / o[1]:6.2f}  {derived}")
    print(line.rstrip(), flush=True)


def na_row(bench, other, why):
    print(f"{bench:<18} {other:<{VS}} n/a ({why})", flush=True)


def versus(bench, flock, others, prog, args, expected, runs=RUNS, cpus=None,
           derive=None, flock_args=()):
    """One line per competitor. derive(side, result) -> number or None, shown
    as 'derived' for flock and the competitor. flock_args: more arguments for
    the Flock program only."""
    global failed
    fres, fwhy = None, None
    try:
        fres = measure(*flock.cmd(prog, list(args) + list(flock_args), cpus), runs=runs)
        if not check("flock", bench, fres[2], expected):
            fres, fwhy = None, "wrong answer"
    except NA as e:
        fwhy = str(e)
    results = {}
    for other in others:
        if isinstance(other, tuple):  # (name, why not)
            na_row(bench, *other)
            continue
        try:
            ores = measure(*other.cmd(prog, args, cpus), runs=runs)
        except NA as e:
            failed = True
            na_row(bench, other.name, e)
            continue
        if not check(other.name, bench, ores[2], expected):
            continue
        results[other.name] = ores
        d = ""
        if derive:
            fd = derive(flock, fres) if fres else None
            od = derive(other, ores)
            d = derive.fmt(fd, od) if od is not None else ""
        row(bench, other.name, fres, ores, d, fwhy)
    return fres, results


class Derived:
    def __init__(self, fn, label, fmt="{:.0f}"):
        self.fn, self.label, self.f = fn, label, fmt

    def __call__(self, side, res):
        try:
            return self.fn(side, res)
        except NA:
            return None

    def fmt(self, fd, od):
        a = "-" if fd is None else self.f.format(fd)
        return f"{self.label} {a} vs {self.f.format(od)}"


# ---- benchmarks --------------------------------------------------------------

# name: (full-size arguments, BENCH_QUICK arguments), the same for both sides
CPU = {
    "fib": ([35], [30]),                      # naive recursive fib(N)
    "loop": ([100000000], [10000000]),        # N iterations of integer arithmetic
    "sieve": ([10000000, 4], [1000000, 4]),   # sieve of N entries, REPS times
    "matmul": ([200, 10], [100, 10]),         # N x N matrix multiply, REPS times
    "calls": ([50000000], [5000000]),         # N calls of a small function
    "words": ([50000000], [5000000]),         # N random bytes, count the words
}


def geomean(xs):
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def cpu_benches(tmp):
    global failed
    flock = Flock(tmp)
    others = []
    for name, argv in [("lua5.4", ["lua5.4"]), ("luajit -joff", ["luajit", "-joff"])]:
        try:
            others.append(Lua(name, *argv))
        except NA as e:
            others.append((name, str(e)))
    print(f"CPU benchmarks (median of {RUNS} run{'s' if RUNS != 1 else ''} after a warm-up"
          + (", BENCH_QUICK=1: small inputs)" if QUICK else ")"))
    print(HEADER_CPU)
    ratios = {side_name(o): [] for o in others}
    for b, (full, quick) in CPU.items():
        args = quick if QUICK else full
        label = f"{b} {' '.join(map(str, args))}"
        fres, fwhy = None, None
        try:
            fres = measure(*flock.cmd(b, args))
        except NA as e:
            failed = True
            fwhy = str(e)
        for other in others:
            if isinstance(other, tuple):  # (name, why not)
                na_row(label, *other)
                continue
            try:
                ores = measure(*other.cmd(b, args))
            except NA as e:
                failed = True
                na_row(label, other.name, e)
                continue
            if fres is not None and ores[2] != fres[2]:
                failed = True
                na_row(label, other.name, f"answers differ: flock printed {fres[2]!r}, "
                                          f"{other.name} {ores[2]!r}")
                continue
            row(label, other.name, fres, ores, "" if fres else f"printed {ores[2]}",
                fwhy)
            if fres:
                ratios[other.name].append((fres[0] / ores[0], fres[1] / ores[1]))
    for name, rs in ratios.items():
        if rs:
            print(f"geometric mean of flock/{name} ratios over {len(rs)} of {len(CPU)} "
                  f"benchmarks: time {geomean(r[0] for r in rs):.2f}, "
                  f"peak RSS {geomean(r[1] for r in rs):.2f}")
        else:
            print(f"geometric mean of flock/{name} ratios: n/a")


def primes_below(n):
    sieve = bytearray([1]) * n
    sieve[:2] = b"\0\0"[:n]
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, n, i)))
    return sum(sieve)


def thread_benches(tmp):
    flock = Flock(tmp)
    others = []
    for cls in (Erlang, Go):
        try:
            others.append(cls(tmp))
        except NA as e:
            others.append((cls.name, str(e)))
    scale = 10 if QUICK else 1  # BENCH_QUICK=1: inputs 10x smaller
    big = 1000000 // scale
    print(f"Thread benchmarks on {NCPU} cores (median of {RUNS} runs after a warm-up, "
          f"{RUNS_BIG} for {count(big)} threads"
          + (", BENCH_QUICK=1: small inputs)" if QUICK else ")"))
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.2f} before starting: other work on this machine "
              f"makes times (and speed-ups) noisy")
    if not flock.has_cpus:
        print("note: this flock has no 'run --cpus'; its 1-core primes run is W=1 on the "
              "default VM")
    print(HEADER)

    # 1. spawn + join of 100k and 1M threads (10k and 100k quick): ns per thread
    #    over the N = 0 run (start-up excluded)
    def per_thread(n):
        def fn(side, res):
            base = measure(*side.cmd("spawnjoin", [0]))
            return (res[0] - base[0]) / n * 1e9
        return Derived(fn, "ns/thread")
    for n, runs in [(100000 // scale, RUNS), (big, RUNS_BIG)]:
        label = f"spawnjoin {count(n)}"
        versus(label, flock, others, "spawnjoin", [n], n * (n - 1), runs=runs,
               derive=per_thread(n))
    # ... and on one core: more workers must not make spawn + join slower
    versus(f"spawnjoin {count(big)} 1 cpu", flock, others, "spawnjoin", [big],
           big * (big - 1), runs=RUNS_BIG, cpus=1, derive=per_thread(big))

    # 2. parked threads (100k, 10k quick): bytes per thread over the N = 0 run. Flock twice:
    #    tids in local memory (alloc: every parked thread keeps the snapshot
    #    of main's local memory it was spawned with) and in global memory.
    n = 100000 // scale
    for label, where in [(f"parked {count(n)}", 0), (f"parked {count(n)} galloc", 1)]:
        def per_parked(side, res, where=where):
            extra = [where] if side is flock else []
            base = measure(*side.cmd("parked", [0] + extra))
            return (res[1] - base[1]) * 1024 / n
        versus(label, flock, others, "parked", [n], n, flock_args=[where],
               derive=Derived(per_parked, "B/thread"))

    # 3. primes below 2M (200k quick) on 1 core (W = 1) and on all cores (W = NCPU)
    limit = 2000000 // scale
    expected = primes_below(limit)
    versus("primes 1 cpu", flock, others, "primes", [1, limit], expected, cpus=1)

    def scaling(side, res):
        return measure(*side.cmd("primes", [1, limit], 1))[0] / res[0]
    versus(f"primes {NCPU} cpus", flock, others, "primes", [NCPU, limit], expected,
           cpus=NCPU, derive=Derived(scaling, "speed-up", "{:.2f}x"))

    # 4. contended counter: W = NCPU threads x 1M (100k quick) increments; ns per increment
    #    over the ITERS = 0 run
    iters = 1000000 // scale

    def per_op(prog):
        def fn(side, res):
            base = measure(*side.cmd(prog, [NCPU, 0]))
            return (res[0] - base[0]) / (NCPU * iters) * 1e9
        return Derived(fn, "ns/op", "{:.1f}")
    versus(f"xadd {NCPU}x{count(iters)}", flock, others, "xadd", [NCPU, iters], NCPU * iters,
           derive=per_op("xadd"))
    no_mutex = ("erlang", "no idiomatic mutex: Erlang code shares a counter "
                          "with atomics, see xadd")
    versus(f"mutex {NCPU}x{count(iters)}", flock,
           [no_mutex if side_name(o) == "erlang" else o for o in others],
           "mutex", [NCPU, iters], NCPU * iters, derive=per_op("mutex"))


def count(n):
    """100000 -> '100k', 1000000 -> '1M'."""
    for div, unit in [(1000000, "M"), (1000, "k")]:
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def side_name(o):
    return o[0] if isinstance(o, tuple) else o.name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--cpu", action="store_true",
                   help="only the CPU benchmarks (vs lua5.4 and luajit -joff)")
    g.add_argument("--threads", action="store_true",
                   help="only the thread benchmarks (vs Erlang and Go)")
    a = ap.parse_args()
    if not os.access(TIME, os.X_OK):
        sys.exit(f"bench: {TIME} not found (package 'time'; scripts/deps.sh bench)")
    with tempfile.TemporaryDirectory(prefix="flock-bench-") as tmp:
        if not a.threads:
            cpu_benches(tmp)
        if not a.cpu:
            if not a.threads:
                print()
            thread_benches(tmp)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
