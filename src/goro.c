/*
 * goro.c: error messages, global settings and errno access.
 */
#include <errno.h>
#include <string.h>

#include "sched.h"

size_t goro__max_stack = GORO_DEFAULT_MAX_STACK;
bool goro__unguarded_ok;
int goro__maxprocs_setting;

const char *goro_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define GORO_ERROR_CASE(name, value, message) \
  case value:                                 \
    return message;
    GORO_ERRORS(GORO_ERROR_CASE)
#undef GORO_ERROR_CASE
  }
  return "unknown error";
}

size_t goro_set_max_stack(size_t bytes) {
  if (bytes == 0 || bytes > GORO_MAX_MAX_STACK)
    return 0;
  /* Stacks come in power-of-two classes from 16 KiB; the class is the limit
   * that the guard enforces, so that is the value stored and read back. */
  size_t rounded = goro__stack_class_size(goro__stack_class_for(bytes));
  return __atomic_exchange_n(&goro__max_stack, rounded, __ATOMIC_RELAXED);
}

size_t goro_max_stack(void) { return __atomic_load_n(&goro__max_stack, __ATOMIC_RELAXED); }

int goro_set_maxprocs(int n) {
  if (n < 0 || n > GORO__MAX_PROCS)
    return GORO_EINVAL;
  goro__maxprocs_setting = n;
  return 0;
}

void goro_allow_unguarded(bool allow) { goro__unguarded_ok = allow; }

/* The library is built with GORO_NO_ERRNO_OVERRIDE: this is glibc's errno. */
int *goro_errno_location(void) { return &errno; }

