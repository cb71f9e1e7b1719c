/* Internal plan of a U-Net: tensors (activations), ops in forward order, the
 * arena offsets of every buffer, and the engine objects. Shared by
 * unet.c (planning, parameters), unet_cpu.c (oneDNN execution) and
 * unet_ref.c (reference execution). */
#ifndef MP_UNET_INTERNAL_H
#define MP_UNET_INTERNAL_H

#include "medpipe/core.h"
#include "medpipe/nn.h"

#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"
#endif

#define MP_UNET_MAX_TENSORS 128
#define MP_UNET_MAX_OPS 128
#define MP_UNET_MAX_PARAMS 160

typedef enum { OP_CONV = 0, OP_DECONV, OP_NORM_ACT, OP_CONCAT } op_kind_t;

typedef struct {
    mp_shape5_t s;     // (N, C, D, H, W)
    size_t bytes;      /* buffer size in the engine's layout */
    size_t off, goff;  /* arena offsets of the value and of its gradient */
    int has_grad;
    int grad_written;  /* during backward: the gradient buffer holds a value */
    int prod;          /* producing op; -1 for the network input */
    int recompute;     /* oneDNN engine: the value is not kept for the backward pass but
                        * recomputed (at roff) from the producer's input and statistics */
    int recomputed;    /* during backward: the value at roff is valid */
    size_t roff;
#ifdef MP_HAVE_DNNL
    dnnl_memory_desc_t md;
    mp_cpu_layout_t l;
#endif
} tensor_t;

typedef struct {
    op_kind_t kind;
    int out, in, in2;        /* tensor ids (in2: second concat input) */
    int pw, pb;              /* parameter tensor ids (weight/gamma, bias/beta); -1 none */
    mp_conv_geom_t g;
    int need_dx;             /* the input needs a gradient */
    size_t stat_off;         /* NORM_ACT: mean and rstd (N*C each) in the arena */
    size_t pre_off;          /* NORM_ACT, reference engine: pre-activation values */
    size_t acc_off, acc_off2; /* oneDNN engine: where a gradient to be added to in / in2 goes */
    size_t sfwd_off, sbwd_off; /* oneDNN engine: scratchpads of the forward and backward passes */
    double flops;            /* conv FLOPs of one forward */
    double prof_s[3];        /* profiling: seconds in forward, backward data, backward weights */
#ifdef MP_HAVE_DNNL
    mp_cpu_conv_t *conv;
#endif
} op_t;

typedef struct {
    int tensor;        /* logits tensor of this output */
    int64_t factor[3]; /* downsampling of the labels relative to the input */
    double weight;     /* deep-supervision weight (1 for the single output) */
    size_t plain_off, dplain_off, label_off; /* arena: plain logits, their gradient, labels */
} head_t;

struct mp_unet {
    mp_unet_config_t cfg;
    int use_ref;
    size_t es;                   /* element size of activations (4, or 8 for the f64 reference) */
    tensor_t t[MP_UNET_MAX_TENSORS];
    int nt;
    op_t op[MP_UNET_MAX_OPS];
    int nop;
    head_t head[MP_UNET_MAX_STAGES];
    int nhead;
    mp_param_info_t p[MP_UNET_MAX_PARAMS];
    int np;
    int64_t nparams;
    float *params, *grads;       /* one slab each */
    unsigned char *arena;        /* every activation, gradient, statistic and scratch buffer */
    size_t arena_bytes;
    size_t scratch_off, scratch_bytes, tmp_off, work_off, shadow_off, gshadow_off;
    int input;                   /* tensor id of the network input */
    unsigned char param_used[MP_UNET_MAX_PARAMS]; /* some op reads this parameter tensor */
    mp_grad_hook_fn grad_hook;   /* see mp_unet_set_grad_hook */
    void *grad_hook_user;
    double loss_scale;
    mp_pool_t *pool;
    double flops_fwd, flops_train;
    int profiling;
    mp_unet_prof_entry_t prof[MP_UNET_PROF_COUNT];
#ifdef MP_HAVE_DNNL
    mp_cpu_reorder_t *in_reorder;   /* plain input -> first conv's layout (NULL: same) */
    mp_cpu_reorder_t *out_reorder[MP_UNET_MAX_STAGES], *grad_reorder[MP_UNET_MAX_STAGES];
#endif
};

/* Profiling: a start time (0 when off) and the charge of what ran since it. */
static inline double prof_begin(const struct mp_unet *m) { return m->profiling ? mp_time_now() : 0; }
static inline double prof_end(struct mp_unet *m, mp_unet_prof_t cat, double t0, double flops) {
    if (!m->profiling) return 0;
    double dt = mp_time_now() - t0;
    m->prof[cat].seconds += dt;
    m->prof[cat].flops += flops;
    m->prof[cat].calls++;
    return dt;
}

static inline void *arena_at(const struct mp_unet *m, size_t off) { return m->arena + off; }

/* Engines: plan the layouts of every tensor (set t[].bytes), then run. */
int mp_unet_cpu_plan(struct mp_unet *m);
/* Offsets of every buffer of the oneDNN engine, by lifetime (unet_cpu_plan.c); sets arena_bytes. */
int mp_unet_cpu_plan_arena(struct mp_unet *m);
int mp_unet_cpu_forward(struct mp_unet *m, const float *input);
int mp_unet_cpu_backward(struct mp_unet *m);
void mp_unet_cpu_release(struct mp_unet *m);
int mp_unet_ref_forward(struct mp_unet *m, const float *input);
int mp_unet_ref_backward(struct mp_unet *m);
/* Backward bookkeeping shared by the engines: grads_begin zeroes and reports
 * the tensors no op uses; grad_final reports parameter tensor p once its
 * gradient is final (converting the f64 shadow's slot first). */
void mp_unet_grads_begin(struct mp_unet *m);
void mp_unet_grad_final(struct mp_unet *m, int p);
/* Loss over the heads on plain logits (both engines); fills the plain gradients. */
double mp_unet_loss(struct mp_unet *m, const uint8_t *labels, const mp_loss_opts_t *lo, int with_grad);

#endif
