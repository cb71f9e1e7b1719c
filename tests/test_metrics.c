/* Segmentation metrics: percentiles, hand-computable cases (identical masks,
 * a cube shifted along x, volume differences), empty-class conventions,
 * bounding-box cropping against full-grid surface distances, thread-count
 * invariance, geometry checks, the summary.json layout, and an independent
 * SciPy recomputation (tests/py/metrics_ref.py) on random masks. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/metrics.h"
#include "medpipe/vol_morph.h"

#include <cjson/cJSON.h>
#include <stdint.h>

static int64_t idx3(const int64_t d[3], int64_t x, int64_t y, int64_t z) { return x + d[0] * (y + d[1] * z); }

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sort-based numpy-style linear percentile: the test's own reference. */
static double sorted_percentile(const double *x, int64_t n, double q) {
    double *s = malloc(sizeof *s * (size_t)n);
    memcpy(s, x, sizeof *s * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_d);
    double h = (double)(n - 1) * q / 100;
    int64_t k = (int64_t)floor(h);
    double v = k + 1 < n ? s[k] + (h - (double)k) * (s[k + 1] - s[k]) : s[k];
    free(s);
    return v;
}

static void test_percentile(void) {
    mp_rng_t r;
    mp_rng_init(&r, 3, 0);
    double x[257], y[257];
    const double qs[6] = {0, 5, 50, 95, 99.5, 100};
    for (int n = 1; n <= 257; n += 32) {
        for (int i = 0; i < n; i++) x[i] = floor(mp_rng_uniform(&r) * 20) * 0.5; /* many ties */
        for (int j = 0; j < 6; j++) {
            memcpy(y, x, sizeof x);
            MP_CHECK_NEAR(mp_percentile(y, n, qs[j]), sorted_percentile(x, n, qs[j]), 1e-12);
        }
    }
    double three[3] = {3, 1, 2};
    MP_CHECK_NEAR(mp_percentile(three, 3, 75), 2.5, 1e-15);
    MP_CHECK(isnan(mp_percentile(three, 0, 50)));
}

/* Axis-aligned box [x0, x0 + a) x [y0, y0 + b) x [z0, z0 + c) set to 1. */
static void fill_box(uint8_t *m, const int64_t d[3], int64_t x0, int64_t y0, int64_t z0, int64_t a, int64_t b,
                     int64_t c) {
    for (int64_t z = z0; z < z0 + c; z++)
        for (int64_t y = y0; y < y0 + b; y++)
            for (int64_t x = x0; x < x0 + a; x++) m[idx3(d, x, y, z)] = 1;
}

static void test_identical_masks(void) {
    const int64_t d[3] = {12, 10, 9};
    const double sp[3] = {0.6, 0.9, 2.0};
    uint8_t m[12 * 10 * 9] = {0};
    fill_box(m, d, 2, 3, 1, 6, 5, 4);
    mp_class_metrics_t c;
    MP_CHECK_OK(mp_metrics_binary(&c, m, m, d, sp, NULL));
    MP_CHECK(c.dice == 1 && c.iou == 1 && c.hd95 == 0 && c.assd == 0 && c.nsd == 1);
    MP_CHECK(c.tp == 120 && c.fp == 0 && c.fn == 0 && c.tn == 1080 - 120 && c.vol_diff_ml == 0 && c.vol_diff_rel == 0);
}

/* Cube of side a shifted by k voxels along x. With k * sx below sy and sz and
 * below (a - 1 - k) * sx, each surface's distances to the other are:
 * k*sx on the leading full face (a^2 voxels) and on the trailing face's
 * interior ((a-2)^2 voxels), (k - j)*sx on the side ring of layer j = 1..k-1
 * (4(a-1) voxels each), 0 elsewhere; the same multiset both ways. */
static void test_shifted_cube(void) {
    const int64_t a = 10, k = 2, d[3] = {20, 14, 14};
    const double sp[3] = {0.5, 1.2, 1.5};
    int64_t nv = d[0] * d[1] * d[2];
    uint8_t *p = calloc((size_t)nv, 1), *r = calloc((size_t)nv, 1);
    fill_box(p, d, 3, 2, 2, a, a, a);
    fill_box(r, d, 3 + k, 2, 2, a, a, a);
    int64_t ns = a * a * a - (a - 2) * (a - 2) * (a - 2), n = 0;
    double *want = calloc((size_t)ns, sizeof *want);
    for (int64_t i = 0; i < a * a + (a - 2) * (a - 2); i++) want[n++] = (double)k * sp[0];
    for (int64_t j = 1; j < k; j++)
        for (int64_t i = 0; i < 4 * (a - 1); i++) want[n++] = (double)(k - j) * sp[0];
    double sum = 0;
    for (int64_t i = 0; i < ns; i++) sum += want[i]; /* the rest are zeros */
    const double tols[3] = {0.75, 1.0, 0.2};
    for (int t = 0; t < 3; t++) {
        mp_metrics_opts_t o;
        mp_metrics_opts_init(&o);
        o.tolerance_mm = tols[t];
        mp_class_metrics_t c;
        MP_CHECK_OK(mp_metrics_binary(&c, p, r, d, sp, &o));
        MP_CHECK_NEAR(c.dice, (double)(a - k) / (double)a, 1e-15);
        MP_CHECK_NEAR(c.iou, (double)(a - k) / (double)(a + k), 1e-15);
        MP_CHECK(c.tp == (double)(a * a * (a - k)) && c.fp == (double)(a * a * k) && c.fn == c.fp);
        MP_CHECK(c.tn == (double)(nv - a * a * (a + k)));
        MP_CHECK_NEAR(c.hd95, sorted_percentile(want, ns, 95), 1e-12);
        MP_CHECK_NEAR(c.assd, 2 * sum / (double)(2 * ns), 1e-12);
        int64_t within = 0;
        for (int64_t i = 0; i < ns; i++) within += want[i] <= tols[t];
        MP_CHECK_NEAR(c.nsd, (double)within / (double)ns, 1e-15);
    }
    free(want);
    free(p);
    free(r);
}

static void test_volume_difference(void) {
    const int64_t d[3] = {14, 14, 14};
    const double sp[3] = {0.5, 1.2, 1.5};
    int64_t nv = 14 * 14 * 14;
    uint8_t *p = calloc((size_t)nv, 1), *r = calloc((size_t)nv, 1);
    fill_box(p, d, 2, 2, 2, 10, 10, 10);
    fill_box(r, d, 3, 3, 3, 8, 8, 8);
    mp_class_metrics_t c;
    MP_CHECK_OK(mp_metrics_binary(&c, p, r, d, sp, NULL));
    MP_CHECK_NEAR(c.vol_diff_ml, 488 * 0.9 / 1000, 1e-12);
    MP_CHECK_NEAR(c.vol_diff_rel, 488.0 / 512.0, 1e-15);
    /* Every pred surface voxel is one voxel outside the ref along the
     * nearest axis or diagonally; the ref surface lies one voxel inside. */
    MP_CHECK(c.hd95 > 0 && c.nsd < 1);
    free(p);
    free(r);
}

static void test_spheres(void) {
    const int64_t d[3] = {32, 32, 32};
    const double sp[3] = {1, 1, 1};
    int64_t nv = 32 * 32 * 32;
    uint8_t *p = calloc((size_t)nv, 1), *r = calloc((size_t)nv, 1);
    for (int64_t i = 0; i < nv; i++) {
        double x = (double)(i % 32) - 15.5, y = (double)(i / 32 % 32) - 15.5, z = (double)(i / 1024) - 15.5;
        double rr = sqrt(x * x + y * y + z * z);
        p[i] = rr <= 8;
        r[i] = rr <= 10;
    }
    mp_class_metrics_t c;
    mp_metrics_opts_t o;
    mp_metrics_opts_init(&o);
    o.tolerance_mm = 2.5;
    MP_CHECK_OK(mp_metrics_binary(&c, p, r, d, sp, &o));
    /* Concentric spheres of radii 8 and 10 voxels: surfaces about 2 mm apart. */
    MP_CHECK_NEAR(c.hd95, 2.0, 0.5);
    MP_CHECK_NEAR(c.assd, 2.0, 0.4);
    MP_CHECK(c.nsd > 0.95);
    MP_CHECK_NEAR(c.dice, 2 * 512.0 / (512.0 + 1000.0), 0.03); /* 2 r^3 / (r^3 + R^3) */
    free(p);
    free(r);
}

static void test_empty_conventions(void) {
    const int64_t d[3] = {8, 6, 5};
    const double sp[3] = {1.0, 2.0, 3.0};
    uint8_t e[240] = {0}, m[240] = {0};
    fill_box(m, d, 1, 1, 1, 3, 2, 2);
    double diag = sqrt(8.0 * 8 + 12.0 * 12 + 15.0 * 15);
    mp_class_metrics_t c;
    MP_CHECK_OK(mp_metrics_binary(&c, e, e, d, sp, NULL));
    MP_CHECK(isnan(c.dice) && isnan(c.iou) && isnan(c.hd95) && isnan(c.assd) && isnan(c.nsd));
    MP_CHECK(c.tn == 240 && c.tp == 0 && c.vol_diff_ml == 0 && isnan(c.vol_diff_rel));
    MP_CHECK_OK(mp_metrics_binary(&c, e, m, d, sp, NULL)); /* missed structure */
    MP_CHECK(c.dice == 0 && c.iou == 0 && c.nsd == 0 && c.fn == 12 && c.vol_diff_rel == -1);
    MP_CHECK_NEAR(c.hd95, diag, 1e-12);
    MP_CHECK_NEAR(c.assd, diag, 1e-12);
    MP_CHECK_OK(mp_metrics_binary(&c, m, e, d, sp, NULL)); /* false positive structure */
    MP_CHECK(c.dice == 0 && c.nsd == 0 && c.fp == 12 && isnan(c.vol_diff_rel) && c.hd95 == c.assd);
    mp_metrics_opts_t o;
    mp_metrics_opts_init(&o);
    o.empty_distance = INFINITY;
    MP_CHECK_OK(mp_metrics_binary(&c, m, e, d, sp, &o));
    MP_CHECK(isinf(c.hd95) && isinf(c.assd));
    o.surface = 0;
    MP_CHECK_OK(mp_metrics_binary(&c, m, m, d, sp, &o));
    MP_CHECK(c.dice == 1 && isnan(c.hd95) && isnan(c.nsd));
}

/* Random blobs: a few ellipsoids plus sparse noise. */
static void blobs(uint8_t *m, const int64_t d[3], mp_rng_t *r, int value, int count, double noise) {
    for (int b = 0; b < count; b++) {
        double c[3], rad[3];
        for (int a = 0; a < 3; a++) {
            c[a] = mp_rng_range(r, 0, (double)d[a]);
            rad[a] = mp_rng_range(r, 1.5, (double)d[a] / 3 + 2);
        }
        for (int64_t z = 0; z < d[2]; z++)
            for (int64_t y = 0; y < d[1]; y++)
                for (int64_t x = 0; x < d[0]; x++) {
                    double u = (x - c[0]) / rad[0], v = (y - c[1]) / rad[1], w = (z - c[2]) / rad[2];
                    if (u * u + v * v + w * w <= 1) m[idx3(d, x, y, z)] = (uint8_t)value;
                }
    }
    int64_t nv = d[0] * d[1] * d[2];
    for (int64_t i = 0; i < nv; i++)
        if (mp_rng_uniform(r) < noise) m[i] = (uint8_t)(mp_rng_uniform(r) < 0.5 ? 0 : value);
}

/* HD95/ASSD/NSD from full-grid surface distances, computed in the test. */
static void full_grid_stats(const uint8_t *p, const uint8_t *r, const int64_t d[3], const double sp[3], double tol,
                            double out[3]) {
    double *dp, *dr;
    int64_t np, nr;
    out[0] = out[1] = out[2] = NAN;
    if (mp_surface_distances(&dp, &np, &dr, &nr, p, r, d, sp, NULL) || !np || !nr) return;
    double sum = 0;
    int64_t within = 0;
    for (int64_t i = 0; i < np; i++) sum += dp[i], within += dp[i] <= tol;
    for (int64_t i = 0; i < nr; i++) sum += dr[i], within += dr[i] <= tol;
    out[0] = fmax(sorted_percentile(dp, np, 95), sorted_percentile(dr, nr, 95));
    out[1] = sum / (double)(np + nr);
    out[2] = (double)within / (double)(np + nr);
    mp_free(dp);
    mp_free(dr);
}

static void test_labels_crop_and_threads(void) {
    const int64_t dim[4] = {41, 37, 23, 1};
    mp_vol_t *pv, *rv;
    MP_CHECK_OK(mp_vol_create(&pv, dim, MP_DTYPE_U8));
    MP_CHECK_OK(mp_vol_create(&rv, dim, MP_DTYPE_U8));
    const double sp[3] = {0.7, 1.1, 2.3};
    mp_vol_set_spacing(pv, sp, NULL);
    mp_vol_set_spacing(rv, sp, NULL);
    mp_rng_t g;
    mp_rng_init(&g, 21, 0);
    for (int v = 1; v <= 3; v++) {
        blobs(rv->data, dim, &g, v, 2, 0.0);
        blobs(pv->data, dim, &g, v, 2, 0.002);
    }
    const int64_t labels[4] = {3, 1, 5, 2}; /* 5 is absent from both */
    mp_class_metrics_t a[4], b[4];
    mp_metrics_opts_t o;
    mp_metrics_opts_init(&o);
    o.tolerance_mm = 1.5;
    MP_CHECK_OK(mp_metrics_labels(a, pv, rv, labels, 4, &o));
    o.pool = mp_pool_create(3);
    int rc = mp_metrics_labels(b, pv, rv, labels, 4, &o);
    mp_pool_free(o.pool);
    MP_CHECK_OK(rc);
    MP_CHECK(memcmp(a, b, sizeof a) == 0); /* bit-identical for any thread count */
    MP_CHECK(a[2].label == 5 && isnan(a[2].dice) && a[2].tn == 41 * 37 * 23);
    int64_t nv = 41 * 37 * 23;
    uint8_t *p = malloc((size_t)nv), *r = malloc((size_t)nv);
    for (int k = 0; k < 4; k++) {
        if (labels[k] == 5) continue;
        for (int64_t i = 0; i < nv; i++) {
            p[i] = ((uint8_t *)pv->data)[i] == labels[k];
            r[i] = ((uint8_t *)rv->data)[i] == labels[k];
        }
        double s[3];
        full_grid_stats(p, r, dim, sp, 1.5, s);
        MP_CHECK(a[k].label == labels[k] && a[k].tp > 0);
        MP_CHECK_NEAR(a[k].hd95, s[0], 1e-12 * s[0]);
        MP_CHECK_NEAR(a[k].assd, s[1], 1e-12 * s[1]);
        MP_CHECK_NEAR(a[k].nsd, s[2], 1e-15);
    }
    free(p);
    free(r);
    /* Mismatched dims are refused. */
    const int64_t dim2[4] = {41, 37, 22, 1};
    mp_vol_t *small;
    MP_CHECK_OK(mp_vol_create(&small, dim2, MP_DTYPE_U8));
    MP_CHECK(mp_metrics_labels(a, small, rv, labels, 4, NULL) == MP_ERR_MISMATCH);
    mp_vol_free(small);
    mp_vol_free(pv);
    mp_vol_free(rv);
}

static void test_geometry_check(void) {
    const int64_t dim[4] = {4, 5, 6, 1};
    mp_vol_t *a, *b;
    MP_CHECK_OK(mp_vol_create(&a, dim, MP_DTYPE_U8));
    MP_CHECK_OK(mp_vol_create(&b, dim, MP_DTYPE_I16));
    MP_CHECK_OK(mp_metrics_check_geometry(a, b, 1e-4));
    b->affine[1][3] += 5e-5;
    MP_CHECK_OK(mp_metrics_check_geometry(a, b, 1e-4));
    b->affine[1][3] += 2e-4;
    MP_CHECK(mp_metrics_check_geometry(a, b, 1e-4) == MP_ERR_MISMATCH);
    MP_CHECK(strstr(mp_error_message(), "affine") != NULL);
    mp_vol_free(b);
    const int64_t dim2[4] = {4, 5, 7, 1};
    MP_CHECK_OK(mp_vol_create(&b, dim2, MP_DTYPE_U8));
    MP_CHECK(mp_metrics_check_geometry(a, b, 1e-4) == MP_ERR_MISMATCH);
    MP_CHECK(strstr(mp_error_message(), "4x5x6x1 vs 4x5x7x1") != NULL);
    mp_vol_free(a);
    mp_vol_free(b);
}

static double num(const cJSON *o, const char *k1, const char *k2) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k1);
    if (k2) x = cJSON_GetObjectItemCaseSensitive(x, k2);
    return cJSON_IsNumber(x) ? x->valuedouble : cJSON_IsNull(x) ? NAN : -12345;
}

static void test_summary_json(void) {
    mp_class_metrics_t c1[2], c2[2];
    memset(c1, 0, sizeof c1);
    memset(c2, 0, sizeof c2);
    c1[0] = (mp_class_metrics_t){.label = 1, .tp = 8, .fp = 2, .fn = 2, .dice = 0.8, .hd95 = 1.5, .nsd = 0.9};
    c1[1] = (mp_class_metrics_t){.label = 2, .tp = 3, .dice = 1.0, .hd95 = 0, .nsd = 1};
    c2[0] = (mp_class_metrics_t){.label = 1, .tp = 4, .fp = 4, .dice = 0.5, .hd95 = 2.5, .nsd = 0.7};
    c2[1] = (mp_class_metrics_t){.label = 2, .dice = NAN, .iou = NAN, .hd95 = NAN, .nsd = NAN};
    mp_metrics_case_t cases[2] = {{"pred/a.nii.gz", "ref/a.nii.gz", c1}, {"pred/b.nii.gz", "ref/b.nii.gz", c2}};
    char path[600];
    snprintf(path, sizeof path, "%s/summary.json", mp_test_tmpdir("metrics-json"));
    MP_CHECK_OK(mp_metrics_summary_write(path, cases, 2, 2));
    uint8_t *text;
    size_t len;
    MP_CHECK_OK(mp_file_read_all(path, &text, &len));
    char *s = malloc(len + 1);
    memcpy(s, text, len);
    s[len] = 0;
    free(text);
    cJSON *root = cJSON_Parse(s);
    MP_CHECK(root != NULL);
    MP_CHECK(strcmp(root->child->string, "foreground_mean") == 0); /* sorted keys, as nnU-Net */
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "metric_per_case");
    MP_CHECK(cJSON_GetArraySize(list) == 2);
    const cJSON *case1 = cJSON_GetArrayItem(list, 1);
    MP_CHECK(strcmp(cJSON_GetObjectItemCaseSensitive(case1, "prediction_file")->valuestring, "pred/b.nii.gz") == 0);
    const cJSON *m2 = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(case1, "metrics"), "2");
    MP_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(m2, "Dice")));
    MP_CHECK(cJSON_GetArraySize(m2) == 13 && strcmp(m2->child->string, "ASSD") == 0);
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(root, "mean");
    MP_CHECK_NEAR(num(mean, "1", "Dice"), 0.65, 1e-15);
    MP_CHECK_NEAR(num(mean, "1", "HD95"), 2.0, 1e-15);
    MP_CHECK_NEAR(num(mean, "1", "TP"), 6, 0);
    MP_CHECK_NEAR(num(mean, "2", "Dice"), 1.0, 0); /* NaN skipped */
    const cJSON *fg = cJSON_GetObjectItemCaseSensitive(root, "foreground_mean");
    MP_CHECK_NEAR(num(fg, "Dice", NULL), (0.65 + 1.0) / 2, 1e-15);
    MP_CHECK_NEAR(num(fg, "NSD", NULL), (0.8 + 1.0) / 2, 1e-15);
    cJSON_Delete(root);
    free(s);
    remove(path);
    rmdir(mp_test_tmpdir("metrics-json"));
    /* An all-NaN mean stays NaN (written null). */
    mp_class_metrics_t mean1;
    mp_metrics_nanmean(&mean1, &c2[1], 1, 1);
    MP_CHECK(isnan(mean1.dice) && mean1.tp == 0);
}

/* ---- independent SciPy reference ---- */

static int write_raw(const char *dir, const char *name, const void *data, size_t bytes) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, bytes, f);
    return fclose(f) == 0 && w == bytes ? 0 : -1;
}

static void json_num(FILE *f, const char *key, double v, int last) {
    if (isfinite(v)) fprintf(f, "\"%s\": %.17g%s", key, v, last ? "" : ", ");
    else fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

/* Computes everything medpipe offers on one random case and records it. */
static int reference_case(FILE *js, const char *dir, const char *name, const int64_t d[3], const double sp[3],
                          double tol, const uint8_t *p, const uint8_t *r, int first) {
    int64_t nv = d[0] * d[1] * d[2];
    double *sq = malloc(sizeof *sq * (size_t)nv);
    uint8_t *inv = malloc((size_t)nv);
    uint32_t *lab = malloc(sizeof *lab * (size_t)nv);
    uint16_t *keys = malloc(sizeof *keys * (size_t)nv);
    char fn[6][128];
    const char *kinds[6] = {"pred.u8", "ref.u8", "edt_ref.f64", "edt_pred.f64", "cc6.u32", "cc26.u32"};
    for (int i = 0; i < 6; i++) snprintf(fn[i], sizeof fn[i], "%s_%s", name, kinds[i]);
    int rc = write_raw(dir, fn[0], p, (size_t)nv) || write_raw(dir, fn[1], r, (size_t)nv);
    mp_pool_t *pool = mp_pool_create(2);
    rc = rc || mp_edt_sq(sq, r, d, sp, pool);
    for (int64_t i = 0; i < nv; i++) sq[i] = sqrt(sq[i]);
    rc = rc || write_raw(dir, fn[2], sq, sizeof *sq * (size_t)nv);
    for (int64_t i = 0; i < nv; i++) inv[i] = !p[i];
    rc = rc || mp_edt_sq(sq, inv, d, sp, pool);
    for (int64_t i = 0; i < nv; i++) sq[i] = sqrt(sq[i]);
    rc = rc || write_raw(dir, fn[3], sq, sizeof *sq * (size_t)nv);
    for (int64_t i = 0; i < nv; i++) keys[i] = p[i] != 0;
    int64_t n6 = 0, n26 = 0;
    rc = rc || mp_cc_label_keys(lab, &n6, NULL, keys, d, MP_CONN_6) ||
         write_raw(dir, fn[4], lab, sizeof *lab * (size_t)nv);
    rc = rc || mp_cc_label_keys(lab, &n26, NULL, keys, d, MP_CONN_26) ||
         write_raw(dir, fn[5], lab, sizeof *lab * (size_t)nv);
    mp_class_metrics_t m;
    mp_metrics_opts_t o;
    mp_metrics_opts_init(&o);
    o.tolerance_mm = tol;
    o.pool = pool;
    rc = rc || mp_metrics_binary(&m, p, r, d, sp, &o);
    mp_pool_free(pool);
    free(sq);
    free(inv);
    free(lab);
    free(keys);
    if (rc) return rc;
    fprintf(js, "%s{\"name\": \"%s\", \"dim\": [%lld, %lld, %lld], \"spacing\": [%.17g, %.17g, %.17g], ",
            first ? "" : ",\n", name, (long long)d[0], (long long)d[1], (long long)d[2], sp[0], sp[1], sp[2]);
    fprintf(js, "\"tolerance\": %.17g, \"pred\": \"%s\", \"ref\": \"%s\", \"edt_ref\": \"%s\", ", tol, fn[0], fn[1],
            fn[2]);
    fprintf(js, "\"edt_pred_to_zero\": \"%s\", \"cc6\": \"%s\", \"cc6_n\": %lld, \"cc26\": \"%s\", \"cc26_n\": %lld, ",
            fn[3], fn[4], (long long)n6, fn[5], (long long)n26);
    fprintf(js, "\"metrics\": {");
    json_num(js, "Dice", m.dice, 0);
    json_num(js, "IoU", m.iou, 0);
    json_num(js, "TP", m.tp, 0);
    json_num(js, "FP", m.fp, 0);
    json_num(js, "FN", m.fn, 0);
    json_num(js, "TN", m.tn, 0);
    json_num(js, "n_pred", m.n_pred, 0);
    json_num(js, "n_ref", m.n_ref, 0);
    json_num(js, "HD95", m.hd95, 0);
    json_num(js, "ASSD", m.assd, 0);
    json_num(js, "NSD", m.nsd, 1);
    fprintf(js, "}}");
    return 0;
}

static void test_scipy_reference(void) {
    const char *dir = mp_test_tmpdir("metrics-ref");
    char path[700];
    snprintf(path, sizeof path, "%s/cases.json", dir);
    FILE *js = fopen(path, "w");
    MP_CHECK(js != NULL);
    fprintf(js, "[\n");
    struct {
        const char *name;
        int64_t d[3];
        double sp[3], tol, noise;
        int kind; /* 0 random blobs, 1 identical, 2 empty prediction */
    } cases[6] = {
        {"blobs_aniso", {48, 40, 32}, {0.8, 1.1, 2.5}, 1.37, 0.003, 0},
        {"blobs_2d", {53, 47, 1}, {0.5, 0.7, 3.0}, 0.9, 0.01, 0},
        {"blobs_iso_tol1", {25, 25, 25}, {1, 1, 1}, 1.0, 0.01, 0},
        {"noisy_thin", {64, 9, 7}, {0.45, 2.2, 1.7}, 2.0, 0.2, 0},
        {"identical", {20, 21, 22}, {1.3, 0.6, 0.9}, 0.5, 0.01, 1},
        {"empty_pred", {16, 12, 10}, {1.0, 1.5, 2.0}, 1.0, 0.0, 2},
    };
    mp_rng_t g;
    mp_rng_init(&g, 1234, 0);
    int rc = 0;
    for (int c = 0; c < 6 && !rc; c++) {
        int64_t nv = cases[c].d[0] * cases[c].d[1] * cases[c].d[2];
        uint8_t *p = calloc((size_t)nv, 1), *r = calloc((size_t)nv, 1);
        blobs(r, cases[c].d, &g, 1, 3, cases[c].noise);
        if (cases[c].kind == 0) blobs(p, cases[c].d, &g, 1, 3, cases[c].noise);
        if (cases[c].kind == 1) memcpy(p, r, (size_t)nv);
        rc = reference_case(js, dir, cases[c].name, cases[c].d, cases[c].sp, cases[c].tol, p, r, c == 0);
        free(p);
        free(r);
    }
    fprintf(js, "\n]\n");
    MP_CHECK(fclose(js) == 0);
    MP_CHECK_OK(rc);
    const char *py = getenv("PYTHON");
    const char *script = "tests/py/metrics_ref.py";
    MP_CHECKF(access(script, R_OK) == 0, "%s not found (run the tests from the repository root)", script);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "%s %s %s", py && *py ? py : "/usr/bin/python3", script, dir);
    fflush(stdout);
    int status = system(cmd);
    MP_CHECKF(status == 0, "'%s' exited with status %d (SciPy reference disagrees or is missing)", cmd, status);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir); /* kept for inspection when the check fails */
    MP_CHECK(system(cmd) == 0);
}

int main(void) {
    MP_RUN(test_percentile);
    MP_RUN(test_identical_masks);
    MP_RUN(test_shifted_cube);
    MP_RUN(test_volume_difference);
    MP_RUN(test_spheres);
    MP_RUN(test_empty_conventions);
    MP_RUN(test_labels_crop_and_threads);
    MP_RUN(test_geometry_check);
    MP_RUN(test_summary_json);
    MP_RUN(test_scipy_reference);
    return mp_test_summary();
}
