/*
 * GOROTRACE. A child writes a trace to a file under /tmp, and the test
 * checks that it is valid JSON, with a strict parser below and python3's
 * json module when python3 is installed. It also checks the trace-event
 * shape that ui.perfetto.dev and chrome://tracing read: thread names for
 * the workers, run slices on the right worker, a lifetime pair per
 * goroutine and stack counters that end at 0. An unwritable path warns,
 * and the program runs on.
 */
#define _GNU_SOURCE
#include <math.h>

#include "observe.h"

#define MS ((int64_t)1000000)
#define KIB ((size_t)1024)

/* ---- A strict JSON parser (RFC 8259) ---------------------------------- */

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json {
  json_type type;
  double number;        /* JSON_NUMBER, and 0 or 1 for JSON_BOOL */
  char *string;         /* JSON_STRING, decoded to UTF-8 */
  struct json *items;   /* JSON_ARRAY elements, JSON_OBJECT values */
  char **keys;          /* JSON_OBJECT */
  size_t count;
} json;

typedef struct json_parser {
  const char *text;
  size_t pos, len;
  int depth;
} json_parser;

#define JSON_MAX_DEPTH 64

static void json_value(json_parser *p, json *out);

static void json_fail(const json_parser *p, const char *what) {
  size_t from = p->pos > 40 ? p->pos - 40 : 0;

  FAIL("trace is not valid JSON: %s at byte %zu, after \"%.*s\"", what, p->pos,
       (int)(p->pos - from), p->text + from);
}

static void json_space(json_parser *p) {
  while (p->pos < p->len && strchr(" \t\r\n", p->text[p->pos]))
    p->pos++;
}

static int json_peek(const json_parser *p) {
  return p->pos < p->len ? (unsigned char)p->text[p->pos] : -1;
}

static void json_expect(json_parser *p, char c) {
  if (json_peek(p) != c) {
    char what[32];
    snprintf(what, sizeof what, "expected '%c'", c);
    json_fail(p, what);
  }
  p->pos++;
}

static void json_literal(json_parser *p, const char *word, json_type type, double number,
                         json *out) {
  size_t n = strlen(word);

  if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
    json_fail(p, "invalid literal");
  p->pos += n;
  out->type = type;
  out->number = number;
}

static size_t json_digits(json_parser *p) {
  size_t start = p->pos;

  while (json_peek(p) >= '0' && json_peek(p) <= '9')
    p->pos++;
  return p->pos - start;
}

static void json_number(json_parser *p, json *out) {
  size_t start = p->pos;

  if (json_peek(p) == '-')
    p->pos++;
  if (json_peek(p) == '0')
    p->pos++;
  else if (json_digits(p) == 0)
    json_fail(p, "number without digits");
  if (json_peek(p) == '.') {
    p->pos++;
    if (json_digits(p) == 0)
      json_fail(p, "no digits after the decimal point");
  }
  if (json_peek(p) == 'e' || json_peek(p) == 'E') {
    p->pos++;
    if (json_peek(p) == '+' || json_peek(p) == '-')
      p->pos++;
    if (json_digits(p) == 0)
      json_fail(p, "no digits in the exponent");
  }
  char buf[64];
  if (p->pos - start >= sizeof buf)
    json_fail(p, "number too long");
  memcpy(buf, p->text + start, p->pos - start);
  buf[p->pos - start] = '\0';
  out->type = JSON_NUMBER;
  out->number = strtod(buf, NULL);
}

static unsigned json_hex4(json_parser *p) {
  unsigned v = 0;

  for (int i = 0; i < 4; i++) {
    int c = json_peek(p);
    int digit = c >= '0' && c <= '9' ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
    if (digit < 0)
      json_fail(p, "invalid \\u escape");
    v = v * 16 + (unsigned)digit;
    p->pos++;
  }
  return v;
}

static size_t json_utf8(unsigned cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18);
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* Returns a decoded copy of the string at p (a decoded string is never
 * longer than its source). */
static char *json_string(json_parser *p) {
  json_expect(p, '"');
  char *s = malloc(p->len - p->pos + 1);
  size_t n = 0;

  CHECK(s != NULL);
  for (;;) {
    int c = json_peek(p);
    if (c < 0)
      json_fail(p, "unterminated string");
    p->pos++;
    if (c == '"')
      break;
    if (c < 0x20)
      json_fail(p, "control character in a string");
    if (c != '\\') {
      s[n++] = (char)c;
      continue;
    }
    c = json_peek(p);
    p->pos++;
    switch (c) {
    case '"': s[n++] = '"'; break;
    case '\\': s[n++] = '\\'; break;
    case '/': s[n++] = '/'; break;
    case 'b': s[n++] = '\b'; break;
    case 'f': s[n++] = '\f'; break;
    case 'n': s[n++] = '\n'; break;
    case 'r': s[n++] = '\r'; break;
    case 't': s[n++] = '\t'; break;
    case 'u': {
      unsigned cp = json_hex4(p);
      if (cp >= 0xd800 && cp < 0xdc00) {
        if (json_peek(p) != '\\')
          json_fail(p, "unpaired surrogate");
        p->pos++;
        json_expect(p, 'u');
        unsigned low = json_hex4(p);
        if (low < 0xdc00 || low >= 0xe000)
          json_fail(p, "invalid low surrogate");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
      } else if (cp >= 0xdc00 && cp < 0xe000) {
        json_fail(p, "unpaired low surrogate");
      }
      n += json_utf8(cp, s + n);
      break;
    }
    default:
      json_fail(p, "invalid escape");
    }
  }
  s[n] = '\0';
  return s;
}

/* Parses "[...]" or "{...}" at p into out. */
static void json_container(json_parser *p, json *out, int is_object) {
  size_t cap = 0;

  if (++p->depth > JSON_MAX_DEPTH)
    json_fail(p, "nesting too deep");
  out->type = is_object ? JSON_OBJECT : JSON_ARRAY;
  p->pos++;
  json_space(p);
  if (json_peek(p) == (is_object ? '}' : ']')) {
    p->pos++;
    p->depth--;
    return;
  }
  for (;;) {
    if (out->count == cap) {
      cap = cap ? cap * 2 : 8;
      out->items = realloc(out->items, cap * sizeof *out->items);
      CHECK(out->items != NULL);
      if (is_object) {
        out->keys = realloc(out->keys, cap * sizeof *out->keys);
        CHECK(out->keys != NULL);
      }
    }
    json_space(p);
    if (is_object) {
      if (json_peek(p) != '"')
        json_fail(p, "expected a member name");
      out->keys[out->count] = json_string(p);
      json_space(p);
      json_expect(p, ':');
    }
    json_value(p, &out->items[out->count++]);
    json_space(p);
    if (json_peek(p) == ',') {
      p->pos++;
      continue;
    }
    json_expect(p, is_object ? '}' : ']');
    break;
  }
  p->depth--;
}

static void json_value(json_parser *p, json *out) {
  memset(out, 0, sizeof *out);
  json_space(p);
  switch (json_peek(p)) {
  case '{': json_container(p, out, 1); break;
  case '[': json_container(p, out, 0); break;
  case '"':
    out->type = JSON_STRING;
    out->string = json_string(p);
    break;
  case 't': json_literal(p, "true", JSON_BOOL, 1, out); break;
  case 'f': json_literal(p, "false", JSON_BOOL, 0, out); break;
  case 'n': json_literal(p, "null", JSON_NULL, 0, out); break;
  default:
    if (json_peek(p) == '-' || (json_peek(p) >= '0' && json_peek(p) <= '9'))
      json_number(p, out);
    else
      json_fail(p, "expected a value");
  }
}

static void json_parse(const char *text, size_t len, json *out) {
  json_parser p = {text, 0, len, 0};

  json_value(&p, out);
  json_space(&p);
  if (p.pos != len)
    json_fail(&p, "text after the value");
}

static void json_free(json *v) {
  for (size_t i = 0; i < v->count; i++) {
    json_free(&v->items[i]);
    if (v->type == JSON_OBJECT)
      free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->string);
}

/* Returns member key of object v, or NULL. */
static const json *json_get(const json *v, const char *key) {
  if (v->type != JSON_OBJECT)
    return NULL;
  for (size_t i = 0; i < v->count; i++)
    if (strcmp(v->keys[i], key) == 0)
      return &v->items[i];
  return NULL;
}

static const char *json_get_string(const json *v, const char *key) {
  const json *m = json_get(v, key);

  return m && m->type == JSON_STRING ? m->string : NULL;
}

/* Returns member key as a number, failing the test if it is not one. */
static double json_get_number(const json *v, const char *key, const char *ph) {
  const json *m = json_get(v, key);

  if (!m || m->type != JSON_NUMBER)
    FAIL("a \"%s\" event has no number \"%s\"", ph, key);
  return m->number;
}

TEST(json_parser_rejects_invalid_text) {
  static const char *valid[] = {"{}", "[1, -0.5e+3, \"a\\u00e9\\ud83d\\ude00\", true, null]",
                                " {\"a\": {\"b\": []}} "};
  static const char *invalid[] = {"{", "[1,]", "{\"a\" 1}", "01", "1.", "\"\\x\"", "[1] 2",
                                  "\"tab\there\"", "{'a': 1}", "nul"};
  json v;

  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
    json_parse(valid[i], strlen(valid[i]), &v);
    json_free(&v);
  }
  /* json_fail exits, so each invalid text is parsed in a child process. */
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      int null_fd = open("/dev/null", O_WRONLY);
      dup2(null_fd, STDERR_FILENO);
      json_parse(invalid[i], strlen(invalid[i]), &v);
      _exit(0);
    }
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
      FAIL("the parser accepted invalid JSON: %s", invalid[i]);
  }
}

/* ---- The traced program ----------------------------------------------- */

/*
 * With GOROMAXPROCS=2, eight goroutines each recurse 8 to 64 KiB deep,
 * yield there (so that goro records the growth), return and park shallow.
 * Main runs goro_gc with hysteresis 0, which shrinks them, and lets them
 * exit. Each goroutine reports its id and the worker it started on, and
 * before it exits how often its stack grew and shrank.
 */
#define TRACED 8

static struct {
  goro_waitgroup parked, exited;
  goro_chan *release;
} traced;

static void traced_bottom(void *arg) {
  (void)arg;
  CHECK_OK(goro_yield());
  CHECK_OK(goro_sleep(1 * MS));
}

static void traced_goroutine(void *arg) {
  size_t depth = (size_t)(intptr_t)arg;
  goro_stack_info info;

  fprintf(stderr, "goroutine=%lld worker=%d\n", (long long)goro_id(), goro_worker_index());
  observe_at_depth(depth, traced_bottom, NULL);
  CHECK_OK(goro_wg_done(&traced.parked));
  CHECK_ERR(goro_chan_recv(traced.release, NULL), GORO_ECLOSED);
  CHECK_OK(goro_stack_info_self(&info));
  fprintf(stderr, "stack=%lld growths=%llu shrinks=%llu\n", (long long)info.id,
          (unsigned long long)info.growths, (unsigned long long)info.shrinks);
  CHECK_OK(goro_wg_done(&traced.exited));
}

static int traced_main(void *arg) {
  (void)arg;

  fprintf(stderr, "goroutine=%lld worker=%d\n", (long long)goro_id(), goro_worker_index());
  CHECK_OK(goro_chan_make(&traced.release, 0, 0));
  CHECK_OK(goro_wg_add(&traced.parked, TRACED));
  CHECK_OK(goro_wg_add(&traced.exited, TRACED));
  for (int i = 0; i < TRACED; i++)
    CHECK_OK(goro_spawn(traced_goroutine, (void *)(intptr_t)((size_t)(i + 1) * 8 * KIB)));
  CHECK_OK(goro_wg_wait(&traced.parked));
  for (int i = 0; i < 3; i++)
    CHECK_OK(goro_gc());
  CHECK_OK(goro_chan_close(traced.release));
  CHECK_OK(goro_wg_wait(&traced.exited));
  CHECK_OK(goro_chan_free(traced.release));
  /* An exited goroutine's stack counter drops to 0 when its worker frees
   * the slot, just after the wait group is done. */
  goro_memstats s;
  int64_t deadline = harness_now_ns() + 5000 * MS;
  for (observe_read(&s); s.goroutines != 1 && harness_now_ns() < deadline; observe_read(&s))
    CHECK_OK(goro_sleep(1 * MS));
  CHECK_EQ(s.goroutines, 1);
  fprintf(stderr, "workload=done\n");
  return 0;
}

CHILD(child_traced) {
  goro_stack_policy policy;

  CHECK_OK(goro_set_maxprocs(2));
  CHECK_OK(goro_get_stack_policy(&policy));
  policy.hysteresis = 0;
  policy.gc_period_ns = 0;
  CHECK_OK(goro_set_stack_policy(&policy));
  RUN_MAIN(traced_main, NULL);
}

/* ---- Checking the trace ----------------------------------------------- */

typedef struct traced_goroutine_facts {
  long long id;
  int start_worker;       /* goro_worker_index() at its start */
  int begins, ends;       /* "b" and "e" events */
  double begin_ts, end_ts;
  int slices;             /* "X" events */
  double first_slice_ts, last_slice_end;
  int first_slice_tid;
  int counters;           /* "C" events */
  double counter_ts[64], counter_bytes[64];
  unsigned long long growths, shrinks; /* as the goroutine reported them */
} goroutine_facts;

static goroutine_facts facts[TRACED + 1];
static int nfacts;

static goroutine_facts *facts_for(long long id) {
  for (int i = 0; i < nfacts; i++)
    if (facts[i].id == id)
      return &facts[i];
  return NULL;
}

/* Reads "goroutine=ID worker=W" lines from the child's stderr. */
static void read_reported_goroutines(const char *err) {
  nfacts = 0;
  for (const char *at = strstr(err, "goroutine="); at; at = strstr(at + 1, "\ngoroutine=")) {
    if (*at == '\n')
      at++;
    CHECK_LT(nfacts, TRACED + 1);
    goroutine_facts *f = &facts[nfacts];
    memset(f, 0, sizeof *f);
    if (sscanf(at, "goroutine=%lld worker=%d", &f->id, &f->start_worker) != 2)
      FAIL("malformed report line: %.*s", (int)strcspn(at, "\n"), at);
    f->first_slice_ts = INFINITY;
    nfacts++;
  }
  CHECK_EQ(nfacts, TRACED + 1);

  for (const char *at = strstr(err, "\nstack="); at; at = strstr(at + 1, "\nstack=")) {
    long long id;
    unsigned long long growths, shrinks;
    if (sscanf(at, "\nstack=%lld growths=%llu shrinks=%llu", &id, &growths, &shrinks) != 3)
      FAIL("malformed report line: %.*s", (int)strcspn(at + 1, "\n"), at + 1);
    goroutine_facts *f = facts_for(id);
    if (!f)
      FAIL("stack report for goroutine %lld, which reported no start", id);
    f->growths = growths;
    f->shrinks = shrinks;
  }
}

/* Timestamps are microseconds printed with 3 decimals, so two values that
 * come from one clock reading may differ by rounding. */
#define TS_SLACK 0.002

/* Worker tids seen in thread_name events: bit i for worker i. */
static unsigned check_metadata(const json *event, int *process_named) {
  const char *name = json_get_string(event, "name");
  const json *args = json_get(event, "args");
  const char *arg_name = args ? json_get_string(args, "name") : NULL;

  if (!name || !arg_name)
    FAIL("an \"M\" event lacks name or args.name");
  if (strcmp(name, "process_name") == 0) {
    *process_named = 1;
    return 0;
  }
  if (strcmp(name, "thread_name") != 0)
    FAIL("unexpected metadata event \"%s\"", name);
  int tid = (int)json_get_number(event, "tid", "M");
  char expected[32];
  snprintf(expected, sizeof expected, "worker %d", tid);
  if (strcmp(arg_name, expected) != 0)
    FAIL("thread_name of tid %d is \"%s\", expected \"%s\"", tid, arg_name, expected);
  return tid >= 0 && tid < 32 ? 1u << tid : 0;
}

static void check_slice(const json *event, double ts) {
  const char *name = json_get_string(event, "name");
  const json *args = json_get(event, "args");
  int tid = (int)json_get_number(event, "tid", "X");
  double dur = json_get_number(event, "dur", "X");
  long long id = args ? (long long)json_get_number(args, "goroutine", "X") : -1;
  char expected[32];

  snprintf(expected, sizeof expected, "g%lld", id);
  if (!name || strcmp(name, expected) != 0)
    FAIL("run slice of goroutine %lld is named \"%s\", expected \"%s\"", id, name ? name : "",
         expected);
  if (tid < 0 || tid >= 2)
    FAIL("run slice of goroutine %lld is on tid %d; the workers are 0 and 1", id, tid);
  if (dur < 0)
    FAIL("run slice of goroutine %lld lasts %f us", id, dur);
  goroutine_facts *f = facts_for(id);
  if (!f)
    return; /* a goroutine the child did not report cannot exist */
  f->slices++;
  if (ts < f->first_slice_ts) {
    f->first_slice_ts = ts;
    f->first_slice_tid = tid;
  }
  if (ts + dur > f->last_slice_end)
    f->last_slice_end = ts + dur;
}

static void check_lifetime(const json *event, const char *ph, double ts) {
  long long id = (long long)json_get_number(event, "id", ph);
  const char *name = json_get_string(event, "name");
  const char *cat = json_get_string(event, "cat");
  char expected[40];

  snprintf(expected, sizeof expected, "goroutine %lld", id);
  if (!name || strcmp(name, expected) != 0 || !cat || strcmp(cat, "goroutine") != 0)
    FAIL("\"%s\" event of goroutine %lld is named \"%s\" in category \"%s\"", ph, id,
         name ? name : "", cat ? cat : "");
  goroutine_facts *f = facts_for(id);
  if (!f)
    FAIL("\"%s\" event for goroutine %lld, which the child never reported", ph, id);
  if (*ph == 'b') {
    f->begins++;
    f->begin_ts = ts;
  } else {
    f->ends++;
    f->end_ts = ts;
  }
}

static void check_counter(const json *event, double ts) {
  const char *name = json_get_string(event, "name");
  const json *args = json_get(event, "args");
  long long id;

  if (!name || sscanf(name, "stack g%lld", &id) != 1)
    FAIL("counter \"%s\" is not named \"stack g<id>\"", name ? name : "");
  double bytes = args ? json_get_number(args, "bytes", "C") : -1;
  if (bytes < 0 || bytes != (double)(uint64_t)bytes || (uint64_t)bytes % OBSERVE_PAGE != 0)
    FAIL("counter %s has %f bytes, not a whole number of pages", name, bytes);
  goroutine_facts *f = facts_for(id);
  if (!f)
    FAIL("counter %s for a goroutine the child never reported", name);
  if (f->counters == (int)(sizeof f->counter_ts / sizeof f->counter_ts[0]))
    FAIL("counter %s has more than %d values", name, f->counters);
  f->counter_ts[f->counters] = ts;
  f->counter_bytes[f->counters] = bytes;
  f->counters++;
}

/* Sorts a goroutine's counter values by time. Events are in the file in
 * the order they took the trace lock, which can differ a little from ts
 * order. A tie keeps file order, because insertion sort is stable. */
static void sort_counters(goroutine_facts *f) {
  for (int i = 1; i < f->counters; i++) {
    for (int k = i; k > 0 && f->counter_ts[k - 1] > f->counter_ts[k]; k--) {
      double ts = f->counter_ts[k], bytes = f->counter_bytes[k];
      f->counter_ts[k] = f->counter_ts[k - 1];
      f->counter_bytes[k] = f->counter_bytes[k - 1];
      f->counter_ts[k - 1] = ts;
      f->counter_bytes[k - 1] = bytes;
    }
  }
}

/* Checks that run slices on each worker do not overlap: a worker runs one
 * goroutine at a time. */
static int compare_doubles(const void *a, const void *b) {
  double x = ((const double *)a)[0], y = ((const double *)b)[0];

  return x < y ? -1 : x > y;
}

static void check_no_overlap(const json *events) {
  for (int tid = 0; tid < 2; tid++) {
    size_t n = 0;
    double *spans = malloc(events->count * 2 * sizeof *spans);
    CHECK(spans != NULL);
    for (size_t i = 0; i < events->count; i++) {
      const json *e = &events->items[i];
      const char *ph = json_get_string(e, "ph");
      if (!ph || strcmp(ph, "X") != 0 || (int)json_get_number(e, "tid", "X") != tid)
        continue;
      spans[2 * n] = json_get_number(e, "ts", "X");
      spans[2 * n + 1] = spans[2 * n] + json_get_number(e, "dur", "X");
      n++;
    }
    qsort(spans, n, 2 * sizeof *spans, compare_doubles);
    for (size_t i = 1; i < n; i++)
      if (spans[2 * i] < spans[2 * i - 1] - TS_SLACK)
        FAIL("run slices on worker %d overlap: one ends at %.3f us, the next starts at %.3f us",
             tid, spans[2 * i - 1], spans[2 * i]);
    free(spans);
  }
}

static void check_events(const json *events) {
  unsigned workers_named = 0;
  int process_named = 0;

  for (size_t i = 0; i < events->count; i++) {
    const json *e = &events->items[i];
    const char *ph = json_get_string(e, "ph");
    if (e->type != JSON_OBJECT || !ph)
      FAIL("trace event %zu is not an object with a \"ph\" string", i);
    if (json_get_number(e, "pid", ph) != 1)
      FAIL("trace event %zu has a pid other than 1", i);
    if (strcmp(ph, "M") == 0) {
      workers_named |= check_metadata(e, &process_named);
      continue;
    }
    double ts = json_get_number(e, "ts", ph);
    if (ts < 0)
      FAIL("a \"%s\" event has ts %f, before goro_run started", ph, ts);
    if (strcmp(ph, "X") == 0)
      check_slice(e, ts);
    else if (strcmp(ph, "b") == 0 || strcmp(ph, "e") == 0)
      check_lifetime(e, ph, ts);
    else if (strcmp(ph, "C") == 0)
      check_counter(e, ts);
    else
      FAIL("unexpected event phase \"%s\"", ph);
  }
  CHECK(process_named);
  CHECK_EQ(workers_named, 3u);
  check_no_overlap(events);
}

/* Checks each reported goroutine against its events: one lifetime pair,
 * run slices within it and the first on the worker it started on, and a
 * stack counter that rises once per growth, falls once per shrink and ends
 * at 0. Returns the shrinks of all goroutines. */
static unsigned long long check_goroutine_facts(void) {
  unsigned long long shrinks = 0;

  for (int i = 0; i < nfacts; i++) {
    goroutine_facts *f = &facts[i];
    int is_main = i == 0;

    if (f->begins != 1 || f->ends != 1)
      FAIL("goroutine %lld has %d \"b\" and %d \"e\" events, expected one each", f->id,
           f->begins, f->ends);
    if (f->end_ts < f->begin_ts)
      FAIL("goroutine %lld ends at %.3f us, before it began at %.3f us", f->id, f->end_ts,
           f->begin_ts);
    if (f->slices < 1)
      FAIL("goroutine %lld has no run slice", f->id);
    if (f->first_slice_ts < f->begin_ts - TS_SLACK || f->last_slice_end > f->end_ts + TS_SLACK)
      FAIL("goroutine %lld runs from %.3f to %.3f us, outside its lifetime %.3f to %.3f us",
           f->id, f->first_slice_ts, f->last_slice_end, f->begin_ts, f->end_ts);
    if (f->first_slice_tid != f->start_worker)
      FAIL("goroutine %lld started on worker %d, but its first run slice is on tid %d", f->id,
           f->start_worker, f->first_slice_tid);

    sort_counters(f);
    if (f->counters < 1 || f->counter_bytes[f->counters - 1] != 0)
      FAIL("goroutine %lld exited, but the last of its %d stack counter values is %.0f bytes, "
           "not 0",
           f->id, f->counters, f->counters ? f->counter_bytes[f->counters - 1] : -1.0);
    if (is_main)
      continue;

    /* The values before the final 0 start from one page. */
    unsigned long long rises = 0, falls = 0;
    double previous = (double)OBSERVE_PAGE, peak = previous;
    for (int k = 0; k < f->counters - 1; k++) {
      double bytes = f->counter_bytes[k];
      rises += bytes > previous;
      falls += bytes < previous;
      peak = bytes > peak ? bytes : peak;
      previous = bytes;
    }
    if (peak <= (double)(8 * KIB))
      FAIL("goroutine %lld went 8 KiB deep or more, but its counter peaks at %.0f bytes", f->id,
           peak);
    if (rises != f->growths || falls != f->shrinks)
      FAIL("goroutine %lld grew %llu and shrank %llu times, but its counter rises %llu and "
           "falls %llu times",
           f->id, f->growths, f->shrinks, rises, falls);
    shrinks += f->shrinks;
  }
  return shrinks;
}

/* Runs python3's json module on path as a second opinion; returns 0 when
 * python3 is not installed. */
static int python_json_check(const char *path) {
  if (system("command -v python3 >/dev/null 2>&1") != 0) {
    printf("note: python3 not found; the trace is checked by the C parser only\n");
    return 0;
  }
  char command[512];
  snprintf(command, sizeof command,
           "python3 -c 'import json, sys; json.load(open(sys.argv[1]))' %s", path);
  return system(command) == 0 ? 1 : -1;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "r");

  if (!f)
    FAIL("cannot open the trace %s: %s", path, strerror(errno));
  CHECK_EQ(fseek(f, 0, SEEK_END), 0);
  long size = ftell(f);
  CHECK_GT(size, 0);
  rewind(f);
  char *text = malloc((size_t)size + 1);
  CHECK(text != NULL);
  CHECK_EQ(fread(text, 1, (size_t)size, f), (size_t)size);
  text[size] = '\0';
  fclose(f);
  *len = (size_t)size;
  return text;
}

TEST(gorotrace_writes_chrome_trace_json) {
  static child_result res;
  char path[64];

  snprintf(path, sizeof path, "/tmp/goro-test-trace-%d.json", (int)getpid());
  run_child_env("child_traced", "GOROTRACE", path, &res);
  check_child_ok(&res, "GOROTRACE");
  CHECK_CONTAINS(res.err, "workload=done\n");
  CHECK_EQ(observe_count_lines(res.err, "goro:"), 0);
  read_reported_goroutines(res.err);

  size_t len;
  char *text = read_file(path, &len);
  json trace;
  json_parse(text, len, &trace);
  if (python_json_check(path) < 0)
    FAIL("python3's json module rejects the trace %s", path);

  CHECK(trace.type == JSON_OBJECT);
  const json *events = json_get(&trace, "traceEvents");
  if (!events || events->type != JSON_ARRAY)
    FAIL("the trace has no traceEvents array");
  CHECK(json_get_string(&trace, "displayTimeUnit") != NULL);
  check_events(events);
  /* The cycles ran while the goroutines were parked, except one that had
   * not switched out yet when main woke up. */
  CHECK_GE(check_goroutine_facts(), TRACED / 2);

  json_free(&trace);
  free(text);
  unlink(path);
}

/* ---- An unwritable path ------------------------------------------------ */

static void workload_goroutine(void *arg) {
  goro_chan *c = arg;

  observe_at_depth(16 * KIB, NULL, NULL);
  CHECK_OK(goro_chan_send(c, NULL));
}

static int workload_main(void *arg) {
  goro_chan *c;
  (void)arg;

  CHECK_OK(goro_chan_make(&c, 0, 0));
  CHECK_OK(goro_spawn(workload_goroutine, c));
  CHECK_OK(goro_chan_recv(c, NULL));
  CHECK_OK(goro_gc());
  CHECK_OK(goro_chan_free(c));
  fprintf(stderr, "workload=done\n");
  return 0;
}

CHILD(child_workload) { RUN_MAIN(workload_main, NULL); }

TEST(gorotrace_unwritable_path_warns) {
  static child_result res;
  const char *path = "/nonexistent-goro-dir/trace.json";

  run_child_env("child_workload", "GOROTRACE", path, &res);
  check_child_ok(&res, "GOROTRACE to an unwritable path");
  CHECK_CONTAINS(res.err, "workload=done\n");
  CHECK_EQ(observe_count_lines(res.err, "goro: GOROTRACE:"), 1);
  CHECK_CONTAINS(res.err, path);
  CHECK_EQ(access(path, F_OK), -1);
}
