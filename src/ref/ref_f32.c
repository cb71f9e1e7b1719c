/* Reference kernels in float (see ref.h; the bodies are in ref_layers_impl.h). */
#include "ref/ref.h"

#define R float
#define F(name) name##_f32
#include "ref/ref_layers_impl.h"
