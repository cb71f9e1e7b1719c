/* Dynamic loss scaling for reduced-precision training, with the semantics of
 * PyTorch's GradScaler (initial scale 2^16, x2 after 2000 finite steps, x0.5
 * on inf/NaN): small fp16 gradients are kept out of the subnormal range by
 * scaling the loss, and the optimizer sees the unscaled fp32 gradient. */
#include "medpipe/core.h"
#include "medpipe/nn.h"

#include <float.h>
#include <math.h>
#include <string.h>

void mp_loss_scaler_init(mp_loss_scaler_t *s) {
    memset(s, 0, sizeof *s);
    s->scale = 65536.0;
    s->growth_factor = 2.0;
    s->backoff_factor = 0.5;
    s->growth_interval = 2000;
}

int mp_loss_scaler_unscale_check(const mp_loss_scaler_t *s, float *grad, int64_t n) {
    /* The scale is a power of two in normal use, so the reciprocal is exact. */
    const float inv = (float)(1.0 / s->scale);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = grad[i] * inv;
        grad[i] = v;
        bad |= !(fabsf(v) <= FLT_MAX); /* inf and NaN both fail */
    }
    return !bad;
}

void mp_loss_scaler_update(mp_loss_scaler_t *s, int found_inf) {
    if (found_inf) {
        s->scale *= s->backoff_factor;
        s->growth_tracker = 0;
        return;
    }
    if (++s->growth_tracker < s->growth_interval) return;
    double grown = s->scale * s->growth_factor;
    if (grown <= FLT_MAX) s->scale = grown; /* the scale multiplies fp32 values */
    s->growth_tracker = 0;
}

int mp_loss_scaler_set_state(mp_loss_scaler_t *s, double scale, int64_t growth_tracker) {
    if (!(scale > 0 && scale <= FLT_MAX))
        return mp_error_set(MP_ERR_FORMAT, "loss scaler: saved scale %g is not a positive finite float", scale);
    if (growth_tracker < 0 || growth_tracker >= s->growth_interval)
        return mp_error_set(MP_ERR_FORMAT, "loss scaler: saved growth tracker %lld outside [0, %lld)",
                            (long long)growth_tracker, (long long)s->growth_interval);
    s->scale = scale;
    s->growth_tracker = growth_tracker;
    return MP_OK;
}
