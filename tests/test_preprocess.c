/* Preprocessing: the dataset check lists every problem, the fingerprint
 * agrees with a direct computation and does not depend on threads, the plan
 * is sane and survives a JSON round trip and edits, the cache holds exactly
 * what mp_infer_preprocess gives (labels through the same grid with
 * per-label linear interpolation, foreground locations on their class),
 * is the same for 1 and 2 threads, and corrupted caches give clear errors. */
#include "harness.h"
#include "medpipe/medpipe.h"

#include <ftw.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path) {
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char g_root[512], g_ds[600];

/* 6 training cases of 48x48x24 voxels, 3 classes, written once. */
static int make_dataset(const char *dir, int64_t cases) {
    mp_synth_params_t p;
    mp_synth_params_init(&p);
    p.size[0] = 48;
    p.size[1] = 48;
    p.size[2] = 24;
    p.spacing[0] = 4;
    p.spacing[1] = 4;
    p.spacing[2] = 6;
    p.classes = 3;
    p.train_cases = cases;
    p.test_cases = 0;
    return mp_synth_dataset_write(dir, &p, NULL, 1, NULL, NULL);
}

static int read_ds(mp_dataset_t **ds, const char *dir) {
    return mp_dataset_read(ds, dir);
}

static void path_of(char *buf, size_t n, const char *dir, const char *sub, const char *name) {
    snprintf(buf, n, "%s/%s/%s", dir, sub, name);
}

static void test_check_lists_all_problems(void) {
    char dir[700], p[900];
    snprintf(dir, sizeof dir, "%s/broken", g_root);
    MP_CHECK_OK(make_dataset(dir, 5));
    /* 1: label missing */
    path_of(p, sizeof p, dir, "labelsTr", "case_001.nii.gz");
    MP_CHECK(remove(p) == 0);
    /* 2: label affine shifted by 0.5 mm */
    mp_vol_t *v = NULL, *w = NULL;
    path_of(p, sizeof p, dir, "labelsTr", "case_002.nii.gz");
    MP_CHECK_OK(mp_image_read(&v, p));
    double aff[4][4];
    memcpy(aff, v->affine, sizeof aff);
    aff[0][3] += 0.5;
    mp_vol_set_affine(v, aff);
    MP_CHECK_OK(mp_image_write(p, v, NULL));
    mp_vol_free(v);
    /* 3: undeclared label value 7 */
    path_of(p, sizeof p, dir, "labelsTr", "case_003.nii.gz");
    MP_CHECK_OK(mp_image_read(&v, p));
    ((uint8_t *)v->data)[5] = 7;
    MP_CHECK_OK(mp_image_write(p, v, NULL));
    mp_vol_free(v);
    /* 4: label of another shape */
    path_of(p, sizeof p, dir, "labelsTr", "case_004.nii.gz");
    MP_CHECK_OK(mp_image_read(&v, p));
    mp_box_t box = {{0, 0, 0}, {v->dim[0] - 2, v->dim[1], v->dim[2]}};
    MP_CHECK_OK(mp_vol_crop(&w, v, &box));
    MP_CHECK_OK(mp_image_write(p, w, NULL));
    mp_vol_free(v);
    mp_vol_free(w);
    mp_dataset_t *ds = NULL;
    MP_CHECK_OK(read_ds(&ds, dir));
    mp_fingerprint_t fp;
    char *problems = NULL;
    int rc = mp_fingerprint_compute(&fp, ds, 1, NULL, NULL, NULL, &problems);
    mp_dataset_free(ds);
    MP_CHECK(rc == MP_ERR_MISMATCH);
    MP_CHECK(problems != NULL);
    MP_CHECKF(strstr(problems, "case_001.nii.gz: missing label"), "%s", problems);
    MP_CHECKF(strstr(problems, "case_002.nii.gz: affine differs"), "%s", problems);
    MP_CHECKF(strstr(problems, "case_003.nii.gz: label value 7 (1 voxels) is not declared"), "%s", problems);
    MP_CHECKF(strstr(problems, "case_004.nii.gz: shape 46x48x24"), "%s", problems);
    MP_CHECKF(strstr(mp_error_message(), "4 problem(s)"), "%s", mp_error_message());
    free(problems);
}

/* Pooled per-case foreground statistics computed directly. */
static void test_fingerprint_direct(void) {
    mp_dataset_t *ds = NULL;
    MP_CHECK_OK(read_ds(&ds, g_ds));
    mp_fingerprint_t fp, fp2;
    mp_pool_t *pool = mp_pool_create(2);
    MP_CHECK_OK(mp_fingerprint_compute(&fp, ds, 7, NULL, NULL, NULL, NULL));
    MP_CHECK_OK(mp_fingerprint_compute(&fp2, ds, 7, pool, NULL, NULL, NULL));
    mp_pool_free(pool);
    MP_CHECK(memcmp(fp.intensity, fp2.intensity, sizeof fp.intensity) == 0);
    mp_fingerprint_deinit(&fp2);
    mp_dataset_cases_t cases;
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cases));
    MP_CHECK(fp.n_cases == cases.n && cases.n == 6);
    double case_mean_sum = 0, lo = INFINITY, hi = -INFINITY;
    double *all = malloc(sizeof(double) * 48 * 48 * 24 * 6);
    int64_t n_all = 0;
    for (int64_t k = 0; k < cases.n; k++) {
        mp_vol_t *img = NULL, *lab = NULL;
        MP_CHECK_OK(mp_image_read(&img, cases.cases[k].images[0]));
        MP_CHECK_OK(mp_image_read(&lab, cases.cases[k].label));
        MP_CHECK(strcmp(fp.cases[k].id, cases.cases[k].id) == 0);
        mp_box_t box;
        MP_CHECK_OK(mp_vol_bbox_nonzero(img, 0, &box, NULL));
        for (int a = 0; a < 3; a++) {
            MP_CHECK(fp.cases[k].shape[a] == img->dim[a]);
            MP_CHECK_NEAR(fp.cases[k].spacing[a], img->spacing[a], 1e-12);
            MP_CHECK(fp.cases[k].crop_shape[a] == box.hi[a] - box.lo[a]);
        }
        mp_voxel_stats_t st;
        MP_CHECK_OK(mp_vol_intensity_stats(img, 0, lab, NULL, 0, NULL, &st));
        MP_CHECK(st.count == fp.cases[k].fg_voxels);
        case_mean_sum += st.mean;
        lo = fmin(lo, st.min);
        hi = fmax(hi, st.max);
        const uint8_t *l = lab->data;
        for (int64_t i = 0; i < mp_vol_voxels(img); i++)
            if (l[i]) all[n_all++] = mp_vol_get(img, i);
        mp_vol_free(img);
        mp_vol_free(lab);
    }
    const mp_fp_intensity_t *it = &fp.intensity[0];
    MP_CHECK(it->count == 6 * MP_FP_SAMPLES_PER_CASE);
    /* every case contributes equally: the pooled mean estimates the mean of case means */
    MP_CHECK_NEAR(it->mean, case_mean_sum / 6, 1.0);
    MP_CHECK(it->min >= lo && it->max <= hi);
    double q[3] = {0.5, 50, 99.5}, d[3];
    MP_CHECK_OK(mp_percentiles(all, n_all, q, 3, d));
    double tol = 0.05 * (hi - lo);
    MP_CHECK_NEAR(it->p00_5, d[0], tol);
    MP_CHECK_NEAR(it->median, d[1], tol);
    MP_CHECK_NEAR(it->p99_5, d[2], tol);
    MP_CHECK(it->p00_5 <= it->median && it->median <= it->p99_5 && it->std > 0);
    MP_CHECK_NEAR(fp.median_spacing[0], 4, 1e-9);
    MP_CHECK_NEAR(fp.median_spacing[2], 6, 1e-9);
    free(all);
    mp_dataset_cases_deinit(&cases);
    mp_fingerprint_deinit(&fp);
    mp_dataset_free(ds);
}

static void test_plan_fields_and_json(void) {
    mp_dataset_t *ds = NULL;
    MP_CHECK_OK(read_ds(&ds, g_ds));
    mp_fingerprint_t fp;
    MP_CHECK_OK(mp_fingerprint_compute(&fp, ds, 7, NULL, NULL, NULL, NULL));
    mp_plan_t pl, small, back;
    MP_CHECK_OK(mp_plan_from_fingerprint(&pl, &fp, ds, 8));
    MP_CHECK(pl.num_classes == 4 && pl.num_channels == 1 && pl.batch_size == 2);
    MP_CHECK(pl.channels[0].norm.kind == MP_INFER_NORM_CT);
    MP_CHECK(pl.channels[0].norm.ct_lo == fp.intensity[0].p00_5 && pl.channels[0].norm.ct_hi == fp.intensity[0].p99_5);
    MP_CHECK(pl.channels[0].norm.ct_mean == fp.intensity[0].mean && pl.channels[0].norm.ct_std == fp.intensity[0].std);
    for (int a = 0; a < 3; a++) MP_CHECK(pl.target_spacing[a] == fp.median_spacing[a]);
    int div = 1 << (pl.n_stages - 1);
    for (int a = 0; a < 3; a++) MP_CHECK(pl.patch_dhw[a] % div == 0 && pl.patch_dhw[a] / div >= 4);
    /* the patch covers the median shape (rounded up to the divisor) when it fits */
    MP_CHECK(pl.patch_dhw[0] >= pl.median_shape[2] && pl.patch_dhw[2] >= pl.median_shape[0]);
    MP_CHECK(pl.memory_estimate_gb <= pl.memory_budget_gb);
    /* a tiny budget gives a smaller patch that fits */
    MP_CHECK_OK(mp_plan_from_fingerprint(&small, &fp, ds, 0.05));
    MP_CHECK(small.memory_estimate_gb <= 0.05);
    MP_CHECK((int64_t)small.patch_dhw[0] * small.patch_dhw[1] * small.patch_dhw[2] <
             (int64_t)pl.patch_dhw[0] * pl.patch_dhw[1] * pl.patch_dhw[2]);
    char *json = NULL;
    MP_CHECK_OK(mp_plan_to_json(&pl, &json));
    MP_CHECK_OK(mp_plan_parse(&back, json, strlen(json), "plan"));
    MP_CHECK(memcmp(&back.channels[0].norm, &pl.channels[0].norm, sizeof pl.channels[0].norm) == 0);
    MP_CHECK(memcmp(back.patch_dhw, pl.patch_dhw, sizeof pl.patch_dhw) == 0 && back.n_stages == pl.n_stages);
    MP_CHECK(memcmp(back.target_spacing, pl.target_spacing, sizeof pl.target_spacing) == 0);
    MP_CHECK(back.seed == pl.seed && back.num_classes == pl.num_classes);
    free(json);
    /* an edit that breaks the divisibility is refused with the field named */
    pl.patch_dhw[1] = div * 3 + 1;
    MP_CHECK_OK(mp_plan_to_json(&pl, &json) == MP_OK ? 0 : 1);
    MP_CHECK(mp_plan_parse(&back, json, strlen(json), "plan.json") == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "patch_size_dhw[1]"));
    free(json);
    MP_CHECK(mp_plan_parse(&back, "{\"version\":1}", 13, "p") == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "channels"));
    /* options: a coarser grid, fewer features and stages */
    mp_plan_opts_t po;
    mp_plan_t coarse;
    mp_plan_opts_init(&po);
    po.target_spacing[0] = po.target_spacing[1] = po.target_spacing[2] = 2 * fp.median_spacing[2];
    po.base_features = 8;
    po.max_features = 24;
    po.max_stages = 3;
    MP_CHECK_OK(mp_plan_from_fingerprint_opts(&coarse, &fp, ds, &po));
    MP_CHECK(coarse.n_stages <= 3 && coarse.features[0] == 8 && coarse.features[1] == 16);
    MP_CHECK(coarse.n_stages < 3 || coarse.features[2] == 24);
    for (int a = 0; a < 3; a++) MP_CHECK(coarse.target_spacing[a] == po.target_spacing[a]);
    MP_CHECK(coarse.median_shape[0] < pl.median_shape[0]);
    po.max_features = 4;
    MP_CHECK(mp_plan_from_fingerprint_opts(&coarse, &fp, ds, &po) == MP_ERR_ARG);
    MP_CHECK(strstr(mp_error_message(), "features 8 capped at 4"));
    /* a channel that is not CT gets z-score */
    MP_CHECK_OK(mp_dataset_set_channel(ds, 0, "T2"));
    MP_CHECK_OK(mp_plan_from_fingerprint(&pl, &fp, ds, 8));
    MP_CHECK(pl.channels[0].norm.kind == MP_INFER_NORM_ZSCORE);
    mp_infer_plan_t ip;
    mp_plan_to_infer_plan(&pl, &ip);
    MP_CHECK(ip.num_classes == 4 && ip.norm[0].kind == MP_INFER_NORM_ZSCORE && ip.target_spacing[2] == 6);
    mp_fingerprint_deinit(&fp);
    mp_dataset_free(ds);
}

/* Plan with a target spacing that forces resampling, few locations per class. */
static int resampling_plan(mp_plan_t *pl, const mp_dataset_t *ds) {
    mp_fingerprint_t fp;
    int rc = mp_fingerprint_compute(&fp, ds, 7, NULL, NULL, NULL, NULL);
    if (rc) return rc;
    rc = mp_plan_from_fingerprint(pl, &fp, ds, 8);
    mp_fingerprint_deinit(&fp);
    pl->target_spacing[0] = 3;
    pl->target_spacing[1] = 5;
    pl->target_spacing[2] = 4.5;
    pl->fg_samples_per_class = 60;
    return rc;
}


/* Zeroes a frame around case_000's image so that cropping to non-zero cuts. */
static int zero_frame(void) {
    char p[900];
    path_of(p, sizeof p, g_ds, "imagesTr", "case_000_0000.nii.gz");
    mp_vol_t *v = NULL;
    int rc = mp_image_read(&v, p);
    if (rc) return rc;
    int16_t *x = v->data;
    for (int64_t z = 0; z < v->dim[2]; z++)
        for (int64_t y = 0; y < v->dim[1]; y++)
            for (int64_t i = 0; i < v->dim[0]; i++)
                if (i < 3 || i >= v->dim[0] - 2 || z < 2 || y < 1) x[(z * v->dim[1] + y) * v->dim[0] + i] = 0;
    rc = mp_image_write(p, v, NULL);
    mp_vol_free(v);
    return rc;
}

static void test_cache_roundtrip_and_threads(void) {
    mp_dataset_t *ds = NULL;
    MP_CHECK_OK(zero_frame());
    MP_CHECK_OK(read_ds(&ds, g_ds));
    mp_plan_t pl;
    MP_CHECK_OK(resampling_plan(&pl, ds));
    char c1[700], c2[700];
    snprintf(c1, sizeof c1, "%s/cache1", g_root);
    snprintf(c2, sizeof c2, "%s/cache2", g_root);
    mp_pool_t *pool = mp_pool_create(2);
    MP_CHECK_OK(mp_cache_build(c1, ds, &pl, NULL, NULL, NULL));
    MP_CHECK_OK(mp_cache_build(c2, ds, &pl, pool, NULL, NULL));
    mp_pool_free(pool);
    mp_cache_t c;
    MP_CHECK_OK(mp_cache_open(&c, c1));
    MP_CHECK(c.n_cases == 6 && c.plan.target_spacing[1] == 5 && c.plan.fg_samples_per_class == 60);
    mp_dataset_cases_t cases;
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cases));
    mp_infer_plan_t ip;
    mp_plan_to_infer_plan(&c.plan, &ip);
    for (int64_t k = 0; k < c.n_cases; k++) {
        static const char *suf[4] = {".img.f32", ".seg.u8", ".fg.i32", ".json"};
        for (int s = 0; s < 4; s++) {
            char a[900], b[900];
            snprintf(a, sizeof a, "%s/cases/%s%s", c1, c.ids[k], suf[s]);
            snprintf(b, sizeof b, "%s/cases/%s%s", c2, c.ids[k], suf[s]);
            MP_CHECKF(mp_test_files_equal(a, b), "%s differs between 1 and 2 threads", b);
        }
        mp_cache_case_t cc;
        MP_CHECK_OK(mp_cache_case_map(&c, k, &cc));
        mp_vol_t *img = NULL, *lab = NULL, *pre = NULL, *crop = NULL, *seg = NULL;
        mp_infer_prep_t prep;
        MP_CHECK_OK(mp_image_read(&img, cases.cases[k].images[0]));
        MP_CHECK_OK(mp_image_read(&lab, cases.cases[k].label));
        MP_CHECK_OK(mp_infer_preprocess(&pre, &prep, img, &ip, NULL));
        for (int a = 0; a < 4; a++) MP_CHECK(cc.dim[a] == pre->dim[a]);
        MP_CHECK(cc.dim[2] != img->dim[2]); /* it was resampled */
        MP_CHECK(memcmp(cc.img, pre->data, mp_vol_bytes(pre)) == 0);
        MP_CHECK(memcmp(cc.affine, pre->affine, sizeof cc.affine) == 0);
        MP_CHECK(memcmp(cc.orig_affine, img->affine, sizeof cc.orig_affine) == 0);
        MP_CHECK(memcmp(&cc.crop_box, &prep.box, sizeof prep.box) == 0);
        if (k == 0) /* the zeroed frame was cropped away */
            MP_CHECK(cc.crop_box.lo[0] == 3 && cc.crop_box.hi[0] == img->dim[0] - 2 && cc.crop_box.lo[1] == 1 &&
                     cc.crop_box.lo[2] == 2 && cc.crop_box.hi[2] == img->dim[2]);
        MP_CHECK_OK(mp_vol_crop(&crop, lab, &prep.box));
        MP_CHECK_OK(mp_vol_resample_shape(&seg, crop, prep.pre_dim, MP_INTERP_LABEL, NULL));
        MP_CHECK(memcmp(cc.seg, seg->data, mp_vol_bytes(seg)) == 0);
        int64_t counts[256] = {0};
        for (int64_t i = 0; i < mp_vol_voxels(seg); i++) counts[cc.seg[i]]++;
        MP_CHECK(cc.n_fg == 3);
        for (int f = 0; f < cc.n_fg; f++) {
            int64_t want = counts[cc.fg[f].label] < 60 ? counts[cc.fg[f].label] : 60;
            MP_CHECK(cc.fg[f].label == f + 1 && cc.fg[f].count == want);
            int64_t prev = -1;
            for (int64_t j = 0; j < cc.fg[f].count; j++) {
                const int32_t *p = cc.fg[f].xyz + 3 * j;
                int64_t i = ((int64_t)p[2] * cc.dim[1] + p[1]) * cc.dim[0] + p[0];
                MP_CHECK(cc.seg[i] == cc.fg[f].label);
                MP_CHECK(i > prev); /* distinct, sorted */
                prev = i;
            }
        }
        mp_cache_case_unmap(&cc);
        mp_vol_free(img);
        mp_vol_free(lab);
        mp_vol_free(pre);
        mp_vol_free(crop);
        mp_vol_free(seg);
    }
    mp_dataset_cases_deinit(&cases);
    mp_cache_close(&c);
    mp_dataset_free(ds);
}

static int write_bytes(const char *path, const void *d, size_t n) {
    return mp_file_write_atomic(path, d, n);
}

/* Replaces the first occurrence of `from` in a text file by `to`. */
static int edit_file(const char *path, const char *from, const char *to) {
    uint8_t *b = NULL;
    size_t n = 0;
    if (mp_file_read_all(path, &b, &n)) return -1;
    char *t = malloc(n + 1 + strlen(to));
    memcpy(t, b, n);
    t[n] = 0;
    char *hit = strstr(t, from);
    int rc = -1;
    if (hit) {
        char *out = malloc(n + strlen(to) + 1);
        size_t pre = (size_t)(hit - t);
        memcpy(out, t, pre);
        strcpy(out + pre, to);
        strcat(out, hit + strlen(from));
        rc = write_bytes(path, out, strlen(out));
        free(out);
    }
    free(t);
    free(b);
    return rc;
}

static int map_error(const char *dir, int64_t k, const char *expect) {
    mp_cache_t c;
    if (mp_cache_open(&c, dir)) return strstr(mp_error_message(), expect) != NULL;
    mp_cache_case_t cc;
    int rc = mp_cache_case_map(&c, k, &cc);
    if (rc == 0) mp_cache_case_unmap(&cc);
    mp_cache_close(&c);
    if (rc == 0) return 0;
    if (!strstr(mp_error_message(), expect)) {
        fprintf(stderr, "    message: %s\n", mp_error_message());
        return 0;
    }
    return 1;
}

static void test_corrupted_cache(void) {
    mp_dataset_t *ds = NULL;
    MP_CHECK_OK(read_ds(&ds, g_ds));
    mp_plan_t pl;
    MP_CHECK_OK(resampling_plan(&pl, ds));
    char dir[700], p[900];
    snprintf(dir, sizeof dir, "%s/cache_bad", g_root);
    MP_CHECK_OK(mp_cache_build(dir, ds, &pl, NULL, NULL, NULL));
    mp_dataset_free(ds);
    MP_CHECK(map_error(dir, 0, "ZZZ") == 0); /* case 0 maps fine */
    /* truncated image */
    snprintf(p, sizeof p, "%s/cases/case_000.img.f32", dir);
    MP_CHECK(truncate(p, 1000) == 0);
    MP_CHECK(map_error(dir, 0, "1000 bytes, the case's JSON says"));
    /* dims that disagree with the byte counts */
    snprintf(p, sizeof p, "%s/cases/case_001.json", dir);
    MP_CHECK(edit_file(p, "\"dim\":\t[", "\"dim\":\t[1") == 0);
    MP_CHECK(map_error(dir, 1, "disagree with dims"));
    /* a location outside the volume */
    snprintf(p, sizeof p, "%s/cases/case_002.fg.i32", dir);
    {
        uint8_t *b = NULL;
        size_t n = 0;
        MP_CHECK_OK(mp_file_read_all(p, &b, &n));
        MP_CHECK(n >= 12);
        int32_t big = 100000;
        memcpy(b, &big, 4);
        MP_CHECK_OK(write_bytes(p, b, n));
        free(b);
    }
    MP_CHECK(map_error(dir, 2, "outside"));
    /* an fg table pointing past the file */
    snprintf(p, sizeof p, "%s/cases/case_003.json", dir);
    MP_CHECK(edit_file(p, "\"offset\":\t0", "\"offset\":\t99999999") == 0);
    MP_CHECK(map_error(dir, 3, "\"offset\""));
    /* not JSON */
    snprintf(p, sizeof p, "%s/cases/case_004.json", dir);
    MP_CHECK_OK(write_bytes(p, "{\"id\": ", 7));
    MP_CHECK(map_error(dir, 4, "not valid JSON"));
    /* a DONE naming a path outside the cache */
    snprintf(p, sizeof p, "%s/DONE", dir);
    MP_CHECK_OK(write_bytes(p, "{\"version\":1,\"cases\":[\"../x\"]}", 30));
    MP_CHECK(map_error(dir, 0, "not a plain file name"));
    /* no DONE: an incomplete cache */
    MP_CHECK(remove(p) == 0);
    MP_CHECK(map_error(dir, 0, "incomplete"));
    /* a broken plan */
    snprintf(p, sizeof p, "%s/plan.json", dir);
    MP_CHECK(edit_file(p, "\"num_classes\":\t4", "\"num_classes\":\t1") == 0);
    MP_CHECK(map_error(dir, 0, "num_classes"));
}

int main(void) {
    snprintf(g_root, sizeof g_root, "%s", mp_test_tmpdir("preprocess"));
    snprintf(g_ds, sizeof g_ds, "%s/ds", g_root);
    if (make_dataset(g_ds, 6)) {
        fprintf(stderr, "synth failed: %s\n", mp_error_message());
        return 1;
    }
    MP_RUN(test_check_lists_all_problems);
    MP_RUN(test_fingerprint_direct);
    MP_RUN(test_plan_fields_and_json);
    MP_RUN(test_cache_roundtrip_and_threads);
    MP_RUN(test_corrupted_cache);
    rm_rf(g_root);
    return mp_test_summary();
}
