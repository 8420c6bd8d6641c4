/*
 * goro.h: goroutines for C.
 *
 * A goroutine is a function running on its own stack, scheduled M:N onto a
 * pool of OS threads. Each stack is a slot of reserved address space with a
 * guard region below it: it starts with one committed page, grows by demand
 * paging up to its maximum, never moves, and gives pages back when idle.
 * Running past the maximum is a fatal error with a report, like Go's
 * "fatal error: stack overflow".
 *
 * Errors: every function that can fail returns 0 (or a count, index or id)
 * on success and a negative GORO_E* code on failure. goro_strerror() turns a
 * code into a message. No function here aborts on bad input.
 *
 * Threads: goro_run() turns the calling thread into the first worker and
 * returns when the main goroutine returns. Blocking calls (channel send and
 * receive, select, sleep, mutex, wait group) park the calling goroutine, never
 * its thread. Made from outside a goroutine, a call that would have to wait
 * returns GORO_ENOTGORO instead (one that can complete at once, such as a
 * send into a buffer with room, succeeds). The non-blocking calls work from
 * any thread while the runtime runs.
 */
#ifndef GORO_H
#define GORO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define GORO_API __attribute__((visibility("default")))
#else
#define GORO_API
#endif

#define GORO_VERSION_MAJOR 0
#define GORO_VERSION_MINOR 1

/* ---- Errors ----------------------------------------------------------- */

/* X(name, value, message). One table: codes and messages never disagree. */
#define GORO_ERRORS(X)                                                        \
  X(GORO_EINVAL, -1, "invalid argument")                                      \
  X(GORO_ENOMEM, -2, "out of memory or stack address space")                  \
  X(GORO_ECLOSED, -3, "channel is closed")                                    \
  X(GORO_EAGAIN, -4, "operation would block")                                 \
  X(GORO_ENOTGORO, -5, "must be called from a goroutine: the call would "     \
    "wait, or acts on the calling goroutine")                                 \
  X(GORO_ESTATE, -6, "goro runtime is in the wrong state: not running (call " \
    "goro_run first) or already running")                                     \
  X(GORO_ERANGE, -7, "value out of range")                                    \
  X(GORO_EMAPLIMIT, -8,                                                       \
    "guard pages would exceed vm.max_map_count: guards are made with "        \
    "mprotect (kernel without MADV_GUARD_INSTALL, Linux < 6.13, or "          \
    "GORODEBUG=guardmode=mprotect); raise vm.max_map_count or call "          \
    "goro_allow_unguarded")                                                   \
  X(GORO_EBUSY, -9, "object is in use (goroutines are waiting on it)")        \
  X(GORO_ETHREAD, -10, "failed to start an OS thread")

enum {
#define GORO_ERROR_ENUM(name, value, message) name = value,
  GORO_ERRORS(GORO_ERROR_ENUM)
#undef GORO_ERROR_ENUM
};

/* Returns a static message for a GORO_E* code ("unknown error" otherwise). */
GORO_API const char *goro_strerror(int err);

/* ---- Runtime ---------------------------------------------------------- */

typedef void (*goro_fn)(void *arg);

/*
 * Starts the runtime, runs main_fn(arg) as the main goroutine and returns
 * its return value once it returns. The calling thread becomes worker 0;
 * GOROMAXPROCS (or goro_set_maxprocs) workers run in all. Goroutines still
 * parked or queued when main_fn returns are abandoned and their stacks
 * released, as Go drops them at exit. goro has no preemption, so goro_run
 * first waits for goroutines still running on other workers to park or
 * return. Channels, mutexes and wait groups that abandoned goroutines were
 * waiting on still point at their released stacks: do not use them after
 * goro_run returns (free a channel's memory with free() if needed).
 * Returns GORO_EINVAL for a NULL main_fn and GORO_ESTATE when called while
 * the runtime already runs. goro_run can be called again afterwards.
 */
GORO_API int goro_run(int (*main_fn)(void *arg), void *arg);

/* Options for goro_spawn_with. Zero-initialize, then set what you need. */
typedef struct goro_spawn_opts {
  size_t size;       /* sizeof(goro_spawn_opts), for versioning; 0 means current */
  size_t max_stack;  /* maximum stack in bytes; 0 means the global maximum */
  size_t stack_hint; /* bytes of stack to commit up front for frames, below the
                        descriptor; 0 means none */
} goro_spawn_opts;

/*
 * Starts fn(arg) as a new goroutine. Returns its id (> 0) or GORO_EINVAL
 * (NULL fn, bad options), GORO_ESTATE, GORO_ENOMEM or GORO_EMAPLIMIT.
 */
GORO_API int64_t goro_spawn(goro_fn fn, void *arg);
GORO_API int64_t goro_spawn_with(goro_fn fn, void *arg, const goro_spawn_opts *opts);

/* Ends the calling goroutine; called from the main goroutine it ends
 * goro_run as if main_fn had returned 0. Called outside a goroutine it
 * returns GORO_ENOTGORO. */
GORO_API int goro_exit(void);

/* Lets other goroutines run. Returns 0, or GORO_ENOTGORO. */
GORO_API int goro_yield(void);

/* Parks the calling goroutine for at least ns nanoseconds. */
GORO_API int goro_sleep(int64_t ns);

/* Returns the calling goroutine's id, or 0 outside a goroutine. */
GORO_API int64_t goro_id(void);

/* Returns the index (0..maxprocs-1) of the worker running the caller, or -1. */
GORO_API int goro_worker_index(void);

/*
 * Returns how many bytes of stack the calling goroutine can still use below
 * the current frame before its limit, or 0 outside a goroutine. A recursive
 * library can check it and stop before the fatal overflow.
 */
GORO_API size_t goro_stack_remaining(void);

/* Stack bounds of the calling goroutine's slot: the stack grows down from hi
 * to lo, the guard lies below lo, and the top 256 bytes below hi hold the
 * goroutine's descriptor. */
GORO_API int goro_stack_bounds(uintptr_t *lo, uintptr_t *hi);

/* ---- Settings --------------------------------------------------------- */

#define GORO_DEFAULT_MAX_STACK ((size_t)256 << 10)
#define GORO_MIN_MAX_STACK ((size_t)16 << 10)
#define GORO_MAX_MAX_STACK ((size_t)64 << 30)

/*
 * Sets the maximum stack for goroutines spawned later and returns the
 * previous maximum, like Go's debug.SetMaxStack. Stacks come in
 * power-of-two size classes from GORO_MIN_MAX_STACK (16 KiB) to
 * GORO_MAX_MAX_STACK (64 GiB), and the guard enforces the class size, so
 * bytes is rounded up to its class: 1 to 16 KiB give 16 KiB, 4 GiB + 1 gives
 * 8 GiB, and goro_max_stack() reads back the rounded value. 0 and values
 * above GORO_MAX_MAX_STACK are rejected: the call returns 0 (never a valid
 * maximum) and the setting stays.
 */
GORO_API size_t goro_set_max_stack(size_t bytes);
GORO_API size_t goro_max_stack(void);

/* Sets the worker count for the next goro_run (1..1024); 0 restores the default. */
GORO_API int goro_set_maxprocs(int n);

/*
 * Lets spawns continue without a guard page when guards cannot be installed
 * (old kernel and vm.max_map_count reached). Off by default: such spawns
 * fail with GORO_EMAPLIMIT. An unguarded stack that overflows corrupts its
 * neighbour silently.
 */
GORO_API void goro_allow_unguarded(bool allow);

/* ---- Stack policy ----------------------------------------------------- */

/*
 * How stacks shrink and start. A shrink cycle visits parked goroutines; one
 * whose used depth (at its saved stack pointer) is under a quarter of its
 * committed span gives back the pages below half of the span, as Go halves
 * a stack. Unlike Go, a stack that grew within its last hysteresis_cycles
 * cycles is left alone, so alternating deep and shallow work costs one
 * growth instead of one per cycle.
 */
typedef struct goro_stack_policy {
  size_t size;              /* sizeof(goro_stack_policy) */
  bool shrink;              /* shrink cycles give pages back (GORODEBUG gcshrinkstackoff=1 clears) */
  bool madv_free;           /* release with MADV_FREE instead of MADV_DONTNEED */
  bool adaptive_start;      /* new goroutines start at the average used stack */
  uint32_t hysteresis;      /* cycles after a growth during which a stack is kept; 0 = Go's rule */
  int64_t gc_period_ns;     /* automatic cycle period; 0 turns automatic cycles off */
} goro_stack_policy;

GORO_API int goro_get_stack_policy(goro_stack_policy *out);
GORO_API int goro_set_stack_policy(const goro_stack_policy *policy);

/*
 * Runs one shrink cycle now over the parked goroutines that parked since the
 * last cycle or hold more than one page, in batches, and returns the bytes
 * of stack released (or a negative GORO_E* code). Goroutines running or
 * runnable at that moment are skipped until they park again: a goroutine
 * just readied by a channel send may not be parked yet.
 */
GORO_API int64_t goro_gc(void);

/*
 * Like Go's debug.FreeOSMemory: runs goro_gc, empties the stack caches,
 * returns every free stack page to the OS, and removes the guards of free
 * slots so the kernel can free the page tables that held them (a slot gets
 * its guard back when next used). Returns the bytes of stack goro knew to
 * be resident and released; pages a goroutine touched between parks are
 * released too but not counted. Spawns wait while it runs.
 */
GORO_API int64_t goro_free_os_memory(void);

/* Stack facts of one goroutine, read without a walk over the others. */
typedef struct goro_stack_info {
  int64_t id;
  size_t current;   /* committed span now, bytes */
  size_t peak;      /* largest committed span seen, bytes */
  size_t max;       /* limit: usable bytes of its slot */
  uint64_t growths; /* times its span was seen to grow */
  uint64_t shrinks; /* times a cycle gave pages of it back */
} goro_stack_info;

/* Fills *out for the calling goroutine (GORO_ENOTGORO outside one). The span
 * is read exactly (one mincore call or a few), so a deep call that already
 * returned is counted. */
GORO_API int goro_stack_info_self(goro_stack_info *out);

/* Writes the statistics to fd in Prometheus text exposition format. */
GORO_API int goro_write_prometheus(int fd);

/* ---- Channels --------------------------------------------------------- */

typedef struct goro_chan goro_chan;

/* Creates a channel of elem_size-byte elements with room for capacity
 * buffered elements (0: unbuffered). elem_size may be 0 (signal channel). */
GORO_API int goro_chan_make(goro_chan **out, size_t elem_size, size_t capacity);

/* Frees a channel. Returns GORO_EBUSY and frees nothing while goroutines wait on it. */
GORO_API int goro_chan_free(goro_chan *c);

/* Sends *elem. Blocks until received or buffered. GORO_ECLOSED if closed
 * (Go panics here); GORO_EINVAL if elem is NULL and elements have a size. */
GORO_API int goro_chan_send(goro_chan *c, const void *elem);

/* Receives into *elem (which may be NULL to discard). Returns 0, or
 * GORO_ECLOSED once the channel is closed and drained (elem is zeroed). */
GORO_API int goro_chan_recv(goro_chan *c, void *elem);

/* Non-blocking forms: GORO_EAGAIN where the blocking form would wait. */
GORO_API int goro_chan_try_send(goro_chan *c, const void *elem);
GORO_API int goro_chan_try_recv(goro_chan *c, void *elem);

/* Closes c and wakes every waiter. GORO_ECLOSED if already closed. */
GORO_API int goro_chan_close(goro_chan *c);

/* Buffered element count and capacity (negative error for NULL). */
GORO_API int64_t goro_chan_len(goro_chan *c);
GORO_API int64_t goro_chan_cap(goro_chan *c);

enum goro_select_op { GORO_SELECT_SEND = 1, GORO_SELECT_RECV = 2 };

typedef struct goro_select_case {
  goro_chan *chan; /* NULL: the case is never ready, like a nil channel in Go */
  int op;          /* GORO_SELECT_SEND or GORO_SELECT_RECV */
  void *elem;      /* value to send, or where to receive (may be NULL) */
  int result;      /* out: 0, or GORO_ECLOSED when the chosen case found c closed */
} goro_select_case;

/*
 * Waits until one case can proceed, performs it and returns its index.
 * When several are ready, one is chosen uniformly at random. With
 * nonblocking set, returns GORO_EAGAIN if none is ready (Go's default case).
 * With no case ready and nothing that can become ready it blocks forever,
 * like Go's empty select.
 */
GORO_API int goro_select(goro_select_case *cases, size_t ncases, bool nonblocking);

/* ---- Sync ------------------------------------------------------------- */

/* Fields are internal. A zero-filled object is unlocked / has count 0. */
typedef struct goro_mutex {
  uint32_t goro_lock_;
  uint32_t goro_locked_;
  void *goro_head_, *goro_tail_;
} goro_mutex;
#define GORO_MUTEX_INIT {0, 0, 0, 0}

typedef struct goro_waitgroup {
  uint32_t goro_lock_;
  int64_t goro_count_;
  void *goro_head_, *goro_tail_;
} goro_waitgroup;
#define GORO_WAITGROUP_INIT {0, 0, 0, 0}

GORO_API int goro_mutex_lock(goro_mutex *m);
GORO_API int goro_mutex_trylock(goro_mutex *m); /* GORO_EAGAIN when held */
GORO_API int goro_mutex_unlock(goro_mutex *m);  /* GORO_EINVAL when not locked */

/* Adds delta; GORO_ERANGE (and no change) if the count would go negative. */
GORO_API int goro_wg_add(goro_waitgroup *wg, int64_t delta);
GORO_API int goro_wg_done(goro_waitgroup *wg);
GORO_API int goro_wg_wait(goro_waitgroup *wg);

/* ---- Goroutine-blocking I/O ----------------------------------------------
 *
 * For sockets, pipes, terminals and other descriptors epoll can watch: these
 * behave like the system calls they are named after (they return -1 and set
 * errno on failure), but when the call would block they park the calling
 * goroutine, not its worker thread, until the descriptor is ready. The first
 * call on a descriptor sets O_NONBLOCK on it (on the open file description,
 * which processes sharing it see too). Regular files cannot be polled and
 * are read and written directly. Called outside a goroutine they wait in
 * poll(2). goro_write on a socket whose peer has closed fails with EPIPE
 * rather than raising SIGPIPE. One goroutine at a time may wait per
 * direction of a descriptor;
 * a second gets EBUSY. Close such descriptors with goro_close, which wakes a
 * goroutine parked on them (its call then fails with EBADF).
 */
enum { GORO_POLL_READ = 1, GORO_POLL_WRITE = 2 };

GORO_API ssize_t goro_read(int fd, void *buf, size_t count);
GORO_API ssize_t goro_write(int fd, const void *buf, size_t count);
GORO_API int goro_accept(int fd, struct sockaddr *addr, socklen_t *addrlen);
GORO_API int goro_connect(int fd, const struct sockaddr *addr, socklen_t addrlen);
/* Parks until fd is readable (GORO_POLL_READ) or writable (GORO_POLL_WRITE). */
GORO_API int goro_fd_wait(int fd, int events);
GORO_API int goro_close(int fd);

/*
 * Runs fn(arg) on a thread of goro's blocking pool while the calling
 * goroutine parks, so that a call that blocks in the kernel (regular file
 * I/O, getaddrinfo) does not hold up the worker. Returns 0 when fn has
 * returned. Outside a goroutine it just calls fn. errno set by fn is the
 * pool thread's, so return results through arg.
 */
GORO_API int goro_run_blocking(goro_fn fn, void *arg);

/* ---- Object pool --------------------------------------------------------
 *
 * A per-worker cache of same-sized objects, like Go's sync.Pool: get and put
 * take no lock in the common case. Objects come from malloc (16-byte
 * aligned), so the caller may also free() one instead of putting it back.
 * goro_gc drops the objects a pool holds, as Go's GC empties sync.Pool.
 */
typedef struct goro_pool goro_pool;

GORO_API int goro_pool_make(goro_pool **out, size_t obj_size);
/* Returns a cached object or a new one; NULL if pool is NULL or memory is out. */
GORO_API void *goro_pool_get(goro_pool *pool);
GORO_API int goro_pool_put(goro_pool *pool, void *obj);
/* Frees the pool and the objects it caches (not the ones handed out). */
GORO_API int goro_pool_free(goro_pool *pool);

/* ---- Statistics ------------------------------------------------------- */

/*
 * How goro sees stack sizes. A goroutine's stack size is its committed span:
 * the bytes from the lowest page known to be resident up to the slot top
 * (the descriptor lives in the top page, so the span is at least one page).
 * goro learns the span without copying or scanning memory on the hot path:
 *  - each time the goroutine parks or yields, from its saved stack pointer
 *    (a deeper sp means growth, page-granular);
 *  - at each shrink cycle, exactly, from mincore(2) over batches of slots.
 * A deep excursion that returns before the goroutine parks is therefore
 * seen at the next cycle, not at once.
 *
 * Identities that always hold for one goro_read_memstats result:
 *   stack_sys   == stack_inuse + stack_cache + stack_guard + stack_meta
 *   sum(stack_hist_count) == goroutines
 *   sum(stack_hist_bytes) == stack_inuse
 * X(type, name, comment) lists every scalar field once.
 */
#define GORO_MEMSTATS_FIELDS(X)                                                 \
  X(uint64_t, goroutines, "goroutines alive (spawned, not yet exited)")         \
  X(uint64_t, spawned_total, "goroutines spawned since the process started")    \
  X(uint64_t, stack_inuse, "bytes: committed spans of live goroutines")         \
  X(uint64_t, stack_cache, "bytes: spans kept resident in free slot caches")    \
  X(uint64_t, stack_guard, "bytes of memory held by guards: 0, guards are page-table markers or PROT_NONE") \
  X(uint64_t, stack_meta, "bytes: goro's stack bookkeeping (slot lists, per-worker state)") \
  X(uint64_t, stack_sys, "bytes: stack_inuse + stack_cache + stack_guard + stack_meta") \
  X(uint64_t, stack_reserved, "bytes of address space reserved for stacks")     \
  X(uint64_t, stack_start_size, "bytes committed for a new goroutine by default (adaptive start)") \
  X(uint64_t, slots_carved, "stack slots ever made, each with its guard")       \
  X(uint64_t, slots_cached, "free slots that keep resident pages")              \
  X(uint64_t, guards, "guard regions installed")                                \
  X(uint64_t, guard_bytes, "bytes of address space covered by guards")          \
  X(uint64_t, unguarded_slots, "slots without a guard (goro_allow_unguarded)")  \
  X(uint64_t, pages_committed, "stack pages observed newly committed, total")   \
  X(uint64_t, pages_released, "stack pages given back to the OS, total")        \
  X(uint64_t, stack_growths, "times a goroutine's span was seen to grow, total") \
  X(uint64_t, stack_shrinks, "times a cycle shrank a goroutine's span, total")  \
  X(uint64_t, gc_cycles, "shrink cycles completed")                             \
  X(uint64_t, max_stack, "bytes: current global maximum stack")                 \
  X(uint64_t, maxprocs, "worker threads (Ps) of the running runtime")

/* Histogram bucket i counts live goroutines whose span is at most
 * 4096 << i bytes (and more than 4096 << (i - 1)); the last bucket has all
 * larger ones. */
#define GORO_STACK_HIST_BUCKETS 25

typedef struct goro_memstats {
  uint32_t size;    /* set by the caller: sizeof(goro_memstats) */
  uint32_t version; /* set by goro: GORO_MEMSTATS_VERSION */
#define GORO_MEMSTATS_MEMBER(type, name, comment) type name;
  GORO_MEMSTATS_FIELDS(GORO_MEMSTATS_MEMBER)
#undef GORO_MEMSTATS_MEMBER
  uint64_t stack_hist_count[GORO_STACK_HIST_BUCKETS]; /* goroutines per bucket */
  uint64_t stack_hist_bytes[GORO_STACK_HIST_BUCKETS]; /* their spans, bytes */
} goro_memstats;
#define GORO_MEMSTATS_VERSION 2

/* Fills *out. Set out->size = sizeof *out first. O(workers), not O(goroutines). */
GORO_API int goro_read_memstats(goro_memstats *out);

/* ---- errno across goroutine migration ---------------------------------
 *
 * A goroutine can resume on another thread after any blocking goro call.
 * goro saves errno when a goroutine parks and restores it on the thread that
 * resumes it, so errno reads the goroutine's own value. glibc declares
 * __errno_location() const, so a compiler may reuse errno's address from
 * before a call to after it, which would then read the old thread's errno.
 * To keep ordinary code correct, goro.h redefines errno to go through
 * goro_errno_location(), which is not const. Define GORO_NO_ERRNO_OVERRIDE
 * before including goro.h to keep glibc's macro; then do not read errno
 * after a goro call that may park without calling __errno_location anew.
 */
GORO_API int *goro_errno_location(void);
#ifndef GORO_NO_ERRNO_OVERRIDE
#undef errno
#define errno (*goro_errno_location())
#endif

#ifdef __cplusplus
}
#endif
#endif /* GORO_H */
