/* Volume geometry in DICOM terms: the RAS+ affine of a volume turned into
 * LPS ImageOrientationPatient, PixelSpacing, per-slice ImagePositionPatient
 * and the distance between slice planes, shared by the series and SEG
 * writers so both describe a grid the same way. */
#include "io/dcmw_internal.h"
#include "medpipe/core.h"

#include <math.h>
#include <string.h>

static double dot3(const double a[3], const double b[3]) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

/* Rounding noise such as 6e-17 in a direction cosine would print as a
 * 16-character DS; it carries no meaning, so it becomes 0. */
static double snap(double x) { return fabs(x) < 1e-12 ? 0.0 : x; }

int mp_dcmw_geom_init(mp_dcmw_geom_t *g, const mp_vol_t *v) {
    memset(g, 0, sizeof *g);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) g->lps[r][c] = (r < 2 ? -1.0 : 1.0) * v->affine[r][c];
    double ax[3][3];
    double len[3];
    for (int c = 0; c < 3; c++) {
        for (int r = 0; r < 3; r++) ax[c][r] = g->lps[r][c];
        len[c] = sqrt(dot3(ax[c], ax[c]));
        if (!(len[c] > 1e-12) || !isfinite(len[c]))
            return mp_error_set(MP_ERR_ARG, "volume affine: voxel axis %d has length %g; DICOM needs a non-degenerate grid",
                                c, len[c]);
    }
    double u[3], w[3];
    for (int r = 0; r < 3; r++) {
        u[r] = ax[0][r] / len[0];
        w[r] = ax[1][r] / len[1];
    }
    double cosang = dot3(u, w);
    if (fabs(cosang) > 1e-4)
        return mp_error_set(MP_ERR_ARG, "volume affine: in-plane axes i and j are %.4f degrees apart, not 90; "
                            "DICOM ImageOrientationPatient needs orthogonal axes (resample first)",
                            acos(fmax(-1.0, fmin(1.0, cosang))) * 180.0 / M_PI);
    /* Remove the tiny residual so the written cosines are orthonormal. */
    double wl = 0;
    for (int r = 0; r < 3; r++) w[r] -= cosang * u[r];
    wl = sqrt(dot3(w, w));
    for (int r = 0; r < 3; r++) w[r] /= wl;
    g->normal[0] = u[1] * w[2] - u[2] * w[1];
    g->normal[1] = u[2] * w[0] - u[0] * w[2];
    g->normal[2] = u[0] * w[1] - u[1] * w[0];
    double d = dot3(ax[2], g->normal);
    if (fabs(d) < 1e-6 * len[2])
        return mp_error_set(MP_ERR_ARG, "volume affine: slice axis k lies in the image plane");
    if (fabs(d) < len[2] * (1 - 1e-6))
        mp_log(MP_LOG_WARN, "volume affine: slice axis is tilted %.3f degrees from the plane normal (gantry tilt); "
               "readers may resample or refuse the series", acos(fmin(1.0, fabs(d) / len[2])) * 180.0 / M_PI);
    for (int r = 0; r < 3; r++) {
        g->iop[r] = snap(u[r]);
        g->iop[3 + r] = snap(w[r]);
    }
    g->pixel_spacing[0] = len[1];
    g->pixel_spacing[1] = len[0];
    g->slice_spacing = fabs(d);
    g->ascending = d > 0;
    return MP_OK;
}

void mp_dcmw_geom_ipp(const mp_dcmw_geom_t *g, int64_t k, double ipp[3]) {
    for (int r = 0; r < 3; r++) ipp[r] = snap(g->lps[r][2] * (double)k + g->lps[r][3]);
}
