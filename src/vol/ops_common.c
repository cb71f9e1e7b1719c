/* Small helpers shared by the volume operations (crop, resample, reorient,
 * normalize): element encoding, pattern fills, argument checks, affines. */
#include "vol_ops_internal.h"

void mp_volops_encode(mp_dtype_t dtype, double value, uint8_t out[8]) {
    uint64_t buf = 0;
    mp_vol_t *tmp = NULL;
    int64_t one[4] = {1, 1, 1, 1};
    memset(out, 0, 8);
    /* A one-element view reuses mp_vol_set's rounding and clamping rules. */
    if (mp_vol_create_view(&tmp, one, dtype, &buf) != MP_OK) return;
    mp_vol_set(tmp, 0, value);
    mp_vol_free(tmp);
    memcpy(out, &buf, 8);
}

void mp_volops_fill(void *dst, int64_t n, size_t size, const uint8_t elem[8]) {
    int zero = 1;
    for (size_t i = 0; i < size; i++) zero &= elem[i] == 0;
    if (zero) {
        memset(dst, 0, (size_t)n * size);
        return;
    }
    uint8_t *d = dst;
    switch (size) {
    case 1: memset(d, elem[0], (size_t)n); break;
    case 2: { uint16_t x; memcpy(&x, elem, 2); for (int64_t i = 0; i < n; i++) ((uint16_t *)d)[i] = x; } break;
    case 4: { uint32_t x; memcpy(&x, elem, 4); for (int64_t i = 0; i < n; i++) ((uint32_t *)d)[i] = x; } break;
    default: { uint64_t x; memcpy(&x, elem, 8); for (int64_t i = 0; i < n; i++) ((uint64_t *)d)[i] = x; } break;
    }
}

int mp_volops_check(const mp_vol_t *v, const char *what) {
    if (!v) return mp_error_set(MP_ERR_ARG, "%s: no volume given", what);
    if ((unsigned)v->dtype >= MP_DTYPE_COUNT)
        return mp_error_set(MP_ERR_ARG, "%s: invalid data type %d", what, (int)v->dtype);
    for (int a = 0; a < 4; a++)
        if (v->dim[a] < 1)
            return mp_error_set(MP_ERR_ARG, "%s: dimension %d is %lld (must be >= 1)", what, a,
                                (long long)v->dim[a]);
    if (!v->data) return mp_error_set(MP_ERR_ARG, "%s: volume has no data", what);
    return MP_OK;
}

void mp_volops_affine_compose(mp_vol_t *out, const mp_vol_t *in, const double m[4][4]) {
    double a[4][4];
    mp_mat4_mul(a, in->affine, m);
    a[3][0] = a[3][1] = a[3][2] = 0;
    a[3][3] = 1;
    mp_vol_set_affine(out, a);
}
