/*
 * f07_churn_cache: spawn/exit churn with random stack peaks, then a quiet
 * period; and Go's own bound test for stack memory.
 *
 *   f07_churn_cache [-cycles N] [-alive N] [-live_s N] [-batches N]
 *
 * Churn: -cycles goroutines are spawned, at most -alive at once. Main puts
 * a token into a buffered channel per spawn and each goroutine takes one
 * out as it exits. Each recurses with 1 KiB frames to a random peak of 4-64 KiB,
 * writing a pattern into every frame and checking it on the way back, so
 * two goroutines sharing a stack would show up as a corrupted frame. Two
 * variants:
 *   park-at-peak  yields at its peak, so goro observes the growth there;
 *   exit-unparked returns from its peak and yields only at its shallow
 *                 start, so goro never observes the peak before the exit.
 * Then the load drops to 10 goroutines that sleep 1 ms in a loop for
 * -live_s seconds, and the program samples the slot caches every 50 ms:
 * stack_cache as goro reports it and the resident bytes of the stack arena
 * mapping, as the kernel reports them.
 *
 * Bound test: -batches batches of 32 goroutines, each recursing 128 levels
 * with 1 KiB frames and sleeping 1 ms at the bottom; a batch ends when all
 * 32 have exited.
 *
 * Targets: no corrupted frame; after the load drops, stack_cache and the
 * arena's resident bytes (less the live goroutines' spans) come down to the
 * cache bound within 1.5 s (the case asks for about 1 s); in the bound
 * test stack_sys grows by at most 32 MiB and stack_inuse is at most 4 MiB
 * once all have exited.
 */
#include "policy_bench.h"

#define FRAME 1024

typedef struct churn_config {
  long cycles, alive;
  int live_s;
  bool park_at_peak;
} churn_config;

static churn_config cc;
static goro_chan *tokens;
static goro_waitgroup exited = GORO_WAITGROUP_INIT;
static uint64_t corrupted;
static volatile int live_stop;

/* Recurses with FRAME-byte frames to stop. Each frame contains a pattern
 * made from seed and its depth, and the function returns how many frames
 * it found changed on the way back. */
static __attribute__((noinline)) unsigned descend(uintptr_t stop, uint64_t seed, int depth,
                                                  bool park) {
  volatile uint64_t frame[FRAME / sizeof(uint64_t)];
  uint64_t mark = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)depth;
  unsigned bad = 0;

  frame[0] = mark;
  frame[FRAME / sizeof(uint64_t) - 1] = ~mark;
  if ((uintptr_t)__builtin_frame_address(0) > stop)
    bad = descend(stop, seed, depth + 1, park);
  else if (park)
    goro_yield();
  if (frame[0] != mark || frame[FRAME / sizeof(uint64_t) - 1] != ~mark)
    bad++;
  return bad;
}

static void churner(void *arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg;
  uint64_t x = seed * 0x2545f4914f6cdd1dULL + 1;
  uintptr_t lo, top;

  x ^= x >> 29;
  size_t peak = (4 << 10) + (size_t)(x % ((60 << 10) + 1));
  PB_CHECK(goro_stack_bounds(&lo, &top));
  if (!cc.park_at_peak)
    goro_yield();
  unsigned bad = descend(top - peak, seed, 0, cc.park_at_peak);
  if (bad)
    __atomic_add_fetch(&corrupted, bad, __ATOMIC_RELAXED);
  PB_CHECK(goro_chan_recv(tokens, NULL));
  goro_wg_done(&exited);
}

static void live_loop(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&live_stop, __ATOMIC_ACQUIRE))
    PB_CHECK(goro_sleep(1000000));
  goro_wg_done(&exited);
}

typedef struct churn_result {
  double ns_per_cycle;
  long long cache_at_drop, arena_at_drop, peak_cache, peak_arena;
  double cache_settle_s, arena_settle_s; /* -1: never within the run */
  long long cache_end, arena_end;
  uint64_t corrupted;
} churn_result;

static churn_result cr;

static int churn_main(void *arg) {
  uintptr_t arena = pb_arena_address();
  int workers = (int)pb_memstats().maxprocs;
  long long bound = pb_cache_bound(workers);
  (void)arg;

  PB_CHECK(goro_chan_make(&tokens, 0, (size_t)cc.alive));
  PB_CHECK(goro_wg_add(&exited, cc.cycles));
  int64_t t0 = pb_now_ns();
  for (long i = 0; i < cc.cycles; i++) {
    PB_CHECK(goro_chan_send(tokens, NULL));
    PB_CHECK(goro_spawn(churner, (void *)(uintptr_t)(i + 1)));
  }
  PB_CHECK(goro_wg_wait(&exited));
  int64_t dropped = pb_now_ns();
  cr.ns_per_cycle = (double)(dropped - t0) / (double)cc.cycles;

  /* The load drops to 10 live goroutines. */
  __atomic_store_n(&live_stop, 0, __ATOMIC_RELEASE);
  PB_CHECK(goro_wg_add(&exited, 10));
  for (int i = 0; i < 10; i++)
    PB_CHECK(goro_spawn(live_loop, NULL));
  cr.cache_settle_s = cr.arena_settle_s = -1;
  printf("# %s: t(s) stack_cache MiB / arena resident less live spans MiB, every 0.5 s:\n#",
         cc.park_at_peak ? "park-at-peak" : "exit-unparked");
  for (int tick = 0; tick <= cc.live_s * 20; tick++) {
    goro_memstats s = pb_memstats();
    long long cache = (long long)s.stack_cache;
    long long resident = pb_mapping_rss(arena) - (long long)s.stack_inuse;
    double t = (double)(pb_now_ns() - dropped) / 1e9;
    if (tick == 0) {
      cr.cache_at_drop = cache;
      cr.arena_at_drop = resident;
    }
    if (cache > cr.peak_cache)
      cr.peak_cache = cache;
    if (resident > cr.peak_arena)
      cr.peak_arena = resident;
    if (cache <= bound && cr.cache_settle_s < 0)
      cr.cache_settle_s = t;
    if (cache > bound)
      cr.cache_settle_s = -1;
    if (resident <= bound && cr.arena_settle_s < 0)
      cr.arena_settle_s = t;
    if (resident > bound)
      cr.arena_settle_s = -1;
    cr.cache_end = cache;
    cr.arena_end = resident;
    if (tick % 10 == 0)
      printf(" %.1f:%.1f/%.1f", t, pb_mib(cache), pb_mib(resident));
    PB_CHECK(goro_sleep(50 * 1000 * 1000));
  }
  printf("\n");
  __atomic_store_n(&live_stop, 1, __ATOMIC_RELEASE);
  PB_CHECK(goro_wg_wait(&exited));
  PB_CHECK(goro_chan_free(tokens));
  cr.corrupted = __atomic_load_n(&corrupted, __ATOMIC_RELAXED);
  return 0;
}

/* ---- Go's bound test ---------------------------------------------------- */

typedef struct bound_result {
  long long sys_before, sys_max, sys_after;
  long long inuse_after, arena_after;
} bound_result;

static bound_result br;
static long batches;

static __attribute__((noinline)) unsigned recurse_levels(int levels) {
  volatile unsigned char frame[FRAME];

  frame[0] = (unsigned char)levels;
  frame[FRAME - 1] = (unsigned char)(levels >> 1);
  if (levels == 0) {
    PB_CHECK(goro_sleep(1000000));
    return frame[0];
  }
  return recurse_levels(levels - 1) + frame[FRAME - 1];
}

static volatile unsigned sink;

static void batch_member(void *arg) {
  (void)arg;
  sink += recurse_levels(128);
  goro_wg_done(&exited);
}

static int bound_main(void *arg) {
  uintptr_t arena = pb_arena_address();
  goro_stack_info self;
  (void)arg;

  br.sys_before = (long long)pb_memstats().stack_sys;
  br.sys_max = br.sys_before;
  for (long b = 0; b < batches; b++) {
    PB_CHECK(goro_wg_add(&exited, 32));
    for (int i = 0; i < 32; i++)
      PB_CHECK(goro_spawn(batch_member, NULL));
    PB_CHECK(goro_wg_wait(&exited));
    goro_memstats s = pb_memstats();
    if ((long long)s.stack_sys > br.sys_max)
      br.sys_max = (long long)s.stack_sys;
  }
  /* A goroutine's wg_done comes before its slot is freed on the scheduler:
   * wait until the exits are complete. */
  for (int i = 0; i < 1000 && pb_memstats().goroutines > 1; i++)
    PB_CHECK(goro_sleep(1000000));
  PB_CHECK(goro_stack_info_self(&self));
  goro_memstats s = pb_memstats();
  br.sys_after = (long long)s.stack_sys;
  br.inuse_after = (long long)(s.stack_inuse - self.current);
  br.arena_after = pb_mapping_rss(arena);
  return 0;
}

int main(int argc, char **argv) {
  long cycles = (long)pb_flag(argc, argv, "cycles", 1000000);
  long alive = (long)pb_flag(argc, argv, "alive", 10000);
  int live_s = (int)pb_flag(argc, argv, "live_s", 10);
  batches = (long)pb_flag(argc, argv, "batches", 256);
  int workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
  long long bound = pb_cache_bound(workers);

  if (cycles < 1 || alive < 1 || live_s < 1 || batches < 1) {
    fprintf(stderr, "invalid flags: -cycles, -alive, -live_s and -batches must be >= 1\n");
    return 2;
  }
  pb_header("F07 spawn/exit churn with random peaks, then a quiet period; Go's bound test");
  printf("# churn: %ld goroutines, at most %ld alive, peaks 4-64 KiB in %d-byte frames;"
         " then 10 live goroutines for %d s; cache bound %.2f MiB\n",
         cycles, alive, FRAME, live_s, pb_mib(bound));

  churn_result results[2];
  const char *names[2] = {"park-at-peak", "exit-unparked"};
  for (int v = 0; v < 2; v++) {
    cc = (churn_config){cycles, alive, live_s, v == 0};
    memset(&cr, 0, sizeof cr);
    corrupted = 0;
    PB_CHECK(goro_run(churn_main, NULL));
    results[v] = cr;
  }
  printf("%-14s %9s %10s %12s %12s %12s %12s %10s %10s %9s\n", "variant", "ns/cycle",
         "corrupted", "cache@drop", "arena@drop", "cache end", "arena end", "cache ok", "arena ok",
         "(MiB, s)");
  for (int v = 0; v < 2; v++) {
    churn_result *r = &results[v];
    printf("%-14s %9.0f %10llu %12.2f %12.2f %12.2f %12.2f %10.2f %10.2f\n", names[v],
           r->ns_per_cycle, (unsigned long long)r->corrupted, pb_mib(r->cache_at_drop),
           pb_mib(r->arena_at_drop), pb_mib(r->cache_end), pb_mib(r->arena_end),
           r->cache_settle_s, r->arena_settle_s);
  }

  PB_CHECK(goro_run(bound_main, NULL));
  printf("# bound test: %ld batches of 32 goroutines, 128 levels of %d-byte frames\n", batches,
         FRAME);
  printf("%-22s %12s %12s %12s %16s %14s\n", "", "sys before", "sys max", "sys after",
         "inuse after", "arena after");
  printf("%-22s %12.2f %12.2f %12.2f %16.2f %14.2f   (MiB)\n", "bound test", pb_mib(br.sys_before),
         pb_mib(br.sys_max), pb_mib(br.sys_after), pb_mib(br.inuse_after), pb_mib(br.arena_after));

  for (int v = 0; v < 2; v++) {
    churn_result *r = &results[v];
    pb_target(r->corrupted == 0, "F07 %s: %llu corrupted frames in %ld goroutines (target 0)",
              names[v], (unsigned long long)r->corrupted, cycles);
    pb_target(r->cache_settle_s >= 0 && r->cache_settle_s <= 1.5,
              "F07 %s: stack_cache within the cache bound %.2fs after the load dropped"
              " (from %.2f MiB; target <= 1.5 s, -1 = not within %d s)",
              names[v], r->cache_settle_s, pb_mib(r->cache_at_drop), live_s);
    pb_target(r->arena_settle_s >= 0 && r->arena_settle_s <= 1.5,
              "F07 %s: resident free-slot memory within the cache bound %.2fs after the load"
              " dropped (from %.2f MiB, %.2f MiB at the end; target <= 1.5 s, -1 = not within %d s)",
              names[v], r->arena_settle_s, pb_mib(r->arena_at_drop), pb_mib(r->arena_end), live_s);
  }
  pb_target(br.sys_max - br.sys_before <= (32LL << 20),
            "F07 bound test: stack_sys grew %.2f MiB (target <= 32 MiB)",
            pb_mib(br.sys_max - br.sys_before));
  pb_target(br.inuse_after <= (4LL << 20),
            "F07 bound test: stack_inuse after all exited %.2f MiB, less main's span (target <= 4 MiB)",
            pb_mib(br.inuse_after));
  return pb_exit_status();
}
