/* Resampling throughput on a 256x256x160 volume (the size of a typical CT or
 * MRI): output voxels per second for each mode with 1 and 2 threads, best of
 * a few runs. Usage: bench_resample [repeats] */
#include "medpipe/medpipe.h"
#include "medpipe/vol_ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

/* Process CPU seconds (all threads, user + system): on a shared machine the
 * work done per CPU second is steadier than wall-clock time. */
static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

typedef struct {
    const char *name;
    mp_dtype_t dtype;
    mp_interp_t mode;
    double target[3]; /* spacing; 0 = the oblique grid */
} bench_case_t;

static double run_case(const bench_case_t *bc, mp_vol_t *img, mp_vol_t *lab, mp_pool_t *pool, int reps,
                       int64_t *nvox, double *cpu_best) {
    mp_vol_t *src = bc->mode == MP_INTERP_LINEAR ? img : lab;
    double best = 1e30;
    *cpu_best = 1e30;
    for (int r = 0; r < reps; r++) {
        mp_vol_t *out = NULL;
        double t0 = mp_time_now(), c0 = cpu_now();
        int rc;
        if (bc->target[0] > 0) {
            rc = mp_vol_resample_spacing(&out, src, bc->target, bc->mode, pool);
        } else {
            /* 10 degrees about z: the per-voxel path, same output size. */
            double a[4][4];
            mp_mat4_identity(a);
            double c = cos(0.1745), s = sin(0.1745);
            a[0][0] = c * src->spacing[0];
            a[1][0] = s * src->spacing[0];
            a[0][1] = -s * src->spacing[1];
            a[1][1] = c * src->spacing[1];
            a[2][2] = src->spacing[2];
            rc = mp_vol_resample_grid(&out, src, src->dim, a, bc->mode, 0, pool);
        }
        double t = mp_time_now() - t0, ct = cpu_now() - c0;
        if (ct < *cpu_best) *cpu_best = ct;
        if (rc) {
            fprintf(stderr, "bench_resample: %s: %s\n", bc->name, mp_error_message());
            return -1;
        }
        *nvox = mp_vol_elems(out);
        mp_vol_free(out);
        if (t < best) best = t;
    }
    return best;
}

/* The other preprocessing steps on the same volume, for scale (1 thread). */
static void other_ops(mp_vol_t *i16, mp_vol_t *lab, int reps) {
    double best[5] = {1e30, 1e30, 1e30, 1e30, 1e30};
    for (int r = 0; r < reps; r++) {
        mp_box_t box;
        mp_vol_t *out = NULL, *f = NULL;
        double t0 = mp_time_now();
        mp_vol_bbox_nonzero(lab, 5, &box, NULL);
        double t1 = mp_time_now();
        mp_vol_reorient(&out, i16, "LPI", NULL);
        double t2 = mp_time_now();
        mp_vol_free(out);
        mp_vol_to_f32(&f, i16);
        double t3 = mp_time_now();
        mp_vol_normalize_zscore(f, lab, 1, NULL);
        double t4 = mp_time_now();
        double q[2] = {0.5, 99.5}, qo[2];
        mp_vol_intensity_stats(i16, 0, lab, q, 2, qo, NULL);
        double t5 = mp_time_now();
        mp_vol_free(f);
        double t[5] = {t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4};
        for (int k = 0; k < 5; k++)
            if (t[k] < best[k]) best[k] = t[k];
    }
    static const char *names[5] = {"bbox of non-zero (u8 mask)", "reorient i16 to LPI", "i16 -> f32 (mp_vol_to_f32)",
                                   "z-score within mask", "stats + 0.5/99.5 percentiles in mask"};
    double n = (double)mp_vol_voxels(i16);
    printf("\nother ops on the same volume, 1 thread: Mvoxel/s (ms)\n");
    for (int k = 0; k < 5; k++) printf("%-40s %9.1f (%6.1f ms)\n", names[k], n / best[k] / 1e6, best[k] * 1e3);
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    if (reps < 1) reps = 1;
    int64_t dim[4] = {256, 256, 160, 1};
    mp_vol_t *f32, *i16, *lab;
    if (mp_vol_create(&f32, dim, MP_DTYPE_F32) || mp_vol_create(&i16, dim, MP_DTYPE_I16) ||
        mp_vol_create(&lab, dim, MP_DTYPE_U8)) {
        fprintf(stderr, "bench_resample: %s\n", mp_error_message());
        return 1;
    }
    double sp[3] = {0.8, 0.8, 1.25};
    mp_vol_set_spacing(f32, sp, NULL);
    mp_vol_set_spacing(i16, sp, NULL);
    mp_vol_set_spacing(lab, sp, NULL);
    mp_rng_t rng;
    mp_rng_init(&rng, 1, 0);
    for (int64_t i = 0; i < mp_vol_elems(f32); i++) {
        int64_t x = i % 256, y = (i / 256) % 256, z = i / (256 * 256);
        double d = hypot(hypot((double)x - 128, (double)y - 128), 1.6 * ((double)z - 80));
        mp_vol_set(f32, i, 40 * sin(0.05 * (double)x) + 0.5 * (double)y + 10 * mp_rng_normal(&rng));
        mp_vol_set(i16, i, mp_vol_get(f32, i) * 10);
        mp_vol_set(lab, i, d < 40 ? 1 : d < 60 ? 2 : d < 70 ? 3 : 0);
    }
    const bench_case_t cases[] = {
        {"linear f32 -> 1 mm (205x205x200)", MP_DTYPE_F32, MP_INTERP_LINEAR, {1, 1, 1}},
        {"linear i16 -> 1 mm", MP_DTYPE_I16, MP_INTERP_LINEAR, {1, 1, 1}},
        {"linear f32 -> 0.5 mm (410x410x400)", MP_DTYPE_F32, MP_INTERP_LINEAR, {0.5, 0.5, 0.5}},
        {"linear f32 -> 2 mm (102x102x100)", MP_DTYPE_F32, MP_INTERP_LINEAR, {2, 2, 2}},
        {"nearest u8 -> 1 mm", MP_DTYPE_U8, MP_INTERP_NEAREST, {1, 1, 1}},
        {"label u8 -> 1 mm (per-label linear)", MP_DTYPE_U8, MP_INTERP_LABEL, {1, 1, 1}},
        {"linear f32 oblique grid (256x256x160)", MP_DTYPE_F32, MP_INTERP_LINEAR, {0, 0, 0}},
    };
    printf("resample 256x256x160, spacing 0.8x0.8x1.25 mm; output Mvoxel/s wall clock and per CPU second "
           "(best of %d)\n", reps);
    printf("%-40s %9s %9s %8s | %12s %12s\n", "case", "1 thread", "2 threads", "speedup", "1t per CPU-s",
           "2t per CPU-s");
    mp_pool_t *pool2 = mp_pool_create(2);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bench_case_t *bc = &cases[k];
        mp_vol_t *img = bc->dtype == MP_DTYPE_I16 ? i16 : f32;
        int64_t n = 0;
        double c1, c2;
        double t1 = run_case(bc, img, lab, NULL, reps, &n, &c1);
        double t2 = run_case(bc, img, lab, pool2, reps, &n, &c2);
        if (t1 < 0 || t2 < 0) return 1;
        printf("%-40s %9.1f %9.1f %7.2fx | %12.1f %12.1f\n", bc->name, (double)n / t1 / 1e6, (double)n / t2 / 1e6,
               t1 / t2, (double)n / c1 / 1e6, (double)n / c2 / 1e6);
        fflush(stdout);
    }
    mp_pool_free(pool2);
    other_ops(i16, lab, reps);
    mp_vol_free(f32);
    mp_vol_free(i16);
    mp_vol_free(lab);
    return 0;
}
