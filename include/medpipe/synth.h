/* medpipe synthetic CT: the embedded default data set.
 *
 * Each case is a CT-like abdominal phantom (int16 Hounsfield units) and its
 * label map (uint8): air around a body with subcutaneous fat, a muscle wall,
 * a spine (not labelled), visceral fat and soft tissue, and up to eight
 * organ-like classes with random pose, size and smooth shape deformation, plus
 * partial-volume blur, a smooth bias field and noise. A case is a pure function
 * of (seed, case index, parameters): the same bytes on any machine and with
 * any number of threads. */
#ifndef MEDPIPE_SYNTH_H
#define MEDPIPE_SYNTH_H

#include "medpipe/core.h"
#include "medpipe/vol.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the generator: bumped whenever the same parameters would give
 * different data; recorded in dataset.json. */
#define MP_SYNTH_VERSION 1
/* Organ classes the generator knows (labels 1..MP_SYNTH_MAX_CLASSES). */
#define MP_SYNTH_MAX_CLASSES 8

typedef struct {
    uint64_t seed;
    int64_t size[3];      /* voxels along x, y, z (each 24..1024) */
    double spacing[3];    /* voxel size in mm (each 0.1..20) */
    int classes;          /* K: labels 1..K, 1..MP_SYNTH_MAX_CLASSES */
    int64_t train_cases;  /* N: cases 0..N-1 go to imagesTr/labelsTr */
    int64_t test_cases;   /* M: cases N..N+M-1 go to imagesTs/labelsTs */
    double noise_hu[2];   /* noise sd (HU) drawn per case from [lo, hi]; 0,0: none */
    int partial_volume;   /* 1: supersample boundary voxels and blur in-plane; 0: off */
} mp_synth_params_t;

/* Defaults: seed 42, 128x128x64 voxels of 1.5x1.5x3 mm (a 19 cm field of
 * view), K = 3, N = 20, M = 5, noise 10..20 HU, partial volume on. */
void mp_synth_params_init(mp_synth_params_t *p);
/* MP_ERR_ARG with a message naming the bad field, or MP_OK. */
int mp_synth_params_check(const mp_synth_params_t *p);

/* Name of label value `label` ("background" for 0, e.g. "liver" for 1);
 * NULL outside 0..MP_SYNTH_MAX_CLASSES. */
const char *mp_synth_class_name(int label);
/* Nominal mean intensity (HU) of organ class `label` (1..MAX); 0 otherwise. */
double mp_synth_class_hu(int label);

/* "case_007": the file stem of case `index` (at least three digits). */
void mp_synth_case_name(char *buf, size_t n, int64_t index);

/* The random layout of one case: body, spine and organ instances. Rendering
 * it gives the case; tests and tools can query the organs analytically. */
typedef struct mp_synth_layout mp_synth_layout_t;

typedef struct {
    int label;          /* class value 1..K; 0 for unlabelled structures (gas) */
    int parent;         /* index of the organ it lies inside, -1 for none */
    double center[3];   /* world position (mm, RAS+) */
    double axes[3];     /* semi-axes before deformation (mm) */
    double hu;          /* mean intensity before bias field and noise */
} mp_synth_organ_t;

/* Draws the layout of case `case_index`. */
int mp_synth_layout_create(mp_synth_layout_t **out, const mp_synth_params_t *p, int64_t case_index);
void mp_synth_layout_free(mp_synth_layout_t *l);
int mp_synth_layout_organ_count(const mp_synth_layout_t *l);
/* Copies organ i (0..count-1) into *o; MP_ERR_ARG for a bad index. */
int mp_synth_layout_organ(const mp_synth_layout_t *l, int i, mp_synth_organ_t *o);
/* 1 when the world point (mm) lies inside organ i's deformed shape. */
int mp_synth_layout_inside(const mp_synth_layout_t *l, int i, const double world[3]);
/* Renders the layout: *image int16 HU (scl_slope 1), *label uint8, both with
 * the case's RAS affine (axis-aligned, volume centred on the origin). The
 * pool (may be NULL) splits the work over slices; the result does not
 * depend on it. */
int mp_synth_render(const mp_synth_layout_t *l, mp_vol_t **image, mp_vol_t **label, mp_pool_t *pool);

/* One case in memory: layout + render. */
int mp_synth_case(mp_vol_t **image, mp_vol_t **label, const mp_synth_params_t *p, int64_t case_index,
                  mp_pool_t *pool);

/* Called after each case is written (serialised; from pool workers). */
typedef void (*mp_synth_progress_fn)(void *user, int64_t done, int64_t total);

/* Writes the nnU-Net-style dataset folder `dir` (imagesTr, labelsTr, imagesTs,
 * labelsTs, dataset.json), cases generated in parallel on `pool` (may be
 * NULL). The folder is built under a temporary name and renamed into place,
 * so `dir` holds a whole dataset or nothing new. An existing empty `dir` is
 * replaced; an existing non-empty one only when `replace` is set and it is an
 * earlier medpipe synth dataset (its dataset.json has a "medpipe_synth"
 * block). */
int mp_synth_dataset_write(const char *dir, const mp_synth_params_t *p, mp_pool_t *pool, int replace,
                           mp_synth_progress_fn progress, void *user);

#ifdef __cplusplus
}
#endif
#endif
