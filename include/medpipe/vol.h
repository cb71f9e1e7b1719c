/* medpipe volumes: the image type every module passes around.
 *
 * Memory layout: x fastest, then y, then z, then channel, i.e. voxel (x, y, z, c)
 * lives at index x + nx*(y + ny*(z + nz*c)). Read as a C array this is
 * (C, D, H, W) with D=z, H=y, W=x, which is how the neural-network code sees it.
 *
 * Geometry: `affine` maps voxel indices (i, j, k, 1) to world millimetres in the
 * NIfTI RAS+ convention: +x points to the patient's Right, +y Anterior, +z
 * Superior (DICOM's LPS+ is the same space with x and y negated).
 */
#ifndef MEDPIPE_VOL_H
#define MEDPIPE_VOL_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MP_DTYPE_U8 = 0,
    MP_DTYPE_I8,
    MP_DTYPE_U16,
    MP_DTYPE_I16,
    MP_DTYPE_U32,
    MP_DTYPE_I32,
    MP_DTYPE_U64,
    MP_DTYPE_I64,
    MP_DTYPE_F32,
    MP_DTYPE_F64,
    MP_DTYPE_COUNT
} mp_dtype_t;

size_t mp_dtype_size(mp_dtype_t t);
const char *mp_dtype_name(mp_dtype_t t);           /* "u8", "i16", "f32", ... */
int mp_dtype_parse(const char *name, mp_dtype_t *t); /* accepts "u8"/"uint8"/"int16"/"float32"/... */
int mp_dtype_is_float(mp_dtype_t t);
/* Smallest and largest representable value (for clamping conversions). */
double mp_dtype_min(mp_dtype_t t);
double mp_dtype_max(mp_dtype_t t);

/* Header fields with no meaning for computation, kept so a read-then-write
 * round trip preserves them. New volumes get defaults from mp_vol_meta_init. */
typedef struct {
    int qform_code;     /* NIfTI xform codes: 0 unknown, 1 scanner, 2 aligned, ... */
    int sform_code;
    int intent_code;
    float intent_p[3];
    char intent_name[17];
    char descrip[81];
    char aux_file[25];
    int xyzt_units;     /* NIfTI units byte; default mm + s (10) */
    double toffset;
    double cal_min, cal_max;
    double pixdim_t;    /* time step of 4D series (pixdim[4]) */
    int slice_code, slice_start, slice_end;
    double slice_duration;
    int dim_info;
} mp_vol_meta_t;

void mp_vol_meta_init(mp_vol_meta_t *m);

typedef struct {
    int64_t dim[4];       /* nx, ny, nz, nc (nc = 1 for a 3D volume) */
    double spacing[3];    /* voxel size in mm along x, y, z (column norms of affine) */
    double affine[4][4];  /* voxel index -> RAS+ world (mm) */
    mp_dtype_t dtype;
    double scl_slope;     /* real value = stored * scl_slope + scl_inter; 1 and 0 = identity */
    double scl_inter;
    mp_vol_meta_t meta;
    void *data;           /* (C, D, H, W), x fastest */
    int owns_data;        /* 0 for views: mp_vol_free leaves data alone */
} mp_vol_t;

/* Allocates a zeroed volume, identity affine scaled by unit spacing, 64-byte
 * aligned data. nc < 1 is taken as 1. Refuses sizes over mp_mem_limit(). */
int mp_vol_create(mp_vol_t **out, const int64_t dim[4], mp_dtype_t dtype);
/* Same dims/geometry/meta as `like`, new data of `dtype` (zeroed). */
int mp_vol_create_like(mp_vol_t **out, const mp_vol_t *like, mp_dtype_t dtype);
/* A view over caller-owned data (never freed by mp_vol_free). */
int mp_vol_create_view(mp_vol_t **out, const int64_t dim[4], mp_dtype_t dtype, void *data);
void mp_vol_free(mp_vol_t *v);
/* Deep copy. */
int mp_vol_clone(mp_vol_t **out, const mp_vol_t *src);

int64_t mp_vol_voxels(const mp_vol_t *v);   /* nx*ny*nz (one channel) */
int64_t mp_vol_elems(const mp_vol_t *v);    /* nx*ny*nz*nc */
size_t mp_vol_bytes(const mp_vol_t *v);

/* Element access as double (stored value, no scaling). i is a flat index. */
double mp_vol_get(const mp_vol_t *v, int64_t i);
void mp_vol_set(mp_vol_t *v, int64_t i, double value); /* rounds and clamps for integers */

/* Sets the affine and recomputes `spacing` from its column norms. */
void mp_vol_set_affine(mp_vol_t *v, const double affine[4][4]);
/* Sets an axis-aligned affine: diag(spacing) with `origin` in the last column. */
void mp_vol_set_spacing(mp_vol_t *v, const double spacing[3], const double origin[3]);

/* Converts to `dtype`. apply_scaling: real values (stored*slope+inter) are
 * converted and the result has slope 1, inter 0; otherwise stored values are
 * converted and slope/inter are copied. Integer targets round half away from
 * zero and clamp; *clamped (may be NULL) receives the number of clamped values. */
int mp_vol_convert(mp_vol_t **out, const mp_vol_t *src, mp_dtype_t dtype, int apply_scaling,
                   int64_t *clamped);
/* Real-valued float32 copy of channel c (scaling applied): the usual input to
 * preprocessing. */
int mp_vol_to_f32(mp_vol_t **out, const mp_vol_t *src);

/* Min/max/mean of real values (scaling applied) over all channels. NaNs skipped. */
int mp_vol_stats(const mp_vol_t *v, double *min, double *max, double *mean);

/* Orientation code of the affine, e.g. "RAS" or "LPS": for each voxel axis the
 * world direction it points to most. out must hold 4 chars. */
void mp_vol_orientation(const double affine[4][4], char out[4]);

/* 4x4 helpers (row-major). */
void mp_mat4_mul(double out[4][4], const double a[4][4], const double b[4][4]);
int mp_mat4_inv(double out[4][4], const double m[4][4]); /* MP_ERR_ARG if singular */
void mp_mat4_identity(double m[4][4]);

#ifdef __cplusplus
}
#endif
#endif
