/*
 * sync.c: Mutex and WaitGroup that park goroutines, not threads.
 *
 * Both keep a FIFO of parked goroutines, as waiter records on the waiters'
 * own stacks, under a spinlock embedded in the public struct (a zero-filled
 * object is valid). Mutex unlock hands the lock directly to the first
 * waiter, so a waiter cannot be starved by goroutines that keep arriving.
 */
#include <stdint.h>

#include "sched.h"

typedef struct sync_waiter {
  goro__g *g;
  struct sync_waiter *next;
} sync_waiter;

static void push_waiter(void **head, void **tail, sync_waiter *w) {
  w->next = NULL;
  if (*tail)
    ((sync_waiter *)*tail)->next = w;
  else
    *head = w;
  *tail = w;
}

static sync_waiter *pop_waiter(void **head, void **tail) {
  sync_waiter *w = *head;

  if (w) {
    *head = w->next;
    if (!*head)
      *tail = NULL;
  }
  return w;
}

static void unlock_word_after_park(goro__g *g, void *arg) {
  (void)g;
  goro__spin_unlock_word(arg);
}

int goro_mutex_lock(goro_mutex *m) {
  if (!m)
    return GORO_EINVAL;
  goro__spin_lock_word(&m->goro_lock_);
  if (!m->goro_locked_) {
    m->goro_locked_ = 1;
    goro__spin_unlock_word(&m->goro_lock_);
    return 0;
  }

  goro__g *g = goro__getg();
  if (!g) {
    goro__spin_unlock_word(&m->goro_lock_);
    return GORO_ENOTGORO;
  }
  /* Ownership arrives with the wakeup: unlock leaves goro_locked_ set. */
  sync_waiter w = {.g = g};
  push_waiter(&m->goro_head_, &m->goro_tail_, &w);
  goro__park(unlock_word_after_park, &m->goro_lock_);
  return 0;
}

int goro_mutex_trylock(goro_mutex *m) {
  int err = GORO_EAGAIN;

  if (!m)
    return GORO_EINVAL;
  goro__spin_lock_word(&m->goro_lock_);
  if (!m->goro_locked_) {
    m->goro_locked_ = 1;
    err = 0;
  }
  goro__spin_unlock_word(&m->goro_lock_);
  return err;
}

int goro_mutex_unlock(goro_mutex *m) {
  if (!m)
    return GORO_EINVAL;
  goro__spin_lock_word(&m->goro_lock_);
  if (!m->goro_locked_) {
    goro__spin_unlock_word(&m->goro_lock_);
    return GORO_EINVAL;
  }
  sync_waiter *w = pop_waiter(&m->goro_head_, &m->goro_tail_);
  if (!w)
    m->goro_locked_ = 0;
  goro__spin_unlock_word(&m->goro_lock_);

  if (w)
    goro__ready(w->g);
  return 0;
}

int goro_wg_add(goro_waitgroup *wg, int64_t delta) {
  sync_waiter *woken = NULL;

  if (!wg)
    return GORO_EINVAL;
  goro__spin_lock_word(&wg->goro_lock_);
  /* Checked without computing an overflowing sum (undefined in C). */
  int64_t old = wg->goro_count_;
  if (delta > 0 ? old > INT64_MAX - delta : old + delta < 0) {
    goro__spin_unlock_word(&wg->goro_lock_);
    return GORO_ERANGE;
  }
  int64_t count = old + delta;
  wg->goro_count_ = count;
  if (count == 0) {
    woken = wg->goro_head_;
    wg->goro_head_ = wg->goro_tail_ = NULL;
  }
  goro__spin_unlock_word(&wg->goro_lock_);

  while (woken) {
    sync_waiter *w = woken;
    woken = w->next; /* read before the waiter's frame can go away */
    goro__ready(w->g);
  }
  return 0;
}

int goro_wg_done(goro_waitgroup *wg) { return goro_wg_add(wg, -1); }

int goro_wg_wait(goro_waitgroup *wg) {
  if (!wg)
    return GORO_EINVAL;
  goro__spin_lock_word(&wg->goro_lock_);
  if (wg->goro_count_ == 0) {
    goro__spin_unlock_word(&wg->goro_lock_);
    return 0;
  }
  goro__g *g = goro__getg();
  if (!g) {
    goro__spin_unlock_word(&wg->goro_lock_);
    return GORO_ENOTGORO;
  }
  sync_waiter w = {.g = g};
  push_waiter(&wg->goro_head_, &wg->goro_tail_, &w);
  goro__park(unlock_word_after_park, &wg->goro_lock_);
  return 0;
}
