/* Volume operations against independent Python references: each test writes
 * its inputs and the C results to a scratch folder (raw little-endian .bin
 * files described by case.json), then runs tests/py/vol_ops_ref.py on it with
 * Debian's python (numpy, scipy, nibabel), which recomputes the results with
 * scipy.ndimage.map_coordinates, nibabel's as_closest_canonical and
 * numpy.percentile and exits non-zero on any mismatch. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/vol_ops.h"

#include <sys/wait.h>

static const char *root_dir(void) {
    const char *r = getenv("MP_SRC_ROOT");
    return r ? r : ".";
}

typedef struct {
    char dir[700];
    FILE *json;
    int first;
} case_t;

static int case_open(case_t *c, const char *name) {
    snprintf(c->dir, sizeof c->dir, "%s/%s", mp_test_tmpdir("volops-py"), name);
    mkdir(c->dir, 0777);
    char path[800];
    snprintf(path, sizeof path, "%s/case.json", c->dir);
    c->json = fopen(path, "w");
    if (!c->json) return -1;
    fprintf(c->json, "{\n  \"case\": \"%s\"", name);
    return 0;
}

static void json_matrix(FILE *f, const double a[4][4]) {
    fprintf(f, "[");
    for (int r = 0; r < 4; r++) {
        fprintf(f, "%s[", r ? ", " : "");
        for (int k = 0; k < 4; k++) fprintf(f, "%s%.17g", k ? ", " : "", a[r][k]);
        fprintf(f, "]");
    }
    fprintf(f, "]");
}

static const char *np_dtype(mp_dtype_t t) {
    static const char *names[MP_DTYPE_COUNT] = {"uint8", "int8", "uint16", "int16", "uint32",
                                                "int32", "uint64", "int64", "float32", "float64"};
    return names[t];
}

/* Writes v as NAME.bin and its description under "NAME" in case.json. */
static int case_vol(case_t *c, const char *name, const mp_vol_t *v) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s.bin", c->dir, name);
    if (mp_file_write_atomic(path, v->data, mp_vol_bytes(v))) return -1;
    fprintf(c->json, ",\n  \"%s\": {\"file\": \"%s.bin\", \"dtype\": \"%s\", \"shape\": [%lld, %lld, %lld, %lld], "
                     "\"slope\": %.17g, \"inter\": %.17g, \"affine\": ",
            name, name, np_dtype(v->dtype), (long long)v->dim[3], (long long)v->dim[2], (long long)v->dim[1],
            (long long)v->dim[0], v->scl_slope, v->scl_inter);
    json_matrix(c->json, v->affine);
    fprintf(c->json, "}");
    return 0;
}

static void case_nums(case_t *c, const char *name, const double *x, int n) {
    fprintf(c->json, ",\n  \"%s\": [", name);
    for (int i = 0; i < n; i++) fprintf(c->json, "%s%.17g", i ? ", " : "", x[i]);
    fprintf(c->json, "]");
}

static void case_str(case_t *c, const char *name, const char *value) {
    fprintf(c->json, ",\n  \"%s\": \"%s\"", name, value);
}

/* Closes case.json and runs the reference; returns its exit status. */
static int case_run(case_t *c) {
    fprintf(c->json, "\n}\n");
    fclose(c->json);
    const char *py = getenv("PYTHON");
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/py/vol_ops_ref.py' '%s'", py ? py : "/usr/bin/python3", root_dir(),
             c->dir);
    fflush(stdout);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    if (rc) fprintf(stderr, "  reference failed (%d): %s\n", rc, cmd);
    return rc;
}

static void fill_random(mp_vol_t *v, uint64_t seed, double lo, double hi) {
    mp_rng_t rng;
    mp_rng_init(&rng, seed, 0);
    for (int64_t i = 0; i < mp_vol_elems(v); i++) mp_vol_set(v, i, mp_rng_range(&rng, lo, hi));
}

static void set_affine(mp_vol_t *v, const double m[3][3], const double o[3]) {
    double a[4][4];
    mp_mat4_identity(a);
    for (int r = 0; r < 3; r++) {
        for (int k = 0; k < 3; k++) a[r][k] = m[r][k];
        a[r][3] = o[r];
    }
    mp_vol_set_affine(v, a);
}

/* A rotation (angles in radians about z, y, x) times diag(spacing). */
static void rot_affine(double m[3][3], double az, double ay, double ax, const double sp[3]) {
    double cz = cos(az), sz = sin(az), cy = cos(ay), sy = sin(ay), cx = cos(ax), sx = sin(ax);
    double r[3][3] = {{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
                      {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
                      {-sy, cy * sx, cy * cx}};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) m[i][k] = r[i][k] * sp[k];
}

static void test_linear_vs_scipy(void) {
    case_t c;
    MP_CHECK(case_open(&c, "linear") == 0);
    int64_t d4[4] = {23, 19, 11, 2};
    mp_vol_t *v, *r, *s, *rs, *g;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_F32));
    fill_random(v, 1, -100, 100);
    double m[3][3] = {{0, -0.8, 0}, {1.3, 0, 0}, {0, 0, 2.7}}, o[3] = {5, -3, 40};
    set_affine(v, m, o);
    double target[3] = {0.9, 1.0, 1.1};
    mp_pool_t *pool = mp_pool_create(2);
    MP_CHECK_OK(mp_vol_resample_spacing(&r, v, target, MP_INTERP_LINEAR, pool));
    /* i16 with scaling, downsampled. */
    int64_t e4[4] = {31, 17, 9, 1};
    MP_CHECK_OK(mp_vol_create(&s, e4, MP_DTYPE_I16));
    fill_random(s, 2, -1000, 3000);
    s->scl_slope = 0.25;
    s->scl_inter = -7;
    double m2[3][3] = {{0.6, 0, 0}, {0, 0.6, 0}, {0, 0, 3.0}}, o2[3] = {0, 0, 0}, t2[3] = {1.5, 0.8, 2.0};
    set_affine(s, m2, o2);
    MP_CHECK_OK(mp_vol_resample_spacing(&rs, s, t2, MP_INTERP_LINEAR, NULL));
    /* Oblique grid partly outside the input. */
    double ob[4][4], mo[3][3], spo[3] = {1.1, 0.9, 1.9};
    rot_affine(mo, 0.4, -0.25, 0.15, spo);
    mp_mat4_identity(ob);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) ob[i][k] = mo[i][k];
    ob[0][3] = -20;
    ob[1][3] = -8;
    ob[2][3] = 35;
    int64_t gd[3] = {24, 22, 18};
    MP_CHECK_OK(mp_vol_resample_grid(&g, v, gd, ob, MP_INTERP_LINEAR, -55, pool));
    MP_CHECK(case_vol(&c, "in", v) == 0 && case_vol(&c, "out", r) == 0);
    MP_CHECK(case_vol(&c, "in_i16", s) == 0 && case_vol(&c, "out_i16", rs) == 0);
    MP_CHECK(case_vol(&c, "out_grid", g) == 0);
    case_nums(&c, "target", target, 3);
    case_nums(&c, "target_i16", t2, 3);
    double fill = -55;
    case_nums(&c, "grid_fill", &fill, 1);
    MP_CHECK(case_run(&c) == 0);
    mp_pool_free(pool);
    mp_vol_free(v);
    mp_vol_free(r);
    mp_vol_free(s);
    mp_vol_free(rs);
    mp_vol_free(g);
}

static void test_labels_vs_scipy(void) {
    case_t c;
    MP_CHECK(case_open(&c, "labels") == 0);
    int64_t d4[4] = {30, 26, 14, 1};
    mp_vol_t *v, *l, *n, *g;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_U8));
    /* Blobs: labels from a few random centres (nearest centre within reach). */
    mp_rng_t rng;
    mp_rng_init(&rng, 5, 0);
    double cx[6], cy[6], cz[6];
    for (int k = 0; k < 6; k++) {
        cx[k] = mp_rng_range(&rng, 0, 30);
        cy[k] = mp_rng_range(&rng, 0, 26);
        cz[k] = mp_rng_range(&rng, 0, 14);
    }
    for (int64_t z = 0; z < 14; z++)
        for (int64_t y = 0; y < 26; y++)
            for (int64_t x = 0; x < 30; x++) {
                int best = 0;
                double bd = 1e9;
                for (int k = 0; k < 6; k++) {
                    double d = hypot(hypot(x - cx[k], y - cy[k]), 2 * (z - cz[k]));
                    if (d < bd) bd = d, best = k;
                }
                static const int labs[6] = {0, 1, 2, 3, 7, 200};
                mp_vol_set(v, (z * 26 + y) * 30 + x, bd < 9 ? labs[best] : 0);
            }
    double m[3][3] = {{-0.7, 0, 0}, {0, 0, 1.9}, {0, 0.8, 0}}, o[3] = {1, 2, 3};
    set_affine(v, m, o);
    double target[3] = {1.1, 0.65, 1.3};
    MP_CHECK_OK(mp_vol_resample_spacing(&l, v, target, MP_INTERP_LABEL, NULL));
    MP_CHECK_OK(mp_vol_resample_spacing(&n, v, target, MP_INTERP_NEAREST, NULL));
    double ob[4][4], mo[3][3], spo[3] = {0.9, 1.2, 0.7};
    rot_affine(mo, -0.3, 0.2, 0.5, spo);
    mp_mat4_identity(ob);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) ob[i][k] = mo[i][k];
    ob[0][3] = -25;
    ob[1][3] = -5;
    ob[2][3] = 0;
    int64_t gd[3] = {30, 30, 30};
    MP_CHECK_OK(mp_vol_resample_grid(&g, v, gd, ob, MP_INTERP_LABEL, 9, NULL));
    MP_CHECK(case_vol(&c, "in", v) == 0 && case_vol(&c, "label", l) == 0 && case_vol(&c, "nearest", n) == 0);
    MP_CHECK(case_vol(&c, "label_grid", g) == 0);
    case_nums(&c, "target", target, 3);
    MP_CHECK(case_run(&c) == 0);
    mp_vol_free(v);
    mp_vol_free(l);
    mp_vol_free(n);
    mp_vol_free(g);
}

static void test_reorient_vs_nibabel(void) {
    case_t c;
    MP_CHECK(case_open(&c, "reorient") == 0);
    int64_t d4[4] = {7, 5, 4, 1};
    /* Oblique, anisotropic and permuted affines. */
    double sps[4][3] = {{0.5, 2.0, 1.2}, {3.0, 0.9, 0.9}, {1, 1, 1}, {0.7, 1.5, 4.0}};
    double ang[4][3] = {{0.3, 0.1, -0.2}, {2.0, -0.6, 0.4}, {-2.6, 0.5, 2.9}, {1.2, 1.1, -0.9}};
    const char *codes[4] = {"RAS", "LPS", "IRA", "PSL"};
    for (int k = 0; k < 4; k++) {
        mp_vol_t *v, *r, *t;
        MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_I16));
        fill_random(v, 10 + (uint64_t)k, -30000, 30000);
        double m[3][3], o[3] = {10.0 * k, -4, 2.5};
        rot_affine(m, ang[k][0], ang[k][1], ang[k][2], sps[k]);
        set_affine(v, m, o);
        MP_CHECK_OK(mp_vol_reorient(&r, v, NULL, NULL));
        MP_CHECK_OK(mp_vol_reorient(&t, v, codes[k], NULL));
        char name[32];
        snprintf(name, sizeof name, "in%d", k);
        MP_CHECK(case_vol(&c, name, v) == 0);
        snprintf(name, sizeof name, "ras%d", k);
        MP_CHECK(case_vol(&c, name, r) == 0);
        snprintf(name, sizeof name, "code%d", k);
        MP_CHECK(case_vol(&c, name, t) == 0);
        snprintf(name, sizeof name, "codename%d", k);
        case_str(&c, name, codes[k]);
        mp_vol_free(v);
        mp_vol_free(r);
        mp_vol_free(t);
    }
    double n = 4;
    case_nums(&c, "count", &n, 1);
    MP_CHECK(case_run(&c) == 0);
}

static void test_stats_vs_numpy(void) {
    case_t c;
    MP_CHECK(case_open(&c, "stats") == 0);
    int64_t d4[4] = {41, 37, 13, 1};
    mp_vol_t *v, *mask, *z;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_I16));
    MP_CHECK_OK(mp_vol_create(&mask, d4, MP_DTYPE_U8));
    mp_rng_t rng;
    mp_rng_init(&rng, 21, 0);
    for (int64_t i = 0; i < mp_vol_elems(v); i++) {
        /* CT-like: lots of air (-1024), tissue around 40, some bone. */
        double u = mp_rng_uniform(&rng), x = u < 0.4 ? -1024 : u < 0.9 ? 40 + 30 * mp_rng_normal(&rng) : 700 + 200 * u;
        mp_vol_set(v, i, x);
        mp_vol_set(mask, i, x > -500);
    }
    v->scl_slope = 1.5;
    v->scl_inter = 3;
    double q[10] = {0, 0.5, 1, 25, 33.3, 50, 75, 99, 99.5, 100}, all[10], fg[10];
    mp_voxel_stats_t sa, sf;
    MP_CHECK_OK(mp_vol_intensity_stats(v, 0, NULL, q, 10, all, &sa));
    MP_CHECK_OK(mp_vol_intensity_stats(v, 0, mask, q, 10, fg, &sf));
    MP_CHECK_OK(mp_vol_to_f32(&z, v));
    MP_CHECK_OK(mp_vol_normalize_zscore(z, mask, 1, NULL));
    MP_CHECK(case_vol(&c, "in", v) == 0 && case_vol(&c, "mask", mask) == 0 && case_vol(&c, "zscore", z) == 0);
    case_nums(&c, "q", q, 10);
    case_nums(&c, "pct_all", all, 10);
    case_nums(&c, "pct_fg", fg, 10);
    double s1[5] = {(double)sa.count, sa.mean, sa.std, sa.min, sa.max};
    double s2[5] = {(double)sf.count, sf.mean, sf.std, sf.min, sf.max};
    case_nums(&c, "stats_all", s1, 5);
    case_nums(&c, "stats_fg", s2, 5);
    MP_CHECK(case_run(&c) == 0);
    mp_vol_free(v);
    mp_vol_free(mask);
    mp_vol_free(z);
}

int main(void) {
    MP_RUN(test_linear_vs_scipy);
    MP_RUN(test_labels_vs_scipy);
    MP_RUN(test_reorient_vs_nibabel);
    MP_RUN(test_stats_vs_numpy);
    if (mp_test_failed == 0) { /* keep the scratch files of a failure for inspection */
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", mp_test_tmpdir("volops-py"));
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", mp_test_tmpdir("volops-py"));
    }
    return mp_test_summary();
}
