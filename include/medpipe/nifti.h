/* medpipe NIfTI-1/2 and Analyze 7.5 I/O: .nii, .nii.gz, .hdr/.img pairs
 * (either of them optionally gzipped), either byte order.
 *
 * Reading follows the NIfTI standard and, where the standard leaves room,
 * nibabel (so `img.affine` and the scaled data agree with nibabel):
 *   - affine: sform when sform_code != 0, else the qform quaternion when
 *     qform_code != 0, else nibabel's pixdim-only affine (x flipped, origin at
 *     the image centre); Analyze 7.5 files get SPM2's convention (x flipped,
 *     origin from the `originator` field when it is plausible, else centred);
 *   - pixdim[1..3] of 0 count as 1 and negative ones as their absolute value;
 *     qfac (pixdim[0]) other than -1 counts as 1; xform codes outside 0..5
 *     count as 0;
 *   - scl_slope 0 or non-finite means no scaling (vol->scl_slope = 1, inter 0);
 *     Analyze files use SPM2's scale factor (funused1, then the gl/cal fields).
 * dim[4] > 1 becomes the channel axis; RGB24 / RGBA32 become 3 / 4 channels
 * of u8. Complex, float128 and binary data, and dims beyond the 4th with size
 * > 1, are refused with MP_ERR_UNSUPPORTED.
 *
 * Writing: NIfTI-1 little-endian (NIfTI-2 when asked, when a dim exceeds
 * 32767, or when scl_slope/scl_inter would not survive float32 storage);
 * sform = vol->affine with meta.sform_code; qform = the rigid part of the
 * affine (nearest rotation by polar decomposition, so an affine with shear
 * keeps it only in the sform) with meta.qform_code; pixdim = column norms of
 * the affine. A volume with channels is written as 4D (dim[4] = channels).
 * Output is atomic (temporary file + rename); for a pair the .img is renamed
 * into place before the .hdr. */
#ifndef MEDPIPE_NIFTI_H
#define MEDPIPE_NIFTI_H

#include "medpipe/io.h"
#include "medpipe/vol.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every field of a NIfTI-1, NIfTI-2 or Analyze 7.5 header, widened to the
 * NIfTI-2 types and in host byte order. Values are as stored (before the
 * fixes listed above), except where noted. */
typedef struct {
    int version;          /* 1 or 2 for NIfTI, 0 for Analyze 7.5 */
    int swapped;          /* stored in the byte order opposite to the host's */
    int big_endian;       /* stored big-endian */
    int single_file;      /* magic "n+1"/"n+2": data follows the header in one file */
    int sizeof_hdr;       /* 348 or 540 */
    char magic[5];        /* "n+1", "ni1", "n+2", "ni2" or "" (Analyze) */
    int64_t dim[8];
    double pixdim[8];
    int datatype, bitpix;
    double vox_offset;    /* float in NIfTI-1/Analyze, integer in NIfTI-2 */
    double scl_slope, scl_inter;
    double cal_min, cal_max;
    int64_t glmax, glmin; /* Analyze only */
    int16_t origin[3];    /* Analyze (SPM) originator, 1-based voxel */
    int qform_code, sform_code;
    double quatern[3];    /* b, c, d */
    double qoffset[3];
    double srow[3][4];
    int intent_code;
    double intent_p[3];
    char intent_name[17];
    char descrip[81];
    char aux_file[25];
    int xyzt_units;
    double toffset;
    double slice_duration;
    int64_t slice_start, slice_end;
    int slice_code;
    int dim_info;
    int has_extensions;   /* single file: the extension flag after the header */
} mp_nifti_header_t;

/* Reads a .nii, .nii.gz, .hdr/.img (.img.gz, .hdr.gz) image. The compression
 * is detected from the content, not the name. hdr (may be NULL) receives the
 * parsed header. */
int mp_nifti_read(mp_vol_t **out, const char *path, mp_nifti_header_t *hdr);

/* Reads a single-file NIfTI image held in memory (is_gz: data is gzip).
 * `name` is used in error messages only. For fuzzing and embedded data. */
int mp_nifti_read_mem(mp_vol_t **out, const char *name, const uint8_t *data, size_t len, int is_gz,
                      mp_nifti_header_t *hdr);

/* Reads the header only (decompressing just its first bytes for .gz files). */
int mp_nifti_read_header(mp_nifti_header_t *hdr, const char *path);

/* Parses a header from the first `len` bytes of a file (len >= 348 for
 * NIfTI-1/Analyze, 540 for NIfTI-2); `name` appears in messages. Checks the
 * fields needed to read the data (sizeof_hdr, magic, dim, datatype). */
int mp_nifti_parse_header(mp_nifti_header_t *hdr, const char *name, const uint8_t *buf, size_t len);

/* Fills the geometry, scaling and meta of `v` (dims must already match) from
 * a parsed header, using the rules at the top of this file. */
int mp_nifti_header_to_vol(mp_vol_t *v, const mp_nifti_header_t *hdr, const char *name);

/* Writes `v` as .nii, .nii.gz or .hdr/.img (gzipped pair when the name ends
 * in .gz). opts may be NULL. */
int mp_nifti_write(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts);

/* Encodes `v` into an in-memory single-file image (header + data, optional
 * gzip) as mp_nifti_write would write it; *data is freed with free(). */
int mp_nifti_write_mem(uint8_t **data, size_t *len, const mp_vol_t *v, const mp_image_write_opts_t *opts,
                       int gz);

/* NIfTI name of a datatype code ("int16", "RGB24", "complex64", ...); "unknown"
 * for codes outside the standard. */
const char *mp_nifti_datatype_name(int code);
/* NIfTI datatype code of a medpipe dtype. */
int mp_nifti_datatype_code(mp_dtype_t t);
/* Name of an xform code ("unknown", "scanner", "aligned", "talairach", "mni",
 * "template"); "invalid" otherwise. */
const char *mp_nifti_xform_name(int code);

/* The qform of a header as a 4x4 matrix (quaternion, pixdim, qfac, offsets),
 * following the standard; MP_ERR_FORMAT if b,c,d are not part of a unit
 * quaternion. */
int mp_nifti_quatern_to_mat(double m[4][4], const double quatern[3], const double qoffset[3],
                            const double pixdim[3], double qfac, int precision_bits);
/* Decomposes an affine into quaternion b,c,d, offsets, pixdim (column norms)
 * and qfac; the rotation is the nearest proper rotation to the normalised
 * 3x3 part (polar decomposition), so shear is dropped. */
void mp_nifti_mat_to_quatern(const double m[4][4], double quatern[3], double qoffset[3], double pixdim[3],
                             double *qfac);

#ifdef __cplusplus
}
#endif
#endif
