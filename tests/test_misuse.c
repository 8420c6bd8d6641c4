/*
 * Misuse: bad arguments, calls in the wrong state and calls from the wrong
 * thread. Each must return its documented GORO_E* code and leave the
 * runtime working. None may crash, and because each test is its own
 * process, a crash fails just that test.
 */
#include <limits.h>
#include <pthread.h>

#include "harness.h"

#define MS ((int64_t)1000000)

static void nothing(void *arg) { (void)arg; }

static int return_zero(void *arg) {
  (void)arg;
  return 0;
}

/* ---- Spawn ------------------------------------------------------------ */

static int spawn_null_main(void *arg) {
  (void)arg;
  CHECK_ERR(goro_spawn(NULL, NULL), GORO_EINVAL);
  CHECK_ERR(goro_spawn_with(NULL, NULL, NULL), GORO_EINVAL);

  goro_spawn_opts opts = {0};
  CHECK_ERR(goro_spawn_with(NULL, NULL, &opts), GORO_EINVAL);
  return 0;
}

TEST(spawn_null_fn_returns_einval) {
  /* fn is checked before the runtime state. */
  CHECK_ERR(goro_spawn(NULL, NULL), GORO_EINVAL);
  RUN_MAIN(spawn_null_main, NULL);
}

static int spawn_opts_main(void *arg) {
  (void)arg;
  size_t max = goro_max_stack();

  goro_spawn_opts huge_max = {.max_stack = GORO_MAX_MAX_STACK + 1};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &huge_max), GORO_EINVAL);
  goro_spawn_opts size_max = {.max_stack = SIZE_MAX};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &size_max), GORO_EINVAL);

  /* A hint above the goroutine's own maximum, or above the global one
   * when the options leave the maximum at 0. */
  goro_spawn_opts hint_over_own = {.max_stack = 64 << 10, .stack_hint = (64 << 10) + 4096};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &hint_over_own), GORO_EINVAL);
  goro_spawn_opts hint_over_global = {.stack_hint = max + 4096};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &hint_over_global), GORO_EINVAL);
  goro_spawn_opts hint_huge = {.stack_hint = SIZE_MAX};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &hint_huge), GORO_EINVAL);

  /* A size field too small to hold the options is a caller bug. */
  goro_spawn_opts tiny = {.size = 1};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &tiny), GORO_EINVAL);

  /* None of the rejected spawns made a goroutine, and good options still
   * work. */
  goro_memstats st = {.size = sizeof st};
  CHECK_OK(goro_read_memstats(&st));
  CHECK_EQ(st.goroutines, 1);
  goro_spawn_opts good = {.size = sizeof good, .max_stack = 64 << 10, .stack_hint = 8192};
  CHECK_GT(goro_spawn_with(nothing, NULL, &good), 0);
  return 0;
}

TEST(spawn_rejects_absurd_options) { RUN_MAIN(spawn_opts_main, NULL); }

TEST(spawn_outside_run_returns_estate) {
  CHECK_ERR(goro_spawn(nothing, NULL), GORO_ESTATE);
  goro_spawn_opts opts = {0};
  CHECK_ERR(goro_spawn_with(nothing, NULL, &opts), GORO_ESTATE);

  /* Also once a run is over. */
  RUN_MAIN(return_zero, NULL);
  CHECK_ERR(goro_spawn(nothing, NULL), GORO_ESTATE);
}

/* ---- Settings --------------------------------------------------------- */

TEST(set_max_stack_rejects_zero_and_huge) {
  size_t before = goro_max_stack();

  CHECK_EQ(goro_set_max_stack(0), 0);
  CHECK_EQ(goro_max_stack(), before);
  CHECK_EQ(goro_set_max_stack(SIZE_MAX), 0);
  CHECK_EQ(goro_max_stack(), before);
  CHECK_EQ(goro_set_max_stack(GORO_MAX_MAX_STACK + 1), 0);
  CHECK_EQ(goro_max_stack(), before);

  /* An accepted value returns the previous maximum. */
  CHECK_EQ(goro_set_max_stack(GORO_MIN_MAX_STACK), before);
  CHECK_EQ(goro_max_stack(), GORO_MIN_MAX_STACK);
  CHECK_EQ(goro_set_max_stack(GORO_MAX_MAX_STACK), GORO_MIN_MAX_STACK);
  CHECK_EQ(goro_max_stack(), GORO_MAX_MAX_STACK);
}

TEST(set_max_stack_rounds_tiny_values_up) {
  size_t before = goro_max_stack();

  /* Below the smallest class is not an error: it rounds up to that class. */
  CHECK_EQ(goro_set_max_stack(1), before);
  CHECK_EQ(goro_max_stack(), GORO_MIN_MAX_STACK);
  CHECK_EQ(goro_set_max_stack(GORO_MIN_MAX_STACK - 1), GORO_MIN_MAX_STACK);
  CHECK_EQ(goro_max_stack(), GORO_MIN_MAX_STACK);
}

TEST(set_maxprocs_rejects_out_of_range) {
  CHECK_ERR(goro_set_maxprocs(-1), GORO_EINVAL);
  CHECK_ERR(goro_set_maxprocs(INT_MIN), GORO_EINVAL);
  CHECK_ERR(goro_set_maxprocs(1025), GORO_EINVAL);
  CHECK_ERR(goro_set_maxprocs(INT_MAX), GORO_EINVAL);
  CHECK_OK(goro_set_maxprocs(1));
  CHECK_OK(goro_set_maxprocs(1024));
  CHECK_OK(goro_set_maxprocs(0));
}

/* ---- NULL arguments --------------------------------------------------- */

static void check_null_arguments(void) {
  goro_chan *c = (goro_chan *)&c; /* any non-NULL value that make must clear */
  int v = 0;

  CHECK_ERR(goro_chan_make(NULL, sizeof v, 0), GORO_EINVAL);
  CHECK_ERR(goro_chan_make(&c, SIZE_MAX, 0), GORO_EINVAL);
  CHECK(c == NULL);
  c = (goro_chan *)&c;
  CHECK_ERR(goro_chan_make(&c, 8, SIZE_MAX / 4), GORO_EINVAL);
  CHECK(c == NULL);

  CHECK_ERR(goro_chan_free(NULL), GORO_EINVAL);
  CHECK_ERR(goro_chan_send(NULL, &v), GORO_EINVAL);
  CHECK_ERR(goro_chan_recv(NULL, &v), GORO_EINVAL);
  CHECK_ERR(goro_chan_try_send(NULL, &v), GORO_EINVAL);
  CHECK_ERR(goro_chan_try_recv(NULL, &v), GORO_EINVAL);
  CHECK_ERR(goro_chan_close(NULL), GORO_EINVAL);
  CHECK_ERR(goro_chan_len(NULL), GORO_EINVAL);
  CHECK_ERR(goro_chan_cap(NULL), GORO_EINVAL);

  CHECK_ERR(goro_select(NULL, 1, false), GORO_EINVAL);
  CHECK_ERR(goro_select(NULL, 1, true), GORO_EINVAL);
  goro_select_case bad_op = {.chan = NULL, .op = 0, .elem = &v};
  CHECK_ERR(goro_select(&bad_op, 1, true), GORO_EINVAL);
  bad_op.op = GORO_SELECT_SEND | GORO_SELECT_RECV;
  CHECK_ERR(goro_select(&bad_op, 1, true), GORO_EINVAL);

  CHECK_ERR(goro_mutex_lock(NULL), GORO_EINVAL);
  CHECK_ERR(goro_mutex_trylock(NULL), GORO_EINVAL);
  CHECK_ERR(goro_mutex_unlock(NULL), GORO_EINVAL);
  CHECK_ERR(goro_wg_add(NULL, 1), GORO_EINVAL);
  CHECK_ERR(goro_wg_done(NULL), GORO_EINVAL);
  CHECK_ERR(goro_wg_wait(NULL), GORO_EINVAL);

  uintptr_t lo, hi;
  CHECK_ERR(goro_stack_bounds(NULL, &hi), GORO_EINVAL);
  CHECK_ERR(goro_stack_bounds(&lo, NULL), GORO_EINVAL);
  CHECK_ERR(goro_read_memstats(NULL), GORO_EINVAL);
  goro_memstats unsized = {.size = 0};
  CHECK_ERR(goro_read_memstats(&unsized), GORO_EINVAL);
}

static int null_arguments_main(void *arg) {
  (void)arg;
  check_null_arguments();
  return 0;
}

TEST(null_arguments_return_einval) {
  check_null_arguments(); /* before any run */
  RUN_MAIN(null_arguments_main, NULL);
}

/* ---- Blocking calls outside a goroutine ------------------------------- */

/* Makes every blocking call in a state where it would have to wait and
 * checks that each returns GORO_ENOTGORO and leaves nothing queued. */
static void check_blocking_calls_refused(void) {
  goro_chan *unbuffered, *full;
  goro_mutex held = GORO_MUTEX_INIT;
  goro_waitgroup pending = GORO_WAITGROUP_INIT;
  int v = 1;

  CHECK_EQ(goro_id(), 0);
  CHECK_EQ(goro_worker_index(), -1);
  CHECK_EQ(goro_stack_remaining(), 0);
  uintptr_t lo, hi;
  CHECK_ERR(goro_stack_bounds(&lo, &hi), GORO_ENOTGORO);

  CHECK_ERR(goro_yield(), GORO_ENOTGORO);
  CHECK_ERR(goro_sleep(1 * MS), GORO_ENOTGORO);
  CHECK_ERR(goro_sleep(0), GORO_ENOTGORO);
  CHECK_ERR(goro_exit(), GORO_ENOTGORO);

  CHECK_OK(goro_chan_make(&unbuffered, sizeof v, 0));
  CHECK_OK(goro_chan_make(&full, sizeof v, 1));
  CHECK_OK(goro_chan_try_send(full, &v)); /* non-blocking calls work here */
  CHECK_ERR(goro_chan_send(unbuffered, &v), GORO_ENOTGORO);
  CHECK_ERR(goro_chan_send(full, &v), GORO_ENOTGORO);
  CHECK_ERR(goro_chan_recv(unbuffered, &v), GORO_ENOTGORO);
  goro_select_case cases[] = {
      {.chan = unbuffered, .op = GORO_SELECT_RECV, .elem = &v},
      {.chan = full, .op = GORO_SELECT_SEND, .elem = &v},
  };
  CHECK_ERR(goro_select(cases, 2, false), GORO_ENOTGORO);
  CHECK_ERR(goro_select(NULL, 0, false), GORO_ENOTGORO);
  /* The non-blocking select is not a blocking call. */
  CHECK_ERR(goro_select(cases, 2, true), GORO_EAGAIN);

  /* No waiter was left on either channel. */
  CHECK_OK(goro_chan_try_recv(full, &v));
  CHECK_OK(goro_chan_free(unbuffered));
  CHECK_OK(goro_chan_free(full));

  CHECK_OK(goro_mutex_trylock(&held));
  CHECK_ERR(goro_mutex_lock(&held), GORO_ENOTGORO);
  CHECK_OK(goro_mutex_unlock(&held));
  CHECK_ERR(goro_mutex_unlock(&held), GORO_EINVAL); /* the refused lock did not take it */

  CHECK_OK(goro_wg_add(&pending, 1));
  CHECK_ERR(goro_wg_wait(&pending), GORO_ENOTGORO);
  CHECK_OK(goro_wg_done(&pending));
  CHECK_OK(goro_wg_wait(&pending)); /* count 0: returns without waiting */
}

TEST(blocking_calls_before_run_return_enotgoro) { check_blocking_calls_refused(); }

static goro_chan *thread_done;

static void *refuse_from_thread(void *arg) {
  int one = 1;
  (void)arg;

  check_blocking_calls_refused();
  /* Spawning and the non-blocking calls work from a plain thread. */
  CHECK_GT(goro_spawn(nothing, NULL), 0);
  CHECK_OK(goro_chan_try_send(thread_done, &one));
  return NULL;
}

static int thread_refusal_main(void *arg) {
  pthread_t thread;
  int got = 0;
  (void)arg;

  CHECK_OK(goro_chan_make(&thread_done, sizeof got, 1));
  CHECK_EQ(pthread_create(&thread, NULL, refuse_from_thread, NULL), 0);
  /* Wait on the channel, not in pthread_join, so this worker stays free. */
  CHECK_OK(goro_chan_recv(thread_done, &got));
  CHECK_EQ(got, 1);
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_OK(goro_chan_free(thread_done));
  return 0;
}

TEST(blocking_calls_from_pthread_return_enotgoro) { RUN_MAIN(thread_refusal_main, NULL); }

/* ---- goro_run in the wrong state -------------------------------------- */

TEST(goro_run_null_returns_einval) {
  CHECK_ERR(goro_run(NULL, NULL), GORO_EINVAL);
  /* The refusal did not leave the runtime half started. */
  RUN_MAIN(return_zero, NULL);
}

static void *run_from_thread(void *arg) {
  *(int *)arg = goro_run(return_zero, NULL);
  return NULL;
}

static int nested_run_main(void *arg) {
  pthread_t thread;
  int thread_rc = 0;
  (void)arg;

  CHECK_ERR(goro_run(return_zero, NULL), GORO_ESTATE);

  /* From another thread while this run goes on. */
  CHECK_EQ(pthread_create(&thread, NULL, run_from_thread, &thread_rc), 0);
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_ERR(thread_rc, GORO_ESTATE);

  /* This run still works. */
  CHECK_GT(goro_spawn(nothing, NULL), 0);
  CHECK_OK(goro_yield());
  return 3;
}

TEST(goro_run_while_running_returns_estate) {
  CHECK_EQ(goro_run(nested_run_main, NULL), 3);
  RUN_MAIN(return_zero, NULL);
}

/* ---- Error messages --------------------------------------------------- */

TEST(strerror_names_every_code) {
#define MISUSE_ERROR_ENTRY(name, value, message) {#name, value, message},
  static const struct {
    const char *name;
    int code;
    const char *message;
  } errors[] = {GORO_ERRORS(MISUSE_ERROR_ENTRY)};
#undef MISUSE_ERROR_ENTRY
  size_t n = sizeof errors / sizeof errors[0];

  for (size_t i = 0; i < n; i++) {
    const char *msg = goro_strerror(errors[i].code);
    CHECK(msg != NULL);
    if (strcmp(msg, errors[i].message) != 0)
      FAIL("goro_strerror(%s) is \"%s\", expected \"%s\"", errors[i].name, msg, errors[i].message);
    if (strcmp(msg, "unknown error") == 0)
      FAIL("%s has the message for unknown codes", errors[i].name);
    CHECK_LT(errors[i].code, 0);
    for (size_t j = 0; j < i; j++) {
      CHECK_NE(errors[i].code, errors[j].code);
      if (strcmp(msg, goro_strerror(errors[j].code)) == 0)
        FAIL("%s and %s share the message \"%s\"", errors[i].name, errors[j].name, msg);
    }
  }

  int lowest = 0;
  for (size_t i = 0; i < n; i++)
    if (errors[i].code < lowest)
      lowest = errors[i].code;
  const int unknown[] = {1, 42, lowest - 1, lowest - 1000, INT_MAX, INT_MIN};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    const char *msg = goro_strerror(unknown[i]);
    CHECK(msg != NULL);
    if (strcmp(msg, "unknown error") != 0)
      FAIL("goro_strerror(%d) is \"%s\", expected \"unknown error\"", unknown[i], msg);
  }
}
