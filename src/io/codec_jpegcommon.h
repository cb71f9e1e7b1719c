/* Pieces shared by the compressed-pixel decoders of this directory (private
 * to src/io): checks of the caller's frame description and output buffer,
 * sample output with sign extension, and the ITU-T T.81 (JPEG) layer used by
 * the hand-written JPEG decoders (lossless process 14 and 12-bit sequential
 * DCT): marker segments, Huffman tables and the entropy-coded bit reader. */
#ifndef MP_IO_CODEC_JPEGCOMMON_H
#define MP_IO_CODEC_JPEGCOMMON_H

#include <stddef.h>
#include <stdint.h>

#include "io/codec.h"

/* Checks a frame description and the output length for decoder `codec`
 * ("JPEG-LS", ...): sizes positive, samples 1 or 3, bits_allocated 8/16/32,
 * 1 <= bits_stored <= bits_allocated, out_len == rows*cols*samples*bytes
 * (planar is ignored: output is always interleaved),
 * and the pixel count under the memory limit. Sets the error and returns < 0. */
int mp_codec_frame_check(const char *codec, const mp_frame_info_t *fi, size_t out_len);

/* Writes sample `idx` (sample units) of a native little-endian buffer with
 * `bytes` bytes per sample. */
static inline void mp_codec_put_sample(uint8_t *out, size_t idx, uint32_t v, int bytes) {
    uint8_t *p = out + idx * (size_t)bytes;
    p[0] = (uint8_t)v;
    if (bytes > 1) p[1] = (uint8_t)(v >> 8);
    if (bytes > 2) {
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 24);
    }
}

/* For signed frames whose bits_stored is below the sample width, replaces
 * each sample by its two's complement sign extension from bits_stored (the
 * decoded value is the stored bit pattern, as DICOM defines it). No-op for
 * unsigned frames. */
void mp_codec_sign_extend(uint8_t *out, size_t out_len, const mp_frame_info_t *fi);

/* ---- JPEG (T.81) marker and entropy layer ---- */

/* A Huffman table in the form of T.81 Annex C/F (canonical codes), plus a
 * 9-bit lookup for the short codes. */
typedef struct {
    int present;
    uint8_t vals[256];
    int32_t maxcode[18]; /* largest code of each length, -1 when none */
    int32_t valptr[17];  /* index in vals of the first code of each length */
    int32_t mincode[17];
    uint16_t fast[512];  /* (length << 8) | value for codes up to 9 bits; 0: slow path */
} mp_jhuff_t;

typedef struct {
    int id, h, v, tq;
    int td, ta;          /* DC / AC table of the current scan */
    int in_scan;
    int done;            /* decoded by an earlier scan */
} mp_jcomp_t;

/* Parser state over one JPEG codestream. */
typedef struct {
    const char *codec;   /* prefix of error messages */
    const uint8_t *data;
    size_t len, pos;     /* pos: the next byte to parse (after SOS: the entropy data) */
    int sof;             /* SOFn marker (0xC0..0xCF), 0 before the frame header */
    int precision, height, width, ncomp;
    mp_jcomp_t comp[4];
    mp_jhuff_t dc[4], ac[4];
    uint16_t qt[4][64];  /* zig-zag order, as stored */
    int qt_present[4];
    int restart_interval;
    /* current scan */
    int ns;
    int scomp[4];        /* indices into comp[] */
    int ss, se, ah, al;
} mp_jpg_t;

/* Starts parsing: checks the SOI marker. */
int mp_jpg_init(mp_jpg_t *j, const char *codec, const uint8_t *in, size_t len);
/* Parses marker segments up to the next SOS (returns 1, j->pos at the entropy
 * data) or EOI / the end of the data (returns 0). DHT/DQT/DRI/SOF are stored;
 * APPn/COM and unknown segments skipped. < 0: error set. */
int mp_jpg_next_scan(mp_jpg_t *j);
/* Finds the frame header without decoding: *sof = SOFn marker, *precision.
 * Returns 0, or < 0 with the error set when there is none. */
int mp_jpg_peek_sof(const char *codec, const uint8_t *in, size_t len, int *sof, int *precision);

/* Reader of entropy-coded data: removes stuffed zero bytes, stops at markers
 * and feeds zero bits past them (counted, so that reading beyond the real
 * data is detected as truncation instead of decoding garbage forever). */
typedef struct {
    const uint8_t *p, *end;
    uint64_t acc;        /* left-aligned bit buffer */
    int n;               /* valid bits in acc */
    int marker;          /* marker code stopped at (0: none yet) */
    const uint8_t *marker_pos;
    int64_t pad_bits;    /* zero bits fed past the data */
} mp_jbits_t;

void mp_jbits_init(mp_jbits_t *b, const uint8_t *p, const uint8_t *end);
void mp_jbits_fill(mp_jbits_t *b);

static inline uint32_t mp_jbits_get(mp_jbits_t *b, int nb) {
    if (nb == 0) return 0;
    if (b->n < nb) mp_jbits_fill(b);
    uint32_t v = (uint32_t)(b->acc >> (64 - nb));
    b->acc <<= nb;
    b->n -= nb;
    return v;
}

/* Decodes one Huffman symbol; -1 for a code that is not in the table. */
static inline int mp_jbits_huff(mp_jbits_t *b, const mp_jhuff_t *h) {
    if (b->n < 16) mp_jbits_fill(b);
    uint32_t look = (uint32_t)(b->acc >> 55);
    uint16_t f = h->fast[look];
    if (f) {
        int l = f >> 8;
        b->acc <<= l;
        b->n -= l;
        return f & 0xff;
    }
    uint32_t code = (uint32_t)(b->acc >> 48); /* 16 bits */
    for (int l = 10; l <= 16; l++) {
        int32_t c = (int32_t)(code >> (16 - l));
        if (c <= h->maxcode[l]) {
            b->acc <<= l;
            b->n -= l;
            int idx = h->valptr[l] + c - h->mincode[l];
            return (idx >= 0 && idx < 256) ? h->vals[idx] : -1;
        }
    }
    return -1;
}

/* Sign-extends an s-bit magnitude category value (T.81 F.2.2.1 EXTEND). */
static inline int32_t mp_jbits_extend(uint32_t v, int s) {
    if (s == 0) return 0;
    return (v < (1u << (s - 1))) ? (int32_t)v - (int32_t)((1u << s) - 1) : (int32_t)v;
}

/* 1 when bits past the end of the real data were consumed (truncated or
 * corrupt entropy-coded data). */
static inline int mp_jbits_overrun(const mp_jbits_t *b) {
    return b->pad_bits - b->n > 0;
}
/* Handles a restart marker: drops the remaining bits of the byte and checks
 * that an RSTn marker follows. Returns 0 or < 0 with the error set. */
int mp_jbits_restart(mp_jbits_t *b, const char *codec);
/* Position where parsing of marker segments resumes after a scan. */
size_t mp_jbits_end_pos(const mp_jbits_t *b, const uint8_t *base);

#endif
