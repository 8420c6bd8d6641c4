/*
 * pingpong: round trips between two goroutines.
 *
 *   pingpong -procs P -n ROUNDTRIPS -reps R [-mode chan|yield]
 *
 * chan (default): main sends an int on channel a, the partner receives it
 * and sends it back on channel b, and main receives it. Both channels are
 * unbuffered, as in the Go program. yield: main and the partner each call
 * goro_yield in a loop, so one round trip is two hand-offs through the
 * scheduler and no channel (meaningful with -procs 1).
 *
 * The program prints the median of R measurements of n round trips each,
 * after a warm-up of n/10.
 */
#define _GNU_SOURCE
#include "goro.h"

#include "../common.h"

static goro_chan *a, *b;
static goro_waitgroup partner_done;
static volatile int stop_yielding;

static void echo(void *arg) {
  int v;

  (void)arg;
  while (goro_chan_recv(a, &v) == 0)
    goro_chan_send(b, &v);
  goro_wg_done(&partner_done);
}

static double measure_chan(long n) {
  int v = 0;

  BENCH_CHECK(goro_chan_make(&a, sizeof(int), 0));
  BENCH_CHECK(goro_chan_make(&b, sizeof(int), 0));
  BENCH_CHECK(goro_wg_add(&partner_done, 1));
  BENCH_CHECK(goro_spawn(echo, NULL));
  BENCH_CHECK(goro_chan_send(a, &v)); /* the partner runs before the clock starts */
  BENCH_CHECK(goro_chan_recv(b, &v));

  double t0 = bench_now_ns();
  for (long i = 0; i < n; i++) {
    v = (int)i;
    goro_chan_send(a, &v);
    goro_chan_recv(b, &v);
  }
  double t1 = bench_now_ns();

  /* The partner's receive returns GORO_ECLOSED, so it leaves its loop and
   * touches neither channel after wg_done: both can be freed then. */
  BENCH_CHECK(goro_chan_close(a));
  BENCH_CHECK(goro_wg_wait(&partner_done));
  BENCH_CHECK(goro_chan_free(a));
  BENCH_CHECK(goro_chan_free(b));
  return (t1 - t0) / (double)n;
}

static void yielder(void *arg) {
  (void)arg;
  while (!stop_yielding)
    goro_yield();
  goro_wg_done(&partner_done);
}

static double measure_yield(long n) {
  stop_yielding = 0;
  BENCH_CHECK(goro_wg_add(&partner_done, 1));
  BENCH_CHECK(goro_spawn(yielder, NULL));
  goro_yield();

  double t0 = bench_now_ns();
  for (long i = 0; i < n; i++)
    goro_yield();
  double t1 = bench_now_ns();

  stop_yielding = 1;
  BENCH_CHECK(goro_wg_wait(&partner_done));
  return (t1 - t0) / (double)n;
}

typedef struct args {
  long n;
  int reps;
  int yield;
} args;

static int bench_main(void *arg) {
  const args *p = arg;
  double (*measure)(long) = p->yield ? measure_yield : measure_chan;
  double xs[64];
  int reps = p->reps < 64 ? p->reps : 64;
  goro_memstats ms = {.size = sizeof ms};

  BENCH_CHECK(goro_read_memstats(&ms));
  printf("# goro pingpong (%s): %llu workers\n", p->yield ? "yield" : "chan",
         (unsigned long long)ms.maxprocs);
  measure(p->n / 10);
  for (int r = 0; r < reps; r++)
    xs[r] = measure(p->n);
  bench_result("roundtrip_ns", bench_median(xs, reps));
  return 0;
}

int main(int argc, char **argv) {
  const char *mode = bench_flag_str(argc, argv, "mode");
  args p = {
      .n = (long)bench_flag_num(argc, argv, "n", 1000000),
      .reps = (int)bench_flag_num(argc, argv, "reps", 5),
      .yield = mode && strcmp(mode, "yield") == 0,
  };

  if (mode && !p.yield && strcmp(mode, "chan") != 0) {
    fprintf(stderr, "invalid -mode %s: use chan or yield\n", mode);
    return 2;
  }
  BENCH_CHECK(goro_set_maxprocs((int)bench_flag_num(argc, argv, "procs", 0)));
  BENCH_CHECK(goro_run(bench_main, &p));
  return 0;
}
