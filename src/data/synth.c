/* Synthetic CT-like phantoms: the embedded default data set (see synth.h).
 *
 * A case is drawn in two steps. The layout (body outline, fat and muscle
 * layers, spine, organ instances, smooth random fields, bias and noise levels)
 * comes from one Philox stream keyed by (seed, case index); organs are placed
 * by rejection so that none overlaps another, the spine or the body wall.
 * Rendering then evaluates the tissue at every voxel centre (which gives the
 * label), supersamples the voxels on a tissue boundary (partial volume), blurs
 * in-plane, applies the bias field and adds noise drawn from a counter-based
 * stream indexed by voxel. Every voxel is a pure function of the layout, so
 * any split of the slices over threads gives the same bytes.
 *
 * Portability of the bytes: only +, -, *, /, sqrt and floor are used on
 * floating-point values (all exactly rounded by IEEE 754), no libm
 * transcendental functions (rotations come from quaternions, noise from sums
 * of uniforms), and no contraction into fused multiply-adds (gcc does not
 * contract in ISO C mode, -std=c11; clang is told by the pragma below). The
 * golden-bytes test in tests/test_synth.c guards all of this. */
#include "medpipe/synth.h"
#include "medpipe/dataset.h"
#include "medpipe/io.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Tissue ids of the internal tissue map; organ instance i is T_ORGAN0 + i. */
enum { T_AIR, T_FAT, T_MUSCLE, T_SOFT, T_VFAT, T_CORTEX, T_CANC, T_DISC, T_CANAL, T_ORGAN0 };
#define T_NONE 255
#define MAX_ORGANS 16
#define N_TISSUE (T_ORGAN0 + MAX_ORGANS)
#define N_MOD 15
#define FIELD_MAX 8
#define MAX_GAS 3

/* ---------------------------------------------------------------- templates */

/* An organ class: nominal intensity, where it sits in the body, its size and
 * how much its shape varies. Positions: x, y in units of the in-plane scale S
 * from the body centre (x > 0 is the patient's right, y > 0 anterior), z in
 * units of half the field of view along z; sizes in units of S_org. For an
 * organ with a parent, the position is an offset in units of the parent's
 * semi-axes. Orientation: quaternion (w, x, y, z) mapping local to world. */
typedef struct {
    const char *name;
    double hu, hu_jitter;
    double pos[3], jitter[3];
    double axes[3];
    double quat[4];
    double tilt;       /* bound of the random rotation, tan(angle / 2) */
    double mod_amp;    /* scale of the radius modulation */
    double bend, taper;
    double taper0;     /* fixed part of the taper (a wedge, e.g. the liver) */
    double tex;        /* texture amplitude (HU) */
    double capsule;    /* thickness of a surrounding fat layer, S units */
    int paired;        /* plus a copy mirrored to the other side */
    double pair_dz;    /* z offset of the unmirrored (right) one of a pair */
    int parent;        /* template index (0-based) it lies inside, -1 none */
    int tube;          /* runs through the whole field of view along z */
    int at_spine;      /* position relative to the front of the spine */
} organ_tpl_t;

/* Indexed by label - 1. Liver, spleen, pancreas, aorta and node differ from
 * each other and from soft tissue (35..45) by less than the noise, kidney and
 * lesion are darker: no threshold separates the classes; shape, position
 * and the fat around some organs do. */
static const organ_tpl_t templates[MP_SYNTH_MAX_CLASSES] = {
    {.name = "liver", .hu = 60, .hu_jitter = 4, .pos = {0.29, 0.16, 0.28}, .jitter = {0.05, 0.05, 0.12},
     .axes = {0.40, 0.26, 0.35}, .quat = {0.70711, 0, 0.70711, 0}, .tilt = 0.15, .mod_amp = 0.7, .bend = 0.15,
     .taper0 = 0.2, .taper = 0.1, .tex = 4, .parent = -1},
    {.name = "spleen", .hu = 50, .hu_jitter = 4, .pos = {-0.44, -0.08, 0.36}, .jitter = {0.05, 0.05, 0.12},
     .axes = {0.14, 0.24, 0.28}, .quat = {0.97630, 0, 0, 0.21644}, .tilt = 0.15, .mod_amp = 1.0, .bend = 0.25,
     .taper = 0.15, .tex = 4, .capsule = 0.015, .parent = -1},
    {.name = "kidney", .hu = 30, .hu_jitter = 4, .pos = {0.41, -0.24, -0.15}, .jitter = {0.04, 0.04, 0.12},
     .axes = {0.13, 0.11, 0.25}, .quat = {0.99144, 0, -0.13053, 0}, .tilt = 0.12, .mod_amp = 0.8, .bend = 0.25,
     .taper = 0.10, .tex = 3, .capsule = 0.03, .paired = 1, .pair_dz = -0.12, .parent = -1},
    {.name = "lesion", .hu = 10, .hu_jitter = 4, .pos = {0, 0, 0}, .jitter = {0.45, 0.45, 0.45},
     .axes = {0.10, 0.10, 0.10}, .quat = {1, 0, 0, 0}, .tilt = 0.3, .mod_amp = 0.6, .taper = 0.10, .tex = 2,
     .parent = 0},
    {.name = "pancreas", .hu = 45, .hu_jitter = 4, .pos = {-0.12, 0.31, -0.15}, .jitter = {0.05, 0.03, 0.12},
     .axes = {0.26, 0.06, 0.08}, .quat = {0.98481, 0, 0, 0.17365}, .tilt = 0.10, .mod_amp = 0.8, .bend = 0.25,
     .taper = 0.10, .tex = 5, .capsule = 0.02, .parent = -1, .at_spine = 1},
    {.name = "aorta", .hu = 45, .hu_jitter = 4, .pos = {-0.08, 0.12, 0}, .jitter = {0.02, 0.015, 0},
     .axes = {0.07, 0.07, 1.0}, .quat = {1, 0, 0, 0}, .tilt = 0.02, .mod_amp = 0.3, .tex = 2, .capsule = 0.015,
     .parent = -1, .tube = 1, .at_spine = 1},
    {.name = "gallbladder", .hu = 20, .hu_jitter = 4, .pos = {0.22, 0.25, -0.35}, .jitter = {0.05, 0.05, 0.12},
     .axes = {0.08, 0.08, 0.14}, .quat = {0.99144, 0.13053, 0, 0}, .tilt = 0.15, .mod_amp = 0.8, .bend = 0.2,
     .taper = 0.2, .tex = 2, .parent = -1},
    {.name = "node", .hu = 75, .hu_jitter = 5, .pos = {0.0, 0.22, -0.25}, .jitter = {0.25, 0.10, 0.25},
     .axes = {0.06, 0.05, 0.075}, .quat = {1, 0, 0, 0}, .tilt = 0.3, .mod_amp = 0.6, .bend = 0.1, .taper = 0.1,
     .tex = 3, .capsule = 0.02, .parent = -1},
};
/* Gas pockets in the bowel: unlabelled, placed last, skipped when no room. */
static const organ_tpl_t gas_tpl = {.name = "gas", .hu = -990, .hu_jitter = 10, .pos = {0.0, 0.28, 0.0},
                                    .jitter = {0.40, 0.12, 0.60}, .axes = {0.045, 0.04, 0.05},
                                    .quat = {1, 0, 0, 0}, .tilt = 0.3, .mod_amp = 0.8, .bend = 0.2,
                                    .taper = 0.2, .parent = -1};
/* Placement order (label - 1): the aorta (tied to the spine) and large organs
 * first, the lesion after its parent. */
static const int place_order[MP_SYNTH_MAX_CLASSES] = {5, 0, 1, 2, 4, 6, 7, 3};

/* Largest |basis function| on the unit sphere, for the modulation bound. */
static const double mod_basis_max[N_MOD] = {1, 1, 1, 2.0 / 3, 2.0 / 3, 0.5, 0.5, 0.5,
                                            0.2, 1, 1, 1, 1, 1, 1};
/* Amplitude of each modulation coefficient (degrees 1, 2, 3). */
static const double mod_coef_amp[N_MOD] = {0.05, 0.05, 0.05, 0.08, 0.08, 0.08, 0.08, 0.08,
                                           0.05, 0.05, 0.05, 0.05, 0.04, 0.04, 0.04};

const char *mp_synth_class_name(int label) {
    if (label == 0) return "background";
    if (label < 1 || label > MP_SYNTH_MAX_CLASSES) return NULL;
    return templates[label - 1].name;
}

double mp_synth_class_hu(int label) {
    return label >= 1 && label <= MP_SYNTH_MAX_CLASSES ? templates[label - 1].hu : 0;
}

void mp_synth_case_name(char *buf, size_t n, int64_t index) {
    snprintf(buf, n, "case_%03lld", (long long)index);
}

/* ---------------------------------------------------------------- params */

void mp_synth_params_init(mp_synth_params_t *p) {
    memset(p, 0, sizeof *p);
    p->seed = 42;
    p->size[0] = 128;
    p->size[1] = 128;
    p->size[2] = 64;
    p->spacing[0] = 1.5;
    p->spacing[1] = 1.5;
    p->spacing[2] = 3.0;
    p->classes = 3;
    p->train_cases = 20;
    p->test_cases = 5;
    p->noise_hu[0] = 10;
    p->noise_hu[1] = 20;
    p->partial_volume = 1;
}

int mp_synth_params_check(const mp_synth_params_t *p) {
    static const char axis[3] = {'x', 'y', 'z'};
    for (int i = 0; i < 3; i++) {
        if (p->size[i] < 24 || p->size[i] > 1024)
            return mp_error_set(MP_ERR_ARG, "size along %c is %lld voxels; it must be 24..1024", axis[i],
                                (long long)p->size[i]);
        if (!(p->spacing[i] >= 0.1 && p->spacing[i] <= 20))
            return mp_error_set(MP_ERR_ARG, "spacing along %c is %g mm; it must be 0.1..20", axis[i],
                                p->spacing[i]);
    }
    if (p->classes < 1 || p->classes > MP_SYNTH_MAX_CLASSES)
        return mp_error_set(MP_ERR_ARG, "%d classes requested; 1..%d are available", p->classes,
                            MP_SYNTH_MAX_CLASSES);
    if (p->train_cases < 0 || p->test_cases < 0 || p->train_cases > 100000 || p->test_cases > 100000)
        return mp_error_set(MP_ERR_ARG, "case counts %lld/%lld: each must be 0..100000",
                            (long long)p->train_cases, (long long)p->test_cases);
    if (!(p->noise_hu[0] >= 0 && p->noise_hu[1] >= p->noise_hu[0] && p->noise_hu[1] <= 1000))
        return mp_error_set(MP_ERR_ARG, "noise range %g..%g HU: need 0 <= lo <= hi <= 1000", p->noise_hu[0],
                            p->noise_hu[1]);
    if (p->partial_volume != 0 && p->partial_volume != 1)
        return mp_error_set(MP_ERR_ARG, "partial_volume must be 0 or 1, not %d", p->partial_volume);
    return MP_OK;
}

/* ---------------------------------------------------------------- layout */

typedef struct {
    mp_synth_organ_t pub;
    double rot[3][3];  /* rows: local axes in world coordinates */
    double inv_axes[3];
    double coef[N_MOD];
    double mod_min, mod_max; /* bounds of the modulated radius */
    double bend, taper;
    double lo[3], hi[3]; /* world bounding box */
    double tex;
    double capsule;    /* fat layer around it (mm), 0 for none */
} organ_t;

/* A smooth random field: values on a coarse grid over the field of view,
 * interpolated with C1 (smoothstep) weights. */
typedef struct {
    int n[3];
    double lo[3], inv_cell[3];
    double v[FIELD_MAX * FIELD_MAX * FIELD_MAX];
} field_t;

/* A sum of smooth compactly supported bumps w * (1 - d^2/R^2)^3: blob-like
 * level sets without the grid-aligned edges of an interpolated lattice.
 * Bumps are listed per slab of z so a point visits only those near it. */
#define MAX_BUMPS 32
#define BUMP_SLABS 16
typedef struct {
    int n;
    double c[MAX_BUMPS][3], r[MAX_BUMPS], inv_r2[MAX_BUMPS], w[MAX_BUMPS];
    double z0, inv_slab;
    int slab_n[BUMP_SLABS];
    uint8_t slab[BUMP_SLABS][MAX_BUMPS];
} bumps_t;

typedef struct {
    double cx, cy, ax, ay, taper, inv_zh;
    double mod[4];
    double flat, inv_flat; /* the back is the line dy = -flat (normalised units) */
    double fat_lvl;  /* level above which the body is fat */
    double cav_lvl;  /* level below which it is the abdominal cavity */
    double inv_ax, inv_ay, mod_lo, mod_hi; /* for the quick tests of body_zone */
} body_t;

typedef struct {
    double x, y, curve, lordosis, inv_zh;
    double ry, inv_rx, inv_ry, cort_e;
    double period_inv, phase, disc_frac;
    double canal_dy, canal_r2, ring_r2;
    double sp_dy, inv_sp_rx, inv_sp_ry;
    double para_dx, para_dy, inv_para_rx, inv_para_ry;
    double psoas_dx, psoas_dy, inv_psoas_rx, inv_psoas_ry;
    double xmax, ymin, ymax;
} spine_t;

struct mp_synth_layout {
    mp_synth_params_t p;
    int64_t case_index;
    double origin[3]; /* world position of voxel (0, 0, 0) */
    double S, Z, S_org, margin;
    double cav_scale; /* size of this body's cavity relative to the nominal one */
    body_t body;
    spine_t spine;
    int n_organs;
    organ_t org[MAX_ORGANS];
    int eval_order[MAX_ORGANS];
    double hu[N_TISSUE], tex[N_TISSUE];
    uint8_t label_of[N_TISSUE];
    bumps_t vfat;
    field_t texture;
    double vfat_thr;
    double bias_cup, bias_grad[3], bias_off; /* gain 1 + cup (1 - r^2) + grad . x; offset (HU) */
    double noise_sd;
    uint64_t noise_stream;
};

static double urange(mp_rng_t *r, double lo, double hi) { return mp_rng_range(r, lo, hi); }
static double usym(mp_rng_t *r, double a) { return mp_rng_range(r, -a, a); }

static void voxel_world(const mp_synth_layout_t *L, double i, double j, double k, double w[3]) {
    w[0] = L->origin[0] + i * L->p.spacing[0];
    w[1] = L->origin[1] + j * L->p.spacing[1];
    w[2] = L->origin[2] + k * L->p.spacing[2];
}

static void field_init(field_t *f, const mp_synth_layout_t *L, const int n[3], mp_rng_t *r) {
    for (int a = 0; a < 3; a++) {
        f->n[a] = n[a];
        double extent = (double)(L->p.size[a] - 1) * L->p.spacing[a];
        f->lo[a] = L->origin[a];
        f->inv_cell[a] = (double)(n[a] - 1) / (extent > 0 ? extent : 1);
    }
    for (int i = 0; i < n[0] * n[1] * n[2]; i++) f->v[i] = usym(r, 1.0);
}

static void bumps_init(bumps_t *b, const mp_synth_layout_t *L, int n, mp_rng_t *r) {
    b->n = n;
    double zr = 1.2 * L->Z + 0.4 * L->S_org;
    b->z0 = -zr;
    b->inv_slab = BUMP_SLABS / (2 * zr);
    for (int i = 0; i < n; i++) {
        b->c[i][0] = usym(r, 0.8) * L->S;
        b->c[i][1] = usym(r, 0.6) * L->S;
        b->c[i][2] = usym(r, 1.2) * L->Z;
        b->r[i] = urange(r, 0.18, 0.36) * L->S_org;
        b->inv_r2[i] = 1.0 / (b->r[i] * b->r[i]);
        b->w[i] = urange(r, -0.2, 1.0);
    }
    for (int s = 0; s < BUMP_SLABS; s++) {
        double lo = b->z0 + s / b->inv_slab, hi = b->z0 + (s + 1) / b->inv_slab;
        b->slab_n[s] = 0;
        for (int i = 0; i < n; i++)
            if (b->c[i][2] + b->r[i] >= lo && b->c[i][2] - b->r[i] <= hi) b->slab[s][b->slab_n[s]++] = (uint8_t)i;
    }
}

static double bumps_eval(const bumps_t *b, const double p[3]) {
    double g = (p[2] - b->z0) * b->inv_slab;
    if (g < 0 || g >= BUMP_SLABS) return 0;
    int s = (int)g;
    double sum = 0;
    for (int k = 0; k < b->slab_n[s]; k++) {
        int i = b->slab[s][k];
        double dx = p[0] - b->c[i][0], dy = p[1] - b->c[i][1], dz = p[2] - b->c[i][2];
        double u = 1.0 - (dx * dx + dy * dy + dz * dz) * b->inv_r2[i];
        u = u > 0 ? u : 0;
        sum += b->w[i] * u * u * u;
    }
    return sum;
}

static double smooth01(double t) { return t * t * (3 - 2 * t); }

static double field_eval(const field_t *f, const double p[3]) {
    int idx[3];
    double w[3];
    for (int a = 0; a < 3; a++) {
        double g = (p[a] - f->lo[a]) * f->inv_cell[a];
        if (g < 0) g = 0;
        if (g > f->n[a] - 1) g = f->n[a] - 1;
        int i = (int)g;
        if (i > f->n[a] - 2) i = f->n[a] - 2;
        idx[a] = i;
        w[a] = smooth01(g - i);
    }
    const double *v = f->v + idx[0] + f->n[0] * (idx[1] + f->n[1] * idx[2]);
    int sy = f->n[0], sz = f->n[0] * f->n[1];
    double c00 = v[0] + w[0] * (v[1] - v[0]);
    double c10 = v[sy] + w[0] * (v[sy + 1] - v[sy]);
    double c01 = v[sz] + w[0] * (v[sz + 1] - v[sz]);
    double c11 = v[sz + sy] + w[0] * (v[sz + sy + 1] - v[sz + sy]);
    double c0 = c00 + w[1] * (c10 - c00), c1 = c01 + w[1] * (c11 - c01);
    return c0 + w[2] * (c1 - c0);
}

/* ---- organ shapes ---- */

static double modulation(const double *c, double x, double y, double z) {
    double m = 1.0 + c[0] * x + c[1] * y + c[2] * z + c[3] * (x * x - 1.0 / 3) + c[4] * (y * y - 1.0 / 3) +
               c[5] * x * y + c[6] * y * z + c[7] * x * z + c[8] * x * y * z + c[9] * x * (y * y - z * z) +
               c[10] * y * (z * z - x * x) + c[11] * z * (x * x - y * y) + c[12] * x * x * x +
               c[13] * y * y * y + c[14] * z * z * z;
    return m < 0.5 ? 0.5 : m;
}

/* Deformed local coordinates (mm) of world point p; 0 when p lies beyond the
 * shape along the local z axis (by more than `slack` normalised units). */
static int organ_local(const organ_t *o, const double p[3], double slack, double q[3]) {
    double d0 = p[0] - o->pub.center[0], d1 = p[1] - o->pub.center[1], d2 = p[2] - o->pub.center[2];
    for (int r = 0; r < 3; r++) q[r] = o->rot[r][0] * d0 + o->rot[r][1] * d1 + o->rot[r][2] * d2;
    double t = q[2] * o->inv_axes[2];
    double lim = o->mod_max + slack;
    if (t > lim || t < -lim) return 0;
    double sc = 1.0 / (1.0 + o->taper * t);
    q[0] = (q[0] - o->bend * t * t * o->pub.axes[0]) * sc;
    q[1] = q[1] * sc;
    return 1;
}

/* Shape level of deformed local point q: < 1 inside, 1 on the surface. */
static double organ_level(const organ_t *o, const double q[3]) {
    double v0 = q[0] * o->inv_axes[0], v1 = q[1] * o->inv_axes[1], v2 = q[2] * o->inv_axes[2];
    double r2 = v0 * v0 + v1 * v1 + v2 * v2;
    if (r2 == 0) return 0;
    double r = sqrt(r2), inv_r = 1.0 / r;
    return r / modulation(o->coef, v0 * inv_r, v1 * inv_r, v2 * inv_r);
}

static int in_box(const organ_t *o, const double p[3], double pad) {
    return p[0] >= o->lo[0] - pad && p[0] <= o->hi[0] + pad && p[1] >= o->lo[1] - pad &&
           p[1] <= o->hi[1] + pad && p[2] >= o->lo[2] - pad && p[2] <= o->hi[2] + pad;
}

static int organ_inside(const organ_t *o, const double p[3]) {
    if (!in_box(o, p, 0)) return 0;
    double q[3];
    if (!organ_local(o, p, 0, q)) return 0;
    double v0 = q[0] * o->inv_axes[0], v1 = q[1] * o->inv_axes[1], v2 = q[2] * o->inv_axes[2];
    double r2 = v0 * v0 + v1 * v1 + v2 * v2;
    if (r2 >= o->mod_max * o->mod_max) return 0;
    if (r2 < o->mod_min * o->mod_min) return 1;
    return organ_level(o, q) < 1.0;
}

/* Inside the shape or within about `delta` mm of its surface. */
static int organ_near(const organ_t *o, const double p[3], double delta) {
    if (!in_box(o, p, delta)) return 0;
    double q[3];
    if (!organ_local(o, p, delta * o->inv_axes[2], q)) return 0;
    double f = organ_level(o, q);
    if (f < 1.0) return 1;
    double s = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]);
    return s * (1.0 - 1.0 / f) < delta;
}

static void quat_mul(double out[4], const double a[4], const double b[4]) {
    out[0] = a[0] * b[0] - a[1] * b[1] - a[2] * b[2] - a[3] * b[3];
    out[1] = a[0] * b[1] + a[1] * b[0] + a[2] * b[3] - a[3] * b[2];
    out[2] = a[0] * b[2] - a[1] * b[3] + a[2] * b[0] + a[3] * b[1];
    out[3] = a[0] * b[3] + a[1] * b[2] - a[2] * b[1] + a[3] * b[0];
}

/* rot = R^T for the rotation R(q) mapping local to world. */
static void quat_to_rows(const double qin[4], double rot[3][3]) {
    double n = sqrt(qin[0] * qin[0] + qin[1] * qin[1] + qin[2] * qin[2] + qin[3] * qin[3]);
    double w = qin[0] / n, x = qin[1] / n, y = qin[2] / n, z = qin[3] / n;
    double R[3][3] = {{1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)},
                      {2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)},
                      {2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)}};
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 3; c++) rot[r][c] = R[c][r];
}

/* A random rotation by at most about 2*atan(tilt), drawn without trigonometry. */
static void random_tilt(mp_rng_t *r, double tilt, double q[4]) {
    double v[3], n2;
    do {
        for (int i = 0; i < 3; i++) v[i] = usym(r, 1.0);
        n2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    } while (n2 > 1.0);
    q[0] = 1.0;
    for (int i = 0; i < 3; i++) q[i + 1] = tilt * v[i];
}

/* Derived quantities of an organ: modulation bound, bounding box. */
static void organ_finish(organ_t *o) {
    double m = 1.0;
    for (int i = 0; i < N_MOD; i++) m += fabs(o->coef[i]) * mod_basis_max[i];
    o->mod_max = m;
    o->mod_min = 2.0 - m > 0.5 ? 2.0 - m : 0.5;
    const double *a = o->pub.axes;
    double tp = fabs(o->taper) * m;
    double lim[3] = {a[0] * m * (1 + tp) + fabs(o->bend) * m * m * a[0], a[1] * m * (1 + tp), a[2] * m};
    for (int i = 0; i < 3; i++) {
        o->inv_axes[i] = 1.0 / a[i];
        double h = 0;
        for (int r = 0; r < 3; r++) h += fabs(o->rot[r][i]) * lim[r];
        o->lo[i] = o->pub.center[i] - h;
        o->hi[i] = o->pub.center[i] + h;
    }
}

/* ---- body and spine ---- */

enum { Z_AIR, Z_FAT, Z_MUSCLE, Z_CAVITY };

/* Which layer of the body p lies in. The level is r / m(direction) for the
 * modulated ellipse, cut by the flat back; most points are decided from r^2
 * and the bounds of m without the square root and divisions. */
static int body_zone(const body_t *b, const double p[3]) {
    double inv_s = 1.0 - b->taper * p[2] * b->inv_zh; /* the body's scale is 1 / inv_s */
    double dx = (p[0] - b->cx) * b->inv_ax * inv_s, dy = (p[1] - b->cy) * b->inv_ay * inv_s;
    double r2 = dx * dx + dy * dy;
    double back = -dy * b->inv_flat;
    double cav_r = b->cav_lvl * b->mod_lo;
    if (r2 < cav_r * cav_r && back < b->cav_lvl) return Z_CAVITY;
    if (r2 >= b->mod_hi * b->mod_hi || back >= 1.0) return Z_AIR;
    double lvl = 0;
    if (r2 > 0) {
        double r = sqrt(r2), ux = dx / r, uy = dy / r;
        lvl = r / (1 + b->mod[0] * ux + b->mod[1] * uy + b->mod[2] * (ux * ux - uy * uy) + b->mod[3] * ux * uy);
    }
    if (back > lvl) lvl = back;
    return lvl >= 1.0 ? Z_AIR : lvl >= b->fat_lvl ? Z_FAT : lvl >= b->cav_lvl ? Z_MUSCLE : Z_CAVITY;
}

static double sq(double x) { return x * x; }

static int spine_tissue(const spine_t *s, const double p[3]) {
    double zn = p[2] * s->inv_zh;
    double dx = p[0] - (s->x + s->curve * zn * zn), dy = p[1] - (s->y + s->lordosis * zn * zn);
    if (dx > s->xmax || dx < -s->xmax || dy > s->ymax || dy < s->ymin) return T_NONE;
    double e = sq(dx * s->inv_rx) + sq(dy * s->inv_ry);
    if (e < 1) {
        double zz = (p[2] - s->phase) * s->period_inv;
        if (zz - floor(zz) < s->disc_frac) return T_DISC;
        return e > s->cort_e ? T_CORTEX : T_CANC;
    }
    double rr = dx * dx + sq(dy - s->canal_dy);
    if (rr < s->canal_r2) return T_CANAL;
    if (rr < s->ring_r2) return T_CORTEX;
    if (sq(dx * s->inv_sp_rx) + sq((dy - s->sp_dy) * s->inv_sp_ry) < 1) return T_CORTEX;
    double ax = fabs(dx);
    if (sq((ax - s->para_dx) * s->inv_para_rx) + sq((dy - s->para_dy) * s->inv_para_ry) < 1) return T_MUSCLE;
    if (sq((ax - s->psoas_dx) * s->inv_psoas_rx) + sq((dy - s->psoas_dy) * s->inv_psoas_ry) < 1) return T_MUSCLE;
    return T_NONE;
}

static int tissue_at(const mp_synth_layout_t *L, const double p[3]) {
    int zone = body_zone(&L->body, p);
    if (zone == Z_AIR) return T_AIR;
    int t = spine_tissue(&L->spine, p);
    if (t != T_NONE) return t;
    if (zone == Z_FAT) return T_FAT;
    if (zone == Z_MUSCLE) return T_MUSCLE;
    for (int k = 0; k < L->n_organs; k++) {
        int i = L->eval_order[k];
        if (organ_inside(&L->org[i], p)) return T_ORGAN0 + i;
    }
    for (int i = 0; i < L->n_organs; i++) {
        const organ_t *o = &L->org[i];
        if (o->capsule > 0 && organ_near(o, p, o->capsule)) return T_VFAT;
    }
    return bumps_eval(&L->vfat, p) > L->vfat_thr ? T_VFAT : T_SOFT;
}

static void make_body(mp_synth_layout_t *L, mp_rng_t *r) {
    body_t *b = &L->body;
    double S = L->S;
    b->ax = urange(r, 0.86, 0.94) * S;
    b->ay = urange(r, 0.64, 0.72) * S;
    b->cx = usym(r, 0.03) * S;
    b->cy = urange(r, -0.06, 0.0) * S;
    b->taper = usym(r, 0.05);
    b->inv_zh = 1.0 / L->Z;
    for (int i = 0; i < 4; i++) b->mod[i] = usym(r, 0.04);
    b->flat = urange(r, 0.86, 0.94);
    b->inv_flat = 1.0 / b->flat;
    double fat_mm = urange(r, 0.06, 0.12) * S, muscle_mm = urange(r, 0.035, 0.055) * S;
    double rad = b->ay < b->ax ? b->ay : b->ax;
    b->fat_lvl = 1.0 - fat_mm / rad;
    b->cav_lvl = b->fat_lvl - muscle_mm / rad;
    b->inv_ax = 1.0 / b->ax;
    b->inv_ay = 1.0 / b->ay;
    double msum = 0;
    for (int i = 0; i < 4; i++) msum += fabs(b->mod[i]);
    b->mod_lo = 1.0 - msum;
    b->mod_hi = 1.0 + msum;
    /* Organs scale with the cavity: nominal ax 0.90 S, ay 0.68 S, level 0.80. */
    L->cav_scale = b->cav_lvl * (b->ax / (0.90 * S) + b->ay / (0.68 * S)) / (2 * 0.80);
}

static void make_spine(mp_synth_layout_t *L, mp_rng_t *r) {
    spine_t *s = &L->spine;
    const body_t *b = &L->body;
    double S = L->S;
    double rx = urange(r, 0.11, 0.13) * S, ry = urange(r, 0.09, 0.11) * S;
    double canal_r = urange(r, 0.045, 0.055) * S, lam = urange(r, 0.025, 0.035) * S;
    double sp_rx = 0.03 * S, sp_ry = urange(r, 0.045, 0.055) * S;
    s->inv_zh = 1.0 / L->Z;
    s->x = b->cx + usym(r, 0.02) * S;
    /* The back (inner edge of the muscle wall) is at dy = -flat * cav_lvl. */
    double back = b->cy - b->flat * b->cav_lvl * b->ay;
    s->y = back + urange(r, 0.24, 0.27) * S;
    s->curve = usym(r, 0.02) * S;
    s->lordosis = usym(r, 0.02) * S;
    s->ry = ry;
    s->inv_rx = 1 / rx;
    s->inv_ry = 1 / ry;
    double cort = urange(r, 0.012, 0.018) * S;
    s->cort_e = sq(1 - cort / ry);
    s->period_inv = 1.0 / (urange(r, 0.26, 0.32) * S);
    s->phase = usym(r, 0.5) * S;
    s->disc_frac = urange(r, 0.18, 0.24);
    s->canal_dy = -(ry + canal_r + lam * 0.5);
    s->canal_r2 = canal_r * canal_r;
    s->ring_r2 = sq(canal_r + lam);
    s->sp_dy = s->canal_dy - canal_r - lam - sp_ry * 0.8;
    s->inv_sp_rx = 1 / sp_rx;
    s->inv_sp_ry = 1 / sp_ry;
    double prx = urange(r, 0.09, 0.11) * S, pry = urange(r, 0.11, 0.13) * S;
    s->para_dx = canal_r + lam + prx * 0.8;
    s->para_dy = s->canal_dy - 0.02 * S;
    s->inv_para_rx = 1 / prx;
    s->inv_para_ry = 1 / pry;
    double psx = urange(r, 0.045, 0.06) * S, psy = urange(r, 0.05, 0.07) * S;
    s->psoas_dx = rx + psx * 0.7;
    s->psoas_dy = -0.2 * ry;
    s->inv_psoas_rx = 1 / psx;
    s->inv_psoas_ry = 1 / psy;
    double xm = rx;
    if (s->para_dx + prx > xm) xm = s->para_dx + prx;
    if (s->psoas_dx + psx > xm) xm = s->psoas_dx + psx;
    s->xmax = xm;
    s->ymax = ry > s->psoas_dy + psy ? ry : s->psoas_dy + psy;
    double ymin = s->sp_dy - sp_ry;
    if (s->para_dy - pry < ymin) ymin = s->para_dy - pry;
    s->ymin = ymin;
}

/* Draws one candidate instance of template `t`. */
static void sample_organ(const mp_synth_layout_t *L, mp_rng_t *r, const organ_tpl_t *t, int label, int mirror,
                         int parent, double shrink, organ_t *o) {
    memset(o, 0, sizeof *o);
    o->pub.label = label;
    o->pub.parent = parent;
    double off[3];
    for (int i = 0; i < 3; i++) off[i] = t->pos[i] + usym(r, t->jitter[i]);
    if (t->paired && !mirror) off[2] += t->pair_dz;
    if (parent >= 0) {
        const organ_t *po = &L->org[parent];
        for (int i = 0; i < 3; i++) o->pub.center[i] = po->pub.center[i] + off[i] * po->pub.axes[i];
    } else {
        double ox = L->body.cx, oy = L->body.cy;
        if (t->at_spine) {
            ox = L->spine.x;
            oy = L->spine.y + L->spine.ry;
        }
        double k = t->at_spine ? 1.0 : L->cav_scale;
        o->pub.center[0] = ox + (mirror ? -off[0] : off[0]) * L->S * k;
        o->pub.center[1] = oy + off[1] * L->S * k;
        o->pub.center[2] = off[2] * L->Z;
    }
    double g = urange(r, 0.85, 1.15) * shrink * (parent >= 0 || t->at_spine ? 1.0 : L->cav_scale);
    for (int i = 0; i < 3; i++) o->pub.axes[i] = t->axes[i] * L->S_org * g * urange(r, 0.92, 1.08);
    if (t->tube) o->pub.axes[2] = 3.0 * (L->Z > L->S ? L->Z : L->S);
    double base[4] = {t->quat[0], t->quat[1], t->quat[2], t->quat[3]};
    if (mirror) { /* reflect through the x = 0 plane */
        base[2] = -base[2];
        base[3] = -base[3];
    }
    double tilt[4], q[4];
    random_tilt(r, t->tilt, tilt);
    quat_mul(q, tilt, base);
    quat_to_rows(q, o->rot);
    for (int i = 0; i < N_MOD; i++) o->coef[i] = usym(r, mod_coef_amp[i] * t->mod_amp);
    o->bend = usym(r, t->bend);
    o->taper = t->taper0 + usym(r, t->taper);
    o->pub.hu = t->hu + usym(r, t->hu_jitter);
    o->tex = t->tex;
    o->capsule = t->capsule * L->S_org * urange(r, 0.7, 1.3);
    organ_finish(o);
}

/* Checks a candidate at the voxel centres around it: its margin must stay in
 * the cavity (or inside its parent), clear of the spine and of every organ
 * placed before. Returns the number of voxel centres inside it, or -1. */
static int64_t candidate_check(const mp_synth_layout_t *L, const organ_t *o) {
    int64_t lo[3], hi[3];
    double d = L->margin + o->capsule;
    for (int a = 0; a < 3; a++) {
        double s = L->p.spacing[a];
        double l = (o->lo[a] - d - L->origin[a]) / s, h = (o->hi[a] + d - L->origin[a]) / s;
        if (h < 0 || l > (double)(L->p.size[a] - 1)) return 0;
        lo[a] = l < 0 ? 0 : (int64_t)l;
        hi[a] = h >= (double)(L->p.size[a] - 1) ? L->p.size[a] - 1 : (int64_t)h + 1;
    }
    int parent = o->pub.parent;
    int64_t inside = 0;
    for (int64_t k = lo[2]; k <= hi[2]; k++)
        for (int64_t j = lo[1]; j <= hi[1]; j++)
            for (int64_t i = lo[0]; i <= hi[0]; i++) {
                double p[3];
                voxel_world(L, (double)i, (double)j, (double)k, p);
                if (!organ_near(o, p, d)) continue;
                int in = organ_inside(o, p);
                inside += in;
                if (parent >= 0) {
                    if (!organ_inside(&L->org[parent], p)) return -1;
                } else {
                    if (in && body_zone(&L->body, p) != Z_CAVITY) return -1;
                    if (spine_tissue(&L->spine, p) != T_NONE) return -1;
                }
                for (int m = 0; m < L->n_organs; m++) {
                    if (m == parent) continue;
                    const organ_t *q = &L->org[m];
                    if (organ_inside(q, p)) return -1;
                    /* Keep clear of the other organ's fat capsule too. */
                    if (in && q->capsule > 0 && organ_near(q, p, L->margin + q->capsule)) return -1;
                }
            }
    return inside;
}

/* Places one instance by rejection, shrinking it every 10 failures. Returns 1
 * when placed, 0 when no room was found. */
static int place(mp_synth_layout_t *L, mp_rng_t *r, const organ_tpl_t *t, int label, int mirror, int parent) {
    double shrink = 1.0;
    for (int attempt = 0; attempt < 80; attempt++) {
        if (attempt > 0 && attempt % 10 == 0) shrink *= 0.9;
        organ_t o;
        sample_organ(L, r, t, label, mirror, parent, shrink, &o);
        if (candidate_check(L, &o) > 0) {
            L->org[L->n_organs++] = o;
            mp_log(MP_LOG_DEBUG, "synth case %lld: %s placed after %d attempts", (long long)L->case_index,
                   t->name, attempt + 1);
            return 1;
        }
    }
    mp_log(MP_LOG_DEBUG, "synth case %lld: no room for %s", (long long)L->case_index, t->name);
    return 0;
}

static void make_tissues(mp_synth_layout_t *L, mp_rng_t *r) {
    L->hu[T_AIR] = -1000;
    L->hu[T_FAT] = urange(r, -115, -85);
    L->hu[T_MUSCLE] = urange(r, 45, 55);
    L->hu[T_SOFT] = urange(r, 35, 45);
    L->hu[T_VFAT] = L->hu[T_FAT] + urange(r, 0, 20);
    L->hu[T_CORTEX] = urange(r, 700, 1000);
    L->hu[T_CANC] = urange(r, 180, 280);
    L->hu[T_DISC] = urange(r, 70, 100);
    L->hu[T_CANAL] = urange(r, 5, 20);
    static const double tex[T_ORGAN0] = {0, 8, 6, 8, 8, 60, 30, 5, 3};
    for (int i = 0; i < T_ORGAN0; i++) L->tex[i] = tex[i];
}

static int make_organs(mp_synth_layout_t *L, mp_rng_t *r) {
    int slot_of[MP_SYNTH_MAX_CLASSES];
    for (int i = 0; i < MP_SYNTH_MAX_CLASSES; i++) slot_of[i] = -1;
    for (int n = 0; n < MP_SYNTH_MAX_CLASSES; n++) {
        int c = place_order[n];
        if (c >= L->p.classes) continue;
        const organ_tpl_t *t = &templates[c];
        int parent = t->parent >= 0 ? slot_of[t->parent] : -1;
        slot_of[c] = L->n_organs;
        for (int side = 0; side <= t->paired; side++) {
            if (!place(L, r, t, c + 1, side, parent))
                return mp_error_set(MP_ERR_ARG,
                                    "case %lld: no room for organ '%s' in a %lldx%lldx%lld volume of "
                                    "%gx%gx%g mm; use a larger size or fewer classes",
                                    (long long)L->case_index, t->name, (long long)L->p.size[0],
                                    (long long)L->p.size[1], (long long)L->p.size[2], L->p.spacing[0],
                                    L->p.spacing[1], L->p.spacing[2]);
        }
    }
    int n_gas = (int)mp_rng_below(r, MAX_GAS + 1);
    for (int g = 0; g < n_gas; g++) place(L, r, &gas_tpl, 0, 0, -1);
    /* Evaluation: children before parents, i.e. reverse placement order. */
    for (int i = 0; i < L->n_organs; i++) {
        L->eval_order[i] = L->n_organs - 1 - i;
        const organ_t *o = &L->org[i];
        L->hu[T_ORGAN0 + i] = o->pub.hu;
        L->tex[T_ORGAN0 + i] = o->tex;
        L->label_of[T_ORGAN0 + i] = (uint8_t)o->pub.label;
    }
    return MP_OK;
}

int mp_synth_layout_create(mp_synth_layout_t **out, const mp_synth_params_t *p, int64_t case_index) {
    *out = NULL;
    int rc = mp_synth_params_check(p);
    if (rc) return rc;
    if (case_index < 0) return mp_error_set(MP_ERR_ARG, "case index %lld is negative", (long long)case_index);
    mp_synth_layout_t *L = calloc(1, sizeof *L);
    if (!L) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    L->p = *p;
    L->case_index = case_index;
    double fov[3];
    for (int a = 0; a < 3; a++) {
        fov[a] = (double)p->size[a] * p->spacing[a];
        L->origin[a] = -0.5 * (double)(p->size[a] - 1) * p->spacing[a];
    }
    L->S = 0.5 * (fov[0] < fov[1] ? fov[0] : fov[1]);
    L->Z = 0.5 * fov[2];
    L->S_org = L->S < L->Z ? L->S : L->Z;
    double ms = p->spacing[0];
    for (int a = 1; a < 3; a++)
        if (p->spacing[a] > ms) ms = p->spacing[a];
    L->margin = ms;

    mp_rng_t r;
    mp_rng_init(&r, p->seed, mp_rng_stream_id((uint64_t)case_index, 1, MP_SYNTH_VERSION));
    make_body(L, &r);
    make_spine(L, &r);
    make_tissues(L, &r);
    int n_tex[3] = {8, 8, 6};
    bumps_init(&L->vfat, L, MAX_BUMPS, &r);
    field_init(&L->texture, L, n_tex, &r);
    L->vfat_thr = urange(&r, 0.04, 0.10);
    L->bias_cup = urange(&r, -0.008, 0.0);
    /* Relative gain change per mm: up to 0.4% over S (in-plane) or Z. */
    for (int a = 0; a < 3; a++) L->bias_grad[a] = usym(&r, 0.004) / (a < 2 ? L->S : L->Z);
    L->bias_off = usym(&r, 5.0);
    L->noise_sd = urange(&r, p->noise_hu[0], p->noise_hu[1]);
    L->noise_stream = mp_rng_stream_id((uint64_t)case_index, 2, MP_SYNTH_VERSION);
    rc = make_organs(L, &r);
    if (rc) {
        free(L);
        return rc;
    }
    *out = L;
    return MP_OK;
}

void mp_synth_layout_free(mp_synth_layout_t *l) { free(l); }

int mp_synth_layout_organ_count(const mp_synth_layout_t *l) { return l->n_organs; }

int mp_synth_layout_organ(const mp_synth_layout_t *l, int i, mp_synth_organ_t *o) {
    if (i < 0 || i >= l->n_organs) return mp_error_set(MP_ERR_ARG, "organ index %d out of 0..%d", i, l->n_organs - 1);
    *o = l->org[i].pub;
    return MP_OK;
}

int mp_synth_layout_inside(const mp_synth_layout_t *l, int i, const double world[3]) {
    if (i < 0 || i >= l->n_organs) return 0;
    return organ_inside(&l->org[i], world);
}

/* ---------------------------------------------------------------- render */

typedef struct {
    const mp_synth_layout_t *L;
    int64_t n[3];
    uint8_t *ids;
    int16_t *img;
    uint8_t *lab;
    double *scratch;  /* two slices per worker */
    int nsub[3];
} render_ctx_t;

static void pass_ids(void *cp, int64_t z0, int64_t z1, int worker) {
    (void)worker;
    render_ctx_t *c = cp;
    const mp_synth_layout_t *L = c->L;
    for (int64_t k = z0; k < z1; k++)
        for (int64_t j = 0; j < c->n[1]; j++)
            for (int64_t i = 0; i < c->n[0]; i++) {
                double p[3];
                voxel_world(L, (double)i, (double)j, (double)k, p);
                int64_t idx = i + c->n[0] * (j + c->n[1] * k);
                int id = tissue_at(L, p);
                c->ids[idx] = (uint8_t)id;
                c->lab[idx] = L->label_of[id];
            }
}

/* 1 when voxel (i, j, k) and its 26 neighbours share one tissue. */
static int uniform_at(const render_ctx_t *c, int64_t i, int64_t j, int64_t k) {
    const int64_t *n = c->n;
    uint8_t id = c->ids[i + n[0] * (j + n[1] * k)];
    int64_t i0 = i > 0 ? i - 1 : i, i1 = i < n[0] - 1 ? i + 1 : i;
    int64_t j0 = j > 0 ? j - 1 : j, j1 = j < n[1] - 1 ? j + 1 : j;
    int64_t k0 = k > 0 ? k - 1 : k, k1 = k < n[2] - 1 ? k + 1 : k;
    for (int64_t kk = k0; kk <= k1; kk++)
        for (int64_t jj = j0; jj <= j1; jj++) {
            const uint8_t *row = c->ids + n[0] * (jj + n[1] * kk);
            for (int64_t ii = i0; ii <= i1; ii++)
                if (row[ii] != id) return 0;
        }
    return 1;
}

/* Mean intensity over the voxel's subsamples (partial volume). */
static double supersample(const render_ctx_t *c, const double p[3], double tex_value) {
    const mp_synth_layout_t *L = c->L;
    double s = 0;
    for (int a = 0; a < c->nsub[2]; a++)
        for (int b = 0; b < c->nsub[1]; b++)
            for (int d = 0; d < c->nsub[0]; d++) {
                double q[3] = {p[0] + ((d + 0.5) / c->nsub[0] - 0.5) * L->p.spacing[0],
                               p[1] + ((b + 0.5) / c->nsub[1] - 0.5) * L->p.spacing[1],
                               p[2] + ((a + 0.5) / c->nsub[2] - 0.5) * L->p.spacing[2]};
                int t = tissue_at(L, q);
                s += L->hu[t] + L->tex[t] * tex_value;
            }
    return s / (double)(c->nsub[0] * c->nsub[1] * c->nsub[2]);
}

/* [1 2 1] / 4 along x (step 1) or y (step nx), edges replicated. */
static void blur_121(const double *in, double *out, int64_t nx, int64_t ny, int along_y) {
    for (int64_t j = 0; j < ny; j++)
        for (int64_t i = 0; i < nx; i++) {
            int64_t idx = j * nx + i;
            double a, b;
            if (along_y) {
                a = in[j > 0 ? idx - nx : idx];
                b = in[j < ny - 1 ? idx + nx : idx];
            } else {
                a = in[i > 0 ? idx - 1 : idx];
                b = in[i < nx - 1 ? idx + 1 : idx];
            }
            out[idx] = 0.25 * (a + 2.0 * in[idx] + b);
        }
}

/* Approximately standard normal noise for voxel `idx`: the sum of the four
 * uniform words of one Philox block, standardised (Irwin-Hall, |z| < 3.47). */
static double voxel_noise(const mp_synth_layout_t *L, int64_t idx) {
    uint32_t out[4];
    uint64_t v = (uint64_t)idx, s = L->noise_stream, seed = L->p.seed;
    uint32_t ctr[4] = {(uint32_t)v, (uint32_t)(v >> 32), (uint32_t)s, (uint32_t)(s >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    mp_philox4x32(out, ctr, key);
    double sum = (double)out[0] + (double)out[1] + (double)out[2] + (double)out[3];
    return (sum * (1.0 / 4294967296.0) - 2.0) * 1.7320508075688772;
}

static int16_t round_hu(double v) {
    if (v < -1024) v = -1024;
    if (v > 3071) v = 3071;
    return (int16_t)(v >= 0 ? (int)(v + 0.5) : -(int)(-v + 0.5));
}

/* Bias field, noise and rounding of one slice. */
static void finish_slice(const render_ctx_t *c, const double *buf, int64_t k) {
    const mp_synth_layout_t *L = c->L;
    const body_t *b = &L->body;
    for (int64_t j = 0; j < c->n[1]; j++)
        for (int64_t i = 0; i < c->n[0]; i++) {
            double p[3];
            voxel_world(L, (double)i, (double)j, (double)k, p);
            double rn2 = sq((p[0] - b->cx) * b->inv_ax) + sq((p[1] - b->cy) * b->inv_ay);
            if (rn2 > 1) rn2 = 1;
            double f = 1.0 + L->bias_cup * (1.0 - rn2) + L->bias_grad[0] * p[0] + L->bias_grad[1] * p[1] +
                       L->bias_grad[2] * p[2];
            int64_t idx = i + c->n[0] * (j + c->n[1] * k);
            double v = (buf[j * c->n[0] + i] + 1000.0) * f - 1000.0 + L->bias_off;
            if (L->noise_sd > 0) v += L->noise_sd * voxel_noise(L, idx);
            c->img[idx] = round_hu(v);
        }
}

static void pass_hu(void *cp, int64_t z0, int64_t z1, int worker) {
    render_ctx_t *c = cp;
    const mp_synth_layout_t *L = c->L;
    int64_t plane = c->n[0] * c->n[1];
    double *buf = c->scratch + (size_t)worker * 2 * (size_t)plane, *tmp = buf + plane;
    for (int64_t k = z0; k < z1; k++) {
        for (int64_t j = 0; j < c->n[1]; j++)
            for (int64_t i = 0; i < c->n[0]; i++) {
                double p[3];
                voxel_world(L, (double)i, (double)j, (double)k, p);
                int id = c->ids[i + c->n[0] * (j + c->n[1] * k)];
                double tv = field_eval(&L->texture, p);
                if (!L->p.partial_volume || uniform_at(c, i, j, k)) buf[j * c->n[0] + i] = L->hu[id] + L->tex[id] * tv;
                else buf[j * c->n[0] + i] = supersample(c, p, tv);
            }
        if (L->p.partial_volume) {
            blur_121(buf, tmp, c->n[0], c->n[1], 0);
            blur_121(tmp, buf, c->n[0], c->n[1], 1);
        }
        finish_slice(c, buf, k);
    }
}

int mp_synth_render(const mp_synth_layout_t *L, mp_vol_t **image, mp_vol_t **label, mp_pool_t *pool) {
    *image = *label = NULL;
    const mp_synth_params_t *p = &L->p;
    int64_t dim[4] = {p->size[0], p->size[1], p->size[2], 1};
    mp_vol_t *img = NULL, *lab = NULL;
    int rc = mp_vol_create(&img, dim, MP_DTYPE_I16);
    if (!rc) rc = mp_vol_create(&lab, dim, MP_DTYPE_U8);
    render_ctx_t c;
    memset(&c, 0, sizeof c);
    int threads = mp_pool_threads(pool);
    size_t plane = (size_t)(dim[0] * dim[1]);
    if (!rc) {
        c.ids = mp_alloc((size_t)mp_vol_voxels(lab));
        c.scratch = malloc((size_t)threads * 2 * plane * sizeof(double));
        if (!c.ids || !c.scratch) rc = mp_error_set(MP_ERR_NOMEM, "synth: out of memory for a %lldx%lldx%lld case",
                                                    (long long)dim[0], (long long)dim[1], (long long)dim[2]);
    }
    if (rc) {
        mp_free(c.ids);
        free(c.scratch);
        mp_vol_free(img);
        mp_vol_free(lab);
        return rc;
    }
    for (int a = 0; a < 3; a++) c.n[a] = dim[a];
    c.L = L;
    c.img = img->data;
    c.lab = lab->data;
    double inplane = p->spacing[0] < p->spacing[1] ? p->spacing[0] : p->spacing[1];
    double ratio = p->spacing[2] / inplane;
    c.nsub[0] = c.nsub[1] = 2;
    c.nsub[2] = ratio <= 1.5 ? 2 : ratio <= 2.5 ? 3 : 4;
    mp_pool_parallel_for(pool, dim[2], pass_ids, &c);
    mp_pool_parallel_for(pool, dim[2], pass_hu, &c);
    mp_free(c.ids);
    free(c.scratch);

    mp_vol_t *vols[2] = {img, lab};
    for (int v = 0; v < 2; v++) {
        mp_vol_set_spacing(vols[v], p->spacing, L->origin);
        snprintf(vols[v]->meta.descrip, sizeof vols[v]->meta.descrip, "medpipe synth v%d seed %llu case %lld",
                 MP_SYNTH_VERSION, (unsigned long long)p->seed, (long long)L->case_index);
    }
    lab->meta.intent_code = 1002; /* NIFTI_INTENT_LABEL */
    *image = img;
    *label = lab;
    return MP_OK;
}

int mp_synth_case(mp_vol_t **image, mp_vol_t **label, const mp_synth_params_t *p, int64_t case_index,
                  mp_pool_t *pool) {
    *image = *label = NULL;
    mp_synth_layout_t *L;
    int rc = mp_synth_layout_create(&L, p, case_index);
    if (rc) return rc;
    rc = mp_synth_render(L, image, label, pool);
    mp_synth_layout_free(L);
    return rc;
}

/* ---------------------------------------------------------------- dataset */

static mode_t current_umask(void) {
    mode_t m = umask(0);
    umask(m);
    return m;
}

/* malloc'ed printf. */
static char *str_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *str_fmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

typedef struct {
    const mp_synth_params_t *p;
    const char *dir;          /* the temporary folder being filled */
    mp_pool_t *case_pool;     /* pool for the inside of a case (sequential mode) */
    pthread_mutex_t mu;
    int64_t done, total;
    int failed;
    int64_t failed_case;      /* lowest failing case index */
    int failed_rc;
    char failed_msg[512];
    mp_synth_progress_fn progress;
    void *user;
} write_ctx_t;

static int write_case(write_ctx_t *c, int64_t index) {
    mp_vol_t *img, *lab;
    int rc = mp_synth_case(&img, &lab, c->p, index, c->case_pool);
    if (rc) return rc;
    char name[64];
    mp_synth_case_name(name, sizeof name, index);
    int train = index < c->p->train_cases;
    char *ipath = str_fmt("%s/%s/%s_0000.nii.gz", c->dir, train ? "imagesTr" : "imagesTs", name);
    char *lpath = str_fmt("%s/%s/%s.nii.gz", c->dir, train ? "labelsTr" : "labelsTs", name);
    if (!ipath || !lpath) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) rc = mp_image_write(ipath, img, NULL);
    if (!rc) rc = mp_image_write(lpath, lab, NULL);
    free(ipath);
    free(lpath);
    mp_vol_free(img);
    mp_vol_free(lab);
    return rc;
}

static void write_range(void *cp, int64_t begin, int64_t end, int worker) {
    (void)worker;
    write_ctx_t *c = cp;
    for (int64_t i = begin; i < end; i++) {
        pthread_mutex_lock(&c->mu);
        int stop = c->failed;
        pthread_mutex_unlock(&c->mu);
        if (stop) return;
        int rc = write_case(c, i);
        pthread_mutex_lock(&c->mu);
        if (rc) {
            if (!c->failed || i < c->failed_case) {
                c->failed_case = i;
                c->failed_rc = rc;
                snprintf(c->failed_msg, sizeof c->failed_msg, "%s", mp_error_message());
            }
            c->failed = 1;
        } else {
            c->done++;
            if (c->progress) c->progress(c->user, c->done, c->total);
        }
        pthread_mutex_unlock(&c->mu);
        if (rc) return;
    }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a folder this module created, depth first, not following links. */
static void remove_tree(const char *path) {
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The medpipe_synth block and other extra keys of dataset.json. */
static char *synth_extra_json(const mp_synth_params_t *p) {
    cJSON *root = cJSON_CreateObject();
    cJSON *s = root ? cJSON_AddObjectToObject(root, "medpipe_synth") : NULL;
    int ok = s && cJSON_AddNumberToObject(root, "numTest", (double)p->test_cases) &&
             cJSON_AddNumberToObject(s, "version", MP_SYNTH_VERSION);
    /* JSON numbers are doubles: seeds beyond 2^53 are kept exactly as text. */
    if (ok && p->seed < (1ull << 53)) ok = cJSON_AddNumberToObject(s, "seed", (double)p->seed) != NULL;
    else if (ok) {
        char buf[32];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)p->seed);
        ok = cJSON_AddStringToObject(s, "seed", buf) != NULL;
    }
    double size[3] = {(double)p->size[0], (double)p->size[1], (double)p->size[2]};
    cJSON *a = ok ? cJSON_CreateDoubleArray(size, 3) : NULL, *b = a ? cJSON_CreateDoubleArray(p->spacing, 3) : NULL;
    cJSON *n = b ? cJSON_CreateDoubleArray(p->noise_hu, 2) : NULL;
    ok = ok && a && cJSON_AddItemToObject(s, "size", a);
    if (!ok) cJSON_Delete(a);
    ok = ok && b && cJSON_AddItemToObject(s, "spacing", b);
    if (!ok) cJSON_Delete(b);
    ok = ok && n && cJSON_AddItemToObject(s, "noise_hu", n);
    if (!ok) cJSON_Delete(n);
    ok = ok && cJSON_AddNumberToObject(s, "classes", p->classes) &&
         cJSON_AddNumberToObject(s, "train_cases", (double)p->train_cases) &&
         cJSON_AddNumberToObject(s, "test_cases", (double)p->test_cases) &&
         cJSON_AddNumberToObject(s, "first_test_case", (double)p->train_cases) &&
         cJSON_AddBoolToObject(s, "partial_volume", p->partial_volume);
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

static int write_dataset_json(const char *dir, const mp_synth_params_t *p) {
    mp_dataset_t *ds;
    int rc = mp_dataset_create(&ds);
    if (rc) return rc;
    char desc[256];
    snprintf(desc, sizeof desc,
             "Synthetic CT-like abdominal phantoms (int16 HU, %d organ classes), generated by medpipe synth "
             "(generator version %d, seed %llu)", p->classes, MP_SYNTH_VERSION, (unsigned long long)p->seed);
    rc = mp_dataset_set_info(ds, "medpipe-synth-ct", desc, ".nii.gz");
    if (!rc) rc = mp_dataset_set_channel(ds, 0, "CT");
    for (int l = 0; !rc && l <= p->classes; l++) rc = mp_dataset_add_label(ds, mp_synth_class_name(l), l);
    ds->num_training = p->train_cases;
    char *extra = rc ? NULL : synth_extra_json(p);
    if (!rc && !extra) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) rc = mp_dataset_set_extra(ds, extra);
    if (!rc) rc = mp_dataset_write(ds, dir);
    free(extra);
    mp_dataset_free(ds);
    return rc;
}

/* 1 when DIR/dataset.json carries a medpipe_synth block. */
static int is_synth_dataset(const char *dir) {
    char *path = str_fmt("%s/dataset.json", dir);
    uint8_t *buf = NULL;
    size_t len = 0;
    int yes = 0;
    if (path && mp_file_read_all(path, &buf, &len) == MP_OK) {
        cJSON *root = cJSON_ParseWithLength((const char *)buf, len);
        yes = root && cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "medpipe_synth"));
        cJSON_Delete(root);
    }
    free(buf);
    free(path);
    mp_error_clear();
    return yes;
}

/* Renames the finished temporary folder to `dir`, replacing an earlier synth
 * dataset when allowed. */
static int commit_dir(const char *tmp, const char *dir, int replace) {
    if (rename(tmp, dir) == 0) return MP_OK;
    if (errno != ENOTEMPTY && errno != EEXIST)
        return mp_error_set(MP_ERR_IO, "%s: cannot move the new dataset into place: %s", dir, strerror(errno));
    if (!replace)
        return mp_error_set(MP_ERR_IO, "%s: exists and is not empty (use --force to replace an earlier synth dataset)",
                            dir);
    if (!is_synth_dataset(dir))
        return mp_error_set(MP_ERR_IO, "%s: exists, is not empty and is not a medpipe synth dataset; not replacing it",
                            dir);
    char *old = str_fmt("%s.old.XXXXXX", dir);
    if (!old) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    int rc = MP_OK;
    if (!mkdtemp(old) || rename(dir, old) != 0)
        rc = mp_error_set(MP_ERR_IO, "%s: cannot move the old dataset aside: %s", dir, strerror(errno));
    else if (rename(tmp, dir) != 0) {
        rc = mp_error_set(MP_ERR_IO, "%s: cannot move the new dataset into place: %s", dir, strerror(errno));
        rename(old, dir);
    } else {
        remove_tree(old);
    }
    if (rc) rmdir(old);
    free(old);
    return rc;
}

static int fill_dataset(const char *tmp, const mp_synth_params_t *p, mp_pool_t *pool, mp_synth_progress_fn progress,
                        void *user) {
    static const char *subs[4] = {"imagesTr", "labelsTr", "imagesTs", "labelsTs"};
    for (int i = 0; i < 4; i++) {
        char *s = str_fmt("%s/%s", tmp, subs[i]);
        int rc = s ? mp_mkdir_p(s) : mp_error_set(MP_ERR_NOMEM, "out of memory");
        free(s);
        if (rc) return rc;
    }
    write_ctx_t c;
    memset(&c, 0, sizeof c);
    c.p = p;
    c.dir = tmp;
    c.total = p->train_cases + p->test_cases;
    c.progress = progress;
    c.user = user;
    pthread_mutex_init(&c.mu, NULL);
    /* Cases in parallel; with fewer cases than threads, threads inside each case. */
    if (c.total >= mp_pool_threads(pool)) {
        mp_pool_parallel_for(pool, c.total, write_range, &c);
    } else {
        c.case_pool = pool;
        write_range(&c, 0, c.total, 0);
    }
    pthread_mutex_destroy(&c.mu);
    if (c.failed) return mp_error_set(c.failed_rc, "%s", c.failed_msg);
    return write_dataset_json(tmp, p);
}

int mp_synth_dataset_write(const char *dir, const mp_synth_params_t *p, mp_pool_t *pool, int replace,
                           mp_synth_progress_fn progress, void *user) {
    int rc = mp_synth_params_check(p);
    if (rc) return rc;
    if (!dir || !*dir) return mp_error_set(MP_ERR_ARG, "synth: no output folder given");
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    char *clean = str_fmt("%.*s", (int)n, dir);
    char *tmp = clean ? str_fmt("%s.tmp.XXXXXX", clean) : NULL;
    char *parent = clean ? str_fmt("%s", clean) : NULL;
    if (!tmp || !parent) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) {
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = '\0';
            rc = mp_mkdir_p(parent);
        }
    }
    if (!rc && !mkdtemp(tmp)) rc = mp_error_set(MP_ERR_IO, "%s: cannot create a temporary folder: %s", tmp, strerror(errno));
    else if (!rc) {
        chmod(tmp, 0777 & ~current_umask());
        rc = fill_dataset(tmp, p, pool, progress, user);
        if (!rc) rc = commit_dir(tmp, clean, replace);
        if (rc) remove_tree(tmp);
    }
    free(clean);
    free(tmp);
    free(parent);
    return rc;
}
