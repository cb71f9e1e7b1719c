/* DICOM series assembly: scan files into 2D slices (one per single-frame
 * file, one per frame of a multi-frame file, geometry from the per-frame
 * functional groups for enhanced CT/MR), group them by SeriesInstanceUID and,
 * inside one, by size / pixel format / orientation / spacing (and by
 * acquisition, echo or temporal position when those separate slices that
 * share a position), sort by the position projected on the slice normal, and
 * check the stack: duplicates, missing slices, uneven spacing, gantry tilt.
 *
 * Geometry: DICOM gives the centre of the first voxel (ImagePositionPatient)
 * and the row/column directions (ImageOrientationPatient) in LPS; the volume
 * affine maps (column, row, slice) to RAS, so the LPS matrix gets its x and y
 * rows negated. The slice step is (last - first position) / (z span), so a
 * tilted stack gets a sheared affine and every slice stays where DICOM says. */
#include "io/codec.h"
#include "io/dicom_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

#define T(g, e) MP_DICOM_TAG(0x##g, 0x##e)
#define SCAN_PREFIX_BYTES (64u * 1024u)

/* A slice before grouping, with what grouping and checks need. */
typedef struct {
    mp_dicom_slice_t s;
    char series_uid[68];
    mp_dicom_pixel_info_t pi;
    int file;            /* index into the file table */
    int multiframe;
    double thickness;    /* SpacingBetweenSlices, else SliceThickness (0 if neither) */
} cand_t;

typedef struct {
    char *path;
    char study[68], for_uid[68], patient[68], modality[20], descr[68];
    int64_t number;
} finfo_t;

#define MAX_HELD 32

typedef struct {
    cand_t *c;
    int n, cap;
    finfo_t *fi;
    int nf, fcap;
    /* Warnings about skipped files are held until the scan ends: shown when
     * images were found, folded into the error when none were (so a lone
     * broken file gives one message, not the same one twice). */
    char *held[MAX_HELD];
    int n_held, n_unheld;
} scan_t;

static void hold_warning(scan_t *sc, const char *msg) {
    char *m = sc->n_held < MAX_HELD ? strdup(msg) : NULL;
    if (m) sc->held[sc->n_held++] = m;
    else sc->n_unheld++;
}

static void release_warnings(scan_t *sc, int show) {
    for (int i = 0; i < sc->n_held; i++) {
        if (show) mp_log(MP_LOG_WARN, "%s", sc->held[i]);
        free(sc->held[i]);
    }
    if (show && sc->n_unheld) mp_log(MP_LOG_WARN, "%d more file(s) skipped", sc->n_unheld);
    sc->n_held = sc->n_unheld = 0;
}

/* ------------------------------------------------------------ reading a file's slices */

static void str_tag(const mp_dicom_ds_t *ds, uint32_t tag, char *buf, size_t cap) { mp_dicom_get_str(ds, tag, buf, cap); }

static double f64_or(const mp_dicom_ds_t *ds, uint32_t tag, double dflt) {
    double v;
    return mp_dicom_get_f64(ds, tag, &v) == 1 ? v : dflt;
}

static int64_t i64_or(const mp_dicom_ds_t *ds, uint32_t tag, int64_t dflt) {
    int64_t v;
    int n = mp_dicom_get_i64(ds, tag, &v);
    if (n < 0) mp_error_clear();
    return n == 1 ? v : dflt;
}

/* Item 0 of sequence `seq` inside functional-group item `fg`, or NULL. */
static const mp_dicom_ds_t *fg_item(const mp_dicom_ds_t *fg, uint32_t seq) {
    return fg ? mp_dicom_get_item(fg, seq, 0) : NULL;
}

/* Looks up `tag` in macro `seq` of the per-frame item, then the shared item. */
static int fg_f64s(const mp_dicom_ds_t *perframe, const mp_dicom_ds_t *shared, uint32_t seq, uint32_t tag, double *out,
                   int n) {
    const mp_dicom_ds_t *a = fg_item(perframe, seq), *b = fg_item(shared, seq);
    int got = a ? mp_dicom_get_f64s(a, tag, out, n) : 0;
    if (got == n) return got;
    got = b ? mp_dicom_get_f64s(b, tag, out, n) : 0;
    return got == n ? got : 0;
}

static int normalize(double *v) {
    double n = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (!(n > 1e-6)) return -1;
    for (int i = 0; i < 3; i++) v[i] /= n;
    return 0;
}

static void cross(const double *a, const double *b, double *o) {
    o[0] = a[1] * b[2] - a[2] * b[1];
    o[1] = a[2] * b[0] - a[0] * b[2];
    o[2] = a[0] * b[1] - a[1] * b[0];
}

/* Fills orientation-derived fields; has_geometry stays 0 for a degenerate IOP. */
static void finish_geometry(mp_dicom_slice_t *s) {
    if (!s->has_geometry) return;
    if (normalize(s->iop) || normalize(s->iop + 3)) {
        s->has_geometry = 0;
        return;
    }
    double n[3];
    cross(s->iop, s->iop + 3, n);
    if (normalize(n)) {
        s->has_geometry = 0;
        return;
    }
    s->proj = s->ipp[0] * n[0] + s->ipp[1] * n[1] + s->ipp[2] * n[2];
}

static int grow_scan(scan_t *sc) {
    if (sc->n < sc->cap) return MP_OK;
    int ncap = sc->cap ? sc->cap * 2 : 64;
    uint64_t bytes = (uint64_t)ncap * sizeof(cand_t);
    if (bytes > mp_mem_limit()) return mp_error_set(MP_ERR_LIMIT, "too many slices for the memory limit");
    cand_t *nc = realloc(sc->c, (size_t)bytes);
    if (!nc) return mp_error_set(MP_ERR_NOMEM, "out of memory scanning slices");
    sc->c = nc;
    sc->cap = ncap;
    return MP_OK;
}

/* Per-frame values of a multi-frame file: enhanced functional groups, or a
 * legacy stack (RT dose grid offsets, else SpacingBetweenSlices steps along
 * the normal from the one ImagePositionPatient). has_geometry holds bits
 * (1 position, 2 orientation) until finish_geometry. */
static void frame_geometry(const mp_dicom_ds_t *ds, cand_t *c, int k, int frames) {
    const mp_dicom_ds_t *shared = mp_dicom_get_item(ds, T(5200, 9229), 0);
    const mp_dicom_elem_t *pf = mp_dicom_find(ds, T(5200, 9230));
    const mp_dicom_ds_t *per = pf && pf->n_items == (uint32_t)frames ? &pf->items[k] : NULL;
    mp_dicom_slice_t *s = &c->s;
    if (per || shared) {
        double v[6];
        if (fg_f64s(per, shared, T(0020, 9113), T(0020, 0032), v, 3)) {
            memcpy(s->ipp, v, sizeof(double) * 3);
            s->has_geometry |= 1;
        }
        if (fg_f64s(per, shared, T(0020, 9116), T(0020, 0037), v, 6)) {
            memcpy(s->iop, v, sizeof(double) * 6);
            s->has_geometry |= 2;
        }
        if (fg_f64s(per, shared, T(0028, 9110), T(0028, 0030), v, 2)) memcpy(s->pixel_spacing, v, sizeof(double) * 2);
        if (fg_f64s(per, shared, T(0028, 9110), T(0018, 0088), v, 1) ||
            fg_f64s(per, shared, T(0028, 9110), T(0018, 0050), v, 1))
            c->thickness = v[0];
        if (fg_f64s(per, shared, T(0028, 9145), T(0028, 1053), v, 1)) s->slope = v[0];
        if (fg_f64s(per, shared, T(0028, 9145), T(0028, 1052), v, 1)) s->inter = v[0];
        const mp_dicom_ds_t *fc = fg_item(per, T(0020, 9111));
        if (fc) {
            s->temporal = i64_or(fc, T(0020, 9128), -1);
            int64_t in_stack = i64_or(fc, T(0020, 9057), -1);
            if (in_stack >= 0) s->instance = in_stack;
        }
        const mp_dicom_ds_t *echo = fg_item(per, T(0018, 9114));
        if (echo) s->echo = (int64_t)f64_or(echo, T(0018, 9082), -1);
        mp_error_clear();
        return;
    }
    if (s->has_geometry != 3) return;
    double n[3], iop[6], step = 0;
    memcpy(iop, s->iop, sizeof iop);
    if (normalize(iop) || normalize(iop + 3)) return;
    cross(iop, iop + 3, n);
    if (mp_dicom_find(ds, T(3004, 000C))) {
        double *all = malloc(sizeof(double) * (size_t)frames);
        if (all && mp_dicom_get_f64s(ds, T(3004, 000C), all, frames) == frames) step = all[k] - all[0];
        mp_error_clear();
        free(all);
    } else {
        step = c->thickness * k;
    }
    for (int i = 0; i < 3; i++) s->ipp[i] += step * n[i];
}

static int add_file(scan_t *sc, const mp_dicom_file_t *f, const char *path) {
    const mp_dicom_ds_t *ds = mp_dicom_file_dataset(f);
    mp_dicom_pixel_info_t pi;
    if (mp_dicom_pixel_info(f, &pi)) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s: skipped: %s", path, mp_error_message());
        hold_warning(sc, msg);
        return 1;
    }
    if (sc->nf == sc->fcap) {
        int ncap = sc->fcap ? sc->fcap * 2 : 64;
        finfo_t *nf = realloc(sc->fi, (size_t)ncap * sizeof *nf);
        if (!nf) return mp_error_set(MP_ERR_NOMEM, "out of memory scanning");
        sc->fi = nf;
        sc->fcap = ncap;
    }
    finfo_t *fi = &sc->fi[sc->nf];
    memset(fi, 0, sizeof *fi);
    fi->path = strdup(path);
    if (!fi->path) return mp_error_set(MP_ERR_NOMEM, "out of memory scanning");
    str_tag(ds, T(0020, 000D), fi->study, sizeof fi->study);
    str_tag(ds, T(0020, 0052), fi->for_uid, sizeof fi->for_uid);
    str_tag(ds, T(0010, 0020), fi->patient, sizeof fi->patient);
    str_tag(ds, T(0008, 0060), fi->modality, sizeof fi->modality);
    str_tag(ds, T(0008, 103E), fi->descr, sizeof fi->descr);
    fi->number = i64_or(ds, T(0020, 0011), -1);
    sc->nf++;
    cand_t base;
    memset(&base, 0, sizeof base);
    base.pi = pi;
    base.file = sc->nf - 1;
    base.multiframe = pi.frames > 1;
    str_tag(ds, T(0020, 000E), base.series_uid, sizeof base.series_uid);
    str_tag(ds, T(0008, 0018), base.s.sop_uid, sizeof base.s.sop_uid);
    base.s.instance = i64_or(ds, T(0020, 0013), 0);
    base.s.acquisition = i64_or(ds, T(0020, 0012), -1);
    base.s.echo = i64_or(ds, T(0018, 0086), -1);
    base.s.temporal = i64_or(ds, T(0020, 0100), -1);
    base.s.slope = f64_or(ds, T(0028, 1053), 1.0);
    base.s.inter = f64_or(ds, T(0028, 1052), 0.0);
    base.thickness = f64_or(ds, T(0018, 0088), f64_or(ds, T(0018, 0050), 0.0));
    if (mp_dicom_get_f64s(ds, T(0028, 0030), base.s.pixel_spacing, 2) != 2 &&
        mp_dicom_get_f64s(ds, T(0018, 1164), base.s.pixel_spacing, 2) != 2)
        base.s.pixel_spacing[0] = base.s.pixel_spacing[1] = 1.0;
    base.s.has_geometry = (mp_dicom_get_f64s(ds, T(0020, 0032), base.s.ipp, 3) == 3 ? 1 : 0) |
                          (mp_dicom_get_f64s(ds, T(0020, 0037), base.s.iop, 6) == 6 ? 2 : 0);
    mp_error_clear(); /* malformed optional numbers count as absent */
    for (int k = 0; k < pi.frames; k++) {
        int rc = grow_scan(sc);
        if (rc) return rc;
        cand_t *c = &sc->c[sc->n++];
        *c = base;
        c->s.frame = k;
        if (pi.frames > 1) {
            c->s.instance = k + 1;
            frame_geometry(ds, c, k, pi.frames);
        }
        c->s.has_geometry = c->s.has_geometry == 3;
        if (!(c->s.slope != 0 && isfinite(c->s.slope))) c->s.slope = 1.0;
        if (!isfinite(c->s.inter)) c->s.inter = 0.0;
        for (int i = 0; i < 2; i++)
            if (!(c->s.pixel_spacing[i] > 0 && isfinite(c->s.pixel_spacing[i]))) c->s.pixel_spacing[i] = 1.0;
        for (int i = 0; i < 3; i++)
            if (!isfinite(c->s.ipp[i])) c->s.has_geometry = 0;
        finish_geometry(&c->s);
    }
    return MP_OK;
}

/* Reads the start of a file (enough for the header of most images) and falls
 * back to the whole file when the header runs past it. */
int mp_dcm_read_header(mp_dicom_file_t **out, const char *path) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return mp_error_set(MP_ERR_IO, "%s: cannot open", path);
    uint8_t *buf = malloc(SCAN_PREFIX_BYTES);
    size_t got = buf ? fread(buf, 1, SCAN_PREFIX_BYTES, fp) : 0;
    int more = got == SCAN_PREFIX_BYTES && fgetc(fp) != EOF;
    fclose(fp);
    if (!buf) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    unsigned fl = MP_DICOM_PARSE_STOP_AT_PIXELS | (more ? MP_DCM_PARSE_PREFIX : 0);
    int rc = mp_dicom_file_parse(out, buf, got, path, fl);
    if (rc == MP_OK && (!more || (*out)->stopped_at_pixels)) {
        (*out)->owned_read = buf;
        return MP_OK;
    }
    mp_dicom_file_free(*out);
    *out = NULL;
    free(buf);
    if (!more) return rc;
    mp_error_clear();
    return mp_dicom_file_read(out, path, MP_DICOM_PARSE_STOP_AT_PIXELS | MP_DCM_PARSE_QUIET);
}

/* ------------------------------------------------------------ grouping */

static int same_group(const cand_t *a, const cand_t *b) {
    if (strcmp(a->series_uid, b->series_uid) != 0) return 0;
    const mp_dicom_pixel_info_t *p = &a->pi, *q = &b->pi;
    if (p->rows != q->rows || p->cols != q->cols || p->samples != q->samples || p->bits_allocated != q->bits_allocated ||
        p->bits_stored != q->bits_stored || p->is_signed != q->is_signed || strcmp(p->photometric, q->photometric) != 0)
        return 0;
    if ((a->multiframe || b->multiframe) && a->file != b->file) return 0;
    if (a->s.has_geometry != b->s.has_geometry) return 0;
    for (int i = 0; i < 2; i++)
        if (fabs(a->s.pixel_spacing[i] - b->s.pixel_spacing[i]) > 1e-3 * a->s.pixel_spacing[i]) return 0;
    if (a->s.has_geometry)
        for (int i = 0; i < 6; i++)
            if (fabs(a->s.iop[i] - b->s.iop[i]) > 1e-3) return 0;
    return 1;
}

typedef struct {
    int *idx;
    int n, cap;
} group_t;

typedef struct {
    group_t *g;
    int n, cap;
} groups_t;

static int group_push(group_t *g, int v) {
    if (g->n == g->cap) {
        int ncap = g->cap ? g->cap * 2 : 16;
        int *ni = realloc(g->idx, (size_t)ncap * sizeof *ni);
        if (!ni) return mp_error_set(MP_ERR_NOMEM, "out of memory grouping slices");
        g->idx = ni;
        g->cap = ncap;
    }
    g->idx[g->n++] = v;
    return MP_OK;
}

static group_t *groups_new(groups_t *gs) {
    if (gs->n == gs->cap) {
        int ncap = gs->cap ? gs->cap * 2 : 8;
        group_t *ng = realloc(gs->g, (size_t)ncap * sizeof *ng);
        if (!ng) return NULL;
        gs->g = ng;
        gs->cap = ncap;
    }
    memset(&gs->g[gs->n], 0, sizeof(group_t));
    return &gs->g[gs->n++];
}

static void groups_free(groups_t *gs) {
    for (int i = 0; i < gs->n; i++) free(gs->g[i].idx);
    free(gs->g);
    memset(gs, 0, sizeof *gs);
}

static _Thread_local const cand_t *tl_cands; /* qsort context */

static int cmp_slices(const void *pa, const void *pb) {
    const cand_t *a = &tl_cands[*(const int *)pa], *b = &tl_cands[*(const int *)pb];
    if (a->s.has_geometry && b->s.has_geometry && a->s.proj != b->s.proj) return a->s.proj < b->s.proj ? -1 : 1;
    if (a->s.instance != b->s.instance) return a->s.instance < b->s.instance ? -1 : 1;
    if (a->file != b->file) return a->file < b->file ? -1 : 1;
    return a->s.frame < b->s.frame ? -1 : a->s.frame > b->s.frame;
}

#define DUP_EPS 1e-3 /* mm: positions closer than this are the same slice position */

static int count_dups(const cand_t *c, int *idx, int n) {
    tl_cands = c;
    qsort(idx, (size_t)n, sizeof *idx, cmp_slices);
    int d = 0;
    for (int i = 1; i < n; i++)
        if (c[idx[i]].s.has_geometry && fabs(c[idx[i]].s.proj - c[idx[i - 1]].s.proj) < DUP_EPS) d++;
    return d;
}

static int64_t attr_of(const cand_t *c, int which) {
    return which == 0 ? c->s.acquisition : which == 1 ? c->s.echo : c->s.temporal;
}

/* Splits group gi of gs by acquisition, echo or temporal position when that
 * separates slices sharing a position into stacks of 2+ slices. */
static int split_dups(groups_t *gs, int gi, const cand_t *c, int first_attr) {
    for (int which = first_attr; which < 3; which++) {
        group_t g = gs->g[gi];
        int dups = count_dups(c, g.idx, g.n);
        if (dups == 0) return MP_OK;
        int64_t vals[64];
        int nv = 0, ok = 1;
        for (int i = 0; i < g.n && ok; i++) {
            int64_t v = attr_of(&c[g.idx[i]], which), k;
            for (k = 0; k < nv && vals[k] != v; k++) {}
            if (k == nv) {
                if (nv == 64) ok = 0;
                else vals[nv++] = v;
            }
        }
        if (!ok || nv < 2) continue;
        group_t parts[64];
        memset(parts, 0, sizeof parts);
        int rc = MP_OK, after = 0, small = 0;
        for (int i = 0; i < g.n && rc == MP_OK; i++) {
            int64_t v = attr_of(&c[g.idx[i]], which);
            int k = 0;
            while (vals[k] != v) k++;
            rc = group_push(&parts[k], g.idx[i]);
        }
        for (int k = 0; k < nv && rc == MP_OK; k++) {
            after += count_dups(c, parts[k].idx, parts[k].n);
            small += parts[k].n < 2;
        }
        if (rc == MP_OK && after < dups && !small) {
            free(gs->g[gi].idx);
            gs->g[gi] = parts[0];
            for (int k = 1; k < nv; k++) {
                group_t *ng = groups_new(gs);
                if (!ng) {
                    for (int j = k; j < nv; j++) free(parts[j].idx);
                    return mp_error_set(MP_ERR_NOMEM, "out of memory grouping slices");
                }
                *ng = parts[k];
            }
            int last = gs->n;
            rc = split_dups(gs, gi, c, which + 1);
            for (int k = last - nv + 1; rc == MP_OK && k < last; k++) rc = split_dups(gs, k, c, which + 1);
            return rc;
        }
        for (int k = 0; k < nv; k++) free(parts[k].idx);
        if (rc) return rc;
    }
    return MP_OK;
}

static int make_groups(groups_t *gs, const scan_t *sc) {
    for (int i = 0; i < sc->n; i++) {
        int g;
        for (g = gs->n - 1; g >= 0; g--)
            if (same_group(&sc->c[gs->g[g].idx[0]], &sc->c[i])) break;
        group_t *grp = g >= 0 ? &gs->g[g] : groups_new(gs);
        if (!grp) return mp_error_set(MP_ERR_NOMEM, "out of memory grouping slices");
        int rc = group_push(grp, i);
        if (rc) return rc;
    }
    int n0 = gs->n;
    for (int g = 0; g < n0; g++) {
        int rc = split_dups(gs, g, sc->c, 0);
        if (rc) return rc;
    }
    return MP_OK;
}

/* ------------------------------------------------------------ geometry */

static double median(double *v, int n) {
    for (int i = 1; i < n; i++) { /* insertion sort: n is a slice count */
        double x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void describe_short(const mp_dicom_series_t *s, char *buf, size_t cap) {
    char part[16] = "";
    if (s->part) snprintf(part, sizeof part, " part %d", s->part);
    if (s->series_number >= 0) snprintf(buf, cap, "series %lld%s '%s'", (long long)s->series_number, part, s->description);
    else snprintf(buf, cap, "series %s%s", s->series_uid[0] ? s->series_uid : "(no uid)", part);
}

/* z index of each slice from the gaps between sorted positions: a gap of q
 * median steps (q >= 2) leaves q - 1 missing slices that the volume keeps
 * room for. Returns the median step; *uneven when a gap fits no whole
 * number of steps. */
static double slice_indices(mp_dicom_series_t *s, const char *who, int *uneven, double *tol) {
    int n = s->count, missing = 0;
    double *gaps = malloc(sizeof(double) * (size_t)(n - 1) * 2);
    if (!gaps) return -1;
    for (int i = 0; i + 1 < n; i++) gaps[i] = gaps[n - 1 + i] = s->slices[i + 1].proj - s->slices[i].proj;
    double m = median(gaps + n - 1, n - 1), gmin = gaps[0], gmax = gaps[0];
    *tol = 0.01 * m + 0.01;
    for (int i = 0; i + 1 < n; i++) {
        double g = gaps[i], q = floor(g / m + 0.5);
        gmin = fmin(gmin, g);
        gmax = fmax(gmax, g);
        int k = 1;
        if (q >= 2 && fabs(g - q * m) <= *tol * q && q <= 2.0 * n) {
            k = (int)q;
            missing += k - 1;
        } else if (fabs(g - m) > *tol) {
            *uneven = 1;
        }
        s->z_of_slice[i + 1] = s->z_of_slice[i] + k;
    }
    free(gaps);
    if (missing) s->flags |= MP_DICOM_SERIES_MISSING;
    if (missing > n) {
        /* Too sparse to fill (a few slices kept from a long series): keep
         * them contiguous and say the spacing is not uniform. */
        for (int i = 0; i < n; i++) s->z_of_slice[i] = i;
        mp_log(MP_LOG_WARN, "%s: %d slices with gaps worth %d more; not filled", who, n, missing);
        *uneven = 1;
        missing = 0;
    }
    for (int i = 0; missing && i + 1 < n; i++)
        if (s->z_of_slice[i + 1] - s->z_of_slice[i] > 1)
            mp_log(MP_LOG_WARN, "%s: %d slice(s) missing between positions %.3f and %.3f mm along the normal (filled)",
                   who, s->z_of_slice[i + 1] - s->z_of_slice[i] - 1, s->slices[i].proj, s->slices[i + 1].proj);
    if (*uneven)
        mp_log(MP_LOG_WARN, "%s: uneven slice spacing (%.4f to %.4f mm, median %.4f): mean spacing used", who, gmin,
               gmax, m);
    return m;
}

/* Affine from LPS axes: x along the row direction (column index), y along
 * the column direction, z = step, origin = first voxel; RAS negates x and y. */
static void set_affine(mp_dicom_series_t *s, const double r[3], const double c[3], const double step[3],
                       const double origin[3]) {
    const mp_dicom_slice_t *a = &s->slices[0];
    mp_mat4_identity(s->affine);
    for (int i = 0; i < 3; i++) {
        double sign = i < 2 ? -1.0 : 1.0;
        s->affine[i][0] = sign * r[i] * a->pixel_spacing[1];
        s->affine[i][1] = sign * c[i] * a->pixel_spacing[0];
        s->affine[i][2] = sign * step[i];
        s->affine[i][3] = sign * origin[i];
    }
}

/* z indices, flags (missing, uneven, tilt) and the affine of a sorted stack. */
static int stack_geometry(mp_dicom_series_t *s, double fallback_step) {
    int n = s->count, uneven = 0;
    const mp_dicom_slice_t *a = &s->slices[0], *b = &s->slices[n - 1];
    double r[3], c[3], nrm[3], step[3], tol = 0;
    memcpy(r, a->iop, sizeof r);
    memcpy(c, a->iop + 3, sizeof c);
    cross(r, c, nrm);
    normalize(nrm);
    char who[200];
    describe_short(s, who, sizeof who);
    s->z_of_slice[0] = 0;
    s->nz = 1;
    s->slice_spacing = fallback_step > 0 ? fallback_step : 1.0;
    for (int i = 0; i < 3; i++) step[i] = nrm[i] * s->slice_spacing;
    if (n > 1) {
        double m = slice_indices(s, who, &uneven, &tol);
        if (m < 0) return mp_error_set(MP_ERR_NOMEM, "out of memory");
        s->slice_spacing = m;
        s->nz = s->z_of_slice[n - 1] + 1;
        for (int i = 0; i < 3; i++) step[i] = (b->ipp[i] - a->ipp[i]) / (double)(s->nz - 1);
        /* every slice on the line first + z * step? */
        for (int j = 1; j + 1 < n && !uneven; j++) {
            double d2 = 0;
            for (int i = 0; i < 3; i++) {
                double e = s->slices[j].ipp[i] - (a->ipp[i] + step[i] * s->z_of_slice[j]);
                d2 += e * e;
            }
            if (sqrt(d2) > tol) {
                uneven = 1;
                mp_log(MP_LOG_WARN, "%s: slice %d is %.3f mm off the line through the first and last", who, j, sqrt(d2));
            }
        }
        if (uneven) s->flags |= MP_DICOM_SERIES_NONUNIFORM;
        double along = step[0] * nrm[0] + step[1] * nrm[1] + step[2] * nrm[2];
        double len = sqrt(step[0] * step[0] + step[1] * step[1] + step[2] * step[2]);
        double sin_t = sqrt(fmax(0.0, 1.0 - (along / len) * (along / len)));
        if (sin_t > 1e-3) {
            s->flags |= MP_DICOM_SERIES_TILT;
            mp_log(MP_LOG_WARN, "%s: slices step %.3f degrees off the slice normal (gantry tilt): sheared affine", who,
                   asin(sin_t) * 180.0 / M_PI);
        }
    }
    set_affine(s, r, c, step, a->ipp);
    return MP_OK;
}

static void no_geometry(mp_dicom_series_t *s, double fallback_step) {
    s->flags |= MP_DICOM_SERIES_NO_GEOMETRY;
    for (int i = 0; i < s->count; i++) s->z_of_slice[i] = i;
    s->nz = s->count;
    s->slice_spacing = fallback_step > 0 ? fallback_step : 1.0;
    double r[3] = {1, 0, 0}, c[3] = {0, 1, 0}, step[3] = {0, 0, s->slice_spacing}, o[3] = {0, 0, 0};
    set_affine(s, r, c, step, o);
}

/* Builds series `s` from the slices idx[0..n) (sorted): drops duplicates,
 * copies identification, computes the stack geometry. */
static int build_series(mp_dicom_series_t *s, const scan_t *sc, const int *idx, int n, int part) {
    const cand_t *c0 = &sc->c[idx[0]];
    const finfo_t *fi = &sc->fi[c0->file];
    memset(s, 0, sizeof *s);
    s->part = part;
    if (part) s->flags |= MP_DICOM_SERIES_SPLIT;
    snprintf(s->series_uid, sizeof s->series_uid, "%s", c0->series_uid);
    snprintf(s->study_uid, sizeof s->study_uid, "%s", fi->study);
    snprintf(s->frame_of_ref_uid, sizeof s->frame_of_ref_uid, "%s", fi->for_uid);
    snprintf(s->patient_id, sizeof s->patient_id, "%s", fi->patient);
    snprintf(s->modality, sizeof s->modality, "%s", fi->modality);
    snprintf(s->description, sizeof s->description, "%s", fi->descr);
    snprintf(s->photometric, sizeof s->photometric, "%s", c0->pi.photometric);
    snprintf(s->syntax, sizeof s->syntax, "%s", c0->pi.syntax);
    s->series_number = fi->number;
    s->rows = c0->pi.rows;
    s->cols = c0->pi.cols;
    s->samples = c0->pi.samples;
    s->bits_allocated = c0->pi.bits_allocated;
    s->bits_stored = c0->pi.bits_stored;
    s->is_signed = c0->pi.is_signed;
    if (c0->multiframe) s->flags |= MP_DICOM_SERIES_MULTIFRAME;
    s->slices = calloc((size_t)n, sizeof *s->slices);
    s->z_of_slice = calloc((size_t)n, sizeof *s->z_of_slice);
    if (!s->slices || !s->z_of_slice) return mp_error_set(MP_ERR_NOMEM, "out of memory building series");
    int dups = 0;
    for (int i = 0; i < n; i++) {
        const cand_t *c = &sc->c[idx[i]];
        if (s->count && c->s.has_geometry && fabs(c->s.proj - s->slices[s->count - 1].proj) < DUP_EPS) {
            dups++;
            continue;
        }
        mp_dicom_slice_t *d = &s->slices[s->count];
        *d = c->s;
        d->path = strdup(sc->fi[c->file].path);
        if (!d->path) return mp_error_set(MP_ERR_NOMEM, "out of memory building series");
        s->count++;
    }
    for (int i = 1; i < s->count; i++)
        if (s->slices[i].slope != s->slices[0].slope || s->slices[i].inter != s->slices[0].inter)
            s->flags |= MP_DICOM_SERIES_RESCALE_VARIES;
    if (!c0->s.has_geometry) {
        no_geometry(s, c0->thickness);
        return MP_OK;
    }
    if (dups) {
        char who[200];
        describe_short(s, who, sizeof who);
        s->flags |= MP_DICOM_SERIES_DUPLICATES;
        mp_log(MP_LOG_WARN, "%s: %d slice(s) share a position with another; the lowest InstanceNumber is kept", who,
               dups);
    }
    return stack_geometry(s, c0->thickness);
}

static void series_free_fields(mp_dicom_series_t *s) {
    for (int i = 0; s->slices && i < s->count; i++) free(s->slices[i].path);
    free(s->slices);
    free(s->z_of_slice);
}

void mp_dicom_series_list_free(mp_dicom_series_list_t *l) {
    if (!l) return;
    for (int i = 0; i < l->n; i++) series_free_fields(&l->series[i]);
    free(l->series);
    free(l);
}

static int cmp_series(const void *pa, const void *pb) {
    const mp_dicom_series_t *a = pa, *b = pb;
    if (a->series_number != b->series_number) return a->series_number < b->series_number ? -1 : 1;
    int c = strcmp(a->series_uid, b->series_uid);
    if (c) return c;
    return a->part - b->part;
}

void mp_dicom_series_describe(const mp_dicom_series_t *s, char *buf, size_t cap) {
    char part[16] = "";
    if (s->part) snprintf(part, sizeof part, ".%d", s->part);
    snprintf(buf, cap, "%lld%s '%s' %s %dx%dx%d%s %s", (long long)s->series_number, part, s->description,
             s->modality[0] ? s->modality : "?", s->cols, s->rows, s->nz, s->samples == 3 ? "x3" : "", s->series_uid);
}

/* ------------------------------------------------------------ scan */

static void scan_free(scan_t *sc) {
    release_warnings(sc, 0);
    for (int i = 0; i < sc->nf; i++) free(sc->fi[i].path);
    free(sc->fi);
    free(sc->c);
}

static int scan_files(scan_t *sc, const mp_dcm_pathlist_t *files, int *skipped, char *first_err, size_t cap) {
    for (int i = 0; i < files->n; i++) {
        mp_dicom_file_t *f;
        int rc = mp_dcm_read_header(&f, files->paths[i]);
        if (rc) {
            if (rc == MP_ERR_NOMEM) return rc;
            if (!first_err[0]) snprintf(first_err, cap, "%s", mp_error_message());
            if (strstr(mp_error_message(), "not a DICOM file")) {
                mp_log(MP_LOG_DEBUG, "skipped: %s", mp_error_message());
            } else {
                char msg[700];
                snprintf(msg, sizeof msg, "skipped: %s", mp_error_message());
                hold_warning(sc, msg);
            }
            (*skipped)++;
            continue;
        }
        if (!mp_dicom_find(mp_dicom_file_dataset(f), MP_DCM_PIXEL_DATA)) {
            mp_log(MP_LOG_DEBUG, "%s: no pixel data; skipped", files->paths[i]);
            if (!first_err[0]) snprintf(first_err, cap, "%s: no pixel data", files->paths[i]);
            (*skipped)++;
        } else {
            rc = add_file(sc, f, files->paths[i]);
            if (rc < 0) {
                mp_dicom_file_free(f);
                return rc;
            }
            if (rc > 0) {
                if (!first_err[0]) snprintf(first_err, cap, "%s", mp_error_message());
                (*skipped)++;
            }
        }
        mp_dicom_file_free(f);
    }
    return MP_OK;
}

static int series_from_groups(mp_dicom_series_list_t *l, const scan_t *sc, groups_t *gs) {
    l->series = calloc(gs->n > 0 ? (size_t)gs->n : 1, sizeof *l->series);
    if (!l->series) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int g = 0; g < gs->n; g++) {
        tl_cands = sc->c;
        qsort(gs->g[g].idx, (size_t)gs->g[g].n, sizeof(int), cmp_slices);
        /* parts of one SeriesInstanceUID are numbered in scan order */
        int part = 0, total = 0;
        for (int h = 0; h < gs->n; h++)
            if (strcmp(sc->c[gs->g[h].idx[0]].series_uid, sc->c[gs->g[g].idx[0]].series_uid) == 0) {
                total++;
                if (h <= g) part++;
            }
        l->n++;
        int rc = build_series(&l->series[g], sc, gs->g[g].idx, gs->g[g].n, total > 1 ? part : 0);
        if (rc) return rc;
    }
    qsort(l->series, (size_t)l->n, sizeof *l->series, cmp_series);
    return MP_OK;
}

int mp_dicom_scan(mp_dicom_series_list_t **out, const char *path) {
    *out = NULL;
    mp_dcm_pathlist_t files = {0};
    int rc = mp_dcm_collect_files(&files, path);
    if (rc) {
        mp_dcm_pathlist_free(&files);
        return rc;
    }
    mp_dicom_series_list_t *l = calloc(1, sizeof *l);
    scan_t sc;
    memset(&sc, 0, sizeof sc);
    groups_t gs = {0};
    char first_err[512] = "";
    if (!l) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    if (!rc) {
        l->files_seen = files.n;
        rc = scan_files(&sc, &files, &l->files_skipped, first_err, sizeof first_err);
    }
    if (!rc) rc = make_groups(&gs, &sc);
    if (!rc) rc = series_from_groups(l, &sc, &gs);
    release_warnings(&sc, !rc && l->n > 0);
    if (!rc && l->n == 0) {
        rc = files.n == 0 ? mp_error_set(MP_ERR_FORMAT, "%s: no files found", path)
                          : mp_error_set(MP_ERR_FORMAT, "%s: no DICOM image found in %d file(s)%s%s", path, files.n,
                                         first_err[0] ? "; first problem: " : "", first_err);
    }
    groups_free(&gs);
    scan_free(&sc);
    mp_dcm_pathlist_free(&files);
    if (rc) {
        mp_dicom_series_list_free(l);
        return rc;
    }
    *out = l;
    return MP_OK;
}

/* ------------------------------------------------------------ reading */

typedef struct {
    const mp_dicom_series_t *s;
    mp_vol_t *v;
    int as_float;             /* rescale per slice into float32 */
    const mp_dicom_file_t *shared; /* the one file of a multi-frame series, parsed once */
    int *status;              /* per slice: 0 ok, else error */
    char err[512];            /* first error message (guarded by err_lock) */
    atomic_int failed;        /* a slice failed: the others stop early */
} read_ctx_t;

static int check_slice_format(const mp_dicom_series_t *s, const mp_dicom_pixel_info_t *pi, const char *path) {
    if (pi->rows != s->rows || pi->cols != s->cols || pi->samples != s->samples || pi->bits_allocated != s->bits_allocated ||
        pi->bits_stored != s->bits_stored || pi->is_signed != s->is_signed)
        return mp_error_set(MP_ERR_MISMATCH, "%s: pixel format changed since the scan", path);
    return MP_OK;
}

/* Writes decoded frame `buf` as slice z of the volume. */
static void store_slice(read_ctx_t *rc, const mp_dicom_slice_t *sl, const void *buf, int z) {
    const mp_dicom_series_t *s = rc->s;
    size_t npix = (size_t)s->rows * (size_t)s->cols, plane = npix * (size_t)s->nz;
    size_t sb = mp_dtype_size(rc->v->dtype);
    int is = s->is_signed, fsb = s->bits_allocated <= 8 ? 1 : s->bits_allocated / 8;
    if (rc->as_float) {
        float *dst = (float *)rc->v->data + (size_t)z * npix;
        for (size_t i = 0; i < npix; i++) {
            double raw = fsb == 1 ? (is ? ((const int8_t *)buf)[i] : ((const uint8_t *)buf)[i])
                         : fsb == 2 ? (is ? ((const int16_t *)buf)[i] : ((const uint16_t *)buf)[i])
                                    : (is ? (double)((const int32_t *)buf)[i] : (double)((const uint32_t *)buf)[i]);
            dst[i] = (float)(raw * sl->slope + sl->inter);
        }
        return;
    }
    if (s->samples == 1) {
        memcpy((uint8_t *)rc->v->data + (size_t)z * npix * sb, buf, npix * sb);
        return;
    }
    for (int ch = 0; ch < s->samples; ch++) {
        uint8_t *dst = (uint8_t *)rc->v->data + ((size_t)ch * plane + (size_t)z * npix) * sb;
        for (size_t i = 0; i < npix; i++)
            memcpy(dst + i * sb, (const uint8_t *)buf + (i * (size_t)s->samples + (size_t)ch) * sb, sb);
    }
}

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;

static void read_range(void *ctx, int64_t begin, int64_t end, int worker) {
    (void)worker;
    read_ctx_t *rc = ctx;
    const mp_dicom_series_t *s = rc->s;
    mp_dicom_file_t *own = NULL;
    const char *own_path = NULL;
    void *buf = NULL;
    size_t fb = 0;
    for (int64_t i = begin; i < end && !rc->failed; i++) {
        const mp_dicom_slice_t *sl = &s->slices[i];
        const mp_dicom_file_t *f = rc->shared;
        int st = MP_OK;
        if (!f) {
            if (!own_path || strcmp(own_path, sl->path) != 0) {
                mp_dicom_file_free(own);
                own = NULL;
                st = mp_dicom_file_read(&own, sl->path, MP_DCM_PARSE_QUIET);
                own_path = sl->path;
            }
            f = own;
        }
        mp_dicom_pixel_info_t pi;
        if (!st) st = mp_dicom_pixel_info(f, &pi);
        if (!st) st = check_slice_format(s, &pi, sl->path);
        /* single-channel integer slices decode straight into the volume */
        int direct = !st && s->samples == 1 && !rc->as_float;
        fb = st ? 0 : mp_dicom_frame_bytes(&pi);
        if (!st && !direct && !buf) {
            buf = malloc(fb);
            if (!buf) st = mp_error_set(MP_ERR_NOMEM, "out of memory");
        }
        void *dst = direct ? (uint8_t *)rc->v->data + (size_t)s->z_of_slice[i] * fb : buf;
        if (!st) st = mp_dicom_decode_frame(f, &pi, sl->frame, dst, fb, MP_DICOM_FRAME_RGB | MP_DICOM_FRAME_INVERT_MONO1);
        if (!st && !direct) store_slice(rc, sl, buf, s->z_of_slice[i]);
        rc->status[i] = st;
        if (st) {
            pthread_mutex_lock(&err_lock);
            if (!rc->failed) snprintf(rc->err, sizeof rc->err, "%s", mp_error_message());
            rc->failed = 1;
            pthread_mutex_unlock(&err_lock);
        }
    }
    free(buf);
    mp_dicom_file_free(own);
}

static mp_dtype_t series_dtype(const mp_dicom_series_t *s) {
    if (s->bits_allocated <= 8) return s->is_signed ? MP_DTYPE_I8 : MP_DTYPE_U8;
    if (s->bits_allocated == 16) return s->is_signed ? MP_DTYPE_I16 : MP_DTYPE_U16;
    return s->is_signed ? MP_DTYPE_I32 : MP_DTYPE_U32;
}

static int photometric_ok(const mp_dicom_series_t *s) {
    const char *p = s->photometric;
    if (strcmp(p, "MONOCHROME1") == 0 || strcmp(p, "MONOCHROME2") == 0 || strcmp(p, "RGB") == 0 ||
        strcmp(p, "YBR_FULL") == 0 || strcmp(p, "YBR_FULL_422") == 0)
        return MP_OK;
    mp_codec_t codec = mp_codec_for_syntax(s->syntax);
    int jpeg_family = codec != MP_CODEC_NATIVE && codec != MP_CODEC_RLE && codec != MP_CODEC_UNSUPPORTED;
    if (jpeg_family && s->samples == 3 && strncmp(p, "YBR_", 4) == 0) return MP_OK; /* the codec returns RGB */
    if (strcmp(p, "PALETTE COLOR") == 0)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: PALETTE COLOR images are not supported (apply the LUT first)",
                            s->slices[0].path);
    return mp_error_set(MP_ERR_UNSUPPORTED, "%s: photometric interpretation %s is not supported", s->slices[0].path, p);
}

/* A volume whose data every slice will overwrite: skips mp_vol_create's
 * zeroing of what may be gigabytes (the buffer is mp_alloc'd and handed to
 * the volume, which frees it with mp_free as for its own data). */
static int create_uninitialised(mp_vol_t **out, const int64_t dim[4], mp_dtype_t dtype, int zero) {
    if (zero) return mp_vol_create(out, dim, dtype);
    uint64_t bytes;
    if (mp_mul_u64((uint64_t)dim[0] * (uint64_t)dim[1], (uint64_t)dim[2] * (uint64_t)dim[3], &bytes) ||
        mp_mul_u64(bytes, mp_dtype_size(dtype), &bytes) || bytes > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "volume of %lldx%lldx%lldx%lld exceeds the memory limit", (long long)dim[0],
                            (long long)dim[1], (long long)dim[2], (long long)dim[3]);
    void *data = mp_alloc((size_t)bytes);
    if (!data) return mp_error_set(MP_ERR_NOMEM, "cannot allocate a volume of %llu bytes", (unsigned long long)bytes);
    int rc = mp_vol_create_view(out, dim, dtype, data);
    if (rc) {
        mp_free(data);
        return rc;
    }
    (*out)->owns_data = 1;
    return MP_OK;
}

/* Fills the slices no file gave with the smallest value of the others. */
static void fill_gaps(mp_vol_t *v, const mp_dicom_series_t *s) {
    if (s->nz == s->count) return;
    char *have = calloc((size_t)s->nz, 1);
    if (!have) return;
    for (int i = 0; i < s->count; i++) have[s->z_of_slice[i]] = 1;
    size_t npix = (size_t)s->rows * (size_t)s->cols;
    double lo = INFINITY;
    for (int z = 0; z < s->nz; z++)
        if (have[z])
            for (size_t i = 0; i < npix; i++) lo = fmin(lo, mp_vol_get(v, (int64_t)((size_t)z * npix + i)));
    for (int64_t c = 0; c < v->dim[3]; c++)
        for (int z = 0; z < s->nz; z++)
            if (!have[z])
                for (size_t i = 0; i < npix; i++) mp_vol_set(v, (int64_t)(((size_t)c * (size_t)s->nz + (size_t)z) * npix + i), lo);
    free(have);
}

int mp_dicom_series_read(mp_vol_t **out, const mp_dicom_series_t *s) {
    *out = NULL;
    if (!s || s->count < 1) return mp_error_set(MP_ERR_ARG, "mp_dicom_series_read: empty series");
    int rc = photometric_ok(s);
    if (rc) return rc;
    int varies = (s->flags & MP_DICOM_SERIES_RESCALE_VARIES) != 0;
    int64_t dim[4] = {s->cols, s->rows, s->nz, s->samples};
    if (varies && s->samples != 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "%s: colour slices with differing rescale", s->slices[0].path);
    mp_vol_t *v;
    rc = create_uninitialised(&v, dim, varies ? MP_DTYPE_F32 : series_dtype(s), s->nz != s->count);
    if (rc) return rc;
    read_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.s = s;
    ctx.v = v;
    ctx.as_float = varies;
    ctx.status = calloc((size_t)s->count, sizeof(int));
    mp_dicom_file_t *shared = NULL;
    if (!ctx.status) rc = mp_error_set(MP_ERR_NOMEM, "out of memory");
    int one_file = 1;
    for (int i = 1; i < s->count && one_file; i++) one_file = strcmp(s->slices[i].path, s->slices[0].path) == 0;
    if (!rc && one_file && s->count > 1) {
        rc = mp_dicom_file_read(&shared, s->slices[0].path, MP_DCM_PARSE_QUIET);
        ctx.shared = shared;
    }
    if (!rc) {
        mp_pool_t *pool = s->count >= 8 ? mp_pool_create(0) : NULL;
        mp_pool_parallel_for(pool, s->count, read_range, &ctx);
        mp_pool_free(pool);
        for (int i = 0; ctx.failed && i < s->count; i++)
            if (ctx.status[i]) { /* the first failure's code, with the message a worker kept */
                rc = mp_error_set(ctx.status[i], "%s", ctx.err);
                break;
            }
    }
    mp_dicom_file_free(shared);
    free(ctx.status);
    if (rc) {
        mp_vol_free(v);
        return rc;
    }
    fill_gaps(v, s);
    if (!varies) {
        v->scl_slope = s->slices[0].slope;
        v->scl_inter = s->slices[0].inter;
    }
    mp_vol_set_affine(v, s->affine);
    v->meta.qform_code = v->meta.sform_code = 1;
    char descr[200];
    snprintf(descr, sizeof descr, "%s %s", s->modality, s->description);
    snprintf(v->meta.descrip, sizeof v->meta.descrip, "%.80s", descr);
    *out = v;
    return MP_OK;
}

int mp_dicom_read(mp_vol_t **out, const char *path) {
    *out = NULL;
    mp_dicom_series_list_t *l;
    int rc = mp_dicom_scan(&l, path);
    if (rc) return rc;
    if (l->n == 1) {
        rc = mp_dicom_series_read(out, &l->series[0]);
        mp_dicom_series_list_free(l);
        return rc;
    }
    char msg[2048];
    size_t o = (size_t)snprintf(msg, sizeof msg, "%s holds %d series; choose one:", path, l->n);
    for (int i = 0; i < l->n && o < sizeof msg - 16; i++) {
        char d[400];
        mp_dicom_series_describe(&l->series[i], d, sizeof d);
        o += (size_t)snprintf(msg + o, sizeof msg - o, " [%s]", d);
    }
    mp_dicom_series_list_free(l);
    return mp_error_set(MP_ERR_MISMATCH, "%s", msg);
}
