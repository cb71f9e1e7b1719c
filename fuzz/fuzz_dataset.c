/* libFuzzer target for the two JSON documents medpipe reads from dataset
 * and cache folders: dataset.json (mp_dataset_parse) and plan.json
 * (mp_plan_parse). Every input goes to both. What parses is written back
 * and parsed again, and must come back the same. */
#include "medpipe/core.h"
#include "medpipe/dataset.h"
#include "medpipe/preprocess.h"

#include <stdlib.h>
#include <string.h>

static void fuzz_dataset(const char *text, size_t size) {
    mp_dataset_t *ds = NULL;
    if (mp_dataset_parse(&ds, text, size, "fuzz") != MP_OK) {
        if (ds != NULL || mp_error_message()[0] == '\0') abort();
        return;
    }
    char *json = NULL;
    if (mp_dataset_to_json(ds, &json) != MP_OK) abort();
    mp_dataset_t *back = NULL;
    if (mp_dataset_parse(&back, json, strlen(json), "roundtrip") != MP_OK) abort();
    if (back->n_channels != ds->n_channels || back->n_labels != ds->n_labels || back->num_training != ds->num_training)
        abort();
    free(json);
    mp_dataset_free(back);
    mp_dataset_free(ds);
}

static void fuzz_plan(const char *text, size_t size) {
    mp_plan_t p, back;
    if (mp_plan_parse(&p, text, size, "fuzz") != MP_OK) {
        if (mp_error_message()[0] == '\0') abort();
        return;
    }
    char *json = NULL;
    if (mp_plan_to_json(&p, &json) != MP_OK) abort();
    if (mp_plan_parse(&back, json, strlen(json), "roundtrip") != MP_OK) abort();
    if (memcmp(back.patch_dhw, p.patch_dhw, sizeof p.patch_dhw) || back.n_stages != p.n_stages ||
        back.num_channels != p.num_channels || back.seed != p.seed ||
        memcmp(back.target_spacing, p.target_spacing, sizeof p.target_spacing))
        abort();
    for (int c = 0; c < p.num_channels; c++)
        if (back.channels[c].norm.kind != p.channels[c].norm.kind ||
            strcmp(back.channels[c].name, p.channels[c].name) != 0)
            abort();
    mp_infer_plan_t ip;
    mp_plan_to_infer_plan(&p, &ip);
    free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mp_mem_set_limit(64u << 20);
    fuzz_dataset((const char *)data, size);
    fuzz_plan((const char *)data, size);
    return 0;
}
