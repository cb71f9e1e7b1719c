/* Backward-data of a strided convolution and of a transposed convolution on
 * nCdhw8c activations, as a gather: every voxel of dx sums its own taps, so
 * nothing is scattered and nothing needs zeroing first.
 *
 * Why: oneDNN 2.6 on AVX2 has only reference code for blocked strided 3D
 * backward-data; the engine ran it on channels-last copies (two reorders,
 * about 80 GFLOP/s), 3-4% of a U-Net step. Its blocked transposed-conv
 * backward-data (the upsampling's) runs jit but at 35-70 GFLOP/s.
 *
 * dx voxel i of a conv with stride s, kernel k and padding p meets dy voxel
 * j = (i + p - kk) / s for each kernel offset kk with s | (i + p - kk); along
 * w the voxels of one residue class r = i mod s see the same offsets, and j
 * steps by one from voxel to voxel. For a transposed conv j = i*s + kk - p
 * for every kk, stepping by s. So a row of dx is, per class, register tiles
 * of up to 6 voxels x 2 channel blocks (twelve FMA chains) summed over the
 * tile's taps and dy's channels, with edge voxels (where some taps fall
 * outside dy) done one by one. The plain-C references are
 * mp_ref_conv3d_backward_data_f32 and mp_ref_deconv3d_backward_data_f32
 * (src/ref), compared in tests/test_nn_cpu.c. */
#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"

#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define MAX_TAPS 343 /* kernels of up to 343 offsets (7x7x7), */
#define MAX_K 16     /* up to 16 along one axis */
#define CHUNK 32     /* dy channels per pass over a row (a multiple of 8) */
#define MIN_ROW 16   /* dx voxels per row and residue class, at least */

int mp_cpu_gconv8_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src,
                            const dnnl_memory_desc_t *dst) {
#ifndef __AVX2__
    (void)d, (void)src, (void)dst;
    return 0; /* builds without AVX2 keep oneDNN's paths */
#else
    const char *env = getenv("MEDPIPE_NO_GCONV8"); /* developer switch for side-by-side timing */
    if (env && env[0] == '1') return 0;
    if (d->g.k[0] * d->g.k[1] * d->g.k[2] > MAX_TAPS || d->g.k[0] > MAX_K || d->g.k[1] > MAX_K || d->g.k[2] > MAX_K)
        return 0;
    /* Stride-1 convs keep oneDNN's jit backward-data, which runs at forward speed. */
    if (!d->transposed && d->g.s[0] == 1 && d->g.s[1] == 1 && d->g.s[2] == 1) return 0;
    /* Rows of under 16 voxels per class (deep layers: 8^3 and below) leave
     * tiles too short and too many calls per FMA; oneDNN's paths run those
     * faster (at 8^3, 256->320 channels: 29 vs 14 ms per step). */
    if ((d->transposed ? d->xs.w : (d->xs.w + d->g.s[2] - 1) / d->g.s[2]) < MIN_ROW) return 0;
    return mp_cpu_bww8_supported(d, src, dst); /* both sides nCdhw8c */
#endif
}

/* The op reads dy (Cout channels) and writes dx (Cin channels). */
size_t mp_cpu_gconv8_weight_floats(const mp_cpu_conv_desc_t *d) {
    return (size_t)(d->g.k[0] * d->g.k[1] * d->g.k[2] * d->cout * mp_cpu_blocks8(d->xs.c) * 8);
}

/* Plain weights - (Cout, Cin, k) for a conv, (Cin, Cout, k) for a transposed
 * conv - into (k, Cout, Cin8); padding lanes are zero. */
void mp_cpu_gconv8_pack_weights(const mp_cpu_conv_desc_t *d, float *packed, const float *w) {
    const int64_t ci = d->xs.c, co = d->cout, kv = d->g.k[0] * d->g.k[1] * d->g.k[2], cp = mp_cpu_blocks8(ci) * 8;
    memset(packed, 0, mp_cpu_gconv8_weight_floats(d) * sizeof(float));
    for (int64_t o = 0; o < co; o++)
        for (int64_t i = 0; i < ci; i++) {
            const float *src = w + (d->transposed ? i * co + o : o * ci + i) * kv;
            for (int64_t k = 0; k < kv; k++) packed[(k * co + o) * cp + i] = src[k];
        }
}

#ifdef __AVX2__
typedef struct {
    const mp_cpu_conv_desc_t *d;
    float *dx;
    const float *dy, *w;     /* w: packed (k, Cout, Cin8) */
    int64_t co, cib, cob;    /* dy channels; 8-blocks of dx and dy */
    int64_t xd[3], yd[3];    /* spatial sizes of dx and dy */
} gc8_t;

/* Along one dimension: the kernel offsets that reach dx index i, and the dy
 * index each reaches; returns how many. */
static int dim_taps(const gc8_t *t, int dim, int64_t i, int64_t *kk, int64_t *jj) {
    const mp_conv_geom_t *g = &t->d->g;
    int n = 0;
    for (int64_t k = 0; k < g->k[dim]; k++) {
        int64_t j;
        if (t->d->transposed) j = i * g->s[dim] + k - g->p[dim];
        else {
            int64_t a = i + g->p[dim] - k;
            if (a < 0 || a % g->s[dim]) continue;
            j = a / g->s[dim];
        }
        if (j >= 0 && j < t->yd[dim]) kk[n] = k, jj[n++] = j;
    }
    return n;
}

/* The register tile (also deconv8.c's, through mp_cpu_tile8):
 * out[j][b] = init + sum over taps t and input channels c of
 * in(t, j, c) * w_t[c][b] for NV voxels j (out voxels ov floats apart,
 * blocks ob apart) and NB blocks b; in(t, j, c) = in[toff[t] + j * xv +
 * (c / 8) * xb + c % 8]; the rows of w_t are wr floats apart. init: out
 * itself when add, else bias[8 b..] when bias, else zero. */
#define GC8_SUM(NV, NB, XV)                                                                                    \
    for (int tp = 0; tp < ntaps; tp++) {                                                                       \
        const float *w = tw[tp];                                                                               \
        for (int64_t c0 = 0; c0 < co; c0 += 8) {                                                               \
            const float *ib = in + toff[tp] + (c0 / 8) * xb;                                                   \
            int64_t tn = co - c0 < 8 ? co - c0 : 8;                                                            \
            for (int64_t tt = 0; tt < tn; tt++) {                                                              \
                const float *wt = w + (c0 + tt) * wr;                                                          \
                __m256 w0 = _mm256_loadu_ps(wt), w1 = NB > 1 ? _mm256_loadu_ps(wt + 8) : w0;                   \
                _Pragma("GCC unroll 6") for (int j = 0; j < NV; j++) {                                         \
                    __m256 v = _mm256_broadcast_ss(ib + j * (XV) + tt);                                        \
                    acc[j][0] = _mm256_fmadd_ps(v, w0, acc[j][0]);                                            \
                    if (NB > 1) acc[j][NB - 1] = _mm256_fmadd_ps(v, w1, acc[j][NB - 1]);                       \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }
/* The loop comes twice: with dy voxels 8 floats apart (a conv's classes) as
 * a constant, the six broadcast addresses are one register plus immediates. */
#define GC8_TILE(NV, NB)                                                                                       \
    static void tile_##NV##x##NB(float *out, int64_t ov, int64_t ob, const float *in, int64_t xv, int64_t xb, \
                                 int64_t co, int ntaps, const int64_t *toff, const float *const *tw, int64_t wr,   \
                                 int add, const float *bias) {                                              \
        __m256 acc[NV][NB];                                                                                    \
        _Pragma("GCC unroll 6") for (int j = 0; j < NV; j++)                                                   \
            _Pragma("GCC unroll 2") for (int b = 0; b < NB; b++)                                           \
                acc[j][b] = add ? _mm256_loadu_ps(out + j * ov + b * ob)                                       \
                                : bias ? _mm256_loadu_ps(bias + 8 * b) : _mm256_setzero_ps();                  \
        if (xv == 8) {                                                                                         \
            GC8_SUM(NV, NB, 8)                                                                                 \
        } else {                                                                                               \
            GC8_SUM(NV, NB, xv)                                                                                \
        }                                                                                                      \
        _Pragma("GCC unroll 6") for (int j = 0; j < NV; j++)                                                   \
            _Pragma("GCC unroll 2") for (int b = 0; b < NB; b++) _mm256_storeu_ps(out + j * ov + b * ob, acc[j][b]); \
    }
GC8_TILE(1, 1)
GC8_TILE(2, 1)
GC8_TILE(3, 1)
GC8_TILE(4, 1)
GC8_TILE(5, 1)
GC8_TILE(6, 1)
GC8_TILE(1, 2)
GC8_TILE(2, 2)
GC8_TILE(3, 2)
GC8_TILE(4, 2)
GC8_TILE(5, 2)
GC8_TILE(6, 2)

typedef void (*tile_fn)(float *, int64_t, int64_t, const float *, int64_t, int64_t, int64_t, int, const int64_t *,
                        const float *const *, int64_t, int, const float *);

void mp_cpu_tile8(int nv, int nb, float *out, int64_t ov, int64_t ob, const float *in, int64_t xv, int64_t xb,
                  int64_t co, int ntaps, const int64_t *toff, const float *const *tw, int64_t wr, int add,
                  const float *bias) {
    static const tile_fn fns[2][6] = {{tile_1x1, tile_2x1, tile_3x1, tile_4x1, tile_5x1, tile_6x1},
                                      {tile_1x2, tile_2x2, tile_3x2, tile_4x2, tile_5x2, tile_6x2}};
    fns[nb - 1][nv - 1](out, ov, ob, in, xv, xb, co, ntaps, toff, tw, wr, add, bias);
}

/* Voxels of the next tile when rem are left: 6 (twelve FMA chains), but
 * 7 and 8 go 4 + 3 and 4 + 4 rather than leave a tile of 1 or 2. */
int mp_cpu_tile8_voxels(int64_t rem) {
    return rem <= 6 ? (int)rem : rem <= 8 ? 4 : 6;
}

/* The taps of one dx row (fixed n, d, h) for one w class: offsets in dy of
 * the class's voxel q = 0 (j0 + q * jstep along w for each w offset, so an
 * offset is valid for q in [qlo, qhi]) and their weight rows. */
typedef struct {
    int n;
    int64_t off[MAX_TAPS], qlo[MAX_TAPS], qhi[MAX_TAPS];
    const float *w[MAX_TAPS];
} taps_t;

static int64_t div_floor(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

/* Taps of class r along w for the row whose d and h taps are given. */
static void row_class_taps(const gc8_t *t, taps_t *tp, int64_t r, int64_t nq, int nd, const int64_t *kd,
                           const int64_t *jd, int nh, const int64_t *kh, const int64_t *jh) {
    const mp_conv_geom_t *g = &t->d->g;
    const int64_t YH = t->yd[1], YW = t->yd[2], cip = t->cib * 8;
    const int64_t jstep = t->d->transposed ? g->s[2] : 1;
    tp->n = 0;
    for (int64_t kw = 0; kw < g->k[2]; kw++) {
        int64_t j0; /* dy w index of class voxel q = 0 */
        if (t->d->transposed) j0 = kw - g->p[2];
        else {
            int64_t a = r + g->p[2] - kw;
            if (((a % g->s[2]) + g->s[2]) % g->s[2]) continue;
            j0 = div_floor(a, g->s[2]);
        }
        /* 0 <= j0 + q * jstep <= YW - 1 */
        int64_t lo = j0 >= 0 ? 0 : div_floor(-j0 + jstep - 1, jstep), hi = div_floor(YW - 1 - j0, jstep);
        if (hi > nq - 1) hi = nq - 1;
        if (lo > hi) continue;
        for (int a = 0; a < nd; a++)
            for (int b = 0; b < nh; b++) {
                int64_t k = (kd[a] * g->k[1] + kh[b]) * g->k[2] + kw;
                tp->off[tp->n] = ((jd[a] * YH + jh[b]) * YW + j0) * 8;
                tp->qlo[tp->n] = lo, tp->qhi[tp->n] = hi;
                tp->w[tp->n++] = t->w + k * t->co * cip;
            }
    }
}

/* Tiles of voxels [q0, q1] of one class, one dy channel chunk, every dx
 * block pair, over the taps sel[0..n) of tp; add: onto the partial sums. */
static void class_tiles(const gc8_t *t, const taps_t *tp, const int *sel, int n, float *xrow, const float *yc,
                        int64_t cn, int64_t c0, int64_t q0, int64_t q1, int64_t ostep, int add) {
    const int64_t jstep = t->d->transposed ? t->d->g.s[2] : 1, xsp = t->xd[0] * t->xd[1] * t->xd[2];
    const int64_t ysp = t->yd[0] * t->yd[1] * t->yd[2], cip = t->cib * 8;
    int64_t off[MAX_TAPS];
    const float *w[MAX_TAPS];
    for (int64_t ob = 0; ob < t->cib; ob += 2) {
        int nb = t->cib - ob >= 2 ? 2 : 1;
        for (int i = 0; i < n; i++) w[i] = tp->w[sel[i]] + c0 * cip + ob * 8;
        for (int64_t q = q0; q <= q1;) {
            int nv = mp_cpu_tile8_voxels(q1 - q + 1);
            for (int i = 0; i < n; i++) off[i] = tp->off[sel[i]] + q * jstep * 8;
            mp_cpu_tile8(nv, nb, xrow + q * ostep * 8 + ob * xsp * 8, ostep * 8, xsp * 8, yc, jstep * 8, ysp * 8, cn,
                         n, off, w, cip, add, NULL);
            q += nv;
        }
    }
}

/* One class of one dx row. Taps are grouped by the voxels where they are
 * valid (an interval: all of them but near the row's ends); each group runs
 * over its own interval, the group valid everywhere first, the others adding
 * to it. So every tile is a full-width tile, where single-voxel tiles at the
 * edges (two FMA chains, latency-bound) took most of the time of short rows.
 * Voxels no group covers first are zeroed. */
static void row_class(const gc8_t *t, const taps_t *tp, float *xrow, const float *yrow, int64_t nq, int64_t ostep) {
    const int64_t xsp = t->xd[0] * t->xd[1] * t->xd[2], ysp = t->yd[0] * t->yd[1] * t->yd[2];
    int sel[MAX_TAPS], ng = 0, gstart[MAX_K + 1], full = -1;
    int64_t glo[MAX_K], ghi[MAX_K];
    /* Group the taps by interval (at most one interval per w offset). */
    for (int i = 0; i < tp->n; i++) {
        int g = 0;
        while (g < ng && (glo[g] != tp->qlo[i] || ghi[g] != tp->qhi[i])) g++;
        if (g == ng) glo[ng] = tp->qlo[i], ghi[ng++] = tp->qhi[i];
    }
    int n = 0;
    for (int g = 0; g < ng; g++) {
        gstart[g] = n;
        for (int i = 0; i < tp->n; i++)
            if (tp->qlo[i] == glo[g] && tp->qhi[i] == ghi[g]) sel[n++] = i;
        if (glo[g] == 0 && ghi[g] == nq - 1) full = g;
    }
    gstart[ng] = n;
    if (full < 0) /* no group writes every voxel: start from zero */
        for (int64_t b = 0; b < t->cib; b++)
            for (int64_t q = 0; q < nq; q++) memset(xrow + q * ostep * 8 + b * xsp * 8, 0, 8 * sizeof(float));
    /* dy's channels in chunks of CHUNK, so that the chunk's weights for the
     * row's taps stay in L1 across its tiles; later chunks add on. */
    for (int64_t c0 = 0; c0 < t->co; c0 += CHUNK) {
        int64_t cn = t->co - c0 < CHUNK ? t->co - c0 : CHUNK;
        const float *yc = yrow + (c0 / 8) * ysp * 8;
        if (full >= 0)
            class_tiles(t, tp, sel + gstart[full], gstart[full + 1] - gstart[full], xrow, yc, cn, c0, 0, nq - 1,
                        ostep, c0 > 0);
        for (int g = 0; g < ng; g++)
            if (g != full)
                class_tiles(t, tp, sel + gstart[g], gstart[g + 1] - gstart[g], xrow, yc, cn, c0, glo[g], ghi[g],
                            ostep, 1);
    }
}

/* Worker over dx rows [begin, end) of (N, D, H). */
static void rows_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const gc8_t *t = ctx;
    const mp_conv_geom_t *g = &t->d->g;
    const int64_t ncls = t->d->transposed ? 1 : g->s[2], ostep = ncls;
    taps_t taps, *tp = &taps; /* about 11 KB of stack: no allocation inside a training step */
    int64_t kd[MAX_K], jd[MAX_K], kh[MAX_K], jh[MAX_K];
    (void)worker;
    for (int64_t row = begin; row < end; row++) {
        int64_t n = row / (t->xd[0] * t->xd[1]), i_d = row / t->xd[1] % t->xd[0], i_h = row % t->xd[1];
        int nd = dim_taps(t, 0, i_d, kd, jd), nh = dim_taps(t, 1, i_h, kh, jh);
        float *xrow = t->dx + (n * t->cib * t->xd[0] * t->xd[1] + i_d * t->xd[1] + i_h) * t->xd[2] * 8;
        const float *yrow = t->dy + n * t->cob * t->yd[0] * t->yd[1] * t->yd[2] * 8;
        for (int64_t r = 0; r < ncls && r < t->xd[2]; r++) {
            int64_t nq = (t->xd[2] - r + ostep - 1) / ostep;
            row_class_taps(t, tp, r, nq, nd, kd, jd, nh, kh, jh);
            row_class(t, tp, xrow + r * 8, yrow, nq, ostep);
        }
    }
}
#endif

void mp_cpu_gconv8_backward_data(const mp_cpu_conv_desc_t *d, float *dx, const float *dy, const float *packed) {
#ifdef __AVX2__
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, d->transposed);
    gc8_t t = {.d = d, .dx = dx, .dy = dy, .w = packed, .co = d->cout, .cib = mp_cpu_blocks8(d->xs.c),
               .cob = mp_cpu_blocks8(d->cout), .xd = {d->xs.d, d->xs.h, d->xs.w}, .yd = {ys.d, ys.h, ys.w}};
    mp_cpu_team_for(d->xs.n * d->xs.d * d->xs.h, rows_range, &t);
#else
    (void)d, (void)dx, (void)dy, (void)packed; /* never supported without AVX2 */
#endif
}
#endif /* MP_HAVE_DNNL */
