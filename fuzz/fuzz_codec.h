/* Shared by the codec fuzz targets: the first 4 bytes of the input choose the
 * frame description (rows and columns 1-256, 1 or 3 samples, 8/16/32 bits
 * allocated, bits stored, signedness) and the rest is the compressed frame,
 * so the fuzzer explores both the codestreams and their disagreement with
 * the DICOM header. fuzz/make_corpus.py writes seeds in this layout. */
#ifndef MP_FUZZ_CODEC_H
#define MP_FUZZ_CODEC_H

#include <stdint.h>
#include <stdlib.h>

#include "io/codec.h"

/* Byte 0: rows-1; byte 1: cols-1; byte 2: bit 0 three samples, bits 1-2
 * bits allocated (0: 8, 1: 16, 2: 32, 3: 16), bit 3 signed, bit 4 keep_color; byte 3: bits
 * stored - 1 (modulo bits allocated). */
static inline int fuzz_frame_info(const uint8_t *d, size_t n, mp_frame_info_t *fi) {
    if (n < 4) return 0;
    static const int ba[4] = {8, 16, 32, 16};
    fi->rows = d[0] + 1;
    fi->cols = d[1] + 1;
    fi->samples = (d[2] & 1) ? 3 : 1;
    fi->bits_allocated = ba[(d[2] >> 1) & 3];
    fi->is_signed = (d[2] >> 3) & 1;
    fi->bits_stored = d[3] % fi->bits_allocated + 1;
    fi->planar = 0;
    fi->keep_color = (d[2] >> 4) & 1;
    return 1;
}

typedef int (*fuzz_decode_fn)(uint8_t *, size_t, const uint8_t *, size_t, const mp_frame_info_t *);

static inline int fuzz_decode(fuzz_decode_fn fn, const uint8_t *data, size_t size) {
    mp_frame_info_t fi;
    if (!fuzz_frame_info(data, size, &fi)) return 0;
    size_t n = (size_t)fi.rows * (size_t)fi.cols * (size_t)fi.samples * (size_t)(fi.bits_allocated / 8);
    uint8_t *out = malloc(n);
    if (!out) return 0;
    fn(out, n, data + 4, size - 4, &fi);
    free(out);
    return 0;
}

#endif
