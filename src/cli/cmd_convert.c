/* medpipe convert: rewrites an image under another name/format (.nii,
 * .nii.gz, .hdr/.img), optionally to another data type. Without --dtype the
 * stored values and scl_slope/scl_inter are kept bit for bit; with --dtype the
 * real values (scaling applied) are converted, rounding and clamping for
 * integer types. The output appears atomically or not at all. */
#include "cli/cli.h"
#include "medpipe/medpipe.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: medpipe convert IN OUT [--dtype T] [--nifti2] [--gzip-level N] [--mem-limit SIZE]\n\n"
               "Converts between .nii, .nii.gz and .hdr/.img (the names decide the formats),\n"
               "keeping voxel values and geometry (affine, xform codes, header fields).\n\n"
               "  --dtype T         store as T (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64): real values\n"
               "                    (scaling applied) are converted; integers are rounded and\n"
               "                    clamped, with a warning giving the number of clamped voxels\n"
               "  --nifti2          write NIfTI-2 (also chosen when a dim exceeds 32767)\n"
               "  --gzip-level N    compression level 1..12 for .gz outputs (default 6)\n"
               "  --mem-limit SIZE  refuse images larger than SIZE bytes (suffix K, M, G)\n");
}

static int parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v > 0)) return -1;
    double mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = 1024.0; end++; break;
    case 'M': mul = 1048576.0; end++; break;
    case 'G': mul = 1073741824.0; end++; break;
    case 'T': mul = 1099511627776.0; end++; break;
    default: break;
    }
    if (toupper((unsigned char)*end) == 'I') end++;
    if (toupper((unsigned char)*end) == 'B') end++;
    if (*end || v * mul > 1.8e19) return -1;
    *out = (uint64_t)(v * mul);
    return 0;
}

typedef struct {
    const char *in, *out;
    int has_dtype;
    mp_dtype_t dtype;
    mp_image_write_opts_t wo;
} args_t;

/* Returns -1 to go on, else the exit code. */
static int parse_args(args_t *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    mp_image_write_opts_init(&a->wo);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
            usage(stdout);
            return MP_EXIT_OK;
        } else if (strcmp(s, "--dtype") == 0) {
            if (i + 1 >= argc) return mp_cli_usage_error("convert", "--dtype needs a type");
            if (mp_dtype_parse(argv[++i], &a->dtype) != MP_OK)
                return mp_cli_usage_error("convert", "%s", mp_error_message());
            a->has_dtype = 1;
        } else if (strcmp(s, "--nifti2") == 0) {
            a->wo.nifti_version = 2;
        } else if (strcmp(s, "--gzip-level") == 0) {
            int64_t lv;
            if (i + 1 >= argc || mp_cli_parse_int(argv[++i], &lv) || lv < 1 || lv > 12)
                return mp_cli_usage_error("convert", "--gzip-level needs a level from 1 to 12");
            a->wo.gzip_level = (int)lv;
        } else if (strcmp(s, "--mem-limit") == 0) {
            uint64_t lim;
            if (i + 1 >= argc || parse_size(argv[++i], &lim))
                return mp_cli_usage_error("convert", "--mem-limit needs a size such as 512M or 4G");
            mp_mem_set_limit(lim);
        } else if (s[0] == '-' && s[1]) {
            return mp_cli_usage_error("convert", "unknown option '%s'", s);
        } else if (!a->in) {
            a->in = s;
        } else if (!a->out) {
            a->out = s;
        } else {
            return mp_cli_usage_error("convert", "unexpected argument '%s'", s);
        }
    }
    if (!a->in || !a->out) return mp_cli_usage_error("convert", "IN and OUT are required");
    if (mp_image_format_from_name(a->out) == MP_FORMAT_UNKNOWN)
        return mp_cli_usage_error("convert", "%s: cannot tell the output format (use .nii, .nii.gz, .hdr or .img)",
                                  a->out);
    return -1;
}

int mp_cli_convert(int argc, char **argv) {
    args_t a;
    int rc = parse_args(&a, argc, argv);
    if (rc >= 0) return rc;
    mp_vol_t *v = NULL;
    if (mp_image_read(&v, a.in) != MP_OK) return mp_cli_fail("convert");
    if (a.has_dtype) {
        mp_vol_t *c = NULL;
        int64_t clamped = 0;
        if (mp_vol_convert(&c, v, a.dtype, 1, &clamped) != MP_OK) {
            mp_vol_free(v);
            return mp_cli_fail("convert");
        }
        if (clamped > 0)
            mp_log(MP_LOG_WARN, "%s: %lld voxels were outside the range of %s (or NaN) and were clamped", a.in,
                   (long long)clamped, mp_dtype_name(a.dtype));
        mp_vol_free(v);
        v = c;
    }
    rc = mp_image_write(a.out, v, &a.wo);
    mp_vol_free(v);
    return rc == MP_OK ? MP_EXIT_OK : mp_cli_fail("convert");
}
