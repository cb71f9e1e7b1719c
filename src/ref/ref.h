/* Plain-C reference kernels of every neural-network layer and of the loss,
 * forward and backward, on plain (N, C, D, H, W) arrays with W fastest.
 * They are the test oracle and the engine behind MEDPIPE_FORCE_REF=1: simple
 * loops, no blocking, no threads. Each kernel exists for float (_f32) and
 * double (_f64, used by the finite-difference gradient checks); both are
 * generated from ref_layers_impl.h. Argument order: outputs, inputs, weights,
 * sizes. Backward kernels overwrite their outputs (no accumulation). */
#ifndef MP_REF_H
#define MP_REF_H

#include "medpipe/nn.h"

#include <stdint.h>

#define MP_REF_DECLARE(R, SFX)                                                                    \
    /* y = conv(x, w) + b; w (Cout, Cin, kD, kH, kW) as in PyTorch; b may be NULL. */             \
    void mp_ref_conv3d_forward_##SFX(R *y, const R *x, const R *w, const R *b, mp_shape5_t xs,      \
                                     int64_t cout, const mp_conv_geom_t *g);                        \
    void mp_ref_conv3d_backward_data_##SFX(R *dx, const R *dy, const R *w, mp_shape5_t xs,          \
                                           int64_t cout, const mp_conv_geom_t *g);                  \
    /* db may be NULL. */                                                                         \
    void mp_ref_conv3d_backward_weights_##SFX(R *dw, R *db, const R *dy, const R *x, mp_shape5_t xs, \
                                              int64_t cout, const mp_conv_geom_t *g);               \
    /* Transposed conv: w (Cin, Cout, kD, kH, kW) as PyTorch's ConvTranspose3d. */                \
    void mp_ref_deconv3d_forward_##SFX(R *y, const R *x, const R *w, const R *b, mp_shape5_t xs,    \
                                       int64_t cout, const mp_conv_geom_t *g);                      \
    void mp_ref_deconv3d_backward_data_##SFX(R *dx, const R *dy, const R *w, mp_shape5_t xs,        \
                                             int64_t cout, const mp_conv_geom_t *g);                \
    void mp_ref_deconv3d_backward_weights_##SFX(R *dw, R *db, const R *dy, const R *x,              \
                                                mp_shape5_t xs, int64_t cout,                       \
                                                const mp_conv_geom_t *g);                           \
    /* Instance norm (stats per sample and channel) or batch norm (per channel over the     \
     * batch), training mode, biased variance; mean/rstd hold N*C (IN) or C (BN) values. */     \
    void mp_ref_norm_forward_##SFX(R *y, R *mean, R *rstd, const R *x, const R *gamma,           \
                                   const R *beta, mp_shape5_t s, int per_sample, double eps);       \
    void mp_ref_norm_backward_##SFX(R *dx, R *dgamma, R *dbeta, const R *dy, const R *x,          \
                                    const R *mean, const R *rstd, const R *gamma, mp_shape5_t s,    \
                                    int per_sample);                                                \
    /* LeakyReLU (slope 0 is ReLU). Backward uses the input x (or the output: same sign). */     \
    void mp_ref_lrelu_forward_##SFX(R *y, const R *x, int64_t n, double slope);                   \
    void mp_ref_lrelu_backward_##SFX(R *dx, const R *dy, const R *x, int64_t n, double slope);     \
    /* y = cat(a, b) along channels; a (N, Ca, ...), b (N, Cb, ...), same spatial size. */        \
    void mp_ref_concat_forward_##SFX(R *y, const R *a, const R *b, mp_shape5_t as, int64_t cb);   \
    void mp_ref_concat_backward_##SFX(R *da, R *db, const R *dy, mp_shape5_t as, int64_t cb);     \
    /* Softmax over channels. */                                                                  \
    void mp_ref_softmax_forward_##SFX(R *p, const R *z, mp_shape5_t s);                            \
    void mp_ref_softmax_backward_##SFX(R *dz, const R *dp, const R *p, mp_shape5_t s);             \
    /* nnU-Net's DC_and_CE_loss on logits z (N, K, D, H, W) and labels (N, 1, D, H, W) in     \
     * [0, K): returns the loss; dz (may be NULL) receives dloss/dz times `scale`. */              \
    double mp_ref_dc_ce_loss_##SFX(R *dz, const R *z, const uint8_t *labels, mp_shape5_t s,       \
                                   const mp_loss_opts_t *o, double scale);

MP_REF_DECLARE(float, f32)
MP_REF_DECLARE(double, f64)

#endif
