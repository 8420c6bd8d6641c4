/*
 * pool.c: goro_pool, a per-worker cache of same-sized objects (Go's
 * sync.Pool).
 *
 * Each pool has one small stack of objects per P, a shared list for
 * overflow and for threads without a P, and a victim list. A goroutine
 * cannot move to another worker between goro__getp_nopark() and the end of
 * get or put (goro has no preemption and these functions never park), so a
 * P's stack is touched only by that P's thread and needs no lock.
 *
 * goro_gc ages pools without touching the per-P stacks: it bumps the pool's
 * generation, and the next get or put on each P moves that P's objects to
 * the victim list first. The previous victims are freed at that cycle, so
 * an object survives one cycle unused before it goes back to malloc, as in
 * Go since 1.13. A P that never uses the pool again keeps at most
 * POOL_LOCAL_CAP objects until goro_pool_free.
 */
#include <stdlib.h>
#include <string.h>

#include "sched.h"

#define POOL_LOCAL_CAP 64

typedef struct pool_node {
  struct pool_node *next;
} pool_node;

typedef struct pool_local {
  uint64_t generation; /* the pool generation these objects belong to */
  int count;
  void *objects[POOL_LOCAL_CAP];
} pool_local;

struct goro_pool {
  size_t obj_size;
  uint64_t generation;                 /* bumped by each goro_gc cycle */
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

static void push_list(goro_pool *pool, pool_node **list, pool_node *first, pool_node *last) {
  goro__spin_lock(&pool->shared_lock);
  last->next = *list;
  *list = first;
  goro__spin_unlock(&pool->shared_lock);
}

/* Returns this P's stack of the pool, emptied into the victim list first if
 * a cycle has aged the pool since this P last used it; NULL without a P. */
static pool_local *local_of(goro_pool *pool) {
  goro__p *p = goro__getp_nopark();

  if (!p)
    return NULL;
  pool_local *local = pool->locals[p->id];
  if (!local) {
    local = calloc(1, sizeof *local);
    if (!local)
      return NULL;
    local->generation = __atomic_load_n(&pool->generation, __ATOMIC_ACQUIRE);
    /* Only this P installs its own stack; goro_pool_free reads it later. */
    __atomic_store_n(&pool->locals[p->id], local, __ATOMIC_RELEASE);
  }

  uint64_t generation = __atomic_load_n(&pool->generation, __ATOMIC_ACQUIRE);
  if (local->generation != generation) {
    local->generation = generation;
    if (local->count) {
      pool_node *first = local->objects[0], *last = first;
      for (int i = 1; i < local->count; i++) {
        last->next = local->objects[i];
        last = last->next;
      }
      local->count = 0;
      push_list(pool, &pool->victims, first, last);
    }
  }
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
  void *obj;

  if (!pool)
    return NULL;
  pool_local *local = local_of(pool);
  if (local && local->count)
    return local->objects[--local->count];
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
  if (local && local->count < POOL_LOCAL_CAP) {
    local->objects[local->count++] = obj;
    return 0;
  }
  push_list(pool, &pool->shared, obj, obj);
  return 0;
}

/* Ages every pool: frees its victims, makes its shared objects the new
 * victims and tells each P to move its own objects there at its next use.
 * Called once per goro_gc cycle. */
void goro__pool_cycle(void) {
  goro__spin_lock(&pools_lock);
  for (goro_pool *pool = pools; pool; pool = pool->next_pool) {
    goro__spin_lock(&pool->shared_lock);
    pool_node *old_victims = pool->victims;
    pool->victims = pool->shared;
    pool->shared = NULL;
    __atomic_add_fetch(&pool->generation, 1, __ATOMIC_RELEASE);
    goro__spin_unlock(&pool->shared_lock);
    free_list(old_victims);
  }
  goro__spin_unlock(&pools_lock);
}
