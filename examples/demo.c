/*
 * demo.c: goro's stacks on real workloads, next to Go's recorded numbers.
 *
 * `make demo` builds and runs this program. Section (a) parks a million
 * goroutines on one channel. It reports the spawn cost, memory and page
 * tables per goroutine, mappings, guards, teardown, a second round on warm
 * memory, and what goro_free_os_memory() gives back. Section (b) grows one
 * goroutine's stack by recursion: the first call pays the kernel's page
 * faults, a second identical call pays nothing, and nothing is ever copied.
 * Section (c) runs deep and shallow tasks on one worker with a shrink cycle
 * (goro_gc) after every task, under three shrink policies.
 *
 * Every number is measured by this run, except the columns and rows
 * labelled "Go 1.19.8 (recorded)": those were measured earlier with Go's own
 * programs of the same shape on a 2-vCPU Linux 6.18 VM and are printed for
 * comparison only.
 *
 * Stack residency is measured twice: by goro's own accounting
 * (goro_read_memstats, goro_stack_info_self) and independently with
 * mincore(2) over the calling goroutine's stack bounds.
 *
 * Usage: demo [-n goroutines] [-s sections] [-d deep_kib]
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "goro.h"

#if defined(__GNUC__) && !defined(__clang__)
#define NOINLINE __attribute__((noinline, noipa))
#else
#define NOINLINE __attribute__((noinline))
#endif

#define KIB 1024.0
#define MIB (1024.0 * 1024.0)
#define PAGE_SIZE_BYTES 4096

typedef struct demo_config {
  long goroutines;  /* section (a): goroutines per round */
  const char *sections;
  long deep_kib;    /* section (c): stack a deep task uses */
} demo_config;

static demo_config config = {1000000, "abc", 768};

/* ---- Small tools: time, /proc, mincore ------------------------------- */

static int64_t now_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Returns the value of a "Name:   123 kB" line of a /proc file, in bytes,
 * or -1 when the file or the line is missing. */
static int64_t proc_kib_field(const char *path, const char *name) {
  FILE *f = fopen(path, "r");
  char line[256];
  size_t name_len = strlen(name);
  int64_t value = -1;

  if (!f)
    return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, name, name_len) == 0 && line[name_len] == ':') {
      value = strtoll(line + name_len + 1, NULL, 10) * 1024;
      break;
    }
  }
  fclose(f);
  return value;
}

static long count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  long lines = 0;
  int ch;

  if (!f)
    return -1;
  while ((ch = getc(f)) != EOF)
    if (ch == '\n')
      lines++;
  fclose(f);
  return lines;
}

/* CPU time of the whole machine from the "cpu" line of /proc/stat, in clock
 * ticks: the total, and the part stolen by the hypervisor. */
typedef struct cpu_times {
  uint64_t total, steal;
} cpu_times;

static void read_cpu_times(cpu_times *out) {
  FILE *f = fopen("/proc/stat", "r");
  uint64_t field[8] = {0};

  out->total = out->steal = 0;
  if (!f)
    return;
  if (fscanf(f, "cpu %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                " %" SCNu64 " %" SCNu64,
             &field[0], &field[1], &field[2], &field[3], &field[4], &field[5], &field[6],
             &field[7]) == 8) {
    for (int i = 0; i < 8; i++)
      out->total += field[i];
    out->steal = field[7];
  }
  fclose(f);
}

static void read_memstats(goro_memstats *ms) {
  memset(ms, 0, sizeof *ms);
  ms->size = sizeof *ms;
  goro_read_memstats(ms);
}

/* Process memory at one instant: resident set, page tables, mappings and
 * goro's statistics. */
typedef struct snapshot {
  int64_t rss;
  int64_t pte;
  long maps;
  goro_memstats ms;
} snapshot;

static void take_snapshot(snapshot *s) {
  s->rss = proc_kib_field("/proc/self/status", "VmRSS");
  s->pte = proc_kib_field("/proc/self/status", "VmPTE");
  s->maps = count_lines("/proc/self/maps");
  read_memstats(&s->ms);
}

/* Returns the resident bytes of the calling goroutine's stack, counted with
 * mincore(2) over [lo, hi) from goro_stack_bounds. */
static size_t stack_resident_bytes(void) {
  static __thread unsigned char vec[4096];
  uintptr_t lo, hi;
  size_t resident = 0;

  if (goro_stack_bounds(&lo, &hi) != 0)
    return 0;
  lo &= ~(uintptr_t)(PAGE_SIZE_BYTES - 1);
  for (uintptr_t at = lo; at < hi;) {
    size_t pages = (hi - at + PAGE_SIZE_BYTES - 1) / PAGE_SIZE_BYTES;
    if (pages > sizeof vec)
      pages = sizeof vec;
    if (mincore((void *)at, pages * PAGE_SIZE_BYTES, vec) != 0)
      return 0;
    for (size_t i = 0; i < pages; i++)
      resident += vec[i] & 1;
    at += pages * PAGE_SIZE_BYTES;
  }
  return resident * PAGE_SIZE_BYTES;
}

static int compare_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Returns the p-quantile (0 < p <= 1) of n sorted values: the smallest value
 * with at least p*n values at or below it. */
static int64_t quantile(const int64_t *sorted, size_t n, double p) {
  size_t rank = (size_t)(p * (double)n + 0.999999);

  if (n == 0)
    return 0;
  if (rank < 1)
    rank = 1;
  if (rank > n)
    rank = n;
  return sorted[rank - 1];
}

static int64_t median(int64_t *values, size_t n) {
  qsort(values, n, sizeof *values, compare_i64);
  return quantile(values, n, 0.5);
}

/* ---- Number formatting and tables ------------------------------------ */

/* Formats v with thousands separators: 1234567 -> "1,234,567". */
static const char *group(char *buf, size_t len, int64_t v) {
  char digits[32];
  int n = snprintf(digits, sizeof digits, "%" PRId64, v < 0 ? -v : v);
  size_t out = 0;

  if (v < 0 && out + 1 < len)
    buf[out++] = '-';
  for (int i = 0; i < n && out + 2 < len; i++) {
    if (i > 0 && (n - i) % 3 == 0)
      buf[out++] = ',';
    buf[out++] = digits[i];
  }
  buf[out] = '\0';
  return buf;
}

#define TABLE_COLS 10
#define TABLE_ROWS 24
#define TABLE_CELL 64

/* A text table: the first row added is the header. The first column is
 * left-aligned (labels), the others right-aligned (numbers). */
typedef struct table {
  int ncols, nrows;
  char cells[TABLE_ROWS][TABLE_COLS][TABLE_CELL];
} table;

static table *table_new(void) { return calloc(1, sizeof(table)); }

/* Adds a row from a format whose output separates cells with '|'. */
__attribute__((format(printf, 2, 3))) static void table_row(table *t, const char *fmt, ...) {
  char line[TABLE_COLS * TABLE_CELL];
  va_list ap;
  int col = 0;

  if (t->nrows == TABLE_ROWS)
    return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  for (char *cell = line; cell && col < TABLE_COLS; col++) {
    char *bar = strchr(cell, '|');
    if (bar)
      *bar = '\0';
    size_t len = strlen(cell) < TABLE_CELL ? strlen(cell) : TABLE_CELL - 1;
    memcpy(t->cells[t->nrows][col], cell, len);
    t->cells[t->nrows][col][len] = '\0';
    cell = bar ? bar + 1 : NULL;
  }
  if (col > t->ncols)
    t->ncols = col;
  t->nrows++;
}

static void table_print(table *t) {
  int width[TABLE_COLS] = {0};

  for (int r = 0; r < t->nrows; r++)
    for (int c = 0; c < t->ncols; c++) {
      int w = (int)strlen(t->cells[r][c]);
      if (w > width[c])
        width[c] = w;
    }
  for (int r = 0; r < t->nrows; r++) {
    printf("  ");
    for (int c = 0; c < t->ncols; c++)
      printf(c == 0 ? "%-*s" : "  %*s", width[c], t->cells[r][c]);
    printf("\n");
    if (r == 0) {
      printf("  ");
      for (int c = 0; c < t->ncols; c++)
        printf("%s%.*s", c == 0 ? "" : "  ", width[c],
               "----------------------------------------------------------------");
      printf("\n");
    }
  }
  printf("\n");
  fflush(stdout);
  free(t);
}

__attribute__((format(printf, 1, 2))) static void section_title(const char *fmt, ...) {
  char title[128];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(title, sizeof title, fmt, ap);
  va_end(ap);
  printf("\n%s\n", title);
  for (size_t i = 0; i < strlen(title); i++)
    putchar('=');
  printf("\n");
}

/* ---- The recursion used by sections (b) and (c) ---------------------- */

/*
 * One recursion level with a 512-byte local array, the shape of Go's anchor
 * programs. noinline (and noipa on GCC) keeps one real frame per level. The
 * asm statement makes the compiler assume that the filled array is read, so
 * it keeps both the array and the memset. *deepest receives the address of
 * the array in the deepest frame.
 */
static NOINLINE unsigned recurse(int depth, uintptr_t *deepest) {
  unsigned char buf[512];

  memset(buf, depth & 0xff, sizeof buf);
  __asm__ volatile("" : : "r"(buf) : "memory");
  if (depth == 0) {
    *deepest = (uintptr_t)buf;
    return buf[0];
  }
  return recurse(depth - 1, deepest) + buf[depth & 511];
}

static volatile unsigned recurse_sink;

/* Stack bytes one recurse() level takes, and the stack above the array of
 * a depth-0 call, both measured in a goroutine by calibrate_main. */
typedef struct frame_calibration {
  size_t per_level;
  size_t base;
} frame_calibration;

static frame_calibration calibration;
static goro_waitgroup calibration_wg;

static void calibrate_main(void *arg) {
  uintptr_t lo, hi, deep0, deep100;

  (void)arg;
  goro_stack_bounds(&lo, &hi);
  recurse_sink += recurse(0, &deep0);
  recurse_sink += recurse(100, &deep100);
  calibration.per_level = (deep0 - deep100) / 100;
  calibration.base = hi - deep0;
  goro_wg_done(&calibration_wg);
}

static void calibrate_frames(void) {
  if (calibration.per_level)
    return;
  goro_wg_add(&calibration_wg, 1);
  goro_spawn(calibrate_main, NULL);
  goro_wg_wait(&calibration_wg);
}

/* Returns the recursion depth that makes a goroutine's stack reach about
 * `bytes` measured from the top of its slot. */
static int depth_for_stack(size_t bytes) {
  if (bytes <= calibration.base)
    return 0;
  return (int)((bytes - calibration.base) / calibration.per_level);
}

/* ---- (a) One million parked goroutines ------------------------------- */

static goro_chan *gate;
static goro_waitgroup parked_wg, exited_wg;

static void parked_waiter(void *arg) {
  (void)arg;
  goro_wg_done(&parked_wg);
  goro_chan_recv(gate, NULL);
  goro_wg_done(&exited_wg);
}

typedef struct spawn_round {
  long n;
  int64_t spawn_ns, teardown_ns;
  snapshot before, peak, after;
} spawn_round;

/* Waits until goro counts no more goroutines than `count`: a goroutine that
 * called goro_wg_done may still be on its way out. */
static void wait_goroutines(uint64_t count) {
  goro_memstats ms;

  for (int i = 0; i < 100000; i++) {
    read_memstats(&ms);
    if (ms.goroutines <= count)
      return;
    goro_sleep(100 * 1000);
  }
}

/* Spawns r->n parked goroutines, then releases them. Returns 0 or the
 * GORO_E* code of the spawn that failed. */
static int run_spawn_round(spawn_round *r) {
  int err = goro_chan_make(&gate, 0, 0);

  if (err)
    return err;
  goro_wg_add(&parked_wg, r->n);
  goro_wg_add(&exited_wg, r->n);
  take_snapshot(&r->before);

  int64_t t0 = now_ns();
  for (long i = 0; i < r->n; i++) {
    int64_t id = goro_spawn(parked_waiter, NULL);
    if (id < 0) {
      err = (int)id;
      goro_wg_add(&parked_wg, -(r->n - i));
      goro_wg_add(&exited_wg, -(r->n - i));
      r->n = i;
      break;
    }
  }
  goro_wg_wait(&parked_wg);
  int64_t t1 = now_ns();
  take_snapshot(&r->peak);

  int64_t t2 = now_ns();
  goro_chan_close(gate);
  goro_wg_wait(&exited_wg);
  wait_goroutines(r->before.ms.goroutines);
  int64_t t3 = now_ns();
  take_snapshot(&r->after);

  goro_chan_free(gate);
  r->spawn_ns = t1 - t0;
  r->teardown_ns = t3 - t2;
  return err;
}

static double per_goroutine(const spawn_round *r, int64_t before, int64_t peak) {
  return r->n ? (double)(peak - before) / (double)r->n : 0;
}

/* Returns the stack memory that goro counts as given back to the OS
 * (memstats pages_released) between the round's first and last snapshot. */
static double released_mib(const spawn_round *r) {
  return (double)(r->after.ms.pages_released - r->before.ms.pages_released) * PAGE_SIZE_BYTES /
         MIB;
}

static void print_spawn_rounds(const spawn_round *r) {
  table *t = table_new();
  char a[32], b[32], c[32], d[32];

  table_row(t, "measurement|goro round 1|goro round 2|Go 1.19.8 round 1|Go 1.19.8 round 2");
  table_row(t, "spawn until all parked, ns per goroutine|%s|%s|3,970|1,274",
            group(a, sizeof a, r[0].spawn_ns / (r[0].n ? r[0].n : 1)),
            group(b, sizeof b, r[1].spawn_ns / (r[1].n ? r[1].n : 1)));
  table_row(t, "VmRSS before -> at peak, MiB|%.1f -> %.1f|%.1f -> %.1f|-|-",
            r[0].before.rss / MIB, r[0].peak.rss / MIB, r[1].before.rss / MIB,
            r[1].peak.rss / MIB);
  table_row(t, "RSS per goroutine, bytes|%s|%s|2,716|2-5",
            group(a, sizeof a, (int64_t)per_goroutine(&r[0], r[0].before.rss, r[0].peak.rss)),
            group(b, sizeof b, (int64_t)per_goroutine(&r[1], r[1].before.rss, r[1].peak.rss)));
  table_row(t, "page tables (VmPTE) per goroutine, bytes|%.0f|%.0f|-|-",
            per_goroutine(&r[0], r[0].before.pte, r[0].peak.pte),
            per_goroutine(&r[1], r[1].before.pte, r[1].peak.pte));
  table_row(t, "RSS + page tables per goroutine, bytes|%s|%s|-|-",
            group(a, sizeof a,
                  (int64_t)per_goroutine(&r[0], r[0].before.rss + r[0].before.pte,
                                         r[0].peak.rss + r[0].peak.pte)),
            group(b, sizeof b,
                  (int64_t)per_goroutine(&r[1], r[1].before.rss + r[1].before.pte,
                                         r[1].peak.rss + r[1].peak.pte)));
  table_row(t, "stack_inuse before -> at peak, MiB|%.1f -> %.1f|%.1f -> %.1f|0.2 -> 1953.3|-",
            r[0].before.ms.stack_inuse / MIB, r[0].peak.ms.stack_inuse / MIB,
            r[1].before.ms.stack_inuse / MIB, r[1].peak.ms.stack_inuse / MIB);
  table_row(t, "stack_inuse per goroutine, bytes|%s|%s|2,048|-",
            group(a, sizeof a,
                  (int64_t)per_goroutine(&r[0], (int64_t)r[0].before.ms.stack_inuse,
                                         (int64_t)r[0].peak.ms.stack_inuse)),
            group(b, sizeof b,
                  (int64_t)per_goroutine(&r[1], (int64_t)r[1].before.ms.stack_inuse,
                                         (int64_t)r[1].peak.ms.stack_inuse)));
  table_row(t, "stack_sys before -> at peak, MiB|%.1f -> %.1f|%.1f -> %.1f|0.2 -> 1953.3|-",
            r[0].before.ms.stack_sys / MIB, r[0].peak.ms.stack_sys / MIB,
            r[1].before.ms.stack_sys / MIB, r[1].peak.ms.stack_sys / MIB);
  table_row(t, "memory mappings before -> at peak|%ld -> %ld|%ld -> %ld|-|-", r[0].before.maps,
            r[0].peak.maps, r[1].before.maps, r[1].peak.maps);
  table_row(t, "guards installed before -> at peak|%s -> %s|%s -> %s|-|-",
            group(a, sizeof a, (int64_t)r[0].before.ms.guards),
            group(b, sizeof b, (int64_t)r[0].peak.ms.guards),
            group(c, sizeof c, (int64_t)r[1].before.ms.guards),
            group(d, sizeof d, (int64_t)r[1].peak.ms.guards));
  table_row(t, "teardown until all exited, ns per goroutine|%s|%s|847|-",
            group(a, sizeof a, r[0].teardown_ns / (r[0].n ? r[0].n : 1)),
            group(b, sizeof b, r[1].teardown_ns / (r[1].n ? r[1].n : 1)));
  table_row(t, "VmRSS after teardown, MiB|%.1f|%.1f|-|-", r[0].after.rss / MIB,
            r[1].after.rss / MIB);
  table_row(t, "stack_cache after teardown, MiB|%.1f|%.1f|-|-",
            r[0].after.ms.stack_cache / MIB, r[1].after.ms.stack_cache / MIB);
  table_row(t, "stack pages released during the round, MiB|%.1f|%.1f|-|-",
            released_mib(&r[0]), released_mib(&r[1]));
  table_print(t);
}

/* Lowers the goroutine count when the machine lacks the memory for it. A
 * parked goroutine costs about 4.7 KiB of RSS and page tables (this
 * section measures it), so N x 6 KiB is kept under half of MemAvailable. */
static long fit_goroutines(long requested) {
  int64_t available = proc_kib_field("/proc/meminfo", "MemAvailable");
  long fit;

  if (available < 0)
    return requested;
  fit = (long)(available / 2 / (6 * 1024));
  return requested < fit ? requested : fit;
}

static void section_parked(void) {
  spawn_round rounds[2];
  long n = fit_goroutines(config.goroutines);
  char count[32];

  section_title("(a) %s goroutines parked on one channel", group(count, sizeof count, n));
  printf("Each goroutine calls goro_wg_done and blocks in goro_chan_recv on one unbuffered\n"
         "channel. Spawn time runs from the first goro_spawn until the wait group has\n"
         "counted all N; RSS and page tables are VmRSS and VmPTE from /proc/self/status.\n"
         "Round 2 runs right after round 1 and reuses its slots. Teardown closes the\n"
         "channel and waits until goro counts every goroutine as exited.\n"
         "The Go columns were recorded with Go 1.19.8 on a 2-vCPU Linux 6.18 VM, not\n"
         "measured by this run (Go round 2: GODEBUG=adaptivestackstart=0).\n");
  if (n < config.goroutines)
    printf("NOTE: MemAvailable fits about %s goroutines, fewer than requested.\n",
           group(count, sizeof count, n));
  printf("\nRunning two rounds...\n\n");
  fflush(stdout);

  for (int i = 0; i < 2; i++) {
    rounds[i].n = n;
    int err = run_spawn_round(&rounds[i]);
    if (err) {
      printf("goro_spawn failed after %s goroutines: %s (try a smaller -n)\n",
             group(count, sizeof count, rounds[i].n), goro_strerror(err));
      if (rounds[i].n == 0)
        return;
    }
  }
  print_spawn_rounds(rounds);

  snapshot freed;
  int64_t t0 = now_ns();
  int64_t released = goro_free_os_memory();
  int64_t t1 = now_ns();
  take_snapshot(&freed);

  table *t = table_new();
  table_row(t, "after|VmRSS MiB|VmPTE MiB|stack_sys MiB|stack_cache MiB|mappings");
  table_row(t, "teardown of round 2|%.1f|%.1f|%.1f|%.1f|%ld", rounds[1].after.rss / MIB,
            rounds[1].after.pte / MIB, rounds[1].after.ms.stack_sys / MIB,
            rounds[1].after.ms.stack_cache / MIB, rounds[1].after.maps);
  table_row(t, "goro_free_os_memory()|%.1f|%.1f|%.1f|%.1f|%ld", freed.rss / MIB,
            freed.pte / MIB, freed.ms.stack_sys / MIB, freed.ms.stack_cache / MIB, freed.maps);
  table_row(t, "Go 1.19.8 (recorded): FreeOSMemory()|518|-|-|-|-");
  if (released >= 0)
    printf("goro_free_os_memory() released %.1f MiB in %.1f ms. Go keeps every goroutine\n"
           "descriptor for reuse, so its RSS stays at 518 MiB after 1M goroutines exit.\n\n",
           released / MIB, (t1 - t0) / 1e6);
  else
    printf("goro_free_os_memory() failed: %s\n\n", goro_strerror((int)released));
  table_print(t);
}

/* ---- (b) Growth by recursion ----------------------------------------- */

#define GROWTH_TRIALS 11

typedef struct growth_trial {
  int depth;
  size_t resident_before, resident_after_first;
  goro_stack_info info_after_first, info_after_gc;
  int64_t first_ns, second_ns;
} growth_trial;

static goro_chan *trial_done, *trial_release;

/* Makes the same deep call twice on a fresh goroutine, then stays parked
 * until all trials of its target are done, so that no other trial reuses
 * its resident slot. */
static void growth_trial_main(void *arg) {
  growth_trial *trial = arg;
  uintptr_t deepest;

  trial->resident_before = stack_resident_bytes();

  int64_t t0 = now_ns();
  recurse_sink += recurse(trial->depth, &deepest);
  int64_t t1 = now_ns();
  recurse_sink += recurse(trial->depth, &deepest);
  int64_t t2 = now_ns();

  trial->resident_after_first = stack_resident_bytes();
  goro_stack_info_self(&trial->info_after_first);
  trial->first_ns = t1 - t0;
  trial->second_ns = t2 - t1;

  goro_chan_send(trial_done, NULL);
  goro_chan_recv(trial_release, NULL);
  goro_stack_info_self(&trial->info_after_gc);
}

/* Returns the first-touch cost of one fresh anonymous page, in ns, averaged
 * over 16 MiB: the unit cost of goro's stack growth on this machine. */
static int64_t page_fault_ns(void) {
  size_t size = (size_t)16 << 20;
  char *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

  if (mem == MAP_FAILED)
    return -1;
  madvise(mem, size, MADV_NOHUGEPAGE);
  int64_t t0 = now_ns();
  for (size_t off = 0; off < size; off += PAGE_SIZE_BYTES)
    ((volatile char *)mem)[off] = 1;
  int64_t t1 = now_ns();
  munmap(mem, size);
  return (t1 - t0) / (int64_t)(size / PAGE_SIZE_BYTES);
}

typedef struct growth_summary {
  size_t target;
  growth_trial trials[GROWTH_TRIALS];
  goro_memstats ms_before, ms_parked, ms_after_gc;
} growth_summary;

/*
 * Runs the trials of one target. goro learns a parked goroutine's exact
 * span in a shrink cycle, so memstats is read before and after one
 * goro_gc() while the trials are parked. goro_free_os_memory() first
 * releases the slots of earlier trials, so each trial starts cold.
 */
static void run_growth_trials(growth_summary *s) {
  goro_free_os_memory();
  goro_chan_make(&trial_done, 0, 0);
  goro_chan_make(&trial_release, 0, 0);
  read_memstats(&s->ms_before);

  for (int i = 0; i < GROWTH_TRIALS; i++) {
    s->trials[i].depth = depth_for_stack(s->target);
    goro_spawn(growth_trial_main, &s->trials[i]);
    goro_chan_recv(trial_done, NULL);
  }
  /* The last trial may still be on its way from the send to its park, and a
   * shrink cycle skips goroutines that are not parked. */
  goro_sleep(2 * 1000 * 1000);
  read_memstats(&s->ms_parked);
  goro_gc();
  read_memstats(&s->ms_after_gc);

  goro_chan_close(trial_release);
  wait_goroutines(s->ms_before.goroutines);
  goro_chan_free(trial_done);
  goro_chan_free(trial_release);
}

static double inuse_per_trial(const growth_summary *s, const goro_memstats *after) {
  return (double)((int64_t)after->stack_inuse - (int64_t)s->ms_before.stack_inuse) /
         GROWTH_TRIALS;
}

static void print_growth(growth_summary *sums, int nsums, int64_t fault_ns) {
  table *sizes = table_new();
  table *times = table_new();

  table_row(sizes, "target stack|depth|resident (mincore) before -> after|"
                   "stack_info current/peak after call|after goro_gc()|"
                   "stack_inuse per trial, parked -> after goro_gc()");
  table_row(times, "target stack|1st call us|2nd call us|growth us (1st - 2nd)|"
                   "pages faulted|us per page|Go 1.19.8 growth us, cold / warm");
  for (int k = 0; k < nsums; k++) {
    growth_summary *s = &sums[k];
    int64_t first[GROWTH_TRIALS], second[GROWTH_TRIALS], growth[GROWTH_TRIALS];
    int64_t before[GROWTH_TRIALS], after[GROWTH_TRIALS], pages[GROWTH_TRIALS];
    int64_t current[GROWTH_TRIALS], peak[GROWTH_TRIALS];
    int64_t current_gc[GROWTH_TRIALS], peak_gc[GROWTH_TRIALS];

    for (int i = 0; i < GROWTH_TRIALS; i++) {
      growth_trial *tr = &s->trials[i];
      first[i] = tr->first_ns;
      second[i] = tr->second_ns;
      growth[i] = tr->first_ns - tr->second_ns;
      before[i] = (int64_t)tr->resident_before;
      after[i] = (int64_t)tr->resident_after_first;
      pages[i] = (int64_t)(tr->resident_after_first - tr->resident_before) / PAGE_SIZE_BYTES;
      current[i] = (int64_t)tr->info_after_first.current;
      peak[i] = (int64_t)tr->info_after_first.peak;
      current_gc[i] = (int64_t)tr->info_after_gc.current;
      peak_gc[i] = (int64_t)tr->info_after_gc.peak;
    }
    int64_t pages_median = median(pages, GROWTH_TRIALS);
    int64_t growth_median = median(growth, GROWTH_TRIALS);

    table_row(sizes, "%.0f KiB|%d|%.1f -> %.1f KiB|%.1f / %.1f KiB|%.1f / %.1f KiB|%.1f -> %.1f KiB",
              s->target / KIB, s->trials[0].depth, median(before, GROWTH_TRIALS) / KIB,
              median(after, GROWTH_TRIALS) / KIB, median(current, GROWTH_TRIALS) / KIB,
              median(peak, GROWTH_TRIALS) / KIB, median(current_gc, GROWTH_TRIALS) / KIB,
              median(peak_gc, GROWTH_TRIALS) / KIB, inuse_per_trial(s, &s->ms_parked) / KIB,
              inuse_per_trial(s, &s->ms_after_gc) / KIB);
    table_row(times, "%.0f KiB|%.1f|%.1f|%.1f|%" PRId64 "|%.2f|%s", s->target / KIB,
              median(first, GROWTH_TRIALS) / 1e3, median(second, GROWTH_TRIALS) / 1e3,
              growth_median / 1e3, pages_median,
              pages_median ? growth_median / 1e3 / (double)pages_median : 0.0,
              s->target == 64 * 1024 ? "113 / 25" : "-");
  }
  printf("Stack size, median of %d trials (resident bytes counted with mincore):\n\n",
         GROWTH_TRIALS);
  table_print(sizes);
  printf("goro learns a stack's size from the stack pointers it observes: when the\n"
         "goroutine parks or asks for its stack_info, and exactly (mincore) in a shrink\n"
         "cycle. A deep call that has returned is counted at the next cycle.\n\n");
  printf("Time, median of %d trials:\n\n", GROWTH_TRIALS);
  table_print(times);
  printf("Touching a fresh page of an ordinary anonymous mapping costs %.2f us here\n"
         "(measured now over 16 MiB): growth costs about that per page, the page fault\n"
         "and nothing else. Go 1.19.8 (recorded) grows 2 KiB -> 64 KiB by five copies:\n"
         "113 us cold, and still 25 us when the memory is already resident.\n",
         fault_ns / 1e3);
  fflush(stdout);
}

static void section_growth(void) {
  growth_summary sums[2] = {{.target = 64 * 1024}, {.target = 200 * 1024}};

  section_title("(b) One goroutine grows its stack by recursion");
  printf("Each trial spawns a goroutine that calls a recursive function with a 512-byte\n"
         "local array per frame down to the target stack size, then makes the same call\n"
         "again. The first call touches new stack pages, which the kernel commits on\n"
         "first touch; the second runs on pages already committed. The difference is\n"
         "the cost of growth: no copy, no pointer fix-up, the stack never moves.\n"
         "Trial goroutines of one target stay parked until all of them are done, and\n"
         "goro_free_os_memory() runs between targets, so every trial starts on a\n"
         "slot with no resident stack pages below its top.\n\n");
  fflush(stdout);

  calibrate_frames();
  printf("recurse() takes %zu bytes of stack per level (measured now).\n\n",
         calibration.per_level);
  for (int k = 0; k < 2; k++)
    run_growth_trials(&sums[k]);
  int64_t fault_ns = page_fault_ns();
  print_growth(sums, 2, fault_ns);
}

/* ---- (c) Deep and shallow tasks with shrink cycles ------------------- */

#define THRASH_WARMUP_ROUNDS 5
#define THRASH_ROUNDS 200
#define THRASH_SHALLOW_PER_DEEP 10
#define THRASH_SHALLOW_DEPTH 4
#define THRASH_IDLE_CYCLES 96

enum task_kind { TASK_SHALLOW, TASK_DEEP, TASK_REPORT, TASK_STOP };

typedef struct task_result {
  int64_t ns;
  size_t resident_before, resident_after;
  goro_stack_info info;
} task_result;

typedef struct worker_channels {
  goro_chan *tasks;   /* enum task_kind, main -> worker */
  goro_chan *results; /* task_result, worker -> main */
  int deep_depth;
} worker_channels;

/* Runs tasks until TASK_STOP. Only the recursion is timed. The mincore
 * counts around it show whether the task grew the stack. */
static void thrash_worker(void *arg) {
  worker_channels *ch = arg;
  int kind;
  uintptr_t deepest;

  while (goro_chan_recv(ch->tasks, &kind) == 0 && kind != TASK_STOP) {
    task_result r = {0};
    r.resident_before = stack_resident_bytes();
    if (kind != TASK_REPORT) {
      int depth = kind == TASK_DEEP ? ch->deep_depth : THRASH_SHALLOW_DEPTH;
      int64_t t0 = now_ns();
      recurse_sink += recurse(depth, &deepest);
      r.ns = now_ns() - t0;
    }
    r.resident_after = stack_resident_bytes();
    goro_stack_info_self(&r.info);
    goro_chan_send(ch->results, &r);
  }
}

typedef struct policy_run {
  const char *name;
  goro_stack_policy policy;
  int64_t deep_ns[THRASH_ROUNDS];
  int64_t shallow_ns[THRASH_ROUNDS * THRASH_SHALLOW_PER_DEEP];
  int deep_grew;           /* deep tasks that faulted in new stack pages */
  int64_t deep_pages;      /* pages faulted in by deep tasks, total */
  int shrinks_seen;        /* task starts that found fewer resident pages */
  uint64_t info_growths, info_shrinks;
  size_t idle_resident;    /* worker stack after the idle cycles, mincore */
  size_t idle_current;     /* the same, from goro_stack_info_self */
  int64_t idle_rss;        /* VmRSS after the idle cycles */
  int err;
} policy_run;

static task_result run_task(worker_channels *ch, int kind) {
  task_result r;

  goro_chan_send(ch->tasks, &kind);
  goro_chan_recv(ch->results, &r);
  return r;
}

/* Runs one task and then one shrink cycle, and records what the stack did
 * between the previous task and the end of this one. */
static task_result run_task_then_gc(worker_channels *ch, int kind, policy_run *run,
                                    size_t *last_resident) {
  task_result r = run_task(ch, kind);

  if (run && r.resident_before < *last_resident)
    run->shrinks_seen++;
  *last_resident = r.resident_after;

  /* A shrink cycle skips goroutines that are not parked, and the worker is
   * still on its way from the send of its result to its next receive. The
   * sleep lets it park first. */
  goro_sleep(20 * 1000);
  goro_gc();
  return r;
}

static void run_policy(policy_run *run) {
  worker_channels ch = {.deep_depth = depth_for_stack((size_t)config.deep_kib << 10)};
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = (size_t)1 << 20};
  size_t last_resident = 0;
  goro_memstats ms;

  if (((size_t)config.deep_kib << 10) + (64 << 10) > opts.max_stack)
    opts.max_stack = ((size_t)config.deep_kib << 10) * 2;
  goro_free_os_memory();
  if ((run->err = goro_set_stack_policy(&run->policy)) != 0)
    return;
  read_memstats(&ms);
  goro_chan_make(&ch.tasks, sizeof(int), 0);
  goro_chan_make(&ch.results, sizeof(task_result), 0);
  int64_t id = goro_spawn_with(thrash_worker, &ch, &opts);
  if (id < 0) {
    run->err = (int)id;
    return;
  }

  for (int i = 0; i < THRASH_WARMUP_ROUNDS; i++) {
    run_task_then_gc(&ch, TASK_DEEP, NULL, &last_resident);
    for (int j = 0; j < THRASH_SHALLOW_PER_DEEP; j++)
      run_task_then_gc(&ch, TASK_SHALLOW, NULL, &last_resident);
  }

  goro_stack_info start = run_task(&ch, TASK_REPORT).info;
  task_result r = {0};
  for (int i = 0; i < THRASH_ROUNDS; i++) {
    r = run_task_then_gc(&ch, TASK_DEEP, run, &last_resident);
    run->deep_ns[i] = r.ns;
    if (r.resident_after > r.resident_before) {
      run->deep_grew++;
      run->deep_pages += (int64_t)(r.resident_after - r.resident_before) / PAGE_SIZE_BYTES;
    }
    for (int j = 0; j < THRASH_SHALLOW_PER_DEEP; j++) {
      r = run_task_then_gc(&ch, TASK_SHALLOW, run, &last_resident);
      run->shallow_ns[i * THRASH_SHALLOW_PER_DEEP + j] = r.ns;
    }
  }
  run->info_growths = r.info.growths - start.growths;
  run->info_shrinks = r.info.shrinks - start.shrinks;

  for (int i = 0; i < THRASH_IDLE_CYCLES; i++)
    goro_gc();
  r = run_task(&ch, TASK_REPORT);
  run->idle_resident = r.resident_before;
  run->idle_current = r.info.current;
  run->idle_rss = proc_kib_field("/proc/self/status", "VmRSS");

  int stop = TASK_STOP;
  goro_chan_send(ch.tasks, &stop);
  wait_goroutines(ms.goroutines);
  goro_chan_free(ch.tasks);
  goro_chan_free(ch.results);
}

static void print_policies(policy_run *runs, int nruns) {
  table *lat = table_new();
  table *mem = table_new();
  const int nshallow = THRASH_ROUNDS * THRASH_SHALLOW_PER_DEEP;

  table_row(lat, "shrink policy|deep p50 us|deep p99 us|deep max us|shallow p50 us|"
                 "shallow p99 us|shallow max us");
  table_row(mem, "shrink policy|deep tasks that grew|pages faulted per deep task|"
                 "shrinks seen per round|stack_info growths / shrinks|"
                 "worker stack after idle|VmRSS after idle");
  for (int k = 0; k < nruns; k++) {
    policy_run *run = &runs[k];
    if (run->err) {
      table_row(lat, "%s|failed: %s", run->name, goro_strerror(run->err));
      continue;
    }
    qsort(run->deep_ns, THRASH_ROUNDS, sizeof(int64_t), compare_i64);
    qsort(run->shallow_ns, (size_t)nshallow, sizeof(int64_t), compare_i64);
    table_row(lat, "%s|%.1f|%.1f|%.1f|%.2f|%.2f|%.2f", run->name,
              quantile(run->deep_ns, THRASH_ROUNDS, 0.50) / 1e3,
              quantile(run->deep_ns, THRASH_ROUNDS, 0.99) / 1e3,
              run->deep_ns[THRASH_ROUNDS - 1] / 1e3,
              quantile(run->shallow_ns, (size_t)nshallow, 0.50) / 1e3,
              quantile(run->shallow_ns, (size_t)nshallow, 0.99) / 1e3,
              run->shallow_ns[nshallow - 1] / 1e3);
    table_row(mem, "%s|%d%%|%.1f|%.2f|%" PRIu64 " / %" PRIu64 "|%.0f KiB (info %.0f)|%.1f MiB",
              run->name, run->deep_grew * 100 / THRASH_ROUNDS,
              (double)run->deep_pages / THRASH_ROUNDS,
              (double)run->shrinks_seen / THRASH_ROUNDS, run->info_growths, run->info_shrinks,
              run->idle_resident / KIB, run->idle_current / KIB, run->idle_rss / MIB);
  }
  printf("Latency of one task, timed inside the worker around the recursion only:\n\n");
  table_print(lat);
  printf("What the worker's stack did (resident pages counted with mincore before and\n"
         "after each task):\n\n");
  table_print(mem);

  table *go = table_new();
  table_row(go, "Go 1.19.8 (recorded)|deep p50 us|deep p99 us|deep max us|growths per deep task");
  table_row(go, "runtime.GC() after every task, shrinking on|2,245|3,562|3,701|8");
  table_row(go, "runtime.GC() after every task, gcshrinkstackoff=1|168|355|364|0");
  table_row(go, "natural GC, shrinking on|410|2,394|4,436|0.77");
  table_row(go, "natural GC, gcshrinkstackoff=1|61.1|322|944|0");
  printf("Go 1.19.8 on the same workload shape (768 KiB deep tasks, 10 shallow per deep),\n"
         "recorded on a 2-vCPU Linux 6.18 VM, not measured by this run:\n\n");
  table_print(go);
}

static void section_thrash(void) {
  goro_stack_policy defaults = {.size = sizeof defaults};
  policy_run *runs = calloc(3, sizeof *runs);
  int err;

  section_title("(c) Deep and shallow tasks with a shrink cycle after every task");
  if (!runs)
    return;
  calibrate_frames();
  if ((err = goro_get_stack_policy(&defaults)) != 0) {
    printf("goro_get_stack_policy failed: %s\n", goro_strerror(err));
    free(runs);
    return;
  }
  printf("One long-lived worker goroutine receives tasks over a channel: a deep task\n"
         "recurses until it uses %ld KiB of stack, a shallow task recurses 4 levels, and\n"
         "each deep task is followed by %d shallow ones. The main goroutine runs\n"
         "goro_gc() after every task, as Go's anchor runs runtime.GC(). %d rounds after\n"
         "%d warm-up rounds, then %d more shrink cycles with the worker idle. Automatic\n"
         "cycles are off (gc_period_ns = 0) so that only these cycles run.\n"
         "Shrinking off keeps every page. Go's rule (hysteresis 0) gives back the lower\n"
         "half of a parked stack whose used part is under a quarter of it, at every\n"
         "cycle, as Go's GC does. goro's default also keeps a stack that grew within\n"
         "its last `hysteresis` cycles; here: shrink %s, hysteresis %" PRIu32 " cycles, %s.\n\n",
         config.deep_kib, THRASH_SHALLOW_PER_DEEP, THRASH_ROUNDS, THRASH_WARMUP_ROUNDS,
         THRASH_IDLE_CYCLES, defaults.shrink ? "on" : "off", defaults.hysteresis,
         defaults.madv_free ? "MADV_FREE" : "MADV_DONTNEED");
  fflush(stdout);

  runs[0].name = "shrinking off";
  runs[0].policy = defaults;
  runs[0].policy.shrink = false;
  runs[1].name = "Go's rule (hysteresis 0)";
  runs[1].policy = defaults;
  runs[1].policy.shrink = true;
  runs[1].policy.hysteresis = 0;
  runs[2].name = "goro default";
  runs[2].policy = defaults;
  for (int k = 0; k < 3; k++) {
    runs[k].policy.gc_period_ns = 0;
    run_policy(&runs[k]);
  }
  goro_set_stack_policy(&defaults);
  print_policies(runs, 3);
  free(runs);
}

/* ---- Main ------------------------------------------------------------- */

static int header_main(void *arg) {
  struct utsname u;
  goro_memstats ms;

  (void)arg;
  read_memstats(&ms);
  uname(&u);
  printf("goro %d.%d demo: %s %s, %" PRIu64 " workers (GOROMAXPROCS), max stack %" PRIu64
         " KiB\n",
         GORO_VERSION_MAJOR, GORO_VERSION_MINOR, u.sysname, u.release, ms.maxprocs,
         ms.max_stack / 1024);
  return 0;
}

typedef struct section {
  char letter;
  void (*run)(void);
} section;

static const section all_sections[] = {
    {'a', section_parked},
    {'b', section_growth},
    {'c', section_thrash},
};

static int section_main(void *arg) {
  const section *sec = arg;

  sec->run();
  return 0;
}

/*
 * Runs one section in a child process, so that no section inherits another
 * one's stack slots, caches or RSS. fork() is safe here because goro_run
 * has returned and joined its threads. Returns the child's peak RSS in
 * bytes, or -1.
 */
static int64_t run_section_process(const section *sec) {
  struct rusage usage;
  int status;

  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("demo: fork failed");
    return -1;
  }
  if (pid == 0) {
    int err = goro_run(section_main, (void *)sec);
    if (err < 0)
      fprintf(stderr, "demo: goro_run failed in section (%c): %s\n", sec->letter,
              goro_strerror(err));
    fflush(stdout);
    exit(err < 0 ? 1 : err);
  }
  if (wait4(pid, &status, 0, &usage) < 0) {
    perror("demo: wait4 failed");
    return -1;
  }
  if (WIFSIGNALED(status))
    printf("section (%c) was killed by signal %d\n", sec->letter, WTERMSIG(status));
  else if (WEXITSTATUS(status) != 0)
    printf("section (%c) failed with exit status %d\n", sec->letter, WEXITSTATUS(status));
  return (int64_t)usage.ru_maxrss * 1024;
}

static double read_load_average(void) {
  FILE *f = fopen("/proc/loadavg", "r");
  double load = 0;

  if (!f)
    return 0;
  if (fscanf(f, "%lf", &load) != 1)
    load = 0;
  fclose(f);
  return load;
}

static void usage(FILE *out, const char *argv0) {
  fprintf(out,
          "usage: %s [-n goroutines] [-s sections] [-d deep_kib]\n"
          "  -n N   goroutines per round in section (a) (default 1000000)\n"
          "  -s S   sections to run, any of a, b, c (default abc)\n"
          "  -d K   KiB of stack a deep task uses in section (c) (default 768, from 16 to 8192)\n",
          argv0);
}

int main(int argc, char **argv) {
  int opt;

  while ((opt = getopt(argc, argv, "n:s:d:h")) != -1) {
    switch (opt) {
    case 'n':
      config.goroutines = atol(optarg);
      break;
    case 's':
      config.sections = optarg;
      break;
    case 'd':
      config.deep_kib = atol(optarg);
      break;
    case 'h':
      usage(stdout, argv[0]);
      return 0;
    default:
      usage(stderr, argv[0]);
      return 2;
    }
  }
  if (config.goroutines < 1) {
    fprintf(stderr, "demo: invalid -n %ld: give at least 1 goroutine\n", config.goroutines);
    return 2;
  }
  if (config.deep_kib < 16 || config.deep_kib > 8192) {
    fprintf(stderr, "demo: invalid -d %ld: give 16 to 8192 KiB\n", config.deep_kib);
    return 2;
  }
  if (strspn(config.sections, "abc") != strlen(config.sections)) {
    fprintf(stderr, "demo: invalid -s \"%s\": use the letters a, b and c\n", config.sections);
    return 2;
  }

  int64_t t0 = now_ns();
  double load = read_load_average();
  cpu_times cpu0, cpu1;
  int64_t peak_rss = 0;

  read_cpu_times(&cpu0);
  int err = goro_run(header_main, NULL);
  if (err < 0) {
    fprintf(stderr, "demo: goro_run failed: %s\n", goro_strerror(err));
    return 1;
  }
  for (size_t i = 0; i < sizeof all_sections / sizeof all_sections[0]; i++) {
    if (!strchr(config.sections, all_sections[i].letter))
      continue;
    int64_t rss = run_section_process(&all_sections[i]);
    if (rss > peak_rss)
      peak_rss = rss;
  }
  read_cpu_times(&cpu1);

  printf("\ndemo finished in %.1f s; largest peak RSS of a section %.1f MiB\n",
         (now_ns() - t0) / 1e9, peak_rss / MIB);
  printf("load average at start %.2f; CPU time stolen by the hypervisor during the run %.1f%%\n"
         "(other load and stolen time slow every timing above)\n",
         load,
         cpu1.total > cpu0.total
             ? 100.0 * (double)(cpu1.steal - cpu0.steal) / (double)(cpu1.total - cpu0.total)
             : 0.0);
  return 0;
}
