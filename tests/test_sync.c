/*
 * Mutex and wait group: exclusion across workers, the error returns, and
 * blocking that parks the goroutine instead of its thread.
 */
#include "harness.h"

#define MS ((int64_t)1000000)

/* Sleeps until *counter reaches want, or fails after 5 s. */
static void wait_for_count(int *counter, int want) {
  int64_t deadline = harness_now_ns() + 5000 * MS;

  while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < want && harness_now_ns() < deadline)
    CHECK_OK(goro_sleep(1 * MS));
  CHECK_EQ(__atomic_load_n(counter, __ATOMIC_ACQUIRE), want);
}

/* ---- Mutex ------------------------------------------------------------ */

#define LOCKERS 8

static goro_mutex counter_mu = GORO_MUTEX_INIT;
static long plain_counter; /* touched only under counter_mu */
static int holders;        /* goroutines inside the critical section */
static int max_holders;
static int lock_workers_seen;
static int increments_per_locker;
static long increments_total; /* the value plain_counter must reach */
static int64_t lockers_deadline;
static goro_waitgroup lockers_wg;

/* Both workers must have held the lock, or exclusion was not tested. On a
 * loaded machine the OS may keep one worker off the CPU for a while, so
 * lockers go on past their quota until both workers have been seen. */
static bool keep_locking(int done) {
  if (done < increments_per_locker)
    return true;
  return __atomic_load_n(&lock_workers_seen, __ATOMIC_RELAXED) != 3 &&
         harness_now_ns() < lockers_deadline;
}

static void increment_under_lock(void *arg) {
  int i = 0;
  (void)arg;
  for (; keep_locking(i); i++) {
    CHECK_OK(goro_mutex_lock(&counter_mu));
    int inside = __atomic_add_fetch(&holders, 1, __ATOMIC_ACQ_REL);
    if (inside > __atomic_load_n(&max_holders, __ATOMIC_RELAXED))
      __atomic_store_n(&max_holders, inside, __ATOMIC_RELAXED);
    __atomic_fetch_or(&lock_workers_seen, 1 << goro_worker_index(), __ATOMIC_RELAXED);

    /* A read-modify-write that spans a yield loses updates at once if a
     * second goroutine gets in. */
    long v = plain_counter;
    if (i % 16 == 0)
      CHECK_OK(goro_yield());
    plain_counter = v + 1;

    __atomic_sub_fetch(&holders, 1, __ATOMIC_ACQ_REL);
    CHECK_OK(goro_mutex_unlock(&counter_mu));
  }
  __atomic_fetch_add(&increments_total, i, __ATOMIC_RELAXED);
  goro_wg_done(&lockers_wg);
}

static int exclusion_main(void *arg) {
  (void)arg;
  lockers_deadline = harness_now_ns() + 10000 * MS;
  CHECK_OK(goro_wg_add(&lockers_wg, LOCKERS));
  for (int i = 0; i < LOCKERS; i++)
    CHECK_OK(goro_spawn(increment_under_lock, NULL));
  CHECK_OK(goro_wg_wait(&lockers_wg));

  long total = __atomic_load_n(&increments_total, __ATOMIC_RELAXED);
  CHECK_GE(total, (long)LOCKERS * increments_per_locker);
  CHECK_EQ(plain_counter, total);
  CHECK_EQ(__atomic_load_n(&max_holders, __ATOMIC_RELAXED), 1);
  CHECK_EQ(__atomic_load_n(&lock_workers_seen, __ATOMIC_RELAXED), 3);
  return 0;
}

TEST(mutex_excludes_across_two_workers) {
  increments_per_locker = harness_sanitizer() ? 5000 : 20000;
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(exclusion_main, NULL);
}

static goro_mutex try_mu = GORO_MUTEX_INIT;
static int try_result_elsewhere = 1;

static void trylock_elsewhere(void *arg) {
  (void)arg;
  __atomic_store_n(&try_result_elsewhere, goro_mutex_trylock(&try_mu), __ATOMIC_RELEASE);
}

static int trylock_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_mutex_trylock(&try_mu));
  CHECK_ERR(goro_mutex_trylock(&try_mu), GORO_EAGAIN);

  /* Held by main, so another goroutine cannot take it either. */
  CHECK_OK(goro_spawn(trylock_elsewhere, NULL));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_ERR(__atomic_load_n(&try_result_elsewhere, __ATOMIC_ACQUIRE), GORO_EAGAIN);

  CHECK_OK(goro_mutex_unlock(&try_mu));
  CHECK_OK(goro_mutex_trylock(&try_mu));
  CHECK_OK(goro_mutex_unlock(&try_mu));

  CHECK_OK(goro_mutex_lock(&try_mu));
  CHECK_ERR(goro_mutex_trylock(&try_mu), GORO_EAGAIN);
  CHECK_OK(goro_mutex_unlock(&try_mu));
  return 0;
}

TEST(mutex_trylock_returns_eagain_when_held) { RUN_MAIN(trylock_main, NULL); }

static int unlock_unlocked_main(void *arg) {
  goro_mutex zeroed;
  goro_mutex m = GORO_MUTEX_INIT;
  (void)arg;

  memset(&zeroed, 0, sizeof zeroed);
  CHECK_ERR(goro_mutex_unlock(&zeroed), GORO_EINVAL);
  CHECK_ERR(goro_mutex_unlock(&m), GORO_EINVAL);

  CHECK_OK(goro_mutex_lock(&m));
  CHECK_OK(goro_mutex_unlock(&m));
  CHECK_ERR(goro_mutex_unlock(&m), GORO_EINVAL);

  /* The failed unlocks left the mutex usable. */
  CHECK_OK(goro_mutex_lock(&m));
  CHECK_ERR(goro_mutex_trylock(&m), GORO_EAGAIN);
  CHECK_OK(goro_mutex_unlock(&m));
  return 0;
}

TEST(mutex_unlock_when_unlocked_returns_einval) { RUN_MAIN(unlock_unlocked_main, NULL); }

static goro_mutex park_mu = GORO_MUTEX_INIT;
static int park_locked;   /* set by the blocked goroutine once it has the lock */
static int park_ticks;    /* progress of an unrelated goroutine */
static int park_unlocked; /* set by main just before unlocking */

static void lock_and_report(void *arg) {
  (void)arg;
  CHECK_OK(goro_mutex_lock(&park_mu));
  /* Ownership must not arrive before main lets go. */
  CHECK_EQ(__atomic_load_n(&park_unlocked, __ATOMIC_ACQUIRE), 1);
  __atomic_store_n(&park_locked, 1, __ATOMIC_RELEASE);
  CHECK_OK(goro_mutex_unlock(&park_mu));
}

static void tick(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) {
    __atomic_fetch_add(&park_ticks, 1, __ATOMIC_RELEASE);
    CHECK_OK(goro_yield());
  }
}

static int lock_parks_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_mutex_lock(&park_mu));
  CHECK_OK(goro_spawn(lock_and_report, NULL));
  CHECK_OK(goro_spawn(tick, NULL));

  /* On a single worker the ticker can only run if the blocked lock parked
   * its goroutine and left the thread free. */
  wait_for_count(&park_ticks, 100);
  CHECK_EQ(__atomic_load_n(&park_locked, __ATOMIC_ACQUIRE), 0);

  __atomic_store_n(&park_unlocked, 1, __ATOMIC_RELEASE);
  CHECK_OK(goro_mutex_unlock(&park_mu));
  wait_for_count(&park_locked, 1);
  return 0;
}

TEST(mutex_lock_parks_goroutine_not_thread) {
  alarm(20); /* a lock that blocked the only worker would hang here */
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(lock_parks_main, NULL);
}

#define FIFO_LOCKERS 10

static goro_mutex fifo_mu = GORO_MUTEX_INIT;
static int fifo_arrived;
static int fifo_arrival[FIFO_LOCKERS]; /* goroutine numbers in arrival order */
static int fifo_order[FIFO_LOCKERS];   /* goroutine numbers in locking order */
static int fifo_acquired;

static void lock_in_turn(void *arg) {
  int self = (int)(intptr_t)arg;

  /* With one worker nothing runs between this store and the lock call,
   * which parks at once because main holds the mutex. */
  fifo_arrival[__atomic_fetch_add(&fifo_arrived, 1, __ATOMIC_ACQ_REL)] = self;
  CHECK_OK(goro_mutex_lock(&fifo_mu));
  fifo_order[fifo_acquired++] = self;
  CHECK_OK(goro_mutex_unlock(&fifo_mu));
}

static int fifo_main(void *arg) {
  (void)arg;

  /* The lockers queue up on the mutex main holds. Unlock hands the lock to
   * the first in line, so they must get it in the order they arrived. */
  CHECK_OK(goro_mutex_lock(&fifo_mu));
  for (int i = 0; i < FIFO_LOCKERS; i++)
    CHECK_OK(goro_spawn(lock_in_turn, (void *)(intptr_t)i));
  wait_for_count(&fifo_arrived, FIFO_LOCKERS);
  CHECK_OK(goro_mutex_unlock(&fifo_mu));

  CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_mutex_lock(&fifo_mu));
  CHECK_EQ(fifo_acquired, FIFO_LOCKERS);
  for (int i = 0; i < FIFO_LOCKERS; i++)
    if (fifo_order[i] != fifo_arrival[i])
      FAIL("goroutine %d arrived in turn %d but goroutine %d got the mutex then", fifo_arrival[i],
           i, fifo_order[i]);
  CHECK_OK(goro_mutex_unlock(&fifo_mu));
  return 0;
}

TEST(mutex_waiters_acquire_in_arrival_order) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(fifo_main, NULL);
}

/* ---- Wait group ------------------------------------------------------- */

#define WG_WAITERS 20

static goro_waitgroup gate_wg;
static int gate_waiting, gate_passed;

static void wait_at_gate(void *arg) {
  (void)arg;
  __atomic_fetch_add(&gate_waiting, 1, __ATOMIC_RELEASE);
  CHECK_OK(goro_wg_wait(&gate_wg));
  __atomic_fetch_add(&gate_passed, 1, __ATOMIC_RELEASE);
}

static int wg_wakes_all_main(void *arg) {
  goro_waitgroup empty = GORO_WAITGROUP_INIT;
  (void)arg;

  /* A zero count does not wait at all. */
  CHECK_OK(goro_wg_wait(&empty));

  CHECK_OK(goro_wg_add(&gate_wg, 2));
  for (int i = 0; i < WG_WAITERS; i++)
    CHECK_OK(goro_spawn(wait_at_gate, NULL));
  wait_for_count(&gate_waiting, WG_WAITERS);
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_EQ(__atomic_load_n(&gate_passed, __ATOMIC_ACQUIRE), 0);

  CHECK_OK(goro_wg_done(&gate_wg));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_EQ(__atomic_load_n(&gate_passed, __ATOMIC_ACQUIRE), 0);

  CHECK_OK(goro_wg_done(&gate_wg));
  wait_for_count(&gate_passed, WG_WAITERS);
  return 0;
}

TEST(waitgroup_wait_wakes_all_waiters) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(wg_wakes_all_main, NULL);
}

static goro_waitgroup range_wg;
static int range_passed;

static void wait_for_range(void *arg) {
  (void)arg;
  CHECK_OK(goro_wg_wait(&range_wg));
  __atomic_store_n(&range_passed, 1, __ATOMIC_RELEASE);
}

static int wg_range_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_wg_add(&range_wg, 2));
  CHECK_ERR(goro_wg_add(&range_wg, -3), GORO_ERANGE);
  CHECK_ERR(goro_wg_add(&range_wg, INT64_MIN), GORO_ERANGE);

  /* The count is still 2: a waiter stays blocked through one done. */
  CHECK_OK(goro_spawn(wait_for_range, NULL));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_wg_done(&range_wg));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_EQ(__atomic_load_n(&range_passed, __ATOMIC_ACQUIRE), 0);
  CHECK_OK(goro_wg_done(&range_wg));
  wait_for_count(&range_passed, 1);

  /* At zero, one more done is out of range and the count stays zero. */
  CHECK_ERR(goro_wg_done(&range_wg), GORO_ERANGE);
  CHECK_OK(goro_wg_wait(&range_wg));
  CHECK_OK(goro_wg_add(&range_wg, 0));
  CHECK_OK(goro_wg_wait(&range_wg));
  return 0;
}

TEST(waitgroup_add_below_zero_returns_erange) { RUN_MAIN(wg_range_main, NULL); }

static int wg_overflow_main(void *arg) {
  goro_waitgroup wg = GORO_WAITGROUP_INIT;
  (void)arg;

  CHECK_OK(goro_wg_add(&wg, 2));
  CHECK_ERR(goro_wg_add(&wg, INT64_MAX), GORO_ERANGE);

  /* The count is still 2. */
  CHECK_OK(goro_wg_add(&wg, -2));
  CHECK_ERR(goro_wg_done(&wg), GORO_ERANGE);
  CHECK_OK(goro_wg_wait(&wg));
  return 0;
}

TEST(waitgroup_add_overflow_returns_erange) { RUN_MAIN(wg_overflow_main, NULL); }
