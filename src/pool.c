/*
 * pool.c: goro_pool, a per-worker cache of same-sized objects (Go's
 * sync.Pool).
 *
 * Each pool has one small stack of objects per P, a shared list for
 * overflow and for threads without a P, and a victim list. goro_gc moves
 * what the pool holds to the victim list and frees the previous victims, so
 * an object survives one cycle unused before it goes back to malloc, as in
 * Go since 1.13. A goroutine cannot be moved to another worker between
 * goro__getp() and the end of get or put (goro has no preemption and these
 * functions never park), so a P's stack is only contended by goro_gc.
 */
#include <stdlib.h>
#include <string.h>

#include "sched.h"

#define POOL_LOCAL_CAP 64

typedef struct pool_node {
  struct pool_node *next;
} pool_node;

typedef struct pool_local {
  goro__spinlock lock;
  int count;
  void *objects[POOL_LOCAL_CAP];
} pool_local;

struct goro_pool {
  size_t obj_size;
  pool_local *locals[GORO__MAX_PROCS]; /* allocated on a P's first use */
  goro__spinlock shared_lock;
  pool_node *shared;
  pool_node *victims;
  struct goro_pool *next_pool, *prev_pool;
};

static goro__spinlock pools_lock;
static goro_pool *pools;

int goro_pool_make(goro_pool **out, size_t obj_size) {
  if (!out)
    return GORO_EINVAL;
  *out = NULL;
  if (obj_size == 0 || obj_size > ((size_t)1 << 30))
    return GORO_EINVAL;

  goro_pool *pool = calloc(1, sizeof *pool);
  if (!pool)
    return GORO_ENOMEM;
  /* Free objects are linked through their first bytes. */
  pool->obj_size = obj_size < sizeof(pool_node) ? sizeof(pool_node) : obj_size;

  goro__spin_lock(&pools_lock);
  pool->next_pool = pools;
  if (pools)
    pools->prev_pool = pool;
  pools = pool;
  goro__spin_unlock(&pools_lock);
  *out = pool;
  return 0;
}

static void free_list(pool_node *node) {
  while (node) {
    pool_node *next = node->next;
    free(node);
    node = next;
  }
}

int goro_pool_free(goro_pool *pool) {
  if (!pool)
    return GORO_EINVAL;
  goro__spin_lock(&pools_lock);
  if (pool->prev_pool)
    pool->prev_pool->next_pool = pool->next_pool;
  else
    pools = pool->next_pool;
  if (pool->next_pool)
    pool->next_pool->prev_pool = pool->prev_pool;
  goro__spin_unlock(&pools_lock);

  for (int i = 0; i < GORO__MAX_PROCS; i++) {
    pool_local *local = pool->locals[i];
    if (!local)
      continue;
    for (int k = 0; k < local->count; k++)
      free(local->objects[k]);
    free(local);
  }
  free_list(pool->shared);
  free_list(pool->victims);
  free(pool);
  return 0;
}

static pool_local *local_of(goro_pool *pool) {
  goro__p *p = goro__getp();

  if (!p)
    return NULL;
  pool_local *local = __atomic_load_n(&pool->locals[p->id], __ATOMIC_ACQUIRE);
  if (local)
    return local;
  local = calloc(1, sizeof *local);
  if (!local)
    return NULL;
  /* Only this P installs its own local, so no one else races the store. */
  __atomic_store_n(&pool->locals[p->id], local, __ATOMIC_RELEASE);
  return local;
}

static void *pop_list(goro_pool *pool, pool_node **list) {
  goro__spin_lock(&pool->shared_lock);
  pool_node *node = *list;
  if (node)
    *list = node->next;
  goro__spin_unlock(&pool->shared_lock);
  return node;
}

void *goro_pool_get(goro_pool *pool) {
  void *obj = NULL;

  if (!pool)
    return NULL;
  pool_local *local = local_of(pool);
  if (local) {
    goro__spin_lock(&local->lock);
    if (local->count)
      obj = local->objects[--local->count];
    goro__spin_unlock(&local->lock);
    if (obj)
      return obj;
  }
  if (__atomic_load_n(&pool->shared, __ATOMIC_RELAXED) && (obj = pop_list(pool, &pool->shared)))
    return obj;
  if (__atomic_load_n(&pool->victims, __ATOMIC_RELAXED) && (obj = pop_list(pool, &pool->victims)))
    return obj;

  size_t size = (pool->obj_size + 15) & ~(size_t)15;
  return aligned_alloc(16, size);
}

int goro_pool_put(goro_pool *pool, void *obj) {
  if (!pool || !obj)
    return GORO_EINVAL;
  pool_local *local = local_of(pool);
  if (local) {
    bool stored = false;
    goro__spin_lock(&local->lock);
    if (local->count < POOL_LOCAL_CAP) {
      local->objects[local->count++] = obj;
      stored = true;
    }
    goro__spin_unlock(&local->lock);
    if (stored)
      return 0;
  }
  pool_node *node = obj;
  goro__spin_lock(&pool->shared_lock);
  node->next = pool->shared;
  pool->shared = node;
  goro__spin_unlock(&pool->shared_lock);
  return 0;
}

/* Moves each pool's objects to its victim list and frees the old victims.
 * Called once per goro_gc cycle. */
void goro__pool_cycle(void) {
  goro__spin_lock(&pools_lock);
  for (goro_pool *pool = pools; pool; pool = pool->next_pool) {
    pool_node *held = NULL;
    for (int i = 0; i < GORO__MAX_PROCS; i++) {
      pool_local *local = __atomic_load_n(&pool->locals[i], __ATOMIC_ACQUIRE);
      if (!local)
        continue;
      goro__spin_lock(&local->lock);
      while (local->count) {
        pool_node *node = local->objects[--local->count];
        node->next = held;
        held = node;
      }
      goro__spin_unlock(&local->lock);
    }

    goro__spin_lock(&pool->shared_lock);
    pool_node *old_victims = pool->victims;
    if (held) {
      pool_node *tail = held;
      while (tail->next)
        tail = tail->next;
      tail->next = pool->shared;
      pool->victims = held;
    } else {
      pool->victims = pool->shared;
    }
    pool->shared = NULL;
    goro__spin_unlock(&pool->shared_lock);
    free_list(old_victims);
  }
  goro__spin_unlock(&pools_lock);
}
