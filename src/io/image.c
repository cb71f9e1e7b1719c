/* Format-independent image I/O (include/medpipe/io.h): picks the reader or
 * writer from the file name. NIfTI readers also sniff the content, so a
 * gzipped file named .nii (or the reverse) still reads. */
#include "medpipe/core.h"
#include "medpipe/io.h"
#include "medpipe/nifti.h"

#include <ctype.h>
#include <string.h>
#include <sys/stat.h>

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    if (a < b) return 0;
    for (size_t i = 0; i < b; i++)
        if (tolower((unsigned char)s[a - b + i]) != suffix[i]) return 0;
    return 1;
}

mp_format_t mp_image_format_from_name(const char *path) {
    if (!path) return MP_FORMAT_UNKNOWN;
    if (ends_with(path, ".nii.gz")) return MP_FORMAT_NIFTI_GZ;
    if (ends_with(path, ".nii")) return MP_FORMAT_NIFTI;
    if (ends_with(path, ".hdr") || ends_with(path, ".img") || ends_with(path, ".hdr.gz") || ends_with(path, ".img.gz"))
        return MP_FORMAT_ANALYZE;
    if (ends_with(path, ".dcm") || ends_with(path, ".dicom")) return MP_FORMAT_DICOM;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return MP_FORMAT_DICOM;
    return MP_FORMAT_UNKNOWN;
}

void mp_image_write_opts_init(mp_image_write_opts_t *o) {
    o->nifti_version = 1;
    o->gzip_level = 6;
}

int mp_image_read(mp_vol_t **out, const char *path) {
    *out = NULL;
    switch (mp_image_format_from_name(path)) {
    case MP_FORMAT_DICOM:
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: DICOM input is not supported by this build yet", path);
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
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: writing DICOM images is not supported (use .nii or .nii.gz)",
                            path);
    default:
        return mp_error_set(MP_ERR_ARG, "%s: cannot tell the output format from the name (use .nii, .nii.gz, .hdr "
                            "or .img)", path);
    }
}
