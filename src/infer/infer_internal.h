/* Private helpers of the inference module (src/infer): limits and the row
 * kernels the engine and the output writer share (softmax, weighted
 * accumulation, argmax), written with GCC/clang vector extensions so they
 * run 8 (AVX) or 4 floats at a time at -O2 (GCC 12 does not vectorize
 * these loops on its own there). Every element goes through the same vector code, tails
 * included (padded into a vector), so a result never depends on where a
 * row starts or how work was split. Not public API. */
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

/* 8 lanes with AVX, 4 (SSE, NEON) otherwise; each element's arithmetic is
 * the same either way. */
#if defined(__AVX__)
#define MP_V 8
#else
#define MP_V 4
#endif
typedef float mp_vf __attribute__((vector_size(MP_V * 4)));
typedef int32_t mp_vi __attribute__((vector_size(MP_V * 4)));

/* Loads/stores of n (1..MP_V) floats; missing lanes read as `fill`. */
static inline mp_vf mp_v_load(const float *p, int64_t n, float fill) {
    mp_vf v;
    if (n >= MP_V) {
        memcpy(&v, p, sizeof v);
    } else {
        float t[MP_V];
        for (int i = 0; i < MP_V; i++) t[i] = i < n ? p[i] : fill;
        memcpy(&v, t, sizeof v);
    }
    return v;
}

static inline void mp_v_store(float *p, mp_vf v, int64_t n) {
    if (n >= MP_V) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, (size_t)n * sizeof *p);
}

static inline mp_vf mp_v_splat(float x) {
    mp_vf v;
    for (int i = 0; i < MP_V; i++) v[i] = x;
    return v;
}

static inline mp_vi mp_v_splat_i(int32_t x) {
    mp_vi v;
    for (int i = 0; i < MP_V; i++) v[i] = x;
    return v;
}

static inline mp_vf mp_v_select(mp_vi mask, mp_vf a, mp_vf b) {
    return (mp_vf)(((mp_vi)a & mask) | ((mp_vi)b & ~mask));
}

static inline mp_vf mp_v_max(mp_vf a, mp_vf b) { return mp_v_select(a > b, a, b); }

/* exp(x) for x <= 0 within about 2 ulp: x = n ln2 + r, |r| <= ln2/2, n
 * rounded to nearest with the 1.5 * 2^23 trick, exp(r) by its Taylor
 * polynomial to degree 7 (truncation below 1e-8 relative), times 2^n built
 * in the exponent bits. Inputs below -87 give exp(-87) (~1.6e-38, still a
 * normal float), which vanishes next to any softmax sum of at least 1. */
static inline mp_vf mp_v_exp(mp_vf x) {
    const mp_vf lo = mp_v_splat(-87.0f), hi = mp_v_splat(0.0f);
    x = mp_v_select(x < lo, lo, x);
    x = mp_v_select(x > hi, hi, x);
    mp_vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    mp_vf r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    mp_vf p = r * (1.0f / 5040.0f) + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    mp_vi bits = (__builtin_convertvector(n, mp_vi) + 127) << 23;
    return p * (mp_vf)bits;
}

/* In-place softmax over k rows of n values (class c of voxel i at
 * v[c*stride + i]). */
static inline void mp_infer_softmax_rows(float *v, int64_t stride, int k, int64_t n) {
    for (int64_t i = 0; i < n; i += MP_V) {
        int64_t w = n - i;
        mp_vf m = mp_v_load(v + i, w, 0), s = mp_v_splat(0);
        for (int c = 1; c < k; c++) m = mp_v_max(m, mp_v_load(v + c * stride + i, w, 0));
        for (int c = 0; c < k; c++) {
            mp_vf e = mp_v_exp(mp_v_load(v + c * stride + i, w, 0) - m);
            mp_v_store(v + c * stride + i, e, w);
            s += e;
        }
        mp_vf inv = 1.0f / s;
        for (int c = 0; c < k; c++) mp_v_store(v + c * stride + i, mp_v_load(v + c * stride + i, w, 0) * inv, w);
    }
}

/* The fold of one window row into the accumulators: acc[c*astride + i] +=
 * g[i] * softmax(e)[c] (probs) or g[i] * e[c*estride + i] (logits), and
 * ws[i] += g[i]. The softmax is folded as exp(e - max) * (g / sum), the
 * exponentials of one chunk of voxels kept in scratch (k x MP_V floats), so the
 * logits are only read. */
static inline void mp_infer_fold_row(float *acc, int64_t astride, float *ws, const float *e, int64_t estride,
                                     const float *g, int k, int64_t n, int probs, float *scratch) {
    for (int64_t i = 0; i < n; i += MP_V) {
        int64_t w = n - i;
        mp_vf gv = mp_v_load(g + i, w, 0);
        if (probs) {
            mp_vf m = mp_v_load(e + i, w, 0), s = mp_v_splat(0);
            for (int c = 1; c < k; c++) m = mp_v_max(m, mp_v_load(e + c * estride + i, w, 0));
            for (int c = 0; c < k; c++) {
                mp_vf x = mp_v_exp(mp_v_load(e + c * estride + i, w, 0) - m);
                memcpy(scratch + c * MP_V, &x, sizeof x);
                s += x;
            }
            mp_vf scale = gv / s;
            for (int c = 0; c < k; c++) {
                float *a = acc + c * astride + i;
                mp_vf x;
                memcpy(&x, scratch + c * MP_V, sizeof x);
                mp_v_store(a, mp_v_load(a, w, 0) + x * scale, w);
            }
        } else {
            for (int c = 0; c < k; c++) {
                float *a = acc + c * astride + i;
                mp_v_store(a, mp_v_load(a, w, 0) + mp_v_load(e + c * estride + i, w, 0) * gv, w);
            }
        }
        mp_v_store(ws + i, mp_v_load(ws + i, w, 0) + gv, w);
    }
}

/* acc[c*stride + i] /= w[i] for k rows (as a multiplication by 1/w). */
static inline void mp_infer_normalize_rows(float *acc, int64_t stride, const float *w, int k, int64_t n) {
    for (int64_t i = 0; i < n; i += MP_V) {
        int64_t m = n - i;
        mp_vf inv = 1.0f / mp_v_load(w + i, m, 1);
        for (int c = 0; c < k; c++) mp_v_store(acc + c * stride + i, mp_v_load(acc + c * stride + i, m, 0) * inv, m);
    }
}

/* Argmax over k rows (the first maximum wins, as numpy) into best[0..n). */
static inline void mp_infer_argmax_rows(const float *v, int64_t stride, int k, int64_t n, uint16_t *best) {
    for (int64_t i = 0; i < n; i += MP_V) {
        int64_t w = n - i;
        mp_vf m = mp_v_load(v + i, w, 0);
        mp_vi b = mp_v_splat_i(0);
        for (int c = 1; c < k; c++) {
            mp_vf x = mp_v_load(v + c * stride + i, w, 0);
            mp_vi gt = x > m;
            m = mp_v_select(gt, x, m);
            b = (b & ~gt) | ((mp_v_splat_i(c)) & gt);
        }
        int32_t t[MP_V];
        memcpy(t, &b, sizeof t);
        for (int j = 0; j < MP_V && j < w; j++) best[i + j] = (uint16_t)t[j];
    }
}

/* out[i] = blend of four rows: bilinear in (wy, wz). */
static inline void mp_infer_blend4(float *out, const float *a0, const float *a1, const float *b0, const float *b1,
                                   float wy, float wz, int64_t n) {
    for (int64_t i = 0; i < n; i += MP_V) {
        int64_t w = n - i;
        mp_vf u0 = mp_v_load(a0 + i, w, 0), u1 = mp_v_load(a1 + i, w, 0);
        mp_vf v0 = mp_v_load(b0 + i, w, 0), v1 = mp_v_load(b1 + i, w, 0);
        mp_vf u = u0 + (u1 - u0) * wy, v = v0 + (v1 - v0) * wy;
        mp_v_store(out + i, u + (v - u) * wz, w);
    }
}

#endif
