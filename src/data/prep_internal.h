/* Internal helpers shared by the fingerprint, plan and cache modules. */
#ifndef MP_PREP_INTERNAL_H
#define MP_PREP_INTERNAL_H

#include "medpipe/preprocess.h"
#include "medpipe/vol.h"

/* A growable text buffer for problem lists and JSON snippets. */
typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} mp_sbuf_t;

void mp_sbuf_printf(mp_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads the images of one case into one float32 volume (channels in
 * order, scaling applied) with the first file's geometry. Geometry
 * disagreements between the channel files are appended to `problems`
 * (and make the call fail with MP_ERR_MISMATCH). */
int mp_prep_read_images(mp_vol_t **out, const mp_dataset_case_t *c, int n_channels, mp_sbuf_t *problems);

/* Appends a problem when the label's dims or affine (1e-4) differ from img's. */
int mp_prep_check_geometry(const mp_vol_t *img, const mp_vol_t *lab, const char *label_path, mp_sbuf_t *problems);

/* The training cases, tolerant: every missing file becomes a problem and
 * the case is dropped from *out. */
int mp_prep_list_cases(const mp_dataset_t *ds, mp_dataset_cases_t *out, mp_sbuf_t *problems);

/* numpy.median of n doubles (reorders v). */
double mp_prep_median(double *v, int64_t n);

/* JSON numbers that read back bit for bit (cJSON's own printing rounds to
 * 15 digits when that is "close enough"): the shortest of %.15g..%.17g
 * that strtod gives back exactly, as a raw item. */
#include <cjson/cJSON.h>
cJSON *mp_prep_json_number(double v);
cJSON *mp_prep_json_numbers(const double *v, int n);

#endif
