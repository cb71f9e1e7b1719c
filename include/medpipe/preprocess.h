/* medpipe preprocessing: dataset check, fingerprint, plan and the
 * memory-mappable preprocessing cache that training reads.
 *
 *   mp_fingerprint_compute   reads every training case once: checks geometry
 *                            and label values (ALL problems in one report),
 *                            records spacing, shapes and, per channel,
 *                            foreground intensity statistics (nnU-Net style).
 *   mp_plan_from_fingerprint target spacing, normalization, patch size and
 *                            network depth fitted to a memory budget.
 *   mp_plan_write/read       CACHE/plan.json, editable, read back strictly.
 *   mp_cache_build           every case through mp_infer_preprocess (the one
 *                            preprocessing shared with inference), labels
 *                            resampled with MP_INTERP_LABEL, stored raw.
 *   mp_cache_open/case_map   read-only mmap of a case, every size checked.
 *
 * Cache layout (CACHE/):
 *   plan.json, fingerprint.json, dataset.json (the dataset's description: names)
 *   cases/<id>.img.f32   float32 little-endian (C, D, H, W), x fastest
 *   cases/<id>.seg.u8    uint8 (D, H, W)
 *   cases/<id>.fg.i32    int32 (x, y, z) triplets: per class, its sampled
 *                        foreground voxels (offsets and counts in <id>.json)
 *   cases/<id>.json      shape, spacing, affine, crop box, original geometry,
 *                        byte sizes, per-class location table
 *   DONE                 written last: {"version":1,"cases":[ids]}; a cache
 *                        without it is incomplete and refused by mp_cache_open.
 * Every file is written atomically (temporary file + rename); a build first
 * removes DONE, so an interrupted build is never mistaken for a whole one. */
#ifndef MEDPIPE_PREPROCESS_H
#define MEDPIPE_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "medpipe/core.h"
#include "medpipe/dataset.h"
#include "medpipe/infer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MP_PLAN_VERSION 1
#define MP_PLAN_MAX_STAGES 8
#define MP_FP_SAMPLES_PER_CASE 10000 /* foreground intensities sampled per case (nnU-Net) */

/* Progress of a per-case loop: called serialised (under a lock) from the
 * pool's workers after each case. */
typedef void (*mp_cache_progress_fn)(void *user, int64_t done, int64_t total);

/* ---- fingerprint ---- */

typedef struct {
    char *id;
    int64_t shape[3];      /* image dims (x, y, z) */
    double spacing[3];     /* mm */
    int64_t crop_shape[3]; /* after crop to the non-zero box */
    int64_t fg_voxels;     /* label > 0 */
} mp_fp_case_t;

typedef struct {
    int64_t count;         /* pooled samples */
    double mean, std, min, max, median, p00_5, p99_5;
} mp_fp_intensity_t;

typedef struct {
    int n_channels;
    int64_t n_cases;
    mp_fp_case_t *cases;                           /* sorted by id */
    mp_fp_intensity_t intensity[MP_INFER_MAX_CHANNELS];
    double median_spacing[3];
    int64_t median_crop_shape[3];                  /* voxels, original spacing */
    uint64_t seed;                                 /* RNG seed of the sampling */
} mp_fingerprint_t;

/* Reads all training cases of `ds` (nnU-Net folder or Decathlon lists) on
 * `pool` (one case per task; NULL = caller). Checks that every case has all
 * its files, that image and label dims agree and affines agree within 1e-4,
 * and that label values are declared in dataset.json. When anything is
 * wrong it returns MP_ERR_MISMATCH and, when `problems` is not NULL, a
 * malloc'ed text listing every problem, one per line (free with free()).
 * Intensity samples: up to MP_FP_SAMPLES_PER_CASE foreground values per
 * case drawn with replacement from an mp_rng stream keyed by (seed, case
 * index): the result does not depend on the thread count. */
int mp_fingerprint_compute(mp_fingerprint_t *fp, const mp_dataset_t *ds, uint64_t seed, mp_pool_t *pool,
                           mp_cache_progress_fn progress, void *user, char **problems);
void mp_fingerprint_deinit(mp_fingerprint_t *fp);
/* JSON text of the fingerprint (malloc'ed). */
int mp_fingerprint_to_json(const mp_fingerprint_t *fp, char **json);

/* ---- plan ---- */

typedef struct {
    char name[32];
    mp_infer_norm_t norm;
} mp_plan_channel_t;

typedef struct {
    int version;
    int num_channels;
    mp_plan_channel_t channels[MP_INFER_MAX_CHANNELS];
    int num_classes;              /* label values 0..num_classes-1 */
    double target_spacing[3];     /* x, y, z mm */
    int64_t median_shape[3];      /* x, y, z voxels at target spacing */
    int patch_dhw[3];             /* (D, H, W) = (z, y, x) */
    int n_stages;
    int features[MP_PLAN_MAX_STAGES];
    int batch_size;
    double memory_budget_gb;
    double memory_estimate_gb;    /* of this configuration by mp_plan_memory_estimate */
    int crop_nonzero;
    int normalize_first;
    char orientation[4];          /* "" keeps voxel axes */
    uint64_t seed;                /* foreground-location sampling */
    int fg_samples_per_class;     /* locations kept per class and case */
} mp_plan_t;

/* Training memory estimate in bytes of the default U-Net (features f_s,
 * stage s at 1/8^s of the patch voxels) for one batch: 4 bytes x batch x
 * patch voxels x sum_s 16 f_s / 8^s (2 convs x (conv, norm, activation)
 * outputs in the encoder and the decoder, plus upsampled and concatenated
 * skips, kept for backward), x 1.5 for the backward pass's transient
 * gradients, plus 16 bytes per parameter (weights, gradients, two optimizer
 * moments). */
double mp_plan_memory_estimate(const int patch_dhw[3], int n_stages, const int *features, int batch, int in_ch,
                               int num_classes);

/* Plan from a fingerprint and dataset.json: median spacing, CT scheme for
 * channels named "CT" (any case), z-score otherwise (with the non-zero mask
 * when cropping shrank the median case to <= 3/4 of its volume), patch and
 * stages fitted to budget_gb (<= 0: 8 GB). */
int mp_plan_from_fingerprint(mp_plan_t *plan, const mp_fingerprint_t *fp, const mp_dataset_t *ds, double budget_gb);

/* What a plan may be asked to respect (small configurations for a quick
 * run, or a coarser grid than the median spacing). */
typedef struct {
    double budget_gb;          /* training memory budget; default 8 */
    double target_spacing[3];  /* x, y, z mm; <= 0 = the median spacing (default) */
    int base_features;         /* features of stage 0, doubling per stage; default 32 */
    int max_features;          /* cap; default 320 */
    int max_stages;            /* most stages fitted; default 6 */
} mp_plan_opts_t;

void mp_plan_opts_init(mp_plan_opts_t *o);
/* mp_plan_from_fingerprint with options; bad options give MP_ERR_ARG. */
int mp_plan_from_fingerprint_opts(mp_plan_t *plan, const mp_fingerprint_t *fp, const mp_dataset_t *ds,
                                  const mp_plan_opts_t *opts);
/* Checks every field (ranges, divisibility of the patch by 2^(stages-1)). */
int mp_plan_check(const mp_plan_t *plan, const char *source);
int mp_plan_to_json(const mp_plan_t *plan, char **json);
/* Parses plan.json text strictly (hostile input); `source` names it. */
int mp_plan_parse(mp_plan_t *plan, const char *json, size_t len, const char *source);
int mp_plan_read(mp_plan_t *plan, const char *path);
int mp_plan_write(const mp_plan_t *plan, const char *path);
/* The inference side of the plan. */
void mp_plan_to_infer_plan(const mp_plan_t *plan, mp_infer_plan_t *ip);

/* ---- cache ---- */

/* Preprocesses every training case into dir (plan.json must already be
 * there or is written from `plan`), cases in parallel on `pool` (one case
 * per task; progress called serialised). Same bytes for any thread count. */
int mp_cache_build(const char *dir, const mp_dataset_t *ds, const mp_plan_t *plan, mp_pool_t *pool,
                   mp_cache_progress_fn progress, void *user);

typedef struct {
    char *dir;
    mp_plan_t plan;
    int64_t n_cases;
    char **ids;
} mp_cache_t;

typedef struct {
    int label;
    int64_t count;
    const int32_t *xyz; /* count (x, y, z) triplets */
} mp_cache_fg_t;

typedef struct {
    char id[128];
    int64_t dim[4];            /* x, y, z, channels */
    double affine[4][4];       /* of the preprocessed grid */
    double spacing[3];
    int64_t orig_dim[3];
    double orig_affine[4][4];
    mp_box_t crop_box;         /* in the original grid */
    const float *img;          /* dim[3] x (z, y, x) */
    const uint8_t *seg;        /* (z, y, x) */
    int n_fg;
    mp_cache_fg_t fg[256];
    void *map[3];
    size_t map_len[3];
} mp_cache_case_t;

/* Opens a complete cache: plan.json and DONE. */
int mp_cache_open(mp_cache_t *c, const char *dir);
void mp_cache_close(mp_cache_t *c);
/* Maps case `index` read-only; every size is checked against its JSON and
 * the file sizes, every location against the dims. */
int mp_cache_case_map(const mp_cache_t *c, int64_t index, mp_cache_case_t *out);
void mp_cache_case_unmap(mp_cache_case_t *cc);

#ifdef __cplusplus
}
#endif
#endif
