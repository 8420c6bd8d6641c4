/*
 * Overflow by deep recursion and by large frames, with code built at -O0
 * and at -O2 (tests/stack_frames.c, see stack_frames.h):
 *
 * - Recursion with small frames fits a 256 KiB stack to 200 KiB and ends in
 *   the fatal report at 300 KiB, also while other goroutines run. Their
 *   stacks, checked with canaries read from the child after it exited, are
 *   untouched. goro_stack_remaining lets a recursion stop before the limit.
 * - Frames of 8 KiB, 64 KiB and a 100 KiB VLA run on a 512 KiB stack; a
 *   1 MiB frame ends in the fatal report without touching the neighbour.
 *
 * What is guaranteed for a frame larger than the 32 KiB guard: goro catches
 * it only when the code is compiled with -fstack-clash-protection. gcc then
 * moves sp down one 4 KiB page at a time and touches each page before going
 * further, so the first touch past the stack lands in the top page of the
 * guard. Without that flag a function allocates its whole frame with one
 * subtraction from sp and may write its lowest byte first; a frame larger
 * than the guard then writes into the slot below, which is another
 * goroutine's stack, and nothing faults. The test
 * frame_without_probes_writes_into_neighbour_stack shows exactly that.
 */
#include "stack_check.h"
#include "stack_frames.h"

typedef struct frames_variant {
  const char *name;
  int (*recurse64)(uintptr_t stop);
  int (*recurse64_until)(size_t reserve);
  int (*array_8k)(int seed);
  int (*array_64k)(int seed);
  int (*array_1m)(int seed);
  int (*vla)(size_t bytes, int seed);
} frames_variant;

static const frames_variant variant_o0 = {
    "o0", frames_recurse64_o0, frames_recurse64_until_o0, frames_array_8k_o0,
    frames_array_64k_o0, frames_array_1m_o0, frames_vla_o0,
};

static const frames_variant variant_o2 = {
    "o2", frames_recurse64_o2, frames_recurse64_until_o2, frames_array_8k_o2,
    frames_array_64k_o2, frames_array_1m_o2, frames_vla_o2,
};

/* Runs fn(arg) as a goroutine with the given maximum (0: the default) and
 * waits for it to return. */
typedef struct in_goroutine {
  void (*fn)(void *arg);
  void *arg;
  size_t max_stack;
} in_goroutine;

static goro_waitgroup in_goroutine_wg = GORO_WAITGROUP_INIT;

static void in_goroutine_entry(void *arg) {
  in_goroutine *run = arg;

  run->fn(run->arg);
  CHECK_OK(goro_wg_done(&in_goroutine_wg));
}

static int in_goroutine_main(void *arg) {
  in_goroutine *run = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = run->max_stack};

  CHECK_OK(goro_wg_add(&in_goroutine_wg, 1));
  CHECK_OK(goro_spawn_with(in_goroutine_entry, run, &opts));
  CHECK_OK(goro_wg_wait(&in_goroutine_wg));
  return 0;
}

static void run_in_goroutine(void (*fn)(void *), void *arg, size_t max_stack) {
  in_goroutine run = {fn, arg, max_stack};
  RUN_MAIN(in_goroutine_main, &run);
}

/* ---- Recursion with small frames -------------------------------------- */

static void recurse_200k(void *arg) {
  const frames_variant *v = arg;
  uintptr_t lo, hi;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  CHECK_EQ(hi - lo, GORO_DEFAULT_MAX_STACK);
  int depth = v->recurse64(hi - (200 << 10));
  if (depth < 0)
    FAIL("a frame of the %s recursion changed while deeper frames ran", v->name);
  /* Small frames: 200 KiB takes well over a thousand of them. */
  if (depth < (200 << 10) / 160)
    FAIL("the %s recursion to 200 KiB took only %d frames, %d bytes each", v->name, depth,
         (200 << 10) / (depth ? depth : 1));
}

TEST(recursion_o0_to_200k_completes) { run_in_goroutine(recurse_200k, (void *)&variant_o0, 0); }
TEST(recursion_o2_to_200k_completes) { run_in_goroutine(recurse_200k, (void *)&variant_o2, 0); }

typedef struct until_run {
  const frames_variant *variant;
} until_run;

/* A recursion that checks goro_stack_remaining stops within its reserve
 * and returns normally instead of reaching the guard. */
static void recurse_until_reserve(void *arg) {
  const frames_variant *v = arg;
  uintptr_t lo, hi;
  size_t reserve = 8 << 10;

  CHECK_OK(goro_stack_bounds(&lo, &hi));
  int depth = v->recurse64_until(reserve);
  if (depth < (int)((hi - lo - 2 * reserve) / 160))
    FAIL("the %s recursion stopped after %d frames, far above the %zu-byte reserve of a "
         "%lu-byte stack",
         v->name, depth, reserve, (unsigned long)(hi - lo));
  CHECK(goro_stack_remaining() > hi - lo - 4096);
}

TEST(stack_remaining_stops_recursion_o0) {
  run_in_goroutine(recurse_until_reserve, (void *)&variant_o0, 0);
}

TEST(stack_remaining_stops_recursion_o2) {
  run_in_goroutine(recurse_until_reserve, (void *)&variant_o2, 0);
}

/* ---- Neighbours with canaries ----------------------------------------- */

#define NEIGHBOURS 4
#define TOP_CANARY_BYTES 2048
#define DEEP_CANARY_BYTES ((size_t)64 << 10)

/*
 * A goroutine that keeps canaries on its own stack and keeps running. One
 * canary sits near its stack top, right below the slot above, which is the
 * memory next to that slot's guard. With deep set, a 64 KiB one starts about
 * 16 KiB above its stack's lo, where a 1 MiB frame in the slot above would
 * land if it jumped over its guard. Each canary is announced on stderr so
 * that the parent can check it after the child has died. While running,
 * the goroutine checks them itself and prints a line if one breaks.
 */
typedef struct neighbour {
  int index;
  int deep;
  uintptr_t lo, hi;
} neighbour;

static goro_waitgroup neighbours_ready = GORO_WAITGROUP_INIT;

static void watch_canaries(const neighbour *n, volatile uint8_t *top, volatile uint8_t *deep) {
  size_t first;

  for (;;) {
    if (canary_damage(top, TOP_CANARY_BYTES, 100 + (uint32_t)n->index, &first))
      fprintf(stderr, "canary broken: neighbour %d, top canary byte %zu\n", n->index, first);
    if (deep && canary_damage(deep, DEEP_CANARY_BYTES, 200 + (uint32_t)n->index, &first))
      fprintf(stderr, "canary broken: neighbour %d, deep canary byte %zu\n", n->index, first);
    CHECK_OK(goro_yield());
  }
}

__attribute__((noinline)) static void keep_deep_canary(const neighbour *n,
                                                       volatile uint8_t *top) {
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  size_t bytes = frame - (n->lo + (16 << 10));
  volatile uint8_t span[bytes];

  canary_fill(span, DEEP_CANARY_BYTES, 200 + (uint32_t)n->index);
  canary_announce(span, DEEP_CANARY_BYTES, 200 + (uint32_t)n->index);
  CHECK_OK(goro_wg_done(&neighbours_ready));
  watch_canaries(n, top, span);
}

static void neighbour_goroutine(void *arg) {
  neighbour *n = arg;
  volatile uint8_t top[TOP_CANARY_BYTES];

  CHECK_OK(goro_stack_bounds(&n->lo, &n->hi));
  canary_fill(top, sizeof top, 100 + (uint32_t)n->index);
  canary_announce(top, sizeof top, 100 + (uint32_t)n->index);
  if (n->deep)
    keep_deep_canary(n, top);
  CHECK_OK(goro_wg_done(&neighbours_ready));
  watch_canaries(n, top, NULL);
}

enum victim_action { VICTIM_RECURSE_300K, VICTIM_ARRAY_1M };

typedef struct overflow_scene {
  const frames_variant *variant;
  enum victim_action action;
  size_t max_stack;
  int neighbours;     /* 0 or NEIGHBOURS */
  int deep_canaries;
  neighbour n[NEIGHBOURS];
} overflow_scene;

static void victim_goroutine(void *arg) {
  overflow_scene *s = arg;
  uintptr_t lo, hi;

  announce_victim();
  CHECK_OK(goro_stack_bounds(&lo, &hi));
  for (int i = 0; i < s->neighbours; i++)
    if (s->n[i].hi == lo - GUARD_BYTES)
      fprintf(stderr, "neighbour %d's slot ends where the victim's guard starts\n", i);

  if (s->action == VICTIM_RECURSE_300K)
    s->variant->recurse64(hi - (300 << 10));
  else
    s->variant->array_1m(7);
  fprintf(stderr, "the %s code returned from past the stack limit\n", s->variant->name);
  exit(0);
}

static int overflow_scene_main(void *arg) {
  overflow_scene *s = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = s->max_stack};

  /* Spawned first, the neighbours take the slots below the victim's. */
  for (int i = 0; i < s->neighbours; i++) {
    s->n[i].index = i;
    s->n[i].deep = s->deep_canaries;
    CHECK_OK(goro_wg_add(&neighbours_ready, 1));
    CHECK_OK(goro_spawn_with(neighbour_goroutine, &s->n[i], &opts));
  }
  CHECK_OK(goro_wg_wait(&neighbours_ready));
  CHECK_OK(goro_spawn_with(victim_goroutine, s, &opts));
  for (;;)
    CHECK_OK(goro_sleep(1000000000));
  return 0;
}

static void run_overflow_scene(const frames_variant *v, enum victim_action action,
                               size_t max_stack, int neighbours, int deep) {
  static overflow_scene scene;

  scene.variant = v;
  scene.action = action;
  scene.max_stack = max_stack;
  scene.neighbours = neighbours;
  scene.deep_canaries = deep;
  RUN_MAIN(overflow_scene_main, &scene);
}

/* Asserts the report of an overflow scene and that every canary of its
 * neighbours was intact when the child exited. */
static void check_overflow_scene(const char *child, size_t limit, int neighbours, int canaries,
                                 const char *function) {
  static child_result res;
  postmortem pm;

  run_child_postmortem(child, &res, &pm);
  check_overflow_child(&res, limit);
  const char *trace = strstr(res.err, "[running]:\n");
  CHECK(trace != NULL);
  CHECK_CONTAINS(trace, function);
  if (neighbours) {
    CHECK_CONTAINS(res.err, "'s slot ends where the victim's guard starts\n");
    if (strstr(res.err, "canary broken"))
      FAIL("a neighbour saw its canary broken before the child exited:\n%s", res.err);
  }
  CHECK_EQ(pm.read_errors, 0);
  CHECK_EQ(pm.canaries, canaries);
  if (pm.broken)
    FAIL("%d of %d canaries were broken when the child exited, the first at %#lx; stderr:\n%s",
         pm.broken, pm.canaries, (unsigned long)pm.first_bad, res.err);
}

CHILD(child_recurse_300k_o0) {
  run_overflow_scene(&variant_o0, VICTIM_RECURSE_300K, 0, 0, 0);
}
CHILD(child_recurse_300k_o2) {
  run_overflow_scene(&variant_o2, VICTIM_RECURSE_300K, 0, 0, 0);
}
CHILD(child_recurse_300k_neighbours_o0) {
  run_overflow_scene(&variant_o0, VICTIM_RECURSE_300K, 0, NEIGHBOURS, 0);
}
CHILD(child_recurse_300k_neighbours_o2) {
  run_overflow_scene(&variant_o2, VICTIM_RECURSE_300K, 0, NEIGHBOURS, 0);
}

TEST(recursion_o0_to_300k_is_fatal) {
  check_overflow_scene("child_recurse_300k_o0", GORO_DEFAULT_MAX_STACK, 0, 0,
                       "frames_recurse64_o0");
}

TEST(recursion_o2_to_300k_is_fatal) {
  check_overflow_scene("child_recurse_300k_o2", GORO_DEFAULT_MAX_STACK, 0, 0,
                       "frames_recurse64_o2");
}

TEST(recursion_o0_overflow_spares_neighbours) {
  check_overflow_scene("child_recurse_300k_neighbours_o0", GORO_DEFAULT_MAX_STACK, NEIGHBOURS,
                       NEIGHBOURS, "frames_recurse64_o0");
}

TEST(recursion_o2_overflow_spares_neighbours) {
  check_overflow_scene("child_recurse_300k_neighbours_o2", GORO_DEFAULT_MAX_STACK, NEIGHBOURS,
                       NEIGHBOURS, "frames_recurse64_o2");
}

/* ---- Large frames ----------------------------------------------------- */

#define LARGE_FRAME_MAX ((size_t)512 << 10)

static void large_frames_within_max(void *arg) {
  const frames_variant *v = arg;

  CHECK_EQ(v->array_8k(10), 21);
  CHECK_EQ(v->array_64k(20), 41);
  CHECK_EQ(v->vla(100 << 10, 30), 61);
}

TEST(frames_o0_to_100k_fit_512k_stack) {
  run_in_goroutine(large_frames_within_max, (void *)&variant_o0, LARGE_FRAME_MAX);
}

TEST(frames_o2_to_100k_fit_512k_stack) {
  run_in_goroutine(large_frames_within_max, (void *)&variant_o2, LARGE_FRAME_MAX);
}

CHILD(child_frame_1m_o0) {
  run_overflow_scene(&variant_o0, VICTIM_ARRAY_1M, LARGE_FRAME_MAX, NEIGHBOURS, 1);
}
CHILD(child_frame_1m_o2) {
  run_overflow_scene(&variant_o2, VICTIM_ARRAY_1M, LARGE_FRAME_MAX, NEIGHBOURS, 1);
}

/* The probes walk down from the frame's top, so the first one past the
 * stack faults in the guard's top page, not deeper in it. */
static void check_first_probe_in_top_guard_page(const char *child) {
  static child_result res;

  run_child(child, &res);
  overflow_report r = parse_overflow_report(res.err);
  CHECK(r.found);
  if (r.addr < r.lo - PAGE_BYTES)
    FAIL("the 1 MiB frame faulted at %#lx, %lu bytes below lo; expected the guard's top page",
         (unsigned long)r.addr, (unsigned long)(r.lo - r.addr));
}

TEST(frame_o0_of_1m_is_fatal) {
  check_overflow_scene("child_frame_1m_o0", LARGE_FRAME_MAX, NEIGHBOURS, 2 * NEIGHBOURS,
                       "frames_array_1m_o0");
  check_first_probe_in_top_guard_page("child_frame_1m_o0");
}

TEST(frame_o2_of_1m_is_fatal) {
  check_overflow_scene("child_frame_1m_o2", LARGE_FRAME_MAX, NEIGHBOURS, 2 * NEIGHBOURS,
                       "frames_array_1m_o2");
  check_first_probe_in_top_guard_page("child_frame_1m_o2");
}

/* ---- A large frame without stack-clash probes ------------------------- */

/*
 * frames_array_1m_at_noprobe is built without -fstack-clash-protection: it
 * moves sp down 1 MiB at once and writes the lowest word of its array
 * first. On a 512 KiB stack that word lies in the slot below, inside the
 * stack of the goroutine there. This test pins down that documented gap:
 * the write lands in the neighbour's stack, exactly at the array's lowest
 * word, and nothing faults.
 */
#define UNPROBED_MARKER 0x6f766572666c6f77ULL /* "overflow" */

typedef struct unprobed {
  goro_chan *victim_at;     /* victim -> main: where the array's lowest word lies */
  goro_chan *victim_go;     /* main -> victim: write it now */
  goro_chan *victim_done;   /* victim -> main: the address of the word it wrote */
  goro_chan *target;        /* main -> neighbour: cover this address with a canary */
  goro_chan *neighbour_ok;  /* neighbour -> main: bounds read, then canary in place */
  goro_chan *check;         /* main -> neighbour: check it now */
  goro_chan *damage;        /* neighbour -> main: what changed */
  uintptr_t victim_lo, victim_hi, neighbour_lo, neighbour_hi;
} unprobed;

typedef struct canary_damage_report {
  size_t bytes;          /* bytes that differ from the pattern */
  uintptr_t first, last; /* addresses of the first and last of them */
  uint64_t word;         /* the word at the target address */
} canary_damage_report;

__attribute__((noinline)) static void neighbour_cover(unprobed *u, uintptr_t target) {
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  volatile uint8_t span[frame - (target - (8 << 10))];
  volatile uint8_t *canary = (volatile uint8_t *)(target - 4096);
  canary_damage_report d;

  if ((uintptr_t)&span[0] > target - 4096)
    FAIL("the canary array starts at %#lx, above %#lx", (unsigned long)(uintptr_t)&span[0],
         (unsigned long)(target - 4096));
  canary_fill(canary, 8192, 300);
  CHECK_OK(goro_chan_send(u->neighbour_ok, NULL));
  CHECK_OK(goro_chan_recv(u->check, NULL));

  memset(&d, 0, sizeof d);
  for (size_t i = 0; i < 8192; i++) {
    if (canary[i] == canary_byte(300, i))
      continue;
    if (d.bytes++ == 0)
      d.first = (uintptr_t)&canary[i];
    d.last = (uintptr_t)&canary[i];
  }
  d.word = *(volatile uint64_t *)target;
  CHECK_OK(goro_chan_send(u->damage, &d));
}

static void unprobed_neighbour(void *arg) {
  unprobed *u = arg;
  uintptr_t target;

  CHECK_OK(goro_stack_bounds(&u->neighbour_lo, &u->neighbour_hi));
  CHECK_OK(goro_chan_send(u->neighbour_ok, NULL));
  CHECK_OK(goro_chan_recv(u->target, &target));
  neighbour_cover(u, target);
}

static void unprobed_victim(void *arg) {
  unprobed *u = arg;
  uintptr_t measured = 0;

  CHECK_OK(goro_stack_bounds(&u->victim_lo, &u->victim_hi));
  /* One call site for both calls, so both frames lie at the same address. */
  for (int write = 0; write <= 1; write++) {
    uintptr_t at = frames_array_1m_at_noprobe(write, UNPROBED_MARKER);
    if (!write) {
      measured = at;
      CHECK_OK(goro_chan_send(u->victim_at, &measured));
      CHECK_OK(goro_chan_recv(u->victim_go, NULL));
    } else {
      CHECK_OK(goro_chan_send(u->victim_done, &at));
    }
  }
}

static int unprobed_main(void *arg) {
  unprobed *u = arg;
  goro_spawn_opts opts = {.size = sizeof opts, .max_stack = LARGE_FRAME_MAX};
  uintptr_t at, written;
  canary_damage_report d;

  CHECK_OK(goro_chan_make(&u->victim_at, sizeof(uintptr_t), 0));
  CHECK_OK(goro_chan_make(&u->victim_go, 0, 0));
  CHECK_OK(goro_chan_make(&u->victim_done, sizeof(uintptr_t), 0));
  CHECK_OK(goro_chan_make(&u->target, sizeof(uintptr_t), 0));
  CHECK_OK(goro_chan_make(&u->neighbour_ok, 0, 0));
  CHECK_OK(goro_chan_make(&u->check, 0, 0));
  CHECK_OK(goro_chan_make(&u->damage, sizeof(canary_damage_report), 0));

  /* The neighbour is spawned first and takes the slot below the victim's. */
  CHECK_OK(goro_spawn_with(unprobed_neighbour, u, &opts));
  CHECK_OK(goro_chan_recv(u->neighbour_ok, NULL));
  CHECK_OK(goro_spawn_with(unprobed_victim, u, &opts));
  CHECK_OK(goro_chan_recv(u->victim_at, &at));
  if (u->neighbour_hi != u->victim_lo - GUARD_BYTES)
    FAIL("the neighbour's slot [%#lx, %#lx) does not end at the victim's guard %#lx",
         (unsigned long)u->neighbour_lo, (unsigned long)u->neighbour_hi,
         (unsigned long)(u->victim_lo - GUARD_BYTES));
  if (at >= u->victim_lo - GUARD_BYTES)
    FAIL("the 1 MiB array starts at %#lx, not below the victim's guard %#lx", (unsigned long)at,
         (unsigned long)(u->victim_lo - GUARD_BYTES));
  if (at < u->neighbour_lo + 4096 || at + 4096 > u->neighbour_hi)
    FAIL("the 1 MiB array starts at %#lx, outside the neighbour's stack [%#lx, %#lx)",
         (unsigned long)at, (unsigned long)u->neighbour_lo, (unsigned long)u->neighbour_hi);

  CHECK_OK(goro_chan_send(u->target, &at));
  CHECK_OK(goro_chan_recv(u->neighbour_ok, NULL));
  CHECK_OK(goro_chan_send(u->victim_go, NULL));
  CHECK_OK(goro_chan_recv(u->victim_done, &written));
  CHECK_EQ(written, at);
  CHECK_OK(goro_chan_send(u->check, NULL));
  CHECK_OK(goro_chan_recv(u->damage, &d));

  /* The neighbour's stack now contains the victim's word, and only that. */
  CHECK_EQ(d.word, UNPROBED_MARKER);
  CHECK(d.bytes >= 1);
  CHECK(d.first >= at);
  CHECK(d.last < at + sizeof(uint64_t));

  CHECK_OK(goro_chan_free(u->victim_at));
  CHECK_OK(goro_chan_free(u->victim_go));
  CHECK_OK(goro_chan_free(u->victim_done));
  CHECK_OK(goro_chan_free(u->target));
  CHECK_OK(goro_chan_free(u->neighbour_ok));
  CHECK_OK(goro_chan_free(u->check));
  CHECK_OK(goro_chan_free(u->damage));
  return 0;
}

TEST(frame_without_probes_writes_into_neighbour_stack) {
  static unprobed u;
  RUN_MAIN(unprobed_main, &u);
}
