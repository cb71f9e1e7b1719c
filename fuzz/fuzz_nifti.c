/* libFuzzer target for the NIfTI reader: the input is a whole single-file
 * image, read through the gzip path when it starts with the gzip magic and
 * through the raw path always (a gzip member is a hostile raw header too).
 * What reads is written back and read again, and must come back identical. */
#include "medpipe/core.h"
#include "medpipe/nifti.h"

#include <stdlib.h>
#include <string.h>

static void roundtrip(const mp_vol_t *v) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (mp_nifti_write_mem(&buf, &len, v, NULL, 0) != MP_OK) abort();
    mp_vol_t *r = NULL;
    if (mp_nifti_read_mem(&r, "roundtrip", buf, len, 0, NULL) != MP_OK) abort();
    if (r->dtype != v->dtype || memcmp(r->dim, v->dim, sizeof r->dim) != 0 ||
        memcmp(r->data, v->data, mp_vol_bytes(v)) != 0)
        abort();
    mp_vol_free(r);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mp_mem_set_limit(64u << 20);
    for (int gz = 0; gz < 2; gz++) {
        if (gz && !(size >= 2 && data[0] == 0x1f && data[1] == 0x8b)) continue;
        mp_vol_t *v = NULL;
        mp_nifti_header_t h;
        if (mp_nifti_read_mem(&v, "fuzz", data, size, gz, &h) == MP_OK) {
            double lo, hi, mean;
            mp_vol_stats(v, &lo, &hi, &mean);
            roundtrip(v);
            mp_vol_free(v);
        } else if (v != NULL || mp_error_message()[0] == '\0') {
            abort(); /* a failure must leave no volume and say why */
        }
    }
    return 0;
}
