/* medpipe: entry point and subcommand dispatch. */
#include "cli/cli.h"
#include "medpipe/medpipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command_t;

static const command_t commands[] = {
    {"info", mp_cli_info, "image facts (dims, spacing, orientation, range); DICOM series and tags"},
    {"convert", mp_cli_convert, "convert images: NIfTI/Analyze, DICOM (file, folder, DICOMDIR) in, DICOM series out"},
    {"synth", mp_cli_synth, "write a synthetic CT-like dataset in the nnU-Net layout"},
    {"preprocess", mp_cli_preprocess, "check a dataset, fingerprint, plan, and build the preprocessing cache"},
    {"train", mp_cli_train, "train a 3D U-Net on a preprocessing cache (checkpoints, log.jsonl, --resume)"},
    {"predict", mp_cli_predict, "segment NIfTI/DICOM images with a trained model (sliding window, TTA, DICOM SEG)"},
    {"evaluate", mp_cli_evaluate, "Dice, IoU, HD95, ASSD, surface Dice of predictions vs references"},
    {"doctor", mp_cli_doctor, "what this machine offers and what medpipe will use"},
    {"bench", mp_cli_bench, "benchmarks: 'bench unet' times the default 3D U-Net training step"},
};
static void usage(FILE *f) {
    fprintf(f, "medpipe %s: 3D medical image segmentation, from DICOM/NIfTI to predictions\n\n", MP_VERSION);
    fprintf(f, "usage: medpipe <command> [options]   ('medpipe <command> --help' for details)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nenvironment: MEDPIPE_MEM_LIMIT=SIZE caps any allocation sized by an input file\n"
               "             (default 16G; e.g. 512M), MEDPIPE_VERBOSE=1 shows debug messages\n");
    fprintf(f, "\nexit status: 0 success, 1 failure (message on stderr), 2 usage error, 130 interrupted\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? MP_EXIT_USAGE : MP_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("medpipe %s\n", MP_VERSION);
        return MP_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            const char *verbose = getenv("MEDPIPE_VERBOSE");
            mp_cli_init_logging(verbose && *verbose && strcmp(verbose, "0") != 0);
            const char *limit = getenv("MEDPIPE_MEM_LIMIT");
            if (limit && *limit) {
                uint64_t bytes;
                if (mp_cli_parse_size(limit, &bytes) != 0) {
                    fprintf(stderr, "medpipe: MEDPIPE_MEM_LIMIT='%s' is not a size (e.g. 512M, 16G)\n", limit);
                    return MP_EXIT_USAGE;
                }
                mp_mem_set_limit(bytes);
            }
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "medpipe: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return MP_EXIT_USAGE;
}
