/* medpipe segmentation metrics: per-class overlap (Dice, IoU, TP/FP/FN/TN as
 * nnU-Net counts them), surface distances (HD95, ASSD, normalized surface
 * Dice) in millimetres via the exact distance transform, volume differences,
 * NaN-skipping means and an nnU-Net-style summary.json.
 *
 * Conventions (the same in the library, the CLI and the JSON):
 *  - Surface of a mask: its voxels with at least one 6-connected neighbour
 *    outside the mask, voxels beyond the grid counting as outside (MONAI's
 *    mask edges: mask XOR binary_erosion(mask) with border value 0).
 *  - Surface distance of a surface voxel: Euclidean distance in mm between
 *    voxel centres to the nearest surface voxel of the other mask, using the
 *    reference's spacing (column norms of its affine).
 *  - HD95 (MONAI, directed = false): max of the 95th percentiles of the two
 *    directed distance sets; percentiles use linear interpolation between
 *    order statistics at rank (n - 1) * q (numpy.percentile's default).
 *  - ASSD: mean of the union of both directed distance sets (MONAI symmetric).
 *  - NSD: (#pred-surface voxels within tolerance of the ref surface + #ref-
 *    surface voxels within tolerance of the pred surface) / (#pred-surface +
 *    #ref-surface), "within" meaning distance <= tolerance (MONAI's
 *    compute_surface_dice, voxel-counted, not area-weighted).
 *  - Both masks empty: Dice, IoU, HD95, ASSD, NSD are NaN (nnU-Net).
 *    Exactly one empty: Dice = IoU = NSD = 0 and HD95 = ASSD = empty_distance
 *    (default: the diagonal of the image extent in mm, larger than any
 *    possible distance; set +INFINITY for MONAI's inf).
 *  - VolumeDiff_ml = (n_pred - n_ref) * voxel volume / 1000 (voxel volume =
 *    |det| of the reference affine's 3x3 part); VolumeDiff_rel = that divided
 *    by the reference volume, NaN when the reference is empty.
 *  - Means skip NaN (numpy.nanmean); a mean over only NaN is NaN. */
#ifndef MEDPIPE_METRICS_H
#define MEDPIPE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "medpipe/core.h"
#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Metrics of one class. Counts are doubles so that means share the type
 * (exact up to 2^53 voxels). */
typedef struct {
    int64_t label;
    double tp, fp, fn, tn;
    double n_pred, n_ref; /* tp + fp, tp + fn */
    double dice, iou;
    double hd95, assd, nsd; /* mm, mm, fraction */
    double vol_diff_ml, vol_diff_rel;
} mp_class_metrics_t;

typedef struct {
    double tolerance_mm;   /* NSD tolerance (default 1.0 mm) */
    double empty_distance; /* HD95/ASSD when exactly one mask is empty; < 0 (default) = extent diagonal */
    int surface;           /* 0: skip the surface metrics (HD95/ASSD/NSD = NaN); default 1 */
    mp_pool_t *pool;       /* threads for the distance transforms and counting; NULL = serial */
} mp_metrics_opts_t;

void mp_metrics_opts_init(mp_metrics_opts_t *o);

/* Metrics of each label (out[k] for labels[k]) between two label maps of
 * equal dims (MP_ERR_MISMATCH otherwise). Spacing and voxel volume come from
 * ref; the affines are not compared here (see mp_metrics_check_geometry).
 * One pass counts every class and its bounding box; the distance transforms
 * then run on each class's bounding box of pred OR ref only (exact: the
 * transform is not path-based and both surfaces lie inside the box).
 * opts may be NULL (defaults). */
int mp_metrics_labels(mp_class_metrics_t *out, const mp_vol_t *pred, const mp_vol_t *ref, const int64_t *labels,
                      int n_labels, const mp_metrics_opts_t *opts);

/* The same for two binary masks (non-zero = inside) on one grid; label = 1,
 * voxel volume = product of the spacing. */
int mp_metrics_binary(mp_class_metrics_t *out, const uint8_t *pred, const uint8_t *ref, const int64_t dim[3],
                      const double spacing[3], const mp_metrics_opts_t *opts);

/* Directed surface distances (mm) of two binary masks, in memory order of the
 * surface voxels: d_pred[i] from the i-th pred-surface voxel to the ref
 * surface, d_ref the other way. +INFINITY when the other mask is empty.
 * Arrays mp_alloc'ed (free with mp_free; NULL when the count is 0). */
int mp_surface_distances(double **d_pred, int64_t *n_pred, double **d_ref, int64_t *n_ref, const uint8_t *pred,
                         const uint8_t *ref, const int64_t dim[3], const double spacing[3], mp_pool_t *pool);

/* q-th percentile (0..100) with linear interpolation (numpy's default);
 * reorders x; NaN when n == 0. Linear time (selection, not a full sort). */
double mp_percentile(double *x, int64_t n, double q);

/* Checks that two volumes share dims (x, y, z, channels) and that their
 * affines agree within tol (absolute, per element, mm); MP_ERR_MISMATCH with
 * the difference otherwise (the caller prepends the file names). */
int mp_metrics_check_geometry(const mp_vol_t *a, const mp_vol_t *b, double tol);

/* NaN-skipping mean over n rows rows[0], rows[stride], ... (every field; the
 * label is copied from rows[0]). */
void mp_metrics_nanmean(mp_class_metrics_t *mean, const mp_class_metrics_t *rows, int64_t n, int64_t stride);

/* Metric names as nnU-Net's summary.json spells them, in its (sorted) key
 * order, with the field each reads. */
typedef struct {
    const char *name;
    size_t offset; /* of a double in mp_class_metrics_t */
} mp_metric_field_t;
const mp_metric_field_t *mp_metrics_fields(int *n);

/* One evaluated case: file names and n_labels class results (same labels,
 * same order, in every case). */
typedef struct {
    const char *prediction_file;
    const char *reference_file;
    const mp_class_metrics_t *classes;
} mp_metrics_case_t;

/* Means per label over cases (mean[k], n_labels entries) and the foreground
 * mean: the NaN-skipping mean of those per-label means, label 0 excluded
 * (nnU-Net takes a plain mean there; skipping NaN keeps a class absent from
 * every case from blanking it). */
void mp_metrics_aggregate(mp_class_metrics_t *mean, mp_class_metrics_t *foreground_mean,
                          const mp_metrics_case_t *cases, int n_cases, int n_labels);

/* nnU-Net summary.json: {"foreground_mean": {...}, "mean": {"1": {...}},
 * "metric_per_case": [{"metrics": {"1": {...}}, "prediction_file": ...,
 * "reference_file": ...}]}, keys sorted as Python's json.dump(sort_keys=True)
 * writes them. NaN and infinities are written as null (strict JSON; nnU-Net
 * writes the non-standard token NaN). *json is freed with free(). */
int mp_metrics_summary_json(char **json, const mp_metrics_case_t *cases, int n_cases, int n_labels);
/* The same, written atomically to path. */
int mp_metrics_summary_write(const char *path, const mp_metrics_case_t *cases, int n_cases, int n_labels);

#ifdef __cplusplus
}
#endif
#endif
