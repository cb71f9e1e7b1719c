/* nnU-Net's Dice + cross-entropy loss on plain fp32 logits (N, K, D, H, W)
 * and its gradient, on the thread team: the fast twin of
 * mp_ref_dc_ce_loss_f32 (src/ref), which tests/test_nn_cpu.c compares it to.
 *
 * Why: the reference takes 40 ms of a 64^3 step on one thread: a softmax in
 * double per voxel, computed twice (sums, then gradient). Here pass one
 * computes each voxel's softmax once in float, keeps it in dz and sums the
 * Dice terms; pass two turns it into the gradient in place. The voxels are
 * cut into LOSS_CHUNKS fixed ranges whose sums (double) are added in range
 * order, so the result does not depend on the thread count. */
#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"

#include <math.h>
#include <string.h>

#define LOSS_CHUNKS 64
#define LOSS_MAX_NK 32 /* samples x classes; beyond it the reference runs */
#define SLAB (1 + 3 * LOSS_MAX_NK) /* ce, then sum p*y, sum p, sum y per (n, c) */

int mp_cpu_dc_ce_loss_supported(mp_shape5_t s, const mp_loss_opts_t *o) {
    return s.c >= 1 && s.c > (o->do_bg ? 0 : 1) && s.n * s.c <= LOSS_MAX_NK;
}

typedef struct {
    float *dz;
    const float *z; /* (N, K, D, H, W) */
    const uint8_t *labels;
    int64_t n, k, sp, per, c0;
    double *slabs;           /* (LOSS_CHUNKS, SLAB) */
    double ga[LOSS_MAX_NK];  /* pass two: the Dice gradient for c == label, */
    double gb[LOSS_MAX_NK];  /* and for every c >= c0, per (Dice group, c) */
    double wce, nvox, scale;
    int batch_dice;
} loss_ctx_t;

/* Pass one over voxel chunks [begin, end): softmax into dz (when given),
 * cross-entropy and the Dice sums into each chunk's slab. */
static void sums_range(void *ctx, int64_t begin, int64_t end, int worker) {
    loss_ctx_t *c = ctx;
    const int64_t k = c->k, sp = c->sp;
    (void)worker;
    for (int64_t ch = begin; ch < end; ch++) {
        double *sl = c->slabs + ch * SLAB, *si = sl + 1, *sp_ = si + LOSS_MAX_NK, *sg = sp_ + LOSS_MAX_NK;
        memset(sl, 0, SLAB * sizeof(double));
        int64_t i1 = (ch + 1) * c->per < c->n * sp ? (ch + 1) * c->per : c->n * sp;
        int64_t n = ch * c->per / sp, v = ch * c->per % sp; /* (sample, voxel) of i, stepped below */
        for (int64_t i = ch * c->per; i < i1; i++, v = v + 1 < sp ? v + 1 : (n++, 0)) {
            int64_t t = c->labels[i];
            const float *z = c->z + n * k * sp + v;
            float mx = z[0], e[LOSS_MAX_NK], sum = 0;
            for (int64_t j = 1; j < k; j++) mx = z[j * sp] > mx ? z[j * sp] : mx;
            for (int64_t j = 0; j < k; j++) sum += (e[j] = expf(z[j * sp] - mx));
            float inv = 1.0f / sum;
            sl[0] -= (double)(z[(t < k ? t : 0) * sp] - mx) - log((double)sum);
            for (int64_t j = 0; j < k; j++) {
                float p = e[j] * inv;
                if (c->dz) c->dz[(n * k + j) * sp + v] = p;
                sp_[n * k + j] += p;
            }
            if (t < k) si[n * k + t] += e[t] * inv, sg[n * k + t] += 1;
        }
    }
}

/* Pass two: dz (holding the softmax) becomes the scaled gradient. */
static void grad_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const loss_ctx_t *c = ctx;
    const int64_t k = c->k, sp = c->sp;
    (void)worker;
    for (int64_t ch = begin; ch < end; ch++) {
        int64_t i1 = (ch + 1) * c->per < c->n * sp ? (ch + 1) * c->per : c->n * sp;
        int64_t n = ch * c->per / sp, v = ch * c->per % sp;
        for (int64_t i = ch * c->per; i < i1; i++, v = v + 1 < sp ? v + 1 : (n++, 0)) {
            int64_t t = c->labels[i], g = (c->batch_dice ? 0 : n) * k;
            float *dz = c->dz + n * k * sp + v;
            double dot = 0, gp[LOSS_MAX_NK];
            for (int64_t j = 0; j < k; j++) {
                gp[j] = j < c->c0 ? 0 : c->gb[g + j] + (j == t ? c->ga[g + j] : 0);
                dot += gp[j] * dz[j * sp];
            }
            for (int64_t j = 0; j < k; j++) {
                double p = dz[j * sp], ce = c->wce * (p - (j == t ? 1.0 : 0.0)) / c->nvox;
                dz[j * sp] = (float)((p * (gp[j] - dot) + ce) * c->scale);
            }
        }
    }
}

double mp_cpu_dc_ce_loss_f32(float *dz, const float *z, const uint8_t *labels, mp_shape5_t s, const mp_loss_opts_t *o,
                             double scale) {
    double slabs[LOSS_CHUNKS * SLAB];
    int64_t sp = s.d * s.h * s.w, k = s.c, nk = s.n * k;
    loss_ctx_t c = {.dz = dz, .z = z, .labels = labels, .n = s.n, .k = k, .sp = sp, .c0 = o->do_bg ? 0 : 1,
                    .per = (s.n * sp + LOSS_CHUNKS - 1) / LOSS_CHUNKS, .slabs = slabs, .wce = o->weight_ce,
                    .nvox = (double)(s.n * sp), .scale = scale, .batch_dice = o->batch_dice};
    mp_cpu_team_for(LOSS_CHUNKS, sums_range, &c);
    double ce = 0, si[LOSS_MAX_NK] = {0}, spd[LOSS_MAX_NK] = {0}, sg[LOSS_MAX_NK] = {0};
    for (int64_t ch = 0; ch < LOSS_CHUNKS; ch++) {
        const double *sl = slabs + ch * SLAB;
        ce += sl[0];
        for (int64_t j = 0; j < nk; j++) {
            si[j] += sl[1 + j], spd[j] += sl[1 + LOSS_MAX_NK + j], sg[j] += sl[1 + 2 * LOSS_MAX_NK + j];
        }
    }
    if (o->batch_dice)
        for (int64_t n = 1; n < s.n; n++)
            for (int64_t j = 0; j < k; j++) si[j] += si[n * k + j], spd[j] += spd[n * k + j], sg[j] += sg[n * k + j];
    int64_t ng = o->batch_dice ? 1 : s.n;
    double groups = (double)(ng * (k - c.c0)), dsum = 0;
    for (int64_t g = 0; g < ng; g++)
        for (int64_t j = c.c0; j < k; j++) {
            double den = fmax(sg[g * k + j] + spd[g * k + j] + o->smooth, 1e-8);
            dsum += (2 * si[g * k + j] + o->smooth) / den;
            /* d(Dice term)/dp = [c == label] * 2 / den - (2 I + smooth) / den^2 */
            c.ga[g * k + j] = -o->weight_dice * 2.0 / den / groups;
            c.gb[g * k + j] = o->weight_dice * (2 * si[g * k + j] + o->smooth) / (den * den) / groups;
        }
    if (dz) mp_cpu_team_for(LOSS_CHUNKS, grad_range, &c);
    return o->weight_ce * ce / c.nvox - o->weight_dice * dsum / groups;
}
#endif /* MP_HAVE_DNNL */
