/* Shared state of the trainer's files: trainer.c (setup and the loop),
 * train_ckpt.c (run settings as JSON, checkpoints, resume checks) and
 * train_val.c (sliding-window validation and Dice). */
#ifndef MP_TRAIN_INTERNAL_H
#define MP_TRAIN_INTERNAL_H

#include "medpipe/dist.h"
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
    /* data parallelism (train_dist.c): the mp_dist world at the start */
    int rank, size;          /* size 1: a plain single-process run */
    int local_batch;         /* this rank's share of the global batch */
    mp_dist_grad_t dgrad;    /* gradient averaging fed by the U-Net's hook */
    int dgrad_on;
    int setup_failed_all;    /* setup failed and every rank knows it */
    int stop_agreed;         /* some rank saw the stop flag (agreed at the last step) */
} tr_t;

/* Log lines come from rank 0 only; other ranks keep no log open. */
#define TR_RECORD(t, ...) ((t)->rank == 0 ? mp_jsonl_record(&(t)->log, __VA_ARGS__) : MP_OK)

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

/* train_dist.c: everything that differs with more than one rank; each is a
 * no-op (or the plain single-process behaviour) in a world of one. */
/* The local batch (global / ranks) or an error naming both numbers. */
int tr_dist_local_batch(tr_t *t);
/* After the weights exist: rank 0's weights to every rank, gradient hook. */
int tr_dist_start(tr_t *t);
void tr_dist_deinit(tr_t *t);
/* Every rank learns whether every rank's setup succeeded (rc: this rank's
 * status); a rank that succeeded returns an error naming the failed ranks. */
int tr_dist_agree_setup(tr_t *t, int rc);
/* After forward/backward: waits for the averaged gradient and averages the
 * loss over ranks (*bad: some rank had a non-finite loss, then *loss NaN);
 * agrees the stop flag. */
int tr_dist_after_backward(tr_t *t, double *loss, int *bad);
/* Hashes the parameters, checks that all ranks hold the same bits (an
 * error otherwise), writes the hash as 16 hex digits. */
int tr_dist_check_params(tr_t *t, char hex[17]);
/* Sums n counts over ranks in place (exact up to 2^53). */
int tr_dist_sum_counts(int64_t *cnt, int n);

/* train_val.c: Dice per class over the validation cases (dice: K entries). */
int tr_validate(tr_t *t, double *dice, double *mean_fg);

#endif
