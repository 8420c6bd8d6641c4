/*
 * f05_thrash_counters: parked "connection" goroutines that each handle a
 * request needing 16 KiB of stack every period, with a shrink cycle between
 * requests. Go's rule halves such a stack at every cycle, so it regrows on
 * every request; goro's hold and probe should keep it.
 *
 *   f05_thrash_counters [-conns N] [-cycles N] [-period_ms N] [-go_conns N]
 *                       [-read_conns N]
 *
 * Each connection goroutine waits on its own channel. Once per period main
 * sends every goroutine one request, waits until all have handled it and
 * parked again, and then runs goro_gc. A request recurses with 512-byte frames
 * until 16 KiB below the stack top, writing every frame. At the start of each
 * request the goroutine reads goro_stack_info_self (at its shallow point,
 * so the read observes no growth) and counts a request that finds its stack
 * shrunk below the 16 KiB it needed last time.
 *
 * The case has 100,000 connections. The default here is 20,000 to keep
 * `make bench-policy` short. At 100,000 a round of requests and its cycle
 * took about 230 ms on a 2-vCPU VM, so the 50 ms period stretches and the
 * run lasts a minute. Pass -conns 100000 for the full case.
 *
 * A second run with -go_conns goroutines and hysteresis 0 (Go's rule) shows
 * the thrashing the hold prevents.
 *
 * A separate run parks -read_conns (100,000) idle connection goroutines
 * and times goro_read_memstats and goro_stack_info_self with 1,000 of them
 * parked, with all of them, and with 1,000 again after the rest exit; the
 * ratio compares the full size with the slower of the two small ones. Every goro_read_memstats result taken is
 * checked against the histogram identities.
 *
 * Targets: <= 6 growths per goroutine over the cycles; no request after the
 * first finds its span below its need; the histogram sums to the goroutine
 * count and its bytes to stack_inuse at every read; each read costs within
 * 2x at full size of its cost at 1,000 goroutines.
 */
#include "policy_bench.h"

#define NEED ((uintptr_t)16 << 10)

typedef struct conn {
  goro_chan *inbox;
  uint64_t growths, shrinks;   /* from goro_stack_info_self when it exits */
  uint32_t below_need;         /* requests that found a shrink below NEED */
  uint32_t requests;
} conn;

static conn *conns;
static goro_waitgroup round_done = GORO_WAITGROUP_INIT;
static goro_waitgroup exited = GORO_WAITGROUP_INIT;
static volatile unsigned sink;

/* Recurses with 512-byte frames, writing each, until stop. */
static __attribute__((noinline)) unsigned handle(uintptr_t stop) {
  volatile unsigned char frame[512];
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);

  frame[0] = (unsigned char)here;
  frame[511] = (unsigned char)(here >> 9);
  if (here > stop)
    return handle(stop) + frame[0];
  return frame[511];
}

static void connection(void *arg) {
  conn *c = arg;
  uintptr_t lo, top;
  goro_stack_info info;

  uint64_t shrinks = 0;

  PB_CHECK(goro_stack_bounds(&lo, &top));
  while (goro_chan_recv(c->inbox, NULL) == 0) {
    /* A span below NEED with no shrink since the last request is a growth
     * no cycle has observed yet, not a shrink. */
    PB_CHECK(goro_stack_info_self(&info));
    if (info.shrinks > shrinks && info.current < NEED)
      c->below_need++;
    shrinks = info.shrinks;
    c->requests++;
    sink += handle(top - NEED);
    goro_wg_done(&round_done);
  }
  PB_CHECK(goro_stack_info_self(&info));
  c->growths = info.growths;
  c->shrinks = info.shrinks;
  goro_wg_done(&exited);
}

typedef struct run_config {
  long conns, cycles;
  int64_t period_ns;
  bool measure_reads;
} run_config;

typedef struct run_result {
  uint64_t max_growths, max_shrinks, below_need;
  double mean_growths, mean_shrinks;
  double read_ns_small[2], read_ns_full[2]; /* memstats, stack_info_self */
  uint64_t identity_errors, reads;
  double cycle_ms_p50, cycle_ms_max, round_ms_p50;
  goro_memstats last;
} run_result;

static run_config cfg;
static run_result res;

static void check_identities(const goro_memstats *s) {
  uint64_t count = 0, bytes = 0;

  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++) {
    count += s->stack_hist_count[b];
    bytes += s->stack_hist_bytes[b];
  }
  res.reads++;
  if (count != s->goroutines || bytes != s->stack_inuse ||
      s->stack_sys != s->stack_inuse + s->stack_cache + s->stack_guard + s->stack_meta)
    res.identity_errors++;
}

/* Cost in ns of one goro_read_memstats (which = 0) or goro_stack_info_self
 * (which = 1) call: the fastest of 15 batches, because other processes on
 * the machine can only add time to a batch. */
static double time_reads(int which) {
  double samples[15];

  for (int k = 0; k < 15; k++) {
    int64_t t0 = pb_now_ns();
    for (int i = 0; i < 5000; i++) {
      if (which == 0) {
        goro_memstats s = {.size = sizeof s};
        goro_read_memstats(&s);
        if (i == 0)
          check_identities(&s);
      } else {
        goro_stack_info info;
        goro_stack_info_self(&info);
      }
    }
    samples[k] = (double)(pb_now_ns() - t0) / 5000.0;
  }
  return pb_quantile(samples, 15, 0.0);
}

static void spawn_conns(long from, long to) {
  for (long i = from; i < to; i++) {
    PB_CHECK(goro_chan_make(&conns[i].inbox, 0, 1));
    PB_CHECK(goro_spawn(connection, &conns[i]));
  }
}

static int run_main(void *arg) {
  long small = cfg.conns < 1000 ? cfg.conns : 1000;
  double *cycle_ms = calloc((size_t)cfg.cycles + 1, sizeof *cycle_ms);
  double *round_ms = calloc((size_t)cfg.cycles + 1, sizeof *round_ms);
  (void)arg;

  if (!cycle_ms || !round_ms)
    exit(1);
  PB_CHECK(goro_wg_add(&exited, cfg.conns));
  spawn_conns(0, small);
  if (cfg.measure_reads) {
    PB_CHECK(goro_sleep(10 * 1000 * 1000)); /* let them park */
    res.read_ns_small[0] = time_reads(0);
    res.read_ns_small[1] = time_reads(1);
  }
  spawn_conns(small, cfg.conns);
  if (cfg.measure_reads) {
    PB_CHECK(goro_sleep(100 * 1000 * 1000));
    res.read_ns_full[0] = time_reads(0);
    res.read_ns_full[1] = time_reads(1);

    /* Back to 1,000 parked goroutines and measure again, so that a change
     * of machine load between the two sizes shows up. */
    for (long i = small; i < cfg.conns; i++)
      PB_CHECK(goro_chan_close(conns[i].inbox));
    while (pb_memstats().goroutines > (uint64_t)small + 1)
      PB_CHECK(goro_sleep(1000000));
    for (int k = 0; k < 2; k++) {
      double again = time_reads(k);
      if (again > res.read_ns_small[k])
        res.read_ns_small[k] = again;
    }
  }

  for (long cycle = 0; cycle < cfg.cycles; cycle++) {
    int64_t start = pb_now_ns();
    PB_CHECK(goro_wg_add(&round_done, cfg.conns));
    for (long i = 0; i < cfg.conns; i++)
      PB_CHECK(goro_chan_send(conns[i].inbox, NULL));
    PB_CHECK(goro_wg_wait(&round_done));
    int64_t handled = pb_now_ns();
    PB_CHECK(goro_gc());
    int64_t cycled = pb_now_ns();
    goro_memstats s = pb_memstats();
    check_identities(&s);
    round_ms[cycle] = (double)(handled - start) / 1e6;
    cycle_ms[cycle] = (double)(cycled - handled) / 1e6;
    int64_t rest = start + cfg.period_ns - pb_now_ns();
    if (rest > 0)
      PB_CHECK(goro_sleep(rest));
  }
  res.last = pb_memstats();

  for (long i = 0; i < (cfg.measure_reads ? small : cfg.conns); i++)
    PB_CHECK(goro_chan_close(conns[i].inbox));
  PB_CHECK(goro_wg_wait(&exited));
  for (long i = 0; i < cfg.conns; i++) {
    conn *c = &conns[i];
    PB_CHECK(goro_chan_free(c->inbox));
    if (c->growths > res.max_growths)
      res.max_growths = c->growths;
    if (c->shrinks > res.max_shrinks)
      res.max_shrinks = c->shrinks;
    res.mean_growths += (double)c->growths / (double)cfg.conns;
    res.mean_shrinks += (double)c->shrinks / (double)cfg.conns;
    res.below_need += c->below_need;
  }
  if (cfg.cycles > 0) {
    res.cycle_ms_max = pb_quantile(cycle_ms, (size_t)cfg.cycles, 1.0);
    res.cycle_ms_p50 = pb_quantile(cycle_ms, (size_t)cfg.cycles, 0.5);
    res.round_ms_p50 = pb_quantile(round_ms, (size_t)cfg.cycles, 0.5);
  }
  free(cycle_ms);
  free(round_ms);
  return 0;
}

static run_result run(long nconns, long cycles, int64_t period_ns, uint32_t hysteresis,
                      bool measure_reads) {
  goro_stack_policy pol;

  PB_CHECK(goro_get_stack_policy(&pol));
  pol.hysteresis = hysteresis;
  pol.gc_period_ns = 0; /* only the cycles main runs between requests */
  PB_CHECK(goro_set_stack_policy(&pol));
  cfg = (run_config){nconns, cycles, period_ns, measure_reads};
  memset(&res, 0, sizeof res);
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!conns)
    exit(1);
  PB_CHECK(goro_run(run_main, NULL));
  free(conns);
  return res;
}

static void print_row(const char *rule, long nconns, const run_result *r) {
  printf("%-14s %8ld %8llu %9.2f %8llu %9.2f %8llu %10.1f %10.1f %10.1f %10.1f\n", rule, nconns,
         (unsigned long long)r->max_growths, r->mean_growths, (unsigned long long)r->max_shrinks,
         r->mean_shrinks, (unsigned long long)r->below_need, r->round_ms_p50, r->cycle_ms_p50,
         r->cycle_ms_max, pb_mib((long long)r->last.stack_inuse));
}

int main(int argc, char **argv) {
  long nconns = (long)pb_flag(argc, argv, "conns", 20000);
  long cycles = (long)pb_flag(argc, argv, "cycles", 200);
  int64_t period_ns = (int64_t)pb_flag(argc, argv, "period_ms", 50) * 1000000;
  long go_conns = (long)pb_flag(argc, argv, "go_conns", 1000);
  long read_conns = (long)pb_flag(argc, argv, "read_conns", 100000);
  goro_stack_policy defaults;

  if (nconns < 1 || cycles < 1 || go_conns < 1 || read_conns < 1000) {
    fprintf(stderr, "invalid flags: -conns, -cycles and -go_conns must be >= 1,"
                    " -read_conns >= 1000\n");
    return 2;
  }
  PB_CHECK(goro_get_stack_policy(&defaults));
  pb_header("F05 thrashing: connections needing 16 KiB per request, shrink cycles between");
  printf("# %ld cycles, one request per goroutine every %lld ms, goro_gc after each round;"
         " default hysteresis %u\n",
         cycles, (long long)(period_ns / 1000000), defaults.hysteresis);

  run_result reads = run(read_conns, 0, period_ns, defaults.hysteresis, true);
  run_result goro_rule = run(nconns, cycles, period_ns, defaults.hysteresis, false);
  run_result go_rule = run(go_conns, cycles, period_ns, 0, false);

  printf("%-14s %8s %8s %9s %8s %9s %8s %10s %10s %10s %10s\n", "rule", "conns", "max grow",
         "mean grow", "max shr", "mean shr", "below", "round ms", "gc ms p50", "gc ms max",
         "inuse MiB");
  print_row("goro (hold)", nconns, &goro_rule);
  print_row("Go (hyst. 0)", go_conns, &go_rule);

  printf("# live stack histogram at the last cycle (goro rule):\n");
  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++)
    if (goro_rule.last.stack_hist_count[b])
      printf("#   span <= %8llu bytes: %8llu goroutines, %10llu bytes\n",
             (unsigned long long)(4096ULL << b),
             (unsigned long long)goro_rule.last.stack_hist_count[b],
             (unsigned long long)goro_rule.last.stack_hist_bytes[b]);
  printf("%-22s %14s %14s %8s\n", "read", "ns @ 1000", "ns @ 100000", "ratio");
  const char *names[2] = {"goro_read_memstats", "goro_stack_info_self"};
  double ratios[2];
  for (int k = 0; k < 2; k++) {
    ratios[k] = reads.read_ns_full[k] / reads.read_ns_small[k];
    printf("%-22s %14.1f %14.1f %8.2f\n", names[k], reads.read_ns_small[k],
           reads.read_ns_full[k], ratios[k]);
  }

  pb_target(goro_rule.max_growths <= 6,
            "F05 growths per goroutine over %ld cycles: max %llu, mean %.2f (target <= 6;"
            " Go's rule gave max %llu)",
            cycles, (unsigned long long)goro_rule.max_growths, goro_rule.mean_growths,
            (unsigned long long)go_rule.max_growths);
  pb_target(goro_rule.below_need == 0,
            "F05 requests that found their stack shrunk below the 16 KiB they needed: %llu"
            " (target 0)",
            (unsigned long long)goro_rule.below_need);
  uint64_t identity_errors = reads.identity_errors + goro_rule.identity_errors + go_rule.identity_errors;
  uint64_t nreads = reads.reads + goro_rule.reads + go_rule.reads;
  pb_target(identity_errors == 0, "F05 histogram identities: %llu of %llu reads broke one (target 0)",
            (unsigned long long)identity_errors, (unsigned long long)nreads);
  for (int k = 0; k < 2; k++)
    pb_target(ratios[k] <= 2.0, "F05 %s cost at %ld / at 1000 goroutines: %.2fx (target <= 2x)",
              names[k], read_conns, ratios[k]);
  return pb_exit_status();
}
