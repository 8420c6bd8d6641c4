/*
 * bench/policy/policy_bench.h: helpers for the stack-policy benchmarks.
 *
 * Each program in bench/policy runs one field case at full size, prints a
 * table of what it measured and one line per target:
 *
 *   PASS F01 time per request, no hint vs 32 KiB hint: 1.03x (target <= 1.20x)
 *   FAIL ...
 *
 * and exits 1 if any target failed. Flags are "-name value" pairs. Memory is
 * read from /proc: the whole process (VmRSS) and the stack arena alone (the
 * Rss of the mapping that contains goroutine stacks, from /proc/self/smaps).
 */
#ifndef GORO_POLICY_BENCH_H
#define GORO_POLICY_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "../common.h"
#include "goro.h"

static int pb_failures;

static inline int64_t pb_now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Returns the number after "-name" on the command line, or def. */
static inline double pb_flag(int argc, char **argv, const char *name, double def) {
  for (int i = 1; i + 1 < argc; i++) {
    if (argv[i][0] != '-' || strcmp(argv[i] + 1, name) != 0)
      continue;
    char *end;
    double v = strtod(argv[i + 1], &end);
    if (end == argv[i + 1] || *end) {
      fprintf(stderr, "invalid number for -%s: %s\n", name, argv[i + 1]);
      exit(2);
    }
    return v;
  }
  return def;
}

/* Stops the program when a goro call returns a negative GORO_E* code. */
#define PB_CHECK(call)                                                         \
  do {                                                                         \
    long long pb_rc_ = (long long)(call);                                      \
    if (pb_rc_ < 0) {                                                          \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,     \
              goro_strerror((int)pb_rc_));                                     \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

/* Prints a PASS or FAIL line for one target and counts failures. */
static inline void __attribute__((format(printf, 2, 3))) pb_target(bool pass, const char *fmt, ...) {
  va_list ap;

  printf("%s ", pass ? "PASS" : "FAIL");
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
  fflush(stdout);
  if (!pass)
    pb_failures++;
}

/* Prints the machine line every result table starts with. */
static inline void pb_header(const char *title) {
  struct utsname u;
  char model[128] = "unknown CPU";
  char line[256];
  int cpus = 0;
  FILE *f = fopen("/proc/cpuinfo", "r");

  while (f && fgets(line, sizeof line, f)) {
    if (strncmp(line, "processor", 9) == 0)
      cpus++;
    if (strncmp(line, "model name", 10) == 0 && cpus == 1) {
      char *colon = strchr(line, ':');
      if (colon) {
        snprintf(model, sizeof model, "%s", colon + 2);
        model[strcspn(model, "\n")] = '\0';
      }
    }
  }
  if (f)
    fclose(f);
  uname(&u);
  printf("== %s\n# machine: Linux %s, %s, %d CPUs\n", title, u.release, model, cpus);
  fflush(stdout);
}

static inline int pb_exit_status(void) { return pb_failures ? 1 : 0; }

static inline long long pb_rss(void) { return bench_status_bytes("VmRSS"); }

/* Returns a "Field:  N kB" line of the /proc/self/smaps entry of the
 * mapping that contains addr, in bytes, or -1. */
static inline long long pb_mapping_field(uintptr_t addr, const char *field) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  size_t len = strlen(field);
  bool inside = false;
  long long kb = -1;

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long long lo, hi;
    if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && strncmp(line, field, len) == 0 && line[len] == ':') {
      kb = strtoll(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

/* Returns the resident bytes of the mapping that contains addr (the stack
 * arena when addr is a goroutine's stack), or -1. */
static inline long long pb_mapping_rss(uintptr_t addr) { return pb_mapping_field(addr, "Rss"); }

/* Returns the address of the calling goroutine's stack top, which lies in
 * the stack arena, for pb_mapping_rss. */
static inline uintptr_t pb_arena_address(void) {
  uintptr_t lo = 0, hi = 0;

  PB_CHECK(goro_stack_bounds(&lo, &hi));
  return hi - 1;
}

/* Minor page faults of the whole process, or of the calling thread. */
static inline long pb_minflt(int who) {
  struct rusage ru;

  getrusage(who, &ru);
  return ru.ru_minflt;
}

static inline goro_memstats pb_memstats(void) {
  goro_memstats s;

  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  PB_CHECK(goro_read_memstats(&s));
  return s;
}

static inline double pb_mib(long long bytes) { return (double)bytes / (1024.0 * 1024.0); }

static inline int pb_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts xs and returns the value at quantile q (0..1). */
static inline double pb_quantile(double *xs, size_t n, double q) {
  if (n == 0)
    return 0;
  qsort(xs, n, sizeof *xs, pb_cmp_double);
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return xs[i < n ? i : n - 1];
}

/* The cache bound of the library's slot caches, as src/stack.h sets it:
 * per worker, GORO__CACHE_SLOTS (32) slots of at most GORO__CACHE_KEEP
 * (64 KiB) each, plus GORO__WARM_BOUND (16 MiB) on the shared warm lists
 * after the monitor has scavenged. */
#define PB_CACHE_SLOTS 32
#define PB_CACHE_KEEP ((long long)64 << 10)
#define PB_WARM_BOUND ((long long)16 << 20)

static inline long long pb_cache_bound(int workers) {
  return (long long)workers * PB_CACHE_SLOTS * PB_CACHE_KEEP + PB_WARM_BOUND;
}

#endif
