/* Volume operations: hand-computable cases for crop/pad (and their undo),
 * resampling (linear ramps stay linear at world positions, nearest keeps
 * labels, per-label linear on spheres), reorientation of all 48 axis
 * permutation/flip affines, normalization, percentiles and thread-count
 * independence. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/vol_ops.h"

static void world_of(const double a[4][4], double i, double j, double k, double w[3]) {
    for (int r = 0; r < 3; r++) w[r] = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3];
}

/* A linear function of world position. */
static double ramp(const double w[3]) { return 0.75 * w[0] - 1.5 * w[1] + 0.25 * w[2] + 10; }

static void make_affine(double a[4][4], const double m[3][3], const double origin[3]) {
    mp_mat4_identity(a);
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++) a[r][c] = m[r][c];
        a[r][3] = origin[r];
    }
}

/* A float volume holding ramp() of each voxel's world position. */
static mp_vol_t *ramp_volume(const int64_t dim[3], const double a[4][4]) {
    int64_t d4[4] = {dim[0], dim[1], dim[2], 1};
    mp_vol_t *v;
    if (mp_vol_create(&v, d4, MP_DTYPE_F32)) return NULL;
    mp_vol_set_affine(v, a);
    float *p = v->data;
    for (int64_t k = 0; k < dim[2]; k++)
        for (int64_t j = 0; j < dim[1]; j++)
            for (int64_t i = 0; i < dim[0]; i++) {
                double w[3];
                world_of(a, (double)i, (double)j, (double)k, w);
                p[(k * dim[1] + j) * dim[0] + i] = (float)ramp(w);
            }
    return v;
}

/* Checks every voxel of `out` (LINEAR) against the ramp at the clamped input
 * position of its world point; outside the input's extent it must be fill.
 * Returns the number of failures; *inside counts the voxels inside. */
static int64_t check_ramp(const mp_vol_t *in, const mp_vol_t *out, double fill, int64_t *inside) {
    double inv[4][4];
    mp_mat4_inv(inv, in->affine);
    int64_t bad = 0, ins = 0;
    const float *p = out->data;
    for (int64_t k = 0; k < out->dim[2]; k++)
        for (int64_t j = 0; j < out->dim[1]; j++)
            for (int64_t i = 0; i < out->dim[0]; i++) {
                double w[3], x[3];
                world_of(out->affine, (double)i, (double)j, (double)k, w);
                world_of(inv, w[0], w[1], w[2], x);
                int ok = 1;
                for (int a = 0; a < 3; a++) {
                    ok &= x[a] >= -0.5 - 1e-6 && x[a] <= (double)in->dim[a] - 0.5 + 1e-6;
                    x[a] = x[a] < 0 ? 0 : x[a] > (double)(in->dim[a] - 1) ? (double)(in->dim[a] - 1) : x[a];
                }
                double got = p[(k * out->dim[1] + j) * out->dim[0] + i], want = fill;
                if (ok) {
                    world_of(in->affine, x[0], x[1], x[2], w);
                    want = ramp(w);
                    ins++;
                }
                if (fabs(got - want) > 1e-4 * (1 + fabs(want))) {
                    if (bad < 5) fprintf(stderr, "    voxel %lld %lld %lld: %g, want %g\n", (long long)i, (long long)j, (long long)k, got, want);
                    bad++;
                }
            }
    if (inside) *inside = ins;
    return bad;
}

static void test_resample_linear_ramp(void) {
    /* Anisotropic, permuted and flipped axes with an origin. */
    double m[3][3] = {{0, 0, -2.5}, {0.7, 0, 0}, {0, -1.3, 0}}, o[3] = {12.5, -30, 7};
    double a[4][4];
    make_affine(a, m, o);
    int64_t dim[3] = {13, 11, 7};
    mp_vol_t *v = ramp_volume(dim, a), *r;
    MP_CHECK(v != NULL);
    double target[3] = {1.0, 0.9, 1.7};
    int64_t want_dim[3];
    MP_CHECK_OK(mp_resample_dims_for_spacing(v, target, want_dim));
    MP_CHECK(want_dim[0] == 9 && want_dim[1] == 16 && want_dim[2] == 10); /* round(13*.7/1), 11*1.3/.9, 7*2.5/1.7 */
    MP_CHECK_OK(mp_vol_resample_spacing(&r, v, target, MP_INTERP_LINEAR, NULL));
    MP_CHECK(r->dtype == MP_DTYPE_F32 && r->dim[0] == 9 && r->dim[1] == 16 && r->dim[2] == 10);
    /* Spacing is in_spacing * in_dim / out_dim: the field of view is kept. */
    MP_CHECK_NEAR(r->spacing[0], 0.7 * 13 / 9, 1e-12);
    MP_CHECK_NEAR(r->spacing[2], 2.5 * 7 / 10, 1e-12);
    int64_t inside;
    MP_CHECK(check_ramp(v, r, 0, &inside) == 0);
    MP_CHECK(inside == mp_vol_voxels(r));
    /* The corner voxel's world position: half a voxel in from the input corner. */
    double w0[3], wi[3];
    world_of(r->affine, -0.5, -0.5, -0.5, w0);
    world_of(a, -0.5, -0.5, -0.5, wi);
    for (int k = 0; k < 3; k++) MP_CHECK_NEAR(w0[k], wi[k], 1e-9);
    mp_vol_free(r);

    /* Integer input with scaling gives real values in f32. */
    int64_t d4[4] = {6, 5, 4, 1};
    mp_vol_t *s;
    MP_CHECK_OK(mp_vol_create(&s, d4, MP_DTYPE_I16));
    for (int64_t k = 0; k < 4; k++)
        for (int64_t j = 0; j < 5; j++)
            for (int64_t i = 0; i < 6; i++) mp_vol_set(s, (k * 5 + j) * 6 + i, (double)(3 * i + 5 * j - 2 * k + 100));
    s->scl_slope = 0.5;
    s->scl_inter = -10;
    int64_t od[3] = {11, 3, 4};
    MP_CHECK_OK(mp_vol_resample_shape(&r, s, od, MP_INTERP_LINEAR, NULL));
    for (int64_t i = 0; i < 11; i++) {
        double x = (i + 0.5) * 6.0 / 11 - 0.5, y = (1 + 0.5) * 5.0 / 3 - 0.5, z = 2;
        x = x < 0 ? 0 : x > 5 ? 5 : x;
        double want = (3 * x + 5 * y - 2 * z + 100) * 0.5 - 10;
        MP_CHECK_NEAR(mp_vol_get(r, (2 * 3 + 1) * 11 + i), want, 1e-4);
    }
    MP_CHECK(r->scl_slope == 1 && r->scl_inter == 0);
    mp_vol_free(r);
    mp_vol_free(s);
    mp_vol_free(v);
}

static void test_resample_grid(void) {
    double m[3][3] = {{1.2, 0, 0}, {0, 0.8, 0}, {0, 0, 2.0}}, o[3] = {-10, 5, 3};
    double a[4][4];
    make_affine(a, m, o);
    int64_t dim[3] = {14, 17, 9};
    mp_vol_t *v = ramp_volume(dim, a), *r;
    MP_CHECK(v != NULL);
    /* Oblique target: rotated 20 degrees about z and 10 about x, larger than
     * the input so part of it falls outside. */
    double c1 = cos(0.35), s1 = sin(0.35), c2 = cos(0.17), s2 = sin(0.17);
    double rot[3][3] = {{c1, -s1 * c2, s1 * s2}, {s1, c1 * c2, -c1 * s2}, {0, s2, c2}};
    double sp[3] = {1.1, 0.9, 1.6}, t[3][3], ob[4][4];
    for (int r0 = 0; r0 < 3; r0++)
        for (int c = 0; c < 3; c++) t[r0][c] = rot[r0][c] * sp[c];
    double oo[3] = {-14, 2, 0};
    make_affine(ob, t, oo);
    int64_t gd[3] = {20, 19, 13};
    int64_t inside;
    MP_CHECK_OK(mp_vol_resample_grid(&r, v, gd, ob, MP_INTERP_LINEAR, -123, NULL));
    MP_CHECK(r->dim[0] == 20 && r->dim[1] == 19 && r->dim[2] == 13);
    MP_CHECK(check_ramp(v, r, -123, &inside) == 0);
    MP_CHECK(inside > 500 && inside < mp_vol_voxels(r));
    mp_vol_free(r);
    /* Axis-aligned flipped grid (LPS-like): the separable path. */
    double fl[3][3] = {{-0.9, 0, 0}, {0, -1.1, 0}, {0, 0, 1.5}}, fo[3] = {8, 20, 2}, fa[4][4];
    make_affine(fa, fl, fo);
    int64_t fd[3] = {25, 16, 14};
    MP_CHECK_OK(mp_vol_resample_grid(&r, v, fd, fa, MP_INTERP_LINEAR, 7, NULL));
    MP_CHECK(check_ramp(v, r, 7, &inside) == 0);
    MP_CHECK(inside > 500 && inside < mp_vol_voxels(r));
    mp_vol_free(r);
    /* Back to the input's own grid: identity. */
    MP_CHECK_OK(mp_vol_resample_grid(&r, v, dim, a, MP_INTERP_LINEAR, 0, NULL));
    MP_CHECK(memcmp(r->data, v->data, mp_vol_bytes(v)) == 0);
    mp_vol_free(r);
    mp_vol_free(v);
}

/* Label volume: two spheres (labels 1 and 2) in world coordinates. */
static mp_vol_t *sphere_labels(const int64_t dim[3], const double sp[3], mp_dtype_t dt) {
    int64_t d4[4] = {dim[0], dim[1], dim[2], 1};
    mp_vol_t *v;
    if (mp_vol_create(&v, d4, dt)) return NULL;
    double org[3] = {-3, 4, -20};
    mp_vol_set_spacing(v, sp, org);
    for (int64_t k = 0; k < dim[2]; k++)
        for (int64_t j = 0; j < dim[1]; j++)
            for (int64_t i = 0; i < dim[0]; i++) {
                double w[3];
                world_of(v->affine, (double)i, (double)j, (double)k, w);
                double d1 = hypot(hypot(w[0] - 8, w[1] - 19), w[2] + 4);
                double d2 = hypot(hypot(w[0] - 22, w[1] - 22), w[2] + 6);
                int lab = d1 < 8 ? 1 : d2 < 6 ? 2 : 0;
                mp_vol_set(v, (k * dim[1] + j) * dim[0] + i, lab);
            }
    return v;
}

static void count_labels(const mp_vol_t *v, int64_t cnt[3], int64_t *other) {
    cnt[0] = cnt[1] = cnt[2] = 0;
    *other = 0;
    for (int64_t i = 0; i < mp_vol_elems(v); i++) {
        double x = mp_vol_get(v, i);
        if (x == 0 || x == 1 || x == 2) cnt[(int)x]++;
        else (*other)++;
    }
}

static void test_resample_labels(void) {
    int64_t dim[3] = {40, 36, 20};
    double sp[3] = {0.8, 0.9, 1.5};
    mp_vol_t *v = sphere_labels(dim, sp, MP_DTYPE_U8), *n, *l;
    MP_CHECK(v != NULL);
    double target[3] = {1.1, 0.7, 1.0};
    MP_CHECK_OK(mp_vol_resample_spacing(&n, v, target, MP_INTERP_NEAREST, NULL));
    MP_CHECK_OK(mp_vol_resample_spacing(&l, v, target, MP_INTERP_LABEL, NULL));
    MP_CHECK(n->dtype == MP_DTYPE_U8 && l->dtype == MP_DTYPE_U8);
    int64_t cn[3], cl[3], other;
    count_labels(n, cn, &other);
    MP_CHECK(other == 0 && cn[1] > 0 && cn[2] > 0);
    count_labels(l, cl, &other);
    MP_CHECK(other == 0 && cl[1] > 0 && cl[2] > 0);
    /* Sphere volumes in mm^3 stay close to the analytic ones. */
    double vox = l->spacing[0] * l->spacing[1] * l->spacing[2];
    double v1 = 4.0 / 3 * M_PI * 512, v2 = 4.0 / 3 * M_PI * 216;
    MP_CHECKF(fabs(cl[1] * vox - v1) < 0.08 * v1, "label 1: %g mm3 vs %g", cl[1] * vox, v1);
    MP_CHECKF(fabs(cl[2] * vox - v2) < 0.08 * v2, "label 2: %g mm3 vs %g", cl[2] * vox, v2);
    /* Nearest: every output voxel is the input voxel nearest to its position. */
    double inv[4][4];
    mp_mat4_inv(inv, v->affine);
    for (int64_t k = 0; k < n->dim[2]; k++)
        for (int64_t j = 0; j < n->dim[1]; j++)
            for (int64_t i = 0; i < n->dim[0]; i++) {
                double w[3], x[3];
                int64_t idx[3];
                world_of(n->affine, (double)i, (double)j, (double)k, w);
                world_of(inv, w[0], w[1], w[2], x);
                for (int a = 0; a < 3; a++) {
                    idx[a] = (int64_t)floor(x[a] + 0.5);
                    idx[a] = idx[a] < 0 ? 0 : idx[a] >= dim[a] ? dim[a] - 1 : idx[a];
                }
                double got = mp_vol_get(n, (k * n->dim[1] + j) * n->dim[0] + i);
                MP_CHECK(got == mp_vol_get(v, (idx[2] * dim[1] + idx[1]) * dim[0] + idx[0]));
            }
    /* Per-label linear: deep inside / far outside each sphere is exact. */
    for (int64_t k = 0; k < l->dim[2]; k++)
        for (int64_t j = 0; j < l->dim[1]; j++)
            for (int64_t i = 0; i < l->dim[0]; i++) {
                double w[3];
                world_of(l->affine, (double)i, (double)j, (double)k, w);
                double d1 = hypot(hypot(w[0] - 8, w[1] - 19), w[2] + 4);
                double d2 = hypot(hypot(w[0] - 22, w[1] - 22), w[2] + 6);
                int got = (int)mp_vol_get(l, (k * l->dim[1] + j) * l->dim[0] + i);
                if (d1 < 6) MP_CHECK(got == 1);
                if (d2 < 4 && d1 > 10) MP_CHECK(got == 2);
                if (d1 > 10 && d2 > 8) MP_CHECK(got == 0);
            }
    /* Every element size gives the same labels (typed row kernels). */
    const mp_dtype_t dts[4] = {MP_DTYPE_U16, MP_DTYPE_F32, MP_DTYPE_I64, MP_DTYPE_F64};
    for (int k = 0; k < 4; k++) {
        mp_vol_t *cv, *tl, *tn;
        MP_CHECK_OK(mp_vol_convert(&cv, v, dts[k], 0, NULL));
        MP_CHECK_OK(mp_vol_resample_spacing(&tl, cv, target, MP_INTERP_LABEL, NULL));
        MP_CHECK_OK(mp_vol_resample_spacing(&tn, cv, target, MP_INTERP_NEAREST, NULL));
        MP_CHECK(tl->dtype == dts[k] && mp_vol_elems(tl) == mp_vol_elems(l));
        int same = 1;
        for (int64_t i = 0; i < mp_vol_elems(l); i++)
            same &= mp_vol_get(tl, i) == mp_vol_get(l, i) && mp_vol_get(tn, i) == mp_vol_get(n, i);
        mp_vol_free(cv);
        mp_vol_free(tl);
        mp_vol_free(tn);
        MP_CHECKF(same, "dtype %s", mp_dtype_name(dts[k]));
    }
    mp_vol_free(n);
    mp_vol_free(l);
    mp_vol_free(v);

    /* Hand cases: [1, 2] upsampled to 4 -> weights of 2: 0, .25, .75, 1. */
    int64_t d2[4] = {2, 1, 1, 1}, o4[3] = {4, 1, 1}, o1[3] = {1, 1, 1};
    MP_CHECK_OK(mp_vol_create(&v, d2, MP_DTYPE_I16));
    mp_vol_set(v, 0, 1);
    mp_vol_set(v, 1, 2);
    MP_CHECK_OK(mp_vol_resample_shape(&l, v, o4, MP_INTERP_LABEL, NULL));
    MP_CHECK(mp_vol_get(l, 0) == 1 && mp_vol_get(l, 1) == 1 && mp_vol_get(l, 2) == 2 && mp_vol_get(l, 3) == 2);
    mp_vol_free(l);
    /* [2, 1] down to 1 voxel: a tie at 0.5, the smaller label wins. */
    mp_vol_set(v, 0, 2);
    mp_vol_set(v, 1, 1);
    MP_CHECK_OK(mp_vol_resample_shape(&l, v, o1, MP_INTERP_LABEL, NULL));
    MP_CHECK(mp_vol_get(l, 0) == 1);
    mp_vol_free(l);
    mp_vol_free(v);
}

static void test_crop_uncrop(void) {
    int64_t d4[4] = {12, 10, 8, 2};
    mp_vol_t *v, *c, *u, *mask;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_I16));
    double sp[3] = {1, 0.5, 2}, org[3] = {3, -7, 11};
    mp_vol_set_spacing(v, sp, org);
    int64_t nv = 12 * 10 * 8;
    /* Channel 0 non-zero in x 4..6, y 3..7, z 2..5; channel 1 adds x = 8. */
    for (int64_t k = 2; k <= 5; k++)
        for (int64_t j = 3; j <= 7; j++)
            for (int64_t i = 4; i <= 6; i++) mp_vol_set(v, (k * 10 + j) * 12 + i, (double)(i + 10 * j + 100 * k));
    mp_vol_set(v, nv + (3 * 10 + 5) * 12 + 8, -4);
    mp_box_t box;
    int64_t count;
    MP_CHECK_OK(mp_vol_bbox_nonzero(v, 0, &box, &count));
    MP_CHECK(count == 3 * 5 * 4 + 1);
    MP_CHECK(box.lo[0] == 4 && box.hi[0] == 9 && box.lo[1] == 3 && box.hi[1] == 8 && box.lo[2] == 2 && box.hi[2] == 6);
    /* 2 mm margin: 2, 4 and 1 voxels; clipped at the volume. */
    MP_CHECK_OK(mp_vol_bbox_nonzero(v, 2.0, &box, NULL));
    MP_CHECK(box.lo[0] == 2 && box.hi[0] == 11 && box.lo[1] == 0 && box.hi[1] == 10 && box.lo[2] == 1 && box.hi[2] == 7);
    MP_CHECK_OK(mp_vol_crop(&c, v, &box));
    MP_CHECK(c->dim[0] == 9 && c->dim[1] == 10 && c->dim[2] == 6 && c->dim[3] == 2);
    for (int64_t ch = 0; ch < 2; ch++)
        for (int64_t k = 0; k < 6; k++)
            for (int64_t j = 0; j < 10; j++)
                for (int64_t i = 0; i < 9; i++) {
                    double wc[3], wv[3];
                    world_of(c->affine, (double)i, (double)j, (double)k, wc);
                    world_of(v->affine, (double)(i + 2), (double)j, (double)(k + 1), wv);
                    for (int a = 0; a < 3; a++) MP_CHECK_NEAR(wc[a], wv[a], 1e-12);
                    MP_CHECK(mp_vol_get(c, ((ch * 6 + k) * 10 + j) * 9 + i) ==
                             mp_vol_get(v, ((ch * 8 + k + 1) * 10 + j) * 12 + i + 2));
                }
    int64_t od[3] = {12, 10, 8};
    MP_CHECK_OK(mp_vol_uncrop(&u, c, &box, od, 0));
    MP_CHECK(memcmp(u->data, v->data, mp_vol_bytes(v)) == 0);
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++) MP_CHECK_NEAR(u->affine[r][k], v->affine[r][k], 1e-12);
    mp_vol_free(u);
    MP_CHECK_OK(mp_vol_uncrop(&u, c, &box, od, -5));
    MP_CHECK(mp_vol_get(u, 0) == -5 && mp_vol_get(u, (2 * 10 + 0) * 12 + 2) == 0);
    mp_vol_free(u);
    /* The box of a separate mask. */
    int64_t m4[4] = {12, 10, 8, 1};
    MP_CHECK_OK(mp_vol_create(&mask, m4, MP_DTYPE_U8));
    MP_CHECK_OK(mp_vol_bbox_nonzero(mask, 5, &box, &count));
    MP_CHECK(count == 0 && box.hi[0] == 0);
    MP_CHECK(mp_vol_crop(&u, v, &box) == MP_ERR_ARG && u == NULL);
    mp_vol_set(mask, (7 * 10 + 9) * 12 + 0, 1);
    MP_CHECK_OK(mp_vol_bbox_nonzero(mask, 0, &box, &count));
    MP_CHECK(count == 1 && box.lo[0] == 0 && box.hi[1] == 10 && box.lo[2] == 7 && box.hi[2] == 8);
    mp_box_t bad = {{0, 0, 0}, {13, 10, 8}};
    MP_CHECK(mp_vol_crop(&u, v, &bad) == MP_ERR_ARG);
    mp_vol_free(mask);
    mp_vol_free(c);
    mp_vol_free(v);
}

static void test_pad_crop(void) {
    int64_t d4[4] = {5, 8, 3, 1};
    mp_vol_t *v, *p, *u;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_F32));
    double sp[3] = {0.5, 1, 3}, org[3] = {1, 2, 3};
    mp_vol_set_spacing(v, sp, org);
    for (int64_t i = 0; i < 120; i++) mp_vol_set(v, i, (double)i + 1);
    int64_t target[3] = {8, 5, 3};
    mp_padcrop_t rec;
    MP_CHECK_OK(mp_vol_pad_crop(&p, v, target, NULL, -1, &rec));
    /* x: pad 3 -> 1 before, 2 after; y: crop 3 -> 1 before, 2 after. */
    MP_CHECK(rec.offset[0] == 1 && rec.offset[1] == -1 && rec.offset[2] == 0);
    MP_CHECK(p->dim[0] == 8 && p->dim[1] == 5 && p->dim[2] == 3);
    for (int64_t k = 0; k < 3; k++)
        for (int64_t j = 0; j < 5; j++)
            for (int64_t i = 0; i < 8; i++) {
                double got = mp_vol_get(p, (k * 5 + j) * 8 + i);
                int64_t si = i - 1, sj = j + 1;
                double want = si >= 0 && si < 5 ? mp_vol_get(v, (k * 8 + sj) * 5 + si) : -1;
                MP_CHECK(got == want);
                double wp[3], wv[3];
                world_of(p->affine, (double)i, (double)j, (double)k, wp);
                world_of(v->affine, (double)si, (double)sj, (double)k, wv);
                for (int a = 0; a < 3; a++) MP_CHECK_NEAR(wp[a], wv[a], 1e-12);
            }
    MP_CHECK_OK(mp_vol_pad_crop_undo(&u, p, &rec, 99));
    MP_CHECK(u->dim[0] == 5 && u->dim[1] == 8);
    for (int64_t k = 0; k < 3; k++)
        for (int64_t j = 0; j < 8; j++)
            for (int64_t i = 0; i < 5; i++) {
                double want = j >= 1 && j <= 5 ? mp_vol_get(v, (k * 8 + j) * 5 + i) : 99;
                MP_CHECK(mp_vol_get(u, (k * 8 + j) * 5 + i) == want);
            }
    for (int r = 0; r < 4; r++)
        for (int k = 0; k < 4; k++) MP_CHECK_NEAR(u->affine[r][k], v->affine[r][k], 1e-12);
    mp_vol_free(u);
    mp_vol_free(p);
    /* Given offsets: pad 2 before on x, crop 3 at the low end of y. */
    int64_t off[3] = {2, -3, 0}, t2[3] = {9, 5, 3};
    MP_CHECK_OK(mp_vol_pad_crop(&p, v, t2, off, 0, &rec));
    MP_CHECK(mp_vol_get(p, 2) == mp_vol_get(v, 3 * 5) && mp_vol_get(p, 1) == 0 && mp_vol_get(p, 7) == 0);
    MP_CHECK_OK(mp_vol_pad_crop_undo(&u, p, &rec, 0));
    MP_CHECK(mp_vol_get(u, 3 * 5 + 4) == mp_vol_get(v, 3 * 5 + 4) && mp_vol_get(u, 0) == 0);
    mp_vol_free(u);
    mp_vol_free(p);
    int64_t off_bad[3] = {9, 0, 0};
    MP_CHECK(mp_vol_pad_crop(&p, v, t2, off_bad, 0, NULL) == MP_ERR_ARG);
    mp_vol_free(v);
}

/* All 48 signed permutation matrices as affines (with anisotropic spacing and
 * an origin): to RAS and back is the identity, world positions are kept. */
static void test_reorient_48(void) {
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    const double sp[3] = {0.7, 1.1, 2.3}, org[3] = {-11, 4.5, 30};
    int64_t d4[4] = {4, 5, 6, 2};
    int tested = 0;
    for (int p = 0; p < 6; p++)
        for (int f = 0; f < 8; f++) {
            double m[3][3] = {{0}}, a[4][4];
            for (int c = 0; c < 3; c++) m[perms[p][c]][c] = ((f >> c) & 1 ? -1 : 1) * sp[c];
            make_affine(a, m, org);
            mp_vol_t *v, *r, *u;
            MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_I32));
            mp_vol_set_affine(v, a);
            int64_t n = mp_vol_elems(v), nv = mp_vol_voxels(v);
            for (int64_t i = 0; i < n; i++) mp_vol_set(v, i, (double)i);
            mp_reorient_t rec;
            MP_CHECK_OK(mp_vol_reorient(&r, v, NULL, &rec));
            char code[4];
            mp_vol_orientation(r->affine, code);
            MP_CHECKF(strcmp(code, "RAS") == 0, "perm %d flips %d gave %s", p, f, code);
            for (int i = 0; i < 3; i++)
                for (int k = 0; k < 3; k++) MP_CHECK(i == k ? r->affine[i][k] > 0 : r->affine[i][k] == 0);
            /* Each output voxel holds the input voxel at the same world point. */
            const int32_t *rd = r->data;
            for (int64_t k = 0; k < r->dim[2]; k++)
                for (int64_t j = 0; j < r->dim[1]; j++)
                    for (int64_t i = 0; i < r->dim[0]; i++)
                        for (int64_t ch = 0; ch < 2; ch++) {
                            int64_t val = rd[((ch * r->dim[2] + k) * r->dim[1] + j) * r->dim[0] + i];
                            MP_CHECK(val / nv == ch);
                            int64_t rem = val % nv, si = rem % 4, sj = (rem / 4) % 5, sk = rem / 20;
                            double wr[3], wv[3];
                            world_of(r->affine, (double)i, (double)j, (double)k, wr);
                            world_of(a, (double)si, (double)sj, (double)sk, wv);
                            for (int q = 0; q < 3; q++) MP_CHECK_NEAR(wr[q], wv[q], 1e-9);
                        }
            MP_CHECK_OK(mp_vol_reorient_undo(&u, r, &rec));
            MP_CHECK(u->dim[0] == 4 && u->dim[1] == 5 && u->dim[2] == 6);
            MP_CHECK(memcmp(u->data, v->data, mp_vol_bytes(v)) == 0);
            for (int i = 0; i < 4; i++)
                for (int k = 0; k < 4; k++) MP_CHECK_NEAR(u->affine[i][k], a[i][k], 1e-12);
            mp_vol_free(u);
            /* Any other code works the same way. */
            const char *codes[3] = {"LPS", "AIL", "SRP"};
            mp_vol_t *o;
            MP_CHECK_OK(mp_vol_reorient(&o, v, codes[(p + f) % 3], NULL));
            mp_vol_orientation(o->affine, code);
            MP_CHECK(strcmp(code, codes[(p + f) % 3]) == 0);
            mp_vol_free(o);
            mp_vol_free(r);
            mp_vol_free(v);
            tested++;
        }
    MP_CHECK(tested == 48);
    int ax[3], sg[3];
    MP_CHECK(mp_orientation_parse("RAR", ax, sg) == MP_ERR_ARG);
    MP_CHECK(mp_orientation_parse("RA", ax, sg) == MP_ERR_ARG);
    MP_CHECK_OK(mp_orientation_parse("PIR", ax, sg));
    MP_CHECK(ax[0] == 1 && sg[0] == -1 && ax[1] == 2 && sg[1] == -1 && ax[2] == 0 && sg[2] == 1);
}

static void test_zscore(void) {
    int64_t d4[4] = {20, 15, 10, 2};
    mp_vol_t *v, *mask;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_F32));
    mp_rng_t rng;
    mp_rng_init(&rng, 7, 1);
    int64_t n = mp_vol_elems(v), nv = mp_vol_voxels(v);
    for (int64_t i = 0; i < n; i++) mp_vol_set(v, i, (i < nv ? 50 : -300) + (i < nv ? 12 : 3) * mp_rng_normal(&rng));
    MP_CHECK_OK(mp_vol_normalize_zscore(v, NULL, 0, NULL));
    for (int c = 0; c < 2; c++) {
        mp_voxel_stats_t st;
        MP_CHECK_OK(mp_vol_intensity_stats(v, c, NULL, NULL, 0, NULL, &st));
        MP_CHECK(st.count == nv);
        MP_CHECK_NEAR(st.mean, 0, 1e-5);
        MP_CHECK_NEAR(st.std, 1, 1e-5);
    }
    /* Masked: statistics and changes only inside the mask. */
    int64_t m4[4] = {20, 15, 10, 1};
    MP_CHECK_OK(mp_vol_create(&mask, m4, MP_DTYPE_U8));
    for (int64_t i = 0; i < nv; i++) mp_vol_set(mask, i, i % 3 == 0);
    for (int64_t i = 0; i < n; i++) mp_vol_set(v, i, (i % 3 == 0 ? 1000 : 0) + 5 * mp_rng_normal(&rng));
    mp_vol_t *before;
    MP_CHECK_OK(mp_vol_clone(&before, v));
    MP_CHECK_OK(mp_vol_normalize_zscore(v, mask, 1, NULL));
    mp_voxel_stats_t st;
    MP_CHECK_OK(mp_vol_intensity_stats(v, 1, mask, NULL, 0, NULL, &st));
    MP_CHECK_NEAR(st.mean, 0, 1e-5);
    MP_CHECK_NEAR(st.std, 1, 1e-5);
    for (int64_t i = 0; i < n; i++)
        if ((i % nv) % 3 != 0) MP_CHECK(mp_vol_get(v, i) == mp_vol_get(before, i));
    /* Applied everywhere with mask statistics: outside is shifted too. */
    memcpy(v->data, before->data, mp_vol_bytes(v));
    MP_CHECK_OK(mp_vol_normalize_zscore(v, mask, 0, NULL));
    MP_CHECK_OK(mp_vol_intensity_stats(before, 0, mask, NULL, 0, NULL, &st));
    MP_CHECK_NEAR(mp_vol_get(v, 1), (mp_vol_get(before, 1) - st.mean) / st.std, 1e-4);
    mp_vol_t *i16;
    MP_CHECK_OK(mp_vol_create(&i16, m4, MP_DTYPE_I16));
    MP_CHECK(mp_vol_normalize_zscore(i16, NULL, 0, NULL) == MP_ERR_ARG);
    mp_vol_free(i16);
    mp_vol_free(before);
    mp_vol_free(mask);
    mp_vol_free(v);
}

static void test_ct_normalization(void) {
    int64_t d4[4] = {50, 20, 5, 1};
    mp_vol_t *v, *orig;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_F32));
    for (int64_t i = 0; i < 5000; i++) mp_vol_set(v, i, -2000 + (double)i);
    MP_CHECK_OK(mp_vol_clone(&orig, v));
    MP_CHECK_OK(mp_vol_normalize_ct(v, -1000, 1500, 100, 300, NULL));
    for (int64_t i = 0; i < 5000; i++) {
        double x = mp_vol_get(orig, i);
        x = x < -1000 ? -1000 : x > 1500 ? 1500 : x;
        MP_CHECK_NEAR(mp_vol_get(v, i), (x - 100) / 300, 1e-6);
    }
    MP_CHECK_NEAR(mp_vol_get(v, 0), -1100.0 / 300, 1e-6);
    MP_CHECK_NEAR(mp_vol_get(v, 4999), 1400.0 / 300, 1e-6);
    MP_CHECK(mp_vol_normalize_ct(v, 10, -10, 0, 1, NULL) == MP_ERR_ARG);
    mp_vol_free(orig);
    mp_vol_free(v);
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

static void test_percentiles(void) {
    double vals[10];
    for (int i = 0; i < 10; i++) vals[i] = 10 - i; /* 10..1, unsorted */
    double q[6] = {0, 25, 50, 99.5, 100, 0.5}, out[6];
    MP_CHECK_OK(mp_percentiles(vals, 10, q, 6, out));
    MP_CHECK_NEAR(out[0], 1, 0);
    MP_CHECK_NEAR(out[1], 3.25, 1e-15);  /* position 2.25 */
    MP_CHECK_NEAR(out[2], 5.5, 1e-15);
    MP_CHECK_NEAR(out[3], 9.955, 1e-12); /* position 8.955 */
    MP_CHECK_NEAR(out[4], 10, 0);
    MP_CHECK_NEAR(out[5], 1.045, 1e-12);
    double one = 4;
    MP_CHECK_OK(mp_percentiles(&one, 1, q, 6, out));
    MP_CHECK(out[0] == 4 && out[2] == 4 && out[4] == 4);
    double bad = 101;
    MP_CHECK(mp_percentiles(vals, 10, &bad, 1, out) == MP_ERR_ARG);
    /* Many duplicates (the three-way partition path) against a sort. */
    int64_t n = 100001;
    double *a = malloc((size_t)n * sizeof *a);
    mp_rng_t rng;
    mp_rng_init(&rng, 3, 3);
    for (int64_t i = 0; i < n; i++) a[i] = (double)mp_rng_below(&rng, 50);
    double qq[3] = {0.5, 50, 99.5}, got[3];
    MP_CHECK_OK(mp_percentiles(a, n, qq, 3, got));
    qsort(a, (size_t)n, sizeof *a, cmp_double);
    for (int t = 0; t < 3; t++) {
        double pos = (double)(n - 1) * (qq[t] / 100);
        int64_t k = (int64_t)floor(pos);
        double want = a[k] + (a[k + 1] - a[k]) * (pos - (double)k);
        MP_CHECK_NEAR(got[t], want, 1e-12);
    }
    free(a);
    /* Stats of a volume within a mask with scaling applied. */
    int64_t d4[4] = {4, 3, 2, 1};
    mp_vol_t *v, *mask;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_I16));
    MP_CHECK_OK(mp_vol_create(&mask, d4, MP_DTYPE_U8));
    for (int64_t i = 0; i < 24; i++) {
        mp_vol_set(v, i, (double)i);
        mp_vol_set(mask, i, i >= 10 && i < 20);
    }
    v->scl_slope = 2;
    v->scl_inter = 1;
    mp_voxel_stats_t st;
    double q2[2] = {50, 100}, o2[2];
    MP_CHECK_OK(mp_vol_intensity_stats(v, 0, mask, q2, 2, o2, &st));
    MP_CHECK(st.count == 10 && st.min == 21 && st.max == 39);
    MP_CHECK_NEAR(st.mean, 30, 1e-12);
    MP_CHECK_NEAR(st.std, 2 * sqrt(8.25), 1e-12);
    MP_CHECK_NEAR(o2[0], 30, 1e-12);
    MP_CHECK(o2[1] == 39);
    mp_vol_free(mask);
    mp_vol_free(v);
}

/* Same bits for 1 and 3 threads (and NULL pool) in every mode. */
static void test_thread_independence(void) {
    int64_t dim[3] = {37, 29, 23};
    double sp[3] = {0.9, 1.1, 1.7};
    mp_vol_t *lab = sphere_labels(dim, sp, MP_DTYPE_I16), *img;
    MP_CHECK(lab != NULL);
    MP_CHECK_OK(mp_vol_create_like(&img, lab, MP_DTYPE_I16));
    mp_rng_t rng;
    mp_rng_init(&rng, 11, 0);
    for (int64_t i = 0; i < mp_vol_elems(img); i++) mp_vol_set(img, i, (double)mp_rng_below(&rng, 3000) - 1000);
    mp_pool_t *pool = mp_pool_create(3);
    MP_CHECK(pool != NULL);
    double target[3] = {0.77, 1.3, 1.0};
    double ob[4][4];
    mp_mat4_identity(ob);
    ob[0][0] = 0.9 * cos(0.3);
    ob[1][0] = 0.9 * sin(0.3);
    ob[0][1] = -1.0 * sin(0.3);
    ob[1][1] = 1.0 * cos(0.3);
    ob[2][2] = 1.2;
    int64_t gd[3] = {40, 33, 30};
    for (int mode = 0; mode < 3; mode++) {
        const mp_vol_t *src = mode == MP_INTERP_LINEAR ? img : lab;
        mp_vol_t *a, *b, *c, *d;
        MP_CHECK_OK(mp_vol_resample_spacing(&a, src, target, (mp_interp_t)mode, NULL));
        MP_CHECK_OK(mp_vol_resample_spacing(&b, src, target, (mp_interp_t)mode, pool));
        MP_CHECK(mp_vol_bytes(a) == mp_vol_bytes(b) && memcmp(a->data, b->data, mp_vol_bytes(a)) == 0);
        MP_CHECK_OK(mp_vol_resample_grid(&c, src, gd, ob, (mp_interp_t)mode, 0, NULL));
        MP_CHECK_OK(mp_vol_resample_grid(&d, src, gd, ob, (mp_interp_t)mode, 0, pool));
        MP_CHECK(memcmp(c->data, d->data, mp_vol_bytes(c)) == 0);
        mp_vol_free(a);
        mp_vol_free(b);
        mp_vol_free(c);
        mp_vol_free(d);
    }
    mp_vol_t *f1, *f3;
    MP_CHECK_OK(mp_vol_to_f32(&f1, img));
    MP_CHECK_OK(mp_vol_clone(&f3, f1));
    MP_CHECK_OK(mp_vol_normalize_zscore(f1, lab, 1, NULL));
    MP_CHECK_OK(mp_vol_normalize_zscore(f3, lab, 1, pool));
    MP_CHECK(memcmp(f1->data, f3->data, mp_vol_bytes(f1)) == 0);
    mp_vol_free(f1);
    mp_vol_free(f3);
    mp_pool_free(pool);
    mp_vol_free(img);
    mp_vol_free(lab);
}

static void test_bad_arguments(void) {
    int64_t d4[4] = {4, 4, 4, 1};
    mp_vol_t *v, *r;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_U8));
    double zero[3] = {0, 1, 1};
    MP_CHECK(mp_vol_resample_spacing(&r, v, zero, MP_INTERP_LINEAR, NULL) == MP_ERR_ARG);
    MP_CHECK(r == NULL);
    int64_t od[3] = {4, 0, 4};
    MP_CHECK(mp_vol_resample_shape(&r, v, od, MP_INTERP_LINEAR, NULL) == MP_ERR_ARG);
    int64_t big[3] = {1 << 20, 1 << 20, 1 << 20};
    MP_CHECK(mp_vol_resample_shape(&r, v, big, MP_INTERP_NEAREST, NULL) == MP_ERR_LIMIT);
    MP_CHECK(mp_vol_resample_shape(&r, v, d4, (mp_interp_t)7, NULL) == MP_ERR_ARG);
    double sing[4][4] = {{1, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, sing);
    MP_CHECK(mp_vol_reorient(&r, v, NULL, NULL) == MP_ERR_ARG);
    MP_CHECK(mp_vol_resample_grid(&r, v, d4, sing, MP_INTERP_LINEAR, 0, NULL) == MP_ERR_ARG);
    mp_vol_free(v);
}

int main(void) {
    MP_RUN(test_resample_linear_ramp);
    MP_RUN(test_resample_grid);
    MP_RUN(test_resample_labels);
    MP_RUN(test_crop_uncrop);
    MP_RUN(test_pad_crop);
    MP_RUN(test_reorient_48);
    MP_RUN(test_zscore);
    MP_RUN(test_ct_normalization);
    MP_RUN(test_percentiles);
    MP_RUN(test_thread_independence);
    MP_RUN(test_bad_arguments);
    return mp_test_summary();
}
