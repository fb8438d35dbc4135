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

3. README.md and docs/*.md link only inside the repository: every link
   (`[text](target)`, `![alt](target)`, `[label]: target`, `<scheme:...>`,
   HTML href/src, and bare http(s):// or www. addresses, which GitHub
   turns into links) outside code blocks and code spans must be a relative
   path that stays inside the repository and names a file or directory
   that exists; a `#fragment` into a .md file must name one of its
   headings (GitHub's anchors). URLs, absolute paths and paths escaping
   the repository root fail.

4. The README's quick start: its "## Quick start" section has exactly two
   command lines (lines starting with `make`, `./`, `sh `, `bash ` or
   `sudo `, picked the way a fresh-machine check picks them), the first
   ending in `run` and the second in `test`, and .ci/run runs exactly the
   second.
"""
import os
import pathlib
import re
import urllib.parse

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


# ---- links in README.md and docs/*.md ----

README = ROOT / "README.md"
LINKED_DOCS = [README] + sorted((ROOT / "docs").glob("*.md"))

FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(
    r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]"         # [text], one level of [] inside
    r"\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)"  # (target
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)")   # "title")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
AUTOLINK = re.compile(r"<([A-Za-z][A-Za-z0-9+.-]*:[^\s<>]*)>")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']*)[\"']",
                       re.IGNORECASE)
BARE_URL = re.compile(r"(?<![\w/<(])(?:https?://|www\.)[^\s<>()]+", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(path):
    """(line number, line) of @path outside fenced and indented code
    blocks."""
    out, fence, prev_blank, in_code, in_list = [], None, True, False, False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is not None:
            m = FENCE_OPEN.match(line)
            if (m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence)
                    and not line.strip()[len(m.group(1)):].strip()):
                fence = None
            continue
        m = FENCE_OPEN.match(line)
        if m:
            fence, prev_blank, in_code = m.group(1), False, False
            continue
        blank = not line.strip()
        indented = line.startswith("    ") or line.startswith("\t")
        if indented and not blank and (prev_blank or in_code) and not in_list:
            in_code = True
            continue
        if not blank:
            in_code = False
            if LIST_ITEM.match(line):
                in_list = True
            elif not line[:1].isspace():
                in_list = False
        prev_blank = blank
        out.append((n, line))
    return out


def links(path):
    """(line number, target) of every link in @path's prose."""
    out = []
    for n, line in prose_lines(path):
        text = CODE_SPAN.sub("CODE", line)
        for rx in (INLINE_LINK, REF_DEF, AUTOLINK, HTML_LINK):
            out += [(n, m.group(1)) for m in rx.finditer(text)]
            text = rx.sub(" LINK ", text)
        out += [(n, m.group(0).rstrip(".,;:!?*_~'\"")) for m in BARE_URL.finditer(text)]
    return out


def anchors(path):
    """GitHub's anchors for @path's headings (and explicit HTML ids)."""
    seen, out = {}, set()
    for _, line in prose_lines(path):
        for m in re.finditer(r"\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", line):
            out.add(m.group(1))
        m = HEADING.match(line)
        if not m:
            continue
        h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else "%s-%d" % (slug, k))
    return out


def link_problem(md, target):
    """Why @target, linked from @md, is not a link inside the repository;
    None when it is."""
    t = target.strip()
    if t.startswith("<") and t.endswith(">"):
        t = t[1:-1].strip()
    if SCHEME.match(t) or t.startswith("//") or t.lower().startswith("www."):
        return "is a URL: it points outside the repository"
    path, _, frag = t.partition("#")
    path = urllib.parse.unquote(path.split("?", 1)[0])
    if path.startswith("/") or path.startswith("\\"):
        return "is an absolute path: use one relative to %s" % md.parent.relative_to(ROOT)
    dest = pathlib.Path(os.path.normpath(md.parent / path)) if path else md
    try:
        dest.resolve().relative_to(ROOT.resolve())
    except ValueError:
        return "leaves the repository"
    if not dest.exists():
        return "does not exist"
    if frag and dest.suffix == ".md" and dest.is_file() and frag not in anchors(dest):
        return "names no heading of %s" % dest.relative_to(ROOT)
    return None


@pytest.mark.parametrize("md", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_repository(md):
    bad = []
    for n, target in links(md):
        why = link_problem(md, target)
        if why:
            bad.append("%s:%d: link %s %s" % (md.relative_to(ROOT), n, target, why))
    assert not bad, "\n".join(bad)


def test_link_check_catches_outside_links(tmp_path):
    """The checker itself: what it must refuse and what it must accept."""
    docs = ROOT / "docs" / "x.md"
    for target in ["https://example.com/", "http://x", "mailto:a@b", "<https://x>",
                   "/etc/passwd", "../../shared/SPEC.md", "../../x", "nope.md",
                   "isa.md#no-such-heading", "//host/x"]:
        assert link_problem(docs, target), target
    for target in ["isa.md", "isa.md#errors", "../README.md", "../examples/",
                   "commands.md#exit-statuses", "memory.md#checked-access",
                   "commands.md#the-cluster"]:
        assert link_problem(docs, target) is None, target
    md = tmp_path / "t.md"
    md.write_text("see [a](../x) and <http://y>, also https://z.\n"
                  "    [code](http://not-a-link)\n\n"
                  "    [indented code](http://not-a-link)\n"
                  "```\n[fenced](http://not-a-link)\n```\n"
                  "`[span](http://not-a-link)` [`code` text](b.md 'title')\n"
                  "[ref]: https://w\n", encoding="utf-8")
    got = [t for _, t in links(md)]
    assert got == ["../x", "http://y", "https://z", "http://not-a-link",
                   "b.md", "https://w"], got


# ---- the README's quick start ----

QUICK_CMD = re.compile(r"^(make|\./|sh |bash |sudo )")


def quick_start_commands():
    """The command lines of the README's Quick start section, picked as
    a fresh-machine check picks them: lines (leading spaces dropped)
    starting with make, ./, sh, bash or sudo, without # comments."""
    section, inside = [], False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("## Quick start"):
            inside = True
            continue
        if inside and line.startswith("## "):
            break
        if inside:
            section.append(line.lstrip(" "))
    return [re.sub(r" *#.*$", "", l) for l in section if QUICK_CMD.match(l)]


def test_quick_start_commands():
    cmds = quick_start_commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].split()[-1] == "run", cmds
    assert cmds[1].split()[-1] == "test", cmds
    for c in cmds:
        word = c.split()[0]
        if word.startswith("./"):
            assert os.access(ROOT / word, os.X_OK), word + " is not executable"


def test_ci_runs_readme_test_command():
    lines = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    assert lines[-1] == quick_start_commands()[1], lines
