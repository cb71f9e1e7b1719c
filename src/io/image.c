/* Format-independent image I/O (include/medpipe/io.h): picks the reader or
 * writer from the file name, and for reading from the content when the name
 * says nothing (Siemens .IMA, extension-less PACS exports). NIfTI readers
 * also sniff the content, so a gzipped file named .nii (or the reverse)
 * still reads. DICOM files, folders and DICOMDIRs go to mp_dicom_read,
 * which wants exactly one series. */
#include "medpipe/core.h"
#include "medpipe/dicom.h"
#include "medpipe/io.h"
#include "medpipe/nifti.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

mp_format_t mp_image_format_from_name(const char *path) {
    if (!path) return MP_FORMAT_UNKNOWN;
    if (mp_path_has_suffix(path, ".nii.gz")) return MP_FORMAT_NIFTI_GZ;
    if (mp_path_has_suffix(path, ".nii")) return MP_FORMAT_NIFTI;
    if (mp_path_has_suffix(path, ".hdr") || mp_path_has_suffix(path, ".img") || mp_path_has_suffix(path, ".hdr.gz") || mp_path_has_suffix(path, ".img.gz"))
        return MP_FORMAT_ANALYZE;
    if (mp_path_has_suffix(path, ".dcm") || mp_path_has_suffix(path, ".dicom")) return MP_FORMAT_DICOM;
    const char *base = strrchr(path, '/');
    if (strcasecmp(base ? base + 1 : path, "DICOMDIR") == 0) return MP_FORMAT_DICOM;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return MP_FORMAT_DICOM;
    return MP_FORMAT_UNKNOWN;
}

void mp_image_write_opts_init(mp_image_write_opts_t *o) {
    o->nifti_version = 1;
    o->gzip_level = 6;
}

/* A little-endian tag of group 0002 or 0008 first: a DICOM data set without
 * the preamble (as old or hand-made files are), in either VR encoding. */
static int looks_bare_dicom(const uint8_t *b, size_t n) {
    if (n < 8) return 0;
    uint16_t group = (uint16_t)(b[0] | (b[1] << 8));
    if (group != 0x0002 && group != 0x0008) return 0;
    int explicit_vr = isupper(b[4]) && isupper(b[5]);
    uint32_t len = explicit_vr ? (uint32_t)(b[6] | (b[7] << 8))
                               : (uint32_t)b[4] | ((uint32_t)b[5] << 8) | ((uint32_t)b[6] << 16) | ((uint32_t)b[7] << 24);
    return len < (1u << 20);
}

mp_format_t mp_image_format_detect(const char *path) {
    mp_format_t f = mp_image_format_from_name(path);
    if (f != MP_FORMAT_UNKNOWN) return f;
    FILE *fp = fopen(path, "rb");
    if (!fp) return MP_FORMAT_UNKNOWN;
    uint8_t b[132];
    size_t n = fread(b, 1, sizeof b, fp);
    fclose(fp);
    if (n == sizeof b && memcmp(b + 128, "DICM", 4) == 0) return MP_FORMAT_DICOM;
    if (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) return MP_FORMAT_NIFTI_GZ;
    if (n >= 4) {
        uint32_t le = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
        uint32_t be = (uint32_t)b[3] | ((uint32_t)b[2] << 8) | ((uint32_t)b[1] << 16) | ((uint32_t)b[0] << 24);
        if (le == 348 || le == 540 || be == 348 || be == 540) return MP_FORMAT_NIFTI;
    }
    return looks_bare_dicom(b, n) ? MP_FORMAT_DICOM : MP_FORMAT_UNKNOWN;
}

int mp_image_read(mp_vol_t **out, const char *path) {
    *out = NULL;
    switch (mp_image_format_detect(path)) {
    case MP_FORMAT_DICOM:
        return mp_dicom_read(out, path);
    case MP_FORMAT_NIFTI:
    case MP_FORMAT_NIFTI_GZ:
    case MP_FORMAT_ANALYZE:
    case MP_FORMAT_UNKNOWN:
    default:
        /* Unknown names are tried as single-file NIfTI: the header check
         * explains what is wrong if they are not. */
        return mp_nifti_read(out, path, NULL);
    }
}

int mp_image_write(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts) {
    switch (mp_image_format_from_name(path)) {
    case MP_FORMAT_NIFTI:
    case MP_FORMAT_NIFTI_GZ:
    case MP_FORMAT_ANALYZE:
        return mp_nifti_write(path, v, opts);
    case MP_FORMAT_DICOM:
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: DICOM is written as a series folder by mp_dicom_write_series "
                            "('medpipe convert IN OUT_DIR --to-dicom'); use .nii or .nii.gz here", path);
    default:
        return mp_error_set(MP_ERR_ARG, "%s: cannot tell the output format from the name (use .nii, .nii.gz, .hdr "
                            "or .img)", path);
    }
}
