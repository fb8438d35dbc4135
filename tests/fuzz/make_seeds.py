#!/usr/bin/env python3
"""Write the fuzz seeds: small valid .flb modules in tests/fuzz/seeds/.

The encoder here is independent of the C one: it follows the format
documented at the top of src/vm/vm_module.c, and takes opcode numbers and
operand kinds from src/vm/vm_opcodes.def (numbered in order from 0), so a
seed that decodes, verifies and re-encodes to the same bytes (checked by
test_fuzz_seeds_are_valid in tests/unit/vm/test_module.c) cross-checks the
C encoder against the documentation.

Every seed has a canonical line table, as the verifier requires: it starts
at code offset 0 and each entry changes the line or the file (Module.func
writes entries only where they change; Module.encode checks the result), and
the file table lists each other source file once, in order of first use.

Run from anywhere: python3 tests/fuzz/make_seeds.py. The output is
deterministic; rerun it after an instruction is added or the format
changes, and commit the result.
"""
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fuzz" / "seeds"

OPERAND_SIZE = {"NONE": 0, "IMM": 8, "ADDR": 4, "SLOT": 4, "COUNT": 4,
                "LABEL": 4, "FUNC": 4}


def read_opcodes():
    text = (ROOT / "src" / "vm" / "vm_opcodes.def").read_text()
    ops = {}
    for i, m in enumerate(re.finditer(r'^OP\((\w+),\s*"[^"]*",\s*(\w+),',
                                      text, re.M)):
        ops[m.group(1)] = (i, m.group(2))
    return ops


def read_version():
    text = (ROOT / "src" / "vm" / "vm.h").read_text()
    return int(re.search(r"#define VM_MODULE_VERSION (\d+)", text).group(1))


OPS = read_opcodes()
VERSION = read_version()
RODATA, DATA = 0, 1


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v & 0xFFFFFFFF)


def string(s):
    b = s.encode()
    return u16(len(b)) + b


def assemble(items):
    """items: ("NAME", operand) or ("NAME",) or a str label. LABEL
    operands may name a label; returns (code, {label: offset})."""
    labels, off = {}, 0
    for it in items:
        if isinstance(it, str):
            labels[it] = off
        else:
            off += 1 + OPERAND_SIZE[OPS[it[0]][1]]
    code = b""
    for it in items:
        if isinstance(it, str):
            continue
        num, kind = OPS[it[0]]
        x = it[1] if len(it) > 1 else 0
        if isinstance(x, str):
            x = labels[x]
        code += bytes([num])
        if kind == "IMM":
            code += struct.pack("<q", x)
        elif kind != "NONE":
            code += u32(x)
    return code, labels


class Module:
    def __init__(self, source):
        self.source = source
        self.rodata = b""
        self.data = b""
        self.syms = []   # (name, segment, offset)
        self.funcs = []  # (name, nargs, nlocals, code)
        self.lines = []  # (code_off, line, file)
        self.files = []  # source files besides self.source: file 1, 2, ...

    def sym(self, name, seg, off):
        self.syms.append((name, seg, off))
        return len(self.syms) - 1

    def func(self, name, nargs, nlocals, items, line=None, file=None):
        """Append a function and its line-table entries. @line: an int
        numbers the instructions one source line each from there; a list
        gives each instruction its line (lines may go down as well as up);
        None puts the whole function on the line after the last one used.
        @file: the name of another source file the lines are in (None: the
        module's source). An entry is added only where line or file
        changes."""
        fi = 0
        if file is not None:
            if file not in self.files:
                self.files.append(file)
            fi = self.files.index(file) + 1
        code, _ = assemble(items)
        start = sum(len(f[3]) for f in self.funcs)
        insns = [it for it in items if not isinstance(it, str)]
        if line is None:
            line = self.lines[-1][1] + 1 if self.lines else 1
            per_insn = [line] * len(insns)
        elif isinstance(line, int):
            per_insn = list(range(line, line + len(insns)))
        else:
            per_insn = list(line)
        assert len(per_insn) == len(insns), name
        off = start
        for it, ln in zip(insns, per_insn):
            if not self.lines or self.lines[-1][1:] != (ln, fi):
                self.lines.append((off, ln, fi))
            off += 1 + OPERAND_SIZE[OPS[it[0]][1]]
        self.funcs.append((name, nargs, nlocals, code))
        return len(self.funcs) - 1

    def check_lines(self, code_len):
        """The verifier's line-table rules: lines are nonzero, offsets
        strictly increase inside the code, the table starts at offset 0
        when there is code, consecutive entries differ in line or file, and
        files are first named in table order."""
        if code_len:
            assert self.lines and self.lines[0][0] == 0, self.source
        first_use = []
        for i, (off, line, fi) in enumerate(self.lines):
            assert line != 0 and off < code_len, self.source
            if i:
                assert off > self.lines[i - 1][0], self.source
                assert (line, fi) != self.lines[i - 1][1:], self.source
            if fi and fi not in first_use:
                first_use.append(fi)
        assert first_use == list(range(1, len(self.files) + 1)), self.source

    def encode(self):
        out = b"FLKB" + u16(VERSION) + u16(0) + string(self.source)
        out += u32(len(self.rodata)) + self.rodata
        out += u32(len(self.data)) + self.data
        out += u32(len(self.syms))
        for name, seg, off in self.syms:
            out += string(name) + bytes([seg]) + u32(off)
        out += u32(len(self.funcs))
        off = 0
        for name, nargs, nlocals, code in self.funcs:
            out += string(name) + u32(nargs) + u32(nlocals) + u32(off)
            out += u32(len(code))
            off += len(code)
        code = b"".join(f[3] for f in self.funcs)
        self.check_lines(len(code))
        out += u32(len(code)) + code
        out += u32(len(self.files))
        for name in self.files:
            out += string(name)
        out += u32(len(self.lines))
        for off, line, fi in self.lines:
            out += u32(off) + u32(line) + u32(fi)
        return out


def minimal():
    m = Module("min.fla")
    m.func("main", 0, 0, [("PUSH", 0), ("RET",)])
    return m


def hello():
    m = Module("hello.fla")
    m.rodata = b"hello, flock\n"
    m.sym("msg", RODATA, 0)
    m.func("main", 0, 1, [
        ("PUSH", 1), ("PUSHA", 0), ("PUSH", 13), ("WRITE",), ("DROP",),
        ("PUSH", 0), ("RET",)], line=4)
    return m


def loop():
    m = Module("loop.fla")
    m.func("main", 0, 2, [
        ("PUSH", 10), ("SET", 0), ("PUSH", 0), ("SET", 1),
        "top",
        ("GET", 0), ("JZ", "done"),
        ("GET", 1), ("GET", 0), ("ADD",), ("SET", 1),
        ("GET", 0), ("PUSH", 1), ("SUB",), ("SET", 0),
        ("JMP", "top"),
        "done",
        ("GET", 1), ("PRINTI",), ("GET", 1), ("PUSH", 55), ("NE",),
        ("RET",)],
        # i = 10; s = 0 / while i: / s += i / i -= 1 / back to the test /
        # print s / return s != 55: the line goes back up at each jump.
        line=[2, 2, 3, 3,
              4, 4,
              5, 5, 5, 5,
              6, 6, 6, 6,
              4,
              8, 8, 9, 9, 9,
              9])
    return m


def calls():
    m = Module("calls.fla")
    fib = [
        ("GET", 0), ("PUSH", 2), ("LT",), ("JNZ", "small"),
        ("GET", 0), ("PUSH", 1), ("SUB",), ("CALL", 0),
        ("GET", 0), ("PUSH", 2), ("SUB",), ("CALL", 0),
        ("ADD",), ("RET",),
        "small",
        ("GET", 0), ("RET",)]
    # fib and add3 come from files the program uses, main from its own
    m.func("fib", 1, 0, fib, line=1, file="lib/fib.fl")
    m.func("add3", 3, 0, [("GET", 0), ("GET", 1), ("ADD",), ("GET", 2),
                          ("ADD",), ("RET",)], line=20, file="lib/add.fl")
    m.func("main", 0, 0, [
        ("PUSH", 15), ("CALL", 0), ("PUSH", 2), ("PUSH", 3), ("CALL", 1),
        ("PRINTI",), ("PUSH", 0), ("RET",)], line=30)
    return m


def memory():
    m = Module("memory.fla")
    m.rodata = b"abcdefgh\0"
    m.data = struct.pack("<qq", 7, -1)
    m.sym("str", RODATA, 0)
    m.sym("str_end", RODATA, 9)
    m.sym("counter", DATA, 0)
    m.sym("other", DATA, 8)
    m.sym("data_end", DATA, 16)
    m.func("main", 0, 2, [
        ("PUSH", 64), ("ALLOC",), ("SET", 0),
        ("PUSH", 100), ("GALLOC",), ("SET", 1),
        ("GET", 0), ("PUSH", 0x1122334455667788), ("ST64",),
        ("GET", 0), ("PUSH", 8), ("ADD",), ("PUSH", 0x41), ("ST8",),
        ("GET", 0), ("PUSH", 16), ("ADD",), ("PUSH", 0x4243), ("ST16",),
        ("GET", 0), ("PUSH", 20), ("ADD",), ("PUSH", -5), ("ST32",),
        ("GET", 1), ("GET", 0), ("PUSH", 24), ("COPY",),
        ("GET", 1), ("PUSH", 0x7A), ("PUSH", 8), ("FILL",),
        ("GET", 1), ("PUSHA", 0), ("PUSH", 9), ("COPY",),
        ("GET", 0), ("LD64",), ("GET", 0), ("LD8",), ("ADD",),
        ("GET", 0), ("LD16",), ("ADD",), ("GET", 0), ("LDS32",), ("ADD",),
        ("GET", 0), ("LDS8",), ("ADD",), ("GET", 0), ("LDS16",), ("ADD",),
        ("GET", 0), ("LD32",), ("ADD",), ("DROP",),
        ("PUSHA", 2), ("PUSHA", 2), ("LD64",), ("PUSH", 1), ("ADD",),
        ("ST64",),
        ("GET", 0), ("FREE",), ("GET", 1), ("FREE",),
        ("PUSHA", 3), ("LD64",), ("PUSH", 255), ("AND",), ("PUSH", 255),
        ("XOR",), ("RET",)], line=10)
    return m


def stack_ops():
    m = Module("stack.fla")
    items = [("PUSH", 1), ("PUSH", 2), ("PUSH", 3), ("ROT",), ("SWAP",),
             ("OVER",), ("PICK", 3), ("DUP",), ("DROP",)]
    binary = ["ADD", "SUB", "MUL", "AND", "OR", "XOR", "SHL", "SHR", "SAR",
              "EQ", "NE", "LT", "LE", "GT", "GE", "LTU", "LEU", "GTU",
              "GEU"]
    for op in binary:
        items += [("DUP",), ("PUSH", 3), (op,), ("ADD",)]
    for op in ["DIV", "MOD", "DIVU", "MODU"]:
        items += [("DUP",), ("PUSH", 7), (op,), ("ADD",)]
    items += [("NEG",), ("NOT",), ("DROP",), ("DROP",), ("DROP",),
              ("DROP",), ("PUSH", -1), ("PUSH", 0), ("JZ", "skip"),
              ("PUSH", 1), ("TRAP",), "skip", ("PUSH", 0), ("RET",)]
    m.func("main", 0, 0, items, line=1)
    return m


def system():
    m = Module("system.fla")
    m.data = bytes(64)
    m.sym("buf", DATA, 0)
    m.sym("word", DATA, 56)
    m.func("worker", 2, 1, [
        ("GET", 0), ("GET", 1), ("XADD",), ("SET", 2), ("FENCE",),
        ("YIELD",), ("GET", 2), ("RET",)], line=1)
    m.func("main", 0, 1, [
        ("ARGC",), ("DROP",), ("PUSH", 0), ("PUSHA", 0), ("PUSH", 56),
        ("ARGV",), ("DROP",), ("CLOCK",), ("DROP",), ("NODE",), ("DROP",),
        ("NCPU",), ("DROP",), ("SELF",), ("DROP",),
        ("PUSHA", 1), ("PUSH", 0), ("PUSH", 5), ("CAS",), ("DROP",),
        ("PUSHA", 1), ("PUSH", 9), ("XCHG",), ("DROP",),
        ("PUSHA", 1), ("PUSH", 1), ("SPAWN", 0), ("JOIN",), ("SET", 0),
        ("PUSH", 0), ("PUSHA", 0), ("PUSH", 8), ("READ",), ("DROP",),
        ("PUSH", 2), ("PUSHA", 0), ("PUSH", 0), ("WRITE",), ("DROP",),
        ("GET", 0), ("PUSH", 0), ("EQ",), ("JNZ", "out"),
        ("PUSH", 3), ("EXIT",),
        "out",
        ("PUSH", 0), ("RET",)], line=20)
    return m


SEEDS = {
    "min.flb": minimal,
    "hello.flb": hello,
    "loop.flb": loop,
    "calls.flb": calls,
    "memory.flb": memory,
    "stack.flb": stack_ops,
    "system.flb": system,
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in SEEDS.items():
        (OUT / name).write_bytes(make().encode())
        print(f"wrote {OUT.relative_to(ROOT) / name}")


if __name__ == "__main__":
    main()
