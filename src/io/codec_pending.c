/* TEMPORARY (dicom branch only): stand-ins for the JPEG, JPEG Lossless,
 * JPEG-LS and JPEG 2000 decoders, which are written on the `codecs` branch
 * (codec_jpeg*.c, codec_jpegls.c, codec_j2k.c). They let the DICOM reader
 * link and report compressed files as "codec pending". The lead deletes this
 * file when the codecs branch is merged. */
#include "io/codec.h"

#include "medpipe/core.h"

static int pending(const char *what) {
    return mp_error_set(MP_ERR_UNSUPPORTED, "%s decoding is not built yet (codec pending)", what);
}

int mp_codec_decode_jpeg(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    (void)out, (void)out_len, (void)in, (void)in_len, (void)fi;
    return pending("JPEG Baseline/Extended");
}

int mp_codec_decode_jpeg_lossless(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len,
                                  const mp_frame_info_t *fi) {
    (void)out, (void)out_len, (void)in, (void)in_len, (void)fi;
    return pending("JPEG Lossless");
}

int mp_codec_decode_jpegls(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    (void)out, (void)out_len, (void)in, (void)in_len, (void)fi;
    return pending("JPEG-LS");
}

int mp_codec_decode_j2k(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    (void)out, (void)out_len, (void)in, (void)in_len, (void)fi;
    return pending("JPEG 2000");
}
