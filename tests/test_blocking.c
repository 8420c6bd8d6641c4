/*
 * goro_run_blocking: the function runs on a pool thread while the caller
 * parks and its worker runs other goroutines. Also checked: calls beyond
 * the pool's threads queue, bad arguments, calls from outside a goroutine,
 * errno, and goro_run waiting for the calls still running when main
 * returns.
 */
#include "harness.h" /* first: it defines _GNU_SOURCE for gettid */

#include <pthread.h>
#include <stdint.h>

#define MS ((int64_t)1000000)

/* The pool's thread limit, MAX_THREADS in src/blocking.c. */
#define POOL_THREADS 64

/* Sleeps until *counter reaches at least want, or fails after 10 s. */
static void wait_for_count(int *counter, int want) {
  int64_t deadline = harness_now_ns() + 10000 * MS;

  while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < want && harness_now_ns() < deadline)
    CHECK_OK(goro_sleep(1 * MS));
  CHECK_GE(__atomic_load_n(counter, __ATOMIC_ACQUIRE), want);
}

/* Sleeps the calling thread, not just the goroutine. */
static void thread_sleep(int64_t ns) {
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* ---- The function runs elsewhere and the worker keeps running ---------- */

static int ticks;
static int ticker_stop;

static void ticker(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&ticker_stop, __ATOMIC_ACQUIRE)) {
    __atomic_fetch_add(&ticks, 1, __ATOMIC_RELEASE);
    CHECK_OK(goro_sleep(1 * MS));
  }
}

typedef struct sleeper_job {
  pid_t tid;
  int ticks_before, ticks_after;
} sleeper_job;

static void sleep_100ms(void *arg) {
  sleeper_job *job = arg;

  job->tid = gettid();
  job->ticks_before = __atomic_load_n(&ticks, __ATOMIC_ACQUIRE);
  thread_sleep(100 * MS);
  job->ticks_after = __atomic_load_n(&ticks, __ATOMIC_ACQUIRE);
}

static int another_thread_main(void *arg) {
  sleeper_job job = {0};
  (void)arg;

  CHECK_GT(goro_spawn(ticker, NULL), 0);
  wait_for_count(&ticks, 1);

  pid_t caller = gettid();
  int64_t start = harness_now_ns();
  CHECK_EQ(goro_run_blocking(sleep_100ms, &job), 0);
  int64_t elapsed = harness_now_ns() - start;
  __atomic_store_n(&ticker_stop, 1, __ATOMIC_RELEASE);

  if (job.tid == caller)
    FAIL("the function ran on the caller's thread %d", (int)caller);
  CHECK_EQ(gettid(), caller); /* one worker: main resumes on it */
  CHECK_GE(elapsed, 100 * MS);
  /* The ticker wakes every millisecond. It can only have run meanwhile if
   * the caller parked instead of holding the only worker. */
  if (job.ticks_after - job.ticks_before < 10)
    FAIL("the ticker advanced %d times during the 100 ms call, expected at least 10",
         job.ticks_after - job.ticks_before);
  printf("ticker advanced %d times during the 100 ms call\n",
         job.ticks_after - job.ticks_before);
  return 0;
}

TEST(run_blocking_runs_fn_on_another_thread) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(another_thread_main, NULL);
}

/* ---- More calls than pool threads ------------------------------------- */

#define MANY_CALLS 200

static goro_waitgroup many_wg;
static int in_flight, max_in_flight, completed;
static pid_t pool_tids[MANY_CALLS];
static int pool_tid_count;

/* Adds tid to pool_tids unless it is there already. */
static void note_tid(pid_t tid) {
  for (;;) {
    int n = __atomic_load_n(&pool_tid_count, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++)
      if (__atomic_load_n(&pool_tids[i], __ATOMIC_ACQUIRE) == tid)
        return;
    /* Claim slot n. If another thread took it first, look again. */
    pid_t empty = 0;
    if (__atomic_compare_exchange_n(&pool_tids[n], &empty, tid, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
      __atomic_fetch_add(&pool_tid_count, 1, __ATOMIC_RELEASE);
      return;
    }
    while (__atomic_load_n(&pool_tid_count, __ATOMIC_ACQUIRE) == n)
      ;
  }
}

static void overlapping_call(void *arg) {
  (void)arg;
  int now = __atomic_add_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
  int seen = __atomic_load_n(&max_in_flight, __ATOMIC_RELAXED);
  while (now > seen && !__atomic_compare_exchange_n(&max_in_flight, &seen, now, false,
                                                    __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    ;
  note_tid(gettid());
  thread_sleep(20 * MS);
  __atomic_sub_fetch(&in_flight, 1, __ATOMIC_ACQ_REL);
  __atomic_fetch_add(&completed, 1, __ATOMIC_RELEASE);
}

static void call_blocking(void *arg) {
  CHECK_EQ(goro_run_blocking(overlapping_call, arg), 0);
  CHECK_OK(goro_wg_done(&many_wg));
}

static int many_calls_main(void *arg) {
  (void)arg;
  int64_t start = harness_now_ns();

  for (int i = 0; i < MANY_CALLS; i++) {
    CHECK_OK(goro_wg_add(&many_wg, 1));
    CHECK_GT(goro_spawn(call_blocking, NULL), 0);
  }
  CHECK_OK(goro_wg_wait(&many_wg));
  int64_t elapsed = harness_now_ns() - start;

  CHECK_EQ(__atomic_load_n(&completed, __ATOMIC_ACQUIRE), MANY_CALLS);
  CHECK_LE(max_in_flight, POOL_THREADS);
  CHECK_LE(pool_tid_count, POOL_THREADS);
  /* At most 64 run at once, so 200 calls of 20 ms take four rounds. */
  CHECK_GE(elapsed, (MANY_CALLS + POOL_THREADS - 1) / POOL_THREADS * 20 * MS);
  CHECK_GT(max_in_flight, 1);
  printf("%d calls of 20 ms: at most %d at once, on %d pool threads, in %.0f ms\n", MANY_CALLS,
         max_in_flight, pool_tid_count, (double)elapsed / 1e6);
  return 0;
}

TEST(run_blocking_queues_calls_beyond_pool) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(many_calls_main, NULL);
}

/* ---- Bad arguments and calls outside a goroutine ----------------------- */

static void record_tid(void *arg) { *(pid_t *)arg = gettid(); }

static int null_fn_main(void *arg) {
  (void)arg;
  CHECK_ERR(goro_run_blocking(NULL, NULL), GORO_EINVAL);
  return 0;
}

TEST(run_blocking_null_fn_returns_einval) {
  CHECK_ERR(goro_run_blocking(NULL, NULL), GORO_EINVAL);
  RUN_MAIN(null_fn_main, NULL);
}

static int thread_done;
static pid_t thread_tid, thread_fn_tid;

static void *plain_thread_main(void *arg) {
  (void)arg;
  thread_tid = gettid();
  CHECK_EQ(goro_run_blocking(record_tid, &thread_fn_tid), 0);
  __atomic_store_n(&thread_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static int plain_thread_while_running_main(void *arg) {
  pthread_t thread;
  (void)arg;

  CHECK_EQ(pthread_create(&thread, NULL, plain_thread_main, NULL), 0);
  wait_for_count(&thread_done, 1);
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_EQ(thread_fn_tid, thread_tid);
  return 0;
}

TEST(run_blocking_outside_goroutine_calls_directly) {
  pid_t fn_tid = 0;

  /* No runtime at all. */
  CHECK_EQ(goro_run_blocking(record_tid, &fn_tid), 0);
  CHECK_EQ(fn_tid, gettid());

  /* A plain thread while the runtime runs. */
  RUN_MAIN(plain_thread_while_running_main, NULL);
}

/* ---- errno ------------------------------------------------------------ */

typedef struct errno_job {
  int fn_errno;
} errno_job;

static void set_errno(void *arg) {
  errno = ENOSPC;
  ((errno_job *)arg)->fn_errno = errno;
}

static int errno_main(void *arg) {
  errno_job job = {0};
  (void)arg;

  errno = EDOM;
  CHECK_EQ(goro_run_blocking(set_errno, &job), 0);
  /* The function set the pool thread's errno, not the caller's. */
  CHECK_EQ(job.fn_errno, ENOSPC);
  if (errno != EDOM)
    FAIL("errno is %d after goro_run_blocking, expected the caller's EDOM (%d)", errno, EDOM);
  return 0;
}

TEST(run_blocking_keeps_caller_errno) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(errno_main, NULL);
}

/* ---- goro_run waits for blocking calls -------------------------------- */

#define LATE_CALLS 100

static int late_submitted, late_finished;

static void slow_call(void *arg) {
  (void)arg;
  thread_sleep(50 * MS);
  __atomic_fetch_add(&late_finished, 1, __ATOMIC_RELEASE);
}

static void submit_slow_call(void *arg) {
  (void)arg;
  __atomic_fetch_add(&late_submitted, 1, __ATOMIC_RELEASE);
  goro_run_blocking(slow_call, NULL);
}

static int late_main(void *arg) {
  (void)arg;

  for (int i = 0; i < LATE_CALLS; i++)
    CHECK_GT(goro_spawn(submit_slow_call, NULL), 0);
  wait_for_count(&late_submitted, LATE_CALLS);
  /* Return while calls run on the pool and more wait in its queue. */
  CHECK_LT(__atomic_load_n(&late_finished, __ATOMIC_ACQUIRE), LATE_CALLS);
  return 0;
}

TEST(goro_run_waits_for_blocking_calls) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(late_main, NULL);
  /* Every call that was submitted ran to the end, the queued ones too. */
  CHECK_EQ(__atomic_load_n(&late_finished, __ATOMIC_ACQUIRE), LATE_CALLS);
}
