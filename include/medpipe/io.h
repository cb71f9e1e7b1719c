/* medpipe image I/O: format-independent reading and writing, dispatched on
 * the file name (.nii, .nii.gz, .hdr/.img[.gz]; DICOM files and folders once
 * the DICOM reader lands). */
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
    MP_FORMAT_DICOM       /* a DICOM file or folder (reading only, issue 5) */
} mp_format_t;

/* Format implied by a file name. */
mp_format_t mp_image_format_from_name(const char *path);

typedef struct {
    int nifti_version;   /* 1 (default) or 2; 1 is promoted to 2 when dims do not fit */
    int gzip_level;      /* 1..9 for .gz outputs; 0 means the default (6) */
} mp_image_write_opts_t;

void mp_image_write_opts_init(mp_image_write_opts_t *o);

/* Reads any supported image into a new volume (stored values + scl_slope/inter,
 * geometry as RAS+ affine). Errors name the file and the problem. */
int mp_image_read(mp_vol_t **out, const char *path);
/* Writes atomically (temporary file + rename); opts may be NULL. */
int mp_image_write(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts);

#ifdef __cplusplus
}
#endif
#endif
