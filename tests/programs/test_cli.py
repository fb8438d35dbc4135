"""The flock command line (SPEC sections 1 and 9): help, usage errors and
their statuses, missing and malformed inputs, `flock build` outputs, and
running a built module."""
import re

import pytest

from flockrun import run_flock

HELLO = """; hello
.rodata
msg:    .bytes "hello, flock\\n"
.text
func main 0 0
        push 1
        push msg
        push 13
        write
        drop
        argc
        ret
end
"""

DIV0 = "tests/programs/runtime/div0.fla"


def text(b):
    return b.decode("utf-8", errors="replace")


@pytest.fixture
def hello(tmp_path):
    p = tmp_path / "hello.fla"
    p.write_text(HELLO)
    return p


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["run", "--help"],
                                  ["build", "--help"], ["disasm", "--help"]],
                         ids=" ".join)
def test_help(args):
    r = run_flock(args)
    assert r.returncode == 0
    assert "usage:" in text(r.stdout)


def test_no_arguments():
    r = run_flock([])
    assert r.returncode == 64
    assert r.stdout == b""
    assert "usage:" in text(r.stderr)


def test_unknown_command():
    r = run_flock(["frobnicate", "x"])
    assert r.returncode == 64
    err = text(r.stderr)
    assert "frobnicate" in err
    assert err.count("\n") == 1 and err.endswith("\n"), err


@pytest.mark.parametrize("cmd", ["run", "build", "disasm"])
def test_unknown_option(cmd, hello):
    r = run_flock([cmd, str(hello), "--bogus-option"])
    assert r.returncode == 64
    err = text(r.stderr)
    assert "--bogus-option" in err
    assert err.count("\n") == 1, err


@pytest.mark.parametrize("cmd", ["run", "build", "disasm"])
def test_no_file(cmd):
    r = run_flock([cmd])
    assert r.returncode == 64
    assert text(r.stderr).count("\n") == 1


@pytest.mark.parametrize("cmd", ["run", "build", "disasm"])
def test_missing_file(cmd, tmp_path):
    missing = str(tmp_path / "nope.fla")
    r = run_flock([cmd, missing])
    assert r.returncode == 66
    err = text(r.stderr)
    assert "nope.fla" in err
    assert err.count("\n") == 1, err


def test_missing_flb(tmp_path):
    r = run_flock(["run", str(tmp_path / "nope.flb")])
    assert r.returncode == 66


def test_unknown_extension(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("push 1\n")
    r = run_flock(["run", str(p)])
    assert r.returncode == 64
    assert "x.txt" in text(r.stderr)


def test_run_extra_argument(hello):
    # program arguments go after --
    r = run_flock(["run", str(hello), "extra"])
    assert r.returncode == 64


def test_garbage_flb(tmp_path):
    p = tmp_path / "junk.flb"
    p.write_bytes(b"this is not a flock module at all\x00\x01\x02")
    for cmd in ("run", "disasm"):
        r = run_flock([cmd, str(p)])
        assert r.returncode == 65, cmd
        err = text(r.stderr)
        assert "bad magic" in err, err
        assert err.count("\n") == 1, err


def test_empty_flb(tmp_path):
    p = tmp_path / "empty.flb"
    p.write_bytes(b"")
    r = run_flock(["run", str(p)])
    assert r.returncode == 65


def test_truncated_flb(tmp_path, hello):
    full = tmp_path / "full.flb"
    r = run_flock(["build", str(hello), "-o", str(full)])
    assert r.returncode == 0, text(r.stderr)
    data = full.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 8):
        half = tmp_path / ("cut%d.flb" % cut)
        half.write_bytes(data[:cut])
        r = run_flock(["run", str(half)])
        assert r.returncode == 65, (cut, text(r.stderr))
        assert r.stdout == b""
        assert text(r.stderr).count("\n") == 1, text(r.stderr)


def test_build_default_output(tmp_path, hello):
    r = run_flock(["build", "hello.fla"], cwd=tmp_path)
    assert r.returncode == 0, text(r.stderr)
    assert r.stdout == b"" and r.stderr == b""
    out = tmp_path / "hello.flb"
    assert out.exists()
    assert out.read_bytes()[:4] == b"FLKB"
    r = run_flock(["run", str(out)])
    assert r.returncode == 1  # argc
    assert r.stdout == b"hello, flock\n"


def test_build_default_output_subdir(tmp_path, hello):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "prog.fla").write_text(HELLO)
    r = run_flock(["build", "sub/prog.fla"], cwd=tmp_path)
    assert r.returncode == 0, text(r.stderr)
    assert (sub / "prog.flb").exists()
    assert not (tmp_path / "prog.flb").exists()


def test_build_error_writes_nothing(tmp_path):
    p = tmp_path / "bad.fla"
    p.write_text(".text\nfunc main 0 0\n        frob\nend\n")
    r = run_flock(["build", str(p)])
    assert r.returncode == 65
    assert "bad.fla:3: error:" in text(r.stderr)
    assert not (tmp_path / "bad.flb").exists()


def test_run_flb_with_args(tmp_path, hello):
    out = tmp_path / "h.flb"
    assert run_flock(["build", str(hello), "-o", str(out)]).returncode == 0
    r = run_flock(["run", str(out), "--", "a", "b"])
    assert r.returncode == 3  # argc: the file name and two arguments
    assert r.stdout == b"hello, flock\n"
    assert r.stderr == b""


def test_flb_runtime_error_names_source(tmp_path):
    # a module keeps its source name and line table: the runtime error of
    # the built module reads as the .fla's
    out = tmp_path / "div0.flb"
    assert run_flock(["build", DIV0, "-o", str(out)]).returncode == 0
    direct = run_flock(["run", DIV0])
    built = run_flock(["run", str(out)])
    assert direct.returncode == built.returncode == 70
    assert built.stdout == direct.stdout == b"1\n"
    assert text(built.stderr) == text(direct.stderr)
    assert text(built.stderr).startswith(DIV0 + ":13: runtime error: "
                                         "division by zero")


def test_disasm_of_fla(hello):
    # disasm also takes a program to compile first
    r = run_flock(["disasm", str(hello)])
    assert r.returncode == 0, text(r.stderr)
    assert "func main 0 0" in text(r.stdout)


@pytest.mark.parametrize("opt", [["--stack-words", "0"], ["--call-depth", "0"],
                                 ["--stack-words", "x"], ["--memory", "lots"],
                                 ["--memory", "0"], ["--stack-words"],
                                 ["--cpus", "0"], ["--cpus", "x"],
                                 ["--cpus", "1025"], ["--cpus"]],
                         ids=" ".join)
def test_bad_option_value(opt, hello):
    r = run_flock(["run", str(hello)] + opt)
    assert r.returncode == 64
    assert r.stdout == b""
    assert text(r.stderr).count("\n") == 1, text(r.stderr)


@pytest.mark.parametrize("cpus", ["1", "2", "8", "1024"])
def test_cpus(cpus, hello):
    r = run_flock(["run", str(hello), "--cpus", cpus])
    assert r.returncode == 1, text(r.stderr)
    assert r.stdout == b"hello, flock\n"


@pytest.mark.parametrize("size", ["64MiB", "1GiB", "100000000", "5MB"])
def test_memory_sizes(size, hello):
    r = run_flock(["run", str(hello), "--memory", size])
    assert r.returncode == 1, text(r.stderr)
    assert r.stdout == b"hello, flock\n"


def test_flock_vm_env(hello, tmp_path):
    # FLOCK_VM stands for --vm: a malformed one is a usage error
    r = run_flock(["run", str(hello)],
                  env={"FLOCK_VM": "x", "FLOCK_HOME": str(tmp_path)})
    assert r.returncode == 64
    assert r.stdout == b""
    assert text(r.stderr).count("\n") == 1, text(r.stderr)
    assert "VM_ID@HOST" in text(r.stderr)


def test_vm_option_without_credentials(hello, tmp_path):
    # not a user of that VM (tests/cluster has the VMs that answer)
    r = run_flock(["run", str(hello), "--vm", "myvm@127.0.0.1:1"],
                  env={"FLOCK_HOME": str(tmp_path)})
    assert r.returncode == 77
    assert r.stdout == b""
    assert "no credentials for VM myvm" in text(r.stderr)


def test_detach_needs_a_vm(hello):
    r = run_flock(["run", str(hello), "--detach"])
    assert r.returncode == 64
    assert "--detach needs a VM" in text(r.stderr)


def test_ncpu_is_all_cores(tmp_path):
    # the embedded VM is this machine, with all its cores (SPEC 1: --provide
    # omitted means all cores)
    import os
    p = tmp_path / "ncpu.fla"
    p.write_text(".text\nfunc main 0 0\n        ncpu\n        printi\n"
                 "        push 0\n        ret\nend\n")
    r = run_flock(["run", str(p)])
    assert r.returncode == 0, text(r.stderr)
    want = {os.cpu_count(), len(os.sched_getaffinity(0))}
    assert int(r.stdout) in want


def test_run_data_option(tmp_path, hello):
    # SPEC 1: the embedded VM keeps its storage under ~/.flock/local or
    # --data DIR; `flock run FILE --data DIR` is part of the command line
    d = tmp_path / "data"
    r = run_flock(["run", str(hello), "--data", str(d)])
    assert r.returncode == 1, text(r.stderr)
    assert r.stdout == b"hello, flock\n"


def test_disasm_source_comments(tmp_path):
    """disasm shows each source line the line table names as a comment,
    and the commented text still builds to the same module."""
    a, b, fla = tmp_path / "a.flb", tmp_path / "b.flb", tmp_path / "a.fla"
    assert run_flock(["build", "examples/fib.fl", "-o", str(a)]).returncode == 0
    r = run_flock(["disasm", str(a)])
    assert r.returncode == 0, text(r.stderr)
    out = text(r.stdout)
    assert "        .line 11\n        ; return fib(n - 1) + fib(n - 2);\n" in out
    fla.write_bytes(r.stdout)
    assert run_flock(["build", str(fla), "-o", str(b)]).returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_disasm_used_files(tmp_path):
    """Code from a `use`d file and from print's prelude is shown with
    `.line N "FILE"` and that file's lines as comments; the text builds
    back to the same module."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "util.fl").write_text("// util\nfn twice(x) {\n    return 2 * x;\n}\n")
    (tmp_path / "main.fl").write_text(
        'use "lib/util.fl";\nfn main() {\n    print("%d\\n", twice(21));\n'
        '    return 0;\n}\n')
    a, b, fla = tmp_path / "a.flb", tmp_path / "b.flb", tmp_path / "a.fla"
    main = str(tmp_path / "main.fl")
    r = run_flock(["run", main])
    assert (r.returncode, r.stdout) == (0, b"42\n"), text(r.stderr)
    assert run_flock(["build", main, "-o", str(a)]).returncode == 0
    r = run_flock(["disasm", str(a)])
    assert r.returncode == 0, text(r.stderr)
    out = text(r.stdout)
    util = str(lib / "util.fl")
    assert f'        .line 3 "{util}"\n        ; return 2 * x;\n' in out, out
    assert '.line 3\n        ; print("%d\\n", twice(21));\n' in out, out
    assert re.search(r'\.line \d+ "<prelude>"\n        ; \S', out), out
    fla.write_bytes(r.stdout)
    assert run_flock(["build", str(fla), "-o", str(b)]).returncode == 0
    assert a.read_bytes() == b.read_bytes()


BIG_DATA = """.data
big:    .zero 100000
.text
func main 0 0
        push 0
        ret
end
"""


def test_load_error_names_what_failed(tmp_path):
    # A module whose data does not fit the memory limit: the message says
    # which part of loading failed and why, not just "out of memory".
    p = tmp_path / "big.fla"
    p.write_text(BIG_DATA)
    r = run_flock(["run", str(p), "--memory", "16KiB"])
    assert r.returncode == 70
    err = text(r.stderr)
    assert err == ("flock: cannot load %s: global memory: globals of 100000 "
                   "bytes: out of memory (the module's data; the process's "
                   "memory limit, --memory, is 16 KiB)\n" % p)


def test_load_error_main_thread(tmp_path):
    p = tmp_path / "nodata.fla"
    p.write_text(".text\nfunc main 0 0\n push 0\n ret\nend\n")
    r = run_flock(["run", str(p), "--memory", "100"])
    assert r.returncode == 70
    assert text(r.stderr) == ("flock: cannot load %s: main thread: out of "
                              "memory (spawn; the process's memory limit, "
                              "--memory, is 100 bytes)\n" % p)
