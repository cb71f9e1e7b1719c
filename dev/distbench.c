/* Developer tool: what the bucketed gradient allreduce costs and what the
 * overlap with backward buys, for the default U-Net. Every rank times
 * (1) the allreduce alone, (2) a step with the reduction after backward
 * (no hook), (3) a step with the hook starting buckets during backward.
 * Usage: mpirun -np R build/distbench [PATCH [BATCH [STEPS [BUCKET_MIB]]]]
 * Build: sh dev/build.sh. Numbers are for docs/SCALING.md. */
#include "medpipe/core.h"
#include "medpipe/dist.h"
#include "medpipe/nn.h"

#include <stdio.h>
#include <stdlib.h>

static double max_over_ranks(double t) {
    double v[1] = {t};
    /* The slowest rank sets the pace; a sum of one-hot values gives the max. */
    int r = mp_dist_rank(), n = mp_dist_size();
    double *all = calloc((size_t)n, sizeof *all);
    all[r] = v[0];
    mp_dist_allreduce_f64_sum(all, n);
    double m = 0;
    for (int i = 0; i < n; i++) m = all[i] > m ? all[i] : m;
    free(all);
    return m;
}

int main(int argc, char **argv) {
    if (mp_dist_init(&argc, &argv)) {
        fprintf(stderr, "distbench: %s\n", mp_error_message());
        return 1;
    }
    int patch = argc > 1 ? atoi(argv[1]) : 32, batch = argc > 2 ? atoi(argv[2]) : 1;
    int steps = argc > 3 ? atoi(argv[3]) : 3;
    double mib = argc > 4 ? atof(argv[4]) : 25;
    mp_unet_config_t c;
    mp_unet_config_default(&c);
    c.batch = batch;
    c.patch[0] = c.patch[1] = c.patch[2] = patch;
    c.threads = mp_dist_threads_per_rank();
    mp_unet_t *m;
    if (mp_unet_create(&m, &c)) {
        fprintf(stderr, "distbench: %s\n", mp_error_message());
        return 1;
    }
    int64_t np = mp_unet_param_count(m), vox = (int64_t)batch * patch * patch * patch;
    float *img = malloc(sizeof(float) * (size_t)vox);
    uint8_t *lab = malloc((size_t)vox);
    mp_rng_t r;
    mp_rng_init(&r, 1, (uint64_t)mp_dist_rank());
    for (int64_t i = 0; i < vox; i++) img[i] = (float)mp_rng_normal(&r), lab[i] = img[i] > 0.5f;
    mp_dist_grad_t g;
    mp_dist_grad_init(&g, mp_unet_grads(m), np, (int64_t)(mib * 1048576));
    double best[3] = {1e30, 1e30, 1e30}, loss;
    for (int s = 0; s < steps; s++)
        for (int mode = 0; mode < 3; mode++) {
            mp_unet_set_grad_hook(m, mode == 2 ? mp_dist_grad_hook : NULL, &g);
            mp_dist_barrier();
            double t = mp_time_now();
            if (mode > 0 && mp_unet_forward_backward(m, &loss, img, lab, NULL)) return 1;
            if (mp_dist_grad_wait(&g)) return 1;
            t = max_over_ranks(mp_time_now() - t);
            if (t < best[mode]) best[mode] = t;
        }
    if (mp_dist_rank() == 0)
        printf("ranks %d, %d threads each, %lld params (%.1f MiB), %d buckets of %.1f MiB, patch %d^3 batch %d:\n"
               "  allreduce alone %.1f ms | step, reduce after backward %.1f ms | step, overlapped %.1f ms "
               "(%d buckets started during backward)\n",
               mp_dist_size(), c.threads, (long long)np, (double)np * 4 / 1048576, g.nbuckets, mib, patch, batch,
               best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, g.early);
    mp_dist_grad_deinit(&g);
    mp_unet_free(m);
    free(img), free(lab);
    mp_dist_finalize();
    return 0;
}
