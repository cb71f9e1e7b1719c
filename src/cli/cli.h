/* The medpipe command: one function per subcommand plus shared helpers.
 * Exit codes (documented in README.md): */
#ifndef MP_CLI_H
#define MP_CLI_H

#include <stdint.h>

enum {
    MP_EXIT_OK = 0,        /* success */
    MP_EXIT_FAIL = 1,      /* the work failed: bad input file, I/O error, mismatch */
    MP_EXIT_USAGE = 2,     /* bad command line */
    MP_EXIT_INTERRUPT = 130 /* stopped by Ctrl-C after saving what could be saved */
};

int mp_cli_info(int argc, char **argv);
int mp_cli_convert(int argc, char **argv);
int mp_cli_synth(int argc, char **argv);
int mp_cli_evaluate(int argc, char **argv);
int mp_cli_doctor(int argc, char **argv);
int mp_cli_bench(int argc, char **argv);
/* medpipe bench table (src/cli/bench_table.c); argv[1] is "table". */
int mp_cli_bench_table(int argc, char **argv);
int mp_cli_preprocess(int argc, char **argv);
int mp_cli_train(int argc, char **argv);
int mp_cli_predict(int argc, char **argv);

/* Installs the stderr log callback (level >= min_level is shown). */
void mp_cli_init_logging(int verbose);
/* Prints "medpipe <cmd>: <library message>" to stderr and returns MP_EXIT_FAIL. */
int mp_cli_fail(const char *cmd);
/* Prints "medpipe <cmd>: <message>" plus a usage hint; returns MP_EXIT_USAGE. */
int mp_cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parses "a,b,c" into n integers / doubles; 0 on success. */
int mp_cli_parse_ints(const char *s, int64_t *out, int n);
int mp_cli_parse_doubles(const char *s, double *out, int n);
/* Strict integer / double parsing of a whole string; 0 on success. */
int mp_cli_parse_int(const char *s, int64_t *out);
int mp_cli_parse_double(const char *s, double *out);
/* Sizes like "512M", "16G" (binary units) into bytes; 0 on success. */
int mp_cli_parse_size(const char *s, uint64_t *out);
/* "dir/name" (no doubled slash) and the last path component without
 * trailing slashes ("a/dicom/" -> "dicom"); malloc'd, NULL when out of memory. */
char *mp_cli_path_join(const char *dir, const char *name);
char *mp_cli_base_name(const char *path);

#endif
