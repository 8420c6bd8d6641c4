/*
 * Stack overflow: running past a goroutine's maximum ends the process with
 * goro's fatal report and exit status 2, whatever set the maximum, and the
 * report names the right goroutine, stack and fault. A segmentation fault
 * that is not an overflow is left to the handler that was there before goro.
 *
 * Each overflow runs in a CHILD process; the TEST matches its stderr.
 */
#include "stack_check.h"

/* Recurses with frames of about 256 bytes until a frame lies below stop.
 * Not static, so that the report's backtrace can name it. */
int overflow_recurse(uintptr_t stop);

__attribute__((noinline)) int overflow_recurse(uintptr_t stop) {
  volatile uint8_t pad[224];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  int depth = 1;

  pad[0] = (uint8_t)frame;
  if (frame > stop)
    depth += overflow_recurse(stop);
  return depth + (pad[0] != (uint8_t)frame);
}

/* Announces itself, then recurses to twice its own stack size. */
static void overflow_goroutine(void *arg) {
  uintptr_t lo, hi;
  (void)arg;

  announce_victim();
  CHECK_OK(goro_stack_bounds(&lo, &hi));
  overflow_recurse(hi - 2 * (hi - lo));
  fprintf(stderr, "recursion past the stack size returned\n");
  exit(0);
}

typedef struct overflow_setup {
  size_t spawn_max;      /* per-spawn maximum, 0 for the global one */
  size_t global_max;     /* goro_set_max_stack before spawning, 0 to leave it */
} overflow_setup;

static int overflow_main(void *arg) {
  overflow_setup *setup = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = setup->spawn_max};

  if (setup->global_max)
    CHECK(goro_set_max_stack(setup->global_max) != 0);
  CHECK_OK(goro_spawn_with(overflow_goroutine, NULL, &opts));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

static void run_overflow(overflow_setup setup) { RUN_MAIN(overflow_main, &setup); }

CHILD(child_overflow_default) { run_overflow((overflow_setup){0, 0}); }
CHILD(child_overflow_spawn_16k) { run_overflow((overflow_setup){16 << 10, 0}); }
CHILD(child_overflow_set_64k) { run_overflow((overflow_setup){0, 64 << 10}); }

TEST(overflow_past_default_max_is_fatal) {
  static child_result res;

  run_child("child_overflow_default", &res);
  check_overflow_child(&res, GORO_DEFAULT_MAX_STACK);
  CHECK_CONTAINS(res.err, "goro: goroutine ");
  CHECK_CONTAINS(res.err, "stack exceeds 262144-byte limit");
  CHECK_CONTAINS(res.err, "\nfatal error: stack overflow\n\ngoroutine ");
}

TEST(overflow_past_spawn_max_16k_is_fatal) {
  static child_result res;

  run_child("child_overflow_spawn_16k", &res);
  check_overflow_child(&res, 16 << 10);
  CHECK_CONTAINS(res.err, "stack exceeds 16384-byte limit");
}

TEST(overflow_past_set_max_stack_64k_is_fatal) {
  static child_result res;

  run_child("child_overflow_set_64k", &res);
  check_overflow_child(&res, 64 << 10);
  CHECK_CONTAINS(res.err, "stack exceeds 65536-byte limit");
}

/* ---- Contents of the report ------------------------------------------- */

TEST(overflow_report_names_goroutine_and_bounds) {
  static child_result res;

  run_child("child_overflow_default", &res);
  overflow_victim v = parse_victim(res.err);
  overflow_report r = parse_overflow_report(res.err);
  if (!v.found)
    FAIL("the child did not announce its overflowing goroutine; stderr:\n%s", res.err);
  CHECK(r.found);
  CHECK_EQ(r.id, v.id);
  CHECK_EQ(r.trace_id, v.id);
  CHECK_EQ(r.lo, v.lo);
  CHECK_EQ(r.hi, v.hi);
}

TEST(overflow_fault_address_lies_in_guard) {
  static child_result res;

  run_child("child_overflow_spawn_16k", &res);
  overflow_report r = parse_overflow_report(res.err);
  CHECK(r.found);
  if (r.addr >= r.lo)
    FAIL("fault addr %#lx is not below the stack's lo %#lx", (unsigned long)r.addr,
         (unsigned long)r.lo);
  if (r.lo - r.addr > GUARD_BYTES)
    FAIL("fault addr %#lx is %lu bytes below lo, past the %lu-byte guard", (unsigned long)r.addr,
         (unsigned long)(r.lo - r.addr), (unsigned long)GUARD_BYTES);
}

TEST(overflow_report_printed_once) {
  static child_result res;

  run_child("child_overflow_default", &res);
  CHECK_EQ(count_occurrences(res.err, "fatal error: stack overflow"), 1);
  CHECK_EQ(count_occurrences(res.err, "stack exceeds"), 1);
  CHECK_EQ(count_occurrences(res.err, " [running]:"), 1);
}

TEST(overflow_backtrace_names_recursing_function) {
  static child_result res;

  run_child("child_overflow_default", &res);
  const char *trace = strstr(res.err, "[running]:\n");
  if (!trace)
    FAIL("no backtrace heading in the report:\n%s", res.err);
  CHECK_CONTAINS(trace, "overflow_recurse");
}

/* The overflowing goroutine shares its worker pool with others that keep
 * running; the report is still one, and still names the overflowing one. */
static void busy_goroutine(void *arg) {
  (void)arg;
  for (;;)
    CHECK_OK(goro_yield());
}

static int overflow_among_busy_main(void *arg) {
  (void)arg;
  for (int i = 0; i < 8; i++)
    CHECK_OK(goro_spawn(busy_goroutine, NULL));
  CHECK_OK(goro_spawn(overflow_goroutine, NULL));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

CHILD(child_overflow_among_busy) { RUN_MAIN(overflow_among_busy_main, NULL); }

TEST(overflow_among_running_goroutines_is_fatal) {
  static child_result res;

  run_child("child_overflow_among_busy", &res);
  check_overflow_child(&res, GORO_DEFAULT_MAX_STACK);
}

/* The mprotect guards of kernels without MADV_GUARD_INSTALL catch it too. */
static void mprotect_overflow_goroutine(void *arg) {
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  if (guard_installed(-1, lo - PAGE_BYTES) == 1)
    fprintf(stderr, "the page below the stack is a PROT_NONE mapping\n");
  overflow_goroutine(arg);
}

static int mprotect_overflow_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_spawn(mprotect_overflow_goroutine, NULL));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

CHILD(child_overflow_mprotect_guard) {
  setenv("GORODEBUG", "guardmode=mprotect", 1);
  RUN_MAIN(mprotect_overflow_main, NULL);
}

TEST(overflow_past_mprotect_guard_is_fatal) {
  static child_result res;

  run_child("child_overflow_mprotect_guard", &res);
  CHECK_CONTAINS(res.err, "the page below the stack is a PROT_NONE mapping\n");
  check_overflow_child(&res, GORO_DEFAULT_MAX_STACK);
}

/* ---- Faults that are not overflows ------------------------------------ */

/* A store through a bad pointer near NULL, as from a member of a NULL
 * struct pointer. The address goes through a volatile so that neither the
 * compiler nor UBSan's null-pointer check turns it into something else. */
static void bad_store_goroutine(void *arg) {
  volatile uintptr_t address = 64;
  (void)arg;

  fprintf(stderr, "storing through %#lx\n", (unsigned long)address);
  *(volatile int *)address = 1;
  fprintf(stderr, "the store through a bad pointer returned\n");
  exit(0);
}

static int bad_store_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_spawn(bad_store_goroutine, NULL));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

CHILD(child_bad_store) { RUN_MAIN(bad_store_main, NULL); }

/* Appends option to the colon-separated list in the environment variable
 * name; a later entry overrides an earlier one for the sanitizers. */
static void append_option(const char *name, const char *option) {
  const char *old = getenv(name);
  char value[1024];

  snprintf(value, sizeof value, "%s%s%s", old ? old : "", old && *old ? ":" : "", option);
  setenv(name, value, 1);
}

TEST(bad_pointer_fault_dies_by_sigsegv) {
  static child_result res;

  /* Sanitizer runtimes install their own SIGSEGV handler, which goro would
   * rightly call; turn it off so that the default action is what remains. */
  append_option("ASAN_OPTIONS", "handle_segv=0");
  append_option("UBSAN_OPTIONS", "handle_segv=0");
  append_option("TSAN_OPTIONS", "handle_segv=0");
  run_child("child_bad_store", &res);
  CHECK_CONTAINS(res.err, "storing through 0x40");
  if (strstr(res.err, "stack overflow") || strstr(res.err, "stack exceeds"))
    FAIL("a bad pointer store was reported as a stack overflow:\n%s", res.err);
  if (res.exited)
    FAIL("child exited with status %d instead of dying by SIGSEGV; stderr:\n%s", res.status,
         res.err);
  CHECK_EQ(res.status, SIGSEGV);
}

static void previous_handler(int sig, siginfo_t *info, void *uctx) {
  char line[96];
  (void)uctx;

  int n = snprintf(line, sizeof line, "previous handler: signal %d addr %#lx\n", sig,
                   (unsigned long)(uintptr_t)info->si_addr);
  if (write(STDERR_FILENO, line, (size_t)n) < 0)
    _exit(41);
  _exit(42);
}

CHILD(child_bad_store_with_handler) {
  struct sigaction sa;

  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = previous_handler;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  CHECK_OK(sigaction(SIGSEGV, &sa, NULL));
  RUN_MAIN(bad_store_main, NULL);
}

TEST(bad_pointer_fault_reaches_previous_handler) {
  static child_result res;

  run_child("child_bad_store_with_handler", &res);
  if (strstr(res.err, "stack overflow"))
    FAIL("a bad pointer store was reported as a stack overflow:\n%s", res.err);
  CHECK_CONTAINS(res.err, "previous handler: signal 11 addr 0x40\n");
  CHECK(res.exited);
  CHECK_EQ(res.status, 42);
}
