#!/usr/bin/env python3
"""Write fused.fla beside this script: a golden program with every
superinstruction the linker makes (src/vm/vm_link.c, "Superinstructions")
and the results Python computes for it (64-bit wrap-around, C's truncating
division). Rerun after adding a fused form; the test suite runs fused.fla
with and without --debug-no-fuse."""
import os

M = (1 << 64) - 1
def s64(x):
    x &= M
    return x - (1 << 64) if x >> 63 else x
def u(x): return x & M
ops = {
 "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
 "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
 "shl": lambda a, b: u(a) << (b & 63), "shr": lambda a, b: u(a) >> (b & 63),
 "sar": lambda a, b: s64(a) >> (b & 63),
}
cmps = {
 "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
 "lt": lambda a, b: s64(a) < s64(b), "le": lambda a, b: s64(a) <= s64(b),
 "gt": lambda a, b: s64(a) > s64(b), "ge": lambda a, b: s64(a) >= s64(b),
 "ltu": lambda a, b: u(a) < u(b), "leu": lambda a, b: u(a) <= u(b),
 "gtu": lambda a, b: u(a) > u(b), "geu": lambda a, b: u(a) >= u(b),
}
pairs = [(7, 3), (-5, 2), (3, 70), (-9223372036854775808, -1), (5, 5)]
exp, body = [], []
def show():
    body.append("        call println\n        drop")
def setab(a, b):
    body.append(f"        push {a}\n        set 0\n        push {b}\n        set 1")
FORMS = ("ss", "sk", "s", "k", "stack")


def compare(form, name, b, jump, target):
    """Slots 0 (a) and 1 (b) compared by CMP @name and a @jump to @target,
    in one of the linker's operand forms: both slots, slot and immediate,
    a computed value and a slot, a computed value and an immediate, and
    both on the stack (entered in the middle, so the CMP's cell runs)."""
    pre = {"ss": "get 0\nget 1", "sk": f"get 0\npush {b}",
           "s": "get 0\npush 0\nadd\nget 1", "k": f"get 0\npush 0\nadd\npush {b}"}
    if form in pre:
        code = f"{pre[form]}\n{name}\n{jump} {target}"
        return "\n".join("        " + l for l in code.split("\n"))
    mid = L()
    return (f"        get 0\n        get 1\n        jmp {mid}\n{mid}:\n"
            f"        {name}\n        {jump} {target}")


lbl = [0]
def L():
    lbl[0] += 1
    return f"l{lbl[0]}"
for name, f in ops.items():
    for a, b in pairs:
        setab(a, b)
        body.append(f"        get 0\n        get 1\n        {name}")   # OP_S
        show(); exp.append(s64(f(a, b)))
        body.append(f"        get 0\n        push {b}\n        {name}")  # OP_K
        show(); exp.append(s64(f(a, b)))
        body.append(f"        get 0\n        get 1\n        {name}\n        set 2\n        get 2")  # OP_SSS
        show(); exp.append(s64(f(a, b)))
        body.append(f"        get 0\n        get 1\n        {name}\n        set 0\n        get 0")  # OP_SSS into a
        show(); exp.append(s64(f(a, b)))
for name, f in cmps.items():
    for a, b in pairs:
        setab(a, b)
        body.append(f"        get 0\n        get 1\n        {name}")  # CMP_S (value)
        show(); exp.append(int(f(a, b)))
        for form in FORMS:
            no, end = L(), L()
            body.append(compare(form, name, b, "jz", no))
            body.append(f"        push 1\n        jmp {end}\n{no}:\n        push 0\n{end}:")
            show(); exp.append(int(f(a, b)))
for a in (100, -100, 7):
    for k in (7, -7, 3, 1):
        setab(a, k)
        q = abs(a) // abs(k) * (1 if (a < 0) == (k < 0) else -1)
        body.append(f"        get 0\n        push {k}\n        div"); show(); exp.append(q)
        body.append(f"        get 0\n        push {k}\n        mod"); show(); exp.append(a - q * k)
# INC_S, and jumping into its middle (the push)
setab(40, 0)
body.append("        get 0\n        push 2\n        add\n        set 0\n        get 0"); show(); exp.append(42)
body.append("        get 0\n        push -50\n        add\n        set 0\n        get 0"); show(); exp.append(-8)
mid = L()
body.append(f"        get 0\n        jmp {mid}\n        push 99\n{mid}:\n        push 10\n        add\n        set 0\n        get 0"); show(); exp.append(2)
# IDX8_S, LDIDX8_S on a 4-page array (TLB misses on first touch of each page)
body.append("        push 16384\n        alloc\n        set 2")
for i, v in ((0, 11), (1, -12), (511, 13), (512, 14), (2047, 15)):
    body.append(f"        push {i}\n        set 1\n        get 2\n        get 1\n        push 3\n        shl\n        add\n        push {v}\n        st64")
for i, v in ((0, 11), (1, -12), (511, 13), (512, 14), (2047, 15), (3, 0)):
    body.append(f"        push {i}\n        set 1\n        get 2\n        get 1\n        push 3\n        shl\n        add\n        ld64"); show(); exp.append(v)
# IDX8 / LDIDX8: a computed index (i + 0), then push 3; shl; add [; ld64]
for i, v in ((1, -12), (512, 14)):
    body.append(f"        get 2\n        push {i}\n        push 0\n        add\n        push 3\n        shl\n        add\n        ld64"); show(); exp.append(v)
body.append("        get 2\n        push 7\n        push 0\n        add\n        push 3\n        shl\n        add\n        push 77\n        st64")
body.append("        get 2\n        push 56\n        add\n        ld64"); show(); exp.append(77)
# GET2: get a; get b followed by something that does not fuse with get b
setab(5, 6)
body.append("        get 0\n        get 1\n        swap\n        sub"); show(); exp.append(1)
body.append("        get 1\n        get 0\n        get 1\n        rot\n        drop\n        mul"); show(); exp.append(30)
# SET_K, and LD8_S (a byte of the array: little-endian words 11, -12, ...)
body.append("        push 5\n        set 1\n        get 1"); show(); exp.append(5)
body.append("        push 0\n        set 1\n        get 2\n        get 1\n        add\n        ld8"); show(); exp.append(11)
body.append("        push 8\n        set 1\n        get 2\n        get 1\n        add\n        ld8"); show(); exp.append(244)
# OP_SET: a binary operator straight into a slot
for name, f in ops.items():
    a, b = 12, 3
    setab(a, b)
    body.append(f"        push {a}\n        get 1\n        {name}\n        set 0\n        get 0"); show(); exp.append(s64(f(a, b)))
# CMP + backward jnz in its three forms: count how often the loop runs
for name, f in cmps.items():
    for form in FORMS:
        # slot 0 counts up from 0; loop while CMP(slot0, 3) holds
        top, test = L(), L()
        body.append(f"        push 0\n        set 0\n        push 3\n        set 1\n        jmp {test}\n{top}:\n        get 0\n        push 1\n        add\n        set 0\n{test}:")
        body.append(compare(form, name, 3, "jnz", top))
        body.append("        get 0")
        show()
        c = 0
        while f(c, 3) and c < 10:
            c += 1
        exp.append(c)
# FORLOOP, with the counter in the last slot (slot 2) and the stack empty,
# then a spill of the cached top: the counter must keep its final value
body.append("        push 0\n        set 2\n        push 6\n        set 1\n        push 0\n        set 0")
top, test = L(), L()
body.append(f"        jmp {test}\n{top}:\n        get 0\n        get 2\n        add\n        set 0\n        get 2\n        push 1\n        add\n        set 2\n{test}:\n        get 2\n        get 1\n        lt\n        jnz {top}")
# (self spills the cached top of stack into the last slot's place: it
# must hold the counter's new value)
body.append("        self\n        drop\n        get 2"); show(); exp.append(6)
body.append("        get 0"); show(); exp.append(15)
# INC_S, SET_K and OP_SSS on the last slot with an empty stack, then a spill
body.append("        get 2\n        push 5\n        add\n        set 2\n        self\n        drop\n        get 2"); show(); exp.append(11)
body.append("        push 7\n        set 2\n        self\n        drop\n        get 2"); show(); exp.append(7)
body.append("        get 0\n        get 1\n        add\n        set 2\n        self\n        drop\n        get 2"); show(); exp.append(21)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fused.fla"), "w") as o:
    o.write("; Every superinstruction the linker makes (docs/performance.md): binary\n")
    o.write("; operators with a slot or immediate operand, compare-and-branch from\n")
    o.write("; the stack, a slot or an immediate (taken and not taken, and entered\n")
    o.write("; in the middle), division by a constant, slot increment, and p[i]\n")
    o.write("; address and load. Generated once by a script; values checked by hand\n")
    o.write("; arithmetic in Python (64-bit wrap, C division).\n")
    for e in exp:
        o.write(f"; expect: {e}\n")
    o.write(".text\nfunc main 0 3\n")
    o.write("\n".join(body) + "\n")
    o.write("        push 0\n        ret\nend\n")
    o.write("""
; ---- helper: println ( n -- 0 ) prints n in decimal and a newline
func println 1 0
        get 0
        printi
        push 1
        push nl
        push 1
        write
        drop
        push 0
        ret
end
.rodata
nl:     .bytes "\\n"
""")
