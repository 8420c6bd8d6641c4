/*
 * fatal.c: the SIGSEGV/SIGBUS handler, the stack overflow report and
 * goro__throw for broken runtime invariants.
 *
 * A goroutine that runs past its stack touches the guard region below its
 * slot and the kernel raises SIGSEGV. The handler runs on the thread's
 * alternate signal stack, because the faulting stack has no room left for a
 * signal frame (about 3 KiB on x86-64 with AVX state). If the fault address
 * lies in a guard, the handler prints the report and exits with status 2,
 * the shape of Go's "fatal error: stack overflow":
 *
 *   goro: goroutine 7 stack exceeds 262144-byte limit
 *   goro: fault addr=0x... sp=0x... stack=[0x..., 0x...]
 *   fatal error: stack overflow
 *
 *   goroutine 7 [running]:
 *   ...backtrace...
 *
 * Any other fault is passed on to the handler that was installed before
 * goro's, or to the default action.
 *
 * Everything reached from the handler is async-signal-safe: it formats with
 * its own integer printers and writes with write(2). backtrace() is called
 * once in goro__fatal_init, because its first call loads libgcc_s with
 * malloc and dlopen, which are not safe in a handler.
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include "sched.h"

#define ALTSTACK_SIZE ((size_t)64 << 10)
#define MAX_FRAMES 64

static struct sigaction previous_segv, previous_bus;
static bool handlers_installed;

/* A small buffer writer for the report; never allocates. */
typedef struct report {
  char buf[512];
  size_t len;
} report;

static void put_str(report *r, const char *s) {
  while (*s && r->len < sizeof r->buf)
    r->buf[r->len++] = *s++;
}

static void put_dec(report *r, uint64_t v) {
  char tmp[24];
  int n = 0;

  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n > 0 && r->len < sizeof r->buf)
    r->buf[r->len++] = tmp[--n];
}

static void put_hex(report *r, uint64_t v) {
  char tmp[16];
  int n = 0;

  put_str(r, "0x");
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  while (n > 0 && r->len < sizeof r->buf)
    r->buf[r->len++] = tmp[--n];
}

static void flush(report *r) {
  size_t off = 0;

  while (off < r->len) {
    ssize_t n = write(STDERR_FILENO, r->buf + off, r->len - off);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  r->len = 0;
}

static uintptr_t context_pc(void *uctx) {
#if defined(__x86_64__)
  return (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
  return (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.pc;
#else
  (void)uctx;
  return 0;
#endif
}

static uintptr_t context_sp(void *uctx) {
#if defined(__x86_64__)
  return (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
  return (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.sp;
#else
  (void)uctx;
  return 0;
#endif
}

/* Prints the calling thread's backtrace from the frame whose pc is
 * start_pc (the faulting instruction), or whole if start_pc is 0 or absent:
 * the handler's own frames tell nothing about the fault. */
static void print_backtrace(uintptr_t start_pc) {
  void *frames[MAX_FRAMES];
  int n = backtrace(frames, MAX_FRAMES);
  int first = 0;

  for (int i = 0; start_pc && i < n; i++) {
    if ((uintptr_t)frames[i] == start_pc) {
      first = i;
      break;
    }
  }
  backtrace_symbols_fd(frames + first, n - first, STDERR_FILENO);
  if (n == MAX_FRAMES) {
    report r = {.len = 0};
    put_str(&r, "...additional frames elided...\n");
    flush(&r);
  }
}

static void report_overflow(uintptr_t addr, void *uctx, const goro__guard_hit *hit) {
  /* The descriptor sits at the slot top; trust it only if its magic marks a
   * live goroutine in the slot. */
  goro__g *g = (goro__g *)((hit->top - sizeof(goro__g)) & ~(uintptr_t)63);
  int64_t id = g->magic == GORO__G_MAGIC ? g->id : 0;
  report r = {.len = 0};

  put_str(&r, "goro: goroutine ");
  put_dec(&r, (uint64_t)id);
  put_str(&r, " stack exceeds ");
  put_dec(&r, hit->top - hit->lo);
  put_str(&r, "-byte limit\ngoro: fault addr=");
  put_hex(&r, addr);
  put_str(&r, " sp=");
  put_hex(&r, context_sp(uctx));
  put_str(&r, " stack=[");
  put_hex(&r, hit->lo);
  put_str(&r, ", ");
  put_hex(&r, hit->top);
  put_str(&r, "]\nfatal error: stack overflow\n\ngoroutine ");
  put_dec(&r, (uint64_t)id);
  put_str(&r, " [running]:\n");
  flush(&r);

  print_backtrace(context_pc(uctx));
  _exit(2);
}

static void forward(int sig, siginfo_t *info, void *uctx) {
  struct sigaction *prev = sig == SIGBUS ? &previous_bus : &previous_segv;

  if ((prev->sa_flags & SA_SIGINFO) && prev->sa_sigaction) {
    prev->sa_sigaction(sig, info, uctx);
    return;
  }
  if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
    prev->sa_handler(sig);
    return;
  }
  /* Default action: restore it and return; the faulting instruction runs
   * again and the kernel delivers the signal with its usual effect. */
  signal(sig, SIG_DFL);
}

static void on_fault(int sig, siginfo_t *info, void *uctx) {
  uintptr_t addr = (uintptr_t)info->si_addr;
  goro__guard_hit hit;

  if (goro__stack_guard_lookup(addr, &hit))
    report_overflow(addr, uctx, &hit);
  forward(sig, info, uctx);
}

int goro__fatal_init(void) {
  struct sigaction sa;
  void *warm[2];

  backtrace(warm, 2);

  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &previous_segv) != 0)
    return GORO_EINVAL;
  if (sigaction(SIGBUS, &sa, &previous_bus) != 0) {
    sigaction(SIGSEGV, &previous_segv, NULL);
    return GORO_EINVAL;
  }
  handlers_installed = true;
  return 0;
}

void goro__fatal_fini(void) {
  if (!handlers_installed)
    return;
  sigaction(SIGSEGV, &previous_segv, NULL);
  sigaction(SIGBUS, &previous_bus, NULL);
  handlers_installed = false;
}

int goro__fatal_thread_init(goro__m *m) {
  stack_t ss;

  m->altstack = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
  if (m->altstack == MAP_FAILED) {
    m->altstack = NULL;
    return GORO_ENOMEM;
  }
  m->altstack_size = ALTSTACK_SIZE;
  ss.ss_sp = m->altstack;
  ss.ss_size = ALTSTACK_SIZE;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, &m->previous_altstack) != 0) {
    munmap(m->altstack, ALTSTACK_SIZE);
    m->altstack = NULL;
    return GORO_ENOMEM;
  }
  return 0;
}

void goro__fatal_thread_fini(goro__m *m) {
  if (!m->altstack)
    return;
  if (m->previous_altstack.ss_flags & SS_ONSTACK)
    m->previous_altstack.ss_flags &= ~SS_ONSTACK;
  sigaltstack(&m->previous_altstack, NULL);
  munmap(m->altstack, m->altstack_size);
  m->altstack = NULL;
}

void goro__throw(const char *msg) {
  report r = {.len = 0};

  put_str(&r, "fatal error: ");
  put_str(&r, msg);
  put_str(&r, "\n\n");
  flush(&r);
  print_backtrace(0);
  _exit(2);
}
