/* medpipe bench table: trains and evaluates the demo configuration under
 * each execution strategy and writes one Markdown + JSON table (one row per
 * strategy). Every measurement is a child process of this very binary
 * (synth, preprocess, train, predict, evaluate; train under mpirun for the
 * multi-rank row), so a row measures exactly what a user would run; the
 * figures come from the files those commands write (log.jsonl,
 * predict.jsonl, summary.json) and the peak RSS from wait4() (the child and
 * every descendant it reaped: for mpirun, its ranks). A strategy this build
 * or CPU cannot run is a row that says so, never a number. */
#include "cli/cli.h"
#include "medpipe/core.h"
#include "medpipe/jsonl.h"
#include "medpipe/sysinfo.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define CMD "bench table"
#define BT_PATH 4200
#define BT_ARGS 48
#define BT_MARKER ".medpipe-bench-work"

typedef enum { BT_FULL = 0, BT_QUICK, BT_TINY } bt_mode_t;

typedef struct {
    bt_mode_t mode;
    const char *out;
    int threads;
    int64_t epochs, iters, val_cases, val_every;
    int cases, test_cases;
    char exe[BT_PATH], mpirun[BT_PATH];
    char work[BT_PATH], data[BT_PATH], cache[BT_PATH];
    int batch;                 /* the plan's global batch */
    char patch[64];            /* the plan's patch, "48x48x48" */
    int stages;
    char cpu[128], isa[32];
    int bf16_cpu;              /* the CPU has AVX512-BF16 or AMX-BF16 */
    int verbose;
} bt_ctx_t;

typedef enum { BT_OK = 0, BT_UNSUPPORTED, BT_FAILED } bt_status_t;

typedef struct {
    const char *key, *name, *precision;
    int ranks, threads, workers, batch, batch_alt; /* batch_alt: the inference row's comparison batch */
    bt_status_t status;
    char note[320];
    double train_pps, infer_vps, infer_vps_alt, dice, peak_mb, train_s;
} bt_row_t;

/* ---- small helpers ---- */

/* A path into a BT_PATH buffer (--out is limited so that every path fits). */
static void pathf(char *dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pathf(char *dst, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, BT_PATH, fmt, ap);
    va_end(ap);
}

static void join(char *dst, const char *a, const char *b) { pathf(dst, "%s/%s", a, b); }

static void say(const bt_ctx_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const bt_ctx_t *c, const char *fmt, ...) {
    if (c->mode == BT_TINY && !c->verbose) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* First executable `name` on PATH, or "" */
static void find_in_path(const char *name, char *out) {
    const char *p = getenv("PATH");
    out[0] = 0;
    while (p && *p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char cand[BT_PATH];
        if (n > 0 && n < BT_PATH - 64) {
            snprintf(cand, sizeof cand, "%.*s/%s", (int)n, p, name);
            if (access(cand, X_OK) == 0) {
                snprintf(out, BT_PATH, "%s", cand);
                return;
            }
        }
        p = e ? e + 1 : NULL;
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Empties the work folder; only one this command made (it holds the marker). */
static int reset_work(const bt_ctx_t *c) {
    char marker[BT_PATH];
    join(marker, c->work, BT_MARKER);
    struct stat st;
    if (stat(c->work, &st) == 0) {
        if (!mp_file_is_regular(marker))
            return mp_error_set(MP_ERR_ARG, "%s: exists but was not made by medpipe bench table; "
                                "remove it or choose another --out", c->work);
        if (nftw(c->work, rm_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
            return mp_error_set(MP_ERR_IO, "%s: cannot remove the previous work folder: %s", c->work, strerror(errno));
    }
    int rc = mp_mkdir_p(c->work);
    if (!rc) rc = mp_file_write_atomic(marker, "medpipe bench table\n", 20);
    return rc;
}

/* ---- child processes ---- */

/* Runs argv[0] (a path) with stdout and stderr appended to `log`; returns its
 * exit status (-1: did not start or died by a signal). *peak_mb: the peak RSS
 * of the child and the descendants it reaped (wait4). */
static int run_child(const bt_ctx_t *c, char *const argv[], const char *log, double *peak_mb, double *wall_s) {
    FILE *f = fopen(log, "a");
    if (f) {
        fputs("$", f);
        for (int i = 0; argv[i]; i++) fprintf(f, " %s", argv[i]);
        fputc('\n', f);
        fclose(f);
    }
    if (c->verbose) {
        fputs("bench: $", stderr);
        for (int i = 0; argv[i]; i++) fprintf(stderr, " %s", argv[i]);
        fputc('\n', stderr);
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    double t0 = mp_time_now();
    int e = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
        mp_error_set(MP_ERR_IO, "%s: cannot start: %s", argv[0], strerror(e));
        return -1;
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR) return -1;
    if (wall_s) *wall_s = mp_time_now() - t0;
    if (peak_mb) *peak_mb = (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* An argv under construction. */
typedef struct {
    char *v[BT_ARGS + 1];
    char buf[BT_ARGS][32];
    int n;
} bt_argv_t;

static void av_add(bt_argv_t *a, const char *s) {
    if (a->n < BT_ARGS) a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

static void av_int(bt_argv_t *a, long long x) {
    if (a->n >= BT_ARGS) return;
    snprintf(a->buf[a->n], sizeof a->buf[a->n], "%lld", x);
    av_add(a, a->buf[a->n]);
}

/* Runs one medpipe step; a failure is an error naming the step and its log. */
static int step(const bt_ctx_t *c, bt_argv_t *a, const char *what, double *peak, double *wall) {
    char log[BT_PATH];
    pathf(log, "%s/logs/%s.log", c->work, what);
    int rc = run_child(c, a->v, log, peak, wall);
    if (rc != 0)
        return mp_error_set(MP_ERR_IO, "%s failed (exit %d): see %s", what, rc, log);
    return MP_OK;
}

static void av_medpipe(const bt_ctx_t *c, bt_argv_t *a, const char *cmd) {
    a->n = 0;
    av_add(a, c->exe);
    av_add(a, cmd);
}

/* ---- reading what the children wrote ---- */

static cJSON *read_json(const char *path) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (mp_file_read_all(path, &d, &n)) return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)d, n);
    free(d);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *str(const cJSON *o, const char *k) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* Calls fn on every JSON line of path; returns the lines parsed (-1: unreadable). */
static int each_line(const char *path, void (*fn)(void *, const cJSON *), void *user) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (mp_file_read_all(path, &d, &n)) return -1;
    int count = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && d[j] != '\n') j++;
        cJSON *o = cJSON_ParseWithLength((const char *)d + i, j - i);
        if (o) fn(user, o), count++;
        cJSON_Delete(o);
        i = j + 1;
    }
    free(d);
    return count;
}

typedef struct {
    int64_t steps, batch;
    double step_s_after_first;
    int ended;
} bt_trainlog_t;

static void on_train_line(void *user, const cJSON *o) {
    bt_trainlog_t *t = user;
    const char *ev = str(o, "event");
    if (!strcmp(ev, "start")) t->batch = (int64_t)num(o, "batch");
    else if (!strcmp(ev, "end")) t->ended = 1;
    else if (!strcmp(ev, "step")) {
        if (t->steps++ > 0) t->step_s_after_first += num(o, "step_s"); /* step 1 builds the primitives */
    }
}

typedef struct {
    int ok, failed;
    double seconds;
} bt_predlog_t;

static void on_pred_line(void *user, const cJSON *o) {
    bt_predlog_t *p = user;
    if (!strcmp(str(o, "status"), "ok")) p->ok++, p->seconds += num(o, "seconds");
    else p->failed++;
}

/* ---- one strategy ---- */

static int train(const bt_ctx_t *c, bt_row_t *r, const char *run) {
    bt_argv_t a;
    a.n = 0;
    if (r->ranks > 1) {
        av_add(&a, c->mpirun);
        if (geteuid() == 0) av_add(&a, "--allow-run-as-root");
        av_add(&a, "--oversubscribe");
        av_add(&a, "-np");
        av_int(&a, r->ranks);
        av_add(&a, c->exe);
        av_add(&a, "train");
    } else av_medpipe(c, &a, "train");
    av_add(&a, c->cache);
    av_add(&a, "--out");
    av_add(&a, run);
    const char *fixed[] = {"--optimizer", "adamw", "--lr", "3e-3", "--no-augment", "--quiet", "--batch"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) av_add(&a, fixed[i]);
    av_int(&a, r->batch);
    av_add(&a, "--epochs");
    av_int(&a, c->epochs);
    av_add(&a, "--iters-per-epoch");
    av_int(&a, c->iters);
    av_add(&a, "--val-cases");
    av_int(&a, c->val_cases);
    av_add(&a, "--val-every");
    av_int(&a, c->val_every);
    av_add(&a, "--workers");
    av_int(&a, r->workers);
    av_add(&a, "--threads");
    av_int(&a, r->threads);
    char what[64], log[BT_PATH];
    snprintf(what, sizeof what, "train_%s", r->key);
    int rc = step(c, &a, what, &r->peak_mb, &r->train_s);
    if (rc) return rc;
    bt_trainlog_t t = {0, 0, 0, 0};
    join(log, run, "log.jsonl");
    if (each_line(log, on_train_line, &t) < 0 || !t.ended || t.steps < 2 || !(t.step_s_after_first > 0))
        return mp_error_set(MP_ERR_FORMAT, "%s: no complete training log", log);
    r->train_pps = (double)t.batch * (double)(t.steps - 1) / t.step_s_after_first;
    return MP_OK;
}

/* Predicts the test images with RUN's best checkpoint; volumes/s from the
 * per-case seconds of predict.jsonl (reading, preprocessing, sliding window,
 * writing; not the process start). */
static int predict(const bt_ctx_t *c, const char *run, const char *pred, int batch, int threads, double *vps,
                   double *peak, const char *what) {
    bt_argv_t a;
    char in[BT_PATH], log[BT_PATH];
    join(in, c->data, "imagesTs");
    av_medpipe(c, &a, "predict");
    av_add(&a, "--model");
    av_add(&a, run);
    av_add(&a, "--in");
    av_add(&a, in);
    av_add(&a, "--out");
    av_add(&a, pred);
    av_add(&a, "--batch");
    av_int(&a, batch);
    av_add(&a, "--threads");
    av_int(&a, threads);
    av_add(&a, "--quiet");
    int rc = step(c, &a, what, peak, NULL);
    if (rc) return rc;
    bt_predlog_t p = {0, 0, 0};
    join(log, pred, "predict.jsonl");
    if (each_line(log, on_pred_line, &p) < 0 || p.failed || p.ok != c->test_cases || !(p.seconds > 0))
        return mp_error_set(MP_ERR_FORMAT, "%s: expected %d predicted cases", log, c->test_cases);
    *vps = (double)p.ok / p.seconds;
    return MP_OK;
}

/* Mean foreground Dice of PRED against the test labels (medpipe evaluate). */
static int evaluate(const bt_ctx_t *c, const char *pred, double *dice, const char *what) {
    bt_argv_t a;
    char ref[BT_PATH], js[BT_PATH];
    join(ref, c->data, "labelsTs");
    join(js, pred, "summary.json");
    av_medpipe(c, &a, "evaluate");
    const char *args[] = {"--pred", pred, "--ref", ref, "--json", js};
    for (size_t i = 0; i < sizeof args / sizeof *args; i++) av_add(&a, args[i]);
    int rc = step(c, &a, what, NULL, NULL);
    if (rc) return rc;
    cJSON *j = read_json(js);
    *dice = num(j ? cJSON_GetObjectItemCaseSensitive(j, "foreground_mean") : NULL, "Dice");
    cJSON_Delete(j);
    return isfinite(*dice) ? MP_OK : mp_error_set(MP_ERR_FORMAT, "%s: no foreground_mean Dice", js);
}

static void row_fail(bt_row_t *r) {
    r->status = BT_FAILED;
    snprintf(r->note, sizeof r->note, "failed: %s", mp_error_message());
    fprintf(stderr, "medpipe %s: %s: %s\n", CMD, r->key, mp_error_message());
}

/* A training row: train, predict the test cases, evaluate. */
static void run_training_row(const bt_ctx_t *c, bt_row_t *r) {
    char run[BT_PATH], pred[BT_PATH], what[64], name[80];
    snprintf(name, sizeof name, "runs/%s", r->key);
    join(run, c->work, name);
    snprintf(name, sizeof name, "pred/%s", r->key);
    join(pred, c->work, name);
    say(c, "%s: training %lld x %lld steps (%d x %d, batch %d, workers %d)", r->key, (long long)c->epochs,
        (long long)c->iters, r->ranks, r->threads, r->batch, r->workers);
    double peak_pred = 0;
    int rc = train(c, r, run);
    snprintf(what, sizeof what, "predict_%s", r->key);
    if (!rc) rc = predict(c, run, pred, r->batch, c->threads, &r->infer_vps, &peak_pred, what);
    snprintf(what, sizeof what, "evaluate_%s", r->key);
    if (!rc) rc = evaluate(c, pred, &r->dice, what);
    if (rc) return row_fail(r);
    r->status = BT_OK;
    say(c, "%s: %.2f patches/s, %.3f volumes/s, Dice %.4f, peak %.0f MiB", r->key, r->train_pps, r->infer_vps,
        r->dice, r->peak_mb);
}

/* The inference row: the prefetch row's model, batched windows vs one at a time. */
static void run_inference_row(const bt_ctx_t *c, bt_row_t *r, const char *model_key) {
    char run[BT_PATH], pred[BT_PATH], pred1[BT_PATH], name[80];
    snprintf(name, sizeof name, "runs/%s", model_key);
    join(run, c->work, name);
    join(pred, c->work, "pred/infer_batch2");
    join(pred1, c->work, "pred/infer_batch1");
    say(c, "%s: predicting %d test cases with --batch %d and --batch %d", r->key, c->test_cases, r->batch,
        r->batch_alt);
    double peak1 = 0, dice1 = NAN;
    int rc = predict(c, run, pred1, r->batch_alt, r->threads, &r->infer_vps_alt, &peak1, "predict_infer_batch1");
    if (!rc) rc = predict(c, run, pred, r->batch, r->threads, &r->infer_vps, &r->peak_mb, "predict_infer_batch2");
    if (!rc) rc = evaluate(c, pred, &r->dice, "evaluate_infer_batch2");
    if (!rc) rc = evaluate(c, pred1, &dice1, "evaluate_infer_batch1");
    if (rc) return row_fail(r);
    r->status = BT_OK;
    if (peak1 > r->peak_mb) r->peak_mb = peak1;
    snprintf(r->note, sizeof r->note, "model of the %s row; Dice with --batch %d: %.4f", model_key, r->batch_alt,
             dice1);
    say(c, "%s: %.3f volumes/s (batch %d) vs %.3f (batch %d)", r->key, r->infer_vps, r->batch, r->infer_vps_alt,
        r->batch_alt);
}

/* ---- setup: the demo dataset and cache ---- */

static int read_plan(bt_ctx_t *c) {
    char path[BT_PATH];
    join(path, c->cache, "plan.json");
    cJSON *j = read_json(path);
    const cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "patch_size_dhw") : NULL;
    c->batch = (int)num(j, "batch_size");
    c->stages = (int)num(j, "n_stages");
    int ok = cJSON_IsArray(p) && cJSON_GetArraySize(p) == 3 && c->batch >= 1 && c->stages >= 1;
    if (ok)
        snprintf(c->patch, sizeof c->patch, "%dx%dx%d", (int)cJSON_GetArrayItem(p, 0)->valuedouble,
                 (int)cJSON_GetArrayItem(p, 1)->valuedouble, (int)cJSON_GetArrayItem(p, 2)->valuedouble);
    cJSON_Delete(j);
    return ok ? MP_OK : mp_error_set(MP_ERR_FORMAT, "%s: no batch size, patch or stages", path);
}

static int setup(bt_ctx_t *c) {
    char logs[BT_PATH];
    join(c->data, c->work, "data");
    join(c->cache, c->work, "cache");
    join(logs, c->work, "logs");
    int rc = reset_work(c);
    if (!rc) rc = mp_mkdir_p(logs);
    if (rc) return rc;
    int tiny = c->mode == BT_TINY;
    bt_argv_t a;
    av_medpipe(c, &a, "synth");
    av_add(&a, "--out");
    av_add(&a, c->data);
    av_add(&a, "--cases");
    av_int(&a, c->cases);
    av_add(&a, "--test-cases");
    av_int(&a, c->test_cases);
    if (tiny) {
        const char *t[] = {"--size", "32,32,24", "--spacing", "6,6,6", "--classes", "1"};
        for (size_t i = 0; i < sizeof t / sizeof *t; i++) av_add(&a, t[i]);
    }
    av_add(&a, "--threads");
    av_int(&a, c->threads);
    av_add(&a, "--quiet");
    say(c, "making the demo dataset (%d training + %d test cases)", c->cases, c->test_cases);
    if ((rc = step(c, &a, "synth", NULL, NULL))) return rc;
    av_medpipe(c, &a, "preprocess");
    const char *p[] = {c->data, "--out", c->cache, "--target-spacing", tiny ? "6,6,6" : "3,3,3", "--features",
                       tiny ? "4,16" : "16,128", "--memory-budget-gb", "0.5", "--quiet", "--threads"};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) av_add(&a, p[i]);
    av_int(&a, c->threads);
    say(c, "preprocessing");
    if ((rc = step(c, &a, "preprocess", NULL, NULL))) return rc;
    return read_plan(c);
}

/* ---- the rows ---- */

enum { ROW_BASE, ROW_PREFETCH, ROW_BF16, ROW_INFER, ROW_MPI, N_ROWS };

static void define_rows(const bt_ctx_t *c, bt_row_t *r) {
    memset(r, 0, N_ROWS * sizeof *r);
    for (int i = 0; i < N_ROWS; i++) {
        r[i].precision = "fp32";
        r[i].ranks = 1;
        r[i].threads = c->threads;
        r[i].batch = c->batch;
        r[i].workers = 1;
        r[i].train_pps = r[i].infer_vps = r[i].infer_vps_alt = r[i].dice = r[i].peak_mb = r[i].train_s = NAN;
    }
    r[ROW_BASE].key = "fp32_baseline";
    r[ROW_BASE].name = "fp32 baseline, loader in the training thread (--workers 0)";
    r[ROW_BASE].workers = 0;
    r[ROW_PREFETCH].key = "fp32_prefetch";
    r[ROW_PREFETCH].name = "fp32 + prefetching loader (--workers 1)";
    r[ROW_BF16].key = "bf16";
    r[ROW_BF16].name = "bf16 mixed precision";
    r[ROW_BF16].precision = "bf16";
    r[ROW_BF16].status = BT_UNSUPPORTED;
    if (c->bf16_cpu)
        snprintf(r[ROW_BF16].note, sizeof r[ROW_BF16].note,
                 "not supported: medpipe has no bf16 compute path yet (this CPU has bf16 instructions)");
    else
        snprintf(r[ROW_BF16].note, sizeof r[ROW_BF16].note,
                 "not supported on this CPU: no AVX512-BF16/AMX-BF16 (oneDNN ISA %s; oneDNN 2.6 has no bf16 "
                 "convolution on AVX2) and medpipe has no bf16 compute path yet", c->isa[0] ? c->isa : "unknown");
    r[ROW_INFER].key = "inference_batched";
    r[ROW_INFER].name = "inference engine: batched sliding windows";
    r[ROW_INFER].batch_alt = 1;
    if (r[ROW_INFER].batch < 2) r[ROW_INFER].batch = 2;
    r[ROW_MPI].key = "mpi_2x1";
    r[ROW_MPI].name = "data parallel: 2 MPI ranks x 1 thread (--workers 1)";
    r[ROW_MPI].ranks = 2;
    r[ROW_MPI].threads = 1;
#ifndef MP_HAVE_MPI
    r[ROW_MPI].status = BT_UNSUPPORTED;
    snprintf(r[ROW_MPI].note, sizeof r[ROW_MPI].note, "not available: medpipe was built without MPI");
#endif
    if (r[ROW_MPI].status == BT_OK && !c->mpirun[0]) {
        r[ROW_MPI].status = BT_UNSUPPORTED;
        snprintf(r[ROW_MPI].note, sizeof r[ROW_MPI].note, "not available: mpirun not found on PATH");
    }
    if (r[ROW_MPI].status == BT_OK && c->batch % 2 != 0) {
        r[ROW_MPI].status = BT_UNSUPPORTED;
        snprintf(r[ROW_MPI].note, sizeof r[ROW_MPI].note, "not applicable: the plan's batch %d is odd", c->batch);
    }
    if (r[ROW_MPI].status == BT_OK)
        snprintf(r[ROW_MPI].note, sizeof r[ROW_MPI].note, "global batch %d, %d per rank", c->batch, c->batch / 2);
}

/* ---- the table ---- */

static const char *mode_name(bt_mode_t m) { return m == BT_FULL ? "full" : m == BT_QUICK ? "quick" : "tiny"; }

/* Appends printf output to a growing buffer (NULL after an allocation failure). */
typedef struct {
    char *p;
    size_t len, cap;
} bt_buf_t;

static void bprintf(bt_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(bt_buf_t *b, const char *fmt, ...) {
    if (!b->p && b->cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->len + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            free(b->p);
            b->p = NULL;
            b->cap = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A measured number or a dash. */
static const char *fmt_num(char *s, size_t n, double v, int prec) {
    if (isfinite(v)) snprintf(s, n, "%.*f", prec, v);
    else snprintf(s, n, "-");
    return s;
}

static void md_row(bt_buf_t *b, const bt_row_t *r) {
    char pps[32], vps[80], vps1[32], dice[32], mb[32], rt[32], batch[48];
    snprintf(rt, sizeof rt, "%d x %d", r->ranks, r->threads);
    if (r->batch_alt) snprintf(batch, sizeof batch, "%d vs %d", r->batch, r->batch_alt);
    else if (r->ranks > 1) snprintf(batch, sizeof batch, "%d (%d per rank)", r->batch, r->batch / r->ranks);
    else snprintf(batch, sizeof batch, "%d", r->batch);
    if (r->status == BT_UNSUPPORTED) {
        bprintf(b, "| %s | %s | - | - | %s | | | |\n", r->name, r->precision, r->note);
        return;
    }
    if (r->status == BT_FAILED) {
        bprintf(b, "| %s | %s | %s | %s | %s | | | |\n", r->name, r->precision, rt, batch, r->note);
        return;
    }
    fmt_num(vps, sizeof vps, r->infer_vps, 3);
    if (r->batch_alt) {
        size_t l = strlen(vps);
        snprintf(vps + l, sizeof vps - l, " vs %s", fmt_num(vps1, sizeof vps1, r->infer_vps_alt, 3));
    }
    bprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r->name, r->precision, rt, batch,
            fmt_num(pps, sizeof pps, r->train_pps, 2), vps, fmt_num(dice, sizeof dice, r->dice, 4),
            fmt_num(mb, sizeof mb, r->peak_mb, 0));
}

static char *table_md(const bt_ctx_t *c, const bt_row_t *r) {
    bt_buf_t b = {NULL, 0, 0};
    bprintf(&b, "# medpipe bench table (%s mode)\n\n", mode_name(c->mode));
    bprintf(&b, "Demo configuration: `medpipe synth --cases %d --test-cases %d`%s; `medpipe preprocess "
                "--target-spacing %s --features %s --memory-budget-gb 0.5` (patch %s, %d stages, batch %d); "
                "`medpipe train --optimizer adamw --lr 3e-3 --epochs %lld --iters-per-epoch %lld --val-cases "
                "%lld --no-augment` per row (%lld steps%s). CPU: %s, %d threads.\n\n",
            c->cases, c->test_cases, c->mode == BT_TINY ? " (tiny: 32x32x24 at 6 mm, 1 class)" : "",
            c->mode == BT_TINY ? "6,6,6" : "3,3,3", c->mode == BT_TINY ? "4,16" : "16,128", c->patch, c->stages,
            c->batch, (long long)c->epochs, (long long)c->iters, (long long)c->val_cases,
            (long long)(c->epochs * c->iters),
            c->mode == BT_FULL ? "" : ": too short to converge, Dice is low by design", c->cpu, c->threads);
    bprintf(&b, "| strategy | precision | ranks x threads | batch | training patches/s | inference volumes/s | "
                "Dice (held-out) | peak RSS (MiB) |\n|---|---|---|---|---:|---:|---:|---:|\n");
    for (int i = 0; i < N_ROWS; i++) md_row(&b, &r[i]);
    bprintf(&b, "\nTraining patches/s: global batch x steps / time of the steps after the first (data wait "
                "included; the first step builds the convolution primitives). Inference volumes/s: test cases / "
                "the per-case seconds in predict.jsonl (read, preprocess, sliding window, write back). Dice: "
                "mean foreground Dice of `medpipe evaluate` over the %d held-out test cases. Peak RSS: wait4() of "
                "the training process (for mpirun: the largest of mpirun and its ranks); inference row: of "
                "predict.\n",
            c->test_cases);
    for (int i = 0; i < N_ROWS; i++)
        if (r[i].status == BT_OK && r[i].note[0]) bprintf(&b, "\n- %s: %s.", r[i].key, r[i].note);
    bprintf(&b, "\n");
    return b.p;
}

static void js_num(cJSON *o, const char *k, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static char *table_json(const bt_ctx_t *c, const bt_row_t *r) {
    cJSON *root = cJSON_CreateObject(), *rows = cJSON_CreateArray();
    if (!root || !rows) return cJSON_Delete(root), cJSON_Delete(rows), NULL;
    cJSON_AddStringToObject(root, "mode", mode_name(c->mode));
    cJSON_AddNumberToObject(root, "epochs", (double)c->epochs);
    cJSON_AddNumberToObject(root, "iters_per_epoch", (double)c->iters);
    cJSON_AddNumberToObject(root, "train_cases", c->cases);
    cJSON_AddNumberToObject(root, "test_cases", c->test_cases);
    cJSON_AddStringToObject(root, "patch_dhw", c->patch);
    cJSON_AddNumberToObject(root, "stages", c->stages);
    cJSON_AddNumberToObject(root, "batch", c->batch);
    cJSON_AddStringToObject(root, "cpu", c->cpu);
    cJSON_AddNumberToObject(root, "threads", c->threads);
    for (int i = 0; i < N_ROWS; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) continue;
        cJSON_AddStringToObject(o, "key", r[i].key);
        cJSON_AddStringToObject(o, "strategy", r[i].name);
        cJSON_AddStringToObject(o, "precision", r[i].precision);
        cJSON_AddStringToObject(o, "status", r[i].status == BT_OK ? "ok" : r[i].status == BT_FAILED ? "failed"
                                                                                                 : "unsupported");
        cJSON_AddStringToObject(o, "note", r[i].note);
        cJSON_AddNumberToObject(o, "ranks", r[i].ranks);
        cJSON_AddNumberToObject(o, "threads", r[i].threads);
        cJSON_AddNumberToObject(o, "workers", r[i].workers);
        cJSON_AddNumberToObject(o, "batch", r[i].batch);
        if (r[i].batch_alt) cJSON_AddNumberToObject(o, "batch_compared", r[i].batch_alt);
        js_num(o, "train_patches_per_s", r[i].train_pps);
        js_num(o, "infer_volumes_per_s", r[i].infer_vps);
        if (r[i].batch_alt) js_num(o, "infer_volumes_per_s_compared", r[i].infer_vps_alt);
        js_num(o, "dice", r[i].dice);
        js_num(o, "peak_rss_mb", r[i].peak_mb);
        js_num(o, "train_wall_s", r[i].train_s);
        cJSON_AddItemToArray(rows, o);
    }
    cJSON_AddItemToObject(root, "rows", rows);
    char *s = mp_json_print(root);
    cJSON_Delete(root);
    return s;
}

static int write_tables(const bt_ctx_t *c, const bt_row_t *r) {
    char md_path[BT_PATH], js_path[BT_PATH];
    join(md_path, c->out, "table.md");
    join(js_path, c->out, "table.json");
    char *md = table_md(c, r), *js = table_json(c, r);
    int rc = !md || !js ? mp_error_set(MP_ERR_NOMEM, "out of memory") : MP_OK;
    if (!rc) rc = mp_file_write_atomic(md_path, md, strlen(md));
    if (!rc) rc = mp_file_write_atomic(js_path, js, strlen(js));
    if (!rc) fputs(md, stdout);
    free(md);
    free(js);
    return rc;
}

/* ---- the command ---- */

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe bench table [--quick] [--out DIR] [--threads T] [--epochs E] [--iters I] [--verbose]\n\n"
            "Trains and evaluates the demo configuration under each strategy and prints a Markdown table\n"
            "(also written atomically to DIR/table.md and DIR/table.json; default DIR out/bench): fp32 with\n"
            "the loader in the training thread, fp32 with a prefetching loader, bf16, the inference engine\n"
            "with batched windows, and 2 MPI ranks x 1 thread. Columns: precision, ranks x threads, batch,\n"
            "training patches/s, inference volumes/s, Dice on held-out synthetic cases, peak RSS.\n"
            "Each step is a child process of this binary (synth, preprocess, train, predict, evaluate);\n"
            "their files and logs stay under DIR/work (replaced on the next run).\n\n"
            "  --quick       2 x 10 training steps per row and 2 test cases (minutes; Dice stays low)\n"
            "                instead of 8 x 50 steps and 6 test cases (long)\n"
            "  --out DIR     output folder (default out/bench)\n"
            "  --threads T   threads of the single-process rows (default: the machine's default)\n"
            "  --epochs E, --iters I   override the steps per row\n"
            "  --verbose     print every child command\n");
}

static int parse(int argc, char **argv, bt_ctx_t *c) {
    int64_t v;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout), 1;
        else if (!strcmp(a, "--quick")) c->mode = c->mode == BT_TINY ? BT_TINY : BT_QUICK;
        else if (!strcmp(a, "--tiny")) c->mode = BT_TINY; /* hidden: the test's mode */
        else if (!strcmp(a, "--verbose")) c->verbose = 1;
        else if (!val) return mp_cli_usage_error(CMD, "%s needs a value (or is unknown)", a);
        else if (!strcmp(a, "--out") && strlen(val) < 3000 && (i++, 1)) c->out = val;
        else if (!strcmp(a, "--threads") && !mp_cli_parse_int(val, &v) && v >= 1 && v <= 1024) c->threads = (int)v, i++;
        else if (!strcmp(a, "--epochs") && !mp_cli_parse_int(val, &v) && v >= 1 && v <= 100000) c->epochs = v, i++;
        else if (!strcmp(a, "--iters") && !mp_cli_parse_int(val, &v) && v >= 2 && v <= 1000000) c->iters = v, i++;
        else return mp_cli_usage_error(CMD, "bad option or value: %s %s", a, val);
    }
    return 0;
}

/* Mode defaults, the binary's own path, mpirun and the CPU description. */
static int configure(bt_ctx_t *c, int64_t epochs, int64_t iters) {
    static const int64_t E[] = {8, 2, 1}, I[] = {50, 10, 3}, V[] = {4, 4, 1};
    static const int CASES[] = {24, 24, 4}, TEST[] = {6, 2, 2};
    c->epochs = epochs ? epochs : E[c->mode];
    c->iters = iters ? iters : I[c->mode];
    c->val_cases = V[c->mode];
    c->val_every = c->mode == BT_FULL ? 1 : c->epochs; /* short modes validate once, at the end */
    c->cases = CASES[c->mode];
    c->test_cases = TEST[c->mode];
    ssize_t n = readlink("/proc/self/exe", c->exe, sizeof c->exe - 1);
    if (n <= 0) return mp_error_set(MP_ERR_IO, "/proc/self/exe: cannot find this program's path");
    c->exe[n] = 0;
    find_in_path("mpirun", c->mpirun);
    mp_sysinfo_t si;
    mp_sysinfo_opts_t so;
    memset(&so, 0, sizeof so);
    so.skip_mpi = so.skip_cuda = 1; /* no driver threads in a process that spawns */
    if (mp_sysinfo_probe_opts(&si, &so) == MP_OK) {
        snprintf(c->cpu, sizeof c->cpu, "%s", si.cpu_model);
        snprintf(c->isa, sizeof c->isa, "%s", si.dnnl_isa_name);
        c->bf16_cpu = (si.isa_usable & (MP_ISA_AVX512_BF16 | MP_ISA_AMX_BF16)) != 0;
        if (!c->threads) c->threads = si.threads_default;
    }
    if (!c->threads) c->threads = mp_cpu_count();
    if (c->threads < 1) c->threads = 1;
    /* Shared memory only, no ptrace-based copies (containers). */
    setenv("OMPI_MCA_btl", "self,vader", 0);
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    return MP_OK;
}

int mp_cli_bench_table(int argc, char **argv) {
    bt_ctx_t c;
    memset(&c, 0, sizeof c);
    c.out = "out/bench";
    int r = parse(argc, argv, &c);
    if (r) return r == 1 ? MP_EXIT_OK : r;
    int64_t e = c.epochs, it = c.iters;
    if (configure(&c, e, it) || mp_mkdir_p(c.out)) return mp_cli_fail(CMD);
    join(c.work, c.out, "work");
    double t0 = mp_time_now();
    if (setup(&c)) return mp_cli_fail(CMD);
    bt_row_t rows[N_ROWS];
    define_rows(&c, rows);
    run_training_row(&c, &rows[ROW_BASE]);
    run_training_row(&c, &rows[ROW_PREFETCH]);
    if (rows[ROW_PREFETCH].status == BT_OK) run_inference_row(&c, &rows[ROW_INFER], rows[ROW_PREFETCH].key);
    else {
        rows[ROW_INFER].status = BT_FAILED;
        snprintf(rows[ROW_INFER].note, sizeof rows[ROW_INFER].note, "failed: no model (the %s row failed)",
                 rows[ROW_PREFETCH].key);
    }
    if (rows[ROW_MPI].status == BT_OK) run_training_row(&c, &rows[ROW_MPI]);
    if (write_tables(&c, rows)) return mp_cli_fail(CMD);
    int failed = 0;
    for (int i = 0; i < N_ROWS; i++) failed += rows[i].status == BT_FAILED;
    say(&c, "done in %.0f s: %s/table.md, %s/table.json", mp_time_now() - t0, c.out, c.out);
    return failed ? MP_EXIT_FAIL : MP_EXIT_OK;
}
