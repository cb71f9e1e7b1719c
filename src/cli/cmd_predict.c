/* medpipe predict: segments images with a trained model (a run folder that
 * `medpipe train` wrote). Each case goes through mp_infer_predict, the one
 * per-image pipeline (reorient, crop, normalize, resample, sliding window,
 * back to the input grid), so the label map has the input's dims and exact
 * affine. Outputs of a case are written under temporary names and renamed
 * into place only when all of them are complete; a failing case leaves
 * nothing, is reported, and the command goes on with the next one and exits
 * 1 at the end (the outputs of the good cases stay). */
#include "cli/cli.h"
#include "cli/predict.h"
#include "medpipe/dicom_source.h"
#include "medpipe/jsonl.h"
#include "medpipe/medpipe.h"
#include "medpipe/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "predict"
#define MAX_INPUTS 256

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe predict --model RUN --in FILE_OR_DIR [--in ...] --out DIR\n"
            "                       [--checkpoint best|last|PATH] [--tta] [--step S] [--batch N]\n"
            "                       [--probs] [--probs-u8] [--keep-largest] [--dicom-seg]\n"
            "                       [--threads T] [--quiet]\n\n"
            "Segments images with the trained model in the run folder RUN (plan.json,\n"
            "model.json, checkpoint_*.safetensors). Each case is preprocessed as in training\n"
            "(orientation, crop, normalization, spacing), predicted with a Gaussian-weighted\n"
            "sliding window, and brought back to its own grid: DIR/<case>.nii.gz holds the\n"
            "labels (0 = background, k = class k) with the input's exact dims and affine.\n\n"
            "Inputs (--in, repeatable):\n"
            "  a NIfTI (.nii, .nii.gz) or Analyze (.hdr/.img) file; a folder of them. Files\n"
            "  named <case>_0000.nii.gz, <case>_0001.nii.gz, ... (nnU-Net) are the channels\n"
            "  of <case>; a file without that suffix is a case of its own (all channels in\n"
            "  one 4D image). A one-channel model takes <case>_0000 and plain names.\n"
            "  DICOM: a file, a DICOMDIR, or a folder (searched recursively) of one series\n"
            "  (the case is named after the file or folder) or several (one case per series,\n"
            "  named <SeriesNumber>_<SeriesDescription>).\n\n"
            "  --checkpoint C   best (default; falls back to last with a notice when the run\n"
            "                   has no best), last, or the path of a .safetensors file\n"
            "  --tta            test-time augmentation: mirror along all three axes (8 passes)\n"
            "  --step S         window step as a fraction of the patch, (0, 1] (default 0.5)\n"
            "  --batch N        windows per network call (default: the plan's batch size)\n"
            "  --probs          also write <case>_probs.nii.gz: per-class probabilities\n"
            "                   (float32, one channel per class)\n"
            "  --probs-u8       the same as uint8 (round(255 p)); implies --probs\n"
            "  --keep-largest   keep only the largest connected component of each class\n"
            "  --dicom-seg      DICOM inputs only: also write <case>_seg.dcm, a DICOM SEG that\n"
            "                   references the source series (segment names from RUN/dataset.json\n"
            "                   when present, else \"class k\")\n"
            "  --threads T      threads (default: all CPUs); results do not depend on it\n"
            "  --quiet          no per-case lines and no summary\n\n"
            "Every output file appears atomically. A case that fails (unreadable file,\n"
            "channels that do not match the model) is reported and leaves no output; the\n"
            "others are still predicted, and the exit status is 1. DIR/predict.jsonl gets\n"
            "one JSON line per case (status, dims, seconds, windows, outputs or error).\n");
}

typedef struct {
    const char *model, *out, *checkpoint;
    const char *in[MAX_INPUTS];
    int n_in;
    int checkpoint_given, tta, probs, probs_u8, keep_largest, dicom_seg, quiet;
    double step;
    int batch, threads;
} args_t;

static int parse_value_opt(args_t *a, const char *s, const char *val) {
    int64_t n;
    if (strcmp(s, "--step") == 0) {
        if (!val || mp_cli_parse_double(val, &a->step) || !(a->step > 0 && a->step <= 1))
            return mp_cli_usage_error(CMD, "--step '%s': needs a fraction in (0, 1]", val ? val : "");
    } else if (strcmp(s, "--batch") == 0) {
        if (!val || mp_cli_parse_int(val, &n) || n < 1 || n > 1024)
            return mp_cli_usage_error(CMD, "--batch '%s': needs a number from 1 to 1024", val ? val : "");
        a->batch = (int)n;
    } else if (strcmp(s, "--threads") == 0) {
        if (!val || mp_cli_parse_int(val, &n) || n < 1 || n > 1024)
            return mp_cli_usage_error(CMD, "--threads '%s': needs a number from 1 to 1024", val ? val : "");
        a->threads = (int)n;
    } else {
        if (!val || !*val) return mp_cli_usage_error(CMD, "%s needs a value", s);
        if (strcmp(s, "--in") == 0) {
            if (a->n_in == MAX_INPUTS) return mp_cli_usage_error(CMD, "at most %d --in", MAX_INPUTS);
            a->in[a->n_in++] = val;
        } else if (strcmp(s, "--model") == 0) {
            a->model = val;
        } else if (strcmp(s, "--out") == 0) {
            a->out = val;
        } else {
            a->checkpoint = val;
            a->checkpoint_given = 1;
        }
    }
    return -1;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->step = 0.5;
    a->checkpoint = "best";
    static const char *const with_value[] = {"--model", "--in", "--out", "--checkpoint", "--step", "--batch", "--threads"};
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int takes = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof *with_value; k++) takes |= strcmp(s, with_value[k]) == 0;
        if (takes) {
            int rc = parse_value_opt(a, s, i + 1 < argc ? argv[i + 1] : NULL);
            if (rc >= 0) return rc;
            i++;
        } else if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return MP_EXIT_OK;
        } else if (strcmp(s, "--tta") == 0) {
            a->tta = 1;
        } else if (strcmp(s, "--probs") == 0) {
            a->probs = 1;
        } else if (strcmp(s, "--probs-u8") == 0) {
            a->probs = a->probs_u8 = 1;
        } else if (strcmp(s, "--keep-largest") == 0) {
            a->keep_largest = 1;
        } else if (strcmp(s, "--dicom-seg") == 0) {
            a->dicom_seg = 1;
        } else if (strcmp(s, "--quiet") == 0 || strcmp(s, "-q") == 0) {
            a->quiet = 1;
        } else {
            return mp_cli_usage_error(CMD, "%s '%s'", s[0] == '-' ? "unknown option" : "unexpected argument", s);
        }
    }
    if (!a->model || !a->n_in || !a->out) return mp_cli_usage_error(CMD, "--model, --in and --out are required");
    return -1;
}

/* ---- the model ---- */

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The checkpoint to load: --checkpoint as given, or best falling back to last. */
static int pick_checkpoint(const args_t *a, char *path, size_t cap) {
    if (strcmp(a->checkpoint, "best") && strcmp(a->checkpoint, "last")) {
        snprintf(path, cap, "%s", a->checkpoint);
        if (!mp_file_is_regular(path)) return mp_error_set(MP_ERR_IO, "%s: no such checkpoint file", path);
        return MP_OK;
    }
    snprintf(path, cap, "%s/checkpoint_%s.safetensors", a->model, a->checkpoint);
    if (mp_file_is_regular(path)) return MP_OK;
    if (!a->checkpoint_given) {
        char last[4200];
        snprintf(last, sizeof last, "%s/checkpoint_last.safetensors", a->model);
        if (mp_file_is_regular(last)) {
            mp_log(MP_LOG_INFO, "%s: no checkpoint_best.safetensors (no validation yet?); using checkpoint_last",
                   a->model);
            snprintf(path, cap, "%s", last);
            return MP_OK;
        }
        return mp_error_set(MP_ERR_IO, "%s: no checkpoint_best.safetensors or checkpoint_last.safetensors", a->model);
    }
    return mp_error_set(MP_ERR_IO, "%s: no such checkpoint", path);
}

/* Segment names: RUN/dataset.json's labels when the run has one. */
static mp_dataset_t *read_class_names(const char *run) {
    char p[4200];
    snprintf(p, sizeof p, "%s/dataset.json", run);
    mp_dataset_t *ds = NULL;
    if (mp_file_is_regular(p) && mp_dataset_read(&ds, run) != MP_OK) {
        mp_log(MP_LOG_WARN, "%s (segment names: \"class k\" instead)", mp_error_message());
        ds = NULL;
    }
    return ds;
}

/* ---- one case ---- */

typedef struct {
    const args_t *a;
    mp_model_t *model;
    mp_infer_plan_t plan;
    mp_infer_opts_t opts;
    mp_pool_t *pool;
    const mp_dataset_t *names;
    mp_jsonl_t log;
    int log_open;
    mp_progress_t bar;
    int bar_on, bar_started;
    const char *case_name;
} ctx_t;

typedef struct {
    char *tmp[3], *final[3];
    int n;
} staged_t;

static void on_windows(void *user, int64_t done, int64_t total) {
    ctx_t *c = user;
    if (!c->bar_started) {
        mp_progress_init(&c->bar, stderr, c->case_name, "windows", total);
        c->bar_started = 1;
    }
    mp_progress_update(&c->bar, done, NULL);
}

/* Reserves DIR/.<case><suffix>.medpipe-<pid><ext> -> DIR/<case><suffix><ext>. */
static int stage(staged_t *s, const char *dir, const char *name, const char *suffix, const char *ext) {
    if (asprintf(&s->final[s->n], "%s/%s%s%s", dir, name, suffix, ext) < 0) s->final[s->n] = NULL;
    if (asprintf(&s->tmp[s->n], "%s/.%s%s.medpipe-%ld%s", dir, name, suffix, (long)getpid(), ext) < 0)
        s->tmp[s->n] = NULL;
    s->n++;
    return s->tmp[s->n - 1] && s->final[s->n - 1] ? MP_OK : mp_error_set(MP_ERR_NOMEM, "out of memory");
}

/* Renames every staged file into place, or (rc != 0) removes them all. */
static int unstage(staged_t *s, int rc) {
    int i = 0;
    for (; rc == MP_OK && i < s->n; i++)
        if (rename(s->tmp[i], s->final[i]) != 0)
            rc = mp_error_set(MP_ERR_IO, "%s: cannot rename the finished output into place: %s", s->final[i],
                              strerror(errno));
    if (rc)
        for (int k = 0; k < s->n; k++) {
            if (s->tmp[k]) unlink(s->tmp[k]);
            if (k < i - 1 && s->final[k]) unlink(s->final[k]); /* renamed before the failure */
        }
    for (int k = 0; k < s->n; k++) {
        free(s->tmp[k]);
        free(s->final[k]);
    }
    s->n = 0;
    return rc;
}

static int write_seg(ctx_t *c, const mp_pred_case_t *pc, const mp_vol_t *labels, const char *path) {
    mp_dicom_source_t src;
    int rc = mp_dicom_source_from_series(&src, pc->series);
    int ns = c->plan.num_classes - 1;
    mp_dicom_segment_t *segs = calloc((size_t)ns, sizeof *segs);
    char (*names)[64] = calloc((size_t)ns, sizeof *names);
    if (!rc && (!segs || !names)) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int k = 0; !rc && k < ns; k++) {
        const char *n = c->names ? mp_dataset_label_name(c->names, k + 1) : NULL;
        if (n) snprintf(names[k], sizeof names[k], "%s", n);
        else snprintf(names[k], sizeof names[k], "class %d", k + 1);
        segs[k].label = k + 1;
        segs[k].name = names[k];
    }
    if (!rc) {
        mp_dicom_seg_opts_t o;
        mp_dicom_seg_opts_init(&o);
        o.segments = segs;
        o.nsegments = ns;
        o.content_description = "medpipe predict";
        o.series_description = "medpipe segmentation";
        rc = mp_dicom_write_seg(path, labels, &src, &o, NULL);
    }
    if (rc) mp_error_wrap(rc, "%s: DICOM SEG: ", pc->source);
    free(segs);
    free(names);
    mp_dicom_source_deinit(&src);
    return rc;
}

/* Predicts one case and writes its outputs (all or nothing). */
static int predict_case(ctx_t *c, const mp_pred_case_t *pc, mp_infer_stats_t *st, int64_t dims[3]) {
    const args_t *a = c->a;
    mp_vol_t *img = NULL;
    mp_infer_result_t res;
    staged_t s = {{0}, {0}, 0};
    memset(&res, 0, sizeof res);
    double t0 = mp_time_now();
    int rc = mp_pred_case_read(&img, pc, c->plan.num_channels);
    if (rc) return rc;
    mp_log(MP_LOG_DEBUG, "%s: read %.3f s", pc->name, mp_time_now() - t0);
    for (int k = 0; k < 3; k++) dims[k] = img->dim[k];
    c->case_name = pc->name;
    c->bar_started = 0;
    mp_infer_probs_t pk = !a->probs ? MP_INFER_PROBS_NONE : a->probs_u8 ? MP_INFER_PROBS_U8 : MP_INFER_PROBS_F32;
    rc = mp_infer_predict(&res, img, mp_model_net(c->model), &c->plan, &c->opts, pk, c->pool);
    if (c->bar_started) mp_progress_finish(&c->bar, NULL);
    if (rc) mp_error_wrap(rc, "%s: ", pc->source);
    *st = res.stats;
    t0 = mp_time_now();
    if (!rc && !(rc = stage(&s, a->out, pc->name, "", ".nii.gz"))) rc = mp_image_write(s.tmp[0], res.labels, NULL);
    if (!rc && a->probs && !(rc = stage(&s, a->out, pc->name, "_probs", ".nii.gz")))
        rc = mp_image_write(s.tmp[s.n - 1], res.probs, NULL);
    if (!rc && a->dicom_seg && !(rc = stage(&s, a->out, pc->name, "_seg", ".dcm")))
        rc = write_seg(c, pc, res.labels, s.tmp[s.n - 1]);
    rc = unstage(&s, rc);
    mp_log(MP_LOG_DEBUG, "%s: write %.3f s", pc->name, mp_time_now() - t0);
    mp_infer_result_deinit(&res);
    mp_vol_free(img);
    return rc;
}

static void log_case(ctx_t *c, const mp_pred_case_t *pc, int rc, const int64_t d[3], double secs,
                     const mp_infer_stats_t *st) {
    if (!c->log_open) return;
    char dims[64];
    snprintf(dims, sizeof dims, "%lldx%lldx%lld", (long long)d[0], (long long)d[1], (long long)d[2]);
    int wr = mp_jsonl_record(&c->log, MP_JF_STR("case", pc->name), MP_JF_STR("input", pc->source),
                             MP_JF_STR("status", rc ? "failed" : "ok"), rc ? MP_JF_NULL("dims") : MP_JF_STR("dims", dims),
                             MP_JF_F64("seconds", secs), MP_JF_INT("windows", st->windows),
                             MP_JF_INT("patches", st->entries), MP_JF_STR("error", rc ? mp_error_message() : NULL));
    if (wr) mp_log(MP_LOG_WARN, "%s", mp_error_message());
}

/* ---- the command ---- */

static int setup(ctx_t *c, const args_t *a, mp_pred_inputs_t *in, int *usage_rc) {
    char ckpt[4200];
    mp_model_spec_t spec;
    *usage_rc = -1;
    if (!is_dir(a->model)) return mp_error_set(MP_ERR_IO, "%s: model folder not found", a->model);
    int rc = mp_model_spec_read(&spec, a->model);
    if (rc) return rc;
    int ch = spec.plan.num_channels;
    for (int i = 0; i < a->n_in && rc == MP_OK; i++) rc = mp_pred_inputs_add(in, a->in[i], ch);
    if (!rc) rc = mp_pred_inputs_finish(in, ch);
    if (rc) return rc;
    if (a->dicom_seg)
        for (int i = 0; i < in->n; i++)
            if (!in->cases[i].series) {
                *usage_rc = mp_cli_usage_error(CMD, "--dicom-seg needs DICOM inputs; %s is not DICOM", in->cases[i].source);
                return MP_ERR_ARG;
            }
    if ((rc = pick_checkpoint(a, ckpt, sizeof ckpt))) return rc;
    double t0 = mp_time_now();
    if ((rc = mp_model_open(&c->model, a->model, ckpt, a->batch ? a->batch : spec.plan.batch_size, a->threads)))
        return rc;
    mp_log(MP_LOG_DEBUG, "model open %.3f s", mp_time_now() - t0);
    mp_model_infer_plan(c->model, &c->plan);
    if (a->keep_largest) c->plan.keep_largest = 1;
    mp_infer_opts_init(&c->opts);
    c->opts.step = a->step;
    c->opts.mirror_axes = a->tta ? 7u : 0u;
    c->bar_on = !a->quiet && isatty(fileno(stderr));
    if (c->bar_on) {
        c->opts.progress = on_windows;
        c->opts.progress_user = c;
    }
    if (a->threads != 1 && !(c->pool = mp_pool_create(a->threads)))
        return mp_error_set(MP_ERR_NOMEM, "cannot start %d threads", a->threads);
    if (a->dicom_seg) c->names = read_class_names(a->model);
    if ((rc = mp_mkdir_p(a->out))) return rc;
    char logp[4200];
    snprintf(logp, sizeof logp, "%s/predict.jsonl", a->out);
    if (mp_jsonl_open(&c->log, logp, 1) == MP_OK) c->log_open = 1;
    else mp_log(MP_LOG_WARN, "%s (no per-case log)", mp_error_message());
    if (!a->quiet)
        printf("model %s (%s), %d case%s, patch %dx%dx%d, batch %d%s\n", a->model, ckpt, in->n, in->n == 1 ? "" : "s",
               c->plan.patch_dhw[2], c->plan.patch_dhw[1], c->plan.patch_dhw[0], mp_model_net(c->model)->max_batch,
               a->tta ? ", mirroring (8 passes)" : "");
    return MP_OK;
}

static void summary(const args_t *a, int n, int failed, double secs) {
    struct rusage ru;
    double rss_mb = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0;
    if (a->quiet) return;
    printf("%d case%s predicted, %d failed, %.2f s (%.3f volumes/s), peak RSS %.0f MB\n", n - failed,
           n - failed == 1 ? "" : "s", failed, secs, secs > 0 ? (n - failed) / secs : 0.0, rss_mb);
}

int mp_cli_predict(int argc, char **argv) {
    args_t a;
    int rc = parse_args(&a, argc, argv);
    if (rc >= 0) return rc;
    ctx_t c;
    memset(&c, 0, sizeof c);
    c.a = &a;
    mp_pred_inputs_t in;
    memset(&in, 0, sizeof in);
    int usage_rc = -1, failed = 0;
    double t0 = mp_time_now();
    rc = setup(&c, &a, &in, &usage_rc);
    for (int i = 0; rc == MP_OK && i < in.n; i++) {
        const mp_pred_case_t *pc = &in.cases[i];
        mp_infer_stats_t st;
        int64_t d[3] = {0, 0, 0};
        memset(&st, 0, sizeof st);
        double t = mp_time_now();
        int crc = predict_case(&c, pc, &st, d);
        double secs = mp_time_now() - t;
        log_case(&c, pc, crc, d, secs, &st);
        if (crc) {
            failed++;
            fprintf(stderr, "medpipe %s: %s: %s\n", CMD, pc->name, mp_error_message());
        } else if (!a.quiet) {
            printf("%-24s %lldx%lldx%lld  %7.2f s  %5lld windows  -> %s/%s.nii.gz\n", pc->name, (long long)d[0],
                   (long long)d[1], (long long)d[2], secs, (long long)st.windows, a.out, pc->name);
            fflush(stdout);
        }
    }
    if (rc == MP_OK) summary(&a, in.n, failed, mp_time_now() - t0);
    int exit_code = usage_rc >= 0 ? usage_rc : rc ? mp_cli_fail(CMD) : failed ? MP_EXIT_FAIL : MP_EXIT_OK;
    mp_jsonl_close(&c.log);
    mp_pool_free(c.pool);
    mp_model_free(c.model);
    mp_dataset_free((mp_dataset_t *)c.names);
    mp_pred_inputs_free(&in);
    return exit_code;
}
