/* Body of the reference kernels, included by ref_f32.c and ref_f64.c with
 * R (the element type) and F(name) (the suffixed name) defined. Sums are kept
 * in double whatever R is, so the float kernels are an accurate oracle. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Flat index of (n, c, z, y, x) in a plain (N, C, D, H, W) array. */
#define IDX5(s, n_, c_, z_, y_, x_) ((((((n_) * (s).c + (c_)) * (s).d + (z_)) * (s).h + (y_)) * (s).w + (x_)))

/* Input coordinate feeding output coordinate o through kernel tap k, or -1. */
static inline int64_t F(conv_src)(int64_t o, int64_t k, int64_t s, int64_t p, int64_t in) {
    int64_t i = o * s - p + k;
    return (i >= 0 && i < in) ? i : -1;
}

/* Output coordinate of a convolution that reads input i through tap k, or -1. */
static inline int64_t F(conv_dst)(int64_t i, int64_t k, int64_t s, int64_t p, int64_t out) {
    int64_t t = i + p - k;
    if (t < 0 || t % s != 0) return -1;
    t /= s;
    return t < out ? t : -1;
}

void F(mp_ref_conv3d_forward)(R *y, const R *x, const R *w, const R *b, mp_shape5_t xs, int64_t cout,
                              const mp_conv_geom_t *g) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, g, 0);
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t o = 0; o < ys.c; o++)
            for (int64_t oz = 0; oz < ys.d; oz++)
                for (int64_t oy = 0; oy < ys.h; oy++)
                    for (int64_t ox = 0; ox < ys.w; ox++) {
                        double acc = b ? (double)b[o] : 0.0;
                        for (int64_t i = 0; i < xs.c; i++)
                            for (int64_t kz = 0; kz < g->k[0]; kz++) {
                                int64_t iz = F(conv_src)(oz, kz, g->s[0], g->p[0], xs.d);
                                if (iz < 0) continue;
                                for (int64_t ky = 0; ky < g->k[1]; ky++) {
                                    int64_t iy = F(conv_src)(oy, ky, g->s[1], g->p[1], xs.h);
                                    if (iy < 0) continue;
                                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                                        int64_t ix = F(conv_src)(ox, kx, g->s[2], g->p[2], xs.w);
                                        if (ix < 0) continue;
                                        int64_t wi = (((o * xs.c + i) * g->k[0] + kz) * g->k[1] + ky) * g->k[2] + kx;
                                        acc += (double)w[wi] * (double)x[IDX5(xs, n, i, iz, iy, ix)];
                                    }
                                }
                            }
                        y[IDX5(ys, n, o, oz, oy, ox)] = (R)acc;
                    }
}

void F(mp_ref_conv3d_backward_data)(R *dx, const R *dy, const R *w, mp_shape5_t xs, int64_t cout,
                                    const mp_conv_geom_t *g) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, g, 0);
    for (int64_t n = 0; n < xs.n; n++)
        for (int64_t i = 0; i < xs.c; i++)
            for (int64_t iz = 0; iz < xs.d; iz++)
                for (int64_t iy = 0; iy < xs.h; iy++)
                    for (int64_t ix = 0; ix < xs.w; ix++) {
                        double acc = 0;
                        for (int64_t o = 0; o < cout; o++)
                            for (int64_t kz = 0; kz < g->k[0]; kz++) {
                                int64_t oz = F(conv_dst)(iz, kz, g->s[0], g->p[0], ys.d);
                                if (oz < 0) continue;
                                for (int64_t ky = 0; ky < g->k[1]; ky++) {
                                    int64_t oy = F(conv_dst)(iy, ky, g->s[1], g->p[1], ys.h);
                                    if (oy < 0) continue;
                                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                                        int64_t ox = F(conv_dst)(ix, kx, g->s[2], g->p[2], ys.w);
                                        if (ox < 0) continue;
                                        int64_t wi = (((o * xs.c + i) * g->k[0] + kz) * g->k[1] + ky) * g->k[2] + kx;
                                        acc += (double)w[wi] * (double)dy[IDX5(ys, n, o, oz, oy, ox)];
                                    }
                                }
                            }
                        dx[IDX5(xs, n, i, iz, iy, ix)] = (R)acc;
                    }
}

/* Sum over n and output positions of dy[n, o, out] * x[n, i, in(out, k)]: the
 * weight gradient of a conv (x = input) and, with roles swapped, of a
 * transposed conv. */
static double F(conv_tap_sum)(const R *dy, mp_shape5_t ys, int64_t o, const R *x, mp_shape5_t xs, int64_t i,
                              const int64_t k[3], const mp_conv_geom_t *g) {
    double acc = 0;
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t oz = 0; oz < ys.d; oz++) {
            int64_t iz = F(conv_src)(oz, k[0], g->s[0], g->p[0], xs.d);
            if (iz < 0) continue;
            for (int64_t oy = 0; oy < ys.h; oy++) {
                int64_t iy = F(conv_src)(oy, k[1], g->s[1], g->p[1], xs.h);
                if (iy < 0) continue;
                for (int64_t ox = 0; ox < ys.w; ox++) {
                    int64_t ix = F(conv_src)(ox, k[2], g->s[2], g->p[2], xs.w);
                    if (ix < 0) continue;
                    acc += (double)dy[IDX5(ys, n, o, oz, oy, ox)] * (double)x[IDX5(xs, n, i, iz, iy, ix)];
                }
            }
        }
    return acc;
}

/* db[o] = sum of dy over n and space. */
static void F(bias_grad)(R *db, const R *dy, mp_shape5_t ys) {
    int64_t sp = ys.d * ys.h * ys.w;
    for (int64_t o = 0; o < ys.c; o++) {
        double acc = 0;
        for (int64_t n = 0; n < ys.n; n++)
            for (int64_t v = 0; v < sp; v++) acc += (double)dy[(n * ys.c + o) * sp + v];
        db[o] = (R)acc;
    }
}

void F(mp_ref_conv3d_backward_weights)(R *dw, R *db, const R *dy, const R *x, mp_shape5_t xs, int64_t cout,
                                       const mp_conv_geom_t *g) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, g, 0);
    for (int64_t o = 0; o < cout; o++)
        for (int64_t i = 0; i < xs.c; i++)
            for (int64_t kz = 0; kz < g->k[0]; kz++)
                for (int64_t ky = 0; ky < g->k[1]; ky++)
                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                        int64_t k[3] = {kz, ky, kx};
                        int64_t wi = (((o * xs.c + i) * g->k[0] + kz) * g->k[1] + ky) * g->k[2] + kx;
                        dw[wi] = (R)F(conv_tap_sum)(dy, ys, o, x, xs, i, k, g);
                    }
    if (db) F(bias_grad)(db, dy, ys);
}

void F(mp_ref_deconv3d_forward)(R *y, const R *x, const R *w, const R *b, mp_shape5_t xs, int64_t cout,
                                const mp_conv_geom_t *g) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, g, 1);
    for (int64_t n = 0; n < ys.n; n++)
        for (int64_t o = 0; o < ys.c; o++)
            for (int64_t oz = 0; oz < ys.d; oz++)
                for (int64_t oy = 0; oy < ys.h; oy++)
                    for (int64_t ox = 0; ox < ys.w; ox++) {
                        double acc = b ? (double)b[o] : 0.0;
                        for (int64_t i = 0; i < xs.c; i++)
                            for (int64_t kz = 0; kz < g->k[0]; kz++) {
                                int64_t iz = F(conv_dst)(oz, kz, g->s[0], g->p[0], xs.d);
                                if (iz < 0) continue;
                                for (int64_t ky = 0; ky < g->k[1]; ky++) {
                                    int64_t iy = F(conv_dst)(oy, ky, g->s[1], g->p[1], xs.h);
                                    if (iy < 0) continue;
                                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                                        int64_t ix = F(conv_dst)(ox, kx, g->s[2], g->p[2], xs.w);
                                        if (ix < 0) continue;
                                        int64_t wi = (((i * cout + o) * g->k[0] + kz) * g->k[1] + ky) * g->k[2] + kx;
                                        acc += (double)w[wi] * (double)x[IDX5(xs, n, i, iz, iy, ix)];
                                    }
                                }
                            }
                        y[IDX5(ys, n, o, oz, oy, ox)] = (R)acc;
                    }
}

void F(mp_ref_deconv3d_backward_data)(R *dx, const R *dy, const R *w, mp_shape5_t xs, int64_t cout,
                                      const mp_conv_geom_t *g) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, g, 1);
    for (int64_t n = 0; n < xs.n; n++)
        for (int64_t i = 0; i < xs.c; i++)
            for (int64_t iz = 0; iz < xs.d; iz++)
                for (int64_t iy = 0; iy < xs.h; iy++)
                    for (int64_t ix = 0; ix < xs.w; ix++) {
                        double acc = 0;
                        for (int64_t o = 0; o < cout; o++)
                            for (int64_t kz = 0; kz < g->k[0]; kz++) {
                                int64_t oz = F(conv_src)(iz, kz, g->s[0], g->p[0], ys.d);
                                if (oz < 0) continue;
                                for (int64_t ky = 0; ky < g->k[1]; ky++) {
                                    int64_t oy = F(conv_src)(iy, ky, g->s[1], g->p[1], ys.h);
                                    if (oy < 0) continue;
                                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                                        int64_t ox = F(conv_src)(ix, kx, g->s[2], g->p[2], ys.w);
                                        if (ox < 0) continue;
                                        int64_t wi = (((i * cout + o) * g->k[0] + kz) * g->k[1] + ky) * g->k[2] + kx;
                                        acc += (double)w[wi] * (double)dy[IDX5(ys, n, o, oz, oy, ox)];
                                    }
                                }
                            }
                        dx[IDX5(xs, n, i, iz, iy, ix)] = (R)acc;
                    }
}

void F(mp_ref_deconv3d_backward_weights)(R *dw, R *db, const R *dy, const R *x, mp_shape5_t xs, int64_t cout,
                                         const mp_conv_geom_t *g) {
    mp_shape5_t ys = mp_conv_out_shape(xs, cout, g, 1);
    /* The transposed conv's input x plays the role of a conv's output. */
    for (int64_t i = 0; i < xs.c; i++)
        for (int64_t o = 0; o < cout; o++)
            for (int64_t kz = 0; kz < g->k[0]; kz++)
                for (int64_t ky = 0; ky < g->k[1]; ky++)
                    for (int64_t kx = 0; kx < g->k[2]; kx++) {
                        int64_t k[3] = {kz, ky, kx};
                        int64_t wi = (((i * cout + o) * g->k[0] + kz) * g->k[1] + ky) * g->k[2] + kx;
                        dw[wi] = (R)F(conv_tap_sum)(x, xs, i, dy, ys, o, k, g);
                    }
    if (db) F(bias_grad)(db, dy, ys);
}

/* Elements of one normalization group and the group of (n, c). */
static void F(norm_groups)(mp_shape5_t s, int per_sample, int64_t *groups) {
    *groups = per_sample ? s.n * s.c : s.c;
}

void F(mp_ref_norm_forward)(R *y, R *mean, R *rstd, const R *x, const R *gamma, const R *beta, mp_shape5_t s,
                            int per_sample, double eps) {
    int64_t sp = s.d * s.h * s.w, groups;
    F(norm_groups)(s, per_sample, &groups);
    for (int64_t gi = 0; gi < groups; gi++) {
        int64_t c = per_sample ? gi % s.c : gi;
        int64_t n0 = per_sample ? gi / s.c : 0, n1 = per_sample ? n0 + 1 : s.n;
        double sum = 0, sq = 0, cnt = (double)((n1 - n0) * sp);
        for (int64_t n = n0; n < n1; n++)
            for (int64_t v = 0; v < sp; v++) sum += (double)x[(n * s.c + c) * sp + v];
        double m = sum / cnt;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t v = 0; v < sp; v++) {
                double d = (double)x[(n * s.c + c) * sp + v] - m;
                sq += d * d;
            }
        double r = 1.0 / sqrt(sq / cnt + eps);
        double ga = gamma ? (double)gamma[c] : 1.0, be = beta ? (double)beta[c] : 0.0;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t v = 0; v < sp; v++) {
                int64_t at = (n * s.c + c) * sp + v;
                y[at] = (R)(ga * ((double)x[at] - m) * r + be);
            }
        mean[gi] = (R)m;
        rstd[gi] = (R)r;
    }
}

void F(mp_ref_norm_backward)(R *dx, R *dgamma, R *dbeta, const R *dy, const R *x, const R *mean, const R *rstd,
                             const R *gamma, mp_shape5_t s, int per_sample) {
    int64_t sp = s.d * s.h * s.w, groups;
    F(norm_groups)(s, per_sample, &groups);
    if (dgamma) memset(dgamma, 0, (size_t)s.c * sizeof *dgamma);
    if (dbeta) memset(dbeta, 0, (size_t)s.c * sizeof *dbeta);
    for (int64_t gi = 0; gi < groups; gi++) {
        int64_t c = per_sample ? gi % s.c : gi;
        int64_t n0 = per_sample ? gi / s.c : 0, n1 = per_sample ? n0 + 1 : s.n;
        double m = (double)mean[gi], r = (double)rstd[gi], cnt = (double)((n1 - n0) * sp);
        double sdy = 0, sdyx = 0;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t v = 0; v < sp; v++) {
                int64_t at = (n * s.c + c) * sp + v;
                sdy += (double)dy[at];
                sdyx += (double)dy[at] * ((double)x[at] - m) * r;
            }
        if (dgamma) dgamma[c] = (R)((double)dgamma[c] + sdyx);
        if (dbeta) dbeta[c] = (R)((double)dbeta[c] + sdy);
        double ga = gamma ? (double)gamma[c] : 1.0;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t v = 0; v < sp; v++) {
                int64_t at = (n * s.c + c) * sp + v;
                double xh = ((double)x[at] - m) * r;
                dx[at] = (R)(ga * r / cnt * (cnt * (double)dy[at] - sdy - xh * sdyx));
            }
    }
}

void F(mp_ref_lrelu_forward)(R *y, const R *x, int64_t n, double slope) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : (R)((double)x[i] * slope);
}

void F(mp_ref_lrelu_backward)(R *dx, const R *dy, const R *x, int64_t n, double slope) {
    for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0 ? dy[i] : (R)((double)dy[i] * slope);
}

void F(mp_ref_concat_forward)(R *y, const R *a, const R *b, mp_shape5_t as, int64_t cb) {
    int64_t sp = as.d * as.h * as.w, na = as.c * sp, nb = cb * sp;
    for (int64_t n = 0; n < as.n; n++) {
        memcpy(y + n * (na + nb), a + n * na, (size_t)na * sizeof *y);
        memcpy(y + n * (na + nb) + na, b + n * nb, (size_t)nb * sizeof *y);
    }
}

void F(mp_ref_concat_backward)(R *da, R *db, const R *dy, mp_shape5_t as, int64_t cb) {
    int64_t sp = as.d * as.h * as.w, na = as.c * sp, nb = cb * sp;
    for (int64_t n = 0; n < as.n; n++) {
        memcpy(da + n * na, dy + n * (na + nb), (size_t)na * sizeof *dy);
        memcpy(db + n * nb, dy + n * (na + nb) + na, (size_t)nb * sizeof *dy);
    }
}

void F(mp_ref_softmax_forward)(R *p, const R *z, mp_shape5_t s) {
    int64_t sp = s.d * s.h * s.w;
    for (int64_t n = 0; n < s.n; n++)
        for (int64_t v = 0; v < sp; v++) {
            const R *zz = z + n * s.c * sp + v;
            R *pp = p + n * s.c * sp + v;
            double mx = -INFINITY, sum = 0;
            for (int64_t c = 0; c < s.c; c++) mx = fmax(mx, (double)zz[c * sp]);
            for (int64_t c = 0; c < s.c; c++) sum += exp((double)zz[c * sp] - mx);
            for (int64_t c = 0; c < s.c; c++) pp[c * sp] = (R)(exp((double)zz[c * sp] - mx) / sum);
        }
}

void F(mp_ref_softmax_backward)(R *dz, const R *dp, const R *p, mp_shape5_t s) {
    int64_t sp = s.d * s.h * s.w;
    for (int64_t n = 0; n < s.n; n++)
        for (int64_t v = 0; v < sp; v++) {
            int64_t base = n * s.c * sp + v;
            double dot = 0;
            for (int64_t c = 0; c < s.c; c++) dot += (double)dp[base + c * sp] * (double)p[base + c * sp];
            for (int64_t c = 0; c < s.c; c++)
                dz[base + c * sp] = (R)((double)p[base + c * sp] * ((double)dp[base + c * sp] - dot));
        }
}

/* Softmax of one voxel's K logits (stride sp) into e[0..K). */
static void F(voxel_softmax)(double *e, const R *z, int64_t k, int64_t sp) {
    double mx = -INFINITY, sum = 0;
    for (int64_t c = 0; c < k; c++) mx = fmax(mx, (double)z[c * sp]);
    for (int64_t c = 0; c < k; c++) sum += (e[c] = exp((double)z[c * sp] - mx));
    for (int64_t c = 0; c < k; c++) e[c] /= sum;
}

double F(mp_ref_dc_ce_loss)(R *dz, const R *z, const uint8_t *labels, mp_shape5_t s, const mp_loss_opts_t *o,
                            double scale) {
    int64_t sp = s.d * s.h * s.w, k = s.c, c0 = o->do_bg ? 0 : 1;
    if (k < 1 || k > 256 || k <= c0) return NAN;
    /* Per (n, c) sums of p*y (I), p (P) and y (G); summed over n for batch Dice. */
    double stack[3 * 1024], *sums = stack;
    if (s.n * k > 1024 && !(sums = malloc((size_t)(3 * s.n * k) * sizeof *sums))) return NAN;
    memset(sums, 0, (size_t)(3 * s.n * k) * sizeof *sums);
    double *si = sums, *spd = sums + s.n * k, *sg = sums + 2 * s.n * k;
    double e[256], ce = 0;
    for (int64_t n = 0; n < s.n; n++)
        for (int64_t v = 0; v < sp; v++) {
            F(voxel_softmax)(e, z + n * k * sp + v, k, sp);
            int t = labels[n * sp + v];
            ce -= log(fmax(e[t < k ? t : 0], 1e-300));
            for (int64_t c = 0; c < k; c++) {
                spd[n * k + c] += e[c];
                if (c == t) si[n * k + c] += e[c], sg[n * k + c] += 1;
            }
        }
    if (o->batch_dice)
        for (int64_t n = 1; n < s.n; n++)
            for (int64_t c = 0; c < k; c++) {
                si[c] += si[n * k + c];
                spd[c] += spd[n * k + c];
                sg[c] += sg[n * k + c];
            }
    double nvox = (double)(s.n * sp), groups = (double)((o->batch_dice ? 1 : s.n) * (k - c0)), dsum = 0;
    for (int64_t n = 0; n < (o->batch_dice ? 1 : s.n); n++)
        for (int64_t c = c0; c < k; c++) {
            double den = fmax(sg[n * k + c] + spd[n * k + c] + o->smooth, 1e-8);
            dsum += (2 * si[n * k + c] + o->smooth) / den;
        }
    double loss = o->weight_ce * ce / nvox - o->weight_dice * dsum / groups;
    if (dz) {
        double gp[256];
        for (int64_t n = 0; n < s.n; n++)
            for (int64_t v = 0; v < sp; v++) {
                const R *zz = z + n * k * sp + v;
                F(voxel_softmax)(e, zz, k, sp);
                int t = labels[n * sp + v];
                int64_t gi = o->batch_dice ? 0 : n;
                double dot = 0;
                for (int64_t c = 0; c < k; c++) {
                    gp[c] = 0;
                    if (c >= c0) {
                        double in = si[gi * k + c], den = fmax(sg[gi * k + c] + spd[gi * k + c] + o->smooth, 1e-8);
                        double ddc = ((c == t) ? 2.0 : 0.0) / den - (2 * in + o->smooth) / (den * den);
                        gp[c] = -o->weight_dice * ddc / groups;
                    }
                    dot += gp[c] * e[c];
                }
                for (int64_t c = 0; c < k; c++) {
                    double g = e[c] * (gp[c] - dot) + o->weight_ce * (e[c] - (c == t ? 1.0 : 0.0)) / nvox;
                    dz[(n * k + c) * sp + v] = (R)(g * scale);
                }
            }
    }
    if (sums != stack) free(sums);
    return loss;
}

#undef IDX5
