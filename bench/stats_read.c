/*
 * stats_read: the cost of one goro_read_memstats call with 1,000 and with
 * 100,000 goroutines parked.
 *
 *   make bench-stats-read        (or build/bench/stats_read [-reads R])
 *
 * A read sums per-worker counters and never visits a goroutine, so both
 * counts should cost the same. The main goroutine parks the goroutines on
 * a channel, then times R reads in a row (default 1,000,000) and prints
 * the mean as "result read_ns_N VALUE", N being the goroutines alive
 * besides main. Lines starting with '#' are for people.
 * tests/test_stats.c checks the cause without timing: a read succeeds with
 * every parked goroutine's stack made inaccessible.
 */
#define _GNU_SOURCE
#include "goro.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static goro_chan *gate;
static goro_waitgroup parked;
static long reads = 1000000;

static double now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void park(void *arg) {
  (void)arg;
  goro_wg_done(&parked);
  goro_chan_recv(gate, NULL); /* returns when main closes the gate */
}

/* Spawns goroutines until count are parked besides main. */
static int park_until(long count, long *alive) {
  long more = count - *alive;

  if (goro_wg_add(&parked, more) != 0)
    return -1;
  for (long i = 0; i < more; i++) {
    int64_t id = goro_spawn(park, NULL);
    if (id < 0) {
      fprintf(stderr, "stats_read: goro_spawn: %s\n", goro_strerror((int)id));
      return -1;
    }
  }
  goro_wg_wait(&parked);
  *alive = count;
  return 0;
}

static double time_reads(void) {
  goro_memstats s;
  uint64_t check = 0;

  memset(&s, 0, sizeof s);
  double start = now_ns();
  for (long i = 0; i < reads; i++) {
    s.size = sizeof s;
    goro_read_memstats(&s);
    check += s.goroutines;
  }
  double elapsed = now_ns() - start;
  if (check == 0)
    fprintf(stderr, "stats_read: every read returned 0 goroutines\n");
  return elapsed / (double)reads;
}

static int bench_main(void *arg) {
  static const long counts[] = {1000, 100000};
  long alive = 0;
  (void)arg;

  if (goro_chan_make(&gate, 0, 0) != 0)
    return 1;
  printf("# goro_read_memstats: mean of %ld reads in a row by the main goroutine\n", reads);
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    if (park_until(counts[i], &alive) != 0)
      return 1;
    double ns = time_reads();
    printf("# %ld goroutines parked: %.1f ns per read\n", counts[i], ns);
    printf("result read_ns_%ld %.1f\n", counts[i], ns);
  }
  goro_chan_close(gate);
  return 0;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 < argc && strcmp(argv[i], "-reads") == 0 && atol(argv[i + 1]) > 0) {
      reads = atol(argv[i + 1]);
    } else {
      fprintf(stderr, "usage: %s [-reads R]\n", argv[0]);
      return 2;
    }
  }
  int rc = goro_run(bench_main, NULL);
  if (rc < 0)
    fprintf(stderr, "stats_read: goro_run: %s\n", goro_strerror(rc));
  return rc == 0 ? 0 : 1;
}
