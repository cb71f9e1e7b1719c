/* Benchmark and helper: writes a realistic CT series (a 512x512 phantom with
 * body, organs, bone and noise, 0.7 x 0.7 x 1.25 mm, HU as int16) with the
 * DICOM series writer and reports the time. With an output folder it keeps
 * the series, e.g. as input for DICOM reader benchmarks:
 *   bench_dicom_write [OUT_DIR [SLICES [SIZE]]]   (default: temporary, 300, 512) */
#include "medpipe/dicom_write.h"
#include "medpipe/medpipe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void phantom(mp_vol_t *v, uint64_t seed) {
    int64_t nx = v->dim[0], ny = v->dim[1], nz = v->dim[2];
    int16_t *d = v->data;
    for (int64_t z = 0; z < nz; z++) {
        mp_rng_t r;
        mp_rng_init(&r, seed, (uint64_t)z);
        double t = (z + 0.5) / nz - 0.5;
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++) {
                double u = (x + 0.5) / nx - 0.5, w = (y + 0.5) / ny - 0.5;
                double hu = -1000;
                if (u * u / 0.16 + w * w / 0.09 < 1) hu = 30;                                  /* body */
                if ((u - 0.12) * (u - 0.12) / 0.02 + (w + 0.05) * (w + 0.05) / 0.015 + t * t / 0.1 < 1) hu = 60;
                if ((u + 0.15) * (u + 0.15) / 0.004 + w * w / 0.006 + t * t / 0.2 < 1) hu = 35; /* kidney-like */
                if (u * u + (w - 0.2) * (w - 0.2) < 0.0025) hu = 900;                         /* spine */
                uint32_t b = mp_rng_u32(&r); /* triangular noise, sd ~12 HU: cheap for 78M voxels */
                hu += ((double)(b & 0xFFFF) + (double)(b >> 16)) / 65535.0 * 29.4 - 29.4;
                d[x + nx * (y + ny * z)] = (int16_t)lrint(hu);
            }
    }
}

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : NULL;
    int64_t nz = argc > 2 ? atoll(argv[2]) : 300, n = argc > 3 ? atoll(argv[3]) : 512;
    if (nz < 1 || n < 1 || n > 4096) {
        fprintf(stderr, "usage: bench_dicom_write [OUT_DIR [SLICES [SIZE]]]\n");
        return 2;
    }
    char tmp[512];
    if (!out) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/medpipe-bench-dicomw-%ld", t ? t : "/tmp", (long)getpid());
        out = tmp;
    }
    int64_t dim[4] = {n, n, nz, 1};
    mp_vol_t *v;
    if (mp_vol_create(&v, dim, MP_DTYPE_I16)) {
        fprintf(stderr, "%s\n", mp_error_message());
        return 1;
    }
    double sp[3] = {0.7, 0.7, 1.25}, org[3] = {-0.35 * (double)n, -0.35 * (double)n, -0.625 * (double)nz};
    mp_vol_set_spacing(v, sp, org);
    phantom(v, 1);
    mp_dicom_write_opts_t o;
    mp_dicom_write_opts_init(&o);
    o.patient_name = "Phantom^Bench";
    o.series_description = "medpipe benchmark phantom";
    o.has_window = 1;
    o.window_center = 40;
    o.window_width = 400;
    mp_dicom_write_info_t info;
    double t0 = mp_time_now(), c0 = cpu_now();
    int rc = mp_dicom_write_series(out, v, &o, &info, NULL);
    double dt = mp_time_now() - t0, cpu = cpu_now() - c0;
    if (rc) {
        fprintf(stderr, "bench_dicom_write: %s\n", mp_error_message());
        mp_vol_free(v);
        return 1;
    }
    double mb = (double)mp_vol_bytes(v) / 1e6;
    printf("dicom series write: %lld slices of %lldx%lld int16 (%.0f MB) in %.3f s (%.3f s CPU): %.0f MB/s, "
           "%.0f slices/s -> %s\n", (long long)nz, (long long)n, (long long)n, mb, dt, cpu, mb / dt, (double)nz / dt, out);
    if (out == tmp) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    mp_vol_free(v);
    return 0;
}
