/* Internal pieces of the training loader shared by sampler.c (case and patch
 * choice, straight crops), augment.c (spatial and intensity augmentation)
 * and loader.c (threads and queue). Tests include it to drive single steps
 * (a given affine, a given mirror) directly.
 *
 * Conventions: patch sizes and coordinates are in (x, y, z) order here
 * (p[0] = W, p[1] = H, p[2] = D), arrays are (C, z, y, x) with x fastest. */
#ifndef MP_LOADER_INTERNAL_H
#define MP_LOADER_INTERNAL_H

#include <stdint.h>

#include "medpipe/loader.h"

/* Largest Gaussian blur radius (voxels): sigma is limited to 16. */
#define MP_LD_MAX_BLUR_RADIUS 64
#define MP_LD_MAX_BLUR_SIGMA 16.0

/* A read-only view of one cached case. */
typedef struct {
    const float *img;   /* channels x (z, y, x) */
    const uint8_t *seg; /* (z, y, x) */
    int64_t dim[3];     /* x, y, z */
    int channels;
} mp_ld_src_t;

/* Per-thread working memory, sized once for a patch and the options. */
typedef struct {
    int p[3];          /* patch (x, y, z) */
    float *buf_a;      /* patch voxels each: blur and low-resolution passes */
    float *buf_b;
    float *line;       /* max(p) + 2 * MP_LD_MAX_BLUR_RADIUS */
    int32_t *itab;     /* 6 * max(p): resampling index tables */
    float *ftab;       /* 3 * max(p): resampling weights */
    float *disp;       /* 3 x patch voxels (elastic only, else NULL) */
    float *nodes;      /* coarse displacement nodes (elastic only) */
    float *etmp_a;     /* separable B-spline passes (elastic only) */
    float *etmp_b;
    int64_t node_cap, etmp_cap;
} mp_ld_scratch_t;

/* What one sample needs: the mapped training cases and the fixed options. */
typedef struct {
    const mp_cache_case_t *cases; /* mapped, n_cases */
    const int64_t *case_index;    /* cache index of each */
    int64_t n_cases;
    int p[3];                     /* patch (x, y, z) */
    int channels;
    int64_t fg_first;             /* first forced global sample index */
    uint64_t seed;
    int augment;
    mp_aug_opts_t aug;
} mp_ld_conf_t;

/* Allocates scratch for patch p (x, y, z); augmentation buffers only when
 * `augment`, elastic buffers only when a->p_elastic > 0. */
int mp_ld_scratch_init(mp_ld_scratch_t *s, const int p[3], int augment, const mp_aug_opts_t *a);
void mp_ld_scratch_deinit(mp_ld_scratch_t *s);

/* Checks augmentation options (probabilities in [0, 1], ordered ranges). */
int mp_ld_aug_check(const mp_aug_opts_t *a);

/* One whole sample: case, location, augmentation, from the Philox stream
 * keyed by (seed, epoch, step, global sample g). */
int mp_ld_make_sample(const mp_ld_conf_t *cf, mp_ld_scratch_t *sc, float *img, uint8_t *seg, int64_t epoch,
                      int64_t step, int64_t g, int64_t *case_index);

/* Patch start (lowest voxel, may be negative) for a case of dims `dim`:
 * forced = centred on a random stored foreground voxel (clamped as nnU-Net
 * does), else uniform. *fg_voxel gets the chosen voxel or -1s. */
void mp_ld_pick_location(mp_rng_t *r, const mp_cache_case_t *cc, const int p[3], int forced, int64_t lo[3],
                         int64_t fg_voxel[3]);

/* Straight copy of the patch starting at lo; outside the volume image 0, label 0. */
void mp_ld_crop(const mp_ld_src_t *s, const int64_t lo[3], const int p[3], float *img, uint8_t *seg);

/* Resamples the patch: output voxel o (x, y, z) reads source position
 * centre + A (o - (p - 1) / 2) (+ disp(o) when disp is not NULL: 3 planes of
 * patch voxels, x, y, z components); image trilinear, labels nearest,
 * outside 0. */
void mp_ld_spatial(const mp_ld_src_t *s, const double centre[3], const double A[3][3], const float *disp,
                   const int p[3], float *img, uint8_t *seg);

/* Rotation about x, then y, then z (radians) times a coordinate scale;
 * entries within 1e-12 of an integer are snapped (exact right angles). */
void mp_ld_affine(const double angle[3], double scale, double A[3][3]);

/* The augmentation of one sample starting at patch start lo (draws from r). */
void mp_ld_augment(const mp_aug_opts_t *a, mp_rng_t *r, const mp_ld_src_t *s, const int64_t lo[3],
                   mp_ld_scratch_t *sc, float *img, uint8_t *seg);

/* Single intensity steps on one channel of patch p (tests). */
void mp_ld_blur(float *x, const int p[3], double sigma, mp_ld_scratch_t *sc);
void mp_ld_lowres(float *x, const int p[3], double zoom, mp_ld_scratch_t *sc);
void mp_ld_gamma(float *x, int64_t n, double gamma, int invert, int retain_stats);
/* Flips image (channels) and labels along the axes in mask (bit 0 = x). */
void mp_ld_mirror(float *img, uint8_t *seg, int channels, const int p[3], unsigned mask);

/* Test hook: batch (epoch, step) fails in the producing thread with a
 * message, as a case that cannot be read would. */
void mp_ld_inject_failure(mp_loader_t *l, int64_t epoch, int64_t step);
/* Test probe: batches finished and waiting to be handed out. */
int mp_ld_ready_count(mp_loader_t *l);

#endif
