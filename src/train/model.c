/* The run folder's model description (plan.json + model.json), the adapter
 * from a U-Net to the inference engine's callback network, and opening a
 * trained model for prediction. Training writes what prediction reads, so
 * both sides share this one file. */
#include "medpipe/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mp_model_spec_from_plan(mp_model_spec_t *s, const mp_plan_t *plan) {
    int rc = mp_plan_check(plan, "plan");
    if (rc) return rc;
    memset(s, 0, sizeof *s);
    s->plan = *plan;
    mp_unet_config_t *c = &s->unet;
    mp_unet_config_default(c);
    c->in_channels = plan->num_channels;
    c->num_classes = plan->num_classes;
    c->n_stages = plan->n_stages;
    for (int i = 0; i < MP_UNET_MAX_STAGES; i++) c->features[i] = i < plan->n_stages ? plan->features[i] : 0;
    for (int a = 0; a < 3; a++) c->patch[a] = plan->patch_dhw[a];
    c->batch = plan->batch_size;
    return MP_OK;
}

static cJSON *triples(const int64_t (*v)[3], int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int s = 0; s < n; s++) {
        double d[3] = {(double)v[s][0], (double)v[s][1], (double)v[s][2]};
        cJSON_AddItemToArray(arr, cJSON_CreateDoubleArray(d, 3));
    }
    return arr;
}

int mp_model_spec_write(const char *run_dir, const mp_model_spec_t *s) {
    char path[4096];
    int rc = mp_mkdir_p(run_dir);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/plan.json", run_dir);
    if ((rc = mp_plan_write(&s->plan, path))) return rc;
    const mp_unet_config_t *c = &s->unet;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "version", MP_MODEL_VERSION);
    cJSON_AddStringToObject(root, "architecture", "plain_unet");
    cJSON_AddItemToObject(root, "kernel_dhw", triples((const int64_t(*)[3])c->kernel, c->n_stages));
    cJSON_AddItemToObject(root, "stride_dhw", triples((const int64_t(*)[3])c->stride, c->n_stages));
    cJSON_AddNumberToObject(root, "n_conv_per_stage", c->n_conv_per_stage);
    cJSON_AddNumberToObject(root, "lrelu_slope", c->lrelu_slope);
    cJSON_AddNumberToObject(root, "norm_eps", c->norm_eps);
    cJSON_AddBoolToObject(root, "deep_supervision", c->deep_supervision);
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    if (!json) return mp_error_set(MP_ERR_NOMEM, "%s: model.json: out of memory", run_dir);
    snprintf(path, sizeof path, "%s/model.json", run_dir);
    rc = mp_file_write_atomic(path, json, strlen(json));
    free(json);
    return rc;
}

/* ---- strict model.json reader ---- */

static int get_number(const cJSON *o, const char *key, double lo, double hi, double *out, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" missing or not a number in [%g, %g]", src, key, lo, hi);
    *out = v->valuedouble;
    return MP_OK;
}

/* odd: only odd values (a 'same' convolution keeps the size only with an odd kernel) */
static int get_triples(const cJSON *o, const char *key, int n, int64_t lo, int64_t hi, int odd, int64_t (*out)[3],
                       const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" must list %d (D, H, W) triples, one per stage", src, key, n);
    int s = 0;
    for (const cJSON *e = v->child; e; e = e->next, s++) {
        if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 3)
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\"[%d] is not a triple", src, key, s);
        int a = 0;
        for (const cJSON *x = e->child; x; x = x->next, a++) {
            if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < (double)lo ||
                x->valuedouble > (double)hi || (odd && fmod(x->valuedouble, 2) == 0))
                return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\"[%d][%d] is not an%s integer in [%lld, %lld]", src,
                                    key, s, a, odd ? " odd" : "", (long long)lo, (long long)hi);
            out[s][a] = (int64_t)x->valuedouble;
        }
    }
    return MP_OK;
}

static int parse_model(mp_unet_config_t *c, const cJSON *root, const char *src) {
    double version, nconv, slope, eps;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architecture");
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(root, "deep_supervision");
    int rc;
    if (!cJSON_IsObject(root)) return mp_error_set(MP_ERR_FORMAT, "%s: not a JSON object", src);
    if ((rc = get_number(root, "version", 1, MP_MODEL_VERSION, &version, src))) return rc;
    if (!cJSON_IsString(arch) || strcmp(arch->valuestring, "plain_unet") != 0)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"architecture\" must be \"plain_unet\"", src);
    if ((rc = get_triples(root, "kernel_dhw", c->n_stages, 1, 7, 1, c->kernel, src)) ||
        (rc = get_triples(root, "stride_dhw", c->n_stages, 1, 4, 0, c->stride, src)) ||
        (rc = get_number(root, "n_conv_per_stage", 1, 4, &nconv, src)) ||
        (rc = get_number(root, "lrelu_slope", 0, 1, &slope, src)) ||
        (rc = get_number(root, "norm_eps", 1e-12, 1, &eps, src)))
        return rc;
    if (!cJSON_IsBool(ds)) return mp_error_set(MP_ERR_FORMAT, "%s: \"deep_supervision\" must be true or false", src);
    if (nconv != floor(nconv)) return mp_error_set(MP_ERR_FORMAT, "%s: \"n_conv_per_stage\" is not an integer", src);
    c->n_conv_per_stage = (int)nconv;
    c->lrelu_slope = slope;
    c->norm_eps = eps;
    c->deep_supervision = cJSON_IsTrue(ds);
    return MP_OK;
}

int mp_model_spec_parse(mp_model_spec_t *s, const char *plan_json, size_t plan_len, const char *model_json,
                        size_t model_len, const char *run_dir) {
    char src[4200];
    mp_plan_t plan;
    memset(s, 0, sizeof *s);
    snprintf(src, sizeof src, "%s/plan.json", run_dir);
    int rc = mp_plan_parse(&plan, plan_json, plan_len, src);
    if (!rc) rc = mp_model_spec_from_plan(s, &plan);
    if (rc) return rc;
    snprintf(src, sizeof src, "%s/model.json", run_dir);
    if (!model_json) return mp_error_set(MP_ERR_ARG, "%s: no text", src);
    cJSON *root = cJSON_ParseWithLength(model_json, model_len);
    if (!root) return mp_error_set(MP_ERR_FORMAT, "%s: not valid JSON", src);
    rc = parse_model(&s->unet, root, src);
    cJSON_Delete(root);
    return rc;
}

int mp_model_spec_read(mp_model_spec_t *s, const char *run_dir) {
    char path[4200];
    uint8_t *plan = NULL, *model = NULL;
    size_t plan_len = 0, model_len = 0;
    snprintf(path, sizeof path, "%s/plan.json", run_dir);
    int rc = mp_file_read_all(path, &plan, &plan_len);
    snprintf(path, sizeof path, "%s/model.json", run_dir);
    if (!rc) rc = mp_file_read_all(path, &model, &model_len);
    if (!rc) rc = mp_model_spec_parse(s, (const char *)plan, plan_len, (const char *)model, model_len, run_dir);
    free(plan);
    free(model);
    return rc;
}

/* ---- U-Net behind mp_infer_net_t ---- */

static int unet_net_forward(void *self, float *logits, const float *input, int batch) {
    mp_unet_net_t *a = self;
    const mp_unet_config_t *c = mp_unet_config(a->unet);
    int64_t vox = c->patch[0] * c->patch[1] * c->patch[2];
    size_t in_n = (size_t)(c->in_channels * vox), out_n = (size_t)(c->num_classes * vox);
    if (batch < 1 || batch > c->batch)
        return mp_error_set(MP_ERR_ARG, "U-Net forward: batch %d outside 1..%lld", batch, (long long)c->batch);
    if (batch == c->batch) return mp_unet_forward(a->unet, logits, input);
    memcpy(a->in, input, (size_t)batch * in_n * sizeof(float));
    memset(a->in + (size_t)batch * in_n, 0, (size_t)(c->batch - batch) * in_n * sizeof(float));
    int rc = mp_unet_forward(a->unet, a->out, a->in);
    if (!rc) memcpy(logits, a->out, (size_t)batch * out_n * sizeof(float));
    return rc;
}

int mp_unet_net_init(mp_unet_net_t *a, mp_unet_t *unet, mp_infer_net_t *net) {
    const mp_unet_config_t *c = mp_unet_config(unet);
    int64_t vox = c->patch[0] * c->patch[1] * c->patch[2];
    memset(a, 0, sizeof *a);
    a->unet = unet;
    if (c->batch > 1) { /* partial batches need padding room */
        a->in = mp_alloc((size_t)(c->batch * c->in_channels * vox) * sizeof(float));
        a->out = mp_alloc((size_t)(c->batch * c->num_classes * vox) * sizeof(float));
        if (!a->in || !a->out) {
            mp_unet_net_deinit(a);
            return mp_error_set(MP_ERR_NOMEM, "U-Net inference buffers: out of memory");
        }
    }
    memset(net, 0, sizeof *net);
    net->in_channels = c->in_channels;
    net->num_classes = c->num_classes;
    for (int i = 0; i < 3; i++) net->patch_dhw[i] = (int)c->patch[i];
    net->max_batch = (int)c->batch;
    net->forward = unet_net_forward;
    net->self = a;
    return MP_OK;
}

void mp_unet_net_deinit(mp_unet_net_t *a) {
    if (!a) return;
    mp_free(a->in);
    mp_free(a->out);
    a->in = a->out = NULL;
}

/* ---- a trained model ---- */

struct mp_model {
    mp_model_spec_t spec;
    mp_unet_t *unet;
    mp_unet_net_t adapter;
    mp_infer_net_t net;
};

int mp_model_open(mp_model_t **out, const char *run_dir, const char *which, int max_batch, int threads) {
    *out = NULL;
    if (max_batch < 1) return mp_error_set(MP_ERR_ARG, "%s: batch %d must be >= 1", run_dir, max_batch);
    mp_model_t *m = calloc(1, sizeof *m);
    if (!m) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", run_dir);
    char path[4096];
    if (!which || !strcmp(which, "best") || !strcmp(which, "last"))
        snprintf(path, sizeof path, "%s/checkpoint_%s.safetensors", run_dir, which ? which : "best");
    else
        snprintf(path, sizeof path, "%s", which);
    int rc = mp_model_spec_read(&m->spec, run_dir);
    if (!rc) {
        m->spec.unet.batch = max_batch;
        m->spec.unet.threads = threads;
        rc = mp_unet_create(&m->unet, &m->spec.unet);
    }
    if (!rc) rc = mp_unet_load(m->unet, path);
    if (!rc) rc = mp_unet_net_init(&m->adapter, m->unet, &m->net);
    if (rc) {
        mp_model_free(m);
        return rc;
    }
    *out = m;
    return MP_OK;
}

void mp_model_free(mp_model_t *m) {
    if (!m) return;
    mp_unet_net_deinit(&m->adapter);
    mp_unet_free(m->unet);
    free(m);
}

const mp_model_spec_t *mp_model_get_spec(const mp_model_t *m) { return &m->spec; }
mp_unet_t *mp_model_unet(mp_model_t *m) { return m->unet; }
const mp_infer_net_t *mp_model_net(const mp_model_t *m) { return &m->net; }
void mp_model_infer_plan(const mp_model_t *m, mp_infer_plan_t *ip) { mp_plan_to_infer_plan(&m->spec.plan, ip); }
