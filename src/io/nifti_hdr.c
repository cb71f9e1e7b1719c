/* NIfTI-1 / NIfTI-2 / Analyze 7.5 headers: decoding either byte order,
 * validation, data layout, geometry (sform, qform quaternion, pixdim-only and
 * SPM Analyze conventions, matching nibabel), scaling, and encoding for the
 * writer. Field offsets follow nifti1.h / nifti2.h of the NIfTI standard. */
#include "io/nifti_priv.h"
#include "medpipe/core.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

int mp_nifti_host_big_endian(void) {
    const uint16_t x = 1;
    uint8_t b;
    memcpy(&b, &x, 1);
    return b == 0;
}

/* ---- byte-order aware field access ---- */
typedef struct {
    const uint8_t *b;
    int sw;
} rd_t;

static uint16_t r16(rd_t r, size_t o) {
    uint16_t v;
    memcpy(&v, r.b + o, 2);
    return r.sw ? __builtin_bswap16(v) : v;
}
static uint32_t r32(rd_t r, size_t o) {
    uint32_t v;
    memcpy(&v, r.b + o, 4);
    return r.sw ? __builtin_bswap32(v) : v;
}
static uint64_t r64(rd_t r, size_t o) {
    uint64_t v;
    memcpy(&v, r.b + o, 8);
    return r.sw ? __builtin_bswap64(v) : v;
}
static int16_t ri16(rd_t r, size_t o) { return (int16_t)r16(r, o); }
static int32_t ri32(rd_t r, size_t o) { return (int32_t)r32(r, o); }
static int64_t ri64(rd_t r, size_t o) { return (int64_t)r64(r, o); }
static double rf32(rd_t r, size_t o) {
    uint32_t u = r32(r, o);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double rf64(rd_t r, size_t o) {
    uint64_t u = r64(r, o);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static void rstr(char *dst, const uint8_t *src, size_t n) {
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- datatypes ---- */
typedef struct {
    int code;
    const char *name;
    int dtype;   /* mp_dtype_t, or -1 when unsupported */
    int ncomp;
    int elem;
} dt_info_t;

static const dt_info_t dt_table[] = {
    {1, "binary", -1, 1, 0},           {2, "uint8", MP_DTYPE_U8, 1, 1},
    {4, "int16", MP_DTYPE_I16, 1, 2},  {8, "int32", MP_DTYPE_I32, 1, 4},
    {16, "float32", MP_DTYPE_F32, 1, 4}, {32, "complex64", -1, 1, 8},
    {64, "float64", MP_DTYPE_F64, 1, 8}, {128, "RGB24", MP_DTYPE_U8, 3, 1},
    {256, "int8", MP_DTYPE_I8, 1, 1},  {512, "uint16", MP_DTYPE_U16, 1, 2},
    {768, "uint32", MP_DTYPE_U32, 1, 4}, {1024, "int64", MP_DTYPE_I64, 1, 8},
    {1280, "uint64", MP_DTYPE_U64, 1, 8}, {1536, "float128", -1, 1, 16},
    {1792, "complex128", -1, 1, 16},   {2048, "complex256", -1, 1, 32},
    {2304, "RGBA32", MP_DTYPE_U8, 4, 1},
};

static const dt_info_t *dt_find(int code) {
    for (size_t i = 0; i < sizeof dt_table / sizeof dt_table[0]; i++)
        if (dt_table[i].code == code) return &dt_table[i];
    return NULL;
}

const char *mp_nifti_datatype_name(int code) {
    const dt_info_t *d = dt_find(code);
    return d ? d->name : "unknown";
}

int mp_nifti_datatype_code(mp_dtype_t t) {
    for (size_t i = 0; i < sizeof dt_table / sizeof dt_table[0]; i++)
        if (dt_table[i].dtype == (int)t && dt_table[i].ncomp == 1) return dt_table[i].code;
    return 0;
}

const char *mp_nifti_xform_name(int code) {
    static const char *names[] = {"unknown", "scanner", "aligned", "talairach", "mni", "template"};
    return code >= 0 && code <= 5 ? names[code] : "invalid";
}

/* ---- parsing ---- */
static void parse_v1(mp_nifti_header_t *h, rd_t r) {
    h->dim_info = r.b[39];
    for (int i = 0; i < 8; i++) h->dim[i] = ri16(r, 40 + 2 * (size_t)i);
    for (int i = 0; i < 3; i++) h->intent_p[i] = rf32(r, 56 + 4 * (size_t)i);
    h->intent_code = ri16(r, 68);
    h->datatype = ri16(r, 70);
    h->bitpix = ri16(r, 72);
    h->slice_start = ri16(r, 74);
    for (int i = 0; i < 8; i++) h->pixdim[i] = rf32(r, 76 + 4 * (size_t)i);
    h->vox_offset = rf32(r, 108);
    h->scl_slope = rf32(r, 112);
    h->scl_inter = rf32(r, 116);
    h->slice_end = ri16(r, 120);
    h->slice_code = r.b[122];
    h->xyzt_units = r.b[123];
    h->cal_max = rf32(r, 124);
    h->cal_min = rf32(r, 128);
    h->slice_duration = rf32(r, 132);
    h->toffset = rf32(r, 136);
    h->glmax = ri32(r, 140);
    h->glmin = ri32(r, 144);
    rstr(h->descrip, r.b + 148, 80);
    rstr(h->aux_file, r.b + 228, 24);
    h->qform_code = ri16(r, 252);
    h->sform_code = ri16(r, 254);
    for (int i = 0; i < 3; i++) {
        h->quatern[i] = rf32(r, 256 + 4 * (size_t)i);
        h->qoffset[i] = rf32(r, 268 + 4 * (size_t)i);
        h->origin[i] = ri16(r, 253 + 2 * (size_t)i); /* Analyze originator (unaligned) */
    }
    for (int row = 0; row < 3; row++)
        for (int c = 0; c < 4; c++) h->srow[row][c] = rf32(r, 280 + 16 * (size_t)row + 4 * (size_t)c);
    rstr(h->intent_name, r.b + 328, 16);
}

static void parse_v2(mp_nifti_header_t *h, rd_t r) {
    h->datatype = ri16(r, 12);
    h->bitpix = ri16(r, 14);
    for (int i = 0; i < 8; i++) h->dim[i] = ri64(r, 16 + 8 * (size_t)i);
    for (int i = 0; i < 3; i++) h->intent_p[i] = rf64(r, 80 + 8 * (size_t)i);
    for (int i = 0; i < 8; i++) h->pixdim[i] = rf64(r, 104 + 8 * (size_t)i);
    int64_t off = ri64(r, 168);
    h->vox_offset = (double)off;
    h->scl_slope = rf64(r, 176);
    h->scl_inter = rf64(r, 184);
    h->cal_max = rf64(r, 192);
    h->cal_min = rf64(r, 200);
    h->slice_duration = rf64(r, 208);
    h->toffset = rf64(r, 216);
    h->slice_start = ri64(r, 224);
    h->slice_end = ri64(r, 232);
    rstr(h->descrip, r.b + 240, 80);
    rstr(h->aux_file, r.b + 320, 24);
    h->qform_code = ri32(r, 344);
    h->sform_code = ri32(r, 348);
    for (int i = 0; i < 3; i++) {
        h->quatern[i] = rf64(r, 352 + 8 * (size_t)i);
        h->qoffset[i] = rf64(r, 376 + 8 * (size_t)i);
    }
    for (int row = 0; row < 3; row++)
        for (int c = 0; c < 4; c++) h->srow[row][c] = rf64(r, 400 + 32 * (size_t)row + 8 * (size_t)c);
    h->slice_code = ri32(r, 496);
    h->xyzt_units = ri32(r, 500);
    h->intent_code = ri32(r, 504);
    rstr(h->intent_name, r.b + 508, 16);
    h->dim_info = r.b[524];
}

/* Finds the version and byte order from sizeof_hdr (348 or 540, either order). */
static int detect(mp_nifti_header_t *h, const char *name, const uint8_t *buf, size_t len) {
    if (len < 4) return mp_error_set(MP_ERR_FORMAT, "%s: file of %zu bytes is too short for a NIfTI header", name, len);
    uint32_t le = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 24;
    uint32_t be = __builtin_bswap32(le);
    if (le == 348 || le == 540) h->big_endian = 0;
    else if (be == 348 || be == 540) h->big_endian = 1;
    else
        return mp_error_set(MP_ERR_FORMAT,
                            "%s: not a NIfTI or Analyze header: sizeof_hdr is %d (expected 348 or 540 in either byte "
                            "order)",
                            name, (int32_t)le);
    h->sizeof_hdr = (int)(h->big_endian ? be : le);
    h->swapped = h->big_endian != mp_nifti_host_big_endian();
    if (len < (size_t)h->sizeof_hdr)
        return mp_error_set(MP_ERR_FORMAT, "%s: truncated header: %zu of %d bytes", name, len, h->sizeof_hdr);
    return MP_OK;
}

static int check_magic(mp_nifti_header_t *h, const char *name, const uint8_t *buf) {
    if (h->sizeof_hdr == MP_NIFTI1_HDR) {
        const uint8_t *m = buf + 344;
        if (memcmp(m, "n+1\0", 4) == 0 || memcmp(m, "ni1\0", 4) == 0) {
            h->version = 1;
            h->single_file = m[1] == '+';
            memcpy(h->magic, m, 4);
        } else if (memcmp(m, "n+2\0", 4) == 0 || memcmp(m, "ni2\0", 4) == 0) {
            return mp_error_set(MP_ERR_FORMAT, "%s: header size mismatch: sizeof_hdr is 348 (NIfTI-1) but the magic "
                                "is NIfTI-2's", name);
        } else {
            h->version = 0; /* Analyze 7.5 */
        }
        return MP_OK;
    }
    const uint8_t *m = buf + 4;
    if (memcmp(m, "n+2\0", 4) != 0 && memcmp(m, "ni2\0", 4) != 0) {
        if (memcmp(buf + 344, "n+1\0", 4) == 0 || memcmp(buf + 344, "ni1\0", 4) == 0)
            return mp_error_set(MP_ERR_FORMAT, "%s: header size mismatch: sizeof_hdr is 540 (NIfTI-2) but the magic "
                                "is NIfTI-1's", name);
        return mp_error_set(MP_ERR_FORMAT, "%s: wrong magic for a NIfTI-2 header (bytes 4..7: %02x %02x %02x %02x)",
                            name, m[0], m[1], m[2], m[3]);
    }
    static const uint8_t eol[4] = {13, 10, 26, 10}, zero[4] = {0, 0, 0, 0};
    if (memcmp(buf + 8, eol, 4) != 0 && memcmp(buf + 8, zero, 4) != 0)
        return mp_error_set(MP_ERR_FORMAT, "%s: NIfTI-2 end-of-line check bytes are damaged (the file went through a "
                            "text-mode transfer?)", name);
    h->version = 2;
    h->single_file = m[1] == '+';
    memcpy(h->magic, m, 4);
    return MP_OK;
}

int mp_nifti_parse_header(mp_nifti_header_t *h, const char *name, const uint8_t *buf, size_t len) {
    memset(h, 0, sizeof *h);
    int rc = detect(h, name, buf, len);
    if (rc) return rc;
    if ((rc = check_magic(h, name, buf))) return rc;
    rd_t r = {buf, h->swapped};
    if (h->sizeof_hdr == MP_NIFTI1_HDR) parse_v1(h, r);
    else parse_v2(h, r);
    size_t flag_at = (size_t)h->sizeof_hdr;
    h->has_extensions = len > flag_at && buf[flag_at] != 0;
    if (h->dim[0] < 1 || h->dim[0] > 7)
        return mp_error_set(MP_ERR_FORMAT, "%s: dim[0] is %lld (must be 1..7)", name, (long long)h->dim[0]);
    for (int i = 1; i <= h->dim[0]; i++)
        if (h->dim[i] < 1)
            return mp_error_set(MP_ERR_FORMAT, "%s: dim[%d] is %lld (must be >= 1)", name, i, (long long)h->dim[i]);
    return MP_OK;
}

/* ---- layout ---- */
int mp_nifti_layout(mp_nifti_layout_t *L, const mp_nifti_header_t *h, const char *name, int single_file) {
    memset(L, 0, sizeof *L);
    const dt_info_t *d = dt_find(h->datatype);
    if (!d) return mp_error_set(MP_ERR_FORMAT, "%s: unknown NIfTI datatype code %d", name, h->datatype);
    if (d->dtype < 0)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: datatype %s (code %d) is not supported", name, d->name,
                            d->code);
    L->dtype = (mp_dtype_t)d->dtype;
    L->ncomp = d->ncomp;
    L->elem = (size_t)d->elem;
    int ndim = (int)h->dim[0];
    for (int i = 0; i < 4; i++) L->dim[i] = i < ndim ? h->dim[i + 1] : 1;
    for (int i = 5; i <= ndim; i++)
        if (h->dim[i] > 1)
            return mp_error_set(MP_ERR_UNSUPPORTED, "%s: dim[%d] is %lld: images with more than 4 dimensions are not "
                                "supported", name, i, (long long)h->dim[i]);
    if (L->ncomp > 1) {
        if (L->dim[3] > 1)
            return mp_error_set(MP_ERR_UNSUPPORTED, "%s: %s data with dim[4] = %lld is not supported", name, d->name,
                                (long long)L->dim[3]);
        L->dim[3] = L->ncomp;
    }
    uint64_t n = L->elem;
    for (int i = 0; i < 4; i++)
        if (mp_mul_u64(n, (uint64_t)L->dim[i], &n))
            return mp_error_set(MP_ERR_LIMIT, "%s: image size %lld x %lld x %lld x %lld overflows", name,
                                (long long)L->dim[0], (long long)L->dim[1], (long long)L->dim[2],
                                (long long)L->dim[3]);
    if (n > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "%s: image data of %llu bytes exceeds the memory limit of %llu bytes", name,
                            (unsigned long long)n, (unsigned long long)mp_mem_limit());
    L->nbytes = n;
    double off = h->vox_offset;
    if (!(off >= 0) || off > 9.0e15)
        return mp_error_set(MP_ERR_FORMAT, "%s: vox_offset %g is negative or not a number", name, off);
    uint64_t o = (uint64_t)off;
    if (single_file) {
        uint64_t min = h->sizeof_hdr == MP_NIFTI2_HDR ? MP_NIFTI2_OFFSET : MP_NIFTI1_OFFSET;
        if (o == 0) {
            o = min; /* unset: the data follows the header (as niftilib does) */
        } else if (o < min) {
            return mp_error_set(MP_ERR_FORMAT, "%s: vox_offset %llu lies inside the header (minimum %llu)", name,
                                (unsigned long long)o, (unsigned long long)min);
        }
    }
    L->offset = o;
    return MP_OK;
}

/* ---- geometry ---- */
int mp_nifti_quatern_to_mat(double m[4][4], const double quatern[3], const double qoffset[3],
                            const double pixdim[3], double qfac, int precision_bits) {
    long double b = quatern[0], c = quatern[1], d = quatern[2];
    long double w2 = 1.0L - (b * b + c * c + d * d), a;
    /* Stored b,c,d are rounded, so |bcd| may exceed 1 by a few ulps. */
    long double thresh = -3.0L * ldexpl(1.0L, 1 - precision_bits);
    if (w2 < 0) {
        if (w2 < thresh) return mp_error_set(MP_ERR_FORMAT, "qform quaternion (%g, %g, %g) is not a unit quaternion",
                                             quatern[0], quatern[1], quatern[2]);
        a = 0;
    } else {
        a = sqrtl(w2);
    }
    long double R[3][3];
    long double nq = a * a + b * b + c * c + d * d;
    if (nq < DBL_EPSILON) {
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) R[i][j] = i == j;
    } else {
        long double s = 2.0L / nq, X = b * s, Y = c * s, Z = d * s;
        long double wX = a * X, wY = a * Y, wZ = a * Z, xX = b * X, xY = b * Y, xZ = b * Z;
        long double yY = c * Y, yZ = c * Z, zZ = d * Z;
        R[0][0] = 1 - (yY + zZ), R[0][1] = xY - wZ, R[0][2] = xZ + wY;
        R[1][0] = xY + wZ, R[1][1] = 1 - (xX + zZ), R[1][2] = yZ - wX;
        R[2][0] = xZ - wY, R[2][1] = yZ + wX, R[2][2] = 1 - (xX + yY);
    }
    long double s[3] = {pixdim[0], pixdim[1], pixdim[2] * (qfac < 0 ? -1.0 : 1.0)};
    mp_mat4_identity(m);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) m[i][j] = (double)(R[i][j] * s[j]);
        m[i][3] = qoffset[i];
    }
    return MP_OK;
}

static double det3(const double a[3][3]) {
    return a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
           a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
}

/* Orthogonal polar factor of a (Newton iteration X <- (X + X^-T) / 2);
 * returns 0, or -1 when a is singular. */
static int polar3(double out[3][3], const double a[3][3]) {
    double x[3][3];
    memcpy(x, a, sizeof x);
    for (int it = 0; it < 100; it++) {
        double det = det3(x);
        if (!(fabs(det) > 1e-300)) return -1;
        double inv_t[3][3]; /* (X^-1)^T = cofactor matrix / det */
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                int i1 = (i + 1) % 3, i2 = (i + 2) % 3, j1 = (j + 1) % 3, j2 = (j + 2) % 3;
                inv_t[i][j] = (x[i1][j1] * x[i2][j2] - x[i1][j2] * x[i2][j1]) / det;
            }
        double diff = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                double nx = 0.5 * (x[i][j] + inv_t[i][j]);
                diff += fabs(nx - x[i][j]);
                x[i][j] = nx;
            }
        if (diff < 1e-15) break;
    }
    memcpy(out, x, sizeof x);
    return 0;
}

void mp_nifti_mat_to_quatern(const double m[4][4], double quatern[3], double qoffset[3], double pixdim[3],
                             double *qfac) {
    double R[3][3];
    for (int j = 0; j < 3; j++) {
        double n = sqrt(m[0][j] * m[0][j] + m[1][j] * m[1][j] + m[2][j] * m[2][j]);
        pixdim[j] = n;
        for (int i = 0; i < 3; i++) R[i][j] = n > 0 ? m[i][j] / n : (i == j);
    }
    for (int i = 0; i < 3; i++) qoffset[i] = m[i][3];
    *qfac = 1;
    if (det3(R) < 0) {
        *qfac = -1;
        for (int i = 0; i < 3; i++) R[i][2] = -R[i][2];
    }
    double X[3][3];
    if (polar3(X, R) != 0) {
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) X[i][j] = i == j;
    }
    double w, x, y, z, tr = X[0][0] + X[1][1] + X[2][2];
    if (tr > 0) {
        double s = 2 * sqrt(tr + 1);
        w = 0.25 * s, x = (X[2][1] - X[1][2]) / s, y = (X[0][2] - X[2][0]) / s, z = (X[1][0] - X[0][1]) / s;
    } else if (X[0][0] > X[1][1] && X[0][0] > X[2][2]) {
        double s = 2 * sqrt(1 + X[0][0] - X[1][1] - X[2][2]);
        w = (X[2][1] - X[1][2]) / s, x = 0.25 * s, y = (X[0][1] + X[1][0]) / s, z = (X[0][2] + X[2][0]) / s;
    } else if (X[1][1] > X[2][2]) {
        double s = 2 * sqrt(1 + X[1][1] - X[0][0] - X[2][2]);
        w = (X[0][2] - X[2][0]) / s, x = (X[0][1] + X[1][0]) / s, y = 0.25 * s, z = (X[1][2] + X[2][1]) / s;
    } else {
        double s = 2 * sqrt(1 + X[2][2] - X[0][0] - X[1][1]);
        w = (X[1][0] - X[0][1]) / s, x = (X[0][2] + X[2][0]) / s, y = (X[1][2] + X[2][1]) / s, z = 0.25 * s;
    }
    double n = sqrt(w * w + x * x + y * y + z * z);
    if (w < 0) n = -n;
    quatern[0] = x / n, quatern[1] = y / n, quatern[2] = z / n;
}

/* nibabel's affine when neither xform is set: x flipped, origin at the centre. */
static void base_affine(double a[4][4], const mp_nifti_header_t *h, const double pd[4]) {
    double shape[3], zoom[3];
    for (int i = 0; i < 3; i++) {
        int in = i + 1 <= h->dim[0];
        shape[i] = in ? (double)h->dim[i + 1] : 1;
        zoom[i] = in ? pd[i + 1] : 1;
    }
    zoom[0] = -zoom[0];
    mp_mat4_identity(a);
    for (int i = 0; i < 3; i++) {
        a[i][i] = zoom[i];
        a[i][3] = -((shape[i] - 1) / 2.0) * zoom[i];
    }
}

/* SPM2 Analyze convention (as nibabel reads Analyze): x flipped, origin from
 * the SPM originator when it lies within (-dims, 2*dims), else centred. */
static void analyze_affine(double a[4][4], const mp_nifti_header_t *h, const double pd[4]) {
    double dims[3], org[3];
    int any = 0, inside = 1;
    for (int i = 0; i < 3; i++) {
        dims[i] = (double)(int16_t)h->dim[i + 1];
        any |= h->origin[i] != 0;
        inside &= h->origin[i] > -dims[i] && h->origin[i] < dims[i] * 2;
    }
    for (int i = 0; i < 3; i++) org[i] = any && inside ? h->origin[i] - 1.0 : (dims[i] - 1) / 2.0;
    double zoom[3] = {-pd[1], pd[2], pd[3]};
    mp_mat4_identity(a);
    for (int i = 0; i < 3; i++) {
        a[i][i] = zoom[i];
        a[i][3] = -org[i] * zoom[i];
    }
}

static int all_finite(const double *x, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int header_affine(double aff[4][4], const mp_nifti_header_t *h, int qcode, int scode, const char *name) {
    double pd[4] = {h->pixdim[0], h->pixdim[1], h->pixdim[2], h->pixdim[3]};
    for (int i = 1; i <= 3; i++) {
        if (!isfinite(pd[i])) {
            mp_log(MP_LOG_WARN, "%s: pixdim[%d] is %g; using 1", name, i, pd[i]);
            pd[i] = 1;
        }
        pd[i] = pd[i] == 0 ? 1 : fabs(pd[i]);
    }
    if (h->version == 0) {
        analyze_affine(aff, h, pd);
        return MP_OK;
    }
    if (scode != 0) {
        if (all_finite(&h->srow[0][0], 12)) {
            mp_mat4_identity(aff);
            for (int r = 0; r < 3; r++)
                for (int c = 0; c < 4; c++) aff[r][c] = h->srow[r][c];
            return MP_OK;
        }
        mp_log(MP_LOG_WARN, "%s: sform has non-finite values; using the qform", name);
    }
    if (qcode != 0 && all_finite(h->quatern, 3) && all_finite(h->qoffset, 3)) {
        double qfac = h->pixdim[0] == -1 ? -1 : 1;
        int rc = mp_nifti_quatern_to_mat(aff, h->quatern, h->qoffset, pd + 1, qfac, h->version == 2 ? 53 : 24);
        if (rc) return mp_error_wrap(rc, "%s: ", name);
        return MP_OK;
    }
    base_affine(aff, h, pd);
    return MP_OK;
}

static int header_scaling(mp_vol_t *v, const mp_nifti_header_t *h, const char *name) {
    double slope = h->scl_slope, inter = h->scl_inter;
    v->scl_slope = 1;
    v->scl_inter = 0;
    if (h->datatype == 128 || h->datatype == 2304) return MP_OK; /* colour: no scaling */
    if (isfinite(slope) && slope != 0) {
        if (!isfinite(inter)) {
            if (h->version == 0) inter = 0; /* SPM2 ignores a bad intercept */
            else
                return mp_error_set(MP_ERR_FORMAT, "%s: scl_slope is %g but scl_inter is %g", name, slope, inter);
        }
        v->scl_slope = slope;
        v->scl_inter = inter;
        return MP_OK;
    }
    if (h->version == 0) {
        /* SPM2: derive the scale from the raw and calibrated ranges. */
        double ur = (double)h->glmax - (double)h->glmin, sr = (float)(h->cal_max - h->cal_min);
        if (ur != 0 && sr != 0 && isfinite(sr)) {
            v->scl_slope = sr / ur;
            v->scl_inter = h->cal_min - v->scl_slope * (double)h->glmin;
        }
    }
    return MP_OK;
}

int mp_nifti_header_to_vol(mp_vol_t *v, const mp_nifti_header_t *h, const char *name) {
    int qcode = h->qform_code >= 0 && h->qform_code <= 5 ? h->qform_code : 0;
    int scode = h->sform_code >= 0 && h->sform_code <= 5 ? h->sform_code : 0;
    double aff[4][4];
    int rc = header_affine(aff, h, qcode, scode, name);
    if (rc) return rc;
    mp_vol_set_affine(v, aff);
    if ((rc = header_scaling(v, h, name))) return rc;
    mp_vol_meta_t *m = &v->meta;
    mp_vol_meta_init(m);
    m->qform_code = qcode;
    m->sform_code = scode;
    memcpy(m->descrip, h->descrip, sizeof m->descrip);
    memcpy(m->aux_file, h->aux_file, sizeof m->aux_file);
    m->cal_min = h->cal_min;
    m->cal_max = h->cal_max;
    m->pixdim_t = h->pixdim[4];
    if (h->version == 0) {
        /* Analyze has no xform codes; its affine is an aligned convention. */
        m->qform_code = m->sform_code = 2;
        return MP_OK;
    }
    m->intent_code = h->intent_code;
    for (int i = 0; i < 3; i++) m->intent_p[i] = (float)h->intent_p[i];
    memcpy(m->intent_name, h->intent_name, sizeof m->intent_name);
    m->xyzt_units = h->xyzt_units;
    m->toffset = h->toffset;
    m->slice_code = h->slice_code;
    m->slice_start = (int)h->slice_start;
    m->slice_end = (int)h->slice_end;
    m->slice_duration = h->slice_duration;
    m->dim_info = h->dim_info;
    return MP_OK;
}

/* ---- writing ---- */
int mp_nifti_header_from_vol(mp_nifti_header_t *h, const mp_vol_t *v, int version, int single_file) {
    memset(h, 0, sizeof *h);
    int code = mp_nifti_datatype_code(v->dtype);
    if (!code) return mp_error_set(MP_ERR_ARG, "cannot store data type %d in NIfTI", (int)v->dtype);
    h->version = version;
    h->sizeof_hdr = version == 2 ? MP_NIFTI2_HDR : MP_NIFTI1_HDR;
    h->single_file = single_file;
    snprintf(h->magic, sizeof h->magic, "n%c%d", single_file ? '+' : 'i', version);
    h->dim[0] = v->dim[3] > 1 ? 4 : 3;
    for (int i = 1; i < 8; i++) h->dim[i] = i <= 4 ? v->dim[i - 1] : 1;
    h->datatype = code;
    h->bitpix = (int)(8 * mp_dtype_size(v->dtype));
    double pd[3];
    mp_nifti_mat_to_quatern(v->affine, h->quatern, h->qoffset, pd, &h->pixdim[0]);
    for (int i = 0; i < 3; i++) h->pixdim[i + 1] = pd[i];
    h->pixdim[4] = v->meta.pixdim_t;
    for (int i = 5; i < 8; i++) h->pixdim[i] = 1;
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) h->srow[r][c] = v->affine[r][c];
    h->vox_offset = single_file ? (version == 2 ? MP_NIFTI2_OFFSET : MP_NIFTI1_OFFSET) : 0;
    h->scl_slope = v->scl_slope;
    h->scl_inter = v->scl_inter;
    const mp_vol_meta_t *m = &v->meta;
    h->qform_code = m->qform_code;
    h->sform_code = m->sform_code;
    h->intent_code = m->intent_code;
    for (int i = 0; i < 3; i++) h->intent_p[i] = m->intent_p[i];
    memcpy(h->intent_name, m->intent_name, sizeof h->intent_name);
    memcpy(h->descrip, m->descrip, sizeof h->descrip);
    memcpy(h->aux_file, m->aux_file, sizeof h->aux_file);
    h->intent_name[16] = h->descrip[80] = h->aux_file[24] = '\0';
    h->xyzt_units = m->xyzt_units;
    h->toffset = m->toffset;
    h->cal_min = m->cal_min;
    h->cal_max = m->cal_max;
    h->slice_code = m->slice_code;
    h->slice_start = m->slice_start;
    h->slice_end = m->slice_end;
    h->slice_duration = m->slice_duration;
    h->dim_info = m->dim_info;
    return MP_OK;
}

/* Little-endian stores. */
static void w16(uint8_t *b, size_t o, int64_t v) {
    uint16_t u = (uint16_t)(v < INT16_MIN ? INT16_MIN : v > INT16_MAX ? INT16_MAX : v);
    b[o] = (uint8_t)u, b[o + 1] = (uint8_t)(u >> 8);
}
static void w32u(uint8_t *b, size_t o, uint32_t u) {
    for (int i = 0; i < 4; i++) b[o + (size_t)i] = (uint8_t)(u >> (8 * i));
}
static void w64u(uint8_t *b, size_t o, uint64_t u) {
    for (int i = 0; i < 8; i++) b[o + (size_t)i] = (uint8_t)(u >> (8 * i));
}
static void w32(uint8_t *b, size_t o, int64_t v) {
    w32u(b, o, (uint32_t)(int32_t)(v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : v));
}
static void wf32(uint8_t *b, size_t o, double v) {
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    w32u(b, o, u);
}
static void wf64(uint8_t *b, size_t o, double v) {
    uint64_t u;
    memcpy(&u, &v, 8);
    w64u(b, o, u);
}

static void encode_v1(uint8_t *b, const mp_nifti_header_t *h) {
    w32(b, 0, MP_NIFTI1_HDR);
    b[38] = 'r'; /* "regular", as Analyze readers expect */
    b[39] = (uint8_t)h->dim_info;
    for (int i = 0; i < 8; i++) w16(b, 40 + 2 * (size_t)i, h->dim[i]);
    for (int i = 0; i < 3; i++) wf32(b, 56 + 4 * (size_t)i, h->intent_p[i]);
    w16(b, 68, h->intent_code);
    w16(b, 70, h->datatype);
    w16(b, 72, h->bitpix);
    w16(b, 74, h->slice_start);
    for (int i = 0; i < 8; i++) wf32(b, 76 + 4 * (size_t)i, h->pixdim[i]);
    wf32(b, 108, h->vox_offset);
    wf32(b, 112, h->scl_slope);
    wf32(b, 116, h->scl_inter);
    w16(b, 120, h->slice_end);
    b[122] = (uint8_t)h->slice_code;
    b[123] = (uint8_t)h->xyzt_units;
    wf32(b, 124, h->cal_max);
    wf32(b, 128, h->cal_min);
    wf32(b, 132, h->slice_duration);
    wf32(b, 136, h->toffset);
    memcpy(b + 148, h->descrip, 80); /* all bytes: keeps what follows a NUL */
    memcpy(b + 228, h->aux_file, 24); /* all bytes: keeps what follows a NUL */
    w16(b, 252, h->qform_code);
    w16(b, 254, h->sform_code);
    for (int i = 0; i < 3; i++) {
        wf32(b, 256 + 4 * (size_t)i, h->quatern[i]);
        wf32(b, 268 + 4 * (size_t)i, h->qoffset[i]);
    }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) wf32(b, 280 + 16 * (size_t)r + 4 * (size_t)c, h->srow[r][c]);
    memcpy(b + 328, h->intent_name, 16); /* all bytes: keeps what follows a NUL */
    memcpy(b + 344, h->magic, 4);
}

static void encode_v2(uint8_t *b, const mp_nifti_header_t *h) {
    static const uint8_t eol[4] = {13, 10, 26, 10};
    w32(b, 0, MP_NIFTI2_HDR);
    memcpy(b + 4, h->magic, 4);
    memcpy(b + 8, eol, 4);
    w16(b, 12, h->datatype);
    w16(b, 14, h->bitpix);
    for (int i = 0; i < 8; i++) w64u(b, 16 + 8 * (size_t)i, (uint64_t)h->dim[i]);
    for (int i = 0; i < 3; i++) wf64(b, 80 + 8 * (size_t)i, h->intent_p[i]);
    for (int i = 0; i < 8; i++) wf64(b, 104 + 8 * (size_t)i, h->pixdim[i]);
    w64u(b, 168, (uint64_t)(int64_t)h->vox_offset);
    wf64(b, 176, h->scl_slope);
    wf64(b, 184, h->scl_inter);
    wf64(b, 192, h->cal_max);
    wf64(b, 200, h->cal_min);
    wf64(b, 208, h->slice_duration);
    wf64(b, 216, h->toffset);
    w64u(b, 224, (uint64_t)h->slice_start);
    w64u(b, 232, (uint64_t)h->slice_end);
    memcpy(b + 240, h->descrip, 80); /* all bytes: keeps what follows a NUL */
    memcpy(b + 320, h->aux_file, 24); /* all bytes: keeps what follows a NUL */
    w32(b, 344, h->qform_code);
    w32(b, 348, h->sform_code);
    for (int i = 0; i < 3; i++) {
        wf64(b, 352 + 8 * (size_t)i, h->quatern[i]);
        wf64(b, 376 + 8 * (size_t)i, h->qoffset[i]);
    }
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) wf64(b, 400 + 32 * (size_t)r + 8 * (size_t)c, h->srow[r][c]);
    w32(b, 496, h->slice_code);
    w32(b, 500, h->xyzt_units);
    w32(b, 504, h->intent_code);
    memcpy(b + 508, h->intent_name, 16); /* all bytes: keeps what follows a NUL */
    b[524] = (uint8_t)h->dim_info;
}

void mp_nifti_encode_header(uint8_t *buf, const mp_nifti_header_t *h) {
    size_t n = h->version == 2 ? MP_NIFTI2_OFFSET : MP_NIFTI1_OFFSET;
    memset(buf, 0, n);
    if (h->version == 2) encode_v2(buf, h);
    else encode_v1(buf, h);
}
