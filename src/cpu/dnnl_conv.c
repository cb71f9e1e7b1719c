/* oneDNN convolution and transposed-convolution layers: primitives created
 * once per layer shape (forward, backward-data, backward-weights), weights
 * reordered from the plain fp32 master copy into the layouts the primitives
 * chose, user-managed scratchpads, plus the shared engine, stream, layout
 * helpers and reorders. */
#ifdef MP_HAVE_DNNL
#include "cpu/cpu.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static dnnl_engine_t g_engine;
static dnnl_stream_t g_stream;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void init_engine(void) {
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) return;
    if (dnnl_stream_create(&g_stream, g_engine, dnnl_stream_default_flags) != dnnl_success) g_stream = NULL;
}

dnnl_engine_t mp_cpu_engine(void) {
    pthread_once(&g_once, init_engine);
    return g_engine;
}

dnnl_stream_t mp_cpu_stream(void) {
    pthread_once(&g_once, init_engine);
    return g_stream;
}

void mp_cpu_set_threads(int n) {
    /* libdnnl brings in the OpenMP runtime; medpipe is not compiled with it. */
    if (n <= 0) return;
    void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
    if (set) set(n);
}

int mp_cpu_force_ref_env(void) {
    const char *e = getenv("MEDPIPE_FORCE_REF");
    return e && e[0] && strcmp(e, "0") != 0;
}

int mp_cpu_md_plain(dnnl_memory_desc_t *md, mp_shape5_t s) {
    dnnl_dims_t dims = {s.n, s.c, s.d, s.h, s.w};
    if (dnnl_memory_desc_init_by_tag(md, 5, dims, dnnl_f32, dnnl_ncdhw) != dnnl_success)
        return mp_error_set(MP_ERR_ARG, "oneDNN: bad shape (%lld, %lld, %lld, %lld, %lld)", (long long)s.n,
                            (long long)s.c, (long long)s.d, (long long)s.h, (long long)s.w);
    return MP_OK;
}

int mp_cpu_md_blocked(dnnl_memory_desc_t *md, mp_shape5_t s, int64_t block) {
    dnnl_format_tag_t tag = block == 16 ? dnnl_nCdhw16c : block == 8 ? dnnl_nCdhw8c : block == 4 ? dnnl_nCdhw4c
                          : block == 0 ? dnnl_ndhwc : dnnl_ncdhw;
    dnnl_dims_t dims = {s.n, s.c, s.d, s.h, s.w};
    if (dnnl_memory_desc_init_by_tag(md, 5, dims, dnnl_f32, tag) != dnnl_success)
        return mp_error_set(MP_ERR_ARG, "oneDNN: bad blocked shape (block %lld)", (long long)block);
    return MP_OK;
}

int mp_cpu_layout_from_md(mp_cpu_layout_t *l, const dnnl_memory_desc_t *md) {
    if (md->ndims != 5 || md->data_type != dnnl_f32 || md->format_kind != dnnl_blocked || md->offset0 != 0)
        return mp_error_set(MP_ERR_UNSUPPORTED, "activation layout is not a dense 5D fp32 layout");
    const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
    int64_t block = 1;
    l->n = md->dims[0];
    l->c = md->dims[1];
    l->cpad = md->padded_dims[1];
    l->d = md->dims[2], l->h = md->dims[3], l->w = md->dims[4];
    l->sp = l->d * l->h * l->w;
    if (b->inner_nblks == 1 && b->inner_idxs[0] == 1) block = b->inner_blks[0];
    else if (b->inner_nblks != 0)
        return mp_error_set(MP_ERR_UNSUPPORTED, "activation layout has an unsupported inner blocking");
    else if (b->strides[1] == 1 && l->c > 1)
        block = l->c; /* channels last (ndhwc): one block holding every channel */
    l->block = block;
    /* Dense n, C/B, d, h, w order. */
    int64_t want[5] = {l->cpad * l->sp, l->sp * block, l->h * l->w * block, l->w * block, block};
    if (block == l->c && b->inner_nblks == 0) want[1] = 1;
    for (int i = 0; i < 5; i++)
        if (b->strides[i] != want[i] && md->dims[i] > 1)
            return mp_error_set(MP_ERR_UNSUPPORTED, "activation layout is not nCdhw<B>c or ndhwc dense");
    if (l->cpad % block != 0) return mp_error_set(MP_ERR_UNSUPPORTED, "activation layout padding");
    return MP_OK;
}

size_t mp_cpu_md_bytes(const dnnl_memory_desc_t *md) { return dnnl_memory_desc_get_size(md); }

/* ---- reorders ---- */
struct mp_cpu_reorder {
    dnnl_primitive_t prim;
    dnnl_memory_t src, dst;
};

int mp_cpu_reorder_create(mp_cpu_reorder_t **out, const dnnl_memory_desc_t *dst_md, const dnnl_memory_desc_t *src_md) {
    int rc = MP_OK;
    dnnl_primitive_desc_t pd = NULL;
    mp_cpu_reorder_t *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    dnnl_engine_t e = mp_cpu_engine();
    DNNL_CHECK(dnnl_reorder_primitive_desc_create(&pd, src_md, e, dst_md, e, NULL));
    DNNL_CHECK(dnnl_primitive_create(&r->prim, pd));
    DNNL_CHECK(dnnl_memory_create(&r->src, src_md, e, DNNL_MEMORY_NONE));
    DNNL_CHECK(dnnl_memory_create(&r->dst, dst_md, e, DNNL_MEMORY_NONE));
    dnnl_primitive_desc_destroy(pd);
    *out = r;
    return MP_OK;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    mp_cpu_reorder_free(r);
    return rc;
}

int mp_cpu_reorder_run(mp_cpu_reorder_t *r, void *dst, const void *src) {
    int rc = MP_OK;
    DNNL_CHECK(dnnl_memory_set_data_handle(r->src, (void *)src));
    DNNL_CHECK(dnnl_memory_set_data_handle(r->dst, dst));
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, r->src}, {DNNL_ARG_TO, r->dst}};
    DNNL_CHECK(dnnl_primitive_execute(r->prim, mp_cpu_stream(), 2, args));
    DNNL_CHECK(dnnl_stream_wait(mp_cpu_stream()));
fail:
    return rc;
}

void mp_cpu_reorder_free(mp_cpu_reorder_t *r) {
    if (!r) return;
    if (r->prim) dnnl_primitive_destroy(r->prim);
    if (r->src) dnnl_memory_destroy(r->src);
    if (r->dst) dnnl_memory_destroy(r->dst);
    free(r);
}

int mp_cpu_reorder_once(void *dst, const dnnl_memory_desc_t *dst_md, const void *src, const dnnl_memory_desc_t *src_md) {
    mp_cpu_reorder_t *r;
    int rc = mp_cpu_reorder_create(&r, dst_md, src_md);
    if (rc) return rc;
    rc = mp_cpu_reorder_run(r, dst, src);
    mp_cpu_reorder_free(r);
    return rc;
}

/* ---- convolution layer ---- */
typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_t scratch;
    const char *impl;
} prim_t;

struct mp_cpu_conv {
    mp_cpu_conv_desc_t d;
    dnnl_memory_desc_t src_md, dst_md, w_md, b_md;     /* w_md, b_md: plain */
    dnnl_memory_desc_t wf_md, wb_md, dw_md;            /* chosen by oneDNN */
    prim_t fwd, bwd_data, bwd_weights;
    mp_cpu_reorder_t *w_to_fwd, *w_to_bwd, *dw_to_plain; /* NULL when no reorder is needed */
    float *dwb;
    /* Weights in oneDNN's forward and backward-data layouts live in their
     * pass's scratch (shared by every layer), laid out on each call: per
     * layer they were as big as the parameters twice over. */
    size_t wf_off, wb_off;
    dnnl_memory_t m_src, m_dst, m_wf, m_b;             /* forward */
    dnnl_memory_t m_dsrc, m_ddst_bd, m_wb;             /* backward data */
    dnnl_memory_t m_src_bw, m_ddst_bw, m_dw, m_db;     /* backward weights */
    size_t scratch_bytes;                              /* max over the passes */
    size_t scratch_fwd, scratch_bd, scratch_bw;        /* per pass (bw: the one that runs) */
    int own_bw;          /* backward-weights by shifted GEMMs (see own_bw_geometry) */
    int bw8;             /* backward-weights on nCdhw8c directly (conv_bww8.c) */
    int bw1;             /* the same with one plain input channel (the input conv) */
    int dc8;             /* forward of an upsampling on nCdhw8c (deconv8.c) */
    float *w8, *bias8;   /* dc8: packed weights, padded bias */
    int gd8;             /* backward-data of a strided or transposed conv on nCdhw8c (gconv8.c) */
    float *wg8;          /* gd8: packed weights */
    /* A backward pass whose fast kernel exists only for channels last (see
     * create_backward) runs on ndhwc copies that follow its primitive's
     * scratchpad in the caller's scratch buffer, at copy_off. */
    int fwd_alt, bd_alt, bw_alt;
    dnnl_memory_desc_t alt_src_md, alt_dst_md;         /* ndhwc */
    mp_cpu_reorder_t *x_to_alt, *y_from_alt, *dy_to_alt, *dx_from_alt;
    size_t copy_off_fwd, copy_off_bd, copy_off_bw, alt_dst_bytes;
    char impl_name[3][48];
};

static int finish_prim(prim_t *p, dnnl_primitive_desc_t pd, size_t *scratch_max) {
    int rc = MP_OK;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const char *impl = NULL;
    DNNL_CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    p->impl = impl; /* static strings inside oneDNN */
    DNNL_CHECK(dnnl_primitive_create(&p->prim, pd));
    if (smd && smd->ndims > 0) {
        size_t sz = dnnl_memory_desc_get_size(smd);
        if (sz > *scratch_max) *scratch_max = sz;
        DNNL_CHECK(dnnl_memory_create(&p->scratch, smd, mp_cpu_engine(), DNNL_MEMORY_NONE));
    }
fail:
    return rc;
}

static int run_prim(prim_t *p, dnnl_exec_arg_t *args, int n, void *scratch) {
    int rc = MP_OK;
    if (p->scratch) {
        DNNL_CHECK(dnnl_memory_set_data_handle(p->scratch, scratch));
        args[n].arg = DNNL_ARG_SCRATCHPAD;
        args[n++].memory = p->scratch;
    }
    DNNL_CHECK(dnnl_primitive_execute(p->prim, mp_cpu_stream(), n, args));
    DNNL_CHECK(dnnl_stream_wait(mp_cpu_stream()));
fail:
    return rc;
}

static int new_mem(dnnl_memory_t *m, const dnnl_memory_desc_t *md) {
    int rc = MP_OK;
    DNNL_CHECK(dnnl_memory_create(m, md, mp_cpu_engine(), DNNL_MEMORY_NONE));
fail:
    return rc;
}

static int set_mem(dnnl_memory_t m, const void *p) {
    int rc = MP_OK;
    DNNL_CHECK(dnnl_memory_set_data_handle(m, (void *)p));
fail:
    return rc;
}

/* A weight-layout buffer plus, when it differs from plain, the reorder into it. */
static int weights_layout(mp_cpu_conv_t *c, const dnnl_memory_desc_t *chosen, dnnl_memory_desc_t *keep, float **buf,
                          mp_cpu_reorder_t **reorder, int to_plain) {
    *keep = *chosen;
    if (dnnl_memory_desc_equal(chosen, &c->w_md)) return MP_OK;
    /* Not zeroed: a reorder fills it before any use, and a buffer that the
     * layer's chosen kernels never use (oneDNN's diff-weights layout next to
     * medpipe's weight-gradient kernels) then costs no resident memory. */
    if (buf && !(*buf = mp_alloc(dnnl_memory_desc_get_size(chosen))))
        return mp_error_set(MP_ERR_NOMEM, "out of memory for conv weights");
    return to_plain ? mp_cpu_reorder_create(reorder, &c->w_md, chosen) : mp_cpu_reorder_create(reorder, chosen, &c->w_md);
}

static int conv_descs(mp_cpu_conv_t *c, const dnnl_memory_desc_t *given_src, const dnnl_memory_desc_t *given_dst,
                      dnnl_memory_desc_t *any_src,
                      dnnl_memory_desc_t *any_dst, dnnl_memory_desc_t *any_w) {
    const mp_cpu_conv_desc_t *d = &c->d;
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, d->transposed);
    if (mp_shape5_elems(d->xs) <= 0 || mp_shape5_elems(ys) <= 0)
        return mp_error_set(MP_ERR_ARG, "conv: empty input or output shape");
    dnnl_dims_t xd = {d->xs.n, d->xs.c, d->xs.d, d->xs.h, d->xs.w};
    dnnl_dims_t yd = {ys.n, ys.c, ys.d, ys.h, ys.w};
    dnnl_dims_t wd = {d->cout, d->xs.c, d->g.k[0], d->g.k[1], d->g.k[2]};
    dnnl_dims_t bd = {d->cout};
    if (dnnl_memory_desc_init_by_tag(any_src, 5, xd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(any_dst, 5, yd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(any_w, 5, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&c->w_md, 5, wd, dnnl_f32, d->transposed ? dnnl_iodhw : dnnl_oidhw) ||
        dnnl_memory_desc_init_by_tag(&c->b_md, 1, bd, dnnl_f32, dnnl_x))
        return mp_error_set(MP_ERR_ARG, "conv: bad dimensions");
    if (given_src) *any_src = *given_src;
    if (given_dst) *any_dst = *given_dst;
    return MP_OK;
}

static int own_bw_geometry(const mp_cpu_conv_desc_t *d);

static int impl_is_ref(const_dnnl_primitive_desc_t pd) {
    const char *impl = "ref";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    return strncmp(impl, "ref", 3) == 0;
}

static int is_channels_last(const dnnl_memory_desc_t *md) {
    mp_cpu_layout_t l;
    int ok = !mp_cpu_layout_from_md(&l, md) && l.block == l.c;
    mp_error_clear();
    return ok;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* A reorder between a native and an ndhwc layout, created once. */
static int alt_reorder(mp_cpu_reorder_t **r, const dnnl_memory_desc_t *dst, const dnnl_memory_desc_t *src) {
    return *r ? MP_OK : mp_cpu_reorder_create(r, dst, src);
}

static int forward_pd(const mp_cpu_conv_t *c, dnnl_primitive_desc_t *pd, const dnnl_memory_desc_t *src,
                      const dnnl_memory_desc_t *dst, const dnnl_memory_desc_t *w, const dnnl_dims_t st,
                      const dnnl_dims_t pl, const dnnl_dims_t pr, const_dnnl_primitive_attr_t attr) {
    int rc = MP_OK;
    const mp_cpu_conv_desc_t *d = &c->d;
    dnnl_convolution_desc_t cd;
    dnnl_deconvolution_desc_t dd;
    const dnnl_memory_desc_t *bmd = d->bias ? &c->b_md : NULL;
    dnnl_prop_kind_t prop = d->backward ? dnnl_forward_training : dnnl_forward_inference;
    *pd = NULL;
    if (d->transposed) {
        DNNL_CHECK(dnnl_deconvolution_forward_desc_init(&dd, prop, dnnl_deconvolution_direct, src, w, bmd, dst, st, pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(pd, &dd, attr, mp_cpu_engine(), NULL));
    } else {
        DNNL_CHECK(dnnl_convolution_forward_desc_init(&cd, prop, dnnl_convolution_direct, src, w, bmd, dst, st, pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(pd, &cd, attr, mp_cpu_engine(), NULL));
    }
fail:
    return rc;
}

/* The forward primitive for the given (or oneDNN's) layouts; when oneDNN has
 * only reference code for them (blocked transposed convs on AVX2), it runs
 * on ndhwc copies as backward passes can (see create_backward). */
static int create_forward(mp_cpu_conv_t *c, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                          const dnnl_memory_desc_t *w, const dnnl_dims_t st, const dnnl_dims_t pl,
                          const dnnl_dims_t pr) {
    int rc = MP_OK;
    const mp_cpu_conv_desc_t *d = &c->d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL, apd = NULL;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (d->post_lrelu) {
        DNNL_CHECK(dnnl_post_ops_create(&po));
        DNNL_CHECK(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, (float)d->post_slope, 0.0f));
        DNNL_CHECK(dnnl_primitive_attr_set_post_ops(attr, po));
    }
    if ((rc = forward_pd(c, &pd, src, dst, w, st, pl, pr, attr))) goto fail;
    c->src_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    c->dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    c->dc8 = mp_cpu_deconv8_supported(&c->d, &c->src_md, &c->dst_md);
    if (c->dc8) {
        size_t cop = (size_t)(mp_cpu_blocks8(d->cout) * 8);
        c->w8 = mp_zalloc(mp_cpu_deconv8_weight_floats(d) * sizeof(float));
        c->bias8 = mp_zalloc(cop * sizeof(float));
        if (!c->w8 || !c->bias8) {
            rc = mp_error_set(MP_ERR_NOMEM, "out of memory for conv weights");
            goto fail;
        }
    }
    if (!c->dc8 && impl_is_ref(pd) && (!is_channels_last(&c->src_md) || !is_channels_last(&c->dst_md))) {
        if ((rc = forward_pd(c, &apd, &c->alt_src_md, &c->alt_dst_md, w, st, pl, pr, attr)) ||
            (rc = alt_reorder(&c->x_to_alt, &c->alt_src_md, &c->src_md)) ||
            (rc = alt_reorder(&c->y_from_alt, &c->dst_md, &c->alt_dst_md)))
            goto fail;
        c->fwd_alt = 1;
    }
    dnnl_primitive_desc_t run_pd = c->fwd_alt ? apd : pd;
    if ((rc = weights_layout(c, dnnl_primitive_desc_query_md(run_pd, dnnl_query_weights_md, 0), &c->wf_md, NULL,
                             &c->w_to_fwd, 0)))
        goto fail;
    if ((rc = finish_prim(&c->fwd, run_pd, &c->scratch_fwd))) goto fail;
    if ((rc = new_mem(&c->m_src, c->fwd_alt ? &c->alt_src_md : &c->src_md)) ||
        (rc = new_mem(&c->m_dst, c->fwd_alt ? &c->alt_dst_md : &c->dst_md)) || (rc = new_mem(&c->m_wf, &c->wf_md)) ||
        (rc = new_mem(&c->m_b, &c->b_md)))
        goto fail;
    snprintf(c->impl_name[0], sizeof c->impl_name[0], "%s%s", c->dc8 ? "medpipe:deconv8" : c->fwd.impl,
             c->fwd_alt ? " (ndhwc)" : "");
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (apd) dnnl_primitive_desc_destroy(apd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Backward-data and backward-weights descriptors for activations in src/dst
 * (the forward descriptor built here is only their hint). */
static int backward_pds(mp_cpu_conv_t *c, const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *dst,
                        const dnnl_memory_desc_t *any_w, const dnnl_dims_t st, const dnnl_dims_t pl,
                        const dnnl_dims_t pr, dnnl_primitive_desc_t pds[2]) {
    int rc = MP_OK;
    const mp_cpu_conv_desc_t *d = &c->d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t fwd_pd = NULL;
    const dnnl_memory_desc_t *bmd = d->bias ? &c->b_md : NULL;
    dnnl_convolution_desc_t cf, cb, cw;
    dnnl_deconvolution_desc_t df, db, dw;
    dnnl_engine_t e = mp_cpu_engine();
    pds[0] = pds[1] = NULL;
    DNNL_CHECK(dnnl_primitive_attr_create(&attr));
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (d->transposed) {
        DNNL_CHECK(dnnl_deconvolution_forward_desc_init(&df, dnnl_forward_training, dnnl_deconvolution_direct, src,
                                                        any_w, bmd, dst, st, pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(&fwd_pd, &df, NULL, e, NULL));
        DNNL_CHECK(dnnl_deconvolution_backward_data_desc_init(&db, dnnl_deconvolution_direct, src, any_w, dst, st, pl,
                                                              pr));
        DNNL_CHECK(dnnl_primitive_desc_create(&pds[0], &db, attr, e, fwd_pd));
        DNNL_CHECK(dnnl_deconvolution_backward_weights_desc_init(&dw, dnnl_deconvolution_direct, src, any_w, bmd, dst,
                                                                 st, pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(&pds[1], &dw, attr, e, fwd_pd));
    } else {
        DNNL_CHECK(dnnl_convolution_forward_desc_init(&cf, dnnl_forward_training, dnnl_convolution_direct, src, any_w,
                                                      bmd, dst, st, pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(&fwd_pd, &cf, NULL, e, NULL));
        DNNL_CHECK(dnnl_convolution_backward_data_desc_init(&cb, dnnl_convolution_direct, src, any_w, dst, st, pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(&pds[0], &cb, attr, e, fwd_pd));
        DNNL_CHECK(dnnl_convolution_backward_weights_desc_init(&cw, dnnl_convolution_direct, src, any_w, bmd, dst, st,
                                                               pl, pr));
        DNNL_CHECK(dnnl_primitive_desc_create(&pds[1], &cw, attr, e, fwd_pd));
    }
fail:
    if (fwd_pd) dnnl_primitive_desc_destroy(fwd_pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Backward passes read and write the forward's activation layouts, so that no
 * reorder sits between layers. oneDNN 2.6 on AVX2 has blocked (nCdhw8c)
 * kernels for forward and stride-1 backward-data that beat its channels-last
 * ones by up to 1.5x, but only reference code for blocked strided
 * backward-data and blocked 3D backward-weights. Such a pass runs on ndhwc
 * copies of its activations instead (its own GEMMs or oneDNN's): two
 * memory-bound reorders against a compute-bound conv. */
static int create_backward(mp_cpu_conv_t *c, const dnnl_memory_desc_t *any_w, const dnnl_dims_t st,
                           const dnnl_dims_t pl, const dnnl_dims_t pr) {
    int rc;
    dnnl_primitive_desc_t nat[2] = {NULL, NULL}, alt[2] = {NULL, NULL};
    if ((rc = backward_pds(c, &c->src_md, &c->dst_md, any_w, st, pl, pr, nat))) goto fail;
    c->bw8 = mp_cpu_bww8_supported(&c->d, &c->src_md, &c->dst_md);
    c->bw1 = !c->bw8 && mp_cpu_bww1_supported(&c->d, &c->src_md, &c->dst_md);
    c->gd8 = mp_cpu_gconv8_supported(&c->d, &c->src_md, &c->dst_md);
    if (c->gd8 && !(c->wg8 = mp_alloc(mp_cpu_gconv8_weight_floats(&c->d) * sizeof(float)))) {
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory for conv weights");
        goto fail;
    }
    if (!is_channels_last(&c->src_md) || !is_channels_last(&c->dst_md)) {
        c->bd_alt = !c->gd8 && impl_is_ref(nat[0]);
        c->bw_alt = !c->bw8 && !c->bw1 && (impl_is_ref(nat[1]) || own_bw_geometry(&c->d));
    }
    if (c->bd_alt || c->bw_alt) {
        if ((rc = backward_pds(c, &c->alt_src_md, &c->alt_dst_md, any_w, st, pl, pr, alt)) ||
            (rc = alt_reorder(&c->dy_to_alt, &c->alt_dst_md, &c->dst_md)))
            goto fail;
        if ((c->bd_alt && (rc = alt_reorder(&c->dx_from_alt, &c->src_md, &c->alt_src_md))) ||
            (c->bw_alt && (rc = alt_reorder(&c->x_to_alt, &c->alt_src_md, &c->src_md))))
            goto fail;
    }
    const dnnl_primitive_desc_t bd_pd = c->bd_alt ? alt[0] : nat[0], bw_pd = c->bw_alt ? alt[1] : nat[1];
    const dnnl_memory_desc_t *bd_src = c->bd_alt ? &c->alt_src_md : &c->src_md;
    const dnnl_memory_desc_t *bd_dst = c->bd_alt ? &c->alt_dst_md : &c->dst_md;
    const dnnl_memory_desc_t *bw_src = c->bw_alt ? &c->alt_src_md : &c->src_md;
    const dnnl_memory_desc_t *bw_dst = c->bw_alt ? &c->alt_dst_md : &c->dst_md;
    if ((rc = weights_layout(c, dnnl_primitive_desc_query_md(bd_pd, dnnl_query_weights_md, 0), &c->wb_md, NULL,
                             &c->w_to_bwd, 0)) ||
        (rc = weights_layout(c, dnnl_primitive_desc_query_md(bw_pd, dnnl_query_diff_weights_md, 0), &c->dw_md,
                             &c->dwb, &c->dw_to_plain, 1)))
        goto fail;
    if ((rc = finish_prim(&c->bwd_data, bd_pd, &c->scratch_bd)) ||
        (rc = finish_prim(&c->bwd_weights, bw_pd, &c->scratch_bw)))
        goto fail;
    if ((rc = new_mem(&c->m_dsrc, bd_src)) || (rc = new_mem(&c->m_ddst_bd, bd_dst)) ||
        (rc = new_mem(&c->m_wb, &c->wb_md)) || (rc = new_mem(&c->m_src_bw, bw_src)) ||
        (rc = new_mem(&c->m_ddst_bw, bw_dst)) || (rc = new_mem(&c->m_dw, &c->dw_md)) ||
        (rc = new_mem(&c->m_db, &c->b_md)))
        goto fail;
    c->own_bw = !c->bw8 && !c->bw1 && own_bw_geometry(&c->d) && is_channels_last(bw_src) && is_channels_last(bw_dst);
fail:
    for (int i = 0; i < 2; i++) {
        if (nat[i]) dnnl_primitive_desc_destroy(nat[i]);
        if (alt[i]) dnnl_primitive_desc_destroy(alt[i]);
    }
    return rc;
}

/* ---- backward-weights as shifted GEMMs ----
 * oneDNN 2.6 on AVX2 runs channels-last backward-weights through im2col +
 * GEMM at 20-30 GFLOP/s (and blocked 3D through reference code). For a
 * stride-1 "same" conv in ndhwc, every kernel offset k is one GEMM:
 * dW_k (Cout x Cin) = sum over voxels of dy[v] x[v + k]^T, and within a
 * (sample, output plane) the valid voxels of a shift form one contiguous
 * run of rows of both arrays, if the few rows that wrap from one image row
 * into the next are included; their terms are subtracted again by a second
 * (strided) GEMM per wrapped column. Kernel offsets are split over the
 * threads, so no reduction is needed. A transposed conv whose kernel equals
 * its stride is one GEMM per kernel offset and input image row, reading the
 * output gradient with a stride. */
static int own_bw_geometry(const mp_cpu_conv_desc_t *d) {
    /* Small volumes (deep layers) stay with oneDNN: there the GEMMs would be tiny. */
    if (d->xs.d * d->xs.h * d->xs.w < 512) return 0;
    for (int i = 0; i < 3; i++) {
        /* Transposed: non-overlapping (kernel = stride, no padding), as in the U-Net's upsampling. */
        if (d->transposed && (d->g.s[i] != d->g.k[i] || d->g.p[i] != 0)) return 0;
        if (!d->transposed && (d->g.s[i] != 1 || 2 * d->g.p[i] != d->g.k[i] - 1)) return 0;
    }
    return 1;
}

static size_t own_bw_scratch(const mp_cpu_conv_t *c) {
    const mp_cpu_conv_desc_t *d = &c->d;
    size_t kv = (size_t)(d->g.k[0] * d->g.k[1] * d->g.k[2]);
    return kv * (size_t)(d->cout * d->xs.c) * sizeof(float) + 64;
}

typedef struct {
    const mp_cpu_conv_t *c;
    const float *dy, *x;
    float *acc; /* [k][Cout][Cin] */
} own_bw_ctx_t;

/* GEMMs of kernel offset k over one (sample n, output plane od). */
static void own_bw_plane(const own_bw_ctx_t *t, int64_t n, int64_t od, int64_t k) {
    const mp_cpu_conv_desc_t *d = &t->c->d;
    const int64_t Ci = d->xs.c, Co = d->cout, D = d->xs.d, H = d->xs.h, W = d->xs.w;
    const int64_t kh_n = d->g.k[1], kw_n = d->g.k[2];
    int64_t kd = k / (kh_n * kw_n), kh = k / kw_n % kh_n, kw = k % kw_n;
    int64_t id = od + kd - d->g.p[0], sh = kh - d->g.p[1], sw = kw - d->g.p[2];
    if (id < 0 || id >= D) return;
    int64_t oh0 = sh < 0 ? -sh : 0, oh1 = sh > 0 ? H - sh : H, ow0 = sw < 0 ? -sw : 0, ow1 = sw > 0 ? W - sw : W;
    if (oh1 <= oh0 || ow1 <= ow0) return;
    int64_t len = (oh1 - oh0 - 1) * W + (ow1 - ow0);
    const float *a = t->dy + (((n * D + od) * H + oh0) * W + ow0) * Co;
    const float *b = t->x + (((n * D + id) * H + oh0 + sh) * W + ow0 + sw) * Ci;
    float *acc = t->acc + k * Co * Ci;
    dnnl_sgemm('T', 'N', Co, Ci, len, 1.0f, a, Co, b, Ci, 1.0f, acc, Ci);
    if (oh1 - oh0 < 2) return;
    /* Columns outside [ow0, ow1) inside the run: oh1 - oh0 - 1 rows each.
     * Their x rows lie in the adjacent image row, inside the run's memory. */
    for (int64_t col = 0; col < W; col++) {
        if (col >= ow0 && col < ow1) continue;
        int64_t r0 = col < ow0 ? oh0 + 1 : oh0;
        const float *a2 = t->dy + (((n * D + od) * H + r0) * W + col) * Co;
        const float *b2 = t->x + (((n * D + id) * H + r0 + sh) * W + col + sw) * Ci;
        dnnl_sgemm('T', 'N', Co, Ci, oh1 - oh0 - 1, -1.0f, a2, W * Co, b2, W * Ci, 1.0f, acc, Ci);
    }
}

/* Transposed conv with kernel = stride: each input image row (n, id, ih)
 * meets the output row (s*id + kd, s*ih + kh) at every s-th voxel from kw. */
static void own_bw_deconv_row(const own_bw_ctx_t *t, int64_t n, int64_t id, int64_t ih, int64_t k) {
    const mp_cpu_conv_desc_t *d = &t->c->d;
    const int64_t Ci = d->xs.c, Co = d->cout, D = d->xs.d, H = d->xs.h, W = d->xs.w;
    const int64_t kh_n = d->g.k[1], kw_n = d->g.k[2];
    const int64_t OD = D * d->g.s[0], OH = H * d->g.s[1], OW = W * d->g.s[2];
    int64_t kd = k / (kh_n * kw_n), kh = k / kw_n % kh_n, kw = k % kw_n;
    const float *a = t->dy + (((n * OD + id * d->g.s[0] + kd) * OH + ih * d->g.s[1] + kh) * OW + kw) * Co;
    const float *b = t->x + ((n * D + id) * H + ih) * W * Ci;
    dnnl_sgemm('T', 'N', Co, Ci, W, 1.0f, a, d->g.s[2] * Co, b, Ci, 1.0f, t->acc + k * Co * Ci, Ci);
}

static void own_bw_range(void *ctx, int64_t begin, int64_t end, int worker) {
    const own_bw_ctx_t *t = ctx;
    const mp_cpu_conv_desc_t *d = &t->c->d;
    (void)worker;
    memset(t->acc + begin * d->cout * d->xs.c, 0, (size_t)((end - begin) * d->cout * d->xs.c) * sizeof(float));
    if (d->transposed) {
        for (int64_t n = 0; n < d->xs.n; n++)
            for (int64_t id = 0; id < d->xs.d; id++)
                for (int64_t ih = 0; ih < d->xs.h; ih++)
                    for (int64_t k = begin; k < end; k++) own_bw_deconv_row(t, n, id, ih, k);
        return;
    }
    /* Planes outside, offsets inside: each plane is read from cache for all offsets. */
    for (int64_t n = 0; n < d->xs.n; n++)
        for (int64_t od = 0; od < d->xs.d; od++)
            for (int64_t k = begin; k < end; k++) own_bw_plane(t, n, od, k);
}

static void own_bw_run(const mp_cpu_conv_t *c, float *dw, float *db, const float *dy, const float *x, void *scratch) {
    const mp_cpu_conv_desc_t *d = &c->d;
    const int64_t Ci = d->xs.c, Co = d->cout, kv = d->g.k[0] * d->g.k[1] * d->g.k[2];
    own_bw_ctx_t t = {c, dy, x, scratch};
    mp_cpu_team_for(kv, own_bw_range, &t);
    /* Plain weights: (Cout, Cin, k), or (Cin, Cout, k) when transposed. */
    for (int64_t o = 0; o < Co; o++)
        for (int64_t i = 0; i < Ci; i++)
            for (int64_t k = 0; k < kv; k++)
                dw[((d->transposed ? i * Co + o : o * Ci + i)) * kv + k] = t.acc[(k * Co + o) * Ci + i];
    if (!db) return;
    /* Bias gradient: float sums per image row, accumulated in double. */
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, d->transposed);
    const int64_t rows = ys.n * ys.d * ys.h, W = ys.w;
    double *sd = (double *)(t.acc + ((kv * Co * Ci + 15) & ~(int64_t)15)); /* aligned; own_bw_scratch has the slack */
    for (int64_t o = 0; o < Co; o++) sd[o] = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *p = dy + r * W * Co;
        for (int64_t o = 0; o < Co; o++) {
            float s = 0;
            for (int64_t v = 0; v < W; v++) s += p[v * Co + o];
            sd[o] += s;
        }
    }
    for (int64_t o = 0; o < Co; o++) db[o] = (float)sd[o];
}

int mp_cpu_conv_create(mp_cpu_conv_t **out, const mp_cpu_conv_desc_t *d) {
    *out = NULL;
    if (!mp_cpu_engine() || !mp_cpu_stream()) return mp_error_set(MP_ERR_INTERNAL, "oneDNN: no CPU engine");
    if (d->post_lrelu && d->backward && d->post_slope < 0)
        return mp_error_set(MP_ERR_ARG, "conv: fused LeakyReLU needs slope >= 0 for training");
    mp_cpu_conv_t *c = calloc(1, sizeof *c);
    if (!c) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    c->d = *d;
    c->d.src_md = c->d.dst_md = NULL; /* the caller's pointers are not kept */
    dnnl_memory_desc_t any_src, any_dst, any_w;
    dnnl_dims_t st, pl, pr;
    int rc = conv_descs(c, d->src_md, d->dst_md, &any_src, &any_dst, &any_w);
    if (rc) goto fail;
    mp_shape5_t ys = mp_conv_out_shape(d->xs, d->cout, &d->g, d->transposed);
    int64_t in[3] = {d->xs.d, d->xs.h, d->xs.w}, on[3] = {ys.d, ys.h, ys.w};
    for (int i = 0; i < 3; i++) {
        st[i] = d->g.s[i];
        pl[i] = d->g.p[i];
        /* Right padding that makes oneDNN's size rule give PyTorch's floor result. */
        pr[i] = d->transposed ? d->g.p[i] : (on[i] - 1) * d->g.s[i] + d->g.k[i] - in[i] - d->g.p[i];
    }
    if ((rc = mp_cpu_md_blocked(&c->alt_src_md, d->xs, 0)) || (rc = mp_cpu_md_blocked(&c->alt_dst_md, ys, 0))) goto fail;
    c->alt_dst_bytes = align64(mp_cpu_md_bytes(&c->alt_dst_md));
    if ((rc = create_forward(c, &any_src, &any_dst, &any_w, st, pl, pr))) goto fail;
    size_t copies = c->alt_dst_bytes + align64(mp_cpu_md_bytes(&c->alt_src_md));
    c->copy_off_fwd = align64(c->scratch_fwd);
    if (c->fwd_alt) c->scratch_fwd = c->copy_off_fwd + copies;
    if (c->w_to_fwd && !c->dc8) {
        c->wf_off = align64(c->scratch_fwd);
        c->scratch_fwd = c->wf_off + dnnl_memory_desc_get_size(&c->wf_md);
    }
    if (d->backward && (rc = create_backward(c, &any_w, st, pl, pr))) goto fail;
    if (d->backward) {
        /* With own_bw, oneDNN's backward-weights primitive stays as a fallback
         * but never runs: its scratchpad is not needed. */
        if (c->own_bw) c->scratch_bw = own_bw_scratch(c) + (size_t)d->cout * sizeof(double);
        if (c->bw8) c->scratch_bw = mp_cpu_bww8_scratch_bytes(&c->d);
        if (c->bw1) c->scratch_bw = mp_cpu_bww1_scratch_bytes(&c->d);
        if (c->gd8) c->scratch_bd = 0; /* oneDNN's primitive stays as a fallback but never runs */
        c->copy_off_bd = align64(c->scratch_bd);
        c->copy_off_bw = align64(c->scratch_bw);
        if (c->bd_alt) c->scratch_bd = c->copy_off_bd + copies;
        if (c->w_to_bwd && !c->gd8) { /* the weights in oneDNN's backward-data layout, last */
            c->wb_off = align64(c->scratch_bd);
            c->scratch_bd = c->wb_off + dnnl_memory_desc_get_size(&c->wb_md);
        }
        if (c->bw_alt) c->scratch_bw = c->copy_off_bw + copies;
        snprintf(c->impl_name[1], sizeof c->impl_name[1], "%s%s", c->gd8 ? "medpipe:gconv8" : c->bwd_data.impl,
                 c->bd_alt ? " (ndhwc)" : "");
        snprintf(c->impl_name[2], sizeof c->impl_name[2], "%s%s",
                 c->bw8 ? "medpipe:bww8" : c->bw1 ? "medpipe:bww1" : c->own_bw ? "medpipe:shifted_gemm" : c->bwd_weights.impl,
                 c->bw_alt ? " (ndhwc)" : "");
    }
    c->scratch_bytes = c->scratch_fwd;
    if (c->scratch_bd > c->scratch_bytes) c->scratch_bytes = c->scratch_bd;
    if (c->scratch_bw > c->scratch_bytes) c->scratch_bytes = c->scratch_bw;
    *out = c;
    return MP_OK;
fail:
    mp_cpu_conv_free(c);
    return mp_error_wrap(rc, "conv layer %lldx%lldx%lld, %lld->%lld channels: ", (long long)d->g.k[0],
                         (long long)d->g.k[1], (long long)d->g.k[2], (long long)d->xs.c, (long long)d->cout);
}

static void prim_free(prim_t *p) {
    if (p->prim) dnnl_primitive_destroy(p->prim);
    if (p->scratch) dnnl_memory_destroy(p->scratch);
}

void mp_cpu_conv_free(mp_cpu_conv_t *c) {
    if (!c) return;
    prim_free(&c->fwd);
    prim_free(&c->bwd_data);
    prim_free(&c->bwd_weights);
    mp_cpu_reorder_free(c->w_to_fwd);
    mp_cpu_reorder_free(c->w_to_bwd);
    mp_cpu_reorder_free(c->dw_to_plain);
    mp_cpu_reorder_free(c->x_to_alt);
    mp_cpu_reorder_free(c->y_from_alt);
    mp_cpu_reorder_free(c->dy_to_alt);
    mp_cpu_reorder_free(c->dx_from_alt);
    mp_free(c->dwb);
    mp_free(c->w8);
    mp_free(c->bias8);
    mp_free(c->wg8);
    dnnl_memory_t ms[] = {c->m_src, c->m_dst, c->m_wf, c->m_b, c->m_dsrc, c->m_ddst_bd,
                          c->m_wb, c->m_src_bw, c->m_ddst_bw, c->m_dw, c->m_db};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
        if (ms[i]) dnnl_memory_destroy(ms[i]);
    free(c);
}

const dnnl_memory_desc_t *mp_cpu_conv_src_md(const mp_cpu_conv_t *c) { return &c->src_md; }
const dnnl_memory_desc_t *mp_cpu_conv_dst_md(const mp_cpu_conv_t *c) { return &c->dst_md; }
size_t mp_cpu_conv_scratch_bytes(const mp_cpu_conv_t *c) { return c->scratch_bytes; }
size_t mp_cpu_conv_scratch_pass_bytes(const mp_cpu_conv_t *c, int pass) {
    return pass == 0 ? c->scratch_fwd : pass == 1 ? c->scratch_bd : c->scratch_bw;
}

const char *mp_cpu_conv_impl(const mp_cpu_conv_t *c, int which) {
    which = which < 0 ? 0 : which > 2 ? 2 : which;
    return c->impl_name[which][0] ? c->impl_name[which] : "none";
}

int mp_cpu_conv_forward(mp_cpu_conv_t *c, float *y, const float *x, const float *w, const float *b, void *scratch) {
    int rc;
    if (c->dc8) {
        mp_cpu_deconv8_pack_weights(&c->d, c->w8, w);
        if (c->d.bias) memcpy(c->bias8, b, (size_t)c->d.cout * sizeof(float));
        mp_cpu_deconv8_forward(&c->d, y, x, c->w8, c->d.bias ? c->bias8 : NULL);
        return MP_OK;
    }
    const float *wl = w;
    if (c->w_to_fwd) {
        float *wf = (float *)((char *)scratch + c->wf_off);
        if ((rc = mp_cpu_reorder_run(c->w_to_fwd, wf, w))) return rc;
        wl = wf;
    }
    float *y_run = y;
    if (c->fwd_alt) {
        y_run = (float *)((char *)scratch + c->copy_off_fwd);
        float *x_copy = (float *)((char *)scratch + c->copy_off_fwd + c->alt_dst_bytes);
        if ((rc = mp_cpu_reorder_run(c->x_to_alt, x_copy, x))) return rc;
        x = x_copy;
    }
    if ((rc = set_mem(c->m_src, x)) || (rc = set_mem(c->m_dst, y_run)) || (rc = set_mem(c->m_wf, wl))) return rc;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, c->m_src}, {DNNL_ARG_WEIGHTS, c->m_wf}, {DNNL_ARG_DST, c->m_dst}};
    int n = 3;
    if (c->d.bias) {
        if ((rc = set_mem(c->m_b, b))) return rc;
        args[n].arg = DNNL_ARG_BIAS;
        args[n++].memory = c->m_b;
    }
    if ((rc = run_prim(&c->fwd, args, n, scratch))) return rc;
    return c->fwd_alt ? mp_cpu_reorder_run(c->y_from_alt, y, y_run) : MP_OK;
}

int mp_cpu_conv_backward_data(mp_cpu_conv_t *c, float *dx, const float *dy, const float *w, void *scratch) {
    int rc;
    if (!c->bwd_data.prim) return mp_error_set(MP_ERR_ARG, "conv: layer was created without backward");
    if (c->gd8) {
        mp_cpu_gconv8_pack_weights(&c->d, c->wg8, w);
        mp_cpu_gconv8_backward_data(&c->d, dx, dy, c->wg8);
        return MP_OK;
    }
    const float *wl = w;
    if (c->w_to_bwd) {
        /* The forward already laid the same weights out in this layout. */
        float *wb = (float *)((char *)scratch + c->wb_off);
        if ((rc = mp_cpu_reorder_run(c->w_to_bwd, wb, w))) return rc;
        wl = wb;
    }
    float *dx_run = dx;
    if (c->bd_alt) {
        float *dy_copy = (float *)((char *)scratch + c->copy_off_bd);
        dx_run = (float *)((char *)scratch + c->copy_off_bd + c->alt_dst_bytes);
        if ((rc = mp_cpu_reorder_run(c->dy_to_alt, dy_copy, dy))) return rc;
        dy = dy_copy;
    }
    if ((rc = set_mem(c->m_dsrc, dx_run)) || (rc = set_mem(c->m_ddst_bd, dy)) || (rc = set_mem(c->m_wb, wl))) return rc;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_DIFF_DST, c->m_ddst_bd}, {DNNL_ARG_WEIGHTS, c->m_wb}, {DNNL_ARG_DIFF_SRC, c->m_dsrc}};
    if ((rc = run_prim(&c->bwd_data, args, 3, scratch))) return rc;
    return c->bd_alt ? mp_cpu_reorder_run(c->dx_from_alt, dx, dx_run) : MP_OK;
}

int mp_cpu_conv_backward_weights(mp_cpu_conv_t *c, float *dw, float *db, const float *dy, const float *x,
                                 void *scratch) {
    int rc;
    if (!c->bwd_weights.prim) return mp_error_set(MP_ERR_ARG, "conv: layer was created without backward");
    if (c->d.bias && !db) return mp_error_set(MP_ERR_ARG, "conv: bias gradient buffer missing");
    if (c->bw8 || c->bw1) {
        (c->bw8 ? mp_cpu_bww8_run : mp_cpu_bww1_run)(&c->d, dw, c->d.bias ? db : NULL, dy, x, scratch);
        return MP_OK;
    }
    if (c->bw_alt) {
        float *dy_copy = (float *)((char *)scratch + c->copy_off_bw);
        float *x_copy = (float *)((char *)scratch + c->copy_off_bw + c->alt_dst_bytes);
        if ((rc = mp_cpu_reorder_run(c->dy_to_alt, dy_copy, dy)) || (rc = mp_cpu_reorder_run(c->x_to_alt, x_copy, x)))
            return rc;
        dy = dy_copy;
        x = x_copy;
    }
    if (c->own_bw) {
        if (c->d.bias && !db) return mp_error_set(MP_ERR_ARG, "conv: bias gradient buffer missing");
        own_bw_run(c, dw, c->d.bias ? db : NULL, dy, x, scratch);
        return MP_OK;
    }
    float *dwl = c->dw_to_plain ? c->dwb : dw;
    if ((rc = set_mem(c->m_src_bw, x)) || (rc = set_mem(c->m_ddst_bw, dy)) || (rc = set_mem(c->m_dw, dwl))) return rc;
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, c->m_src_bw}, {DNNL_ARG_DIFF_DST, c->m_ddst_bw}, {DNNL_ARG_DIFF_WEIGHTS, c->m_dw}};
    int n = 3;
    if (c->d.bias) {
        if (!db) return mp_error_set(MP_ERR_ARG, "conv: bias gradient buffer missing");
        if ((rc = set_mem(c->m_db, db))) return rc;
        args[n].arg = DNNL_ARG_DIFF_BIAS;
        args[n++].memory = c->m_db;
    }
    if ((rc = run_prim(&c->bwd_weights, args, n, scratch))) return rc;
    return c->dw_to_plain ? mp_cpu_reorder_run(c->dw_to_plain, dw, c->dwb) : MP_OK;
}

int64_t mp_cpu_preferred_block(int64_t c) {
    /* Developer override for side-by-side timing: MEDPIPE_ACT_LAYOUT=ndhwc|8c|16c. */
    const char *env = getenv("MEDPIPE_ACT_LAYOUT");
    if (env && !strcmp(env, "ndhwc")) return 0;
    if (env && (!strcmp(env, "8c") || !strcmp(env, "16c"))) return atoi(env);
    dnnl_dims_t xd = {2, c, 16, 16, 16}, wd = {c, c, 3, 3, 3}, st = {1, 1, 1}, pad = {1, 1, 1};
    dnnl_memory_desc_t x, w;
    dnnl_convolution_desc_t cd;
    dnnl_primitive_desc_t pd = NULL;
    int64_t block = 16;
    if (dnnl_memory_desc_init_by_tag(&x, 5, xd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&w, 5, wd, dnnl_f32, dnnl_format_tag_any) ||
        dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &x, &w, NULL, &x, st,
                                           pad, pad) ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, mp_cpu_engine(), NULL))
        return block;
    mp_cpu_layout_t l;
    const dnnl_memory_desc_t *chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    if (!mp_cpu_layout_from_md(&l, chosen)) {
        /* Backward passes without a blocked kernel run on channels-last
         * copies (create_backward). */
        block = l.block == l.c && l.block > 16 ? 0 : l.block;
    }
    mp_error_clear();
    dnnl_primitive_desc_destroy(pd);
    return block;
}
#endif /* MP_HAVE_DNNL */
