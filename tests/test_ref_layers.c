/* Reference kernels: hand-computed forward cases, adjoint identities, and
 * central finite differences in double precision for every layer's data and
 * weight gradients and for the nnU-Net Dice + cross-entropy loss. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/nn.h"
#include "ref/ref.h"

static mp_rng_t rng;

static double *rand_buf(int64_t n, double lo, double hi) {
    double *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = mp_rng_range(&rng, lo, hi);
    return p;
}

/* A layer under test: fills out from the inputs. */
typedef struct fd_case fd_case_t;
struct fd_case {
    void (*fwd)(fd_case_t *c);
    double *out, *proj; /* loss = sum(out * proj) */
    int64_t out_n;
    mp_shape5_t xs;
    int64_t cout;
    mp_conv_geom_t g;
    double *x, *w, *b, *x2, *mean, *rstd;
    int per_sample;
    double slope;
};

static double fd_loss(fd_case_t *c) {
    c->fwd(c);
    double s = 0;
    for (int64_t i = 0; i < c->out_n; i++) s += c->out[i] * c->proj[i];
    return s;
}

/* Compares analytic[i] with the central difference of fd_loss w.r.t. p[i]
 * for all i (a strided sample when n is large). Returns the worst relative error. */
static double fd_check(fd_case_t *c, double *p, int64_t n, const double *analytic) {
    const double eps = 1e-6;
    double worst = 0;
    int64_t step = n > 150 ? n / 150 + 1 : 1;
    for (int64_t i = 0; i < n; i += step) {
        double keep = p[i];
        p[i] = keep + eps;
        double lp = fd_loss(c);
        p[i] = keep - eps;
        double lm = fd_loss(c);
        p[i] = keep;
        double num = (lp - lm) / (2 * eps);
        double err = fabs(num - analytic[i]) / fmax(1e-3, fabs(num) + fabs(analytic[i]));
        if (err > worst) worst = err;
    }
    return worst;
}

static void conv_fwd(fd_case_t *c) { mp_ref_conv3d_forward_f64(c->out, c->x, c->w, c->b, c->xs, c->cout, &c->g); }
static void deconv_fwd(fd_case_t *c) { mp_ref_deconv3d_forward_f64(c->out, c->x, c->w, c->b, c->xs, c->cout, &c->g); }

/* Finite-difference check of x, w and b gradients of a (transposed) conv. */
static double check_conv_case(mp_shape5_t xs, int64_t cout, mp_conv_geom_t g, int transposed) {
    fd_case_t c = {.fwd = transposed ? deconv_fwd : conv_fwd, .xs = xs, .cout = cout, .g = g};
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, &g, transposed);
    int64_t nx = mp_shape5_elems(xs), ny = mp_shape5_elems(ys), nw = xs.c * cout * g.k[0] * g.k[1] * g.k[2];
    c.x = rand_buf(nx, -1, 1);  // (N, Cin, D, H, W)
    c.w = rand_buf(nw, -1, 1);
    c.b = rand_buf(cout, -1, 1);
    c.out = rand_buf(ny, 0, 0);  // (N, Cout, Do, Ho, Wo)
    c.proj = rand_buf(ny, -1, 1);
    c.out_n = ny;
    double *dx = rand_buf(nx, 0, 0), *dw = rand_buf(nw, 0, 0), *db = rand_buf(cout, 0, 0);
    if (transposed) {
        mp_ref_deconv3d_backward_data_f64(dx, c.proj, c.w, xs, cout, &g);
        mp_ref_deconv3d_backward_weights_f64(dw, db, c.proj, c.x, xs, cout, &g);
    } else {
        mp_ref_conv3d_backward_data_f64(dx, c.proj, c.w, xs, cout, &g);
        mp_ref_conv3d_backward_weights_f64(dw, db, c.proj, c.x, xs, cout, &g);
    }
    double e = fd_check(&c, c.x, nx, dx);
    e = fmax(e, fd_check(&c, c.w, nw, dw));
    e = fmax(e, fd_check(&c, c.b, cout, db));
    free(c.x), free(c.w), free(c.b), free(c.out), free(c.proj), free(dx), free(dw), free(db);
    return e;
}

static void test_conv_known_values(void) {
    /* y[i] = x[i-1] - x[i+1] (cross-correlation, as PyTorch), zero padding 1. */
    double x[5] = {1, 2, 3, 4, 5}, w[3] = {1, 0, -1}, b[1] = {0.5}, y[5];
    mp_shape5_t xs = {1, 1, 1, 1, 5};
    mp_conv_geom_t g = {{1, 1, 3}, {1, 1, 1}, {0, 0, 1}};
    mp_ref_conv3d_forward_f64(y, x, w, b, xs, 1, &g);
    double want[5] = {-1.5, -1.5, -1.5, -1.5, 4.5};
    for (int i = 0; i < 5; i++) MP_CHECK_NEAR(y[i], want[i], 1e-12);
    g.s[2] = 2;
    mp_ref_conv3d_forward_f64(y, x, w, NULL, xs, 1, &g);
    MP_CHECK(y[0] == -2 && y[1] == -2 && y[2] == 4);
    /* Transposed k2 s2: each input spreads to two outputs with weights (2, 3). */
    double wt[2] = {2, 3}, yt[4], xt[2] = {1, 10};
    mp_shape5_t ts = {1, 1, 1, 1, 2};
    mp_conv_geom_t gt = {{1, 1, 2}, {1, 1, 2}, {0, 0, 0}};
    mp_ref_deconv3d_forward_f64(yt, xt, wt, NULL, ts, 1, &gt);
    MP_CHECK(yt[0] == 2 && yt[1] == 3 && yt[2] == 20 && yt[3] == 30);
}

static void test_deconv_is_conv_adjoint(void) {
    /* A transposed conv with the same weights is the conv's backward-data. */
    mp_shape5_t xs = {2, 3, 5, 4, 5};
    int64_t cout = 4;
    mp_conv_geom_t g = {{3, 1, 3}, {2, 1, 2}, {1, 0, 1}};
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, &g, 0);
    int64_t nw = cout * xs.c * 9, ny = mp_shape5_elems(ys), nx = mp_shape5_elems(xs);
    double *w = rand_buf(nw, -1, 1), *dy = rand_buf(ny, -1, 1), *a = rand_buf(nx, 0, 0), *b = rand_buf(nx, 0, 0);
    mp_ref_conv3d_backward_data_f64(a, dy, w, xs, cout, &g);
    /* Transposed conv from ys (Cin = cout) to xs; output shape must come back to xs. */
    mp_shape5_t back = mp_conv_out_shape(ys, xs.c, &g, 1);
    int same = back.d == xs.d && back.h == xs.h && back.w == xs.w;
    if (same) mp_ref_deconv3d_forward_f64(b, dy, w, NULL, ys, xs.c, &g);
    double err = 0;
    for (int64_t i = 0; same && i < nx; i++) err = fmax(err, fabs(a[i] - b[i]));
    free(w), free(dy), free(a), free(b);
    MP_CHECK(same);
    MP_CHECK_NEAR(err, 0, 1e-12);
}

static void test_conv_gradients(void) {
    mp_conv_geom_t g333 = {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}};
    mp_conv_geom_t g133 = {{1, 3, 3}, {1, 2, 2}, {0, 1, 1}};
    mp_conv_geom_t godd = {{3, 2, 3}, {2, 1, 2}, {1, 0, 1}};
    MP_CHECK_NEAR(check_conv_case((mp_shape5_t){2, 3, 4, 5, 3}, 4, g333, 0), 0, 1e-5);
    MP_CHECK_NEAR(check_conv_case((mp_shape5_t){2, 3, 3, 6, 5}, 5, g133, 0), 0, 1e-5);
    MP_CHECK_NEAR(check_conv_case((mp_shape5_t){1, 2, 5, 4, 5}, 3, godd, 0), 0, 1e-5);
}

static void test_deconv_gradients(void) {
    mp_conv_geom_t g222 = {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}};
    mp_conv_geom_t g122 = {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}};
    mp_conv_geom_t g3s2 = {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}};
    MP_CHECK_NEAR(check_conv_case((mp_shape5_t){2, 3, 2, 3, 2}, 5, g222, 1), 0, 1e-5);
    MP_CHECK_NEAR(check_conv_case((mp_shape5_t){2, 5, 3, 2, 3}, 3, g122, 1), 0, 1e-5);
    MP_CHECK_NEAR(check_conv_case((mp_shape5_t){1, 2, 3, 2, 3}, 3, g3s2, 1), 0, 1e-5);
}

static void norm_fwd(fd_case_t *c) {
    mp_ref_norm_forward_f64(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->xs, c->per_sample, 1e-5);
}

static double check_norm(int per_sample, mp_shape5_t s) {
    fd_case_t c = {.fwd = norm_fwd, .xs = s, .per_sample = per_sample};
    int64_t n = mp_shape5_elems(s);
    c.x = rand_buf(n, -2, 3);  // (N, C, D, H, W)
    c.w = rand_buf(s.c, 0.5, 1.5);
    c.b = rand_buf(s.c, -1, 1);
    c.mean = rand_buf(s.n * s.c, 0, 0);
    c.rstd = rand_buf(s.n * s.c, 0, 0);
    c.out = rand_buf(n, 0, 0);
    c.proj = rand_buf(n, -1, 1);
    c.out_n = n;
    double *dx = rand_buf(n, 0, 0), *dg = rand_buf(s.c, 0, 0), *dbt = rand_buf(s.c, 0, 0);
    norm_fwd(&c);
    mp_ref_norm_backward_f64(dx, dg, dbt, c.proj, c.x, c.mean, c.rstd, c.w, s, per_sample);
    double e = fmax(fmax(fd_check(&c, c.x, n, dx), fd_check(&c, c.w, s.c, dg)), fd_check(&c, c.b, s.c, dbt));
    /* Forward statistics: each group has mean beta and standard deviation gamma. */
    norm_fwd(&c);
    int64_t sp = s.d * s.h * s.w;
    for (int64_t ch = 0; ch < s.c; ch++) {
        double m = 0, v = 0, cnt = 0;
        for (int64_t k = 0; k < (per_sample ? 1 : s.n); k++)
            for (int64_t i = 0; i < sp; i++) m += c.out[(k * s.c + ch) * sp + i], cnt++;
        m /= cnt;
        for (int64_t k = 0; k < (per_sample ? 1 : s.n); k++)
            for (int64_t i = 0; i < sp; i++) v += pow(c.out[(k * s.c + ch) * sp + i] - m, 2);
        v /= cnt;
        e = fmax(e, fabs(m - c.b[ch]) + fabs(sqrt(v) - c.w[ch]) / c.w[ch] * 1e-2);
    }
    free(c.x), free(c.w), free(c.b), free(c.mean), free(c.rstd), free(c.out), free(c.proj);
    free(dx), free(dg), free(dbt);
    return e;
}

static void test_norm_gradients(void) {
    MP_CHECK_NEAR(check_norm(1, (mp_shape5_t){2, 3, 3, 4, 5}), 0, 1e-5);
    MP_CHECK_NEAR(check_norm(0, (mp_shape5_t){3, 2, 2, 3, 3}), 0, 1e-5);
}

static void lrelu_fwd(fd_case_t *c) { mp_ref_lrelu_forward_f64(c->out, c->x, c->out_n, c->slope); }

static void test_lrelu_gradients(void) {
    for (int k = 0; k < 2; k++) {
        fd_case_t c = {.fwd = lrelu_fwd, .out_n = 200, .slope = k ? 0.01 : 0.0};
        c.x = rand_buf(200, -1, 1);
        for (int i = 0; i < 200; i++)
            if (fabs(c.x[i]) < 1e-3) c.x[i] = 0.5; /* keep away from the kink */
        c.out = rand_buf(200, 0, 0);
        c.proj = rand_buf(200, -1, 1);
        double *dx = rand_buf(200, 0, 0);
        mp_ref_lrelu_backward_f64(dx, c.proj, c.x, 200, c.slope);
        double e = fd_check(&c, c.x, 200, dx);
        lrelu_fwd(&c);
        int ok = 1;
        for (int i = 0; i < 200; i++) ok &= c.out[i] == (c.x[i] > 0 ? c.x[i] : c.x[i] * c.slope);
        free(c.x), free(c.out), free(c.proj), free(dx);
        MP_CHECK(ok);
        MP_CHECK_NEAR(e, 0, 1e-5);
    }
}

static void concat_fwd(fd_case_t *c) { mp_ref_concat_forward_f64(c->out, c->x, c->x2, c->xs, c->cout); }

static void test_concat_gradients(void) {
    mp_shape5_t as = {2, 3, 2, 3, 2};
    fd_case_t c = {.fwd = concat_fwd, .xs = as, .cout = 2};
    int64_t na = mp_shape5_elems(as), nb = na / 3 * 2;
    c.x = rand_buf(na, -1, 1);
    c.x2 = rand_buf(nb, -1, 1);
    c.out_n = na + nb;
    c.out = rand_buf(na + nb, 0, 0);
    c.proj = rand_buf(na + nb, -1, 1);
    double *da = rand_buf(na, 0, 0), *db = rand_buf(nb, 0, 0);
    mp_ref_concat_backward_f64(da, db, c.proj, as, 2);
    double e = fmax(fd_check(&c, c.x, na, da), fd_check(&c, c.x2, nb, db));
    concat_fwd(&c);
    /* Sample 1, channel 3 of the output is channel 0 of b's sample 1. */
    int64_t sp = 12;
    int ok = c.out[(1 * 5 + 3) * sp + 7] == c.x2[(1 * 2 + 0) * sp + 7];
    free(c.x), free(c.x2), free(c.out), free(c.proj), free(da), free(db);
    MP_CHECK(ok);
    MP_CHECK_NEAR(e, 0, 1e-5);
}

static void softmax_fwd(fd_case_t *c) { mp_ref_softmax_forward_f64(c->out, c->x, c->xs); }

static void test_softmax_gradients(void) {
    mp_shape5_t s = {2, 4, 2, 2, 3};
    int64_t n = mp_shape5_elems(s);
    fd_case_t c = {.fwd = softmax_fwd, .xs = s, .out_n = n};
    c.x = rand_buf(n, -3, 3);
    c.out = rand_buf(n, 0, 0);
    c.proj = rand_buf(n, -1, 1);
    double *p = rand_buf(n, 0, 0), *dz = rand_buf(n, 0, 0);
    mp_ref_softmax_forward_f64(p, c.x, s);
    mp_ref_softmax_backward_f64(dz, c.proj, p, s);
    double e = fd_check(&c, c.x, n, dz), sum = p[0] + p[12] + p[24] + p[36];
    free(c.x), free(c.out), free(c.proj), free(p), free(dz);
    MP_CHECK_NEAR(sum, 1, 1e-12);
    MP_CHECK_NEAR(e, 0, 1e-5);
}

/* The loss by its definition, written out for a case small enough to read:
 * nnU-Net's CE (mean over voxels) minus the mean soft Dice of the foreground. */
static double loss_by_hand(const double *z, const uint8_t *t, mp_shape5_t s, int batch_dice) {
    int64_t sp = s.d * s.h * s.w;
    double ce = 0, inter[4][8] = {{0}}, pred[4][8] = {{0}}, gt[4][8] = {{0}};
    for (int64_t n = 0; n < s.n; n++)
        for (int64_t v = 0; v < sp; v++) {
            double den = 0, p[8];
            for (int64_t c = 0; c < s.c; c++) den += exp(z[(n * s.c + c) * sp + v]);
            for (int64_t c = 0; c < s.c; c++) p[c] = exp(z[(n * s.c + c) * sp + v]) / den;
            ce += -log(p[t[n * sp + v]]);
            int64_t row = batch_dice ? 0 : n;
            for (int64_t c = 0; c < s.c; c++) {
                pred[row][c] += p[c];
                inter[row][c] += p[c] * (t[n * sp + v] == c);
                gt[row][c] += t[n * sp + v] == c;
            }
        }
    double dc = 0, cnt = 0;
    for (int64_t row = 0; row < (batch_dice ? 1 : s.n); row++)
        for (int64_t c = 1; c < s.c; c++, cnt++)
            dc += (2 * inter[row][c] + 1e-5) / (gt[row][c] + pred[row][c] + 1e-5);
    return ce / (double)(s.n * sp) - dc / cnt;
}

typedef struct {
    fd_case_t base;
    const uint8_t *labels;
    mp_loss_opts_t o;
} loss_case_t;

static void loss_fwd(fd_case_t *c) {
    loss_case_t *lc = (loss_case_t *)c;
    c->out[0] = mp_ref_dc_ce_loss_f64(NULL, c->x, lc->labels, c->xs, &lc->o, 1.0);
}

static void test_dc_ce_loss(void) {
    mp_shape5_t s = {3, 3, 2, 3, 2};
    int64_t n = mp_shape5_elems(s);
    uint8_t labels[36];
    for (int i = 0; i < 36; i++) labels[i] = (uint8_t)mp_rng_below(&rng, 3);
    labels[0] = 0;
    for (int i = 12; i < 24; i++) labels[i] = 0; /* sample 1: class 1 and 2 absent */
    for (int bd = 0; bd < 2; bd++) {
        loss_case_t lc = {.base = {.fwd = loss_fwd, .xs = s, .out_n = 1}, .labels = labels};
        mp_loss_opts_init(&lc.o);
        lc.o.batch_dice = bd;
        double one = 1, out = 0;
        lc.base.x = rand_buf(n, -2, 2);
        lc.base.out = &out;
        lc.base.proj = &one;
        double *dz = rand_buf(n, 0, 0);
        double l = mp_ref_dc_ce_loss_f64(dz, lc.base.x, labels, s, &lc.o, 1.0);
        double want = loss_by_hand(lc.base.x, labels, s, bd);
        double e = fd_check(&lc.base, lc.base.x, n, dz);
        /* float kernel agrees with the double one */
        float zf[108], dzf[108];
        for (int i = 0; i < 108; i++) zf[i] = (float)lc.base.x[i];
        double lf = mp_ref_dc_ce_loss_f32(dzf, zf, labels, s, &lc.o, 1.0);
        free(lc.base.x);
        free(dz);
        MP_CHECK_NEAR(l, want, 1e-12);
        MP_CHECK_NEAR(lf, l, 1e-5);
        MP_CHECK_NEAR(e, 0, 1e-5);
    }
}

int main(void) {
    mp_rng_init(&rng, 1234, 1);
    MP_RUN(test_conv_known_values);
    MP_RUN(test_deconv_is_conv_adjoint);
    MP_RUN(test_conv_gradients);
    MP_RUN(test_deconv_gradients);
    MP_RUN(test_norm_gradients);
    MP_RUN(test_lrelu_gradients);
    MP_RUN(test_concat_gradients);
    MP_RUN(test_softmax_gradients);
    MP_RUN(test_dc_ce_loss);
    return mp_test_summary();
}
