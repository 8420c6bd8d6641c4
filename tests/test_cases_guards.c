/*
 * Guards at scale. Runtimes that make each guard page with mprotect split
 * their stack mapping twice per stack and stop near 32,000 stacks under
 * Linux's default vm.max_map_count of 65530. goro's MADV_GUARD_INSTALL
 * guards are page-table markers that add no mapping, so a million parked
 * goroutines are all guarded with a handful of mappings.
 *
 * The mprotect fallback for kernels before 6.13 (GORODEBUG=guardmode=
 * mprotect) must fail a spawn with GORO_EMAPLIMIT when its guard budget is
 * spent, without harming the goroutines already running, or run unguarded
 * only when goro_allow_unguarded(true) allows it.
 */
#include "stack_check.h"

#include <fcntl.h>

#define GUARD_PAGES (GUARD_BYTES / PAGE_BYTES)

static goro_chan *gate;     /* parked goroutines wait on it; closing releases them */
static goro_waitgroup started = GORO_WAITGROUP_INIT;
static goro_waitgroup finished = GORO_WAITGROUP_INIT;
static uintptr_t *stack_lo; /* each parked goroutine's goro_stack_bounds lo */

static uint64_t finished_count;

static void parked_goroutine(void *arg) {
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  stack_lo[(uintptr_t)arg] = lo;
  CHECK_OK(goro_wg_done(&started));
  CHECK_EQ(goro_chan_recv(gate, NULL), GORO_ECLOSED);
  __atomic_fetch_add(&finished_count, 1, __ATOMIC_RELAXED);
  CHECK_OK(goro_wg_done(&finished));
}

static goro_memstats read_stats(void) {
  goro_memstats s = {.size = sizeof s};
  CHECK_OK(goro_read_memstats(&s));
  return s;
}

/* Returns how many of the GUARD_PAGES pages below lo /proc/self/pagemap
 * marks as guard pages (bit 58).
 * NOTE: kernels that have MADV_GUARD_INSTALL but predate the pagemap guard
 * bit (kernel commit 8e2f2aeb8b48) report 0 here for real guards. */
static int guard_pages_marked(int pagemap_fd, uintptr_t lo) {
  uint64_t entries[GUARD_PAGES];
  off_t offset = (off_t)((lo - GUARD_BYTES) / PAGE_BYTES * sizeof entries[0]);
  int marked = 0;

  if (pread(pagemap_fd, entries, sizeof entries, offset) != (ssize_t)sizeof entries)
    FAIL("reading /proc/self/pagemap at %#lx: %s", (unsigned long)(lo - GUARD_BYTES),
         strerror(errno));
  for (size_t i = 0; i < GUARD_PAGES; i++)
    marked += (int)((entries[i] >> 58) & 1);
  return marked;
}

/* Counts the mappings that overlap the first n goroutines' stacks and the
 * guards below them, from the lowest guard to the lowest page of the
 * highest stack. */
static long count_mappings_among_stacks(size_t n) {
  uintptr_t lowest = UINTPTR_MAX, highest = 0;

  for (size_t i = 0; i < n; i++) {
    lowest = stack_lo[i] < lowest ? stack_lo[i] : lowest;
    highest = stack_lo[i] > highest ? stack_lo[i] : highest;
  }
  return count_mappings_in(lowest - GUARD_BYTES, highest + PAGE_BYTES);
}

static void note_max_map_count(void) {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long limit = 0;

  if (!f || fscanf(f, "%ld", &limit) != 1)
    FAIL("cannot read /proc/sys/vm/max_map_count");
  fclose(f);
  if (limit != 65530)
    fprintf(stderr, "note: vm.max_map_count is %ld, not the default 65530; the mapping count "
                    "check below still holds for any value\n", limit);
}

/* ---- Parked goroutines with MADV_GUARD_INSTALL guards ----------------- */

typedef struct parked_run {
  size_t goroutines;
  int release;        /* close the gate and wait for every goroutine to finish */
  int no_auto_cycles; /* turn automatic shrink cycles off */
} parked_run;

static int parked_main(void *arg) {
  parked_run *run = arg;
  int64_t t0 = harness_now_ns();

  if (run->no_auto_cycles) {
    goro_stack_policy policy = {.size = sizeof policy};
    CHECK_OK(goro_get_stack_policy(&policy));
    policy.gc_period_ns = 0;
    CHECK_OK(goro_set_stack_policy(&policy));
  }
  note_max_map_count();
  stack_lo = calloc(run->goroutines, sizeof *stack_lo);
  CHECK(stack_lo != NULL);
  CHECK_OK(goro_chan_make(&gate, 0, 0));

  for (size_t i = 0; i < run->goroutines; i++) {
    CHECK_OK(goro_wg_add(&started, 1));
    CHECK_OK(goro_wg_add(&finished, 1));
    int64_t id = goro_spawn(parked_goroutine, (void *)(uintptr_t)i);
    if (id < 0)
      FAIL("spawn %zu of %zu failed: %s", i, run->goroutines, goro_strerror((int)id));
  }
  CHECK_OK(goro_wg_wait(&started));
  int64_t t1 = harness_now_ns();

  goro_memstats s = read_stats();
  long mappings = count_mappings();
  long among_stacks = count_mappings_among_stacks(run->goroutines);
  fprintf(stderr,
          "%zu parked goroutines in %.1f s: guards %llu, slots %llu, mappings %ld (%ld among "
          "the stacks)\n",
          run->goroutines, (double)(t1 - t0) / 1e9, (unsigned long long)s.guards,
          (unsigned long long)s.slots_carved, mappings, among_stacks);

  if (s.goroutines < run->goroutines)
    FAIL("memstats counts %llu goroutines, %zu are parked", (unsigned long long)s.goroutines,
         run->goroutines);
  if (s.guards < s.goroutines)
    FAIL("%llu guards for %llu goroutines", (unsigned long long)s.guards,
         (unsigned long long)s.goroutines);
  CHECK_EQ(s.unguarded_slots, 0);
  /* TSan makes four mappings of its own for each goroutine, so under TSan
   * only the mappings among the stacks are bounded. */
  if (!harness_under("tsan") && mappings >= 1000)
    FAIL("%ld memory mappings with %zu goroutines parked, expected under 1000", mappings,
         run->goroutines);
  if (among_stacks >= 1000)
    FAIL("%ld memory mappings among the stacks of %zu parked goroutines, expected under 1000",
         among_stacks, run->goroutines);

  /* The counters report every slot guarded, and the page tables must agree. */
  int pagemap = open("/proc/self/pagemap", O_RDONLY);
  if (pagemap < 0)
    FAIL("open /proc/self/pagemap: %s", strerror(errno));
  for (size_t i = 0; i < run->goroutines; i++) {
    int marked = guard_pages_marked(pagemap, stack_lo[i]);
    if (marked != (int)GUARD_PAGES)
      FAIL("goroutine %zu (stack lo %#lx): %d of the %d pages below its stack are guards", i,
           (unsigned long)stack_lo[i], marked, (int)GUARD_PAGES);
  }
  close(pagemap);

  if (run->release) {
    CHECK_OK(goro_chan_close(gate));
    CHECK_OK(goro_wg_wait(&finished));
    CHECK_EQ(finished_count, run->goroutines);
    CHECK_OK(goro_chan_free(gate));
    gate = NULL;
  }
  /* Without release the goroutines stay parked and goro_run abandons them,
   * as Go does when main returns; gate stays reachable for leak checkers. */
  free(stack_lo);
  stack_lo = NULL;
  return 0;
}

/* 4,000 under TSan, which allows at most 8,128 live goroutines (each is a
 * TSan fiber). */
TEST(parked_100k_goroutines_all_guarded) {
  parked_run run = {.goroutines = (size_t)harness_scaled(100000, 100000, 4000), .release = 1};
  RUN_MAIN(parked_main, &run);
}

/* About 4 GiB of memory and 10 s on a 2-vCPU VM; 100,000 under ASan or
 * UBSan, whose shadow memory makes each goroutine several times dearer, and
 * 4,000 under TSan, which allows at most 8,128 live goroutines.
 * Automatic shrink cycles are off: each one walks every slot, which with a
 * million slots more than doubled the time to spawn them (6 s to 15 s on
 * that VM) without adding anything to what this test checks. */
TEST(parked_1m_goroutines_all_guarded) {
  parked_run run = {
      .goroutines = (size_t)harness_scaled(1000000, 100000, 4000),
      .release = 0,
      .no_auto_cycles = 1,
  };
  RUN_MAIN(parked_main, &run);
}

/* ---- The mprotect fallback -------------------------------------------- */

#define BUDGET_SPAWNS 1000
#define GUARD_BUDGET 200

typedef struct budget_run {
  size_t spawned;    /* spawns that succeeded before the first failure */
  int first_error;   /* the first failure's code, 0 if none */
  int later_error;   /* one more spawn after the first failure */
  goro_memstats at_failure;
  int recovered;     /* a spawn after every goroutine finished succeeded */
  int recovered_guarded;
} budget_run;

static void guard_probe_goroutine(void *arg) {
  budget_run *run = arg;
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  run->recovered_guarded = guard_installed(-1, lo - PAGE_BYTES) == 1;
  CHECK_OK(goro_wg_done(&finished));
}

static void spawn_parked_until_failure(budget_run *run, size_t limit) {
  stack_lo = calloc(limit, sizeof *stack_lo);
  CHECK(stack_lo != NULL);
  CHECK_OK(goro_chan_make(&gate, 0, 0));

  for (size_t i = 0; i < limit; i++) {
    CHECK_OK(goro_wg_add(&started, 1));
    CHECK_OK(goro_wg_add(&finished, 1));
    int64_t id = goro_spawn(parked_goroutine, (void *)(uintptr_t)i);
    if (id < 0) {
      run->first_error = (int)id;
      CHECK_OK(goro_wg_add(&started, -1));
      CHECK_OK(goro_wg_add(&finished, -1));
      break;
    }
    run->spawned++;
  }
  CHECK_OK(goro_wg_wait(&started));
}

static int budget_main(void *arg) {
  budget_run *run = arg;

  spawn_parked_until_failure(run, BUDGET_SPAWNS);
  run->at_failure = read_stats();
  if (run->first_error) {
    int64_t again = goro_spawn(parked_goroutine, (void *)(uintptr_t)0);
    run->later_error = again < 0 ? (int)again : 0;
  }

  /* The goroutines spawned before the failure still run to completion. */
  CHECK_OK(goro_chan_close(gate));
  CHECK_OK(goro_wg_wait(&finished));
  CHECK_EQ(finished_count, run->spawned);
  CHECK_OK(goro_chan_free(gate));
  gate = NULL;

  /* Their slots, guards included, are free again for new goroutines. */
  CHECK_OK(goro_wg_add(&finished, 1));
  int64_t id = goro_spawn(guard_probe_goroutine, run);
  run->recovered = id > 0;
  if (id > 0)
    CHECK_OK(goro_wg_wait(&finished));
  else
    CHECK_OK(goro_wg_add(&finished, -1));
  free(stack_lo);
  stack_lo = NULL;
  return 0;
}

static void run_budget(budget_run *run) {
  setenv("GORODEBUG", "guardmode=mprotect,guardbudget=200", 1);
  RUN_MAIN(budget_main, run);
}

TEST(mprotect_budget_fails_spawn_with_maplimit) {
  budget_run run;

  memset(&run, 0, sizeof run);
  run_budget(&run);
  CHECK_ERR(run.first_error, GORO_EMAPLIMIT);
  if (run.spawned == 0 || run.spawned >= BUDGET_SPAWNS)
    FAIL("%zu of %d spawns succeeded before the failure, expected some but not all",
         run.spawned, BUDGET_SPAWNS);
  CHECK_LE(run.spawned, GUARD_BUDGET);
  CHECK_ERR(run.later_error, GORO_EMAPLIMIT);
  if (!strstr(goro_strerror(run.first_error), "vm.max_map_count"))
    FAIL("goro_strerror(GORO_EMAPLIMIT) does not name vm.max_map_count: \"%s\"",
         goro_strerror(run.first_error));
  if (run.at_failure.guards > GUARD_BUDGET)
    FAIL("%llu guards installed with a budget of %d", (unsigned long long)run.at_failure.guards,
         GUARD_BUDGET);
  CHECK_EQ(run.at_failure.unguarded_slots, 0);
}

TEST(mprotect_budget_spawn_works_after_exits) {
  budget_run run;

  memset(&run, 0, sizeof run);
  run_budget(&run);
  CHECK_ERR(run.first_error, GORO_EMAPLIMIT);
  CHECK_EQ(run.recovered, 1);
  CHECK_EQ(run.recovered_guarded, 1);
}

/* With unguarded stacks allowed, every spawn succeeds; the guards that the
 * budget allows are real and the rest of the stacks have none. */
typedef struct unguarded_run {
  goro_memstats stats;
  uint64_t with_guard, without_guard;
} unguarded_run;

static void guard_check_goroutine(void *arg) {
  unguarded_run *run = arg;
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  if (guard_installed(-1, lo - PAGE_BYTES) == 1)
    __atomic_fetch_add(&run->with_guard, 1, __ATOMIC_RELAXED);
  else
    __atomic_fetch_add(&run->without_guard, 1, __ATOMIC_RELAXED);
  CHECK_OK(goro_wg_done(&started));
  CHECK_EQ(goro_chan_recv(gate, NULL), GORO_ECLOSED);
  CHECK_OK(goro_wg_done(&finished));
}

static int unguarded_main(void *arg) {
  unguarded_run *run = arg;

  CHECK_OK(goro_chan_make(&gate, 0, 0));
  for (int i = 0; i < BUDGET_SPAWNS; i++) {
    CHECK_OK(goro_wg_add(&started, 1));
    CHECK_OK(goro_wg_add(&finished, 1));
    int64_t id = goro_spawn(guard_check_goroutine, run);
    if (id < 0)
      FAIL("spawn %d of %d failed with unguarded stacks allowed: %s", i, BUDGET_SPAWNS,
           goro_strerror((int)id));
  }
  CHECK_OK(goro_wg_wait(&started));
  run->stats = read_stats();
  CHECK_OK(goro_chan_close(gate));
  CHECK_OK(goro_wg_wait(&finished));
  CHECK_OK(goro_chan_free(gate));
  gate = NULL;
  return 0;
}

TEST(mprotect_unguarded_allowed_spawns_all) {
  unguarded_run run;

  memset(&run, 0, sizeof run);
  setenv("GORODEBUG", "guardmode=mprotect,guardbudget=200", 1);
  goro_allow_unguarded(true);
  RUN_MAIN(unguarded_main, &run);

  CHECK_GT(run.stats.unguarded_slots, 0);
  CHECK_LE(run.stats.guards, GUARD_BUDGET);
  CHECK_EQ(run.with_guard + run.without_guard, BUDGET_SPAWNS);
  CHECK_GT(run.without_guard, 0);
  if (run.with_guard > run.stats.guards)
    FAIL("%llu goroutines found a PROT_NONE guard, but only %llu guards exist",
         (unsigned long long)run.with_guard, (unsigned long long)run.stats.guards);
  if (run.without_guard > run.stats.unguarded_slots)
    FAIL("%llu goroutines found no guard, but only %llu slots are unguarded",
         (unsigned long long)run.without_guard, (unsigned long long)run.stats.unguarded_slots);
}

/* Each mprotect guard splits the arena mapping: one mapping for the guard
 * and one for the stack above it. The growth of /proc/self/maps proves the
 * guards are real mappings, about two per guarded slot. Under TSan, which
 * adds four mappings per goroutine anywhere, the count among the stacks
 * proves it. */
#define MAPPED_GOROUTINES 2000

typedef struct mapping_run {
  long before;        /* mappings before goro_run */
  long during;        /* with every goroutine parked */
  long among_stacks;  /* of those, the ones among the goroutines' stacks */
  goro_memstats stats;
} mapping_run;

static int mapping_main(void *arg) {
  mapping_run *run = arg;

  stack_lo = calloc(MAPPED_GOROUTINES, sizeof *stack_lo);
  CHECK(stack_lo != NULL);
  CHECK_OK(goro_chan_make(&gate, 0, 0));
  for (size_t i = 0; i < MAPPED_GOROUTINES; i++) {
    CHECK_OK(goro_wg_add(&started, 1));
    CHECK_OK(goro_wg_add(&finished, 1));
    int64_t id = goro_spawn(parked_goroutine, (void *)(uintptr_t)i);
    if (id < 0)
      FAIL("spawn %zu of %d failed: %s", i, MAPPED_GOROUTINES, goro_strerror((int)id));
  }
  CHECK_OK(goro_wg_wait(&started));
  run->during = count_mappings();
  run->among_stacks = count_mappings_among_stacks(MAPPED_GOROUTINES);
  run->stats = read_stats();
  for (size_t i = 0; i < MAPPED_GOROUTINES; i += 97)
    if (guard_installed(-1, stack_lo[i] - PAGE_BYTES) != 1)
      FAIL("goroutine %zu: the page below its stack is not a PROT_NONE mapping", i);

  CHECK_OK(goro_chan_close(gate));
  CHECK_OK(goro_wg_wait(&finished));
  CHECK_OK(goro_chan_free(gate));
  gate = NULL;
  free(stack_lo);
  stack_lo = NULL;
  return 0;
}

TEST(mprotect_guards_add_two_mappings_per_slot) {
  mapping_run run;

  memset(&run, 0, sizeof run);
  setenv("GORODEBUG", "guardmode=mprotect", 1);
  run.before = count_mappings();
  RUN_MAIN(mapping_main, &run);

  CHECK_GE(run.stats.guards, MAPPED_GOROUTINES);
  CHECK_EQ(run.stats.unguarded_slots, 0);
  long growth = run.during - run.before;
  if (growth * 2 < (long)run.stats.guards * 3)
    FAIL("mappings grew by %ld for %llu mprotect guards, expected at least 1.5 per guard",
         growth, (unsigned long long)run.stats.guards);
  if (run.among_stacks * 2 < MAPPED_GOROUTINES * 3)
    FAIL("%ld mappings among the stacks of %d goroutines with mprotect guards, expected at "
         "least 1.5 per goroutine",
         run.among_stacks, MAPPED_GOROUTINES);
  fprintf(stderr, "mappings grew by %ld for %llu guards, %ld among the stacks\n", growth,
          (unsigned long long)run.stats.guards, run.among_stacks);
}
