/* NIfTI writing: .nii (header then data straight from the volume), .nii.gz
 * (one gzip member compressed by libdeflate), .hdr/.img pairs (gzipped when
 * the name ends in .gz). Always little-endian; NIfTI-2 when asked or when a
 * dimension does not fit NIfTI-1's int16. Files appear atomically. */
#include "io/gz.h"
#include "io/nifti_priv.h"
#include "medpipe/core.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int check_vol(const mp_vol_t *v, const char *name) {
    if (!v || !v->data || (unsigned)v->dtype >= MP_DTYPE_COUNT)
        return mp_error_set(MP_ERR_ARG, "%s: nothing to write (no volume data)", name);
    for (int i = 0; i < 4; i++)
        if (v->dim[i] < 1) return mp_error_set(MP_ERR_ARG, "%s: volume dim %d is %lld", name, i, (long long)v->dim[i]);
    return MP_OK;
}

/* True when float32 storage would change what x means: turn it infinite or
 * zero (scl_slope 0 means "no scaling"). */
static int float32_breaks(double x) {
    float f = (float)x;
    return (isfinite(x) && !isfinite(f)) || (x != 0 && f == 0);
}

/* NIfTI-2 when asked, when a dim does not fit int16, or when the scaling
 * does not survive NIfTI-1's float32 fields. */
static int pick_version(const mp_vol_t *v, const mp_image_write_opts_t *opts) {
    int version = opts && opts->nifti_version == 2 ? 2 : 1;
    for (int i = 0; i < 4; i++)
        if (v->dim[i] > 32767) version = 2;
    if (float32_breaks(v->scl_slope) || float32_breaks(v->scl_inter)) version = 2;
    return version;
}

static int gz_level(const mp_image_write_opts_t *opts) {
    return opts && opts->gzip_level > 0 ? opts->gzip_level : 6;
}

/* The data in file byte order (little-endian): the volume's own buffer on
 * little-endian hosts, a swapped copy otherwise (*tmp to free). */
static const uint8_t *le_data(const mp_vol_t *v, uint8_t **tmp) {
    *tmp = NULL;
    size_t es = mp_dtype_size(v->dtype), n = mp_vol_bytes(v);
    if (!mp_nifti_host_big_endian() || es == 1) return v->data;
    uint8_t *c = malloc(n);
    if (!c) return NULL;
    const uint8_t *s = v->data;
    for (size_t i = 0; i < n; i += es)
        for (size_t k = 0; k < es; k++) c[i + k] = s[i + es - 1 - k];
    *tmp = c;
    return c;
}

/* Header (+ extension flag) followed by the data in one new buffer. */
static int build_single(uint8_t **out, size_t *out_len, const mp_vol_t *v, int version) {
    mp_nifti_header_t h;
    int rc = mp_nifti_header_from_vol(&h, v, version, 1);
    if (rc) return rc;
    size_t hl = version == 2 ? MP_NIFTI2_OFFSET : MP_NIFTI1_OFFSET, n = mp_vol_bytes(v);
    uint8_t *buf = malloc(hl + n), *tmp;
    const uint8_t *d = buf ? le_data(v, &tmp) : NULL;
    if (!d) {
        free(buf);
        return mp_error_set(MP_ERR_NOMEM, "cannot allocate %zu bytes for the output", hl + n);
    }
    mp_nifti_encode_header(buf, &h);
    memcpy(buf + hl, d, n);
    free(tmp);
    *out = buf;
    *out_len = hl + n;
    return MP_OK;
}

int mp_nifti_write_mem(uint8_t **data, size_t *len, const mp_vol_t *v, const mp_image_write_opts_t *opts, int gz) {
    *data = NULL;
    *len = 0;
    int rc = check_vol(v, "(memory)");
    if (rc) return rc;
    uint8_t *raw;
    size_t raw_len;
    if ((rc = build_single(&raw, &raw_len, v, pick_version(v, opts)))) return rc;
    if (!gz) {
        *data = raw;
        *len = raw_len;
        return MP_OK;
    }
    rc = mp_gz_compress("(memory)", raw, raw_len, gz_level(opts), data, len);
    free(raw);
    return rc;
}

static int write_buf(const char *path, const uint8_t *buf, size_t len, int gz, int level) {
    if (!gz) return mp_file_write_atomic(path, buf, len);
    uint8_t *z;
    size_t zl;
    int rc = mp_gz_compress(path, buf, len, level, &z, &zl);
    if (rc) return rc;
    rc = mp_file_write_atomic(path, z, zl);
    free(z);
    return rc;
}

static int write_nii(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts, int gz) {
    int version = pick_version(v, opts), rc;
    if (gz) {
        uint8_t *raw;
        size_t raw_len;
        if ((rc = build_single(&raw, &raw_len, v, version))) return mp_error_wrap(rc, "%s: ", path);
        rc = write_buf(path, raw, raw_len, 1, gz_level(opts));
        free(raw);
        return rc;
    }
    /* Uncompressed: the data goes out from the volume without a copy. */
    mp_nifti_header_t h;
    if ((rc = mp_nifti_header_from_vol(&h, v, version, 1))) return mp_error_wrap(rc, "%s: ", path);
    uint8_t hb[MP_NIFTI2_OFFSET], *tmp;
    mp_nifti_encode_header(hb, &h);
    const uint8_t *d = le_data(v, &tmp);
    if (!d) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    mp_afile_t f;
    rc = mp_afile_open(&f, path);
    if (!rc) rc = mp_afile_write(&f, hb, version == 2 ? MP_NIFTI2_OFFSET : MP_NIFTI1_OFFSET);
    if (!rc) rc = mp_afile_write(&f, d, mp_vol_bytes(v));
    if (!rc) rc = mp_afile_commit(&f);
    else mp_afile_abort(&f);
    free(tmp);
    return rc;
}

/* Both files are written to temporaries first; the image is renamed into
 * place before the header so a reader never pairs a new header with old data
 * of a different size. */
static int write_pair(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts) {
    int gz = mp_path_has_suffix(path, ".gz"), version = pick_version(v, opts), rc;
    size_t base = strlen(path) - (gz ? 7 : 4);
    char *hp = malloc(base + 8), *ip = malloc(base + 8);
    uint8_t *tmp = NULL, *zh = NULL, *zi = NULL;
    const uint8_t *d = NULL;
    mp_afile_t fh, fi;
    memset(&fh, 0, sizeof fh);
    memset(&fi, 0, sizeof fi);
    rc = hp && ip ? MP_OK : mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    if (!rc) {
        int upper = isupper((unsigned char)path[base + 1]);
        snprintf(hp, base + 8, "%.*s%s", (int)base, path, upper ? (gz ? ".HDR.GZ" : ".HDR") : (gz ? ".hdr.gz" : ".hdr"));
        snprintf(ip, base + 8, "%.*s%s", (int)base, path, upper ? (gz ? ".IMG.GZ" : ".IMG") : (gz ? ".img.gz" : ".img"));
    }
    mp_nifti_header_t h;
    uint8_t hb[MP_NIFTI2_OFFSET];
    if (!rc && (rc = mp_nifti_header_from_vol(&h, v, version, 0)) != 0) rc = mp_error_wrap(rc, "%s: ", path);
    size_t hl = version == 2 ? MP_NIFTI2_HDR : MP_NIFTI1_HDR, il = mp_vol_bytes(v), zhl = 0, zil = 0;
    if (!rc) {
        mp_nifti_encode_header(hb, &h);
        d = le_data(v, &tmp);
        if (!d) rc = mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    }
    if (!rc && gz) rc = mp_gz_compress(hp, hb, hl, gz_level(opts), &zh, &zhl);
    if (!rc && gz) rc = mp_gz_compress(ip, d, il, gz_level(opts), &zi, &zil);
    if (!rc) rc = mp_afile_open(&fi, ip);
    if (!rc) rc = mp_afile_open(&fh, hp);
    if (!rc) rc = mp_afile_write(&fi, gz ? zi : d, gz ? zil : il);
    if (!rc) rc = mp_afile_write(&fh, gz ? zh : hb, gz ? zhl : hl);
    if (!rc) rc = mp_afile_commit(&fi);
    if (!rc) rc = mp_afile_commit(&fh);
    mp_afile_abort(&fi);
    mp_afile_abort(&fh);
    free(tmp);
    free(zh);
    free(zi);
    free(hp);
    free(ip);
    return rc;
}

int mp_nifti_write(const char *path, const mp_vol_t *v, const mp_image_write_opts_t *opts) {
    int rc = check_vol(v, path);
    if (rc) return rc;
    if (mp_path_has_suffix(path, ".nii.gz")) return write_nii(path, v, opts, 1);
    if (mp_path_has_suffix(path, ".nii")) return write_nii(path, v, opts, 0);
    if (mp_path_has_suffix(path, ".hdr") || mp_path_has_suffix(path, ".img") || mp_path_has_suffix(path, ".hdr.gz") || mp_path_has_suffix(path, ".img.gz"))
        return write_pair(path, v, opts);
    return mp_error_set(MP_ERR_ARG, "%s: cannot tell the output format from the name (use .nii, .nii.gz, .hdr or .img)",
                        path);
}
