/*
 * sched.c: the G/M/P scheduler, goroutine spawn and exit, timers and the
 * monitor thread.
 *
 * Run queues. Each P has a ring of GORO__RUNQ_SIZE goroutines that only its
 * owner pushes to (at the tail) and anyone may take from (at the head, with
 * a CAS), plus a runnext slot for the goroutine readied last, which runs
 * before the ring so that a hand-off over a channel does not wait behind the
 * whole queue. A full ring moves half of itself to the global queue.
 *
 * Idle workers and spinning. A worker with nothing to run first "spins": it
 * tries to steal from the other Ps. At most half of the busy workers spin at
 * once. A worker that finds nothing adds itself to the idle list and sleeps
 * on a futex. Whoever readies a goroutine calls wakep(), which wakes one idle
 * worker only if nobody is spinning: a spinner will find the work anyway.
 * The race between "worker goes idle" and "work arrives" is closed by
 * ordering: the worker publishes itself as idle (npidle, seq_cst) before it
 * looks at the queues one last time, and wakep() looks at npidle only after
 * the work is published (seq_cst fence). Either the worker sees the work or
 * wakep() sees the worker. A worker that stops spinning must look again
 * because wakers skipped waking anyone while it was spinning.
 *
 * Timers. Sleeping goroutines sit in one heap ordered by wake time. The
 * monitor thread sleeps until the earliest one is due and readies it;
 * workers about to go idle also run due timers.
 * NOTE: one heap under one lock; Go keeps a heap per P. Contention shows up
 * only with many goroutines sleeping at very high rates.
 *
 * Preemption. There is none: a goroutine runs until it calls into goro
 * (a channel, sync, yield, sleep) or returns. A goroutine that never does
 * keeps its worker, and goro_run waits for it at shutdown.
 */
#define _GNU_SOURCE
#include "sched.h"
#include "sanitizer.h"
#include "trace.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__GNUC__) && !defined(__clang__)
#define GORO__NOIPA __attribute__((noinline, noipa))
#else
#define GORO__NOIPA __attribute__((noinline))
#endif

int goro__nprocs;
goro__p *goro__allp;
bool goro__running;
goro__pstats goro__global_stats;

static goro__m *allm;
__thread goro__m *goro__tls_m __attribute__((tls_model("initial-exec")));

static struct {
  goro__spinlock lock; /* global queue and idle list */
  goro__g *gq_head, *gq_tail;
  int64_t gq_size;
  goro__m *idle;
  uint32_t npidle;
  uint32_t nmspinning;
  bool shutdown;
  int64_t next_id;

  int (*main_fn)(void *);
  void *main_arg;
  int main_status;

  goro__spinlock timer_lock;
  goro__g **heap;
  size_t heap_len, heap_cap;
  int64_t next_when;   /* wake time of heap[0], INT64_MAX when empty */
  uint32_t sysmon_seq; /* futex word: bumped to wake the monitor */
  int64_t start_ns;
  uint32_t foreign_calls; /* spawns in progress on threads that are not workers */
  pthread_t sysmon;
} sched;

GORO__NOIPA goro__m *goro__getm(void) {
  goro__m *m = goro__tls_m;
  __asm__ volatile("" ::: "memory");
  return m;
}

goro__g *goro__getg(void) {
  goro__m *m = goro__getm();
  return m ? m->curg : NULL;
}

goro__p *goro__getp(void) {
  goro__m *m = goro__getm();
  return m ? m->p : NULL;
}

uint64_t goro__fastrand(void) {
  goro__m *m = goro__getm();
  static uint64_t shared_state = 0x9e3779b97f4a7c15ULL;
  uint64_t *state = m ? &m->rand_state : &shared_state;
  uint64_t x = *state;

  /* xorshift64*: quality is enough for select and steal order. */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dULL;
}

/* ---- Run queues ------------------------------------------------------- */

static void globrunq_put_batch(goro__g *head, goro__g *tail, int64_t n) {
  goro__spin_lock(&sched.lock);
  tail->schedlink = NULL;
  if (sched.gq_tail)
    sched.gq_tail->schedlink = head;
  else
    sched.gq_head = head;
  sched.gq_tail = tail;
  __atomic_store_n(&sched.gq_size, sched.gq_size + n, __ATOMIC_RELEASE);
  goro__spin_unlock(&sched.lock);
}

static void globrunq_put(goro__g *g) { globrunq_put_batch(g, g, 1); }

/* Moves half of a full local queue plus g to the global queue. Returns false
 * when a thief changed the queue meanwhile; the caller then retries. */
static bool runq_put_slow(goro__p *p, goro__g *g, uint32_t head, uint32_t tail) {
  goro__g *batch[GORO__RUNQ_SIZE / 2 + 1];
  uint32_t n = (tail - head) / 2;

  for (uint32_t i = 0; i < n; i++)
    batch[i] = __atomic_load_n(&p->runq[(head + i) % GORO__RUNQ_SIZE], __ATOMIC_RELAXED);
  if (!__atomic_compare_exchange_n(&p->runq_head, &head, head + n, false, __ATOMIC_RELEASE,
                                   __ATOMIC_RELAXED))
    return false;
  batch[n] = g;
  for (uint32_t i = 0; i < n; i++)
    batch[i]->schedlink = batch[i + 1];
  globrunq_put_batch(batch[0], batch[n], n + 1);
  return true;
}

/* Owner only. With next, g goes to runnext and the goroutine it displaces
 * goes to the ring. */
static void runq_put(goro__p *p, goro__g *g, bool next) {
  if (next) {
    g = __atomic_exchange_n(&p->runnext, g, __ATOMIC_ACQ_REL);
    if (!g)
      return;
  }
  for (;;) {
    uint32_t head = __atomic_load_n(&p->runq_head, __ATOMIC_ACQUIRE);
    uint32_t tail = __atomic_load_n(&p->runq_tail, __ATOMIC_RELAXED);
    if (tail - head < GORO__RUNQ_SIZE) {
      __atomic_store_n(&p->runq[tail % GORO__RUNQ_SIZE], g, __ATOMIC_RELAXED);
      __atomic_store_n(&p->runq_tail, tail + 1, __ATOMIC_RELEASE);
      return;
    }
    if (runq_put_slow(p, g, head, tail))
      return;
  }
}

static goro__g *runq_get(goro__p *p) {
  goro__g *next = __atomic_load_n(&p->runnext, __ATOMIC_ACQUIRE);
  if (next && __atomic_compare_exchange_n(&p->runnext, &next, NULL, false, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED))
    return next;

  for (;;) {
    uint32_t head = __atomic_load_n(&p->runq_head, __ATOMIC_ACQUIRE);
    uint32_t tail = __atomic_load_n(&p->runq_tail, __ATOMIC_ACQUIRE);
    if (head == tail)
      return NULL;
    goro__g *g = __atomic_load_n(&p->runq[head % GORO__RUNQ_SIZE], __ATOMIC_RELAXED);
    if (__atomic_compare_exchange_n(&p->runq_head, &head, head + 1, false, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED))
      return g;
  }
}

static bool runq_empty(goro__p *p) {
  uint32_t head = __atomic_load_n(&p->runq_head, __ATOMIC_ACQUIRE);
  uint32_t tail = __atomic_load_n(&p->runq_tail, __ATOMIC_ACQUIRE);
  return head == tail && !__atomic_load_n(&p->runnext, __ATOMIC_ACQUIRE);
}

/* Takes half of victim's queue into p's ring (which must be empty) and
 * returns one of them to run, or NULL. */
static goro__g *runq_steal(goro__p *p, goro__p *victim, bool take_runnext) {
  uint32_t my_tail = __atomic_load_n(&p->runq_tail, __ATOMIC_RELAXED);

  for (;;) {
    uint32_t head = __atomic_load_n(&victim->runq_head, __ATOMIC_ACQUIRE);
    uint32_t tail = __atomic_load_n(&victim->runq_tail, __ATOMIC_ACQUIRE);
    uint32_t n = tail - head;
    n -= n / 2;
    if (n == 0) {
      if (!take_runnext)
        return NULL;
      goro__g *next = __atomic_load_n(&victim->runnext, __ATOMIC_ACQUIRE);
      if (next && __atomic_compare_exchange_n(&victim->runnext, &next, NULL, false,
                                              __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return next;
      return NULL;
    }
    if (n > GORO__RUNQ_SIZE / 2)
      continue; /* head and tail read at different times; read again */
    for (uint32_t i = 0; i < n; i++) {
      goro__g *g = __atomic_load_n(&victim->runq[(head + i) % GORO__RUNQ_SIZE], __ATOMIC_RELAXED);
      __atomic_store_n(&p->runq[(my_tail + i) % GORO__RUNQ_SIZE], g, __ATOMIC_RELAXED);
    }
    if (!__atomic_compare_exchange_n(&victim->runq_head, &head, head + n, false,
                                     __ATOMIC_RELEASE, __ATOMIC_RELAXED))
      continue;
    /* Run the last one taken; publish the others in p's ring. */
    n--;
    goro__g *g = __atomic_load_n(&p->runq[(my_tail + n) % GORO__RUNQ_SIZE], __ATOMIC_RELAXED);
    if (n)
      __atomic_store_n(&p->runq_tail, my_tail + n, __ATOMIC_RELEASE);
    return g;
  }
}

/* Takes a fair share of the global queue; the first one is returned and the
 * rest go to p's ring. Caller holds sched.lock. */
static goro__g *globrunq_get(goro__p *p) {
  int64_t n = sched.gq_size;

  if (n == 0)
    return NULL;
  if (n > sched.gq_size / goro__nprocs + 1)
    n = sched.gq_size / goro__nprocs + 1;
  if (n > GORO__RUNQ_SIZE / 2)
    n = GORO__RUNQ_SIZE / 2;
  /* The extras must fit p's ring: a full ring would spill to the global
   * queue, whose lock this thread holds. Only p's owner adds to the ring,
   * so the room read here can only grow until the pushes below. */
  uint32_t used = __atomic_load_n(&p->runq_tail, __ATOMIC_RELAXED) -
                  __atomic_load_n(&p->runq_head, __ATOMIC_ACQUIRE);
  if (n > (int64_t)(GORO__RUNQ_SIZE - used) + 1)
    n = (int64_t)(GORO__RUNQ_SIZE - used) + 1;
  __atomic_store_n(&sched.gq_size, sched.gq_size - n, __ATOMIC_RELEASE);

  goro__g *g = sched.gq_head;
  sched.gq_head = g->schedlink;
  for (int64_t i = 1; i < n; i++) {
    goro__g *more = sched.gq_head;
    sched.gq_head = more->schedlink;
    runq_put(p, more, false);
  }
  if (!sched.gq_head)
    sched.gq_tail = NULL;
  return g;
}

/* ---- Waking workers --------------------------------------------------- */

static void wakep(void) {
  /* A seq_cst read-modify-write orders the caller's publication of work
   * before this read of npidle (a fence would too, but TSan cannot see one). */
  if (__atomic_fetch_add(&sched.npidle, 0, __ATOMIC_SEQ_CST) == 0)
    return;
  uint32_t zero = 0;
  if (!__atomic_compare_exchange_n(&sched.nmspinning, &zero, 1, false, __ATOMIC_SEQ_CST,
                                   __ATOMIC_RELAXED))
    return;

  goro__spin_lock(&sched.lock);
  goro__m *m = sched.idle;
  if (m) {
    sched.idle = m->idle_next;
    __atomic_fetch_sub(&sched.npidle, 1, __ATOMIC_SEQ_CST);
    m->spinning = true; /* the nmspinning slot taken above is now m's */
    __atomic_store_n(&m->sleeping, 0, __ATOMIC_RELEASE);
  }
  goro__spin_unlock(&sched.lock);

  if (!m) {
    __atomic_fetch_sub(&sched.nmspinning, 1, __ATOMIC_SEQ_CST);
    return;
  }
  goro__futex_wake(&m->sleeping, 1);
}

/* A spinning worker found work: stop spinning, and if it was the last
 * spinner, wake another so that further work still finds a thread. */
static void reset_spinning(goro__m *m) {
  m->spinning = false;
  if (__atomic_sub_fetch(&sched.nmspinning, 1, __ATOMIC_SEQ_CST) == 0)
    wakep();
}

/* Moves g from state from to state to. A shrink cycle may hold g's stack
 * for a moment (SCANNING) and gives it back within one batch of 64
 * goroutines, so the spin is short. Any other state is a runtime bug. */
static void transition(goro__g *g, uint32_t from, uint32_t to, const char *bug) {
  for (;;) {
    uint32_t state = from;
    if (__atomic_compare_exchange_n(&g->state, &state, to, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
      return;
    if (state != GORO__G_SCANNING)
      goro__throw(bug);
    goro__cpu_relax();
  }
}

void goro__ready(goro__g *g) {
  goro__m *m = goro__getm();

  transition(g, GORO__G_WAITING, GORO__G_RUNNABLE, "goro__ready: goroutine is not waiting");
  if (m && m->p)
    runq_put(m->p, g, true);
  else
    globrunq_put(g);
  wakep();
}

/* ---- Timers ----------------------------------------------------------- */

static void heap_swap(size_t a, size_t b) {
  goro__g *t = sched.heap[a];
  sched.heap[a] = sched.heap[b];
  sched.heap[b] = t;
  sched.heap[a]->timer_index = (int64_t)a;
  sched.heap[b]->timer_index = (int64_t)b;
}

static void heap_up(size_t i) {
  while (i > 0 && sched.heap[(i - 1) / 2]->when > sched.heap[i]->when) {
    heap_swap(i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(size_t i) {
  for (;;) {
    size_t least = i, l = 2 * i + 1, r = l + 1;
    if (l < sched.heap_len && sched.heap[l]->when < sched.heap[least]->when)
      least = l;
    if (r < sched.heap_len && sched.heap[r]->when < sched.heap[least]->when)
      least = r;
    if (least == i)
      return;
    heap_swap(i, least);
    i = least;
  }
}

static void publish_next_when(void) {
  int64_t next = sched.heap_len ? sched.heap[0]->when : INT64_MAX;
  __atomic_store_n(&sched.next_when, next, __ATOMIC_RELEASE);
}

static void wake_sysmon(void) {
  __atomic_fetch_add(&sched.sysmon_seq, 1, __ATOMIC_RELEASE);
  goro__futex_wake(&sched.sysmon_seq, 1);
}

void goro__wake_monitor(void) { wake_sysmon(); }

/* Runs on g0 once the sleeping goroutine has switched out, so the monitor
 * cannot ready it while its context is still being saved. */
static void add_timer_after_park(goro__g *g, void *arg) {
  (void)arg;
  goro__spin_lock(&sched.timer_lock);
  if (sched.heap_len == sched.heap_cap) {
    size_t cap = sched.heap_cap ? sched.heap_cap * 2 : 256;
    goro__g **grown = realloc(sched.heap, cap * sizeof *grown);
    if (!grown) {
      /* Out of memory for the heap: wake the goroutine at once rather than
       * lose it. goro_sleep finds it woke early and parks again. */
      goro__spin_unlock(&sched.timer_lock);
      goro__ready(g);
      return;
    }
    sched.heap = grown;
    sched.heap_cap = cap;
  }
  g->timer_index = (int64_t)sched.heap_len;
  sched.heap[sched.heap_len++] = g;
  heap_up((size_t)g->timer_index);
  bool earliest = sched.heap[0] == g;
  publish_next_when();
  goro__spin_unlock(&sched.timer_lock);

  if (earliest)
    wake_sysmon();
}

/* Readies every goroutine whose wake time has passed. */
static void run_timers(int64_t now) {
  goro__g *due = NULL;

  goro__spin_lock(&sched.timer_lock);
  while (sched.heap_len && sched.heap[0]->when <= now) {
    goro__g *g = sched.heap[0];
    heap_swap(0, --sched.heap_len);
    if (sched.heap_len)
      heap_down(0);
    g->timer_index = -1;
    g->schedlink = due;
    due = g;
  }
  publish_next_when();
  goro__spin_unlock(&sched.timer_lock);

  while (due) {
    goro__g *g = due;
    due = g->schedlink;
    goro__ready(g);
  }
}

/* GORODEBUG=schedtrace=MS: one line per interval, like Go's schedtrace. */
static void print_schedtrace(int64_t now) {
  static int64_t last;
  goro_memstats ms = {.size = sizeof ms};
  char line[512];
  int len;

  if (now - last < goro__dbg.schedtrace_ms * 1000000)
    return;
  last = now;
  goro_read_memstats(&ms);
  len = snprintf(line, sizeof line,
                 "goro: schedtrace %lldms: workers=%d idle=%u spinning=%u globrunq=%lld runq=[",
                 (long long)((now - sched.start_ns) / 1000000), goro__nprocs,
                 __atomic_load_n(&sched.npidle, __ATOMIC_RELAXED),
                 __atomic_load_n(&sched.nmspinning, __ATOMIC_RELAXED),
                 (long long)__atomic_load_n(&sched.gq_size, __ATOMIC_RELAXED));
  for (int i = 0; i < goro__nprocs && len < (int)sizeof line - 128; i++) {
    goro__p *p = &goro__allp[i];
    uint32_t n = __atomic_load_n(&p->runq_tail, __ATOMIC_RELAXED) -
                 __atomic_load_n(&p->runq_head, __ATOMIC_RELAXED);
    len += snprintf(line + len, sizeof line - (size_t)len, i ? " %u" : "%u", n);
  }
  len += snprintf(line + len, sizeof line - (size_t)len,
                  "] goroutines=%llu stack_inuse=%llu stack_sys=%llu\n",
                  (unsigned long long)ms.goroutines, (unsigned long long)ms.stack_inuse,
                  (unsigned long long)ms.stack_sys);
  if (write(STDERR_FILENO, line, (size_t)len) < 0)
    last = now;
}

static void *sysmon_main(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&sched.shutdown, __ATOMIC_ACQUIRE)) {
    uint32_t seq = __atomic_load_n(&sched.sysmon_seq, __ATOMIC_ACQUIRE);
    int64_t now = goro__nanotime();
    if (__atomic_load_n(&sched.next_when, __ATOMIC_ACQUIRE) <= now)
      run_timers(now);

    /* Give back warm stack memory above the bound, an eighth of the excess
     * per tick, so that a burst's slots are reused if another burst comes
     * and released within about a second if not. */
    goro__stack_precarve();
    goro__gc_tick(now);
    if (goro__dbg.schedtrace_ms > 0)
      print_schedtrace(now);

    int64_t wait = __atomic_load_n(&sched.next_when, __ATOMIC_ACQUIRE) - goro__nanotime();
    if (wait > 20 * 1000 * 1000)
      wait = 20 * 1000 * 1000;
    if (wait > 0)
      goro__futex_wait(&sched.sysmon_seq, seq, wait);
  }
  return NULL;
}

/* ---- Finding work ----------------------------------------------------- */

static bool any_work(void) {
  if (__atomic_load_n(&sched.gq_size, __ATOMIC_ACQUIRE))
    return true;
  for (int i = 0; i < goro__nprocs; i++)
    if (!runq_empty(&goro__allp[i]))
      return true;
  return false;
}

static void idle_remove(goro__m *m) {
  for (goro__m **link = &sched.idle; *link; link = &(*link)->idle_next) {
    if (*link == m) {
      *link = m->idle_next;
      __atomic_fetch_sub(&sched.npidle, 1, __ATOMIC_SEQ_CST);
      return;
    }
  }
}

/* Steal rounds a spinning worker makes before it sleeps. A futex sleep and
 * wake-up cost several microseconds and an IPI, so a worker keeps looking
 * for about that long (each round pauses about 100 ns per victim): work
 * that arrives meanwhile, like the next hand-off of a ping-pong, finds it
 * awake and costs no futex call. */
#define STEAL_ROUNDS 32

static goro__g *steal_work(goro__m *m) {
  int n = goro__nprocs;

  for (int round = 0; round < STEAL_ROUNDS; round++) {
    /* runnext is taken only in the last round: its owner is about to run
     * it, and taking it would move a hand-off to another CPU. */
    bool take_runnext = round == STEAL_ROUNDS - 1;
    int start = (int)(goro__fastrand() % (uint64_t)n);
    for (int i = 0; i < n; i++) {
      goro__p *victim = &goro__allp[(start + i) % n];
      if (victim == m->p)
        continue;
      goro__g *g = runq_steal(m->p, victim, take_runnext);
      if (g)
        return g;
      for (int k = 0; k < 8; k++)
        goro__cpu_relax();
    }
    if (__atomic_load_n(&sched.gq_size, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&sched.shutdown, __ATOMIC_ACQUIRE))
      return NULL;
  }
  return NULL;
}

/* Blocks until there is a goroutine to run; NULL means shut down. */
static goro__g *find_runnable(goro__m *m) {
  goro__p *p = m->p;
  goro__g *g;

  for (;;) {
    if (__atomic_load_n(&sched.shutdown, __ATOMIC_ACQUIRE))
      return NULL;

    /* Now and then goroutines move from the global queue to the local
     * tail, or those there (yielded ones, overflow, those readied by other
     * threads) would wait as long as the local queue never empties. They go
     * behind the local ones rather than ahead, so that order is kept and no
     * goroutine gets a second turn before the others had one. 61 is Go's
     * choice: prime, so it does not fall into step with a workload. */
    if (++m->schedtick % 61 == 0 && __atomic_load_n(&sched.gq_size, __ATOMIC_ACQUIRE)) {
      goro__spin_lock(&sched.lock);
      g = globrunq_get(p);
      goro__spin_unlock(&sched.lock);
      if (g)
        runq_put(p, g, false);
    }
    if ((g = runq_get(p)))
      return g;
    /* Timers are the monitor's job; a worker with nothing queued also runs
     * due ones, which saves a thread hop. Reading the clock only when a
     * timer exists keeps it off the hand-off path (clock_gettime costs
     * tens of ns on this VM). */
    int64_t next_when = __atomic_load_n(&sched.next_when, __ATOMIC_ACQUIRE);
    if (next_when != INT64_MAX && next_when <= goro__nanotime()) {
      run_timers(goro__nanotime());
      if ((g = runq_get(p)))
        return g;
    }
    if (__atomic_load_n(&sched.gq_size, __ATOMIC_ACQUIRE)) {
      goro__spin_lock(&sched.lock);
      g = globrunq_get(p);
      goro__spin_unlock(&sched.lock);
      if (g)
        return g;
    }

    if (goro__netpoll_poll() && (g = runq_get(p)))
      return g;

    /* Spin only while fewer than half of the busy workers do. */
    uint32_t busy = (uint32_t)goro__nprocs - __atomic_load_n(&sched.npidle, __ATOMIC_SEQ_CST);
    if (m->spinning || 2 * __atomic_load_n(&sched.nmspinning, __ATOMIC_SEQ_CST) < busy) {
      if (!m->spinning) {
        m->spinning = true;
        __atomic_fetch_add(&sched.nmspinning, 1, __ATOMIC_SEQ_CST);
      }
      if ((g = steal_work(m)))
        return g;
    }

    /* Nothing: publish this worker as idle, then look one last time. */
    goro__spin_lock(&sched.lock);
    if ((g = globrunq_get(p))) {
      goro__spin_unlock(&sched.lock);
      return g;
    }
    /* Once on the idle list, m->spinning belongs to the thread that wakes m, so
     * read and clear it first. */
    bool was_spinning = m->spinning;
    m->spinning = false;
    __atomic_store_n(&m->sleeping, 1, __ATOMIC_RELAXED);
    m->idle_next = sched.idle;
    sched.idle = m;
    __atomic_fetch_add(&sched.npidle, 1, __ATOMIC_SEQ_CST);
    goro__spin_unlock(&sched.lock);

    if (was_spinning)
      __atomic_fetch_sub(&sched.nmspinning, 1, __ATOMIC_SEQ_CST);
    if (any_work() || __atomic_load_n(&sched.shutdown, __ATOMIC_SEQ_CST)) {
      goro__spin_lock(&sched.lock);
      if (__atomic_load_n(&m->sleeping, __ATOMIC_RELAXED)) {
        idle_remove(m);
        __atomic_store_n(&m->sleeping, 0, __ATOMIC_RELAXED);
        m->spinning = true;
        __atomic_fetch_add(&sched.nmspinning, 1, __ATOMIC_SEQ_CST);
      }
      goro__spin_unlock(&sched.lock);
      continue;
    }
    while (__atomic_load_n(&m->sleeping, __ATOMIC_ACQUIRE) &&
           !__atomic_load_n(&sched.shutdown, __ATOMIC_ACQUIRE))
      goro__futex_wait(&m->sleeping, 1, -1);
  }
}

/* ---- Running goroutines ----------------------------------------------- */

/* Frees an exited goroutine's slot. Runs on g0: the slot contains both the
 * goroutine's stack and its descriptor, and g0 is on neither. No system
 * call: the slot keeps its pages until it is reused or scavenged. */
static void destroy_g(goro__p *p, goro__g *g) {
  goro__slot slot = g->slot;

  slot.resident_lo = g->committed_lo;
  goro__stack_mark_visit(slot.cls, g->slot_index, false);
  goro__span_set(p, g, g->committed_lo, GORO__SPAN_EXIT);
  if (goro__tracing)
    goro__trace_event_exit(g);

  __atomic_store_n(&g->magic, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g->state, GORO__G_DEAD, __ATOMIC_RELEASE);
  goro__san_fiber_destroy(g->san_fiber);
#ifdef GORO__ASAN
  /* Clearing the shadow of a whole 64 GiB slot would take seconds; only
   * pages the goroutine touched can carry its redzones. */
  uintptr_t touched = goro__stack_lowest_touched(&slot, g->committed_lo);
  goro__san_forget_stack(touched, slot.top - touched);
#endif
  /* What the next goroutine on this slot may reuse warm: the depth this one
   * was seen to need, or, if it never parked, up to GORO__CACHE_KEEP (a
   * goroutine that runs to completion without parking is seen only here,
   * and short-lived request goroutines are the ones that gain most). */
  uintptr_t keep = g->peak_used ? g->peak_used : GORO__CACHE_KEEP;
  goro__stack_free(p, &slot, keep);
}

static void execute(goro__m *m, goro__g *g) {
  m->curg = g;
  g->m = m;
  transition(g, GORO__G_RUNNABLE, GORO__G_RUNNING, "execute: goroutine is not runnable");
  m->after = GORO__AFTER_NONE;
  errno = g->saved_errno;

  int64_t start_ns = goro__tracing ? goro__nanotime() : 0;
  goro__san_before_switch(&m->san_fake_stack, g->slot.lo, g->slot.top - g->slot.lo, g->san_fiber);
  goro__ctx_switch(&m->g0, &g->ctx);
  goro__san_after_switch(m->san_fake_stack);
  if (goro__tracing)
    goro__trace_event_run(m, g, start_ns, goro__nanotime());

  /* Back on g0 of this thread: the goroutine's registers are saved. */
  g->saved_errno = errno;
  m->curg = NULL;
  g->m = NULL;
  switch (m->after) {
  case GORO__AFTER_PARK:
    goro__account_sp(m->p, g, (uintptr_t)g->ctx.sp);
    /* WAITING first: a cycle that takes the worklist bit must find the
     * goroutine suspendable, or the bit would be lost until the next park.
     * No waker can see g before after_fn runs below. */
    __atomic_store_n(&g->state, GORO__G_WAITING, __ATOMIC_RELEASE);
    goro__stack_mark_visit(g->slot.cls, g->slot_index, true);
    if (m->after_fn)
      m->after_fn(g, m->after_arg);
    break;
  case GORO__AFTER_YIELD:
    goro__account_sp(m->p, g, (uintptr_t)g->ctx.sp);
    __atomic_store_n(&g->state, GORO__G_RUNNABLE, __ATOMIC_RELEASE);
    goro__stack_mark_visit(g->slot.cls, g->slot_index, true);
    globrunq_put(g);
    break;
  case GORO__AFTER_EXIT:
    destroy_g(m->p, g);
    break;
  case GORO__AFTER_NONE:
    goro__throw("goroutine switched to the scheduler without a reason");
  }
}

static void schedule(goro__m *m) {
  goro__g *g;

  while ((g = find_runnable(m))) {
    if (m->spinning)
      reset_spinning(m);
    execute(m, g);
  }
}

static void switch_to_g0(enum goro__after after, void (*fn)(goro__g *, void *), void *arg) {
  goro__m *m = goro__getm();
  goro__g *g = m->curg;

  m->after = after;
  m->after_fn = fn;
  m->after_arg = arg;
  goro__san_before_switch(after == GORO__AFTER_EXIT ? NULL : &g->san_fake_stack, m->g0_lo,
                          m->g0_size, m->san_fiber);
  goro__ctx_switch(&g->ctx, &m->g0);
  /* Resumed, possibly on another thread: m is stale, g is not. */
  goro__san_after_switch(g->san_fake_stack);
}

void goro__park(void (*unlock)(goro__g *g, void *arg), void *arg) {
  switch_to_g0(GORO__AFTER_PARK, unlock, arg);
}

static void __attribute__((noreturn)) exit_current(void) {
  switch_to_g0(GORO__AFTER_EXIT, NULL, NULL);
  goro__throw("exited goroutine was resumed");
}

static void goroutine_entry(void *arg) {
  goro__g *g = arg;

  goro__san_after_switch(NULL);
  g->fn(g->arg);
  exit_current();
}

/* ---- Spawning --------------------------------------------------------- */

static int64_t spawn(goro_fn fn, void *arg, size_t max_stack, size_t hint, bool is_main) {
  int cls = goro__stack_class_for(max_stack);
  goro__p *p = goro__getp();
  goro__slot slot;

  if (cls < 0)
    return GORO_EINVAL;
  int err = goro__stack_alloc(p, cls, &slot);
  if (err)
    return err;

  /* The descriptor takes the top of the slot; the stack starts below it. */
  uintptr_t g_addr = (slot.top - sizeof(goro__g)) & ~(uintptr_t)63;
  goro__g *g = (goro__g *)g_addr;
  /* A shrink cycle may read magic and state of a slot it found on its
   * worklist just before the slot's last goroutine exited: those two are
   * written atomically, the rest is private until the goroutine is queued. */
  __atomic_store_n(&g->magic, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&g->state, GORO__G_DEAD, __ATOMIC_RELAXED);
  memset(&g->id, 0, sizeof *g - offsetof(goro__g, id));
  g->ctx.sp = NULL;
  if (slot.resident_lo > (g_addr & ~(GORO__PAGE_SIZE - 1)))
    slot.resident_lo = g_addr & ~(GORO__PAGE_SIZE - 1);
  /* A spawn hint is stack for the goroutine's frames, so the descriptor's
   * share of the top page comes on top of it. The adaptive start size is
   * measured from the slot top (top - sp), so it is already a span. */
  size_t span = hint ? hint + (slot.top - g_addr) : 0;
  if (GORO__POLICY(adaptive_start)) {
    size_t start = __atomic_load_n(&goro__start_size, __ATOMIC_RELAXED);
    if (start > span)
      span = start;
  }
  if (span)
    goro__stack_commit(&slot, span);

  g->id = __atomic_add_fetch(&sched.next_id, 1, __ATOMIC_RELAXED);
  g->is_main = is_main;
  g->fn = fn;
  g->arg = arg;
  g->slot = slot;
  g->slot_index = goro__stack_slot_index(&slot);
  g->home = p ? &p->stats : &goro__global_stats;
  g->committed_lo = slot.top;
  g->max_stack = slot.top - slot.lo;
  g->timer_index = -1;
  g->hold = GORO__POLICY(hysteresis);
  g->peak_used = 0;
  g->last_growth_cycle = __atomic_load_n(&goro__gc_cycle, __ATOMIC_RELAXED);
  g->san_fiber = goro__san_fiber_create();
  goro__ctx_make(&g->ctx, (void *)(g_addr & ~(uintptr_t)15), goroutine_entry, g);

  GORO__STAT_ADD(p, spawned, 1);
  goro__span_set(p, g, slot.resident_lo, GORO__SPAN_NEW);
  if (goro__tracing)
    goro__trace_event_spawn(g);
  /* Once queued, g may run, exit and have its slot reused on another
   * worker before this function returns: read nothing from g after. */
  int64_t id = g->id;
  __atomic_store_n(&g->state, GORO__G_RUNNABLE, __ATOMIC_RELEASE);
  __atomic_store_n(&g->magic, GORO__G_MAGIC, __ATOMIC_RELEASE);
  if (p)
    runq_put(p, g, true);
  else
    globrunq_put(g);
  wakep();
  return id;
}

/* Validates the options and spawns. The caller has checked fn and that the
 * runtime runs. */
static int64_t spawn_checked(goro_fn fn, void *arg, const goro_spawn_opts *opts) {
  size_t max_stack = __atomic_load_n(&goro__max_stack, __ATOMIC_RELAXED);
  size_t hint = 0;

  if (opts) {
    if (opts->size != 0 && opts->size < sizeof(size_t) * 3)
      return GORO_EINVAL;
    if (opts->max_stack) {
      if (opts->max_stack > GORO_MAX_MAX_STACK)
        return GORO_EINVAL;
      max_stack = opts->max_stack;
    }
    hint = opts->stack_hint;
    if (hint > max_stack)
      return GORO_EINVAL;
  }
  return spawn(fn, arg, max_stack, hint, false);
}

int64_t goro_spawn_with(goro_fn fn, void *arg, const goro_spawn_opts *opts) {
  if (!fn)
    return GORO_EINVAL;
  if (goro__getg())
    return spawn_checked(fn, arg, opts); /* the run cannot end under a goroutine */

  /* Any other thread may race with the end of the run, which unmaps the
   * arena: it announces itself first, and goro_run waits for announced
   * spawns to leave after it has stopped new ones (quiesce_foreign). */
  __atomic_fetch_add(&sched.foreign_calls, 1, __ATOMIC_SEQ_CST);
  int64_t id = GORO_ESTATE;
  if (__atomic_load_n(&goro__running, __ATOMIC_SEQ_CST) &&
      !__atomic_load_n(&sched.shutdown, __ATOMIC_SEQ_CST))
    id = spawn_checked(fn, arg, opts);
  __atomic_fetch_sub(&sched.foreign_calls, 1, __ATOMIC_SEQ_CST);
  return id;
}

int64_t goro_spawn(goro_fn fn, void *arg) { return goro_spawn_with(fn, arg, NULL); }

/* Waits until no spawn from a non-worker thread is inside the runtime.
 * Called after shutdown is set, so none can enter after this returns. */
static void quiesce_foreign(void) {
  while (__atomic_load_n(&sched.foreign_calls, __ATOMIC_SEQ_CST))
    sched_yield();
}

/* ---- Goroutine calls -------------------------------------------------- */

static void finish_main(int status);

int goro_exit(void) {
  goro__g *g = goro__getg();

  if (!g)
    return GORO_ENOTGORO;
  if (g->is_main)
    finish_main(0);
  exit_current();
}

int goro_yield(void) {
  if (!goro__getg())
    return GORO_ENOTGORO;
  switch_to_g0(GORO__AFTER_YIELD, NULL, NULL);
  return 0;
}

int goro_sleep(int64_t ns) {
  goro__g *g = goro__getg();

  if (!g)
    return GORO_ENOTGORO;
  if (ns <= 0)
    return goro_yield();

  /* Saturate: goro_sleep(INT64_MAX) must sleep, not wrap to the past. */
  int64_t now = goro__nanotime();
  int64_t deadline = ns > INT64_MAX - now ? INT64_MAX : now + ns;
  do {
    g->when = deadline;
    goro__park(add_timer_after_park, NULL);
  } while (goro__nanotime() < deadline);
  return 0;
}

int64_t goro_id(void) {
  goro__g *g = goro__getg();
  return g ? g->id : 0;
}

int goro_worker_index(void) {
  goro__m *m = goro__getm();
  return m ? m->index : -1;
}

size_t goro_stack_remaining(void) {
  goro__g *g = goro__getg();
  uintptr_t sp = goro__ctx_current_sp();

  if (!g || sp < g->slot.lo || sp >= g->slot.top)
    return 0;
  return sp - g->slot.lo;
}

int goro_stack_bounds(uintptr_t *lo, uintptr_t *hi) {
  goro__g *g = goro__getg();

  if (!lo || !hi)
    return GORO_EINVAL;
  if (!g)
    return GORO_ENOTGORO;
  *lo = g->slot.lo;
  *hi = g->slot.top;
  return 0;
}

/* ---- Start and shutdown ----------------------------------------------- */

/* Ends the run: every worker returns from its scheduler loop at its next
 * pass, and goro_run returns status. */
static void finish_main(int status) {
  sched.main_status = status;
  __atomic_store_n(&sched.shutdown, true, __ATOMIC_SEQ_CST);
  goro__spin_lock(&sched.lock);
  for (goro__m *m = sched.idle; m; m = m->idle_next)
    __atomic_store_n(&m->sleeping, 0, __ATOMIC_RELEASE);
  goro__m *woken = sched.idle;
  sched.idle = NULL;
  goro__spin_unlock(&sched.lock);
  for (goro__m *m = woken; m;) {
    goro__m *next = m->idle_next;
    goro__futex_wake(&m->sleeping, 1);
    m = next;
  }
  wake_sysmon();
}

static void main_goroutine(void *arg) {
  (void)arg;
  finish_main(sched.main_fn(sched.main_arg));
}

/* Records the calling thread's stack bounds and sanitizer fiber in m. */
static void bind_thread(goro__m *m) {
  pthread_attr_t attr;
  void *addr;
  size_t size;

  goro__tls_m = m;
  m->san_fiber = goro__san_fiber_current();
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
      m->g0_lo = (uintptr_t)addr;
      m->g0_size = size;
    }
    pthread_attr_destroy(&attr);
  }
}

static void *worker_main(void *arg) {
  goro__m *m = arg;

  bind_thread(m);
  goro__fatal_thread_init(m);
  schedule(m);
  goro__fatal_thread_fini(m);
  goro__tls_m = NULL;
  return NULL;
}

static int default_nprocs(void) {
  const char *env = getenv("GOROMAXPROCS");
  cpu_set_t set;

  if (env && *env) {
    char *end;
    long n = strtol(env, &end, 10);
    if (*end == '\0' && n >= 1 && n <= GORO__MAX_PROCS)
      return (int)n;
    fprintf(stderr, "goro: GOROMAXPROCS=%s is not a number from 1 to %d (ignored)\n", env,
            GORO__MAX_PROCS);
  }
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set) < GORO__MAX_PROCS ? CPU_COUNT(&set) : GORO__MAX_PROCS;
  return 1;
}

extern int goro__maxprocs_setting;

/* Folds the counters of a finished run into the process-wide totals; the
 * gauges restart at zero because every slot is unmapped with the arena. */
static void fold_stats(void) {
  for (int i = 0; i < goro__nprocs; i++) {
    goro__pstats *s = &goro__allp[i].stats;
    goro__global_stats.spawned += s->spawned;
    goro__global_stats.pages_committed += s->pages_committed;
    goro__global_stats.pages_released += s->pages_released;
    goro__global_stats.growths += s->growths;
    goro__global_stats.shrinks += s->shrinks;
  }
  memset(goro__global_stats.hist, 0, sizeof goro__global_stats.hist);
  goro__global_stats.stack_cache = 0;
  goro__global_stats.slots_cached = 0;
}

static void reset_sched(void) {
  goro__pstats keep = goro__global_stats;
  int64_t next_id = sched.next_id;

  free(sched.heap);
  memset(&sched, 0, sizeof sched);
  sched.next_when = INT64_MAX;
  sched.next_id = next_id;
  goro__global_stats = keep;
}

int goro_run(int (*main_fn)(void *arg), void *arg) {
  static uint32_t entered;
  int err;

  if (!main_fn)
    return GORO_EINVAL;
  if (__atomic_exchange_n(&entered, 1, __ATOMIC_ACQ_REL))
    return GORO_ESTATE;

  goro__debug_init();
  goro__gc_init();
  reset_sched();
  sched.main_fn = main_fn;
  sched.main_arg = arg;
  sched.start_ns = goro__nanotime();
  goro__nprocs = goro__maxprocs_setting ? goro__maxprocs_setting : default_nprocs();

  if ((err = goro__stack_init()) != 0)
    goto out;
  if ((err = goro__fatal_init()) != 0)
    goto out_stack;
  if ((err = goro__netpoll_init()) != 0)
    goto out_fatal;

  goro__allp = calloc((size_t)goro__nprocs, sizeof *goro__allp);
  allm = calloc((size_t)goro__nprocs, sizeof *allm);
  if (!goro__allp || !allm) {
    err = GORO_ENOMEM;
    goto out_mem;
  }
  for (int i = 0; i < goro__nprocs; i++) {
    goro__allp[i].id = i;
    allm[i].index = i;
    allm[i].p = &goro__allp[i];
    allm[i].rand_state = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) ^ (uint64_t)goro__nanotime();
  }

  goro__trace_init(goro__nprocs);
  bind_thread(&allm[0]);
  goro__fatal_thread_init(&allm[0]);
  __atomic_store_n(&goro__running, true, __ATOMIC_RELEASE);

  int64_t main_id = spawn(main_goroutine, NULL, goro__max_stack, 0, true);
  if (main_id < 0) {
    err = (int)main_id;
    goto out_running;
  }

  int started = 1;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 << 10);
  for (; started < goro__nprocs; started++)
    if (pthread_create(&allm[started].thread, &attr, worker_main, &allm[started]) != 0)
      break;
  bool sysmon_ok = pthread_create(&sched.sysmon, &attr, sysmon_main, NULL) == 0;
  pthread_attr_destroy(&attr);

  if (started < goro__nprocs || !sysmon_ok) {
    /* Fewer threads than Ps would strand goroutines on their run queues. */
    goro__fatal_thread_fini(&allm[0]);
    goro__tls_m = NULL;
    __atomic_store_n(&sched.shutdown, true, __ATOMIC_SEQ_CST);
    for (int i = 1; i < started; i++) {
      __atomic_store_n(&allm[i].sleeping, 0, __ATOMIC_RELEASE);
      goro__futex_wake(&allm[i].sleeping, 1);
      pthread_join(allm[i].thread, NULL);
    }
    if (sysmon_ok) {
      wake_sysmon();
      pthread_join(sched.sysmon, NULL);
    }
    err = GORO_ETHREAD;
    goto out_running;
  }

  schedule(&allm[0]);

  for (int i = 1; i < goro__nprocs; i++)
    pthread_join(allm[i].thread, NULL);
  wake_sysmon();
  pthread_join(sched.sysmon, NULL);
  /* A pool thread may still ready a goroutine; queues are dropped below. */
  goro__blocking_fini();
  quiesce_foreign();
  goro__fatal_thread_fini(&allm[0]);
  goro__tls_m = NULL;
  err = sched.main_status;

out_running:
  __atomic_store_n(&goro__running, false, __ATOMIC_RELEASE);
  goro__trace_fini();
  fold_stats();
out_mem:
  free(goro__allp);
  free(allm);
  goro__allp = NULL;
  allm = NULL;
  goro__nprocs = 0;
  goro__netpoll_fini();
out_fatal:
  goro__fatal_fini();
out_stack:
  goro__stack_fini();
out:
  __atomic_store_n(&entered, 0, __ATOMIC_RELEASE);
  return err;
}
