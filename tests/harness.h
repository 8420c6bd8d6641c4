/*
 * harness.h: a small test harness where every test runs in its own process.
 *
 *   TEST(chan_recv_blocks_until_send) { ... CHECK(...); CHECK_EQ(a, b); }
 *
 * Running a test binary with no arguments runs each of its tests in a fresh
 * child process (fork + exec of itself with the test name), with a time
 * limit, and prints one line per test. With a test name it runs just that
 * test in the current process; with --list it prints the names.
 *
 * Crash and fatal paths are tested with CHILD(name) functions, run by
 * run_child() in a separate process whose exit status and stderr the test
 * then matches.
 *
 * A test that cannot work in one checking build calls SKIP(reason) there
 * and is reported as "skip NAME" instead of "ok NAME".
 */
#ifndef GORO_TEST_HARNESS_H
#define GORO_TEST_HARNESS_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "goro.h"

typedef struct test_case {
  const char *name;
  void (*fn)(void);
  int is_child;
} test_case;

#define HARNESS_MAX_TESTS 256
static test_case harness_tests[HARNESS_MAX_TESTS];
static int harness_count;
static const char *harness_self;

static inline void harness_register(const char *name, void (*fn)(void), int is_child) {
  if (harness_count < HARNESS_MAX_TESTS)
    harness_tests[harness_count++] = (test_case){name, fn, is_child};
}

#define HARNESS_DEFINE(name, child)                                              \
  static void name(void);                                                        \
  __attribute__((constructor)) static void harness_register_##name(void) {       \
    harness_register(#name, name, child);                                        \
  }                                                                              \
  static void name(void)

#define TEST(name) HARNESS_DEFINE(name, 0)
#define CHILD(name) HARNESS_DEFINE(name, 1)

#define FAIL(...)                                                               \
  do {                                                                          \
    fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);                       \
    fprintf(stderr, __VA_ARGS__);                                               \
    fprintf(stderr, "\n");                                                      \
    fflush(stderr);                                                             \
    _exit(1);                                                                   \
  } while (0)

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond))                                                                \
      FAIL("%s", #cond);                                                        \
  } while (0)

#define CHECK_EQ(a, b)                                                          \
  do {                                                                          \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);             \
    if (check_a_ != check_b_)                                                   \
      FAIL("%s == %s: got %lld, expected %lld", #a, #b, check_a_, check_b_);    \
  } while (0)

#define HARNESS_CHECK_CMP(a, op, b)                                             \
  do {                                                                          \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);             \
    if (!(check_a_ op check_b_))                                                \
      FAIL("%s %s %s: got %lld and %lld", #a, #op, #b, check_a_, check_b_);     \
  } while (0)

#define CHECK_NE(a, b) HARNESS_CHECK_CMP(a, !=, b)
#define CHECK_LT(a, b) HARNESS_CHECK_CMP(a, <, b)
#define CHECK_LE(a, b) HARNESS_CHECK_CMP(a, <=, b)
#define CHECK_GT(a, b) HARNESS_CHECK_CMP(a, >, b)
#define CHECK_GE(a, b) HARNESS_CHECK_CMP(a, >=, b)

/* Checks that expr returns the GORO_E* code err, naming both messages. */
#define CHECK_ERR(expr, err)                                                    \
  do {                                                                          \
    long long check_rc_ = (long long)(expr);                                    \
    if (check_rc_ != (long long)(err))                                          \
      FAIL("%s returned %lld (%s), expected %s = %d (%s)", #expr, check_rc_,    \
           goro_strerror((int)check_rc_), #err, (int)(err), goro_strerror(err));\
  } while (0)

#define CHECK_OK(expr)                                                          \
  do {                                                                          \
    long long check_rc_ = (long long)(expr);                                    \
    if (check_rc_ < 0)                                                          \
      FAIL("%s returned %lld (%s)", #expr, check_rc_,                           \
           goro_strerror((int)check_rc_));                                      \
  } while (0)

/* Runs fn as the main goroutine and fails the test if it returns nonzero. */
#define RUN_MAIN(fn, arg)                                                       \
  do {                                                                          \
    int run_rc_ = goro_run((fn), (arg));                                        \
    if (run_rc_ != 0)                                                           \
      FAIL("goro_run(%s) returned %d", #fn, run_rc_);                           \
  } while (0)

/* Returns CLOCK_MONOTONIC in nanoseconds. */
static inline int64_t harness_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Returns the checking build the suite runs under ("asan", "ubsan", "tsan")
 * or NULL for the release build. Heavy tests scale their sizes down under a
 * sanitizer, keeping every assertion. */
static inline const char *harness_sanitizer(void) {
  const char *s = getenv("GORO_TEST_SANITIZER");
  return s && *s ? s : NULL;
}

/* Returns 1 if the suite runs under the checking build name ("asan",
 * "ubsan" or "tsan"), else 0. */
static inline int harness_under(const char *name) {
  const char *s = harness_sanitizer();
  return s && strcmp(s, name) == 0;
}

/* Returns the size of a heavy workload for this build: n_release in the
 * release build, n_sanitizer under ASan or UBSan, n_tsan under TSan. TSan
 * gives every goroutine a fiber and stops the process once more than 8,128
 * threads and fibers are alive at once, so a test that keeps more
 * goroutines than that alive needs n_tsan below it. */
static inline long harness_scaled(long n_release, long n_sanitizer, long n_tsan) {
  if (harness_under("tsan"))
    return n_tsan;
  return harness_sanitizer() ? n_sanitizer : n_release;
}

/* Exit status of a test that skipped itself, as in automake. */
#define HARNESS_SKIP_STATUS 77

/* Ends the running test as skipped after printing "skip: REASON" on
 * stderr. Use it only for a test that cannot work in this build at all.
 * The runner then prints "skip NAME" and does not count a failure. */
#define SKIP(...)                                                               \
  do {                                                                          \
    fprintf(stderr, "skip: ");                                                  \
    fprintf(stderr, __VA_ARGS__);                                               \
    fprintf(stderr, "\n");                                                      \
    fflush(stderr);                                                             \
    _exit(HARNESS_SKIP_STATUS);                                                 \
  } while (0)

typedef struct child_result {
  int exited;   /* 1 if the child exited normally */
  int status;   /* exit status, or signal number if !exited */
  char err[65536];
} child_result;

/* Runs CHILD(name) in a new process and collects its exit and stderr. */
static inline void run_child(const char *name, child_result *out) {
  int pipefd[2];

  memset(out, 0, sizeof *out);
  if (pipe(pipefd) != 0)
    FAIL("pipe: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0)
    FAIL("fork: %s", strerror(errno));
  if (pid == 0) {
    dup2(pipefd[1], STDERR_FILENO);
    close(pipefd[0]);
    execl(harness_self, harness_self, name, (char *)NULL);
    _exit(127);
  }
  close(pipefd[1]);
  size_t len = 0;
  ssize_t n;
  while ((n = read(pipefd[0], out->err + len, sizeof out->err - 1 - len)) > 0)
    len += (size_t)n;
  out->err[len] = '\0';
  close(pipefd[0]);

  int status;
  waitpid(pid, &status, 0);
  out->exited = WIFEXITED(status);
  out->status = WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);
}

#define CHECK_CONTAINS(haystack, needle)                                        \
  do {                                                                          \
    if (!strstr((haystack), (needle)))                                          \
      FAIL("output lacks \"%s\"; output was:\n%s", (needle), (haystack));       \
  } while (0)

static inline int harness_run_one(const char *name, int timeout_s) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid == 0) {
    alarm((unsigned)timeout_s);
    execl(harness_self, harness_self, name, (char *)NULL);
    _exit(127);
  }
  int status;
  waitpid(pid, &status, 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  int skipped = WIFEXITED(status) && WEXITSTATUS(status) == HARNESS_SKIP_STATUS;
  if (ok)
    printf("ok   %-48s %8.0f ms\n", name, ms);
  else if (skipped)
    printf("skip %s\n", name);
  else if (WIFSIGNALED(status))
    printf("FAIL %-48s killed by signal %d (%s)%s\n", name, WTERMSIG(status),
           strsignal(WTERMSIG(status)), WTERMSIG(status) == SIGALRM ? ": timed out" : "");
  else
    printf("FAIL %-48s exit status %d\n", name, WEXITSTATUS(status));
  fflush(stdout);
  return ok || skipped;
}

int main(int argc, char **argv) {
  harness_self = argv[0];
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && strcmp(argv[1], "--list") == 0) {
    for (int i = 0; i < harness_count; i++)
      if (!harness_tests[i].is_child)
        printf("%s\n", harness_tests[i].name);
    return 0;
  }
  if (argc > 1) {
    for (int i = 0; i < harness_count; i++) {
      if (strcmp(harness_tests[i].name, argv[1]) == 0) {
        harness_tests[i].fn();
        return 0;
      }
    }
    fprintf(stderr, "no test named %s\n", argv[1]);
    return 2;
  }
  const char *limit = getenv("GORO_TEST_TIMEOUT");
  int timeout_s = limit ? atoi(limit) : 120;
  int failed = 0;
  for (int i = 0; i < harness_count; i++)
    if (!harness_tests[i].is_child && !harness_run_one(harness_tests[i].name, timeout_s))
      failed++;
  return failed ? 1 : 0;
}

#endif
