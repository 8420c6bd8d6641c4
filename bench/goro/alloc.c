/*
 * alloc: what one allocation costs, on the stack, on the heap and from an
 * object pool, in ns per operation. This program fills the C and goro
 * column of the allocation table in docs/benchmarks.md, and bench/go/alloc
 * fills the Go column.
 *
 *   alloc -n OPS -reps R -fresh K
 *
 *   stack{64,4k}     call of a function whose frame has a 64-byte or
 *                    4 KiB local buffer, on pages already committed (a
 *                    byte written at each end, one read; C does not zero
 *                    locals, Go does)
 *   grow4k_fresh     the first call of that 4 KiB function on a new
 *                    goroutine, which must commit a new stack page: K
 *                    goroutines, each timing its own first call and then
 *                    staying parked, so that every one gets a fresh slot
 *   grow4k_recycled  the same, but each goroutine exits before the next
 *                    starts, so it gets the slot (and pages) of the last
 *   malloc{64,4k}    glibc malloc + free of the same size
 *   mimalloc{64,4k}  mi_malloc + mi_free (libmimalloc)
 *   pool{64,4k}      goro_pool_get + goro_pool_put
 *
 * Every heap and pool object has its first byte written and its address
 * stored to a volatile, so that the compiler can elide neither the call nor
 * the object. The loops run in the main goroutine with one worker, as the
 * Go program runs with GOMAXPROCS=1; each figure is the median of R runs
 * of n operations (the grow4k figures are medians over K goroutines).
 */
#define _GNU_SOURCE
#include "goro.h"

#include <mimalloc.h>

#include "../common.h"

#define MAX_REPS 64
#define MAX_FRESH 100000

static void *volatile sink_ptr;
static volatile unsigned sink;

static __attribute__((noinline)) unsigned frame64(unsigned i) {
  volatile unsigned char buf[64];

  buf[0] = (unsigned char)i;
  buf[63] = (unsigned char)i;
  return buf[(i * 7) & 63];
}

/* Writes both ends of its buffer, so that a call always touches every page
 * the frame spans, as Go's zeroing of a local array does. */
static __attribute__((noinline)) unsigned frame4k(unsigned i) {
  volatile unsigned char buf[4096];

  buf[0] = (unsigned char)i;
  buf[4095] = (unsigned char)i;
  return buf[(i * 7) & 4095];
}

typedef struct op_args {
  size_t size;
  goro_pool *pool;
} op_args;

static void op_stack64(long n, const op_args *a) {
  (void)a;
  for (long i = 0; i < n; i++)
    sink += frame64((unsigned)i);
}

static void op_stack4k(long n, const op_args *a) {
  (void)a;
  for (long i = 0; i < n; i++)
    sink += frame4k((unsigned)i);
}

static void op_malloc(long n, const op_args *a) {
  for (long i = 0; i < n; i++) {
    unsigned char *p = malloc(a->size);
    p[0] = (unsigned char)i;
    sink_ptr = p;
    free(p);
  }
}

static void op_mimalloc(long n, const op_args *a) {
  for (long i = 0; i < n; i++) {
    unsigned char *p = mi_malloc(a->size);
    p[0] = (unsigned char)i;
    sink_ptr = p;
    mi_free(p);
  }
}

static void op_pool(long n, const op_args *a) {
  for (long i = 0; i < n; i++) {
    unsigned char *p = goro_pool_get(a->pool);
    p[0] = (unsigned char)i;
    sink_ptr = p;
    goro_pool_put(a->pool, p);
  }
}

/* Reports the median ns per operation of reps runs of n operations. */
static void time_op(const char *key, void (*op)(long, const op_args *), const op_args *a,
                    long n, int reps) {
  double xs[MAX_REPS];

  op(n / 10, a); /* warm-up */
  for (int r = 0; r < reps; r++) {
    double t0 = bench_now_ns();
    op(n, a);
    xs[r] = (bench_now_ns() - t0) / (double)n;
  }
  bench_result(key, bench_median(xs, reps));
}

static double *first_call_ns;
static goro_chan *hold;
static goro_waitgroup measured;

static void first_call(void *arg) {
  long i = (long)arg;

  double t0 = bench_now_ns();
  sink += frame4k((unsigned)i);
  first_call_ns[i] = bench_now_ns() - t0;
  goro_wg_done(&measured);
  if (hold)
    goro_chan_recv(hold, NULL); /* keeps this slot out of reuse */
}

/* Times the first 4 KiB frame of k new goroutines. With keep set they stay
 * parked until all are measured; otherwise each exits before the next. */
static void time_first_calls(const char *key, long k, bool keep) {
  if (keep)
    BENCH_CHECK(goro_chan_make(&hold, 0, 0));
  for (long i = 0; i < k; i++) {
    BENCH_CHECK(goro_wg_add(&measured, 1));
    BENCH_CHECK(goro_spawn(first_call, (void *)i));
    BENCH_CHECK(goro_wg_wait(&measured));
    goro_yield(); /* with one worker, the goroutine has exited or parked now */
  }
  if (keep) {
    BENCH_CHECK(goro_chan_close(hold));
    goro_yield();
    hold = NULL; /* the channel is left allocated: goroutines may still be waking */
  }
  bench_result(key, bench_median(first_call_ns, (int)k));
}

typedef struct args {
  long n, fresh;
  int reps;
} args;

static int bench_main(void *arg) {
  const args *a = arg;
  /* Heap allocations of 4 KiB run n/100 times: Go's take microseconds. */
  static const struct {
    const char *suffix;
    size_t size;
    long divisor;
  } sizes[] = {{"64", 64, 1}, {"4k", 4096, 100}};
  char key[64];

  printf("# goro alloc: %ld operations x %d runs, %ld fresh goroutines\n", a->n, a->reps,
         a->fresh);
  time_op("stack64_ns", op_stack64, &(op_args){0}, a->n, a->reps);
  time_op("stack4k_ns", op_stack4k, &(op_args){0}, a->n, a->reps);

  first_call_ns = calloc((size_t)a->fresh, sizeof *first_call_ns);
  if (!first_call_ns) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  time_first_calls("grow4k_recycled_ns", a->fresh, false);
  time_first_calls("grow4k_fresh_ns", a->fresh, true);

  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    op_args oa = {.size = sizes[i].size};

    snprintf(key, sizeof key, "malloc%s_ns", sizes[i].suffix);
    time_op(key, op_malloc, &oa, a->n / sizes[i].divisor, a->reps);
    snprintf(key, sizeof key, "mimalloc%s_ns", sizes[i].suffix);
    time_op(key, op_mimalloc, &oa, a->n / sizes[i].divisor, a->reps);
    BENCH_CHECK(goro_pool_make(&oa.pool, oa.size));
    snprintf(key, sizeof key, "pool%s_ns", sizes[i].suffix);
    time_op(key, op_pool, &oa, a->n, a->reps);
    BENCH_CHECK(goro_pool_free(oa.pool));
  }
  return 0;
}

int main(int argc, char **argv) {
  args a = {
      .n = (long)bench_flag_num(argc, argv, "n", 5000000),
      .reps = (int)bench_flag_num(argc, argv, "reps", 3),
      .fresh = (long)bench_flag_num(argc, argv, "fresh", 2000),
  };

  if (a.reps < 1 || a.reps > MAX_REPS || a.fresh < 1 || a.fresh > MAX_FRESH || a.n < 1000) {
    fprintf(stderr, "invalid -reps (1..%d), -fresh (1..%d) or -n (>= 1000)\n", MAX_REPS,
            MAX_FRESH);
    return 2;
  }
  BENCH_CHECK(goro_set_maxprocs(1));
  BENCH_CHECK(goro_run(bench_main, &a));
  return 0;
}
