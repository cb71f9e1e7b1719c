/* medpipe evaluate: placeholder until the subcommand lands. */
#include "cli/cli.h"

#include <stdio.h>

int mp_cli_evaluate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "medpipe evaluate: not built yet\n");
    return MP_EXIT_FAIL;
}
