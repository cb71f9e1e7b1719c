/* DICOM writing internals (private to src/io/dcmw_*.c): an element encoder
 * for explicit VR little endian into a growable buffer, with the VR rules
 * (lengths, character repertoires, even padding), nested sequences and items
 * of defined length patched on close, an ascending-tag check per nesting
 * level, and the Part 10 file writer (preamble, file meta group with its group
 * length, atomic output).
 *
 * Errors are sticky: the first failure is recorded in the buffer (with
 * mp_error_set naming the tag) and every later call does nothing, so a writer
 * can emit a whole data set and check the status once. */
#ifndef MP_IO_DCMW_INTERNAL_H
#define MP_IO_DCMW_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "medpipe/vol.h"

#define MP_DCMW_MAX_DEPTH 16

/* A tag as group << 16 | element. */
#define MP_DCMW_TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

typedef struct {
    uint8_t *data;
    size_t len, cap;
    int err;        /* first failure, 0 while fine */
    int utf8;       /* SpecificCharacterSet ISO_IR 192 was declared */
    int depth;      /* open sequences + items */
    struct {
        size_t len_at;     /* offset of the 4-byte length to patch */
        int is_item;
        uint32_t tag;
    } open[MP_DCMW_MAX_DEPTH];
    uint32_t last_tag[MP_DCMW_MAX_DEPTH + 1]; /* per level; 0 = none yet */
} mp_dcmw_buf_t;

void mp_dcmw_buf_init(mp_dcmw_buf_t *b);
void mp_dcmw_buf_deinit(mp_dcmw_buf_t *b);
/* Empties the buffer (keeping its memory) for the next data set. */
void mp_dcmw_buf_reset(mp_dcmw_buf_t *b);

/* Declares the character set: utf8 != 0 writes (0008,0005) "ISO_IR 192" and
 * allows non-ASCII text in LO/LT/PN/SH/ST/UC/UT; 0 writes nothing (default
 * repertoire, ASCII only). Must be the first element of the data set. */
int mp_dcmw_charset(mp_dcmw_buf_t *b, int utf8);
/* Whether a string needs ISO_IR 192 (has a byte >= 0x80). */
int mp_dcmw_is_non_ascii(const char *s);

/* A string element; s == NULL or "" gives an empty (type 2) value. Multiple
 * values are joined by '\' in s (not for LT/ST/UT/UR). Checks the length of
 * each value and the characters the VR allows, pads to even length (NUL for
 * UI, space otherwise). */
int mp_dcmw_str(mp_dcmw_buf_t *b, uint32_t tag, const char *vr, const char *s);
/* Decimal strings: each value formatted in at most 16 characters. */
int mp_dcmw_ds(mp_dcmw_buf_t *b, uint32_t tag, const double *v, int n);
int mp_dcmw_is(mp_dcmw_buf_t *b, uint32_t tag, int64_t v);
/* Binary numbers. */
int mp_dcmw_us(mp_dcmw_buf_t *b, uint32_t tag, const uint16_t *v, int n);
int mp_dcmw_ul(mp_dcmw_buf_t *b, uint32_t tag, const uint32_t *v, int n);
int mp_dcmw_at(mp_dcmw_buf_t *b, uint32_t tag, const uint32_t *tags, int n);
/* OB or OW bytes (little endian already); odd lengths padded with one 0. */
int mp_dcmw_bytes(mp_dcmw_buf_t *b, uint32_t tag, const char *vr, const void *data, size_t len);

/* Sequences and items of defined length: lengths are patched when closed. */
int mp_dcmw_seq_begin(mp_dcmw_buf_t *b, uint32_t tag);
int mp_dcmw_seq_end(mp_dcmw_buf_t *b);
int mp_dcmw_item_begin(mp_dcmw_buf_t *b);
int mp_dcmw_item_end(mp_dcmw_buf_t *b);
/* A code sequence with one item (CodeValue, CodingSchemeDesignator, CodeMeaning). */
int mp_dcmw_code_seq(mp_dcmw_buf_t *b, uint32_t tag, const char *value, const char *scheme, const char *meaning);

/* Formats v as a DICOM DS value of at most 16 characters with as many
 * significant digits as fit; returns the value a reader gets back from the
 * text (what to compute with so readers and writer agree). *ok = 0 for NaN,
 * infinities and magnitudes that do not fit. */
double mp_dcmw_format_ds(double v, char out[17], int *ok);

/* Writes preamble, file meta group (explicit VR little endian) and the data
 * set in `ds` to `path` atomically. `ds` must be complete (no open sequence). */
int mp_dcmw_write_file(const char *path, const char *sop_class_uid, const char *sop_instance_uid,
                       const mp_dcmw_buf_t *ds);
/* The same bytes into a new buffer (for tests); *out freed with free(). */
int mp_dcmw_file_bytes(uint8_t **out, size_t *out_len, const char *sop_class_uid,
                       const char *sop_instance_uid, const mp_dcmw_buf_t *ds);

/* DICOM date (YYYYMMDD) and time (HHMMSS) of now, local time. */
void mp_dcmw_now(char date[9], char time[7]);

/* Plane geometry of a volume in DICOM terms (LPS). */
typedef struct {
    double lps[4][4];         /* voxel index -> LPS (mm) */
    double iop[6];            /* ImageOrientationPatient: unit +i (row) then +j (column) directions */
    double pixel_spacing[2];  /* PixelSpacing: spacing along j (between rows), along i (between columns) */
    double normal[3];         /* iop row x column */
    double slice_spacing;     /* distance between slice planes: |affine column k . normal| */
    int ascending;            /* 1: slice k's position along the normal grows with k */
} mp_dcmw_geom_t;

/* Derives the geometry; MP_ERR_ARG when the in-plane axes are degenerate or
 * not orthogonal (DICOM cannot express a sheared plane) or the slice axis lies
 * in the plane. A slice axis not along the normal (gantry tilt) is accepted
 * with a warning in the log. */
int mp_dcmw_geom_init(mp_dcmw_geom_t *g, const mp_vol_t *v);
/* ImagePositionPatient of slice k. */
void mp_dcmw_geom_ipp(const mp_dcmw_geom_t *g, int64_t k, double ipp[3]);

/* UID used by medpipe as its Implementation Class UID. */
#define MP_DCMW_IMPL_CLASS_UID "2.25.212459007564098406633559894596654986821"
#define MP_DCMW_IMPL_VERSION "MEDPIPE_0_1"
#define MP_DCMW_EXPLICIT_LE "1.2.840.10008.1.2.1"

#endif
