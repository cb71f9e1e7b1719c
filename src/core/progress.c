/* Progress reporting and the monotonic clock. On a terminal: one bar line
 * redrawn in place with rate and ETA; elsewhere (logs, CI): a plain line every
 * few seconds, so long work is visible without flooding a file. */
#include "medpipe/core.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

double mp_time_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void mp_progress_init(mp_progress_t *p, FILE *out, const char *label, const char *unit, int64_t total) {
    memset(p, 0, sizeof *p);
    p->out = out;
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t_start = p->t_last = mp_time_now();
    p->log_every = 5.0;
    p->is_tty = out && isatty(fileno(out));
}

static void format_eta(char *buf, size_t n, double seconds) {
    if (seconds < 0 || seconds > 1e7) {
        snprintf(buf, n, "--:--");
        return;
    }
    int s = (int)(seconds + 0.5);
    if (s >= 3600) snprintf(buf, n, "%d:%02d:%02d", s / 3600, (s / 60) % 60, s % 60);
    else snprintf(buf, n, "%02d:%02d", s / 60, s % 60);
}

static void draw(mp_progress_t *p, const char *extra, int final) {
    double now = mp_time_now();
    double el = now - p->t_start;
    double rate = el > 0 ? (double)p->done / el : 0;
    double eta = rate > 0 ? (double)(p->total - p->done) / rate : -1;
    char eta_s[32];
    format_eta(eta_s, sizeof eta_s, final ? el : eta);
    double frac = p->total > 0 ? (double)p->done / (double)p->total : 0;
    if (frac > 1) frac = 1;
    if (p->is_tty) {
        char bar[31];
        int filled = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '.';
        bar[30] = '\0';
        fprintf(p->out, "\r%s [%s] %lld/%lld %.2f %s/s %s %s %s\033[K", p->label, bar,
                (long long)p->done, (long long)p->total, rate, p->unit, final ? "took" : "ETA", eta_s,
                extra ? extra : "");
        if (final) fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %lld/%lld (%.0f%%) %.2f %s/s %s %s %s\n", p->label, (long long)p->done,
                (long long)p->total, 100 * frac, rate, p->unit, final ? "took" : "ETA", eta_s,
                extra ? extra : "");
    }
    fflush(p->out);
    p->t_last = now;
}

void mp_progress_update(mp_progress_t *p, int64_t done, const char *extra) {
    p->done = done;
    if (!p->out) return;
    double now = mp_time_now();
    double every = p->is_tty ? 0.1 : p->log_every;
    if (now - p->t_last >= every) draw(p, extra, 0);
}

void mp_progress_finish(mp_progress_t *p, const char *extra) {
    if (p->out) draw(p, extra, 1);
}
