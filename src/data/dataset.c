/* Dataset folders: dataset.json (nnU-Net v2 and Medical Segmentation
 * Decathlon forms) read and written with cJSON, and the listing of cases from
 * imagesTr/labelsTr (imagesTs/labelsTs) with the _XXXX channel suffix. The
 * file is user input: every key is checked for presence and type and every
 * failure names the file and the key. */
#include "medpipe/dataset.h"
#include "medpipe/core.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

static char *dup_str(const char *s) {
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* "a" + "/" + "b" (+ "c"), malloc'ed. */
static char *join3(const char *a, const char *b, const char *c) {
    size_t na = strlen(a), nb = strlen(b), nc = c ? strlen(c) : 0;
    char *s = malloc(na + nb + nc + 2);
    if (!s) return NULL;
    memcpy(s, a, na);
    s[na] = '/';
    memcpy(s + na + 1, b, nb);
    if (nc) memcpy(s + na + 1 + nb, c, nc);
    s[na + 1 + nb + nc] = '\0';
    return s;
}

/* ---------------------------------------------------------------- building */

int mp_dataset_create(mp_dataset_t **out) {
    *out = NULL;
    mp_dataset_t *ds = calloc(1, sizeof *ds);
    if (!ds || !(ds->file_ending = dup_str(".nii.gz"))) {
        free(ds);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    *out = ds;
    return MP_OK;
}

static void free_entries(mp_dataset_entry_t *e, int64_t n) {
    for (int64_t i = 0; e && i < n; i++) {
        free(e[i].image);
        free(e[i].label);
    }
    free(e);
}

void mp_dataset_free(mp_dataset_t *ds) {
    if (!ds) return;
    free(ds->root);
    free(ds->name);
    free(ds->description);
    for (int i = 0; i < ds->n_channels; i++) free(ds->channel_names[i]);
    free(ds->channel_names);
    for (int i = 0; i < ds->n_labels; i++) free(ds->labels[i].name);
    free(ds->labels);
    free(ds->file_ending);
    free_entries(ds->msd_training, ds->n_msd_training);
    free_entries(ds->msd_test, ds->n_msd_test);
    free(ds->extra_json);
    free(ds);
}

int mp_dataset_set_channel(mp_dataset_t *ds, int index, const char *name) {
    if (index < 0 || index >= MP_DATASET_MAX_CHANNELS || !name || !*name)
        return mp_error_set(MP_ERR_ARG, "channel %d: index must be 0..%d and the name non-empty", index,
                            MP_DATASET_MAX_CHANNELS - 1);
    if (index >= ds->n_channels) {
        char **c = realloc(ds->channel_names, (size_t)(index + 1) * sizeof *c);
        if (!c) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        for (int i = ds->n_channels; i <= index; i++) c[i] = NULL;
        ds->channel_names = c;
        ds->n_channels = index + 1;
    }
    char *d = dup_str(name);
    if (!d) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    free(ds->channel_names[index]);
    ds->channel_names[index] = d;
    return MP_OK;
}

int mp_dataset_add_label(mp_dataset_t *ds, const char *name, int value) {
    if (!name || !*name) return mp_error_set(MP_ERR_ARG, "label %d has an empty name", value);
    if (value < 0 || value > 32767) return mp_error_set(MP_ERR_ARG, "label '%s': value %d is not in 0..32767", name, value);
    if (ds->n_labels >= MP_DATASET_MAX_LABELS)
        return mp_error_set(MP_ERR_LIMIT, "more than %d labels", MP_DATASET_MAX_LABELS);
    int pos = ds->n_labels;
    for (int i = 0; i < ds->n_labels; i++) {
        if (strcmp(ds->labels[i].name, name) == 0) return mp_error_set(MP_ERR_ARG, "label '%s' appears twice", name);
        if (ds->labels[i].value == value)
            return mp_error_set(MP_ERR_ARG, "labels '%s' and '%s' share the value %d", ds->labels[i].name, name, value);
        if (ds->labels[i].value > value && pos == ds->n_labels) pos = i;
    }
    mp_dataset_label_t *l = realloc(ds->labels, (size_t)(ds->n_labels + 1) * sizeof *l);
    if (!l) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    ds->labels = l;
    char *d = dup_str(name);
    if (!d) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    memmove(l + pos + 1, l + pos, (size_t)(ds->n_labels - pos) * sizeof *l);
    l[pos].name = d;
    l[pos].value = value;
    ds->n_labels++;
    return MP_OK;
}

static int replace_str(char **field, const char *value) {
    if (!value) return MP_OK;
    char *d = dup_str(value);
    if (!d) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    free(*field);
    *field = d;
    return MP_OK;
}

int mp_dataset_set_info(mp_dataset_t *ds, const char *name, const char *description, const char *file_ending) {
    if (file_ending && file_ending[0] != '.')
        return mp_error_set(MP_ERR_ARG, "file ending '%s' must start with '.'", file_ending);
    int rc = replace_str(&ds->name, name);
    if (!rc) rc = replace_str(&ds->description, description);
    if (!rc) rc = replace_str(&ds->file_ending, file_ending);
    return rc;
}

int mp_dataset_set_extra(mp_dataset_t *ds, const char *json) {
    if (!json) {
        free(ds->extra_json);
        ds->extra_json = NULL;
        return MP_OK;
    }
    cJSON *o = cJSON_Parse(json);
    int ok = o && cJSON_IsObject(o);
    cJSON_Delete(o);
    if (!ok) return mp_error_set(MP_ERR_ARG, "extra dataset.json keys: not a JSON object");
    return replace_str(&ds->extra_json, json);
}

int mp_dataset_label_value(const mp_dataset_t *ds, const char *name) {
    for (int i = 0; i < ds->n_labels; i++)
        if (strcmp(ds->labels[i].name, name) == 0) return ds->labels[i].value;
    return -1;
}

const char *mp_dataset_label_name(const mp_dataset_t *ds, int value) {
    for (int i = 0; i < ds->n_labels; i++)
        if (ds->labels[i].value == value) return ds->labels[i].name;
    return NULL;
}

int mp_dataset_max_label(const mp_dataset_t *ds) {
    return ds->n_labels ? ds->labels[ds->n_labels - 1].value : 0;
}

/* ---------------------------------------------------------------- parsing */

/* Whole non-negative decimal integer in [0, max]; -1 otherwise. */
static long parse_index(const char *s, long max) {
    if (!s || !*s) return -1;
    long v = 0;
    for (const char *c = s; *c; c++) {
        if (*c < '0' || *c > '9') return -1;
        v = v * 10 + (*c - '0');
        if (v > max) return -1;
    }
    return v;
}

/* An integral JSON number in [lo, hi]. */
static int json_int(const cJSON *v, double lo, double hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) return -1;
    *out = (int64_t)d;
    return 0;
}

static int parse_channels(mp_dataset_t *ds, const cJSON *root, const char *src) {
    const char *key = "channel_names";
    const cJSON *ch = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!ch) {
        key = "modality";
        ch = cJSON_GetObjectItemCaseSensitive(root, key);
    }
    if (!ch) return mp_error_set(MP_ERR_FORMAT, "%s: missing key \"channel_names\"", src);
    if (!cJSON_IsObject(ch) || !ch->child)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" must be a non-empty object like {\"0\": \"CT\"}", src, key);
    const cJSON *it;
    cJSON_ArrayForEach(it, ch) {
        long idx = parse_index(it->string, MP_DATASET_MAX_CHANNELS - 1);
        if (idx < 0)
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\": key \"%s\" is not a channel number 0..%d", src, key,
                                it->string, MP_DATASET_MAX_CHANNELS - 1);
        if (!cJSON_IsString(it) || !it->valuestring[0])
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\": channel %ld must have a non-empty name", src, key, idx);
        if (idx < ds->n_channels && ds->channel_names[idx])
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\": channel %ld appears twice", src, key, idx);
        int rc = mp_dataset_set_channel(ds, (int)idx, it->valuestring);
        if (rc) return rc;
    }
    for (int i = 0; i < ds->n_channels; i++)
        if (!ds->channel_names[i])
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\": channel %d is missing (channels must be 0..%d)", src, key,
                                i, ds->n_channels - 1);
    return MP_OK;
}

static int parse_labels(mp_dataset_t *ds, const cJSON *root, const char *src) {
    const cJSON *lab = cJSON_GetObjectItemCaseSensitive(root, "labels");
    if (!lab) return mp_error_set(MP_ERR_FORMAT, "%s: missing key \"labels\"", src);
    if (!cJSON_IsObject(lab) || !lab->child)
        return mp_error_set(MP_ERR_FORMAT, "%s: \"labels\" must be a non-empty object like {\"background\": 0}", src);
    const cJSON *it;
    cJSON_ArrayForEach(it, lab) {
        int64_t v;
        const char *name;
        if (cJSON_IsString(it)) { /* Decathlon: {"0": "background"} */
            long idx = parse_index(it->string, 32767);
            if (idx < 0)
                return mp_error_set(MP_ERR_FORMAT, "%s: \"labels\": \"%s\": \"%s\" is neither name->value nor value->name",
                                    src, it->string, it->valuestring);
            v = idx;
            name = it->valuestring;
        } else if (cJSON_IsArray(it)) {
            return mp_error_set(MP_ERR_UNSUPPORTED, "%s: \"labels\": \"%s\" is a region (a list of values); "
                                "region-based labels are not supported", src, it->string);
        } else if (json_int(it, 0, 32767, &v) == 0) {
            name = it->string;
        } else {
            return mp_error_set(MP_ERR_FORMAT, "%s: \"labels\": \"%s\" must be an integer 0..32767", src, it->string);
        }
        int rc = mp_dataset_add_label(ds, name, (int)v);
        if (rc) return mp_error_wrap(rc, "%s: \"labels\": ", src);
    }
    if (ds->labels[0].value != 0) return mp_error_set(MP_ERR_FORMAT, "%s: \"labels\" has no background (value 0)", src);
    return MP_OK;
}

static int parse_entries(const cJSON *arr, const char *src, const char *key, int with_label,
                         mp_dataset_entry_t **out, int64_t *n_out) {
    if (!cJSON_IsArray(arr)) return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" must be a list", src, key);
    int64_t n = cJSON_GetArraySize(arr);
    mp_dataset_entry_t *e = calloc((size_t)(n ? n : 1), sizeof *e);
    if (!e) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    *out = e;
    *n_out = n;
    int64_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *img = with_label ? cJSON_GetObjectItemCaseSensitive(it, "image") : it;
        const cJSON *lab = with_label ? cJSON_GetObjectItemCaseSensitive(it, "label") : NULL;
        if (!cJSON_IsString(img) || (with_label && !cJSON_IsString(lab)))
            return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\"[%lld] must be %s", src, key, (long long)i,
                                with_label ? "{\"image\": path, \"label\": path}" : "a path");
        e[i].image = dup_str(img->valuestring);
        e[i].label = lab ? dup_str(lab->valuestring) : NULL;
        if (!e[i].image || (lab && !e[i].label)) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        i++;
    }
    return MP_OK;
}

static int is_known_key(const char *k) {
    static const char *known[] = {"channel_names", "modality", "labels", "numTraining", "file_ending",
                                  "name", "description", "training", "test"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(k, known[i]) == 0) return 1;
    return 0;
}

static int parse_rest(mp_dataset_t *ds, const cJSON *root, const char *src) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "training");
    int rc = v ? parse_entries(v, src, "training", 1, &ds->msd_training, &ds->n_msd_training) : MP_OK;
    v = cJSON_GetObjectItemCaseSensitive(root, "test");
    if (!rc && v) rc = parse_entries(v, src, "test", 0, &ds->msd_test, &ds->n_msd_test);
    if (rc) return rc;
    v = cJSON_GetObjectItemCaseSensitive(root, "numTraining");
    if (!v) return mp_error_set(MP_ERR_FORMAT, "%s: missing key \"numTraining\"", src);
    if (json_int(v, 0, 1e12, &ds->num_training))
        return mp_error_set(MP_ERR_FORMAT, "%s: \"numTraining\" must be a non-negative integer", src);
    v = cJSON_GetObjectItemCaseSensitive(root, "file_ending");
    if (v) {
        if (!cJSON_IsString(v) || v->valuestring[0] != '.')
            return mp_error_set(MP_ERR_FORMAT, "%s: \"file_ending\" must be a string starting with '.'", src);
        if ((rc = replace_str(&ds->file_ending, v->valuestring))) return rc;
    } else if (!cJSON_GetObjectItemCaseSensitive(root, "training")) {
        /* The Decathlon form names its files in "training"; nnU-Net needs the ending. */
        return mp_error_set(MP_ERR_FORMAT, "%s: missing key \"file_ending\"", src);
    }
    const char *strs[2] = {"name", "description"};
    char **dst[2] = {&ds->name, &ds->description};
    for (int i = 0; i < 2; i++) {
        v = cJSON_GetObjectItemCaseSensitive(root, strs[i]);
        if (!v) continue;
        if (!cJSON_IsString(v)) return mp_error_set(MP_ERR_FORMAT, "%s: \"%s\" must be a string", src, strs[i]);
        if ((rc = replace_str(dst[i], v->valuestring))) return rc;
    }
    cJSON *extra = cJSON_CreateObject();
    if (!extra) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (is_known_key(it->string) || cJSON_GetObjectItemCaseSensitive(extra, it->string)) continue;
        cJSON *dupv = cJSON_Duplicate(it, 1);
        if (!dupv || !cJSON_AddItemToObject(extra, it->string, dupv)) {
            cJSON_Delete(dupv);
            cJSON_Delete(extra);
            return mp_error_set(MP_ERR_NOMEM, "out of memory");
        }
    }
    if (extra->child && !(ds->extra_json = cJSON_PrintUnformatted(extra))) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    cJSON_Delete(extra);
    return rc;
}

int mp_dataset_parse(mp_dataset_t **out, const char *json, size_t len, const char *source) {
    *out = NULL;
    const char *src = source ? source : "dataset.json";
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
        return mp_error_set(MP_ERR_FORMAT, "%s: invalid JSON (near byte %ld)", src, off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return mp_error_set(MP_ERR_FORMAT, "%s: the top level must be a JSON object", src);
    }
    mp_dataset_t *ds;
    int rc = mp_dataset_create(&ds);
    if (!rc) rc = parse_channels(ds, root, src);
    if (!rc) rc = parse_labels(ds, root, src);
    if (!rc) rc = parse_rest(ds, root, src);
    cJSON_Delete(root);
    if (rc) {
        mp_dataset_free(ds);
        return rc;
    }
    *out = ds;
    return MP_OK;
}

int mp_dataset_read(mp_dataset_t **out, const char *dir) {
    *out = NULL;
    char *path = join3(dir, "dataset.json", NULL);
    if (!path) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    uint8_t *buf;
    size_t len;
    int rc = mp_file_read_all(path, &buf, &len);
    if (!rc) {
        rc = mp_dataset_parse(out, (const char *)buf, len, path);
        free(buf);
    }
    free(path);
    if (!rc && !((*out)->root = dup_str(dir))) {
        mp_dataset_free(*out);
        *out = NULL;
        rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    return rc;
}

/* ---------------------------------------------------------------- writing */

static cJSON *entries_json(const mp_dataset_entry_t *e, int64_t n, int with_label) {
    cJSON *arr = cJSON_CreateArray();
    for (int64_t i = 0; arr && i < n; i++) {
        cJSON *item;
        if (with_label) {
            item = cJSON_CreateObject();
            if (item && (!cJSON_AddStringToObject(item, "image", e[i].image) ||
                         !cJSON_AddStringToObject(item, "label", e[i].label ? e[i].label : ""))) {
                cJSON_Delete(item);
                item = NULL;
            }
        } else {
            item = cJSON_CreateString(e[i].image);
        }
        if (!item || !cJSON_AddItemToArray(arr, item)) {
            cJSON_Delete(item);
            cJSON_Delete(arr);
            return NULL;
        }
    }
    return arr;
}

static int build_json(const mp_dataset_t *ds, cJSON *root) {
    if (ds->name && !cJSON_AddStringToObject(root, "name", ds->name)) return -1;
    if (ds->description && !cJSON_AddStringToObject(root, "description", ds->description)) return -1;
    cJSON *ch = cJSON_AddObjectToObject(root, "channel_names");
    for (int i = 0; ch && i < ds->n_channels; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d", i);
        if (!cJSON_AddStringToObject(ch, key, ds->channel_names[i])) return -1;
    }
    cJSON *lab = cJSON_AddObjectToObject(root, "labels");
    for (int i = 0; lab && i < ds->n_labels; i++)
        if (!cJSON_AddNumberToObject(lab, ds->labels[i].name, ds->labels[i].value)) return -1;
    if (!ch || !lab || !cJSON_AddNumberToObject(root, "numTraining", (double)ds->num_training) ||
        !cJSON_AddStringToObject(root, "file_ending", ds->file_ending))
        return -1;
    for (int t = 0; t < 2; t++) {
        int64_t n = t ? ds->n_msd_test : ds->n_msd_training;
        if (!n) continue;
        cJSON *a = entries_json(t ? ds->msd_test : ds->msd_training, n, !t);
        if (!a || !cJSON_AddItemToObject(root, t ? "test" : "training", a)) {
            cJSON_Delete(a);
            return -1;
        }
    }
    if (ds->extra_json) {
        cJSON *extra = cJSON_Parse(ds->extra_json);
        if (!extra) return -1;
        while (extra->child) {
            cJSON *item = cJSON_DetachItemViaPointer(extra, extra->child);
            if (is_known_key(item->string) || cJSON_GetObjectItemCaseSensitive(root, item->string)) {
                cJSON_Delete(item);
                continue;
            }
            char *key = item->string;
            item->string = NULL;
            int ok = cJSON_AddItemToObject(root, key, item);
            free(key);
            if (!ok) {
                cJSON_Delete(item);
                cJSON_Delete(extra);
                return -1;
            }
        }
        cJSON_Delete(extra);
    }
    return 0;
}

int mp_dataset_to_json(const mp_dataset_t *ds, char **json) {
    *json = NULL;
    if (ds->n_channels < 1) return mp_error_set(MP_ERR_ARG, "dataset: no channels");
    for (int i = 0; i < ds->n_channels; i++)
        if (!ds->channel_names[i]) return mp_error_set(MP_ERR_ARG, "dataset: channel %d has no name", i);
    if (ds->n_labels < 1 || ds->labels[0].value != 0)
        return mp_error_set(MP_ERR_ARG, "dataset: labels must include background (0)");
    cJSON *root = cJSON_CreateObject();
    if (!root || build_json(ds, root) != 0) {
        cJSON_Delete(root);
        return mp_error_set(MP_ERR_NOMEM, "dataset: out of memory building JSON");
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    size_t n = strlen(text);
    char *withnl = realloc(text, n + 2);
    if (!withnl) {
        free(text);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    withnl[n] = '\n';
    withnl[n + 1] = '\0';
    *json = withnl;
    return MP_OK;
}

int mp_dataset_write(const mp_dataset_t *ds, const char *dir) {
    char *json;
    int rc = mp_dataset_to_json(ds, &json);
    if (rc) return rc;
    char *path = join3(dir, "dataset.json", NULL);
    if (!path) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    else rc = mp_file_write_atomic(path, json, strlen(json));
    free(path);
    free(json);
    return rc;
}

/* ---------------------------------------------------------------- cases */

typedef struct {
    char *id;
    int channel;
    char *file;
} found_t;

static int cmp_found(const void *a, const void *b) {
    const found_t *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : (x->channel > y->channel) - (x->channel < y->channel);
}

static int cmp_case(const void *a, const void *b) {
    return strcmp(((const mp_dataset_case_t *)a)->id, ((const mp_dataset_case_t *)b)->id);
}

void mp_dataset_cases_deinit(mp_dataset_cases_t *c) {
    if (!c) return;
    for (int64_t i = 0; c->cases && i < c->n; i++) {
        mp_dataset_case_t *k = &c->cases[i];
        free(k->id);
        for (int j = 0; k->images && j < k->n_images; j++) free(k->images[j]);
        free(k->images);
        free(k->label);
    }
    free(c->cases);
    c->cases = NULL;
    c->n = 0;
}

/* Splits "<id>_<XXXX><ending>": *channel and a malloc'ed *id; -1 if the
 * name lacks the four-digit channel suffix. */
static int split_name(const char *name, const char *ending, char **id, int *channel) {
    size_t n = strlen(name) - strlen(ending);
    if (n < 6 || name[n - 5] != '_') return -1;
    int ch = 0;
    for (size_t i = n - 4; i < n; i++) {
        if (name[i] < '0' || name[i] > '9') return -1;
        ch = ch * 10 + (name[i] - '0');
    }
    char *d = malloc(n - 4);
    if (!d) return -2;
    memcpy(d, name, n - 5);
    d[n - 5] = '\0';
    *id = d;
    *channel = ch;
    return 0;
}

static void free_found(found_t *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(f[i].id);
        free(f[i].file);
    }
    free(f);
}

/* Collects the image files of a folder, sorted by (id, channel). A missing
 * folder gives zero files and *missing = 1. */
static int scan_images(const mp_dataset_t *ds, const char *dir, found_t **out, size_t *n_out, int *missing) {
    *out = NULL;
    *n_out = 0;
    *missing = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) {
            *missing = 1;
            return MP_OK;
        }
        return mp_error_set(MP_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    }
    found_t *f = NULL;
    size_t n = 0, cap = 0;
    int rc = MP_OK;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.' || !mp_path_has_suffix(e->d_name, ds->file_ending)) continue;
        found_t item = {NULL, 0, NULL};
        int s = split_name(e->d_name, ds->file_ending, &item.id, &item.channel);
        if (s == -1)
            rc = mp_error_set(MP_ERR_FORMAT, "%s/%s: the name lacks the _XXXX channel suffix (e.g. %s_0000%s)", dir,
                              e->d_name, "case", ds->file_ending);
        else if (s == -2 || !(item.file = join3(dir, e->d_name, NULL)))
            rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
        else if (item.channel >= ds->n_channels)
            rc = mp_error_set(MP_ERR_MISMATCH, "%s/%s: channel %d, but dataset.json declares %d channel(s)", dir,
                              e->d_name, item.channel, ds->n_channels);
        if (!rc && n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            found_t *g = realloc(f, nc * sizeof *g);
            if (!g) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
            else {
                f = g;
                cap = nc;
            }
        }
        if (rc) {
            free(item.id);
            free(item.file);
        } else {
            f[n++] = item;
        }
    }
    closedir(d);
    if (rc) {
        free_found(f, n);
        return rc;
    }
    if (n) qsort(f, n, sizeof *f, cmp_found);
    *out = f;
    *n_out = n;
    return MP_OK;
}

/* Groups sorted files into cases; each needs channels 0..n_channels-1 once. */
static int group_cases(const mp_dataset_t *ds, const char *dir, found_t *f, size_t n, mp_dataset_cases_t *out) {
    size_t n_cases = 0;
    for (size_t i = 0; i < n; i++) n_cases += i == 0 || strcmp(f[i].id, f[i - 1].id) != 0;
    out->cases = calloc(n_cases ? n_cases : 1, sizeof *out->cases);
    if (!out->cases) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && strcmp(f[j].id, f[i].id) == 0) j++;
        mp_dataset_case_t *c = &out->cases[out->n++];
        c->id = f[i].id;
        f[i].id = NULL;
        c->images = calloc((size_t)ds->n_channels, sizeof *c->images);
        if (!c->images) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        c->n_images = ds->n_channels;
        for (size_t k = i; k < j; k++) {
            if (c->images[f[k].channel])
                return mp_error_set(MP_ERR_FORMAT, "%s: case '%s' has channel %04d twice", dir, c->id, f[k].channel);
            c->images[f[k].channel] = f[k].file;
            f[k].file = NULL;
        }
        for (int ch = 0; ch < ds->n_channels; ch++)
            if (!c->images[ch])
                return mp_error_set(MP_ERR_FORMAT, "%s/%s_%04d%s: missing (dataset.json declares %d channel(s))", dir,
                                    c->id, ch, ds->file_ending, ds->n_channels);
        i = j;
    }
    return MP_OK;
}

/* Attaches labels: required (train) or, when the folder exists, for all. */
static int attach_labels(const mp_dataset_t *ds, const char *labdir, int required, mp_dataset_cases_t *out) {
    struct stat st;
    int have_dir = stat(labdir, &st) == 0 && S_ISDIR(st.st_mode);
    if (!have_dir && !required) return MP_OK;
    if (!have_dir) return mp_error_set(MP_ERR_IO, "%s: no such folder", labdir);
    for (int64_t i = 0; i < out->n; i++) {
        mp_dataset_case_t *c = &out->cases[i];
        char *path = join3(labdir, c->id, ds->file_ending);
        if (!path) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        if (!mp_file_is_regular(path)) {
            int rc = mp_error_set(MP_ERR_IO, "%s: missing label of case '%s'", path, c->id);
            free(path);
            return rc;
        }
        c->label = path;
    }
    return MP_OK;
}

/* Cases from the Decathlon "training"/"test" lists (paths relative to root). */
static int list_msd(const mp_dataset_t *ds, const mp_dataset_entry_t *e, int64_t n, mp_dataset_cases_t *out) {
    out->cases = calloc((size_t)(n ? n : 1), sizeof *out->cases);
    if (!out->cases) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        mp_dataset_case_t *c = &out->cases[out->n++];
        const char *img = e[i].image, *lab = e[i].label;
        if (strncmp(img, "./", 2) == 0) img += 2;
        if (lab && strncmp(lab, "./", 2) == 0) lab += 2;
        const char *base = strrchr(img, '/');
        base = base ? base + 1 : img;
        size_t blen = strlen(base);
        if (mp_path_has_suffix(base, ds->file_ending)) blen -= strlen(ds->file_ending);
        c->id = malloc(blen + 1);
        c->images = calloc(1, sizeof *c->images);
        if (!c->id || !c->images) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        memcpy(c->id, base, blen);
        c->id[blen] = '\0';
        c->n_images = 1;
        c->images[0] = join3(ds->root, img, NULL);
        c->label = lab ? join3(ds->root, lab, NULL) : NULL;
        if (!c->images[0] || (lab && !c->label)) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        if (!mp_file_is_regular(c->images[0])) return mp_error_set(MP_ERR_IO, "%s: missing (listed in dataset.json)", c->images[0]);
        if (c->label && !mp_file_is_regular(c->label)) return mp_error_set(MP_ERR_IO, "%s: missing (listed in dataset.json)", c->label);
    }
    if (n) qsort(out->cases, (size_t)out->n, sizeof *out->cases, cmp_case);
    return MP_OK;
}

static int list_folder(const mp_dataset_t *ds, int train, mp_dataset_cases_t *out) {
    char *imgdir = join3(ds->root, train ? "imagesTr" : "imagesTs", NULL);
    char *labdir = join3(ds->root, train ? "labelsTr" : "labelsTs", NULL);
    found_t *f = NULL;
    size_t n = 0;
    int missing = 0, rc = MP_OK;
    if (!imgdir || !labdir) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) rc = scan_images(ds, imgdir, &f, &n, &missing);
    if (!rc && missing && train) rc = mp_error_set(MP_ERR_IO, "%s: no such folder", imgdir);
    if (!rc && !missing) rc = group_cases(ds, imgdir, f, n, out);
    if (!rc && !missing) rc = attach_labels(ds, labdir, train, out);
    free_found(f, n);
    free(imgdir);
    free(labdir);
    return rc;
}

int mp_dataset_list_cases(const mp_dataset_t *ds, mp_dataset_split_t split, mp_dataset_cases_t *out) {
    memset(out, 0, sizeof *out);
    if (!ds->root) return mp_error_set(MP_ERR_ARG, "dataset: no folder (read it with mp_dataset_read)");
    int train = split == MP_DATASET_TRAIN;
    int rc;
    if (train && ds->n_msd_training) rc = list_msd(ds, ds->msd_training, ds->n_msd_training, out);
    else if (!train && ds->n_msd_test) rc = list_msd(ds, ds->msd_test, ds->n_msd_test, out);
    else rc = list_folder(ds, train, out);
    if (!rc && train && out->n != ds->num_training)
        rc = mp_error_set(MP_ERR_MISMATCH, "%s/dataset.json: numTraining is %lld but %lld training cases were found",
                          ds->root, (long long)ds->num_training, (long long)out->n);
    if (rc) mp_dataset_cases_deinit(out);
    return rc;
}
