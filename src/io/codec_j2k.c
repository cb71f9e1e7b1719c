/* JPEG 2000 (DICOM 1.2.840.10008.1.2.4.90 / .91, and HTJ2K .201-.203 as far
 * as OpenJPEG 2.5 decodes them) through OpenJPEG with an in-memory stream.
 * Accepts a raw J2K codestream or a JP2 file. The header is read first and
 * its size, components and precision checked against the DICOM frame
 * description before anything is decoded. Signedness comes from the
 * codestream: signed components are written as two's complement; unsigned
 * ones in a signed DICOM frame are treated as the stored bit pattern and
 * sign-extended from bits_stored (as pydicom and GDCM do). Multi-component
 * transforms (RCT/ICT, DICOM YBR_RCT/YBR_ICT) are undone by OpenJPEG, so
 * 3-component output is RGB. */
#include <openjpeg.h>
#include <stdio.h>
#include <string.h>

#include "io/codec.h"
#include "io/codec_jpegcommon.h"
#include "medpipe/core.h"

#define J2K "JPEG 2000"

typedef struct {
    const uint8_t *data;
    size_t len, pos;
    char err[256]; /* first error message from OpenJPEG */
} mstream_t;

static OPJ_SIZE_T m_read(void *buf, OPJ_SIZE_T n, void *user) {
    mstream_t *m = user;
    if (m->pos >= m->len) return (OPJ_SIZE_T)-1;
    size_t k = m->len - m->pos < n ? m->len - m->pos : n;
    memcpy(buf, m->data + m->pos, k);
    m->pos += k;
    return k;
}

static OPJ_OFF_T m_skip(OPJ_OFF_T n, void *user) {
    mstream_t *m = user;
    if (n < 0) {
        if ((uint64_t)-n > m->pos) return -1;
        m->pos -= (size_t)-n;
        return n;
    }
    /* Skipping past the end is allowed (as with a file); reads then fail. */
    m->pos = (uint64_t)n > m->len - m->pos ? m->len : m->pos + (size_t)n;
    return n;
}

static OPJ_BOOL m_seek(OPJ_OFF_T n, void *user) {
    mstream_t *m = user;
    if (n < 0 || (uint64_t)n > m->len) return OPJ_FALSE;
    m->pos = (size_t)n;
    return OPJ_TRUE;
}

static void on_error(const char *msg, void *user) {
    mstream_t *m = user;
    if (m->err[0]) return;
    snprintf(m->err, sizeof m->err, "%s", msg);
    size_t l = strlen(m->err);
    while (l && (m->err[l - 1] == '\n' || m->err[l - 1] == '\r')) m->err[--l] = 0;
}

static void on_warning(const char *msg, void *user) {
    (void)user;
    mp_log(MP_LOG_DEBUG, J2K ": %s", msg);
}

static void on_info(const char *msg, void *user) {
    (void)msg;
    (void)user;
}

static int check_image(const opj_image_t *im, const mp_frame_info_t *fi) {
    int w = (int)(im->x1 - im->x0), h = (int)(im->y1 - im->y0);
    if (im->x1 < im->x0 || im->y1 < im->y0 || w != fi->cols || h != fi->rows || (int)im->numcomps != fi->samples)
        return mp_error_set(MP_ERR_MISMATCH, J2K ": frame is %dx%dx%d but the codestream says %dx%dx%u", fi->cols,
                            fi->rows, fi->samples, w, h, im->numcomps);
    for (unsigned c = 0; c < im->numcomps; c++) {
        const opj_image_comp_t *k = &im->comps[c];
        if (k->dx != 1 || k->dy != 1)
            return mp_error_set(MP_ERR_UNSUPPORTED, J2K ": component %u is subsampled %ux%u", c, k->dx, k->dy);
        if (k->prec < 1 || (int)k->prec > fi->bits_allocated || k->prec > 31)
            return mp_error_set(MP_ERR_MISMATCH, J2K ": component %u has precision %u, bits allocated %d", c, k->prec,
                                fi->bits_allocated);
        if (k->prec != im->comps[0].prec || k->sgnd != im->comps[0].sgnd)
            return mp_error_set(MP_ERR_UNSUPPORTED, J2K ": components differ in precision or signedness");
    }
    if ((int)im->comps[0].prec != fi->bits_stored || (int)im->comps[0].sgnd != (fi->is_signed != 0))
        mp_log(MP_LOG_DEBUG, J2K ": codestream %u-bit %s, frame %d-bit %s", im->comps[0].prec,
               im->comps[0].sgnd ? "signed" : "unsigned", fi->bits_stored, fi->is_signed ? "signed" : "unsigned");
    return 0;
}

/* OpenJPEG builds per-tile structures while reading the header, so a small
 * header declaring a huge image or millions of tiles costs seconds and
 * gigabytes before check_image could refuse it. The SIZ segment is read here
 * first (for JP2, that of the codestream in the first jp2c box). */
#define MAX_TILES 4096

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The codestream inside a JP2 file: the contents of the first jp2c box. */
static const uint8_t *jp2_codestream(const uint8_t *in, size_t len, size_t *cs_len) {
    size_t pos = 0;
    while (len - pos >= 8) {
        uint64_t box = be32(in + pos), hdr = 8;
        if (box == 1) {
            if (len - pos < 16) return NULL;
            box = (uint64_t)be32(in + pos + 8) << 32 | be32(in + pos + 12);
            hdr = 16;
        } else if (box == 0) {
            box = len - pos;
        }
        if (box < hdr || box > len - pos) return NULL;
        if (!memcmp(in + pos + 4, "jp2c", 4)) {
            *cs_len = (size_t)(box - hdr);
            return in + pos + hdr;
        }
        pos += (size_t)box;
    }
    return NULL;
}

static int precheck_siz(const uint8_t *in, size_t len, int is_jp2, const mp_frame_info_t *fi) {
    const uint8_t *p = in;
    if (is_jp2 && !(p = jp2_codestream(in, len, &len))) return 0; /* OpenJPEG reports it */
    if (len < 4 + 38 || p[0] != 0xFF || p[1] != 0x4F || p[2] != 0xFF || p[3] != 0x51) return 0;
    p += 4;
    uint32_t xsiz = be32(p + 4), ysiz = be32(p + 8), xo = be32(p + 12), yo = be32(p + 16);
    uint32_t xt = be32(p + 20), yt = be32(p + 24), xto = be32(p + 28), yto = be32(p + 32);
    unsigned csiz = (unsigned)p[36] << 8 | p[37];
    if (xsiz <= xo || ysiz <= yo || xt == 0 || yt == 0 || xto > xo || yto > yo)
        return mp_error_set(MP_ERR_FORMAT, J2K ": invalid SIZ geometry (%u-%u x %u-%u, tiles %ux%u)", xsiz, xo, ysiz,
                            yo, xt, yt);
    if (xsiz - xo != (uint32_t)fi->cols || ysiz - yo != (uint32_t)fi->rows || csiz != (unsigned)fi->samples)
        return mp_error_set(MP_ERR_MISMATCH, J2K ": frame is %dx%dx%d but the codestream says %ux%ux%u", fi->cols,
                            fi->rows, fi->samples, xsiz - xo, ysiz - yo, csiz);
    uint64_t tx = ((uint64_t)xsiz - xto + xt - 1) / xt, ty = ((uint64_t)ysiz - yto + yt - 1) / yt;
    if (tx * ty > MAX_TILES)
        return mp_error_set(MP_ERR_UNSUPPORTED, J2K ": %llu tiles in one frame (at most %d supported)",
                            (unsigned long long)(tx * ty), MAX_TILES);
    return 0;
}

static int write_image(uint8_t *out, size_t out_len, const opj_image_t *im, const mp_frame_info_t *fi) {
    size_t npix = (size_t)fi->rows * (size_t)fi->cols;
    int ns = fi->samples, bytes = fi->bits_allocated / 8;
    for (int c = 0; c < ns; c++) {
        const opj_image_comp_t *k = &im->comps[c];
        if (!k->data || (int)k->w != fi->cols || (int)k->h != fi->rows)
            return mp_error_set(MP_ERR_FORMAT, J2K ": component %d decoded to %ux%u", c, k->w, k->h);
        for (size_t i = 0; i < npix; i++) mp_codec_put_sample(out, i * (size_t)ns + (size_t)c, (uint32_t)k->data[i], bytes);
    }
    mp_codec_sign_extend(out, out_len, fi);
    return 0;
}

static int fail(mstream_t *m, const char *what) {
    return mp_error_set(MP_ERR_FORMAT, J2K ": %s%s%s", what, m->err[0] ? ": " : "", m->err);
}

int mp_codec_decode_j2k(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    int rc = mp_codec_frame_check(J2K, fi, out_len);
    if (rc < 0) return rc;
    static const uint8_t jp2_sig[12] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};
    OPJ_CODEC_FORMAT fmt;
    if (in && in_len >= 12 && memcmp(in, jp2_sig, 12) == 0) fmt = OPJ_CODEC_JP2;
    else if (in && in_len >= 4 && in[0] == 0xFF && in[1] == 0x4F && in[2] == 0xFF && in[3] == 0x51) fmt = OPJ_CODEC_J2K;
    else return mp_error_set(MP_ERR_FORMAT, J2K ": frame (%zu bytes) starts with neither a codestream (SOC/SIZ) nor a JP2 signature", in_len);

    if ((rc = precheck_siz(in, in_len, fmt == OPJ_CODEC_JP2, fi)) < 0) return rc;
    mstream_t m = {in, in_len, 0, {0}};
    opj_codec_t *codec = opj_create_decompress(fmt);
    opj_stream_t *st = opj_stream_create(65536, OPJ_TRUE);
    opj_image_t *im = NULL;
    if (!codec || !st) {
        rc = mp_error_set(MP_ERR_NOMEM, J2K ": cannot create a decoder");
        goto done;
    }
    opj_stream_set_user_data(st, &m, NULL);
    opj_stream_set_user_data_length(st, in_len);
    opj_stream_set_read_function(st, m_read);
    opj_stream_set_skip_function(st, m_skip);
    opj_stream_set_seek_function(st, m_seek);
    opj_set_error_handler(codec, on_error, &m);
    opj_set_warning_handler(codec, on_warning, &m);
    opj_set_info_handler(codec, on_info, &m);
    opj_dparameters_t par;
    opj_set_default_decoder_parameters(&par);
    if (!opj_setup_decoder(codec, &par) || !opj_decoder_set_strict_mode(codec, OPJ_TRUE)) {
        rc = fail(&m, "decoder setup failed");
        goto done;
    }
    if (!opj_read_header(st, codec, &im) || !im) {
        rc = fail(&m, "cannot read the header");
        goto done;
    }
    if ((rc = check_image(im, fi)) < 0) goto done;
    if (!opj_decode(codec, st, im) || !opj_end_decompress(codec, st)) {
        rc = fail(&m, "decoding failed");
        goto done;
    }
    rc = write_image(out, out_len, im, fi);
done:
    opj_image_destroy(im);
    opj_stream_destroy(st);
    opj_destroy_codec(codec);
    return rc;
}
