/* The trainer's resume reader (src/train/train_ckpt.c) on hostile input:
 * the settings JSON of checkpoint_last.state accepted when consistent and
 * refused, naming the field, when not (a schedule too long to count in
 * 64 bits, a global step that disagrees with epoch and step); a state file
 * whose header length claims more than the file holds is refused before
 * anything is allocated for it. Regressions for what fuzz/fuzz_train_state.c
 * checks. */
#include "harness.h"
#include "medpipe/core.h"
#include "train/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static mp_train_opts_t g_opts;

static tr_t *new_tr(const char *state_path) {
    tr_t *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->o = &g_opts;
    snprintf(t->path_state, sizeof t->path_state, "%s", state_path);
    snprintf(t->path_last, sizeof t->path_last, "%s", state_path);
    snprintf(t->path_best, sizeof t->path_best, "%s", state_path);
    return t;
}

/* The settings as `medpipe train` writes them, with three fields replaced. */
static void settings(char *buf, size_t cap, const char *epochs, const char *iters, const char *pos) {
    snprintf(buf, cap,
             "{\"version\":1,\"cache_dir\":\"cache\",\"cache_cases\":3,\"cache_ids_fnv1a\":\"4ae3e96e0109d1cc\","
             "\"epochs\":%s,\"iters_per_epoch\":%s,\"optimizer\":\"adamw\",\"lr\":0.01,\"weight_decay\":3e-05,"
             "\"seed\":\"12345\",\"val_cases\":1,\"val_every\":1,\"log_every\":1,\"augment\":true,\"threads\":1,"
             "%s,\"epoch_loss_sum\":1.5,\"epoch_loss_n\":1,\"skipped\":0,\"val_pending\":false,"
             "\"last_loss\":0.75}",
             epochs, iters, pos);
}

static void test_settings(void) {
    char js[1024];
    mp_opt_kind_t kind = MP_OPT_SGD;
    tr_t *t = new_tr("run/checkpoint_last.state");
    settings(js, sizeof js, "4", "3", "\"epoch\":2,\"step_in_epoch\":1,\"global_step\":7");
    MP_CHECK_OK(tr_parse_settings(t, js, strlen(js), &kind, "run/checkpoint_last.state"));
    MP_CHECK(kind == MP_OPT_ADAMW && t->set.opt.kind == MP_OPT_ADAMW && t->set.seed == 12345);
    MP_CHECK(t->set.epochs == 4 && t->set.iters_per_epoch == 3 && t->pos.epoch == 2 && t->pos.step_in_epoch == 1);
    MP_CHECK(t->pos.global_step == 7 && t->pos.epoch_loss_sum == 1.5 && t->pos.last_loss == 0.75);
    MP_CHECK(strcmp(t->set.cache_ids_hash, "4ae3e96e0109d1cc") == 0);

    /* 2^52 epochs of 2^52 steps: the product does not fit in 64 bits */
    settings(js, sizeof js, "4503599627370496", "4503599627370496",
             "\"epoch\":4503599627370496,\"step_in_epoch\":0,\"global_step\":0");
    MP_CHECK(tr_parse_settings(t, js, strlen(js), &kind, "run/checkpoint_last.state") == MP_ERR_FORMAT);
    MP_CHECKF(strstr(mp_error_message(), "run/checkpoint_last.state") && strstr(mp_error_message(), "2^52"), "'%s'",
              mp_error_message());

    settings(js, sizeof js, "4", "3", "\"epoch\":2,\"step_in_epoch\":1,\"global_step\":8");
    MP_CHECK(tr_parse_settings(t, js, strlen(js), &kind, "run/checkpoint_last.state") == MP_ERR_FORMAT);
    MP_CHECKF(strstr(mp_error_message(), "global_step 8"), "'%s'", mp_error_message());

    settings(js, sizeof js, "4", "3", "\"epoch\":2,\"step_in_epoch\":3,\"global_step\":9");
    MP_CHECK(tr_parse_settings(t, js, strlen(js), &kind, "run/checkpoint_last.state") == MP_ERR_FORMAT);
    MP_CHECKF(strstr(mp_error_message(), "\"step_in_epoch\""), "'%s'", mp_error_message());

    MP_CHECK(tr_parse_settings(t, js, 10, &kind, "run/checkpoint_last.state") == MP_ERR_FORMAT);
    MP_CHECK(tr_parse_settings(t, NULL, 0, &kind, "run/checkpoint_last.state") == MP_ERR_FORMAT);
    free(t);
}

/* An 8-byte length of 60 MiB followed by a few bytes. */
static void test_header_longer_than_file(void) {
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s", mp_test_tmpdir("train_ckpt"));
    snprintf(path, sizeof path, "%s/checkpoint_last.state", dir);
    uint8_t bytes[20] = {0, 0, 0xc0, 0x03, 0, 0, 0, 0, '{', '}'};
    MP_CHECK_OK(mp_file_write_atomic(path, bytes, sizeof bytes));
    tr_t *t = new_tr(path);
    mp_opt_kind_t kind;
    MP_CHECK(tr_load_settings(t, &kind) == MP_ERR_FORMAT);
    MP_CHECKF(strstr(mp_error_message(), path) && strstr(mp_error_message(), "the file has 20 bytes"), "'%s'",
              mp_error_message());
    MP_CHECK(tr_read_best(t) == MP_ERR_FORMAT);
    free(t);
    remove(path);
    remove(dir);
}

int main(void) {
    mp_train_opts_init(&g_opts);
    g_opts.threads = 1;
    MP_RUN(test_settings);
    MP_RUN(test_header_longer_than_file);
    return mp_test_summary();
}
