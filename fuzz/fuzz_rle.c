/* libFuzzer target: the RLE Lossless decoder. Input: an 8-byte header
 * (rows u16, cols u16, samples u8, bits allocated u8, 2 spare bytes, little
 * endian) then one compressed frame. */
#include <stdlib.h>

#include "io/codec.h"
#include "medpipe/core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    mp_frame_info_t fi = {0};
    fi.rows = data[0] | (data[1] << 8);
    fi.cols = data[2] | (data[3] << 8);
    fi.samples = data[4] % 5;
    fi.bits_allocated = data[5];
    fi.bits_stored = fi.bits_allocated;
    size_t bytes = fi.bits_allocated / 8 ? (size_t)(fi.bits_allocated / 8) : 1;
    size_t out_len = (size_t)fi.rows * (size_t)fi.cols * (size_t)fi.samples * bytes;
    if (out_len > ((size_t)4 << 20)) return 0;
    uint8_t *out = malloc(out_len ? out_len : 1);
    if (!out) return 0;
    mp_codec_decode_rle(out, out_len, data + 8, size - 8, &fi);
    free(out);
    return 0;
}
