/* Reference kernels in double (see ref.h; the bodies are in ref_layers_impl.h). */
#include "ref/ref.h"

#define R double
#define F(name) name##_f64
#include "ref/ref_layers_impl.h"
