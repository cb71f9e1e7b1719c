/* Developer tool: times one oneDNN 3D convolution (forward, backward-data,
 * backward-weights) in a chosen activation layout, to find the ceiling a
 * U-Net layer can reach on this CPU. Usage:
 *   build/convbench N C_in C_out SIZE STRIDE LAYOUT [REPS [DST_LAYOUT [SKIP_BWD_W]]]
 * LAYOUT: ndhwc, ncdhw, 8c (nCdhw8c), 16c, any. SKIP_BWD_W: 1 skips oneDNN's
 * own backward-weights, 2 also its backward-data (only the medpipe layer's). Prints impl name, ms and
 * GFLOP/s of each pass; then the same conv as a medpipe layer
 * (mp_cpu_conv_*, src/cpu) in that layout. Build: sh dev/build.sh. */
#include "cpu/cpu.h"
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK(x) do { dnnl_status_t s_ = (x); if (s_) { fprintf(stderr, "%s: %d\n", #x, (int)s_); exit(1); } } while (0)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static dnnl_format_tag_t tag_of(const char *s) {
    if (!strcmp(s, "ndhwc")) return dnnl_ndhwc;
    if (!strcmp(s, "ncdhw")) return dnnl_ncdhw;
    if (!strcmp(s, "8c")) return dnnl_nCdhw8c;
    if (!strcmp(s, "16c")) return dnnl_nCdhw16c;
    return dnnl_format_tag_any;
}

static double run(dnnl_engine_t e, dnnl_stream_t st, dnnl_primitive_desc_t pd, int reps, const int *argk, int nargs) {
    dnnl_primitive_t p;
    dnnl_exec_arg_t a[8];
    const char *impl;
    CK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    CK(dnnl_primitive_create(&p, pd));
    for (int i = 0; i < nargs; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, argk[i]);
        a[i].arg = argk[i];
        CK(dnnl_memory_create(&a[i].memory, md, e, DNNL_MEMORY_ALLOCATE));
        void *h;
        dnnl_memory_get_data_handle(a[i].memory, &h);
        memset(h, 0, dnnl_memory_desc_get_size(md));
    }
    double best = 1e9;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        CK(dnnl_primitive_execute(p, st, nargs, a));
        dnnl_stream_wait(st);
        double t = now() - t0;
        if (r && t < best) best = t;
    }
    printf("  %-14s", impl);
    for (int i = 0; i < nargs; i++) dnnl_memory_destroy(a[i].memory);
    dnnl_primitive_destroy(p);
    return best;
}

/* The same conv through medpipe's layer (its own backward-weights where eligible). */
static int medpipe_layer(int64_t n, int64_t ci, int64_t co, int64_t sz, int64_t s, const dnnl_memory_desc_t *x,
                         const dnnl_memory_desc_t *y, int reps, double fl) {
    mp_cpu_conv_desc_t d = {.xs = {n, ci, sz, sz, sz}, .cout = co, .g = {{3, 3, 3}, {s, s, s}, {1, 1, 1}}, .bias = 1,
                            .backward = 1, .src_md = x, .dst_md = y};
    mp_cpu_conv_t *c;
    if (mp_cpu_conv_create(&c, &d)) { fprintf(stderr, "medpipe layer: %s\n", mp_error_message()); return 1; }
    size_t nx = mp_cpu_md_bytes(x), ny = mp_cpu_md_bytes(y), nw = (size_t)(ci * co * 27) * 4;
    float *xb = mp_zalloc(nx), *yb = mp_zalloc(ny), *w = mp_zalloc(nw), *dw = mp_zalloc(nw), *b = mp_zalloc(co * 4);
    float *db = mp_zalloc(co * 4);
    void *scr = mp_zalloc(mp_cpu_conv_scratch_bytes(c) + 64);
    const char *name[3] = {"fwd", "bwd_d", "bwd_w"};
    for (int pass = 0; pass < 3; pass++) {
        double best = 1e9;
        if (!strncmp(mp_cpu_conv_impl(c, pass), "ref", 3)) { /* minutes per call */
            printf("  medpipe %-20s %-5s skipped\n", mp_cpu_conv_impl(c, pass), name[pass]);
            continue;
        }
        for (int r = 0; r < reps + 1; r++) {
            double t0 = now();
            if (pass == 0) mp_cpu_conv_forward(c, yb, xb, w, b, scr);
            else if (pass == 1) mp_cpu_conv_backward_data(c, xb, yb, w, scr);
            else mp_cpu_conv_backward_weights(c, dw, db, yb, xb, scr);
            double t = now() - t0;
            if (r && t < best) best = t;
        }
        printf("  medpipe %-20s %-5s %8.2f ms %6.1f GFLOP/s\n", mp_cpu_conv_impl(c, pass), name[pass], best * 1e3,
               fl / best * 1e-9);
    }
    mp_free(xb), mp_free(yb), mp_free(w), mp_free(dw), mp_free(b), mp_free(db), mp_free(scr);
    mp_cpu_conv_free(c);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 7) { fprintf(stderr, "usage: convbench N CIN COUT SIZE STRIDE LAYOUT [REPS]\n"); return 2; }
    int64_t n = atoll(argv[1]), ci = atoll(argv[2]), co = atoll(argv[3]), sz = atoll(argv[4]), s = atoll(argv[5]);
    int reps = argc > 7 ? atoi(argv[7]) : 3;
    dnnl_format_tag_t tag = tag_of(argv[6]), ytag = argc > 8 ? tag_of(argv[8]) : tag;
    int skip_w = argc > 9 ? atoi(argv[9]) : 0;
    int64_t osz = (sz + 2 - 3) / s + 1;
    dnnl_engine_t e;
    dnnl_stream_t st;
    CK(dnnl_engine_create(&e, dnnl_cpu, 0));
    CK(dnnl_stream_create(&st, e, dnnl_stream_default_flags));
    dnnl_dims_t xd = {n, ci, sz, sz, sz}, yd = {n, co, osz, osz, osz}, wd = {co, ci, 3, 3, 3}, bd = {co};
    dnnl_dims_t str = {s, s, s}, pl = {1, 1, 1}, pr;
    for (int i = 0; i < 3; i++) pr[i] = (osz - 1) * s + 3 - sz - 1;
    dnnl_memory_desc_t x, y, w, b;
    CK(dnnl_memory_desc_init_by_tag(&x, 5, xd, dnnl_f32, tag));
    CK(dnnl_memory_desc_init_by_tag(&y, 5, yd, dnnl_f32, ytag));
    CK(dnnl_memory_desc_init_by_tag(&w, 5, wd, dnnl_f32, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&b, 1, bd, dnnl_f32, dnnl_x));
    double fl = 2.0 * n * ci * co * osz * osz * osz * 27;
    dnnl_convolution_desc_t f, bdd, bw;
    dnnl_primitive_desc_t fpd, bpd, wpd;
    CK(dnnl_convolution_forward_desc_init(&f, dnnl_forward_training, dnnl_convolution_direct, &x, &w, &b, &y, str, pl, pr));
    CK(dnnl_primitive_desc_create(&fpd, &f, NULL, e, NULL));
    const dnnl_memory_desc_t *xs = dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *ys = dnnl_primitive_desc_query_md(fpd, dnnl_query_dst_md, 0);
    x = *xs, y = *ys;
    printf("N%lld %lld->%lld %lld^3 s%lld %s (%.2f GFLOP)\n", (long long)n, (long long)ci, (long long)co,
           (long long)sz, (long long)s, argv[6], fl * 1e-9);
    int fa[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS, DNNL_ARG_DST};
    double t = run(e, st, fpd, reps, fa, 4);
    printf(" fwd   %8.2f ms %6.1f GFLOP/s\n", t * 1e3, fl / t * 1e-9);
    CK(dnnl_convolution_backward_data_desc_init(&bdd, dnnl_convolution_direct, &x, &w, &y, str, pl, pr));
    CK(dnnl_primitive_desc_create(&bpd, &bdd, NULL, e, fpd));
    int ba[] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
    if (skip_w < 2) { /* 2: also skip oneDNN's own backward-data (reference code for blocked strided convs) */
        t = run(e, st, bpd, reps, ba, 3);
        printf(" bwd_d %8.2f ms %6.1f GFLOP/s\n", t * 1e3, fl / t * 1e-9);
    }
    if (!skip_w) {
    CK(dnnl_convolution_backward_weights_desc_init(&bw, dnnl_convolution_direct, &x, &w, &b, &y, str, pl, pr));
    CK(dnnl_primitive_desc_create(&wpd, &bw, NULL, e, fpd));
    int wa[] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
    t = run(e, st, wpd, reps, wa, 4);
    printf(" bwd_w %8.2f ms %6.1f GFLOP/s\n", t * 1e3, fl / t * 1e-9);
    }
    return medpipe_layer(n, ci, co, sz, s, &x, &y, reps, fl);
}
