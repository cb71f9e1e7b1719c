/* Synthetic CT generator and dataset folders: parameters, geometry, label
 * presence and volumes, no overlap between organs, intensity statistics,
 * partial volume, determinism across runs and thread counts (in memory and
 * as .nii.gz files), dataset.json parsing/writing with its errors, and case
 * listing from nnU-Net and Decathlon layouts. */
#include "harness.h"
#include "medpipe/medpipe.h"

#include <dirent.h>
#include <ftw.h>

/* 96x96x48 voxels of 2x2x4 mm: the default 192 mm field of view at a size
 * that keeps the tests fast. */
static void test_params(mp_synth_params_t *p, int classes) {
    mp_synth_params_init(p);
    p->size[0] = 96;
    p->size[1] = 96;
    p->size[2] = 48;
    p->spacing[0] = 2;
    p->spacing[1] = 2;
    p->spacing[2] = 4;
    p->classes = classes;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const uint8_t *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t case_hash(const mp_vol_t *img, const mp_vol_t *lab) {
    uint64_t h = fnv1a(0xcbf29ce484222325ull, img->data, mp_vol_bytes(img));
    return fnv1a(h, lab->data, mp_vol_bytes(lab));
}

static void test_params_defaults_and_checks(void) {
    mp_synth_params_t p;
    mp_synth_params_init(&p);
    MP_CHECK_OK(mp_synth_params_check(&p));
    MP_CHECK(p.classes == 3 && p.train_cases == 20 && p.test_cases == 5);
    MP_CHECK(p.size[0] == 128 && p.size[1] == 128 && p.size[2] == 64);
    MP_CHECK(p.spacing[2] > p.spacing[0]); /* thick slices by default */
    mp_synth_params_t q = p;
    q.size[1] = 10;
    MP_CHECK(mp_synth_params_check(&q) == MP_ERR_ARG);
    MP_CHECK(strstr(mp_error_message(), "along y"));
    q = p;
    q.classes = 0;
    MP_CHECK(mp_synth_params_check(&q) == MP_ERR_ARG);
    q.classes = MP_SYNTH_MAX_CLASSES + 1;
    MP_CHECK(mp_synth_params_check(&q) == MP_ERR_ARG);
    q = p;
    q.spacing[0] = 0;
    MP_CHECK(mp_synth_params_check(&q) == MP_ERR_ARG);
    q = p;
    q.noise_hu[0] = 30;
    MP_CHECK(mp_synth_params_check(&q) == MP_ERR_ARG);
    q = p;
    q.train_cases = -1;
    MP_CHECK(mp_synth_params_check(&q) == MP_ERR_ARG);
    mp_vol_t *img = NULL, *lab = NULL;
    MP_CHECK(mp_synth_case(&img, &lab, &q, 0, NULL) == MP_ERR_ARG && !img && !lab);
    MP_CHECK(mp_synth_case(&img, &lab, &p, -1, NULL) == MP_ERR_ARG);
    MP_CHECK(strcmp(mp_synth_class_name(0), "background") == 0);
    MP_CHECK(strcmp(mp_synth_class_name(1), "liver") == 0);
    MP_CHECK(mp_synth_class_name(MP_SYNTH_MAX_CLASSES) != NULL);
    MP_CHECK(mp_synth_class_name(MP_SYNTH_MAX_CLASSES + 1) == NULL && mp_synth_class_name(-1) == NULL);
    char name[32];
    mp_synth_case_name(name, sizeof name, 7);
    MP_CHECK(strcmp(name, "case_007") == 0);
    mp_synth_case_name(name, sizeof name, 12345);
    MP_CHECK(strcmp(name, "case_12345") == 0);
}

static void test_case_geometry(void) {
    mp_synth_params_t p;
    test_params(&p, 3);
    p.size[0] = 100; /* non-square, to catch x/y mix-ups */
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 0, NULL));
    int ok = img->dtype == MP_DTYPE_I16 && lab->dtype == MP_DTYPE_U8 && img->scl_slope == 1 && img->scl_inter == 0;
    for (int a = 0; a < 3; a++) {
        ok &= img->dim[a] == p.size[a] && lab->dim[a] == p.size[a];
        ok &= img->spacing[a] == p.spacing[a];
        for (int b = 0; b < 4; b++) {
            double want = a == b ? p.spacing[a] : b == 3 ? -0.5 * (double)(p.size[a] - 1) * p.spacing[a] : 0;
            ok &= img->affine[a][b] == want && lab->affine[a][b] == want;
        }
    }
    char orient[4];
    mp_vol_orientation(img->affine, orient);
    int intent = lab->meta.intent_code;
    mp_vol_free(img);
    mp_vol_free(lab);
    MP_CHECK(ok);
    MP_CHECK(strcmp(orient, "RAS") == 0);
    MP_CHECK(intent == 1002);
}

/* Per label: voxel count, and count of interior voxels (label equal in the
 * 3x3x3 neighbourhood) with their intensity sum. */
typedef struct {
    int64_t count[256], interior[256];
    double sum[256];
} label_stats_t;

static void stats_of(const mp_vol_t *img, const mp_vol_t *lab, label_stats_t *s) {
    memset(s, 0, sizeof *s);
    int64_t nx = lab->dim[0], ny = lab->dim[1], nz = lab->dim[2];
    const uint8_t *l = lab->data;
    const int16_t *a = img->data;
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++) {
                int64_t i = x + nx * (y + ny * z);
                s->count[l[i]]++;
                if (x == 0 || y == 0 || z == 0 || x == nx - 1 || y == ny - 1 || z == nz - 1) continue;
                int same = 1;
                for (int dz = -1; dz <= 1 && same; dz++)
                    for (int dy = -1; dy <= 1 && same; dy++)
                        for (int dx = -1; dx <= 1; dx++)
                            if (l[i + dx + nx * (dy + ny * dz)] != l[i]) {
                                same = 0;
                                break;
                            }
                if (same) {
                    s->interior[l[i]]++;
                    s->sum[l[i]] += a[i];
                }
            }
}

/* Every class present with a volume close to its shapes' analytic volume,
 * and interior intensities close to each organ's drawn mean. */
static void test_labels_volumes_and_intensities(void) {
    mp_synth_params_t p;
    test_params(&p, MP_SYNTH_MAX_CLASSES);
    double voxel_mm3 = p.spacing[0] * p.spacing[1] * p.spacing[2];
    for (int64_t c = 0; c < 3; c++) {
        mp_vol_t *img, *lab;
        mp_synth_layout_t *L;
        MP_CHECK_OK(mp_synth_case(&img, &lab, &p, c, NULL));
        MP_CHECK_OK(mp_synth_layout_create(&L, &p, c));
        label_stats_t *s = malloc(sizeof *s);
        stats_of(img, lab, s);
        double expect[MP_SYNTH_MAX_CLASSES + 1] = {0}, hu[MP_SYNTH_MAX_CLASSES + 1] = {0};
        int tube[MP_SYNTH_MAX_CLASSES + 1] = {0};
        for (int i = 0; i < mp_synth_layout_organ_count(L); i++) {
            mp_synth_organ_t o;
            MP_CHECK_OK(mp_synth_layout_organ(L, i, &o));
            double v = 4.0 / 3.0 * 3.14159265358979 * o.axes[0] * o.axes[1] * o.axes[2] / voxel_mm3;
            expect[o.label] += v;
            if (o.parent >= 0) {
                mp_synth_organ_t par;
                MP_CHECK_OK(mp_synth_layout_organ(L, o.parent, &par));
                expect[par.label] -= v;
            }
            hu[o.label] = o.hu;
            /* A shape longer than the field of view is cut by it. */
            tube[o.label] |= 2 * o.axes[2] > (double)p.size[2] * p.spacing[2] * 0.75;
        }
        for (int l = 1; l <= p.classes; l++) {
            MP_CHECKF(s->count[l] > 0, "case %lld: label %d absent", (long long)c, l);
            double ratio = (double)s->count[l] / expect[l];
            if (!tube[l])
                MP_CHECKF(ratio > 0.5 && ratio < 1.6, "case %lld label %d (%s): %lld voxels, shapes say %.0f",
                          (long long)c, l, mp_synth_class_name(l), (long long)s->count[l], expect[l]);
            if (s->interior[l] >= 30) {
                double mean = s->sum[l] / (double)s->interior[l];
                MP_CHECKF(fabs(mean - hu[l]) < 15, "case %lld label %d: interior mean %.1f HU, organ drawn at %.1f",
                          (long long)c, l, mean, hu[l]);
                MP_CHECKF(fabs(mean - mp_synth_class_hu(l)) < 25, "case %lld label %d: mean %.1f HU, class %.0f",
                          (long long)c, l, mean, mp_synth_class_hu(l));
            }
        }
        /* Only labels 0..K appear. */
        int64_t other = 0;
        for (int l = p.classes + 1; l < 256; l++) other += s->count[l];
        MP_CHECK(other == 0);
        free(s);
        mp_synth_layout_free(L);
        mp_vol_free(img);
        mp_vol_free(lab);
    }
}

/* At every voxel centre at most one organ holds the point, except a child
 * inside its parent; the label is that of the innermost organ; labelled
 * organs that are not nested never touch (a gap of at least one voxel). */
static void test_no_overlap(void) {
    mp_synth_params_t p;
    test_params(&p, MP_SYNTH_MAX_CLASSES);
    for (int64_t c = 0; c < 3; c++) {
        mp_vol_t *img, *lab;
        mp_synth_layout_t *L;
        MP_CHECK_OK(mp_synth_case(&img, &lab, &p, c, NULL));
        MP_CHECK_OK(mp_synth_layout_create(&L, &p, c));
        int n = mp_synth_layout_organ_count(L);
        mp_synth_organ_t org[64];
        MP_CHECK(n > p.classes && n <= 64);
        for (int i = 0; i < n; i++) MP_CHECK_OK(mp_synth_layout_organ(L, i, &org[i]));
        const uint8_t *l = lab->data;
        int64_t nx = p.size[0], ny = p.size[1], nz = p.size[2], bad = 0, touching = 0;
        for (int64_t z = 0; z < nz; z++)
            for (int64_t y = 0; y < ny; y++)
                for (int64_t x = 0; x < nx; x++) {
                    double w[3];
                    for (int a = 0; a < 3; a++)
                        w[a] = lab->affine[a][0] * (double)x + lab->affine[a][1] * (double)y +
                               lab->affine[a][2] * (double)z + lab->affine[a][3];
                    int in[64], k = 0;
                    for (int i = 0; i < n; i++)
                        if (mp_synth_layout_inside(L, i, w)) in[k++] = i;
                    int want = 0;
                    if (k == 1) want = org[in[0]].label;
                    else if (k == 2 && org[in[1]].parent == in[0]) want = org[in[1]].label;
                    else if (k == 2 && org[in[0]].parent == in[1]) want = org[in[0]].label;
                    else if (k > 1) bad++;
                    for (int j = 0; j < k; j++) /* a child never sticks out of its parent */
                        if (org[in[j]].parent >= 0 && !mp_synth_layout_inside(L, org[in[j]].parent, w)) bad++;
                    int64_t i = x + nx * (y + ny * z);
                    bad += l[i] != want;
                    int64_t nb[3] = {x + 1 < nx ? i + 1 : i, y + 1 < ny ? i + nx : i, z + 1 < nz ? i + nx * ny : i};
                    for (int d = 0; d < 3; d++) {
                        int a = l[i], b = l[nb[d]];
                        if (a && b && a != b && !((a == 1 && b == 4) || (a == 4 && b == 1))) touching++;
                    }
                }
        mp_synth_layout_free(L);
        mp_vol_free(img);
        mp_vol_free(lab);
        MP_CHECKF(bad == 0, "case %lld: %lld voxels disagree with the layout", (long long)c, (long long)bad);
        MP_CHECKF(touching == 0, "case %lld: %lld voxel faces between different organs", (long long)c,
                  (long long)touching);
    }
}

/* Air, fat, bone and noise level look like CT. */
static void test_ct_appearance(void) {
    mp_synth_params_t p;
    test_params(&p, 3);
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 1, NULL));
    const int16_t *a = img->data;
    const uint8_t *l = lab->data;
    int64_t nx = p.size[0], ny = p.size[1], nz = p.size[2], n = nx * ny * nz;
    /* Corners are air. */
    double air = 0;
    int n_air = 0;
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < 4; y++)
            for (int64_t x = 0; x < 4; x++, n_air++) air += a[x + nx * (y + ny * z)];
    air /= n_air;
    int64_t fat = 0, bone = 0, bone_labelled = 0, body = 0;
    int16_t lo = 32767, hi = -32768;
    for (int64_t i = 0; i < n; i++) {
        lo = a[i] < lo ? a[i] : lo;
        hi = a[i] > hi ? a[i] : hi;
        body += a[i] > -500;
        fat += a[i] >= -160 && a[i] <= -60;
        if (a[i] > 400) {
            bone++;
            bone_labelled += l[i] != 0;
        }
    }
    /* Noise: differences of horizontal neighbours inside organs, where the
     * intensity is otherwise smooth; var(a - b) = 2 sd^2. */
    double s2 = 0;
    int64_t m = 0;
    for (int64_t z = 1; z < nz - 1; z++)
        for (int64_t y = 1; y < ny - 1; y++)
            for (int64_t x = 1; x < nx - 2; x++) {
                int64_t i = x + nx * (y + ny * z);
                int li = l[i];
                if (!li || l[i + 1] != li || l[i - 1] != li || l[i + 2] != li || l[i + nx] != li || l[i - nx] != li ||
                    l[i + 1 + nx] != li || l[i + 1 - nx] != li || l[i + nx * ny] != li || l[i - nx * ny] != li)
                    continue;
                double d = (double)a[i + 1] - a[i];
                s2 += d * d;
                m++;
            }
    mp_vol_free(img);
    mp_vol_free(lab);
    double sd = sqrt(s2 / (double)m / 2);
    MP_CHECKF(air > -1012 && air < -985, "air %.1f HU", air);
    MP_CHECK(lo >= -1024 && hi > 500 && hi <= 3071);
    MP_CHECKF(fat > body / 50, "fat voxels %lld of %lld in the body", (long long)fat, (long long)body);
    MP_CHECKF(bone > 100 && bone_labelled == 0, "bone %lld voxels, %lld labelled", (long long)bone,
              (long long)bone_labelled);
    MP_CHECKF(m > 1000 && sd > p.noise_hu[0] * 0.8 && sd < p.noise_hu[1] * 1.2, "noise sd %.1f HU (%lld pairs)", sd,
              (long long)m);
}

/* Without noise, boundary voxels take intermediate values with partial
 * volume on, and (almost) none with it off; labels stay hard either way. */
static void test_partial_volume(void) {
    mp_synth_params_t p;
    test_params(&p, 3);
    p.noise_hu[0] = p.noise_hu[1] = 0;
    int64_t mixed[2];
    uint64_t lab_hash[2];
    for (int pv = 0; pv <= 1; pv++) {
        p.partial_volume = pv;
        mp_vol_t *img, *lab;
        MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 2, NULL));
        const int16_t *a = img->data;
        mixed[pv] = 0;
        for (int64_t i = 0; i < mp_vol_voxels(img); i++) mixed[pv] += a[i] > -800 && a[i] < -300;
        lab_hash[pv] = fnv1a(0xcbf29ce484222325ull, lab->data, mp_vol_bytes(lab));
        mp_vol_free(img);
        mp_vol_free(lab);
    }
    /* Between air (-1000) and fat (-100) only at the skin, and only when
     * partial volume mixes them (gas pockets add a few either way). */
    MP_CHECKF(mixed[1] > 500 && mixed[0] * 20 < mixed[1], "mixed voxels: %lld with, %lld without partial volume",
              (long long)mixed[1], (long long)mixed[0]);
    MP_CHECK(lab_hash[0] == lab_hash[1]);
}

static void test_determinism_and_threads(void) {
    mp_synth_params_t p;
    test_params(&p, 4);
    p.size[0] = p.size[1] = 64;
    p.size[2] = 32;
    p.spacing[0] = p.spacing[1] = 3;
    p.spacing[2] = 6;
    mp_vol_t *img, *lab;
    uint64_t h[5];
    int threads[4] = {0, 1, 2, 3};
    for (int t = 0; t < 4; t++) {
        mp_pool_t *pool = threads[t] ? mp_pool_create(threads[t]) : NULL;
        MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 5, pool));
        h[t] = case_hash(img, lab);
        mp_vol_free(img);
        mp_vol_free(lab);
        mp_pool_free(pool);
    }
    MP_CHECK(h[0] == h[1] && h[0] == h[2] && h[0] == h[3]);
    /* Another seed and another case give other data. */
    p.seed = 43;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 5, NULL));
    h[4] = case_hash(img, lab);
    mp_vol_free(img);
    mp_vol_free(lab);
    MP_CHECK(h[4] != h[0]);
    p.seed = 42;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 6, NULL));
    MP_CHECK(case_hash(img, lab) != h[0]);
    mp_vol_free(img);
    mp_vol_free(lab);
    /* A seed beyond 2^53 still works and differs from its neighbour. */
    p.seed = 0xfffffffffffffff0ull;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 0, NULL));
    uint64_t a = case_hash(img, lab);
    mp_vol_free(img);
    mp_vol_free(lab);
    p.seed++;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 0, NULL));
    MP_CHECK(case_hash(img, lab) != a);
    mp_vol_free(img);
    mp_vol_free(lab);
}

/* The bytes of one case, fixed. The generator uses only exactly rounded
 * floating-point operations, so every machine and compiler (gcc, clang, -O1
 * under the sanitizers, -O2) must produce them. When the generator changes on
 * purpose, bump MP_SYNTH_VERSION and update this value. */
static void test_golden_bytes(void) {
    mp_synth_params_t p;
    test_params(&p, MP_SYNTH_MAX_CLASSES);
    p.size[0] = 64;
    p.size[1] = 56;
    p.size[2] = 32;
    p.spacing[0] = 3;
    p.spacing[1] = 3.4;
    p.spacing[2] = 6;
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_synth_case(&img, &lab, &p, 3, NULL));
    uint64_t h = case_hash(img, lab);
    mp_vol_free(img);
    mp_vol_free(lab);
    MP_CHECKF(h == 0x8899f549591a41e5ull, "hash 0x%016llxull", (unsigned long long)h);
}

/* ---------------------------------------------------------------- dataset.json */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static const char *path_in(const char *dir, const char *rel) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    int n = snprintf(buf[k], sizeof buf[k], "%s/%s", dir, rel);
    if (n < 0 || (size_t)n >= sizeof buf[k]) buf[k][0] = '\0'; /* too long: fails loudly later */
    return buf[k];
}

/* Creates an empty file (and its folder). */
static void touch(const char *dir, const char *rel) {
    const char *p = path_in(dir, rel);
    char parent[1024];
    snprintf(parent, sizeof parent, "%s", p);
    *strrchr(parent, '/') = '\0';
    mp_mkdir_p(parent);
    FILE *f = fopen(p, "w");
    if (f) fclose(f);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_dataset_json_roundtrip(void) {
    mp_dataset_t *ds, *back;
    MP_CHECK_OK(mp_dataset_create(&ds));
    MP_CHECK_OK(mp_dataset_set_info(ds, "demo", "two channels", ".nii.gz"));
    MP_CHECK_OK(mp_dataset_set_channel(ds, 1, "PET"));
    MP_CHECK_OK(mp_dataset_set_channel(ds, 0, "CT"));
    MP_CHECK_OK(mp_dataset_add_label(ds, "tumour", 2));
    MP_CHECK_OK(mp_dataset_add_label(ds, "background", 0));
    MP_CHECK_OK(mp_dataset_add_label(ds, "liver", 1));
    MP_CHECK(mp_dataset_add_label(ds, "liver", 3) == MP_ERR_ARG);
    MP_CHECK(mp_dataset_add_label(ds, "other", 2) == MP_ERR_ARG);
    MP_CHECK(mp_dataset_set_info(ds, NULL, NULL, "nii") == MP_ERR_ARG);
    MP_CHECK(mp_dataset_set_extra(ds, "[1]") == MP_ERR_ARG);
    MP_CHECK_OK(mp_dataset_set_extra(ds, "{\"numTest\": 2, \"reference\": {\"a\": [1, 2]}, \"labels\": 5}"));
    ds->num_training = 3;
    const char *dir = mp_test_tmpdir("synth-json");
    MP_CHECK_OK(mp_dataset_write(ds, dir));
    MP_CHECK_OK(mp_dataset_read(&back, dir));
    int ok = back->n_channels == 2 && !strcmp(back->channel_names[0], "CT") && !strcmp(back->channel_names[1], "PET") &&
             back->n_labels == 3 && back->labels[0].value == 0 && back->labels[1].value == 1 &&
             back->labels[2].value == 2 && !strcmp(back->labels[2].name, "tumour") && back->num_training == 3 &&
             !strcmp(back->file_ending, ".nii.gz") && !strcmp(back->name, "demo") &&
             !strcmp(back->description, "two channels") && !strcmp(back->root, dir);
    ok &= mp_dataset_label_value(back, "liver") == 1 && mp_dataset_label_value(back, "spleen") == -1;
    ok &= !strcmp(mp_dataset_label_name(back, 2), "tumour") && mp_dataset_label_name(back, 7) == NULL;
    ok &= mp_dataset_max_label(back) == 2;
    /* Unknown keys survive; an extra key may not override a standard one. */
    ok &= back->extra_json && strstr(back->extra_json, "\"reference\"") && strstr(back->extra_json, "\"numTest\"") &&
          !strstr(back->extra_json, "labels");
    char *j1 = NULL, *j2 = NULL;
    MP_CHECK_OK(mp_dataset_to_json(ds, &j1));
    MP_CHECK_OK(mp_dataset_to_json(back, &j2));
    ok &= strcmp(j1, j2) == 0;
    free(j1);
    free(j2);
    mp_dataset_free(ds);
    mp_dataset_free(back);
    mp_dataset_free(NULL);
    rm_tree(dir);
    MP_CHECK(ok);
}

static void test_dataset_json_errors(void) {
    static const struct {
        const char *json;
        int code;
        const char *msg;
    } cases[] = {
        {"{\"channel_names\": {\"0\": \"CT\"", MP_ERR_FORMAT, "invalid JSON"},
        {"[1, 2]", MP_ERR_FORMAT, "top level"},
        {"{\"labels\": {\"background\": 0}, \"numTraining\": 1, \"file_ending\": \".nii.gz\"}", MP_ERR_FORMAT,
         "missing key \"channel_names\""},
        {"{\"channel_names\": {\"1\": \"CT\"}, \"labels\": {\"background\": 0}, \"numTraining\": 1, "
         "\"file_ending\": \".nii.gz\"}", MP_ERR_FORMAT, "channel 0 is missing"},
        {"{\"channel_names\": {\"x\": \"CT\"}}", MP_ERR_FORMAT, "not a channel number"},
        {"{\"channel_names\": {\"0\": 5}}", MP_ERR_FORMAT, "non-empty name"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"numTraining\": 1, \"file_ending\": \".nii.gz\"}", MP_ERR_FORMAT,
         "missing key \"labels\""},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"liver\": 1}}", MP_ERR_FORMAT, "no background"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0, \"a\": 1, \"b\": 1}}", MP_ERR_ARG,
         "share the value 1"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0, \"a\": 1.5}}", MP_ERR_FORMAT,
         "\"a\" must be an integer"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0, \"tumour\": [1, 2]}}",
         MP_ERR_UNSUPPORTED, "region"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0}, \"file_ending\": \".nii.gz\"}",
         MP_ERR_FORMAT, "missing key \"numTraining\""},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0}, \"numTraining\": -1}", MP_ERR_FORMAT,
         "\"numTraining\" must be a non-negative integer"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0}, \"numTraining\": 2}", MP_ERR_FORMAT,
         "missing key \"file_ending\""},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0}, \"numTraining\": 2, "
         "\"file_ending\": \"nii\"}", MP_ERR_FORMAT, "starting with '.'"},
        {"{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"background\": 0}, \"numTraining\": 1, "
         "\"training\": [{\"image\": \"a.nii.gz\"}]}", MP_ERR_FORMAT, "\"training\"[0]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mp_dataset_t *ds = (mp_dataset_t *)1;
        int rc = mp_dataset_parse(&ds, cases[i].json, strlen(cases[i].json), "x/dataset.json");
        MP_CHECKF(rc == cases[i].code && ds == NULL, "case %zu: rc %d", i, rc);
        MP_CHECKF(strstr(mp_error_message(), cases[i].msg) && strstr(mp_error_message(), "x/dataset.json"),
                  "case %zu: message '%s'", i, mp_error_message());
    }
    mp_dataset_t *ds;
    MP_CHECK(mp_dataset_read(&ds, "/nonexistent/medpipe-dataset") == MP_ERR_IO && ds == NULL);
    MP_CHECK(strstr(mp_error_message(), "/nonexistent/medpipe-dataset/dataset.json"));
}

static void test_dataset_list_nnunet(void) {
    const char *dir = mp_test_tmpdir("synth-list");
    write_text(path_in(dir, "dataset.json"),
               "{\"channel_names\": {\"0\": \"CT\", \"1\": \"PET\"}, \"labels\": {\"background\": 0, \"x\": 1},"
               " \"numTraining\": 2, \"file_ending\": \".nii.gz\"}");
    const char *files[] = {"imagesTr/b_0001.nii.gz", "imagesTr/b_0000.nii.gz", "imagesTr/a_0000.nii.gz",
                           "imagesTr/a_0001.nii.gz", "imagesTr/notes.txt", "imagesTr/.hidden_0000.nii.gz",
                           "labelsTr/a.nii.gz", "labelsTr/b.nii.gz"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) touch(dir, files[i]);
    mp_dataset_t *ds;
    mp_dataset_cases_t cs;
    MP_CHECK_OK(mp_dataset_read(&ds, dir));
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs));
    int ok = cs.n == 2 && !strcmp(cs.cases[0].id, "a") && !strcmp(cs.cases[1].id, "b") && cs.cases[1].n_images == 2 &&
             !strcmp(cs.cases[1].images[1], path_in(dir, "imagesTr/b_0001.nii.gz")) &&
             !strcmp(cs.cases[0].label, path_in(dir, "labelsTr/a.nii.gz"));
    mp_dataset_cases_deinit(&cs);
    MP_CHECK(ok);
    /* No imagesTs: no test cases. With images but no labelsTs: no labels. */
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TEST, &cs));
    MP_CHECK(cs.n == 0);
    touch(dir, "imagesTs/t_0000.nii.gz");
    touch(dir, "imagesTs/t_0001.nii.gz");
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TEST, &cs));
    ok = cs.n == 1 && !strcmp(cs.cases[0].id, "t") && cs.cases[0].label == NULL;
    mp_dataset_cases_deinit(&cs);
    MP_CHECK(ok);
    mp_mkdir_p(path_in(dir, "labelsTs"));
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TEST, &cs) == MP_ERR_IO && cs.n == 0);
    MP_CHECK(strstr(mp_error_message(), "labelsTs/t.nii.gz"));
    /* Broken training folders, each reported with the file at fault. */
    remove(path_in(dir, "imagesTr/b_0001.nii.gz"));
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs) == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "b_0001.nii.gz: missing"));
    touch(dir, "imagesTr/b_0001.nii.gz");
    touch(dir, "imagesTr/c_0002.nii.gz");
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs) == MP_ERR_MISMATCH);
    MP_CHECK(strstr(mp_error_message(), "c_0002.nii.gz: channel 2"));
    remove(path_in(dir, "imagesTr/c_0002.nii.gz"));
    touch(dir, "imagesTr/nochannel.nii.gz");
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs) == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "nochannel.nii.gz") && strstr(mp_error_message(), "_XXXX"));
    remove(path_in(dir, "imagesTr/nochannel.nii.gz"));
    remove(path_in(dir, "labelsTr/b.nii.gz"));
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "labelsTr/b.nii.gz: missing label"));
    touch(dir, "labelsTr/b.nii.gz");
    ds->num_training = 3;
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs) == MP_ERR_MISMATCH);
    MP_CHECK(strstr(mp_error_message(), "numTraining is 3 but 2"));
    mp_dataset_free(ds);
    rm_tree(dir);
}

static void test_dataset_list_decathlon(void) {
    const char *dir = mp_test_tmpdir("synth-msd");
    write_text(path_in(dir, "dataset.json"),
               "{\"name\": \"Task\", \"modality\": {\"0\": \"CT\"}, \"labels\": {\"0\": \"background\", \"1\": \"liver\","
               " \"2\": \"tumour\"}, \"numTraining\": 2, \"numTest\": 1, \"tensorImageSize\": \"3D\","
               " \"training\": [{\"image\": \"./imagesTr/liver_1.nii.gz\", \"label\": \"./labelsTr/liver_1.nii.gz\"},"
               " {\"image\": \"./imagesTr/liver_0.nii.gz\", \"label\": \"./labelsTr/liver_0.nii.gz\"}],"
               " \"test\": [\"./imagesTs/liver_9.nii.gz\"]}");
    const char *files[] = {"imagesTr/liver_0.nii.gz", "imagesTr/liver_1.nii.gz", "labelsTr/liver_0.nii.gz",
                           "labelsTr/liver_1.nii.gz", "imagesTs/liver_9.nii.gz"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) touch(dir, files[i]);
    mp_dataset_t *ds;
    mp_dataset_cases_t cs;
    MP_CHECK_OK(mp_dataset_read(&ds, dir));
    int ok = ds->n_channels == 1 && !strcmp(ds->channel_names[0], "CT") && mp_dataset_label_value(ds, "tumour") == 2 &&
             !strcmp(ds->file_ending, ".nii.gz") && ds->n_msd_training == 2 && ds->n_msd_test == 1 &&
             ds->extra_json && strstr(ds->extra_json, "tensorImageSize");
    MP_CHECK(ok);
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs));
    ok = cs.n == 2 && !strcmp(cs.cases[0].id, "liver_0") && cs.cases[0].n_images == 1 &&
         !strcmp(cs.cases[0].images[0], path_in(dir, "imagesTr/liver_0.nii.gz")) &&
         !strcmp(cs.cases[1].label, path_in(dir, "labelsTr/liver_1.nii.gz"));
    mp_dataset_cases_deinit(&cs);
    MP_CHECK(ok);
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TEST, &cs));
    ok = cs.n == 1 && !strcmp(cs.cases[0].id, "liver_9") && !cs.cases[0].label;
    mp_dataset_cases_deinit(&cs);
    MP_CHECK(ok);
    /* Written back in the nnU-Net form, with the lists kept. */
    char *json;
    MP_CHECK_OK(mp_dataset_to_json(ds, &json));
    ok = strstr(json, "\"channel_names\"") && strstr(json, "\"liver\":\t1") && strstr(json, "\"training\"") &&
         strstr(json, "liver_9");
    free(json);
    remove(path_in(dir, "labelsTr/liver_1.nii.gz"));
    MP_CHECK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "labelsTr/liver_1.nii.gz: missing"));
    mp_dataset_free(ds);
    rm_tree(dir);
    MP_CHECK(ok);
}

/* ---------------------------------------------------------------- files */

static void small_file_params(mp_synth_params_t *p) {
    test_params(p, 3);
    p->size[0] = 64;
    p->size[1] = 64;
    p->size[2] = 32;
    p->spacing[0] = 3;
    p->spacing[1] = 3;
    p->spacing[2] = 6;
    p->train_cases = 3;
    p->test_cases = 2;
}

typedef struct {
    int calls;
    int64_t last, total;
    int monotonic;
} progress_rec_t;

static void record_progress(void *user, int64_t done, int64_t total) {
    progress_rec_t *r = user;
    r->monotonic &= done == r->last + 1;
    r->calls++;
    r->last = done;
    r->total = total;
}

static int files_equal(const char *a, const char *b) {
    uint8_t *x, *y;
    size_t nx, ny;
    if (mp_file_read_all(a, &x, &nx)) return 0;
    if (mp_file_read_all(b, &y, &ny)) {
        free(x);
        return 0;
    }
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return eq;
}

static const char *synth_files[] = {"dataset.json",
                                    "imagesTr/case_000_0000.nii.gz", "imagesTr/case_001_0000.nii.gz",
                                    "imagesTr/case_002_0000.nii.gz", "labelsTr/case_000.nii.gz",
                                    "labelsTr/case_001.nii.gz", "labelsTr/case_002.nii.gz",
                                    "imagesTs/case_003_0000.nii.gz", "imagesTs/case_004_0000.nii.gz",
                                    "labelsTs/case_003.nii.gz", "labelsTs/case_004.nii.gz"};

/* Entries of `dir` whose name contains `part`. */
static int count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, part) != NULL;
    if (d) closedir(d);
    return n;
}

static void test_dataset_files_identical_across_threads(void) {
    mp_synth_params_t p;
    small_file_params(&p);
    const char *root = mp_test_tmpdir("synth-files");
    char d1[1024], d2[1024], d3[1024];
    snprintf(d1, sizeof d1, "%s/one", root);
    snprintf(d2, sizeof d2, "%s/three", root);
    snprintf(d3, sizeof d3, "%s/nested/serial/", root); /* parents created, trailing slash */
    mp_pool_t *p1 = mp_pool_create(1), *p3 = mp_pool_create(3);
    progress_rec_t rec = {0, 0, 0, 1};
    MP_CHECK_OK(mp_synth_dataset_write(d1, &p, p1, 0, record_progress, &rec));
    MP_CHECK(rec.calls == 5 && rec.last == 5 && rec.total == 5 && rec.monotonic);
    MP_CHECK_OK(mp_synth_dataset_write(d2, &p, p3, 0, NULL, NULL));
    MP_CHECK_OK(mp_synth_dataset_write(d3, &p, NULL, 0, NULL, NULL));
    mp_pool_free(p1);
    for (size_t i = 0; i < sizeof synth_files / sizeof synth_files[0]; i++) {
        MP_CHECKF(files_equal(path_in(d1, synth_files[i]), path_in(d2, synth_files[i])), "%s differs", synth_files[i]);
        MP_CHECKF(files_equal(path_in(d1, synth_files[i]), path_in(d3, synth_files[i])), "%s differs", synth_files[i]);
    }
    MP_CHECK(count_entries(root, ".tmp.") == 0);
    /* What was written is what mp_synth_case makes. */
    for (int64_t c = 0; c < 5; c++) {
        mp_vol_t *img, *lab, *fimg, *flab;
        MP_CHECK_OK(mp_synth_case(&img, &lab, &p, c, p3));
        char rel[64];
        snprintf(rel, sizeof rel, "images%s/case_%03d_0000.nii.gz", c < 3 ? "Tr" : "Ts", (int)c);
        MP_CHECK_OK(mp_image_read(&fimg, path_in(d1, rel)));
        snprintf(rel, sizeof rel, "labels%s/case_%03d.nii.gz", c < 3 ? "Tr" : "Ts", (int)c);
        MP_CHECK_OK(mp_image_read(&flab, path_in(d1, rel)));
        int ok = fimg->dtype == MP_DTYPE_I16 && flab->dtype == MP_DTYPE_U8 && fimg->scl_slope == 1 &&
                 fimg->scl_inter == 0 && memcmp(fimg->data, img->data, mp_vol_bytes(img)) == 0 &&
                 memcmp(flab->data, lab->data, mp_vol_bytes(lab)) == 0;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 4; b++) ok &= fabs(fimg->affine[a][b] - img->affine[a][b]) < 1e-4;
        mp_vol_free(img);
        mp_vol_free(lab);
        mp_vol_free(fimg);
        mp_vol_free(flab);
        MP_CHECKF(ok, "case %d read back differs", (int)c);
    }
    mp_pool_free(p3);
    /* dataset.json and the folders list as a dataset. */
    mp_dataset_t *ds;
    mp_dataset_cases_t cs;
    MP_CHECK_OK(mp_dataset_read(&ds, d1));
    int ok = ds->num_training == 3 && ds->n_channels == 1 && !strcmp(ds->channel_names[0], "CT") &&
             ds->n_labels == 4 && mp_dataset_label_value(ds, "kidney") == 3 && !strcmp(ds->file_ending, ".nii.gz") &&
             ds->extra_json && strstr(ds->extra_json, "\"medpipe_synth\"") && strstr(ds->extra_json, "\"seed\":42");
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TRAIN, &cs));
    ok &= cs.n == 3 && !strcmp(cs.cases[2].id, "case_002") && cs.cases[2].label != NULL;
    mp_dataset_cases_deinit(&cs);
    MP_CHECK_OK(mp_dataset_list_cases(ds, MP_DATASET_TEST, &cs));
    ok &= cs.n == 2 && !strcmp(cs.cases[0].id, "case_003") && cs.cases[1].label != NULL;
    mp_dataset_cases_deinit(&cs);
    mp_dataset_free(ds);
    rm_tree(root);
    MP_CHECK(ok);
}

static void test_dataset_write_replace_rules(void) {
    mp_synth_params_t p;
    small_file_params(&p);
    p.train_cases = 1;
    p.test_cases = 0;
    const char *root = mp_test_tmpdir("synth-replace");
    char d[1024], other[1024];
    snprintf(d, sizeof d, "%s/ds", root);
    snprintf(other, sizeof other, "%s/mine", root);
    /* An existing empty folder is fine. */
    mp_mkdir_p(d);
    MP_CHECK_OK(mp_synth_dataset_write(d, &p, NULL, 0, NULL, NULL));
    /* A second write needs replace, and then swaps the whole folder. */
    p.seed = 7;
    MP_CHECK(mp_synth_dataset_write(d, &p, NULL, 0, NULL, NULL) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "exists and is not empty"));
    uint8_t *json;
    size_t n;
    MP_CHECK_OK(mp_file_read_all(path_in(d, "dataset.json"), &json, &n));
    int old_seed = strstr((char *)json, "\"seed\":\t42") != NULL;
    free(json);
    MP_CHECK(old_seed);
    touch(d, "imagesTr/stale_0000.nii.gz");
    MP_CHECK_OK(mp_synth_dataset_write(d, &p, NULL, 1, NULL, NULL));
    MP_CHECK_OK(mp_file_read_all(path_in(d, "dataset.json"), &json, &n));
    int new_seed = strstr((char *)json, "\"seed\":\t7") != NULL;
    free(json);
    MP_CHECK(new_seed);
    struct stat st;
    MP_CHECK(stat(path_in(d, "imagesTr/stale_0000.nii.gz"), &st) != 0);
    /* A folder that is not a synth dataset is never replaced. */
    touch(other, "notes.txt");
    MP_CHECK(mp_synth_dataset_write(other, &p, NULL, 1, NULL, NULL) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "not a medpipe synth dataset"));
    MP_CHECK(stat(path_in(other, "notes.txt"), &st) == 0);
    /* A path below a regular file fails cleanly. */
    MP_CHECK(mp_synth_dataset_write(path_in(other, "notes.txt/x"), &p, NULL, 0, NULL, NULL) != MP_OK);
    /* Nothing temporary is left behind. */
    MP_CHECK(count_entries(root, ".tmp.") == 0 && count_entries(root, ".old.") == 0);
    MP_CHECK(count_entries(other, ".tmp.") == 0);
    rm_tree(root);
}

int main(void) {
    MP_RUN(test_params_defaults_and_checks);
    MP_RUN(test_case_geometry);
    MP_RUN(test_labels_volumes_and_intensities);
    MP_RUN(test_no_overlap);
    MP_RUN(test_ct_appearance);
    MP_RUN(test_partial_volume);
    MP_RUN(test_determinism_and_threads);
    MP_RUN(test_golden_bytes);
    MP_RUN(test_dataset_json_roundtrip);
    MP_RUN(test_dataset_json_errors);
    MP_RUN(test_dataset_list_nnunet);
    MP_RUN(test_dataset_list_decathlon);
    MP_RUN(test_dataset_files_identical_across_threads);
    MP_RUN(test_dataset_write_replace_rules);
    return mp_test_summary();
}
