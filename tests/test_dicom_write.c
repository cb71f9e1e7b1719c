/* DICOM writing: UID form and uniqueness, DS formatting, the element encoder's
 * VR rules and byte layout, file meta group, pixel value plans of the series
 * writer (read back from the written files), SEG bit packing across frame
 * boundaries and argument errors; then series and SEG objects checked by
 * independent tools (pydicom, dciodvfy, dcm2niix + nibabel) through
 * tests/py/dicom_write_check.py. */
#include "harness.h"
#include "io/dcmw_internal.h"
#include "medpipe/dicom_write.h"
#include "medpipe/medpipe.h"

#include <dirent.h>

#define TG(g, e) MP_DCMW_TAG(0x##g, 0x##e)

/* ---- UIDs ---- */
static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

/* Parses the decimal part of a 2.25 UID into 16 big-endian bytes; -1 on overflow. */
static int uid_to_bytes(const char *uid, uint8_t out[16]) {
    uint32_t limb[4] = {0, 0, 0, 0}; /* big-endian limbs */
    for (const char *p = uid + 5; *p; p++) {
        uint64_t carry = (uint64_t)(*p - '0');
        for (int i = 3; i >= 0; i--) {
            uint64_t v = (uint64_t)limb[i] * 10 + carry;
            limb[i] = (uint32_t)v;
            carry = v >> 32;
        }
        if (carry) return -1;
    }
    for (int i = 0; i < 16; i++) out[i] = (uint8_t)(limb[i / 4] >> (24 - 8 * (i % 4)));
    return 0;
}

static void test_uid_random(void) {
    enum { N = 2000 };
    static char uids[N][MP_DICOM_UID_SIZE];
    for (int i = 0; i < N; i++) {
        MP_CHECK_OK(mp_dicom_uid_generate(uids[i]));
        MP_CHECKF(strncmp(uids[i], "2.25.", 5) == 0 && strlen(uids[i]) <= 44, "%s", uids[i]);
        MP_CHECKF(mp_dicom_uid_is_valid(uids[i]), "%s", uids[i]);
        uint8_t b[16];
        MP_CHECK(uid_to_bytes(uids[i], b) == 0);
        MP_CHECKF((b[6] >> 4) == 4 && (b[8] >> 6) == 2, "%s: not a version-4 UUID", uids[i]);
    }
    qsort(uids, N, sizeof uids[0], cmp_str);
    for (int i = 1; i < N; i++) MP_CHECKF(strcmp(uids[i - 1], uids[i]) != 0, "duplicate %s", uids[i]);
}

static void test_uid_deterministic(void) {
    mp_rng_t a, b, c;
    mp_rng_init(&a, 7, 1);
    mp_rng_init(&b, 7, 1);
    mp_rng_init(&c, 8, 1);
    for (int i = 0; i < 50; i++) {
        char x[MP_DICOM_UID_SIZE], y[MP_DICOM_UID_SIZE], z[MP_DICOM_UID_SIZE];
        mp_dicom_uid_from_rng(x, &a);
        MP_CHECK_OK(mp_dicom_uid_make(y, &b));
        mp_dicom_uid_from_rng(z, &c);
        MP_CHECK(strcmp(x, y) == 0 && strcmp(x, z) != 0 && mp_dicom_uid_is_valid(x));
    }
    MP_CHECK(mp_dicom_uid_is_valid("1.2.840.10008.5.1.4.1.1.2"));
    MP_CHECK(mp_dicom_uid_is_valid("0.1"));
    const char *bad[] = {"", "1..2", "1.02", ".1", "1.", "1.2a", "1.2.3 ",
                         "1.2345678901234567890123456789012345678901234567890123456789012345"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) MP_CHECKF(!mp_dicom_uid_is_valid(bad[i]), "'%s'", bad[i]);
}

/* ---- encoder ---- */
static void test_ds_format(void) {
    const double v[] = {0.0, -0.0, 1.0 / 3, -2.0 / 3e-7, 1e-20, -123456789.123456789, 1e300, M_PI * 1e5, 0.1, 65535};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char t[17];
        int ok;
        double back = mp_dcmw_format_ds(v[i], t, &ok);
        MP_CHECKF(ok && strlen(t) <= 16 && strtod(t, NULL) == back, "%g -> '%s'", v[i], t);
        MP_CHECKF(fabs(back - v[i]) <= 1e-11 * fabs(v[i]), "%.17g -> '%s'", v[i], t);
        MP_CHECKF(t[0] != '-' || v[i] < 0, "%g -> '%s'", v[i], t);
    }
    char t[17];
    int ok;
    mp_dcmw_format_ds(NAN, t, &ok);
    MP_CHECK(!ok);
    mp_dcmw_format_ds(INFINITY, t, &ok);
    MP_CHECK(!ok);
}

static void test_encoder_layout(void) {
    mp_dcmw_buf_t b;
    mp_dcmw_buf_init(&b);
    uint16_t us = 0x1234;
    static const uint8_t ob[3] = {1, 2, 3};
    mp_dcmw_str(&b, TG(0008, 0016), "UI", "1.2.3");  /* odd: NUL pad */
    mp_dcmw_str(&b, TG(0008, 0060), "CS", "CT");     /* even: no pad */
    mp_dcmw_str(&b, TG(0010, 0010), "PN", "Doe^J");  /* odd: space pad */
    mp_dcmw_seq_begin(&b, TG(0040, A170));
    mp_dcmw_item_begin(&b);
    mp_dcmw_us(&b, TG(0028, 0010), &us, 1);
    mp_dcmw_item_end(&b);
    mp_dcmw_seq_end(&b);
    mp_dcmw_bytes(&b, TG(7FE0, 0010), "OB", ob, 3);
    MP_CHECK_OK(b.err);
    static const uint8_t want[] = {
        0x08, 0, 0x16, 0, 'U', 'I', 6, 0, '1', '.', '2', '.', '3', 0,
        0x08, 0, 0x60, 0, 'C', 'S', 2, 0, 'C', 'T',
        0x10, 0, 0x10, 0, 'P', 'N', 6, 0, 'D', 'o', 'e', '^', 'J', ' ',
        0x40, 0, 0x70, 0xA1, 'S', 'Q', 0, 0, 18, 0, 0, 0,      /* sequence: item header + 10 */
        0xFE, 0xFF, 0x00, 0xE0, 10, 0, 0, 0,                   /* item of 10 bytes */
        0x28, 0, 0x10, 0, 'U', 'S', 2, 0, 0x34, 0x12,
        0xE0, 0x7F, 0x10, 0, 'O', 'B', 0, 0, 4, 0, 0, 0, 1, 2, 3, 0};
    MP_CHECKF(b.len == sizeof want, "%zu bytes, want %zu", b.len, sizeof want);
    MP_CHECK(memcmp(b.data, want, sizeof want) == 0);
    mp_dcmw_buf_deinit(&b);
}

/* Each call must fail with `code`, and the failure must stick. */
static int expect_fail(int code, void (*emit)(mp_dcmw_buf_t *)) {
    mp_dcmw_buf_t b;
    mp_dcmw_buf_init(&b);
    emit(&b);
    size_t len = b.len;
    int first = b.err;
    mp_dcmw_str(&b, TG(FFF0, 0001), "LO", "after"); /* ignored after a failure */
    int ok = first == code && b.len == len && mp_error_message()[0];
    mp_dcmw_buf_deinit(&b);
    return ok;
}

static void bad_cs(mp_dcmw_buf_t *b) { mp_dcmw_str(b, TG(0008, 0060), "CS", "ct"); }
static void bad_lo(mp_dcmw_buf_t *b) {
    mp_dcmw_str(b, TG(0008, 103E), "LO", "0123456789012345678901234567890123456789012345678901234567890123X");
}
static void bad_uid(mp_dcmw_buf_t *b) { mp_dcmw_str(b, TG(0008, 0018), "UI", "1.2.03"); }
static void bad_order(mp_dcmw_buf_t *b) {
    mp_dcmw_str(b, TG(0010, 0010), "PN", "A");
    mp_dcmw_str(b, TG(0008, 0060), "CS", "CT");
}
static void bad_order_in_item(mp_dcmw_buf_t *b) {
    mp_dcmw_seq_begin(b, TG(0008, 1115));
    mp_dcmw_item_begin(b);
    mp_dcmw_str(b, TG(0020, 000E), "UI", "1.2");
    mp_dcmw_str(b, TG(0008, 1150), "UI", "1.2");
}
static void bad_utf8(mp_dcmw_buf_t *b) { mp_dcmw_str(b, TG(0010, 0010), "PN", "M\xc3\xbcller"); }
static void bad_short_len(mp_dcmw_buf_t *b) {
    static uint16_t many[40000];
    mp_dcmw_us(b, TG(0028, 0010), many, 40000);
}
static void bad_date(mp_dcmw_buf_t *b) { mp_dcmw_str(b, TG(0008, 0020), "DA", "2024-1-1"); }
static void bad_pn(mp_dcmw_buf_t *b) { mp_dcmw_str(b, TG(0010, 0010), "PN", "a=b=c=d"); }
static void bad_item(mp_dcmw_buf_t *b) { mp_dcmw_item_begin(b); }

static void test_encoder_rules(void) {
    MP_CHECK(expect_fail(MP_ERR_ARG, bad_cs));
    MP_CHECK(expect_fail(MP_ERR_ARG, bad_lo));
    MP_CHECK(expect_fail(MP_ERR_ARG, bad_uid));
    MP_CHECK(expect_fail(MP_ERR_INTERNAL, bad_order));
    MP_CHECK(expect_fail(MP_ERR_INTERNAL, bad_order_in_item));
    MP_CHECK(expect_fail(MP_ERR_ARG, bad_utf8));
    MP_CHECK(expect_fail(MP_ERR_LIMIT, bad_short_len));
    MP_CHECK(expect_fail(MP_ERR_ARG, bad_date));
    MP_CHECK(expect_fail(MP_ERR_ARG, bad_pn));
    MP_CHECK(expect_fail(MP_ERR_INTERNAL, bad_item));
    /* With ISO_IR 192 declared, UTF-8 text counts characters, not bytes. */
    mp_dcmw_buf_t b;
    mp_dcmw_buf_init(&b);
    MP_CHECK_OK(mp_dcmw_charset(&b, 1));
    MP_CHECK_OK(mp_dcmw_str(&b, TG(0010, 0010), "PN", "M\xc3\xbcller^J\xc3\xb6rg"));
    MP_CHECK_OK(mp_dcmw_str(&b, TG(0010, 0020), "LO", "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                                                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"));
    MP_CHECK(mp_dcmw_str(&b, TG(0010, 0021), "LO", "\xc3(") == MP_ERR_ARG);
    mp_dcmw_buf_deinit(&b);
    /* Multi-valued strings are checked value by value. */
    mp_dcmw_buf_init(&b);
    MP_CHECK_OK(mp_dcmw_str(&b, TG(0008, 0008), "CS", "DERIVED\\PRIMARY\\AXIAL"));
    MP_CHECK(mp_dcmw_str(&b, TG(0008, 0016), "SH", "0123456789\\0123456789ABCDEFG") == MP_ERR_ARG);
    mp_dcmw_buf_deinit(&b);
}

static void test_file_meta(void) {
    mp_dcmw_buf_t ds;
    mp_dcmw_buf_init(&ds);
    mp_dcmw_str(&ds, TG(0008, 0016), "UI", "1.2.840.10008.5.1.4.1.1.2");
    uint8_t *f;
    size_t n;
    MP_CHECK_OK(mp_dcmw_file_bytes(&f, &n, "1.2.840.10008.5.1.4.1.1.2", "2.25.1", &ds));
    int zeros = 1;
    for (int i = 0; i < 128; i++) zeros &= f[i] == 0;
    MP_CHECK(zeros && memcmp(f + 128, "DICM", 4) == 0);
    MP_CHECK(memcmp(f + 132, "\x02\x00\x00\x00UL\x04\x00", 8) == 0);
    uint32_t glen = f[140] | f[141] << 8 | f[142] << 16 | (uint32_t)f[143] << 24;
    /* The group length covers the meta elements up to the data set. */
    MP_CHECKF(144 + glen + ds.len == n, "group length %u, file %zu, data set %zu", glen, n, ds.len);
    MP_CHECK(memcmp(f + 144 + glen, ds.data, ds.len) == 0);
    MP_CHECK(memmem(f, n, MP_DCMW_EXPLICIT_LE, strlen(MP_DCMW_EXPLICIT_LE)) != NULL);
    /* Walk the meta elements: all group 0002, lengths adding up to glen. */
    size_t at = 144, nel = 0;
    while (at < 144 + glen) {
        MP_CHECK(f[at] == 0x02 && f[at + 1] == 0x00);
        int lng = f[at + 4] == 'O' && f[at + 5] == 'B';
        size_t vl = lng ? (size_t)(f[at + 8] | f[at + 9] << 8) : (size_t)(f[at + 6] | f[at + 7] << 8);
        MP_CHECK(vl % 2 == 0);
        at += (lng ? 12 : 8) + vl;
        nel++;
    }
    MP_CHECK(at == 144 + glen && nel == 6);
    free(f);
    /* Unclosed sequences are refused. */
    mp_dcmw_seq_begin(&ds, TG(0008, 1115));
    MP_CHECK(mp_dcmw_file_bytes(&f, &n, "1.2", "2.25.1", &ds) == MP_ERR_INTERNAL && f == NULL);
    mp_dcmw_buf_deinit(&ds);
}

/* ---- helpers for written files ---- */
static char tmp_root[600];

/* The pixel data element is the last one in every file medpipe writes:
 * returns its value (offset and length inside the file bytes). */
static int tail_pixels(const char *path, char vr1, uint8_t **file, size_t *off, size_t *len) {
    size_t n;
    if (mp_file_read_all(path, file, &n)) return -1;
    for (size_t at = n >= 12 ? n - 12 : 0; at > 132; at--) {
        const uint8_t *h = *file + at;
        if (h[0] == 0xE0 && h[1] == 0x7F && h[2] == 0x10 && h[3] == 0 && h[4] == 'O' && h[5] == vr1) {
            size_t vl = h[8] | h[9] << 8 | h[10] << 16 | (size_t)h[11] << 24;
            if (at + 12 + vl != n) return -1;
            *off = at + 12;
            *len = vl;
            return 0;
        }
    }
    return -1;
}

/* Rotation Rz*Ry*Rx (degrees) with columns scaled by spacing. */
static void make_affine(double a[4][4], double ax, double ay, double az, const double sp[3], const double org[3]) {
    double cx = cos(ax * M_PI / 180), sx = sin(ax * M_PI / 180), cy = cos(ay * M_PI / 180), sy = sin(ay * M_PI / 180);
    double cz = cos(az * M_PI / 180), sz = sin(az * M_PI / 180);
    double r[3][3] = {{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
                      {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
                      {-sy, cy * sx, cy * cx}};
    mp_mat4_identity(a);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) a[i][j] = r[i][j] * sp[j];
        a[i][3] = org[i];
    }
}

static double real_value(const mp_vol_t *v, int64_t i) {
    double s = v->scl_slope == 0 ? 1 : v->scl_slope, o = v->scl_slope == 0 ? 0 : v->scl_inter;
    return mp_vol_get(v, i) * s + o;
}

/* Writes v as a series and reads every file's pixels back with the reported
 * rescale: the largest error seen must be the one reported. */
static int plan_case(const char *name, const mp_vol_t *v, mp_dicom_write_info_t *info) {
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/plan_%s", tmp_root, name);
    mp_dicom_write_opts_t o;
    mp_dicom_write_opts_init(&o);
    if (mp_dicom_write_series(dir, v, &o, info, NULL)) {
        fprintf(stderr, "    %s: %s\n", name, mp_error_message());
        return 0;
    }
    double seen = 0;
    int64_t npix = v->dim[0] * v->dim[1];
    for (int64_t k = 0; k < v->dim[2]; k++) {
        snprintf(path, sizeof path, "%s/IM%05lld.dcm", dir, (long long)(k + 1));
        uint8_t *f;
        size_t off, len;
        if (tail_pixels(path, 'W', &f, &off, &len) || len != (size_t)npix * 2) return 0;
        for (int64_t i = 0; i < npix; i++) {
            unsigned u = f[off + 2 * i] | f[off + 2 * i + 1] << 8;
            double stored = info->pixel_signed ? (double)(int16_t)u : (double)u;
            double e = fabs(stored * info->slope + info->intercept - real_value(v, k * npix + i));
            if (e > seen) seen = e;
        }
        free(f);
    }
    if (seen != info->max_abs_error || info->files != v->dim[2]) {
        fprintf(stderr, "    %s: error seen %g, reported %g\n", name, seen, info->max_abs_error);
        return 0;
    }
    return 1;
}

static mp_vol_t *small_vol(mp_dtype_t t, double (*fn)(int64_t)) {
    int64_t d[4] = {6, 5, 3, 1};
    mp_vol_t *v;
    if (mp_vol_create(&v, d, t)) return NULL;
    for (int64_t i = 0; i < mp_vol_voxels(v); i++) mp_vol_set(v, i, fn(i));
    return v;
}

static double f_hu(int64_t i) { return (double)(i * 53 % 4001) - 1000; }
static double f_u16(int64_t i) { return (double)(i * 7919 % 60001); }
static double f_off(int64_t i) { return 100000 + (double)(i * 7919 % 50001); }
static double f_wide(int64_t i) { return (double)(i * 7919 % 200001) - 100000; }
static double f_frac(int64_t i) { return 4.25 + 7.95 * sin((double)i * 0.37); }
static double f_small(int64_t i) { return (double)(i % 200); }
static double f_const(int64_t i) { (void)i; return 0.25; }

static void test_pixel_plans(void) {
    mp_dicom_write_info_t in;
    mp_vol_t *v = small_vol(MP_DTYPE_I16, f_hu);
    MP_CHECK(v && plan_case("i16", v, &in) && in.exact && in.pixel_signed && in.slope == 1 && in.intercept == 0);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_U16, f_u16);
    MP_CHECK(v && plan_case("u16", v, &in) && in.exact && !in.pixel_signed && in.slope == 1 && in.intercept == 0);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_I32, f_off);
    MP_CHECK(v && plan_case("i32off", v, &in) && in.exact && !in.pixel_signed && in.intercept == 100000);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_I32, f_wide);
    MP_CHECK(v && plan_case("i32wide", v, &in) && !in.exact && in.pixel_signed);
    MP_CHECKF(in.max_abs_error <= in.slope / 2 * (1 + 1e-9) && in.slope < 200001.0 / 65000, "slope %g err %g",
              in.slope, in.max_abs_error);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_F32, f_hu);
    MP_CHECK(v && plan_case("f32int", v, &in) && in.exact && in.pixel_signed && in.slope == 1);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_F64, f_frac);
    MP_CHECK(v && plan_case("f64frac", v, &in) && !in.exact && in.max_abs_error > 0);
    MP_CHECKF(in.max_abs_error <= in.slope / 2 * (1 + 1e-9) && in.slope < 16.0 / 65000, "slope %g err %g", in.slope,
              in.max_abs_error);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_U8, f_small);
    v->scl_slope = 0.5;
    v->scl_inter = -10;
    MP_CHECK(v && plan_case("u8scaled", v, &in) && in.exact && in.slope == 0.5 && in.intercept == -10);
    mp_vol_free(v);
    v = small_vol(MP_DTYPE_F32, f_const);
    MP_CHECK(v && plan_case("const", v, &in) && in.exact && in.intercept == 0.25);
    mp_vol_free(v);
}

static int dir_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void test_series_errors(void) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/err_series", tmp_root);
    mp_dicom_write_opts_t o;
    mp_dicom_write_opts_init(&o);
    int64_t d4[4] = {4, 4, 2, 2};
    mp_vol_t *v;
    MP_CHECK_OK(mp_vol_create(&v, d4, MP_DTYPE_I16));
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_UNSUPPORTED);
    mp_vol_free(v);
    int64_t d[4] = {4, 4, 2, 1};
    MP_CHECK_OK(mp_vol_create(&v, d, MP_DTYPE_F32));
    double sheared[4][4] = {{1, 0.2, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, sheared);
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_ARG);
    MP_CHECK(strstr(mp_error_message(), "orthogonal") != NULL);
    double flat[4][4] = {{1, 0, 1, 0}, {0, 1, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, flat);
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_ARG);
    double ok[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, ok);
    ((float *)v->data)[5] = NAN;
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_ARG);
    ((float *)v->data)[5] = 0;
    o.modality = "US";
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_ARG);
    o.modality = "CT";
    o.study_uid = "1.2.3.04";
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_ARG);
    o.study_uid = NULL;
    o.file_prefix = "a/b";
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, NULL) == MP_ERR_ARG);
    MP_CHECK(!dir_exists(dir)); /* refused before anything was created */
    o.file_prefix = "IM";
    o.patient_sex = "male"; /* CS must be upper case: fails while encoding slice 1 */
    mp_dicom_source_t src;
    MP_CHECK(mp_dicom_write_series(dir, v, &o, NULL, &src) == MP_ERR_ARG);
    MP_CHECK(src.sop_instance_uid == NULL); /* nothing to free after a failure */
    char f1[800];
    snprintf(f1, sizeof f1, "%s/IM00001.dcm", dir);
    MP_CHECK(!dir_exists(f1));
    DIR *dp = opendir(dir);
    int entries = 0;
    for (struct dirent *e; dp && (e = readdir(dp));) entries += e->d_name[0] != '.';
    if (dp) closedir(dp);
    MP_CHECK(entries == 0); /* no temporary file left behind */
    mp_vol_free(v);
}

/* ---- SEG ---- */
/* A series from `v` (deterministic UIDs) and its source description. */
static const char *patient_for(const char *name) {
    /* One case carries non-ASCII text: SpecificCharacterSet ISO_IR 192. */
    return strcmp(name, "ct_float") == 0 ? "M\xc3\xbcller^J\xc3\xb6rg" : "Phantom^Sim";
}

static int series_for(const char *name, const mp_vol_t *v, const char *modality, mp_dicom_source_t *src,
                      mp_dicom_write_info_t *info, uint64_t seed) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s/series", tmp_root, name);
    mp_rng_t rng;
    mp_rng_init(&rng, seed, 0);
    mp_dicom_write_opts_t o;
    mp_dicom_write_opts_init(&o);
    o.modality = modality;
    o.uid_rng = &rng;
    o.patient_name = patient_for(name);
    o.patient_id = "MP-0001";
    o.patient_birth_date = "19700101";
    o.patient_sex = "O";
    o.study_date = "20240102";
    o.study_time = "030405";
    o.accession_number = "ACC42";
    o.study_description = "medpipe synthetic";
    o.series_description = "synthetic phantom";
    o.has_window = 1;
    o.window_center = 40;
    o.window_width = 400;
    if (mp_dicom_write_series(dir, v, &o, info, src)) {
        fprintf(stderr, "    %s: %s\n", name, mp_error_message());
        return 0;
    }
    return 1;
}

/* Same seed and dates: byte-identical files, whatever the writer threads did. */
static void test_series_reproducible(void) {
    int64_t d[4] = {9, 7, 5, 1};
    mp_vol_t *v;
    MP_CHECK_OK(mp_vol_create(&v, d, MP_DTYPE_I16));
    for (int64_t i = 0; i < mp_vol_voxels(v); i++) mp_vol_set(v, i, f_hu(i));
    mp_dicom_source_t s1, s2;
    mp_dicom_write_info_t in;
    MP_CHECK(series_for("rep1", v, "CT", &s1, &in, 5) && series_for("rep2", v, "CT", &s2, &in, 5));
    for (int64_t k = 0; k < 5; k++) {
        char p1[800], p2[800];
        snprintf(p1, sizeof p1, "%s/rep1/series/IM%05lld.dcm", tmp_root, (long long)(k + 1));
        snprintf(p2, sizeof p2, "%s/rep2/series/IM%05lld.dcm", tmp_root, (long long)(k + 1));
        uint8_t *a, *b;
        size_t na, nb;
        MP_CHECK_OK(mp_file_read_all(p1, &a, &na));
        MP_CHECK_OK(mp_file_read_all(p2, &b, &nb));
        int same = na == nb && memcmp(a, b, na) == 0;
        free(a);
        free(b);
        MP_CHECKF(same, "slice %lld differs between two runs with the same seed", (long long)k);
        MP_CHECK(strcmp(s1.sop_instance_uid[k], s2.sop_instance_uid[k]) == 0);
        for (int64_t j = 0; j < k; j++) MP_CHECK(strcmp(s1.sop_instance_uid[k], s1.sop_instance_uid[j]) != 0);
    }
    MP_CHECK(strcmp(s1.series_uid, s2.series_uid) == 0 && strcmp(s1.study_uid, s1.series_uid) != 0);
    mp_dicom_source_deinit(&s1);
    mp_dicom_source_deinit(&s2);
    mp_vol_free(v);
}

static double f_bits(int64_t i) {
    int64_t x = i % 5, y = i / 5 % 3, z = i / 15;
    return z == 3 ? (double)((x + y) % 2) : (double)((x + 2 * y + z) % 3);
}

static void test_seg_bit_packing(void) {
    int64_t d[4] = {5, 3, 4, 1}; /* 15 pixels: frames start mid-byte */
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_vol_create(&img, d, MP_DTYPE_I16));
    MP_CHECK_OK(mp_vol_create(&lab, d, MP_DTYPE_U8));
    for (int64_t i = 0; i < 60; i++) mp_vol_set(lab, i, f_bits(i));
    mp_dicom_source_t src;
    mp_dicom_write_info_t winfo;
    MP_CHECK(series_for("bits", img, "CT", &src, &winfo, 11));
    char path[800];
    snprintf(path, sizeof path, "%s/bits/seg.dcm", tmp_root);
    mp_dicom_seg_info_t si;
    MP_CHECK_OK(mp_dicom_write_seg(path, lab, &src, NULL, &si));
    /* Expected frames: segment 1 in all 4 slices, segment 2 in slices 0-2 (slice 3 has no 2). */
    MP_CHECKF(si.segments == 2 && si.frames == 7 && si.ignored_voxels == 0, "%d segments, %lld frames", si.segments,
              (long long)si.frames);
    uint8_t *f;
    size_t off, len;
    MP_CHECK(tail_pixels(path, 'B', &f, &off, &len) == 0);
    MP_CHECKF(len == 14, "pixel data of %zu bytes (7*15 bits = 105 -> 14 bytes)", len);
    int64_t frame = 0;
    for (int s = 1; s <= 2; s++)
        for (int64_t k = 0; k < 4; k++) {
            int any = 0;
            for (int64_t p = 0; p < 15; p++) any |= f_bits(k * 15 + p) == s;
            if (!any) continue;
            for (int64_t p = 0; p < 15; p++) {
                int64_t bit = frame * 15 + p;
                int got = f[off + bit / 8] >> (bit % 8) & 1;
                MP_CHECKF(got == (f_bits(k * 15 + p) == s), "segment %d slice %lld pixel %lld", s, (long long)k,
                          (long long)p);
            }
            frame++;
        }
    MP_CHECK(frame == 7);
    free(f);
    /* All frames, empty ones included. */
    mp_dicom_seg_opts_t so;
    mp_dicom_seg_opts_init(&so);
    so.include_empty_frames = 1;
    MP_CHECK_OK(mp_dicom_write_seg(path, lab, &src, &so, &si));
    MP_CHECK(si.frames == 8);
    mp_dicom_source_deinit(&src);
    mp_vol_free(img);
    mp_vol_free(lab);
}

static void test_seg_errors(void) {
    int64_t d[4] = {6, 4, 3, 1};
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_vol_create(&img, d, MP_DTYPE_I16));
    MP_CHECK_OK(mp_vol_create(&lab, d, MP_DTYPE_I16));
    mp_dicom_source_t src;
    mp_dicom_write_info_t winfo;
    MP_CHECK(series_for("segerr", img, "CT", &src, &winfo, 12));
    char path[800];
    snprintf(path, sizeof path, "%s/segerr/seg.dcm", tmp_root);
    mp_dicom_seg_opts_t so;
    mp_dicom_seg_opts_init(&so);
    MP_CHECK(mp_dicom_write_seg(path, lab, &src, &so, NULL) == MP_ERR_ARG); /* no labels, no segments */
    mp_vol_set(lab, 3, -2);
    MP_CHECK(mp_dicom_write_seg(path, lab, &src, &so, NULL) == MP_ERR_ARG);
    mp_vol_set(lab, 3, 2);
    double moved[4][4];
    memcpy(moved, lab->affine, sizeof moved);
    moved[2][3] += 1.0;
    mp_vol_set_affine(lab, moved);
    MP_CHECK(mp_dicom_write_seg(path, lab, &src, &so, NULL) == MP_ERR_MISMATCH);
    mp_vol_set_affine(lab, img->affine);
    strcpy(src.sop_instance_uid[1], "1.2.x");
    MP_CHECK(mp_dicom_write_seg(path, lab, &src, &so, NULL) == MP_ERR_ARG);
    src.nslices = 2;
    MP_CHECK(mp_dicom_write_seg(path, lab, &src, &so, NULL) == MP_ERR_MISMATCH);
    src.nslices = 3;
    MP_CHECK(!dir_exists(path));
    /* The same label listed twice. */
    mp_dicom_segment_t segs[2] = {{.label = 2}, {.label = 2}};
    so.segments = segs;
    so.nsegments = 2;
    MP_CHECK(mp_dicom_write_seg(path, lab, &src, &so, NULL) == MP_ERR_ARG);
    /* Float labels must be integers. */
    mp_vol_t *fl;
    MP_CHECK_OK(mp_vol_convert(&fl, lab, MP_DTYPE_F32, 1, NULL));
    ((float *)fl->data)[7] = 1.5f;
    so.nsegments = 0;
    MP_CHECK(mp_dicom_write_seg(path, fl, &src, &so, NULL) == MP_ERR_ARG);
    mp_vol_free(fl);
    MP_CHECK(!dir_exists(path));
    /* A listed segment that is empty everywhere still gives a valid object with one blank frame. */
    mp_dicom_segment_t one = {.label = 5, .name = "Absent"};
    so.segments = &one;
    so.nsegments = 1;
    mp_dicom_seg_info_t si;
    strcpy(src.sop_instance_uid[1], src.sop_instance_uid[0]);
    src.sop_instance_uid[1][strlen(src.sop_instance_uid[1]) - 1] ^= 1;
    MP_CHECK_OK(mp_dicom_write_seg(path, lab, &src, &so, &si));
    MP_CHECK(si.frames == 1 && si.ignored_voxels == 1);
    mp_dicom_source_deinit(&src);
    mp_vol_free(img);
    mp_vol_free(lab);
}

/* ---- round trip through independent tools ---- */
static int write_raw(const char *dir, const char *name, const void *data, size_t len) {
    char path[800];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return mp_file_write_atomic(path, data, len);
}

/* case.txt + values.f64 (real values, x fastest) for the Python checker. */
static int describe_series(const char *name, const mp_vol_t *v, const char *modality, const mp_dicom_write_info_t *in) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    int64_t n = mp_vol_voxels(v);
    double *vals = malloc((size_t)n * sizeof *vals);
    if (!vals) return MP_ERR_NOMEM;
    for (int64_t i = 0; i < n; i++) vals[i] = real_value(v, i);
    int rc = write_raw(dir, "values.f64", vals, (size_t)n * sizeof *vals);
    free(vals);
    char text[2048];
    int len = snprintf(text, sizeof text, "kind\tseries\nmodality\t%s\npatient\t%s\ndims\t%lld %lld %lld\naffine\t",
                       modality, patient_for(name), (long long)v->dim[0], (long long)v->dim[1], (long long)v->dim[2]);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) len += snprintf(text + len, sizeof text - (size_t)len, "%.17g ", v->affine[r][c]);
    len += snprintf(text + len, sizeof text - (size_t)len, "\nexact\t%d\nmax_error\t%.17g\nslope\t%.17g\nintercept\t%.17g\n",
                    in->exact, in->max_abs_error, in->slope, in->intercept);
    return rc ? rc : write_raw(dir, "case.txt", text, (size_t)len);
}

static int describe_seg(const char *name, const char *source_case, const mp_vol_t *lab, const mp_dicom_seg_opts_t *so,
                        const mp_dicom_seg_info_t *si) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", tmp_root, name);
    mp_vol_t *l32;
    int rc = mp_vol_convert(&l32, lab, MP_DTYPE_I32, 1, NULL);
    if (rc) return rc;
    rc = write_raw(dir, "labels.i32", l32->data, mp_vol_bytes(l32));
    mp_vol_free(l32);
    char text[4096];
    int len = snprintf(text, sizeof text, "kind\tseg\nsource\t%s\ninclude_empty\t%d\nframes\t%lld\n", source_case,
                       so->include_empty_frames, (long long)si->frames);
    for (int s = 0; s < so->nsegments; s++)
        len += snprintf(text + len, sizeof text - (size_t)len, "segment\t%d\t%d\t%s\t%s\n", s + 1,
                        so->segments[s].label, so->segments[s].name, so->segments[s].type.value ? so->segments[s].type.value : "85756007");
    return rc ? rc : write_raw(dir, "case.txt", text, (size_t)len);
}

/* A CT-like phantom: air, a body, an ellipsoid "organ", a box "bone" and a
 * thin slab, with deterministic noise; labels 1-3 for the structures. */
static void phantom(mp_vol_t *img, mp_vol_t *lab, uint64_t seed) {
    mp_rng_t r;
    mp_rng_init(&r, seed, 3);
    int64_t nx = img->dim[0], ny = img->dim[1], nz = img->dim[2];
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++) {
                double u = (x + 0.5) / nx - 0.5, w = (y + 0.5) / ny - 0.5, t = (z + 0.5) / nz - 0.5;
                double hu = -1000 + (double)mp_rng_below(&r, 21);
                int l = 0;
                if (u * u + w * w < 0.2) hu = 20 + (double)mp_rng_below(&r, 31);
                if ((u - 0.1) * (u - 0.1) / 0.03 + w * w / 0.02 + t * t / 0.12 < 1) hu = 60 + (double)mp_rng_below(&r, 11), l = 1;
                if (u < -0.2 && u > -0.35 && w > -0.1 && w < 0.15 && t < 0.2) hu = 700 + (double)mp_rng_below(&r, 301), l = 2;
                if (z == nz / 3 && u > 0.25 && w > 0) hu = 150, l = 3;
                int64_t i = x + nx * (y + ny * z);
                mp_vol_set(img, i, hu);
                if (lab) mp_vol_set(lab, i, l);
            }
}

static int run_checker(void) {
    const char *script = "tests/py/dicom_write_check.py";
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "    %s not found (run from the repository root)\n", script);
        return 0;
    }
    const char *py = getenv("PYTHON");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s %s %s", py && *py ? py : "/usr/bin/python3", script, tmp_root);
    fflush(stdout);
    int st = system(cmd);
    return st == 0;
}

static void test_roundtrip_tools(void) {
    /* Case 1: int16 CT, oblique (rotated about all three axes), anisotropic. */
    int64_t d1[4] = {48, 40, 12, 1};
    mp_vol_t *ct, *ctlab;
    MP_CHECK_OK(mp_vol_create(&ct, d1, MP_DTYPE_I16));
    MP_CHECK_OK(mp_vol_create(&ctlab, d1, MP_DTYPE_U8));
    phantom(ct, ctlab, 1);
    double a[4][4], sp1[3] = {0.7, 0.8, 2.0}, o1[3] = {-30, 25, 40};
    make_affine(a, 20, -10, 30, sp1, o1);
    mp_vol_set_affine(ct, a);
    mp_vol_set_affine(ctlab, a);
    mp_dicom_source_t src;
    mp_dicom_write_info_t in;
    MP_CHECK(series_for("ct_oblique", ct, "CT", &src, &in, 21) && in.exact);
    MP_CHECK_OK(describe_series("ct_oblique", ct, "CT", &in));
    /* Its SEG: three named segments, one with its own codes. */
    mp_dicom_segment_t segs[3] = {
        {.label = 1, .name = "Liver", .type = {"10200004", "SCT", "Liver"}},
        {.label = 2, .name = "Bone", .description = "box-shaped", .type = {"3138006", "SCT", "Bone"}},
        {.label = 3, .name = "Slab", .has_color = 1, .rgb = {255, 0, 0}}};
    mp_dicom_seg_opts_t so;
    mp_dicom_seg_opts_init(&so);
    mp_rng_t r;
    mp_rng_init(&r, 22, 0);
    so.uid_rng = &r;
    so.segments = segs;
    so.nsegments = 3;
    so.content_creator = "Pipeline^Medpipe";
    char path[800];
    snprintf(path, sizeof path, "%s/ct_seg", tmp_root);
    MP_CHECK_OK(mp_mkdir_p(path));
    snprintf(path, sizeof path, "%s/ct_seg/seg.dcm", tmp_root);
    mp_dicom_seg_info_t si;
    MP_CHECK_OK(mp_dicom_write_seg(path, ctlab, &src, &so, &si));
    MP_CHECK(si.segments == 3 && si.frames > 3 && si.frames < 3 * 12);
    MP_CHECK_OK(describe_seg("ct_seg", "ct_oblique", ctlab, &so, &si));
    mp_dicom_source_deinit(&src);

    /* Case 2: float CT with fractional values, axis-aligned: quantized. */
    int64_t d2[4] = {32, 28, 6, 1};
    mp_vol_t *fct;
    MP_CHECK_OK(mp_vol_create(&fct, d2, MP_DTYPE_F32));
    for (int64_t i = 0; i < mp_vol_voxels(fct); i++) mp_vol_set(fct, i, 37.5 * sin(0.013 * (double)i) - 3.25);
    double sp2[3] = {1.25, 1.25, 3}, o2[3] = {10, -20, -5};
    mp_vol_set_spacing(fct, sp2, o2);
    MP_CHECK(series_for("ct_float", fct, "CT", NULL, &in, 31) && !in.exact && in.max_abs_error < 1e-3);
    MP_CHECK_OK(describe_series("ct_float", fct, "CT", &in));

    /* Case 3: uint16 MR, sagittal with descending slices. */
    int64_t d3[4] = {30, 26, 9, 1};
    mp_vol_t *mr, *mrlab;
    MP_CHECK_OK(mp_vol_create(&mr, d3, MP_DTYPE_U16));
    MP_CHECK_OK(mp_vol_create(&mrlab, d3, MP_DTYPE_I16));
    phantom(mr, mrlab, 2);
    for (int64_t i = 0; i < mp_vol_voxels(mr); i++) mp_vol_set(mr, i, mp_vol_get(mr, i) + 1024);
    double sag[4][4] = {{0, 0, -1.5, 40}, {-0.9, 0, 0, 60}, {0, -1.1, 0, 70}, {0, 0, 0, 1}};
    mp_vol_set_affine(mr, sag);
    mp_vol_set_affine(mrlab, sag);
    MP_CHECK(series_for("mr_sagittal", mr, "MR", &src, &in, 41) && in.exact && !in.pixel_signed);
    MP_CHECK_OK(describe_series("mr_sagittal", mr, "MR", &in));
    mp_dicom_seg_opts_init(&so);
    so.include_empty_frames = 1;
    mp_rng_init(&r, 42, 0);
    so.uid_rng = &r;
    snprintf(path, sizeof path, "%s/mr_seg", tmp_root);
    MP_CHECK_OK(mp_mkdir_p(path));
    snprintf(path, sizeof path, "%s/mr_seg/seg.dcm", tmp_root);
    MP_CHECK_OK(mp_dicom_write_seg(path, mrlab, &src, &so, &si)); /* default segments, all frames */
    MP_CHECK(si.segments == 3 && si.frames == 3 * 9);
    MP_CHECK_OK(describe_seg("mr_seg", "mr_sagittal", mrlab, &so, &si));
    mp_dicom_source_deinit(&src);

    MP_CHECKF(run_checker(), "tests/py/dicom_write_check.py %s failed (see above)", tmp_root);
    mp_vol_free(ct);
    mp_vol_free(ctlab);
    mp_vol_free(fct);
    mp_vol_free(mr);
    mp_vol_free(mrlab);
}

int main(void) {
    snprintf(tmp_root, sizeof tmp_root, "%s", mp_test_tmpdir("dicomw"));
    MP_RUN(test_uid_random);
    MP_RUN(test_uid_deterministic);
    MP_RUN(test_ds_format);
    MP_RUN(test_encoder_layout);
    MP_RUN(test_encoder_rules);
    MP_RUN(test_file_meta);
    MP_RUN(test_pixel_plans);
    MP_RUN(test_series_errors);
    MP_RUN(test_series_reproducible);
    MP_RUN(test_seg_bit_packing);
    MP_RUN(test_seg_errors);
    MP_RUN(test_roundtrip_tools);
    int rc = mp_test_summary();
    if (rc == 0 && !getenv("MP_TEST_KEEP")) { /* MP_TEST_KEEP=1 keeps the files for a look */
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    }
    return rc;
}
