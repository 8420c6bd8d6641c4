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
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

goro__debug goro__dbg;

static void apply(const char *name, size_t name_len, const char *value) {
  if (name_len == 9 && strncmp(name, "guardmode", 9) == 0) {
    goro__dbg.guard_mprotect = strncmp(value, "mprotect", 8) == 0;
    return;
  }
  if (name_len == 11 && strncmp(name, "guardbudget", 11) == 0) {
    goro__dbg.guard_budget = atoi(value);
    return;
  }
  fprintf(stderr, "goro: GORODEBUG: unknown setting %.*s (ignored)\n", (int)name_len, name);
}

void goro__debug_init(void) {
  const char *env = getenv("GORODEBUG");

  memset(&goro__dbg, 0, sizeof goro__dbg);
  while (env && *env) {
    const char *end = strchr(env, ',');
    const char *eq = memchr(env, '=', end ? (size_t)(end - env) : strlen(env));
    if (eq)
      apply(env, (size_t)(eq - env), eq + 1);
    else if (end != env)
      fprintf(stderr, "goro: GORODEBUG: setting %.*s has no value (ignored)\n",
              end ? (int)(end - env) : (int)strlen(env), env);
    env = end ? end + 1 : NULL;
  }
}
