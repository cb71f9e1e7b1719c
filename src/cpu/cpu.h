/* The fast CPU engine: oneDNN convolutions and transposed convolutions
 * (forward, backward-data, backward-weights) in the blocked layouts oneDNN
 * chooses, and hand-written kernels that work directly on those layouts
 * (instance norm fused with LeakyReLU, concatenation, accumulation).
 *
 * Activations are described by a layout nCdhw<B>c: B channels innermost,
 * channels padded to a multiple of B (B = 1 is the plain NCDHW array). The
 * padded channels are always zero. Weights and biases are passed in PyTorch's
 * plain layout (the fp32 master copy); each layer reorders them into the
 * layout its primitives want, in buffers it allocates once at creation.
 * All primitives use a caller-provided scratchpad: nothing is allocated while
 * a layer runs. */
#ifndef MP_CPU_H
#define MP_CPU_H

#include "medpipe/core.h"
#include "medpipe/nn.h"

#include <oneapi/dnnl/dnnl.h>

/* Runs a oneDNN call inside a function with `int rc` and a `fail:` label:
 * a failure sets rc (MP_ERR_UNSUPPORTED for dnnl_unimplemented) and jumps there. */
#define DNNL_CHECK(call)                                                                            \
    do {                                                                                            \
        dnnl_status_t st_ = (call);                                                                 \
        if (st_ != dnnl_success) {                                                                  \
            rc = mp_error_set(st_ == dnnl_unimplemented ? MP_ERR_UNSUPPORTED : MP_ERR_INTERNAL,      \
                              "oneDNN: %s failed (status %d)", #call, (int)st_);                     \
            goto fail;                                                                              \
        }                                                                                           \
    } while (0)

/* A blocked activation layout nCdhw<block>c; channels last (ndhwc) is the
 * case block = C. */
typedef struct {
    int64_t n, c, cpad, block, sp; /* sp = D*H*W */
    int64_t d, h, w;
} mp_cpu_layout_t;

/* Engine and stream shared by every primitive (created on first use). */
dnnl_engine_t mp_cpu_engine(void);
dnnl_stream_t mp_cpu_stream(void);
/* The activation layout oneDNN prefers for a 3x3x3 conv with c channels on
 * this CPU: a block size (8, 16) or 0 for channels last. */
int64_t mp_cpu_preferred_block(int64_t c);
/* Number of threads oneDNN (OpenMP) uses; n <= 0 leaves the default. */
void mp_cpu_set_threads(int n);
/* 1 when MEDPIPE_FORCE_REF=1 is set in the environment. */
int mp_cpu_force_ref_env(void);

/* Plain fp32 NCDHW descriptor of a shape. */
int mp_cpu_md_plain(dnnl_memory_desc_t *md, mp_shape5_t s);
/* Descriptor of a shape in nCdhw<block>c (block 1, 4, 8 or 16; 0: channels last, ndhwc). */
int mp_cpu_md_blocked(dnnl_memory_desc_t *md, mp_shape5_t s, int64_t block);
/* Layout of a descriptor; MP_ERR_UNSUPPORTED when it is not nCdhw<B>c or ndhwc dense. */
int mp_cpu_layout_from_md(mp_cpu_layout_t *l, const dnnl_memory_desc_t *md);
/* Bytes of a buffer holding md (padding included). */
size_t mp_cpu_md_bytes(const dnnl_memory_desc_t *md);
/* Blocks of 8 channels that hold c channels (nCdhw8c). */
static inline int64_t mp_cpu_blocks8(int64_t c) { return (c + 7) / 8; }
/* Flat index of (n, c, spatial s) in a layout. */
static inline int64_t mp_cpu_layout_index(const mp_cpu_layout_t *l, int64_t n, int64_t c, int64_t s) {
    return ((n * (l->cpad / l->block) + c / l->block) * l->sp + s) * l->block + c % l->block;
}

/* A persistent reorder between two descriptors (e.g. network input/output). */
typedef struct mp_cpu_reorder mp_cpu_reorder_t;
int mp_cpu_reorder_create(mp_cpu_reorder_t **out, const dnnl_memory_desc_t *dst_md, const dnnl_memory_desc_t *src_md);
int mp_cpu_reorder_run(mp_cpu_reorder_t *r, void *dst, const void *src);
void mp_cpu_reorder_free(mp_cpu_reorder_t *r);
/* One-off reorder (creates and frees the primitive): tests and build time. */
int mp_cpu_reorder_once(void *dst, const dnnl_memory_desc_t *dst_md, const void *src, const dnnl_memory_desc_t *src_md);

/* ---- convolution / transposed convolution layer ---- */
typedef struct {
    mp_shape5_t xs;   // (N, Cin, D, H, W)
    int64_t cout;
    mp_conv_geom_t g;
    int transposed;   /* weights (Cin, Cout, k) instead of (Cout, Cin, k) */
    int bias;
    int post_lrelu;   /* fuse LeakyReLU(post_slope) into the forward output */
    double post_slope;
    int backward;     /* also create backward-data and backward-weights primitives */
    const dnnl_memory_desc_t *src_md; /* layout of x; NULL lets oneDNN choose */
    const dnnl_memory_desc_t *dst_md; /* layout of y; NULL lets oneDNN choose */
} mp_cpu_conv_desc_t;

typedef struct mp_cpu_conv mp_cpu_conv_t;

int mp_cpu_conv_create(mp_cpu_conv_t **out, const mp_cpu_conv_desc_t *d);
void mp_cpu_conv_free(mp_cpu_conv_t *c);
const dnnl_memory_desc_t *mp_cpu_conv_src_md(const mp_cpu_conv_t *c);
const dnnl_memory_desc_t *mp_cpu_conv_dst_md(const mp_cpu_conv_t *c);
/* Scratchpad bytes the layer's primitives need (the max of them). */
size_t mp_cpu_conv_scratch_bytes(const mp_cpu_conv_t *c);
/* Scratchpad bytes of one pass: 0 forward, 1 backward data, 2 backward weights. */
size_t mp_cpu_conv_scratch_pass_bytes(const mp_cpu_conv_t *c, int pass);
/* oneDNN implementation names (fwd / bwd data / bwd weights), for logs. */
const char *mp_cpu_conv_impl(const mp_cpu_conv_t *c, int which);

/* y = act(conv(x, w) + b); y and x in the layer's dst/src layouts, w and b plain. */
int mp_cpu_conv_forward(mp_cpu_conv_t *c, float *y, const float *x, const float *w, const float *b, void *scratch);
/* dx = conv_backward_data(dy, w). Each pass lays the plain weights out in
 * its own scratch, so the scratch must not be shared by passes in flight. */
int mp_cpu_conv_backward_data(mp_cpu_conv_t *c, float *dx, const float *dy, const float *w, void *scratch);
/* dw, db (plain; db may be NULL when the layer has no bias) from dy and x. */
int mp_cpu_conv_backward_weights(mp_cpu_conv_t *c, float *dw, float *db, const float *dy, const float *x,
                                 void *scratch);

/* ---- weight gradient on nCdhw8c activations (conv_bww8.c) ----
 * For a conv layer (or transposed conv) whose x and dy are both nCdhw8c:
 * dw plain (as mp_cpu_conv_backward_weights), db (may be NULL) from dy and x;
 * scratch holds mp_cpu_bww8_scratch_bytes. Any kernel, stride and padding. */
int mp_cpu_bww8_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst);
size_t mp_cpu_bww8_scratch_bytes(const mp_cpu_conv_desc_t *d);
void mp_cpu_bww8_run(const mp_cpu_conv_desc_t *d, float *dw, float *db, const float *dy, const float *x, void *scratch);
/* The same for a stride-1 conv with one input channel (plain x) and dy in
 * nCdhw8c: the U-Net's input conv; scratch holds mp_cpu_bww1_scratch_bytes. */
int mp_cpu_bww1_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst);
size_t mp_cpu_bww1_scratch_bytes(const mp_cpu_conv_desc_t *d);
void mp_cpu_bww1_run(const mp_cpu_conv_desc_t *d, float *dw, float *db, const float *dy, const float *x, void *scratch);

/* ---- backward-data of strided and transposed convs on nCdhw8c (gconv8.c) ----
 * supported: AVX2, both activations nCdhw8c, a stride > 1 or a transposed
 * conv (MEDPIPE_NO_GCONV8=1 turns it off). Weights are packed per call
 * (plain in, mp_cpu_gconv8_weight_floats out). */
int mp_cpu_gconv8_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst);
size_t mp_cpu_gconv8_weight_floats(const mp_cpu_conv_desc_t *d);
void mp_cpu_gconv8_pack_weights(const mp_cpu_conv_desc_t *d, float *packed, const float *w);
void mp_cpu_gconv8_backward_data(const mp_cpu_conv_desc_t *d, float *dx, const float *dy, const float *packed);
#ifdef __AVX2__
/* Their register tile (1-6 voxels x 1-2 blocks of 8 outputs), also the
 * upsampling forward's: out[j][b] = start + sum over taps t and input
 * channels c of in[toff[t] + j * xv + (c / 8) * xb + c % 8] * tw[t][c * wr +
 * 8 b ..]; out voxels ov floats apart, blocks ob apart; start: out itself
 * when add, else bias[8 b ..] when bias, else zero. tile8_voxels: the size
 * of the next tile when rem voxels are left. */
void mp_cpu_tile8(int nv, int nb, float *out, int64_t ov, int64_t ob, const float *in, int64_t xv, int64_t xb,
                  int64_t co, int ntaps, const int64_t *toff, const float *const *tw, int64_t wr, int add,
                  const float *bias);
int mp_cpu_tile8_voxels(int64_t rem);
#endif

/* ---- nnU-Net's Dice + CE loss on fp32 logits (loss.c) ----
 * The fast twin of mp_ref_dc_ce_loss_f32, same arguments and result; dz
 * may be NULL. supported: at most 32 (samples x classes). */
int mp_cpu_dc_ce_loss_supported(mp_shape5_t s, const mp_loss_opts_t *o);
double mp_cpu_dc_ce_loss_f32(float *dz, const float *z, const uint8_t *labels, mp_shape5_t s, const mp_loss_opts_t *o,
                             double scale);

/* ---- upsampling forward on nCdhw8c (deconv8.c) ----
 * A transposed conv with kernel = stride and no padding. Weights are packed
 * first (plain (Cin, Cout, k)) into mp_cpu_deconv8_weight_floats floats;
 * bias8 is the bias padded to a multiple of 8 (or NULL). */
int mp_cpu_deconv8_supported(const mp_cpu_conv_desc_t *d, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst);
size_t mp_cpu_deconv8_weight_floats(const mp_cpu_conv_desc_t *d);
void mp_cpu_deconv8_pack_weights(const mp_cpu_conv_desc_t *d, float *packed, const float *w);
void mp_cpu_deconv8_forward(const mp_cpu_conv_desc_t *d, float *y, const float *x, const float *packed,
                            const float *bias8);

/* ---- kernels on blocked layouts (pool may be NULL) ---- */
/* Instance norm over each (n, c), affine, then LeakyReLU(slope) if act.
 * mean/rstd: N*C values, saved for the backward pass. */
void mp_cpu_inorm_forward(mp_pool_t *pool, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                          const float *beta, const mp_cpu_layout_t *l, double eps, int act, double slope);
/* The forward's output again from x and the statistics it saved, bit for bit
 * (a training step keeps x and recomputes y for the backward pass). */
void mp_cpu_inorm_apply(mp_pool_t *pool, float *y, const float *x, const float *mean, const float *rstd,
                        const float *gamma, const float *beta, const mp_cpu_layout_t *l, int act, double slope);
/* Backward of the above: dx, and dgamma/dbeta (C values each, overwritten).
 * The LeakyReLU mask is recomputed from x, the statistics, gamma and beta;
 * dx may equal dy (in place); work holds 2*N*C floats. */
void mp_cpu_inorm_backward(mp_pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *gamma, const float *beta,
                           const mp_cpu_layout_t *l, int act, double slope, float *work);
/* y = cat(a, b) along channels, and its backward (split). */
void mp_cpu_concat_forward(mp_pool_t *pool, float *y, const float *a, const float *b, const mp_cpu_layout_t *ly,
                           const mp_cpu_layout_t *la, const mp_cpu_layout_t *lb);
void mp_cpu_concat_backward(mp_pool_t *pool, float *da, float *db, const float *dy, const mp_cpu_layout_t *ly,
                            const mp_cpu_layout_t *la, const mp_cpu_layout_t *lb);
/* Runs fn over [0, n) split in static chunks over oneDNN's OpenMP team
 * (serially without one); calls made inside run single-threaded. */
void mp_cpu_team_for(int64_t n, mp_range_fn fn, void *ctx);
/* dst += src over n floats (gradient accumulation). */
void mp_cpu_add(mp_pool_t *pool, float *dst, const float *src, int64_t n);
/* LeakyReLU backward from the output y (valid for slope >= 0): dx = dy * (y > 0 ? 1 : slope). */
void mp_cpu_lrelu_backward_from_output(mp_pool_t *pool, float *dx, const float *dy, const float *y, int64_t n,
                                       double slope);

/* Sustained fp32 FMA rate of `threads` threads of the OpenMP team (12
 * independent 8-wide FMA chains each, for about `seconds`), in GFLOP/s:
 * the peak a benchmark reports its rate against. */
double mp_cpu_fma_peak_gflops(int threads, double seconds);

/* ---- standalone oneDNN layers (dnnl_layers.c) ----
 * Batch norm, (Leaky)ReLU and channel softmax, each a caller-owned struct
 * whose primitives are created once per shape by _init and run by
 * _forward/_backward on caller buffers: nothing is allocated while a layer
 * runs. Activations use the layout md given at init (NULL: plain ncdhw;
 * channels last or nCdhw<B>c also work). Per-channel vectors (gamma, beta,
 * mean, variance and their gradients) are plain arrays of C floats. */

/* One primitive with a memory object per execute argument, created once. */
typedef struct {
    dnnl_primitive_t prim;
    const char *impl;   /* oneDNN implementation name, for logs */
    int nargs;
    int arg[12];
    dnnl_memory_t mem[12];
    size_t scratch_bytes;
} mp_cpu_prim_t;

typedef struct {
    mp_shape5_t s;                /* (N, C, D, H, W) */
    const dnnl_memory_desc_t *md; /* layout of x, y, dx, dy; NULL: plain ncdhw */
    double eps;
    int relu;                     /* fuse ReLU into y (oneDNN fuse_norm_relu; slope 0 only) */
    int backward;                 /* also create the backward primitive */
} mp_cpu_bnorm_desc_t;

typedef struct {
    mp_cpu_bnorm_desc_t d;
    dnnl_memory_desc_t md;
    mp_cpu_prim_t fwd, bwd;
    size_t scratch_bytes;   /* scratchpad for either pass */
    size_t ws_bytes;        /* workspace the fused ReLU's mask needs (0 without relu) */
} mp_cpu_bnorm_t;

/* Batch norm in training mode: statistics over N, D, H, W per channel
 * (biased variance), affine gamma/beta. */
int mp_cpu_bnorm_init(mp_cpu_bnorm_t *b, const mp_cpu_bnorm_desc_t *d);
void mp_cpu_bnorm_deinit(mp_cpu_bnorm_t *b);
/* y = [relu](gamma * (x - mean) / sqrt(var + eps) + beta); writes the batch
 * mean and variance (C values each) and, with relu, ws (ws_bytes). */
int mp_cpu_bnorm_forward(mp_cpu_bnorm_t *b, float *y, float *mean, float *var, void *ws, const float *x,
                         const float *gamma, const float *beta, void *scratch);
/* dx, dgamma, dbeta (overwritten) from dy and the forward's x, mean, var
 * (and ws with relu); gamma and beta as given to the forward. */
int mp_cpu_bnorm_backward(mp_cpu_bnorm_t *b, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *mean, const float *var, const void *ws, const float *gamma, const float *beta,
                          void *scratch);

typedef struct {
    mp_shape5_t s;
    dnnl_memory_desc_t md;
    double slope;
    mp_cpu_prim_t fwd, bwd;
    size_t scratch_bytes;
} mp_cpu_relu_t;

/* LeakyReLU(slope) (slope 0: ReLU) on shape s in layout md (NULL: plain). */
int mp_cpu_relu_init(mp_cpu_relu_t *r, mp_shape5_t s, const dnnl_memory_desc_t *md, double slope, int backward);
void mp_cpu_relu_deinit(mp_cpu_relu_t *r);
/* y = x > 0 ? x : slope * x; y may equal x. */
int mp_cpu_relu_forward(mp_cpu_relu_t *r, float *y, const float *x, void *scratch);
/* dx = dy * (x > 0 ? 1 : slope), from the forward's input x; dx may equal dy. */
int mp_cpu_relu_backward(mp_cpu_relu_t *r, float *dx, const float *dy, const float *x, void *scratch);

typedef struct {
    mp_shape5_t s;
    dnnl_memory_desc_t md;
    mp_cpu_prim_t fwd, bwd;
    size_t scratch_bytes;
} mp_cpu_softmax_t;

/* Softmax over the channel axis of (N, C, D, H, W) in layout md (NULL: plain). */
int mp_cpu_softmax_init(mp_cpu_softmax_t *sm, mp_shape5_t s, const dnnl_memory_desc_t *md, int backward);
void mp_cpu_softmax_deinit(mp_cpu_softmax_t *sm);
/* p = softmax(z) per voxel (max-subtracted). */
int mp_cpu_softmax_forward(mp_cpu_softmax_t *sm, float *p, const float *z, void *scratch);
/* dz = p * (dp - sum_c dp * p), from the forward's output p. */
int mp_cpu_softmax_backward(mp_cpu_softmax_t *sm, float *dz, const float *dp, const float *p, void *scratch);

#endif
