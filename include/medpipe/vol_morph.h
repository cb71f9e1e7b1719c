/* medpipe volume morphology: label values of label maps, connected components
 * (6- or 26-connectivity, deterministic numbering), nnU-Net style "keep the
 * largest component" post-processing, and the exact Euclidean distance
 * transform with anisotropic spacing.
 *
 * Label maps are read as real values (stored * scl_slope + scl_inter) of
 * channel 0; a volume with more than one channel is refused (MP_ERR_ARG).
 * Labels are integers: a non-integer value in a label map is MP_ERR_FORMAT. */
#ifndef MEDPIPE_VOL_MORPH_H
#define MEDPIPE_VOL_MORPH_H

#include <stdint.h>

#include "medpipe/core.h"
#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Neighbourhoods: faces only, or faces + edges + corners. */
typedef enum { MP_CONN_6 = 6, MP_CONN_26 = 26 } mp_conn_t;

/* Most distinct classes a label map may hold for the functions below
 * (class indices are stored as uint16 per voxel). */
#define MP_LABEL_MAX_CLASSES 65535

/* Sorted distinct non-zero values of a label map. *values (mp_alloc'ed, free
 * with mp_free; NULL when *n == 0). MP_ERR_FORMAT names the first voxel whose
 * value is not an integer; MP_ERR_LIMIT above MP_LABEL_MAX_CLASSES values. */
int mp_vol_label_values(int64_t **values, int *n, const mp_vol_t *v);

/* Class index of each voxel: keys[i] = k + 1 where the voxel's value equals
 * labels[k], 0 where it is none of them. labels: distinct, any order, at
 * most MP_LABEL_MAX_CLASSES. keys holds mp_vol_voxels(v) entries. */
int mp_vol_label_index(uint16_t *keys, const mp_vol_t *v, const int64_t *labels, int n_labels);

/* Connected components on a key grid (x fastest, dim = nx, ny, nz): voxels
 * with key 0 are background; two neighbouring voxels are connected when they
 * have the same non-zero key. Writes labels[i] in 1..n (0 for background),
 * numbered in the order of each component's first voxel in memory order.
 * sizes (may be NULL): mp_alloc'ed array of n + 1 voxel counts, sizes[0] =
 * background. Linear time (two-pass scan with union-find), no recursion.
 * Grids with 2^32 - 1 voxels or more are refused (MP_ERR_LIMIT). */
int mp_cc_label_keys(uint32_t *labels, int64_t *n_components, int64_t **sizes, const uint16_t *keys,
                     const int64_t dim[3], mp_conn_t conn);

/* Connected components of a volume into a new u32 volume (same geometry).
 * per_value = 0: all non-zero voxels are foreground (a binary mask);
 * per_value = 1: neighbours connect only when they hold the same value (each
 * class of a label map gets its own components). sizes as above. */
int mp_vol_cc_label(mp_vol_t **labels, int64_t *n_components, int64_t **sizes, const mp_vol_t *v, mp_conn_t conn,
                    int per_value);

/* nnU-Net post-processing, in place: keeps only the largest connected
 * component of each class and sets the voxels of the other components to 0.
 * classes: the labels to process (NULL = every non-zero value present).
 * foreground_as_one: treat the voxels of all those classes as one foreground
 * and keep its largest component (other classes' voxels untouched either way).
 * Ties go to the component whose first voxel comes first in memory order.
 * removed (may be NULL) receives the number of voxels set to 0. */
int mp_vol_keep_largest(mp_vol_t *v, mp_conn_t conn, const int64_t *classes, int n_classes, int foreground_as_one,
                        int64_t *removed);

/* Exact squared Euclidean distance transform (Felzenszwalb-Huttenlocher lower
 * envelope of parabolas, one separable pass per axis): sq[i] = squared
 * distance in mm^2 from voxel i to the nearest voxel with feature != 0, with
 * voxel spacing (mm) along x, y, z. Voxels are points on the grid; nothing
 * outside the grid is a feature. Empty feature set: every sq[i] = +INFINITY.
 * Parallel over lines with pool (NULL = serial); each line's result depends
 * only on its input, so any thread count gives bit-identical output.
 * float64 throughout: squares of multiples of the spacing are exact or nearly
 * so, and the envelope intersections need the headroom. */
int mp_edt_sq(double *sq, const uint8_t *feature, const int64_t dim[3], const double spacing[3], mp_pool_t *pool);

/* The same, exact only where query[i] != 0 (query NULL = everywhere); other
 * voxels are left with partial results. Passes skip the lines that lead to
 * no query voxel: surface distances only need the other surface's voxels. */
int mp_edt_sq_at(double *sq, const uint8_t *feature, const uint8_t *query, const int64_t dim[3],
                 const double spacing[3], mp_pool_t *pool);

/* Distance transform of a volume into a new volume of out_dtype (F32 or F64)
 * with the same geometry, using v->spacing. to_zero = 1: distance from each
 * voxel to the nearest zero voxel (0 on zero voxels), as
 * scipy.ndimage.distance_transform_edt(v, sampling=spacing); to_zero = 0:
 * distance to the nearest non-zero voxel. No feature voxel: +INFINITY.
 * F32 output halves the memory and keeps ~7 significant digits; the transform
 * itself always runs in float64. */
int mp_vol_edt(mp_vol_t **out, const mp_vol_t *v, int to_zero, mp_dtype_t out_dtype, mp_pool_t *pool);

#ifdef __cplusplus
}
#endif
#endif
