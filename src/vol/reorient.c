/* Reorientation by axis permutation and flips (no interpolation): to the
 * canonical RAS layout as nibabel's as_closest_canonical does, to any
 * orientation code, and back. The voxel axes' world directions are found as
 * nibabel's io_orientation finds them, so oblique affines get the same
 * answer as nibabel. */
#include "vol_ops_internal.h"

#include <math.h>

/* Nearest orthogonal matrix (polar decomposition) by Newton's iteration
 * X <- (X + X^-T) / 2, which converges quadratically for non-singular X. */
static int polar_orthogonal(double x[3][3]) {
    for (int it = 0; it < 100; it++) {
        double m[4][4], inv[4][4];
        mp_mat4_identity(m);
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) m[r][c] = x[r][c];
        if (mp_mat4_inv(inv, m) != MP_OK) return MP_ERR_ARG;
        double diff = 0;
        for (int r = 0; r < 3; r++)
            for (int c = 0; c < 3; c++) {
                double nx = 0.5 * (x[r][c] + inv[c][r]);
                diff += fabs(nx - x[r][c]);
                x[r][c] = nx;
            }
        if (diff < 1e-15) break;
    }
    return MP_OK;
}

int mp_affine_io_orientation(const double affine[4][4], int axis[3], int sign[3]) {
    double r[3][3];
    for (int c = 0; c < 3; c++) {
        double z = sqrt(affine[0][c] * affine[0][c] + affine[1][c] * affine[1][c] + affine[2][c] * affine[2][c]);
        if (!(z > 0) || !isfinite(z)) return mp_error_set(MP_ERR_ARG, "orientation: affine column %d is zero or not finite", c);
        for (int k = 0; k < 3; k++) r[k][c] = affine[k][c] / z;
    }
    if (polar_orthogonal(r) != MP_OK) return mp_error_set(MP_ERR_ARG, "orientation: the affine is singular");
    for (int in = 0; in < 3; in++) {
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (fabs(r[k][in]) > fabs(r[best][in])) best = k;
        if (r[best][in] == 0) return mp_error_set(MP_ERR_ARG, "orientation: the affine is singular");
        axis[in] = best;
        sign[in] = r[best][in] < 0 ? -1 : 1;
        for (int c = 0; c < 3; c++) r[best][c] = 0; /* that world axis is taken */
    }
    return MP_OK;
}

int mp_orientation_parse(const char *code, int axis[3], int sign[3]) {
    static const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    if (!code || strlen(code) != 3) return mp_error_set(MP_ERR_ARG, "orientation code '%s' must have 3 letters", code ? code : "(null)");
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 3; i++) {
        int found = 0;
        for (int w = 0; w < 3 && !found; w++)
            if (code[i] == pos[w] || code[i] == neg[w]) {
                axis[i] = w;
                sign[i] = code[i] == pos[w] ? 1 : -1;
                found = 1;
            }
        if (!found || seen[axis[i]]++)
            return mp_error_set(MP_ERR_ARG, "orientation code '%s' must use each of R/L, A/P, S/I once", code);
    }
    return MP_OK;
}

int mp_reorient_plan(mp_reorient_t *rec, const double affine[4][4], const int64_t dim[3], const char *code) {
    int ax[3], sg[3], tax[3], tsg[3];
    int rc = mp_affine_io_orientation(affine, ax, sg);
    if (rc) return rc;
    if ((rc = mp_orientation_parse(code ? code : "RAS", tax, tsg))) return rc;
    for (int a = 0; a < 3; a++) {
        if (dim[a] < 1) return mp_error_set(MP_ERR_ARG, "reorient: dimension %d is %lld", a, (long long)dim[a]);
        rec->in_dim[a] = dim[a];
        for (int i = 0; i < 3; i++)
            if (ax[i] == tax[a]) {
                rec->perm[a] = i;
                rec->flip[a] = sg[i] != tsg[a];
            }
    }
    return MP_OK;
}

typedef struct {
    const mp_vol_t *in;
    mp_vol_t *out;
    int64_t start;   /* input element of output voxel (0, 0, 0) in channel 0 */
    int64_t step[3]; /* input element step per output axis */
} ro_job_t;

#define RO_ROW(T)                                                                          \
    do {                                                                                   \
        const T *s = (const T *)j->in->data + base;                                        \
        T *d = (T *)j->out->data + r * nx;                                                 \
        for (int64_t x = 0; x < nx; x++) d[x] = s[x * sx];                                 \
    } while (0)

static void ro_body(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    const ro_job_t *j = ctx;
    const int64_t nx = j->out->dim[0], ny = j->out->dim[1], nz = j->out->dim[2];
    const int64_t nvox = mp_vol_voxels(j->in), sx = j->step[0];
    const size_t es = mp_dtype_size(j->in->dtype);
    for (int64_t r = begin; r < end; r++) {
        int64_t y = r % ny, z = (r / ny) % nz, c = r / (ny * nz);
        int64_t base = c * nvox + j->start + y * j->step[1] + z * j->step[2];
        switch (es) {
        case 1: RO_ROW(uint8_t); break;
        case 2: RO_ROW(uint16_t); break;
        case 4: RO_ROW(uint32_t); break;
        default: RO_ROW(uint64_t); break;
        }
    }
}

/* Output axis a reads input axis perm[a] (reversed when flip[a]). */
static int permute(mp_vol_t **out, const mp_vol_t *v, const int perm[3], const int flip[3], mp_pool_t *pool) {
    int64_t stride[3] = {1, v->dim[0], v->dim[0] * v->dim[1]};
    int64_t d4[4] = {v->dim[perm[0]], v->dim[perm[1]], v->dim[perm[2]], v->dim[3]};
    ro_job_t j = {v, NULL, 0, {0, 0, 0}};
    double q[4][4];
    memset(q, 0, sizeof q);
    q[3][3] = 1;
    for (int a = 0; a < 3; a++) {
        int i = perm[a];
        int64_t n = v->dim[i];
        j.step[a] = flip[a] ? -stride[i] : stride[i];
        if (flip[a]) j.start += (n - 1) * stride[i];
        q[i][a] = flip[a] ? -1 : 1;
        q[i][3] = flip[a] ? (double)(n - 1) : 0;
    }
    int rc = mp_vol_create(&j.out, d4, v->dtype);
    if (rc) return rc;
    j.out->meta = v->meta;
    j.out->scl_slope = v->scl_slope;
    j.out->scl_inter = v->scl_inter;
    mp_volops_affine_compose(j.out, v, q);
    mp_pool_parallel_for(pool, d4[1] * d4[2] * d4[3], ro_body, &j);
    *out = j.out;
    return MP_OK;
}

static int check_plan(const mp_reorient_t *rec) {
    int used[3] = {0, 0, 0};
    for (int a = 0; a < 3; a++) {
        if (rec->perm[a] < 0 || rec->perm[a] > 2 || used[rec->perm[a]]++)
            return mp_error_set(MP_ERR_ARG, "reorient: invalid axis permutation %d %d %d", rec->perm[0],
                                rec->perm[1], rec->perm[2]);
    }
    return MP_OK;
}

int mp_vol_reorient_apply(mp_vol_t **out, const mp_vol_t *v, const mp_reorient_t *rec) {
    *out = NULL;
    int rc = mp_volops_check(v, "reorient");
    if (rc || (rc = check_plan(rec))) return rc;
    for (int a = 0; a < 3; a++)
        if (v->dim[a] != rec->in_dim[a])
            return mp_error_set(MP_ERR_MISMATCH, "reorient: volume has %lld voxels on axis %d, the plan %lld",
                                (long long)v->dim[a], a, (long long)rec->in_dim[a]);
    return permute(out, v, rec->perm, rec->flip, NULL);
}

int mp_vol_reorient(mp_vol_t **out, const mp_vol_t *v, const char *code, mp_reorient_t *rec) {
    *out = NULL;
    int rc = mp_volops_check(v, "reorient");
    if (rc) return rc;
    mp_reorient_t r;
    if ((rc = mp_reorient_plan(&r, v->affine, v->dim, code))) return rc;
    rc = mp_vol_reorient_apply(out, v, &r);
    if (rc == MP_OK && rec) *rec = r;
    return rc;
}

int mp_vol_reorient_undo(mp_vol_t **out, const mp_vol_t *v, const mp_reorient_t *rec) {
    *out = NULL;
    int rc = mp_volops_check(v, "reorient undo");
    if (rc || (rc = check_plan(rec))) return rc;
    int inv_perm[3], inv_flip[3];
    for (int a = 0; a < 3; a++) {
        if (v->dim[a] != rec->in_dim[rec->perm[a]])
            return mp_error_set(MP_ERR_MISMATCH, "reorient undo: volume has %lld voxels on axis %d, expected %lld",
                                (long long)v->dim[a], a, (long long)rec->in_dim[rec->perm[a]]);
        inv_perm[rec->perm[a]] = a;
        inv_flip[rec->perm[a]] = rec->flip[a];
    }
    return permute(out, v, inv_perm, inv_flip, NULL);
}
