/* Weight gradient of a 3D convolution or transposed convolution whose
 * activations are both in nCdhw8c, computed on that layout directly.
 *
 * Why: oneDNN 2.6 on AVX2 has no blocked 3D backward-weights kernel (its
 * reference code runs at 0.1 GFLOP/s), and its channels-last GEMM path runs
 * at 40-100 GFLOP/s after two reorders. Here every kernel offset is a sum
 * over the voxels of A of outer products, in register tiles of 16 channels
 * of A (two blocks, two vectors) x 6 channels of B (broadcasts): twelve
 * independent FMA chains (an 8x8 tile has eight, one short of hiding the
 * FMA latency on two ports with any slack, and loads 9 values per 8 FMAs).
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

#define BWW8_ACC_L2 ((int64_t)1 << 20) /* accumulator bytes above which tasks go outside planes */

typedef struct {
    const float *a, *b;   /* (N, CA/8, DA, HA, WA, 8), (N, CB/8, DB, HB, WB, 8) */
    int64_t n, cab, cbb;  /* batch; channel blocks of A and B */
    int64_t ad[3], bd[3]; /* spatial sizes of A and B */
    int64_t k[3], s[3], p[3];
    int64_t apairs, bgroups; /* tasks: pairs of A blocks x groups of 6 B channels */
    float *acc;           /* (CB8, kv, CA8): alpha contiguous */
} bww8_t;

/* First and last A index o with 0 <= o*s + k - p < nb (empty when lo > hi). */
static void valid_range(int64_t na, int64_t nb, int64_t k, int64_t s, int64_t p, int64_t *lo, int64_t *hi) {
    int64_t off = k - p, l = 0, h = na - 1;
    while (l <= h && l * s + off < 0) l++;
    while (h >= l && h * s + off > nb - 1) h--;
    *lo = l, *hi = h;
}

/* s[l] += the sum of lane l over nvox voxels of 8 lanes: float sums over
 * runs of 256 voxels, added in double (bias gradients). */
static void sum8(double *s, const float *p, int64_t nvox) {
    for (int64_t v0 = 0; v0 < nvox; v0 += 256) {
        float r[8] = {0};
        int64_t v1 = v0 + 256 < nvox ? v0 + 256 : nvox;
        for (int64_t v = v0; v < v1; v++)
            for (int l = 0; l < 8; l++) r[l] += p[v * 8 + l];
        for (int l = 0; l < 8; l++) s[l] += r[l];
    }
}

/* One register tile: NA blocks of 8 alphas (A blocks `a_blk` floats apart)
 * times NB betas (at offsets boff[] from the B voxel), summed over rows x
 * cols voxels; t: NB rows of the accumulator, `t_row` floats apart. Up to
 * 2 x 6 = 12 independent FMA chains, 2 loads + 6 broadcasts per 12 FMAs. */
typedef struct {
    const float *a, *b;
    int64_t a_blk, a_row, b_row, b_col, rows, cols, t_row;
    const int64_t *boff;
    float *t;
} tile_args_t;

#ifdef __AVX2__
#define BWW8_TILE(NA, NB)                                                                              \
    static void tile_##NA##x##NB(const tile_args_t *q) {                                               \
        __m256 c[NB][NA];                                                                              \
        _Pragma("GCC unroll 6") for (int j = 0; j < NB; j++)                                           \
            _Pragma("GCC unroll 2") for (int i = 0; i < NA; i++) c[j][i] = _mm256_loadu_ps(q->t + j * q->t_row + 8 * i); \
        int64_t o[6];                                                                                  \
        _Pragma("GCC unroll 6") for (int j = 0; j < NB; j++) o[j] = q->boff[j];                        \
        for (int64_t r = 0; r < q->rows; r++) {                                                        \
            const float *pa = q->a + r * q->a_row, *pb = q->b + r * q->b_row;                          \
            for (int64_t v = 0; v < q->cols; v++, pa += 8, pb += q->b_col) {                           \
                __m256 va0 = _mm256_loadu_ps(pa), va1 = NA > 1 ? _mm256_loadu_ps(pa + q->a_blk) : va0; \
                _Pragma("GCC unroll 6") for (int j = 0; j < NB; j++) {                                 \
                    __m256 vb = _mm256_broadcast_ss(pb + o[j]);                                        \
                    c[j][0] = _mm256_fmadd_ps(va0, vb, c[j][0]);                                       \
                    if (NA > 1) c[j][NA - 1] = _mm256_fmadd_ps(va1, vb, c[j][NA - 1]);                 \
                }                                                                                      \
            }                                                                                          \
        }                                                                                              \
        _Pragma("GCC unroll 6") for (int j = 0; j < NB; j++)                                           \
            _Pragma("GCC unroll 2") for (int i = 0; i < NA; i++) _mm256_storeu_ps(q->t + j * q->t_row + 8 * i, c[j][i]); \
    }
BWW8_TILE(2, 6)
BWW8_TILE(2, 4)
BWW8_TILE(2, 2)
BWW8_TILE(1, 6)
BWW8_TILE(1, 4)
BWW8_TILE(1, 2)

static void tile_run(int na, int nb, const tile_args_t *q) {
    static void (*const fns[2][3])(const tile_args_t *) = {{tile_1x2, tile_1x4, tile_1x6},
                                                          {tile_2x2, tile_2x4, tile_2x6}};
    fns[na - 1][nb / 2 - 1](q);
}
#else
static void tile_run(int na, int nb, const tile_args_t *q) {
    (void)na, (void)nb, (void)q; /* not supported without AVX2 */
}
#endif

/* All (kh, kw) offsets of one A plane against one B plane for one task. The
 * plane goes in chunks of rows (about 48 KB of A per block, and as much of
 * B) so that a chunk stays in L1/L2 across its nine in-plane offsets; a
 * whole 96^2 plane pair (590 KB per block) would not. */
static void plane_task(const bww8_t *w, int na, int nb, const int64_t *boff, const float *ap, const float *bp,
                       float *acc_kd) {
    const int64_t AH = w->ad[1], AW = w->ad[2], BH = w->bd[1], BW = w->bd[2];
    const int64_t ca8 = w->cab * 8, kv = w->k[0] * w->k[1] * w->k[2];
    const int64_t chunk = AW >= 1536 ? 1 : 1536 / AW;
    tile_args_t q = {.a_blk = w->ad[0] * AH * AW * 8, .a_row = AW * 8, .b_row = w->s[1] * BW * 8,
                     .b_col = w->s[2] * 8, .t_row = kv * ca8, .boff = boff};
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
                q.a = ap + (h0 * AW + w0) * 8;
                q.b = bp + ((h0 * w->s[1] + kh - w->p[1]) * BW + w0 * w->s[2] + kw - w->p[2]) * 8;
                q.rows = h1 - h0 + 1, q.cols = w1 - w0 + 1;
                q.t = acc_kd + (kh * w->k[2] + kw) * ca8;
                tile_run(na, nb, &q);
            }
        }
    }
}

/* Group g of B channels: its first channel, and its size. Groups of 6,
 * but when 6 leaves 2 over (32 channels: 6+6+6+6+6+2) the last two go 4+4:
 * a group of 2 runs four FMA chains, latency-bound at half speed. */
static int b_group(const bww8_t *w, int64_t g, int64_t *be0) {
    const int64_t cb8 = w->cbb * 8, split = cb8 % 6 == 2 && cb8 > 6; /* last two groups 4 + 4 */
    if (split && g >= w->bgroups - 2) {
        *be0 = (w->bgroups - 2) * 6 + (g - (w->bgroups - 2)) * 4;
        return 4;
    }
    *be0 = g * 6;
    return (int)(cb8 - *be0 < 6 ? cb8 - *be0 : 6);
}

/* Worker: tasks [begin, end) = (pair of A blocks, group of 6 B channels),
 * pair-major; every kernel offset, all voxels. Tasks own disjoint parts of
 * the accumulator: no reduction. Planes outside, tasks inside. */
static void bww8_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const bww8_t *w = ctx;
    (void)worker;
    const int64_t kv = w->k[0] * w->k[1] * w->k[2], ca8 = w->cab * 8, cb8 = w->cbb * 8;
    const int64_t sa = w->ad[0] * w->ad[1] * w->ad[2] * 8, sb = w->bd[0] * w->bd[1] * w->bd[2] * 8;
    const int64_t plane_a = w->ad[1] * w->ad[2] * 8, plane_b = w->bd[1] * w->bd[2] * 8;
    for (int64_t t = begin; t < end; t++) {
        int64_t a0 = t / w->bgroups * 2, be0;
        int na = a0 + 1 < w->cab ? 2 : 1, nb = b_group(w, t % w->bgroups, &be0);
        for (int64_t k = 0; k < kv; k++)
            for (int j = 0; j < nb; j++) memset(w->acc + ((be0 + j) * kv + k) * ca8 + a0 * 8, 0, (size_t)na * 32);
    }
    /* Planes outside, tasks inside: a B plane serves every task of the
     * range while in cache. But each task's accumulator tile is then loaded
     * and stored once per plane and kernel offset; when the accumulator
     * outgrows L2 (deep layers: 14 MB for 512->256 channels) that traffic
     * dominates, and tasks go outside instead (each task's slice stays in
     * L1 over all planes; A and B of a deep layer fit in L3): 512->256 at
     * 8^3, 105 -> 88 ms on one thread. Below 8x8 planes (4x4 at 4^3) the
     * per-call overheads rule either way and planes outside measured faster. */
    const int tasks_outer = kv * ca8 * cb8 * (int64_t)sizeof(float) > BWW8_ACC_L2 && w->ad[1] * w->ad[2] >= 64;
    for (int64_t t0 = begin; t0 < end; t0 = tasks_outer ? t0 + 1 : end)
    for (int64_t n = 0; n < w->n; n++)
        for (int64_t ad = 0; ad < w->ad[0]; ad++)
            for (int64_t kd = 0; kd < w->k[0]; kd++) {
                int64_t bd = ad * w->s[0] + kd - w->p[0];
                if (bd < 0 || bd >= w->bd[0]) continue;
                for (int64_t t = t0; t < (tasks_outer ? t0 + 1 : end); t++) {
                    int64_t a0 = t / w->bgroups * 2, be0, boff[6];
                    int na = a0 + 1 < w->cab ? 2 : 1, nb = b_group(w, t % w->bgroups, &be0);
                    /* A beta's B value: its block's plane, its lane; relative to block 0. */
                    for (int j = 0; j < nb; j++) boff[j] = (be0 + j) / 8 * sb + (be0 + j) % 8;
                    const float *ap = w->a + (n * w->cab + a0) * sa + ad * plane_a;
                    const float *bp = w->b + n * w->cbb * sb + bd * plane_b;
                    plane_task(w, na, nb, boff, ap, bp,
                               w->acc + (be0 * kv + kd * w->k[1] * w->k[2]) * ca8 + a0 * 8);
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

size_t mp_cpu_bww8_scratch_bytes(const mp_cpu_conv_desc_t *d) {
    int64_t kv = d->g.k[0] * d->g.k[1] * d->g.k[2];
    return (size_t)(kv * mp_cpu_blocks8(d->xs.c) * mp_cpu_blocks8(d->cout) * 64) * sizeof(float); /* (CB8, kv, CA8) */
}

/* Bias gradient: the sum of dy (N, C/8, S, 8) per channel, per-row float
 * sums accumulated in double; channel blocks split over the threads (each
 * summed by one thread in a fixed order, so the result does not depend on
 * the thread count). */
typedef struct {
    float *db;
    const float *dy;
    int64_t n, c, sp;
} bias_ctx_t;

static void bias_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const bias_ctx_t *t = ctx;
    const int64_t cbs = mp_cpu_blocks8(t->c);
    (void)worker;
    for (int64_t cb = begin; cb < end; cb++) {
        double s[8] = {0};
        for (int64_t i = 0; i < t->n; i++) sum8(s, t->dy + (i * cbs + cb) * t->sp * 8, t->sp);
        for (int j = 0; j < 8 && cb * 8 + j < t->c; j++) t->db[cb * 8 + j] = (float)s[j];
    }
}

/* Plain weights (alpha, beta, k) from the (beta, k, alpha) accumulator, 16
 * alphas (one cache line of the accumulator) per task: each line read is
 * used whole and each alpha's output row is written in order. The plain
 * loop nest strided through the accumulator a line per value and took as
 * long as the sums themselves on the deep 8^3 and 4^3 layers. */
typedef struct {
    float *dw;
    const float *acc;
    int64_t ca, cb, kv, ca8;
} unpack_t;

static void unpack_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const unpack_t *u = ctx;
    (void)worker;
    for (int64_t g = begin; g < end; g++) {
        int64_t a0 = g * 16, a1 = a0 + 16 < u->ca ? a0 + 16 : u->ca;
        for (int64_t be = 0; be < u->cb; be++)
            for (int64_t k = 0; k < u->kv; k++) {
                const float *src = u->acc + (be * u->kv + k) * u->ca8;
                for (int64_t al = a0; al < a1; al++) u->dw[(al * u->cb + be) * u->kv + k] = src[al];
            }
    }
}

void mp_cpu_bww8_run(const mp_cpu_conv_desc_t *d, float *dw, float *db, const float *dy, const float *x,
                     void *scratch) {
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, d->transposed);
    const mp_shape5_t as = d->transposed ? d->xs : ys, bs = d->transposed ? ys : d->xs;
    bww8_t w = {.a = d->transposed ? x : dy, .b = d->transposed ? dy : x, .n = d->xs.n, .cab = mp_cpu_blocks8(as.c),
                .cbb = mp_cpu_blocks8(bs.c), .ad = {as.d, as.h, as.w}, .bd = {bs.d, bs.h, bs.w}, .acc = scratch};
    for (int i = 0; i < 3; i++) w.k[i] = d->g.k[i], w.s[i] = d->g.s[i], w.p[i] = d->g.p[i];
    w.apairs = (w.cab + 1) / 2;
    w.bgroups = (w.cbb * 8 + 5) / 6;
    mp_cpu_team_for(w.apairs * w.bgroups, bww8_range, &w);
    unpack_t u = {dw, w.acc, as.c, bs.c, w.k[0] * w.k[1] * w.k[2], w.cab * 8};
    mp_cpu_team_for((as.c + 15) / 16, unpack_range, &u);
    if (db) {
        bias_ctx_t bc = {db, dy, ys.n, ys.c, ys.d * ys.h * ys.w};
        mp_cpu_team_for(mp_cpu_blocks8(ys.c), bias_range, &bc);
    }
}
/* ---- the input conv: one input channel ----
 * With Cin = 1 the B side of the correlation is a plain volume: the betas
 * of a register tile become three kernel offsets along w (three adjacent
 * values of x) and the alphas up to four blocks of dy: twelve FMA chains,
 * four loads and three broadcasts per twelve FMAs. Before, this layer ran
 * shifted GEMMs on a channels-last copy of dy at 20 GFLOP/s. Tasks are the
 * (sample, plane) pairs of dy, each summing into its own slab; the slabs are
 * added in task order, so the result does not depend on the thread count. */
#define MP_BWW1_MAX_BLOCKS 64 /* output channels up to 512 (a per-task bias sum on the stack) */

int mp_cpu_bww1_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst) {
    mp_cpu_layout_t ls, ld;
#ifndef __AVX2__
    (void)d, (void)src, (void)dst;
    return 0;
#endif
    const char *env = getenv("MEDPIPE_NO_BWW8");
    if ((env && env[0] == '1') || d->transposed || d->xs.c != 1) return 0;
    for (int i = 0; i < 3; i++)
        if (d->g.s[i] != 1) return 0;
    if (mp_cpu_blocks8(d->cout) > MP_BWW1_MAX_BLOCKS) return 0;
    int ok = !mp_cpu_layout_from_md(&ls, src) && !mp_cpu_layout_from_md(&ld, dst) && ls.c == 1 && ld.block == 8;
    mp_error_clear();
    return ok;
}

size_t mp_cpu_bww1_scratch_bytes(const mp_cpu_conv_desc_t *d) {
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, 0);
    int64_t kv = d->g.k[0] * d->g.k[1] * d->g.k[2];
    return (size_t)(ys.n * ys.d * (kv + 1) * mp_cpu_blocks8(d->cout) * 8) * sizeof(float); /* (task, kv + 1, CA8) */
}

typedef struct {
    const float *dy, *x; /* (N, CA/8, D, H, W, 8); (N, D, H, W) */
    int64_t cab, ad[3], bd[3], k[3], p[3];
    float *slabs;        /* (N * AD, kv, CA8) */
} bww1_t;

#ifdef __AVX2__
/* acc[b][t] (b < NA blocks, t < 3 offsets) over rows x cols voxels:
 * dy block b at a + b * a_blk, x at xb + t. */
#define BWW1_TILE(NA)                                                                                     \
    static void tile1_##NA(float *acc, int64_t acc_k, const float *a, int64_t a_blk, int64_t a_row,     \
                           const float *xb, int64_t b_row, int64_t rows, int64_t cols) {                  \
        __m256 c[NA][3];                                                                                  \
        _Pragma("GCC unroll 4") for (int b = 0; b < NA; b++)                                              \
            _Pragma("GCC unroll 3") for (int t = 0; t < 3; t++) c[b][t] = _mm256_loadu_ps(acc + t * acc_k + 8 * b); \
        for (int64_t r = 0; r < rows; r++) {                                                              \
            const float *pa = a + r * a_row, *pb = xb + r * b_row;                                        \
            for (int64_t v = 0; v < cols; v++) {                                                          \
                __m256 x0 = _mm256_broadcast_ss(pb + v), x1 = _mm256_broadcast_ss(pb + v + 1);           \
                __m256 x2 = _mm256_broadcast_ss(pb + v + 2);                                              \
                _Pragma("GCC unroll 4") for (int b = 0; b < NA; b++) {                                    \
                    __m256 va = _mm256_loadu_ps(pa + b * a_blk + v * 8);                                  \
                    c[b][0] = _mm256_fmadd_ps(va, x0, c[b][0]);                                           \
                    c[b][1] = _mm256_fmadd_ps(va, x1, c[b][1]);                                           \
                    c[b][2] = _mm256_fmadd_ps(va, x2, c[b][2]);                                           \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        _Pragma("GCC unroll 4") for (int b = 0; b < NA; b++)                                              \
            _Pragma("GCC unroll 3") for (int t = 0; t < 3; t++) _mm256_storeu_ps(acc + t * acc_k + 8 * b, c[b][t]); \
    }
BWW1_TILE(1)
BWW1_TILE(2)
BWW1_TILE(3)
BWW1_TILE(4)

/* One kernel offset kw, one voxel at a time (row ends, offsets past a group of 3). */
static void bww1_cols(float *acc, const float *a, int64_t a_blk, int64_t a_row, const float *xb, int64_t b_row,
                      int64_t rows, int64_t c0, int64_t c1, int64_t cab) {
    for (int64_t b = 0; b < cab; b++) {
        __m256 c = _mm256_loadu_ps(acc + 8 * b);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t v = c0; v <= c1; v++)
                c = _mm256_fmadd_ps(_mm256_loadu_ps(a + b * a_blk + r * a_row + v * 8),
                                    _mm256_broadcast_ss(xb + r * b_row + v), c);
        _mm256_storeu_ps(acc + 8 * b, c);
    }
}

/* Rows [h0, h1] of one dy plane against x plane bp for kernel offsets (kd, kh, all kw). */
static void bww1_rows(const bww1_t *w, float *acc_kh, const float *ap, const float *bp, int64_t h0, int64_t h1,
                      int64_t kh) {
    static void (*const fns[4])(float *, int64_t, const float *, int64_t, int64_t, const float *, int64_t, int64_t,
                                int64_t) = {tile1_1, tile1_2, tile1_3, tile1_4};
    const int64_t AW = w->ad[2], BW = w->bd[2], ca8 = w->cab * 8, a_blk = w->ad[0] * w->ad[1] * AW * 8;
    const float *a = ap + h0 * AW * 8, *xb = bp + (h0 + kh - w->p[1]) * BW;
    int64_t rows = h1 - h0 + 1;
    for (int64_t kw0 = 0; kw0 < w->k[2]; kw0 += 3) {
        int64_t lo[3], hi[3], nt = w->k[2] - kw0 < 3 ? w->k[2] - kw0 : 3, c0 = 0, c1 = AW - 1;
        for (int t = 0; t < nt; t++) {
            valid_range(AW, BW, kw0 + t, 1, w->p[2], &lo[t], &hi[t]);
            if (lo[t] > c0) c0 = lo[t];
            if (hi[t] < c1) c1 = hi[t];
        }
        if (nt == 3 && c0 <= c1) /* the interior: every offset of the group valid */
            for (int64_t b = 0; b < w->cab; b += 4)
                fns[(w->cab - b < 4 ? w->cab - b : 4) - 1](acc_kh + kw0 * ca8 + b * 8, ca8, a + b * a_blk + c0 * 8,
                                                          a_blk, AW * 8, xb + c0 + kw0 - w->p[2], BW, rows, c1 - c0 + 1);
        else
            c0 = 1, c1 = 0; /* no interior: every column below */
        for (int t = 0; t < nt; t++) { /* the columns outside the interior */
            const float *xt = xb + kw0 + t - w->p[2];
            float *acc_t = acc_kh + (kw0 + t) * ca8;
            int64_t l = lo[t], h = hi[t];
            if (c0 > c1) bww1_cols(acc_t, a, a_blk, AW * 8, xt, BW, rows, l, h, w->cab);
            else {
                if (l < c0) bww1_cols(acc_t, a, a_blk, AW * 8, xt, BW, rows, l, c0 - 1 < h ? c0 - 1 : h, w->cab);
                if (h > c1) bww1_cols(acc_t, a, a_blk, AW * 8, xt, BW, rows, c1 + 1 > l ? c1 + 1 : l, h, w->cab);
            }
        }
    }
}

/* Worker: tasks [begin, end) = (sample, dy plane); rows in chunks of about
 * 48 KB of dy so that a chunk stays in L1 across its nine (kd, kh) passes. */
static void bww1_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const bww1_t *w = ctx;
    const int64_t kv = w->k[0] * w->k[1] * w->k[2], ca8 = w->cab * 8, AH = w->ad[1], AW = w->ad[2];
    const int64_t chunk = AW * w->cab >= 3072 ? 1 : 3072 / (AW * w->cab);
    (void)worker;
    for (int64_t t = begin; t < end; t++) {
        int64_t n = t / w->ad[0], ad = t % w->ad[0];
        float *acc = w->slabs + t * (kv + 1) * ca8; /* kv rows of weights, one of bias */
        memset(acc, 0, (size_t)(kv * ca8) * sizeof(float));
        const float *ap = w->dy + (n * w->cab * w->ad[0] + ad) * AH * AW * 8;
        double bsum[MP_BWW1_MAX_BLOCKS * 8] = {0};
        for (int64_t r0 = 0; r0 < AH; r0 += chunk) {
            /* The bias gradient from the chunk while it is in cache (a
             * separate pass over dy: 16.8 instead of 15.1 ms at 64^3). */
            int64_t r1 = r0 + chunk < AH ? r0 + chunk : AH;
            for (int64_t b = 0; b < w->cab; b++)
                sum8(bsum + b * 8, ap + b * w->ad[0] * AH * AW * 8 + r0 * AW * 8, (r1 - r0) * AW);
            for (int64_t kd = 0; kd < w->k[0]; kd++) {
                int64_t bd = ad + kd - w->p[0];
                if (bd < 0 || bd >= w->bd[0]) continue;
                const float *bp = w->x + (n * w->bd[0] + bd) * w->bd[1] * w->bd[2];
                for (int64_t kh = 0; kh < w->k[1]; kh++) {
                    int64_t h0, h1;
                    valid_range(AH, w->bd[1], kh, 1, w->p[1], &h0, &h1);
                    if (h0 < r0) h0 = r0;
                    if (h1 > r0 + chunk - 1) h1 = r0 + chunk - 1;
                    if (h0 <= h1) bww1_rows(w, acc + (kd * w->k[1] + kh) * w->k[2] * ca8, ap, bp, h0, h1, kh);
                }
            }
        }
        for (int64_t c = 0; c < ca8; c++) acc[kv * ca8 + c] = (float)bsum[c];
    }
}
#endif

void mp_cpu_bww1_run(const mp_cpu_conv_desc_t *d, float *dw, float *db, const float *dy, const float *x,
                     void *scratch) {
#ifdef __AVX2__
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, 0);
    bww1_t w = {.dy = dy, .x = x, .cab = mp_cpu_blocks8(d->cout), .ad = {ys.d, ys.h, ys.w},
                .bd = {d->xs.d, d->xs.h, d->xs.w}, .slabs = scratch};
    for (int i = 0; i < 3; i++) w.k[i] = d->g.k[i], w.p[i] = d->g.p[i];
    int64_t tasks = ys.n * ys.d, kv = w.k[0] * w.k[1] * w.k[2], ca8 = w.cab * 8;
    mp_cpu_team_for(tasks, bww1_range, &w);
    /* Slabs in task order, in double: (Cout, 1, k) plain weights, bias. */
    for (int64_t co = 0; co < d->cout; co++)
        for (int64_t k = 0; k < kv + (db != NULL); k++) {
            double s = 0;
            for (int64_t t = 0; t < tasks; t++) s += w.slabs[(t * (kv + 1) + k) * ca8 + co];
            if (k < kv) dw[co * kv + k] = (float)s;
            else db[co] = (float)s;
        }
#else
    (void)d, (void)dw, (void)db, (void)dy, (void)x, (void)scratch; /* never supported without AVX2 */
#endif
}
#endif /* MP_HAVE_DNNL */
