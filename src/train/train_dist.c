/* The trainer's data parallelism over the mp_dist world (medpipe/dist.h):
 * every rank holds the same U-Net, takes a disjoint share of each global
 * batch, and applies the same update from the rank-averaged gradient.
 *
 * Why the average is the full-batch gradient: the loss is a mean over the
 * samples of a batch (cross-entropy over every voxel of equally sized
 * patches, Dice per sample with batch_dice = 0, the trainer's default), and
 * instance normalisation never mixes samples; the mean of the ranks' mean
 * losses over equal shares is therefore the mean over the global batch, and
 * so are the gradients. Only floating-point reassociation differs.
 *
 * Every function here issues its collectives on every rank in the same
 * order; with one rank they do no communication at all. */
#include "train/train_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int tr_dist_local_batch(tr_t *t) {
    int64_t b = t->spec.unet.batch;
    if (b < 1 || b % t->size != 0)
        return mp_error_set(MP_ERR_ARG, "global batch %lld is not divisible by the %d ranks (--batch is the "
                            "global batch; each rank takes batch / ranks)", (long long)b, t->size);
    t->local_batch = (int)(b / t->size);
    return MP_OK;
}

int tr_dist_start(tr_t *t) {
    if (t->size == 1) return MP_OK;
    int64_t n = mp_unet_param_count(t->unet);
    /* Fresh runs init from the same seed and resumed ones load the same
     * file, so this only guards against a rank that read something else. */
    int rc = mp_dist_bcast_f32(mp_unet_params(t->unet), n);
    if (!rc) rc = mp_dist_grad_init(&t->dgrad, mp_unet_grads(t->unet), n, 0);
    if (rc) return rc;
    t->dgrad_on = 1;
    mp_unet_set_grad_hook(t->unet, mp_dist_grad_hook, &t->dgrad);
    return MP_OK;
}

void tr_dist_deinit(tr_t *t) {
    if (!t->dgrad_on) return;
    if (t->unet) mp_unet_set_grad_hook(t->unet, NULL, NULL);
    mp_dist_grad_deinit(&t->dgrad);
    t->dgrad_on = 0;
}

int tr_dist_agree_setup(tr_t *t, int rc) {
    if (t->size == 1) return rc;
    double v[1] = {rc ? 1.0 : 0.0};
    int e = mp_dist_allreduce_f64_sum(v, 1);
    if (e) return rc ? rc : e;
    t->setup_failed_all = v[0] > 0;
    if (rc || v[0] == 0) return rc;
    return mp_error_set(MP_ERR_ARG, "%d of %d ranks failed to set up training (see their messages)", (int)v[0],
                        t->size);
}

int tr_dist_after_backward(tr_t *t, double *loss, int *bad) {
    if (t->size == 1) return MP_OK;
    int rc = mp_dist_grad_wait(&t->dgrad);
    if (rc) return rc;
    int stop = t->o->stop && *t->o->stop;
    double v[3] = {*bad ? 0.0 : *loss, *bad ? 1.0 : 0.0, stop ? 1.0 : 0.0};
    if ((rc = mp_dist_allreduce_f64_sum(v, 3))) return rc;
    *bad = v[1] > 0;
    *loss = *bad ? NAN : v[0] / (double)t->size;
    t->stop_agreed = v[2] > 0;
    return MP_OK;
}

static uint64_t params_hash(const float *p, int64_t n) {
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++) {
        uint32_t w;
        memcpy(&w, p + i, sizeof w);
        h = (h ^ w) * 1099511628211ull;
    }
    return h;
}

int tr_dist_check_params(tr_t *t, char hex[17]) {
    uint64_t h = params_hash(mp_unet_params(t->unet), mp_unet_param_count(t->unet));
    snprintf(hex, 17, "%016llx", (unsigned long long)h);
    if (t->size == 1) return MP_OK;
    /* Equal on all ranks iff each 16-bit piece has zero variance over the
     * ranks: N * sum(x^2) == sum(x)^2, exact in doubles (pieces < 2^16). */
    double v[8];
    for (int k = 0; k < 4; k++) {
        double x = (double)((h >> (16 * k)) & 0xffffu);
        v[k] = x;
        v[4 + k] = x * x;
    }
    int rc = mp_dist_allreduce_f64_sum(v, 8);
    if (rc) return rc;
    for (int k = 0; k < 4; k++)
        if ((double)t->size * v[4 + k] != v[k] * v[k])
            return mp_error_set(MP_ERR_INTERNAL, "ranks disagree on the parameters after step %lld (rank %d holds "
                                "%s): the replicas diverged", (long long)t->pos.global_step, t->rank, hex);
    return MP_OK;
}

int tr_dist_sum_counts(int64_t *cnt, int n) {
    if (mp_dist_size() == 1) return MP_OK;
    double buf[3 * 64];
    for (int off = 0; off < n; off += 3 * 64) {
        int m = n - off < 3 * 64 ? n - off : 3 * 64;
        for (int i = 0; i < m; i++) buf[i] = (double)cnt[off + i];
        int rc = mp_dist_allreduce_f64_sum(buf, m);
        if (rc) return rc;
        for (int i = 0; i < m; i++) cnt[off + i] = (int64_t)buf[i];
    }
    return MP_OK;
}
