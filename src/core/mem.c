/* Memory: aligned allocation, overflow-checked sizes and the global limit that
 * every input-sized allocation is checked against (hostile files must not be
 * able to ask for unbounded memory). */
#include "medpipe/core.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mem_limit = (uint64_t)16 << 30;

void mp_mem_set_limit(uint64_t bytes) { mem_limit = bytes; }

uint64_t mp_mem_limit(void) { return mem_limit; }

int mp_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

void *mp_alloc(size_t bytes) {
    void *p = NULL;
    /* 64-byte alignment suits AVX-512 loads and oneDNN buffers. */
    size_t n = (bytes + 63) & ~(size_t)63;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, n) != 0) return NULL;
    return p;
}

void *mp_zalloc(size_t bytes) {
    void *p = mp_alloc(bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void mp_free(void *p) { free(p); }
