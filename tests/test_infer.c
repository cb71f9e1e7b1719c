/* Sliding-window engine: nnU-Net's window positions and Gaussian map by
 * hand and by scipy's recipe, exact reconstruction of a known probability
 * field at every voxel (volumes smaller than, equal to and larger than the
 * patch, odd sizes, anisotropic patches), agreement with a plain
 * full-volume reference for 2 and 20 classes, batching, threads and
 * mirroring invariances, the slab-wise resampling writer against
 * mp_vol_resample_shape, and error paths. */
#include "harness.h"
#include "medpipe/core.h"
#include "medpipe/infer.h"
#include "medpipe/vol_ops.h"

#include <stdint.h>

/* ---- mock networks ---- */

/* Known probability field of normalised coordinates (u, v, w) in [0, 1]. */
static double field_q(int k, double u, double v, double w) {
    return 1.0 + 0.8 * sin(1.3 * k + 3.0 * u + 2.0 * v * (k % 3 + 1) - 2.5 * w * k);
}

typedef struct {
    int K, C;
    int pd, ph, pw;
    int kind;          /* 0: field of coordinates, 1: position-dependent, 2: threshold */
    int calls, max_seen, fail_at;
    int64_t entries;
} mock_t;

static int mock_forward(void *self, float *logits, const float *input, int batch) {
    mock_t *m = self;
    m->calls++;
    m->entries += batch;
    if (batch > m->max_seen) m->max_seen = batch;
    if (m->fail_at && m->calls == m->fail_at) return mp_error_set(MP_ERR_INTERNAL, "mock failure");
    const int64_t pv = (int64_t)m->pd * m->ph * m->pw;
    for (int b = 0; b < batch; b++) {
        const float *in = input + (int64_t)b * m->C * pv;
        float *out = logits + (int64_t)b * m->K * pv;
        for (int64_t i = 0; i < pv; i++) {
            int lx = (int)(i % m->pw), ly = (int)((i / m->pw) % m->ph), lz = (int)(i / ((int64_t)m->pw * m->ph));
            if (m->kind == 0) {
                double q[64], s = 0;
                for (int k = 0; k < m->K; k++) s += q[k] = field_q(k, in[i], in[pv + i], in[2 * pv + i]);
                for (int k = 0; k < m->K; k++) out[k * pv + i] = (float)log(q[k] / s);
            } else if (m->kind == 1) {
                for (int k = 0; k < m->K; k++)
                    out[k * pv + i] = (float)(0.7 * (k + 1) * sin(in[i] * (k + 1)) +
                                              1.5 * cos(0.37 * lx * (k + 1) + 0.21 * ly + 0.13 * lz * (k % 3 + 1)));
            } else {
                out[i] = 0;
                out[pv + i] = 20.0f * in[i];
            }
        }
    }
    return MP_OK;
}

static mp_infer_net_t mock_net(mock_t *m, int kind, int C, int K, int pd, int ph, int pw, int max_batch) {
    memset(m, 0, sizeof *m);
    m->kind = kind;
    m->C = C;
    m->K = K;
    m->pd = pd;
    m->ph = ph;
    m->pw = pw;
    mp_infer_net_t n = {C, K, {pd, ph, pw}, max_batch, mock_forward, m};
    return n;
}

/* Image whose channels are the normalised voxel coordinates. */
static mp_vol_t *coord_image(int64_t nx, int64_t ny, int64_t nz) {
    int64_t d[4] = {nx, ny, nz, 3};
    mp_vol_t *v = NULL;
    if (mp_vol_create(&v, d, MP_DTYPE_F32)) return NULL;
    float *x = v->data;
    int64_t nv = nx * ny * nz;
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t i = 0; i < nx; i++) {
                int64_t o = (z * ny + y) * nx + i;
                x[o] = (float)((i + 0.5) / nx);
                x[nv + o] = (float)((y + 0.5) / ny);
                x[2 * nv + o] = (float)((z + 0.5) / nz);
            }
    return v;
}

/* Single-channel image with a smooth pseudo-random pattern. */
static mp_vol_t *pattern_image(int64_t nx, int64_t ny, int64_t nz) {
    int64_t d[4] = {nx, ny, nz, 1};
    mp_vol_t *v = NULL;
    if (mp_vol_create(&v, d, MP_DTYPE_F32)) return NULL;
    float *x = v->data;
    for (int64_t i = 0; i < nx * ny * nz; i++) x[i] = (float)(sin(0.7 * (double)i) + 0.3 * cos(0.013 * (double)i));
    return v;
}

/* ---- window positions ---- */

static int starts_equal(int64_t size, int64_t patch, double step, const int64_t *want, int64_t n) {
    int64_t got[64], m;
    if (mp_infer_window_starts(size, patch, step, got, 64, &m)) return 0;
    if (m != n) return 0;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) return 0;
    return 1;
}

static void test_window_starts_hand(void) {
    /* ceil((300-96)/48)+1 = 6 windows, step 204/5 = 40.8 rounded. */
    MP_CHECK(starts_equal(300, 96, 0.5, (const int64_t[]){0, 41, 82, 122, 163, 204}, 6));
    /* 416/9 = 46.22..: 138.67 -> 139, 323.56 -> 324. */
    MP_CHECK(starts_equal(512, 96, 0.5, (const int64_t[]){0, 46, 92, 139, 185, 231, 277, 324, 370, 416}, 10));
    MP_CHECK(starts_equal(96, 96, 0.5, (const int64_t[]){0}, 1));
    /* nnU-Net's own comment: image 110, patch 64 -> 0, 23, 46. */
    MP_CHECK(starts_equal(110, 64, 0.5, (const int64_t[]){0, 23, 46}, 3));
    /* Half-way cases round to even as np.round: 1.5 -> 2, 2.5 -> 2. */
    MP_CHECK(starts_equal(7, 4, 0.5, (const int64_t[]){0, 2, 3}, 3));
    MP_CHECK(starts_equal(11, 6, 0.5, (const int64_t[]){0, 2, 5}, 3));
    MP_CHECK(starts_equal(10, 4, 1.0, (const int64_t[]){0, 3, 6}, 3));
    MP_CHECK(starts_equal(10, 4, 0.25, (const int64_t[]){0, 1, 2, 3, 4, 5, 6}, 7));
    int64_t n;
    MP_CHECK(mp_infer_window_starts(5, 6, 0.5, NULL, 0, &n) == MP_ERR_ARG);
    MP_CHECK(mp_infer_window_starts(10, 6, 0, NULL, 0, &n) == MP_ERR_ARG);
    MP_CHECK(mp_infer_window_starts(10, 6, 1.5, NULL, 0, &n) == MP_ERR_ARG);
}

/* Over many sizes: first 0, last size - patch, non-decreasing, gaps never
 * above the target step rounded up, every voxel covered. */
static void test_window_starts_cover(void) {
    const double steps[] = {0.5, 0.33, 0.25, 0.7, 1.0};
    for (int64_t patch = 1; patch <= 13; patch++)
        for (int64_t size = patch; size <= 60; size++)
            for (int si = 0; si < 5; si++) {
                int64_t st[256], n;
                MP_CHECK_OK(mp_infer_window_starts(size, patch, steps[si], st, 256, &n));
                MP_CHECK(n >= 1 && n <= 256);
                MP_CHECK(st[0] == 0 && st[n - 1] == size - patch);
                uint8_t cov[64] = {0};
                for (int64_t i = 0; i < n; i++) {
                    if (i) MP_CHECKF(st[i] >= st[i - 1] && st[i] - st[i - 1] <= (int64_t)ceil(patch * steps[si]),
                                     "size %lld patch %lld step %g", (long long)size, (long long)patch, steps[si]);
                    for (int64_t x = st[i]; x < st[i] + patch; x++) cov[x] = 1;
                }
                for (int64_t x = 0; x < size; x++) MP_CHECK(cov[x]);
            }
}

/* ---- Gaussian ---- */

/* scipy.ndimage.gaussian_filter of a centred delta, mode constant: a
 * separable correlation with kernels normalised to sum 1 over the radius
 * int(4 sigma + 0.5); then divided by its maximum. */
static void scipy_gaussian(double *out, const int p[3], double scale) {
    double *k[3];
    for (int a = 0; a < 3; a++) {
        k[a] = calloc((size_t)p[a], sizeof(double));
        double sigma = scale * p[a], sum = 0;
        int r = (int)(4.0 * sigma + 0.5);
        for (int j = -r; j <= r; j++) sum += exp(-0.5 * j * j / (sigma * sigma));
        for (int i = 0; i < p[a]; i++) {
            int d = i - p[a] / 2;
            k[a][i] = (d >= -r && d <= r) ? exp(-0.5 * d * d / (sigma * sigma)) / sum : 0;
        }
    }
    double mx = 0;
    int64_t n = (int64_t)p[0] * p[1] * p[2];
    for (int64_t i = 0; i < n; i++) {
        int x = (int)(i % p[2]), y = (int)((i / p[2]) % p[1]), z = (int)(i / ((int64_t)p[2] * p[1]));
        out[i] = k[0][z] * k[1][y] * k[2][x];
        if (out[i] > mx) mx = out[i];
    }
    for (int64_t i = 0; i < n; i++) out[i] /= mx;
    for (int a = 0; a < 3; a++) free(k[a]);
}

static void test_gaussian(void) {
    const int cases[][3] = {{96, 96, 96}, {7, 12, 5}, {1, 4, 9}, {64, 128, 160}};
    for (int c = 0; c < 4; c++) {
        const int *p = cases[c];
        int64_t n = (int64_t)p[0] * p[1] * p[2];
        float *g = malloc((size_t)n * sizeof *g);
        double *ref = malloc((size_t)n * sizeof *ref);
        MP_CHECK_OK(mp_infer_gaussian(g, p, 1.0 / 8));
        scipy_gaussian(ref, p, 1.0 / 8);
        double worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double rel = fabs(g[i] - ref[i]) / ref[i];
            if (rel > worst) worst = rel;
        }
        int64_t centre = ((int64_t)(p[0] / 2) * p[1] + p[1] / 2) * p[2] + p[2] / 2;
        float gc = g[centre], g0 = g[0];
        free(g);
        free(ref);
        MP_CHECKF(worst < 1e-6, "patch %dx%dx%d: relative error %g", p[0], p[1], p[2], worst);
        MP_CHECK(gc == 1.0f);
        if (c == 0) MP_CHECK_NEAR(g0, exp(-24.0), 1e-6 * exp(-24.0)); /* exp(-8) per axis at distance 48 = 4 sigma */
    }
    /* A narrow sigma truncates: zeros become the smallest non-zero value. */
    int p[3] = {1, 1, 40};
    float g[40];
    MP_CHECK_OK(mp_infer_gaussian(g, p, 1.0 / 32)); /* sigma 1.25, radius 5 */
    float minnz = g[20 - 5];
    MP_CHECK_NEAR(minnz, exp(-0.5 * 25 / (1.25 * 1.25)), 1e-9);
    for (int i = 0; i < 40; i++) MP_CHECK(g[i] >= minnz && g[i] > 0);
    MP_CHECK(g[0] == minnz && g[39] == minnz && g[14] == minnz && g[26] == minnz);
}

/* ---- exact reconstruction of a known field ---- */

static void test_field_reconstruction(void) {
    const struct {
        int64_t d[3];
        int patch_dhw[3];
    } cases[] = {
        {{7, 5, 3}, {4, 6, 8}},    /* smaller than the patch on every axis */
        {{8, 6, 4}, {4, 6, 8}},    /* equal */
        {{19, 13, 11}, {4, 6, 8}}, /* larger, odd */
        {{20, 5, 9}, {5, 7, 6}},   /* mixed, anisotropic */
        {{1, 1, 1}, {3, 3, 3}},
        {{33, 2, 17}, {16, 2, 5}},
    };
    const int K = 4;
    mp_pool_t *pool = mp_pool_create(2);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int avg = 0; avg < 2; avg++)
            for (unsigned mir = 0; mir < 8; mir += 7) {
                mock_t m;
                mp_infer_net_t net = mock_net(&m, 0, 3, K, cases[c].patch_dhw[0], cases[c].patch_dhw[1],
                                              cases[c].patch_dhw[2], 3);
                mp_vol_t *img = coord_image(cases[c].d[0], cases[c].d[1], cases[c].d[2]);
                MP_CHECK(img);
                mp_infer_opts_t o;
                mp_infer_opts_init(&o);
                o.average = avg ? MP_INFER_AVG_LOGITS : MP_INFER_AVG_PROBS;
                o.mirror_axes = mir;
                o.pad_value = -3; /* padding must never reach the output */
                mp_infer_result_t r;
                MP_CHECK_OK(mp_infer_predict_grid(&r, img, &net, &o, NULL, MP_INFER_PROBS_F32, pool));
                const int64_t nx = img->dim[0], ny = img->dim[1], nz = img->dim[2], nv = nx * ny * nz;
                const float *pr = r.probs->data, *u = img->data;
                const uint8_t *lab = r.labels->data;
                double worst = 0;
                int64_t bad_label = 0;
                for (int64_t i = 0; i < nv; i++) {
                    double q[8], s = 0, best = -1, second = -1;
                    int bk = 0;
                    for (int k = 0; k < K; k++) s += q[k] = field_q(k, u[i], u[nv + i], u[2 * nv + i]);
                    for (int k = 0; k < K; k++) {
                        double e = fabs(pr[k * nv + i] - q[k] / s);
                        if (e > worst) worst = e;
                        if (q[k] > best) {
                            second = best;
                            best = q[k];
                            bk = k;
                        } else if (q[k] > second) {
                            second = q[k];
                        }
                    }
                    if (lab[i] != bk && (best - second) / s > 1e-5) bad_label++;
                }
                mp_infer_result_deinit(&r);
                mp_vol_free(img);
                MP_CHECKF(worst < 2e-6, "case %zu avg %d mirror %u: max error %g", c, avg, mir, worst);
                MP_CHECK(bad_label == 0);
            }
    mp_pool_free(pool);
}

/* ---- plain full-volume reference ---- */

/* Probabilities (K x nvox) the way a straightforward implementation gets
 * them: pad the whole image, visit windows x-major (nnU-Net's loop order),
 * fold each mirror's un-flipped softmax (or logits) times the Gaussian
 * into full-size double accumulators, divide, crop, softmax for logits. */
static int reference(double *probs, const mp_vol_t *img, const mp_infer_net_t *net, const mp_infer_opts_t *o) {
    const int K = net->num_classes, C = net->in_channels;
    int64_t p[3] = {net->patch_dhw[2], net->patch_dhw[1], net->patch_dhw[0]}, P[3], off[3], st[3][64], ns[3];
    for (int a = 0; a < 3; a++) {
        P[a] = img->dim[a] > p[a] ? img->dim[a] : p[a];
        off[a] = (P[a] - img->dim[a]) / 2;
        if (mp_infer_window_starts(P[a], p[a], o->step, st[a], 64, &ns[a])) return -1;
    }
    const int64_t PV = P[0] * P[1] * P[2], pv = p[0] * p[1] * p[2], nv = mp_vol_voxels(img);
    float *pad = malloc((size_t)(C * PV) * sizeof *pad), *in = malloc((size_t)(C * pv) * sizeof *in);
    float *out = malloc((size_t)(K * pv) * sizeof *out), *g = malloc((size_t)pv * sizeof *g);
    double *acc = calloc((size_t)(K * PV), sizeof *acc), *w = calloc((size_t)PV, sizeof *w);
    for (int64_t i = 0; i < C * PV; i++) pad[i] = o->pad_value;
    const float *src = img->data;
    for (int c = 0; c < C; c++)
        for (int64_t z = 0; z < img->dim[2]; z++)
            for (int64_t y = 0; y < img->dim[1]; y++)
                for (int64_t x = 0; x < img->dim[0]; x++)
                    pad[c * PV + ((z + off[2]) * P[1] + y + off[1]) * P[0] + x + off[0]] =
                        src[c * nv + (z * img->dim[1] + y) * img->dim[0] + x];
    int pdhw[3] = {net->patch_dhw[0], net->patch_dhw[1], net->patch_dhw[2]};
    if (o->gaussian) mp_infer_gaussian(g, pdhw, o->sigma_scale);
    else for (int64_t i = 0; i < pv; i++) g[i] = 1;
    int rc = 0;
    for (int64_t ix = 0; ix < ns[0]; ix++)
        for (int64_t iy = 0; iy < ns[1]; iy++)
            for (int64_t iz = 0; iz < ns[2]; iz++)
                for (unsigned m = 0; m < 8; m++) {
                    if (m & ~o->mirror_axes) continue;
                    int64_t s0 = st[0][ix], s1 = st[1][iy], s2 = st[2][iz];
                    for (int c = 0; c < C; c++)
                        for (int64_t z = 0; z < p[2]; z++)
                            for (int64_t y = 0; y < p[1]; y++)
                                for (int64_t x = 0; x < p[0]; x++) {
                                    int64_t fz = m & 4 ? p[2] - 1 - z : z, fy = m & 2 ? p[1] - 1 - y : y,
                                            fx = m & 1 ? p[0] - 1 - x : x;
                                    in[c * pv + (z * p[1] + y) * p[0] + x] =
                                        pad[c * PV + ((s2 + fz) * P[1] + s1 + fy) * P[0] + s0 + fx];
                                }
                    if ((rc = net->forward(net->self, out, in, 1))) goto done;
                    for (int64_t z = 0; z < p[2]; z++)
                        for (int64_t y = 0; y < p[1]; y++)
                            for (int64_t x = 0; x < p[0]; x++) {
                                int64_t fz = m & 4 ? p[2] - 1 - z : z, fy = m & 2 ? p[1] - 1 - y : y,
                                        fx = m & 1 ? p[0] - 1 - x : x;
                                int64_t li = (fz * p[1] + fy) * p[0] + fx, gi = (z * p[1] + y) * p[0] + x;
                                int64_t vi = ((s2 + z) * P[1] + s1 + y) * P[0] + s0 + x;
                                double l[64], mx = -1e300, s = 0;
                                for (int k = 0; k < K; k++) {
                                    l[k] = out[k * pv + li];
                                    if (l[k] > mx) mx = l[k];
                                }
                                if (o->average == MP_INFER_AVG_PROBS) {
                                    for (int k = 0; k < K; k++) s += l[k] = exp(l[k] - mx);
                                    for (int k = 0; k < K; k++) l[k] /= s;
                                }
                                for (int k = 0; k < K; k++) acc[k * PV + vi] += g[gi] * l[k];
                                w[vi] += g[gi];
                            }
                }
    for (int64_t z = 0; z < img->dim[2]; z++)
        for (int64_t y = 0; y < img->dim[1]; y++)
            for (int64_t x = 0; x < img->dim[0]; x++) {
                int64_t vi = ((z + off[2]) * P[1] + y + off[1]) * P[0] + x + off[0];
                int64_t oi = (z * img->dim[1] + y) * img->dim[0] + x;
                double v[64], mx = -1e300, s = 0;
                for (int k = 0; k < K; k++) {
                    v[k] = acc[k * PV + vi] / w[vi];
                    if (v[k] > mx) mx = v[k];
                }
                if (o->average == MP_INFER_AVG_LOGITS) {
                    for (int k = 0; k < K; k++) s += v[k] = exp(v[k] - mx);
                    for (int k = 0; k < K; k++) v[k] /= s;
                }
                for (int k = 0; k < K; k++) probs[k * nv + oi] = v[k];
            }
done:
    free(pad);
    free(in);
    free(out);
    free(g);
    free(acc);
    free(w);
    return rc;
}

/* Largest |a - b| over K x nv values, and labels that disagree with the
 * reference's argmax where its top two are more than 1e-4 apart. */
static double compare_ref(const mp_infer_result_t *r, const double *ref, int K, int64_t nv, int64_t *bad_labels) {
    double worst = 0;
    *bad_labels = 0;
    const float *pr = r->probs->data;
    for (int64_t i = 0; i < nv; i++) {
        double best = -1, second = -1;
        int bk = 0;
        for (int k = 0; k < K; k++) {
            double e = fabs(pr[k * nv + i] - ref[k * nv + i]);
            if (e > worst) worst = e;
            if (ref[k * nv + i] > best) {
                second = best;
                best = ref[k * nv + i];
                bk = k;
            } else if (ref[k * nv + i] > second) {
                second = ref[k * nv + i];
            }
        }
        int lab = r->labels->dtype == MP_DTYPE_U8 ? ((uint8_t *)r->labels->data)[i] : ((uint16_t *)r->labels->data)[i];
        if (lab != bk && best - second > 1e-4) (*bad_labels)++;
    }
    return worst;
}

static void test_slab_vs_reference(void) {
    const int classes[2] = {2, 20};
    mp_pool_t *pool = mp_pool_create(2);
    for (int ci = 0; ci < 2; ci++)
        for (int variant = 0; variant < 4; variant++) {
            const int K = classes[ci];
            mock_t m;
            mp_infer_net_t net = mock_net(&m, 1, 1, K, 10, 6, 8, 4);
            mp_vol_t *img = variant == 2 ? pattern_image(5, 17, 7) : pattern_image(23, 17, 29);
            mp_infer_opts_t o;
            mp_infer_opts_init(&o);
            o.average = variant == 1 ? MP_INFER_AVG_LOGITS : MP_INFER_AVG_PROBS;
            o.mirror_axes = variant == 1 ? 5 : variant == 2 ? 7 : 0;
            if (variant == 3) { /* uniform weights, a finer step */
                o.gaussian = 0;
                o.step = 0.3;
            }
            int64_t nv = mp_vol_voxels(img);
            double *ref = malloc((size_t)(K * nv) * sizeof *ref);
            MP_CHECK(reference(ref, img, &net, &o) == 0);
            mp_infer_result_t r;
            MP_CHECK_OK(mp_infer_predict_grid(&r, img, &net, &o, NULL, MP_INFER_PROBS_F32, pool));
            int64_t bad;
            double worst = compare_ref(&r, ref, K, nv, &bad);
            int ring = r.stats.ring_planes;
            int64_t planes = img->dim[2];
            mp_infer_result_deinit(&r);
            free(ref);
            mp_vol_free(img);
            MP_CHECKF(worst < 2e-6, "K %d variant %d: max difference %g", K, variant, worst);
            MP_CHECK(bad == 0);
            MP_CHECK(ring == (planes < 10 ? planes : 10)); /* accumulators for one patch depth only */
        }
    mp_pool_free(pool);
}

/* ---- invariances ---- */

static int run_probs(mp_vol_t **probs, mp_infer_stats_t *st, const mp_vol_t *img, mp_infer_net_t *net,
                     const mp_infer_opts_t *o, int threads) {
    mp_pool_t *pool = threads > 0 ? mp_pool_create(threads) : NULL;
    mp_infer_result_t r;
    int rc = mp_infer_predict_grid(&r, img, net, o, NULL, MP_INFER_PROBS_F32, pool);
    mp_pool_free(pool);
    if (rc) return rc;
    *probs = r.probs;
    if (st) *st = r.stats;
    mp_vol_free(r.labels);
    return 0;
}

static void test_batch_and_thread_invariance(void) {
    mock_t m;
    mp_infer_net_t net = mock_net(&m, 1, 1, 5, 7, 9, 6, 4);
    mp_vol_t *img = pattern_image(21, 19, 25);
    mp_infer_opts_t o;
    mp_infer_opts_init(&o);
    o.mirror_axes = 3;
    mp_vol_t *base = NULL;
    mp_infer_stats_t st;
    o.max_batch = 1;
    MP_CHECK_OK(run_probs(&base, &st, img, &net, &o, 0));
    MP_CHECK(m.max_seen == 1 && m.calls == st.windows * 4 && st.entries == st.windows * 4);
    /* windows: padded 21/6 -> 0..15 step 3 ish; just check the product of per-axis counts */
    int64_t n0, n1, n2;
    MP_CHECK_OK(mp_infer_window_starts(21, 6, 0.5, NULL, 0, &n0));
    MP_CHECK_OK(mp_infer_window_starts(19, 9, 0.5, NULL, 0, &n1));
    MP_CHECK_OK(mp_infer_window_starts(25, 7, 0.5, NULL, 0, &n2));
    MP_CHECK(st.windows == n0 * n1 * n2);
    const int batches[] = {2, 3, 4, 0};
    const int threads[] = {1, 2, 3, 2};
    for (int t = 0; t < 4; t++) {
        o.max_batch = batches[t];
        m.calls = 0;
        m.max_seen = 0;
        mp_vol_t *p = NULL;
        MP_CHECK_OK(run_probs(&p, &st, img, &net, &o, threads[t]));
        int same = memcmp(p->data, base->data, mp_vol_bytes(base)) == 0;
        mp_vol_free(p);
        int b = batches[t] ? batches[t] : 4;
        MP_CHECK(m.max_seen == b && m.calls == (st.entries + b - 1) / b && st.forward_calls == m.calls);
        MP_CHECKF(same, "batch %d threads %d: probabilities differ", batches[t], threads[t]);
    }
    mp_vol_free(base);
    mp_vol_free(img);
}

static void test_mirroring_equivariant(void) {
    /* The field network is pointwise, hence flip-equivariant: mirroring
     * must not change the result beyond rounding. */
    mock_t m;
    mp_infer_net_t net = mock_net(&m, 0, 3, 6, 6, 5, 8, 8);
    mp_vol_t *img = coord_image(17, 12, 14);
    mp_infer_opts_t o;
    mp_infer_opts_init(&o);
    mp_vol_t *a = NULL, *b = NULL;
    MP_CHECK_OK(run_probs(&a, NULL, img, &net, &o, 2));
    int c0 = m.calls;
    for (unsigned mir = 1; mir < 8; mir++) {
        o.mirror_axes = mir;
        m.entries = 0;
        mp_infer_stats_t st;
        MP_CHECK_OK(run_probs(&b, &st, img, &net, &o, 2));
        int nm = 1 << __builtin_popcount(mir);
        MP_CHECK(m.entries == st.windows * nm && st.entries == m.entries);
        const float *x = a->data, *y = b->data;
        double worst = 0;
        for (int64_t i = 0; i < mp_vol_elems(a); i++) worst = fmax(worst, fabs(x[i] - y[i]));
        mp_vol_free(b);
        MP_CHECKF(worst < 2e-6, "mirror axes %u: max difference %g", mir, worst); /* 8x more float terms */
    }
    MP_CHECK(c0 > 0);
    /* A position-dependent network is not equivariant: mirroring must
     * change its output (it really ran on flipped patches). */
    mp_infer_net_t pn = mock_net(&m, 1, 1, 3, 6, 5, 8, 8);
    mp_vol_t *pimg = pattern_image(17, 12, 14);
    o.mirror_axes = 0;
    MP_CHECK_OK(run_probs(&b, NULL, pimg, &pn, &o, 1));
    mp_vol_t *c = NULL;
    o.mirror_axes = 1;
    MP_CHECK_OK(run_probs(&c, NULL, pimg, &pn, &o, 1));
    int differ = memcmp(b->data, c->data, mp_vol_bytes(b)) != 0;
    mp_vol_free(b);
    mp_vol_free(c);
    mp_vol_free(pimg);
    mp_vol_free(a);
    mp_vol_free(img);
    MP_CHECK(differ);
}

/* ---- output on another grid ---- */

/* A sink that stores every plane's scores into a K-channel volume. */
typedef struct {
    mp_vol_t *v;
} capture_t;

static int capture_plane(void *user, int64_t z, const float *scores) {
    capture_t *c = user;
    int64_t nx = c->v->dim[0], ny = c->v->dim[1], K = c->v->dim[3], nv = mp_vol_voxels(c->v);
    for (int64_t y = 0; y < ny; y++)
        for (int64_t k = 0; k < K; k++)
            memcpy((float *)c->v->data + k * nv + (z * ny + y) * nx, scores + (y * K + k) * nx, (size_t)nx * sizeof(float));
    return MP_OK;
}

static void test_resampled_output(void) {
    const int64_t outs[][3] = {{40, 11, 33}, {9, 30, 7}, {23, 17, 50}, {23, 17, 29}, {1, 1, 1}};
    const int K = 4;
    mock_t m;
    mp_infer_net_t net = mock_net(&m, 1, 1, K, 10, 6, 8, 4);
    mp_vol_t *img = pattern_image(23, 17, 29);
    mp_pool_t *pool = mp_pool_create(2);
    for (int avg = 0; avg < 2; avg++) {
        mp_infer_opts_t o;
        mp_infer_opts_init(&o);
        o.average = avg ? MP_INFER_AVG_LOGITS : MP_INFER_AVG_PROBS;
        /* Reference: the full-resolution scores (probabilities or mean
         * logits) resampled by the volume operations, softmax after. */
        capture_t cap = {NULL};
        int64_t d4[4] = {img->dim[0], img->dim[1], img->dim[2], K};
        MP_CHECK_OK(mp_vol_create(&cap.v, d4, MP_DTYPE_F32));
        mp_vol_set_affine(cap.v, img->affine);
        mp_infer_sink_t sink = {capture_plane, &cap};
        MP_CHECK_OK(mp_infer_sliding_window(img, &net, &o, &sink, pool, NULL));
        for (int c = 0; c < 5; c++) {
            mp_infer_result_t r;
            MP_CHECK_OK(mp_infer_predict_grid(&r, img, &net, &o, outs[c], MP_INFER_PROBS_F32, pool));
            mp_vol_t *rs = NULL;
            MP_CHECK_OK(mp_vol_resample_shape(&rs, cap.v, outs[c], MP_INTERP_LINEAR, NULL));
            int64_t nv = mp_vol_voxels(rs), bad = 0;
            double worst = 0, affine_err = 0;
            const float *a = r.probs->data, *b = rs->data;
            for (int64_t i = 0; i < nv; i++) {
                double q[8], mx = -1e30, s = 0;
                for (int k = 0; k < K; k++) mx = fmax(mx, q[k] = b[k * nv + i]);
                if (avg) {
                    for (int k = 0; k < K; k++) s += q[k] = exp(q[k] - mx);
                    for (int k = 0; k < K; k++) q[k] /= s;
                }
                int bk = 0;
                for (int k = 0; k < K; k++) {
                    worst = fmax(worst, fabs(a[k * nv + i] - q[k]));
                    if (q[k] > q[bk]) bk = k;
                }
                double margin = 1;
                for (int k = 0; k < K; k++)
                    if (k != bk) margin = fmin(margin, q[bk] - q[k]);
                if (((uint8_t *)r.labels->data)[i] != bk && margin > 1e-5) bad++;
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) affine_err = fmax(affine_err, fabs(r.labels->affine[i][j] - rs->affine[i][j]));
            int dims_ok = r.labels->dim[0] == outs[c][0] && r.labels->dim[1] == outs[c][1] && r.labels->dim[2] == outs[c][2];
            mp_infer_result_deinit(&r);
            mp_vol_free(rs);
            MP_CHECK(dims_ok);
            MP_CHECKF(worst < 2e-6, "avg %d grid %d: max difference %g", avg, c, worst);
            MP_CHECK(bad == 0);
            MP_CHECK(affine_err < 1e-12);
        }
        mp_vol_free(cap.v);
    }
    mp_pool_free(pool);
    mp_vol_free(img);
}

/* Quantised probabilities and the u16 label path. */
static void test_u8_probs_and_u16_labels(void) {
    mock_t m;
    mp_infer_net_t net = mock_net(&m, 1, 1, 3, 4, 4, 4, 2);
    mp_vol_t *img = pattern_image(9, 7, 6);
    mp_infer_result_t f, q;
    MP_CHECK_OK(mp_infer_predict_grid(&f, img, &net, NULL, NULL, MP_INFER_PROBS_F32, NULL));
    MP_CHECK_OK(mp_infer_predict_grid(&q, img, &net, NULL, NULL, MP_INFER_PROBS_U8, NULL));
    MP_CHECK(q.probs->dtype == MP_DTYPE_U8 && q.probs->dim[3] == 3);
    const float *pf = f.probs->data;
    const uint8_t *pq = q.probs->data;
    int ok = 1;
    for (int64_t i = 0; i < mp_vol_elems(f.probs); i++) ok &= pq[i] == (uint8_t)lrintf(pf[i] * 255.0f);
    MP_CHECK(ok && memcmp(f.labels->data, q.labels->data, mp_vol_bytes(f.labels)) == 0);
    mp_infer_result_deinit(&f);
    mp_infer_result_deinit(&q);
    /* 300 classes: u16 labels, and the right class wins. */
    mp_infer_net_t big = mock_net(&m, 1, 1, 300, 4, 4, 4, 2);
    MP_CHECK_OK(mp_infer_predict_grid(&f, img, &big, NULL, NULL, MP_INFER_PROBS_F32, NULL));
    MP_CHECK(f.labels->dtype == MP_DTYPE_U16);
    const uint16_t *l = f.labels->data;
    int64_t nv = mp_vol_voxels(img), wrong = 0;
    pf = f.probs->data;
    for (int64_t i = 0; i < nv; i++)
        for (int k = 0; k < 300; k++)
            if (pf[k * nv + i] > pf[l[i] * nv + i]) wrong++;
    mp_infer_result_deinit(&f);
    mp_vol_free(img);
    MP_CHECK(wrong == 0);
}

/* ---- errors and progress ---- */

static int64_t progress_done, progress_total, progress_calls;
static void on_progress(void *user, int64_t done, int64_t total) {
    (void)user;
    MP_CHECK(done >= progress_done);
    progress_done = done;
    progress_total = total;
    progress_calls++;
}

static void test_errors_and_progress(void) {
    mock_t m;
    mp_infer_net_t net = mock_net(&m, 1, 1, 2, 4, 4, 4, 3);
    mp_vol_t *img = pattern_image(10, 9, 8);
    mp_infer_result_t r;
    mp_infer_opts_t o;
    mp_infer_opts_init(&o);
    o.progress = on_progress;
    progress_done = progress_total = progress_calls = 0;
    MP_CHECK_OK(mp_infer_predict_grid(&r, img, &net, &o, NULL, MP_INFER_PROBS_NONE, NULL));
    MP_CHECK(r.probs == NULL && progress_total == r.stats.windows && progress_done == progress_total);
    MP_CHECK(progress_calls == r.stats.forward_calls);
    mp_infer_result_deinit(&r);
    /* The network failing mid-way: its status and message come back. */
    m.fail_at = 3;
    m.calls = 0;
    MP_CHECK(mp_infer_predict_grid(&r, img, &net, NULL, NULL, MP_INFER_PROBS_NONE, NULL) == MP_ERR_INTERNAL);
    MP_CHECK(strstr(mp_error_message(), "mock failure") && strstr(mp_error_message(), "forward"));
    MP_CHECK(r.labels == NULL);
    m.fail_at = 0;
    /* Channel mismatch, bad options, non-float input. */
    mp_infer_net_t two = mock_net(&m, 1, 2, 2, 4, 4, 4, 3);
    MP_CHECK(mp_infer_predict_grid(&r, img, &two, NULL, NULL, MP_INFER_PROBS_NONE, NULL) == MP_ERR_MISMATCH);
    o.step = 0;
    MP_CHECK(mp_infer_predict_grid(&r, img, &net, &o, NULL, MP_INFER_PROBS_NONE, NULL) == MP_ERR_ARG);
    mp_infer_opts_init(&o);
    o.mirror_axes = 9;
    MP_CHECK(mp_infer_predict_grid(&r, img, &net, &o, NULL, MP_INFER_PROBS_NONE, NULL) == MP_ERR_ARG);
    mp_vol_t *u8 = NULL;
    MP_CHECK_OK(mp_vol_create_like(&u8, img, MP_DTYPE_U8));
    MP_CHECK(mp_infer_predict_grid(&r, u8, &net, NULL, NULL, MP_INFER_PROBS_NONE, NULL) == MP_ERR_ARG);
    mp_vol_free(u8);
    /* Buffers above the memory limit are refused before allocating. */
    uint64_t lim = mp_mem_limit();
    mp_mem_set_limit(4096);
    int rc = mp_infer_predict_grid(&r, img, &net, NULL, NULL, MP_INFER_PROBS_NONE, NULL);
    mp_mem_set_limit(lim);
    MP_CHECK(rc == MP_ERR_LIMIT);
    int64_t bad_grid[3] = {0, 4, 4};
    MP_CHECK(mp_infer_predict_grid(&r, img, &net, NULL, bad_grid, MP_INFER_PROBS_NONE, NULL) == MP_ERR_ARG);
    mp_vol_free(img);
}

/* A sink that records plane order and fails on request. */
typedef struct {
    int64_t next, fail_at;
} order_sink_t;

static int order_plane(void *user, int64_t z, const float *scores) {
    order_sink_t *s = user;
    (void)scores;
    if (z != s->next) return mp_error_set(MP_ERR_INTERNAL, "plane %lld out of order", (long long)z);
    s->next++;
    if (z == s->fail_at) return mp_error_set(MP_ERR_IO, "sink refused plane %lld", (long long)z);
    return MP_OK;
}

static void test_sink_order_and_failure(void) {
    mock_t m;
    mp_infer_net_t net = mock_net(&m, 1, 1, 2, 5, 4, 4, 2);
    mp_vol_t *img = pattern_image(6, 6, 23);
    order_sink_t os = {0, -1};
    mp_infer_sink_t sink = {order_plane, &os};
    MP_CHECK_OK(mp_infer_sliding_window(img, &net, NULL, &sink, NULL, NULL));
    MP_CHECK(os.next == 23);
    os.next = 0;
    os.fail_at = 7;
    MP_CHECK(mp_infer_sliding_window(img, &net, NULL, &sink, NULL, NULL) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "plane 7"));
    mp_vol_free(img);
}

int main(void) {
    MP_RUN(test_window_starts_hand);
    MP_RUN(test_window_starts_cover);
    MP_RUN(test_gaussian);
    MP_RUN(test_field_reconstruction);
    MP_RUN(test_slab_vs_reference);
    MP_RUN(test_batch_and_thread_invariance);
    MP_RUN(test_mirroring_equivariant);
    MP_RUN(test_resampled_output);
    MP_RUN(test_u8_probs_and_u16_labels);
    MP_RUN(test_errors_and_progress);
    MP_RUN(test_sink_order_and_failure);
    return mp_test_summary();
}
