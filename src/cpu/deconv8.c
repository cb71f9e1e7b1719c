/* Forward of a transposed convolution with kernel = stride and no padding
 * (the U-Net's upsampling) on nCdhw8c activations.
 *
 * Why: oneDNN 2.6 on AVX2 has only reference code for a blocked 3D
 * transposed conv, and its channels-last GEMM path runs at 25-60 GFLOP/s
 * plus two reorders. Without overlap, every output voxel s*v + k is a 1x1x1
 * conv of input voxel v with the weight slice of offset k: register-tiled
 * outer products, up to 6 voxels x 2 channel blocks: twelve FMA chains
 * (gconv8.c's register tile, with one tap and the bias as its start).
 * Backward-data is gconv8.c's (oneDNN's blocked kernel for short rows),
 * the weight gradient conv_bww8.c's. The plain-C reference is mp_ref_deconv3d_forward_f32
 * (src/ref), compared in tests/test_nn_cpu.c. */
#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"

#include <string.h>

typedef struct {
    const mp_cpu_conv_desc_t *d;
    float *out;            /* y */
    const float *in;       /* x */
    const float *w;        /* (kv, Cin, Cout8) */
    const float *bias;     /* padded to Cout8 (may be NULL) */
    int64_t ci, co, cib, cob; /* channels and 8-blocks of x and y */
    int64_t id[3], od[3];  /* spatial sizes of x and y */
} dc8_t;

int mp_cpu_deconv8_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src,
                             const dnnl_memory_desc_t *dst) {
#ifndef __AVX2__
    (void)src, (void)dst;
    return 0; /* builds without AVX2 keep oneDNN's paths */
#endif
    if (!d->transposed || d->post_lrelu) return 0;
    for (int i = 0; i < 3; i++)
        if (d->g.k[i] != d->g.s[i] || d->g.p[i] != 0) return 0;
    return mp_cpu_bww8_supported(d, src, dst);
}

size_t mp_cpu_deconv8_weight_floats(const mp_cpu_conv_desc_t *d) {
    return (size_t)(d->g.k[0] * d->g.k[1] * d->g.k[2] * d->xs.c * mp_cpu_blocks8(d->cout) * 8);
}

/* Plain (Cin, Cout, kv) weights into (kv, Cin, Cout8); padding lanes are zero. */
void mp_cpu_deconv8_pack_weights(const mp_cpu_conv_desc_t *d, float *packed, const float *w) {
    const int64_t ci = d->xs.c, co = d->cout, kv = d->g.k[0] * d->g.k[1] * d->g.k[2], cp = mp_cpu_blocks8(co) * 8;
    memset(packed, 0, mp_cpu_deconv8_weight_floats(d) * sizeof(float));
    for (int64_t i = 0; i < ci; i++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t k = 0; k < kv; k++) packed[(k * ci + i) * cp + o] = w[(i * co + o) * kv + k];
}

#ifdef __AVX2__
/* Forward over input rows [begin, end) of (N, D, H): every output voxel
 * s*v + k of the row's voxels v, in tiles of up to 6 voxels x 2 blocks. */
static void fwd_rows(void *ctx, int64_t begin, int64_t end, int worker) {
    const dc8_t *t = ctx;
    const mp_conv_geom_t *g = &t->d->g;
    const int64_t isp = t->id[0] * t->id[1] * t->id[2], osp = t->od[0] * t->od[1] * t->od[2];
    const int64_t W = t->id[2], cop = t->cob * 8, zero = 0; /* one tap, at the tile's voxel */
    (void)worker;
    for (int64_t r = begin; r < end; r++) {
        int64_t n = r / (t->id[0] * t->id[1]), idd = r / t->id[1] % t->id[0], ih = r % t->id[1];
        const float *xrow = t->in + (n * t->cib * isp + (idd * t->id[1] + ih) * W) * 8;
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++) {
                    int64_t k = (kd * g->k[1] + kh) * g->k[2] + kw;
                    int64_t orow = ((idd * g->s[0] + kd) * t->od[1] + ih * g->s[1] + kh) * t->od[2] + kw;
                    for (int64_t ob = 0; ob < t->cob; ob += 2) {
                        int nb = t->cob - ob >= 2 ? 2 : 1;
                        float *yb = t->out + ((n * t->cob + ob) * osp + orow) * 8;
                        const float *w = t->w + k * t->ci * cop + ob * 8;
                        const float *bias = t->bias ? t->bias + ob * 8 : NULL;
                        for (int64_t iw = 0; iw < W;) {
                            int nv = mp_cpu_tile8_voxels(W - iw);
                            mp_cpu_tile8(nv, nb, yb + iw * g->s[2] * 8, g->s[2] * 8, osp * 8, xrow + iw * 8, 8, isp * 8,
                                         t->ci, 1, &zero, &w, cop, 0, bias);
                            iw += nv;
                        }
                    }
                }
    }
}

void mp_cpu_deconv8_forward(const mp_cpu_conv_desc_t *d, float *y, const float *x, const float *packed,
                            const float *bias8) {
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, 1);
    dc8_t t = {.d = d, .out = y, .in = x, .w = packed, .bias = bias8, .ci = d->xs.c, .co = d->cout,
               .cib = mp_cpu_blocks8(d->xs.c), .cob = mp_cpu_blocks8(d->cout), .id = {d->xs.d, d->xs.h, d->xs.w},
               .od = {ys.d, ys.h, ys.w}};
    mp_cpu_team_for(d->xs.n * d->xs.d * d->xs.h, fwd_rows, &t);
}
#else
void mp_cpu_deconv8_forward(const mp_cpu_conv_desc_t *d, float *y, const float *x, const float *packed,
                            const float *bias8) {
    (void)d, (void)y, (void)x, (void)packed, (void)bias8; /* never supported without AVX2 */
}
#endif /* __AVX2__ */

#endif /* MP_HAVE_DNNL */
