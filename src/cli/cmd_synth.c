/* medpipe synth: writes the synthetic CT dataset (the embedded default data)
 * as an nnU-Net-style folder, cases generated in parallel with a progress bar
 * on stderr. */
#include "cli/cli.h"
#include "medpipe/dataset.h"
#include "medpipe/synth.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    mp_synth_params_t d;
    mp_synth_params_init(&d);
    fprintf(f,
            "usage: medpipe synth --out DIR [options]\n\n"
            "Writes a synthetic CT-like dataset in the nnU-Net layout: DIR/imagesTr/case_XXX_0000.nii.gz\n"
            "(int16 HU), DIR/labelsTr/case_XXX.nii.gz (uint8), imagesTs/labelsTs for the test cases and\n"
            "DIR/dataset.json. The same seed and options give the same bytes on any machine and with\n"
            "any number of threads. DIR appears complete or not at all.\n\n"
            "options:\n"
            "  --out DIR           output folder (created; must not exist or be empty, see --force)\n"
            "  --cases N           training cases (default %lld)\n"
            "  --test-cases M      test cases, numbered after the training ones (default %lld)\n"
            "  --seed S            random seed, 0..2^64-1 (default %llu)\n"
            "  --size X,Y,Z        voxels per case, each 24..1024 (default %lld,%lld,%lld)\n"
            "  --spacing A,B,C     voxel size in mm, each 0.1..20 (default %g,%g,%g)\n"
            "  --classes K         organ classes 1..%d (default %d): liver, spleen, kidney, lesion,\n"
            "                      pancreas, aorta, gallbladder, node (the first K)\n"
            "  --noise LO,HI       noise sd range in HU, drawn per case (default %g,%g)\n"
            "  --no-partial-volume sharp edges: no supersampling or blur\n"
            "  --threads T         worker threads (default: all CPUs)\n"
            "  --force             replace DIR if it holds an earlier medpipe synth dataset\n"
            "  --quiet             no progress output\n"
            "  --help              this text\n",
            (long long)d.train_cases, (long long)d.test_cases, (unsigned long long)d.seed, (long long)d.size[0],
            (long long)d.size[1], (long long)d.size[2], d.spacing[0], d.spacing[1], d.spacing[2],
            MP_SYNTH_MAX_CLASSES, d.classes, d.noise_hu[0], d.noise_hu[1]);
}

static int parse_u64(const char *s, uint64_t *out) {
    if (!s || !*s) return -1;
    uint64_t v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        unsigned d = (unsigned)(*c - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static void on_progress(void *user, int64_t done, int64_t total) {
    (void)total;
    mp_progress_update(user, done, NULL);
}

typedef struct {
    const char *out;
    int threads, force, quiet;
} synth_opts_t;

/* Reports a usage error and returns -1. */
static int usage_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_fail(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mp_cli_usage_error("synth", "%s", msg);
    return -1;
}

/* Parses one option (with its value in `val`); returns 1 if it took the
 * value, 0 if not, -1 on a usage error (already reported). */
static int parse_option(const char *opt, const char *val, mp_synth_params_t *p, synth_opts_t *o) {
    int64_t v3[3], v;
    double d3[3];
    if (!strcmp(opt, "--no-partial-volume") || !strcmp(opt, "--force") || !strcmp(opt, "--quiet")) {
        if (opt[2] == 'n') p->partial_volume = 0;
        else if (opt[2] == 'f') o->force = 1;
        else o->quiet = 1;
        return 0;
    }
    if (!val) return usage_fail("%s needs a value", opt);
    if (!strcmp(opt, "--out")) o->out = val;
    else if (!strcmp(opt, "--seed")) {
        if (parse_u64(val, &p->seed)) return usage_fail("--seed %s: not an integer 0..2^64-1", val);
    } else if (!strcmp(opt, "--cases") || !strcmp(opt, "--test-cases") || !strcmp(opt, "--classes") ||
               !strcmp(opt, "--threads")) {
        if (mp_cli_parse_int(val, &v) || v < 0 || v > 100000)
            return usage_fail("%s %s: not an integer 0..100000", opt, val);
        if (!strcmp(opt, "--cases")) p->train_cases = v;
        else if (!strcmp(opt, "--test-cases")) p->test_cases = v;
        else if (!strcmp(opt, "--classes")) p->classes = (int)v;
        else o->threads = (int)v;
    } else if (!strcmp(opt, "--size")) {
        if (mp_cli_parse_ints(val, v3, 3)) return usage_fail("--size %s: expected X,Y,Z", val);
        memcpy(p->size, v3, sizeof v3);
    } else if (!strcmp(opt, "--spacing")) {
        if (mp_cli_parse_doubles(val, d3, 3)) return usage_fail("--spacing %s: expected A,B,C", val);
        memcpy(p->spacing, d3, sizeof d3);
    } else if (!strcmp(opt, "--noise")) {
        if (mp_cli_parse_doubles(val, p->noise_hu, 2)) return usage_fail("--noise %s: expected LO,HI", val);
    } else {
        return usage_fail("unknown option '%s'", opt);
    }
    return 1;
}

int mp_cli_synth(int argc, char **argv) {
    mp_synth_params_t p;
    mp_synth_params_init(&p);
    synth_opts_t o = {NULL, 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return MP_EXIT_OK;
        }
        if (strncmp(argv[i], "--", 2) != 0) return mp_cli_usage_error("synth", "unexpected argument '%s'", argv[i]);
        char opt[64];
        const char *eq = strchr(argv[i], '='), *val = NULL;
        size_t len = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);
        if (len >= sizeof opt) return mp_cli_usage_error("synth", "unknown option '%s'", argv[i]);
        memcpy(opt, argv[i], len);
        opt[len] = '\0';
        val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        int took = parse_option(opt, val, &p, &o);
        if (took < 0) return MP_EXIT_USAGE;
        if (took && !eq) i++;
        if (!took && eq) return mp_cli_usage_error("synth", "%s takes no value", opt);
    }
    if (!o.out) return mp_cli_usage_error("synth", "--out DIR is required");
    if (mp_synth_params_check(&p)) return mp_cli_usage_error("synth", "%s", mp_error_message());

    mp_pool_t *pool = mp_pool_create(o.threads);
    if (!pool) return mp_cli_fail("synth");
    mp_progress_t prog;
    mp_progress_init(&prog, o.quiet ? NULL : stderr, "synth", "cases", p.train_cases + p.test_cases);
    double t0 = mp_time_now();
    int rc = mp_synth_dataset_write(o.out, &p, pool, o.force, on_progress, &prog);
    mp_pool_free(pool);
    if (rc) return mp_cli_fail("synth");
    mp_progress_finish(&prog, NULL);
    if (!o.quiet)
        printf("wrote %lld training + %lld test cases (%lldx%lldx%lld, %g,%g,%g mm, %d classes, seed %llu) to %s "
               "in %.2f s\n",
               (long long)p.train_cases, (long long)p.test_cases, (long long)p.size[0], (long long)p.size[1],
               (long long)p.size[2], p.spacing[0], p.spacing[1], p.spacing[2], p.classes,
               (unsigned long long)p.seed, o.out, mp_time_now() - t0);
    return MP_EXIT_OK;
}
