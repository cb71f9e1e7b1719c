/* Peak memory and time of sliding-window inference on a CT-sized volume
 * (512x512x300 float32) with a trivial mock network (logits linear in the
 * input), patch 96^3, step 0.5, batch 2, labels out (no probabilities),
 * for 2 and 20 classes. Each case runs in a forked child so its peak
 * resident set (ru_maxrss from wait4) is its own; it is compared with the
 * full-volume C x D x H x W float buffer a non-slab implementation needs
 * for the sums alone.
 * Usage: bench_infer [nx ny nz [threads [mirror_axes]]] */
#include "medpipe/core.h"
#include "medpipe/infer.h"
#include "medpipe/vol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATCH 96

typedef struct {
    int K;
    int64_t pv;
} lin_net_t;

/* logits_k = (k + 1) * 0.1 * x - 0.05 k: cheap, vectorizable. */
static int lin_forward(void *self, float *logits, const float *input, int batch) {
    const lin_net_t *n = self;
    for (int b = 0; b < batch; b++) {
        const float *in = input + (int64_t)b * n->pv;
        for (int k = 0; k < n->K; k++) {
            float *out = logits + ((int64_t)b * n->K + k) * n->pv;
            const float a = 0.1f * (float)(k + 1), c = -0.05f * (float)k;
            for (int64_t i = 0; i < n->pv; i++) out[i] = a * in[i] + c;
        }
    }
    return MP_OK;
}

static double cpu_seconds(const struct rusage *ru) {
    return (double)ru->ru_utime.tv_sec + 1e-6 * (double)ru->ru_utime.tv_usec + (double)ru->ru_stime.tv_sec +
           1e-6 * (double)ru->ru_stime.tv_usec;
}

/* The child: builds the input, runs, prints one line of figures. */
static int run_case(const int64_t dim[3], int K, int threads, unsigned mirror, int input_only) {
    int64_t d4[4] = {dim[0], dim[1], dim[2], 1};
    mp_vol_t *img = NULL;
    if (mp_vol_create(&img, d4, MP_DTYPE_F32)) {
        fprintf(stderr, "bench_infer: %s\n", mp_error_message());
        return 1;
    }
    float *x = img->data;
    int64_t n = mp_vol_voxels(img);
    for (int64_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u) % 1000) * 0.002f - 1.0f;
    if (input_only) {
        mp_vol_free(img);
        return 0;
    }
    lin_net_t ln = {K, (int64_t)PATCH * PATCH * PATCH};
    mp_infer_net_t net = {1, K, {PATCH, PATCH, PATCH}, 2, lin_forward, &ln};
    mp_infer_opts_t o;
    mp_infer_opts_init(&o);
    o.mirror_axes = mirror;
    mp_pool_t *pool = mp_pool_create(threads);
    mp_infer_result_t r;
    int rc = mp_infer_predict_grid(&r, img, &net, &o, NULL, MP_INFER_PROBS_NONE, pool);
    if (rc) {
        fprintf(stderr, "bench_infer: %s\n", mp_error_message());
        return 1;
    }
    int64_t fg = 0;
    const uint8_t *l = r.labels->data;
    for (int64_t i = 0; i < n; i++) fg += l[i] != 0;
    printf("    windows %lld (x%d mirrors), forward calls %lld, ring %d planes: accumulators %.0f MiB, batch buffers "
           "%.0f MiB; %.1f s (network %.1f s, rest %.1f s); %lld voxels not class 0\n",
           (long long)r.stats.windows, (int)(r.stats.entries / r.stats.windows), (long long)r.stats.forward_calls,
           r.stats.ring_planes, (double)r.stats.accum_bytes / 1048576.0, (double)r.stats.batch_bytes / 1048576.0,
           r.stats.t_total, r.stats.t_forward, r.stats.t_total - r.stats.t_forward, (long long)fg);
    fflush(stdout);
    mp_infer_result_deinit(&r);
    mp_pool_free(pool);
    mp_vol_free(img);
    return 0;
}

/* Runs a case in a child process; returns its peak RSS in bytes. */
static long long child_peak(const int64_t dim[3], int K, int threads, unsigned mirror, int input_only,
                            double *cpu) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) _exit(run_case(dim, K, threads, mirror, input_only));
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
    *cpu = cpu_seconds(&ru);
    return (long long)ru.ru_maxrss * 1024; /* kilobytes on Linux */
}

int main(int argc, char **argv) {
    int64_t dim[3] = {512, 512, 300};
    if (argc >= 4)
        for (int a = 0; a < 3; a++) dim[a] = atoll(argv[1 + a]);
    int threads = argc >= 5 ? atoi(argv[4]) : 2;
    unsigned mirror = argc >= 6 ? (unsigned)atoi(argv[5]) : 0;
    const double mib = 1048576.0;
    printf("sliding window %lldx%lldx%lld float32, patch %d^3, step 0.5, batch 2, %d threads, mirror axes %u; "
           "peak RSS of a child process per case\n",
           (long long)dim[0], (long long)dim[1], (long long)dim[2], PATCH, threads, mirror);
    double cpu;
    long long base = child_peak(dim, 1, threads, mirror, 1, &cpu);
    if (base < 0) return 1;
    printf("  input volume alone: peak RSS %.0f MiB\n", (double)base / mib);
    const int classes[2] = {2, 20};
    for (int c = 0; c < 2; c++) {
        int K = classes[c];
        printf("  %d classes:\n", K);
        long long peak = child_peak(dim, K, threads, mirror, 0, &cpu);
        if (peak < 0) {
            printf("  %d classes: failed\n", K);
            return 1;
        }
        double full = (double)K * (double)dim[0] * (double)dim[1] * (double)dim[2] * 4.0;
        printf("    peak RSS %.0f MiB (%.0f MiB above the input) vs the full-volume %dxDxHxW float buffer %.0f MiB "
               "(ratio %.2f); CPU %.1f s\n",
               (double)peak / mib, (double)(peak - base) / mib, K, full / mib, (double)peak / full, cpu);
    }
    return 0;
}
