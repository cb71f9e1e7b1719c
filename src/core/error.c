/* Per-thread error messages and the logging callback: the library reports
 * through these and never prints on its own. */
#include "medpipe/core.h"

#include <stdarg.h>
#include <string.h>

#define MP_ERRBUF 1024

static _Thread_local char err_buf[MP_ERRBUF];
static mp_log_fn log_fn = NULL;
static void *log_user = NULL;

int mp_error_set(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    return code;
}

int mp_error_wrap(int code, const char *fmt, ...) {
    char prefix[MP_ERRBUF], old[MP_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    size_t a = strlen(prefix), b = strnlen(old, sizeof old - 1);
    if (a > sizeof err_buf - 1) a = sizeof err_buf - 1;
    if (b > sizeof err_buf - 1 - a) b = sizeof err_buf - 1 - a;
    memcpy(err_buf, prefix, a);
    memcpy(err_buf + a, old, b);
    err_buf[a + b] = '\0';
    return code;
}

const char *mp_error_message(void) { return err_buf; }

void mp_error_clear(void) { err_buf[0] = '\0'; }

const char *mp_status_name(int code) {
    switch (code) {
    case MP_OK: return "ok";
    case MP_ERR_IO: return "I/O error";
    case MP_ERR_FORMAT: return "format error";
    case MP_ERR_NOMEM: return "out of memory";
    case MP_ERR_ARG: return "invalid argument";
    case MP_ERR_LIMIT: return "limit exceeded";
    case MP_ERR_UNSUPPORTED: return "unsupported";
    case MP_ERR_MISMATCH: return "mismatch";
    case MP_ERR_INTERNAL: return "internal error";
    case MP_ERR_NONFINITE: return "non-finite value";
    default: return "unknown error";
    }
}

void mp_log_set_callback(mp_log_fn fn, void *user) {
    log_fn = fn;
    log_user = user;
}

void mp_log(mp_log_level_t level, const char *fmt, ...) {
    if (!log_fn) return;
    char msg[MP_ERRBUF];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_fn(level, msg, log_user);
}
