/*
 * thrash: one long-lived worker goroutine fed deep and shallow tasks, with a
 * shrink cycle (goro_gc) after every task, under three stack policies.
 *
 *   thrash -policy off|go|default [-rounds 100] [-shallow 10] [-deep-kib 768]
 *
 * A deep task recurses to deep-kib KiB of stack (768 KiB: a 1 MiB stack in
 * Go's doubling terms); a shallow task recurses 4 levels. Each round is one
 * deep task followed by `shallow` shallow tasks; 5 rounds warm up first.
 * While the worker is parked between tasks, the cycle may give back the
 * pages a deep task committed, and the next deep task then faults them in
 * again. That is the pattern behind Go's stack thrashing.
 *
 *   off      policy.shrink = false: pages are never given back
 *   go       policy.hysteresis = 0: Go's rule, shrink whenever under 1/4 used
 *   default  goro's default policy (a grown stack is held for a few cycles)
 *
 * In all three the automatic cycles are off (gc_period_ns = 0), so the only
 * cycles are the ones after each task, as runtime.GC() is in the Go program.
 * The program runs one worker, and the Go program GOMAXPROCS=1: the
 * scenario is about one goroutine's stack.
 * After the last round the worker idles through 20 cycles 10 ms apart. The
 * program then reports the VmRSS growth since before the worker started,
 * and the worker's committed stack.
 */
#define _GNU_SOURCE
#include "goro.h"

#include "../common.h"

#define MAX_ROUNDS 10000
#define IDLE_CYCLES 20

enum task_kind { TASK_SHALLOW, TASK_DEEP, TASK_REPORT };

typedef struct task_result {
  double ns;
  int grew;         /* the previous task grew the stack (seen at this task's start) */
  int shrinks;      /* shrinks while parked before this task */
  size_t stack_now; /* committed stack at this task's start, bytes */
} task_result;

static goro_chan *tasks, *results;
static goro_waitgroup worker_done;
static int deep_depth;
static volatile unsigned sink;

static __attribute__((noinline)) unsigned recurse(int d) {
  volatile unsigned char buf[512];

  buf[d & 511] = (unsigned char)d;
  if (d == 0)
    return buf[0];
  return recurse(d - 1) + buf[(d * 7) & 511]; /* not a tail call */
}

static void worker(void *arg) {
  goro_stack_info prev, now;
  int kind;

  (void)arg;
  BENCH_CHECK(goro_stack_info_self(&prev));
  while (goro_chan_recv(tasks, &kind) == 0) {
    task_result r = {0};

    /* Growth during the last task and shrinks since were observed while
     * this goroutine was parked: at its park and by the cycles. */
    BENCH_CHECK(goro_stack_info_self(&now));
    r.grew = now.growths > prev.growths;
    r.shrinks = (int)(now.shrinks - prev.shrinks);
    r.stack_now = now.current;
    prev = now;

    double t0 = bench_now_ns();
    if (kind == TASK_DEEP)
      sink += recurse(deep_depth);
    else if (kind == TASK_SHALLOW)
      sink += recurse(4);
    r.ns = bench_now_ns() - t0;
    BENCH_CHECK(goro_chan_send(results, &r));
  }
  goro_wg_done(&worker_done);
}

/* Runs one task on the worker, then a shrink cycle. A cycle visits parked
 * goroutines only. With one worker, the worker is still runnable right after
 * its send, so the yield lets it reach its receive and park first. Go's
 * worker has parked by the time runtime.GC() runs. */
static task_result run_task(int kind) {
  task_result r;

  BENCH_CHECK(goro_chan_send(tasks, &kind));
  BENCH_CHECK(goro_chan_recv(results, &r));
  goro_yield();
  BENCH_CHECK(goro_gc());
  return r;
}

/* Returns the p-quantile of sorted xs by the nearest-rank rule. */
static double quantile(const double *xs, int n, double p) {
  int i = (int)(p * n + 0.5) - 1;

  if (i < 0)
    i = 0;
  if (i >= n)
    i = n - 1;
  return xs[i];
}

typedef struct args {
  const char *policy;
  int rounds, shallow, deep_kib;
} args;

static void set_policy(const char *name) {
  goro_stack_policy pol = {.size = sizeof pol};

  BENCH_CHECK(goro_get_stack_policy(&pol));
  pol.size = sizeof pol;
  pol.gc_period_ns = 0;
  if (strcmp(name, "off") == 0)
    pol.shrink = false;
  else if (strcmp(name, "go") == 0)
    pol.hysteresis = 0;
  BENCH_CHECK(goro_set_stack_policy(&pol));
  printf("# goro thrash: policy %s: shrink=%d hysteresis=%u madv_free=%d\n", name, pol.shrink,
         pol.hysteresis, pol.madv_free);
}

static int bench_main(void *arg) {
  const args *a = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = (size_t)1 << 20};
  static double deep_ns[MAX_ROUNDS];
  int deep_grew = 0, shrinks = 0;

  set_policy(a->policy);
  deep_depth = a->deep_kib * 1024 / 544; /* 544 stack bytes per level, see growth.c */
  BENCH_CHECK(goro_chan_make(&tasks, sizeof(int), 0));
  BENCH_CHECK(goro_chan_make(&results, sizeof(task_result), 0));
  bench_mem base = bench_read_mem();
  BENCH_CHECK(goro_wg_add(&worker_done, 1));
  BENCH_CHECK(goro_spawn_with(worker, NULL, &opts));

  for (int i = 0; i < 5; i++) {
    run_task(TASK_DEEP);
    for (int j = 0; j < a->shallow; j++)
      run_task(TASK_SHALLOW);
  }

  double t0 = bench_now_ns();
  for (int i = 0; i < a->rounds; i++) {
    task_result r = run_task(TASK_DEEP);
    deep_ns[i] = r.ns;
    shrinks += r.shrinks;
    for (int j = 0; j < a->shallow; j++) {
      task_result s = run_task(TASK_SHALLOW);
      shrinks += s.shrinks;
      if (j == 0)
        deep_grew += s.grew; /* the first shallow task reports the deep task's growth */
    }
  }
  double wall_ms = (bench_now_ns() - t0) / 1e6;

  for (int i = 0; i < IDLE_CYCLES; i++) {
    BENCH_CHECK(goro_gc());
    BENCH_CHECK(goro_sleep(10 * 1000 * 1000));
  }
  bench_mem idle = bench_read_mem();
  task_result last = run_task(TASK_REPORT);

  qsort(deep_ns, (size_t)a->rounds, sizeof deep_ns[0], bench_cmp_double);
  bench_result("deep_p50_us", quantile(deep_ns, a->rounds, 0.50) / 1e3);
  bench_result("deep_p99_us", quantile(deep_ns, a->rounds, 0.99) / 1e3);
  bench_result("deep_max_us", deep_ns[a->rounds - 1] / 1e3);
  bench_result("deep_grew_share", (double)deep_grew / a->rounds);
  bench_result("shrinks_per_round", (double)shrinks / a->rounds);
  bench_result("rss_idle_kib", (double)(idle.rss - base.rss) / 1024);
  bench_result("stack_idle_kib", (double)last.stack_now / 1024);
  bench_result("wall_ms", wall_ms);

  BENCH_CHECK(goro_chan_close(tasks));
  BENCH_CHECK(goro_wg_wait(&worker_done));
  return 0;
}

int main(int argc, char **argv) {
  args a = {
      .policy = bench_flag_str(argc, argv, "policy"),
      .rounds = (int)bench_flag_num(argc, argv, "rounds", 100),
      .shallow = (int)bench_flag_num(argc, argv, "shallow", 10),
      .deep_kib = (int)bench_flag_num(argc, argv, "deep-kib", 768),
  };

  if (!a.policy)
    a.policy = "default";
  if (strcmp(a.policy, "off") && strcmp(a.policy, "go") && strcmp(a.policy, "default")) {
    fprintf(stderr, "invalid -policy %s: use off, go or default\n", a.policy);
    return 2;
  }
  if (a.rounds < 1 || a.rounds > MAX_ROUNDS || a.deep_kib < 1 || a.deep_kib > 960) {
    fprintf(stderr, "invalid -rounds (1..%d) or -deep-kib (1..960)\n", MAX_ROUNDS);
    return 2;
  }
  BENCH_CHECK(goro_set_maxprocs(1));
  BENCH_CHECK(goro_run(bench_main, &a));
  return 0;
}
