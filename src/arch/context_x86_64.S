/*
 * context_x86_64.S: context switch for x86-64 System V (Linux).
 *
 * Saved frame, from the saved stack pointer upwards:
 *   [sp+0]  MXCSR (4 bytes), x87 control word (2 bytes), padding
 *   [sp+8]  r15, r14, r13, r12, rbx, rbp
 *   [sp+56] return address
 * The layout is private to this file and goro__ctx_make in context.c.
 */
        .text

        .globl  goro__ctx_switch
        .hidden goro__ctx_switch
        .type   goro__ctx_switch, @function
        .p2align 4
/* void goro__ctx_switch(goro__ctx *from [rdi], goro__ctx *to [rsi]) */
goro__ctx_switch:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)

        movq    (%rsi), %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
        .cfi_endproc
        .size   goro__ctx_switch, .-goro__ctx_switch

        .globl  goro__ctx_entry
        .hidden goro__ctx_entry
        .type   goro__ctx_entry, @function
        .p2align 4
/*
 * First code a new context runs: r12 holds entry, r13 its argument. The
 * return address column is undefined so that debuggers and backtrace()
 * end the goroutine's stack here instead of reading past the slot top.
 */
goro__ctx_entry:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r13, %rdi
        callq   *%r12
        ud2
        .cfi_endproc
        .size   goro__ctx_entry, .-goro__ctx_entry

        .section .note.GNU-stack,"",@progbits
