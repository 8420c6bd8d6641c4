/*
 * lock.h: the two low-level waiting tools of the runtime.
 *
 * goro__spinlock guards short critical sections (a channel's queues, a run
 * queue overflow, the timer heap). Holders never park or make system calls
 * while holding one, so spinning with a pause, then sched_yield, is enough.
 *
 * goro__futex_wait/wake put an OS thread to sleep on a 32-bit word; only
 * idle workers and the monitor thread sleep, never a goroutine.
 */
#ifndef GORO_LOCK_H
#define GORO_LOCK_H

#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef struct goro__spinlock {
  uint32_t locked;
} goro__spinlock;

static inline void goro__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static inline void goro__spin_lock_word(uint32_t *word) {
  for (int spins = 0;; spins++) {
    if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 &&
        !__atomic_exchange_n(word, 1, __ATOMIC_ACQUIRE))
      return;
    if (spins < 64)
      goro__cpu_relax();
    else
      sched_yield();
  }
}

static inline void goro__spin_unlock_word(uint32_t *word) {
  __atomic_store_n(word, 0, __ATOMIC_RELEASE);
}

static inline void goro__spin_lock(goro__spinlock *l) { goro__spin_lock_word(&l->locked); }
static inline void goro__spin_unlock(goro__spinlock *l) { goro__spin_unlock_word(&l->locked); }

/* Sleeps while *word == expected, at most timeout_ns when that is >= 0. */
static inline void goro__futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
  struct timespec ts, *tsp = NULL;

  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    tsp = &ts;
  }
  syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, tsp, NULL, 0);
}

static inline void goro__futex_wake(uint32_t *word, int count) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

static inline int64_t goro__nanotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
