/* gzip decompression into caller-sized buffers and one-shot compression, for
 * .nii.gz and .img.gz files. libdeflate does the bulk work (about twice as
 * fast as zlib); zlib's streaming inflate handles the first header bytes, the
 * streams that hold more data than the image needs, and explains failures
 * (truncated vs corrupt, with the offset). */
#include "io/gz.h"
#include "medpipe/core.h"

#include <libdeflate.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int mp_gz_is_gzip(const uint8_t *buf, size_t len) { return len >= 2 && buf[0] == 0x1f && buf[1] == 0x8b; }

uint64_t mp_gz_max_output(size_t len) {
    /* A deflate stream cannot expand more than 1032:1; the margin covers
     * headers of tiny streams. */
    return (uint64_t)len * 1040u + 65536u;
}

/* Hands zlib the next slice of input (zlib counts in 32-bit uInt). */
static void feed(z_stream *s, const uint8_t *in, size_t len, size_t *fed) {
    if (s->avail_in == 0 && *fed < len) {
        size_t n = len - *fed;
        if (n > UINT_MAX) n = UINT_MAX;
        s->next_in = (Bytef *)(uintptr_t)(in + *fed);
        s->avail_in = (uInt)n;
        *fed += n;
    }
}

/* zlib's message, with the trailer checks spelled out. */
static const char *zlib_reason(const char *msg) {
    if (!msg) return "inflate failed";
    if (strcmp(msg, "incorrect data check") == 0) return "CRC-32 mismatch (incorrect data check)";
    if (strcmp(msg, "incorrect length check") == 0) return "ISIZE mismatch (incorrect length check)";
    return msg;
}

/* Streams gzip members from in[start] into out[opos..need) with zlib. Once
 * `need` bytes are out, finishes the current member into a scratch buffer so
 * its CRC and length are still checked. */
static int zlib_stream(const char *name, const uint8_t *in, size_t len, size_t start, uint8_t *out, size_t opos,
                       size_t need) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return mp_error_set(MP_ERR_NOMEM, "%s: cannot start zlib", name);
    uint8_t scratch[16384];
    size_t fed = start;
    int rc = MP_OK;
    for (;;) {
        feed(&s, in, len, &fed);
        int verifying = opos >= need;
        if (!verifying) {
            size_t n = need - opos;
            s.next_out = out + opos;
            s.avail_out = (uInt)(n > UINT_MAX ? UINT_MAX : n);
        } else {
            s.next_out = scratch;
            s.avail_out = sizeof scratch;
        }
        uInt before = s.avail_out;
        int zr = inflate(&s, Z_NO_FLUSH);
        if (!verifying) opos += before - s.avail_out;
        size_t consumed = fed - s.avail_in;
        if (zr == Z_STREAM_END) {
            if (opos >= need) break;
            if (consumed >= len) {
                rc = mp_error_set(MP_ERR_FORMAT,
                                  "%s: gzip stream ends at byte %zu after %zu decompressed bytes; the image needs %zu",
                                  name, consumed, opos, need);
                break;
            }
            if (!mp_gz_is_gzip(in + consumed, len - consumed)) {
                rc = mp_error_set(MP_ERR_FORMAT,
                                  "%s: bytes at offset %zu after a gzip member are not gzip data "
                                  "(%zu of %zu needed bytes decompressed)",
                                  name, consumed, opos, need);
                break;
            }
            inflateReset(&s);
            continue;
        }
        if (zr == Z_BUF_ERROR && s.avail_in == 0 && fed >= len) {
            rc = mp_error_set(MP_ERR_FORMAT,
                              "%s: truncated gzip stream: input ends at byte %zu after %zu decompressed bytes "
                              "(the image needs %zu)",
                              name, len, opos, need);
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = mp_error_set(MP_ERR_FORMAT, "%s: corrupt gzip stream near compressed byte %zu: %s", name, consumed,
                              zlib_reason(s.msg));
            break;
        }
    }
    inflateEnd(&s);
    return rc;
}

int mp_gz_decompress(const char *name, const uint8_t *in, size_t len, uint8_t *out, size_t need) {
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (!d) return mp_error_set(MP_ERR_NOMEM, "%s: cannot allocate a decompressor", name);
    size_t pos = 0, opos = 0;
    int rc = MP_OK;
    while (opos < need) {
        if (pos >= len) {
            rc = mp_error_set(MP_ERR_FORMAT, "%s: gzip stream holds only %zu bytes; the image needs %zu", name, opos,
                              need);
            break;
        }
        if (!mp_gz_is_gzip(in + pos, len - pos)) {
            rc = pos == 0 ? mp_error_set(MP_ERR_FORMAT, "%s: not gzip data (no 1f 8b magic)", name)
                          : mp_error_set(MP_ERR_FORMAT,
                                         "%s: bytes at offset %zu after a gzip member are not gzip data "
                                         "(%zu of %zu needed bytes decompressed)",
                                         name, pos, opos, need);
            break;
        }
        size_t ain = 0, aout = 0;
        enum libdeflate_result r =
            libdeflate_gzip_decompress_ex(d, in + pos, len - pos, out + opos, need - opos, &ain, &aout);
        if (r == LIBDEFLATE_SUCCESS) {
            pos += ain;
            opos += aout;
            continue;
        }
        /* The member holds more than the image needs (trailing data) or is
         * broken: zlib stops at `need` and explains errors precisely. */
        rc = zlib_stream(name, in, len, pos, out, opos, need);
        break;
    }
    libdeflate_free_decompressor(d);
    return rc;
}

int mp_gz_peek(const char *name, const uint8_t *in, size_t len, uint8_t *out, size_t want, size_t *got) {
    *got = 0;
    if (!mp_gz_is_gzip(in, len)) return mp_error_set(MP_ERR_FORMAT, "%s: not gzip data (no 1f 8b magic)", name);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return mp_error_set(MP_ERR_NOMEM, "%s: cannot start zlib", name);
    size_t fed = 0, opos = 0;
    int rc = MP_OK;
    while (opos < want) {
        feed(&s, in, len, &fed);
        s.next_out = out + opos;
        s.avail_out = (uInt)(want - opos);
        uInt before = s.avail_out;
        int zr = inflate(&s, Z_SYNC_FLUSH);
        opos += before - s.avail_out;
        size_t consumed = fed - s.avail_in;
        if (zr == Z_STREAM_END) {
            if (consumed >= len || !mp_gz_is_gzip(in + consumed, len - consumed)) break;
            inflateReset(&s);
            continue;
        }
        if (zr == Z_BUF_ERROR && s.avail_in == 0 && fed >= len) break; /* short: caller reports */
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            rc = mp_error_set(MP_ERR_FORMAT, "%s: corrupt gzip stream near compressed byte %zu: %s", name, consumed,
                              zlib_reason(s.msg));
            break;
        }
    }
    inflateEnd(&s);
    *got = opos;
    return rc;
}

int mp_gz_compress(const char *name, const uint8_t *in, size_t len, int level, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (level < 1) level = 6;
    if (level > 12) level = 12;
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(level);
    if (!c) return mp_error_set(MP_ERR_NOMEM, "%s: cannot allocate a compressor", name);
    size_t bound = libdeflate_gzip_compress_bound(c, len);
    uint8_t *buf = malloc(bound ? bound : 1);
    if (!buf) {
        libdeflate_free_compressor(c);
        return mp_error_set(MP_ERR_NOMEM, "%s: cannot allocate %zu bytes for compression", name, bound);
    }
    size_t n = libdeflate_gzip_compress(c, in, len, buf, bound);
    libdeflate_free_compressor(c);
    if (n == 0) {
        free(buf);
        return mp_error_set(MP_ERR_INTERNAL, "%s: gzip compression failed", name);
    }
    *out = buf;
    *out_len = n;
    return MP_OK;
}
