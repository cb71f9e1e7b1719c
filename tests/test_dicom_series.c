/* DICOM series assembly against ground truth and against Debian's dcm2niix.
 * tests/py/dicom_make_series.py (run by this test) writes small synthetic
 * series with pydicom: an oblique stack with shuffled file names, the same
 * with a missing slice, a 15-degree gantry tilt, per-slice rescale slopes in
 * implicit VR, two acquisitions at the same positions, an enhanced MR
 * multi-frame file with shuffled frames, and a series that mixes two
 * orientations; it runs dcm2niix on each and dumps its NIfTI via nibabel.
 *
 * dcm2niix conventions allowed for (found by inv(A_dcm2niix) * A_medpipe):
 * it stores rows bottom-up (its j = rows-1-row, affine compensating), keeps
 * columns and the slice order (ascending along the normal) as medpipe does;
 * for a missing slice it writes the remaining slices at uniform spacing (so
 * slices after the gap sit one spacing off their DICOM position; medpipe
 * fills the gap instead, so we compare those by slice rank); for gantry tilt
 * its uncorrected output carries the same sheared affine as medpipe's (its
 * resampled "_Tilt_1" file is not compared). */
#include "harness.h"
#include "medpipe/core.h"
#include "medpipe/dicom.h"

static char dir[512];

typedef struct {
    int nx, ny, nz;
    double row_sp, col_sp, iop[6];
    int nslices, z[64];
    double ipp[64][3];
    double *vals; /* real values, x fastest */
} truth_t;

static int load_truth(const char *name, truth_t *t) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s.truth", dir, name);
    FILE *fp = fopen(p, "r");
    if (!fp) return -1;
    memset(t, 0, sizeof *t);
    char line[512];
    while (fgets(line, sizeof line, fp)) {
        if (sscanf(line, "dims %d %d %d", &t->nx, &t->ny, &t->nz) == 3) continue;
        if (sscanf(line, "spacing %lf %lf", &t->row_sp, &t->col_sp) == 2) continue;
        if (sscanf(line, "iop %lf %lf %lf %lf %lf %lf", &t->iop[0], &t->iop[1], &t->iop[2], &t->iop[3], &t->iop[4],
                   &t->iop[5]) == 6)
            continue;
        int k = t->nslices;
        if (k < 64 && sscanf(line, "slice %d %lf %lf %lf", &t->z[k], &t->ipp[k][0], &t->ipp[k][1], &t->ipp[k][2]) == 4)
            t->nslices++;
    }
    fclose(fp);
    size_t n = (size_t)t->nx * t->ny * t->nz;
    t->vals = malloc(n * sizeof(double));
    snprintf(p, sizeof p, "%s/%s.truth.raw", dir, name);
    fp = fopen(p, "rb");
    if (!fp || !t->vals || fread(t->vals, sizeof(double), n, fp) != n) return -1;
    fclose(fp);
    return 0;
}

static double real_at(const mp_vol_t *v, int64_t i) { return mp_vol_get(v, i) * v->scl_slope + v->scl_inter; }

/* World (RAS) of voxel (i, j, k) under affine a. */
static void world(const double a[4][4], double i, double j, double k, double out[3]) {
    for (int r = 0; r < 3; r++) out[r] = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3];
}

static char failmsg[512];

/* Our volume against the truth: every DICOM position lands where the affine
 * says (voxel corners included), and every present voxel has its value. */
static int check_truth(const mp_vol_t *v, const truth_t *t) {
    if (v->dim[0] != t->nx || v->dim[1] != t->ny || v->dim[2] != t->nz) {
        snprintf(failmsg, sizeof failmsg, "dims %lld %lld %lld, truth %d %d %d", (long long)v->dim[0],
                 (long long)v->dim[1], (long long)v->dim[2], t->nx, t->ny, t->nz);
        return 0;
    }
    for (int s = 0; s < t->nslices; s++) {
        int corners[4][2] = {{0, 0}, {t->nx - 1, 0}, {0, t->ny - 1}, {t->nx - 1, t->ny - 1}};
        for (int c = 0; c < 4; c++) {
            double w[3], lps[3];
            world(v->affine, corners[c][0], corners[c][1], t->z[s], w);
            for (int r = 0; r < 3; r++)
                lps[r] = t->ipp[s][r] + corners[c][0] * t->col_sp * t->iop[r] + corners[c][1] * t->row_sp * t->iop[3 + r];
            double want[3] = {-lps[0], -lps[1], lps[2]};
            for (int r = 0; r < 3; r++)
                if (fabs(w[r] - want[r]) > 1e-3) {
                    snprintf(failmsg, sizeof failmsg, "slice z=%d corner %d axis %d: world %.5f, DICOM %.5f", t->z[s], c,
                             r, w[r], want[r]);
                    return 0;
                }
        }
        size_t npix = (size_t)t->nx * t->ny;
        for (size_t i = 0; i < npix; i++) {
            size_t idx = (size_t)t->z[s] * npix + i;
            double got = real_at(v, (int64_t)idx), want = t->vals[idx];
            if (fabs(got - want) > 1e-4 * (1 + fabs(want))) {
                snprintf(failmsg, sizeof failmsg, "voxel %zu of slice %d: %g, truth %g", i, t->z[s], got, want);
                return 0;
            }
        }
    }
    return 1;
}

/* The first NIfTI dcm2niix wrote for the case (the uncorrected one). */
typedef struct {
    int nx, ny, nz;
    double a[4][4];
    double *vals;
    char log[1024];
} d2n_t;

static int load_d2n(const char *name, d2n_t *d) {
    char p[1400], line[2048], fn[600] = "";
    snprintf(p, sizeof p, "%s/%s.d2n.txt", dir, name);
    FILE *fp = fopen(p, "r");
    if (!fp) return -1;
    memset(d, 0, sizeof *d);
    int got = 0;
    while (fgets(line, sizeof line, fp)) {
        if (!got && sscanf(line, "nifti %599s %d %d %d", fn, &d->nx, &d->ny, &d->nz) == 4) {
            for (int r = 0; r < 4; r++)
                if (!fgets(line, sizeof line, fp) ||
                    sscanf(line, "%lf %lf %lf %lf", &d->a[r][0], &d->a[r][1], &d->a[r][2], &d->a[r][3]) != 4)
                    return -1;
            got = 1;
        } else if (strncmp(line, "log ", 4) == 0) {
            snprintf(d->log, sizeof d->log, "%.1000s", line + 4);
            d->log[strcspn(d->log, "\n")] = 0;
        }
    }
    fclose(fp);
    if (!got) return -1;
    size_t n = (size_t)d->nx * d->ny * d->nz;
    d->vals = malloc(n * sizeof(double));
    snprintf(p, sizeof p, "%s/%s.d2n/%s.f64", dir, name, fn);
    fp = fopen(p, "rb");
    if (!fp || !d->vals || fread(d->vals, sizeof(double), n, fp) != n) return -1;
    fclose(fp);
    return 0;
}

static int unit_axis(const double m[4][4], int col, int *axis, int *sign) {
    int found = 0;
    for (int r = 0; r < 3; r++) {
        if (fabs(fabs(m[r][col]) - 1) < 1e-3) {
            *axis = r;
            *sign = m[r][col] > 0 ? 1 : -1;
            found++;
        } else if (fabs(m[r][col]) > 1e-3) {
            return 0;
        }
    }
    return found == 1;
}

/* Compares our volume with dcm2niix's: M = inv(A_d2n) * A_ours must map our
 * in-plane axes onto theirs; along z it must too, unless `by_rank` (slices
 * then pair up in order, skipping our filled gaps). */
static int check_d2n(const mp_vol_t *v, const mp_dicom_series_t *s, const d2n_t *d, int by_rank, char *conv,
                     size_t cap) {
    double inv[4][4], m[4][4];
    if (mp_mat4_inv(inv, d->a)) return 0;
    mp_mat4_mul(m, inv, v->affine);
    int ax[3], sg[3];
    for (int c = 0; c < (by_rank ? 2 : 3); c++)
        if (!unit_axis(m, c, &ax[c], &sg[c])) {
            snprintf(failmsg, sizeof failmsg, "axis %d of ours is not an axis of dcm2niix's (M col %.4f %.4f %.4f)", c,
                     m[0][c], m[1][c], m[2][c]);
            return 0;
        }
    for (int r = 0; r < 3; r++)
        if (!by_rank && fabs(m[r][3] - floor(m[r][3] + 0.5)) > 1e-3) {
            snprintf(failmsg, sizeof failmsg, "offset %.4f along dcm2niix axis %d is not whole voxels", m[r][3], r);
            return 0;
        }
    if (by_rank) {
        ax[2] = 3 - ax[0] - ax[1];
        sg[2] = 1;
    }
    snprintf(conv, cap, "x->%c%c y->%c%c z->%c%c%s", sg[0] > 0 ? '+' : '-', "ijk"[ax[0]], sg[1] > 0 ? '+' : '-',
             "ijk"[ax[1]], sg[2] > 0 ? '+' : '-', "ijk"[ax[2]], by_rank ? " (by rank)" : "");
    int nd[3] = {d->nx, d->ny, d->nz};
    size_t npix = (size_t)s->rows * s->cols;
    for (int si = 0; si < s->count; si++) {
        int z = s->z_of_slice[si];
        for (int j = 0; j < s->rows; j++)
            for (int i = 0; i < s->cols; i++) {
                double src[3] = {i, j, z}, t[3];
                for (int r = 0; r < 3; r++) t[r] = m[r][0] * i + m[r][1] * j + m[r][2] * z + m[r][3];
                if (by_rank) t[ax[2]] = si;
                (void)src;
                int64_t q[3];
                for (int r = 0; r < 3; r++) {
                    q[r] = (int64_t)floor(t[r] + 0.5);
                    if (q[r] < 0 || q[r] >= nd[r]) {
                        snprintf(failmsg, sizeof failmsg, "voxel (%d,%d,%d) maps outside dcm2niix's volume", i, j, z);
                        return 0;
                    }
                }
                double theirs = d->vals[(size_t)q[0] + (size_t)d->nx * ((size_t)q[1] + (size_t)d->ny * (size_t)q[2])];
                double ours = real_at(v, (int64_t)((size_t)z * npix + (size_t)j * s->cols + (size_t)i));
                if (fabs(theirs - ours) > 1e-3 * (1 + fabs(ours))) {
                    snprintf(failmsg, sizeof failmsg, "voxel (%d,%d,%d) = %g, dcm2niix %g", i, j, z, ours, theirs);
                    return 0;
                }
            }
    }
    return 1;
}

static int read_case(const char *name, mp_dicom_series_list_t **l, mp_vol_t **v) {
    char p[700];
    snprintf(p, sizeof p, "%s/dcm/%s", dir, name);
    *v = NULL;
    int rc = mp_dicom_scan(l, p);
    if (rc) return rc;
    return (*l)->n == 1 ? mp_dicom_series_read(v, &(*l)->series[0]) : 0;
}

static void run_case(const char *name, unsigned want_flags, int by_rank) {
    truth_t t;
    d2n_t d;
    mp_dicom_series_list_t *l;
    mp_vol_t *v;
    MP_CHECK(load_truth(name, &t) == 0);
    MP_CHECK(load_d2n(name, &d) == 0);
    MP_CHECK_OK(read_case(name, &l, &v));
    MP_CHECK(l->n == 1 && v);
    const mp_dicom_series_t *s = &l->series[0];
    MP_CHECKF(s->flags == want_flags, "%s: flags %#x, expected %#x", name, s->flags, want_flags);
    MP_CHECKF(check_truth(v, &t), "%s: %s", name, failmsg);
    char conv[128];
    MP_CHECKF(check_d2n(v, s, &d, by_rank, conv, sizeof conv), "%s vs dcm2niix: %s", name, failmsg);
    printf("  %-9s %2d slices -> %dx%dx%d %s, flags %#x; matches truth and dcm2niix (%s)%s%.300s\n", name, s->count,
           (int)v->dim[0], (int)v->dim[1], (int)v->dim[2], mp_dtype_name(v->dtype), s->flags, conv,
           d.log[0] > ' ' ? "; dcm2niix said: " : "", d.log[0] > ' ' ? d.log : "");
    /* Slice order and SOP instance UIDs: the list is in volume order. */
    for (int i = 1; i < s->count; i++) MP_CHECK(s->z_of_slice[i] > s->z_of_slice[i - 1]);
    for (int i = 0; i < s->count; i++) MP_CHECK(s->slices[i].sop_uid[0] != 0);
    mp_vol_free(v);
    mp_dicom_series_list_free(l);
    free(t.vals);
    free(d.vals);
}

static void test_oblique(void) { run_case("oblique", 0, 0); }
static void test_missing_slice(void) { run_case("missing", MP_DICOM_SERIES_MISSING, 1); }
static void test_gantry_tilt(void) { run_case("tilt", MP_DICOM_SERIES_TILT, 0); }
static void test_varying_slopes(void) { run_case("slopes", MP_DICOM_SERIES_RESCALE_VARIES, 0); }
static void test_enhanced_multiframe(void) { run_case("enhanced", MP_DICOM_SERIES_MULTIFRAME, 0); }

static void test_missing_fill(void) {
    mp_dicom_series_list_t *l;
    mp_vol_t *v;
    MP_CHECK_OK(read_case("missing", &l, &v));
    const mp_dicom_series_t *s = &l->series[0];
    MP_CHECK(s->count == 19 && s->nz == 20 && s->z_of_slice[7] == 8);
    /* gap slice 7 holds the smallest stored value of the others (slice 0's first voxel) */
    size_t npix = (size_t)s->rows * s->cols;
    double lo = mp_vol_get(v, 0);
    for (size_t i = 0; i < npix; i++) MP_CHECK(mp_vol_get(v, (int64_t)(7 * npix + i)) == lo);
    MP_CHECK(v->dtype == MP_DTYPE_I16 && v->scl_inter == -1024 && v->scl_slope == 1);
    mp_vol_free(v);
    mp_dicom_series_list_free(l);
}

static void test_two_acquisitions(void) {
    truth_t t;
    mp_dicom_series_list_t *l;
    mp_vol_t *v;
    MP_CHECK(load_truth("twoacq", &t) == 0);
    MP_CHECK_OK(read_case("twoacq", &l, &v));
    MP_CHECK(l->n == 2 && !v);
    for (int p = 0; p < 2; p++) {
        const mp_dicom_series_t *s = &l->series[p];
        MP_CHECKF(s->part == p + 1 && s->flags == MP_DICOM_SERIES_SPLIT && s->count == 20, "part %d flags %#x count %d",
                  s->part, s->flags, s->count);
        MP_CHECK_OK(mp_dicom_series_read(&v, s));
        int64_t acq = s->slices[0].acquisition;
        for (int i = 0; i < s->count; i++) MP_CHECK(s->slices[i].acquisition == acq);
        if (acq == 1) MP_CHECKF(check_truth(v, &t), "%s", failmsg);
        else MP_CHECK(real_at(v, 0) == t.vals[0] + 7);
        mp_vol_free(v);
    }
    mp_dicom_series_list_free(l);
    free(t.vals);
}

static void test_mixed_orientations(void) {
    mp_dicom_series_list_t *l;
    mp_vol_t *v;
    MP_CHECK_OK(read_case("split", &l, &v));
    MP_CHECK(l->n == 2);
    int n0 = l->series[0].count, n1 = l->series[1].count;
    MP_CHECK((n0 == 10 && n1 == 3) || (n0 == 3 && n1 == 10));
    for (int p = 0; p < 2; p++) MP_CHECK(l->series[p].flags & MP_DICOM_SERIES_SPLIT);
    mp_dicom_series_list_free(l);
}

static void test_folder_of_series(void) {
    char p[700];
    snprintf(p, sizeof p, "%s/dcm", dir);
    mp_dicom_series_list_t *l;
    MP_CHECK_OK(mp_dicom_scan(&l, p));
    /* oblique, missing, tilt, slopes, 2 x twoacq, enhanced, 2 x split */
    MP_CHECKF(l->n == 9, "%d series", l->n);
    for (int i = 1; i < l->n; i++) MP_CHECK(l->series[i].series_number >= l->series[i - 1].series_number);
    mp_dicom_series_list_free(l);
    mp_vol_t *v;
    int rc = mp_dicom_read(&v, p);
    MP_CHECK(rc == MP_ERR_MISMATCH && strstr(mp_error_message(), "holds 9 series"));
}

static const char *pydicom_dir(void) { return "/usr/lib/python3/dist-packages/pydicom/data/test_files/dicomdirtests"; }

/* pydicom's DICOMDIR test set: the DICOMDIR (explicit LE, implicit, big
 * endian variants) and the folder itself must give the same series; the
 * counts come from pydicom in the helper (dicomdir.txt). */
static void test_dicomdir(void) {
    char p[700], line[256];
    snprintf(p, sizeof p, "%s/dicomdir.txt", dir);
    FILE *fp = fopen(p, "r");
    MP_CHECK(fp);
    int images = -1, series = -1;
    MP_CHECK(fgets(line, sizeof line, fp) && sscanf(line, "images %d series %d", &images, &series) == 2);
    fclose(fp);
    const char *variants[] = {"DICOMDIR", "DICOMDIR-implicit", "DICOMDIR-bigEnd", "DICOMDIR-reordered"};
    for (size_t k = 0; k < sizeof variants / sizeof variants[0]; k++) {
        snprintf(p, sizeof p, "%s/%s", pydicom_dir(), variants[k]);
        mp_dicom_series_list_t *l;
        MP_CHECK_OK(mp_dicom_scan(&l, p));
        int slices = 0;
        for (int i = 0; i < l->n; i++) slices += l->series[i].count;
        int uids = 0;
        for (int i = 0; i < l->n; i++) {
            int seen = 0;
            for (int j = 0; j < i; j++) seen |= strcmp(l->series[i].series_uid, l->series[j].series_uid) == 0;
            uids += !seen;
        }
        MP_CHECKF(l->files_seen == images && uids == series, "%s: %d files, %d series uids; pydicom: %d images, %d series",
                  variants[k], l->files_seen, uids, images, series);
        printf("  %-20s %d files -> %d series uids (%d volumes, %d slices)\n", variants[k], l->files_seen, uids, l->n,
               slices);
        mp_dicom_series_list_free(l);
    }
    /* TINY_ALPHA's records point at images without pixel data: a clean error. */
    snprintf(p, sizeof p, "%s/TINY_ALPHA/DICOMDIR", pydicom_dir());
    mp_dicom_series_list_t *l = NULL;
    MP_CHECK(mp_dicom_scan(&l, p) == MP_ERR_FORMAT && !l);
    MP_CHECK(strstr(mp_error_message(), "no DICOM image"));
}

static void quiet_log(mp_log_level_t level, const char *msg, void *user) {
    (void)user;
    if (getenv("MP_TEST_VERBOSE") || level >= MP_LOG_ERROR) fprintf(stderr, "log: %s\n", msg);
}

int main(void) {
    mp_log_set_callback(quiet_log, NULL);
    snprintf(dir, sizeof dir, "%s", mp_test_tmpdir("dicomseries"));
    const char *py = getenv("PYTHON") ? getenv("PYTHON") : "/usr/bin/python3";
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s tests/py/dicom_make_series.py %s", py, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "FAIL: %s (needs Debian python3-pydicom, python3-nibabel and dcm2niix)\n", cmd);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    MP_RUN(test_oblique);
    MP_RUN(test_missing_slice);
    MP_RUN(test_missing_fill);
    MP_RUN(test_gantry_tilt);
    MP_RUN(test_varying_slopes);
    MP_RUN(test_enhanced_multiframe);
    MP_RUN(test_two_acquisitions);
    MP_RUN(test_mixed_orientations);
    MP_RUN(test_folder_of_series);
    MP_RUN(test_dicomdir);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return mp_test_summary();
}
