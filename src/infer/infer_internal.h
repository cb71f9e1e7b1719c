/* Private helpers of the inference module (src/infer): limits, a fast
 * exponential for softmax, and the row kernels the engine and the output
 * writer share. Not public API. */
#ifndef MP_INFER_INTERNAL_H
#define MP_INFER_INTERNAL_H

#include "medpipe/infer.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Largest patch edge accepted (a sanity bound against garbage plans). */
#define MP_INFER_MAX_PATCH 4096
/* Most classes: labels are stored as u16. */
#define MP_INFER_MAX_CLASSES 65536

/* exp(x) for x <= 0 within about 2 ulp, with no library call so that loops
 * over a row vectorize: x = n ln2 + r, |r| <= ln2/2, exp(r) by its Taylor
 * polynomial to degree 7 (truncation below 1e-8 relative), times 2^n built
 * in the exponent bits. Inputs below -87 give exp(-87) (~1.6e-38, still
 * normal), which is 0 for any softmax sum of at least 1. */
static inline float mp_infer_expf(float x) {
    x = x < -87.0f ? -87.0f : x > 0.0f ? 0.0f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

/* In-place softmax over k planes of n values each (class c of voxel i at
 * v[c*stride + i]); m and s are scratch rows of n floats. */
static inline void mp_infer_softmax_rows(float *v, int64_t stride, int k, int64_t n, float *m, float *s) {
    for (int64_t i = 0; i < n; i++) m[i] = v[i];
    for (int c = 1; c < k; c++) {
        const float *r = v + c * stride;
        for (int64_t i = 0; i < n; i++) m[i] = r[i] > m[i] ? r[i] : m[i];
    }
    for (int64_t i = 0; i < n; i++) s[i] = 0;
    for (int c = 0; c < k; c++) {
        float *r = v + c * stride;
        for (int64_t i = 0; i < n; i++) {
            r[i] = mp_infer_expf(r[i] - m[i]);
            s[i] += r[i];
        }
    }
    for (int64_t i = 0; i < n; i++) s[i] = 1.0f / s[i];
    for (int c = 0; c < k; c++) {
        float *r = v + c * stride;
        for (int64_t i = 0; i < n; i++) r[i] *= s[i];
    }
}

/* Argmax over k planes (first maximum wins, as numpy) into best[0..n). */
static inline void mp_infer_argmax_rows(const float *v, int64_t stride, int k, int64_t n, float *m,
                                        uint16_t *best) {
    for (int64_t i = 0; i < n; i++) {
        m[i] = v[i];
        best[i] = 0;
    }
    for (int c = 1; c < k; c++) {
        const float *r = v + c * stride;
        for (int64_t i = 0; i < n; i++)
            if (r[i] > m[i]) {
                m[i] = r[i];
                best[i] = (uint16_t)c;
            }
    }
}

#endif
