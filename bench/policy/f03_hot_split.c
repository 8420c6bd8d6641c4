/*
 * f03_hot_split: a tight loop that calls a function with a 512-byte frame
 * from just above the lowest committed page of its stack. With segmented
 * stacks every call crossed a segment boundary, which is Go's "hot split"
 * (20-100 % swings from harmless edits). goro's stacks are contiguous, so
 * only the first call should fault a page in.
 *
 *   f03_hot_split [-calls N] [-park_every N] [-rounds N]
 *
 * Variants, each on a fresh goroutine:
 *   fresh         recurses until its frame is less than 512 bytes above the
 *                 low end of its committed span, then runs the loop;
 *   after-shrink  first grows to 64 KiB, parks, and is woken right after a
 *                 goro_gc cycle shrank it; then does as "fresh" against its
 *                 new span;
 *   hinted        spawned with a 64 KiB stack_hint, runs the same loop at
 *                 the depth the variant it is compared with used (the
 *                 baseline).
 * The loop parks every -park_every calls; main runs goro_gc while it is
 * parked, so shrink cycles see the goroutine mid-loop. The time per call
 * excludes the parks.
 *
 * Targets: at most one growth and no shrink during the loop, and the time
 * per call within 1.2x of the hinted goroutine's (the median over rounds of
 * the ratio of a variant and its baseline run back to back).
 */
#include "policy_bench.h"

typedef struct loop_run {
  int variant;          /* 0 fresh, 1 after-shrink, 2 hinted */
  long calls, park_every;
  uintptr_t depth;      /* hinted: bytes below the top to run the loop at */
  goro_chan *parked;    /* goroutine -> main: parked, run a cycle */
  goro_chan *resume;    /* main -> goroutine: continue */
  /* results */
  uintptr_t depth_used; /* bytes below the top where the loop ran */
  int64_t loop_ns;
  uint64_t growths, shrinks, shrinks_before;
  long faults;
  size_t span_before, span_after;
} loop_run;

static volatile unsigned sink;

/* The 512-byte frame of the loop. Writing its lowest byte first makes the
 * first call touch the page below the committed span. */
static __attribute__((noinline)) unsigned hot(unsigned x) {
  volatile unsigned char buf[512];

  buf[0] = (unsigned char)x;
  buf[511] = (unsigned char)(x >> 8);
  return buf[0] + buf[511];
}

static void park_for_cycle(loop_run *run) {
  PB_CHECK(goro_chan_send(run->parked, NULL));
  PB_CHECK(goro_chan_recv(run->resume, NULL));
}

static __attribute__((noinline)) void run_loop(loop_run *run) {
  unsigned sum = 0;

  for (long done = 0; done < run->calls;) {
    long n = run->calls - done < run->park_every ? run->calls - done : run->park_every;
    long faults0 = pb_minflt(RUSAGE_THREAD);
    int64_t t0 = pb_now_ns();
    for (long i = 0; i < n; i++)
      sum += hot((unsigned)i);
    run->loop_ns += pb_now_ns() - t0;
    run->faults += pb_minflt(RUSAGE_THREAD) - faults0;
    done += n;
    park_for_cycle(run);
  }
  sink += sum;
}

/* Recurses with small frames until the frame lies at or below stop, then
 * runs the loop there. */
static __attribute__((noinline)) unsigned descend(loop_run *run, uintptr_t top, uintptr_t stop) {
  volatile unsigned char pad[48];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);

  pad[0] = (unsigned char)frame;
  if (frame > stop)
    return descend(run, top, stop) + pad[0];
  run->depth_used = top - frame;
  run_loop(run);
  return pad[0];
}

static __attribute__((noinline)) unsigned grow_to(uintptr_t stop) {
  volatile unsigned char pad[1024];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);

  for (size_t i = 0; i < sizeof pad; i += 256)
    pad[i] = (unsigned char)i;
  if (frame > stop)
    return grow_to(stop) + pad[0];
  return pad[0];
}

static void loop_goroutine(void *arg) {
  loop_run *run = arg;
  uintptr_t lo, top;
  goro_stack_info info;

  PB_CHECK(goro_stack_bounds(&lo, &top));
  if (run->variant == 1) {
    sink += grow_to(top - (64 << 10));
    PB_CHECK(goro_stack_info_self(&info));
    run->shrinks_before = info.shrinks;
    park_for_cycle(run); /* main runs cycles until this stack shrinks */
    PB_CHECK(goro_stack_info_self(&info));
    run->shrinks_before = info.shrinks - run->shrinks_before;
  }
  /* Both reads happen here, at the shallow point: goro_stack_info_self
   * reads the span exactly (mincore), and its own frames would touch the
   * page below if it ran at the bottom of the recursion. */
  goro_stack_info before, after;
  PB_CHECK(goro_stack_info_self(&before));

  /* Stop less than 512 bytes above the low end of the committed span. */
  uintptr_t stop = run->variant == 2 ? top - run->depth : top - before.current + 384;
  sink += descend(run, top, stop);
  PB_CHECK(goro_stack_info_self(&after));
  run->growths = after.growths - before.growths;
  run->shrinks = after.shrinks - before.shrinks;
  run->span_before = before.current;
  run->span_after = after.current;
  PB_CHECK(goro_chan_send(run->parked, NULL)); /* finished */
}

static loop_run *cur;

static int run_main(void *arg) {
  loop_run *run = cur;
  goro_spawn_opts opts = {.size = sizeof opts, .stack_hint = run->variant == 2 ? 64 << 10 : 0};
  (void)arg;

  PB_CHECK(goro_chan_make(&run->parked, 0, 0));
  PB_CHECK(goro_chan_make(&run->resume, 0, 0));
  PB_CHECK(goro_spawn_with(loop_goroutine, run, &opts));

  if (run->variant == 1) {
    /* Parked at its shallow point after growing: cycle until it shrinks
     * (the hold keeps a fresh growth for a few cycles). */
    PB_CHECK(goro_chan_recv(run->parked, NULL));
    goro_memstats s0 = pb_memstats(), s;
    for (int i = 0; i < 64; i++) {
      PB_CHECK(goro_gc());
      s = pb_memstats();
      if (s.stack_shrinks > s0.stack_shrinks)
        break;
    }
    PB_CHECK(goro_chan_send(run->resume, NULL));
  }

  long parks = (run->calls + run->park_every - 1) / run->park_every;
  for (long i = 0; i < parks; i++) {
    PB_CHECK(goro_chan_recv(run->parked, NULL));
    PB_CHECK(goro_gc());
    PB_CHECK(goro_chan_send(run->resume, NULL));
  }
  PB_CHECK(goro_chan_recv(run->parked, NULL));
  PB_CHECK(goro_chan_free(run->parked));
  PB_CHECK(goro_chan_free(run->resume));
  return 0;
}

static void run_variant(loop_run *run) {
  cur = run;
  PB_CHECK(goro_run(run_main, NULL));
}

static const char *const names[4] = {"fresh", "after-shrink", "hinted", "hinted"};

/* Runs variant v once and returns its result. */
static loop_run run_one(int v, long calls, long park_every, uintptr_t depth) {
  loop_run run;

  memset(&run, 0, sizeof run);
  run.variant = v;
  run.calls = calls;
  run.park_every = park_every;
  run.depth = depth;
  run_variant(&run);
  return run;
}

static void print_run(int round, const loop_run *x, long calls) {
  printf("%-5d %-13s %10zu %9.3f %8llu %8llu %7ld %12zu %12zu %15llu\n", round,
         names[x->variant], (size_t)x->depth_used, (double)x->loop_ns / (double)calls,
         (unsigned long long)x->growths, (unsigned long long)x->shrinks, x->faults,
         x->span_before, x->span_after, (unsigned long long)x->shrinks_before);
}

int main(int argc, char **argv) {
  long calls = (long)pb_flag(argc, argv, "calls", 10000000);
  long park_every = (long)pb_flag(argc, argv, "park_every", 1000000);
  int rounds = (int)pb_flag(argc, argv, "rounds", 15);
  double ratios[2][32];
  uint64_t worst_growths[2] = {0, 0}, worst_shrinks[2] = {0, 0};

  if (calls < 1 || park_every < 1 || rounds < 1 || rounds > 32) {
    fprintf(stderr, "invalid flags: -calls and -park_every >= 1, -rounds 1..32\n");
    return 2;
  }
  /* One worker: when the loop goroutine hands main the "parked" message it
   * parks on "resume" before main runs, so every cycle finds it parked. */
  PB_CHECK(goro_set_maxprocs(1));
  pb_header("F03 hot split: a 512-byte frame called at the low end of the committed stack");
  printf("# %ld calls per loop, a park and a goro_gc cycle every %ld calls, %d rounds, 1 worker\n",
         calls, park_every, rounds);

  /* Learn the depths at which the two variants run their loops, so that
   * each hinted baseline runs at the same depth. */
  uintptr_t depth[2];
  for (int v = 0; v < 2; v++)
    depth[v] = run_one(v, park_every, park_every, 0).depth_used;

  printf("%-5s %-13s %10s %9s %8s %8s %7s %12s %12s %15s\n", "round", "variant", "depth",
         "ns/call", "growths", "shrinks", "faults", "span before", "span after",
         "shrinks before");
  for (int r = 0; r < rounds; r++) {
    for (int v = 0; v < 2; v++) {
      /* The variant and its hinted baseline back to back, in alternating
       * order, so drift hits both. */
      loop_run x, base;
      if (r % 2 == 0) {
        x = run_one(v, calls, park_every, 0);
        base = run_one(2, calls, park_every, depth[v]);
      } else {
        base = run_one(2, calls, park_every, depth[v]);
        x = run_one(v, calls, park_every, 0);
      }
      print_run(r, &x, calls);
      print_run(r, &base, calls);
      ratios[v][r] = (double)x.loop_ns / (double)base.loop_ns;
      if (x.growths > worst_growths[v])
        worst_growths[v] = x.growths;
      if (x.shrinks > worst_shrinks[v])
        worst_shrinks[v] = x.shrinks;
    }
  }

  for (int v = 0; v < 2; v++) {
    pb_target(worst_growths[v] <= 1 && worst_shrinks[v] == 0,
              "F03 %s: at most %llu growth and %llu shrinks during a loop (target <= 1 and 0)",
              names[v], (unsigned long long)worst_growths[v], (unsigned long long)worst_shrinks[v]);
    double ratio = pb_quantile(ratios[v], (size_t)rounds, 0.5);
    pb_target(ratio <= 1.2,
              "F03 %s: time per call / hinted goroutine's at the same depth: median of %d paired"
              " ratios %.3fx (target <= 1.20x)",
              names[v], rounds, ratio);
  }
  return pb_exit_status();
}
