/* Weight gradient of a 3D convolution or transposed convolution whose
 * activations are both in nCdhw8c, computed on that layout directly.
 *
 * Why: oneDNN 2.6 on AVX2 has no blocked 3D backward-weights kernel (its
 * reference code runs at 0.1 GFLOP/s), and its channels-last GEMM path runs
 * at 40-100 GFLOP/s after two reorders. Here every (kernel offset, channel
 * block of A, channel block of B) is an 8x8 tile of outer products summed
 * over the voxels of A, eight FMA accumulators in registers.
 *
 * Both kinds of layer are one correlation: for a conv A = dy (output grid)
 * and B = x (input grid); for a transposed conv A = x (input grid) and
 * B = dy (output grid). In both, voxel v of A meets voxel v*s + k - p of B,
 * and the gradient of the plain weight (alpha, beta, k) - (Cout, Cin, k) for
 * a conv, (Cin, Cout, k) for a transposed conv - is
 *     dW[alpha][beta][k] = sum_v A[v][alpha] * B[v*s + k - p][beta].
 * The plain-C reference is mp_ref_conv3d_backward_weights_f32 and its
 * transposed twin (src/ref); tests/test_nn_cpu.c compares the two. */
#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"

#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

typedef struct {
    const float *a, *b;   /* (N, CA/8, DA, HA, WA, 8), (N, CB/8, DB, HB, WB, 8) */
    int64_t n, cab, cbb;  /* batch; channel blocks of A and B */
    int64_t ad[3], bd[3]; /* spatial sizes of A and B */
    int64_t k[3], s[3], p[3];
    float *acc;           /* (kv, cab, cbb, 8 beta, 8 alpha): tiles, transposed */
} bww8_t;

/* First and last A index o with 0 <= o*s + k - p < nb (empty when lo > hi). */
static void valid_range(int64_t na, int64_t nb, int64_t k, int64_t s, int64_t p, int64_t *lo, int64_t *hi) {
    int64_t off = k - p, l = 0, h = na - 1;
    while (l <= h && l * s + off < 0) l++;
    while (h >= l && h * s + off > nb - 1) h--;
    *lo = l, *hi = h;
}

/* t (8 beta x 8 alpha) += sum over rows x cols of A[alpha] B[beta]: A rows
 * advance by a_row, B rows by b_row, B columns by b_col floats. */
static void tile_accumulate(float *t, const float *a, int64_t a_row, const float *b, int64_t b_row, int64_t b_col,
                            int64_t rows, int64_t cols) {
#ifdef __AVX2__
    __m256 c0 = _mm256_loadu_ps(t), c1 = _mm256_loadu_ps(t + 8), c2 = _mm256_loadu_ps(t + 16);
    __m256 c3 = _mm256_loadu_ps(t + 24), c4 = _mm256_loadu_ps(t + 32), c5 = _mm256_loadu_ps(t + 40);
    __m256 c6 = _mm256_loadu_ps(t + 48), c7 = _mm256_loadu_ps(t + 56);
    for (int64_t r = 0; r < rows; r++) {
        const float *pa = a + r * a_row, *pb = b + r * b_row;
        for (int64_t j = 0; j < cols; j++, pa += 8, pb += b_col) {
            __m256 va = _mm256_loadu_ps(pa);
            c0 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 0), c0);
            c1 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 1), c1);
            c2 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 2), c2);
            c3 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 3), c3);
            c4 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 4), c4);
            c5 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 5), c5);
            c6 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 6), c6);
            c7 = _mm256_fmadd_ps(va, _mm256_broadcast_ss(pb + 7), c7);
        }
    }
    _mm256_storeu_ps(t, c0), _mm256_storeu_ps(t + 8, c1), _mm256_storeu_ps(t + 16, c2);
    _mm256_storeu_ps(t + 24, c3), _mm256_storeu_ps(t + 32, c4), _mm256_storeu_ps(t + 40, c5);
    _mm256_storeu_ps(t + 48, c6), _mm256_storeu_ps(t + 56, c7);
#else
    (void)t, (void)a, (void)a_row, (void)b, (void)b_row, (void)b_col, (void)rows, (void)cols; /* not supported */
#endif
}

/* All (kh, kw) offsets of one A plane against one B plane, one block pair.
 * The plane goes in chunks of rows (about 48 KB of A each, and as much of B)
 * so that a chunk stays in L1/L2 across its nine in-plane offsets; a whole
 * 96^2 plane pair (590 KB) would not. */
static void plane_pair(const bww8_t *w, const float *ap, const float *bp, float *acc_kd) {
    const int64_t AH = w->ad[1], AW = w->ad[2], BH = w->bd[1], BW = w->bd[2];
    const int64_t tile_stride = w->cab * w->cbb * 64; /* floats between kernel offsets */
    const int64_t chunk = AW >= 1536 ? 1 : 1536 / AW;
    for (int64_t r0 = 0; r0 < AH; r0 += chunk) {
        int64_t r1 = r0 + chunk < AH ? r0 + chunk : AH;
        for (int64_t kh = 0; kh < w->k[1]; kh++) {
            int64_t h0, h1;
            valid_range(AH, BH, kh, w->s[1], w->p[1], &h0, &h1);
            if (h0 < r0) h0 = r0;
            if (h1 > r1 - 1) h1 = r1 - 1;
            if (h0 > h1) continue;
            for (int64_t kw = 0; kw < w->k[2]; kw++) {
                int64_t w0, w1;
                valid_range(AW, BW, kw, w->s[2], w->p[2], &w0, &w1);
                if (w0 > w1) continue;
                const float *a = ap + (h0 * AW + w0) * 8;
                const float *b = bp + ((h0 * w->s[1] + kh - w->p[1]) * BW + w0 * w->s[2] + kw - w->p[2]) * 8;
                tile_accumulate(acc_kd + (kh * w->k[2] + kw) * tile_stride, a, AW * 8, b, w->s[1] * BW * 8,
                                w->s[2] * 8, h1 - h0 + 1, w1 - w0 + 1);
            }
        }
    }
}

/* Worker: block pairs [begin, end) (A-major), every kernel offset, all voxels.
 * Planes outside, pairs inside: one A plane and one B plane per pair stay in
 * cache for all of their in-plane kernel offsets. */
static void bww8_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const bww8_t *w = ctx;
    (void)worker;
    const int64_t kv = w->k[0] * w->k[1] * w->k[2], pairs = w->cab * w->cbb;
    const int64_t sa = w->ad[0] * w->ad[1] * w->ad[2] * 8, sb = w->bd[0] * w->bd[1] * w->bd[2] * 8;
    const int64_t plane_a = w->ad[1] * w->ad[2] * 8, plane_b = w->bd[1] * w->bd[2] * 8;
    for (int64_t k = 0; k < kv; k++) memset(w->acc + (k * pairs + begin) * 64, 0, (size_t)(end - begin) * 64 * 4);
    for (int64_t n = 0; n < w->n; n++)
        for (int64_t ad = 0; ad < w->ad[0]; ad++)
            for (int64_t kd = 0; kd < w->k[0]; kd++) {
                int64_t bd = ad * w->s[0] + kd - w->p[0];
                if (bd < 0 || bd >= w->bd[0]) continue;
                for (int64_t pr = begin; pr < end; pr++) {
                    int64_t ca = pr / w->cbb, cb = pr % w->cbb;
                    const float *ap = w->a + (n * w->cab + ca) * sa + ad * plane_a;
                    const float *bp = w->b + (n * w->cbb + cb) * sb + bd * plane_b;
                    plane_pair(w, ap, bp, w->acc + (kd * w->k[1] * w->k[2] * pairs + pr) * 64);
                }
            }
}

int mp_cpu_bww8_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst) {
    mp_cpu_layout_t ls, ld;
    (void)d;
#ifndef __AVX2__
    (void)src, (void)dst;
    return 0; /* builds without AVX2 keep the channels-last paths */
#endif
    /* Developer switch for side-by-side timing against the ndhwc paths. */
    const char *env = getenv("MEDPIPE_NO_BWW8");
    if (env && env[0] == '1') return 0;
    /* Channels last with exactly 8 channels is the same array as nCdhw8c. */
    int ok = !mp_cpu_layout_from_md(&ls, src) && !mp_cpu_layout_from_md(&ld, dst) && ls.block == 8 && ld.block == 8;
    mp_error_clear();
    return ok;
}

static int64_t blocks8(int64_t c) { return (c + 7) / 8; }

size_t mp_cpu_bww8_scratch_bytes(const mp_cpu_conv_desc_t *d) {
    int64_t kv = d->g.k[0] * d->g.k[1] * d->g.k[2];
    return (size_t)(kv * blocks8(d->xs.c) * blocks8(d->cout) * 64) * sizeof(float);
}

/* Bias gradient: the sum of dy (N, C/8, S, 8) per channel, per-row float
 * sums accumulated in double. */
static void bias_grad(float *db, const float *dy, int64_t n, int64_t c, int64_t sp) {
    double s[8];
    for (int64_t cb = 0; cb < blocks8(c); cb++) {
        memset(s, 0, sizeof s);
        for (int64_t i = 0; i < n; i++) {
            const float *p = dy + (i * blocks8(c) + cb) * sp * 8;
            for (int64_t v0 = 0; v0 < sp; v0 += 256) {
                float r[8] = {0};
                int64_t v1 = v0 + 256 < sp ? v0 + 256 : sp;
                for (int64_t v = v0; v < v1; v++)
                    for (int j = 0; j < 8; j++) r[j] += p[v * 8 + j];
                for (int j = 0; j < 8; j++) s[j] += r[j];
            }
        }
        for (int j = 0; j < 8 && cb * 8 + j < c; j++) db[cb * 8 + j] = (float)s[j];
    }
}

void mp_cpu_bww8_run(const mp_cpu_conv_desc_t *d, float *dw, float *db, const float *dy, const float *x,
                     void *scratch) {
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, d->transposed);
    const mp_shape5_t as = d->transposed ? d->xs : ys, bs = d->transposed ? ys : d->xs;
    bww8_t w = {.a = d->transposed ? x : dy, .b = d->transposed ? dy : x, .n = d->xs.n, .cab = blocks8(as.c),
                .cbb = blocks8(bs.c), .ad = {as.d, as.h, as.w}, .bd = {bs.d, bs.h, bs.w}, .acc = scratch};
    for (int i = 0; i < 3; i++) w.k[i] = d->g.k[i], w.s[i] = d->g.s[i], w.p[i] = d->g.p[i];
    mp_cpu_team_for(w.cab * w.cbb, bww8_range, &w);
    /* Plain weights (alpha, beta, k): tile (k, alpha/8, beta/8) holds beta-major 8x8. */
    const int64_t kv = w.k[0] * w.k[1] * w.k[2], pairs = w.cab * w.cbb;
    for (int64_t al = 0; al < as.c; al++)
        for (int64_t be = 0; be < bs.c; be++)
            for (int64_t k = 0; k < kv; k++)
                dw[(al * bs.c + be) * kv + k] =
                    w.acc[(k * pairs + (al / 8) * w.cbb + be / 8) * 64 + (be % 8) * 8 + al % 8];
    if (db) bias_grad(db, dy, ys.n, ys.c, ys.d * ys.h * ys.w);
}
#endif /* MP_HAVE_DNNL */
