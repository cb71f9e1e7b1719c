/* Benchmark of the synthetic CT generator at the default parameters
 * (128x128x64, 3 classes): layout only, one case in memory on one thread
 * (process CPU time, meaningful on a busy machine), cases in memory split
 * over the pool, and the whole default dataset (20 + 5 cases, .nii.gz,
 * dataset.json) written to a scratch folder as `medpipe synth` does.
 * Usage: bench_synth [threads] (default: all CPUs). */
#include "medpipe/medpipe.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
    const mp_synth_params_t *p;
    int failed;
} cases_ctx_t;

static void gen_range(void *cp, int64_t b, int64_t e, int w) {
    (void)w;
    cases_ctx_t *c = cp;
    for (int64_t i = b; i < e; i++) {
        mp_vol_t *img, *lab;
        if (mp_synth_case(&img, &lab, c->p, i, NULL)) c->failed = 1;
        mp_vol_free(img);
        mp_vol_free(lab);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : mp_cpu_count();
    mp_synth_params_t p;
    mp_synth_params_init(&p);
    const int n1 = 6;
    double c0 = cpu_now();
    for (int i = 0; i < n1; i++) {
        mp_synth_layout_t *L;
        if (mp_synth_layout_create(&L, &p, i)) return fprintf(stderr, "%s\n", mp_error_message()), 1;
        mp_synth_layout_free(L);
    }
    double layout = (cpu_now() - c0) / n1;
    c0 = cpu_now();
    for (int i = 0; i < n1; i++) {
        mp_vol_t *img, *lab;
        if (mp_synth_case(&img, &lab, &p, i, NULL)) return fprintf(stderr, "%s\n", mp_error_message()), 1;
        mp_vol_free(img);
        mp_vol_free(lab);
    }
    double one = (cpu_now() - c0) / n1;
    printf("synth %lldx%lldx%lld, %d classes: layout %.1f ms, one case %.0f ms CPU (1 thread)\n",
           (long long)p.size[0], (long long)p.size[1], (long long)p.size[2], p.classes, 1e3 * layout, 1e3 * one);

    mp_pool_t *pool = mp_pool_create(threads);
    int64_t total = p.train_cases + p.test_cases;
    cases_ctx_t ctx = {&p, 0};
    double t0 = mp_time_now();
    mp_pool_parallel_for(pool, total, gen_range, &ctx);
    double mem = mp_time_now() - t0;
    printf("  %lld cases in memory, %d threads: %.2f s (%.1f cases/s)\n", (long long)total, threads, mem,
           (double)total / mem);

    char dir[256];
    snprintf(dir, sizeof dir, "%s/medpipe-bench-synth-%ld", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp",
             (long)getpid());
    t0 = mp_time_now();
    c0 = cpu_now();
    int rc = mp_synth_dataset_write(dir, &p, pool, 0, NULL, NULL);
    double wall = mp_time_now() - t0, cpu = cpu_now() - c0;
    mp_pool_free(pool);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (rc) return fprintf(stderr, "%s\n", mp_error_message()), 1;
    printf("  default dataset (%lld + %lld cases, .nii.gz) written: %.2f s wall, %.2f s CPU, %d threads\n",
           (long long)p.train_cases, (long long)p.test_cases, wall, cpu, threads);
    return ctx.failed;
}
