/*
 * gc.c: stack shrink cycles, the stack policy and adaptive starting size.
 *
 * A cycle (goro_gc, or the monitor thread every gc_period_ns) visits the
 * slots on the worklist: a bit per slot, set when its goroutine parks (it
 * may have grown) and kept while its stack spans more than a page (it may
 * shrink later), so goroutines that sleep on one page cost nothing. For the
 * 64 slots of one worklist word it
 *
 *   1. suspends each goroutine among them that is parked or queued to run
 *      (WAITING or RUNNABLE -> SCANNING): its context is saved, and the
 *      worker that would run it waits for step 4;
 *   2. asks mincore which of their pages are resident, now that the
 *      suspended stacks cannot change, and sets each one's span exactly
 *      (this is where growth between parks is seen);
 *   3. applies the shrink rule and releases the chosen ranges in one
 *      batched madvise;
 *   4. resumes the goroutines (SCANNING -> WAITING or RUNNABLE).
 *
 * A goroutine is suspended only for its own batch, and a waker or worker
 * that finds it SCANNING spins until step 4, so no pause grows with the
 * number of goroutines. Running goroutines are skipped: their stacks are in
 * use. Only pages below the saved stack pointer are ever released, and
 * those are dead while the goroutine is switched out.
 *
 * The shrink rule is Go's: a stack whose used depth (top - sp) is under a
 * quarter of its span gives back the pages below half of the span. goro
 * adds memory against thrashing: a stack that grew within the last `hold`
 * cycles is kept (hold starts at the policy's hysteresis), and each time a
 * stack grows again after a shrink its hold doubles, up to GORO__MAX_HOLD
 * cycles. A stack counts as needed at its last growth and at the last
 * cycle that found its deep half in use (see arm_probe). A goroutine that
 * alternates deep and shallow work is shrunk a few times, then keeps its
 * pages while the pattern lasts. Once a stack has not been needed for
 * 4 x hold cycles, the hold halves back toward the policy's value. A
 * hysteresis of 0 is Go's rule exactly.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "sched.h"

#ifndef MADV_FREE
#define MADV_FREE 8
#endif

#define DEFAULT_HYSTERESIS 4
#define DEFAULT_GC_PERIOD_NS ((int64_t)1000 * 1000 * 1000)

goro__policy goro__pol = {
    .shrink = true,
    .madv_free = false,
    .adaptive_start = false,
    .hysteresis = DEFAULT_HYSTERESIS,
    .gc_period_ns = DEFAULT_GC_PERIOD_NS,
};
uint64_t goro__gc_cycle;
uint64_t goro__start_size;
uint64_t goro__gc_cycles_done;

static pthread_mutex_t cycle_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t last_auto_cycle;
static bool policy_set_by_api;

/* GORODEBUG settings override the defaults but not goro_set_stack_policy. */
void goro__gc_init(void) {
  __atomic_store_n(&goro__start_size, GORO__PAGE_SIZE, __ATOMIC_RELAXED);
  last_auto_cycle = goro__nanotime();
  if (policy_set_by_api)
    return;
  if (goro__dbg.shrink_off)
    __atomic_store_n(&goro__pol.shrink, false, __ATOMIC_RELAXED);
  if (goro__dbg.adaptive_start >= 0)
    __atomic_store_n(&goro__pol.adaptive_start, goro__dbg.adaptive_start, __ATOMIC_RELAXED);
  if (goro__dbg.madv_free)
    __atomic_store_n(&goro__pol.madv_free, true, __ATOMIC_RELAXED);
  if (goro__dbg.hysteresis >= 0)
    __atomic_store_n(&goro__pol.hysteresis, (uint32_t)goro__dbg.hysteresis, __ATOMIC_RELAXED);
  if (goro__dbg.gc_period_ms >= 0)
    __atomic_store_n(&goro__pol.gc_period_ns, goro__dbg.gc_period_ms * 1000 * 1000, __ATOMIC_RELAXED);
}

int goro_get_stack_policy(goro_stack_policy *out) {
  if (!out)
    return GORO_EINVAL;
  memset(out, 0, sizeof *out);
  out->size = sizeof *out;
  out->shrink = GORO__POLICY(shrink);
  out->madv_free = GORO__POLICY(madv_free);
  out->adaptive_start = GORO__POLICY(adaptive_start);
  out->hysteresis = GORO__POLICY(hysteresis);
  out->gc_period_ns = GORO__POLICY(gc_period_ns);
  return 0;
}

int goro_set_stack_policy(const goro_stack_policy *policy) {
  if (!policy || (policy->size != 0 && policy->size < sizeof *policy))
    return GORO_EINVAL;
  if (policy->hysteresis > 64 || policy->gc_period_ns < 0)
    return GORO_EINVAL;
  pthread_mutex_lock(&cycle_lock);
  __atomic_store_n(&goro__pol.shrink, policy->shrink, __ATOMIC_RELAXED);
  __atomic_store_n(&goro__pol.madv_free, policy->madv_free, __ATOMIC_RELAXED);
  __atomic_store_n(&goro__pol.adaptive_start, policy->adaptive_start, __ATOMIC_RELAXED);
  __atomic_store_n(&goro__pol.hysteresis, policy->hysteresis, __ATOMIC_RELAXED);
  __atomic_store_n(&goro__pol.gc_period_ns, policy->gc_period_ns, __ATOMIC_RELAXED);
  policy_set_by_api = true;
  pthread_mutex_unlock(&cycle_lock);
  return 0;
}

typedef struct cycle_totals {
  uint64_t released;  /* bytes */
  uint64_t scanned;
  uint64_t peaks[GORO_STACK_HIST_BUCKETS]; /* scanned goroutines by peak span bucket */
} cycle_totals;

static goro__g *descriptor_of(uintptr_t top) {
  return (goro__g *)((top - sizeof(goro__g)) & ~(uintptr_t)63);
}

/* A held stack keeps pages that Go's rule would release. To learn whether
 * the goroutine still reaches that deep, the cycle fills the first page it
 * would release with a pattern; the next cycle finds the pattern changed
 * if any frame was there meanwhile. The page lies below the saved stack
 * pointer of a suspended goroutine, so nothing live is overwritten. */
#define PROBE_WORDS (GORO__PAGE_SIZE / sizeof(uint64_t))

/* ASan would see stale redzones of dead frames on this page. */
__attribute__((no_sanitize_address)) static void arm_probe(goro__g *g, uintptr_t page,
                                                           uint64_t cycle) {
  uint64_t *words = (uint64_t *)page;
  uint64_t pattern = 0x9e3779b97f4a7c15ULL ^ (cycle << 17) ^ page;

  for (size_t i = 0; i < PROBE_WORDS; i++)
    words[i] = pattern;
  g->probe_page = page;
  g->probe_word = pattern;
}

/* Returns true when the probe armed by an earlier cycle was overwritten. */
__attribute__((no_sanitize_address)) static bool probe_touched(goro__g *g) {
  uintptr_t page = g->probe_page;

  g->probe_page = 0;
  if (!page || page < g->committed_lo)
    return false; /* disarmed, or released since */
  const uint64_t *words = (const uint64_t *)page;
  for (size_t i = 0; i < PROBE_WORDS; i++)
    if (words[i] != g->probe_word)
      return true;
  return false;
}

/* Decides the new low end of a suspended goroutine's span, or returns its
 * current one when it keeps its pages. */
static uintptr_t shrink_target(goro__g *g, uint64_t cycle) {
  uintptr_t top = g->slot.top;
  uintptr_t span = top - g->committed_lo;
  uintptr_t used = top - ((uintptr_t)g->ctx.sp & ~(GORO__PAGE_SIZE - 1));

  if (probe_touched(g))
    g->last_use_cycle = cycle;
  uint64_t last_need = g->last_use_cycle > g->last_growth_cycle ? g->last_use_cycle
                                                                 : g->last_growth_cycle;
  if (g->hold > GORO__POLICY(hysteresis) && cycle - last_need > 4 * (uint64_t)g->hold)
    g->hold /= 2;

  if (!GORO__POLICY(shrink) || span <= GORO__PAGE_SIZE || used >= span / 4)
    return g->committed_lo;
  uintptr_t target = (top - span / 2) & ~(GORO__PAGE_SIZE - 1);
  if (GORO__POLICY(hysteresis) && cycle - last_need <= g->hold) {
    arm_probe(g, target - GORO__PAGE_SIZE, cycle);
    return g->committed_lo;
  }
  return target;
}

/* Sets a suspended goroutine's exact span from its lowest resident page and
 * applies the shrink rule; a range to release is appended to releases. */
static void visit(goro__g *g, uintptr_t lowest, uint64_t cycle, cycle_totals *totals,
                  struct iovec *releases, size_t *nreleases) {
  if (lowest < g->committed_lo)
    goro__span_set(NULL, g, lowest, GORO__SPAN_GROW);
  else if (lowest > g->committed_lo)
    goro__span_set(NULL, g, lowest, GORO__SPAN_ADJUST);

  totals->peaks[goro__span_bucket(g->peak_used)]++;
  totals->scanned++;

  uintptr_t target = shrink_target(g, cycle);
  if (target > g->committed_lo) {
    releases[*nreleases].iov_base = (void *)g->committed_lo;
    releases[*nreleases].iov_len = target - g->committed_lo;
    (*nreleases)++;
    totals->released += target - g->committed_lo;
    goro__span_set(NULL, g, target, GORO__SPAN_SHRINK);
  }
}

/* Suspends a goroutine that is parked or queued (its context is saved);
 * returns NULL for one that runs or has exited. */
static goro__g *try_suspend(uintptr_t top) {
  goro__g *g = descriptor_of(top);

  if (__atomic_load_n(&g->magic, __ATOMIC_ACQUIRE) != GORO__G_MAGIC)
    return NULL;
  uint32_t state = __atomic_load_n(&g->state, __ATOMIC_ACQUIRE);
  if (state != GORO__G_WAITING && state != GORO__G_RUNNABLE)
    return NULL;
  if (!__atomic_compare_exchange_n(&g->state, &state, GORO__G_SCANNING, false, __ATOMIC_ACQUIRE,
                                   __ATOMIC_RELAXED))
    return NULL;
  g->scan_from = state;
  return g;
}

static void release_and_resume(goro__g *const *suspended, size_t nsuspended,
                               struct iovec *releases,
                               size_t nreleases) {
  if (nreleases)
    goro__stack_release_ranges(releases, nreleases,
                               GORO__POLICY(madv_free) ? MADV_FREE : MADV_DONTNEED);
  for (size_t k = 0; k < nsuspended; k++)
    __atomic_store_n(&suspended[k]->state, suspended[k]->scan_from, __ATOMIC_RELEASE);
}

/* One mincore vector for the whole cycle (cycles hold cycle_lock). */
#define VEC_PAGES ((size_t)64 << 10)
static unsigned char vec[VEC_PAGES];

/* Finds the lowest resident page of a suspended goroutine's stack,
 * VEC_PAGES pages at a time from the bottom. */
static uintptr_t lowest_resident(const goro__g *g) {
  uintptr_t lowest = g->slot.top - GORO__PAGE_SIZE;

  for (uintptr_t at = g->slot.lo; at < lowest;) {
    size_t pages = (lowest - at) / GORO__PAGE_SIZE;
    if (pages > VEC_PAGES)
      pages = VEC_PAGES;
    if (mincore((void *)at, pages * GORO__PAGE_SIZE, vec) != 0)
      break;
    for (size_t pg = 0; pg < pages; pg++)
      if (vec[pg] & 1)
        return at + pg * GORO__PAGE_SIZE;
    at += pages * GORO__PAGE_SIZE;
  }
  return lowest;
}

/* Visits the goroutines of the 64 slots behind one worklist word. */
static void scan_word(int cls, uintptr_t region, uintptr_t slot_size, uint64_t carved,
                      uint64_t word_index, uint64_t cycle, cycle_totals *totals) {
  uint64_t *word = &goro__stack_visit_words(cls)[word_index];
  uint64_t bits = __atomic_exchange_n(word, 0, __ATOMIC_ACQ_REL);
  goro__g *suspended[64];
  struct iovec releases[64];
  size_t nsuspended = 0, nreleases = 0;
  uint64_t keep = 0;

  /* Goroutines not parked right now are skipped: they set their bit again
   * when they park. */
  for (int bit = 0; bits && bit < 64; bit++) {
    uint64_t index = word_index * 64 + (uint64_t)bit;
    if (!(bits & ((uint64_t)1 << bit)) || index >= carved)
      continue;
    goro__g *g = try_suspend(region + (index + 1) * slot_size);
    if (g)
      suspended[nsuspended++] = g;
  }
  if (nsuspended == 0)
    return;

  /* The suspended stacks cannot change now: read their exact spans, with
   * one mincore for the whole word when the vector fits it. */
  uintptr_t pages_per_slot = slot_size / GORO__PAGE_SIZE;
  uintptr_t base = region + word_index * 64 * slot_size;
  bool one_call = 64 * pages_per_slot <= VEC_PAGES &&
                  mincore((void *)base, 64 * slot_size, vec) == 0;
  for (size_t k = 0; k < nsuspended; k++) {
    goro__g *g = suspended[k];
    uintptr_t lowest;
    if (one_call) {
      const unsigned char *pages = vec + (g->slot.base - base) / GORO__PAGE_SIZE;
      uintptr_t pg = GORO__GUARD_SIZE / GORO__PAGE_SIZE;
      while (pg < pages_per_slot - 1 && !(pages[pg] & 1))
        pg++;
      lowest = g->slot.base + pg * GORO__PAGE_SIZE;
    } else {
      lowest = lowest_resident(g);
    }
    visit(g, lowest, cycle, totals, releases, &nreleases);

    /* Keep watching a stack that can still shrink or has a probe out. */
    if (g->slot.top - g->committed_lo > GORO__PAGE_SIZE || g->probe_page)
      keep |= (uint64_t)1 << (g->slot_index % 64);
  }
  release_and_resume(suspended, nsuspended, releases, nreleases);
  if (keep)
    __atomic_fetch_or(word, keep, __ATOMIC_RELEASE);
}

/* Adaptive start. Go 1.19 starts new goroutines at the mean stack use of
 * the goroutines its last GC scanned. In a bimodal mix, a minority of deep
 * goroutines then raises every shallow goroutine's start. goro takes the
 * median instead, over the deepest stack pointer seen at a park of the
 * goroutines that exited since the last cycle and of the parked ones this
 * cycle visited, as a power of two. Resident pages do not count: start
 * pages and pages left in a reused slot are not use, and counting them
 * would let the start feed on itself. The start then fits at least
 * half of recent goroutines, and the deep few grow as from one page. */
static void update_start_size(const cycle_totals *totals) {
  uint64_t counts[GORO_STACK_HIST_BUCKETS];
  uint64_t total = 0;

  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++) {
    counts[b] = totals->peaks[b];
    for (int i = 0; goro__allp && i < goro__nprocs; i++)
      counts[b] += __atomic_exchange_n(&goro__allp[i].stats.exit_peaks[b], 0, __ATOMIC_RELAXED);
    counts[b] += __atomic_exchange_n(&goro__global_stats.exit_peaks[b], 0, __ATOMIC_RELAXED);
    total += counts[b];
  }
  if (!GORO__POLICY(adaptive_start)) {
    __atomic_store_n(&goro__start_size, GORO__PAGE_SIZE, __ATOMIC_RELAXED);
    return;
  }
  if (total == 0)
    return;

  uint64_t seen = 0;
  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++) {
    seen += counts[b];
    if (2 * seen >= total) {
      __atomic_store_n(&goro__start_size, GORO__PAGE_SIZE << b, __ATOMIC_RELAXED);
      return;
    }
  }
}

/* Runs one cycle over every class. Caller holds cycle_lock. */
static cycle_totals run_cycle(void) {
  cycle_totals totals;

  memset(&totals, 0, sizeof totals);
  uint64_t cycle = __atomic_add_fetch(&goro__gc_cycle, 1, __ATOMIC_RELAXED);

  for (int cls = 0; cls < GORO__NUM_CLASSES; cls++) {
    uintptr_t region, slot_size;
    uint64_t carved;
    goro__stack_class_layout(cls, &region, &slot_size, &carved);
    uint64_t *words = goro__stack_visit_words(cls);
    for (uint64_t w = 0; w < (carved + 63) / 64; w++)
      if (__atomic_load_n(&words[w], __ATOMIC_RELAXED))
        scan_word(cls, region, slot_size, carved, w, cycle, &totals);
  }

  update_start_size(&totals);
  goro__pool_cycle();
  __atomic_add_fetch(&goro__gc_cycles_done, 1, __ATOMIC_RELAXED);
  return totals;
}

typedef struct cycle_request {
  bool free_os_memory;
  int64_t released;
} cycle_request;

static void run_request(void *arg) {
  cycle_request *req = arg;

  pthread_mutex_lock(&cycle_lock);
  cycle_totals totals = run_cycle();
  req->released = (int64_t)totals.released;
  if (req->free_os_memory) {
    req->released += (int64_t)goro__stack_drain_caches(goro__allp, goro__nprocs);
    /* Guard markers live in page tables, which the kernel frees only once a
     * table is empty: without this, a million slots would keep about
     * 550 MiB of page tables after every stack page is gone. */
    goro__stack_release_guards();
  }
  pthread_mutex_unlock(&cycle_lock);
}

/* Runs a cycle on a thread stack: a cycle keeps several KiB of batch
 * arrays on its stack, more than a goroutine with a 16 KiB maximum has.
 * A goroutine hands the work to the blocking pool and parks meanwhile
 * (so the cycle can shrink its caller too). */
static int64_t request_cycle(bool free_os_memory) {
  cycle_request req = {.free_os_memory = free_os_memory, .released = 0};

  if (!__atomic_load_n(&goro__running, __ATOMIC_ACQUIRE))
    return GORO_ESTATE;
  goro_run_blocking(run_request, &req);
  return req.released;
}

int64_t goro_gc(void) { return request_cycle(false); }

int64_t goro_free_os_memory(void) { return request_cycle(true); }

void goro__gc_tick(int64_t now) {
  int64_t period = GORO__POLICY(gc_period_ns);

  /* Under the cycle lock, so that goro_free_os_memory never runs while
   * slots are off their lists for trimming. A tick that finds it taken
   * does its work at the next one. */
  if (pthread_mutex_trylock(&cycle_lock) != 0)
    return;

  /* Trimming measures slots one mincore at a time; a burst far over the
   * bound is released whole instead. Releasing an eighth of the excess per
   * tick (at least 2 MiB) returns a burst within about a second, yet keeps
   * its slots for another burst that comes sooner. */
  uint64_t warm = goro__stack_warm_bytes();
  if (warm <= GORO__WARM_BOUND) {
    goro__stack_trim();
  } else {
    uint64_t excess = warm - GORO__WARM_BOUND;
    goro__stack_scavenge(GORO__WARM_BOUND, excess / 8 > (2 << 20) ? excess / 8 : (2 << 20));
  }

  if (period > 0 && now - last_auto_cycle >= period) {
    last_auto_cycle = now;
    run_cycle();
  }
  pthread_mutex_unlock(&cycle_lock);
}
