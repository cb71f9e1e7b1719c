/* medpipe convert: placeholder until the subcommand lands. */
#include "cli/cli.h"

#include <stdio.h>

int mp_cli_convert(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "medpipe convert: not built yet\n");
    return MP_EXIT_FAIL;
}
