/* NIfTI / Analyze reading: single files (.nii, .nii.gz, or in memory) and
 * .hdr/.img pairs. The header is read (or, for gzip, decompressed) first; it
 * sizes one buffer that receives the data directly: fread for raw files,
 * libdeflate for gzip (header and extensions are decompressed in front of the
 * data and moved out of the way with one memmove, which costs a few percent
 * of the inflate time). Every size is checked against the file, the memory
 * limit and, for gzip, the largest output the compressed bytes could hold. */
#include "io/gz.h"
#include "io/nifti_priv.h"
#include "medpipe/core.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Where image bytes come from: a whole file in memory (raw or gzip), or an
 * open raw file. */
typedef struct {
    const char *name;
    const uint8_t *mem;
    size_t len;
    int gz;
    FILE *fp;
    uint64_t fsize;
} src_t;

static int src_header(src_t *s, uint8_t *buf, size_t cap, size_t *got) {
    *got = 0;
    if (s->gz) return mp_gz_peek(s->name, s->mem, s->len, buf, cap, got);
    if (s->mem) {
        *got = s->len < cap ? s->len : cap;
        memcpy(buf, s->mem, *got);
        return MP_OK;
    }
    if (fseeko(s->fp, 0, SEEK_SET) != 0) return mp_error_set(MP_ERR_IO, "%s: seek failed: %s", s->name, strerror(errno));
    *got = fread(buf, 1, cap, s->fp);
    if (ferror(s->fp)) return mp_error_set(MP_ERR_IO, "%s: read failed: %s", s->name, strerror(errno));
    return MP_OK;
}

static int check_extent(const char *name, uint64_t off, uint64_t nbytes, uint64_t size) {
    if (off > size)
        return mp_error_set(MP_ERR_FORMAT, "%s: vox_offset %llu is beyond the end of the file (%llu bytes)", name,
                            (unsigned long long)off, (unsigned long long)size);
    if (nbytes > size - off)
        return mp_error_set(MP_ERR_FORMAT,
                            "%s: truncated: the data needs %llu bytes from offset %llu but the file has %llu bytes",
                            name, (unsigned long long)nbytes, (unsigned long long)off, (unsigned long long)size);
    return MP_OK;
}

static int src_data_gz(src_t *s, uint64_t off, uint64_t nbytes, uint8_t **out) {
    uint64_t need = off + nbytes;
    if (need < off || need > mp_gz_max_output(s->len))
        return mp_error_set(MP_ERR_FORMAT,
                            "%s: truncated: %zu compressed bytes cannot hold the %llu bytes the header describes "
                            "(vox_offset %llu + %llu data bytes)",
                            s->name, s->len, (unsigned long long)need, (unsigned long long)off,
                            (unsigned long long)nbytes);
    if (need > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "%s: %llu decompressed bytes exceed the memory limit of %llu bytes", s->name,
                            (unsigned long long)need, (unsigned long long)mp_mem_limit());
    uint8_t *buf = mp_alloc((size_t)need);
    if (!buf) return mp_error_set(MP_ERR_NOMEM, "%s: cannot allocate %llu bytes", s->name, (unsigned long long)need);
    int rc = mp_gz_decompress(s->name, s->mem, s->len, buf, (size_t)need);
    if (rc) {
        mp_free(buf);
        return rc;
    }
    if (off) memmove(buf, buf + off, (size_t)nbytes);
    *out = buf;
    return MP_OK;
}

/* An aligned buffer with the `nbytes` data bytes that start at `off`. */
static int src_data(src_t *s, uint64_t off, uint64_t nbytes, uint8_t **out) {
    *out = NULL;
    if (s->gz) return src_data_gz(s, off, nbytes, out);
    int rc = check_extent(s->name, off, nbytes, s->mem ? s->len : s->fsize);
    if (rc) return rc;
    uint8_t *buf = mp_alloc((size_t)nbytes);
    if (!buf) return mp_error_set(MP_ERR_NOMEM, "%s: cannot allocate %llu bytes", s->name, (unsigned long long)nbytes);
    if (s->mem) {
        memcpy(buf, s->mem + off, (size_t)nbytes);
    } else if (fseeko(s->fp, (off_t)off, SEEK_SET) != 0 || fread(buf, 1, (size_t)nbytes, s->fp) != nbytes) {
        mp_free(buf);
        return mp_error_set(MP_ERR_IO, "%s: cannot read %llu bytes at offset %llu", s->name,
                            (unsigned long long)nbytes, (unsigned long long)off);
    }
    *out = buf;
    return MP_OK;
}

static void swap_bytes(uint8_t *p, size_t elem, uint64_t n) {
    if (elem == 2) {
        uint16_t *q = (uint16_t *)(void *)p;
        for (uint64_t i = 0; i < n; i++) q[i] = __builtin_bswap16(q[i]);
    } else if (elem == 4) {
        uint32_t *q = (uint32_t *)(void *)p;
        for (uint64_t i = 0; i < n; i++) q[i] = __builtin_bswap32(q[i]);
    } else if (elem == 8) {
        uint64_t *q = (uint64_t *)(void *)p;
        for (uint64_t i = 0; i < n; i++) q[i] = __builtin_bswap64(q[i]);
    }
}

/* Turns the raw data buffer (taken over) into a volume. */
static int finish(mp_vol_t **out, const mp_nifti_header_t *h, const mp_nifti_layout_t *L, uint8_t *buf,
                  const char *name) {
    uint64_t nelem = L->nbytes / L->elem;
    if (h->swapped && L->elem > 1) swap_bytes(buf, L->elem, nelem);
    if (L->ncomp > 1) {
        /* RGB(A) is interleaved per voxel on disk; channels are planes here. */
        uint64_t nv = nelem / (uint64_t)L->ncomp;
        uint8_t *planes = mp_alloc((size_t)L->nbytes);
        if (!planes) {
            mp_free(buf);
            return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", name);
        }
        for (int c = 0; c < L->ncomp; c++)
            for (uint64_t i = 0; i < nv; i++) planes[(uint64_t)c * nv + i] = buf[i * (uint64_t)L->ncomp + (uint64_t)c];
        mp_free(buf);
        buf = planes;
    }
    mp_vol_t *v;
    int rc = mp_vol_create_view(&v, L->dim, L->dtype, buf);
    if (rc) {
        mp_free(buf);
        return mp_error_wrap(rc, "%s: ", name);
    }
    v->owns_data = 1;
    if ((rc = mp_nifti_header_to_vol(v, h, name))) {
        mp_vol_free(v);
        return rc;
    }
    *out = v;
    return MP_OK;
}

static int read_single(mp_vol_t **out, src_t *s, mp_nifti_header_t *hdr_out) {
    uint8_t hb[MP_NIFTI2_OFFSET];
    size_t got;
    mp_nifti_header_t h;
    int rc = src_header(s, hb, sizeof hb, &got);
    if (rc) return rc;
    if ((rc = mp_nifti_parse_header(&h, s->name, hb, got))) return rc;
    if (h.version == 0)
        return mp_error_set(MP_ERR_FORMAT, "%s: wrong magic: no 'n+1' NIfTI magic in a single-file image "
                            "(an Analyze 7.5 header needs a .hdr/.img pair)", s->name);
    if (!h.single_file)
        return mp_error_set(MP_ERR_FORMAT, "%s: wrong magic: pair magic '%s' in a single-file image (expected 'n+%d')",
                            s->name, h.magic, h.version);
    mp_nifti_layout_t L;
    if ((rc = mp_nifti_layout(&L, &h, s->name, 1))) return rc;
    uint8_t *buf;
    if ((rc = src_data(s, L.offset, L.nbytes, &buf))) return rc;
    if ((rc = finish(out, &h, &L, buf, s->name))) return rc;
    if (hdr_out) *hdr_out = h;
    return MP_OK;
}

int mp_nifti_read_mem(mp_vol_t **out, const char *name, const uint8_t *data, size_t len, int is_gz,
                      mp_nifti_header_t *hdr) {
    *out = NULL;
    src_t s = {name, data, len, is_gz, NULL, 0};
    return read_single(out, &s, hdr);
}

/* ---- files ---- */
/* An open file: raw files stay open for direct reads; gzip files are read
 * whole (the limit applies) so libdeflate can work on one buffer. */
typedef struct {
    src_t s;
    uint8_t *owned;
} opened_t;

static int open_src(opened_t *o, const char *path) {
    memset(o, 0, sizeof *o);
    o->s.name = path;
    FILE *fp = fopen(path, "rb");
    if (!fp) return mp_error_set(MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return mp_error_set(MP_ERR_IO, "%s: not a regular file", path);
    }
    uint8_t magic[2] = {0, 0};
    size_t n = fread(magic, 1, 2, fp);
    if (!mp_gz_is_gzip(magic, n)) {
        o->s.fp = fp;
        o->s.fsize = (uint64_t)st.st_size;
        return MP_OK;
    }
    fclose(fp);
    size_t len;
    int rc = mp_file_read_all(path, &o->owned, &len);
    if (rc) return rc;
    o->s.mem = o->owned;
    o->s.len = len;
    o->s.gz = 1;
    return MP_OK;
}

static void close_src(opened_t *o) {
    if (o->s.fp) fclose(o->s.fp);
    free(o->owned);
    memset(o, 0, sizeof *o);
}

static int is_pair_name(const char *p) {
    return mp_path_has_suffix(p, ".hdr") || mp_path_has_suffix(p, ".img") || mp_path_has_suffix(p, ".hdr.gz") || mp_path_has_suffix(p, ".img.gz");
}

/* The existing partner file of a pair member: the other extension, with the
 * same compression suffix first. `want` is "hdr" or "img". */
static int pair_path(char **out, const char *path, const char *want) {
    *out = NULL;
    int gz = mp_path_has_suffix(path, ".gz");
    size_t base = strlen(path) - (gz ? 7 : 4);
    char *p = malloc(base + 8);
    if (!p) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    memcpy(p, path, base);
    for (int attempt = 0; attempt < 2; attempt++) {
        int with_gz = attempt == 0 ? gz : !gz;
        snprintf(p + base, 8, ".%s%s", want, with_gz ? ".gz" : "");
        /* Keep the case of the given extension (FILE.HDR -> FILE.IMG). */
        if (isupper((unsigned char)path[base + 1]))
            for (char *c = p + base; *c; c++) *c = (char)toupper((unsigned char)*c);
        struct stat st;
        if (stat(p, &st) == 0) {
            *out = p;
            return MP_OK;
        }
    }
    snprintf(p + base, 8, ".%s%s", want, gz ? ".gz" : "");
    int rc = mp_error_set(MP_ERR_IO, "%s: the %s file of this pair (%s) does not exist", path,
                          strcmp(want, "img") == 0 ? "image" : "header", p);
    free(p);
    return rc;
}

static int load_header(mp_nifti_header_t *h, const char *hdr_path) {
    opened_t o;
    int rc = open_src(&o, hdr_path);
    if (rc) return rc;
    uint8_t hb[MP_NIFTI2_OFFSET];
    size_t got;
    rc = src_header(&o.s, hb, sizeof hb, &got);
    if (!rc) rc = mp_nifti_parse_header(h, hdr_path, hb, got);
    close_src(&o);
    return rc;
}

static int read_pair(mp_vol_t **out, const char *path, mp_nifti_header_t *hdr_out) {
    char *hp = NULL, *ip = NULL;
    int rc = pair_path(&hp, path, "hdr");
    if (!rc) rc = pair_path(&ip, path, "img");
    mp_nifti_header_t h;
    if (!rc) rc = load_header(&h, hp);
    mp_nifti_layout_t L;
    if (!rc) rc = mp_nifti_layout(&L, &h, hp, 0);
    opened_t o = {{0}, 0};
    if (!rc) rc = open_src(&o, ip);
    uint8_t *buf = NULL;
    if (!rc) rc = src_data(&o.s, L.offset, L.nbytes, &buf);
    close_src(&o);
    if (!rc) rc = finish(out, &h, &L, buf, hp);
    if (!rc && hdr_out) *hdr_out = h;
    free(hp);
    free(ip);
    return rc;
}

int mp_nifti_read(mp_vol_t **out, const char *path, mp_nifti_header_t *hdr) {
    *out = NULL;
    if (is_pair_name(path)) return read_pair(out, path, hdr);
    opened_t o;
    int rc = open_src(&o, path);
    if (rc) return rc;
    rc = read_single(out, &o.s, hdr);
    close_src(&o);
    return rc;
}

int mp_nifti_read_header(mp_nifti_header_t *hdr, const char *path) {
    if (!is_pair_name(path)) return load_header(hdr, path);
    char *hp = NULL;
    int rc = pair_path(&hp, path, "hdr");
    if (!rc) rc = load_header(hdr, hp);
    free(hp);
    return rc;
}
