/* Validation during training: the training U-Net itself (no second copy)
 * behind the inference callback, nnU-Net's sliding window (step 0.5,
 * Gaussian weights, no mirroring) over each held-out case's cached
 * preprocessed image, argmax, and Dice per class against the cached labels.
 * TP/FP/FN are summed over all validation cases before the ratio (one Dice
 * per class for the whole validation set, as nnU-Net's online evaluation),
 * so a class missing from one small case does not swing the figure. */
#include "train/train_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Adds the confusion counts of one case to tp/fp/fn (K entries each). */
static void count_case(const uint8_t *pred, const uint8_t *ref, int64_t n, int K, int64_t *tp, int64_t *fp,
                       int64_t *fn) {
    for (int64_t i = 0; i < n; i++) {
        int p = pred[i], r = ref[i];
        if (r >= K) r = K - 1; /* the cache never holds such labels (preprocess refuses them) */
        if (p == r) tp[p]++;
        else {
            fp[p]++;
            fn[r]++;
        }
    }
}

static int validate_case(tr_t *t, const mp_infer_net_t *net, int64_t idx, int64_t *tp, int64_t *fp, int64_t *fn) {
    mp_cache_case_t cc;
    int rc = mp_cache_case_map(&t->cache, idx, &cc);
    if (rc) return rc;
    mp_vol_t *img = NULL;
    mp_infer_result_t res;
    memset(&res, 0, sizeof res);
    rc = mp_vol_create_view(&img, cc.dim, MP_DTYPE_F32, (void *)cc.img);
    mp_infer_opts_t io;
    mp_infer_opts_init(&io); /* step 0.5, Gaussian, no mirroring */
    if (!rc) rc = mp_infer_predict_grid(&res, img, net, &io, NULL, MP_INFER_PROBS_NONE, t->pool);
    if (!rc && res.labels->dtype != MP_DTYPE_U8)
        rc = mp_error_set(MP_ERR_INTERNAL, "validation: labels of case %s are not u8", cc.id);
    if (!rc)
        count_case(res.labels->data, cc.seg, cc.dim[0] * cc.dim[1] * cc.dim[2], t->spec.plan.num_classes, tp, fp, fn);
    mp_infer_result_deinit(&res);
    mp_vol_free(img);
    mp_cache_case_unmap(&cc);
    return rc;
}

int tr_validate(tr_t *t, double *dice, double *mean_fg) {
    const int K = t->spec.plan.num_classes;
    int64_t *cnt = calloc((size_t)(3 * K), sizeof *cnt);
    if (!cnt) return mp_error_set(MP_ERR_NOMEM, "validation: out of memory");
    int64_t *tp = cnt, *fp = cnt + K, *fn = cnt + 2 * K;
    mp_unet_net_t adapter;
    mp_infer_net_t net;
    int rc = mp_unet_net_init(&adapter, t->unet, &net);
    /* Data parallel: case i on rank i % ranks, counts summed over ranks, so
     * the Dice is the one a single process computes. */
    for (int64_t i = t->rank; !rc && i < t->n_val; i += t->size)
        rc = validate_case(t, &net, t->val_idx[i], tp, fp, fn);
    mp_unet_net_deinit(&adapter);
    if (!rc) rc = tr_dist_sum_counts(cnt, 3 * K);
    double sum = 0;
    int n = 0;
    for (int k = 0; k < K; k++) {
        int64_t den = 2 * tp[k] + fp[k] + fn[k];
        dice[k] = den ? 2.0 * (double)tp[k] / (double)den : NAN;
        if (k > 0 && den) {
            sum += dice[k];
            n++;
        }
    }
    *mean_fg = n ? sum / n : NAN;
    free(cnt);
    return rc;
}
