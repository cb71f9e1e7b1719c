/* nnU-Net's plain convolutional U-Net: configuration, the graph (tensors,
 * ops, parameter tensors with nnU-Net's module names), the single arena
 * planned at creation, weight initialisation, the loss over the outputs
 * (with deep supervision) and dispatch to the oneDNN or reference engine. */
#include "nn/unet_internal.h"
#include "ref/ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mp_unet_config_features(mp_unet_config_t *c, int64_t base, int64_t cap) {
    int64_t f = base;
    for (int s = 0; s < MP_UNET_MAX_STAGES; s++, f *= 2) c->features[s] = f < cap ? f : cap;
}

void mp_unet_config_default(mp_unet_config_t *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = 1;
    c->num_classes = 2;
    c->n_stages = 5;
    mp_unet_config_features(c, 32, 320);
    for (int s = 0; s < MP_UNET_MAX_STAGES; s++)
        for (int a = 0; a < 3; a++) {
            c->kernel[s][a] = 3;
            c->stride[s][a] = s == 0 ? 1 : 2;
        }
    c->n_conv_per_stage = 2;
    c->lrelu_slope = 0.01;
    c->norm_eps = 1e-5;
    c->batch = 2;
    c->patch[0] = c->patch[1] = c->patch[2] = 64;
    c->engine = MP_NN_ENGINE_AUTO;
    c->dtype = MP_NN_F32;
}

/* ---- graph building ---- */
static int add_tensor(mp_unet_t *m, mp_shape5_t s) {
    if (m->nt >= MP_UNET_MAX_TENSORS) return -1;
    m->t[m->nt].s = s;
    m->t[m->nt].has_grad = 1;
    m->t[m->nt].prod = -1;
    return m->nt++;
}

static int add_param(mp_unet_t *m, const char *name, int ndim, const int64_t *shape) {
    if (m->np >= MP_UNET_MAX_PARAMS) return -1;
    mp_param_info_t *p = &m->p[m->np];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i], p->count *= shape[i];
    p->offset = m->nparams;
    m->nparams += (p->count + 15) / 16 * 16; /* 64-byte aligned tensors */
    return m->np++;
}

static int add_op(mp_unet_t *m, op_kind_t kind, int out, int in, int in2, int pw, int pb) {
    if (m->nop >= MP_UNET_MAX_OPS || out < 0 || in < 0 || (kind != OP_CONCAT && (pw < 0 || pb < 0))) return -1;
    op_t *o = &m->op[m->nop];
    memset(o, 0, sizeof *o);
    o->kind = kind, o->out = out, o->in = in, o->in2 = in2, o->pw = pw, o->pb = pb;
    o->need_dx = in != m->input;
    m->t[out].prod = m->nop;
    if (pw >= 0) m->param_used[pw] = 1;
    if (pb >= 0) m->param_used[pb] = 1;
    return m->nop++;
}

/* conv (kernel k, stride st, 'same' padding) -> instance norm -> LeakyReLU; returns the output tensor. */
static int conv_block(mp_unet_t *m, int in, int64_t cout, const int64_t k[3], const int64_t st[3], const char *prefix) {
    char name[96];
    mp_conv_geom_t g;
    for (int a = 0; a < 3; a++) g.k[a] = k[a], g.s[a] = st[a], g.p[a] = k[a] / 2;
    mp_shape5_t xs = m->t[in].s, ys = mp_conv_out_shape(xs, cout, &g, 0);
    if (mp_shape5_elems(ys) <= 0) return -1;
    int64_t ws[5] = {cout, xs.c, k[0], k[1], k[2]};
    snprintf(name, sizeof name, "%s.conv.weight", prefix);
    int pw = add_param(m, name, 5, ws);
    snprintf(name, sizeof name, "%s.conv.bias", prefix);
    int pb = add_param(m, name, 1, &cout);
    int a = add_tensor(m, ys), op = add_op(m, OP_CONV, a, in, -1, pw, pb);
    if (op < 0) return -1;
    m->op[op].g = g;
    snprintf(name, sizeof name, "%s.norm.weight", prefix);
    pw = add_param(m, name, 1, &cout);
    snprintf(name, sizeof name, "%s.norm.bias", prefix);
    pb = add_param(m, name, 1, &cout);
    int b = add_tensor(m, ys);
    return add_op(m, OP_NORM_ACT, b, a, -1, pw, pb) < 0 ? -1 : b;
}

/* 1x1x1 segmentation head of decoder stage s. */
static int seg_head(mp_unet_t *m, int in, int s) {
    char name[96];
    int64_t k = m->cfg.num_classes, ws[5] = {k, m->t[in].s.c, 1, 1, 1};
    snprintf(name, sizeof name, "decoder.seg_layers.%d.weight", s);
    int pw = add_param(m, name, 5, ws);
    snprintf(name, sizeof name, "decoder.seg_layers.%d.bias", s);
    int pb = add_param(m, name, 1, &k);
    mp_shape5_t ys = m->t[in].s;
    ys.c = k;
    int out = add_tensor(m, ys), op = add_op(m, OP_CONV, out, in, -1, pw, pb);
    if (op < 0) return -1;
    m->op[op].g = (mp_conv_geom_t){{1, 1, 1}, {1, 1, 1}, {0, 0, 0}};
    return out;
}

static int build_graph(mp_unet_t *m) {
    const mp_unet_config_t *c = &m->cfg;
    char prefix[96], name[96];
    int skip[MP_UNET_MAX_STAGES];
    mp_shape5_t is = {c->batch, c->in_channels, c->patch[0], c->patch[1], c->patch[2]};
    int x = m->input = add_tensor(m, is);
    m->t[x].has_grad = 0;
    int64_t down[MP_UNET_MAX_STAGES][3]; /* cumulative stride of each stage */
    for (int s = 0; s < c->n_stages; s++) {
        for (int j = 0; j < c->n_conv_per_stage; j++) {
            static const int64_t one[3] = {1, 1, 1};
            snprintf(prefix, sizeof prefix, "encoder.stages.%d.0.convs.%d", s, j);
            x = conv_block(m, x, c->features[s], c->kernel[s], j == 0 ? c->stride[s] : one, prefix);
            if (x < 0) return mp_error_set(MP_ERR_ARG, "unet: encoder stage %d: the patch is too small for the strides", s);
        }
        for (int a = 0; a < 3; a++) down[s][a] = (s ? down[s - 1][a] : 1) * c->stride[s][a];
        skip[s] = x;
    }
    int heads[MP_UNET_MAX_STAGES], hs[MP_UNET_MAX_STAGES], nh = 0;
    for (int s = 0; s < c->n_stages - 1; s++) {
        int e = c->n_stages - 2 - s; /* encoder stage whose skip joins here */
        const int64_t *st = c->stride[e + 1];
        int64_t cout = c->features[e], ws[5] = {m->t[x].s.c, cout, st[0], st[1], st[2]};
        snprintf(name, sizeof name, "decoder.transpconvs.%d.weight", s);
        int pw = add_param(m, name, 5, ws);
        snprintf(name, sizeof name, "decoder.transpconvs.%d.bias", s);
        int pb = add_param(m, name, 1, &cout);
        mp_conv_geom_t g = {{st[0], st[1], st[2]}, {st[0], st[1], st[2]}, {0, 0, 0}};
        mp_shape5_t us = mp_conv_out_shape(m->t[x].s, cout, &g, 1), ss = m->t[skip[e]].s;
        if (us.d != ss.d || us.h != ss.h || us.w != ss.w)
            return mp_error_set(MP_ERR_ARG, "unet: decoder stage %d: upsampled %lldx%lldx%lld does not match the skip "
                                "%lldx%lldx%lld (patch not divisible by the strides)", s, (long long)us.d,
                                (long long)us.h, (long long)us.w, (long long)ss.d, (long long)ss.h, (long long)ss.w);
        int u = add_tensor(m, us), op = add_op(m, OP_DECONV, u, x, -1, pw, pb);
        if (op < 0) return mp_error_set(MP_ERR_LIMIT, "unet: too many layers");
        m->op[op].g = g;
        mp_shape5_t cs = us;
        cs.c += ss.c;
        int cat = add_tensor(m, cs);
        if (add_op(m, OP_CONCAT, cat, u, skip[e], -1, -1) < 0) return mp_error_set(MP_ERR_LIMIT, "unet: too many layers");
        x = cat;
        static const int64_t one[3] = {1, 1, 1};
        for (int j = 0; j < c->n_conv_per_stage; j++) {
            snprintf(prefix, sizeof prefix, "decoder.stages.%d.convs.%d", s, j);
            if ((x = conv_block(m, x, cout, c->kernel[e], one, prefix)) < 0)
                return mp_error_set(MP_ERR_LIMIT, "unet: too many layers");
        }
        /* nnU-Net has a head per decoder stage; only the used ones run. */
        if (c->deep_supervision || s == c->n_stages - 2) {
            if ((heads[nh] = seg_head(m, x, s)) < 0) return mp_error_set(MP_ERR_LIMIT, "unet: too many layers");
            hs[nh++] = e;
        } else {
            char n2[96];
            int64_t k = c->num_classes, wsh[5] = {k, cout, 1, 1, 1};
            snprintf(n2, sizeof n2, "decoder.seg_layers.%d.weight", s);
            add_param(m, n2, 5, wsh);
            snprintf(n2, sizeof n2, "decoder.seg_layers.%d.bias", s);
            add_param(m, n2, 1, &k);
        }
    }
    /* Outputs in nnU-Net's order: full resolution first. Weights 1/2^i with
     * the lowest resolution at 0, normalised to sum 1. */
    double wsum = 0;
    for (int i = 0; i < nh; i++) {
        head_t *h = &m->head[i];
        int src = nh - 1 - i;
        h->tensor = heads[src];
        for (int a = 0; a < 3; a++) h->factor[a] = hs[src] ? down[hs[src]][a] : 1;
        h->weight = (nh > 1 && i == nh - 1) ? 0.0 : 1.0 / (double)(1 << i);
        wsum += h->weight;
    }
    for (int i = 0; i < nh; i++) m->head[i].weight /= wsum;
    m->nhead = nh;
    if (m->np >= MP_UNET_MAX_PARAMS) return mp_error_set(MP_ERR_LIMIT, "unet: too many parameters");
    return MP_OK;
}

static void count_flops(mp_unet_t *m) {
    m->flops_fwd = m->flops_train = 0;
    for (int i = 0; i < m->nop; i++) {
        op_t *o = &m->op[i];
        if (o->kind != OP_CONV && o->kind != OP_DECONV) continue;
        mp_shape5_t xs = m->t[o->in].s, ys = m->t[o->out].s;
        double kv = (double)(o->g.k[0] * o->g.k[1] * o->g.k[2]);
        double f = o->kind == OP_CONV ? 2.0 * (double)mp_shape5_elems(ys) * (double)xs.c * kv
                                      : 2.0 * (double)mp_shape5_elems(xs) * (double)ys.c * kv;
        o->flops = f;
        m->flops_fwd += f;
        m->flops_train += f * (o->need_dx ? 3 : 2);
    }
}

/* Arena offsets for every buffer, then one allocation. The reference engine
 * gives every buffer its own place; the oneDNN engine plans by lifetime. */
static int alloc_arena(mp_unet_t *m);

static int plan_arena(mp_unet_t *m) {
#ifdef MP_HAVE_DNNL
    if (!m->use_ref) {
        int rc = mp_unet_cpu_plan_arena(m);
        if (rc) return rc;
        return alloc_arena(m);
    }
#endif
    size_t off = 0, maxb = 0;
    int64_t maxc = 0;
#define TAKE(bytes) (off = (off + 63) / 64 * 64, off += (bytes), off - (bytes))
    for (int i = 0; i < m->nt; i++) {
        tensor_t *t = &m->t[i];
        t->off = TAKE(t->bytes);
        if (t->has_grad) t->goff = TAKE(t->bytes);
        if (t->bytes > maxb) maxb = t->bytes;
        if (t->s.c > maxc) maxc = t->s.c;
    }
    for (int i = 0; i < m->nop; i++) {
        op_t *o = &m->op[i];
        if (o->kind != OP_NORM_ACT) continue;
        size_t nc = (size_t)(m->t[o->out].s.n * m->t[o->out].s.c);
        o->stat_off = TAKE(2 * nc * m->es);
        if (m->use_ref) o->pre_off = TAKE((size_t)mp_shape5_elems(m->t[o->out].s) * m->es);
    }
    for (int i = 0; i < m->nhead; i++) {
        head_t *h = &m->head[i];
        mp_shape5_t s = m->t[h->tensor].s;
        size_t n = (size_t)mp_shape5_elems(s);
        h->plain_off = TAKE(n * m->es);
        h->dplain_off = TAKE(n * m->es);
        h->label_off = TAKE((size_t)(s.n * s.d * s.h * s.w));
    }
    m->scratch_off = TAKE(m->scratch_bytes);
    m->tmp_off = TAKE(maxb);
    m->work_off = TAKE((size_t)(2 * m->cfg.batch * maxc) * sizeof(float));
    if (m->es == 8) {
        m->shadow_off = TAKE((size_t)m->nparams * 8);
        m->gshadow_off = TAKE((size_t)m->nparams * 8);
    }
#undef TAKE
    m->arena_bytes = off + 64;
    return alloc_arena(m);
}

static int alloc_arena(mp_unet_t *m) {
    if ((uint64_t)m->arena_bytes > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "unet: activation arena of %.1f MiB exceeds the memory limit",
                            (double)m->arena_bytes / 1048576.0);
    m->arena = mp_zalloc(m->arena_bytes);
    if (!m->arena) return mp_error_set(MP_ERR_NOMEM, "unet: cannot allocate the %.1f MiB arena",
                                       (double)m->arena_bytes / 1048576.0);
    return MP_OK;
}

static int check_config(const mp_unet_config_t *c) {
    if (c->n_stages < 1 || c->n_stages > MP_UNET_MAX_STAGES)
        return mp_error_set(MP_ERR_ARG, "unet: n_stages %d outside [1, %d]", c->n_stages, MP_UNET_MAX_STAGES);
    if (c->in_channels < 1 || c->num_classes < 2 || c->num_classes > 256)
        return mp_error_set(MP_ERR_ARG, "unet: need >= 1 input channel and 2..256 classes (got %d, %d)",
                            c->in_channels, c->num_classes);
    if (c->n_conv_per_stage < 1 || c->batch < 1) return mp_error_set(MP_ERR_ARG, "unet: bad conv count or batch");
    for (int s = 0; s < c->n_stages; s++) {
        if (c->features[s] < 1) return mp_error_set(MP_ERR_ARG, "unet: stage %d has no features", s);
        for (int a = 0; a < 3; a++) {
            if (c->kernel[s][a] < 1 || c->stride[s][a] < 1 || c->patch[a] < 1)
                return mp_error_set(MP_ERR_ARG, "unet: stage %d: bad kernel, stride or patch", s);
            if (c->kernel[s][a] % 2 == 0) /* 'same' padding k/2 would grow the output past the patch */
                return mp_error_set(MP_ERR_ARG, "unet: stage %d: kernel %lld (axis %d) must be odd", s,
                                    (long long)c->kernel[s][a], a);
        }
    }
    if (c->dtype != MP_NN_F32 && c->dtype != MP_NN_F64)
        return mp_error_set(MP_ERR_UNSUPPORTED, "unet: only fp32 compute is implemented (bf16/fp16 to come)");
    return MP_OK;
}

int mp_unet_create(mp_unet_t **out, const mp_unet_config_t *cfg) {
    *out = NULL;
    int rc = check_config(cfg);
    if (rc) return rc;
    mp_unet_t *m = calloc(1, sizeof *m);
    if (!m) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    m->cfg = *cfg;
    m->loss_scale = 1.0;
#ifdef MP_HAVE_DNNL
    m->use_ref = cfg->engine == MP_NN_ENGINE_REF || (cfg->engine == MP_NN_ENGINE_AUTO && mp_cpu_force_ref_env());
#else
    if (cfg->engine == MP_NN_ENGINE_CPU) {
        free(m);
        return mp_error_set(MP_ERR_UNSUPPORTED, "unet: medpipe was built without oneDNN");
    }
    m->use_ref = 1;
#endif
    if (cfg->dtype == MP_NN_F64 && !m->use_ref) {
        free(m);
        return mp_error_set(MP_ERR_UNSUPPORTED, "unet: fp64 runs on the reference engine only");
    }
    m->es = cfg->dtype == MP_NN_F64 ? 8 : 4;
    if ((rc = build_graph(m))) goto fail;
    count_flops(m);
    m->params = mp_zalloc((size_t)m->nparams * sizeof(float));
    m->grads = mp_zalloc((size_t)m->nparams * sizeof(float));
    if (!m->params || !m->grads) {
        rc = mp_error_set(MP_ERR_NOMEM, "unet: cannot allocate %lld parameters", (long long)m->nparams);
        goto fail;
    }
    m->pool = mp_pool_create(cfg->threads);
    if (m->use_ref) {
        for (int i = 0; i < m->nt; i++) m->t[i].bytes = (size_t)mp_shape5_elems(m->t[i].s) * m->es;
    } else {
#ifdef MP_HAVE_DNNL
        mp_cpu_set_threads(cfg->threads > 0 ? cfg->threads : mp_cpu_count());
        if ((rc = mp_unet_cpu_plan(m))) goto fail;
#endif
    }
    if ((rc = plan_arena(m))) goto fail;
    mp_unet_init_weights(m, 0);
    *out = m;
    return MP_OK;
fail:
    mp_unet_free(m);
    return rc;
}

void mp_unet_free(mp_unet_t *m) {
    if (!m) return;
#ifdef MP_HAVE_DNNL
    mp_unet_cpu_release(m);
#endif
    mp_pool_free(m->pool);
    mp_free(m->params);
    mp_free(m->grads);
    mp_free(m->arena);
    free(m);
}

const mp_unet_config_t *mp_unet_config(const mp_unet_t *m) { return &m->cfg; }
int mp_unet_uses_ref(const mp_unet_t *m) { return m->use_ref; }
int64_t mp_unet_param_count(const mp_unet_t *m) { return m->nparams; }
float *mp_unet_params(mp_unet_t *m) { return m->params; }
float *mp_unet_grads(mp_unet_t *m) { return m->grads; }
int mp_unet_n_tensors(const mp_unet_t *m) { return m->np; }
const mp_param_info_t *mp_unet_tensor(const mp_unet_t *m, int i) { return i >= 0 && i < m->np ? &m->p[i] : NULL; }
double mp_unet_flops_forward(const mp_unet_t *m) { return m->flops_fwd; }

double mp_nn_measure_fma_peak(int threads, double seconds) {
#ifdef MP_HAVE_DNNL
    mp_cpu_set_threads(threads);
    return mp_cpu_fma_peak_gflops(threads, seconds);
#else
    (void)threads, (void)seconds;
    return 0;
#endif
}

void mp_unet_set_profiling(mp_unet_t *m, int on) {
    m->profiling = on;
    if (!on) return;
    memset(m->prof, 0, sizeof m->prof);
    for (int i = 0; i < m->nop; i++) m->op[i].prof_s[0] = m->op[i].prof_s[1] = m->op[i].prof_s[2] = 0;
}

void mp_unet_profile(const mp_unet_t *m, mp_unet_prof_entry_t out[MP_UNET_PROF_COUNT]) {
    memcpy(out, m->prof, sizeof m->prof);
}

const char *mp_unet_prof_name(mp_unet_prof_t p) {
    static const char *names[MP_UNET_PROF_COUNT] = {
        "conv forward",       "conv backward data", "conv backward weights", "norm forward",  "norm recompute",
        "norm backward",      "concat",             "gradient add",          "reorder",       "loss"};
    return p >= 0 && p < MP_UNET_PROF_COUNT ? names[p] : "?";
}

int mp_unet_profile_conv(const mp_unet_t *m, int i, char *desc, size_t desc_size, double seconds[3], double *flops) {
    for (int k = 0, seen = 0; k < m->nop; k++) {
        const op_t *o = &m->op[k];
        if (o->kind != OP_CONV && o->kind != OP_DECONV) continue;
        if (seen++ != i) continue;
        const mp_shape5_t xs = m->t[o->in].s, ys = m->t[o->out].s;
        snprintf(desc, desc_size, "%s %lld->%lld %lldx%lldx%lld k%lld s%lld", o->kind == OP_CONV ? "conv" : "deconv",
                 (long long)xs.c, (long long)ys.c, (long long)xs.d, (long long)xs.h, (long long)xs.w,
                 (long long)o->g.k[2], (long long)o->g.s[2]);
        memcpy(seconds, o->prof_s, sizeof o->prof_s);
        *flops = o->flops;
        return MP_OK;
    }
    return mp_error_set(MP_ERR_ARG, "unet: no conv layer %d", i);
}
double mp_unet_flops_train(const mp_unet_t *m) { return m->flops_train; }
size_t mp_unet_arena_bytes(const mp_unet_t *m) { return m->arena_bytes; }

void mp_unet_set_grad_hook(mp_unet_t *m, mp_grad_hook_fn fn, void *user) {
    m->grad_hook = fn;
    m->grad_hook_user = fn ? user : NULL;
}

void mp_unet_set_loss_scale(mp_unet_t *m, double scale) { m->loss_scale = scale; }

/* Slot of parameter tensor p in the slabs: the tensor and its padding. */
static void param_slot(const mp_unet_t *m, int p, int64_t *off, int64_t *count) {
    *off = m->p[p].offset;
    *count = (p + 1 < m->np ? m->p[p + 1].offset : m->nparams) - *off;
}

void mp_unet_grad_final(mp_unet_t *m, int p) {
    int64_t off, count;
    param_slot(m, p, &off, &count);
    if (m->es == 8) {
        const double *G = arena_at(m, m->gshadow_off);
        for (int64_t i = off; i < off + count; i++) m->grads[i] = (float)G[i];
    }
    if (m->grad_hook) m->grad_hook(m->grad_hook_user, off, count);
}

void mp_unet_grads_begin(mp_unet_t *m) {
    for (int p = 0; p < m->np; p++) {
        if (m->param_used[p]) continue;
        int64_t off, count;
        param_slot(m, p, &off, &count);
        memset(m->grads + off, 0, (size_t)count * sizeof(float));
        if (m->grad_hook) m->grad_hook(m->grad_hook_user, off, count);
    }
}

void mp_unet_init_weights(mp_unet_t *m, uint64_t seed) {
    const double a = 0.01, gain = sqrt(2.0 / (1.0 + a * a));
    memset(m->params, 0, (size_t)m->nparams * sizeof(float));
    for (int i = 0; i < m->np; i++) {
        mp_param_info_t *p = &m->p[i];
        float *w = m->params + p->offset;
        size_t len = strlen(p->name);
        if (p->ndim == 5) {
            /* PyTorch's fan_in is size(1) * receptive field for both conv kinds. */
            double fan_in = (double)(p->shape[1] * p->shape[2] * p->shape[3] * p->shape[4]);
            double std = gain / sqrt(fan_in);
            mp_rng_t r;
            mp_rng_init(&r, seed, (uint64_t)i);
            for (int64_t k = 0; k < p->count; k++) w[k] = (float)(std * mp_rng_normal(&r));
        } else if (len > 12 && strcmp(p->name + len - 12, ".norm.weight") == 0) {
            for (int64_t k = 0; k < p->count; k++) w[k] = 1.0f;
        }
    }
}

/* ---- loss over the outputs ---- */
/* Nearest-exact downsampling of the labels by integer factors. */
static void downsample_labels(uint8_t *dst, const uint8_t *src, mp_shape5_t full, mp_shape5_t low, const int64_t f[3]) {
    for (int64_t n = 0; n < low.n; n++)
        for (int64_t z = 0; z < low.d; z++)
            for (int64_t y = 0; y < low.h; y++)
                for (int64_t x = 0; x < low.w; x++) {
                    int64_t zs = z * f[0] + f[0] / 2, ys = y * f[1] + f[1] / 2, xs = x * f[2] + f[2] / 2;
                    dst[((n * low.d + z) * low.h + y) * low.w + x] =
                        src[((n * full.d + zs) * full.h + ys) * full.w + xs];
                }
}

double mp_unet_loss(mp_unet_t *m, const uint8_t *labels, const mp_loss_opts_t *lo, int with_grad) {
    double total = 0;
    mp_shape5_t full = m->t[m->input].s;
    for (int i = 0; i < m->nhead; i++) {
        head_t *h = &m->head[i];
        mp_shape5_t s = m->t[h->tensor].s;
        const uint8_t *lab = labels;
        if (h->factor[0] != 1 || h->factor[1] != 1 || h->factor[2] != 1) {
            downsample_labels(arena_at(m, h->label_off), labels, full, s, h->factor);
            lab = arena_at(m, h->label_off);
        }
        void *dz = with_grad ? arena_at(m, h->dplain_off) : NULL;
        double gs = h->weight * m->loss_scale;
        double l;
        if (m->es == 8) l = mp_ref_dc_ce_loss_f64(dz, arena_at(m, h->plain_off), lab, s, lo, gs);
#ifdef MP_HAVE_DNNL
        else if (!m->use_ref && mp_cpu_dc_ce_loss_supported(s, lo))
            l = mp_cpu_dc_ce_loss_f32(dz, arena_at(m, h->plain_off), lab, s, lo, gs);
#endif
        else l = mp_ref_dc_ce_loss_f32(dz, arena_at(m, h->plain_off), lab, s, lo, gs);
        total += h->weight * l;
    }
    return total;
}

int mp_unet_forward(mp_unet_t *m, float *logits, const float *input) {
    int rc;
#ifdef MP_HAVE_DNNL
    rc = m->use_ref ? mp_unet_ref_forward(m, input) : mp_unet_cpu_forward(m, input);
#else
    rc = mp_unet_ref_forward(m, input);
#endif
    if (rc || !logits) return rc;
    size_t n = (size_t)mp_shape5_elems(m->t[m->head[0].tensor].s);
    const void *src = arena_at(m, m->head[0].plain_off);
    if (m->es == 8)
        for (size_t i = 0; i < n; i++) logits[i] = (float)((const double *)src)[i];
    else
        memcpy(logits, src, n * sizeof(float));
    return MP_OK;
}

static int check_labels(const mp_unet_t *m, const uint8_t *labels) {
    int64_t nvox = m->cfg.batch * m->cfg.patch[0] * m->cfg.patch[1] * m->cfg.patch[2];
    for (int64_t i = 0; i < nvox; i++)
        if (labels[i] >= m->cfg.num_classes)
            return mp_error_set(MP_ERR_ARG, "unet: label %d at voxel %lld is not below %d classes", labels[i],
                                (long long)i, m->cfg.num_classes);
    return MP_OK;
}

int mp_unet_forward_loss(mp_unet_t *m, double *loss, const float *input, const uint8_t *labels,
                         const mp_loss_opts_t *lo) {
    mp_loss_opts_t def;
    if (!lo) mp_loss_opts_init(&def), lo = &def;
    int rc = check_labels(m, labels);
    if (rc || (rc = mp_unet_forward(m, NULL, input))) return rc;
    double t0 = prof_begin(m);
    *loss = mp_unet_loss(m, labels, lo, 0);
    prof_end(m, MP_UNET_PROF_LOSS, t0, 0);
    return MP_OK;
}

int mp_unet_forward_backward(mp_unet_t *m, double *loss, const float *input, const uint8_t *labels,
                             const mp_loss_opts_t *lo) {
    mp_loss_opts_t def;
    if (!lo) mp_loss_opts_init(&def), lo = &def;
    int rc = check_labels(m, labels);
    if (rc || (rc = mp_unet_forward(m, NULL, input))) return rc;
    double t0 = prof_begin(m);
    double l = mp_unet_loss(m, labels, lo, 1);
    prof_end(m, MP_UNET_PROF_LOSS, t0, 0);
    if (!isfinite(l)) return mp_error_set(MP_ERR_NONFINITE, "unet: the loss is not finite (%g)", l);
    if (loss) *loss = l;
#ifdef MP_HAVE_DNNL
    return m->use_ref ? mp_unet_ref_backward(m) : mp_unet_cpu_backward(m);
#else
    return mp_unet_ref_backward(m);
#endif
}
