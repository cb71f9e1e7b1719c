/* DICOM Part 10 parser: preamble and "DICM", the file meta group, then the
 * data set in implicit VR LE, explicit VR LE/BE or deflated explicit VR LE,
 * into a tree of elements that point into the file buffer.
 *
 * Every file is hostile: each length is checked against what remains of its
 * enclosing value, nesting is bounded by MP_DICOM_MAX_DEPTH, the element
 * arrays are charged against mp_mem_limit(), and every error names the file
 * and the byte offset. Parsing only moves forward, so it cannot loop.
 * Files without the preamble/meta group are accepted when their first element
 * makes the encoding unambiguous (a warning says so), as dcmtk does. */
#include "io/dicom_priv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef enum { DS_TOP, DS_META, DS_ITEM_DEFINED, DS_ITEM_UNDEFINED } ds_mode_t;

typedef struct {
    const char *name;
    const uint8_t *buf;
    uint64_t len;
    uint64_t alloc; /* bytes of element/item/fragment arrays so far */
    unsigned flags;
    int stopped;    /* STOP_AT_PIXELS reached */
} parser_t;

/* Parser warnings, silenced for re-reads of files a scan already reported. */
#define PWARN(p, ...)                                                        \
    do {                                                                     \
        if (!((p)->flags & MP_DCM_PARSE_QUIET)) mp_log(MP_LOG_WARN, __VA_ARGS__); \
    } while (0)

static int elem_parse_value(parser_t *p, mp_dicom_elem_t *el, const mp_dicom_ds_t *ds, uint64_t end, int depth,
                            uint64_t *next);

/* ------------------------------------------------------------ memory */

static void ds_free(mp_dicom_ds_t *ds);

static void elem_free(mp_dicom_elem_t *e) {
    for (uint32_t i = 0; i < e->n_items; i++) ds_free(&e->items[i]);
    free(e->items);
    free(e->frags);
    e->items = NULL;
    e->frags = NULL;
    e->n_items = e->n_frags = 0;
}

static void ds_free(mp_dicom_ds_t *ds) {
    for (uint32_t i = 0; i < ds->n; i++) elem_free(&ds->elems[i]);
    free(ds->elems);
    ds->elems = NULL;
    ds->n = 0;
}

/* Makes room for one more entry in *arr (n used, *cap allocated), charging
 * the growth to the parser's budget. */
static int grow(parser_t *p, void **arr, uint32_t n, uint32_t *cap, size_t esize, uint64_t off) {
    if (n < *cap) return MP_OK;
    if (n >= UINT32_MAX / 2)
        return mp_error_set(MP_ERR_LIMIT, "%s: offset %llu: too many elements", p->name, (unsigned long long)off);
    uint32_t ncap = *cap ? *cap * 2 : 8;
    uint64_t add = (uint64_t)(ncap - *cap) * esize;
    if (p->alloc + add > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "%s: offset %llu: element tables exceed the memory limit of %llu bytes",
                            p->name, (unsigned long long)off, (unsigned long long)mp_mem_limit());
    void *na = realloc(*arr, (size_t)ncap * esize);
    if (!na) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory at offset %llu", p->name, (unsigned long long)off);
    memset((char *)na + (size_t)*cap * esize, 0, (size_t)(ncap - *cap) * esize);
    *arr = na;
    *cap = ncap;
    p->alloc += add;
    return MP_OK;
}

/* ------------------------------------------------------------ reading */

static uint32_t read_tag(const uint8_t *b, int big) {
    return MP_DICOM_TAG(mp_dcm_u16(b, big), mp_dcm_u16(b + 2, big));
}

static int err_at(parser_t *p, int code, uint64_t off, const char *what, uint32_t tag) {
    char t[96];
    mp_dicom_tag_str(tag, t, sizeof t);
    return mp_error_set(code, "%s: offset %llu: %s %s", p->name, (unsigned long long)off, t, what);
}

/* Walks the items of encapsulated pixel data (offset table, then fragments)
 * up to the sequence delimiter. */
static int parse_fragments(parser_t *p, mp_dicom_elem_t *el, uint64_t pos, uint64_t end, int big, uint64_t *out_end) {
    uint32_t cap = 0;
    for (;;) {
        if (end - pos < 8) return err_at(p, MP_ERR_FORMAT, pos, "fragments end without a sequence delimiter", el->tag);
        uint32_t tag = read_tag(p->buf + pos, big), len = mp_dcm_u32(p->buf + pos + 4, big);
        if (tag == MP_DCM_SEQ_END) {
            el->length = pos - el->offset;
            *out_end = pos + 8;
            return MP_OK;
        }
        if (tag != MP_DCM_ITEM)
            return mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: expected a fragment item in the pixel data, found (%04X,%04X)",
                                p->name, (unsigned long long)pos, (unsigned)(tag >> 16), (unsigned)(tag & 0xFFFF));
        if (len == MP_DCM_UNDEFINED || len > end - pos - 8)
            return mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: fragment length %u exceeds the %llu bytes left", p->name,
                                (unsigned long long)pos, len, (unsigned long long)(end - pos - 8));
        int rc = grow(p, (void **)&el->frags, el->n_frags, &cap, sizeof(mp_dicom_frag_t), pos);
        if (rc) return rc;
        el->frags[el->n_frags].offset = pos + 8;
        el->frags[el->n_frags].length = len;
        el->n_frags++;
        pos += 8 + (uint64_t)len;
    }
}

static int parse_dataset(parser_t *p, mp_dicom_ds_t *ds, uint64_t pos, uint64_t end, ds_mode_t mode, int depth,
                         uint64_t *out_end);

/* Items of a sequence whose value starts at pos: up to `end` for a defined
 * length, up to the sequence delimiter otherwise. Items inherit the encoding. */
static int parse_sequence(parser_t *p, mp_dicom_elem_t *el, uint64_t pos, uint64_t end, int undefined, int explicit_vr,
                          int big, int depth, uint64_t *out_end) {
    if (depth >= MP_DICOM_MAX_DEPTH)
        return err_at(p, MP_ERR_LIMIT, pos, "nests sequences deeper than 64 levels", el->tag);
    uint32_t cap = 0;
    for (;;) {
        if (!undefined && pos == end) break;
        if (end - pos < 8) {
            return err_at(p, MP_ERR_FORMAT, pos, undefined ? "sequence ends without a delimiter" : "sequence truncated",
                          el->tag);
        }
        uint32_t tag = read_tag(p->buf + pos, big), len = mp_dcm_u32(p->buf + pos + 4, big);
        if (tag == MP_DCM_SEQ_END) {
            if (!undefined) return err_at(p, MP_ERR_FORMAT, pos, "has a sequence delimiter inside a defined length", el->tag);
            el->length = pos - el->offset;
            *out_end = pos + 8;
            return MP_OK;
        }
        if (tag != MP_DCM_ITEM) {
            char what[80];
            snprintf(what, sizeof what, "expected an item in the sequence, found (%04X,%04X)", (unsigned)(tag >> 16),
                     (unsigned)(tag & 0xFFFF));
            return err_at(p, MP_ERR_FORMAT, pos, what, el->tag);
        }
        int rc = grow(p, (void **)&el->items, el->n_items, &cap, sizeof(mp_dicom_ds_t), pos);
        if (rc) return rc;
        mp_dicom_ds_t *item = &el->items[el->n_items++];
        item->explicit_vr = (uint8_t)explicit_vr;
        item->big_endian = (uint8_t)big;
        if (len == MP_DCM_UNDEFINED) {
            rc = parse_dataset(p, item, pos + 8, end, DS_ITEM_UNDEFINED, depth + 1, &pos);
        } else {
            if (len > end - pos - 8) {
                /* Writers that drop elements without fixing the item length
                 * (pydicom's DICOMDIR-nooffset): the enclosing value still
                 * bounds the item, so reading what is left is harmless. */
                if (undefined || (p->flags & MP_DCM_PARSE_PREFIX))
                    return mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: item length %u exceeds the %llu bytes left",
                                        p->name, (unsigned long long)pos, len, (unsigned long long)(end - pos - 8));
                PWARN(p, "%s: offset %llu: item length %u exceeds the %llu bytes left in its sequence; truncated",
                      p->name, (unsigned long long)pos, len, (unsigned long long)(end - pos - 8));
                len = (uint32_t)(end - pos - 8);
            }
            uint64_t dummy;
            rc = parse_dataset(p, item, pos + 8, pos + 8 + len, DS_ITEM_DEFINED, depth + 1, &dummy);
            pos += 8 + (uint64_t)len;
        }
        if (rc) return rc;
    }
    *out_end = pos;
    return MP_OK;
}

/* A defined-length value that begins like an item (UN, or a private element
 * in implicit VR) may hold a sequence: parse it as one when it parses whole,
 * keep the raw bytes otherwise. */
static void try_sequence(parser_t *p, mp_dicom_elem_t *el, int explicit_vr, int big, int depth) {
    const uint8_t *v = p->buf + el->offset;
    if (el->length < 8 || read_tag(v, big) != MP_DCM_ITEM) return;
    uint32_t ilen = mp_dcm_u32(v + 4, big);
    if (ilen != MP_DCM_UNDEFINED && ilen > el->length - 8) return;
    uint64_t saved = p->alloc, dummy;
    mp_dicom_elem_t tmp = *el;
    tmp.items = NULL;
    tmp.n_items = 0;
    int rc = parse_sequence(p, &tmp, el->offset, el->offset + el->length, 0, explicit_vr, big, depth, &dummy);
    if (rc == MP_OK && tmp.n_items > 0) {
        el->items = tmp.items;
        el->n_items = tmp.n_items;
        return;
    }
    elem_free(&tmp);
    p->alloc = saved;
    mp_error_clear();
}

static int is_vr(const char *vr, const char *want) { return vr[0] == want[0] && vr[1] == want[1]; }

/* Element header at pos: fills tag, VR, value offset and length. */
static int parse_header(parser_t *p, const mp_dicom_ds_t *ds, uint64_t pos, uint64_t end, mp_dicom_elem_t *el,
                        uint32_t *vl) {
    int big = ds->big_endian;
    el->tag = read_tag(p->buf + pos, big);
    if (!ds->explicit_vr || (el->tag >> 16) == 0xFFFE) {
        const char *vr = mp_dicom_dict_vr(el->tag);
        memcpy(el->vr, (el->tag >> 16) == 0xFFFE ? "UN" : vr, 3);
        *vl = mp_dcm_u32(p->buf + pos + 4, big);
        el->offset = pos + 8;
        return MP_OK;
    }
    char vr[3] = {(char)p->buf[pos + 4], (char)p->buf[pos + 5], 0};
    if (!mp_dicom_vr_known(vr)) {
        char what[64];
        snprintf(what, sizeof what, "has an invalid VR (bytes %02X %02X)", p->buf[pos + 4], p->buf[pos + 5]);
        return err_at(p, MP_ERR_FORMAT, pos, what, el->tag);
    }
    memcpy(el->vr, vr, 3);
    if (mp_dicom_vr_long(vr)) {
        if (end - pos < 12) return err_at(p, MP_ERR_FORMAT, pos, "header truncated", el->tag);
        *vl = mp_dcm_u32(p->buf + pos + 8, big);
        el->offset = pos + 12;
    } else {
        *vl = mp_dcm_u16(p->buf + pos + 6, big);
        el->offset = pos + 8;
    }
    return MP_OK;
}

static int parse_dataset(parser_t *p, mp_dicom_ds_t *ds, uint64_t pos, uint64_t end, ds_mode_t mode, int depth,
                         uint64_t *out_end) {
    uint32_t cap = 0, prev = 0;
    ds->offset = pos;
    ds->base = p->buf;
    ds->sorted = 1;
    while (pos < end) {
        if (end - pos < 8) {
            if (mode == DS_TOP && !(p->flags & MP_DCM_PARSE_PREFIX)) {
                PWARN(p, "%s: offset %llu: %llu trailing bytes ignored", p->name, (unsigned long long)pos,
                       (unsigned long long)(end - pos));
                pos = end;
                break;
            }
            return mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: element header truncated", p->name,
                                (unsigned long long)pos);
        }
        uint32_t tag = read_tag(p->buf + pos, ds->big_endian);
        if (mode == DS_META && (tag >> 16) != 0x0002) break;
        if (tag == MP_DCM_ITEM_END && mode == DS_ITEM_UNDEFINED) {
            ds->length = pos - ds->offset;
            *out_end = pos + 8;
            return MP_OK;
        }
        if ((tag >> 16) == 0xFFFE) return err_at(p, MP_ERR_FORMAT, pos, "appears outside a sequence", tag);
        mp_dicom_elem_t el;
        memset(&el, 0, sizeof el);
        uint32_t vl = 0;
        int rc = parse_header(p, ds, pos, end, &el, &vl);
        if (rc) return rc;
        uint64_t next;
        int stop_here = mode == DS_TOP && tag == MP_DCM_PIXEL_DATA && (p->flags & MP_DICOM_PARSE_STOP_AT_PIXELS);
        if (vl == MP_DCM_UNDEFINED) {
            el.undefined_length = 1;
        } else if (vl > end - el.offset && !(stop_here && (p->flags & MP_DCM_PARSE_PREFIX))) {
            /* (a scan reading only the start of a file stops at the pixel
             * data without needing all of it) */
            char what[96];
            snprintf(what, sizeof what, "length %u exceeds the %llu bytes left", vl,
                     (unsigned long long)(end - el.offset));
            return err_at(p, MP_ERR_FORMAT, pos, what, tag);
        }
        el.length = el.undefined_length ? 0 : vl;
        if (stop_here) {
            if (el.undefined_length || el.length > end - el.offset) el.length = end - el.offset;
            p->stopped = 1;
            next = end;
        } else {
            rc = elem_parse_value(p, &el, ds, end, depth, &next);
            if (rc) {
                elem_free(&el);
                return rc;
            }
        }
        rc = grow(p, (void **)&ds->elems, ds->n, &cap, sizeof(mp_dicom_elem_t), pos);
        if (rc) {
            elem_free(&el);
            return rc;
        }
        if (ds->n && tag <= prev) ds->sorted = 0;
        prev = tag;
        ds->elems[ds->n++] = el;
        pos = next;
        if (p->stopped) break;
    }
    if (mode == DS_ITEM_UNDEFINED && !p->stopped)
        return mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: item starting at offset %llu has no item delimiter", p->name,
                            (unsigned long long)pos, (unsigned long long)ds->offset);
    ds->length = pos - ds->offset;
    *out_end = pos;
    return MP_OK;
}

/* The value of an element whose header was read: sequences and fragments are
 * walked, everything else is skipped over. *next = first byte after it. */
static int elem_parse_value(parser_t *p, mp_dicom_elem_t *el, const mp_dicom_ds_t *ds, uint64_t end, int depth,
                            uint64_t *next) {
    int explicit_vr = ds->explicit_vr, big = ds->big_endian;
    if (el->undefined_length) {
        if (el->tag == MP_DCM_PIXEL_DATA || (explicit_vr && !is_vr(el->vr, "SQ") && !is_vr(el->vr, "UN")))
            return parse_fragments(p, el, el->offset, end, big, next);
        /* Explicit-VR UN of undefined length holds implicit VR LE (PS3.5 6.2.2). */
        if (explicit_vr && is_vr(el->vr, "UN")) return parse_sequence(p, el, el->offset, end, 1, 0, 0, depth, next);
        return parse_sequence(p, el, el->offset, end, 1, explicit_vr, big, depth, next);
    }
    *next = el->offset + el->length;
    if (is_vr(el->vr, "SQ")) {
        uint64_t dummy;
        return parse_sequence(p, el, el->offset, el->offset + el->length, 0, explicit_vr, big, depth, &dummy);
    }
    if (is_vr(el->vr, "UN")) {
        if (explicit_vr) try_sequence(p, el, 0, 0, depth);
        else try_sequence(p, el, 0, big, depth);
    }
    return MP_OK;
}

/* ------------------------------------------------------------ file level */

static void trim_copy(char *dst, size_t cap, const uint8_t *src, uint64_t n) {
    while (n && (src[n - 1] == ' ' || src[n - 1] == 0)) n--;
    while (n && src[0] == ' ') {
        src++;
        n--;
    }
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, (size_t)n);
    dst[n] = 0;
}

/* 1 when bytes at pos look like an explicit-VR element header. */
static int looks_explicit(const uint8_t *b, uint64_t pos, uint64_t len) {
    if (len - pos < 8) return 0;
    char vr[2] = {(char)b[pos + 4], (char)b[pos + 5]};
    return mp_dicom_vr_known(vr);
}

static int inflate_rest(parser_t *p, mp_dicom_file_t *f, uint64_t start) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, -15) != Z_OK) return mp_error_set(MP_ERR_INTERNAL, "%s: zlib init failed", p->name);
    uint64_t cap = start + (p->len - start) * 4 + 4096, limit = mp_mem_limit();
    if (cap > limit) cap = limit;
    uint8_t *out = malloc(cap ? cap : 1);
    int rc = out ? MP_OK : mp_error_set(MP_ERR_NOMEM, "%s: out of memory inflating", p->name);
    if (out) memcpy(out, p->buf, start);
    uint64_t have = start, in_pos = start;
    while (rc == MP_OK) {
        if (have == cap) {
            if (cap >= limit) {
                rc = mp_error_set(MP_ERR_LIMIT, "%s: deflated data set inflates beyond the memory limit of %llu bytes",
                                  p->name, (unsigned long long)limit);
                break;
            }
            uint64_t ncap = cap * 2 > limit ? limit : cap * 2;
            uint8_t *n = realloc(out, ncap);
            if (!n) {
                rc = mp_error_set(MP_ERR_NOMEM, "%s: out of memory inflating", p->name);
                break;
            }
            out = n;
            cap = ncap;
        }
        uint64_t in_left = p->len - in_pos, out_left = cap - have;
        zs.next_in = (Bytef *)(p->buf + in_pos);
        zs.avail_in = (uInt)(in_left > 0x40000000u ? 0x40000000u : in_left);
        zs.next_out = out + have;
        zs.avail_out = (uInt)(out_left > 0x40000000u ? 0x40000000u : out_left);
        uInt ain = zs.avail_in, aout = zs.avail_out;
        int zr = inflate(&zs, Z_NO_FLUSH);
        in_pos += ain - zs.avail_in;
        have += aout - zs.avail_out;
        if (zr == Z_STREAM_END) break;
        if (zr == Z_BUF_ERROR && in_pos == p->len) break; /* truncated stream: parse what came out */
        if (zr != Z_OK && zr != Z_BUF_ERROR)
            rc = mp_error_set(MP_ERR_FORMAT, "%s: offset %llu: deflated data set is corrupt (%s)", p->name,
                              (unsigned long long)in_pos, zs.msg ? zs.msg : "zlib error");
    }
    inflateEnd(&zs);
    if (rc) {
        free(out);
        return rc;
    }
    f->owned_inflated = out;
    f->data = out;
    f->len = (size_t)have;
    p->buf = out;
    p->len = have;
    return MP_OK;
}

/* Parses the file meta group at pos; returns the first byte after it. */
static int parse_meta(parser_t *p, mp_dicom_file_t *f, uint64_t pos, uint64_t *after) {
    f->meta.explicit_vr = (uint8_t)looks_explicit(p->buf, pos, p->len);
    if (!f->meta.explicit_vr)
        PWARN(p, "%s: file meta group is not explicit VR little endian; reading it as implicit", p->name);
    uint64_t end = p->len;
    int rc = parse_dataset(p, &f->meta, pos, end, DS_META, 0, after);
    if (rc) return mp_error_wrap(rc, "in the file meta group: ");
    mp_dicom_get_str(&f->meta, MP_DICOM_TAG(0x0002, 0x0010), f->syntax, sizeof f->syntax);
    return MP_OK;
}

/* Chooses the data set encoding from the first element when the meta group
 * said nothing (or something the bytes contradict). */
static void guess_encoding(parser_t *p, uint64_t pos, int *explicit_vr, int *big) {
    const uint8_t *b = p->buf + pos;
    if (p->len - pos < 8) {
        *explicit_vr = 0;
        *big = 0;
        return;
    }
    *explicit_vr = looks_explicit(p->buf, pos, p->len);
    uint16_t gl = mp_dcm_u16(b, 0), gb = mp_dcm_u16(b, 1);
    *big = *explicit_vr && gb < gl;
}

static void set_syntax(mp_dicom_file_t *f, int explicit_vr, int big) {
    const char *s = !explicit_vr ? MP_UID_IMPLICIT_LE : big ? MP_UID_EXPLICIT_BE : MP_UID_EXPLICIT_LE;
    snprintf(f->syntax, sizeof f->syntax, "%s", s);
}

static int parse_body(parser_t *p, mp_dicom_file_t *f, uint64_t pos, int have_meta) {
    int explicit_vr = 1, big = 0;
    if (!f->syntax[0]) {
        guess_encoding(p, pos, &explicit_vr, &big);
        if (have_meta)
            PWARN(p, "%s: no transfer syntax in the meta group; data set read as %s", p->name,
                   explicit_vr ? (big ? "explicit VR big endian" : "explicit VR little endian") : "implicit VR little endian");
        set_syntax(f, explicit_vr, big);
    } else if (strcmp(f->syntax, MP_UID_IMPLICIT_LE) == 0) {
        explicit_vr = 0;
    } else if (strcmp(f->syntax, MP_UID_EXPLICIT_BE) == 0) {
        big = 1;
    } else if (strcmp(f->syntax, MP_UID_DEFLATED_LE) == 0) {
        int rc = inflate_rest(p, f, pos);
        if (rc) return rc;
    }
    /* The declared encoding against the bytes (pydicom and dcmtk do the same). */
    if (p->len - pos >= 8) {
        int looks = looks_explicit(p->buf, pos, p->len);
        uint32_t ilen = mp_dcm_u32(p->buf + pos + 4, big);
        if (explicit_vr && !looks) {
            PWARN(p, "%s: transfer syntax says explicit VR but the data set is implicit VR", p->name);
            explicit_vr = 0;
        } else if (!explicit_vr && looks && ilen > p->len - pos - 8) {
            PWARN(p, "%s: transfer syntax says implicit VR but the data set is explicit VR", p->name);
            explicit_vr = 1;
        }
    }
    f->ds.explicit_vr = (uint8_t)explicit_vr;
    f->ds.big_endian = (uint8_t)big;
    uint64_t after;
    return parse_dataset(p, &f->ds, pos, p->len, DS_TOP, 0, &after);
}

/* A file without preamble or meta group: accepted only when its first
 * element is a plausible low group and the whole data set parses in order. */
static int parse_guessed(parser_t *p, mp_dicom_file_t *f) {
    int explicit_vr, big;
    if (p->len < 8) return mp_error_set(MP_ERR_FORMAT, "%s: not a DICOM file (too short)", p->name);
    guess_encoding(p, 0, &explicit_vr, &big);
    uint16_t group = mp_dcm_u16(p->buf, big);
    if (group > 0x0010 || group == 0x0002)
        return mp_error_set(MP_ERR_FORMAT, "%s: not a DICOM file (no DICM marker, first group %04X)", p->name, group);
    set_syntax(f, explicit_vr, big);
    f->guessed = 1;
    f->ds.explicit_vr = (uint8_t)explicit_vr;
    f->ds.big_endian = (uint8_t)big;
    uint64_t after;
    int rc = parse_dataset(p, &f->ds, 0, p->len, DS_TOP, 0, &after);
    if (rc) return mp_error_wrap(rc, "not a DICOM file (no DICM marker) or a broken one: ");
    if (!f->ds.sorted || f->ds.n == 0)
        return mp_error_set(MP_ERR_FORMAT, "%s: not a DICOM file (no DICM marker, elements out of order)", p->name);
    PWARN(p, "%s: no preamble or file meta group; read as %s", p->name,
           explicit_vr ? (big ? "explicit VR big endian" : "explicit VR little endian") : "implicit VR little endian");
    return MP_OK;
}

int mp_dicom_file_parse(mp_dicom_file_t **out, const uint8_t *data, size_t len, const char *name, unsigned flags) {
    *out = NULL;
    if (!data && len) return mp_error_set(MP_ERR_ARG, "mp_dicom_file_parse: NULL data");
    if (!name) name = "<memory>";
    mp_dicom_file_t *f = calloc(1, sizeof *f);
    if (!f) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", name);
    f->name = strdup(name);
    f->data = data;
    f->len = len;
    f->meta.base = f->ds.base = data;
    f->meta.explicit_vr = 1;
    if (!f->name) {
        free(f);
        return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", name);
    }
    parser_t p = {f->name, data, len, 0, flags, 0};
    int rc;
    uint64_t pos = 0;
    int marker = 0;
    if (len >= 132 && memcmp(data + 128, "DICM", 4) == 0) {
        pos = 132;
        marker = 1;
    } else if (len >= 4 && memcmp(data, "DICM", 4) == 0) {
        pos = 4;
        marker = 1;
    }
    if (marker || (len >= 8 && mp_dcm_u16(data, 0) == 0x0002)) {
        uint64_t after;
        rc = parse_meta(&p, f, pos, &after);
        if (rc == MP_OK) rc = parse_body(&p, f, after, 1);
    } else {
        rc = parse_guessed(&p, f);
    }
    f->stopped_at_pixels = p.stopped;
    f->meta.base = data;
    f->ds.base = f->data;
    if (rc) {
        mp_dicom_file_free(f);
        return rc;
    }
    *out = f;
    return MP_OK;
}

int mp_dicom_file_read(mp_dicom_file_t **out, const char *path, unsigned flags) {
    uint8_t *buf;
    size_t len;
    *out = NULL;
    int rc = mp_file_read_all(path, &buf, &len);
    if (rc) return rc;
    rc = mp_dicom_file_parse(out, buf, len, path, flags);
    if (rc) {
        free(buf);
        return rc;
    }
    (*out)->owned_read = buf; /* parsed in place: offsets and bases already point here */
    return MP_OK;
}

void mp_dicom_file_free(mp_dicom_file_t *f) {
    if (!f) return;
    ds_free(&f->meta);
    ds_free(&f->ds);
    free(f->owned_read);
    free(f->owned_inflated);
    free(f->name);
    free(f);
}

const mp_dicom_ds_t *mp_dicom_file_dataset(const mp_dicom_file_t *f) { return &f->ds; }
const mp_dicom_ds_t *mp_dicom_file_meta(const mp_dicom_file_t *f) { return &f->meta; }
const char *mp_dicom_file_syntax(const mp_dicom_file_t *f) { return f->syntax; }
const char *mp_dicom_file_name(const mp_dicom_file_t *f) { return f->name; }
int mp_dicom_file_guessed(const mp_dicom_file_t *f) { return f->guessed; }
const uint8_t *mp_dicom_file_data(const mp_dicom_file_t *f, size_t *len) {
    if (len) *len = f->len;
    return f->data;
}

/* ------------------------------------------------------------ getters */

const mp_dicom_elem_t *mp_dicom_find(const mp_dicom_ds_t *ds, uint32_t tag) {
    if (!ds) return NULL;
    if (ds->sorted) {
        uint32_t lo = 0, hi = ds->n;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (ds->elems[mid].tag == tag) return &ds->elems[mid];
            if (ds->elems[mid].tag < tag) lo = mid + 1;
            else hi = mid;
        }
        return NULL;
    }
    for (uint32_t i = 0; i < ds->n; i++)
        if (ds->elems[i].tag == tag) return &ds->elems[i];
    return NULL;
}

int mp_dicom_get_str(const mp_dicom_ds_t *ds, uint32_t tag, char *buf, size_t cap) {
    if (cap) buf[0] = 0;
    const mp_dicom_elem_t *e = mp_dicom_find(ds, tag);
    if (!e || e->items || e->frags || e->undefined_length || cap == 0) return 0;
    trim_copy(buf, cap, ds->base + e->offset, e->length);
    return (int)strlen(buf);
}

/* The VR that decides how a value is read: the file's, unless it is UN. */
static const char *value_vr(const mp_dicom_elem_t *e) {
    return is_vr(e->vr, "UN") ? mp_dicom_dict_vr(e->tag) : e->vr;
}

static int parse_text_numbers(const mp_dicom_ds_t *ds, const mp_dicom_elem_t *e, double *out, int max) {
    const uint8_t *v = ds->base + e->offset;
    uint64_t n = e->length, i = 0;
    int count = 0;
    while (i <= n && count < max) {
        uint64_t j = i;
        while (j < n && v[j] != '\\') j++;
        char tmp[72];
        trim_copy(tmp, sizeof tmp, v + i, j - i);
        if (tmp[0]) {
            char *endp;
            /* DS/IS are plain decimal: strtod alone would also take hex, inf and nan */
            int plain = strspn(tmp, "0123456789+-.eE") == strlen(tmp);
            double d = strtod(tmp, &endp);
            if (!plain || *endp != 0 || !isfinite(d) || j - i > 64) {
                char t[96];
                mp_dicom_tag_str(e->tag, t, sizeof t);
                return mp_error_set(MP_ERR_FORMAT, "offset %llu: %s: '%s' is not a number",
                                    (unsigned long long)e->offset, t, tmp);
            }
            out[count++] = d;
        }
        i = j + 1;
    }
    return count;
}

int mp_dicom_get_f64s(const mp_dicom_ds_t *ds, uint32_t tag, double *out, int max) {
    const mp_dicom_elem_t *e = mp_dicom_find(ds, tag);
    if (!e || e->items || e->frags || e->undefined_length || e->length == 0 || max <= 0) return 0;
    const char *vr = value_vr(e);
    if (is_vr(vr, "DS") || is_vr(vr, "IS")) return parse_text_numbers(ds, e, out, max);
    const uint8_t *v = ds->base + e->offset;
    int big = ds->big_endian, size, count = 0;
    if (is_vr(vr, "US") || is_vr(vr, "SS")) size = 2;
    else if (is_vr(vr, "UL") || is_vr(vr, "SL") || is_vr(vr, "FL")) size = 4;
    else if (is_vr(vr, "FD") || is_vr(vr, "SV") || is_vr(vr, "UV")) size = 8;
    else {
        char t[96];
        mp_dicom_tag_str(tag, t, sizeof t);
        return mp_error_set(MP_ERR_FORMAT, "offset %llu: %s: VR %s is not numeric", (unsigned long long)e->offset, t,
                            vr);
    }
    for (uint64_t i = 0; i + (uint64_t)size <= e->length && count < max; i += (uint64_t)size) {
        const uint8_t *q = v + i;
        double d;
        if (is_vr(vr, "US")) d = mp_dcm_u16(q, big);
        else if (is_vr(vr, "SS")) d = (int16_t)mp_dcm_u16(q, big);
        else if (is_vr(vr, "UL")) d = mp_dcm_u32(q, big);
        else if (is_vr(vr, "SL")) d = (int32_t)mp_dcm_u32(q, big);
        else if (is_vr(vr, "UV")) d = (double)mp_dcm_u64(q, big);
        else if (is_vr(vr, "SV")) d = (double)(int64_t)mp_dcm_u64(q, big);
        else if (is_vr(vr, "FL")) {
            uint32_t u = mp_dcm_u32(q, big);
            float fl;
            memcpy(&fl, &u, 4);
            d = fl;
        } else {
            uint64_t u = mp_dcm_u64(q, big);
            memcpy(&d, &u, 8);
        }
        out[count++] = d;
    }
    return count;
}

int mp_dicom_get_f64(const mp_dicom_ds_t *ds, uint32_t tag, double *out) { return mp_dicom_get_f64s(ds, tag, out, 1); }

int mp_dicom_get_i64(const mp_dicom_ds_t *ds, uint32_t tag, int64_t *out) {
    double d;
    int n = mp_dicom_get_f64(ds, tag, &d);
    if (n <= 0) return n;
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != floor(d)) {
        char t[96];
        mp_dicom_tag_str(tag, t, sizeof t);
        return mp_error_set(MP_ERR_FORMAT, "%s: %g is not an integer", t, d);
    }
    *out = (int64_t)d;
    return 1;
}

const mp_dicom_ds_t *mp_dicom_get_item(const mp_dicom_ds_t *ds, uint32_t tag, uint32_t i) {
    const mp_dicom_elem_t *e = mp_dicom_find(ds, tag);
    if (!e || i >= e->n_items) return NULL;
    return &e->items[i];
}
