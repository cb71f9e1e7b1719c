/* JPEG Baseline and Extended (DICOM 1.2.840.10008.1.2.4.50 / .51).
 * 8-bit frames (sequential or progressive, Huffman or arithmetic, any
 * sampling) go to libjpeg-turbo, which converts YCbCr codestreams to RGB, so a
 * 3-component frame always comes out as RGB. Debian's libjpeg-turbo 2.1 is
 * built for 8-bit samples only, so 12-bit frames (process 4: sequential,
 * Huffman, one component; the DICOM CT/MR case) are decoded here: Huffman
 * decoding through codec_jpegcommon, dequantisation and a double-precision
 * inverse DCT. Lossless (SOF3) codestreams found under these transfer
 * syntaxes are passed to the lossless decoder. */
#include <math.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h> /* needs stddef.h and stdio.h first */
#include <jerror.h>

#include "io/codec.h"
#include "io/codec_jpegcommon.h"
#include "medpipe/core.h"

/* A hostile progressive file can hold thousands of tiny scans, each costing a
 * pass over the whole coefficient buffer. Real ones have about ten. */
#define MAX_SCANS 1000

/* ---- 8-bit: libjpeg-turbo ---- */

typedef struct {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jerr_t;

static void on_error(j_common_ptr c) {
    jerr_t *e = (jerr_t *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings about corrupt entropy-coded data become errors (a truncated frame
 * must not come back as a half-grey image); harmless ones are logged. */
static void on_message(j_common_ptr c, int level) {
    if (level >= 0) return;
    jerr_t *e = (jerr_t *)c->err;
    c->err->format_message(c, e->msg);
    int code = c->err->msg_code;
    if (code == JWRN_EXTRANEOUS_DATA || code == JWRN_JFIF_MAJOR || code == JWRN_ADOBE_XFORM ||
        code == JWRN_BOGUS_ICC || code == JWRN_NOT_SEQUENTIAL) {
        mp_log(MP_LOG_DEBUG, "JPEG: %s", e->msg);
        return;
    }
    longjmp(e->jb, 1);
}

static void on_progress(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (d->is_decompressor && d->input_scan_number > MAX_SCANS) {
        jerr_t *e = (jerr_t *)c->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static int check_header(const struct jpeg_decompress_struct *ci, const mp_frame_info_t *fi) {
    if ((int)ci->image_width != fi->cols || (int)ci->image_height != fi->rows || ci->num_components != fi->samples)
        return mp_error_set(MP_ERR_MISMATCH, "JPEG: frame is %dx%dx%d but the codestream says %ux%ux%d", fi->cols,
                            fi->rows, fi->samples, ci->image_width, ci->image_height, ci->num_components);
    if (fi->samples == 3 && ci->jpeg_color_space != JCS_YCbCr && ci->jpeg_color_space != JCS_RGB)
        return mp_error_set(MP_ERR_UNSUPPORTED, "JPEG: 3-component colour space %d", (int)ci->jpeg_color_space);
    return 0;
}

static int decode_8bit(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    struct jpeg_decompress_struct ci;
    jerr_t jerr;
    uint8_t *volatile row = NULL;
    volatile int rc = 0;
    memset(&ci, 0, sizeof ci);
    ci.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error;
    jerr.pub.emit_message = on_message;
    jerr.msg[0] = 0;
    if (setjmp(jerr.jb)) {
        jpeg_destroy_decompress(&ci);
        mp_free(row);
        return rc ? rc : mp_error_set(MP_ERR_FORMAT, "JPEG: %s", jerr.msg);
    }
    jpeg_create_decompress(&ci);
    jerr.progress.progress_monitor = on_progress;
    ci.progress = &jerr.progress;
    jpeg_mem_src(&ci, in, (unsigned long)in_len);
    jpeg_read_header(&ci, TRUE);
    if ((rc = check_header(&ci, fi)) < 0) longjmp(jerr.jb, 1);
    ci.out_color_space = fi->samples == 3 ? JCS_RGB : JCS_GRAYSCALE;
    /* DICOM's photometric interpretation overrides the codestream's colour
     * markers: "RGB" means the components are stored as they are. */
    if (fi->samples == 3 && fi->keep_color) ci.out_color_space = ci.jpeg_color_space;
    ci.dct_method = JDCT_ISLOW; /* the accurate integer IDCT, as in the IJG reference decoder */
    jpeg_start_decompress(&ci);
    int bytes = fi->bits_allocated / 8;
    size_t stride = (size_t)fi->cols * (size_t)fi->samples;
    if (bytes > 1 && !(row = mp_alloc(stride))) {
        rc = mp_error_set(MP_ERR_NOMEM, "JPEG: no memory for a row of %zu samples", stride);
        longjmp(jerr.jb, 1);
    }
    while (ci.output_scanline < ci.output_height) {
        size_t y = ci.output_scanline;
        JSAMPROW dst = bytes == 1 ? out + y * stride : row;
        if (jpeg_read_scanlines(&ci, &dst, 1) != 1) {
            snprintf(jerr.msg, sizeof jerr.msg, "no scanline %zu", y);
            longjmp(jerr.jb, 1);
        }
        if (bytes > 1)
            for (size_t i = 0; i < stride; i++) mp_codec_put_sample(out, y * stride + i, row[i], bytes);
    }
    jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    mp_free(row);
    (void)out_len;
    return 0;
}

/* ---- 12-bit: sequential Huffman DCT, one component ---- */

/* Natural (row-major) position of the k-th coefficient in zig-zag order (T.81 Figure A.6). */
static const uint8_t zigzag[64] = {0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,
                                   12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28,
                                   35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
                                   58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63};

typedef struct {
    double cosv[8][8]; /* cosv[x][u] = C(u)/2 cos((2x+1)u pi/16) */
    int maxval, shift;
} idct_t;

static void idct_init(idct_t *t, int precision) {
    const double pi = 3.14159265358979323846;
    for (int x = 0; x < 8; x++)
        for (int u = 0; u < 8; u++) t->cosv[x][u] = (u ? 0.5 : 0.5 / sqrt(2.0)) * cos((2 * x + 1) * u * pi / 16.0);
    t->maxval = (1 << precision) - 1;
    t->shift = 1 << (precision - 1);
}

/* Inverse DCT of one block (natural order) into pixels, level-shifted and clamped. */
static void idct_block(const idct_t *t, const double *f, int32_t *pix) {
    double tmp[64];
    for (int v = 0; v < 8; v++)
        for (int x = 0; x < 8; x++) {
            double s = 0;
            for (int u = 0; u < 8; u++) s += f[v * 8 + u] * t->cosv[x][u];
            tmp[v * 8 + x] = s;
        }
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            double s = 0;
            for (int v = 0; v < 8; v++) s += tmp[v * 8 + x] * t->cosv[y][v];
            long r = lround(s) + t->shift;
            pix[y * 8 + x] = (int32_t)(r < 0 ? 0 : r > t->maxval ? t->maxval : r);
        }
}

static int decode_block(mp_jbits_t *b, const mp_jhuff_t *dc, const mp_jhuff_t *ac, const uint16_t *q, int32_t *pred,
                        double *f) {
    memset(f, 0, 64 * sizeof *f);
    int s = mp_jbits_huff(b, dc);
    if (s < 0 || s > 16) return -1;
    int32_t d = s == 16 ? 32768 : mp_jbits_extend(mp_jbits_get(b, s), s);
    int32_t p = *pred + d;
    /* Clamped so that hostile data cannot overflow the running DC value. */
    *pred = p < -65536 ? -65536 : p > 65536 ? 65536 : p;
    f[0] = (double)*pred * q[0];
    for (int k = 1; k < 64; k++) {
        int rs = mp_jbits_huff(b, ac);
        if (rs < 0) return -1;
        int r = rs >> 4;
        s = rs & 15;
        if (s == 0) {
            if (r != 15) break; /* EOB */
            k += 15;            /* ZRL */
            continue;
        }
        k += r;
        if (k > 63) return -1;
        f[zigzag[k]] = (double)mp_jbits_extend(mp_jbits_get(b, s), s) * q[k];
    }
    return 0;
}

static int check_dct12(const mp_jpg_t *j, const mp_frame_info_t *fi) {
    if (j->sof != 0xC0 && j->sof != 0xC1)
        return mp_error_set(MP_ERR_UNSUPPORTED,
                            "JPEG: 12-bit SOF%d (progressive or arithmetic) is not supported; only sequential Huffman",
                            j->sof - 0xC0);
    if (j->width != fi->cols || j->height != fi->rows || j->ncomp != fi->samples)
        return mp_error_set(MP_ERR_MISMATCH, "JPEG: frame is %dx%dx%d but the codestream says %dx%dx%d", fi->cols,
                            fi->rows, fi->samples, j->width, j->height, j->ncomp);
    if (j->ncomp != 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "JPEG: 12-bit DCT with %d components (only 1 supported)", j->ncomp);
    if (fi->bits_allocated < 16)
        return mp_error_set(MP_ERR_MISMATCH, "JPEG: 12-bit codestream but bits allocated %d", fi->bits_allocated);
    const mp_jcomp_t *c = &j->comp[0];
    /* Sequential scans ignore Ss/Se/Ah/Al (some encoders, e.g. PVRG, write Se=0), as IJG does. */
    if (j->ss != 0 || j->se != 63 || j->ah != 0 || j->al != 0)
        mp_log(MP_LOG_DEBUG, "JPEG: sequential scan with spectral selection %d-%d, approximation %d/%d", j->ss, j->se,
               j->ah, j->al);
    if (!j->dc[c->td].present || !j->ac[c->ta].present || !j->qt_present[c->tq])
        return mp_error_set(MP_ERR_FORMAT, "JPEG: scan uses an undefined Huffman or quantisation table");
    return 0;
}

static int decode_12bit(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    mp_jpg_t j;
    int rc = mp_jpg_init(&j, "JPEG", in, in_len);
    if (rc < 0) return rc;
    if ((rc = mp_jpg_next_scan(&j)) <= 0)
        return rc < 0 ? rc : mp_error_set(MP_ERR_FORMAT, "JPEG: no scan in the codestream (%zu bytes)", in_len);
    if ((rc = check_dct12(&j, fi)) < 0) return rc;
    idct_t t;
    idct_init(&t, 12);
    const mp_jcomp_t *c = &j.comp[0];
    const int bw = (fi->cols + 7) / 8, bh = (fi->rows + 7) / 8, bytes = fi->bits_allocated / 8;
    mp_jbits_t b;
    mp_jbits_init(&b, j.data + j.pos, j.data + j.len);
    int32_t pred = 0, pix[64];
    double f[64];
    int left = j.restart_interval;
    for (int by = 0; by < bh; by++) {
        for (int bx = 0; bx < bw; bx++) {
            if (j.restart_interval && left == 0) {
                if ((rc = mp_jbits_restart(&b, "JPEG")) < 0) return rc;
                pred = 0;
                left = j.restart_interval;
            }
            left--;
            if (decode_block(&b, &j.dc[c->td], &j.ac[c->ta], j.qt[c->tq], &pred, f) < 0)
                return mp_error_set(MP_ERR_FORMAT, "JPEG: invalid Huffman code in block row %d, column %d", by, bx);
            idct_block(&t, f, pix);
            for (int y = 0; y < 8 && by * 8 + y < fi->rows; y++)
                for (int x = 0; x < 8 && bx * 8 + x < fi->cols; x++)
                    mp_codec_put_sample(out, (size_t)(by * 8 + y) * (size_t)fi->cols + (size_t)(bx * 8 + x),
                                        (uint32_t)pix[y * 8 + x], bytes);
        }
        if (mp_jbits_overrun(&b))
            return mp_error_set(MP_ERR_FORMAT, "JPEG: entropy-coded data truncated at block row %d of %d", by, bh);
    }
    mp_codec_sign_extend(out, out_len, fi);
    return 0;
}

int mp_codec_decode_jpeg(uint8_t *out, size_t out_len, const uint8_t *in, size_t in_len, const mp_frame_info_t *fi) {
    int rc = mp_codec_frame_check("JPEG", fi, out_len);
    if (rc < 0) return rc;
    int sof = 0, prec = 0;
    if ((rc = mp_jpg_peek_sof("JPEG", in, in_len, &sof, &prec)) < 0) return rc;
    if (sof == 0xC3) {
        mp_log(MP_LOG_WARN, "JPEG: frame holds a lossless (SOF3) codestream; decoding it as such");
        return mp_codec_decode_jpeg_lossless(out, out_len, in, in_len, fi);
    }
    if (sof == 0xC7 || sof == 0xCB || sof == 0xCF || sof == 0xC5 || sof == 0xC6 || sof == 0xCD || sof == 0xCE)
        return mp_error_set(MP_ERR_UNSUPPORTED, "JPEG: SOF%d (hierarchical or arithmetic lossless) is not supported",
                            sof - 0xC0);
    if (prec == 12) return decode_12bit(out, out_len, in, in_len, fi);
    if (prec != 8) return mp_error_set(MP_ERR_FORMAT, "JPEG: DCT codestream with precision %d (8 or 12)", prec);
    rc = decode_8bit(out, out_len, in, in_len, fi);
    if (rc == 0) mp_codec_sign_extend(out, out_len, fi);
    return rc;
}
