/*
 * sanitizer.h: tells ASan and TSan about goroutine stack switches.
 *
 * Both sanitizers track the current stack. goro switches stacks behind
 * their back, so without these calls ASan reports false stack overflows
 * and stale redzones, and TSan mixes up the happens-before state of
 * goroutines that share a thread. In a normal build every function here is
 * an empty inline.
 *
 * Protocol for one switch from context A to context B:
 *   goro__san_before_switch(&A's fake stack, B's stack, B's fiber)
 *   goro__ctx_switch(A, B)
 *   goro__san_after_switch(A's fake stack)         (runs in A when resumed)
 * A context that is leaving for good passes a NULL fake-stack pointer.
 */
#ifndef GORO_SANITIZER_H
#define GORO_SANITIZER_H

#include <stddef.h>
#include <stdint.h>

#if defined(__SANITIZE_ADDRESS__)
#define GORO__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GORO__ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define GORO__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GORO__TSAN 1
#endif
#endif

#ifdef GORO__ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif
#ifdef GORO__TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

static inline void goro__san_before_switch(void **fake_stack, uintptr_t lo, size_t size,
                                           void *fiber) {
#ifdef GORO__ASAN
  __sanitizer_start_switch_fiber(fake_stack, (const void *)lo, size);
#else
  (void)fake_stack, (void)lo, (void)size;
#endif
#ifdef GORO__TSAN
  __tsan_switch_to_fiber(fiber, 0);
#else
  (void)fiber;
#endif
}

static inline void goro__san_after_switch(void *fake_stack) {
#ifdef GORO__ASAN
  __sanitizer_finish_switch_fiber(fake_stack, NULL, NULL);
#else
  (void)fake_stack;
#endif
}

/* Clears ASan's redzone marks left on a stack by the goroutine that used it. */
static inline void goro__san_forget_stack(uintptr_t lo, size_t size) {
#ifdef GORO__ASAN
  __asan_unpoison_memory_region((const void *)lo, size);
#else
  (void)lo, (void)size;
#endif
}

static inline void *goro__san_fiber_create(void) {
#ifdef GORO__TSAN
  return __tsan_create_fiber(0);
#else
  return NULL;
#endif
}

static inline void *goro__san_fiber_current(void) {
#ifdef GORO__TSAN
  return __tsan_get_current_fiber();
#else
  return NULL;
#endif
}

static inline void goro__san_fiber_destroy(void *fiber) {
#ifdef GORO__TSAN
  __tsan_destroy_fiber(fiber);
#else
  (void)fiber;
#endif
}

#endif
