/* The preprocessing cache: each training case through mp_infer_preprocess
 * (the preprocessing inference repeats), its label map taken through the
 * same reorientation, crop and grid with per-label linear interpolation,
 * and per-class foreground locations sampled for the patch sampler; stored
 * raw so the trainer maps cases read-only instead of decoding them. The
 * reader treats every file as hostile: sizes come from the JSON and must
 * agree with the file sizes, locations must lie inside the volume on a
 * voxel of their class. */
#include "prep_internal.h"

#include "medpipe/io.h"
#include "medpipe/vol_ops.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- writing one case ---- */

typedef struct {
    mp_vol_t *img;      /* preprocessed, f32 (C, D, H, W) */
    mp_vol_t *seg;      /* u8 on the same grid */
    mp_infer_prep_t prep;
    int32_t *xyz;       /* all classes' locations */
    int64_t n_xyz;
    int64_t fg_count[256], fg_offset[256];
} case_out_t;

static void case_out_free(case_out_t *o) {
    mp_vol_free(o->img);
    mp_vol_free(o->seg);
    free(o->xyz);
}

/* The label through the geometry steps the image went through. */
static int label_to_grid(mp_vol_t **out, const mp_vol_t *lab, const mp_infer_prep_t *p) {
    mp_vol_t *v = NULL, *next = NULL;
    int rc = mp_vol_convert(&v, lab, MP_DTYPE_U8, 1, NULL);
    if (!rc && p->reoriented) {
        rc = mp_vol_reorient_apply(&next, v, &p->reorient);
        mp_vol_free(v);
        v = next;
    }
    int whole = 1, same = 1;
    for (int a = 0; a < 3; a++) {
        whole &= p->box.lo[a] == 0 && p->box.hi[a] == p->ro_dim[a];
        same &= p->pre_dim[a] == p->crop_dim[a];
    }
    if (!rc && !whole) {
        rc = mp_vol_crop(&next, v, &p->box);
        mp_vol_free(v);
        v = next;
    }
    if (!rc && !same) {
        rc = mp_vol_resample_shape(&next, v, p->pre_dim, MP_INTERP_LABEL, NULL);
        mp_vol_free(v);
        v = next;
    }
    if (rc) {
        mp_vol_free(v);
        return rc;
    }
    *out = v;
    return MP_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Up to n_keep locations per class, chosen without replacement by a
 * partial Fisher-Yates shuffle keyed by (seed, case, class), kept sorted.
 * Only foreground voxels are indexed (bucketed by class in one pass). */
static int sample_locations(case_out_t *o, int num_classes, int n_keep, uint64_t seed, int64_t case_index) {
    const uint8_t *s = o->seg->data;
    int64_t nx = o->seg->dim[0], ny = o->seg->dim[1], nv = mp_vol_voxels(o->seg);
    int64_t counts[256] = {0}, start[257] = {0}, fill[256], total = 0;
    for (int64_t i = 0; i < nv; i++) counts[s[i]]++;
    for (int k = 1; k < 256; k++) start[k + 1] = start[k] + (k < num_classes ? counts[k] : 0);
    for (int k = num_classes; k < 256; k++)
        if (counts[k])
            return mp_error_set(MP_ERR_MISMATCH, "label value %d in %lld voxels, but the plan has num_classes %d", k,
                                (long long)counts[k], num_classes);
    for (int k = 1; k < num_classes; k++) total += counts[k] < n_keep ? counts[k] : n_keep;
    o->xyz = malloc((size_t)(total ? total : 1) * 3 * sizeof *o->xyz);
    int64_t *idx = malloc((size_t)(start[256] ? start[256] : 1) * sizeof *idx);
    if (!o->xyz || !idx) {
        free(idx);
        return mp_error_set(MP_ERR_NOMEM, "cache: out of memory for foreground locations");
    }
    memcpy(fill, start, sizeof fill);
    for (int64_t i = 0; i < nv; i++)
        if (s[i] && s[i] < num_classes) idx[fill[s[i]]++] = i;
    int64_t pos = 0;
    for (int k = 1; k < num_classes; k++) {
        int64_t n = counts[k], *v = idx + start[k];
        int64_t keep = n < n_keep ? n : n_keep;
        if (keep < n) {
            mp_rng_t rng;
            mp_rng_init(&rng, seed, mp_rng_stream_id(0x666730636c617373ull, (uint64_t)case_index, (uint64_t)k));
            for (int64_t j = 0; j < keep; j++) {
                int64_t r = j + (int64_t)mp_rng_below(&rng, (uint64_t)(n - j)), t = v[j];
                v[j] = v[r];
                v[r] = t;
            }
            qsort(v, (size_t)keep, sizeof *v, cmp_i64);
        }
        o->fg_offset[k] = pos;
        o->fg_count[k] = keep;
        for (int64_t j = 0; j < keep; j++, pos++) {
            int64_t i = v[j];
            o->xyz[3 * pos] = (int32_t)(i % nx);
            o->xyz[3 * pos + 1] = (int32_t)(i / nx % ny);
            o->xyz[3 * pos + 2] = (int32_t)(i / nx / ny);
        }
    }
    o->n_xyz = pos;
    free(idx);
    return MP_OK;
}

static cJSON *arr_i64(const int64_t *v, int n) {
    double d[4];
    for (int i = 0; i < n; i++) d[i] = (double)v[i];
    return cJSON_CreateDoubleArray(d, n);
}

static cJSON *arr_affine(const double a[4][4]) {
    return mp_prep_json_numbers(&a[0][0], 16);
}

static int case_json(char **json, const char *id, const case_out_t *o, const mp_vol_t *orig, int num_classes) {
    cJSON *r = cJSON_CreateObject(), *box = cJSON_CreateObject(), *fg = cJSON_CreateArray();
    if (!r || !box || !fg) {
        cJSON_Delete(r);
        cJSON_Delete(box);
        cJSON_Delete(fg);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    cJSON_AddNumberToObject(r, "version", 1);
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddItemToObject(r, "dim", arr_i64(o->img->dim, 4));
    cJSON_AddItemToObject(r, "spacing", mp_prep_json_numbers(o->img->spacing, 3));
    cJSON_AddItemToObject(r, "affine", arr_affine(o->img->affine));
    cJSON_AddItemToObject(r, "orig_dim", arr_i64(orig->dim, 3));
    cJSON_AddItemToObject(r, "orig_affine", arr_affine(orig->affine));
    cJSON_AddItemToObject(box, "lo", arr_i64(o->prep.box.lo, 3));
    cJSON_AddItemToObject(box, "hi", arr_i64(o->prep.box.hi, 3));
    cJSON_AddItemToObject(r, "crop_box", box);
    cJSON_AddBoolToObject(r, "reoriented", o->prep.reoriented);
    cJSON_AddItemToObject(r, "img_bytes", mp_prep_json_number((double)mp_vol_bytes(o->img)));
    cJSON_AddItemToObject(r, "seg_bytes", mp_prep_json_number((double)mp_vol_bytes(o->seg)));
    cJSON_AddItemToObject(r, "fg_bytes", mp_prep_json_number((double)(o->n_xyz * 12)));
    for (int k = 1; k < num_classes; k++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "label", k);
        cJSON_AddItemToObject(e, "offset", mp_prep_json_number((double)o->fg_offset[k]));
        cJSON_AddItemToObject(e, "count", mp_prep_json_number((double)o->fg_count[k]));
        cJSON_AddItemToArray(fg, e);
    }
    cJSON_AddItemToObject(r, "fg", fg);
    *json = cJSON_Print(r);
    cJSON_Delete(r);
    return *json ? MP_OK : mp_error_set(MP_ERR_NOMEM, "out of memory");
}

static int write_file(const char *dir, const char *id, const char *suffix, const void *data, size_t len) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/cases/%s%s", dir, id, suffix) >= (int)sizeof path)
        return mp_error_set(MP_ERR_ARG, "%s: path too long", dir);
    return mp_file_write_atomic(path, data, len);
}

typedef struct {
    const char *dir;
    const mp_dataset_t *ds;
    const mp_dataset_cases_t *cases;
    const mp_plan_t *plan;
    mp_infer_plan_t ip;
    int *rc;
    char (*msg)[512];
    pthread_mutex_t lock;
    int64_t done;
    mp_cache_progress_fn progress;
    void *user;
} build_ctx_t;

static int build_case(build_ctx_t *ctx, int64_t k) {
    const mp_dataset_case_t *c = &ctx->cases->cases[k];
    mp_vol_t *img = NULL, *lab = NULL;
    case_out_t o;
    memset(&o, 0, sizeof o);
    mp_sbuf_t pr = {0};
    char *json = NULL;
    int rc = mp_prep_read_images(&img, c, ctx->ds->n_channels, &pr);
    if (rc && pr.len) rc = mp_error_set(rc, "%.*s", (int)strcspn(pr.s, "\n"), pr.s);
    free(pr.s);
    if (!rc) rc = mp_image_read(&lab, c->label);
    if (!rc && (lab->dim[0] != img->dim[0] || lab->dim[1] != img->dim[1] || lab->dim[2] != img->dim[2]))
        rc = mp_error_set(MP_ERR_MISMATCH, "%s: shape differs from the image's", c->label);
    if (!rc) rc = mp_infer_preprocess(&o.img, &o.prep, img, &ctx->ip, NULL);
    if (!rc) rc = label_to_grid(&o.seg, lab, &o.prep);
    if (!rc) rc = sample_locations(&o, ctx->plan->num_classes, ctx->plan->fg_samples_per_class, ctx->plan->seed, k);
    if (!rc) rc = case_json(&json, c->id, &o, img, ctx->plan->num_classes);
    if (!rc) rc = write_file(ctx->dir, c->id, ".img.f32", o.img->data, mp_vol_bytes(o.img));
    if (!rc) rc = write_file(ctx->dir, c->id, ".seg.u8", o.seg->data, mp_vol_bytes(o.seg));
    if (!rc) rc = write_file(ctx->dir, c->id, ".fg.i32", o.xyz, (size_t)o.n_xyz * 12);
    if (!rc) rc = write_file(ctx->dir, c->id, ".json", json, strlen(json)); /* last: the case is whole */
    if (rc) rc = mp_error_wrap(rc, "case '%s': ", c->id);
    free(json);
    case_out_free(&o);
    mp_vol_free(img);
    mp_vol_free(lab);
    return rc;
}

static void build_range(void *vctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    build_ctx_t *ctx = vctx;
    for (int64_t k = begin; k < end; k++) {
        ctx->rc[k] = build_case(ctx, k);
        if (ctx->rc[k]) snprintf(ctx->msg[k], sizeof ctx->msg[k], "%s", mp_error_message());
        pthread_mutex_lock(&ctx->lock);
        ctx->done++;
        if (ctx->progress) ctx->progress(ctx->user, ctx->done, ctx->cases->n);
        pthread_mutex_unlock(&ctx->lock);
    }
}

static int write_done(const char *dir, const mp_dataset_cases_t *cases) {
    cJSON *r = cJSON_CreateObject(), *ids = cJSON_CreateArray();
    if (!r || !ids) {
        cJSON_Delete(r);
        cJSON_Delete(ids);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    cJSON_AddNumberToObject(r, "version", 1);
    for (int64_t k = 0; k < cases->n; k++) cJSON_AddItemToArray(ids, cJSON_CreateString(cases->cases[k].id));
    cJSON_AddItemToObject(r, "cases", ids);
    char *text = cJSON_Print(r), path[4096];
    cJSON_Delete(r);
    if (!text) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/DONE", dir);
    int rc = mp_file_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

int mp_cache_build(const char *dir, const mp_dataset_t *ds, const mp_plan_t *plan, mp_pool_t *pool,
                   mp_cache_progress_fn progress, void *user) {
    char path[4096];
    int rc = mp_plan_check(plan, "plan");
    if (rc) return rc;
    if (plan->num_channels != ds->n_channels)
        return mp_error_set(MP_ERR_MISMATCH, "plan has %d channels, dataset.json %d", plan->num_channels,
                            ds->n_channels);
    if (strlen(dir) > 3000) return mp_error_set(MP_ERR_ARG, "%s: path too long", dir);
    snprintf(path, sizeof path, "%s/DONE", dir);
    if (unlink(path) != 0 && errno != ENOENT) return mp_error_set(MP_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/cases", dir);
    if ((rc = mp_mkdir_p(path))) return rc;
    snprintf(path, sizeof path, "%s/plan.json", dir);
    if ((rc = mp_plan_write(plan, path))) return rc;
    /* The dataset description travels with the cache (and on into a run
     * folder), so class names reach DICOM SEG segments at prediction time. */
    char *ds_json = NULL;
    snprintf(path, sizeof path, "%s/dataset.json", dir);
    if (!(rc = mp_dataset_to_json(ds, &ds_json))) rc = mp_file_write_atomic(path, ds_json, strlen(ds_json));
    free(ds_json);
    if (rc) return rc;
    mp_dataset_cases_t cases;
    if ((rc = mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cases))) return rc;
    build_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.dir = dir;
    ctx.ds = ds;
    ctx.cases = &cases;
    ctx.plan = plan;
    ctx.progress = progress;
    ctx.user = user;
    mp_plan_to_infer_plan(plan, &ctx.ip);
    ctx.rc = calloc((size_t)cases.n + 1, sizeof *ctx.rc);
    ctx.msg = calloc((size_t)cases.n + 1, sizeof *ctx.msg);
    if (!ctx.rc || !ctx.msg) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) {
        pthread_mutex_init(&ctx.lock, NULL);
        mp_pool_parallel_for(pool, cases.n, build_range, &ctx);
        pthread_mutex_destroy(&ctx.lock);
        for (int64_t k = 0; k < cases.n && !rc; k++)
            if (ctx.rc[k]) rc = mp_error_set(ctx.rc[k], "%s", ctx.msg[k]);
    }
    if (!rc) rc = write_done(dir, &cases);
    free(ctx.rc);
    free(ctx.msg);
    mp_dataset_cases_deinit(&cases);
    return rc;
}

/* ---- reading ---- */

static int safe_id(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n < 128 && s[0] != '.' && !strchr(s, '/') && !strchr(s, '\\');
}

void mp_cache_close(mp_cache_t *c) {
    if (!c) return;
    for (int64_t i = 0; c->ids && i < c->n_cases; i++) free(c->ids[i]);
    free(c->ids);
    free(c->dir);
    memset(c, 0, sizeof *c);
}

static int parse_done(mp_cache_t *c, const char *text, size_t len, const char *src) {
    cJSON *r = cJSON_ParseWithLength(text, len);
    int rc = MP_OK;
    const cJSON *ids = r ? cJSON_GetObjectItemCaseSensitive(r, "cases") : NULL;
    const cJSON *ver = r ? cJSON_GetObjectItemCaseSensitive(r, "version") : NULL;
    if (!cJSON_IsNumber(ver) || ver->valuedouble != 1 || !cJSON_IsArray(ids))
        rc = mp_error_set(MP_ERR_FORMAT, "%s: expected {\"version\": 1, \"cases\": [ids]}", src);
    int64_t n = rc ? 0 : cJSON_GetArraySize(ids);
    if (!rc && !(c->ids = calloc((size_t)n + 1, sizeof *c->ids))) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (const cJSON *e = rc ? NULL : ids->child; e && !rc; e = e->next) {
        if (!cJSON_IsString(e) || !safe_id(e->valuestring))
            rc = mp_error_set(MP_ERR_FORMAT, "%s: case %lld is not a plain file name", src, (long long)c->n_cases);
        else if (!(c->ids[c->n_cases] = strdup(e->valuestring))) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else c->n_cases++;
    }
    cJSON_Delete(r);
    return rc;
}

int mp_cache_open(mp_cache_t *c, const char *dir) {
    memset(c, 0, sizeof *c);
    char path[4096];
    if (strlen(dir) > 3000) return mp_error_set(MP_ERR_ARG, "%s: path too long", dir);
    if (!(c->dir = strdup(dir))) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/plan.json", dir);
    int rc = mp_plan_read(&c->plan, path);
    uint8_t *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/DONE", dir);
    if (!rc && access(path, F_OK) != 0)
        rc = mp_error_set(MP_ERR_IO, "%s: missing: the cache is incomplete (re-run medpipe preprocess)", path);
    if (!rc) rc = mp_file_read_all(path, &buf, &len);
    if (!rc) rc = parse_done(c, (const char *)buf, len, path);
    free(buf);
    if (rc) mp_cache_close(c);
    return rc;
}

/* n numbers, each an integer in [lo, hi] when `integer`. */
static int json_nums(const cJSON *o, const char *key, int n, double lo, double hi, int integer, double *out,
                     const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" must be an array of %d numbers", src, key, n);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        double d = cJSON_IsNumber(e) ? e->valuedouble : NAN;
        if (!(d >= lo && d <= hi) || (integer && d != floor(d)))
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\"[%d] is not %s in [%g, %g]", src, key, i,
                                integer ? "an integer" : "a number", lo, hi);
        out[i] = d;
    }
    return MP_OK;
}

static int json_num(const cJSON *o, const char *key, double lo, double hi, double *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= lo && d <= hi) || d != floor(d))
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" missing or not an integer in [%g, %g]", src, key, lo, hi);
    *out = d;
    return MP_OK;
}

static int parse_geometry(mp_cache_case_t *cc, const cJSON *r, const char *src) {
    double d[16];
    int rc;
    if ((rc = json_nums(r, "dim", 4, 1, 2147483647.0, 1, d, src))) return rc;
    for (int a = 0; a < 4; a++) cc->dim[a] = (int64_t)d[a];
    if ((rc = json_nums(r, "spacing", 3, 0, 1e9, 0, cc->spacing, src))) return rc;
    if ((rc = json_nums(r, "affine", 16, -1e30, 1e30, 0, d, src))) return rc;
    memcpy(cc->affine, d, sizeof cc->affine);
    if ((rc = json_nums(r, "orig_affine", 16, -1e30, 1e30, 0, d, src))) return rc;
    memcpy(cc->orig_affine, d, sizeof cc->orig_affine);
    if ((rc = json_nums(r, "orig_dim", 3, 1, 2147483647.0, 1, d, src))) return rc;
    for (int a = 0; a < 3; a++) cc->orig_dim[a] = (int64_t)d[a];
    const cJSON *box = cJSON_GetObjectItemCaseSensitive(r, "crop_box");
    if (!cJSON_IsObject(box)) return mp_error_set(MP_ERR_FORMAT, "%s: \"crop_box\" missing", src);
    double lo[3], hi[3];
    if ((rc = json_nums(box, "lo", 3, 0, 2147483647.0, 1, lo, src)) ||
        (rc = json_nums(box, "hi", 3, 1, 2147483647.0, 1, hi, src)))
        return rc;
    for (int a = 0; a < 3; a++) {
        cc->crop_box.lo[a] = (int64_t)lo[a];
        cc->crop_box.hi[a] = (int64_t)hi[a];
        if (lo[a] >= hi[a] || (int64_t)hi[a] > cc->orig_dim[a])
            return mp_error_set(MP_ERR_FORMAT, "%s: crop_box axis %d [%g, %g) outside the original %lld voxels", src,
                                a, lo[a], hi[a], (long long)cc->orig_dim[a]);
    }
    return MP_OK;
}

/* The per-class location table; offsets/counts in triplets of n_total. */
static int parse_fg(mp_cache_case_t *cc, const cJSON *r, int num_classes, uint64_t n_total, int64_t *offsets,
                    const char *src) {
    const cJSON *fg = cJSON_GetObjectItemCaseSensitive(r, "fg");
    if (!cJSON_IsArray(fg) || cJSON_GetArraySize(fg) > 255)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"fg\" must be an array of at most 255 entries", src);
    int seen[256] = {0};
    for (const cJSON *e = fg->child; e; e = e->next) {
        double lab, off, cnt;
        int rc;
        if ((rc = json_num(e, "label", 1, num_classes - 1, &lab, src)) ||
            (rc = json_num(e, "offset", 0, (double)n_total, &off, src)) ||
            (rc = json_num(e, "count", 0, (double)n_total, &cnt, src)))
            return rc;
        if (seen[(int)lab]++) return mp_error_set(MP_ERR_FORMAT, "%s: \"fg\" lists label %d twice", src, (int)lab);
        if (off + cnt > (double)n_total)
            return mp_error_set(MP_ERR_FORMAT, "%s: \"fg\" label %d: locations %g..%g beyond the %llu in the file", src,
                                (int)lab, off, off + cnt, (unsigned long long)n_total);
        mp_cache_fg_t *f = &cc->fg[cc->n_fg];
        f->label = (int)lab;
        f->count = (int64_t)cnt;
        offsets[cc->n_fg++] = (int64_t)off;
    }
    return MP_OK;
}

/* Maps a whole file read-only; its size must be `expect`. */
static int map_file(mp_cache_case_t *cc, int slot, const char *path, uint64_t expect) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mp_error_set(MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    int rc = MP_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) rc = mp_error_set(MP_ERR_IO, "%s: not a regular file", path);
    else if ((uint64_t)st.st_size != expect)
        rc = mp_error_set(MP_ERR_FORMAT, "%s: %lld bytes, the case's JSON says %llu", path, (long long)st.st_size,
                          (unsigned long long)expect);
    else if (expect > 0) {
        void *p = mmap(NULL, (size_t)expect, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) rc = mp_error_set(MP_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        else {
            cc->map[slot] = p;
            cc->map_len[slot] = (size_t)expect;
        }
    }
    close(fd);
    return rc;
}

/* Sizes from the dims must equal the JSON's byte counts. */
static int expected_sizes(const mp_cache_case_t *cc, const cJSON *r, uint64_t sz[3], const char *src) {
    uint64_t vox, img;
    double jb[3];
    int rc;
    if (mp_mul_u64((uint64_t)cc->dim[0], (uint64_t)cc->dim[1], &vox) || mp_mul_u64(vox, (uint64_t)cc->dim[2], &vox) ||
        mp_mul_u64(vox, (uint64_t)cc->dim[3], &img) || mp_mul_u64(img, 4, &img))
        return mp_error_set(MP_ERR_FORMAT, "%s: dims overflow", src);
    if ((rc = json_num(r, "img_bytes", 0, 9e15, &jb[0], src)) || (rc = json_num(r, "seg_bytes", 0, 9e15, &jb[1], src)) ||
        (rc = json_num(r, "fg_bytes", 0, 9e15, &jb[2], src)))
        return rc;
    if ((uint64_t)jb[0] != img || (uint64_t)jb[1] != vox || (uint64_t)jb[2] % 12)
        return mp_error_set(MP_ERR_FORMAT, "%s: img_bytes %.0f / seg_bytes %.0f / fg_bytes %.0f disagree with dims "
                            "%lldx%lldx%lldx%lld", src, jb[0], jb[1], jb[2], (long long)cc->dim[0],
                            (long long)cc->dim[1], (long long)cc->dim[2], (long long)cc->dim[3]);
    if (img > mp_mem_limit()) return mp_error_set(MP_ERR_LIMIT, "%s: %llu bytes exceed the memory limit", src,
                                                  (unsigned long long)img);
    sz[0] = img;
    sz[1] = vox;
    sz[2] = (uint64_t)jb[2];
    return MP_OK;
}

/* Every location inside the dims, on a voxel of its class. */
static int check_locations(const mp_cache_case_t *cc, const char *src) {
    int64_t nx = cc->dim[0], ny = cc->dim[1], nz = cc->dim[2];
    for (int f = 0; f < cc->n_fg; f++)
        for (int64_t j = 0; j < cc->fg[f].count; j++) {
            const int32_t *p = cc->fg[f].xyz + 3 * j;
            if (p[0] < 0 || p[0] >= nx || p[1] < 0 || p[1] >= ny || p[2] < 0 || p[2] >= nz)
                return mp_error_set(MP_ERR_FORMAT, "%s: label %d location %lld (%d, %d, %d) outside %lldx%lldx%lld",
                                    src, cc->fg[f].label, (long long)j, p[0], p[1], p[2], (long long)nx, (long long)ny,
                                    (long long)nz);
            if (cc->seg[((int64_t)p[2] * ny + p[1]) * nx + p[0]] != cc->fg[f].label)
                return mp_error_set(MP_ERR_FORMAT, "%s: label %d location %lld (%d, %d, %d) is not of that class", src,
                                    cc->fg[f].label, (long long)j, p[0], p[1], p[2]);
        }
    return MP_OK;
}

static int map_case(const mp_cache_t *c, const char *id, mp_cache_case_t *cc, const cJSON *r, const char *src) {
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(r, "id");
    if (!cJSON_IsString(jid) || strcmp(jid->valuestring, id) != 0)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"id\" is not '%s'", src, id);
    int rc = parse_geometry(cc, r, src);
    if (rc) return rc;
    if (cc->dim[3] != c->plan.num_channels)
        return mp_error_set(MP_ERR_MISMATCH, "%s: %lld channels, the plan has %d", src, (long long)cc->dim[3],
                            c->plan.num_channels);
    uint64_t sz[3];
    int64_t offsets[256];
    if ((rc = expected_sizes(cc, r, sz, src)) || (rc = parse_fg(cc, r, c->plan.num_classes, sz[2] / 12, offsets, src)))
        return rc;
    static const char *suffix[3] = {".img.f32", ".seg.u8", ".fg.i32"};
    for (int i = 0; i < 3 && !rc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/cases/%s%s", c->dir, id, suffix[i]);
        rc = map_file(cc, i, path, sz[i]);
    }
    if (rc) return rc;
    cc->img = cc->map[0];
    cc->seg = cc->map[1];
    for (int f = 0; f < cc->n_fg; f++) cc->fg[f].xyz = (const int32_t *)cc->map[2] + 3 * offsets[f];
    return check_locations(cc, src);
}

int mp_cache_case_map(const mp_cache_t *c, int64_t index, mp_cache_case_t *cc) {
    memset(cc, 0, sizeof *cc);
    if (!c || index < 0 || index >= c->n_cases)
        return mp_error_set(MP_ERR_ARG, "cache: case %lld out of range", (long long)index);
    const char *id = c->ids[index];
    snprintf(cc->id, sizeof cc->id, "%s", id);
    char src[4096];
    snprintf(src, sizeof src, "%s/cases/%s.json", c->dir, id);
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = mp_file_read_all(src, &buf, &len);
    if (rc) return rc;
    cJSON *r = cJSON_ParseWithLength((const char *)buf, len);
    free(buf);
    if (!r) return mp_error_set(MP_ERR_FORMAT, "%s: not valid JSON", src);
    rc = cJSON_IsObject(r) ? map_case(c, id, cc, r, src) : mp_error_set(MP_ERR_FORMAT, "%s: not an object", src);
    cJSON_Delete(r);
    if (rc) mp_cache_case_unmap(cc);
    return rc;
}

void mp_cache_case_unmap(mp_cache_case_t *cc) {
    if (!cc) return;
    for (int i = 0; i < 3; i++)
        if (cc->map[i]) munmap(cc->map[i], cc->map_len[i]);
    memset(cc, 0, sizeof *cc);
}
