/*
 * growth: the cost of touching 8 KiB, 64 KiB, 1 MiB and 16 MiB of a new
 * thread's stack, the threads peer of bench/goro/growth.c: the same deep()
 * recursion, the same first-call-minus-second-call measure.
 *
 *   growth -reps R
 *
 * Each trial thread gets a 32 MiB stack from glibc (as goro's trials get a
 * 32 MiB max_stack). cold: earlier trial threads stay blocked, so every
 * trial runs on a stack glibc has just mapped. warm: each trial thread is
 * joined before the next starts, so glibc can hand its cached stack to the
 * next one, after one discarded warm-up trial per size. glibc releases the
 * unused part of an exiting thread's stack with MADV_DONTNEED, so a reused
 * stack is mostly not resident.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "../common.h"

#define STACK_SIZE ((size_t)32 << 20)
#define MAX_REPS 64
#define MAX_HELD (4 * MAX_REPS)

static unsigned char *volatile deepest; /* buf of the frame at depth 0 */
static volatile unsigned sink;

static __attribute__((noinline)) unsigned deep(int d) {
  volatile unsigned char buf[512];

  buf[d & 511] = (unsigned char)d;
  if (d == 0) {
    deepest = (unsigned char *)buf;
    return buf[0];
  }
  return deep(d - 1) + buf[(d * 7) & 511]; /* not a tail call */
}

typedef struct trial {
  int depth;
  int hold; /* cold trials block until release_held() */
  double first_ns, second_ns;
  size_t used;
} trial;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int measured, released;
static pthread_t held[MAX_HELD];
static int nheld;

static void *run_trial(void *arg) {
  trial *t = arg;
  int hold = t->hold; /* *t belongs to the caller once measured is set */
  unsigned char root;

  double t0 = bench_now_ns();
  sink += deep(t->depth);
  double t1 = bench_now_ns();
  sink += deep(t->depth);
  double t2 = bench_now_ns();

  t->first_ns = t1 - t0;
  t->second_ns = t2 - t1;
  t->used = (size_t)(&root - deepest);
  pthread_mutex_lock(&lock);
  measured = 1;
  pthread_cond_broadcast(&cond);
  while (hold && !released)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  return NULL;
}

static trial one_trial(int depth, int hold) {
  trial t = {.depth = depth, .hold = hold};
  pthread_attr_t attr;
  pthread_t thread;

  BENCH_PCHECK(pthread_attr_init(&attr));
  BENCH_PCHECK(pthread_attr_setstacksize(&attr, STACK_SIZE));
  measured = 0;
  BENCH_PCHECK(pthread_create(&thread, &attr, run_trial, &t));
  pthread_attr_destroy(&attr);

  pthread_mutex_lock(&lock);
  while (!measured)
    pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  if (hold)
    held[nheld++] = thread;
  else
    BENCH_PCHECK(pthread_join(thread, NULL));
  return t;
}

static void release_held(void) {
  pthread_mutex_lock(&lock);
  released = 1;
  pthread_cond_broadcast(&cond);
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < nheld; i++)
    BENCH_PCHECK(pthread_join(held[i], NULL));
  nheld = 0;
}

static const struct {
  const char *key;
  size_t bytes;
} targets[] = {{"8k", 8 << 10}, {"64k", 64 << 10}, {"1m", 1 << 20}, {"16m", 16 << 20}};

static void measure(const char *mode, int reps, double frame, int hold) {
  for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    int depth = (int)(0.75 * (double)targets[i].bytes / frame);
    double first[MAX_REPS], second[MAX_REPS], diff[MAX_REPS];
    char key[64];

    if (!hold)
      one_trial(depth, 0);
    for (int r = 0; r < reps; r++) {
      trial t = one_trial(depth, hold);
      first[r] = t.first_ns / 1e3;
      second[r] = t.second_ns / 1e3;
      diff[r] = first[r] - second[r];
    }
    snprintf(key, sizeof key, "%s_%s_first_us", mode, targets[i].key);
    bench_result(key, bench_median(first, reps));
    snprintf(key, sizeof key, "%s_%s_second_us", mode, targets[i].key);
    bench_result(key, bench_median(second, reps));
    snprintf(key, sizeof key, "%s_%s_us", mode, targets[i].key);
    bench_result(key, bench_median(diff, reps));
  }
}

int main(int argc, char **argv) {
  int reps = (int)bench_flag_num(argc, argv, "reps", 5);

  if (reps < 1 || reps > MAX_REPS) {
    fprintf(stderr, "invalid -reps %d: use 1..%d\n", reps, MAX_REPS);
    return 2;
  }
  trial cal = one_trial(200, 0);
  double frame = (double)cal.used / 201;
  printf("# threads growth: %.1f stack bytes per level, %d trials per size\n", frame, reps);
  bench_result("frame_bytes", frame);

  measure("cold", reps, frame, 1);
  release_held();
  measure("warm", reps, frame, 0);
  return 0;
}
