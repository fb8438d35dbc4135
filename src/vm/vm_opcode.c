/* The instruction table and instruction encoding, generated from
 * vm_opcodes.def. Read-only data; safe from any thread. */
#include "vm/vm.h"

#include <string.h>

const struct vm_opinfo vm_opinfo[VM_OP__COUNT] = {
#define OP(nm, mn, opnd, po, pu, fl, eff, dc)                                 \
	[VM_OP_##nm] = {.name = #nm,                                          \
			.mnemonic = mn,                                       \
			.operand = VM_OPND_##opnd,                            \
			.pops = po,                                           \
			.pushes = pu,                                         \
			.flags = fl,                                          \
			.effect = eff,                                        \
			.doc = dc},
#include "vm/vm_opcodes.def"
#undef OP
};

int vm_operand_size(enum vm_operand kind)
{
	switch (kind) {
	case VM_OPND_NONE:
		return 0;
	case VM_OPND_IMM:
		return 8;
	default:
		return 4;
	}
}

const char *vm_operand_name(enum vm_operand kind)
{
	switch (kind) {
	case VM_OPND_NONE:
		return "";
	case VM_OPND_IMM:
		return "IMM";
	case VM_OPND_ADDR:
		return "NAME";
	case VM_OPND_SLOT:
		return "N";
	case VM_OPND_COUNT:
		return "N";
	case VM_OPND_LABEL:
		return "L";
	case VM_OPND_FUNC:
		return "F";
	}
	return "?";
}

int vm_insn_decode(const uint8_t *code, size_t len, size_t off,
		   struct vm_insn *out, struct fl_err *err)
{
	const struct vm_opinfo *oi;
	size_t n;

	if (off >= len)
		return fl_err_set(err, FL_EFORMAT, "past the end of the code");
	if (code[off] >= VM_OP__COUNT)
		return fl_err_set(err, FL_EFORMAT, "unknown opcode %u",
				  code[off]);
	oi = &vm_opinfo[code[off]];
	n = (size_t)vm_operand_size(oi->operand);
	if (n > len - off - 1)
		return fl_err_set(err, FL_EFORMAT,
				  "truncated %s instruction", oi->mnemonic);
	out->op = (enum vm_op)code[off];
	out->size = (uint32_t)(1 + n);
	if (n == 8)
		out->imm = (int64_t)fl_load_u64(code + off + 1);
	else if (n == 4)
		out->imm = fl_load_u32(code + off + 1);
	else
		out->imm = 0;
	return 0;
}

void vm_insn_encode(struct fl_buf *b, enum vm_op op, int64_t operand)
{
	fl_buf_put_u8(b, (uint8_t)op);
	switch (vm_operand_size(vm_opinfo[op].operand)) {
	case 8:
		fl_buf_put_u64(b, (uint64_t)operand);
		break;
	case 4:
		fl_buf_put_u32(b, (uint32_t)operand);
		break;
	}
}
