/* A minimal test harness: each tests/test_*.c is one program whose main()
 * calls MP_RUN(fn) per test and returns mp_test_summary(). A test fails on its
 * first failed check; the program prints "N passed, N failed" and exits
 * non-zero when any failed. tests/run.sh adds the counts of all programs. */
#ifndef MP_TEST_HARNESS_H
#define MP_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mp_test_passed, mp_test_failed, mp_test_cur_failed;
static const char *mp_test_cur_name;

#define MP_CHECK(cond)                                                                    \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "  FAIL %s: %s:%d: %s\n", mp_test_cur_name, __FILE__, __LINE__, \
                    #cond);                                                               \
            mp_test_cur_failed = 1;                                                       \
            return;                                                                       \
        }                                                                                 \
    } while (0)

/* Check with a formatted explanation. */
#define MP_CHECKF(cond, ...)                                                               \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "  FAIL %s: %s:%d: %s: ", mp_test_cur_name, __FILE__, __LINE__, \
                    #cond);                                                               \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
            mp_test_cur_failed = 1;                                                       \
            return;                                                                       \
        }                                                                                 \
    } while (0)

/* A library call that must succeed: prints the library's message otherwise. */
#define MP_CHECK_OK(expr)                                                                   \
    do {                                                                                    \
        int mp_rc_ = (expr);                                                                \
        if (mp_rc_ != 0) {                                                                  \
            fprintf(stderr, "  FAIL %s: %s:%d: %s returned %d: %s\n", mp_test_cur_name, __FILE__, \
                    __LINE__, #expr, mp_rc_, mp_error_message());                           \
            mp_test_cur_failed = 1;                                                         \
            return;                                                                         \
        }                                                                                   \
    } while (0)

#define MP_CHECK_NEAR(a, b, tol)                                                              \
    do {                                                                                      \
        double mp_a_ = (a), mp_b_ = (b);                                                      \
        if (!(fabs(mp_a_ - mp_b_) <= (tol))) {                                                \
            fprintf(stderr, "  FAIL %s: %s:%d: %s = %.17g vs %s = %.17g (tol %g)\n",          \
                    mp_test_cur_name, __FILE__, __LINE__, #a, mp_a_, #b, mp_b_, (double)(tol)); \
            mp_test_cur_failed = 1;                                                           \
            return;                                                                           \
        }                                                                                     \
    } while (0)

#define MP_RUN(fn) mp_test_run(#fn, fn)

static inline void mp_test_run(const char *name, void (*fn)(void)) {
    mp_test_cur_name = name;
    mp_test_cur_failed = 0;
    fn();
    if (mp_test_cur_failed) {
        mp_test_failed++;
        fprintf(stderr, "FAIL %s\n", name);
    } else {
        mp_test_passed++;
        printf("ok   %s\n", name);
    }
    fflush(stdout);
}

static inline int mp_test_summary(void) {
    printf("%d passed, %d failed\n", mp_test_passed, mp_test_failed);
    return mp_test_failed ? 1 : 0;
}

/* Scratch directory for a test program, created fresh:
 * $TMPDIR/medpipe-test-<name>-<pid>. */
static inline const char *mp_test_tmpdir(const char *name) {
    static char dir[512];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/medpipe-test-%s-%ld", t ? t : "/tmp", name, (long)getpid());
    mkdir(dir, 0777);
    return dir;
}

/* 1 when both files can be read and hold the same bytes. */
static inline int mp_test_files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int eq = fa && fb;
    char ba[4096], bb[4096];
    while (eq) {
        size_t na = fread(ba, 1, sizeof ba, fa), nb = fread(bb, 1, sizeof bb, fb);
        eq = na == nb && memcmp(ba, bb, na) == 0;
        if (na < sizeof ba) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

#endif
