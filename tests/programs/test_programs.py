"""The golden-program suite: every tests/programs/**/*.fla and *.fl (but
those under a lib/ folder, which are `use`d by others) is run with
`flock run FILE [flags] [-- args]` and checked against the comment
directives it carries:

    ; expect: TEXT     one line of stdout (all expect lines + "\\n" each,
                       concatenated; `; expect:` alone is an empty line).
                       A file NAME.out beside NAME.fla replaces them: stdout
                       must equal its bytes. Neither: stdout must be empty.
    ; status: N        exit status (default 0)
    ; stderr: REGEX    must match stderr (re.search, MULTILINE), each one
                       after the previous match. None: stderr must be empty.
    ; args: A B C      program arguments, after --
    ; flags: --check   options for `flock run`, after FILE
    ; stdin: TEXT      a line of stdin (lines joined with "\\n", plus a final
                       "\\n"); without any, stdin is empty.

A directive is a whole-line comment; the text after "NAME:" loses one
leading space. The second test builds every program that should compile,
disassembles it, builds the disassembly and checks that both modules are
byte-identical.

Thread programs (tests/programs/threads/) run three times, on 1, 2 and 8
worker OS threads (`--cpus N`, ids NAME.fla-cpus1 and so on), unless their
`; flags:` already give --cpus. With FLOCK_STRESS=N in the environment each
of those runs repeats N times in a row and fails at the first run that
differs, naming it (`make stress`). A fourth run, NAME.fla-migrate, uses
`--cpus 2 --debug-migrate`: each preempted thread is encoded to bytes and
continues from the decoded copy, as when it moves between machines.

Programs in tests/programs/fused/ (every superinstruction the linker makes)
also run with --debug-no-fuse (ids NAME-nofuse): same results either way.
"""
import os
import re
import subprocess

import pytest

from flockrun import PROGRAMS, ROOT, Spec, run_flock

# .fl files under a lib/ folder are only `use`d by other programs.
ALL = sorted(list(PROGRAMS.glob("**/*.fla")) +
             [p for p in PROGRAMS.glob("**/*.fl") if "lib" not in p.parts])
SPECS = [Spec(p) for p in ALL]

THREADS = PROGRAMS / "threads"
FUSED = PROGRAMS / "fused"
CPUS = (1, 2, 8)


def ids(specs):
    return [s.rel for s in specs]


def is_threads(spec):
    return THREADS in spec.path.parents


def runs(specs):
    """(spec, extra flags) pairs and their ids: a thread program without
    its own --cpus once per worker count, anything else once."""
    cases, names = [], []
    for s in specs:
        if is_threads(s) and "--cpus" not in s.flags:
            for n in CPUS:
                cases.append((s, ["--cpus", str(n)]))
                names.append("%s-cpus%d" % (s.rel, n))
            # Every preempted thread goes through its serialised state
            # and continues from the decoded copy (vm_tstate.c).
            cases.append((s, ["--cpus", "2", "--debug-migrate"]))
            names.append("%s-migrate" % s.rel)
        else:
            cases.append((s, []))
            names.append(s.rel)
        if FUSED in s.path.parents:
            # the same program without superinstructions gives the same
            cases.append((s, ["--debug-no-fuse"]))
            names.append("%s-nofuse" % s.rel)
    return cases, names


def stress_runs():
    v = os.environ.get("FLOCK_STRESS", "").strip()
    if not v:
        return 1
    try:
        n = int(v)
    except ValueError:
        raise pytest.UsageError("FLOCK_STRESS=%r is not a count" % v)
    return max(n, 1)


CASES, CASE_IDS = runs(SPECS)


@pytest.mark.parametrize("spec,extra", CASES, ids=CASE_IDS)
def test_program(spec, extra):
    n = stress_runs() if is_threads(spec) else 1
    for i in range(1, n + 1):
        problems, err = check_once(spec, extra)
        if problems:
            what = "%s %s" % (spec.rel, " ".join(spec.flags + extra))
            if n > 1:
                what += " (run %d of %d)" % (i, n)
            pytest.fail("%s:\n%s\n--- stderr\n%s"
                        % (what.strip(), "\n".join(problems), err),
                        pytrace=False)


def check_once(spec, extra):
    """Run @spec once with @extra flags; a list of problems and stderr."""
    args = ["run", spec.rel] + spec.flags + extra
    if spec.args:
        args += ["--"] + spec.args
    try:
        r = run_flock(args, stdin=spec.stdin_bytes())
    except subprocess.TimeoutExpired as e:
        return (["no exit within %ss (hung?)" % e.timeout],
                (e.stderr or b"").decode("utf-8", errors="replace"))
    out = r.stdout
    err = r.stderr.decode("utf-8", errors="replace")
    problems = []
    if r.returncode != spec.status:
        problems.append("status %d, expected %d" % (r.returncode, spec.status))
    if out != spec.stdout:
        problems.append("stdout differs:\n--- expected\n%s\n--- got\n%s"
                        % (spec.stdout.decode(errors="replace"),
                           out.decode(errors="replace")))
    if spec.stderr:
        pos = 0
        for rx in spec.stderr:
            m = re.compile(rx, re.MULTILINE).search(err, pos)
            if m is None:
                problems.append("stderr does not match /%s/ (after offset "
                                "%d)" % (rx, pos))
                break
            pos = m.end()
    elif err:
        problems.append("unexpected stderr")
    return problems, err


ROUND = [s for s in SPECS if s.status != 65]


@pytest.mark.parametrize("spec", ROUND, ids=ids(ROUND))
def test_disasm_roundtrip(spec, tmp_path):
    a, b, fla = tmp_path / "a.flb", tmp_path / "b.flb", tmp_path / "a.fla"
    r = run_flock(["build", spec.rel, "-o", str(a)])
    assert r.returncode == 0, "build: %s" % r.stderr.decode(errors="replace")
    r = run_flock(["disasm", str(a)])
    assert r.returncode == 0, "disasm: %s" % r.stderr.decode(errors="replace")
    fla.write_bytes(r.stdout)
    r = run_flock(["build", str(fla), "-o", str(b)])
    assert r.returncode == 0, ("build of the disassembly: %s\n--- text\n%s"
                               % (r.stderr.decode(errors="replace"),
                                  fla.read_text(errors="replace")))
    assert a.read_bytes() == b.read_bytes(), \
        "modules differ after disasm + build:\n" + fla.read_text(errors="replace")
