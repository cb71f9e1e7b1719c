/* DICOM in the rest of medpipe: mp_image_read on DICOM files, folders and
 * names without extension; mp_dicom_source_from_series against what the
 * series writer says it wrote (both slice orders), its refusals (missing
 * slices, files changed after the scan), text made valid from a Latin-1
 * series with old-style dates; and the SEG of a label map made from a series
 * read back, checked by pydicom and dciodvfy (tests/py/dicom_cli_helper.py). */
#include "harness.h"
#include "medpipe/dicom_source.h"
#include "medpipe/medpipe.h"

static char tmp_root[600];

static void quiet_log(mp_log_level_t level, const char *msg, void *user) {
    (void)user;
    if (getenv("MP_TEST_VERBOSE") || level >= MP_LOG_ERROR) fprintf(stderr, "log: %s\n", msg);
}

static const char *path_in(const char *name) {
    static char p[4][900];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp_root, name);
    return p[k];
}

static int run_helper(const char *args) {
    const char *py = getenv("PYTHON");
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "%s tests/py/dicom_cli_helper.py %s", py && *py ? py : "/usr/bin/python3", args);
    fflush(stdout);
    int st = system(cmd);
    if (st != 0) fprintf(stderr, "    failed: %s\n", cmd);
    return st == 0;
}

/* A CT-like int16 volume: value = 50x - 20y + 30z - 800, so that a label map
 * of "dense" (value > 150) and "air" (below -700) has both on most slices. */
static mp_vol_t *make_ct(const int64_t dim[4], const double affine[4][4]) {
    mp_vol_t *v;
    if (mp_vol_create(&v, dim, MP_DTYPE_I16)) return NULL;
    for (int64_t z = 0; z < dim[2]; z++)
        for (int64_t y = 0; y < dim[1]; y++)
            for (int64_t x = 0; x < dim[0]; x++)
                mp_vol_set(v, x + dim[0] * (y + dim[1] * z), (double)(50 * x - 20 * y + 30 * z - 800));
    mp_vol_set_affine(v, affine);
    return v;
}

static void oblique(double a[4][4], double sz) {
    /* rotation about z by 20 degrees and about x by 10, spacing 0.8 x 0.9 x |sz| */
    double c1 = cos(20 * M_PI / 180), s1 = sin(20 * M_PI / 180), c2 = cos(10 * M_PI / 180), s2 = sin(10 * M_PI / 180);
    double r[3][3] = {{c1, -s1 * c2, s1 * s2}, {s1, c1 * c2, -c1 * s2}, {0, s2, c2}};
    double sp[3] = {0.8, 0.9, sz};
    mp_mat4_identity(a);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) a[i][j] = r[i][j] * sp[j];
    a[0][3] = -20;
    a[1][3] = 15;
    a[2][3] = -40;
}

static int write_series(const char *dir, const mp_vol_t *v, mp_dicom_source_t *src, uint64_t seed) {
    mp_dicom_write_opts_t o;
    mp_dicom_write_opts_init(&o);
    mp_rng_t r;
    mp_rng_init(&r, seed, 0);
    o.uid_rng = &r;
    o.patient_name = "Müller^Jürgen";
    o.patient_id = "PID-42";
    o.patient_birth_date = "19700203";
    o.patient_sex = "F";
    o.study_date = "20240105";
    o.study_time = "101530";
    o.accession_number = "ACC7";
    o.study_description = "Thorax CT";
    o.referring_physician = "Ref^Doc";
    mp_dicom_write_info_t info;
    return mp_dicom_write_series(dir, v, &o, &info, src);
}

/* mp_image_read on a folder, on one file, on that file without extension. */
static void test_image_read_dispatch(void) {
    int64_t d[4] = {12, 10, 5, 1};
    double a[4][4];
    oblique(a, 2.0);
    mp_vol_t *v = make_ct(d, a), *r = NULL;
    MP_CHECK(v);
    MP_CHECK_OK(write_series(path_in("dispatch"), v, NULL, 1));
    MP_CHECK_OK(mp_image_read(&r, path_in("dispatch")));
    MP_CHECK(r->dim[0] == 12 && r->dim[1] == 10 && r->dim[2] == 5);
    for (int64_t i = 0; i < mp_vol_voxels(v); i++) MP_CHECK(mp_vol_get(r, i) == mp_vol_get(v, i));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) MP_CHECK_NEAR(r->affine[i][j], v->affine[i][j], 1e-4);
    mp_vol_free(r);
    /* one slice, by content: the name says nothing */
    uint8_t *buf;
    size_t len;
    MP_CHECK_OK(mp_file_read_all(path_in("dispatch/IM00003.dcm"), &buf, &len));
    MP_CHECK_OK(mp_file_write_atomic(path_in("IMAGE3"), buf, len));
    free(buf);
    MP_CHECK(mp_image_format_detect(path_in("IMAGE3")) == MP_FORMAT_DICOM);
    MP_CHECK(mp_image_format_from_name(path_in("IMAGE3")) == MP_FORMAT_UNKNOWN);
    MP_CHECK_OK(mp_image_read(&r, path_in("IMAGE3")));
    MP_CHECK(r->dim[2] == 1);
    for (int64_t i = 0; i < 120; i++) MP_CHECK(mp_vol_get(r, i) == mp_vol_get(v, 2 * 120 + i));
    mp_vol_free(r);
    /* a folder of several series: one error naming them */
    MP_CHECK_OK(write_series(path_in("dispatch/sub"), v, NULL, 2));
    MP_CHECK(mp_image_read(&r, path_in("dispatch")) == MP_ERR_MISMATCH && !r);
    MP_CHECK(strstr(mp_error_message(), "holds 2 series"));
    mp_vol_free(v);
}

static int same_text(const char *a, const char *b) { return strcmp(a, b) == 0; }

/* Writer's description (by written slice k) vs the reader's (by volume z). */
static void check_source_case(double sz, int reversed) {
    int64_t d[4] = {16, 12, 7, 1};
    double a[4][4];
    oblique(a, sz);
    mp_vol_t *v = make_ct(d, a);
    MP_CHECK(v);
    char name[64];
    snprintf(name, sizeof name, "src%s", reversed ? "_desc" : "_asc");
    mp_dicom_source_t w, r;
    MP_CHECK_OK(write_series(path_in(name), v, &w, 3 + (uint64_t)reversed));
    mp_dicom_series_list_t *l;
    MP_CHECK_OK(mp_dicom_scan(&l, path_in(name)));
    MP_CHECK(l->n == 1);
    MP_CHECK_OK(mp_dicom_source_from_series(&r, &l->series[0]));
    mp_vol_t *back;
    MP_CHECK_OK(mp_dicom_series_read(&back, &l->series[0]));
    MP_CHECK(r.nslices == 7 && r.rows == 12 && r.cols == 16 && r.has_positions);
    MP_CHECK(same_text(r.study_uid, w.study_uid) && same_text(r.series_uid, w.series_uid) &&
             same_text(r.frame_of_reference_uid, w.frame_of_reference_uid));
    MP_CHECKF(same_text(r.patient_name, "Müller^Jürgen") && same_text(r.patient_id, "PID-42"), "'%s' '%s'",
              r.patient_name, r.patient_id);
    MP_CHECK(same_text(r.patient_birth_date, "19700203") && same_text(r.patient_sex, "F"));
    MP_CHECK(same_text(r.study_date, "20240105") && same_text(r.study_time, "101530"));
    MP_CHECK(same_text(r.accession_number, "ACC7") && same_text(r.study_description, "Thorax CT"));
    MP_CHECK(same_text(r.referring_physician, "Ref^Doc") && same_text(r.study_id, w.study_id));
    int64_t npix = 16 * 12;
    for (int64_t z = 0; z < 7; z++) {
        int64_t k = reversed ? 6 - z : z;
        MP_CHECKF(same_text(r.sop_instance_uid[z], w.sop_instance_uid[k]), "z %lld", (long long)z);
        MP_CHECK(same_text(r.sop_class_uid[z], "1.2.840.10008.5.1.4.1.1.2"));
        for (int i = 0; i < 3; i++) MP_CHECK_NEAR(r.position[z][i], w.position[k][i], 1e-4);
        /* the volume's slice z is the image the description names */
        for (int64_t p = 0; p < npix; p++) MP_CHECK(mp_vol_get(back, z * npix + p) == mp_vol_get(v, k * npix + p));
    }
    mp_dicom_source_deinit(&w);
    mp_dicom_source_deinit(&r);
    mp_dicom_series_list_free(l);
    mp_vol_free(back);
    mp_vol_free(v);
}

static void test_source_ascending(void) { check_source_case(2.5, 0); }
/* A slice axis against the normal of the rows and columns: the reader
 * reverses z, and the description must follow it. */
static void test_source_descending(void) {
    /* flipping the k axis of a right-handed grid makes it point against row x column */
    check_source_case(-2.5, 1);
}

static void test_source_refusals(void) {
    int64_t d[4] = {8, 6, 6, 1};
    double a[4][4];
    oblique(a, 3.0);
    mp_vol_t *v = make_ct(d, a), *other = make_ct(d, a);
    MP_CHECK(v && other);
    MP_CHECK_OK(write_series(path_in("gap"), v, NULL, 5));
    MP_CHECK(unlink(path_in("gap/IM00003.dcm")) == 0);
    mp_dicom_series_list_t *l;
    MP_CHECK_OK(mp_dicom_scan(&l, path_in("gap")));
    MP_CHECK(l->n == 1 && l->series[0].nz == 6 && l->series[0].count == 5);
    mp_dicom_source_t s;
    MP_CHECK(mp_dicom_source_from_series(&s, &l->series[0]) == MP_ERR_UNSUPPORTED);
    MP_CHECKF(strstr(mp_error_message(), "missing"), "%s", mp_error_message());
    mp_dicom_series_list_free(l);
    /* a file replaced after the scan */
    MP_CHECK_OK(write_series(path_in("changed"), v, NULL, 6));
    MP_CHECK_OK(write_series(path_in("changed2"), other, NULL, 7));
    MP_CHECK_OK(mp_dicom_scan(&l, path_in("changed")));
    MP_CHECK(rename(path_in("changed2/IM00002.dcm"), path_in("changed/IM00002.dcm")) == 0);
    MP_CHECK(mp_dicom_source_from_series(&s, &l->series[0]) == MP_ERR_MISMATCH);
    MP_CHECKF(strstr(mp_error_message(), "IM00002.dcm"), "%s", mp_error_message());
    MP_CHECK(s.nslices == 0 && !s.sop_instance_uid); /* nothing to free after an error */
    mp_dicom_series_list_free(l);
    mp_vol_free(v);
    mp_vol_free(other);
}

/* A Latin-1 series with old ACR-NEMA-style date/time and over-long values
 * (made by pydicom): text becomes valid UTF-8 of the right length, and the
 * SEG writer accepts the description. */
static void test_source_text_cleaning(void) {
    char args[800];
    snprintf(args, sizeof args, "latin1 %s", path_in("latin1"));
    MP_CHECK(run_helper(args));
    mp_dicom_series_list_t *l;
    MP_CHECK_OK(mp_dicom_scan(&l, path_in("latin1")));
    MP_CHECK(l->n == 1);
    mp_dicom_source_t s;
    MP_CHECK_OK(mp_dicom_source_from_series(&s, &l->series[0]));
    MP_CHECKF(same_text(s.patient_name, "Müller^Jürgen"), "'%s'", s.patient_name);
    MP_CHECKF(same_text(s.study_description, "Étude thoracique"), "'%s'", s.study_description);
    MP_CHECKF(same_text(s.study_date, "20010203") && same_text(s.study_time, "123045.123456"), "'%s' '%s'",
              s.study_date, s.study_time);
    MP_CHECKF(same_text(s.patient_birth_date, "") && same_text(s.patient_sex, ""), "'%s' '%s'", s.patient_birth_date,
              s.patient_sex);
    MP_CHECKF(same_text(s.study_id, "ABCDEFGHIJKLMNOP"), "'%s' (SH: 16 characters)", s.study_id);
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_dicom_series_read(&img, &l->series[0]));
    MP_CHECK_OK(mp_vol_create_like(&lab, img, MP_DTYPE_U8));
    mp_vol_set(lab, 5, 1);
    MP_CHECK_OK(mp_dicom_write_seg(path_in("latin1_seg.dcm"), lab, &s, NULL, NULL));
    mp_vol_free(img);
    mp_vol_free(lab);
    mp_dicom_source_deinit(&s);
    mp_dicom_series_list_free(l);
}

/* The SEG of a label map made from the volume read back: pydicom checks
 * that each frame references the image at its position and holds that
 * image's mask; dciodvfy reports no error. Both slice orders. */
static void check_seg_case(double sz, const char *name) {
    int64_t d[4] = {20, 16, 9, 1};
    double a[4][4];
    oblique(a, sz);
    mp_vol_t *v = make_ct(d, a);
    MP_CHECK(v);
    char dir[64], seg[80];
    snprintf(dir, sizeof dir, "%s/series", name);
    snprintf(seg, sizeof seg, "%s/seg.dcm", name);
    MP_CHECK_OK(write_series(path_in(dir), v, NULL, 11));
    mp_dicom_series_list_t *l;
    MP_CHECK_OK(mp_dicom_scan(&l, path_in(dir)));
    mp_vol_t *img, *lab;
    MP_CHECK_OK(mp_dicom_series_read(&img, &l->series[0]));
    MP_CHECK_OK(mp_vol_create_like(&lab, img, MP_DTYPE_U8));
    for (int64_t i = 0; i < mp_vol_voxels(img); i++) {
        double hu = mp_vol_get(img, i) * img->scl_slope + img->scl_inter;
        mp_vol_set(lab, i, hu > 150 ? 1 : hu < -700 ? 2 : 0);
    }
    mp_dicom_source_t s;
    MP_CHECK_OK(mp_dicom_source_from_series(&s, &l->series[0]));
    mp_dicom_segment_t segs[2] = {{.label = 1, .name = "Dense"}, {.label = 2, .name = "Air"}};
    mp_dicom_seg_opts_t so;
    mp_dicom_seg_opts_init(&so);
    so.segments = segs;
    so.nsegments = 2;
    mp_dicom_seg_info_t si;
    MP_CHECK_OK(mp_dicom_write_seg(path_in(seg), lab, &s, &so, &si));
    MP_CHECK(si.segments == 2 && si.frames > 2);
    char args[1600];
    snprintf(args, sizeof args, "check-seg %s %s 150 -700", path_in(dir), path_in(seg));
    MP_CHECK(run_helper(args));
    mp_dicom_source_deinit(&s);
    mp_dicom_series_list_free(l);
    mp_vol_free(img);
    mp_vol_free(lab);
    mp_vol_free(v);
}

static void test_seg_ascending(void) { check_seg_case(2.0, "seg_asc"); }
static void test_seg_descending(void) { check_seg_case(-2.0, "seg_desc"); }

int main(void) {
    mp_log_set_callback(quiet_log, NULL);
    snprintf(tmp_root, sizeof tmp_root, "%s", mp_test_tmpdir("dicomcli"));
    MP_RUN(test_image_read_dispatch);
    MP_RUN(test_source_ascending);
    MP_RUN(test_source_descending);
    MP_RUN(test_source_refusals);
    MP_RUN(test_source_text_cleaning);
    MP_RUN(test_seg_ascending);
    MP_RUN(test_seg_descending);
    int rc = mp_test_summary();
    if (rc == 0 && !getenv("MP_TEST_KEEP")) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_root);
    }
    return rc;
}
