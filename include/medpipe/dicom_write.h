/* medpipe DICOM writing: UIDs, image series (CT or MR Image Storage, one
 * file per slice) and DICOM Segmentation objects (binary SEG) that reference
 * a source series. Everything is uncompressed explicit VR little endian, each
 * file written atomically.
 *
 * Geometry: medpipe volumes are RAS+ (vol.h); DICOM patient coordinates are
 * LPS+, so x and y are negated on the way out. Voxel (i, j, k) becomes column
 * i, row j of slice k: ImageOrientationPatient is (direction of +i, direction
 * of +j), PixelSpacing is (spacing along j, spacing along i), and
 * ImagePositionPatient of slice k is the affine applied to (0, 0, k). */
#ifndef MEDPIPE_DICOM_WRITE_H
#define MEDPIPE_DICOM_WRITE_H

#include "medpipe/core.h"
#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- UIDs ---- */
#define MP_DICOM_UID_SIZE 65 /* 64 characters + NUL */

/* A new UID "2.25.<decimal of a random version-4 UUID>" (at most 44 chars),
 * random bits from getrandom or /dev/urandom. MP_ERR_IO if neither works. */
int mp_dicom_uid_generate(char out[MP_DICOM_UID_SIZE]);
/* The same form with the 128 bits drawn from `rng`: reproducible UIDs for
 * tests. Different seeds/streams give different UIDs. */
void mp_dicom_uid_from_rng(char out[MP_DICOM_UID_SIZE], mp_rng_t *rng);
/* mp_dicom_uid_from_rng when rng != NULL, else mp_dicom_uid_generate. */
int mp_dicom_uid_make(char out[MP_DICOM_UID_SIZE], mp_rng_t *rng);
/* 1 if `uid` is a syntactically valid UID (digits and dots, <= 64 chars,
 * no empty component, no leading zero), else 0. */
int mp_dicom_uid_is_valid(const char *uid);

/* A coded concept: CodeValue, CodingSchemeDesignator ("SCT", "DCM", ...),
 * CodeMeaning. */
typedef struct {
    const char *value;
    const char *scheme;
    const char *meaning;
} mp_dicom_code_t;

/* ---- source series description (what a derived object refers to) ----
 * Filled by mp_dicom_write_series for the series it wrote, or by the DICOM
 * reader for a series it read. Text fields hold DICOM values as they are in
 * the files (PN with '^', DA YYYYMMDD, TM HHMMSS[.F]); "" when absent. */
#define MP_DICOM_TEXT_SIZE 260
typedef struct {
    char patient_name[MP_DICOM_TEXT_SIZE];
    char patient_id[MP_DICOM_TEXT_SIZE];
    char patient_birth_date[9];
    char patient_sex[17];
    char study_uid[MP_DICOM_UID_SIZE];
    char study_date[9];
    char study_time[17];
    char study_id[MP_DICOM_TEXT_SIZE];
    char accession_number[MP_DICOM_TEXT_SIZE];
    char referring_physician[MP_DICOM_TEXT_SIZE];
    char study_description[MP_DICOM_TEXT_SIZE];
    char frame_of_reference_uid[MP_DICOM_UID_SIZE];
    char series_uid[MP_DICOM_UID_SIZE];
    int rows, cols;                         /* 0 = unknown (not checked) */
    int64_t nslices;                        /* slices, in the label volume's z order */
    char (*sop_class_uid)[MP_DICOM_UID_SIZE];    /* [nslices] */
    char (*sop_instance_uid)[MP_DICOM_UID_SIZE]; /* [nslices] */
    double (*position)[3];                  /* [nslices] ImagePositionPatient (LPS, mm) */
    int has_positions;                      /* 1: the SEG writer checks the label grid against them */
} mp_dicom_source_t;

/* Zeroes `s` and allocates the per-slice arrays for nslices (>= 1). */
int mp_dicom_source_init(mp_dicom_source_t *s, int64_t nslices);
/* Frees the per-slice arrays; safe on a zeroed struct. */
void mp_dicom_source_deinit(mp_dicom_source_t *s);

/* ---- image series writer ---- */
typedef struct {
    const char *modality;            /* "CT" (default, CT Image Storage) or "MR" (MR Image Storage) */
    const char *patient_name;        /* PN, e.g. "Doe^Jane"; default "Anonymous^" */
    const char *patient_id;          /* default "MEDPIPE" */
    const char *patient_birth_date;  /* YYYYMMDD or NULL (empty) */
    const char *patient_sex;         /* "M", "F", "O" or NULL (empty) */
    const char *study_uid;           /* NULL: generated */
    const char *series_uid;          /* NULL: generated */
    const char *frame_of_reference_uid; /* NULL: generated */
    const char *study_date;          /* YYYYMMDD; NULL: today */
    const char *study_time;          /* HHMMSS; NULL: now */
    const char *study_id;            /* default "1" */
    const char *accession_number;    /* default empty */
    const char *study_description;   /* default empty */
    const char *series_description;  /* default "medpipe" */
    const char *referring_physician; /* default empty */
    int series_number;               /* default 1 */
    const char *manufacturer;        /* default "medpipe" */
    const char *file_prefix;         /* files <prefix>00001.dcm, ...; default "IM" */
    int has_window;                  /* 1: write WindowCenter/WindowWidth below */
    double window_center, window_width;
    mp_rng_t *uid_rng;               /* non-NULL: UIDs drawn from it (reproducible output) */
} mp_dicom_write_opts_t;

void mp_dicom_write_opts_init(mp_dicom_write_opts_t *o);

/* What the series writer did with the values. */
typedef struct {
    double slope, intercept;  /* RescaleSlope / RescaleIntercept written */
    int pixel_signed;         /* PixelRepresentation: 1 int16, 0 uint16 */
    int exact;                /* 1: every real value is reproduced exactly */
    double max_abs_error;     /* largest |stored*slope+intercept - real value| */
    int64_t files;
} mp_dicom_write_info_t;

/* Writes `vol` (one channel, any integer or float type) as a folder of
 * single-frame images, one per z index, named <prefix>NNNNN.dcm with
 * InstanceNumber k+1 for slice k (written by up to 4 threads; the bytes do
 * not depend on it). Pixel values: integer volumes whose stored values fit
 * int16 (uint16; unsigned types prefer uint16) are written as they are, with the volume's
 * scl_slope/scl_inter as RescaleSlope/Intercept (1 and 0 normally, so CT
 * values in HU stay exact); wider integer ranges of at most 65536 values get
 * an integer intercept; float volumes holding integers are written exactly;
 * other float volumes are quantized to int16 over their range and the error
 * is reported in *info. The in-plane axes must be orthogonal. `dir` is created
 * if needed. info and source may be NULL; `source` (initialised here, free
 * with mp_dicom_source_deinit) describes the written series for a SEG. */
int mp_dicom_write_series(const char *dir, const mp_vol_t *vol, const mp_dicom_write_opts_t *opts,
                          mp_dicom_write_info_t *info, mp_dicom_source_t *source);

/* ---- DICOM Segmentation (binary) writer ---- */
typedef struct {
    int label;               /* voxel value of this segment in the label volume (>= 1) */
    const char *name;        /* SegmentLabel; NULL: "Segment <label>" */
    const char *description; /* SegmentDescription; NULL: none */
    mp_dicom_code_t category;/* value NULL: SCT 123037004 "Anatomical Structure" */
    mp_dicom_code_t type;    /* value NULL: SCT 85756007 "Tissue" */
    int has_color;           /* 1: rgb below (sRGB) becomes RecommendedDisplayCIELabValue */
    uint8_t rgb[3];          /* otherwise a fixed palette colour by segment number */
} mp_dicom_segment_t;

typedef struct {
    const mp_dicom_segment_t *segments; /* segment i gets SegmentNumber i+1 */
    int nsegments;                      /* 0: one segment per distinct label > 0, default names/codes */
    const char *algorithm_type;         /* "AUTOMATIC" (default), "SEMIAUTOMATIC" or "MANUAL" */
    const char *algorithm_name;         /* default "medpipe" (ignored for MANUAL) */
    const char *content_label;          /* CS: upper case, <= 16; default "SEGMENTATION" */
    const char *content_description;    /* default "medpipe segmentation" */
    const char *content_creator;        /* PN; default empty */
    const char *series_description;     /* default "Segmentation" */
    int series_number;                  /* default 300 */
    const char *series_uid;             /* NULL: generated */
    const char *sop_instance_uid;       /* NULL: generated */
    const char *content_date;           /* YYYYMMDD; NULL: today */
    const char *content_time;           /* HHMMSS; NULL: now */
    const char *manufacturer;           /* default "medpipe" */
    const char *model_name;             /* default "medpipe" */
    const char *device_serial;          /* default "0" */
    const char *software_versions;      /* default the library version */
    int include_empty_frames;           /* 0 (default): a frame only where its segment has voxels */
    mp_rng_t *uid_rng;                  /* non-NULL: UIDs drawn from it */
} mp_dicom_seg_opts_t;

void mp_dicom_seg_opts_init(mp_dicom_seg_opts_t *o);

typedef struct {
    int segments;
    int64_t frames;
    int64_t ignored_voxels; /* non-zero voxels whose label no segment lists */
} mp_dicom_seg_info_t;

/* Writes `labels` (one channel, integer values; same grid as the source
 * series: nx = columns, ny = rows, nz = source->nslices) as one binary
 * Segmentation Storage file at `path`. Frames are ordered by segment, then by
 * slice; each references its source slice (DerivationImageSequence) and
 * carries its ImagePositionPatient from the label volume's affine. Patient,
 * study and Frame of Reference come from `source`. info may be NULL. */
int mp_dicom_write_seg(const char *path, const mp_vol_t *labels, const mp_dicom_source_t *source,
                       const mp_dicom_seg_opts_t *opts, mp_dicom_seg_info_t *info);

#ifdef __cplusplus
}
#endif
#endif
