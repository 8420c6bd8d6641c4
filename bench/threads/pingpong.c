/*
 * pingpong: round trips between two OS threads over a mutex and two
 * condition variables. The threads peer of bench/goro/pingpong.c.
 *
 *   pingpong -cpus C -n ROUNDTRIPS -reps R
 *
 * One round trip: main hands a token to the partner and waits until the
 * partner hands it back, so it is two hand-offs, each a futex wake and a
 * futex wait when the other side sleeps. -cpus 1 pins the process to its
 * first allowed CPU (like GOMAXPROCS=1); -cpus 0 leaves the affinity as it
 * is. The program prints the median of R measurements after a warm-up.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>

#include "../common.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t to_partner = PTHREAD_COND_INITIALIZER;
static pthread_cond_t to_main = PTHREAD_COND_INITIALIZER;
static int turn;      /* 0: main's turn, 1: partner's turn */
static long remaining; /* round trips the partner still serves */

static void *partner(void *arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  for (;;) {
    while (turn != 1)
      pthread_cond_wait(&to_partner, &lock);
    if (remaining-- == 0)
      break;
    turn = 0;
    pthread_cond_signal(&to_main);
  }
  pthread_mutex_unlock(&lock);
  return NULL;
}

static double measure(long n) {
  pthread_t t;

  turn = 0;
  remaining = n;
  BENCH_PCHECK(pthread_create(&t, NULL, partner, NULL));

  double t0 = bench_now_ns();
  pthread_mutex_lock(&lock);
  for (long i = 0; i < n; i++) {
    turn = 1;
    pthread_cond_signal(&to_partner);
    while (turn != 0)
      pthread_cond_wait(&to_main, &lock);
  }
  double t1 = bench_now_ns();

  turn = 1; /* remaining is 0 now: the partner leaves its loop */
  pthread_cond_signal(&to_partner);
  pthread_mutex_unlock(&lock);
  BENCH_PCHECK(pthread_join(t, NULL));
  return (t1 - t0) / (double)n;
}

static void pin_to_one_cpu(void) {
  cpu_set_t set;

  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    perror("sched_getaffinity");
    exit(1);
  }
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (!CPU_ISSET(cpu, &set))
      continue;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
      perror("sched_setaffinity");
      exit(1);
    }
    return;
  }
}

int main(int argc, char **argv) {
  long n = (long)bench_flag_num(argc, argv, "n", 100000);
  int reps = (int)bench_flag_num(argc, argv, "reps", 5);
  int cpus = (int)bench_flag_num(argc, argv, "cpus", 0);
  double xs[64];

  if (reps < 1 || reps > 64) {
    fprintf(stderr, "invalid -reps %d: use 1..64\n", reps);
    return 2;
  }
  if (cpus == 1)
    pin_to_one_cpu(); /* threads created later inherit the mask */
  printf("# threads pingpong: %s\n", cpus == 1 ? "pinned to one CPU" : "all CPUs");
  measure(n / 10);
  for (int r = 0; r < reps; r++)
    xs[r] = measure(n);
  bench_result("roundtrip_ns", bench_median(xs, reps));
  return 0;
}
