/* DICOM image series writer: a volume becomes a folder of single-frame CT
 * Image Storage or MR Image Storage files (explicit VR little endian, 16-bit
 * pixels, one file per z index), with the Patient, General Study, General
 * Series, Frame of Reference, General Equipment, General Image, Image Plane,
 * Image Pixel, CT/MR Image, VOI LUT and SOP Common modules. Also the source
 * description struct shared with the SEG writer. */
#include "io/dcmw_internal.h"
#include "medpipe/dicom_write.h"
#include "medpipe/medpipe.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T(g, e) MP_DCMW_TAG(0x##g, 0x##e)
#define CT_IMAGE_STORAGE "1.2.840.10008.5.1.4.1.1.2"
#define MR_IMAGE_STORAGE "1.2.840.10008.5.1.4.1.1.4"

int mp_dicom_source_init(mp_dicom_source_t *s, int64_t nslices) {
    memset(s, 0, sizeof *s);
    uint64_t bytes;
    if (nslices < 1 || mp_mul_u64((uint64_t)nslices, MP_DICOM_UID_SIZE * 2 + 3 * sizeof(double), &bytes) ||
        bytes > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "DICOM source description: %lld slices", (long long)nslices);
    s->sop_class_uid = calloc((size_t)nslices, sizeof *s->sop_class_uid);
    s->sop_instance_uid = calloc((size_t)nslices, sizeof *s->sop_instance_uid);
    s->position = calloc((size_t)nslices, sizeof *s->position);
    if (!s->sop_class_uid || !s->sop_instance_uid || !s->position) {
        mp_dicom_source_deinit(s);
        return mp_error_set(MP_ERR_NOMEM, "DICOM source description: out of memory for %lld slices", (long long)nslices);
    }
    s->nslices = nslices;
    return MP_OK;
}

void mp_dicom_source_deinit(mp_dicom_source_t *s) {
    if (!s) return;
    free(s->sop_class_uid);
    free(s->sop_instance_uid);
    free(s->position);
    memset(s, 0, sizeof *s);
}

void mp_dicom_write_opts_init(mp_dicom_write_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->modality = "CT";
    o->patient_name = "Anonymous^";
    o->patient_id = "MEDPIPE";
    o->study_id = "1";
    o->series_description = "medpipe";
    o->series_number = 1;
    o->manufacturer = "medpipe";
    o->file_prefix = "IM";
}

/* ---- pixel values: how real values map to 16-bit stored values ---- */
typedef struct {
    int is_signed;
    double slope, inter; /* as written (DS text read back) */
    int direct;          /* stored int16/uint16 values go out unchanged */
} pix_plan_t;

typedef struct {
    double smin, smax, rmin, rmax;
    int s_integral, r_integral;
} vol_range_t;

static double vol_slope(const mp_vol_t *v) { return v->scl_slope == 0 ? 1.0 : v->scl_slope; }
static double vol_inter(const mp_vol_t *v) { return v->scl_slope == 0 ? 0.0 : v->scl_inter; }

/* 16-bit volumes without scaling (the usual CT case): a plain min/max. */
static int scan_range_16(const mp_vol_t *v, vol_range_t *r) {
    int64_t n = mp_vol_voxels(v);
    int32_t lo = INT32_MAX, hi = INT32_MIN;
    if (v->dtype == MP_DTYPE_I16) {
        const int16_t *d = v->data;
        for (int64_t i = 0; i < n; i++) lo = d[i] < lo ? d[i] : lo, hi = d[i] > hi ? d[i] : hi;
    } else {
        const uint16_t *d = v->data;
        for (int64_t i = 0; i < n; i++) lo = d[i] < lo ? d[i] : lo, hi = d[i] > hi ? d[i] : hi;
    }
    r->smin = r->rmin = lo;
    r->smax = r->rmax = hi;
    r->s_integral = r->r_integral = 1;
    return MP_OK;
}

static int scan_range(const mp_vol_t *v, vol_range_t *r) {
    double vs = vol_slope(v), vi = vol_inter(v);
    int64_t n = mp_vol_voxels(v);
    if ((v->dtype == MP_DTYPE_I16 || v->dtype == MP_DTYPE_U16) && vs == 1 && vi == 0) return scan_range_16(v, r);
    r->smin = r->rmin = INFINITY;
    r->smax = r->rmax = -INFINITY;
    r->s_integral = r->r_integral = 1;
    for (int64_t i = 0; i < n; i++) {
        double s = mp_vol_get(v, i), x = s * vs + vi;
        if (!isfinite(x))
            return mp_error_set(MP_ERR_ARG, "volume voxel %lld is %g; DICOM pixels must be finite", (long long)i, x);
        if (s < r->smin) r->smin = s;
        if (s > r->smax) r->smax = s;
        if (x < r->rmin) r->rmin = x;
        if (x > r->rmax) r->rmax = x;
        r->s_integral &= s == floor(s);
        r->r_integral &= x == floor(x);
    }
    return MP_OK;
}

/* DS value that reads back exactly as x (else *exact = 0). */
static double ds_exact(double x, int *exact) {
    char t[17];
    int ok;
    double y = mp_dcmw_format_ds(x, t, &ok);
    *exact &= ok && y == x;
    return ok ? y : 0;
}

/* Chooses the representation for [lo, hi] of integers with the given slope
 * and intercept (exact ones); 0 when the range does not fit 16 bits.
 * Unsigned volumes stay unsigned when they fit. */
static int plan_integers(pix_plan_t *p, double lo, double hi, double slope, double inter, int prefer_unsigned) {
    p->slope = slope;
    p->inter = inter;
    if (prefer_unsigned && lo >= 0 && hi <= 65535) {
        p->is_signed = 0;
        return 1;
    }
    if (lo >= -32768 && hi <= 32767) {
        p->is_signed = 1;
        return 1;
    }
    if (lo >= 0 && hi <= 65535) {
        p->is_signed = 0;
        return 1;
    }
    if (hi - lo <= 65535 && fabs(lo) < 1e15) {
        int exact = 1;
        double i2 = ds_exact(inter + lo * slope, &exact);
        if (!exact) return 0;
        p->is_signed = 0;
        p->inter = i2;
        return 1;
    }
    return 0;
}

static void plan_quantized(pix_plan_t *p, const vol_range_t *r) {
    char t[17];
    int ok;
    p->is_signed = 1;
    if (r->rmax == r->rmin) {
        p->slope = 1;
        p->inter = mp_dcmw_format_ds(r->rmin, t, &ok);
        return;
    }
    double want = (r->rmax - r->rmin) / 65534.0;
    double slope = mp_dcmw_format_ds(want, t, &ok);
    /* The written slope must not be smaller than needed, or the ends clamp. */
    for (int i = 0; i < 8 && slope < want; i++) slope = mp_dcmw_format_ds(want * (1 + 4e-15 * (1 << i)), t, &ok);
    p->slope = slope;
    p->inter = mp_dcmw_format_ds(r->rmin + (r->rmax - r->rmin) / 2, t, &ok);
}

static int plan_pixels(const mp_vol_t *v, pix_plan_t *p) {
    vol_range_t r;
    int rc = scan_range(v, &r);
    if (rc) return rc;
    int exact = 1;
    double vs = ds_exact(vol_slope(v), &exact), vi = ds_exact(vol_inter(v), &exact);
    int is_unsigned = v->dtype == MP_DTYPE_U8 || v->dtype == MP_DTYPE_U16 || v->dtype == MP_DTYPE_U32 ||
                      v->dtype == MP_DTYPE_U64;
    if (r.s_integral && exact && plan_integers(p, r.smin, r.smax, vs, vi, is_unsigned)) {
        p->direct = p->slope == vs && p->inter == vi &&
                    ((p->is_signed && v->dtype == MP_DTYPE_I16) || (!p->is_signed && v->dtype == MP_DTYPE_U16));
        return MP_OK;
    }
    if (r.r_integral && plan_integers(p, r.rmin, r.rmax, 1, 0, 0)) return MP_OK;
    plan_quantized(p, &r);
    return MP_OK;
}

/* Converts slice k to little-endian 16-bit values; tracks the largest error. */
static void convert_slice(const mp_vol_t *v, int64_t k, const pix_plan_t *p, uint8_t *out, double *max_err) {
    double vs = vol_slope(v), vi = vol_inter(v);
    int64_t n = v->dim[0] * v->dim[1], base = k * n;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (p->direct) { /* exact by construction: error stays as it is */
        memcpy(out, (const uint8_t *)v->data + base * 2, (size_t)n * 2);
        return;
    }
#endif
    double lo = p->is_signed ? -32768 : 0, hi = p->is_signed ? 32767 : 65535;
    double err = *max_err;
    for (int64_t i = 0; i < n; i++) {
        double x = mp_vol_get(v, base + i) * vs + vi;
        double q = nearbyint((x - p->inter) / p->slope);
        q = q < lo ? lo : q > hi ? hi : q;
        double e = fabs(q * p->slope + p->inter - x);
        if (e > err) err = e;
        int32_t iv = (int32_t)q;
        uint16_t u = (uint16_t)(p->is_signed ? (uint16_t)(int16_t)iv : (uint16_t)iv);
        out[2 * i] = (uint8_t)u;
        out[2 * i + 1] = (uint8_t)(u >> 8);
    }
    *max_err = err;
}

/* ---- the data set of one slice ---- */
typedef struct {
    const mp_dicom_write_opts_t *o;
    const mp_vol_t *v;
    mp_dcmw_geom_t geom;
    pix_plan_t pix;
    int is_mr, utf8;
    char study_uid[MP_DICOM_UID_SIZE], series_uid[MP_DICOM_UID_SIZE], for_uid[MP_DICOM_UID_SIZE];
    char date[9], time[7];
    const char *study_date, *study_time;
} series_ctx_t;

static void put_ids_and_dates(mp_dcmw_buf_t *b, const series_ctx_t *c, const char *sop_uid) {
    const mp_dicom_write_opts_t *o = c->o;
    const char *image_type = c->is_mr ? "DERIVED\\SECONDARY\\OTHER" : "DERIVED\\SECONDARY\\AXIAL";
    mp_dcmw_charset(b, c->utf8);
    mp_dcmw_str(b, T(0008, 0008), "CS", image_type);
    mp_dcmw_str(b, T(0008, 0016), "UI", c->is_mr ? MR_IMAGE_STORAGE : CT_IMAGE_STORAGE);
    mp_dcmw_str(b, T(0008, 0018), "UI", sop_uid);
    mp_dcmw_str(b, T(0008, 0020), "DA", c->study_date);
    mp_dcmw_str(b, T(0008, 0021), "DA", c->study_date);
    mp_dcmw_str(b, T(0008, 0023), "DA", c->study_date);
    mp_dcmw_str(b, T(0008, 0030), "TM", c->study_time);
    mp_dcmw_str(b, T(0008, 0031), "TM", c->study_time);
    mp_dcmw_str(b, T(0008, 0033), "TM", c->study_time);
    mp_dcmw_str(b, T(0008, 0050), "SH", o->accession_number);
    mp_dcmw_str(b, T(0008, 0060), "CS", c->is_mr ? "MR" : "CT");
    mp_dcmw_str(b, T(0008, 0070), "LO", o->manufacturer);
    mp_dcmw_str(b, T(0008, 0090), "PN", o->referring_physician);
    if (o->study_description && *o->study_description) mp_dcmw_str(b, T(0008, 1030), "LO", o->study_description);
    if (o->series_description && *o->series_description) mp_dcmw_str(b, T(0008, 103E), "LO", o->series_description);
    mp_dcmw_str(b, T(0008, 1090), "LO", "medpipe");
    mp_dcmw_str(b, T(0010, 0010), "PN", o->patient_name);
    mp_dcmw_str(b, T(0010, 0020), "LO", o->patient_id);
    mp_dcmw_str(b, T(0010, 0030), "DA", o->patient_birth_date);
    mp_dcmw_str(b, T(0010, 0040), "CS", o->patient_sex);
}

/* Acquisition attributes of the CT or MR Image module (group 0018). */
static void put_acquisition(mp_dcmw_buf_t *b, const series_ctx_t *c) {
    double thick = c->geom.slice_spacing;
    if (c->is_mr) {
        mp_dcmw_str(b, T(0018, 0020), "CS", "RM"); /* research mode: not from a scanner */
        mp_dcmw_str(b, T(0018, 0021), "CS", "NONE");
        mp_dcmw_str(b, T(0018, 0022), "CS", "");
        mp_dcmw_str(b, T(0018, 0023), "CS", "3D");
        mp_dcmw_ds(b, T(0018, 0050), &thick, 1);
        mp_dcmw_str(b, T(0018, 0080), "DS", "");
        mp_dcmw_str(b, T(0018, 0081), "DS", "");
        mp_dcmw_ds(b, T(0018, 0088), &thick, 1);
        mp_dcmw_str(b, T(0018, 0091), "IS", "");
    } else {
        mp_dcmw_ds(b, T(0018, 0050), &thick, 1);
        mp_dcmw_str(b, T(0018, 0060), "DS", "");
    }
    mp_dcmw_str(b, T(0018, 1020), "LO", "medpipe " MP_VERSION);
    mp_dcmw_str(b, T(0018, 5100), "CS", "HFS");
}

static void put_plane_and_pixels(mp_dcmw_buf_t *b, const series_ctx_t *c, int64_t k, const uint8_t *pixels) {
    const mp_vol_t *v = c->v;
    double ipp[3];
    mp_dcmw_geom_ipp(&c->geom, k, ipp);
    double loc = ipp[0] * c->geom.normal[0] + ipp[1] * c->geom.normal[1] + ipp[2] * c->geom.normal[2];
    mp_dcmw_str(b, T(0020, 000D), "UI", c->study_uid);
    mp_dcmw_str(b, T(0020, 000E), "UI", c->series_uid);
    mp_dcmw_str(b, T(0020, 0010), "SH", c->o->study_id);
    mp_dcmw_is(b, T(0020, 0011), c->o->series_number);
    mp_dcmw_is(b, T(0020, 0012), 1);
    mp_dcmw_is(b, T(0020, 0013), k + 1);
    mp_dcmw_ds(b, T(0020, 0032), ipp, 3);
    mp_dcmw_ds(b, T(0020, 0037), c->geom.iop, 6);
    mp_dcmw_str(b, T(0020, 0052), "UI", c->for_uid);
    mp_dcmw_str(b, T(0020, 0060), "CS", ""); /* Laterality: type 2C, no paired body part */
    mp_dcmw_str(b, T(0020, 1040), "LO", "");
    mp_dcmw_ds(b, T(0020, 1041), &loc, 1);
    uint16_t one = 1, rows = (uint16_t)v->dim[1], cols = (uint16_t)v->dim[0], bits = 16, high = 15;
    uint16_t rep = (uint16_t)c->pix.is_signed;
    mp_dcmw_us(b, T(0028, 0002), &one, 1);
    mp_dcmw_str(b, T(0028, 0004), "CS", "MONOCHROME2");
    mp_dcmw_us(b, T(0028, 0010), &rows, 1);
    mp_dcmw_us(b, T(0028, 0011), &cols, 1);
    mp_dcmw_ds(b, T(0028, 0030), c->geom.pixel_spacing, 2);
    mp_dcmw_us(b, T(0028, 0100), &bits, 1);
    mp_dcmw_us(b, T(0028, 0101), &bits, 1);
    mp_dcmw_us(b, T(0028, 0102), &high, 1);
    mp_dcmw_us(b, T(0028, 0103), &rep, 1);
    if (c->o->has_window) {
        mp_dcmw_ds(b, T(0028, 1050), &c->o->window_center, 1);
        mp_dcmw_ds(b, T(0028, 1051), &c->o->window_width, 1);
    }
    /* The MR Image IOD has no Modality LUT; rescale goes in only when needed
     * (readers such as dcm2niix honour it, dciodvfy warns). */
    if (!c->is_mr || c->pix.slope != 1 || c->pix.inter != 0) {
        mp_dcmw_ds(b, T(0028, 1052), &c->pix.inter, 1);
        mp_dcmw_ds(b, T(0028, 1053), &c->pix.slope, 1);
        mp_dcmw_str(b, T(0028, 1054), "LO", c->is_mr ? "US" : "HU");
    }
    mp_dcmw_bytes(b, T(7FE0, 0010), "OW", pixels, (size_t)(v->dim[0] * v->dim[1] * 2));
}

/* ---- options and the series ---- */
static int check_opts(const mp_dicom_write_opts_t *o, const mp_vol_t *v, series_ctx_t *c) {
    if (!v || !v->data) return mp_error_set(MP_ERR_ARG, "DICOM series: no volume");
    if (v->dim[3] > 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "DICOM series: volume has %lld channels; write one channel at a time",
                            (long long)v->dim[3]);
    if (v->dim[0] < 1 || v->dim[1] < 1 || v->dim[2] < 1 || v->dim[0] > 65535 || v->dim[1] > 65535)
        return mp_error_set(MP_ERR_ARG, "DICOM series: slice of %lldx%lld does not fit Rows/Columns (1..65535)",
                            (long long)v->dim[0], (long long)v->dim[1]);
    if (v->dim[2] > 9999999)
        return mp_error_set(MP_ERR_LIMIT, "DICOM series: %lld slices", (long long)v->dim[2]);
    const char *m = o->modality ? o->modality : "CT";
    if (strcmp(m, "CT") != 0 && strcmp(m, "MR") != 0)
        return mp_error_set(MP_ERR_ARG, "DICOM series: modality '%s' (use CT or MR)", m);
    c->is_mr = strcmp(m, "MR") == 0;
    const char *prefix = o->file_prefix ? o->file_prefix : "";
    if (strchr(prefix, '/') || strlen(prefix) > 64)
        return mp_error_set(MP_ERR_ARG, "DICOM series: file prefix '%s' must be a plain short name", prefix);
    const char *uids[3] = {o->study_uid, o->series_uid, o->frame_of_reference_uid};
    for (int i = 0; i < 3; i++)
        if (uids[i] && !mp_dicom_uid_is_valid(uids[i]))
            return mp_error_set(MP_ERR_ARG, "DICOM series: '%s' is not a valid UID", uids[i]);
    const char *texts[] = {o->patient_name, o->patient_id, o->study_id, o->accession_number, o->study_description,
                           o->series_description, o->referring_physician, o->manufacturer};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) c->utf8 |= mp_dcmw_is_non_ascii(texts[i]);
    return MP_OK;
}

static int make_uid(char out[MP_DICOM_UID_SIZE], const char *given, mp_rng_t *rng) {
    if (given) {
        snprintf(out, MP_DICOM_UID_SIZE, "%s", given);
        return MP_OK;
    }
    return mp_dicom_uid_make(out, rng);
}

static void copy_text(char *dst, size_t n, const char *src) { snprintf(dst, n, "%s", src ? src : ""); }

static void fill_source(mp_dicom_source_t *s, const series_ctx_t *c) {
    const mp_dicom_write_opts_t *o = c->o;
    copy_text(s->patient_name, sizeof s->patient_name, o->patient_name);
    copy_text(s->patient_id, sizeof s->patient_id, o->patient_id);
    copy_text(s->patient_birth_date, sizeof s->patient_birth_date, o->patient_birth_date);
    copy_text(s->patient_sex, sizeof s->patient_sex, o->patient_sex);
    copy_text(s->study_uid, sizeof s->study_uid, c->study_uid);
    copy_text(s->study_date, sizeof s->study_date, c->study_date);
    copy_text(s->study_time, sizeof s->study_time, c->study_time);
    copy_text(s->study_id, sizeof s->study_id, o->study_id);
    copy_text(s->accession_number, sizeof s->accession_number, o->accession_number);
    copy_text(s->referring_physician, sizeof s->referring_physician, o->referring_physician);
    copy_text(s->study_description, sizeof s->study_description, o->study_description);
    copy_text(s->frame_of_reference_uid, sizeof s->frame_of_reference_uid, c->for_uid);
    copy_text(s->series_uid, sizeof s->series_uid, c->series_uid);
    s->rows = (int)c->v->dim[1];
    s->cols = (int)c->v->dim[0];
    s->has_positions = 1;
    for (int64_t k = 0; k < s->nslices; k++) {
        copy_text(s->sop_class_uid[k], MP_DICOM_UID_SIZE, c->is_mr ? MR_IMAGE_STORAGE : CT_IMAGE_STORAGE);
        mp_dcmw_geom_ipp(&c->geom, k, s->position[k]);
    }
}

/* Slices are written by several threads: with one fsync per file the time
 * goes to waiting for the disk, and waits overlap. UIDs are drawn before, in
 * slice order, so the output does not depend on the thread count. */
#define WRITE_THREADS 4

typedef struct {
    series_ctx_t *c;
    const char *dir;
    char (*sops)[MP_DICOM_UID_SIZE];
    atomic_int stop;
    struct {
        int rc;
        char msg[1024];
        double max_err;
        int64_t files;
    } w[WRITE_THREADS];
} write_job_t;

static int write_one(write_job_t *job, int64_t k, mp_dcmw_buf_t *b, uint8_t *pixels, char *path, size_t plen,
                     double *max_err) {
    series_ctx_t *c = job->c;
    convert_slice(c->v, k, &c->pix, pixels, max_err);
    mp_dcmw_buf_reset(b);
    put_ids_and_dates(b, c, job->sops[k]);
    put_acquisition(b, c);
    put_plane_and_pixels(b, c, k, pixels);
    snprintf(path, plen, "%s/%s%05lld.dcm", job->dir, c->o->file_prefix ? c->o->file_prefix : "", (long long)(k + 1));
    if (b->err) return mp_error_wrap(b->err, "%s: ", path);
    return mp_dcmw_write_file(path, c->is_mr ? MR_IMAGE_STORAGE : CT_IMAGE_STORAGE, job->sops[k], b);
}

static void write_range(void *ctxp, int64_t begin, int64_t end, int worker) {
    write_job_t *job = ctxp;
    const mp_vol_t *v = job->c->v;
    size_t plen = strlen(job->dir) + 96;
    uint8_t *pixels = malloc((size_t)(v->dim[0] * v->dim[1] * 2));
    char *path = malloc(plen);
    mp_dcmw_buf_t b;
    mp_dcmw_buf_init(&b);
    int rc = pixels && path ? MP_OK : mp_error_set(MP_ERR_NOMEM, "DICOM series: out of memory");
    for (int64_t k = begin; !rc && k < end && !atomic_load(&job->stop); k++) {
        rc = write_one(job, k, &b, pixels, path, plen, &job->w[worker].max_err);
        if (!rc) job->w[worker].files++;
    }
    if (rc) {
        job->w[worker].rc = rc;
        snprintf(job->w[worker].msg, sizeof job->w[worker].msg, "%s", mp_error_message());
        atomic_store(&job->stop, 1);
    }
    mp_dcmw_buf_deinit(&b);
    free(pixels);
    free(path);
}

static int write_slices(const char *dir, series_ctx_t *c, mp_dicom_write_info_t *info, mp_dicom_source_t *src) {
    int64_t nz = c->v->dim[2];
    write_job_t *job = calloc(1, sizeof *job);
    char(*sops)[MP_DICOM_UID_SIZE] = src ? src->sop_instance_uid : calloc((size_t)nz, MP_DICOM_UID_SIZE);
    int rc = job && sops ? MP_OK : mp_error_set(MP_ERR_NOMEM, "DICOM series: out of memory");
    for (int64_t k = 0; !rc && k < nz; k++) rc = mp_dicom_uid_make(sops[k], c->o->uid_rng);
    mp_pool_t *pool = NULL;
    if (!rc) {
        job->c = c;
        job->dir = dir;
        job->sops = sops;
        atomic_init(&job->stop, 0);
        int threads = nz < WRITE_THREADS ? (int)nz : WRITE_THREADS;
        pool = threads > 1 ? mp_pool_create(threads) : NULL; /* NULL: run in this thread */
        mp_pool_parallel_for(pool, nz, write_range, job);
        for (int w = 0; w < WRITE_THREADS; w++) {
            info->files += job->w[w].files;
            if (job->w[w].max_err > info->max_abs_error) info->max_abs_error = job->w[w].max_err;
            if (!rc && job->w[w].rc) rc = mp_error_set(job->w[w].rc, "%s", job->w[w].msg);
        }
    }
    mp_pool_free(pool);
    if (!src) free(sops);
    free(job);
    return rc;
}

int mp_dicom_write_series(const char *dir, const mp_vol_t *vol, const mp_dicom_write_opts_t *opts,
                          mp_dicom_write_info_t *info, mp_dicom_source_t *source) {
    mp_dicom_write_opts_t defaults;
    mp_dicom_write_info_t local_info;
    if (!opts) {
        mp_dicom_write_opts_init(&defaults);
        opts = &defaults;
    }
    if (!info) info = &local_info;
    memset(info, 0, sizeof *info);
    if (source) memset(source, 0, sizeof *source);
    series_ctx_t c;
    memset(&c, 0, sizeof c);
    c.o = opts;
    c.v = vol;
    int rc = check_opts(opts, vol, &c);
    if (!rc) rc = mp_dcmw_geom_init(&c.geom, vol);
    if (!rc) rc = plan_pixels(vol, &c.pix);
    if (!rc) rc = make_uid(c.study_uid, opts->study_uid, opts->uid_rng);
    if (!rc) rc = make_uid(c.series_uid, opts->series_uid, opts->uid_rng);
    if (!rc) rc = make_uid(c.for_uid, opts->frame_of_reference_uid, opts->uid_rng);
    if (rc) return mp_error_wrap(rc, "%s: ", dir);
    mp_dcmw_now(c.date, c.time);
    c.study_date = opts->study_date ? opts->study_date : c.date;
    c.study_time = opts->study_time ? opts->study_time : c.time;
    info->slope = c.pix.slope;
    info->intercept = c.pix.inter;
    info->pixel_signed = c.pix.is_signed;
    rc = mp_mkdir_p(dir);
    if (!rc && source) rc = mp_dicom_source_init(source, vol->dim[2]);
    if (!rc) rc = write_slices(dir, &c, info, source);
    if (!rc && source) fill_source(source, &c);
    if (rc && source) mp_dicom_source_deinit(source);
    info->exact = info->max_abs_error == 0;
    if (!rc && !info->exact)
        mp_log(MP_LOG_INFO, "%s: values quantized to 16 bits (slope %g, intercept %g), largest error %g", dir,
               info->slope, info->intercept, info->max_abs_error);
    return rc;
}
