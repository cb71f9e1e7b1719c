/* Resampling: to a shape or spacing keeping the field of view (skimage
 * resize / nnU-Net convention) and onto an arbitrary grid through the two
 * affines. Modes: nearest, trilinear and per-label linear (each label's
 * one-hot interpolated, the largest wins).
 *
 * Axis-aligned mappings (always the case for shape/spacing) are separable:
 * each axis gets a table of (i0, i1, weight, nearest, inside) per output
 * index, and trilinear blends the four input rows of (y, z) into one row
 * before interpolating along x from the table. Oblique mappings compute each
 * voxel's input position. Every output voxel is computed the same way
 * whichever thread does it, so results do not depend on the thread count. */
#include "vol_ops_internal.h"

#include <math.h>
#include <stdlib.h>

/* Tolerance (in voxels) for points on the border of the input's extent. */
#define EXTENT_TOL 1e-6

typedef struct {
    int64_t *i0, *i1, *nn; /* neighbours and nearest voxel */
    double *w;             /* weight of i1 */
    float *wf;
    uint8_t *ok;           /* inside [-0.5, n - 0.5] */
    int64_t n_out;
    int64_t lo, hi;        /* input indices used by the inside entries: [lo, hi) */
    int64_t ok_lo, ok_hi;  /* the inside entries: [ok_lo, ok_hi) (a linear map's are contiguous) */
} axis_tab_t;

typedef struct {
    int64_t i0, i1, nn;
    double w;
    int ok;
} axis_pos_t;

/* Where input coordinate x falls on an axis of n voxels. */
static axis_pos_t axis_pos(double x, int64_t n) {
    axis_pos_t p = {0, 0, 0, 0, 0};
    if (!(x >= -0.5 - EXTENT_TOL && x <= (double)n - 0.5 + EXTENT_TOL)) return p;
    p.ok = 1;
    double xc = x < 0 ? 0 : x > (double)(n - 1) ? (double)(n - 1) : x;
    int64_t i0 = (int64_t)floor(xc);
    if (i0 >= n - 1) {
        p.i0 = p.i1 = n - 1;
        p.w = 0;
    } else {
        p.i0 = i0;
        p.i1 = i0 + 1;
        p.w = xc - (double)i0;
    }
    int64_t nn = (int64_t)floor(x + 0.5);
    p.nn = nn < 0 ? 0 : nn > n - 1 ? n - 1 : nn;
    return p;
}

static void tab_free(axis_tab_t *t) {
    free(t->i0);
    free(t->i1);
    free(t->nn);
    free(t->w);
    free(t->wf);
    free(t->ok);
    memset(t, 0, sizeof *t);
}

/* Table for output indices o in [0, n_out) sampling x = a*o + b, or, with
 * fov_scale > 0, x = (o + 0.5) * fov_scale - 0.5 (written so for fidelity to
 * the documented formula). */
static int tab_build(axis_tab_t *t, int64_t n_out, int64_t n_in, double a, double b, double fov_scale) {
    memset(t, 0, sizeof *t);
    size_t n = (size_t)n_out;
    t->i0 = malloc(n * sizeof *t->i0);
    t->i1 = malloc(n * sizeof *t->i1);
    t->nn = malloc(n * sizeof *t->nn);
    t->w = malloc(n * sizeof *t->w);
    t->wf = malloc(n * sizeof *t->wf);
    t->ok = malloc(n);
    if (!t->i0 || !t->i1 || !t->nn || !t->w || !t->wf || !t->ok) {
        tab_free(t);
        return mp_error_set(MP_ERR_NOMEM, "resample: cannot allocate axis tables of %lld entries",
                            (long long)n_out);
    }
    t->n_out = n_out;
    t->lo = n_in;
    t->hi = 0;
    for (int64_t o = 0; o < n_out; o++) {
        double x = fov_scale > 0 ? ((double)o + 0.5) * fov_scale - 0.5 : a * (double)o + b;
        axis_pos_t p = axis_pos(x, n_in);
        t->i0[o] = p.i0;
        t->i1[o] = p.i1;
        t->nn[o] = p.nn;
        t->w[o] = p.w;
        t->wf[o] = (float)p.w;
        t->ok[o] = (uint8_t)p.ok;
        if (p.ok) {
            int64_t l = p.i0 < p.nn ? p.i0 : p.nn, h = p.i1 > p.nn ? p.i1 : p.nn;
            if (l < t->lo) t->lo = l;
            if (h + 1 > t->hi) t->hi = h + 1;
        }
    }
    if (t->hi < t->lo) t->lo = t->hi = 0;
    t->ok_lo = 0;
    while (t->ok_lo < n_out && !t->ok[t->ok_lo]) t->ok_lo++;
    t->ok_hi = t->ok_lo;
    while (t->ok_hi < n_out && t->ok[t->ok_hi]) t->ok_hi++;
    for (int64_t o = t->ok_hi; o < n_out; o++)
        if (t->ok[o]) return mp_error_set(MP_ERR_INTERNAL, "resample: inside samples are not contiguous");
    return MP_OK;
}

typedef struct {
    const mp_vol_t *in;
    mp_vol_t *out;
    mp_interp_t mode;
    int separable;
    axis_tab_t t[3];
    double m[4][4];      /* output voxel -> input voxel (oblique path) */
    float fill_f;
    uint8_t fill_e[8];
    double slope, inter; /* real = stored * slope + inter (LINEAR) */
    int wide;            /* blend in double (wide integer or f64 input) */
    uint8_t *tmp;        /* one row buffer per worker */
    size_t tmp_stride;
} rs_job_t;

/* ---- typed row blends for trilinear (the y/z part) ---- */
#define BLEND_DEF(NAME, T, ACC)                                                                    \
    static void NAME(const void *b00, const void *b01, const void *b10, const void *b11, ACC wy,     \
                     ACC wz, int64_t lo, int64_t hi, ACC *tmp) {                                   \
        const T *r00 = b00, *r01 = b01, *r10 = b10, *r11 = b11;                                    \
        for (int64_t x = lo; x < hi; x++) {                                                        \
            ACC t0 = (ACC)r00[x] + wy * ((ACC)r01[x] - (ACC)r00[x]);                               \
            ACC t1 = (ACC)r10[x] + wy * ((ACC)r11[x] - (ACC)r10[x]);                               \
            tmp[x] = t0 + wz * (t1 - t0);                                                          \
        }                                                                                          \
    }
BLEND_DEF(blend_u8, uint8_t, float)
BLEND_DEF(blend_i8, int8_t, float)
BLEND_DEF(blend_u16, uint16_t, float)
BLEND_DEF(blend_i16, int16_t, float)
BLEND_DEF(blend_f32, float, float)
BLEND_DEF(blend_u32, uint32_t, double)
BLEND_DEF(blend_i32, int32_t, double)
BLEND_DEF(blend_u64, uint64_t, double)
BLEND_DEF(blend_i64, int64_t, double)
BLEND_DEF(blend_f64, double, double)

typedef void (*blend_f_fn)(const void *, const void *, const void *, const void *, float, float, int64_t, int64_t,
                           float *);
typedef void (*blend_d_fn)(const void *, const void *, const void *, const void *, double, double, int64_t,
                           int64_t, double *);

static blend_f_fn blend_float(mp_dtype_t t) {
    switch (t) {
    case MP_DTYPE_U8: return blend_u8;
    case MP_DTYPE_I8: return blend_i8;
    case MP_DTYPE_U16: return blend_u16;
    case MP_DTYPE_I16: return blend_i16;
    case MP_DTYPE_F32: return blend_f32;
    default: return NULL;
    }
}

static blend_d_fn blend_double(mp_dtype_t t) {
    switch (t) {
    case MP_DTYPE_U32: return blend_u32;
    case MP_DTYPE_I32: return blend_i32;
    case MP_DTYPE_U64: return blend_u64;
    case MP_DTYPE_I64: return blend_i64;
    case MP_DTYPE_F64: return blend_f64;
    default: return NULL;
    }
}

static int wide_dtype(mp_dtype_t t) { return blend_float(t) == NULL; }

/* Element index of input voxel (x, y, z) in channel c. */
static inline int64_t in_index(const mp_vol_t *v, int64_t c, int64_t x, int64_t y, int64_t z) {
    return ((c * v->dim[2] + z) * v->dim[1] + y) * v->dim[0] + x;
}

static inline const uint8_t *in_elem(const mp_vol_t *v, int64_t idx) {
    return (const uint8_t *)v->data + (size_t)idx * mp_dtype_size(v->dtype);
}

static void fill_row(const rs_job_t *j, uint8_t *orow, int64_t n) {
    if (j->mode == MP_INTERP_LINEAR) {
        float *o = (float *)orow;
        for (int64_t i = 0; i < n; i++) o[i] = j->fill_f;
    } else {
        mp_volops_fill(orow, n, mp_dtype_size(j->out->dtype), j->fill_e);
    }
}

/* x pass of trilinear: out[ox] = t[i0] + w * (t[i0 + 1] - t[i0]) over the
 * inside interval, fill outside. t[hi] repeats t[hi - 1] so the last voxel
 * (i0 = n - 1, w = 0) needs no special case; the loop has no branches. */
#define XPASS_DEF(NAME, ACC, W)                                                                   \
    static void NAME(const rs_job_t *j, ACC *t, float *o) {                                      \
        const axis_tab_t *tx = &j->t[0];                                                         \
        const int64_t *i0 = tx->i0;                                                              \
        const W *w = sizeof(W) == 4 ? (const W *)(const void *)tx->wf : (const W *)(const void *)tx->w; \
        t[tx->hi] = t[tx->hi - 1];                                                               \
        for (int64_t ox = 0; ox < tx->ok_lo; ox++) o[ox] = j->fill_f;                            \
        for (int64_t ox = tx->ok_lo; ox < tx->ok_hi; ox++) {                                     \
            ACC a = t[i0[ox]], b = t[i0[ox] + 1];                                                \
            o[ox] = (float)(a + w[ox] * (b - a));                                                \
        }                                                                                        \
        for (int64_t ox = tx->ok_hi; ox < tx->n_out; ox++) o[ox] = j->fill_f;                    \
    }
XPASS_DEF(xpass_float, float, float)
XPASS_DEF(xpass_double, double, double)

static void linear_row(const rs_job_t *j, int64_t c, int64_t oz, int64_t oy, float *o, int worker) {
    const axis_tab_t *tx = &j->t[0], *ty = &j->t[1], *tz = &j->t[2];
    const mp_vol_t *in = j->in;
    if (tx->ok_hi <= tx->ok_lo) {
        for (int64_t ox = 0; ox < tx->n_out; ox++) o[ox] = j->fill_f;
        return;
    }
    int64_t y0 = ty->i0[oy], y1 = ty->i1[oy], z0 = tz->i0[oz], z1 = tz->i1[oz];
    const uint8_t *b00 = in_elem(in, in_index(in, c, 0, y0, z0)), *b01 = in_elem(in, in_index(in, c, 0, y1, z0));
    const uint8_t *b10 = in_elem(in, in_index(in, c, 0, y0, z1)), *b11 = in_elem(in, in_index(in, c, 0, y1, z1));
    void *tmp = j->tmp + (size_t)worker * j->tmp_stride;
    if (!j->wide) {
        blend_float(in->dtype)(b00, b01, b10, b11, ty->wf[oy], tz->wf[oz], tx->lo, tx->hi, tmp);
        xpass_float(j, tmp, o);
    } else {
        blend_double(in->dtype)(b00, b01, b10, b11, ty->w[oy], tz->w[oz], tx->lo, tx->hi, tmp);
        xpass_double(j, tmp, o);
    }
    if (j->slope != 1 || j->inter != 0)
        for (int64_t ox = tx->ok_lo; ox < tx->ok_hi; ox++) o[ox] = (float)(o[ox] * j->slope + j->inter);
}

#define NEAREST_ROW_DEF(NAME, T)                                                                   \
    static void NAME(const rs_job_t *j, const T *row, T *o) {                                      \
        const axis_tab_t *tx = &j->t[0];                                                           \
        T fill;                                                                                    \
        memcpy(&fill, j->fill_e, sizeof fill);                                                     \
        for (int64_t ox = 0; ox < tx->n_out; ox++) o[ox] = tx->ok[ox] ? row[tx->nn[ox]] : fill;    \
    }
NEAREST_ROW_DEF(nearest_row8, uint8_t)
NEAREST_ROW_DEF(nearest_row16, uint16_t)
NEAREST_ROW_DEF(nearest_row32, uint32_t)
NEAREST_ROW_DEF(nearest_row64, uint64_t)

static void nearest_row(const rs_job_t *j, int64_t c, int64_t oz, int64_t oy, uint8_t *o) {
    const void *row = in_elem(j->in, in_index(j->in, c, 0, j->t[1].nn[oy], j->t[2].nn[oz]));
    switch (mp_dtype_size(j->in->dtype)) {
    case 1: nearest_row8(j, row, o); break;
    case 2: nearest_row16(j, row, (uint16_t *)(void *)o); break;
    case 4: nearest_row32(j, row, (uint32_t *)(void *)o); break;
    default: nearest_row64(j, row, (uint64_t *)(void *)o); break;
    }
}

/* Bit pattern of element idx (labels compare by stored bits). */
static inline uint64_t elem_bits(const uint8_t *data, size_t es, int64_t idx) {
    const uint8_t *p = data + (size_t)idx * es;
    switch (es) {
    case 1: return *p;
    case 2: { uint16_t x; memcpy(&x, p, 2); return x; }
    case 4: { uint32_t x; memcpy(&x, p, 4); return x; }
    default: { uint64_t x; memcpy(&x, p, 8); return x; }
    }
}

/* Per-label linear vote among the 8 neighbours (element index, weight):
 * weights of equal labels add up; the largest total wins, ties go to the
 * smaller label value. Returns the winner's element index. When all
 * neighbours agree (most voxels) that label wins without summing. */
static int64_t label_vote(const mp_vol_t *in, const int64_t idx[8], const double w[8]) {
    const size_t es = mp_dtype_size(in->dtype);
    const uint8_t *data = in->data;
    uint64_t bits[8];
    int same = 1;
    for (int k = 0; k < 8; k++) {
        bits[k] = elem_bits(data, es, idx[k]);
        same &= bits[k] == bits[0];
    }
    if (same) return idx[0];
    int64_t lab[8];
    uint64_t lbits[8];
    double tot[8];
    int nl = 0;
    for (int k = 0; k < 8; k++) {
        if (!(w[k] > 0)) continue;
        int l = 0;
        while (l < nl && lbits[l] != bits[k]) l++;
        if (l == nl) {
            lab[nl] = idx[k];
            lbits[nl] = bits[k];
            tot[nl++] = 0;
        }
        tot[l] += w[k];
    }
    if (nl == 0) return idx[0];
    int best = 0;
    for (int l = 1; l < nl; l++)
        if (tot[l] > tot[best] || (tot[l] == tot[best] && mp_vol_get(in, lab[l]) < mp_vol_get(in, lab[best])))
            best = l;
    return lab[best];
}

/* Gathers the 8 neighbours of a sample in channel c and votes. */
static int64_t label_at(const mp_vol_t *in, int64_t c, const axis_pos_t p[3]) {
    int64_t idx[8];
    double w[8];
    double wx[2] = {1 - p[0].w, p[0].w}, wy[2] = {1 - p[1].w, p[1].w}, wz[2] = {1 - p[2].w, p[2].w};
    int64_t xs[2] = {p[0].i0, p[0].i1};
    int64_t ys[2] = {p[1].i0, p[1].i1}, zs[2] = {p[2].i0, p[2].i1};
    for (int k = 0; k < 8; k++) {
        int bx = k & 1, by = (k >> 1) & 1, bz = (k >> 2) & 1;
        idx[k] = in_index(in, c, xs[bx], ys[by], zs[bz]);
        w[k] = wx[bx] * wy[by] * wz[bz];
    }
    return label_vote(in, idx, w);
}

static axis_pos_t tab_pos(const axis_tab_t *t, int64_t o) {
    axis_pos_t p = {t->i0[o], t->i1[o], t->nn[o], t->w[o], t->ok[o]};
    return p;
}

/* Per-label row: voxels whose 8 neighbours hold one label (most of a label
 * map) are copied straight from the four input rows; the rest vote. T is an
 * unsigned type of the element's size (labels compare by bits). */
#define LABEL_ROW_DEF(NAME, T)                                                                     \
    static void NAME(const rs_job_t *j, int64_t c, int64_t oz, int64_t oy, T *o) {                 \
        const mp_vol_t *in = j->in;                                                                \
        const axis_tab_t *tx = &j->t[0];                                                           \
        axis_pos_t p[3] = {{0, 0, 0, 0, 0}, tab_pos(&j->t[1], oy), tab_pos(&j->t[2], oz)};          \
        const T *r00 = (const T *)in->data + in_index(in, c, 0, p[1].i0, p[2].i0);                 \
        const T *r01 = (const T *)in->data + in_index(in, c, 0, p[1].i1, p[2].i0);                 \
        const T *r10 = (const T *)in->data + in_index(in, c, 0, p[1].i0, p[2].i1);                 \
        const T *r11 = (const T *)in->data + in_index(in, c, 0, p[1].i1, p[2].i1);                 \
        T fill;                                                                                    \
        memcpy(&fill, j->fill_e, sizeof fill);                                                     \
        for (int64_t ox = 0; ox < tx->n_out; ox++) {                                               \
            if (!tx->ok[ox]) {                                                                     \
                o[ox] = fill;                                                                      \
                continue;                                                                          \
            }                                                                                      \
            int64_t x0 = tx->i0[ox], x1 = tx->i1[ox];                                              \
            T v = r00[x0];                                                                         \
            if (r00[x1] == v && r01[x0] == v && r01[x1] == v && r10[x0] == v && r10[x1] == v &&    \
                r11[x0] == v && r11[x1] == v) {                                                    \
                o[ox] = v;                                                                         \
                continue;                                                                          \
            }                                                                                      \
            p[0] = tab_pos(tx, ox);                                                                \
            o[ox] = ((const T *)in->data)[label_at(in, c, p)];                                     \
        }                                                                                          \
    }
LABEL_ROW_DEF(label_row8, uint8_t)
LABEL_ROW_DEF(label_row16, uint16_t)
LABEL_ROW_DEF(label_row32, uint32_t)
LABEL_ROW_DEF(label_row64, uint64_t)

static void label_row(const rs_job_t *j, int64_t c, int64_t oz, int64_t oy, uint8_t *o) {
    switch (mp_dtype_size(j->in->dtype)) {
    case 1: label_row8(j, c, oz, oy, o); break;
    case 2: label_row16(j, c, oz, oy, (uint16_t *)(void *)o); break;
    case 4: label_row32(j, c, oz, oy, (uint32_t *)(void *)o); break;
    default: label_row64(j, c, oz, oy, (uint64_t *)(void *)o); break;
    }
}

/* Trilinear at one oblique sample, in double, blending y/z first then x as
 * the separable path does. */
static double linear_at(const mp_vol_t *in, int64_t c, const axis_pos_t p[3]) {
    double t[2];
    for (int bx = 0; bx < 2; bx++) {
        int64_t x = bx ? p[0].i1 : p[0].i0;
        double r00 = mp_volops_fetch(in, in_index(in, c, x, p[1].i0, p[2].i0));
        double r01 = mp_volops_fetch(in, in_index(in, c, x, p[1].i1, p[2].i0));
        double r10 = mp_volops_fetch(in, in_index(in, c, x, p[1].i0, p[2].i1));
        double r11 = mp_volops_fetch(in, in_index(in, c, x, p[1].i1, p[2].i1));
        double t0 = r00 + p[1].w * (r01 - r00), t1 = r10 + p[1].w * (r11 - r10);
        t[bx] = t0 + p[2].w * (t1 - t0);
    }
    return t[0] + p[0].w * (t[1] - t[0]);
}

static void oblique_row(const rs_job_t *j, int64_t c, int64_t oz, int64_t oy, uint8_t *o) {
    const mp_vol_t *in = j->in;
    const size_t es = mp_dtype_size(j->out->dtype);
    for (int64_t ox = 0; ox < j->out->dim[0]; ox++) {
        axis_pos_t p[3];
        int ok = 1;
        for (int a = 0; a < 3; a++) {
            double x = j->m[a][0] * (double)ox + j->m[a][1] * (double)oy + j->m[a][2] * (double)oz + j->m[a][3];
            p[a] = axis_pos(x, in->dim[a]);
            ok &= p[a].ok;
        }
        uint8_t *dst = o + (size_t)ox * es;
        if (!ok) {
            if (j->mode == MP_INTERP_LINEAR) memcpy(dst, &j->fill_f, 4);
            else memcpy(dst, j->fill_e, es);
        } else if (j->mode == MP_INTERP_LINEAR) {
            double r = linear_at(in, c, p);
            float f = (float)(r * j->slope + j->inter);
            memcpy(dst, &f, 4);
        } else if (j->mode == MP_INTERP_NEAREST) {
            memcpy(dst, in_elem(in, in_index(in, c, p[0].nn, p[1].nn, p[2].nn)), es);
        } else {
            memcpy(dst, in_elem(in, label_at(in, c, p)), es);
        }
    }
}

static void rows_body(void *ctx, int64_t begin, int64_t end, int worker) {
    const rs_job_t *j = ctx;
    const mp_vol_t *out = j->out;
    const int64_t nyo = out->dim[1], nzo = out->dim[2], nxo = out->dim[0];
    const size_t es = mp_dtype_size(out->dtype);
    for (int64_t r = begin; r < end; r++) {
        int64_t oy = r % nyo, oz = (r / nyo) % nzo, c = r / (nyo * nzo);
        uint8_t *orow = (uint8_t *)out->data + (size_t)(r * nxo) * es;
        if (!j->separable) {
            oblique_row(j, c, oz, oy, orow);
        } else if (!j->t[1].ok[oy] || !j->t[2].ok[oz]) {
            fill_row(j, orow, nxo);
        } else if (j->mode == MP_INTERP_LINEAR) {
            linear_row(j, c, oz, oy, (float *)orow, worker);
        } else if (j->mode == MP_INTERP_NEAREST) {
            nearest_row(j, c, oz, oy, orow);
        } else {
            label_row(j, c, oz, oy, orow);
        }
    }
}

/* Allocates the output, runs the rows and frees the job's buffers. The
 * output's affine is A_in * vox (vox: output voxel -> input voxel). */
static int run_job(rs_job_t *j, mp_vol_t **out, const int64_t dim[3], const double out_affine[4][4],
                   double fill, mp_pool_t *pool) {
    const mp_vol_t *v = j->in;
    int64_t d4[4] = {dim[0], dim[1], dim[2], v->dim[3]};
    mp_dtype_t odt = j->mode == MP_INTERP_LINEAR ? MP_DTYPE_F32 : v->dtype;
    int rc = mp_vol_create(&j->out, d4, odt);
    if (rc) return rc;
    mp_vol_t *o = j->out;
    o->meta = v->meta;
    mp_vol_set_affine(o, out_affine);
    if (j->mode == MP_INTERP_LINEAR) {
        o->scl_slope = 1;
        o->scl_inter = 0;
        j->slope = v->scl_slope == 0 ? 1 : v->scl_slope;
        j->inter = v->scl_slope == 0 ? 0 : v->scl_inter;
        j->fill_f = (float)fill;
        j->wide = wide_dtype(v->dtype);
        int nthreads = mp_pool_threads(pool);
        j->tmp_stride = ((size_t)(v->dim[0] + 1) * sizeof(double) + 63) & ~(size_t)63;
        j->tmp = mp_alloc(j->tmp_stride * (size_t)nthreads);
        if (!j->tmp) {
            mp_vol_free(o);
            j->out = NULL;
            return mp_error_set(MP_ERR_NOMEM, "resample: cannot allocate row buffers");
        }
    } else {
        o->scl_slope = v->scl_slope;
        o->scl_inter = v->scl_inter;
        mp_volops_encode(v->dtype, fill, j->fill_e);
    }
    mp_pool_parallel_for(pool, d4[3] * d4[2] * d4[1], rows_body, j);
    mp_free(j->tmp);
    j->tmp = NULL;
    *out = o;
    return MP_OK;
}

static int check_mode(mp_interp_t mode) {
    if (mode != MP_INTERP_NEAREST && mode != MP_INTERP_LINEAR && mode != MP_INTERP_LABEL)
        return mp_error_set(MP_ERR_ARG, "resample: unknown interpolation mode %d", (int)mode);
    return MP_OK;
}

/* Refuses outputs over the memory limit before any table is built; axis
 * tables cost ~41 bytes per output index and are bounded the same way. */
static int check_out_size(const mp_vol_t *v, const int64_t dim[3], mp_interp_t mode) {
    uint64_t n = mode == MP_INTERP_LINEAR ? 4 : mp_dtype_size(v->dtype);
    for (int a = 0; a < 3; a++) {
        if (dim[a] < 1)
            return mp_error_set(MP_ERR_ARG, "resample: output size %lld on axis %d must be >= 1", (long long)dim[a], a);
        if ((uint64_t)dim[a] > mp_mem_limit() / 64 || mp_mul_u64(n, (uint64_t)dim[a], &n))
            return mp_error_set(MP_ERR_LIMIT, "resample: output size %lld on axis %d is too large", (long long)dim[a], a);
    }
    if (mp_mul_u64(n, (uint64_t)v->dim[3], &n) || n > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "resample: output of %lldx%lldx%lld voxels exceeds the memory limit",
                            (long long)dim[0], (long long)dim[1], (long long)dim[2]);
    return MP_OK;
}

int mp_resample_dims_for_spacing(const mp_vol_t *v, const double target_spacing[3], int64_t out_dim[3]) {
    int rc = mp_volops_check(v, "resample");
    if (rc) return rc;
    for (int a = 0; a < 3; a++) {
        double ts = target_spacing[a], s = v->spacing[a];
        if (!(ts > 0) || !isfinite(ts))
            return mp_error_set(MP_ERR_ARG, "resample: target spacing %g on axis %d must be > 0", ts, a);
        if (!(s > 0) || !isfinite(s))
            return mp_error_set(MP_ERR_ARG, "resample: input spacing %g on axis %d must be > 0", s, a);
        /* nnU-Net: np.round((spacing / target) * shape), round half to even. */
        double n = nearbyint((s / ts) * (double)v->dim[a]);
        if (!(n < 9.0e15)) return mp_error_set(MP_ERR_LIMIT, "resample: output size %g on axis %d is too large", n, a);
        out_dim[a] = n < 1 ? 1 : (int64_t)n;
    }
    return MP_OK;
}

int mp_vol_resample_shape(mp_vol_t **out, const mp_vol_t *v, const int64_t out_dim[3], mp_interp_t mode,
                          mp_pool_t *pool) {
    *out = NULL;
    int rc = mp_volops_check(v, "resample");
    if (rc || (rc = check_mode(mode)) || (rc = check_out_size(v, out_dim, mode))) return rc;
    rs_job_t j;
    memset(&j, 0, sizeof j);
    j.in = v;
    j.mode = mode;
    j.separable = 1;
    double vox[4][4];
    mp_mat4_identity(vox);
    for (int a = 0; a < 3 && rc == MP_OK; a++) {
        double scale = (double)v->dim[a] / (double)out_dim[a];
        vox[a][a] = scale;
        vox[a][3] = 0.5 * scale - 0.5;
        rc = tab_build(&j.t[a], out_dim[a], v->dim[a], 0, 0, scale);
    }
    if (rc == MP_OK) {
        double aff[4][4];
        mp_mat4_mul(aff, v->affine, vox);
        rc = run_job(&j, out, out_dim, aff, 0, pool);
    }
    for (int a = 0; a < 3; a++) tab_free(&j.t[a]);
    return rc;
}

int mp_vol_resample_spacing(mp_vol_t **out, const mp_vol_t *v, const double target_spacing[3],
                            mp_interp_t mode, mp_pool_t *pool) {
    *out = NULL;
    int64_t dim[3];
    int rc = mp_resample_dims_for_spacing(v, target_spacing, dim);
    if (rc) return rc;
    return mp_vol_resample_shape(out, v, dim, mode, pool);
}

int mp_vol_resample_grid(mp_vol_t **out, const mp_vol_t *v, const int64_t dim[3], const double affine[4][4],
                         mp_interp_t mode, double fill, mp_pool_t *pool) {
    *out = NULL;
    int rc = mp_volops_check(v, "resample");
    if (rc || (rc = check_mode(mode)) || (rc = check_out_size(v, dim, mode))) return rc;
    double inv[4][4];
    if (mp_mat4_inv(inv, v->affine) != MP_OK)
        return mp_error_set(MP_ERR_ARG, "resample: the input volume's affine is singular");
    rs_job_t j;
    memset(&j, 0, sizeof j);
    j.in = v;
    j.mode = mode;
    mp_mat4_mul(j.m, inv, affine);
    /* Separable when off-diagonal terms move no sample by more than 1e-7 voxel. */
    j.separable = 1;
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++)
            if (r != c && fabs(j.m[r][c]) * (double)dim[c] > 1e-7) j.separable = 0;
        if (!isfinite(j.m[r][3]) || !isfinite(j.m[r][r])) j.separable = 0;
    }
    for (int a = 0; a < 3 && rc == MP_OK && j.separable; a++)
        rc = tab_build(&j.t[a], dim[a], v->dim[a], j.m[a][a], j.m[a][3], 0);
    if (rc == MP_OK) rc = run_job(&j, out, dim, affine, fill, pool);
    for (int a = 0; a < 3; a++) tab_free(&j.t[a]);
    return rc;
}
