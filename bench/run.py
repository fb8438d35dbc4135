#!/usr/bin/env python3
"""Run each benchmark in Flock and in lua5.4 side by side, check both print
the same answer, and print median wall times, peak RSS and the ratio."""
import math, os, resource, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOCK = os.environ.get("FLOCK", os.path.join(ROOT, "build", "flock"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
BENCHES = ["fib", "loop"]


def run(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return dt, p.stdout


def measure(cmd):
    run(cmd)  # warm-up
    times, out = [], None
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    for _ in range(RUNS):
        dt, out = run(cmd)
        times.append(dt)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return statistics.median(times), out, max(rss, before)


def main():
    ratios = []
    print(f"{'benchmark':<10} {'vs':<8} {'flock s':>9} {'other s':>9} {'ratio':>7}")
    for b in BENCHES:
        ft, fout, _ = measure([FLOCK, "run", os.path.join(ROOT, "bench", b + ".fla")])
        lt, lout, _ = measure(["lua5.4", os.path.join(ROOT, "bench", b + ".lua")])
        if fout.strip() != lout.strip():
            sys.exit(f"bench: {b}: flock printed {fout.strip()!r}, lua5.4 {lout.strip()!r}")
        ratios.append(ft / lt)
        print(f"{b:<10} {'lua5.4':<8} {ft:9.3f} {lt:9.3f} {ft / lt:7.2f}")
    gm = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of flock/lua5.4 ratios: {gm:.2f} (median of {RUNS} runs each)")


if __name__ == "__main__":
    main()
