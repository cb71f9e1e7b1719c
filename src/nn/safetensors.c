/* Checkpoints in the safetensors format: an 8-byte little-endian header
 * length, a JSON header {"name": {"dtype", "shape", "data_offsets"}, ...,
 * "__metadata__": {...}} padded with spaces to 8 bytes, then the raw
 * little-endian tensors back to back. Model parameters and the training state
 * go to separate files, each written atomically. Loading validates the whole
 * file (every name, dtype, shape and offset) before touching the model. */
#include "nn/unet_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors writing assumes a little-endian host"
#endif

#define ST_MAX_HEADER (64u << 20)

typedef struct {
    const char *name;
    const char *dtype; /* "F32", "I64", "U64" */
    int ndim;
    int64_t shape[5];
    const void *data;
    size_t bytes;
} st_tensor_t;

static int st_write(const char *path, const st_tensor_t *t, int n, const char *const *meta, int n_meta) {
    cJSON *root = cJSON_CreateObject(), *md = NULL;
    int rc = MP_OK;
    if (!root) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    if (n_meta > 0) {
        md = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; md && i < n_meta; i++) {
            const char *eq = strchr(meta[i], '=');
            char key[128];
            if (!eq || (size_t)(eq - meta[i]) >= sizeof key) continue;
            memcpy(key, meta[i], (size_t)(eq - meta[i]));
            key[eq - meta[i]] = 0;
            cJSON_AddStringToObject(md, key, eq + 1);
        }
    }
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name), *sh, *of;
        if (!e) break;
        cJSON_AddStringToObject(e, "dtype", t[i].dtype);
        sh = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; sh && k < t[i].ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[k]));
        of = cJSON_AddArrayToObject(e, "data_offsets");
        if (of) {
            cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
            cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + t[i].bytes)));
        }
        off += t[i].bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return mp_error_set(MP_ERR_NOMEM, "%s: cannot format the header", path);
    size_t jl = strlen(json), padded = (jl + 7) / 8 * 8;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    mp_afile_t f;
    memset(&f, 0, sizeof f);
    if ((rc = mp_afile_open(&f, path))) {
        free(json);
        return rc;
    }
    static const char spaces[8] = "        ";
    rc = mp_afile_write(&f, len8, 8);
    if (!rc) rc = mp_afile_write(&f, json, jl);
    if (!rc && padded > jl) rc = mp_afile_write(&f, spaces, padded - jl);
    for (int i = 0; !rc && i < n; i++)
        if (t[i].bytes) rc = mp_afile_write(&f, t[i].data, t[i].bytes);
    free(json);
    if (!rc) rc = mp_afile_commit(&f);
    mp_afile_abort(&f);
    return rc;
}

/* A parsed file: the header and the data section. */
typedef struct {
    const char *path;
    uint8_t *buf;
    size_t len;
    cJSON *hdr;
    const uint8_t *data;
    size_t data_len;
} st_file_t;

static void st_close(st_file_t *f) {
    cJSON_Delete(f->hdr);
    free(f->buf);
    memset(f, 0, sizeof *f);
}

static int st_open(st_file_t *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->path = path;
    int rc = mp_file_read_all(path, &f->buf, &f->len);
    if (rc) return rc;
    if (f->len < 8) {
        rc = mp_error_set(MP_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors header", path, f->len);
        goto fail;
    }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)f->buf[i] << (8 * i);
    if (hl > ST_MAX_HEADER || hl > f->len - 8) {
        rc = mp_error_set(MP_ERR_FORMAT, "%s: header length %llu exceeds the file (%zu bytes): truncated?", path,
                          (unsigned long long)hl, f->len);
        goto fail;
    }
    f->hdr = cJSON_ParseWithLength((const char *)f->buf + 8, (size_t)hl);
    if (!f->hdr || !cJSON_IsObject(f->hdr)) {
        rc = mp_error_set(MP_ERR_FORMAT, "%s: the header is not a JSON object", path);
        goto fail;
    }
    f->data = f->buf + 8 + hl;
    f->data_len = f->len - 8 - (size_t)hl;
    return MP_OK;
fail:
    st_close(f);
    return rc;
}

static void shape_str(char *out, size_t cap, const int64_t *shape, int ndim) {
    size_t o = 0;
    o += (size_t)snprintf(out + o, cap - o, "(");
    for (int i = 0; i < ndim && o < cap; i++) o += (size_t)snprintf(out + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(out + o, cap - o, ")");
}

/* Finds tensor `name` and checks dtype, shape and offsets; *data points into the file. */
static int st_get(const st_file_t *f, const char *name, const char *dtype, const int64_t *shape, int ndim, size_t esize,
                  const uint8_t **data) {
    cJSON *e = cJSON_GetObjectItemCaseSensitive(f->hdr, name);
    if (!e) return mp_error_set(MP_ERR_MISMATCH, "%s: tensor '%s' is missing", f->path, name);
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype"), *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || strcmp(dt->valuestring, dtype) != 0)
        return mp_error_set(MP_ERR_MISMATCH, "%s: tensor '%s' has dtype %s, expected %s", f->path, name,
                            cJSON_IsString(dt) ? dt->valuestring : "(none)", dtype);
    int64_t fs[8];
    int fn = cJSON_IsArray(sh) ? cJSON_GetArraySize(sh) : -1;
    for (int i = 0; i < fn && i < 8; i++) {
        cJSON *v = cJSON_GetArrayItem(sh, i);
        /* range-checked before the cast: a huge value must not be UB */
        fs[i] = cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble <= 9007199254740992.0
                    ? (int64_t)v->valuedouble : -1;
    }
    int same = fn == ndim;
    for (int i = 0; same && i < ndim; i++) same = fs[i] == shape[i];
    if (!same) {
        char a[128], b[128];
        shape_str(a, sizeof a, fs, fn < 0 ? 0 : fn > 8 ? 8 : fn);
        shape_str(b, sizeof b, shape, ndim);
        return mp_error_set(MP_ERR_MISMATCH, "%s: tensor '%s' has shape %s in the file, %s in the model", f->path, name, a, b);
    }
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) count *= (uint64_t)shape[i];
    cJSON *b0 = cJSON_IsArray(of) && cJSON_GetArraySize(of) == 2 ? cJSON_GetArrayItem(of, 0) : NULL;
    cJSON *b1 = b0 ? cJSON_GetArrayItem(of, 1) : NULL;
    if (!cJSON_IsNumber(b0) || !cJSON_IsNumber(b1) || b0->valuedouble < 0 || b1->valuedouble < b0->valuedouble ||
        b1->valuedouble > (double)f->data_len || (uint64_t)(b1->valuedouble - b0->valuedouble) != count * esize)
        return mp_error_set(MP_ERR_FORMAT, "%s: tensor '%s' has data offsets outside the %zu data bytes (truncated?)",
                            f->path, name, f->data_len);
    *data = f->data + (size_t)b0->valuedouble;
    return MP_OK;
}

/* Every tensor in the file must be one the caller expects. */
static int st_no_extras(const st_file_t *f, int (*known)(const void *, const char *), const void *ctx) {
    for (cJSON *e = f->hdr->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__") != 0 && !known(ctx, e->string))
            return mp_error_set(MP_ERR_MISMATCH, "%s: tensor '%s' is not part of the model", f->path, e->string);
    return MP_OK;
}

static int unet_knows(const void *ctx, const char *name) {
    const mp_unet_t *m = ctx;
    for (int i = 0; i < m->np; i++)
        if (strcmp(m->p[i].name, name) == 0) return 1;
    return 0;
}

int mp_unet_save(const mp_unet_t *m, const char *path, const char *const *meta, int n_meta) {
    st_tensor_t *t = calloc((size_t)m->np, sizeof *t);
    if (!t) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int i = 0; i < m->np; i++) {
        const mp_param_info_t *p = &m->p[i];
        t[i] = (st_tensor_t){p->name, "F32", p->ndim, {0}, m->params + p->offset, (size_t)p->count * sizeof(float)};
        memcpy(t[i].shape, p->shape, sizeof p->shape);
    }
    int rc = st_write(path, t, m->np, meta, n_meta);
    free(t);
    return rc;
}

int mp_unet_load(mp_unet_t *m, const char *path) {
    st_file_t f;
    int rc = st_open(&f, path);
    if (rc) return rc;
    const uint8_t **src = calloc((size_t)m->np, sizeof *src);
    if (!src) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int i = 0; !rc && i < m->np; i++)
        rc = st_get(&f, m->p[i].name, "F32", m->p[i].shape, m->p[i].ndim, sizeof(float), &src[i]);
    if (!rc) rc = st_no_extras(&f, unet_knows, m);
    for (int i = 0; !rc && i < m->np; i++)
        memcpy(m->params + m->p[i].offset, src[i], (size_t)m->p[i].count * sizeof(float));
    free(src);
    st_close(&f);
    return rc;
}

static int state_knows(const void *ctx, const char *name) {
    (void)ctx;
    return !strcmp(name, "optimizer.state") || !strcmp(name, "optimizer.step") || !strcmp(name, "rng.state");
}

int mp_train_state_save(const char *path, const mp_opt_t *o, const uint64_t rng_state[4], const char *config_json) {
    int64_t slots = o->cfg.kind == MP_OPT_ADAMW ? 2 : 1;
    st_tensor_t t[3] = {
        {"optimizer.state", "F32", 1, {slots * o->n}, o->state, (size_t)(slots * o->n) * sizeof(float)},
        {"optimizer.step", "I64", 1, {1}, &o->step, sizeof o->step},
        {"rng.state", "U64", 1, {4}, rng_state, 4 * sizeof(uint64_t)},
    };
    char kind[64], cfgbuf[1] = "";
    snprintf(kind, sizeof kind, "optimizer=%s", o->cfg.kind == MP_OPT_ADAMW ? "adamw" : "sgd");
    size_t cl = config_json ? strlen(config_json) : 0;
    char *cfg = malloc(cl + 8);
    if (!cfg) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    snprintf(cfg, cl + 8, "config=%s", config_json ? config_json : cfgbuf);
    const char *meta[2] = {kind, cfg};
    int rc = st_write(path, t, 3, meta, 2);
    free(cfg);
    return rc;
}

int mp_train_state_load(const char *path, mp_opt_t *o, uint64_t rng_state[4]) {
    st_file_t f;
    int rc = st_open(&f, path);
    if (rc) return rc;
    int64_t slots = o->cfg.kind == MP_OPT_ADAMW ? 2 : 1, ss = slots * o->n, one = 1, four = 4;
    const uint8_t *ps, *pt, *pr;
    cJSON *md = cJSON_GetObjectItemCaseSensitive(f.hdr, "__metadata__");
    cJSON *kind = md ? cJSON_GetObjectItemCaseSensitive(md, "optimizer") : NULL;
    const char *want = o->cfg.kind == MP_OPT_ADAMW ? "adamw" : "sgd";
    if (!cJSON_IsString(kind) || strcmp(kind->valuestring, want) != 0)
        rc = mp_error_set(MP_ERR_MISMATCH, "%s: optimizer is %s in the file, %s in the configuration", path,
                          cJSON_IsString(kind) ? kind->valuestring : "(none)", want);
    if (!rc) rc = st_get(&f, "optimizer.state", "F32", &ss, 1, sizeof(float), &ps);
    if (!rc) rc = st_get(&f, "optimizer.step", "I64", &one, 1, sizeof(int64_t), &pt);
    if (!rc) rc = st_get(&f, "rng.state", "U64", &four, 1, sizeof(uint64_t), &pr);
    if (!rc) rc = st_no_extras(&f, state_knows, NULL);
    if (!rc) {
        memcpy(o->state, ps, (size_t)ss * sizeof(float));
        memcpy(&o->step, pt, sizeof o->step);
        if (rng_state) memcpy(rng_state, pr, 4 * sizeof(uint64_t));
    }
    st_close(&f);
    return rc;
}
