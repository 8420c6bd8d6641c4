/*
 * observe.c: goro's stack statistics from the outside.
 *
 * Six workers take turns at deep and shallow work for about 130 ms. Each
 * round recurses 8 to 96 KiB deep and computes there for about a
 * millisecond, long enough to show as a run slice in a trace viewer. Then
 * it sleeps, returns and sleeps again. Meanwhile the main goroutine runs a
 * shrink cycle every 5 ms, so stacks grow and shrink while you watch. 40 ms
 * in, main writes the Prometheus exposition to stdout, and at the end it
 * prints a memstats summary to stderr.
 *
 *   observe                      run once, print the summary and exposition
 *   observe -textfile DIR        also write DIR/goro.prom for the node
 *                                exporter's textfile collector, 40 ms in
 *   observe -serve PORT [-requests N]
 *                                also serve the exposition over HTTP on
 *                                127.0.0.1:PORT, from the start until N
 *                                requests (default 1) have been served
 *
 * GORODEBUG and GOROTRACE apply as to any goro program; docs/observability.md
 * shows their output for this one. Build: make build/examples/observe.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "goro.h"

#define MS ((int64_t)1000000)
#define WORKERS 6
#define ROUNDS 4

static goro_waitgroup finished, served;
static int running_workers = WORKERS;

/* Returns after spinning for ns nanoseconds without calling goro. */
static void compute(int64_t ns) {
  struct timespec start, now;

  clock_gettime(CLOCK_MONOTONIC, &start);
  do
    clock_gettime(CLOCK_MONOTONIC, &now);
  while ((now.tv_sec - start.tv_sec) * 1000000000 + (now.tv_nsec - start.tv_nsec) < ns);
}

/* Recurses with a 1 KiB frame per level until the frame is depth bytes
 * below top, then computes and sleeps there, parked deep. */
static int descend(uintptr_t top, size_t depth) {
  volatile char frame[1024];
  uintptr_t here = (uintptr_t)&frame[0];

  frame[0] = 1;
  if (top - here < depth)
    return descend(top, depth) + frame[0];
  compute(1 * MS);
  goro_sleep(2 * MS);
  return frame[0];
}

static void worker(void *arg) {
  int index = (int)(intptr_t)arg;
  uintptr_t lo, hi;

  goro_stack_bounds(&lo, &hi);
  for (int round = 0; round < ROUNDS; round++) {
    size_t depth = (size_t)(8 + ((index * 5 + round * 7) % 12) * 8) << 10;
    descend(hi, depth);
    /* Parked shallow for longer than the default hysteresis of 4 cycles,
     * so a cycle can shrink it. */
    goro_sleep(30 * MS);
  }
  __atomic_sub_fetch(&running_workers, 1, __ATOMIC_RELEASE);
  goro_wg_done(&finished);
}

static void print_summary(void) {
  goro_memstats s = {.size = sizeof s};

  goro_read_memstats(&s);
  fprintf(stderr,
          "goroutines=%llu spawned=%llu stack_inuse=%llu stack_cache=%llu stack_sys=%llu "
          "growths=%llu shrinks=%llu pages_released=%llu gc_cycles=%llu stack_start_size=%llu "
          "guards=%llu unguarded_slots=%llu\n",
          (unsigned long long)s.goroutines, (unsigned long long)s.spawned_total,
          (unsigned long long)s.stack_inuse, (unsigned long long)s.stack_cache,
          (unsigned long long)s.stack_sys, (unsigned long long)s.stack_growths,
          (unsigned long long)s.stack_shrinks, (unsigned long long)s.pages_released,
          (unsigned long long)s.gc_cycles, (unsigned long long)s.stack_start_size,
          (unsigned long long)s.guards, (unsigned long long)s.unguarded_slots);
}

/* Writes the exposition to DIR/goro.prom. The collector reads every *.prom
 * file in DIR whenever it is scraped, so the file is written under another
 * name and renamed into place: a scrape reads the old file or the new one,
 * never half of one. */
static int write_textfile(const char *dir) {
  char tmp[4096], path[4096];

  snprintf(tmp, sizeof tmp, "%s/goro.prom.%d", dir, (int)getpid());
  snprintf(path, sizeof path, "%s/goro.prom", dir);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    fprintf(stderr, "observe: cannot create %s: %s\n", tmp, strerror(errno));
    return -1;
  }
  int rc = goro_write_prometheus(fileno(f));
  if (fclose(f) != 0 || rc != 0 || rename(tmp, path) != 0) {
    fprintf(stderr, "observe: cannot write %s: %s\n", path, rc ? goro_strerror(rc) : strerror(errno));
    unlink(tmp);
    return -1;
  }
  fprintf(stderr, "observe: wrote %s\n", path);
  return 0;
}

/* Writes all of buf to a connection, parking while the socket is full. */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = goro_write(fd, buf, len);
    if (n < 0)
      return -1;
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/*
 * Sends the exposition as the response to one HTTP request. goro_write_prometheus
 * calls write(2) directly, which would block the worker on a slow client,
 * so the text goes to a memory file first and to the socket with
 * goro_write, which parks only this goroutine.
 */
static void serve_one(int conn) {
  char request[2048];
  size_t got = 0;

  /* The request line and headers end with an empty line. */
  while (got < sizeof request - 1) {
    ssize_t n = goro_read(conn, request + got, sizeof request - 1 - got);
    if (n <= 0)
      break;
    got += (size_t)n;
    request[got] = '\0';
    if (strstr(request, "\r\n\r\n"))
      break;
  }

  int mem = memfd_create("goro-metrics", 0);
  if (mem < 0 || goro_write_prometheus(mem) != 0) {
    if (mem >= 0)
      close(mem);
    goro_close(conn);
    return;
  }
  off_t size = lseek(mem, 0, SEEK_END);
  char *body = malloc((size_t)size);
  if (body && pread(mem, body, (size_t)size, 0) == size) {
    char header[256];
    int len = snprintf(header, sizeof header,
                       "HTTP/1.1 200 OK\r\n"
                       "Content-Type: text/plain; version=0.0.4\r\n"
                       "Content-Length: %lld\r\n"
                       "Connection: close\r\n\r\n",
                       (long long)size);
    if (write_all(conn, header, (size_t)len) == 0)
      write_all(conn, body, (size_t)size);
  }
  free(body);
  close(mem);
  goro_close(conn);
}

typedef struct options {
  const char *textfile_dir;
  int port, requests;
} options;

static void serve(void *arg) {
  const options *opt = arg;
  int port = opt->port, requests = opt->requests;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  int one = 1;

  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(listener, 16) != 0) {
    fprintf(stderr, "observe: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
    goro_wg_done(&served);
    return;
  }
  fprintf(stderr, "observe: serving http://127.0.0.1:%d/metrics for %d requests\n", port,
          requests);
  for (int i = 0; i < requests; i++) {
    int conn = goro_accept(listener, NULL, NULL);
    if (conn < 0) {
      fprintf(stderr, "observe: accept: %s\n", strerror(errno));
      break;
    }
    serve_one(conn);
  }
  goro_close(listener);
  goro_wg_done(&served);
}

static int observe_main(void *arg) {
  const options *opt = arg;

  int status = 0;

  if (opt->port) {
    goro_wg_add(&served, 1);
    goro_spawn(serve, (void *)opt);
  }
  goro_wg_add(&finished, WORKERS);
  for (int i = 0; i < WORKERS; i++) {
    int64_t id = goro_spawn(worker, (void *)(intptr_t)i);
    if (id < 0) {
      fprintf(stderr, "observe: goro_spawn: %s\n", goro_strerror((int)id));
      __atomic_sub_fetch(&running_workers, 1, __ATOMIC_RELEASE);
      goro_wg_done(&finished);
      status = 1;
    }
  }
  for (int cycle = 1; __atomic_load_n(&running_workers, __ATOMIC_ACQUIRE) > 0; cycle++) {
    goro_sleep(5 * MS);
    goro_gc();
    if (cycle != 8)
      continue;
    if (goro_write_prometheus(STDOUT_FILENO) != 0)
      status = 1;
    if (opt->textfile_dir && write_textfile(opt->textfile_dir) != 0)
      status = 1;
  }
  goro_wg_wait(&finished);
  print_summary();
  goro_wg_wait(&served);
  return status;
}

int main(int argc, char **argv) {
  options opt = {NULL, 0, 1};

  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc)
      goto usage;
    if (strcmp(argv[i], "-textfile") == 0)
      opt.textfile_dir = argv[i + 1];
    else if (strcmp(argv[i], "-serve") == 0 && atoi(argv[i + 1]) > 0)
      opt.port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "-requests") == 0 && atoi(argv[i + 1]) > 0)
      opt.requests = atoi(argv[i + 1]);
    else
      goto usage;
  }

  goro_set_maxprocs(2);
  return goro_run(observe_main, &opt) == 0 ? 0 : 1;

usage:
  fprintf(stderr, "usage: %s [-textfile DIR] [-serve PORT [-requests N]]\n", argv[0]);
  return 2;
}
