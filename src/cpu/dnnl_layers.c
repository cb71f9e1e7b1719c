/* Standalone oneDNN layers for the engine's coming network variants: batch
 * norm (training mode, affine, optional fused ReLU), LeakyReLU and channel
 * softmax, forward and backward. Each layer creates its primitives and one
 * memory object per execute argument at init; a pass only swaps data
 * handles and runs with the caller's scratchpad, so nothing is allocated
 * while a layer runs. */
#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"

#include <string.h>

/* Creates the primitive of pd and a handle-less memory object for each of
 * args (in that order) plus the scratchpad; the argument descriptors come
 * from the primitive descriptor, so they match what it was built for. */
static int prim_make(mp_cpu_prim_t *p, const_dnnl_primitive_desc_t pd, const int *args, int n) {
    int rc = MP_OK;
    dnnl_engine_t e = mp_cpu_engine();
    const char *impl = NULL;
    memset(p, 0, sizeof *p);
    DNNL_CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    p->impl = impl; /* a static string inside oneDNN */
    DNNL_CHECK(dnnl_primitive_create(&p->prim, pd));
    for (int i = 0; i < n; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[i]);
        if (!md || md->ndims == 0)
            return mp_error_set(MP_ERR_INTERNAL, "oneDNN: primitive %s takes no argument %d", impl, args[i]);
        p->arg[p->nargs] = args[i];
        DNNL_CHECK(dnnl_memory_create(&p->mem[p->nargs], md, e, DNNL_MEMORY_NONE));
        p->nargs++;
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (smd && smd->ndims > 0) {
        p->scratch_bytes = dnnl_memory_desc_get_size(smd);
        p->arg[p->nargs] = DNNL_ARG_SCRATCHPAD;
        DNNL_CHECK(dnnl_memory_create(&p->mem[p->nargs], smd, e, DNNL_MEMORY_NONE));
        p->nargs++;
    }
fail:
    return rc;
}

/* Runs p with ptrs[i] as the data of its i-th argument and scratch as the scratchpad. */
static int prim_run(mp_cpu_prim_t *p, const void *const *ptrs, void *scratch) {
    int rc = MP_OK;
    dnnl_exec_arg_t args[12];
    if (!p->prim) return mp_error_set(MP_ERR_ARG, "oneDNN layer: pass was not created (backward = 0?)");
    for (int i = 0; i < p->nargs; i++) {
        void *h = p->arg[i] == DNNL_ARG_SCRATCHPAD ? scratch : (void *)ptrs[i];
        DNNL_CHECK(dnnl_memory_set_data_handle(p->mem[i], h));
        args[i].arg = p->arg[i];
        args[i].memory = p->mem[i];
    }
    DNNL_CHECK(dnnl_primitive_execute(p->prim, mp_cpu_stream(), p->nargs, args));
    DNNL_CHECK(dnnl_stream_wait(mp_cpu_stream()));
fail:
    return rc;
}

static void prim_free(mp_cpu_prim_t *p) {
    if (p->prim) dnnl_primitive_destroy(p->prim);
    for (int i = 0; i < p->nargs; i++)
        if (p->mem[i]) dnnl_memory_destroy(p->mem[i]);
    memset(p, 0, sizeof *p);
}

/* Attributes asking for a user scratchpad. */
static int user_scratch_attr(dnnl_primitive_attr_t *attr) {
    int rc = MP_OK;
    *attr = NULL;
    DNNL_CHECK(dnnl_primitive_attr_create(attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user));
fail:
    return rc;
}

/* The activation descriptor: the given one, or plain ncdhw. */
static int act_md(dnnl_memory_desc_t *out, mp_shape5_t s, const dnnl_memory_desc_t *given) {
    if (mp_shape5_elems(s) <= 0) return mp_error_set(MP_ERR_ARG, "oneDNN layer: empty shape");
    if (!given) return mp_cpu_md_plain(out, s);
    if (given->ndims != 5 || given->dims[0] != s.n || given->dims[1] != s.c || given->dims[2] != s.d ||
        given->dims[3] != s.h || given->dims[4] != s.w)
        return mp_error_set(MP_ERR_ARG, "oneDNN layer: layout does not match the shape");
    *out = *given;
    return MP_OK;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* ---- batch normalization ---- */

static int bnorm_flags(const mp_cpu_bnorm_desc_t *d) {
    return dnnl_use_scale | dnnl_use_shift | (d->relu ? dnnl_fuse_norm_relu : 0);
}

int mp_cpu_bnorm_init(mp_cpu_bnorm_t *b, const mp_cpu_bnorm_desc_t *d) {
    int rc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    memset(b, 0, sizeof *b);
    b->d = *d;
    b->d.md = NULL;
    if ((rc = act_md(&b->md, d->s, d->md))) return rc;
    if (!(d->eps > 0)) return mp_error_set(MP_ERR_ARG, "batch norm: eps %g must be > 0", d->eps);
    if ((rc = user_scratch_attr(&attr))) goto fail;
    unsigned flags = (unsigned)bnorm_flags(d);
    dnnl_batch_normalization_desc_t fd, bd;
    DNNL_CHECK(dnnl_batch_normalization_forward_desc_init(&fd, dnnl_forward_training, &b->md, (float)d->eps, flags));
    DNNL_CHECK(dnnl_primitive_desc_create(&fpd, &fd, attr, mp_cpu_engine(), NULL));
    {
        int args[7] = {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE, DNNL_ARG_SCALE, DNNL_ARG_SHIFT,
                       DNNL_ARG_WORKSPACE};
        if ((rc = prim_make(&b->fwd, fpd, args, d->relu ? 7 : 6))) goto fail;
    }
    if (d->relu) {
        const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(fpd, dnnl_query_workspace_md, 0);
        b->ws_bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
    }
    b->scratch_bytes = b->fwd.scratch_bytes;
    if (d->backward) {
        DNNL_CHECK(dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &b->md, &b->md, (float)d->eps, flags));
        DNNL_CHECK(dnnl_primitive_desc_create(&bpd, &bd, attr, mp_cpu_engine(), fpd));
        /* oneDNN 2.6 insists on the shift among the backward's arguments. */
        int args[10] = {DNNL_ARG_DIFF_DST, DNNL_ARG_SRC, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE, DNNL_ARG_SCALE,
                        DNNL_ARG_SHIFT, DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT, DNNL_ARG_WORKSPACE};
        if ((rc = prim_make(&b->bwd, bpd, args, d->relu ? 10 : 9))) goto fail;
        b->scratch_bytes = max_sz(b->scratch_bytes, b->bwd.scratch_bytes);
    }
fail:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (rc) mp_cpu_bnorm_deinit(b);
    return rc;
}

void mp_cpu_bnorm_deinit(mp_cpu_bnorm_t *b) {
    if (!b) return;
    prim_free(&b->fwd);
    prim_free(&b->bwd);
}

int mp_cpu_bnorm_forward(mp_cpu_bnorm_t *b, float *y, float *mean, float *var, void *ws, const float *x,
                         const float *gamma, const float *beta, void *scratch) {
    const void *p[7] = {x, y, mean, var, gamma, beta, ws};
    return prim_run(&b->fwd, p, scratch);
}

int mp_cpu_bnorm_backward(mp_cpu_bnorm_t *b, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                          const float *mean, const float *var, const void *ws, const float *gamma, const float *beta, void *scratch) {
    const void *p[10] = {dy, x, mean, var, gamma, beta, dx, dgamma, dbeta, ws};
    return prim_run(&b->bwd, p, scratch);
}

/* ---- (Leaky)ReLU ---- */

int mp_cpu_relu_init(mp_cpu_relu_t *r, mp_shape5_t s, const dnnl_memory_desc_t *md, double slope, int backward) {
    int rc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    memset(r, 0, sizeof *r);
    r->s = s;
    r->slope = slope;
    if ((rc = act_md(&r->md, s, md))) return rc;
    if ((rc = user_scratch_attr(&attr))) goto fail;
    dnnl_eltwise_desc_t fd, bd;
    DNNL_CHECK(dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, dnnl_eltwise_relu, &r->md, (float)slope, 0.f));
    DNNL_CHECK(dnnl_primitive_desc_create(&fpd, &fd, attr, mp_cpu_engine(), NULL));
    {
        int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST};
        if ((rc = prim_make(&r->fwd, fpd, args, 2))) goto fail;
    }
    r->scratch_bytes = r->fwd.scratch_bytes;
    if (backward) {
        DNNL_CHECK(dnnl_eltwise_backward_desc_init(&bd, dnnl_eltwise_relu, &r->md, &r->md, (float)slope, 0.f));
        DNNL_CHECK(dnnl_primitive_desc_create(&bpd, &bd, attr, mp_cpu_engine(), fpd));
        int args[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_SRC, DNNL_ARG_DIFF_SRC};
        if ((rc = prim_make(&r->bwd, bpd, args, 3))) goto fail;
        r->scratch_bytes = max_sz(r->scratch_bytes, r->bwd.scratch_bytes);
    }
fail:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (rc) mp_cpu_relu_deinit(r);
    return rc;
}

void mp_cpu_relu_deinit(mp_cpu_relu_t *r) {
    if (!r) return;
    prim_free(&r->fwd);
    prim_free(&r->bwd);
}

int mp_cpu_relu_forward(mp_cpu_relu_t *r, float *y, const float *x, void *scratch) {
    const void *p[2] = {x, y};
    return prim_run(&r->fwd, p, scratch);
}

int mp_cpu_relu_backward(mp_cpu_relu_t *r, float *dx, const float *dy, const float *x, void *scratch) {
    const void *p[3] = {dy, x, dx};
    return prim_run(&r->bwd, p, scratch);
}

/* ---- softmax over channels ---- */

int mp_cpu_softmax_init(mp_cpu_softmax_t *sm, mp_shape5_t s, const dnnl_memory_desc_t *md, int backward) {
    int rc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    memset(sm, 0, sizeof *sm);
    sm->s = s;
    if ((rc = act_md(&sm->md, s, md))) return rc;
    if ((rc = user_scratch_attr(&attr))) goto fail;
    dnnl_softmax_v2_desc_t fd, bd;
    DNNL_CHECK(dnnl_softmax_v2_forward_desc_init(&fd, dnnl_forward_training, dnnl_softmax_accurate, &sm->md, &sm->md, 1));
    DNNL_CHECK(dnnl_primitive_desc_create(&fpd, &fd, attr, mp_cpu_engine(), NULL));
    {
        int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST};
        if ((rc = prim_make(&sm->fwd, fpd, args, 2))) goto fail;
    }
    sm->scratch_bytes = sm->fwd.scratch_bytes;
    if (backward) {
        DNNL_CHECK(dnnl_softmax_v2_backward_desc_init(&bd, dnnl_softmax_accurate, &sm->md, &sm->md, &sm->md, 1));
        DNNL_CHECK(dnnl_primitive_desc_create(&bpd, &bd, attr, mp_cpu_engine(), fpd));
        int args[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DST, DNNL_ARG_DIFF_SRC};
        if ((rc = prim_make(&sm->bwd, bpd, args, 3))) goto fail;
        sm->scratch_bytes = max_sz(sm->scratch_bytes, sm->bwd.scratch_bytes);
    }
fail:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bpd) dnnl_primitive_desc_destroy(bpd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (rc) mp_cpu_softmax_deinit(sm);
    return rc;
}

void mp_cpu_softmax_deinit(mp_cpu_softmax_t *sm) {
    if (!sm) return;
    prim_free(&sm->fwd);
    prim_free(&sm->bwd);
}

int mp_cpu_softmax_forward(mp_cpu_softmax_t *sm, float *p, const float *z, void *scratch) {
    const void *a[2] = {z, p};
    return prim_run(&sm->fwd, a, scratch);
}

int mp_cpu_softmax_backward(mp_cpu_softmax_t *sm, float *dz, const float *dp, const float *p, void *scratch) {
    const void *a[3] = {dp, p, dz};
    return prim_run(&sm->bwd, a, scratch);
}

#endif
