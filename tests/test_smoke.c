/* Quick end-to-end checks of spawn, channels and sleep. */
#include "harness.h"

static goro_chan *ping, *pong;

static void ponger(void *arg) {
  int v;
  (void)arg;
  while (goro_chan_recv(ping, &v) == 0)
    goro_chan_send(pong, &v);
}

static int pingpong_main(void *arg) {
  (void)arg;
  CHECK_OK(goro_chan_make(&ping, sizeof(int), 0));
  CHECK_OK(goro_chan_make(&pong, sizeof(int), 0));
  CHECK_OK(goro_spawn(ponger, NULL));
  for (int i = 0; i < 100000; i++) {
    int v = i, r = -1;
    CHECK_OK(goro_chan_send(ping, &v));
    CHECK_OK(goro_chan_recv(pong, &r));
    CHECK_EQ(r, i);
  }
  goro_chan_close(ping);
  return 0;
}

TEST(smoke_pingpong) { RUN_MAIN(pingpong_main, NULL); }

static goro_waitgroup wg;
static void worker(void *arg) {
  volatile char buf[1024];
  buf[0] = (char)(intptr_t)arg;
  (void)buf[0];
  goro_wg_done(&wg);
}

static int many_main(void *arg) {
  (void)arg;
  for (int i = 0; i < 100000; i++) {
    CHECK_OK(goro_wg_add(&wg, 1));
    CHECK_OK(goro_spawn(worker, (void *)(intptr_t)i));
  }
  CHECK_OK(goro_wg_wait(&wg));
  CHECK_OK(goro_sleep(1000000));
  return 0;
}

TEST(smoke_many) { RUN_MAIN(many_main, NULL); }
