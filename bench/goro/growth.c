/*
 * growth: the cost of growing a goroutine stack to 8 KiB, 64 KiB, 1 MiB and
 * 16 MiB, with the same recursion and the same measure as
 * bench/go/growth.
 *
 *   growth -reps R
 *
 * A fresh goroutine (max_stack 32 MiB, so that one slot class serves every
 * size) calls deep(), a recursion whose frames hold a 512-byte buffer, to
 * a depth that uses 75% of the target size. The first call commits the
 * stack pages; a second identical call on the same goroutine finds them
 * resident. First minus second is the growth cost.
 *
 * cold: each trial runs on a slot that was never touched (earlier trial
 * goroutines stay parked and keep theirs), so every page is a first-touch
 * fault. warm: trial goroutines exit, and the next one reuses the slot goro
 * kept warm, after one discarded warm-up trial per size. The program runs
 * with one worker (goro_set_maxprocs(1)) so that the slot a trial frees is
 * the one the next trial gets; the Go program runs with GOMAXPROCS=1 too.
 */
#define _GNU_SOURCE
#include "goro.h"

#include "../common.h"

#define MAX_STACK ((size_t)32 << 20)
#define MAX_REPS 64

static unsigned char *volatile deepest; /* buf of the frame at depth 0 */
static volatile unsigned sink;

static __attribute__((noinline)) unsigned deep(int d) {
  volatile unsigned char buf[512];

  buf[d & 511] = (unsigned char)d;
  if (d == 0) {
    deepest = (unsigned char *)buf;
    return buf[0];
  }
  return deep(d - 1) + buf[(d * 7) & 511]; /* not a tail call */
}

typedef struct trial {
  int depth;
  double first_ns, second_ns;
  size_t used;         /* bytes from the goroutine's entry frame to the deepest buf */
  goro_chan *hold;     /* cold trials park here so that their slot stays theirs */
  goro_waitgroup done;
} trial;

static void run_trial(void *arg) {
  trial *t = arg;
  goro_chan *hold = t->hold; /* *t belongs to the caller after wg_done */
  unsigned char root;

  double t0 = bench_now_ns();
  sink += deep(t->depth);
  double t1 = bench_now_ns();
  sink += deep(t->depth);
  double t2 = bench_now_ns();

  t->first_ns = t1 - t0;
  t->second_ns = t2 - t1;
  t->used = (size_t)(&root - deepest);
  goro_wg_done(&t->done);
  if (hold)
    goro_chan_recv(hold, NULL);
}

static trial one_trial(int depth, goro_chan *hold) {
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = MAX_STACK};
  trial t = {.depth = depth, .hold = hold};

  BENCH_CHECK(goro_wg_add(&t.done, 1));
  BENCH_CHECK(goro_spawn_with(run_trial, &t, &opts));
  BENCH_CHECK(goro_wg_wait(&t.done));
  /* With one worker the trial goroutine runs to its exit (or park) before
   * this goroutine runs again, so its slot is back in the cache now. */
  goro_yield();
  return t;
}

static const struct {
  const char *key;
  size_t bytes;
} targets[] = {{"8k", 8 << 10}, {"64k", 64 << 10}, {"1m", 1 << 20}, {"16m", 16 << 20}};

static void measure(const char *mode, int reps, double frame, goro_chan *hold) {
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    int depth = (int)(0.75 * (double)targets[i].bytes / frame);
    double first[MAX_REPS], second[MAX_REPS], diff[MAX_REPS];
    char key[64];

    if (!hold)
      one_trial(depth, NULL); /* warm-up: leaves a warm slot of this size */
    for (int r = 0; r < reps; r++) {
      trial t = one_trial(depth, hold);
      first[r] = t.first_ns / 1e3;
      second[r] = t.second_ns / 1e3;
      diff[r] = first[r] - second[r];
    }
    snprintf(key, sizeof key, "%s_%s_first_us", mode, targets[i].key);
    bench_result(key, bench_median(first, reps));
    snprintf(key, sizeof key, "%s_%s_second_us", mode, targets[i].key);
    bench_result(key, bench_median(second, reps));
    snprintf(key, sizeof key, "%s_%s_us", mode, targets[i].key);
    bench_result(key, bench_median(diff, reps));
  }
}

static int bench_main(void *arg) {
  int reps = *(int *)arg;
  goro_chan *hold;

  /* Bytes of stack per deep() level, from a throw-away trial. */
  trial cal = one_trial(200, NULL);
  double frame = (double)cal.used / 201;
  printf("# goro growth: %.1f stack bytes per level, %d trials per size\n", frame, reps);
  bench_result("frame_bytes", frame);

  BENCH_CHECK(goro_chan_make(&hold, 0, 0));
  measure("cold", reps, frame, hold);
  BENCH_CHECK(goro_chan_close(hold)); /* the cold trial goroutines exit */
  measure("warm", reps, frame, NULL);
  return 0;
}

int main(int argc, char **argv) {
  int reps = (int)bench_flag_num(argc, argv, "reps", 5);

  if (reps < 1 || reps > MAX_REPS) {
    fprintf(stderr, "invalid -reps %d: use 1..%d\n", reps, MAX_REPS);
    return 2;
  }
  BENCH_CHECK(goro_set_maxprocs(1));
  BENCH_CHECK(goro_run(bench_main, &reps));
  return 0;
}
