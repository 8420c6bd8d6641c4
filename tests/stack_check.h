/*
 * stack_check.h: helpers for the stack and overflow tests.
 *
 * - parse_overflow_report() reads goro's fatal stack overflow report, and
 *   check_overflow_child() asserts its whole shape on a child's output.
 * - Canaries: a goroutine fills a buffer on its own stack with a pattern
 *   derived from a seed and announces it on stderr ("canary addr=... len=...
 *   seed=..."). run_child_postmortem() runs a CHILD under ptrace and checks
 *   every announced canary in the child's memory at the moment it exits,
 *   after a fatal report, when nothing in the child can check anything.
 * - guard_installed() reports whether a page is a guard, without touching it.
 *
 * Every function is static inline so that each test file takes what it uses.
 */
#ifndef GORO_TEST_STACK_CHECK_H
#define GORO_TEST_STACK_CHECK_H

#include "harness.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/ptrace.h>

/* Bytes below each slot's usable stack that are guard (GORO__GUARD_SIZE in
 * src/stack.h; tests see only the public header, so it is repeated here). */
#define GUARD_BYTES ((uintptr_t)32 << 10)
#define PAGE_BYTES ((uintptr_t)4096)

/* ---- The fatal report ------------------------------------------------- */

typedef struct overflow_report {
  int found;            /* both report lines were parsed */
  long long id;         /* "goro: goroutine N stack exceeds ..." */
  unsigned long long limit;
  uintptr_t addr, sp, lo, hi;
  long long trace_id;   /* "goroutine N [running]:", -1 if absent */
  int fatal_lines;      /* occurrences of "fatal error: stack overflow" */
} overflow_report;

static inline int count_occurrences(const char *haystack, const char *needle) {
  int n = 0;

  for (const char *at = strstr(haystack, needle); at; at = strstr(at + 1, needle))
    n++;
  return n;
}

static inline overflow_report parse_overflow_report(const char *err) {
  overflow_report r;
  const char *at = strstr(err, "goro: goroutine ");
  unsigned long addr = 0, sp = 0, lo = 0, hi = 0;

  memset(&r, 0, sizeof r);
  r.trace_id = -1;
  r.fatal_lines = count_occurrences(err, "fatal error: stack overflow");
  if (at && sscanf(at, "goro: goroutine %lld stack exceeds %llu-byte limit goro: fault addr=%lx "
                       "sp=%lx stack=[%lx, %lx]",
                   &r.id, &r.limit, &addr, &sp, &lo, &hi) == 6)
    r.found = 1;
  r.addr = addr;
  r.sp = sp;
  r.lo = lo;
  r.hi = hi;

  const char *trace = strstr(err, "\n\ngoroutine ");
  if (trace && sscanf(trace, "\n\ngoroutine %lld [running]:", &r.trace_id) != 1)
    r.trace_id = -1;
  return r;
}

/* What a child announces about the goroutine that is about to overflow. */
typedef struct overflow_victim {
  int found;
  long long id;
  uintptr_t lo, hi;
} overflow_victim;

static inline void announce_victim(void) {
  uintptr_t lo = 0, hi = 0;

  if (goro_stack_bounds(&lo, &hi) != 0)
    FAIL("goro_stack_bounds failed in the goroutine about to overflow");
  fprintf(stderr, "victim id=%lld lo=%#lx hi=%#lx\n", (long long)goro_id(), (unsigned long)lo,
          (unsigned long)hi);
}

static inline overflow_victim parse_victim(const char *err) {
  overflow_victim v;
  const char *at = strstr(err, "victim id=");
  unsigned long lo = 0, hi = 0;

  memset(&v, 0, sizeof v);
  if (at && sscanf(at, "victim id=%lld lo=%lx hi=%lx", &v.id, &lo, &hi) == 3)
    v.found = 1;
  v.lo = lo;
  v.hi = hi;
  return v;
}

/*
 * Asserts that a child ended in goro's stack overflow report for a stack of
 * limit bytes. The child must exit with status 2 (not die by a signal) after
 * one "fatal error" line. The report must name the goroutine id and stack
 * bounds the child announced with announce_victim(), a fault address inside
 * the guard below the stack and an sp next to it.
 */
static inline overflow_report check_overflow_child(const child_result *res, size_t limit) {
  overflow_report r = parse_overflow_report(res->err);
  overflow_victim v = parse_victim(res->err);

  if (!res->exited)
    FAIL("child was killed by signal %d (%s) instead of exiting with status 2; stderr:\n%s",
         res->status, strsignal(res->status), res->err);
  if (res->status != 2)
    FAIL("child exited with status %d, expected 2; stderr:\n%s", res->status, res->err);
  if (!r.found)
    FAIL("no stack overflow report in the child's stderr:\n%s", res->err);
  if (r.fatal_lines != 1)
    FAIL("\"fatal error: stack overflow\" appears %d times, expected once; stderr:\n%s",
         r.fatal_lines, res->err);
  if (r.limit != limit)
    FAIL("report names a %llu-byte limit, expected %zu; stderr:\n%s", r.limit, limit, res->err);
  if (r.hi - r.lo != limit)
    FAIL("report's stack=[%#lx, %#lx] spans %lu bytes, expected the %zu-byte limit",
         (unsigned long)r.lo, (unsigned long)r.hi, (unsigned long)(r.hi - r.lo), limit);
  if (!(r.addr < r.lo && r.addr >= r.lo - GUARD_BYTES))
    FAIL("fault addr %#lx is not in the guard [%#lx, %#lx) below the stack", (unsigned long)r.addr,
         (unsigned long)(r.lo - GUARD_BYTES), (unsigned long)r.lo);

  /* The faulting access is a push or call just below sp, a probe at sp, or
   * a store into a frame that sp has just moved below the stack. gcc probes
   * only frames of 4 KiB and more, so a smaller frame can be unprobed. */
  long long sp_gap = (long long)r.sp - (long long)r.addr;
  if (sp_gap < -4096 || sp_gap > 4096 + 128)
    FAIL("sp %#lx is %lld bytes from the fault addr %#lx", (unsigned long)r.sp, sp_gap,
         (unsigned long)r.addr);

  if (r.trace_id != r.id)
    FAIL("backtrace heading names goroutine %lld, report line names %lld; stderr:\n%s", r.trace_id,
         r.id, res->err);
  if (v.found) {
    if (r.id != v.id)
      FAIL("report names goroutine %lld, the overflowing goroutine's goro_id() was %lld", r.id,
           v.id);
    if (r.lo != v.lo || r.hi != v.hi)
      FAIL("report says stack=[%#lx, %#lx], goro_stack_bounds returned [%#lx, %#lx)",
           (unsigned long)r.lo, (unsigned long)r.hi, (unsigned long)v.lo, (unsigned long)v.hi);
  }
  return r;
}

/* ---- Canaries --------------------------------------------------------- */

static inline uint8_t canary_byte(uint32_t seed, size_t i) {
  uint32_t x = seed * 2654435761u + (uint32_t)i * 40503u;
  return (uint8_t)((x >> 24) ^ (x >> 7));
}

static inline void canary_fill(volatile uint8_t *buf, size_t len, uint32_t seed) {
  for (size_t i = 0; i < len; i++)
    buf[i] = canary_byte(seed, i);
}

/* Returns how many bytes differ from the pattern; *first gets the offset of
 * the first one (len if none). */
static inline size_t canary_damage(const volatile uint8_t *buf, size_t len, uint32_t seed,
                                   size_t *first) {
  size_t bad = 0;

  *first = len;
  for (size_t i = 0; i < len; i++) {
    if (buf[i] == canary_byte(seed, i))
      continue;
    if (bad++ == 0)
      *first = i;
  }
  return bad;
}

static inline void canary_announce(const volatile uint8_t *buf, size_t len, uint32_t seed) {
  fprintf(stderr, "canary addr=%#lx len=%zu seed=%u\n", (unsigned long)(uintptr_t)buf, len, seed);
}

typedef struct postmortem {
  int canaries;         /* canaries announced and read back */
  int broken;           /* of those, how many differ from their pattern */
  uintptr_t first_bad;  /* address of the first differing byte, 0 if none */
  int read_errors;      /* canaries whose memory could not be read */
} postmortem;

/* Reads every canary announced in text from the address space open as
 * memfd (a /proc/PID/mem descriptor) and records what differs. */
static inline void postmortem_check(int memfd, const char *text, postmortem *pm) {
  for (const char *at = strstr(text, "canary addr="); at; at = strstr(at + 1, "canary addr=")) {
    unsigned long addr;
    size_t len;
    unsigned seed;
    if (sscanf(at, "canary addr=%lx len=%zu seed=%u", &addr, &len, &seed) != 3)
      continue;
    uint8_t *copy = malloc(len);
    if (!copy)
      FAIL("out of memory reading a %zu-byte canary", len);
    if (pread(memfd, copy, len, (off_t)addr) != (ssize_t)len) {
      pm->read_errors++;
      free(copy);
      continue;
    }
    size_t first;
    pm->canaries++;
    if (canary_damage(copy, len, seed, &first)) {
      if (pm->broken++ == 0)
        pm->first_bad = addr + first;
    }
    free(copy);
  }
}

/*
 * Runs CHILD(name) like run_child(), traced with PTRACE_O_TRACEEXIT. When
 * the child's main thread stops on its way out (whichever thread called
 * _exit, the address space still exists then), the canaries the child has
 * announced so far are read from /proc/PID/mem and compared with their
 * patterns. Signals the child receives are passed on unchanged, so goro's
 * SIGSEGV handler receives the overflow exactly as it would untraced.
 */
static inline void run_child_postmortem(const char *name, child_result *out, postmortem *pm) {
  int errfd = memfd_create("child-stderr", 0);

  memset(out, 0, sizeof *out);
  memset(pm, 0, sizeof *pm);
  if (errfd < 0)
    FAIL("memfd_create: %s", strerror(errno));
  pid_t pid = fork();
  if (pid < 0)
    FAIL("fork: %s", strerror(errno));
  if (pid == 0) {
    dup2(errfd, STDERR_FILENO);
    if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) != 0)
      _exit(126);
    execl(harness_self, harness_self, name, (char *)NULL);
    _exit(127);
  }

  /* The exec stops the child with SIGTRAP before it runs anything. */
  int status;
  if (waitpid(pid, &status, 0) != pid)
    FAIL("waitpid on traced child %s: %s", name, strerror(errno));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 126)
    FAIL("PTRACE_TRACEME failed in child %s: this system does not permit ptrace (Yama "
         "ptrace_scope 3 or a seccomp filter), which the post-mortem canary check needs",
         name);
  if (!WIFSTOPPED(status) || WSTOPSIG(status) != SIGTRAP)
    FAIL("traced child %s did not stop at exec (wait status %#x)", name, status);
  if (ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(long)(PTRACE_O_TRACEEXIT | PTRACE_O_EXITKILL)))
    FAIL("PTRACE_SETOPTIONS: %s", strerror(errno));
  ptrace(PTRACE_CONT, pid, NULL, NULL);

  int exit_stops = 0;
  for (;;) {
    if (waitpid(pid, &status, 0) != pid)
      FAIL("waitpid on traced child %s: %s", name, strerror(errno));
    if (WIFEXITED(status) || WIFSIGNALED(status))
      break;
    if ((status >> 8) == (SIGTRAP | (PTRACE_EVENT_EXIT << 8))) {
      char path[64], text[sizeof out->err];
      snprintf(path, sizeof path, "/proc/%d/mem", (int)pid);
      int memfd = open(path, O_RDONLY);
      if (memfd < 0)
        FAIL("open %s at the child's exit: %s", path, strerror(errno));
      ssize_t n = pread(errfd, text, sizeof text - 1, 0);
      text[n > 0 ? n : 0] = '\0';
      postmortem_check(memfd, text, pm);
      close(memfd);
      exit_stops++;
      ptrace(PTRACE_CONT, pid, NULL, NULL);
      continue;
    }
    /* A signal-delivery stop: deliver the signal as if untraced. */
    ptrace(PTRACE_CONT, pid, NULL, (void *)(long)WSTOPSIG(status));
  }
  if (exit_stops != 1)
    FAIL("traced child %s stopped %d times at exit, expected once", name, exit_stops);

  out->exited = WIFEXITED(status);
  out->status = WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status);
  ssize_t n = pread(errfd, out->err, sizeof out->err - 1, 0);
  out->err[n > 0 ? n : 0] = '\0';
  close(errfd);
}

/* ---- Guards ----------------------------------------------------------- */

/*
 * Returns 1 when the page at addr is a guard: a MADV_GUARD_INSTALL marker
 * (bit 58 of its /proc/self/pagemap entry, which the kernel reports since
 * commit 8e2f2aeb8b48 "fs/proc/task_mmu: add guard region bit to pagemap")
 * or a PROT_NONE mapping (the mprotect fallback). Returns 0 otherwise and -1
 * when neither source can be read.
 */
static inline int guard_installed(int pagemap_fd, uintptr_t addr) {
  uint64_t entry = 0;

  if (pagemap_fd >= 0 &&
      pread(pagemap_fd, &entry, sizeof entry, (off_t)(addr / PAGE_BYTES * sizeof entry)) ==
          (ssize_t)sizeof entry &&
      (entry >> 58) & 1)
    return 1;

  FILE *maps = fopen("/proc/self/maps", "r");
  char line[512];
  int found = pagemap_fd >= 0 ? 0 : -1;
  if (!maps)
    return found;
  while (fgets(line, sizeof line, maps)) {
    unsigned long start, end;
    char perms[5];
    if (sscanf(line, "%lx-%lx %4s", &start, &end, perms) != 3)
      continue;
    if (addr >= start && addr < end) {
      found = strcmp(perms, "---p") == 0;
      break;
    }
  }
  fclose(maps);
  return found;
}

/* Counts the lines of /proc/self/maps: the process's memory mappings. */
static inline long count_mappings(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  long lines = 0;
  int ch;

  if (!f)
    FAIL("open /proc/self/maps: %s", strerror(errno));
  while ((ch = getc(f)) != EOF)
    if (ch == '\n')
      lines++;
  fclose(f);
  return lines;
}

/* Counts the memory mappings that overlap [lo, hi). Unlike count_mappings,
 * it leaves out mappings elsewhere in the process, such as the four that
 * TSan makes for each fiber (one fiber per goroutine). */
static inline long count_mappings_in(uintptr_t lo, uintptr_t hi) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[512];
  long overlapping = 0;

  if (!f)
    FAIL("open /proc/self/maps: %s", strerror(errno));
  while (fgets(line, sizeof line, f)) {
    unsigned long start, end;
    if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start < hi && end > lo)
      overlapping++;
  }
  fclose(f);
  return overlapping;
}

#endif
