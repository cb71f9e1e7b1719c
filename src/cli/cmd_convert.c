/* medpipe convert: rewrites an image under another name/format (.nii,
 * .nii.gz, .hdr/.img), optionally to another data type; reads DICOM (a file,
 * folder or DICOMDIR: one series to OUT, several to one file per series in
 * the folder OUT); writes a DICOM series folder with --to-dicom. Without
 * --dtype the stored values and scl_slope/scl_inter are kept bit for bit;
 * with --dtype the real values (scaling applied) are converted, rounding and
 * clamping for integer types.
 *
 * Nothing partial is left behind: a single file appears atomically
 * (mp_afile); folders of outputs are written into a fresh temporary folder
 * that is removed on failure and renamed to OUT on success (for an existing
 * OUT folder, the finished files are renamed into it one by one). */
#include "cli/cli.h"
#include "medpipe/medpipe.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "convert"

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe convert IN OUT [--dtype T] [--nifti2] [--gzip-level N] [--mem-limit SIZE]\n"
            "       medpipe convert IN OUT_DIR --to-dicom [--modality CT|MR] [--patient-id ID]\n"
            "                       [--patient-name NAME] [--series-description TEXT] [--series-number N]\n\n"
            "Converts between .nii, .nii.gz and .hdr/.img (the names decide the formats),\n"
            "keeping voxel values and geometry (affine, xform codes, header fields).\n\n"
            "IN may be DICOM: a file, a folder (searched recursively) or a DICOMDIR, recognised\n"
            "by name or content. With one image series, OUT is the output image (.nii/.nii.gz);\n"
            "OUT without such an extension is a folder (created) that receives one file per\n"
            "series, named <SeriesNumber>_<SeriesDescription>.nii.gz (characters other than\n"
            "letters, digits, '-' and '+' become '_'; the modality stands in for an empty\n"
            "description, NA for a missing number, _partK for the parts of a split series, _2,\n"
            "_3... make names unique). Slices are ordered along the slice normal; CT values\n"
            "are kept as stored integers with RescaleSlope/Intercept as scl_slope/scl_inter.\n\n"
            "--to-dicom writes IN (any readable image, one channel) as a DICOM series: one CT\n"
            "or MR Image Storage file per slice (explicit VR little endian, 16-bit pixels,\n"
            "new UIDs) in the folder OUT_DIR, which must not exist or be empty.\n\n"
            "  --dtype T         store as T (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64): real values\n"
            "                    (scaling applied) are converted; integers are rounded and\n"
            "                    clamped, with a warning giving the number of clamped voxels\n"
            "  --nifti2          write NIfTI-2 (also chosen when a dim exceeds 32767)\n"
            "  --gzip-level N    compression level 1..12 for .gz outputs (default 6)\n"
            "  --mem-limit SIZE  refuse images larger than SIZE bytes (suffix K, M, G)\n"
            "  --to-dicom        write a DICOM series folder (options below apply to it)\n"
            "  --modality M      CT (default; CT Image Storage) or MR (MR Image Storage)\n"
            "  --patient-id ID, --patient-name NAME (DICOM PN, e.g. Doe^Jane),\n"
            "  --series-description TEXT, --series-number N   identification written\n");
}

typedef struct {
    const char *in, *out;
    int has_dtype;
    mp_dtype_t dtype;
    mp_image_write_opts_t wo;
    int nifti_opts; /* --nifti2 or --gzip-level given */
    int to_dicom;
    mp_dicom_write_opts_t dw;
} args_t;

static int is_nifti_name(const char *p) {
    mp_format_t f = mp_image_format_from_name(p);
    size_t n = strlen(p);
    int dir_like = n && p[n - 1] == '/';
    return !dir_like && (f == MP_FORMAT_NIFTI || f == MP_FORMAT_NIFTI_GZ || f == MP_FORMAT_ANALYZE);
}

/* The DICOM-only options; returns 1 if s was one (consuming its value). */
static int parse_dicom_opt(args_t *a, int argc, char **argv, int *i, int *bad) {
    const char *s = argv[*i], *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    const char **dst = strcmp(s, "--patient-id") == 0             ? &a->dw.patient_id
                       : strcmp(s, "--patient-name") == 0         ? &a->dw.patient_name
                       : strcmp(s, "--series-description") == 0   ? &a->dw.series_description
                       : strcmp(s, "--modality") == 0             ? &a->dw.modality
                                                                  : NULL;
    if (strcmp(s, "--series-number") == 0) {
        int64_t n;
        if (!val || mp_cli_parse_int(val, &n) || n < 0 || n > 2147483647) {
            *bad = mp_cli_usage_error(CMD, "--series-number needs a number from 0 to 2147483647");
            return 1;
        }
        a->dw.series_number = (int)n;
        (*i)++;
        return 1;
    }
    if (!dst) return 0;
    if (!val) {
        *bad = mp_cli_usage_error(CMD, "%s needs a value", s);
        return 1;
    }
    if (dst == &a->dw.modality && strcmp(val, "CT") != 0 && strcmp(val, "MR") != 0) {
        *bad = mp_cli_usage_error(CMD, "--modality must be CT or MR, not '%s'", val);
        return 1;
    }
    *dst = val;
    (*i)++;
    return 1;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    mp_image_write_opts_init(&a->wo);
    mp_dicom_write_opts_init(&a->dw);
    int dicom_opts = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int bad = -1;
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return MP_EXIT_OK;
        } else if (strcmp(s, "--dtype") == 0) {
            if (i + 1 >= argc) return mp_cli_usage_error(CMD, "--dtype needs a type");
            if (mp_dtype_parse(argv[++i], &a->dtype) != MP_OK) return mp_cli_usage_error(CMD, "%s", mp_error_message());
            a->has_dtype = 1;
        } else if (strcmp(s, "--nifti2") == 0) {
            a->wo.nifti_version = 2;
            a->nifti_opts = 1;
        } else if (strcmp(s, "--gzip-level") == 0) {
            int64_t lv;
            if (i + 1 >= argc || mp_cli_parse_int(argv[++i], &lv) || lv < 1 || lv > 12)
                return mp_cli_usage_error(CMD, "--gzip-level needs a level from 1 to 12");
            a->wo.gzip_level = (int)lv;
            a->nifti_opts = 1;
        } else if (strcmp(s, "--mem-limit") == 0) {
            uint64_t lim;
            if (i + 1 >= argc || mp_cli_parse_size(argv[++i], &lim))
                return mp_cli_usage_error(CMD, "--mem-limit needs a size such as 512M or 4G");
            mp_mem_set_limit(lim);
        } else if (strcmp(s, "--to-dicom") == 0) {
            a->to_dicom = 1;
        } else if (parse_dicom_opt(a, argc, argv, &i, &bad)) {
            if (bad >= 0) return bad;
            dicom_opts = 1;
        } else if (s[0] == '-' && s[1]) {
            return mp_cli_usage_error(CMD, "unknown option '%s'", s);
        } else if (!a->in) {
            a->in = s;
        } else if (!a->out) {
            a->out = s;
        } else {
            return mp_cli_usage_error(CMD, "unexpected argument '%s'", s);
        }
    }
    if (!a->in || !a->out) return mp_cli_usage_error(CMD, "IN and OUT are required");
    if (dicom_opts && !a->to_dicom)
        return mp_cli_usage_error(CMD, "--modality, --patient-*, --series-* only apply with --to-dicom");
    if (a->to_dicom && a->nifti_opts) return mp_cli_usage_error(CMD, "--nifti2 and --gzip-level do not apply to --to-dicom");
    if (a->to_dicom && is_nifti_name(a->out))
        return mp_cli_usage_error(CMD, "%s: --to-dicom writes a folder of DICOM files; give a folder name", a->out);
    if (!a->to_dicom && (mp_path_has_suffix(a->out, ".dcm") || mp_path_has_suffix(a->out, ".dicom")))
        return mp_cli_usage_error(CMD, "%s: DICOM output is a series folder written with --to-dicom", a->out);
    return -1;
}

/* ---------------------------------------------------------------- folders */

static int path_exists(const char *p, struct stat *st) { return stat(p, st) == 0; }

/* OUT without trailing slashes (so that "out/" and "out" name one folder). */
static char *strip_slashes(const char *p) {
    char *s = strdup(p);
    if (!s) return NULL;
    size_t n = strlen(s);
    while (n > 1 && s[n - 1] == '/') s[--n] = 0;
    return s;
}

/* Creates the parent folders of `path` (mkdir -p of its dirname). */
static int make_parent(const char *path) {
    char *p = strdup(path);
    if (!p) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    char *slash = strrchr(p, '/');
    int rc = MP_OK;
    if (slash && slash != p) {
        *slash = 0;
        rc = mp_mkdir_p(p);
    }
    free(p);
    return rc;
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        if (fsync(fd) != 0) mp_log(MP_LOG_DEBUG, "%s: fsync: %s", dir, strerror(errno));
        close(fd);
    }
}

static void fsync_parent(const char *path) {
    char *p = strdup(path);
    if (!p) return;
    char *slash = strrchr(p, '/');
    if (slash == p) slash[1] = 0;
    else if (slash) *slash = 0;
    fsync_dir(slash ? p : ".");
    free(p);
}

/* Removes a temporary folder this run created, with the plain files in it. */
static void remove_tmp_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char *p = mp_cli_path_join(dir, e->d_name);
            if (p && unlink(p) != 0) mp_log(MP_LOG_WARN, "%s: cannot remove: %s", p, strerror(errno));
            free(p);
        }
        closedir(d);
    }
    if (rmdir(dir) != 0 && errno != ENOENT) mp_log(MP_LOG_WARN, "%s: cannot remove: %s", dir, strerror(errno));
}

/* A new empty folder "<base>.tmp.XXXXXX" (mkdtemp) next to `base`. */
static char *make_tmp_dir(const char *base) {
    size_t n = strlen(base) + 16;
    char *t = malloc(n);
    if (!t) {
        mp_error_set(MP_ERR_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(t, n, "%s.tmp.XXXXXX", base);
    if (!mkdtemp(t)) {
        mp_error_set(MP_ERR_IO, "%s: cannot create a temporary folder next to it: %s", base, strerror(errno));
        free(t);
        return NULL;
    }
    return t;
}

static int dir_is_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d))) empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* ---------------------------------------------------------------- DICOM -> NIfTI */

static int apply_dtype(const args_t *a, mp_vol_t **v, const char *what) {
    if (!a->has_dtype) return MP_OK;
    mp_vol_t *c = NULL;
    int64_t clamped = 0;
    int rc = mp_vol_convert(&c, *v, a->dtype, 1, &clamped);
    if (rc) return rc;
    if (clamped > 0)
        mp_log(MP_LOG_WARN, "%s: %lld voxels were outside the range of %s (or NaN) and were clamped", what,
               (long long)clamped, mp_dtype_name(a->dtype));
    mp_vol_free(*v);
    *v = c;
    return MP_OK;
}

/* "<number>_<description>" with only [A-Za-z0-9+-] and single '_' between words. */
static void series_base_name(const mp_dicom_series_t *s, char *buf, size_t cap) {
    char num[24], clean[64];
    if (s->series_number >= 0) snprintf(num, sizeof num, "%lld", (long long)s->series_number);
    else snprintf(num, sizeof num, "NA");
    const char *d = s->description[0] ? s->description : s->modality[0] ? s->modality : "series";
    size_t n = 0;
    for (const char *p = d; *p && n < 60; p++) {
        unsigned char c = (unsigned char)*p;
        int keep = c < 0x80 && (isalnum(c) || c == '-' || c == '+');
        if (keep) clean[n++] = (char)c;
        else if (n && clean[n - 1] != '_') clean[n++] = '_';
    }
    while (n && clean[n - 1] == '_') n--;
    clean[n] = 0;
    if (s->part) snprintf(buf, cap, "%s_%s_part%d", num, n ? clean : "series", s->part);
    else snprintf(buf, cap, "%s_%s", num, n ? clean : "series");
}

/* One unique (case-insensitively) file name per series, in list order. */
static int series_file_names(const mp_dicom_series_list_t *l, char (**names)[192]) {
    char(*v)[192] = calloc((size_t)l->n, sizeof *v);
    if (!v) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < l->n; i++) {
        char base[128];
        series_base_name(&l->series[i], base, sizeof base);
        for (int k = 1;; k++) {
            char suffix[16] = "";
            if (k > 1) snprintf(suffix, sizeof suffix, "_%d", k);
            snprintf(v[i], sizeof v[i], "%s%s.nii.gz", base, suffix);
            int taken = 0;
            for (int j = 0; j < i && !taken; j++) taken = strcasecmp(v[j], v[i]) == 0;
            if (!taken) break;
        }
    }
    *names = v;
    return MP_OK;
}

static int read_write_series(const args_t *a, const mp_dicom_series_t *s, const char *path) {
    mp_vol_t *v = NULL;
    int rc = mp_dicom_series_read(&v, s);
    if (!rc) rc = apply_dtype(a, &v, a->in);
    if (!rc) rc = mp_image_write(path, v, &a->wo);
    mp_vol_free(v);
    return rc;
}

/* Writes every series into `tmp`; then renames tmp to `out` (new folder) or
 * the files into `out` (existing folder). tmp is removed on failure. */
static int write_series_folder(const args_t *a, const mp_dicom_series_list_t *l, char (*names)[192], const char *out,
                               int out_exists) {
    char *tmp = NULL;
    int rc = out_exists ? MP_OK : make_parent(out);
    if (!rc) {
        char *base = out_exists ? mp_cli_path_join(out, ".medpipe-convert") : strdup(out);
        tmp = base ? make_tmp_dir(base) : NULL;
        if (!base) mp_error_set(MP_ERR_NOMEM, "out of memory");
        free(base);
        if (!tmp) rc = MP_ERR_IO;
    }
    for (int i = 0; !rc && i < l->n; i++) {
        char *p = mp_cli_path_join(tmp, names[i]);
        rc = p ? read_write_series(a, &l->series[i], p) : mp_error_set(MP_ERR_NOMEM, "out of memory");
        free(p);
    }
    if (!rc && !out_exists && rename(tmp, out) != 0)
        rc = mp_error_set(MP_ERR_IO, "%s: cannot rename %s to it: %s", out, tmp, strerror(errno));
    for (int i = 0; !rc && out_exists && i < l->n; i++) {
        char *from = mp_cli_path_join(tmp, names[i]), *to = mp_cli_path_join(out, names[i]);
        if (!from || !to) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else if (rename(from, to) != 0) rc = mp_error_set(MP_ERR_IO, "%s: cannot move it into place: %s", to, strerror(errno));
        free(from);
        free(to);
    }
    if (tmp && (rc || out_exists)) remove_tmp_dir(tmp);
    if (!rc && out_exists) fsync_dir(out);
    else if (!rc) fsync_parent(out);
    free(tmp);
    return rc;
}

static int convert_from_dicom(const args_t *a) {
    mp_dicom_series_list_t *l = NULL;
    int rc = mp_dicom_scan(&l, a->in);
    if (rc) return rc;
    if (is_nifti_name(a->out)) {
        if (l->n == 1) {
            rc = make_parent(a->out);
            if (!rc) rc = read_write_series(a, &l->series[0], a->out);
        } else {
            char msg[1600];
            size_t o = (size_t)snprintf(msg, sizeof msg, "%s holds %d series; OUT must be a folder (one file per series):",
                                        a->in, l->n);
            for (int i = 0; i < l->n && o < sizeof msg - 16; i++) {
                char d[400];
                mp_dicom_series_describe(&l->series[i], d, sizeof d);
                o += (size_t)snprintf(msg + o, sizeof msg - o, " [%s]", d);
            }
            rc = mp_error_set(MP_ERR_MISMATCH, "%s", msg);
        }
        mp_dicom_series_list_free(l);
        return rc;
    }
    char *out = strip_slashes(a->out);
    char(*names)[192] = NULL;
    struct stat st;
    int exists = out && path_exists(out, &st);
    if (!out) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    else if (exists && !S_ISDIR(st.st_mode))
        rc = mp_error_set(MP_ERR_ARG, "%s exists and is not a folder (for one output file, name it .nii or .nii.gz)", out);
    if (!rc) rc = series_file_names(l, &names);
    if (!rc) rc = write_series_folder(a, l, names, out, exists);
    for (int i = 0; !rc && i < l->n; i++) {
        char d[400];
        mp_dicom_series_describe(&l->series[i], d, sizeof d);
        printf("%s/%s  <- series %s\n", out, names[i], d);
    }
    free(names);
    free(out);
    mp_dicom_series_list_free(l);
    return rc;
}

/* ---------------------------------------------------------------- NIfTI -> DICOM */

static int convert_to_dicom(const args_t *a) {
    char *out = strip_slashes(a->out), *tmp = NULL;
    mp_vol_t *v = NULL;
    struct stat st;
    int rc = out ? MP_OK : mp_error_set(MP_ERR_NOMEM, "out of memory");
    int exists = out && path_exists(out, &st);
    if (!rc && exists && (!S_ISDIR(st.st_mode) || !dir_is_empty(out)))
        rc = mp_error_set(MP_ERR_ARG, "%s already exists%s; a DICOM series goes into a new or empty folder", out,
                          S_ISDIR(st.st_mode) ? " and is not empty" : "");
    if (!rc) rc = mp_image_read(&v, a->in);
    if (!rc) rc = apply_dtype(a, &v, a->in);
    if (!rc) rc = make_parent(out);
    if (!rc && !(tmp = make_tmp_dir(out))) rc = MP_ERR_IO;
    mp_dicom_write_info_t info;
    if (!rc) rc = mp_dicom_write_series(tmp, v, &a->dw, &info, NULL);
    /* rename(2) replaces an empty folder atomically */
    if (!rc && rename(tmp, out) != 0) rc = mp_error_set(MP_ERR_IO, "%s: cannot rename %s to it: %s", out, tmp, strerror(errno));
    if (rc && tmp) remove_tmp_dir(tmp);
    if (!rc) {
        fsync_parent(out);
        if (!info.exact)
            mp_log(MP_LOG_WARN, "%s: values were quantized to 16 bits (slope %g, intercept %g): largest error %g", a->in,
                   info.slope, info.intercept, info.max_abs_error);
        printf("%s: %lld %s images (%s, %s 16-bit, slope %g, intercept %g)\n", out, (long long)info.files,
               a->dw.modality && strcmp(a->dw.modality, "MR") == 0 ? "MR" : "CT", info.exact ? "exact" : "quantized",
               info.pixel_signed ? "signed" : "unsigned", info.slope, info.intercept);
    }
    mp_vol_free(v);
    free(tmp);
    free(out);
    return rc;
}

int mp_cli_convert(int argc, char **argv) {
    args_t a;
    int rc = parse_args(&a, argc, argv);
    if (rc >= 0) return rc;
    if (a.to_dicom) return convert_to_dicom(&a) == MP_OK ? MP_EXIT_OK : mp_cli_fail(CMD);
    if (mp_image_format_detect(a.in) == MP_FORMAT_DICOM)
        return convert_from_dicom(&a) == MP_OK ? MP_EXIT_OK : mp_cli_fail(CMD);
    if (!is_nifti_name(a.out))
        return mp_cli_usage_error(CMD, "%s: cannot tell the output format (use .nii, .nii.gz, .hdr or .img)", a.out);
    mp_vol_t *v = NULL;
    if (mp_image_read(&v, a.in) != MP_OK) return mp_cli_fail(CMD);
    rc = apply_dtype(&a, &v, a.in);
    if (!rc) rc = make_parent(a.out);
    if (!rc) rc = mp_image_write(a.out, v, &a.wo);
    mp_vol_free(v);
    return rc == MP_OK ? MP_EXIT_OK : mp_cli_fail(CMD);
}
