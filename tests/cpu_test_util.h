/* Helpers shared by the CPU-engine tests: moving plain (N, C, D, H, W)
 * tensors into and out of a oneDNN layout. */
#ifndef MP_CPU_TEST_UTIL_H
#define MP_CPU_TEST_UTIL_H

#include "cpu/cpu.h"

/* A new buffer holding plain tensor `plain` of shape s in layout md (NULL on failure). */
static inline float *to_md(const float *plain, mp_shape5_t s, const dnnl_memory_desc_t *md) {
    dnnl_memory_desc_t pm;
    mp_cpu_md_plain(&pm, s);
    float *buf = mp_zalloc(mp_cpu_md_bytes(md));
    if (mp_cpu_reorder_once(buf, md, plain, &pm)) return NULL;
    return buf;
}

/* The plain copy of buf (layout md); NULL on failure. */
static inline float *from_md(const float *buf, mp_shape5_t s, const dnnl_memory_desc_t *md) {
    dnnl_memory_desc_t pm;
    mp_cpu_md_plain(&pm, s);
    float *plain = mp_zalloc((size_t)mp_shape5_elems(s) * sizeof *plain);
    if (mp_cpu_reorder_once(plain, &pm, buf, md)) return NULL;
    return plain;
}

#endif
