/* Training samples: which case, where the patch lies (nnU-Net v2's
 * foreground oversampling), and the straight crop with zero padding. Every
 * draw of a sample comes from one Philox stream keyed by (seed, epoch, step,
 * global sample index), so a sample is a pure function of those numbers. */
#include "data/loader_internal.h"

#include <string.h>

/* Range of patch starts along one axis. A case at least as large as the
 * patch: the unaugmented patch lies inside it (nnU-Net's bounding box with
 * its enlarged patch reduces to exactly this). A smaller case: one start,
 * the patch centred on the case and hanging over both borders. */
static void start_range(int64_t size, int p, int64_t *lo, int64_t *hi) {
    if (size >= p) {
        *lo = 0;
        *hi = size - p;
    } else {
        int64_t over = (int64_t)p - size; /* floor(-over / 2) */
        *lo = *hi = -((over + 1) / 2);
    }
}

void mp_ld_pick_location(mp_rng_t *r, const mp_cache_case_t *cc, const int p[3], int forced, int64_t lo[3],
                         int64_t fg_voxel[3]) {
    int64_t rlo[3], rhi[3];
    for (int a = 0; a < 3; a++) {
        start_range(cc->dim[a], p[a], &rlo[a], &rhi[a]);
        fg_voxel[a] = -1;
    }
    int present[256], n_present = 0;
    if (forced)
        for (int f = 0; f < cc->n_fg; f++)
            if (cc->fg[f].count > 0) present[n_present++] = f;
    if (n_present > 0) {
        /* A class among those present, one of its stored voxels, the patch
         * centred on it and shifted back inside the allowed range. */
        const mp_cache_fg_t *f = &cc->fg[present[mp_rng_below(r, (uint64_t)n_present)]];
        const int32_t *v = f->xyz + 3 * (int64_t)mp_rng_below(r, (uint64_t)f->count);
        for (int a = 0; a < 3; a++) {
            int64_t s = (int64_t)v[a] - p[a] / 2;
            lo[a] = s < rlo[a] ? rlo[a] : s > rhi[a] ? rhi[a] : s;
            fg_voxel[a] = v[a];
        }
        return;
    }
    /* Not forced, or a case without foreground: uniform. */
    for (int a = 0; a < 3; a++) lo[a] = rlo[a] + (int64_t)mp_rng_below(r, (uint64_t)(rhi[a] - rlo[a] + 1));
}

void mp_ld_crop(const mp_ld_src_t *s, const int64_t lo[3], const int p[3], float *img, uint8_t *seg) {
    const int64_t nx = s->dim[0], ny = s->dim[1], nz = s->dim[2];
    const int64_t pv = (int64_t)p[0] * p[1] * p[2], cs = nx * ny * nz;
    /* The x overlap is the same for every row. */
    int64_t x0 = lo[0] < 0 ? 0 : lo[0], x1 = lo[0] + p[0] > nx ? nx : lo[0] + p[0];
    int64_t nin = x1 > x0 ? x1 - x0 : 0, pre = nin ? x0 - lo[0] : p[0];
    for (int64_t d = 0; d < p[2]; d++)
        for (int64_t h = 0; h < p[1]; h++) {
            int64_t z = lo[2] + d, y = lo[1] + h, o = (d * p[1] + h) * p[0];
            int inside = nin > 0 && z >= 0 && z < nz && y >= 0 && y < ny;
            for (int c = 0; c <= s->channels; c++) {
                /* c == channels: the label row */
                size_t es = c < s->channels ? sizeof(float) : 1;
                uint8_t *dst = c < s->channels ? (uint8_t *)(img + c * pv + o) : seg + o;
                if (!inside) {
                    memset(dst, 0, es * (size_t)p[0]);
                    continue;
                }
                int64_t si = (z * ny + y) * nx + x0;
                const uint8_t *src = c < s->channels ? (const uint8_t *)(s->img + c * cs + si) : s->seg + si;
                memset(dst, 0, es * (size_t)pre);
                memcpy(dst + es * (size_t)pre, src, es * (size_t)nin);
                memset(dst + es * (size_t)(pre + nin), 0, es * (size_t)(p[0] - pre - nin));
            }
        }
}

int mp_ld_make_sample(const mp_ld_conf_t *cf, mp_ld_scratch_t *sc, float *img, uint8_t *seg, int64_t epoch,
                      int64_t step, int64_t g, int64_t *case_index) {
    if (cf->n_cases <= 0) return mp_error_set(MP_ERR_ARG, "loader: no training cases");
    mp_rng_t r;
    mp_rng_init(&r, cf->seed, mp_rng_stream_id((uint64_t)epoch, (uint64_t)step, (uint64_t)g));
    int64_t k = (int64_t)mp_rng_below(&r, (uint64_t)cf->n_cases);
    const mp_cache_case_t *cc = &cf->cases[k];
    int64_t lo[3], fgv[3];
    mp_ld_pick_location(&r, cc, cf->p, g >= cf->fg_first, lo, fgv);
    mp_ld_src_t src = {cc->img, cc->seg, {cc->dim[0], cc->dim[1], cc->dim[2]}, (int)cc->dim[3]};
    if (src.channels != cf->channels)
        return mp_error_set(MP_ERR_MISMATCH, "loader: case %s has %d channels, the loader %d", cc->id, src.channels,
                            cf->channels);
    if (cf->augment) mp_ld_augment(&cf->aug, &r, &src, lo, sc, img, seg);
    else mp_ld_crop(&src, lo, cf->p, img, seg);
    if (case_index) *case_index = cf->case_index[k];
    return MP_OK;
}
