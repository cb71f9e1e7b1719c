/* Fuzz target: safetensors checkpoint loading (mp_unet_load and
 * mp_train_state_load) into a tiny U-Net. The loader reads from a path, so
 * each input is written to a per-process scratch file first. */
#include "medpipe/core.h"
#include "medpipe/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static mp_unet_t *model;
static mp_opt_t opt;
static char path[256];

static void setup(void) {
    mp_unet_config_t c;
    mp_unet_config_default(&c);
    c.n_stages = 2;
    c.features[0] = 2, c.features[1] = 3;
    c.batch = 1;
    c.patch[0] = c.patch[1] = c.patch[2] = 4;
    c.threads = 1;
    c.engine = MP_NN_ENGINE_REF;
    if (mp_unet_create(&model, &c) != MP_OK) abort();
    mp_opt_config_t oc;
    mp_opt_config_sgd(&oc);
    if (mp_opt_init(&opt, &oc, mp_unet_param_count(model)) != MP_OK) abort();
    snprintf(path, sizeof path, "/tmp/medpipe-fuzz-st-%ld.safetensors", (long)getpid());
    mp_mem_set_limit((uint64_t)256 << 20);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!model) setup();
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    (void)mp_unet_load(model, path);
    uint64_t rng[4];
    (void)mp_train_state_load(path, &opt, rng);
    unlink(path);
    return 0;
}
