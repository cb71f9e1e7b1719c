/* medpipe train: placeholder until the end-to-end work lands. */
#include "cli/cli.h"

#include <stdio.h>

int mp_cli_train(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "medpipe train: not available in this build yet\n");
    return MP_EXIT_FAIL;
}
