/* The trainer's checkpoints: run settings and position as JSON inside
 * checkpoint_last.state, the global step in checkpoint_last.safetensors'
 * metadata (so a torn pair is detected), checkpoint_best with its metric,
 * and the checks that a resume continues the same run on the same cache. */
#include "train/train_internal.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TR_CONFIG_VERSION 1
#define TR_MAX_HEADER (64u << 20)

void tr_ids_hash(const mp_cache_t *c, char out[17]) {
    /* The cache lists ids sorted; hash them in that order with a separator. */
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < c->n_cases; i++) {
        for (const unsigned char *s = (const unsigned char *)c->ids[i]; *s; s++) h = (h ^ *s) * 1099511628211ull;
        h = (h ^ 0xffu) * 1099511628211ull;
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

/* Reads only the JSON header of a safetensors file; *md is its __metadata__ (may be NULL). */
static int st_read_header(const char *path, cJSON **root, const cJSON **md) {
    *root = NULL;
    *md = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return mp_error_set(MP_ERR_IO, "%s: cannot open", path);
    uint8_t len8[8];
    uint64_t hl = 0;
    int rc = MP_OK;
    if (fread(len8, 1, 8, f) != 8) rc = mp_error_set(MP_ERR_FORMAT, "%s: too short for a safetensors header", path);
    for (int i = 0; !rc && i < 8; i++) hl |= (uint64_t)len8[i] << (8 * i);
    if (!rc && (hl == 0 || hl > TR_MAX_HEADER || hl > mp_mem_limit()))
        rc = mp_error_set(MP_ERR_FORMAT, "%s: header length %llu out of range", path, (unsigned long long)hl);
    struct stat st; /* no allocation for a header the file does not hold */
    if (!rc && fstat(fileno(f), &st) == 0 && hl > (uint64_t)st.st_size - 8)
        rc = mp_error_set(MP_ERR_FORMAT, "%s: header length %llu but the file has %lld bytes", path,
                          (unsigned long long)hl, (long long)st.st_size);
    char *buf = rc ? NULL : malloc((size_t)hl);
    if (!rc && !buf) rc = mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    if (!rc && fread(buf, 1, (size_t)hl, f) != hl) rc = mp_error_set(MP_ERR_FORMAT, "%s: truncated header", path);
    fclose(f);
    if (!rc) {
        *root = cJSON_ParseWithLength(buf, (size_t)hl);
        if (!*root || !cJSON_IsObject(*root)) rc = mp_error_set(MP_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    free(buf);
    if (rc) {
        cJSON_Delete(*root);
        *root = NULL;
        return rc;
    }
    *md = cJSON_GetObjectItemCaseSensitive(*root, "__metadata__");
    return MP_OK;
}

static const char *md_string(const cJSON *md, const char *key) {
    const cJSON *v = md ? cJSON_GetObjectItemCaseSensitive(md, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static char *settings_json(const tr_t *t) {
    const tr_settings_t *s = &t->set;
    const tr_pos_t *p = &t->pos;
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, s->seed);
    cJSON *r = cJSON_CreateObject();
    if (!r) return NULL;
    cJSON_AddNumberToObject(r, "version", TR_CONFIG_VERSION);
    cJSON_AddStringToObject(r, "cache_dir", t->o->cache_dir);
    cJSON_AddNumberToObject(r, "cache_cases", (double)s->cache_cases);
    cJSON_AddStringToObject(r, "cache_ids_fnv1a", s->cache_ids_hash);
    cJSON_AddNumberToObject(r, "epochs", (double)s->epochs);
    cJSON_AddNumberToObject(r, "iters_per_epoch", (double)s->iters_per_epoch);
    cJSON_AddStringToObject(r, "optimizer", s->opt.kind == MP_OPT_ADAMW ? "adamw" : "sgd");
    cJSON_AddNumberToObject(r, "lr", s->opt.lr);
    cJSON_AddNumberToObject(r, "weight_decay", s->opt.weight_decay);
    cJSON_AddStringToObject(r, "seed", seed);
    cJSON_AddNumberToObject(r, "val_cases", (double)s->val_cases);
    cJSON_AddNumberToObject(r, "val_every", (double)s->val_every);
    cJSON_AddNumberToObject(r, "log_every", (double)s->log_every);
    cJSON_AddBoolToObject(r, "augment", s->augment);
    cJSON_AddNumberToObject(r, "threads", t->o->threads);
    cJSON_AddNumberToObject(r, "epoch", (double)p->epoch);
    cJSON_AddNumberToObject(r, "step_in_epoch", (double)p->step_in_epoch);
    cJSON_AddNumberToObject(r, "global_step", (double)p->global_step);
    cJSON_AddNumberToObject(r, "epoch_loss_sum", p->epoch_loss_sum);
    cJSON_AddNumberToObject(r, "epoch_loss_n", (double)p->epoch_loss_n);
    cJSON_AddNumberToObject(r, "skipped", (double)p->skipped);
    cJSON_AddBoolToObject(r, "val_pending", p->val_pending);
    cJSON_AddNumberToObject(r, "last_loss", isfinite(p->last_loss) ? p->last_loss : 0);
    char *json = mp_json_print(r);
    cJSON_Delete(r);
    return json;
}

int tr_save_last(tr_t *t) {
    if (t->rank != 0) { /* one writer: rank 0's files are the run's */
        t->saved_step = t->pos.global_step;
        return MP_OK;
    }
    char step[64], epoch[64];
    snprintf(step, sizeof step, "global_step=%lld", (long long)t->pos.global_step);
    snprintf(epoch, sizeof epoch, "epoch=%lld", (long long)t->pos.epoch);
    const char *meta[3] = {step, epoch, "format=medpipe"};
    int rc = mp_unet_save(t->unet, t->path_last, meta, 3);
    if (rc) return rc;
    char *json = settings_json(t);
    if (!json) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", t->path_state);
    uint64_t rng[4] = {t->set.seed, (uint64_t)t->pos.epoch, (uint64_t)t->pos.step_in_epoch, 0};
    rc = mp_train_state_save(t->path_state, &t->opt, rng, json);
    free(json);
    if (!rc) t->saved_step = t->pos.global_step;
    return rc;
}

int tr_save_best(tr_t *t, double metric, const char *criterion) {
    if (t->rank != 0) return MP_OK;
    char m[64], crit[64], step[64], epoch[64];
    snprintf(m, sizeof m, "metric=%.17g", metric);
    snprintf(crit, sizeof crit, "criterion=%s", criterion);
    snprintf(step, sizeof step, "global_step=%lld", (long long)t->pos.global_step);
    snprintf(epoch, sizeof epoch, "epoch=%lld", (long long)t->best_epoch);
    const char *meta[5] = {m, crit, step, epoch, "format=medpipe"};
    return mp_unet_save(t->unet, t->path_best, meta, 5);
}

/* ---- strict reading of the settings JSON ---- */

static int js_int(const cJSON *o, const char *key, int64_t lo, int64_t hi, int64_t *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi)
        return mp_error_set(MP_ERR_FORMAT, "%s: config \"%s\" missing or not an integer in [%lld, %lld]", src, key,
                            (long long)lo, (long long)hi);
    *out = (int64_t)v->valuedouble;
    return MP_OK;
}

static int js_num(const cJSON *o, const char *key, double *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return mp_error_set(MP_ERR_FORMAT, "%s: config \"%s\" missing or not a number", src, key);
    *out = v->valuedouble;
    return MP_OK;
}

static int js_bool(const cJSON *o, const char *key, int *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsBool(v)) return mp_error_set(MP_ERR_FORMAT, "%s: config \"%s\" missing or not a boolean", src, key);
    *out = cJSON_IsTrue(v);
    return MP_OK;
}

static int parse_settings(tr_t *t, const cJSON *r, mp_opt_kind_t *kind, const char *src) {
    tr_settings_t *s = &t->set;
    tr_pos_t *p = &t->pos;
    const int64_t big = (int64_t)1 << 52;
    int64_t ver, n;
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(r, "optimizer");
    const cJSON *hash = cJSON_GetObjectItemCaseSensitive(r, "cache_ids_fnv1a");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(r, "seed");
    int rc;
    if (!cJSON_IsObject(r)) return mp_error_set(MP_ERR_FORMAT, "%s: config is not a JSON object", src);
    if ((rc = js_int(r, "version", 1, TR_CONFIG_VERSION, &ver, src))) return rc;
    if (!cJSON_IsString(opt) || (strcmp(opt->valuestring, "sgd") && strcmp(opt->valuestring, "adamw")))
        return mp_error_set(MP_ERR_FORMAT, "%s: config \"optimizer\" must be \"sgd\" or \"adamw\"", src);
    *kind = strcmp(opt->valuestring, "adamw") ? MP_OPT_SGD : MP_OPT_ADAMW;
    if (*kind == MP_OPT_SGD) mp_opt_config_sgd(&s->opt);
    else mp_opt_config_adamw(&s->opt);
    if (!cJSON_IsString(hash) || strlen(hash->valuestring) != 16)
        return mp_error_set(MP_ERR_FORMAT, "%s: config \"cache_ids_fnv1a\" missing", src);
    memcpy(s->cache_ids_hash, hash->valuestring, 17);
    char *end = NULL;
    if (!cJSON_IsString(seed) || !seed->valuestring[0] ||
        (s->seed = strtoull(seed->valuestring, &end, 10), *end != 0))
        return mp_error_set(MP_ERR_FORMAT, "%s: config \"seed\" missing or not a decimal string", src);
    if ((rc = js_int(r, "cache_cases", 1, big, &s->cache_cases, src)) ||
        (rc = js_int(r, "epochs", 1, big, &s->epochs, src)) ||
        (rc = js_int(r, "iters_per_epoch", 1, big, &s->iters_per_epoch, src)) ||
        (rc = js_num(r, "lr", &s->opt.lr, src)) || (rc = js_num(r, "weight_decay", &s->opt.weight_decay, src)) ||
        (rc = js_int(r, "val_cases", 0, big, &s->val_cases, src)) ||
        (rc = js_int(r, "val_every", 1, big, &s->val_every, src)) ||
        (rc = js_int(r, "log_every", 1, big, &s->log_every, src)) || (rc = js_bool(r, "augment", &s->augment, src)) ||
        (rc = js_int(r, "epoch", 0, s->epochs, &p->epoch, src)) ||
        (rc = js_int(r, "step_in_epoch", 0, s->iters_per_epoch - 1, &p->step_in_epoch, src)) ||
        (rc = js_int(r, "global_step", 0, big, &p->global_step, src)) ||
        (rc = js_num(r, "epoch_loss_sum", &p->epoch_loss_sum, src)) ||
        (rc = js_int(r, "epoch_loss_n", 0, s->iters_per_epoch, &p->epoch_loss_n, src)) ||
        (rc = js_int(r, "skipped", 0, big, &p->skipped, src)) || (rc = js_bool(r, "val_pending", &p->val_pending, src)) ||
        (rc = js_num(r, "last_loss", &p->last_loss, src)))
        return rc;
    if (s->iters_per_epoch > big / s->epochs) /* the trainer multiplies them (schedule length) */
        return mp_error_set(MP_ERR_FORMAT, "%s: config epochs %lld x iters_per_epoch %lld exceeds 2^52 steps", src,
                            (long long)s->epochs, (long long)s->iters_per_epoch);
    if (p->global_step != p->epoch * s->iters_per_epoch + p->step_in_epoch)
        return mp_error_set(MP_ERR_FORMAT, "%s: config global_step %lld is not epoch %lld x %lld + %lld", src,
                            (long long)p->global_step, (long long)p->epoch, (long long)s->iters_per_epoch,
                            (long long)p->step_in_epoch);
    if (js_int(r, "threads", -1, 1 << 20, &n, src) == MP_OK && n != t->o->threads && t->o->threads > 0)
        mp_log(MP_LOG_WARN, "%s: the run used %lld compute threads, now %d: the result may differ in the last bits",
               src, (long long)n, t->o->threads);
    return MP_OK;
}

int tr_parse_settings(tr_t *t, const char *json, size_t len, mp_opt_kind_t *kind, const char *src) {
    cJSON *cfg = json ? cJSON_ParseWithLength(json, len) : NULL;
    if (!cfg) return mp_error_set(MP_ERR_FORMAT, "%s: no valid \"config\" metadata", src);
    int rc = parse_settings(t, cfg, kind, src);
    cJSON_Delete(cfg);
    return rc;
}

int tr_load_settings(tr_t *t, mp_opt_kind_t *kind) {
    cJSON *root = NULL, *wroot = NULL;
    const cJSON *md = NULL, *wmd = NULL;
    int rc = st_read_header(t->path_state, &root, &md);
    if (rc) return rc;
    const char *cs = md_string(md, "config");
    rc = tr_parse_settings(t, cs, cs ? strlen(cs) : 0, kind, t->path_state);
    cJSON_Delete(root);
    if (rc) return rc;
    /* the weights must be from the same save as the state */
    if ((rc = st_read_header(t->path_last, &wroot, &wmd))) return rc;
    const char *ws = md_string(wmd, "global_step");
    char *end = NULL;
    long long wstep = ws ? strtoll(ws, &end, 10) : -1;
    if (!ws || *end || wstep != t->pos.global_step)
        rc = mp_error_set(MP_ERR_MISMATCH,
                          "%s: weights are at global step %s but %s is at step %lld (the run was killed while "
                          "saving); the pair cannot be resumed exactly",
                          t->path_last, ws ? ws : "(unknown)", t->path_state, (long long)t->pos.global_step);
    cJSON_Delete(wroot);
    return rc;
}

int tr_load_last(tr_t *t) {
    uint64_t rng[4];
    int rc = mp_unet_load(t->unet, t->path_last);
    if (!rc) rc = mp_train_state_load(t->path_state, &t->opt, rng);
    return rc;
}

int tr_read_best(tr_t *t) {
    t->best = NAN;
    t->best_epoch = -1;
    if (!mp_file_is_regular(t->path_best)) return MP_OK;
    cJSON *root = NULL;
    const cJSON *md = NULL;
    int rc = st_read_header(t->path_best, &root, &md);
    if (rc) return rc;
    const char *m = md_string(md, "metric"), *e = md_string(md, "epoch");
    char *end1 = NULL, *end2 = NULL;
    double v = m ? strtod(m, &end1) : NAN;
    long long ep = e ? strtoll(e, &end2, 10) : -1;
    if (!m || !e || *end1 || *end2 || !isfinite(v))
        rc = mp_error_set(MP_ERR_FORMAT, "%s: metadata \"metric\"/\"epoch\" missing or malformed", t->path_best);
    int is_loss = md_string(md, "criterion") && !strcmp(md_string(md, "criterion"), "train_loss");
    cJSON_Delete(root);
    if (rc) return rc;
    t->best = is_loss ? -v : v; /* kept as higher-is-better */
    t->best_epoch = ep;
    return MP_OK;
}

static int same_norm(const mp_infer_norm_t *a, const mp_infer_norm_t *b) {
    return a->kind == b->kind && a->use_mask == b->use_mask && a->ct_lo == b->ct_lo && a->ct_hi == b->ct_hi &&
           a->ct_mean == b->ct_mean && a->ct_std == b->ct_std;
}

int tr_check_same_cache(const tr_t *t) {
    const mp_plan_t *r = &t->spec.plan, *c = &t->cache.plan;
    const char *what = NULL;
    if (r->num_channels != c->num_channels) what = "num_channels";
    else if (r->num_classes != c->num_classes) what = "num_classes";
    else if (memcmp(r->target_spacing, c->target_spacing, sizeof r->target_spacing)) what = "target_spacing";
    else if (r->crop_nonzero != c->crop_nonzero) what = "crop_nonzero";
    else if (r->normalize_first != c->normalize_first) what = "normalize_first";
    else if (strcmp(r->orientation, c->orientation)) what = "orientation";
    for (int i = 0; !what && i < r->num_channels; i++)
        if (!same_norm(&r->channels[i].norm, &c->channels[i].norm)) what = "normalization";
    if (what)
        return mp_error_set(MP_ERR_MISMATCH,
                            "%s: the run was trained on a different preprocessing (plan field \"%s\" differs from "
                            "%s/plan.json); resume with the cache it was started on",
                            t->o->run_dir, what, t->o->cache_dir);
    char h[17];
    tr_ids_hash(&t->cache, h);
    if (t->cache.n_cases != t->set.cache_cases || strcmp(h, t->set.cache_ids_hash))
        return mp_error_set(MP_ERR_MISMATCH,
                            "%s: the run was trained on a cache of %lld cases (ids hash %s), %s has %lld cases (ids "
                            "hash %s); resume with the cache it was started on",
                            t->o->run_dir, (long long)t->set.cache_cases, t->set.cache_ids_hash, t->o->cache_dir,
                            (long long)t->cache.n_cases, h);
    return MP_OK;
}
