"""Keeps the user-facing Flock language material honest.

1. Every examples/*.fl is run in place with `flock run FILE [-- args]` and
   checked against the directives at its top, the same syntax as the
   golden programs (test_programs.py): `// expect: TEXT` (one line of
   stdout each; none means stdout must be empty), `// args: A B`. The
   status must be 0 and stderr empty. Examples that spawn threads also run
   on 1 and 8 worker OS threads (`--cpus`), since their output must not
   depend on scheduling.

2. docs/language.md: every fenced block tagged ```fl is a program.
   - followed (after blank lines only) by an ```output block: it is run
     and its stdout must equal that block exactly, status 0;
   - otherwise it must compile (`flock build`).
   A block tagged ```fl-error must fail to compile (status 65); when an
   ```output block follows it, every line of it must appear in stderr.
   Blocks are written to a temporary file named snippet.fl, so paths in
   expected diagnostics read snippet.fl.
"""
import pathlib
import re

import pytest

from flockrun import ROOT, Spec, run_flock

EXAMPLES = ROOT / "examples"
LANGUAGE_MD = ROOT / "docs" / "language.md"

FENCE = re.compile(r"^```([A-Za-z0-9_-]*)\s*$")


def example_params():
    out = []
    for p in sorted(EXAMPLES.glob("*.fl")):
        threaded = "spawn" in p.read_text(encoding="utf-8")
        for cpus in ([None, 1, 8] if threaded else [None]):
            name = p.name if cpus is None else "%s-cpus%d" % (p.name, cpus)
            out.append(pytest.param(p, cpus, id=name))
    return out


def describe(r):
    return "status %d\n--- stdout\n%s\n--- stderr\n%s" % (
        r.returncode, r.stdout.decode(errors="replace"),
        r.stderr.decode(errors="replace"))


def test_examples_exist():
    names = {p.name for p in EXAMPLES.glob("*.fl")}
    for want in ["hello.fl", "fib.fl", "primes.fl", "counter.fl",
                 "prodcons.fl", "mutex.fl", "mergesort.fl", "args.fl"]:
        assert want in names


@pytest.mark.parametrize("path,cpus", example_params())
def test_example(path, cpus):
    spec = Spec(path)
    stdout, args = spec.stdout, spec.args
    cmd = ["run", spec.rel]
    if cpus is not None:
        cmd += ["--cpus", str(cpus)]
    if args:
        cmd += ["--"] + args
    r = run_flock(cmd)
    assert r.returncode == 0, describe(r)
    assert r.stderr == b"", describe(r)
    assert r.stdout == stdout, describe(r)


# ---- docs/language.md ----

class Block:
    def __init__(self, tag, line, text):
        self.tag, self.line, self.text = tag, line, text
        self.output = None


def doc_blocks():
    """The ```fl and ```fl-error blocks of language.md, each with the
    ```output block that follows it (if any)."""
    lines = LANGUAGE_MD.read_text(encoding="utf-8").splitlines()
    blocks, i, last = [], 0, None
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            if lines[i].strip():
                last = None
            i += 1
            continue
        tag, start = m.group(1), i + 1
        j = start
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        body = "".join(l + "\n" for l in lines[start:j])
        if tag in ("fl", "fl-error"):
            last = Block(tag, start, body)
            blocks.append(last)
        elif tag == "output" and last is not None:
            last.output = body
            last = None
        else:
            last = None
        i = j + 1
    return blocks


def doc_params():
    if not LANGUAGE_MD.exists():
        return []
    return [pytest.param(b, id="language.md:%d" % b.line)
            for b in doc_blocks()]


def test_language_md_has_snippets():
    blocks = doc_blocks()
    assert sum(b.output is not None for b in blocks) >= 10
    assert any(b.tag == "fl-error" for b in blocks)


@pytest.mark.parametrize("block", doc_params())
def test_doc_snippet(block, tmp_path):
    src = tmp_path / "snippet.fl"
    src.write_text(block.text, encoding="utf-8")
    if block.tag == "fl-error":
        r = run_flock(["build", "snippet.fl", "-o", "snippet.flb"],
                      cwd=tmp_path)
        assert r.returncode == 65, describe(r)
        err = r.stderr.decode(errors="replace")
        for want in (block.output or "").splitlines():
            assert want in err.splitlines(), describe(r)
    elif block.output is not None:
        r = run_flock(["run", "snippet.fl"], cwd=tmp_path)
        assert r.returncode == 0, describe(r)
        assert r.stdout.decode(errors="replace") == block.output, describe(r)
    else:
        r = run_flock(["build", "snippet.fl", "-o", "snippet.flb"],
                      cwd=tmp_path)
        assert r.returncode == 0, describe(r)
