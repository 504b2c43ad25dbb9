/*
 * pool.c - a worker's offload thread pool (gwl_offload, gwl_background).
 *
 * Lives in a worker process only; threads are created after fork, lazily on
 * the first submission (a worker that never offloads has no extra threads).
 * The submit side and done callbacks run on the loop thread; work functions
 * run on pool threads. Completions go onto a mutex-protected list and are
 * signalled with one ev_async, so N completions in a burst cost one wakeup.
 * Pool threads block every signal: SIGTERM/SIGQUIT must reach the loop
 * thread's handler, and app code on a pool thread must not be interrupted.
 */
#include "gwl_int.h"
#include "log.h"

#include <ev.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Seam to worker.c. */
int      gwl__pool_init(struct ev_loop *loop, unsigned threads);
void     gwl__pool_done(void);
unsigned gwl__pool_pending(void);

typedef struct gwl_task_s gwl_task_t;
struct gwl_task_s {
    gwl_work_cb  work;
    gwl_done_cb  done;
    void        *arg;
    int          background;
    gwl_task_t  *next;
};

typedef struct {
    struct ev_loop *loop;          /* NULL: not in a worker */
    ev_async        wake;          /* completions are waiting in done_* */
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    gwl_task_t     *work_head, *work_tail;   /* queued, not yet picked up */
    gwl_task_t     *done_head, *done_tail;   /* finished, done() not yet run */
    pthread_t      *tids;
    unsigned        want;          /* configured size */
    unsigned        started;       /* threads running */
    int             stopping;
    /* Loop thread only. */
    unsigned        offloads;      /* submitted, done() not yet run */
    unsigned        background;    /* same, for gwl_background */
} gwl_pool_t;

static gwl_pool_t pool;

static void *pool_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.work_head == NULL && !pool.stopping)
            pthread_cond_wait(&pool.cv, &pool.mu);
        if (pool.work_head == NULL) break;           /* stopping, queue empty */
        gwl_task_t *t = pool.work_head;
        pool.work_head = t->next;
        if (pool.work_head == NULL) pool.work_tail = NULL;
        pthread_mutex_unlock(&pool.mu);

        t->work(t->arg);

        pthread_mutex_lock(&pool.mu);
        t->next = NULL;
        int was_empty = pool.done_head == NULL;
        if (pool.done_tail) pool.done_tail->next = t; else pool.done_head = t;
        pool.done_tail = t;
        /* One send per batch: the loop drains the whole list per wakeup.
         * Once stopping, the loop may be gone: nobody is listening. */
        if (was_empty && !pool.stopping) ev_async_send(pool.loop, &pool.wake);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

/* Loop thread: run done() for every finished task. */
static void pool_on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop; (void)w; (void)revents;
    pthread_mutex_lock(&pool.mu);
    gwl_task_t *t = pool.done_head;
    pool.done_head = pool.done_tail = NULL;
    pthread_mutex_unlock(&pool.mu);

    while (t != NULL) {
        gwl_task_t *next = t->next;
        /* Uncount before done(): a done() that submits again, or the drain
         * check right after, sees the true number. */
        if (t->background) pool.background--; else pool.offloads--;
        if (t->done) t->done(t->arg);
        free(t);
        t = next;
    }
}

int gwl__pool_init(struct ev_loop *loop, unsigned threads)
{
    memset(&pool, 0, sizeof(pool));
    if (pthread_mutex_init(&pool.mu, NULL) != 0 || pthread_cond_init(&pool.cv, NULL) != 0) {
        gw_error("pool: cannot initialise mutex/condvar");
        return GWL_ERROR;
    }
    pool.loop = loop;
    pool.want = threads ? threads : 4;
    ev_async_init(&pool.wake, pool_on_wake);
    ev_async_start(loop, &pool.wake);
    /* The pool must not keep ev_run() alive on its own. */
    ev_unref(loop);
    return GWL_OK;
}

/* Start the threads on first use (loop thread, pool.mu not held). */
static int pool_start_threads(void)
{
    pool.tids = calloc(pool.want, sizeof(*pool.tids));
    if (pool.tids == NULL) {
        gw_error("pool: cannot allocate %u thread ids", pool.want);
        return GWL_ERROR;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* new threads inherit it */
    for (unsigned i = 0; i < pool.want; i++) {
        int rc = pthread_create(&pool.tids[i], NULL, pool_thread, NULL);
        if (rc != 0) {
            gw_error("pool: pthread_create failed: %s (%u of %u threads running)",
                     strerror(rc), pool.started, pool.want);
            break;
        }
        pool.started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pool.started > 0 ? GWL_OK : GWL_ERROR;
}

static int pool_submit(gwl_work_cb work, gwl_done_cb done, void *arg, int background)
{
    if (pool.loop == NULL) {
        gw_error("gwl_offload/gwl_background called outside a worker");
        return GWL_ERROR;
    }
    if (work == NULL) return GWL_ERROR;
    if (pool.started == 0 && pool_start_threads() != GWL_OK) return GWL_ERROR;
    gwl_task_t *t = malloc(sizeof(*t));
    if (t == NULL) {
        gw_error("pool: out of memory for a task");
        return GWL_ERROR;
    }
    t->work = work;
    t->done = done;
    t->arg = arg;
    t->background = background;
    t->next = NULL;
    if (background) pool.background++; else pool.offloads++;

    pthread_mutex_lock(&pool.mu);
    if (pool.work_tail) pool.work_tail->next = t; else pool.work_head = t;
    pool.work_tail = t;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return GWL_OK;
}

int gwl_offload(gwl_work_cb work, gwl_done_cb done, void *arg)
{
    return pool_submit(work, done, arg, 0);
}

int gwl_background(gwl_work_cb work, gwl_done_cb done, void *arg)
{
    return pool_submit(work, done, arg, 1);
}

unsigned gwl_background_count(void)
{
    return pool.background;
}

/* Offloads and background tasks whose done() has not run yet. */
unsigned gwl__pool_pending(void)
{
    return pool.offloads + pool.background;
}

/*
 * Stop the pool at worker exit. Joins the threads only when nothing is
 * pending: a work function still running after the graceful budget ran out
 * cannot be interrupted, and the process is about to exit anyway.
 */
void gwl__pool_done(void)
{
    if (pool.loop == NULL) return;
    ev_ref(pool.loop);
    ev_async_stop(pool.loop, &pool.wake);
    if (pool.started > 0) {
        pthread_mutex_lock(&pool.mu);
        pool.stopping = 1;
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
        if (gwl__pool_pending() == 0) {
            for (unsigned i = 0; i < pool.started; i++)
                pthread_join(pool.tids[i], NULL);
            free(pool.tids);
            pthread_mutex_destroy(&pool.mu);
            pthread_cond_destroy(&pool.cv);
        }
    } else {
        free(pool.tids);
    }
    /* Tasks already done but not delivered: nobody will run done() now. */
    if (gwl__pool_pending() == 0) {
        for (gwl_task_t *t = pool.done_head, *n; t; t = n) { n = t->next; free(t); }
        pool.done_head = pool.done_tail = NULL;
    }
    pool.loop = NULL;
}
