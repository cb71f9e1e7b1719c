/* Memory-bound kernels that work directly on oneDNN's blocked activation
 * layouts (nCdhw<B>c), so no reorder is needed around them: instance norm
 * fused with LeakyReLU (forward and backward), channel concatenation and
 * gradient accumulation. Work is split over (sample, channel block) rows on
 * the thread pool; per-lane sums are kept in double for accuracy, and the
 * B lanes of a row vectorize without reassociating any sum. */
#include "cpu/cpu.h"

#include <math.h>
#include <string.h>

typedef struct {
    float *y, *dx, *dgamma, *dbeta, *mean, *rstd, *work;
    const float *x, *dy, *yo, *gamma, *beta, *cmean, *crstd;
    const mp_cpu_layout_t *l;
    double eps, slope;
    int act;
} inorm_ctx_t;

/* Forward of one (n, channel block) row with B lanes. */
static inline void inorm_fwd_row(inorm_ctx_t *c, int64_t row, const int64_t B) {
    const mp_cpu_layout_t *l = c->l;
    int64_t cb = l->cpad / B, n = row / cb, c0 = (row % cb) * B, sp = l->sp;
    const float *x = c->x + row * sp * B;
    float *y = c->y + row * sp * B;
    double s[16] = {0}, q[16] = {0};
    float m[16], r[16], ga[16], be[16];
    for (int64_t v = 0; v < sp; v++)
        for (int64_t j = 0; j < B; j++) s[j] += x[v * B + j];
    for (int64_t j = 0; j < B; j++) m[j] = (float)(s[j] / (double)sp);
    for (int64_t v = 0; v < sp; v++)
        for (int64_t j = 0; j < B; j++) {
            double d = x[v * B + j] - m[j];
            q[j] += d * d;
        }
    for (int64_t j = 0; j < B; j++) {
        int live = c0 + j < l->c;
        r[j] = (float)(1.0 / sqrt(q[j] / (double)sp + c->eps));
        /* Padded channels get gamma = beta = 0 so they stay zero. */
        ga[j] = live ? (c->gamma ? c->gamma[c0 + j] : 1.0f) * r[j] : 0.0f;
        be[j] = live ? (c->beta ? c->beta[c0 + j] : 0.0f) - ga[j] * m[j] : 0.0f;
        if (live) {
            c->mean[n * l->c + c0 + j] = m[j];
            c->rstd[n * l->c + c0 + j] = r[j];
        }
    }
    float slope = (float)c->slope;
    if (c->act) {
        for (int64_t v = 0; v < sp; v++)
            for (int64_t j = 0; j < B; j++) {
                float t = x[v * B + j] * ga[j] + be[j];
                y[v * B + j] = t > 0 ? t : t * slope;
            }
    } else {
        for (int64_t v = 0; v < sp; v++)
            for (int64_t j = 0; j < B; j++) y[v * B + j] = x[v * B + j] * ga[j] + be[j];
    }
}

static void inorm_fwd_range(void *ctx, int64_t begin, int64_t end, int worker) {
    inorm_ctx_t *c = ctx;
    (void)worker;
    for (int64_t row = begin; row < end; row++) {
        switch (c->l->block) {
        case 16: inorm_fwd_row(c, row, 16); break;
        case 8: inorm_fwd_row(c, row, 8); break;
        case 4: inorm_fwd_row(c, row, 4); break;
        default: inorm_fwd_row(c, row, 1); break;
        }
    }
}

void mp_cpu_inorm_forward(mp_pool_t *pool, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                          const float *beta, const mp_cpu_layout_t *l, double eps, int act, double slope) {
    inorm_ctx_t c = {.y = y, .mean = mean, .rstd = rstd, .x = x, .gamma = gamma, .beta = beta, .l = l,
                     .eps = eps, .act = act, .slope = slope};
    mp_pool_parallel_for(pool, l->n * (l->cpad / l->block), inorm_fwd_range, &c);
}

/* Backward of one row: g = dy masked by the LeakyReLU, then the instance-norm
 * backward. Partial dgamma/dbeta of the row go to work (summed over n later). */
static inline void inorm_bwd_row(inorm_ctx_t *c, int64_t row, const int64_t B) {
    const mp_cpu_layout_t *l = c->l;
    int64_t cb = l->cpad / B, n = row / cb, c0 = (row % cb) * B, sp = l->sp;
    const float *x = c->x + row * sp * B, *dy = c->dy + row * sp * B, *yo = c->yo + row * sp * B;
    float *dx = c->dx + row * sp * B;
    double sg[16] = {0}, sgx[16] = {0};
    float m[16], r[16], k1[16], k2[16], k3[16];
    float slope = c->act ? (float)c->slope : 1.0f;
    for (int64_t j = 0; j < B; j++) {
        int live = c0 + j < l->c;
        m[j] = live ? c->cmean[n * l->c + c0 + j] : 0.0f;
        r[j] = live ? c->crstd[n * l->c + c0 + j] : 0.0f;
    }
    for (int64_t v = 0; v < sp; v++)
        for (int64_t j = 0; j < B; j++) {
            float g = yo[v * B + j] > 0 ? dy[v * B + j] : dy[v * B + j] * slope;
            sg[j] += g;
            sgx[j] += g * ((x[v * B + j] - m[j]) * r[j]);
        }
    for (int64_t j = 0; j < B; j++) {
        int live = c0 + j < l->c;
        float ga = live ? (c->gamma ? c->gamma[c0 + j] : 1.0f) : 0.0f;
        /* dx = ga*r*(g - mean(g) - xhat*mean(g*xhat)), xhat = (x - m)*r. */
        k1[j] = ga * r[j];
        k2[j] = (float)(sg[j] / (double)sp);
        k3[j] = (float)(sgx[j] / (double)sp) * r[j];
        if (live) {
            c->work[n * l->c + c0 + j] = (float)sgx[j];
            c->work[l->n * l->c + n * l->c + c0 + j] = (float)sg[j];
        }
    }
    for (int64_t v = 0; v < sp; v++)
        for (int64_t j = 0; j < B; j++) {
            float g = yo[v * B + j] > 0 ? dy[v * B + j] : dy[v * B + j] * slope;
            dx[v * B + j] = k1[j] * (g - k2[j] - (x[v * B + j] - m[j]) * k3[j]);
        }
}

static void inorm_bwd_range(void *ctx, int64_t begin, int64_t end, int worker) {
    inorm_ctx_t *c = ctx;
    (void)worker;
    for (int64_t row = begin; row < end; row++) {
        switch (c->l->block) {
        case 16: inorm_bwd_row(c, row, 16); break;
        case 8: inorm_bwd_row(c, row, 8); break;
        case 4: inorm_bwd_row(c, row, 4); break;
        default: inorm_bwd_row(c, row, 1); break;
        }
    }
}

void mp_cpu_inorm_backward(mp_pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *y, const float *mean, const float *rstd, const float *gamma,
                           const mp_cpu_layout_t *l, int act, double slope, float *work) {
    inorm_ctx_t c = {.dx = dx, .work = work, .x = x, .dy = dy, .yo = y, .gamma = gamma, .cmean = mean,
                     .crstd = rstd, .l = l, .act = act, .slope = slope};
    mp_pool_parallel_for(pool, l->n * (l->cpad / l->block), inorm_bwd_range, &c);
    for (int64_t ch = 0; ch < l->c; ch++) {
        double a = 0, b = 0;
        for (int64_t n = 0; n < l->n; n++) {
            a += work[n * l->c + ch];
            b += work[l->n * l->c + n * l->c + ch];
        }
        if (dgamma) dgamma[ch] = (float)a;
        if (dbeta) dbeta[ch] = (float)b;
    }
}

/* ---- concatenation ---- */
typedef struct {
    float *y, *a, *b;
    const float *cy, *ca, *cb;
    const mp_cpu_layout_t *ly, *la, *lb;
    int backward;
} concat_ctx_t;

/* Copies channel rows between a part (la, channel offset off in y). */
static void concat_part(concat_ctx_t *c, int64_t n, const mp_cpu_layout_t *lp, float *part, const float *cpart,
                        int64_t off) {
    const mp_cpu_layout_t *ly = c->ly;
    if (lp->block == ly->block && off % ly->block == 0) {
        /* Whole channel blocks line up: one contiguous copy per sample. */
        size_t len = (size_t)(lp->cpad * lp->sp) * sizeof(float);
        float *ydst = c->y + mp_cpu_layout_index(ly, n, off, 0);
        const float *ysrc = c->cy + mp_cpu_layout_index(ly, n, off, 0);
        if (c->backward) memcpy(part + n * lp->cpad * lp->sp, ysrc, len);
        else memcpy(ydst, cpart + n * lp->cpad * lp->sp, len);
        return;
    }
    for (int64_t ch = 0; ch < lp->c; ch++)
        for (int64_t s = 0; s < lp->sp; s++) {
            int64_t iy = mp_cpu_layout_index(ly, n, off + ch, s), ip = mp_cpu_layout_index(lp, n, ch, s);
            if (c->backward) part[ip] = c->cy[iy];
            else c->y[iy] = cpart[ip];
        }
}

static void concat_range(void *ctx, int64_t begin, int64_t end, int worker) {
    concat_ctx_t *c = ctx;
    (void)worker;
    for (int64_t n = begin; n < end; n++) {
        concat_part(c, n, c->la, c->a, c->ca, 0);
        concat_part(c, n, c->lb, c->b, c->cb, c->la->c);
    }
}

void mp_cpu_concat_forward(mp_pool_t *pool, float *y, const float *a, const float *b, const mp_cpu_layout_t *ly,
                           const mp_cpu_layout_t *la, const mp_cpu_layout_t *lb) {
    /* Unaligned element copies leave padded channels alone: zero them once. */
    int aligned = la->block == ly->block && lb->block == ly->block && la->c % ly->block == 0;
    if (!aligned && ly->cpad != ly->c) memset(y, 0, (size_t)(ly->n * ly->cpad * ly->sp) * sizeof *y);
    concat_ctx_t c = {.y = y, .ca = a, .cb = b, .ly = ly, .la = la, .lb = lb, .backward = 0};
    mp_pool_parallel_for(pool, ly->n, concat_range, &c);
}

void mp_cpu_concat_backward(mp_pool_t *pool, float *da, float *db, const float *dy, const mp_cpu_layout_t *ly,
                            const mp_cpu_layout_t *la, const mp_cpu_layout_t *lb) {
    int aligned = la->block == ly->block && lb->block == ly->block && la->c % ly->block == 0;
    if (!aligned) {
        if (la->cpad != la->c) memset(da, 0, (size_t)(la->n * la->cpad * la->sp) * sizeof *da);
        if (lb->cpad != lb->c) memset(db, 0, (size_t)(lb->n * lb->cpad * lb->sp) * sizeof *db);
    }
    concat_ctx_t c = {.a = da, .b = db, .cy = dy, .ly = ly, .la = la, .lb = lb, .backward = 1};
    mp_pool_parallel_for(pool, ly->n, concat_range, &c);
}

/* ---- elementwise ---- */
typedef struct {
    float *dst;
    const float *src, *aux;
    double slope;
} ew_ctx_t;

static void add_range(void *ctx, int64_t begin, int64_t end, int worker) {
    ew_ctx_t *c = ctx;
    (void)worker;
    for (int64_t i = begin; i < end; i++) c->dst[i] += c->src[i];
}

void mp_cpu_add(mp_pool_t *pool, float *dst, const float *src, int64_t n) {
    ew_ctx_t c = {.dst = dst, .src = src};
    mp_pool_parallel_for(pool, n, add_range, &c);
}

static void lrelu_bwd_range(void *ctx, int64_t begin, int64_t end, int worker) {
    ew_ctx_t *c = ctx;
    float s = (float)c->slope;
    (void)worker;
    for (int64_t i = begin; i < end; i++) c->dst[i] = c->aux[i] > 0 ? c->src[i] : c->src[i] * s;
}

void mp_cpu_lrelu_backward_from_output(mp_pool_t *pool, float *dx, const float *dy, const float *y, int64_t n,
                                       double slope) {
    ew_ctx_t c = {.dst = dx, .src = dy, .aux = y, .slope = slope};
    mp_pool_parallel_for(pool, n, lrelu_bwd_range, &c);
}
