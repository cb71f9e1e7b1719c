/* The sliding-window engine: gathers (possibly mirrored) patches into a
 * batch, runs the network, and folds each patch's softmax (or logits),
 * weighted by the Gaussian importance map, into accumulators that exist
 * only for the z-planes still covered by an open window row.
 *
 * Slab logic: windows run z-major. Row iz of windows covers image planes
 * [lo(iz), hi(iz)); lo and hi never decrease with iz. When the first patch
 * of row iz arrives, planes below lo(iz) can receive nothing more, so they
 * are normalised (sum / weight) and handed to the sink in z order, and the
 * planes [old hi, hi(iz)) are zeroed. Planes live in a ring of
 * min(patch D, nz) slots (plane z in slot z mod ring), so accumulator
 * memory is (classes + 1) x ring x nx x ny floats whatever the depth.
 * Within a slot the K class rows of each y sit together, so one window row
 * updates K short segments of one small block; the next rows' segments
 * are prefetched, as they are too short for the hardware prefetcher.
 * Logits are read in place from the batch buffer (x-mirrored rows are
 * reversed there first).
 *
 * Determinism: patches are folded one at a time in enumeration order, each
 * voxel by exactly one thread per patch, so the sums do not depend on the
 * thread count or on how patches were grouped into batches. */
#include "infer_internal.h"

#include <stdlib.h>

typedef struct {
    const mp_vol_t *img;
    const mp_infer_net_t *net;
    mp_infer_opts_t o;
    const mp_infer_sink_t *sink;
    mp_pool_t *pool;
    int K, C, B, nmir, threads;
    unsigned mir[8];       /* flip masks: bit 0 = x, 1 = y, 2 = z */
    int64_t dim[3];        /* image x, y, z */
    int64_t p[3];          /* patch x, y, z */
    int64_t off[3];        /* image voxel v is padded voxel v + off */
    int64_t *st[3], ns[3]; /* window starts (padded grid) per axis */
    int64_t nwin, pvox, plane;
    float *gauss;          /* patch, x fastest */
    int ring;
    float *acc, *wsum;     /* ring x ny x K x nx (class rows of each y together), ring x ny x nx */
    float *scratch;        /* per worker: K x MP_V floats */
    float *in, *out;       /* batch buffers */
    int64_t z_lo, z_hi;    /* planes [z_lo, z_hi) are open */
    int64_t row;           /* z window index being folded; -1 before the first */
} sw_t;

/* Window and mirror of enumeration entry e. */
static void entry_pos(const sw_t *s, int64_t e, int64_t start[3], unsigned *flip, int64_t *iz) {
    int64_t w = e / s->nmir;
    *flip = s->mir[e % s->nmir];
    int64_t ix = w % s->ns[0], iy = (w / s->ns[0]) % s->ns[1];
    *iz = w / (s->ns[0] * s->ns[1]);
    start[0] = s->st[0][ix];
    start[1] = s->st[1][iy];
    start[2] = s->st[2][*iz];
}

/* ---- gather: one row (batch slot, channel, z, y) of the input batch ---- */
typedef struct {
    sw_t *s;
    int64_t e0;
} gather_job_t;

/* Source row of input batch row r (NULL when it lies in the padding), the
 * image x of window-local x 0 and the flips. */
static const float *gather_src(const sw_t *s, int64_t e0, int64_t r, int64_t *x0, unsigned *fl) {
    const int64_t py = s->p[1], pz = s->p[2];
    int64_t y = r % py, z = (r / py) % pz, c = (r / (py * pz)) % s->C, b = r / (py * pz * s->C);
    int64_t st[3], iz;
    entry_pos(s, e0 + b, st, fl, &iz);
    /* A flipped input holds the window read backwards along that axis. */
    int64_t lz = (*fl & 4) ? pz - 1 - z : z, ly = (*fl & 2) ? py - 1 - y : y;
    int64_t zi = st[2] + lz - s->off[2], yi = st[1] + ly - s->off[1];
    *x0 = st[0] - s->off[0];
    if (zi < 0 || zi >= s->dim[2] || yi < 0 || yi >= s->dim[1]) return NULL;
    return (const float *)s->img->data + ((c * s->dim[2] + zi) * s->dim[1] + yi) * s->dim[0];
}

static void gather_body(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const gather_job_t *j = ctx;
    const sw_t *s = j->s;
    const int64_t px = s->p[0], nx = s->dim[0];
    const float pad = s->o.pad_value;
    int64_t x0;
    unsigned fl;
    const float *src = begin < end ? gather_src(s, j->e0, begin, &x0, &fl) : NULL;
    for (int64_t r = begin; r < end; r++) {
        int64_t nx0 = 0;
        unsigned nfl = 0;
        const float *next = r + 1 < end ? gather_src(s, j->e0, r + 1, &nx0, &nfl) : NULL;
        if (next) /* rows are short and far apart: start the next one's loads early */
            for (int64_t x = 0; x < px; x += 16) __builtin_prefetch(next + nx0 + x);
        float *dst = s->in + r * px;
        /* Window-local x in [a, b) lies inside the image. */
        int64_t a = x0 < 0 ? -x0 : 0, b = x0 + px > nx ? nx - x0 : px;
        if (!src || b <= a) {
            for (int64_t x = 0; x < px; x++) dst[x] = pad;
        } else if (!(fl & 1)) {
            for (int64_t x = 0; x < a; x++) dst[x] = pad;
            memcpy(dst + a, src + x0 + a, (size_t)(b - a) * sizeof *dst);
            for (int64_t x = b; x < px; x++) dst[x] = pad;
        } else { /* dst[x] = window x' = px - 1 - x */
            for (int64_t x = 0; x < px; x++) {
                int64_t lx = px - 1 - x;
                dst[x] = lx >= a && lx < b ? src[x0 + lx] : pad;
            }
        }
        src = next;
        x0 = nx0;
        fl = nfl;
    }
}

/* ---- fold one patch into the accumulators ---- */
typedef struct {
    sw_t *s;
    float *logits;       /* this patch's (K, pz, py, px), consumed in place */
    int64_t start[3];
    unsigned flip;
    int64_t lo[3], hi[3]; /* image box covered */
} fold_job_t;

static void fold_row(const fold_job_t *j, int64_t z, int64_t y, float *scratch) {
    const sw_t *s = j->s;
    const int K = s->K;
    const int64_t px = s->p[0], py = s->p[1], pz = s->p[2], nx = s->dim[0];
    const int64_t n = j->hi[0] - j->lo[0];
    const int64_t wz = z + s->off[2] - j->start[2], wy = y + s->off[1] - j->start[1];
    const int64_t wx0 = j->lo[0] + s->off[0] - j->start[0];
    const int64_t lz = (j->flip & 4) ? pz - 1 - wz : wz, ly = (j->flip & 2) ? py - 1 - wy : wy;
    const float *g = s->gauss + (wz * py + wy) * px + wx0;
    const int64_t slot = z % s->ring;
    float *acc = s->acc + slot * K * s->plane + y * K * nx + j->lo[0];
    float *ws = s->wsum + slot * s->plane + y * nx + j->lo[0];
    /* The logits buffer is ours and each of its rows is folded once, so
     * the fold works in place; an x-mirrored row is reversed first (the
     * Gaussian stays in the image frame). */
    float *e = j->logits + lz * py * px + ly * px;
    if (j->flip & 1)
        for (int k = 0; k < K; k++) {
            float *row = e + (int64_t)k * s->pvox;
            for (int64_t a = 0, b = px - 1; a < b; a++, b--) {
                float t = row[a];
                row[a] = row[b];
                row[b] = t;
            }
        }
    e += wx0;
    mp_infer_fold_row(acc, nx, ws, e, s->pvox, g, K, n, s->o.average == MP_INFER_AVG_PROBS, scratch);
}

/* Prefetches the accumulator segments row (z, y) of the patch will update. */
static void fold_prefetch(const fold_job_t *j, int64_t z, int64_t y) {
    const sw_t *s = j->s;
    const int64_t nx = s->dim[0], n = j->hi[0] - j->lo[0], slot = z % s->ring;
    const float *acc = s->acc + slot * s->K * s->plane + y * s->K * nx + j->lo[0];
    for (int k = 0; k <= s->K; k++) {
        const float *row = k < s->K ? acc + (int64_t)k * nx : s->wsum + slot * s->plane + y * nx + j->lo[0];
        for (int64_t x = 0; x < n; x += 16) __builtin_prefetch(row + x, 1);
        __builtin_prefetch(row + n - 1, 1);
    }
}

/* Rows of prefetch lookahead (1..8 measure alike; 4 is in the middle). */
#define FOLD_AHEAD 4

static void fold_body(void *ctx, int64_t begin, int64_t end, int worker) {
    const fold_job_t *j = ctx;
    float *scratch = j->s->scratch + (int64_t)worker * j->s->K * MP_V;
    int64_t ny = j->hi[1] - j->lo[1];
    /* Each row updates short segments of K accumulator rows far apart,
     * too short for the hardware prefetcher: ask for the next row's
     * while folding this one. */
    for (int64_t r = begin; r < end && r < begin + FOLD_AHEAD; r++) fold_prefetch(j, j->lo[2] + r / ny, j->lo[1] + r % ny);
    for (int64_t r = begin; r < end; r++) {
        int64_t q = r + FOLD_AHEAD;
        if (q < end) fold_prefetch(j, j->lo[2] + q / ny, j->lo[1] + q % ny);
        fold_row(j, j->lo[2] + r / ny, j->lo[1] + r % ny, scratch);
    }
}

/* ---- open / finalise planes ---- */
typedef struct {
    sw_t *s;
    int64_t z0;
} plane_job_t;

static void zero_body(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const plane_job_t *j = ctx;
    const sw_t *s = j->s;
    for (int64_t r = begin; r < end; r++) {
        int64_t z = j->z0 + r / (s->K + 1), part = r % (s->K + 1), slot = z % s->ring;
        float *p = part < s->K ? s->acc + (slot * s->K + part) * s->plane : s->wsum + slot * s->plane;
        memset(p, 0, (size_t)s->plane * sizeof *p);
    }
}

static void norm_body(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const plane_job_t *j = ctx;
    const sw_t *s = j->s;
    const int64_t nx = s->dim[0], ny = s->dim[1];
    for (int64_t r = begin; r < end; r++) {
        int64_t z = j->z0 + r / ny, y = r % ny, slot = z % s->ring;
        mp_infer_normalize_rows(s->acc + slot * s->K * s->plane + y * s->K * nx, nx, s->wsum + slot * s->plane + y * nx,
                                s->K, nx);
    }
}

/* Normalises planes [z_lo, upto) and hands them to the sink. */
static int finish_planes(sw_t *s, int64_t upto) {
    if (upto <= s->z_lo) return MP_OK;
    plane_job_t j = {s, s->z_lo};
    mp_pool_parallel_for(s->pool, (upto - s->z_lo) * s->dim[1], norm_body, &j);
    for (int64_t z = s->z_lo; z < upto; z++) {
        int rc = s->sink->plane(s->sink->user, z, s->acc + (z % s->ring) * s->K * s->plane);
        if (rc) return mp_error_wrap(rc, "sliding window: output of plane %lld: ", (long long)z);
    }
    s->z_lo = upto;
    return MP_OK;
}

static void row_span(const sw_t *s, int64_t iz, int64_t *lo, int64_t *hi) {
    int64_t a = s->st[2][iz] - s->off[2];
    *lo = a < 0 ? 0 : a;
    *hi = a + s->p[2] > s->dim[2] ? s->dim[2] : a + s->p[2];
}

/* Moves the open slab to window row iz. */
static int enter_row(sw_t *s, int64_t iz) {
    int64_t lo, hi;
    row_span(s, iz, &lo, &hi);
    if (lo > s->z_hi)
        return mp_error_set(MP_ERR_INTERNAL, "sliding window: planes [%lld, %lld) are covered by no window",
                            (long long)s->z_hi, (long long)lo);
    int rc = finish_planes(s, lo);
    if (rc) return rc;
    if (hi > s->z_hi) {
        int64_t z0 = s->z_hi > lo ? s->z_hi : lo;
        if (hi - s->z_lo > s->ring)
            return mp_error_set(MP_ERR_INTERNAL, "sliding window: slab [%lld, %lld) exceeds the ring of %d planes",
                                (long long)s->z_lo, (long long)hi, s->ring);
        plane_job_t j = {s, z0};
        mp_pool_parallel_for(s->pool, (hi - z0) * (s->K + 1), zero_body, &j);
        s->z_hi = hi;
    }
    s->row = iz;
    return MP_OK;
}

static int fold_entry(sw_t *s, int64_t e, int b) {
    fold_job_t j;
    int64_t iz;
    entry_pos(s, e, j.start, &j.flip, &iz);
    if (iz != s->row) {
        int rc = enter_row(s, iz);
        if (rc) return rc;
    }
    j.s = s;
    j.logits = s->out + (int64_t)b * s->K * s->pvox;
    for (int a = 0; a < 3; a++) {
        int64_t w0 = j.start[a] - s->off[a];
        j.lo[a] = w0 < 0 ? 0 : w0;
        j.hi[a] = w0 + s->p[a] > s->dim[a] ? s->dim[a] : w0 + s->p[a];
    }
    mp_pool_parallel_for(s->pool, (j.hi[2] - j.lo[2]) * (j.hi[1] - j.lo[1]), fold_body, &j);
    return MP_OK;
}

/* ---- set-up ---- */
static int check_inputs(const mp_vol_t *img, const mp_infer_net_t *net, const mp_infer_opts_t *o,
                        const mp_infer_sink_t *sink) {
    if (!img || !img->data || !net || !sink || !sink->plane)
        return mp_error_set(MP_ERR_ARG, "sliding window: missing image, network or output");
    if (img->dtype != MP_DTYPE_F32 || (img->scl_slope != 0 && img->scl_slope != 1) ||
        (img->scl_slope == 1 && img->scl_inter != 0))
        return mp_error_set(MP_ERR_ARG, "sliding window: the image must be float32 without scaling (got %s)",
                            mp_dtype_name(img->dtype));
    for (int a = 0; a < 4; a++)
        if (img->dim[a] < 1) return mp_error_set(MP_ERR_ARG, "sliding window: image dimension %d is %lld", a, (long long)img->dim[a]);
    if (!net->forward || net->in_channels < 1 || net->max_batch < 1 || net->num_classes < 1 ||
        net->num_classes > MP_INFER_MAX_CLASSES)
        return mp_error_set(MP_ERR_ARG, "sliding window: invalid network (%d channels, %d classes, batch %d)",
                            net->in_channels, net->num_classes, net->max_batch);
    if (img->dim[3] != net->in_channels)
        return mp_error_set(MP_ERR_MISMATCH, "sliding window: image has %lld channels, the network takes %d",
                            (long long)img->dim[3], net->in_channels);
    for (int a = 0; a < 3; a++)
        if (net->patch_dhw[a] < 1 || net->patch_dhw[a] > MP_INFER_MAX_PATCH)
            return mp_error_set(MP_ERR_ARG, "sliding window: patch size %d out of range", net->patch_dhw[a]);
    if (!(o->step > 0 && o->step <= 1)) return mp_error_set(MP_ERR_ARG, "sliding window: step %g must be in (0, 1]", o->step);
    if (o->mirror_axes > 7) return mp_error_set(MP_ERR_ARG, "sliding window: mirror axes mask %u (only bits 0-2)", o->mirror_axes);
    if (o->max_batch < 0) return mp_error_set(MP_ERR_ARG, "sliding window: max_batch %d", o->max_batch);
    if (o->average != MP_INFER_AVG_PROBS && o->average != MP_INFER_AVG_LOGITS)
        return mp_error_set(MP_ERR_ARG, "sliding window: unknown averaging mode %d", (int)o->average);
    return MP_OK;
}

/* Adds n floats to *total, failing past the memory limit. */
static int add_floats(uint64_t *total, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t ab, abc;
    if (mp_mul_u64(a, b, &ab) || mp_mul_u64(ab, c, &abc) || mp_mul_u64(abc, 4, &abc) || *total + abc < *total)
        return mp_error_set(MP_ERR_LIMIT, "sliding window: buffer size overflows");
    *total += abc;
    return MP_OK;
}

static int sw_setup(sw_t *s, uint64_t *accum_bytes, uint64_t *batch_bytes) {
    const mp_infer_net_t *net = s->net;
    s->K = net->num_classes;
    s->C = net->in_channels;
    s->B = s->o.max_batch > 0 && s->o.max_batch < net->max_batch ? s->o.max_batch : net->max_batch;
    s->nmir = 0;
    for (unsigned m = 0; m < 8; m++)
        if ((m & ~s->o.mirror_axes) == 0) s->mir[s->nmir++] = m; /* m = 0 (no flip) comes first */
    s->nwin = 1;
    for (int a = 0; a < 3; a++) {
        s->dim[a] = s->img->dim[a];
        s->p[a] = net->patch_dhw[2 - a];
        int64_t padded = s->dim[a] > s->p[a] ? s->dim[a] : s->p[a];
        s->off[a] = (padded - s->dim[a]) / 2;
        int rc = mp_infer_window_starts(padded, s->p[a], s->o.step, NULL, 0, &s->ns[a]);
        if (rc) return rc;
        if (s->ns[a] > (int64_t)1 << 40) return mp_error_set(MP_ERR_LIMIT, "sliding window: too many windows");
        s->st[a] = malloc((size_t)s->ns[a] * sizeof *s->st[a]);
        if (!s->st[a]) return mp_error_set(MP_ERR_NOMEM, "sliding window: out of memory");
        if ((rc = mp_infer_window_starts(padded, s->p[a], s->o.step, s->st[a], s->ns[a], &s->ns[a]))) return rc;
        s->nwin *= s->ns[a];
    }
    s->pvox = s->p[0] * s->p[1] * s->p[2];
    s->plane = s->dim[0] * s->dim[1];
    s->ring = (int)(s->p[2] < s->dim[2] ? s->p[2] : s->dim[2]);
    s->threads = s->pool ? mp_pool_threads(s->pool) : 1;
    uint64_t acc = 0, bat = 0, other = 0;
    int rc;
    if ((rc = add_floats(&acc, (uint64_t)s->ring, (uint64_t)s->K + 1, (uint64_t)s->plane)) ||
        (rc = add_floats(&bat, (uint64_t)s->B, (uint64_t)(s->C + s->K), (uint64_t)s->pvox)) ||
        (rc = add_floats(&other, (uint64_t)s->pvox, 1, 1)) ||
        (rc = add_floats(&other, (uint64_t)s->threads, (uint64_t)s->K, MP_V)))
        return rc;
    if (acc + bat + other > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "sliding window: needs %llu MiB of buffers, above the memory limit of %llu MiB",
                            (unsigned long long)((acc + bat + other) >> 20), (unsigned long long)(mp_mem_limit() >> 20));
    *accum_bytes = acc;
    *batch_bytes = bat;
    s->gauss = mp_alloc((size_t)s->pvox * sizeof(float));
    s->acc = mp_alloc((size_t)s->ring * (size_t)s->K * (size_t)s->plane * sizeof(float));
    s->wsum = mp_alloc((size_t)s->ring * (size_t)s->plane * sizeof(float));
    s->scratch = mp_alloc((size_t)s->threads * (size_t)s->K * MP_V * sizeof(float));
    s->in = mp_alloc((size_t)s->B * (size_t)s->C * (size_t)s->pvox * sizeof(float));
    s->out = mp_alloc((size_t)s->B * (size_t)s->K * (size_t)s->pvox * sizeof(float));
    if (!s->gauss || !s->acc || !s->wsum || !s->in || !s->out || !s->scratch)
        return mp_error_set(MP_ERR_NOMEM, "sliding window: cannot allocate %llu MiB of buffers",
                            (unsigned long long)((acc + bat + other) >> 20));
    if (s->o.gaussian) {
        int pd[3] = {net->patch_dhw[0], net->patch_dhw[1], net->patch_dhw[2]};
        if ((rc = mp_infer_gaussian(s->gauss, pd, s->o.sigma_scale))) return rc;
    } else {
        for (int64_t i = 0; i < s->pvox; i++) s->gauss[i] = 1.0f;
    }
    s->z_lo = s->z_hi = 0;
    s->row = -1;
    return MP_OK;
}

static void sw_free(sw_t *s) {
    for (int a = 0; a < 3; a++) free(s->st[a]);
    mp_free(s->gauss);
    mp_free(s->acc);
    mp_free(s->wsum);
    mp_free(s->scratch);
    mp_free(s->in);
    mp_free(s->out);
}

static int sw_run(sw_t *s, mp_infer_stats_t *st) {
    const int64_t total = s->nwin * s->nmir;
    for (int64_t e0 = 0; e0 < total; e0 += s->B) {
        int nb = (int)(total - e0 < s->B ? total - e0 : s->B);
        gather_job_t g = {s, e0};
        mp_pool_parallel_for(s->pool, (int64_t)nb * s->C * s->p[2] * s->p[1], gather_body, &g);
        double t0 = mp_time_now();
        int rc = s->net->forward(s->net->self, s->out, s->in, nb);
        st->t_forward += mp_time_now() - t0;
        st->forward_calls++;
        if (rc) return mp_error_wrap(rc, "sliding window: network forward (patches %lld-%lld): ", (long long)e0,
                                     (long long)(e0 + nb - 1));
        for (int b = 0; b < nb; b++)
            if ((rc = fold_entry(s, e0 + b, b))) return rc;
        st->entries += nb;
        if (s->o.progress) s->o.progress(s->o.progress_user, (e0 + nb) / s->nmir, s->nwin);
    }
    if (s->z_hi != s->dim[2])
        return mp_error_set(MP_ERR_INTERNAL, "sliding window: windows reached plane %lld of %lld", (long long)s->z_hi,
                            (long long)s->dim[2]);
    return finish_planes(s, s->dim[2]);
}

int mp_infer_sliding_window(const mp_vol_t *img, const mp_infer_net_t *net, const mp_infer_opts_t *opts,
                            const mp_infer_sink_t *sink, mp_pool_t *pool, mp_infer_stats_t *stats) {
    double t0 = mp_time_now();
    mp_infer_stats_t st;
    memset(&st, 0, sizeof st);
    sw_t s;
    memset(&s, 0, sizeof s);
    if (opts) s.o = *opts;
    else mp_infer_opts_init(&s.o);
    int rc = check_inputs(img, net, &s.o, sink);
    if (rc) return rc;
    s.img = img;
    s.net = net;
    s.sink = sink;
    s.pool = pool;
    rc = sw_setup(&s, &st.accum_bytes, &st.batch_bytes);
    if (rc == MP_OK) {
        st.windows = s.nwin;
        st.ring_planes = s.ring;
        rc = sw_run(&s, &st);
    }
    sw_free(&s);
    st.t_total = mp_time_now() - t0;
    if (stats) *stats = st;
    return rc;
}
