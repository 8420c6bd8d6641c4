/*
 * f01_request_goroutines: a goroutine per request, each running 8 nested
 * calls with about 4 KiB of locals per frame (peak about 32 KiB), then
 * exiting. Go regrows such stacks on every request (morestack at 7-12 % of
 * CPU in production); goro should reuse warm slots instead.
 *
 *   f01_request_goroutines [-requests N] [-warmup N] [-batch N] [-rounds N]
 *
 * For 1 worker and for every CPU, each round runs the same request stream
 * twice, once with plain goro_spawn and once with a 32 KiB stack_hint, in
 * alternating order, each in a fresh goro_run. Main spawns requests in
 * batches of -batch and waits for each batch with a wait group. After
 * -warmup requests it measures time per request, minor page faults of the
 * whole process, goro's growth counter and the slot caches. One more,
 * untimed run per worker count has each request read its thread's fault
 * counter before and after its work, which counts the requests that
 * committed a fresh stack page.
 *
 * Targets:
 *  - at most 1 % of requests fault a page in (the counted run);
 *  - the time per request without a hint is within 1.2x of the hinted
 *    run's, taken as the median over rounds of the ratio within each round
 *    so that drift between rounds cancels;
 *  - the stack arena's resident memory, sampled 10 times a run, stays
 *    within the library's cache bound: it does not grow with the number of
 *    requests.
 */
#include "policy_bench.h"

#define FRAMES 8
#define FRAME_BYTES 4000

typedef struct run_config {
  long requests, warmup, batch;
  size_t hint;
  bool count_faults; /* count faulting requests (two getrusage calls each) */
} run_config;

typedef struct run_result {
  double ns_per_request;
  long faults;          /* minor faults of the process while measuring */
  long faulted;         /* requests that faulted a page in (count_faults) */
  uint64_t growths;     /* goro's growth counter while measuring */
  long long cache_max;  /* largest stack_cache seen after a batch, bytes */
  long long arena_max;  /* largest arena resident size of 10 samples */
  uint64_t slots_cached_max;
  long long arena_half, arena_after;
} run_result;

static goro_waitgroup done = GORO_WAITGROUP_INIT;
static volatile unsigned sink;

/* One of the 8 nested calls: writes one byte per cache line of its locals
 * and reads them back after the deeper call, so nothing is optimized out. */
static __attribute__((noinline)) unsigned nested(int level) {
  volatile unsigned char locals[FRAME_BYTES];
  unsigned sum = 0;

  for (int i = 0; i < FRAME_BYTES; i += 64)
    locals[i] = (unsigned char)(i + level);
  if (level + 1 < FRAMES)
    sum = nested(level + 1);
  for (int i = 0; i < FRAME_BYTES; i += 64)
    sum += locals[i];
  return sum;
}

static long faulted_requests;
static bool counting;

static long thread_faults(void) { return pb_minflt(RUSAGE_THREAD); }

/* A request never parks inside nested(), so it runs on one thread and the
 * thread's fault counter covers exactly its own faults. */
static void request(void *arg) {
  (void)arg;
  if (!counting) {
    sink += nested(0);
  } else {
    long faults0 = thread_faults();
    sink += nested(0);
    if (thread_faults() > faults0)
      __atomic_add_fetch(&faulted_requests, 1, __ATOMIC_RELAXED);
  }
  goro_wg_done(&done);
}

static void run_batches(const run_config *cfg, long count, run_result *res) {
  goro_spawn_opts opts = {.size = sizeof opts, .stack_hint = cfg->hint};
  long sample_every = count / 5 > cfg->batch ? count / 5 : cfg->batch;

  for (long sent = 0; sent < count; sent += cfg->batch) {
    long n = count - sent < cfg->batch ? count - sent : cfg->batch;
    PB_CHECK(goro_wg_add(&done, n));
    for (long i = 0; i < n; i++)
      PB_CHECK(goro_spawn_with(request, NULL, &opts));
    PB_CHECK(goro_wg_wait(&done));
    if (res) {
      goro_memstats s = pb_memstats();
      if ((long long)s.stack_cache > res->cache_max)
        res->cache_max = (long long)s.stack_cache;
      if (s.slots_cached > res->slots_cached_max)
        res->slots_cached_max = s.slots_cached;
      if (sent % sample_every < cfg->batch) {
        long long arena = pb_mapping_rss(pb_arena_address());
        if (arena > res->arena_max)
          res->arena_max = arena;
      }
    }
  }
}

static run_config *cur_cfg;
static run_result cur_res;

static int run_main(void *arg) {
  const run_config *cfg = cur_cfg;
  uintptr_t arena = pb_arena_address();
  (void)arg;

  counting = cfg->count_faults;
  run_batches(cfg, cfg->warmup, NULL);
  __atomic_store_n(&faulted_requests, 0, __ATOMIC_RELAXED);

  goro_memstats before = pb_memstats();
  long faults0 = pb_minflt(RUSAGE_SELF);
  int64_t t0 = pb_now_ns();
  run_batches(cfg, cfg->requests / 2, &cur_res);
  cur_res.arena_half = pb_mapping_rss(arena);
  run_batches(cfg, cfg->requests - cfg->requests / 2, &cur_res);
  int64_t t1 = pb_now_ns();
  long faults1 = pb_minflt(RUSAGE_SELF);
  goro_memstats after = pb_memstats();

  cur_res.ns_per_request = (double)(t1 - t0) / (double)cfg->requests;
  cur_res.faults = faults1 - faults0;
  cur_res.growths = after.stack_growths - before.stack_growths;
  cur_res.arena_after = pb_mapping_rss(arena);
  cur_res.faulted = __atomic_load_n(&faulted_requests, __ATOMIC_RELAXED);
  return 0;
}

static run_result run_once(run_config *cfg) {
  memset(&cur_res, 0, sizeof cur_res);
  cur_cfg = cfg;
  PB_CHECK(goro_run(run_main, NULL));
  return cur_res;
}

int main(int argc, char **argv) {
  long requests = (long)pb_flag(argc, argv, "requests", 200000);
  long warmup = (long)pb_flag(argc, argv, "warmup", 20000);
  long batch = (long)pb_flag(argc, argv, "batch", 100);
  int rounds = (int)pb_flag(argc, argv, "rounds", 11);
  int all = (int)sysconf(_SC_NPROCESSORS_ONLN);
  int procs_list[2] = {1, all};

  if (rounds < 1 || rounds > 32 || requests < 1 || batch < 1) {
    fprintf(stderr, "invalid flags: -rounds 1..32, -requests and -batch >= 1\n");
    return 2;
  }
  pb_header("F01 per-request goroutines: warm slots versus a 32 KiB spawn hint");
  printf("# %ld requests measured after %ld warm-up, batches of %ld, %d rounds;"
         " each request: %d nested frames of %d bytes\n",
         requests, warmup, batch, rounds, FRAMES, FRAME_BYTES);
  printf("%-7s %-5s %-5s %10s %9s %8s %11s %12s %12s %12s %12s\n", "workers", "round", "hint",
         "ns/request", "faults", "growths", "cache max", "slots max", "arena half", "arena end",
         "arena max");

  for (int pi = 0; pi < (all > 1 ? 2 : 1); pi++) {
    int procs = procs_list[pi];
    double plain[32], hinted[32], ratios[32];
    long worst_faults = 0;
    long long worst_arena = 0;

    PB_CHECK(goro_set_maxprocs(procs));
    for (int r = 0; r < rounds; r++) {
      for (int k = 0; k < 2; k++) {
        /* Alternate which variant goes first, so drift hits both. */
        bool with_hint = (k == 0) == (r % 2 == 1);
        run_config cfg = {requests, warmup, batch, with_hint ? (size_t)32 << 10 : 0, false};
        run_result res = run_once(&cfg);

        printf("%-7d %-5d %-5s %10.0f %9ld %8llu %8.2f MiB %12llu %8.2f MiB %8.2f MiB %8.2f MiB\n",
               procs,
               r, with_hint ? "32K" : "none", res.ns_per_request, res.faults,
               (unsigned long long)res.growths, pb_mib(res.cache_max),
               (unsigned long long)res.slots_cached_max, pb_mib(res.arena_half),
               pb_mib(res.arena_after), pb_mib(res.arena_max));
        (with_hint ? hinted : plain)[r] = res.ns_per_request;
        if (!with_hint && res.faults > worst_faults)
          worst_faults = res.faults;
        if (res.arena_max > worst_arena)
          worst_arena = res.arena_max;
      }
    }

    for (int r = 0; r < rounds; r++)
      ratios[r] = plain[r] / hinted[r];
    /* One more run without a hint, with every request counting its own
     * faults, untimed. */
    run_config counted = {requests, warmup, batch, 0, true};
    run_result c = run_once(&counted);
    double ratio = pb_quantile(ratios, (size_t)rounds, 0.5);
    printf("# workers=%d counted run: %ld of %ld requests faulted a page in (%ld minor faults);"
           " timed runs without a hint: at most %ld minor faults\n",
           procs, c.faulted, requests, c.faults, worst_faults);
    pb_target(c.faulted <= requests / 100,
              "F01 workers=%d requests that faulted stack pages in after warm-up: %ld of %ld"
              " (%.3f %%, target <= 1 %%)",
              procs, c.faulted, requests, 100.0 * (double)c.faulted / (double)requests);
    pb_target(ratio <= 1.2,
              "F01 workers=%d time per request, no hint / 32 KiB hint: median of %d paired ratios %.3fx"
              " (median times %.0f / %.0f ns, target <= 1.20x)",
              procs, rounds, ratio, pb_quantile(plain, (size_t)rounds, 0.5),
              pb_quantile(hinted, (size_t)rounds, 0.5));
    pb_target(worst_arena <= pb_cache_bound(procs),
              "F01 workers=%d stack arena resident, largest of 10 samples per run: %.2f MiB"
              " (target <= cache bound %.2f MiB)",
              procs, pb_mib(worst_arena), pb_mib(pb_cache_bound(procs)));
  }
  return pb_exit_status();
}
