/* Training: a tiny U-Net on a tiny synthetic cache learns (validation Dice
 * well above what any image-blind labelling reaches); a run stopped at an
 * epoch end or mid-epoch and resumed gives bit-identical checkpoints to an
 * uninterrupted run; the checkpoints open with mp_model_open; non-finite
 * steps never touch the weights; resuming against another cache, a torn
 * checkpoint pair or an occupied run folder fail with clear messages. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/model.h"
#include "medpipe/train.h"

#include <ftw.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static char g_root[512], g_cache[700], g_cache2[700];

/* Synthetic CT, 32x32x24 voxels of 6 mm (a 19 cm field of view), one organ
 * class (liver), no noise, no partial volume: an easy, high-contrast task. */
static int make_cache(const char *ds_dir, const char *cache_dir, int64_t cases, uint64_t seed) {
    mp_synth_params_t p;
    mp_synth_params_init(&p);
    p.seed = seed;
    p.size[0] = 32;
    p.size[1] = 32;
    p.size[2] = 24;
    p.spacing[0] = p.spacing[1] = p.spacing[2] = 6;
    p.classes = 1;
    p.train_cases = cases;
    p.test_cases = 0;
    p.noise_hu[0] = p.noise_hu[1] = 0;
    p.partial_volume = 0;
    int rc = mp_synth_dataset_write(ds_dir, &p, NULL, 1, NULL, NULL);
    mp_dataset_t *ds = NULL;
    mp_fingerprint_t fp;
    mp_plan_t plan;
    if (!rc) rc = mp_dataset_read(&ds, ds_dir);
    if (!rc) rc = mp_fingerprint_compute(&fp, ds, 7, NULL, NULL, NULL, NULL);
    if (!rc) {
        rc = mp_plan_from_fingerprint(&plan, &fp, ds, 8);
        mp_fingerprint_deinit(&fp);
    }
    if (!rc) rc = mp_cache_build(cache_dir, ds, &plan, NULL, NULL, NULL);
    mp_dataset_free(ds);
    return rc;
}

/* Tiny network: 3 stages, features 4/8/16, patch 16x32x32, batch 2. */
static void tiny_opts(mp_train_opts_t *o, const char *cache, const char *run) {
    mp_train_opts_init(o);
    o->cache_dir = cache;
    o->run_dir = run;
    o->epochs = 2;
    o->iters_per_epoch = 3;
    o->batch = 2;
    o->patch_dhw[0] = 16;
    o->patch_dhw[1] = 32;
    o->patch_dhw[2] = 32;
    o->n_stages = 3;
    o->base_features = 4;
    o->max_features = 16;
    o->threads = 1; /* 2 threads on 2 shared cores run slower than 1 */
    o->workers = 1;
    o->val_cases = 1;
    o->seed = 99;
}

static void run_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_root, name);
    rm_rf(buf);
}

static int files_equal(const char *dir_a, const char *dir_b, const char *name) {
    char a[900], b[900];
    snprintf(a, sizeof a, "%s/%s", dir_a, name);
    snprintf(b, sizeof b, "%s/%s", dir_b, name);
    return mp_test_files_equal(a, b);
}

static int count_lines(const char *run, const char *needle) {
    char p[900], line[4096];
    snprintf(p, sizeof p, "%s/log.jsonl", run);
    FILE *f = fopen(p, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    if (f) fclose(f);
    return n;
}

/* Foreground fraction of the held-out case (the last id). */
static double val_fg_fraction(void) {
    mp_cache_t c;
    mp_cache_case_t cc;
    if (mp_cache_open(&c, g_cache)) return -1;
    double frac = -1;
    if (mp_cache_case_map(&c, c.n_cases - 1, &cc) == 0) {
        int64_t n = cc.dim[0] * cc.dim[1] * cc.dim[2], fg = 0;
        for (int64_t i = 0; i < n; i++) fg += cc.seg[i] > 0;
        frac = (double)fg / (double)n;
        mp_cache_case_unmap(&cc);
    }
    mp_cache_close(&c);
    return frac;
}

static void test_learns(void) {
    char run[700];
    run_path(run, sizeof run, "learn");
    mp_train_opts_t o;
    tiny_opts(&o, g_cache, run);
    o.epochs = 4;
    o.iters_per_epoch = 25;
    o.base_features = 8;
    o.max_features = 32;
    o.optimizer = MP_OPT_ADAMW; /* lr 1e-2: SGD's slow start would need several times the steps */
    o.lr = 1e-2;
    o.augment = 0;
    o.val_every = 2;
    o.log_every = 5;
    mp_train_result_t r;
    double t0 = mp_time_now();
    MP_CHECK_OK(mp_train_run(&o, &r));
    double el = mp_time_now() - t0;
    double p = val_fg_fraction();
    /* An image-blind labelling that marks a fraction q of the voxels as
     * foreground at random has expected Dice 2pq/(p+q) <= 2p/(1+p) (q = 1:
     * everything foreground). Ask for that plus 0.3, and at least 0.6. */
    double chance = 2 * p / (1 + p), need = chance + 0.3 > 0.6 ? chance + 0.3 : 0.6;
    printf("  learn: %lld steps in %.1f s (%.3f s/step, wait %.4f s), loss %.3f, Dice %.3f (fg %.3f, chance %.3f)\n",
           (long long)r.step, el, r.mean_step_s, r.mean_data_wait_s, r.last_loss, r.best_dice, p, chance);
    MP_CHECK(p > 0.01 && p < 0.5);
    MP_CHECK(r.epoch == 4 && r.step == 100 && r.steps_run == 100 && r.skipped == 0);
    MP_CHECKF(r.best_dice > need, "best Dice %.3f, need %.3f", r.best_dice, need);
    MP_CHECK(r.best_epoch == 1 || r.best_epoch == 3);
    MP_CHECK(count_lines(run, "\"event\":\"step\"") == 21); /* step 1, then every 5 */
    MP_CHECK(count_lines(run, "\"event\":\"validation\"") == 2);
    MP_CHECK(count_lines(run, "\"event\":\"epoch\"") == 4);
    MP_CHECK(count_lines(run, "\"patches_per_s\"") == 21);
    /* both checkpoints open as trained models and predict the same classes */
    mp_model_t *m = NULL;
    MP_CHECK_OK(mp_model_open(&m, run, "best", 1, 1));
    MP_CHECK(mp_model_get_spec(m)->unet.n_stages == 3 && mp_model_get_spec(m)->unet.features[1] == 16);
    MP_CHECK(mp_model_net(m)->num_classes == 2 && mp_model_net(m)->patch_dhw[0] == 16);
    mp_model_free(m);
    MP_CHECK_OK(mp_model_open(&m, run, "last", 2, 1));
    mp_model_free(m);
}

static int g_stop_at_step = -1, g_stop_at_epoch_end = -1;
static volatile sig_atomic_t g_stop;

static void stopper(void *user, const mp_train_event_t *ev) {
    (void)user;
    if (ev->kind == MP_TRAIN_EV_STEP && ev->step == g_stop_at_step) g_stop = 1;
    if (ev->kind == MP_TRAIN_EV_EPOCH && ev->epoch == g_stop_at_epoch_end) g_stop = 1;
}

static void test_resume_is_exact(void) {
    char a[700], b[700], c[700], torn[700];
    run_path(a, sizeof a, "whole");
    run_path(b, sizeof b, "epoch_stop");
    run_path(c, sizeof c, "mid_stop");
    run_path(torn, sizeof torn, "torn");
    mp_train_opts_t o;
    mp_train_result_t r;
    /* uninterrupted: 2 epochs of 3 steps, validation after each */
    tiny_opts(&o, g_cache, a);
    MP_CHECK_OK(mp_train_run(&o, &r));
    MP_CHECK(r.step == 6 && r.epoch == 2);
    /* stopped right after epoch 1, then resumed */
    tiny_opts(&o, g_cache, b);
    o.progress = stopper;
    o.stop = &g_stop;
    g_stop = 0;
    g_stop_at_epoch_end = 0;
    MP_CHECK(mp_train_run(&o, &r) == MP_TRAIN_STOPPED);
    MP_CHECK(r.step == 3 && r.epoch == 1);
    g_stop = 0;
    g_stop_at_epoch_end = -1;
    o.resume = 1;
    o.epochs = 0; /* the run's own */
    MP_CHECK_OK(mp_train_run(&o, &r));
    MP_CHECK(r.step == 6 && r.epoch == 2 && r.steps_run == 3);
    MP_CHECK(files_equal(a, b, "checkpoint_last.safetensors"));
    MP_CHECK(files_equal(a, b, "checkpoint_best.safetensors"));
    /* stopped mid-epoch 2 (after global step 4), then resumed */
    tiny_opts(&o, g_cache, c);
    o.progress = stopper;
    o.stop = &g_stop;
    g_stop = 0;
    g_stop_at_step = 4;
    MP_CHECK(mp_train_run(&o, &r) == MP_TRAIN_STOPPED);
    MP_CHECK(r.step == 4 && r.epoch == 1);
    MP_CHECK(!files_equal(a, c, "checkpoint_last.safetensors"));
    /* keep the step-4 state: paired with step-6 weights it makes a torn pair */
    MP_CHECK(mkdir(torn, 0755) == 0);
    char src[900], dst[900];
    uint8_t *buf = NULL;
    size_t len = 0;
    snprintf(src, sizeof src, "%s/checkpoint_last.state", c);
    snprintf(dst, sizeof dst, "%s/checkpoint_last.state", torn);
    MP_CHECK_OK(mp_file_read_all(src, &buf, &len));
    MP_CHECK_OK(mp_file_write_atomic(dst, buf, len));
    free(buf);
    g_stop = 0;
    g_stop_at_step = -1;
    o.resume = 1;
    o.workers = 0; /* batches do not depend on the loader's threads */
    MP_CHECK_OK(mp_train_run(&o, &r));
    MP_CHECK(r.step == 6 && r.epoch == 2 && r.steps_run == 2);
    MP_CHECK(files_equal(a, c, "checkpoint_last.safetensors"));
    MP_CHECK(files_equal(a, c, "checkpoint_best.safetensors"));
    MP_CHECK(count_lines(c, "\"event\":\"resume\"") == 1 && count_lines(c, "\"event\":\"stop\"") == 1);
    /* stop requested during the last step of epoch 1: the validation due at
     * that epoch end is left pending, saved, and run first on resume */
    char d[700];
    run_path(d, sizeof d, "pending_val");
    tiny_opts(&o, g_cache, d);
    o.progress = stopper;
    o.stop = &g_stop;
    g_stop = 0;
    g_stop_at_step = 3;
    MP_CHECK(mp_train_run(&o, &r) == MP_TRAIN_STOPPED);
    MP_CHECK(r.step == 3 && r.epoch == 1 && isnan(r.last_dice));
    MP_CHECK(count_lines(d, "\"event\":\"validation\"") == 0);
    g_stop = 0;
    g_stop_at_step = -1;
    o.resume = 1;
    MP_CHECK_OK(mp_train_run(&o, &r));
    MP_CHECK(count_lines(d, "\"event\":\"validation\"") == 2);
    MP_CHECK(files_equal(a, d, "checkpoint_last.safetensors"));
    MP_CHECK(files_equal(a, d, "checkpoint_best.safetensors"));
    /* torn pair: step-6 weights with the step-4 state */
    static const char *names[] = {"plan.json", "model.json", "checkpoint_last.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(src, sizeof src, "%s/%s", a, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", torn, names[i]);
        MP_CHECK_OK(mp_file_read_all(src, &buf, &len));
        MP_CHECK_OK(mp_file_write_atomic(dst, buf, len));
        free(buf);
    }
    tiny_opts(&o, g_cache, torn);
    o.resume = 1;
    MP_CHECK(mp_train_run(&o, &r) == MP_ERR_MISMATCH);
    MP_CHECKF(strstr(mp_error_message(), "killed while saving") != NULL, "%s", mp_error_message());
}

static void test_refusals(void) {
    char a[700];
    snprintf(a, sizeof a, "%s/whole", g_root); /* from test_resume_is_exact */
    mp_train_opts_t o;
    mp_train_result_t r;
    /* a different cache */
    tiny_opts(&o, g_cache2, a);
    o.resume = 1;
    MP_CHECK(mp_train_run(&o, &r) == MP_ERR_MISMATCH);
    MP_CHECKF(strstr(mp_error_message(), "resume with the cache") != NULL, "%s", mp_error_message());
    /* a fresh run over an existing one */
    tiny_opts(&o, g_cache, a);
    MP_CHECK(mp_train_run(&o, &r) == MP_ERR_ARG);
    MP_CHECKF(strstr(mp_error_message(), "already holds a training run") != NULL, "%s", mp_error_message());
    /* resuming a finished run does nothing more */
    o.resume = 1;
    MP_CHECK_OK(mp_train_run(&o, &r));
    MP_CHECK(r.steps_run == 0 && r.step == 6);
    /* a resume with nothing to resume */
    char none[700];
    run_path(none, sizeof none, "none");
    tiny_opts(&o, g_cache, none);
    o.resume = 1;
    MP_CHECK(mp_train_run(&o, &r) == MP_ERR_IO);
    MP_CHECKF(strstr(mp_error_message(), "nothing to resume") != NULL, "%s", mp_error_message());
    /* a patch that the stages cannot halve */
    tiny_opts(&o, g_cache, none);
    o.patch_dhw[0] = 18;
    MP_CHECK(mp_train_run(&o, &r) == MP_ERR_FORMAT);
}

/* A cache whose images are all NaN: every step is skipped and the weights
 * stay exactly at their initialisation. */
static void test_nonfinite_skipped(void) {
    char cache[700], ds[700], run[700];
    snprintf(cache, sizeof cache, "%s/nan_cache", g_root);
    snprintf(ds, sizeof ds, "%s/nan_ds", g_root);
    run_path(run, sizeof run, "nan_run");
    MP_CHECK_OK(make_cache(ds, cache, 2, 5));
    mp_cache_t c;
    MP_CHECK_OK(mp_cache_open(&c, cache));
    for (int64_t k = 0; k < c.n_cases; k++) {
        char p[900];
        uint8_t *buf = NULL;
        size_t len = 0;
        snprintf(p, sizeof p, "%s/cases/%s.img.f32", cache, c.ids[k]);
        MP_CHECK_OK(mp_file_read_all(p, &buf, &len));
        float nan = NAN;
        for (size_t i = 0; i + 4 <= len; i += 4) memcpy(buf + i, &nan, 4);
        MP_CHECK_OK(mp_file_write_atomic(p, buf, len));
        free(buf);
    }
    mp_cache_close(&c);
    mp_train_opts_t o;
    mp_train_result_t r;
    tiny_opts(&o, cache, run);
    o.epochs = 1;
    o.val_cases = 0;
    MP_CHECK_OK(mp_train_run(&o, &r));
    MP_CHECK(r.skipped == 3 && r.step == 3 && isnan(r.best_dice));
    MP_CHECK(count_lines(run, "\"skipped\":true") == 3);
    mp_model_t *m = NULL;
    MP_CHECK_OK(mp_model_open(&m, run, "last", 2, 1));
    mp_unet_t *u = mp_model_unet(m);
    int64_t n = mp_unet_param_count(u);
    float *w = malloc((size_t)n * sizeof *w);
    memcpy(w, mp_unet_params(u), (size_t)n * sizeof *w);
    mp_unet_init_weights(u, 99);
    int same = memcmp(w, mp_unet_params(u), (size_t)n * sizeof *w) == 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) finite &= isfinite(w[i]) != 0;
    free(w);
    mp_model_free(m);
    MP_CHECK(same && finite);
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s", mp_test_tmpdir("train"));
    char ds[700], ds2[700];
    snprintf(ds, sizeof ds, "%s/ds", g_root);
    snprintf(ds2, sizeof ds2, "%s/ds2", g_root);
    snprintf(g_cache, sizeof g_cache, "%s/cache", g_root);
    snprintf(g_cache2, sizeof g_cache2, "%s/cache2", g_root);
    if (make_cache(ds, g_cache, 6, 42) || make_cache(ds2, g_cache2, 4, 43)) {
        fprintf(stderr, "cannot build the test caches: %s\n", mp_error_message());
        return 1;
    }
    MP_RUN(test_learns);
    MP_RUN(test_resume_is_exact);
    MP_RUN(test_refusals);
    MP_RUN(test_nonfinite_skipped);
    rm_rf(g_root);
    return mp_test_summary();
}
