/* JPEG lossless (ITU-T T.81 Annex H, process 14; DICOM transfer syntaxes
 * 1.2.840.10008.1.2.4.57 and .70): Huffman-coded, predictors 1-7, point
 * transform, precision 2-16, restart intervals, 1-4 components in interleaved
 * or separate scans (no subsampling). Written here because libjpeg-turbo 2.1
 * as shipped by Debian has no lossless decoder. */
#include <string.h>

#include "io/codec.h"
#include "io/codec_jpegcommon.h"
#include "medpipe/core.h"

#define LL "JPEG lossless"

/* floor(x / 2) without relying on the implementation-defined >> of negatives;
 * |x| < 2^17 here. */
static inline int32_t half_floor(int32_t x) {
    return ((x + 0x40000) >> 1) - 0x20000;
}

static inline int32_t predict(int sv, int32_t ra, int32_t rb, int32_t rc) {
    switch (sv) {
    case 1: return ra;
    case 2: return rb;
    case 3: return rc;
    case 4: return ra + rb - rc;
    case 5: return ra + half_floor(rb - rc);
    case 6: return rb + half_floor(ra - rc);
    default: return half_floor(ra + rb);
    }
}

typedef struct {
    mp_jpg_t *j;
    uint16_t *plane[4]; /* one rows*cols plane per frame component */
    int pt[4];          /* point transform of the scan that coded each component */
    int rows, cols;
} ll_state_t;

/* Decodes one difference value: category SSSS then SSSS extra bits (16: 32768). */
static inline int decode_diff(mp_jbits_t *b, const mp_jhuff_t *h, int32_t *diff) {
    int s = mp_jbits_huff(b, h);
    if (s < 0 || s > 16) return -1;
    if (s == 16) {
        *diff = 32768;
        return 0;
    }
    *diff = mp_jbits_extend(mp_jbits_get(b, s), s);
    return 0;
}

static int check_scan(const ll_state_t *st) {
    const mp_jpg_t *j = st->j;
    if (j->ss < 1 || j->ss > 7)
        return mp_error_set(MP_ERR_FORMAT, LL ": predictor (selection value) %d (1-7 allowed)", j->ss);
    if (j->al >= j->precision)
        return mp_error_set(MP_ERR_FORMAT, LL ": point transform %d with precision %d", j->al, j->precision);
    for (int i = 0; i < j->ns; i++) {
        const mp_jcomp_t *c = &j->comp[j->scomp[i]];
        if (!j->dc[c->td].present)
            return mp_error_set(MP_ERR_FORMAT, LL ": scan uses Huffman table %d, which is not defined", c->td);
        if (c->done) return mp_error_set(MP_ERR_FORMAT, LL ": component %d coded in two scans", c->id);
    }
    return 0;
}

/* Decodes the current scan into the planes. Each MCU is one sample of each
 * scan component (no subsampling). */
static int decode_scan(ll_state_t *st) {
    mp_jpg_t *j = st->j;
    int rc = check_scan(st);
    if (rc < 0) return rc;
    const int sv = j->ss, pt = j->al, cols = st->cols, rows = st->rows;
    const int32_t initial = 1 << (j->precision - pt - 1);
    const int ri = j->restart_interval;
    mp_jbits_t b;
    mp_jbits_init(&b, j->data + j->pos, j->data + j->len);
    const mp_jhuff_t *tab[4];
    uint16_t *pl[4];
    for (int i = 0; i < j->ns; i++) {
        tab[i] = &j->dc[j->comp[j->scomp[i]].td];
        pl[i] = st->plane[j->scomp[i]];
    }
    int start_r = 0, start_c = 0, left = ri;
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            if (ri && left == 0) {
                if ((rc = mp_jbits_restart(&b, LL)) < 0) return rc;
                start_r = r;
                start_c = c;
                left = ri;
            }
            left--;
            size_t at = (size_t)r * (size_t)cols + (size_t)c;
            for (int i = 0; i < j->ns; i++) {
                int32_t diff, px;
                if (decode_diff(&b, tab[i], &diff) < 0)
                    return mp_error_set(MP_ERR_FORMAT, LL ": invalid Huffman code at row %d, column %d", r, c);
                uint16_t *p = pl[i];
                if (r == start_r) px = (c == start_c) ? initial : p[at - 1];
                else if (c == 0) px = p[at - cols];
                else px = predict(sv, p[at - 1], p[at - cols], p[at - cols - 1]);
                p[at] = (uint16_t)((px + diff) & 0xFFFF);
            }
        }
        if (mp_jbits_overrun(&b))
            return mp_error_set(MP_ERR_FORMAT, LL ": entropy-coded data truncated at row %d of %d", r, rows);
    }
    for (int i = 0; i < j->ns; i++) {
        j->comp[j->scomp[i]].done = 1;
        st->pt[j->scomp[i]] = pt;
    }
    j->pos = mp_jbits_end_pos(&b, j->data);
    return 0;
}

static int check_frame(const mp_jpg_t *j, const mp_frame_info_t *fi) {
    if (j->sof != 0xC3)
        return mp_error_set(j->sof == 0xCB || j->sof == 0xC7 || j->sof == 0xCF ? MP_ERR_UNSUPPORTED : MP_ERR_FORMAT,
                            LL ": frame header is SOF%d, not SOF3 (lossless, Huffman)", j->sof - 0xC0);
    if (j->precision < 2 || j->precision > 16)
        return mp_error_set(MP_ERR_FORMAT, LL ": precision %d (2-16 allowed)", j->precision);
    if (j->width != fi->cols || j->height != fi->rows || j->ncomp != fi->samples)
        return mp_error_set(MP_ERR_MISMATCH, LL ": frame is %dx%dx%d but the codestream says %dx%dx%d", fi->cols,
                            fi->rows, fi->samples, j->width, j->height, j->ncomp);
    if (j->precision > fi->bits_allocated)
        return mp_error_set(MP_ERR_MISMATCH, LL ": codestream precision %d exceeds bits allocated %d", j->precision,
                            fi->bits_allocated);
    for (int i = 1; i < j->ncomp; i++)
        if (j->comp[i].h != j->comp[0].h || j->comp[i].v != j->comp[0].v)
            return mp_error_set(MP_ERR_UNSUPPORTED, LL ": subsampled components (%dx%d vs %dx%d)", j->comp[i].h,
                                j->comp[i].v, j->comp[0].h, j->comp[0].v);
    if (j->precision != fi->bits_stored)
        mp_log(MP_LOG_DEBUG, LL ": codestream precision %d, bits stored %d", j->precision, fi->bits_stored);
    return 0;
}

int mp_codec_decode_jpeg_lossless(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len,
                                  const mp_frame_info_t *fi) {
    int rc = mp_codec_frame_check(LL, fi, out_len);
    if (rc < 0) return rc;
    int sof = 0, prec = 0;
    if ((rc = mp_jpg_peek_sof(LL, in, in_len, &sof, &prec)) < 0) return rc;
    if (sof == 0xC0 || sof == 0xC1 || sof == 0xC2) {
        /* Mislabelled transfer syntax: the codestream is DCT-based. */
        mp_log(MP_LOG_WARN, LL ": frame holds a DCT-based JPEG (SOF%d); decoding it as such", sof - 0xC0);
        return mp_codec_decode_jpeg(out, out_len, in, in_len, fi);
    }
    mp_jpg_t j;
    if ((rc = mp_jpg_init(&j, LL, in, in_len)) < 0) return rc;
    size_t npix = (size_t)fi->rows * (size_t)fi->cols;
    ll_state_t st = {&j, {NULL}, {0}, fi->rows, fi->cols};
    uint16_t *buf = NULL;
    int scans = 0;
    while ((rc = mp_jpg_next_scan(&j)) == 1) {
        if (!buf) {
            if ((rc = check_frame(&j, fi)) < 0) break;
            buf = mp_zalloc(npix * (size_t)j.ncomp * sizeof *buf);
            if (!buf) {
                rc = mp_error_set(MP_ERR_NOMEM, LL ": no memory for a %dx%dx%d frame", fi->cols, fi->rows, j.ncomp);
                break;
            }
            for (int c = 0; c < j.ncomp; c++) st.plane[c] = buf + (size_t)c * npix;
        }
        if (j.ns > 1 && (j.comp[j.scomp[0]].h != 1 || j.comp[j.scomp[0]].v != 1)) {
            rc = mp_error_set(MP_ERR_UNSUPPORTED, LL ": interleaved scan with sampling factors %dx%d",
                              j.comp[j.scomp[0]].h, j.comp[j.scomp[0]].v);
            break;
        }
        if ((rc = decode_scan(&st)) < 0) break;
        scans++;
    }
    if (rc == 0 && !scans) {
        rc = j.sof && j.sof != 0xC3 ? check_frame(&j, fi) : 0;
        if (rc == 0) rc = mp_error_set(MP_ERR_FORMAT, LL ": no scan in the codestream (%zu bytes)", in_len);
    }
    for (int c = 0; rc == 0 && c < j.ncomp; c++)
        if (!j.comp[c].done) rc = mp_error_set(MP_ERR_FORMAT, LL ": component %d has no scan", j.comp[c].id);
    if (rc == 0) {
        int bytes = fi->bits_allocated / 8, ns = fi->samples;
        for (size_t i = 0; i < npix; i++)
            for (int c = 0; c < ns; c++)
                mp_codec_put_sample(out, i * (size_t)ns + (size_t)c, (uint32_t)st.plane[c][i] << st.pt[c] & 0xFFFFu,
                                    bytes);
        mp_codec_sign_extend(out, out_len, fi);
    }
    mp_free(buf);
    return rc;
}
