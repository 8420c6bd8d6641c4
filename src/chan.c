/*
 * chan.c: channels and select.
 *
 * A channel is a ring buffer of cap elements plus two FIFO queues of
 * waiting goroutines (senders and receivers), all under one spinlock. A
 * waiting goroutine is represented by a waiter record that lives on its own
 * stack: the goroutine is parked, so the frame that contains the record stays
 * valid until the waker is done with it.
 *
 * Hand-off: a sender that finds a waiting receiver copies the element
 * straight into the receiver's destination and readies it; a receiver that
 * finds a waiting sender of a buffered channel takes the buffer head and
 * moves the sender's element to the buffer tail, so order is kept.
 *
 * Select enqueues one waiter per case on every channel involved, then parks.
 * The first waker to claim the goroutine (a CAS on g->select_done) wins; the
 * others skip that waiter. After waking, the goroutine removes its remaining
 * waiters. Channels are always locked in address order, so two selects over
 * the same channels cannot deadlock.
 *
 * Where Go panics (send on a closed channel, closing a closed channel),
 * these functions return GORO_ECLOSED.
 */
#include <stdlib.h>
#include <string.h>

#include "sched.h"

typedef struct waiter {
  goro__g *g;
  void *elem;            /* where to copy from (send) or to (receive) */
  struct waiter *next, *prev;
  goro_chan *chan;
  int case_index;        /* select case, or -1 */
  bool is_select;
  bool success;          /* false when woken by close */
} waiter;

typedef struct waitq {
  waiter *head, *tail;
} waitq;

struct goro_chan {
  goro__spinlock lock;
  bool closed;
  size_t elem_size;
  size_t cap;
  size_t count;
  size_t recv_index;     /* buffer slot to receive from next */
  size_t send_index;     /* buffer slot to send into next */
  waitq recvq, sendq;
  unsigned char *buf;
};

static void waitq_push(waitq *q, waiter *w) {
  w->next = NULL;
  w->prev = q->tail;
  if (q->tail)
    q->tail->next = w;
  else
    q->head = w;
  q->tail = w;
}

static void waitq_remove(waitq *q, waiter *w) {
  if (w->prev)
    w->prev->next = w->next;
  else if (q->head == w)
    q->head = w->next;
  else
    return; /* not queued */
  if (w->next)
    w->next->prev = w->prev;
  else
    q->tail = w->prev;
  w->next = w->prev = NULL;
}

/* Removes and returns the first waiter that can still be woken. A select
 * waiter whose goroutine was already claimed by another case is dropped. */
static waiter *waitq_pop(waitq *q) {
  for (waiter *w = q->head; w; w = q->head) {
    waitq_remove(q, w);
    if (!w->is_select)
      return w;
    uint32_t expected = 0;
    if (__atomic_compare_exchange_n(&w->g->select_done, &expected, 1, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
      return w;
  }
  return NULL;
}

static void copy_elem(goro_chan *c, void *dst, const void *src) {
  if (c->elem_size && dst && src)
    memcpy(dst, src, c->elem_size);
}

static void zero_elem(goro_chan *c, void *dst) {
  if (c->elem_size && dst)
    memset(dst, 0, c->elem_size);
}

static void *slot_at(goro_chan *c, size_t index) { return c->buf + index * c->elem_size; }

static void wake(waiter *w, bool success) {
  w->success = success;
  w->g->param = w;
  goro__ready(w->g);
}

int goro_chan_make(goro_chan **out, size_t elem_size, size_t capacity) {
  if (!out)
    return GORO_EINVAL;
  *out = NULL;
  if (elem_size > ((size_t)1 << 30) || capacity > ((size_t)1 << 40) ||
      (elem_size && capacity > SIZE_MAX / elem_size))
    return GORO_EINVAL;

  goro_chan *c = calloc(1, sizeof *c);
  if (!c)
    return GORO_ENOMEM;
  if (capacity && elem_size) {
    c->buf = malloc(capacity * elem_size);
    if (!c->buf) {
      free(c);
      return GORO_ENOMEM;
    }
  }
  c->elem_size = elem_size;
  c->cap = capacity;
  *out = c;
  return 0;
}

int goro_chan_free(goro_chan *c) {
  if (!c)
    return GORO_EINVAL;
  goro__spin_lock(&c->lock);
  bool busy = c->recvq.head || c->sendq.head;
  goro__spin_unlock(&c->lock);
  if (busy)
    return GORO_EBUSY;
  free(c->buf);
  free(c);
  return 0;
}

/* Sends under c->lock without waiting. Returns 0, GORO_ECLOSED or
 * GORO_EAGAIN; on 0 or GORO_ECLOSED the lock is released. */
static int send_locked(goro_chan *c, const void *elem) {
  if (c->closed) {
    goro__spin_unlock(&c->lock);
    return GORO_ECLOSED;
  }
  waiter *w = waitq_pop(&c->recvq);
  if (w) {
    copy_elem(c, w->elem, elem);
    goro__spin_unlock(&c->lock);
    wake(w, true);
    return 0;
  }
  if (c->count < c->cap) {
    copy_elem(c, slot_at(c, c->send_index), elem);
    c->send_index = (c->send_index + 1) % c->cap;
    c->count++;
    goro__spin_unlock(&c->lock);
    return 0;
  }
  return GORO_EAGAIN;
}

/* Receives under c->lock without waiting; same contract as send_locked. */
static int recv_locked(goro_chan *c, void *elem) {
  waiter *w = waitq_pop(&c->sendq);

  if (w) {
    if (c->count == 0) {
      copy_elem(c, elem, w->elem);
    } else {
      /* Senders wait only on a full buffer: take its head, then append the
       * sender's element, so the sender's value queues behind the others. */
      copy_elem(c, elem, slot_at(c, c->recv_index));
      c->recv_index = (c->recv_index + 1) % c->cap;
      copy_elem(c, slot_at(c, c->send_index), w->elem);
      c->send_index = (c->send_index + 1) % c->cap;
    }
    goro__spin_unlock(&c->lock);
    wake(w, true);
    return 0;
  }
  if (c->count > 0) {
    copy_elem(c, elem, slot_at(c, c->recv_index));
    c->recv_index = (c->recv_index + 1) % c->cap;
    c->count--;
    goro__spin_unlock(&c->lock);
    return 0;
  }
  if (c->closed) {
    goro__spin_unlock(&c->lock);
    zero_elem(c, elem);
    return GORO_ECLOSED;
  }
  return GORO_EAGAIN;
}

static void unlock_chan_after_park(goro__g *g, void *arg) {
  (void)g;
  goro__spin_unlock(&((goro_chan *)arg)->lock);
}

/* Parks on one queue of c; c->lock is held and released by the park. */
static int wait_on(goro_chan *c, waitq *q, void *elem, goro__g *g) {
  waiter w = {.g = g, .elem = elem, .chan = c, .case_index = -1};

  waitq_push(q, &w);
  goro__park(unlock_chan_after_park, c);
  return w.success ? 0 : GORO_ECLOSED;
}

int goro_chan_send(goro_chan *c, const void *elem) {
  if (!c || (!elem && c->elem_size))
    return GORO_EINVAL;
  goro__g *g = goro__getg();

  goro__spin_lock(&c->lock);
  int err = send_locked(c, elem);
  if (err != GORO_EAGAIN)
    return err;
  if (!g) {
    goro__spin_unlock(&c->lock);
    return GORO_ENOTGORO;
  }
  /* The element is copied by the receiver straight from our frame. */
  return wait_on(c, &c->sendq, (void *)elem, g);
}

int goro_chan_recv(goro_chan *c, void *elem) {
  if (!c)
    return GORO_EINVAL;
  goro__g *g = goro__getg();

  goro__spin_lock(&c->lock);
  int err = recv_locked(c, elem);
  if (err != GORO_EAGAIN)
    return err;
  if (!g) {
    goro__spin_unlock(&c->lock);
    return GORO_ENOTGORO;
  }
  err = wait_on(c, &c->recvq, elem, g);
  if (err)
    zero_elem(c, elem);
  return err;
}

int goro_chan_try_send(goro_chan *c, const void *elem) {
  if (!c || (!elem && c->elem_size))
    return GORO_EINVAL;
  goro__spin_lock(&c->lock);
  int err = send_locked(c, elem);
  if (err == GORO_EAGAIN)
    goro__spin_unlock(&c->lock);
  return err;
}

int goro_chan_try_recv(goro_chan *c, void *elem) {
  if (!c)
    return GORO_EINVAL;
  goro__spin_lock(&c->lock);
  int err = recv_locked(c, elem);
  if (err == GORO_EAGAIN)
    goro__spin_unlock(&c->lock);
  return err;
}

int goro_chan_close(goro_chan *c) {
  waiter *woken = NULL;

  if (!c)
    return GORO_EINVAL;
  goro__spin_lock(&c->lock);
  if (c->closed) {
    goro__spin_unlock(&c->lock);
    return GORO_ECLOSED;
  }
  c->closed = true;

  /* Collect every waiter first and wake them after unlocking: a woken
   * goroutine may run at once on another thread and touch c. The next
   * field is free to reuse once a waiter is off its queue. */
  waiter *w;
  while ((w = waitq_pop(&c->recvq))) {
    zero_elem(c, w->elem);
    w->next = woken;
    woken = w;
  }
  while ((w = waitq_pop(&c->sendq))) {
    w->next = woken;
    woken = w;
  }
  goro__spin_unlock(&c->lock);

  while (woken) {
    w = woken;
    woken = w->next;
    wake(w, false);
  }
  return 0;
}

int64_t goro_chan_len(goro_chan *c) {
  if (!c)
    return GORO_EINVAL;
  return (int64_t)__atomic_load_n(&c->count, __ATOMIC_RELAXED);
}

int64_t goro_chan_cap(goro_chan *c) {
  if (!c)
    return GORO_EINVAL;
  return (int64_t)c->cap;
}

/* ---- Select ----------------------------------------------------------- */

#define SELECT_STACK_CASES 16
#define SELECT_MAX_CASES 65536

typedef struct select_state {
  goro_select_case *cases;
  size_t ncases;
  goro_chan **locks;     /* distinct channels, in address order */
  size_t nlocks;
  size_t *order;         /* random poll order */
} select_state;

static int compare_chan(const void *a, const void *b) {
  uintptr_t x = (uintptr_t) * (goro_chan *const *)a;
  uintptr_t y = (uintptr_t) * (goro_chan *const *)b;
  return x < y ? -1 : x > y;
}

static void lock_all(select_state *s) {
  for (size_t i = 0; i < s->nlocks; i++)
    goro__spin_lock(&s->locks[i]->lock);
}

static void unlock_all(select_state *s) {
  for (size_t i = s->nlocks; i-- > 0;)
    goro__spin_unlock(&s->locks[i]->lock);
}

static void unlock_all_after_park(goro__g *g, void *arg) {
  (void)g;
  unlock_all(arg);
}

/* Releases every lock except c's, so that send_locked/recv_locked can
 * release c's own. */
static void unlock_others(select_state *s, goro_chan *c) {
  for (size_t i = s->nlocks; i-- > 0;)
    if (s->locks[i] != c)
      goro__spin_unlock(&s->locks[i]->lock);
}

/* Tries the cases in poll order with every lock held. Returns the index of
 * the case performed (locks released) or -1 (locks still held). */
static int select_poll(select_state *s) {
  for (size_t k = 0; k < s->ncases; k++) {
    size_t i = s->order[k];
    goro_select_case *sc = &s->cases[i];
    goro_chan *c = sc->chan;
    int err;

    if (!c)
      continue;
    /* Probe without side effects first: the *_locked helpers release c's
     * lock only when they succeed, and the others must go at that moment. */
    if (sc->op == GORO_SELECT_SEND) {
      bool ready = c->closed || c->count < c->cap || c->recvq.head;
      if (!ready)
        continue;
      unlock_others(s, c);
      err = send_locked(c, sc->elem);
    } else {
      bool ready = c->closed || c->count > 0 || c->sendq.head;
      if (!ready)
        continue;
      unlock_others(s, c);
      err = recv_locked(c, sc->elem);
    }
    if (err == GORO_EAGAIN) {
      /* The only waiters were select waiters already claimed elsewhere
       * (now dropped). The other locks were released meanwhile, so the
       * cases polled before may have changed: poll them all again. A
       * select that went on from here could queue a sender on a buffer
       * with room, which receivers would then read past. */
      goro__spin_unlock(&c->lock);
      lock_all(s);
      k = (size_t)-1;
      continue;
    }
    sc->result = err;
    return (int)i;
  }
  return -1;
}

static int select_block(select_state *s, goro__g *g, waiter *waiters) {
  g->select_done = 0;
  g->param = NULL;
  for (size_t i = 0; i < s->ncases; i++) {
    goro_select_case *sc = &s->cases[i];
    waiter *w = &waiters[i];
    memset(w, 0, sizeof *w);
    if (!sc->chan)
      continue;
    w->g = g;
    w->elem = sc->elem;
    w->chan = sc->chan;
    w->case_index = (int)i;
    w->is_select = true;
    waitq_push(sc->op == GORO_SELECT_SEND ? &sc->chan->sendq : &sc->chan->recvq, w);
  }
  goro__park(unlock_all_after_park, s);

  /* Woken by exactly one case; dequeue the rest. */
  waiter *fired = g->param;
  lock_all(s);
  for (size_t i = 0; i < s->ncases; i++) {
    goro_select_case *sc = &s->cases[i];
    if (!sc->chan || &waiters[i] == fired)
      continue;
    waitq_remove(sc->op == GORO_SELECT_SEND ? &sc->chan->sendq : &sc->chan->recvq, &waiters[i]);
  }
  unlock_all(s);

  goro_select_case *won = &s->cases[fired->case_index];
  won->result = fired->success ? 0 : GORO_ECLOSED;
  if (!fired->success && won->op == GORO_SELECT_RECV)
    zero_elem(won->chan, won->elem);
  return fired->case_index;
}

int goro_select(goro_select_case *cases, size_t ncases, bool nonblocking) {
  goro__g *g = goro__getg();
  goro_chan *stack_locks[SELECT_STACK_CASES];
  size_t stack_order[SELECT_STACK_CASES];
  waiter stack_waiters[SELECT_STACK_CASES];
  select_state s = {.cases = cases, .ncases = ncases};
  waiter *waiters = stack_waiters;
  int result;

  if ((!cases && ncases) || ncases > SELECT_MAX_CASES)
    return GORO_EINVAL;
  for (size_t i = 0; i < ncases; i++) {
    if (cases[i].op != GORO_SELECT_SEND && cases[i].op != GORO_SELECT_RECV)
      return GORO_EINVAL;
    if (cases[i].op == GORO_SELECT_SEND && cases[i].chan && cases[i].chan->elem_size &&
        !cases[i].elem)
      return GORO_EINVAL;
    cases[i].result = 0;
  }
  if (!nonblocking && !g)
    return GORO_ENOTGORO;

  s.locks = stack_locks;
  s.order = stack_order;
  if (ncases > SELECT_STACK_CASES) {
    s.locks = malloc(ncases * sizeof *s.locks);
    s.order = malloc(ncases * sizeof *s.order);
    waiters = nonblocking ? NULL : malloc(ncases * sizeof *waiters);
    if (!s.locks || !s.order || (!nonblocking && !waiters)) {
      result = GORO_ENOMEM;
      goto out;
    }
  }

  /* Fisher-Yates poll order, so that no ready case starves another. */
  for (size_t i = 0; i < ncases; i++) {
    size_t j = (size_t)(goro__fastrand() % (i + 1));
    s.order[i] = s.order[j];
    s.order[j] = i;
  }
  for (size_t i = 0; i < ncases; i++)
    if (cases[i].chan)
      s.locks[s.nlocks++] = cases[i].chan;
  qsort(s.locks, s.nlocks, sizeof *s.locks, compare_chan);
  size_t distinct = 0;
  for (size_t i = 0; i < s.nlocks; i++)
    if (distinct == 0 || s.locks[distinct - 1] != s.locks[i])
      s.locks[distinct++] = s.locks[i];
  s.nlocks = distinct;

  lock_all(&s);
  result = select_poll(&s);
  if (result >= 0)
    goto out;
  if (nonblocking) {
    unlock_all(&s);
    result = GORO_EAGAIN;
    goto out;
  }
  result = select_block(&s, g, waiters);

out:
  if (s.locks != stack_locks) {
    free(s.locks);
    free(s.order);
    free(waiters);
  }
  return result;
}
