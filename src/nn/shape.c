/* Shape arithmetic shared by the engines and the model, and loss defaults. */
#include "medpipe/nn.h"

int64_t mp_shape5_elems(mp_shape5_t s) {
    if (s.n <= 0 || s.c <= 0 || s.d <= 0 || s.h <= 0 || s.w <= 0) return 0;
    return s.n * s.c * s.d * s.h * s.w;
}

static int64_t out_len(int64_t in, int64_t k, int64_t s, int64_t p, int transposed) {
    if (transposed) return (in - 1) * s - 2 * p + k;
    return s > 0 ? (in + 2 * p - k) / s + 1 : 0;
}

mp_shape5_t mp_conv_out_shape(mp_shape5_t xs, int64_t cout, const mp_conv_geom_t *g, int transposed) {
    mp_shape5_t y = {xs.n, cout, 0, 0, 0};
    y.d = out_len(xs.d, g->k[0], g->s[0], g->p[0], transposed);
    y.h = out_len(xs.h, g->k[1], g->s[1], g->p[1], transposed);
    y.w = out_len(xs.w, g->k[2], g->s[2], g->p[2], transposed);
    return y;
}

void mp_loss_opts_init(mp_loss_opts_t *o) {
    o->smooth = 1e-5;
    o->batch_dice = 0;
    o->do_bg = 0;
    o->weight_ce = 1;
    o->weight_dice = 1;
}
