/* Helpers shared by test_dist.c and test_dist_mpi.c: a tiny U-Net
 * configuration, a synthetic patch per sample, and a random tiling of a
 * buffer into ranges reported in random order. */
#ifndef MP_TEST_DIST_UTIL_H
#define MP_TEST_DIST_UTIL_H

#include "medpipe/core.h"
#include "medpipe/nn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* 3 stages, features 4/8/16, a 16^3 patch. */
static inline void dist_tiny_config(mp_unet_config_t *c, int64_t batch, mp_nn_engine_t engine, mp_nn_dtype_t dt,
                                    int deep_supervision) {
    mp_unet_config_default(c);
    c->n_stages = 3;
    mp_unet_config_features(c, 4, 16);
    c->batch = batch;
    c->patch[0] = c->patch[1] = c->patch[2] = 16;
    c->engine = engine;
    c->dtype = dt;
    c->deep_supervision = deep_supervision;
    c->threads = 1; /* a shared 2-core box: see tests/test_nn_unet.c */
}

/* Sample `s` of a dataset: a noisy sphere of class 1 whose centre depends on s. */
static inline void dist_sample(float *img, uint8_t *lab, int64_t p, uint64_t s) {
    mp_rng_t r;
    mp_rng_init(&r, 1234, s);
    double cz = mp_rng_range(&r, 5, 11), cy = mp_rng_range(&r, 5, 11), cx = mp_rng_range(&r, 5, 11);
    for (int64_t z = 0; z < p; z++)
        for (int64_t y = 0; y < p; y++)
            for (int64_t x = 0; x < p; x++) {
                int64_t v = (z * p + y) * p + x;
                double d = sqrt((z - cz) * (z - cz) + (y - cy) * (y - cy) + (x - cx) * (x - cx));
                lab[v] = d < 4.5;
                img[v] = (float)(lab[v] + 0.5 * mp_rng_normal(&r));
            }
}

typedef struct {
    int64_t off, count;
} dist_range_t;

/* Cuts [0, n) into ranges of 1..maxlen floats and shuffles them; returns how many. */
static inline int dist_random_ranges(dist_range_t *r, int64_t n, int64_t maxlen, mp_rng_t *rng) {
    int k = 0;
    for (int64_t off = 0; off < n; k++) {
        int64_t len = 1 + (int64_t)mp_rng_below(rng, (uint64_t)maxlen);
        if (len > n - off) len = n - off;
        r[k].off = off, r[k].count = len;
        off += len;
    }
    for (int i = k - 1; i > 0; i--) {
        int j = (int)mp_rng_below(rng, (uint64_t)i + 1);
        dist_range_t t = r[i];
        r[i] = r[j], r[j] = t;
    }
    return k;
}

#endif
