/* Experiment (nothing links this): how fast does a small U-Net reach a given
 * Dice on a preprocessing cache? Random patches with foreground forcing and
 * mirroring only; validation by sliding window on the last cases.
 * usage: probe_train CACHE STEPS BASE STAGES PD PH PW OPT(sgd|adamw) LR VAL_EVERY */
#include "medpipe/medpipe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void crop(float *img, uint8_t *seg, const mp_cache_case_t *cc, const int64_t lo[3], const int p[3], int flip) {
    int64_t nx = cc->dim[0], ny = cc->dim[1], nz = cc->dim[2];
    for (int z = 0; z < p[0]; z++)
        for (int y = 0; y < p[1]; y++)
            for (int x = 0; x < p[2]; x++) {
                int64_t sz = lo[2] + z, sy = lo[1] + y, sx = lo[0] + ((flip & 1) ? p[2] - 1 - x : x);
                if (flip & 2) sy = lo[1] + p[1] - 1 - y;
                size_t o = ((size_t)z * p[1] + y) * p[2] + x;
                if (sx < 0 || sy < 0 || sz < 0 || sx >= nx || sy >= ny || sz >= nz) { img[o] = 0; seg[o] = 0; continue; }
                size_t i = ((size_t)sz * ny + sy) * nx + sx;
                img[o] = cc->img[i];
                seg[o] = cc->seg[i];
            }
}

int main(int argc, char **argv) {
    if (argc < 11) return 2;
    mp_cache_t cache;
    if (mp_cache_open(&cache, argv[1])) { fprintf(stderr, "%s\n", mp_error_message()); return 1; }
    int steps = atoi(argv[2]), base = atoi(argv[3]), stages = atoi(argv[4]);
    int p[3] = {atoi(argv[5]), atoi(argv[6]), atoi(argv[7])};
    int adam = !strcmp(argv[8], "adamw");
    double lr = atof(argv[9]);
    int val_every = atoi(argv[10]);
    int64_t n = cache.n_cases, nval = 4, ntr = n - nval;
    mp_cache_case_t *cc = calloc((size_t)n, sizeof *cc);
    for (int64_t i = 0; i < n; i++) if (mp_cache_case_map(&cache, i, &cc[i])) { fprintf(stderr, "%s\n", mp_error_message()); return 1; }
    mp_model_spec_t spec;
    mp_plan_t plan = cache.plan;
    plan.n_stages = stages;
    for (int s = 0; s < stages; s++) plan.features[s] = base << s > 320 ? 320 : base << s;
    for (int a = 0; a < 3; a++) plan.patch_dhw[a] = p[a];
    if (mp_model_spec_from_plan(&spec, &plan)) { fprintf(stderr, "%s\n", mp_error_message()); return 1; }
    spec.unet.threads = 2;
    mp_unet_t *u;
    if (mp_unet_create(&u, &spec.unet)) { fprintf(stderr, "%s\n", mp_error_message()); return 1; }
    mp_unet_init_weights(u, 1);
    mp_opt_config_t oc;
    if (adam) mp_opt_config_adamw(&oc); else mp_opt_config_sgd(&oc);
    oc.lr = lr;
    mp_opt_t opt;
    mp_opt_init(&opt, &oc, mp_unet_param_count(u));
    size_t vox = (size_t)p[0] * p[1] * p[2];
    float *img = malloc(2 * vox * sizeof(float));
    uint8_t *seg = malloc(2 * vox);
    mp_rng_t rng;
    mp_rng_init(&rng, 7, 0);
    mp_unet_net_t ad;
    mp_infer_net_t net;
    mp_unet_net_init(&ad, u, &net);
    int K = cache.plan.num_classes;
    double t0 = mp_time_now(), lsum = 0;
    for (int st = 1; st <= steps; st++) {
        for (int b = 0; b < 2; b++) {
            const mp_cache_case_t *c = &cc[mp_rng_below(&rng, (uint64_t)ntr)];
            int64_t lo[3];
            if (b == 1 && c->n_fg > 0) {
                const mp_cache_fg_t *f = &c->fg[mp_rng_below(&rng, (uint64_t)c->n_fg)];
                const int32_t *v = f->count ? f->xyz + 3 * mp_rng_below(&rng, (uint64_t)f->count) : NULL;
                for (int a = 0; a < 3; a++) {
                    int pa = p[2 - a];
                    lo[a] = v ? v[a] - (int64_t)mp_rng_below(&rng, (uint64_t)pa) : 0;
                }
            } else {
                for (int a = 0; a < 3; a++) {
                    int64_t span = c->dim[a] - p[2 - a];
                    lo[a] = span > 0 ? (int64_t)mp_rng_below(&rng, (uint64_t)span + 1) : span / 2;
                }
            }
            crop(img + b * vox, seg + b * vox, c, lo, p, (int)mp_rng_below(&rng, 4));
        }
        double loss;
        if (mp_unet_forward_backward(u, &loss, img, seg, NULL)) { fprintf(stderr, "%s\n", mp_error_message()); return 1; }
        mp_opt_step(&opt, mp_unet_params(u), mp_unet_grads(u), mp_lr_poly(lr, st - 1, steps, 0.9));
        lsum += loss;
        if (st % 20 == 0) { printf("step %d loss %.4f  %.2f s/step\n", st, lsum / 20, (mp_time_now() - t0) / st); lsum = 0; fflush(stdout); }
        if (st % val_every == 0 || st == steps) {
            double inter[16] = {0}, sum[16] = {0}, dsum = 0;
            for (int64_t i = ntr; i < n; i++) {
                mp_vol_t *v = NULL;
                int64_t dims[4] = {cc[i].dim[0], cc[i].dim[1], cc[i].dim[2], 1};
                mp_vol_create(&v, dims, MP_DTYPE_F32);
                memcpy(v->data, cc[i].img, (size_t)(dims[0] * dims[1] * dims[2]) * 4);
                mp_infer_result_t r;
                memset(&r, 0, sizeof r);
                if (mp_infer_predict_grid(&r, v, &net, NULL, NULL, MP_INFER_PROBS_NONE, NULL)) { fprintf(stderr, "%s\n", mp_error_message()); return 1; }
                const uint8_t *lab = r.labels->data;
                for (int64_t k = 0; k < dims[0] * dims[1] * dims[2]; k++) {
                    int a = lab[k], b = cc[i].seg[k];
                    if (a == b) inter[a]++;
                    sum[a]++; sum[b]++;
                }
                mp_infer_result_deinit(&r);
                mp_vol_free(v);
            }
            printf("step %d val dice:", st);
            for (int k = 1; k < K; k++) { printf(" %.4f", 2 * inter[k] / sum[k]); dsum += 2 * inter[k] / sum[k]; }
            printf("  mean %.4f  (%.0f s)\n", dsum / (K - 1), mp_time_now() - t0);
            fflush(stdout);
        }
    }
    return 0;
}
