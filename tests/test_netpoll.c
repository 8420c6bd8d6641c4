/*
 * Goroutine-blocking I/O (goro_read, goro_write, goro_accept, goro_connect,
 * goro_fd_wait, goro_close): parking instead of blocking the worker, pipes
 * and loopback TCP, errors, the one-waiter-per-direction rule, regular
 * files, plain threads, errno, and the thread cost of idle connections.
 *
 * Every network address here is on loopback, and every server is started
 * by the test itself.
 */
#include "harness.h" /* first: it defines _GNU_SOURCE for pipe2 and F_SETPIPE_SZ */

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>

#define MS ((int64_t)1000000)

/* ---- Helpers ---------------------------------------------------------- */

/* Sleeps until *counter reaches want, or fails after 10 s. */
static void wait_for_count(int *counter, int want) {
  int64_t deadline = harness_now_ns() + 10000 * MS;

  while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < want && harness_now_ns() < deadline)
    CHECK_OK(goro_sleep(1 * MS));
  CHECK_EQ(__atomic_load_n(counter, __ATOMIC_ACQUIRE), want);
}

static char watchdog_message[128];

/* SIGALRM handler: only async-signal-safe calls. */
static void watchdog_fire(int sig) {
  (void)sig;
  ssize_t ignored = write(STDERR_FILENO, watchdog_message, strlen(watchdog_message));
  (void)ignored;
  _exit(1);
}

/* Fails the test after seconds. A goroutine that blocks its only worker
 * stops every goroutine, including any that could notice, but a signal
 * still arrives. Replaces the harness's longer time limit. */
static void start_watchdog(int seconds) {
  struct sigaction sa;

  snprintf(watchdog_message, sizeof watchdog_message,
           "FAIL: still running after %d s: a goroutine waiting for I/O may hold its worker\n",
           seconds);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = watchdog_fire;
  CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
  alarm((unsigned)seconds);
}

/* Returns the number of threads in this process and writes their names
 * (from /proc/self/task/TID/comm) to names, for failure messages. */
static int count_threads(char *names, size_t size) {
  DIR *dir = opendir("/proc/self/task");
  struct dirent *entry;
  size_t used = 0;
  int n = 0;

  if (!dir)
    FAIL("opendir /proc/self/task: %s", strerror(errno));
  names[0] = '\0';
  while ((entry = readdir(dir))) {
    char path[300], comm[32] = "?";
    if (entry->d_name[0] == '.')
      continue;
    n++;
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", entry->d_name);
    FILE *f = fopen(path, "r");
    if (f) {
      if (fgets(comm, sizeof comm, f))
        comm[strcspn(comm, "\n")] = '\0';
      fclose(f);
    }
    if (used < size)
      used += (size_t)snprintf(names + used, size - used, "%s%s:%s", n > 1 ? " " : "",
                               entry->d_name, comm);
  }
  closedir(dir);
  return n;
}

/* Byte i of the test streams: a hash, so that a lost, repeated or
 * reordered block shows up as a wrong byte. */
static uint8_t pattern_byte(uint64_t i) {
  return (uint8_t)((i * 2654435761u) >> 13);
}

static void make_pipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0)
    FAIL("pipe2: %s", strerror(errno));
}

static void make_socketpair(int fds[2]) {
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    FAIL("socketpair: %s", strerror(errno));
}

static int tcp_socket(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd < 0)
    FAIL("socket: %s", strerror(errno));
  return fd;
}

static struct sockaddr_in loopback_addr(uint16_t port) {
  struct sockaddr_in addr;

  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  return addr;
}

/* Binds a TCP socket to 127.0.0.1 on a port the kernel picks, listens on it
 * unless backlog is negative, and stores the port in *port. */
static int bind_loopback(int backlog, uint16_t *port) {
  int fd = tcp_socket();
  struct sockaddr_in addr = loopback_addr(0);
  socklen_t len = sizeof addr;

  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
    FAIL("bind 127.0.0.1:0: %s", strerror(errno));
  if (backlog >= 0 && listen(fd, backlog) != 0)
    FAIL("listen: %s", strerror(errno));
  if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
    FAIL("getsockname: %s", strerror(errno));
  *port = ntohs(addr.sin_port);
  return fd;
}

/* Connects a new socket to 127.0.0.1:port with goro_connect. */
static int connect_loopback(uint16_t port) {
  int fd = tcp_socket();
  struct sockaddr_in addr = loopback_addr(port);

  if (goro_connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
    FAIL("goro_connect to 127.0.0.1:%u: %s", port, strerror(errno));
  return fd;
}

static void write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;

  while (len > 0) {
    ssize_t n = goro_write(fd, p, len);
    if (n <= 0)
      FAIL("goro_write on fd %d returned %zd: %s", fd, n, strerror(errno));
    p += n;
    len -= (size_t)n;
  }
}

static void read_exact(int fd, void *buf, size_t len) {
  char *p = buf;

  while (len > 0) {
    ssize_t n = goro_read(fd, p, len);
    if (n == 0)
      FAIL("goro_read on fd %d: end of file with %zu bytes still expected", fd, len);
    if (n < 0)
      FAIL("goro_read on fd %d failed: %s", fd, strerror(errno));
    p += n;
    len -= (size_t)n;
  }
}

/* ---- A reader parks, and its worker runs other goroutines -------------- */

static int park_pipe[2];
static int park_reader_state; /* 1: about to read, 2: read returned */
static ssize_t park_reader_got;
static char park_reader_buf[64];
static int park_ticks;

static void park_reader(void *arg) {
  (void)arg;
  __atomic_store_n(&park_reader_state, 1, __ATOMIC_RELEASE);
  park_reader_got = goro_read(park_pipe[0], park_reader_buf, sizeof park_reader_buf);
  __atomic_store_n(&park_reader_state, 2, __ATOMIC_RELEASE);
}

static void park_ticker(void *arg) {
  (void)arg;
  for (int i = 0; i < 100; i++) {
    __atomic_fetch_add(&park_ticks, 1, __ATOMIC_RELEASE);
    CHECK_OK(goro_yield());
  }
}

static int read_parks_main(void *arg) {
  static const char message[] = "written by main after the ticker ran";
  (void)arg;

  make_pipe(park_pipe);
  CHECK_GT(goro_spawn(park_reader, NULL), 0);
  wait_for_count(&park_reader_state, 1);

  /* The only worker is free while the reader waits: a third goroutine
   * runs to the end, and main runs again. */
  CHECK_GT(goro_spawn(park_ticker, NULL), 0);
  wait_for_count(&park_ticks, 100);
  CHECK_EQ(__atomic_load_n(&park_reader_state, __ATOMIC_ACQUIRE), 1);

  write_all(park_pipe[1], message, sizeof message);
  wait_for_count(&park_reader_state, 2);
  CHECK_EQ(park_reader_got, sizeof message);
  CHECK(memcmp(park_reader_buf, message, sizeof message) == 0);

  CHECK_EQ(goro_close(park_pipe[0]), 0);
  CHECK_EQ(goro_close(park_pipe[1]), 0);
  return 0;
}

TEST(read_parks_goroutine_not_worker) {
  start_watchdog(20);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(read_parks_main, NULL);
}

/* ---- A writer parks on a full pipe ------------------------------------ */

static int full_pipe[2];
static size_t full_total;
static uint64_t full_written; /* bytes goro_write has accepted so far */
static int full_writer_done;

static void full_writer(void *arg) {
  uint8_t chunk[10007];
  uint64_t pos = 0;
  (void)arg;

  while (pos < full_total) {
    size_t len = full_total - pos < sizeof chunk ? full_total - pos : sizeof chunk;
    for (size_t i = 0; i < len; i++)
      chunk[i] = pattern_byte(pos + i);
    for (size_t done = 0; done < len;) {
      ssize_t n = goro_write(full_pipe[1], chunk + done, len - done);
      if (n <= 0)
        FAIL("goro_write at byte %" PRIu64 " returned %zd: %s", pos + done, n, strerror(errno));
      done += (size_t)n;
      __atomic_store_n(&full_written, pos + done, __ATOMIC_RELEASE);
    }
    pos += len;
  }
  __atomic_store_n(&full_writer_done, 1, __ATOMIC_RELEASE);
}

static int write_parks_main(void *arg) {
  uint8_t buf[3001];
  uint64_t pos = 0;
  (void)arg;

  make_pipe(full_pipe);
  int capacity = fcntl(full_pipe[1], F_SETPIPE_SZ, 4096);
  CHECK_GT(capacity, 0);
  full_total = harness_sanitizer() ? (size_t)256 << 10 : (size_t)1 << 20;

  /* Nobody reads yet: the writer fills the pipe and parks, so main runs
   * again on the only worker. */
  CHECK_GT(goro_spawn(full_writer, NULL), 0);
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&full_writer_done, __ATOMIC_ACQUIRE), 0);
  CHECK_GT(__atomic_load_n(&full_written, __ATOMIC_ACQUIRE), 0);
  CHECK_LE(__atomic_load_n(&full_written, __ATOMIC_ACQUIRE), (uint64_t)capacity);

  while (pos < full_total) {
    ssize_t n = goro_read(full_pipe[0], buf, sizeof buf);
    if (n <= 0)
      FAIL("goro_read at byte %" PRIu64 " of %zu returned %zd: %s", pos, full_total, n,
           strerror(errno));
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern_byte(pos + (uint64_t)i))
        FAIL("byte %" PRIu64 " is 0x%02x, expected 0x%02x", pos + (uint64_t)i, buf[i],
             pattern_byte(pos + (uint64_t)i));
    pos += (uint64_t)n;
  }
  wait_for_count(&full_writer_done, 1);
  CHECK_EQ(__atomic_load_n(&full_written, __ATOMIC_ACQUIRE), full_total);

  /* Everything written has been read: the pipe is empty. */
  CHECK_EQ(goro_close(full_pipe[1]), 0);
  CHECK_EQ(goro_read(full_pipe[0], buf, sizeof buf), 0);
  CHECK_EQ(goro_close(full_pipe[0]), 0);
  return 0;
}

TEST(write_parks_until_pipe_drained) {
  start_watchdog(30);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(write_parks_main, NULL);
}

/* ---- Loopback TCP echo server ----------------------------------------- */

#define ECHO_MAX_MESSAGE 3000

static struct {
  int listen_fd;
  uint16_t port;
  int clients, rounds;
  int accepted;
  int acceptor_done;
  int round_trips;
  goro_waitgroup handlers;
  goro_waitgroup clients_done;
} echo;

static void echo_handler(void *arg) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];

  for (;;) {
    ssize_t n = goro_read(fd, buf, sizeof buf);
    if (n == 0)
      break;
    if (n < 0)
      FAIL("server: goro_read on fd %d failed: %s", fd, strerror(errno));
    write_all(fd, buf, (size_t)n);
  }
  CHECK_EQ(goro_close(fd), 0);
  CHECK_OK(goro_wg_done(&echo.handlers));
}

static void echo_acceptor(void *arg) {
  (void)arg;
  for (;;) {
    int fd = goro_accept(echo.listen_fd, NULL, NULL);
    if (fd < 0 && errno == EBADF)
      break; /* goro_close on the listener */
    if (fd < 0)
      FAIL("goro_accept failed: %s", strerror(errno));
    __atomic_fetch_add(&echo.accepted, 1, __ATOMIC_RELAXED);
    CHECK_OK(goro_wg_add(&echo.handlers, 1));
    CHECK_GT(goro_spawn(echo_handler, (void *)(intptr_t)fd), 0);
  }
  __atomic_store_n(&echo.acceptor_done, 1, __ATOMIC_RELEASE);
}

/* Fills a message that names its client and round in every byte. */
static size_t make_message(char *msg, int client, int round) {
  size_t len = 1 + (size_t)(client * 131 + round * 977) % ECHO_MAX_MESSAGE;

  for (size_t i = 0; i < len; i++)
    msg[i] = (char)pattern_byte((uint64_t)client << 32 | (uint64_t)round << 16 | i);
  return len;
}

static void echo_client(void *arg) {
  int client = (int)(intptr_t)arg;
  char msg[ECHO_MAX_MESSAGE], reply[ECHO_MAX_MESSAGE];
  int fd = connect_loopback(echo.port);

  for (int round = 0; round < echo.rounds; round++) {
    size_t len = make_message(msg, client, round);
    write_all(fd, msg, len);
    read_exact(fd, reply, len);
    if (memcmp(msg, reply, len) != 0)
      FAIL("client %d round %d: the %zu-byte reply differs from the message", client, round,
           len);
    __atomic_fetch_add(&echo.round_trips, 1, __ATOMIC_RELAXED);
  }
  CHECK_EQ(goro_close(fd), 0);
  CHECK_OK(goro_wg_done(&echo.clients_done));
}

static int echo_main(void *arg) {
  (void)arg;
  echo.clients = 200;
  echo.rounds = 50;
  if (harness_sanitizer()) {
    echo.clients = 100;
    echo.rounds = 20;
  }
  echo.listen_fd = bind_loopback(1024, &echo.port);
  CHECK_GT(goro_spawn(echo_acceptor, NULL), 0);

  for (int i = 0; i < echo.clients; i++) {
    CHECK_OK(goro_wg_add(&echo.clients_done, 1));
    CHECK_GT(goro_spawn(echo_client, (void *)(intptr_t)i), 0);
  }
  CHECK_OK(goro_wg_wait(&echo.clients_done));
  CHECK_EQ(__atomic_load_n(&echo.round_trips, __ATOMIC_RELAXED), echo.clients * echo.rounds);

  /* Each handler reads end of file when its client closes, and the
   * acceptor returns when the listener is closed under it. */
  CHECK_OK(goro_wg_wait(&echo.handlers));
  CHECK_EQ(__atomic_load_n(&echo.accepted, __ATOMIC_RELAXED), echo.clients);
  CHECK_EQ(goro_close(echo.listen_fd), 0);
  wait_for_count(&echo.acceptor_done, 1);
  return 0;
}

TEST(tcp_echo_200_clients_one_worker) {
  start_watchdog(60);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(echo_main, NULL);
}

TEST(tcp_echo_200_clients_two_workers) {
  start_watchdog(60);
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(echo_main, NULL);
}

/* ---- Connection refused ----------------------------------------------- */

static int refused_main(void *arg) {
  uint16_t port;
  (void)arg;

  /* A bound socket that does not listen keeps the port from other users,
   * and the kernel resets every connection to it. */
  int bound = bind_loopback(-1, &port);
  struct sockaddr_in addr = loopback_addr(port);

  for (int i = 0; i < 100; i++) {
    int fd = tcp_socket();
    errno = 0;
    int rc = goro_connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (rc != -1 || errno != ECONNREFUSED)
      FAIL("attempt %d: goro_connect to 127.0.0.1:%u returned %d, errno %d (%s); expected "
           "-1 and ECONNREFUSED",
           i, port, rc, errno, strerror(errno));
    CHECK_EQ(goro_close(fd), 0);
  }
  CHECK_EQ(goro_close(bound), 0);
  return 0;
}

TEST(connect_without_listener_fails_econnrefused) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(refused_main, NULL);
}

/* ---- goro_close wakes a parked reader --------------------------------- */

static int closed_fd;
static int closed_reader_state;
static ssize_t closed_reader_rc;
static int closed_reader_errno;

static void closed_reader(void *arg) {
  char c;
  (void)arg;

  __atomic_store_n(&closed_reader_state, 1, __ATOMIC_RELEASE);
  closed_reader_rc = goro_read(closed_fd, &c, 1);
  closed_reader_errno = errno;
  __atomic_store_n(&closed_reader_state, 2, __ATOMIC_RELEASE);
}

/* Parks a reader on fds[0], closes fds[0] with goro_close and checks that
 * the reader's call fails with EBADF. */
static void check_close_wakes_reader(const char *kind, int fds[2]) {
  closed_fd = fds[0];
  closed_reader_state = 0;
  CHECK_GT(goro_spawn(closed_reader, NULL), 0);
  wait_for_count(&closed_reader_state, 1);
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&closed_reader_state, __ATOMIC_ACQUIRE), 1);

  CHECK_EQ(goro_close(fds[0]), 0);
  wait_for_count(&closed_reader_state, 2);
  if (closed_reader_rc != -1 || closed_reader_errno != EBADF)
    FAIL("%s: goro_read returned %zd with errno %d (%s) after goro_close; expected -1 and "
         "EBADF",
         kind, closed_reader_rc, closed_reader_errno, strerror(closed_reader_errno));
  CHECK_EQ(goro_close(fds[1]), 0);
}

static int close_wakes_main(void *arg) {
  int fds[2];
  (void)arg;

  make_pipe(fds);
  check_close_wakes_reader("pipe", fds);
  make_socketpair(fds);
  check_close_wakes_reader("socketpair", fds);
  return 0;
}

TEST(close_wakes_parked_reader_with_ebadf) {
  start_watchdog(20);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(close_wakes_main, NULL);
}

/* ---- One waiter per direction ----------------------------------------- */

static int busy_fds[2];
static int busy_reader_state;
static ssize_t busy_reader_got;
static char busy_reader_byte;

static void busy_reader(void *arg) {
  (void)arg;
  __atomic_store_n(&busy_reader_state, 1, __ATOMIC_RELEASE);
  busy_reader_got = goro_read(busy_fds[0], &busy_reader_byte, 1);
  __atomic_store_n(&busy_reader_state, 2, __ATOMIC_RELEASE);
}

static int busy_main(void *arg) {
  char c = 0;
  (void)arg;

  /* With one worker, the reader has parked by the time main runs again. */
  make_socketpair(busy_fds);
  CHECK_GT(goro_spawn(busy_reader, NULL), 0);
  wait_for_count(&busy_reader_state, 1);

  /* A second reader of the same descriptor fails at once instead of
   * parking. */
  errno = 0;
  CHECK_EQ(goro_read(busy_fds[0], &c, 1), -1);
  CHECK_EQ(errno, EBUSY);
  errno = 0;
  CHECK_EQ(goro_fd_wait(busy_fds[0], GORO_POLL_READ), -1);
  CHECK_EQ(errno, EBUSY);

  /* The other direction of the same descriptor is free. */
  CHECK_EQ(goro_write(busy_fds[0], "w", 1), 1);
  CHECK_EQ(goro_read(busy_fds[1], &c, 1), 1);
  CHECK_EQ(c, 'w');

  /* The first reader still waits and gets the next byte. */
  CHECK_EQ(__atomic_load_n(&busy_reader_state, __ATOMIC_ACQUIRE), 1);
  CHECK_EQ(goro_write(busy_fds[1], "r", 1), 1);
  wait_for_count(&busy_reader_state, 2);
  CHECK_EQ(busy_reader_got, 1);
  CHECK_EQ(busy_reader_byte, 'r');

  CHECK_EQ(goro_close(busy_fds[0]), 0);
  CHECK_EQ(goro_close(busy_fds[1]), 0);
  return 0;
}

TEST(second_waiter_per_direction_gets_ebusy) {
  start_watchdog(20);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(busy_main, NULL);
}

/* ---- Regular files ---------------------------------------------------- */

#define FILE_BYTES 100000

static int regular_file_main(void *arg) {
  char path[] = "/tmp/goro-test-netpoll-XXXXXX";
  static uint8_t data[FILE_BYTES], back[FILE_BYTES];
  (void)arg;

  int fd = mkstemp(path);
  if (fd < 0)
    FAIL("mkstemp %s: %s", path, strerror(errno));
  CHECK_EQ(unlink(path), 0);
  for (size_t i = 0; i < FILE_BYTES; i++)
    data[i] = pattern_byte(i);

  /* epoll rejects regular files, so these calls read and write directly.
   * A regular file is always ready, and none of them parks. */
  CHECK_EQ(goro_write(fd, data, FILE_BYTES), FILE_BYTES);
  CHECK_EQ(lseek(fd, 0, SEEK_SET), 0);
  size_t got = 0;
  while (got < FILE_BYTES) {
    ssize_t n = goro_read(fd, back + got, FILE_BYTES - got);
    if (n <= 0)
      FAIL("goro_read of the file at byte %zu returned %zd: %s", got, n, strerror(errno));
    got += (size_t)n;
  }
  CHECK(memcmp(data, back, FILE_BYTES) == 0);
  CHECK_EQ(goro_read(fd, back, 1), 0); /* end of file */

  /* goro_fd_wait cannot wait for a descriptor epoll does not accept. */
  errno = 0;
  CHECK_EQ(goro_fd_wait(fd, GORO_POLL_READ), -1);
  CHECK_EQ(errno, EPERM);

  CHECK_EQ(goro_close(fd), 0);
  return 0;
}

TEST(regular_file_read_goes_direct) {
  start_watchdog(20);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(regular_file_main, NULL);
}

/* ---- Calls from a plain thread ---------------------------------------- */

typedef struct delayed_write {
  int fd;
  int64_t delay_ns;
  const char *text;
} delayed_write;

static void *delayed_write_main(void *arg) {
  delayed_write *w = arg;
  struct timespec ts = {.tv_sec = w->delay_ns / 1000000000, .tv_nsec = w->delay_ns % 1000000000};

  nanosleep(&ts, NULL);
  if (write(w->fd, w->text, strlen(w->text)) != (ssize_t)strlen(w->text))
    FAIL("write from the helper thread failed: %s", strerror(errno));
  return NULL;
}

static void *delayed_connect_main(void *arg) {
  uint16_t port = *(uint16_t *)arg;
  struct timespec ts = {.tv_nsec = 20 * MS};
  int fd = tcp_socket();
  struct sockaddr_in addr = loopback_addr(port);

  nanosleep(&ts, NULL);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
    FAIL("connect from the helper thread: %s", strerror(errno));
  if (write(fd, "hello", 5) != 5)
    FAIL("write from the helper thread: %s", strerror(errno));
  close(fd);
  return NULL;
}

TEST(io_calls_without_runtime_wait_in_poll) {
  int fds[2];
  char buf[16] = {0};
  pthread_t thread;
  start_watchdog(20);

  /* O_NONBLOCK is set by hand, so a plain read would fail with EAGAIN.
   * goro_read waits for the data instead. */
  make_pipe(fds);
  CHECK_EQ(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
  delayed_write w = {.fd = fds[1], .delay_ns = 20 * MS, .text = "late"};
  CHECK_EQ(pthread_create(&thread, NULL, delayed_write_main, &w), 0);
  CHECK_EQ(goro_fd_wait(fds[0], GORO_POLL_READ), 0);
  CHECK_EQ(goro_read(fds[0], buf, sizeof buf), 4);
  CHECK(memcmp(buf, "late", 4) == 0);
  CHECK_EQ(pthread_join(thread, NULL), 0);

  CHECK_EQ(pthread_create(&thread, NULL, delayed_write_main, &w), 0);
  CHECK_EQ(goro_read(fds[0], buf, sizeof buf), 4);
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_EQ(goro_write(fds[1], "now", 3), 3);
  CHECK_EQ(goro_read(fds[0], buf, sizeof buf), 3);
  CHECK_EQ(goro_close(fds[0]), 0);
  CHECK_EQ(goro_close(fds[1]), 0);

  /* A non-blocking listener: goro_accept waits for the connection. */
  uint16_t port;
  int listener = bind_loopback(16, &port);
  CHECK_EQ(fcntl(listener, F_SETFL, O_NONBLOCK), 0);
  CHECK_EQ(pthread_create(&thread, NULL, delayed_connect_main, &port), 0);
  int conn = goro_accept(listener, NULL, NULL);
  if (conn < 0)
    FAIL("goro_accept outside the runtime: %s", strerror(errno));
  CHECK_EQ(fcntl(conn, F_SETFL, O_NONBLOCK), 0);
  CHECK_EQ(goro_read(conn, buf, 5), 5);
  CHECK(memcmp(buf, "hello", 5) == 0);
  CHECK_EQ(pthread_join(thread, NULL), 0);
  CHECK_EQ(goro_read(conn, buf, sizeof buf), 0);
  CHECK_EQ(goro_close(conn), 0);

  /* goro_connect from outside the runtime, to a listener on loopback. */
  int client = tcp_socket();
  struct sockaddr_in addr = loopback_addr(port);
  CHECK_EQ(goro_connect(client, (struct sockaddr *)&addr, sizeof addr), 0);
  conn = goro_accept(listener, NULL, NULL);
  CHECK_GE(conn, 0);
  CHECK_EQ(goro_close(client), 0);
  CHECK_EQ(goro_close(conn), 0);
  CHECK_EQ(goro_close(listener), 0);
}

static int foreign_fds[2];
static int foreign_state; /* 1: thread about to read, 2: read returned */
static ssize_t foreign_got;
static char foreign_buf[16];

static void *foreign_reader_main(void *arg) {
  (void)arg;
  __atomic_store_n(&foreign_state, 1, __ATOMIC_RELEASE);
  foreign_got = goro_read(foreign_fds[0], foreign_buf, sizeof foreign_buf);
  __atomic_store_n(&foreign_state, 2, __ATOMIC_RELEASE);
  return NULL;
}

static int foreign_thread_main(void *arg) {
  char c;
  pthread_t thread;
  (void)arg;

  /* A goroutine's call registers the descriptor, which makes it
   * non-blocking for everyone sharing it. */
  make_pipe(foreign_fds);
  CHECK_EQ(goro_write(foreign_fds[1], "x", 1), 1);
  CHECK_EQ(goro_read(foreign_fds[0], &c, 1), 1);
  CHECK(fcntl(foreign_fds[0], F_GETFL) & O_NONBLOCK);

  /* A plain thread then waits in poll(2) on the empty pipe, while the
   * runtime runs, instead of failing with EAGAIN. */
  CHECK_EQ(pthread_create(&thread, NULL, foreign_reader_main, NULL), 0);
  wait_for_count(&foreign_state, 1);
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&foreign_state, __ATOMIC_ACQUIRE), 1);
  CHECK_EQ(goro_write(foreign_fds[1], "from main", 9), 9);
  wait_for_count(&foreign_state, 2);
  CHECK_EQ(foreign_got, 9);
  CHECK(memcmp(foreign_buf, "from main", 9) == 0);
  CHECK_EQ(pthread_join(thread, NULL), 0);

  CHECK_EQ(goro_close(foreign_fds[0]), 0);
  CHECK_EQ(goro_close(foreign_fds[1]), 0);
  return 0;
}

TEST(plain_thread_io_waits_in_poll) {
  start_watchdog(20);
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(foreign_thread_main, NULL);
}

/* ---- End of file ------------------------------------------------------ */

static int eof_fd;
static int eof_reader_state;
static ssize_t eof_reader_rc;

static void eof_reader(void *arg) {
  char buf[8];
  (void)arg;

  __atomic_store_n(&eof_reader_state, 1, __ATOMIC_RELEASE);
  eof_reader_rc = goro_read(eof_fd, buf, sizeof buf);
  __atomic_store_n(&eof_reader_state, 2, __ATOMIC_RELEASE);
}

/* Parks a reader on fds[0], closes the peer end fds[1] and checks that the
 * reader's call returns 0. */
static void check_peer_close_gives_eof(const char *kind, int fds[2]) {
  eof_fd = fds[0];
  eof_reader_state = 0;
  eof_reader_rc = -2;
  CHECK_GT(goro_spawn(eof_reader, NULL), 0);
  wait_for_count(&eof_reader_state, 1);
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&eof_reader_state, __ATOMIC_ACQUIRE), 1);

  CHECK_EQ(goro_close(fds[1]), 0);
  wait_for_count(&eof_reader_state, 2);
  if (eof_reader_rc != 0)
    FAIL("%s: goro_read returned %zd after the peer closed, expected 0", kind, eof_reader_rc);
  CHECK_EQ(goro_close(fds[0]), 0);
}

static int eof_main(void *arg) {
  int fds[2];
  uint16_t port;
  (void)arg;

  make_pipe(fds);
  check_peer_close_gives_eof("pipe", fds);
  make_socketpair(fds);
  check_peer_close_gives_eof("socketpair", fds);

  int listener = bind_loopback(16, &port);
  fds[1] = connect_loopback(port);
  fds[0] = goro_accept(listener, NULL, NULL);
  CHECK_GE(fds[0], 0);
  check_peer_close_gives_eof("tcp", fds);
  CHECK_EQ(goro_close(listener), 0);
  return 0;
}

TEST(peer_close_gives_reader_eof) {
  start_watchdog(20);
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(eof_main, NULL);
}

/* ---- errno across parks ----------------------------------------------- */

#define ERRNO_ROUNDS 200

static int errno_stop;
static int errno_fds[2];

/* Keeps both workers' errno busy with a value nobody else uses. */
static void errno_scribbler(void *arg) {
  (void)arg;
  while (!__atomic_load_n(&errno_stop, __ATOMIC_ACQUIRE)) {
    errno = ENOSPC;
    CHECK_OK(goro_yield());
  }
}

static void errno_waker(void *arg) {
  int close_it = (int)(intptr_t)arg;

  errno = ENOSPC;
  CHECK_OK(goro_sleep(MS / 4));
  if (close_it)
    CHECK_EQ(goro_close(errno_fds[0]), 0);
  else
    CHECK_EQ(goro_write(errno_fds[1], "e", 1), 1);
  errno = ENOSPC;
}

static int errno_main(void *arg) {
  char c;
  int moved = 0;
  (void)arg;

  CHECK_GT(goro_spawn(errno_scribbler, NULL), 0);
  CHECK_GT(goro_spawn(errno_scribbler, NULL), 0);
  for (int round = 0; round < ERRNO_ROUNDS; round++) {
    make_pipe(errno_fds);
    int worker = goro_worker_index();

    /* goro_fd_wait parks and touches errno on no path to its return, so
     * errno must read what this goroutine set before the call. */
    CHECK_GT(goro_spawn(errno_waker, (void *)0), 0);
    errno = EDOM;
    CHECK_EQ(goro_fd_wait(errno_fds[0], GORO_POLL_READ), 0);
    if (errno != EDOM)
      FAIL("round %d: errno is %d after goro_fd_wait, expected EDOM (%d)", round, errno, EDOM);
    CHECK_EQ(goro_read(errno_fds[0], &c, 1), 1);

    /* A call that fails after a park reports its own errno, not the
     * waker's. */
    CHECK_GT(goro_spawn(errno_waker, (void *)1), 0);
    errno = EDOM;
    CHECK_EQ(goro_read(errno_fds[0], &c, 1), -1);
    if (errno != EBADF)
      FAIL("round %d: errno is %d after goro_read of a closed pipe, expected EBADF (%d)", round,
           errno, EBADF);
    if (goro_worker_index() != worker)
      moved++;
    CHECK_EQ(goro_close(errno_fds[1]), 0);
  }
  __atomic_store_n(&errno_stop, 1, __ATOMIC_RELEASE);
  printf("errno: main resumed on another worker in %d of %d rounds\n", moved, ERRNO_ROUNDS);
  return 0;
}

TEST(errno_kept_across_io_parks) {
  start_watchdog(30);
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(errno_main, NULL);
}

/* ---- Idle connections cost no threads --------------------------------- */

#define IDLE_CONNS 1000

static struct {
  int listen_fd;
  int parked;  /* handlers about to call goro_read */
  int served;  /* handlers whose goro_read returned the byte */
  int acceptor_done;
} idle;

static void idle_handler(void *arg) {
  int fd = (int)(intptr_t)arg;
  char c;

  __atomic_fetch_add(&idle.parked, 1, __ATOMIC_RELEASE);
  CHECK_EQ(goro_read(fd, &c, 1), 1);
  CHECK_EQ(c, 'k');
  CHECK_EQ(goro_close(fd), 0);
  __atomic_fetch_add(&idle.served, 1, __ATOMIC_RELEASE);
}

static void idle_acceptor(void *arg) {
  (void)arg;
  for (;;) {
    int fd = goro_accept(idle.listen_fd, NULL, NULL);
    if (fd < 0 && errno == EBADF)
      break;
    if (fd < 0)
      FAIL("goro_accept failed: %s", strerror(errno));
    CHECK_GT(goro_spawn(idle_handler, (void *)(intptr_t)fd), 0);
  }
  __atomic_store_n(&idle.acceptor_done, 1, __ATOMIC_RELEASE);
}

static int idle_main(void *arg) {
  static int clients[IDLE_CONNS];
  uint16_t port;
  (void)arg;

  char names_before[1024], names_after[1024];
  /* Another worker can start main while goro_run is still creating its
   * last threads: let it finish first. */
  CHECK_OK(goro_sleep(20 * MS));
  int threads_before = count_threads(names_before, sizeof names_before);
  idle.listen_fd = bind_loopback(IDLE_CONNS, &port);
  CHECK_GT(goro_spawn(idle_acceptor, NULL), 0);
  for (int i = 0; i < IDLE_CONNS; i++)
    clients[i] = connect_loopback(port);
  wait_for_count(&idle.parked, IDLE_CONNS);
  CHECK_OK(goro_sleep(50 * MS));

  /* 1,000 goroutines wait in goro_read, the acceptor in goro_accept. */
  goro_memstats st;
  memset(&st, 0, sizeof st);
  st.size = sizeof st;
  CHECK_OK(goro_read_memstats(&st));
  CHECK_EQ(st.goroutines, IDLE_CONNS + 2);
  CHECK_EQ(__atomic_load_n(&idle.served, __ATOMIC_ACQUIRE), 0);
  int threads_after = count_threads(names_after, sizeof names_after);
  if (threads_after != threads_before)
    FAIL("%d threads with %d idle connections (%s), %d before them (%s)", threads_after,
         IDLE_CONNS, names_after, threads_before, names_before);
  printf("%d threads before and with %d idle connections; %" PRIu64 " bytes of stack in use\n",
         threads_after, IDLE_CONNS, st.stack_inuse);

  /* Every one of them is still there to serve its connection. */
  for (int i = 0; i < IDLE_CONNS; i++)
    write_all(clients[i], "k", 1);
  wait_for_count(&idle.served, IDLE_CONNS);
  for (int i = 0; i < IDLE_CONNS; i++)
    CHECK_EQ(goro_close(clients[i]), 0);
  CHECK_EQ(goro_close(idle.listen_fd), 0);
  wait_for_count(&idle.acceptor_done, 1);
  return 0;
}

TEST(idle_connections_cost_no_threads) {
  struct rlimit limit;

  /* Two descriptors per connection, plus a few. */
  CHECK_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_cur < 2 * IDLE_CONNS + 64) {
    limit.rlim_cur = limit.rlim_max < 4096 ? limit.rlim_max : 4096;
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
  }
  if (limit.rlim_cur < 2 * IDLE_CONNS + 64)
    FAIL("RLIMIT_NOFILE allows %llu descriptors, the test needs %d: raise the hard limit "
         "(ulimit -Hn)",
         (unsigned long long)limit.rlim_cur, 2 * IDLE_CONNS + 64);
  start_watchdog(30);
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(idle_main, NULL);
}

/* ---- Bad arguments ---------------------------------------------------- */

static int bad_args_main(void *arg) {
  char c;
  int fds[2];
  (void)arg;

  make_pipe(fds);
  errno = 0;
  CHECK_EQ(goro_fd_wait(fds[0], 0), -1);
  CHECK_EQ(errno, EINVAL);
  errno = 0;
  CHECK_EQ(goro_fd_wait(fds[0], 4), -1);
  CHECK_EQ(errno, EINVAL);
  errno = 0;
  CHECK_EQ(goro_fd_wait(-1, GORO_POLL_READ), -1);
  CHECK_EQ(errno, EINVAL);
  errno = 0;
  CHECK_EQ(goro_read(-1, &c, 1), -1);
  CHECK_EQ(errno, EBADF);
  errno = 0;
  CHECK_EQ(goro_write(-1, &c, 1), -1);
  CHECK_EQ(errno, EBADF);

  /* A descriptor number that is not open. */
  int closed = fds[0];
  CHECK_EQ(goro_close(fds[0]), 0);
  errno = 0;
  CHECK_EQ(goro_read(closed, &c, 1), -1);
  CHECK_EQ(errno, EBADF);
  errno = 0;
  CHECK_EQ(goro_close(closed), -1);
  CHECK_EQ(errno, EBADF);
  CHECK_EQ(goro_close(fds[1]), 0);
  return 0;
}

TEST(io_calls_reject_bad_arguments) {
  start_watchdog(20);
  RUN_MAIN(bad_args_main, NULL);
}
