/* Fuzz target: JPEG 2000 (OpenJPEG) decoder on one frame; the frame
 * description comes from the first 4 input bytes (see fuzz_codec.h). */
#include "fuzz_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_decode(mp_codec_decode_j2k, data, size);
}
