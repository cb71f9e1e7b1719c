/* medpipe predict: from the --in paths to cases. A NIfTI/Analyze file, or a
 * folder of them, gives files that are grouped into cases by nnU-Net's
 * channel suffix (<case>_0000.nii.gz, <case>_0001.nii.gz, ...; a file
 * without one is a case of its own, all channels in one 4D file); DICOM (a
 * file, a DICOMDIR, a folder of one or several series) gives one case per
 * series. Names become output file stems, so they are sanitized and made
 * unique. */
#include "cli/cli.h"
#include "cli/predict.h"
#include "medpipe/medpipe.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define NAME_MAX_LEN 120

struct mp_pred_file {
    char *path;
    char *case_name;
    int channel; /* -1: no channel suffix */
};

static const char *const IMAGE_EXT[] = {".nii.gz", ".nii", ".hdr.gz", ".hdr", ".img.gz", ".img"};

/* Length of the known image extension ending `name`, 0 if none; folders are
 * listed by header (.nii, .hdr) only so an Analyze pair counts once. */
static size_t image_ext_len(const char *name, int listing) {
    size_t n = strlen(name), count = sizeof IMAGE_EXT / sizeof IMAGE_EXT[0];
    for (size_t i = 0; i < (listing ? 4 : count); i++) {
        size_t e = strlen(IMAGE_EXT[i]);
        if (n > e && strcasecmp(name + n - e, IMAGE_EXT[i]) == 0) return e;
    }
    return 0;
}

/* A file-name-safe copy of the first `len` bytes of s: letters, digits and
 * . _ + - kept, anything else '_', no leading '.', never empty. */
static char *sanitize(const char *s, size_t len) {
    if (len > NAME_MAX_LEN) len = NAME_MAX_LEN;
    char *o = malloc(len + 5);
    if (!o) return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        o[n++] = c < 0x80 && (isalnum(c) || c == '.' || c == '_' || c == '+' || c == '-') ? (char)c : '_';
    }
    o[n] = 0;
    if (n == 0) strcpy(o, "case");
    else if (o[0] == '.') o[0] = '_';
    return o;
}

static mp_pred_case_t *new_case(mp_pred_inputs_t *in) {
    if (in->n == in->cap) {
        int cap = in->cap ? in->cap * 2 : 16;
        mp_pred_case_t *v = realloc(in->cases, sizeof *v * (size_t)cap);
        if (!v) return NULL;
        in->cases = v;
        in->cap = cap;
    }
    mp_pred_case_t *c = &in->cases[in->n++];
    memset(c, 0, sizeof *c);
    return c;
}

/* Records an image file; its case and channel come from the name. */
static int add_file(mp_pred_inputs_t *in, const char *path, int channels) {
    if (in->n_files == in->cap_files) {
        int cap = in->cap_files ? in->cap_files * 2 : 64;
        struct mp_pred_file *v = realloc(in->files, sizeof *v * (size_t)cap);
        if (!v) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        in->files = v;
        in->cap_files = cap;
    }
    char *base = mp_cli_base_name(path);
    if (!base) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    size_t stem = strlen(base) - image_ext_len(base, 0);
    int ch = -1;
    if (stem > 5 && base[stem - 5] == '_' && isdigit((unsigned char)base[stem - 4]) &&
        isdigit((unsigned char)base[stem - 3]) && isdigit((unsigned char)base[stem - 2]) &&
        isdigit((unsigned char)base[stem - 1])) {
        ch = atoi(base + stem - 4);
        /* a one-channel model takes <case>_0000 as channel 0; other numbers
         * are part of a plain case name there */
        if (channels == 1 && ch != 0) ch = -1;
    }
    struct mp_pred_file *f = &in->files[in->n_files];
    f->channel = ch;
    f->path = strdup(path);
    f->case_name = sanitize(base, ch >= 0 ? stem - 5 : stem);
    free(base);
    if (!f->path || !f->case_name) {
        free(f->path);
        free(f->case_name);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    in->n_files++;
    return MP_OK;
}

/* The image files at the top of a folder (only counted when `in` is NULL). */
static int add_folder_images(mp_pred_inputs_t *in, const char *dir, int channels, int *found) {
    DIR *d = opendir(dir);
    if (!d) return mp_error_set(MP_ERR_IO, "%s: cannot open the folder", dir);
    struct dirent *e;
    int rc = MP_OK;
    *found = 0;
    while (rc == MP_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !image_ext_len(e->d_name, 1)) continue;
        char *p = mp_cli_path_join(dir, e->d_name);
        if (!p) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else if (mp_file_is_regular(p)) {
            (*found)++;
            if (in) rc = add_file(in, p, channels);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

/* "<number>_<description>" of a series (as `medpipe convert` names them). */
static char *series_name(const mp_dicom_series_t *s) {
    char buf[200];
    const char *d = s->description[0] ? s->description : s->modality[0] ? s->modality : "series";
    if (s->series_number >= 0) snprintf(buf, sizeof buf, "%lld_%s", (long long)s->series_number, d);
    else snprintf(buf, sizeof buf, "NA_%s", d);
    if (s->part) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "_part%d", s->part);
    return sanitize(buf, strlen(buf));
}

static int add_dicom(mp_pred_inputs_t *in, const char *path, int channels) {
    mp_dicom_series_list_t *l = NULL;
    int rc = mp_dicom_scan(&l, path);
    if (rc) return rc;
    mp_dicom_series_list_t **v = realloc(in->lists, sizeof *v * (size_t)(in->n_lists + 1));
    if (!v) {
        mp_dicom_series_list_free(l);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    in->lists = v;
    in->lists[in->n_lists++] = l;
    char *base = mp_cli_base_name(path);
    if (!base) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    /* one series named after its file or folder; several (or a DICOMDIR) by series */
    int by_path = l->n == 1 && strcasecmp(base, "DICOMDIR") != 0;
    for (int i = 0; i < l->n && rc == MP_OK; i++) {
        mp_pred_case_t *c = new_case(in);
        if (!c) {
            rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
            break;
        }
        c->series = &l->series[i];
        in->n_dicom++;
        size_t stem = strlen(base);
        if (mp_path_has_suffix(base, ".dcm")) stem -= 4;
        else if (mp_path_has_suffix(base, ".dicom")) stem -= 6;
        c->name = by_path ? sanitize(base, stem) : series_name(&l->series[i]);
        c->source = l->series[i].count > 0 && !by_path ? strdup(l->series[i].slices[0].path) : strdup(path);
        if (!c->name || !c->source) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else if (l->series[i].samples != channels &&
                 asprintf(&c->error, "%s: the series has %d channel%s (samples per pixel), the model takes %d", path,
                          l->series[i].samples, l->series[i].samples == 1 ? "" : "s", channels) < 0)
            rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    free(base);
    return rc;
}

int mp_pred_inputs_add(mp_pred_inputs_t *in, const char *path, int channels) {
    struct stat st;
    if (stat(path, &st) != 0) return mp_error_set(MP_ERR_IO, "%s: no such file or folder", path);
    if (S_ISDIR(st.st_mode)) {
        int found = 0, rc = add_folder_images(NULL, path, channels, &found);
        if (rc) return rc;
        if (found) return add_folder_images(in, path, channels, &found);
        rc = add_dicom(in, path, channels);
        return rc == MP_ERR_FORMAT && !in->n_dicom
                   ? mp_error_wrap(rc, "%s: no NIfTI images (.nii, .nii.gz, .hdr) at its top level and no DICOM: ",
                                   path)
                   : rc;
    }
    if (!S_ISREG(st.st_mode)) return mp_error_set(MP_ERR_ARG, "%s: not a file or folder", path);
    mp_format_t f = mp_image_format_detect(path);
    if (f == MP_FORMAT_DICOM) return add_dicom(in, path, channels);
    return add_file(in, path, channels); /* NIfTI, or unknown: the reader says what is wrong */
}

static int cmp_file(const void *a, const void *b) {
    const struct mp_pred_file *x = a, *y = b;
    int c = strcmp(x->case_name, y->case_name);
    return c ? c : (x->channel > y->channel) - (x->channel < y->channel);
}

/* The problem with one group of files (one case name, sorted by channel),
 * or NULL. */
static char *group_error(const struct mp_pred_file *g, int n, int channels) {
    char *msg = NULL;
    int r = 0;
    if (n == 1 && g[0].channel < 0) return NULL;
    if (g[0].channel < 0)
        r = asprintf(&msg, "%s and %s both give case '%s' (a plain file and channel files)", g[0].path, g[1].path,
                     g[0].case_name);
    for (int i = 1; i < n && !msg && r >= 0; i++)
        if (g[i].channel == g[i - 1].channel)
            r = asprintf(&msg, "%s and %s are both channel %04d of case '%s'", g[i - 1].path, g[i].path, g[i].channel,
                         g[i].case_name);
    for (int i = 0; i < n && !msg && r >= 0; i++)
        if (g[i].channel >= channels)
            r = asprintf(&msg, "%s: channel %04d, but the model takes %d channel%s", g[i].path, g[i].channel,
                         channels, channels == 1 ? "" : "s");
    for (int i = 0; i < channels && !msg && r >= 0; i++)
        if (i >= n || g[i].channel != i)
            r = asprintf(&msg, "case '%s' (%s): channel file _%04d is missing; the model takes %d channels",
                         g[0].case_name, g[0].path, i, channels);
    return r < 0 ? NULL : msg;
}

/* Makes cases[idx].name unique among the cases before it with _2, _3, ... */
static int make_unique(mp_pred_case_t *cases, int idx) {
    for (int k = 1; k < 10000; k++) {
        char cand[NAME_MAX_LEN + 16];
        if (k == 1) snprintf(cand, sizeof cand, "%s", cases[idx].name);
        else snprintf(cand, sizeof cand, "%s_%d", cases[idx].name, k);
        int taken = 0;
        for (int j = 0; j < idx && !taken; j++) taken = strcasecmp(cases[j].name, cand) == 0;
        if (!taken) {
            char *n = strdup(cand);
            if (!n) return mp_error_set(MP_ERR_NOMEM, "out of memory");
            free(cases[idx].name);
            cases[idx].name = n;
            return MP_OK;
        }
    }
    return mp_error_set(MP_ERR_LIMIT, "%s: too many cases of this name", cases[idx].name);
}

int mp_pred_inputs_finish(mp_pred_inputs_t *in, int channels) {
    int rc = MP_OK, n_dicom = in->n;
    if (in->n_files) qsort(in->files, (size_t)in->n_files, sizeof *in->files, cmp_file);
    for (int i = 0; i < in->n_files && rc == MP_OK;) {
        int j = i + 1;
        while (j < in->n_files && strcmp(in->files[j].case_name, in->files[i].case_name) == 0) j++;
        if (in->files[i].channel < 0 && j - i > 1 && in->files[i + 1].channel < 0)
            return mp_error_set(MP_ERR_MISMATCH, "%s and %s both give case '%s'", in->files[i].path,
                                in->files[i + 1].path, in->files[i].case_name);
        mp_pred_case_t *c = new_case(in);
        if (!c) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        c->name = strdup(in->files[i].case_name);
        c->source = strdup(in->files[i].path);
        c->paths = calloc((size_t)(j - i), sizeof *c->paths);
        if (!c->name || !c->source || !c->paths) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        for (int k = i; k < j; k++) {
            c->paths[c->n_paths++] = in->files[k].path;
            in->files[k].path = NULL; /* the case owns it now */
        }
        /* group_error reads paths from the files: give it the case's view */
        struct mp_pred_file *g = calloc((size_t)(j - i), sizeof *g);
        if (!g) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        for (int k = 0; k < j - i; k++) g[k] = (struct mp_pred_file){c->paths[k], c->name, in->files[i + k].channel};
        c->error = group_error(g, j - i, channels);
        free(g);
        i = j;
    }
    /* NIfTI names are as the user gave them; DICOM names yield to them and to each other */
    if (n_dicom && in->n > n_dicom) {
        mp_pred_case_t *tmp = malloc(sizeof *tmp * (size_t)in->n);
        if (!tmp) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        memcpy(tmp, in->cases + n_dicom, sizeof *tmp * (size_t)(in->n - n_dicom));
        memcpy(tmp + (in->n - n_dicom), in->cases, sizeof *tmp * (size_t)n_dicom);
        memcpy(in->cases, tmp, sizeof *tmp * (size_t)in->n);
        free(tmp);
    }
    for (int i = in->n - n_dicom; i < in->n && rc == MP_OK; i++) rc = make_unique(in->cases, i);
    return rc;
}

void mp_pred_inputs_free(mp_pred_inputs_t *in) {
    for (int i = 0; i < in->n; i++) {
        mp_pred_case_t *c = &in->cases[i];
        free(c->name);
        free(c->source);
        free(c->error);
        for (int k = 0; k < c->n_paths; k++) free(c->paths[k]);
        free(c->paths);
    }
    free(in->cases);
    for (int i = 0; i < in->n_lists; i++) mp_dicom_series_list_free(in->lists[i]);
    free(in->lists);
    for (int i = 0; i < in->n_files; i++) {
        free(in->files[i].path);
        free(in->files[i].case_name);
    }
    free(in->files);
    memset(in, 0, sizeof *in);
}

/* ---- reading a case ---- */

static int check_channels(const mp_vol_t *v, const char *path, int channels) {
    if (v->dim[3] == channels) return MP_OK;
    return mp_error_set(MP_ERR_MISMATCH, "%s: has %lld channel%s, the model takes %d%s", path, (long long)v->dim[3],
                        v->dim[3] == 1 ? "" : "s", channels,
                        channels > 1 ? " (give one file per channel: <case>_0000.nii.gz, <case>_0001.nii.gz, ...)"
                                     : "");
}

int mp_pred_case_read(mp_vol_t **out, const mp_pred_case_t *c, int channels) {
    *out = NULL;
    if (c->error) return mp_error_set(MP_ERR_MISMATCH, "%s", c->error);
    mp_vol_t *v = NULL;
    int rc;
    if (c->series) {
        if ((rc = mp_dicom_series_read(&v, c->series))) return rc;
    } else if (c->n_paths == 1) {
        if ((rc = mp_image_read(&v, c->paths[0]))) return rc;
    } else {
        return mp_infer_read_channels(out, (const char *const *)c->paths, c->n_paths);
    }
    if ((rc = check_channels(v, c->source, channels))) {
        mp_vol_free(v);
        return rc;
    }
    *out = v;
    return MP_OK;
}
