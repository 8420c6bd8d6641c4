/*
 * The stack policy against field cases F01-F07: warm slot reuse for
 * per-request goroutines, starting sizes for a bimodal mix, a hot loop at
 * the committed boundary, growth attribution, thrash counters, release
 * after a burst, and churn with bounded caches.
 *
 * Each test is a scaled-down run of the case's workload (the comment on
 * each gives the scale); the full sizes and every timing target live in
 * bench/policy/ (make bench-policy). Under a sanitizer the sizes shrink
 * again and every assertion stays.
 */
#include "harness.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define PAGE ((size_t)4096)
#define KiB ((size_t)1024)

/* The library's slot cache bound (src/stack.h): 32 slots of at most
 * 64 KiB per worker, plus 16 MiB on the shared warm lists once the monitor
 * thread has scavenged them. */
static long long cache_bound(int workers) {
  return (long long)workers * 32 * (64 << 10) + (16LL << 20);
}

/* Divides n for sanitizer builds, which run several times slower. */
static long scaled(long n, long sanitizer_divisor) {
  return harness_sanitizer() ? n / sanitizer_divisor : n;
}

static goro_memstats read_stats(void) {
  goro_memstats s;

  memset(&s, 0, sizeof s);
  s.size = sizeof s;
  CHECK_OK(goro_read_memstats(&s));
  return s;
}

static goro_stack_info self_info(void) {
  goro_stack_info info;

  CHECK_OK(goro_stack_info_self(&info));
  return info;
}

static uintptr_t stack_top(void) {
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  return hi;
}

/* Returns a field such as "Rss" of the mapping that contains addr (the
 * stack arena, for a goroutine stack address), in bytes. */
static long long mapping_field(uintptr_t addr, const char *field) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  size_t len = strlen(field);
  bool inside = false;
  long long kb = -1;

  CHECK(f != NULL);
  while (fgets(line, sizeof line, f)) {
    unsigned long long lo, hi;
    if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && strncmp(line, field, len) == 0 && line[len] == ':') {
      kb = strtoll(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  if (kb < 0)
    FAIL("no %s line for the mapping holding %#llx in /proc/self/smaps", field,
         (unsigned long long)addr);
  return kb * 1024;
}

static long long arena_rss(void) { return mapping_field(stack_top() - 1, "Rss"); }

static long long process_rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long long kb = -1;

  CHECK(f != NULL);
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0)
      kb = strtoll(line + 6, NULL, 10);
  fclose(f);
  CHECK_GT(kb, 0);
  return kb * 1024;
}

static long minor_faults(void) {
  struct rusage ru;

  CHECK_EQ(getrusage(RUSAGE_SELF, &ru), 0);
  return ru.ru_minflt;
}

/* Returns the resident bytes of the calling goroutine's whole stack, as
 * mincore reports them. Pages it touched since its last park count,
 * although goro has not observed them yet. */
static long long own_stack_resident(void) {
  uintptr_t lo, hi;
  unsigned char vec[1024];

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  size_t pages = (hi - lo) / PAGE;
  CHECK_LE(pages, sizeof vec);
  CHECK_EQ(mincore((void *)lo, hi - lo, vec), 0);
  long long bytes = 0;
  for (size_t i = 0; i < pages; i++)
    bytes += (vec[i] & 1) ? (long long)PAGE : 0;
  return bytes;
}

/* Waits until every goroutine but the caller has finished exiting: a
 * goroutine's wg_done comes before its slot is freed on the scheduler. */
static void wait_until_only_main(void) {
  for (int i = 0; i < 1000 && read_stats().goroutines > 1; i++)
    CHECK_OK(goro_sleep(1000000));
  CHECK_EQ(read_stats().goroutines, 1);
  /* The count drops just before the slot goes back to a cache. */
  CHECK_OK(goro_sleep(2000000));
}

static void set_policy(bool adaptive_start, uint32_t hysteresis, int64_t gc_period_ns) {
  goro_stack_policy pol;

  CHECK_OK(goro_get_stack_policy(&pol));
  pol.adaptive_start = adaptive_start;
  pol.hysteresis = hysteresis;
  pol.gc_period_ns = gc_period_ns;
  CHECK_OK(goro_set_stack_policy(&pol));
}

/* Keeps a result alive so that the compiler cannot drop the work behind
 * it. Goroutines on every worker add to it, so the add is atomic. */
static unsigned sink;

static void sink_add(unsigned value) {
  __atomic_fetch_add(&sink, value, __ATOMIC_RELAXED);
}

/* Recurses with 512-byte frames, writing both ends of each, until a frame
 * lies at or below stop; calls at_bottom(arg) there if set. */
static __attribute__((noinline)) unsigned dig(uintptr_t stop, void (*at_bottom)(void *),
                                              void *arg) {
  volatile unsigned char frame[512];
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);

  frame[0] = (unsigned char)here;
  frame[511] = (unsigned char)(here >> 9);
  if (here - sizeof frame > stop)
    return dig(stop, at_bottom, arg) + frame[0];
  if (at_bottom)
    at_bottom(arg);
  return frame[511];
}

/* ---- F01: per-request goroutines ---------------------------------------- */

/* 8 nested calls with about 4 KiB of locals each, as in the case. With
 * observe set, the innermost one reads goro_stack_info_self, which accounts
 * the depth reached, and records whether this goroutine's span grew. */
static __attribute__((noinline)) unsigned nested(int level, int *grew) {
  volatile unsigned char locals[4000];
  unsigned sum = 0;

  for (int i = 0; i < (int)sizeof locals; i += 64)
    locals[i] = (unsigned char)(i + level);
  if (level < 7)
    sum = nested(level + 1, grew);
  else if (grew)
    *grew = self_info().growths > 0;
  for (int i = 0; i < (int)sizeof locals; i += 64)
    sum += locals[i];
  return sum;
}

typedef struct requests {
  long warmup, measured, batch;
  bool observe;
  goro_waitgroup done;
  long grew;               /* measured requests whose span grew */
  long faulted;            /* measured requests that faulted a page in */
  long faults;             /* process minor faults while measuring */
  long long cache_max, arena_max;
  uint64_t slots_cached_max;
  int workers;
} requests;

/* Minor faults of the calling thread. A request never parks inside
 * nested(), so it runs on one thread from start to end. */
static long thread_faults(void) {
  struct rusage ru;

  CHECK_EQ(getrusage(RUSAGE_THREAD, &ru), 0);
  return ru.ru_minflt;
}

static void request(void *arg) {
  requests *rq = arg;
  int grew = 0;
  long faults0 = thread_faults();

  sink_add(nested(0, rq->observe ? &grew : NULL));
  if (thread_faults() > faults0)
    __atomic_add_fetch(&rq->faulted, 1, __ATOMIC_RELAXED);
  if (grew)
    __atomic_add_fetch(&rq->grew, 1, __ATOMIC_RELAXED);
  goro_wg_done(&rq->done);
}

static void run_requests(requests *rq, long count, bool sample) {
  for (long sent = 0; sent < count; sent += rq->batch) {
    long n = count - sent < rq->batch ? count - sent : rq->batch;
    CHECK_OK(goro_wg_add(&rq->done, n));
    for (long i = 0; i < n; i++)
      CHECK_OK(goro_spawn(request, rq));
    CHECK_OK(goro_wg_wait(&rq->done));
    if (!sample)
      continue;
    goro_memstats s = read_stats();
    if ((long long)s.stack_cache > rq->cache_max)
      rq->cache_max = (long long)s.stack_cache;
    if (s.slots_cached > rq->slots_cached_max)
      rq->slots_cached_max = s.slots_cached;
  }
}

static int requests_main(void *arg) {
  requests *rq = arg;

  run_requests(rq, rq->warmup, false);
  rq->grew = 0;
  rq->faulted = 0;
  long faults0 = minor_faults();
  run_requests(rq, rq->measured, true);
  rq->faults = minor_faults() - faults0;
  rq->arena_max = arena_rss();
  rq->workers = (int)read_stats().maxprocs;
  return 0;
}

/* 20,000 requests after 2,000 of warm-up (the case: 200,000). */
static requests new_requests(bool observe) {
  requests rq;

  memset(&rq, 0, sizeof rq);
  rq.warmup = 2000;
  rq.measured = scaled(20000, 4);
  rq.batch = 100;
  rq.observe = observe;
  return rq;
}

TEST(f01_warm_requests_fault_in_no_pages) {
  requests rq = new_requests(false);

  RUN_MAIN(requests_main, &rq);
  if (rq.faulted > rq.measured / 100)
    FAIL("%ld of %ld requests after warm-up faulted stack pages in (%ld minor faults in all);"
         " at most 1 %% expected",
         rq.faulted, rq.measured, rq.faults);
}

TEST(f01_warm_requests_see_no_growth) {
  requests rq = new_requests(true);

  RUN_MAIN(requests_main, &rq);
  if (rq.grew > rq.measured / 100)
    FAIL("%ld of %ld requests after warm-up saw their stack grow (at most 1 %% expected):"
         " new goroutines did not start on warm slots",
         rq.grew, rq.measured);
}

TEST(f01_request_slot_cache_stays_bounded) {
  requests rq = new_requests(false);

  RUN_MAIN(requests_main, &rq);
  long long bound = cache_bound(rq.workers);
  CHECK_LE(rq.cache_max, bound);
  /* The resident memory of the whole arena, as the kernel counts it. */
  CHECK_LE(rq.arena_max, bound);
  /* Every cached slot keeps at least its descriptor page. */
  CHECK_LE(rq.slots_cached_max * PAGE, (uint64_t)bound);
}

/* ---- F02: starting sizes for a bimodal mix ----------------------------- */

typedef struct parked_at {
  uintptr_t depth;          /* bytes below the top to park at */
  goro_chan *gate;
  goro_waitgroup parked, exited;
  goro_stack_info at_park;  /* read at the deepest point */
  goro_stack_info at_wake;  /* read there again after the gate opened */
} parked_at;

static void park_at_gate(void *arg) {
  parked_at *pa = arg;

  pa->at_park = self_info();
  goro_wg_done(&pa->parked);
  CHECK_ERR(goro_chan_recv(pa->gate, NULL), GORO_ECLOSED);
  pa->at_wake = self_info();
}

static void park_deep(void *arg) {
  parked_at *pa = arg;

  sink_add(dig(stack_top() - pa->depth, park_at_gate, pa));
  goro_wg_done(&pa->exited);
}

static void start_size_probe(void *arg) {
  goro_stack_info *out = arg;

  *out = self_info();
}

static int start_size_main(void *arg) {
  parked_at pas[10];
  goro_stack_info fresh;
  goro_waitgroup wg = GORO_WAITGROUP_INIT;
  (void)arg;

  /* Fixed start: one page. */
  CHECK_EQ(read_stats().stack_start_size, PAGE);

  /* Ten goroutines parked 30 KiB deep make the average used stack about
   * 30 KiB (plus the main goroutine, shallow), so adaptive start rounds it
   * up to 32 KiB. */
  set_policy(true, 4, 0);
  goro_chan *gate;
  CHECK_OK(goro_chan_make(&gate, 0, 0));
  for (int i = 0; i < 10; i++) {
    memset(&pas[i], 0, sizeof pas[i]);
    pas[i].depth = 30 * KiB;
    pas[i].gate = gate;
    CHECK_OK(goro_wg_add(&pas[i].parked, 1));
    CHECK_OK(goro_wg_add(&pas[i].exited, 1));
    CHECK_OK(goro_spawn(park_deep, &pas[i]));
  }
  for (int i = 0; i < 10; i++)
    CHECK_OK(goro_wg_wait(&pas[i].parked));
  CHECK_OK(goro_sleep(1000000));
  CHECK_OK(goro_gc());
  uint64_t start = read_stats().stack_start_size;
  CHECK_EQ(start, 32 * KiB);

  /* A goroutine spawned now starts with that much committed. */
  CHECK_OK(goro_wg_add(&wg, 0));
  CHECK_OK(goro_spawn(start_size_probe, &fresh));
  CHECK_OK(goro_sleep(1000000));
  CHECK_GE(fresh.current, start);
  CHECK_EQ(fresh.growths, 0);

  CHECK_OK(goro_chan_close(gate));
  for (int i = 0; i < 10; i++)
    CHECK_OK(goro_wg_wait(&pas[i].exited));
  CHECK_OK(goro_chan_free(gate));
  return 0;
}

TEST(f02_start_size_follows_adaptive_rule) { RUN_MAIN(start_size_main, NULL); }

static int hinted_workers_main(void *arg) {
  long n = *(long *)arg;
  parked_at *pas = calloc((size_t)n, sizeof *pas);
  goro_spawn_opts opts = {.size = sizeof opts, .stack_hint = 64 * KiB};
  goro_chan *gate;

  CHECK(pas != NULL);
  CHECK_OK(goro_chan_make(&gate, 0, 0));
  for (long i = 0; i < n; i++) {
    /* 60 KiB of frames, then the park and the stack info read below them:
     * a 64 KiB span with the descriptor page. */
    pas[i].depth = 60 * KiB;
    pas[i].gate = gate;
    CHECK_OK(goro_wg_add(&pas[i].parked, 1));
    CHECK_OK(goro_wg_add(&pas[i].exited, 1));
    CHECK_OK(goro_spawn_with(park_deep, &pas[i], &opts));
  }
  for (long i = 0; i < n; i++)
    CHECK_OK(goro_wg_wait(&pas[i].parked));
  CHECK_OK(goro_sleep(1000000));
  CHECK_OK(goro_gc()); /* the exact view: mincore over every parked stack */
  CHECK_OK(goro_chan_close(gate));
  for (long i = 0; i < n; i++) {
    CHECK_OK(goro_wg_wait(&pas[i].exited));
    if (pas[i].at_park.growths != 0)
      FAIL("hinted worker %ld: %llu growths at its deepest point, span %zu (expected none)", i,
           (unsigned long long)pas[i].at_park.growths, pas[i].at_park.current);
    CHECK_GE(pas[i].at_park.current, 64 * KiB);
    /* After the cycle's exact look while it was parked. */
    if (pas[i].at_wake.growths != 0)
      FAIL("hinted worker %ld: %llu growths after a cycle saw it parked, span %zu (expected"
           " none)",
           i, (unsigned long long)pas[i].at_wake.growths, pas[i].at_wake.current);
  }
  CHECK_OK(goro_chan_free(gate));
  free(pas);
  return 0;
}

TEST(f02_hinted_workers_see_no_growth) {
  long n = scaled(1000, 4); /* the case: 10,000 workers */
  RUN_MAIN(hinted_workers_main, &n);
}

/* The bimodal mix in waves: per_wave tiny goroutines with one worker in the
 * middle, all parked at their deepest point until the wave has parked. */
typedef struct mix {
  long waves, per_wave;
  goro_chan *gate;
  goro_waitgroup parked, exited;
  double span[2], need[2];  /* sums per class: 0 tiny, 1 worker */
  long count[2], growing[2];
  goro_mutex lock;
} mix;

static void mix_record(mix *m, int cls, uintptr_t deepest) {
  goro_stack_info info = self_info();
  uintptr_t need = (stack_top() - deepest + PAGE - 1) & ~(PAGE - 1);

  CHECK_OK(goro_mutex_lock(&m->lock));
  m->span[cls] += (double)info.current;
  m->need[cls] += (double)need;
  m->count[cls]++;
  m->growing[cls] += info.growths > 0;
  CHECK_OK(goro_mutex_unlock(&m->lock));
  goro_wg_done(&m->parked);
  CHECK_ERR(goro_chan_recv(m->gate, NULL), GORO_ECLOSED);
}

static void mix_tiny(void *arg) {
  volatile unsigned char local[256];

  local[0] = 1;
  mix_record(arg, 0, (uintptr_t)local);
  sink_add(local[0]);
  goro_wg_done(&((mix *)arg)->exited);
}

static void mix_worker_bottom(void *arg) {
  volatile unsigned char here;

  here = 1;
  mix_record(arg, 1, (uintptr_t)&here);
}

static void mix_worker(void *arg) {
  sink_add(dig(stack_top() - 60 * KiB, mix_worker_bottom, arg));
  goro_wg_done(&((mix *)arg)->exited);
}

static int mix_main(void *arg) {
  mix *m = arg;

  for (long w = 0; w < m->waves; w++) {
    CHECK_OK(goro_chan_make(&m->gate, 0, 0));
    CHECK_OK(goro_wg_add(&m->parked, m->per_wave + 1));
    CHECK_OK(goro_wg_add(&m->exited, m->per_wave + 1));
    for (long i = 0; i < m->per_wave; i++) {
      CHECK_OK(goro_spawn(mix_tiny, m));
      if (i == m->per_wave / 2)
        CHECK_OK(goro_spawn(mix_worker, m));
    }
    CHECK_OK(goro_wg_wait(&m->parked));
    if (w % 10 == 5)
      CHECK_OK(goro_gc()); /* adaptive start learns from the parked wave */
    CHECK_OK(goro_chan_close(m->gate));
    CHECK_OK(goro_wg_wait(&m->exited));
    CHECK_OK(goro_chan_free(m->gate));
  }
  return 0;
}

/* Runs the mix with adaptive start on or off: 20,000 tiny goroutines and
 * 200 workers (the case: 1,000,000 and 10,000). Cycles run only where
 * mix_main calls goro_gc. */
static mix run_mix(bool adaptive) {
  mix m;

  memset(&m, 0, sizeof m);
  m.waves = scaled(200, 4);
  m.per_wave = 100;
  set_policy(adaptive, 4, 0);
  /* One worker makes the order of spawns and exits, and so which slot each
   * goroutine reuses, nearly the same in every run: only the start size
   * differs. */
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(mix_main, &m);
  CHECK_EQ(m.count[0], m.waves * m.per_wave);
  CHECK_EQ(m.count[1], m.waves);
  return m;
}

TEST(f02_adaptive_start_keeps_tiny_within_twice_need) {
  mix m = run_mix(true);
  double span = m.span[0] / (double)m.count[0], need = m.need[0] / (double)m.count[0];

  if (span > 2 * need)
    FAIL("tiny goroutines under adaptive start: mean span %.0f bytes, %.1fx their need of %.0f"
         " bytes (at most 2x expected)",
         span, span / need, need);
}

TEST(f02_adaptive_start_enlarges_neither_class) {
  mix fixed = run_mix(false);
  mix adaptive = run_mix(true);


  for (int cls = 0; cls < 2; cls++) {
    double f = fixed.span[cls] / (double)fixed.count[cls];
    double a = adaptive.span[cls] / (double)adaptive.count[cls];
    if (a > f + (double)PAGE)
      FAIL("%s class: mean span %.0f bytes with adaptive start, %.0f with the fixed start"
           " (at most one page more expected)",
           cls ? "worker" : "tiny", a, f);
    /* The monitor thread trims freed slots while the mix runs, so two runs
     * differ by a goroutine or two; allow 1 % of the class. A sanitizer run
     * has only 50 workers, and TSan runs differed by 1 or 2, so allow at
     * least 2. */
    long slack = fixed.count[cls] / 100 < 2 ? 2 : fixed.count[cls] / 100;
    if (adaptive.growing[cls] > fixed.growing[cls] + slack)
      FAIL("%s class: %ld goroutines grew with adaptive start, %ld with the fixed start"
           " (at most %ld more expected)",
           cls ? "worker" : "tiny", adaptive.growing[cls], fixed.growing[cls], slack);
  }
}

/* ---- F03: a hot loop at the committed boundary ------------------------- */

typedef struct hot_loop {
  long calls, park_every;
  bool shrink_first;
  goro_chan *parked, *resume;
  uint64_t growths, shrinks, shrinks_before;
  size_t span_before, span_after;
} hot_loop;

static __attribute__((noinline)) unsigned hot(unsigned x) {
  volatile unsigned char buf[512];

  buf[0] = (unsigned char)x;
  buf[511] = (unsigned char)(x >> 8);
  return buf[0] + buf[511];
}

static void hot_park(hot_loop *h) {
  CHECK_OK(goro_chan_send(h->parked, NULL));
  CHECK_OK(goro_chan_recv(h->resume, NULL));
}

static __attribute__((noinline)) unsigned hot_run(hot_loop *h) {
  unsigned sum = 0;

  for (long done = 0; done < h->calls; done += h->park_every) {
    for (long i = 0; i < h->park_every; i++)
      sum += hot((unsigned)i);
    hot_park(h); /* main runs a shrink cycle now */
  }
  return sum;
}

/* Recurses with small frames until less than 512 bytes above stop. */
static __attribute__((noinline)) unsigned hot_descend(hot_loop *h, uintptr_t stop) {
  volatile unsigned char pad[48];
  uintptr_t here = (uintptr_t)__builtin_frame_address(0);

  pad[0] = (unsigned char)here;
  if (here > stop)
    return hot_descend(h, stop) + pad[0];
  return hot_run(h) + pad[0];
}

static void hot_goroutine(void *arg) {
  hot_loop *h = arg;
  uintptr_t top = stack_top();

  if (h->shrink_first) {
    sink_add(dig(top - 64 * KiB, NULL, NULL));
    uint64_t shrinks = self_info().shrinks;
    hot_park(h); /* main cycles until this stack shrinks */
    h->shrinks_before = self_info().shrinks - shrinks;
  }
  /* Both reads at the shallow point: goro_stack_info_self reads the span
   * exactly, and its own frames would touch the page below if it ran at
   * the bottom of the recursion. */
  goro_stack_info before = self_info();
  sink_add(hot_descend(h, top - before.current + 384));
  goro_stack_info after = self_info();
  h->growths = after.growths - before.growths;
  h->shrinks = after.shrinks - before.shrinks;
  h->span_before = before.current;
  h->span_after = after.current;
  CHECK_OK(goro_chan_send(h->parked, NULL));
}

static int hot_main(void *arg) {
  hot_loop *h = arg;

  CHECK_OK(goro_chan_make(&h->parked, 0, 0));
  CHECK_OK(goro_chan_make(&h->resume, 0, 0));
  CHECK_OK(goro_spawn(hot_goroutine, h));
  if (h->shrink_first) {
    CHECK_OK(goro_chan_recv(h->parked, NULL));
    uint64_t shrinks0 = read_stats().stack_shrinks;
    for (int i = 0; i < 64 && read_stats().stack_shrinks == shrinks0; i++)
      CHECK_OK(goro_gc());
    CHECK_OK(goro_chan_send(h->resume, NULL));
  }
  for (long done = 0; done < h->calls; done += h->park_every) {
    CHECK_OK(goro_chan_recv(h->parked, NULL));
    CHECK_OK(goro_gc());
    CHECK_OK(goro_chan_send(h->resume, NULL));
  }
  CHECK_OK(goro_chan_recv(h->parked, NULL));
  CHECK_OK(goro_chan_free(h->parked));
  CHECK_OK(goro_chan_free(h->resume));
  return 0;
}

/* 1,000,000 calls (the case: 10,000,000), a park and a shrink cycle every
 * 100,000. One worker, so that the goroutine is parked whenever main runs
 * its cycle. */
static hot_loop run_hot(bool shrink_first) {
  hot_loop h;

  memset(&h, 0, sizeof h);
  h.calls = scaled(1000000, 5);
  h.park_every = h.calls / 10;
  h.shrink_first = shrink_first;
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(hot_main, &h);
  return h;
}

TEST(f03_boundary_loop_grows_at_most_once) {
  hot_loop h = run_hot(false);

  CHECK_LE(h.growths, 1);
  CHECK_EQ(h.shrinks, 0);
  /* The loop's frame reached below the span it started with. */
  CHECK_GT(h.span_after, h.span_before);
}

TEST(f03_loop_after_shrink_grows_at_most_once) {
  hot_loop h = run_hot(true);

  if (h.shrinks_before < 1)
    FAIL("the stack grown to 64 KiB was not shrunk before the loop (%llu shrinks)",
         (unsigned long long)h.shrinks_before);
  CHECK_LT(h.span_before, 64 * KiB);
  CHECK_LE(h.growths, 1);
  CHECK_EQ(h.shrinks, 0);
  CHECK_GT(h.span_after, h.span_before);
}

/* ---- F04: which goroutines grew ---------------------------------------- */

enum { SHALLOW, DEEP_PARK, DEEP_RETURN };

typedef struct attributed {
  int64_t id;
  int kind;
  goro_stack_info info;
  size_t log_grown, trace_max;
} attributed;

typedef struct attribution {
  long n;                   /* goroutines of each class: shallow, deep */
  attributed *recs;
  goro_chan *gate;
  goro_waitgroup parked, exited;
} attribution;

static attribution *attr;

static void attr_wait(void) {
  goro_wg_done(&attr->parked);
  CHECK_ERR(goro_chan_recv(attr->gate, NULL), GORO_ECLOSED);
}

static __attribute__((noinline)) unsigned f_big(bool park_inside) {
  volatile unsigned char buf[16 << 10];

  for (size_t i = 0; i < sizeof buf; i += 64)
    buf[i] = (unsigned char)i;
  if (park_inside)
    attr_wait();
  return buf[0] + buf[sizeof buf - 64];
}

static __attribute__((noinline)) unsigned g_mid(bool park_inside) {
  volatile unsigned char small[64];

  small[0] = 1;
  return f_big(park_inside) + small[0];
}

static void attr_body(void *arg) {
  attributed *r = arg;

  r->id = goro_id();
  if (r->kind != SHALLOW)
    sink_add(g_mid(r->kind == DEEP_PARK));
  if (r->kind != DEEP_PARK)
    attr_wait();
  r->info = self_info();
  goro_wg_done(&attr->exited);
}

/* Spawns n shallow and n deep goroutines alternately (half of the deep
 * ones park inside f_big, half after it returns), runs one shrink cycle
 * while all are parked, then lets them read their stack info and exit. */
static int attribution_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_chan_make(&attr->gate, 0, 0));
  CHECK_OK(goro_wg_add(&attr->parked, 2 * attr->n));
  CHECK_OK(goro_wg_add(&attr->exited, 2 * attr->n));
  for (long i = 0; i < 2 * attr->n; i++) {
    attr->recs[i].kind = i % 2 == 0 ? SHALLOW : (i % 4 == 1 ? DEEP_PARK : DEEP_RETURN);
    CHECK_OK(goro_spawn(attr_body, &attr->recs[i]));
  }
  CHECK_OK(goro_wg_wait(&attr->parked));
  CHECK_OK(goro_sleep(1000000));
  CHECK_OK(goro_gc());
  CHECK_OK(goro_chan_close(attr->gate));
  CHECK_OK(goro_wg_wait(&attr->exited));
  CHECK_OK(goro_chan_free(attr->gate));
  return 0;
}

static attribution *new_attribution(long n) {
  attribution *a = calloc(1, sizeof *a);

  CHECK(a != NULL);
  a->n = n;
  a->recs = calloc((size_t)(2 * n), sizeof *a->recs);
  CHECK(a->recs != NULL);
  return a;
}

static attributed *find_attributed(int64_t id) {
  for (long i = 0; i < 2 * attr->n; i++)
    if (attr->recs[i].id == id)
      return &attr->recs[i];
  return NULL;
}

/* Checks one view: grown(r) is the growth in bytes that view shows for r. */
static void check_view(const char *view, size_t (*grown)(const attributed *r)) {
  for (long i = 0; i < 2 * attr->n; i++) {
    attributed *r = &attr->recs[i];
    size_t g = grown(r);
    if (r->kind == SHALLOW && g != 0)
      FAIL("%s: shallow goroutine %lld shows %zu bytes of growth (expected none)", view,
           (long long)r->id, g);
    if (r->kind != SHALLOW && g < 16 * KiB)
      FAIL("%s: deep goroutine %lld (%s) shows %zu bytes of growth (expected >= 16384)", view,
           (long long)r->id, r->kind == DEEP_PARK ? "parked in f_big" : "parked after f_big", g);
  }
}

static size_t info_grown(const attributed *r) {
  return r->info.growths ? r->info.peak - PAGE : 0;
}

static size_t log_grown(const attributed *r) { return r->log_grown; }

static size_t trace_grown(const attributed *r) {
  return r->trace_max > PAGE ? r->trace_max - PAGE : 0;
}

/* 1,000 shallow and 1,000 deep goroutines, the case's size. */
TEST(f04_stack_info_shows_only_deep_growth) {
  attr = new_attribution(scaled(1000, 2));
  RUN_MAIN(attribution_main, NULL);
  check_view("goro_stack_info_self", info_grown);
}

/* Runs the attribution workload with stderr sent to the file at path. */
static void run_with_stderr_to(const char *path) {
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK_GE(saved, 0);
  CHECK_GE(fd, 0);
  CHECK(dup2(fd, STDERR_FILENO) >= 0);
  int rc = goro_run(attribution_main, NULL);
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  CHECK_EQ(rc, 0);
}

/* 400 of each class: the stack log prints at most 1,000 lines a second and
 * drops the rest, so 1,000 deep goroutines in one burst sit at that limit. */
TEST(f04_stacklog_names_only_deep_goroutines) {
  char path[64];
  char line[256];
  long lines = 0;

  attr = new_attribution(400);
  snprintf(path, sizeof path, "/tmp/goro-test-policy-%d.log", (int)getpid());
  setenv("GORODEBUG", "stacklog=1", 1);
  run_with_stderr_to(path);

  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  while (fgets(line, sizeof line, f)) {
    long long id;
    size_t from, to;
    char why[16];
    if (sscanf(line, "goro: goroutine %lld stack %zu -> %zu bytes (%15[a-z])", &id, &from, &to,
               why) != 4)
      continue;
    lines++;
    attributed *r = find_attributed(id);
    if (r && strcmp(why, "grow") == 0)
      r->log_grown += to - from;
  }
  fclose(f);
  unlink(path);
  CHECK_GE(lines, attr->n);
  check_view("GORODEBUG=stacklog=1", log_grown);
}

TEST(f04_trace_counters_show_only_deep_growth) {
  char path[64];
  char line[512];
  long counters = 0;

  attr = new_attribution(scaled(1000, 2));
  snprintf(path, sizeof path, "/tmp/goro-test-policy-%d.json", (int)getpid());
  setenv("GOROTRACE", path, 1);
  RUN_MAIN(attribution_main, NULL);

  FILE *f = fopen(path, "r");
  CHECK(f != NULL);
  while (fgets(line, sizeof line, f)) {
    long long id;
    unsigned long long bytes;
    const char *name = strstr(line, "\"name\":\"stack g");
    const char *args = strstr(line, "\"bytes\":");
    if (!name || !args || sscanf(name, "\"name\":\"stack g%lld\"", &id) != 1 ||
        sscanf(args, "\"bytes\":%llu", &bytes) != 1)
      continue;
    counters++;
    attributed *r = find_attributed(id);
    if (r && bytes > r->trace_max)
      r->trace_max = (size_t)bytes;
  }
  fclose(f);
  unlink(path);
  CHECK_GE(counters, attr->n);
  check_view("GOROTRACE", trace_grown);
}

/* ---- F05: thrash counters ---------------------------------------------- */

typedef struct conn {
  goro_chan *inbox;
  uint32_t requests, below_need; /* requests that found a shrink below 16 KiB */
  goro_stack_info info;     /* at exit */
} conn;

typedef struct conns {
  long n, cycles;
  conn *c;
  goro_waitgroup round, exited;
  uint64_t identity_errors, reads;
} conns;

static conns *cs;

static void connection(void *arg) {
  conn *c = arg;
  uintptr_t top = stack_top();
  uint64_t shrinks = 0;

  while (goro_chan_recv(c->inbox, NULL) == 0) {
    /* Read at the shallow point, so the read observes no growth. A span
     * below the need without a shrink since the last request is a growth
     * no cycle has observed yet (the goroutine was still running when the
     * cycle came), not a shrink. */
    goro_stack_info info = self_info();
    if (info.shrinks > shrinks && info.current < 16 * KiB)
      c->below_need++;
    shrinks = info.shrinks;
    c->requests++;
    sink_add(dig(top - 16 * KiB, NULL, NULL));
    goro_wg_done(&cs->round);
  }
  c->info = self_info();
  goro_wg_done(&cs->exited);
}

static void check_identities(void) {
  goro_memstats s = read_stats();
  uint64_t count = 0, bytes = 0;

  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++) {
    count += s.stack_hist_count[b];
    bytes += s.stack_hist_bytes[b];
  }
  cs->reads++;
  if (count != s.goroutines || bytes != s.stack_inuse ||
      s.stack_sys != s.stack_inuse + s.stack_cache + s.stack_guard + s.stack_meta)
    cs->identity_errors++;
}

static int conns_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_wg_add(&cs->exited, cs->n));
  for (long i = 0; i < cs->n; i++) {
    CHECK_OK(goro_chan_make(&cs->c[i].inbox, 0, 1));
    CHECK_OK(goro_spawn(connection, &cs->c[i]));
    if (i % 97 == 0)
      check_identities();
  }
  for (long cycle = 0; cycle < cs->cycles; cycle++) {
    CHECK_OK(goro_wg_add(&cs->round, cs->n));
    for (long i = 0; i < cs->n; i++)
      CHECK_OK(goro_chan_send(cs->c[i].inbox, NULL));
    check_identities(); /* while the requests run */
    CHECK_OK(goro_wg_wait(&cs->round));
    CHECK_OK(goro_gc());
    check_identities();
  }
  for (long i = 0; i < cs->n; i++)
    CHECK_OK(goro_chan_close(cs->c[i].inbox));
  for (int k = 0; k < 20; k++)
    check_identities(); /* while they exit */
  CHECK_OK(goro_wg_wait(&cs->exited));
  for (long i = 0; i < cs->n; i++)
    CHECK_OK(goro_chan_free(cs->c[i].inbox));
  check_identities();
  return 0;
}

static void run_conns(long n, long cycles, uint32_t hysteresis) {
  cs = calloc(1, sizeof *cs);
  CHECK(cs != NULL);
  cs->n = n;
  cs->cycles = cycles;
  cs->c = calloc((size_t)n, sizeof *cs->c);
  CHECK(cs->c != NULL);
  set_policy(false, hysteresis, 0);
  RUN_MAIN(conns_main, NULL);
}

/* 2,000 connections (the case: 100,000) over the case's 200 cycles. */
TEST(f05_held_stack_not_shrunk_below_need) {
  run_conns(scaled(2000, 4), 200, 4);
  for (long i = 0; i < cs->n; i++) {
    conn *c = &cs->c[i];
    if (c->info.growths > 6)
      FAIL("connection %ld grew %llu times over %ld cycles (at most 6 expected), shrunk %llu"
           " times",
           i, (unsigned long long)c->info.growths, cs->cycles,
           (unsigned long long)c->info.shrinks);
    if (c->below_need)
      FAIL("connection %ld found its stack shrunk below the 16 KiB it needs on each request"
           " before %u of its %u requests",
           i, c->below_need, c->requests);
  }
}

/* Go's rule (hysteresis 0) halves the stack at every cycle; the counters
 * must show the thrashing: a growth and a shrink per cycle. One worker, so
 * that every connection has parked again when main runs its cycle (with
 * two, the last one to finish may still be running and is skipped). */
TEST(f05_counters_show_go_rule_thrashing) {
  CHECK_OK(goro_set_maxprocs(1));
  run_conns(100, 50, 0);
  for (long i = 0; i < cs->n; i++) {
    CHECK_GE(cs->c[i].info.growths, 49);
    CHECK_GE(cs->c[i].info.shrinks, 49);
  }
}

TEST(f05_histogram_sums_to_counts) {
  run_conns(scaled(2000, 4), 20, 4);
  if (cs->identity_errors)
    FAIL("%llu of %llu goro_read_memstats results broke an identity (histogram counts ="
         " goroutines, histogram bytes = stack_inuse, stack_sys = the sum of its parts)",
         (unsigned long long)cs->identity_errors, (unsigned long long)cs->reads);
  CHECK_GT(cs->reads, 40);
}

/* ---- F06: release after a burst ---------------------------------------- */

typedef struct burst {
  long goroutines;
  int rounds, idle_s;
  goro_chan *gate;
  goro_waitgroup parked, exited;
} burst;

static __attribute__((noinline)) void burst_member(void *arg) {
  burst *b = arg;
  volatile unsigned char touch[1536];

  for (size_t i = 0; i < sizeof touch; i += 64)
    touch[i] = (unsigned char)i;
  goro_wg_done(&b->parked);
  CHECK_ERR(goro_chan_recv(b->gate, NULL), GORO_ECLOSED);
  sink_add(touch[0]);
  goro_wg_done(&b->exited);
}

static int burst_main(void *arg) {
  burst *b = arg;
  long long baseline = process_rss();
  long long first_after = 0;
  long long bound = cache_bound((int)read_stats().maxprocs);

  for (int round = 0; round < b->rounds; round++) {
    CHECK_OK(goro_chan_make(&b->gate, 0, 0));
    CHECK_OK(goro_wg_add(&b->parked, b->goroutines));
    CHECK_OK(goro_wg_add(&b->exited, b->goroutines));
    for (long i = 0; i < b->goroutines; i++)
      CHECK_OK(goro_spawn(burst_member, b));
    CHECK_OK(goro_wg_wait(&b->parked));
    CHECK_OK(goro_sleep(1000000));
    size_t main_span = self_info().current;
    goro_memstats during = read_stats();
    CHECK_EQ(during.goroutines, b->goroutines + 1);
    CHECK_EQ(during.stack_inuse - main_span, (uint64_t)b->goroutines * PAGE);

    CHECK_OK(goro_chan_close(b->gate));
    CHECK_OK(goro_wg_wait(&b->exited));
    CHECK_OK(goro_chan_free(b->gate));
    wait_until_only_main();
    CHECK_OK(goro_free_os_memory());
    main_span = self_info().current;
    goro_memstats after = read_stats();
    CHECK_EQ(after.goroutines, 1);
    CHECK_EQ(after.stack_inuse, main_span);
    CHECK_EQ(after.stack_cache, 0);
    CHECK_LE(after.stack_sys, bound);
    /* The kernel's count: the main goroutine's pages and nothing else.
     * Reading smaps touches more of main's stack, so mincore comes after. */
    long long arena = arena_rss();
    CHECK_LE(arena, own_stack_resident());

    /* TSan's own memory grows with every fiber it has made, and each
     * goroutine is one: VmRSS was 0.9 GB after the first 5,000 goroutines
     * and 1.3 GB after the next 5,000. Under TSan only the arena is
     * checked, above. */
    if (harness_under("tsan"))
      continue;

    /* ASan keeps the shadow of every stack page that was touched, outside
     * goro's control, so under ASan the baseline is the first release. */
    long long rss = process_rss();
    if (round == 0 && harness_under("asan"))
      baseline = rss;
    if (rss > baseline + bound + (10LL << 20))
      FAIL("round %d: VmRSS %lld bytes after release, baseline %lld + cache bound %lld + 10 MiB"
           " exceeded",
           round, rss, baseline, bound);
    if (round == 0)
      first_after = rss;
    else if (rss > first_after + first_after / 20)
      FAIL("round %d: VmRSS %lld bytes after release, more than 5 %% above round 0's %lld",
           round, rss, first_after);
  }

  /* Idle: nothing refills the released memory. */
  long long released = arena_rss();
  for (int s = 0; s < b->idle_s * 4; s++) {
    CHECK_OK(goro_sleep(250 * 1000 * 1000));
    CHECK_LE(arena_rss(), released);
  }
  CHECK_EQ(mapping_field(stack_top() - 1, "AnonHugePages"), 0);
  return 0;
}

/* 30,000 goroutines for 5 rounds and 2 s of idle (the case: 600,000 and
 * 60 s). */
TEST(f06_burst_memory_released_and_stays_down) {
  burst b;

  memset(&b, 0, sizeof b);
  b.goroutines = scaled(30000, 6);
  b.rounds = 5;
  b.idle_s = 2;
  RUN_MAIN(burst_main, &b);
}

/* ---- F07: churn, stale references and bounded caches ------------------- */

typedef struct churn {
  long cycles, alive;
  bool park_at_peak;
  int live_s;
  goro_chan *tokens;
  goro_waitgroup exited;
  uint64_t corrupted;
  int live_stop;
  long long bound;
  double cache_settled_s, arena_settled_s; /* -1: not within live_s */
  long long cache_end, arena_end;
} churn;

/* Recurses with 1 KiB frames that contain a pattern made from seed, and
 * checks them on the way back. Two goroutines on one stack would change a
 * frame. */
static __attribute__((noinline)) unsigned churn_descend(uintptr_t stop, uint64_t seed, int depth,
                                                        bool park) {
  volatile uint64_t frame[128];
  uint64_t mark = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)depth;
  unsigned bad = 0;

  frame[0] = mark;
  frame[127] = ~mark;
  if ((uintptr_t)__builtin_frame_address(0) > stop)
    bad = churn_descend(stop, seed, depth + 1, park);
  else if (park)
    CHECK_OK(goro_yield());
  if (frame[0] != mark || frame[127] != ~mark)
    bad++;
  return bad;
}

static churn *ch;

static void churner(void *arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg;
  uint64_t x = seed * 0x2545f4914f6cdd1dULL + 1;

  x ^= x >> 29;
  size_t peak = 4 * KiB + (size_t)(x % (60 * KiB + 1));
  if (!ch->park_at_peak)
    CHECK_OK(goro_yield());
  unsigned bad = churn_descend(stack_top() - peak, seed, 0, ch->park_at_peak);
  if (bad)
    __atomic_add_fetch(&ch->corrupted, bad, __ATOMIC_RELAXED);
  CHECK_OK(goro_chan_recv(ch->tokens, NULL));
  goro_wg_done(&ch->exited);
}

static void live_sleeper(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&ch->live_stop, __ATOMIC_ACQUIRE))
    CHECK_OK(goro_sleep(1000000));
  goro_wg_done(&ch->exited);
}

static int churn_main(void *arg) {
  (void)arg;

  ch->bound = cache_bound((int)read_stats().maxprocs);
  CHECK_OK(goro_chan_make(&ch->tokens, 0, (size_t)ch->alive));
  CHECK_OK(goro_wg_add(&ch->exited, ch->cycles));
  for (long i = 0; i < ch->cycles; i++) {
    CHECK_OK(goro_chan_send(ch->tokens, NULL));
    CHECK_OK(goro_spawn(churner, (void *)(uintptr_t)(i + 1)));
  }
  CHECK_OK(goro_wg_wait(&ch->exited));
  int64_t dropped = harness_now_ns();

  /* The load drops to 10 sleeping goroutines; the monitor thread should
   * trim the caches meanwhile. */
  CHECK_OK(goro_wg_add(&ch->exited, 10));
  for (int i = 0; i < 10; i++)
    CHECK_OK(goro_spawn(live_sleeper, NULL));
  ch->cache_settled_s = ch->arena_settled_s = -1;
  while (harness_now_ns() - dropped < (int64_t)ch->live_s * 1000000000) {
    goro_memstats s = read_stats();
    double t = (double)(harness_now_ns() - dropped) / 1e9;
    ch->cache_end = (long long)s.stack_cache;
    if (ch->cache_end <= ch->bound && ch->cache_settled_s < 0)
      ch->cache_settled_s = t;
    ch->arena_end = arena_rss() - (long long)read_stats().stack_inuse;
    t = (double)(harness_now_ns() - dropped) / 1e9;
    if (ch->arena_end <= ch->bound && ch->arena_settled_s < 0)
      ch->arena_settled_s = t;
    if (ch->cache_settled_s >= 0 && ch->arena_settled_s >= 0)
      break;
    CHECK_OK(goro_sleep(100 * 1000 * 1000));
  }
  __atomic_store_n(&ch->live_stop, 1, __ATOMIC_RELEASE);
  CHECK_OK(goro_wg_wait(&ch->exited));
  CHECK_OK(goro_chan_free(ch->tokens));
  return 0;
}

static void run_churn(long cycles, long alive, bool park_at_peak) {
  ch = calloc(1, sizeof *ch);
  CHECK(ch != NULL);
  ch->cycles = cycles;
  ch->alive = alive;
  ch->park_at_peak = park_at_peak;
  ch->live_s = 3;
  RUN_MAIN(churn_main, NULL);
}

/* 100,000 spawn/exit cycles with up to 2,000 alive (the case: 1,000,000
 * and 10,000), on every worker, so that slots freed on one thread are
 * reused on another while goroutines still run. */
TEST(f07_churn_keeps_every_frame_intact) {
  run_churn(scaled(100000, 5), 2000, true);
  CHECK_EQ(ch->corrupted, 0);
}

/* Goroutines that yield at their peak, so that goro observes every
 * growth: the caches come down to their bound once the load drops (the
 * case: within about 1 s; timed in bench/policy/f07_churn_cache). */
TEST(f07_cache_trims_to_bound_after_load) {
  run_churn(scaled(50000, 5), 5000, true);
  if (ch->cache_settled_s < 0)
    FAIL("stack_cache still %lld bytes %d s after the load dropped (bound %lld)", ch->cache_end,
         ch->live_s, ch->bound);
  if (ch->arena_settled_s < 0)
    FAIL("free slots still hold %lld resident bytes %d s after the load dropped (bound %lld)",
         ch->arena_end, ch->live_s, ch->bound);
}

/* The same churn with goroutines that reach their peak and return before
 * they park, so goro never observes the peak: the pages stay resident in
 * the freed slots all the same, and the caches must still come down. */
TEST(f07_cache_bounded_when_peaks_unobserved) {
  run_churn(scaled(50000, 5), 5000, false);
  if (ch->arena_settled_s < 0)
    FAIL("free slots still hold %lld resident bytes %d s after the load dropped, while"
         " stack_cache reports %lld (bound %lld): the pages of peaks reached between parks are"
         " not counted",
         ch->arena_end, ch->live_s, ch->cache_end, ch->bound);
}

/* A goroutine that waited in a select on two channels and exited must
 * leave no waiter behind: a later send on the other channel must not find
 * it, nor wake whatever goroutine reuses its slot. */
typedef struct stale {
  goro_chan *a, *b, *c;
  uintptr_t first_top, second_top;
  int second_woken;
  long value;
  goro_waitgroup done;
} stale;

static void select_then_exit(void *arg) {
  stale *s = arg;
  long got = 0;
  goro_select_case cases[2] = {
      {.chan = s->a, .op = GORO_SELECT_RECV, .elem = &got},
      {.chan = s->b, .op = GORO_SELECT_RECV, .elem = &got},
  };

  s->first_top = stack_top();
  CHECK_EQ(goro_select(cases, 2, false), 0);
  CHECK_EQ(got, 11);
  goro_wg_done(&s->done);
}

static void park_on_c(void *arg) {
  stale *s = arg;

  s->second_top = stack_top();
  CHECK_OK(goro_chan_recv(s->c, &s->value));
  __atomic_store_n(&s->second_woken, 1, __ATOMIC_RELEASE);
  goro_wg_done(&s->done);
}

static int stale_main(void *arg) {
  stale *s = arg;
  long v = 11;

  CHECK_OK(goro_chan_make(&s->a, sizeof(long), 0));
  CHECK_OK(goro_chan_make(&s->b, sizeof(long), 0));
  CHECK_OK(goro_chan_make(&s->c, sizeof(long), 0));
  CHECK_OK(goro_wg_add(&s->done, 1));
  CHECK_OK(goro_spawn(select_then_exit, s));
  CHECK_OK(goro_sleep(1000000));
  CHECK_OK(goro_chan_send(s->a, &v));
  CHECK_OK(goro_wg_wait(&s->done));
  CHECK_OK(goro_sleep(1000000)); /* the exit completes on the scheduler */

  CHECK_OK(goro_wg_add(&s->done, 1));
  CHECK_OK(goro_spawn(park_on_c, s));
  CHECK_OK(goro_sleep(1000000));
  CHECK_EQ(s->second_top, s->first_top); /* the exited goroutine's slot, reused */

  /* No goroutine waits on b any more. */
  v = 22;
  CHECK_ERR(goro_chan_try_send(s->b, &v), GORO_EAGAIN);
  CHECK_OK(goro_chan_free(s->b));
  CHECK_OK(goro_sleep(1000000));
  CHECK_EQ(__atomic_load_n(&s->second_woken, __ATOMIC_ACQUIRE), 0);

  v = 33;
  CHECK_OK(goro_chan_send(s->c, &v));
  CHECK_OK(goro_wg_wait(&s->done));
  CHECK_EQ(s->value, 33);
  CHECK_OK(goro_chan_free(s->a));
  CHECK_OK(goro_chan_free(s->c));
  return 0;
}

TEST(f07_exited_select_waiter_leaves_no_reference) {
  stale s;

  memset(&s, 0, sizeof s);
  CHECK_OK(goro_set_maxprocs(1)); /* one slot cache, so the slot is reused */
  RUN_MAIN(stale_main, &s);
}

/* Go's bound test: 256 batches of 32 goroutines that recurse 128 levels
 * with 1 KiB frames and sleep 1 ms at the bottom. */
static __attribute__((noinline)) unsigned levels(int n) {
  volatile unsigned char frame[1024];

  frame[0] = (unsigned char)n;
  frame[1023] = (unsigned char)(n >> 1);
  if (n == 0) {
    CHECK_OK(goro_sleep(1000000));
    return frame[0];
  }
  return levels(n - 1) + frame[1023];
}

static void batch_member(void *arg) {
  goro_waitgroup *wg = arg;

  sink_add(levels(128));
  goro_wg_done(wg);
}

static int batches_main(void *arg) {
  goro_waitgroup wg = GORO_WAITGROUP_INIT;
  long batches = *(long *)arg;
  uint64_t sys0 = read_stats().stack_sys, sys_max = sys0;

  for (long b = 0; b < batches; b++) {
    CHECK_OK(goro_wg_add(&wg, 32));
    for (int i = 0; i < 32; i++)
      CHECK_OK(goro_spawn(batch_member, &wg));
    CHECK_OK(goro_wg_wait(&wg));
    uint64_t sys = read_stats().stack_sys;
    if (sys > sys_max)
      sys_max = sys;
  }
  wait_until_only_main();
  size_t main_span = self_info().current;
  goro_memstats s = read_stats();
  if (sys_max - sys0 > (32u << 20))
    FAIL("stack_sys grew by %llu bytes over %ld batches (at most 32 MiB expected)",
         (unsigned long long)(sys_max - sys0), batches);
  CHECK_LE(s.stack_inuse - main_span, 4u << 20);
  CHECK_EQ(s.goroutines, 1);
  return 0;
}

TEST(f07_batch_stack_sys_bounded) {
  long batches = 256; /* the full size */
  RUN_MAIN(batches_main, &batches);
}
