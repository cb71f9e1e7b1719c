/* medpipe bench unet: times the default nnU-Net plain conv U-Net (training
 * step = forward + loss + backward + SGD, and forward alone), counts conv
 * FLOPs, reports peak memory, and runs bench/torch_unet.py on the same case
 * with each PyTorch given, printing them side by side. Every step is timed:
 * the mean and the median are reported, because on a shared VM a neighbour
 * can take a core for a second or two (the FMA peak of 2 threads drops from
 * 180 to 90-120 GFLOP/s in such windows), and the measured peak is the
 * highest of short samples taken at the end and between steps. The last
 * line is one JSON object. */
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
               "                          [--threads 2] [--torch PYTHON[,PYTHON...]|none] [--profile]\n"
               "Times nnU-Net's plain conv U-Net (fp32) and, with --torch (default: .cache/venv-torch/bin/python\n"
               "when present), the same network in each PyTorch (bench/torch_unet.py), in the same run. A PYTHON\n"
               "may be a wrapper script (bench/debian-torch runs Debian's python3-torch with OpenBLAS and\n"
               "tcmalloc). --profile: where the step's time goes, per op kind and per conv layer. Last line: JSON.\n");
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

/* One PyTorch peer's figures, from the JSON line bench/torch_unet.py prints. */
typedef struct {
    char impl[64];
    double step_ms, step_median_ms, rss_mb;
} peer_t;

static double json_num(const char *line, const char *key) {
    const char *k = strstr(line, key);
    return k ? atof(k + strlen(key)) : -1;
}

/* Runs one PyTorch peer; 0 when it printed its figures. */
static int run_torch(peer_t *p, const char *py, int64_t patch, int64_t batch, const char *features, int steps,
                     int threads) {
    char cmd[1024], line[4096], last[4096] = "";
    snprintf(cmd, sizeof cmd, "%s bench/torch_unet.py --patch %lld --batch %lld --features %s --steps %d --threads %d",
             py, (long long)patch, (long long)batch, features, steps, threads);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) snprintf(last, sizeof last, "%s", line);
    if (pclose(f) != 0 || !strstr(last, "\"train_step_ms\":")) return -1;
    printf("pytorch:  %s", last);
    const char *im = strstr(last, "\"impl\": \"");
    snprintf(p->impl, sizeof p->impl, "%s", im ? im + 9 : "pytorch");
    char *q = strchr(p->impl, '"');
    if (q) *q = 0;
    p->step_ms = json_num(last, "\"train_step_ms\":");
    p->step_median_ms = json_num(last, "\"train_step_ms_median\":");
    p->rss_mb = json_num(last, "\"peak_rss_mb\":");
    return p->step_ms > 0 ? 0 : -1;
}

/* Runs every peer of a comma-separated list ("none": no peer); returns how
 * many ran, up to max. */
static int run_peers(peer_t *peers, int max, const char *list, const mp_unet_config_t *c, const char *features,
                     int steps, double step_ms, double median_ms) {
    int n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list ? list : "none");
    for (char *save = NULL, *py = strtok_r(buf, ",", &save); py && n < max; py = strtok_r(NULL, ",", &save)) {
        if (!strcmp(py, "none")) continue;
        if (run_torch(&peers[n], py, c->patch[0], c->batch, features, steps, c->threads)) {
            fprintf(stderr, "medpipe bench: the PyTorch peer (%s) did not run\n", py);
            continue;
        }
        printf("ratio:    %s step / medpipe step = %.2f (mean), %.2f (median)\n", peers[n].impl,
               peers[n].step_ms / step_ms, peers[n].step_median_ms > 0 ? peers[n].step_median_ms / median_ms : -1.0);
        n++;
    }
    return n;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values (sorts them). */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The FMA peak of the team: the highest of 7 samples of 0.15 s and of the
 * samples taken between steps (a sample inside a neighbour's burst reads
 * low, and a low peak would flatter every share). */
static double fma_peak(int threads, const double *between, int n) {
    double best = 0;
    for (int i = 0; i < 7; i++) {
        double p = mp_nn_measure_fma_peak(threads, 0.15);
        best = p > best ? p : best;
    }
    for (int i = 0; i < n; i++) best = between[i] > best ? between[i] : best;
    return best;
}

/* Times `steps` training steps (forward, loss, backward, SGD) after one
 * warm-up step that first-touches every buffer; step_s gets each step's
 * seconds, t_opt the optimizer's share summed, peak_s an FMA peak sample
 * taken after each step (outside its time). */
static int time_steps(mp_unet_t *m, mp_opt_t *opt, float lr, const float *img, const uint8_t *lab, int steps,
                      int profile, int threads, double *step_s, double *peak_s, double *t_opt, double *loss) {
    int rc = mp_unet_forward_backward(m, loss, img, lab, NULL);
    if (!rc) mp_opt_step(opt, mp_unet_params(m), mp_unet_grads(m), lr);
    mp_unet_set_profiling(m, profile);
    *t_opt = 0;
    for (int s = 0; !rc && s < steps; s++) {
        double t0 = mp_time_now();
        rc = mp_unet_forward_backward(m, loss, img, lab, NULL);
        double t1 = mp_time_now();
        mp_opt_step(opt, mp_unet_params(m), mp_unet_grads(m), lr);
        double t2 = mp_time_now();
        *t_opt += t2 - t1;
        step_s[s] = t2 - t0;
        peak_s[s] = mp_nn_measure_fma_peak(threads, 0.1);
    }
    return rc;
}

typedef struct {
    double mean_s, median_s, min_s, fwd_s, t_opt, loss, rss_mb, peak;
    double gflops_train, gflops_fwd; /* conv GFLOP/s of the mean step, of the forward */
    peer_t peers[4];
    int npeers;
} bench_result_t;

static void report(const mp_unet_t *m, const mp_unet_config_t *c, const char *features, const bench_result_t *b) {
    double ft = mp_unet_flops_train(m) * 1e-9, ff = mp_unet_flops_forward(m) * 1e-9;
    printf("medpipe:  patch %lld^3 batch %lld features %s, %d threads, %s engine\n", (long long)c->patch[0],
           (long long)c->batch, features, c->threads, mp_unet_uses_ref(m) ? "reference" : "oneDNN");
    printf("medpipe:  train step %.0f ms mean, %.0f ms median, %.0f ms best (%.1f GFLOP: %.1f / %.1f GFLOP/s), "
           "loss %.4f\n", b->mean_s * 1e3, b->median_s * 1e3, b->min_s * 1e3, ft, ft / b->mean_s, ft / b->median_s,
           b->loss);
    printf("medpipe:  forward %.0f ms (median of 3, %.1f GFLOP/s), peak RSS %.0f MiB\n", b->fwd_s * 1e3,
           ff / b->fwd_s, b->rss_mb);
    if (b->peak > 0)
        printf("medpipe:  FMA peak of %d threads (highest sample): %.1f GFLOP/s; train step %.0f%% (mean) / "
               "%.0f%% (median), forward %.0f%% of it\n", c->threads, b->peak, 100 * ft / b->mean_s / b->peak,
               100 * ft / b->median_s / b->peak, 100 * ff / b->fwd_s / b->peak);
    fflush(stdout);
}

/* The last line: one JSON object (train_step_ms is the mean; the first
 * peer's mean is also torch_train_step_ms, -1 without one). */
static void report_json(const mp_unet_config_t *c, const bench_result_t *b) {
    printf("{\"train_step_ms\": %.1f, \"train_step_ms_median\": %.1f, \"train_step_ms_best\": %.1f, "
           "\"forward_ms\": %.1f, \"gflops_train\": %.1f, \"gflops_forward\": %.1f, \"peak_rss_mb\": %.0f, "
           "\"patch\": %lld, \"batch\": %lld, \"threads\": %d, \"fma_peak_gflops\": %.1f, "
           "\"torch_train_step_ms\": %.1f, \"torch_peers\": [",
           b->mean_s * 1e3, b->median_s * 1e3, b->min_s * 1e3, b->fwd_s * 1e3, b->gflops_train, b->gflops_fwd,
           b->rss_mb, (long long)c->patch[0], (long long)c->batch, c->threads, b->peak,
           b->npeers ? b->peers[0].step_ms : -1.0);
    for (int i = 0; i < b->npeers; i++)
        printf("%s{\"impl\": \"%s\", \"train_step_ms\": %.1f, \"train_step_ms_median\": %.1f, \"peak_rss_mb\": %.0f}",
               i ? ", " : "", b->peers[i].impl, b->peers[i].step_ms, b->peers[i].step_median_ms, b->peers[i].rss_mb);
    printf("]}\n");
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
    double *step_s = malloc((size_t)steps * 2 * sizeof *step_s), *peak_s = step_s + steps;
    mp_opt_t opt;
    mp_opt_config_t oc;
    mp_opt_config_sgd(&oc);
    if (!img || !lab || !step_s || mp_opt_init(&opt, &oc, mp_unet_param_count(m))) {
        free(img), free(lab), free(step_s), mp_unet_free(m);
        return mp_cli_fail("bench");
    }
    mp_rng_t r;
    mp_rng_init(&r, 1, 0);
    for (size_t i = 0; i < nv; i++) {
        lab[i] = mp_rng_uniform(&r) > 0.7;
        img[i] = (float)(lab[i] + 0.5 * mp_rng_normal(&r));
    }
    bench_result_t b = {.loss = 0};
    int rc = time_steps(m, &opt, oc.lr, img, lab, steps, profile, c.threads, step_s, peak_s, &b.t_opt, &b.loss);
    for (int s = 0; s < steps; s++) b.mean_s += step_s[s] / steps;
    b.median_s = median(step_s, steps), b.min_s = step_s[0]; /* median() sorted them */
    if (profile && !rc) print_profile(m, steps, b.mean_s, b.t_opt / steps);
    mp_unet_set_profiling(m, 0);
    double fwd_s[3];
    for (int i = 0; !rc && i < 3; i++) {
        double t0 = mp_time_now();
        rc = mp_unet_forward(m, NULL, img);
        fwd_s[i] = mp_time_now() - t0;
    }
    if (!rc) {
        b.fwd_s = median(fwd_s, 3), b.rss_mb = peak_rss_mb(), b.peak = fma_peak(c.threads, peak_s, steps);
        b.gflops_train = mp_unet_flops_train(m) / b.mean_s * 1e-9, b.gflops_fwd = mp_unet_flops_forward(m) / b.fwd_s * 1e-9;
    }
    if (!rc) {
        char auto_py[] = ".cache/venv-torch/bin/python";
        if (!torch && access(auto_py, X_OK) == 0) torch = auto_py;
        report(m, &c, features, &b);
        b.npeers = run_peers(b.peers, 4, torch, &c, features, steps, b.mean_s * 1e3, b.median_s * 1e3);
        report_json(&c, &b);
    }
    free(img), free(lab), free(step_s), mp_opt_deinit(&opt), mp_unet_free(m);
    return rc ? mp_cli_fail("bench") : MP_EXIT_OK;
}
