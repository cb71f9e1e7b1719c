/* Times the instance-norm + LeakyReLU kernels on a channels-last 2x32x64^3
 * map: forward, recompute (apply), backward out of place and in place. */
#include "cpu/cpu.h"

#include <stdio.h>
#include <string.h>

int main(void) {
    mp_shape5_t s = {2, 32, 64, 64, 64};
    dnnl_memory_desc_t md;
    mp_cpu_layout_t l;
    if (mp_cpu_md_blocked(&md, s, 0) || mp_cpu_layout_from_md(&l, &md)) return 1;
    size_t n = (size_t)mp_shape5_elems(s);
    float *x = mp_alloc(n * 4), *y = mp_alloc(n * 4), *dy = mp_alloc(n * 4), *dx = mp_alloc(n * 4);
    float ga[32], be[32], mean[64], rstd[64], dg[32], db[32], work[128];
    mp_rng_t r;
    mp_rng_init(&r, 1, 0);
    for (size_t i = 0; i < n; i++) x[i] = (float)mp_rng_normal(&r), dy[i] = (float)mp_rng_normal(&r);
    for (int c = 0; c < 32; c++) ga[c] = 1.0f + 0.01f * (float)c, be[c] = 0.01f * (float)c;
    mp_pool_t *pool = mp_pool_create(2);
    mp_cpu_set_threads(2);
    double best[4] = {1e9, 1e9, 1e9, 1e9};
    for (int rep = 0; rep < 5; rep++) {
        double t0 = mp_time_now();
        mp_cpu_inorm_forward(pool, y, mean, rstd, x, ga, be, &l, 1e-5, 1, 0.01);
        double t1 = mp_time_now();
        mp_cpu_inorm_apply(pool, y, x, mean, rstd, ga, be, &l, 1, 0.01);
        double t2 = mp_time_now();
        mp_cpu_inorm_backward(pool, dx, dg, db, dy, x, mean, rstd, ga, be, &l, 1, 0.01, work);
        double t3 = mp_time_now();
        memcpy(dx, dy, n * 4);
        double t4 = mp_time_now();
        mp_cpu_inorm_backward(pool, dx, dg, db, dx, x, mean, rstd, ga, be, &l, 1, 0.01, work);
        double t5 = mp_time_now();
        double t[4] = {t1 - t0, t2 - t1, t3 - t2, t5 - t4};
        for (int k = 0; k < 4; k++) best[k] = t[k] < best[k] ? t[k] : best[k];
    }
    printf("forward %.1f ms, apply %.1f ms, backward %.1f ms, backward in place %.1f ms\n", best[0] * 1e3,
           best[1] * 1e3, best[2] * 1e3, best[3] * 1e3);
    mp_pool_free(pool);
    return 0;
}
