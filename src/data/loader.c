/* The prefetching training loader: worker threads make whole batches into a
 * ring of preallocated slots, ahead of the trainer, and mp_loader_next hands
 * them out strictly in order. Batch k after a (re)start is made by whichever
 * worker claims it first, but its bytes depend only on (seed, epoch, step,
 * sample) (sampler.c), so the thread count and queue depth never show.
 *
 * Queue bookkeeping (all under the mutex), batch numbers counted from the
 * last seek: `claim` is the next batch a worker may take, `released` the
 * oldest batch whose slot is still in use (handed out or queued), and a
 * worker may take batch k only while k < released + slots. The batch handed
 * out last stays valid until the next call, so its slot is released then;
 * there is one slot more than the queue depth, so that `queue_depth`
 * batches are made ahead while the caller works on its batch. A
 * seek bumps the generation, waits for the batches in hand (workers abandon
 * them at the next sample boundary) and restarts the counters. */
#include "data/loader_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define MP_LD_MAX_WORKERS 256
#define MP_LD_MAX_QUEUE 1024

typedef struct {
    mp_batch_t b;
    int ready;      /* batch `k` is complete */
    int64_t k;
    int status;     /* its status and message when a sample failed */
    char msg[512];
} mp_ld_slot_t;

struct mp_loader;

typedef struct {
    struct mp_loader *l;
    int index;
} mp_ld_worker_t;

struct mp_loader {
    mp_loader_opts_t o;
    mp_ld_conf_t cf;
    mp_cache_case_t *mapped;
    int64_t n_mapped;
    int64_t *case_index;
    int64_t img_per_sample, seg_per_sample;
    int nslots;               /* queue depth + 1 (the batch in the caller's hands); 1 without workers */
    mp_ld_slot_t *slots;
    int nworkers;
    mp_ld_scratch_t *scratch; /* one per worker, or one for the caller */
    mp_ld_worker_t *wargs;
    pthread_t *threads;
    int nthreads;             /* started */
    int sync_ok;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_ready, cv_idle;
    int stop;
    int seeking;             /* no new claims while a seek waits */
    atomic_int gen;           /* bumped by seek and free: workers abandon older work */
    int in_flight;
    int64_t claim, released, delivered;
    int held;
    int64_t start_epoch, start_step;
    atomic_llong fail_epoch, fail_step; /* test hook, -1 = none */
};

void mp_loader_opts_init(mp_loader_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->batch = 2;
    o->fg_fraction = 0.33;
    o->iters_per_epoch = 250;
    o->augment = 1;
    mp_aug_opts_init(&o->aug);
}

static int check_opts(const mp_loader_opts_t *o) {
    if (!o->cache) return mp_error_set(MP_ERR_ARG, "loader: no cache");
    if (!o->cases || o->n_cases <= 0)
        return mp_error_set(MP_ERR_ARG, "loader: no training cases (n_cases = %lld)", (long long)o->n_cases);
    for (int64_t i = 0; i < o->n_cases; i++)
        if (o->cases[i] < 0 || o->cases[i] >= o->cache->n_cases)
            return mp_error_set(MP_ERR_ARG, "loader: case %lld is %lld, the cache has %lld cases", (long long)i,
                                (long long)o->cases[i], (long long)o->cache->n_cases);
    for (int a = 0; a < 3; a++)
        if (o->patch_dhw[a] <= 0 || o->patch_dhw[a] > 4096)
            return mp_error_set(MP_ERR_ARG, "loader: patch size %d (axis %d) must be in 1..4096", o->patch_dhw[a], a);
    if (o->batch <= 0) return mp_error_set(MP_ERR_ARG, "loader: batch %d must be positive", o->batch);
    int64_t gb = o->global_batch ? o->global_batch : o->batch;
    if (gb < o->batch || o->first_sample < 0 || o->first_sample > gb - o->batch)
        return mp_error_set(MP_ERR_ARG, "loader: samples %lld..%lld do not lie in a global batch of %lld",
                            (long long)o->first_sample, (long long)(o->first_sample + o->batch - 1), (long long)gb);
    if (!(o->fg_fraction >= 0 && o->fg_fraction <= 1))
        return mp_error_set(MP_ERR_ARG, "loader: fg_fraction %g is not in [0, 1]", o->fg_fraction);
    if (o->iters_per_epoch <= 0)
        return mp_error_set(MP_ERR_ARG, "loader: iters_per_epoch %lld must be positive", (long long)o->iters_per_epoch);
    if (o->workers < 0 || o->workers > MP_LD_MAX_WORKERS)
        return mp_error_set(MP_ERR_ARG, "loader: workers %d not in 0..%d", o->workers, MP_LD_MAX_WORKERS);
    if (o->queue_depth < 0 || o->queue_depth > MP_LD_MAX_QUEUE)
        return mp_error_set(MP_ERR_ARG, "loader: queue_depth %d not in 0..%d", o->queue_depth, MP_LD_MAX_QUEUE);
    if (o->cache->plan.num_channels <= 0)
        return mp_error_set(MP_ERR_ARG, "loader: the cache's plan has %d channels", o->cache->plan.num_channels);
    return o->augment ? mp_ld_aug_check(&o->aug) : MP_OK;
}

/* Batch (epoch, step) of batch number k after the last seek. */
static void batch_key(const mp_loader_t *l, int64_t k, int64_t *epoch, int64_t *step) {
    int64_t t = l->start_step + k;
    *epoch = l->start_epoch + t / l->o.iters_per_epoch;
    *step = t % l->o.iters_per_epoch;
}

/* Fills slot `s` with batch k; returns early (result unused) when the
 * generation moves on. */
static void produce(mp_loader_t *l, mp_ld_slot_t *s, int64_t k, int gen, mp_ld_scratch_t *sc) {
    mp_batch_t *b = &s->b;
    batch_key(l, k, &b->epoch, &b->step);
    s->status = MP_OK;
    s->msg[0] = 0;
    if (b->epoch == atomic_load(&l->fail_epoch) && b->step == atomic_load(&l->fail_step)) {
        s->status = mp_error_set(MP_ERR_IO, "loader: injected failure at epoch %lld step %lld", (long long)b->epoch,
                                 (long long)b->step);
        snprintf(s->msg, sizeof s->msg, "%s", mp_error_message());
        return;
    }
    for (int i = 0; i < l->o.batch; i++) {
        if (gen >= 0 && atomic_load(&l->gen) != gen) return;
        int64_t ci = -1;
        int rc = mp_ld_make_sample(&l->cf, sc, b->img + i * l->img_per_sample, b->seg + i * l->seg_per_sample,
                                   b->epoch, b->step, l->o.first_sample + i, &ci);
        if (i < 64) b->case_index[i] = ci;
        if (rc) {
            s->status = rc;
            snprintf(s->msg, sizeof s->msg, "%s", mp_error_message());
            return;
        }
    }
}

static void *worker_main(void *arg) {
    mp_ld_worker_t *w = arg;
    mp_loader_t *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && (l->seeking || l->claim >= l->released + l->nslots)) pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->stop) break;
        int64_t k = l->claim++;
        int gen = atomic_load(&l->gen);
        mp_ld_slot_t *s = &l->slots[k % l->nslots];
        s->ready = 0;
        l->in_flight++;
        pthread_mutex_unlock(&l->mu);
        produce(l, s, k, gen, &l->scratch[w->index]);
        pthread_mutex_lock(&l->mu);
        l->in_flight--;
        if (atomic_load(&l->gen) == gen) {
            s->k = k;
            s->ready = 1;
            pthread_cond_broadcast(&l->cv_ready);
        }
        if (l->in_flight == 0) pthread_cond_broadcast(&l->cv_idle);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int alloc_slots(mp_loader_t *l) {
    uint64_t img_bytes, seg_bytes, per_slot, total;
    if (mp_mul_u64((uint64_t)l->img_per_sample * sizeof(float), (uint64_t)l->o.batch, &img_bytes) ||
        mp_mul_u64((uint64_t)l->seg_per_sample, (uint64_t)l->o.batch, &seg_bytes) ||
        (per_slot = img_bytes + seg_bytes) < img_bytes || mp_mul_u64(per_slot, (uint64_t)l->nslots, &total) ||
        total > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "loader: %d batch slots of %d x %lld voxels exceed the memory limit",
                            l->nslots, l->o.batch, (long long)l->img_per_sample);
    l->slots = mp_zalloc(sizeof *l->slots * (size_t)l->nslots);
    if (!l->slots) return mp_error_set(MP_ERR_NOMEM, "loader: out of memory");
    for (int i = 0; i < l->nslots; i++) {
        l->slots[i].b.img = mp_alloc((size_t)img_bytes);
        l->slots[i].b.seg = mp_alloc((size_t)seg_bytes);
        if (!l->slots[i].b.img || !l->slots[i].b.seg)
            return mp_error_set(MP_ERR_NOMEM, "loader: out of memory for %d batch slots", l->nslots);
    }
    return MP_OK;
}

static int map_cases(mp_loader_t *l) {
    const mp_loader_opts_t *o = &l->o;
    l->mapped = mp_zalloc(sizeof *l->mapped * (size_t)o->n_cases);
    l->case_index = mp_alloc(sizeof *l->case_index * (size_t)o->n_cases);
    if (!l->mapped || !l->case_index) return mp_error_set(MP_ERR_NOMEM, "loader: out of memory for %lld cases",
                                                          (long long)o->n_cases);
    for (int64_t i = 0; i < o->n_cases; i++) {
        int rc = mp_cache_case_map(o->cache, o->cases[i], &l->mapped[i]);
        if (rc) return mp_error_wrap(rc, "loader: training case %lld: ", (long long)i);
        l->n_mapped = i + 1;
        l->case_index[i] = o->cases[i];
        if (l->mapped[i].dim[3] != o->cache->plan.num_channels)
            return mp_error_set(MP_ERR_MISMATCH, "loader: case %s has %lld channels, the plan %d", l->mapped[i].id,
                                (long long)l->mapped[i].dim[3], o->cache->plan.num_channels);
    }
    return MP_OK;
}

static int start_threads(mp_loader_t *l) {
    if (pthread_mutex_init(&l->mu, NULL)) return mp_error_set(MP_ERR_INTERNAL, "loader: mutex init failed");
    if (pthread_cond_init(&l->cv_work, NULL) || pthread_cond_init(&l->cv_ready, NULL) ||
        pthread_cond_init(&l->cv_idle, NULL)) {
        pthread_mutex_destroy(&l->mu);
        return mp_error_set(MP_ERR_INTERNAL, "loader: condition variable init failed");
    }
    l->sync_ok = 1;
    if (l->nworkers == 0) return MP_OK;
    l->threads = mp_zalloc(sizeof *l->threads * (size_t)l->nworkers);
    l->wargs = mp_zalloc(sizeof *l->wargs * (size_t)l->nworkers);
    if (!l->threads || !l->wargs) return mp_error_set(MP_ERR_NOMEM, "loader: out of memory");
    for (int i = 0; i < l->nworkers; i++) {
        l->wargs[i].l = l;
        l->wargs[i].index = i;
        if (pthread_create(&l->threads[i], NULL, worker_main, &l->wargs[i]))
            return mp_error_set(MP_ERR_INTERNAL, "loader: cannot start worker thread %d", i);
        l->nthreads = i + 1;
    }
    return MP_OK;
}

int mp_loader_create(mp_loader_t **out, const mp_loader_opts_t *o) {
    *out = NULL;
    if (!o) return mp_error_set(MP_ERR_ARG, "loader: no options");
    int rc = check_opts(o);
    if (rc) return rc;
    mp_loader_t *l = mp_zalloc(sizeof *l);
    if (!l) return mp_error_set(MP_ERR_NOMEM, "loader: out of memory");
    l->o = *o;
    if (!l->o.global_batch) l->o.global_batch = o->batch;
    if (!o->augment) mp_aug_opts_none(&l->o.aug);
    atomic_init(&l->gen, 0);
    atomic_init(&l->fail_epoch, -1);
    atomic_init(&l->fail_step, -1);
    l->nworkers = o->workers;
    int depth = o->queue_depth > 0 ? o->queue_depth : (o->workers > 0 ? 2 * o->workers : 1);
    l->nslots = o->workers > 0 ? depth + 1 : 1;
    int p[3] = {o->patch_dhw[2], o->patch_dhw[1], o->patch_dhw[0]};
    l->seg_per_sample = (int64_t)p[0] * p[1] * p[2];
    l->img_per_sample = l->seg_per_sample * o->cache->plan.num_channels;
    if ((rc = map_cases(l)) || (rc = alloc_slots(l))) goto fail;
    mp_ld_conf_t *cf = &l->cf;
    cf->cases = l->mapped;
    cf->case_index = l->case_index;
    cf->n_cases = o->n_cases;
    memcpy(cf->p, p, sizeof cf->p);
    cf->channels = o->cache->plan.num_channels;
    /* Python's round (half to even), as nnU-Net */
    cf->fg_first = (int64_t)nearbyint((double)l->o.global_batch * (1.0 - o->fg_fraction));
    cf->seed = o->seed;
    cf->augment = o->augment;
    cf->aug = l->o.aug;
    int ns = l->nworkers > 0 ? l->nworkers : 1;
    l->scratch = mp_zalloc(sizeof *l->scratch * (size_t)ns);
    if (!l->scratch) {
        rc = mp_error_set(MP_ERR_NOMEM, "loader: out of memory");
        goto fail;
    }
    for (int i = 0; i < ns; i++)
        if ((rc = mp_ld_scratch_init(&l->scratch[i], p, o->augment, &l->o.aug))) goto fail;
    if ((rc = start_threads(l))) goto fail;
    *out = l;
    return MP_OK;
fail:
    mp_loader_free(l);
    return rc;
}

/* Stops the workers and waits for them. */
static void stop_threads(mp_loader_t *l) {
    if (!l->sync_ok) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    atomic_fetch_add(&l->gen, 1);
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nthreads; i++) pthread_join(l->threads[i], NULL);
    l->nthreads = 0;
}

void mp_loader_free(mp_loader_t *l) {
    if (!l) return;
    stop_threads(l);
    if (l->sync_ok) {
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_ready);
        pthread_cond_destroy(&l->cv_idle);
        pthread_mutex_destroy(&l->mu);
    }
    if (l->slots)
        for (int i = 0; i < l->nslots; i++) {
            mp_free(l->slots[i].b.img);
            mp_free(l->slots[i].b.seg);
        }
    mp_free(l->slots);
    if (l->scratch)
        for (int i = 0; i < (l->nworkers > 0 ? l->nworkers : 1); i++) mp_ld_scratch_deinit(&l->scratch[i]);
    mp_free(l->scratch);
    for (int64_t i = 0; i < l->n_mapped; i++) mp_cache_case_unmap(&l->mapped[i]);
    mp_free(l->mapped);
    mp_free(l->case_index);
    mp_free(l->threads);
    mp_free(l->wargs);
    mp_free(l);
}

int mp_loader_seek(mp_loader_t *l, int64_t epoch, int64_t step) {
    if (!l) return mp_error_set(MP_ERR_ARG, "loader: NULL");
    if (epoch < 0 || step < 0 || step >= l->o.iters_per_epoch)
        return mp_error_set(MP_ERR_ARG, "loader: cannot seek to epoch %lld step %lld (%lld steps per epoch)",
                            (long long)epoch, (long long)step, (long long)l->o.iters_per_epoch);
    pthread_mutex_lock(&l->mu);
    atomic_fetch_add(&l->gen, 1);
    l->seeking = 1;
    while (l->in_flight > 0) pthread_cond_wait(&l->cv_idle, &l->mu);
    l->seeking = 0;
    for (int i = 0; i < l->nslots; i++) l->slots[i].ready = 0;
    l->start_epoch = epoch;
    l->start_step = step;
    l->claim = l->released = l->delivered = 0;
    l->held = 0;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return MP_OK;
}

int mp_loader_next(mp_loader_t *l, const mp_batch_t **batch, double *wait_s) {
    if (batch) *batch = NULL;
    if (wait_s) *wait_s = 0;
    if (!l || !batch) return mp_error_set(MP_ERR_ARG, "loader: NULL argument");
    int64_t k;
    mp_ld_slot_t *s;
    double t0 = mp_time_now();
    pthread_mutex_lock(&l->mu);
    if (l->held) { /* the caller is done with the previous batch */
        l->released = l->delivered;
        l->held = 0;
        pthread_cond_broadcast(&l->cv_work);
    }
    k = l->delivered;
    s = &l->slots[k % l->nslots];
    if (l->nworkers == 0) {
        pthread_mutex_unlock(&l->mu);
        produce(l, s, k, -1, &l->scratch[0]);
        pthread_mutex_lock(&l->mu);
    } else {
        while (!(s->ready && s->k == k)) pthread_cond_wait(&l->cv_ready, &l->mu);
        s->ready = 0;
    }
    l->delivered = k + 1;
    l->held = 1;
    pthread_mutex_unlock(&l->mu);
    if (wait_s) *wait_s = mp_time_now() - t0;
    if (s->status) return mp_error_set(s->status, "%s", s->msg);
    *batch = &s->b;
    return MP_OK;
}

int mp_loader_sample(const mp_loader_t *l, float *img, uint8_t *seg, int64_t epoch, int64_t step, int64_t sample,
                     int64_t *case_index) {
    if (!l || !img || !seg) return mp_error_set(MP_ERR_ARG, "loader: NULL argument");
    if (sample < 0 || sample >= l->o.global_batch)
        return mp_error_set(MP_ERR_ARG, "loader: sample %lld outside the global batch of %lld", (long long)sample,
                            (long long)l->o.global_batch);
    mp_ld_scratch_t sc;
    int rc = mp_ld_scratch_init(&sc, l->cf.p, l->cf.augment, &l->cf.aug);
    if (rc) return rc;
    rc = mp_ld_make_sample(&l->cf, &sc, img, seg, epoch, step, sample, case_index);
    mp_ld_scratch_deinit(&sc);
    return rc;
}

void mp_ld_inject_failure(mp_loader_t *l, int64_t epoch, int64_t step) {
    atomic_store(&l->fail_epoch, epoch);
    atomic_store(&l->fail_step, step);
}

int mp_ld_ready_count(mp_loader_t *l) {
    int n = 0;
    pthread_mutex_lock(&l->mu);
    for (int i = 0; i < l->nslots; i++) n += l->slots[i].ready;
    pthread_mutex_unlock(&l->mu);
    return n;
}
