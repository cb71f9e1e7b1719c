/* NIfTI read throughput: reads a file N times with mp_image_read and prints
 * MB/s of decompressed voxel data (best and median run). Without arguments it
 * writes a CT-like 256x256x160 int16 .nii.gz (gzip level 6) and reads that.
 * Usage: bench_nifti_read [FILE [N]]   (bench/bench_nifti.py adds nibabel) */
#include "medpipe/medpipe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Air, an elliptic body of soft tissue with noise, a brighter "spine". */
static int make_ct(const char *path) {
    int64_t dim[4] = {256, 256, 160, 1};
    mp_vol_t *v;
    if (mp_vol_create(&v, dim, MP_DTYPE_I16) != MP_OK) return -1;
    mp_rng_t rng;
    mp_rng_init(&rng, 42, 0);
    int16_t *d = v->data;
    for (int64_t z = 0; z < 160; z++)
        for (int64_t y = 0; y < 256; y++)
            for (int64_t x = 0; x < 256; x++) {
                double ex = (x - 128) / 110.0, ey = (y - 128) / 80.0, r = ex * ex + ey * ey;
                double hu = -1000;
                if (r < 1) hu = 40 + 15 * mp_rng_normal(&rng);
                if (hypot(x - 128, y - 170) < 14) hu = 700 + 40 * mp_rng_normal(&rng);
                d[x + 256 * (y + 256 * z)] = (int16_t)lrint(hu);
            }
    double sp[3] = {0.8, 0.8, 1.5};
    mp_vol_set_spacing(v, sp, NULL);
    int rc = mp_image_write(path, v, NULL);
    mp_vol_free(v);
    return rc;
}

int main(int argc, char **argv) {
    char tmp[256] = "";
    const char *path = argc > 1 ? argv[1] : NULL;
    int n = argc > 2 ? atoi(argv[2]) : 10;
    if (n < 1) n = 1;
    if (!path) {
        snprintf(tmp, sizeof tmp, "%s/medpipe-bench-ct-%ld.nii.gz", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
                 (long)getpid());
        if (make_ct(tmp) != MP_OK) {
            fprintf(stderr, "bench_nifti_read: %s\n", mp_error_message());
            return 1;
        }
        path = tmp;
    }
    double *t = calloc((size_t)n, sizeof *t);
    size_t bytes = 0;
    for (int i = 0; i < n; i++) {
        mp_vol_t *v = NULL;
        double t0 = mp_time_now();
        if (mp_image_read(&v, path) != MP_OK) {
            fprintf(stderr, "bench_nifti_read: %s\n", mp_error_message());
            return 1;
        }
        t[i] = mp_time_now() - t0;
        bytes = mp_vol_bytes(v);
        mp_vol_free(v);
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double mb = (double)bytes / 1e6;
    printf("medpipe read %s: %.1f MB decompressed, best %.1f ms (%.0f MB/s), median %.1f ms (%.0f MB/s), %d runs\n",
           path, mb, t[0] * 1e3, mb / t[0], t[n / 2] * 1e3, mb / t[n / 2], n);
    free(t);
    if (tmp[0]) unlink(tmp);
    return 0;
}
