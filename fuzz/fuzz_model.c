/* libFuzzer target for a run folder's model description: plan.json and
 * model.json as mp_model_spec_parse reads them for predict and resume.
 * An input holding a NUL byte is split there (plan.json, then model.json);
 * one without is a model.json paired with a fixed tiny plan. A spec that
 * parses must survive a write/read trip through a run folder, and when the
 * network is small enough it is built and run once on zeros, so that an
 * architecture the reader accepts but the U-Net cannot honour (an output
 * larger than the patch, say) shows up as a sanitizer report. */
#include "medpipe/core.h"
#include "medpipe/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char default_plan[8192];
static char run_dir[256];

static void setup(void) {
    mp_plan_t p;
    memset(&p, 0, sizeof p);
    p.version = MP_PLAN_VERSION;
    p.num_channels = 1;
    snprintf(p.channels[0].name, sizeof p.channels[0].name, "CT");
    p.channels[0].norm.kind = MP_INFER_NORM_ZSCORE;
    p.num_classes = 2;
    for (int a = 0; a < 3; a++) p.target_spacing[a] = 1, p.median_shape[a] = 8, p.patch_dhw[a] = 8;
    p.n_stages = 2;
    p.features[0] = 2;
    p.features[1] = 4;
    p.batch_size = 1;
    p.memory_budget_gb = 1;
    snprintf(p.orientation, sizeof p.orientation, "RAS");
    p.fg_samples_per_class = 10;
    char *json = NULL;
    if (mp_plan_to_json(&p, &json) != MP_OK || strlen(json) >= sizeof default_plan) abort();
    memcpy(default_plan, json, strlen(json) + 1);
    free(json);
    snprintf(run_dir, sizeof run_dir, "/tmp/medpipe-fuzz-model-%ld", (long)getpid());
}

static int same_arch(const mp_unet_config_t *a, const mp_unet_config_t *b) {
    if (a->n_stages != b->n_stages || a->in_channels != b->in_channels || a->num_classes != b->num_classes ||
        a->n_conv_per_stage != b->n_conv_per_stage || a->lrelu_slope != b->lrelu_slope ||
        a->norm_eps != b->norm_eps || a->deep_supervision != b->deep_supervision || a->batch != b->batch ||
        memcmp(a->patch, b->patch, sizeof a->patch) || memcmp(a->features, b->features, sizeof a->features))
        return 0;
    for (int s = 0; s < a->n_stages; s++)
        if (memcmp(a->kernel[s], b->kernel[s], sizeof a->kernel[s]) ||
            memcmp(a->stride[s], b->stride[s], sizeof a->stride[s]))
            return 0;
    return 1;
}

/* Builds the network for batch 1 and runs it on zeros into a logits buffer
 * of exactly the documented size (N, K, D, H, W). */
static void run_net(const mp_model_spec_t *s) {
    mp_unet_config_t c = s->unet;
    int64_t vox = c.patch[0] * c.patch[1] * c.patch[2], fsum = 0;
    for (int i = 0; i < c.n_stages; i++) fsum += c.features[i];
    if (vox > 4096 || fsum > 64 || c.in_channels > 4 || c.num_classes > 8) return; /* keep each run short */
    c.batch = 1;
    c.threads = 1;
    c.engine = MP_NN_ENGINE_REF;
    mp_unet_t *u = NULL;
    if (mp_unet_create(&u, &c) != MP_OK) return; /* refusing is fine; crashing is not */
    if (mp_unet_flops_forward(u) < 2e7) {
        float *in = calloc((size_t)(c.in_channels * vox), sizeof(float));
        float *out = malloc((size_t)(c.num_classes * vox) * sizeof(float));
        if (!in || !out) abort();
        mp_unet_init_weights(u, 1);
        (void)mp_unet_forward(u, out, in);
        free(in);
        free(out);
    }
    mp_unet_free(u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!run_dir[0]) setup();
    mp_mem_set_limit((uint64_t)256 << 20);
    const char *text = (const char *)data, *nul = memchr(data, 0, size);
    const char *plan = default_plan, *model = text;
    size_t plan_len = strlen(default_plan), model_len = size;
    if (nul) {
        plan = text;
        plan_len = (size_t)(nul - text);
        model = nul + 1;
        model_len = size - plan_len - 1;
    }
    mp_model_spec_t s, back;
    if (mp_model_spec_parse(&s, plan, plan_len, model, model_len, "fuzz") != MP_OK) {
        const char *msg = mp_error_message();
        if (!strstr(msg, "fuzz/plan.json") && !strstr(msg, "fuzz/model.json")) abort(); /* names the file */
        return 0;
    }
    if (mp_model_spec_write(run_dir, &s) != MP_OK || mp_model_spec_read(&back, run_dir) != MP_OK) abort();
    if (!same_arch(&s.unet, &back.unet)) abort();
    char path[300];
    snprintf(path, sizeof path, "%s/plan.json", run_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.json", run_dir);
    unlink(path);
    rmdir(run_dir);
    run_net(&s);
    return 0;
}
