/* DICOM Segmentation (SEG) writer: a label volume on the grid of a source
 * series becomes one binary Segmentation Storage object. One segment per
 * class (label, name, algorithm, category and type codes, display colour);
 * 1-bit frames packed continuously across frame boundaries; multi-frame
 * functional groups (shared: pixel measures and plane orientation; per frame:
 * derivation from the source slice, frame content with dimension index
 * values, plane position, segment identification); dimension organization by
 * (segment number, image position); the source series and every instance in
 * the Common Instance Reference module; patient, study and frame of reference
 * copied from the source. */
#include "io/dcmw_internal.h"
#include "medpipe/dicom_write.h"
#include "medpipe/medpipe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T(g, e) MP_DCMW_TAG(0x##g, 0x##e)
#define SEG_STORAGE "1.2.840.10008.5.1.4.1.1.66.4"
#define MAX_LABEL 65535

void mp_dicom_seg_opts_init(mp_dicom_seg_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->algorithm_type = "AUTOMATIC";
    o->algorithm_name = "medpipe";
    o->content_label = "SEGMENTATION";
    o->content_description = "medpipe segmentation";
    o->series_description = "Segmentation";
    o->series_number = 300;
    o->manufacturer = "medpipe";
    o->model_name = "medpipe";
    o->device_serial = "0";
    o->software_versions = "medpipe " MP_VERSION;
}

typedef struct {
    const mp_dicom_seg_opts_t *o;
    const mp_dicom_source_t *src;
    int64_t nx, ny, nz, npix;
    mp_dcmw_geom_t geom;
    mp_vol_t *lab;            /* int32 copy of the label volume */
    mp_dicom_segment_t *segs; /* resolved: names and codes filled in */
    char (*names)[32];        /* default names */
    int nseg;
    int32_t *seg_of;          /* [MAX_LABEL + 1]: segment index of a label, -1 none */
    uint8_t *present;         /* [nseg * nz]: segment s has voxels in slice k */
    int64_t nframes;
    int32_t *frame_seg;       /* [nframes] */
    int64_t *frame_slice;     /* [nframes] */
    int64_t ignored;
    int utf8;
    char series_uid[MP_DICOM_UID_SIZE], sop_uid[MP_DICOM_UID_SIZE], dim_uid[MP_DICOM_UID_SIZE];
    char date[9], time[7];
    const char *content_date, *content_time;
} seg_ctx_t;

static void seg_ctx_free(seg_ctx_t *c) {
    mp_vol_free(c->lab);
    free(c->segs);
    free(c->names);
    free(c->seg_of);
    free(c->present);
    free(c->frame_seg);
    free(c->frame_slice);
}

/* ---- checks of the label volume against the source ---- */
static int check_source(const seg_ctx_t *c) {
    const mp_dicom_source_t *s = c->src;
    if (s->nslices != c->nz)
        return mp_error_set(MP_ERR_MISMATCH, "label volume has %lld slices, source series %lld", (long long)c->nz,
                            (long long)s->nslices);
    if ((s->rows && s->rows != c->ny) || (s->cols && s->cols != c->nx))
        return mp_error_set(MP_ERR_MISMATCH, "label slices are %lldx%lld, source images %dx%d (columns x rows)",
                            (long long)c->nx, (long long)c->ny, s->cols, s->rows);
    const char *uids[3] = {s->study_uid, s->series_uid, s->frame_of_reference_uid};
    const char *what[3] = {"StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"};
    for (int i = 0; i < 3; i++)
        if (!mp_dicom_uid_is_valid(uids[i]))
            return mp_error_set(MP_ERR_ARG, "source %s '%s' is not a valid UID", what[i], uids[i]);
    for (int64_t k = 0; k < s->nslices; k++)
        if (!mp_dicom_uid_is_valid(s->sop_class_uid[k]) || !mp_dicom_uid_is_valid(s->sop_instance_uid[k]))
            return mp_error_set(MP_ERR_ARG, "source slice %lld: SOP class '%s' / instance '%s' is not a valid UID",
                                (long long)k, s->sop_class_uid[k], s->sop_instance_uid[k]);
    if (!s->has_positions) return MP_OK;
    for (int64_t k = 0; k < s->nslices; k++) {
        double ipp[3];
        mp_dcmw_geom_ipp(&c->geom, k, ipp);
        double d = fabs(ipp[0] - s->position[k][0]) + fabs(ipp[1] - s->position[k][1]) + fabs(ipp[2] - s->position[k][2]);
        if (!(d <= 0.01))
            return mp_error_set(MP_ERR_MISMATCH, "slice %lld of the label volume is at (%g, %g, %g) LPS, its source image "
                                "at (%g, %g, %g): not the source grid", (long long)k, ipp[0], ipp[1], ipp[2],
                                s->position[k][0], s->position[k][1], s->position[k][2]);
    }
    return MP_OK;
}

static int load_labels(seg_ctx_t *c, const mp_vol_t *labels) {
    int64_t clamped = 0;
    int rc = mp_vol_convert(&c->lab, labels, MP_DTYPE_I32, 1, &clamped);
    if (rc) return rc;
    const int32_t *l = c->lab->data;
    for (int64_t i = 0; i < c->npix * c->nz; i++)
        if (l[i] < 0 || (mp_dtype_is_float(labels->dtype) && mp_vol_get(labels, i) != floor(mp_vol_get(labels, i))))
            return mp_error_set(MP_ERR_ARG, "label volume voxel %lld holds %g: labels must be integers >= 0",
                                (long long)i, mp_vol_get(labels, i));
    if (clamped) return mp_error_set(MP_ERR_ARG, "label volume: %lld labels out of the int32 range", (long long)clamped);
    return MP_OK;
}

/* ---- segments ---- */
static const uint8_t palette[][3] = {{221, 130, 101}, {144, 238, 144}, {111, 184, 210}, {241, 214, 145},
                                     {183, 156, 220}, {216, 101, 79},  {128, 174, 128}, {250, 250, 225},
                                     {230, 158, 140}, {0, 151, 206},   {188, 65, 28},   {255, 244, 209}};

static double srgb_linear(double c) { return c <= 0.04045 ? c / 12.92 : pow((c + 0.055) / 1.055, 2.4); }
static double lab_f(double t) { return t > 216.0 / 24389.0 ? cbrt(t) : t * 841.0 / 108.0 + 4.0 / 29.0; }

/* sRGB to CIELab (D65) scaled to 0..65535 as RecommendedDisplayCIELabValue wants. */
static void rgb_to_dicom_lab(const uint8_t rgb[3], uint16_t out[3]) {
    double r = srgb_linear(rgb[0] / 255.0), g = srgb_linear(rgb[1] / 255.0), b = srgb_linear(rgb[2] / 255.0);
    double x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    double y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    double z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    double L = 116 * lab_f(y) - 16, A = 500 * (lab_f(x) - lab_f(y)), B = 200 * (lab_f(y) - lab_f(z));
    double v[3] = {L / 100.0, (A + 128) / 255.0, (B + 128) / 255.0};
    for (int i = 0; i < 3; i++) out[i] = (uint16_t)nearbyint(65535 * fmin(1.0, fmax(0.0, v[i])));
}

static int alloc_segments(seg_ctx_t *c, int n) {
    c->nseg = n;
    c->segs = calloc((size_t)(n ? n : 1), sizeof *c->segs);
    c->names = calloc((size_t)(n ? n : 1), sizeof *c->names);
    if (!c->segs || !c->names) return mp_error_set(MP_ERR_NOMEM, "out of memory for %d segments", n);
    return MP_OK;
}

static int resolve_segments(seg_ctx_t *c) {
    const mp_dicom_seg_opts_t *o = c->o;
    const int32_t *l = c->lab->data;
    int64_t n = c->npix * c->nz;
    c->seg_of = malloc((MAX_LABEL + 1) * sizeof *c->seg_of);
    if (!c->seg_of) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int i = 0; i <= MAX_LABEL; i++) c->seg_of[i] = -1;
    int rc;
    if (o->nsegments > 0) {
        if (o->nsegments > MAX_LABEL) return mp_error_set(MP_ERR_ARG, "%d segments (at most 65535)", o->nsegments);
        if ((rc = alloc_segments(c, o->nsegments))) return rc;
        for (int s = 0; s < o->nsegments; s++) {
            int lv = o->segments[s].label;
            if (lv < 1 || lv > MAX_LABEL || c->seg_of[lv] >= 0)
                return mp_error_set(MP_ERR_ARG, "segment %d: label %d is out of 1..65535 or listed twice", s + 1, lv);
            c->segs[s] = o->segments[s];
            c->seg_of[lv] = s;
        }
    } else {
        uint8_t *seen = calloc(MAX_LABEL + 1, 1);
        if (!seen) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        int count = 0;
        for (int64_t i = 0; i < n; i++)
            if (l[i] > 0 && l[i] <= MAX_LABEL && !seen[l[i]]) seen[l[i]] = 1, count++;
        rc = count ? alloc_segments(c, count)
                   : mp_error_set(MP_ERR_ARG, "label volume has no label > 0 and no segments were listed");
        for (int lv = 1, s = 0; !rc && lv <= MAX_LABEL; lv++)
            if (seen[lv]) c->segs[s].label = lv, c->seg_of[lv] = s++;
        free(seen);
        if (rc) return rc;
    }
    for (int s = 0; s < c->nseg; s++) {
        mp_dicom_segment_t *g = &c->segs[s];
        if (!g->name) {
            snprintf(c->names[s], sizeof c->names[s], "Segment %d", g->label);
            g->name = c->names[s];
        }
        if (!g->category.value) g->category = (mp_dicom_code_t){"123037004", "SCT", "Anatomical Structure"};
        if (!g->type.value) g->type = (mp_dicom_code_t){"85756007", "SCT", "Tissue"};
        if (!g->has_color) memcpy(g->rgb, palette[s % (sizeof palette / sizeof palette[0])], 3);
        const char *t[] = {g->name, g->description, g->category.meaning, g->type.meaning};
        for (int i = 0; i < 4; i++) c->utf8 |= mp_dcmw_is_non_ascii(t[i]);
    }
    return MP_OK;
}

/* Which (segment, slice) pairs hold voxels, then the frame list: by segment,
 * then by slice. */
static int plan_frames(seg_ctx_t *c) {
    const int32_t *l = c->lab->data;
    uint64_t cells;
    if (mp_mul_u64((uint64_t)c->nseg, (uint64_t)c->nz, &cells) || cells > mp_mem_limit() / 16)
        return mp_error_set(MP_ERR_LIMIT, "%d segments x %lld slices is too many frames", c->nseg, (long long)c->nz);
    c->present = calloc((size_t)cells, 1);
    c->frame_seg = malloc((size_t)(cells ? cells : 1) * sizeof *c->frame_seg);
    c->frame_slice = malloc((size_t)(cells ? cells : 1) * sizeof *c->frame_slice);
    if (!c->present || !c->frame_seg || !c->frame_slice) return mp_error_set(MP_ERR_NOMEM, "out of memory for frames");
    for (int64_t k = 0; k < c->nz; k++)
        for (int64_t p = 0; p < c->npix; p++) {
            int32_t v = l[k * c->npix + p];
            if (v == 0) continue;
            int s = v <= MAX_LABEL ? c->seg_of[v] : -1;
            if (s < 0) c->ignored++;
            else c->present[(int64_t)s * c->nz + k] = 1;
        }
    for (int s = 0; s < c->nseg; s++)
        for (int64_t k = 0; k < c->nz; k++)
            if (c->present[(int64_t)s * c->nz + k] || c->o->include_empty_frames) {
                c->frame_seg[c->nframes] = s;
                c->frame_slice[c->nframes++] = k;
            }
    if (c->nframes == 0) { /* every segment empty: one blank frame keeps the object valid */
        c->frame_seg[0] = 0;
        c->frame_slice[0] = 0;
        c->nframes = 1;
    }
    if (c->ignored)
        mp_log(MP_LOG_WARN, "DICOM SEG: %lld voxels carry labels no segment lists; they are left out",
               (long long)c->ignored);
    return MP_OK;
}

/* 1-bit pixels, first pixel in the least significant bit, frames following
 * each other without padding to a byte boundary (PS3.5 8.1.1). */
static int pack_frames(const seg_ctx_t *c, uint8_t **out, size_t *out_len) {
    uint64_t bits;
    if (mp_mul_u64((uint64_t)c->nframes, (uint64_t)c->npix, &bits) || bits / 8 + 2 > mp_mem_limit() ||
        bits / 8 + 2 >= 0xFFFFFFFEu)
        return mp_error_set(MP_ERR_LIMIT, "SEG pixel data of %lld frames of %lld pixels is too large",
                            (long long)c->nframes, (long long)c->npix);
    size_t len = (size_t)((bits + 7) / 8);
    uint8_t *p = calloc(len + 1, 1);
    if (!p) return mp_error_set(MP_ERR_NOMEM, "out of memory for %zu bytes of SEG pixel data", len);
    const int32_t *l = c->lab->data;
    for (int64_t f = 0; f < c->nframes; f++) {
        int32_t want = c->segs[c->frame_seg[f]].label;
        const int32_t *slice = l + c->frame_slice[f] * c->npix;
        uint64_t bit = (uint64_t)f * (uint64_t)c->npix;
        for (int64_t i = 0; i < c->npix; i++, bit++)
            if (slice[i] == want) p[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    }
    *out = p;
    *out_len = len;
    return MP_OK;
}

/* ---- the data set ---- */
static void put_header(mp_dcmw_buf_t *b, const seg_ctx_t *c) {
    const mp_dicom_source_t *s = c->src;
    const mp_dicom_seg_opts_t *o = c->o;
    mp_dcmw_charset(b, c->utf8);
    mp_dcmw_str(b, T(0008, 0008), "CS", "DERIVED\\PRIMARY");
    mp_dcmw_str(b, T(0008, 0016), "UI", SEG_STORAGE);
    mp_dcmw_str(b, T(0008, 0018), "UI", c->sop_uid);
    mp_dcmw_str(b, T(0008, 0020), "DA", s->study_date);
    mp_dcmw_str(b, T(0008, 0021), "DA", c->content_date);
    mp_dcmw_str(b, T(0008, 0023), "DA", c->content_date);
    mp_dcmw_str(b, T(0008, 0030), "TM", s->study_time);
    mp_dcmw_str(b, T(0008, 0031), "TM", c->content_time);
    mp_dcmw_str(b, T(0008, 0033), "TM", c->content_time);
    mp_dcmw_str(b, T(0008, 0050), "SH", s->accession_number);
    mp_dcmw_str(b, T(0008, 0060), "CS", "SEG");
    mp_dcmw_str(b, T(0008, 0070), "LO", o->manufacturer);
    mp_dcmw_str(b, T(0008, 0090), "PN", s->referring_physician);
    if (s->study_description[0]) mp_dcmw_str(b, T(0008, 1030), "LO", s->study_description);
    if (o->series_description && *o->series_description) mp_dcmw_str(b, T(0008, 103E), "LO", o->series_description);
    mp_dcmw_str(b, T(0008, 1090), "LO", o->model_name);
    /* Common Instance Reference: the source series and all its instances. */
    mp_dcmw_seq_begin(b, T(0008, 1115));
    mp_dcmw_item_begin(b);
    mp_dcmw_seq_begin(b, T(0008, 114A));
    for (int64_t k = 0; k < s->nslices; k++) {
        mp_dcmw_item_begin(b);
        mp_dcmw_str(b, T(0008, 1150), "UI", s->sop_class_uid[k]);
        mp_dcmw_str(b, T(0008, 1155), "UI", s->sop_instance_uid[k]);
        mp_dcmw_item_end(b);
    }
    mp_dcmw_seq_end(b);
    mp_dcmw_str(b, T(0020, 000E), "UI", s->series_uid);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_str(b, T(0010, 0010), "PN", s->patient_name);
    mp_dcmw_str(b, T(0010, 0020), "LO", s->patient_id);
    mp_dcmw_str(b, T(0010, 0030), "DA", s->patient_birth_date);
    mp_dcmw_str(b, T(0010, 0040), "CS", s->patient_sex);
    mp_dcmw_str(b, T(0018, 1000), "LO", o->device_serial);
    mp_dcmw_str(b, T(0018, 1020), "LO", o->software_versions);
}

static void put_dimensions(mp_dcmw_buf_t *b, const seg_ctx_t *c) {
    const mp_dicom_source_t *s = c->src;
    mp_dcmw_str(b, T(0020, 000D), "UI", s->study_uid);
    mp_dcmw_str(b, T(0020, 000E), "UI", c->series_uid);
    mp_dcmw_str(b, T(0020, 0010), "SH", s->study_id);
    mp_dcmw_is(b, T(0020, 0011), c->o->series_number);
    mp_dcmw_is(b, T(0020, 0013), 1);
    mp_dcmw_str(b, T(0020, 0052), "UI", s->frame_of_reference_uid);
    mp_dcmw_str(b, T(0020, 1040), "LO", "");
    mp_dcmw_seq_begin(b, T(0020, 9221));
    mp_dcmw_item_begin(b);
    mp_dcmw_str(b, T(0020, 9164), "UI", c->dim_uid);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    /* Dimensions: referenced segment number, then image position. */
    static const uint32_t index_ptr[2] = {MP_DCMW_TAG(0x0062, 0x000B), MP_DCMW_TAG(0x0020, 0x0032)};
    static const uint32_t group_ptr[2] = {MP_DCMW_TAG(0x0062, 0x000A), MP_DCMW_TAG(0x0020, 0x9113)};
    static const char *const label[2] = {"ReferencedSegmentNumber", "ImagePositionPatient"};
    mp_dcmw_seq_begin(b, T(0020, 9222));
    for (int i = 0; i < 2; i++) {
        mp_dcmw_item_begin(b);
        mp_dcmw_str(b, T(0020, 9164), "UI", c->dim_uid);
        mp_dcmw_at(b, T(0020, 9165), &index_ptr[i], 1);
        mp_dcmw_at(b, T(0020, 9167), &group_ptr[i], 1);
        mp_dcmw_str(b, T(0020, 9421), "LO", label[i]);
        mp_dcmw_item_end(b);
    }
    mp_dcmw_seq_end(b);
    mp_dcmw_str(b, T(0020, 9311), "CS", "3D");
}

static void put_segment(mp_dcmw_buf_t *b, const seg_ctx_t *c, int s) {
    const mp_dicom_segment_t *g = &c->segs[s];
    const char *atype = c->o->algorithm_type ? c->o->algorithm_type : "AUTOMATIC";
    uint16_t num = (uint16_t)(s + 1), lab[3];
    rgb_to_dicom_lab(g->rgb, lab);
    mp_dcmw_item_begin(b);
    mp_dcmw_code_seq(b, T(0062, 0003), g->category.value, g->category.scheme, g->category.meaning);
    mp_dcmw_us(b, T(0062, 0004), &num, 1);
    mp_dcmw_str(b, T(0062, 0005), "LO", g->name);
    if (g->description) mp_dcmw_str(b, T(0062, 0006), "ST", g->description);
    mp_dcmw_str(b, T(0062, 0008), "CS", atype);
    if (strcmp(atype, "MANUAL") != 0) mp_dcmw_str(b, T(0062, 0009), "LO", c->o->algorithm_name);
    mp_dcmw_us(b, T(0062, 000D), lab, 3);
    mp_dcmw_code_seq(b, T(0062, 000F), g->type.value, g->type.scheme, g->type.meaning);
    mp_dcmw_item_end(b);
}

static void put_image(mp_dcmw_buf_t *b, const seg_ctx_t *c) {
    uint16_t one = 1, zero = 0, rows = (uint16_t)c->ny, cols = (uint16_t)c->nx;
    mp_dcmw_us(b, T(0028, 0002), &one, 1);
    mp_dcmw_str(b, T(0028, 0004), "CS", "MONOCHROME2");
    mp_dcmw_is(b, T(0028, 0008), c->nframes);
    mp_dcmw_us(b, T(0028, 0010), &rows, 1);
    mp_dcmw_us(b, T(0028, 0011), &cols, 1);
    mp_dcmw_us(b, T(0028, 0100), &one, 1);
    mp_dcmw_us(b, T(0028, 0101), &one, 1);
    mp_dcmw_us(b, T(0028, 0102), &zero, 1);
    mp_dcmw_us(b, T(0028, 0103), &zero, 1);
    mp_dcmw_str(b, T(0028, 2110), "CS", "00");
    mp_dcmw_str(b, T(0062, 0001), "CS", "BINARY");
    mp_dcmw_seq_begin(b, T(0062, 0002));
    for (int s = 0; s < c->nseg; s++) put_segment(b, c, s);
    mp_dcmw_seq_end(b);
    mp_dcmw_str(b, T(0062, 0013), "CS", "NO"); /* one label per voxel: segments cannot overlap */
    mp_dcmw_str(b, T(0070, 0080), "CS", c->o->content_label);
    mp_dcmw_str(b, T(0070, 0081), "LO", c->o->content_description);
    mp_dcmw_str(b, T(0070, 0084), "PN", c->o->content_creator);
}

static void put_shared_groups(mp_dcmw_buf_t *b, const seg_ctx_t *c) {
    double thick = c->geom.slice_spacing;
    mp_dcmw_seq_begin(b, T(5200, 9229));
    mp_dcmw_item_begin(b);
    mp_dcmw_seq_begin(b, T(0020, 9116));
    mp_dcmw_item_begin(b);
    mp_dcmw_ds(b, T(0020, 0037), c->geom.iop, 6);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_seq_begin(b, T(0028, 9110));
    mp_dcmw_item_begin(b);
    mp_dcmw_ds(b, T(0018, 0050), &thick, 1);
    mp_dcmw_ds(b, T(0018, 0088), &thick, 1);
    mp_dcmw_ds(b, T(0028, 0030), c->geom.pixel_spacing, 2);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
}

static void put_frame(mp_dcmw_buf_t *b, const seg_ctx_t *c, int64_t f) {
    int64_t k = c->frame_slice[f];
    uint16_t segnum = (uint16_t)(c->frame_seg[f] + 1);
    uint32_t dim[2] = {segnum, (uint32_t)(c->geom.ascending ? k + 1 : c->nz - k)};
    double ipp[3];
    mp_dcmw_geom_ipp(&c->geom, k, ipp);
    mp_dcmw_item_begin(b);
    mp_dcmw_seq_begin(b, T(0008, 9124));
    mp_dcmw_item_begin(b);
    mp_dcmw_seq_begin(b, T(0008, 2112));
    mp_dcmw_item_begin(b);
    mp_dcmw_str(b, T(0008, 1150), "UI", c->src->sop_class_uid[k]);
    mp_dcmw_str(b, T(0008, 1155), "UI", c->src->sop_instance_uid[k]);
    mp_dcmw_code_seq(b, T(0040, A170), "121322", "DCM", "Source image for image processing operation");
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_code_seq(b, T(0008, 9215), "113076", "DCM", "Segmentation");
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_seq_begin(b, T(0020, 9111));
    mp_dcmw_item_begin(b);
    mp_dcmw_ul(b, T(0020, 9157), dim, 2);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_seq_begin(b, T(0020, 9113));
    mp_dcmw_item_begin(b);
    mp_dcmw_ds(b, T(0020, 0032), ipp, 3);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_seq_begin(b, T(0062, 000A));
    mp_dcmw_item_begin(b);
    mp_dcmw_us(b, T(0062, 000B), &segnum, 1);
    mp_dcmw_item_end(b);
    mp_dcmw_seq_end(b);
    mp_dcmw_item_end(b);
}

static int write_object(const char *path, const seg_ctx_t *c) {
    uint8_t *pixels = NULL;
    size_t plen = 0;
    int rc = pack_frames(c, &pixels, &plen);
    if (rc) return rc;
    mp_dcmw_buf_t b;
    mp_dcmw_buf_init(&b);
    put_header(&b, c);
    put_dimensions(&b, c);
    put_image(&b, c);
    put_shared_groups(&b, c);
    mp_dcmw_seq_begin(&b, T(5200, 9230));
    for (int64_t f = 0; f < c->nframes; f++) put_frame(&b, c, f);
    mp_dcmw_seq_end(&b);
    mp_dcmw_bytes(&b, T(7FE0, 0010), "OB", pixels, plen);
    free(pixels);
    rc = b.err ? b.err : mp_dcmw_write_file(path, SEG_STORAGE, c->sop_uid, &b);
    mp_dcmw_buf_deinit(&b);
    return rc;
}

static int check_args(seg_ctx_t *c, const mp_vol_t *labels) {
    if (!labels || !labels->data || !c->src) return mp_error_set(MP_ERR_ARG, "no label volume or source description");
    if (labels->dim[3] > 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "label volume has %lld channels", (long long)labels->dim[3]);
    if (c->nx > 65535 || c->ny > 65535)
        return mp_error_set(MP_ERR_ARG, "slice of %lldx%lld does not fit Rows/Columns", (long long)c->nx,
                            (long long)c->ny);
    const mp_dicom_seg_opts_t *o = c->o;
    const char *uids[2] = {o->series_uid, o->sop_instance_uid};
    for (int i = 0; i < 2; i++)
        if (uids[i] && !mp_dicom_uid_is_valid(uids[i]))
            return mp_error_set(MP_ERR_ARG, "'%s' is not a valid UID", uids[i]);
    const mp_dicom_source_t *s = c->src;
    const char *texts[] = {s->patient_name, s->patient_id, s->study_id, s->accession_number, s->referring_physician,
                           s->study_description, o->content_description, o->content_creator, o->series_description,
                           o->algorithm_name, o->manufacturer, o->model_name, o->device_serial, o->software_versions};
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

int mp_dicom_write_seg(const char *path, const mp_vol_t *labels, const mp_dicom_source_t *source,
                       const mp_dicom_seg_opts_t *opts, mp_dicom_seg_info_t *info) {
    mp_dicom_seg_opts_t defaults;
    if (!opts) {
        mp_dicom_seg_opts_init(&defaults);
        opts = &defaults;
    }
    if (info) memset(info, 0, sizeof *info);
    seg_ctx_t c;
    memset(&c, 0, sizeof c);
    c.o = opts;
    c.src = source;
    if (labels) {
        c.nx = labels->dim[0];
        c.ny = labels->dim[1];
        c.nz = labels->dim[2];
        c.npix = c.nx * c.ny;
    }
    int rc = check_args(&c, labels);
    if (!rc) rc = mp_dcmw_geom_init(&c.geom, labels);
    if (!rc) rc = check_source(&c);
    if (!rc) rc = load_labels(&c, labels);
    if (!rc) rc = resolve_segments(&c);
    if (!rc) rc = plan_frames(&c);
    if (!rc) rc = make_uid(c.series_uid, opts->series_uid, opts->uid_rng);
    if (!rc) rc = make_uid(c.sop_uid, opts->sop_instance_uid, opts->uid_rng);
    if (!rc) rc = mp_dicom_uid_make(c.dim_uid, opts->uid_rng);
    if (!rc) {
        mp_dcmw_now(c.date, c.time);
        c.content_date = opts->content_date ? opts->content_date : c.date;
        c.content_time = opts->content_time ? opts->content_time : c.time;
        rc = write_object(path, &c);
    }
    if (!rc && info) {
        info->segments = c.nseg;
        info->frames = c.nframes;
        info->ignored_voxels = c.ignored;
    }
    seg_ctx_free(&c);
    if (rc && strncmp(mp_error_message(), path, strlen(path)) != 0) mp_error_wrap(rc, "%s: ", path);
    return rc;
}
