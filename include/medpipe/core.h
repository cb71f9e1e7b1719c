/* medpipe core: status codes, error messages, logging callback, memory limit,
 * checked arithmetic, counter-based RNG, thread pool, atomic file output,
 * progress reporting and timing. Everything else in the library builds on it. */
#ifndef MEDPIPE_CORE_H
#define MEDPIPE_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes: 0 is success, every failure is negative ---- */
typedef enum {
    MP_OK = 0,
    MP_ERR_IO = -1,          /* open/read/write/rename failed */
    MP_ERR_FORMAT = -2,      /* the input is malformed */
    MP_ERR_NOMEM = -3,       /* allocation failed */
    MP_ERR_ARG = -4,         /* bad argument from the caller */
    MP_ERR_LIMIT = -5,       /* input exceeds a configured limit (memory, depth) */
    MP_ERR_UNSUPPORTED = -6, /* valid input that medpipe does not handle */
    MP_ERR_MISMATCH = -7,    /* shapes/geometry/names disagree */
    MP_ERR_INTERNAL = -8,    /* a bug: an invariant did not hold */
    MP_ERR_NONFINITE = -9    /* a computation produced inf/NaN (e.g. a diverging loss) */
} mp_status_t;

/* Records a formatted message for the calling thread and returns `code`,
 * so that failures read `return mp_error_set(MP_ERR_FORMAT, "%s: ...", path);`. */
int mp_error_set(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prepends context ("while reading X: ") to the current message; returns code. */
int mp_error_wrap(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Last message set on this thread ("" when none). */
const char *mp_error_message(void);
void mp_error_clear(void);
/* Short name of a status code, e.g. "format error". */
const char *mp_status_name(int code);

/* ---- logging: the library never prints; it calls this callback ---- */
typedef enum { MP_LOG_DEBUG = 0, MP_LOG_INFO = 1, MP_LOG_WARN = 2, MP_LOG_ERROR = 3 } mp_log_level_t;
typedef void (*mp_log_fn)(mp_log_level_t level, const char *msg, void *user);
/* Installs the callback (NULL silences the library). Not thread-safe: call at start-up. */
void mp_log_set_callback(mp_log_fn fn, void *user);
void mp_log(mp_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- memory limit for anything sized by an input file ---- */
/* Default 16 GiB; a parser refuses (MP_ERR_LIMIT) an allocation above it. */
void mp_mem_set_limit(uint64_t bytes);
uint64_t mp_mem_limit(void);
/* *out = a*b; returns 0, or -1 on overflow. */
int mp_mul_u64(uint64_t a, uint64_t b, uint64_t *out);
/* Allocation helpers: 64-byte aligned, zeroed for _zalloc; free with mp_free. */
void *mp_alloc(size_t bytes);
void *mp_zalloc(size_t bytes);
void mp_free(void *p);

/* ---- counter-based RNG (Philox4x32-10) ----
 * A stream is keyed by (seed, stream id); draws depend only on the key and
 * on how many numbers were drawn, never on threads or timing. */
typedef struct {
    uint64_t key;      /* seed */
    uint64_t stream;   /* stream id, e.g. hash(epoch, step, sample) */
    uint64_t counter;  /* index of the next 4-word block */
    uint32_t buf[4];
    int pos;           /* next unused word in buf; 4 = empty */
} mp_rng_t;

void mp_rng_init(mp_rng_t *r, uint64_t seed, uint64_t stream);
/* Mixes several integers into one stream id (e.g. epoch, step, sample). */
uint64_t mp_rng_stream_id(uint64_t a, uint64_t b, uint64_t c);
uint32_t mp_rng_u32(mp_rng_t *r);
uint64_t mp_rng_u64(mp_rng_t *r);
double mp_rng_uniform(mp_rng_t *r);               /* [0, 1) with 53 bits */
double mp_rng_range(mp_rng_t *r, double lo, double hi); /* [lo, hi) */
uint64_t mp_rng_below(mp_rng_t *r, uint64_t n);   /* [0, n), unbiased; n > 0 */
double mp_rng_normal(mp_rng_t *r);                /* N(0, 1) */
/* One Philox4x32-10 block: the raw primitive, exposed for tests. */
void mp_philox4x32(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]);

/* ---- thread pool: static partition of [0, n) so results are reproducible ---- */
typedef struct mp_pool mp_pool_t;
/* nthreads <= 0: number of online CPUs. */
mp_pool_t *mp_pool_create(int nthreads);
void mp_pool_free(mp_pool_t *pool);
int mp_pool_threads(const mp_pool_t *pool);
/* Calls fn(ctx, begin, end, worker) on contiguous chunks of [0, n), worker in
 * [0, threads); chunk boundaries depend only on n and the thread count.
 * pool == NULL runs fn(ctx, 0, n, 0) in the caller. Blocks until done. */
typedef void (*mp_range_fn)(void *ctx, int64_t begin, int64_t end, int worker);
void mp_pool_parallel_for(mp_pool_t *pool, int64_t n, mp_range_fn fn, void *ctx);
/* Number of online CPUs. */
int mp_cpu_count(void);

/* ---- atomic output: write to PATH.tmp.XXXXXX, fsync, rename over PATH ---- */
typedef struct {
    FILE *fp;
    char *path;     /* final path */
    char *tmp_path; /* temporary path in the same directory */
    int failed;     /* a write failed; commit will refuse */
} mp_afile_t;

int mp_afile_open(mp_afile_t *f, const char *path);
int mp_afile_write(mp_afile_t *f, const void *data, size_t len);
/* Flushes, fsyncs, renames over the final path and fsyncs the directory. */
int mp_afile_commit(mp_afile_t *f);
/* Removes the temporary file; safe after commit or on a zeroed struct. */
void mp_afile_abort(mp_afile_t *f);
/* Whole-buffer convenience. */
int mp_file_write_atomic(const char *path, const void *data, size_t len);
/* Reads a whole file (refusing more than mp_mem_limit()). *data is freed with free(). */
int mp_file_read_all(const char *path, uint8_t **data, size_t *len);
/* 1 when `path` names an existing regular file (following links). */
int mp_file_is_regular(const char *path);
/* 1 when `path` ends with `suffix`, ignoring ASCII case (".nii.gz", ".DCM"). */
int mp_path_has_suffix(const char *path, const char *suffix);
/* Creates a directory and its parents (like mkdir -p). */
int mp_mkdir_p(const char *path);

/* ---- time and progress ---- */
double mp_time_now(void); /* monotonic seconds */

/* A progress reporter: a bar with rate and ETA when `out` is a terminal, a
 * plain line every `log_every` seconds otherwise. The CLI owns `out`. */
typedef struct {
    FILE *out;
    const char *label;
    const char *unit;
    int64_t total;
    int64_t done;
    double t_start;
    double t_last;
    double log_every;
    int is_tty;
} mp_progress_t;

void mp_progress_init(mp_progress_t *p, FILE *out, const char *label, const char *unit, int64_t total);
void mp_progress_update(mp_progress_t *p, int64_t done, const char *extra);
void mp_progress_finish(mp_progress_t *p, const char *extra);

#ifdef __cplusplus
}
#endif
#endif
