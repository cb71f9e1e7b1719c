/* Intensity statistics (count, mean, std, min, max, numpy-compatible
 * percentiles) and in-place normalization of float32 volumes: z-score
 * (optionally masked, nnU-Net's use_mask_for_norm) and nnU-Net's CT
 * normalization. Sums are taken over fixed blocks of voxels combined in
 * order, so results do not depend on the thread count. */
#include "vol_ops_internal.h"

#include <math.h>
#include <stdlib.h>

#define BLOCK ((int64_t)1 << 15)

/* ---- percentiles ---- */

static void swap_d(double *a, double *b) {
    double t = *a;
    *a = *b;
    *b = t;
}

static int cmp_double(const void *pa, const void *pb) {
    double a = *(const double *)pa, b = *(const double *)pb;
    return (a > b) - (a < b);
}

/* Puts the k-th smallest of a[lo, hi) at a[k], smaller ones before, larger
 * after. Three-way partition (CT volumes repeat values a lot) around a
 * median-of-three pivot; falls back to a full sort if the ranges stop
 * shrinking, so the worst case stays O(n log n). */
static void select_kth(double *a, int64_t lo, int64_t hi, int64_t k) {
    int budget = 128;
    while (hi - lo > 16) {
        if (budget-- == 0) {
            qsort(a + lo, (size_t)(hi - lo), sizeof *a, cmp_double);
            return;
        }
        int64_t mid = lo + (hi - lo) / 2;
        double x = a[lo], y = a[mid], z = a[hi - 1];
        double pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            if (a[i] < pivot) swap_d(&a[lt++], &a[i++]);
            else if (a[i] > pivot) swap_d(&a[i], &a[--gt]);
            else i++;
        }
        if (k < lt) hi = lt;
        else if (k >= gt) lo = gt;
        else return;
    }
    for (int64_t i = lo + 1; i < hi; i++) {
        double v = a[i];
        int64_t j = i;
        while (j > lo && a[j - 1] > v) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = v;
    }
}

static int cmp_i64(const void *pa, const void *pb) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return (a > b) - (a < b);
}

int mp_percentiles(double *values, int64_t n, const double *q, int nq, double *out) {
    if (n <= 0) return mp_error_set(MP_ERR_ARG, "percentiles: no values");
    if (nq < 0 || nq > 1024) return mp_error_set(MP_ERR_ARG, "percentiles: %d percentiles requested (0..1024)", nq);
    int64_t need[2048];
    int nn = 0;
    for (int i = 0; i < nq; i++) {
        if (!(q[i] >= 0 && q[i] <= 100)) return mp_error_set(MP_ERR_ARG, "percentiles: q = %g is outside [0, 100]", q[i]);
        double vi = (double)(n - 1) * (q[i] / 100.0);
        int64_t k = (int64_t)floor(vi);
        need[nn++] = k >= n - 1 ? n - 1 : k;
        if (k + 1 <= n - 1) need[nn++] = k + 1;
    }
    qsort(need, (size_t)nn, sizeof *need, cmp_i64);
    /* Each selection leaves everything after its index >= it, so the next
     * (larger) index is selected within the remaining tail only. */
    int64_t lo = 0;
    for (int i = 0; i < nn; i++) {
        if (need[i] < lo) continue;
        select_kth(values, lo, n, need[i]);
        lo = need[i] + 1;
    }
    for (int i = 0; i < nq; i++) {
        double vi = (double)(n - 1) * (q[i] / 100.0);
        if (vi >= (double)(n - 1)) {
            out[i] = values[n - 1];
            continue;
        }
        int64_t k = (int64_t)floor(vi);
        double g = vi - (double)k, a = values[k], b = values[k + 1], d = b - a;
        out[i] = g >= 0.5 ? b - d * (1 - g) : a + d * g;
    }
    return MP_OK;
}

/* ---- masks ---- */

static int check_mask(const mp_vol_t *v, const mp_vol_t *mask, const char *what) {
    if (!mask) return MP_OK;
    int rc = mp_volops_check(mask, what);
    if (rc) return rc;
    for (int a = 0; a < 3; a++)
        if (mask->dim[a] != v->dim[a])
            return mp_error_set(MP_ERR_MISMATCH, "%s: mask is %lldx%lldx%lld, the volume %lldx%lldx%lld", what,
                                (long long)mask->dim[0], (long long)mask->dim[1], (long long)mask->dim[2],
                                (long long)v->dim[0], (long long)v->dim[1], (long long)v->dim[2]);
    if (mask->dim[3] != 1 && mask->dim[3] != v->dim[3])
        return mp_error_set(MP_ERR_MISMATCH, "%s: mask has %lld channels, the volume %lld", what,
                            (long long)mask->dim[3], (long long)v->dim[3]);
    return MP_OK;
}

/* First element of channel c's mask (a 1-channel mask serves every channel). */
static int64_t mask_base(const mp_vol_t *mask, int64_t c) {
    return mask && mask->dim[3] > 1 ? c * mp_vol_voxels(mask) : 0;
}

/* Whether voxel i (within a channel) is inside the mask. */
static inline int in_mask(const mp_vol_t *mask, int64_t mbase, int64_t i) {
    return !mask || mp_volops_fetch(mask, mbase + i) != 0;
}

/* ---- statistics ---- */

typedef struct {
    const mp_vol_t *v;
    const mp_vol_t *mask;
    int64_t c;
    double slope, inter;
    int64_t base, mbase, nv; /* channel's first element in v and in mask; voxels per channel */
    double mean;       /* for the second pass */
    double *sum;       /* per block */
    int64_t *count;    /* per block */
    double *lo, *hi;   /* per block */
} stats_job_t;

static inline double real_at(const stats_job_t *j, int64_t i) {
    return mp_volops_fetch(j->v, j->base + i) * j->slope + j->inter;
}

static void stats_pass1(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    stats_job_t *j = ctx;
    int64_t nv = j->nv;
    for (int64_t b = begin; b < end; b++) {
        double s = 0, lo = INFINITY, hi = -INFINITY;
        int64_t n = 0, e = (b + 1) * BLOCK < nv ? (b + 1) * BLOCK : nv;
        for (int64_t i = b * BLOCK; i < e; i++) {
            if (!in_mask(j->mask, j->mbase, i)) continue;
            double x = real_at(j, i);
            if (x != x) continue;
            s += x;
            n++;
            if (x < lo) lo = x;
            if (x > hi) hi = x;
        }
        j->sum[b] = s;
        j->count[b] = n;
        j->lo[b] = lo;
        j->hi[b] = hi;
    }
}

static void stats_pass2(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    stats_job_t *j = ctx;
    int64_t nv = j->nv;
    for (int64_t b = begin; b < end; b++) {
        double s = 0;
        int64_t e = (b + 1) * BLOCK < nv ? (b + 1) * BLOCK : nv;
        for (int64_t i = b * BLOCK; i < e; i++) {
            if (!in_mask(j->mask, j->mbase, i)) continue;
            double x = real_at(j, i);
            if (x != x) continue;
            s += (x - j->mean) * (x - j->mean);
        }
        j->sum[b] = s;
    }
}

/* Count, mean, std (two passes), min, max of one channel. */
static int channel_stats(const mp_vol_t *v, int64_t c, const mp_vol_t *mask, mp_voxel_stats_t *st,
                         mp_pool_t *pool) {
    int64_t nb = (mp_vol_voxels(v) + BLOCK - 1) / BLOCK;
    stats_job_t j = {v, mask, c, 1, 0, c * mp_vol_voxels(v), mask_base(mask, c), mp_vol_voxels(v), 0, NULL, NULL, NULL, NULL};
    if (v->scl_slope != 0) {
        j.slope = v->scl_slope;
        j.inter = v->scl_inter;
    }
    j.sum = malloc((size_t)nb * sizeof *j.sum);
    j.count = malloc((size_t)nb * sizeof *j.count);
    j.lo = malloc((size_t)nb * sizeof *j.lo);
    j.hi = malloc((size_t)nb * sizeof *j.hi);
    int rc = MP_OK;
    if (!j.sum || !j.count || !j.lo || !j.hi) {
        rc = mp_error_set(MP_ERR_NOMEM, "statistics: out of memory");
        goto done;
    }
    mp_pool_parallel_for(pool, nb, stats_pass1, &j);
    double s = 0, lo = INFINITY, hi = -INFINITY;
    int64_t n = 0;
    for (int64_t b = 0; b < nb; b++) {
        s += j.sum[b];
        n += j.count[b];
        if (j.lo[b] < lo) lo = j.lo[b];
        if (j.hi[b] > hi) hi = j.hi[b];
    }
    st->count = n;
    if (n == 0) {
        st->mean = st->std = st->min = st->max = NAN;
        goto done;
    }
    j.mean = s / (double)n;
    mp_pool_parallel_for(pool, nb, stats_pass2, &j);
    double ss = 0;
    for (int64_t b = 0; b < nb; b++) ss += j.sum[b];
    st->mean = j.mean;
    st->std = sqrt(ss / (double)n);
    st->min = lo;
    st->max = hi;
done:
    free(j.sum);
    free(j.count);
    free(j.lo);
    free(j.hi);
    return rc;
}

int mp_vol_intensity_stats(const mp_vol_t *v, int channel, const mp_vol_t *mask, const double *q, int nq,
                           double *qout, mp_voxel_stats_t *st) {
    int rc = mp_volops_check(v, "statistics");
    if (rc || (rc = check_mask(v, mask, "statistics"))) return rc;
    if (channel < 0 || channel >= v->dim[3])
        return mp_error_set(MP_ERR_ARG, "statistics: channel %d of a %lld-channel volume", channel,
                            (long long)v->dim[3]);
    mp_voxel_stats_t s;
    if ((rc = channel_stats(v, channel, mask, &s, NULL))) return rc;
    if (st) *st = s;
    if (nq <= 0) return MP_OK;
    if (s.count == 0) {
        for (int i = 0; i < nq; i++) qout[i] = NAN;
        return MP_OK;
    }
    uint64_t bytes;
    if (mp_mul_u64((uint64_t)s.count, sizeof(double), &bytes) || bytes > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "statistics: %lld values exceed the memory limit", (long long)s.count);
    double *vals = malloc((size_t)bytes);
    if (!vals) return mp_error_set(MP_ERR_NOMEM, "statistics: cannot allocate %lld values", (long long)s.count);
    stats_job_t j = {v,    mask, channel, 1, 0, channel * mp_vol_voxels(v), mask_base(mask, channel), mp_vol_voxels(v),
                     0, NULL, NULL, NULL, NULL};
    if (v->scl_slope != 0) {
        j.slope = v->scl_slope;
        j.inter = v->scl_inter;
    }
    int64_t n = 0, nv = mp_vol_voxels(v);
    for (int64_t i = 0; i < nv && n < s.count; i++) {
        if (!in_mask(mask, j.mbase, i)) continue;
        double x = real_at(&j, i);
        if (x == x) vals[n++] = x;
    }
    rc = mp_percentiles(vals, n, q, nq, qout);
    free(vals);
    return rc;
}

/* ---- normalization ---- */

typedef struct {
    float *x;            /* channel data */
    const mp_vol_t *mask;
    int64_t mbase, n;
    double lo, hi;       /* clip range (CT) */
    int clip;
    double mean, sd;
    int mask_only;
} norm_job_t;

static void norm_body(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const norm_job_t *j = ctx;
    for (int64_t i = begin; i < end; i++) {
        if (j->mask_only && !in_mask(j->mask, j->mbase, i)) continue;
        double x = j->x[i];
        if (j->clip) x = x < j->lo ? j->lo : x > j->hi ? j->hi : x;
        j->x[i] = (float)((x - j->mean) / j->sd);
    }
}

static int check_f32(const mp_vol_t *v, const char *what) {
    int rc = mp_volops_check(v, what);
    if (rc) return rc;
    if (v->dtype != MP_DTYPE_F32)
        return mp_error_set(MP_ERR_ARG, "%s: needs a float32 volume, got %s", what, mp_dtype_name(v->dtype));
    if (v->scl_slope != 1 && v->scl_slope != 0)
        return mp_error_set(MP_ERR_ARG, "%s: volume has scaling (slope %g); convert it with mp_vol_to_f32", what,
                            v->scl_slope);
    if (v->scl_slope == 1 && v->scl_inter != 0)
        return mp_error_set(MP_ERR_ARG, "%s: volume has an intercept %g; convert it with mp_vol_to_f32", what,
                            v->scl_inter);
    return MP_OK;
}

int mp_vol_normalize_zscore(mp_vol_t *v, const mp_vol_t *mask, int mask_only, mp_pool_t *pool) {
    int rc = check_f32(v, "z-score");
    if (rc || (rc = check_mask(v, mask, "z-score"))) return rc;
    int64_t nv = mp_vol_voxels(v);
    for (int64_t c = 0; c < v->dim[3]; c++) {
        mp_voxel_stats_t st;
        if ((rc = channel_stats(v, c, mask, &st, pool))) return rc;
        if (st.count == 0) continue; /* nothing to normalize by: leave the channel */
        norm_job_t j = {(float *)v->data + c * nv, mask, mask_base(mask, c), nv, 0, 0, 0, st.mean, 0, mask && mask_only};
        j.sd = st.std > 1e-8 ? st.std : 1e-8;
        mp_pool_parallel_for(pool, nv, norm_body, &j);
    }
    return MP_OK;
}

int mp_vol_normalize_ct(mp_vol_t *v, double lo, double hi, double mean, double std, mp_pool_t *pool) {
    int rc = check_f32(v, "CT normalization");
    if (rc) return rc;
    if (!(lo <= hi) || !isfinite(mean) || !(std >= 0))
        return mp_error_set(MP_ERR_ARG, "CT normalization: need lo <= hi and std >= 0 (got %g, %g, std %g)", lo,
                            hi, std);
    norm_job_t j = {v->data, NULL, 0, mp_vol_elems(v), lo, hi, 1, mean, 0, 0};
    j.sd = std > 1e-8 ? std : 1e-8;
    mp_pool_parallel_for(pool, j.n, norm_body, &j);
    return MP_OK;
}
