/* The whole U-Net: finite-difference gradient check of a tiny network on the
 * reference engine in double precision; the oneDNN engine equals the
 * reference engine (outputs, loss, every gradient); deep supervision; the
 * optimizers; a tiny U-Net overfits one synthetic patch; the oneDNN engine's
 * arena plan by lifetime. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/nn.h"

/* 3 stages, odd channel counts, an anisotropic stage (kernel 1x3x3, stride 1x2x2). */
static void tiny_config(mp_unet_config_t *c, mp_nn_engine_t engine, mp_nn_dtype_t dt) {
    mp_unet_config_default(c);
    c->n_stages = 3;
    c->in_channels = 2;
    c->num_classes = 3;
    c->features[0] = 3, c->features[1] = 5, c->features[2] = 7;
    c->kernel[1][0] = 1;
    c->stride[1][0] = 1;
    c->batch = 2;
    c->patch[0] = 4, c->patch[1] = 8, c->patch[2] = 8;
    c->engine = engine;
    c->dtype = dt;
    c->threads = 1; /* see par_for in src/cpu/kernels.c: OpenMP spinning on a shared 2-core box */
}

/* A blob of class 1 and a smaller one of class 2 inside, an image that shows them. */
static void synth_patch(float *img, uint8_t *lab, const mp_unet_config_t *c, uint64_t seed) {
    mp_rng_t r;
    mp_rng_init(&r, seed, 0);
    int64_t D = c->patch[0], H = c->patch[1], W = c->patch[2], sp = D * H * W;
    for (int64_t n = 0; n < c->batch; n++) {
        double cz = mp_rng_range(&r, 0.3, 0.7) * D, cy = mp_rng_range(&r, 0.3, 0.7) * H, cx = mp_rng_range(&r, 0.3, 0.7) * W;
        double rad = 0.3 * (double)W;
        for (int64_t z = 0; z < D; z++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    double dz = (z - cz) * (double)W / (double)D, dd = sqrt(dz * dz + (y - cy) * (y - cy) + (x - cx) * (x - cx));
                    int64_t v = (z * H + y) * W + x;
                    uint8_t l = dd < 0.5 * rad ? 2 : dd < rad ? 1 : 0;
                    if (c->num_classes < 3 && l == 2) l = 1;
                    lab[n * sp + v] = l;
                    for (int64_t ch = 0; ch < c->in_channels; ch++)
                        img[(n * c->in_channels + ch) * sp + v] =
                            (float)(l * (ch + 1) * 0.8 + 0.3 * mp_rng_normal(&r));
                }
    }
}

static double loss_of(mp_unet_t *m, const float *img, const uint8_t *lab) {
    double l = NAN;
    if (mp_unet_forward_backward(m, &l, img, lab, NULL)) return NAN;
    return l;
}

static void test_unet_names_and_shapes(void) {
    mp_unet_config_t c;
    mp_unet_config_default(&c);
    c.patch[0] = c.patch[1] = c.patch[2] = 32;
    c.batch = 1;
    mp_unet_t *m;
    MP_CHECK_OK(mp_unet_create(&m, &c));
    const mp_param_info_t *p0 = mp_unet_tensor(m, 0);
    MP_CHECK(strcmp(p0->name, "encoder.stages.0.0.convs.0.conv.weight") == 0);
    MP_CHECK(p0->shape[0] == 32 && p0->shape[1] == 1 && p0->shape[4] == 3);
    int found_tc = 0, found_seg = 0;
    for (int i = 0; i < mp_unet_n_tensors(m); i++) {
        const mp_param_info_t *p = mp_unet_tensor(m, i);
        if (!strcmp(p->name, "decoder.transpconvs.0.weight")) found_tc = p->shape[0] == 320 && p->shape[1] == 256;
        if (!strcmp(p->name, "decoder.seg_layers.3.weight")) found_seg = p->shape[0] == 2 && p->shape[1] == 32;
    }
    MP_CHECK(found_tc && found_seg);
    int64_t total = 0;
    for (int i = 0; i < mp_unet_n_tensors(m); i++) total += mp_unet_tensor(m, i)->count;
    fprintf(stderr, "  default U-Net parameters: %lld\n", (long long)total);
    mp_unet_free(m);
    MP_CHECK(total > 0);
    /* The switch: MEDPIPE_FORCE_REF=1 puts an AUTO model on the reference engine. */
    c.patch[0] = c.patch[1] = c.patch[2] = 16;
    c.n_stages = 3;
    setenv("MEDPIPE_FORCE_REF", "1", 1);
    int rc = mp_unet_create(&m, &c);
    unsetenv("MEDPIPE_FORCE_REF");
    MP_CHECK_OK(rc);
    int forced = mp_unet_uses_ref(m);
    mp_unet_free(m);
    MP_CHECK_OK(mp_unet_create(&m, &c));
    int fast = !mp_unet_uses_ref(m);
    mp_unet_free(m);
    MP_CHECK(forced && fast);
}

static void test_unet_gradient_fd(void) {
    mp_unet_config_t c;
    tiny_config(&c, MP_NN_ENGINE_REF, MP_NN_F64);
    mp_unet_t *m;
    MP_CHECK_OK(mp_unet_create(&m, &c));
    mp_unet_init_weights(m, 7);
    float *params = mp_unet_params(m), *grads = mp_unet_grads(m);
    /* Non-trivial norm affine parameters and biases. */
    mp_rng_t r;
    mp_rng_init(&r, 5, 5);
    for (int i = 0; i < mp_unet_n_tensors(m); i++) {
        const mp_param_info_t *p = mp_unet_tensor(m, i);
        if (p->ndim == 1)
            for (int64_t k = 0; k < p->count; k++) params[p->offset + k] += (float)mp_rng_range(&r, -0.2, 0.2);
    }
    int64_t nimg = c.batch * c.in_channels * 4 * 64, nlab = c.batch * 4 * 64;
    float *img = malloc((size_t)nimg * sizeof *img);
    uint8_t *lab = malloc((size_t)nlab);
    synth_patch(img, lab, &c, 3);
    double l0 = loss_of(m, img, lab);
    int64_t np = mp_unet_param_count(m);
    float *g = malloc((size_t)np * sizeof *g);
    memcpy(g, grads, (size_t)np * sizeof *g);
    double worst = 0;
    int checked = 0;
    for (int i = 0; i < mp_unet_n_tensors(m); i++) {
        const mp_param_info_t *p = mp_unet_tensor(m, i);
        for (int s = 0; s < 1; s++) { /* one random entry per tensor keeps the ASan run short */
            int64_t k = p->offset + (int64_t)mp_rng_below(&r, (uint64_t)p->count);
            float keep = params[k];
            double h = 1e-5 * fmax(1.0, fabs(keep)), lp = 0, lm = 0;
            params[k] = (float)(keep + h);
            double up = params[k];
            MP_CHECK_OK(mp_unet_forward_loss(m, &lp, img, lab, NULL));
            params[k] = (float)(keep - h);
            double dn = params[k];
            MP_CHECK_OK(mp_unet_forward_loss(m, &lm, img, lab, NULL));
            params[k] = keep;
            double num = (lp - lm) / (up - dn), ana = g[k];
            double err = fabs(num - ana) / fmax(fabs(num) + fabs(ana), 1e-4);
            if (err > worst) worst = err;
            if (err > 1e-3) fprintf(stderr, "  %s[%lld]: fd %.8g analytic %.8g\n", p->name, (long long)(k - p->offset), num, ana);
            checked++;
        }
    }
    fprintf(stderr, "  loss %.6f, %d parameters checked, worst relative error %.2e\n", l0, checked, worst);
    free(img), free(lab), free(g);
    mp_unet_free(m);
    MP_CHECK(isfinite(l0));
    MP_CHECK(worst < 1e-3);
}

/* max|a-b| / max(max|b|, floor): the floor keeps gradients that are zero in
 * exact arithmetic (conv biases before instance norm) from dividing noise by noise. */
static double rel_err_floor(const float *a, const float *b, int64_t n, double floor) {
    double e = 0, mx = floor;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - (double)b[i]));
        mx = fmax(mx, fabs((double)b[i]));
    }
    return e / (mx + 1e-12);
}

static double rel_err(const float *a, const float *b, int64_t n) { return rel_err_floor(a, b, n, 0); }

/* fast (oneDNN) vs reference engine on the same weights and data. */
static void fast_vs_ref(int deep_supervision) {
    mp_unet_config_t cf, cr;
    tiny_config(&cf, MP_NN_ENGINE_CPU, MP_NN_F32);
    cf.deep_supervision = deep_supervision;
    if (deep_supervision) { /* 4 stages: 3 outputs, the lowest with weight 0 */
        cf.n_stages = 4;
        cf.features[3] = 9;
        cf.patch[1] = cf.patch[2] = 16;
    }
    int64_t sp = cf.patch[0] * cf.patch[1] * cf.patch[2];
    cr = cf;
    cr.engine = MP_NN_ENGINE_REF;
    mp_unet_t *mf, *mr;
    MP_CHECK_OK(mp_unet_create(&mf, &cf));
    MP_CHECK_OK(mp_unet_create(&mr, &cr));
    MP_CHECK(!mp_unet_uses_ref(mf) && mp_unet_uses_ref(mr));
    mp_unet_init_weights(mf, 11);
    mp_unet_init_weights(mr, 11);
    int64_t np = mp_unet_param_count(mf), nimg = cf.batch * cf.in_channels * sp, nlab = cf.batch * sp;
    MP_CHECK(np == mp_unet_param_count(mr));
    MP_CHECK(memcmp(mp_unet_params(mf), mp_unet_params(mr), (size_t)np * 4) == 0);
    float *img = malloc((size_t)nimg * 4), *of = malloc((size_t)(cf.batch * 3 * sp) * 4),
          *orr = malloc((size_t)(cf.batch * 3 * sp) * 4);
    uint8_t *lab = malloc((size_t)nlab);
    synth_patch(img, lab, &cf, 4);
    MP_CHECK_OK(mp_unet_forward(mf, of, img));
    MP_CHECK_OK(mp_unet_forward(mr, orr, img));
    double eo = rel_err(of, orr, cf.batch * 3 * sp);
    double lf = loss_of(mf, img, lab), lr = loss_of(mr, img, lab);
    double eg = 0, gmax = 0;
    for (int64_t i = 0; i < np; i++) gmax = fmax(gmax, fabs(mp_unet_grads(mr)[i]));
    for (int i = 0; i < mp_unet_n_tensors(mf); i++) {
        const mp_param_info_t *p = mp_unet_tensor(mf, i);
        double e = rel_err_floor(mp_unet_grads(mf) + p->offset, mp_unet_grads(mr) + p->offset, p->count, 1e-3 * gmax);
        if (e > 1e-3) fprintf(stderr, "  grad %s: rel err %.3g\n", p->name, e);
        eg = fmax(eg, e);
    }
    fprintf(stderr, "  ds=%d: logits rel err %.2e, loss %.7f vs %.7f, worst grad rel err %.2e\n", deep_supervision, eo,
            lf, lr, eg);
    free(img), free(of), free(orr), free(lab);
    mp_unet_free(mf);
    mp_unet_free(mr);
    MP_CHECK(eo < 1e-4);
    MP_CHECK_NEAR(lf, lr, 1e-5 * fabs(lr));
    MP_CHECK(eg < 1e-3);
}

static void test_unet_fast_equals_ref(void) { fast_vs_ref(0); }
static void test_unet_fast_equals_ref_deep_supervision(void) { fast_vs_ref(1); }

static void test_unet_overfits_one_patch(void) {
    mp_unet_config_t c;
    mp_unet_config_default(&c);
    c.n_stages = 3;
    mp_unet_config_features(&c, 8, 320);
    c.batch = 1;
    c.patch[0] = c.patch[1] = c.patch[2] = 16;
    c.threads = 1;
    mp_unet_t *m;
    MP_CHECK_OK(mp_unet_create(&m, &c));
    mp_unet_init_weights(m, 1);
    int64_t nv = 16 * 16 * 16;
    float *img = malloc((size_t)nv * 4), *logits = malloc((size_t)nv * 2 * 4);
    uint8_t *lab = malloc((size_t)nv);
    synth_patch(img, lab, &c, 9);
    mp_opt_config_t oc;
    mp_opt_config_sgd(&oc);
    mp_opt_t opt;
    MP_CHECK_OK(mp_opt_init(&opt, &oc, mp_unet_param_count(m)));
    const int steps = 60;
    double loss = 0, first = 0;
    for (int s = 0; s < steps; s++) {
        MP_CHECK_OK(mp_unet_forward_backward(m, &loss, img, lab, NULL));
        if (s == 0) first = loss;
        mp_opt_step(&opt, mp_unet_params(m), mp_unet_grads(m), mp_lr_poly(oc.lr, s, steps, 0.9));
    }
    MP_CHECK_OK(mp_unet_forward(m, logits, img));
    double inter = 0, sp = 0, sg = 0;
    for (int64_t v = 0; v < nv; v++) {
        int pred = logits[nv + v] > logits[v];
        inter += pred && lab[v] == 1;
        sp += pred;
        sg += lab[v] == 1;
    }
    double dice = 2 * inter / (sp + sg);
    fprintf(stderr, "  loss %.4f -> %.4f after %d SGD steps, Dice %.4f\n", first, loss, steps, dice);
    mp_opt_deinit(&opt);
    free(img), free(logits), free(lab);
    mp_unet_free(m);
    MP_CHECK(loss < -0.5);
    MP_CHECK(dice > 0.95);
}

/* Profiling charges every conv pass once per step with the layer's FLOPs:
 * the per-kind and per-layer FLOPs add up to the network's count, and every
 * kind that ran took time. */
static void test_unet_profile_counts(void) {
    mp_unet_config_t c;
    tiny_config(&c, MP_NN_ENGINE_AUTO, MP_NN_F32);
    mp_unet_t *m;
    MP_CHECK_OK(mp_unet_create(&m, &c));
    if (mp_unet_uses_ref(m)) { /* the reference engine times only the loss */
        mp_unet_free(m);
        return;
    }
    int64_t nv = c.batch * c.patch[0] * c.patch[1] * c.patch[2];
    float *img = calloc((size_t)(nv * c.in_channels), sizeof(float));
    uint8_t *lab = calloc((size_t)nv, 1);
    mp_unet_set_profiling(m, 1);
    double loss;
    MP_CHECK_OK(mp_unet_forward_backward(m, &loss, img, lab, NULL));
    MP_CHECK_OK(mp_unet_forward_backward(m, &loss, img, lab, NULL));
    mp_unet_prof_entry_t p[MP_UNET_PROF_COUNT];
    mp_unet_profile(m, p);
    double ff = mp_unet_flops_forward(m), layers = 0, sec[3], fl;
    char desc[96];
    int nconv = 0;
    for (; !mp_unet_profile_conv(m, nconv, desc, sizeof desc, sec, &fl); nconv++) {
        layers += fl;
        MP_CHECK(sec[0] > 0 && sec[2] > 0);
    }
    mp_unet_free(m);
    free(img), free(lab);
    MP_CHECK(nconv > 0);
    MP_CHECK_NEAR(layers, ff, 1e-6 * ff);
    MP_CHECK_NEAR(p[MP_UNET_PROF_CONV_FWD].flops, 2 * ff, 1e-6 * ff);
    MP_CHECK_NEAR(p[MP_UNET_PROF_CONV_BWD_WEIGHTS].flops, 2 * ff, 1e-6 * ff);
    MP_CHECK(p[MP_UNET_PROF_CONV_FWD].calls == 2 * nconv);
    const mp_unet_prof_t ran[] = {MP_UNET_PROF_CONV_FWD, MP_UNET_PROF_CONV_BWD_DATA, MP_UNET_PROF_CONV_BWD_WEIGHTS,
                                  MP_UNET_PROF_NORM_FWD, MP_UNET_PROF_NORM_BWD, MP_UNET_PROF_CONCAT,
                                  MP_UNET_PROF_LOSS};
    for (size_t k = 0; k < sizeof ran / sizeof ran[0]; k++) MP_CHECK(p[ran[k]].seconds > 0 && p[ran[k]].calls > 0);
}

/* The oneDNN engine plans its arena by lifetime (values kept only when the
 * backward reads them, norm outputs recomputed, gradients and scratchpads
 * sharing bytes); the reference engine gives every buffer its own place.
 * The default U-Net's training arena must come out far smaller. */
static void test_unet_arena_by_lifetime(void) {
    mp_unet_config_t cf, cr;
    mp_unet_config_default(&cf);
    cf.patch[0] = cf.patch[1] = cf.patch[2] = 32;
    cf.threads = 1;
    cf.engine = MP_NN_ENGINE_CPU;
    cr = cf;
    cr.engine = MP_NN_ENGINE_REF;
    mp_unet_t *mf, *mr;
    MP_CHECK_OK(mp_unet_create(&mf, &cf));
    MP_CHECK_OK(mp_unet_create(&mr, &cr));
    double af = (double)mp_unet_arena_bytes(mf), ar = (double)mp_unet_arena_bytes(mr);
    fprintf(stderr, "  default U-Net, 2x32^3: arena %.1f MiB (oneDNN engine) vs %.1f MiB (reference)\n", af / 1048576.0,
            ar / 1048576.0);
    MP_CHECK(af < 0.4 * ar);
    mp_unet_free(mf);
    mp_unet_free(mr);
}

int main(void) {
    MP_RUN(test_unet_names_and_shapes);
    MP_RUN(test_unet_gradient_fd);
    MP_RUN(test_unet_fast_equals_ref);
    MP_RUN(test_unet_fast_equals_ref_deep_supervision);
    MP_RUN(test_unet_overfits_one_patch);
    MP_RUN(test_unet_arena_by_lifetime);
    MP_RUN(test_unet_profile_counts);
    return mp_test_summary();
}
