/* Benchmark of the morphology and metrics kernels on a 256x256x160 label map
 * with 3 organ-like classes and a perturbed "prediction": per-class metrics
 * (counts + HD95/ASSD/NSD on bounding boxes), a full-volume distance
 * transform, connected components and keep-largest, at 1 and N threads.
 * Usage: bench_metrics [threads] (default: all CPUs). Single-thread runs
 * also report process CPU time, which stays meaningful on a busy machine. */
#include "medpipe/medpipe.h"
#include "medpipe/metrics.h"
#include "medpipe/vol_morph.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void ellipsoid(uint8_t *m, const int64_t d[3], const double c[3], const double r[3], uint8_t value) {
    for (int64_t z = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t x = 0; x < d[0]; x++) {
                double u = (x - c[0]) / r[0], v = (y - c[1]) / r[1], w = (z - c[2]) / r[2];
                if (u * u + v * v + w * w <= 1) m[x + d[0] * (y + d[1] * z)] = value;
            }
}

static void phantom(mp_vol_t *v, double shift, mp_rng_t *rng, double noise) {
    uint8_t *m = v->data;
    const int64_t *d = v->dim;
    const double c[3][3] = {{128, 128, 80}, {90, 140, 70}, {170, 110, 95}};
    const double r[3][3] = {{90, 70, 60}, {30, 25, 35}, {22, 28, 20}};
    for (int k = 0; k < 3; k++) {
        double cc[3] = {c[k][0] + shift, c[k][1] - shift / 2, c[k][2]};
        ellipsoid(m, d, cc, r[k], (uint8_t)(k + 1));
    }
    int64_t nv = mp_vol_voxels(v);
    for (int64_t i = 0; i < nv; i++)
        if (mp_rng_uniform(rng) < noise) m[i] = (uint8_t)mp_rng_below(rng, 4);
}

static double time_metrics(const mp_vol_t *p, const mp_vol_t *r, mp_pool_t *pool, mp_class_metrics_t out[3],
                           double *cpu) {
    const int64_t labels[3] = {1, 2, 3};
    mp_metrics_opts_t o;
    mp_metrics_opts_init(&o);
    o.pool = pool;
    double t0 = mp_time_now(), c0 = cpu_now();
    if (mp_metrics_labels(out, p, r, labels, 3, &o)) fprintf(stderr, "metrics: %s\n", mp_error_message());
    *cpu = cpu_now() - c0;
    return mp_time_now() - t0;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : mp_cpu_count();
    const int64_t dim[4] = {256, 256, 160, 1};
    const double sp[3] = {0.8, 0.8, 1.5};
    mp_vol_t *ref, *pred, *clean;
    if (mp_vol_create(&ref, dim, MP_DTYPE_U8) || mp_vol_create(&pred, dim, MP_DTYPE_U8) ||
        mp_vol_create(&clean, dim, MP_DTYPE_U8))
        return 1;
    mp_vol_set_spacing(ref, sp, NULL);
    mp_vol_set_spacing(pred, sp, NULL);
    mp_vol_set_spacing(clean, sp, NULL);
    mp_rng_t rng;
    mp_rng_init(&rng, 7, 0);
    phantom(ref, 0, &rng, 0);
    phantom(clean, 2.5, &rng, 0);
    phantom(pred, 2.5, &rng, 0.0005);
    mp_pool_t *pool = mp_pool_create(threads);
    mp_class_metrics_t m[3];
    {
        double c1, cn;
        double t1 = time_metrics(clean, ref, NULL, m, &c1);
        double tn = time_metrics(clean, ref, pool, m, &cn);
        printf("metrics 256x256x160, 3 classes, shifted prediction: %.3f s (1 thread, cpu %.3f s), %.3f s (%d threads)\n",
               t1, c1, tn, threads);
    }
    double c1, cn;
    double t1 = time_metrics(pred, ref, NULL, m, &c1);
    double tn = time_metrics(pred, ref, pool, m, &cn);
    printf("metrics 256x256x160, 3 classes, scattered false positives: %.3f s (1 thread, cpu %.3f s), %.3f s (%d threads)\n",
           t1, c1, tn, threads);
    for (int k = 0; k < 3; k++)
        printf("  class %d: Dice %.4f HD95 %.3f ASSD %.3f NSD %.4f\n", k + 1, m[k].dice, m[k].hd95, m[k].assd,
               m[k].nsd);
    int64_t nv = mp_vol_voxels(ref);
    uint8_t *f = malloc((size_t)nv);
    double *sq = malloc(sizeof *sq * (size_t)nv);
    for (int64_t i = 0; i < nv; i++) f[i] = ((uint8_t *)ref->data)[i] == 0;
    double t0 = mp_time_now(), c0 = cpu_now();
    mp_edt_sq(sq, f, ref->dim, sp, NULL);
    double e1 = mp_time_now() - t0, ec = cpu_now() - c0;
    t0 = mp_time_now();
    mp_edt_sq(sq, f, ref->dim, sp, pool);
    double en = mp_time_now() - t0;
    printf("EDT full volume (%.1f Mvoxels): %.3f s (1 thread, cpu %.3f s), %.3f s (%d threads)\n", nv / 1e6, e1, ec,
           en, threads);
    mp_vol_t *lab;
    int64_t n;
    for (int c = 0; c < 2; c++) {
        mp_conn_t conn = c ? MP_CONN_26 : MP_CONN_6;
        t0 = mp_time_now();
        mp_vol_cc_label(&lab, &n, NULL, pred, conn, 1);
        printf("connected components (per class, %d-conn): %.3f s, %lld components\n", (int)conn,
               mp_time_now() - t0, (long long)n);
        mp_vol_free(lab);
    }
    int64_t removed;
    t0 = mp_time_now();
    mp_vol_keep_largest(pred, MP_CONN_26, NULL, 0, 0, &removed);
    printf("keep largest per class (26-conn): %.3f s, %lld voxels removed\n", mp_time_now() - t0,
           (long long)removed);
    free(f);
    free(sq);
    mp_pool_free(pool);
    mp_vol_free(ref);
    mp_vol_free(pred);
    mp_vol_free(clean);
    return 0;
}
