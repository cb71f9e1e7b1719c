/* medpipe neural networks: 5D tensor shapes, layer geometry, the nnU-Net
 * loss, the plain convolutional U-Net with its training step, optimizers,
 * learning-rate schedule and safetensors checkpoints.
 *
 * Activations are (N, C, D, H, W) with W fastest. The fast engine (oneDNN,
 * src/cpu) keeps them in blocked layouts chosen by oneDNN; the reference
 * engine (src/ref) in plain arrays. Parameters, gradients and optimizer state
 * each live in one contiguous fp32 buffer (the master copy; reduced-precision
 * compute converts from it when the layer weights are laid out). */
#ifndef MEDPIPE_NN_H
#define MEDPIPE_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- shapes and geometry ---- */
typedef struct {
    int64_t n, c, d, h, w;
} mp_shape5_t;

/* Elements of a shape (0 when a dimension is not positive). */
int64_t mp_shape5_elems(mp_shape5_t s);

/* Convolution geometry along (D, H, W): kernel, stride, symmetric padding. */
typedef struct {
    int64_t k[3], s[3], p[3];
} mp_conv_geom_t;

/* Output shape of a convolution (transposed = 0) or transposed convolution:
 * conv: (in + 2p - k) / s + 1; transposed: (in - 1) * s - 2p + k. */
mp_shape5_t mp_conv_out_shape(mp_shape5_t xs, int64_t cout, const mp_conv_geom_t *g, int transposed);

/* Compute data types. Parameters are always kept in fp32 (master weights);
 * the compute type is what the layers run in. */
typedef enum { MP_NN_F32 = 0, MP_NN_BF16, MP_NN_F16, MP_NN_F64 } mp_nn_dtype_t;

/* ---- loss: nnU-Net's DC_and_CE_loss (weights 1:1, MemoryEfficientSoftDiceLoss) ---- */
typedef struct {
    double smooth;      /* 1e-5 */
    int batch_dice;     /* 1: Dice sums over the batch before the ratio */
    int do_bg;          /* 0: background (class 0) left out of the Dice term */
    double weight_ce;   /* 1 */
    double weight_dice; /* 1 */
} mp_loss_opts_t;

void mp_loss_opts_init(mp_loss_opts_t *o);

#ifdef __cplusplus
}
#endif
#endif
