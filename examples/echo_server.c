/*
 * echo_server.c: a TCP echo server with one goroutine per connection, and a
 * client mode that opens many connections to it.
 *
 *   echo_server [PORT]
 *       Serves on 127.0.0.1:PORT (default 0: a free port the kernel picks)
 *       and prints the port. Once per second it prints how many goroutines
 *       are alive, the stack memory they use and the stack memory kept in
 *       goro's caches (goro_read_memstats), the thread count and the
 *       resident memory of the process. Stop it with Ctrl-C.
 *
 *   echo_server --client PORT N [SECONDS]
 *       Opens N connections to 127.0.0.1:PORT, one goroutine each. Every
 *       goroutine sends a line, checks that the same line comes back, and
 *       keeps its connection open for SECONDS (default 10) before closing.
 *
 * Each connection costs the server one goroutine parked in goro_read: no
 * thread, and a stack of one page as long as the handler's frames fit in
 * it. Run the server in one terminal and the client with N = 10000 in
 * another to watch the numbers.
 *
 * Build from the source tree: make build/examples/echo_server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "goro.h"

#define SECOND ((int64_t)1000000000)

/* The handler's buffer lives on its goroutine's stack. At 1 KiB, the
 * handler and the goro_read call chain below it fit in the stack's first
 * page, so an idle connection costs 4 KiB of stack. A 64 KiB buffer would
 * commit 17 pages per connection instead, so large buffers belong on the
 * heap. */
#define HANDLER_BUFFER 1024

/* Errors printed by the server, and by the client, before further ones are
 * only counted. */
#define MAX_ERRORS_SHOWN 5

static int connections;       /* server: connections now open */
static int connection_errors; /* server: read and write failures */

/* ---- Shared helpers --------------------------------------------------- */

/* Raises the soft limit on open descriptors to the hard limit and returns
 * the new soft limit: each connection needs one descriptor. */
static rlim_t raise_fd_limit(void) {
  struct rlimit limit;

  if (getrlimit(RLIMIT_NOFILE, &limit) != 0)
    return 0;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

/* Returns the value of a "Name: value" line of /proc/self/status (VmRSS in
 * kB, Threads as a count), or 0 if it is missing. */
static uint64_t proc_status(const char *name) {
  char line[256];
  size_t len = strlen(name);
  uint64_t value = 0;
  FILE *f = fopen("/proc/self/status", "r");

  if (!f)
    return 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, name, len) == 0 && line[len] == ':') {
      value = strtoull(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return value;
}

static double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

/* Prints one line of goroutine and memory figures, prefixed with label. */
static void print_stats(const char *label) {
  goro_memstats st;

  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  if (goro_read_memstats(&st) != 0)
    return;
  printf("%s: goroutines %" PRIu64 ", stack_inuse %.1f MiB (%" PRIu64
         " bytes per goroutine), stack_cache %.1f MiB, threads %" PRIu64 ", rss %.1f MiB\n",
         label, st.goroutines, mib(st.stack_inuse),
         st.goroutines ? st.stack_inuse / st.goroutines : 0, mib(st.stack_cache),
         proc_status("Threads"), mib(proc_status("VmRSS") * 1024));
  fflush(stdout);
}

/* Writes all len bytes, parking while the socket buffer is full. Returns 0,
 * or -1 with errno set. */
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

/* ---- Server ----------------------------------------------------------- */

/* Prints a failed read or write on a connection, up to MAX_ERRORS_SHOWN
 * times. A reset (the client went away) is not an error of the server. */
static void log_connection_error(int fd, const char *call, int err) {
  if (err == ECONNRESET || err == EPIPE)
    return;
  if (__atomic_add_fetch(&connection_errors, 1, __ATOMIC_RELAXED) <= MAX_ERRORS_SHOWN)
    fprintf(stderr, "echo_server: %s on connection fd %d failed: %s\n", call, fd, strerror(err));
}

/* One goroutine per connection: read what arrives and send it back. When
 * no data is there, goro_read parks this goroutine and its worker thread
 * runs other goroutines. */
static void serve_connection(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[HANDLER_BUFFER];

  __atomic_fetch_add(&connections, 1, __ATOMIC_RELAXED);
  for (;;) {
    ssize_t n = goro_read(fd, buf, sizeof buf);
    if (n == 0)
      break; /* the client closed the connection */
    if (n < 0) {
      log_connection_error(fd, "read", errno);
      break;
    }
    if (write_all(fd, buf, (size_t)n) != 0) {
      log_connection_error(fd, "write", errno);
      break;
    }
  }
  /* goro_close, not close: it also removes the descriptor from goro's
   * epoll set, so that a later descriptor with the same number starts
   * clean. */
  goro_close(fd);
  __atomic_fetch_sub(&connections, 1, __ATOMIC_RELAXED);
}

static void report_every_second(void *arg) {
  char label[64];
  (void)arg;

  for (;;) {
    goro_sleep(SECOND);
    snprintf(label, sizeof label, "connections %d",
             __atomic_load_n(&connections, __ATOMIC_RELAXED));
    print_stats(label);
  }
}

static int run_server(void *arg) {
  int port = *(int *)arg;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  int one = 1;

  addr.sin_port = htons((uint16_t)port);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) {
    perror("echo_server: socket");
    return 1;
  }
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(listener, SOMAXCONN) != 0 ||
      getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
    fprintf(stderr, "echo_server: listening on 127.0.0.1:%d failed: %s\n", port, strerror(errno));
    return 1;
  }
  printf("listening on 127.0.0.1:%u (descriptor limit %llu)\n", ntohs(addr.sin_port),
         (unsigned long long)raise_fd_limit());
  fflush(stdout);
  goro_spawn(report_every_second, NULL);

  /* The main goroutine accepts. goro_accept parks it until a client
   * connects, like goro_read does for the handlers. */
  for (;;) {
    int fd = goro_accept(listener, NULL, NULL);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
      /* Out of descriptors: the connection stays queued in the kernel. */
      fprintf(stderr, "echo_server: accept failed: %s, retrying in 100 ms\n", strerror(errno));
      goro_sleep(SECOND / 10);
      continue;
    }
    if (fd < 0) {
      fprintf(stderr, "echo_server: accept failed: %s\n", strerror(errno));
      return 1;
    }
    int64_t id = goro_spawn(serve_connection, (void *)(intptr_t)fd);
    if (id < 0) {
      fprintf(stderr, "echo_server: goro_spawn for connection fd %d failed: %s\n", fd,
              goro_strerror((int)id));
      goro_close(fd);
    }
  }
}

/* ---- Client ----------------------------------------------------------- */

static struct {
  int port, count;
  int64_t hold_ns;
  int failed;
  goro_waitgroup echoed;  /* one per client, done after its echo or failure */
  goro_waitgroup release; /* count 1 while the connections are held */
  goro_waitgroup closed;  /* one per client, done when it has finished */
} client;

/* Counts a failed client and prints the first MAX_ERRORS_SHOWN failures. */
static void client_error(int id, const char *what, const char *detail) {
  int n = __atomic_add_fetch(&client.failed, 1, __ATOMIC_RELAXED);

  if (n <= MAX_ERRORS_SHOWN)
    fprintf(stderr, "echo_server: client %d: %s failed: %s\n", id, what, detail);
}

/* Connects, checks one echo, then waits for the release before closing. */
static void run_client(void *arg) {
  int id = (int)(intptr_t)arg;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  char msg[64], reply[64];
  size_t got = 0;
  bool echoed = false;

  addr.sin_port = htons((uint16_t)client.port);
  int len = snprintf(msg, sizeof msg, "hello from client %d\n", id);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    client_error(id, "socket", strerror(errno));
  } else if (goro_connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    client_error(id, "connect", strerror(errno));
  } else if (write_all(fd, msg, (size_t)len) != 0) {
    client_error(id, "write", strerror(errno));
  } else {
    while (got < (size_t)len) {
      ssize_t n = goro_read(fd, reply + got, (size_t)len - got);
      if (n <= 0) {
        client_error(id, "read", n == 0 ? "the server closed the connection" : strerror(errno));
        break;
      }
      got += (size_t)n;
    }
    if (got == (size_t)len && memcmp(msg, reply, (size_t)len) != 0)
      client_error(id, "echo", "the reply differs from the message");
    echoed = got == (size_t)len;
  }
  goro_wg_done(&client.echoed);

  if (echoed)
    goro_wg_wait(&client.release);
  if (fd >= 0)
    goro_close(fd);
  goro_wg_done(&client.closed);
}

static int run_clients(void *arg) {
  (void)arg;
  int64_t start = (int64_t)time(NULL);

  goro_wg_add(&client.release, 1);
  for (int i = 0; i < client.count; i++) {
    goro_wg_add(&client.echoed, 1);
    goro_wg_add(&client.closed, 1);
    int64_t id = goro_spawn(run_client, (void *)(intptr_t)i);
    if (id < 0) {
      fprintf(stderr, "echo_server: goro_spawn for client %d failed: %s\n", i,
              goro_strerror((int)id));
      return 1;
    }
  }
  goro_wg_wait(&client.echoed);

  int ok = client.count - __atomic_load_n(&client.failed, __ATOMIC_RELAXED);
  printf("%d of %d connections echoed their line in about %" PRId64
         " s; holding them open for %" PRId64 " s\n",
         ok, client.count, (int64_t)time(NULL) - start, client.hold_ns / SECOND);
  print_stats("client");
  goro_sleep(client.hold_ns);

  goro_wg_done(&client.release);
  goro_wg_wait(&client.closed);
  printf("closed %d connections\n", ok);
  return client.failed ? 1 : 0;
}

/* ---- Command line ----------------------------------------------------- */

static void usage(void) {
  fprintf(stderr, "usage: echo_server [PORT]\n"
                  "       echo_server --client PORT N [SECONDS]\n"
                  "PORT: TCP port on 127.0.0.1 (server default 0: any free port)\n"
                  "N: connections to open; SECONDS: how long to hold them (default 10)\n");
  exit(2);
}

/* Parses a decimal integer in [lo, hi] or exits with the usage message. */
static long parse_number(const char *text, long lo, long hi) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);

  if (errno || *text == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "echo_server: invalid number \"%s\" (expected %ld to %ld)\n", text, lo, hi);
    usage();
  }
  return v;
}

int main(int argc, char **argv) {
  int rc;

  if (argc >= 2 && strcmp(argv[1], "--client") == 0) {
    if (argc < 4 || argc > 5)
      usage();
    client.port = (int)parse_number(argv[2], 1, 65535);
    client.count = (int)parse_number(argv[3], 1, 1000000);
    client.hold_ns = (argc == 5 ? parse_number(argv[4], 0, 86400) : 10) * SECOND;
    rlim_t limit = raise_fd_limit();
    if ((rlim_t)client.count + 16 > limit) {
      fprintf(stderr, "echo_server: %d connections need %d descriptors, the limit is %llu: "
                      "raise it with ulimit -n\n",
              client.count, client.count + 16, (unsigned long long)limit);
      return 1;
    }
    rc = goro_run(run_clients, NULL);
  } else {
    if (argc > 2 || (argc == 2 && argv[1][0] == '-'))
      usage();
    int port = argc == 2 ? (int)parse_number(argv[1], 0, 65535) : 0;
    rc = goro_run(run_server, &port);
  }
  if (rc < 0) {
    fprintf(stderr, "echo_server: goro_run failed: %s\n", goro_strerror(rc));
    return 1;
  }
  return rc;
}
