/* medpipe image I/O: format-independent reading and writing, dispatched on
 * the file name (.nii, .nii.gz, .hdr/.img[.gz]; DICOM files, folders and
 * DICOMDIRs for reading), and on the content when the name says nothing. */
#ifndef MEDPIPE_IO_H
#define MEDPIPE_IO_H

#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MP_FORMAT_UNKNOWN = 0,
    MP_FORMAT_NIFTI,      /* .nii */
    MP_FORMAT_NIFTI_GZ,   /* .nii.gz */
    MP_FORMAT_ANALYZE,    /* .hdr/.img pair (NIfTI-1 "ni1" or Analyze 7.5), also .img.gz */
    MP_FORMAT_DICOM       /* a DICOM file, folder or DICOMDIR (reading only) */
} mp_format_t;

/* Format implied by a file name: .nii, .nii.gz, .hdr/.img[.gz], .dcm/.dicom,
 * a file named DICOMDIR, or an existing folder (DICOM). */
mp_format_t mp_image_format_from_name(const char *path);
/* Format of an existing file: the name first, else the content ("DICM" at
 * offset 128, a DICOM data set without preamble, gzip or a NIfTI header
 * size); MP_FORMAT_UNKNOWN when neither tells. */
mp_format_t mp_image_format_detect(const char *path);

typedef struct {
    int nifti_version;   /* 1 (default) or 2; 1 is promoted to 2 when dims do not fit */
    int gzip_level;      /* 1..9 for .gz outputs; 0 means the default (6) */
} mp_image_write_opts_t;

void mp_image_write_opts_init(mp_image_write_opts_t *o);

/* Reads any supported image into a new volume (stored values + scl_slope/inter,
 * geometry as RAS+ affine). DICOM (mp_image_format_detect) goes through
 * mp_dicom_read: a file, folder or DICOMDIR holding exactly one series
 * (several: MP_ERR_MISMATCH listing them). Anything else unknown is tried as
 * NIfTI, whose header check says what is wrong. Errors name the file. */
int mp_image_read(mp_vol_t **out, const char *path);
/* Writes atomically (temporary file + rename); opts may be NULL. */
int mp_image_write(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts);

#ifdef __cplusplus
}
#endif
#endif
