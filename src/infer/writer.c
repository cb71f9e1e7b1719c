/* The output side of the sliding window: a sink that turns each finished
 * z-plane of scores into labels (argmax) and, when asked, probabilities, on
 * the network grid or on another grid over the same field of view.
 *
 * Resampling is done slab-wise too: output plane oz interpolates input
 * planes z0 <= z1 = z0 + 1 at most (the shape map is monotone), so the
 * writer keeps copies of the last two input planes and emits every output
 * plane whose z1 has arrived. Scores are interpolated trilinearly before
 * the argmax, as nnU-Net resamples probabilities (or logits) and not
 * labels; memory stays 2 x classes x one input plane. Planes arrive as
 * the engine keeps them: for each row y, the K class rows of nx floats. */
#include "infer_internal.h"

#include <stdlib.h>

typedef struct {
    int64_t *i0, *i1;
    float *w;
} tab_t;

typedef struct {
    int K, logits;
    mp_infer_probs_t pk;
    int64_t in[3], out[3];
    int identity;
    tab_t t[3];
    mp_vol_t *labels, *probs;
    float *pl[2];          /* the last two input planes (resampling) */
    int64_t plz[2];
    int64_t next_oz;
    mp_pool_t *pool;
    float *tmp;            /* per worker scratch */
    int64_t tmp_stride;
    const float *cur;      /* identity: the plane being written */
    int64_t cur_z, emit_z; /* identity: its z; resampling: the output plane */
} writer_t;

/* Labels and probabilities of one output row from K score rows (class k at
 * v[k * stride + i]); v is modified when logits become probabilities. */
static void write_row(const writer_t *w, int64_t oz, int64_t oy, float *v, int64_t stride, float *scratch) {
    const int64_t n = w->out[0], base = (oz * w->out[1] + oy) * n, nvox = w->out[0] * w->out[1] * w->out[2];
    uint16_t *best = (uint16_t *)(void *)scratch;
    mp_infer_argmax_rows(v, stride, w->K, n, best);
    if (w->labels->dtype == MP_DTYPE_U8) {
        uint8_t *l = (uint8_t *)w->labels->data + base;
        for (int64_t i = 0; i < n; i++) l[i] = (uint8_t)best[i];
    } else {
        memcpy((uint16_t *)w->labels->data + base, best, (size_t)n * sizeof *best);
    }
    if (!w->probs) return;
    if (w->logits) mp_infer_softmax_rows(v, stride, w->K, n);
    for (int k = 0; k < w->K; k++) {
        const float *r = v + k * stride;
        if (w->pk == MP_INFER_PROBS_F32) {
            memcpy((float *)w->probs->data + k * nvox + base, r, (size_t)n * sizeof *r);
        } else {
            uint8_t *q = (uint8_t *)w->probs->data + k * nvox + base;
            for (int64_t i = 0; i < n; i++) {
                float x = r[i] * 255.0f + 0.5f;
                q[i] = (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
            }
        }
    }
}

static void ident_body(void *ctx, int64_t begin, int64_t end, int worker) {
    const writer_t *w = ctx;
    const int64_t nx = w->in[0], rowlen = (int64_t)w->K * nx;
    float *tmp = w->tmp + worker * w->tmp_stride;
    float *rows = tmp, *scratch = tmp + rowlen;
    for (int64_t y = begin; y < end; y++) {
        const float *v = w->cur + y * rowlen;
        if (w->probs) { /* probabilities may be computed in place: work on a copy */
            memcpy(rows, v, (size_t)rowlen * sizeof(float));
            write_row(w, w->cur_z, y, rows, nx, scratch);
        } else { /* write_row only reads v when no probabilities are asked */
            write_row(w, w->cur_z, y, (float *)(uintptr_t)v, nx, scratch);
        }
    }
}

/* Output row (emit_z, oy): per class, blend the four input rows of (y, z)
 * along x, then interpolate along x from the table. */
static void resample_body(void *ctx, int64_t begin, int64_t end, int worker) {
    const writer_t *w = ctx;
    const int64_t nxi = w->in[0], nxo = w->out[0], oz = w->emit_z, K = w->K;
    const tab_t *tx = &w->t[0], *ty = &w->t[1], *tz = &w->t[2];
    const float *A = w->pl[tz->i0[oz] & 1], *B = w->pl[tz->i1[oz] & 1];
    const float wz = tz->w[oz];
    float *tmp = w->tmp + worker * w->tmp_stride;
    float *rows = tmp, *t = rows + (int64_t)w->K * nxo, *scratch = t + nxi;
    for (int64_t oy = begin; oy < end; oy++) {
        const int64_t y0 = ty->i0[oy] * K, y1 = ty->i1[oy] * K;
        const float wy = ty->w[oy];
        for (int64_t k = 0; k < K; k++) {
            const float *a0 = A + (y0 + k) * nxi, *a1 = A + (y1 + k) * nxi;
            const float *b0 = B + (y0 + k) * nxi, *b1 = B + (y1 + k) * nxi;
            mp_infer_blend4(t, a0, a1, b0, b1, wy, wz, nxi);
            float *o = rows + k * nxo;
            for (int64_t ox = 0; ox < nxo; ox++) {
                float p = t[tx->i0[ox]], q = t[tx->i1[ox]];
                o[ox] = p + tx->w[ox] * (q - p);
            }
        }
        write_row(w, oz, oy, rows, nxo, scratch);
    }
}

static int writer_plane(void *user, int64_t z, const float *scores) {
    writer_t *w = user;
    if (w->identity) {
        w->cur = scores;
        w->cur_z = z;
        mp_pool_parallel_for(w->pool, w->out[1], ident_body, w);
        return MP_OK;
    }
    const int64_t plane = w->in[0] * w->in[1];
    memcpy(w->pl[z & 1], scores, (size_t)w->K * (size_t)plane * sizeof(float));
    w->plz[z & 1] = z;
    const tab_t *tz = &w->t[2];
    while (w->next_oz < w->out[2] && tz->i1[w->next_oz] <= z) {
        int64_t oz = w->next_oz;
        if (w->plz[tz->i0[oz] & 1] != tz->i0[oz] || w->plz[tz->i1[oz] & 1] != tz->i1[oz])
            return mp_error_set(MP_ERR_INTERNAL, "output: plane %lld needs input planes %lld and %lld", (long long)oz,
                                (long long)tz->i0[oz], (long long)tz->i1[oz]);
        w->emit_z = oz;
        mp_pool_parallel_for(w->pool, w->out[1], resample_body, w);
        w->next_oz++;
    }
    return MP_OK;
}

/* Table of output o -> input x = (o + 0.5) * n_in / n_out - 0.5, clamped. */
static int tab_build(tab_t *t, int64_t n_out, int64_t n_in) {
    t->i0 = malloc((size_t)n_out * sizeof *t->i0);
    t->i1 = malloc((size_t)n_out * sizeof *t->i1);
    t->w = malloc((size_t)n_out * sizeof *t->w);
    if (!t->i0 || !t->i1 || !t->w) return mp_error_set(MP_ERR_NOMEM, "output: out of memory");
    double scale = (double)n_in / (double)n_out;
    for (int64_t o = 0; o < n_out; o++) {
        double x = ((double)o + 0.5) * scale - 0.5;
        x = x < 0 ? 0 : x > (double)(n_in - 1) ? (double)(n_in - 1) : x;
        int64_t i0 = (int64_t)floor(x);
        if (i0 >= n_in - 1) {
            t->i0[o] = t->i1[o] = n_in - 1;
            t->w[o] = 0;
        } else {
            t->i0[o] = i0;
            t->i1[o] = i0 + 1;
            t->w[o] = (float)(x - (double)i0);
        }
    }
    return MP_OK;
}

static void writer_free(writer_t *w) {
    for (int a = 0; a < 3; a++) {
        free(w->t[a].i0);
        free(w->t[a].i1);
        free(w->t[a].w);
    }
    mp_free(w->pl[0]);
    mp_free(w->pl[1]);
    mp_free(w->tmp);
}

/* Output volumes on the out grid: img's affine composed with the shape map. */
static int writer_volumes(writer_t *w, const mp_vol_t *img) {
    double m[4][4], a[4][4];
    mp_mat4_identity(m);
    for (int ax = 0; ax < 3; ax++) {
        double sc = (double)w->in[ax] / (double)w->out[ax];
        m[ax][ax] = sc;
        m[ax][3] = 0.5 * sc - 0.5;
    }
    mp_mat4_mul(a, img->affine, m);
    int64_t d[4] = {w->out[0], w->out[1], w->out[2], 1};
    int rc = mp_vol_create(&w->labels, d, w->K <= 256 ? MP_DTYPE_U8 : MP_DTYPE_U16);
    if (rc) return mp_error_wrap(rc, "output labels: ");
    mp_vol_set_affine(w->labels, a);
    if (w->pk == MP_INFER_PROBS_NONE) return MP_OK;
    d[3] = w->K;
    rc = mp_vol_create(&w->probs, d, w->pk == MP_INFER_PROBS_U8 ? MP_DTYPE_U8 : MP_DTYPE_F32);
    if (rc) return mp_error_wrap(rc, "output probabilities: ");
    mp_vol_set_affine(w->probs, a);
    return MP_OK;
}

static int writer_init(writer_t *w, const mp_vol_t *img, const mp_infer_net_t *net, int logits,
                       const int64_t out_dim[3], mp_infer_probs_t probs, mp_pool_t *pool) {
    w->K = net->num_classes;
    w->logits = logits;
    w->pk = probs;
    w->pool = pool;
    w->identity = 1;
    w->plz[0] = w->plz[1] = -1;
    int64_t wmax = 0;
    for (int a = 0; a < 3; a++) {
        w->in[a] = img->dim[a];
        w->out[a] = out_dim ? out_dim[a] : img->dim[a];
        if (w->out[a] < 1) return mp_error_set(MP_ERR_ARG, "output: grid dimension %d is %lld", a, (long long)w->out[a]);
        if (w->out[a] != w->in[a]) w->identity = 0;
    }
    if (w->K > MP_INFER_MAX_CLASSES || w->K < 1)
        return mp_error_set(MP_ERR_ARG, "output: %d classes (1..%d)", w->K, MP_INFER_MAX_CLASSES);
    wmax = w->in[0] > w->out[0] ? w->in[0] : w->out[0];
    int threads = pool ? mp_pool_threads(pool) : 1;
    uint64_t stride, total, plane_b;
    if (mp_mul_u64((uint64_t)w->K + 4, (uint64_t)wmax, &stride) || mp_mul_u64(stride + 64, (uint64_t)threads, &total) ||
        mp_mul_u64((uint64_t)w->K, (uint64_t)(w->in[0] * w->in[1]), &plane_b) || total * 4 > mp_mem_limit() ||
        plane_b * 8 > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "output: scratch for %d classes x %lld voxels exceeds the memory limit", w->K,
                            (long long)wmax);
    w->tmp_stride = (int64_t)stride + 64;
    w->tmp = mp_alloc((size_t)total * sizeof(float));
    if (!w->tmp) return mp_error_set(MP_ERR_NOMEM, "output: out of memory");
    int rc = writer_volumes(w, img);
    if (rc || w->identity) return rc;
    for (int a = 0; a < 3; a++)
        if ((rc = tab_build(&w->t[a], w->out[a], w->in[a]))) return rc;
    w->pl[0] = mp_alloc((size_t)plane_b * sizeof(float));
    w->pl[1] = mp_alloc((size_t)plane_b * sizeof(float));
    if (!w->pl[0] || !w->pl[1]) return mp_error_set(MP_ERR_NOMEM, "output: out of memory");
    return MP_OK;
}

void mp_infer_result_deinit(mp_infer_result_t *r) {
    if (!r) return;
    mp_vol_free(r->labels);
    mp_vol_free(r->probs);
    memset(r, 0, sizeof *r);
}

int mp_infer_predict_grid(mp_infer_result_t *res, const mp_vol_t *img, const mp_infer_net_t *net,
                          const mp_infer_opts_t *opts, const int64_t out_dim[3], mp_infer_probs_t probs,
                          mp_pool_t *pool) {
    memset(res, 0, sizeof *res);
    if (!img || !net) return mp_error_set(MP_ERR_ARG, "predict: missing image or network");
    if ((unsigned)probs > MP_INFER_PROBS_U8) return mp_error_set(MP_ERR_ARG, "predict: unknown probability output %d", (int)probs);
    writer_t w;
    memset(&w, 0, sizeof w);
    int logits = opts && opts->average == MP_INFER_AVG_LOGITS;
    int rc = writer_init(&w, img, net, logits, out_dim, probs, pool);
    if (rc == MP_OK) {
        mp_infer_sink_t sink = {writer_plane, &w};
        rc = mp_infer_sliding_window(img, net, opts, &sink, pool, &res->stats);
    }
    if (rc == MP_OK && !w.identity && w.next_oz != w.out[2])
        rc = mp_error_set(MP_ERR_INTERNAL, "output: %lld of %lld planes written", (long long)w.next_oz,
                          (long long)w.out[2]);
    writer_free(&w);
    if (rc) {
        mp_vol_free(w.labels);
        mp_vol_free(w.probs);
        return rc;
    }
    res->labels = w.labels;
    res->probs = w.probs;
    return MP_OK;
}
