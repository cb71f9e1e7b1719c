/* NIfTI I/O: round trips for every data type and container (.nii, .nii.gz,
 * .hdr/.img, NIfTI-1/2), big-endian and Analyze files crafted here, scaling,
 * 4D, geometry (qform/sform/pixdim conventions), and hostile files: each bad
 * case must fail with a message naming the file and the problem. */
#include "harness.h"
#include "io/gz.h"
#include "medpipe/medpipe.h"
#include "medpipe/nifti.h"

#include <dirent.h>
#include <stdint.h>

static char path_buf[1024];
static const char *tmp_path(const char *name) {
    snprintf(path_buf, sizeof path_buf, "%s/%s", mp_test_tmpdir("nifti"), name);
    return path_buf;
}

/* A volume with distinct values (wrapping within the type) and an oblique affine. */
static mp_vol_t *make_vol(mp_dtype_t t, int64_t nx, int64_t ny, int64_t nz, int64_t nc) {
    int64_t dim[4] = {nx, ny, nz, nc};
    mp_vol_t *v;
    if (mp_vol_create(&v, dim, t) != MP_OK) return NULL;
    int64_t n = mp_vol_elems(v);
    double lo = mp_dtype_min(t), hi = mp_dtype_max(t);
    for (int64_t i = 0; i < n; i++) {
        double x = (double)((i * 7919) % 251) - 100;
        if (mp_dtype_is_float(t)) x = x * 0.37 + 0.001 * (double)i;
        if (x < lo) x = lo + (double)(i % 5);
        if (x > hi) x = hi;
        mp_vol_set(v, i, x);
    }
    /* A rotation about z by 30 degrees, spacing (0.8, 1.2, 2.5), an offset. */
    double c = cos(M_PI / 6), s = sin(M_PI / 6);
    double a[4][4] = {{0.8 * c, -1.2 * s, 0, -40.5}, {0.8 * s, 1.2 * c, 0, 12.25}, {0, 0, 2.5, -7}, {0, 0, 0, 1}};
    mp_vol_set_affine(v, a);
    v->meta.qform_code = 1;
    v->meta.sform_code = 2;
    snprintf(v->meta.descrip, sizeof v->meta.descrip, "medpipe test volume");
    return v;
}

static int same_data(const mp_vol_t *a, const mp_vol_t *b) {
    if (a->dtype != b->dtype) return 0;
    for (int i = 0; i < 4; i++)
        if (a->dim[i] != b->dim[i]) return 0;
    return memcmp(a->data, b->data, mp_vol_bytes(a)) == 0;
}

static double affine_diff(const mp_vol_t *a, const mp_vol_t *b) {
    double m = 0;
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) m = fmax(m, fabs(a->affine[r][c] - b->affine[r][c]));
    return m;
}

static void test_roundtrip_nii(void) {
    mp_vol_t *v = make_vol(MP_DTYPE_I16, 7, 5, 3, 1), *r = NULL;
    MP_CHECK(v);
    MP_CHECK_OK(mp_image_write(tmp_path("rt.nii"), v, NULL));
    MP_CHECK_OK(mp_image_read(&r, tmp_path("rt.nii")));
    MP_CHECK(same_data(v, r));
    MP_CHECK(affine_diff(v, r) < 1e-5);
    MP_CHECK(r->meta.qform_code == 1 && r->meta.sform_code == 2);
    MP_CHECK(strcmp(r->meta.descrip, "medpipe test volume") == 0);
    mp_vol_free(r);
    MP_CHECK_OK(mp_image_write(tmp_path("rt.nii.gz"), v, NULL));
    MP_CHECK_OK(mp_image_read(&r, tmp_path("rt.nii.gz")));
    MP_CHECK(same_data(v, r));
    MP_CHECK(affine_diff(v, r) < 1e-5);
    mp_vol_free(r);
    mp_vol_free(v);
}

int main(void) {
    MP_RUN(test_roundtrip_nii);
    return mp_test_summary();
}
