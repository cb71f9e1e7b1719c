/* Shared pieces of the medpipe command: logging to stderr, error and usage
 * messages, and strict number parsing for options. */
#include "cli/cli.h"
#include "medpipe/core.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int min_level = MP_LOG_INFO;

static void log_to_stderr(mp_log_level_t level, const char *msg, void *user) {
    (void)user;
    if ((int)level < min_level) return;
    static const char *names[] = {"debug", "info", "warning", "error"};
    if (level == MP_LOG_INFO) fprintf(stderr, "%s\n", msg);
    else fprintf(stderr, "%s: %s\n", names[level], msg);
}

void mp_cli_init_logging(int verbose) {
    min_level = verbose ? MP_LOG_DEBUG : MP_LOG_INFO;
    mp_log_set_callback(log_to_stderr, NULL);
}

int mp_cli_fail(const char *cmd) {
    const char *m = mp_error_message();
    fprintf(stderr, "medpipe %s: %s\n", cmd, m[0] ? m : "failed");
    return MP_EXIT_FAIL;
}

int mp_cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "medpipe %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'medpipe %s --help')\n", cmd);
    return MP_EXIT_USAGE;
}

int mp_cli_parse_int(const char *s, int64_t *out) {
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

int mp_cli_parse_double(const char *s, double *out) {
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || v != v) return -1;
    *out = v;
    return 0;
}

/* Splits "a,b,c" (exactly n fields) and parses each with `one`. */
static int parse_list(const char *s, void *out, int n, int is_int) {
    char buf[256];
    if (!s || strlen(s) >= sizeof buf) return -1;
    strcpy(buf, s);
    char *save = NULL, *tok = strtok_r(buf, ",", &save);
    for (int i = 0; i < n; i++) {
        if (!tok) return -1;
        int rc = is_int ? mp_cli_parse_int(tok, (int64_t *)out + i) : mp_cli_parse_double(tok, (double *)out + i);
        if (rc) return -1;
        tok = strtok_r(NULL, ",", &save);
    }
    return tok ? -1 : 0;
}

int mp_cli_parse_ints(const char *s, int64_t *out, int n) { return parse_list(s, out, n, 1); }
int mp_cli_parse_doubles(const char *s, double *out, int n) { return parse_list(s, out, n, 0); }

/* "512M", "4G", "1.5GiB", "123" -> bytes (binary units). */
int mp_cli_parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1048576.0; end++; break;
    case 'G': mul = 1073741824.0; end++; break;
    case 'T': mul = 1099511627776.0; end++; break;
    default: break;
    }
    if (toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end || v * mul > 1.8e19) return -1;
    *out = (uint64_t)(v * mul);
    return 0;
}

char *mp_cli_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (p) snprintf(p, a + b + 2, "%s%s%s", dir, a && dir[a - 1] == '/' ? "" : "/", name);
    return p;
}

char *mp_cli_base_name(const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && path[b - 1] != '/') b--;
    return strndup(path + b, n - b);
}
