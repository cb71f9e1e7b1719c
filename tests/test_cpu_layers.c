/* oneDNN batch norm (training mode, affine, fused ReLU), (Leaky)ReLU and
 * channel softmax against the plain-C reference in fp32, on small odd shapes
 * (N = 1 and 2, C = 3, 5, 17, odd D, H, W), in plain ncdhw, channels-last,
 * nCdhw8c and nCdhw16c layouts, forward and backward (data and per-channel parameters).
 * Errors are max |fast - ref| / max |ref|; the tolerances (per layer below)
 * are a few fp32 ulps of the largest value times the reduction length's
 * rounding growth; layout or indexing bugs give O(1) errors. Reference
 * finite-difference checks of these layers are in test_ref_layers.c. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/nn.h"
#include "cpu/cpu.h"
#include "cpu_test_util.h"
#include "ref/ref.h"

static mp_rng_t rng;

/* Worst errors seen per layer, printed at the end (the measured figures). */
static double worst_abs[3], worst_rel[3];
enum { L_BN, L_RELU, L_SOFTMAX };

static float *rand_f(int64_t n, double lo, double hi) {
    float *p = mp_alloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)mp_rng_range(&rng, lo, hi);
    return p;
}

/* max|a-b| / max|b|, recorded under layer `which`. */
static double rel_err(int which, const float *a, const float *b, int64_t n) {
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    double r = e / (m + 1e-6);
    worst_abs[which] = fmax(worst_abs[which], e);
    worst_rel[which] = fmax(worst_rel[which], r);
    return r;
}

/* Layout for a case: 1 plain ncdhw, 0 channels last, 8 / 16 nCdhw8c / nCdhw16c.
 * On AVX2 oneDNN 2.6 takes different batch-norm code for each (ncsp, jit on
 * 8c and on channels last when C % 8 == 0, its reference otherwise). */
static void layout(dnnl_memory_desc_t *md, mp_shape5_t s, int block) { mp_cpu_md_blocked(md, s, block); }


#define TOL_BN 1e-5
#define TOL_RELU 1e-7 /* one rounding: oneDNN multiplies by the fp32 slope, the reference by the double */
#define TOL_SOFTMAX 1e-6

static const mp_shape5_t shapes[] = {{1, 3, 5, 7, 3}, {2, 5, 5, 7, 3}, {2, 17, 3, 5, 7}, {1, 17, 5, 7, 3}};
static const int blocks[] = {1, 0, 8, 16};
#define NBLOCKS ((int)(sizeof blocks / sizeof blocks[0]))
#define NSHAPES ((int)(sizeof shapes / sizeof shapes[0]))

/* One batch-norm case: returns the worst relative error over y, mean, var, dx, dgamma, dbeta. */
static double bnorm_case(mp_shape5_t s, int block, int relu) {
    const double eps = 1e-5;
    int64_t n = mp_shape5_elems(s), c = s.c;
    float *x = rand_f(n, -2, 3), *gamma = rand_f(c, 0.5, 1.5), *beta = rand_f(c, -1, 1), *dy = rand_f(n, -1, 1);
    /* Reference: norm, then ReLU; the backward masks dy by the output's sign. */
    float *y_ref = rand_f(n, 0, 0), *mean_ref = rand_f(c, 0, 0), *rstd_ref = rand_f(c, 0, 0), *var_ref = rand_f(c, 0, 0);
    float *dyn = rand_f(n, 0, 0), *dx_ref = rand_f(n, 0, 0), *dg_ref = rand_f(c, 0, 0), *db_ref = rand_f(c, 0, 0);
    mp_ref_norm_forward_f32(y_ref, mean_ref, rstd_ref, x, gamma, beta, s, 0, eps);
    memcpy(dyn, dy, (size_t)n * sizeof *dy);
    if (relu) {
        mp_ref_lrelu_backward_f32(dyn, dy, y_ref, n, 0.0);
        mp_ref_lrelu_forward_f32(y_ref, y_ref, n, 0.0);
    }
    mp_ref_norm_backward_f32(dx_ref, dg_ref, db_ref, dyn, x, mean_ref, rstd_ref, gamma, s, 0);
    for (int64_t i = 0; i < c; i++) var_ref[i] = (float)(1.0 / ((double)rstd_ref[i] * rstd_ref[i]) - eps);

    dnnl_memory_desc_t md;
    layout(&md, s, block);
    mp_cpu_bnorm_desc_t d = {.s = s, .md = &md, .eps = eps, .relu = relu, .backward = 1};
    mp_cpu_bnorm_t b;
    double err = 1e9;
    if (mp_cpu_bnorm_init(&b, &d)) {
        fprintf(stderr, "  bnorm init: %s\n", mp_error_message());
        goto done;
    }
    void *scratch = mp_alloc(b.scratch_bytes + 64), *ws = mp_alloc(b.ws_bytes + 64);
    float *xb = to_md(x, s, &md), *dyb = to_md(dy, s, &md);
    float *yb = mp_zalloc(mp_cpu_md_bytes(&md)), *dxb = mp_zalloc(mp_cpu_md_bytes(&md));
    float *mean = rand_f(c, 0, 0), *var = rand_f(c, 0, 0), *dg = rand_f(c, 9, 9), *dbt = rand_f(c, 9, 9);
    err = 0;
    if (mp_cpu_bnorm_forward(&b, yb, mean, var, ws, xb, gamma, beta, scratch) ||
        mp_cpu_bnorm_backward(&b, dxb, dg, dbt, dyb, xb, mean, var, ws, gamma, beta, scratch)) {
        fprintf(stderr, "  bnorm run: %s\n", mp_error_message());
        err = 1e9;
    }
    float *y = from_md(yb, s, &md), *dx = from_md(dxb, s, &md);
    double ey = rel_err(L_BN, y, y_ref, n), em = rel_err(L_BN, mean, mean_ref, c), ev = rel_err(L_BN, var, var_ref, c);
    double edx = rel_err(L_BN, dx, dx_ref, n), edg = rel_err(L_BN, dg, dg_ref, c), edb = rel_err(L_BN, dbt, db_ref, c);
    err = fmax(err, fmax(fmax(ey, em), fmax(fmax(ev, edx), fmax(edg, edb))));
    if (err > TOL_BN)
        fprintf(stderr, "  bnorm (%lld,%lld) block %d relu %d [%s / %s]: y %g mean %g var %g dx %g dg %g db %g\n",
                (long long)s.n, (long long)s.c, block, relu, b.fwd.impl, b.bwd.impl, ey, em, ev, edx, edg, edb);
    mp_free(scratch), mp_free(ws), mp_free(xb), mp_free(dyb), mp_free(yb), mp_free(dxb), mp_free(mean), mp_free(var);
    mp_free(dg), mp_free(dbt), mp_free(y), mp_free(dx);
    mp_cpu_bnorm_deinit(&b);
done:
    mp_free(x), mp_free(gamma), mp_free(beta), mp_free(dy), mp_free(y_ref), mp_free(mean_ref), mp_free(rstd_ref);
    mp_free(var_ref), mp_free(dyn), mp_free(dx_ref), mp_free(dg_ref), mp_free(db_ref);
    return err;
}

static void test_bnorm_matches_ref(void) {
    for (int i = 0; i < NSHAPES; i++)
        for (int k = 0; k < NBLOCKS; k++) MP_CHECK_NEAR(bnorm_case(shapes[i], blocks[k], 0), 0, TOL_BN);
}

/* ReLU fused into batch norm (oneDNN's fuse_norm_relu, kept mask in the workspace). */
static void test_bnorm_fused_relu(void) {
    for (int i = 0; i < NSHAPES; i++)
        for (int k = 0; k < NBLOCKS; k++) MP_CHECK_NEAR(bnorm_case(shapes[i], blocks[k], 1), 0, TOL_BN);
}

/* One (Leaky)ReLU case, with the forward in place (y = x buffer) when inplace. */
static double relu_case(mp_shape5_t s, int block, double slope, int inplace) {
    int64_t n = mp_shape5_elems(s);
    float *x = rand_f(n, -1, 1), *dy = rand_f(n, -1, 1), *y_ref = rand_f(n, 0, 0), *dx_ref = rand_f(n, 0, 0);
    mp_ref_lrelu_forward_f32(y_ref, x, n, slope);
    mp_ref_lrelu_backward_f32(dx_ref, dy, x, n, slope);
    dnnl_memory_desc_t md;
    layout(&md, s, block);
    mp_cpu_relu_t r;
    double err = 1e9;
    if (mp_cpu_relu_init(&r, s, &md, slope, 1)) {
        fprintf(stderr, "  relu init: %s\n", mp_error_message());
        goto done;
    }
    void *scratch = mp_alloc(r.scratch_bytes + 64);
    float *xb = to_md(x, s, &md), *dyb = to_md(dy, s, &md), *keep = to_md(x, s, &md);
    float *yb = inplace ? xb : mp_zalloc(mp_cpu_md_bytes(&md)), *dxb = inplace ? dyb : mp_zalloc(mp_cpu_md_bytes(&md));
    err = 0;
    if (mp_cpu_relu_forward(&r, yb, xb, scratch) || mp_cpu_relu_backward(&r, dxb, dyb, keep, scratch)) err = 1e9;
    float *y = from_md(yb, s, &md), *dx = from_md(dxb, s, &md);
    err = fmax(err, fmax(rel_err(L_RELU, y, y_ref, n), rel_err(L_RELU, dx, dx_ref, n)));
    if (err > TOL_RELU)
        fprintf(stderr, "  relu (%lld,%lld) block %d slope %g [%s / %s]: %g\n", (long long)s.n, (long long)s.c, block,
                slope, r.fwd.impl, r.bwd.impl, err);
    if (!inplace) mp_free(yb), mp_free(dxb);
    mp_free(scratch), mp_free(xb), mp_free(dyb), mp_free(keep), mp_free(y), mp_free(dx);
    mp_cpu_relu_deinit(&r);
done:
    mp_free(x), mp_free(dy), mp_free(y_ref), mp_free(dx_ref);
    return err;
}

static void test_relu_matches_ref(void) {
    for (int i = 0; i < NSHAPES; i++)
        for (int k = 0; k < NBLOCKS; k++) {
            MP_CHECK_NEAR(relu_case(shapes[i], blocks[k], 0.0, k == 1), 0, TOL_RELU);
            MP_CHECK_NEAR(relu_case(shapes[i], blocks[k], 0.01, k == 2), 0, TOL_RELU);
        }
}

static double softmax_case(mp_shape5_t s, int block) {
    int64_t n = mp_shape5_elems(s);
    float *z = rand_f(n, -4, 4), *dp = rand_f(n, -1, 1), *p_ref = rand_f(n, 0, 0), *dz_ref = rand_f(n, 0, 0);
    z[0] = 60.0f; /* a large logit: the max must be subtracted */
    mp_ref_softmax_forward_f32(p_ref, z, s);
    mp_ref_softmax_backward_f32(dz_ref, dp, p_ref, s);
    dnnl_memory_desc_t md;
    layout(&md, s, block);
    mp_cpu_softmax_t sm;
    double err = 1e9;
    if (mp_cpu_softmax_init(&sm, s, &md, 1)) {
        fprintf(stderr, "  softmax init: %s\n", mp_error_message());
        goto done;
    }
    void *scratch = mp_alloc(sm.scratch_bytes + 64);
    float *zb = to_md(z, s, &md), *dpb = to_md(dp, s, &md), *pref_b = to_md(p_ref, s, &md);
    float *pb = mp_zalloc(mp_cpu_md_bytes(&md)), *dzb = mp_zalloc(mp_cpu_md_bytes(&md));
    err = 0;
    /* The backward gets the reference p so that its error is its own. */
    if (mp_cpu_softmax_forward(&sm, pb, zb, scratch) || mp_cpu_softmax_backward(&sm, dzb, dpb, pref_b, scratch))
        err = 1e9;
    float *p = from_md(pb, s, &md), *dz = from_md(dzb, s, &md);
    err = fmax(err, fmax(rel_err(L_SOFTMAX, p, p_ref, n), rel_err(L_SOFTMAX, dz, dz_ref, n)));
    if (err > TOL_SOFTMAX)
        fprintf(stderr, "  softmax (%lld,%lld) block %d [%s / %s]: %g\n", (long long)s.n, (long long)s.c, block,
                sm.fwd.impl, sm.bwd.impl, err);
    mp_free(scratch), mp_free(zb), mp_free(dpb), mp_free(pref_b), mp_free(pb), mp_free(dzb), mp_free(p), mp_free(dz);
    mp_cpu_softmax_deinit(&sm);
done:
    mp_free(z), mp_free(dp), mp_free(p_ref), mp_free(dz_ref);
    return err;
}

static void test_softmax_matches_ref(void) {
    for (int i = 0; i < NSHAPES; i++)
        for (int k = 0; k < NBLOCKS; k++) MP_CHECK_NEAR(softmax_case(shapes[i], blocks[k]), 0, TOL_SOFTMAX);
}

/* Init rejects bad arguments with a message instead of crashing; a layer
 * created without backward refuses the backward pass. */
static void test_layer_errors(void) {
    mp_shape5_t s = {1, 3, 5, 7, 3}, other = {1, 4, 5, 7, 3};
    dnnl_memory_desc_t md;
    mp_cpu_md_plain(&md, other);
    mp_cpu_bnorm_t b;
    mp_cpu_bnorm_desc_t d = {.s = s, .eps = 0};
    MP_CHECK(mp_cpu_bnorm_init(&b, &d) == MP_ERR_ARG);
    d.eps = 1e-5;
    d.md = &md;
    MP_CHECK(mp_cpu_bnorm_init(&b, &d) == MP_ERR_ARG);
    mp_cpu_relu_t r;
    MP_CHECK(mp_cpu_relu_init(&r, (mp_shape5_t){0, 3, 5, 7, 3}, NULL, 0, 1) == MP_ERR_ARG);
    mp_cpu_softmax_t sm;
    MP_CHECK_OK(mp_cpu_softmax_init(&sm, s, NULL, 0));
    float buf[105] = {0};
    MP_CHECK(mp_cpu_softmax_backward(&sm, buf, buf, buf, NULL) == MP_ERR_ARG);
    mp_cpu_softmax_deinit(&sm);
}

int main(void) {
    mp_rng_init(&rng, 2024, 7);
    mp_cpu_set_threads(2);
    MP_RUN(test_bnorm_matches_ref);
    MP_RUN(test_bnorm_fused_relu);
    MP_RUN(test_relu_matches_ref);
    MP_RUN(test_softmax_matches_ref);
    MP_RUN(test_layer_errors);
    const char *names[3] = {"batch norm", "relu", "softmax"};
    for (int i = 0; i < 3; i++)
        fprintf(stderr, "  %s: max abs err %.3g, max rel err %.3g\n", names[i], worst_abs[i], worst_rel[i]);
    return mp_test_summary();
}
