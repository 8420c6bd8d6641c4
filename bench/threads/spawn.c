/*
 * spawn: time and memory of N OS threads that each block on a condition
 * variable, then the time to release and join them. The threads peer of
 * bench/goro/spawn.c.
 *
 *   spawn -n N [-stack BYTES] [-warm 1]
 *
 * -stack 0 (the default) keeps glibc's default stack size, which is the
 * RLIMIT_STACK soft limit (8 MiB unless ulimit -s sets another). Each
 * thread counts itself ready under the mutex and waits on the gate
 * condition variable. The clock runs from the first pthread_create until
 * the last thread is waiting. The memory delta holds the touched stack
 * pages, glibc's thread descriptor and TLS, and page tables; the kernel's
 * own per-thread memory (task_struct, a 16 KiB kernel stack) is not part of
 * VmRSS and so is not counted.
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "../common.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static pthread_cond_t ready_cond = PTHREAD_COND_INITIALIZER;
static long ready_count;
static int gate_open;

static void *waiter(void *arg) {
  long n = (long)arg;

  pthread_mutex_lock(&lock);
  if (++ready_count == n)
    pthread_cond_signal(&ready_cond);
  while (!gate_open)
    pthread_cond_wait(&gate_cond, &lock);
  pthread_mutex_unlock(&lock);
  return NULL;
}

typedef struct round_result {
  double spawn_ns, teardown_ns, rss, rsspte;
} round_result;

static round_result one_round(long n, size_t stack) {
  pthread_t *threads = calloc((size_t)n, sizeof *threads);
  pthread_attr_t attr;
  round_result r;

  if (!threads) {
    fprintf(stderr, "out of memory for %ld thread handles\n", n);
    exit(1);
  }
  BENCH_PCHECK(pthread_attr_init(&attr));
  if (stack)
    BENCH_PCHECK(pthread_attr_setstacksize(&attr, stack));
  ready_count = 0;
  gate_open = 0;
  bench_mem m0 = bench_read_mem();

  double t0 = bench_now_ns();
  for (long i = 0; i < n; i++)
    BENCH_PCHECK(pthread_create(&threads[i], &attr, waiter, (void *)n));
  pthread_mutex_lock(&lock);
  while (ready_count < n)
    pthread_cond_wait(&ready_cond, &lock);
  pthread_mutex_unlock(&lock);
  double t1 = bench_now_ns();

  bench_mem m1 = bench_read_mem();

  double t2 = bench_now_ns();
  pthread_mutex_lock(&lock);
  gate_open = 1;
  pthread_cond_broadcast(&gate_cond);
  pthread_mutex_unlock(&lock);
  for (long i = 0; i < n; i++)
    BENCH_PCHECK(pthread_join(threads[i], NULL));
  double t3 = bench_now_ns();

  pthread_attr_destroy(&attr);
  free(threads);
  r.spawn_ns = (t1 - t0) / (double)n;
  r.teardown_ns = (t3 - t2) / (double)n;
  r.rss = (double)(m1.rss - m0.rss) / (double)n;
  r.rsspte = (double)(m1.rsspte - m0.rsspte) / (double)n;
  return r;
}

static void report(const char *prefix, const round_result *r) {
  char key[64];

  snprintf(key, sizeof key, "%s_ns", prefix);
  bench_result(key, r->spawn_ns);
  snprintf(key, sizeof key, "%s_teardown_ns", prefix);
  bench_result(key, r->teardown_ns);
  snprintf(key, sizeof key, "%s_rss", prefix);
  bench_result(key, r->rss);
  snprintf(key, sizeof key, "%s_rsspte", prefix);
  bench_result(key, r->rsspte);
}

int main(int argc, char **argv) {
  long n = (long)bench_flag_num(argc, argv, "n", 10000);
  size_t stack = (size_t)bench_flag_num(argc, argv, "stack", 0);
  int warm = (int)bench_flag_num(argc, argv, "warm", 0);

  printf("# threads spawn: N=%ld, stack size %zu bytes (0: the default)\n", n, stack);
  round_result cold = one_round(n, stack);
  report("cold", &cold);
  if (warm) {
    round_result w = one_round(n, stack);
    report("warm", &w);
  }
  return 0;
}
