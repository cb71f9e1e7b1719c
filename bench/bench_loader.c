/* Training loader throughput: 96^3 patches per second made by ONE worker
 * thread with nnU-Net's default augmentation, and without augmentation,
 * from a cache of synthetic 160x160x128 cases; then the cost of each
 * augmentation step alone (probability 1). The consumer only takes the
 * batches, so the figure is the worker's rate. Last line: JSON.
 * Usage: bench_loader [batches]   (default 12 batches of 2) */
#include "medpipe/medpipe.h"
#include "data/loader_internal.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static int make_cache(const char *root, mp_cache_t *cache) {
    char ds_dir[600], cache_dir[600];
    snprintf(ds_dir, sizeof ds_dir, "%s/ds", root);
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", root);
    mp_synth_params_t sp;
    mp_synth_params_init(&sp);
    sp.size[0] = sp.size[1] = 160;
    sp.size[2] = 128;
    sp.spacing[0] = sp.spacing[1] = 1.2;
    sp.spacing[2] = 1.5;
    sp.train_cases = 3;
    sp.test_cases = 0;
    mp_pool_t *pool = mp_pool_create(2);
    mp_dataset_t *ds = NULL;
    mp_fingerprint_t fp;
    mp_plan_t pl;
    int rc = mp_synth_dataset_write(ds_dir, &sp, pool, 1, NULL, NULL);
    if (!rc) rc = mp_dataset_read(&ds, ds_dir);
    if (!rc && !(rc = mp_fingerprint_compute(&fp, ds, 1, pool, NULL, NULL, NULL))) {
        rc = mp_plan_from_fingerprint(&pl, &fp, ds, 8);
        mp_fingerprint_deinit(&fp);
    }
    if (!rc) {
        for (int a = 0; a < 3; a++) pl.target_spacing[a] = sp.spacing[a];
        rc = mp_cache_build(cache_dir, ds, &pl, pool, NULL, NULL);
    }
    mp_dataset_free(ds);
    mp_pool_free(pool);
    return rc ? rc : mp_cache_open(cache, cache_dir);
}

/* Patches per second of one worker over n batches (after one warm-up batch). */
static double run(const mp_cache_t *cache, const int64_t *cases, int augment, const mp_aug_opts_t *aug, int n,
                  double *cpu_per_patch) {
    mp_loader_opts_t o;
    mp_loader_opts_init(&o);
    o.cache = cache;
    o.cases = cases;
    o.n_cases = cache->n_cases;
    o.patch_dhw[0] = o.patch_dhw[1] = o.patch_dhw[2] = 96;
    o.augment = augment;
    if (aug) o.aug = *aug;
    o.workers = 1;
    o.queue_depth = 2;
    mp_loader_t *l = NULL;
    if (mp_loader_create(&l, &o)) return -1;
    const mp_batch_t *b;
    int rc = mp_loader_next(l, &b, NULL);
    double t0 = mp_time_now(), c0 = cpu_now();
    for (int k = 0; k < n && !rc; k++) rc = mp_loader_next(l, &b, NULL);
    double t = mp_time_now() - t0, c = cpu_now() - c0;
    mp_loader_free(l);
    if (rc) return -1;
    *cpu_per_patch = c / (2.0 * n);
    return 2.0 * n / t;
}

/* One training step of the default U-Net (96^3, batch 2, 2 threads) on a
 * real augmented batch, timed after a warm-up step: what the loader must keep
 * up with. Returns seconds, or -1. */
static double unet_step_seconds(const mp_cache_t *cache, const int64_t *cases) {
    mp_loader_opts_t lo;
    mp_loader_opts_init(&lo);
    lo.cache = cache;
    lo.cases = cases;
    lo.n_cases = cache->n_cases < 16 ? cache->n_cases : 16;
    lo.patch_dhw[0] = lo.patch_dhw[1] = lo.patch_dhw[2] = 96;
    mp_unet_config_t cfg;
    mp_unet_config_default(&cfg);
    cfg.num_classes = cache->plan.num_classes;
    cfg.patch[0] = cfg.patch[1] = cfg.patch[2] = 96;
    cfg.threads = 2;
    mp_loader_t *l = NULL;
    mp_unet_t *u = NULL;
    const mp_batch_t *b = NULL;
    double loss, t = -1;
    if (mp_loader_create(&l, &lo) || mp_loader_next(l, &b, NULL) || mp_unet_create(&u, &cfg)) goto done;
    mp_unet_init_weights(u, 1);
    if (mp_unet_forward_backward(u, &loss, b->img, b->seg, NULL)) goto done;
    double t0 = mp_time_now();
    if (mp_unet_forward_backward(u, &loss, b->img, b->seg, NULL)) goto done;
    t = mp_time_now() - t0;
done:
    mp_unet_free(u);
    mp_loader_free(l);
    return t;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 12;
    if (n < 1) n = 1;
    char root[256];
    snprintf(root, sizeof root, "%s/medpipe-bench-loader-%ld", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (long)getpid());
    mp_cache_t cache;
    double t0 = mp_time_now();
    if (make_cache(root, &cache)) {
        fprintf(stderr, "bench_loader: %s\n", mp_error_message());
        nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    printf("cache of %lld cases 160x160x128 built in %.1f s\n", (long long)cache.n_cases, mp_time_now() - t0);
    int64_t cases[16];
    for (int64_t i = 0; i < cache.n_cases && i < 16; i++) cases[i] = i;

    mp_aug_opts_t def;
    mp_aug_opts_init(&def);
    double cpu_aug, cpu_plain;
    double aug = run(&cache, cases, 1, &def, n, &cpu_aug);
    double plain = run(&cache, cases, 0, NULL, n, &cpu_plain);
    printf("96^3 patches, 1 worker, batch 2: nnU-Net default augmentation %.1f patches/s (%.1f ms CPU each), "
           "none %.1f patches/s (%.1f ms CPU each)\n", aug, 1e3 * cpu_aug, plain, 1e3 * cpu_plain);

    /* each step alone, probability 1 (per-channel steps then 0.5 per channel) */
    static const char *names[] = {"rotation+scale", "elastic", "noise", "blur", "contrast", "lowres", "gamma"};
    double step_ms[7];
    printf("one step at probability 1 (mirroring off), ms CPU per patch:\n");
    for (int s = 0; s < 7; s++) {
        mp_aug_opts_t a;
        mp_aug_opts_none(&a);
        switch (s) {
        case 0: a.p_rotation = a.p_scale = 1; break;
        case 1: a.p_elastic = 1; break;
        case 2: a.p_noise = 1; break;
        case 3: a.p_blur = 1; break;
        case 4: a.p_contrast = 1; break;
        case 5: a.p_lowres = 1; break;
        default: a.p_gamma = 1; break;
        }
        double cpu;
        int m = n / 2 > 2 ? n / 2 : 2;
        if (run(&cache, cases, 1, &a, m, &cpu) < 0) {
            fprintf(stderr, "bench_loader: %s\n", mp_error_message());
            return 1;
        }
        step_ms[s] = 1e3 * (cpu - cpu_plain);
        printf("  %-16s %7.1f (incl. the crop: %.1f)\n", names[s], step_ms[s], 1e3 * cpu);
    }
    double step_s = unet_step_seconds(&cache, cases);
    if (step_s > 0)
        printf("default U-Net training step (96^3, batch 2, 2 threads, forward + backward): %.2f s = %.2f "
               "patches/s consumed; one loader worker makes %.0fx that\n", step_s, 2 / step_s, aug * step_s / 2);
    mp_cache_close(&cache);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (aug < 0 || plain < 0 || step_s <= 0) {
        fprintf(stderr, "bench_loader: %s\n", mp_error_message());
        return 1;
    }
    printf("{\"bench\": \"loader\", \"patch\": 96, \"workers\": 1, \"aug_patches_per_s\": %.2f, "
           "\"noaug_patches_per_s\": %.2f, \"aug_cpu_ms_per_patch\": %.1f, \"spatial_ms\": %.1f, "
           "\"elastic_ms\": %.1f, \"noise_ms\": %.1f, \"blur_ms\": %.1f, \"lowres_ms\": %.1f, \"gamma_ms\": %.1f, "
           "\"unet96_step_s\": %.2f, \"loader_over_step\": %.1f}\n",
           aug, plain, 1e3 * cpu_aug, step_ms[0], step_ms[1], step_ms[2], step_ms[3], step_ms[5], step_ms[6], step_s,
           aug * step_s / 2);
    return 0;
}
