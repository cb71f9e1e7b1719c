/* medpipe inference: nnU-Net style sliding-window prediction over a volume
 * with any network behind a small callback interface, Gaussian importance
 * weighting, batched windows, mirroring test-time augmentation, and a
 * slab-wise reduction whose memory grows with the patch depth, not with the
 * volume depth; then the whole per-image predict pipeline (reorient, crop,
 * normalize, resample, predict, resample back, uncrop, post-process).
 *
 * Axis conventions: volumes are (x, y, z) as everywhere in medpipe (x
 * fastest); the network sees (N, C, D, H, W) arrays with D = z, H = y, W = x,
 * and patch sizes are given in that (D, H, W) order, as src/nn does. */
#ifndef MEDPIPE_INFER_H
#define MEDPIPE_INFER_H

#include <stdint.h>

#include "medpipe/core.h"
#include "medpipe/vol.h"
#include "medpipe/vol_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the network, as the inference engine sees it ---- */

/* forward() maps a batch of `batch` (1..max_batch) input patches, float32
 * (batch, in_channels, D, H, W), to logits (batch, num_classes, D, H, W); it
 * returns 0 or a negative MP_ERR_* status (with mp_error_set). It is called
 * from the thread that runs the sliding window and may use its own threads.
 * The result for one patch must not depend on the other patches of the
 * batch (batching then never changes a prediction). */
typedef struct {
    int in_channels;
    int num_classes;  /* >= 1; the label of class k is k */
    int patch_dhw[3]; /* window size (D, H, W) = (z, y, x) */
    int max_batch;    /* most patches per call, >= 1 */
    int (*forward)(void *self, float *logits, const float *input, int batch);
    void *self;
} mp_infer_net_t;

/* ---- sliding-window options ---- */

/* What is averaged over the windows and mirrors covering a voxel (weighted
 * by the Gaussian importance of the voxel in each window):
 * PROBS: the softmax of each window's logits (medpipe's default); the result
 *        is a probability per class.
 * LOGITS: the logits themselves, softmax taken once at the end (nnU-Net v2:
 *        it sums logits over mirrors and Gaussian-weighted over windows). */
typedef enum { MP_INFER_AVG_PROBS = 0, MP_INFER_AVG_LOGITS = 1 } mp_infer_avg_t;

typedef struct {
    double step;           /* window step as a fraction of the patch, (0, 1]; default 0.5 */
    int gaussian;          /* 1 (default): Gaussian importance weights; 0: every voxel weighs 1 */
    double sigma_scale;    /* Gaussian sigma = sigma_scale * patch per axis; default 1/8 */
    unsigned mirror_axes;  /* test-time mirroring: bit 0 = x (W), 1 = y (H), 2 = z (D); every
                              combination of the set axes is run (7 = all 8 flips); 0 = off */
    mp_infer_avg_t average;
    int max_batch;         /* 0 = the network's; otherwise at most this many patches per call */
    float pad_value;       /* input value of voxels added when the volume is smaller than the patch */
    /* Called after each forward call with windows fully processed so far and the total (may be NULL). */
    void (*progress)(void *user, int64_t done, int64_t total);
    void *progress_user;
} mp_infer_opts_t;

/* Defaults: step 0.5, Gaussian with sigma 1/8, no mirroring, PROBS, pad 0. */
void mp_infer_opts_init(mp_infer_opts_t *o);

/* Window start positions along one axis of `size` voxels (size >= patch,
 * i.e. after padding) as nnU-Net's compute_steps_for_sliding_window: n =
 * ceil((size - patch) / (patch * step)) + 1 windows, start i at
 * round_half_even(i * (size - patch) / (n - 1)); so the first starts at 0
 * and the last at size - patch. Writes at most `cap` starts (starts may be
 * NULL to count); *n receives the count. */
int mp_infer_window_starts(int64_t size, int64_t patch, double step, int64_t *starts, int64_t cap, int64_t *n);

/* nnU-Net's Gaussian importance map over a patch (D, H, W), W fastest:
 * exp(-d^2 / (2 sigma^2)) per axis, d = distance from voxel patch/2
 * (integer division), sigma = sigma_scale * patch, zero beyond scipy's
 * truncation radius int(4 sigma + 0.5), product over axes (maximum 1 at the
 * centre); zeros are replaced by the smallest non-zero value. */
int mp_infer_gaussian(float *map, const int patch_dhw[3], double sigma_scale);

/* ---- the core: sliding window with a per-plane sink ---- */

/* Receives the reduced prediction one z-plane at a time, in increasing z:
 * scores holds, row by row, the num_classes rows of nx floats of each y
 * (class k of voxel (x, y) at scores[(y*num_classes + k)*nx + x]):
 * probabilities with AVG_PROBS, averaged logits with AVG_LOGITS. The
 * buffer is only valid during the call. */
typedef struct {
    int (*plane)(void *user, int64_t z, const float *scores);
    void *user;
} mp_infer_sink_t;

typedef struct {
    int64_t windows;        /* window positions */
    int64_t entries;        /* patches run (windows x mirrors) */
    int64_t forward_calls;
    int ring_planes;        /* z-planes of accumulators held at once */
    uint64_t accum_bytes;   /* accumulator memory (ring) */
    uint64_t batch_bytes;   /* input + logits batch buffers */
    double t_forward;       /* seconds in net->forward */
    double t_total;         /* seconds in the sliding window (sink included) */
} mp_infer_stats_t;

/* Sliding-window prediction over img (float32, nc = in_channels, no
 * scaling). Volumes smaller than the patch are padded (centred, the odd
 * voxel at the high end, value opts->pad_value) and the padding never
 * reaches the sink. Windows run in z-major order (z, then y, then x start;
 * mirrors innermost); accumulators are kept only for the z-planes a started
 * window row still covers (at most patch D planes), and each plane goes to
 * the sink as soon as no later window covers it. Results are identical for
 * any thread count and any batch size. opts NULL = defaults; stats may be
 * NULL. */
int mp_infer_sliding_window(const mp_vol_t *img, const mp_infer_net_t *net, const mp_infer_opts_t *opts,
                            const mp_infer_sink_t *sink, mp_pool_t *pool, mp_infer_stats_t *stats);

/* ---- labels (and probabilities) on a grid ---- */

typedef enum {
    MP_INFER_PROBS_NONE = 0,
    MP_INFER_PROBS_F32,  /* float32 probabilities */
    MP_INFER_PROBS_U8    /* round(255 * p) */
} mp_infer_probs_t;

typedef struct {
    mp_vol_t *labels;  /* argmax class (ties: the lowest class), u8 (<= 256 classes) or u16 */
    mp_vol_t *probs;   /* num_classes channels, or NULL when not asked */
    mp_infer_stats_t stats;
} mp_infer_result_t;

/* Frees both volumes and zeroes the struct (accepts a zeroed struct). */
void mp_infer_result_deinit(mp_infer_result_t *r);

/* Sliding window over img, turned into labels on a grid of out_dim voxels
 * over img's field of view (out_dim NULL = img's own grid). A different
 * grid is sampled as mp_vol_resample_shape does (output voxel o at input
 * coordinate (o + 0.5) * in/out - 0.5, clamped) with trilinear
 * interpolation of the scores plane by plane (probabilities, or logits then
 * softmax), then argmax: nnU-Net resamples probabilities/logits, never
 * labels. Labels (and probs) get img's affine composed with that map. */
int mp_infer_predict_grid(mp_infer_result_t *res, const mp_vol_t *img, const mp_infer_net_t *net,
                          const mp_infer_opts_t *opts, const int64_t out_dim[3], mp_infer_probs_t probs,
                          mp_pool_t *pool);

/* ---- the per-image pipeline ---- */

#define MP_INFER_MAX_CHANNELS 16

typedef enum {
    MP_INFER_NORM_NONE = 0,
    MP_INFER_NORM_ZSCORE, /* per image: (x - mean) / max(std, 1e-8) */
    MP_INFER_NORM_CT      /* clip to [ct_lo, ct_hi], then (x - ct_mean) / max(ct_std, 1e-8) */
} mp_infer_norm_kind_t;

typedef struct {
    mp_infer_norm_kind_t kind;
    int use_mask;  /* z-score: statistics over, and changes only inside, the non-zero mask
                      (nnU-Net's use_mask_for_norm; holes filled as binary_fill_holes) */
    double ct_lo, ct_hi, ct_mean, ct_std;
} mp_infer_norm_t;

/* What training decided and inference must repeat. Filled by the training
 * side; mp_infer_plan_init gives a plan that keeps geometry as it is. */
typedef struct {
    int num_channels;
    int num_classes;
    int patch_dhw[3];          /* must match the network's */
    char orientation[4];       /* "" = keep the voxel axes; e.g. "RAS" = reorient first */
    int crop_nonzero;          /* crop to the bounding box of non-zero voxels (any channel) */
    double target_spacing[3];  /* x, y, z in mm after reorientation; <= 0 keeps an axis */
    int normalize_first;       /* 1: crop -> normalize -> resample (nnU-Net v2);
                                  0: crop -> resample -> normalize */
    mp_infer_norm_t norm[MP_INFER_MAX_CHANNELS];
    int keep_largest;          /* post-processing: 1 keeps the largest component of each class */
    int keep_largest_fg_as_one;/* with keep_largest: treat all foreground classes as one */
} mp_infer_plan_t;

/* Defaults: no reorientation, crop on, no resampling, normalize_first 1,
 * z-score without mask for every channel, no post-processing; num_channels,
 * num_classes and patch_dhw 0 (must be set). */
void mp_infer_plan_init(mp_infer_plan_t *p);

/* How a raw image became the network input, to undo it on the prediction. */
typedef struct {
    int64_t orig_dim[3];     /* the raw image */
    int reoriented;
    mp_reorient_t reorient;  /* valid when reoriented */
    int64_t ro_dim[3];       /* after reorientation */
    mp_box_t box;            /* crop box in the reoriented grid */
    int64_t crop_dim[3];     /* box size */
    int64_t pre_dim[3];      /* network grid (after resampling) */
} mp_infer_prep_t;

/* The preprocessing both training and inference run: float32 with scaling
 * applied (non-finite values set to 0), reorientation, crop, normalization
 * and trilinear resampling in the plan's order. *out is the network input;
 * prep (may be NULL) records what was done. Channels must equal
 * plan->num_channels when that is set. */
int mp_infer_preprocess(mp_vol_t **out, mp_infer_prep_t *prep, const mp_vol_t *image, const mp_infer_plan_t *plan,
                        mp_pool_t *pool);

/* The whole prediction for one image: preprocess, sliding window, scores
 * resampled slab-wise to the cropped grid and argmaxed, keep-largest,
 * uncrop (background outside the box; probabilities 1 for class 0 there),
 * reorientation undone. The labels (and probs) have the image's dims and
 * exact affine. */
int mp_infer_predict(mp_infer_result_t *res, const mp_vol_t *image, const mp_infer_net_t *net,
                     const mp_infer_plan_t *plan, const mp_infer_opts_t *opts, mp_infer_probs_t probs,
                     mp_pool_t *pool);

/* Reads the files as the channels of one float32 volume (one file is
 * returned as read, with its own channels). Every file must hold one
 * channel on the first file's grid (dims and affine); the error names the
 * file at fault. */
int mp_infer_read_channels(mp_vol_t **out, const char *const *paths, int n);

/* Reads n_in single-channel images of one geometry (the channels, in order),
 * predicts, and writes the label map to out_labels and, when out_probs is
 * not NULL, the probabilities (f32 or u8 as `probs`; NONE with out_probs is
 * taken as F32). Outputs are written atomically. stats may be NULL. */
int mp_infer_predict_files(const char *const *in_paths, int n_in, const char *out_labels, const char *out_probs,
                           mp_infer_probs_t probs, const mp_infer_net_t *net, const mp_infer_plan_t *plan,
                           const mp_infer_opts_t *opts, mp_pool_t *pool, mp_infer_stats_t *stats);

#ifdef __cplusplus
}
#endif
#endif
