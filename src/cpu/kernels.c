/* Memory-bound kernels that work directly on oneDNN's blocked activation
 * layouts (nCdhw<B>c), so no reorder is needed around them: instance norm
 * fused with LeakyReLU (forward and backward), channel concatenation and
 * gradient accumulation. Work is split over (sample, channel block) rows on
 * the thread pool; per-lane sums are kept in double for accuracy, and the
 * B lanes of a row vectorize without reassociating any sum. */
#ifdef MP_HAVE_DNNL
/* gcc at -O2 left the instance-norm loops scalar (a fifth of a training
 * step): its "very cheap" cost model, and -ftrapping-math, which forbids
 * turning the LeakyReLU selects into blends. Neither changes results here
 * (no FP exception flags are read); clang vectorizes these at -O2 already. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=dynamic", "no-trapping-math")
#endif
#include "cpu/cpu.h"
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

/* oneDNN runs on an OpenMP team; a second pool of threads next to it makes
 * the two spin against each other (on a loaded 2-core machine a step became
 * 20x slower). So the kernels run on the same team, through libgomp's
 * GOMP_parallel entry point (what `#pragma omp parallel` compiles to), with
 * the same static partition as mp_pool_parallel_for. Without libgomp they
 * fall back to the medpipe pool. */
typedef void (*gomp_parallel_t)(void (*)(void *), void *, unsigned, unsigned);
static gomp_parallel_t gomp_parallel;
static int (*omp_thread_num)(void), (*omp_num_threads)(void);
static pthread_once_t gomp_once = PTHREAD_ONCE_INIT;

static void gomp_resolve(void) {
    gomp_parallel = (gomp_parallel_t)dlsym(RTLD_DEFAULT, "GOMP_parallel");
    omp_thread_num = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_thread_num");
    omp_num_threads = (int (*)(void))dlsym(RTLD_DEFAULT, "omp_get_num_threads");
}

typedef struct {
    int64_t n;
    mp_range_fn fn;
    void *ctx;
} team_job_t;

static void team_body(void *p) {
    team_job_t *j = p;
    int t = omp_thread_num(), nt = omp_num_threads();
    int64_t b = j->n * t / nt, e = j->n * (t + 1) / nt;
    if (e > b) j->fn(j->ctx, b, e, t);
}

static void par_for(mp_pool_t *pool, int64_t n, mp_range_fn fn, void *ctx) {
    pthread_once(&gomp_once, gomp_resolve);
    if (pool && mp_pool_threads(pool) > 1 && n > 1 && gomp_parallel && omp_thread_num && omp_num_threads) {
        team_job_t j = {n, fn, ctx};
        gomp_parallel(team_body, &j, (unsigned)mp_pool_threads(pool), 0);
        return;
    }
    mp_pool_parallel_for(pool, n, fn, ctx);
}

void mp_cpu_team_for(int64_t n, mp_range_fn fn, void *ctx) {
    pthread_once(&gomp_once, gomp_resolve);
    if (n > 1 && gomp_parallel && omp_thread_num && omp_num_threads) {
        team_job_t j = {n, fn, ctx};
        gomp_parallel(team_body, &j, 0, 0);
        return;
    }
    if (n > 0) fn(ctx, 0, n, 0);
}

typedef struct {
    float *y, *dx, *dgamma, *dbeta, *mean, *rstd, *work;
    const float *x, *dy, *gamma, *beta, *cmean, *crstd;
    const mp_cpu_layout_t *l;
    double eps, slope;
    int act;
    int apply; /* forward from saved statistics (cmean, crstd): no statistics pass */
} inorm_ctx_t;

/* Scale and shift of lanes [c0, c0 + J) from their mean and rstd, exactly as
 * the forward computes them, so that the backward's LeakyReLU mask and a
 * recomputed output match the forward bit for bit. */
static inline __attribute__((always_inline)) void inorm_affine(const inorm_ctx_t *c, int64_t c0, const int64_t J,
                                                               const float *m, const float *r, float *ga, float *be) {
    for (int64_t j = 0; j < J; j++) {
        int live = c0 + j < c->l->c;
        /* Padded channels get gamma = beta = 0 so they stay zero. */
        ga[j] = live ? (c->gamma ? c->gamma[c0 + j] : 1.0f) * r[j] : 0.0f;
        be[j] = live ? (c->beta ? c->beta[c0 + j] : 0.0f) - ga[j] * m[j] : 0.0f;
    }
}

/* Forward of lanes [j0, j0 + J) (J <= 16) of one (n, channel block) row of
 * B channels per voxel. Channels last is the case of one row per sample. */
static inline __attribute__((always_inline)) void inorm_fwd_row(inorm_ctx_t *c, int64_t row, const int64_t B, int64_t j0, const int64_t J) {
    const mp_cpu_layout_t *l = c->l;
    int64_t cb = l->cpad / B, n = row / cb, c0 = (row % cb) * B + j0, sp = l->sp;
    const float *restrict x = c->x + row * sp * B + j0;
    float *restrict y = c->y + row * sp * B + j0;
    float m[16], r[16], ga[16], be[16];
    if (c->apply) {
        for (int64_t j = 0; j < J; j++) {
            int live = c0 + j < l->c;
            m[j] = live ? c->cmean[n * l->c + c0 + j] : 0.0f;
            r[j] = live ? c->crstd[n * l->c + c0 + j] : 0.0f;
        }
    } else {
        double s[16] = {0}, q[16] = {0};
        for (int64_t v = 0; v < sp; v++)
            for (int64_t j = 0; j < J; j++) s[j] += x[v * B + j];
        for (int64_t j = 0; j < J; j++) m[j] = (float)(s[j] / (double)sp);
        for (int64_t v = 0; v < sp; v++)
            for (int64_t j = 0; j < J; j++) {
                double d = x[v * B + j] - m[j];
                q[j] += d * d;
            }
        for (int64_t j = 0; j < J; j++) {
            r[j] = (float)(1.0 / sqrt(q[j] / (double)sp + c->eps));
            if (c0 + j < l->c) {
                c->mean[n * l->c + c0 + j] = m[j];
                c->rstd[n * l->c + c0 + j] = r[j];
            }
        }
    }
    inorm_affine(c, c0, J, m, r, ga, be);
    float slope = (float)c->slope;
    if (c->act) {
        for (int64_t v = 0; v < sp; v++)
            for (int64_t j = 0; j < J; j++) {
                /* Both arms computed unconditionally: a select, which
                 * vectorizes (a conditional multiply may trap, so it would not). */
                float t = x[v * B + j] * ga[j] + be[j], u = t * slope;
                y[v * B + j] = t > 0 ? t : u;
            }
    } else {
        for (int64_t v = 0; v < sp; v++)
            for (int64_t j = 0; j < J; j++) y[v * B + j] = x[v * B + j] * ga[j] + be[j];
    }
}

/* Tasks are (row, chunk of 16 lanes); blocks of 4, 8, 16 get constant trip counts. */
static int64_t lane_chunks(const mp_cpu_layout_t *l) { return (l->block + 15) / 16; }

static void inorm_fwd_range(void *ctx, int64_t begin, int64_t end, int worker) {
    inorm_ctx_t *c = ctx;
    int64_t B = c->l->block, nch = lane_chunks(c->l);
    (void)worker;
    for (int64_t task = begin; task < end; task++) {
        int64_t row = task / nch, j0 = (task % nch) * 16, J = B - j0 < 16 ? B - j0 : 16;
        switch (B) {
        case 16: inorm_fwd_row(c, row, 16, 0, 16); break;
        case 8: inorm_fwd_row(c, row, 8, 0, 8); break;
        case 4: inorm_fwd_row(c, row, 4, 0, 4); break;
        case 1: inorm_fwd_row(c, row, 1, 0, 1); break;
        default:
            if (J == 16) inorm_fwd_row(c, row, B, j0, 16);
            else inorm_fwd_row(c, row, B, j0, J);
        }
    }
}

void mp_cpu_inorm_forward(mp_pool_t *pool, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                          const float *beta, const mp_cpu_layout_t *l, double eps, int act, double slope) {
    inorm_ctx_t c = {.y = y, .mean = mean, .rstd = rstd, .x = x, .gamma = gamma, .beta = beta, .l = l,
                     .eps = eps, .act = act, .slope = slope};
    par_for(pool, l->n * (l->cpad / l->block) * lane_chunks(l), inorm_fwd_range, &c);
}

void mp_cpu_inorm_apply(mp_pool_t *pool, float *y, const float *x, const float *mean, const float *rstd,
                        const float *gamma, const float *beta, const mp_cpu_layout_t *l, int act, double slope) {
    inorm_ctx_t c = {.y = y, .cmean = mean, .crstd = rstd, .x = x, .gamma = gamma, .beta = beta, .l = l,
                     .act = act, .slope = slope, .apply = 1};
    par_for(pool, l->n * (l->cpad / l->block) * lane_chunks(l), inorm_fwd_range, &c);
}

/* Backward of one row: g = dy masked by the LeakyReLU, then the instance-norm
 * backward. The mask comes from the pre-activation recomputed from x and the
 * saved statistics (the output itself is not kept). Partial dgamma/dbeta of
 * the row go to work (summed over n later). dx may be dy (in place): each
 * element of dy is read before the same element of dx is written. */
static inline __attribute__((always_inline)) void inorm_bwd_row(inorm_ctx_t *c, int64_t row, const int64_t B, int64_t j0, const int64_t J) {
    const mp_cpu_layout_t *l = c->l;
    int64_t cb = l->cpad / B, n = row / cb, c0 = (row % cb) * B + j0, sp = l->sp;
    int64_t base = row * sp * B + j0;
    const float *restrict x = c->x + base;
    const float *dy = c->dy + base;
    float *dx = c->dx + base;
    double sg[16] = {0}, sgx[16] = {0};
    float m[16], r[16], ga[16], be[16], k2[16], k3[16];
    float slope = c->act ? (float)c->slope : 1.0f;
    for (int64_t j = 0; j < J; j++) {
        int live = c0 + j < l->c;
        m[j] = live ? c->cmean[n * l->c + c0 + j] : 0.0f;
        r[j] = live ? c->crstd[n * l->c + c0 + j] : 0.0f;
    }
    inorm_affine(c, c0, J, m, r, ga, be);
    for (int64_t v = 0; v < sp; v++)
        for (int64_t j = 0; j < J; j++) {
            float t = x[v * B + j] * ga[j] + be[j];
            float g = dy[v * B + j] * (t > 0 ? 1.0f : slope);
            sg[j] += g;
            sgx[j] += g * ((x[v * B + j] - m[j]) * r[j]);
        }
    for (int64_t j = 0; j < J; j++) {
        /* dx = ga*(g - mean(g) - xhat*mean(g*xhat)), ga = gamma*r, xhat = (x - m)*r. */
        k2[j] = (float)(sg[j] / (double)sp);
        k3[j] = (float)(sgx[j] / (double)sp) * r[j];
        if (c0 + j < l->c) {
            c->work[n * l->c + c0 + j] = (float)sgx[j];
            c->work[l->n * l->c + n * l->c + c0 + j] = (float)sg[j];
        }
    }
    /* In place, one restrict pointer reads and writes each element, so
     * neither case needs a runtime aliasing check (a scalar fallback). */
#define INORM_BWD_APPLY(DY, DX)                                                   \
    for (int64_t v = 0; v < sp; v++)                                              \
        for (int64_t j = 0; j < J; j++) {                                         \
            float t = x[v * B + j] * ga[j] + be[j];                               \
            float g = DY[v * B + j] * (t > 0 ? 1.0f : slope);                     \
            DX[v * B + j] = ga[j] * (g - k2[j] - (x[v * B + j] - m[j]) * k3[j]); \
        }
    if (dx == dy) {
        float *restrict io = dx;
        INORM_BWD_APPLY(io, io)
    } else {
        const float *restrict dyr = dy;
        float *restrict dxr = dx;
        INORM_BWD_APPLY(dyr, dxr)
    }
#undef INORM_BWD_APPLY
}

static void inorm_bwd_range(void *ctx, int64_t begin, int64_t end, int worker) {
    inorm_ctx_t *c = ctx;
    int64_t B = c->l->block, nch = lane_chunks(c->l);
    (void)worker;
    for (int64_t task = begin; task < end; task++) {
        int64_t row = task / nch, j0 = (task % nch) * 16, J = B - j0 < 16 ? B - j0 : 16;
        switch (B) {
        case 16: inorm_bwd_row(c, row, 16, 0, 16); break;
        case 8: inorm_bwd_row(c, row, 8, 0, 8); break;
        case 4: inorm_bwd_row(c, row, 4, 0, 4); break;
        case 1: inorm_bwd_row(c, row, 1, 0, 1); break;
        default:
            if (J == 16) inorm_bwd_row(c, row, B, j0, 16);
            else inorm_bwd_row(c, row, B, j0, J);
        }
    }
}

void mp_cpu_inorm_backward(mp_pool_t *pool, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *gamma, const float *beta,
                           const mp_cpu_layout_t *l, int act, double slope, float *work) {
    inorm_ctx_t c = {.dx = dx, .work = work, .x = x, .dy = dy, .gamma = gamma, .beta = beta, .cmean = mean,
                     .crstd = rstd, .l = l, .act = act, .slope = slope};
    par_for(pool, l->n * (l->cpad / l->block) * lane_chunks(l), inorm_bwd_range, &c);
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
        int64_t iy = mp_cpu_layout_index(ly, n, off, 0);
        if (c->backward) memcpy(part + n * lp->cpad * lp->sp, c->cy + iy, len);
        else memcpy(c->y + iy, cpart + n * lp->cpad * lp->sp, len);
        return;
    }
    if (lp->block == lp->c && ly->block == ly->c) {
        /* Channels last on both sides: one contiguous run per voxel. */
        size_t len = (size_t)lp->c * sizeof(float);
        for (int64_t s = 0; s < lp->sp; s++) {
            int64_t iy = (n * ly->sp + s) * ly->c + off, ip = (n * lp->sp + s) * lp->c;
            if (c->backward) memcpy(part + ip, c->cy + iy, len);
            else memcpy(c->y + iy, cpart + ip, len);
        }
        return;
    }
    for (int64_t s = 0; s < lp->sp; s++)
        for (int64_t ch = 0; ch < lp->c; ch++) {
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
    par_for(pool, ly->n, concat_range, &c);
}

void mp_cpu_concat_backward(mp_pool_t *pool, float *da, float *db, const float *dy, const mp_cpu_layout_t *ly,
                            const mp_cpu_layout_t *la, const mp_cpu_layout_t *lb) {
    int aligned = la->block == ly->block && lb->block == ly->block && la->c % ly->block == 0;
    if (!aligned) {
        if (la->cpad != la->c) memset(da, 0, (size_t)(la->n * la->cpad * la->sp) * sizeof *da);
        if (lb->cpad != lb->c) memset(db, 0, (size_t)(lb->n * lb->cpad * lb->sp) * sizeof *db);
    }
    concat_ctx_t c = {.a = da, .b = db, .cy = dy, .ly = ly, .la = la, .lb = lb, .backward = 1};
    par_for(pool, ly->n, concat_range, &c);
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
    par_for(pool, n, add_range, &c);
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
    par_for(pool, n, lrelu_bwd_range, &c);
}
/* ---- the FMA peak of the team's threads (benchmarks report against it) ---- */
typedef struct {
    int64_t iters;
    float sink[256];
} peak_ctx_t;

static void peak_range(void *ctx, int64_t begin, int64_t end, int worker) {
    peak_ctx_t *p = ctx;
    (void)worker;
    for (int64_t t = begin; t < end; t++) {
#ifdef __AVX2__
        /* Twelve independent chains cover the FMA latency on both ports. */
        __m256 a[12], b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
        for (int j = 0; j < 12; j++) a[j] = _mm256_set1_ps((float)(j + t));
        for (int64_t i = 0; i < p->iters; i++) {
            _Pragma("GCC unroll 12") for (int j = 0; j < 12; j++) a[j] = _mm256_fmadd_ps(a[j], b, c);
        }
        __m256 s = a[0];
        for (int j = 1; j < 12; j++) s = _mm256_add_ps(s, a[j]);
        p->sink[t % 256] = _mm256_cvtss_f32(s);
#else
        float a[12][8];
        for (int j = 0; j < 12; j++)
            for (int l = 0; l < 8; l++) a[j][l] = (float)(j + t);
        for (int64_t i = 0; i < p->iters; i++)
            for (int j = 0; j < 12; j++)
                for (int l = 0; l < 8; l++) a[j][l] = a[j][l] * 0.999999f + 1e-7f;
        p->sink[t % 256] = a[0][0] + a[11][7];
#endif
    }
}

double mp_cpu_fma_peak_gflops(int threads, double seconds) {
    peak_ctx_t p = {.iters = 1 << 20};
    double t0 = mp_time_now();
    mp_cpu_team_for(threads, peak_range, &p);
    double dt = mp_time_now() - t0;
    if (dt > 0 && dt < seconds) p.iters = (int64_t)((double)p.iters * seconds / dt);
    t0 = mp_time_now();
    mp_cpu_team_for(threads, peak_range, &p);
    dt = mp_time_now() - t0;
    return (double)threads * (double)p.iters * 12.0 * 16.0 / dt * 1e-9;
}
#endif /* MP_HAVE_DNNL */
