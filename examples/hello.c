/*
 * hello.c: a first goro program.
 *
 * A producer goroutine sends numbers down a channel. Two squarer goroutines
 * receive them and send back n * n, computed by adding n to itself in a
 * recursion n levels deep with a 1 KiB frame per level, so a larger n needs
 * a deeper stack. At the end every goroutine reports what its stack did.
 *
 * Build and run from the source tree: make build/examples/hello, then
 * ./build/examples/hello.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "goro.h"

typedef struct square {
  long n, result;
  int64_t squarer;
} square;

typedef struct stack_report {
  const char *role;
  goro_stack_info info;
} stack_report;

static goro_chan *numbers, *squares, *reports;

static void send_report(const char *role) {
  stack_report r = {.role = role};

  goro_stack_info_self(&r.info);
  goro_chan_send(reports, &r);
}

/* Returns n * times, one recursion level with a 1 KiB array per unit of
 * times. The asm statement keeps the array, because the compiler must
 * assume it is read. The final term is always 0, but reading the array
 * after the call keeps each frame alive, so the recursion cannot become a
 * loop. */
static __attribute__((noinline)) long add_repeatedly(long n, long times) {
  char scratch[1024];

  memset(scratch, (int)times, sizeof scratch);
  __asm__ volatile("" : : "r"(scratch) : "memory");
  if (times == 0) {
    /* goro learns a stack's size from the stack pointers it observes: when
     * the goroutine parks, in shrink cycles, and in this call, made at the
     * deepest point. */
    goro_stack_info deepest;
    goro_stack_info_self(&deepest);
    return 0;
  }
  return n + add_repeatedly(n, times - 1) + (scratch[0] - (char)times);
}

static void producer(void *arg) {
  (void)arg;
  for (long n = 1; n <= 128; n *= 2)
    goro_chan_send(numbers, &n);
  goro_chan_close(numbers);
  send_report("producer");
}

static void squarer(void *arg) {
  square sq = {.squarer = goro_id()};

  (void)arg;
  while (goro_chan_recv(numbers, &sq.n) == 0) {
    sq.result = add_repeatedly(sq.n, sq.n);
    goro_chan_send(squares, &sq);
  }
  send_report("squarer");
}

static int hello_main(void *arg) {
  square sq;
  stack_report r;

  (void)arg;
  goro_chan_make(&numbers, sizeof(long), 0);
  goro_chan_make(&squares, sizeof(square), 0);
  goro_chan_make(&reports, sizeof(stack_report), 3);
  goro_spawn(producer, NULL);
  goro_spawn(squarer, NULL);
  goro_spawn(squarer, NULL);

  /* The producer sends 8 numbers: 1, 2, 4, ..., 128. */
  for (int i = 0; i < 8; i++) {
    goro_chan_recv(squares, &sq);
    printf("goroutine %" PRId64 ": %ld * %ld = %ld\n", sq.squarer, sq.n, sq.n, sq.result);
  }

  printf("\n%-9s  %-8s  %10s  %10s  %10s  %7s  %7s\n", "goroutine", "role", "stack now",
         "peak", "limit", "growths", "shrinks");
  for (int i = 0; i < 3; i++) {
    goro_chan_recv(reports, &r);
    printf("%9" PRId64 "  %-8s  %6.1f KiB  %6.1f KiB  %6.1f KiB  %7" PRIu64 "  %7" PRIu64 "\n",
           r.info.id, r.role, r.info.current / 1024.0, r.info.peak / 1024.0,
           r.info.max / 1024.0, r.info.growths, r.info.shrinks);
  }

  goro_chan_free(numbers);
  goro_chan_free(squares);
  goro_chan_free(reports);
  return 0;
}

int main(void) {
  int status = goro_run(hello_main, NULL);

  if (status < 0) {
    fprintf(stderr, "hello: goro_run failed: %s\n", goro_strerror(status));
    return 1;
  }
  return status;
}
