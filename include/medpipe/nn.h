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


/* ---- nnU-Net's plain convolutional U-Net ---- */
#define MP_UNET_MAX_STAGES 8

typedef enum {
    MP_NN_ENGINE_AUTO = 0, /* oneDNN unless MEDPIPE_FORCE_REF=1 (or oneDNN missing) */
    MP_NN_ENGINE_REF,      /* plain-C reference kernels everywhere */
    MP_NN_ENGINE_CPU       /* oneDNN (fails when oneDNN is missing) */
} mp_nn_engine_t;

typedef struct {
    int in_channels;               /* 1 */
    int num_classes;               /* 2 (background included) */
    int n_stages;                  /* 5 */
    int64_t features[MP_UNET_MAX_STAGES]; /* per stage; default 32 doubling, capped at 320 */
    int64_t kernel[MP_UNET_MAX_STAGES][3];  /* per stage, (D, H, W); default 3x3x3 */
    int64_t stride[MP_UNET_MAX_STAGES][3];  /* per stage; stage 0 is 1x1x1, others 2x2x2 */
    int n_conv_per_stage;          /* 2, encoder and decoder */
    double lrelu_slope;            /* 0.01 */
    double norm_eps;               /* 1e-5 */
    int deep_supervision;          /* 0: one output; 1: nnU-Net's weighted multi-scale loss */
    int64_t batch;                 /* N of the tensors the model is planned for */
    int64_t patch[3];              /* (D, H, W) */
    mp_nn_engine_t engine;
    mp_nn_dtype_t dtype;           /* MP_NN_F32; MP_NN_F64 with the reference engine (gradient checks) */
    int threads;                   /* <= 0: all CPUs */
} mp_unet_config_t;

/* Fills nnU-Net's defaults for 5 stages, 1 input channel, 2 classes, batch 2, 64^3. */
void mp_unet_config_default(mp_unet_config_t *c);
/* Sets features[s] = min(base * 2^s, cap) for the configured stages. */
void mp_unet_config_features(mp_unet_config_t *c, int64_t base, int64_t cap);

typedef struct mp_unet mp_unet_t;

/* A parameter tensor inside the parameter buffer. Names follow nnU-Net's
 * PyTorch module structure, e.g. "encoder.stages.0.0.convs.0.conv.weight". */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[5];
    int64_t offset;  /* in floats, into the parameter (and gradient) buffer */
    int64_t count;
} mp_param_info_t;

/* Plans the whole network: every primitive, the activation arena and the
 * parameter/gradient buffers are allocated here and never during a step. */
int mp_unet_create(mp_unet_t **out, const mp_unet_config_t *cfg);
void mp_unet_free(mp_unet_t *m);
const mp_unet_config_t *mp_unet_config(const mp_unet_t *m);
/* 1 when the reference engine runs (forced by config or MEDPIPE_FORCE_REF=1). */
int mp_unet_uses_ref(const mp_unet_t *m);

/* Parameter and gradient buffers: one contiguous fp32 slab each. */
int64_t mp_unet_param_count(const mp_unet_t *m);
float *mp_unet_params(mp_unet_t *m);
float *mp_unet_grads(mp_unet_t *m);
int mp_unet_n_tensors(const mp_unet_t *m);
const mp_param_info_t *mp_unet_tensor(const mp_unet_t *m, int i);
/* nnU-Net's initialisation (Kaiming normal a=0.01, fan_in; zero biases; norm
 * weight 1, bias 0), reproducible from the seed via Philox. */
void mp_unet_init_weights(mp_unet_t *m, uint64_t seed);

/* Forward pass: input (N, Cin, D, H, W) plain fp32; logits (N, K, D, H, W)
 * plain fp32 of the full-resolution output (may be NULL). */
int mp_unet_forward(mp_unet_t *m, float *logits, const float *input);
/* Forward pass and loss only (validation, gradient checks). lo may be NULL (defaults). */
int mp_unet_forward_loss(mp_unet_t *m, double *loss, const float *input, const uint8_t *labels,
                         const mp_loss_opts_t *lo);
/* Forward, loss (nnU-Net DC+CE, deep supervision if configured) and backward:
 * labels (N, 1, D, H, W) in [0, K). Gradients are overwritten. */
int mp_unet_forward_backward(mp_unet_t *m, double *loss, const float *input, const uint8_t *labels,
                             const mp_loss_opts_t *lo);
/* Called by mp_unet_forward_backward as soon as the gradient of one
 * parameter tensor is final: [offset, offset+count) of the gradient buffer,
 * in floats, where count includes the alignment padding after the tensor, so
 * that over one step the ranges tile [0, mp_unet_param_count) exactly once.
 * Order: first the tensors no op uses (heads without deep supervision: their
 * gradient is zero), then in reverse layer order, from the output head back to
 * the input conv, which is roughly from high offsets to low but not sorted.
 * It runs on the thread that called mp_unet_forward_backward. The network
 * does not touch the range again in this step, so the callee may start
 * reducing it in place (mp_dist_grad_hook). fn == NULL removes the hook. */
typedef void (*mp_grad_hook_fn)(void *user, int64_t offset, int64_t count);
void mp_unet_set_grad_hook(mp_unet_t *m, mp_grad_hook_fn fn, void *user);
/* Multiplies the loss gradient by `scale` before backward (mixed-precision
 * loss scaling; 1 by default): the gradients come out scaled, the reported
 * loss does not. */
void mp_unet_set_loss_scale(mp_unet_t *m, double scale);
/* Convolution FLOPs (multiply-add = 2) of one forward pass, and of a training
 * step (forward + backward data + backward weights). */
double mp_unet_flops_forward(const mp_unet_t *m);
double mp_unet_flops_train(const mp_unet_t *m);
/* Sustained fp32 FMA rate of `threads` threads of the engine's thread team,
 * measured for about `seconds` (the peak benchmark rates are reported
 * against); 0 without the oneDNN engine. */
double mp_nn_measure_fma_peak(int threads, double seconds);
/* Where a step's time goes (oneDNN engine; the reference engine records
 * only the loss). Off by default: timing every op costs two clock reads. */
typedef enum {
    MP_UNET_PROF_CONV_FWD = 0,   /* convolutions and transposed convolutions */
    MP_UNET_PROF_CONV_BWD_DATA,
    MP_UNET_PROF_CONV_BWD_WEIGHTS,
    MP_UNET_PROF_NORM_FWD,       /* instance norm + LeakyReLU */
    MP_UNET_PROF_NORM_RECOMPUTE, /* its output again for the backward pass */
    MP_UNET_PROF_NORM_BWD,
    MP_UNET_PROF_CONCAT,         /* forward and backward */
    MP_UNET_PROF_GRAD_ADD,       /* gradients of tensors used twice */
    MP_UNET_PROF_REORDER,        /* network input, logits and their gradient */
    MP_UNET_PROF_LOSS,
    MP_UNET_PROF_COUNT
} mp_unet_prof_t;

typedef struct {
    double seconds, flops;
    int64_t calls;
} mp_unet_prof_entry_t;

/* on: zero the counters and time every op from now on; 0: stop timing. */
void mp_unet_set_profiling(mp_unet_t *m, int on);
/* Totals per category since profiling was switched on. */
void mp_unet_profile(const mp_unet_t *m, mp_unet_prof_entry_t out[MP_UNET_PROF_COUNT]);
const char *mp_unet_prof_name(mp_unet_prof_t p);
/* The i-th (transposed) convolution in forward order: a description such as
 * "conv 32->64 64x64x64 s2", and its seconds per pass (forward, backward data,
 * backward weights) and FLOPs of one forward. MP_ERR_ARG past the last one. */
int mp_unet_profile_conv(const mp_unet_t *m, int i, char *desc, size_t desc_size, double seconds[3], double *flops);
/* Bytes of the activation arena and of the parameter-side buffers. */
size_t mp_unet_arena_bytes(const mp_unet_t *m);

/* ---- optimizers over the flat parameter buffer ---- */
typedef enum { MP_OPT_SGD = 0, MP_OPT_ADAMW } mp_opt_kind_t;

typedef struct {
    mp_opt_kind_t kind;
    double lr;            /* 1e-2 (SGD), 1e-3 (AdamW) */
    double momentum;      /* SGD: 0.99 */
    int nesterov;         /* SGD: 1 */
    double weight_decay;  /* SGD: 3e-5 (L2 added to the gradient); AdamW: decoupled, 0.01 */
    double beta1, beta2, eps; /* AdamW: 0.9, 0.999, 1e-8 */
    double clip_norm;     /* 12; <= 0 disables gradient-norm clipping */
} mp_opt_config_t;

void mp_opt_config_sgd(mp_opt_config_t *c);   /* nnU-Net's SGD */
void mp_opt_config_adamw(mp_opt_config_t *c);

typedef struct {
    mp_opt_config_t cfg;
    int64_t n;        /* parameters */
    int64_t step;     /* updates done */
    float *state;     /* one slab: SGD momentum (n) or AdamW m and v (2n) */
} mp_opt_t;

int mp_opt_init(mp_opt_t *o, const mp_opt_config_t *cfg, int64_t n);
void mp_opt_deinit(mp_opt_t *o);
/* Global L2 norm of the gradient. */
double mp_grad_norm(const float *grad, int64_t n);
/* Clips the gradient to cfg.clip_norm (as torch.nn.utils.clip_grad_norm_),
 * then updates params with learning rate lr. Returns the norm before clipping. */
double mp_opt_step(mp_opt_t *o, float *params, float *grad, double lr);
/* The same update when the caller already has norm = mp_grad_norm(grad, n)
 * (the trainer checks it for inf/NaN first): one pass over the gradient fewer. */
void mp_opt_step_norm(mp_opt_t *o, float *params, float *grad, double lr, double norm);
/* Poly schedule: lr0 * (1 - step / max_steps)^exponent (nnU-Net: 0.9). */
double mp_lr_poly(double lr0, int64_t step, int64_t max_steps, double exponent);

/* ---- mixed precision: dynamic loss scaling (PyTorch's GradScaler) ----
 * Per step: mp_unet_set_loss_scale(net, s.scale); forward_backward; (with
 * data parallelism, mp_dist_grad_wait first: every rank then holds the same
 * averaged gradient, so all ranks agree on found_inf with no extra message);
 * ok = mp_loss_scaler_unscale_check(&s, grad, n); if ok, the optimizer step;
 * mp_loss_scaler_update(&s, !ok). Checkpoints keep scale and growth_tracker. */
typedef struct {
    double scale;            /* 2^16 at start */
    double growth_factor;    /* 2 */
    double backoff_factor;   /* 0.5 */
    int64_t growth_interval; /* 2000 finite steps between growths */
    int64_t growth_tracker;  /* finite steps since the last growth or overflow */
} mp_loss_scaler_t;

void mp_loss_scaler_init(mp_loss_scaler_t *s);
/* Divides grad[0..n) by the scale in place; returns 1 when every result is
 * finite, 0 when any is inf or NaN (then skip the optimizer step). */
int mp_loss_scaler_unscale_check(const mp_loss_scaler_t *s, float *grad, int64_t n);
/* After a step: found_inf backs the scale off and restarts the count;
 * growth_interval finite steps in a row grow it (never beyond FLT_MAX). */
void mp_loss_scaler_update(mp_loss_scaler_t *s, int found_inf);
/* Restores saved state, refusing a scale that is not finite and positive or a
 * tracker outside [0, growth_interval). */
int mp_loss_scaler_set_state(mp_loss_scaler_t *s, double scale, int64_t growth_tracker);

/* ---- checkpoints (safetensors) ---- */
/* Writes the parameters atomically as safetensors (F32, little-endian),
 * metadata from "key=value" pairs (may be NULL). */
int mp_unet_save(const mp_unet_t *m, const char *path, const char *const *meta, int n_meta);
/* Loads parameters; every name, dtype and shape must match the model. The
 * error names the file and the first tensor that does not match. */
int mp_unet_load(mp_unet_t *m, const char *path);
/* Training state (optimizer slab, step, RNG state, config as JSON) in its own
 * safetensors file, written atomically. */
int mp_train_state_save(const char *path, const mp_opt_t *o, const uint64_t rng_state[4], const char *config_json);
int mp_train_state_load(const char *path, mp_opt_t *o, uint64_t rng_state[4]);

#ifdef __cplusplus
}
#endif
#endif
