/* Sliding-window geometry shared by inference and validation: option
 * defaults, nnU-Net's window start positions and its Gaussian importance
 * map. Kept apart from the engine so both formulas can be checked alone. */
#include "infer_internal.h"

#include <math.h>
#include <string.h>

void mp_infer_opts_init(mp_infer_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->step = 0.5;
    o->gaussian = 1;
    o->sigma_scale = 1.0 / 8.0;
    o->average = MP_INFER_AVG_PROBS;
}

int mp_infer_window_starts(int64_t size, int64_t patch, double step, int64_t *starts, int64_t cap, int64_t *n) {
    *n = 0;
    if (patch < 1 || size < patch)
        return mp_error_set(MP_ERR_ARG, "sliding window: axis of %lld voxels cannot hold a patch of %lld",
                            (long long)size, (long long)patch);
    if (!(step > 0 && step <= 1))
        return mp_error_set(MP_ERR_ARG, "sliding window: step %g must be in (0, 1]", step);
    /* The step is a fraction of the patch in voxels, possibly fractional. */
    double target = (double)patch * step;
    int64_t count = (int64_t)ceil((double)(size - patch) / target) + 1;
    double actual = count > 1 ? (double)(size - patch) / (double)(count - 1) : 0;
    for (int64_t i = 0; i < count && starts; i++) {
        if (i >= cap) break;
        /* nearbyint rounds half to even in the default mode, as np.round. */
        starts[i] = (int64_t)nearbyint(actual * (double)i);
    }
    *n = count;
    return MP_OK;
}

/* Value of scipy's Gaussian kernel at offset d relative to its centre
 * value: zero beyond the truncation radius int(4 sigma + 0.5). */
static double kernel_rel(int64_t d, double sigma) {
    if (!(sigma > 1e-15)) return d == 0 ? 1 : 0; /* scipy skips the filter: the delta stays */
    int64_t radius = (int64_t)(4.0 * sigma + 0.5);
    if (d > radius || -d > radius) return 0;
    return exp(-0.5 * (double)(d * d) / (sigma * sigma));
}

int mp_infer_gaussian(float *map, const int patch_dhw[3], double sigma_scale) {
    for (int a = 0; a < 3; a++)
        if (patch_dhw[a] < 1 || patch_dhw[a] > MP_INFER_MAX_PATCH)
            return mp_error_set(MP_ERR_ARG, "gaussian: patch size %d out of range", patch_dhw[a]);
    if (!(sigma_scale >= 0) || !isfinite(sigma_scale))
        return mp_error_set(MP_ERR_ARG, "gaussian: sigma scale %g must be >= 0", sigma_scale);
    const int pd = patch_dhw[0], ph = patch_dhw[1], pw = patch_dhw[2];
    double *k[3];
    int total = pd + ph + pw;
    double *buf = mp_alloc((size_t)total * sizeof *buf);
    if (!buf) return mp_error_set(MP_ERR_NOMEM, "gaussian: out of memory");
    k[0] = buf;
    k[1] = buf + pd;
    k[2] = buf + pd + ph;
    for (int a = 0; a < 3; a++) {
        int p = patch_dhw[a];
        double sigma = sigma_scale * p;
        for (int i = 0; i < p; i++) k[a][i] = kernel_rel(i - p / 2, sigma);
    }
    float minnz = INFINITY;
    int64_t n = (int64_t)pd * ph * pw, i = 0;
    for (int z = 0; z < pd; z++)
        for (int y = 0; y < ph; y++)
            for (int x = 0; x < pw; x++, i++) {
                float v = (float)(k[0][z] * k[1][y] * k[2][x]);
                map[i] = v;
                if (v > 0 && v < minnz) minnz = v;
            }
    mp_free(buf);
    for (i = 0; i < n; i++)
        if (map[i] == 0) map[i] = minnz; /* the centre is 1, so minnz is finite */
    return MP_OK;
}
