/* Which files a DICOM scan looks at: a single file, every regular file under
 * a folder (recursive, sorted by name so results never depend on directory
 * order; symbolic links to folders are not followed, so a link cycle cannot
 * loop), or the image files a DICOMDIR's directory records point to
 * (ReferencedFileID, resolved relative to the DICOMDIR's folder, matched
 * case-insensitively as media file IDs are upper case; ".." is refused). */
#include "io/dicom_priv.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_WALK_DEPTH 32

int mp_dcm_pathlist_add(mp_dcm_pathlist_t *l, const char *path) {
    if (l->n == l->cap) {
        int ncap = l->cap ? l->cap * 2 : 64;
        char **np = realloc(l->paths, (size_t)ncap * sizeof *np);
        if (!np) return mp_error_set(MP_ERR_NOMEM, "out of memory listing files");
        l->paths = np;
        l->cap = ncap;
    }
    l->paths[l->n] = strdup(path);
    if (!l->paths[l->n]) return mp_error_set(MP_ERR_NOMEM, "out of memory listing files");
    l->n++;
    return MP_OK;
}

void mp_dcm_pathlist_free(mp_dcm_pathlist_t *l) {
    for (int i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s%s%s", dir, (dir[0] && dir[strlen(dir) - 1] == '/') ? "" : "/", name);
    return p;
}

static int is_dicomdir_name(const char *path) {
    const char *b = strrchr(path, '/');
    return strcasecmp(b ? b + 1 : path, "DICOMDIR") == 0;
}

static int walk(mp_dcm_pathlist_t *out, const char *dir, int depth) {
    if (depth > MAX_WALK_DEPTH) {
        mp_log(MP_LOG_WARN, "%s: folders nested deeper than %d levels are not searched", dir, MAX_WALK_DEPTH);
        return MP_OK;
    }
    DIR *d = opendir(dir);
    if (!d) return mp_error_set(MP_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    mp_dcm_pathlist_t names = {0};
    struct dirent *de;
    int rc = MP_OK;
    while (rc == MP_OK && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        rc = mp_dcm_pathlist_add(&names, de->d_name);
    }
    closedir(d);
    if (names.n) qsort(names.paths, (size_t)names.n, sizeof(char *), cmp_str);
    for (int i = 0; rc == MP_OK && i < names.n; i++) {
        char *p = join(dir, names.paths[i]);
        if (!p) {
            rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
            break;
        }
        struct stat lst, st;
        if (lstat(p, &lst) == 0 && stat(p, &st) == 0) {
            if (S_ISDIR(st.st_mode) && !S_ISLNK(lst.st_mode)) rc = walk(out, p, depth + 1);
            else if (S_ISREG(st.st_mode) && !is_dicomdir_name(p)) rc = mp_dcm_pathlist_add(out, p);
        }
        free(p);
    }
    mp_dcm_pathlist_free(&names);
    return rc;
}

/* Finds `name` in `dir` ignoring case; returns a new path or NULL. */
static char *find_nocase(const char *dir, const char *name) {
    char *p = join(dir, name);
    struct stat st;
    if (!p || stat(p, &st) == 0) return p;
    free(p);
    DIR *d = opendir(dir);
    if (!d) return NULL;
    struct dirent *de;
    char *found = NULL;
    while ((de = readdir(d)) != NULL)
        if (strcasecmp(de->d_name, name) == 0) {
            found = join(dir, de->d_name);
            break;
        }
    closedir(d);
    return found;
}

/* Resolves a ReferencedFileID ("DIR1\DIR2\FILE") below `root`. */
static char *resolve_file_id(const char *root, const char *id) {
    char *cur = strdup(root);
    const char *s = id;
    while (cur && *s) {
        const char *e = strchr(s, '\\');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char comp[256];
        if (n == 0 || n >= sizeof comp) {
            free(cur);
            return NULL;
        }
        memcpy(comp, s, n);
        comp[n] = 0;
        while (n && comp[n - 1] == ' ') comp[--n] = 0;
        if (strcmp(comp, "..") == 0 || strcmp(comp, ".") == 0 || strchr(comp, '/')) {
            free(cur);
            return NULL;
        }
        char *next = find_nocase(cur, comp);
        free(cur);
        cur = next;
        s = e ? e + 1 : s + n;
    }
    return cur;
}

static int is_dicomdir(const mp_dicom_file_t *f) {
    char cls[68];
    mp_dicom_get_str(mp_dicom_file_meta(f), MP_DICOM_TAG(0x0002, 0x0002), cls, sizeof cls);
    if (strcmp(cls, "1.2.840.10008.1.3.10") == 0) return 1;
    return mp_dicom_find(mp_dicom_file_dataset(f), MP_DICOM_TAG(0x0004, 0x1220)) != NULL;
}

static int read_dicomdir(mp_dcm_pathlist_t *out, const mp_dicom_file_t *f, const char *path) {
    char *root = strdup(path);
    if (!root) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    char *slash = strrchr(root, '/');
    if (slash == root) slash[1] = 0;
    else if (slash) *slash = 0;
    else strcpy(root, ".");
    const mp_dicom_elem_t *seq = mp_dicom_find(mp_dicom_file_dataset(f), MP_DICOM_TAG(0x0004, 0x1220));
    int rc = MP_OK, refs = 0;
    for (uint32_t i = 0; seq && rc == MP_OK && i < seq->n_items; i++) {
        const mp_dicom_ds_t *rec = &seq->items[i];
        char type[32], id[512];
        mp_dicom_get_str(rec, MP_DICOM_TAG(0x0004, 0x1430), type, sizeof type);
        if (!mp_dicom_get_str(rec, MP_DICOM_TAG(0x0004, 0x1500), id, sizeof id)) continue;
        if (strcmp(type, "PATIENT") == 0 || strcmp(type, "STUDY") == 0 || strcmp(type, "SERIES") == 0) continue;
        refs++;
        char *p = resolve_file_id(root, id);
        if (!p) {
            mp_log(MP_LOG_WARN, "%s: record %u refers to '%s', which is not found under %s", path, i, id, root);
            continue;
        }
        rc = mp_dcm_pathlist_add(out, p);
        free(p);
    }
    free(root);
    if (rc == MP_OK && refs == 0) mp_log(MP_LOG_WARN, "%s: DICOMDIR refers to no files", path);
    return rc;
}

int mp_dcm_collect_files(mp_dcm_pathlist_t *out, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return mp_error_set(MP_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return walk(out, path, 0);
    if (!S_ISREG(st.st_mode)) return mp_error_set(MP_ERR_IO, "%s: not a file or folder", path);
    mp_dicom_file_t *f = NULL;
    /* A DICOMDIR is small; anything that parses as one is read as one. */
    if (st.st_size < (1 << 24) && mp_dicom_file_read(&f, path, MP_DICOM_PARSE_STOP_AT_PIXELS) == MP_OK && is_dicomdir(f)) {
        int rc = read_dicomdir(out, f, path);
        mp_dicom_file_free(f);
        return rc;
    }
    mp_dicom_file_free(f);
    mp_error_clear();
    return mp_dcm_pathlist_add(out, path);
}
