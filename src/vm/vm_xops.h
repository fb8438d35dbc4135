/* The handlers of linked code (private to vm_link.c and vm_interp.c):
 * every instruction of vm_opcodes.def, then the ones only the linker puts
 * in: jumps whose target is not after them (they spend preemption budget;
 * forward jumps never need to) and superinstructions (see vm_link.c). One
 * list, VM_XOPS, makes the enum here and the interpreter's handler table. */
#ifndef FLOCK_VM_VM_XOPS_H
#define FLOCK_VM_VM_XOPS_H

#include "vm/vm.h"

/* Binary operators that have fused forms: F(X, name, result from a (below)
 * and b (top)). */
#define VM_FUSED_BINOPS(F, X)                                                 \
	F(X, ADD, a + b)                                                      \
	F(X, SUB, a - b)                                                      \
	F(X, MUL, a * b)                                                      \
	F(X, AND, a & b)                                                      \
	F(X, OR, a | b)                                                       \
	F(X, XOR, a ^ b)                                                      \
	F(X, SHL, a << (b & 63))                                              \
	F(X, SHR, a >> (b & 63))                                              \
	F(X, SAR, (vm_word)((int64_t)a >> (b & 63)))                          \
	VM_FUSED_CMPS(F, X)
#define VM_FUSED_CMPS(F, X)                                                   \
	F(X, EQ, a == b)                                                      \
	F(X, NE, a != b)                                                      \
	F(X, LT, (int64_t)a < (int64_t)b)                                     \
	F(X, LE, (int64_t)a <= (int64_t)b)                                    \
	F(X, GT, (int64_t)a > (int64_t)b)                                     \
	F(X, GE, (int64_t)a >= (int64_t)b)                                    \
	F(X, LTU, a < b)                                                      \
	F(X, LEU, a <= b)                                                     \
	F(X, GTU, a > b)                                                      \
	F(X, GEU, a >= b)

/* The forms of each (vm_link.c lists the sequences they stand for). */
#define VM_XOP_BINOP_FORMS(X, name, expr)                                     \
	X(name##_S) X(name##_K) X(name##_SET) X(name##_SSS)
#define VM_XOP_CMP_FORMS(X, name, expr)                                       \
	X(name##_JZ) X(name##_S_JZ) X(name##_K_JZ) X(name##_SS_JZ)             \
	X(name##_SK_JZ) X(name##_JNZB) X(name##_S_JNZB) X(name##_K_JNZB)       \
	X(name##_SS_JNZB) X(name##_SK_JNZB)

#define VM_XOPS(X)                                                            \
	X(JMPB) X(JZB) X(JNZB)                                                 \
	VM_FUSED_BINOPS(VM_XOP_BINOP_FORMS, X)                                 \
	VM_FUSED_CMPS(VM_XOP_CMP_FORMS, X)                                     \
	X(DIV_K) X(MOD_K) X(INC_S) X(IDX8_S) X(LDIDX8_S) X(IDX8) X(LDIDX8)     \
	X(GET2) X(FORLOOP) X(GET_E) X(PUSH_E) X(GET2_E) X(SET_K) X(LD8_S)

enum {
	VM_XOP__BASE = VM_OP__COUNT - 1,
#define X(name) VM_OP_##name,
	VM_XOPS(X)
#undef X
	VM_XOP__COUNT
};

#endif
