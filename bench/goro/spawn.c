/*
 * spawn: time and memory of N goroutines that each block on a channel
 * receive, then the time to release them.
 *
 *   spawn -n N [-warm 1]
 *
 * The main goroutine spawns N goroutines. Each marks itself ready on a wait
 * group and parks in a receive on an unbuffered channel that no goroutine
 * sends to.
 * The clock runs from the first spawn until the last goroutine is parked.
 * Memory is read from /proc/self/status just before the first spawn and
 * when all are parked, so the delta contains each goroutine's stack pages,
 * its descriptor and goro's page tables, and nothing of the benchmark's own.
 * Closing the channel then lets every goroutine exit (teardown).
 *
 * With -warm 1 a second round runs in the same process after the first
 * one's teardown, on whatever memory goro kept from the first round. With
 * -teardown 0 (memory readings only) the process exits as soon as all
 * goroutines are parked and measured.
 */
#define _GNU_SOURCE
#include "goro.h"

#include <unistd.h>

#include "../common.h"

static goro_chan *gate;
static goro_waitgroup ready, done;

static void waiter(void *arg) {
  (void)arg;
  goro_wg_done(&ready);
  goro_chan_recv(gate, NULL); /* parks until the channel is closed */
  goro_wg_done(&done);
}

typedef struct round_result {
  double spawn_ns;    /* per goroutine, from the first spawn until all parked */
  double teardown_ns; /* per goroutine, from close until all have run to the end */
  double rss;         /* VmRSS delta per goroutine, bytes */
  double rsspte;      /* (VmRSS + VmPTE) delta per goroutine, bytes */
  double stack_inuse; /* goro's stack_inuse delta per goroutine, bytes */
} round_result;

static uint64_t stack_inuse(void) {
  goro_memstats ms = {.size = sizeof ms};

  BENCH_CHECK(goro_read_memstats(&ms));
  return ms.stack_inuse;
}

/* Spawns n waiters and, with teardown set, releases them again. */
static round_result one_round(long n, bool teardown) {
  round_result r;

  BENCH_CHECK(goro_chan_make(&gate, 0, 0));
  BENCH_CHECK(goro_wg_add(&ready, n));
  BENCH_CHECK(goro_wg_add(&done, n));
  uint64_t inuse0 = stack_inuse();
  bench_mem m0 = bench_read_mem();

  double t0 = bench_now_ns();
  for (long i = 0; i < n; i++)
    BENCH_CHECK(goro_spawn(waiter, NULL));
  BENCH_CHECK(goro_wg_wait(&ready));
  double t1 = bench_now_ns();

  bench_mem m1 = bench_read_mem();
  uint64_t inuse1 = stack_inuse();

  r.teardown_ns = -1;
  if (teardown) {
    double t2 = bench_now_ns();
    BENCH_CHECK(goro_chan_close(gate));
    BENCH_CHECK(goro_wg_wait(&done));
    double t3 = bench_now_ns();
    r.teardown_ns = (t3 - t2) / (double)n;

    /* Every waiter has returned from its receive before its wg_done. */
    BENCH_CHECK(goro_chan_free(gate));
  }

  r.spawn_ns = (t1 - t0) / (double)n;
  r.rss = (double)(m1.rss - m0.rss) / (double)n;
  r.rsspte = (double)(m1.rsspte - m0.rsspte) / (double)n;
  r.stack_inuse = ((double)inuse1 - (double)inuse0) / (double)n;
  return r;
}

static void report(const char *prefix, const round_result *r) {
  char key[64];

  snprintf(key, sizeof key, "%s_ns", prefix);
  bench_result(key, r->spawn_ns);
  if (r->teardown_ns >= 0) {
    snprintf(key, sizeof key, "%s_teardown_ns", prefix);
    bench_result(key, r->teardown_ns);
  }
  snprintf(key, sizeof key, "%s_rss", prefix);
  bench_result(key, r->rss);
  snprintf(key, sizeof key, "%s_rsspte", prefix);
  bench_result(key, r->rsspte);
  snprintf(key, sizeof key, "%s_stack_inuse", prefix);
  bench_result(key, r->stack_inuse);
}

typedef struct args {
  long n;
  int warm;
  int teardown;
} args;

static int bench_main(void *arg) {
  const args *a = arg;
  goro_memstats ms = {.size = sizeof ms};

  BENCH_CHECK(goro_read_memstats(&ms));
  printf("# goro spawn: N=%ld, %llu workers\n", a->n, (unsigned long long)ms.maxprocs);
  round_result cold = one_round(a->n, a->teardown || a->warm);
  report("cold", &cold);
  if (!a->teardown && !a->warm)
    _exit(0); /* skips releasing N stacks: that time is not measured */
  if (a->warm) {
    round_result warm = one_round(a->n, true);
    report("warm", &warm);
  }
  return 0;
}

int main(int argc, char **argv) {
  args a = {
      .n = (long)bench_flag_num(argc, argv, "n", 100000),
      .warm = (int)bench_flag_num(argc, argv, "warm", 0),
      .teardown = (int)bench_flag_num(argc, argv, "teardown", 1),
  };

  BENCH_CHECK(goro_run(bench_main, &a));
  return 0;
}
