/*
 * goro.c: error messages, global settings, errno access and memstats.
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

int goro_read_memstats(goro_memstats *out) {
  goro__pstats sum = goro__global_stats;

  if (!out || out->size < sizeof(uint32_t) * 2)
    return GORO_EINVAL;
  uint32_t caller_size = out->size;
  goro_memstats s;
  memset(&s, 0, sizeof s);

  for (int i = 0; goro__allp && i < goro__nprocs; i++) {
    goro__pstats *p = &goro__allp[i].stats;
    sum.goroutines += __atomic_load_n(&p->goroutines, __ATOMIC_RELAXED);
    sum.stack_inuse += __atomic_load_n(&p->stack_inuse, __ATOMIC_RELAXED);
    sum.stack_cache += __atomic_load_n(&p->stack_cache, __ATOMIC_RELAXED);
    sum.slots_cached += __atomic_load_n(&p->slots_cached, __ATOMIC_RELAXED);
    sum.spawned += __atomic_load_n(&p->spawned, __ATOMIC_RELAXED);
    sum.pages_committed += __atomic_load_n(&p->pages_committed, __ATOMIC_RELAXED);
    sum.pages_released += __atomic_load_n(&p->pages_released, __ATOMIC_RELAXED);
    sum.growths += __atomic_load_n(&p->growths, __ATOMIC_RELAXED);
  }

  s.size = (uint32_t)sizeof s;
  s.version = GORO_MEMSTATS_VERSION;
  s.goroutines = (uint64_t)sum.goroutines;
  s.spawned_total = sum.spawned;
  s.stack_inuse = (uint64_t)sum.stack_inuse;
  s.stack_cache = (uint64_t)sum.stack_cache;
  s.slots_cached = (uint64_t)sum.slots_cached;
  s.pages_committed = sum.pages_committed;
  s.pages_released = sum.pages_released;
  s.stack_growths = sum.growths;
  goro__stack_read_stats(&s.stack_reserved, &s.slots_carved, &s.guards, &s.unguarded_slots,
                         &s.stack_meta);
  s.guard_bytes = s.guards * GORO__GUARD_SIZE;
  s.stack_meta += (uint64_t)goro__nprocs * (sizeof(goro__p) + sizeof(goro__m));
  s.stack_sys = s.stack_inuse + s.stack_cache + s.stack_meta;
  s.max_stack = goro_max_stack();
  s.maxprocs = (uint64_t)goro__nprocs;

  /* An older caller gets the prefix it knows about. */
  memcpy(out, &s, caller_size < sizeof s ? caller_size : sizeof s);
  out->size = caller_size < sizeof s ? caller_size : (uint32_t)sizeof s;
  return 0;
}
