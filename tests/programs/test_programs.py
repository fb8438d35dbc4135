"""The golden-program suite: every tests/programs/**/*.fla is run with
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
"""
import re
import subprocess

import pytest

from flockrun import PROGRAMS, ROOT, run_flock

DIRECTIVE = re.compile(r"^\s*;\s*(expect|status|stderr|args|flags|stdin):(.*)$")


class Spec:
    def __init__(self, path):
        self.path = path
        self.rel = str(path.relative_to(ROOT))
        self.expect = []
        self.status = 0
        self.stderr = []
        self.args = []
        self.flags = []
        self.stdin = None
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        for line in text.splitlines():
            m = DIRECTIVE.match(line)
            if not m:
                continue
            key, val = m.group(1), m.group(2)
            if val.startswith(" "):
                val = val[1:]
            if key == "expect":
                self.expect.append(val)
            elif key == "status":
                self.status = int(val.strip())
            elif key == "stderr":
                self.stderr.append(val)
            elif key == "args":
                self.args += val.split()
            elif key == "flags":
                self.flags += val.split()
            elif key == "stdin":
                self.stdin = (self.stdin or []) + [val]
        out = path.with_suffix(".out")
        if out.exists():
            self.stdout = out.read_bytes()
        else:
            self.stdout = "".join(l + "\n" for l in self.expect).encode()

    def stdin_bytes(self):
        if self.stdin is None:
            return None
        return ("\n".join(self.stdin) + "\n").encode()


ALL = sorted(PROGRAMS.glob("**/*.fla"))
SPECS = [Spec(p) for p in ALL]


def ids(specs):
    return [s.rel for s in specs]


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_program(spec):
    args = ["run", spec.rel] + spec.flags
    if spec.args:
        args += ["--"] + spec.args
    r = run_flock(args, stdin=spec.stdin_bytes())
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
    if problems:
        pytest.fail("%s:\n%s\n--- stderr\n%s" % (spec.rel, "\n".join(problems),
                                                 err), pytrace=False)


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
