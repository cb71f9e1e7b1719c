/* Shared decoder pieces: frame checks, sign extension and the T.81 marker /
 * Huffman / bit-reader layer used by codec_jpegll.c and the 12-bit DCT path
 * of codec_jpeg.c. Every length read from the codestream is checked against
 * the remaining bytes; tables are validated before use. */
#include "io/codec_jpegcommon.h"

#include <string.h>

#include "medpipe/core.h"

int mp_codec_frame_check(const char *codec, const mp_frame_info_t *fi, size_t out_len) {
    if (!fi) return mp_error_set(MP_ERR_ARG, "%s: no frame description", codec);
    if (fi->rows <= 0 || fi->cols <= 0 || fi->rows > 65535 || fi->cols > 65535)
        return mp_error_set(MP_ERR_ARG, "%s: frame size %dx%d out of range", codec, fi->cols, fi->rows);
    if (fi->samples != 1 && fi->samples != 3)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: %d samples per pixel (1 or 3 supported)", codec, fi->samples);
    if (fi->bits_allocated != 8 && fi->bits_allocated != 16 && fi->bits_allocated != 32)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: bits allocated %d (8, 16 or 32 supported)", codec,
                            fi->bits_allocated);
    if (fi->bits_stored < 1 || fi->bits_stored > fi->bits_allocated)
        return mp_error_set(MP_ERR_FORMAT, "%s: bits stored %d with bits allocated %d", codec, fi->bits_stored,
                            fi->bits_allocated);
    /* fi->planar is not consulted: output is always interleaved (codec.h), and
     * a file's PlanarConfiguration says nothing about a JPEG-family codestream. */
    uint64_t n = (uint64_t)fi->rows * (uint64_t)fi->cols * (uint64_t)fi->samples * (uint64_t)(fi->bits_allocated / 8);
    if (n != out_len)
        return mp_error_set(MP_ERR_ARG, "%s: output buffer is %zu bytes, frame %dx%dx%d at %d bits needs %llu", codec,
                            out_len, fi->cols, fi->rows, fi->samples, fi->bits_allocated, (unsigned long long)n);
    /* Decoders keep at most a few bytes of scratch per sample. */
    if (n * 4 > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "%s: frame %dx%dx%d exceeds the memory limit", codec, fi->cols, fi->rows,
                            fi->samples);
    return 0;
}

void mp_codec_sign_extend(uint8_t *out, size_t out_len, const mp_frame_info_t *fi) {
    int bytes = fi->bits_allocated / 8;
    int bs = fi->bits_stored;
    if (!fi->is_signed || bs >= 8 * bytes || bs < 1) return;
    size_t n = out_len / (size_t)bytes;
    uint32_t sign = 1u << (bs - 1), mask = (bs >= 32) ? 0xffffffffu : ((1u << bs) - 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = out + i * (size_t)bytes;
        uint32_t v = p[0];
        if (bytes > 1) v |= (uint32_t)p[1] << 8;
        if (bytes > 2) v |= (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        v &= mask;
        if (v & sign) v |= ~mask;
        mp_codec_put_sample(out, i, v, bytes);
    }
}

/* ---- marker segments ---- */

static int seg_len(mp_jpg_t *j, int marker, size_t *len) {
    if (j->len - j->pos < 2)
        return mp_error_set(MP_ERR_FORMAT, "%s: marker 0xFF%02X at offset %zu: truncated segment length", j->codec,
                            marker, j->pos - 2);
    size_t l = (size_t)j->data[j->pos] << 8 | j->data[j->pos + 1];
    if (l < 2 || l > j->len - j->pos)
        return mp_error_set(MP_ERR_FORMAT, "%s: marker 0xFF%02X at offset %zu: segment length %zu exceeds the data",
                            j->codec, marker, j->pos - 2, l);
    *len = l;
    return 0;
}

static int build_huff(mp_jpg_t *j, mp_jhuff_t *h, const uint8_t *counts, const uint8_t *vals, int nvals) {
    memset(h, 0, sizeof *h);
    memcpy(h->vals, vals, (size_t)nvals);
    int32_t code = 0;
    int k = 0;
    for (int l = 1; l <= 16; l++) {
        int c = counts[l - 1];
        h->valptr[l] = k;
        h->mincode[l] = code;
        if (c == 0) {
            h->maxcode[l] = -1;
        } else {
            if (code + c > (1 << l))
                return mp_error_set(MP_ERR_FORMAT, "%s: Huffman table has too many codes of length %d", j->codec, l);
            for (int i = 0; i < c; i++, k++, code++) {
                if (l <= 9) {
                    int first = code << (9 - l), span = 1 << (9 - l);
                    for (int e = 0; e < span; e++) h->fast[first + e] = (uint16_t)(l << 8 | h->vals[k]);
                }
            }
            h->maxcode[l] = code - 1;
        }
        code <<= 1;
    }
    h->maxcode[17] = 0x7fffffff;
    h->present = 1;
    return 0;
}

static int parse_dht(mp_jpg_t *j, const uint8_t *p, size_t n) {
    while (n > 0) {
        if (n < 17) return mp_error_set(MP_ERR_FORMAT, "%s: DHT segment truncated", j->codec);
        int tc = p[0] >> 4, th = p[0] & 15;
        if (tc > 1 || th > 3)
            return mp_error_set(MP_ERR_FORMAT, "%s: DHT table class %d / id %d out of range", j->codec, tc, th);
        int total = 0;
        for (int i = 0; i < 16; i++) total += p[1 + i];
        if (total > 256 || (size_t)total > n - 17)
            return mp_error_set(MP_ERR_FORMAT, "%s: DHT table with %d codes exceeds its segment", j->codec, total);
        int rc = build_huff(j, tc ? &j->ac[th] : &j->dc[th], p + 1, p + 17, total);
        if (rc < 0) return rc;
        p += 17 + total;
        n -= 17 + (size_t)total;
    }
    return 0;
}

static int parse_dqt(mp_jpg_t *j, const uint8_t *p, size_t n) {
    while (n > 0) {
        int pq = p[0] >> 4, tq = p[0] & 15;
        size_t need = 1 + (pq ? 128 : 64);
        if (pq > 1 || tq > 3 || n < need)
            return mp_error_set(MP_ERR_FORMAT, "%s: DQT table (precision %d, id %d) malformed", j->codec, pq, tq);
        for (int i = 0; i < 64; i++)
            j->qt[tq][i] = pq ? (uint16_t)(p[1 + 2 * i] << 8 | p[2 + 2 * i]) : p[1 + i];
        j->qt_present[tq] = 1;
        p += need;
        n -= need;
    }
    return 0;
}

static int parse_sof(mp_jpg_t *j, int marker, const uint8_t *p, size_t n) {
    if (j->sof) return mp_error_set(MP_ERR_UNSUPPORTED, "%s: more than one frame header (hierarchical JPEG)", j->codec);
    if (n < 6) return mp_error_set(MP_ERR_FORMAT, "%s: SOF segment truncated", j->codec);
    j->sof = marker;
    j->precision = p[0];
    j->height = p[1] << 8 | p[2];
    j->width = p[3] << 8 | p[4];
    j->ncomp = p[5];
    if (j->ncomp < 1 || j->ncomp > 4 || n != 6 + 3 * (size_t)j->ncomp)
        return mp_error_set(MP_ERR_FORMAT, "%s: SOF with %d components and length %zu", j->codec, j->ncomp, n + 2);
    for (int i = 0; i < j->ncomp; i++) {
        mp_jcomp_t *c = &j->comp[i];
        memset(c, 0, sizeof *c);
        c->id = p[6 + 3 * i];
        c->h = p[7 + 3 * i] >> 4;
        c->v = p[7 + 3 * i] & 15;
        c->tq = p[8 + 3 * i];
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4 || c->tq > 3)
            return mp_error_set(MP_ERR_FORMAT, "%s: component %d has sampling %dx%d, table %d", j->codec, c->id, c->h,
                                c->v, c->tq);
        for (int k = 0; k < i; k++)
            if (j->comp[k].id == c->id)
                return mp_error_set(MP_ERR_FORMAT, "%s: component id %d appears twice", j->codec, c->id);
    }
    return 0;
}

static int parse_sos(mp_jpg_t *j, const uint8_t *p, size_t n) {
    if (!j->sof) return mp_error_set(MP_ERR_FORMAT, "%s: SOS before the frame header", j->codec);
    if (n < 1) return mp_error_set(MP_ERR_FORMAT, "%s: SOS segment truncated", j->codec);
    int ns = p[0];
    if (ns < 1 || ns > j->ncomp || n != 4 + 2 * (size_t)ns)
        return mp_error_set(MP_ERR_FORMAT, "%s: SOS with %d components and length %zu", j->codec, ns, n + 2);
    for (int i = 0; i < j->ncomp; i++) j->comp[i].in_scan = 0;
    for (int i = 0; i < ns; i++) {
        int id = p[1 + 2 * i], k;
        for (k = 0; k < j->ncomp && j->comp[k].id != id; k++) {}
        if (k == j->ncomp || j->comp[k].in_scan)
            return mp_error_set(MP_ERR_FORMAT, "%s: SOS names component id %d not in the frame (or twice)", j->codec,
                                id);
        j->comp[k].in_scan = 1;
        j->comp[k].td = p[2 + 2 * i] >> 4;
        j->comp[k].ta = p[2 + 2 * i] & 15;
        if (j->comp[k].td > 3 || j->comp[k].ta > 3)
            return mp_error_set(MP_ERR_FORMAT, "%s: SOS table selector out of range", j->codec);
        j->scomp[i] = k;
    }
    j->ns = ns;
    j->ss = p[1 + 2 * ns];
    j->se = p[2 + 2 * ns];
    j->ah = p[3 + 2 * ns] >> 4;
    j->al = p[3 + 2 * ns] & 15;
    return 0;
}

int mp_jpg_init(mp_jpg_t *j, const char *codec, const uint8_t *in, size_t len) {
    memset(j, 0, sizeof *j);
    j->codec = codec;
    j->data = in;
    j->len = len;
    if (!in || len < 4 || in[0] != 0xFF || in[1] != 0xD8)
        return mp_error_set(MP_ERR_FORMAT, "%s: no SOI marker at the start of the frame (%zu bytes)", codec, len);
    j->pos = 2;
    return 0;
}

/* Moves to the next marker; tolerates fill bytes and stray data before it. */
static int next_marker(mp_jpg_t *j) {
    while (j->pos < j->len && j->data[j->pos] != 0xFF) j->pos++;
    while (j->pos < j->len && j->data[j->pos] == 0xFF) j->pos++;
    if (j->pos >= j->len) return -1;
    return j->data[j->pos++];
}

static int handle_segment(mp_jpg_t *j, int m, const uint8_t *p, size_t n) {
    if (m == 0xC4) return parse_dht(j, p, n);
    if (m == 0xDB) return parse_dqt(j, p, n);
    if (m == 0xDD) {
        if (n < 2) return mp_error_set(MP_ERR_FORMAT, "%s: DRI segment truncated", j->codec);
        j->restart_interval = p[0] << 8 | p[1];
        return 0;
    }
    if (m == 0xDC) return mp_error_set(MP_ERR_UNSUPPORTED, "%s: DNL marker (number of lines after the scan)", j->codec);
    if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) return parse_sof(j, m, p, n);
    if (m == 0xCC) return mp_error_set(MP_ERR_UNSUPPORTED, "%s: arithmetic coding (DAC marker)", j->codec);
    return 0; /* APPn, COM, JPGn, reserved: skipped */
}

int mp_jpg_next_scan(mp_jpg_t *j) {
    for (;;) {
        int m = next_marker(j);
        if (m < 0 || m == 0xD9) return 0;
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) continue; /* standalone markers */
        size_t n;
        int rc = seg_len(j, m, &n);
        if (rc < 0) return rc;
        const uint8_t *p = j->data + j->pos + 2;
        j->pos += n;
        if (m == 0xDA) {
            rc = parse_sos(j, p, n - 2);
            return rc < 0 ? rc : 1;
        }
        rc = handle_segment(j, m, p, n - 2);
        if (rc < 0) return rc;
    }
}

int mp_jpg_peek_sof(const char *codec, const uint8_t *in, size_t len, int *sof, int *precision) {
    mp_jpg_t j;
    int rc = mp_jpg_init(&j, codec, in, len);
    if (rc < 0) return rc;
    for (;;) {
        int m = next_marker(&j);
        if (m < 0 || m == 0xD9 || m == 0xDA) break;
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;
        size_t n;
        rc = seg_len(&j, m, &n);
        if (rc < 0) return rc;
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (n < 3) return mp_error_set(MP_ERR_FORMAT, "%s: SOF segment truncated", codec);
            *sof = m;
            *precision = in[j.pos + 2];
            return 0;
        }
        j.pos += n;
    }
    return mp_error_set(MP_ERR_FORMAT, "%s: no frame header (SOF marker) before the scan data", codec);
}

/* ---- entropy-coded data ---- */

void mp_jbits_init(mp_jbits_t *b, const uint8_t *p, const uint8_t *end) {
    memset(b, 0, sizeof *b);
    b->p = p;
    b->end = end;
}

void mp_jbits_fill(mp_jbits_t *b) {
    while (b->n <= 56) {
        unsigned c = 0;
        if (b->marker || b->p >= b->end) {
            b->pad_bits += 8;
        } else if (*b->p != 0xFF) {
            c = *b->p++;
        } else {
            const uint8_t *q = b->p + 1;
            while (q < b->end && *q == 0xFF) q++;
            if (q < b->end && *q == 0x00) {
                c = 0xFF;
                b->p = q + 1;
            } else {
                b->marker = q < b->end ? *q : 0x100; /* 0x100: data ends inside fill bytes */
                b->marker_pos = b->p;
                b->pad_bits += 8;
            }
        }
        b->acc |= (uint64_t)c << (56 - b->n);
        b->n += 8;
    }
}

int mp_jbits_restart(mp_jbits_t *b, const char *codec) {
    if (mp_jbits_overrun(b))
        return mp_error_set(MP_ERR_FORMAT, "%s: entropy-coded data ends before the restart marker", codec);
    /* Whole bytes still buffered belong to data that should not exist. */
    b->acc = 0;
    b->n = 0;
    if (!b->marker) {
        /* The bit buffer may have read ahead over padding bits only; find the marker. */
        while (b->p < b->end && *b->p != 0xFF) b->p++;
        const uint8_t *q = b->p;
        while (q < b->end && *q == 0xFF) q++;
        b->marker = q < b->end ? *q : 0x100;
        b->marker_pos = b->p;
        if (q < b->end) b->p = q;
    } else {
        const uint8_t *q = b->marker_pos;
        while (q < b->end && *q == 0xFF) q++;
        b->p = q;
    }
    if (b->marker < 0xD0 || b->marker > 0xD7)
        return b->marker == 0x100 ? mp_error_set(MP_ERR_FORMAT, "%s: data ends where a restart marker is due", codec)
                                  : mp_error_set(MP_ERR_FORMAT, "%s: expected a restart marker, found 0xFF%02X",
                                                 codec, b->marker);
    b->p++; /* past the RSTn code byte */
    b->marker = 0;
    b->marker_pos = NULL;
    b->pad_bits = 0;
    return 0;
}

size_t mp_jbits_end_pos(const mp_jbits_t *b, const uint8_t *base) {
    if (b->marker) return (size_t)(b->marker_pos - base);
    return (size_t)(b->p - base);
}
