/*
 * trace.h: GOROTRACE=file.json, a Chrome/Perfetto trace-event file of
 * goroutine lifetimes, run slices per worker thread and stack sizes.
 *
 * Tracing is decided once when goro_run starts. When it is off every hook
 * is one predictable branch on goro__tracing.
 */
#ifndef GORO_TRACE_H
#define GORO_TRACE_H

#include <stdbool.h>
#include <stdint.h>

struct goro__g;
struct goro__m;

extern bool goro__tracing;

void goro__trace_init(int nprocs);
void goro__trace_fini(void);
void goro__trace_event_spawn(struct goro__g *g);
void goro__trace_event_exit(struct goro__g *g);
void goro__trace_event_run(struct goro__m *m, struct goro__g *g, int64_t start_ns, int64_t end_ns);
void goro__trace_event_stack(struct goro__g *g, uintptr_t span);

static inline void goro__trace_stack(struct goro__g *g, uintptr_t span) {
  if (__builtin_expect(goro__tracing, 0))
    goro__trace_event_stack(g, span);
}

#endif
