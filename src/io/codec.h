/* Pixel codecs for DICOM encapsulated transfer syntaxes (private to src/io).
 * Each decoder takes one compressed frame and writes native pixels:
 * little-endian, samples interleaved (planar configuration 0), each sample in
 * bits_allocated/8 bytes (1 or 2; 4 for 32-bit), exactly rows*cols*samples
 * samples. Inputs are hostile: every length is checked; errors name the codec
 * and what was wrong (the caller adds file name and offset). */
#ifndef MP_IO_CODEC_H
#define MP_IO_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int rows, cols;        /* frame size from the DICOM header */
    int samples;           /* SamplesPerPixel: 1 or 3 */
    int bits_allocated;    /* 8, 16 or 32 */
    int bits_stored;
    int is_signed;         /* PixelRepresentation */
    int planar;            /* PlanarConfiguration of the *decoded* output expected: always 0 here */
    int keep_color;        /* 1: PhotometricInterpretation says RGB, so 3-component lossy JPEG is
                              returned as stored (no YCbCr->RGB even if the codestream implies it),
                              as pydicom and dcmtk's default do; 0: follow the codestream */
} mp_frame_info_t;

typedef enum {
    MP_CODEC_NATIVE = 0,   /* not encapsulated */
    MP_CODEC_RLE,          /* 1.2.840.10008.1.2.5 */
    MP_CODEC_JPEG_BASELINE,/* 1.2.840.10008.1.2.4.50 / .51 (extended, 12-bit) */
    MP_CODEC_JPEG_LOSSLESS,/* 1.2.840.10008.1.2.4.57 / .70 (process 14, SV1) */
    MP_CODEC_JPEGLS,       /* 1.2.840.10008.1.2.4.80 / .81 */
    MP_CODEC_J2K,          /* 1.2.840.10008.1.2.4.90 / .91 (and HTJ2K .201-.203 if OpenJPEG can) */
    MP_CODEC_UNSUPPORTED
} mp_codec_t;

/* Codec for a transfer syntax UID (MP_CODEC_NATIVE for the uncompressed ones,
 * MP_CODEC_UNSUPPORTED for anything else). */
mp_codec_t mp_codec_for_syntax(const char *uid);
/* Human-readable name of a transfer syntax UID ("JPEG 2000 Image Compression", ...). */
const char *mp_codec_syntax_name(const char *uid);

/* Decodes one frame into out (out_len must be rows*cols*samples*bits_allocated/8).
 * Returns 0 or a negative mp_status_t with mp_error_set() called. */
int mp_codec_decode_frame(mp_codec_t codec, uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len,
                          const mp_frame_info_t *fi);

/* Individual decoders (same contract). */
int mp_codec_decode_rle(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi);
int mp_codec_decode_jpeg(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi);
int mp_codec_decode_jpeg_lossless(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len,
                                  const mp_frame_info_t *fi);
int mp_codec_decode_jpegls(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi);
int mp_codec_decode_j2k(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi);

#endif
