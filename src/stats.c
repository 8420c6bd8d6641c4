/*
 * stats.c: stack accounting and the ways to read it: goro_read_memstats,
 * goro_stack_info_self, the GORODEBUG stacklog lines and the Prometheus
 * exposition.
 *
 * Every change of a goroutine's committed span goes through
 * goro__span_set, which moves the goroutine between histogram buckets in
 * its P's counters. stack_inuse and the goroutine count are not kept
 * separately: goro_read_memstats derives them from the histogram, so
 * "the histogram sums to goroutines and its bytes to stack_inuse" holds for
 * every read, even one taken while other threads spawn and exit. Reads cost
 * O(workers x buckets) and never visit goroutines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sched.h"
#include "trace.h"

int goro__span_bucket(uintptr_t span) {
  uintptr_t pages = span / GORO__PAGE_SIZE;
  int bucket = 0;

  while (bucket < GORO_STACK_HIST_BUCKETS - 1 && ((uintptr_t)1 << bucket) < pages)
    bucket++;
  return bucket;
}

/* Prints at most STACKLOG_BURST lines per second, then reports how many it
 * dropped, so that a thrashing program cannot flood stderr. */
#define STACKLOG_BURST 1000

static void stack_log(goro__g *g, uintptr_t old_span, uintptr_t new_span, const char *why) {
  static int64_t window_start;
  static uint32_t lines, dropped;
  char line[160];
  int64_t now = goro__nanotime();
  int len = 0;

  if (now - __atomic_load_n(&window_start, __ATOMIC_RELAXED) > 1000000000) {
    __atomic_store_n(&window_start, now, __ATOMIC_RELAXED);
    uint32_t missed = __atomic_exchange_n(&dropped, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&lines, 0, __ATOMIC_RELAXED);
    if (missed)
      len = snprintf(line, sizeof line, "goro: %u stack log lines dropped\n", missed);
  }
  if (__atomic_add_fetch(&lines, 1, __ATOMIC_RELAXED) > STACKLOG_BURST) {
    __atomic_add_fetch(&dropped, 1, __ATOMIC_RELAXED);
    return;
  }
  len += snprintf(line + len, sizeof line - (size_t)len,
                  "goro: goroutine %lld stack %zu -> %zu bytes (%s)\n", (long long)g->id,
                  (size_t)old_span, (size_t)new_span, why);
  if (write(STDERR_FILENO, line, (size_t)len) < 0)
    return;
}

void goro__span_set(goro__p *p, goro__g *g, uintptr_t new_lo, enum goro__span_event event) {
  uintptr_t top = g->slot.top;
  uintptr_t old_span = top - g->committed_lo;
  uintptr_t new_span = top - new_lo;

  goro__pstats *home = g->home;
  if (event != GORO__SPAN_NEW) {
    goro__hist_add(&home->hist[g->hist_bucket], -1, -(int64_t)old_span);
  }
  if (event == GORO__SPAN_EXIT) {
    /* What the goroutine needed, for the adaptive starting size. */
    GORO__STAT_ADD(p, exit_peaks[goro__span_bucket(g->peak_used)], 1);
    goro__trace_stack(g, 0);
    return;
  }
  g->committed_lo = new_lo;
  g->hist_bucket = goro__span_bucket(new_span);
  goro__hist_add(&home->hist[g->hist_bucket], 1, (int64_t)new_span);
  if (new_span > g->peak_span)
    g->peak_span = new_span;

  uint64_t cycle = __atomic_load_n(&goro__gc_cycle, __ATOMIC_RELAXED);
  switch (event) {
  case GORO__SPAN_GROW:
    GORO__STAT_ADD(p, growths, 1);
    GORO__STAT_ADD(p, pages_committed, (new_span - old_span) / GORO__PAGE_SIZE);
    g->growths++;
    /* Growing again after a shrink is thrashing: keep the stack twice as
     * long before the next shrink, up to GORO__MAX_HOLD cycles. */
    if (g->shrunk_cycle > g->last_growth_cycle && g->hold && g->hold < GORO__MAX_HOLD)
      g->hold *= 2;
    g->last_growth_cycle = cycle;
    break;
  case GORO__SPAN_SHRINK:
    GORO__STAT_ADD(p, shrinks, 1);
    GORO__STAT_ADD(p, pages_released, (old_span - new_span) / GORO__PAGE_SIZE);
    g->shrinks++;
    g->shrunk_cycle = cycle;
    break;
  case GORO__SPAN_NEW:
    GORO__STAT_ADD(p, pages_committed, new_span / GORO__PAGE_SIZE);
    break;
  case GORO__SPAN_ADJUST:
  case GORO__SPAN_EXIT:
    break;
  }

  if (event != GORO__SPAN_NEW && new_span != old_span) {
    if (goro__dbg.stack_log) {
      const char *why = "reclaimed"; /* ADJUST: the kernel took MADV_FREE pages */
      if (event == GORO__SPAN_GROW)
        why = "grow";
      else if (event == GORO__SPAN_SHRINK)
        why = "shrink";
      stack_log(g, old_span, new_span, why);
    }
    goro__trace_stack(g, new_span);
  }
}

void goro__account_sp(goro__p *p, goro__g *g, uintptr_t sp) {
  uintptr_t lo = sp & ~(GORO__PAGE_SIZE - 1);

  if (g->slot.top - lo > g->peak_used)
    g->peak_used = g->slot.top - lo;
  if (lo < g->committed_lo)
    goro__span_set(p, g, lo, GORO__SPAN_GROW);
}

int goro_stack_info_self(goro_stack_info *out) {
  goro__g *g = goro__getg();

  if (!out)
    return GORO_EINVAL;
  if (!g)
    return GORO_ENOTGORO;

  /* Exact, like a shrink cycle: the caller's own stack cannot change under
   * it, and mincore reports pages a deep call left behind after returning.
   * peak_used stays as the parks set it: the pages this call's own frames
   * touch (mincore's, or ASan's interceptors) are not the goroutine's need. */
  goro__p *p = goro__getp();
  uintptr_t lowest = goro__stack_lowest_touched(&g->slot, g->committed_lo);
  if (lowest < g->committed_lo)
    goro__span_set(p, g, lowest, GORO__SPAN_GROW);
  out->id = g->id;
  out->current = g->slot.top - g->committed_lo;
  out->peak = g->peak_span;
  out->max = g->slot.top - g->slot.lo;
  out->growths = g->growths;
  out->shrinks = g->shrinks;
  return 0;
}

static void sum_pstats(goro__pstats *sum, goro__pstats *p) {
  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++) {
    sum->hist[b] += goro__hist_read(&p->hist[b]);
  }
  sum->stack_cache += __atomic_load_n(&p->stack_cache, __ATOMIC_RELAXED);
  sum->slots_cached += __atomic_load_n(&p->slots_cached, __ATOMIC_RELAXED);
  sum->spawned += __atomic_load_n(&p->spawned, __ATOMIC_RELAXED);
  sum->pages_committed += __atomic_load_n(&p->pages_committed, __ATOMIC_RELAXED);
  sum->pages_released += __atomic_load_n(&p->pages_released, __ATOMIC_RELAXED);
  sum->growths += __atomic_load_n(&p->growths, __ATOMIC_RELAXED);
  sum->shrinks += __atomic_load_n(&p->shrinks, __ATOMIC_RELAXED);
}

int goro_read_memstats(goro_memstats *out) {
  goro__pstats sum;
  goro_memstats s;

  if (!out || out->size < sizeof(uint32_t) * 2)
    return GORO_EINVAL;
  uint32_t caller_size = out->size;

  memset(&sum, 0, sizeof sum);
  sum_pstats(&sum, &goro__global_stats);
  for (int i = 0; goro__allp && i < goro__nprocs; i++)
    sum_pstats(&sum, &goro__allp[i].stats);

  memset(&s, 0, sizeof s);
  s.size = (uint32_t)sizeof s;
  s.version = GORO_MEMSTATS_VERSION;
  for (int b = 0; b < GORO_STACK_HIST_BUCKETS; b++) {
    s.stack_hist_count[b] = (uint64_t)sum.hist[b];
    s.stack_hist_bytes[b] = (uint64_t)(sum.hist[b] >> 64);
    s.goroutines += s.stack_hist_count[b];
    s.stack_inuse += s.stack_hist_bytes[b];
  }
  s.spawned_total = sum.spawned;
  s.stack_cache = (uint64_t)sum.stack_cache;
  s.slots_cached = (uint64_t)sum.slots_cached;
  s.pages_committed = sum.pages_committed;
  s.pages_released = sum.pages_released;
  s.stack_growths = sum.growths;
  s.stack_shrinks = sum.shrinks;
  goro__stack_read_stats(&s.stack_reserved, &s.slots_carved, &s.guards, &s.unguarded_slots,
                         &s.stack_meta);
  s.guard_bytes = s.guards * GORO__GUARD_SIZE;
  s.stack_guard = 0;
  s.stack_meta += (uint64_t)goro__nprocs * (sizeof(goro__p) + sizeof(goro__m));
  s.stack_sys = s.stack_inuse + s.stack_cache + s.stack_guard + s.stack_meta;
  s.stack_start_size = __atomic_load_n(&goro__start_size, __ATOMIC_RELAXED);
  s.gc_cycles = __atomic_load_n(&goro__gc_cycles_done, __ATOMIC_RELAXED);
  s.max_stack = goro_max_stack();
  s.maxprocs = (uint64_t)goro__nprocs;

  /* A caller built against an older goro.h gets the prefix it declares. */
  uint32_t size = caller_size < sizeof s ? caller_size : (uint32_t)sizeof s;
  memcpy(out, &s, size);
  out->size = size;
  return 0;
}

/* ---- Prometheus text exposition ---------------------------------------- */

typedef struct prom_buf {
  char data[16384];
  size_t len;
  int fd;
  int err;
} prom_buf;

static void prom_flush(prom_buf *b) {
  size_t off = 0;

  while (off < b->len && !b->err) {
    ssize_t n = write(b->fd, b->data + off, b->len - off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      b->err = GORO_EINVAL;
      break;
    }
    off += (size_t)n;
  }
  b->len = 0;
}

static void __attribute__((format(printf, 2, 3))) prom_printf(prom_buf *b, const char *fmt, ...) {
  va_list ap;

  if (b->len > sizeof b->data - 512)
    prom_flush(b);
  va_start(ap, fmt);
  int n = vsnprintf(b->data + b->len, sizeof b->data - b->len, fmt, ap);
  va_end(ap);
  if (n > 0)
    b->len += (size_t)n < sizeof b->data - b->len ? (size_t)n : sizeof b->data - b->len - 1;
}

static void prom_metric(prom_buf *b, const char *name, const char *type, const char *help,
                        uint64_t value) {
  prom_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
              (unsigned long long)value);
}

int goro_write_prometheus(int fd) {
  goro_memstats s = {.size = sizeof s};
  prom_buf b = {.len = 0, .fd = fd, .err = 0};

  if (fd < 0)
    return GORO_EINVAL;
  goro_read_memstats(&s);

  prom_metric(&b, "goro_goroutines", "gauge", "Goroutines alive.", s.goroutines);
  prom_metric(&b, "goro_goroutines_spawned_total", "counter", "Goroutines spawned.",
              s.spawned_total);
  prom_metric(&b, "goro_stack_inuse_bytes", "gauge",
              "Committed stack bytes of live goroutines.", s.stack_inuse);
  prom_metric(&b, "goro_stack_sys_bytes", "gauge",
              "Stack memory: in use, cached, guards and bookkeeping.", s.stack_sys);
  prom_metric(&b, "goro_stack_cache_bytes", "gauge", "Resident bytes in free slot caches.",
              s.stack_cache);
  prom_metric(&b, "goro_stack_meta_bytes", "gauge", "Stack bookkeeping bytes.", s.stack_meta);
  prom_metric(&b, "goro_stack_reserved_bytes", "gauge", "Address space reserved for stacks.",
              s.stack_reserved);
  prom_metric(&b, "goro_stack_start_size_bytes", "gauge",
              "Bytes committed for a new goroutine by default.", s.stack_start_size);
  prom_metric(&b, "goro_stack_guards", "gauge", "Guard regions installed.", s.guards);
  prom_metric(&b, "goro_stack_unguarded_slots", "gauge", "Slots without a guard.",
              s.unguarded_slots);
  prom_metric(&b, "goro_stack_growths_total", "counter", "Observed stack growths.",
              s.stack_growths);
  prom_metric(&b, "goro_stack_shrinks_total", "counter", "Stack shrinks by gc cycles.",
              s.stack_shrinks);
  prom_metric(&b, "goro_stack_pages_committed_total", "counter",
              "Stack pages observed newly committed.", s.pages_committed);
  prom_metric(&b, "goro_stack_pages_released_total", "counter",
              "Stack pages given back to the OS.", s.pages_released);
  prom_metric(&b, "goro_gc_cycles_total", "counter", "Stack shrink cycles completed.",
              s.gc_cycles);

  /* The size histogram, cumulative as Prometheus histograms are. */
  prom_printf(&b, "# HELP goro_stack_size_bytes Committed stack span of live goroutines.\n"
                  "# TYPE goro_stack_size_bytes histogram\n");
  uint64_t cumulative = 0;
  for (int i = 0; i < GORO_STACK_HIST_BUCKETS; i++) {
    cumulative += s.stack_hist_count[i];
    if (i < GORO_STACK_HIST_BUCKETS - 1)
      prom_printf(&b, "goro_stack_size_bytes_bucket{le=\"%llu\"} %llu\n",
                  (unsigned long long)(GORO__PAGE_SIZE << i), (unsigned long long)cumulative);
  }
  prom_printf(&b, "goro_stack_size_bytes_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)cumulative);
  prom_printf(&b, "goro_stack_size_bytes_sum %llu\ngoro_stack_size_bytes_count %llu\n",
              (unsigned long long)s.stack_inuse, (unsigned long long)s.goroutines);
  prom_flush(&b);
  return b.err;
}
