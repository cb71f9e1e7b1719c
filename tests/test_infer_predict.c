/* The predict pipeline end to end with a mock network that thresholds the
 * normalized intensity: labels come back on the input's own grid (any
 * orientation, anisotropic spacing, crop to non-zero, resampling) and
 * match thresholding the input directly except next to the boundary;
 * reorientation is exact; keep-largest, probabilities, multi-channel
 * files and the NIfTI round trip. */
#include "harness.h"
#include "medpipe/core.h"
#include "medpipe/infer.h"
#include "medpipe/io.h"
#include "medpipe/vol_ops.h"

#include <stdint.h>

/* logits (0, 20 x) of channel 0: class 1 where the normalized value > 0. */
typedef struct {
    int C, pv;
} thr_t;

static int thr_forward(void *self, float *logits, const float *input, int batch) {
    thr_t *t = self;
    for (int b = 0; b < batch; b++) {
        const float *in = input + (int64_t)b * t->C * t->pv;
        float *out = logits + (int64_t)b * 2 * t->pv;
        for (int i = 0; i < t->pv; i++) {
            out[i] = 0;
            out[t->pv + i] = 20.0f * in[i];
        }
    }
    return MP_OK;
}

static mp_infer_net_t thr_net(thr_t *t, int C) {
    mp_infer_net_t n = {C, 2, {16, 16, 24}, 2, thr_forward, t};
    t->C = C;
    t->pv = 16 * 16 * 24;
    return n;
}

#define NX 40
#define NY 36
#define NZ 24

/* Box of non-zero voxels (the rest is 0, so the pipeline crops). */
static const int64_t BOX_LO[3] = {3, 2, 1}, BOX_HI[3] = {37, 33, 22};

/* An image with voxel axes pointing P, S, L (x 0.8 mm, y 1.1 mm, z 2.5 mm):
 * 100 + 1000 exp(-r^2 / (2 * 10^2)) of the world distance r to a centre,
 * plus a small bright blob (a second component) when `second`. */
static mp_vol_t *psl_image(int second) {
    int64_t d[4] = {NX, NY, NZ, 1};
    mp_vol_t *v = NULL;
    if (mp_vol_create(&v, d, MP_DTYPE_F32)) return NULL;
    double a[4][4] = {{0, 0, -2.5, 30}, {-0.8, 0, 0, 20}, {0, 1.1, 0, -15}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, a);
    double c[3], c2[3];
    for (int r = 0; r < 3; r++) {
        c[r] = a[r][0] * 17.3 + a[r][1] * 15.6 + a[r][2] * 9.2 + a[r][3];
        c2[r] = a[r][0] * 32 + a[r][1] * 28 + a[r][2] * 19 + a[r][3];
    }
    float *x = v->data;
    for (int64_t k = 0; k < NZ; k++)
        for (int64_t j = 0; j < NY; j++)
            for (int64_t i = 0; i < NX; i++) {
                int inside = i >= BOX_LO[0] && i < BOX_HI[0] && j >= BOX_LO[1] && j < BOX_HI[1] && k >= BOX_LO[2] &&
                             k < BOX_HI[2];
                double r2 = 0, q2 = 0;
                for (int r = 0; r < 3; r++) {
                    double w = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3];
                    r2 += (w - c[r]) * (w - c[r]);
                    q2 += (w - c2[r]) * (w - c2[r]);
                }
                double val = 100 + 1000 * exp(-r2 / 200);
                if (second) val += 1000 * exp(-q2 / 8);
                x[(k * NY + j) * NX + i] = inside ? (float)val : 0;
            }
    return v;
}

static void ct_plan(mp_infer_plan_t *p, int C) {
    mp_infer_plan_init(p);
    p->num_channels = C;
    p->num_classes = 2;
    p->patch_dhw[0] = 16;
    p->patch_dhw[1] = 16;
    p->patch_dhw[2] = 24;
    strcpy(p->orientation, "RAS");
    p->target_spacing[0] = 1.0;
    p->target_spacing[1] = 1.0;
    p->target_spacing[2] = 1.5;
    for (int c = 0; c < C; c++) {
        p->norm[c].kind = MP_INFER_NORM_CT;
        p->norm[c].ct_lo = 0;
        p->norm[c].ct_hi = 2000;
        p->norm[c].ct_mean = 600; /* class 1 where the raw value > 600 */
        p->norm[c].ct_std = 250;
    }
}

/* Compares labels with `expect`: *mismatch voxels differ, *far of them
 * have no 26-neighbour on the other side of the expected boundary. */
typedef struct {
    int64_t fg, boundary, mismatch, far;
} cmp_t;

/* Compares labels with `expect`: boundary voxels have a 26-neighbour on
 * the other side of the expected boundary; `far` mismatches have none. */
static cmp_t compare_labels(const mp_vol_t *lab, const uint8_t *expect) {
    const uint8_t *l = lab->data;
    cmp_t c = {0, 0, 0, 0};
    for (int64_t z = 0; z < NZ; z++)
        for (int64_t y = 0; y < NY; y++)
            for (int64_t x = 0; x < NX; x++) {
                int64_t i = (z * NY + y) * NX + x;
                int near = 0;
                for (int dz = -1; dz <= 1; dz++)
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            int64_t X = x + dx, Y = y + dy, Z = z + dz;
                            if (X < 0 || Y < 0 || Z < 0 || X >= NX || Y >= NY || Z >= NZ) continue;
                            near |= expect[(Z * NY + Y) * NX + X] != expect[i];
                        }
                c.fg += expect[i];
                c.boundary += near;
                if (l[i] == expect[i]) continue;
                c.mismatch++;
                if (!near) c.far++;
            }
    return c;
}

static void print_cmp(const char *what, const cmp_t *c) {
    printf("  %s: %lld foreground voxels, %lld on the boundary; %lld mismatches (%.2f%% of foreground, %.1f%% of "
           "boundary), %lld away from the boundary\n",
           what, (long long)c->fg, (long long)c->boundary, (long long)c->mismatch, 100.0 * c->mismatch / c->fg,
           100.0 * c->mismatch / c->boundary, (long long)c->far);
}

static int affine_equal(const mp_vol_t *a, const mp_vol_t *b) {
    return memcmp(a->affine, b->affine, sizeof a->affine) == 0;
}

static void test_threshold_psl_ct(void) {
    mp_vol_t *img = psl_image(0);
    MP_CHECK(img);
    char code[4];
    mp_vol_orientation(img->affine, code);
    MP_CHECK(strcmp(code, "PSL") == 0);
    thr_t t;
    mp_infer_net_t net = thr_net(&t, 1);
    mp_infer_plan_t plan;
    ct_plan(&plan, 1);
    mp_pool_t *pool = mp_pool_create(2);
    mp_infer_opts_t o;
    mp_infer_opts_init(&o);
    o.mirror_axes = 7;
    /* The network input: reoriented to RAS, cropped to the box, resampled. */
    mp_vol_t *pre = NULL;
    mp_infer_prep_t prep;
    MP_CHECK_OK(mp_infer_preprocess(&pre, &prep, img, &plan, pool));
    MP_CHECK(prep.reoriented && prep.crop_dim[0] == 21 && prep.crop_dim[1] == 34 && prep.crop_dim[2] == 31);
    MP_CHECK(pre->dim[0] == 52 && pre->dim[1] == 27 && pre->dim[2] == 23); /* 52.5, 27.2, 34.1/1.5 mm rounded */
    MP_CHECK_NEAR(pre->spacing[0], 2.5 * 21 / 52, 1e-9);
    mp_vol_free(pre);

    mp_infer_result_t r;
    MP_CHECK_OK(mp_infer_predict(&r, img, &net, &plan, &o, MP_INFER_PROBS_F32, pool));
    MP_CHECK(r.labels->dim[0] == NX && r.labels->dim[1] == NY && r.labels->dim[2] == NZ && r.labels->dim[3] == 1);
    MP_CHECK(affine_equal(r.labels, img) && affine_equal(r.probs, img));
    MP_CHECK(r.labels->dtype == MP_DTYPE_U8 && r.probs->dim[3] == 2);
    uint8_t *expect = malloc(NX * NY * NZ);
    const float *x = img->data;
    for (int64_t i = 0; i < NX * NY * NZ; i++) expect[i] = x[i] > 600;
    cmp_t cmp = compare_labels(r.labels, expect);
    /* Probabilities: class 0 certain outside the crop box, sums 1 inside. */
    const float *p = r.probs->data;
    int64_t nv = NX * NY * NZ;
    double worst_sum = 0;
    int outside_ok = 1;
    for (int64_t i = 0; i < nv; i++) {
        worst_sum = fmax(worst_sum, fabs(p[i] + p[nv + i] - 1));
        if (x[i] == 0) outside_ok &= p[i] == 1 && p[nv + i] == 0;
    }
    print_cmp("PSL input, CT norm, RAS at 1x1x1.5 mm", &cmp);
    free(expect);
    mp_infer_result_deinit(&r);
    mp_vol_free(img);
    mp_pool_free(pool);
    MP_CHECK(cmp.fg > 2000);
    /* Resampling moves the boundary by less than a voxel: every mismatch
     * touches it, and under 3% of the boundary voxels flip (a half-voxel grid shift
     * flips 5-8%). */
    MP_CHECK(cmp.far == 0);
    MP_CHECK(cmp.mismatch * 33 < cmp.boundary);
    MP_CHECK(worst_sum < 1e-5 && outside_ok);
}

/* The same world image in PSL and RAS voxel order gives the same labels,
 * exactly, each on its own grid with its own affine. */
static void test_orientation_exact(void) {
    mp_vol_t *psl = psl_image(0), *ras = NULL;
    MP_CHECK_OK(mp_vol_reorient(&ras, psl, "RAS", NULL));
    thr_t t;
    mp_infer_net_t net = thr_net(&t, 1);
    mp_infer_plan_t plan;
    ct_plan(&plan, 1);
    mp_infer_result_t a, b;
    MP_CHECK_OK(mp_infer_predict(&a, psl, &net, &plan, NULL, MP_INFER_PROBS_NONE, NULL));
    MP_CHECK_OK(mp_infer_predict(&b, ras, &net, &plan, NULL, MP_INFER_PROBS_NONE, NULL));
    MP_CHECK(affine_equal(a.labels, psl) && affine_equal(b.labels, ras));
    mp_vol_t *a_ras = NULL;
    MP_CHECK_OK(mp_vol_reorient(&a_ras, a.labels, "RAS", NULL));
    int same = a_ras->dim[0] == b.labels->dim[0] && a_ras->dim[1] == b.labels->dim[1] &&
               a_ras->dim[2] == b.labels->dim[2] && memcmp(a_ras->data, b.labels->data, mp_vol_bytes(a_ras)) == 0;
    mp_vol_free(a_ras);
    mp_infer_result_deinit(&a);
    mp_infer_result_deinit(&b);
    mp_vol_free(psl);
    mp_vol_free(ras);
    MP_CHECK(same);
}

/* z-score inside the (hole-filled) non-zero mask, voxel axes kept, and the
 * other order (resample, then normalize). */
static void test_threshold_zscore(void) {
    mp_vol_t *img = psl_image(0);
    thr_t t;
    mp_infer_net_t net = thr_net(&t, 1);
    const float *x = img->data;
    double sum = 0;
    int64_t n = 0;
    for (int64_t i = 0; i < NX * NY * NZ; i++)
        if (x[i] != 0) {
            sum += x[i];
            n++;
        }
    double mean = sum / (double)n; /* threshold at the normalized 0 = the mean */
    uint8_t *expect = malloc(NX * NY * NZ);
    for (int64_t i = 0; i < NX * NY * NZ; i++) expect[i] = x[i] > mean;
    for (int order = 0; order < 2; order++) {
        mp_infer_plan_t plan;
        mp_infer_plan_init(&plan);
        plan.num_channels = 1;
        plan.norm[0].kind = MP_INFER_NORM_ZSCORE;
        plan.norm[0].use_mask = 1;
        plan.normalize_first = !order;
        plan.target_spacing[0] = 1.2;
        plan.target_spacing[1] = 0.9;
        plan.target_spacing[2] = 1.7;
        mp_infer_result_t r;
        MP_CHECK_OK(mp_infer_predict(&r, img, &net, &plan, NULL, MP_INFER_PROBS_NONE, NULL));
        MP_CHECK(affine_equal(r.labels, img));
        cmp_t cmp = compare_labels(r.labels, expect);
        print_cmp(order ? "voxel axes, z-score in mask, resample first" : "voxel axes, z-score in mask, normalize first",
                  &cmp);
        mp_infer_result_deinit(&r);
        MP_CHECK(cmp.far == 0 && cmp.mismatch * 33 < cmp.boundary);
    }
    free(expect);
    mp_vol_free(img);
}

static void test_keep_largest(void) {
    mp_vol_t *img = psl_image(1);
    thr_t t;
    mp_infer_net_t net = thr_net(&t, 1);
    mp_infer_plan_t plan;
    ct_plan(&plan, 1);
    int64_t counts[2];
    for (int keep = 0; keep < 2; keep++) {
        plan.keep_largest = keep;
        mp_infer_result_t r;
        MP_CHECK_OK(mp_infer_predict(&r, img, &net, &plan, NULL, MP_INFER_PROBS_NONE, NULL));
        const uint8_t *l = r.labels->data;
        counts[keep] = 0;
        for (int64_t k = 17; k <= 21; k++) /* around the small blob at (32, 28, 19) */
            for (int64_t j = 25; j <= 31; j++)
                for (int64_t i = 29; i <= 35; i++) counts[keep] += l[(k * NY + j) * NX + i];
        mp_infer_result_deinit(&r);
    }
    mp_vol_free(img);
    MP_CHECK(counts[0] > 0 && counts[1] == 0);
}

/* Files: int16 with scaling in, NIfTI labels and u8 probabilities out;
 * two channel files; mismatched channel geometry refused. */
static void test_files(void) {
    const char *dir = mp_test_tmpdir("infer");
    char in[600], in2[600], out[600], outp[600], bad[600];
    snprintf(in, sizeof in, "%s/img.nii.gz", dir);
    snprintf(in2, sizeof in2, "%s/img2.nii", dir);
    snprintf(out, sizeof out, "%s/lab.nii.gz", dir);
    snprintf(outp, sizeof outp, "%s/prob.nii.gz", dir);
    snprintf(bad, sizeof bad, "%s/bad.nii", dir);
    mp_vol_t *img = psl_image(0), *i16 = NULL;
    img->scl_slope = 1;
    MP_CHECK_OK(mp_vol_convert(&i16, img, MP_DTYPE_I16, 1, NULL));
    i16->scl_slope = 0.5; /* stored = 2 x real: the reader must apply the scaling */
    int16_t *s = i16->data;
    const float *f = img->data;
    for (int64_t i = 0; i < NX * NY * NZ; i++) s[i] = (int16_t)lrint(2 * f[i]);
    MP_CHECK_OK(mp_image_write(in, i16, NULL));
    MP_CHECK_OK(mp_image_write(in2, i16, NULL));
    thr_t t;
    mp_infer_net_t net = thr_net(&t, 1);
    mp_infer_plan_t plan;
    ct_plan(&plan, 1);
    const char *paths[2] = {in, in2};
    mp_infer_stats_t st;
    MP_CHECK_OK(mp_infer_predict_files(paths, 1, out, outp, MP_INFER_PROBS_U8, &net, &plan, NULL, NULL, &st));
    MP_CHECK(st.windows > 1 && st.forward_calls > 0);
    mp_vol_t *rin = NULL, *lab = NULL, *prob = NULL;
    MP_CHECK_OK(mp_image_read(&rin, in));
    MP_CHECK_OK(mp_image_read(&lab, out));
    MP_CHECK_OK(mp_image_read(&prob, outp));
    MP_CHECK(lab->dtype == MP_DTYPE_U8 && prob->dtype == MP_DTYPE_U8 && prob->dim[3] == 2);
    double aerr = 0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) aerr = fmax(aerr, fabs(lab->affine[r][c] - rin->affine[r][c]));
    MP_CHECK(aerr < 1e-6);
    /* Same labels as predicting the read volume in memory. */
    mp_infer_result_t mem;
    MP_CHECK_OK(mp_infer_predict(&mem, rin, &net, &plan, NULL, MP_INFER_PROBS_NONE, NULL));
    MP_CHECK(memcmp(mem.labels->data, lab->data, mp_vol_bytes(lab)) == 0);
    const uint8_t *pq = prob->data, *l = lab->data;
    int64_t nv = NX * NY * NZ, sum_bad = 0, arg_bad = 0;
    for (int64_t i = 0; i < nv; i++) {
        sum_bad += abs(pq[i] + pq[nv + i] - 255) > 1;
        arg_bad += pq[nv + i] > 128 && l[i] != 1;
    }
    MP_CHECK(sum_bad == 0 && arg_bad == 0);
    /* Two channel files: the network reads channel 0; same labels. */
    thr_t t2;
    mp_infer_net_t net2 = thr_net(&t2, 2);
    mp_infer_plan_t plan2;
    ct_plan(&plan2, 2);
    MP_CHECK_OK(mp_infer_predict_files(paths, 2, out, NULL, MP_INFER_PROBS_NONE, &net2, &plan2, NULL, NULL, NULL));
    mp_vol_t *lab2 = NULL;
    MP_CHECK_OK(mp_image_read(&lab2, out));
    MP_CHECK(memcmp(lab2->data, lab->data, mp_vol_bytes(lab)) == 0);
    /* A channel file on another grid is refused, naming it. */
    i16->affine[0][3] += 5;
    MP_CHECK_OK(mp_image_write(bad, i16, NULL));
    const char *badp[2] = {in, bad};
    MP_CHECK(mp_infer_predict_files(badp, 2, out, NULL, MP_INFER_PROBS_NONE, &net2, &plan2, NULL, NULL, NULL) ==
             MP_ERR_MISMATCH);
    MP_CHECK(strstr(mp_error_message(), "bad.nii"));
    /* Plan and network disagreeing. */
    plan.num_classes = 3;
    mp_infer_result_t other;
    MP_CHECK(mp_infer_predict(&other, rin, &net, &plan, NULL, MP_INFER_PROBS_NONE, NULL) == MP_ERR_MISMATCH);
    MP_CHECK(other.labels == NULL);
    mp_infer_result_deinit(&mem);
    mp_vol_free(lab2);
    mp_vol_free(rin);
    mp_vol_free(lab);
    mp_vol_free(prob);
    mp_vol_free(i16);
    mp_vol_free(img);
}

int main(void) {
    MP_RUN(test_threshold_psl_ct);
    MP_RUN(test_orientation_exact);
    MP_RUN(test_threshold_zscore);
    MP_RUN(test_keep_largest);
    MP_RUN(test_files);
    return mp_test_summary();
}
