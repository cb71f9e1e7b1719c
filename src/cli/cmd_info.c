/* medpipe info: dims, spacing, orientation, data type, scaling, intensity
 * range, affine and xform codes of an image, as text or JSON (--json). For
 * DICOM (a file, folder or DICOMDIR) the series found by a header scan (no
 * pixel data is decoded), and for a single file its key tags. */
#include "cli/cli.h"
#include "medpipe/dicom_source.h"
#include "medpipe/medpipe.h"
#include "medpipe/nifti.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f, "usage: medpipe info FILE|FOLDER|DICOMDIR [--json] [--mem-limit SIZE]\n\n"
               "Prints dims, spacing, orientation code, data type, scl_slope/scl_inter, the range\n"
               "(min/max/mean/sum of real values, i.e. with scaling applied), the voxel-to-world\n"
               "affine (RAS+ mm) and the qform/sform codes of a .nii, .nii.gz or .hdr/.img image.\n\n"
               "For DICOM (a file, a folder searched recursively, or a DICOMDIR; recognised by\n"
               "name or content) it lists the image series found: number, description, modality,\n"
               "UID, slices, volume dims, spacing, orientation code and problems (missing slices,\n"
               "non-uniform spacing, gantry tilt, ...), from the headers alone; for a single file\n"
               "also its key tags (UIDs, SOP class, transfer syntax, pixel format, rescale,\n"
               "position, orientation, pixel spacing).\n\n"
               "  --json            machine-readable output (one JSON object)\n"
               "  --mem-limit SIZE  refuse images larger than SIZE bytes (suffix K, M, G)\n");
}
typedef struct {
    double min, max, mean, sum;
    int64_t nan_count, count;
} stats_t;

static void compute_stats(const mp_vol_t *v, stats_t *s) {
    double slope = v->scl_slope, inter = v->scl_inter;
    int64_t n = mp_vol_elems(v);
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    s->nan_count = 0;
    for (int64_t i = 0; i < n; i++) {
        double x = mp_vol_get(v, i) * slope + inter;
        if (x != x) {
            s->nan_count++;
            continue;
        }
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        sum += x;
    }
    s->count = n - s->nan_count;
    s->min = s->count ? lo : NAN;
    s->max = s->count ? hi : NAN;
    s->sum = sum;
    s->mean = s->count ? sum / (double)s->count : NAN;
}

static const char *format_name(const mp_nifti_header_t *h) {
    if (h->version < 0) return "other";
    return h->version == 2 ? "NIfTI-2" : h->version == 1 ? "NIfTI-1" : "Analyze 7.5";
}

static cJSON *json_doubles(const double *x, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(x[i]));
    return a;
}

static int print_json(const char *path, const mp_vol_t *v, const mp_nifti_header_t *h, const stats_t *s,
                      const char *orient) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", path);
    cJSON_AddStringToObject(o, "format", format_name(h));
    cJSON_AddStringToObject(o, "byte_order", h->big_endian ? "big" : "little");
    double dims[4] = {(double)v->dim[0], (double)v->dim[1], (double)v->dim[2], (double)v->dim[3]};
    cJSON_AddItemToObject(o, "dims", json_doubles(dims, 4));
    cJSON_AddNumberToObject(o, "ndim", (double)h->dim[0]);
    cJSON_AddItemToObject(o, "spacing", json_doubles(v->spacing, 3));
    cJSON_AddStringToObject(o, "orientation", orient);
    cJSON_AddStringToObject(o, "dtype", mp_dtype_name(v->dtype));
    cJSON_AddStringToObject(o, "nifti_datatype", mp_nifti_datatype_name(h->datatype));
    cJSON_AddNumberToObject(o, "nifti_datatype_code", h->datatype);
    cJSON_AddNumberToObject(o, "scl_slope", v->scl_slope);
    cJSON_AddNumberToObject(o, "scl_inter", v->scl_inter);
    cJSON_AddNumberToObject(o, "min", s->min);
    cJSON_AddNumberToObject(o, "max", s->max);
    cJSON_AddNumberToObject(o, "mean", s->mean);
    cJSON_AddNumberToObject(o, "sum", s->sum);
    cJSON_AddNumberToObject(o, "nan_count", (double)s->nan_count);
    cJSON *aff = cJSON_CreateArray();
    for (int r = 0; r < 4; r++) cJSON_AddItemToArray(aff, json_doubles(v->affine[r], 4));
    cJSON_AddItemToObject(o, "affine", aff);
    const mp_vol_meta_t *m = &v->meta;
    cJSON_AddNumberToObject(o, "qform_code", m->qform_code);
    cJSON_AddNumberToObject(o, "sform_code", m->sform_code);
    cJSON_AddStringToObject(o, "qform_name", mp_nifti_xform_name(m->qform_code));
    cJSON_AddStringToObject(o, "sform_name", mp_nifti_xform_name(m->sform_code));
    cJSON_AddStringToObject(o, "descrip", m->descrip);
    cJSON_AddStringToObject(o, "aux_file", m->aux_file);
    cJSON_AddNumberToObject(o, "intent_code", m->intent_code);
    cJSON_AddStringToObject(o, "intent_name", m->intent_name);
    cJSON_AddNumberToObject(o, "xyzt_units", m->xyzt_units);
    cJSON_AddNumberToObject(o, "toffset", m->toffset);
    cJSON_AddNumberToObject(o, "cal_min", m->cal_min);
    cJSON_AddNumberToObject(o, "cal_max", m->cal_max);
    cJSON_AddNumberToObject(o, "pixdim_t", m->pixdim_t);
    cJSON_AddNumberToObject(o, "slice_code", m->slice_code);
    cJSON_AddNumberToObject(o, "slice_start", m->slice_start);
    cJSON_AddNumberToObject(o, "slice_end", m->slice_end);
    cJSON_AddNumberToObject(o, "slice_duration", m->slice_duration);
    cJSON_AddNumberToObject(o, "dim_info", m->dim_info);
    cJSON_AddNumberToObject(o, "vox_offset", h->vox_offset);
    cJSON_AddBoolToObject(o, "has_extensions", h->has_extensions);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    printf("%s\n", text);
    cJSON_free(text);
    return MP_OK;
}

static void print_text(const char *path, const mp_vol_t *v, const mp_nifti_header_t *h, const stats_t *s,
                       const char *orient) {
    printf("file:         %s\n", path);
    printf("format:       %s, %s-endian\n", format_name(h), h->big_endian ? "big" : "little");
    printf("dims:         %lld x %lld x %lld", (long long)v->dim[0], (long long)v->dim[1], (long long)v->dim[2]);
    if (v->dim[3] > 1) printf(" x %lld channels", (long long)v->dim[3]);
    printf("\nspacing:      %g x %g x %g mm\n", v->spacing[0], v->spacing[1], v->spacing[2]);
    printf("orientation:  %s\n", orient);
    printf("datatype:     %s (NIfTI %s, code %d)\n", mp_dtype_name(v->dtype), mp_nifti_datatype_name(h->datatype),
           h->datatype);
    printf("scaling:      slope %.9g, inter %.9g\n", v->scl_slope, v->scl_inter);
    printf("range:        min %.9g, max %.9g, mean %.9g", s->min, s->max, s->mean);
    if (s->nan_count) printf(" (%lld NaN voxels)", (long long)s->nan_count);
    printf("\nqform_code:   %d (%s)\nsform_code:   %d (%s)\n", v->meta.qform_code,
           mp_nifti_xform_name(v->meta.qform_code), v->meta.sform_code, mp_nifti_xform_name(v->meta.sform_code));
    printf("affine:\n");
    for (int r = 0; r < 4; r++)
        printf("  [%12.6f %12.6f %12.6f %12.6f]\n", v->affine[r][0], v->affine[r][1], v->affine[r][2], v->affine[r][3]);
    if (v->meta.descrip[0]) printf("descrip:      %s\n", v->meta.descrip);
    if (v->meta.intent_code) printf("intent:       %d %s\n", v->meta.intent_code, v->meta.intent_name);
}

/* ---------------------------------------------------------------- DICOM */

#define TG(g, e) MP_DICOM_TAG(0x##g, 0x##e)

static const struct {
    unsigned flag;
    const char *name;
} series_flags[] = {
    {MP_DICOM_SERIES_MISSING, "missing-slices"},       {MP_DICOM_SERIES_NONUNIFORM, "non-uniform-spacing"},
    {MP_DICOM_SERIES_TILT, "gantry-tilt"},             {MP_DICOM_SERIES_DUPLICATES, "duplicate-positions"},
    {MP_DICOM_SERIES_SPLIT, "split-series"},           {MP_DICOM_SERIES_NO_GEOMETRY, "no-geometry"},
    {MP_DICOM_SERIES_MULTIFRAME, "multi-frame"},       {MP_DICOM_SERIES_RESCALE_VARIES, "rescale-varies"},
};

/* Voxel spacing as the volume will have it: the affine's column norms. */
static void series_spacing(const mp_dicom_series_t *s, double sp[3]) {
    for (int c = 0; c < 3; c++)
        sp[c] = sqrt(s->affine[0][c] * s->affine[0][c] + s->affine[1][c] * s->affine[1][c] +
                     s->affine[2][c] * s->affine[2][c]);
}

static const char *name_or(const char *uid, const char *dflt) {
    const char *n = mp_dicom_uid_name(uid);
    return n ? n : dflt;
}

static void print_series_text(const mp_dicom_series_t *s, int i, int n) {
    double sp[3];
    char orient[4];
    series_spacing(s, sp);
    mp_vol_orientation(s->affine, orient);
    printf("series %d of %d: ", i + 1, n);
    if (s->series_number >= 0) printf("number %lld", (long long)s->series_number);
    else printf("no number");
    if (s->part) printf(" (part %d)", s->part);
    printf(", '%s', %s\n", s->description, s->modality[0] ? s->modality : "?");
    printf("  uid:          %s\n", s->series_uid);
    printf("  slices:       %d images", s->count);
    if (s->nz != s->count) printf(", %d volume slices (%d filled)", s->nz, s->nz - s->count);
    printf("\n  dims:         %d x %d x %d", s->cols, s->rows, s->nz);
    if (s->samples > 1) printf(" x %d channels", s->samples);
    printf("\n  spacing:      %g x %g x %g mm\n", sp[0], sp[1], sp[2]);
    printf("  orientation:  %s\n", orient);
    printf("  pixels:       %d bits stored of %d, %s, %s\n", s->bits_stored, s->bits_allocated,
           s->is_signed ? "signed" : "unsigned", s->photometric);
    printf("  syntax:       %s\n", name_or(s->syntax, s->syntax));
    printf("  flags:        ");
    int any = 0;
    for (size_t k = 0; k < sizeof series_flags / sizeof series_flags[0]; k++)
        if (s->flags & series_flags[k].flag) printf("%s%s", any++ ? " " : "", series_flags[k].name);
    printf("%s\n", any ? "" : "-");
}

static cJSON *series_json(const mp_dicom_series_t *s) {
    cJSON *o = cJSON_CreateObject();
    double sp[3];
    char orient[4];
    series_spacing(s, sp);
    mp_vol_orientation(s->affine, orient);
    cJSON_AddNumberToObject(o, "number", (double)s->series_number);
    cJSON_AddNumberToObject(o, "part", s->part);
    cJSON_AddStringToObject(o, "description", s->description);
    cJSON_AddStringToObject(o, "modality", s->modality);
    cJSON_AddStringToObject(o, "series_uid", s->series_uid);
    cJSON_AddStringToObject(o, "study_uid", s->study_uid);
    cJSON_AddStringToObject(o, "frame_of_reference_uid", s->frame_of_ref_uid);
    cJSON_AddStringToObject(o, "patient_id", s->patient_id);
    cJSON_AddNumberToObject(o, "slices", s->count);
    double dims[4] = {s->cols, s->rows, s->nz, s->samples};
    cJSON_AddItemToObject(o, "dims", json_doubles(dims, 4));
    cJSON_AddItemToObject(o, "spacing", json_doubles(sp, 3));
    cJSON_AddNumberToObject(o, "slice_spacing", s->slice_spacing);
    cJSON_AddStringToObject(o, "orientation", orient);
    cJSON *aff = cJSON_CreateArray();
    for (int r = 0; r < 4; r++) cJSON_AddItemToArray(aff, json_doubles(s->affine[r], 4));
    cJSON_AddItemToObject(o, "affine", aff);
    cJSON_AddNumberToObject(o, "bits_allocated", s->bits_allocated);
    cJSON_AddNumberToObject(o, "bits_stored", s->bits_stored);
    cJSON_AddBoolToObject(o, "signed", s->is_signed);
    cJSON_AddStringToObject(o, "photometric", s->photometric);
    cJSON_AddStringToObject(o, "transfer_syntax", s->syntax);
    const char *tsn = mp_dicom_uid_name(s->syntax);
    if (tsn) cJSON_AddStringToObject(o, "transfer_syntax_name", tsn);
    else cJSON_AddNullToObject(o, "transfer_syntax_name");
    cJSON *fl = cJSON_CreateArray();
    for (size_t k = 0; k < sizeof series_flags / sizeof series_flags[0]; k++)
        if (s->flags & series_flags[k].flag) cJSON_AddItemToArray(fl, cJSON_CreateString(series_flags[k].name));
    cJSON_AddItemToObject(o, "flags", fl);
    return o;
}

/* The key tags of one file, each as (name, text); numbers keep the file's text. */
typedef struct {
    const char *key;
    uint32_t tag;
} key_tag_t;

static const key_tag_t key_tags[] = {
    {"patient_id", TG(0010, 0020)},          {"study_uid", TG(0020, 000D)},
    {"series_uid", TG(0020, 000E)},          {"sop_instance_uid", TG(0008, 0018)},
    {"sop_class_uid", TG(0008, 0016)},       {"modality", TG(0008, 0060)},
    {"series_number", TG(0020, 0011)},       {"series_description", TG(0008, 103E)},
    {"instance_number", TG(0020, 0013)},     {"rows", TG(0028, 0010)},
    {"columns", TG(0028, 0011)},             {"number_of_frames", TG(0028, 0008)},
    {"samples_per_pixel", TG(0028, 0002)},   {"bits_allocated", TG(0028, 0100)},
    {"bits_stored", TG(0028, 0101)},         {"high_bit", TG(0028, 0102)},
    {"pixel_representation", TG(0028, 0103)}, {"photometric", TG(0028, 0004)},
    {"rescale_slope", TG(0028, 1053)},       {"rescale_intercept", TG(0028, 1052)},
    {"rescale_type", TG(0028, 1054)},        {"image_position", TG(0020, 0032)},
    {"image_orientation", TG(0020, 0037)},   {"pixel_spacing", TG(0028, 0030)},
    {"slice_thickness", TG(0018, 0050)},     {"spacing_between_slices", TG(0018, 0088)},
};
#define N_KEY_TAGS (sizeof key_tags / sizeof key_tags[0])

/* Value of a key tag as text: strings as they are, binary integers (US/SS/
 * UL/SL) through the numeric getter; "" when absent. */
static void tag_text(const mp_dicom_ds_t *ds, uint32_t tag, char *buf, size_t cap) {
    buf[0] = 0;
    const mp_dicom_elem_t *e = mp_dicom_find(ds, tag);
    if (!e) return;
    int binary_int = (e->vr[0] == 'U' || e->vr[0] == 'S') && (e->vr[1] == 'S' || e->vr[1] == 'L');
    if (binary_int) {
        double v[3];
        int n = mp_dicom_get_f64s(ds, tag, v, 3);
        size_t o = 0;
        for (int i = 0; i < n && o < cap; i++) o += (size_t)snprintf(buf + o, cap - o, "%s%.17g", i ? "\\" : "", v[i]);
        mp_error_clear();
        return;
    }
    mp_dicom_get_str(ds, tag, buf, cap);
}

typedef struct {
    char v[N_KEY_TAGS][200];
    char syntax[68];
    int guessed, is_dicomdir;
} file_tags_t;

static int read_file_tags(const char *path, file_tags_t *t) {
    mp_dicom_file_t *f;
    memset(t, 0, sizeof *t);
    int rc = mp_dicom_file_read(&f, path, 0); /* whole file: a cut in the pixel data shows too */
    if (rc) return rc;
    const mp_dicom_ds_t *ds = mp_dicom_file_dataset(f);
    for (size_t i = 0; i < N_KEY_TAGS; i++) tag_text(ds, key_tags[i].tag, t->v[i], sizeof t->v[i]);
    if (!t->v[4][0]) tag_text(mp_dicom_file_meta(f), TG(0002, 0002), t->v[4], sizeof t->v[4]);
    snprintf(t->syntax, sizeof t->syntax, "%s", mp_dicom_file_syntax(f));
    t->guessed = mp_dicom_file_guessed(f);
    t->is_dicomdir = mp_dicom_find(ds, TG(0004, 1220)) != NULL || strcmp(t->v[4], "1.2.840.10008.1.3.10") == 0;
    mp_dicom_file_free(f);
    return MP_OK;
}

static void print_tags_text(const file_tags_t *t) {
    printf("encoding:     %s%s\n", name_or(t->syntax, t->syntax),
           t->guessed ? " (no preamble/meta group: guessed)" : "");
    printf("tags:\n  %-24s %s\n", "transfer_syntax", t->syntax);
    for (size_t i = 0; i < N_KEY_TAGS; i++) {
        if (!t->v[i][0]) continue;
        const char *n = i == 4 ? mp_dicom_uid_name(t->v[i]) : NULL;
        printf("  %-24s %s%s%s%s\n", key_tags[i].key, t->v[i], n ? " (" : "", n ? n : "", n ? ")" : "");
    }
}

static cJSON *tags_json(const file_tags_t *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "transfer_syntax", t->syntax);
    const char *n = mp_dicom_uid_name(t->syntax);
    if (n) cJSON_AddStringToObject(o, "transfer_syntax_name", n);
    else cJSON_AddNullToObject(o, "transfer_syntax_name");
    cJSON_AddBoolToObject(o, "guessed_encoding", t->guessed);
    for (size_t i = 0; i < N_KEY_TAGS; i++)
        if (t->v[i][0]) cJSON_AddStringToObject(o, key_tags[i].key, t->v[i]);
    n = mp_dicom_uid_name(t->v[4]);
    if (n) cJSON_AddStringToObject(o, "sop_class_name", n);
    return o;
}

static int info_dicom(const char *path, int json) {
    struct stat st;
    if (stat(path, &st) != 0) return mp_error_set(MP_ERR_IO, "%s: %s", path, strerror(errno));
    file_tags_t tags;
    int single = S_ISREG(st.st_mode), rc;
    if (single && (rc = read_file_tags(path, &tags))) return rc;
    if (single && tags.is_dicomdir) single = 0;
    const char *kind = S_ISDIR(st.st_mode) ? "folder" : single ? "file" : "DICOMDIR";
    mp_dicom_series_list_t *l = NULL;
    rc = mp_dicom_scan(&l, path);
    /* A single non-image file (structured report, RT structure set, a SEG
     * without a usable frame) still has tags worth showing. */
    if (rc && !(single && rc == MP_ERR_FORMAT)) return rc;
    char why[600] = "";
    if (rc) snprintf(why, sizeof why, "%s", mp_error_message());
    mp_error_clear();
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", path);
        cJSON_AddStringToObject(o, "format", "DICOM");
        cJSON_AddStringToObject(o, "kind", kind);
        cJSON_AddNumberToObject(o, "files_seen", l ? l->files_seen : 1);
        cJSON_AddNumberToObject(o, "files_skipped", l ? l->files_skipped : 1);
        if (single) cJSON_AddItemToObject(o, "tags", tags_json(&tags));
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; l && i < l->n; i++) cJSON_AddItemToArray(arr, series_json(&l->series[i]));
        cJSON_AddItemToObject(o, "series", arr);
        if (why[0]) cJSON_AddStringToObject(o, "no_image", why);
        char *text = cJSON_Print(o);
        cJSON_Delete(o);
        if (text) printf("%s\n", text);
        cJSON_free(text);
        mp_dicom_series_list_free(l);
        return text ? MP_OK : mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    printf("file:         %s\n", path);
    printf("format:       DICOM %s", kind);
    if (l) printf(", %d file%s looked at, %d skipped", l->files_seen, l->files_seen == 1 ? "" : "s", l->files_skipped);
    printf("\n");
    if (single) print_tags_text(&tags);
    if (why[0]) printf("no image:     %s\n", why);
    else printf("series:       %d\n", l->n);
    for (int i = 0; l && i < l->n; i++) print_series_text(&l->series[i], i, l->n);
    mp_dicom_series_list_free(l);
    return MP_OK;
}

int mp_cli_info(int argc, char **argv) {
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return MP_EXIT_OK;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--mem-limit") == 0) {
            uint64_t lim;
            if (i + 1 >= argc || mp_cli_parse_size(argv[++i], &lim))
                return mp_cli_usage_error("info", "--mem-limit needs a size such as 512M or 4G");
            mp_mem_set_limit(lim);
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return mp_cli_usage_error("info", "unknown option '%s'", argv[i]);
        } else if (!path) {
            path = argv[i];
        } else {
            return mp_cli_usage_error("info", "one FILE expected, got '%s' too", argv[i]);
        }
    }
    if (!path) return mp_cli_usage_error("info", "missing FILE");
    if (mp_image_format_detect(path) == MP_FORMAT_DICOM)
        return info_dicom(path, json) == MP_OK ? MP_EXIT_OK : mp_cli_fail("info");
    mp_vol_t *v = NULL;
    mp_nifti_header_t h;
    memset(&h, 0, sizeof h);
    int rc = mp_nifti_read(&v, path, &h);
    if (rc != MP_OK) return mp_cli_fail("info");
    stats_t s;
    compute_stats(v, &s);
    char orient[4];
    mp_vol_orientation(v->affine, orient);
    if (json) rc = print_json(path, v, &h, &s, orient);
    else print_text(path, v, &h, &s, orient);
    mp_vol_free(v);
    return rc ? mp_cli_fail("info") : MP_EXIT_OK;
}
