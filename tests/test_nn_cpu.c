/* oneDNN engine against the plain-C reference, in fp32, on small odd shapes:
 * convolutions and transposed convolutions (forward, backward-data,
 * backward-weights, bias; strides 2, anisotropic kernels, channel counts not
 * divisible by 8 or 16, batch > 1, fused LeakyReLU), instance norm + LeakyReLU
 * on blocked layouts, and concatenation.
 * Tolerance: max |fast - ref| <= 1e-5 * max |ref| (+1e-6), i.e. a few fp32
 * ulps of the largest value; real layout or indexing bugs give O(1) errors. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/nn.h"
#include "cpu/cpu.h"
#include "cpu_test_util.h"
#include "ref/ref.h"

static mp_rng_t rng;

static float *rand_f(int64_t n, double lo, double hi) {
    float *p = mp_alloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    for (int64_t i = 0; i < n; i++) p[i] = (float)mp_rng_range(&rng, lo, hi);
    return p;
}

/* Relative error of a against b: max|a-b| / max|b|. */
static double rel_err(const float *a, const float *b, int64_t n) {
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return e / (m + 1e-6);
}


#define TOL 1e-5

/* Runs one (transposed) conv case through both engines; returns the worst error. */
static const char *expect_impl2; /* when set: the backward-weights implementation conv_case must get */
static int expect_no_ref;         /* when set: no pass may run oneDNN's reference code */
static const char *expect_impl0;  /* when set: the forward implementation */
static const char *expect_impl1;  /* when set: the backward-data implementation */
static int dst8_src_any;          /* when set: dst nCdhw8c, the source left to oneDNN (the U-Net's input conv) */

static double conv_case(mp_shape5_t xs, int64_t cout, mp_conv_geom_t g, int transposed, int src_block, int post) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, &g, transposed);
    int64_t nx = mp_shape5_elems(xs), ny = mp_shape5_elems(ys), nw = xs.c * cout * g.k[0] * g.k[1] * g.k[2];
    float *x = rand_f(nx, -1, 1), *w = rand_f(nw, -0.5, 0.5), *b = rand_f(cout, -1, 1);  // x (N, Cin, D, H, W)
    float *dy = rand_f(ny, -1, 1);                                                        // (N, Cout, Do, Ho, Wo)
    float *y_ref = rand_f(ny, 0, 0), *dx_ref = rand_f(nx, 0, 0), *dw_ref = rand_f(nw, 0, 0), *db_ref = rand_f(cout, 0, 0);
    float *dw = rand_f(nw, 0, 0), *db = rand_f(cout, 0, 0);
    if (transposed) {
        mp_ref_deconv3d_forward_f32(y_ref, x, w, b, xs, cout, &g);
        mp_ref_deconv3d_backward_data_f32(dx_ref, dy, w, xs, cout, &g);
        mp_ref_deconv3d_backward_weights_f32(dw_ref, db_ref, dy, x, xs, cout, &g);
    } else {
        mp_ref_conv3d_forward_f32(y_ref, x, w, b, xs, cout, &g);
        mp_ref_conv3d_backward_data_f32(dx_ref, dy, w, xs, cout, &g);
        mp_ref_conv3d_backward_weights_f32(dw_ref, db_ref, dy, x, xs, cout, &g);
    }
    if (post) mp_ref_lrelu_forward_f32(y_ref, y_ref, ny, 0.01);
    dnnl_memory_desc_t smd, dmd;
    mp_cpu_conv_desc_t d = {.xs = xs, .cout = cout, .g = g, .transposed = transposed, .bias = 1,
                            .post_lrelu = post, .post_slope = 0.01, .backward = !post};
    if (dst8_src_any) {
        mp_cpu_md_blocked(&dmd, ys, 8);
        d.dst_md = &dmd;
    } else if (src_block) {
        mp_cpu_md_blocked(&smd, xs, src_block < 0 ? 0 : src_block); /* -1: channels last */
        d.src_md = &smd;
        if (src_block > 1) { /* as in the U-Net: the output in the same blocking */
            mp_cpu_md_blocked(&dmd, ys, src_block);
            d.dst_md = &dmd;
        }
    }
    mp_cpu_conv_t *c = NULL;
    double err = 1e9;
    if (mp_cpu_conv_create(&c, &d)) {
        fprintf(stderr, "  create: %s\n", mp_error_message());
        goto done;
    }
    const dnnl_memory_desc_t *sm = mp_cpu_conv_src_md(c), *dm = mp_cpu_conv_dst_md(c);
    void *scratch = mp_alloc(mp_cpu_conv_scratch_bytes(c) + 64);
    float *xb = to_md(x, xs, sm), *dyb = to_md(dy, ys, dm);
    float *yb = mp_zalloc(mp_cpu_md_bytes(dm)), *dxb = mp_zalloc(mp_cpu_md_bytes(sm));
    memset(dxb, 0x55, mp_cpu_md_bytes(sm)); /* garbage (1.5e13): backward-data must write every voxel */
    err = 0;
    if (mp_cpu_conv_forward(c, yb, xb, w, b, scratch)) err = 1e9;
    float *y = from_md(yb, ys, dm);
    err = fmax(err, rel_err(y, y_ref, ny));
    if (!post) {
        if (mp_cpu_conv_backward_data(c, dxb, dyb, w, scratch) || mp_cpu_conv_backward_weights(c, dw, db, dyb, xb, scratch))
            err = 1e9;
        float *dx = from_md(dxb, xs, sm);
        err = fmax(err, fmax(rel_err(dx, dx_ref, nx), fmax(rel_err(dw, dw_ref, nw), rel_err(db, db_ref, cout))));
        mp_free(dx);
    }
    if (err > TOL)
        fprintf(stderr, "  conv case %s k%lldx%lldx%lld: impl %s / %s / %s, err %g\n", transposed ? "deconv" : "conv",
                (long long)g.k[0], (long long)g.k[1], (long long)g.k[2], mp_cpu_conv_impl(c, 0), mp_cpu_conv_impl(c, 1),
                mp_cpu_conv_impl(c, 2), err);
    for (int pass = 0; pass < 3 && expect_no_ref; pass++)
        if (!strncmp(mp_cpu_conv_impl(c, pass), "ref", 3)) {
            fprintf(stderr, "  conv case: pass %d runs reference code (%s)\n", pass, mp_cpu_conv_impl(c, pass));
            err = 1e9;
        }
    if (expect_impl0 && strcmp(mp_cpu_conv_impl(c, 0), expect_impl0)) {
        fprintf(stderr, "  conv case: impl %s / %s, expected %s\n", mp_cpu_conv_impl(c, 0), mp_cpu_conv_impl(c, 1),
                expect_impl0);
        err = 1e9;
    }
    if (expect_impl1 && strcmp(mp_cpu_conv_impl(c, 1), expect_impl1) != 0) {
        fprintf(stderr, "  conv case: backward-data impl %s, expected %s\n", mp_cpu_conv_impl(c, 1), expect_impl1);
        err = 1e9;
    }
    if (expect_impl2 && strcmp(mp_cpu_conv_impl(c, 2), expect_impl2) != 0) {
        fprintf(stderr, "  conv case: backward-weights impl %s, expected %s\n", mp_cpu_conv_impl(c, 2), expect_impl2);
        err = 1e9;
    }
    mp_free(scratch), mp_free(xb), mp_free(dyb), mp_free(yb), mp_free(dxb), mp_free(y);
done:
    mp_cpu_conv_free(c);
    mp_free(x), mp_free(w), mp_free(b), mp_free(dy), mp_free(y_ref), mp_free(dx_ref), mp_free(dw_ref);
    mp_free(db_ref), mp_free(dw), mp_free(db);
    return err;
}

static void test_conv_matches_ref(void) {
    mp_conv_geom_t g333 = {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}};
    mp_conv_geom_t g333s2 = {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}};
    mp_conv_geom_t g133 = {{1, 3, 3}, {1, 2, 2}, {0, 1, 1}};
    mp_conv_geom_t g111 = {{1, 1, 1}, {1, 1, 1}, {0, 0, 0}};
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 5, 7, 6, 5}, 7, g333, 0, 0, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 5, 7, 6, 5}, 7, g333, 0, 16, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){3, 17, 6, 7, 5}, 20, g333s2, 0, 0, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 3, 5, 9, 7}, 6, g133, 0, 0, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 24, 4, 3, 4}, 3, g111, 0, 16, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){1, 1, 6, 5, 7}, 18, g333, 0, 0, 0), 0, TOL);
}

/* Channels-last stride-1 "same" convs take medpipe's shifted-GEMM
 * backward-weights (wrapped rows subtracted again): odd sizes, both wrap
 * directions, anisotropic kernels, a 5x5x5 kernel (two wrapped columns),
 * one input channel, a 1x1x1 head, and transposed convs with kernel = stride. */
static void test_conv_shifted_gemm_bwd_weights(void) {
    mp_conv_geom_t g333 = {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}};
    mp_conv_geom_t g133 = {{1, 3, 3}, {1, 1, 1}, {0, 1, 1}};
    mp_conv_geom_t g555 = {{5, 5, 5}, {1, 1, 1}, {2, 2, 2}};
    mp_conv_geom_t g111 = {{1, 1, 1}, {1, 1, 1}, {0, 0, 0}};
    expect_impl2 = "medpipe:shifted_gemm";
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 9, 8, 9, 10}, 12, g333, 0, -1, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){3, 16, 8, 8, 9}, 8, g133, 0, -1, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){1, 8, 9, 7, 11}, 10, g555, 0, -1, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 1, 8, 9, 8}, 16, g333, 0, -1, 0), 0, TOL); /* the input conv */
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 16, 8, 9, 8}, 2, g111, 0, -1, 0), 0, TOL); /* the 1x1x1 head */
    mp_conv_geom_t g222 = {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}}, g122 = {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}};
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 16, 8, 9, 8}, 8, g222, 1, -1, 0), 0, TOL); /* upsampling */
    MP_CHECK_NEAR(conv_case((mp_shape5_t){1, 9, 8, 8, 9}, 5, g122, 1, -1, 0), 0, TOL);
    expect_impl2 = NULL;
}

/* nCdhw8c activations (oneDNN's choice on AVX2): the weight gradient comes
 * from medpipe's blocked kernel (conv_bww8.c) for every geometry, and no
 * pass falls to oneDNN's reference code (blocked passes without a fast
 * kernel run on channels-last copies). Odd sizes, channel counts that do not
 * fill a block, batch > 1, strides, anisotropic and large kernels, 1x1x1,
 * transposed convs with and without overlap. */
static void test_conv_blocked8_backward(void) {
    mp_conv_geom_t g333 = {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}}, g333s2 = {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}};
    mp_conv_geom_t g133 = {{1, 3, 3}, {1, 2, 2}, {0, 1, 1}}, g555 = {{5, 5, 5}, {1, 1, 1}, {2, 2, 2}};
    mp_conv_geom_t g111 = {{1, 1, 1}, {1, 1, 1}, {0, 0, 0}};
    mp_conv_geom_t g222 = {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}}, g122 = {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}};
    expect_impl2 = "medpipe:bww8";
    expect_no_ref = 1;
    double e[9] = {
        conv_case((mp_shape5_t){2, 9, 8, 9, 10}, 12, g333, 0, 8, 0),
        conv_case((mp_shape5_t){1, 16, 9, 7, 11}, 8, g333, 0, 8, 0),
        conv_case((mp_shape5_t){3, 17, 6, 7, 5}, 20, g333s2, 0, 8, 0),
        conv_case((mp_shape5_t){2, 8, 5, 9, 7}, 6, g133, 0, 8, 0),
        conv_case((mp_shape5_t){1, 8, 9, 7, 11}, 10, g555, 0, 8, 0),
        conv_case((mp_shape5_t){2, 24, 4, 3, 4}, 3, g111, 0, 8, 0),
        conv_case((mp_shape5_t){2, 16, 8, 9, 8}, 8, g222, 1, 8, 0),
        conv_case((mp_shape5_t){1, 9, 5, 4, 3}, 5, g122, 1, 8, 0),
        conv_case((mp_shape5_t){2, 6, 3, 4, 3}, 7, g333s2, 1, 8, 0)};
    expect_impl2 = NULL;
    expect_no_ref = 0;
    for (int i = 0; i < 9; i++) MP_CHECK_NEAR(e[i], 0, TOL);
}

/* The U-Net's upsampling (kernel = stride, no padding) on nCdhw8c runs
 * medpipe's tiled forward (deconv8.c): rows of 3 to 9 voxels (tiles of 3, 4
 * and 6), an odd number of channel blocks, channel counts that do not fill a
 * block, anisotropic strides, batch > 1. */
static void test_deconv8_matches_ref(void) {
    mp_conv_geom_t g222 = {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}}, g122 = {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}};
    expect_impl0 = "medpipe:deconv8";
    expect_impl2 = "medpipe:bww8";
    expect_no_ref = 1;
    double e[4] = {conv_case((mp_shape5_t){2, 16, 3, 4, 9}, 20, g222, 1, 8, 0),
                   conv_case((mp_shape5_t){1, 9, 5, 3, 7}, 5, g122, 1, 8, 0),
                   conv_case((mp_shape5_t){2, 40, 2, 3, 4}, 16, g222, 1, 8, 0),
                   conv_case((mp_shape5_t){1, 3, 4, 5, 6}, 24, g222, 1, 8, 0)};
    expect_impl0 = expect_impl2 = NULL;
    expect_no_ref = 0;
    for (int i = 0; i < 4; i++) MP_CHECK_NEAR(e[i], 0, TOL);
}

/* Backward-data of strided and transposed convs on nCdhw8c with rows of 16
 * or more voxels per residue class runs medpipe's gather kernel (gconv8.c;
 * shorter rows stay on oneDNN's paths, test_conv_blocked8_backward): residue
 * classes along w (stride 2 and 3), edge
 * voxels whose taps fall outside dy, rows of 6-, 4- and 1-voxel tiles, an
 * odd number of dx channel blocks, channel counts that do not fill a block,
 * kernels smaller than, equal to and larger than the stride, anisotropic
 * strides, overlapping transposed convs, batch > 1. */
static void test_gconv8_matches_ref(void) {
    mp_conv_geom_t g333s2 = {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}}, g133 = {{1, 3, 3}, {1, 2, 2}, {0, 1, 1}};
    mp_conv_geom_t g222 = {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}}, g555s3 = {{5, 3, 5}, {3, 2, 3}, {2, 0, 1}};
    mp_conv_geom_t g111s2 = {{1, 1, 1}, {2, 2, 2}, {0, 0, 0}}, g122 = {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}};
    expect_impl1 = "medpipe:gconv8";
    expect_no_ref = 1;
    double e[10] = {
        conv_case((mp_shape5_t){2, 17, 3, 4, 35}, 20, g333s2, 0, 8, 0),
        conv_case((mp_shape5_t){1, 40, 4, 3, 33}, 9, g333s2, 0, 8, 0),
        conv_case((mp_shape5_t){2, 8, 3, 5, 37}, 16, g133, 0, 8, 0),
        conv_case((mp_shape5_t){1, 3, 4, 4, 32}, 8, g222, 0, 8, 0),
        conv_case((mp_shape5_t){2, 9, 7, 4, 49}, 5, g555s3, 0, 8, 0),
        conv_case((mp_shape5_t){1, 12, 3, 5, 33}, 7, g111s2, 0, 8, 0),
        conv_case((mp_shape5_t){2, 20, 3, 4, 17}, 16, g222, 1, 8, 0),
        conv_case((mp_shape5_t){1, 24, 3, 4, 16}, 5, g122, 1, 8, 0),
        conv_case((mp_shape5_t){2, 6, 3, 4, 18}, 7, g333s2, 1, 8, 0),
        conv_case((mp_shape5_t){1, 5, 3, 3, 16}, 3, g555s3, 1, 8, 0)};
    expect_impl1 = NULL;
    expect_no_ref = 0;
    for (int i = 0; i < 10; i++) MP_CHECK_NEAR(e[i], 0, TOL);
}

/* The input conv (one channel, plain source, nCdhw8c output) gets its
 * weight gradient from medpipe's one-channel kernel (bww1): 3x3x3 with row
 * ends, a 5x5x5 kernel (a second, partial group of w offsets), anisotropic
 * kernels and padding, output channels of 1-5 blocks, batch > 1. */
static void test_bww1_matches_ref(void) {
    mp_conv_geom_t g333 = {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}}, g555 = {{5, 5, 5}, {1, 1, 1}, {2, 2, 2}};
    mp_conv_geom_t g133 = {{1, 3, 3}, {1, 1, 1}, {0, 1, 1}}, g353 = {{3, 5, 3}, {1, 1, 1}, {0, 2, 1}};
    expect_impl2 = "medpipe:bww1";
    dst8_src_any = 1;
    double e[5] = {conv_case((mp_shape5_t){2, 1, 6, 7, 11}, 32, g333, 0, 0, 0),
                   conv_case((mp_shape5_t){1, 1, 6, 5, 9}, 13, g555, 0, 0, 0),
                   conv_case((mp_shape5_t){2, 1, 3, 6, 8}, 5, g133, 0, 0, 0),
                   conv_case((mp_shape5_t){1, 1, 5, 8, 7}, 40, g353, 0, 0, 0),
                   conv_case((mp_shape5_t){3, 1, 4, 4, 4}, 24, g333, 0, 0, 0)};
    expect_impl2 = NULL;
    dst8_src_any = 0;
    for (int i = 0; i < 5; i++) MP_CHECK_NEAR(e[i], 0, TOL);
}

/* One loss case: mp_cpu_dc_ce_loss_f32 against the reference in double
 * (loss, and gradient relative to its largest entry); labels random below k
 * with the logits leaning towards them, as in training. */
static double loss_case(mp_shape5_t s, int batch_dice, int do_bg, double scale) {
    int64_t sp = s.d * s.h * s.w, nz = mp_shape5_elems(s);
    float *z = rand_f(nz, -3, 3), *dz = rand_f(nz, 0, 0);
    double *zd = mp_alloc((size_t)nz * sizeof *zd), *dzd = mp_alloc((size_t)nz * sizeof *dzd);
    uint8_t *lab = mp_alloc((size_t)(s.n * sp));
    for (int64_t i = 0; i < s.n * sp; i++) {
        lab[i] = (uint8_t)(mp_rng_u32(&rng) % (uint32_t)s.c);
        z[(i / sp * s.c + lab[i]) * sp + i % sp] += 1.5f;
    }
    for (int64_t i = 0; i < nz; i++) zd[i] = z[i];
    mp_loss_opts_t o;
    mp_loss_opts_init(&o);
    o.batch_dice = batch_dice, o.do_bg = do_bg;
    double want = mp_ref_dc_ce_loss_f64(dzd, zd, lab, s, &o, scale);
    double got = mp_cpu_dc_ce_loss_f32(dz, z, lab, s, &o, scale), got0 = mp_cpu_dc_ce_loss_f32(NULL, z, lab, s, &o, 1);
    double e = fmax(fabs(got - want), fabs(got0 - want)) / fmax(fabs(want), 1e-3), m = 0, d = 0;
    for (int64_t i = 0; i < nz; i++) m = fmax(m, fabs(dzd[i])), d = fmax(d, fabs(dz[i] - dzd[i]));
    e = fmax(e, d / m);
    if (e > 1e-5) fprintf(stderr, "  loss case k=%lld batch_dice %d do_bg %d: loss %.9g vs %.9g, err %g\n",
                          (long long)s.c, batch_dice, do_bg, got, want, e);
    mp_free(z), mp_free(dz), mp_free(zd), mp_free(dzd), mp_free(lab);
    return e;
}

/* The fast loss (loss.c) equals the reference: 2-5 classes, batch Dice on
 * and off, background in and out, batch 1-3, volumes that do not fill the
 * last voxel chunk, a loss scale; and the same on 1 and 2 threads. */
static void test_loss_matches_ref(void) {
    MP_CHECK(mp_cpu_dc_ce_loss_supported((mp_shape5_t){2, 2, 4, 4, 4}, &(mp_loss_opts_t){.do_bg = 0}));
    MP_CHECK(!mp_cpu_dc_ce_loss_supported((mp_shape5_t){2, 1, 4, 4, 4}, &(mp_loss_opts_t){.do_bg = 0}));
    MP_CHECK(!mp_cpu_dc_ce_loss_supported((mp_shape5_t){9, 4, 4, 4, 4}, &(mp_loss_opts_t){.do_bg = 1}));
    MP_CHECK_NEAR(loss_case((mp_shape5_t){2, 2, 9, 10, 11}, 0, 0, 1.0), 0, 1e-5);
    MP_CHECK_NEAR(loss_case((mp_shape5_t){3, 3, 5, 7, 6}, 1, 0, 1.0), 0, 1e-5);
    MP_CHECK_NEAR(loss_case((mp_shape5_t){1, 5, 6, 6, 7}, 0, 1, 0.5), 0, 1e-5);
    MP_CHECK_NEAR(loss_case((mp_shape5_t){2, 4, 3, 5, 5}, 1, 1, 1024.0), 0, 1e-5);
    MP_CHECK_NEAR(loss_case((mp_shape5_t){1, 2, 1, 1, 37}, 0, 0, 1.0), 0, 1e-5);
    /* Thread count does not change a bit. */
    mp_shape5_t s = {2, 3, 8, 9, 10};
    int64_t nz = mp_shape5_elems(s);
    float *z = rand_f(nz, -2, 2), *d1 = rand_f(nz, 0, 0), *d2 = rand_f(nz, 0, 0);
    uint8_t *lab = mp_alloc((size_t)(nz / 3));
    for (int64_t i = 0; i < nz / 3; i++) lab[i] = (uint8_t)(i * 7 % 3);
    mp_loss_opts_t o;
    mp_loss_opts_init(&o);
    mp_cpu_set_threads(1);
    double l1 = mp_cpu_dc_ce_loss_f32(d1, z, lab, s, &o, 1);
    mp_cpu_set_threads(2);
    double l2 = mp_cpu_dc_ce_loss_f32(d2, z, lab, s, &o, 1);
    MP_CHECK(l1 == l2 && memcmp(d1, d2, (size_t)nz * sizeof *d1) == 0);
    mp_free(z), mp_free(d1), mp_free(d2), mp_free(lab);
}

static void test_conv_fused_lrelu(void) {
    mp_conv_geom_t g333 = {{3, 3, 3}, {1, 1, 1}, {1, 1, 1}};
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 6, 5, 4, 6}, 9, g333, 0, 0, 1), 0, TOL);
}

static void test_deconv_matches_ref(void) {
    mp_conv_geom_t g222 = {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}};
    mp_conv_geom_t g122 = {{1, 2, 2}, {1, 2, 2}, {0, 0, 0}};
    mp_conv_geom_t g3s2 = {{3, 3, 3}, {2, 2, 2}, {1, 1, 1}};
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 20, 3, 4, 3}, 10, g222, 1, 0, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){2, 6, 3, 4, 5}, 5, g122, 1, 8, 0), 0, TOL);
    MP_CHECK_NEAR(conv_case((mp_shape5_t){3, 5, 3, 2, 3}, 7, g3s2, 1, 0, 0), 0, TOL);
}

/* Instance norm + LeakyReLU on a blocked layout vs ref norm, lrelu and their backward. */
static double inorm_case(mp_shape5_t s, int64_t block) {
    int64_t n = mp_shape5_elems(s);
    float *x = rand_f(n, -2, 3), *dy = rand_f(n, -1, 1), *ga = rand_f(s.c, 0.5, 1.5), *be = rand_f(s.c, -0.5, 0.5);
    float *t = rand_f(n, 0, 0), *y_ref = rand_f(n, 0, 0), *dt = rand_f(n, 0, 0), *dx_ref = rand_f(n, 0, 0);
    float *m = rand_f(s.n * s.c, 0, 0), *r = rand_f(s.n * s.c, 0, 0), *dg_ref = rand_f(s.c, 0, 0), *db_ref = rand_f(s.c, 0, 0);
    mp_ref_norm_forward_f32(t, m, r, x, ga, be, s, 1, 1e-5);
    mp_ref_lrelu_forward_f32(y_ref, t, n, 0.01);
    mp_ref_lrelu_backward_f32(dt, dy, t, n, 0.01);
    mp_ref_norm_backward_f32(dx_ref, dg_ref, db_ref, dt, x, m, r, ga, s, 1);
    dnnl_memory_desc_t md;
    mp_cpu_layout_t l;
    mp_cpu_md_blocked(&md, s, block);
    if (mp_cpu_layout_from_md(&l, &md)) return 1e9;
    float *xb = to_md(x, s, &md), *dyb = to_md(dy, s, &md);
    size_t bytes = mp_cpu_md_bytes(&md);
    float *yb = mp_alloc(bytes), *dxb = mp_alloc(bytes), *mean = rand_f(s.n * s.c, 0, 0), *rstd = rand_f(s.n * s.c, 0, 0);
    float *dg = rand_f(s.c, 0, 0), *db = rand_f(s.c, 0, 0), *work = rand_f(2 * s.n * s.c, 0, 0);
    memset(yb, 0xff, bytes); /* garbage (NaN) in the padding must be overwritten */
    memset(dxb, 0xff, bytes);
    mp_pool_t *pool = mp_pool_create(2);
    mp_cpu_inorm_forward(pool, yb, mean, rstd, xb, ga, be, &l, 1e-5, 1, 0.01);
    /* The output again from the saved statistics: bit for bit. */
    float *yb2 = mp_alloc(bytes);
    memset(yb2, 0xff, bytes);
    mp_cpu_inorm_apply(pool, yb2, xb, mean, rstd, ga, be, &l, 1, 0.01);
    int same = memcmp(yb, yb2, bytes) == 0;
    mp_free(yb2);
    mp_cpu_inorm_backward(pool, dxb, dg, db, dyb, xb, mean, rstd, ga, be, &l, 1, 0.01, work);
    /* In place (dx over dy) gives the same. */
    float *dyb2 = to_md(dy, s, &md);
    mp_cpu_inorm_backward(pool, dyb2, dg, db, dyb2, xb, mean, rstd, ga, be, &l, 1, 0.01, work);
    same = same && memcmp(dyb2, dxb, bytes) == 0;
    mp_free(dyb2);
    mp_pool_free(pool);
    float *y = from_md(yb, s, &md), *dx = from_md(dxb, s, &md);
    double err = fmax(rel_err(y, y_ref, n), rel_err(dx, dx_ref, n));
    err = fmax(err, fmax(rel_err(dg, dg_ref, s.c), rel_err(db, db_ref, s.c)));
    if (!same) err = 1e9;
    /* padded channels stay exactly zero */
    for (int64_t nn = 0; nn < s.n; nn++)
        for (int64_t ch = s.c; ch < l.cpad; ch++)
            for (int64_t v = 0; v < l.sp; v++)
                if (yb[mp_cpu_layout_index(&l, nn, ch, v)] != 0 || dxb[mp_cpu_layout_index(&l, nn, ch, v)] != 0) err = 1e9;
    mp_free(x), mp_free(dy), mp_free(ga), mp_free(be), mp_free(t), mp_free(y_ref), mp_free(dt), mp_free(dx_ref);
    mp_free(m), mp_free(r), mp_free(dg_ref), mp_free(db_ref), mp_free(xb), mp_free(dyb), mp_free(yb), mp_free(dxb);
    mp_free(mean), mp_free(rstd), mp_free(dg), mp_free(db), mp_free(work), mp_free(y), mp_free(dx);
    return err;
}

static void test_inorm_matches_ref(void) {
    MP_CHECK_NEAR(inorm_case((mp_shape5_t){2, 20, 5, 4, 3}, 16), 0, TOL);
    MP_CHECK_NEAR(inorm_case((mp_shape5_t){3, 5, 3, 4, 5}, 8), 0, TOL);
    MP_CHECK_NEAR(inorm_case((mp_shape5_t){2, 3, 4, 4, 3}, 1), 0, TOL);
}

static double concat_case(mp_shape5_t as, int64_t cb, int64_t block) {
    mp_shape5_t bs = as, ys = as;
    bs.c = cb;
    ys.c = as.c + cb;
    int64_t na = mp_shape5_elems(as), nb = mp_shape5_elems(bs), ny = na + nb;
    float *a = rand_f(na, -1, 1), *b = rand_f(nb, -1, 1), *dy = rand_f(ny, -1, 1);
    float *y_ref = rand_f(ny, 0, 0), *da_ref = rand_f(na, 0, 0), *db_ref = rand_f(nb, 0, 0);
    mp_ref_concat_forward_f32(y_ref, a, b, as, cb);
    mp_ref_concat_backward_f32(da_ref, db_ref, dy, as, cb);
    dnnl_memory_desc_t ma, mb, my;
    mp_cpu_layout_t la, lb, ly;
    mp_cpu_md_blocked(&ma, as, block), mp_cpu_md_blocked(&mb, bs, block), mp_cpu_md_blocked(&my, ys, block);
    mp_cpu_layout_from_md(&la, &ma), mp_cpu_layout_from_md(&lb, &mb), mp_cpu_layout_from_md(&ly, &my);
    float *ab = to_md(a, as, &ma), *bb = to_md(b, bs, &mb), *dyb = to_md(dy, ys, &my);
    float *yb = mp_alloc(mp_cpu_md_bytes(&my)), *dab = mp_alloc(mp_cpu_md_bytes(&ma)), *dbb = mp_alloc(mp_cpu_md_bytes(&mb));
    mp_cpu_concat_forward(NULL, yb, ab, bb, &ly, &la, &lb);
    mp_cpu_concat_backward(NULL, dab, dbb, dyb, &ly, &la, &lb);
    float *y = from_md(yb, ys, &my), *da = from_md(dab, as, &ma), *db = from_md(dbb, bs, &mb);
    double err = fmax(rel_err(y, y_ref, ny), fmax(rel_err(da, da_ref, na), rel_err(db, db_ref, nb)));
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t ch = ys.c; ch < ly.cpad; ch++)
            if (yb[mp_cpu_layout_index(&ly, n, ch, 0)] != 0) err = 1e9;
    mp_free(a), mp_free(b), mp_free(dy), mp_free(y_ref), mp_free(da_ref), mp_free(db_ref), mp_free(ab), mp_free(bb);
    mp_free(dyb), mp_free(yb), mp_free(dab), mp_free(dbb), mp_free(y), mp_free(da), mp_free(db);
    return err;
}

static void test_concat_matches_ref(void) {
    MP_CHECK(concat_case((mp_shape5_t){2, 32, 3, 2, 3}, 20, 16) == 0);
    MP_CHECK(concat_case((mp_shape5_t){3, 5, 2, 3, 2}, 7, 8) == 0);
    MP_CHECK(concat_case((mp_shape5_t){2, 3, 2, 2, 3}, 2, 1) == 0);
}

int main(void) {
    mp_rng_init(&rng, 99, 3);
    mp_cpu_set_threads(2);
    MP_RUN(test_conv_matches_ref);
    MP_RUN(test_conv_shifted_gemm_bwd_weights);
    MP_RUN(test_conv_blocked8_backward);
    MP_RUN(test_deconv8_matches_ref);
    MP_RUN(test_gconv8_matches_ref);
    MP_RUN(test_bww1_matches_ref);
    MP_RUN(test_loss_matches_ref);
    MP_RUN(test_conv_fused_lrelu);
    MP_RUN(test_deconv_matches_ref);
    MP_RUN(test_inorm_matches_ref);
    MP_RUN(test_concat_matches_ref);
    return mp_test_summary();
}
