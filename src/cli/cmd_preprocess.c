/* medpipe preprocess: checks a dataset folder (listing every problem),
 * computes its fingerprint, writes or reuses the editable plan, and builds
 * the memory-mappable preprocessing cache the trainer reads. */
#include "cli/cli.h"
#include "medpipe/dataset.h"
#include "medpipe/preprocess.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe preprocess DATASET --out CACHE [options]\n\n"
            "Checks DATASET (nnU-Net layout: dataset.json, imagesTr, labelsTr; or Decathlon lists), listing\n"
            "every problem found; writes CACHE/fingerprint.json and the plan CACHE/plan.json (target spacing,\n"
            "normalization, patch size and depth fitted to a memory budget); then crops, resamples and\n"
            "normalizes every training case into CACHE/cases (raw float32 image, uint8 labels, foreground\n"
            "locations per class) and writes CACHE/DONE last. An existing CACHE/plan.json is reused, so an\n"
            "edited plan is honoured (--replan or --memory-budget-gb computes a new one).\n\n"
            "options:\n"
            "  --out CACHE              cache folder (created)\n"
            "  --threads T              worker threads, one case each (default: all CPUs)\n"
            "  --plan-only              stop after writing fingerprint.json and plan.json\n"
            "  --memory-budget-gb G     training memory budget for the patch size (default 8)\n"
            "  --replan                 recompute plan.json even if CACHE/plan.json exists\n"
            "  --target-spacing X,Y,Z   resample to this spacing in mm instead of the median (implies --replan)\n"
            "  --features BASE[,CAP]    features of the first stage, doubling per stage up to CAP\n"
            "                           (default 32,320; implies --replan)\n"
            "  --max-stages S           at most S resolution stages (default 6; implies --replan)\n"
            "  --seed S                 seed of the intensity and location sampling (default 12345)\n"
            "  --quiet                  no progress output\n"
            "  --help                   this text\n");
}

typedef struct {
    const char *dataset, *out;
    int64_t threads, seed;
    double budget;
    int plan_only, replan, quiet;
    mp_plan_opts_t plan;
} pp_opts_t;

/* --target-spacing, --features and --max-stages into the plan options. */
static int parse_plan_opt(pp_opts_t *o, const char *a, const char *val) {
    o->replan = 1;
    if (!strcmp(a, "--target-spacing")) {
        double *t = o->plan.target_spacing;
        if (mp_cli_parse_doubles(val, t, 3) || !(t[0] > 0 && t[1] > 0 && t[2] > 0 && t[0] <= 100 && t[1] <= 100 &&
                                                 t[2] <= 100))
            return mp_cli_usage_error("preprocess", "--target-spacing %s: need X,Y,Z in (0, 100] mm", val);
    } else if (!strcmp(a, "--features")) {
        int64_t f[2];
        if (!mp_cli_parse_ints(val, f, 2)) {
            o->plan.base_features = (int)(f[0] > 0 && f[0] <= 4096 ? f[0] : 0);
            o->plan.max_features = (int)(f[1] >= f[0] && f[1] <= 4096 ? f[1] : 0);
        } else if (!mp_cli_parse_int(val, f) && f[0] > 0 && f[0] <= 4096) {
            o->plan.base_features = (int)f[0];
            o->plan.max_features = (int)(f[0] * 10 < 4096 ? f[0] * 10 : 4096);
        } else {
            o->plan.base_features = 0;
        }
        if (o->plan.base_features < 1 || o->plan.max_features < 1)
            return mp_cli_usage_error("preprocess", "--features %s: need BASE[,CAP], 1 <= BASE <= CAP <= 4096", val);
    } else {
        int64_t s;
        if (mp_cli_parse_int(val, &s) || s < 1 || s > MP_PLAN_MAX_STAGES)
            return mp_cli_usage_error("preprocess", "--max-stages %s: need 1..%d", val, MP_PLAN_MAX_STAGES);
        o->plan.max_stages = (int)s;
    }
    return 0;
}

static int parse_args(int argc, char **argv, pp_opts_t *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (!strcmp(a, "--plan-only")) o->plan_only = 1;
        else if (!strcmp(a, "--replan")) o->replan = 1;
        else if (!strcmp(a, "--quiet")) o->quiet = 1;
        else if (!strcmp(a, "--target-spacing") || !strcmp(a, "--features") || !strcmp(a, "--max-stages")) {
            if (!val) return mp_cli_usage_error("preprocess", "%s needs a value", a);
            i++;
            int rc = parse_plan_opt(o, a, val);
            if (rc) return rc;
        } else if (!strcmp(a, "--out") || !strcmp(a, "--threads") || !strcmp(a, "--memory-budget-gb") ||
                 !strcmp(a, "--seed")) {
            if (!val) return mp_cli_usage_error("preprocess", "%s needs a value", a);
            i++;
            if (!strcmp(a, "--out")) o->out = val;
            else if (!strcmp(a, "--threads")) {
                if (mp_cli_parse_int(val, &o->threads) || o->threads < 0 || o->threads > 4096)
                    return mp_cli_usage_error("preprocess", "--threads %s: not an integer 0..4096", val);
            } else if (!strcmp(a, "--seed")) {
                if (mp_cli_parse_int(val, &o->seed) || o->seed < 0 || o->seed > (1ll << 53))
                    return mp_cli_usage_error("preprocess", "--seed %s: not an integer 0..2^53", val);
            } else if (mp_cli_parse_double(val, &o->budget) || !(o->budget > 0 && o->budget < 1e6)) {
                return mp_cli_usage_error("preprocess", "--memory-budget-gb %s: not a positive number", val);
            }
        } else if (a[0] == '-') {
            return mp_cli_usage_error("preprocess", "unknown option '%s'", a);
        } else if (!o->dataset) {
            o->dataset = a;
        } else {
            return mp_cli_usage_error("preprocess", "unexpected argument '%s'", a);
        }
    }
    if (!o->dataset) return mp_cli_usage_error("preprocess", "DATASET is required");
    if (!o->out) return mp_cli_usage_error("preprocess", "--out CACHE is required");
    return 0;
}

static void on_progress(void *user, int64_t done, int64_t total) {
    (void)total;
    mp_progress_update(user, done, NULL);
}

static int write_fingerprint(const mp_fingerprint_t *fp, const char *out) {
    char *json = NULL, path[4096];
    snprintf(path, sizeof path, "%s/fingerprint.json", out);
    int rc = mp_fingerprint_to_json(fp, &json);
    if (!rc) rc = mp_file_write_atomic(path, json, strlen(json));
    free(json);
    return rc;
}

/* Reuses CACHE/plan.json unless asked to replan; else computes and writes it. */
static int get_plan(mp_plan_t *plan, const mp_fingerprint_t *fp, const mp_dataset_t *ds, const pp_opts_t *o,
                    int *reused) {
    char path[4096];
    snprintf(path, sizeof path, "%s/plan.json", o->out);
    *reused = 0;
    if (!o->replan && o->budget <= 0 && access(path, F_OK) == 0) {
        int rc = mp_plan_read(plan, path);
        if (!rc && plan->num_channels != ds->n_channels)
            rc = mp_error_set(MP_ERR_MISMATCH, "%s: %d channels, dataset.json %d (use --replan)", path,
                              plan->num_channels, ds->n_channels);
        *reused = 1;
        return rc;
    }
    mp_plan_opts_t po = o->plan;
    if (o->budget > 0) po.budget_gb = o->budget;
    int rc = mp_plan_from_fingerprint_opts(plan, fp, ds, &po);
    return rc ? rc : mp_plan_write(plan, path);
}

static void print_plan(const mp_plan_t *p, int reused, const char *out) {
    printf("plan (%s %s/plan.json): spacing %g,%g,%g mm, median shape %lldx%lldx%lld, patch (D,H,W) %dx%dx%d, "
           "%d stages, batch %d, ~%.2f GB of %.2f GB\n",
           reused ? "reused" : "wrote", out, p->target_spacing[0], p->target_spacing[1], p->target_spacing[2],
           (long long)p->median_shape[0], (long long)p->median_shape[1], (long long)p->median_shape[2],
           p->patch_dhw[0], p->patch_dhw[1], p->patch_dhw[2], p->n_stages, p->batch_size, p->memory_estimate_gb,
           p->memory_budget_gb);
    for (int c = 0; c < p->num_channels; c++) {
        const mp_infer_norm_t *n = &p->channels[c].norm;
        if (n->kind == MP_INFER_NORM_CT)
            printf("  channel %d '%s': CT, clip [%g, %g], mean %g, std %g\n", c, p->channels[c].name, n->ct_lo,
                   n->ct_hi, n->ct_mean, n->ct_std);
        else
            printf("  channel %d '%s': %s%s\n", c, p->channels[c].name,
                   n->kind == MP_INFER_NORM_ZSCORE ? "z-score" : "none", n->use_mask ? " (non-zero mask)" : "");
    }
}

static int run(const pp_opts_t *o, mp_dataset_t *ds, mp_pool_t *pool) {
    mp_fingerprint_t fp;
    char *problems = NULL;
    double t0 = mp_time_now();
    mp_progress_t fprog;
    mp_progress_init(&fprog, o->quiet ? NULL : stderr, "fingerprint", "cases", ds->num_training);
    int rc = mp_fingerprint_compute(&fp, ds, (uint64_t)o->seed, pool, on_progress, &fprog, &problems);
    if (rc == MP_ERR_MISMATCH && problems) {
        int n = 0;
        for (const char *s = problems; *s; s++) n += *s == '\n';
        fprintf(stderr, "medpipe preprocess: %s: %d problem(s) in the dataset:\n%s", o->dataset, n, problems);
        free(problems);
        return MP_EXIT_FAIL;
    }
    free(problems);
    if (rc) return mp_cli_fail("preprocess");
    mp_progress_finish(&fprog, NULL);
    mp_plan_t plan;
    int reused = 0;
    if ((rc = mp_mkdir_p(o->out)) || (rc = write_fingerprint(&fp, o->out)) ||
        (rc = get_plan(&plan, &fp, ds, o, &reused))) {
        mp_fingerprint_deinit(&fp);
        return mp_cli_fail("preprocess");
    }
    int64_t n_cases = fp.n_cases;
    mp_fingerprint_deinit(&fp);
    if (!o->quiet) print_plan(&plan, reused, o->out);
    if (o->plan_only) return MP_EXIT_OK;
    mp_progress_t prog;
    mp_progress_init(&prog, o->quiet ? NULL : stderr, "preprocess", "cases", n_cases);
    double t1 = mp_time_now();
    if (mp_cache_build(o->out, ds, &plan, pool, on_progress, &prog)) return mp_cli_fail("preprocess");
    mp_progress_finish(&prog, NULL);
    if (!o->quiet)
        printf("cached %lld cases in %s/cases in %.2f s (total %.2f s)\n", (long long)n_cases, o->out,
               mp_time_now() - t1, mp_time_now() - t0);
    return MP_EXIT_OK;
}

int mp_cli_preprocess(int argc, char **argv) {
    pp_opts_t o = {.seed = 12345};
    mp_plan_opts_init(&o.plan);
    int r = parse_args(argc, argv, &o);
    if (r) return r == 1 ? MP_EXIT_OK : r;
    mp_dataset_t *ds = NULL;
    if (mp_dataset_read(&ds, o.dataset)) return mp_cli_fail("preprocess");
    mp_pool_t *pool = mp_pool_create((int)o.threads);
    if (!pool) {
        mp_dataset_free(ds);
        return mp_cli_fail("preprocess");
    }
    r = run(&o, ds, pool);
    mp_pool_free(pool);
    mp_dataset_free(ds);
    return r;
}
