/* safetensors checkpoints: save/load round trip gives identical outputs;
 * truncated, corrupt and mismatched files fail with a message naming the
 * problem and leave the model untouched; the training state round-trips.
 * Also leaves a checkpoint plus an independent raw dump in
 * $BUILD/test-artifacts for tests/py/test_nn_safetensors.py. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/nn.h"

static void tiny(mp_unet_config_t *c) {
    mp_unet_config_default(c);
    c->n_stages = 3;
    c->features[0] = 4, c->features[1] = 6, c->features[2] = 8;
    c->batch = 1;
    c->patch[0] = c->patch[1] = c->patch[2] = 8;
    c->threads = 1;
}

static char path_buf[600];
static const char *tmp_path(const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", mp_test_tmpdir("ckpt"), name);
    return path_buf;
}

static void test_round_trip(void) {
    mp_unet_config_t c;
    tiny(&c);
    mp_unet_t *a, *b;
    MP_CHECK_OK(mp_unet_create(&a, &c));
    MP_CHECK_OK(mp_unet_create(&b, &c));
    mp_unet_init_weights(a, 3);
    mp_unet_init_weights(b, 9);
    float img[512], la[1024], lb[1024];
    for (int i = 0; i < 512; i++) img[i] = (float)sin(i * 0.1);
    MP_CHECK_OK(mp_unet_forward(a, la, img));
    char path[600];
    snprintf(path, sizeof path, "%s", tmp_path("a.safetensors"));
    const char *meta[1] = {"format=pt"};
    MP_CHECK_OK(mp_unet_save(a, path, meta, 1));
    MP_CHECK_OK(mp_unet_load(b, path));
    MP_CHECK_OK(mp_unet_forward(b, lb, img));
    MP_CHECK(memcmp(la, lb, sizeof la) == 0);
    MP_CHECK(memcmp(mp_unet_params(a), mp_unet_params(b), (size_t)mp_unet_param_count(a) * 4) == 0);
    /* Artifacts for the Python reader: the checkpoint and the raw parameter slab. */
    const char *bd = getenv("BUILD");
    char dir[512], p2[700];
    snprintf(dir, sizeof dir, "%s/test-artifacts", bd ? bd : "build");
    MP_CHECK_OK(mp_mkdir_p(dir));
    snprintf(p2, sizeof p2, "%s/unet_tiny.safetensors", dir);
    MP_CHECK_OK(mp_unet_save(a, p2, meta, 1));
    snprintf(p2, sizeof p2, "%s/unet_tiny.params.f32", dir);
    MP_CHECK_OK(mp_file_write_atomic(p2, mp_unet_params(a), (size_t)mp_unet_param_count(a) * 4));
    FILE *f = fopen((snprintf(p2, sizeof p2, "%s/unet_tiny.index.txt", dir), p2), "w");
    MP_CHECK(f);
    for (int i = 0; i < mp_unet_n_tensors(a); i++) {
        const mp_param_info_t *p = mp_unet_tensor(a, i);
        fprintf(f, "%s %lld", p->name, (long long)p->offset);
        for (int k = 0; k < p->ndim; k++) fprintf(f, " %lld", (long long)p->shape[k]);
        fputc('\n', f);
    }
    fclose(f);
    mp_unet_free(a);
    mp_unet_free(b);
}

static void test_bad_files(void) {
    mp_unet_config_t c;
    tiny(&c);
    mp_unet_t *a, *b;
    MP_CHECK_OK(mp_unet_create(&a, &c));
    c.features[1] = 5; /* a different model */
    MP_CHECK_OK(mp_unet_create(&b, &c));
    char path[600], cut[600];
    snprintf(path, sizeof path, "%s", tmp_path("good.safetensors"));
    snprintf(cut, sizeof cut, "%s", tmp_path("cut.safetensors"));
    MP_CHECK_OK(mp_unet_save(a, path, NULL, 0));
    /* mismatched model: names the tensor and both shapes */
    int rc = mp_unet_load(b, path);
    MP_CHECKF(rc == MP_ERR_MISMATCH, "rc %d", rc);
    MP_CHECKF(strstr(mp_error_message(), "encoder.stages.1.0.convs.0.conv.weight") &&
                  strstr(mp_error_message(), "(6, 4, 3, 3, 3)") && strstr(mp_error_message(), "(5, 4, 3, 3, 3)"),
              "%s", mp_error_message());
    /* truncated: the model keeps its parameters */
    uint8_t *buf;
    size_t len;
    MP_CHECK_OK(mp_file_read_all(path, &buf, &len));
    MP_CHECK_OK(mp_file_write_atomic(cut, buf, len - 100));
    float *before = malloc((size_t)mp_unet_param_count(a) * 4);
    memcpy(before, mp_unet_params(a), (size_t)mp_unet_param_count(a) * 4);
    mp_unet_init_weights(a, 77);
    memcpy(before, mp_unet_params(a), (size_t)mp_unet_param_count(a) * 4);
    rc = mp_unet_load(a, cut);
    MP_CHECKF(rc == MP_ERR_FORMAT && strstr(mp_error_message(), "truncated"), "rc %d: %s", rc, mp_error_message());
    MP_CHECK(memcmp(before, mp_unet_params(a), (size_t)mp_unet_param_count(a) * 4) == 0);
    /* header length beyond the file, a header that is not JSON, a file too short */
    uint64_t huge = 1u << 30;
    memcpy(buf, &huge, 8);
    MP_CHECK_OK(mp_file_write_atomic(cut, buf, len));
    MP_CHECK(mp_unet_load(a, cut) == MP_ERR_FORMAT);
    uint64_t small = 16;
    memcpy(buf, &small, 8);
    memset(buf + 8, '[', 16);
    MP_CHECK_OK(mp_file_write_atomic(cut, buf, len));
    MP_CHECK(mp_unet_load(a, cut) == MP_ERR_FORMAT);
    MP_CHECK_OK(mp_file_write_atomic(cut, buf, 5));
    MP_CHECK(mp_unet_load(a, cut) == MP_ERR_FORMAT);
    MP_CHECK(mp_unet_load(a, tmp_path("missing.safetensors")) != MP_OK);
    free(buf);
    free(before);
    mp_unet_free(a);
    mp_unet_free(b);
}

static void test_train_state(void) {
    mp_opt_config_t oc;
    mp_opt_config_adamw(&oc);
    mp_opt_t o, p;
    MP_CHECK_OK(mp_opt_init(&o, &oc, 100));
    MP_CHECK_OK(mp_opt_init(&p, &oc, 100));
    for (int i = 0; i < 200; i++) o.state[i] = (float)i * 0.5f;
    o.step = 17;
    uint64_t rs[4] = {1, 2, 3, 0xffffffffffffull}, rl[4] = {0};
    char path[600];
    snprintf(path, sizeof path, "%s", tmp_path("state.safetensors"));
    MP_CHECK_OK(mp_train_state_save(path, &o, rs, "{\"lr\": 0.001}"));
    MP_CHECK_OK(mp_train_state_load(path, &p, rl));
    MP_CHECK(p.step == 17 && memcmp(o.state, p.state, 200 * 4) == 0 && memcmp(rs, rl, sizeof rs) == 0);
    mp_opt_t q;
    mp_opt_config_sgd(&oc);
    MP_CHECK_OK(mp_opt_init(&q, &oc, 100));
    MP_CHECK(mp_train_state_load(path, &q, rl) == MP_ERR_MISMATCH);
    mp_opt_deinit(&o), mp_opt_deinit(&p), mp_opt_deinit(&q);
}

static void test_optimizers_match_pytorch_rules(void) {
    /* One parameter, hand-computed with torch.optim.SGD(nesterov) and AdamW formulas. */
    mp_opt_config_t oc;
    mp_opt_config_sgd(&oc);
    mp_opt_t o;
    MP_CHECK_OK(mp_opt_init(&o, &oc, 1));
    float w = 1.0f, g = 0.5f;
    mp_opt_step(&o, &w, &g, 0.1);
    /* d = g + wd*w = 0.50003; buf = d; update d + 0.99*buf */
    double d = 0.5 + 3e-5, upd = d + 0.99 * d;
    MP_CHECK_NEAR(w, 1.0 - 0.1 * upd, 1e-6);
    float w2 = w;
    g = 0.5f;
    mp_opt_step(&o, &w, &g, 0.1);
    double d2 = 0.5 + 3e-5 * w2, buf2 = 0.99 * d + d2;
    MP_CHECK_NEAR(w, w2 - 0.1 * (d2 + 0.99 * buf2), 1e-6);
    mp_opt_deinit(&o);
    /* clipping: norm 13 > 12 scales the gradient by 12/13 */
    float gs[2] = {5, 12}, ws[2] = {0, 0};
    oc.momentum = 0, oc.nesterov = 0, oc.weight_decay = 0;
    MP_CHECK_OK(mp_opt_init(&o, &oc, 2));
    double n = mp_opt_step(&o, ws, gs, 1.0);
    MP_CHECK_NEAR(n, 13, 1e-6);
    MP_CHECK_NEAR(ws[1], -12.0 * 12.0 / 13.0, 1e-4);
    mp_opt_deinit(&o);
    mp_opt_config_adamw(&oc);
    MP_CHECK_OK(mp_opt_init(&o, &oc, 1));
    w = 1.0f, g = 0.2f;
    mp_opt_step(&o, &w, &g, 0.01);
    /* step 1: mhat = g, vhat = g^2, so the update is lr * g/(|g| + eps) plus decay */
    MP_CHECK_NEAR(w, 1.0 * (1 - 0.01 * 0.01) - 0.01 * 0.2 / (0.2 + 1e-8), 1e-6);
    mp_opt_deinit(&o);
    MP_CHECK_NEAR(mp_lr_poly(0.01, 0, 100, 0.9), 0.01, 1e-12);
    MP_CHECK_NEAR(mp_lr_poly(0.01, 50, 100, 0.9), 0.01 * pow(0.5, 0.9), 1e-12);
}

int main(void) {
    MP_RUN(test_round_trip);
    MP_RUN(test_bad_files);
    MP_RUN(test_train_state);
    MP_RUN(test_optimizers_match_pytorch_rules);
    return mp_test_summary();
}
