/* JSON-lines logs: a small exact JSON serializer (cJSON's own printer
 * rounds doubles to a relative epsilon, so it does not round-trip) and an
 * append-only writer that emits each record with a single write(). */
#include "medpipe/jsonl.h"
#include "medpipe/core.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 256

/* ---------------------------------------------------------------- buffer */

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} sbuf_t;

static void sb_reserve(sbuf_t *b, size_t extra) {
    if (b->failed) return;
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->failed = 1;
            return;
        }
        cap *= 2;
    }
    char *np = realloc(b->p, cap);
    if (!np) {
        b->failed = 1;
        return;
    }
    b->p = np;
    b->cap = cap;
}

static void sb_put(sbuf_t *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (b->failed) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }

/* ---------------------------------------------------------------- values */

const char *mp_json_format_double(double d, char buf[32]) {
    if (!isfinite(d)) {
        memcpy(buf, "null", 5);
        return buf;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, 32, "%.*g", prec, d);
        /* A locale with a decimal comma would break JSON; numbers from %g
         * contain no other comma. */
        for (char *c = buf; *c; c++)
            if (*c == ',') *c = '.';
        if (prec == 17 || strtod(buf, NULL) == d) break;
    }
    return buf;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f; /* no UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

static void put_string(sbuf_t *b, const char *str) {
    if (!str) {
        sb_puts(b, "null");
        return;
    }
    const unsigned char *s = (const unsigned char *)str;
    size_t n = strlen(str);
    sb_put(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        /* Copy the longest run that needs no escaping in one go. */
        size_t j = i;
        while (j < n && s[j] >= 0x20 && s[j] < 0x80 && s[j] != '"' && s[j] != '\\') j++;
        if (j > i) sb_put(b, (const char *)s + i, j - i);
        i = j;
        if (i >= n) break;
        unsigned c = s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_put(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            const char *named = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (named) sb_puts(b, named);
            else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                sb_puts(b, esc);
            }
            i++;
        } else {
            size_t len = utf8_len(s + i, n - i);
            if (len) sb_put(b, (const char *)s + i, len);
            else sb_puts(b, "\\ufffd");
            i += len ? len : 1;
        }
    }
    sb_put(b, "\"", 1);
}

static void put_double(sbuf_t *b, double d) {
    char num[32];
    sb_puts(b, mp_json_format_double(d, num));
}

/* ---------------------------------------------------------------- cJSON trees */

static int put_item(sbuf_t *b, const cJSON *item, int depth) {
    if (depth > MAX_DEPTH) return mp_error_set(MP_ERR_LIMIT, "json: nesting deeper than %d levels", MAX_DEPTH);
    switch (item->type & 0xff) {
    case cJSON_False: sb_puts(b, "false"); break;
    case cJSON_True: sb_puts(b, "true"); break;
    case cJSON_NULL: sb_puts(b, "null"); break;
    case cJSON_Number: put_double(b, item->valuedouble); break;
    case cJSON_String: put_string(b, item->valuestring); break;
    case cJSON_Raw:
        if (!item->valuestring || strpbrk(item->valuestring, "\r\n"))
            return mp_error_set(MP_ERR_ARG, "json: raw item is empty or spans lines");
        sb_puts(b, item->valuestring);
        break;
    case cJSON_Array:
    case cJSON_Object: {
        int obj = (item->type & 0xff) == cJSON_Object;
        sb_put(b, obj ? "{" : "[", 1);
        for (const cJSON *c = item->child; c; c = c->next) {
            if (c != item->child) sb_put(b, ",", 1);
            if (obj) {
                put_string(b, c->string ? c->string : "");
                sb_put(b, ":", 1);
            }
            int rc = put_item(b, c, depth + 1);
            if (rc) return rc;
        }
        sb_put(b, obj ? "}" : "]", 1);
        break;
    }
    default: return mp_error_set(MP_ERR_ARG, "json: item of unknown type %d", item->type & 0xff);
    }
    return b->failed ? mp_error_set(MP_ERR_NOMEM, "json: out of memory") : MP_OK;
}

char *mp_json_print(const cJSON *item) {
    if (!item) return NULL;
    sbuf_t b = {0};
    if (put_item(&b, item, 0) != MP_OK || b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---------------------------------------------------------------- the log */

/* Drops bytes after the last newline: the tail of a line whose writer was
 * killed mid-write, which no reader could parse. */
static int trim_partial_line(int fd, const char *path) {
    struct stat st;
    if (fstat(fd, &st) != 0) return mp_error_set(MP_ERR_IO, "%s: stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_size == 0) return MP_OK;
    off_t end = st.st_size, pos = end;
    char chunk[4096];
    while (pos > 0) {
        size_t n = pos > (off_t)sizeof chunk ? sizeof chunk : (size_t)pos;
        ssize_t r = pread(fd, chunk, n, pos - (off_t)n);
        if (r != (ssize_t)n) return mp_error_set(MP_ERR_IO, "%s: read: %s", path, r < 0 ? strerror(errno) : "short read");
        size_t i = n;
        while (i > 0 && chunk[i - 1] != '\n') i--;
        if (i > 0) {
            pos = pos - (off_t)n + (off_t)i;
            break;
        }
        pos -= (off_t)n;
    }
    if (pos == end) return MP_OK;
    if (ftruncate(fd, pos) != 0) return mp_error_set(MP_ERR_IO, "%s: truncate: %s", path, strerror(errno));
    mp_log(MP_LOG_WARN, "%s: dropped an incomplete last line (%lld bytes)", path, (long long)(end - pos));
    return MP_OK;
}

int mp_jsonl_open(mp_jsonl_t *log, const char *path, int append) {
    if (!log || !path || !*path) return mp_error_set(MP_ERR_ARG, "jsonl: no path");
    memset(log, 0, sizeof *log);
    log->fd = -1;
    int flags = O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | (append ? 0 : O_TRUNC);
    int fd = open(path, flags, 0644);
    if (fd < 0) return mp_error_set(MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* Every open handle holds a shared lock. A partial last line may only be
     * trimmed when no other writer holds the file (exclusive lock granted):
     * a live writer's line can be visible half-copied to a reader, and
     * trimming it would cut lines that writer is still appending. */
    if (append && flock(fd, LOCK_EX | LOCK_NB) == 0) {
        int rc = trim_partial_line(fd, path);
        if (rc) {
            close(fd);
            return rc;
        }
    }
    flock(fd, LOCK_SH);
    log->path = strdup(path);
    if (!log->path) {
        close(fd);
        return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    }
    log->fd = fd;
    return MP_OK;
}

/* Hands the line to the kernel; retries partial writes and EINTR. */
static int write_line(mp_jsonl_t *log, sbuf_t *b) {
    sb_put(b, "\n", 1);
    if (b->failed) return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", log->path);
    size_t off = 0;
    while (off < b->len) {
        ssize_t w = write(log->fd, b->p + off, b->len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return mp_error_set(MP_ERR_IO, "%s: write: %s", log->path, w < 0 ? strerror(errno) : "no progress");
        off += (size_t)w;
    }
    log->lines++;
    return MP_OK;
}

/* The line buffer is kept in the handle so steady logging does not allocate. */
static sbuf_t take_buf(mp_jsonl_t *log) {
    sbuf_t b = {log->buf, 0, log->cap, 0};
    return b;
}

static void keep_buf(mp_jsonl_t *log, sbuf_t *b) {
    log->buf = b->p;
    log->cap = b->cap;
    log->len = 0;
}

int mp_jsonl_write(mp_jsonl_t *log, const cJSON *obj) {
    if (!log || !log->path) return mp_error_set(MP_ERR_ARG, "jsonl: log is not open");
    if (!cJSON_IsObject(obj)) return mp_error_set(MP_ERR_ARG, "%s: a JSON-lines record must be an object", log->path);
    sbuf_t b = take_buf(log);
    int rc = put_item(&b, obj, 0);
    if (rc == MP_OK) rc = write_line(log, &b);
    keep_buf(log, &b);
    return rc;
}

int mp_jsonl_write_fields(mp_jsonl_t *log, const mp_jsonl_field_t *fields, size_t n) {
    if (!log || !log->path) return mp_error_set(MP_ERR_ARG, "jsonl: log is not open");
    if (n && !fields) return mp_error_set(MP_ERR_ARG, "%s: no fields", log->path);
    sbuf_t b = take_buf(log);
    sb_put(&b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        const mp_jsonl_field_t *f = &fields[i];
        if (!f->key) {
            keep_buf(log, &b);
            return mp_error_set(MP_ERR_ARG, "%s: field %zu has no key", log->path, i);
        }
        if (i) sb_put(&b, ",", 1);
        put_string(&b, f->key);
        sb_put(&b, ":", 1);
        char num[32];
        switch (f->kind) {
        case MP_JSON_INT:
            snprintf(num, sizeof num, "%" PRId64, f->v.i);
            sb_puts(&b, num);
            break;
        case MP_JSON_F64: put_double(&b, f->v.f); break;
        case MP_JSON_STR: put_string(&b, f->v.s); break;
        case MP_JSON_BOOL: sb_puts(&b, f->v.b ? "true" : "false"); break;
        case MP_JSON_NULL: sb_puts(&b, "null"); break;
        default:
            keep_buf(log, &b);
            return mp_error_set(MP_ERR_ARG, "%s: field '%s' has unknown kind %d", log->path, f->key, (int)f->kind);
        }
    }
    sb_put(&b, "}", 1);
    int rc = write_line(log, &b);
    keep_buf(log, &b);
    return rc;
}

int mp_jsonl_close(mp_jsonl_t *log) {
    if (!log || !log->path) return MP_OK;
    int rc = MP_OK;
    /* fsync fails with EINVAL on pipes and character devices: not an error. */
    if (fsync(log->fd) != 0 && errno != EINVAL && errno != EROFS)
        rc = mp_error_set(MP_ERR_IO, "%s: fsync: %s", log->path, strerror(errno));
    if (close(log->fd) != 0 && rc == MP_OK) rc = mp_error_set(MP_ERR_IO, "%s: close: %s", log->path, strerror(errno));
    free(log->path);
    free(log->buf);
    memset(log, 0, sizeof *log);
    log->fd = -1;
    return rc;
}
