/* Private parts of the DICOM reader shared by dicom_parse.c (parser and
 * getters), dicom_dict.c (tag dictionary), dicom_pixel.c (frame decoding),
 * dicom_series.c (series assembly) and dicom_dir.c (folders, DICOMDIR). */
#ifndef MP_IO_DICOM_PRIV_H
#define MP_IO_DICOM_PRIV_H

#include "medpipe/core.h"
#include "medpipe/dicom.h"

#define MP_DCM_ITEM MP_DICOM_TAG(0xFFFE, 0xE000)
#define MP_DCM_ITEM_END MP_DICOM_TAG(0xFFFE, 0xE00D)
#define MP_DCM_SEQ_END MP_DICOM_TAG(0xFFFE, 0xE0DD)
#define MP_DCM_PIXEL_DATA MP_DICOM_TAG(0x7FE0, 0x0010)
#define MP_DCM_UNDEFINED 0xFFFFFFFFu

#define MP_UID_IMPLICIT_LE "1.2.840.10008.1.2"
#define MP_UID_EXPLICIT_LE "1.2.840.10008.1.2.1"
#define MP_UID_EXPLICIT_BE "1.2.840.10008.1.2.2"
#define MP_UID_DEFLATED_LE "1.2.840.10008.1.2.1.99"
#define MP_UID_RLE "1.2.840.10008.1.2.5"

/* Internal parse flags (beside the public MP_DICOM_PARSE_*). */
#define MP_DCM_PARSE_QUIET (1u << 16)  /* no warnings: the file was reported before */
#define MP_DCM_PARSE_PREFIX (1u << 17) /* buffer may be a prefix: a cut header is an error */

struct mp_dicom_file {
    char *name;
    const uint8_t *data;   /* what offsets refer to */
    size_t len;
    uint8_t *owned_read;   /* buffer read by mp_dicom_file_read (free()) */
    uint8_t *owned_inflated; /* prefix + inflated data of a deflated file (free()) */
    mp_dicom_ds_t meta;
    mp_dicom_ds_t ds;
    char syntax[68];
    int guessed;
    int stopped_at_pixels;
};

/* Dictionary VR of a tag ("UN" for unknown tags; "UL" for group lengths,
 * "LO" for private creators). */
const char *mp_dicom_dict_vr(uint32_t tag);
/* 1 when the two letters are a VR of PS3.5 table 6.2-1. */
int mp_dicom_vr_known(const char vr[2]);
/* 1 for the VRs with a 2-byte reserved field and a 32-bit length in explicit VR. */
int mp_dicom_vr_long(const char vr[2]);

/* Byte access in a data set's byte order. */
static inline uint16_t mp_dcm_u16(const uint8_t *p, int big) {
    return big ? (uint16_t)((p[0] << 8) | p[1]) : (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t mp_dcm_u32(const uint8_t *p, int big) {
    return big ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
               : (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t mp_dcm_u64(const uint8_t *p, int big) {
    uint64_t a = mp_dcm_u32(p, big), b = mp_dcm_u32(p + 4, big);
    return big ? (a << 32) | b : (b << 32) | a;
}

/* Writes "(gggg,eeee) Name" into buf. */
void mp_dicom_tag_str(uint32_t tag, char *buf, size_t cap);

/* Series assembly helpers shared by dicom_series.c and dicom_dir.c. */
typedef struct {
    char **paths;
    int n, cap;
} mp_dcm_pathlist_t;

int mp_dcm_pathlist_add(mp_dcm_pathlist_t *l, const char *path);
void mp_dcm_pathlist_free(mp_dcm_pathlist_t *l);
/* Files named by `path`: the file itself, every regular file under a folder
 * (sorted, recursive), or the image files a DICOMDIR refers to. */
int mp_dcm_collect_files(mp_dcm_pathlist_t *out, const char *path);
/* Parses a file's header up to Pixel Data (MP_DICOM_PARSE_STOP_AT_PIXELS),
 * reading only the first 64 KB when the header fits in them. */
int mp_dcm_read_header(mp_dicom_file_t **out, const char *path);

#endif
