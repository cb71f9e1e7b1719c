/* Per-class segmentation metrics: one counting pass over the class-index
 * grids of prediction and reference (counts and bounding boxes of every class
 * at once), then for each class with both masks non-empty the surfaces and
 * two exact distance transforms restricted to the class's bounding box.
 * Conventions are documented in include/medpipe/metrics.h. */
#include "medpipe/metrics.h"
#include "medpipe/vol_morph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void mp_metrics_opts_init(mp_metrics_opts_t *o) {
    o->tolerance_mm = 1.0;
    o->empty_distance = -1;
    o->surface = 1;
    o->pool = NULL;
}

/* ---- percentiles ---- */

static inline void swap_d(double *a, double *b) {
    double t = *a;
    *a = *b;
    *b = t;
}

/* Moves the k-th smallest element to x[k], smaller ones before it and larger
 * or equal ones after it (Hoare partitioning, median-of-three pivot). */
static double select_kth(double *x, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        double a = x[lo], b = x[mid], c = x[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] < pivot) i++;
            while (x[j] > pivot) j--;
            if (i <= j) {
                swap_d(&x[i], &x[j]);
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break; /* x[j+1 .. i-1] all equal the pivot */
    }
    return x[k];
}

double mp_percentile(double *x, int64_t n, double q) {
    if (n <= 0) return NAN;
    double h = (double)(n - 1) * (q / 100.0);
    if (h < 0) h = 0;
    if (h > (double)(n - 1)) h = (double)(n - 1);
    int64_t k = (int64_t)floor(h);
    double t = h - (double)k;
    double a = select_kth(x, n, k);
    if (t == 0 || k + 1 >= n) return a;
    double b = x[k + 1];
    for (int64_t i = k + 2; i < n; i++)
        if (x[i] < b) b = x[i];
    /* Interpolate from the nearer end, as numpy does, so t = 1 gives b. */
    double diff = b - a;
    return t < 0.5 ? a + diff * t : b - diff * (1 - t);
}

/* ---- surfaces and surface distances ---- */

/* Surface voxels: inside with a 6-neighbour outside the mask or the grid. */
static int64_t surface(uint8_t *s, const uint8_t *m, const int64_t dim[3]) {
    const int64_t nx = dim[0], ny = dim[1], nz = dim[2], sy = nx, sz = nx * ny;
    int64_t count = 0, i = 0;
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++, i++) {
                if (!m[i]) {
                    s[i] = 0;
                    continue;
                }
                int edge = x == 0 || x == nx - 1 || y == 0 || y == ny - 1 || z == 0 || z == nz - 1;
                edge = edge || !m[i - 1] || !m[i + 1] || !m[i - sy] || !m[i + sy] || !m[i - sz] || !m[i + sz];
                s[i] = (uint8_t)edge;
                count += edge;
            }
    return count;
}

/* Square roots of sq at the voxels where sel is set, in memory order. */
static void gather_dist(double *d, const double *sq, const uint8_t *sel, int64_t nv) {
    int64_t k = 0;
    for (int64_t i = 0; i < nv; i++)
        if (sel[i]) d[k++] = sqrt(sq[i]);
}

static int grid_voxels(const int64_t dim[3], int64_t *nv) {
    uint64_t n = 1;
    for (int a = 0; a < 3; a++)
        if (dim[a] < 1 || mp_mul_u64(n, (uint64_t)dim[a], &n))
            return mp_error_set(MP_ERR_ARG, "metrics: bad grid dimension %lld", (long long)dim[a]);
    uint64_t bytes; /* the working set: class grids, masks, surfaces, squared distances */
    if (mp_mul_u64(n, 12, &bytes) || bytes > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "metrics: a %lldx%lldx%lld grid exceeds the memory limit",
                            (long long)dim[0], (long long)dim[1], (long long)dim[2]);
    *nv = (int64_t)n;
    return MP_OK;
}

/* Buffers reused across classes (fresh large allocations cost page faults). */
typedef struct {
    uint8_t *p, *r, *sp, *sr; /* cropped masks and their surfaces */
    double *sq;
    int64_t cap;
} workspace_t;

static void ws_free(workspace_t *w) {
    mp_free(w->p);
    mp_free(w->r);
    mp_free(w->sp);
    mp_free(w->sr);
    mp_free(w->sq);
    memset(w, 0, sizeof *w);
}

static int ws_reserve(workspace_t *w, int64_t nv) {
    if (nv <= w->cap) return MP_OK;
    ws_free(w);
    w->p = mp_alloc((size_t)nv);
    w->r = mp_alloc((size_t)nv);
    w->sp = mp_alloc((size_t)nv);
    w->sr = mp_alloc((size_t)nv);
    w->sq = mp_alloc((size_t)nv * sizeof *w->sq);
    if (!w->p || !w->r || !w->sp || !w->sr || !w->sq) {
        ws_free(w);
        return mp_error_set(MP_ERR_NOMEM, "surface distances: out of memory");
    }
    w->cap = nv;
    return MP_OK;
}

static int surface_distances_ws(workspace_t *w, double **d_pred, int64_t *n_pred, double **d_ref, int64_t *n_ref,
                                const uint8_t *pred, const uint8_t *ref, const int64_t dim[3],
                                const double spacing[3], mp_pool_t *pool) {
    *d_pred = *d_ref = NULL;
    *n_pred = *n_ref = 0;
    int64_t nv;
    int rc = grid_voxels(dim, &nv);
    if (rc || (rc = ws_reserve(w, nv))) return rc;
    int64_t np = surface(w->sp, pred, dim), nr = surface(w->sr, ref, dim);
    double *dp = np ? mp_alloc((size_t)np * sizeof *dp) : NULL;
    double *dr = nr ? mp_alloc((size_t)nr * sizeof *dr) : NULL;
    if ((np && !dp) || (nr && !dr)) {
        rc = mp_error_set(MP_ERR_NOMEM, "surface distances: out of memory");
        goto fail;
    }
    /* Each transform is only needed at the other surface's voxels. */
    if (np && nr) {
        if ((rc = mp_edt_sq_at(w->sq, w->sr, w->sp, dim, spacing, pool))) goto fail;
        gather_dist(dp, w->sq, w->sp, nv);
        if ((rc = mp_edt_sq_at(w->sq, w->sp, w->sr, dim, spacing, pool))) goto fail;
        gather_dist(dr, w->sq, w->sr, nv);
    } else {
        for (int64_t i = 0; i < np; i++) dp[i] = INFINITY;
        for (int64_t i = 0; i < nr; i++) dr[i] = INFINITY;
    }
    *d_pred = dp;
    *d_ref = dr;
    *n_pred = np;
    *n_ref = nr;
    return MP_OK;
fail:
    mp_free(dp);
    mp_free(dr);
    return rc;
}

int mp_surface_distances(double **d_pred, int64_t *n_pred, double **d_ref, int64_t *n_ref, const uint8_t *pred,
                         const uint8_t *ref, const int64_t dim[3], const double spacing[3], mp_pool_t *pool) {
    workspace_t w = {0};
    int rc = surface_distances_ws(&w, d_pred, n_pred, d_ref, n_ref, pred, ref, dim, spacing, pool);
    ws_free(&w);
    return rc;
}

/* HD95, ASSD and NSD from the two directed distance sets (both non-empty). */
static void distance_stats(mp_class_metrics_t *m, double *dp, int64_t np, double *dr, int64_t nr, double tol) {
    double sum = 0;
    int64_t within = 0;
    for (int64_t i = 0; i < np; i++) {
        sum += dp[i];
        within += dp[i] <= tol;
    }
    for (int64_t i = 0; i < nr; i++) {
        sum += dr[i];
        within += dr[i] <= tol;
    }
    m->assd = sum / (double)(np + nr);
    m->nsd = (double)within / (double)(np + nr);
    double hp = mp_percentile(dp, np, 95), hr = mp_percentile(dr, nr, 95);
    m->hd95 = hp > hr ? hp : hr;
}

/* ---- counting pass ---- */

typedef struct {
    int64_t np, nr, tp;
    int64_t lo[3], hi[3]; /* bounding box of pred OR ref */
} class_acc_t;

typedef struct {
    const uint16_t *kp, *kr;
    int64_t nx, ny;
    int nk;              /* classes + 1 (slot 0 unused) */
    class_acc_t *acc;    /* one block of nk per worker */
} count_ctx_t;

static inline void box_add(class_acc_t *a, int64_t x, int64_t y, int64_t z) {
    if (x < a->lo[0]) a->lo[0] = x;
    if (x > a->hi[0]) a->hi[0] = x;
    if (y < a->lo[1]) a->lo[1] = y;
    if (y > a->hi[1]) a->hi[1] = y;
    if (z < a->lo[2]) a->lo[2] = z;
    if (z > a->hi[2]) a->hi[2] = z;
}

static void count_slices(void *ctxp, int64_t z0, int64_t z1, int worker) {
    const count_ctx_t *c = ctxp;
    class_acc_t *acc = c->acc + (int64_t)worker * c->nk;
    for (int64_t z = z0; z < z1; z++)
        for (int64_t y = 0; y < c->ny; y++) {
            int64_t base = c->nx * (y + c->ny * z);
            const uint16_t *kp = c->kp + base, *kr = c->kr + base;
            for (int64_t x = 0; x < c->nx; x++) {
                unsigned p = kp[x], r = kr[x];
                if (!(p | r)) continue;
                if (p) {
                    acc[p].np++;
                    box_add(&acc[p], x, y, z);
                }
                if (r) {
                    acc[r].nr++;
                    if (r == p) acc[r].tp++;
                    else box_add(&acc[r], x, y, z);
                }
            }
        }
}

static int count_classes(class_acc_t *total, const uint16_t *kp, const uint16_t *kr, const int64_t dim[3], int nk,
                         mp_pool_t *pool) {
    int workers = pool ? mp_pool_threads(pool) : 1;
    class_acc_t *acc = malloc(sizeof *acc * (size_t)nk * (size_t)workers);
    if (!acc) return mp_error_set(MP_ERR_NOMEM, "metrics: out of memory");
    for (int64_t i = 0; i < (int64_t)nk * workers; i++) {
        acc[i] = (class_acc_t){0, 0, 0, {INT64_MAX, INT64_MAX, INT64_MAX}, {-1, -1, -1}};
    }
    count_ctx_t c = {kp, kr, dim[0], dim[1], nk, acc};
    mp_pool_parallel_for(pool, dim[2], count_slices, &c);
    for (int k = 0; k < nk; k++) {
        total[k] = acc[k];
        for (int w = 1; w < workers; w++) {
            const class_acc_t *a = &acc[(int64_t)w * nk + k];
            total[k].np += a->np;
            total[k].nr += a->nr;
            total[k].tp += a->tp;
            for (int d = 0; d < 3; d++) {
                if (a->lo[d] < total[k].lo[d]) total[k].lo[d] = a->lo[d];
                if (a->hi[d] > total[k].hi[d]) total[k].hi[d] = a->hi[d];
            }
        }
    }
    free(acc);
    return MP_OK;
}

/* ---- per-class metrics ---- */

/* Surface metrics of class `key` on its bounding box. */
static int class_surface(mp_class_metrics_t *m, const class_acc_t *a, uint16_t key, const uint16_t *kp,
                         const uint16_t *kr, const int64_t dim[3], const double spacing[3],
                         const mp_metrics_opts_t *o, workspace_t *w) {
    int64_t bd[3], nb = 1;
    for (int d = 0; d < 3; d++) {
        bd[d] = a->hi[d] - a->lo[d] + 1;
        nb *= bd[d];
    }
    int rc = ws_reserve(w, nb);
    if (rc) return rc;
    uint8_t *p = w->p, *r = w->r;
    int64_t j = 0;
    for (int64_t z = a->lo[2]; z <= a->hi[2]; z++)
        for (int64_t y = a->lo[1]; y <= a->hi[1]; y++) {
            int64_t base = a->lo[0] + dim[0] * (y + dim[1] * z);
            for (int64_t x = 0; x < bd[0]; x++, j++) {
                p[j] = kp[base + x] == key;
                r[j] = kr[base + x] == key;
            }
        }
    double *dp, *dr;
    int64_t np, nr;
    if ((rc = surface_distances_ws(w, &dp, &np, &dr, &nr, p, r, bd, spacing, o->pool))) return rc;
    if (np && nr) distance_stats(m, dp, np, dr, nr, o->tolerance_mm);
    else rc = mp_error_set(MP_ERR_INTERNAL, "metrics: empty surface of a non-empty class %lld", (long long)m->label);
    mp_free(dp);
    mp_free(dr);
    return rc;
}

static void overlap(mp_class_metrics_t *m, const class_acc_t *a, int64_t label, int64_t nv, double voxel_ml) {
    memset(m, 0, sizeof *m);
    m->label = label;
    m->tp = (double)a->tp;
    m->fp = (double)(a->np - a->tp);
    m->fn = (double)(a->nr - a->tp);
    m->tn = (double)(nv - a->np - a->nr + a->tp);
    m->n_pred = (double)a->np;
    m->n_ref = (double)a->nr;
    double denom = m->tp + m->fp + m->fn;
    m->dice = denom > 0 ? 2 * m->tp / (2 * m->tp + m->fp + m->fn) : NAN;
    m->iou = denom > 0 ? m->tp / denom : NAN;
    m->vol_diff_ml = (m->n_pred - m->n_ref) * voxel_ml;
    m->vol_diff_rel = a->nr > 0 ? (m->n_pred - m->n_ref) / m->n_ref : NAN;
    m->hd95 = m->assd = m->nsd = NAN;
}

static int metrics_keys(mp_class_metrics_t *out, const uint16_t *kp, const uint16_t *kr, const int64_t dim[3],
                        const double spacing[3], double voxel_ml, const int64_t *labels, int n_labels,
                        const mp_metrics_opts_t *opts) {
    mp_metrics_opts_t defaults;
    if (!opts) {
        mp_metrics_opts_init(&defaults);
        opts = &defaults;
    }
    double empty = opts->empty_distance;
    if (!(empty >= 0)) /* negative or NaN: the extent diagonal */
        empty = sqrt(pow((double)dim[0] * spacing[0], 2) + pow((double)dim[1] * spacing[1], 2) +
                     pow((double)dim[2] * spacing[2], 2));
    class_acc_t *acc = malloc(sizeof *acc * ((size_t)n_labels + 1));
    if (!acc) return mp_error_set(MP_ERR_NOMEM, "metrics: out of memory");
    int rc = count_classes(acc, kp, kr, dim, n_labels + 1, opts->pool);
    int64_t nv = dim[0] * dim[1] * dim[2];
    workspace_t ws = {0};
    for (int k = 0; k < n_labels && !rc; k++) {
        const class_acc_t *a = &acc[k + 1];
        mp_class_metrics_t *m = &out[k];
        overlap(m, a, labels[k], nv, voxel_ml);
        if (!opts->surface || (a->np == 0 && a->nr == 0)) continue;
        if (a->np == 0 || a->nr == 0) {
            m->hd95 = m->assd = empty;
            m->nsd = 0;
            continue;
        }
        rc = class_surface(m, a, (uint16_t)(k + 1), kp, kr, dim, spacing, opts, &ws);
    }
    ws_free(&ws);
    free(acc);
    return rc;
}

int mp_metrics_binary(mp_class_metrics_t *out, const uint8_t *pred, const uint8_t *ref, const int64_t dim[3],
                      const double spacing[3], const mp_metrics_opts_t *opts) {
    int64_t nv;
    int rc = grid_voxels(dim, &nv);
    if (rc) return rc;
    uint16_t *kp = mp_alloc((size_t)nv * sizeof *kp), *kr = mp_alloc((size_t)nv * sizeof *kr);
    if (!kp || !kr) {
        rc = mp_error_set(MP_ERR_NOMEM, "metrics: out of memory");
    } else {
        for (int64_t i = 0; i < nv; i++) {
            kp[i] = pred[i] != 0;
            kr[i] = ref[i] != 0;
        }
        const int64_t one = 1;
        double voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0;
        rc = metrics_keys(out, kp, kr, dim, spacing, voxel_ml, &one, 1, opts);
    }
    mp_free(kp);
    mp_free(kr);
    return rc;
}

static double det3(const double a[4][4]) {
    return a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
           a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
}

int mp_metrics_labels(mp_class_metrics_t *out, const mp_vol_t *pred, const mp_vol_t *ref, const int64_t *labels,
                      int n_labels, const mp_metrics_opts_t *opts) {
    for (int d = 0; d < 4; d++)
        if (pred->dim[d] != ref->dim[d])
            return mp_error_set(MP_ERR_MISMATCH, "prediction is %lldx%lldx%lldx%lld, reference %lldx%lldx%lldx%lld",
                                (long long)pred->dim[0], (long long)pred->dim[1], (long long)pred->dim[2],
                                (long long)pred->dim[3], (long long)ref->dim[0], (long long)ref->dim[1],
                                (long long)ref->dim[2], (long long)ref->dim[3]);
    if (n_labels < 1 || n_labels > MP_LABEL_MAX_CLASSES)
        return mp_error_set(MP_ERR_ARG, "metrics: %d labels requested (1..%d)", n_labels, MP_LABEL_MAX_CLASSES);
    int64_t nv;
    int rc = grid_voxels(ref->dim, &nv);
    if (rc) return rc;
    uint16_t *kp = mp_alloc((size_t)nv * sizeof *kp), *kr = mp_alloc((size_t)nv * sizeof *kr);
    if (!kp || !kr) {
        rc = mp_error_set(MP_ERR_NOMEM, "metrics: out of memory");
        goto done;
    }
    if ((rc = mp_vol_label_index(kp, pred, labels, n_labels))) {
        mp_error_wrap(rc, "prediction: ");
        goto done;
    }
    if ((rc = mp_vol_label_index(kr, ref, labels, n_labels))) {
        mp_error_wrap(rc, "reference: ");
        goto done;
    }
    rc = metrics_keys(out, kp, kr, ref->dim, ref->spacing, fabs(det3(ref->affine)) / 1000.0, labels, n_labels,
                      opts);
done:
    mp_free(kp);
    mp_free(kr);
    return rc;
}
