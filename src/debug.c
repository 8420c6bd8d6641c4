/*
 * debug.c: GORODEBUG, goro's counterpart of Go's GODEBUG.
 *
 * GORODEBUG is a comma-separated list of name=value settings, read once when
 * goro_run starts. Unknown names are reported on stderr and ignored, so a
 * typo is visible but never fatal.
 *
 *   guardmode=mprotect   make guards with mprotect, as on kernels older
 *                        than 6.13 (for testing the fallback)
 *   guardbudget=N        allow at most N mprotect guards (for testing the
 *                        vm.max_map_count error without exhausting it)
 *   gcshrinkstackoff=1   shrink cycles never release stack pages
 *   adaptivestackstart=0|1  start goroutines at the average used stack
 *   stackhysteresis=N    cycles a grown stack is kept (0: Go's rule)
 *   gcperiod=MS          automatic shrink cycle period (0: none)
 *   madvfree=1           release stack pages with MADV_FREE
 *   stacklog=1           print one line per observed stack size change:
 *                        "goro: goroutine 17 stack 8192 -> 16384 bytes (grow)"
 *   schedtrace=MS        print a scheduler and stack summary every MS
 *
 * goro_set_stack_policy() overrides the stack policy settings.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

goro__debug goro__dbg;

typedef struct knob {
  const char *name;
  int64_t *value64;
  int *value;
} knob;

static int64_t schedtrace_ms, gc_period_ms;

static const knob knobs[] = {
    {"guardbudget", NULL, &goro__dbg.guard_budget},
    {"gcshrinkstackoff", NULL, &goro__dbg.shrink_off},
    {"adaptivestackstart", NULL, &goro__dbg.adaptive_start},
    {"stackhysteresis", NULL, &goro__dbg.hysteresis},
    {"madvfree", NULL, &goro__dbg.madv_free},
    {"stacklog", NULL, &goro__dbg.stack_log},
    {"schedtrace", &schedtrace_ms, NULL},
    {"gcperiod", &gc_period_ms, NULL},
};

static void apply(const char *name, size_t name_len, const char *value, size_t value_len) {
  char text[32];
  char *end;

  if (name_len == 9 && strncmp(name, "guardmode", 9) == 0) {
    bool mprotect = value_len == 8 && strncmp(value, "mprotect", 8) == 0;
    bool madvise = value_len == 7 && strncmp(value, "madvise", 7) == 0;
    if (mprotect || madvise) {
      goro__dbg.guard_mprotect = mprotect;
      return;
    }
  }
  for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++) {
    if (strlen(knobs[i].name) != name_len || strncmp(knobs[i].name, name, name_len) != 0)
      continue;
    if (value_len == 0 || value_len >= sizeof text)
      break;
    memcpy(text, value, value_len);
    text[value_len] = '\0';
    long long v = strtoll(text, &end, 10);
    if (*end != '\0' || v < 0 || v > INT32_MAX)
      break;
    if (knobs[i].value64)
      *knobs[i].value64 = v;
    else
      *knobs[i].value = (int)v;
    return;
  }
  fprintf(stderr, "goro: GORODEBUG: invalid setting %.*s=%.*s (ignored)\n", (int)name_len, name,
          (int)value_len, value);
}

void goro__debug_init(void) {
  const char *env = getenv("GORODEBUG");

  memset(&goro__dbg, 0, sizeof goro__dbg);
  goro__dbg.adaptive_start = -1;
  goro__dbg.hysteresis = -1;
  schedtrace_ms = 0;
  gc_period_ms = -1;
  while (env && *env) {
    const char *end = strchr(env, ',');
    size_t len = end ? (size_t)(end - env) : strlen(env);
    const char *eq = memchr(env, '=', len);
    if (eq)
      apply(env, (size_t)(eq - env), eq + 1, len - (size_t)(eq - env) - 1);
    else if (len)
      fprintf(stderr, "goro: GORODEBUG: setting %.*s has no value (ignored)\n", (int)len, env);
    env = end ? end + 1 : NULL;
  }
  goro__dbg.schedtrace_ms = schedtrace_ms;
  goro__dbg.gc_period_ms = gc_period_ms;
}
