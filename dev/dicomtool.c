/* Developer tool for the DICOM reader (not built by the Makefile; nothing
 * links dev/). Build: make && gcc -std=c11 -D_GNU_SOURCE -Iinclude -Isrc
 *   dev/dicomtool.c build/libmedpipe.a -lz -ldeflate -ljpeg -lcharls -lopenjp2 -lcjson -lm -pthread -o build/dicomtool
 *   dicomtool dump FILE            element tree
 *   dicomtool frames FILE OUT      every frame decoded (raw) into OUT
 *   dicomtool scan PATH            series found under PATH
 *   dicomtool read PATH OUT        volume of the single series (raw data) into OUT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "medpipe/core.h"
#include "medpipe/dicom.h"

static void log_cb(mp_log_level_t level, const char *msg, void *user) {
    (void)user;
    fprintf(stderr, "[%d] %s\n", (int)level, msg);
}

static void dump_ds(const mp_dicom_ds_t *ds, int depth) {
    for (uint32_t i = 0; i < ds->n; i++) {
        const mp_dicom_elem_t *e = &ds->elems[i];
        const char *name = mp_dicom_tag_name(e->tag);
        printf("%*s(%04X,%04X) %s off=%llu len=%llu%s %s", depth * 2, "", (unsigned)(e->tag >> 16),
               (unsigned)(e->tag & 0xFFFF), e->vr, (unsigned long long)e->offset, (unsigned long long)e->length,
               e->undefined_length ? " (undef)" : "", name ? name : "");
        if (!e->items && !e->frags && e->length <= 64) {
            char buf[80];
            mp_dicom_get_str(ds, e->tag, buf, sizeof buf);
            int printable = 1;
            for (char *c = buf; *c; c++)
                if ((unsigned char)*c < 32 || (unsigned char)*c > 126) printable = 0;
            if (printable) printf(" = '%s'", buf);
        }
        if (e->frags) printf(" [%u fragments]", e->n_frags);
        printf("\n");
        for (uint32_t k = 0; k < e->n_items; k++) {
            printf("%*s  item %u\n", depth * 2, "", k);
            dump_ds(&e->items[k], depth + 2);
        }
    }
}

static int cmd_frames(const char *path, const char *outp) {
    mp_dicom_file_t *f;
    if (mp_dicom_file_read(&f, path, 0)) return 1;
    mp_dicom_pixel_info_t pi;
    if (mp_dicom_pixel_info(f, &pi)) return 1;
    printf("%dx%d frames=%d samples=%d ba=%d bs=%d hb=%d signed=%d planar=%d %s %s\n", pi.rows, pi.cols, pi.frames,
           pi.samples, pi.bits_allocated, pi.bits_stored, pi.high_bit, pi.is_signed, pi.planar, pi.photometric, pi.syntax);
    size_t fb = mp_dicom_frame_bytes(&pi);
    void *buf = malloc(fb);
    FILE *fp = fopen(outp, "wb");
    for (int k = 0; k < pi.frames; k++) {
        if (mp_dicom_decode_frame(f, &pi, k, buf, fb, 0)) return 1;
        fwrite(buf, 1, fb, fp);
    }
    fclose(fp);
    free(buf);
    mp_dicom_file_free(f);
    return 0;
}

static int cmd_scan(const char *path) {
    mp_dicom_series_list_t *l;
    if (mp_dicom_scan(&l, path)) return 1;
    printf("%d series (%d files, %d skipped)\n", l->n, l->files_seen, l->files_skipped);
    for (int i = 0; i < l->n; i++) {
        char d[512];
        mp_dicom_series_describe(&l->series[i], d, sizeof d);
        printf("  %s flags=%#x nz=%d\n", d, l->series[i].flags, l->series[i].nz);
    }
    mp_dicom_series_list_free(l);
    return 0;
}

static int cmd_read(const char *path, const char *outp) {
    mp_vol_t *v;
    if (mp_dicom_read(&v, path)) return 1;
    printf("dims %lld %lld %lld %lld dtype %s slope %g inter %g\n", (long long)v->dim[0], (long long)v->dim[1],
           (long long)v->dim[2], (long long)v->dim[3], mp_dtype_name(v->dtype), v->scl_slope, v->scl_inter);
    for (int r = 0; r < 4; r++)
        printf("  %12.6f %12.6f %12.6f %12.6f\n", v->affine[r][0], v->affine[r][1], v->affine[r][2], v->affine[r][3]);
    if (outp) {
        FILE *fp = fopen(outp, "wb");
        fwrite(v->data, 1, mp_vol_bytes(v), fp);
        fclose(fp);
    }
    mp_vol_free(v);
    return 0;
}

int main(int argc, char **argv) {
    mp_log_set_callback(log_cb, NULL);
    if (argc < 3) {
        fprintf(stderr, "usage: dicomtool dump|frames|scan|read PATH [OUT]\n");
        return 2;
    }
    int rc = 1;
    if (strcmp(argv[1], "dump") == 0) {
        mp_dicom_file_t *f;
        if (mp_dicom_file_read(&f, argv[2], 0) == 0) {
            printf("syntax %s guessed=%d\n-- meta\n", mp_dicom_file_syntax(f), mp_dicom_file_guessed(f));
            dump_ds(mp_dicom_file_meta(f), 0);
            printf("-- data set\n");
            dump_ds(mp_dicom_file_dataset(f), 0);
            mp_dicom_file_free(f);
            rc = 0;
        }
    } else if (strcmp(argv[1], "frames") == 0 && argc > 3) {
        rc = cmd_frames(argv[2], argv[3]);
    } else if (strcmp(argv[1], "scan") == 0) {
        rc = cmd_scan(argv[2]);
    } else if (strcmp(argv[1], "read") == 0) {
        rc = cmd_read(argv[2], argc > 3 ? argv[3] : NULL);
    }
    if (rc) fprintf(stderr, "dicomtool: %s\n", mp_error_message());
    return rc;
}
