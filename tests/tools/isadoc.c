/* isadoc: the instruction table of docs/isa.md, generated from
 * vm_opcodes.def, so the docs cannot drift from the VM.
 *
 *   isadoc            print the generated table
 *   isadoc --check F  exit 1 unless F holds exactly the generated table
 *                     between the BEGIN/END markers
 *   isadoc --write F  replace that part of F with the generated table */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fl_buf.h"
#include "vm/vm.h"

#define BEGIN "<!-- BEGIN GENERATED: isa table (make docs checks it) -->\n"
#define END "<!-- END GENERATED -->\n"

/* Append @s with '|' escaped, as a Markdown table cell needs. */
static void cell(struct fl_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fl_buf_put_u8(b, '\\');
		fl_buf_put_u8(b, (uint8_t)*s);
	}
}

static void generate(struct fl_buf *b)
{
	fl_buf_put_str(b, BEGIN);
	fl_buf_put_str(b, "| # | instruction | stack effect | what it does |\n"
			  "|---|---|---|---|\n");
	for (int i = 0; i < VM_OP__COUNT; i++) {
		const struct vm_opinfo *oi = &vm_opinfo[i];
		const char *opnd = vm_operand_name(oi->operand);
		fl_buf_printf(b, "| %d | `%s%s%s` | `", i, oi->mnemonic,
			      *opnd ? " " : "", opnd);
		cell(b, oi->effect);
		fl_buf_put_str(b, "` | ");
		cell(b, oi->doc);
		fl_buf_put_str(b, (oi->flags & VM_OPF_NYI) ? " *(not yet: see below)* |\n"
							    : " |\n");
	}
	fl_buf_put_str(b, END);
}

int main(int argc, char **argv)
{
	struct fl_buf gen, out;
	struct fl_err err;
	uint8_t *file;
	size_t len;
	char *b, *e;
	int rc = 0;

	fl_buf_init(&gen);
	generate(&gen);
	if (argc == 1) {
		fwrite(gen.data, 1, gen.len, stdout);
		return 0;
	}
	if (argc != 3 || (strcmp(argv[1], "--check") && strcmp(argv[1], "--write"))) {
		fprintf(stderr, "usage: isadoc [--check|--write FILE]\n");
		return 64;
	}
	if (fl_read_file(argv[2], &file, &len, &err)) {
		fprintf(stderr, "isadoc: %s\n", err.msg);
		return 66;
	}
	b = strstr((char *)file, BEGIN);
	e = b ? strstr(b, END) : NULL;
	if (e == NULL) {
		fprintf(stderr, "isadoc: %s: no generated-table markers\n", argv[2]);
		return 1;
	}
	e += strlen(END);
	if (strcmp(argv[1], "--check") == 0) {
		if ((size_t)(e - b) != gen.len || memcmp(b, gen.data, gen.len)) {
			fprintf(stderr,
				"isadoc: %s: the instruction table is out of date with "
				"src/vm/vm_opcodes.def; run `build/isadoc --write %s`\n",
				argv[2], argv[2]);
			rc = 1;
		} else {
			printf("docs: %s matches the instruction table (%d instructions)\n",
			       argv[2], VM_OP__COUNT);
		}
	} else {
		fl_buf_init(&out);
		fl_buf_put(&out, file, (size_t)(b - (char *)file));
		fl_buf_put(&out, gen.data, gen.len);
		fl_buf_put_str(&out, e);
		if (fl_write_file(argv[2], out.data, out.len, &err)) {
			fprintf(stderr, "isadoc: %s\n", err.msg);
			rc = 73;
		}
		fl_buf_close(&out);
	}
	free(file);
	fl_buf_close(&gen);
	return rc;
}
