/* Optimizers over the flat fp32 parameter buffer: SGD with Nesterov momentum
 * and L2 weight decay (PyTorch's torch.optim.SGD semantics, as nnU-Net uses
 * it), AdamW (decoupled decay, bias-corrected moments), gradient-norm
 * clipping and the poly learning-rate schedule. One loop over one buffer:
 * the same code will serve a gradient allreduced across processes. */
#include "medpipe/core.h"
#include "medpipe/nn.h"

#include <math.h>
#include <string.h>

void mp_opt_config_sgd(mp_opt_config_t *c) {
    memset(c, 0, sizeof *c);
    c->kind = MP_OPT_SGD;
    c->lr = 1e-2;
    c->momentum = 0.99;
    c->nesterov = 1;
    c->weight_decay = 3e-5;
    c->clip_norm = 12;
}

void mp_opt_config_adamw(mp_opt_config_t *c) {
    memset(c, 0, sizeof *c);
    c->kind = MP_OPT_ADAMW;
    c->lr = 1e-3;
    c->weight_decay = 0.01;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->clip_norm = 12;
}

int mp_opt_init(mp_opt_t *o, const mp_opt_config_t *cfg, int64_t n) {
    memset(o, 0, sizeof *o);
    if (n < 0) return mp_error_set(MP_ERR_ARG, "optimizer: negative parameter count");
    o->cfg = *cfg;
    o->n = n;
    int64_t slots = cfg->kind == MP_OPT_ADAMW ? 2 : 1;
    o->state = mp_zalloc((size_t)(slots * n + 1) * sizeof(float));
    if (!o->state) return mp_error_set(MP_ERR_NOMEM, "optimizer: cannot allocate state for %lld parameters", (long long)n);
    return MP_OK;
}

void mp_opt_deinit(mp_opt_t *o) {
    mp_free(o->state);
    o->state = NULL;
}

double mp_grad_norm(const float *grad, int64_t n) {
    /* Blocked partial sums keep the double accumulation vectorizable. */
    double s[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += (double)grad[i + j] * (double)grad[i + j];
    for (; i < n; i++) s[0] += (double)grad[i] * (double)grad[i];
    return sqrt(s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7]);
}

double mp_lr_poly(double lr0, int64_t step, int64_t max_steps, double exponent) {
    if (max_steps <= 0 || step >= max_steps) return 0.0;
    return lr0 * pow(1.0 - (double)step / (double)max_steps, exponent);
}

double mp_opt_step(mp_opt_t *o, float *params, float *grad, double lr) {
    double norm = mp_grad_norm(grad, o->n);
    mp_opt_step_norm(o, params, grad, lr, norm);
    return norm;
}

void mp_opt_step_norm(mp_opt_t *o, float *params, float *grad, double lr, double norm) {
    const mp_opt_config_t *c = &o->cfg;
    int64_t n = o->n;
    float gs = 1.0f;
    if (c->clip_norm > 0 && norm > c->clip_norm) gs = (float)(c->clip_norm / (norm + 1e-6));
    o->step++;
    if (c->kind == MP_OPT_SGD) {
        float mu = (float)c->momentum, wd = (float)c->weight_decay, flr = (float)lr;
        float *buf = o->state;
        for (int64_t i = 0; i < n; i++) {
            float g = grad[i] * gs + wd * params[i];
            float b = mu * buf[i] + g; /* the first step gives b = g, as PyTorch */
            buf[i] = b;
            params[i] -= flr * (c->nesterov ? g + mu * b : b);
        }
    } else {
        float b1 = (float)c->beta1, b2 = (float)c->beta2;
        float bc1 = (float)(1.0 - pow(c->beta1, (double)o->step));
        float bc2s = (float)sqrt(1.0 - pow(c->beta2, (double)o->step));
        float decay = (float)(1.0 - lr * c->weight_decay), step = (float)lr / bc1, eps = (float)c->eps;
        float *m1 = o->state, *m2 = o->state + n;
        for (int64_t i = 0; i < n; i++) {
            float g = grad[i] * gs;
            m1[i] = b1 * m1[i] + (1 - b1) * g;
            m2[i] = b2 * m2[i] + (1 - b2) * g * g;
            params[i] = params[i] * decay - step * m1[i] / (sqrtf(m2[i]) / bc2s + eps);
        }
    }
}
