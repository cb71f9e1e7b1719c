/* The per-image predict pipeline: the preprocessing training and inference
 * share (float32, reorient, crop to non-zero, normalize, resample), then
 * the sliding window with scores resampled back to the cropped grid, the
 * keep-largest post-processing, uncrop and reorientation undone, so the
 * label map lands on the input's own grid with its exact affine. */
#include "infer_internal.h"

#include "medpipe/io.h"
#include "medpipe/vol_morph.h"

#include <stdlib.h>

void mp_infer_plan_init(mp_infer_plan_t *p) {
    memset(p, 0, sizeof *p);
    p->crop_nonzero = 1;
    p->normalize_first = 1;
    for (int c = 0; c < MP_INFER_MAX_CHANNELS; c++) p->norm[c].kind = MP_INFER_NORM_ZSCORE;
}

static int check_plan(const mp_infer_plan_t *plan, int64_t channels) {
    if (!plan) return mp_error_set(MP_ERR_ARG, "preprocess: no plan");
    if (channels < 1 || channels > MP_INFER_MAX_CHANNELS)
        return mp_error_set(MP_ERR_UNSUPPORTED, "preprocess: %lld channels (at most %d)", (long long)channels,
                            MP_INFER_MAX_CHANNELS);
    if (plan->num_channels && plan->num_channels != channels)
        return mp_error_set(MP_ERR_MISMATCH, "preprocess: image has %lld channels, the plan %d", (long long)channels,
                            plan->num_channels);
    for (int c = 0; c < channels; c++) {
        const mp_infer_norm_t *n = &plan->norm[c];
        if ((unsigned)n->kind > MP_INFER_NORM_CT)
            return mp_error_set(MP_ERR_ARG, "preprocess: channel %d: unknown normalization %d", c, (int)n->kind);
        if (n->kind == MP_INFER_NORM_CT && !(n->ct_lo <= n->ct_hi && isfinite(n->ct_mean) && n->ct_std >= 0))
            return mp_error_set(MP_ERR_ARG, "preprocess: channel %d: CT parameters [%g, %g] mean %g std %g", c,
                                n->ct_lo, n->ct_hi, n->ct_mean, n->ct_std);
    }
    for (int a = 0; a < 3; a++)
        if (!isfinite(plan->target_spacing[a]))
            return mp_error_set(MP_ERR_ARG, "preprocess: target spacing %d is not finite", a);
    return MP_OK;
}

/* nnU-Net's non-zero mask: voxels non-zero in any channel, plus the zero
 * regions not connected (6-neighbourhood) to the border, as
 * scipy.ndimage.binary_fill_holes fills them. */
static int nonzero_mask_filled(mp_vol_t **out, const mp_vol_t *v) {
    int64_t d[4] = {v->dim[0], v->dim[1], v->dim[2], 1}, nv = mp_vol_voxels(v), ncomp = 0;
    const float *x = v->data;
    int rc = mp_vol_create(out, d, MP_DTYPE_U8);
    if (rc) return rc;
    uint16_t *keys = mp_alloc((size_t)nv * sizeof *keys);
    uint32_t *lab = mp_alloc((size_t)nv * sizeof *lab);
    uint8_t *border = NULL, *m = (*out)->data;
    if (!keys || !lab) {
        rc = mp_error_set(MP_ERR_NOMEM, "preprocess: out of memory for the non-zero mask");
        goto done;
    }
    for (int64_t i = 0; i < nv; i++) {
        int nz = 0;
        for (int64_t c = 0; c < v->dim[3]; c++) nz |= x[c * nv + i] != 0;
        keys[i] = (uint16_t)!nz;
    }
    if ((rc = mp_cc_label_keys(lab, &ncomp, NULL, keys, v->dim, MP_CONN_6))) goto done;
    border = calloc((size_t)ncomp + 1, 1);
    if (!border) {
        rc = mp_error_set(MP_ERR_NOMEM, "preprocess: out of memory for the non-zero mask");
        goto done;
    }
    for (int64_t z = 0; z < d[2]; z++)
        for (int64_t y = 0; y < d[1]; y++)
            for (int64_t xx = 0; xx < d[0]; xx++) {
                int edge = z == 0 || z == d[2] - 1 || y == 0 || y == d[1] - 1 || xx == 0 || xx == d[0] - 1;
                if (edge) border[lab[(z * d[1] + y) * d[0] + xx]] = 1;
            }
    for (int64_t i = 0; i < nv; i++) m[i] = keys[i] == 0 || !border[lab[i]];
done:
    mp_free(keys);
    mp_free(lab);
    free(border);
    if (rc) {
        mp_vol_free(*out);
        *out = NULL;
    }
    return rc;
}

static int normalize(mp_vol_t *v, const mp_infer_plan_t *plan, mp_pool_t *pool) {
    mp_vol_t *mask = NULL;
    int rc = MP_OK;
    for (int c = 0; c < v->dim[3] && !mask; c++)
        if (plan->norm[c].kind == MP_INFER_NORM_ZSCORE && plan->norm[c].use_mask)
            if ((rc = nonzero_mask_filled(&mask, v))) return rc;
    int64_t nv = mp_vol_voxels(v);
    for (int64_t c = 0; c < v->dim[3] && rc == MP_OK; c++) {
        const mp_infer_norm_t *n = &plan->norm[c];
        mp_vol_t *view = NULL;
        int64_t d[4] = {v->dim[0], v->dim[1], v->dim[2], 1};
        if ((rc = mp_vol_create_view(&view, d, MP_DTYPE_F32, (float *)v->data + c * nv))) break;
        if (n->kind == MP_INFER_NORM_ZSCORE)
            rc = mp_vol_normalize_zscore(view, n->use_mask ? mask : NULL, n->use_mask, pool);
        else if (n->kind == MP_INFER_NORM_CT)
            rc = mp_vol_normalize_ct(view, n->ct_lo, n->ct_hi, n->ct_mean, n->ct_std, pool);
        mp_vol_free(view);
        if (rc) rc = mp_error_wrap(rc, "preprocess: channel %lld: ", (long long)c);
    }
    mp_vol_free(mask);
    return rc;
}

/* Replaces *v by next (when the step made one). */
static void take(mp_vol_t **v, mp_vol_t *next) {
    if (next && next != *v) {
        mp_vol_free(*v);
        *v = next;
    }
}

static int resample(mp_vol_t **v, const mp_infer_prep_t *p, mp_pool_t *pool) {
    if (p->pre_dim[0] == p->crop_dim[0] && p->pre_dim[1] == p->crop_dim[1] && p->pre_dim[2] == p->crop_dim[2])
        return MP_OK; /* nnU-Net leaves the data alone when the shape does not change */
    mp_vol_t *r = NULL;
    int rc = mp_vol_resample_shape(&r, *v, p->pre_dim, MP_INTERP_LINEAR, pool);
    take(v, r);
    return rc;
}

static int to_float(mp_vol_t **out, const mp_vol_t *image) {
    int rc = mp_vol_to_f32(out, image);
    if (rc) return rc;
    float *x = (*out)->data;
    int64_t n = mp_vol_elems(*out);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) x[i] = 0; /* a NaN would spread through every window that sees it */
    return MP_OK;
}

int mp_infer_preprocess(mp_vol_t **out, mp_infer_prep_t *prep, const mp_vol_t *image, const mp_infer_plan_t *plan,
                        mp_pool_t *pool) {
    *out = NULL;
    if (!image || !image->data) return mp_error_set(MP_ERR_ARG, "preprocess: no image");
    int rc = check_plan(plan, image->dim[3]);
    if (rc) return rc;
    mp_infer_prep_t p;
    memset(&p, 0, sizeof p);
    mp_vol_t *v = NULL, *next = NULL;
    if ((rc = to_float(&v, image))) return rc;
    for (int a = 0; a < 3; a++) p.orig_dim[a] = image->dim[a];
    if (plan->orientation[0]) {
        rc = mp_vol_reorient(&next, v, plan->orientation, &p.reorient);
        take(&v, next);
        if (rc) goto fail;
        p.reoriented = 1;
    }
    int64_t count = 0;
    for (int a = 0; a < 3; a++) {
        p.ro_dim[a] = v->dim[a];
        p.box.lo[a] = 0;
        p.box.hi[a] = v->dim[a];
    }
    if (plan->crop_nonzero) {
        mp_box_t box;
        if ((rc = mp_vol_bbox_nonzero(v, 0, &box, &count))) goto fail;
        if (count > 0) p.box = box; /* an all-zero image is kept whole */
    }
    int whole = 1;
    for (int a = 0; a < 3; a++) whole &= p.box.lo[a] == 0 && p.box.hi[a] == v->dim[a];
    if (!whole) {
        rc = mp_vol_crop(&next, v, &p.box);
        take(&v, next);
        if (rc) goto fail;
    }
    double ts[3];
    for (int a = 0; a < 3; a++) {
        p.crop_dim[a] = v->dim[a];
        ts[a] = plan->target_spacing[a] > 0 ? plan->target_spacing[a] : v->spacing[a];
    }
    if ((rc = mp_resample_dims_for_spacing(v, ts, p.pre_dim))) goto fail;
    if (plan->normalize_first) {
        if ((rc = normalize(v, plan, pool)) || (rc = resample(&v, &p, pool))) goto fail;
    } else {
        if ((rc = resample(&v, &p, pool)) || (rc = normalize(v, plan, pool))) goto fail;
    }
    if (prep) *prep = p;
    *out = v;
    return MP_OK;
fail:
    mp_vol_free(v);
    return rc;
}

static int check_net(const mp_infer_net_t *net, const mp_infer_plan_t *plan, const mp_vol_t *image) {
    if (!net || !plan || !image) return mp_error_set(MP_ERR_ARG, "predict: missing network, plan or image");
    if (plan->num_classes && plan->num_classes != net->num_classes)
        return mp_error_set(MP_ERR_MISMATCH, "predict: plan has %d classes, the network %d", plan->num_classes,
                            net->num_classes);
    for (int a = 0; a < 3; a++)
        if (plan->patch_dhw[a] && plan->patch_dhw[a] != net->patch_dhw[a])
            return mp_error_set(MP_ERR_MISMATCH, "predict: plan patch %dx%dx%d, network patch %dx%dx%d",
                                plan->patch_dhw[0], plan->patch_dhw[1], plan->patch_dhw[2], net->patch_dhw[0],
                                net->patch_dhw[1], net->patch_dhw[2]);
    if (image->dim[3] != net->in_channels)
        return mp_error_set(MP_ERR_MISMATCH, "predict: image has %lld channels, the network takes %d",
                            (long long)image->dim[3], net->in_channels);
    return MP_OK;
}

/* Back from the cropped, reoriented grid to the image's own: uncrop with
 * background (for probabilities, class 0 certain outside the box), undo
 * the reorientation, and take the image's affine exactly. */
static int restore(mp_vol_t **v, const mp_infer_prep_t *p, const mp_vol_t *image, int is_probs) {
    mp_vol_t *next = NULL;
    int whole = 1, rc = MP_OK;
    for (int a = 0; a < 3; a++) whole &= p->box.lo[a] == 0 && p->box.hi[a] == p->ro_dim[a];
    if (!whole) {
        rc = mp_vol_uncrop(&next, *v, &p->box, p->ro_dim, 0);
        take(v, next);
        if (rc) return rc;
        if (is_probs) {
            mp_vol_t *u = *v;
            const uint8_t one_u8 = 255;
            for (int64_t z = 0; z < u->dim[2]; z++)
                for (int64_t y = 0; y < u->dim[1]; y++)
                    for (int64_t x = 0; x < u->dim[0]; x++) {
                        if (z >= p->box.lo[2] && z < p->box.hi[2] && y >= p->box.lo[1] && y < p->box.hi[1] &&
                            x >= p->box.lo[0] && x < p->box.hi[0])
                            continue;
                        int64_t i = (z * u->dim[1] + y) * u->dim[0] + x;
                        if (u->dtype == MP_DTYPE_F32) ((float *)u->data)[i] = 1.0f;
                        else ((uint8_t *)u->data)[i] = one_u8;
                    }
        }
    }
    if (p->reoriented) {
        rc = mp_vol_reorient_undo(&next, *v, &p->reorient);
        take(v, next);
        if (rc) return rc;
    }
    mp_vol_t *u = *v;
    for (int a = 0; a < 3; a++)
        if (u->dim[a] != image->dim[a])
            return mp_error_set(MP_ERR_INTERNAL, "predict: output axis %d has %lld voxels, the image %lld", a,
                                (long long)u->dim[a], (long long)image->dim[a]);
    mp_vol_set_affine(u, image->affine);
    mp_vol_meta_init(&u->meta);
    u->meta.qform_code = image->meta.qform_code;
    u->meta.sform_code = image->meta.sform_code;
    u->meta.xyzt_units = image->meta.xyzt_units;
    u->scl_slope = 1;
    u->scl_inter = 0;
    return MP_OK;
}

int mp_infer_predict(mp_infer_result_t *res, const mp_vol_t *image, const mp_infer_net_t *net,
                     const mp_infer_plan_t *plan, const mp_infer_opts_t *opts, mp_infer_probs_t probs,
                     mp_pool_t *pool) {
    memset(res, 0, sizeof *res);
    int rc = check_net(net, plan, image);
    if (rc) return rc;
    mp_vol_t *pre = NULL;
    mp_infer_prep_t prep;
    double t0 = mp_time_now();
    if ((rc = mp_infer_preprocess(&pre, &prep, image, plan, pool))) return mp_error_wrap(rc, "predict: ");
    double t1 = mp_time_now();
    rc = mp_infer_predict_grid(res, pre, net, opts, prep.crop_dim, probs, pool);
    mp_vol_free(pre);
    if (rc) return rc;
    double t2 = mp_time_now();
    if (plan->keep_largest)
        rc = mp_vol_keep_largest(res->labels, MP_CONN_26, NULL, 0, plan->keep_largest_fg_as_one, NULL);
    if (rc == MP_OK) rc = restore(&res->labels, &prep, image, 0);
    if (rc == MP_OK && res->probs) rc = restore(&res->probs, &prep, image, 1);
    if (rc) {
        mp_infer_result_deinit(res);
        return mp_error_wrap(rc, "predict: ");
    }
    mp_log(MP_LOG_DEBUG,
           "predict: preprocess %.3f s, window + resample back %.3f s (sliding window %.3f s, forward %.3f s in %lld "
           "calls), post-process %.3f s",
           t1 - t0, t2 - t1, res->stats.t_total, res->stats.t_forward, (long long)res->stats.forward_calls,
           mp_time_now() - t2);
    return MP_OK;
}

int mp_infer_read_channels(mp_vol_t **out, const char *const *paths, int n) {
    *out = NULL;
    mp_vol_t *all = NULL;
    int rc = MP_OK;
    for (int i = 0; i < n && rc == MP_OK; i++) {
        mp_vol_t *v = NULL, *f = NULL;
        if ((rc = mp_image_read(&v, paths[i]))) break;
        if (n == 1) {
            all = v;
            break;
        }
        if (v->dim[3] != 1) {
            rc = mp_error_set(MP_ERR_UNSUPPORTED, "%s: has %lld channels; give one file per channel", paths[i],
                              (long long)v->dim[3]);
        } else if (!all) {
            int64_t d[4] = {v->dim[0], v->dim[1], v->dim[2], n};
            if ((rc = mp_vol_create(&all, d, MP_DTYPE_F32)) == MP_OK) {
                mp_vol_set_affine(all, v->affine);
                all->meta = v->meta;
            }
        } else {
            for (int a = 0; a < 3 && rc == MP_OK; a++)
                if (v->dim[a] != all->dim[a])
                    rc = mp_error_set(MP_ERR_MISMATCH, "%s: axis %d has %lld voxels, %s has %lld", paths[i], a,
                                      (long long)v->dim[a], paths[0], (long long)all->dim[a]);
            for (int r = 0; r < 3 && rc == MP_OK; r++)
                for (int c = 0; c < 4 && rc == MP_OK; c++)
                    if (fabs(v->affine[r][c] - all->affine[r][c]) > 1e-4 * (1 + fabs(all->affine[r][c])))
                        rc = mp_error_set(MP_ERR_MISMATCH, "%s: affine differs from %s's", paths[i], paths[0]);
        }
        if (rc == MP_OK && (rc = mp_vol_to_f32(&f, v)) == MP_OK)
            memcpy((float *)all->data + (int64_t)i * mp_vol_voxels(all), f->data, (size_t)mp_vol_voxels(all) * 4);
        mp_vol_free(f);
        mp_vol_free(v);
    }
    if (rc) {
        mp_vol_free(all);
        return rc;
    }
    *out = all;
    return MP_OK;
}

int mp_infer_predict_files(const char *const *in_paths, int n_in, const char *out_labels, const char *out_probs,
                           mp_infer_probs_t probs, const mp_infer_net_t *net, const mp_infer_plan_t *plan,
                           const mp_infer_opts_t *opts, mp_pool_t *pool, mp_infer_stats_t *stats) {
    if (!in_paths || n_in < 1 || n_in > MP_INFER_MAX_CHANNELS || !out_labels)
        return mp_error_set(MP_ERR_ARG, "predict: need 1..%d input files and an output path", MP_INFER_MAX_CHANNELS);
    if (!out_probs) probs = MP_INFER_PROBS_NONE;
    else if (probs == MP_INFER_PROBS_NONE) probs = MP_INFER_PROBS_F32;
    mp_vol_t *img = NULL;
    double t0 = mp_time_now();
    int rc = mp_infer_read_channels(&img, in_paths, n_in);
    if (rc) return rc;
    mp_log(MP_LOG_DEBUG, "predict: %s: read %.3f s", in_paths[0], mp_time_now() - t0);
    mp_infer_result_t res;
    rc = mp_infer_predict(&res, img, net, plan, opts, probs, pool);
    mp_vol_free(img);
    if (rc) return mp_error_wrap(rc, "%s: ", in_paths[0]);
    if (stats) *stats = res.stats;
    t0 = mp_time_now();
    rc = mp_image_write(out_labels, res.labels, NULL);
    double t1 = mp_time_now();
    if (rc == MP_OK && out_probs) rc = mp_image_write(out_probs, res.probs, NULL);
    mp_log(MP_LOG_DEBUG, "predict: write labels %.3f s, probabilities %.3f s", t1 - t0, mp_time_now() - t1);
    mp_infer_result_deinit(&res);
    return rc;
}
