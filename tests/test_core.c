/* Core: RNG known answers and determinism, thread pool partitioning, atomic
 * files, error messages, volume creation, conversion and orientation codes. */
#include "harness.h"
#include "medpipe/medpipe.h"

static void test_philox_known_answers(void) {
    /* Known-answer vectors of Philox4x32-10 from the Random123 distribution. */
    uint32_t out[4];
    uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
    mp_philox4x32(out, c0, k0);
    MP_CHECK(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du && out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u);
    uint32_t c1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, k1[2] = {0xffffffffu, 0xffffffffu};
    mp_philox4x32(out, c1, k1);
    MP_CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu);
    uint32_t c2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, k2[2] = {0xa4093822u, 0x299f31d0u};
    mp_philox4x32(out, c2, k2);
    MP_CHECK(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu && out[2] == 0x5001e420u && out[3] == 0x24126ea1u);
}

static void test_rng_streams(void) {
    mp_rng_t a, b, c;
    mp_rng_init(&a, 42, 7);
    mp_rng_init(&b, 42, 7);
    mp_rng_init(&c, 42, 8);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint32_t x = mp_rng_u32(&a), y = mp_rng_u32(&b), z = mp_rng_u32(&c);
        MP_CHECK(x == y);
        same_c += x == z;
    }
    MP_CHECK(same_c < 5);
    /* Moments of the uniform and normal draws. */
    double s = 0, s2 = 0, n = 200000;
    for (int i = 0; i < (int)n; i++) {
        double g = mp_rng_normal(&a);
        s += g;
        s2 += g * g;
    }
    MP_CHECK_NEAR(s / n, 0.0, 0.01);
    MP_CHECK_NEAR(s2 / n, 1.0, 0.02);
    for (int i = 0; i < 10000; i++) {
        double u = mp_rng_uniform(&a);
        MP_CHECK(u >= 0 && u < 1);
        MP_CHECK(mp_rng_below(&a, 7) < 7);
    }
    MP_CHECK(mp_rng_stream_id(1, 2, 3) != mp_rng_stream_id(1, 3, 2));
}

typedef struct {
    int64_t *hits;
    double partial[8];
} pool_ctx_t;

static void pool_body(void *ctxp, int64_t begin, int64_t end, int worker) {
    pool_ctx_t *ctx = ctxp;
    double s = 0;
    for (int64_t i = begin; i < end; i++) {
        ctx->hits[i]++;
        s += 1.0 / (double)(i + 1);
    }
    ctx->partial[worker] = s;
}

static void test_pool_covers_range_once(void) {
    mp_pool_t *pool = mp_pool_create(3);
    MP_CHECK(pool && mp_pool_threads(pool) == 3);
    int64_t n = 10007;
    int64_t *hits = calloc((size_t)n, sizeof *hits);
    pool_ctx_t ctx = {hits, {0}};
    for (int rep = 0; rep < 50; rep++) mp_pool_parallel_for(pool, n, pool_body, &ctx);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= hits[i] == 50;
    double sum1 = ctx.partial[0] + ctx.partial[1] + ctx.partial[2];
    mp_pool_parallel_for(pool, n, pool_body, &ctx);
    double sum2 = ctx.partial[0] + ctx.partial[1] + ctx.partial[2];
    free(hits);
    mp_pool_free(pool);
    mp_pool_free(NULL);
    MP_CHECK(ok);
    MP_CHECK(sum1 == sum2); /* same partition, same reduction order */
}

static void test_atomic_file(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/out.bin", mp_test_tmpdir("core"));
    MP_CHECK_OK(mp_file_write_atomic(path, "hello", 5));
    uint8_t *data;
    size_t len;
    MP_CHECK_OK(mp_file_read_all(path, &data, &len));
    MP_CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    /* An aborted write leaves the old content and no temporary file. */
    mp_afile_t f;
    MP_CHECK_OK(mp_afile_open(&f, path));
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s", f.tmp_path);
    MP_CHECK_OK(mp_afile_write(&f, "partial", 7));
    mp_afile_abort(&f);
    MP_CHECK(access(tmp, F_OK) != 0);
    MP_CHECK_OK(mp_file_read_all(path, &data, &len));
    MP_CHECK(len == 5);
    free(data);
    unlink(path);
    MP_CHECK(mp_file_read_all("/nonexistent/x", &data, &len) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "/nonexistent/x") != NULL);
}

static void test_error_wrap(void) {
    mp_error_set(MP_ERR_FORMAT, "bad magic at offset %d", 344);
    MP_CHECK(mp_error_wrap(MP_ERR_FORMAT, "a.nii: ") == MP_ERR_FORMAT);
    MP_CHECK(strcmp(mp_error_message(), "a.nii: bad magic at offset 344") == 0);
}

static void test_vol_create_and_convert(void) {
    int64_t dim[4] = {5, 4, 3, 1};
    mp_vol_t *v, *c;
    MP_CHECK_OK(mp_vol_create(&v, dim, MP_DTYPE_I16));
    MP_CHECK(mp_vol_voxels(v) == 60 && mp_vol_bytes(v) == 120);
    for (int64_t i = 0; i < 60; i++) mp_vol_set(v, i, (double)(i * 100 - 3000));
    v->scl_slope = 0.5;
    v->scl_inter = -10;
    MP_CHECK_OK(mp_vol_convert(&c, v, MP_DTYPE_F32, 1, NULL));
    MP_CHECK(c->scl_slope == 1 && c->scl_inter == 0);
    MP_CHECK_NEAR(mp_vol_get(c, 7), (700 - 3000) * 0.5 - 10, 1e-6);
    mp_vol_free(c);
    int64_t clamped = 0;
    MP_CHECK_OK(mp_vol_convert(&c, v, MP_DTYPE_U8, 0, &clamped));
    MP_CHECK(mp_vol_get(c, 0) == 0 && mp_vol_get(c, 59) == 255);
    MP_CHECK(clamped > 0);
    mp_vol_free(c);
    mp_vol_free(v);
    mp_vol_free(NULL);
    /* Oversized and overflowing requests are refused before allocating. */
    int64_t huge[4] = {1 << 20, 1 << 20, 1 << 20, 1};
    MP_CHECK(mp_vol_create(&v, huge, MP_DTYPE_F64) == MP_ERR_LIMIT);
    int64_t over[4] = {INT64_MAX / 2, 4, 4, 1};
    MP_CHECK(mp_vol_create(&v, over, MP_DTYPE_F64) == MP_ERR_LIMIT);
    int64_t bad[4] = {0, 4, 4, 1};
    MP_CHECK(mp_vol_create(&v, bad, MP_DTYPE_U8) == MP_ERR_ARG);
}

static void test_orientation_codes(void) {
    double a[4][4];
    char code[4];
    mp_mat4_identity(a);
    mp_vol_orientation(a, code);
    MP_CHECK(strcmp(code, "RAS") == 0);
    a[0][0] = -1;
    a[1][1] = -1;
    mp_vol_orientation(a, code);
    MP_CHECK(strcmp(code, "LPS") == 0);
    double p[4][4] = {{0, 0, -2, 0}, {1, 0, 0, 0}, {0, -1, 0, 0}, {0, 0, 0, 1}};
    mp_vol_orientation(p, code);
    MP_CHECK(strcmp(code, "AIL") == 0);
    double inv[4][4], prod[4][4];
    MP_CHECK_OK(mp_mat4_inv(inv, p));
    mp_mat4_mul(prod, p, inv);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) MP_CHECK_NEAR(prod[r][c], r == c, 1e-12);
}

static void test_dtype_names(void) {
    mp_dtype_t t;
    MP_CHECK_OK(mp_dtype_parse("int16", &t));
    MP_CHECK(t == MP_DTYPE_I16);
    MP_CHECK_OK(mp_dtype_parse("f32", &t));
    MP_CHECK(t == MP_DTYPE_F32 && mp_dtype_size(t) == 4);
    MP_CHECK(mp_dtype_parse("complex", &t) == MP_ERR_ARG);
}

int main(void) {
    MP_RUN(test_philox_known_answers);
    MP_RUN(test_rng_streams);
    MP_RUN(test_pool_covers_range_once);
    MP_RUN(test_atomic_file);
    MP_RUN(test_error_wrap);
    MP_RUN(test_vol_create_and_convert);
    MP_RUN(test_orientation_codes);
    MP_RUN(test_dtype_names);
    return mp_test_summary();
}
