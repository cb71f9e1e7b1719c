/* medpipe predict: the cases to predict, found from the --in paths
 * (src/cli/predict_inputs.c), shared with the command (cmd_predict.c). */
#ifndef MP_CLI_PREDICT_H
#define MP_CLI_PREDICT_H

#include "medpipe/dicom.h"
#include "medpipe/vol.h"

/* One case: the files of its channels (NIfTI/Analyze) or one DICOM series. */
typedef struct {
    char *name;                       /* output stem, file-name safe and unique */
    char *source;                     /* what messages name: a file, or the folder of a series */
    char **paths;                     /* NIfTI: channel files in channel order (1 for a plain file) */
    int n_paths;
    const mp_dicom_series_t *series;  /* DICOM: the series (owned by the inputs), else NULL */
    char *error;                      /* listing found this case unusable (channels); reported as failed */
} mp_pred_case_t;

typedef struct {
    mp_pred_case_t *cases;
    int n, cap;
    mp_dicom_series_list_t **lists;   /* DICOM scans the cases point into */
    int n_lists;
    /* NIfTI files seen so far, grouped into cases by mp_pred_inputs_finish */
    struct mp_pred_file *files;
    int n_files, cap_files;
    int n_dicom;                      /* cases that are DICOM series */
} mp_pred_inputs_t;

/* Adds what `path` holds: a NIfTI/Analyze file, a folder of them, or DICOM
 * (a file, a DICOMDIR, a folder of one or several series). `channels` is
 * the model's. Errors (path missing, nothing usable in it) name the path. */
int mp_pred_inputs_add(mp_pred_inputs_t *in, const char *path, int channels);
/* Groups the NIfTI files into cases (nnU-Net's <case>_<cccc> channel
 * suffix), checks channels against the model (a mismatch marks the case)
 * and makes names unique. Two NIfTI cases of one name are an error. */
int mp_pred_inputs_finish(mp_pred_inputs_t *in, int channels);
void mp_pred_inputs_free(mp_pred_inputs_t *in);

/* Reads a case as one volume with `channels` channels; the error names the
 * file (or series folder) at fault. */
int mp_pred_case_read(mp_vol_t **out, const mp_pred_case_t *c, int channels);

#endif
