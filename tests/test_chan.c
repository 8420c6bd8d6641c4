/*
 * Channels and select: hand-off, buffering, close, the non-blocking forms,
 * select's fairness and wake-ups, and a many-producer stress run.
 */
#include "harness.h"

#define MS ((int64_t)1000000)

/* Sleeps until *counter reaches want, or fails after 5 s. */
static void wait_for_count(int *counter, int want) {
  int64_t deadline = harness_now_ns() + 5000 * MS;

  while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < want && harness_now_ns() < deadline)
    CHECK_OK(goro_sleep(1 * MS));
  CHECK_EQ(__atomic_load_n(counter, __ATOMIC_ACQUIRE), want);
}

/* ---- Unbuffered hand-off ---------------------------------------------- */

static goro_chan *handoff;
static int handoff_sent;

static void send_one(void *arg) {
  int v = 1234;
  (void)arg;
  CHECK_OK(goro_chan_send(handoff, &v));
  __atomic_store_n(&handoff_sent, 1, __ATOMIC_RELEASE);
}

static int handoff_main(void *arg) {
  int v = 0;
  (void)arg;

  CHECK_OK(goro_chan_make(&handoff, sizeof v, 0));
  CHECK_EQ(goro_chan_cap(handoff), 0);
  CHECK_OK(goro_spawn(send_one, NULL));

  /* Without a receiver the sender stays blocked, however long it waits. */
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&handoff_sent, __ATOMIC_ACQUIRE), 0);
  CHECK_EQ(goro_chan_len(handoff), 0);

  CHECK_OK(goro_chan_recv(handoff, &v));
  CHECK_EQ(v, 1234);
  wait_for_count(&handoff_sent, 1);
  CHECK_OK(goro_chan_free(handoff));
  return 0;
}

TEST(chan_unbuffered_send_blocks_until_received) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(handoff_main, NULL);
}

static goro_chan *recv_first;
static int recv_first_got = -1;

static void recv_one(void *arg) {
  int v = -1;
  (void)arg;
  CHECK_OK(goro_chan_recv(recv_first, &v));
  __atomic_store_n(&recv_first_got, v, __ATOMIC_RELEASE);
}

static int recv_first_main(void *arg) {
  int v = 99;
  (void)arg;

  CHECK_OK(goro_chan_make(&recv_first, sizeof v, 0));
  CHECK_OK(goro_spawn(recv_one, NULL));
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&recv_first_got, __ATOMIC_ACQUIRE), -1);

  CHECK_OK(goro_chan_send(recv_first, &v));
  wait_for_count(&recv_first_got, 99);
  CHECK_OK(goro_chan_free(recv_first));
  return 0;
}

TEST(chan_unbuffered_recv_blocks_until_sent) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(recv_first_main, NULL);
}

/* ---- Buffered channels ------------------------------------------------ */

#define FIFO_VALUES 10000

static goro_chan *fifo;

static void send_sequence(void *arg) {
  (void)arg;
  for (int i = 0; i < FIFO_VALUES; i++)
    CHECK_OK(goro_chan_send(fifo, &i));
}

static int fifo_main(void *arg) {
  (void)arg;

  /* A capacity of 3 makes the ring wrap thousands of times, and the
   * producer often waits on a full buffer, which takes the path where a
   * receiver moves a blocked sender's value into the buffer. */
  CHECK_OK(goro_chan_make(&fifo, sizeof(int), 3));
  CHECK_EQ(goro_chan_cap(fifo), 3);
  CHECK_OK(goro_spawn(send_sequence, NULL));
  for (int i = 0; i < FIFO_VALUES; i++) {
    int v = -1;
    CHECK_OK(goro_chan_recv(fifo, &v));
    if (v != i)
      FAIL("value %d arrived where %d was expected", v, i);
    if (i % 100 == 0)
      CHECK_OK(goro_yield()); /* let the buffer fill up */
  }
  CHECK_OK(goro_chan_free(fifo));
  return 0;
}

TEST(chan_buffered_keeps_fifo_order) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(fifo_main, NULL);
}

static goro_chan *full;
static int full_fifth_sent;

static void send_fifth(void *arg) {
  int v = 4;
  (void)arg;
  CHECK_OK(goro_chan_send(full, &v));
  __atomic_store_n(&full_fifth_sent, 1, __ATOMIC_RELEASE);
}

static int full_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_chan_make(&full, sizeof(int), 4));
  for (int i = 0; i < 4; i++) {
    CHECK_OK(goro_chan_send(full, &i));
    CHECK_EQ(goro_chan_len(full), i + 1);
  }

  CHECK_OK(goro_spawn(send_fifth, NULL));
  CHECK_OK(goro_sleep(20 * MS));
  CHECK_EQ(__atomic_load_n(&full_fifth_sent, __ATOMIC_ACQUIRE), 0);
  CHECK_EQ(goro_chan_len(full), 4);

  /* The first receive makes room, and the blocked value goes in last. */
  for (int i = 0; i < 5; i++) {
    int v = -1;
    CHECK_OK(goro_chan_recv(full, &v));
    CHECK_EQ(v, i);
  }
  wait_for_count(&full_fifth_sent, 1);
  CHECK_EQ(goro_chan_len(full), 0);
  CHECK_OK(goro_chan_free(full));
  return 0;
}

TEST(chan_buffered_send_blocks_when_full) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(full_main, NULL);
}

/* ---- Close ------------------------------------------------------------ */

#define CLOSE_WAITERS 50

static goro_chan *closing;
static int close_started, close_woken;

static void recv_until_closed(void *arg) {
  int64_t v = -1; /* close must overwrite this with zeros */
  (void)arg;

  __atomic_fetch_add(&close_started, 1, __ATOMIC_RELEASE);
  CHECK_ERR(goro_chan_recv(closing, &v), GORO_ECLOSED);
  CHECK_EQ(v, 0);
  __atomic_fetch_add(&close_woken, 1, __ATOMIC_RELEASE);
}

static int close_wakes_main(void *arg) {
  (void)arg;

  CHECK_OK(goro_chan_make(&closing, sizeof(int64_t), 0));
  for (int i = 0; i < CLOSE_WAITERS; i++)
    CHECK_OK(goro_spawn(recv_until_closed, NULL));
  wait_for_count(&close_started, CLOSE_WAITERS);
  CHECK_OK(goro_sleep(10 * MS)); /* from started to parked */
  CHECK_EQ(__atomic_load_n(&close_woken, __ATOMIC_ACQUIRE), 0);

  CHECK_OK(goro_chan_close(closing));
  wait_for_count(&close_woken, CLOSE_WAITERS);
  CHECK_OK(goro_chan_free(closing));
  return 0;
}

TEST(chan_close_wakes_every_receiver) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(close_wakes_main, NULL);
}

static int drain_main(void *arg) {
  goro_chan *c;
  int v;
  (void)arg;

  CHECK_OK(goro_chan_make(&c, sizeof v, 3));
  for (int i = 1; i <= 3; i++)
    CHECK_OK(goro_chan_send(c, &i));
  CHECK_OK(goro_chan_close(c));

  for (int i = 1; i <= 3; i++) {
    v = -1;
    CHECK_OK(goro_chan_recv(c, &v));
    CHECK_EQ(v, i);
    CHECK_EQ(goro_chan_len(c), 3 - i);
  }

  /* Drained: every receive form now reports the close and zeroes. */
  v = -1;
  CHECK_ERR(goro_chan_recv(c, &v), GORO_ECLOSED);
  CHECK_EQ(v, 0);
  v = -1;
  CHECK_ERR(goro_chan_recv(c, &v), GORO_ECLOSED);
  CHECK_EQ(v, 0);
  v = -1;
  CHECK_ERR(goro_chan_try_recv(c, &v), GORO_ECLOSED);
  CHECK_EQ(v, 0);
  CHECK_OK(goro_chan_free(c));
  return 0;
}

TEST(chan_recv_drains_buffer_after_close) { RUN_MAIN(drain_main, NULL); }

static int send_closed_main(void *arg) {
  goro_chan *unbuffered, *buffered;
  int v = 5;
  (void)arg;

  CHECK_OK(goro_chan_make(&unbuffered, sizeof v, 0));
  CHECK_OK(goro_chan_make(&buffered, sizeof v, 4));
  CHECK_OK(goro_chan_close(unbuffered));
  CHECK_OK(goro_chan_close(buffered));

  CHECK_ERR(goro_chan_send(unbuffered, &v), GORO_ECLOSED);
  CHECK_ERR(goro_chan_try_send(unbuffered, &v), GORO_ECLOSED);
  /* Room in the buffer does not matter once the channel is closed. */
  CHECK_ERR(goro_chan_send(buffered, &v), GORO_ECLOSED);
  CHECK_ERR(goro_chan_try_send(buffered, &v), GORO_ECLOSED);
  CHECK_EQ(goro_chan_len(buffered), 0);

  CHECK_OK(goro_chan_free(unbuffered));
  CHECK_OK(goro_chan_free(buffered));
  return 0;
}

TEST(chan_send_on_closed_returns_eclosed) { RUN_MAIN(send_closed_main, NULL); }

#define BLOCKED_SENDERS 20

static goro_chan *senders_chan;
static int senders_started, senders_failed;

static void send_until_closed(void *arg) {
  int v = (int)(intptr_t)arg;

  __atomic_fetch_add(&senders_started, 1, __ATOMIC_RELEASE);
  CHECK_ERR(goro_chan_send(senders_chan, &v), GORO_ECLOSED);
  __atomic_fetch_add(&senders_failed, 1, __ATOMIC_RELEASE);
}

static int close_senders_main(void *arg) {
  int v = -1;
  (void)arg;

  /* One buffered value, so the senders block on a full buffer. */
  CHECK_OK(goro_chan_make(&senders_chan, sizeof v, 1));
  CHECK_OK(goro_chan_try_send(senders_chan, &v));
  for (int i = 0; i < BLOCKED_SENDERS; i++)
    CHECK_OK(goro_spawn(send_until_closed, (void *)(intptr_t)i));
  wait_for_count(&senders_started, BLOCKED_SENDERS);
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_EQ(__atomic_load_n(&senders_failed, __ATOMIC_ACQUIRE), 0);

  CHECK_OK(goro_chan_close(senders_chan));
  wait_for_count(&senders_failed, BLOCKED_SENDERS);

  /* The value buffered before the close is still there, and nothing else. */
  v = 0;
  CHECK_OK(goro_chan_recv(senders_chan, &v));
  CHECK_EQ(v, -1);
  CHECK_ERR(goro_chan_recv(senders_chan, &v), GORO_ECLOSED);
  CHECK_OK(goro_chan_free(senders_chan));
  return 0;
}

TEST(chan_close_fails_blocked_senders) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(close_senders_main, NULL);
}

static int close_twice_main(void *arg) {
  goro_chan *c;
  (void)arg;

  CHECK_OK(goro_chan_make(&c, sizeof(int), 2));
  CHECK_OK(goro_chan_close(c));
  CHECK_ERR(goro_chan_close(c), GORO_ECLOSED);
  CHECK_ERR(goro_chan_close(c), GORO_ECLOSED);
  CHECK_OK(goro_chan_free(c));
  return 0;
}

TEST(chan_close_twice_returns_eclosed) { RUN_MAIN(close_twice_main, NULL); }

/* ---- Non-blocking forms ----------------------------------------------- */

static goro_chan *try_chan;

static void recv_into(void *arg) { CHECK_OK(goro_chan_recv(try_chan, arg)); }

static int try_ops_main(void *arg) {
  goro_chan *buffered;
  int v = 7;
  (void)arg;

  /* Unbuffered with no goroutine waiting: both forms would block. */
  CHECK_OK(goro_chan_make(&try_chan, sizeof v, 0));
  CHECK_ERR(goro_chan_try_send(try_chan, &v), GORO_EAGAIN);
  CHECK_ERR(goro_chan_try_recv(try_chan, &v), GORO_EAGAIN);

  /* Empty, then full, buffer. */
  CHECK_OK(goro_chan_make(&buffered, sizeof v, 2));
  CHECK_ERR(goro_chan_try_recv(buffered, &v), GORO_EAGAIN);
  CHECK_OK(goro_chan_try_send(buffered, &v));
  CHECK_OK(goro_chan_try_send(buffered, &v));
  CHECK_ERR(goro_chan_try_send(buffered, &v), GORO_EAGAIN);
  CHECK_EQ(goro_chan_len(buffered), 2);
  v = 0;
  CHECK_OK(goro_chan_try_recv(buffered, &v));
  CHECK_EQ(v, 7);

  /* With a receiver parked, try_send hands the value over. */
  static int received;
  CHECK_OK(goro_spawn(recv_into, &received));
  CHECK_OK(goro_sleep(10 * MS));
  v = 31;
  CHECK_OK(goro_chan_try_send(try_chan, &v));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_EQ(received, 31);

  CHECK_OK(goro_chan_free(try_chan));
  CHECK_OK(goro_chan_free(buffered));
  return 0;
}

TEST(chan_try_ops_return_eagain) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(try_ops_main, NULL);
}

/* ---- Select ----------------------------------------------------------- */

static int select_idle_main(void *arg) {
  goro_chan *empty, *unbuffered;
  int in = -1, out = 3;
  (void)arg;

  CHECK_OK(goro_chan_make(&empty, sizeof(int), 1));
  CHECK_OK(goro_chan_make(&unbuffered, sizeof(int), 0));
  goro_select_case cases[] = {
      {.chan = empty, .op = GORO_SELECT_RECV, .elem = &in},
      {.chan = unbuffered, .op = GORO_SELECT_SEND, .elem = &out},
      {.chan = unbuffered, .op = GORO_SELECT_RECV, .elem = &in},
  };

  CHECK_ERR(goro_select(cases, 3, true), GORO_EAGAIN);
  CHECK_EQ(in, -1);
  CHECK_EQ(goro_chan_len(empty), 0);
  /* No case left a waiter behind. */
  CHECK_OK(goro_chan_free(empty));
  CHECK_OK(goro_chan_free(unbuffered));
  return 0;
}

TEST(select_nonblocking_returns_eagain_when_idle) { RUN_MAIN(select_idle_main, NULL); }

#define FAIR_CASES 4
#define FAIR_TRIALS 8000

static int select_fair_main(void *arg) {
  goro_chan *chans[FAIR_CASES];
  goro_select_case cases[FAIR_CASES];
  int values[FAIR_CASES];
  int chosen[FAIR_CASES] = {0};
  (void)arg;

  for (int i = 0; i < FAIR_CASES; i++) {
    CHECK_OK(goro_chan_make(&chans[i], sizeof(int), 1));
    CHECK_OK(goro_chan_send(chans[i], &i));
    cases[i] = (goro_select_case){.chan = chans[i], .op = GORO_SELECT_RECV, .elem = &values[i]};
  }

  for (int trial = 0; trial < FAIR_TRIALS; trial++) {
    int k = goro_select(cases, FAIR_CASES, false);
    CHECK_GE(k, 0);
    CHECK_LT(k, FAIR_CASES);
    CHECK_EQ(cases[k].result, 0);
    CHECK_EQ(values[k], k);
    chosen[k]++;
    CHECK_OK(goro_chan_send(chans[k], &k)); /* every case ready again */
  }

  /* Uniform choice gives 2000 each with a standard deviation of 39, so
   * 1600 is ten deviations away. */
  for (int i = 0; i < FAIR_CASES; i++) {
    if (chosen[i] < FAIR_TRIALS / FAIR_CASES * 4 / 5)
      FAIL("case %d chosen %d times in %d trials (%d %d %d %d)", i, chosen[i], FAIR_TRIALS,
           chosen[0], chosen[1], chosen[2], chosen[3]);
  }
  for (int i = 0; i < FAIR_CASES; i++)
    CHECK_OK(goro_chan_free(chans[i]));
  return 0;
}

TEST(select_picks_every_ready_case_fairly) { RUN_MAIN(select_fair_main, NULL); }

static int select_mixed_ready_main(void *arg) {
  goro_chan *out_chan, *in_chan;
  int out = 11, in = -1;
  (void)arg;

  CHECK_OK(goro_chan_make(&out_chan, sizeof(int), 1));
  CHECK_OK(goro_chan_make(&in_chan, sizeof(int), 1));
  goro_select_case cases[] = {
      {.chan = out_chan, .op = GORO_SELECT_SEND, .elem = &out},
      {.chan = in_chan, .op = GORO_SELECT_RECV, .elem = &in},
  };

  /* Only the send has room. */
  CHECK_EQ(goro_select(cases, 2, true), 0);
  CHECK_EQ(cases[0].result, 0);
  CHECK_EQ(goro_chan_len(out_chan), 1);

  /* out_chan is full now and in_chan has a value: only the receive. */
  int v = 22;
  CHECK_OK(goro_chan_send(in_chan, &v));
  CHECK_EQ(goro_select(cases, 2, true), 1);
  CHECK_EQ(in, 22);

  /* Both ready: over many trials both are chosen. */
  int chosen[2] = {0, 0};
  for (int trial = 0; trial < 400; trial++) {
    CHECK_OK(goro_chan_try_recv(out_chan, NULL)); /* room to send */
    CHECK_OK(goro_chan_try_send(in_chan, &v));    /* a value to receive */
    int k = goro_select(cases, 2, false);
    CHECK_GE(k, 0);
    CHECK_LT(k, 2);
    chosen[k]++;
    /* Undo the side not chosen so both are ready again next time. */
    if (k == 0)
      CHECK_OK(goro_chan_try_recv(in_chan, NULL));
    else
      CHECK_OK(goro_chan_try_send(out_chan, &out));
  }
  CHECK_GE(chosen[0], 100);
  CHECK_GE(chosen[1], 100);

  CHECK_OK(goro_chan_free(out_chan));
  CHECK_OK(goro_chan_free(in_chan));
  return 0;
}

TEST(select_mixes_ready_send_and_recv) { RUN_MAIN(select_mixed_ready_main, NULL); }

static goro_chan *peer_out, *peer_in;

/* Takes one value from peer_out, then sends 77 on peer_in. */
static void select_peer(void *arg) {
  int v = -1;
  (void)arg;

  CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_chan_recv(peer_out, &v));
  CHECK_EQ(v, 55);
  CHECK_OK(goro_sleep(10 * MS));
  v = 77;
  CHECK_OK(goro_chan_send(peer_in, &v));
}

static int select_blocking_main(void *arg) {
  int out = 55, in = -1;
  (void)arg;

  CHECK_OK(goro_chan_make(&peer_out, sizeof(int), 0));
  CHECK_OK(goro_chan_make(&peer_in, sizeof(int), 0));
  goro_select_case cases[] = {
      {.chan = peer_out, .op = GORO_SELECT_SEND, .elem = &out},
      {.chan = peer_in, .op = GORO_SELECT_RECV, .elem = &in},
  };
  CHECK_OK(goro_spawn(select_peer, NULL));

  /* Nothing is ready at first, so select parks on both cases. */
  CHECK_EQ(goro_select(cases, 2, false), 0);
  CHECK_EQ(cases[0].result, 0);
  CHECK_EQ(in, -1);

  CHECK_EQ(goro_select(cases, 2, false), 1);
  CHECK_EQ(cases[1].result, 0);
  CHECK_EQ(in, 77);

  /* The waiter of the losing case was taken off its queue each time. */
  CHECK_OK(goro_chan_free(peer_out));
  CHECK_OK(goro_chan_free(peer_in));
  return 0;
}

TEST(select_blocks_until_send_or_recv) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(select_blocking_main, NULL);
}

static goro_chan *late;

static void send_late(void *arg) {
  int v = 9;
  (void)arg;
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_chan_send(late, &v));
}

static int select_null_main(void *arg) {
  goro_chan *ready;
  int a = -1, b = -1, out = 1;
  (void)arg;

  CHECK_OK(goro_chan_make(&ready, sizeof(int), 1));
  goro_select_case cases[] = {
      {.chan = NULL, .op = GORO_SELECT_RECV, .elem = &a},
      {.chan = ready, .op = GORO_SELECT_RECV, .elem = &b},
      {.chan = NULL, .op = GORO_SELECT_SEND, .elem = &out},
  };
  for (int trial = 0; trial < 1000; trial++) {
    CHECK_OK(goro_chan_send(ready, &trial));
    CHECK_EQ(goro_select(cases, 3, false), 1);
    CHECK_EQ(b, trial);
  }
  CHECK_EQ(a, -1);

  /* Only NULL cases: never ready, so the non-blocking form gives up. */
  goro_select_case only_null[] = {
      {.chan = NULL, .op = GORO_SELECT_RECV, .elem = &a},
      {.chan = NULL, .op = GORO_SELECT_SEND, .elem = &out},
  };
  CHECK_ERR(goro_select(only_null, 2, true), GORO_EAGAIN);

  /* Blocking with a NULL case beside one that becomes ready later. */
  CHECK_OK(goro_chan_make(&late, sizeof(int), 0));
  goro_select_case with_late[] = {
      {.chan = NULL, .op = GORO_SELECT_SEND, .elem = &out},
      {.chan = late, .op = GORO_SELECT_RECV, .elem = &b},
  };
  CHECK_OK(goro_spawn(send_late, NULL));
  CHECK_EQ(goro_select(with_late, 2, false), 1);
  CHECK_EQ(b, 9);

  CHECK_OK(goro_chan_free(ready));
  CHECK_OK(goro_chan_free(late));
  return 0;
}

TEST(select_never_chooses_null_channel) { RUN_MAIN(select_null_main, NULL); }

static goro_chan *sel_quiet, *sel_closed;

static void close_later(void *arg) {
  (void)arg;
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_OK(goro_chan_close(sel_closed));
}

static int select_close_main(void *arg) {
  int64_t a = -1, b = -1;
  (void)arg;

  CHECK_OK(goro_chan_make(&sel_quiet, sizeof(int64_t), 0));
  CHECK_OK(goro_chan_make(&sel_closed, sizeof(int64_t), 0));
  goro_select_case cases[] = {
      {.chan = sel_quiet, .op = GORO_SELECT_RECV, .elem = &a},
      {.chan = sel_closed, .op = GORO_SELECT_RECV, .elem = &b},
  };
  CHECK_OK(goro_spawn(close_later, NULL));

  CHECK_EQ(goro_select(cases, 2, false), 1);
  CHECK_ERR(cases[1].result, GORO_ECLOSED);
  CHECK_EQ(b, 0);
  CHECK_EQ(a, -1);

  /* Already closed: a send case is ready at once and reports the close. */
  int64_t out = 4;
  goro_select_case send_case[] = {
      {.chan = sel_quiet, .op = GORO_SELECT_RECV, .elem = &a},
      {.chan = sel_closed, .op = GORO_SELECT_SEND, .elem = &out},
  };
  CHECK_EQ(goro_select(send_case, 2, false), 1);
  CHECK_ERR(send_case[1].result, GORO_ECLOSED);

  CHECK_OK(goro_chan_free(sel_quiet));
  CHECK_OK(goro_chan_free(sel_closed));
  return 0;
}

TEST(select_wakes_on_close) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(select_close_main, NULL);
}

/* ---- Zero-size elements ----------------------------------------------- */

static goro_chan *signal_chan;
static int signals_seen;

static void count_signals(void *arg) {
  (void)arg;
  while (goro_chan_recv(signal_chan, NULL) == 0)
    __atomic_fetch_add(&signals_seen, 1, __ATOMIC_RELEASE);
}

static int zero_size_main(void *arg) {
  goro_chan *buffered;
  (void)arg;

  CHECK_OK(goro_chan_make(&buffered, 0, 5));
  CHECK_EQ(goro_chan_cap(buffered), 5);
  for (int i = 0; i < 5; i++)
    CHECK_OK(goro_chan_try_send(buffered, NULL));
  CHECK_EQ(goro_chan_len(buffered), 5);
  CHECK_ERR(goro_chan_try_send(buffered, NULL), GORO_EAGAIN);
  for (int i = 0; i < 5; i++)
    CHECK_OK(goro_chan_recv(buffered, NULL));
  CHECK_ERR(goro_chan_try_recv(buffered, NULL), GORO_EAGAIN);
  CHECK_OK(goro_chan_close(buffered));
  CHECK_ERR(goro_chan_recv(buffered, NULL), GORO_ECLOSED);
  CHECK_OK(goro_chan_free(buffered));

  /* Unbuffered signals: each send is one hand-off. */
  CHECK_OK(goro_chan_make(&signal_chan, 0, 0));
  CHECK_OK(goro_spawn(count_signals, NULL));
  for (int i = 0; i < 1000; i++)
    CHECK_OK(goro_chan_send(signal_chan, NULL));
  CHECK_OK(goro_chan_close(signal_chan));
  wait_for_count(&signals_seen, 1000);
  CHECK_OK(goro_sleep(5 * MS)); /* let the counter see the close and leave */
  CHECK_OK(goro_chan_free(signal_chan));
  return 0;
}

TEST(chan_zero_size_elements_signal) {
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(zero_size_main, NULL);
}

/* ---- Free ------------------------------------------------------------- */

static goro_chan *busy_chan;
static int busy_got;

static void recv_busy(void *arg) {
  int v = -1;
  (void)arg;
  CHECK_OK(goro_chan_recv(busy_chan, &v));
  __atomic_store_n(&busy_got, v, __ATOMIC_RELEASE);
}

static void send_busy(void *arg) {
  int v = 66;
  (void)arg;
  CHECK_OK(goro_chan_send(busy_chan, &v));
}

static int free_busy_main(void *arg) {
  int v = 65;
  (void)arg;

  /* A parked receiver keeps the channel busy. */
  CHECK_OK(goro_chan_make(&busy_chan, sizeof v, 0));
  CHECK_OK(goro_spawn(recv_busy, NULL));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_ERR(goro_chan_free(busy_chan), GORO_EBUSY);

  /* The failed free left the channel working. */
  CHECK_OK(goro_chan_send(busy_chan, &v));
  wait_for_count(&busy_got, 65);

  /* A parked sender too. */
  CHECK_OK(goro_spawn(send_busy, NULL));
  CHECK_OK(goro_sleep(10 * MS));
  CHECK_ERR(goro_chan_free(busy_chan), GORO_EBUSY);
  CHECK_OK(goro_chan_recv(busy_chan, &v));
  CHECK_EQ(v, 66);

  CHECK_OK(goro_chan_free(busy_chan));
  return 0;
}

TEST(chan_free_with_waiters_returns_ebusy) {
  CHECK_OK(goro_set_maxprocs(1));
  RUN_MAIN(free_busy_main, NULL);
}

/* ---- Stress ----------------------------------------------------------- */

#define PRODUCERS 8
#define CONSUMERS 8

typedef struct stress_totals {
  uint64_t count;
  uint64_t sum;
} stress_totals;

static goro_chan *stress_chan;
static int stress_per_producer;
static uint8_t *stress_seen; /* one counter per value */
static stress_totals consumer_totals[CONSUMERS];
static goro_waitgroup producers_wg, consumers_wg;
static int stress_workers_seen;

static void produce(void *arg) {
  int64_t base = (int64_t)(intptr_t)arg * stress_per_producer;

  for (int64_t i = 0; i < stress_per_producer; i++) {
    int64_t v = base + i;
    CHECK_OK(goro_chan_send(stress_chan, &v));
  }
  goro_wg_done(&producers_wg);
}

static void consume(void *arg) {
  stress_totals *t = &consumer_totals[(intptr_t)arg];
  int64_t v;

  while (goro_chan_recv(stress_chan, &v) == 0) {
    __atomic_fetch_add(&stress_seen[v], 1, __ATOMIC_RELAXED);
    __atomic_fetch_or(&stress_workers_seen, 1 << goro_worker_index(), __ATOMIC_RELAXED);
    t->count++;
    t->sum += (uint64_t)v;
  }
  goro_wg_done(&consumers_wg);
}

static int stress_main(void *arg) {
  size_t capacity = (size_t)(intptr_t)arg;
  uint64_t total = (uint64_t)PRODUCERS * (uint64_t)stress_per_producer;

  memset(consumer_totals, 0, sizeof consumer_totals);
  stress_seen = calloc(total, 1);
  CHECK(stress_seen != NULL);
  CHECK_OK(goro_chan_make(&stress_chan, sizeof(int64_t), capacity));

  CHECK_OK(goro_wg_add(&consumers_wg, CONSUMERS));
  for (int i = 0; i < CONSUMERS; i++)
    CHECK_OK(goro_spawn(consume, (void *)(intptr_t)i));
  CHECK_OK(goro_wg_add(&producers_wg, PRODUCERS));
  for (int i = 0; i < PRODUCERS; i++)
    CHECK_OK(goro_spawn(produce, (void *)(intptr_t)i));

  CHECK_OK(goro_wg_wait(&producers_wg));
  CHECK_OK(goro_chan_close(stress_chan));
  CHECK_OK(goro_wg_wait(&consumers_wg));

  uint64_t count = 0, sum = 0;
  for (int i = 0; i < CONSUMERS; i++) {
    count += consumer_totals[i].count;
    sum += consumer_totals[i].sum;
  }
  CHECK_EQ(count, total);
  CHECK_EQ(sum, total * (total - 1) / 2);
  for (uint64_t v = 0; v < total; v++)
    if (stress_seen[v] != 1)
      FAIL("value %llu received %d times", (unsigned long long)v, stress_seen[v]);
  CHECK_EQ(__atomic_load_n(&stress_workers_seen, __ATOMIC_RELAXED), 3);

  free(stress_seen);
  CHECK_OK(goro_chan_free(stress_chan));
  return 0;
}

static void run_stress(size_t capacity) {
  stress_per_producer = harness_sanitizer() ? 20000 : 100000;
  CHECK_OK(goro_set_maxprocs(2));
  RUN_MAIN(stress_main, (void *)(intptr_t)capacity);
}

TEST(chan_stress_buffered_many_to_many) { run_stress(64); }

TEST(chan_stress_unbuffered_many_to_many) { run_stress(0); }

/* ---- Select senders on a buffered and an unbuffered channel ----------- */

/* Producers send each value once by select over a buffer of one and an
 * unbuffered channel; consumers receive by select over both. A select that
 * queued a sender on a buffer with room let receivers read a slot twice, so
 * every value must arrive exactly once. Four workers on this machine's two
 * CPUs make the interleavings that exposed it common. */
#define SELECT_PRODUCERS 8
#define SELECT_CONSUMERS 8

static goro_chan *sel_buffered, *sel_unbuffered, *sel_quit;
static uint8_t *sel_seen;
static long sel_per_producer;
static goro_waitgroup sel_producers_wg, sel_consumers_wg;

static void sel_produce(void *arg) {
  long first = (long)(intptr_t)arg * sel_per_producer;

  for (long i = 0; i < sel_per_producer; i++) {
    long v = first + i;
    goro_select_case cases[2] = {
        {.chan = sel_buffered, .op = GORO_SELECT_SEND, .elem = &v},
        {.chan = sel_unbuffered, .op = GORO_SELECT_SEND, .elem = &v},
    };
    int chosen = goro_select(cases, 2, false);
    CHECK(chosen == 0 || chosen == 1);
    CHECK_EQ(cases[chosen].result, 0);
  }
  goro_wg_done(&sel_producers_wg);
}

static void sel_consume(void *arg) {
  (void)arg;
  for (;;) {
    long v = -1;
    goro_select_case cases[3] = {
        {.chan = sel_buffered, .op = GORO_SELECT_RECV, .elem = &v},
        {.chan = sel_unbuffered, .op = GORO_SELECT_RECV, .elem = &v},
        {.chan = sel_quit, .op = GORO_SELECT_RECV, .elem = NULL},
    };
    int chosen = goro_select(cases, 3, false);
    if (chosen == 2)
      break;
    CHECK(v >= 0);
    CHECK(v < SELECT_PRODUCERS * sel_per_producer);
    if (__atomic_fetch_add(&sel_seen[v], 1, __ATOMIC_RELAXED) != 0)
      FAIL("value %ld received twice (case %d)", v, chosen);
  }
  goro_wg_done(&sel_consumers_wg);
}

static int select_senders_main(void *arg) {
  (void)arg;
  long total = SELECT_PRODUCERS * sel_per_producer;

  sel_seen = calloc((size_t)total, 1);
  CHECK(sel_seen != NULL);
  CHECK_OK(goro_chan_make(&sel_buffered, sizeof(long), 1));
  CHECK_OK(goro_chan_make(&sel_unbuffered, sizeof(long), 0));
  CHECK_OK(goro_chan_make(&sel_quit, 0, 0));
  CHECK_OK(goro_wg_add(&sel_consumers_wg, SELECT_CONSUMERS));
  for (int i = 0; i < SELECT_CONSUMERS; i++)
    CHECK_OK(goro_spawn(sel_consume, NULL));
  CHECK_OK(goro_wg_add(&sel_producers_wg, SELECT_PRODUCERS));
  for (int i = 0; i < SELECT_PRODUCERS; i++)
    CHECK_OK(goro_spawn(sel_produce, (void *)(intptr_t)i));

  CHECK_OK(goro_wg_wait(&sel_producers_wg));
  /* The buffer may still hold a value: wait until consumers drained it. */
  while (goro_chan_len(sel_buffered) > 0)
    CHECK_OK(goro_yield());
  CHECK_OK(goro_chan_close(sel_quit));
  CHECK_OK(goro_wg_wait(&sel_consumers_wg));

  for (long v = 0; v < total; v++)
    if (sel_seen[v] != 1)
      FAIL("value %ld received %d times", v, sel_seen[v]);
  free(sel_seen);
  return 0;
}

TEST(select_senders_deliver_each_value_once) {
  sel_per_producer = harness_sanitizer() ? 2000 : 20000;
  CHECK_OK(goro_set_maxprocs(4));
  RUN_MAIN(select_senders_main, NULL);
}
