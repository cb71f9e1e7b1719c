/* The U-Net on the reference kernels (plain layout, float or double
 * activations): the oracle for the oneDNN engine and for gradient checks,
 * and the engine behind MEDPIPE_FORCE_REF=1. */
#include "nn/unet_internal.h"
#include "ref/ref.h"

#include <string.h>

#define R float
#define F(name) name##_f32
#include "nn/unet_ref_impl.h"
#undef R
#undef F
#define R double
#define F(name) name##_f64
#include "nn/unet_ref_impl.h"
#undef R
#undef F

int mp_unet_ref_forward(mp_unet_t *m, const float *input) {
    return m->es == 8 ? ref_forward_f64(m, input) : ref_forward_f32(m, input);
}

int mp_unet_ref_backward(mp_unet_t *m) { return m->es == 8 ? ref_backward_f64(m) : ref_backward_f32(m); }
