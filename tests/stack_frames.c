/*
 * stack_frames.c: the functions of stack_frames.h, compiled once per
 * variant with -DFRAMES_VARIANT=o0|o2|noprobe (see the Makefile).
 *
 * Every function is noinline and keeps its arrays volatile, so that each
 * optimization level keeps the frame it is written with.
 */
#include "stack_frames.h"

#include "goro.h"

#ifndef FRAMES_VARIANT
#error "build with -DFRAMES_VARIANT=o0, o2 or noprobe"
#endif

#define FRAMES_PASTE2(base, variant) base##_##variant
#define FRAMES_PASTE(base, variant) FRAMES_PASTE2(base, variant)
#define FRAMES_NAME(base) FRAMES_PASTE(base, FRAMES_VARIANT)

#define NOINLINE __attribute__((noinline))

NOINLINE int FRAMES_NAME(frames_recurse64)(uintptr_t stop) {
  volatile uint8_t pad[16];
  uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
  int depth = 1;

  pad[0] = (uint8_t)(frame >> 4);
  if (frame > stop) {
    int below = FRAMES_NAME(frames_recurse64)(stop);
    depth = below < 0 ? below : below + 1;
  }
  return pad[0] == (uint8_t)(frame >> 4) ? depth : -1;
}

NOINLINE int FRAMES_NAME(frames_recurse64_until)(size_t reserve) {
  volatile uint8_t pad[16];
  int depth = 1;

  pad[0] = (uint8_t)depth;
  if (goro_stack_remaining() >= reserve)
    depth += FRAMES_NAME(frames_recurse64_until)(reserve);
  return depth + pad[0] - 1;
}

#define FRAMES_ARRAY_FN(name, bytes)                                            \
  NOINLINE int FRAMES_NAME(name)(int seed) {                                    \
    volatile uint8_t a[bytes];                                                  \
    a[0] = (uint8_t)seed;                                                       \
    a[sizeof a - 1] = (uint8_t)(seed + 1);                                      \
    return a[0] + a[sizeof a - 1];                                              \
  }

FRAMES_ARRAY_FN(frames_array_8k, 8 << 10)
FRAMES_ARRAY_FN(frames_array_64k, 64 << 10)
FRAMES_ARRAY_FN(frames_array_1m, FRAMES_ARRAY_1M)

NOINLINE int FRAMES_NAME(frames_vla)(size_t bytes, int seed) {
  volatile uint8_t a[bytes];

  a[0] = (uint8_t)seed;
  a[bytes - 1] = (uint8_t)(seed + 1);
  return a[0] + a[bytes - 1];
}

NOINLINE uintptr_t FRAMES_NAME(frames_array_1m_at)(int write, uint64_t marker) {
  volatile uint64_t a[FRAMES_ARRAY_1M / sizeof(uint64_t)];

  if (write) {
    a[0] = marker;
    a[sizeof a / sizeof a[0] - 1] = marker;
  }
  return (uintptr_t)&a[0];
}
