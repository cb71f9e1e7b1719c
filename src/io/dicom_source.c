/* From a scanned DICOM series to the source description the SEG writer
 * needs (include/medpipe/dicom_source.h): per volume slice the SOP class,
 * SOP instance and position of its image, in the z order of the volume that
 * mp_dicom_series_read builds; patient, study and Frame of Reference from the
 * first image, with text made valid for the writer's strict encoder (which
 * writes UTF-8 only). Also names of well-known UIDs for reports. */
#include "io/codec.h"
#include "io/dicom_priv.h"
#include "medpipe/dicom_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T(g, e) MP_DICOM_TAG(0x##g, 0x##e)

/* ---------------------------------------------------------------- text */

typedef enum { CS_ASCII, CS_LATIN1, CS_UTF8, CS_OTHER } charset_t;

static charset_t charset_of(const mp_dicom_ds_t *ds) {
    char v[128];
    mp_dicom_get_str(ds, T(0008, 0005), v, sizeof v);
    if (!v[0] || strcmp(v, "ISO_IR 6") == 0) return CS_ASCII;
    if (strcmp(v, "ISO_IR 100") == 0 || strcmp(v, "ISO 2022 IR 100") == 0) return CS_LATIN1;
    if (strcmp(v, "ISO_IR 192") == 0) return CS_UTF8;
    return CS_OTHER;
}

/* Length of a valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    size_t k = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (!k || k > n) return 0;
    for (size_t j = 1; j < k; j++)
        if ((s[j] >> 6) != 2) return 0;
    return k;
}

typedef struct {
    char *dst;
    size_t cap, len;
    int chars;      /* characters in the current value */
    int max_chars;  /* per value (between backslashes; for PN per component group) */
} out_t;

/* Appends one character of `n` UTF-8 bytes unless its value is full. */
static void put_char(out_t *o, const char *c, size_t n) {
    if (o->chars >= o->max_chars || o->len + n + 1 > o->cap) return;
    memcpy(o->dst + o->len, c, n);
    o->len += n;
    o->chars++;
}

/* Copies DICOM text `raw` of character set `cs` into dst as UTF-8 with no
 * control characters and at most max_chars characters per value. */
static void clean_text(char *dst, size_t cap, const char *raw, charset_t cs, int max_chars, int is_pn) {
    out_t o = {dst, cap, 0, 0, max_chars};
    const unsigned char *s = (const unsigned char *)raw;
    size_t n = strlen(raw);
    int groups = 1;
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        int sep = c == '\\' || (is_pn && c == '=');
        if (is_pn && c == '=' && (cs == CS_OTHER || ++groups > 3))
            break; /* other sets code ideographic/phonetic groups with escapes: keep the alphabetic one */
        if (sep) {
            o.chars = 0; /* a separator always fits: values are counted apart */
            if (o.len + 2 <= o.cap) o.dst[o.len++] = (char)c;
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            i++;
        } else if (c < 0x80) {
            put_char(&o, (const char *)s + i, 1);
            i++;
        } else if (cs == CS_LATIN1) {
            char u[2] = {(char)(0xC0 | (c >> 6)), (char)(0x80 | (c & 0x3F))};
            put_char(&o, u, 2);
            i++;
        } else if (cs == CS_UTF8 && utf8_seq(s + i, n - i)) {
            size_t k = utf8_seq(s + i, n - i);
            put_char(&o, (const char *)s + i, k);
            i += k;
        } else {
            put_char(&o, "?", 1);
            i++;
        }
    }
    while (o.len && dst[o.len - 1] == ' ') o.len--;
    dst[o.len] = 0;
}

static void get_text(const mp_dicom_ds_t *ds, uint32_t tag, char *dst, size_t cap, charset_t cs, int max_chars,
                     int is_pn) {
    char raw[1024];
    mp_dicom_get_str(ds, tag, raw, sizeof raw);
    clean_text(dst, cap, raw, cs, max_chars, is_pn);
}

/* DA: YYYYMMDD (the old YYYY.MM.DD loses its dots), else empty. */
static void get_date(const mp_dicom_ds_t *ds, uint32_t tag, char out[9]) {
    char raw[64], d[16];
    size_t n = 0;
    mp_dicom_get_str(ds, tag, raw, sizeof raw);
    for (const char *p = raw; *p && n < sizeof d - 1; p++) {
        if (*p >= '0' && *p <= '9') d[n++] = *p;
        else if (*p != '.') {
            n = 0;
            break;
        }
    }
    d[n] = 0;
    if (n == 8) memcpy(out, d, 9);
    else out[0] = 0;
}

/* TM: HH[MM[SS[.F{1,6}]]] (the old HH:MM:SS loses its colons), else empty. */
static void get_time(const mp_dicom_ds_t *ds, uint32_t tag, char out[17]) {
    char raw[64], t[32];
    size_t n = 0, frac = 0;
    int dot = 0, ok = 1;
    mp_dicom_get_str(ds, tag, raw, sizeof raw);
    for (const char *p = raw; *p && ok; p++) {
        if (*p == ':' && !dot) continue;
        if (*p == '.' && !dot && n == 6) {
            dot = 1;
            t[n++] = '.';
        } else if (*p >= '0' && *p <= '9' && (dot ? frac < 6 : n < 6)) {
            t[n++] = *p;
            frac += dot;
        } else if (!(*p >= '0' && *p <= '9' && dot)) {
            ok = 0; /* extra fraction digits are dropped, anything else spoils the value */
        }
    }
    if (dot && frac == 0) n--;
    t[n] = 0; /* at most 6 + 1 + 6 characters */
    size_t hms = dot ? 6 : n;
    if (ok && n && hms % 2 == 0) memcpy(out, t, n + 1);
    else out[0] = 0;
}

/* ---------------------------------------------------------------- source */

/* UIDs longer than 64 characters are refused rather than cut into another UID. */
static int copy_uid(char dst[MP_DICOM_UID_SIZE], const char *uid, const char *what, const char *path) {
    size_t n = strnlen(uid, 68);
    if (n >= MP_DICOM_UID_SIZE) return mp_error_set(MP_ERR_FORMAT, "%s: %s '%s' is longer than 64 characters", path, what, uid);
    memcpy(dst, uid, n + 1);
    return MP_OK;
}

static int fill_study(mp_dicom_source_t *src, const mp_dicom_series_t *s, const mp_dicom_ds_t *ds) {
    charset_t cs = charset_of(ds);
    get_text(ds, T(0010, 0010), src->patient_name, sizeof src->patient_name, cs, 64, 1);
    get_text(ds, T(0010, 0020), src->patient_id, sizeof src->patient_id, cs, 64, 0);
    get_date(ds, T(0010, 0030), src->patient_birth_date);
    char sex[16];
    mp_dicom_get_str(ds, T(0010, 0040), sex, sizeof sex);
    snprintf(src->patient_sex, sizeof src->patient_sex, "%s",
             strcmp(sex, "M") == 0 || strcmp(sex, "F") == 0 || strcmp(sex, "O") == 0 ? sex : "");
    get_date(ds, T(0008, 0020), src->study_date);
    get_time(ds, T(0008, 0030), src->study_time);
    get_text(ds, T(0020, 0010), src->study_id, sizeof src->study_id, cs, 16, 0);
    get_text(ds, T(0008, 0050), src->accession_number, sizeof src->accession_number, cs, 16, 0);
    get_text(ds, T(0008, 0090), src->referring_physician, sizeof src->referring_physician, cs, 64, 1);
    get_text(ds, T(0008, 1030), src->study_description, sizeof src->study_description, cs, 64, 0);
    const char *path = s->slices[0].path;
    int rc = copy_uid(src->study_uid, s->study_uid, "StudyInstanceUID", path);
    if (!rc) rc = copy_uid(src->series_uid, s->series_uid, "SeriesInstanceUID", path);
    if (!rc) rc = copy_uid(src->frame_of_reference_uid, s->frame_of_ref_uid, "FrameOfReferenceUID", path);
    return rc;
}

/* SOP class of slice i's image, after checking the file is still the one scanned. */
static int slice_header(mp_dicom_source_t *src, const mp_dicom_series_t *s, int i, int64_t z) {
    const mp_dicom_slice_t *sl = &s->slices[i];
    mp_dicom_file_t *f = NULL;
    int rc = mp_dcm_read_header(&f, sl->path);
    if (rc) return rc;
    const mp_dicom_ds_t *ds = mp_dicom_file_dataset(f);
    char sop[68] = "", cls[68] = "";
    mp_dicom_get_str(ds, T(0008, 0018), sop, sizeof sop);
    if (!mp_dicom_get_str(ds, T(0008, 0016), cls, sizeof cls))
        mp_dicom_get_str(mp_dicom_file_meta(f), T(0002, 0002), cls, sizeof cls);
    if (!sl->sop_uid[0] || strcmp(sop, sl->sop_uid) != 0)
        rc = mp_error_set(MP_ERR_MISMATCH, "%s: SOPInstanceUID '%s'%s", sl->path, sop,
                          sl->sop_uid[0] ? " differs from the scanned one (file changed?)" : ": none in the file");
    else if (!cls[0])
        rc = mp_error_set(MP_ERR_FORMAT, "%s: no SOPClassUID", sl->path);
    if (!rc) rc = copy_uid(src->sop_class_uid[z], cls, "SOPClassUID", sl->path);
    if (!rc) rc = copy_uid(src->sop_instance_uid[z], sl->sop_uid, "SOPInstanceUID", sl->path);
    if (!rc) memcpy(src->position[z], sl->ipp, sizeof src->position[z]);
    if (!rc && i == 0) rc = fill_study(src, s, ds);
    mp_dicom_file_free(f);
    return rc;
}

int mp_dicom_source_from_series(mp_dicom_source_t *src, const mp_dicom_series_t *s) {
    memset(src, 0, sizeof *src);
    if (!s || s->count < 1 || !s->slices || !s->z_of_slice)
        return mp_error_set(MP_ERR_ARG, "mp_dicom_source_from_series: empty series");
    char who[400];
    mp_dicom_series_describe(s, who, sizeof who);
    if (s->flags & MP_DICOM_SERIES_MULTIFRAME)
        return mp_error_set(MP_ERR_UNSUPPORTED, "series %s: frames of a multi-frame image cannot be referenced slice "
                            "by slice (the SEG writer refers to single-frame images)", who);
    if (s->nz != s->count)
        return mp_error_set(MP_ERR_UNSUPPORTED, "series %s: %d of %d volume slices have no image (missing slices); a "
                            "SEG can only refer to images that exist", who, s->nz - s->count, s->nz);
    int rc = mp_dicom_source_init(src, s->nz);
    if (rc) return rc;
    char *seen = calloc((size_t)s->nz, 1);
    if (!seen) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int i = 0; !rc && i < s->count; i++) {
        int z = s->z_of_slice[i];
        if (z < 0 || z >= s->nz || seen[z]) {
            rc = mp_error_set(MP_ERR_INTERNAL, "series %s: slice %d maps to volume slice %d twice or out of range", who,
                              i, z);
            break;
        }
        seen[z] = 1;
        rc = slice_header(src, s, i, z);
    }
    free(seen);
    if (rc) {
        mp_dicom_source_deinit(src);
        return rc;
    }
    src->rows = s->rows;
    src->cols = s->cols;
    src->has_positions = !(s->flags & MP_DICOM_SERIES_NO_GEOMETRY);
    return MP_OK;
}

/* ---------------------------------------------------------------- names */

static const struct {
    const char *uid, *name;
} sop_classes[] = {
    {"1.2.840.10008.1.3.10", "Media Storage Directory Storage"},
    {"1.2.840.10008.5.1.4.1.1.1", "Computed Radiography Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.1.1", "Digital X-Ray Image Storage - For Presentation"},
    {"1.2.840.10008.5.1.4.1.1.1.2", "Digital Mammography X-Ray Image Storage - For Presentation"},
    {"1.2.840.10008.5.1.4.1.1.2", "CT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.2.2", "Legacy Converted Enhanced CT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.3.1", "Ultrasound Multi-frame Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.4", "MR Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.4.4", "Legacy Converted Enhanced MR Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.2", "Multi-frame Grayscale Byte Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.3", "Multi-frame Grayscale Word Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.7.4", "Multi-frame True Color Secondary Capture Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.12.1", "X-Ray Angiographic Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.20", "Nuclear Medicine Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"},
    {"1.2.840.10008.5.1.4.1.1.128", "Positron Emission Tomography Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.130", "Enhanced PET Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.1", "RT Image Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage"},
    {"1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"},
};

const char *mp_dicom_uid_name(const char *uid) {
    if (!uid || !*uid) return NULL;
    for (size_t i = 0; i < sizeof sop_classes / sizeof sop_classes[0]; i++)
        if (strcmp(sop_classes[i].uid, uid) == 0) return sop_classes[i].name;
    const char *n = mp_codec_syntax_name(uid);
    return strncmp(n, "unknown", 7) == 0 || strncmp(n, "retired or unknown", 18) == 0 ? NULL : n;
}
