/*
 * context.c: builds the first frame of a new context for context_x86_64.S.
 */
#include "context.h"

#include <string.h>

void goro__ctx_entry(void);

void goro__ctx_make(goro__ctx *ctx, void *top, void (*entry)(void *), void *arg) {
  uint64_t *sp = (uint64_t *)top;
  uint32_t mxcsr;
  uint16_t fpucw;

  /* goro__ctx_entry is entered by ret, so it starts with rsp == top, which
   * is 16-byte aligned; its call then gives entry the rsp % 16 == 8 that
   * the ABI promises at function entry. */
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(fpucw));

  *--sp = (uint64_t)(uintptr_t)goro__ctx_entry; /* return address */
  *--sp = 0;                                    /* rbp */
  *--sp = 0;                                    /* rbx */
  *--sp = (uint64_t)(uintptr_t)entry;           /* r12 */
  *--sp = (uint64_t)(uintptr_t)arg;             /* r13 */
  *--sp = 0;                                    /* r14 */
  *--sp = 0;                                    /* r15 */
  *--sp = 0;
  memcpy(sp, &mxcsr, sizeof mxcsr);
  memcpy((char *)sp + 4, &fpucw, sizeof fpucw);
  ctx->sp = sp;
}
