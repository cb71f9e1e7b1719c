/* libFuzzer target: the DICOM Part 10 parser on arbitrary bytes, then the
 * getters the series code uses, walking every element of the tree, and the
 * decoding of the first frame (raw, and with RGB / MONOCHROME1 conversion). */
#include <stdlib.h>
#include <string.h>

#include "medpipe/core.h"
#include "medpipe/dicom.h"

static void walk(const mp_dicom_ds_t *ds, int depth) {
    char buf[80];
    double d[8];
    for (uint32_t i = 0; i < ds->n; i++) {
        const mp_dicom_elem_t *e = &ds->elems[i];
        mp_dicom_get_str(ds, e->tag, buf, sizeof buf);
        mp_dicom_get_f64s(ds, e->tag, d, 8);
        for (uint32_t k = 0; k < e->n_items; k++) walk(&e->items[k], depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int init;
    if (!init) {
        mp_mem_set_limit((uint64_t)64 << 20);
        mp_log_set_callback(NULL, NULL);
        init = 1;
    }
    mp_dicom_file_t *f;
    if (mp_dicom_file_parse(&f, data, size, "fuzz", 0) != MP_OK) return 0;
    walk(mp_dicom_file_meta(f), 0);
    walk(mp_dicom_file_dataset(f), 0);
    mp_dicom_pixel_info_t pi;
    if (mp_dicom_pixel_info(f, &pi) == MP_OK) {
        size_t fb = mp_dicom_frame_bytes(&pi);
        if (fb <= ((size_t)16 << 20)) {
            void *buf = malloc(fb ? fb : 1);
            if (buf) {
                mp_dicom_decode_frame(f, &pi, 0, buf, fb, 0);
                mp_dicom_decode_frame(f, &pi, pi.frames - 1, buf, fb, MP_DICOM_FRAME_RGB | MP_DICOM_FRAME_INVERT_MONO1);
                free(buf);
            }
        }
    }
    mp_dicom_file_free(f);
    return 0;
}
