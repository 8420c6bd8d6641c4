/*
 * Scheduler behaviour: spawn and exit at scale, yield, sleep, the worker
 * pool, work stealing, goro_run's life cycle and the memstats identities.
 */
#include <pthread.h>

#include "harness.h"

#define MS ((int64_t)1000000)

static goro_memstats read_stats(void) {
  goro_memstats st;

  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK_OK(goro_read_memstats(&st));
  return st;
}

/* Sleeps until memstats reports want goroutines, or fails after 5 s. The
 * count drops on an exited goroutine's worker just before that worker puts
 * the slot back in a cache, which can trail the goroutine's last visible
 * action. */
static void wait_for_goroutines(uint64_t want) {
  int64_t deadline = harness_now_ns() + 5000 * MS;
  goro_memstats st = read_stats();

  while (st.goroutines != want && harness_now_ns() < deadline) {
    CHECK_OK(goro_sleep(1 * MS));
    st = read_stats();
  }
  CHECK_EQ(st.goroutines, want);
}

/* Spins for ns nanoseconds without calling into goro, so the goroutine
 * keeps its worker for that long. */
static void spin_for(int64_t ns) {
  int64_t end = harness_now_ns() + ns;

  while (harness_now_ns() < end)
    ;
}

/* ---- Spawn and exit at scale ------------------------------------------ */

static goro_waitgroup many_wg;
static uint64_t many_ran;
static int many_count;

static void count_and_exit(void *arg) {
  (void)arg;
  __atomic_fetch_add(&many_ran, 1, __ATOMIC_RELAXED);
  goro_wg_done(&many_wg);
}

static int spawn_many_main(void *arg) {
  (void)arg;
  goro_memstats before = read_stats();
  CHECK_EQ(before.goroutines, 1);

  for (int i = 0; i < many_count; i++) {
    CHECK_OK(goro_wg_add(&many_wg, 1));
    int64_t id = goro_spawn(count_and_exit, NULL);
    CHECK_GT(id, 0);
  }
  CHECK_OK(goro_wg_wait(&many_wg));
  CHECK_EQ(__atomic_load_n(&many_ran, __ATOMIC_RELAXED), many_count);

  wait_for_goroutines(1);
  goro_memstats after = read_stats();
  CHECK_EQ(after.spawned_total - before.spawned_total, many_count);
  return 0;
}

/* 4,000 under TSan: main may spawn faster than the goroutines exit, and
 * TSan stops the process once more than 8,128 of them (each a TSan fiber)
 * are alive at once. TSan also makes spawns slow: 100,000 took 52 s on a
 * 2-vCPU VM. */
TEST(spawn_100k_goroutines_all_exit) {
  many_count = (int)harness_scaled(100000, 100000, 4000);
  RUN_MAIN(spawn_many_main, NULL);
}

/* ---- Yield ------------------------------------------------------------ */

static int yield_flag;

static void set_flag(void *arg) {
  (void)arg;
  __atomic_store_n(&yield_flag, 1, __ATOMIC_RELEASE);
}

static int yield_runs_other_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_spawn(set_flag, NULL));

  /* One worker and no preemption: the new goroutine cannot have run yet. */
  CHECK_EQ(__atomic_load_n(&yield_flag, __ATOMIC_ACQUIRE), 0);
  CHECK_OK(goro_yield());
  CHECK_EQ(__atomic_load_n(&yield_flag, __ATOMIC_ACQUIRE), 1);
  return 0;
}

TEST(yield_lets_spawned_goroutine_run) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(yield_runs_other_main, NULL);
}

#define YIELD_ROUNDS 2000

static int yield_progress[2];
static int yield_max_lead;
static goro_waitgroup yield_wg;

/* Counts its own rounds and records how far it ever got ahead of the other
 * goroutine. */
static void yield_counter(void *arg) {
  int self = (int)(intptr_t)arg;

  for (int i = 0; i < YIELD_ROUNDS; i++) {
    yield_progress[self]++;
    int lead = yield_progress[self] - yield_progress[1 - self];
    if (lead > yield_max_lead)
      yield_max_lead = lead;
    CHECK_OK(goro_yield());
  }
  goro_wg_done(&yield_wg);
}

static int yield_alternates_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_wg_add(&yield_wg, 2));
  CHECK_OK(goro_spawn(yield_counter, (void *)0));
  CHECK_OK(goro_spawn(yield_counter, (void *)1));
  CHECK_OK(goro_wg_wait(&yield_wg));

  CHECK_EQ(yield_progress[0], YIELD_ROUNDS);
  CHECK_EQ(yield_progress[1], YIELD_ROUNDS);
  /* A yield that let the same goroutine run again would let one of them
   * race ahead by many rounds. */
  CHECK_LE(yield_max_lead, 2);
  return 0;
}

TEST(yield_alternates_two_goroutines) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(yield_alternates_main, NULL);
}

/* ---- Sleep ------------------------------------------------------------ */

static int sleep_duration_main(void *arg) {
  static const int64_t durations[] = {1 * MS / 10, 1 * MS, 5 * MS, 20 * MS, 50 * MS};
  (void)arg;

  for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
    int64_t start = harness_now_ns();
    CHECK_OK(goro_sleep(durations[i]));
    int64_t slept = harness_now_ns() - start;
    CHECK_GE(slept, durations[i]);
    /* Generous: only a lost timer, not a slow VM, should take this long. */
    CHECK_LT(slept, durations[i] + 1000 * MS);
  }
  return 0;
}

TEST(sleep_lasts_at_least_requested) { RUN_MAIN(sleep_duration_main, NULL); }

static int sleep_nonpositive_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_sleep(0));
  CHECK_OK(goro_sleep(-5));
  return 0;
}

TEST(sleep_nonpositive_returns_at_once) { RUN_MAIN(sleep_nonpositive_main, NULL); }

#define SLEEPERS 30
#define SLEEP_STEP (5 * MS)
/* Deadlines closer than this may wake in either order (see below). */
#define SLEEP_ORDER_SLACK (40 * MS)

typedef struct sleeper {
  int64_t duration;
  int64_t deadline;
  int64_t woke_at;
  int order;
} sleeper;

static sleeper sleepers[SLEEPERS];
static int sleepers_woken;
static goro_waitgroup sleepers_wg;

static void sleep_and_record(void *arg) {
  sleeper *s = arg;

  s->deadline = harness_now_ns() + s->duration;
  CHECK_OK(goro_sleep(s->duration));
  s->woke_at = harness_now_ns();
  s->order = __atomic_fetch_add(&sleepers_woken, 1, __ATOMIC_RELAXED);
  goro_wg_done(&sleepers_wg);
}

static int sleepers_order_main(void *arg) {
  (void)arg;

  /* Spawn in a scrambled order so that wake order cannot follow spawn
   * order by accident: 17 is coprime with 30. */
  CHECK_OK(goro_wg_add(&sleepers_wg, SLEEPERS));
  for (int i = 0; i < SLEEPERS; i++) {
    int k = (i * 17) % SLEEPERS;
    sleepers[k].duration = (k + 1) * SLEEP_STEP;
    CHECK_OK(goro_spawn(sleep_and_record, &sleepers[k]));
  }
  CHECK_OK(goro_wg_wait(&sleepers_wg));

  for (int i = 0; i < SLEEPERS; i++)
    CHECK_GE(sleepers[i].woke_at, sleepers[i].deadline);

  /* Sleepers that come due in one timer batch may run in any order, and a
   * batch grows when the OS deschedules a worker on a loaded machine.
   * Deadlines further apart than the slack must wake in order. */
  for (int i = 0; i < SLEEPERS; i++) {
    for (int j = 0; j < SLEEPERS; j++) {
      if (sleepers[j].deadline - sleepers[i].deadline < SLEEP_ORDER_SLACK)
        continue;
      if (sleepers[i].order > sleepers[j].order)
        FAIL("sleeper %d (deadline +%lld ms) woke after sleeper %d (deadline +%lld ms)", i,
             (long long)(sleepers[i].duration / MS), j, (long long)(sleepers[j].duration / MS));
    }
  }
  return 0;
}

TEST(sleepers_wake_in_deadline_order) { RUN_MAIN(sleepers_order_main, NULL); }

/* ---- Workers ---------------------------------------------------------- */

#define SPREAD_TASKS 64

static uint32_t workers_seen;
static goro_waitgroup spread_wg;

static void record_worker(void *arg) {
  (void)arg;
  int w = goro_worker_index();

  CHECK_GE(w, 0);
  CHECK_LT(w, 2);
  __atomic_fetch_or(&workers_seen, 1u << w, __ATOMIC_RELAXED);
  /* Keep this worker busy so that the next task must go elsewhere. */
  spin_for(2 * MS);
  goro_wg_done(&spread_wg);
}

static int both_workers_main(void *arg) {
  (void)arg;
  CHECK_EQ(read_stats().maxprocs, 2);

  CHECK_OK(goro_wg_add(&spread_wg, SPREAD_TASKS));
  for (int i = 0; i < SPREAD_TASKS; i++)
    CHECK_OK(goro_spawn(record_worker, NULL));
  CHECK_OK(goro_wg_wait(&spread_wg));

  CHECK_EQ(__atomic_load_n(&workers_seen, __ATOMIC_RELAXED), 3);
  return 0;
}

TEST(maxprocs_2_runs_goroutines_on_both_workers) {
  CHECK_EQ(goro_worker_index(), -1);
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(both_workers_main, NULL);
}

/* Every task is spawned from the main goroutine's worker, so any task that
 * the other worker runs was stolen from that worker's run queue. With fewer
 * tasks than the run queue's capacity (256), none goes to the global queue. */
#define STEAL_TASKS 200
#define STEAL_TASK_NS (1 * MS)

static int steal_ran_on[2];
static goro_waitgroup steal_wg;

static void busy_task(void *arg) {
  (void)arg;
  int w = goro_worker_index();

  CHECK_GE(w, 0);
  CHECK_LT(w, 2);
  spin_for(STEAL_TASK_NS);
  __atomic_fetch_add(&steal_ran_on[w], 1, __ATOMIC_RELAXED);
  goro_wg_done(&steal_wg);
}

static int stealing_main(void *arg) {
  (void)arg;
  /* spawn never parks, so main stays on this worker until wg_wait. */
  int home = goro_worker_index();
  CHECK_GE(home, 0);

  CHECK_OK(goro_wg_add(&steal_wg, STEAL_TASKS));
  for (int i = 0; i < STEAL_TASKS; i++)
    CHECK_OK(goro_spawn(busy_task, NULL));
  int64_t start = harness_now_ns();
  CHECK_OK(goro_wg_wait(&steal_wg));
  int64_t elapsed = harness_now_ns() - start;

  int on_home = __atomic_load_n(&steal_ran_on[home], __ATOMIC_RELAXED);
  int stolen = __atomic_load_n(&steal_ran_on[1 - home], __ATOMIC_RELAXED);
  printf("work stealing: %d tasks ran where spawned, %d stolen, %lld ms for %lld ms of work\n",
         on_home, stolen, (long long)(elapsed / MS), (long long)(STEAL_TASKS * STEAL_TASK_NS / MS));
  CHECK_EQ(on_home + stolen, STEAL_TASKS);
  /* A fair split is half each. An eighth leaves room for a loaded VM that
   * takes one vCPU away for a while. */
  CHECK_GE(on_home, STEAL_TASKS / 8);
  CHECK_GE(stolen, STEAL_TASKS / 8);
  return 0;
}

TEST(work_stealing_keeps_both_workers_busy) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(stealing_main, NULL);
}

/* ---- goro_run life cycle ---------------------------------------------- */

static int return_arg_main(void *arg) { return (int)(intptr_t)arg; }

TEST(goro_run_returns_main_status) {
  CHECK_EQ(goro_run(return_arg_main, (void *)(intptr_t)42), 42);
  CHECK_EQ(goro_run(return_arg_main, (void *)(intptr_t)0), 0);
  CHECK_EQ(goro_run(return_arg_main, (void *)(intptr_t)-1000), -1000);
}

static void send_id(void *arg) {
  int64_t id = goro_id();
  CHECK_OK(goro_chan_send(arg, &id));
}

/* Spawns a goroutine, gets its id over a channel and returns 1 if the id
 * is positive and not the main goroutine's. */
static int one_round_main(void *arg) {
  goro_chan *c;
  int64_t id = 0;
  (void)arg;

  CHECK_OK(goro_chan_make(&c, sizeof id, 0));
  CHECK_OK(goro_spawn(send_id, c));
  CHECK_OK(goro_chan_recv(c, &id));
  CHECK_OK(goro_chan_free(c));
  return id > 0 && id != goro_id() ? 7 : 0;
}

TEST(goro_run_twice_in_one_process) {
  goro_memstats st = read_stats();
  uint64_t spawned_before = st.spawned_total;

  CHECK_EQ(goro_run(one_round_main, NULL), 7);
  CHECK_EQ(goro_run(one_round_main, NULL), 7);

  /* spawned_total counts since the process started: two runs of a main
   * goroutine and one child each. */
  st = read_stats();
  CHECK_EQ(st.spawned_total - spawned_before, 4);
  CHECK_EQ(st.goroutines, 0);
}

static goro_chan *never_sent;
static goro_mutex held_forever = GORO_MUTEX_INIT;

static void block_on_recv(void *arg) {
  (void)arg;
  goro_chan_recv(never_sent, NULL);
  FAIL("receive on a channel nobody sends on returned");
}

static void block_on_sleep(void *arg) {
  (void)arg;
  goro_sleep(3600 * 1000 * MS);
  FAIL("an hour-long sleep returned");
}

static void block_on_mutex(void *arg) {
  (void)arg;
  goro_mutex_lock(&held_forever);
  FAIL("lock of a mutex held until exit returned");
}

static int abandon_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_chan_make(&never_sent, 0, 0));
  CHECK_OK(goro_mutex_lock(&held_forever));
  for (int i = 0; i < 100; i++)
    CHECK_OK(goro_spawn(block_on_recv, NULL));
  for (int i = 0; i < 10; i++)
    CHECK_OK(goro_spawn(block_on_sleep, NULL));
  for (int i = 0; i < 10; i++)
    CHECK_OK(goro_spawn(block_on_mutex, NULL));

  wait_for_goroutines(121);
  CHECK_OK(goro_sleep(10 * MS)); /* let them all park */
  CHECK_EQ(read_stats().goroutines, 121);
  return 5;
}

TEST(parked_goroutines_abandoned_when_main_returns) {
  CHECK_OK(goro_set_maxprocs(2));
  int64_t start = harness_now_ns();
  CHECK_EQ(goro_run(abandon_main, NULL), 5);
  CHECK_LT(harness_now_ns() - start, 5000 * MS);

  /* The abandoned goroutines are gone with the runtime, and it starts
   * again. */
  CHECK_EQ(read_stats().goroutines, 0);
  CHECK_EQ(goro_run(one_round_main, NULL), 7);
}

/* ---- Spawning from a plain thread ------------------------------------- */

#define FOREIGN_SPAWNS 1000

static goro_waitgroup foreign_wg;
static int foreign_ran;

static void foreign_child(void *arg) {
  (void)arg;
  CHECK_GT(goro_id(), 0);
  __atomic_fetch_add(&foreign_ran, 1, __ATOMIC_RELAXED);
  goro_wg_done(&foreign_wg);
}

static void *spawner_thread(void *arg) {
  (void)arg;
  CHECK_EQ(goro_id(), 0);
  CHECK_EQ(goro_worker_index(), -1);
  for (int i = 0; i < FOREIGN_SPAWNS; i++)
    CHECK_GT(goro_spawn(foreign_child, NULL), 0);
  return NULL;
}

static int foreign_spawn_main(void *arg) {
  pthread_t thread;
  (void)arg;

  CHECK_OK(goro_wg_add(&foreign_wg, FOREIGN_SPAWNS));
  CHECK_EQ(pthread_create(&thread, NULL, spawner_thread, NULL), 0);
  CHECK_OK(goro_wg_wait(&foreign_wg));
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_EQ(__atomic_load_n(&foreign_ran, __ATOMIC_RELAXED), FOREIGN_SPAWNS);
  return 0;
}

TEST(spawn_from_plain_pthread_runs_goroutines) { RUN_MAIN(foreign_spawn_main, NULL); }

/* ---- goro_exit -------------------------------------------------------- */

static int exit_reached_after;
static goro_waitgroup exit_wg;

static void __attribute__((noinline)) exit_deep(int depth) {
  if (depth > 0) {
    exit_deep(depth - 1);
    __atomic_store_n(&exit_reached_after, 1, __ATOMIC_RELAXED);
    return;
  }
  goro_wg_done(&exit_wg);
  goro_exit();
  __atomic_store_n(&exit_reached_after, 1, __ATOMIC_RELAXED);
}

static void exit_from_nested(void *arg) {
  (void)arg;
  exit_deep(5);
  __atomic_store_n(&exit_reached_after, 1, __ATOMIC_RELAXED);
}

static int exit_nested_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_wg_add(&exit_wg, 10));
  for (int i = 0; i < 10; i++)
    CHECK_OK(goro_spawn(exit_from_nested, NULL));
  CHECK_OK(goro_wg_wait(&exit_wg));

  wait_for_goroutines(1);
  CHECK_EQ(__atomic_load_n(&exit_reached_after, __ATOMIC_RELAXED), 0);
  return 0;
}

TEST(goro_exit_from_nested_call_ends_goroutine) { RUN_MAIN(exit_nested_main, NULL); }

/* ---- Memstats --------------------------------------------------------- */

static void check_identities(const goro_memstats *st) {
  CHECK_EQ(st->size, sizeof *st);
  CHECK_EQ(st->version, GORO_MEMSTATS_VERSION);
#if GORO_MEMSTATS_VERSION >= 2
  CHECK_EQ(st->stack_sys, st->stack_inuse + st->stack_cache + st->stack_guard + st->stack_meta);
  uint64_t hist_count = 0, hist_bytes = 0;
  for (int i = 0; i < GORO_STACK_HIST_BUCKETS; i++) {
    hist_count += st->stack_hist_count[i];
    hist_bytes += st->stack_hist_bytes[i];
  }
  CHECK_EQ(hist_count, st->goroutines);
  CHECK_EQ(hist_bytes, st->stack_inuse);
#else
  CHECK_EQ(st->stack_sys, st->stack_inuse + st->stack_cache + st->stack_meta);
#endif
  CHECK_EQ(st->max_stack, goro_max_stack());
  CHECK_GE(st->slots_carved, st->goroutines);
  /* Every live goroutine has at least the page with its descriptor. */
  CHECK_GE(st->stack_inuse, st->goroutines * 4096);
}

#define PARKED 500

static goro_chan *park_gate;
static goro_waitgroup park_wg;

static void park_on_gate(void *arg) {
  (void)arg;
  CHECK_ERR(goro_chan_recv(park_gate, NULL), GORO_ECLOSED);
  goro_wg_done(&park_wg);
}

static int memstats_main(void *arg) {
  (void)arg;
  goro_memstats idle = read_stats();
  check_identities(&idle);
  CHECK_EQ(idle.goroutines, 1);
  CHECK_EQ(idle.maxprocs, 2);

  CHECK_OK(goro_chan_make(&park_gate, 0, 0));
  CHECK_OK(goro_wg_add(&park_wg, PARKED));
  for (int i = 0; i < PARKED; i++)
    CHECK_OK(goro_spawn(park_on_gate, NULL));
  CHECK_OK(goro_sleep(20 * MS));

  goro_memstats parked = read_stats();
  check_identities(&parked);
  CHECK_EQ(parked.goroutines, 1 + PARKED);
  CHECK_EQ(parked.spawned_total - idle.spawned_total, PARKED);
  CHECK_GE(parked.stack_inuse - idle.stack_inuse, (uint64_t)PARKED * 4096);

  CHECK_OK(goro_chan_close(park_gate));
  CHECK_OK(goro_wg_wait(&park_wg));
  wait_for_goroutines(1);
  goro_memstats done = read_stats();
  check_identities(&done);
  CHECK_EQ(done.spawned_total - idle.spawned_total, PARKED);
  CHECK_OK(goro_chan_free(park_gate));
  return 0;
}

TEST(memstats_identities_hold) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(memstats_main, NULL);
}
