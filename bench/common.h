/*
 * bench/common.h: helpers shared by the C benchmark programs (goro and
 * threads).
 *
 * Every benchmark program is one measurement run in a fresh process. It
 * takes flags as "-name value" pairs, the same spelling as the Go programs
 * under bench/go, and prints its numbers as lines "result KEY VALUE" that
 * bench/run.py collects. Other lines start with '#' and are for people.
 * A goro program includes goro.h before this file, which then also defines
 * BENCH_CHECK for goro calls.
 */
#ifndef GORO_BENCH_COMMON_H
#define GORO_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Returns a "Name:   N kB" field of /proc/self/status in bytes, or -1. */
static inline long long bench_status_bytes(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t len = strlen(field);
  long long kb = -1;

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, field, len) == 0 && line[len] == ':') {
      kb = strtoll(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

/* Resident memory of the process, with and without its page tables. */
typedef struct bench_mem {
  long long rss;    /* VmRSS, bytes */
  long long rsspte; /* VmRSS + VmPTE, bytes */
} bench_mem;

static inline bench_mem bench_read_mem(void) {
  bench_mem m;

  m.rss = bench_status_bytes("VmRSS");
  m.rsspte = m.rss + bench_status_bytes("VmPTE");
  return m;
}

/* Returns the value after "-name" on the command line, or NULL. */
static inline const char *bench_flag_str(int argc, char **argv, const char *name) {
  for (int i = 1; i + 1 < argc; i++)
    if (argv[i][0] == '-' && strcmp(argv[i] + 1, name) == 0)
      return argv[i + 1];
  return NULL;
}

static inline double bench_flag_num(int argc, char **argv, const char *name, double def) {
  const char *s = bench_flag_str(argc, argv, name);
  char *end;
  double v;

  if (!s)
    return def;
  v = strtod(s, &end);
  if (end == s || *end) {
    fprintf(stderr, "invalid number for -%s: %s\n", name, s);
    exit(2);
  }
  return v;
}

static inline void bench_result(const char *key, double value) {
  printf("result %s %.6g\n", key, value);
  fflush(stdout);
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts xs in place and returns its median. */
static inline double bench_median(double *xs, int n) {
  qsort(xs, (size_t)n, sizeof *xs, bench_cmp_double);
  if (n % 2)
    return xs[n / 2];
  return (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

/* Stops the program with a message when a goro call returned a negative
 * GORO_E* code. */
#ifdef GORO_H
#define BENCH_CHECK(call)                                                      \
  do {                                                                         \
    long long bench_rc_ = (long long)(call);                                   \
    if (bench_rc_ < 0) {                                                       \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,     \
              goro_strerror((int)bench_rc_));                                  \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)
#endif

/* Stops the program with a message when a pthread call returned an error
 * number. */
#define BENCH_PCHECK(call)                                                     \
  do {                                                                         \
    int bench_err_ = (call);                                                   \
    if (bench_err_ != 0) {                                                     \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call,     \
              strerror(bench_err_));                                           \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#endif
