/*
 * stack_frames.h: functions with known frame shapes, built from
 * tests/stack_frames.c once per variant:
 *
 *   o0       -O0 with -fstack-clash-protection
 *   o2       -O2 with -fstack-clash-protection
 *   noprobe  -O2 without -fstack-clash-protection and without sanitizers
 *
 * Each function's name ends in its variant, so that one test program can
 * link all three and a backtrace names the one that ran.
 */
#ifndef GORO_TEST_STACK_FRAMES_H
#define GORO_TEST_STACK_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define FRAMES_ARRAY_1M ((size_t)1 << 20)

#define FRAMES_DECLARE(v)                                                          \
  /* Recurses with frames of about 64 bytes (48 at -O2, 80 at -O0 with gcc     \
   * 12) until a frame lies below stop.                                         \
   * Returns the depth reached, or -1 if a frame's bytes changed meanwhile. */  \
  int frames_recurse64_##v(uintptr_t stop);                                     \
  /* The same frames, stopping once goro_stack_remaining() < reserve. */        \
  int frames_recurse64_until_##v(size_t reserve);                               \
  /* Each has one array of the named size in its frame, writes its lowest     \
   * byte first, then its highest, and returns their sum. */                    \
  int frames_array_8k_##v(int seed);                                            \
  int frames_array_64k_##v(int seed);                                           \
  int frames_array_1m_##v(int seed);                                            \
  int frames_vla_##v(size_t bytes, int seed);                                   \
  /* Holds a 1 MiB array of words and returns the address of its lowest word.   \
   * With write set it first stores marker there and in the highest word,       \
   * touching nothing in between. */                                            \
  uintptr_t frames_array_1m_at_##v(int write, uint64_t marker);

FRAMES_DECLARE(o0)
FRAMES_DECLARE(o2)
FRAMES_DECLARE(noprobe)

#endif
