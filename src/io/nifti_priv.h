/* Internals shared by the NIfTI reader and writer (private to src/io). */
#ifndef MP_IO_NIFTI_PRIV_H
#define MP_IO_NIFTI_PRIV_H

#include "medpipe/nifti.h"

/* NIfTI-1 header + extension flag; NIfTI-2 header + extension flag. */
#define MP_NIFTI1_HDR 348
#define MP_NIFTI2_HDR 540
#define MP_NIFTI1_OFFSET 352
#define MP_NIFTI2_OFFSET 544

/* How the data of a header is laid out in the file and in the volume. */
typedef struct {
    mp_dtype_t dtype;  /* element type in the volume */
    int ncomp;         /* 3 for RGB24, 4 for RGBA32 (interleaved on disk), else 1 */
    size_t elem;       /* bytes of one stored element (one component) */
    int64_t dim[4];    /* volume dims; dim[3] = channels (ncomp for RGB) */
    uint64_t nbytes;   /* data bytes in the file */
    uint64_t offset;   /* where the data starts in the data file */
} mp_nifti_layout_t;

/* Checks datatype, dims, memory limit and vox_offset; fills the layout.
 * single_file: the data follows the header in the same stream. */
int mp_nifti_layout(mp_nifti_layout_t *L, const mp_nifti_header_t *h, const char *name, int single_file);

/* Encodes a header (host values) in little-endian; buf must hold 352 bytes
 * (version 1) or 544 (version 2); the 4 bytes after the header are the
 * extension flag (zero). */
void mp_nifti_encode_header(uint8_t *buf, const mp_nifti_header_t *h);

/* Header for writing `v` (version 1 or 2, single file or pair). */
int mp_nifti_header_from_vol(mp_nifti_header_t *h, const mp_vol_t *v, int version, int single_file);

int mp_nifti_host_big_endian(void);

#endif
