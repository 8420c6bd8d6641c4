/*
 * sched.h: goroutines (G), OS threads (M) and processors (P).
 *
 * Each P owns a run queue, a slot cache and statistics; each worker thread
 * (M) is bound to one P for the life of the runtime, so "idle P" and "idle
 * M" are the same thing here. An M runs its scheduler loop on its own
 * thread stack (g0) and switches to goroutines from there; a goroutine
 * always switches back to g0, never directly to another goroutine, so the
 * work that must happen after a goroutine's stack is no longer in use
 * (releasing a channel lock, freeing the slot of an exited goroutine) runs
 * on g0.
 *
 * Goroutine states, who owns the stack and which queue holds the G:
 *   RUNNABLE  on exactly one run queue (a P's ring, its runnext, or the
 *             global queue); nobody runs on the stack.
 *   RUNNING   owned by the M in g->m; on no queue.
 *   WAITING   parked; on the wait queue of what it waits for (a channel,
 *             mutex, wait group or the timer heap) or on none (an empty
 *             select). Only the waker may make it RUNNABLE.
 *   SCANNING  parked or queued, and a shrink cycle owns the stack below its
 *             sp for a moment (reads its span, may release pages). A waker
 *             or a worker about to run it spins until the cycle restores
 *             the state it had (scan_from).
 *   DEAD      exited; its slot is back in a cache. Nothing refers to it.
 * Legal moves: RUNNABLE -> RUNNING -> {RUNNABLE, WAITING, DEAD},
 * {WAITING, RUNNABLE} -> SCANNING -> the same state again.
 */
#ifndef GORO_SCHED_H
#define GORO_SCHED_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch/context.h"
#include "goro.h"
#include "lock.h"
#include "stack.h"

#define GORO__G_MAGIC 0x676f726f2d6721ULL /* "goro-g!" */
#define GORO__RUNQ_SIZE 256
#define GORO__MAX_PROCS 1024

enum goro__gstate {
  GORO__G_RUNNABLE = 1,
  GORO__G_RUNNING,
  GORO__G_WAITING,
  GORO__G_SCANNING, /* WAITING, and a shrink cycle is working on its stack */
  GORO__G_DEAD,
};

typedef struct goro__g {
  goro__ctx ctx;             /* saved stack pointer while not running */
  uint64_t magic;            /* GORO__G_MAGIC while the slot contains a live G */
  uint32_t state;            /* enum goro__gstate */
  uint32_t select_done;      /* 0 until one select case claims the wakeup */
  uint32_t scan_from;        /* state to restore when a cycle ends SCANNING */
  int64_t id;                /* spawn zeroes the descriptor from here on */
  goro_fn fn;
  void *arg;
  struct goro__g *schedlink; /* global run queue and timer links */
  struct goro__m *m;         /* the M running it (RUNNING only) */
  void *param;               /* set by the waker: the sudog that fired */
  int saved_errno;
  int is_main;
  goro__slot slot;
  uint64_t slot_index;       /* index of the slot in its class */
  uintptr_t committed_lo;    /* lowest page known committed */
  uintptr_t peak_span;       /* largest span seen, bytes */
  uintptr_t peak_used;       /* deepest saved sp seen at a park, bytes below top */
  uint64_t growths;          /* times the observed span grew */
  uint64_t shrinks;          /* times a cycle shrank the span */
  uint64_t last_growth_cycle;/* gc cycle count when growth was last seen */
  uint64_t shrunk_cycle;     /* gc cycle count of the last shrink, 0 if none */
  uint64_t last_use_cycle;   /* gc cycle count when the deep half was last seen in use */
  uintptr_t probe_page;      /* page filled with probe_word by the last cycle, or 0 */
  uint64_t probe_word;
  uint32_t hold;             /* cycles a grown stack is kept (grows on thrash) */
  int hist_bucket;           /* histogram bucket its span is counted in */
  struct goro__pstats *home; /* counters that hold its histogram entry */
  uintptr_t max_stack;       /* usable bytes: slot.top - slot.lo */
  int64_t when;              /* wake time of a sleeping goroutine, ns */
  int64_t timer_index;       /* position in the timer heap, -1 if none */
  void *san_fake_stack;      /* sanitizer.h bookkeeping (ASan, TSan builds) */
  void *san_fiber;
} goro__g;

enum goro__after { GORO__AFTER_NONE, GORO__AFTER_PARK, GORO__AFTER_YIELD, GORO__AFTER_EXIT };

/* One histogram bucket: goroutine count in the low 64 bits, the bytes of
 * their spans in the high 64 bits, updated and read as one 16-byte atomic
 * (cmpxchg16b) so that no reader sees a count without its bytes. */
typedef unsigned __int128 goro__hist_cell __attribute__((aligned(16)));

static inline void goro__hist_add(goro__hist_cell *cell, int64_t count, int64_t bytes) {
  /* Signed 128-bit arithmetic, so that count -1 borrows nothing from the
   * bytes half (a bucket's count is never below zero). */
  goro__hist_cell delta = (goro__hist_cell)((__int128)bytes * ((__int128)1 << 64) + count);
  goro__hist_cell old = 0; /* a guess: the first CAS returns the real value */

  for (;;) {
    goro__hist_cell seen = __sync_val_compare_and_swap(cell, old, old + delta);
    if (seen == old)
      return;
    old = seen;
  }
}

static inline goro__hist_cell goro__hist_read(goro__hist_cell *cell) {
  return __sync_val_compare_and_swap(cell, 0, 0);
}

/* Per-P counters. A goroutine's histogram entry stays in the counters of the
 * P that spawned it (g->home), wherever it runs later, so each bucket gets
 * its +1 before its -1 and a reader never finds a bucket negative. The other
 * counters go to whichever P does the work and only their sum is meaningful;
 * stack_cache and slots_cached are signed because a slot can be cached by
 * one P and taken by another. */
typedef struct goro__pstats {
  goro__hist_cell hist[GORO_STACK_HIST_BUCKETS]; /* live goroutines by span */
  int64_t stack_cache;
  int64_t slots_cached;
  uint64_t spawned;
  uint64_t pages_committed;
  uint64_t pages_released;
  uint64_t growths;
  uint64_t shrinks;
  uint64_t exit_peaks[GORO_STACK_HIST_BUCKETS]; /* exits since the last cycle, by peak span */
} goro__pstats;

typedef struct goro__cached_slot {
  goro__slot slot;
} goro__cached_slot;

typedef struct goro__p {
  int id;
  uint32_t runq_head;        /* consumers advance it with CAS */
  uint32_t runq_tail;        /* written only by the owner */
  goro__g *runnext;          /* runs next: the goroutine just readied */
  goro__g *runq[GORO__RUNQ_SIZE];
  goro__spinlock cache_lock; /* the cache is touched by its owner and by goro_read_memstats */
  int cache_count;
  goro__cached_slot cache[GORO__CACHE_SLOTS];
  goro__pstats stats;        /* updated by the owner with relaxed atomics */
} goro__p;

typedef struct goro__m {
  goro__ctx g0;              /* the scheduler loop's context */
  goro__g *curg;
  goro__p *p;
  int index;
  pthread_t thread;
  uint32_t sleeping;         /* futex word: 1 while parked in the idle list */
  bool spinning;
  struct goro__m *idle_next;
  enum goro__after after;    /* what g0 does once the goroutine has switched out */
  void (*after_fn)(goro__g *g, void *arg);
  void *after_arg;
  uint64_t rand_state;
  uint32_t schedtick;        /* goroutines scheduled, for global-queue fairness */
  void *altstack;
  size_t altstack_size;
  stack_t previous_altstack; /* restored when the thread leaves goro_run */
  uintptr_t g0_lo;           /* the thread's own stack, for sanitizer.h */
  size_t g0_size;
  void *san_fake_stack;
  void *san_fiber;
} goro__m;

/* Returns the M of the calling thread, or NULL. Never cached across a park:
 * a goroutine may resume on another thread. */
goro__m *goro__getm(void);

/* The M of the calling thread, read inline. Only for code that cannot park
 * between this read and its last use of the result (the compiler may keep
 * the TLS address across a call, and a goroutine may resume elsewhere). */
extern __thread goro__m *goro__tls_m __attribute__((tls_model("initial-exec")));
static inline goro__p *goro__getp_nopark(void) {
  goro__m *m = goro__tls_m;
  return m ? m->p : NULL;
}
goro__g *goro__getg(void);
goro__p *goro__getp(void);

/* Parks the running goroutine. After its context is saved, g0 calls
 * unlock(g, arg), which typically releases the lock that made the park
 * visible to wakers. Must be called from a goroutine. */
void goro__park(void (*unlock)(goro__g *g, void *arg), void *arg);

/* Wakes the monitor thread for work that should not wait for its tick. */
void goro__wake_monitor(void);

/* Makes a WAITING goroutine RUNNABLE. Any thread may call it. */
void goro__ready(goro__g *g);

/* stats.c: every change of a goroutine's committed span goes through here,
 * so the histogram, stack_inuse, growth and shrink counters, the stack log
 * and the trace never disagree. p may be NULL (a thread without a P). */
enum goro__span_event {
  GORO__SPAN_NEW,    /* spawned with its span at new_lo */
  GORO__SPAN_GROW,   /* seen deeper than before */
  GORO__SPAN_SHRINK, /* a cycle released the pages below new_lo */
  GORO__SPAN_ADJUST, /* the kernel took pages back (MADV_FREE) */
  GORO__SPAN_EXIT,   /* exited: no longer counted */
};
void goro__span_set(goro__p *p, goro__g *g, uintptr_t new_lo, enum goro__span_event event);

/* Histogram bucket of a span: the smallest i with span <= 4096 << i. */
int goro__span_bucket(uintptr_t span);

/* Stack accounting at a park: growth if sp is below the known span. */
void goro__account_sp(goro__p *p, goro__g *g, uintptr_t sp);

/* gc.c */
typedef struct goro__policy {
  bool shrink;
  bool madv_free;
  bool adaptive_start;
  uint32_t hysteresis;
  int64_t gc_period_ns;
} goro__policy;
extern goro__policy goro__pol;
/* Reads one policy field: goro_set_stack_policy may store it concurrently. */
#define GORO__POLICY(field) __atomic_load_n(&goro__pol.field, __ATOMIC_RELAXED)
#define GORO__MAX_HOLD 64
extern uint64_t goro__gc_cycle;      /* cycles started, the clock of hysteresis */
extern uint64_t goro__start_size;    /* bytes a new goroutine commits (adaptive start) */
extern uint64_t goro__gc_cycles_done;
void goro__gc_init(void);
void goro__gc_tick(int64_t now);     /* the monitor's trimming, scavenging and periodic cycle */

uint64_t goro__fastrand(void);

extern int goro__nprocs;
extern goro__p *goro__allp;
extern bool goro__running;

/* Counters for work done on threads without a P (foreign spawns). */
extern goro__pstats goro__global_stats;

#define GORO__STAT_ADD(p, field, delta)                                             \
  __atomic_fetch_add(&((p) ? &(p)->stats : &goro__global_stats)->field, (delta), \
                     __ATOMIC_RELAXED)

/* debug.c */
typedef struct goro__debug {
  int guard_mprotect;    /* guardmode=mprotect: use the old-kernel path */
  int guard_budget;      /* guardbudget=N: cap mprotect guards (tests) */
  int shrink_off;        /* gcshrinkstackoff=1 */
  int adaptive_start;    /* adaptivestackstart=0|1, -1 when unset */
  int stack_log;         /* stacklog=1: one line per observed span change */
  int64_t schedtrace_ms; /* schedtrace=MS: a scheduler line every MS */
  int madv_free;         /* madvfree=1 */
  int hysteresis;        /* stackhysteresis=N, -1 when unset */
  int64_t gc_period_ms;  /* gcperiod=MS, -1 when unset */
} goro__debug;
extern goro__debug goro__dbg;
void goro__debug_init(void);

/* netpoll.c */
int goro__netpoll_init(void);
void goro__netpoll_fini(void);
/* Readies goroutines whose descriptors are ready, without waiting. */
int goro__netpoll_poll(void);

/* blocking.c */
void goro__blocking_fini(void);

/* pool.c */
void goro__pool_cycle(void);

/* fatal.c */
int goro__fatal_init(void);
void goro__fatal_fini(void);
int goro__fatal_thread_init(goro__m *m);
void goro__fatal_thread_fini(goro__m *m);
void goro__throw(const char *msg) __attribute__((noreturn));

/* settings shared by goro.c and stack.c */
extern size_t goro__max_stack;
extern bool goro__unguarded_ok;

#endif
