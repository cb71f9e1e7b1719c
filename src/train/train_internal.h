/* Shared state of the trainer's files: trainer.c (setup and the loop),
 * train_ckpt.c (run settings as JSON, checkpoints, resume checks) and
 * train_val.c (sliding-window validation and Dice). */
#ifndef MP_TRAIN_INTERNAL_H
#define MP_TRAIN_INTERNAL_H

#include "medpipe/jsonl.h"
#include "medpipe/loader.h"
#include "medpipe/model.h"
#include "medpipe/train.h"

#include <stdint.h>

/* Settings fixed for the life of a run (saved in checkpoint_last.state). */
typedef struct {
    int64_t epochs, iters_per_epoch;
    mp_opt_config_t opt;
    uint64_t seed;
    int64_t val_cases, val_every, log_every;
    int augment;
    int64_t cache_cases;
    char cache_ids_hash[17]; /* FNV-1a 64 of the sorted case ids, hex */
} tr_settings_t;

/* Where the run is: everything besides weights and optimizer that resume needs. */
typedef struct {
    int64_t epoch;           /* current epoch (0-based); == epochs when done */
    int64_t step_in_epoch;   /* steps done in the current epoch */
    int64_t global_step;     /* steps done in all */
    double epoch_loss_sum;   /* finite losses of the current epoch */
    int64_t epoch_loss_n;
    int64_t skipped;         /* non-finite steps, whole run */
    int val_pending;         /* the last epoch end skipped its validation (stop requested) */
    double last_loss;
} tr_pos_t;

typedef struct {
    const mp_train_opts_t *o;
    tr_settings_t set;
    tr_pos_t pos;
    mp_model_spec_t spec;
    mp_cache_t cache;
    int cache_open;
    int64_t *train_idx, *val_idx;
    int64_t n_train, n_val;
    mp_unet_t *unet;
    mp_opt_t opt;
    mp_loader_t *loader;
    mp_pool_t *pool;
    mp_jsonl_t log;
    double best;             /* best metric, higher is better (Dice, or -mean loss); NaN: none */
    int64_t best_epoch;
    double last_dice;
    int64_t saved_step;      /* global step of the last checkpoint_last written (-1 none) */
    char path_last[4200], path_state[4200], path_best[4200];
} tr_t;

/* train_ckpt.c */
void tr_ids_hash(const mp_cache_t *c, char out[17]);
/* Saves checkpoint_last (weights, then state). */
int tr_save_last(tr_t *t);
/* Saves checkpoint_best with its metric in the metadata. */
int tr_save_best(tr_t *t, double metric, const char *criterion);
/* Reads the settings and position of RUN's state, checks the weights agree,
 * loads weights and optimizer (the U-Net and optimizer must exist). */
int tr_load_settings(tr_t *t, mp_opt_kind_t *kind);
/* The settings JSON alone (len bytes; src names it in errors): fills t->set
 * and t->pos; reads t->o->threads. */
int tr_parse_settings(tr_t *t, const char *json, size_t len, mp_opt_kind_t *kind, const char *src);
int tr_load_last(tr_t *t);
/* Best metric recorded in checkpoint_best (NaN and epoch -1 when absent). */
int tr_read_best(tr_t *t);
/* The preprocessing parts of the run's plan and the cache's plan agree. */
int tr_check_same_cache(const tr_t *t);

/* train_val.c: Dice per class over the validation cases (dice: K entries). */
int tr_validate(tr_t *t, double *dice, double *mean_fg);

#endif
