/* Linking: a verified module into threaded code, with superinstructions.
 *
 * Each instruction becomes a handler cell followed by at most one operand
 * cell: immediates and data addresses become values, jump targets become
 * cell pointers, functions become struct vm_xfunc pointers, and a parallel
 * array maps every cell back to its module offset (for error lines and
 * thread serialisation). Jumps whose target is not after them get handlers
 * that spend preemption budget. Then common sequences get superinstructions
 * (below). The handlers are vm_interp.c's; their numbering is vm_xops.h's.
 * Runs once per process, before any thread; fails only on memory. */
#include "vm/vm_int.h"
#include "vm/vm_xops.h"

#include <stdlib.h>
#include <string.h>

/* ---- Superinstructions ----
 *
 * The linker replaces the handler of an instruction that starts a common
 * sequence with one handler doing the whole sequence. The sequence's other
 * cells stay as they were, so a jump into its middle, a thread resumed at
 * any instruction, and the pc-to-offset map all still work; the fused
 * handler reads the operands from their cells and skips to the cell after
 * the sequence. Only sequences that cannot fail or park are fused (no
 * division by a slot), so no state is ever observed in the middle of one,
 * except a load's fault, which names the load; a fused backward jump
 * spends budget like jnz and may yield at its target, after the sequence.
 * The sequences (OP is a binary operator of VM_FUSED_BINOPS in vm_xops.h,
 * CMP a comparison; jz to a forward L, jnz to a backward one, which is a
 * loop's test at the bottom):
 *   get b; OP                        -> OP_S      (tos = tos OP b)
 *   push k; OP                       -> OP_K
 *   OP; set a                        -> OP_SET
 *   get a; get b; OP; set c          -> OP_SSS    (c = a OP b)
 *   CMP; jz L   /   CMP; jnz L       -> CMP_JZ    /  CMP_JNZB
 *   get b; CMP; jz|jnz L             -> CMP_S_JZ  /  CMP_S_JNZB
 *   push k; CMP; jz|jnz L            -> CMP_K_JZ  /  CMP_K_JNZB
 *   get a; get b; CMP; jz|jnz L      -> CMP_SS_JZ /  CMP_SS_JNZB
 *   get a; push k; CMP; jz|jnz L     -> CMP_SK_JZ /  CMP_SK_JNZB
 *   get i; push 1; add; set i; get i; get h; lt; jnz L
 *                                    -> FORLOOP   (a for loop's step)
 *   get a; push k; add; set a        -> INC_S     (a += k)
 *   push k; set a                    -> SET_K
 *   push k; div|mod                  -> DIV_K, MOD_K (k not 0 or -1)
 *   get i; push 3; shl; add [; ld64] -> IDX8_S, LDIDX8_S (p[i])
 *   push 3; shl; add [; ld64]        -> IDX8, LDIDX8 (p[computed index])
 *   get b; add; ld8                  -> LD8_S     (a byte at p + i)
 *   get a; get b                     -> GET2      (unless get b starts one)
 * and, on an empty stack (the verifier's depth 0, known here), GET, PUSH
 * and GET2 that need not spill the cached top of stack (see vm_interp.c):
 * GET_E, PUSH_E, GET2_E. */

/* A handler cell: the handler's address, or its number when the
 * interpreter dispatches with a switch (no table). */
static void set_handler(union vm_cell *c, const void *const *table, int op)
{
	if (table != NULL)
		c->h = table[op];
	else
		c->op = (uintptr_t)op;
}

/* The instructions of a function from one offset on, decoded. */
#define FUSE_MAX 8 /* the longest sequence */
struct fuse_win {
	struct vm_insn in[FUSE_MAX];
	bool back[FUSE_MAX]; /* a jump whose target is not after it */
	int n;
};

/* OP's fused form: which = 0 operand in a slot, 1 immediate, 2 OP_SET,
 * 3 OP_SSS. */
static int fused_binop(enum vm_op op, int which)
{
	switch (op) {
#define CASE_FORM(X, name, expr)                                              \
	case VM_OP_##name:                                                    \
		return VM_OP_##name##_S + which;
		VM_FUSED_BINOPS(CASE_FORM, _)
#undef CASE_FORM
	default:
		return -1;
	}
}

/* CMP + forward jz (back false) or backward jnz (back true): which = 0
 * on the stack, 1 slot, 2 immediate, 3 both operands slots, 4 slot and
 * immediate. */
static int fused_cmp_jump(enum vm_op op, bool back, int which)
{
	switch (op) {
#define CASE_FORM(X, name, expr)                                              \
	case VM_OP_##name:                                                    \
		return (back ? VM_OP_##name##_JNZB : VM_OP_##name##_JZ) + which;
		VM_FUSED_CMPS(CASE_FORM, _)
#undef CASE_FORM
	default:
		return -1;
	}
}

/* Does instruction @k of @w jump the way a fused CMP may: a forward jz or
 * a backward jnz? *@back says which. */
static bool cmp_jump(const struct fuse_win *w, int k, bool *back)
{
	if (k >= w->n)
		return false;
	*back = w->back[k];
	return (w->in[k].op == VM_OP_JZ && !w->back[k]) ||
	       (w->in[k].op == VM_OP_JNZ && w->back[k]);
}

/* The handler to put on the first instruction of @w, or -1. */
static int fuse(const struct fuse_win *w)
{
	const struct vm_insn *in = w->in;
	int n = w->n;
	bool get = in[0].op == VM_OP_GET, push = in[0].op == VM_OP_PUSH;
	bool idx = push && in[0].imm == 3 && n >= 3 && in[1].op == VM_OP_SHL &&
		   in[2].op == VM_OP_ADD;
	bool back;

	if (n >= 8 && get && in[1].op == VM_OP_PUSH && in[1].imm == 1 &&
	    in[2].op == VM_OP_ADD && in[3].op == VM_OP_SET &&
	    in[3].imm == in[0].imm && in[4].op == VM_OP_GET &&
	    in[4].imm == in[0].imm && in[5].op == VM_OP_GET &&
	    in[6].op == VM_OP_LT && in[7].op == VM_OP_JNZ && w->back[7])
		return VM_OP_FORLOOP;
	if (n >= 4 && get && in[1].op == VM_OP_GET && in[3].op == VM_OP_SET &&
	    fused_binop(in[2].op, 3) >= 0)
		return fused_binop(in[2].op, 3);
	if (n >= 4 && get && (in[1].op == VM_OP_GET || in[1].op == VM_OP_PUSH) &&
	    cmp_jump(w, 3, &back) && fused_cmp_jump(in[2].op, back, 0) >= 0)
		return fused_cmp_jump(in[2].op, back,
				      in[1].op == VM_OP_GET ? 3 : 4);
	if (n >= 3 && get && in[1].op == VM_OP_ADD && in[2].op == VM_OP_LD8)
		return VM_OP_LD8_S;
	if (n >= 2 && push && in[1].op == VM_OP_SET)
		return VM_OP_SET_K;

	if (n >= 5 && get && in[1].op == VM_OP_PUSH && in[1].imm == 3 &&
	    in[2].op == VM_OP_SHL && in[3].op == VM_OP_ADD &&
	    in[4].op == VM_OP_LD64)
		return VM_OP_LDIDX8_S;
	if (n >= 4 && get && in[1].op == VM_OP_PUSH && in[1].imm == 3 &&
	    in[2].op == VM_OP_SHL && in[3].op == VM_OP_ADD)
		return VM_OP_IDX8_S;
	if (n >= 4 && get && in[1].op == VM_OP_PUSH && in[2].op == VM_OP_ADD &&
	    in[3].op == VM_OP_SET && in[3].imm == in[0].imm)
		return VM_OP_INC_S;
	if ((get || push) && cmp_jump(w, 2, &back) &&
	    fused_cmp_jump(in[1].op, back, 0) >= 0)
		return fused_cmp_jump(in[1].op, back, get ? 1 : 2);
	if (n >= 2 && (get || push) && fused_binop(in[1].op, 0) >= 0)
		return fused_binop(in[1].op, get ? 0 : 1);
	if (n >= 2 && push && in[0].imm != 0 && in[0].imm != -1 &&
	    (in[1].op == VM_OP_DIV || in[1].op == VM_OP_MOD))
		return in[1].op == VM_OP_DIV ? VM_OP_DIV_K : VM_OP_MOD_K;
	if (idx)
		return n >= 4 && in[3].op == VM_OP_LD64 ? VM_OP_LDIDX8
							: VM_OP_IDX8;
	if (cmp_jump(w, 1, &back) && fused_cmp_jump(in[0].op, back, 0) >= 0)
		return fused_cmp_jump(in[0].op, back, 0);
	if (n >= 2 && in[1].op == VM_OP_SET && fused_binop(in[0].op, 2) >= 0)
		return fused_binop(in[0].op, 2);
	if (n >= 2 && get && in[1].op == VM_OP_GET) {
		struct fuse_win rest; /* the window from `get b` on */
		rest.n = n - 1;
		for (int i = 0; i < rest.n; i++) {
			rest.in[i] = in[i + 1];
			rest.back[i] = w->back[i + 1];
		}
		if (fuse(&rest) < 0)
			return VM_OP_GET2;
	}
	return -1;
}

/* Put superinstructions on function @f's linked code. */
static void fuse_function(const struct vm_module *m,
			  const struct vm_function *f, union vm_cell *cells,
			  const uint32_t *cell_at, const void *const *table)
{
	uint32_t end = f->code_off + f->code_len;
	struct fuse_win w;

	for (uint32_t off = f->code_off; off < end; off += w.in[0].size) {
		uint32_t o = off;
		for (w.n = 0; w.n < FUSE_MAX && o < end; w.n++) {
			vm_insn_decode(m->code, m->code_len, o, &w.in[w.n], NULL);
			w.back[w.n] =
				vm_opinfo[w.in[w.n].op].operand == VM_OPND_LABEL &&
				(uint32_t)w.in[w.n].imm <= o - f->code_off;
			o += w.in[w.n].size;
		}
		int op = fuse(&w);
		/* On an empty stack, a push need not spill tos (it mirrors
		 * the word it would be written to). */
		if (m->depth != NULL && m->depth[off] == 0) {
			if (op < 0 && w.in[0].op == VM_OP_GET)
				op = VM_OP_GET_E;
			else if (op < 0 && w.in[0].op == VM_OP_PUSH)
				op = VM_OP_PUSH_E;
			else if (op == VM_OP_GET2)
				op = VM_OP_GET2_E;
		}
		if (op < 0)
			continue;
		set_handler(&cells[cell_at[off]], table, op);
	}
}

/* ---- Linking ---- */

int vm__link(struct vm_proc *p)
{
	const struct vm_module *m = p->m;
	struct vm_xcode *x = &p->x;
	const void *const *table = NULL;
	uint32_t *cell_at = NULL; /* module offset -> cell index */
	size_t n = 0;
	struct vm_insn in;

	table = vm__interp_handlers();
	for (uint32_t off = 0; off < m->code_len; off += in.size) {
		vm_insn_decode(m->code, m->code_len, off, &in, NULL);
		n += in.size > 1 ? 2 : 1;
	}
	x->ncells = n;
	x->cells = calloc(n ? n : 1, sizeof *x->cells);
	x->cell_off = calloc(n ? n : 1, sizeof *x->cell_off);
	x->funcs = calloc(m->nfuncs ? m->nfuncs : 1, sizeof *x->funcs);
	cell_at = calloc(m->code_len ? m->code_len : 1, sizeof *cell_at);
	if (!x->cells || !x->cell_off || !x->funcs || !cell_at)
		goto nomem;

	n = 0;
	for (uint32_t off = 0; off < m->code_len; off += in.size) {
		vm_insn_decode(m->code, m->code_len, off, &in, NULL);
		cell_at[off] = (uint32_t)n;
		x->cell_off[n] = off;
		if (in.size > 1)
			x->cell_off[n + 1] = off;
		n += in.size > 1 ? 2 : 1;
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		struct vm_xfunc *xf = &x->funcs[i];
		xf->entry = &x->cells[cell_at[f->code_off]];
		xf->nargs = f->nargs;
		xf->nslots = f->nargs + f->nlocals;
		xf->frame_words = xf->nslots + f->max_stack;
		xf->index = i;
	}
	for (uint32_t i = 0; i < m->nfuncs; i++) {
		const struct vm_function *f = &m->funcs[i];
		uint32_t end = f->code_off + f->code_len;
		for (uint32_t off = f->code_off; off < end; off += in.size) {
			union vm_cell *c = &x->cells[cell_at[off]];
			const struct vm_symbol *s;
			vm_insn_decode(m->code, m->code_len, off, &in, NULL);
			int op = in.op == VM_OP_PUSHA ? VM_OP_PUSH : (int)in.op;
			if (vm_opinfo[in.op].operand == VM_OPND_LABEL &&
			    (uint32_t)in.imm <= off - f->code_off)
				op = in.op == VM_OP_JMP  ? VM_OP_JMPB
				     : in.op == VM_OP_JZ ? VM_OP_JZB
							 : VM_OP_JNZB;
			set_handler(c, table, op);
			switch (vm_opinfo[in.op].operand) {
			case VM_OPND_NONE:
				break;
			case VM_OPND_ADDR:
				s = &m->syms[in.imm];
				c[1].u = vm_module_seg_base(m, s->segment) +
					 s->offset;
				break;
			case VM_OPND_LABEL:
				c[1].target =
					&x->cells[cell_at[f->code_off + in.imm]];
				break;
			case VM_OPND_FUNC:
				c[1].fn = &x->funcs[in.imm];
				break;
			default:
				c[1].i = in.imm;
				break;
			}
		}
	}
	if (!p->opt.no_fuse)
		for (uint32_t i = 0; i < m->nfuncs; i++)
			fuse_function(m, &m->funcs[i], x->cells, cell_at, table);
	x->cell_at = cell_at;
	return 0;
nomem:
	free(cell_at);
	vm__unlink(p);
	return FL_ENOMEM;
}

void vm__unlink(struct vm_proc *p)
{
	free(p->x.cells);
	free(p->x.cell_off);
	free(p->x.cell_at);
	free(p->x.funcs);
	memset(&p->x, 0, sizeof p->x);
}
