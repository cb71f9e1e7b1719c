/* DICOM element encoder for explicit VR little endian: value representation
 * rules (maximum lengths, allowed characters, padding to even length), nested
 * sequences and items of defined length, and the Part 10 file writer with its
 * file meta group. Used by the series and SEG writers; never parses input. */
#include "io/dcmw_internal.h"
#include "medpipe/core.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How a VR's text is checked. */
enum { K_AE, K_AS, K_CS, K_DA, K_DS, K_DT, K_IS, K_TEXT, K_FREE, K_PN, K_TM, K_UI, K_UR };

typedef struct {
    char vr[3];
    int kind;
    size_t max_chars; /* per value; 0 = no limit short of the 32-bit length */
    int non_ascii;    /* may carry characters of the declared character set */
} vr_rule_t;

static const vr_rule_t vr_rules[] = {
    {"AE", K_AE, 16, 0},   {"AS", K_AS, 4, 0},     {"CS", K_CS, 16, 0},   {"DA", K_DA, 8, 0},
    {"DS", K_DS, 16, 0},   {"DT", K_DT, 26, 0},    {"IS", K_IS, 12, 0},   {"LO", K_TEXT, 64, 1},
    {"LT", K_FREE, 10240, 1}, {"PN", K_PN, 64, 1}, {"SH", K_TEXT, 16, 1}, {"ST", K_FREE, 1024, 1},
    {"TM", K_TM, 14, 0},   {"UC", K_TEXT, 0, 1},   {"UI", K_UI, 64, 0},   {"UR", K_UR, 0, 0},
    {"UT", K_FREE, 0, 1},
};

static const vr_rule_t *vr_rule(const char *vr) {
    for (size_t i = 0; i < sizeof vr_rules / sizeof vr_rules[0]; i++)
        if (strcmp(vr_rules[i].vr, vr) == 0) return &vr_rules[i];
    return NULL;
}

/* VRs whose explicit-VR header has 2 reserved bytes and a 32-bit length. */
static int vr_is_long(const char *vr) {
    static const char *const l[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"};
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (strcmp(l[i], vr) == 0) return 1;
    return 0;
}

void mp_dcmw_buf_init(mp_dcmw_buf_t *b) { memset(b, 0, sizeof *b); }

void mp_dcmw_buf_deinit(mp_dcmw_buf_t *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

void mp_dcmw_buf_reset(mp_dcmw_buf_t *b) {
    uint8_t *d = b->data;
    size_t cap = b->cap;
    memset(b, 0, sizeof *b);
    b->data = d;
    b->cap = cap;
}

static int fail(mp_dcmw_buf_t *b, int code) {
    if (!b->err) b->err = code;
    return code;
}

#define TAGF "(%04X,%04X)"
#define TAGA(t) (unsigned)((t) >> 16), (unsigned)((t)&0xFFFFu)

static int reserve(mp_dcmw_buf_t *b, size_t n) {
    if (b->len + n <= b->cap) return MP_OK;
    if (n > (size_t)UINT32_MAX || b->len > (size_t)UINT32_MAX * 2)
        return fail(b, mp_error_set(MP_ERR_LIMIT, "DICOM data set larger than 8 GiB"));
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) return fail(b, mp_error_set(MP_ERR_NOMEM, "cannot grow a DICOM buffer to %zu bytes", cap));
    b->data = d;
    b->cap = cap;
    return MP_OK;
}

static void put(mp_dcmw_buf_t *b, const void *p, size_t n) {
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put16(mp_dcmw_buf_t *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}

static void put32(mp_dcmw_buf_t *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void patch32(mp_dcmw_buf_t *b, size_t at, uint32_t v) {
    uint8_t *p = b->data + at;
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* An element may go here: not directly inside a sequence, tags ascending. */
static int check_position(mp_dcmw_buf_t *b, uint32_t tag) {
    if (b->err) return b->err;
    if (b->depth > 0 && !b->open[b->depth - 1].is_item)
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM element " TAGF " written inside a sequence, outside an item",
                                    TAGA(tag)));
    if (tag <= b->last_tag[b->depth])
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM element " TAGF " after " TAGF ": tags must ascend",
                                    TAGA(tag), TAGA(b->last_tag[b->depth])));
    b->last_tag[b->depth] = tag;
    return MP_OK;
}

/* Writes the element header for a value of `len` bytes (already even). */
static int header(mp_dcmw_buf_t *b, uint32_t tag, const char *vr, size_t len) {
    int rc = check_position(b, tag);
    if (rc) return rc;
    int lng = vr_is_long(vr);
    if ((!lng && len > 0xFFFEu) || len >= 0xFFFFFFFFu)
        return fail(b, mp_error_set(MP_ERR_LIMIT, "DICOM element " TAGF " (%s): value of %zu bytes is too long for its VR",
                                    TAGA(tag), vr, len));
    if (reserve(b, 12 + len + 1)) return b->err;
    put16(b, (uint16_t)(tag >> 16));
    put16(b, (uint16_t)(tag & 0xFFFFu));
    put(b, vr, 2);
    if (lng) {
        put16(b, 0);
        put32(b, (uint32_t)len);
    } else {
        put16(b, (uint16_t)len);
    }
    return MP_OK;
}

int mp_dcmw_is_non_ascii(const char *s) {
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80) return 1;
    return 0;
}

/* Number of characters in a UTF-8 value of n bytes; -1 if malformed. */
static long utf8_chars(const char *s, size_t n) {
    long chars = 0;
    for (size_t i = 0; i < n; chars++) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!k || i + k > n) return -1;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] >> 6) != 2) return -1;
        i += k;
    }
    return chars;
}

static int char_ok(int kind, unsigned char c) {
    switch (kind) {
    case K_CS: return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ' ' || c == '_';
    case K_DA: return c >= '0' && c <= '9';
    case K_TM: return (c >= '0' && c <= '9') || c == '.';
    case K_DT: return (c >= '0' && c <= '9') || c == '.' || c == '+' || c == '-';
    case K_DS: return (c >= '0' && c <= '9') || c == '.' || c == '+' || c == '-' || c == 'e' || c == 'E' || c == ' ';
    case K_IS: return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == ' ';
    case K_AS: return (c >= '0' && c <= '9') || c == 'D' || c == 'W' || c == 'M' || c == 'Y';
    case K_UI: return (c >= '0' && c <= '9') || c == '.';
    case K_FREE: return c >= 0x20 || c == '\r' || c == '\n' || c == '\f' || c == '\t' || c == 0x1b;
    default: return c >= 0x20 || c == 0x1b; /* AE, TEXT, PN, UR: no control characters */
    }
}

/* A UID: digits and dots, no empty component, no leading zero in a component. */
static int uid_syntax_ok(const char *s, size_t n) {
    if (n == 0 || n > 64) return 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            if (s[i] < '0' || s[i] > '9') return 0;
            continue;
        }
        if (i == start || (s[start] == '0' && i - start > 1)) return 0;
        start = i + 1;
    }
    return 1;
}

/* Checks one value (no backslashes) of a string VR. */
static int check_value(mp_dcmw_buf_t *b, uint32_t tag, const vr_rule_t *r, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 && r->non_ascii && b->utf8) continue;
        if (c >= 0x80 || !char_ok(r->kind, c))
            return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " %s: character 0x%02X not allowed in \"%.*s\"%s",
                                        TAGA(tag), r->vr, c, (int)n, s,
                                        c >= 0x80 ? " (non-ASCII text needs SpecificCharacterSet)" : ""));
    }
    long chars = r->non_ascii && b->utf8 ? utf8_chars(s, n) : (long)n;
    if (chars < 0)
        return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " %s: malformed UTF-8 in \"%.*s\"", TAGA(tag), r->vr,
                                    (int)n, s));
    if (r->kind == K_PN) {
        /* Up to three component groups (alphabetic=ideographic=phonetic), 64 chars each. */
        int groups = 1;
        size_t gstart = 0;
        for (size_t i = 0; i <= n; i++) {
            if (i < n && s[i] != '=') continue;
            if (i - gstart > 64 || (i < n && ++groups > 3))
                return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " PN: \"%.*s\" has a component group over 64 "
                                            "characters or more than 3 groups", TAGA(tag), (int)n, s));
            gstart = i + 1;
        }
        return MP_OK;
    }
    if (r->max_chars && (size_t)chars > r->max_chars)
        return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " %s: \"%.*s\" is %ld characters, at most %zu allowed",
                                    TAGA(tag), r->vr, (int)n, s, chars, r->max_chars));
    if ((r->kind == K_DA && n != 8 && n != 0) || (r->kind == K_UI && !uid_syntax_ok(s, n)))
        return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " %s: \"%.*s\" is not a valid %s", TAGA(tag), r->vr,
                                    (int)n, s, r->kind == K_DA ? "date (YYYYMMDD)" : "UID"));
    return MP_OK;
}

static int check_string(mp_dcmw_buf_t *b, uint32_t tag, const vr_rule_t *r, const char *s, size_t n) {
    if (r->kind == K_FREE || r->kind == K_UR) return check_value(b, tag, r, s, n);
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '\\') continue;
        int rc = check_value(b, tag, r, s + start, i - start);
        if (rc) return rc;
        start = i + 1;
    }
    return MP_OK;
}

int mp_dcmw_str(mp_dcmw_buf_t *b, uint32_t tag, const char *vr, const char *s) {
    if (b->err) return b->err;
    const vr_rule_t *r = vr_rule(vr);
    if (!r)
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM " TAGF ": %s is not a string VR", TAGA(tag), vr));
    if (!s) s = "";
    size_t n = strlen(s);
    int rc = check_string(b, tag, r, s, n);
    if (rc) return rc;
    rc = header(b, tag, vr, n + (n & 1));
    if (rc) return rc;
    put(b, s, n);
    if (n & 1) b->data[b->len++] = r->kind == K_UI ? '\0' : ' ';
    return MP_OK;
}

int mp_dcmw_charset(mp_dcmw_buf_t *b, int utf8) {
    if (!utf8) return b->err;
    int rc = mp_dcmw_str(b, MP_DCMW_TAG(0x0008, 0x0005), "CS", "ISO_IR 192");
    if (!rc) b->utf8 = 1;
    return rc;
}

double mp_dcmw_format_ds(double v, char out[17], int *ok) {
    *ok = 0;
    out[0] = '\0';
    if (!isfinite(v)) return 0;
    if (v == 0) v = 0; /* no "-0" */
    char tmp[40];
    for (int prec = 16; prec >= 1; prec--) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strlen(tmp) <= 16) {
            memcpy(out, tmp, strlen(tmp) + 1);
            *ok = 1;
            return strtod(out, NULL);
        }
    }
    return 0;
}

int mp_dcmw_ds(mp_dcmw_buf_t *b, uint32_t tag, const double *v, int n) {
    if (b->err) return b->err;
    char text[17 * 32];
    if (n < 0 || n > 32) return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM " TAGF ": %d DS values", TAGA(tag), n));
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        int ok;
        char one[17];
        mp_dcmw_format_ds(v[i], one, &ok);
        if (!ok)
            return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " DS: value %g cannot be written", TAGA(tag), v[i]));
        if (i) text[len++] = '\\';
        memcpy(text + len, one, strlen(one));
        len += strlen(one);
    }
    text[len] = '\0';
    return mp_dcmw_str(b, tag, "DS", text);
}

int mp_dcmw_is(mp_dcmw_buf_t *b, uint32_t tag, int64_t v) {
    if (v < INT32_MIN || v > INT32_MAX)
        return fail(b, mp_error_set(MP_ERR_ARG, "DICOM " TAGF " IS: %lld out of range", TAGA(tag), (long long)v));
    char text[16];
    snprintf(text, sizeof text, "%lld", (long long)v);
    return mp_dcmw_str(b, tag, "IS", text);
}

int mp_dcmw_us(mp_dcmw_buf_t *b, uint32_t tag, const uint16_t *v, int n) {
    if (header(b, tag, "US", (size_t)n * 2)) return b->err;
    for (int i = 0; i < n; i++) put16(b, v[i]);
    return MP_OK;
}

int mp_dcmw_ul(mp_dcmw_buf_t *b, uint32_t tag, const uint32_t *v, int n) {
    if (header(b, tag, "UL", (size_t)n * 4)) return b->err;
    for (int i = 0; i < n; i++) put32(b, v[i]);
    return MP_OK;
}

int mp_dcmw_at(mp_dcmw_buf_t *b, uint32_t tag, const uint32_t *tags, int n) {
    if (header(b, tag, "AT", (size_t)n * 4)) return b->err;
    for (int i = 0; i < n; i++) {
        put16(b, (uint16_t)(tags[i] >> 16));
        put16(b, (uint16_t)(tags[i] & 0xFFFFu));
    }
    return MP_OK;
}

int mp_dcmw_bytes(mp_dcmw_buf_t *b, uint32_t tag, const char *vr, const void *data, size_t len) {
    if (b->err) return b->err;
    if (strcmp(vr, "OB") != 0 && strcmp(vr, "OW") != 0)
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM " TAGF ": bytes with VR %s", TAGA(tag), vr));
    if (vr[1] == 'W' && (len & 1))
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM " TAGF ": OW value of odd length %zu", TAGA(tag), len));
    if (len >= 0xFFFFFFFEu)
        return fail(b, mp_error_set(MP_ERR_LIMIT, "DICOM " TAGF ": %zu bytes do not fit a 32-bit length", TAGA(tag), len));
    if (header(b, tag, vr, len + (len & 1))) return b->err;
    if (len) put(b, data, len);
    if (len & 1) b->data[b->len++] = 0;
    return MP_OK;
}

static int push(mp_dcmw_buf_t *b, uint32_t tag, int is_item) {
    if (b->depth >= MP_DCMW_MAX_DEPTH)
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM sequences nested deeper than %d", MP_DCMW_MAX_DEPTH));
    b->open[b->depth].len_at = b->len - 4;
    b->open[b->depth].is_item = is_item;
    b->open[b->depth].tag = tag;
    b->depth++;
    b->last_tag[b->depth] = 0;
    return MP_OK;
}

int mp_dcmw_seq_begin(mp_dcmw_buf_t *b, uint32_t tag) {
    if (header(b, tag, "SQ", 0)) return b->err;
    return push(b, tag, 0);
}

int mp_dcmw_item_begin(mp_dcmw_buf_t *b) {
    if (b->err) return b->err;
    if (b->depth == 0 || b->open[b->depth - 1].is_item)
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM item outside a sequence"));
    if (reserve(b, 8)) return b->err;
    put16(b, 0xFFFE);
    put16(b, 0xE000);
    put32(b, 0);
    return push(b, b->open[b->depth - 1].tag, 1);
}

static int pop(mp_dcmw_buf_t *b, int is_item) {
    if (b->err) return b->err;
    if (b->depth == 0 || b->open[b->depth - 1].is_item != is_item)
        return fail(b, mp_error_set(MP_ERR_INTERNAL, "DICOM %s closed while none is open", is_item ? "item" : "sequence"));
    size_t at = b->open[--b->depth].len_at;
    size_t len = b->len - (at + 4);
    if (len >= 0xFFFFFFFFu)
        return fail(b, mp_error_set(MP_ERR_LIMIT, "DICOM " TAGF ": sequence of %zu bytes does not fit a 32-bit length",
                                    TAGA(b->open[b->depth].tag), len));
    patch32(b, at, (uint32_t)len);
    return MP_OK;
}

int mp_dcmw_item_end(mp_dcmw_buf_t *b) { return pop(b, 1); }
int mp_dcmw_seq_end(mp_dcmw_buf_t *b) { return pop(b, 0); }

int mp_dcmw_code_seq(mp_dcmw_buf_t *b, uint32_t tag, const char *value, const char *scheme, const char *meaning) {
    mp_dcmw_seq_begin(b, tag);
    mp_dcmw_item_begin(b);
    mp_dcmw_str(b, MP_DCMW_TAG(0x0008, 0x0100), "SH", value);
    mp_dcmw_str(b, MP_DCMW_TAG(0x0008, 0x0102), "SH", scheme);
    mp_dcmw_str(b, MP_DCMW_TAG(0x0008, 0x0104), "LO", meaning);
    mp_dcmw_item_end(b);
    return mp_dcmw_seq_end(b);
}

/* Preamble, "DICM" and the file meta group, whose group length counts the
 * bytes of every meta element after it. */
static int build_meta(mp_dcmw_buf_t *out, const char *sop_class_uid, const char *sop_instance_uid,
                      const mp_dcmw_buf_t *ds) {
    if (ds->err) return ds->err;
    if (ds->depth != 0) return mp_error_set(MP_ERR_INTERNAL, "DICOM data set has %d open sequences", ds->depth);
    mp_dcmw_buf_t meta;
    mp_dcmw_buf_init(&meta);
    static const uint8_t version[2] = {0, 1};
    mp_dcmw_bytes(&meta, MP_DCMW_TAG(0x0002, 0x0001), "OB", version, 2);
    mp_dcmw_str(&meta, MP_DCMW_TAG(0x0002, 0x0002), "UI", sop_class_uid);
    mp_dcmw_str(&meta, MP_DCMW_TAG(0x0002, 0x0003), "UI", sop_instance_uid);
    mp_dcmw_str(&meta, MP_DCMW_TAG(0x0002, 0x0010), "UI", MP_DCMW_EXPLICIT_LE);
    mp_dcmw_str(&meta, MP_DCMW_TAG(0x0002, 0x0012), "UI", MP_DCMW_IMPL_CLASS_UID);
    mp_dcmw_str(&meta, MP_DCMW_TAG(0x0002, 0x0013), "SH", MP_DCMW_IMPL_VERSION);
    int rc = meta.err;
    mp_dcmw_buf_init(out);
    if (!rc && !reserve(out, 132 + 12 + meta.len)) {
        memset(out->data, 0, 128);
        memcpy(out->data + 128, "DICM", 4);
        out->len = 132;
        uint32_t glen = (uint32_t)meta.len;
        mp_dcmw_ul(out, MP_DCMW_TAG(0x0002, 0x0000), &glen, 1);
        if (!out->err) put(out, meta.data, meta.len);
    }
    if (!rc) rc = out->err;
    mp_dcmw_buf_deinit(&meta);
    if (rc) mp_dcmw_buf_deinit(out);
    return rc;
}

int mp_dcmw_file_bytes(uint8_t **out, size_t *out_len, const char *sop_class_uid, const char *sop_instance_uid,
                       const mp_dcmw_buf_t *ds) {
    *out = NULL;
    *out_len = 0;
    mp_dcmw_buf_t head;
    int rc = build_meta(&head, sop_class_uid, sop_instance_uid, ds);
    if (rc) return rc;
    if (reserve(&head, ds->len)) {
        rc = head.err;
        mp_dcmw_buf_deinit(&head);
        return rc;
    }
    if (ds->len) put(&head, ds->data, ds->len);
    *out = head.data;
    *out_len = head.len;
    return MP_OK;
}

int mp_dcmw_write_file(const char *path, const char *sop_class_uid, const char *sop_instance_uid,
                       const mp_dcmw_buf_t *ds) {
    mp_dcmw_buf_t head;
    int rc = build_meta(&head, sop_class_uid, sop_instance_uid, ds);
    if (rc) return mp_error_wrap(rc, "%s: ", path);
    mp_afile_t f;
    rc = mp_afile_open(&f, path);
    if (!rc) rc = mp_afile_write(&f, head.data, head.len);
    if (!rc && ds->len) rc = mp_afile_write(&f, ds->data, ds->len);
    if (!rc) rc = mp_afile_commit(&f);
    else mp_afile_abort(&f);
    mp_dcmw_buf_deinit(&head);
    return rc;
}

void mp_dcmw_now(char date[9], char time_[7]) {
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(date, 9, "%Y%m%d", &tm);
    strftime(time_, 7, "%H%M%S", &tm);
}
