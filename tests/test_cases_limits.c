/*
 * Stack limits at their edges, and heavy C library code on goroutine stacks.
 *
 * - goro_set_max_stack rounds to the power-of-two class, rejects 0 and
 *   values above GORO_MAX_MAX_STACK by returning 0, and keeps 64-bit values
 *   whole: 4 GiB + 4 KiB must not wrap to 4 KiB. Go's debug.SetMaxStack of
 *   exactly 4 GiB once crashed the runtime, so that value is exercised too.
 * - Large maxima hold an 8 MiB recursion, and the smallest class ends in the
 *   fatal report, never in a bare SIGSEGV.
 * - glibc's printf, qsort, a 32 KiB local array and a callback that parks
 *   the goroutine from inside qsort all work on a default-size stack.
 */
#include "stack_check.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define GIB ((size_t)1 << 30)

/* Recurses with frames of about 256 bytes until a frame lies below stop.
 * Not static, so that fatal reports can name it. */
int limits_recurse(uintptr_t stop);

__attribute__((noinline)) int limits_recurse(uintptr_t stop) {
  volatile uint8_t pad[224];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  int depth = 1;

  pad[0] = (uint8_t)(frame >> 4);
  if (frame > stop) {
    int below = limits_recurse(stop);
    depth = below < 0 ? below : below + 1;
  }
  return pad[0] == (uint8_t)(frame >> 4) ? depth : -1;
}

/* ---- Setting the maximum ---------------------------------------------- */

typedef struct max_stack_step {
  size_t request;   /* passed to goro_set_max_stack */
  size_t returned;  /* expected return: the previous maximum, or 0 if rejected */
  size_t read_back; /* expected goro_max_stack() afterwards */
} max_stack_step;

/* Runs the steps in order, starting from the default maximum. A step
 * expects the previous step's setting back unless its request is rejected. */
static void run_max_stack_steps(const max_stack_step *steps, size_t n) {
  CHECK_EQ(goro_max_stack(), GORO_DEFAULT_MAX_STACK);
  for (size_t i = 0; i < n; i++) {
    size_t returned = goro_set_max_stack(steps[i].request);
    size_t now = goro_max_stack();
    if (returned != steps[i].returned)
      FAIL("goro_set_max_stack(%zu) returned %zu, expected %zu", steps[i].request, returned,
           steps[i].returned);
    if (now != steps[i].read_back)
      FAIL("after goro_set_max_stack(%zu), goro_max_stack() is %zu, expected %zu",
           steps[i].request, now, steps[i].read_back);
  }
}

TEST(max_stack_rounds_up_to_class) {
  const max_stack_step steps[] = {
      {2047, GORO_DEFAULT_MAX_STACK, 16 * KIB},
      {4096, 16 * KIB, 16 * KIB},
      {16 * KIB + 1, 16 * KIB, 32 * KIB},
      {4 * GIB - 1, 32 * KIB, 4 * GIB},
      {4 * GIB, 4 * GIB, 4 * GIB},
      {4 * GIB + 4 * KIB, 4 * GIB, 8 * GIB},
      {GORO_MAX_MAX_STACK, 8 * GIB, GORO_MAX_MAX_STACK},
      {1, GORO_MAX_MAX_STACK, 16 * KIB},
  };
  run_max_stack_steps(steps, sizeof steps / sizeof steps[0]);
}

TEST(max_stack_rejects_zero_and_too_large) {
  const max_stack_step steps[] = {
      {0, 0, GORO_DEFAULT_MAX_STACK},
      {4 * GIB + 4 * KIB, GORO_DEFAULT_MAX_STACK, 8 * GIB},
      {0, 0, 8 * GIB},
      {GORO_MAX_MAX_STACK + 1, 0, 8 * GIB},
      {SIZE_MAX, 0, 8 * GIB},
      {SIZE_MAX / 2 + 1, 0, 8 * GIB},
  };
  run_max_stack_steps(steps, sizeof steps / sizeof steps[0]);
}

/* A 4 GiB + 4 KiB maximum truncated to 32 bits would become 4 KiB, whose
 * class is 16 KiB. The statistics must report the 8 GiB class as well. */
static int max_stack_no_truncation_main(void *arg) {
  goro_memstats s = {.size = sizeof s};
  (void)arg;

  CHECK(goro_set_max_stack(4 * GIB + 4 * KIB) != 0);
  CHECK_OK(goro_read_memstats(&s));
  if (s.max_stack != 8 * GIB)
    FAIL("memstats max_stack is %llu after setting 4 GiB + 4 KiB, expected 8 GiB",
         (unsigned long long)s.max_stack);
  return 0;
}

TEST(max_stack_keeps_64bit_values_whole) { RUN_MAIN(max_stack_no_truncation_main, NULL); }

static void spawn_opts_reject(void *arg) { (void)arg; }

static int spawn_max_bounds_main(void *arg) {
  goro_spawn_opts too_large = {.size = sizeof too_large, .max_stack = GORO_MAX_MAX_STACK + 1};
  goro_spawn_opts huge = {.size = sizeof huge, .max_stack = SIZE_MAX};
  goro_spawn_opts hint_above_max = {.size = sizeof hint_above_max, .max_stack = 64 * KIB,
                                    .stack_hint = 128 * KIB};
  (void)arg;

  CHECK_ERR(goro_spawn_with(spawn_opts_reject, NULL, &too_large), GORO_EINVAL);
  CHECK_ERR(goro_spawn_with(spawn_opts_reject, NULL, &huge), GORO_EINVAL);
  CHECK_ERR(goro_spawn_with(spawn_opts_reject, NULL, &hint_above_max), GORO_EINVAL);
  return 0;
}

TEST(spawn_rejects_max_above_limit) { RUN_MAIN(spawn_max_bounds_main, NULL); }

/* ---- Deep recursion on large maxima ----------------------------------- */

typedef struct deep_run {
  size_t global_max;  /* goro_set_max_stack before the spawn, 0 to leave it */
  size_t spawn_max;   /* per-spawn maximum, 0 for the global one */
  size_t depth;       /* bytes to recurse */
  size_t expect_size; /* expected hi - lo */
} deep_run;

static goro_waitgroup deep_wg = GORO_WAITGROUP_INIT;

static void deep_goroutine(void *arg) {
  deep_run *run = arg;
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  if (hi - lo != run->expect_size)
    FAIL("the goroutine's stack is %lu bytes, expected %zu", (unsigned long)(hi - lo),
         run->expect_size);
  int depth = limits_recurse(hi - run->depth);
  if (depth < 0)
    FAIL("a frame changed during the %zu-byte recursion", run->depth);
  CHECK_OK(goro_wg_done(&deep_wg));
}

static int deep_main(void *arg) {
  deep_run *run = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = run->spawn_max};

  if (run->global_max)
    CHECK(goro_set_max_stack(run->global_max) != 0);
  CHECK_OK(goro_wg_add(&deep_wg, 1));
  CHECK_OK(goro_spawn_with(deep_goroutine, run, &opts));
  CHECK_OK(goro_wg_wait(&deep_wg));
  return 0;
}

TEST(recursion_to_8m_fits_set_16m_max) {
  deep_run run = {.global_max = 16 * MIB, .depth = 8 * MIB, .expect_size = 16 * MIB};
  RUN_MAIN(deep_main, &run);
}

TEST(recursion_to_8m_fits_spawn_16m_max) {
  deep_run run = {.spawn_max = 16 * MIB, .depth = 8 * MIB, .expect_size = 16 * MIB};
  RUN_MAIN(deep_main, &run);
}

TEST(recursion_to_8m_fits_set_4g_max) {
  deep_run run = {.global_max = 4 * GIB, .depth = 8 * MIB, .expect_size = 4 * GIB};
  RUN_MAIN(deep_main, &run);
}

/* TSan's shadow memory takes most of the address space, so goro_stack_init
 * falls back to a smaller arena (736 GiB, 32 GiB per size class, with the
 * TSan of GCC 12 on x86-64). It has no room for a 64 GiB slot, so the spawn
 * fails with GORO_ENOMEM. */
TEST(recursion_to_8m_fits_spawn_64g_max) {
  deep_run run = {.spawn_max = GORO_MAX_MAX_STACK, .depth = 8 * MIB,
                  .expect_size = GORO_MAX_MAX_STACK};

  if (harness_under("tsan"))
    SKIP("under TSan the stack arena has no room for a 64 GiB slot");
  RUN_MAIN(deep_main, &run);
}

/* ---- Small maxima overflow cleanly ------------------------------------ */

static void small_overflow_goroutine(void *arg) {
  uintptr_t lo, hi;
  (void)arg;

  announce_victim();
  CHECK_OK(goro_stack_bounds(&lo, &hi));
  limits_recurse(lo - 64 * KIB);
  fprintf(stderr, "recursion 64 KiB past the stack returned\n");
  exit(0);
}

static int small_overflow_main(void *arg) {
  deep_run *run = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = run->spawn_max};

  if (run->global_max)
    CHECK(goro_set_max_stack(run->global_max) != 0);
  CHECK_OK(goro_spawn_with(small_overflow_goroutine, NULL, &opts));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

CHILD(child_overflow_set_2047) {
  deep_run run = {.global_max = 2047};
  RUN_MAIN(small_overflow_main, &run);
}

CHILD(child_overflow_set_4096) {
  deep_run run = {.global_max = 4096};
  RUN_MAIN(small_overflow_main, &run);
}

CHILD(child_overflow_spawn_2047) {
  deep_run run = {.spawn_max = 2047};
  RUN_MAIN(small_overflow_main, &run);
}

static void check_small_overflow(const char *child) {
  static child_result res;

  run_child(child, &res);
  check_overflow_child(&res, 16 * KIB);
  CHECK_CONTAINS(res.err, "stack exceeds 16384-byte limit");
}

TEST(max_2047_overflow_is_fatal_report) { check_small_overflow("child_overflow_set_2047"); }
TEST(max_4096_overflow_is_fatal_report) { check_small_overflow("child_overflow_set_4096"); }
TEST(spawn_max_2047_overflow_is_fatal_report) { check_small_overflow("child_overflow_spawn_2047"); }

/* ---- Heavy C library code on a default stack -------------------------- */

static goro_waitgroup heavy_wg = GORO_WAITGROUP_INIT;

/* Runs fn(arg) on a fresh goroutine with the default maximum and waits. */
typedef struct heavy_call {
  void (*fn)(void *arg);
  void *arg;
} heavy_call;

static void heavy_entry(void *arg) {
  heavy_call *call = arg;
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  CHECK_EQ(hi - lo, GORO_DEFAULT_MAX_STACK);
  call->fn(call->arg);
  CHECK_OK(goro_wg_done(&heavy_wg));
}

static int heavy_main(void *arg) {
  CHECK_OK(goro_wg_add(&heavy_wg, 1));
  CHECK_OK(goro_spawn(heavy_entry, arg));
  CHECK_OK(goro_wg_wait(&heavy_wg));
  return 0;
}

static void run_heavy(void (*fn)(void *), void *arg) {
  heavy_call call = {fn, arg};
  RUN_MAIN(heavy_main, &call);
}

/* printf of a long double near the top of its range builds every one of
 * its 4000-odd integer digits in multi-precision arithmetic. */
typedef struct huge_print {
  char on_goroutine[8192];
  int length;
} huge_print;

static void print_huge(void *arg) {
  huge_print *p = arg;
  p->length = snprintf(p->on_goroutine, sizeof p->on_goroutine, "%Lf", 1e4000L);
}

TEST(printf_huge_long_double_on_goroutine) {
  static char on_thread[8192], scientific[64];
  static huge_print p;

  /* The reference is printed here, on the process's own thread stack. */
  int length = snprintf(on_thread, sizeof on_thread, "%Lf", 1e4000L);
  int exponent;
  CHECK(snprintf(scientific, sizeof scientific, "%.30Le", 1e4000L) > 0);
  CHECK(sscanf(strchr(scientific, 'e') + 1, "%d", &exponent) == 1);
  /* %Lf prints exponent + 1 integer digits, a point and 6 decimals, and its
   * leading 20 digits are those of the 31-digit scientific form. */
  CHECK_EQ(length, exponent + 1 + 7);
  CHECK(on_thread[0] == scientific[0]);
  CHECK(strncmp(on_thread + 1, scientific + 2, 19) == 0);

  run_heavy(print_huge, &p);
  CHECK_EQ(p.length, length);
  if (strcmp(p.on_goroutine, on_thread) != 0)
    FAIL("%%Lf of 1e4000L differs on a goroutine: starts \"%.40s\", expected \"%.40s\"",
         p.on_goroutine, on_thread);
}

typedef struct sort_run {
  size_t n;
  int sorted;   /* 1 if the output is in order */
  uint64_t sum_before, sum_after, xor_before, xor_after;
} sort_run;

static int compare_ints(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static void sort_million(void *arg) {
  sort_run *run = arg;
  int *values = malloc(run->n * sizeof *values);
  uint32_t state = 12345;

  CHECK(values != NULL);
  for (size_t i = 0; i < run->n; i++) {
    state = state * 1103515245u + 12345u;
    values[i] = (int)(state >> 1);
    run->sum_before += (uint64_t)values[i];
    run->xor_before ^= (uint64_t)values[i] * 0x9e3779b97f4a7c15ULL;
  }
  qsort(values, run->n, sizeof *values, compare_ints);
  run->sorted = 1;
  for (size_t i = 0; i < run->n; i++) {
    if (i > 0 && values[i - 1] > values[i])
      run->sorted = 0;
    run->sum_after += (uint64_t)values[i];
    run->xor_after ^= (uint64_t)values[i] * 0x9e3779b97f4a7c15ULL;
  }
  free(values);
}

TEST(qsort_million_ints_on_goroutine) {
  sort_run run = {.n = 1000000};

  run_heavy(sort_million, &run);
  CHECK_EQ(run.sorted, 1);
  CHECK_EQ(run.sum_after, run.sum_before);
  CHECK_EQ(run.xor_after, run.xor_before);
}

/* A frame with a 32 KiB local array, as C code on a thread stack has. */
__attribute__((noinline)) static uint64_t sum_32k_local(uint32_t seed) {
  volatile uint32_t local[32 * KIB / sizeof(uint32_t)];
  uint64_t sum = 0;

  for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
    local[i] = seed * (uint32_t)i;
  for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
    sum += local[i];
  return sum;
}

typedef struct local_array_run {
  uint64_t sum;
} local_array_run;

static void call_32k_local(void *arg) {
  local_array_run *run = arg;
  run->sum = sum_32k_local(7);
}

TEST(local_32k_array_on_goroutine) {
  local_array_run run = {0};
  uint64_t expected = 0;

  for (uint32_t i = 0; i < 32 * KIB / sizeof(uint32_t); i++)
    expected += (uint32_t)(7u * i);
  run_heavy(call_32k_local, &run);
  CHECK_EQ(run.sum, expected);
}

/* qsort's comparator hands each comparison to another goroutine over
 * channels and sometimes yields, so the sorting goroutine parks, and may
 * resume on another worker, inside qsort's own frames. */
typedef struct comparison {
  int a, b;
} comparison;

static goro_chan *compare_requests, *compare_replies;
static uint64_t comparisons_made, comparisons_served;

static int compare_via_channel(const void *a, const void *b) {
  comparison request = {*(const int *)a, *(const int *)b};
  int reply = 0;

  CHECK_OK(goro_chan_send(compare_requests, &request));
  CHECK_OK(goro_chan_recv(compare_replies, &reply));
  if (++comparisons_made % 64 == 0)
    CHECK_OK(goro_yield());
  return reply;
}

static void compare_server(void *arg) {
  comparison request;
  (void)arg;

  while (goro_chan_recv(compare_requests, &request) == 0) {
    int reply = (request.a > request.b) - (request.a < request.b);
    comparisons_served++;
    CHECK_OK(goro_chan_send(compare_replies, &reply));
  }
  CHECK_OK(goro_wg_done(&heavy_wg));
}

static void sort_with_parking_comparator(void *arg) {
  sort_run *run = arg;
  int *values = malloc(run->n * sizeof *values);
  uint32_t state = 777;

  CHECK(values != NULL);
  CHECK_OK(goro_chan_make(&compare_requests, sizeof(comparison), 0));
  CHECK_OK(goro_chan_make(&compare_replies, sizeof(int), 0));
  CHECK_OK(goro_wg_add(&heavy_wg, 1));
  CHECK_OK(goro_spawn(compare_server, NULL));

  for (size_t i = 0; i < run->n; i++) {
    state = state * 1103515245u + 12345u;
    values[i] = (int)(state >> 8) % 100000;
    run->sum_before += (uint64_t)values[i];
  }
  qsort(values, run->n, sizeof *values, compare_via_channel);
  run->sorted = 1;
  for (size_t i = 0; i < run->n; i++) {
    if (i > 0 && values[i - 1] > values[i])
      run->sorted = 0;
    run->sum_after += (uint64_t)values[i];
  }
  free(values);
  CHECK_OK(goro_chan_close(compare_requests));
}

TEST(qsort_comparator_parks_goroutine) {
  sort_run run = {.n = harness_sanitizer() ? 1000 : 4000};

  run_heavy(sort_with_parking_comparator, &run);
  CHECK_EQ(run.sorted, 1);
  CHECK_EQ(run.sum_after, run.sum_before);
  CHECK_GE(comparisons_made, run.n - 1);
  CHECK_EQ(comparisons_served, comparisons_made);
  CHECK_OK(goro_chan_free(compare_requests));
  CHECK_OK(goro_chan_free(compare_replies));
}
