/*
 * Goroutine stacks: pointers into a stack stay valid, recursion fits the
 * maximum, goro_stack_remaining and goro_stack_bounds agree, stack hints
 * commit pages up front, and slots never overlap.
 */
#include "stack_check.h"

#include <sys/mman.h>

/* Recurses with frames of about 256 bytes until a frame lies below stop,
 * calls at_bottom(arg) there (if set), and returns the depth reached, or -1
 * if a frame's own bytes changed while deeper frames ran. Not static, so
 * that fatal reports can name it. */
int stack_recurse(uintptr_t stop, void (*at_bottom)(void *), void *arg);

__attribute__((noinline)) int stack_recurse(uintptr_t stop, void (*at_bottom)(void *), void *arg) {
  volatile uint8_t pad[224];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  int depth = 1;

  pad[0] = (uint8_t)(frame >> 4);
  pad[sizeof pad - 1] = (uint8_t)(frame >> 12);
  if (frame > stop) {
    int below = stack_recurse(stop, at_bottom, arg);
    depth = below < 0 ? below : below + 1;
  } else if (at_bottom) {
    at_bottom(arg);
  }
  if (pad[0] != (uint8_t)(frame >> 4) || pad[sizeof pad - 1] != (uint8_t)(frame >> 12))
    return -1;
  return depth;
}

/* Returns the caller's stack top from goro_stack_bounds, failing the test
 * outside a goroutine. */
static uintptr_t stack_hi(void) {
  uintptr_t lo, hi;
  CHECK_OK(goro_stack_bounds(&lo, &hi));
  return hi;
}

/* ---- Pointers into a stack -------------------------------------------- */

typedef struct exchange {
  goro_chan *pointer; /* owner -> helper: the address of the owner's local */
  goro_chan *at_bottom; /* owner -> helper: parked deep in its recursion */
  goro_chan *written;   /* helper -> owner: the local has the new value */
  goro_chan *verified;  /* helper -> owner: the helper read the owner's value */
  long *cell;           /* the pointer, as the owner sees it from deep frames */
  int owner_done, helper_done;
} exchange;

static void owner_at_bottom(void *arg) {
  exchange *x = arg;
  long seen = 0;

  /* Park here, 150 KiB down, while the helper writes the top frame's local. */
  CHECK_OK(goro_chan_send(x->at_bottom, NULL));
  CHECK_OK(goro_chan_recv(x->written, &seen));
  CHECK_EQ(*x->cell, seen);

  /* And the other way: write it from down here for the helper to read. */
  *x->cell = 0x5eed0003;
  CHECK_OK(goro_chan_send(x->at_bottom, NULL));
  CHECK_OK(goro_chan_recv(x->verified, NULL));
}

static void pointer_owner(void *arg) {
  exchange *x = arg;
  volatile long cell = 0x5eed0001;
  long *p = (long *)&cell;

  x->cell = p;
  CHECK_OK(goro_chan_send(x->pointer, &p));

  int depth = stack_recurse(stack_hi() - (150 << 10), owner_at_bottom, x);
  if (depth < 0)
    FAIL("a frame of the 150 KiB recursion changed while the owner was parked at its bottom");
  CHECK_EQ(cell, 0x5eed0003);
  x->owner_done = 1;
}

static void pointer_helper(void *arg) {
  exchange *x = arg;
  long *p = NULL;

  CHECK_OK(goro_chan_recv(x->pointer, &p));
  CHECK_OK(goro_chan_recv(x->at_bottom, NULL));
  CHECK_EQ(*p, 0x5eed0001);
  *p = 0x5eed0002;
  long value = 0x5eed0002;
  CHECK_OK(goro_chan_send(x->written, &value));

  CHECK_OK(goro_chan_recv(x->at_bottom, NULL));
  CHECK_EQ(*p, 0x5eed0003);
  CHECK_OK(goro_chan_send(x->verified, NULL));
  x->helper_done = 1;
}

static int pointer_main(void *arg) {
  exchange x;
  (void)arg;

  memset(&x, 0, sizeof x);
  CHECK_OK(goro_chan_make(&x.pointer, sizeof(long *), 0));
  CHECK_OK(goro_chan_make(&x.at_bottom, 0, 0));
  CHECK_OK(goro_chan_make(&x.written, sizeof(long), 0));
  CHECK_OK(goro_chan_make(&x.verified, 0, 0));
  CHECK_OK(goro_spawn(pointer_owner, &x));
  CHECK_OK(goro_spawn(pointer_helper, &x));
  while (!__atomic_load_n(&x.owner_done, __ATOMIC_ACQUIRE) ||
         !__atomic_load_n(&x.helper_done, __ATOMIC_ACQUIRE))
    CHECK_OK(goro_sleep(1000000));
  CHECK_OK(goro_chan_free(x.pointer));
  CHECK_OK(goro_chan_free(x.at_bottom));
  CHECK_OK(goro_chan_free(x.written));
  CHECK_OK(goro_chan_free(x.verified));
  return 0;
}

TEST(stack_local_pointer_survives_deep_park) { RUN_MAIN(pointer_main, NULL); }

/* ---- Recursion within the maximum ------------------------------------- */

typedef struct recursion {
  size_t bytes;    /* how deep to recurse */
  int depth;       /* frames reached, or -1 */
  uintptr_t lo, hi;
  int done;
} recursion;

static void recurse_goroutine(void *arg) {
  recursion *r = arg;

  CHECK_OK(goro_stack_bounds(&r->lo, &r->hi));
  r->depth = stack_recurse(r->hi - r->bytes, NULL, NULL);
  __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
}

static int recurse_200k_main(void *arg) {
  recursion r = {.bytes = 200 << 10};
  (void)arg;

  CHECK_EQ(goro_max_stack(), GORO_DEFAULT_MAX_STACK);
  CHECK_OK(goro_spawn(recurse_goroutine, &r));
  while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE))
    CHECK_OK(goro_sleep(1000000));
  CHECK_EQ(r.hi - r.lo, GORO_DEFAULT_MAX_STACK);
  if (r.depth < (int)((200 << 10) / 512))
    FAIL("recursion to 200 KiB reached depth %d: frames are larger than expected or it failed",
         r.depth);
  return 0;
}

TEST(recursion_to_200k_fits_default_max) { RUN_MAIN(recurse_200k_main, NULL); }

static int recurse_900k_main(void *arg) {
  recursion r = {.bytes = 900 << 10};
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = 1 << 20};
  (void)arg;

  CHECK_OK(goro_spawn_with(recurse_goroutine, &r, &opts));
  while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE))
    CHECK_OK(goro_sleep(1000000));
  CHECK_EQ(r.hi - r.lo, 1 << 20);
  CHECK(r.depth > 0);
  return 0;
}

TEST(spawn_max_1m_allows_900k_recursion) { RUN_MAIN(recurse_900k_main, NULL); }

static void recurse_900k_default(void *arg) {
  (void)arg;
  announce_victim();
  stack_recurse(stack_hi() - (900 << 10), NULL, NULL);
  fprintf(stderr, "recursion to 900 KiB returned on a 256 KiB stack\n");
  exit(0);
}

static int recurse_900k_default_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_spawn(recurse_900k_default, NULL));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

CHILD(child_recurse_900k_default) { RUN_MAIN(recurse_900k_default_main, NULL); }

TEST(default_max_rejects_900k_recursion) {
  static child_result res;

  run_child("child_recurse_900k_default", &res);
  check_overflow_child(&res, GORO_DEFAULT_MAX_STACK);
  CHECK_CONTAINS(res.err, "stack_recurse");
}

/* ---- goro_stack_remaining --------------------------------------------- */

typedef struct remaining_walk {
  uintptr_t lo, hi;
  size_t last;     /* remaining bytes seen one frame up */
  int levels;
  int done;
} remaining_walk;

static void remaining_check(remaining_walk *w, int levels_left) {
  volatile uint8_t pad[200];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  size_t remaining = goro_stack_remaining();

  pad[0] = 1;
  /* goro_stack_remaining measures at its own frame, just below this one. */
  if (remaining > w->hi - w->lo)
    FAIL("remaining %zu exceeds the stack size %lu", remaining, (unsigned long)(w->hi - w->lo));
  if (w->lo + remaining > frame)
    FAIL("lo %#lx + remaining %zu lies above this frame %#lx", (unsigned long)w->lo, remaining,
         (unsigned long)frame);
  if (frame - (w->lo + remaining) > 4096)
    FAIL("lo + remaining is %lu bytes below this frame; expected the next frame down",
         (unsigned long)(frame - (w->lo + remaining)));
  if (w->levels > 0 && remaining >= w->last)
    FAIL("remaining %zu at level %d did not shrink from %zu one level up", remaining, w->levels,
         w->last);
  w->last = remaining;
  w->levels++;
  if (levels_left > 0)
    remaining_check(w, levels_left - 1);
  pad[0]++;
}

static void remaining_goroutine(void *arg) {
  remaining_walk *w = arg;

  CHECK_OK(goro_stack_bounds(&w->lo, &w->hi));
  size_t at_start = goro_stack_remaining();
  if (w->hi - w->lo - at_start > 4096)
    FAIL("a fresh goroutine has %zu of %lu bytes left: more than a page is used", at_start,
         (unsigned long)(w->hi - w->lo));
  remaining_check(w, 500);
  __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
}

static int remaining_main(void *arg) {
  remaining_walk w;
  (void)arg;

  memset(&w, 0, sizeof w);
  CHECK(goro_stack_remaining() > 0);
  CHECK_OK(goro_spawn(remaining_goroutine, &w));
  while (!__atomic_load_n(&w.done, __ATOMIC_ACQUIRE))
    CHECK_OK(goro_sleep(1000000));
  CHECK_EQ(w.levels, 501);
  return 0;
}

TEST(stack_remaining_shrinks_with_depth) {
  CHECK_EQ(goro_stack_remaining(), 0);
  RUN_MAIN(remaining_main, NULL);
}

/* ---- Stack hints ------------------------------------------------------ */

#define HINT_BYTES ((size_t)128 << 10)

typedef struct hinted {
  goro_chan *bounds;   /* goroutine -> main: its [lo, hi) */
  goro_chan *proceed;  /* main -> goroutine: the up-front checks are done */
  goro_chan *growths;  /* goroutine -> main: growths seen over its recursion */
} hinted;

static uint64_t read_growths(void) {
  goro_memstats s = {.size = sizeof s};
  CHECK_OK(goro_read_memstats(&s));
  return s.stack_growths;
}

static void yield_at_bottom(void *arg) {
  (void)arg;
  /* A park is where goro observes the depth of a stack. */
  CHECK_OK(goro_yield());
}

static void hinted_goroutine(void *arg) {
  hinted *h = arg;
  uintptr_t bounds[2];

  CHECK_OK(goro_stack_bounds(&bounds[0], &bounds[1]));
  CHECK_OK(goro_chan_send(h->bounds, bounds));
  CHECK_OK(goro_chan_recv(h->proceed, NULL));

  /* Main is parked and nothing else runs, so every growth counted between
   * the two reads is this goroutine's. */
  uint64_t before = read_growths();
  CHECK(stack_recurse(bounds[1] - (HINT_BYTES - (16 << 10)), yield_at_bottom, NULL) > 0);
  uint64_t growths = read_growths() - before;
  CHECK_OK(goro_chan_send(h->growths, &growths));
}

/* Turns shrink cycles off: a cycle could give back the hinted pages that
 * the goroutine has not used yet, and its later use would then count as
 * growth. */
static void stop_shrink_cycles(void) {
  goro_stack_policy policy = {.size = sizeof policy};

  CHECK_OK(goro_get_stack_policy(&policy));
  policy.shrink = false;
  policy.gc_period_ns = 0;
  CHECK_OK(goro_set_stack_policy(&policy));
}

static void make_hinted_chans(hinted *h) {
  CHECK_OK(goro_chan_make(&h->bounds, sizeof(uintptr_t[2]), 0));
  CHECK_OK(goro_chan_make(&h->proceed, 0, 0));
  CHECK_OK(goro_chan_make(&h->growths, sizeof(uint64_t), 0));
}

static void free_hinted_chans(hinted *h) {
  CHECK_OK(goro_chan_free(h->bounds));
  CHECK_OK(goro_chan_free(h->proceed));
  CHECK_OK(goro_chan_free(h->growths));
}

static int hint_commit_main(void *arg) {
  hinted h;
  goro_memstats before = {.size = sizeof before}, after = {.size = sizeof after};
  goro_spawn_opts opts = {.size = sizeof opts, .stack_hint = HINT_BYTES};
  uintptr_t bounds[2];
  (void)arg;

  stop_shrink_cycles();
  make_hinted_chans(&h);
  CHECK_OK(goro_read_memstats(&before));
  CHECK_OK(goro_spawn_with(hinted_goroutine, &h, &opts));
  CHECK_OK(goro_read_memstats(&after));
  if (after.stack_inuse - before.stack_inuse < HINT_BYTES)
    FAIL("stack_inuse grew by %llu bytes on a spawn with a %zu-byte hint",
         (unsigned long long)(after.stack_inuse - before.stack_inuse), HINT_BYTES);
  if (after.stack_inuse - before.stack_inuse > HINT_BYTES + 2 * PAGE_BYTES)
    FAIL("stack_inuse grew by %llu bytes, more than the %zu-byte hint and its top page",
         (unsigned long long)(after.stack_inuse - before.stack_inuse), HINT_BYTES);

  /* The pages are resident before the goroutine has touched them. */
  CHECK_OK(goro_chan_recv(h.bounds, bounds));
  unsigned char vec[HINT_BYTES / 4096];
  CHECK_OK(mincore((void *)(bounds[1] - HINT_BYTES), HINT_BYTES, vec));
  for (size_t i = 0; i < sizeof vec; i++)
    if (!(vec[i] & 1))
      FAIL("page %zu of %zu in the hinted range is not resident", i, sizeof vec);

  CHECK_OK(goro_chan_send(h.proceed, NULL));
  uint64_t growths;
  CHECK_OK(goro_chan_recv(h.growths, &growths));
  free_hinted_chans(&h);
  return 0;
}

TEST(stack_hint_commits_pages_up_front) { RUN_MAIN(hint_commit_main, NULL); }

typedef struct hint_run {
  size_t hint;
  uint64_t growths;
} hint_run;

static int hint_growth_main(void *arg) {
  hint_run *run = arg;
  hinted h;
  goro_spawn_opts opts = {.size = sizeof opts, .stack_hint = run->hint};
  uintptr_t bounds[2];

  stop_shrink_cycles();
  make_hinted_chans(&h);
  CHECK_OK(goro_spawn_with(hinted_goroutine, &h, &opts));
  CHECK_OK(goro_chan_recv(h.bounds, bounds));
  CHECK_OK(goro_chan_send(h.proceed, NULL));
  CHECK_OK(goro_chan_recv(h.growths, &run->growths));
  free_hinted_chans(&h);
  return 0;
}

TEST(stack_hint_avoids_growth_within_hint) {
  hint_run run = {.hint = HINT_BYTES};
  RUN_MAIN(hint_growth_main, &run);
  CHECK_EQ(run.growths, 0);
}

/* The same recursion without a hint: shows that the counter does move. */
TEST(unhinted_recursion_counts_growth) {
  hint_run run = {.hint = 0};
  RUN_MAIN(hint_growth_main, &run);
  CHECK(run.growths >= 1);
}

/* ---- Slots ------------------------------------------------------------ */

#define SLOT_GOROUTINES 24

typedef struct slot_seen {
  uintptr_t lo, hi, local;
  size_t max;
} slot_seen;

static goro_chan *slot_gate;
static goro_waitgroup slot_started = GORO_WAITGROUP_INIT;
static goro_waitgroup slot_exited = GORO_WAITGROUP_INIT;

static void slot_goroutine(void *arg) {
  slot_seen *s = arg;
  volatile int local = 1;

  CHECK_OK(goro_stack_bounds(&s->lo, &s->hi));
  s->local = (uintptr_t)&local;
  CHECK_OK(goro_wg_done(&slot_started));
  CHECK_EQ(goro_chan_recv(slot_gate, NULL), GORO_ECLOSED);
  local++;
  CHECK_OK(goro_wg_done(&slot_exited));
}

static int compare_lo(const void *a, const void *b) {
  const slot_seen *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int slots_main(void *arg) {
  static slot_seen seen[3 * SLOT_GOROUTINES];
  const size_t maxima[3] = {16 << 10, GORO_DEFAULT_MAX_STACK, 1 << 20};
  (void)arg;

  CHECK_OK(goro_chan_make(&slot_gate, 0, 0));
  for (int i = 0; i < 3 * SLOT_GOROUTINES; i++) {
    goro_spawn_opts opts = {.size = sizeof opts, .max_stack = maxima[i % 3]};
    seen[i].max = maxima[i % 3];
    CHECK_OK(goro_wg_add(&slot_started, 1));
    CHECK_OK(goro_wg_add(&slot_exited, 1));
    CHECK_OK(goro_spawn_with(slot_goroutine, &seen[i], &opts));
  }
  CHECK_OK(goro_wg_wait(&slot_started));

  for (int i = 0; i < 3 * SLOT_GOROUTINES; i++) {
    if (seen[i].hi - seen[i].lo != seen[i].max)
      FAIL("goroutine %d with a %zu-byte maximum got a %lu-byte stack", i, seen[i].max,
           (unsigned long)(seen[i].hi - seen[i].lo));
    if (seen[i].local < seen[i].lo || seen[i].local >= seen[i].hi)
      FAIL("goroutine %d's local %#lx lies outside its stack [%#lx, %#lx)", i,
           (unsigned long)seen[i].local, (unsigned long)seen[i].lo, (unsigned long)seen[i].hi);
  }

  /* With the guard counted as part of each slot, no two slots share a byte. */
  qsort(seen, 3 * SLOT_GOROUTINES, sizeof seen[0], compare_lo);
  for (int i = 1; i < 3 * SLOT_GOROUTINES; i++)
    if (seen[i].lo - GUARD_BYTES < seen[i - 1].hi)
      FAIL("slot [%#lx, %#lx) with its guard overlaps slot [%#lx, %#lx)",
           (unsigned long)(seen[i].lo - GUARD_BYTES), (unsigned long)seen[i].hi,
           (unsigned long)seen[i - 1].lo, (unsigned long)seen[i - 1].hi);

  CHECK_OK(goro_chan_close(slot_gate));
  CHECK_OK(goro_wg_wait(&slot_exited));
  CHECK_OK(goro_chan_free(slot_gate));
  return 0;
}

TEST(goroutine_slots_are_disjoint) { RUN_MAIN(slots_main, NULL); }
