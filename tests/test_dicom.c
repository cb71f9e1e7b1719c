/* DICOM reader unit tests on files built here byte by byte: getters in each
 * encoding, sequences (defined/undefined lengths, UN holding implicit VR,
 * private sequences), hostile inputs (lengths past the end, nesting bombs,
 * deflate bombs, every truncation and byte flip of a valid file), the no-meta
 * guess, native pixel corner cases (BitsStored masking and sign extension,
 * HighBit shifts, planar configuration, 1-bit multi-frame, MONOCHROME1,
 * YBR), the RLE codec against an encoder written here, encapsulated frame
 * lookup (basic / extended offset tables, split fragments), the codec
 * dispatch, and series reading details (colour, MONOCHROME1, no geometry,
 * duplicates, legacy multi-frame, skipped files, mp_dicom_read). */
#include <zlib.h>

#include "harness.h"
#include "io/codec.h"
#include "medpipe/core.h"
#include "medpipe/dicom.h"

/* ------------------------------------------------------------ a tiny DICOM writer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int big, explicit_vr;
} wb_t;

static void put(wb_t *w, const void *d, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 256;
        w->p = realloc(w->p, w->cap);
    }
    memcpy(w->p + w->n, d, n);
    w->n += n;
}
static void put16(wb_t *w, uint16_t v) {
    uint8_t b[2] = {(uint8_t)(w->big ? v >> 8 : v), (uint8_t)(w->big ? v : v >> 8)};
    put(w, b, 2);
}
static void put32(wb_t *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[w->big ? 3 - i : i] = (uint8_t)(v >> (8 * i));
    put(w, b, 4);
}
static int long_vr(const char *vr) {
    return strstr("OB OD OF OL OV OW SQ SV UC UN UR UT UV", vr) != NULL;
}
static void hdr(wb_t *w, uint16_t g, uint16_t e, const char *vr, uint32_t len) {
    put16(w, g);
    put16(w, e);
    if (!w->explicit_vr) {
        put32(w, len);
    } else if (long_vr(vr)) {
        put(w, vr, 2);
        put16(w, 0);
        put32(w, len);
    } else {
        put(w, vr, 2);
        put16(w, (uint16_t)len);
    }
}
static void el(wb_t *w, uint16_t g, uint16_t e, const char *vr, const void *v, uint32_t len) {
    hdr(w, g, e, vr, len);
    put(w, v, len);
}
static void el_str(wb_t *w, uint16_t g, uint16_t e, const char *vr, const char *s) {
    size_t n = strlen(s);
    char tmp[256];
    memcpy(tmp, s, n);
    if (n % 2) tmp[n++] = strcmp(vr, "UI") == 0 ? 0 : ' ';
    el(w, g, e, vr, tmp, (uint32_t)n);
}
static void el_us(wb_t *w, uint16_t g, uint16_t e, uint16_t v) {
    hdr(w, g, e, "US", 2);
    put16(w, v);
}
static void delim(wb_t *w, uint16_t e, uint32_t len) {
    put16(w, 0xFFFE);
    put16(w, e);
    put32(w, len);
}
static void meta(wb_t *w, const char *syntax) {
    uint8_t pre[128] = {0};
    put(w, pre, 128);
    put(w, "DICM", 4);
    wb_t m = {0};
    m.explicit_vr = 1;
    el_str(&m, 0x0002, 0x0010, "UI", syntax);
    int big = w->big, ex = w->explicit_vr;
    w->big = 0;
    w->explicit_vr = 1;
    hdr(w, 0x0002, 0x0000, "UL", 4);
    put32(w, (uint32_t)m.n);
    put(w, m.p, m.n);
    w->big = big;
    w->explicit_vr = ex;
    free(m.p);
}
static void image_tags(wb_t *w, int rows, int cols, int spp, int ba, int bs, int hb, int sign, const char *photo) {
    el_us(w, 0x0028, 0x0002, (uint16_t)spp);
    el_str(w, 0x0028, 0x0004, "CS", photo);
    if (spp > 1) el_us(w, 0x0028, 0x0006, 0);
    el_us(w, 0x0028, 0x0010, (uint16_t)rows);
    el_us(w, 0x0028, 0x0011, (uint16_t)cols);
    el_us(w, 0x0028, 0x0100, (uint16_t)ba);
    el_us(w, 0x0028, 0x0101, (uint16_t)bs);
    el_us(w, 0x0028, 0x0102, (uint16_t)hb);
    el_us(w, 0x0028, 0x0103, (uint16_t)sign);
}

static mp_dicom_file_t *parse(const wb_t *w) {
    mp_dicom_file_t *f = NULL;
    if (mp_dicom_file_parse(&f, w->p, w->n, "test.dcm", 0)) return NULL;
    return f;
}

static const mp_dicom_ds_t *top(const mp_dicom_file_t *f) { return mp_dicom_file_dataset(f); }

#define TG(g, e) MP_DICOM_TAG(0x##g, 0x##e)

/* ------------------------------------------------------------ getters */

static void build_getter_file(wb_t *w, const char *syntax) {
    meta(w, syntax);
    el_str(w, 0x0008, 0x0060, "CS", "CT");
    el(w, 0x0008, 0x103E, "LO", "  brain \0\0", 10);
    el_str(w, 0x0018, 0x0050, "DS", "0x10");
    el_str(w, 0x0020, 0x0013, "IS", " 42 ");
    el_str(w, 0x0020, 0x0032, "DS", "-1.5\\2\\3e1");
    el_str(w, 0x0028, 0x0008, "IS", "1A");
    el_us(w, 0x0028, 0x0010, 513);
    hdr(w, 0x0028, 0x1052, "FD", 8);
    double d = -1024.25;
    uint64_t u;
    memcpy(&u, &d, 8);
    if (w->big) {
        put32(w, (uint32_t)(u >> 32));
        put32(w, (uint32_t)u);
    } else {
        put32(w, (uint32_t)u);
        put32(w, (uint32_t)(u >> 32));
    }
    hdr(w, 0x0029, 0x1010, "SL", 8);
    put32(w, (uint32_t)-7);
    put32(w, 70000);
}

static void check_getters(const mp_dicom_file_t *f) {
    char s[64];
    double v[4];
    int64_t i;
    const mp_dicom_ds_t *ds = top(f);
    MP_CHECK(mp_dicom_get_str(ds, TG(0008, 103E), s, sizeof s) == 5 && strcmp(s, "brain") == 0);
    MP_CHECK(mp_dicom_get_str(ds, TG(0008, 0060), s, 2) == 1 && strcmp(s, "C") == 0); /* truncated to cap-1 */
    MP_CHECK(mp_dicom_get_str(ds, TG(0010, 0010), s, sizeof s) == 0 && s[0] == 0);
    MP_CHECK(mp_dicom_get_i64(ds, TG(0020, 0013), &i) == 1 && i == 42);
    MP_CHECK(mp_dicom_get_f64(ds, TG(0018, 0050), v) == MP_ERR_FORMAT); /* DS is decimal only */
    MP_CHECK(mp_dicom_get_f64s(ds, TG(0020, 0032), v, 4) == 3 && v[0] == -1.5 && v[1] == 2 && v[2] == 30);
    MP_CHECK(mp_dicom_get_f64s(ds, TG(0020, 0032), v, 2) == 2);
    MP_CHECK(mp_dicom_get_i64(ds, TG(0028, 0008), &i) == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "NumberOfFrames") && strstr(mp_error_message(), "1A"));
    MP_CHECK(mp_dicom_get_i64(ds, TG(0028, 0010), &i) == 1 && i == 513);
    MP_CHECK(mp_dicom_get_f64(ds, TG(0028, 1052), v) == 1 && v[0] == -1024.25);
    MP_CHECK(mp_dicom_get_f64s(ds, TG(0029, 1010), v, 4) == 2 && v[0] == -7 && v[1] == 70000);
    MP_CHECK(mp_dicom_get_f64(ds, TG(0008, 0060), v) == MP_ERR_FORMAT); /* CS is not numeric */
}

static void test_getters_little_and_big_endian(void) {
    wb_t le = {0}, be = {0};
    le.explicit_vr = be.explicit_vr = 1;
    be.big = 1;
    build_getter_file(&le, "1.2.840.10008.1.2.1");
    build_getter_file(&be, "1.2.840.10008.1.2.2");
    mp_dicom_file_t *f = parse(&le);
    MP_CHECK(f && top(f)->sorted && !top(f)->big_endian);
    check_getters(f);
    if (mp_test_cur_failed) return;
    mp_dicom_file_free(f);
    f = parse(&be);
    MP_CHECK(f && top(f)->big_endian && strcmp(mp_dicom_file_syntax(f), "1.2.840.10008.1.2.2") == 0);
    check_getters(f);
    mp_dicom_file_free(f);
    free(le.p);
    free(be.p);
}

/* ------------------------------------------------------------ sequences */

static void test_sequences_and_un(void) {
    wb_t w = {0};
    w.explicit_vr = 0;
    meta(&w, "1.2.840.10008.1.2");
    /* implicit VR: a known SQ with undefined length, items of both kinds */
    hdr(&w, 0x0008, 0x1115, "SQ", 0xFFFFFFFF);
    delim(&w, 0xE000, 0xFFFFFFFF);
    el_str(&w, 0x0020, 0x000E, "UI", "1.2.3");
    delim(&w, 0xE00D, 0);
    delim(&w, 0xE000, 10 + 8);
    el_str(&w, 0x0020, 0x000E, "UI", "1.2.3.4.5");
    delim(&w, 0xE0DD, 0);
    /* a private element with a defined length that holds a sequence */
    el_str(&w, 0x0029, 0x0010, "LO", "ACME");
    wb_t inner = {0};
    delim(&inner, 0xE000, 8 + 4);
    el_str(&inner, 0x0029, 0x1001, "UN", "abcd");
    el(&w, 0x0029, 0x1010, "UN", inner.p, (uint32_t)inner.n);
    free(inner.p);
    el_str(&w, 0x0029, 0x1011, "UN", "not a sequence");
    mp_dicom_file_t *f = parse(&w);
    MP_CHECK(f);
    const mp_dicom_ds_t *it0 = mp_dicom_get_item(top(f), TG(0008, 1115), 0), *it1 = mp_dicom_get_item(top(f), TG(0008, 1115), 1);
    char s[64];
    MP_CHECK(it0 && it1 && !mp_dicom_get_item(top(f), TG(0008, 1115), 2));
    MP_CHECK(mp_dicom_get_str(it0, TG(0020, 000E), s, sizeof s) && strcmp(s, "1.2.3") == 0);
    MP_CHECK(mp_dicom_get_str(it1, TG(0020, 000E), s, sizeof s) && strcmp(s, "1.2.3.4.5") == 0);
    const mp_dicom_ds_t *priv = mp_dicom_get_item(top(f), TG(0029, 1010), 0);
    MP_CHECK(priv && mp_dicom_get_str(priv, TG(0029, 1001), s, sizeof s) && strcmp(s, "abcd") == 0);
    MP_CHECK(mp_dicom_find(top(f), TG(0029, 1011))->n_items == 0);
    mp_dicom_file_free(f);
    free(w.p);

    /* explicit VR: UN with undefined length holds implicit VR LE (CP-246), nested */
    wb_t e = {0};
    e.explicit_vr = 1;
    meta(&e, "1.2.840.10008.1.2.1");
    hdr(&e, 0x0011, 0x1010, "UN", 0xFFFFFFFF);
    e.explicit_vr = 0;
    delim(&e, 0xE000, 0xFFFFFFFF);
    hdr(&e, 0x0011, 0x1011, "SQ", 0xFFFFFFFF);
    delim(&e, 0xE000, 0xFFFFFFFF);
    el_str(&e, 0x0028, 0x0030, "DS", "0.5\\0.25");
    delim(&e, 0xE00D, 0);
    delim(&e, 0xE0DD, 0);
    delim(&e, 0xE00D, 0);
    delim(&e, 0xE0DD, 0);
    e.explicit_vr = 1;
    el_us(&e, 0x0028, 0x0010, 7);
    f = parse(&e);
    MP_CHECK(f);
    const mp_dicom_ds_t *a = mp_dicom_get_item(top(f), TG(0011, 1010), 0);
    const mp_dicom_ds_t *b = a ? mp_dicom_get_item(a, TG(0011, 1011), 0) : NULL;
    double v[2];
    MP_CHECK(b && !b->explicit_vr && mp_dicom_get_f64s(b, TG(0028, 0030), v, 2) == 2 && v[1] == 0.25);
    MP_CHECK(mp_dicom_get_f64(top(f), TG(0028, 0010), v) == 1 && v[0] == 7);
    mp_dicom_file_free(f);
    free(e.p);
}

/* ------------------------------------------------------------ hostile input */

static void build_small_image(wb_t *w, const char *syntax) {
    meta(w, syntax);
    el_str(w, 0x0008, 0x0060, "CS", "MR");
    hdr(w, 0x0008, 0x1115, "SQ", 0xFFFFFFFF);
    delim(w, 0xE000, 0xFFFFFFFF);
    el_str(w, 0x0020, 0x000E, "UI", "1.2");
    delim(w, 0xE00D, 0);
    delim(w, 0xE0DD, 0);
    image_tags(w, 3, 5, 1, 16, 12, 11, 1, "MONOCHROME2");
    uint16_t px[15];
    for (int i = 0; i < 15; i++) px[i] = (uint16_t)(i * 300);
    hdr(w, 0x7FE0, 0x0010, "OW", 30);
    for (int i = 0; i < 15; i++) put16(w, px[i]);
}

static void test_hostile_lengths(void) {
    wb_t w = {0};
    w.explicit_vr = 1;
    meta(&w, "1.2.840.10008.1.2.1");
    size_t at = w.n;
    hdr(&w, 0x0010, 0x0010, "PN", 200);
    put(&w, "abc", 4);
    mp_dicom_file_t *f;
    MP_CHECK(mp_dicom_file_parse(&f, w.p, w.n, "evil.dcm", 0) == MP_ERR_FORMAT);
    char want[64];
    snprintf(want, sizeof want, "offset %zu", at);
    MP_CHECKF(strstr(mp_error_message(), "evil.dcm") && strstr(mp_error_message(), want), "%s", mp_error_message());
    free(w.p);

    /* nesting bomb: 100 undefined-length sequences inside each other */
    wb_t b = {0};
    b.explicit_vr = 1;
    meta(&b, "1.2.840.10008.1.2.1");
    for (int i = 0; i < 100; i++) {
        hdr(&b, 0x0008, 0x1115, "SQ", 0xFFFFFFFF);
        delim(&b, 0xE000, 0xFFFFFFFF);
    }
    MP_CHECK(mp_dicom_file_parse(&f, b.p, b.n, "bomb.dcm", 0) == MP_ERR_LIMIT);
    MP_CHECK(strstr(mp_error_message(), "deeper than 64"));
    free(b.p);

    /* every truncation and every byte flip of a valid file: errors or successes, never a crash */
    wb_t v = {0};
    v.explicit_vr = 1;
    build_small_image(&v, "1.2.840.10008.1.2.1");
    int ok = 0, bad = 0;
    for (size_t n = 0; n <= v.n; n++) {
        if (mp_dicom_file_parse(&f, v.p, n, "cut.dcm", 0) == MP_OK) {
            mp_dicom_pixel_info_t pi;
            uint16_t out[64];
            if (mp_dicom_pixel_info(f, &pi) == MP_OK && mp_dicom_frame_bytes(&pi) <= sizeof out)
                mp_dicom_decode_frame(f, &pi, 0, out, mp_dicom_frame_bytes(&pi), 0);
            mp_dicom_file_free(f);
            ok++;
        } else {
            MP_CHECK(strstr(mp_error_message(), "cut.dcm"));
            bad++;
        }
    }
    MP_CHECK(ok > 0 && bad > 0);
    uint8_t *copy = malloc(v.n);
    for (size_t i = 0; i < v.n; i++) {
        memcpy(copy, v.p, v.n);
        copy[i] ^= 0xFF;
        if (mp_dicom_file_parse(&f, copy, v.n, "flip.dcm", 0) == MP_OK) {
            mp_dicom_pixel_info_t pi;
            if (mp_dicom_pixel_info(f, &pi) == MP_OK && mp_dicom_frame_bytes(&pi) <= 4096) {
                void *out = malloc(mp_dicom_frame_bytes(&pi));
                mp_dicom_decode_frame(f, &pi, 0, out, mp_dicom_frame_bytes(&pi), MP_DICOM_FRAME_RGB);
                free(out);
            }
            mp_dicom_file_free(f);
        }
    }
    free(copy);
    free(v.p);
}

static size_t raw_deflate(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    deflateInit2(&zs, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    size_t got = cap - zs.avail_out;
    deflateEnd(&zs);
    return got;
}

static void test_deflate_and_bomb(void) {
    wb_t plain = {0}, body = {0};
    plain.explicit_vr = body.explicit_vr = 1;
    build_small_image(&plain, "1.2.840.10008.1.2.1");
    build_small_image(&body, "1.2.840.10008.1.2.1");
    /* deflated file: same meta (other syntax), body compressed */
    wb_t d = {0};
    d.explicit_vr = 1;
    meta(&d, "1.2.840.10008.1.2.1.99");
    size_t meta_len = 132 + 12 + 8 + 20; /* preamble+DICM, group length, syntax element (19 chars + pad) */
    size_t body_off = 0;
    for (size_t i = 132; i + 4 < body.n; i++) /* end of the meta group in the plain file */
        if (body.p[i] == 0x08 && body.p[i + 1] == 0 && body.p[i + 2] == 0x60) {
            body_off = i;
            break;
        }
    MP_CHECK(body_off > 132);
    (void)meta_len;
    uint8_t z[4096];
    size_t zn = raw_deflate(body.p + body_off, body.n - body_off, z, sizeof z);
    put(&d, z, zn);
    mp_dicom_file_t *f1 = parse(&plain), *f2 = parse(&d);
    MP_CHECKF(f1 && f2, "%s", mp_error_message());
    mp_dicom_pixel_info_t p1, p2;
    uint16_t o1[15], o2[15];
    MP_CHECK_OK(mp_dicom_pixel_info(f1, &p1));
    MP_CHECK_OK(mp_dicom_pixel_info(f2, &p2));
    MP_CHECK_OK(mp_dicom_decode_frame(f1, &p1, 0, o1, sizeof o1, 0));
    MP_CHECK_OK(mp_dicom_decode_frame(f2, &p2, 0, o2, sizeof o2, 0));
    MP_CHECK(memcmp(o1, o2, sizeof o1) == 0);
    mp_dicom_file_free(f1);
    mp_dicom_file_free(f2);
    /* deflate bomb: 8 MB of zeros under a 1 MB limit */
    size_t big = 8u << 20;
    uint8_t *zeros = calloc(1, big), *zb = malloc(64 << 10);
    wb_t bomb = {0};
    bomb.explicit_vr = 1;
    meta(&bomb, "1.2.840.10008.1.2.1.99");
    size_t zbn = raw_deflate(zeros, big, zb, 64 << 10);
    put(&bomb, zb, zbn);
    uint64_t saved = mp_mem_limit();
    mp_mem_set_limit(1u << 20);
    mp_dicom_file_t *f;
    int rc = mp_dicom_file_parse(&f, bomb.p, bomb.n, "bomb.dcm", 0);
    mp_mem_set_limit(saved);
    MP_CHECKF(rc == MP_ERR_LIMIT, "rc %d: %s", rc, mp_error_message());
    free(zeros);
    free(zb);
    free(bomb.p);
    free(plain.p);
    free(body.p);
    free(d.p);
}

static void test_no_meta_guess(void) {
    wb_t w = {0};
    w.explicit_vr = 0;
    el_str(&w, 0x0008, 0x0005, "CS", "ISO_IR 100");
    el_str(&w, 0x0008, 0x0060, "CS", "CT");
    image_tags(&w, 2, 2, 1, 8, 8, 7, 0, "MONOCHROME2");
    el(&w, 0x7FE0, 0x0010, "OB", "\x01\x02\x03\x04", 4);
    mp_dicom_file_t *f = parse(&w);
    MP_CHECK(f && mp_dicom_file_guessed(f) && strcmp(mp_dicom_file_syntax(f), "1.2.840.10008.1.2") == 0);
    uint8_t px[4];
    mp_dicom_pixel_info_t pi;
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, px, 4, 0));
    MP_CHECK(px[3] == 4);
    mp_dicom_file_free(f);
    const char *text = "This is not a DICOM file, only some text that is long enough.";
    MP_CHECK(mp_dicom_file_parse(&f, (const uint8_t *)text, strlen(text), "t.txt", 0) == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "not a DICOM file"));
    free(w.p);
}

/* ------------------------------------------------------------ native pixels */

static mp_dicom_file_t *native_file(wb_t *w, int rows, int cols, int spp, int ba, int bs, int hb, int sign,
                                    const char *photo, int planar, int frames, const void *px, size_t n) {
    memset(w, 0, sizeof *w);
    w->explicit_vr = 1;
    meta(w, "1.2.840.10008.1.2.1");
    el_us(w, 0x0028, 0x0002, (uint16_t)spp);
    el_str(w, 0x0028, 0x0004, "CS", photo);
    if (spp > 1) el_us(w, 0x0028, 0x0006, (uint16_t)planar);
    if (frames > 1) {
        char s[16];
        snprintf(s, sizeof s, "%d", frames);
        el_str(w, 0x0028, 0x0008, "IS", s);
    }
    el_us(w, 0x0028, 0x0010, (uint16_t)rows);
    el_us(w, 0x0028, 0x0011, (uint16_t)cols);
    el_us(w, 0x0028, 0x0100, (uint16_t)ba);
    el_us(w, 0x0028, 0x0101, (uint16_t)bs);
    el_us(w, 0x0028, 0x0102, (uint16_t)hb);
    el_us(w, 0x0028, 0x0103, (uint16_t)sign);
    uint8_t pad[4096];
    memcpy(pad, px, n);
    if (n % 2) pad[n++] = 0;
    el(w, 0x7FE0, 0x0010, ba > 8 ? "OW" : "OB", pad, (uint32_t)n);
    return parse(w);
}

static void test_native_bits(void) {
    wb_t w;
    mp_dicom_pixel_info_t pi;
    /* 12 bits stored, signed, garbage in the top 4 bits */
    uint16_t px[4] = {0xF7FF, 0x0800, 0xA001, 0x0FFF};
    mp_dicom_file_t *f = native_file(&w, 2, 2, 1, 16, 12, 11, 1, "MONOCHROME2", 0, 1, px, sizeof px);
    int16_t o[4];
    MP_CHECK(f);
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, o, sizeof o, 0));
    MP_CHECK(o[0] == 2047 && o[1] == -2048 && o[2] == 1 && o[3] == -1);
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, o, sizeof o, MP_DICOM_FRAME_INVERT_MONO1)); /* MONOCHROME2: no-op */
    MP_CHECK(o[0] == 2047);
    mp_dicom_file_free(f);
    free(w.p);
    /* HighBit 13 with 12 bits stored: values sit 2 bits up */
    uint16_t sh[2] = {(uint16_t)(100 << 2 | 3), (uint16_t)(4095 << 2)};
    f = native_file(&w, 1, 2, 1, 16, 12, 13, 0, "MONOCHROME1", 0, 1, sh, sizeof sh);
    uint16_t u[2];
    MP_CHECK(f);
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, u, sizeof u, 0));
    MP_CHECK(u[0] == 100 && u[1] == 4095);
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, u, sizeof u, MP_DICOM_FRAME_INVERT_MONO1));
    MP_CHECK(u[0] == 4095 - 100 && u[1] == 0);
    mp_dicom_file_free(f);
    free(w.p);
    /* 1-bit, 3 frames of 3x5: frames start mid-byte */
    uint8_t bits[6] = {0};
    for (int i = 0; i < 45; i++)
        if (i % 3 == 0 || i % 7 == 0) bits[i / 8] |= (uint8_t)(1 << (i % 8));
    f = native_file(&w, 3, 5, 1, 1, 1, 0, 0, "MONOCHROME2", 0, 3, bits, sizeof bits);
    MP_CHECK(f);
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    for (int k = 0; k < 3; k++) {
        uint8_t b[15];
        MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, k, b, 15, 0));
        for (int i = 0; i < 15; i++) MP_CHECK(b[i] == ((k * 15 + i) % 3 == 0 || (k * 15 + i) % 7 == 0));
    }
    mp_dicom_file_free(f);
    free(w.p);
    /* pixel data shorter than the frames it claims */
    f = native_file(&w, 4, 4, 1, 16, 16, 15, 0, "MONOCHROME2", 0, 1, px, sizeof px);
    MP_CHECK(f);
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    uint16_t big[16];
    MP_CHECK(mp_dicom_decode_frame(f, &pi, 0, big, sizeof big, 0) == MP_ERR_FORMAT);
    MP_CHECK(strstr(mp_error_message(), "test.dcm") && strstr(mp_error_message(), "offset"));
    mp_dicom_file_free(f);
    free(w.p);
}

static void test_native_colour(void) {
    wb_t w;
    mp_dicom_pixel_info_t pi;
    /* planar configuration 1, odd 3x3 RGB */
    uint8_t pl[27], o[27];
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 9; p++) pl[c * 9 + p] = (uint8_t)(c * 100 + p);
    mp_dicom_file_t *f = native_file(&w, 3, 3, 3, 8, 8, 7, 0, "RGB", 1, 1, pl, sizeof pl);
    MP_CHECK(f);
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, o, sizeof o, MP_DICOM_FRAME_RGB));
    for (int p = 0; p < 9; p++)
        for (int c = 0; c < 3; c++) MP_CHECK(o[p * 3 + c] == c * 100 + p);
    mp_dicom_file_free(f);
    free(w.p);
    /* YBR_FULL_422: Y1 Y2 Cb Cr -> full, then RGB */
    uint8_t y[8] = {100, 110, 128, 128, 50, 60, 90, 200};
    f = native_file(&w, 1, 4, 3, 8, 8, 7, 0, "YBR_FULL_422", 0, 1, y, sizeof y);
    uint8_t full[12];
    MP_CHECK(f);
    MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, full, sizeof full, 0));
    uint8_t want[12] = {100, 128, 128, 110, 128, 128, 50, 90, 200, 60, 90, 200};
    MP_CHECK(memcmp(full, want, 12) == 0);
    MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, 0, full, sizeof full, MP_DICOM_FRAME_RGB));
    MP_CHECK(full[0] == 100 && full[1] == 100 && full[2] == 100); /* grey stays grey */
    int r = (int)floor(50 + 1.402 * 72 + 0.5), g = (int)floor(50 - 0.344136 * -38 - 0.714136 * 72 + 0.5),
        b = (int)floor(50 + 1.772 * -38 + 0.5);
    MP_CHECK(full[6] == (r > 255 ? 255 : r) && full[7] == (g < 0 ? 0 : g) && full[8] == (b < 0 ? 0 : b));
    mp_dicom_file_free(f);
    free(w.p);
    /* YBR_FULL_422 needs an even width */
    f = native_file(&w, 1, 3, 3, 8, 8, 7, 0, "YBR_FULL_422", 0, 1, y, 6);
    MP_CHECK(f && mp_dicom_pixel_info(f, &pi) == MP_ERR_FORMAT);
    mp_dicom_file_free(f);
    free(w.p);
}

/* ------------------------------------------------------------ RLE */

/* PackBits: literal runs of up to 128 bytes, repeats of 3+ bytes. */
static size_t packbits(const uint8_t *in, size_t n, size_t stride, uint8_t *out) {
    size_t o = 0, i = 0;
    while (i < n) {
        size_t run = 1;
        while (i + run < n && run < 128 && in[(i + run) * stride] == in[i * stride]) run++;
        if (run >= 3) {
            out[o++] = (uint8_t)(1 - (int)run);
            out[o++] = in[i * stride];
            i += run;
            continue;
        }
        size_t lit = 0;
        while (i + lit < n && lit < 128) {
            if (i + lit + 2 < n && in[(i + lit) * stride] == in[(i + lit + 1) * stride] &&
                in[(i + lit) * stride] == in[(i + lit + 2) * stride])
                break;
            lit++;
        }
        out[o++] = (uint8_t)(lit - 1);
        for (size_t k = 0; k < lit; k++) out[o++] = in[(i + k) * stride];
        i += lit;
    }
    return o;
}

/* RLE frame of interleaved LE samples. */
static size_t rle_encode(const uint8_t *px, size_t npix, int spp, int bytes, uint8_t *out) {
    size_t nseg = (size_t)spp * (size_t)bytes, o = 64;
    memset(out, 0, 64);
    out[0] = (uint8_t)nseg;
    for (size_t s = 0; s < nseg; s++) {
        size_t sample = s / (size_t)bytes, plane = (size_t)bytes - 1 - s % (size_t)bytes;
        uint32_t off = (uint32_t)o;
        memcpy(out + 4 + 4 * s, &off, 4);
        o += packbits(px + sample * (size_t)bytes + plane, npix, nseg, out + o);
        if (o % 2) out[o++] = 0; /* segments padded to even length: excess is ignored */
    }
    return o;
}

static void test_rle_codec(void) {
    mp_rng_t rng;
    mp_rng_init(&rng, 7, 1);
    int cases[][2] = {{1, 1}, {1, 2}, {3, 1}, {3, 2}, {1, 4}, {3, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int spp = cases[c][0], bytes = cases[c][1], rows = 7, cols = 13;
        size_t npix = (size_t)rows * cols, n = npix * (size_t)spp * (size_t)bytes;
        uint8_t *px = malloc(n), *enc = malloc(n * 2 + 200), *out = malloc(n);
        for (size_t i = 0; i < n; i++) px[i] = (uint8_t)(i % 5 < 2 ? 9 : mp_rng_u32(&rng));
        size_t en = rle_encode(px, npix, spp, bytes, enc);
        mp_frame_info_t fi = {rows, cols, spp, bytes * 8, bytes * 8, 0, 0, 0};
        MP_CHECK_OK(mp_codec_decode_rle(out, n, enc, en, &fi));
        MP_CHECK(memcmp(out, px, n) == 0);
        MP_CHECK_OK(mp_codec_decode_frame(MP_CODEC_RLE, out, n, enc, en, &fi));
        /* header faults */
        enc[0]++;
        MP_CHECK(mp_codec_decode_rle(out, n, enc, en, &fi) == MP_ERR_FORMAT && strstr(mp_error_message(), "segments"));
        enc[0]--;
        if (spp * bytes > 1) {
            uint32_t o1;
            memcpy(&o1, enc + 8, 4);
            uint32_t bad = 70000;
            memcpy(enc + 8, &bad, 4);
            MP_CHECK(mp_codec_decode_rle(out, n, enc, en, &fi) == MP_ERR_FORMAT);
            memcpy(enc + 8, &o1, 4);
        }
        MP_CHECK(mp_codec_decode_rle(out, n, enc, en / 2, &fi) == MP_ERR_FORMAT); /* short segment(s) */
        MP_CHECK(mp_codec_decode_rle(out, n, enc, 10, &fi) == MP_ERR_FORMAT);
        free(px);
        free(enc);
        free(out);
    }
}

/* Encapsulated RLE file with `frames` frames of 2x3 8-bit; layout:
 * 0 BOT, 1 no BOT one fragment per frame, 2 BOT with frames split in two
 * fragments, 3 split fragments without BOT, 4 extended offset table. */
static mp_dicom_file_t *rle_file(wb_t *w, int frames, int layout) {
    memset(w, 0, sizeof *w);
    w->explicit_vr = 1;
    meta(w, "1.2.840.10008.1.2.5");
    image_tags(w, 2, 3, 1, 8, 8, 7, 0, "MONOCHROME2");
    char s[8];
    snprintf(s, sizeof s, "%d", frames);
    el_str(w, 0x0028, 0x0008, "IS", s);
    uint8_t enc[8][128];
    size_t en[8];
    for (int k = 0; k < frames; k++) {
        uint8_t px[6];
        for (int i = 0; i < 6; i++) px[i] = (uint8_t)(k * 10 + i);
        en[k] = rle_encode(px, 6, 1, 1, enc[k]);
    }
    uint32_t offs[8], pos = 0;
    for (int k = 0; k < frames; k++) {
        offs[k] = pos;
        pos += (uint32_t)(layout == 2 || layout == 3 ? 8 + 64 + 8 + (en[k] - 64) : 8 + en[k]);
    }
    if (layout == 4) {
        hdr(w, 0x7FE0, 0x0001, "OV", (uint32_t)(8 * frames));
        for (int k = 0; k < frames; k++) {
            put32(w, offs[k]);
            put32(w, 0);
        }
    }
    hdr(w, 0x7FE0, 0x0010, "OB", 0xFFFFFFFF);
    uint32_t botn = (layout == 0 || layout == 2) ? (uint32_t)(4 * frames) : 0;
    delim(w, 0xE000, botn);
    for (uint32_t k = 0; k < botn / 4; k++) put32(w, offs[k]);
    for (int k = 0; k < frames; k++) {
        if (layout == 2 || layout == 3) {
            delim(w, 0xE000, 64);
            put(w, enc[k], 64);
            delim(w, 0xE000, (uint32_t)(en[k] - 64));
            put(w, enc[k] + 64, en[k] - 64);
        } else {
            delim(w, 0xE000, (uint32_t)en[k]);
            put(w, enc[k], en[k]);
        }
    }
    delim(w, 0xE0DD, 0);
    return parse(w);
}

static void test_encapsulated_frames(void) {
    for (int layout = 0; layout < 5; layout++) {
        wb_t w;
        mp_dicom_file_t *f = rle_file(&w, 3, layout);
        mp_dicom_pixel_info_t pi;
        MP_CHECKF(f, "layout %d: %s", layout, mp_error_message());
        MP_CHECK_OK(mp_dicom_pixel_info(f, &pi));
        MP_CHECK(pi.encapsulated && pi.frames == 3);
        for (int k = 0; k < 3; k++) {
            uint8_t o[6];
            MP_CHECK_OK(mp_dicom_decode_frame(f, &pi, k, o, 6, 0));
            for (int i = 0; i < 6; i++) MP_CHECKF(o[i] == k * 10 + i, "layout %d frame %d", layout, k);
        }
        MP_CHECK(mp_dicom_decode_frame(f, &pi, 3, (uint8_t[6]){0}, 6, 0) == MP_ERR_ARG);
        mp_dicom_file_free(f);
        free(w.p);
    }
}

static void test_codec_dispatch(void) {
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.5") == MP_CODEC_RLE);
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.4.70") == MP_CODEC_JPEG_LOSSLESS);
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.4.80") == MP_CODEC_JPEGLS);
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.4.91") == MP_CODEC_J2K);
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.4.50") == MP_CODEC_JPEG_BASELINE);
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.2") == MP_CODEC_NATIVE);
    MP_CHECK(mp_codec_for_syntax("1.2.840.10008.1.2.4.100") == MP_CODEC_UNSUPPORTED);
    MP_CHECK(mp_codec_for_syntax(NULL) == MP_CODEC_UNSUPPORTED);
    MP_CHECK(strstr(mp_codec_syntax_name("1.2.840.10008.1.2.4.100"), "MPEG2"));
    MP_CHECK(strstr(mp_codec_syntax_name("1.2.840.10008.1.2.4.90"), "JPEG 2000"));
    /* an encapsulated file in an unsupported syntax names it */
    wb_t w;
    mp_dicom_file_t *f = rle_file(&w, 1, 1);
    MP_CHECK(f);
    uint8_t *uid = memmem(w.p, w.n, "1.2.840.10008.1.2.5", 19);
    MP_CHECK(uid);
    memcpy(uid, "1.2.840.10008.1.2.9", 19);
    mp_dicom_file_free(f);
    f = parse(&w);
    mp_dicom_pixel_info_t pi;
    uint8_t o[6];
    MP_CHECK(f && mp_dicom_pixel_info(f, &pi) == MP_OK);
    MP_CHECK(mp_dicom_decode_frame(f, &pi, 0, o, 6, 0) == MP_ERR_UNSUPPORTED);
    MP_CHECK(strstr(mp_error_message(), "1.2.840.10008.1.2.9") && strstr(mp_error_message(), "unknown transfer syntax"));
    mp_dicom_file_free(f);
    free(w.p);
}

/* ------------------------------------------------------------ series details */

static char tmp[512];

static void write_file(const char *name, const wb_t *w) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    char *slash = strrchr(p, '/');
    *slash = 0;
    mp_mkdir_p(p);
    *slash = '/';
    MP_CHECK_OK(mp_file_write_atomic(p, w->p, w->n));
}

/* One slice file: 2 rows x 3 columns. */
static void slice_file(const char *name, const char *series, int inst, const double *ipp, const char *photo, int spp,
                       const uint8_t *px, const char *extra_frames) {
    wb_t w = {0};
    w.explicit_vr = 1;
    meta(&w, "1.2.840.10008.1.2.1");
    char s[128];
    snprintf(s, sizeof s, "%s.%d", series, inst);
    el_str(&w, 0x0008, 0x0018, "UI", s);
    el_str(&w, 0x0008, 0x0060, "CS", "OT");
    if (extra_frames) el_str(&w, 0x0018, 0x0088, "DS", "4");
    el_str(&w, 0x0020, 0x000E, "UI", series);
    el_str(&w, 0x0020, 0x0011, "IS", "9");
    snprintf(s, sizeof s, "%d", inst);
    el_str(&w, 0x0020, 0x0013, "IS", s);
    if (ipp) {
        snprintf(s, sizeof s, "%g\\%g\\%g", ipp[0], ipp[1], ipp[2]);
        el_str(&w, 0x0020, 0x0032, "DS", s);
        el_str(&w, 0x0020, 0x0037, "DS", "1\\0\\0\\0\\1\\0");
    }
    image_tags(&w, 2, 3, spp, 8, 8, 7, 0, photo);
    int frames = extra_frames ? atoi(extra_frames) : 1;
    /* NumberOfFrames after Rows: out of order, which the reader must tolerate */
    if (frames > 1) el_str(&w, 0x0028, 0x0008, "IS", extra_frames);
    el(&w, 0x7FE0, 0x0010, "OB", px, (uint32_t)(6 * spp * frames));
    write_file(name, &w);
    free(w.p);
}

static void test_series_details(void) {
    snprintf(tmp, sizeof tmp, "%s", mp_test_tmpdir("dicomunit"));
    uint8_t px[4][18];
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < 18; i++) px[k][i] = (uint8_t)(k * 20 + i);
    /* MONOCHROME1 stack of 3, written in reverse z order */
    for (int k = 0; k < 3; k++) {
        double ipp[3] = {0, 0, 10.0 - 2 * k};
        char n[64];
        snprintf(n, sizeof n, "mono1/f%d", k);
        slice_file(n, "1.9.1", k + 1, ipp, "MONOCHROME1", 1, px[k], NULL);
    }
    char p[700];
    snprintf(p, sizeof p, "%s/mono1", tmp);
    mp_vol_t *v;
    MP_CHECK_OK(mp_dicom_read(&v, p));
    MP_CHECK(v->dim[2] == 3 && v->dtype == MP_DTYPE_U8);
    /* z=0 is the lowest position (file k=2); inverted over 8 bits */
    MP_CHECK(mp_vol_get(v, 0) == 255 - px[2][0] && mp_vol_get(v, 6 * 2 + 5) == 255 - px[0][5]);
    MP_CHECK_NEAR(v->affine[2][2], 2.0, 1e-9);
    MP_CHECK_NEAR(v->affine[2][3], 6.0, 1e-9);
    MP_CHECK_NEAR(v->affine[0][0], -1.0, 1e-9); /* LPS -> RAS */
    mp_vol_free(v);
    /* RGB and YBR slices become 3 channel planes */
    double ipp0[3] = {0, 0, 0}, ipp1[3] = {0, 0, 1};
    slice_file("rgb/a", "1.9.2", 1, ipp0, "RGB", 3, px[0], NULL);
    slice_file("rgb/b", "1.9.2", 2, ipp1, "RGB", 3, px[1], NULL);
    snprintf(p, sizeof p, "%s/rgb", tmp);
    MP_CHECK_OK(mp_dicom_read(&v, p));
    MP_CHECK(v->dim[3] == 3 && v->dim[2] == 2);
    for (int c = 0; c < 3; c++)
        for (int z = 0; z < 2; z++)
            for (int i = 0; i < 6; i++) MP_CHECK(mp_vol_get(v, ((c * 2 + z) * 6) + i) == px[z][i * 3 + c]);
    mp_vol_free(v);
    /* PALETTE COLOR is refused with a clear message */
    slice_file("pal/a", "1.9.3", 1, ipp0, "PALETTE COLOR", 1, px[0], NULL);
    snprintf(p, sizeof p, "%s/pal", tmp);
    MP_CHECK(mp_dicom_read(&v, p) == MP_ERR_UNSUPPORTED && strstr(mp_error_message(), "PALETTE COLOR"));
    /* no geometry: sorted by instance number, flagged */
    slice_file("nogeo/x", "1.9.4", 2, NULL, "MONOCHROME2", 1, px[1], NULL);
    slice_file("nogeo/y", "1.9.4", 1, NULL, "MONOCHROME2", 1, px[0], NULL);
    /* duplicates at one position, nothing to tell them apart */
    slice_file("dup/a", "1.9.5", 1, ipp0, "MONOCHROME2", 1, px[0], NULL);
    slice_file("dup/b", "1.9.5", 2, ipp0, "MONOCHROME2", 1, px[1], NULL);
    slice_file("dup/c", "1.9.5", 3, ipp1, "MONOCHROME2", 1, px[2], NULL);
    /* legacy multi-frame: frames stepped by SpacingBetweenSlices */
    uint8_t mf[24];
    for (int i = 0; i < 24; i++) mf[i] = (uint8_t)i;
    slice_file("mf/m", "1.9.6", 1, ipp0, "MONOCHROME2", 1, mf, "4");
    /* junk that must be skipped */
    wb_t junk = {0};
    put(&junk, "hello, not dicom at all................", 40);
    write_file("nogeo/readme.txt", &junk);
    free(junk.p);
    mp_dicom_series_list_t *l;
    MP_CHECK_OK(mp_dicom_scan(&l, tmp));
    int seen = 0;
    for (int i = 0; i < l->n; i++) {
        const mp_dicom_series_t *s = &l->series[i];
        if (strcmp(s->series_uid, "1.9.4") == 0) {
            MP_CHECK(s->flags & MP_DICOM_SERIES_NO_GEOMETRY);
            MP_CHECK(s->count == 2 && s->slices[0].instance == 1);
            seen |= 1;
        } else if (strcmp(s->series_uid, "1.9.5") == 0) {
            MP_CHECK(s->flags & MP_DICOM_SERIES_DUPLICATES);
            MP_CHECK(s->count == 2 && s->slices[0].instance == 1 && s->nz == 2);
            seen |= 2;
        } else if (strcmp(s->series_uid, "1.9.6") == 0) {
            MP_CHECK(s->flags & MP_DICOM_SERIES_MULTIFRAME);
            MP_CHECK(s->count == 4 && s->nz == 4);
            MP_CHECK_OK(mp_dicom_series_read(&v, s));
            MP_CHECK_NEAR(v->affine[2][2], 4.0, 1e-9);
            for (int i2 = 0; i2 < 24; i2++) MP_CHECK(mp_vol_get(v, i2) == i2);
            mp_vol_free(v);
            seen |= 4;
        }
    }
    MP_CHECK(seen == 7);
    MP_CHECK(l->files_skipped >= 1);
    mp_dicom_series_list_free(l);
    /* a file that changes between scan and read: the error names it */
    snprintf(p, sizeof p, "%s/mono1", tmp);
    MP_CHECK_OK(mp_dicom_scan(&l, p));
    char victim[700];
    snprintf(victim, sizeof victim, "%s", l->series[0].slices[1].path);
    MP_CHECK(truncate(victim, 200) == 0);
    MP_CHECK(mp_dicom_series_read(&v, &l->series[0]) == MP_ERR_FORMAT);
    MP_CHECKF(strstr(mp_error_message(), victim), "%s", mp_error_message());
    mp_dicom_series_list_free(l);
    /* a single file reads alone */
    snprintf(p, sizeof p, "%s/rgb/a", tmp);
    MP_CHECK_OK(mp_dicom_read(&v, p));
    MP_CHECK(v->dim[2] == 1 && v->dim[3] == 3);
    mp_vol_free(v);
    snprintf(p, sizeof p, "%s/does-not-exist", tmp);
    MP_CHECK(mp_dicom_read(&v, p) == MP_ERR_IO);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    MP_CHECK(system(cmd) == 0);
}

static void quiet_log(mp_log_level_t level, const char *msg, void *user) {
    (void)level, (void)msg, (void)user;
}

int main(void) {
    mp_log_set_callback(quiet_log, NULL);
    MP_RUN(test_getters_little_and_big_endian);
    MP_RUN(test_sequences_and_un);
    MP_RUN(test_hostile_lengths);
    MP_RUN(test_deflate_and_bomb);
    MP_RUN(test_no_meta_guess);
    MP_RUN(test_native_bits);
    MP_RUN(test_native_colour);
    MP_RUN(test_rle_codec);
    MP_RUN(test_encapsulated_frames);
    MP_RUN(test_codec_dispatch);
    MP_RUN(test_series_details);
    return mp_test_summary();
}
