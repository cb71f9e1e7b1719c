/* medpipe training data: patch sampling with foreground oversampling,
 * nnU-Net's augmentations, and a prefetching loader whose worker threads
 * fill a bounded queue of ready batches while the model computes.
 *
 * Determinism: every random draw of sample s of batch (epoch, step) comes
 * from a Philox stream keyed by (seed, epoch, step, global sample index), so
 * a batch is a pure function of those numbers: the same bytes for any number
 * of worker threads, any queue depth, and whether the loader runs in the
 * caller's thread or ahead of it. Data-parallel ranks take disjoint shares
 * of one global batch by giving their first global sample index.
 *
 * Layouts: images (B, C, D, H, W) float32, labels (B, 1, D, H, W) uint8, W
 * fastest (D = z, H = y, W = x of the cached volume), as src/nn expects. */
#ifndef MEDPIPE_LOADER_H
#define MEDPIPE_LOADER_H

#include <stdint.h>

#include "medpipe/core.h"
#include "medpipe/preprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Augmentations, nnU-Net v2 defaults (probabilities per sample unless said). */
typedef struct {
    /* spatial: one trilinear resample (labels nearest) through a combined affine */
    double p_rotation;        /* 0.2 */
    double rotation_deg[3];   /* +-30 about each axis (x, y, z) */
    double p_scale;           /* 0.2 */
    double scale_range[2];    /* 0.7..1.4 (zoom factor, one for all axes) */
    double p_elastic;         /* 0 (off, as nnU-Net v2) */
    double elastic_alpha[2];  /* displacement magnitude range, voxels: 0..200 (scaled by sigma) */
    double elastic_sigma[2];  /* smoothing sigma range, voxels: 9..13 */
    /* intensity (per channel where nnU-Net does so) */
    double p_noise;           /* 0.1 */
    double noise_var[2];      /* 0..0.1 */
    double p_blur;            /* 0.2 (each channel then 0.5) */
    double blur_sigma[2];     /* 0.5..1.0 voxels */
    double p_brightness;      /* 0.15 */
    double brightness[2];     /* 0.75..1.25 multiplier */
    double p_contrast;        /* 0.15 */
    double contrast[2];       /* 0.75..1.25, range preserved */
    double p_lowres;          /* 0.25 (each channel then 0.5) */
    double lowres_zoom[2];    /* 0.5..1: downsample nearest, upsample trilinear */
    double p_gamma_inv;       /* 0.1: gamma on the inverted image */
    double p_gamma;           /* 0.3 */
    double gamma_range[2];    /* 0.7..1.5, range and (nnU-Net) mean/std retained */
    unsigned mirror_axes;     /* bits: 0 = x (W), 1 = y (H), 2 = z (D); 7 = all; each flipped with p 0.5 */
} mp_aug_opts_t;

/* nnU-Net v2's defaults as listed above. */
void mp_aug_opts_init(mp_aug_opts_t *a);
/* No augmentation at all (probabilities 0, no mirroring). */
void mp_aug_opts_none(mp_aug_opts_t *a);

typedef struct {
    const mp_cache_t *cache;     /* opened cache; the loader maps the cases it uses */
    const int64_t *cases;        /* indices into the cache of the training split */
    int64_t n_cases;
    int batch;                   /* samples this loader produces per step (the local batch) */
    int64_t global_batch;        /* samples of one global batch (>= batch); 0 = batch */
    int64_t first_sample;        /* this loader's first global sample index (rank * batch) */
    int patch_dhw[3];            /* (D, H, W) of the patches handed to the network */
    double fg_fraction;          /* 0.33: global sample i is forced to contain foreground
                                    when i >= round(global_batch * (1 - fg_fraction)) */
    int64_t iters_per_epoch;     /* steps per epoch (keys only; the loader never stops) */
    uint64_t seed;
    int augment;                 /* 0: patches only, no augmentation */
    mp_aug_opts_t aug;
    int workers;                 /* worker threads; 0 = batches made in the caller's thread */
    int queue_depth;             /* ready batches kept ahead (>= 1; default 2 x workers) */
} mp_loader_opts_t;

/* Defaults: batch 2, fg_fraction 0.33, iters 250, seed 0, augment 1 with
 * mp_aug_opts_init, workers 0, queue 0 (auto). cache, cases, patch must be set. */
void mp_loader_opts_init(mp_loader_opts_t *o);

typedef struct {
    int64_t epoch, step;
    float *img;      /* (B, C, D, H, W) */
    uint8_t *seg;    /* (B, 1, D, H, W) */
    int64_t case_index[64]; /* cache index of each sample (first min(B, 64)) */
} mp_batch_t;

typedef struct mp_loader mp_loader_t;

/* Allocates every buffer (queue slots, per-worker scratch) and maps the
 * training cases; no allocation happens per batch afterwards. Workers start
 * at (epoch 0, step 0) or wherever mp_loader_seek says before the first next. */
int mp_loader_create(mp_loader_t **out, const mp_loader_opts_t *o);
/* Stops the workers (they finish the batch in hand) and frees. NULL ok. */
void mp_loader_free(mp_loader_t *l);
/* Restarts production at (epoch, step) (resume): drops queued batches. */
int mp_loader_seek(mp_loader_t *l, int64_t epoch, int64_t step);
/* The next batch in order; blocks until it is ready. *wait_s (may be NULL)
 * receives the seconds spent waiting. The batch stays valid until the next
 * call of mp_loader_next, seek or free. */
int mp_loader_next(mp_loader_t *l, const mp_batch_t **batch, double *wait_s);

/* One sample as a pure function (what the loader runs for each sample):
 * global sample index `sample` of batch (epoch, step), written to img
 * (C, D, H, W) and seg (1, D, H, W). Thread-safe; it allocates its own
 * scratch per call (tests, tools); the loader's workers use preallocated scratch. */
int mp_loader_sample(const mp_loader_t *l, float *img, uint8_t *seg, int64_t epoch, int64_t step, int64_t sample,
                     int64_t *case_index);

#ifdef __cplusplus
}
#endif
#endif
