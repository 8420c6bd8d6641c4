/*
 * observe.h: helpers shared by the observability tests (test_stats,
 * test_debug and test_trace).
 *
 * - observe_recurse() takes a goroutine to a chosen stack depth and runs a
 *   callback there, so that a test can park it at a known depth.
 * - observe_read() reads goro_read_memstats; observe_check_identities()
 *   asserts the identities that goro.h states for every read, and
 *   observe_check_buckets() that each histogram bucket is possible.
 * - run_child_env() runs a CHILD with one environment variable set, the
 *   way a user sets GORODEBUG or GOROTRACE.
 *
 * Every function is static inline so that each test file takes what it uses.
 */
#ifndef GORO_TEST_OBSERVE_H
#define GORO_TEST_OBSERVE_H

#include "harness.h"

#include <stdint.h>

#define OBSERVE_PAGE ((uint64_t)4096)

/* Recurses with frames of about 256 bytes until a frame lies below stop,
 * then calls at_bottom(arg). Not static, so that a fatal report would name
 * it. Returns the number of frames, or -1 if a frame changed meanwhile. */
int observe_recurse(uintptr_t stop, void (*at_bottom)(void *), void *arg);

__attribute__((noinline)) int observe_recurse(uintptr_t stop, void (*at_bottom)(void *),
                                                    void *arg) {
  volatile uint8_t pad[224];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  int depth = 1;

  pad[0] = (uint8_t)(frame >> 4);
  if (frame > stop) {
    int below = observe_recurse(stop, at_bottom, arg);
    depth = below < 0 ? below : below + 1;
  } else if (at_bottom) {
    at_bottom(arg);
  }
  /* Reading pad after the call keeps the frame alive across it. */
  return pad[0] == (uint8_t)(frame >> 4) ? depth : -1;
}

/* Returns the top of the calling goroutine's stack (goro_stack_bounds). */
static inline uintptr_t observe_stack_top(void) {
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  return hi;
}

/* Runs at_bottom(arg) with the calling goroutine depth bytes below its
 * stack top. */
static inline void observe_at_depth(size_t depth, void (*at_bottom)(void *), void *arg) {
  if (depth == 0) {
    at_bottom(arg);
    return;
  }
  observe_recurse(observe_stack_top() - depth, at_bottom, arg);
}

static inline void observe_read(goro_memstats *s) {
  memset(s, 0, sizeof *s);
  s->size = sizeof *s;
  CHECK_OK(goro_read_memstats(s));
}

/*
 * Asserts, for one read, the identities of goro.h
 *   sum(stack_hist_count) == goroutines
 *   sum(stack_hist_bytes) == stack_inuse
 *   stack_sys == stack_inuse + stack_cache + stack_guard + stack_meta
 * and that between 1 and max_live goroutines are alive. who names the
 * reader in a failure.
 */
static inline void observe_check_identities(const goro_memstats *s, uint64_t max_live,
                                            const char *who) {
  uint64_t count = 0, bytes = 0;

  if (s->size != sizeof *s || s->version != GORO_MEMSTATS_VERSION)
    FAIL("%s: read returned size %u version %u, expected %zu and %d", who, s->size, s->version,
         sizeof *s, GORO_MEMSTATS_VERSION);
  for (int i = 0; i < GORO_STACK_HIST_BUCKETS; i++) {
    count += s->stack_hist_count[i];
    bytes += s->stack_hist_bytes[i];
  }
  if (count != s->goroutines)
    FAIL("%s: histogram counts sum to %llu, goroutines is %llu", who, (unsigned long long)count,
         (unsigned long long)s->goroutines);
  if (bytes != s->stack_inuse)
    FAIL("%s: histogram bytes sum to %llu, stack_inuse is %llu", who, (unsigned long long)bytes,
         (unsigned long long)s->stack_inuse);
  if (s->stack_sys != s->stack_inuse + s->stack_cache + s->stack_guard + s->stack_meta)
    FAIL("%s: stack_sys %llu != stack_inuse %llu + stack_cache %llu + stack_guard %llu + "
         "stack_meta %llu",
         who, (unsigned long long)s->stack_sys, (unsigned long long)s->stack_inuse,
         (unsigned long long)s->stack_cache, (unsigned long long)s->stack_guard,
         (unsigned long long)s->stack_meta);
  if (s->goroutines < 1 || s->goroutines > max_live)
    FAIL("%s: goroutines is %lld, but between 1 and %llu are alive", who,
         (long long)s->goroutines, (unsigned long long)max_live);
}

/* Asserts that every histogram bucket of one read is possible: at most
 * max_live goroutines, each with a span within the bucket's bounds. Bucket
 * i counts spans of more than 4096 << (i - 1) and at most 4096 << i bytes,
 * and every span is a whole number of pages. */
static inline void observe_check_buckets(const goro_memstats *s, uint64_t max_live,
                                         const char *who) {
  for (int i = 0; i < GORO_STACK_HIST_BUCKETS; i++) {
    uint64_t n = s->stack_hist_count[i];
    uint64_t upper = OBSERVE_PAGE << i;
    uint64_t lower = i == 0 ? OBSERVE_PAGE : (OBSERVE_PAGE << (i - 1)) + OBSERVE_PAGE;
    if (n > max_live || s->stack_hist_bytes[i] < n * lower ||
        (i < GORO_STACK_HIST_BUCKETS - 1 && s->stack_hist_bytes[i] > n * upper))
      FAIL("%s: bucket %d (spans up to %llu bytes) holds %lld goroutines with %lld bytes", who, i,
           (unsigned long long)upper, (long long)n, (long long)s->stack_hist_bytes[i]);
  }
}

/* Both of the above. */
static inline void observe_check_read(const goro_memstats *s, uint64_t max_live, const char *who) {
  observe_check_identities(s, max_live, who);
  observe_check_buckets(s, max_live, who);
}

/* Runs CHILD(name) with name_var=value in its environment. */
static inline void run_child_env(const char *name, const char *var, const char *value,
                                 child_result *out) {
  if (setenv(var, value, 1) != 0)
    FAIL("setenv %s: %s", var, strerror(errno));
  run_child(name, out);
  unsetenv(var);
}

/* Fails unless a child exited with status 0. */
static inline void check_child_ok(const child_result *res, const char *what) {
  if (!res->exited)
    FAIL("%s: child was killed by signal %d (%s); stderr:\n%s", what, res->status,
         strsignal(res->status), res->err);
  if (res->status != 0)
    FAIL("%s: child exited with status %d; stderr:\n%s", what, res->status, res->err);
}

/* Counts the lines of text that start with prefix. */
static inline int observe_count_lines(const char *text, const char *prefix) {
  size_t len = strlen(prefix);
  int n = 0;

  for (const char *line = text; line && *line;) {
    if (strncmp(line, prefix, len) == 0)
      n++;
    line = strchr(line, '\n');
    if (line)
      line++;
  }
  return n;
}

#endif
