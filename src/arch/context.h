/*
 * context.h: the machine-level context switch.
 *
 * A context is one saved stack pointer. Everything else the C calling
 * convention asks a callee to preserve (callee-saved registers, the SSE
 * control/status register MXCSR and the x87 control word) is pushed on the
 * stack being left, so a switch is a handful of pushes, one store, one load
 * and the matching pops. No system call: signal masks are per thread and a
 * goroutine inherits the mask of whatever thread runs it.
 *
 * goro__ctx_switch(from, to) saves the running context into *from and resumes
 * *to; it returns when something later switches back to *from.
 *
 * goro__ctx_make(top, entry, arg) prepares a context on a fresh stack whose
 * highest usable address is top (16-byte aligned) so that the first switch
 * to it calls entry(arg) on that stack. entry must never return: the frame
 * above it has no return address, and unwinders stop there.
 */
#ifndef GORO_ARCH_CONTEXT_H
#define GORO_ARCH_CONTEXT_H

#include <stdint.h>

typedef struct goro__ctx {
  void *sp;
} goro__ctx;

void goro__ctx_switch(goro__ctx *from, goro__ctx *to);
void goro__ctx_make(goro__ctx *ctx, void *top, void (*entry)(void *), void *arg);

/* Reads the stack pointer of the caller (approximately: its frame). */
static inline uintptr_t goro__ctx_current_sp(void) {
  return (uintptr_t)__builtin_frame_address(0);
}

#endif
