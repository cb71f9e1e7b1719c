/* Files: atomic output (temporary file, fsync, rename, fsync of the directory)
 * so a crash never leaves a half-written result under the final name, plus
 * bounded whole-file reads and mkdir -p. */
#include "medpipe/core.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void fsync_parent_dir(const char *path) {
    char *dir = dup_str(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else strcpy(dir, ".");
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int mp_afile_open(mp_afile_t *f, const char *path) {
    memset(f, 0, sizeof *f);
    size_t n = strlen(path);
    f->path = dup_str(path);
    f->tmp_path = malloc(n + 16);
    if (!f->path || !f->tmp_path) {
        mp_afile_abort(f);
        return mp_error_set(MP_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(f->tmp_path);
    if (fd < 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        mp_afile_abort(f);
        return mp_error_set(MP_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    /* mkstemp creates 0600; results should be readable like any other file. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    f->fp = fdopen(fd, "wb");
    if (!f->fp) {
        close(fd);
        mp_afile_abort(f);
        return mp_error_set(MP_ERR_IO, "%s: fdopen failed", path);
    }
    return MP_OK;
}

int mp_afile_write(mp_afile_t *f, const void *data, size_t len) {
    if (f->failed) return MP_ERR_IO;
    if (len && fwrite(data, 1, len, f->fp) != len) {
        f->failed = 1;
        return mp_error_set(MP_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
    }
    return MP_OK;
}

int mp_afile_commit(mp_afile_t *f) {
    int rc = MP_OK;
    if (f->failed) rc = mp_error_set(MP_ERR_IO, "%s: an earlier write failed", f->path);
    if (rc == MP_OK && fflush(f->fp) != 0)
        rc = mp_error_set(MP_ERR_IO, "%s: flush failed: %s", f->path, strerror(errno));
    if (rc == MP_OK && fsync(fileno(f->fp)) != 0)
        rc = mp_error_set(MP_ERR_IO, "%s: fsync failed: %s", f->path, strerror(errno));
    if (fclose(f->fp) != 0 && rc == MP_OK)
        rc = mp_error_set(MP_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
    f->fp = NULL;
    if (rc == MP_OK && rename(f->tmp_path, f->path) != 0)
        rc = mp_error_set(MP_ERR_IO, "%s: rename failed: %s", f->path, strerror(errno));
    if (rc == MP_OK) {
        fsync_parent_dir(f->path);
        free(f->tmp_path);
        f->tmp_path = NULL;
    }
    mp_afile_abort(f);
    return rc;
}

void mp_afile_abort(mp_afile_t *f) {
    if (!f) return;
    if (f->fp) fclose(f->fp);
    if (f->tmp_path) unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    memset(f, 0, sizeof *f);
}

int mp_file_write_atomic(const char *path, const void *data, size_t len) {
    mp_afile_t f;
    int rc = mp_afile_open(&f, path);
    if (rc) return rc;
    rc = mp_afile_write(&f, data, len);
    if (rc) {
        mp_afile_abort(&f);
        return rc;
    }
    return mp_afile_commit(&f);
}

int mp_file_read_all(const char *path, uint8_t **data, size_t *len) {
    *data = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return mp_error_set(MP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return mp_error_set(MP_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > mp_mem_limit()) {
        fclose(fp);
        return mp_error_set(MP_ERR_LIMIT, "%s: file of %lld bytes exceeds the memory limit of %llu bytes",
                            path, (long long)st.st_size, (unsigned long long)mp_mem_limit());
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        fclose(fp);
        return mp_error_set(MP_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n);
    }
    if (n && fread(buf, 1, n, fp) != n) {
        free(buf);
        fclose(fp);
        return mp_error_set(MP_ERR_IO, "%s: short read", path);
    }
    fclose(fp);
    *data = buf;
    *len = n;
    return MP_OK;
}

int mp_mkdir_p(const char *path) {
    char *p = dup_str(path);
    if (!p) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return mp_error_set(MP_ERR_IO, "%s: cannot create directory: %s", path, strerror(e));
        }
        *s = '/';
    }
    int rc = MP_OK;
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        rc = mp_error_set(MP_ERR_IO, "%s: cannot create directory: %s", path, strerror(errno));
    free(p);
    return rc;
}

int mp_path_has_suffix(const char *path, const char *suffix) {
    size_t a = strlen(path), b = strlen(suffix);
    if (a < b) return 0;
    for (size_t i = 0; i < b; i++)
        if (tolower((unsigned char)path[a - b + i]) != tolower((unsigned char)suffix[i])) return 0;
    return 1;
}

int mp_file_is_regular(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}
