/* Bounding boxes of non-zero voxels, crop to a box, pad/crop to a size, and
 * their inverses. Everything reduces to one primitive: place the input at an
 * integer offset inside a new grid, filling what the input does not cover. */
#include "vol_ops_internal.h"

#include <math.h>

/* True when the element at p (size bytes) is not all-zero bits; for floats
 * -0.0 also counts as zero. */
static int elem_nonzero(const uint8_t *p, mp_dtype_t t) {
    if (t == MP_DTYPE_F32) {
        float f;
        memcpy(&f, p, 4);
        return f != 0.0f;
    }
    if (t == MP_DTYPE_F64) {
        double d;
        memcpy(&d, p, 8);
        return d != 0.0;
    }
    size_t n = mp_dtype_size(t);
    for (size_t i = 0; i < n; i++)
        if (p[i]) return 1;
    return 0;
}

/* Non-zero voxels (any channel) counted once each. */
static int64_t count_nonzero_voxels(const mp_vol_t *v) {
    const size_t es = mp_dtype_size(v->dtype);
    const uint8_t *d = v->data;
    int64_t nv = mp_vol_voxels(v), n = 0;
    for (int64_t i = 0; i < nv; i++)
        for (int64_t c = 0; c < v->dim[3]; c++)
            if (elem_nonzero(d + (size_t)(c * nv + i) * es, v->dtype)) {
                n++;
                break;
            }
    return n;
}

int mp_vol_bbox_nonzero(const mp_vol_t *v, double margin_mm, mp_box_t *box, int64_t *count) {
    int rc = mp_volops_check(v, "bounding box");
    if (rc) return rc;
    if (!(margin_mm >= 0)) return mp_error_set(MP_ERR_ARG, "bounding box: margin %g mm must be >= 0", margin_mm);
    const int64_t nx = v->dim[0], ny = v->dim[1], nz = v->dim[2], nc = v->dim[3];
    const size_t es = mp_dtype_size(v->dtype);
    int64_t lo[3] = {nx, ny, nz}, hi[3] = {-1, -1, -1};
    const uint8_t *d = v->data;
    /* Per row, search from both ends: the middle of a row never matters. */
    for (int64_t c = 0; c < nc; c++)
        for (int64_t z = 0; z < nz; z++)
            for (int64_t y = 0; y < ny; y++) {
                const uint8_t *row = d + (size_t)(((c * nz + z) * ny + y) * nx) * es;
                int64_t first = 0, last = nx - 1;
                while (first < nx && !elem_nonzero(row + (size_t)first * es, v->dtype)) first++;
                if (first == nx) continue;
                while (!elem_nonzero(row + (size_t)last * es, v->dtype)) last--;
                if (first < lo[0]) lo[0] = first;
                if (last > hi[0]) hi[0] = last;
                if (y < lo[1]) lo[1] = y;
                if (y > hi[1]) hi[1] = y;
                if (z < lo[2]) lo[2] = z;
                if (z > hi[2]) hi[2] = z;
            }
    int empty = hi[0] < 0;
    if (count) *count = empty ? 0 : count_nonzero_voxels(v);
    if (empty) {
        memset(box, 0, sizeof *box);
        return MP_OK;
    }
    for (int a = 0; a < 3; a++) {
        double sp = v->spacing[a] > 0 ? v->spacing[a] : 1;
        double m = ceil(margin_mm / sp - 1e-9);
        int64_t mv = m > (double)v->dim[a] ? v->dim[a] : (int64_t)m;
        box->lo[a] = lo[a] - mv < 0 ? 0 : lo[a] - mv;
        box->hi[a] = hi[a] + 1 + mv > v->dim[a] ? v->dim[a] : hi[a] + 1 + mv;
    }
    return MP_OK;
}

/* New volume of out_dim (channels of v) holding v at `offset` (output index =
 * input index + offset), `fill` elsewhere; the affine keeps world positions. */
static int place(mp_vol_t **out, const mp_vol_t *v, const int64_t out_dim[3], const int64_t offset[3],
                 double fill) {
    *out = NULL;
    int64_t dim[4] = {out_dim[0], out_dim[1], out_dim[2], v->dim[3]};
    mp_vol_t *o;
    int rc = mp_vol_create(&o, dim, v->dtype);
    if (rc) return rc;
    o->meta = v->meta;
    o->scl_slope = v->scl_slope;
    o->scl_inter = v->scl_inter;
    double shift[4][4];
    mp_mat4_identity(shift);
    for (int a = 0; a < 3; a++) shift[a][3] = -(double)offset[a];
    mp_volops_affine_compose(o, v, shift);

    const size_t es = mp_dtype_size(v->dtype);
    uint8_t elem[8];
    mp_volops_encode(v->dtype, fill, elem);
    mp_volops_fill(o->data, mp_vol_elems(o), es, elem);

    /* Overlap in output coordinates, per axis. */
    int64_t b[3], e[3];
    for (int a = 0; a < 3; a++) {
        b[a] = offset[a] > 0 ? offset[a] : 0;
        e[a] = v->dim[a] + offset[a] < out_dim[a] ? v->dim[a] + offset[a] : out_dim[a];
        if (e[a] <= b[a]) {
            *out = o;
            return MP_OK;
        }
    }
    const uint8_t *src = v->data;
    uint8_t *dst = o->data;
    size_t row = (size_t)(e[0] - b[0]) * es;
    for (int64_t c = 0; c < v->dim[3]; c++)
        for (int64_t z = b[2]; z < e[2]; z++)
            for (int64_t y = b[1]; y < e[1]; y++) {
                int64_t si = ((c * v->dim[2] + (z - offset[2])) * v->dim[1] + (y - offset[1])) * v->dim[0] +
                             (b[0] - offset[0]);
                int64_t di = ((c * out_dim[2] + z) * out_dim[1] + y) * out_dim[0] + b[0];
                memcpy(dst + (size_t)di * es, src + (size_t)si * es, row);
            }
    *out = o;
    return MP_OK;
}

static int check_box(const mp_box_t *box, const int64_t dim[3], const char *what) {
    for (int a = 0; a < 3; a++)
        if (box->lo[a] < 0 || box->hi[a] > dim[a] || box->lo[a] >= box->hi[a])
            return mp_error_set(MP_ERR_ARG, "%s: box [%lld, %lld) on axis %d is empty or outside 0..%lld", what,
                                (long long)box->lo[a], (long long)box->hi[a], a, (long long)dim[a]);
    return MP_OK;
}

int mp_vol_crop(mp_vol_t **out, const mp_vol_t *v, const mp_box_t *box) {
    *out = NULL;
    int rc = mp_volops_check(v, "crop");
    if (rc) return rc;
    if ((rc = check_box(box, v->dim, "crop"))) return rc;
    int64_t dim[3], off[3];
    for (int a = 0; a < 3; a++) {
        dim[a] = box->hi[a] - box->lo[a];
        off[a] = -box->lo[a];
    }
    return place(out, v, dim, off, 0);
}

int mp_vol_uncrop(mp_vol_t **out, const mp_vol_t *v, const mp_box_t *box, const int64_t orig_dim[3],
                  double fill) {
    *out = NULL;
    int rc = mp_volops_check(v, "uncrop");
    if (rc) return rc;
    if ((rc = check_box(box, orig_dim, "uncrop"))) return rc;
    for (int a = 0; a < 3; a++)
        if (v->dim[a] != box->hi[a] - box->lo[a])
            return mp_error_set(MP_ERR_MISMATCH, "uncrop: volume has %lld voxels on axis %d, the box %lld", 
                                (long long)v->dim[a], a, (long long)(box->hi[a] - box->lo[a]));
    return place(out, v, orig_dim, box->lo, fill);
}

int mp_vol_pad_crop(mp_vol_t **out, const mp_vol_t *v, const int64_t target[3], const int64_t offset[3],
                    double pad_value, mp_padcrop_t *rec) {
    *out = NULL;
    int rc = mp_volops_check(v, "pad/crop");
    if (rc) return rc;
    mp_padcrop_t r;
    for (int a = 0; a < 3; a++) {
        if (target[a] < 1)
            return mp_error_set(MP_ERR_ARG, "pad/crop: target size %lld on axis %d must be >= 1",
                                (long long)target[a], a);
        r.in_dim[a] = v->dim[a];
        r.out_dim[a] = target[a];
        /* C division truncates toward zero: the odd voxel goes to the high end
         * both when padding and when cropping. */
        r.offset[a] = offset ? offset[a] : (target[a] - v->dim[a]) / 2;
        if (r.offset[a] <= -v->dim[a] || r.offset[a] >= target[a])
            return mp_error_set(MP_ERR_ARG, "pad/crop: offset %lld on axis %d leaves no input voxel",
                                (long long)r.offset[a], a);
    }
    rc = place(out, v, r.out_dim, r.offset, pad_value);
    if (rc == MP_OK && rec) *rec = r;
    return rc;
}

int mp_vol_pad_crop_undo(mp_vol_t **out, const mp_vol_t *v, const mp_padcrop_t *rec, double fill) {
    *out = NULL;
    int rc = mp_volops_check(v, "pad/crop undo");
    if (rc) return rc;
    int64_t off[3];
    for (int a = 0; a < 3; a++) {
        if (v->dim[a] != rec->out_dim[a])
            return mp_error_set(MP_ERR_MISMATCH, "pad/crop undo: volume has %lld voxels on axis %d, expected %lld",
                                (long long)v->dim[a], a, (long long)rec->out_dim[a]);
        if (rec->in_dim[a] < 1 || rec->offset[a] <= -rec->in_dim[a] || rec->offset[a] >= rec->out_dim[a])
            return mp_error_set(MP_ERR_ARG, "pad/crop undo: original size %lld, offset %lld on axis %d are invalid",
                                (long long)rec->in_dim[a], (long long)rec->offset[a], a);
        off[a] = -rec->offset[a];
    }
    return place(out, v, rec->in_dim, off, fill);
}
