/*
 * errno and thread-locals when a goroutine resumes on another thread.
 *
 * goro saves errno when a goroutine switches out and restores it on the
 * thread that resumes it, and goro.h routes errno through
 * goro_errno_location(), so errno reads the goroutine's own value after any
 * park. A __thread variable is different: it belongs to the thread, so a
 * goroutine that migrates reads the new thread's copy. This file compiles
 * with goro.h's errno macro, as user code does by default.
 */
#include "harness.h"

#define MS ((int64_t)1000000)

/* ---- A workload that moves goroutines between workers ----------------- */

/*
 * The observed goroutine parks in a receive on ping, and wakers on either
 * worker send to it. A receiver readied by a send goes to the run queue of
 * the sender's worker, so it resumes there. Busy goroutines keep both
 * workers running, so work is also stolen back and forth. Each waker sets
 * errno on its own thread just before it wakes the receiver.
 */
#define WAKERS 2
#define BUSY 2
#define MIGRATIONS_WANTED 50
#define MAX_ROUNDS 200000

typedef struct wake_msg {
  int worker;        /* where the waker ran when it sent */
  int waker_errno;   /* the errno value it had set there */
} wake_msg;

static goro_chan *ping;
static int helpers_stop;
static goro_waitgroup helpers_wg;

static void waker(void *arg) {
  int id = (int)(intptr_t)arg;

  for (int j = 0;; j++) {
    int mine = 500000 + id * 100000 + j % 100000;
    errno = mine;
    wake_msg msg = {.worker = goro_worker_index(), .waker_errno = mine};
    if (goro_chan_send(ping, &msg) != 0)
      break;
    /* The send may have parked this goroutine and moved it too. */
    if (errno != mine)
      FAIL("waker %d: errno is %d after a send, expected %d", id, errno, mine);
    errno = -mine; /* what the thread holds when the receiver takes over */
    CHECK_OK(goro_yield());
  }
  goro_wg_done(&helpers_wg);
}

static void busy(void *arg) {
  int64_t until;
  (void)arg;

  while (!__atomic_load_n(&helpers_stop, __ATOMIC_ACQUIRE)) {
    errno = 424242;
    until = harness_now_ns() + 20000; /* 20 us of work without a park */
    while (harness_now_ns() < until)
      ;
    CHECK_OK(goro_yield());
    if (errno != 424242)
      FAIL("busy goroutine: errno is %d after a yield, expected 424242", errno);
  }
  goro_wg_done(&helpers_wg);
}

static void start_helpers(void) {
  CHECK_OK(goro_chan_make(&ping, sizeof(wake_msg), 0));
  CHECK_OK(goro_wg_add(&helpers_wg, WAKERS + BUSY));
  for (int i = 0; i < WAKERS; i++)
    CHECK_OK(goro_spawn(waker, (void *)(intptr_t)i));
  for (int i = 0; i < BUSY; i++)
    CHECK_OK(goro_spawn(busy, NULL));
}

static void stop_helpers(void) {
  __atomic_store_n(&helpers_stop, 1, __ATOMIC_RELEASE);
  CHECK_OK(goro_chan_close(ping)); /* wakers blocked in send get ECLOSED */
  CHECK_OK(goro_wg_wait(&helpers_wg));
  CHECK_OK(goro_chan_free(ping));
}

/* ---- errno ------------------------------------------------------------ */

/*
 * The pattern that breaks with glibc's errno macro: glibc declares
 * __errno_location() const, so gcc 12 -O2 calls it once here and reads the
 * old thread's errno after the receive. goro.h's macro calls
 * goro_errno_location() anew on each use.
 */
static int __attribute__((noinline)) set_errno_then_park(int value, wake_msg *msg) {
  errno = value;
  CHECK_OK(goro_chan_recv(ping, msg));
  return errno;
}

static int errno_migration_main(void *arg) {
  int migrations = 0, onto_waker_thread = 0, rounds = 0;
  (void)arg;

  start_helpers();
  for (; rounds < MAX_ROUNDS && migrations < MIGRATIONS_WANTED; rounds++) {
    int mine = 1000000 + rounds;
    wake_msg msg;

    int before = goro_worker_index();
    int seen = set_errno_then_park(mine, &msg);
    int after = goro_worker_index();

    if (seen != mine)
      FAIL("round %d: errno is %d after resuming on worker %d (parked on %d), expected %d", rounds,
           seen, after, before, mine);
    if (errno != mine)
      FAIL("round %d: errno changed to %d on a second read", rounds, errno);
    if (after != before) {
      migrations++;
      /* That thread's errno was the waker's just before this goroutine
       * resumed, and the waker's value differs from ours. */
      if (msg.worker == after) {
        onto_waker_thread++;
        CHECK_NE(msg.waker_errno, mine);
      }
    }
  }
  stop_helpers();

  printf("errno: %d migrations in %d rounds, %d onto the thread whose errno a waker had just set\n",
         migrations, rounds, onto_waker_thread);
  if (migrations < MIGRATIONS_WANTED)
    FAIL("only %d migrations in %d rounds: the test did not exercise migration", migrations,
         rounds);
  CHECK_GT(onto_waker_thread, 0);
  return 0;
}

TEST(errno_follows_goroutine_across_workers) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(errno_migration_main, NULL);
}

static int errno_turns[2];

static void errno_owner(void *arg) {
  int self = (int)(intptr_t)arg;
  int mine = 111 * (self + 1);

  for (int i = 0; i < 100; i++) {
    errno = mine;
    CHECK_OK(goro_yield()); /* the other goroutine runs on this thread */
    if (errno != mine)
      FAIL("goroutine %d: errno is %d after a yield, expected %d", self, errno, mine);
    errno_turns[self]++;
  }
}

static int errno_one_worker_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_spawn(errno_owner, (void *)0));
  CHECK_OK(goro_spawn(errno_owner, (void *)1));
  while (errno_turns[0] < 100 || errno_turns[1] < 100)
    CHECK_OK(goro_sleep(1 * MS));
  return 0;
}

TEST(errno_is_per_goroutine_on_one_thread) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(errno_one_worker_main, NULL);
}

static int child_errno = -1;

static void read_errno(void *arg) {
  (void)arg;
  __atomic_store_n(&child_errno, errno, __ATOMIC_RELEASE);
}

static int errno_start_main(void *arg) {
  (void)arg;
  /* The thread's errno from before goro_run did not leak in. */
  CHECK_EQ(errno, 0);

  errno = 77;
  CHECK_OK(goro_spawn(read_errno, NULL));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_EQ(__atomic_load_n(&child_errno, __ATOMIC_ACQUIRE), 0);
  CHECK_EQ(errno, 77);
  return 0;
}

TEST(new_goroutine_starts_with_errno_zero) {
  errno = 5;
  RUN_MAIN(errno_start_main, NULL);
}

/* ---- Thread-locals ---------------------------------------------------- */

static __thread int thread_marker;

/* Called through a volatile pointer so that the compiler computes the
 * address on the thread running at each call. Within one function, gcc may
 * compute the address of a __thread variable once and reuse it after a
 * call that parks. */
static int *thread_marker_address(void) { return &thread_marker; }
static int *(*volatile marker_address)(void) = thread_marker_address;

static int tls_migration_main(void *arg) {
  int migrations = 0, rounds = 0;
  (void)arg;

  start_helpers();
  for (; rounds < MAX_ROUNDS && migrations < MIGRATIONS_WANTED; rounds++) {
    wake_msg msg;

    int before = goro_worker_index();
    int *before_addr = marker_address();
    *before_addr = 100 + before; /* only this goroutine writes markers */
    CHECK_OK(goro_chan_recv(ping, &msg));
    int after = goro_worker_index();
    int *after_addr = marker_address();

    if (after == before) {
      CHECK(after_addr == before_addr);
      CHECK_EQ(*after_addr, 100 + before);
      continue;
    }
    migrations++;
    /* Another thread, another copy: the value written before the park
     * stayed with the old thread. */
    CHECK(after_addr != before_addr);
    CHECK_EQ(*before_addr, 100 + before);
    if (*after_addr != 0 && *after_addr != 100 + after)
      FAIL("worker %d's copy is %d, expected 0 or %d", after, *after_addr, 100 + after);
  }
  stop_helpers();

  printf("__thread: %d migrations in %d rounds\n", migrations, rounds);
  if (migrations < MIGRATIONS_WANTED)
    FAIL("only %d migrations in %d rounds: the test did not exercise migration", migrations,
         rounds);
  return 0;
}

TEST(thread_local_stays_with_thread_on_migration) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(tls_migration_main, NULL);
}
