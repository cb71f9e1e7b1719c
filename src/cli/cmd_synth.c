/* medpipe synth: placeholder until the subcommand lands. */
#include "cli/cli.h"

#include <stdio.h>

int mp_cli_synth(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "medpipe synth: not built yet\n");
    return MP_EXIT_FAIL;
}
