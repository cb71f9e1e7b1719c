/* Fuzz target: JPEG lossless (process 14) decoder on one frame; the frame
 * description comes from the first 4 input bytes (see fuzz_codec.h). */
#include "fuzz_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_decode(mp_codec_decode_jpeg_lossless, data, size);
}
