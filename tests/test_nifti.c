/* NIfTI I/O: round trips for every data type and container (.nii, .nii.gz,
 * .hdr/.img, NIfTI-1/2), big-endian and Analyze files crafted here, scaling,
 * 4D, geometry (qform/sform/pixdim conventions), and hostile files: each bad
 * case must fail with a message naming the file and the problem. */
#include "harness.h"
#include "io/gz.h"
#include "medpipe/medpipe.h"
#include "medpipe/nifti.h"

#include <dirent.h>
#include <ftw.h>
#include <stdint.h>

static char path_buf[1024];
static const char *tmp_path(const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", mp_test_tmpdir("nifti"), name);
    return path_buf;
}

/* A volume with distinct values (wrapping within the type) and an oblique affine. */
static mp_vol_t *make_vol(mp_dtype_t t, int64_t nx, int64_t ny, int64_t nz, int64_t nc) {
    int64_t dim[4] = {nx, ny, nz, nc};
    mp_vol_t *v;
    if (mp_vol_create(&v, dim, t) != MP_OK) return NULL;
    int64_t n = mp_vol_elems(v);
    double lo = mp_dtype_min(t), hi = mp_dtype_max(t);
    for (int64_t i = 0; i < n; i++) {
        double x = (double)((i * 7919) % 251) - 100;
        if (mp_dtype_is_float(t)) x = x * 0.37 + 0.001 * (double)i;
        if (x < lo) x = lo + (double)(i % 5);
        if (x > hi) x = hi;
        mp_vol_set(v, i, x);
    }
    /* A rotation about z by 30 degrees, spacing (0.8, 1.2, 2.5), an offset. */
    double c = cos(M_PI / 6), s = sin(M_PI / 6);
    double a[4][4] = {{0.8 * c, -1.2 * s, 0, -40.5}, {0.8 * s, 1.2 * c, 0, 12.25}, {0, 0, 2.5, -7}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, a);
    v->meta.qform_code = 1;
    v->meta.sform_code = 2;
    snprintf(v->meta.descrip, sizeof v->meta.descrip, "medpipe test volume");
    return v;
}

static int same_data(const mp_vol_t *a, const mp_vol_t *b) {
    if (a->dtype != b->dtype) return 0;
    for (int i = 0; i < 4; i++)
        if (a->dim[i] != b->dim[i]) return 0;
    return memcmp(a->data, b->data, mp_vol_bytes(a)) == 0;
}

static double affine_diff(const mp_vol_t *a, const mp_vol_t *b) {
    double m = 0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) m = fmax(m, fabs(a->affine[r][c] - b->affine[r][c]));
    return m;
}

static void test_roundtrip_nii(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_I16, 7, 5, 3, 1), *r = NULL;
    MP_CHECK(v);
    MP_CHECK_OK(mp_image_write(tmp_path("rt.nii"), v, NULL));
    MP_CHECK_OK(mp_image_read(&r, tmp_path("rt.nii")));
    MP_CHECK(same_data(v, r));
    MP_CHECK(affine_diff(v, r) < 1e-5);
    MP_CHECK(r->meta.qform_code == 1 && r->meta.sform_code == 2);
    MP_CHECK(strcmp(r->meta.descrip, "medpipe test volume") == 0);
    mp_vol_free(r);
    MP_CHECK_OK(mp_image_write(tmp_path("rt.nii.gz"), v, NULL));
    MP_CHECK_OK(mp_image_read(&r, tmp_path("rt.nii.gz")));
    MP_CHECK(same_data(v, r));
    MP_CHECK(affine_diff(v, r) < 1e-5);
    mp_vol_free(r);
    mp_vol_free(v);
}


/* ---- helpers to craft files ---- */
static void put16(uint8_t *b, size_t o, int v) { b[o] = (uint8_t)v, b[o + 1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *b, size_t o, uint32_t v) {
    for (int i = 0; i < 4; i++) b[o + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *b, size_t o, uint64_t v) {
    for (int i = 0; i < 8; i++) b[o + (size_t)i] = (uint8_t)(v >> (8 * i));
}
static void putf32(uint8_t *b, size_t o, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put32(b, o, u);
}

static int write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* A valid little-endian single-file image of a small i16 volume (v1 or v2). */
static uint8_t *valid_nii(size_t *len, int version, mp_vol_t **vol_out) {
    mp_vol_t *v = make_vol(MP_DTYPE_I16, 6, 5, 4, 1);
    mp_image_write_opts_t o;
    mp_image_write_opts_init(&o);
    o.nifti_version = version;
    uint8_t *b = NULL;
    if (v && mp_nifti_write_mem(&b, len, v, &o, 0) != MP_OK) b = NULL;
    if (vol_out) *vol_out = v;
    else mp_vol_free(v);
    return b;
}

/* Expects reading `path` to fail with `code` and a message naming the file
 * and containing `what`. */
#define EXPECT_FAIL(path, code, what)                                                                  \
    do {                                                                                               \
        mp_vol_t *r_ = NULL;                                                                           \
        int rc_ = mp_image_read(&r_, path);                                                            \
        MP_CHECKF(rc_ == (code), "%s: got %d (%s), want %d", path, rc_, mp_error_message(), (code));   \
        MP_CHECK(r_ == NULL);                                                                          \
        MP_CHECKF(strstr(mp_error_message(), path) != NULL, "message does not name the file: %s",      \
                  mp_error_message());                                                                 \
        MP_CHECKF(strstr(mp_error_message(), what) != NULL, "message lacks '%s': %s", what,            \
                  mp_error_message());                                                                 \
    } while (0)

/* ---- round trips ---- */
static const char *containers[] = {"nii", "nii.gz", "hdr", "img.gz"};

static void test_roundtrip_every_dtype_and_container(void) {
    for (int t = 0; t < MP_DTYPE_COUNT; t++) {
        mp_vol_t *v = make_vol((mp_dtype_t)t, 5, 4, 3, 1);
        MP_CHECK(v);
        v->scl_slope = t == MP_DTYPE_I16 ? 0.5 : 1;
        v->scl_inter = t == MP_DTYPE_I16 ? -3 : 0;
        v->meta.intent_code = 1002;
        snprintf(v->meta.intent_name, sizeof v->meta.intent_name, "p-value");
        snprintf(v->meta.aux_file, sizeof v->meta.aux_file, "lut.txt");
        v->meta.cal_min = -2, v->meta.cal_max = 77;
        v->meta.slice_code = 2, v->meta.slice_start = 1, v->meta.slice_end = 2, v->meta.slice_duration = 0.5;
        v->meta.dim_info = 0x39, v->meta.toffset = 1.25, v->meta.xyzt_units = 2 | 16;
        for (int c = 0; c < 4; c++)
            for (int version = 1; version <= 2; version++) {
                char name[64];
                snprintf(name, sizeof name, "rt_%s_v%d.%s", mp_dtype_name((mp_dtype_t)t), version, containers[c]);
                mp_image_write_opts_t o;
                mp_image_write_opts_init(&o);
                o.nifti_version = version;
                MP_CHECK_OK(mp_image_write(tmp_path(name), v, &o));
                mp_vol_t *r = NULL;
                mp_nifti_header_t h;
                MP_CHECK_OK(mp_nifti_read(&r, tmp_path(name), &h));
                MP_CHECKF(same_data(v, r), "%s", name);
                MP_CHECK(h.version == version && !h.big_endian);
                MP_CHECK(h.single_file == (c < 2));
                MP_CHECK(affine_diff(v, r) < 1e-5);
                MP_CHECK(r->scl_slope == v->scl_slope && r->scl_inter == v->scl_inter);
                const mp_vol_meta_t *a = &v->meta, *b = &r->meta;
                MP_CHECK(a->qform_code == b->qform_code && a->sform_code == b->sform_code);
                MP_CHECK(a->intent_code == b->intent_code && strcmp(a->intent_name, b->intent_name) == 0);
                MP_CHECK(strcmp(a->descrip, b->descrip) == 0 && strcmp(a->aux_file, b->aux_file) == 0);
                MP_CHECK(a->cal_min == b->cal_min && a->cal_max == b->cal_max);
                MP_CHECK(a->slice_code == b->slice_code && a->slice_start == b->slice_start);
                MP_CHECK(a->slice_end == b->slice_end && a->slice_duration == b->slice_duration);
                MP_CHECK(a->dim_info == b->dim_info && a->toffset == b->toffset && a->xyzt_units == b->xyzt_units);
                mp_vol_free(r);
            }
        mp_vol_free(v);
    }
}

static void test_4d_channels_and_time_step(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_F32, 4, 3, 2, 5), *r = NULL;
    MP_CHECK(v);
    v->meta.pixdim_t = 2.5;
    MP_CHECK_OK(mp_image_write(tmp_path("fourd.nii.gz"), v, NULL));
    mp_nifti_header_t h;
    MP_CHECK_OK(mp_nifti_read(&r, tmp_path("fourd.nii.gz"), &h));
    MP_CHECK(h.dim[0] == 4 && h.dim[4] == 5 && h.pixdim[4] == 2.5);
    MP_CHECK(same_data(v, r) && r->meta.pixdim_t == 2.5);
    mp_vol_free(r);
    mp_vol_free(v);
}

static void test_nifti2_when_dims_do_not_fit(void) {
    int64_t dim[4] = {40000, 2, 1, 1};
    mp_vol_t *v, *r = NULL;
    MP_CHECK_OK(mp_vol_create(&v, dim, MP_DTYPE_U8));
    for (int64_t i = 0; i < mp_vol_elems(v); i++) ((uint8_t *)v->data)[i] = (uint8_t)(i * 31);
    MP_CHECK_OK(mp_image_write(tmp_path("wide.nii"), v, NULL));
    mp_nifti_header_t h;
    MP_CHECK_OK(mp_nifti_read(&r, tmp_path("wide.nii"), &h));
    MP_CHECK(h.version == 2 && h.sizeof_hdr == 540 && h.dim[1] == 40000);
    MP_CHECK(same_data(v, r));
    mp_vol_free(r);
    mp_vol_free(v);
}

/* Reverses the byte order of every numeric header field (offset, size,
 * count) and of the data: a big-endian file of the same image. */
static void swap_field(uint8_t *b, size_t off, int size, int count) {
    for (int k = 0; k < count; k++) {
        uint8_t *p = b + off + (size_t)(k * size);
        for (int i = 0; i < size / 2; i++) {
            uint8_t t = p[i];
            p[i] = p[size - 1 - i];
            p[size - 1 - i] = t;
        }
    }
}

static void make_big_endian(uint8_t *b, size_t len, int version, size_t elem) {
    static const int v1[][3] = {{0, 4, 1},   {32, 4, 1},  {36, 2, 1},  {40, 2, 8},  {56, 4, 3},
                                {68, 2, 4},  {76, 4, 11}, {120, 2, 1}, {124, 4, 4}, {140, 4, 2},
                                {252, 2, 2}, {256, 4, 18}};
    static const int v2[][3] = {{0, 4, 1},    {12, 2, 2},  {16, 8, 8},   {80, 8, 3},   {104, 8, 8},
                                {168, 8, 9},  {344, 4, 2}, {352, 8, 18}, {496, 4, 3}};
    size_t n = version == 2 ? sizeof v2 / sizeof v2[0] : sizeof v1 / sizeof v1[0];
    for (size_t i = 0; i < n; i++) {
        const int *f = version == 2 ? v2[i] : v1[i];
        swap_field(b, (size_t)f[0], f[1], f[2]);
    }
    size_t off = version == 2 ? 544 : 352;
    swap_field(b, off, (int)elem, (int)((len - off) / elem));
}

static void test_big_endian_files(void) {
    for (int version = 1; version <= 2; version++) {
        for (int t = 0; t < MP_DTYPE_COUNT; t++) {
            mp_vol_t *v = make_vol((mp_dtype_t)t, 5, 3, 2, 2);
            MP_CHECK(v);
            v->scl_slope = 2, v->scl_inter = 1;
            mp_image_write_opts_t o;
            mp_image_write_opts_init(&o);
            o.nifti_version = version;
            uint8_t *b;
            size_t len;
            MP_CHECK_OK(mp_nifti_write_mem(&b, &len, v, &o, 0));
            make_big_endian(b, len, version, mp_dtype_size(v->dtype));
            MP_CHECK(b[0] == 0 && b[3] != 0); /* sizeof_hdr now big-endian */
            MP_CHECK(write_bytes(tmp_path("big.nii"), b, len) == 0);
            free(b);
            mp_vol_t *r = NULL;
            mp_nifti_header_t h;
            MP_CHECK_OK(mp_nifti_read(&r, tmp_path("big.nii"), &h));
            MP_CHECK(h.big_endian && h.swapped && h.version == version);
            MP_CHECKF(same_data(v, r), "%s v%d", mp_dtype_name((mp_dtype_t)t), version);
            MP_CHECK(affine_diff(v, r) < 1e-5);
            MP_CHECK(r->scl_slope == 2 && r->scl_inter == 1);
            MP_CHECK(strcmp(r->meta.descrip, v->meta.descrip) == 0);
            mp_vol_free(r);
            mp_vol_free(v);
        }
    }
}

/* Crafts a colour image: header of a u8 volume with datatype/bitpix patched,
 * data interleaved per voxel. */
static void check_colour(int code, int ncomp) {
    int64_t dim[4] = {3, 2, 2, 1};
    mp_vol_t *v;
    MP_CHECK_OK(mp_vol_create(&v, dim, MP_DTYPE_U8));
    uint8_t *b;
    size_t len;
    MP_CHECK_OK(mp_nifti_write_mem(&b, &len, v, NULL, 0));
    size_t nv = 12, total = 352 + nv * (size_t)ncomp;
    uint8_t *f = calloc(1, total);
    memcpy(f, b, 352);
    free(b);
    put16(f, 70, code);
    put16(f, 72, 8 * ncomp);
    for (size_t i = 0; i < nv; i++)
        for (int c = 0; c < ncomp; c++) f[352 + i * (size_t)ncomp + (size_t)c] = (uint8_t)(10 * c + i);
    MP_CHECK(write_bytes(tmp_path("colour.nii"), f, total) == 0);
    free(f);
    mp_vol_free(v);
    mp_vol_t *r = NULL;
    MP_CHECK_OK(mp_image_read(&r, tmp_path("colour.nii")));
    MP_CHECK(r->dtype == MP_DTYPE_U8 && r->dim[3] == ncomp);
    for (int c = 0; c < ncomp; c++)
        for (size_t i = 0; i < nv; i++) MP_CHECK(((uint8_t *)r->data)[(size_t)c * nv + i] == (uint8_t)(10 * c + i));
    mp_vol_free(r);
}

static void test_rgb24_and_rgba32_become_channels(void) {
    check_colour(128, 3);
    if (mp_test_cur_failed) return;
    check_colour(2304, 4);
}

static void test_scaling_identity_rules(void) {
    size_t len;
    uint8_t *b = valid_nii(&len, 1, NULL);
    MP_CHECK(b);
    float cases[][2] = {{0.0f, 5.0f}, {NAN, 0.0f}, {INFINITY, 1.0f}};
    for (int i = 0; i < 3; i++) {
        putf32(b, 112, cases[i][0]);
        putf32(b, 116, cases[i][1]);
        mp_vol_t *r = NULL;
        MP_CHECK_OK(mp_nifti_read_mem(&r, "mem", b, len, 0, NULL));
        MP_CHECK(r->scl_slope == 1 && r->scl_inter == 0);
        mp_vol_free(r);
    }
    putf32(b, 112, 3.0f);
    putf32(b, 116, NAN);
    MP_CHECK(write_bytes(tmp_path("badinter.nii"), b, len) == 0);
    free(b);
    EXPECT_FAIL(tmp_path("badinter.nii"), MP_ERR_FORMAT, "scl_inter");
}

/* ---- geometry ---- */
static void test_quaternion_roundtrip(void) {
    mp_rng_t rng;
    mp_rng_init(&rng, 5, 0);
    for (int k = 0; k < 2000; k++) {
        double q[4], n = 0;
        for (int i = 0; i < 4; i++) q[i] = mp_rng_normal(&rng), n += q[i] * q[i];
        n = sqrt(n);
        if (q[0] < 0) n = -n;
        double bcd[3] = {q[1] / n, q[2] / n, q[3] / n}, off[3] = {1, -2, 3};
        double pd[3] = {0.5 + mp_rng_uniform(&rng), 1 + mp_rng_uniform(&rng), 2 + mp_rng_uniform(&rng)};
        double qfac = k % 2 ? -1 : 1, m[4][4], bcd2[3], off2[3], pd2[3], qfac2, m2[4][4];
        MP_CHECK_OK(mp_nifti_quatern_to_mat(m, bcd, off, pd, qfac, 53));
        mp_nifti_mat_to_quatern(m, bcd2, off2, pd2, &qfac2);
        MP_CHECK(qfac2 == qfac);
        MP_CHECK_OK(mp_nifti_quatern_to_mat(m2, bcd2, off2, pd2, qfac2, 53));
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) MP_CHECK_NEAR(m[r][c], m2[r][c], 1e-12);
        for (int i = 0; i < 3; i++) MP_CHECK_NEAR(pd[i], pd2[i], 1e-12);
    }
    double bad[3] = {0.9, 0.9, 0.9}, z[3] = {0, 0, 0}, one[3] = {1, 1, 1}, m[4][4];
    MP_CHECK(mp_nifti_quatern_to_mat(m, bad, z, one, 1, 24) == MP_ERR_FORMAT);
}

/* Patches the xform fields of a valid NIfTI-1 image. */
static void set_codes(uint8_t *b, int qcode, int scode) {
    put16(b, 252, qcode);
    put16(b, 254, scode);
}

static void test_affine_selection_rules(void) {
    size_t len;
    uint8_t *b = valid_nii(&len, 1, NULL);
    MP_CHECK(b);
    /* dims 6x5x4, pixdim (2, 3, 4): no xform -> x flipped, centred. */
    putf32(b, 80, 2), putf32(b, 84, 3), putf32(b, 88, 4);
    set_codes(b, 0, 0);
    mp_vol_t *r = NULL;
    MP_CHECK_OK(mp_nifti_read_mem(&r, "m", b, len, 0, NULL));
    double want[3][4] = {{-2, 0, 0, 5}, {0, 3, 0, -6}, {0, 0, 4, -6}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) MP_CHECK_NEAR(r->affine[i][j], want[i][j], 1e-12);
    mp_vol_free(r);
    /* Zero and negative pixdims count as 1 and |x|. */
    putf32(b, 80, 0), putf32(b, 84, -3);
    MP_CHECK_OK(mp_nifti_read_mem(&r, "m", b, len, 0, NULL));
    MP_CHECK_NEAR(r->affine[0][0], -1, 0);
    MP_CHECK_NEAR(r->affine[1][1], 3, 0);
    mp_vol_free(r);
    /* qform only: identity quaternion, qfac -1 flips z; offsets kept. */
    putf32(b, 80, 2), putf32(b, 84, 3), putf32(b, 76, -1);
    for (int i = 0; i < 3; i++) putf32(b, 256 + 4 * (size_t)i, 0), putf32(b, 268 + 4 * (size_t)i, (float)(i + 1));
    set_codes(b, 1, 0);
    MP_CHECK_OK(mp_nifti_read_mem(&r, "m", b, len, 0, NULL));
    double wq[3][4] = {{2, 0, 0, 1}, {0, 3, 0, 2}, {0, 0, -4, 3}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) MP_CHECK_NEAR(r->affine[i][j], wq[i][j], 1e-12);
    MP_CHECK(r->meta.qform_code == 1 && r->meta.sform_code == 0);
    mp_vol_free(r);
    /* sform wins when both are set; invalid codes count as 0. */
    for (int i = 0; i < 12; i++) putf32(b, 280 + 4 * (size_t)i, (float)(i + 1));
    set_codes(b, 1, 3);
    MP_CHECK_OK(mp_nifti_read_mem(&r, "m", b, len, 0, NULL));
    MP_CHECK(r->affine[0][0] == 1 && r->affine[2][3] == 12 && r->affine[3][3] == 1);
    mp_vol_free(r);
    set_codes(b, 1, 9);
    MP_CHECK_OK(mp_nifti_read_mem(&r, "m", b, len, 0, NULL));
    MP_CHECK(r->affine[2][2] == -4 && r->meta.sform_code == 0);
    mp_vol_free(r);
    free(b);
}

static void test_shear_goes_to_sform_only(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_U8, 4, 4, 4, 1), *r = NULL;
    MP_CHECK(v);
    double a[4][4] = {{1, 0.3, 0, 5}, {0, 1, 0, 6}, {0, 0.2, 2, 7}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, a);
    MP_CHECK_OK(mp_image_write(tmp_path("shear.nii"), v, NULL));
    MP_CHECK_OK(mp_image_read(&r, tmp_path("shear.nii")));
    MP_CHECK(affine_diff(v, r) < 1e-6); /* sform: exact (to float32) */
    mp_vol_free(r);
    mp_nifti_header_t h;
    MP_CHECK_OK(mp_nifti_read_header(&h, tmp_path("shear.nii")));
    double q[4][4], one_pd[3] = {h.pixdim[1], h.pixdim[2], h.pixdim[3]};
    MP_CHECK_OK(mp_nifti_quatern_to_mat(q, h.quatern, h.qoffset, one_pd, h.pixdim[0], 24));
    /* The qform is rigid: orthogonal columns with the column norms of the affine. */
    for (int c1 = 0; c1 < 3; c1++)
        for (int c2 = c1 + 1; c2 < 3; c2++)
            MP_CHECK_NEAR(q[0][c1] * q[0][c2] + q[1][c1] * q[1][c2] + q[2][c1] * q[2][c2], 0, 1e-5);
    for (int c = 0; c < 3; c++) MP_CHECK_NEAR(one_pd[c], v->spacing[c], 1e-5);
    for (int i = 0; i < 3; i++) MP_CHECK_NEAR(q[i][3], a[i][3], 1e-6);
    mp_vol_free(v);
}

static void test_analyze_pair(void) {
    /* An Analyze 7.5 pair: NIfTI pair header with the magic cleared, SPM
     * origin (2, 3, 1) in the originator field and a scale factor. */
    mp_vol_t *v = make_vol(MP_DTYPE_I16, 6, 5, 4, 1);
    MP_CHECK(v);
    MP_CHECK_OK(mp_image_write(tmp_path("ana.hdr"), v, NULL));
    uint8_t hb[348];
    FILE *f = fopen(tmp_path("ana.hdr"), "rb");
    MP_CHECK(f && fread(hb, 1, 348, f) == 348);
    fclose(f);
    memset(hb + 252, 0, 96); /* originator, xforms, ..., magic */
    put16(hb, 253, 2), put16(hb, 255, 3), put16(hb, 257, 1);
    putf32(hb, 80, 2), putf32(hb, 84, 2), putf32(hb, 88, 3);
    putf32(hb, 112, 0.5f), putf32(hb, 116, 0);
    MP_CHECK(write_bytes(tmp_path("ana.hdr"), hb, 348) == 0);
    mp_vol_t *r = NULL;
    mp_nifti_header_t h;
    MP_CHECK_OK(mp_nifti_read(&r, tmp_path("ana.img"), &h));
    MP_CHECK(h.version == 0 && same_data(v, r));
    double want[3][4] = {{-2, 0, 0, 2}, {0, 2, 0, -4}, {0, 0, 3, 0}};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) MP_CHECK_NEAR(r->affine[i][j], want[i][j], 1e-12);
    MP_CHECK(r->scl_slope == 0.5 && r->scl_inter == 0);
    mp_vol_free(r);
    /* Implausible origin: centred instead. */
    put16(hb, 253, 500);
    MP_CHECK(write_bytes(tmp_path("ana.hdr"), hb, 348) == 0);
    MP_CHECK_OK(mp_nifti_read(&r, tmp_path("ana.hdr"), &h));
    MP_CHECK_NEAR(r->affine[0][3], 2 * 2.5, 1e-12);
    MP_CHECK_NEAR(r->affine[1][3], -2 * 2, 1e-12);
    mp_vol_free(r);
    mp_vol_free(v);
}

/* ---- containers and gzip paths ---- */
static void test_gzip_variants(void) {
    mp_vol_t *v;
    size_t len;
    uint8_t *raw = valid_nii(&len, 1, &v), *z1, *z2;
    MP_CHECK(raw);
    size_t l1, l2;
    /* Two members: header, then data. */
    MP_CHECK_OK(mp_gz_compress("t", raw, 352, 6, &z1, &l1));
    MP_CHECK_OK(mp_gz_compress("t", raw + 352, len - 352, 1, &z2, &l2));
    uint8_t *multi = malloc(l1 + l2 + 64);
    memcpy(multi, z1, l1);
    memcpy(multi + l1, z2, l2);
    mp_vol_t *r = NULL;
    MP_CHECK_OK(mp_nifti_read_mem(&r, "multi", multi, l1 + l2, 1, NULL));
    MP_CHECK(same_data(v, r));
    mp_vol_free(r);
    /* Trailing zero padding and junk after the image is complete are ignored. */
    memset(multi + l1 + l2, 0, 64);
    MP_CHECK_OK(mp_nifti_read_mem(&r, "multi", multi, l1 + l2 + 64, 1, NULL));
    mp_vol_free(r);
    free(z1), free(z2), free(multi);
    /* A stream holding more bytes than the image needs (zlib path). */
    uint8_t *longer = calloc(1, len + 5000);
    memcpy(longer, raw, len);
    MP_CHECK_OK(mp_gz_compress("t", longer, len + 5000, 6, &z1, &l1));
    MP_CHECK_OK(mp_nifti_read_mem(&r, "long", z1, l1, 1, NULL));
    MP_CHECK(same_data(v, r));
    mp_vol_free(r);
    /* A gzipped file named .nii and a raw file named .nii.gz both read. */
    MP_CHECK(write_bytes(tmp_path("really_gz.nii"), z1, l1) == 0);
    MP_CHECK_OK(mp_image_read(&r, tmp_path("really_gz.nii")));
    mp_vol_free(r);
    MP_CHECK(write_bytes(tmp_path("really_raw.nii.gz"), raw, len) == 0);
    MP_CHECK_OK(mp_image_read(&r, tmp_path("really_raw.nii.gz")));
    MP_CHECK(same_data(v, r));
    mp_vol_free(r);
    free(z1), free(longer), free(raw);
    mp_vol_free(v);
}

static void test_extensions_are_skipped(void) {
    mp_vol_t *v;
    size_t len;
    uint8_t *raw = valid_nii(&len, 1, &v);
    MP_CHECK(raw);
    size_t ext = 48, total = len + ext;
    uint8_t *f = calloc(1, total);
    memcpy(f, raw, 352);
    memcpy(f + 352 + ext, raw + 352, len - 352);
    f[348] = 1;
    put32(f, 352, 48), put32(f, 356, 6); /* one 48-byte comment extension */
    memcpy(f + 360, "hello from an extension", 23);
    putf32(f, 108, (float)(352 + ext));
    MP_CHECK(write_bytes(tmp_path("ext.nii"), f, total) == 0);
    mp_vol_t *r = NULL;
    mp_nifti_header_t h;
    MP_CHECK_OK(mp_nifti_read(&r, tmp_path("ext.nii"), &h));
    MP_CHECK(h.has_extensions && same_data(v, r));
    mp_vol_free(r);
    /* Extension claiming to be huge: the data is still found at vox_offset. */
    put32(f, 352, 0x7ffffff0);
    MP_CHECK(write_bytes(tmp_path("ext2.nii"), f, total) == 0);
    MP_CHECK_OK(mp_nifti_read(&r, tmp_path("ext2.nii"), NULL));
    MP_CHECK(same_data(v, r));
    mp_vol_free(r);
    free(f), free(raw);
    mp_vol_free(v);
}

static void test_mem_reader_matches_file_reader(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_F64, 7, 6, 5, 2), *a = NULL, *b = NULL;
    MP_CHECK(v);
    uint8_t *z;
    size_t zl;
    MP_CHECK_OK(mp_nifti_write_mem(&z, &zl, v, NULL, 1));
    MP_CHECK(write_bytes(tmp_path("mem.nii.gz"), z, zl) == 0);
    MP_CHECK_OK(mp_nifti_read_mem(&a, "mem", z, zl, 1, NULL));
    MP_CHECK_OK(mp_image_read(&b, tmp_path("mem.nii.gz")));
    MP_CHECK(same_data(a, b) && same_data(v, a) && affine_diff(a, b) == 0);
    free(z);
    mp_vol_free(a), mp_vol_free(b), mp_vol_free(v);
}

static void test_format_names(void) {
    MP_CHECK(mp_image_format_from_name("a/b.nii") == MP_FORMAT_NIFTI);
    MP_CHECK(mp_image_format_from_name("B.NII.GZ") == MP_FORMAT_NIFTI_GZ);
    MP_CHECK(mp_image_format_from_name("x.hdr") == MP_FORMAT_ANALYZE);
    MP_CHECK(mp_image_format_from_name("x.img.gz") == MP_FORMAT_ANALYZE);
    MP_CHECK(mp_image_format_from_name("x.dcm") == MP_FORMAT_DICOM);
    MP_CHECK(mp_image_format_from_name("x.png") == MP_FORMAT_UNKNOWN);
    MP_CHECK(strcmp(mp_nifti_datatype_name(1536), "float128") == 0);
    MP_CHECK(mp_nifti_datatype_code(MP_DTYPE_U16) == 512);
}

/* ---- hostile input ---- */
static void test_bad_headers(void) {
    size_t len;
    uint8_t *good = valid_nii(&len, 1, NULL), *b = malloc(len);
    MP_CHECK(good && b);
    const char *p = tmp_path("bad.nii");
    static char pc[1024];
    snprintf(pc, sizeof pc, "%s", p);
    p = pc;
#define PATCHED(stmt, code, what)                      \
    do {                                               \
        memcpy(b, good, len);                          \
        stmt;                                          \
        MP_CHECK(write_bytes(p, b, len) == 0);         \
        EXPECT_FAIL(p, code, what);                    \
    } while (0)
    PATCHED(put32(b, 0, 123), MP_ERR_FORMAT, "sizeof_hdr is 123");
    PATCHED(memcpy(b + 344, "abc", 4), MP_ERR_FORMAT, "wrong magic");
    PATCHED(memcpy(b + 344, "ni1", 4), MP_ERR_FORMAT, "pair magic");
    PATCHED(memcpy(b + 344, "n+2", 4), MP_ERR_FORMAT, "size mismatch");
    PATCHED(put16(b, 40, 0), MP_ERR_FORMAT, "dim[0] is 0");
    PATCHED(put16(b, 40, 8), MP_ERR_FORMAT, "dim[0] is 8");
    PATCHED(put16(b, 44, -5), MP_ERR_FORMAT, "dim[2] is -5");
    PATCHED(put16(b, 42, 0), MP_ERR_FORMAT, "dim[1] is 0");
    PATCHED((put16(b, 40, 5), put16(b, 50, 2)), MP_ERR_UNSUPPORTED, "dim[5] is 2");
    PATCHED(put16(b, 70, 77), MP_ERR_FORMAT, "datatype code 77");
    PATCHED(put16(b, 70, 32), MP_ERR_UNSUPPORTED, "complex64");
    PATCHED(put16(b, 70, 1536), MP_ERR_UNSUPPORTED, "float128");
    PATCHED(put16(b, 70, 1792), MP_ERR_UNSUPPORTED, "complex128");
    PATCHED(putf32(b, 108, 1e9f), MP_ERR_FORMAT, "beyond the end of the file");
    PATCHED(putf32(b, 108, 100), MP_ERR_FORMAT, "inside the header");
    PATCHED(putf32(b, 108, -352), MP_ERR_FORMAT, "negative or not a number");
    PATCHED(putf32(b, 108, NAN), MP_ERR_FORMAT, "negative or not a number");
    PATCHED(put16(b, 42, 32767), MP_ERR_FORMAT, "truncated");
    PATCHED((put16(b, 252, 1), put16(b, 254, 0), putf32(b, 256, 0.9f), putf32(b, 260, 0.9f)), MP_ERR_FORMAT,
            "unit quaternion");
#undef PATCHED
    /* Truncated header and truncated data. */
    MP_CHECK(write_bytes(p, good, 200) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "truncated header: 200 of 348 bytes");
    MP_CHECK(write_bytes(p, good, 2) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "too short");
    MP_CHECK(write_bytes(p, good, len - 7) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "truncated: the data needs 240 bytes from offset 352");
    MP_CHECK(write_bytes(p, good, 0) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "too short");
    free(good), free(b);
}

static void test_bad_sizes_and_limits(void) {
    size_t len;
    uint8_t *good = valid_nii(&len, 2, NULL);
    MP_CHECK(good);
    const char *p = tmp_path("huge.nii");
    static char pc[1024];
    snprintf(pc, sizeof pc, "%s", p);
    p = pc;
    /* NIfTI-2 dims whose product overflows 64 bits. */
    put64(good, 24, (uint64_t)1 << 40), put64(good, 32, (uint64_t)1 << 40), put64(good, 40, (uint64_t)1 << 40);
    MP_CHECK(write_bytes(p, good, len) == 0);
    EXPECT_FAIL(p, MP_ERR_LIMIT, "overflows");
    /* Fits in 64 bits but exceeds the memory limit: refused before allocating. */
    put64(good, 24, 1000), put64(good, 32, 1000), put64(good, 40, 1000);
    MP_CHECK(write_bytes(p, good, len) == 0);
    uint64_t old = mp_mem_limit();
    mp_mem_set_limit(1 << 20);
    EXPECT_FAIL(p, MP_ERR_LIMIT, "memory limit");
    mp_mem_set_limit(old);
    /* Under the limit but far beyond the file: truncated, no allocation. */
    EXPECT_FAIL(p, MP_ERR_FORMAT, "truncated");
    /* The same header gzipped: the compressed size bounds what it can hold. */
    uint8_t *z;
    size_t zl;
    MP_CHECK_OK(mp_gz_compress("t", good, len, 6, &z, &zl));
    snprintf(pc, sizeof pc, "%s", tmp_path("huge.nii.gz"));
    MP_CHECK(write_bytes(p, z, zl) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "cannot hold");
    free(z);
    free(good);
}

static void test_bad_gzip(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_F32, 20, 20, 20, 1);
    MP_CHECK(v);
    uint8_t *z;
    size_t zl;
    MP_CHECK_OK(mp_nifti_write_mem(&z, &zl, v, NULL, 1));
    mp_vol_free(v);
    static char p[1024];
    snprintf(p, sizeof p, "%s", tmp_path("badgz.nii.gz"));
    /* Truncated in the middle of the deflate data. */
    MP_CHECK(write_bytes(p, z, zl / 2) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "truncated gzip stream");
    /* Trailer cut off: all data present but no CRC/ISIZE to check. */
    MP_CHECK(write_bytes(p, z, zl - 8) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "gzip");
    /* Corrupt deflate data. */
    uint8_t *c = malloc(zl);
    memcpy(c, z, zl);
    for (size_t i = zl / 3; i < zl / 3 + 64; i++) c[i] ^= 0x5a;
    MP_CHECK(write_bytes(p, c, zl) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "gzip");
    /* Wrong CRC in the trailer. */
    memcpy(c, z, zl);
    c[zl - 8] ^= 1;
    MP_CHECK(write_bytes(p, c, zl) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "CRC-32 mismatch");
    /* Wrong ISIZE in the trailer. */
    memcpy(c, z, zl);
    c[zl - 4] ^= 1;
    MP_CHECK(write_bytes(p, c, zl) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "ISIZE mismatch");
    /* Garbage inside the header bytes of the gzip stream. */
    memcpy(c, z, zl);
    c[3] = 0xff; /* reserved flag bits */
    MP_CHECK(write_bytes(p, c, zl) == 0);
    EXPECT_FAIL(p, MP_ERR_FORMAT, "gzip");
    /* Only the gzip magic. */
    MP_CHECK(write_bytes(p, z, 2) == 0);
    {
        mp_vol_t *r = NULL;
        MP_CHECK(mp_image_read(&r, p) == MP_ERR_FORMAT && r == NULL);
        MP_CHECK(strstr(mp_error_message(), p) != NULL);
    }
    free(c);
    free(z);
}

static void test_missing_pair_member(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_U8, 3, 3, 3, 1);
    MP_CHECK(v);
    MP_CHECK_OK(mp_image_write(tmp_path("lonely.hdr"), v, NULL));
    mp_vol_free(v);
    MP_CHECK(unlink(tmp_path("lonely.img")) == 0);
    static char p[1024];
    snprintf(p, sizeof p, "%s", tmp_path("lonely.hdr"));
    EXPECT_FAIL(p, MP_ERR_IO, "does not exist");
    snprintf(p, sizeof p, "%s", tmp_path("nothing_here.nii"));
    EXPECT_FAIL(p, MP_ERR_IO, "cannot open");
}

static int count_entries(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    if (d) closedir(d);
    return n;
}

static void test_atomic_write_leaves_nothing_on_failure(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_I16, 4, 4, 4, 1);
    MP_CHECK(v);
    const char *dir = mp_test_tmpdir("nifti");
    /* The target name is an existing directory: the final rename fails. */
    static char p[1024];
    snprintf(p, sizeof p, "%s/atomic_dir.nii.gz", dir);
    MP_CHECK(mkdir(p, 0777) == 0);
    MP_CHECK(mp_image_write(p, v, NULL) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), p) != NULL);
    snprintf(p, sizeof p, "%s/atomic_dir.img", dir);
    MP_CHECK(mkdir(p, 0777) == 0);
    MP_CHECK(mp_image_write(p, v, NULL) != MP_OK);
    /* Only the two directories: no temporaries, no lone .hdr. */
    MP_CHECK(count_entries(dir, "atomic_") == 2);
    /* No such folder. */
    snprintf(p, sizeof p, "%s/no/such/dir/x.nii", dir);
    MP_CHECK(mp_image_write(p, v, NULL) == MP_ERR_IO);
    /* A bad volume writes nothing. */
    snprintf(p, sizeof p, "%s/atomic_bad.nii", dir);
    mp_vol_t bad = *v;
    bad.data = NULL;
    MP_CHECK(mp_image_write(p, &bad, NULL) == MP_ERR_ARG);
    MP_CHECK(mp_image_write(tmp_path("x.png"), v, NULL) == MP_ERR_ARG);
    MP_CHECK(count_entries(dir, "atomic_") == 2);
    mp_vol_free(v);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    MP_RUN(test_roundtrip_nii);
    MP_RUN(test_roundtrip_every_dtype_and_container);
    MP_RUN(test_4d_channels_and_time_step);
    MP_RUN(test_nifti2_when_dims_do_not_fit);
    MP_RUN(test_big_endian_files);
    MP_RUN(test_rgb24_and_rgba32_become_channels);
    MP_RUN(test_scaling_identity_rules);
    MP_RUN(test_quaternion_roundtrip);
    MP_RUN(test_affine_selection_rules);
    MP_RUN(test_shear_goes_to_sform_only);
    MP_RUN(test_analyze_pair);
    MP_RUN(test_gzip_variants);
    MP_RUN(test_extensions_are_skipped);
    MP_RUN(test_mem_reader_matches_file_reader);
    MP_RUN(test_format_names);
    MP_RUN(test_bad_headers);
    MP_RUN(test_bad_sizes_and_limits);
    MP_RUN(test_bad_gzip);
    MP_RUN(test_missing_pair_member);
    MP_RUN(test_atomic_write_leaves_nothing_on_failure);
    nftw(mp_test_tmpdir("nifti"), rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return mp_test_summary();
}
