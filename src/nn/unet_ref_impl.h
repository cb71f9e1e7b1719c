/* Body of the U-Net's reference execution, included by unet_ref.c for float
 * and double activations (R, F(name) defined there). Parameters come from the
 * fp32 slab, or from its double shadow when R is double. */

/* Gradient destination of tensor t: its own buffer the first time in a
 * backward pass, the shared temporary (to be added) after that. */
static R *F(grad_dst)(mp_unet_t *m, int t, int *accumulate) {
    tensor_t *tt = &m->t[t];
    *accumulate = tt->grad_written;
    tt->grad_written = 1;
    return arena_at(m, *accumulate ? m->tmp_off : tt->goff);
}

static void F(grad_finish)(mp_unet_t *m, int t, int accumulate) {
    if (!accumulate) return;
    R *dst = arena_at(m, m->t[t].goff);
    const R *src = arena_at(m, m->tmp_off);
    int64_t n = mp_shape5_elems(m->t[t].s);
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

static const R *F(param_base)(mp_unet_t *m) {
    if (sizeof(R) == sizeof(float)) return (const R *)m->params;
    R *sh = arena_at(m, m->shadow_off);
    for (int64_t i = 0; i < m->nparams; i++) sh[i] = (R)m->params[i];
    return sh;
}

static int F(ref_forward)(mp_unet_t *m, const float *input) {
    const R *P = F(param_base)(m);
    R *x0 = arena_at(m, m->t[m->input].off);
    int64_t nin = mp_shape5_elems(m->t[m->input].s);
    for (int64_t i = 0; i < nin; i++) x0[i] = (R)input[i];
    for (int i = 0; i < m->nop; i++) {
        op_t *o = &m->op[i];
        tensor_t *ti = &m->t[o->in], *to = &m->t[o->out];
        R *y = arena_at(m, to->off);
        const R *x = arena_at(m, ti->off);
        switch (o->kind) {
        case OP_CONV:
            F(mp_ref_conv3d_forward)(y, x, P + m->p[o->pw].offset, P + m->p[o->pb].offset, ti->s, to->s.c, &o->g);
            break;
        case OP_DECONV:
            F(mp_ref_deconv3d_forward)(y, x, P + m->p[o->pw].offset, P + m->p[o->pb].offset, ti->s, to->s.c, &o->g);
            break;
        case OP_NORM_ACT: {
            R *pre = arena_at(m, o->pre_off), *st = arena_at(m, o->stat_off);
            int64_t nc = to->s.n * to->s.c;
            F(mp_ref_norm_forward)(pre, st, st + nc, x, P + m->p[o->pw].offset, P + m->p[o->pb].offset, ti->s, 1,
                                   m->cfg.norm_eps);
            F(mp_ref_lrelu_forward)(y, pre, mp_shape5_elems(to->s), m->cfg.lrelu_slope);
            break;
        }
        case OP_CONCAT:
            F(mp_ref_concat_forward)(y, x, arena_at(m, m->t[o->in2].off), ti->s, m->t[o->in2].s.c);
            break;
        }
    }
    for (int h = 0; h < m->nhead; h++) {
        tensor_t *t = &m->t[m->head[h].tensor];
        memcpy(arena_at(m, m->head[h].plain_off), arena_at(m, t->off), t->bytes);
    }
    return MP_OK;
}

static int F(ref_backward)(mp_unet_t *m) {
    const R *P = sizeof(R) == sizeof(float) ? (const R *)m->params : (const R *)arena_at(m, m->shadow_off);
    R *G = sizeof(R) == sizeof(float) ? (R *)m->grads : (R *)arena_at(m, m->gshadow_off);
    memset(G, 0, (size_t)m->nparams * sizeof(R)); /* unused heads keep a zero gradient */
    mp_unet_grads_begin(m);
    for (int i = 0; i < m->nt; i++) m->t[i].grad_written = 0;
    for (int h = 0; h < m->nhead; h++) {
        tensor_t *t = &m->t[m->head[h].tensor];
        memcpy(arena_at(m, t->goff), arena_at(m, m->head[h].dplain_off), t->bytes);
        t->grad_written = 1;
    }
    for (int i = m->nop - 1; i >= 0; i--) {
        op_t *o = &m->op[i];
        tensor_t *ti = &m->t[o->in], *to = &m->t[o->out];
        R *dy = arena_at(m, to->goff);
        const R *x = arena_at(m, ti->off);
        int acc = 0, acc2 = 0;
        if (!to->grad_written) return mp_error_set(MP_ERR_INTERNAL, "unet: op %d has no output gradient", i);
        switch (o->kind) {
        case OP_CONV:
        case OP_DECONV: {
            const R *w = P + m->p[o->pw].offset;
            R *dw = G + m->p[o->pw].offset, *db = G + m->p[o->pb].offset;
            if (o->kind == OP_CONV) F(mp_ref_conv3d_backward_weights)(dw, db, dy, x, ti->s, to->s.c, &o->g);
            else F(mp_ref_deconv3d_backward_weights)(dw, db, dy, x, ti->s, to->s.c, &o->g);
            mp_unet_grad_final(m, o->pw);
            mp_unet_grad_final(m, o->pb);
            if (!o->need_dx) break;
            R *dx = F(grad_dst)(m, o->in, &acc);
            if (o->kind == OP_CONV) F(mp_ref_conv3d_backward_data)(dx, dy, w, ti->s, to->s.c, &o->g);
            else F(mp_ref_deconv3d_backward_data)(dx, dy, w, ti->s, to->s.c, &o->g);
            F(grad_finish)(m, o->in, acc);
            break;
        }
        case OP_NORM_ACT: {
            const R *pre = arena_at(m, o->pre_off), *st = arena_at(m, o->stat_off);
            int64_t nc = to->s.n * to->s.c;
            F(mp_ref_lrelu_backward)(dy, dy, pre, mp_shape5_elems(to->s), m->cfg.lrelu_slope);
            R *dx = F(grad_dst)(m, o->in, &acc);
            F(mp_ref_norm_backward)(dx, G + m->p[o->pw].offset, G + m->p[o->pb].offset, dy, x, st, st + nc,
                                    P + m->p[o->pw].offset, ti->s, 1);
            mp_unet_grad_final(m, o->pw);
            mp_unet_grad_final(m, o->pb);
            F(grad_finish)(m, o->in, acc);
            break;
        }
        case OP_CONCAT: {
            R *da = F(grad_dst)(m, o->in, &acc);
            R *db = F(grad_dst)(m, o->in2, &acc2);
            if (acc && acc2) return mp_error_set(MP_ERR_INTERNAL, "unet: concat inputs both accumulate");
            F(mp_ref_concat_backward)(da, db, dy, ti->s, m->t[o->in2].s.c);
            F(grad_finish)(m, o->in, acc);
            F(grad_finish)(m, o->in2, acc2);
            break;
        }
        }
    }
    return MP_OK; /* the f64 gradients were converted tensor by tensor as they became final */
}
