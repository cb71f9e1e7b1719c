/* medpipe volume operations used by training and inference preprocessing:
 * bounding boxes, crop/pad (each undoable), resampling to a spacing, a shape
 * or an arbitrary grid, reorientation by axis permutation/flips, and intensity
 * normalization with the statistics a dataset fingerprint needs.
 *
 * Geometry is kept exact: every output's affine maps each output voxel index
 * to the world position (RAS+ mm) that voxel was sampled from. Lengths given
 * in mm (margins, spacings) are converted with the volume's own spacing.
 * All operations work on every channel (dim[3]) the same way. Functions that
 * take an mp_pool_t split the work over it (NULL = the calling thread) and
 * give bit-identical results for any thread count. */
#ifndef MEDPIPE_VOL_OPS_H
#define MEDPIPE_VOL_OPS_H

#include "medpipe/core.h"
#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- bounding boxes, crop, pad ---- */

/* A box of voxel indices: lo inclusive, hi exclusive, per axis x, y, z. */
typedef struct {
    int64_t lo[3];
    int64_t hi[3];
} mp_box_t;

/* Bounding box of the voxels that are non-zero (stored value) in any channel
 * of `v`, grown by margin_mm on each side (ceil(margin_mm / spacing) voxels
 * per axis) and clipped to the volume. To box an image by a separate mask,
 * pass the mask. *count (may be NULL) receives the number of non-zero
 * voxels; when there are none the box is empty (lo = hi = 0). */
int mp_vol_bbox_nonzero(const mp_vol_t *v, double margin_mm, mp_box_t *box, int64_t *count);

/* Copies the voxels of `box` (must be non-empty and inside v) into a new
 * volume of dims hi - lo; the affine is shifted so world positions stay. */
int mp_vol_crop(mp_vol_t **out, const mp_vol_t *v, const mp_box_t *box);

/* Undoes mp_vol_crop: pastes `v` at box->lo into a new volume of orig_dim
 * filled with `fill` (stored value, rounded and clamped for integer types).
 * v's dims must equal hi - lo. */
int mp_vol_uncrop(mp_vol_t **out, const mp_vol_t *v, const mp_box_t *box, const int64_t orig_dim[3],
                  double fill);

/* What mp_vol_pad_crop did: output index = input index + offset, per axis. */
typedef struct {
    int64_t in_dim[3];
    int64_t out_dim[3];
    int64_t offset[3];
} mp_padcrop_t;

/* Pads and/or crops each axis to target[a] voxels. offset NULL centres the
 * input: offset = (target - in) / 2 truncated toward zero, so an odd extra
 * voxel of padding or cropping goes to the high end (as nnU-Net's pad and
 * MONAI's centre crop). Otherwise output index = input index + offset[a]
 * (negative offsets crop at the low end). New voxels get pad_value (stored
 * value). rec (may be NULL) receives what was done. */
int mp_vol_pad_crop(mp_vol_t **out, const mp_vol_t *v, const int64_t target[3], const int64_t offset[3],
                    double pad_value, mp_padcrop_t *rec);

/* Inverse of mp_vol_pad_crop: back to rec->in_dim; voxels that were cropped
 * away get `fill`. v's dims must equal rec->out_dim. */
int mp_vol_pad_crop_undo(mp_vol_t **out, const mp_vol_t *v, const mp_padcrop_t *rec, double fill);

/* ---- resampling ---- */

/* At input coordinate x (per axis, clamped to [0, n-1]): NEAREST takes voxel
 * floor(x + 0.5) (halves round up); LINEAR blends voxels floor(x) and
 * floor(x) + 1 with weight x - floor(x) (non-finite values spread to their
 * neighbours); LABEL weighs the same 8 neighbours. */
typedef enum {
    MP_INTERP_NEAREST = 0, /* same dtype out (stored values and scaling copied) */
    MP_INTERP_LINEAR,      /* trilinear of real values (scaling applied) -> f32 */
    MP_INTERP_LABEL        /* per-label linear: each label's one-hot is interpolated
                              trilinearly and the largest wins (ties: the smaller
                              label value); same dtype out, stored values */
} mp_interp_t;

/* Output dims for a target spacing: round_half_even(in_dim * (in_spacing /
 * target_spacing)), at least 1, as nnU-Net computes them. */
int mp_resample_dims_for_spacing(const mp_vol_t *v, const double target_spacing[3], int64_t out_dim[3]);

/* Resamples to out_dim keeping the field of view (skimage resize, nnU-Net):
 * per axis, scale = in_dim / out_dim and output voxel o samples input
 * coordinate x = (o + 0.5) * scale - 0.5, clamped to [0, in_dim - 1] (edge
 * values repeat). The affine becomes A_in * [diag(scale) | 0.5*scale - 0.5],
 * so the spacing is in_spacing * scale. */
int mp_vol_resample_shape(mp_vol_t **out, const mp_vol_t *v, const int64_t out_dim[3], mp_interp_t mode,
                          mp_pool_t *pool);

/* mp_vol_resample_shape with out_dim from mp_resample_dims_for_spacing. The
 * result's spacing is target_spacing up to the rounding of the dims. */
int mp_vol_resample_spacing(mp_vol_t **out, const mp_vol_t *v, const double target_spacing[3],
                            mp_interp_t mode, mp_pool_t *pool);

/* Resamples onto an arbitrary grid (dims + affine), e.g. a prediction back
 * onto the original image: output voxel o samples input coordinate
 * x = inv(A_in) * A_out * o. Points within the input's extent
 * [-0.5, in_dim - 0.5] (1e-6 voxel tolerance) on every axis are interpolated
 * with edge clamping; points outside get `fill` (a real value for LINEAR, a
 * stored value otherwise). Axis-aligned mappings use per-axis tables; oblique
 * ones a per-voxel path. */
int mp_vol_resample_grid(mp_vol_t **out, const mp_vol_t *v, const int64_t dim[3], const double affine[4][4],
                         mp_interp_t mode, double fill, mp_pool_t *pool);

/* ---- reorientation (axis permutations and flips, no interpolation) ---- */

/* Output axis a is input axis perm[a], reversed when flip[a]. */
typedef struct {
    int64_t in_dim[3];
    int perm[3];
    int flip[3];
} mp_reorient_t;

/* The voxel axes' closest world axes, like nibabel's io_orientation: columns
 * normalised, polar decomposition to the nearest orthogonal matrix, then for
 * input axes 0, 1, 2 in turn the largest remaining component. axis[i] is 0/1/2
 * for x/y/z (R/A/S), sign[i] is +1 or -1. MP_ERR_ARG for a singular affine. */
int mp_affine_io_orientation(const double affine[4][4], int axis[3], int sign[3]);

/* Parses an orientation code such as "RAS" or "LPS" (each of R/L, A/P, S/I
 * exactly once, upper case) into the same form. */
int mp_orientation_parse(const char *code, int axis[3], int sign[3]);

/* Plans the reorientation of a volume with this affine and dims so that its
 * axes point to `code` (NULL = "RAS", the canonical orientation of nibabel's
 * as_closest_canonical). */
int mp_reorient_plan(mp_reorient_t *rec, const double affine[4][4], const int64_t dim[3], const char *code);

/* Applies a plan to a volume of dims rec->in_dim (data permuted/flipped,
 * affine updated so every voxel keeps its world position). */
int mp_vol_reorient_apply(mp_vol_t **out, const mp_vol_t *v, const mp_reorient_t *rec);

/* Plans and applies in one step; rec (may be NULL) receives the plan. */
int mp_vol_reorient(mp_vol_t **out, const mp_vol_t *v, const char *code, mp_reorient_t *rec);

/* Exact inverse of mp_vol_reorient_apply for a volume in the reoriented
 * layout (e.g. a prediction made on the canonical image). */
int mp_vol_reorient_undo(mp_vol_t **out, const mp_vol_t *v, const mp_reorient_t *rec);

/* ---- intensity statistics and normalization ----
 * Normalization works in place on float32 volumes (MP_ERR_ARG otherwise);
 * clone first to keep the input. A mask is any dtype, non-zero = inside,
 * with the same x/y/z dims and either 1 channel or as many as v. NaNs are
 * skipped by the statistics. */

typedef struct {
    int64_t count; /* voxels counted */
    double mean;
    double std;    /* population standard deviation (ddof 0) */
    double min, max;
} mp_voxel_stats_t;

/* Percentiles q[i] in [0, 100] of n values, numpy.percentile's default
 * "linear" method: with the values sorted, position (n-1)*q/100 split into
 * integer part k and fraction g gives a[k] + (a[k+1]-a[k])*g (computed as
 * a[k+1] - (a[k+1]-a[k])*(1-g) when g >= 0.5, as numpy does). Reorders
 * `values` (selection, not a full sort). n must be > 0 and values NaN-free. */
int mp_percentiles(double *values, int64_t n, const double *q, int nq, double *out);

/* Statistics of channel `channel` of v (real values, scaling applied),
 * optionally only where `mask` is non-zero: count/mean/std/min/max into *st
 * (may be NULL) and the nq percentiles q into qout (nq may be 0). With no
 * voxels counted, count is 0, the other fields and qout are NaN. */
int mp_vol_intensity_stats(const mp_vol_t *v, int channel, const mp_vol_t *mask, const double *q, int nq,
                           double *qout, mp_voxel_stats_t *st);

/* Z-score, each channel on its own: mean and std over the channel, or over
 * `mask` when given; x' = (x - mean) / max(std, 1e-8). mask_only: with a
 * mask, change only the voxels inside it (nnU-Net's use_mask_for_norm);
 * otherwise all voxels. */
int mp_vol_normalize_zscore(mp_vol_t *v, const mp_vol_t *mask, int mask_only, mp_pool_t *pool);

/* CT normalization (nnU-Net CTNormalization) of all channels: clip to
 * [lo, hi], then x' = (x - mean) / max(std, 1e-8). lo/hi are usually the
 * 0.5 and 99.5 percentiles and mean/std those of the dataset's foreground
 * voxels (mp_vol_intensity_stats). For per-channel values, pass a view of one
 * channel (mp_vol_create_view). */
int mp_vol_normalize_ct(mp_vol_t *v, double lo, double hi, double mean, double std, mp_pool_t *pool);

#ifdef __cplusplus
}
#endif
#endif
