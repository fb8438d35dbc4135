"""Helpers shared by the golden-program suite (test_programs.py) and the
command-line tests (test_cli.py).

FLOCK names the flock binary (default: build/flock under the repository
root). Every command runs with the repository root as its working
directory, so program paths in messages read tests/programs/....
"""
import os
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
