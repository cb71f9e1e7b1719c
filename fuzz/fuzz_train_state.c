/* libFuzzer target for what `medpipe train --resume` reads before it
 * touches any weights: the run settings JSON (tr_parse_settings), and the
 * safetensors headers of checkpoint_last.state / .safetensors and
 * checkpoint_best.safetensors with their metadata (tr_load_settings,
 * tr_read_best). Every input goes to both: as the settings JSON, and as
 * one file standing for all three checkpoints. Settings that parse must be
 * self-consistent, since the trainer seeks the loader and sizes the poly
 * schedule from them without further checks. */
#include "medpipe/core.h"
#include "train/train_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mp_train_opts_t opts;
static char path[256];

static void check_settings(const tr_t *t) {
    const tr_settings_t *s = &t->set;
    const tr_pos_t *p = &t->pos;
    if (s->epochs < 1 || s->iters_per_epoch < 1 || p->epoch < 0 || p->epoch > s->epochs || p->step_in_epoch < 0 ||
        p->step_in_epoch >= s->iters_per_epoch || p->epoch_loss_n > s->iters_per_epoch || s->val_every < 1 ||
        s->log_every < 1 || s->val_cases < 0 || s->cache_cases < 1 || strlen(s->cache_ids_hash) != 16)
        abort();
    /* the trainer multiplies these (poly schedule, events) */
    if (s->iters_per_epoch > INT64_MAX / s->epochs) abort();
    if (p->global_step != p->epoch * s->iters_per_epoch + p->step_in_epoch) abort();
    if (!isfinite(s->opt.lr) || !isfinite(s->opt.weight_decay) || !isfinite(p->epoch_loss_sum)) abort();
}

static void fresh(tr_t *t) {
    memset(t, 0, sizeof *t);
    t->o = &opts;
    snprintf(t->path_last, sizeof t->path_last, "%s", path);
    snprintf(t->path_state, sizeof t->path_state, "%s", path);
    snprintf(t->path_best, sizeof t->path_best, "%s", path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!path[0]) {
        mp_train_opts_init(&opts);
        opts.threads = 1;
        snprintf(path, sizeof path, "/tmp/medpipe-fuzz-train-state-%ld", (long)getpid());
    }
    mp_mem_set_limit((uint64_t)256 << 20);
    static tr_t t;
    mp_opt_kind_t kind;
    fresh(&t);
    if (tr_parse_settings(&t, (const char *)data, size, &kind, "fuzz") == MP_OK) check_settings(&t);
    else if (!strstr(mp_error_message(), "fuzz")) abort();

    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    fresh(&t);
    if (tr_load_settings(&t, &kind) == MP_OK) check_settings(&t);
    else if (!strstr(mp_error_message(), path)) abort();
    fresh(&t);
    if (tr_read_best(&t) == MP_OK) {
        if (!(isnan(t.best) && t.best_epoch == -1) && !isfinite(t.best)) abort();
    } else if (!strstr(mp_error_message(), path)) {
        abort();
    }
    unlink(path);
    return 0;
}
