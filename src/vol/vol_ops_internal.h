/* Private helpers shared by the volume operations in src/vol (not public API). */
#ifndef MP_VOL_OPS_INTERNAL_H
#define MP_VOL_OPS_INTERNAL_H

#include "medpipe/vol_ops.h"

#include <stdint.h>
#include <string.h>

/* Stored value of element i as double; inlined for the per-voxel loops. */
static inline double mp_volops_fetch(const mp_vol_t *v, int64_t i) {
    const void *d = v->data;
    switch (v->dtype) {
    case MP_DTYPE_U8: return ((const uint8_t *)d)[i];
    case MP_DTYPE_I8: return ((const int8_t *)d)[i];
    case MP_DTYPE_U16: return ((const uint16_t *)d)[i];
    case MP_DTYPE_I16: return ((const int16_t *)d)[i];
    case MP_DTYPE_U32: return ((const uint32_t *)d)[i];
    case MP_DTYPE_I32: return ((const int32_t *)d)[i];
    case MP_DTYPE_U64: return (double)((const uint64_t *)d)[i];
    case MP_DTYPE_I64: return (double)((const int64_t *)d)[i];
    case MP_DTYPE_F32: return ((const float *)d)[i];
    default: return ((const double *)d)[i];
    }
}

/* `value` as one element of `dtype` (rounded and clamped for integers, as
 * mp_vol_set does), written to out[0 .. size). */
void mp_volops_encode(mp_dtype_t dtype, double value, uint8_t out[8]);

/* Fills n elements of `size` bytes at dst with the pattern `elem`. */
void mp_volops_fill(void *dst, int64_t n, size_t size, const uint8_t elem[8]);

/* Checks a volume argument: non-NULL, valid dtype, dims >= 1, data present. */
int mp_volops_check(const mp_vol_t *v, const char *what);

/* out = a (4x4) * [voxel-to-voxel map m (4x4)]: the affine of a grid whose
 * voxel o sits at input voxel m*o. */
void mp_volops_affine_compose(mp_vol_t *out, const mp_vol_t *in, const double m[4][4]);

#endif
