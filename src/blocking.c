/*
 * blocking.c: goro_run_blocking, for calls that block in the kernel where
 * the netpoller cannot help (regular file I/O, getaddrinfo, a library that
 * blocks inside).
 *
 * The calling goroutine parks and the function runs on a thread of a small
 * pool; when it returns, the goroutine is readied. The worker thread meanwhile
 * runs other goroutines, so a blocking call costs a pool thread, not a
 * worker. Pool threads start on demand, up to MAX_THREADS, and stop when
 * goro_run ends. The job record lives on the parked goroutine's stack.
 *
 * NOTE: Go hands its P to another thread during any system call instead;
 * goro asks the caller to mark such calls. A call goro does not see still
 * blocks its worker.
 */
#include <pthread.h>
#include <stdlib.h>

#include "sched.h"

#define MAX_THREADS 64

typedef struct job {
  goro_fn fn;
  void *arg;
  goro__g *g;
  struct job *next;
} job;

static struct {
  pthread_mutex_t lock;
  pthread_cond_t work;
  job *head, *tail;
  int threads, idle;
  bool stop;
  pthread_t ids[MAX_THREADS];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

static void *pool_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&pool.lock);
  for (;;) {
    while (!pool.head && !pool.stop) {
      pool.idle++;
      pthread_cond_wait(&pool.work, &pool.lock);
      pool.idle--;
    }
    if (!pool.head)
      break;
    job *j = pool.head;
    pool.head = j->next;
    if (!pool.head)
      pool.tail = NULL;
    pthread_mutex_unlock(&pool.lock);

    j->fn(j->arg);
    goro__ready(j->g); /* j lives on g's stack: no access after this */

    pthread_mutex_lock(&pool.lock);
  }
  pthread_mutex_unlock(&pool.lock);
  return NULL;
}

/* Runs on g0 once the goroutine has parked, so the job cannot finish and
 * ready the goroutine before its context is saved. */
static void submit_after_park(goro__g *g, void *arg) {
  job *j = arg;
  (void)g;

  pthread_mutex_lock(&pool.lock);
  j->next = NULL;
  if (pool.tail)
    pool.tail->next = j;
  else
    pool.head = j;
  pool.tail = j;
  if (pool.idle == 0 && pool.threads < MAX_THREADS &&
      pthread_create(&pool.ids[pool.threads], NULL, pool_main, NULL) == 0)
    pool.threads++;
  pthread_cond_signal(&pool.work);
  pthread_mutex_unlock(&pool.lock);
  /* With no thread at all (creation failed and none exists), the job waits
   * for the next submission to start one. */
}

int goro_run_blocking(goro_fn fn, void *arg) {
  goro__g *g = goro__getg();

  if (!fn)
    return GORO_EINVAL;
  if (!g) {
    fn(arg);
    return 0;
  }
  job j = {.fn = fn, .arg = arg, .g = g};
  goro__park(submit_after_park, &j);
  return 0;
}

void goro__blocking_fini(void) {
  pthread_mutex_lock(&pool.lock);
  pool.stop = true;
  pthread_cond_broadcast(&pool.work);
  int threads = pool.threads;
  pthread_mutex_unlock(&pool.lock);

  for (int i = 0; i < threads; i++)
    pthread_join(pool.ids[i], NULL);

  pthread_mutex_lock(&pool.lock);
  pool.threads = 0;
  pool.head = pool.tail = NULL;
  pool.stop = false;
  pthread_mutex_unlock(&pool.lock);
}
