/* Compressed-pixel decoders (JPEG baseline/extended, JPEG lossless, JPEG-LS,
 * JPEG 2000) against independent decoders. tests/py/codecs_ref.py extracts
 * the frames of real compressed DICOM files (pydicom's test data) and of
 * files it encodes from synthetic images with dcmtk, GDCM, PVRG-JPEG and
 * Grok, and writes the pixels that dcmdjpeg / dcmdjpls / grk_decompress /
 * gdcmconv (and, for files made here, the original image) give. Each frame
 * is one test: exact for lossless, within the listed tolerance for lossy
 * (different IDCTs, upsamplers and colour converters). Frames with no
 * working reference decoder are listed as such and not counted as passes.
 * Then hostile input: truncation, wrong sizes, garbage, random corruption. */
#include <cjson/cJSON.h>

#include "harness.h"
#include "io/codec.h"
#include "io/codec_jpegcommon.h"
#include "medpipe/medpipe.h"

typedef int (*decode_fn)(uint8_t *, size_t, const uint8_t *, size_t, const mp_frame_info_t *);

static decode_fn codec_fn(const char *name) {
    if (!strcmp(name, "jpeg")) return mp_codec_decode_jpeg;
    if (!strcmp(name, "jpegll")) return mp_codec_decode_jpeg_lossless;
    if (!strcmp(name, "jpegls")) return mp_codec_decode_jpegls;
    if (!strcmp(name, "j2k")) return mp_codec_decode_j2k;
    return NULL;
}

static cJSON *g_list;
static const cJSON *g_cur;
static int g_exact, g_within, g_noref, g_frames;

static int jint(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valueint : cJSON_IsTrue(v) ? 1 : 0;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static mp_frame_info_t entry_info(const cJSON *e) {
    mp_frame_info_t fi = {jint(e, "rows"),         jint(e, "cols"),   jint(e, "samples"),
                          jint(e, "bits_allocated"), jint(e, "bits_stored"), jint(e, "signed"), 0, 0};
    return fi;
}

static size_t out_size(const mp_frame_info_t *fi) {
    return (size_t)fi->rows * (size_t)fi->cols * (size_t)fi->samples * (size_t)(fi->bits_allocated / 8);
}

static int64_t sample(const uint8_t *b, size_t i, const mp_frame_info_t *fi) {
    int bytes = fi->bits_allocated / 8;
    const uint8_t *p = b + i * (size_t)bytes;
    uint32_t v = p[0];
    if (bytes > 1) v |= (uint32_t)p[1] << 8;
    if (bytes > 2) v |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (!fi->is_signed) return v;
    if (bytes == 1) return (int8_t)v;
    if (bytes == 2) return (int16_t)v;
    return (int32_t)v;
}

/* Largest absolute sample difference; -1 when the sizes differ. */
static int64_t max_diff(const uint8_t *a, const uint8_t *b, size_t len, size_t blen, const mp_frame_info_t *fi) {
    if (len != blen) return -1;
    int64_t m = 0;
    size_t n = len / (size_t)(fi->bits_allocated / 8);
    for (size_t i = 0; i < n; i++) {
        int64_t d = sample(a, i, fi) - sample(b, i, fi);
        if (d < 0) d = -d;
        if (d > m) m = d;
    }
    return m;
}

static int decode_entry(const cJSON *e, uint8_t **out, size_t *out_len) {
    mp_frame_info_t fi = entry_info(e);
    uint8_t *in = NULL;
    size_t in_len = 0;
    int rc = mp_file_read_all(jstr(e, "frame"), &in, &in_len);
    if (rc < 0) return rc;
    *out_len = out_size(&fi);
    *out = malloc(*out_len ? *out_len : 1);
    rc = codec_fn(jstr(e, "codec"))(*out, *out_len, in, in_len, &fi);
    free(in);
    return rc;
}

/* One frame against each of its references. */
static void test_frame(void) {
    const cJSON *e = g_cur;
    mp_frame_info_t fi = entry_info(e);
    uint8_t *out = NULL;
    size_t out_len = 0;
    int rc = decode_entry(e, &out, &out_len);
    char line[512];
    int pos = snprintf(line, sizeof line, "  %-38s %-6s %4dx%-4d x%d %2d/%-2d%s ", jstr(e, "name"), jstr(e, "codec"),
                       fi.cols, fi.rows, fi.samples, fi.bits_stored, fi.bits_allocated, fi.is_signed ? "s" : "u");
    if (rc != 0) {
        printf("%sDECODE ERROR %s\n", line, mp_error_message());
        free(out);
        MP_CHECKF(rc == 0, "%s: %s", jstr(e, "name"), mp_error_message());
    }
    int worst_over = 0, all_exact = 1;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(e, "refs")) {
        uint8_t *ref = NULL;
        size_t ref_len = 0;
        int64_t d = -1;
        if (mp_file_read_all(jstr(r, "path"), &ref, &ref_len) == 0) d = max_diff(out, ref, out_len, ref_len, &fi);
        free(ref);
        int tol = jint(r, "tol");
        pos += snprintf(line + pos, sizeof line - (size_t)pos, " %s:%lld(tol %d)", jstr(r, "tool"), (long long)d, tol);
        if (pos >= (int)sizeof line) pos = (int)sizeof line - 1;
        if (d != 0) all_exact = 0;
        if (d < 0 || d > tol) worst_over = 1;
    }
    free(out);
    printf("%s  %s\n", line, worst_over ? "MISMATCH" : all_exact ? "exact" : "within tolerance");
    MP_CHECKF(!worst_over, "%s differs from a reference beyond tolerance", jstr(e, "name"));
    if (all_exact) g_exact++;
    else g_within++;
}

/* ---- fixtures and the per-frame table ---- */

static const char *g_dir;

static void test_generate_fixtures(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/py/codecs_ref.py %s", g_dir);
    MP_CHECKF(system(cmd) == 0, "%s failed", cmd);
    char path[600];
    snprintf(path, sizeof path, "%s/listing.json", g_dir);
    uint8_t *txt = NULL;
    size_t len = 0;
    MP_CHECK_OK(mp_file_read_all(path, &txt, &len));
    g_list = cJSON_ParseWithLength((const char *)txt, len);
    free(txt);
    MP_CHECK(cJSON_IsArray(g_list) && cJSON_GetArraySize(g_list) > 50);
}

static void run_conformance(void) {
    printf("  %-38s %-6s %-11s %-6s  references: tool:max |diff|(tolerance)  result\n", "frame", "codec", "size",
           "bits");
    const cJSON *e;
    cJSON_ArrayForEach(e, g_list) {
        g_frames++;
        if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(e, "refs")) == 0) {
            uint8_t *out = NULL;
            size_t out_len = 0;
            int rc = decode_entry(e, &out, &out_len);
            free(out);
            printf("  %-38s %-6s NO REFERENCE (%s); our decoder: %s\n", jstr(e, "name"), jstr(e, "codec"),
                   jstr(e, "notes"), rc == 0 ? "decoded" : mp_error_message());
            g_noref++;
            continue;
        }
        char name[300];
        snprintf(name, sizeof name, "conformance %s", jstr(e, "name"));
        g_cur = e;
        mp_test_run(name, test_frame);
    }
    printf("conformance: %d frames: %d exact, %d within tolerance, %d no reference, %d failed\n", g_frames, g_exact,
           g_within, g_noref, g_frames - g_exact - g_within - g_noref);
}

static const cJSON *find_entry(const char *name) {
    const cJSON *e;
    cJSON_ArrayForEach(e, g_list) if (!strcmp(jstr(e, "name"), name)) return e;
    return NULL;
}

/* Fixtures used for the hostile-input tests: one or more per decoder path. */
static const char *const hostile_names[] = {"ll_sv1_mono12u", "own_p13_sv5_ri", "own_rgb_p12_sv3_scans_ri", "ll_sv1_rgb8u",
                                            "je_mono12u",     "pv_dct12_r5_mono12u", "jb_rgb_422",
                                            "jb_prog_mono8u", "ls_mono16u",     "ls_rgb_none",
                                            "j2k_mono16s",    "j2k_lossy_rgb8u", "grk_jp2_mono12u"};
#define N_HOSTILE (sizeof hostile_names / sizeof hostile_names[0])

static int load_fixture(const char *name, mp_frame_info_t *fi, uint8_t **in, size_t *in_len, decode_fn *fn) {
    const cJSON *e = find_entry(name);
    if (!e) return -1;
    *fi = entry_info(e);
    *fn = codec_fn(jstr(e, "codec"));
    return mp_file_read_all(jstr(e, "frame"), in, in_len);
}

static void test_truncated(void) {
    for (size_t k = 0; k < N_HOSTILE; k++) {
        mp_frame_info_t fi;
        uint8_t *in;
        size_t len;
        decode_fn fn;
        MP_CHECKF(load_fixture(hostile_names[k], &fi, &in, &len, &fn) == 0, "%s", hostile_names[k]);
        size_t olen = out_size(&fi);
        uint8_t *out = malloc(olen);
        int fails = 0;
        for (int pct = 10; pct <= 90; pct += 40) {
            int rc = fn(out, olen, in, len * (size_t)pct / 100, &fi);
            if (rc < 0 && mp_error_message()[0]) fails++;
            else printf("  %s cut to %d%%: rc %d\n", hostile_names[k], pct, rc);
        }
        int rc0 = fn(out, olen, in, 0, &fi);
        int rc1 = fn(out, olen, NULL, 0, &fi);
        free(out);
        free(in);
        MP_CHECKF(fails == 3 && rc0 < 0 && rc1 < 0, "%s: truncated frames decoded", hostile_names[k]);
    }
}

static void test_wrong_sizes(void) {
    for (size_t k = 0; k < N_HOSTILE; k++) {
        mp_frame_info_t fi, bad;
        uint8_t *in;
        size_t len;
        decode_fn fn;
        MP_CHECKF(load_fixture(hostile_names[k], &fi, &in, &len, &fn) == 0, "%s", hostile_names[k]);
        uint8_t *out = malloc(out_size(&fi) * 4 + 64);
        bad = fi;
        bad.rows += 8;
        int rc = fn(out, out_size(&bad), in, len, &bad);
        int ok = rc == MP_ERR_MISMATCH && strstr(mp_error_message(), "codestream says");
        if (!ok) printf("  %s rows+8: rc %d: %s\n", hostile_names[k], rc, mp_error_message());
        bad = fi;
        bad.cols -= 1;
        ok &= fn(out, out_size(&bad), in, len, &bad) == MP_ERR_MISMATCH;
        bad = fi;
        bad.samples = fi.samples == 1 ? 3 : 1;
        ok &= fn(out, out_size(&bad), in, len, &bad) == MP_ERR_MISMATCH;
        ok &= fn(out, out_size(&fi) - 1, in, len, &fi) == MP_ERR_ARG; /* buffer size */
        bad = fi;
        bad.bits_allocated = 8;
        bad.bits_stored = 8;
        rc = fn(out, out_size(&bad), in, len, &bad);
        /* Over-precise for an 8-bit frame: refused unless the codestream is 8-bit. */
        if (fi.bits_stored > 8) ok &= rc == MP_ERR_MISMATCH;
        free(out);
        free(in);
        MP_CHECKF(ok, "%s: wrong frame description not refused (%s)", hostile_names[k], mp_error_message());
    }
}

static void test_garbage(void) {
    decode_fn fns[] = {mp_codec_decode_jpeg, mp_codec_decode_jpeg_lossless, mp_codec_decode_jpegls,
                       mp_codec_decode_j2k};
    mp_frame_info_t fi = {32, 32, 1, 16, 12, 0, 0, 0};
    uint8_t out[32 * 32 * 2], in[4096];
    mp_rng_t rng;
    mp_rng_init(&rng, 7, 1);
    for (int rep = 0; rep < 50; rep++) {
        for (size_t i = 0; i < sizeof in; i++) in[i] = (uint8_t)mp_rng_u32(&rng);
        if (rep % 2) { /* a plausible start, so that parsing goes deeper */
            static const uint8_t soi[] = {0xFF, 0xD8, 0xFF, 0xC3}, soc[] = {0xFF, 0x4F, 0xFF, 0x51};
            memcpy(in, rep % 4 == 1 ? soi : soc, 4);
        }
        for (size_t f = 0; f < 4; f++) {
            int rc = fns[f](out, sizeof out, in, sizeof in, &fi);
            MP_CHECKF(rc < 0 && mp_error_message()[0], "garbage decoded by codec %zu (rep %d)", f, rep);
        }
    }
}

/* Random byte changes: any result is acceptable except a crash, a leak or a
 * write outside the buffer (checked by the ASan run). */
static void test_corruption(void) {
    mp_rng_t rng;
    mp_rng_init(&rng, 11, 2);
    for (size_t k = 0; k < N_HOSTILE; k++) {
        mp_frame_info_t fi;
        uint8_t *in;
        size_t len;
        decode_fn fn;
        MP_CHECKF(load_fixture(hostile_names[k], &fi, &in, &len, &fn) == 0, "%s", hostile_names[k]);
        size_t olen = out_size(&fi);
        uint8_t *out = malloc(olen), *bad = malloc(len);
        int errors = 0;
        for (int rep = 0; rep < 60; rep++) {
            memcpy(bad, in, len);
            int nchg = 1 + (int)mp_rng_below(&rng, 4);
            for (int c = 0; c < nchg; c++) bad[mp_rng_below(&rng, len)] = (uint8_t)mp_rng_u32(&rng);
            errors += fn(out, olen, bad, len, &fi) < 0;
        }
        free(out);
        free(bad);
        free(in);
        MP_CHECK(errors >= 0);
    }
}

/* A frame under the "wrong" JPEG transfer syntax (lossless data labelled
 * baseline and the reverse, which real files do) decodes all the same. */
static void test_mislabelled_jpeg(void) {
    const char *names[] = {"ll_sv1_mono12u", "je_mono12u", "jb_rgb_422"};
    for (int k = 0; k < 3; k++) {
        const cJSON *e = find_entry(names[k]);
        MP_CHECK(e);
        mp_frame_info_t fi = entry_info(e);
        decode_fn other = !strcmp(jstr(e, "codec"), "jpegll") ? mp_codec_decode_jpeg : mp_codec_decode_jpeg_lossless;
        uint8_t *in = NULL, *a = NULL;
        size_t len = 0, olen = out_size(&fi);
        MP_CHECK_OK(mp_file_read_all(jstr(e, "frame"), &in, &len));
        MP_CHECK_OK(decode_entry(e, &a, &olen));
        uint8_t *b = malloc(olen);
        int rc = other(b, olen, in, len, &fi);
        int same = rc == 0 && memcmp(a, b, olen) == 0;
        free(in);
        free(a);
        free(b);
        MP_CHECKF(same, "%s through the other JPEG entry point: rc %d %s", names[k], rc, mp_error_message());
    }
}

static void test_sign_extension(void) {
    mp_frame_info_t fi = {1, 4, 1, 16, 12, 1, 0, 0};
    uint8_t buf[8] = {0xFF, 0x0F, 0x00, 0x08, 0xFF, 0x07, 0x18, 0xFC};
    mp_codec_sign_extend(buf, sizeof buf, &fi);
    MP_CHECK(sample(buf, 0, &fi) == -1 && sample(buf, 1, &fi) == -2048 && sample(buf, 2, &fi) == 2047);
    MP_CHECK(sample(buf, 3, &fi) == -1000); /* already sign-extended stays */
    fi.is_signed = 0;
    uint8_t u[2] = {0xFF, 0x0F};
    mp_codec_sign_extend(u, 2, &fi);
    MP_CHECK(u[0] == 0xFF && u[1] == 0x0F);
}

int main(void) {
    g_dir = mp_test_tmpdir("codecs");
    MP_RUN(test_sign_extension);
    MP_RUN(test_generate_fixtures);
    if (g_list) {
        run_conformance();
        MP_RUN(test_mislabelled_jpeg);
        MP_RUN(test_truncated);
        MP_RUN(test_wrong_sizes);
        MP_RUN(test_garbage);
        MP_RUN(test_corruption);
    }
    cJSON_Delete(g_list);
    if (!getenv("MP_KEEP_TEST_DIR")) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    }
    return mp_test_summary();
}
