/* Arena plan of the oneDNN engine by lifetime. A training step is a
 * timeline: the forward ops (step i for op i), the output reorders (F_END),
 * the loss and gradient reorders (B_START), then the backward ops in reverse
 * (step bstep(i) for op i). Every buffer is one interval of steps; buffers
 * whose intervals do not meet share bytes. What the plan keeps:
 *  - a value lives from its producer to its last reader; it is kept for the
 *    backward pass only when a backward op reads it (conv/deconv: its
 *    input, for the weight gradient; norm: its input). Norm+LeakyReLU
 *    outputs are not kept: the conv backward that needs one recomputes it
 *    into a short-lived buffer from the kept conv output and the saved
 *    statistics (one cheap elementwise pass); the norm backward recomputes
 *    its mask the same way. Upsampled maps and logits live only in the
 *    forward (the concat and the loss have no backward use of values).
 *  - a gradient lives from its first write to its producer's backward; the
 *    norm backward writes its input's gradient over its output's (in place).
 *  - a second gradient into the same tensor goes to a temporary of that
 *    step; conv scratchpads are temporaries of their step.
 * Placement is greedy first fit, largest buffers first. */
#include "nn/unet_internal.h"

#ifdef MP_HAVE_DNNL
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t bytes, off;
    int first, last;
    size_t *dst[2]; /* where the offset goes (a shared buffer feeds two) */
} req_t;

typedef struct {
    req_t *r;
    int n, cap;
} reqs_t;

static int bstep(const mp_unet_t *m, int op) { return 2 * m->nop + 1 - op; }

static int add_req(reqs_t *q, size_t bytes, int first, int last, size_t *dst) {
    if (q->n == q->cap) {
        int cap = q->cap ? 2 * q->cap : 256;
        req_t *r = realloc(q->r, (size_t)cap * sizeof *r);
        if (!r) return mp_error_set(MP_ERR_NOMEM, "unet: out of memory planning the arena");
        q->r = r, q->cap = cap;
    }
    q->r[q->n++] = (req_t){.bytes = bytes, .first = first, .last = last, .dst = {dst, NULL}};
    return MP_OK;
}

static int cmp_size(const void *a, const void *b) {
    const req_t *x = *(req_t *const *)a, *y = *(req_t *const *)b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return x < y ? -1 : x > y; /* stable: the plan is the same on every run */
}

static int cmp_off(const void *a, const void *b) {
    const req_t *x = *(req_t *const *)a, *y = *(req_t *const *)b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* First fit: the lowest 64-byte aligned gap among the placed buffers that
 * are live at the same time; *total receives the arena size. */
static int place_all(reqs_t *q, size_t *total) {
    req_t **ord = malloc((size_t)q->n * 2 * sizeof *ord);
    if (!ord) return mp_error_set(MP_ERR_NOMEM, "unet: out of memory planning the arena");
    req_t **live = ord + q->n;
    for (int i = 0; i < q->n; i++) ord[i] = &q->r[i];
    qsort(ord, (size_t)q->n, sizeof *ord, cmp_size);
    *total = 0;
    for (int i = 0; i < q->n; i++) {
        req_t *r = ord[i];
        int nl = 0;
        for (int j = 0; j < i; j++)
            if (ord[j]->first <= r->last && r->first <= ord[j]->last) live[nl++] = ord[j];
        qsort(live, (size_t)nl, sizeof *live, cmp_off);
        size_t off = 0, need = (r->bytes + 63) / 64 * 64;
        for (int j = 0; j < nl; j++) {
            if (live[j]->off >= off + need) break;
            size_t end = live[j]->off + (live[j]->bytes + 63) / 64 * 64;
            if (end > off) off = end;
        }
        r->off = off;
        if (off + need > *total) *total = off + need;
    }
    free(ord);
    /* Self-check (cheap at this size): no two buffers live at once share a byte. */
    for (int i = 0; i < q->n; i++)
        for (int j = i + 1; j < q->n; j++) {
            const req_t *a = &q->r[i], *b = &q->r[j];
            if (a->bytes && b->bytes && a->first <= b->last && b->first <= a->last && a->off < b->off + b->bytes &&
                b->off < a->off + a->bytes)
                return mp_error_set(MP_ERR_INTERNAL, "unet: arena plan overlaps buffers %d and %d", i, j);
        }
    for (int i = 0; i < q->n; i++)
        for (int k = 0; k < 2; k++)
            if (q->r[i].dst[k]) *q->r[i].dst[k] = q->r[i].off;
    return MP_OK;
}

/* Does the backward of op o read the value of its input? */
static int reads_input_value(const op_t *o) { return o->kind != OP_CONCAT; }

static int writes_grad_of(const mp_unet_t *m, const op_t *o, int t) {
    (void)m;
    if (o->in == t) return o->kind != OP_CONV && o->kind != OP_DECONV ? 1 : o->need_dx;
    return o->kind == OP_CONCAT && o->in2 == t;
}

static int is_head(const mp_unet_t *m, int t) {
    for (int h = 0; h < m->nhead; h++)
        if (m->head[h].tensor == t) return 1;
    return 0;
}

/* Value (and recompute) intervals of tensor t. */
static int plan_value(mp_unet_t *m, reqs_t *q, int t) {
    tensor_t *tt = &m->t[t];
    int first = tt->prod < 0 ? 0 : tt->prod, flast = first, bmin = -1, bmax = -1;
    for (int i = 0; i < m->nop; i++) {
        const op_t *o = &m->op[i];
        if (o->in != t && o->in2 != t) continue;
        if (i > flast) flast = i;
        if (o->in == t && reads_input_value(o)) {
            if (bmin < 0) bmin = i;
            bmax = i;
        }
    }
    if (is_head(m, t)) flast = m->nop;
    tt->recompute = tt->prod >= 0 && m->op[tt->prod].kind == OP_NORM_ACT;
    if (bmin < 0 || tt->recompute) {
        if (bmin >= 0 && add_req(q, tt->bytes, bstep(m, bmax), bstep(m, bmin), &tt->roff)) return MP_ERR_NOMEM;
        return add_req(q, tt->bytes, first, flast, &tt->off);
    }
    return add_req(q, tt->bytes, first, bstep(m, bmin), &tt->off);
}

/* Gradient interval of tensor t, and the accumulation temporaries into it. */
static int plan_grad(mp_unet_t *m, reqs_t *q, int t) {
    tensor_t *tt = &m->t[t];
    int first = is_head(m, t) ? m->nop + 1 : -1, last = tt->prod < 0 ? 2 * m->nop + 1 : bstep(m, tt->prod);
    for (int i = m->nop - 1; i >= 0; i--) {
        op_t *o = &m->op[i];
        if (!writes_grad_of(m, o, t)) continue;
        if (first < 0) {
            first = bstep(m, i);
            continue;
        }
        size_t *dst = o->in == t ? &o->acc_off : &o->acc_off2;
        if (add_req(q, tt->bytes, bstep(m, i), bstep(m, i), dst)) return MP_ERR_NOMEM;
    }
    if (first < 0) first = last;
    /* A norm output's gradient becomes its input's gradient in place: its
     * input's buffer covers both (see mp_unet_cpu_plan_arena). */
    if (tt->prod >= 0 && m->op[tt->prod].kind == OP_NORM_ACT) return MP_OK;
    return add_req(q, tt->bytes, first, last, &tt->goff);
}

/* The buffer of a norm input's gradient also holds the norm output's gradient
 * from that one's first write on. */
static void share_norm_grads(mp_unet_t *m, reqs_t *q) {
    for (int i = 0; i < m->nop; i++) {
        op_t *o = &m->op[i];
        if (o->kind != OP_NORM_ACT) continue;
        int f = is_head(m, o->out) ? m->nop + 1 : bstep(m, i);
        for (int j = i + 1; j < m->nop; j++)
            if (writes_grad_of(m, &m->op[j], o->out) && bstep(m, j) < f) f = bstep(m, j);
        for (int k = 0; k < q->n; k++)
            if (q->r[k].dst[0] == &m->t[o->in].goff) {
                if (f < q->r[k].first) q->r[k].first = f;
                q->r[k].dst[1] = &m->t[o->out].goff;
            }
    }
}

int mp_unet_cpu_plan_arena(mp_unet_t *m) {
    reqs_t q = {0};
    int rc = MP_OK, end = 2 * m->nop + 1;
    for (int t = 0; t < m->nt && !rc; t++) {
        rc = plan_value(m, &q, t);
        if (!rc && m->t[t].has_grad) rc = plan_grad(m, &q, t);
    }
    if (!rc) share_norm_grads(m, &q);
    for (int i = 0; i < m->nop && !rc; i++) {
        op_t *o = &m->op[i];
        if (o->kind == OP_NORM_ACT) {
            size_t nc = (size_t)(m->t[o->out].s.n * m->t[o->out].s.c);
            rc = add_req(&q, 2 * nc * sizeof(float), 0, end, &o->stat_off);
        } else if (o->conv) {
            size_t sb = mp_cpu_conv_scratch_pass_bytes(o->conv, 1), sw = mp_cpu_conv_scratch_pass_bytes(o->conv, 2);
            rc = add_req(&q, mp_cpu_conv_scratch_pass_bytes(o->conv, 0), i, i, &o->sfwd_off);
            if (!rc) rc = add_req(&q, sb > sw ? sb : sw, bstep(m, i), bstep(m, i), &o->sbwd_off);
        }
    }
    for (int h = 0; h < m->nhead && !rc; h++) {
        head_t *hd = &m->head[h];
        mp_shape5_t s = m->t[hd->tensor].s;
        size_t n = (size_t)mp_shape5_elems(s);
        /* Plain logits and their gradient stay readable between the calls. */
        rc = add_req(&q, n * sizeof(float), 0, end, &hd->plain_off);
        if (!rc) rc = add_req(&q, n * sizeof(float), 0, end, &hd->dplain_off);
        if (!rc) rc = add_req(&q, (size_t)(s.n * s.d * s.h * s.w), 0, end, &hd->label_off);
    }
    int64_t maxc = 0;
    for (int i = 0; i < m->nt; i++)
        if (m->t[i].s.c > maxc) maxc = m->t[i].s.c;
    if (!rc) rc = add_req(&q, (size_t)(2 * m->cfg.batch * maxc) * sizeof(float), 0, end, &m->work_off);
    size_t total = 0, naive = 0, peak = 0;
    int peak_step = 0;
    for (int k = 0; k < q.n; k++) naive += (q.r[k].bytes + 63) / 64 * 64;
    for (int st = 0; st <= end; st++) {
        size_t live = 0;
        for (int k = 0; k < q.n; k++)
            if (q.r[k].first <= st && st <= q.r[k].last) live += (q.r[k].bytes + 63) / 64 * 64;
        if (live > peak) peak = live, peak_step = st;
    }
    if (!rc) rc = place_all(&q, &total);
    mp_log(MP_LOG_DEBUG, "unet: arena %.1f MiB by lifetime (most live at once: %.1f MiB, step %d of %d; "
           "%.1f MiB with a place for every buffer)", (double)total / 1048576.0, (double)peak / 1048576.0, peak_step,
           end, (double)naive / 1048576.0);
    free(q.r);
    if (rc) return rc;
    m->scratch_off = m->tmp_off = 0; /* not used by this engine */
    m->arena_bytes = total + 64;
    return MP_OK;
}
#endif
