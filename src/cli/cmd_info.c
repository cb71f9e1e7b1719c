/* medpipe info: dims, spacing, orientation, data type, scaling, intensity
 * range, affine and xform codes of an image, as text or JSON (--json). */
#include "cli/cli.h"
#include "medpipe/medpipe.h"
#include "medpipe/nifti.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: medpipe info FILE [--json] [--mem-limit SIZE]\n\n"
               "Prints dims, spacing, orientation code, data type, scl_slope/scl_inter, the range\n"
               "(min/max/mean/sum of real values, i.e. with scaling applied), the voxel-to-world\n"
               "affine (RAS+ mm) and the qform/sform codes of a .nii, .nii.gz or .hdr/.img image.\n\n"
               "  --json            machine-readable output (one JSON object)\n"
               "  --mem-limit SIZE  refuse images larger than SIZE bytes (suffix K, M, G)\n");
}

/* "512M" -> bytes; 0 on success. Shared with convert until the lead
 * generalises the option. */
static int parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1048576.0; end++; break;
    case 'G': mul = 1073741824.0; end++; break;
    case 'T': mul = 1099511627776.0; end++; break;
    default: break;
    }
    if (toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end || v * mul > 1.8e19) return -1;
    *out = (uint64_t)(v * mul);
    return 0;
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
            if (i + 1 >= argc || parse_size(argv[++i], &lim))
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
    mp_vol_t *v = NULL;
    mp_nifti_header_t h;
    memset(&h, 0, sizeof h);
    h.version = -1; /* not NIfTI: only what the volume says */
    int rc = mp_image_format_from_name(path) == MP_FORMAT_DICOM ? mp_image_read(&v, path) : mp_nifti_read(&v, path, &h);
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
