/*
 * stack.c: the stack arena, slot carving, guards and the slot caches.
 *
 * Invariants:
 * - A slot index of class c is carved once and keeps its address until
 *   goro__stack_fini unmaps the arena. Its guard stays installed
 *   (MADV_DONTNEED leaves guard markers in place) unless
 *   goro__stack_release_guards removed it while the slot was free; the
 *   free-list entry then records it and allocation installs it again.
 * - A slot on a class free list has no resident stack pages.
 * - A slot in a P's cache or on a class's untrimmed list has resident
 *   pages in [resident_lo, top) as far as goro observed, and may have more
 *   below if its goroutine went deeper between parks. In a P's cache
 *   top - resident_lo is at most the keep given to goro__stack_free.
 * - The monitor thread trims untrimmed slots to what their last goroutine
 *   needed (at most GORO__CACHE_KEEP bytes from the top), measures what
 *   stays resident and moves them to the warm list, whose span counts are
 *   exact.
 * - Freeing a slot makes no system call. Releasing pages costs a TLB
 *   shootdown on every CPU the process runs on, so the monitor thread
 *   releases warm slots in batches of up to 512 ranges per process_madvise
 *   call, once the warm lists hold more than GORO__WARM_BOUND bytes.
 * - A slot is freed only from g0 (scheduler context), never by the
 *   goroutine running on it.
 */
#define _GNU_SOURCE
#include "stack.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "sched.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Slots carved per batch: enough to amortize the guard system calls,
 * bounded so that a large class does not reserve more than it needs. */
#define CARVE_BATCH_BYTES ((uintptr_t)64 << 20)
#define CARVE_BATCH_MAX 512

enum guard_mode { GUARD_MADVISE, GUARD_MPROTECT };

/* Free-list entries are slot indices; this bit marks a slot whose guard was
 * removed by goro__stack_release_guards and must be installed again before
 * use. Class capacities stay below 2^31 slots (2 TiB / 48 KiB). */
#define GUARD_REMOVED ((uint32_t)1 << 31)
#ifndef MADV_GUARD_REMOVE
#define MADV_GUARD_REMOVE 103
#endif

typedef struct warm_slot {
  uint32_t index;
  uint32_t span_pages;  /* pages of [resident_lo, top) */
  uint32_t keep_pages;  /* what trimming keeps: the need of its last goroutine */
} warm_slot;

typedef struct stack_class {
  goro__spinlock lock;
  uintptr_t region;     /* base of this class's region */
  uintptr_t slot_size;  /* guard + usable */
  uint64_t capacity;    /* slots that fit in the region */
  uint64_t carved;      /* slots [0, carved) exist */
  uint64_t guarded_upto; /* slots [0, guarded_upto) have a guard */
  uint32_t *free;       /* indices of released slots */
  uint64_t free_count, free_cap;
  warm_slot *warm;      /* freed slots trimmed to their known span */
  warm_slot *untrimmed; /* freed slots that may hold pages below their span */
  uint64_t untrimmed_count;
  uint64_t *visit;      /* bit i: slot i contains a goroutine a cycle should visit */
  uint64_t warm_count;  /* the warm array has free_cap entries too */
} stack_class;

static struct {
  uintptr_t base;
  uintptr_t size;
  uintptr_t region_size;
  enum guard_mode mode;
  int pidfd;            /* for batched process_madvise, or -1 */
  int64_t guard_budget; /* mprotect mode: guards still allowed */
  uint64_t guards;
  uint64_t unguarded;
  uint64_t warm_bytes;  /* resident bytes on all warm lists */
  stack_class classes[GORO__NUM_CLASSES];
} arena;

static uintptr_t page_floor(uintptr_t a) { return a & ~(GORO__PAGE_SIZE - 1); }

int goro__stack_class_for(size_t bytes) {
  for (int c = 0; c < GORO__NUM_CLASSES; c++)
    if (bytes <= ((size_t)1 << (GORO__MIN_CLASS_SHIFT + c)))
      return c;
  return -1;
}

size_t goro__stack_class_size(int cls) { return (size_t)1 << (GORO__MIN_CLASS_SHIFT + cls); }

/* Counts the lines of /proc/self/maps: the process's memory mappings. */
static long count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
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

static long read_max_map_count(void) {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long value = 65530; /* the kernel's default */

  if (f) {
    if (fscanf(f, "%ld", &value) != 1)
      value = 65530;
    fclose(f);
  }
  return value;
}

/* Chooses how guards are made. MADV_GUARD_INSTALL is tried on the first
 * page of the arena's first region; an EINVAL means the kernel predates it. */
static void choose_guard_mode(void) {
  arena.mode = GUARD_MADVISE;
  if (goro__dbg.guard_mprotect ||
      madvise((void *)arena.base, GORO__PAGE_SIZE, MADV_GUARD_INSTALL) != 0)
    arena.mode = GUARD_MPROTECT;

  if (arena.mode == GUARD_MADVISE) {
    /* The probe guard is the first page of class 0's first slot guard, so
     * it is not wasted. Batches go through process_madvise when it works. */
    arena.pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    return;
  }

  /* Each mprotect guard splits the arena: one mapping for the guard and one
   * for the stack above it. Keep a margin for the rest of the process. */
  long limit = read_max_map_count();
  long used = count_maps();
  int64_t budget = (limit - (used < 0 ? 1000 : used) - 1000) / 2;
  if (goro__dbg.guard_budget > 0 && goro__dbg.guard_budget < budget)
    budget = goro__dbg.guard_budget;
  arena.guard_budget = budget < 0 ? 0 : budget;
  arena.pidfd = -1;
}

int goro__stack_init(void) {
  /* Regions of 2 TiB reserve 46 TiB, which fits the 128 TiB x86-64 user
   * address space; smaller regions are tried if a limit (ulimit -v) rejects it. */
  memset(&arena, 0, sizeof arena);
  for (uintptr_t region = (uintptr_t)2 << 40; region >= ((uintptr_t)1 << 30); region >>= 1) {
    uintptr_t size = region * GORO__NUM_CLASSES;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      arena.base = (uintptr_t)p;
      arena.size = size;
      arena.region_size = region;
      break;
    }
  }
  if (!arena.base)
    return GORO_ENOMEM;

  /* With transparent huge pages one touch would commit 2 MiB of stack. */
  madvise((void *)arena.base, arena.size, MADV_NOHUGEPAGE);

  for (int c = 0; c < GORO__NUM_CLASSES; c++) {
    stack_class *sc = &arena.classes[c];
    sc->region = arena.base + (uintptr_t)c * arena.region_size;
    sc->slot_size = GORO__GUARD_SIZE + goro__stack_class_size(c);
    sc->capacity = arena.region_size / sc->slot_size;
    if (sc->capacity > UINT32_MAX)
      sc->capacity = UINT32_MAX;
    /* Reserved, not committed: only the words of carved slots get pages. A
     * small arena may leave the largest classes without a slot. */
    if (sc->capacity == 0)
      continue;
    void *bits = mmap(NULL, (sc->capacity + 63) / 64 * sizeof(uint64_t),
                      PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (bits == MAP_FAILED) {
      goro__stack_fini();
      return GORO_ENOMEM;
    }
    sc->visit = bits;
  }
  choose_guard_mode();
  return 0;
}

void goro__stack_fini(void) {
  for (int c = 0; c < GORO__NUM_CLASSES; c++) {
    stack_class *sc = &arena.classes[c];
    free(sc->free);
    free(sc->warm);
    free(sc->untrimmed);
    if (sc->visit)
      munmap(sc->visit, (sc->capacity + 63) / 64 * sizeof(uint64_t));
  }
  if (arena.pidfd >= 0)
    close(arena.pidfd);
  if (arena.base)
    munmap((void *)arena.base, arena.size);
  memset(&arena, 0, sizeof arena);
}

/* Installs guards for slots [first, first + n) of a class. Returns how many
 * slots got one; the rest (mprotect budget exhausted) got none. */
static uint64_t install_guards(stack_class *sc, uint64_t first, uint64_t n) {
  if (arena.mode == GUARD_MADVISE) {
    struct iovec iov[CARVE_BATCH_MAX];

    for (uint64_t i = 0; i < n; i++) {
      iov[i].iov_base = (void *)(sc->region + (first + i) * sc->slot_size);
      iov[i].iov_len = GORO__GUARD_SIZE;
    }
    if (arena.pidfd >= 0) {
      ssize_t done = syscall(SYS_process_madvise, arena.pidfd, iov, (size_t)n,
                             MADV_GUARD_INSTALL, 0);
      if (done == (ssize_t)(n * GORO__GUARD_SIZE))
        return n;
    }
    /* process_madvise unavailable or partial: one call per slot (installing
     * a guard twice is harmless). */
    for (uint64_t i = 0; i < n; i++)
      if (madvise(iov[i].iov_base, GORO__GUARD_SIZE, MADV_GUARD_INSTALL) != 0)
        return i;
    return n;
  }

  uint64_t done = 0;
  while (done < n && arena.guard_budget > 0) {
    void *guard = (void *)(sc->region + (first + done) * sc->slot_size);
    if (mprotect(guard, GORO__GUARD_SIZE, PROT_NONE) != 0)
      break;
    arena.guard_budget--;
    done++;
  }
  return done;
}

/* The list counts are written under sc->lock but read without it as
 * hints (is there anything to trim or scavenge?), so writes are atomic. */
static void count_set(uint64_t *count, uint64_t value) {
  __atomic_store_n(count, value, __ATOMIC_RELAXED);
}

static void warm_push(warm_slot *list, uint64_t *count, warm_slot w) {
  list[*count] = w;
  count_set(count, *count + 1);
}

static warm_slot warm_pop(warm_slot *list, uint64_t *count) {
  count_set(count, *count - 1);
  return list[*count];
}

static uint64_t batch_slots(const stack_class *sc) {
  uint64_t n = CARVE_BATCH_BYTES / sc->slot_size;

  if (n < 1)
    n = 1;
  if (n > CARVE_BATCH_MAX)
    n = CARVE_BATCH_MAX;
  if (n > sc->capacity - sc->carved)
    n = sc->capacity - sc->carved;
  return n;
}

/* Makes the slot lists able to hold every carved slot plus n more (each
 * list may hold all of them at once). Caller holds sc->lock. */
static int reserve_lists(stack_class *sc, uint64_t n) {
  if (sc->carved + n > sc->free_cap) {
    uint64_t cap = sc->free_cap ? sc->free_cap * 2 : 1024;
    while (cap < sc->carved + n)
      cap *= 2;
    uint32_t *grown = realloc(sc->free, cap * sizeof *grown);
    if (!grown)
      return GORO_ENOMEM;
    sc->free = grown;
    warm_slot *warm = realloc(sc->warm, cap * sizeof *warm);
    if (!warm)
      return GORO_ENOMEM;
    sc->warm = warm;
    warm = realloc(sc->untrimmed, cap * sizeof *warm);
    if (!warm)
      return GORO_ENOMEM;
    sc->untrimmed = warm;
    __atomic_store_n(&sc->free_cap, cap, __ATOMIC_RELAXED);
  }
  return 0;
}

/* Carves a batch of new slots onto the class free list. Caller holds
 * sc->lock; this is the slow path of a spawn that found no free slot. */
static int carve_batch(stack_class *sc) {
  uint64_t n = batch_slots(sc);

  if (n == 0)
    return GORO_ENOMEM;
  if (reserve_lists(sc, n) != 0)
    return GORO_ENOMEM;

  uint64_t guarded = install_guards(sc, sc->carved, n);
  if (guarded < n && !goro__unguarded_ok) {
    if (guarded == 0)
      return arena.mode == GUARD_MPROTECT ? GORO_EMAPLIMIT : GORO_ENOMEM;
    n = guarded;
  }
  if (sc->guarded_upto == sc->carved)
    __atomic_store_n(&sc->guarded_upto, sc->guarded_upto + guarded, __ATOMIC_RELAXED);
  __atomic_fetch_add(&arena.guards, guarded, __ATOMIC_RELAXED);
  __atomic_fetch_add(&arena.unguarded, n - guarded, __ATOMIC_RELAXED);

  /* Push in reverse so that the lowest index is handed out first. */
  for (uint64_t i = n; i-- > 0;)
    sc->free[sc->free_count++] = (uint32_t)(sc->carved + i);
  __atomic_store_n(&sc->carved, sc->carved + n, __ATOMIC_RELEASE);
  return 0;
}

static void slot_from_index(int cls, uint64_t index, goro__slot *out) {
  stack_class *sc = &arena.classes[cls];

  out->base = sc->region + index * sc->slot_size;
  out->lo = out->base + GORO__GUARD_SIZE;
  out->top = out->base + sc->slot_size;
  out->resident_lo = out->top;
  out->cls = (uint32_t)cls;
  out->guarded = index < __atomic_load_n(&sc->guarded_upto, __ATOMIC_RELAXED);
}

/* Takes a slot from p's cache, or returns false. */
static bool cache_take(goro__p *p, int cls, goro__slot *out) {
  bool found = false;

  goro__spin_lock(&p->cache_lock);
  for (int i = p->cache_count - 1; i >= 0; i--) {
    if (p->cache[i].slot.cls != (uint32_t)cls)
      continue;
    *out = p->cache[i].slot;
    p->cache[i] = p->cache[--p->cache_count];
    found = true;
    break;
  }
  goro__spin_unlock(&p->cache_lock);
  if (found) {
    GORO__STAT_ADD(p, stack_cache, -(int64_t)(out->top - out->resident_lo));
    GORO__STAT_ADD(p, slots_cached, -1);
  }
  return found;
}

int goro__stack_alloc(goro__p *p, int cls, goro__slot *out) {
  /* Warmest first: this worker's cache, then the class warm list, then
   * released slots, then new ones. */
  if (p && cache_take(p, cls, out))
    return 0;

  stack_class *sc = &arena.classes[cls];
  goro__spin_lock(&sc->lock);
  if (sc->warm_count || sc->untrimmed_count) {
    bool trimmed = sc->warm_count != 0;
    warm_slot w = trimmed ? warm_pop(sc->warm, &sc->warm_count)
                          : warm_pop(sc->untrimmed, &sc->untrimmed_count);
    goro__spin_unlock(&sc->lock);

    uintptr_t span = (uintptr_t)w.span_pages * GORO__PAGE_SIZE;
    __atomic_fetch_sub(&arena.warm_bytes, span, __ATOMIC_RELAXED);
    GORO__STAT_ADD(p, stack_cache, -(int64_t)span);
    GORO__STAT_ADD(p, slots_cached, -1);

    slot_from_index(cls, w.index, out);
    out->resident_lo = out->top - span;
    if (!trimmed && w.span_pages > w.keep_pages) {
      /* A slot the monitor has not trimmed yet may contain more than its
       * last goroutine needed, and a new goroutine must not inherit that. */
      uintptr_t keep_lo = out->top - (uintptr_t)w.keep_pages * GORO__PAGE_SIZE;
      madvise((void *)out->lo, keep_lo - out->lo, MADV_DONTNEED);
      out->resident_lo = keep_lo;
    }
    return 0;
  }
  if (sc->free_count == 0) {
    int err = carve_batch(sc);
    if (err) {
      goro__spin_unlock(&sc->lock);
      return err;
    }
  }
  uint32_t entry = sc->free[--sc->free_count];
  /* Crossing the low-water mark wakes the monitor to carve the next batch
   * now, while this list still has slots. */
  bool low = sc->free_count == batch_slots(sc) / 2;
  goro__spin_unlock(&sc->lock);
  if (low)
    goro__wake_monitor();

  slot_from_index(cls, entry & ~GUARD_REMOVED, out);
  if (entry & GUARD_REMOVED) {
    if (madvise((void *)out->base, GORO__GUARD_SIZE, MADV_GUARD_INSTALL) != 0) {
      /* Cannot happen where removal worked; the slot stays out of use
       * rather than run unguarded. */
      return GORO_ENOMEM;
    }
    __atomic_fetch_add(&arena.guards, 1, __ATOMIC_RELAXED);
  }
  return 0;
}

uint64_t goro__stack_resident_pages(uintptr_t lo, uintptr_t hi, uintptr_t *lowest) {
  unsigned char vec[1024];
  uint64_t resident = 0;

  *lowest = hi;
  for (uintptr_t at = lo; at < hi;) {
    uintptr_t chunk = (hi - at) / GORO__PAGE_SIZE;
    if (chunk > sizeof vec)
      chunk = sizeof vec;
    if (mincore((void *)at, chunk * GORO__PAGE_SIZE, vec) != 0)
      return resident; /* mincore fails only for unmapped memory */
    for (uintptr_t i = 0; i < chunk; i++) {
      if (!(vec[i] & 1))
        continue;
      resident++;
      if (at + i * GORO__PAGE_SIZE < *lowest)
        *lowest = at + i * GORO__PAGE_SIZE;
    }
    at += chunk * GORO__PAGE_SIZE;
  }
  return resident;
}

void goro__stack_free(goro__p *p, goro__slot *slot, uintptr_t keep) {
  uintptr_t span = slot->top - slot->resident_lo;

  GORO__STAT_ADD(p, stack_cache, (int64_t)span);
  GORO__STAT_ADD(p, slots_cached, 1);
  if (keep < GORO__PAGE_SIZE)
    keep = GORO__PAGE_SIZE;
  if (keep > GORO__CACHE_KEEP)
    keep = GORO__CACHE_KEEP;

  /* Slots within their keep stay with this worker: the next spawn here
   * reuses them without a lock. Fatter ones are trimmed first. */
  if (p && span <= keep) {
    goro__spin_lock(&p->cache_lock);
    if (p->cache_count < GORO__CACHE_SLOTS) {
      p->cache[p->cache_count++].slot = *slot;
      goro__spin_unlock(&p->cache_lock);
      return;
    }
    goro__spin_unlock(&p->cache_lock);
  }

  stack_class *sc = &arena.classes[slot->cls];
  warm_slot w = {
      .index = (uint32_t)((slot->base - sc->region) / sc->slot_size),
      .span_pages = (uint32_t)(span / GORO__PAGE_SIZE),
      .keep_pages = (uint32_t)(keep / GORO__PAGE_SIZE),
  };
  goro__spin_lock(&sc->lock);
  /* free_cap >= carved is kept by carve_batch and precarve, so this is in bounds. */
  warm_push(sc->untrimmed, &sc->untrimmed_count, w);
  goro__spin_unlock(&sc->lock);
  __atomic_fetch_add(&arena.warm_bytes, span, __ATOMIC_RELAXED);
}

void goro__stack_release_ranges(struct iovec *ranges, size_t n, int advice) {
  for (size_t done = 0; arena.pidfd >= 0 && done < n;) {
    size_t chunk = n - done < CARVE_BATCH_MAX ? n - done : CARVE_BATCH_MAX;
    size_t bytes = 0;
    for (size_t i = 0; i < chunk; i++)
      bytes += ranges[done + i].iov_len;
    if (syscall(SYS_process_madvise, arena.pidfd, ranges + done, chunk, advice, 0) !=
        (ssize_t)bytes)
      break;
    done += chunk;
    if (done == n)
      return;
  }
  /* Older kernels take only a few advices through process_madvise (Linux
   * 6.18 takes MADV_DONTNEED), so fall back to one madvise per range, which
   * is harmless for ranges already released. */
  for (size_t i = 0; i < n; i++)
    madvise(ranges[i].iov_base, ranges[i].iov_len, advice);
}

/* Releases the whole usable range of each slot. */
static void release_slots(stack_class *sc, const warm_slot *slots, size_t n) {
  struct iovec iov[CARVE_BATCH_MAX];

  for (size_t i = 0; i < n; i++) {
    iov[i].iov_base = (void *)(sc->region + slots[i].index * sc->slot_size + GORO__GUARD_SIZE);
    iov[i].iov_len = sc->slot_size - GORO__GUARD_SIZE;
  }
  goro__stack_release_ranges(iov, n, MADV_DONTNEED);
}

/* Moves up to CARVE_BATCH_MAX warm slots of a class to its free list,
 * releasing their pages. Returns the bytes released. */
static uint64_t release_warm_batch(stack_class *sc) {
  warm_slot batch[CARVE_BATCH_MAX];
  size_t n = 0;

  goro__spin_lock(&sc->lock);
  while (n < CARVE_BATCH_MAX && sc->untrimmed_count)
    batch[n++] = warm_pop(sc->untrimmed, &sc->untrimmed_count);
  while (n < CARVE_BATCH_MAX && sc->warm_count)
    batch[n++] = warm_pop(sc->warm, &sc->warm_count);
  goro__spin_unlock(&sc->lock);
  if (n == 0)
    return 0;

  release_slots(sc, batch, n);

  uint64_t pages = 0;
  for (size_t i = 0; i < n; i++)
    pages += batch[i].span_pages;
  goro__spin_lock(&sc->lock);
  for (size_t i = 0; i < n; i++)
    sc->free[sc->free_count++] = batch[i].index;
  goro__spin_unlock(&sc->lock);

  uint64_t bytes = pages * GORO__PAGE_SIZE;
  __atomic_fetch_sub(&arena.warm_bytes, bytes, __ATOMIC_RELAXED);
  GORO__STAT_ADD((goro__p *)NULL, stack_cache, -(int64_t)bytes);
  GORO__STAT_ADD((goro__p *)NULL, slots_cached, -(int64_t)n);
  GORO__STAT_ADD((goro__p *)NULL, pages_released, pages);
  return bytes;
}

uint64_t goro__stack_scavenge(uint64_t bound, uint64_t max_bytes) {
  uint64_t released = 0;

  for (int c = 0; c < GORO__NUM_CLASSES && released < max_bytes; c++) {
    stack_class *sc = &arena.classes[c];
    while (__atomic_load_n(&arena.warm_bytes, __ATOMIC_RELAXED) > bound && released < max_bytes) {
      uint64_t bytes = release_warm_batch(sc);
      if (bytes == 0 && !__atomic_load_n(&sc->warm_count, __ATOMIC_RELAXED) &&
          !__atomic_load_n(&sc->untrimmed_count, __ATOMIC_RELAXED))
        break;
      released += bytes;
    }
  }
  return released;
}

uint64_t goro__stack_trim(void) {
  uint64_t trimmed = 0;

  for (int c = 0; c < GORO__NUM_CLASSES; c++) {
    stack_class *sc = &arena.classes[c];
    warm_slot batch[CARVE_BATCH_MAX];
    struct iovec iov[CARVE_BATCH_MAX];
    size_t n = 0, ranges = 0;

    if (!__atomic_load_n(&sc->untrimmed_count, __ATOMIC_RELAXED))
      continue;
    /* Off the list while trimming: a spawn must not take a slot whose
     * pages are being released. */
    goro__spin_lock(&sc->lock);
    while (n < CARVE_BATCH_MAX && sc->untrimmed_count)
      batch[n++] = warm_pop(sc->untrimmed, &sc->untrimmed_count);
    goro__spin_unlock(&sc->lock);

    /* Keep what the slot's last goroutine needed warm for the next one;
     * release what lies below. */
    for (size_t i = 0; i < n; i++) {
      uintptr_t lo = sc->region + batch[i].index * sc->slot_size + GORO__GUARD_SIZE;
      uintptr_t top = sc->region + (batch[i].index + 1) * sc->slot_size;
      uintptr_t keep = (uintptr_t)batch[i].keep_pages * GORO__PAGE_SIZE;
      if (top - lo > keep) {
        iov[ranges].iov_base = (void *)lo;
        iov[ranges].iov_len = top - keep - lo;
        ranges++;
      }
    }
    if (ranges)
      goro__stack_release_ranges(iov, ranges, MADV_DONTNEED);

    /* Then count what is really resident in the kept part, so that
     * stack_cache matches memory even for slots whose goroutine went deeper
     * between parks than goro saw. */
    int64_t delta = 0;
    for (size_t i = 0; i < n; i++) {
      uintptr_t top = sc->region + (batch[i].index + 1) * sc->slot_size;
      uintptr_t keep_lo = top - (uintptr_t)batch[i].keep_pages * GORO__PAGE_SIZE;
      uintptr_t lowest;
      if (keep_lo < sc->region + batch[i].index * sc->slot_size + GORO__GUARD_SIZE)
        keep_lo = sc->region + batch[i].index * sc->slot_size + GORO__GUARD_SIZE;
      goro__stack_resident_pages(keep_lo, top, &lowest);
      uint32_t pages = (uint32_t)((top - lowest) / GORO__PAGE_SIZE);
      delta += ((int64_t)pages - (int64_t)batch[i].span_pages) * (int64_t)GORO__PAGE_SIZE;
      batch[i].span_pages = pages;
    }

    goro__spin_lock(&sc->lock);
    for (size_t i = 0; i < n; i++)
      warm_push(sc->warm, &sc->warm_count, batch[i]);
    goro__spin_unlock(&sc->lock);
    __atomic_fetch_add(&arena.warm_bytes, (uint64_t)delta, __ATOMIC_RELAXED);
    GORO__STAT_ADD((goro__p *)NULL, stack_cache, delta);
    trimmed += n;
  }
  return trimmed;
}

uint64_t goro__stack_warm_bytes(void) { return __atomic_load_n(&arena.warm_bytes, __ATOMIC_RELAXED); }

uintptr_t goro__stack_commit(goro__slot *slot, size_t bytes) {
  uintptr_t want = bytes >= slot->top - slot->lo ? slot->lo : page_floor(slot->top - bytes);

  if (want < slot->resident_lo) {
    /* MADV_POPULATE_WRITE (Linux 5.14) faults the pages in one call; on an
     * older kernel touching each page does the same, slower. */
    if (madvise((void *)want, slot->resident_lo - want, MADV_POPULATE_WRITE) != 0)
      for (uintptr_t a = want; a < slot->resident_lo; a += GORO__PAGE_SIZE)
        *(volatile char *)a = 0;
    slot->resident_lo = want;
  }
  return slot->resident_lo;
}

bool goro__stack_in_arena(uintptr_t addr) {
  return arena.base && addr >= arena.base && addr < arena.base + arena.size;
}

bool goro__stack_guard_lookup(uintptr_t addr, goro__guard_hit *hit) {
  if (!goro__stack_in_arena(addr))
    return false;

  uintptr_t cls = (addr - arena.base) / arena.region_size;
  stack_class *sc = &arena.classes[cls];
  uint64_t index = (addr - sc->region) / sc->slot_size;
  if (index >= __atomic_load_n(&sc->carved, __ATOMIC_ACQUIRE))
    return false;

  hit->slot_base = sc->region + index * sc->slot_size;
  hit->lo = hit->slot_base + GORO__GUARD_SIZE;
  hit->top = hit->slot_base + sc->slot_size;
  hit->cls = (uint32_t)cls;
  return addr < hit->lo;
}

void goro__stack_read_stats(uint64_t *reserved, uint64_t *carved, uint64_t *guards,
                            uint64_t *unguarded, uint64_t *meta) {
  *reserved = arena.size;
  *carved = 0;
  *meta = sizeof arena;
  for (int c = 0; c < GORO__NUM_CLASSES; c++) {
    *carved += __atomic_load_n(&arena.classes[c].carved, __ATOMIC_RELAXED);
    *meta += __atomic_load_n(&arena.classes[c].free_cap, __ATOMIC_RELAXED) *
             (sizeof(uint32_t) + sizeof(warm_slot));
  }
  *guards = __atomic_load_n(&arena.guards, __ATOMIC_RELAXED);
  *unguarded = __atomic_load_n(&arena.unguarded, __ATOMIC_RELAXED);
}

void goro__stack_class_layout(int cls, uintptr_t *region, uintptr_t *slot_size, uint64_t *carved) {
  stack_class *sc = &arena.classes[cls];

  *region = sc->region;
  *slot_size = sc->slot_size;
  *carved = __atomic_load_n(&sc->carved, __ATOMIC_ACQUIRE);
}

uint64_t goro__stack_drain_caches(goro__p *allp, int nprocs) {
  uint64_t released = 0;

  for (int i = 0; i < nprocs; i++) {
    goro__p *p = &allp[i];
    goro__slot slots[GORO__CACHE_SLOTS];
    int n;

    goro__spin_lock(&p->cache_lock);
    n = p->cache_count;
    for (int k = 0; k < n; k++)
      slots[k] = p->cache[k].slot;
    p->cache_count = 0;
    goro__spin_unlock(&p->cache_lock);

    /* Through the warm list, so one path releases and accounts them. */
    for (int k = 0; k < n; k++) {
      GORO__STAT_ADD(p, stack_cache, -(int64_t)(slots[k].top - slots[k].resident_lo));
      GORO__STAT_ADD(p, slots_cached, -1);
      goro__stack_free(NULL, &slots[k], GORO__CACHE_KEEP);
    }
  }
  released += goro__stack_scavenge(0, UINT64_MAX);
  return released;
}

uint64_t goro__stack_slot_index(const goro__slot *slot) {
  stack_class *sc = &arena.classes[slot->cls];
  return (slot->base - sc->region) / sc->slot_size;
}

uint64_t *goro__stack_visit_words(int cls) { return arena.classes[cls].visit; }

void goro__stack_mark_visit(uint32_t cls, uint64_t index, bool visit) {
  uint64_t *word = &arena.classes[cls].visit[index / 64];
  uint64_t bit = (uint64_t)1 << (index % 64);

  if (visit) {
    if (!(__atomic_load_n(word, __ATOMIC_RELAXED) & bit))
      __atomic_fetch_or(word, bit, __ATOMIC_RELAXED);
  } else {
    __atomic_fetch_and(word, ~bit, __ATOMIC_RELAXED);
  }
}

uintptr_t goro__stack_lowest_touched(const goro__slot *slot, uintptr_t from) {
  unsigned char vec[256];
  uintptr_t low = from;

  /* Walk down a chunk at a time while chunks still hold resident pages:
   * stacks are touched from the top, so the first empty chunk ends it. */
  while (low > slot->lo) {
    uintptr_t chunk = (low - slot->lo) / GORO__PAGE_SIZE;
    if (chunk > sizeof vec)
      chunk = sizeof vec;
    uintptr_t at = low - chunk * GORO__PAGE_SIZE;
    if (mincore((void *)at, chunk * GORO__PAGE_SIZE, vec) != 0)
      break;
    uintptr_t found = 0;
    for (uintptr_t i = 0; i < chunk && !found; i++)
      if (vec[i] & 1)
        found = at + i * GORO__PAGE_SIZE;
    if (!found)
      break;
    low = found;
  }
  return low;
}

/* A kernel built with CONFIG_PT_RECLAIM frees a page table when
 * MADV_DONTNEED zaps the whole 2 MiB it maps and nothing is left in it.
 * Zapping slot by slot frees none. So this zaps every 2 MiB window of the
 * class that lies entirely in free, guardless slots. Caller holds sc->lock. */
#define TABLE_SPAN ((uintptr_t)2 << 20)

static void zap_empty_tables(stack_class *sc) {
  uint64_t carved = sc->carved;
  uint8_t *idle = calloc((carved + 7) / 8, 1);
  struct iovec iov[CARVE_BATCH_MAX];
  size_t n = 0;

  if (!idle)
    return;
  for (uint64_t i = 0; i < sc->free_count; i++)
    if (sc->free[i] & GUARD_REMOVED) {
      uint32_t index = sc->free[i] & ~GUARD_REMOVED;
      idle[index / 8] |= (uint8_t)(1 << (index % 8));
    }

  uintptr_t end = sc->region + carved * sc->slot_size;
  for (uintptr_t w = (sc->region + TABLE_SPAN - 1) & ~(TABLE_SPAN - 1); w + TABLE_SPAN <= end;
       w += TABLE_SPAN) {
    uint64_t first = (w - sc->region) / sc->slot_size;
    uint64_t last = (w + TABLE_SPAN - 1 - sc->region) / sc->slot_size;
    bool empty = true;
    for (uint64_t i = first; i <= last && empty; i++)
      empty = idle[i / 8] & (1 << (i % 8));
    if (!empty)
      continue;
    if (n && (uintptr_t)iov[n - 1].iov_base + iov[n - 1].iov_len == w) {
      iov[n - 1].iov_len += TABLE_SPAN;
      continue;
    }
    if (n == CARVE_BATCH_MAX) {
      goro__stack_release_ranges(iov, n, MADV_DONTNEED);
      n = 0;
    }
    iov[n].iov_base = (void *)w;
    iov[n].iov_len = TABLE_SPAN;
    n++;
  }
  if (n)
    goro__stack_release_ranges(iov, n, MADV_DONTNEED);
  free(idle);
}

uint64_t goro__stack_release_guards(void) {
  uint64_t removed = 0;

  if (arena.mode != GUARD_MADVISE)
    return 0;
  for (int c = 0; c < GORO__NUM_CLASSES; c++) {
    stack_class *sc = &arena.classes[c];
    struct iovec iov[CARVE_BATCH_MAX];

    /* Under the lock: a spawn must not take a slot whose guard is going. */
    goro__spin_lock(&sc->lock);
    for (uint64_t i = 0; i < sc->free_count;) {
      size_t n = 0;
      uint64_t first = i;
      for (; i < sc->free_count && n < CARVE_BATCH_MAX; i++) {
        if (sc->free[i] & GUARD_REMOVED)
          continue;
        iov[n].iov_base = (void *)(sc->region + (uint64_t)sc->free[i] * sc->slot_size);
        iov[n].iov_len = GORO__GUARD_SIZE;
        n++;
      }
      if (n == 0)
        continue;
      goro__stack_release_ranges(iov, n, MADV_GUARD_REMOVE);
      for (uint64_t k = first; k < i; k++)
        sc->free[k] |= GUARD_REMOVED;
      removed += n;
    }
    zap_empty_tables(sc);
    goro__spin_unlock(&sc->lock);
  }
  __atomic_fetch_sub(&arena.guards, removed, __ATOMIC_RELAXED);
  return removed;
}

void goro__stack_precarve(void) {
  /* With mprotect guards the budget and the guarded prefix are tracked
   * under the lock; only MADV_GUARD_INSTALL carving runs unlocked. */
  if (arena.mode != GUARD_MADVISE)
    return;
  for (int c = 0; c < GORO__NUM_CLASSES; c++) {
    stack_class *sc = &arena.classes[c];

    if (!__atomic_load_n(&sc->carved, __ATOMIC_RELAXED))
      continue; /* a class without slots yet gets none ahead of demand */
    goro__spin_lock(&sc->lock);
    uint64_t n = batch_slots(sc);
    if (sc->free_count >= n / 2 + 1 || n == 0 || reserve_lists(sc, n) != 0) {
      goro__spin_unlock(&sc->lock);
      continue;
    }
    /* Reserve the indices, then install guards without the lock, so that
     * spawns do not wait for these system calls. */
    uint64_t first = sc->carved;
    __atomic_store_n(&sc->carved, first + n, __ATOMIC_RELEASE);
    __atomic_store_n(&sc->guarded_upto, first + n, __ATOMIC_RELAXED);
    goro__spin_unlock(&sc->lock);

    uint64_t guarded = install_guards(sc, first, n);
    __atomic_fetch_add(&arena.guards, guarded, __ATOMIC_RELAXED);

    /* A slot whose guard failed (out of memory) is never handed out. */
    goro__spin_lock(&sc->lock);
    for (uint64_t i = guarded; i-- > 0;)
      sc->free[sc->free_count++] = (uint32_t)(first + i);
    goro__spin_unlock(&sc->lock);
  }
}
