/* medpipe evaluate: segmentation metrics of predictions against references.
 * Files are matched by name (the same file name in both folders), geometry is
 * checked (dims, affine within 1e-4; never resampled), metrics are computed
 * per case and class (src/metrics), printed as a table with means, and
 * written as an nnU-Net-style summary.json.
 *
 * Inputs: a folder whose top level holds NIfTI images is a set of cases; any
 * other folder is one image (a DICOM series, searched recursively, read by
 * mp_image_read), as is a file (NIfTI, a DICOM file or a DICOMDIR). */
#include "cli/cli.h"
#include "medpipe/medpipe.h"
#include "medpipe/metrics.h"
#include "medpipe/vol_morph.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CMD "evaluate"
#define GEOMETRY_TOL 1e-4

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe evaluate --pred DIR_OR_FILE --ref DIR_OR_FILE [--labels 1,2,3]\n"
            "                        [--tolerance MM] [--json FILE] [--threads N]\n\n"
            "Compares predicted label maps with reference label maps. With folders of NIfTI\n"
            "images, every image in --ref (.nii, .nii.gz, .hdr) must have a prediction of the\n"
            "same file name in --pred; dims and affines must agree (within 1e-4), nothing is\n"
            "resampled. A folder without NIfTI images at its top level is one DICOM image\n"
            "series (searched recursively; it must hold exactly one series), and a file is\n"
            "one image (NIfTI, DICOM or a DICOMDIR): --pred and --ref are then compared as\n"
            "one case, in any mix of formats.\n\n"
            "Per case and class: Dice, IoU, HD95, ASSD (mm), NSD (normalized surface Dice),\n"
            "TP/FP/FN/TN, n_pred/n_ref and the volume difference (mL and relative). Surfaces\n"
            "are the voxels with a 6-neighbour outside the mask; distances use the reference\n"
            "spacing. Both masks empty: NaN (skipped by the means). One empty: Dice = IoU =\n"
            "NSD = 0 and HD95 = ASSD = the diagonal of the image extent.\n\n"
            "  --labels L,L,...  classes to evaluate (default: all non-zero values present\n"
            "                    in the references)\n"
            "  --tolerance MM    NSD tolerance in mm (default 1)\n"
            "  --json FILE       write an nnU-Net-style summary.json (NaN written as null)\n"
            "  --threads N       threads (default: all CPUs)\n");
}

typedef struct {
    const char *pred, *ref, *json;
    int64_t *labels; /* NULL: from the references */
    int n_labels;
    double tolerance;
    int threads;
} args_t;

/* "1,2,3" -> a new array of distinct integers. */
static int parse_labels(const char *s, int64_t **out, int *n) {
    int count = 1;
    for (const char *p = s; *p; p++) count += *p == ',';
    if (count > MP_LABEL_MAX_CLASSES) return -1;
    int64_t *v = malloc(sizeof *v * (size_t)count);
    char *copy = strdup(s);
    int k = 0, ok = v && copy;
    char *save = NULL;
    for (char *tok = ok ? strtok_r(copy, ",", &save) : NULL; tok && ok; tok = strtok_r(NULL, ",", &save)) {
        ok = k < count && mp_cli_parse_int(tok, &v[k]) == 0;
        for (int j = 0; ok && j < k; j++) ok = v[j] != v[k];
        k++;
    }
    free(copy);
    if (!ok || k != count) {
        free(v);
        return -1;
    }
    *out = v;
    *n = k;
    return 0;
}

/* Returns -1 to go on, else the exit code. */
static int parse_args(args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->tolerance = 1.0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return MP_EXIT_OK;
        } else if (strcmp(s, "--pred") == 0 || strcmp(s, "--ref") == 0 || strcmp(s, "--json") == 0) {
            if (!val || !*val) return mp_cli_usage_error(CMD, "%s needs a path", s);
            *(s[2] == 'p' ? &a->pred : s[2] == 'r' ? &a->ref : &a->json) = val;
            i++;
        } else if (strcmp(s, "--labels") == 0) {
            free(a->labels);
            a->labels = NULL;
            if (!val || parse_labels(val, &a->labels, &a->n_labels))
                return mp_cli_usage_error(CMD, "--labels needs distinct integers such as 1,2,3");
            i++;
        } else if (strcmp(s, "--tolerance") == 0) {
            if (!val || mp_cli_parse_double(val, &a->tolerance) || !(a->tolerance >= 0) || isinf(a->tolerance))
                return mp_cli_usage_error(CMD, "--tolerance needs a distance in mm (>= 0)");
            i++;
        } else if (strcmp(s, "--threads") == 0) {
            int64_t t;
            if (!val || mp_cli_parse_int(val, &t) || t < 1 || t > 1024)
                return mp_cli_usage_error(CMD, "--threads needs a number from 1 to 1024");
            a->threads = (int)t;
            i++;
        } else {
            return mp_cli_usage_error(CMD, "%s '%s'", s[0] == '-' ? "unknown option" : "unexpected argument", s);
        }
    }
    if (!a->pred || !a->ref) return mp_cli_usage_error(CMD, "--pred and --ref are required");
    return -1;
}

/* ---- matching files ---- */

typedef struct {
    char *name, *pred_path, *ref_path;
} case_t;

static int is_image_name(const char *n) {
    size_t len = strlen(n);
    static const char *ext[] = {".nii", ".nii.gz", ".hdr", ".hdr.gz"};
    if (n[0] == '.') return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        size_t e = strlen(ext[i]);
        if (len > e && strcmp(n + len - e, ext[i]) == 0) return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted image file names of a folder. */
static int list_images(const char *dir, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return mp_error_set(MP_ERR_IO, "%s: cannot open the folder", dir);
    char **v = NULL;
    int count = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_image_name(e->d_name)) continue;
        char *full = mp_cli_path_join(dir, e->d_name);
        struct stat st;
        int regular = full && stat(full, &st) == 0 && S_ISREG(st.st_mode);
        free(full);
        if (!regular) continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, sizeof *v * (size_t)cap);
            if (!nv) break;
            v = nv;
        }
        if (!(v[count] = strdup(e->d_name))) break;
        count++;
    }
    int failed = e != NULL;
    closedir(d);
    if (failed) {
        for (int i = 0; i < count; i++) free(v[i]);
        free(v);
        return mp_error_set(MP_ERR_NOMEM, "out of memory listing %s", dir);
    }
    if (count) qsort(v, (size_t)count, sizeof *v, cmp_str);
    *names = v;
    *n = count;
    return MP_OK;
}

static void free_cases(case_t *c, int n) {
    for (int i = 0; c && i < n; i++) {
        free(c[i].name);
        free(c[i].pred_path);
        free(c[i].ref_path);
    }
    free(c);
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Missing predictions are one error naming them all (the first 20). */
static int missing_error(const char *pred_dir, char **missing, int n) {
    char list[1200] = "";
    size_t len = 0;
    for (int i = 0; i < n && i < 20; i++)
        len += (size_t)snprintf(list + len, len < sizeof list ? sizeof list - len : 0, "%s%s", i ? ", " : "",
                                missing[i]);
    return mp_error_set(MP_ERR_MISMATCH, "%s: no prediction for %d reference%s: %s%s", pred_dir, n,
                        n == 1 ? "" : "s", list, n > 20 ? ", ..." : "");
}

/* *cases = 1 for a folder holding NIfTI images at its top level (a set of
 * cases matched by name); 0 for a file or any other folder (one image). */
static int case_folder(const char *path, int *cases) {
    *cases = 0;
    if (!is_dir(path)) return MP_OK;
    char **names;
    int n, rc = list_images(path, &names, &n);
    if (rc) return rc;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    *cases = n > 0;
    return MP_OK;
}

static int match_cases(const args_t *a, case_t **out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    int pd, rd, rc = case_folder(a->pred, &pd);
    if (!rc) rc = case_folder(a->ref, &rd);
    if (rc) return rc;
    if (pd != rd)
        return mp_error_set(MP_ERR_ARG, "%s is a folder of NIfTI cases but %s is one image (a file or a DICOM series "
                            "folder): give two folders of cases or two images", pd ? a->pred : a->ref, pd ? a->ref : a->pred);
    if (!rd) {
        case_t *c = calloc(1, sizeof *c);
        if (!c || !(c->name = mp_cli_base_name(a->ref)) || !(c->pred_path = strdup(a->pred)) ||
            !(c->ref_path = strdup(a->ref))) {
            free_cases(c, 1);
            return mp_error_set(MP_ERR_NOMEM, "out of memory");
        }
        *out = c;
        *n_out = 1;
        return MP_OK;
    }
    char **refs, **preds;
    int nr, np;
    rc = list_images(a->ref, &refs, &nr);
    if (rc) return rc;
    if ((rc = list_images(a->pred, &preds, &np))) goto done_refs;
    if (nr == 0) {
        rc = mp_error_set(MP_ERR_ARG, "%s: no reference images (.nii, .nii.gz, .hdr)", a->ref);
        goto done;
    }
    char **missing = malloc(sizeof *missing * (size_t)nr);
    case_t *c = calloc((size_t)nr, sizeof *c);
    int n_missing = 0;
    if (!missing || !c) {
        free(missing);
        free(c);
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nr; i++) {
        if (!bsearch(&refs[i], preds, (size_t)np, sizeof *preds, cmp_str)) missing[n_missing++] = refs[i];
        c[i].name = strdup(refs[i]);
        c[i].pred_path = mp_cli_path_join(a->pred, refs[i]);
        c[i].ref_path = mp_cli_path_join(a->ref, refs[i]);
        if (!c[i].name || !c[i].pred_path || !c[i].ref_path) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    if (!rc && n_missing) rc = missing_error(a->pred, missing, n_missing);
    free(missing);
    if (rc) {
        free_cases(c, nr);
    } else {
        if (np > nr) mp_log(MP_LOG_WARN, "%s: %d predictions have no reference and are ignored", a->pred, np - nr);
        *out = c;
        *n_out = nr;
    }
done:
    for (int i = 0; i < np; i++) free(preds[i]);
    free(preds);
done_refs:
    for (int i = 0; i < nr; i++) free(refs[i]);
    free(refs);
    return rc;
}

/* ---- per-case evaluation ---- */

typedef struct {
    int64_t *labels; /* the labels computed for this case */
    mp_class_metrics_t *m;
    int n;
    int64_t voxels;
    int64_t *ref_labels; /* non-zero labels of the reference */
    int n_ref_labels;
} result_t;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorted union of two sorted arrays (new array; n_out entries). */
static int64_t *union_sorted(const int64_t *a, int na, const int64_t *b, int nb, int *n_out) {
    int64_t *u = malloc(sizeof *u * (size_t)(na + nb > 0 ? na + nb : 1));
    int i = 0, j = 0, n = 0;
    if (!u) return NULL;
    while (i < na || j < nb) {
        int64_t x = j >= nb || (i < na && a[i] <= b[j]) ? a[i] : b[j];
        if (i < na && a[i] == x) i++;
        if (j < nb && b[j] == x) j++;
        u[n++] = x;
    }
    *n_out = n;
    return u;
}

static int evaluate_case(result_t *r, const case_t *c, const args_t *a, mp_pool_t *pool) {
    mp_vol_t *pred = NULL, *ref = NULL;
    int64_t *pl = NULL;
    int npl = 0, rc;
    memset(r, 0, sizeof *r);
    if ((rc = mp_image_read(&ref, c->ref_path)) || (rc = mp_image_read(&pred, c->pred_path))) goto done;
    if ((rc = mp_metrics_check_geometry(pred, ref, GEOMETRY_TOL))) {
        mp_error_wrap(rc, "%s vs %s: ", c->pred_path, c->ref_path);
        goto done;
    }
    r->voxels = mp_vol_voxels(ref);
    if (a->labels) {
        r->n = a->n_labels;
        r->labels = malloc(sizeof *r->labels * (size_t)r->n);
        if (r->labels) memcpy(r->labels, a->labels, sizeof *r->labels * (size_t)r->n);
    } else {
        /* Labels of this reference and of this prediction: a class only in
         * other references is empty in both here and needs no computing. */
        if ((rc = mp_vol_label_values(&r->ref_labels, &r->n_ref_labels, ref))) {
            mp_error_wrap(rc, "%s: ", c->ref_path);
            goto done;
        }
        if ((rc = mp_vol_label_values(&pl, &npl, pred))) {
            mp_error_wrap(rc, "%s: ", c->pred_path);
            goto done;
        }
        r->labels = union_sorted(r->ref_labels, r->n_ref_labels, pl, npl, &r->n);
    }
    r->m = calloc((size_t)(r->n > 0 ? r->n : 1), sizeof *r->m);
    if (!r->labels || !r->m) {
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    mp_metrics_opts_t o;
    mp_metrics_opts_init(&o);
    o.tolerance_mm = a->tolerance;
    o.pool = pool;
    if (r->n > 0 && (rc = mp_metrics_labels(r->m, pred, ref, r->labels, r->n, &o)))
        mp_error_wrap(rc, "%s vs %s: ", c->pred_path, c->ref_path);
done:
    mp_free(pl);
    mp_vol_free(pred);
    mp_vol_free(ref);
    return rc;
}

static void free_result(result_t *r) {
    free(r->labels);
    free(r->m);
    mp_free(r->ref_labels);
}

/* Metrics of `label` in a case, or the both-empty result when the case did
 * not compute it (absent from its reference and prediction). */
static mp_class_metrics_t lookup(const result_t *r, int64_t label) {
    for (int k = 0; k < r->n; k++)
        if (r->labels[k] == label) return r->m[k];
    mp_class_metrics_t m;
    memset(&m, 0, sizeof m);
    m.label = label;
    m.tn = (double)r->voxels;
    m.dice = m.iou = m.hd95 = m.assd = m.nsd = m.vol_diff_rel = NAN;
    return m;
}

/* Final label list: --labels, or the union of the references' labels. */
static int final_labels(const args_t *a, const result_t *res, int n_cases, int64_t **labels, int *n) {
    if (a->labels) {
        *labels = malloc(sizeof **labels * (size_t)a->n_labels);
        if (!*labels) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        memcpy(*labels, a->labels, sizeof **labels * (size_t)a->n_labels);
        *n = a->n_labels;
        return MP_OK;
    }
    int64_t *u = NULL;
    int nu = 0;
    for (int c = 0; c < n_cases; c++) {
        int nn;
        int64_t *next = union_sorted(u, nu, res[c].ref_labels, res[c].n_ref_labels, &nn);
        free(u);
        if (!next) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        u = next;
        nu = nn;
        if (nu > MP_LABEL_MAX_CLASSES) {
            free(u);
            return mp_error_set(MP_ERR_LIMIT, "the references hold more than %d labels", MP_LABEL_MAX_CLASSES);
        }
    }
    qsort(u, (size_t)nu, sizeof *u, cmp_i64);
    *labels = u;
    *n = nu;
    return MP_OK;
}

/* ---- output ---- */

static void print_value(double v, int decimals) {
    if (isnan(v)) printf(" %9s", "nan");
    else printf(" %9.*f", decimals, v);
}

static void print_row(const char *name, int width, const char *label, const mp_class_metrics_t *m) {
    printf("%-*.*s %6s", width, width, name, label);
    print_value(m->dice, 4);
    print_value(m->iou, 4);
    print_value(m->hd95, 3);
    print_value(m->assd, 3);
    print_value(m->nsd, 4);
    printf("\n");
}

static void print_table(const mp_metrics_case_t *cases, int n_cases, const int64_t *labels, int n_labels,
                        const mp_class_metrics_t *mean, const mp_class_metrics_t *fg) {
    int width = 16;
    for (int c = 0; c < n_cases; c++) {
        const char *s = strrchr(cases[c].reference_file, '/');
        int len = (int)strlen(s ? s + 1 : cases[c].reference_file);
        if (len > width) width = len > 48 ? 48 : len;
    }
    printf("%-*s %6s %9s %9s %9s %9s %9s\n", width, "case", "class", "Dice", "IoU", "HD95", "ASSD", "NSD");
    char lab[32];
    for (int c = 0; c < n_cases; c++) {
        const char *s = strrchr(cases[c].reference_file, '/');
        for (int k = 0; k < n_labels; k++) {
            snprintf(lab, sizeof lab, "%lld", (long long)labels[k]);
            print_row(s ? s + 1 : cases[c].reference_file, width, lab, &cases[c].classes[k]);
        }
    }
    for (int k = 0; k < n_labels; k++) {
        snprintf(lab, sizeof lab, "%lld", (long long)labels[k]);
        print_row("mean", width, lab, &mean[k]);
    }
    print_row("foreground mean", width, "", fg);
}

/* Builds the final per-case tables, prints them and writes the JSON. */
static int report(const args_t *a, const case_t *cs, const result_t *res, int n_cases) {
    int64_t *labels = NULL;
    int n_labels = 0, rc = final_labels(a, res, n_cases, &labels, &n_labels);
    if (rc) return rc;
    mp_metrics_case_t *cases = calloc((size_t)n_cases, sizeof *cases);
    mp_class_metrics_t *table = calloc((size_t)n_cases * (size_t)(n_labels ? n_labels : 1), sizeof *table);
    mp_class_metrics_t *mean = calloc((size_t)(n_labels ? n_labels : 1), sizeof *mean), fg;
    if (!cases || !table || !mean) {
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int c = 0; c < n_cases; c++) {
        for (int k = 0; k < n_labels; k++) table[(size_t)c * n_labels + k] = lookup(&res[c], labels[k]);
        cases[c] = (mp_metrics_case_t){cs[c].pred_path, cs[c].ref_path, table + (size_t)c * n_labels};
    }
    mp_metrics_aggregate(mean, &fg, cases, n_cases, n_labels);
    if (n_labels == 0) mp_log(MP_LOG_WARN, "no labels to evaluate: the references hold only background");
    print_table(cases, n_cases, labels, n_labels, mean, &fg);
    if (a->json && (rc = mp_metrics_summary_write(a->json, cases, n_cases, n_labels)))
        mp_error_wrap(rc, "%s: ", a->json);
done:
    free(labels);
    free(cases);
    free(table);
    free(mean);
    return rc;
}

int mp_cli_evaluate(int argc, char **argv) {
    args_t a;
    int rc = parse_args(&a, argc, argv);
    if (rc >= 0) {
        free(a.labels);
        return rc;
    }
    case_t *cs = NULL;
    result_t *res = NULL;
    int n = 0, done = 0;
    mp_pool_t *pool = NULL;
    if ((rc = match_cases(&a, &cs, &n))) goto out;
    res = calloc((size_t)n, sizeof *res);
    if (a.threads != 1) pool = mp_pool_create(a.threads);
    if (!res || (a.threads != 1 && !pool)) {
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        goto out;
    }
    mp_progress_t prog;
    mp_progress_init(&prog, stderr, "evaluate", "cases", n);
    double t0 = mp_time_now();
    for (; done < n; done++) {
        if ((rc = evaluate_case(&res[done], &cs[done], &a, pool))) break;
        mp_progress_update(&prog, done + 1, cs[done].name);
    }
    if (rc) {
        free_result(&res[done]); /* the failed case's partial result */
        goto out;
    }
    mp_progress_finish(&prog, NULL);
    rc = report(&a, cs, res, n);
    if (!rc)
        mp_log(MP_LOG_INFO, "evaluated %d case%s in %.2f s%s%s", n, n == 1 ? "" : "s", mp_time_now() - t0,
               a.json ? "; summary written to " : "", a.json ? a.json : "");
out:
    for (int i = 0; i < done; i++) free_result(&res[i]);
    free(res);
    free_cases(cs, n);
    mp_pool_free(pool);
    free(a.labels);
    return rc ? mp_cli_fail(CMD) : MP_EXIT_OK;
}
