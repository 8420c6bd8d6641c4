/*
 * Stack statistics. The tests cover the goro_read_memstats identities under
 * load from several threads, reads that touch no goroutine, and growth and
 * shrinking as memstats and goro_stack_info_self show them. They also cover
 * the size histogram, the older-caller rule and the Prometheus exposition,
 * which a parser here checks, and promtool too when it is installed.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>

#include "observe.h"

#define MS ((int64_t)1000000)
#define KIB ((size_t)1024)

/* Sets the stack policy for the next goro_run: shrink on or off, the given
 * hysteresis, and automatic cycles every gc_period_ns (0: none). */
static void set_policy(bool shrink, uint32_t hysteresis, int64_t gc_period_ns) {
  goro_stack_policy policy;

  CHECK_OK(goro_get_stack_policy(&policy));
  policy.size = sizeof policy;
  policy.shrink = shrink;
  policy.hysteresis = hysteresis;
  policy.gc_period_ns = gc_period_ns;
  CHECK_OK(goro_set_stack_policy(&policy));
}

/* Returns the histogram bucket of a span: bucket i counts spans up to
 * 4096 << i bytes. */
static int bucket_of(uint64_t span) {
  int i = 0;

  while (i < GORO_STACK_HIST_BUCKETS - 1 && (OBSERVE_PAGE << i) < span)
    i++;
  return i;
}

/* ---- Identities under load -------------------------------------------- */

/*
 * Four spawner goroutines start batches of children that recurse to
 * depths from 0 to 64 KiB and there sleep, yield, exit or return. A
 * goroutine runs goro_gc in a loop with hysteresis 0, so stacks also
 * shrink, and the monitor thread runs cycles of its own every 20 ms. Two
 * reader goroutines and one plain thread read memstats all the while and
 * check every read; the thread also runs goro_gc now and then. The load
 * lasts until each reader has made LOAD_MIN_READS reads.
 */
#define LOAD_SPAWNERS 4
#define LOAD_BATCH 16
#define LOAD_READERS 3 /* two goroutines and the plain thread */
#define LOAD_MIN_READS 5000 /* for the identities; the bucket check makes more */
/* main, the driver, the gc goroutine, two reader goroutines, the spawners
 * and their children; a batch can overlap the exits of the one before. */
#define LOAD_MAX_LIVE (5 + LOAD_SPAWNERS * (1 + 2 * LOAD_BATCH))

typedef struct load {
  int check_buckets;          /* also check every bucket of every read */
  uint64_t min_reads;         /* reads each reader makes at least */
  int min_rounds;             /* batches each spawner starts at least */
  int stop;                   /* set when the spawners are done */
  int readers_short;          /* readers still below LOAD_MIN_READS */
  uint64_t reads[LOAD_READERS];
  uint64_t children;          /* goroutines the spawners started */
  uint64_t released;          /* bytes the gc goroutine's cycles released */
  int64_t deadline_ns;
  goro_waitgroup spawners;
  goro_waitgroup others;      /* the gc goroutine and the reader goroutines */
  goro_chan *done;            /* driver -> main: everything has finished */
  uintptr_t driver_top;       /* top of the driver's stack */
  int thread_done;
} load;

typedef struct load_job {
  size_t depth;
  int action;                 /* what the child does at the bottom */
  goro_waitgroup *batch;
} load_job;

enum { AT_BOTTOM_SLEEP, AT_BOTTOM_YIELD, AT_BOTTOM_EXIT, AT_BOTTOM_RETURN, AT_BOTTOM_ACTIONS };

static load the_load;

static void load_child_bottom(void *arg) {
  load_job *job = arg;

  switch (job->action) {
  case AT_BOTTOM_SLEEP:
    CHECK_OK(goro_sleep(50 * 1000));
    break;
  case AT_BOTTOM_YIELD:
    for (int i = 0; i < 3; i++)
      CHECK_OK(goro_yield());
    break;
  case AT_BOTTOM_EXIT:
    /* The job lives in the spawner's frame: done with it before exiting. */
    CHECK_OK(goro_wg_done(job->batch));
    goro_exit();
    FAIL("goro_exit returned in a goroutine");
  default:
    break;
  }
}

static void load_child(void *arg) {
  load_job *job = arg;
  goro_waitgroup *batch = job->batch;

  observe_at_depth(job->depth, load_child_bottom, job);
  /* Parked shallow now, so that a cycle can shrink what the bottom grew. */
  CHECK_OK(goro_yield());
  CHECK_OK(goro_wg_done(batch));
}

static void load_spawner(void *arg) {
  load *l = &the_load;
  int index = (int)(intptr_t)arg;

  for (int round = 0; round < l->min_rounds || __atomic_load_n(&l->readers_short, __ATOMIC_ACQUIRE);
       round++) {
    if (harness_now_ns() > l->deadline_ns)
      FAIL("readers made only %llu, %llu and %llu reads in the time allowed; expected %llu each",
           (unsigned long long)l->reads[0], (unsigned long long)l->reads[1],
           (unsigned long long)l->reads[2], (unsigned long long)l->min_reads);

    goro_waitgroup batch = GORO_WAITGROUP_INIT;
    load_job jobs[LOAD_BATCH];
    CHECK_OK(goro_wg_add(&batch, LOAD_BATCH));
    for (int k = 0; k < LOAD_BATCH; k++) {
      jobs[k].depth = (size_t)((round * 7 + k * 3 + index) % 17) * 4 * KIB;
      jobs[k].action = (round + k + index) % AT_BOTTOM_ACTIONS;
      jobs[k].batch = &batch;
      CHECK_OK(goro_spawn(load_child, &jobs[k]));
    }
    __atomic_fetch_add(&l->children, LOAD_BATCH, __ATOMIC_RELAXED);
    CHECK_OK(goro_wg_wait(&batch));
  }
  CHECK_OK(goro_wg_done(&l->spawners));
}

static void load_gc(void *arg) {
  load *l = &the_load;
  (void)arg;

  while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
    int64_t released = goro_gc();
    CHECK_OK(released);
    __atomic_fetch_add(&l->released, (uint64_t)released, __ATOMIC_RELAXED);
    CHECK_OK(goro_sleep(200 * 1000));
  }
  CHECK_OK(goro_wg_done(&l->others));
}

/* One read and its checks; returns the reads made so far by this reader. */
static uint64_t load_read_once(load *l, int reader, goro_memstats *s, const char *who) {
  observe_read(s);
  observe_check_identities(s, LOAD_MAX_LIVE, who);
  if (l->check_buckets)
    observe_check_buckets(s, LOAD_MAX_LIVE, who);
  uint64_t n = ++l->reads[reader];
  if (n == l->min_reads)
    __atomic_fetch_sub(&l->readers_short, 1, __ATOMIC_RELEASE);
  return n;
}

static void load_reader(void *arg) {
  load *l = &the_load;
  int reader = (int)(intptr_t)arg;
  goro_memstats s;

  while (l->reads[reader] < l->min_reads || !__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
    if (load_read_once(l, reader, &s, "reader goroutine") % 8 == 0)
      CHECK_OK(goro_yield());
  }
  CHECK_OK(goro_wg_done(&l->others));
}

static void *load_thread(void *arg) {
  load *l = arg;
  goro_memstats s;
  int reader = LOAD_READERS - 1;

  while (l->reads[reader] < l->min_reads || !__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
    if (load_read_once(l, reader, &s, "plain thread") % 512 == 0)
      CHECK_OK(goro_gc());
  }
  __atomic_store_n(&l->thread_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void load_driver(void *arg) {
  load *l = &the_load;
  pthread_t thread;
  (void)arg;

  l->driver_top = observe_stack_top();
  CHECK_OK(goro_wg_add(&l->spawners, LOAD_SPAWNERS));
  CHECK_OK(goro_wg_add(&l->others, 3));
  CHECK_EQ(pthread_create(&thread, NULL, load_thread, l), 0);
  CHECK_OK(goro_spawn(load_gc, NULL));
  for (int i = 0; i < 2; i++)
    CHECK_OK(goro_spawn(load_reader, (void *)(intptr_t)i));
  for (int i = 0; i < LOAD_SPAWNERS; i++)
    CHECK_OK(goro_spawn(load_spawner, (void *)(intptr_t)i));

  CHECK_OK(goro_wg_wait(&l->spawners));
  __atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
  CHECK_OK(goro_wg_wait(&l->others));
  /* Wait on a flag, not in pthread_join, so that this worker stays free. */
  while (!__atomic_load_n(&l->thread_done, __ATOMIC_ACQUIRE))
    CHECK_OK(goro_sleep(1 * MS));
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_OK(goro_chan_send(l->done, NULL));
}

static goro_memstats load_final;
static uint64_t load_main_span;

/* Returns 1 if the page that contains addr is resident (mincore), else 0. */
static int page_resident(uintptr_t addr) {
  unsigned char vec = 0;

  CHECK_EQ(mincore((void *)(addr & ~(uintptr_t)(OBSERVE_PAGE - 1)), OBSERVE_PAGE, &vec), 0);
  return vec & 1;
}

/* Main does as little as it can: a cycle would count every stack page it
 * ever touched, and the check at the end expects it at one page. */
static int load_main(void *arg) {
  load *l = arg;

  CHECK_OK(goro_chan_make(&l->done, 0, 0));
  CHECK_OK(goro_spawn(load_driver, NULL));
  CHECK_OK(goro_chan_recv(l->done, NULL));
  CHECK_OK(goro_chan_free(l->done));

  int64_t deadline = harness_now_ns() + 5000 * MS;
  for (observe_read(&load_final); load_final.goroutines != 1 && harness_now_ns() < deadline;
       observe_read(&load_final))
    CHECK_OK(goro_sleep(1 * MS));

  /* The goroutine count drops before an exited goroutine's slot goes back
   * to a cache, so the driver's slot may still be on its way there (under
   * TSan a single free lost that race in 4 of 20 runs). The slot's top page
   * stays resident until goro_free_os_memory takes the slot from a cache
   * and releases it, so free until that page is gone. */
  for (;;) {
    CHECK_OK(goro_free_os_memory());
    if (!page_resident(l->driver_top - OBSERVE_PAGE))
      break;
    if (harness_now_ns() > deadline)
      FAIL("the exited driver's stack top %#lx is still resident after goro_free_os_memory",
           (unsigned long)l->driver_top);
    CHECK_OK(goro_sleep(1 * MS));
  }
  /* Only main is left, so stack_inuse is main's own span: one page, or more
   * where its deepest calls (ASan's instrumented frames, say) committed more. */
  goro_stack_info self;
  CHECK_OK(goro_stack_info_self(&self));
  load_main_span = self.current;
  observe_read(&load_final);
  return 0;
}

static void run_load(int check_buckets) {
  load *l = &the_load;

  l->check_buckets = check_buckets;
  /* A torn bucket, when the code allows one, shows in a few reads per
   * hundred thousand, so the bucket check reads 20 times longer (8 times
   * under a sanitizer, which runs the load slower). */
  l->min_reads = LOAD_MIN_READS;
  if (check_buckets)
    l->min_reads *= harness_sanitizer() ? 8 : 20;
  l->min_rounds = harness_sanitizer() ? 10 : 40;
  l->readers_short = LOAD_READERS;
  l->deadline_ns = harness_now_ns() + 60000 * MS;
  CHECK_OK(goro_set_maxprocs(2));
  set_policy(true, 0, 20 * MS);
  RUN_MAIN(load_main, l);

  goro_memstats *s = &load_final;
  observe_check_read(s, 1, "final read");
  CHECK_EQ(s->maxprocs, 2);
  CHECK_EQ(s->goroutines, 1);
  CHECK_GE(load_main_span, OBSERVE_PAGE);
  CHECK_EQ(s->stack_inuse, load_main_span);
  CHECK_EQ(s->stack_cache, 0);
  CHECK_EQ(s->slots_cached, 0);
  /* main, the driver, the gc goroutine, two readers, the spawners, children */
  CHECK_EQ(s->spawned_total, 5 + LOAD_SPAWNERS + l->children);
  CHECK_GE(l->children, (uint64_t)LOAD_SPAWNERS * LOAD_BATCH * l->min_rounds);
  CHECK_GT(s->stack_growths, 0);
  CHECK_GT(s->stack_shrinks, 0);
  CHECK_GT(s->gc_cycles, 0);
  for (int i = 0; i < LOAD_READERS; i++)
    CHECK_GE(l->reads[i], l->min_reads);
}

TEST(memstats_identities_hold_under_load) { run_load(0); }

/* Each bucket's count and bytes must describe goroutines that exist, even
 * while goroutines move between buckets and run on other workers than the
 * one that spawned them. */
TEST(memstats_buckets_possible_under_load) { run_load(1); }

/* ---- A read touches no goroutine -------------------------------------- */

/*
 * The cost of a read must not grow with the goroutine count. A test cannot
 * time that reliably, so it checks the cause instead: with many goroutines
 * parked, their stacks and descriptors are made inaccessible with mprotect,
 * and reads must still succeed and return what they returned before. A
 * read that touched any goroutine would fault. bench/stats_read.c times
 * reads at 1k and 100k goroutines.
 */
#define QUIET_READS 1000

static struct {
  int count;
  uintptr_t *lo, *hi;         /* each parked goroutine's stack bounds */
  goro_waitgroup parked, exited;
  goro_chan *release;
} quiet;

static sigjmp_buf quiet_fault_jump;
static uintptr_t quiet_fault_addr, quiet_lo, quiet_hi;
static pid_t quiet_reader_tid;
static struct sigaction quiet_previous;

static void quiet_goroutine(void *arg) {
  int index = (int)(intptr_t)arg;

  CHECK_OK(goro_stack_bounds(&quiet.lo[index], &quiet.hi[index]));
  CHECK_OK(goro_wg_done(&quiet.parked));
  CHECK_ERR(goro_chan_recv(quiet.release, NULL), GORO_ECLOSED);
  CHECK_OK(goro_wg_done(&quiet.exited));
}

/* Turns a fault in the protected range into a test failure; any other
 * fault goes to the handler goro installed. Only the reading thread can
 * jump back to its frame, so a fault on another thread exits here. */
static void quiet_on_fault(int sig, siginfo_t *info, void *context) {
  uintptr_t addr = (uintptr_t)info->si_addr;

  if (addr >= quiet_lo && addr < quiet_hi) {
    quiet_fault_addr = addr;
    if (gettid() == quiet_reader_tid)
      siglongjmp(quiet_fault_jump, 1);
    static const char msg[] = "FAIL: another thread touched a protected goroutine stack while "
                              "main read memstats\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
      _exit(1);
    _exit(1);
  }
  sigaction(SIGSEGV, &quiet_previous, NULL);
  (void)sig;
  (void)context;
}

/* Counts the memory mappings that overlap [lo, hi), or returns -1 if
 * /proc/self/maps cannot be read. Mappings elsewhere do not count: TSan
 * makes four for each goroutine (a TSan fiber) outside the stack arena. */
static long count_mappings_in(uintptr_t lo, uintptr_t hi) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  long overlapping = 0;

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f)) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start < hi && end > lo)
      overlapping++;
  }
  fclose(f);
  return overlapping;
}

static goro_memstats quiet_one, quiet_many, quiet_during[8];

/* Reads QUIET_READS times with every parked goroutine's slot inaccessible,
 * and returns how many reads completed. */
static int read_with_goroutines_protected(void) {
  struct sigaction on_fault;
  volatile int reads = 0;

  memset(&on_fault, 0, sizeof on_fault);
  on_fault.sa_sigaction = quiet_on_fault;
  on_fault.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&on_fault.sa_mask);
  quiet_reader_tid = gettid();
  CHECK_EQ(sigaction(SIGSEGV, &on_fault, &quiet_previous), 0);
  CHECK_EQ(mprotect((void *)quiet_lo, quiet_hi - quiet_lo, PROT_NONE), 0);

  if (sigsetjmp(quiet_fault_jump, 1) != 0)
    FAIL("goro_read_memstats touched %#lx, in the stack slots of the %d parked goroutines "
         "[%#lx, %#lx)",
         (unsigned long)quiet_fault_addr, quiet.count, (unsigned long)quiet_lo,
         (unsigned long)quiet_hi);
  for (; reads < QUIET_READS; reads++)
    observe_read(&quiet_during[reads % 8]);

  CHECK_EQ(mprotect((void *)quiet_lo, quiet_hi - quiet_lo, PROT_READ | PROT_WRITE), 0);
  CHECK_EQ(sigaction(SIGSEGV, &quiet_previous, NULL), 0);
  return reads;
}

static int quiet_main(void *arg) {
  uintptr_t main_lo, main_hi;
  (void)arg;

  observe_read(&quiet_one);
  CHECK_EQ(quiet_one.goroutines, 1);

  CHECK_OK(goro_chan_make(&quiet.release, 0, 0));
  CHECK_OK(goro_wg_add(&quiet.parked, quiet.count));
  CHECK_OK(goro_wg_add(&quiet.exited, quiet.count));
  for (int i = 0; i < quiet.count; i++)
    CHECK_OK(goro_spawn(quiet_goroutine, (void *)(intptr_t)i));
  CHECK_OK(goro_wg_wait(&quiet.parked));
  observe_read(&quiet_many);
  CHECK_EQ(quiet_many.goroutines, quiet.count + 1);

  /* One range from the lowest guard to the highest top covers every
   * parked goroutine's stack and descriptor, and must miss main's. */
  quiet_lo = UINTPTR_MAX;
  quiet_hi = 0;
  for (int i = 0; i < quiet.count; i++) {
    uintptr_t base = quiet.lo[i] - 32 * KIB;
    quiet_lo = base < quiet_lo ? base : quiet_lo;
    quiet_hi = quiet.hi[i] > quiet_hi ? quiet.hi[i] : quiet_hi;
  }
  CHECK_OK(goro_stack_bounds(&main_lo, &main_hi));
  if (main_hi > quiet_lo && main_lo < quiet_hi)
    FAIL("main's stack [%#lx, %#lx) lies among the parked goroutines' [%#lx, %#lx)",
         (unsigned long)main_lo, (unsigned long)main_hi, (unsigned long)quiet_lo,
         (unsigned long)quiet_hi);

  /* Restoring PROT_READ | PROT_WRITE over the range would remove guards
   * made with mprotect (kernels before 6.13): there each guard is a
   * mapping of its own, and the check is skipped. */
  long mappings = count_mappings_in(quiet_lo, quiet_hi);
  if (mappings < 0 || mappings > quiet.count) {
    printf("note: %ld memory mappings among the stacks of %d goroutines: guards are mprotect "
           "mappings, so reads are not checked with the goroutines' stacks protected\n",
           mappings, quiet.count);
  } else {
    CHECK_EQ(read_with_goroutines_protected(), QUIET_READS);
    for (int i = 0; i < 8; i++)
      if (memcmp(&quiet_during[i], &quiet_many, sizeof quiet_many) != 0)
        FAIL("a read with the goroutines' stacks protected differs from the read before "
             "(goroutines %llu then %llu, stack_inuse %llu then %llu)",
             (unsigned long long)quiet_many.goroutines,
             (unsigned long long)quiet_during[i].goroutines,
             (unsigned long long)quiet_many.stack_inuse,
             (unsigned long long)quiet_during[i].stack_inuse);
  }

  CHECK_OK(goro_chan_close(quiet.release));
  CHECK_OK(goro_wg_wait(&quiet.exited));
  CHECK_OK(goro_chan_free(quiet.release));
  return 0;
}

TEST(memstats_read_touches_no_goroutine) {
  /* TSan allows at most 8,128 live goroutines, each a TSan fiber. */
  quiet.count = (int)harness_scaled(100000, 10000, 4000);
  quiet.lo = calloc((size_t)quiet.count, sizeof *quiet.lo);
  quiet.hi = calloc((size_t)quiet.count, sizeof *quiet.hi);
  CHECK(quiet.lo != NULL);
  CHECK(quiet.hi != NULL);
  /* No automatic cycle may visit the goroutines while they are protected.
   * With one worker, main runs again only once the goroutine that woke it
   * has parked, so no goroutine runs while their stacks are protected. */
  set_policy(true, 4, 0);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(quiet_main, NULL);

  /* The two reads fill the same fields; what depends on no goroutine is equal. */
  observe_check_read(&quiet_one, 1, "read with 1 goroutine");
  observe_check_read(&quiet_many, (uint64_t)quiet.count + 1, "read with many goroutines");
  CHECK_EQ(quiet_many.size, quiet_one.size);
  CHECK_EQ(quiet_many.version, quiet_one.version);
  CHECK_EQ(quiet_many.maxprocs, quiet_one.maxprocs);
  CHECK_EQ(quiet_many.max_stack, quiet_one.max_stack);
  CHECK_EQ(quiet_many.stack_reserved, quiet_one.stack_reserved);
  CHECK_EQ(quiet_many.stack_start_size, quiet_one.stack_start_size);
  CHECK_EQ(quiet_many.gc_cycles, quiet_one.gc_cycles);
  CHECK_EQ(quiet_many.spawned_total, quiet_one.spawned_total + (uint64_t)quiet.count);
  CHECK_GE(quiet_many.stack_inuse, quiet_one.stack_inuse + OBSERVE_PAGE * (uint64_t)quiet.count);
  free(quiet.lo);
  free(quiet.hi);
}

/* ---- Growth and shrinking of one goroutine ---------------------------- */

/*
 * One goroutine recurses to 64 KiB, parks at the bottom, returns and parks
 * shallow, while main runs cycles. GOROMAXPROCS=1 makes "parked" exact:
 * main runs again only once the goroutine has switched out.
 */
#define DEEP_BYTES (64 * KIB)
#define DEEP_CYCLES 8

typedef struct deep {
  goro_chan *to_goroutine, *to_main;
  int64_t id;
  goro_stack_info bottom, shallow, after;
  goro_memstats start, at_bottom, before_gc, after_gc;
  int64_t released[DEEP_CYCLES]; /* what each goro_gc returned */
  int hysteresis;
} deep;

static deep the_deep;

static void deep_bottom(void *arg) {
  deep *d = arg;

  CHECK_OK(goro_stack_info_self(&d->bottom));
  CHECK_OK(goro_chan_send(d->to_main, NULL));
  CHECK_OK(goro_chan_recv(d->to_goroutine, NULL));
}

static void deep_goroutine(void *arg) {
  deep *d = arg;

  observe_at_depth(DEEP_BYTES, deep_bottom, d);
  CHECK_OK(goro_stack_info_self(&d->shallow));
  CHECK_OK(goro_chan_send(d->to_main, NULL));
  CHECK_OK(goro_chan_recv(d->to_goroutine, NULL));
  CHECK_OK(goro_stack_info_self(&d->after));
  CHECK_OK(goro_chan_send(d->to_main, NULL));
}

static int deep_main(void *arg) {
  deep *d = arg;

  CHECK_OK(goro_chan_make(&d->to_goroutine, 0, 0));
  CHECK_OK(goro_chan_make(&d->to_main, 0, 0));
  observe_read(&d->start);
  d->id = goro_spawn(deep_goroutine, d);
  CHECK_OK(d->id);

  /* Parked 64 KiB deep. */
  CHECK_OK(goro_chan_recv(d->to_main, NULL));
  observe_read(&d->at_bottom);
  CHECK_OK(goro_chan_send(d->to_goroutine, NULL));

  /* Parked shallow: the cycles may shrink it now. */
  CHECK_OK(goro_chan_recv(d->to_main, NULL));
  observe_read(&d->before_gc);
  for (int i = 0; i < DEEP_CYCLES; i++) {
    d->released[i] = goro_gc();
    CHECK_OK(d->released[i]);
  }
  observe_read(&d->after_gc);

  CHECK_OK(goro_chan_send(d->to_goroutine, NULL));
  CHECK_OK(goro_chan_recv(d->to_main, NULL));
  CHECK_OK(goro_chan_free(d->to_goroutine));
  CHECK_OK(goro_chan_free(d->to_main));
  return 0;
}

static void run_deep(bool shrink, uint32_t hysteresis) {
  CHECK_OK(goro_set_maxprocs(1));
  set_policy(shrink, hysteresis, 0);
  RUN_MAIN(deep_main, &the_deep);
}

static int64_t deep_released_total(const deep *d) {
  int64_t total = 0;

  for (int i = 0; i < DEEP_CYCLES; i++)
    total += d->released[i];
  return total;
}

TEST(deep_park_shows_growth_in_stats) {
  deep *d = &the_deep;

  run_deep(true, 0);

  /* goro_stack_info_self at the bottom */
  CHECK_EQ(d->bottom.id, d->id);
  CHECK_EQ(d->bottom.max, GORO_DEFAULT_MAX_STACK);
  CHECK_GE(d->bottom.current, DEEP_BYTES);
  CHECK_LE(d->bottom.current, DEEP_BYTES + 16 * KIB);
  CHECK_EQ(d->bottom.peak, d->bottom.current);
  CHECK_GE(d->bottom.growths, 1);
  CHECK_EQ(d->bottom.shrinks, 0);

  /* memstats with the goroutine parked at the bottom */
  observe_check_read(&d->at_bottom, 2, "at the bottom");
  CHECK_EQ(d->at_bottom.goroutines, 2);
  CHECK_GE(d->at_bottom.stack_inuse, d->start.stack_inuse + DEEP_BYTES);
  CHECK_GT(d->at_bottom.stack_growths, d->start.stack_growths);
  CHECK_GE(d->at_bottom.pages_committed, d->start.pages_committed + DEEP_BYTES / OBSERVE_PAGE);
  int bucket = bucket_of(d->at_bottom.stack_inuse - d->start.stack_inuse);
  CHECK_EQ(bucket, 5);
  CHECK_EQ(d->at_bottom.stack_hist_count[bucket], 1);

  /* Back at the top, the span stays until a cycle releases it. */
  CHECK_GE(d->shallow.current, d->bottom.current);
  CHECK_EQ(d->shallow.shrinks, 0);
}

TEST(gc_shrinks_idle_stack_with_hysteresis_0) {
  deep *d = &the_deep;

  run_deep(true, 0);
  observe_check_read(&d->after_gc, 2, "after the cycles");
  CHECK_GT(d->released[0], 0);
  CHECK_GT(d->after_gc.stack_shrinks, d->before_gc.stack_shrinks);
  CHECK_LT(d->after_gc.stack_inuse, d->before_gc.stack_inuse);
  CHECK_LT(d->after_gc.stack_inuse, d->start.stack_inuse + DEEP_BYTES / 2);
  CHECK_EQ((int64_t)(d->after_gc.pages_released - d->before_gc.pages_released) *
               (int64_t)OBSERVE_PAGE,
           deep_released_total(d));
  CHECK_EQ(d->after_gc.gc_cycles, d->before_gc.gc_cycles + DEEP_CYCLES);

  /* goro_stack_info_self reports the shrink too. */
  CHECK_GE(d->after.shrinks, 1);
  CHECK_LT(d->after.current, d->bottom.current);
  CHECK_GE(d->after.peak, d->bottom.current);
}

TEST(gc_with_shrink_off_releases_nothing) {
  deep *d = &the_deep;

  run_deep(false, 0);
  for (int i = 0; i < DEEP_CYCLES; i++)
    CHECK_EQ(d->released[i], 0);
  CHECK_EQ(d->after_gc.stack_shrinks, d->before_gc.stack_shrinks);
  CHECK_EQ(d->after_gc.pages_released, d->before_gc.pages_released);
  CHECK_GE(d->after_gc.stack_inuse, d->before_gc.stack_inuse);
  CHECK_EQ(d->after_gc.gc_cycles, d->before_gc.gc_cycles + DEEP_CYCLES);
  CHECK_EQ(d->after.shrinks, 0);
  CHECK_GE(d->after.current, d->bottom.current);
}

TEST(gc_keeps_grown_stack_for_hysteresis) {
  deep *d = &the_deep;

  /* A cycle can first see the bottom a page deeper than the park did
   * (mincore is exact), which counts as growth and restarts the wait, so
   * the shrink comes after 3 or 4 cycles. */
  run_deep(true, 3);
  for (int i = 0; i < 3; i++)
    if (d->released[i] != 0)
      FAIL("cycle %d released %lld bytes within the 3-cycle hysteresis", i + 1,
           (long long)d->released[i]);
  CHECK_GT(d->released[3] + d->released[4], 0);
  CHECK_GE(d->after.shrinks, 1);
}

TEST(stack_info_self_rejects_bad_callers) {
  goro_stack_info info;

  CHECK_ERR(goro_stack_info_self(&info), GORO_ENOTGORO);
  CHECK_ERR(goro_stack_info_self(NULL), GORO_EINVAL);
  CHECK_ERR(goro_read_memstats(NULL), GORO_EINVAL);
}

/* ---- The size histogram ----------------------------------------------- */

/* Depths a quarter into buckets 0 to 7, so that the frames of the park
 * itself cannot carry a stack into the next bucket. The deepest needs a
 * 1 MiB maximum. */
static const size_t hist_depths[] = {0, 5 * KIB, 10 * KIB, 20 * KIB, 40 * KIB, 80 * KIB,
                                     160 * KIB, 320 * KIB};
#define HIST_KINDS (sizeof hist_depths / sizeof hist_depths[0])
#define HIST_EACH 3

static struct {
  goro_waitgroup parked, exited;
  goro_chan *release;
  goro_memstats parked_stats;
  size_t seen_span[HIST_KINDS][HIST_EACH]; /* goro_stack_info_self after the wake-up */
} hist;

/* memstats counts a parked goroutine at the depth of its saved stack
 * pointer. goro_stack_info_self, called after the wake-up, reads the span
 * exactly, so it also counts the pages that frames below the bottom one
 * touched. Those are the park and wake paths, the dynamic linker resolving
 * a first call, and under ASan the mincore interceptor itself. */
static void hist_bottom(void *arg) {
  size_t *seen = arg;
  goro_stack_info info;

  CHECK_OK(goro_wg_done(&hist.parked));
  CHECK_ERR(goro_chan_recv(hist.release, NULL), GORO_ECLOSED);
  CHECK_OK(goro_stack_info_self(&info));
  *seen = info.current;
}

static void hist_goroutine(void *arg) {
  size_t kind = (size_t)(intptr_t)arg / HIST_EACH, k = (size_t)(intptr_t)arg % HIST_EACH;

  observe_at_depth(hist_depths[kind], hist_bottom, &hist.seen_span[kind][k]);
  CHECK_OK(goro_wg_done(&hist.exited));
}

static int hist_main(void *arg) {
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = 1 << 20};
  (void)arg;

  CHECK_OK(goro_chan_make(&hist.release, 0, 0));
  CHECK_OK(goro_wg_add(&hist.parked, HIST_KINDS * HIST_EACH));
  CHECK_OK(goro_wg_add(&hist.exited, HIST_KINDS * HIST_EACH));
  for (size_t i = 0; i < HIST_KINDS * HIST_EACH; i++)
    CHECK_OK(goro_spawn_with(hist_goroutine, (void *)(intptr_t)i, &opts));
  CHECK_OK(goro_wg_wait(&hist.parked));
  observe_read(&hist.parked_stats);
  CHECK_OK(goro_chan_close(hist.release));
  CHECK_OK(goro_wg_wait(&hist.exited));
  CHECK_OK(goro_chan_free(hist.release));
  return 0;
}

TEST(histogram_buckets_match_parked_depths) {
  goro_memstats *s = &hist.parked_stats;

  CHECK_OK(goro_set_maxprocs(1));
  set_policy(true, 4, 0);
  RUN_MAIN(hist_main, NULL);

  observe_check_read(s, 1 + HIST_KINDS * HIST_EACH, "parked at known depths");
  for (size_t kind = 0; kind < HIST_KINDS; kind++) {
    /* Main is parked shallow, in bucket 0 with the depth-0 goroutines. */
    uint64_t expected = HIST_EACH + (kind == 0);
    if (s->stack_hist_count[kind] != expected)
      FAIL("bucket %zu (spans up to %llu bytes) holds %llu goroutines; expected %llu parked "
           "%zu bytes deep",
           kind, (unsigned long long)(OBSERVE_PAGE << kind),
           (unsigned long long)s->stack_hist_count[kind], (unsigned long long)expected,
           hist_depths[kind]);
    /* The exact span after the wake-up is in the same bucket or, with
     * the pages touched below the bottom frame, the next one. */
    for (int k = 0; k < HIST_EACH; k++) {
      int seen = bucket_of(hist.seen_span[kind][k]);
      if (seen != (int)kind && seen != (int)kind + 1)
        FAIL("a goroutine parked %zu bytes deep reports a %zu-byte span, in bucket %d, not "
             "%zu or %zu",
             hist_depths[kind], hist.seen_span[kind][k], seen, kind, kind + 1);
    }
  }
  for (int i = (int)HIST_KINDS; i < GORO_STACK_HIST_BUCKETS; i++)
    CHECK_EQ(s->stack_hist_count[i], 0);
}

/* ---- The older-caller rule -------------------------------------------- */

static goro_memstats caller_full;
static union {
  goro_memstats stats;
  unsigned char bytes[sizeof(goro_memstats) + 64];
} caller_old, caller_new;
static int caller_rc_old, caller_rc_new, caller_rc_short;

static int caller_main(void *arg) {
  (void)arg;

  observe_read(&caller_full);

  /* A caller built when the struct ended after stack_inuse. */
  memset(&caller_old, 0xa5, sizeof caller_old);
  caller_old.stats.size = (uint32_t)offsetof(goro_memstats, stack_cache);
  caller_rc_old = goro_read_memstats(&caller_old.stats);

  /* A caller built against a later, larger struct. */
  memset(&caller_new, 0xa5, sizeof caller_new);
  caller_new.stats.size = (uint32_t)sizeof caller_new;
  caller_rc_new = goro_read_memstats(&caller_new.stats);

  /* Too short to hold even size and version. */
  goro_memstats tiny;
  memset(&tiny, 0, sizeof tiny);
  tiny.size = 4;
  caller_rc_short = goro_read_memstats(&tiny);
  return 0;
}

TEST(memstats_older_caller_gets_prefix) {
  size_t prefix = offsetof(goro_memstats, stack_cache);

  RUN_MAIN(caller_main, NULL);
  CHECK_EQ(caller_rc_old, 0);
  CHECK_EQ(caller_old.stats.size, prefix);
  CHECK_EQ(caller_old.stats.version, GORO_MEMSTATS_VERSION);
  CHECK_EQ(caller_old.stats.goroutines, caller_full.goroutines);
  CHECK_EQ(caller_old.stats.spawned_total, caller_full.spawned_total);
  CHECK_EQ(caller_old.stats.stack_inuse, caller_full.stack_inuse);
  for (size_t i = prefix; i < sizeof caller_old.bytes; i++)
    if (caller_old.bytes[i] != 0xa5)
      FAIL("byte %zu, past the %zu bytes the caller asked for, was written (now %#x)", i, prefix,
           caller_old.bytes[i]);

  CHECK_EQ(caller_rc_new, 0);
  CHECK_EQ(caller_new.stats.size, sizeof(goro_memstats));
  CHECK_EQ(caller_new.stats.goroutines, caller_full.goroutines);
  for (size_t i = sizeof(goro_memstats); i < sizeof caller_new.bytes; i++)
    if (caller_new.bytes[i] != 0xa5)
      FAIL("byte %zu, past the %zu bytes goro knows, was written (now %#x)", i,
           sizeof(goro_memstats), caller_new.bytes[i]);

  CHECK_ERR(caller_rc_short, GORO_EINVAL);
}

/* ---- Prometheus exposition -------------------------------------------- */

#define PROM_MAX_FAMILIES 64
#define PROM_MAX_SAMPLES 256

typedef struct prom_family {
  char name[96];
  char type[16];
  int help, typed;  /* lines seen */
  int samples;
  int closed;       /* another family's samples came after this one's */
} prom_family;

typedef struct prom_sample {
  char name[96];
  char le[32];      /* the le label of a bucket, or "" */
  char value[48];
  prom_family *family;
} prom_sample;

typedef struct prom_text {
  prom_family families[PROM_MAX_FAMILIES];
  prom_sample samples[PROM_MAX_SAMPLES];
  int nfamilies, nsamples;
} prom_text;

static prom_text prom;
static char prom_raw[65536];
static goro_memstats prom_stats;

static int prom_name_ok(const char *name) {
  if (!*name || !(isalpha((unsigned char)*name) || *name == '_' || *name == ':'))
    return 0;
  for (const char *c = name; *c; c++)
    if (!(isalnum((unsigned char)*c) || *c == '_' || *c == ':'))
      return 0;
  return 1;
}

static prom_family *prom_find(const char *name) {
  for (int i = 0; i < prom.nfamilies; i++)
    if (strcmp(prom.families[i].name, name) == 0)
      return &prom.families[i];
  return NULL;
}

static prom_family *prom_add(const char *name, int line) {
  prom_family *f = prom_find(name);

  if (f)
    return f;
  if (!prom_name_ok(name))
    FAIL("line %d: invalid metric name \"%s\"", line, name);
  CHECK_LT(prom.nfamilies, PROM_MAX_FAMILIES);
  f = &prom.families[prom.nfamilies++];
  snprintf(f->name, sizeof f->name, "%s", name);
  return f;
}

/* Returns the family a sample name belongs to: its own, or for a
 * histogram's _bucket, _sum and _count series the histogram's. */
static prom_family *prom_family_of(const char *name) {
  static const char *suffixes[] = {"_bucket", "_sum", "_count"};
  prom_family *f = prom_find(name);

  if (f)
    return f;
  for (size_t i = 0; i < 3; i++) {
    size_t len = strlen(name), slen = strlen(suffixes[i]);
    char base[96];
    if (len <= slen || strcmp(name + len - slen, suffixes[i]) != 0 || len - slen >= sizeof base)
      continue;
    memcpy(base, name, len - slen);
    base[len - slen] = '\0';
    f = prom_find(base);
    if (f && strcmp(f->type, "histogram") == 0)
      return f;
  }
  return NULL;
}

static void prom_parse_comment(const char *text, int line) {
  char name[96], rest[256];

  if (strncmp(text, "# HELP ", 7) == 0) {
    if (sscanf(text + 7, "%95s %255[^\n]", name, rest) != 2)
      FAIL("line %d: HELP without a metric name and text: %s", line, text);
    prom_family *f = prom_add(name, line);
    if (f->help++ || f->samples)
      FAIL("line %d: HELP for %s repeated or after its samples", line, name);
  } else if (strncmp(text, "# TYPE ", 7) == 0) {
    if (sscanf(text + 7, "%95s %15s", name, rest) != 2)
      FAIL("line %d: TYPE without a metric name and type: %s", line, text);
    prom_family *f = prom_add(name, line);
    if (f->typed++ || f->samples)
      FAIL("line %d: TYPE for %s repeated or after its samples", line, name);
    if (strcmp(rest, "counter") && strcmp(rest, "gauge") && strcmp(rest, "histogram") &&
        strcmp(rest, "summary") && strcmp(rest, "untyped"))
      FAIL("line %d: unknown metric type \"%s\"", line, rest);
    memcpy(f->type, rest, sizeof f->type);
  }
}

static void prom_parse_sample(const char *text, int line, prom_family **current) {
  prom_sample *s;
  const char *at = text;
  size_t len = strcspn(at, "{ ");

  CHECK_LT(prom.nsamples, PROM_MAX_SAMPLES);
  s = &prom.samples[prom.nsamples++];
  if (len == 0 || len >= sizeof s->name)
    FAIL("line %d: no metric name: %s", line, text);
  memcpy(s->name, at, len);
  at += len;
  if (*at == '{') {
    /* goro writes one label at most: le on histogram buckets. */
    if (sscanf(at, "{le=\"%31[^\"]\"}", s->le) != 1)
      FAIL("line %d: labels other than one le: %s", line, text);
    at = strchr(at, '}') + 1;
  }
  if (*at != ' ' || sscanf(at + 1, "%47s", s->value) != 1)
    FAIL("line %d: no value after the metric name: %s", line, text);
  if (strchr(at + 1, ' '))
    FAIL("line %d: more than a value after the metric name: %s", line, text);
  char *end;
  strtod(s->value, &end);
  if (*end != '\0')
    FAIL("line %d: value \"%s\" is not a number", line, s->value);

  s->family = prom_family_of(s->name);
  if (!s->family || !s->family->help || !s->family->typed)
    FAIL("line %d: sample %s comes before its metric's HELP and TYPE", line, s->name);
  if (s->family->closed)
    FAIL("line %d: samples of %s are not together", line, s->family->name);
  if (*current && *current != s->family)
    (*current)->closed = 1;
  *current = s->family;
  s->family->samples++;
}

static void prom_parse(char *text) {
  prom_family *current = NULL;
  int line = 0;

  memset(&prom, 0, sizeof prom);
  for (char *at = text; *at;) {
    char *end = strchr(at, '\n');
    if (!end)
      FAIL("line %d does not end with a newline: %s", line + 1, at);
    *end = '\0';
    line++;
    if (*at == '\0')
      FAIL("line %d is empty", line);
    if (*at == '#')
      prom_parse_comment(at, line);
    else
      prom_parse_sample(at, line, &current);
    *end = '\n';
    at = end + 1;
  }
}

static const prom_sample *prom_sample_named(const char *name, const char *le) {
  for (int i = 0; i < prom.nsamples; i++)
    if (strcmp(prom.samples[i].name, name) == 0 && strcmp(prom.samples[i].le, le) == 0)
      return &prom.samples[i];
  FAIL("the exposition has no sample %s%s%s%s", name, *le ? "{le=\"" : "", le, *le ? "\"}" : "");
}

static unsigned long long prom_value(const char *name, const char *le) {
  const prom_sample *s = prom_sample_named(name, le);
  char *end;
  unsigned long long v = strtoull(s->value, &end, 10);

  if (*end != '\0')
    FAIL("%s has value \"%s\", expected a whole number", name, s->value);
  return v;
}

/* Checks the histogram: buckets in increasing le order with cumulative
 * counts, a last +Inf bucket equal to _count, and _sum and _count equal to
 * stack_inuse and goroutines. */
static void prom_check_histogram(const char *name) {
  char series[128];
  double last_le = 0;
  unsigned long long last_count = 0;
  int buckets = 0, saw_inf = 0;

  snprintf(series, sizeof series, "%s_bucket", name);
  for (int i = 0; i < prom.nsamples; i++) {
    const prom_sample *s = &prom.samples[i];
    if (strcmp(s->name, series) != 0)
      continue;
    if (saw_inf)
      FAIL("bucket le=\"%s\" comes after the +Inf bucket", s->le);
    double le = strcmp(s->le, "+Inf") == 0 ? INFINITY : strtod(s->le, NULL);
    unsigned long long count = strtoull(s->value, NULL, 10);
    if (buckets && le <= last_le)
      FAIL("bucket le=\"%s\" does not exceed the bucket before it (%g)", s->le, last_le);
    if (count < last_count)
      FAIL("bucket le=\"%s\" holds %llu, less than %llu before it: not cumulative", s->le, count,
           last_count);
    /* Each finite bucket counts memstats' buckets up to it. */
    if (!isinf(le)) {
      unsigned long long expected = 0;
      for (int b = 0; b < GORO_STACK_HIST_BUCKETS && (double)(OBSERVE_PAGE << b) <= le; b++)
        expected += prom_stats.stack_hist_count[b];
      if (count != expected)
        FAIL("bucket le=\"%s\" holds %llu; memstats' histogram gives %llu", s->le, count,
             expected);
    }
    saw_inf = isinf(le);
    last_le = le;
    last_count = count;
    buckets++;
  }
  CHECK_EQ(buckets, GORO_STACK_HIST_BUCKETS);
  CHECK(saw_inf);

  snprintf(series, sizeof series, "%s_count", name);
  CHECK_EQ(last_count, prom_value(series, ""));
  CHECK_EQ(prom_value(series, ""), prom_value("goro_goroutines", ""));
  snprintf(series, sizeof series, "%s_sum", name);
  CHECK_EQ(prom_value(series, ""), prom_value("goro_stack_inuse_bytes", ""));
}

/* The deep goroutine parks 48 KiB down, so the histogram has two buckets. */
static void prom_bottom(void *arg) {
  goro_chan *release = arg;

  CHECK_ERR(goro_chan_recv(release, NULL), GORO_ECLOSED);
}

static void prom_goroutine(void *arg) { observe_at_depth(48 * KIB, prom_bottom, arg); }

static int prom_main(void *arg) {
  int fd = *(int *)arg;
  goro_chan *release;
  goro_memstats after;

  CHECK_OK(goro_chan_make(&release, 0, 0));
  CHECK_OK(goro_spawn(prom_goroutine, release));
  CHECK_OK(goro_yield());
  observe_read(&prom_stats);
  CHECK_OK(goro_write_prometheus(fd));
  observe_read(&after);
  if (memcmp(&after, &prom_stats, sizeof after) != 0)
    FAIL("memstats changed while the exposition was written; nothing should have run");

  CHECK_ERR(goro_write_prometheus(-1), GORO_EINVAL);
  int read_only = open("/dev/null", O_RDONLY);
  CHECK(read_only >= 0);
  CHECK_ERR(goro_write_prometheus(read_only), GORO_EINVAL);
  close(read_only);
  CHECK_OK(goro_chan_close(release));
  CHECK_OK(goro_yield());
  CHECK_OK(goro_chan_free(release));
  return 0;
}

/* Returns the path of promtool in PATH, or NULL. */
static const char *find_promtool(void) {
  static char path[4096];
  const char *dirs = getenv("PATH");

  for (const char *at = dirs; at && *at;) {
    size_t len = strcspn(at, ":");
    snprintf(path, sizeof path, "%.*s/promtool", (int)len, at);
    if (len && access(path, X_OK) == 0)
      return path;
    at += len + (at[len] == ':');
  }
  return NULL;
}

/* Runs promtool check metrics on fd's contents and returns its exit
 * status; its output goes to out. */
static int run_promtool(const char *promtool, int fd, char *out, size_t out_size) {
  int pipefd[2];

  CHECK_EQ(pipe(pipefd), 0);
  CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    dup2(fd, STDIN_FILENO);
    dup2(pipefd[1], STDOUT_FILENO);
    dup2(pipefd[1], STDERR_FILENO);
    execl(promtool, promtool, "check", "metrics", (char *)NULL);
    _exit(127);
  }
  close(pipefd[1]);
  size_t len = 0;
  ssize_t n;
  while (len < out_size - 1 && (n = read(pipefd[0], out + len, out_size - 1 - len)) > 0)
    len += (size_t)n;
  out[len] = '\0';
  close(pipefd[0]);
  int status;
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(prometheus_exposition_is_valid) {
  int fd = memfd_create("goro-prometheus", 0);

  CHECK(fd >= 0);
  CHECK_OK(goro_set_maxprocs(1));
  set_policy(true, 4, 0);
  RUN_MAIN(prom_main, &fd);

  off_t size = lseek(fd, 0, SEEK_END);
  CHECK_GT(size, 0);
  CHECK_LT(size, (off_t)sizeof prom_raw);
  CHECK_EQ(pread(fd, prom_raw, (size_t)size, 0), size);
  prom_raw[size] = '\0';
  prom_parse(prom_raw);

  for (int i = 0; i < prom.nfamilies; i++) {
    const prom_family *f = &prom.families[i];
    if (!f->help || !f->typed || !f->samples)
      FAIL("metric %s has %d HELP, %d TYPE lines and %d samples; expected one, one and some",
           f->name, f->help, f->typed, f->samples);
    size_t len = strlen(f->name);
    if (strcmp(f->type, "counter") == 0 && (len < 6 || strcmp(f->name + len - 6, "_total") != 0))
      FAIL("counter %s does not end in _total", f->name);
  }
  prom_check_histogram("goro_stack_size_bytes");

  /* Every gauge and counter carries its memstats value. */
  const struct {
    const char *metric;
    uint64_t value;
  } expected[] = {
      {"goro_goroutines", prom_stats.goroutines},
      {"goro_goroutines_spawned_total", prom_stats.spawned_total},
      {"goro_stack_inuse_bytes", prom_stats.stack_inuse},
      {"goro_stack_sys_bytes", prom_stats.stack_sys},
      {"goro_stack_cache_bytes", prom_stats.stack_cache},
      {"goro_stack_meta_bytes", prom_stats.stack_meta},
      {"goro_stack_reserved_bytes", prom_stats.stack_reserved},
      {"goro_stack_start_size_bytes", prom_stats.stack_start_size},
      {"goro_stack_guards", prom_stats.guards},
      {"goro_stack_unguarded_slots", prom_stats.unguarded_slots},
      {"goro_stack_growths_total", prom_stats.stack_growths},
      {"goro_stack_shrinks_total", prom_stats.stack_shrinks},
      {"goro_stack_pages_committed_total", prom_stats.pages_committed},
      {"goro_stack_pages_released_total", prom_stats.pages_released},
      {"goro_gc_cycles_total", prom_stats.gc_cycles},
  };
  for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
    if (prom_value(expected[i].metric, "") != expected[i].value)
      FAIL("%s is %llu in the exposition, %llu in memstats", expected[i].metric,
           prom_value(expected[i].metric, ""), (unsigned long long)expected[i].value);
  CHECK_EQ(prom_stats.goroutines, 2);
  CHECK_EQ(prom_stats.stack_hist_count[0], 1);
  CHECK_EQ(prom_stats.stack_hist_count[4], 1);

  const char *promtool = find_promtool();
  if (!promtool) {
    printf("note: promtool not found; skipping `promtool check metrics` (make check-prometheus "
           "installs it and runs this check)\n");
  } else {
    static char out[8192];
    int status = run_promtool(promtool, fd, out, sizeof out);
    if (status != 0 || out[0] != '\0')
      FAIL("promtool check metrics exited %d and printed:\n%s", status, out);
  }
  close(fd);
}
