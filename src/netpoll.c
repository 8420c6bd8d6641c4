/*
 * netpoll.c: goroutine-blocking I/O on sockets, pipes and other pollable
 * descriptors, through one epoll instance and a poller thread.
 *
 * goro_read and friends try the system call on a non-blocking descriptor;
 * on EAGAIN the goroutine parks on the descriptor's read or write latch and
 * its worker runs other goroutines. The poller thread sleeps in epoll_wait
 * and, for each readiness event, opens the latch: a parked goroutine is
 * readied, or the readiness is remembered for the next attempt.
 *
 * Workers about to go idle also poll (without waiting), which saves the
 * hop through the poller thread when the process is busy.
 *
 * Each descriptor is registered once, edge-triggered, for both directions.
 * A latch is one word: 0 (nothing), LATCH_READY (an event arrived that
 * nobody consumed) or the parked goroutine. Parking publishes the goroutine
 * in the latch from g0, after its context is saved (see park_on_latch), so
 * the poller can never ready a goroutine that is still running. Because the
 * latch keeps an unconsumed event, an event that arrives between the failed
 * system call and the park is not lost.
 *
 * Descriptors are found through a two-level table indexed by fd, so the
 * poller reads it without a lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sched.h"

#define LATCH_READY ((uintptr_t)1)
#define CHUNK_FDS 1024
#define MAX_CHUNKS 4096 /* descriptors 0 .. 4M - 1 */

typedef struct poll_desc {
  uintptr_t latch[2];   /* [0] read, [1] write */
  uint32_t registered;  /* 1 once in the epoll set */
  uint32_t generation;  /* bumped by goro_close: a woken waiter's fd is gone */
} poll_desc;

static struct {
  int epfd;
  int wakefd;
  pthread_t thread;
  bool started;
  uint32_t stop;
  uint32_t registered_fds; /* registrations ever made in this run */
  goro__spinlock table_lock;
  poll_desc *chunks[MAX_CHUNKS];
} np = {.epfd = -1, .wakefd = -1};

/* Returns fd's descriptor record, creating it if needed; NULL when fd is
 * out of range or memory is out. */
static poll_desc *desc_of(int fd) {
  if (fd < 0 || fd >= CHUNK_FDS * MAX_CHUNKS)
    return NULL;
  poll_desc **slot = &np.chunks[fd / CHUNK_FDS];
  poll_desc *chunk = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
  if (!chunk) {
    goro__spin_lock(&np.table_lock);
    chunk = *slot;
    if (!chunk) {
      chunk = calloc(CHUNK_FDS, sizeof *chunk);
      __atomic_store_n(slot, chunk, __ATOMIC_RELEASE);
    }
    goro__spin_unlock(&np.table_lock);
    if (!chunk)
      return NULL;
  }
  return &chunk[fd % CHUNK_FDS];
}

/* Opens a latch: readies its goroutine, or remembers the event. */
static void latch_open(uintptr_t *latch) {
  for (;;) {
    uintptr_t old = __atomic_load_n(latch, __ATOMIC_ACQUIRE);
    if (old == LATCH_READY)
      return;
    uintptr_t next = old ? 0 : LATCH_READY;
    if (!__atomic_compare_exchange_n(latch, &old, next, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
      continue;
    if (old)
      goro__ready((goro__g *)old);
    return;
  }
}

/* Opens the latches of n events; returns how many goroutines it readied
 * or marked ready. */
static int dispatch(const struct epoll_event *events, int n) {
  int opened = 0;

  for (int i = 0; i < n; i++) {
    int fd = events[i].data.fd;
    uint32_t ev = events[i].events;
    if (fd == np.wakefd)
      continue;
    poll_desc *pd = desc_of(fd);
    if (!pd)
      continue;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      latch_open(&pd->latch[0]);
      opened++;
    }
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
      latch_open(&pd->latch[1]);
      opened++;
    }
  }
  return opened;
}

static void *poller_main(void *arg) {
  struct epoll_event events[128];
  (void)arg;

  while (!__atomic_load_n(&np.stop, __ATOMIC_ACQUIRE)) {
    int n = epoll_wait(np.epfd, events, 128, -1);
    if (n > 0)
      dispatch(events, n);
  }
  return NULL;
}

int goro__netpoll_poll(void) {
  struct epoll_event events[64];

  /* Nothing registered: skip the system call. */
  if (!__atomic_load_n(&np.registered_fds, __ATOMIC_RELAXED) || np.epfd < 0)
    return 0;
  int n = epoll_wait(np.epfd, events, 64, 0);
  return n > 0 ? dispatch(events, n) : 0;
}

int goro__netpoll_init(void) {
  np.stop = 0;
  np.epfd = epoll_create1(EPOLL_CLOEXEC);
  np.wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (np.epfd < 0 || np.wakefd < 0)
    goto fail;
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = np.wakefd};
  if (epoll_ctl(np.epfd, EPOLL_CTL_ADD, np.wakefd, &ev) != 0)
    goto fail;
  if (pthread_create(&np.thread, NULL, poller_main, NULL) != 0)
    goto fail;
  np.started = true;
  return 0;

fail:
  if (np.epfd >= 0)
    close(np.epfd);
  if (np.wakefd >= 0)
    close(np.wakefd);
  np.epfd = np.wakefd = -1;
  return GORO_ETHREAD;
}

void goro__netpoll_fini(void) {
  uint64_t one = 1;

  if (np.started) {
    __atomic_store_n(&np.stop, 1, __ATOMIC_RELEASE);
    if (write(np.wakefd, &one, sizeof one) < 0)
      np.started = true; /* the eventfd cannot be full; nothing to do */
    pthread_join(np.thread, NULL);
    np.started = false;
  }
  if (np.epfd >= 0)
    close(np.epfd);
  if (np.wakefd >= 0)
    close(np.wakefd);
  np.epfd = np.wakefd = -1;
  /* Registrations belong to the closed epoll instance; goroutines parked
   * on descriptors were abandoned with the runtime. */
  for (int i = 0; i < MAX_CHUNKS; i++) {
    free(np.chunks[i]);
    np.chunks[i] = NULL;
  }
}

/* Registers fd (non-blocking, edge-triggered, both directions). Returns 0,
 * or -1 with errno set: EPERM for descriptors epoll cannot watch, such as
 * regular files. That result is not remembered: the number may belong to a
 * socket after a plain close(), and regular files are better read through
 * goro_run_blocking anyway. */
static int ensure_registered(int fd, poll_desc *pd) {
  if (__atomic_load_n(&pd->registered, __ATOMIC_ACQUIRE) == 1)
    return 0;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0)
    return -1;
  if (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
    return -1;
  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.fd = fd,
  };
  if (epoll_ctl(np.epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno != EEXIST)
    return -1;
  /* A fresh registration reports the current state as an edge, so old
   * latch contents cannot hide readiness. */
  __atomic_store_n(&pd->registered, 1, __ATOMIC_RELEASE);
  __atomic_fetch_add(&np.registered_fds, 1, __ATOMIC_RELAXED);
  return 0;
}

typedef struct latch_park {
  uintptr_t *latch;
} latch_park;

/* Runs on g0 after the goroutine switched out: publish it in the latch,
 * unless an event arrived meanwhile, in which case run it again at once. */
static void park_on_latch(goro__g *g, void *arg) {
  uintptr_t *latch = ((latch_park *)arg)->latch;
  uintptr_t expected = 0;

  if (__atomic_compare_exchange_n(latch, &expected, (uintptr_t)g, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    return;
  /* expected is LATCH_READY: consume it and retry. */
  __atomic_store_n(latch, 0, __ATOMIC_RELEASE);
  goro__ready(g);
}

/* Waits until a direction of fd may be ready. From a plain thread (no
 * goroutine) it blocks the thread in poll(2). */
static int wait_ready(int fd, int dir) {
  goro__g *g = goro__getg();

  if (!g || !__atomic_load_n(&goro__running, __ATOMIC_ACQUIRE)) {
    struct pollfd p = {.fd = fd, .events = dir ? POLLOUT : POLLIN};
    return poll(&p, 1, -1) < 0 ? -1 : 0;
  }
  poll_desc *pd = desc_of(fd);
  if (!pd) {
    errno = fd < 0 ? EBADF : ENOMEM;
    return -1;
  }
  if (ensure_registered(fd, pd) != 0)
    return -1;

  /* The record may be stale: a plain close() and a new descriptor with the
   * same number leave it "registered" while epoll has dropped the old file.
   * Re-arming then fails with ENOENT; then register afresh, which also makes the
   * new descriptor non-blocking, and let the caller try again. MOD also
   * re-arms the edge, so readiness present now is reported. */
  struct epoll_event ev = {
      .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
      .data.fd = fd,
  };
  if (epoll_ctl(np.epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
    if (errno != ENOENT)
      return -1;
    __atomic_store_n(&pd->registered, 0, __ATOMIC_RELEASE);
    return ensure_registered(fd, pd);
  }

  /* An unconsumed event means "try again now". */
  uintptr_t ready = LATCH_READY;
  if (__atomic_compare_exchange_n(&pd->latch[dir], &ready, 0, false, __ATOMIC_ACQ_REL,
                                  __ATOMIC_ACQUIRE))
    return 0;
  if (ready != 0) {
    errno = EBUSY; /* another goroutine already waits in this direction */
    return -1;
  }
  uint32_t generation = __atomic_load_n(&pd->generation, __ATOMIC_ACQUIRE);
  latch_park park = {.latch = &pd->latch[dir]};
  goro__park(park_on_latch, &park);
  if (__atomic_load_n(&pd->generation, __ATOMIC_ACQUIRE) != generation) {
    errno = EBADF; /* closed with goro_close while we waited */
    return -1;
  }
  return 0;
}

int goro_fd_wait(int fd, int events) {
  if (fd < 0 || !(events & (GORO_POLL_READ | GORO_POLL_WRITE)) ||
      (events & ~(GORO_POLL_READ | GORO_POLL_WRITE))) {
    errno = EINVAL;
    return -1;
  }
  if (!goro__getg()) {
    struct pollfd p = {.fd = fd, .events = 0};
    if (events & GORO_POLL_READ)
      p.events |= POLLIN;
    if (events & GORO_POLL_WRITE)
      p.events |= POLLOUT;
    return poll(&p, 1, -1) < 0 ? -1 : 0;
  }
  /* Both directions: wait for read readiness, the common case for a
   * server; a goroutine that needs both waits twice. */
  return wait_ready(fd, (events & GORO_POLL_READ) ? 0 : 1);
}

/* Makes fd non-blocking and known to the poller before the first attempt,
 * so that the first system call cannot block the worker. */
static int prepare(int fd) {
  if (!goro__getg() || !__atomic_load_n(&goro__running, __ATOMIC_ACQUIRE))
    return 0;
  poll_desc *pd = desc_of(fd);
  if (!pd)
    return 0;
  if (ensure_registered(fd, pd) != 0 && errno != EPERM)
    return -1;
  return 0;
}

ssize_t goro_read(int fd, void *buf, size_t count) {
  if (prepare(fd) != 0)
    return -1;
  for (;;) {
    ssize_t n = read(fd, buf, count);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      return n;
    if (wait_ready(fd, 0) != 0)
      return -1;
  }
}

/* Writes like write(2), but to a socket with MSG_NOSIGNAL: a peer that
 * closed makes the call fail with EPIPE instead of killing the process with
 * SIGPIPE, which a server would otherwise die of. */
static ssize_t write_nosignal(int fd, const void *buf, size_t count) {
  ssize_t n = send(fd, buf, count, MSG_NOSIGNAL);
  if (n < 0 && errno == ENOTSOCK)
    n = write(fd, buf, count);
  return n;
}

ssize_t goro_write(int fd, const void *buf, size_t count) {
  if (prepare(fd) != 0)
    return -1;
  for (;;) {
    ssize_t n = write_nosignal(fd, buf, count);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      return n;
    if (wait_ready(fd, 1) != 0)
      return -1;
  }
}

int goro_accept(int fd, struct sockaddr *addr, socklen_t *addrlen) {
  if (prepare(fd) != 0)
    return -1;
  for (;;) {
    int conn = accept4(fd, addr, addrlen, SOCK_CLOEXEC);
    if (conn >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      return conn;
    if (wait_ready(fd, 0) != 0)
      return -1;
  }
}

int goro_connect(int fd, const struct sockaddr *addr, socklen_t addrlen) {
  if (prepare(fd) != 0)
    return -1;
  if (connect(fd, addr, addrlen) == 0)
    return 0;
  if (errno != EINPROGRESS)
    return -1;

  /* Writable means the handshake ended, but an event left from before the
   * connect can wake us early: ask the socket, and wait again while it is
   * still connecting. */
  for (;;) {
    if (wait_ready(fd, 1) != 0)
      return -1;
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
      return -1;
    if (err) {
      errno = err;
      return -1;
    }
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0)
      return 0;
    if (errno != ENOTCONN)
      return -1;
  }
}

int goro_close(int fd) {
  poll_desc *pd = desc_of(fd);

  if (pd && np.epfd >= 0 && __atomic_load_n(&pd->registered, __ATOMIC_ACQUIRE) == 1)
    epoll_ctl(np.epfd, EPOLL_CTL_DEL, fd, NULL);
  int rc = close(fd);
  if (pd) {
    /* Close first, then wake: a goroutine parked on fd finds a new
     * generation and fails with EBADF, even if the number is reused. */
    __atomic_store_n(&pd->registered, 0, __ATOMIC_RELEASE);
    __atomic_add_fetch(&pd->generation, 1, __ATOMIC_RELEASE);
    latch_open(&pd->latch[0]);
    latch_open(&pd->latch[1]);
  }
  return rc;
}
