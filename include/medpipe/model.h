/* medpipe trained models: the run folder that `train` writes and `predict`
 * reads, and the adapter that lets the inference engine run a U-Net.
 *
 * Run folder layout (RUN/):
 *   plan.json                    preprocessing + network size (mp_plan_t), as trained
 *   model.json                   the rest of the architecture (kernels, strides, convs per
 *                                stage, deep supervision)
 *   checkpoint_last.safetensors  weights after the last finished epoch
 *   checkpoint_last.state        optimizer, step, RNG and config (mp_train_state_save)
 *   checkpoint_best.safetensors  weights with the best validation Dice
 *   log.jsonl                    one JSON object per logged step / validation
 * Every file is written atomically. */
#ifndef MEDPIPE_MODEL_H
#define MEDPIPE_MODEL_H

#include "medpipe/infer.h"
#include "medpipe/nn.h"
#include "medpipe/preprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MP_MODEL_VERSION 1

typedef struct {
    mp_plan_t plan;          /* RUN/plan.json */
    mp_unet_config_t unet;   /* architecture; batch, engine, dtype, threads are run-time choices */
} mp_model_spec_t;

/* The default plain U-Net for a plan: its channels, classes, stages,
 * features, patch and batch; 3x3x3 kernels, stride 1 at stage 0 and 2 below,
 * two convs per stage, no deep supervision. */
int mp_model_spec_from_plan(mp_model_spec_t *s, const mp_plan_t *plan);
/* Writes RUN/plan.json and RUN/model.json atomically (RUN is created). */
int mp_model_spec_write(const char *run_dir, const mp_model_spec_t *s);
/* Reads and checks both; the error names the file and field at fault. */
int mp_model_spec_read(mp_model_spec_t *s, const char *run_dir);
/* The same from the two documents' text (lengths in bytes, no terminator
 * needed); run_dir only names the files in error messages. */
int mp_model_spec_parse(mp_model_spec_t *s, const char *plan_json, size_t plan_len, const char *model_json,
                        size_t model_len, const char *run_dir);

/* A U-Net behind the inference interface. forward() takes 1..unet batch
 * patches; a partial batch is padded with zeros (instance norm and
 * convolutions are per sample, so padding never changes a result). */
typedef struct {
    mp_unet_t *unet;     /* not owned */
    float *in, *out;     /* padded batch buffers, (N, C, D, H, W) and (N, K, D, H, W) */
} mp_unet_net_t;

int mp_unet_net_init(mp_unet_net_t *a, mp_unet_t *unet, mp_infer_net_t *net);
void mp_unet_net_deinit(mp_unet_net_t *a);

/* A trained model ready to predict. */
typedef struct mp_model mp_model_t;

/* Opens RUN: reads the spec, creates the U-Net for batches of max_batch
 * (>= 1) with `threads` (<= 0: all CPUs) and loads the weights of
 * `which`: "best", "last", or a path to a .safetensors file. */
int mp_model_open(mp_model_t **out, const char *run_dir, const char *which, int max_batch, int threads);
void mp_model_free(mp_model_t *m);
const mp_model_spec_t *mp_model_get_spec(const mp_model_t *m);
mp_unet_t *mp_model_unet(mp_model_t *m);
/* The inference network and the inference plan of the model. */
const mp_infer_net_t *mp_model_net(const mp_model_t *m);
void mp_model_infer_plan(const mp_model_t *m, mp_infer_plan_t *ip);

#ifdef __cplusplus
}
#endif
#endif
