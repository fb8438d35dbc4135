"""Helpers shared by the golden-program suite (test_programs.py), the
command-line tests (test_cli.py) and the examples/docs tests (test_docs.py):
running flock, and Spec, a program's expectations read from its comment
directives.

FLOCK names the flock binary (default: build/flock under the repository
root). Every command runs with the repository root as its working
directory, so program paths in messages read tests/programs/....
"""
import os
import re
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROGRAMS = pathlib.Path(__file__).resolve().parent
TIMEOUT = 30


def flock_path():
    exe = os.environ.get("FLOCK", "build/flock")
    p = pathlib.Path(exe)
    if not p.is_absolute():
        p = ROOT / p
    return str(p)


def run_flock(args, stdin=None, env=None, cwd=None):
    """Run flock with @args; returns subprocess.CompletedProcess (bytes)."""
    e = dict(os.environ)
    e.pop("FLOCK_VM", None)
    if env:
        e.update(env)
    return subprocess.run(
        [flock_path()] + list(args),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(cwd or ROOT),
        env=e,
        timeout=TIMEOUT,
    )


# `;` comments in assembly, `//` in the Flock language.
DIRECTIVE = re.compile(r"^\s*(?:;|//)\s*(expect|status|stderr|args|flags|stdin):(.*)$")


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
