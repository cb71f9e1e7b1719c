/* Exact Euclidean distance transform with anisotropic spacing.
 *
 * Separable: the x pass finds, per line, the distance to the nearest feature
 * voxel along x; the y and z passes take the lower envelope of the parabolas
 * f(p) + (s * (q - p))^2 (Felzenszwalb & Huttenlocher 2012), which gives the
 * exact squared distance over the whole grid after the last pass. Every pass
 * is independent per line, so lines are split over the thread pool and the
 * output does not depend on the thread count. The y and z passes gather 8
 * neighbouring columns at a time so strided reads use whole cache lines. */
#include "medpipe/vol_morph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TILE 8 /* columns per gather: 8 doubles = one 64-byte cache line */

typedef struct {
    double *buf; /* TILE * n gathered column values */
    double *out; /* n */
    double *g;   /* n + 1: f / s^2 + q^2 of the envelope sites */
    double *zn, *zd; /* n + 1: where each site's interval starts, as a fraction */
    int64_t *v;  /* n envelope sites */
} scratch_t;

typedef struct {
    double *sq;
    const uint8_t *feature;
    int64_t nx, ny, nz;
    double s[3];
    int axis;     /* 1 (y) or 2 (z) for the envelope passes */
    int64_t ntile; /* tiles of TILE columns along x */
    scratch_t *scratch; /* one per worker */
    const uint8_t *xneed; /* NULL, or per x: some query voxel has this x */
    const uint8_t *colq;  /* NULL, or per (x, y): the z column holds a query voxel */
} edt_ctx_t;

/* Lower envelope of the parabolas rooted at the finite f[p]; d[q] receives
 * min_p f[p] + (s (q - p))^2, or +inf on every q when all f are infinite.
 * In index units the parabola of p is s^2 ((q - p)^2 + f[p] / s^2), so two
 * parabolas p < q cross at (g[q] - g[p]) / (2 (q - p)) with g = f / s^2 + q^2.
 * Crossings are kept as numerator / denominator pairs (denominators > 0) and
 * compared by cross-multiplying: no division in the inner loops. */
static void envelope_line(double *d, const double *f, int64_t n, double s, const scratch_t *w) {
    const double inv_s2 = 1.0 / (s * s);
    int64_t *v = w->v;
    double *g = w->g, *zn = w->zn, *zd = w->zd;
    int64_t k = -1;
    for (int64_t q = 0; q < n; q++) {
        if (f[q] == INFINITY) continue;
        double gq = f[q] * inv_s2 + (double)(q * q);
        if (k < 0) {
            k = 0;
            v[0] = q;
            g[0] = gq;
            continue;
        }
        double num, den;
        for (;;) {
            num = gq - g[k];
            den = (double)(2 * (q - v[k]));
            /* v[k] is hidden when q overtakes it before its interval starts. */
            if (k > 0 && num * zd[k] <= zn[k] * den) k--;
            else break;
        }
        k++;
        v[k] = q;
        g[k] = gq;
        zn[k] = num;
        zd[k] = den;
    }
    if (k < 0) {
        for (int64_t q = 0; q < n; q++) d[q] = INFINITY;
        return;
    }
    zn[k + 1] = 1; /* +inf: 1 < q * 0 never holds */
    zd[k + 1] = 0;
    int64_t j = 0;
    for (int64_t q = 0; q < n; q++) {
        while (zn[j + 1] < (double)q * zd[j + 1]) j++;
        double t = (double)(q - v[j]) * s;
        d[q] = f[v[j]] + t * t;
    }
}

/* x pass: distance along each x line to its nearest feature voxel. */
static void pass_x(void *ctxp, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const edt_ctx_t *c = ctxp;
    const int64_t nx = c->nx;
    const double s = c->s[0];
    for (int64_t line = begin; line < end; line++) {
        const uint8_t *f = c->feature + line * nx;
        double *d = c->sq + line * nx;
        int64_t last = -1;
        for (int64_t x = 0; x < nx; x++) {
            if (f[x]) last = x;
            double t = (double)(x - last) * s;
            d[x] = last < 0 ? INFINITY : t * t;
        }
        /* Right of the last feature the forward distances are final. */
        for (int64_t x = last - 1; x >= 0; x--) {
            if (f[x]) last = x;
            double t = (double)(last - x) * s;
            if (t * t < d[x]) d[x] = t * t;
        }
    }
}

/* y or z pass over tiles of TILE neighbouring columns. */
static void pass_envelope(void *ctxp, int64_t begin, int64_t end, int worker) {
    const edt_ctx_t *c = ctxp;
    scratch_t *w = &c->scratch[worker];
    const int64_t nx = c->nx, ny = c->ny;
    const int64_t n = c->axis == 1 ? c->ny : c->nz;
    const int64_t stride = c->axis == 1 ? nx : nx * ny;
    const double s = c->s[c->axis];
    for (int64_t u = begin; u < end; u++) {
        int64_t other = u / c->ntile, x0 = (u % c->ntile) * TILE;
        int64_t width = nx - x0 < TILE ? nx - x0 : TILE;
        const uint8_t *need = c->xneed ? (c->axis == 1 ? c->xneed : c->colq + nx * other) + x0 : NULL;
        if (need) {
            int any = 0;
            for (int64_t t = 0; t < width; t++) any |= need[t];
            if (!any) continue;
        }
        double *base = c->sq + x0 + (c->axis == 1 ? nx * ny * other : nx * other);
        for (int64_t q = 0; q < n; q++)
            for (int64_t t = 0; t < width; t++) w->buf[t * n + q] = base[q * stride + t];
        for (int64_t t = 0; t < width; t++) {
            if (need && !need[t]) continue;
            envelope_line(w->out, w->buf + t * n, n, s, w);
            memcpy(w->buf + t * n, w->out, (size_t)n * sizeof(double));
        }
        for (int64_t q = 0; q < n; q++)
            for (int64_t t = 0; t < width; t++) base[q * stride + t] = w->buf[t * n + q];
    }
}

static void scratch_free(scratch_t *s, int count) {
    if (!s) return;
    for (int i = 0; i < count; i++) {
        free(s[i].buf);
        free(s[i].out);
        free(s[i].g);
        free(s[i].zn);
        free(s[i].zd);
        free(s[i].v);
    }
    free(s);
}

static scratch_t *scratch_create(int count, int64_t n) {
    scratch_t *s = calloc((size_t)count, sizeof *s);
    if (!s) return NULL;
    for (int i = 0; i < count; i++) {
        s[i].buf = malloc((size_t)(TILE * n) * sizeof(double));
        s[i].out = malloc((size_t)n * sizeof(double));
        s[i].g = malloc((size_t)(n + 1) * sizeof(double));
        s[i].zn = malloc((size_t)(n + 1) * sizeof(double));
        s[i].zd = malloc((size_t)(n + 1) * sizeof(double));
        s[i].v = malloc((size_t)n * sizeof(int64_t));
        if (!s[i].buf || !s[i].out || !s[i].g || !s[i].zn || !s[i].zd || !s[i].v) {
            scratch_free(s, count);
            return NULL;
        }
    }
    return s;
}

/* Marks the z columns and the x positions that hold query voxels. */
static int query_flags(uint8_t **colq, uint8_t **xneed, const uint8_t *query, const int64_t dim[3]) {
    const int64_t nx = dim[0], nxy = dim[0] * dim[1];
    uint8_t *cq = calloc((size_t)nxy, 1), *xn = calloc((size_t)nx, 1);
    if (!cq || !xn) {
        free(cq);
        free(xn);
        return mp_error_set(MP_ERR_NOMEM, "distance transform: out of memory");
    }
    for (int64_t z = 0; z < dim[2]; z++) {
        const uint8_t *qz = query + nxy * z;
        for (int64_t i = 0; i < nxy; i++) cq[i] |= qz[i] != 0;
    }
    for (int64_t i = 0; i < nxy; i++) xn[i % nx] |= cq[i];
    *colq = cq;
    *xneed = xn;
    return MP_OK;
}

int mp_edt_sq_at(double *sq, const uint8_t *feature, const uint8_t *query, const int64_t dim[3],
                 const double spacing[3], mp_pool_t *pool) {
    for (int a = 0; a < 3; a++) {
        if (dim[a] < 1 || dim[a] > ((int64_t)1 << 31))
            return mp_error_set(MP_ERR_ARG, "distance transform: dimension %d is %lld", a, (long long)dim[a]);
        if (!(spacing[a] > 0) || !isfinite(spacing[a]))
            return mp_error_set(MP_ERR_ARG, "distance transform: spacing %d is %g (must be > 0)", a, spacing[a]);
    }
    edt_ctx_t c = {sq, feature, dim[0], dim[1], dim[2], {spacing[0], spacing[1], spacing[2]}, 0, 0, NULL, NULL, NULL};
    c.ntile = (c.nx + TILE - 1) / TILE;
    int workers = pool ? mp_pool_threads(pool) : 1;
    int64_t n = c.ny > c.nz ? c.ny : c.nz;
    if ((uint64_t)workers * (uint64_t)(TILE + 5) * (uint64_t)(n + 1) * 8 > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "distance transform: scratch exceeds the memory limit");
    uint8_t *colq = NULL, *xneed = NULL;
    if (query) {
        int rc = query_flags(&colq, &xneed, query, dim);
        if (rc) return rc;
        c.colq = colq;
        c.xneed = xneed;
    }
    c.scratch = scratch_create(workers, n);
    if (!c.scratch) {
        free(colq);
        free(xneed);
        return mp_error_set(MP_ERR_NOMEM, "distance transform: out of memory");
    }
    mp_pool_parallel_for(pool, c.ny * c.nz, pass_x, &c);
    if (c.ny > 1) {
        c.axis = 1;
        mp_pool_parallel_for(pool, c.nz * c.ntile, pass_envelope, &c);
    }
    if (c.nz > 1) {
        c.axis = 2;
        mp_pool_parallel_for(pool, c.ny * c.ntile, pass_envelope, &c);
    }
    scratch_free(c.scratch, workers);
    free(colq);
    free(xneed);
    return MP_OK;
}

int mp_edt_sq(double *sq, const uint8_t *feature, const int64_t dim[3], const double spacing[3], mp_pool_t *pool) {
    return mp_edt_sq_at(sq, feature, NULL, dim, spacing, pool);
}

int mp_vol_edt(mp_vol_t **out, const mp_vol_t *v, int to_zero, mp_dtype_t out_dtype, mp_pool_t *pool) {
    *out = NULL;
    if (out_dtype != MP_DTYPE_F32 && out_dtype != MP_DTYPE_F64)
        return mp_error_set(MP_ERR_ARG, "distance transform: output type must be f32 or f64 (got %s)",
                            mp_dtype_name(out_dtype));
    if (v->dim[3] != 1)
        return mp_error_set(MP_ERR_ARG, "distance transform needs a one-channel volume (this one has %lld)",
                            (long long)v->dim[3]);
    int64_t nv = mp_vol_voxels(v);
    if ((uint64_t)nv * 9 > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "distance transform: volume exceeds the memory limit");
    uint8_t *feature = mp_alloc((size_t)nv);
    double *sq = out_dtype == MP_DTYPE_F32 ? mp_alloc((size_t)nv * sizeof(double)) : NULL;
    mp_vol_t *o = NULL;
    int rc = MP_OK;
    if (!feature || (out_dtype == MP_DTYPE_F32 && !sq)) {
        rc = mp_error_set(MP_ERR_NOMEM, "distance transform: out of memory");
        goto done;
    }
    if ((rc = mp_vol_create_like(&o, v, out_dtype))) goto done;
    double slope = v->scl_slope == 0 ? 1 : v->scl_slope, inter = v->scl_slope == 0 ? 0 : v->scl_inter;
    for (int64_t i = 0; i < nv; i++) {
        int nonzero = mp_vol_get(v, i) * slope + inter != 0;
        feature[i] = (uint8_t)(to_zero ? !nonzero : nonzero);
    }
    if (out_dtype == MP_DTYPE_F64) sq = o->data;
    if ((rc = mp_edt_sq(sq, feature, v->dim, v->spacing, pool))) goto done;
    if (out_dtype == MP_DTYPE_F64) {
        for (int64_t i = 0; i < nv; i++) sq[i] = sqrt(sq[i]);
    } else {
        float *d = o->data;
        for (int64_t i = 0; i < nv; i++) d[i] = (float)sqrt(sq[i]);
    }
done:
    if (out_dtype == MP_DTYPE_F64) sq = NULL;
    mp_free(sq);
    mp_free(feature);
    if (rc) mp_vol_free(o);
    else *out = o;
    return rc;
}
