/* Transfer syntax table and dispatch to the pixel codecs: which decoder a
 * transfer syntax UID needs, its human-readable name, and one entry point
 * that the DICOM reader calls per frame. The decoders themselves live in
 * codec_rle.c and the codec_jpeg*.c / codec_jpegls.c / codec_j2k.c files.
 *
 * Colour contract with the reader (dicom_pixel.c): native and RLE frames come
 * out as stored (YBR stays YBR and the reader converts it); the JPEG-family
 * decoders return RGB for colour images (the libraries undo their own colour
 * transforms), so the reader does not convert their output again. */
#include "io/codec.h"

#include <string.h>

#include "medpipe/core.h"

typedef struct {
    const char *uid;
    mp_codec_t codec;
    const char *name;
} syntax_t;

static const syntax_t syntaxes[] = {
    {"1.2.840.10008.1.2", MP_CODEC_NATIVE, "Implicit VR Little Endian"},
    {"1.2.840.10008.1.2.1", MP_CODEC_NATIVE, "Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.1.99", MP_CODEC_NATIVE, "Deflated Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.2", MP_CODEC_NATIVE, "Explicit VR Big Endian"},
    {"1.2.840.10008.1.2.1.98", MP_CODEC_UNSUPPORTED, "Encapsulated Uncompressed Explicit VR Little Endian"},
    {"1.2.840.10008.1.2.4.50", MP_CODEC_JPEG_BASELINE, "JPEG Baseline (Process 1)"},
    {"1.2.840.10008.1.2.4.51", MP_CODEC_JPEG_BASELINE, "JPEG Extended (Process 2 & 4)"},
    {"1.2.840.10008.1.2.4.57", MP_CODEC_JPEG_LOSSLESS, "JPEG Lossless, Non-Hierarchical (Process 14)"},
    {"1.2.840.10008.1.2.4.70", MP_CODEC_JPEG_LOSSLESS,
     "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, SV1)"},
    {"1.2.840.10008.1.2.4.80", MP_CODEC_JPEGLS, "JPEG-LS Lossless"},
    {"1.2.840.10008.1.2.4.81", MP_CODEC_JPEGLS, "JPEG-LS Lossy (Near-Lossless)"},
    {"1.2.840.10008.1.2.4.90", MP_CODEC_J2K, "JPEG 2000 Image Compression (Lossless Only)"},
    {"1.2.840.10008.1.2.4.91", MP_CODEC_J2K, "JPEG 2000 Image Compression"},
    {"1.2.840.10008.1.2.4.201", MP_CODEC_J2K, "High-Throughput JPEG 2000 (Lossless Only)"},
    {"1.2.840.10008.1.2.4.202", MP_CODEC_J2K, "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)"},
    {"1.2.840.10008.1.2.4.203", MP_CODEC_J2K, "High-Throughput JPEG 2000"},
    {"1.2.840.10008.1.2.5", MP_CODEC_RLE, "RLE Lossless"},
    {"1.2.840.10008.1.2.4.92", MP_CODEC_UNSUPPORTED, "JPEG 2000 Part 2 Multi-component (Lossless Only)"},
    {"1.2.840.10008.1.2.4.93", MP_CODEC_UNSUPPORTED, "JPEG 2000 Part 2 Multi-component"},
    {"1.2.840.10008.1.2.4.94", MP_CODEC_UNSUPPORTED, "JPIP Referenced"},
    {"1.2.840.10008.1.2.4.95", MP_CODEC_UNSUPPORTED, "JPIP Referenced Deflate"},
    {"1.2.840.10008.1.2.4.100", MP_CODEC_UNSUPPORTED, "MPEG2 Main Profile / Main Level"},
    {"1.2.840.10008.1.2.4.101", MP_CODEC_UNSUPPORTED, "MPEG2 Main Profile / High Level"},
    {"1.2.840.10008.1.2.4.102", MP_CODEC_UNSUPPORTED, "MPEG-4 AVC/H.264 High Profile / Level 4.1"},
    {"1.2.840.10008.1.2.4.103", MP_CODEC_UNSUPPORTED, "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1"},
    {"1.2.840.10008.1.2.4.104", MP_CODEC_UNSUPPORTED, "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video"},
    {"1.2.840.10008.1.2.4.105", MP_CODEC_UNSUPPORTED, "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video"},
    {"1.2.840.10008.1.2.4.106", MP_CODEC_UNSUPPORTED, "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2"},
    {"1.2.840.10008.1.2.4.107", MP_CODEC_UNSUPPORTED, "HEVC/H.265 Main Profile / Level 5.1"},
    {"1.2.840.10008.1.2.4.108", MP_CODEC_UNSUPPORTED, "HEVC/H.265 Main 10 Profile / Level 5.1"},
    {"1.2.840.10008.1.2.4.110", MP_CODEC_UNSUPPORTED, "JPEG XL Lossless"},
    {"1.2.840.10008.1.2.4.111", MP_CODEC_UNSUPPORTED, "JPEG XL JPEG Recompression"},
    {"1.2.840.10008.1.2.4.112", MP_CODEC_UNSUPPORTED, "JPEG XL"},
};

static const syntax_t *syntax_find(const char *uid) {
    if (!uid) return NULL;
    for (size_t i = 0; i < sizeof syntaxes / sizeof syntaxes[0]; i++)
        if (strcmp(syntaxes[i].uid, uid) == 0) return &syntaxes[i];
    return NULL;
}

mp_codec_t mp_codec_for_syntax(const char *uid) {
    const syntax_t *s = syntax_find(uid);
    return s ? s->codec : MP_CODEC_UNSUPPORTED;
}

const char *mp_codec_syntax_name(const char *uid) {
    const syntax_t *s = syntax_find(uid);
    if (s) return s->name;
    if (uid && strncmp(uid, "1.2.840.10008.1.2.4.", 20) == 0) return "retired or unknown JPEG transfer syntax";
    return "unknown transfer syntax";
}

int mp_codec_decode_frame(mp_codec_t codec, uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len,
                          const mp_frame_info_t *fi) {
    switch (codec) {
    case MP_CODEC_RLE: return mp_codec_decode_rle(out, out_len, in, in_len, fi);
    case MP_CODEC_JPEG_BASELINE: return mp_codec_decode_jpeg(out, out_len, in, in_len, fi);
    case MP_CODEC_JPEG_LOSSLESS: return mp_codec_decode_jpeg_lossless(out, out_len, in, in_len, fi);
    case MP_CODEC_JPEGLS: return mp_codec_decode_jpegls(out, out_len, in, in_len, fi);
    case MP_CODEC_J2K: return mp_codec_decode_j2k(out, out_len, in, in_len, fi);
    case MP_CODEC_NATIVE: return mp_error_set(MP_ERR_ARG, "native pixel data is not decoded by a codec");
    default: return mp_error_set(MP_ERR_UNSUPPORTED, "no decoder for this transfer syntax");
    }
}
