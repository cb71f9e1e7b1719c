/* Morphology: connected components (6 vs 26 connectivity, numbering, sizes,
 * agreement with a breadth-first flood fill), label values, keep-largest
 * post-processing, and the exact distance transform (hand-computable cases,
 * brute force on random masks, thread-count invariance). */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/vol_morph.h"

#include <stdint.h>

static int64_t idx3(const int64_t d[3], int64_t x, int64_t y, int64_t z) { return x + d[0] * (y + d[1] * z); }

static void test_cc_diagonal_6_vs_26(void) {
    const int64_t d[3] = {4, 3, 2};
    uint16_t keys[24] = {0};
    keys[idx3(d, 0, 0, 0)] = 1;
    keys[idx3(d, 1, 1, 0)] = 1; /* edge-touching (0,0,0) */
    keys[idx3(d, 2, 2, 1)] = 1; /* corner-touching (1,1,0) */
    keys[idx3(d, 3, 0, 0)] = 1; /* isolated in both */
    uint32_t lab[24];
    int64_t n, *sizes;
    MP_CHECK_OK(mp_cc_label_keys(lab, &n, &sizes, keys, d, MP_CONN_6));
    MP_CHECK(n == 4);
    /* Numbered by first voxel in memory order: (0,0,0), (3,0,0), (1,1,0), (2,2,1). */
    MP_CHECK(lab[idx3(d, 0, 0, 0)] == 1 && lab[idx3(d, 3, 0, 0)] == 2);
    MP_CHECK(lab[idx3(d, 1, 1, 0)] == 3 && lab[idx3(d, 2, 2, 1)] == 4);
    MP_CHECK(sizes[0] == 20 && sizes[1] == 1 && sizes[4] == 1);
    mp_free(sizes);
    MP_CHECK_OK(mp_cc_label_keys(lab, &n, &sizes, keys, d, MP_CONN_26));
    MP_CHECK(n == 2);
    MP_CHECK(lab[idx3(d, 0, 0, 0)] == 1 && lab[idx3(d, 1, 1, 0)] == 1 && lab[idx3(d, 2, 2, 1)] == 1);
    MP_CHECK(lab[idx3(d, 3, 0, 0)] == 2);
    MP_CHECK(sizes[1] == 3 && sizes[2] == 1 && sizes[0] == 20);
    mp_free(sizes);
    MP_CHECK(mp_cc_label_keys(lab, &n, NULL, keys, d, (mp_conn_t)18) == MP_ERR_ARG);
}

/* A U shape: the two arms meet only at the bottom row, which the scan
 * reaches last, so the union-find has to merge two provisional labels. */
static void test_cc_merge_u_shape(void) {
    const int64_t d[3] = {5, 4, 1};
    const char *rows[4] = {"#...#", "#...#", "#...#", "#####"};
    uint16_t keys[20];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 5; x++) keys[idx3(d, x, y, 0)] = rows[y][x] == '#';
    uint32_t lab[20];
    int64_t n, *sizes;
    MP_CHECK_OK(mp_cc_label_keys(lab, &n, &sizes, keys, d, MP_CONN_6));
    MP_CHECK(n == 1 && sizes[1] == 11);
    for (int i = 0; i < 20; i++) MP_CHECK(lab[i] == (keys[i] ? 1u : 0u));
    mp_free(sizes);
}

/* Independent reference: breadth-first flood fill from each unvisited voxel
 * in memory order (explicit queue). */
static int64_t flood_fill(uint32_t *lab, const uint16_t *keys, const int64_t d[3], int conn) {
    int64_t nv = d[0] * d[1] * d[2], n = 0;
    int64_t *queue = malloc(sizeof *queue * (size_t)nv);
    memset(lab, 0, sizeof *lab * (size_t)nv);
    for (int64_t s = 0; s < nv; s++) {
        if (!keys[s] || lab[s]) continue;
        lab[s] = (uint32_t)++n;
        int64_t head = 0, tail = 0;
        queue[tail++] = s;
        while (head < tail) {
            int64_t i = queue[head++], x = i % d[0], y = i / d[0] % d[1], z = i / (d[0] * d[1]);
            for (int dz = -1; dz <= 1; dz++)
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int manhattan = abs(dx) + abs(dy) + abs(dz);
                        if (manhattan == 0 || (conn == 6 && manhattan > 1)) continue;
                        int64_t xx = x + dx, yy = y + dy, zz = z + dz;
                        if (xx < 0 || yy < 0 || zz < 0 || xx >= d[0] || yy >= d[1] || zz >= d[2]) continue;
                        int64_t j = idx3(d, xx, yy, zz);
                        if (keys[j] == keys[s] && !lab[j]) {
                            lab[j] = (uint32_t)n;
                            queue[tail++] = j;
                        }
                    }
        }
    }
    free(queue);
    return n;
}

static void test_cc_matches_flood_fill(void) {
    mp_rng_t r;
    mp_rng_init(&r, 11, 0);
    const int64_t d[3] = {23, 17, 13};
    int64_t nv = d[0] * d[1] * d[2];
    uint16_t *keys = malloc(sizeof *keys * (size_t)nv);
    uint32_t *a = malloc(sizeof *a * (size_t)nv), *b = malloc(sizeof *b * (size_t)nv);
    int ok = 1;
    for (int rep = 0; rep < 12 && ok; rep++) {
        int nclass = 1 + rep % 3; /* binary and multi-class key grids */
        double density = 0.3 + 0.05 * rep;
        for (int64_t i = 0; i < nv; i++)
            keys[i] = mp_rng_uniform(&r) < density ? (uint16_t)(1 + mp_rng_below(&r, (uint64_t)nclass)) : 0;
        for (int c = 0; c < 2 && ok; c++) {
            mp_conn_t conn = c ? MP_CONN_26 : MP_CONN_6;
            int64_t n, *sizes;
            if (mp_cc_label_keys(a, &n, &sizes, keys, d, conn)) {
                ok = 0;
                break;
            }
            int64_t nref = flood_fill(b, keys, d, conn);
            ok = n == nref && memcmp(a, b, sizeof *a * (size_t)nv) == 0;
            int64_t total = 0;
            for (int64_t l = 0; l <= n; l++) total += sizes[l];
            ok = ok && total == nv;
            mp_free(sizes);
            if (!ok) fprintf(stderr, "  rep %d conn %d: %lld vs %lld components\n", rep, (int)conn, (long long)n,
                             (long long)nref);
        }
    }
    free(keys);
    free(a);
    free(b);
    MP_CHECK(ok);
}

static mp_vol_t *label_volume(const int64_t d[3], const char *const *slices) {
    int64_t dim[4] = {d[0], d[1], d[2], 1};
    mp_vol_t *v;
    if (mp_vol_create(&v, dim, MP_DTYPE_I16)) return NULL;
    for (int64_t z = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++) {
                char ch = slices[z][y * d[0] + x];
                mp_vol_set(v, idx3(d, x, y, z), ch == '.' ? 0 : ch - '0');
            }
    return v;
}

static void test_vol_cc_per_value(void) {
    const int64_t d[3] = {6, 2, 1};
    const char *s[1] = {"112.33"
                        "1.2..3"};
    mp_vol_t *v = label_volume(d, s), *lab;
    MP_CHECK(v);
    int64_t n;
    MP_CHECK_OK(mp_vol_cc_label(&lab, &n, NULL, v, MP_CONN_6, 0));
    MP_CHECK(n == 2 && lab->dtype == MP_DTYPE_U32);
    mp_vol_free(lab);
    MP_CHECK_OK(mp_vol_cc_label(&lab, &n, NULL, v, MP_CONN_6, 1));
    const uint32_t *l = lab->data;
    MP_CHECK(n == 3 && l[0] == 1 && l[1] == 1 && l[2] == 2 && l[4] == 3 && l[6] == 1 && l[8] == 2 && l[11] == 3);
    mp_vol_free(lab);
    mp_vol_free(v);
}

static void test_label_values(void) {
    const int64_t d[3] = {5, 1, 1};
    const char *s[1] = {"7.270"};
    mp_vol_t *v = label_volume(d, s);
    int64_t *vals;
    int n;
    MP_CHECK_OK(mp_vol_label_values(&vals, &n, v));
    MP_CHECK(n == 2 && vals[0] == 2 && vals[1] == 7);
    mp_free(vals);
    v->scl_slope = 2; /* real values 14, 0, 4, 14, 0 */
    v->scl_inter = 0;
    MP_CHECK_OK(mp_vol_label_values(&vals, &n, v));
    MP_CHECK(n == 2 && vals[0] == 4 && vals[1] == 14);
    mp_free(vals);
    v->scl_slope = 0.5;
    MP_CHECK(mp_vol_label_values(&vals, &n, v) == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "3.5") != NULL);
    mp_vol_free(v);
}

/* The typed fast paths (unscaled integers) and the generic path (floats,
 * scaled values) must agree for every data type. */
static void test_label_index_dtypes(void) {
    const int64_t dim[4] = {50, 3, 2, 1};
    mp_rng_t r;
    mp_rng_init(&r, 4, 0);
    const double pool[6] = {0, 1, 2, 7, 100, 0};
    double vals[300];
    for (int i = 0; i < 300; i++) vals[i] = pool[mp_rng_below(&r, 6)];
    const int64_t labels[3] = {7, 1, 100};
    uint16_t want[300], got[300];
    for (int i = 0; i < 300; i++) want[i] = vals[i] == 7 ? 1 : vals[i] == 1 ? 2 : vals[i] == 100 ? 3 : 0;
    for (int t = 0; t < MP_DTYPE_COUNT; t++) {
        for (int scaled = 0; scaled < 2; scaled++) {
            mp_vol_t *v;
            MP_CHECK_OK(mp_vol_create(&v, dim, (mp_dtype_t)t));
            for (int i = 0; i < 300; i++) mp_vol_set(v, i, scaled ? vals[i] + 3 : vals[i]);
            if (scaled) v->scl_inter = -3; /* real = stored - 3: the generic path */
            MP_CHECK_OK(mp_vol_label_index(got, v, labels, 3));
            MP_CHECKF(memcmp(got, want, sizeof want) == 0, "dtype %s scaled %d", mp_dtype_name((mp_dtype_t)t), scaled);
            int64_t *lv;
            int n;
            MP_CHECK_OK(mp_vol_label_values(&lv, &n, v));
            MP_CHECK(n == 4 && lv[0] == 1 && lv[1] == 2 && lv[2] == 7 && lv[3] == 100);
            mp_free(lv);
            mp_vol_free(v);
        }
    }
}

static void test_keep_largest(void) {
    const int64_t d[3] = {7, 3, 1};
    /* class 1: blob A (5 voxels, left) and blob B (2 voxels); class 2 touches B. */
    const char *s[1] = {"11.1122"
                        "11..222"
                        "1......"};
    mp_vol_t *v = label_volume(d, s), *w;
    int64_t removed;
    MP_CHECK_OK(mp_vol_clone(&w, v));
    MP_CHECK_OK(mp_vol_keep_largest(w, MP_CONN_6, NULL, 0, 0, &removed));
    const char *want1 = "11..022"
                        "11..222"
                        "1......";
    MP_CHECK(removed == 2);
    for (int i = 0; i < 21; i++) MP_CHECK(mp_vol_get(w, i) == (want1[i] == '.' ? 0 : want1[i] - '0'));
    mp_vol_free(w);
    /* All foreground as one: B + class 2 (7 voxels) beats A (5 voxels). */
    MP_CHECK_OK(mp_vol_clone(&w, v));
    MP_CHECK_OK(mp_vol_keep_largest(w, MP_CONN_6, NULL, 0, 1, &removed));
    MP_CHECK(removed == 5);
    for (int i = 0; i < 21; i++) MP_CHECK(mp_vol_get(w, i) == (i % 7 >= 3 ? mp_vol_get(v, i) : 0));
    mp_vol_free(w);
    /* Only class 2 listed: class 1 untouched. */
    MP_CHECK_OK(mp_vol_clone(&w, v));
    const int64_t two = 2;
    MP_CHECK_OK(mp_vol_keep_largest(w, MP_CONN_6, &two, 1, 0, &removed));
    MP_CHECK(removed == 0 && memcmp(w->data, v->data, mp_vol_bytes(v)) == 0);
    mp_vol_free(w);
    /* Tie: two single voxels of class 3, the first in memory order stays. */
    const int64_t d2[3] = {3, 1, 1};
    const char *s2[1] = {"3.3"};
    mp_vol_t *t = label_volume(d2, s2);
    MP_CHECK_OK(mp_vol_keep_largest(t, MP_CONN_26, NULL, 0, 0, &removed));
    MP_CHECK(removed == 1 && mp_vol_get(t, 0) == 3 && mp_vol_get(t, 2) == 0);
    mp_vol_free(t);
    mp_vol_free(v);
}

static void test_edt_single_point_anisotropic(void) {
    const int64_t d[3] = {9, 7, 5};
    const double sp[3] = {0.7, 1.3, 2.9};
    int64_t nv = 9 * 7 * 5;
    uint8_t *f = calloc((size_t)nv, 1);
    double *sq = malloc(sizeof *sq * (size_t)nv);
    f[idx3(d, 2, 5, 1)] = 1;
    MP_CHECK_OK(mp_edt_sq(sq, f, d, sp, NULL));
    int ok = 1;
    for (int64_t z = 0; z < 5; z++)
        for (int64_t y = 0; y < 7; y++)
            for (int64_t x = 0; x < 9; x++) {
                double ex = (x - 2) * sp[0], ey = (y - 5) * sp[1], ez = (z - 1) * sp[2];
                double want = ex * ex + ey * ey + ez * ez;
                ok &= fabs(sq[idx3(d, x, y, z)] - want) <= 1e-12 * (1 + want);
            }
    free(f);
    free(sq);
    MP_CHECK(ok);
}

static void test_edt_planes_and_empty(void) {
    const int64_t d[3] = {6, 5, 8};
    const double sp[3] = {1.0, 0.5, 2.5};
    int64_t nv = 6 * 5 * 8;
    uint8_t *f = calloc((size_t)nv, 1);
    double *sq = malloc(sizeof *sq * (size_t)nv);
    MP_CHECK_OK(mp_edt_sq(sq, f, d, sp, NULL)); /* empty feature set */
    int ok = 1;
    for (int64_t i = 0; i < nv; i++) ok &= isinf(sq[i]) && sq[i] > 0;
    MP_CHECK(ok);
    /* Two planes z = 1 and z = 6: distance min(|z-1|, |z-6|) * 2.5. */
    for (int64_t y = 0; y < 5; y++)
        for (int64_t x = 0; x < 6; x++) f[idx3(d, x, y, 1)] = f[idx3(d, x, y, 6)] = 1;
    MP_CHECK_OK(mp_edt_sq(sq, f, d, sp, NULL));
    for (int64_t z = 0; z < 8; z++) {
        double dz = fmin(fabs((double)z - 1), fabs((double)z - 6)) * sp[2];
        for (int64_t i = 0; i < 30; i++) ok &= sq[z * 30 + i] == dz * dz;
    }
    MP_CHECK(ok);
    /* A plane x = 0: distance x * 1.0 */
    memset(f, 0, (size_t)nv);
    for (int64_t z = 0; z < 8; z++)
        for (int64_t y = 0; y < 5; y++) f[idx3(d, 0, y, z)] = 1;
    MP_CHECK_OK(mp_edt_sq(sq, f, d, sp, NULL));
    for (int64_t i = 0; i < nv; i++) ok &= sq[i] == (double)((i % 6) * (i % 6));
    free(f);
    free(sq);
    MP_CHECK(ok);
    double bad[3] = {1, 0, 1};
    double one;
    uint8_t f1 = 1;
    const int64_t d1[3] = {1, 1, 1};
    MP_CHECK(mp_edt_sq(&one, &f1, d1, bad, NULL) == MP_ERR_ARG);
}

static void random_mask(uint8_t *f, int64_t nv, mp_rng_t *r, double p) {
    for (int64_t i = 0; i < nv; i++) f[i] = mp_rng_uniform(r) < p;
}

static void test_edt_brute_force(void) {
    mp_rng_t r;
    mp_rng_init(&r, 5, 1);
    const int64_t d[3] = {13, 11, 9};
    const double sp[3] = {0.8, 1.7, 1.1};
    int64_t nv = 13 * 11 * 9;
    uint8_t *f = malloc((size_t)nv);
    double *sq = malloc(sizeof *sq * (size_t)nv);
    int ok = 1;
    const double density[4] = {0.002, 0.02, 0.2, 0.7};
    for (int rep = 0; rep < 4; rep++) {
        random_mask(f, nv, &r, density[rep]);
        f[nv / 2] = 1;
        MP_CHECK_OK(mp_edt_sq(sq, f, d, sp, NULL));
        for (int64_t i = 0; i < nv; i++) {
            double best = INFINITY;
            int64_t xi = i % 13, yi = i / 13 % 11, zi = i / 143;
            for (int64_t j = 0; j < nv; j++) {
                if (!f[j]) continue;
                double ex = (double)(j % 13 - xi) * sp[0], ey = (double)(j / 13 % 11 - yi) * sp[1],
                       ez = (double)(j / 143 - zi) * sp[2];
                double v = ex * ex + ey * ey + ez * ez;
                if (v < best) best = v;
            }
            ok &= fabs(sq[i] - best) <= 1e-12 * (1 + best);
        }
    }
    free(f);
    free(sq);
    MP_CHECK(ok);
}

static void test_edt_thread_invariance(void) {
    mp_rng_t r;
    mp_rng_init(&r, 9, 2);
    const int64_t d[3] = {37, 29, 21}; /* x not a multiple of the 8-column tile */
    const double sp[3] = {0.9, 1.25, 3.0};
    int64_t nv = 37 * 29 * 21;
    uint8_t *f = malloc((size_t)nv);
    double *a = malloc(sizeof *a * (size_t)nv), *b = malloc(sizeof *b * (size_t)nv);
    random_mask(f, nv, &r, 0.01);
    MP_CHECK_OK(mp_edt_sq(a, f, d, sp, NULL));
    int same = 1;
    for (int t = 1; t <= 4; t++) {
        mp_pool_t *pool = mp_pool_create(t);
        int rc = mp_edt_sq(b, f, d, sp, pool);
        mp_pool_free(pool);
        same &= rc == 0 && memcmp(a, b, sizeof *a * (size_t)nv) == 0;
    }
    free(f);
    free(a);
    free(b);
    MP_CHECK(same);
}

static void test_vol_edt_to_zero(void) {
    const int64_t dim[4] = {5, 1, 1, 1};
    mp_vol_t *v, *e;
    MP_CHECK_OK(mp_vol_create(&v, dim, MP_DTYPE_U8));
    const double sp[3] = {2.0, 1.0, 1.0};
    mp_vol_set_spacing(v, sp, NULL);
    uint8_t vals[5] = {0, 1, 1, 1, 1};
    memcpy(v->data, vals, 5);
    MP_CHECK_OK(mp_vol_edt(&e, v, 1, MP_DTYPE_F32, NULL)); /* scipy: distance to the nearest zero */
    const float *d = e->data;
    MP_CHECK(e->dtype == MP_DTYPE_F32 && d[0] == 0 && d[1] == 2 && d[4] == 8);
    mp_vol_free(e);
    MP_CHECK_OK(mp_vol_edt(&e, v, 0, MP_DTYPE_F64, NULL));
    const double *dd = e->data;
    MP_CHECK(dd[0] == 2 && dd[1] == 0 && dd[4] == 0);
    mp_vol_free(e);
    memset(v->data, 0, 5); /* no non-zero voxel: +inf */
    MP_CHECK_OK(mp_vol_edt(&e, v, 0, MP_DTYPE_F32, NULL));
    MP_CHECK(isinf(((float *)e->data)[2]));
    mp_vol_free(e);
    MP_CHECK(mp_vol_edt(&e, v, 0, MP_DTYPE_U8, NULL) == MP_ERR_ARG);
    mp_vol_free(v);
}

int main(void) {
    MP_RUN(test_cc_diagonal_6_vs_26);
    MP_RUN(test_cc_merge_u_shape);
    MP_RUN(test_cc_matches_flood_fill);
    MP_RUN(test_vol_cc_per_value);
    MP_RUN(test_label_values);
    MP_RUN(test_label_index_dtypes);
    MP_RUN(test_keep_largest);
    MP_RUN(test_edt_single_point_anisotropic);
    MP_RUN(test_edt_planes_and_empty);
    MP_RUN(test_edt_brute_force);
    MP_RUN(test_edt_thread_invariance);
    MP_RUN(test_vol_edt_to_zero);
    return mp_test_summary();
}
