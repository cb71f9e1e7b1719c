/* medpipe training: the loop that turns a preprocessing cache into a run
 * folder (see medpipe/model.h for its layout): plan overrides, the U-Net
 * and its optimizer, the loader over the training split, poly learning
 * rate, JSON-lines logs, sliding-window validation with per-class Dice,
 * atomic checkpoints, exact resume and a cooperative stop flag (Ctrl-C).
 *
 * Split: the cache's case ids are sorted (strcmp) and the LAST val_cases of
 * them are held out for validation; the rest train. With val_cases 0 there
 * is no validation and checkpoint_best follows the lowest mean training loss
 * of an epoch instead of the highest mean foreground Dice.
 *
 * Determinism: a batch is a pure function of (seed, epoch, step) (see
 * medpipe/loader.h) and the U-Net step is deterministic for a fixed thread
 * count, so an interrupted run resumed from checkpoint_last (at an epoch end
 * or mid-epoch) gives bit-identical weights to an uninterrupted one.
 *
 * Checkpoint consistency: checkpoint_last.safetensors carries the global
 * step in its metadata ("global_step") and checkpoint_last.state the same
 * step in its config JSON. The weights are renamed into place first, then
 * the state; a kill between the two renames leaves a weights file one save
 * ahead of the state, which resume detects and refuses with a message that
 * names both steps (it never continues from a mismatched pair).
 * checkpoint_best.safetensors records its metric in its own metadata and is
 * written before the pair, so resume reads the best value from it.
 *
 * Data parallelism: when mp_dist_init (medpipe/dist.h) set up a world of N
 * ranks before mp_train_run, every rank calls mp_train_run with the same
 * options and they train one model: the batch is the GLOBAL batch (divisible
 * by N), rank r's loader makes global samples r*B/N .. (r+1)*B/N-1 of each
 * batch, rank 0's initial weights are broadcast, gradients are averaged
 * during the backward pass (mp_dist_grad_t through the U-Net's gradient
 * hook), and every rank applies the same update. With the default loss
 * (batch_dice 0: a mean over samples) the averaged gradient is the global
 * batch's gradient, so N ranks follow the 1-process run up to floating-point
 * reassociation. Logged losses are rank averages; validation case i runs on
 * rank i % N with the TP/FP/FN counts summed, so Dice is the 1-process
 * figure. Only rank 0 writes files (log, checkpoints) and calls the progress
 * callback. The state is rank-independent: a run resumes with any N that
 * divides its batch. Setup errors are agreed (every rank returns an error);
 * a later error on one rank leaves the others waiting in a collective, so
 * the caller must then call mp_dist_abort. */
#ifndef MEDPIPE_TRAIN_H
#define MEDPIPE_TRAIN_H

#include <signal.h>
#include <stdint.h>

#include "medpipe/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mp_train_run's status when the stop flag ended the run early (after the
 * current step, with checkpoint_last written); errors are negative. */
#define MP_TRAIN_STOPPED 1

typedef enum { MP_TRAIN_EV_STEP = 0, MP_TRAIN_EV_VALIDATION, MP_TRAIN_EV_EPOCH } mp_train_event_kind_t;

/* What the progress callback receives (pointers valid during the call). */
typedef struct {
    mp_train_event_kind_t kind;
    int64_t epoch, epochs;       /* current epoch (0-based) and the total */
    int64_t step, total_steps;   /* global steps done so far and planned */
    int64_t first_step;          /* global step the run (or resume) started at */
    double loss, lr, grad_norm;  /* STEP: this step; EPOCH: loss = the epoch's mean */
    double data_wait_s, step_s, patches_per_s;
    int skipped;                 /* STEP: 1 when the update was skipped (non-finite) */
    /* VALIDATION */
    int num_classes;
    const double *class_dice;    /* num_classes entries; [0] background; NaN when a class is absent */
    double mean_fg_dice;         /* mean over the foreground classes with a value */
    int improved;                /* checkpoint_best was written */
} mp_train_event_t;

typedef void (*mp_train_progress_fn)(void *user, const mp_train_event_t *ev);

typedef struct {
    const char *cache_dir;       /* preprocessing cache (medpipe preprocess) */
    const char *run_dir;         /* run folder, created */
    int64_t epochs;              /* 1000; on resume 0 keeps the run's value, more extends it */
    int64_t iters_per_epoch;     /* 250 */
    int batch;                   /* 0: the plan's */
    int patch_dhw[3];            /* all 0: the plan's; else (D, H, W), divisible by 2^(stages-1) */
    int base_features;           /* 0: the plan's; else features[s] = min(base * 2^s, max_features) */
    int max_features;            /* cap with base_features; 0: 320 */
    int n_stages;                /* 0: the plan's */
    mp_opt_kind_t optimizer;     /* MP_OPT_SGD (nnU-Net: lr 1e-2, Nesterov 0.99, wd 3e-5, clip 12) */
    double lr;                   /* <= 0: the optimizer's default */
    double weight_decay;         /* < 0: the optimizer's default */
    uint64_t seed;               /* weights and batches; 12345 */
    int threads;                 /* compute threads of the U-Net and validation; <= 0: all CPUs */
    int workers;                 /* loader threads; 0: batches made in the training thread */
    int64_t val_every;           /* validate every this many epochs (and at the end); 1 */
    int64_t val_cases;           /* held-out cases; < 0: auto (n / 5, at least 1 when n >= 2); 0: none */
    int deep_supervision;        /* 0 */
    int augment;                 /* 1: nnU-Net's augmentations; 0: patches only */
    int64_t log_every;           /* a log.jsonl step line every this many steps; 1 */
    int check_replicas;          /* data parallel: check after every step that all ranks hold the
                                    same parameters (always checked at epoch ends); 0 */
    int resume;                  /* continue RUN from checkpoint_last; the run's settings apply */
    mp_train_progress_fn progress; /* may be NULL */
    void *progress_user;
    volatile sig_atomic_t *stop; /* may be NULL; polled between steps */
} mp_train_opts_t;

/* Defaults as listed above; cache_dir and run_dir must be set. */
void mp_train_opts_init(mp_train_opts_t *o);

typedef struct {
    int64_t epoch;            /* epochs completed */
    int64_t step;             /* global steps done */
    int64_t steps_run;        /* steps run by this call */
    int64_t skipped;          /* updates skipped for a non-finite loss or gradient (whole run) */
    double last_loss;         /* loss of the last step */
    double best_dice;         /* best mean foreground Dice (NaN without validation) */
    int64_t best_epoch;       /* epoch of checkpoint_best (-1: none yet) */
    double last_dice;         /* mean foreground Dice of the last validation (NaN: none) */
    double mean_step_s;       /* mean wall time of a step in this call (data wait included) */
    double mean_data_wait_s;  /* mean time spent waiting for the loader */
    int error_on_all_ranks;   /* data parallel: the error was agreed at setup, every rank returns it
                                 (no mp_dist_abort needed) */
} mp_train_result_t;

/* Trains (or resumes) as described at the top of this file. Returns MP_OK
 * when all epochs are done, MP_TRAIN_STOPPED when *stop ended the run early
 * (checkpoint_last then holds the exact mid-epoch position), or a negative
 * MP_ERR_* status. res may be NULL. */
int mp_train_run(const mp_train_opts_t *o, mp_train_result_t *res);

#ifdef __cplusplus
}
#endif
#endif
