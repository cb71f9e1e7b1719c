/* The volume type: allocation, element access, data-type conversion,
 * statistics, orientation codes and 4x4 matrix helpers. */
#include "medpipe/vol.h"
#include "medpipe/vol_ops.h"
#include "vol_ops_internal.h"
#include "medpipe/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name, *alias;
    size_t size;
    double lo, hi;
} dtype_info[MP_DTYPE_COUNT] = {
    [MP_DTYPE_U8] = {"u8", "uint8", 1, 0, 255},
    [MP_DTYPE_I8] = {"i8", "int8", 1, -128, 127},
    [MP_DTYPE_U16] = {"u16", "uint16", 2, 0, 65535},
    [MP_DTYPE_I16] = {"i16", "int16", 2, -32768, 32767},
    [MP_DTYPE_U32] = {"u32", "uint32", 4, 0, 4294967295.0},
    [MP_DTYPE_I32] = {"i32", "int32", 4, -2147483648.0, 2147483647.0},
    [MP_DTYPE_U64] = {"u64", "uint64", 8, 0, 18446744073709551615.0},
    [MP_DTYPE_I64] = {"i64", "int64", 8, -9223372036854775808.0, 9223372036854775807.0},
    [MP_DTYPE_F32] = {"f32", "float32", 4, -3.4028234663852886e38, 3.4028234663852886e38},
    [MP_DTYPE_F64] = {"f64", "float64", 8, -1.7976931348623157e308, 1.7976931348623157e308},
};

static int dtype_ok(mp_dtype_t t) { return (unsigned)t < MP_DTYPE_COUNT; }

size_t mp_dtype_size(mp_dtype_t t) { return dtype_ok(t) ? dtype_info[t].size : 0; }
const char *mp_dtype_name(mp_dtype_t t) { return dtype_ok(t) ? dtype_info[t].name : "?"; }
int mp_dtype_is_float(mp_dtype_t t) { return t == MP_DTYPE_F32 || t == MP_DTYPE_F64; }
double mp_dtype_min(mp_dtype_t t) { return dtype_ok(t) ? dtype_info[t].lo : 0; }
double mp_dtype_max(mp_dtype_t t) { return dtype_ok(t) ? dtype_info[t].hi : 0; }

int mp_dtype_parse(const char *name, mp_dtype_t *t) {
    for (int i = 0; i < MP_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0 || strcmp(name, dtype_info[i].alias) == 0) {
            *t = (mp_dtype_t)i;
            return MP_OK;
        }
    }
    if (strcmp(name, "float") == 0) { *t = MP_DTYPE_F32; return MP_OK; }
    if (strcmp(name, "double") == 0) { *t = MP_DTYPE_F64; return MP_OK; }
    return mp_error_set(MP_ERR_ARG, "unknown data type '%s' (use u8 i8 u16 i16 u32 i32 u64 i64 f32 f64)", name);
}

void mp_vol_meta_init(mp_vol_meta_t *m) {
    memset(m, 0, sizeof *m);
    m->qform_code = 1;
    m->sform_code = 1;
    m->xyzt_units = 2 | 8; /* mm, seconds */
}

void mp_mat4_identity(double m[4][4]) {
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) m[r][c] = r == c;
}

void mp_mat4_mul(double out[4][4], const double a[4][4], const double b[4][4]) {
    double t[4][4];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            double s = 0;
            for (int k = 0; k < 4; k++) s += a[r][k] * b[k][c];
            t[r][c] = s;
        }
    memcpy(out, t, sizeof t);
}

int mp_mat4_inv(double out[4][4], const double m[4][4]) {
    /* Gauss-Jordan with partial pivoting on an augmented copy. */
    double a[4][8];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 8; c++) a[r][c] = c < 4 ? m[r][c] : (c - 4 == r);
    for (int c = 0; c < 4; c++) {
        int piv = c;
        for (int r = c + 1; r < 4; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c])) piv = r;
        if (fabs(a[piv][c]) < 1e-300) return mp_error_set(MP_ERR_ARG, "singular 4x4 matrix");
        if (piv != c)
            for (int k = 0; k < 8; k++) {
                double t = a[c][k];
                a[c][k] = a[piv][k];
                a[piv][k] = t;
            }
        double d = a[c][c];
        for (int k = 0; k < 8; k++) a[c][k] /= d;
        for (int r = 0; r < 4; r++) {
            if (r == c) continue;
            double f = a[r][c];
            for (int k = 0; k < 8; k++) a[r][k] -= f * a[c][k];
        }
    }
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) out[r][c] = a[r][c + 4];
    return MP_OK;
}

void mp_vol_set_affine(mp_vol_t *v, const double affine[4][4]) {
    memcpy(v->affine, affine, sizeof v->affine);
    for (int c = 0; c < 3; c++)
        v->spacing[c] = sqrt(affine[0][c] * affine[0][c] + affine[1][c] * affine[1][c] +
                             affine[2][c] * affine[2][c]);
}

void mp_vol_set_spacing(mp_vol_t *v, const double spacing[3], const double origin[3]) {
    double a[4][4];
    mp_mat4_identity(a);
    for (int i = 0; i < 3; i++) {
        a[i][i] = spacing[i];
        a[i][3] = origin ? origin[i] : 0;
    }
    mp_vol_set_affine(v, a);
}

int64_t mp_vol_voxels(const mp_vol_t *v) { return v->dim[0] * v->dim[1] * v->dim[2]; }
int64_t mp_vol_elems(const mp_vol_t *v) { return mp_vol_voxels(v) * v->dim[3]; }
size_t mp_vol_bytes(const mp_vol_t *v) { return (size_t)mp_vol_elems(v) * mp_dtype_size(v->dtype); }

static int check_dims(const int64_t dim[4], mp_dtype_t dtype, int64_t d[4], uint64_t *bytes) {
    if (!dtype_ok(dtype)) return mp_error_set(MP_ERR_ARG, "invalid data type %d", (int)dtype);
    uint64_t n = mp_dtype_size(dtype);
    for (int i = 0; i < 4; i++) {
        d[i] = dim[i];
        if (i == 3 && d[i] < 1) d[i] = 1;
        if (d[i] < 1) return mp_error_set(MP_ERR_ARG, "volume dimension %d is %lld (must be >= 1)", i, (long long)d[i]);
        if (mp_mul_u64(n, (uint64_t)d[i], &n))
            return mp_error_set(MP_ERR_LIMIT, "volume size %lldx%lldx%lldx%lld overflows", (long long)dim[0],
                                (long long)dim[1], (long long)dim[2], (long long)dim[3]);
    }
    if (n > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "volume of %llu bytes exceeds the memory limit of %llu bytes",
                            (unsigned long long)n, (unsigned long long)mp_mem_limit());
    *bytes = n;
    return MP_OK;
}

static mp_vol_t *vol_header(const int64_t d[4], mp_dtype_t dtype) {
    mp_vol_t *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    memcpy(v->dim, d, sizeof v->dim);
    v->dtype = dtype;
    v->scl_slope = 1;
    v->scl_inter = 0;
    mp_vol_meta_init(&v->meta);
    double one[3] = {1, 1, 1};
    mp_vol_set_spacing(v, one, NULL);
    return v;
}

int mp_vol_create(mp_vol_t **out, const int64_t dim[4], mp_dtype_t dtype) {
    *out = NULL;
    int64_t d[4];
    uint64_t bytes;
    int rc = check_dims(dim, dtype, d, &bytes);
    if (rc) return rc;
    mp_vol_t *v = vol_header(d, dtype);
    if (!v) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    v->data = mp_zalloc((size_t)bytes);
    if (!v->data) {
        free(v);
        return mp_error_set(MP_ERR_NOMEM, "cannot allocate a volume of %llu bytes", (unsigned long long)bytes);
    }
    v->owns_data = 1;
    *out = v;
    return MP_OK;
}

int mp_vol_create_like(mp_vol_t **out, const mp_vol_t *like, mp_dtype_t dtype) {
    int rc = mp_vol_create(out, like->dim, dtype);
    if (rc) return rc;
    mp_vol_t *v = *out;
    memcpy(v->affine, like->affine, sizeof v->affine);
    memcpy(v->spacing, like->spacing, sizeof v->spacing);
    v->meta = like->meta;
    return MP_OK;
}

int mp_vol_create_view(mp_vol_t **out, const int64_t dim[4], mp_dtype_t dtype, void *data) {
    *out = NULL;
    int64_t d[4];
    uint64_t bytes;
    int rc = check_dims(dim, dtype, d, &bytes);
    if (rc) return rc;
    mp_vol_t *v = vol_header(d, dtype);
    if (!v) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    v->data = data;
    v->owns_data = 0;
    *out = v;
    return MP_OK;
}

void mp_vol_free(mp_vol_t *v) {
    if (!v) return;
    if (v->owns_data) mp_free(v->data);
    free(v);
}

int mp_vol_clone(mp_vol_t **out, const mp_vol_t *src) {
    int rc = mp_vol_create_like(out, src, src->dtype);
    if (rc) return rc;
    (*out)->scl_slope = src->scl_slope;
    (*out)->scl_inter = src->scl_inter;
    memcpy((*out)->data, src->data, mp_vol_bytes(src));
    return MP_OK;
}

double mp_vol_get(const mp_vol_t *v, int64_t i) { return mp_volops_fetch(v, i); }

/* Round half away from zero and clamp to the type's range; NaN becomes 0. */
static double to_int_range(double x, mp_dtype_t t, int64_t *clamped) {
    if (x != x) {
        if (clamped) (*clamped)++;
        return 0;
    }
    double r = x < 0 ? ceil(x - 0.5) : floor(x + 0.5);
    double lo = dtype_info[t].lo, hi = dtype_info[t].hi;
    if (r < lo || r > hi) {
        if (clamped) (*clamped)++;
        return r < lo ? lo : hi;
    }
    return r;
}

static void set_value(mp_vol_t *v, int64_t i, double x, int64_t *clamped) {
    void *d = v->data;
    if (!mp_dtype_is_float(v->dtype)) x = to_int_range(x, v->dtype, clamped);
    switch (v->dtype) {
    case MP_DTYPE_U8: ((uint8_t *)d)[i] = (uint8_t)x; break;
    case MP_DTYPE_I8: ((int8_t *)d)[i] = (int8_t)x; break;
    case MP_DTYPE_U16: ((uint16_t *)d)[i] = (uint16_t)x; break;
    case MP_DTYPE_I16: ((int16_t *)d)[i] = (int16_t)x; break;
    case MP_DTYPE_U32: ((uint32_t *)d)[i] = (uint32_t)x; break;
    case MP_DTYPE_I32: ((int32_t *)d)[i] = (int32_t)x; break;
    /* 2^64-1 and 2^63-1 round up as doubles; keep the conversion defined. */
    case MP_DTYPE_U64: ((uint64_t *)d)[i] = x >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)x; break;
    case MP_DTYPE_I64: ((int64_t *)d)[i] = x >= 9223372036854775807.0 ? INT64_MAX : (int64_t)x; break;
    case MP_DTYPE_F32: ((float *)d)[i] = (float)x; break;
    case MP_DTYPE_F64: ((double *)d)[i] = x; break;
    default: break;
    }
}

void mp_vol_set(mp_vol_t *v, int64_t i, double value) { set_value(v, i, value, NULL); }

int mp_vol_convert(mp_vol_t **out, const mp_vol_t *src, mp_dtype_t dtype, int apply_scaling, int64_t *clamped) {
    int rc = mp_vol_create_like(out, src, dtype);
    if (rc) return rc;
    mp_vol_t *v = *out;
    int64_t n = mp_vol_elems(src), nclamp = 0;
    /* 64-bit integers do not fit a double exactly: copy them directly. */
    int identity = !apply_scaling || (src->scl_slope == 1 && src->scl_inter == 0) || src->scl_slope == 0;
    if (src->dtype == dtype && identity) {
        memcpy(v->data, src->data, mp_vol_bytes(src));
    } else {
        double slope = src->scl_slope, inter = src->scl_inter;
        if (slope == 0) slope = 1, inter = 0; /* NIfTI: slope 0 means no scaling */
        for (int64_t i = 0; i < n; i++) {
            double x = mp_vol_get(src, i);
            if (apply_scaling) x = x * slope + inter;
            set_value(v, i, x, &nclamp);
        }
    }
    if (apply_scaling) {
        v->scl_slope = 1;
        v->scl_inter = 0;
    } else {
        v->scl_slope = src->scl_slope;
        v->scl_inter = src->scl_inter;
    }
    if (clamped) *clamped = nclamp;
    return MP_OK;
}

int mp_vol_to_f32(mp_vol_t **out, const mp_vol_t *src) { return mp_vol_convert(out, src, MP_DTYPE_F32, 1, NULL); }

int mp_vol_stats(const mp_vol_t *v, double *min, double *max, double *mean) {
    int64_t n = mp_vol_elems(v), count = 0;
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    double slope = v->scl_slope == 0 ? 1 : v->scl_slope, inter = v->scl_slope == 0 ? 0 : v->scl_inter;
    for (int64_t i = 0; i < n; i++) {
        double x = mp_vol_get(v, i) * slope + inter;
        if (x != x) continue;
        if (x < lo) lo = x;
        if (x > hi) hi = x;
        sum += x;
        count++;
    }
    if (min) *min = count ? lo : NAN;
    if (max) *max = count ? hi : NAN;
    if (mean) *mean = count ? sum / (double)count : NAN;
    return MP_OK;
}

void mp_vol_orientation(const double affine[4][4], char out[4]) {
    static const char pos[3] = {'R', 'A', 'S'}, neg[3] = {'L', 'P', 'I'};
    int axis[3], sign[3];
    /* One definition of orientation for the whole library: nibabel's
     * io_orientation (vol_ops), so codes agree with reorientation. */
    if (mp_affine_io_orientation(affine, axis, sign) != MP_OK) {
        memcpy(out, "???", 4);
        return;
    }
    for (int c = 0; c < 3; c++) out[c] = sign[c] > 0 ? pos[axis[c]] : neg[axis[c]];
    out[3] = '\0';
}
