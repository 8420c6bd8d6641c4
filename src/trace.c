/*
 * trace.c: writes the GOROTRACE file in the Chrome trace-event JSON format,
 * which ui.perfetto.dev and chrome://tracing open.
 *
 * Events, all with pid 1:
 * - "X" (complete) events on tid = worker index: one per run slice of a
 *   goroutine, named "g<id>";
 * - "b"/"e" (async) events with id = goroutine id: its lifetime;
 * - "C" (counter) events named "stack g<id>": its committed span in bytes
 *   after each observed change (0 when it exits).
 * Timestamps are microseconds since goro_run started.
 *
 * Events go into one buffer under a spinlock and to the file in 256 KiB
 * writes. Tracing costs a lock per event, which is fine for a debugging
 * aid but shows in switch-heavy benchmarks.
 */
#define _GNU_SOURCE
#include "trace.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sched.h"

#define TRACE_BUF_SIZE ((size_t)256 << 10)

bool goro__tracing;

static struct {
  goro__spinlock lock;
  int fd;
  char *buf;
  size_t len;
  bool first;
  int64_t t0;
} tr;

static void flush_locked(void) {
  size_t off = 0;

  while (off < tr.len) {
    ssize_t n = write(tr.fd, tr.buf + off, tr.len - off);
    if (n <= 0) {
      /* A full disk or a bad file: report it once and stop tracing, rather
       * than lose events silently. */
      static const char msg[] = "goro: GOROTRACE: write failed; tracing stopped\n";
      if (goro__tracing && write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        off = tr.len;
      goro__tracing = false;
      break;
    }
    off += (size_t)n;
  }
  tr.len = 0;
}

/* A program that calls exit() from a goroutine never returns from
 * goro_run; write what was traced and close the JSON anyway. */
static void finish_at_exit(void) { goro__trace_fini(); }

static void __attribute__((format(printf, 1, 2))) emit(const char *fmt, ...) {
  char event[256];
  va_list ap;

  va_start(ap, fmt);
  int n = vsnprintf(event, sizeof event, fmt, ap);
  va_end(ap);
  if (n <= 0)
    return;
  if ((size_t)n >= sizeof event)
    n = sizeof event - 1;

  goro__spin_lock(&tr.lock);
  if (tr.len + (size_t)n + 3 > TRACE_BUF_SIZE)
    flush_locked();
  if (!tr.first)
    tr.buf[tr.len++] = ',';
  tr.first = false;
  tr.buf[tr.len++] = '\n';
  for (int i = 0; i < n; i++)
    tr.buf[tr.len++] = event[i];
  goro__spin_unlock(&tr.lock);
}

static double micros(int64_t ns) { return (double)(ns - tr.t0) / 1000.0; }

void goro__trace_init(int nprocs) {
  const char *path = getenv("GOROTRACE");

  goro__tracing = false;
  if (!path || !*path)
    return;
  tr.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  tr.buf = malloc(TRACE_BUF_SIZE);
  if (tr.fd < 0 || !tr.buf) {
    fprintf(stderr, "goro: GOROTRACE: cannot write %s (tracing off)\n", path);
    if (tr.fd >= 0)
      close(tr.fd);
    free(tr.buf);
    tr.buf = NULL;
    return;
  }
  tr.len = 0;
  tr.first = true;
  tr.t0 = goro__nanotime();
  static const char head[] = "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[";
  if (write(tr.fd, head, sizeof head - 1) != (ssize_t)(sizeof head - 1)) {
    fprintf(stderr, "goro: GOROTRACE: cannot write %s (tracing off)\n", path);
    close(tr.fd);
    free(tr.buf);
    tr.buf = NULL;
    return;
  }
  goro__tracing = true;
  static bool exit_hook;
  if (!exit_hook)
    exit_hook = atexit(finish_at_exit) == 0;

  emit("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"goro\"}}");
  for (int i = 0; i < nprocs; i++)
    emit("{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,"
         "\"args\":{\"name\":\"worker %d\"}}",
         i, i);
}

void goro__trace_fini(void) {
  static const char tail[] = "\n]}\n";

  if (!tr.buf)
    return;
  goro__spin_lock(&tr.lock);
  flush_locked();
  if (goro__tracing && write(tr.fd, tail, sizeof tail - 1) < 0)
    tr.len = 0;
  goro__tracing = false;
  goro__spin_unlock(&tr.lock);
  close(tr.fd);
  free(tr.buf);
  tr.buf = NULL;
}

void goro__trace_event_spawn(goro__g *g) {
  emit("{\"name\":\"goroutine %lld\",\"cat\":\"goroutine\",\"ph\":\"b\",\"id\":%lld,"
       "\"ts\":%.3f,\"pid\":1,\"tid\":0}",
       (long long)g->id, (long long)g->id, micros(goro__nanotime()));
}

void goro__trace_event_exit(goro__g *g) {
  emit("{\"name\":\"goroutine %lld\",\"cat\":\"goroutine\",\"ph\":\"e\",\"id\":%lld,"
       "\"ts\":%.3f,\"pid\":1,\"tid\":0}",
       (long long)g->id, (long long)g->id, micros(goro__nanotime()));
}

void goro__trace_event_run(goro__m *m, goro__g *g, int64_t start_ns, int64_t end_ns) {
  emit("{\"name\":\"g%lld\",\"cat\":\"run\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
       "\"pid\":1,\"tid\":%d,\"args\":{\"goroutine\":%lld}}",
       (long long)g->id, micros(start_ns), (double)(end_ns - start_ns) / 1000.0, m->index,
       (long long)g->id);
}

void goro__trace_event_stack(goro__g *g, uintptr_t span) {
  emit("{\"name\":\"stack g%lld\",\"ph\":\"C\",\"ts\":%.3f,\"pid\":1,"
       "\"args\":{\"bytes\":%llu}}",
       (long long)g->id, micros(goro__nanotime()), (unsigned long long)span);
}
