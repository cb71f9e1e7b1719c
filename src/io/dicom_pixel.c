/* DICOM pixel data: the image pixel description of a parsed file, and the
 * decoding of one frame into plain interleaved samples.
 *
 * Native data is read in the file's byte order (1-bit packed LSB first,
 * planar configuration 1 interleaved, YBR_FULL_422 upsampled); encapsulated
 * data is split into frames (extended offset table, basic offset table, one
 * fragment per frame, or fragments grouped by codec start markers) and handed
 * to the codec layer. Samples are then masked to BitsStored with sign
 * extension, and optionally converted (YBR -> RGB, MONOCHROME1 inverted).
 * Assumes a little-endian host (checked at compile time). */
#include "io/codec.h"
#include "io/dicom_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "dicom_pixel.c assumes a little-endian host"
#endif

#define TAG_ROWS MP_DICOM_TAG(0x0028, 0x0010)
#define TAG_COLS MP_DICOM_TAG(0x0028, 0x0011)

static int get_int(const mp_dicom_file_t *f, uint32_t tag, int64_t *v, int64_t dflt, int required) {
    int n = mp_dicom_get_i64(&f->ds, tag, v);
    if (n < 0) return mp_error_wrap(n, "%s: ", f->name);
    if (n == 0) {
        if (required) {
            char t[96];
            mp_dicom_tag_str(tag, t, sizeof t);
            return mp_error_set(MP_ERR_FORMAT, "%s: %s is missing", f->name, t);
        }
        *v = dflt;
    }
    return MP_OK;
}

static int pixel_info_check(const mp_dicom_file_t *f, mp_dicom_pixel_info_t *pi) {
    if (pi->rows < 1 || pi->cols < 1)
        return mp_error_set(MP_ERR_FORMAT, "%s: image of %d rows and %d columns", f->name, pi->rows, pi->cols);
    if (pi->frames < 1) return mp_error_set(MP_ERR_FORMAT, "%s: NumberOfFrames is %d", f->name, pi->frames);
    if (pi->samples != 1 && pi->samples != 3)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: %d samples per pixel is not supported", f->name, pi->samples);
    int ba = pi->bits_allocated;
    if (ba != 1 && ba != 8 && ba != 16 && ba != 32)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: BitsAllocated %d is not supported", f->name, ba);
    if (pi->bits_stored < 1 || pi->bits_stored > ba)
        return mp_error_set(MP_ERR_FORMAT, "%s: BitsStored %d with BitsAllocated %d", f->name, pi->bits_stored, ba);
    if (pi->high_bit < pi->bits_stored - 1 || pi->high_bit >= ba)
        return mp_error_set(MP_ERR_FORMAT, "%s: HighBit %d with BitsStored %d and BitsAllocated %d", f->name,
                            pi->high_bit, pi->bits_stored, ba);
    if (ba == 1 && pi->samples != 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: 1-bit colour images are not supported", f->name);
    if (pi->is_signed != 0 && pi->is_signed != 1)
        return mp_error_set(MP_ERR_FORMAT, "%s: PixelRepresentation %d", f->name, pi->is_signed);
    if (strcmp(pi->photometric, "YBR_FULL_422") == 0 && !pi->encapsulated && (pi->cols % 2 || pi->samples != 3))
        return mp_error_set(MP_ERR_FORMAT, "%s: YBR_FULL_422 needs 3 samples and an even number of columns", f->name);
    uint64_t bytes;
    if (mp_mul_u64((uint64_t)pi->rows * (uint64_t)pi->cols, (uint64_t)pi->samples * (uint64_t)pi->sample_bytes, &bytes) ||
        mp_mul_u64(bytes, (uint64_t)pi->frames, &bytes) || bytes > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "%s: %d frames of %dx%dx%d exceed the memory limit", f->name, pi->frames,
                            pi->rows, pi->cols, pi->samples);
    return MP_OK;
}

int mp_dicom_pixel_info(const mp_dicom_file_t *f, mp_dicom_pixel_info_t *pi) {
    memset(pi, 0, sizeof *pi);
    const mp_dicom_elem_t *px = mp_dicom_find(&f->ds, MP_DCM_PIXEL_DATA);
    if (!px) {
        if (mp_dicom_find(&f->ds, MP_DICOM_TAG(0x7FE0, 0x0008)) || mp_dicom_find(&f->ds, MP_DICOM_TAG(0x7FE0, 0x0009)))
            return mp_error_set(MP_ERR_UNSUPPORTED, "%s: float pixel data is not supported", f->name);
        return mp_error_set(MP_ERR_FORMAT, "%s: no pixel data", f->name);
    }
    int64_t v[9];
    int rc = get_int(f, TAG_ROWS, &v[0], 0, 1);
    if (!rc) rc = get_int(f, TAG_COLS, &v[1], 0, 1);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0002), &v[2], 1, 0);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0100), &v[3], 0, 1);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0101), &v[4], v[3], 0);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0102), &v[5], v[4] - 1, 0);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0103), &v[6], 0, 0);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0006), &v[7], 0, 0);
    if (!rc) rc = get_int(f, MP_DICOM_TAG(0x0028, 0x0008), &v[8], 1, 0);
    if (rc) return rc;
    for (int i = 0; i < 9; i++)
        if (v[i] < -1 || v[i] > 0x7FFFFFFF) return mp_error_set(MP_ERR_FORMAT, "%s: image pixel value %lld out of range",
                                                                 f->name, (long long)v[i]);
    pi->rows = (int)v[0];
    pi->cols = (int)v[1];
    pi->samples = (int)v[2];
    pi->bits_allocated = (int)v[3];
    pi->bits_stored = (int)v[4];
    pi->high_bit = (int)v[5];
    pi->is_signed = (int)v[6];
    pi->planar = (int)v[7];
    pi->frames = (int)v[8];
    if (pi->planar != 0 && pi->planar != 1)
        return mp_error_set(MP_ERR_FORMAT, "%s: PlanarConfiguration %d", f->name, pi->planar);
    mp_dicom_get_str(&f->ds, MP_DICOM_TAG(0x0028, 0x0004), pi->photometric, sizeof pi->photometric);
    if (!pi->photometric[0]) snprintf(pi->photometric, sizeof pi->photometric, "%s", pi->samples == 3 ? "RGB" : "MONOCHROME2");
    snprintf(pi->syntax, sizeof pi->syntax, "%s", f->syntax);
    pi->encapsulated = px->n_frags > 0 || px->undefined_length;
    pi->sample_bytes = pi->bits_allocated <= 8 ? 1 : pi->bits_allocated / 8;
    return pixel_info_check(f, pi);
}

size_t mp_dicom_frame_bytes(const mp_dicom_pixel_info_t *pi) {
    return (size_t)pi->rows * (size_t)pi->cols * (size_t)pi->samples * (size_t)pi->sample_bytes;
}

/* ------------------------------------------------------------ samples */

/* Masks to BitsStored (after shifting HighBit down) and sign-extends. */
static void fix_samples(void *data, size_t n, const mp_dicom_pixel_info_t *pi) {
    int bs = pi->bits_stored, shift = pi->high_bit + 1 - bs, sb = pi->sample_bytes;
    if (pi->bits_allocated == 1 || (shift == 0 && bs == sb * 8)) return;
    uint32_t mask = bs >= 32 ? 0xFFFFFFFFu : ((1u << bs) - 1u), sign = 1u << (bs - 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t u = sb == 1 ? ((uint8_t *)data)[i] : sb == 2 ? ((uint16_t *)data)[i] : ((uint32_t *)data)[i];
        u = (u >> shift) & mask;
        if (pi->is_signed && (u & sign)) u |= ~mask;
        if (sb == 1) ((uint8_t *)data)[i] = (uint8_t)u;
        else if (sb == 2) ((uint16_t *)data)[i] = (uint16_t)u;
        else ((uint32_t *)data)[i] = u;
    }
}

static int64_t sample_get(const void *data, size_t i, int sb, int is_signed) {
    if (sb == 1) return is_signed ? ((const int8_t *)data)[i] : ((const uint8_t *)data)[i];
    if (sb == 2) return is_signed ? ((const int16_t *)data)[i] : ((const uint16_t *)data)[i];
    if (is_signed) return ((const int32_t *)data)[i];
    return ((const uint32_t *)data)[i];
}

static void sample_put(void *data, size_t i, int sb, int64_t v) {
    if (sb == 1) ((uint8_t *)data)[i] = (uint8_t)v;
    else if (sb == 2) ((uint16_t *)data)[i] = (uint16_t)v;
    else ((uint32_t *)data)[i] = (uint32_t)v;
}

/* YBR_FULL -> RGB (PS3.3 C.7.6.3.1.2), values centred on 2^(BitsStored-1). */
static void ybr_to_rgb(void *data, size_t npix, const mp_dicom_pixel_info_t *pi) {
    int sb = pi->sample_bytes;
    double half = (double)(1u << (pi->bits_stored - 1)), maxv = (double)((1ull << pi->bits_stored) - 1);
    for (size_t p = 0; p < npix; p++) {
        double y = (double)sample_get(data, 3 * p, sb, 0), cb = (double)sample_get(data, 3 * p + 1, sb, 0) - half,
               cr = (double)sample_get(data, 3 * p + 2, sb, 0) - half;
        double rgb[3] = {y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb};
        for (int c = 0; c < 3; c++) {
            double v = floor(rgb[c] + 0.5);
            sample_put(data, 3 * p + (size_t)c, sb, (int64_t)(v < 0 ? 0 : v > maxv ? maxv : v));
        }
    }
}

static void invert_mono1(void *data, size_t n, const mp_dicom_pixel_info_t *pi) {
    int sb = pi->sample_bytes;
    int64_t maxv = pi->bits_allocated == 1 ? 1 : (int64_t)((1ull << pi->bits_stored) - 1);
    for (size_t i = 0; i < n; i++) {
        int64_t v = sample_get(data, i, sb, pi->is_signed);
        sample_put(data, i, sb, pi->is_signed ? -1 - v : maxv - v);
    }
}

/* ------------------------------------------------------------ native */

/* Bytes of one native frame in the file (YBR_FULL_422 stores 2 samples per pixel). */
static uint64_t native_frame_bits(const mp_dicom_pixel_info_t *pi) {
    uint64_t spp = strcmp(pi->photometric, "YBR_FULL_422") == 0 ? 2 : (uint64_t)pi->samples;
    return (uint64_t)pi->rows * (uint64_t)pi->cols * spp * (uint64_t)pi->bits_allocated;
}

static void upsample_422(uint8_t *out, const uint8_t *in, size_t npix, int sb) {
    /* Y1 Y2 Cb Cr -> Y1 Cb Cr Y2 Cb Cr, per pair of pixels */
    for (size_t p = 0; p + 1 < npix; p += 2) {
        const uint8_t *q = in + 2 * p * (size_t)sb;
        uint8_t *o = out + 3 * p * (size_t)sb;
        size_t s = (size_t)sb;
        memcpy(o, q, s);
        memcpy(o + s, q + 2 * s, s);
        memcpy(o + 2 * s, q + 3 * s, s);
        memcpy(o + 3 * s, q + s, s);
        memcpy(o + 4 * s, q + 2 * s, s);
        memcpy(o + 5 * s, q + 3 * s, s);
    }
}

static int decode_native(const mp_dicom_file_t *f, const mp_dicom_pixel_info_t *pi, const mp_dicom_elem_t *px,
                         int frame, uint8_t *out) {
    const uint8_t *src = f->ds.base + px->offset;
    uint64_t fbits = native_frame_bits(pi), first_bit = fbits * (uint64_t)frame;
    uint64_t need = (first_bit + fbits + 7) / 8;
    if (need > px->length)
        return mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: pixel data has %llu bytes, frame %d needs %llu", f->name,
                            (unsigned long long)px->offset, (unsigned long long)px->length, frame,
                            (unsigned long long)need);
    size_t npix = (size_t)pi->rows * (size_t)pi->cols, nsamp = npix * (size_t)pi->samples;
    int big = f->ds.big_endian, sb = pi->sample_bytes;
    int ow_swap = big && px->vr[0] == 'O' && px->vr[1] == 'W' && pi->bits_allocated <= 8;
    if (pi->bits_allocated == 1) {
        for (size_t i = 0; i < npix; i++) {
            uint64_t bit = first_bit + i, byte = bit >> 3;
            if (ow_swap && (byte ^ 1) < px->length) byte ^= 1;
            out[i] = (uint8_t)((src[byte] >> (bit & 7)) & 1);
        }
        return MP_OK;
    }
    const uint8_t *in = src + first_bit / 8;
    int is422 = strcmp(pi->photometric, "YBR_FULL_422") == 0;
    uint8_t *tmp = NULL, *dst = out;
    if (is422) {
        tmp = malloc((size_t)(fbits / 8));
        if (!tmp) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", f->name);
        dst = tmp;
    }
    size_t nin = is422 ? npix * 2 : nsamp;
    int planar = pi->samples > 1 && pi->planar == 1 && !is422;
    if (!planar && !ow_swap && (!big || sb == 1)) { /* the common case: bytes already in order */
        memcpy(dst, in, nin * (size_t)sb);
        nin = 0;
    }
    for (size_t i = 0; i < nin; i++) {
        size_t o = planar ? (i % npix) * (size_t)pi->samples + i / npix : i;
        const uint8_t *q = in + i * (size_t)sb;
        if (sb == 1) {
            size_t idx = (size_t)(q - src);
            dst[o] = src[ow_swap && ((idx ^ 1) < px->length) ? idx ^ 1 : idx];
        } else if (sb == 2) {
            ((uint16_t *)dst)[o] = mp_dcm_u16(q, big);
        } else {
            ((uint32_t *)dst)[o] = mp_dcm_u32(q, big);
        }
    }
    if (is422) {
        upsample_422(out, tmp, npix, sb);
        free(tmp);
    }
    return MP_OK;
}

/* ------------------------------------------------------------ encapsulated */

/* Index of the fragment whose item header starts at `item_off`, or -1. */
static int64_t frag_at(const mp_dicom_elem_t *px, uint64_t item_off) {
    uint32_t lo = 1, hi = px->n_frags;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint64_t o = px->frags[mid].offset - 8;
        if (o == item_off) return mid;
        if (o < item_off) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

static int starts_frame(const uint8_t *b, uint32_t len, mp_codec_t codec) {
    if (len < 4) return 0;
    if (codec == MP_CODEC_J2K)
        return (b[0] == 0xFF && b[1] == 0x4F) || (len >= 8 && b[4] == 'j' && b[5] == 'P' && b[6] == ' ' && b[7] == ' ');
    if (codec == MP_CODEC_RLE) return len >= 64 && b[0] >= 1 && b[0] <= 15 && !b[1] && !b[2] && !b[3] && b[4] == 64;
    return b[0] == 0xFF && b[1] == 0xD8;
}

/* Fragments [*first, *first + *count) that hold frame k. */
static int frame_fragments(const mp_dicom_file_t *f, const mp_dicom_pixel_info_t *pi, const mp_dicom_elem_t *px,
                           mp_codec_t codec, int k, uint32_t *first, uint32_t *count) {
    uint32_t ndata = px->n_frags ? px->n_frags - 1 : 0;
    if (ndata == 0) return mp_error_set(MP_ERR_FORMAT, "%s: encapsulated pixel data has no fragments", f->name);
    uint64_t base = px->frags[1].offset - 8;
    const mp_dicom_elem_t *eot = mp_dicom_find(&f->ds, MP_DICOM_TAG(0x7FE0, 0x0001));
    if (eot && eot->length / 8 == (uint64_t)pi->frames && !eot->items && !eot->frags) {
        int64_t fi = frag_at(px, base + mp_dcm_u64(f->ds.base + eot->offset + 8 * (uint64_t)k, 0));
        if (fi < 0) return mp_error_set(MP_ERR_FORMAT, "%s: extended offset table entry %d is not a fragment start", f->name, k);
        *first = (uint32_t)fi;
        *count = 1;
        return MP_OK;
    }
    const mp_dicom_frag_t *bot = &px->frags[0];
    if (pi->frames == 1) {
        *first = 1;
        *count = ndata;
        return MP_OK;
    }
    if (bot->length / 4 == (uint32_t)pi->frames && bot->length % 4 == 0) {
        const uint8_t *t = f->ds.base + bot->offset;
        int64_t a = frag_at(px, base + mp_dcm_u32(t + 4 * (uint64_t)k, 0));
        int64_t b = k + 1 < pi->frames ? frag_at(px, base + mp_dcm_u32(t + 4 * (uint64_t)(k + 1), 0)) : (int64_t)px->n_frags;
        if (a > 0 && b > a) {
            *first = (uint32_t)a;
            *count = (uint32_t)(b - a);
            return MP_OK;
        }
        mp_log(MP_LOG_WARN, "%s: basic offset table entry %d does not point at a fragment; ignored", f->name, k);
    }
    if (ndata == (uint32_t)pi->frames) {
        *first = 1 + (uint32_t)k;
        *count = 1;
        return MP_OK;
    }
    /* Several fragments per frame and no table: a frame starts where the codec's start marker is. */
    int seen = -1;
    for (uint32_t i = 1; i < px->n_frags; i++) {
        if (starts_frame(f->ds.base + px->frags[i].offset, px->frags[i].length, codec) || i == 1) seen++;
        if (seen == k) {
            uint32_t j = i + 1;
            while (j < px->n_frags && !starts_frame(f->ds.base + px->frags[j].offset, px->frags[j].length, codec)) j++;
            *first = i;
            *count = j - i;
            return MP_OK;
        }
    }
    return mp_error_set(MP_ERR_FORMAT, "%s: cannot tell which of the %u fragments hold frame %d of %d", f->name, ndata, k,
                        pi->frames);
}

static int decode_encapsulated(const mp_dicom_file_t *f, const mp_dicom_pixel_info_t *pi, const mp_dicom_elem_t *px,
                               int k, uint8_t *out, size_t out_len) {
    mp_codec_t codec = mp_codec_for_syntax(pi->syntax);
    if (codec == MP_CODEC_UNSUPPORTED || codec == MP_CODEC_NATIVE)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: transfer syntax %s (%s) is not supported", f->name, pi->syntax,
                            mp_codec_syntax_name(pi->syntax));
    if (pi->bits_allocated == 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: compressed 1-bit pixel data is not supported", f->name);
    uint32_t first = 0, count = 0;
    int rc = frame_fragments(f, pi, px, codec, k, &first, &count);
    if (rc) return rc;
    const uint8_t *in = f->ds.base + px->frags[first].offset;
    size_t in_len = px->frags[first].length;
    uint8_t *joined = NULL;
    if (count > 1) {
        uint64_t total = 0;
        for (uint32_t i = 0; i < count; i++) total += px->frags[first + i].length;
        joined = malloc(total ? (size_t)total : 1);
        if (!joined) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", f->name);
        size_t o = 0;
        for (uint32_t i = 0; i < count; i++) {
            memcpy(joined + o, f->ds.base + px->frags[first + i].offset, px->frags[first + i].length);
            o += px->frags[first + i].length;
        }
        in = joined;
        in_len = (size_t)total;
    }
    mp_frame_info_t fi = {pi->rows, pi->cols, pi->samples, pi->bits_allocated, pi->bits_stored, pi->is_signed, 0,
                          strcmp(pi->photometric, "RGB") == 0};
    rc = mp_codec_decode_frame(codec, out, out_len, in, in_len, &fi);
    free(joined);
    if (rc)
        return mp_error_wrap(rc, "%s: offset %llu: frame %d (%s): ", f->name,
                             (unsigned long long)px->frags[first].offset, k, mp_codec_syntax_name(pi->syntax));
    return MP_OK;
}

int mp_dicom_decode_frame(const mp_dicom_file_t *f, const mp_dicom_pixel_info_t *pi, int frame, void *out,
                          size_t out_len, unsigned flags) {
    if (frame < 0 || frame >= pi->frames)
        return mp_error_set(MP_ERR_ARG, "%s: frame %d of %d", f->name, frame, pi->frames);
    if (out_len != mp_dicom_frame_bytes(pi))
        return mp_error_set(MP_ERR_ARG, "%s: frame buffer of %zu bytes, %zu needed", f->name, out_len,
                            mp_dicom_frame_bytes(pi));
    if (f->stopped_at_pixels)
        return mp_error_set(MP_ERR_ARG, "%s: parsed with MP_DICOM_PARSE_STOP_AT_PIXELS; no pixels to decode", f->name);
    const mp_dicom_elem_t *px = mp_dicom_find(&f->ds, MP_DCM_PIXEL_DATA);
    if (!px) return mp_error_set(MP_ERR_FORMAT, "%s: no pixel data", f->name);
    mp_codec_t codec = pi->encapsulated ? mp_codec_for_syntax(pi->syntax) : MP_CODEC_NATIVE;
    int rc = pi->encapsulated ? decode_encapsulated(f, pi, px, frame, out, out_len) : decode_native(f, pi, px, frame, out);
    if (rc) return rc;
    size_t npix = (size_t)pi->rows * (size_t)pi->cols;
    fix_samples(out, npix * (size_t)pi->samples, pi);
    int ybr = strcmp(pi->photometric, "YBR_FULL") == 0 || strcmp(pi->photometric, "YBR_FULL_422") == 0;
    if ((flags & MP_DICOM_FRAME_RGB) && ybr && pi->samples == 3 && (codec == MP_CODEC_NATIVE || codec == MP_CODEC_RLE))
        ybr_to_rgb(out, npix, pi);
    if ((flags & MP_DICOM_FRAME_INVERT_MONO1) && strcmp(pi->photometric, "MONOCHROME1") == 0)
        invert_mono1(out, npix * (size_t)pi->samples, pi);
    return MP_OK;
}
