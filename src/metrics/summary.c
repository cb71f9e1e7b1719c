/* Aggregation and reporting of segmentation metrics: geometry checks between
 * prediction and reference, NaN-skipping means, and the nnU-Net-compatible
 * summary.json (cJSON). */
#include "medpipe/metrics.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELD(name, member) {name, offsetof(mp_class_metrics_t, member)}
/* Sorted as Python sorts strings (upper case before '_' before lower case). */
static const mp_metric_field_t fields[] = {
    FIELD("ASSD", assd),   FIELD("Dice", dice),   FIELD("FN", fn),
    FIELD("FP", fp),       FIELD("HD95", hd95),   FIELD("IoU", iou),
    FIELD("NSD", nsd),     FIELD("TN", tn),       FIELD("TP", tp),
    FIELD("VolumeDiff_ml", vol_diff_ml), FIELD("VolumeDiff_rel", vol_diff_rel),
    FIELD("n_pred", n_pred), FIELD("n_ref", n_ref),
};
#define NFIELDS ((int)(sizeof fields / sizeof fields[0]))

const mp_metric_field_t *mp_metrics_fields(int *n) {
    *n = NFIELDS;
    return fields;
}

static inline double field_get(const mp_class_metrics_t *m, int f) {
    return *(const double *)((const char *)m + fields[f].offset);
}

static inline void field_set(mp_class_metrics_t *m, int f, double v) {
    *(double *)((char *)m + fields[f].offset) = v;
}

int mp_metrics_check_geometry(const mp_vol_t *a, const mp_vol_t *b, double tol) {
    for (int d = 0; d < 4; d++)
        if (a->dim[d] != b->dim[d])
            return mp_error_set(MP_ERR_MISMATCH, "dims differ: %lldx%lldx%lldx%lld vs %lldx%lldx%lldx%lld",
                                (long long)a->dim[0], (long long)a->dim[1], (long long)a->dim[2],
                                (long long)a->dim[3], (long long)b->dim[0], (long long)b->dim[1],
                                (long long)b->dim[2], (long long)b->dim[3]);
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) {
            double d = fabs(a->affine[r][c] - b->affine[r][c]);
            if (!(d <= tol))
                return mp_error_set(MP_ERR_MISMATCH,
                                    "affines differ: element [%d][%d] is %.6g vs %.6g (tolerance %g)", r, c,
                                    a->affine[r][c], b->affine[r][c], tol);
        }
    return MP_OK;
}

void mp_metrics_nanmean(mp_class_metrics_t *mean, const mp_class_metrics_t *rows, int64_t n, int64_t stride) {
    memset(mean, 0, sizeof *mean);
    if (n > 0) mean->label = rows[0].label;
    for (int f = 0; f < NFIELDS; f++) {
        double sum = 0;
        int64_t count = 0;
        for (int64_t i = 0; i < n; i++) {
            double v = field_get(&rows[i * stride], f);
            if (isnan(v)) continue;
            sum += v;
            count++;
        }
        field_set(mean, f, count ? sum / (double)count : NAN);
    }
}

void mp_metrics_aggregate(mp_class_metrics_t *mean, mp_class_metrics_t *foreground_mean,
                          const mp_metrics_case_t *cases, int n_cases, int n_labels) {
    mp_class_metrics_t *rows = malloc(sizeof *rows * (size_t)(n_cases > 0 ? n_cases : 1));
    int n_fg = 0;
    for (int k = 0; k < n_labels; k++) {
        if (rows) {
            for (int c = 0; c < n_cases; c++) rows[c] = cases[c].classes[k];
            mp_metrics_nanmean(&mean[k], rows, n_cases, 1);
        } else {
            mp_metrics_nanmean(&mean[k], NULL, 0, 1);
        }
        if (n_cases > 0) mean[k].label = cases[0].classes[k].label;
    }
    free(rows);
    /* Label 0 (background) is left out of the foreground mean, as in nnU-Net. */
    mp_class_metrics_t *fg = malloc(sizeof *fg * (size_t)(n_labels > 0 ? n_labels : 1));
    if (fg)
        for (int k = 0; k < n_labels; k++)
            if (mean[k].label != 0) fg[n_fg++] = mean[k];
    mp_metrics_nanmean(foreground_mean, fg, fg ? n_fg : 0, 1);
    foreground_mean->label = -1;
    free(fg);
}

/* One class's metrics as a JSON object (NaN and inf become null). */
static cJSON *metrics_object(const mp_class_metrics_t *m) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (int f = 0; f < NFIELDS; f++) {
        double v = field_get(m, f);
        cJSON *item = isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
        if (!item) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToObject(o, fields[f].name, item);
    }
    return o;
}

/* {"<label>": {...}, ...} for n entries. */
static cJSON *per_label_object(const mp_class_metrics_t *m, int n) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    for (int k = 0; k < n; k++) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long)m[k].label);
        cJSON *item = metrics_object(&m[k]);
        if (!item) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToObject(o, key, item);
    }
    return o;
}

static cJSON *case_list(const mp_metrics_case_t *cases, int n_cases, int n_labels) {
    cJSON *list = cJSON_CreateArray();
    for (int c = 0; list && c < n_cases; c++) {
        cJSON *o = cJSON_CreateObject(), *m = per_label_object(cases[c].classes, n_labels);
        cJSON *pf = cJSON_CreateString(cases[c].prediction_file ? cases[c].prediction_file : "");
        cJSON *rf = cJSON_CreateString(cases[c].reference_file ? cases[c].reference_file : "");
        if (!o || !m || !pf || !rf) {
            cJSON_Delete(o);
            cJSON_Delete(m);
            cJSON_Delete(pf);
            cJSON_Delete(rf);
            cJSON_Delete(list);
            return NULL;
        }
        cJSON_AddItemToObject(o, "metrics", m);
        cJSON_AddItemToObject(o, "prediction_file", pf);
        cJSON_AddItemToObject(o, "reference_file", rf);
        cJSON_AddItemToArray(list, o);
    }
    return list;
}

int mp_metrics_summary_json(char **json, const mp_metrics_case_t *cases, int n_cases, int n_labels) {
    *json = NULL;
    if (n_labels < 0 || n_cases < 0) return mp_error_set(MP_ERR_ARG, "summary: negative counts");
    mp_class_metrics_t *mean = malloc(sizeof *mean * (size_t)(n_labels > 0 ? n_labels : 1)), fg;
    if (!mean) return mp_error_set(MP_ERR_NOMEM, "summary: out of memory");
    mp_metrics_aggregate(mean, &fg, cases, n_cases, n_labels);
    cJSON *root = cJSON_CreateObject();
    cJSON *fgo = metrics_object(&fg), *meano = per_label_object(mean, n_labels);
    cJSON *list = case_list(cases, n_cases, n_labels);
    free(mean);
    if (!root || !fgo || !meano || !list) {
        cJSON_Delete(root);
        cJSON_Delete(fgo);
        cJSON_Delete(meano);
        cJSON_Delete(list);
        return mp_error_set(MP_ERR_NOMEM, "summary: out of memory");
    }
    cJSON_AddItemToObject(root, "foreground_mean", fgo);
    cJSON_AddItemToObject(root, "mean", meano);
    cJSON_AddItemToObject(root, "metric_per_case", list);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return mp_error_set(MP_ERR_NOMEM, "summary: out of memory");
    *json = text;
    return MP_OK;
}

int mp_metrics_summary_write(const char *path, const mp_metrics_case_t *cases, int n_cases, int n_labels) {
    char *text;
    int rc = mp_metrics_summary_json(&text, cases, n_cases, n_labels);
    if (rc) return rc;
    rc = mp_file_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}
