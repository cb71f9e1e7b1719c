/* medpipe jsonl: machine-readable logs as JSON lines, one object per line.
 * Each record is built in memory and handed to the kernel with one write()
 * on an O_APPEND descriptor, so a killed run keeps every complete line and
 * several processes (MPI ranks) appending to one file never interleave
 * within a line. Numbers round-trip exactly (shortest of %.15g/%.16g/%.17g
 * that reads back bit-identical); NaN and infinities are written as null;
 * strings are escaped and invalid UTF-8 is replaced by U+FFFD, so every line
 * is valid JSON. One mp_jsonl_t is not safe to share between threads. */
#ifndef MEDPIPE_JSONL_H
#define MEDPIPE_JSONL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cJSON; /* <cjson/cJSON.h>; only mp_jsonl_write and mp_json_print need it */

typedef struct {
    int fd;        /* -1 when closed */
    char *path;
    char *buf;     /* line being built */
    size_t len, cap;
    int64_t lines; /* records written through this handle */
} mp_jsonl_t;

/* Opens `path` for logging. append != 0 keeps existing lines (and drops an
 * incomplete last line left by a killed writer); append == 0 truncates. */
int mp_jsonl_open(mp_jsonl_t *log, const char *path, int append);

/* Writes one JSON object (a cJSON tree) as one line. */
int mp_jsonl_write(mp_jsonl_t *log, const struct cJSON *obj);

/* ---- flat records without building a cJSON tree ---- */
typedef enum { MP_JSON_NULL = 0, MP_JSON_INT, MP_JSON_F64, MP_JSON_STR, MP_JSON_BOOL } mp_json_kind_t;

typedef struct {
    const char *key;
    mp_json_kind_t kind;
    union {
        int64_t i;
        double f;
        const char *s; /* NULL writes null */
        int b;
    } v;
} mp_jsonl_field_t;

/* Typed field constructors; the argument is converted, so any integer or
 * floating type may be passed. */
#define MP_JF_INT(k, x) ((mp_jsonl_field_t){(k), MP_JSON_INT, {.i = (int64_t)(x)}})
#define MP_JF_F64(k, x) ((mp_jsonl_field_t){(k), MP_JSON_F64, {.f = (double)(x)}})
#define MP_JF_STR(k, x) ((mp_jsonl_field_t){(k), MP_JSON_STR, {.s = (x)}})
#define MP_JF_BOOL(k, x) ((mp_jsonl_field_t){(k), MP_JSON_BOOL, {.b = !!(x)}})
#define MP_JF_NULL(k) ((mp_jsonl_field_t){(k), MP_JSON_NULL, {.i = 0}})

/* Writes {"k1":v1,"k2":v2,...} as one line, keys in the given order. */
int mp_jsonl_write_fields(mp_jsonl_t *log, const mp_jsonl_field_t *fields, size_t n);

/* mp_jsonl_record(&log, MP_JF_STR("event", "step"), MP_JF_INT("step", 3), MP_JF_F64("loss", 0.5)); */
#define mp_jsonl_record(log, ...)                                                      \
    mp_jsonl_write_fields((log), (const mp_jsonl_field_t[]){__VA_ARGS__},             \
                          sizeof((const mp_jsonl_field_t[]){__VA_ARGS__}) / sizeof(mp_jsonl_field_t))

/* fsyncs and closes; safe on a closed or zeroed handle (returns 0). */
int mp_jsonl_close(mp_jsonl_t *log);

/* ---- the serializer on its own ---- */
/* One-line JSON text of a cJSON tree with exact numbers (see above); free()
 * the result. NULL on allocation failure or a tree deeper than 256 levels. */
char *mp_json_print(const struct cJSON *item);
/* Shortest text of d that reads back identically ("null" for NaN/inf);
 * buf needs 32 bytes. Returns buf. */
const char *mp_json_format_double(double d, char buf[32]);

#ifdef __cplusplus
}
#endif
#endif
