/* The run folder of a trained model (src/train/model.c): plan.json +
 * model.json round trip, strict refusal of broken model.json files, the
 * U-Net inference adapter (a patch gives the same logits alone in a padded
 * batch as in a full one), mp_model_open's errors naming the file at fault
 * and the predict pipeline through an opened model. Also leaves two tiny
 * random-weight run folders in $BUILD/test-artifacts for
 * tests/py/test_predict.py (predict_run: 1 channel, 3 classes;
 * predict_run2: 2 channels, 2 classes). */
#include "harness.h"
#include "medpipe/core.h"
#include "medpipe/infer.h"
#include "medpipe/model.h"

#include <stdint.h>

static void tiny_plan(mp_plan_t *p, int channels, int classes) {
    memset(p, 0, sizeof *p);
    p->version = MP_PLAN_VERSION;
    p->num_channels = channels;
    for (int c = 0; c < channels; c++) {
        snprintf(p->channels[c].name, sizeof p->channels[c].name, "ch%d", c);
        p->channels[c].norm.kind = MP_INFER_NORM_ZSCORE;
    }
    p->num_classes = classes;
    p->target_spacing[0] = 1.5;
    p->target_spacing[1] = 1.5;
    p->target_spacing[2] = 2.0;
    for (int a = 0; a < 3; a++) p->median_shape[a] = 20;
    p->patch_dhw[0] = 8;
    p->patch_dhw[1] = 16;
    p->patch_dhw[2] = 16;
    p->n_stages = 2;
    p->features[0] = 4;
    p->features[1] = 8;
    p->batch_size = 2;
    p->memory_budget_gb = 1;
    /* derived: plan.json's reader recomputes it */
    p->memory_estimate_gb = mp_plan_memory_estimate(p->patch_dhw, 2, p->features, 2, channels, classes) / 1e9;
    p->crop_nonzero = 1;
    p->normalize_first = 1;
    snprintf(p->orientation, sizeof p->orientation, "RAS");
    p->seed = 7;
    p->fg_samples_per_class = 100;
}

/* dir/name in one of a few rotating buffers (enough for one expression). */
static const char *path_in(const char *dir, const char *name) {
    static char buf[4][1024];
    static int k;
    char tmp[1024];
    k = (k + 1) % 4;
    snprintf(tmp, sizeof tmp, "%s/%s", dir, name);
    memcpy(buf[k], tmp, sizeof tmp);
    return buf[k];
}

/* A run folder with random weights saved as checkpoint_<which>. */
static int make_run(const char *dir, int channels, int classes, const char *which, uint64_t seed) {
    mp_plan_t plan;
    mp_model_spec_t spec;
    mp_unet_t *u = NULL;
    tiny_plan(&plan, channels, classes);
    int rc = mp_model_spec_from_plan(&spec, &plan);
    if (!rc) rc = mp_model_spec_write(dir, &spec);
    if (!rc) rc = mp_unet_create(&u, &spec.unet);
    if (!rc) {
        char name[64];
        snprintf(name, sizeof name, "checkpoint_%s.safetensors", which);
        mp_unet_init_weights(u, seed);
        rc = mp_unet_save(u, path_in(dir, name), NULL, 0);
    }
    mp_unet_free(u);
    return rc;
}

static int write_text(const char *path, const char *text) { return mp_file_write_atomic(path, text, strlen(text)); }

static void test_spec_round_trip(void) {
    const char *dir = path_in(mp_test_tmpdir("model"), "spec");
    mp_plan_t plan;
    mp_model_spec_t s, r;
    tiny_plan(&plan, 2, 3);
    MP_CHECK_OK(mp_model_spec_from_plan(&s, &plan));
    MP_CHECK(s.unet.in_channels == 2 && s.unet.num_classes == 3 && s.unet.n_stages == 2);
    MP_CHECK(s.unet.features[0] == 4 && s.unet.features[1] == 8 && s.unet.features[2] == 0);
    MP_CHECK(s.unet.patch[0] == 8 && s.unet.patch[1] == 16 && s.unet.patch[2] == 16 && s.unet.batch == 2);
    /* non-default architecture fields must survive the trip */
    s.unet.kernel[1][0] = 1;
    s.unet.stride[1][0] = 1;
    s.unet.n_conv_per_stage = 3;
    s.unet.lrelu_slope = 0.02;
    s.unet.norm_eps = 1e-4;
    s.unet.deep_supervision = 1;
    MP_CHECK_OK(mp_model_spec_write(dir, &s));
    MP_CHECK_OK(mp_model_spec_read(&r, dir));
    char *js = NULL, *jr = NULL;
    MP_CHECK_OK(mp_plan_to_json(&s.plan, &js));
    MP_CHECK_OK(mp_plan_to_json(&r.plan, &jr));
    int same_plan = strcmp(js, jr) == 0;
    free(js);
    free(jr);
    MP_CHECK(same_plan);
    MP_CHECK(r.unet.in_channels == 2 && r.unet.num_classes == 3 && r.unet.n_stages == 2);
    for (int st = 0; st < 2; st++)
        for (int a = 0; a < 3; a++) {
            MP_CHECK(r.unet.kernel[st][a] == s.unet.kernel[st][a]);
            MP_CHECK(r.unet.stride[st][a] == s.unet.stride[st][a]);
        }
    MP_CHECK(r.unet.n_conv_per_stage == 3 && r.unet.deep_supervision == 1);
    MP_CHECK(r.unet.lrelu_slope == 0.02 && r.unet.norm_eps == 1e-4);
}

/* Each broken model.json is refused, and the message names the file and
 * the field. */
static void test_spec_strict(void) {
    const char *dir = path_in(mp_test_tmpdir("model"), "strict");
    mp_plan_t plan;
    mp_model_spec_t s, r;
    tiny_plan(&plan, 1, 2);
    MP_CHECK_OK(mp_model_spec_from_plan(&s, &plan));
    MP_CHECK_OK(mp_model_spec_write(dir, &s));
    const char *mj = path_in(dir, "model.json");
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"{", "not valid JSON"},
        {"[1, 2]", "not a JSON object"},
        {"{\"version\": 2, \"architecture\": \"plain_unet\"}", "\"version\""},
        {"{\"version\": 1, \"architecture\": \"resunet\"}", "\"architecture\""},
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[3,3,3]], "
         "\"stride_dhw\": [[1,1,1],[2,2,2]]}",
         "\"kernel_dhw\""},
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[3,3,3],[3,3.5,3]], "
         "\"stride_dhw\": [[1,1,1],[2,2,2]]}",
         "\"kernel_dhw\"[1][1]"},
        /* an even kernel grows the output past the patch (found by fuzz/fuzz_model.c) */
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[4,3,3],[3,3,3]], "
         "\"stride_dhw\": [[1,1,1],[2,2,2]]}",
         "\"kernel_dhw\"[0][0] is not an odd integer"},
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[3,3,3],[3,3,3]], "
         "\"stride_dhw\": [[1,1,1],[2,9,2]]}",
         "\"stride_dhw\"[1][1]"},
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[3,3,3],[3,3,3]], "
         "\"stride_dhw\": [[1,1,1],[2,2,2]], \"n_conv_per_stage\": 2.5, \"lrelu_slope\": 0.01, "
         "\"norm_eps\": 1e-5, \"deep_supervision\": false}",
         "\"n_conv_per_stage\""},
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[3,3,3],[3,3,3]], "
         "\"stride_dhw\": [[1,1,1],[2,2,2]], \"n_conv_per_stage\": 2, \"lrelu_slope\": 0.01, "
         "\"norm_eps\": 1e-5}",
         "\"deep_supervision\""},
        {"{\"version\": 1, \"architecture\": \"plain_unet\", \"kernel_dhw\": [[3,3,3],[3,3,3]], "
         "\"stride_dhw\": [[1,1,1],[2,2,2]], \"n_conv_per_stage\": 2, \"lrelu_slope\": \"x\", "
         "\"norm_eps\": 1e-5, \"deep_supervision\": false}",
         "\"lrelu_slope\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        MP_CHECK_OK(write_text(mj, bad[i].json));
        int rc = mp_model_spec_read(&r, dir);
        const char *msg = mp_error_message();
        MP_CHECKF(rc < 0, "case %zu accepted", i);
        MP_CHECKF(strstr(msg, "model.json") && strstr(msg, bad[i].needle), "case %zu: '%s'", i, msg);
    }
    /* the network refuses an even kernel too, whoever configures it */
    mp_unet_t *u = NULL;
    s.unet.kernel[0][0] = 4;
    MP_CHECK(mp_unet_create(&u, &s.unet) == MP_ERR_ARG && u == NULL);
    MP_CHECKF(strstr(mp_error_message(), "kernel 4"), "'%s'", mp_error_message());
    s.unet.kernel[0][0] = 3;
    /* a broken plan.json is named too */
    MP_CHECK_OK(mp_model_spec_write(dir, &s));
    MP_CHECK_OK(write_text(path_in(dir, "plan.json"), "{\"version\": 1}"));
    MP_CHECK(mp_model_spec_read(&r, dir) < 0);
    MP_CHECKF(strstr(mp_error_message(), "plan.json"), "'%s'", mp_error_message());
}

/* Logits of one patch alone (padded batch) equal its logits in a full
 * batch with other patches. */
static void test_unet_net_partial_batch(void) {
    mp_plan_t plan;
    mp_model_spec_t s;
    mp_unet_t *u = NULL;
    mp_unet_net_t a;
    mp_infer_net_t net;
    tiny_plan(&plan, 2, 3);
    plan.batch_size = 3;
    MP_CHECK_OK(mp_model_spec_from_plan(&s, &plan));
    MP_CHECK_OK(mp_unet_create(&u, &s.unet));
    mp_unet_init_weights(u, 11);
    MP_CHECK_OK(mp_unet_net_init(&a, u, &net));
    MP_CHECK(net.in_channels == 2 && net.num_classes == 3 && net.max_batch == 3);
    MP_CHECK(net.patch_dhw[0] == 8 && net.patch_dhw[1] == 16 && net.patch_dhw[2] == 16);
    size_t in_n = 2 * 8 * 16 * 16, out_n = 3 * 8 * 16 * 16;
    float *in = mp_alloc(3 * in_n * sizeof(float)), *full = mp_alloc(3 * out_n * sizeof(float));
    float *part = mp_alloc(2 * out_n * sizeof(float));
    mp_rng_t rng;
    mp_rng_init(&rng, 5, 0);
    for (size_t i = 0; i < 3 * in_n; i++) in[i] = (float)mp_rng_normal(&rng);
    int ok = in && full && part && net.forward(net.self, full, in, 3) == MP_OK;
    /* patches 1 and 2 as a batch of 2, then patch 2 alone */
    ok = ok && net.forward(net.self, part, in + in_n, 2) == MP_OK;
    double d12 = 0, d2 = 0;
    for (size_t i = 0; ok && i < 2 * out_n; i++) d12 = fmax(d12, fabs(part[i] - full[out_n + i]));
    ok = ok && net.forward(net.self, part, in + 2 * in_n, 1) == MP_OK;
    for (size_t i = 0; ok && i < out_n; i++) d2 = fmax(d2, fabs(part[i] - full[2 * out_n + i]));
    int bad_batch = ok ? net.forward(net.self, part, in, 4) : 0;
    mp_free(in);
    mp_free(full);
    mp_free(part);
    mp_unet_net_deinit(&a);
    mp_unet_free(u);
    MP_CHECK(ok);
    MP_CHECKF(d12 <= 1e-5 && d2 <= 1e-5, "partial batch differs by %g / %g", d12, d2);
    MP_CHECK(bad_batch == MP_ERR_ARG);
}

static void test_model_open_errors(void) {
    const char *root = mp_test_tmpdir("model");
    char dir[700];
    snprintf(dir, sizeof dir, "%s/open", root);
    mp_model_t *m = NULL;
    /* no folder: the message names plan.json in it */
    MP_CHECK(mp_model_open(&m, dir, "best", 1, 1) < 0 && !m);
    MP_CHECKF(strstr(mp_error_message(), dir) && strstr(mp_error_message(), "plan.json"), "'%s'",
              mp_error_message());
    MP_CHECK_OK(make_run(dir, 1, 2, "last", 3));
    /* no best checkpoint: named */
    MP_CHECK(mp_model_open(&m, dir, "best", 1, 1) < 0 && !m);
    MP_CHECKF(strstr(mp_error_message(), "checkpoint_best.safetensors"), "'%s'", mp_error_message());
    MP_CHECK(mp_model_open(&m, dir, "best", 0, 1) == MP_ERR_ARG);
    MP_CHECK_OK(mp_model_open(&m, dir, "last", 2, 1));
    const mp_model_spec_t *s = mp_model_get_spec(m);
    MP_CHECK(s->unet.batch == 2 && mp_model_net(m)->max_batch == 2 && mp_model_net(m)->num_classes == 2);
    mp_infer_plan_t ip;
    mp_model_infer_plan(m, &ip);
    MP_CHECK(ip.num_channels == 1 && ip.num_classes == 2 && ip.patch_dhw[1] == 16 && !strcmp(ip.orientation, "RAS"));
    mp_model_free(m);
    m = NULL;
    /* weights of another architecture: the file is named */
    char other[760];
    snprintf(other, sizeof other, "%s/other", root);
    MP_CHECK_OK(make_run(other, 2, 3, "best", 4));
    MP_CHECK(mp_model_open(&m, dir, path_in(other, "checkpoint_best.safetensors"), 1, 1) < 0 && !m);
    MP_CHECKF(strstr(mp_error_message(), "other/checkpoint_best.safetensors"), "'%s'", mp_error_message());
    /* a truncated checkpoint */
    MP_CHECK_OK(write_text(path_in(dir, "checkpoint_best.safetensors"), "\x10\0\0\0\0\0\0\0{\"a\":"));
    MP_CHECK(mp_model_open(&m, dir, "best", 1, 1) < 0 && !m);
    MP_CHECKF(strstr(mp_error_message(), "checkpoint_best.safetensors"), "'%s'", mp_error_message());
    mp_model_free(NULL);
}

/* The whole pipeline through an opened model: labels on the image's grid
 * and identical for batch 1 and batch 2. */
static void test_model_predict(void) {
    const char *dir = path_in(mp_test_tmpdir("model"), "pred");
    MP_CHECK_OK(make_run(dir, 1, 3, "best", 9));
    mp_model_t *m1 = NULL, *m2 = NULL;
    MP_CHECK_OK(mp_model_open(&m1, dir, NULL, 1, 1));
    MP_CHECK_OK(mp_model_open(&m2, dir, "best", 2, 2));
    int64_t d[4] = {21, 17, 13, 1};
    mp_vol_t *img = NULL;
    MP_CHECK_OK(mp_vol_create(&img, d, MP_DTYPE_I16));
    double aff[4][4] = {{-0.9, 0, 0, 10}, {0, -1.2, 0, 5}, {0, 0, 2.5, -30}, {0, 0, 0, 1}};
    mp_vol_set_affine(img, aff);
    int16_t *x = img->data;
    for (int64_t i = 0; i < mp_vol_voxels(img); i++) x[i] = (int16_t)((i * 37) % 101 - 20);
    mp_infer_plan_t ip;
    mp_model_infer_plan(m1, &ip);
    mp_infer_result_t r1, r2;
    MP_CHECK_OK(mp_infer_predict(&r1, img, mp_model_net(m1), &ip, NULL, MP_INFER_PROBS_F32, NULL));
    MP_CHECK_OK(mp_infer_predict(&r2, img, mp_model_net(m2), &ip, NULL, MP_INFER_PROBS_F32, NULL));
    int same_grid = 1, same = 1;
    for (int a = 0; a < 3; a++) same_grid &= r1.labels->dim[a] == d[a];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) same_grid &= r1.labels->affine[r][c] == aff[r][c];
    same = memcmp(r1.labels->data, r2.labels->data, (size_t)mp_vol_voxels(img)) == 0 &&
           memcmp(r1.probs->data, r2.probs->data, (size_t)mp_vol_voxels(img) * 3 * 4) == 0;
    mp_infer_result_deinit(&r1);
    mp_infer_result_deinit(&r2);
    mp_vol_free(img);
    mp_model_free(m1);
    mp_model_free(m2);
    MP_CHECK(same_grid);
    MP_CHECK(same);
}

/* Run folders for tests/py/test_predict.py. */
static void test_write_artifacts(void) {
    const char *bd = getenv("BUILD");
    char art[1024], a1[1100], a2[1100];
    snprintf(art, sizeof art, "%s/test-artifacts", bd ? bd : "build");
    snprintf(a1, sizeof a1, "%s/predict_run", art);
    snprintf(a2, sizeof a2, "%s/predict_run2", art);
    MP_CHECK_OK(make_run(a1, 1, 3, "best", 21));
    MP_CHECK_OK(make_run(a2, 2, 2, "last", 22));
}

int main(void) {
    MP_RUN(test_spec_round_trip);
    MP_RUN(test_spec_strict);
    MP_RUN(test_unet_net_partial_batch);
    MP_RUN(test_model_open_errors);
    MP_RUN(test_model_predict);
    MP_RUN(test_write_artifacts);
    return mp_test_summary();
}
