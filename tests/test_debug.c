/*
 * GORODEBUG. Each test sets a knob in a child's environment, as a user sets
 * it, and matches its effect in the child's stderr. The tests cover the
 * stacklog lines, the schedtrace summaries, gcshrinkstackoff against the
 * default, adaptivestackstart, and the warning for unknown settings.
 *
 * Children report what the parent checks on stderr as "key=value" lines,
 * which sit between goro's own lines in the order they were written.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "observe.h"

#define MS ((int64_t)1000000)
#define KIB ((size_t)1024)

/* Returns the line after the one at line, or NULL at the end of text. */
static const char *next_line(const char *line) {
  const char *end = strchr(line, '\n');

  return end && end[1] ? end + 1 : NULL;
}

/* Returns the number after "key=" on the first line that has it, or fails. */
static long long report_value(const char *err, const char *key) {
  char pattern[64];
  long long value;

  snprintf(pattern, sizeof pattern, "%s=", key);
  for (const char *at = strstr(err, pattern); at; at = strstr(at + 1, pattern)) {
    if (at != err && at[-1] != '\n' && at[-1] != ' ')
      continue;
    if (sscanf(at + strlen(pattern), "%lld", &value) == 1)
      return value;
  }
  FAIL("the child reported no %s; its stderr was:\n%s", key, err);
}

/* ---- A goroutine that grows, then idles shallow ------------------------ */

/*
 * The children below share one scenario: with GOROMAXPROCS=1 a goroutine
 * recurses 64 KiB deep and parks there, returns and parks shallow, and the
 * main goroutine then runs goro_gc a few times. Main resumes only once the
 * goroutine has switched out, so every park is complete when main looks.
 */
typedef struct grower {
  goro_chan *to_goroutine, *to_main;
} grower;

static void grower_bottom(void *arg) {
  grower *g = arg;

  CHECK_OK(goro_chan_send(g->to_main, NULL));
  CHECK_OK(goro_chan_recv(g->to_goroutine, NULL));
}

static void grower_goroutine(void *arg) {
  grower *g = arg;

  fprintf(stderr, "grower=%lld\n", (long long)goro_id());
  observe_at_depth(64 * KIB, grower_bottom, g);
  CHECK_OK(goro_chan_send(g->to_main, NULL));
  CHECK_OK(goro_chan_recv(g->to_goroutine, NULL));
}

static int grower_main(void *arg) {
  grower g;
  goro_memstats before, after;
  int64_t released = 0;
  (void)arg;

  CHECK_OK(goro_chan_make(&g.to_goroutine, 0, 0));
  CHECK_OK(goro_chan_make(&g.to_main, 0, 0));
  CHECK_OK(goro_spawn(grower_goroutine, &g));
  CHECK_OK(goro_chan_recv(g.to_main, NULL));
  CHECK_OK(goro_chan_send(g.to_goroutine, NULL));
  CHECK_OK(goro_chan_recv(g.to_main, NULL));

  observe_read(&before);
  fprintf(stderr, "cycles=start\n");
  for (int i = 0; i < 6; i++) {
    int64_t bytes = goro_gc();
    CHECK_OK(bytes);
    released += bytes;
  }
  observe_read(&after);
  fprintf(stderr, "released=%lld\nshrinks=%llu\ninuse_before=%llu\ninuse_after=%llu\n",
          (long long)released, (unsigned long long)(after.stack_shrinks - before.stack_shrinks),
          (unsigned long long)before.stack_inuse, (unsigned long long)after.stack_inuse);

  goro_stack_policy policy;
  CHECK_OK(goro_get_stack_policy(&policy));
  fprintf(stderr, "policy_shrink=%d\npolicy_hysteresis=%u\n", policy.shrink, policy.hysteresis);

  CHECK_OK(goro_chan_send(g.to_goroutine, NULL));
  CHECK_OK(goro_chan_free(g.to_goroutine));
  CHECK_OK(goro_chan_free(g.to_main));
  return 0;
}

CHILD(child_grower) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(grower_main, NULL);
}

/* ---- stacklog ---------------------------------------------------------- */

typedef struct stack_line {
  long long id;
  unsigned long long from, to;
  char why[16];
} stack_line;

/* Parses "goro: goroutine ID stack FROM -> TO bytes (WHY)"; returns 1 if
 * line is one. */
static int parse_stack_line(const char *line, stack_line *out) {
  int end = 0;

  if (sscanf(line, "goro: goroutine %lld stack %llu -> %llu bytes (%15[a-z])%n", &out->id,
             &out->from, &out->to, out->why, &end) != 4)
    return 0;
  return line[end] == '\n' || line[end] == '\0';
}

TEST(stacklog_prints_grow_and_shrink_lines) {
  static child_result res;

  run_child_env("child_grower", "GORODEBUG", "stacklog=1,stackhysteresis=0,gcperiod=0", &res);
  check_child_ok(&res, "GORODEBUG=stacklog=1");
  long long id = report_value(res.err, "grower");
  const char *cycles = strstr(res.err, "cycles=start\n");
  CHECK(cycles != NULL);

  /* Each of the grower's lines starts where the one before ended, from
   * the one page a goroutine starts with. */
  unsigned long long span = OBSERVE_PAGE;
  int grows = 0, shrinks = 0, shrinks_after_gc = 0;
  for (const char *line = res.err; line && *line; line = next_line(line)) {
    stack_line l;
    if (strncmp(line, "goro: goroutine ", 16) != 0)
      continue;
    if (!parse_stack_line(line, &l))
      FAIL("malformed stacklog line: %.*s", (int)strcspn(line, "\n"), line);
    if (l.id != id)
      continue;
    if (l.from != span)
      FAIL("goroutine %lld: line \"%.*s\" starts from %llu bytes, the previous line ended at %llu",
           id, (int)strcspn(line, "\n"), line, l.from, span);
    if (l.from % OBSERVE_PAGE || l.to % OBSERVE_PAGE)
      FAIL("goroutine %lld: sizes %llu and %llu are not whole pages", id, l.from, l.to);
    if (strcmp(l.why, "grow") == 0) {
      CHECK_GT(l.to, l.from);
      grows++;
    } else if (strcmp(l.why, "shrink") == 0) {
      CHECK_LT(l.to, l.from);
      shrinks++;
      shrinks_after_gc += line > cycles;
    } else {
      FAIL("goroutine %lld: stacklog reason \"%s\", expected grow or shrink", id, l.why);
    }
    span = l.to;
  }
  if (grows < 1)
    FAIL("no (grow) line for goroutine %lld, which recursed 64 KiB deep; stderr:\n%s", id,
         res.err);
  CHECK_GE(shrinks, 1);
  CHECK_EQ(shrinks_after_gc, shrinks);
  CHECK_EQ(shrinks, report_value(res.err, "shrinks"));
}

TEST(stacklog_off_prints_nothing) {
  static child_result res;

  run_child_env("child_grower", "GORODEBUG", "stackhysteresis=0,gcperiod=0", &res);
  check_child_ok(&res, "GORODEBUG without stacklog");
  CHECK_EQ(observe_count_lines(res.err, "goro:"), 0);
  CHECK_GT(report_value(res.err, "shrinks"), 0);
}

/* ---- gcshrinkstackoff -------------------------------------------------- */

TEST(gcshrinkstackoff_stops_shrinking) {
  static child_result on, off;

  run_child_env("child_grower", "GORODEBUG", "stackhysteresis=0,gcperiod=0", &on);
  check_child_ok(&on, "default shrinking");
  run_child_env("child_grower", "GORODEBUG", "gcshrinkstackoff=1,stackhysteresis=0,gcperiod=0",
                &off);
  check_child_ok(&off, "GORODEBUG=gcshrinkstackoff=1");

  /* The same program shrinks by default... */
  CHECK_EQ(report_value(on.err, "policy_shrink"), 1);
  CHECK_EQ(report_value(on.err, "policy_hysteresis"), 0);
  CHECK_GT(report_value(on.err, "released"), 0);
  CHECK_GT(report_value(on.err, "shrinks"), 0);
  CHECK_LT(report_value(on.err, "inuse_after"), report_value(on.err, "inuse_before"));

  /* ...and not with the knob. */
  CHECK_EQ(report_value(off.err, "policy_shrink"), 0);
  CHECK_EQ(report_value(off.err, "released"), 0);
  CHECK_EQ(report_value(off.err, "shrinks"), 0);
  CHECK_GE(report_value(off.err, "inuse_after"), report_value(off.err, "inuse_before"));
}

/* ---- schedtrace -------------------------------------------------------- */

#define SCHEDTRACE_PARKED 10
#define SCHEDTRACE_RUN_MS 600

static void schedtrace_sleeper(void *arg) {
  goro_chan *release = arg;

  CHECK_ERR(goro_chan_recv(release, NULL), GORO_ECLOSED);
}

static void schedtrace_ticker(void *arg) {
  int64_t end = *(int64_t *)arg;

  while (harness_now_ns() < end)
    CHECK_OK(goro_sleep(5 * MS));
}

static int schedtrace_main(void *arg) {
  goro_chan *release;
  int64_t end = harness_now_ns() + SCHEDTRACE_RUN_MS * MS;
  (void)arg;

  CHECK_OK(goro_chan_make(&release, 0, 0));
  for (int i = 0; i < SCHEDTRACE_PARKED; i++)
    CHECK_OK(goro_spawn(schedtrace_sleeper, release));
  CHECK_OK(goro_spawn(schedtrace_ticker, &end));
  while (harness_now_ns() < end)
    CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_chan_close(release));
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_OK(goro_chan_free(release));
  return 0;
}

CHILD(child_schedtrace) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(schedtrace_main, NULL);
}

TEST(schedtrace_prints_summary_every_interval) {
  static child_result res;

  run_child_env("child_schedtrace", "GORODEBUG", "schedtrace=50", &res);
  check_child_ok(&res, "GORODEBUG=schedtrace=50");

  long long last_ms = -1;
  int lines = 0, full = 0;
  for (const char *line = strstr(res.err, "goro: schedtrace"); line;
       line = strstr(line + 1, "\ngoro: schedtrace")) {
    if (*line == '\n')
      line++;
    long long ms, globrunq;
    int workers;
    unsigned idle, spinning;
    int used = 0;
    if (sscanf(line, "goro: schedtrace %lldms: workers=%d idle=%u spinning=%u globrunq=%lld runq=[%n",
               &ms, &workers, &idle, &spinning, &globrunq, &used) != 5 || used == 0)
      FAIL("malformed schedtrace line: %.*s", (int)strcspn(line, "\n"), line);
    unsigned long long goroutines, inuse, sys;
    const char *tail = strstr(line, "] goroutines=");
    if (!tail || tail > line + strcspn(line, "\n") ||
        sscanf(tail, "] goroutines=%llu stack_inuse=%llu stack_sys=%llu", &goroutines, &inuse,
               &sys) != 3)
      FAIL("schedtrace line lacks goroutines=, stack_inuse= or stack_sys=: %.*s",
           (int)strcspn(line, "\n"), line);

    CHECK_EQ(workers, 2);
    CHECK_LE(idle, 2);
    CHECK_GE(inuse, goroutines * OBSERVE_PAGE);
    CHECK_GE(sys, inuse);
    /* Two run queue lengths, one per worker. */
    int runqs = 0;
    for (const char *c = line + used; c < tail; c++)
      runqs += (c == line + used || c[-1] == ' ') && *c >= '0' && *c <= '9';
    CHECK_EQ(runqs, 2);
    if (last_ms >= 0 && ms - last_ms < 50)
      FAIL("schedtrace lines at %lld ms and %lld ms are closer than 50 ms", last_ms, ms);
    /* main, the sleepers and the ticker */
    full += goroutines == SCHEDTRACE_PARKED + 2;
    last_ms = ms;
    lines++;
  }
  /* About one line per 50 ms of the 600 ms run. The monitor wakes at
   * least every 20 ms, so a line comes 50 to 70 ms after the one before
   * unless the machine is busy. Half the lines is the least accepted. */
  if (lines < SCHEDTRACE_RUN_MS / 50 / 2 || lines > SCHEDTRACE_RUN_MS / 50 + 2)
    FAIL("%d schedtrace lines in a %d ms run at schedtrace=50; stderr:\n%s", lines,
         SCHEDTRACE_RUN_MS, res.err);
  CHECK_GE(full, 1);
}

/* ---- adaptivestackstart ------------------------------------------------ */

#define ADAPTIVE_GOROUTINES 64

static struct {
  goro_waitgroup parked;
  goro_chan *release;
  goro_stack_info fresh;
  int fresh_resident;   /* pages of the fresh goroutine's top 32 KiB resident */
} adaptive;

static void adaptive_bottom(void *arg) {
  (void)arg;
  CHECK_OK(goro_wg_done(&adaptive.parked));
  CHECK_ERR(goro_chan_recv(adaptive.release, NULL), GORO_ECLOSED);
}

static void adaptive_deep(void *arg) { observe_at_depth(20 * KIB, adaptive_bottom, arg); }

/* Reports its own span, and how many pages of its top 32 KiB are resident,
 * before anything here touches them. */
static void adaptive_fresh(void *arg) {
  unsigned char vec[8];
  uintptr_t top = observe_stack_top();

  (void)arg;
  CHECK_OK(goro_stack_info_self(&adaptive.fresh));
  CHECK_EQ(mincore((void *)(top - 32 * KIB), 32 * KIB, vec), 0);
  for (int i = 0; i < 8; i++)
    adaptive.fresh_resident += vec[i] & 1;
  CHECK_OK(goro_wg_done(&adaptive.parked));
}

static int adaptive_main(void *arg) {
  goro_memstats s;
  (void)arg;

  observe_read(&s);
  fprintf(stderr, "start_before=%llu\n", (unsigned long long)s.stack_start_size);
  CHECK_OK(goro_chan_make(&adaptive.release, 0, 0));
  CHECK_OK(goro_wg_add(&adaptive.parked, ADAPTIVE_GOROUTINES));
  for (int i = 0; i < ADAPTIVE_GOROUTINES; i++)
    CHECK_OK(goro_spawn(adaptive_deep, NULL));
  CHECK_OK(goro_wg_wait(&adaptive.parked));
  CHECK_OK(goro_gc());
  observe_read(&s);
  fprintf(stderr, "start_after=%llu\n", (unsigned long long)s.stack_start_size);

  /* A new goroutine starts with that many bytes committed. */
  uint64_t inuse_before = s.stack_inuse;
  CHECK_OK(goro_wg_add(&adaptive.parked, 1));
  CHECK_OK(goro_spawn(adaptive_fresh, NULL));
  observe_read(&s);
  fprintf(stderr, "spawn_inuse=%llu\n", (unsigned long long)(s.stack_inuse - inuse_before));
  CHECK_OK(goro_wg_wait(&adaptive.parked));
  fprintf(stderr, "fresh_current=%zu\nfresh_resident=%d\n", adaptive.fresh.current,
          adaptive.fresh_resident);

  CHECK_OK(goro_chan_close(adaptive.release));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_chan_free(adaptive.release));
  return 0;
}

CHILD(child_adaptive) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(adaptive_main, NULL);
}

TEST(adaptivestackstart_follows_average_use) {
  static child_result res;

  run_child_env("child_adaptive", "GORODEBUG", "adaptivestackstart=1,gcperiod=0", &res);
  check_child_ok(&res, "GORODEBUG=adaptivestackstart=1");
  CHECK_EQ(report_value(res.err, "start_before"), OBSERVE_PAGE);
  /* 64 goroutines 20 KiB deep: the average rounds up to 32 KiB. */
  CHECK_EQ(report_value(res.err, "start_after"), 32 * KIB);
  CHECK_EQ(report_value(res.err, "spawn_inuse"), 32 * KIB);
  CHECK_EQ(report_value(res.err, "fresh_current"), 32 * KIB);
  CHECK_EQ(report_value(res.err, "fresh_resident"), 8);
}

TEST(adaptivestackstart_off_keeps_one_page) {
  static child_result res;

  run_child_env("child_adaptive", "GORODEBUG", "gcperiod=0", &res);
  check_child_ok(&res, "GORODEBUG without adaptivestackstart");
  CHECK_EQ(report_value(res.err, "start_after"), OBSERVE_PAGE);
  CHECK_EQ(report_value(res.err, "spawn_inuse"), OBSERVE_PAGE);
  CHECK_EQ(report_value(res.err, "fresh_current"), OBSERVE_PAGE);
}

/* ---- Settings goro does not know -------------------------------------- */

/* goro records the stack depth at a yield, so the 16 KiB growth is logged
 * when stacklog is on. */
static void workload_bottom(void *arg) {
  (void)arg;
  CHECK_OK(goro_yield());
}

static void workload_goroutine(void *arg) {
  goro_chan *c = arg;
  int value = 7;

  observe_at_depth(16 * KIB, workload_bottom, NULL);
  CHECK_OK(goro_chan_send(c, &value));
}

static int workload_main(void *arg) {
  goro_chan *c;
  int value = 0;
  (void)arg;

  CHECK_OK(goro_chan_make(&c, sizeof(int), 0));
  CHECK_OK(goro_spawn(workload_goroutine, c));
  CHECK_OK(goro_chan_recv(c, &value));
  CHECK_EQ(value, 7);
  CHECK_OK(goro_gc());
  CHECK_OK(goro_chan_free(c));
  fprintf(stderr, "workload=done\n");
  return 0;
}

CHILD(child_workload) { RUN_MAIN(workload_main, NULL); }

TEST(gorodebug_bad_settings_warn_once) {
  static const char *settings[] = {
      "nosuchknob=1",          /* unknown name */
      "stacklog",              /* no value */
      "schedtrace=abc",        /* not a number */
      "stackhysteresis=-3",    /* negative */
      "gcperiod=99999999999",  /* too large */
      "adaptivestackstart=",   /* empty value */
      "=5",                    /* no name */
      "guardbudget=12x",       /* trailing junk */
  };
  static child_result res;

  for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
    run_child_env("child_workload", "GORODEBUG", settings[i], &res);
    check_child_ok(&res, settings[i]);
    int warnings = observe_count_lines(res.err, "goro: GORODEBUG:");
    if (warnings != 1)
      FAIL("GORODEBUG=%s printed %d \"goro: GORODEBUG:\" warnings, expected 1; stderr:\n%s",
           settings[i], warnings, res.err);
    CHECK_CONTAINS(res.err, "workload=done\n");
    CHECK_EQ(observe_count_lines(res.err, "goro:"), 1);
  }
}

TEST(gorodebug_bad_setting_keeps_the_others) {
  static child_result res;

  run_child_env("child_workload", "GORODEBUG", "bogus=1,stacklog=1", &res);
  check_child_ok(&res, "GORODEBUG=bogus=1,stacklog=1");
  CHECK_EQ(observe_count_lines(res.err, "goro: GORODEBUG:"), 1);
  CHECK_CONTAINS(res.err, "bogus=1");
  /* stacklog=1 still applies: the workload goroutine grew to 16 KiB. */
  CHECK_GE(observe_count_lines(res.err, "goro: goroutine "), 1);
  CHECK_CONTAINS(res.err, "(grow)\n");
}
