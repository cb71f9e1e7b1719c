/* JPEG-LS lossless and near-lossless (DICOM 1.2.840.10008.1.2.4.80 / .81)
 * through CharLS's C API: header read first and checked against the DICOM
 * frame description, so CharLS only ever writes a buffer of the expected
 * size; then samples are re-laid as interleaved little-endian output
 * (CharLS writes planes for interleave mode "none" and 1 byte per sample up
 * to 8 bits, 2 bytes above). Colour transforms (HP1-3) are undone by CharLS. */
#include <charls/charls.h>
#include <string.h>

#include "io/codec.h"
#include "io/codec_jpegcommon.h"
#include "medpipe/core.h"

#define LS "JPEG-LS"

static int ls_fail(charls_jpegls_errc e, const char *what) {
    return mp_error_set(e == CHARLS_JPEGLS_ERRC_NOT_ENOUGH_MEMORY ? MP_ERR_NOMEM : MP_ERR_FORMAT, LS ": %s: %s", what,
                        charls_get_error_message(e));
}

static int check_header(const charls_frame_info *f, const mp_frame_info_t *fi) {
    if ((int64_t)f->width != fi->cols || (int64_t)f->height != fi->rows || f->component_count != fi->samples)
        return mp_error_set(MP_ERR_MISMATCH, LS ": frame is %dx%dx%d but the codestream says %ux%ux%d", fi->cols,
                            fi->rows, fi->samples, f->width, f->height, f->component_count);
    if (f->bits_per_sample < 2 || f->bits_per_sample > 16 || f->bits_per_sample > fi->bits_allocated)
        return mp_error_set(MP_ERR_MISMATCH, LS ": codestream has %d bits per sample, bits allocated %d",
                            f->bits_per_sample, fi->bits_allocated);
    if (f->bits_per_sample != fi->bits_stored)
        mp_log(MP_LOG_DEBUG, LS ": codestream has %d bits per sample, bits stored %d", f->bits_per_sample,
               fi->bits_stored);
    return 0;
}

/* Walks the marker structure (T.87: SOI, segments with lengths, scans whose
 * entropy-coded data ends at the first 0xFF followed by a byte >= 0x80 that
 * is not a restart marker) and requires an EOI. CharLS 2.4 spends tens of
 * seconds on a stream that ends inside a scan, so such input is refused here
 * first; it is also a clearer message. */
static int check_structure(const uint8_t *in, size_t len) {
    if (in[0] != 0xFF || in[1] != 0xD8)
        return mp_error_set(MP_ERR_FORMAT, LS ": no SOI marker at the start of the frame (%zu bytes)", len);
    size_t pos = 2;
    int scans = 0;
    while (pos + 2 <= len) {
        if (in[pos] != 0xFF)
            return mp_error_set(MP_ERR_FORMAT, LS ": expected a marker at offset %zu, found 0x%02X", pos, in[pos]);
        int m = in[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        pos += 2;
        if (m == 0xD9) return scans ? 0 : mp_error_set(MP_ERR_FORMAT, LS ": no scan before the EOI marker");
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;
        if (len - pos < 2) break;
        size_t l = (size_t)in[pos] << 8 | in[pos + 1];
        if (l < 2 || l > len - pos)
            return mp_error_set(MP_ERR_FORMAT, LS ": marker 0xFF%02X at offset %zu: segment length %zu exceeds the data",
                                m, pos - 2, l);
        pos += l;
        if (m != 0xDA) continue;
        scans++;
        for (;;) { /* entropy-coded data up to the next marker other than RSTn */
            while (pos < len && in[pos] != 0xFF) pos++;
            if (pos + 1 >= len) break;
            int c = in[pos + 1];
            if (c >= 0x80 && !(c >= 0xD0 && c <= 0xD7) && c != 0xFF) break;
            pos += (c == 0xFF) ? 1 : 2;
        }
    }
    return mp_error_set(MP_ERR_FORMAT, LS ": codestream truncated (%zu bytes, %d scan%s, no EOI marker)", len, scans,
                        scans == 1 ? "" : "s");
}

/* Copies CharLS's output (planar or interleaved, 1 or 2 bytes) to the caller's layout. */
static void relayout(uint8_t *out, const uint8_t *src, const mp_frame_info_t *fi, int planar, int in_bytes) {
    size_t npix = (size_t)fi->rows * (size_t)fi->cols;
    int ns = fi->samples, bytes = fi->bits_allocated / 8;
    for (size_t i = 0; i < npix; i++)
        for (int c = 0; c < ns; c++) {
            size_t at = planar ? (size_t)c * npix + i : i * (size_t)ns + (size_t)c;
            uint32_t v = in_bytes == 1 ? src[at] : (uint32_t)(src[2 * at] | src[2 * at + 1] << 8);
            mp_codec_put_sample(out, i * (size_t)ns + (size_t)c, v, bytes);
        }
}

int mp_codec_decode_jpegls(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    int rc = mp_codec_frame_check(LS, fi, out_len);
    if (rc < 0) return rc;
    if (!in || in_len < 4) return mp_error_set(MP_ERR_FORMAT, LS ": frame of %zu bytes is too short", in_len);
    if ((rc = check_structure(in, in_len)) < 0) return rc;
    charls_jpegls_decoder *dec = charls_jpegls_decoder_create();
    if (!dec) return mp_error_set(MP_ERR_NOMEM, LS ": cannot create a decoder");
    uint8_t *tmp = NULL;
    charls_frame_info f;
    charls_interleave_mode mode = CHARLS_INTERLEAVE_MODE_NONE;
    size_t need = 0;
    charls_jpegls_errc e = charls_jpegls_decoder_set_source_buffer(dec, in, in_len);
    if (e) {
        rc = ls_fail(e, "source");
    } else if ((e = charls_jpegls_decoder_read_header(dec)) != 0) {
        rc = ls_fail(e, "header");
    } else if ((e = charls_jpegls_decoder_get_frame_info(dec, &f)) != 0 ||
               (e = charls_jpegls_decoder_get_interleave_mode(dec, &mode)) != 0 ||
               (e = charls_jpegls_decoder_get_destination_size(dec, 0, &need)) != 0) {
        rc = ls_fail(e, "header");
    } else if ((rc = check_header(&f, fi)) == 0) {
        int in_bytes = f.bits_per_sample <= 8 ? 1 : 2;
        size_t expect = (size_t)fi->rows * (size_t)fi->cols * (size_t)fi->samples * (size_t)in_bytes;
        if (need != expect) {
            rc = mp_error_set(MP_ERR_INTERNAL, LS ": decoder wants %zu bytes, expected %zu", need, expect);
        } else if (!(tmp = mp_alloc(need))) {
            rc = mp_error_set(MP_ERR_NOMEM, LS ": no memory for %zu bytes", need);
        } else if ((e = charls_jpegls_decoder_decode_to_buffer(dec, tmp, need, 0)) != 0) {
            rc = ls_fail(e, "decoding");
        } else {
            relayout(out, tmp, fi, fi->samples > 1 && mode == CHARLS_INTERLEAVE_MODE_NONE, in_bytes);
            mp_codec_sign_extend(out, out_len, fi);
        }
    }
    mp_free(tmp);
    charls_jpegls_decoder_destroy(dec);
    return rc;
}
