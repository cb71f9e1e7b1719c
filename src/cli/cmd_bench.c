/* medpipe bench unet: times the default nnU-Net plain conv U-Net (training
 * step = forward + loss + backward + SGD, and forward alone), counts conv
 * FLOPs, reports peak memory, and runs bench/torch_unet.py on the same case
 * when a PyTorch is available, printing both side by side. The last line is
 * one JSON object. */
#include "cli/cli.h"
#include "medpipe/medpipe.h"
#include "medpipe/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: medpipe bench table [--quick] (see 'medpipe bench table --help')\n"
               "       medpipe bench unet [--patch 64] [--batch 2] [--features 32,64,128,256,320] [--steps 3]\n"
               "                          [--threads 2] [--torch PYTHON|none] [--profile]\n"
               "Times nnU-Net's plain conv U-Net (fp32) and, with --torch (default: .cache/venv-torch/bin/python\n"
               "when present), the same network in PyTorch (bench/torch_unet.py). --profile: where the step's time\n"
               "goes, per op kind and per conv layer. Last line: JSON.\n");
}

/* The --profile tables: per op kind, then per conv layer (per step). */
static void print_profile(const mp_unet_t *m, int steps, double step_s, double opt_s) {
    mp_unet_prof_entry_t p[MP_UNET_PROF_COUNT];
    mp_unet_profile(m, p);
    double sum = 0;
    printf("profile:  per training step (%d steps)\n  %-24s %9s %6s %9s\n", steps, "op", "ms", "share", "GFLOP/s");
    for (int k = 0; k < MP_UNET_PROF_COUNT; k++) {
        double s = p[k].seconds / steps;
        sum += s;
        if (p[k].flops > 0)
            printf("  %-24s %9.1f %5.1f%% %9.1f\n", mp_unet_prof_name(k), s * 1e3, 100 * s / step_s,
                   p[k].flops / p[k].seconds * 1e-9);
        else
            printf("  %-24s %9.1f %5.1f%%\n", mp_unet_prof_name(k), s * 1e3, 100 * s / step_s);
    }
    printf("  %-24s %9.1f %5.1f%%\n", "optimizer", opt_s * 1e3, 100 * opt_s / step_s);
    printf("  %-24s %9.1f %5.1f%%\n", "other", (step_s - sum - opt_s) * 1e3, 100 * (step_s - sum - opt_s) / step_s);
    printf("  %-34s %8s %8s %8s   GFLOP/s fwd / bwd data / bwd weights\n", "layer", "fwd ms", "bwd-d ms", "bwd-w ms");
    char desc[96];
    double sec[3], fl;
    for (int i = 0; !mp_unet_profile_conv(m, i, desc, sizeof desc, sec, &fl); i++) {
        for (int j = 0; j < 3; j++) sec[j] /= steps;
        double rate[3];
        for (int j = 0; j < 3; j++) rate[j] = sec[j] > 0 ? fl / sec[j] * 1e-9 : 0; /* 0: not run or not timed */
        printf("  %-34s %8.1f %8.1f %8.1f   %6.1f / %6.1f / %6.1f\n", desc, sec[0] * 1e3, sec[1] * 1e3, sec[2] * 1e3,
               rate[0], rate[1], rate[2]);
    }
    mp_error_clear();
}

static int parse_features(const char *s, mp_unet_config_t *c) {
    int n = 0;
    const char *p = s;
    while (*p && n < MP_UNET_MAX_STAGES) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 1 || v > 4096) return -1;
        c->features[n++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    if (n < 1 || *p) return -1;
    c->n_stages = n;
    return 0;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* Runs the PyTorch peer; returns its train_step_ms (or -1). */
static double run_torch(const char *py, int64_t patch, int64_t batch, const char *features, int steps, int threads) {
    char cmd[1024], line[4096], last[4096] = "";
    snprintf(cmd, sizeof cmd, "%s bench/torch_unet.py --patch %lld --batch %lld --features %s --steps %d --threads %d",
             py, (long long)patch, (long long)batch, features, steps, threads);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line);
    if (pclose(f) != 0) return -1;
    const char *k = strstr(last, "\"train_step_ms\":");
    if (!k) return -1;
    printf("pytorch:  %s", last);
    return atof(k + strlen("\"train_step_ms\":"));
}

int mp_cli_bench(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? MP_EXIT_USAGE : MP_EXIT_OK;
    }
    if (strcmp(argv[1], "table") == 0) return mp_cli_bench_table(argc, argv);
    if (strcmp(argv[1], "unet") != 0)
        return mp_cli_usage_error("bench", "unknown benchmark '%s' (try 'unet' or 'table')", argv[1]);
    mp_unet_config_t c;
    mp_unet_config_default(&c);
    c.threads = 2;
    int64_t v;
    int steps = 3, profile = 0;
    const char *features = "32,64,128,256,320", *torch = NULL;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) return usage(stdout), MP_EXIT_OK;
        if (!strcmp(a, "--profile")) {
            profile = 1;
            continue;
        }
        if (!val) return mp_cli_usage_error("bench", "%s needs a value", a);
        i++;
        if (!strcmp(a, "--patch") && !mp_cli_parse_int(val, &v) && v >= 8 && v <= 512)
            c.patch[0] = c.patch[1] = c.patch[2] = v;
        else if (!strcmp(a, "--batch") && !mp_cli_parse_int(val, &v) && v >= 1 && v <= 1024) c.batch = v;
        else if (!strcmp(a, "--steps") && !mp_cli_parse_int(val, &v) && v >= 1 && v <= 10000) steps = (int)v;
        else if (!strcmp(a, "--threads") && !mp_cli_parse_int(val, &v) && v >= 1 && v <= 1024) c.threads = (int)v;
        else if (!strcmp(a, "--features") && !parse_features(val, &c)) features = val;
        else if (!strcmp(a, "--torch")) torch = val;
        else return mp_cli_usage_error("bench", "bad option or value: %s %s", a, val);
    }
    mp_unet_t *m;
    if (mp_unet_create(&m, &c)) return mp_cli_fail("bench");
    size_t nv = (size_t)(c.batch * c.patch[0] * c.patch[1] * c.patch[2]);
    float *img = malloc(nv * sizeof *img);
    uint8_t *lab = malloc(nv);
    mp_opt_t opt;
    mp_opt_config_t oc;
    mp_opt_config_sgd(&oc);
    if (!img || !lab || mp_opt_init(&opt, &oc, mp_unet_param_count(m))) {
        free(img), free(lab), mp_unet_free(m);
        return mp_cli_fail("bench");
    }
    mp_rng_t r;
    mp_rng_init(&r, 1, 0);
    for (size_t i = 0; i < nv; i++) {
        lab[i] = mp_rng_uniform(&r) > 0.7;
        img[i] = (float)(lab[i] + 0.5 * mp_rng_normal(&r));
    }
    double loss = 0, t0;
    int rc = mp_unet_forward_backward(m, &loss, img, lab, NULL); /* warm-up: first-touch of every buffer */
    mp_opt_step(&opt, mp_unet_params(m), mp_unet_grads(m), oc.lr);
    mp_unet_set_profiling(m, profile);
    double t_opt = 0;
    t0 = mp_time_now();
    for (int s = 0; !rc && s < steps; s++) {
        rc = mp_unet_forward_backward(m, &loss, img, lab, NULL);
        double t1 = mp_time_now();
        mp_opt_step(&opt, mp_unet_params(m), mp_unet_grads(m), oc.lr);
        t_opt += mp_time_now() - t1;
    }
    double ts = (mp_time_now() - t0) / steps;
    if (profile && !rc) print_profile(m, steps, ts, t_opt / steps);
    mp_unet_set_profiling(m, 0);
    t0 = mp_time_now();
    if (!rc) rc = mp_unet_forward(m, NULL, img);
    double tf = mp_time_now() - t0, rss = peak_rss_mb();
    double peak = mp_nn_measure_fma_peak(c.threads, 1.0);
    double gt = mp_unet_flops_train(m) / ts * 1e-9, gf = mp_unet_flops_forward(m) / tf * 1e-9;
    if (rc) {
        free(img), free(lab), mp_opt_deinit(&opt), mp_unet_free(m);
        return mp_cli_fail("bench");
    }
    printf("medpipe:  patch %lld^3 batch %lld features %s, %d threads, %s engine\n", (long long)c.patch[0],
           (long long)c.batch, features, c.threads, mp_unet_uses_ref(m) ? "reference" : "oneDNN");
    printf("medpipe:  train step %.0f ms (%.1f GFLOP, %.1f GFLOP/s), forward %.0f ms (%.1f GFLOP/s), peak RSS %.0f MiB, "
           "loss %.4f\n", ts * 1e3, mp_unet_flops_train(m) * 1e-9, gt, tf * 1e3, gf, rss, loss);
    if (peak > 0)
        printf("medpipe:  FMA peak of %d threads measured now: %.1f GFLOP/s; train step %.0f%%, forward %.0f%% of it\n",
               c.threads, peak, 100 * gt / peak, 100 * gf / peak);
    fflush(stdout);
    char auto_py[] = ".cache/venv-torch/bin/python";
    if (!torch && access(auto_py, X_OK) == 0) torch = auto_py;
    double tt = -1;
    if (torch && strcmp(torch, "none") != 0) {
        tt = run_torch(torch, c.patch[0], c.batch, features, steps, c.threads);
        if (tt > 0) printf("ratio:    PyTorch step / medpipe step = %.2f\n", tt / (ts * 1e3));
        else fprintf(stderr, "medpipe bench: the PyTorch peer (%s) did not run\n", torch);
    }
    printf("{\"train_step_ms\": %.1f, \"forward_ms\": %.1f, \"gflops_train\": %.1f, \"gflops_forward\": %.1f, "
           "\"peak_rss_mb\": %.0f, \"patch\": %lld, \"batch\": %lld, \"threads\": %d, \"torch_train_step_ms\": %.1f, "
           "\"fma_peak_gflops\": %.1f}\n",
           ts * 1e3, tf * 1e3, gt, gf, rss, (long long)c.patch[0], (long long)c.batch, c.threads, tt, peak);
    free(img), free(lab), mp_opt_deinit(&opt), mp_unet_free(m);
    return MP_EXIT_OK;
}
