/*
 * f06_burst_release: a burst of goroutines that each touch 1.5 KiB of
 * stack and block on one gate channel. Then the gate closes, all exit, and
 * the program calls goro_free_os_memory. Go kept the memory of dead
 * goroutines, and gccgo and transparent huge pages refilled released
 * memory. goro should give it all back and keep it back.
 *
 *   f06_burst_release [-goroutines N] [-rounds N] [-idle_s N]
 *
 * The case idles 60 s after the last round; the default here is 5 s so that
 * `make bench-policy` stays short. Pass -idle_s 60 for the full case.
 *
 * Memory is read three ways: goro_read_memstats, the process's VmRSS, and
 * the resident bytes of the stack arena mapping (from /proc/self/smaps),
 * which also shows whether any of it is backed by huge pages.
 *
 * Targets:
 *  - during the burst, stack_inuse per goroutine is one page (within 10 %);
 *  - after the release, stack_inuse is 0 apart from the main goroutine that
 *    runs the program, stack_sys is within the cache bound and VmRSS within
 *    baseline + cache bound + 10 MiB;
 *  - VmRSS after each round is within 5 % of its value after the first;
 *  - while idle, VmRSS never rises more than 1 MiB above its post-release
 *    value, and no huge page backs the arena.
 */
#include "policy_bench.h"

#define TOUCH 1536

static goro_chan *gate;
static goro_waitgroup parked = GORO_WAITGROUP_INIT;
static goro_waitgroup exited = GORO_WAITGROUP_INIT;
static volatile unsigned sink;

static __attribute__((noinline)) void blocked(void *arg) {
  volatile unsigned char touch[TOUCH];
  (void)arg;

  for (int i = 0; i < TOUCH; i += 64)
    touch[i] = (unsigned char)i;
  goro_wg_done(&parked);
  if (goro_chan_recv(gate, NULL) != GORO_ECLOSED)
    exit(1);
  sink += touch[0];
  goro_wg_done(&exited);
}

typedef struct settings {
  long goroutines;
  int rounds, idle_s;
} settings;

static settings set;

static int run_main(void *arg) {
  uintptr_t arena = pb_arena_address();
  long long baseline = pb_rss();
  long long first_after = 0, worst_ratchet = 0, idle_max = 0, worst_rss_excess = 0;
  long long worst_sys = 0, huge = 0;
  uint64_t worst_inuse_after = 0;
  double worst_page_error = 0;
  int workers = (int)pb_memstats().maxprocs;
  long long bound = pb_cache_bound(workers);
  (void)arg;

  printf("# baseline VmRSS %.2f MiB, arena %.2f MiB; cache bound %.2f MiB for %d workers\n",
         pb_mib(baseline), pb_mib(pb_mapping_rss(arena)), pb_mib(bound), workers);
  printf("%-5s %9s %10s %13s %11s %11s | %10s %9s %9s %9s %11s %11s %9s\n", "round", "spawn ms",
         "inuse MiB", "inuse/g bytes", "VmRSS MiB", "arena MiB", "free ms", "inuse", "cache MiB",
         "meta MiB", "stack_sys MiB", "VmRSS MiB", "arena MiB");

  for (int round = 0; round < set.rounds; round++) {
    PB_CHECK(goro_chan_make(&gate, 0, 0));
    PB_CHECK(goro_wg_add(&parked, set.goroutines));
    PB_CHECK(goro_wg_add(&exited, set.goroutines));
    int64_t t0 = pb_now_ns();
    for (long i = 0; i < set.goroutines; i++)
      PB_CHECK(goro_spawn(blocked, NULL));
    PB_CHECK(goro_wg_wait(&parked));
    int64_t t1 = pb_now_ns();
    PB_CHECK(goro_sleep(1000000)); /* the last ones park after their wg_done */
    goro_memstats burst = pb_memstats();
    long long burst_rss = pb_rss(), burst_arena = pb_mapping_rss(arena);
    long long h = pb_mapping_field(arena, "AnonHugePages");
    if (h > huge)
      huge = h;

    PB_CHECK(goro_chan_close(gate));
    PB_CHECK(goro_wg_wait(&exited));
    PB_CHECK(goro_chan_free(gate));
    /* A goroutine's wg_done comes before its slot is freed on the
     * scheduler: wait until the exits are complete. */
    for (int i = 0; i < 1000 && pb_memstats().goroutines > 1; i++)
      PB_CHECK(goro_sleep(1000000));
    int64_t t2 = pb_now_ns();
    PB_CHECK(goro_free_os_memory());
    int64_t t3 = pb_now_ns();
    goro_stack_info self;
    PB_CHECK(goro_stack_info_self(&self));
    goro_memstats after = pb_memstats();
    long long rss = pb_rss(), arena_rss = pb_mapping_rss(arena);

    /* The main goroutine is alive and counted: leave its span out. */
    double per_g = (double)(burst.stack_inuse - after.stack_inuse) / (double)set.goroutines;
    printf("%-5d %9.0f %10.1f %13.0f %11.1f %11.1f | %10.1f %9llu %9.2f %9.2f %11.2f %11.1f %9.2f\n",
           round, (double)(t1 - t0) / 1e6, pb_mib((long long)burst.stack_inuse), per_g,
           pb_mib(burst_rss), pb_mib(burst_arena), (double)(t3 - t2) / 1e6,
           (unsigned long long)(after.stack_inuse), pb_mib((long long)after.stack_cache),
           pb_mib((long long)after.stack_meta), pb_mib((long long)after.stack_sys), pb_mib(rss),
           pb_mib(arena_rss));

    double error = per_g / 4096.0 - 1.0;
    if (error < 0)
      error = -error;
    if (error > worst_page_error)
      worst_page_error = error;
    /* Only the main goroutine's stack may remain in use. */
    uint64_t others = after.stack_inuse - self.current;
    if (after.goroutines != 1)
      others = UINT64_MAX;
    if (others > worst_inuse_after)
      worst_inuse_after = others;
    if ((long long)after.stack_sys > worst_sys)
      worst_sys = (long long)after.stack_sys;
    if (rss - baseline > worst_rss_excess)
      worst_rss_excess = rss - baseline;
    if (round == 0)
      first_after = rss;
    else if (rss - first_after > worst_ratchet)
      worst_ratchet = rss - first_after;
  }

  long long released = pb_rss();
  printf("# idle %d s after the last round: VmRSS, arena resident (MiB) each second:\n#", set.idle_s);
  for (int s = 0; s < set.idle_s; s++) {
    PB_CHECK(goro_sleep(1000000000));
    long long rss = pb_rss();
    if (rss - released > idle_max)
      idle_max = rss - released;
    printf(" %.1f/%.2f", pb_mib(rss), pb_mib(pb_mapping_rss(arena)));
    fflush(stdout);
  }
  printf("\n");
  long long h = pb_mapping_field(arena, "AnonHugePages");
  if (h > huge)
    huge = h;

  pb_target(worst_page_error <= 0.10,
            "F06 stack_inuse per blocked goroutine during the burst: within %.1f %% of one page"
            " (target <= 10 %%)",
            100 * worst_page_error);
  pb_target(worst_inuse_after == 0,
            "F06 stack_inuse after release, less the main goroutine's own span: %llu bytes"
            " (target 0)",
            (unsigned long long)worst_inuse_after);
  pb_target(worst_sys <= bound, "F06 stack_sys after release: %.2f MiB (target <= cache bound %.2f MiB)",
            pb_mib(worst_sys), pb_mib(bound));
  pb_target(worst_rss_excess <= bound + (10 << 20),
            "F06 VmRSS after release: baseline + %.2f MiB (target <= cache bound + 10 MiB = %.2f MiB)",
            pb_mib(worst_rss_excess), pb_mib(bound + (10 << 20)));
  pb_target(worst_ratchet <= first_after / 20,
            "F06 ratchet across %d rounds: VmRSS after release at most %.2f MiB above round 0's"
            " %.2f MiB (target <= 5 %%)",
            set.rounds, pb_mib(worst_ratchet), pb_mib(first_after));
  pb_target(idle_max <= (1 << 20) && huge == 0,
            "F06 idle %d s: VmRSS rose at most %.2f MiB above its post-release value (target <= 1 MiB);"
            " arena huge pages %lld bytes (target 0)",
            set.idle_s, pb_mib(idle_max), huge);
  return 0;
}

int main(int argc, char **argv) {
  set.goroutines = (long)pb_flag(argc, argv, "goroutines", 600000);
  set.rounds = (int)pb_flag(argc, argv, "rounds", 5);
  set.idle_s = (int)pb_flag(argc, argv, "idle_s", 5);
  if (set.goroutines < 1 || set.rounds < 1 || set.idle_s < 0) {
    fprintf(stderr, "invalid flags: -goroutines and -rounds >= 1, -idle_s >= 0\n");
    return 2;
  }
  pb_header("F06 a burst of blocked goroutines, then goro_free_os_memory");
  printf("# %ld goroutines touch %d bytes of stack each and block on one gate; %d rounds\n",
         set.goroutines, TOUCH, set.rounds);
  PB_CHECK(goro_run(run_main, NULL));
  return pb_exit_status();
}
