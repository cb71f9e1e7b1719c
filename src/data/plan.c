/* The experiment plan: what preprocessing and training use, derived from
 * the fingerprint as nnU-Net does (median target spacing, CT or z-score
 * normalization, patch and depth fitted to a memory budget) and stored as
 * an editable plan.json that is read back strictly. */
#include "prep_internal.h"

#include "medpipe/vol_ops.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_BUDGET_GB 8.0
#define MAX_FITTED_STAGES 6 /* features 32, 64, 128, 256, 320, 320 */

static int stage_features(int s, int base, int cap) {
    int64_t f = (int64_t)base << (s < 8 ? s : 8);
    return f > cap ? cap : (int)f;
}

double mp_plan_memory_estimate(const int patch_dhw[3], int n_stages, const int *features, int batch, int in_ch,
                               int num_classes) {
    double act = 0, params = 0;
    for (int s = 0; s < n_stages; s++) {
        double vox = 1;
        for (int a = 0; a < 3; a++) vox *= (double)(patch_dhw[a] >> s > 0 ? patch_dhw[a] >> s : 1);
        double f = features[s], fin = s ? features[s - 1] : in_ch;
        act += vox * 16.0 * f;
        params += 27.0 * (fin * f + f * f); /* encoder stage */
        if (s + 1 < n_stages) params += 8.0 * features[s + 1] * f + 27.0 * (2 * f * f + f * f); /* decoder */
    }
    params += (double)features[0] * num_classes;
    return 4.0 * batch * act * 1.5 + 16.0 * params;
}

/* Stages so that every axis keeps >= 4 voxels at the bottleneck. */
static int fit_stages(const int p[3], int max_stages) {
    int s = max_stages;
    for (int a = 0; a < 3; a++) {
        int k = 1;
        while (k < max_stages && (p[a] >> k) >= 4) k++;
        if (k < s) s = k;
    }
    return s;
}

/* Patch (D, H, W) from the median shape (x, y, z) at target spacing. */
static void fit_patch(mp_plan_t *pl, double budget_bytes, const mp_plan_opts_t *po) {
    const double *ts = pl->target_spacing;
    double inv[3], prod = 1;
    for (int a = 0; a < 3; a++) prod *= (inv[a] = 1.0 / ts[a]);
    double scale = cbrt(256.0 * 256.0 * 256.0 / prod);
    int p[3]; /* (x, y, z) */
    for (int a = 0; a < 3; a++) {
        int64_t init = llround(inv[a] * scale), med = pl->median_shape[a];
        p[a] = (int)(init < med ? init : med);
        if (p[a] < 4) p[a] = 4;
    }
    int stages, feats[MP_PLAN_MAX_STAGES], pd[3];
    for (;;) {
        stages = fit_stages(p, po->max_stages);
        int div = 1 << (stages - 1);
        for (int a = 0; a < 3; a++) p[a] = (p[a] + div - 1) / div * div;
        for (int s = 0; s < stages; s++) feats[s] = stage_features(s, po->base_features, po->max_features);
        for (int a = 0; a < 3; a++) pd[a] = p[2 - a];
        double est = mp_plan_memory_estimate(pd, stages, feats, pl->batch_size, pl->num_channels, pl->num_classes);
        pl->memory_estimate_gb = est / 1e9;
        if (est <= budget_bytes) break;
        /* Shrink the axis that is largest relative to the median shape. */
        int best = -1;
        double best_r = 0;
        for (int a = 0; a < 3; a++) {
            if (p[a] <= 4) continue;
            double r = (double)p[a] / (double)(pl->median_shape[a] > 0 ? pl->median_shape[a] : 1);
            if (best < 0 || r > best_r || (r == best_r && p[a] > p[best])) best = a, best_r = r;
        }
        if (best < 0) break; /* 4x4x4 and still over: keep it, the estimate says so */
        p[best] = p[best] - div >= 4 ? p[best] - div : 4;
    }
    pl->n_stages = stages;
    for (int s = 0; s < MP_PLAN_MAX_STAGES; s++) pl->features[s] = s < stages ? feats[s] : 0;
    for (int a = 0; a < 3; a++) pl->patch_dhw[a] = pd[a];
}

static int is_ct(const char *name) {
    return name && strcasecmp(name, "CT") == 0;
}

void mp_plan_opts_init(mp_plan_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->budget_gb = DEFAULT_BUDGET_GB;
    o->base_features = 32;
    o->max_features = 320;
    o->max_stages = MAX_FITTED_STAGES;
}

int mp_plan_from_fingerprint(mp_plan_t *pl, const mp_fingerprint_t *fp, const mp_dataset_t *ds, double budget_gb) {
    mp_plan_opts_t o;
    mp_plan_opts_init(&o);
    if (budget_gb > 0) o.budget_gb = budget_gb;
    return mp_plan_from_fingerprint_opts(pl, fp, ds, &o);
}

static int check_plan_opts(const mp_plan_opts_t *o) {
    if (!(o->budget_gb > 0 && o->budget_gb < 1e6))
        return mp_error_set(MP_ERR_ARG, "plan: memory budget %g GB is not positive", o->budget_gb);
    if (o->base_features < 1 || o->max_features < o->base_features || o->max_features > 4096)
        return mp_error_set(MP_ERR_ARG, "plan: features %d capped at %d (need 1 <= base <= cap <= 4096)",
                            o->base_features, o->max_features);
    if (o->max_stages < 1 || o->max_stages > MP_PLAN_MAX_STAGES)
        return mp_error_set(MP_ERR_ARG, "plan: at most %d stages asked (1..%d)", o->max_stages, MP_PLAN_MAX_STAGES);
    for (int a = 0; a < 3; a++)
        if (o->target_spacing[a] < 0 || o->target_spacing[a] > 100)
            return mp_error_set(MP_ERR_ARG, "plan: target spacing %g mm outside (0, 100]", o->target_spacing[a]);
    return MP_OK;
}

int mp_plan_from_fingerprint_opts(mp_plan_t *pl, const mp_fingerprint_t *fp, const mp_dataset_t *ds,
                                  const mp_plan_opts_t *po) {
    memset(pl, 0, sizeof *pl);
    int rc = check_plan_opts(po);
    if (rc) return rc;
    if (!fp || !ds || fp->n_cases < 1) return mp_error_set(MP_ERR_ARG, "plan: empty fingerprint");
    if (fp->n_channels != ds->n_channels || ds->n_channels > MP_INFER_MAX_CHANNELS)
        return mp_error_set(MP_ERR_MISMATCH, "plan: fingerprint has %d channels, dataset.json %d", fp->n_channels,
                            ds->n_channels);
    pl->version = MP_PLAN_VERSION;
    pl->num_channels = ds->n_channels;
    pl->num_classes = mp_dataset_max_label(ds) + 1;
    if (pl->num_classes < 2 || pl->num_classes > 256)
        return mp_error_set(MP_ERR_UNSUPPORTED, "plan: labels 0..%d (need 1..255 foreground values)",
                            pl->num_classes - 1);
    pl->batch_size = 2;
    pl->memory_budget_gb = po->budget_gb;
    pl->crop_nonzero = 1;
    pl->normalize_first = 1;
    pl->seed = fp->seed;
    pl->fg_samples_per_class = 10000;
    double *v = malloc((size_t)fp->n_cases * sizeof *v);
    if (!v) return mp_error_set(MP_ERR_NOMEM, "plan: out of memory");
    double crop_vol = 1, full_vol = 1;
    for (int a = 0; a < 3; a++) {
        pl->target_spacing[a] = po->target_spacing[a] > 0 ? po->target_spacing[a] : fp->median_spacing[a];
        for (int64_t k = 0; k < fp->n_cases; k++)
            v[k] = (double)fp->cases[k].crop_shape[a] * fp->cases[k].spacing[a] / pl->target_spacing[a];
        pl->median_shape[a] = llround(mp_prep_median(v, fp->n_cases));
        for (int64_t k = 0; k < fp->n_cases; k++) v[k] = (double)fp->cases[k].shape[a];
        full_vol *= mp_prep_median(v, fp->n_cases);
        crop_vol *= (double)fp->median_crop_shape[a];
    }
    free(v);
    int use_mask = crop_vol < 0.75 * full_vol; /* nnU-Net: cropping removed a large zero region */
    for (int c = 0; c < pl->num_channels; c++) {
        mp_plan_channel_t *ch = &pl->channels[c];
        snprintf(ch->name, sizeof ch->name, "%s", ds->channel_names[c] ? ds->channel_names[c] : "");
        const mp_fp_intensity_t *it = &fp->intensity[c];
        if (is_ct(ch->name) && it->count > 0) {
            ch->norm.kind = MP_INFER_NORM_CT;
            ch->norm.ct_lo = it->p00_5;
            ch->norm.ct_hi = it->p99_5;
            ch->norm.ct_mean = it->mean;
            ch->norm.ct_std = it->std;
        } else {
            if (is_ct(ch->name)) mp_log(MP_LOG_WARN, "plan: channel %d is CT but has no foreground; z-score", c);
            ch->norm.kind = MP_INFER_NORM_ZSCORE;
            ch->norm.use_mask = use_mask;
        }
    }
    fit_patch(pl, pl->memory_budget_gb * 1e9, po);
    return mp_plan_check(pl, "plan");
}

int mp_plan_check(const mp_plan_t *p, const char *src) {
    if (p->version != MP_PLAN_VERSION)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: version %d (this medpipe reads %d)", src, p->version,
                            MP_PLAN_VERSION);
    if (p->num_channels < 1 || p->num_channels > MP_INFER_MAX_CHANNELS)
        return mp_error_set(MP_ERR_FORMAT, "%s: %d channels (1..%d)", src, p->num_channels, MP_INFER_MAX_CHANNELS);
    for (int c = 0; c < p->num_channels; c++) {
        const mp_infer_norm_t *n = &p->channels[c].norm;
        if ((unsigned)n->kind > MP_INFER_NORM_CT)
            return mp_error_set(MP_ERR_FORMAT, "%s: channel %d: unknown normalization", src, c);
        if (n->kind == MP_INFER_NORM_CT && !(isfinite(n->ct_lo) && isfinite(n->ct_hi) && n->ct_lo <= n->ct_hi &&
                                             isfinite(n->ct_mean) && isfinite(n->ct_std) && n->ct_std >= 0))
            return mp_error_set(MP_ERR_FORMAT, "%s: channel %d: CT clip [%g, %g], mean %g, std %g", src, c,
                                n->ct_lo, n->ct_hi, n->ct_mean, n->ct_std);
    }
    if (p->num_classes < 2 || p->num_classes > 256)
        return mp_error_set(MP_ERR_FORMAT, "%s: num_classes %d (2..256)", src, p->num_classes);
    for (int a = 0; a < 3; a++)
        if (!(p->target_spacing[a] > 1e-6 && p->target_spacing[a] < 1e4))
            return mp_error_set(MP_ERR_FORMAT, "%s: target_spacing[%d] = %g", src, a, p->target_spacing[a]);
    if (p->n_stages < 1 || p->n_stages > MP_PLAN_MAX_STAGES)
        return mp_error_set(MP_ERR_FORMAT, "%s: n_stages %d (1..%d)", src, p->n_stages, MP_PLAN_MAX_STAGES);
    for (int s = 0; s < p->n_stages; s++)
        if (p->features[s] < 1 || p->features[s] > 4096)
            return mp_error_set(MP_ERR_FORMAT, "%s: features[%d] = %d", src, s, p->features[s]);
    int div = 1 << (p->n_stages - 1);
    for (int a = 0; a < 3; a++)
        if (p->patch_dhw[a] < 1 || p->patch_dhw[a] > 4096 || p->patch_dhw[a] % div)
            return mp_error_set(MP_ERR_FORMAT, "%s: patch_size_dhw[%d] = %d is not a multiple of 2^(n_stages-1) = %d "
                                "in 1..4096", src, a, p->patch_dhw[a], div);
    if (p->batch_size < 1 || p->batch_size > 4096)
        return mp_error_set(MP_ERR_FORMAT, "%s: batch_size %d", src, p->batch_size);
    if (p->fg_samples_per_class < 1 || p->fg_samples_per_class > 10000000)
        return mp_error_set(MP_ERR_FORMAT, "%s: fg_samples_per_class %d (1..10^7)", src, p->fg_samples_per_class);
    if (p->orientation[0]) {
        int ax[3], sg[3];
        if (mp_orientation_parse(p->orientation, ax, sg))
            return mp_error_set(MP_ERR_FORMAT, "%s: orientation '%s' (e.g. RAS, or \"\")", src, p->orientation);
    }
    return MP_OK;
}

static const char *norm_name(mp_infer_norm_kind_t k) {
    return k == MP_INFER_NORM_CT ? "CT" : k == MP_INFER_NORM_ZSCORE ? "zscore" : "none";
}

static cJSON *ints(const int *v, int n) {
    return cJSON_CreateIntArray(v, n);
}

static cJSON *int64s(const int64_t *v, int n) {
    double d[8];
    for (int i = 0; i < n; i++) d[i] = (double)v[i];
    return cJSON_CreateDoubleArray(d, n);
}

int mp_plan_to_json(const mp_plan_t *p, char **json) {
    *json = NULL;
    cJSON *root = cJSON_CreateObject(), *chs = cJSON_CreateArray();
    if (!root || !chs) {
        cJSON_Delete(root);
        cJSON_Delete(chs);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    cJSON_AddNumberToObject(root, "version", p->version);
    for (int c = 0; c < p->num_channels; c++) {
        const mp_infer_norm_t *n = &p->channels[c].norm;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", p->channels[c].name);
        cJSON_AddStringToObject(o, "normalization", norm_name(n->kind));
        cJSON_AddBoolToObject(o, "use_mask", n->use_mask);
        double clip[2] = {n->ct_lo, n->ct_hi};
        cJSON_AddItemToObject(o, "ct_clip", mp_prep_json_numbers(clip, 2));
        cJSON_AddItemToObject(o, "ct_mean", mp_prep_json_number(n->ct_mean));
        cJSON_AddItemToObject(o, "ct_std", mp_prep_json_number(n->ct_std));
        cJSON_AddItemToArray(chs, o);
    }
    cJSON_AddItemToObject(root, "channels", chs);
    cJSON_AddNumberToObject(root, "num_classes", p->num_classes);
    cJSON_AddItemToObject(root, "target_spacing", mp_prep_json_numbers(p->target_spacing, 3));
    cJSON_AddItemToObject(root, "median_shape", int64s(p->median_shape, 3));
    cJSON_AddItemToObject(root, "patch_size_dhw", ints(p->patch_dhw, 3));
    cJSON_AddNumberToObject(root, "n_stages", p->n_stages);
    cJSON_AddItemToObject(root, "features", ints(p->features, p->n_stages));
    cJSON_AddNumberToObject(root, "batch_size", p->batch_size);
    cJSON_AddItemToObject(root, "memory_budget_gb", mp_prep_json_number(p->memory_budget_gb));
    cJSON_AddNumberToObject(root, "memory_estimate_gb", p->memory_estimate_gb);
    cJSON_AddBoolToObject(root, "crop_nonzero", p->crop_nonzero);
    cJSON_AddBoolToObject(root, "normalize_first", p->normalize_first);
    cJSON_AddStringToObject(root, "orientation", p->orientation);
    cJSON_AddItemToObject(root, "seed", mp_prep_json_number((double)p->seed));
    cJSON_AddNumberToObject(root, "fg_samples_per_class", p->fg_samples_per_class);
    *json = cJSON_Print(root);
    cJSON_Delete(root);
    return *json ? MP_OK : mp_error_set(MP_ERR_NOMEM, "out of memory");
}

/* ---- strict reader ---- */

static int get_num(const cJSON *o, const char *key, double lo, double hi, double *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" missing or not a number", src, key);
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" = %g outside [%g, %g]", src, key, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return MP_OK;
}

static int get_int(const cJSON *o, const char *key, double lo, double hi, int *out, const char *src) {
    double d;
    int rc = get_num(o, key, lo, hi, &d, src);
    if (rc) return rc;
    if (d != floor(d)) return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" = %g is not an integer", src, key, d);
    *out = (int)d;
    return MP_OK;
}

static int get_bool(const cJSON *o, const char *key, int *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsBool(v)) return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" missing or not true/false", src, key);
    *out = cJSON_IsTrue(v);
    return MP_OK;
}

/* An array of exactly n numbers in [lo, hi]. */
static int get_array(const cJSON *o, const char *key, int n, double lo, double hi, double *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" must be an array of %d numbers", src, key, n);
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e) || !(e->valuedouble >= lo && e->valuedouble <= hi))
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\"[%d] is not a number in [%g, %g]", src, key, i, lo, hi);
        out[i] = e->valuedouble;
    }
    return MP_OK;
}

static int get_str(const cJSON *o, const char *key, char *out, size_t cap, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" missing, not a string or longer than %zu", src, key, cap - 1);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return MP_OK;
}

static int parse_channel(mp_plan_channel_t *ch, const cJSON *o, int c, const char *src) {
    char s[512], kind[16];
    snprintf(s, sizeof s, "%s: channels[%d]", src, c);
    int rc;
    if (!cJSON_IsObject(o)) return mp_error_set(MP_ERR_FORMAT, "%s is not an object", s);
    if ((rc = get_str(o, "name", ch->name, sizeof ch->name, s)) || (rc = get_str(o, "normalization", kind, sizeof kind, s)))
        return rc;
    if (!strcmp(kind, "CT")) ch->norm.kind = MP_INFER_NORM_CT;
    else if (!strcmp(kind, "zscore")) ch->norm.kind = MP_INFER_NORM_ZSCORE;
    else if (!strcmp(kind, "none")) ch->norm.kind = MP_INFER_NORM_NONE;
    else return mp_error_set(MP_ERR_FORMAT, "%s: normalization '%s' (CT, zscore or none)", s, kind);
    double clip[2];
    if ((rc = get_bool(o, "use_mask", &ch->norm.use_mask, s))) return rc;
    if (ch->norm.kind != MP_INFER_NORM_CT) return MP_OK;
    if ((rc = get_array(o, "ct_clip", 2, -1e30, 1e30, clip, s)) || (rc = get_num(o, "ct_mean", -1e30, 1e30, &ch->norm.ct_mean, s)) ||
        (rc = get_num(o, "ct_std", 0, 1e30, &ch->norm.ct_std, s)))
        return rc;
    ch->norm.ct_lo = clip[0];
    ch->norm.ct_hi = clip[1];
    return MP_OK;
}

static int parse_root(mp_plan_t *p, const cJSON *root, const char *src) {
    double d3[3], seed;
    int rc;
    if (!cJSON_IsObject(root)) return mp_error_set(MP_ERR_FORMAT, "%s: not a JSON object", src);
    if ((rc = get_int(root, "version", 0, 1e6, &p->version, src))) return rc;
    if (p->version != MP_PLAN_VERSION) return mp_plan_check(p, src);
    const cJSON *chs = cJSON_GetObjectItemCaseSensitive(root, "channels");
    if (!cJSON_IsArray(chs) || cJSON_GetArraySize(chs) < 1 || cJSON_GetArraySize(chs) > MP_INFER_MAX_CHANNELS)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"channels\" must be an array of 1..%d objects", src,
                            MP_INFER_MAX_CHANNELS);
    for (const cJSON *e = chs->child; e; e = e->next, p->num_channels++)
        if ((rc = parse_channel(&p->channels[p->num_channels], e, p->num_channels, src))) return rc;
    if ((rc = get_int(root, "num_classes", 2, 256, &p->num_classes, src)) ||
        (rc = get_array(root, "target_spacing", 3, 1e-6, 1e4, p->target_spacing, src)) ||
        (rc = get_array(root, "median_shape", 3, 0, 1e9, d3, src)))
        return rc;
    for (int a = 0; a < 3; a++) p->median_shape[a] = (int64_t)d3[a];
    if ((rc = get_array(root, "patch_size_dhw", 3, 1, 4096, d3, src))) return rc;
    for (int a = 0; a < 3; a++) p->patch_dhw[a] = (int)d3[a];
    if ((rc = get_int(root, "n_stages", 1, MP_PLAN_MAX_STAGES, &p->n_stages, src))) return rc;
    double f[MP_PLAN_MAX_STAGES];
    if ((rc = get_array(root, "features", p->n_stages, 1, 4096, f, src))) return rc;
    for (int s = 0; s < p->n_stages; s++) p->features[s] = (int)f[s];
    if ((rc = get_int(root, "batch_size", 1, 4096, &p->batch_size, src)) ||
        (rc = get_num(root, "memory_budget_gb", 0, 1e9, &p->memory_budget_gb, src)) ||
        (rc = get_bool(root, "crop_nonzero", &p->crop_nonzero, src)) ||
        (rc = get_bool(root, "normalize_first", &p->normalize_first, src)) ||
        (rc = get_str(root, "orientation", p->orientation, sizeof p->orientation, src)) ||
        (rc = get_num(root, "seed", 0, 9007199254740992.0, &seed, src)) ||
        (rc = get_int(root, "fg_samples_per_class", 1, 1e7, &p->fg_samples_per_class, src)))
        return rc;
    p->seed = (uint64_t)seed;
    return MP_OK;
}

int mp_plan_parse(mp_plan_t *p, const char *json, size_t len, const char *src) {
    memset(p, 0, sizeof *p);
    if (!json) return mp_error_set(MP_ERR_ARG, "%s: no text", src);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return mp_error_set(MP_ERR_FORMAT, "%s: not valid JSON", src);
    int rc = parse_root(p, root, src);
    cJSON_Delete(root);
    if (!rc) rc = mp_plan_check(p, src);
    if (!rc) /* derived: follows edits of the patch, stages or batch */
        p->memory_estimate_gb = mp_plan_memory_estimate(p->patch_dhw, p->n_stages, p->features, p->batch_size,
                                                        p->num_channels, p->num_classes) / 1e9;
    if (rc) memset(p, 0, sizeof *p);
    return rc;
}

int mp_plan_read(mp_plan_t *p, const char *path) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = mp_file_read_all(path, &buf, &len);
    if (rc) return rc;
    rc = mp_plan_parse(p, (const char *)buf, len, path);
    free(buf);
    return rc;
}

int mp_plan_write(const mp_plan_t *p, const char *path) {
    int rc = mp_plan_check(p, path);
    char *json = NULL;
    if (!rc) rc = mp_plan_to_json(p, &json);
    if (!rc) rc = mp_file_write_atomic(path, json, strlen(json));
    free(json);
    return rc;
}

void mp_plan_to_infer_plan(const mp_plan_t *p, mp_infer_plan_t *ip) {
    mp_infer_plan_init(ip);
    ip->num_channels = p->num_channels;
    ip->num_classes = p->num_classes;
    for (int a = 0; a < 3; a++) {
        ip->patch_dhw[a] = p->patch_dhw[a];
        ip->target_spacing[a] = p->target_spacing[a];
    }
    memcpy(ip->orientation, p->orientation, sizeof ip->orientation);
    ip->crop_nonzero = p->crop_nonzero;
    ip->normalize_first = p->normalize_first;
    for (int c = 0; c < p->num_channels && c < MP_INFER_MAX_CHANNELS; c++) ip->norm[c] = p->channels[c].norm;
}
