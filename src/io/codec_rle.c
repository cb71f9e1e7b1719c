/* RLE Lossless decoder (DICOM PS3.5 annex G): a 64-byte header with the
 * segment count and 15 offsets, then one PackBits segment per byte plane,
 * most significant byte of each sample first, sample after sample. Output is
 * interleaved little-endian samples as codec.h promises. The header is
 * checked (segment count, offsets in order and inside the frame); a segment
 * that decodes short is an error, excess (padding) is ignored as pydicom and
 * dcmtk do. */
#include "io/codec.h"

#include <string.h>

#include "medpipe/core.h"

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* PackBits into every `stride`-th byte of out (npix bytes wanted); returns
 * how many were produced. */
static size_t unpack_segment(uint8_t *out, size_t stride, size_t npix, const uint8_t *in, size_t n) {
    size_t i = 0, o = 0;
    while (i < n && o < npix) {
        int h = (int8_t)in[i++];
        if (h >= 0) {
            size_t cnt = (size_t)h + 1;
            if (cnt > n - i) cnt = n - i;
            if (cnt > npix - o) cnt = npix - o;
            for (size_t k = 0; k < cnt; k++) out[(o + k) * stride] = in[i + k];
            i += (size_t)h + 1;
            o += cnt;
        } else if (h != -128) {
            if (i >= n) break;
            size_t cnt = (size_t)(1 - h);
            if (cnt > npix - o) cnt = npix - o;
            uint8_t v = in[i++];
            for (size_t k = 0; k < cnt; k++) out[(o + k) * stride] = v;
            o += cnt;
        }
    }
    return o;
}

int mp_codec_decode_rle(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    int bytes = fi->bits_allocated / 8;
    if (fi->bits_allocated % 8 || (bytes != 1 && bytes != 2 && bytes != 4))
        return mp_error_set(MP_ERR_UNSUPPORTED, "RLE: %d bits allocated is not supported", fi->bits_allocated);
    if (fi->rows <= 0 || fi->cols <= 0 || fi->samples < 1 || fi->samples > 4)
        return mp_error_set(MP_ERR_FORMAT, "RLE: bad frame size %dx%dx%d", fi->rows, fi->cols, fi->samples);
    size_t npix = (size_t)fi->rows * (size_t)fi->cols, nseg = (size_t)fi->samples * (size_t)bytes;
    if (out_len != npix * nseg)
        return mp_error_set(MP_ERR_ARG, "RLE: output of %zu bytes given for a %zu-byte frame", out_len, npix * nseg);
    if (nseg > 15) return mp_error_set(MP_ERR_UNSUPPORTED, "RLE: %zu segments needed, at most 15 allowed", nseg);
    if (in_len < 64) return mp_error_set(MP_ERR_FORMAT, "RLE: frame of %zu bytes is shorter than the 64-byte header", in_len);
    uint32_t n = rd32(in);
    if (n != nseg)
        return mp_error_set(MP_ERR_FORMAT, "RLE: header lists %u segments, the image needs %zu", n, nseg);
    uint32_t off[16];
    for (size_t s = 0; s < nseg; s++) {
        off[s] = rd32(in + 4 + 4 * s);
        if (off[s] < 64 || off[s] > in_len || (s > 0 && off[s] <= off[s - 1]))
            return mp_error_set(MP_ERR_FORMAT, "RLE: segment %zu offset %u is out of order or outside the %zu-byte frame",
                                s, off[s], in_len);
    }
    off[nseg] = (uint32_t)(in_len > 0xFFFFFFFFu ? 0xFFFFFFFFu : in_len);
    for (size_t s = 0; s < nseg; s++) {
        size_t sample = s / (size_t)bytes, plane = (size_t)bytes - 1 - s % (size_t)bytes;
        uint8_t *dst = out + sample * (size_t)bytes + plane;
        size_t got = unpack_segment(dst, nseg, npix, in + off[s], off[s + 1] - off[s]);
        if (got < npix)
            return mp_error_set(MP_ERR_FORMAT, "RLE: segment %zu decodes to %zu bytes, %zu expected", s, got, npix);
    }
    return MP_OK;
}
