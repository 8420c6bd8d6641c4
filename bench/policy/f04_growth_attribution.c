/*
 * f04_growth_attribution: which goroutines grew their stacks, and by how
 * much? In Go, 15 % of CPU in stack growth could not be traced to a code
 * path. goro offers three views: GORODEBUG=stacklog=1 (a stderr line per
 * observed span change), GOROTRACE=file.json (a "stack g<id>" counter per
 * change) and goro_stack_info_self().
 *
 *   f04_growth_attribution [-goroutines N]
 *
 * N shallow goroutines and N deep ones are spawned alternately. A deep one
 * calls g_mid() -> f_big(), whose frame contains a 16 KiB buffer it fills.
 * Half of the deep ones park inside f_big (goro sees the growth at the
 * park, from the saved stack pointer); the other half return from f_big
 * first and park shallow, so only the next shrink cycle observes their growth
 * (with mincore). Main runs one goro_gc while all are parked, then lets them
 * finish; each reads goro_stack_info_self before it exits.
 *
 * The program sets GORODEBUG and GOROTRACE itself, sends stderr to a
 * temporary file while the runtime runs, and parses the log and the trace.
 *
 * Targets: in every view, no shallow goroutine shows growth and every deep
 * one shows growth of at least 16 KiB (the stack log may drop lines: it
 * prints at most 1000 a second). Neither the log nor the trace names a code
 * site; the report says so.
 */
#include "policy_bench.h"

#include <fcntl.h>
#include <unistd.h>

#define BIG ((size_t)16 << 10)

enum { SHALLOW, DEEP_PARK, DEEP_RETURN };

typedef struct record {
  int64_t id;
  int kind;
  goro_stack_info info;
  size_t log_grown;   /* bytes of growth in the stack log */
  size_t trace_max;   /* largest "stack g<id>" counter value */
  bool in_log, in_trace;
} record;

static record *recs;
static long ngoroutines;
static goro_chan *gate;
static goro_waitgroup parked = GORO_WAITGROUP_INIT;
static goro_waitgroup exited = GORO_WAITGROUP_INIT;
static volatile unsigned sink;

static void wait_at_gate(void) {
  goro_wg_done(&parked);
  if (goro_chan_recv(gate, NULL) != GORO_ECLOSED)
    exit(1);
}

static __attribute__((noinline)) unsigned f_big(bool park_inside) {
  volatile unsigned char buf[BIG];

  for (size_t i = 0; i < BIG; i += 64)
    buf[i] = (unsigned char)i;
  if (park_inside)
    wait_at_gate();
  return buf[0] + buf[BIG - 64];
}

static __attribute__((noinline)) unsigned g_mid(bool park_inside) {
  volatile unsigned char small[64];

  small[0] = 1;
  return f_big(park_inside) + small[0];
}

static void body(void *arg) {
  record *r = arg;

  r->id = goro_id();
  if (r->kind != SHALLOW)
    sink += g_mid(r->kind == DEEP_PARK);
  if (r->kind != DEEP_PARK)
    wait_at_gate();
  PB_CHECK(goro_stack_info_self(&r->info));
  goro_wg_done(&exited);
}

static int run_main(void *arg) {
  (void)arg;

  PB_CHECK(goro_chan_make(&gate, 0, 0));
  PB_CHECK(goro_wg_add(&parked, 2 * ngoroutines));
  PB_CHECK(goro_wg_add(&exited, 2 * ngoroutines));
  for (long i = 0; i < 2 * ngoroutines; i++) {
    recs[i].kind = i % 2 == 0 ? SHALLOW : (i % 4 == 1 ? DEEP_PARK : DEEP_RETURN);
    PB_CHECK(goro_spawn(body, &recs[i]));
  }
  PB_CHECK(goro_wg_wait(&parked));
  PB_CHECK(goro_sleep(1000000)); /* the last ones park after their wg_done */
  PB_CHECK(goro_gc());
  PB_CHECK(goro_chan_close(gate));
  PB_CHECK(goro_wg_wait(&exited));
  PB_CHECK(goro_chan_free(gate));
  return 0;
}

static record *find(int64_t id) {
  /* Ids are handed out in spawn order, so a binary search works. */
  long lo = 0, hi = 2 * ngoroutines - 1;
  while (lo <= hi) {
    long mid = (lo + hi) / 2;
    if (recs[mid].id == id)
      return &recs[mid];
    if (recs[mid].id < id)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return NULL;
}

/* Reads "goro: goroutine N stack A -> B bytes (grow)" lines; returns the
 * number of dropped lines the log reported. */
static long parse_log(const char *path, long *lines) {
  FILE *f = fopen(path, "r");
  char line[256];
  long dropped = 0;

  *lines = 0;
  while (f && fgets(line, sizeof line, f)) {
    long long id;
    size_t from, to;
    long n;
    char why[16];
    if (sscanf(line, "goro: goroutine %lld stack %zu -> %zu bytes (%15[a-z])", &id, &from, &to,
               why) == 4) {
      (*lines)++;
      record *r = find(id);
      if (r && strcmp(why, "grow") == 0) {
        r->in_log = true;
        r->log_grown += to - from;
      }
    } else if (sscanf(line, "goro: %ld stack log lines dropped", &n) == 1) {
      dropped += n;
    }
  }
  if (f)
    fclose(f);
  return dropped;
}

/* Reads the "stack g<id>" counter events of the trace; returns whether
 * any goroutine begin event carries more than its id (a code site). */
static bool parse_trace(const char *path, long *events) {
  FILE *f = fopen(path, "r");
  char line[512];
  bool site = false;

  *events = 0;
  while (f && fgets(line, sizeof line, f)) {
    long long id;
    unsigned long long bytes;
    const char *name = strstr(line, "\"name\":\"stack g");
    const char *args = strstr(line, "\"bytes\":");
    if (name && args && sscanf(name, "\"name\":\"stack g%lld\"", &id) == 1 &&
        sscanf(args, "\"bytes\":%llu", &bytes) == 1) {
      (*events)++;
      record *r = find(id);
      if (r && bytes > r->trace_max) {
        r->trace_max = (size_t)bytes;
        r->in_trace = true;
      }
    }
    if (strstr(line, "\"ph\":\"b\"") && (strstr(line, "\"args\"") || strstr(line, "\"stack\"")))
      site = true;
  }
  if (f)
    fclose(f);
  return site;
}

int main(int argc, char **argv) {
  ngoroutines = (long)pb_flag(argc, argv, "goroutines", 1000);
  char log_path[64], trace_path[64];

  if (ngoroutines < 1) {
    fprintf(stderr, "invalid flag: -goroutines must be >= 1\n");
    return 2;
  }
  recs = calloc((size_t)(2 * ngoroutines), sizeof *recs);
  if (!recs)
    return 1;
  pb_header("F04 growth attribution: shallow goroutines and g_mid -> f_big (16 KiB buffer)");
  printf("# %ld shallow, %ld deep parking inside f_big, %ld deep parking after it returns;"
         " one goro_gc while all are parked\n",
         ngoroutines, (ngoroutines + 1) / 2, ngoroutines / 2);

  snprintf(log_path, sizeof log_path, "/tmp/goro-f04-%d.log", (int)getpid());
  snprintf(trace_path, sizeof trace_path, "/tmp/goro-f04-%d.json", (int)getpid());
  setenv("GORODEBUG", "stacklog=1", 1);
  setenv("GOROTRACE", trace_path, 1);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  int logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (saved < 0 || logfd < 0 || dup2(logfd, STDERR_FILENO) < 0)
    return 1;
  int rc = goro_run(run_main, NULL);
  fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(logfd);
  PB_CHECK(rc);

  long lines, events;
  long dropped = parse_log(log_path, &lines);
  bool site = parse_trace(trace_path, &events);
  unlink(log_path);
  unlink(trace_path);

  /* Per kind: goroutines that showed growth in each view, and the least
   * growth a deep one showed. */
  const char *kinds[3] = {"shallow", "deep, park in f_big", "deep, park after"};
  long shown[3][3] = {{0}};
  size_t least[3][3];
  long count[3] = {0};
  for (int k = 0; k < 3; k++)
    for (int v = 0; v < 3; v++)
      least[k][v] = SIZE_MAX;
  for (long i = 0; i < 2 * ngoroutines; i++) {
    record *r = &recs[i];
    size_t grown[3] = {r->info.growths ? r->info.peak - 4096 : 0, r->log_grown,
                       r->trace_max > 4096 ? r->trace_max - 4096 : 0};
    count[r->kind]++;
    for (int v = 0; v < 3; v++) {
      if (grown[v])
        shown[r->kind][v]++;
      if (grown[v] < least[r->kind][v])
        least[r->kind][v] = grown[v];
    }
  }
  printf("# stack log: %ld lines, %ld dropped; trace: %ld stack counter events\n", lines, dropped,
         events);
  printf("%-22s %7s | %-24s | %-24s | %-24s\n", "kind", "count", "goro_stack_info_self",
         "GORODEBUG=stacklog=1", "GOROTRACE counters");
  printf("%-22s %7s | %10s %13s | %10s %13s | %10s %13s\n", "", "", "grew", "least bytes", "grew",
         "least bytes", "grew", "least bytes");
  for (int k = 0; k < 3; k++)
    printf("%-22s %7ld | %10ld %13zu | %10ld %13zu | %10ld %13zu\n", kinds[k], count[k],
           shown[k][0], least[k][0], shown[k][1], least[k][1], shown[k][2], least[k][2]);
  printf("# code site of a growth: not reported by any view (goro has no stack maps);"
         " the trace's goroutine events carry %s\n",
         site ? "more than the id" : "only the goroutine id, not its spawn site");

  const char *views[3] = {"goro_stack_info_self", "stacklog", "trace"};
  for (int v = 0; v < 3; v++) {
    pb_target(shown[SHALLOW][v] == 0, "F04 %s: %ld of %ld shallow goroutines show growth (target 0)",
              views[v], shown[SHALLOW][v], count[SHALLOW]);
    long deep = shown[DEEP_PARK][v] + shown[DEEP_RETURN][v];
    size_t least_deep = least[DEEP_PARK][v] < least[DEEP_RETURN][v] ? least[DEEP_PARK][v]
                                                                    : least[DEEP_RETURN][v];
    pb_target(deep == count[DEEP_PARK] + count[DEEP_RETURN] && least_deep >= BIG,
              "F04 %s: %ld of %ld deep goroutines show growth, the least by %zu bytes"
              " (target all, >= %zu)",
              views[v], deep, count[DEEP_PARK] + count[DEEP_RETURN],
              least_deep == SIZE_MAX ? 0 : least_deep, BIG);
  }
  free(recs);
  return pb_exit_status();
}
