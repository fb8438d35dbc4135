"""Random programs run with and without superinstructions must agree.

The linker fuses common instruction sequences (src/vm/vm_link.c,
"Superinstructions"); tests/programs/fused/ checks each form on chosen
values. Here a seeded generator writes many small .fla programs made of the
shapes those sequences come from -- slot and immediate operands, stores
into slots (the last slot too, with an empty stack, followed by handlers
that spill the cached top of stack there), compare-and-branch
both ways, for-loop steps, p[i] loads and stores, byte loads, division by
constants -- mixed at random, and each must print the same and exit the
same with `flock run` and `flock run --debug-no-fuse`. The seeds are fixed,
so a failure names a program that can be rebuilt (FUSE_SEED, FUSE_COUNT
override them)."""
import os
import random

import pytest

from flockrun import run_flock

SEED = int(os.environ.get("FUSE_SEED", "1"))
COUNT = int(os.environ.get("FUSE_COUNT", "150"))
NSLOTS = 6  # slot 0 holds a 64-word array; 1..5 are values
BINOPS = ["add", "sub", "mul", "and", "or", "xor", "shl", "shr", "sar"]
CMPS = ["eq", "ne", "lt", "le", "gt", "ge", "ltu", "leu", "gtu", "geu"]
CONSTS = [0, 1, 2, 3, 7, -1, -5, 63, 64, 1000, -9223372036854775808,
          9223372036854775807]


class Gen:
    def __init__(self, rng):
        self.r = rng
        self.lines = []
        self.nlabel = 0

    def label(self):
        self.nlabel += 1
        return "L%d" % self.nlabel

    def emit(self, *insns):
        self.lines += ["        " + i for i in insns]

    def slot(self):
        return self.r.randint(1, NSLOTS - 1)

    def operand(self):
        """Push one value: a slot or a constant."""
        if self.r.random() < 0.6:
            self.emit("get %d" % self.slot())
        else:
            self.emit("push %d" % self.r.choice(CONSTS))

    def expr(self, depth=0):
        """Push one value computed from slots and constants."""
        k = self.r.random()
        if depth > 2 or k < 0.3:
            self.operand()
        elif k < 0.75:
            self.expr(depth + 1)
            self.operand() if self.r.random() < 0.7 else self.expr(depth + 1)
            self.emit(self.r.choice(BINOPS + CMPS))
        elif k < 0.85:
            self.expr(depth + 1)
            self.emit("push %d" % self.r.choice([3, 7, -7, 1000, 2]),
                      self.r.choice(["div", "mod"]))
        elif k < 0.95:  # p[i & 63]
            self.emit("get 0")
            self.expr(depth + 1)
            self.emit("push 63", "and", "push 3", "shl", "add", "ld64")
        else:  # a byte of the array
            self.emit("get 0")
            self.expr(depth + 1)
            self.emit("push 511", "and", "add", "ld8")

    def cond(self):
        """Push a comparison in one of the fused operand forms."""
        form = self.r.randrange(4)
        if form == 0:
            self.emit("get %d" % self.slot(), "get %d" % self.slot())
        elif form == 1:
            self.emit("get %d" % self.slot(), "push %d" % self.r.choice(CONSTS))
        else:
            self.expr(1)
            self.operand()
        self.emit(self.r.choice(CMPS))

    def stmt(self, depth=0):
        k = self.r.random()
        if k < 0.35:
            self.expr()
            self.emit("set %d" % self.slot())
        elif k < 0.45:
            a = self.slot()
            self.emit("get %d" % a, "push %d" % self.r.choice(CONSTS), "add",
                      "set %d" % a)
        elif k < 0.55:  # p[i & 63] = e
            self.emit("get 0")
            self.expr(1)
            self.emit("push 63", "and", "push 3", "shl", "add")
            self.expr(1)
            self.emit("st64")
        elif k < 0.7 and depth < 2:  # if
            skip = self.label()
            self.cond()
            self.emit("jz " + skip)
            self.stmts(depth + 1, 3)
            self.lines.append(skip + ":")
        elif k < 0.85 and depth < 2:  # for i in 0..n, the compiler's shape
            i, top, test = self.slot(), self.label(), self.label()
            self.emit("push %d" % self.r.randint(0, 6), "set %d" % i,
                      "jmp " + test)
            self.lines.append(top + ":")
            self.stmts(depth + 1, 2, avoid=i)
            self.emit("get %d" % i, "push 1", "add", "set %d" % i)
            self.lines.append(test + ":")
            self.emit("get %d" % i, "push 9", "lt", "jnz " + top)
        elif depth < 2:  # a bounded while with the test at the bottom
            c, top, test = self.slot(), self.label(), self.label()
            self.emit("push 0", "set %d" % c, "jmp " + test)
            self.lines.append(top + ":")
            self.stmts(depth + 1, 2, avoid=c)
            self.emit("get %d" % c, "push 1", "add", "set %d" % c)
            self.lines.append(test + ":")
            self.emit("get %d" % c, "push %d" % self.r.randint(1, 5),
                      self.r.choice(["lt", "le", "ltu"]), "jnz " + top)
        elif k < 0.93:
            self.emit("get %d" % self.slot(), "call show", "drop")
        else:
            # handlers that spill the cached top on an empty stack, where
            # it must equal the last slot (the mirror: slot writes by fused
            # handlers keep it so)
            self.emit(self.r.choice(["call zero", "self", "ncpu", "argc"]),
                      "drop")

    def stmts(self, depth, n, avoid=None):
        for _ in range(self.r.randint(1, n)):
            before = len(self.lines)
            self.stmt(depth)
            # a loop body must not write its counter: keep loops finite
            if avoid is not None and any(
                    l.strip() == "set %d" % avoid for l in self.lines[before:]):
                del self.lines[before:]
                self.emit("get %d" % self.slot(), "call show", "drop")

    def program(self):
        self.emit("push 512", "alloc", "set 0")
        for s in range(1, NSLOTS):
            self.emit("push %d" % self.r.choice(CONSTS), "set %d" % s)
        self.stmts(0, 12)
        for s in range(1, NSLOTS):
            self.emit("get %d" % s, "call show", "drop")
        for w in (0, 9, 63):
            self.emit("get 0", "push %d" % (8 * w), "add", "ld64", "call show",
                      "drop")
        body = "\n".join(self.lines)
        return (".text\nfunc main 0 %d\n%s\n        push 0\n        ret\nend\n"
                "func show 1 0\n        get 0\n        printi\n        push 1\n"
                "        push nl\n        push 1\n        write\n        drop\n"
                "        push 0\n        ret\nend\nfunc zero 0 0\n        push 0\n        ret\nend\n"
                ".rodata\nnl:     .bytes \"\\n\"\n"
                % (NSLOTS, body))


@pytest.mark.parametrize("n", range(COUNT))
def test_fused_equals_unfused(n, tmp_path):
    src = Gen(random.Random(SEED * 100003 + n)).program()
    path = tmp_path / ("rand%d.fla" % n)
    path.write_text(src)
    fused = run_flock(["run", str(path)])
    plain = run_flock(["run", str(path), "--debug-no-fuse"])
    assert fused.returncode in (0, 70), fused.stderr.decode()
    assert (fused.returncode, fused.stdout, fused.stderr) == \
        (plain.returncode, plain.stdout, plain.stderr), src
