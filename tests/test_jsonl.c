/* JSON-lines writer: every line parses with cJSON, numbers round-trip bit
 * for bit, NaN/inf become null, strings survive escaping (invalid UTF-8
 * becomes U+FFFD), append mode keeps and repairs old logs, a killed writer
 * leaves only complete lines, and concurrent appenders never split a line. */
#include "harness.h"
#include "medpipe/jsonl.h"
#include "medpipe/medpipe.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>

/* Reads path and parses each line; returns the number of lines, or -1 when
 * a line does not parse, is not an object, or the file lacks a final '\n'. */
static int parse_lines(const char *path, cJSON **items, int max) {
    uint8_t *data = NULL;
    size_t len = 0;
    if (mp_file_read_all(path, &data, &len) != 0) return -1;
    int n = 0;
    size_t start = 0;
    int bad = len > 0 && data[len - 1] != '\n';
    for (size_t i = 0; i < len && !bad; i++) {
        if (data[i] != '\n') continue;
        data[i] = '\0';
        cJSON *j = cJSON_Parse((char *)data + start);
        if (!cJSON_IsObject(j)) bad = 1;
        if (n < max && items) items[n] = j;
        else cJSON_Delete(j);
        n++;
        start = i + 1;
    }
    free(data);
    if (bad) {
        for (int i = 0; i < n && i < max && items; i++) cJSON_Delete(items[i]);
        return -1;
    }
    return n;
}

static void free_items(cJSON **items, int n) {
    for (int i = 0; i < n; i++) cJSON_Delete(items[i]);
}

static const char *tmp_path(const char *name) {
    static char path[700];
    snprintf(path, sizeof path, "%s/%s", mp_test_tmpdir("jsonl"), name);
    return path;
}

static int same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

static void test_doubles_round_trip(void) {
    const char *path = tmp_path("doubles.jsonl");
    enum { N = 2000 };
    static double vals[N];
    const double special[] = {0.1, 1.0 / 3.0, 1e300, -1e-300, 5e-324, DBL_MAX, DBL_MIN, -0.0, 0.0,
                              9007199254740993.0, 123456789.123456789, 2.5e-8, 1e21, 1e22};
    size_t ns = sizeof special / sizeof special[0];
    mp_rng_t r;
    mp_rng_init(&r, 7, 1);
    for (int i = 0; i < N; i++) {
        if ((size_t)i < ns) {
            vals[i] = special[i];
            continue;
        }
        double d;
        do {
            uint64_t bits = mp_rng_u64(&r);
            memcpy(&d, &bits, sizeof d);
        } while (!isfinite(d));
        vals[i] = (i % 3 == 0) ? mp_rng_normal(&r) : d; /* both ordinary and extreme values */
    }
    mp_jsonl_t log;
    MP_CHECK_OK(mp_jsonl_open(&log, path, 0));
    for (int i = 0; i < N; i++) MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_INT("i", i), MP_JF_F64("x", vals[i])));
    MP_CHECK(log.lines == N);
    MP_CHECK_OK(mp_jsonl_close(&log));
    static cJSON *items[N];
    int n = parse_lines(path, items, N);
    MP_CHECKF(n == N, "%d lines", n);
    int bad = -1;
    for (int i = 0; i < N && bad < 0; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(items[i], "x");
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(items[i], "i");
        if (!cJSON_IsNumber(x) || !cJSON_IsNumber(k) || k->valueint != i || !same_bits(x->valuedouble, vals[i])) bad = i;
    }
    free_items(items, n);
    MP_CHECKF(bad < 0, "value %d (%.17g) did not round-trip", bad, bad >= 0 ? vals[bad] : 0.0);
    char b[32];
    MP_CHECK(strcmp(mp_json_format_double(0.1, b), "0.1") == 0);
    MP_CHECK(strcmp(mp_json_format_double(3.0, b), "3") == 0);
    MP_CHECK(strcmp(mp_json_format_double(NAN, b), "null") == 0);
    MP_CHECK(strcmp(mp_json_format_double(-INFINITY, b), "null") == 0);
}

static void test_kinds_and_strings(void) {
    const char *path = tmp_path("kinds.jsonl");
    const char *tricky = "quote\" back\\ nl\n tab\t bell\x07 e\xc3\xa9 emoji\xf0\x9f\x98\x80 del\x7f";
    mp_jsonl_t log;
    MP_CHECK_OK(mp_jsonl_open(&log, path, 0));
    MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_STR("event", "step"), MP_JF_INT("big", INT64_MAX), MP_JF_INT("neg", -42),
                                MP_JF_F64("nan", NAN), MP_JF_F64("inf", INFINITY), MP_JF_BOOL("ok", 1),
                                MP_JF_BOOL("bad", 0), MP_JF_NULL("nothing"), MP_JF_STR("none", NULL),
                                MP_JF_STR("s", tricky)));
    /* Invalid UTF-8: lone continuation, truncated sequence, overlong, surrogate. */
    MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_STR("s", "a\x80"
                                                     "b\xe2\x82"
                                                     "c\xc0\xaf"
                                                     "d\xed\xa0\x80"
                                                     "e")));
    MP_CHECK_OK(mp_jsonl_close(&log));

    uint8_t *raw = NULL;
    size_t len = 0;
    MP_CHECK_OK(mp_file_read_all(path, &raw, &len));
    int has_big = strstr((char *)raw, "\"big\":9223372036854775807") != NULL;
    int two_lines = len > 0 && memchr(raw, '\n', len) && (char *)memchr(raw, '\n', len) - (char *)raw < (ptrdiff_t)len - 1;
    free(raw);
    MP_CHECK(has_big); /* exact in the text even if a double reader rounds it */
    MP_CHECK(two_lines);

    cJSON *items[2];
    MP_CHECK(parse_lines(path, items, 2) == 2);
    cJSON *o = items[0];
    int ok = cJSON_IsNull(cJSON_GetObjectItem(o, "nan")) && cJSON_IsNull(cJSON_GetObjectItem(o, "inf")) &&
             cJSON_IsTrue(cJSON_GetObjectItem(o, "ok")) && cJSON_IsFalse(cJSON_GetObjectItem(o, "bad")) &&
             cJSON_IsNull(cJSON_GetObjectItem(o, "nothing")) && cJSON_IsNull(cJSON_GetObjectItem(o, "none")) &&
             cJSON_GetObjectItem(o, "neg")->valuedouble == -42 &&
             strcmp(cJSON_GetObjectItem(o, "event")->valuestring, "step") == 0 &&
             strcmp(cJSON_GetObjectItem(o, "s")->valuestring, tricky) == 0;
    /* Keys keep their order. */
    ok = ok && strcmp(o->child->string, "event") == 0 && strcmp(o->child->next->string, "big") == 0;
    const char *fixed = cJSON_GetObjectItem(items[1], "s")->valuestring;
    const char *want = "a\xef\xbf\xbd"
                       "b\xef\xbf\xbd\xef\xbf\xbd"
                       "c\xef\xbf\xbd\xef\xbf\xbd"
                       "d\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                       "e";
    ok = ok && strcmp(fixed, want) == 0;
    free_items(items, 2);
    MP_CHECK(ok);
}

static void test_cjson_tree(void) {
    const char *path = tmp_path("tree.jsonl");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "run", "unet3d");
    cJSON *m = cJSON_AddObjectToObject(o, "metrics");
    cJSON_AddNumberToObject(m, "dice", 0.82612345678901234);
    cJSON_AddNumberToObject(m, "nan", NAN);
    cJSON *a = cJSON_AddArrayToObject(o, "per_class");
    cJSON_AddItemToArray(a, cJSON_CreateNumber(1.0 / 7.0));
    cJSON_AddItemToArray(a, cJSON_CreateNumber(9007199254740992.0));
    cJSON_AddItemToArray(a, cJSON_CreateBool(1));
    cJSON_AddItemToArray(a, cJSON_CreateNull());
    cJSON_AddItemToArray(a, cJSON_CreateString("x\ny"));
    cJSON_AddRawToObject(o, "raw", "[1,2]");
    mp_jsonl_t log;
    MP_CHECK_OK(mp_jsonl_open(&log, path, 0));
    int rc = mp_jsonl_write(&log, o);
    cJSON *arr = cJSON_CreateArray();
    int rc_arr = mp_jsonl_write(&log, arr); /* a record must be an object */
    cJSON_Delete(arr);
    cJSON_AddRawToObject(o, "badraw", "1\n2");
    int rc_raw = mp_jsonl_write(&log, o);
    MP_CHECK_OK(mp_jsonl_close(&log));
    MP_CHECK_OK(rc);
    MP_CHECK(rc_arr == MP_ERR_ARG && rc_raw == MP_ERR_ARG);

    cJSON *items[2];
    int n = parse_lines(path, items, 2);
    cJSON_DeleteItemFromObject(o, "badraw");
    cJSON_DeleteItemFromObject(o, "raw");
    MP_CHECKF(n == 1, "%d lines", n);
    cJSON *back = items[0];
    const cJSON *raw = cJSON_GetObjectItem(back, "raw");
    int ok = cJSON_IsArray(raw) && cJSON_GetArraySize(raw) == 2;
    cJSON_DeleteItemFromObject(back, "raw");
    const cJSON *bm = cJSON_GetObjectItem(back, "metrics");
    ok = ok && same_bits(cJSON_GetObjectItem(bm, "dice")->valuedouble, 0.82612345678901234);
    ok = ok && cJSON_IsNull(cJSON_GetObjectItem(bm, "nan"));
    const cJSON *ba = cJSON_GetObjectItem(back, "per_class");
    ok = ok && same_bits(cJSON_GetArrayItem(ba, 0)->valuedouble, 1.0 / 7.0) &&
         cJSON_GetArrayItem(ba, 1)->valuedouble == 9007199254740992.0 &&
         strcmp(cJSON_GetArrayItem(ba, 4)->valuestring, "x\ny") == 0;
    free_items(items, n);
    cJSON_Delete(o);
    MP_CHECK(ok);

    /* Nesting beyond the limit is refused, not overflowed. */
    cJSON *deep = cJSON_CreateObject(), *cur = deep;
    for (int i = 0; i < 300; i++) cur = cJSON_AddObjectToObject(cur, "d");
    char *text = mp_json_print(deep);
    cJSON_Delete(deep);
    MP_CHECK(text == NULL);
    MP_CHECK(mp_json_print(NULL) == NULL);
}

static void test_append_and_repair(void) {
    const char *path = tmp_path("append.jsonl");
    mp_jsonl_t log;
    MP_CHECK_OK(mp_jsonl_open(&log, path, 0));
    for (int i = 0; i < 3; i++) MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_INT("step", i)));
    MP_CHECK_OK(mp_jsonl_close(&log));
    MP_CHECK_OK(mp_jsonl_open(&log, path, 1));
    for (int i = 3; i < 5; i++) MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_INT("step", i)));
    MP_CHECK_OK(mp_jsonl_close(&log));
    cJSON *items[8];
    int n = parse_lines(path, items, 8);
    MP_CHECKF(n == 5, "%d lines", n);
    int order = 1;
    for (int i = 0; i < n; i++) order &= cJSON_GetObjectItem(items[i], "step")->valueint == i;
    free_items(items, n);
    MP_CHECK(order);

    /* A killed writer left half a line: append drops it, keeps the rest. */
    FILE *f = fopen(path, "a");
    MP_CHECK(f != NULL);
    fputs("{\"step\":5,\"lo", f);
    fclose(f);
    MP_CHECK(parse_lines(path, NULL, 0) == -1);
    MP_CHECK_OK(mp_jsonl_open(&log, path, 1));
    MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_INT("step", 5)));
    MP_CHECK_OK(mp_jsonl_close(&log));
    n = parse_lines(path, items, 8);
    MP_CHECKF(n == 6, "%d lines", n);
    int last = cJSON_GetObjectItem(items[5], "step")->valueint;
    free_items(items, n);
    MP_CHECK(last == 5);

    /* A file that is only a partial line becomes empty. */
    f = fopen(path, "w");
    fputs("{\"a\":", f);
    fclose(f);
    MP_CHECK_OK(mp_jsonl_open(&log, path, 1));
    MP_CHECK_OK(mp_jsonl_close(&log));
    struct stat st;
    MP_CHECK(stat(path, &st) == 0 && st.st_size == 0);

    /* Non-append truncates. */
    MP_CHECK_OK(mp_jsonl_open(&log, path, 0));
    MP_CHECK_OK(mp_jsonl_record(&log, MP_JF_STR("fresh", "yes")));
    MP_CHECK_OK(mp_jsonl_close(&log));
    MP_CHECK(parse_lines(path, NULL, 0) == 1);
}

static void test_errors(void) {
    mp_jsonl_t log;
    memset(&log, 0, sizeof log);
    MP_CHECK(mp_jsonl_close(&log) == MP_OK); /* zeroed: nothing to close (fd 0 untouched) */
    MP_CHECK(mp_jsonl_record(&log, MP_JF_INT("a", 1)) == MP_ERR_ARG);
    MP_CHECK(mp_jsonl_open(&log, "/nonexistent-dir/x.jsonl", 1) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), "/nonexistent-dir/x.jsonl") != NULL);
    MP_CHECK(mp_jsonl_open(&log, "", 1) == MP_ERR_ARG);
    MP_CHECK_OK(mp_jsonl_open(&log, tmp_path("err.jsonl"), 0));
    mp_jsonl_field_t nokey = {NULL, MP_JSON_INT, {.i = 1}};
    MP_CHECK(mp_jsonl_write_fields(&log, &nokey, 1) == MP_ERR_ARG);
    MP_CHECK_OK(mp_jsonl_write_fields(&log, NULL, 0)); /* {} is a valid record */
    MP_CHECK_OK(mp_jsonl_close(&log));
    MP_CHECK_OK(mp_jsonl_close(&log)); /* twice is fine */
    MP_CHECK(parse_lines(tmp_path("err.jsonl"), NULL, 0) == 1);
}

/* A process killed with SIGKILL mid-run keeps every line it wrote. */
static void test_killed_writer_keeps_lines(void) {
    char path[700], ready[700];
    snprintf(path, sizeof path, "%s", tmp_path("killed.jsonl"));
    snprintf(ready, sizeof ready, "%s", tmp_path("killed.ready"));
    unlink(ready);
    pid_t pid = fork();
    MP_CHECK(pid >= 0);
    if (pid == 0) {
        mp_jsonl_t log;
        if (mp_jsonl_open(&log, path, 0)) _exit(3);
        for (int i = 0; i < 500; i++) mp_jsonl_record(&log, MP_JF_INT("step", i), MP_JF_F64("loss", 1.0 / (i + 1)));
        FILE *f = fopen(ready, "w");
        if (f) fclose(f);
        for (int i = 500;; i++) mp_jsonl_record(&log, MP_JF_INT("step", i), MP_JF_F64("loss", 1.0 / (i + 1)));
    }
    for (int t = 0; t < 2000 && access(ready, F_OK) != 0; t++) usleep(5000);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    MP_CHECK(WIFSIGNALED(status));
    /* The kill can land inside write(): only a last partial line is allowed,
     * and reopening in append mode repairs exactly that. */
    mp_jsonl_t log;
    MP_CHECK_OK(mp_jsonl_open(&log, path, 1));
    MP_CHECK_OK(mp_jsonl_close(&log));
    static cJSON *items[1];
    int n = parse_lines(path, items, 0);
    MP_CHECKF(n >= 500, "%d complete lines", n);
}

/* Two processes appending to one file never split each other's lines. */
static void test_concurrent_appenders(void) {
    const char *path = tmp_path("shared.jsonl");
    unlink(path);
    char pad[300];
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            mp_jsonl_t log;
            if (mp_jsonl_open(&log, path, 1)) _exit(3);
            for (int i = 0; i < 400; i++)
                if (mp_jsonl_record(&log, MP_JF_INT("rank", k), MP_JF_INT("i", i), MP_JF_STR("pad", pad))) _exit(4);
            _exit(mp_jsonl_close(&log) ? 5 : 0);
        }
    }
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        int status;
        waitpid(kids[k], &status, 0);
        ok &= WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    MP_CHECK(ok);
    static cJSON *items[800];
    int n = parse_lines(path, items, 800);
    MP_CHECKF(n == 800, "%d lines", n);
    int next[2] = {0, 0};
    for (int i = 0; i < n; i++) {
        int k = cJSON_GetObjectItem(items[i], "rank")->valueint, j = cJSON_GetObjectItem(items[i], "i")->valueint;
        ok &= (k == 0 || k == 1) && j == next[k];
        if (k == 0 || k == 1) next[k]++;
    }
    free_items(items, n);
    MP_CHECK(ok); /* each writer's lines complete and in its own order */
}

int main(void) {
    MP_RUN(test_doubles_round_trip);
    MP_RUN(test_kinds_and_strings);
    MP_RUN(test_cjson_tree);
    MP_RUN(test_append_and_repair);
    MP_RUN(test_errors);
    MP_RUN(test_killed_writer_keeps_lines);
    MP_RUN(test_concurrent_appenders);
    return mp_test_summary();
}
