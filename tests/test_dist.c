/* Distributed-training building blocks in one process: the size-1 world
 * without MPI, the gradient buckets (any report order, start order, errors),
 * the U-Net's gradient hook (every range once, after it is final), loss
 * scaling through the network, and the dynamic loss scaler.
 * The 2-rank checks are test_dist_mpi.c, run under mpirun by tests/py/test_mpi.py. */
#include "dist_util.h"
#include "harness.h"
#include "medpipe/dist.h"
#include "medpipe/medpipe.h"

#include <float.h>

static void test_world_single_process(void) {
    /* No launcher variables: no MPI call at all, a world of one. */
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK", "MEDPIPE_MPI"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) unsetenv(vars[i]);
    MP_CHECK_OK(mp_dist_init(NULL, NULL));
    MP_CHECK_OK(mp_dist_init(NULL, NULL)); /* second call: no-op */
    MP_CHECK(!mp_dist_is_mpi());
    MP_CHECK(mp_dist_rank() == 0 && mp_dist_size() == 1);
    MP_CHECK(mp_dist_local_rank() == 0 && mp_dist_local_size() == 1);
    MP_CHECK(mp_dist_threads_per_rank() == mp_cpu_count());
    MP_CHECK_OK(mp_dist_barrier());
    float f[3] = {1.5f, -2, 3};
    double d[2] = {0.25, 7};
    MP_CHECK_OK(mp_dist_bcast_f32(f, 3));
    MP_CHECK_OK(mp_dist_allreduce_f64_sum(d, 2));
    MP_CHECK(f[0] == 1.5f && f[1] == -2 && f[2] == 3 && d[0] == 0.25 && d[1] == 7);
    MP_CHECK(mp_dist_bcast_f32(f, -1) == MP_ERR_ARG);
    MP_CHECK(mp_dist_allreduce_f64_sum(NULL, 2) == MP_ERR_ARG);
    MP_CHECK(mp_dist_abort("test: single process abort returns") == MP_ERR_INTERNAL);
    MP_CHECK(strstr(mp_error_message(), "single process abort") != NULL);
    MP_CHECK_OK(mp_dist_finalize());
    MP_CHECK(mp_dist_size() == 1);
    MP_CHECK_OK(mp_dist_init(NULL, NULL));
}

/* After each report, the started buckets must be exactly the longest run of
 * complete buckets ending at the last one. */
static int expected_started(const unsigned char *covered, int64_t n, int64_t be, int b) {
    int nb = (int)((n + be - 1) / be);
    for (int k = nb - 1; k >= b; k--)
        for (int64_t i = (int64_t)k * be; i < n && i < (int64_t)(k + 1) * be; i++)
            if (!covered[i]) return 0;
    return 1;
}

static void test_grad_buckets_any_order(void) {
    enum { N = 1000 };
    float *g = calloc(N, sizeof *g), *want = calloc(N, sizeof *want);
    unsigned char *cov = calloc(N, 1);
    dist_range_t *r = calloc(N, sizeof *r);
    MP_CHECK(g && want && cov && r);
    mp_dist_grad_t dg;
    MP_CHECK_OK(mp_dist_grad_init(&dg, g, N, 64 * sizeof(float))); /* 16 buckets, the last of 40 */
    MP_CHECK(dg.nbuckets == 16 && dg.bucket_elems == 64);
    for (int step = 0; step < 6; step++) {
        mp_rng_t rng;
        mp_rng_init(&rng, 99, (uint64_t)step);
        for (int i = 0; i < N; i++) g[i] = want[i] = (float)(i % 37) - 0.5f * (float)step;
        memset(cov, 0, N);
        int k = dist_random_ranges(r, N, step < 3 ? 150 : 7, &rng);
        for (int j = 0; j < k; j++) {
            MP_CHECK_OK(mp_dist_grad_ready(&dg, r[j].off, r[j].count));
            memset(cov + r[j].off, 1, (size_t)r[j].count);
            for (int b = 0; b < dg.nbuckets; b++)
                MP_CHECKF(dg.started[b] == expected_started(cov, N, 64, b), "step %d report %d bucket %d", step, j, b);
        }
        MP_CHECK(dg.early_now == dg.nbuckets);
        MP_CHECK_OK(mp_dist_grad_wait(&dg));
        MP_CHECK(dg.early == dg.nbuckets && dg.next == dg.nbuckets - 1);
        MP_CHECK(memcmp(g, want, sizeof(float) * N) == 0); /* the mean over one rank */
    }
    mp_dist_grad_deinit(&dg);
    free(g), free(want), free(cov), free(r);
}

static void test_grad_bucket_errors(void) {
    float g[100] = {0};
    mp_dist_grad_t dg;
    MP_CHECK(mp_dist_grad_init(&dg, NULL, 10, 0) == MP_ERR_ARG);
    MP_CHECK_OK(mp_dist_grad_init(&dg, g, 100, 0)); /* default: one 25 MiB bucket */
    MP_CHECK(dg.nbuckets == 1);
    mp_dist_grad_deinit(&dg);
    MP_CHECK_OK(mp_dist_grad_init(&dg, g, 100, 40)); /* 10 buckets of 10 */
    MP_CHECK(mp_dist_grad_ready(&dg, -1, 2) == MP_ERR_ARG);
    MP_CHECK(mp_dist_grad_ready(&dg, 95, 6) == MP_ERR_ARG);
    MP_CHECK(mp_dist_grad_ready(&dg, INT64_MAX, INT64_MAX) == MP_ERR_ARG);
    MP_CHECK_OK(mp_dist_grad_ready(&dg, 0, 0));
    MP_CHECK_OK(mp_dist_grad_ready(&dg, 10, 15));
    MP_CHECK(mp_dist_grad_ready(&dg, 24, 2) == MP_ERR_ARG); /* 24 was reported */
    MP_CHECK(strstr(mp_error_message(), "already reported") != NULL);
    MP_CHECK(dg.filled[2] == 5 && dg.early_now == 0);      /* a refused range changes nothing */
    MP_CHECK_OK(mp_dist_grad_ready(&dg, 90, 10));
    MP_CHECK(dg.early_now == 1 && dg.started[9]);
    MP_CHECK(mp_dist_grad_ready(&dg, 95, 1) == MP_ERR_ARG); /* its bucket is already on its way */
    /* Unreported ranges are reduced at wait: still a complete, valid step. */
    MP_CHECK_OK(mp_dist_grad_wait(&dg));
    MP_CHECK(dg.early == 1);
    for (int b = 0; b < dg.nbuckets; b++) MP_CHECK(!dg.started[b] && dg.filled[b] == 0);
    /* Through the hook: the first error is kept and returned by wait, once. */
    mp_dist_grad_hook(&dg, 0, 10);
    mp_dist_grad_hook(&dg, 5, 1);
    mp_dist_grad_hook(&dg, 500, 1);
    mp_error_clear();
    MP_CHECK(mp_dist_grad_wait(&dg) == MP_ERR_ARG);
    MP_CHECK(strstr(mp_error_message(), "[5, 6)") != NULL);
    MP_CHECK_OK(mp_dist_grad_wait(&dg));
    mp_dist_grad_deinit(&dg);
    MP_CHECK_OK(mp_dist_grad_init(&dg, NULL, 0, 0)); /* empty buffer: nothing to do */
    MP_CHECK(dg.nbuckets == 0);
    MP_CHECK_OK(mp_dist_grad_wait(&dg));
    mp_dist_grad_deinit(&dg);
}

/* ---- the U-Net's gradient hook ---- */
typedef struct {
    const mp_unet_t *m;
    float *seen;            /* gradient values at report time */
    unsigned char *covered; /* reports per float */
    int calls, bad_slot;
    int64_t last_off;
    mp_dist_grad_t *dg;     /* also feed the buckets when set */
} hook_log_t;

static void record_hook(void *user, int64_t off, int64_t count) {
    hook_log_t *h = user;
    const mp_unet_t *m = h->m;
    int64_t np = mp_unet_param_count(m);
    if (off < 0 || count <= 0 || off + count > np) {
        h->bad_slot = 1;
        return;
    }
    /* The range must be one tensor and its padding. */
    int ok = 0;
    for (int i = 0; i < mp_unet_n_tensors(m); i++) {
        const mp_param_info_t *p = mp_unet_tensor(m, i);
        if (p->offset == off && count >= p->count && count < p->count + 16) ok = 1;
    }
    if (!ok) h->bad_slot = 1;
    memcpy(h->seen + off, mp_unet_grads((mp_unet_t *)m) + off, (size_t)count * sizeof(float));
    for (int64_t i = off; i < off + count; i++) h->covered[i]++;
    h->calls++;
    h->last_off = off;
    if (h->dg) mp_dist_grad_hook(h->dg, off, count);
}

static void hook_case(mp_nn_engine_t engine, mp_nn_dtype_t dt, int ds) {
    mp_unet_config_t c;
    dist_tiny_config(&c, 2, engine, dt, ds);
    mp_unet_t *m = NULL;
    MP_CHECK_OK(mp_unet_create(&m, &c));
    int64_t np = mp_unet_param_count(m), vox = 16 * 16 * 16;
    float *img = malloc(sizeof(float) * 2 * vox), *seen = malloc(sizeof(float) * np);
    uint8_t *lab = malloc(2 * vox), *cov = malloc(np);
    MP_CHECK(img && seen && lab && cov);
    mp_dist_grad_t dg;
    MP_CHECK_OK(mp_dist_grad_init(&dg, mp_unet_grads(m), np, 4096));
    hook_log_t h = {.m = m, .seen = seen, .covered = cov, .dg = &dg};
    mp_unet_set_grad_hook(m, record_hook, &h);
    for (int step = 0; step < 2; step++) {
        dist_sample(img, lab, 16, 2 * step);
        dist_sample(img + vox, lab + vox, 16, 2 * step + 1);
        /* A sentinel everywhere: a range reported before it is written shows it. */
        for (int64_t i = 0; i < np; i++) mp_unet_grads(m)[i] = 12345.0f;
        memset(cov, 0, (size_t)np);
        h.calls = 0, h.bad_slot = 0;
        double loss;
        MP_CHECK_OK(mp_unet_forward_backward(m, &loss, img, lab, NULL));
        MP_CHECKF(h.calls == mp_unet_n_tensors(m), "%d reports for %d tensors", h.calls, mp_unet_n_tensors(m));
        MP_CHECK(!h.bad_slot);
        for (int64_t i = 0; i < np; i++) MP_CHECKF(cov[i] == 1, "float %lld reported %d times", (long long)i, cov[i]);
        MP_CHECK(memcmp(seen, mp_unet_grads(m), sizeof(float) * np) == 0);
        const mp_param_info_t *last = mp_unet_tensor(m, mp_unet_n_tensors(m) - 1);
        MP_CHECK(mp_unet_grads(m)[0] != 12345.0f && mp_unet_grads(m)[last->offset + last->count - 1] != 12345.0f);
        /* Reverse layer order: the input conv (weight at 0, then its bias) comes last. */
        MP_CHECK(h.last_off == mp_unet_tensor(m, 1)->offset);
        MP_CHECK(dg.early_now == dg.nbuckets); /* every bucket could start during backward */
        MP_CHECK_OK(mp_dist_grad_wait(&dg));
    }
    /* Without a hook the step is the same. */
    float *g1 = malloc(sizeof(float) * np);
    MP_CHECK(g1);
    memcpy(g1, mp_unet_grads(m), sizeof(float) * np);
    mp_unet_set_grad_hook(m, NULL, NULL);
    double loss;
    MP_CHECK_OK(mp_unet_forward_backward(m, &loss, img, lab, NULL));
    MP_CHECK(memcmp(g1, mp_unet_grads(m), sizeof(float) * np) == 0);
    fprintf(stderr, "  engine %s dtype %s ds %d: %d tensors, %lld floats, %d buckets\n", mp_unet_uses_ref(m) ? "ref" : "cpu",
            dt == MP_NN_F64 ? "f64" : "f32", ds, mp_unet_n_tensors(m), (long long)np, dg.nbuckets);
    mp_dist_grad_deinit(&dg);
    mp_unet_free(m);
    free(img), free(seen), free(lab), free(cov), free(g1);
}

static void test_grad_hook_ref(void) {
    hook_case(MP_NN_ENGINE_REF, MP_NN_F32, 0);
    if (!mp_test_cur_failed) hook_case(MP_NN_ENGINE_REF, MP_NN_F32, 1);
}
static void test_grad_hook_ref_f64(void) { hook_case(MP_NN_ENGINE_REF, MP_NN_F64, 0); }
static void test_grad_hook_auto(void) {
    hook_case(MP_NN_ENGINE_AUTO, MP_NN_F32, 0);
    if (!mp_test_cur_failed) hook_case(MP_NN_ENGINE_AUTO, MP_NN_F32, 1);
}

/* The loss scale multiplies every gradient by exactly 2^k; unscaling gives
 * the unscaled step's gradient back bit for bit. */
static void test_loss_scale_through_unet(void) {
    for (int e = 0; e < 2; e++) {
        mp_unet_config_t c;
        dist_tiny_config(&c, 1, e ? MP_NN_ENGINE_AUTO : MP_NN_ENGINE_REF, MP_NN_F32, 1);
        mp_unet_t *m = NULL;
        MP_CHECK_OK(mp_unet_create(&m, &c));
        int64_t np = mp_unet_param_count(m), vox = 16 * 16 * 16;
        float *img = malloc(sizeof(float) * vox), *g1 = malloc(sizeof(float) * np);
        uint8_t *lab = malloc(vox);
        MP_CHECK(img && g1 && lab);
        dist_sample(img, lab, 16, 7);
        double l1, l2;
        MP_CHECK_OK(mp_unet_forward_backward(m, &l1, img, lab, NULL));
        memcpy(g1, mp_unet_grads(m), sizeof(float) * np);
        mp_loss_scaler_t s;
        mp_loss_scaler_init(&s);
        mp_unet_set_loss_scale(m, s.scale);
        MP_CHECK_OK(mp_unet_forward_backward(m, &l2, img, lab, NULL));
        MP_CHECK(l1 == l2);
        float *g = mp_unet_grads(m);
        int64_t nz = 0;
        for (int64_t i = 0; i < np; i++) {
            MP_CHECKF(g[i] == g1[i] * 65536.0f, "grad %lld: %g vs %g x 2^16", (long long)i, g[i], g1[i]);
            nz += g1[i] != 0;
        }
        MP_CHECK(nz > np / 2);
        MP_CHECK(mp_loss_scaler_unscale_check(&s, g, np) == 1);
        MP_CHECK(memcmp(g, g1, sizeof(float) * np) == 0);
        mp_unet_free(m);
        free(img), free(g1), free(lab);
    }
}

static void test_loss_scaler(void) {
    mp_loss_scaler_t s;
    mp_loss_scaler_init(&s);
    MP_CHECK(s.scale == 65536.0 && s.growth_factor == 2.0 && s.backoff_factor == 0.5 && s.growth_interval == 2000 &&
             s.growth_tracker == 0);
    /* Hand-made gradients: scaled values come back divided exactly. */
    float g[37];
    for (int i = 0; i < 37; i++) g[i] = (float)(i - 18) * 0.75f * 65536.0f;
    MP_CHECK(mp_loss_scaler_unscale_check(&s, g, 37) == 1);
    for (int i = 0; i < 37; i++) MP_CHECK(g[i] == (float)(i - 18) * 0.75f);
    const float bad[4] = {INFINITY, -INFINITY, NAN, -NAN};
    for (int k = 0; k < 4; k++)
        for (int pos = 0; pos < 37; pos += 12) { /* first, middle, tail of the loop */
            for (int i = 0; i < 37; i++) g[i] = 1.0f;
            g[pos] = bad[k];
            MP_CHECKF(mp_loss_scaler_unscale_check(&s, g, 37) == 0, "value %d at %d", k, pos);
            MP_CHECK(g[(pos + 1) % 37] == 1.0f / 65536.0f); /* the rest is still unscaled */
        }
    /* Large finite values that overflow only when unscaled by a scale < 1. */
    mp_loss_scaler_t small = s;
    small.scale = 0.25;
    g[0] = FLT_MAX;
    MP_CHECK(mp_loss_scaler_unscale_check(&small, g, 1) == 0);
    g[0] = FLT_MAX;
    MP_CHECK(mp_loss_scaler_unscale_check(&s, g, 1) == 1);

    /* Growth after 2000 finite steps, back-off on an overflow. */
    for (int i = 0; i < 1999; i++) mp_loss_scaler_update(&s, 0);
    MP_CHECK(s.scale == 65536.0 && s.growth_tracker == 1999);
    mp_loss_scaler_update(&s, 0);
    MP_CHECK(s.scale == 131072.0 && s.growth_tracker == 0);
    for (int i = 0; i < 1500; i++) mp_loss_scaler_update(&s, 0);
    mp_loss_scaler_update(&s, 1);
    MP_CHECK(s.scale == 65536.0 && s.growth_tracker == 0);
    mp_loss_scaler_update(&s, 1);
    mp_loss_scaler_update(&s, 1);
    MP_CHECK(s.scale == 16384.0);
    for (int i = 0; i < 2000; i++) mp_loss_scaler_update(&s, 0);
    MP_CHECK(s.scale == 32768.0);
    /* Never beyond the float range. */
    s.scale = 0x1p127;
    s.growth_tracker = 1999;
    mp_loss_scaler_update(&s, 0);
    MP_CHECK(s.scale == 0x1p127 && s.growth_tracker == 0);

    /* Saved state: restored when sane, refused otherwise. */
    mp_loss_scaler_init(&s);
    MP_CHECK_OK(mp_loss_scaler_set_state(&s, 1024.0, 17));
    MP_CHECK(s.scale == 1024.0 && s.growth_tracker == 17);
    const double bad_scale[5] = {0, -1, NAN, INFINITY, 1e39};
    for (int i = 0; i < 5; i++) MP_CHECK(mp_loss_scaler_set_state(&s, bad_scale[i], 0) == MP_ERR_FORMAT);
    MP_CHECK(mp_loss_scaler_set_state(&s, 2.0, -1) == MP_ERR_FORMAT);
    MP_CHECK(mp_loss_scaler_set_state(&s, 2.0, 2000) == MP_ERR_FORMAT);
    MP_CHECK(s.scale == 1024.0 && s.growth_tracker == 17);
}

int main(void) {
    MP_RUN(test_world_single_process);
    MP_RUN(test_grad_buckets_any_order);
    MP_RUN(test_grad_bucket_errors);
    MP_RUN(test_grad_hook_ref);
    MP_RUN(test_grad_hook_ref_f64);
    MP_RUN(test_grad_hook_auto);
    MP_RUN(test_loss_scale_through_unet);
    MP_RUN(test_loss_scaler);
    mp_dist_finalize();
    return mp_test_summary();
}
