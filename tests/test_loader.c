/* Training loader: batches are the same bytes for any worker count, queue
 * depth, after a seek and through mp_loader_sample; forced samples hold
 * foreground; unaugmented patches are exact crops (zero padded past the
 * border); a right-angle rotation is an exact index permutation; labels stay
 * within the labels that exist; mirroring flips image and label together;
 * intensity augmentations stay finite and keep what they promise; bad
 * options and worker failures come back as errors with messages. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "data/loader_internal.h"

#include <ftw.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static char g_root[512], g_cache_dir[700];
static mp_cache_t g_cache;
static int64_t g_cases[3] = {0, 1, 2};
static uint8_t g_labels_present[256];

/* 3 synthetic cases of 32x32x24 voxels, 2 classes, cached at their own spacing. */
static int build_cache(void) {
    char ds_dir[700];
    snprintf(ds_dir, sizeof ds_dir, "%s/ds", g_root);
    snprintf(g_cache_dir, sizeof g_cache_dir, "%s/cache", g_root);
    mp_synth_params_t sp;
    mp_synth_params_init(&sp);
    sp.size[0] = 32;
    sp.size[1] = 32;
    sp.size[2] = 24;
    sp.spacing[0] = sp.spacing[1] = 6;
    sp.spacing[2] = 8;
    sp.classes = 2;
    sp.train_cases = 3;
    sp.test_cases = 0;
    int rc = mp_synth_dataset_write(ds_dir, &sp, NULL, 1, NULL, NULL);
    mp_dataset_t *ds = NULL;
    mp_fingerprint_t fp;
    mp_plan_t pl;
    if (rc || (rc = mp_dataset_read(&ds, ds_dir))) return rc;
    if (!(rc = mp_fingerprint_compute(&fp, ds, 3, NULL, NULL, NULL, NULL))) {
        rc = mp_plan_from_fingerprint(&pl, &fp, ds, 1);
        mp_fingerprint_deinit(&fp);
    }
    if (!rc) {
        for (int a = 0; a < 3; a++) pl.target_spacing[a] = sp.spacing[a];
        pl.fg_samples_per_class = 50;
        rc = mp_cache_build(g_cache_dir, ds, &pl, NULL, NULL, NULL);
    }
    mp_dataset_free(ds);
    if (!rc) rc = mp_cache_open(&g_cache, g_cache_dir);
    for (int64_t k = 0; !rc && k < g_cache.n_cases; k++) {
        mp_cache_case_t cc;
        if ((rc = mp_cache_case_map(&g_cache, k, &cc))) break;
        for (int64_t i = 0; i < cc.dim[0] * cc.dim[1] * cc.dim[2]; i++) g_labels_present[cc.seg[i]] = 1;
        mp_cache_case_unmap(&cc);
    }
    return rc;
}

/* Options every test starts from: patch (D, H, W) = (12, 20, 20). */
static void base_opts(mp_loader_opts_t *o) {
    mp_loader_opts_init(o);
    o->cache = &g_cache;
    o->cases = g_cases;
    o->n_cases = 3;
    o->batch = 3;
    o->patch_dhw[0] = 12;
    o->patch_dhw[1] = 20;
    o->patch_dhw[2] = 20;
    o->iters_per_epoch = 4;
    o->seed = 11;
}

/* Every augmentation likely, elastic included. */
static void heavy_aug(mp_aug_opts_t *a) {
    mp_aug_opts_init(a);
    a->p_rotation = a->p_scale = a->p_elastic = 0.5;
    a->p_noise = a->p_blur = a->p_brightness = a->p_contrast = a->p_lowres = 0.5;
    a->p_gamma_inv = a->p_gamma = 0.5;
    a->elastic_sigma[0] = 3;
    a->elastic_sigma[1] = 5;
}

typedef struct {
    int64_t n, img_bytes, seg_bytes;
    uint8_t *data; /* n batches: image then labels */
    int64_t case_index[32][64];
} run_t;

static int run_batches(const mp_loader_opts_t *o, int64_t n, run_t *out) {
    int64_t pv = (int64_t)o->patch_dhw[0] * o->patch_dhw[1] * o->patch_dhw[2];
    memset(out, 0, sizeof *out);
    out->n = n;
    out->img_bytes = pv * o->batch * g_cache.plan.num_channels * 4;
    out->seg_bytes = pv * o->batch;
    out->data = malloc((size_t)(n * (out->img_bytes + out->seg_bytes)));
    mp_loader_t *l = NULL;
    int rc = mp_loader_create(&l, o);
    for (int64_t k = 0; !rc && k < n; k++) {
        const mp_batch_t *b = NULL;
        double w;
        rc = mp_loader_next(l, &b, &w);
        if (rc) break;
        uint8_t *dst = out->data + k * (out->img_bytes + out->seg_bytes);
        memcpy(dst, b->img, (size_t)out->img_bytes);
        memcpy(dst + out->img_bytes, b->seg, (size_t)out->seg_bytes);
        memcpy(out->case_index[k], b->case_index, sizeof b->case_index);
        if (b->epoch != k / o->iters_per_epoch || b->step != k % o->iters_per_epoch || w < 0) rc = MP_ERR_INTERNAL;
    }
    mp_loader_free(l);
    return rc;
}

static int runs_equal(const run_t *a, const run_t *b) {
    return a->n == b->n &&
           memcmp(a->data, b->data, (size_t)(a->n * (a->img_bytes + a->seg_bytes))) == 0 &&
           memcmp(a->case_index, b->case_index, sizeof a->case_index) == 0;
}

static void test_same_bytes_any_workers(void) {
    mp_loader_opts_t o;
    base_opts(&o);
    heavy_aug(&o.aug);
    run_t ref, r;
    o.workers = 0;
    o.queue_depth = 1;
    MP_CHECK_OK(run_batches(&o, 9, &ref));
    static const int cfg[][2] = {{1, 1}, {1, 4}, {2, 0}, {3, 1}, {3, 4}};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        o.workers = cfg[i][0];
        o.queue_depth = cfg[i][1];
        MP_CHECK_OK(run_batches(&o, 9, &r));
        int eq = runs_equal(&ref, &r);
        free(r.data);
        MP_CHECKF(eq, "workers %d queue %d differ from the caller's thread", cfg[i][0], cfg[i][1]);
    }
    /* mp_loader_sample gives each sample alone */
    mp_loader_t *l = NULL;
    MP_CHECK_OK(mp_loader_create(&l, &o));
    int64_t pv = 12 * 20 * 20, nc = g_cache.plan.num_channels;
    float *img = malloc(sizeof(float) * (size_t)(pv * nc));
    uint8_t *seg = malloc((size_t)pv);
    int ok = 1;
    for (int64_t k = 0; k < 9 && ok; k++)
        for (int s = 0; s < 3 && ok; s++) {
            int64_t ci = -1;
            const uint8_t *b = ref.data + k * (ref.img_bytes + ref.seg_bytes);
            ok = mp_loader_sample(l, img, seg, k / 4, k % 4, s, &ci) == 0 &&
                 memcmp(img, b + s * pv * nc * 4, (size_t)(pv * nc * 4)) == 0 &&
                 memcmp(seg, b + ref.img_bytes + s * pv, (size_t)pv) == 0 && ci == ref.case_index[k][s];
        }
    mp_loader_free(l);
    free(img);
    free(seg);
    /* another seed gives other batches */
    o.seed = 12;
    MP_CHECK_OK(run_batches(&o, 9, &r));
    int differ = !runs_equal(&ref, &r);
    free(r.data);
    free(ref.data);
    MP_CHECK(ok);
    MP_CHECK(differ);
}

static void test_seek(void) {
    mp_loader_opts_t o;
    base_opts(&o);
    heavy_aug(&o.aug);
    run_t ref;
    MP_CHECK_OK(run_batches(&o, 10, &ref));
    int64_t bb = ref.img_bytes + ref.seg_bytes;
    for (int workers = 0; workers <= 2; workers++) {
        o.workers = workers;
        o.queue_depth = 3;
        mp_loader_t *l = NULL;
        MP_CHECK_OK(mp_loader_create(&l, &o));
        const mp_batch_t *b = NULL;
        int ok = 1;
        /* seek before the first batch, mid-run, backwards */
        static const int64_t to[][3] = {{1, 2, 3}, {0, 1, 2}, {2, 1, 1}, {0, 0, 4}};
        for (int j = 0; j < 4 && ok; j++) {
            ok = mp_loader_seek(l, to[j][0], to[j][1]) == 0;
            for (int64_t n = 0; n < to[j][2] && ok; n++) {
                int64_t k = to[j][0] * 4 + to[j][1] + n;
                ok = mp_loader_next(l, &b, NULL) == 0 && b->epoch == k / 4 && b->step == k % 4 &&
                     memcmp(b->img, ref.data + k * bb, (size_t)ref.img_bytes) == 0 &&
                     memcmp(b->seg, ref.data + k * bb + ref.img_bytes, (size_t)ref.seg_bytes) == 0;
            }
        }
        MP_CHECK(mp_loader_seek(l, 0, 4) == MP_ERR_ARG);
        mp_loader_free(l);
        MP_CHECKF(ok, "workers %d: batch after seek differs", workers);
    }
    free(ref.data);
}

/* queue_depth batches are made ahead while the caller holds its batch. */
static void test_prefetch_depth(void) {
    for (int depth = 1; depth <= 3; depth += 2) {
        mp_loader_opts_t o;
        base_opts(&o);
        o.workers = 2;
        o.queue_depth = depth;
        mp_loader_t *l = NULL;
        MP_CHECK_OK(mp_loader_create(&l, &o));
        const mp_batch_t *b = NULL;
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        int ready = 0;
        for (int t = 0; t < 2000 && ready < depth; t++) {
            usleep(5000);
            ready = mp_ld_ready_count(l);
        }
        usleep(20000);
        ready = mp_ld_ready_count(l);
        MP_CHECK(b->epoch == 0 && b->step == 0); /* still the held batch */
        mp_loader_free(l);
        MP_CHECKF(ready == depth, "queue depth %d: %d batches ready ahead", depth, ready);
    }
}

static void test_forced_foreground(void) {
    mp_loader_opts_t o;
    base_opts(&o);
    o.augment = 0;
    o.batch = 4;
    o.fg_fraction = 0.5; /* samples 2 and 3 forced */
    o.patch_dhw[0] = 4;
    o.patch_dhw[1] = 6;
    o.patch_dhw[2] = 6;
    o.workers = 2;
    mp_loader_t *l = NULL;
    MP_CHECK_OK(mp_loader_create(&l, &o));
    int64_t pv = 4 * 6 * 6, with_fg[4] = {0, 0, 0, 0};
    const int steps = 40;
    for (int k = 0; k < steps; k++) {
        const mp_batch_t *b = NULL;
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        for (int s = 0; s < 4; s++) {
            int fg = 0;
            for (int64_t i = 0; i < pv; i++) fg |= b->seg[s * pv + i] > 0;
            with_fg[s] += fg;
        }
    }
    mp_loader_free(l);
    MP_CHECK(with_fg[2] == steps && with_fg[3] == steps);
    MP_CHECKF(with_fg[0] < steps || with_fg[1] < steps, "unforced small patches always hit foreground (%lld, %lld)",
              (long long)with_fg[0], (long long)with_fg[1]);
}

/* The crop by definition, one voxel at a time. */
static void naive_crop(const mp_cache_case_t *cc, const int64_t lo[3], const int p[3], float *img, uint8_t *seg) {
    int64_t pv = (int64_t)p[0] * p[1] * p[2], nx = cc->dim[0], ny = cc->dim[1], nz = cc->dim[2];
    for (int64_t c = 0; c <= cc->dim[3]; c++)
        for (int64_t z = 0; z < p[2]; z++)
            for (int64_t y = 0; y < p[1]; y++)
                for (int64_t x = 0; x < p[0]; x++) {
                    int64_t X = lo[0] + x, Y = lo[1] + y, Z = lo[2] + z, o = (z * p[1] + y) * p[0] + x;
                    int in = X >= 0 && X < nx && Y >= 0 && Y < ny && Z >= 0 && Z < nz;
                    int64_t i = (Z * ny + Y) * nx + X;
                    if (c < cc->dim[3]) img[c * pv + o] = in ? cc->img[c * nx * ny * nz + i] : 0;
                    else seg[o] = in ? cc->seg[i] : 0;
                }
}

static void test_unaugmented_is_exact_crop(void) {
    mp_loader_opts_t o;
    base_opts(&o);
    o.augment = 0;
    o.patch_dhw[0] = 30; /* D larger than the case: padded */
    o.patch_dhw[1] = 20;
    o.patch_dhw[2] = 36; /* W too */
    o.fg_fraction = 0.34;
    mp_loader_t *l = NULL;
    MP_CHECK_OK(mp_loader_create(&l, &o));
    int p[3] = {36, 20, 30};
    int64_t pv = 36 * 20 * 30, nc = g_cache.plan.num_channels;
    float *want = malloc(sizeof(float) * (size_t)(pv * nc));
    uint8_t *wseg = malloc((size_t)pv);
    int padded = 0;
    for (int k = 0; k < 6; k++) {
        const mp_batch_t *b = NULL;
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        for (int s = 0; s < 3; s++) {
            /* the location drawn by the sample's stream */
            mp_rng_t r;
            mp_rng_init(&r, o.seed, mp_rng_stream_id((uint64_t)b->epoch, (uint64_t)b->step, (uint64_t)s));
            int64_t ci = (int64_t)mp_rng_below(&r, 3), lo[3], v[3];
            MP_CHECK(b->case_index[s] == ci);
            mp_cache_case_t cc;
            MP_CHECK_OK(mp_cache_case_map(&g_cache, ci, &cc));
            mp_ld_pick_location(&r, &cc, p, s >= 2, lo, v);
            naive_crop(&cc, lo, p, want, wseg);
            padded |= lo[2] < 0 && lo[0] < 0;
            if (s == 2) /* forced: the chosen voxel is in the patch, of a foreground class */
                MP_CHECK(v[0] >= lo[0] && v[0] < lo[0] + p[0] && v[1] >= lo[1] && v[1] < lo[1] + p[1] &&
                         v[2] >= lo[2] && v[2] < lo[2] + p[2] &&
                         cc.seg[(v[2] * cc.dim[1] + v[1]) * cc.dim[0] + v[0]] > 0);
            mp_cache_case_unmap(&cc);
            MP_CHECK(memcmp(want, b->img + s * pv * nc, sizeof(float) * (size_t)(pv * nc)) == 0);
            MP_CHECK(memcmp(wseg, b->seg + s * pv, (size_t)pv) == 0);
        }
    }
    mp_loader_free(l);
    /* hand-picked starts past every border */
    mp_cache_case_t cc;
    MP_CHECK_OK(mp_cache_case_map(&g_cache, 1, &cc));
    mp_ld_src_t src = {cc.img, cc.seg, {cc.dim[0], cc.dim[1], cc.dim[2]}, (int)cc.dim[3]};
    float *got = malloc(sizeof(float) * (size_t)(pv * nc));
    uint8_t *gseg = malloc((size_t)pv);
    static const int64_t los[][3] = {{-5, -3, -7}, {10, 20, 2}, {-40, 0, 0}, {0, 0, 24}, {3, -19, -29}};
    int ok = 1;
    for (int j = 0; j < 5 && ok; j++) {
        naive_crop(&cc, los[j], p, want, wseg);
        mp_ld_crop(&src, los[j], p, got, gseg);
        ok = memcmp(want, got, sizeof(float) * (size_t)(pv * nc)) == 0 && memcmp(wseg, gseg, (size_t)pv) == 0;
    }
    mp_cache_case_unmap(&cc);
    free(want);
    free(wseg);
    free(got);
    free(gseg);
    MP_CHECK(ok);
    MP_CHECK(padded);
}

static void test_right_angle_rotation(void) {
    double ang[3] = {0, 0, 3.14159265358979323846 / 2}, A[3][3];
    mp_ld_affine(ang, 1, A);
    MP_CHECK(A[0][0] == 0 && A[0][1] == -1 && A[1][0] == 1 && A[1][1] == 0 && A[2][2] == 1 && A[0][2] == 0);
    mp_cache_case_t cc;
    MP_CHECK_OK(mp_cache_case_map(&g_cache, 2, &cc));
    mp_ld_src_t src = {cc.img, cc.seg, {cc.dim[0], cc.dim[1], cc.dim[2]}, (int)cc.dim[3]};
    int64_t nc = cc.dim[3];
    static const int ps[2][3] = {{16, 16, 9}, {15, 15, 6}}; /* even and odd */
    static const int64_t los[2][3] = {{5, 9, 3}, {-4, 22, 20}}; /* inside; over three borders */
    int ok = 1;
    for (int t = 0; t < 2 && ok; t++) {
        const int *p = ps[t];
        int64_t pv = (int64_t)p[0] * p[1] * p[2];
        float *u = malloc(sizeof(float) * (size_t)(pv * nc)), *r = malloc(sizeof(float) * (size_t)(pv * nc));
        uint8_t *us = malloc((size_t)pv), *rs = malloc((size_t)pv);
        double c[3], I[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
        for (int a = 0; a < 3; a++) c[a] = (double)los[t][a] + 0.5 * (p[a] - 1);
        /* identity through the resampler = the straight crop, bit for bit */
        mp_ld_crop(&src, los[t], p, u, us);
        mp_ld_spatial(&src, c, I, NULL, p, r, rs);
        ok = memcmp(u, r, sizeof(float) * (size_t)(pv * nc)) == 0 && memcmp(us, rs, (size_t)pv) == 0;
        mp_ld_spatial(&src, c, A, NULL, p, r, rs);
        int64_t w = p[0];
        for (int64_t ch = 0; ch < nc && ok; ch++)
            for (int64_t z = 0; z < p[2] && ok; z++)
                for (int64_t y = 0; y < p[1] && ok; y++)
                    for (int64_t x = 0; x < p[0] && ok; x++) {
                        /* output (x, y) reads source (c - (y - pc), c + (x - pc)) */
                        int64_t o = (z * p[1] + y) * w + x, q = (z * p[1] + x) * w + (w - 1 - y);
                        ok = r[ch * pv + o] == u[ch * pv + q] && rs[o] == us[q];
                    }
        free(u);
        free(r);
        free(us);
        free(rs);
    }
    mp_cache_case_unmap(&cc);
    MP_CHECK(ok);
}

/* Rotation by 0, scale 1 and elastic alpha 0, all applied: the resampling
 * path (with a zero displacement field) gives the straight crop exactly. */
static void test_identity_augmentation_is_crop(void) {
    mp_loader_opts_t o;
    base_opts(&o);
    o.augment = 0;
    run_t plain, ident;
    MP_CHECK_OK(run_batches(&o, 4, &plain));
    o.augment = 1;
    mp_aug_opts_none(&o.aug);
    o.aug.p_rotation = o.aug.p_scale = o.aug.p_elastic = 1;
    for (int a = 0; a < 3; a++) o.aug.rotation_deg[a] = 0;
    o.aug.scale_range[0] = o.aug.scale_range[1] = 1;
    o.aug.elastic_alpha[1] = 0;
    o.workers = 1;
    MP_CHECK_OK(run_batches(&o, 4, &ident));
    int eq = runs_equal(&plain, &ident);
    /* and a real elastic field changes the patch */
    o.aug.elastic_alpha[0] = o.aug.elastic_alpha[1] = 200;
    o.aug.elastic_sigma[0] = o.aug.elastic_sigma[1] = 4;
    run_t el;
    MP_CHECK_OK(run_batches(&o, 4, &el));
    int differs = memcmp(plain.data, el.data, (size_t)plain.img_bytes) != 0;
    free(plain.data);
    free(ident.data);
    free(el.data);
    MP_CHECK(eq);
    MP_CHECK(differs);
}

static void test_labels_and_values_after_augmentation(void) {
    mp_loader_opts_t o;
    base_opts(&o);
    heavy_aug(&o.aug);
    o.aug.p_rotation = o.aug.p_scale = 1;
    o.aug.p_noise = o.aug.p_blur = o.aug.p_brightness = o.aug.p_contrast = o.aug.p_lowres = 1;
    o.aug.p_gamma_inv = o.aug.p_gamma = 1;
    o.workers = 1;
    mp_loader_t *l = NULL;
    MP_CHECK_OK(mp_loader_create(&l, &o));
    int64_t pv = 12 * 20 * 20, nc = g_cache.plan.num_channels;
    int64_t fg = 0;
    for (int k = 0; k < 8; k++) {
        const mp_batch_t *b = NULL;
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        for (int64_t i = 0; i < 3 * pv; i++) {
            MP_CHECKF(g_labels_present[b->seg[i]], "label %d does not exist in the cache", b->seg[i]);
            fg += b->seg[i] > 0;
        }
        for (int64_t i = 0; i < 3 * pv * nc; i++) MP_CHECKF(isfinite(b->img[i]), "image value %lld not finite", (long long)i);
    }
    mp_loader_free(l);
    MP_CHECK(fg > 0);
}

static void test_mirror(void) {
    int p[3] = {5, 4, 3};
    int64_t pv = 60;
    float img[120], ref[120];
    uint8_t seg[60], rseg[60];
    for (int i = 0; i < 120; i++) ref[i] = img[i] = (float)i * 0.5f;
    for (int i = 0; i < 60; i++) rseg[i] = seg[i] = (uint8_t)(i * 7);
    mp_ld_mirror(img, seg, 2, p, 5); /* x and z */
    for (int c = 0; c < 2; c++)
        for (int z = 0; z < 3; z++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 5; x++) {
                    int64_t o = (z * 4 + y) * 5 + x, s = ((2 - z) * 4 + y) * 5 + (4 - x);
                    MP_CHECK(img[c * pv + o] == ref[c * pv + s]);
                    if (c == 0) MP_CHECK(seg[o] == rseg[s]);
                }
    mp_ld_mirror(img, seg, 2, p, 5);
    mp_ld_mirror(img, seg, 2, p, 2);
    for (int c = 0; c < 2; c++)
        for (int z = 0; z < 3; z++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 5; x++) {
                    int64_t o = (z * 4 + y) * 5 + x, s = (z * 4 + (3 - y)) * 5 + x;
                    MP_CHECK(img[c * pv + o] == ref[c * pv + s]);
                    if (c == 0) MP_CHECK(seg[o] == rseg[s]);
                }
}

static void test_intensity_steps(void) {
    int p[3] = {14, 11, 9};
    int64_t pv = 14 * 11 * 9;
    mp_aug_opts_t a;
    mp_aug_opts_init(&a);
    mp_ld_scratch_t sc;
    MP_CHECK_OK(mp_ld_scratch_init(&sc, p, 1, &a));
    float *x = malloc(sizeof(float) * (size_t)pv), *y = malloc(sizeof(float) * (size_t)pv);
    /* a constant stays constant through blur and low resolution */
    for (int64_t i = 0; i < pv; i++) x[i] = 3.25f;
    mp_ld_blur(x, p, 1.0, &sc);
    mp_ld_lowres(x, p, 0.5, &sc);
    for (int64_t i = 0; i < pv; i++) MP_CHECK_NEAR(x[i], 3.25, 1e-5);
    /* blur keeps the mean of a smooth ramp in the interior and lowers the
     * variance of noise; low resolution keeps a linear ramp in the interior */
    mp_rng_t r;
    mp_rng_init(&r, 5, 0);
    double v0 = 0, v1 = 0;
    for (int64_t i = 0; i < pv; i++) y[i] = x[i] = (float)mp_rng_normal(&r);
    mp_ld_blur(x, p, 0.8, &sc);
    for (int64_t i = 0; i < pv; i++) {
        MP_CHECK(isfinite(x[i]));
        v0 += (double)y[i] * y[i];
        v1 += (double)x[i] * x[i];
    }
    MP_CHECK(v1 < 0.5 * v0);
    for (int64_t z = 0; z < 9; z++)
        for (int64_t yy = 0; yy < 11; yy++)
            for (int64_t xx = 0; xx < 14; xx++) x[(z * 11 + yy) * 14 + xx] = (float)(2 * xx - yy + 0.5 * z);
    memcpy(y, x, sizeof(float) * (size_t)pv);
    mp_ld_lowres(x, p, 0.6, &sc);
    double diff = 0, change = 0;
    for (int64_t i = 0; i < pv; i++) {
        MP_CHECK(isfinite(x[i]));
        change += fabs(x[i] - y[i]);
    }
    MP_CHECK(change > 0);
    for (int64_t i = 0; i < pv; i++) diff += fabs(x[i] - y[i]);
    MP_CHECK(diff / (double)pv < 2.0);
    /* gamma keeps mean and sd (retain_stats), inverted or not, and is finite */
    for (int inv = 0; inv < 2; inv++)
        for (int g = 0; g < 2; g++) {
            for (int64_t i = 0; i < pv; i++) x[i] = (float)(mp_rng_normal(&r) * 2 + 1);
            double m0 = 0, m1 = 0, s0 = 0, s1 = 0;
            for (int64_t i = 0; i < pv; i++) m0 += x[i];
            m0 /= (double)pv;
            for (int64_t i = 0; i < pv; i++) s0 += (x[i] - m0) * (x[i] - m0);
            mp_ld_gamma(x, pv, g ? 1.5 : 0.7, inv, 1);
            for (int64_t i = 0; i < pv; i++) {
                MP_CHECK(isfinite(x[i]));
                m1 += x[i];
            }
            m1 /= (double)pv;
            for (int64_t i = 0; i < pv; i++) s1 += (x[i] - m1) * (x[i] - m1);
            MP_CHECK_NEAR(m1, m0, 1e-4);
            MP_CHECK_NEAR(sqrt(s1 / (double)pv), sqrt(s0 / (double)pv), 1e-4);
        }
    /* a constant patch through gamma stays finite */
    for (int64_t i = 0; i < pv; i++) x[i] = -2;
    mp_ld_gamma(x, pv, 1.3, 1, 1);
    for (int64_t i = 0; i < pv; i++) MP_CHECK(isfinite(x[i]));
    free(x);
    free(y);
    mp_ld_scratch_deinit(&sc);
}

static void test_bad_options_and_worker_errors(void) {
    mp_loader_opts_t o;
    mp_loader_t *l = NULL;
    base_opts(&o);
    o.patch_dhw[1] = 0;
    MP_CHECK(mp_loader_create(&l, &o) == MP_ERR_ARG && l == NULL);
    MP_CHECK(strstr(mp_error_message(), "patch size 0"));
    base_opts(&o);
    o.n_cases = 0;
    MP_CHECK(mp_loader_create(&l, &o) == MP_ERR_ARG);
    MP_CHECK(strstr(mp_error_message(), "no training cases"));
    base_opts(&o);
    int64_t bad = 7;
    o.cases = &bad;
    o.n_cases = 1;
    MP_CHECK(mp_loader_create(&l, &o) == MP_ERR_ARG && strstr(mp_error_message(), "has 3 cases"));
    base_opts(&o);
    o.aug.p_gamma = 1.5;
    MP_CHECK(mp_loader_create(&l, &o) == MP_ERR_ARG && strstr(mp_error_message(), "p_gamma"));
    base_opts(&o);
    o.global_batch = 4;
    o.first_sample = 2;
    MP_CHECK(mp_loader_create(&l, &o) == MP_ERR_ARG && strstr(mp_error_message(), "global batch"));
    /* a failure in a worker comes out of next with its message, later batches still come */
    for (int workers = 0; workers <= 2; workers += 2) {
        base_opts(&o);
        o.augment = 0;
        o.workers = workers;
        MP_CHECK_OK(mp_loader_create(&l, &o));
        mp_ld_inject_failure(l, 0, 2);
        MP_CHECK_OK(mp_loader_seek(l, 0, 0)); /* workers may have made step 2 already */
        const mp_batch_t *b = NULL;
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        int rc = mp_loader_next(l, &b, NULL);
        MP_CHECK(rc == MP_ERR_IO && b == NULL && strstr(mp_error_message(), "epoch 0 step 2"));
        MP_CHECK_OK(mp_loader_next(l, &b, NULL));
        MP_CHECK(b->epoch == 0 && b->step == 3);
        mp_loader_free(l);
    }
    mp_loader_free(NULL);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s", mp_test_tmpdir("loader"));
    if (build_cache()) {
        fprintf(stderr, "cache failed: %s\n", mp_error_message());
        return 1;
    }
    MP_RUN(test_same_bytes_any_workers);
    MP_RUN(test_seek);
    MP_RUN(test_prefetch_depth);
    MP_RUN(test_forced_foreground);
    MP_RUN(test_unaugmented_is_exact_crop);
    MP_RUN(test_right_angle_rotation);
    MP_RUN(test_identity_augmentation_is_crop);
    MP_RUN(test_labels_and_values_after_augmentation);
    MP_RUN(test_mirror);
    MP_RUN(test_intensity_steps);
    MP_RUN(test_bad_options_and_worker_errors);
    mp_cache_close(&g_cache);
    nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mp_test_summary();
}
