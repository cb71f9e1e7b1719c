/* A small persistent thread pool. Work [0, n) is split into one contiguous
 * chunk per thread, boundaries fixed by (n, threads), so any reduction done per
 * chunk and combined in worker order is reproducible run to run. The caller
 * thread works as worker 0; nested calls from a worker run serially. */
#include "medpipe/core.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct mp_pool {
    int nthreads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t start_cv;
    pthread_cond_t done_cv;
    uint64_t generation; /* bumped for every job */
    int pending;         /* workers (excluding caller) still running the job */
    int stop;
    int64_t n;
    mp_range_fn fn;
    void *ctx;
};

typedef struct {
    mp_pool_t *pool;
    int index;
} worker_arg_t;

static _Thread_local int in_worker = 0;

int mp_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void run_chunk(mp_pool_t *p, int w) {
    int64_t begin = p->n * w / p->nthreads;
    int64_t end = p->n * (w + 1) / p->nthreads;
    if (end > begin) p->fn(p->ctx, begin, end, w);
}

static void *worker_main(void *argp) {
    worker_arg_t *arg = argp;
    mp_pool_t *p = arg->pool;
    int w = arg->index;
    free(arg);
    in_worker = 1;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->start_cv, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunk(p, w);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

mp_pool_t *mp_pool_create(int nthreads) {
    if (nthreads <= 0) nthreads = mp_cpu_count();
    mp_pool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = nthreads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) {
        mp_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < nthreads; i++) {
        worker_arg_t *arg = malloc(sizeof *arg);
        if (!arg) {
            p->nthreads = i;
            mp_pool_free(p);
            return NULL;
        }
        arg->pool = p;
        arg->index = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, arg) != 0) {
            free(arg);
            p->nthreads = i;
            mp_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void mp_pool_free(mp_pool_t *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->nthreads && p->threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int mp_pool_threads(const mp_pool_t *p) { return p ? p->nthreads : 1; }

void mp_pool_parallel_for(mp_pool_t *p, int64_t n, mp_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!p || p->nthreads == 1 || in_worker) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->n = n;
    p->fn = fn;
    p->ctx = ctx;
    p->pending = p->nthreads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);

    in_worker = 1;
    run_chunk(p, 0);
    in_worker = 0;

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
