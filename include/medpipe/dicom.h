/* medpipe DICOM reading: a Part 10 parser for hostile files, typed element
 * getters, pixel data decoding (native, RLE, and the JPEG family through the
 * codec layer) and series assembly into a volume with RAS+ geometry.
 *
 * Three layers, each usable alone:
 *   1. mp_dicom_file_*   parse one file (or buffer) into a tree of elements
 *                        whose values stay in the file's buffer (nothing is
 *                        copied, pixel data included, until asked for);
 *   2. mp_dicom_pixel_* / mp_dicom_decode_frame
 *                        decode frame k of a parsed file into plain samples;
 *   3. mp_dicom_scan / mp_dicom_series_read / mp_dicom_read
 *                        find the image series under a file, a folder or a
 *                        DICOMDIR, sort and check their slices, and build
 *                        mp_vol_t volumes (x = columns, y = rows, z = slices).
 */
#ifndef MEDPIPE_DICOM_H
#define MEDPIPE_DICOM_H

#include <stddef.h>
#include <stdint.h>

#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tag as one 32-bit number: MP_DICOM_TAG(0x0028, 0x0010) is Rows. */
#define MP_DICOM_TAG(g, e) ((uint32_t)(((uint32_t)(g) << 16) | (uint32_t)(e)))
/* Nesting deeper than this (sequences inside items inside sequences...) is refused. */
#define MP_DICOM_MAX_DEPTH 64

/* ---------------------------------------------------------------- parsing */

typedef struct mp_dicom_ds mp_dicom_ds_t;

/* One fragment of encapsulated pixel data (an item of the pixel sequence). */
typedef struct {
    uint64_t offset;      /* offset of the fragment's bytes in the file buffer */
    uint32_t length;
} mp_dicom_frag_t;

/* One data element. Values are never copied: `offset`/`length` locate them
 * in the buffer that mp_dicom_file_data() returns. */
typedef struct {
    uint32_t tag;           /* (group << 16) | element */
    char vr[3];             /* from the file (explicit VR), else the dictionary, else "UN" */
    uint8_t undefined_length; /* the file gave 0xFFFFFFFF */
    uint64_t offset;        /* first value byte (for SQ: first item header) */
    uint64_t length;        /* value bytes; for undefined length, up to the delimiter */
    mp_dicom_ds_t *items;   /* sequence items (SQ, or UN/private holding a sequence) */
    uint32_t n_items;
    mp_dicom_frag_t *frags; /* encapsulated pixel data: fragments, offset table first */
    uint32_t n_frags;
} mp_dicom_elem_t;

/* A data set: the top level, the file meta group, or one sequence item. */
struct mp_dicom_ds {
    mp_dicom_elem_t *elems; /* in file order */
    uint32_t n;
    uint64_t offset;        /* first byte of the data set in the buffer */
    uint64_t length;
    uint8_t explicit_vr;
    uint8_t big_endian;
    uint8_t sorted;         /* tags strictly ascending: lookups may bisect */
    const uint8_t *base;    /* the file buffer (values are base + elem->offset) */
};

typedef struct mp_dicom_file mp_dicom_file_t;

/* Parse flags. */
enum {
    MP_DICOM_PARSE_STOP_AT_PIXELS = 1  /* stop after the top-level Pixel Data header
                                          (its fragments are not walked): for scans */
};

/* Reads and parses a whole file. Errors name the file and the byte offset. */
int mp_dicom_file_read(mp_dicom_file_t **out, const char *path, unsigned flags);
/* Parses a buffer. The buffer is borrowed: it must outlive the result (a
 * deflated file gets its own inflated copy). `name` is used in messages.
 * This is the fuzzing entry point. */
int mp_dicom_file_parse(mp_dicom_file_t **out, const uint8_t *data, size_t len, const char *name,
                        unsigned flags);
void mp_dicom_file_free(mp_dicom_file_t *f);

/* The main data set and the file meta group (an empty data set when the file
 * had none). */
const mp_dicom_ds_t *mp_dicom_file_dataset(const mp_dicom_file_t *f);
const mp_dicom_ds_t *mp_dicom_file_meta(const mp_dicom_file_t *f);
/* Transfer syntax UID actually used to parse the data set (guessed ones too). */
const char *mp_dicom_file_syntax(const mp_dicom_file_t *f);
/* The name given at parse time (the path for mp_dicom_file_read). */
const char *mp_dicom_file_name(const mp_dicom_file_t *f);
/* Buffer that element offsets refer to, and its size. */
const uint8_t *mp_dicom_file_data(const mp_dicom_file_t *f, size_t *len);
/* 1 when the file had no preamble/meta group and the encoding was guessed. */
int mp_dicom_file_guessed(const mp_dicom_file_t *f);

/* ---------------------------------------------------------------- getters
 * All getters return the number of values they produced (0: element absent
 * or empty) or a negative status when the value is malformed (message names
 * the tag). Strings lose trailing spaces and NULs (and leading spaces). */

/* Element with this tag in ds (not in nested items), or NULL. */
const mp_dicom_elem_t *mp_dicom_find(const mp_dicom_ds_t *ds, uint32_t tag);
/* Whole string value (all values, backslashes kept), truncated to cap-1 bytes;
 * returns its length (0 when absent). */
int mp_dicom_get_str(const mp_dicom_ds_t *ds, uint32_t tag, char *buf, size_t cap);
/* Up to `max` numbers from DS/IS (text, backslash-separated) or
 * US/SS/UL/SL/FL/FD/SV/UV (binary, in the data set's byte order). */
int mp_dicom_get_f64s(const mp_dicom_ds_t *ds, uint32_t tag, double *out, int max);
/* First number; 0 when absent. */
int mp_dicom_get_f64(const mp_dicom_ds_t *ds, uint32_t tag, double *out);
/* First number as an integer (must be integral and fit an int64). */
int mp_dicom_get_i64(const mp_dicom_ds_t *ds, uint32_t tag, int64_t *out);
/* Item i of sequence `tag`, or NULL. */
const mp_dicom_ds_t *mp_dicom_get_item(const mp_dicom_ds_t *ds, uint32_t tag, uint32_t i);
/* Dictionary name of a tag ("Rows"), or NULL for tags medpipe does not know. */
const char *mp_dicom_tag_name(uint32_t tag);

/* ---------------------------------------------------------------- pixels */

typedef struct {
    int rows, cols;
    int frames;            /* NumberOfFrames (1 when absent) */
    int samples;           /* SamplesPerPixel: 1 or 3 */
    int bits_allocated;    /* 1, 8, 16 or 32 */
    int bits_stored;
    int high_bit;
    int is_signed;         /* PixelRepresentation */
    int planar;            /* PlanarConfiguration in the file */
    char photometric[20];  /* e.g. "MONOCHROME2", "YBR_FULL_422" */
    char syntax[68];       /* transfer syntax UID */
    int encapsulated;      /* compressed (fragments) */
    int sample_bytes;      /* bytes per decoded sample: 1, 2 or 4 (1-bit -> 1) */
} mp_dicom_pixel_info_t;

/* Decode flags. */
enum {
    MP_DICOM_FRAME_RGB = 1,          /* YBR_FULL / YBR_FULL_422 -> RGB */
    MP_DICOM_FRAME_INVERT_MONO1 = 2  /* MONOCHROME1 -> MONOCHROME2 by inverting over BitsStored */
};

/* Image pixel description of the main data set; MP_ERR_FORMAT when a
 * required element is missing or inconsistent, MP_ERR_UNSUPPORTED for
 * valid parameters medpipe does not handle. */
int mp_dicom_pixel_info(const mp_dicom_file_t *f, mp_dicom_pixel_info_t *pi);
/* Bytes of one decoded frame: rows*cols*samples*sample_bytes. */
size_t mp_dicom_frame_bytes(const mp_dicom_pixel_info_t *pi);
/* Decodes frame k (0-based) into out (exactly mp_dicom_frame_bytes bytes):
 * samples interleaved (R,G,B,R,...), each an 8/16/32-bit integer in host
 * byte order, signed when is_signed, masked to BitsStored with sign extension;
 * 1-bit pixels become 0/1 bytes; YBR_FULL_422 is upsampled to one Cb/Cr per
 * pixel. Without flags the values are those of the file (what pydicom's
 * pixel_array gives, after BitsStored masking). */
int mp_dicom_decode_frame(const mp_dicom_file_t *f, const mp_dicom_pixel_info_t *pi, int frame, void *out,
                          size_t out_len, unsigned flags);

/* ---------------------------------------------------------------- series */

/* Series flags (also reported with mp_log warnings during the scan). */
enum {
    MP_DICOM_SERIES_MISSING = 1u << 0,      /* gaps of whole slices: filled (see series_read) */
    MP_DICOM_SERIES_NONUNIFORM = 1u << 1,   /* spacing varies beyond tolerance: mean spacing used */
    MP_DICOM_SERIES_TILT = 1u << 2,         /* slices step off the normal (gantry tilt): sheared affine */
    MP_DICOM_SERIES_DUPLICATES = 1u << 3,   /* several slices at one position: the first (lowest
                                               instance number) kept */
    MP_DICOM_SERIES_SPLIT = 1u << 4,        /* one part of a SeriesInstanceUID that mixed
                                               orientations, sizes or acquisitions */
    MP_DICOM_SERIES_NO_GEOMETRY = 1u << 5,  /* no ImagePositionPatient/Orientation: unit axes */
    MP_DICOM_SERIES_MULTIFRAME = 1u << 6,   /* frames of multi-frame file(s) */
    MP_DICOM_SERIES_RESCALE_VARIES = 1u << 7 /* slope/intercept differ per slice: read as float32 */
};

/* One 2D image of a series: a single-frame file or one frame of a multi-frame file. */
typedef struct {
    char *path;
    int frame;              /* 0-based frame number in the file */
    int64_t instance;       /* InstanceNumber (0 when absent) */
    char sop_uid[68];       /* SOPInstanceUID of the file */
    double ipp[3];          /* ImagePositionPatient (LPS, mm) */
    double iop[6];          /* ImageOrientationPatient: row then column direction cosines */
    double pixel_spacing[2];/* between rows, between columns (mm) */
    double slope, inter;    /* rescale (1, 0 when absent) */
    double proj;            /* ipp projected on the slice normal (row x column) */
    int64_t acquisition;    /* AcquisitionNumber (or -1) */
    int64_t echo;           /* EchoNumbers (or -1) */
    int64_t temporal;       /* TemporalPositionIdentifier / TemporalPositionIndex (or -1) */
    int has_geometry;
} mp_dicom_slice_t;

typedef struct {
    char series_uid[68], study_uid[68], frame_of_ref_uid[68], patient_id[68];
    char modality[20], description[68];
    int64_t series_number;  /* -1 when absent */
    int part;               /* 0, or 1.. for the parts of a split series */
    int rows, cols, samples, bits_allocated, bits_stored, is_signed;
    char photometric[20];
    char syntax[68];
    unsigned flags;         /* MP_DICOM_SERIES_* */
    int count;              /* slices (after duplicates were dropped) */
    mp_dicom_slice_t *slices; /* in volume order: ascending projection on the normal */
    int nz;                 /* slices of the volume (count + filled gaps) */
    int *z_of_slice;        /* z index of each slice in the volume */
    double slice_spacing;   /* median step along the normal (mm) */
    double affine[4][4];    /* voxel -> RAS+ world */
} mp_dicom_series_t;

typedef struct {
    mp_dicom_series_t *series;
    int n;
    int files_seen;         /* files looked at */
    int files_skipped;      /* not DICOM, no pixels, or broken (each logged) */
} mp_dicom_series_list_t;

/* Finds the image series under `path`: a DICOM file, a folder (searched
 * recursively, symbolic links to folders not followed) or a DICOMDIR.
 * Non-DICOM files and DICOM files without pixel data are skipped (debug log),
 * broken ones are skipped with a warning. MP_ERR_FORMAT when no image is found. */
int mp_dicom_scan(mp_dicom_series_list_t **out, const char *path);
void mp_dicom_series_list_free(mp_dicom_series_list_t *list);
/* One line describing a series: "number 'description' modality RxCxN uid". */
void mp_dicom_series_describe(const mp_dicom_series_t *s, char *buf, size_t cap);

/* Reads a series into a volume: x = columns, y = rows, z = slices in
 * series order, c = samples (RGB). Integer storage for the bits allocated
 * (1 -> u8) with scl_slope/scl_inter when every slice shares them; float32
 * real values when they differ. MONOCHROME1 is inverted over BitsStored,
 * YBR converted to RGB, PALETTE COLOR refused. Missing slices are filled with
 * the volume's minimum stored value so that every slice sits at its DICOM
 * position. */
int mp_dicom_series_read(mp_vol_t **out, const mp_dicom_series_t *s);
/* Scan + read when `path` holds exactly one series; otherwise
 * MP_ERR_MISMATCH with the series listed in the message. */
int mp_dicom_read(mp_vol_t **out, const char *path);

#ifdef __cplusplus
}
#endif
#endif
