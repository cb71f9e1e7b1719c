/* nnU-Net v2's training augmentations on one patch, in its order: spatial
 * (rotation and scaling as ONE affine about the patch centre, optional
 * elastic displacement) sampled straight from the cached volume, then
 * Gaussian noise, Gaussian blur, brightness, contrast, low-resolution
 * simulation, inverted gamma, gamma and mirroring. Every draw comes from the
 * sample's Philox stream in one fixed order. All memory is the caller's
 * scratch: nothing is allocated per sample. */
/* gcc's -O2 "very cheap" cost model leaves the blur, low-resolution and
 * brightness loops scalar (their lengths are not known multiples of the
 * vector width); element-wise loops give the same results vectorized. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("vect-cost-model=dynamic")
#endif
#include "data/loader_internal.h"

#include <math.h>
#include <string.h>

#define PI 3.14159265358979323846

void mp_aug_opts_init(mp_aug_opts_t *a) {
    memset(a, 0, sizeof *a);
    a->p_rotation = 0.2;
    for (int i = 0; i < 3; i++) a->rotation_deg[i] = 30;
    a->p_scale = 0.2;
    a->scale_range[0] = 0.7;
    a->scale_range[1] = 1.4;
    a->p_elastic = 0;
    a->elastic_alpha[0] = 0;
    a->elastic_alpha[1] = 200;
    a->elastic_sigma[0] = 9;
    a->elastic_sigma[1] = 13;
    a->p_noise = 0.1;
    a->noise_var[0] = 0;
    a->noise_var[1] = 0.1;
    a->p_blur = 0.2;
    a->blur_sigma[0] = 0.5;
    a->blur_sigma[1] = 1.0;
    a->p_brightness = 0.15;
    a->brightness[0] = 0.75;
    a->brightness[1] = 1.25;
    a->p_contrast = 0.15;
    a->contrast[0] = 0.75;
    a->contrast[1] = 1.25;
    a->p_lowres = 0.25;
    a->lowres_zoom[0] = 0.5;
    a->lowres_zoom[1] = 1;
    a->p_gamma_inv = 0.1;
    a->p_gamma = 0.3;
    a->gamma_range[0] = 0.7;
    a->gamma_range[1] = 1.5;
    a->mirror_axes = 7;
}

void mp_aug_opts_none(mp_aug_opts_t *a) {
    mp_aug_opts_init(a);
    a->p_rotation = a->p_scale = a->p_elastic = 0;
    a->p_noise = a->p_blur = a->p_brightness = a->p_contrast = a->p_lowres = 0;
    a->p_gamma_inv = a->p_gamma = 0;
    a->mirror_axes = 0;
}

/* ---- option check ---- */

static int check_p(double p, const char *name) {
    if (!(p >= 0 && p <= 1)) return mp_error_set(MP_ERR_ARG, "augmentation: %s = %g is not a probability", name, p);
    return MP_OK;
}

static int check_range(const double r[2], double lo, double hi, const char *name) {
    if (!(r[0] >= lo && r[1] <= hi && r[0] <= r[1]))
        return mp_error_set(MP_ERR_ARG, "augmentation: %s [%g, %g] must be ordered and within [%g, %g]", name, r[0],
                            r[1], lo, hi);
    return MP_OK;
}

int mp_ld_aug_check(const mp_aug_opts_t *a) {
    int rc;
    if ((rc = check_p(a->p_rotation, "p_rotation")) || (rc = check_p(a->p_scale, "p_scale")) ||
        (rc = check_p(a->p_elastic, "p_elastic")) || (rc = check_p(a->p_noise, "p_noise")) ||
        (rc = check_p(a->p_blur, "p_blur")) || (rc = check_p(a->p_brightness, "p_brightness")) ||
        (rc = check_p(a->p_contrast, "p_contrast")) || (rc = check_p(a->p_lowres, "p_lowres")) ||
        (rc = check_p(a->p_gamma_inv, "p_gamma_inv")) || (rc = check_p(a->p_gamma, "p_gamma")))
        return rc;
    for (int i = 0; i < 3; i++)
        if (!(fabs(a->rotation_deg[i]) <= 360))
            return mp_error_set(MP_ERR_ARG, "augmentation: rotation_deg[%d] = %g outside [-360, 360]", i,
                                a->rotation_deg[i]);
    if ((rc = check_range(a->scale_range, 0.01, 100, "scale_range")) ||
        (rc = check_range(a->elastic_alpha, 0, 1e4, "elastic_alpha")) ||
        (rc = check_range(a->elastic_sigma, 1, 1e3, "elastic_sigma")) ||
        (rc = check_range(a->noise_var, 0, 1e6, "noise_var")) ||
        (rc = check_range(a->blur_sigma, 1e-3, MP_LD_MAX_BLUR_SIGMA, "blur_sigma")) ||
        (rc = check_range(a->brightness, 0, 1e3, "brightness")) || (rc = check_range(a->contrast, 0, 1e3, "contrast")) ||
        (rc = check_range(a->lowres_zoom, 1e-3, 1, "lowres_zoom")) ||
        (rc = check_range(a->gamma_range, 1e-3, 1e3, "gamma_range")))
        return rc;
    if (a->mirror_axes > 7) return mp_error_set(MP_ERR_ARG, "augmentation: mirror_axes %u is not a 3-bit mask", a->mirror_axes);
    return MP_OK;
}

/* ---- scratch ---- */

static int64_t nodes_along(int p, double g) {
    return (int64_t)floor((double)(p - 1) / g) + 4;
}

/* n 4-byte elements (float or int32), checked against the memory limit. */
static void *alloc4(int64_t n, int *rc) {
    uint64_t bytes;
    if (*rc) return NULL;
    if (n < 0 || mp_mul_u64((uint64_t)n, 4, &bytes) || bytes > mp_mem_limit()) {
        *rc = mp_error_set(MP_ERR_LIMIT, "loader: scratch of %lld values exceeds the memory limit", (long long)n);
        return NULL;
    }
    void *p = mp_alloc(bytes ? (size_t)bytes : 1);
    if (!p) *rc = mp_error_set(MP_ERR_NOMEM, "loader: out of memory for %llu bytes of scratch", (unsigned long long)bytes);
    return p;
}

int mp_ld_scratch_init(mp_ld_scratch_t *s, const int p[3], int augment, const mp_aug_opts_t *a) {
    memset(s, 0, sizeof *s);
    memcpy(s->p, p, sizeof s->p);
    int64_t maxp = p[0] > p[1] ? p[0] : p[1];
    if (p[2] > maxp) maxp = p[2];
    int64_t pv = (int64_t)p[0] * p[1] * p[2];
    int rc = MP_OK;
    s->line = alloc4(maxp + 2 * MP_LD_MAX_BLUR_RADIUS + 1, &rc);
    s->ftab = alloc4(4 * maxp, &rc);
    s->itab = alloc4(6 * maxp, &rc);
    if (augment) {
        s->buf_a = alloc4(pv, &rc);
        s->buf_b = alloc4(pv, &rc);
    }
    if (augment && a->p_elastic > 0) {
        int64_t n[3];
        for (int i = 0; i < 3; i++) n[i] = nodes_along(p[i], a->elastic_sigma[0]);
        s->node_cap = n[0] * n[1] * n[2];
        int64_t ta = n[2] * n[1] * p[0], tb = n[2] * (int64_t)p[1] * p[0];
        s->etmp_cap = ta > tb ? ta : tb;
        s->disp = alloc4(3 * pv, &rc);
        s->nodes = alloc4(s->node_cap, &rc);
        s->etmp_a = alloc4(s->etmp_cap, &rc);
        s->etmp_b = alloc4(s->etmp_cap, &rc);
    }
    if (rc) mp_ld_scratch_deinit(s);
    return rc;
}

void mp_ld_scratch_deinit(mp_ld_scratch_t *s) {
    if (!s) return;
    mp_free(s->buf_a);
    mp_free(s->buf_b);
    mp_free(s->line);
    mp_free(s->itab);
    mp_free(s->ftab);
    mp_free(s->disp);
    mp_free(s->nodes);
    mp_free(s->etmp_a);
    mp_free(s->etmp_b);
    memset(s, 0, sizeof *s);
}

/* ---- spatial ---- */

void mp_ld_affine(const double angle[3], double scale, double A[3][3]) {
    double cx = cos(angle[0]), sx = sin(angle[0]), cy = cos(angle[1]), sy = sin(angle[1]);
    double cz = cos(angle[2]), sz = sin(angle[2]);
    double rx[3][3] = {{1, 0, 0}, {0, cx, -sx}, {0, sx, cx}};
    double ry[3][3] = {{cy, 0, sy}, {0, 1, 0}, {-sy, 0, cy}};
    double rz[3][3] = {{cz, -sz, 0}, {sz, cz, 0}, {0, 0, 1}};
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) t[i][j] = ry[i][0] * rx[0][j] + ry[i][1] * rx[1][j] + ry[i][2] * rx[2][j];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double v = (rz[i][0] * t[0][j] + rz[i][1] * t[1][j] + rz[i][2] * t[2][j]) * scale;
            double n = nearbyint(v);
            A[i][j] = fabs(v - n) < 1e-12 ? n : v;
        }
}

/* Trilinear value of channel pointer `v` at integer corner (ix, iy, iz) with
 * fractions t: the slow path near the border, outside corners read 0. */
static float trilinear_border(const float *v, int64_t nx, int64_t ny, int64_t nz, int64_t ix, int64_t iy, int64_t iz,
                              float tx, float ty, float tz) {
    float c[2][2][2];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 2; i++) {
                int64_t x = ix + i, y = iy + j, z = iz + k;
                c[k][j][i] = (x >= 0 && x < nx && y >= 0 && y < ny && z >= 0 && z < nz) ? v[(z * ny + y) * nx + x] : 0.f;
            }
    float c00 = c[0][0][0] + tx * (c[0][0][1] - c[0][0][0]), c01 = c[0][1][0] + tx * (c[0][1][1] - c[0][1][0]);
    float c10 = c[1][0][0] + tx * (c[1][0][1] - c[1][0][0]), c11 = c[1][1][0] + tx * (c[1][1][1] - c[1][1][0]);
    float c0 = c00 + ty * (c01 - c00), c1 = c10 + ty * (c11 - c10);
    return c0 + tz * (c1 - c0);
}

/* One output row: positions start at (x, y, z) and advance by `step` per
 * voxel (the affine's first column), plus the displacement when given. */
static void spatial_row(const mp_ld_src_t *s, double x, double y, double z, const double step[3], const float *dx,
                        const float *dy, const float *dz, int n, int64_t pv, float *out, uint8_t *lab) {
    const int64_t nx = s->dim[0], ny = s->dim[1], nz = s->dim[2], sxy = nx * ny, cs = sxy * nz;
    const int nc = s->channels;
    for (int w = 0; w < n; w++, x += step[0], y += step[1], z += step[2]) {
        double px = x, py = y, pz = z;
        if (dx) {
            px += dx[w];
            py += dy[w];
            pz += dz[w];
        }
        double fx = floor(px), fy = floor(py), fz = floor(pz);
        int64_t ix = (int64_t)fx, iy = (int64_t)fy, iz = (int64_t)fz;
        double rx = px - fx, ry = py - fy, rz = pz - fz;
        float tx = (float)rx, ty = (float)ry, tz = (float)rz;
        /* nearest: floor(p + 0.5) = floor(p) + (fraction >= 0.5), exactly */
        int64_t lx = ix + (rx >= 0.5), ly = iy + (ry >= 0.5), lz = iz + (rz >= 0.5);
        if ((uint64_t)ix < (uint64_t)(nx - 1) && (uint64_t)iy < (uint64_t)(ny - 1) && (uint64_t)iz < (uint64_t)(nz - 1)) {
            const float *b = s->img + (iz * ny + iy) * nx + ix;
            for (int c = 0; c < nc; c++, b += cs) {
                float c00 = b[0] + tx * (b[1] - b[0]), c01 = b[nx] + tx * (b[nx + 1] - b[nx]);
                float c10 = b[sxy] + tx * (b[sxy + 1] - b[sxy]);
                float c11 = b[sxy + nx] + tx * (b[sxy + nx + 1] - b[sxy + nx]);
                float c0 = c00 + ty * (c01 - c00), c1 = c10 + ty * (c11 - c10);
                out[c * pv + w] = c0 + tz * (c1 - c0);
            }
            lab[w] = s->seg[(lz * ny + ly) * nx + lx]; /* inside: the cell's corners are */
            continue;
        }
        for (int c = 0; c < nc; c++)
            out[c * pv + w] = trilinear_border(s->img + c * cs, nx, ny, nz, ix, iy, iz, tx, ty, tz);
        lab[w] = ((uint64_t)lx < (uint64_t)nx && (uint64_t)ly < (uint64_t)ny && (uint64_t)lz < (uint64_t)nz)
                     ? s->seg[(lz * ny + ly) * nx + lx]
                     : 0;
    }
}

void mp_ld_spatial(const mp_ld_src_t *s, const double centre[3], const double A[3][3], const float *disp,
                   const int p[3], float *img, uint8_t *seg) {
    const int64_t pv = (int64_t)p[0] * p[1] * p[2];
    double pc[3] = {0.5 * (p[0] - 1), 0.5 * (p[1] - 1), 0.5 * (p[2] - 1)};
    double step[3] = {A[0][0], A[1][0], A[2][0]};
    for (int d = 0; d < p[2]; d++)
        for (int h = 0; h < p[1]; h++) {
            double o[3] = {-pc[0], h - pc[1], d - pc[2]};
            double q[3];
            for (int i = 0; i < 3; i++) q[i] = centre[i] + A[i][0] * o[0] + A[i][1] * o[1] + A[i][2] * o[2];
            int64_t off = ((int64_t)d * p[1] + h) * p[0];
            const float *dx = disp ? disp + off : NULL;
            spatial_row(s, q[0], q[1], q[2], step, dx, dx ? dx + pv : NULL, dx ? dx + 2 * pv : NULL, p[0], pv,
                        img + off, seg + off);
        }
}

/* ---- elastic displacement: i.i.d. normal nodes every sigma voxels,
 * interpolated by a cubic B-spline (smooth), scaled so that the field's
 * standard deviation matches batchgenerators' Gaussian-smoothed uniform
 * noise times alpha: alpha sqrt(1/3) / (2 sqrt(pi) sigma)^(3/2). */

/* Table for one axis: node index j and four weights per voxel. */
static void bspline_table(int n, double g, int32_t *j, float *w) {
    for (int i = 0; i < n; i++) {
        double u = i / g, f = floor(u), t = u - f;
        j[i] = (int32_t)f;
        w[4 * i + 0] = (float)((1 - t) * (1 - t) * (1 - t) / 6);
        w[4 * i + 1] = (float)((3 * t * t * t - 6 * t * t + 4) / 6);
        w[4 * i + 2] = (float)((-3 * t * t * t + 3 * t * t + 3 * t + 1) / 6);
        w[4 * i + 3] = (float)(t * t * t / 6);
    }
}

/* Resamples along axis `axis` of an (n2, n1, n0) array: the axis' length
 * becomes `m` through the 4-tap table (j, w). */
static void bspline_pass(const float *in, float *out, const int64_t n[3], int axis, int m, const int32_t *j,
                         const float *w) {
    int64_t o[3] = {n[0], n[1], n[2]};
    o[axis] = m;
    for (int64_t z = 0; z < o[2]; z++)
        for (int64_t y = 0; y < o[1]; y++)
            for (int64_t x = 0; x < o[0]; x++) {
                int64_t c[3] = {x, y, z};
                int64_t i = c[axis];
                float acc = 0;
                for (int k = 0; k < 4; k++) {
                    c[axis] = j[i] + k;
                    acc += w[4 * i + k] * in[(c[2] * n[1] + c[1]) * n[0] + c[0]];
                }
                out[(z * o[1] + y) * o[0] + x] = acc;
            }
}

static void elastic_field(mp_rng_t *r, double alpha, double sigma, mp_ld_scratch_t *sc) {
    const int *p = sc->p;
    int64_t n[3] = {nodes_along(p[0], sigma), nodes_along(p[1], sigma), nodes_along(p[2], sigma)};
    int64_t pv = (int64_t)p[0] * p[1] * p[2], nn = n[0] * n[1] * n[2];
    /* mean over a cell of sum w^2 of the cubic B-spline is 2416/5040 per axis */
    double target = alpha * sqrt(1.0 / 3.0) / pow(2 * sqrt(PI) * sigma, 1.5);
    double node_sd = target / pow(2416.0 / 5040.0, 1.5);
    for (int comp = 0; comp < 3; comp++) {
        for (int64_t i = 0; i < nn; i++) sc->nodes[i] = (float)(node_sd * mp_rng_normal(r));
        int64_t s1[3] = {n[0], n[1], n[2]}, s2[3] = {p[0], n[1], n[2]}, s3[3] = {p[0], p[1], n[2]};
        bspline_table(p[0], sigma, sc->itab, sc->ftab);
        bspline_pass(sc->nodes, sc->etmp_a, s1, 0, p[0], sc->itab, sc->ftab);
        bspline_table(p[1], sigma, sc->itab, sc->ftab);
        bspline_pass(sc->etmp_a, sc->etmp_b, s2, 1, p[1], sc->itab, sc->ftab);
        bspline_table(p[2], sigma, sc->itab, sc->ftab);
        bspline_pass(sc->etmp_b, sc->disp + comp * pv, s3, 2, p[2], sc->itab, sc->ftab);
    }
}

/* ---- intensity ---- */

/* Gaussian noise by Marsaglia's polar method (two normals per accepted
 * pair, no trigonometry): the rejections depend only on the stream. */
static void add_noise(float *x, int64_t n, double sd, mp_rng_t *r) {
    for (int64_t i = 0; i < n;) {
        double u = (double)mp_rng_u32(r) * (2.0 / 4294967296.0) - 1.0;
        double v = (double)mp_rng_u32(r) * (2.0 / 4294967296.0) - 1.0;
        double q = u * u + v * v;
        if (q >= 1.0 || q == 0.0) continue;
        double m = sd * sqrt(-2.0 * log(q) / q);
        x[i++] += (float)(m * u);
        if (i < n) x[i++] += (float)(m * v);
    }
}

/* scipy's 'reflect' boundary (d c b a | a b c d | d c b a), any distance. */
static int64_t reflect(int64_t i, int64_t n) {
    int64_t m = 2 * n;
    i %= m;
    if (i < 0) i += m;
    return i < n ? i : m - 1 - i;
}

/* Separable Gaussian along axis `axis` from `in` to `out` (distinct). */
static void blur_axis(const float *in, float *out, const int p[3], int axis, const float *k, int rad, float *line) {
    const int64_t nx = p[0], ny = p[1], nz = p[2];
    if (axis == 0) {
        for (int64_t r = 0; r < ny * nz; r++) {
            const float *src = in + r * nx;
            float *dst = out + r * nx;
            /* padded copy: reflected ends, the row itself in the middle */
            for (int64_t i = -rad; i < 0; i++) line[i + rad] = src[reflect(i, nx)];
            memcpy(line + rad, src, sizeof(float) * (size_t)nx);
            for (int64_t i = nx; i < nx + rad; i++) line[i + rad] = src[reflect(i, nx)];
            for (int64_t i = 0; i < nx; i++) dst[i] = 0;
            for (int j = 0; j <= 2 * rad; j++) {
                const float *l = line + j;
                float kw = k[j];
                for (int64_t i = 0; i < nx; i++) dst[i] += kw * l[i];
            }
        }
        return;
    }
    /* y or z: whole rows combined, vectorisable along x */
    const int64_t n = axis == 1 ? ny : nz, outer = axis == 1 ? nz : 1, stride = axis == 1 ? nx : nx * ny;
    const int64_t inner = axis == 1 ? nx : nx * ny, block = axis == 1 ? nx * ny : 0;
    for (int64_t b = 0; b < outer; b++)
        for (int64_t i = 0; i < n; i++) {
            float *dst = out + b * block + i * stride;
            for (int64_t x = 0; x < inner; x++) dst[x] = 0;
            for (int j = -rad; j <= rad; j++) {
                const float *src = in + b * block + reflect(i + j, n) * stride;
                float kw = k[j + rad];
                for (int64_t x = 0; x < inner; x++) dst[x] += kw * src[x];
            }
        }
}

void mp_ld_blur(float *x, const int p[3], double sigma, mp_ld_scratch_t *sc) {
    int rad = (int)(4.0 * sigma + 0.5); /* scipy's truncate = 4 */
    if (rad > MP_LD_MAX_BLUR_RADIUS) rad = MP_LD_MAX_BLUR_RADIUS;
    float k[2 * MP_LD_MAX_BLUR_RADIUS + 1];
    double sum = 0, kd[2 * MP_LD_MAX_BLUR_RADIUS + 1];
    for (int j = -rad; j <= rad; j++) sum += kd[j + rad] = exp(-0.5 * j * j / (sigma * sigma));
    for (int j = 0; j <= 2 * rad; j++) k[j] = (float)(kd[j] / sum);
    blur_axis(x, sc->buf_a, p, 0, k, rad, sc->line);
    blur_axis(sc->buf_a, sc->buf_b, p, 1, k, rad, sc->line);
    blur_axis(sc->buf_b, x, p, 2, k, rad, sc->line);
}

/* Linear up-sampling along one axis of an (n2, n1, n0) array to length m
 * (edge values held, half-voxel-centred coordinates). */
static void upsample_axis(const float *in, float *out, const int64_t n[3], int axis, int m, int32_t *i0, int32_t *i1,
                          float *w) {
    int64_t t = n[axis];
    for (int i = 0; i < m; i++) {
        double u = (i + 0.5) * (double)t / m - 0.5;
        if (u < 0) u = 0;
        if (u > (double)(t - 1)) u = (double)(t - 1);
        i0[i] = (int32_t)floor(u);
        i1[i] = i0[i] + 1 < t ? i0[i] + 1 : i0[i];
        w[i] = (float)(u - i0[i]);
    }
    int64_t o[3] = {n[0], n[1], n[2]};
    o[axis] = m;
    for (int64_t z = 0; z < o[2]; z++)
        for (int64_t y = 0; y < o[1]; y++) {
            float *dst = out + (z * o[1] + y) * o[0];
            if (axis == 0) {
                const float *src = in + (z * n[1] + y) * n[0];
                for (int64_t x = 0; x < m; x++) dst[x] = src[i0[x]] + w[x] * (src[i1[x]] - src[i0[x]]);
                continue;
            }
            const float *a, *b;
            float f;
            if (axis == 1) {
                a = in + (z * n[1] + i0[y]) * n[0];
                b = in + (z * n[1] + i1[y]) * n[0];
                f = w[y];
            } else {
                a = in + (i0[z] * n[1] + y) * n[0];
                b = in + (i1[z] * n[1] + y) * n[0];
                f = w[z];
            }
            for (int64_t x = 0; x < o[0]; x++) dst[x] = a[x] + f * (b[x] - a[x]);
        }
}

void mp_ld_lowres(float *x, const int p[3], double zoom, mp_ld_scratch_t *sc) {
    int64_t t[3];
    int same = 1;
    for (int a = 0; a < 3; a++) {
        t[a] = (int64_t)nearbyint(p[a] * zoom);
        if (t[a] < 1) t[a] = 1;
        if (t[a] > p[a]) t[a] = p[a];
        same &= t[a] == p[a];
    }
    if (same) return;
    /* nearest down-sampling: the source voxel under each coarse centre */
    int64_t k = 0;
    for (int64_t z = 0; z < t[2]; z++) {
        int64_t sz = (int64_t)floor((z + 0.5) * p[2] / (double)t[2]);
        for (int64_t y = 0; y < t[1]; y++) {
            int64_t sy = (int64_t)floor((y + 0.5) * p[1] / (double)t[1]);
            const float *row = x + (sz * p[1] + sy) * p[0];
            for (int64_t i = 0; i < t[0]; i++) sc->buf_a[k++] = row[(int64_t)floor((i + 0.5) * p[0] / (double)t[0])];
        }
    }
    int64_t maxp = p[0] > p[1] ? p[0] : p[1];
    if (p[2] > maxp) maxp = p[2];
    int32_t *i0 = sc->itab, *i1 = sc->itab + maxp;
    int64_t s1[3] = {t[0], t[1], t[2]}, s2[3] = {p[0], t[1], t[2]}, s3[3] = {p[0], p[1], t[2]};
    upsample_axis(sc->buf_a, sc->buf_b, s1, 0, p[0], i0, i1, sc->ftab);
    upsample_axis(sc->buf_b, sc->buf_a, s2, 1, p[1], i0, i1, sc->ftab);
    upsample_axis(sc->buf_a, x, s3, 2, p[2], i0, i1, sc->ftab);
}

static void mean_std(const float *x, int64_t n, double *mean, double *sd) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) q += ((double)x[i] - m) * ((double)x[i] - m);
    *mean = m;
    *sd = sqrt(q / (double)n);
}

static void min_max(const float *x, int64_t n, float *lo, float *hi) {
    float a = x[0], b = x[0];
    for (int64_t i = 1; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
}

void mp_ld_gamma(float *x, int64_t n, double gamma, int invert, int retain_stats) {
    if (invert)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
    double mn = 0, sd = 0;
    if (retain_stats) mean_std(x, n, &mn, &sd);
    float lo, hi;
    min_max(x, n, &lo, &hi);
    double range = (double)hi - lo, eps = 1e-7;
    float g = (float)gamma;
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(powf((float)(((double)x[i] - lo) / (range + eps)), g) * (range + eps) + lo);
    if (retain_stats) {
        double m2, s2;
        mean_std(x, n, &m2, &s2);
        double f = sd / (s2 + 1e-8);
        for (int64_t i = 0; i < n; i++) x[i] = (float)(((double)x[i] - m2) * f + mn);
    }
    if (invert)
        for (int64_t i = 0; i < n; i++) x[i] = -x[i];
}

static void contrast(float *x, int64_t n, double factor) {
    double mn, sd;
    mean_std(x, n, &mn, &sd);
    float lo, hi;
    min_max(x, n, &lo, &hi);
    for (int64_t i = 0; i < n; i++) {
        float v = (float)(((double)x[i] - mn) * factor + mn);
        x[i] = v < lo ? lo : v > hi ? hi : v;
    }
}

static void reverse_f32(float *a, int64_t n) {
    for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
        float t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static void reverse_u8(uint8_t *a, int64_t n) {
    for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
        uint8_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* Swaps blocks of `len` bytes i and n-1-i, blocks `stride` bytes apart, in
 * each of `outer` groups `group` bytes apart (through a small buffer). */
static void flip_blocks(uint8_t *base, int64_t outer, int64_t group, int64_t n, int64_t stride, int64_t len) {
    uint8_t tmp[4096];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
            uint8_t *a = base + o * group + i * stride, *b = base + o * group + j * stride;
            for (int64_t k = 0; k < len; k += (int64_t)sizeof tmp) {
                size_t m = (size_t)(len - k < (int64_t)sizeof tmp ? len - k : (int64_t)sizeof tmp);
                memcpy(tmp, a + k, m);
                memcpy(a + k, b + k, m);
                memcpy(b + k, tmp, m);
            }
        }
}

void mp_ld_mirror(float *img, uint8_t *seg, int channels, const int p[3], unsigned mask) {
    const int64_t nx = p[0], ny = p[1], nz = p[2], pv = nx * ny * nz;
    if (mask & 1) {
        for (int64_t r = 0; r < ny * nz * channels; r++) reverse_f32(img + r * nx, nx);
        for (int64_t r = 0; r < ny * nz; r++) reverse_u8(seg + r * nx, nx);
    }
    if (mask & 2) {
        flip_blocks((uint8_t *)img, nz * channels, nx * ny * 4, ny, nx * 4, nx * 4);
        flip_blocks(seg, nz, nx * ny, ny, nx, nx);
    }
    if (mask & 4) {
        flip_blocks((uint8_t *)img, channels, pv * 4, nz, nx * ny * 4, nx * ny * 4);
        flip_blocks(seg, 1, pv, nz, nx * ny, nx * ny);
    }
}

/* ---- the pipeline ---- */

/* nnU-Net's draw for contrast and gamma: below 1 or above 1 with p 0.5 each. */
static double draw_around_one(mp_rng_t *r, const double range[2]) {
    if (mp_rng_uniform(r) < 0.5 && range[0] < 1) return mp_rng_range(r, range[0], 1);
    return mp_rng_range(r, range[0] > 1 ? range[0] : 1, range[1]);
}

static void augment_spatial(const mp_aug_opts_t *a, mp_rng_t *r, const mp_ld_src_t *s, const int64_t lo[3],
                            mp_ld_scratch_t *sc, float *img, uint8_t *seg) {
    const int *p = sc->p;
    double angle[3] = {0, 0, 0}, scale = 1;
    int rot = mp_rng_uniform(r) < a->p_rotation;
    if (rot)
        for (int i = 0; i < 3; i++) angle[i] = mp_rng_range(r, -a->rotation_deg[i], a->rotation_deg[i]) * PI / 180;
    int scl = mp_rng_uniform(r) < a->p_scale;
    if (scl) scale = mp_rng_range(r, a->scale_range[0], a->scale_range[1]);
    int el = mp_rng_uniform(r) < a->p_elastic && sc->disp;
    if (el) {
        double alpha = mp_rng_range(r, a->elastic_alpha[0], a->elastic_alpha[1]);
        double sigma = mp_rng_range(r, a->elastic_sigma[0], a->elastic_sigma[1]);
        elastic_field(r, alpha, sigma, sc);
    }
    if (!rot && !scl && !el) {
        mp_ld_crop(s, lo, p, img, seg);
        return;
    }
    double A[3][3], c[3];
    mp_ld_affine(angle, scale, A);
    for (int i = 0; i < 3; i++) c[i] = (double)lo[i] + 0.5 * (p[i] - 1);
    mp_ld_spatial(s, c, A, el ? sc->disp : NULL, p, img, seg);
}

void mp_ld_augment(const mp_aug_opts_t *a, mp_rng_t *r, const mp_ld_src_t *s, const int64_t lo[3],
                   mp_ld_scratch_t *sc, float *img, uint8_t *seg) {
    const int *p = sc->p;
    const int nc = s->channels;
    const int64_t pv = (int64_t)p[0] * p[1] * p[2];
    augment_spatial(a, r, s, lo, sc, img, seg);
    if (mp_rng_uniform(r) < a->p_noise) /* one variance for all channels; used as the sd, as batchgenerators */
        add_noise(img, nc * pv, mp_rng_range(r, a->noise_var[0], a->noise_var[1]), r);
    if (mp_rng_uniform(r) < a->p_blur)
        for (int c = 0; c < nc; c++)
            if (mp_rng_uniform(r) < 0.5) mp_ld_blur(img + c * pv, p, mp_rng_range(r, a->blur_sigma[0], a->blur_sigma[1]), sc);
    if (mp_rng_uniform(r) < a->p_brightness)
        for (int c = 0; c < nc; c++) {
            float m = (float)mp_rng_range(r, a->brightness[0], a->brightness[1]);
            for (int64_t i = 0; i < pv; i++) img[c * pv + i] *= m;
        }
    if (mp_rng_uniform(r) < a->p_contrast)
        for (int c = 0; c < nc; c++) contrast(img + c * pv, pv, draw_around_one(r, a->contrast));
    if (mp_rng_uniform(r) < a->p_lowres)
        for (int c = 0; c < nc; c++)
            if (mp_rng_uniform(r) < 0.5)
                mp_ld_lowres(img + c * pv, p, mp_rng_range(r, a->lowres_zoom[0], a->lowres_zoom[1]), sc);
    if (mp_rng_uniform(r) < a->p_gamma_inv)
        for (int c = 0; c < nc; c++) mp_ld_gamma(img + c * pv, pv, draw_around_one(r, a->gamma_range), 1, 1);
    if (mp_rng_uniform(r) < a->p_gamma)
        for (int c = 0; c < nc; c++) mp_ld_gamma(img + c * pv, pv, draw_around_one(r, a->gamma_range), 0, 1);
    unsigned mask = 0;
    for (int ax = 0; ax < 3; ax++)
        if ((a->mirror_axes >> ax) & 1 && mp_rng_uniform(r) < 0.5) mask |= 1u << ax;
    if (mask) mp_ld_mirror(img, seg, nc, p, mask);
}
