/* Dataset check and fingerprint: every training case is read once; missing
 * files, geometry disagreements and undeclared label values are collected
 * for the whole dataset (one report listing them all), and spacing, shapes
 * and sampled foreground intensities are gathered as nnU-Net's fingerprint
 * extractor does, with a counter-based RNG per case so the result does not
 * depend on threads. */
#include "prep_internal.h"

#include "medpipe/io.h"
#include "medpipe/vol_ops.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void mp_sbuf_printf(mp_sbuf_t *b, const char *fmt, ...) {
    if (b->failed) return;
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    size_t len = (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1;
    if (b->len + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + len + 1) nc *= 2;
        char *s = realloc(b->s, nc);
        if (!s) {
            b->failed = 1;
            return;
        }
        b->s = s;
        b->cap = nc;
    }
    memcpy(b->s + b->len, tmp, len);
    b->len += len;
    b->s[b->len] = '\0';
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double mp_prep_median(double *v, int64_t n) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted, unique file stems (name minus ending, minus the _XXXX channel
 * suffix when `channel_suffix`) of a folder. */
static int scan_ids(const char *dir, const char *ending, int channel_suffix, char ***ids, int64_t *n,
                    mp_sbuf_t *problems) {
    *ids = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        mp_sbuf_printf(problems, "%s: cannot open folder: %s\n", dir, strerror(errno));
        return MP_OK;
    }
    char **v = NULL;
    int64_t cnt = 0, cap = 0;
    struct dirent *e;
    int rc = MP_OK;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !mp_path_has_suffix(e->d_name, ending)) continue;
        size_t len = strlen(e->d_name) - strlen(ending);
        if (channel_suffix) {
            if (len < 6 || e->d_name[len - 5] != '_' || strspn(e->d_name + len - 4, "0123456789") < 4) {
                mp_sbuf_printf(problems, "%s/%s: the name lacks the _XXXX channel suffix\n", dir, e->d_name);
                continue;
            }
            len -= 5;
        }
        if (cnt == cap) {
            cap = cap ? 2 * cap : 64;
            char **w = realloc(v, (size_t)cap * sizeof *w);
            if (!w) {
                rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
                break;
            }
            v = w;
        }
        if (!(v[cnt] = strndup(e->d_name, len))) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else cnt++;
    }
    closedir(d);
    if (cnt) qsort(v, (size_t)cnt, sizeof *v, cmp_str);
    int64_t u = 0;
    for (int64_t i = 0; i < cnt; i++) {
        if (u && strcmp(v[u - 1], v[i]) == 0) free(v[i]);
        else v[u++] = v[i];
    }
    *ids = v;
    *n = u;
    return rc;
}

static void free_ids(char **ids, int64_t n) {
    for (int64_t i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

static char *path_of(const char *root, const char *sub, const char *id, const char *suffix) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s/%s%s", root, sub, id, suffix) < 0) return NULL;
    return p;
}

/* One case of the nnU-Net folder, or a problem line per missing file. */
static int add_folder_case(const mp_dataset_t *ds, const char *id, mp_dataset_cases_t *out, mp_sbuf_t *problems) {
    mp_dataset_case_t c = {NULL, ds->n_channels, NULL, NULL};
    int ok = 1, rc = MP_OK;
    c.images = calloc((size_t)ds->n_channels, sizeof *c.images);
    c.id = strdup(id);
    c.label = path_of(ds->root, "labelsTr", id, ds->file_ending);
    if (!c.images || !c.id || !c.label) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int ch = 0; !rc && ch < ds->n_channels; ch++) {
        char suf[32];
        snprintf(suf, sizeof suf, "_%04d%s", ch, ds->file_ending);
        if (!(c.images[ch] = path_of(ds->root, "imagesTr", id, suf))) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else if (!mp_file_is_regular(c.images[ch])) {
            mp_sbuf_printf(problems, "%s: missing (channel %d of case '%s')\n", c.images[ch], ch, id);
            ok = 0;
        }
    }
    if (!rc && !mp_file_is_regular(c.label)) {
        mp_sbuf_printf(problems, "%s: missing label of case '%s'\n", c.label, id);
        ok = 0;
    }
    if (!rc && ok) {
        out->cases[out->n++] = c;
        return MP_OK;
    }
    for (int ch = 0; c.images && ch < ds->n_channels; ch++) free(c.images[ch]);
    free(c.images);
    free(c.id);
    free(c.label);
    return rc;
}

int mp_prep_list_cases(const mp_dataset_t *ds, mp_dataset_cases_t *out, mp_sbuf_t *problems) {
    memset(out, 0, sizeof *out);
    if (!ds->root) return mp_error_set(MP_ERR_ARG, "dataset: no folder");
    if (ds->n_msd_training) {
        /* Decathlon lists: the library's listing (its first error is the problem). */
        int rc = mp_dataset_list_cases(ds, MP_DATASET_TRAIN, out);
        if (rc && rc != MP_ERR_NOMEM) {
            mp_sbuf_printf(problems, "%s\n", mp_error_message());
            return MP_OK;
        }
        return rc;
    }
    char *imgdir = NULL, *labdir = NULL;
    char **img_ids = NULL, **lab_ids = NULL;
    int64_t n_img = 0, n_lab = 0;
    int rc = MP_OK;
    if (asprintf(&imgdir, "%s/imagesTr", ds->root) < 0 || asprintf(&labdir, "%s/labelsTr", ds->root) < 0)
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    if ((rc = scan_ids(imgdir, ds->file_ending, 1, &img_ids, &n_img, problems)) ||
        (rc = scan_ids(labdir, ds->file_ending, 0, &lab_ids, &n_lab, problems)))
        goto done;
    out->cases = calloc((size_t)(n_img + 1), sizeof *out->cases);
    if (!out->cases) {
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; !rc && i < n_img; i++) rc = add_folder_case(ds, img_ids[i], out, problems);
    for (int64_t j = 0; j < n_lab; j++)
        if (!bsearch(&lab_ids[j], img_ids, (size_t)n_img, sizeof *img_ids, cmp_str))
            mp_sbuf_printf(problems, "%s/%s%s: label without an image (no %s/%s_0000%s)\n", labdir, lab_ids[j],
                           ds->file_ending, imgdir, lab_ids[j], ds->file_ending);
    if (!rc && n_img != ds->num_training)
        mp_sbuf_printf(problems, "%s/dataset.json: numTraining is %lld but %lld training cases were found\n",
                       ds->root, (long long)ds->num_training, (long long)n_img);
done:
    free_ids(img_ids, n_img);
    free_ids(lab_ids, n_lab);
    free(imgdir);
    free(labdir);
    if (rc) mp_dataset_cases_deinit(out);
    return rc;
}

static int affine_close(const double a[4][4], const double b[4][4]) {
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            if (!(fabs(a[r][c] - b[r][c]) <= 1e-4)) return 0;
    return 1;
}

int mp_prep_check_geometry(const mp_vol_t *img, const mp_vol_t *lab, const char *label_path, mp_sbuf_t *problems) {
    int bad = 0;
    if (lab->dim[0] != img->dim[0] || lab->dim[1] != img->dim[1] || lab->dim[2] != img->dim[2] || lab->dim[3] != 1) {
        mp_sbuf_printf(problems, "%s: shape %lldx%lldx%lldx%lld, the image's is %lldx%lldx%lld\n", label_path,
                       (long long)lab->dim[0], (long long)lab->dim[1], (long long)lab->dim[2], (long long)lab->dim[3],
                       (long long)img->dim[0], (long long)img->dim[1], (long long)img->dim[2]);
        bad = 1;
    }
    if (!affine_close(lab->affine, img->affine)) {
        double dmax = 0;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) dmax = fmax(dmax, fabs(lab->affine[r][c] - img->affine[r][c]));
        mp_sbuf_printf(problems, "%s: affine differs from the image's by up to %g (tolerance 1e-4)\n", label_path,
                       dmax);
        bad = 1;
    }
    return bad ? MP_ERR_MISMATCH : MP_OK;
}

int mp_prep_read_images(mp_vol_t **out, const mp_dataset_case_t *c, int n_channels, mp_sbuf_t *problems) {
    *out = NULL;
    mp_vol_t *all = NULL;
    int64_t ch = 0;
    int rc = MP_OK;
    for (int i = 0; i < c->n_images && rc == MP_OK; i++) {
        mp_vol_t *v = NULL, *f = NULL;
        if ((rc = mp_image_read(&v, c->images[i]))) {
            mp_sbuf_printf(problems, "%s\n", mp_error_message());
            break;
        }
        if (!all) {
            int64_t d[4] = {v->dim[0], v->dim[1], v->dim[2], n_channels};
            if (c->n_images * v->dim[3] != n_channels) {
                mp_sbuf_printf(problems, "%s: %lld channel(s) per file, dataset.json declares %d in all\n",
                               c->images[i], (long long)v->dim[3], n_channels);
                rc = MP_ERR_MISMATCH;
            } else if ((rc = mp_vol_create(&all, d, MP_DTYPE_F32)) == MP_OK) {
                mp_vol_set_affine(all, v->affine);
                all->meta = v->meta;
            }
        } else if (v->dim[3] != 1 || mp_prep_check_geometry(all, v, c->images[i], problems)) {
            if (v->dim[3] != 1) mp_sbuf_printf(problems, "%s: has %lld channels\n", c->images[i], (long long)v->dim[3]);
            rc = MP_ERR_MISMATCH;
        }
        if (rc == MP_OK && (rc = mp_vol_to_f32(&f, v)) == MP_OK) {
            size_t n = (size_t)mp_vol_elems(f);
            memcpy((float *)all->data + ch * mp_vol_voxels(all), f->data, n * sizeof(float));
            ch += f->dim[3];
        }
        mp_vol_free(f);
        mp_vol_free(v);
    }
    if (rc) {
        mp_vol_free(all);
        if (rc == MP_ERR_NOMEM || rc == MP_ERR_LIMIT) return rc;
        return MP_ERR_MISMATCH;
    }
    *out = all;
    return MP_OK;
}

/* ---- per-case work ---- */

typedef struct {
    mp_sbuf_t problems;
    mp_fp_case_t info;
    double *samples;  /* n_channels x n_samples */
    int64_t n_samples;
    int fatal;        /* NOMEM/LIMIT/INTERNAL */
    char fatal_msg[256];
} fp_result_t;

typedef struct {
    const mp_dataset_t *ds;
    const mp_dataset_cases_t *cases;
    fp_result_t *res;
    uint64_t seed;
    pthread_mutex_t lock;
    int64_t done;
    mp_cache_progress_fn progress;
    void *user;
} fp_ctx_t;

/* Appends undeclared label values (with voxel counts) to the problems. */
static void check_label_values(const mp_dataset_t *ds, const mp_vol_t *lab, const char *path, mp_sbuf_t *pr) {
    static const int64_t slots = 258; /* 0..255, 256: other integer, 257: not an integer */
    int64_t counts[258] = {0};
    int64_t n = mp_vol_voxels(lab);
    for (int64_t i = 0; i < n; i++) {
        double v = mp_vol_get(lab, i) * (lab->scl_slope != 0 ? lab->scl_slope : 1) + lab->scl_inter;
        int64_t k = v != floor(v) || !isfinite(v) ? 257 : (v >= 0 && v <= 255 ? (int64_t)v : 256);
        counts[k]++;
    }
    for (int64_t k = 0; k < slots; k++) {
        if (!counts[k] || (k < 256 && mp_dataset_label_name(ds, (int)k))) continue;
        if (k < 256)
            mp_sbuf_printf(pr, "%s: label value %lld (%lld voxels) is not declared in dataset.json\n", path,
                           (long long)k, (long long)counts[k]);
        else
            mp_sbuf_printf(pr, "%s: %lld voxels with label values %s\n", path, (long long)counts[k],
                           k == 256 ? "outside 0..255" : "that are not integers");
    }
}

/* Foreground (label > 0 inside the crop box) intensity samples. */
static int sample_foreground(fp_result_t *r, const mp_vol_t *img, const mp_vol_t *lab, const mp_box_t *box,
                             uint64_t seed, int64_t case_index) {
    int64_t nx = img->dim[0], ny = img->dim[1], nv = mp_vol_voxels(img), nfg = 0;
    const uint8_t *lb = lab->data;
    int64_t *idx = NULL;
    for (int pass = 0; pass < 2; pass++) {
        nfg = 0;
        for (int64_t z = box->lo[2]; z < box->hi[2]; z++)
            for (int64_t y = box->lo[1]; y < box->hi[1]; y++)
                for (int64_t x = box->lo[0]; x < box->hi[0]; x++) {
                    int64_t i = (z * ny + y) * nx + x;
                    if (lb[i]) {
                        if (idx) idx[nfg] = i;
                        nfg++;
                    }
                }
        if (pass == 0) {
            r->info.fg_voxels = nfg;
            if (nfg == 0) return MP_OK;
            if (!(idx = malloc((size_t)nfg * sizeof *idx))) return MP_ERR_NOMEM;
        }
    }
    int64_t C = img->dim[3], ns = MP_FP_SAMPLES_PER_CASE;
    r->samples = malloc((size_t)(C * ns) * sizeof *r->samples);
    if (!r->samples) {
        free(idx);
        return MP_ERR_NOMEM;
    }
    mp_rng_t rng;
    mp_rng_init(&rng, seed, mp_rng_stream_id(0x66705f73616d70ull, (uint64_t)case_index, 0));
    const float *x = img->data;
    for (int64_t s = 0; s < ns; s++) {
        int64_t i = idx[mp_rng_below(&rng, (uint64_t)nfg)];
        for (int64_t c = 0; c < C; c++) r->samples[c * ns + s] = x[c * nv + i];
    }
    r->n_samples = ns;
    free(idx);
    return MP_OK;
}

static void fp_case(fp_ctx_t *ctx, int64_t k) {
    const mp_dataset_case_t *c = &ctx->cases->cases[k];
    fp_result_t *r = &ctx->res[k];
    mp_vol_t *img = NULL, *lab = NULL, *lab8 = NULL;
    int rc = mp_prep_read_images(&img, c, ctx->ds->n_channels, &r->problems);
    if (rc == MP_OK && (rc = mp_image_read(&lab, c->label))) mp_sbuf_printf(&r->problems, "%s\n", mp_error_message());
    if (rc == MP_OK) {
        check_label_values(ctx->ds, lab, c->label, &r->problems);
        if (mp_prep_check_geometry(img, lab, c->label, &r->problems)) rc = MP_ERR_MISMATCH;
    }
    if (rc == MP_OK && !r->problems.len) {
        mp_box_t box;
        int64_t cnt = 0;
        r->info.id = strdup(c->id);
        for (int a = 0; a < 3; a++) {
            r->info.shape[a] = img->dim[a];
            r->info.spacing[a] = img->spacing[a];
        }
        if (!r->info.id) rc = MP_ERR_NOMEM;
        if (!rc) {
            float *x = img->data; /* non-finite values count as 0, as in mp_infer_preprocess */
            for (int64_t i = 0; i < mp_vol_elems(img); i++)
                if (!isfinite(x[i])) x[i] = 0;
            rc = mp_vol_bbox_nonzero(img, 0, &box, &cnt);
        }
        if (!rc && cnt == 0)
            for (int a = 0; a < 3; a++) box.lo[a] = 0, box.hi[a] = img->dim[a];
        for (int a = 0; !rc && a < 3; a++) r->info.crop_shape[a] = box.hi[a] - box.lo[a];
        if (!rc) rc = mp_vol_convert(&lab8, lab, MP_DTYPE_U8, 1, NULL);
        if (!rc) rc = sample_foreground(r, img, lab8, &box, ctx->seed, k);
        if (rc) {
            r->fatal = rc;
            snprintf(r->fatal_msg, sizeof r->fatal_msg, "case '%s': %s", c->id,
                     rc == MP_ERR_NOMEM ? "out of memory" : mp_error_message());
        }
    } else if (rc == MP_ERR_NOMEM || rc == MP_ERR_LIMIT) {
        r->fatal = rc;
        snprintf(r->fatal_msg, sizeof r->fatal_msg, "%s", mp_error_message());
    }
    mp_vol_free(img);
    mp_vol_free(lab);
    mp_vol_free(lab8);
}

static void fp_range(void *vctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    fp_ctx_t *ctx = vctx;
    for (int64_t k = begin; k < end; k++) {
        fp_case(ctx, k);
        pthread_mutex_lock(&ctx->lock);
        ctx->done++;
        if (ctx->progress) ctx->progress(ctx->user, ctx->done, ctx->cases->n);
        pthread_mutex_unlock(&ctx->lock);
    }
}

/* Pools the samples of all cases into the per-channel statistics. */
static int pool_intensities(mp_fingerprint_t *fp, const fp_result_t *res, int64_t n) {
    int64_t total = 0;
    for (int64_t k = 0; k < n; k++) total += res[k].n_samples;
    for (int c = 0; c < fp->n_channels; c++) {
        mp_fp_intensity_t *it = &fp->intensity[c];
        it->count = total;
        if (!total) {
            it->mean = it->std = it->min = it->max = it->median = it->p00_5 = it->p99_5 = NAN;
            continue;
        }
        double *v = malloc((size_t)total * sizeof *v);
        if (!v) return mp_error_set(MP_ERR_NOMEM, "fingerprint: out of memory");
        int64_t m = 0;
        for (int64_t k = 0; k < n; k++)
            for (int64_t s = 0; s < res[k].n_samples; s++) v[m++] = res[k].samples[c * res[k].n_samples + s];
        double sum = 0, sq = 0;
        it->min = INFINITY;
        it->max = -INFINITY;
        for (int64_t i = 0; i < m; i++) {
            sum += v[i];
            it->min = fmin(it->min, v[i]);
            it->max = fmax(it->max, v[i]);
        }
        it->mean = sum / (double)m;
        for (int64_t i = 0; i < m; i++) sq += (v[i] - it->mean) * (v[i] - it->mean);
        it->std = sqrt(sq / (double)m);
        double q[3] = {0.5, 50, 99.5}, out[3];
        int rc = mp_percentiles(v, m, q, 3, out);
        free(v);
        if (rc) return rc;
        it->p00_5 = out[0];
        it->median = out[1];
        it->p99_5 = out[2];
    }
    return MP_OK;
}

/* Medians of spacing and crop shape over the cases. */
static int medians(mp_fingerprint_t *fp) {
    double *v = malloc((size_t)(fp->n_cases + 1) * sizeof *v);
    if (!v) return mp_error_set(MP_ERR_NOMEM, "fingerprint: out of memory");
    for (int a = 0; a < 3; a++) {
        for (int64_t k = 0; k < fp->n_cases; k++) v[k] = fp->cases[k].spacing[a];
        fp->median_spacing[a] = mp_prep_median(v, fp->n_cases);
        for (int64_t k = 0; k < fp->n_cases; k++) v[k] = (double)fp->cases[k].crop_shape[a];
        fp->median_crop_shape[a] = (int64_t)llround(mp_prep_median(v, fp->n_cases));
    }
    free(v);
    return MP_OK;
}

static int fp_collect(mp_fingerprint_t *fp, fp_result_t *res, int64_t n, mp_sbuf_t *all) {
    for (int64_t k = 0; k < n; k++) {
        if (res[k].fatal) return mp_error_set(res[k].fatal, "%s", res[k].fatal_msg);
        if (res[k].problems.failed) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        if (res[k].problems.len) mp_sbuf_printf(all, "%s", res[k].problems.s);
    }
    if (all->len || n <= 0) return MP_OK;
    fp->cases = calloc((size_t)n, sizeof *fp->cases);
    if (!fp->cases) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int64_t k = 0; k < n; k++) {
        fp->cases[k] = res[k].info;
        res[k].info.id = NULL;
    }
    fp->n_cases = n;
    int rc = pool_intensities(fp, res, n);
    return rc ? rc : medians(fp);
}

int mp_fingerprint_compute(mp_fingerprint_t *fp, const mp_dataset_t *ds, uint64_t seed, mp_pool_t *pool,
                           mp_cache_progress_fn progress, void *user, char **problems) {
    memset(fp, 0, sizeof *fp);
    if (problems) *problems = NULL;
    if (!ds) return mp_error_set(MP_ERR_ARG, "fingerprint: no dataset");
    if (ds->n_channels > MP_INFER_MAX_CHANNELS)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: %d channels (at most %d)", ds->root ? ds->root : "dataset",
                            ds->n_channels, MP_INFER_MAX_CHANNELS);
    fp->n_channels = ds->n_channels;
    fp->seed = seed;
    mp_sbuf_t all = {0};
    mp_dataset_cases_t cases;
    int rc = mp_prep_list_cases(ds, &cases, &all);
    if (rc) {
        free(all.s);
        return rc;
    }
    fp_result_t *res = calloc((size_t)cases.n + 1, sizeof *res);
    if (!res) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) {
        fp_ctx_t ctx = {ds, &cases, res, seed, PTHREAD_MUTEX_INITIALIZER, 0, progress, user};
        mp_pool_parallel_for(pool, cases.n, fp_range, &ctx);
        pthread_mutex_destroy(&ctx.lock);
        rc = fp_collect(fp, res, cases.n, &all);
    }
    if (!rc && !all.len && fp->n_cases == 0) mp_sbuf_printf(&all, "%s: no training cases\n", ds->root);
    if (!rc && all.failed) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc && all.len) {
        int64_t lines = 0;
        for (size_t i = 0; i < all.len; i++) lines += all.s[i] == '\n';
        rc = mp_error_set(MP_ERR_MISMATCH, "%s: %lld problem(s) in the dataset; first: %.*s", ds->root,
                          (long long)lines, (int)strcspn(all.s, "\n"), all.s);
        if (problems) {
            *problems = all.s;
            all.s = NULL;
        }
    }
    for (int64_t k = 0; res && k < cases.n; k++) {
        free(res[k].problems.s);
        free(res[k].samples);
        free(res[k].info.id);
    }
    free(res);
    free(all.s);
    mp_dataset_cases_deinit(&cases);
    if (rc) mp_fingerprint_deinit(fp);
    return rc;
}

void mp_fingerprint_deinit(mp_fingerprint_t *fp) {
    if (!fp) return;
    for (int64_t k = 0; fp->cases && k < fp->n_cases; k++) free(fp->cases[k].id);
    free(fp->cases);
    memset(fp, 0, sizeof *fp);
}

static cJSON *num3(const double *v) {
    return mp_prep_json_numbers(v, 3);
}

static cJSON *int3(const int64_t *v) {
    double d[3] = {(double)v[0], (double)v[1], (double)v[2]};
    return cJSON_CreateDoubleArray(d, 3);
}

int mp_fingerprint_to_json(const mp_fingerprint_t *fp, char **json) {
    *json = NULL;
    cJSON *root = cJSON_CreateObject(), *cases = cJSON_CreateArray(), *inten = cJSON_CreateArray();
    if (!root || !cases || !inten) goto nomem;
    cJSON_AddItemToObject(root, "median_spacing", num3(fp->median_spacing));
    cJSON_AddItemToObject(root, "median_crop_shape", int3(fp->median_crop_shape));
    cJSON_AddNumberToObject(root, "seed", (double)fp->seed);
    cJSON_AddNumberToObject(root, "samples_per_case", MP_FP_SAMPLES_PER_CASE);
    for (int c = 0; c < fp->n_channels; c++) {
        const mp_fp_intensity_t *it = &fp->intensity[c];
        cJSON *o = cJSON_CreateObject();
        if (!o) goto nomem;
        cJSON_AddNumberToObject(o, "count", (double)it->count);
        cJSON_AddItemToObject(o, "mean", mp_prep_json_number(it->mean));
        cJSON_AddItemToObject(o, "std", mp_prep_json_number(it->std));
        cJSON_AddItemToObject(o, "min", mp_prep_json_number(it->min));
        cJSON_AddItemToObject(o, "max", mp_prep_json_number(it->max));
        cJSON_AddItemToObject(o, "median", mp_prep_json_number(it->median));
        cJSON_AddItemToObject(o, "percentile_00_5", mp_prep_json_number(it->p00_5));
        cJSON_AddItemToObject(o, "percentile_99_5", mp_prep_json_number(it->p99_5));
        cJSON_AddItemToArray(inten, o);
    }
    cJSON_AddItemToObject(root, "foreground_intensity_properties_per_channel", inten);
    inten = NULL;
    for (int64_t k = 0; k < fp->n_cases; k++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) goto nomem;
        cJSON_AddStringToObject(o, "id", fp->cases[k].id);
        cJSON_AddItemToObject(o, "shape", int3(fp->cases[k].shape));
        cJSON_AddItemToObject(o, "spacing", num3(fp->cases[k].spacing));
        cJSON_AddItemToObject(o, "crop_shape", int3(fp->cases[k].crop_shape));
        cJSON_AddNumberToObject(o, "foreground_voxels", (double)fp->cases[k].fg_voxels);
        cJSON_AddItemToArray(cases, o);
    }
    cJSON_AddItemToObject(root, "cases", cases);
    cases = NULL;
    *json = cJSON_Print(root);
    cJSON_Delete(root);
    return *json ? MP_OK : mp_error_set(MP_ERR_NOMEM, "out of memory");
nomem:
    cJSON_Delete(root);
    cJSON_Delete(cases);
    cJSON_Delete(inten);
    return mp_error_set(MP_ERR_NOMEM, "out of memory");
}

cJSON *mp_prep_json_number(double v) {
    char buf[64];
    if (!isfinite(v)) return cJSON_CreateNull();
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return cJSON_CreateRaw(buf);
}

cJSON *mp_prep_json_numbers(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *e = mp_prep_json_number(v[i]);
        if (!e) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, e);
    }
    return a;
}
