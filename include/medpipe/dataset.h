/* medpipe datasets: the folder layout of nnU-Net v2 and of the Medical
 * Segmentation Decathlon, described by dataset.json.
 *
 *   DIR/dataset.json
 *   DIR/imagesTr/<case>_<XXXX><ending>   one file per channel XXXX (0000, 0001, ...)
 *   DIR/labelsTr/<case><ending>
 *   DIR/imagesTs/..., DIR/labelsTs/...   optional test split, same naming
 *
 * dataset.json (nnU-Net v2): {"channel_names": {"0": "CT"}, "labels":
 * {"background": 0, "liver": 1}, "numTraining": N, "file_ending": ".nii.gz"}.
 * The Decathlon form ("modality" instead of "channel_names", labels as
 * {"0": "background"}, a "training" list of {"image", "label"} paths to 4D
 * images) is read too. Keys medpipe does not interpret are kept and written
 * back unchanged. */
#ifndef MEDPIPE_DATASET_H
#define MEDPIPE_DATASET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MP_DATASET_MAX_CHANNELS 64
#define MP_DATASET_MAX_LABELS 256

typedef struct {
    char *name;
    int value;
} mp_dataset_label_t;

/* Decathlon "training"/"test" lists: paths relative to the dataset folder. */
typedef struct {
    char *image;
    char *label; /* NULL in a test list */
} mp_dataset_entry_t;

typedef struct {
    char *root;              /* dataset folder (NULL for a description built in memory) */
    char *name;              /* optional "name" (may be NULL) */
    char *description;       /* optional "description" (may be NULL) */
    int n_channels;
    char **channel_names;    /* channel_names[i] is channel i's name, e.g. "CT" */
    int n_labels;
    mp_dataset_label_t *labels; /* sorted by value; background (0) included */
    int64_t num_training;
    char *file_ending;       /* ".nii.gz" */
    int64_t n_msd_training, n_msd_test; /* Decathlon lists (0 for nnU-Net) */
    mp_dataset_entry_t *msd_training, *msd_test;
    char *extra_json;        /* other top-level keys as a JSON object text, or NULL */
} mp_dataset_t;

/* An empty description (file_ending ".nii.gz"); add fields with the setters. */
int mp_dataset_create(mp_dataset_t **out);
void mp_dataset_free(mp_dataset_t *ds);
int mp_dataset_set_channel(mp_dataset_t *ds, int index, const char *name);
int mp_dataset_add_label(mp_dataset_t *ds, const char *name, int value);
/* Replaces name/description/file_ending (NULL leaves a field unchanged). */
int mp_dataset_set_info(mp_dataset_t *ds, const char *name, const char *description, const char *file_ending);
/* Extra top-level keys: `json` must be a JSON object text; its keys are
 * written after the standard ones. */
int mp_dataset_set_extra(mp_dataset_t *ds, const char *json);

/* Parses dataset.json text; `source` names it in messages. Checks that
 * channels, labels (unique names and values, background 0 present),
 * numTraining and file_ending are present and well-formed. */
int mp_dataset_parse(mp_dataset_t **out, const char *json, size_t len, const char *source);
/* Reads DIR/dataset.json; ds->root = dir. */
int mp_dataset_read(mp_dataset_t **out, const char *dir);
/* JSON text of the description (malloc'ed; free with free()). */
int mp_dataset_to_json(const mp_dataset_t *ds, char **json);
/* Writes DIR/dataset.json atomically. */
int mp_dataset_write(const mp_dataset_t *ds, const char *dir);

/* Value of the label called `name`, or -1. */
int mp_dataset_label_value(const mp_dataset_t *ds, const char *name);
/* Name of label value `value`, or NULL. */
const char *mp_dataset_label_name(const mp_dataset_t *ds, int value);
/* Largest label value (the number of foreground classes when contiguous). */
int mp_dataset_max_label(const mp_dataset_t *ds);

typedef enum { MP_DATASET_TRAIN = 0, MP_DATASET_TEST = 1 } mp_dataset_split_t;

typedef struct {
    char *id;        /* case identifier, e.g. "case_007" */
    int n_images;    /* image files: n_channels, or 1 for a Decathlon 4D image */
    char **images;   /* full paths in channel order */
    char *label;     /* full path; NULL for a test case without a label */
} mp_dataset_case_t;

typedef struct {
    int64_t n;
    mp_dataset_case_t *cases; /* sorted by id */
} mp_dataset_cases_t;

/* Lists the cases of a split from the folder (or from the Decathlon lists
 * when dataset.json has them). Training: every case needs all its channel
 * files and a label, and the count must equal numTraining. Test: imagesTs
 * may be absent (no cases); labels are optional as a whole, but when
 * labelsTs exists every case needs one. Errors name the file at fault. */
int mp_dataset_list_cases(const mp_dataset_t *ds, mp_dataset_split_t split, mp_dataset_cases_t *out);
void mp_dataset_cases_deinit(mp_dataset_cases_t *c);

#ifdef __cplusplus
}
#endif
#endif
