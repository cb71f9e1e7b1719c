/* The U-Net on the oneDNN engine. Planning chains the layouts: each conv
 * takes its producer's layout as its source and lets oneDNN choose its
 * destination; instance norm and concatenation keep the layout they are
 * given. Reorders happen only at the network input and at the outputs. */
#include "nn/unet_internal.h"

#ifdef MP_HAVE_DNNL
#include <string.h>

/* Every conv writes the layout oneDNN prefers for this CPU's 3x3x3 convs
 * (blocked on AVX-512, channels last on AVX2, where the blocked backward
 * passes fall back to reference code); its source is its producer's layout. */
static int plan_conv(mp_unet_t *m, op_t *o, int64_t block, size_t *scratch) {
    tensor_t *ti = &m->t[o->in], *to = &m->t[o->out];
    dnnl_memory_desc_t dst, src_in;
    mp_cpu_conv_desc_t d = {.xs = ti->s, .cout = to->s.c, .g = o->g, .transposed = o->kind == OP_DECONV,
                            .bias = 1, .backward = 1, .src_md = o->in == m->input ? NULL : &ti->md, .dst_md = &dst};
    int rc = mp_cpu_md_blocked(&dst, to->s, block);
    /* The input conv: left to choose, oneDNN pairs a plain source with a
     * channels-last destination, which only its reference code runs (0.2
     * GFLOP/s, a third of a 32^3 step). Channels last on both sides is jit. */
    if (!rc && o->in == m->input && block == 0) {
        rc = mp_cpu_md_blocked(&src_in, ti->s, 0);
        d.src_md = &src_in;
    }
    if (rc || (rc = mp_cpu_conv_create(&o->conv, &d))) return rc;
    if (rc) return rc;
    if (d.src_md && !dnnl_memory_desc_equal(d.src_md, mp_cpu_conv_src_md(o->conv)))
        return mp_error_set(MP_ERR_INTERNAL, "unet: conv did not keep its producer's layout");
    if (o->in == m->input) {
        dnnl_memory_desc_t plain;
        ti->md = *mp_cpu_conv_src_md(o->conv);
        if ((rc = mp_cpu_md_plain(&plain, ti->s))) return rc;
        if (!dnnl_memory_desc_equal(&plain, &ti->md) && (rc = mp_cpu_reorder_create(&m->in_reorder, &ti->md, &plain)))
            return rc;
    }
    to->md = *mp_cpu_conv_dst_md(o->conv);
    size_t s = mp_cpu_conv_scratch_bytes(o->conv);
    if (s > *scratch) *scratch = s;
    mp_log(MP_LOG_DEBUG, "unet conv %lld->%lld: %s / %s / %s", (long long)ti->s.c, (long long)to->s.c,
           mp_cpu_conv_impl(o->conv, 0), mp_cpu_conv_impl(o->conv, 1), mp_cpu_conv_impl(o->conv, 2));
    return MP_OK;
}

int mp_unet_cpu_plan(mp_unet_t *m) {
    size_t scratch = 0;
    int rc;
    int64_t block = mp_cpu_preferred_block(m->cfg.features[0] > 8 ? m->cfg.features[0] : 32);
    mp_log(MP_LOG_DEBUG, "unet: activation layout %s%lld", block ? "nCdhw<B>c, B = " : "ndhwc", (long long)block);
    for (int i = 0; i < m->nop; i++) {
        op_t *o = &m->op[i];
        tensor_t *ti = &m->t[o->in], *to = &m->t[o->out];
        switch (o->kind) {
        case OP_CONV:
        case OP_DECONV:
            if ((rc = plan_conv(m, o, block, &scratch))) return rc;
            break;
        case OP_NORM_ACT:
            to->md = ti->md;
            if ((rc = mp_cpu_layout_from_md(&ti->l, &ti->md))) return rc;
            break;
        case OP_CONCAT:
            if ((rc = mp_cpu_layout_from_md(&ti->l, &ti->md)) ||
                (rc = mp_cpu_layout_from_md(&m->t[o->in2].l, &m->t[o->in2].md)) ||
                (rc = mp_cpu_md_blocked(&to->md, to->s, block)))
                return rc;
            break;
        }
        if ((rc = mp_cpu_layout_from_md(&to->l, &to->md)) && o->kind != OP_CONV && o->kind != OP_DECONV) return rc;
        mp_error_clear();
    }
    for (int i = 0; i < m->nt; i++) m->t[i].bytes = mp_cpu_md_bytes(&m->t[i].md);
    for (int h = 0; h < m->nhead; h++) {
        tensor_t *t = &m->t[m->head[h].tensor];
        dnnl_memory_desc_t plain;
        if ((rc = mp_cpu_md_plain(&plain, t->s)) || (rc = mp_cpu_reorder_create(&m->out_reorder[h], &plain, &t->md)) ||
            (rc = mp_cpu_reorder_create(&m->grad_reorder[h], &t->md, &plain)))
            return rc;
    }
    m->scratch_bytes = scratch; /* the largest; the arena plan gives each pass its own */
    return MP_OK;
}

void mp_unet_cpu_release(mp_unet_t *m) {
    for (int i = 0; i < m->nop; i++) {
        mp_cpu_conv_free(m->op[i].conv);
        m->op[i].conv = NULL;
    }
    mp_cpu_reorder_free(m->in_reorder);
    m->in_reorder = NULL;
    for (int h = 0; h < MP_UNET_MAX_STAGES; h++) {
        mp_cpu_reorder_free(m->out_reorder[h]);
        mp_cpu_reorder_free(m->grad_reorder[h]);
        m->out_reorder[h] = m->grad_reorder[h] = NULL;
    }
}

int mp_unet_cpu_forward(mp_unet_t *m, const float *input) {
    int rc;
    const float *P = m->params;
    tensor_t *tin = &m->t[m->input];
    double t0 = prof_begin(m);
    if (m->in_reorder) {
        if ((rc = mp_cpu_reorder_run(m->in_reorder, arena_at(m, tin->off), input))) return rc;
    } else {
        memcpy(arena_at(m, tin->off), input, tin->bytes);
    }
    prof_end(m, MP_UNET_PROF_REORDER, t0, 0);
    for (int i = 0; i < m->nop; i++) {
        op_t *o = &m->op[i];
        tensor_t *ti = &m->t[o->in], *to = &m->t[o->out];
        float *y = arena_at(m, to->off), *st;
        const float *x = arena_at(m, ti->off);
        t0 = prof_begin(m);
        switch (o->kind) {
        case OP_CONV:
        case OP_DECONV:
            if ((rc = mp_cpu_conv_forward(o->conv, y, x, P + m->p[o->pw].offset, P + m->p[o->pb].offset,
                                          arena_at(m, o->sfwd_off))))
                return rc;
            o->prof_s[0] += prof_end(m, MP_UNET_PROF_CONV_FWD, t0, o->flops);
            break;
        case OP_NORM_ACT:
            st = arena_at(m, o->stat_off);
            mp_cpu_inorm_forward(m->pool, y, st, st + to->s.n * to->s.c, x, P + m->p[o->pw].offset,
                                 P + m->p[o->pb].offset, &ti->l, m->cfg.norm_eps, 1, m->cfg.lrelu_slope);
            prof_end(m, MP_UNET_PROF_NORM_FWD, t0, 0);
            break;
        case OP_CONCAT:
            mp_cpu_concat_forward(m->pool, y, x, arena_at(m, m->t[o->in2].off), &to->l, &ti->l, &m->t[o->in2].l);
            prof_end(m, MP_UNET_PROF_CONCAT, t0, 0);
            break;
        }
    }
    t0 = prof_begin(m);
    for (int h = 0; h < m->nhead; h++)
        if ((rc = mp_cpu_reorder_run(m->out_reorder[h], arena_at(m, m->head[h].plain_off),
                                     arena_at(m, m->t[m->head[h].tensor].off))))
            return rc;
    prof_end(m, MP_UNET_PROF_REORDER, t0, 0);
    return MP_OK;
}

/* See unet_ref_impl.h: first gradient written in place, later ones into the
 * op's temporary (planned for that step) and added. */
static float *grad_dst(mp_unet_t *m, int t, size_t acc_off, int *accumulate) {
    *accumulate = m->t[t].grad_written;
    m->t[t].grad_written = 1;
    return arena_at(m, *accumulate ? acc_off : m->t[t].goff);
}

static void grad_finish(mp_unet_t *m, int t, size_t acc_off, int accumulate) {
    if (!accumulate) return;
    double t0 = prof_begin(m);
    mp_cpu_add(m->pool, arena_at(m, m->t[t].goff), arena_at(m, acc_off), (int64_t)(m->t[t].bytes / sizeof(float)));
    prof_end(m, MP_UNET_PROF_GRAD_ADD, t0, 0);
}

/* The value of tensor t for a backward op: kept, or recomputed (once per
 * pass) from its norm's input and statistics. */
static const float *value_for_backward(mp_unet_t *m, int t) {
    tensor_t *tt = &m->t[t];
    if (!tt->recompute) return arena_at(m, tt->off);
    if (!tt->recomputed) {
        const op_t *p = &m->op[tt->prod];
        const float *st = arena_at(m, p->stat_off);
        double t0 = prof_begin(m);
        mp_cpu_inorm_apply(m->pool, arena_at(m, tt->roff), arena_at(m, m->t[p->in].off), st, st + tt->s.n * tt->s.c,
                           m->params + m->p[p->pw].offset, m->params + m->p[p->pb].offset, &m->t[p->in].l, 1,
                           m->cfg.lrelu_slope);
        prof_end(m, MP_UNET_PROF_NORM_RECOMPUTE, t0, 0);
        tt->recomputed = 1;
    }
    return arena_at(m, tt->roff);
}

static int backward_op(mp_unet_t *m, op_t *o) {
    const float *P = m->params;
    float *G = m->grads;
    tensor_t *ti = &m->t[o->in], *to = &m->t[o->out];
    float *dy = arena_at(m, to->goff);
    int acc = 0, acc2 = 0, rc;
    switch (o->kind) {
    case OP_CONV:
    case OP_DECONV: {
        void *scratch = arena_at(m, o->sbwd_off);
        const float *x = value_for_backward(m, o->in);
        double t0 = prof_begin(m);
        if ((rc = mp_cpu_conv_backward_weights(o->conv, G + m->p[o->pw].offset, G + m->p[o->pb].offset, dy, x, scratch)))
            return rc;
        o->prof_s[2] += prof_end(m, MP_UNET_PROF_CONV_BWD_WEIGHTS, t0, o->flops);
        mp_unet_grad_final(m, o->pw);
        mp_unet_grad_final(m, o->pb);
        if (!o->need_dx) return MP_OK;
        float *dx = grad_dst(m, o->in, o->acc_off, &acc);
        t0 = prof_begin(m);
        if ((rc = mp_cpu_conv_backward_data(o->conv, dx, dy, P + m->p[o->pw].offset, scratch))) return rc;
        o->prof_s[1] += prof_end(m, MP_UNET_PROF_CONV_BWD_DATA, t0, o->flops);
        grad_finish(m, o->in, o->acc_off, acc);
        return MP_OK;
    }
    case OP_NORM_ACT: {
        const float *st = arena_at(m, o->stat_off);
        /* In place: the plan gives the input's gradient the output's buffer. */
        float *dx = grad_dst(m, o->in, o->acc_off, &acc);
        double t0 = prof_begin(m);
        mp_cpu_inorm_backward(m->pool, dx, G + m->p[o->pw].offset, G + m->p[o->pb].offset, dy, arena_at(m, ti->off),
                              st, st + to->s.n * to->s.c, P + m->p[o->pw].offset, P + m->p[o->pb].offset, &ti->l, 1,
                              m->cfg.lrelu_slope, arena_at(m, m->work_off));
        prof_end(m, MP_UNET_PROF_NORM_BWD, t0, 0);
        mp_unet_grad_final(m, o->pw);
        mp_unet_grad_final(m, o->pb);
        grad_finish(m, o->in, o->acc_off, acc);
        return MP_OK;
    }
    case OP_CONCAT: {
        float *da = grad_dst(m, o->in, o->acc_off, &acc), *db = grad_dst(m, o->in2, o->acc_off2, &acc2);
        if (acc && acc2) return mp_error_set(MP_ERR_INTERNAL, "unet: concat inputs both accumulate");
        double t0 = prof_begin(m);
        mp_cpu_concat_backward(m->pool, da, db, dy, &to->l, &ti->l, &m->t[o->in2].l);
        prof_end(m, MP_UNET_PROF_CONCAT, t0, 0);
        grad_finish(m, o->in, o->acc_off, acc);
        grad_finish(m, o->in2, o->acc_off2, acc2);
        return MP_OK;
    }
    }
    return MP_OK;
}

int mp_unet_cpu_backward(mp_unet_t *m) {
    int rc;
    for (int i = 0; i < m->nt; i++) m->t[i].grad_written = m->t[i].recomputed = 0;
    mp_unet_grads_begin(m);
    double t0 = prof_begin(m);
    for (int h = 0; h < m->nhead; h++) {
        tensor_t *t = &m->t[m->head[h].tensor];
        if ((rc = mp_cpu_reorder_run(m->grad_reorder[h], arena_at(m, t->goff), arena_at(m, m->head[h].dplain_off))))
            return rc;
        t->grad_written = 1;
    }
    prof_end(m, MP_UNET_PROF_REORDER, t0, 0);
    for (int i = m->nop - 1; i >= 0; i--) {
        if (!m->t[m->op[i].out].grad_written) return mp_error_set(MP_ERR_INTERNAL, "unet: op %d has no output gradient", i);
        if ((rc = backward_op(m, &m->op[i]))) return rc;
    }
    return MP_OK;
}
#endif
