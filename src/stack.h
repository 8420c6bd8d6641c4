/*
 * stack.h: goroutine stacks in one reserved arena.
 *
 * The arena is one MAP_NORESERVE reservation split into a region per size
 * class. Class c holds slots whose usable stack is 16 KiB << c; each slot is
 * a guard region followed by the usable stack:
 *
 *   slot base                                                   slot top
 *   | guard (GORO__GUARD_SIZE) | usable stack, grows down <--- | g header |
 *                              ^ stack lo                  descriptor ^
 *
 * The goroutine descriptor (struct goro__g) lives in the top bytes of the
 * slot, so a parked goroutine costs its resident stack pages and nothing
 * else. Pages are committed by the kernel on first touch (demand paging)
 * and given back with madvise; the slot itself never moves.
 *
 * Guards are installed once per slot when slots are carved, in batches,
 * with MADV_GUARD_INSTALL (no extra memory mapping), or with mprotect on
 * kernels without it, within a budget of vm.max_map_count.
 *
 * Entry points: goro__stack_init/fini (arena), goro__stack_alloc/free
 * (slots), goro__stack_observe_sp (growth accounting at park),
 * goro__stack_guard_lookup (async-signal-safe, for the fault handler).
 */
#ifndef GORO_STACK_H
#define GORO_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GORO__PAGE_SIZE ((uintptr_t)4096)
#define GORO__GUARD_SIZE ((uintptr_t)32 << 10)
#define GORO__MIN_CLASS_SHIFT 14 /* 16 KiB */
#define GORO__NUM_CLASSES 23     /* 16 KiB .. 64 GiB */
#define GORO__CACHE_SLOTS 32     /* free slots kept warm per worker */
#define GORO__CACHE_KEEP ((uintptr_t)64 << 10) /* max span of a slot in a P's cache */
#define GORO__WARM_BOUND ((uint64_t)16 << 20)  /* warm-list bytes kept after scavenging */

struct goro__p;

/* A slot handed out by goro__stack_alloc. */
typedef struct goro__slot {
  uintptr_t base;         /* lowest address: the guard starts here */
  uintptr_t lo;           /* lowest usable stack address (guard end) */
  uintptr_t top;          /* one past the highest usable address */
  uintptr_t resident_lo;  /* pages in [resident_lo, top) may be resident */
  uint32_t cls;
  bool guarded;
} goro__slot;

/* What the fault handler learns about an address in the arena. */
typedef struct goro__guard_hit {
  uintptr_t slot_base, lo, top;
  uint32_t cls;
} goro__guard_hit;

int goro__stack_init(void);
void goro__stack_fini(void);

/* Smallest class whose usable size is >= bytes, or -1 when none is. */
int goro__stack_class_for(size_t bytes);
size_t goro__stack_class_size(int cls);

int goro__stack_alloc(struct goro__p *p, int cls, goro__slot *out);
/* Frees a slot. keep is what its goroutine needed (bytes from the top): a
 * slot holding more is trimmed to keep before it is reused. */
void goro__stack_free(struct goro__p *p, goro__slot *slot, uintptr_t keep);

/* Releases warm slots, at most max_bytes, until the warm lists hold no
 * more than bound bytes. Returns the bytes released. Any thread. */
uint64_t goro__stack_scavenge(uint64_t bound, uint64_t max_bytes);
uint64_t goro__stack_warm_bytes(void);

/* Trims freed slots to their keep and measures what stays resident (goroutines may have gone deeper between parks than goro
 * saw), up to 512 slots per class per call. Returns the slots trimmed.
 * Monitor thread only. */
uint64_t goro__stack_trim(void);

/* Removes the guards of released slots (MADV_GUARD_REMOVE) so that the
 * kernel can free the page tables that held them; a slot gets its guard
 * back when it is next used. Returns the guards removed. */
uint64_t goro__stack_release_guards(void);

/* Carves slots ahead of demand for classes whose free list runs low, so
 * that guard installation stays off the spawn path. Monitor thread only. */
void goro__stack_precarve(void);

/* Empties every P's slot cache and all warm lists, releasing their pages. */
uint64_t goro__stack_drain_caches(struct goro__p *allp, int nprocs);

/* Applies madvise advice to each range, batched through process_madvise. */
struct iovec;
void goro__stack_release_ranges(struct iovec *ranges, size_t n, int advice);

/* The shrink cycle's worklist: one bit per slot of a class, set when the
 * goroutine in it parks or keeps more than one page, cleared by the cycle
 * once there is nothing to watch and when the goroutine exits. */
uint64_t goro__stack_slot_index(const goro__slot *slot);
uint64_t *goro__stack_visit_words(int cls);
void goro__stack_mark_visit(uint32_t cls, uint64_t index, bool visit);

/* Where class cls's slots are: slot i starts at region + i * slot_size. */
void goro__stack_class_layout(int cls, uintptr_t *region, uintptr_t *slot_size, uint64_t *carved);

/* Commits [top - bytes, top) now; returns the new resident_lo. */
uintptr_t goro__stack_commit(goro__slot *slot, size_t bytes);

/* Counts resident pages in [lo, hi) exactly (mincore). */
uint64_t goro__stack_resident_pages(uintptr_t lo, uintptr_t hi, uintptr_t *lowest);

/* Returns the lowest resident page at or below from, following resident
 * chunks down the slot. */
uintptr_t goro__stack_lowest_touched(const goro__slot *slot, uintptr_t from);

/* Async-signal-safe: true when addr lies in a slot's guard region. */
bool goro__stack_guard_lookup(uintptr_t addr, goro__guard_hit *hit);

/* Async-signal-safe: true when addr lies anywhere in the arena. */
bool goro__stack_in_arena(uintptr_t addr);

void goro__stack_read_stats(uint64_t *reserved, uint64_t *carved, uint64_t *guards,
                            uint64_t *unguarded, uint64_t *meta);

#endif
