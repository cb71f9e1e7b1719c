/* The training loop: a fresh run from a cache (plan overrides, spec, U-Net,
 * optimizer) or a resumed one from RUN/checkpoint_last, then steps of
 * loader -> forward/backward -> optimizer with the poly learning rate,
 * JSON-lines logging, epoch ends with validation and checkpoints, and the
 * stop flag polled between steps. See medpipe/train.h for the contract. */
#include "train/train_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TR_POLY_EXPONENT 0.9

void mp_train_opts_init(mp_train_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->optimizer = MP_OPT_SGD;
    o->weight_decay = -1;
    o->seed = 12345;
    o->val_every = 1;
    o->val_cases = -1;
    o->augment = 1;
    o->log_every = 1;
}

/* ---- setup ---- */

/* The cache's plan with the options' network overrides applied and checked. */
static int plan_with_overrides(mp_plan_t *p, const mp_train_opts_t *o) {
    if (o->batch > 0) p->batch_size = o->batch;
    if (o->patch_dhw[0] > 0 || o->patch_dhw[1] > 0 || o->patch_dhw[2] > 0)
        for (int a = 0; a < 3; a++) p->patch_dhw[a] = o->patch_dhw[a];
    int stages = o->n_stages > 0 ? o->n_stages : p->n_stages;
    if (stages > MP_PLAN_MAX_STAGES)
        return mp_error_set(MP_ERR_ARG, "%d stages: at most %d", stages, MP_PLAN_MAX_STAGES);
    if (o->base_features > 0 || stages != p->n_stages) {
        int64_t base = o->base_features > 0 ? o->base_features : p->features[0];
        int64_t cap = o->max_features > 0 ? o->max_features : 320;
        for (int s = 0; s < MP_PLAN_MAX_STAGES; s++) {
            int64_t f = base << s;
            p->features[s] = s < stages ? (int)(f < cap ? f : cap) : 0;
        }
    }
    p->n_stages = stages;
    p->memory_estimate_gb =
        mp_plan_memory_estimate(p->patch_dhw, p->n_stages, p->features, p->batch_size, p->num_channels,
                                p->num_classes) / 1e9;
    return mp_plan_check(p, "training plan (after overrides)");
}

static int fresh_settings(tr_t *t) {
    const mp_train_opts_t *o = t->o;
    tr_settings_t *s = &t->set;
    s->epochs = o->epochs > 0 ? o->epochs : 1000;
    s->iters_per_epoch = o->iters_per_epoch > 0 ? o->iters_per_epoch : 250;
    if (o->optimizer == MP_OPT_ADAMW) mp_opt_config_adamw(&s->opt);
    else mp_opt_config_sgd(&s->opt);
    if (o->lr > 0) s->opt.lr = o->lr;
    if (o->weight_decay >= 0) s->opt.weight_decay = o->weight_decay;
    s->seed = o->seed;
    int64_t n = t->cache.n_cases;
    s->val_cases = o->val_cases >= 0 ? o->val_cases : (n >= 2 ? (n / 5 > 1 ? n / 5 : 1) : 0);
    s->val_every = o->val_every > 0 ? o->val_every : 1;
    s->log_every = o->log_every > 0 ? o->log_every : 1;
    s->augment = o->augment;
    s->cache_cases = n;
    tr_ids_hash(&t->cache, s->cache_ids_hash);
    if (!(s->opt.lr > 0 && s->opt.lr < 100) || !(s->opt.weight_decay >= 0 && s->opt.weight_decay < 100))
        return mp_error_set(MP_ERR_ARG, "learning rate %g / weight decay %g out of range", s->opt.lr,
                            s->opt.weight_decay);
    return MP_OK;
}

static int create_net(tr_t *t, mp_opt_kind_t kind) {
    mp_unet_config_t c = t->spec.unet;
    c.threads = t->o->threads;
    int rc = tr_dist_local_batch(t);
    if (rc) return rc;
    c.batch = t->local_batch; /* model.json keeps the global batch */
    rc = mp_unet_create(&t->unet, &c);
    if (rc) return rc;
    if (kind != t->set.opt.kind) return mp_error_set(MP_ERR_INTERNAL, "optimizer kind disagrees with the settings");
    return mp_opt_init(&t->opt, &t->set.opt, mp_unet_param_count(t->unet));
}

/* CACHE/dataset.json (class names) into the run folder, for DICOM SEG
 * segment names at prediction; caches made before it was kept lack it. */
static int copy_dataset_json(const char *cache_dir, const char *run_dir) {
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s/dataset.json", cache_dir);
    snprintf(dst, sizeof dst, "%s/dataset.json", run_dir);
    if (!mp_file_is_regular(src)) return MP_OK;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = mp_file_read_all(src, &buf, &len);
    if (!rc) rc = mp_file_write_atomic(dst, buf, len);
    free(buf);
    return rc;
}

static int setup_fresh(tr_t *t) {
    if (mp_file_is_regular(t->path_state))
        return mp_error_set(MP_ERR_ARG, "%s: already holds a training run (%s); resume it or choose another folder",
                            t->o->run_dir, "checkpoint_last.state");
    if (t->rank == 0 && mp_file_is_regular(t->path_best) && remove(t->path_best) != 0) /* a stale best must not outlive its run */
        return mp_error_set(MP_ERR_IO, "%s: cannot remove the previous run's file", t->path_best);
    mp_plan_t plan = t->cache.plan;
    int rc = plan_with_overrides(&plan, t->o);
    if (!rc) rc = fresh_settings(t);
    if (!rc) rc = mp_model_spec_from_plan(&t->spec, &plan);
    if (rc) return rc;
    t->spec.unet.deep_supervision = t->o->deep_supervision ? 1 : 0;
    if ((t->rank == 0 && ((rc = mp_model_spec_write(t->o->run_dir, &t->spec)) ||
                          (rc = copy_dataset_json(t->o->cache_dir, t->o->run_dir)))) ||
        (rc = create_net(t, t->set.opt.kind)))
        return rc;
    mp_unet_init_weights(t->unet, t->set.seed);
    t->best = NAN;
    t->best_epoch = -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", t->o->run_dir);
    return t->rank == 0 ? mp_jsonl_open(&t->log, path, 0) : MP_OK;
}

static int setup_resume(tr_t *t) {
    mp_opt_kind_t kind = MP_OPT_SGD;
    if (!mp_file_is_regular(t->path_state))
        return mp_error_set(MP_ERR_IO, "%s: nothing to resume (no checkpoint_last.state)", t->o->run_dir);
    int rc = mp_model_spec_read(&t->spec, t->o->run_dir);
    if (!rc) rc = tr_load_settings(t, &kind);
    if (!rc) rc = tr_check_same_cache(t);
    if (rc) return rc;
    if (t->o->epochs > 0 && t->o->epochs != t->set.epochs) {
        if (t->o->epochs < t->pos.epoch + (t->pos.step_in_epoch > 0))
            return mp_error_set(MP_ERR_ARG, "%s: --epochs %lld but the run is already in epoch %lld",
                                t->o->run_dir, (long long)t->o->epochs, (long long)t->pos.epoch + 1);
        mp_log(MP_LOG_WARN, "%s: epochs %lld -> %lld: the poly learning rate is recomputed over the new length",
               t->o->run_dir, (long long)t->set.epochs, (long long)t->o->epochs);
        t->set.epochs = t->o->epochs;
    }
    if ((rc = create_net(t, kind)) || (rc = tr_load_last(t)) || (rc = tr_read_best(t))) return rc;
    t->saved_step = t->pos.global_step;
    char path[4200];
    snprintf(path, sizeof path, "%s/log.jsonl", t->o->run_dir);
    return t->rank == 0 ? mp_jsonl_open(&t->log, path, 1) : MP_OK;
}

static int cmp_ids(const void *a, const void *b, const mp_cache_t *c) {
    return strcmp(c->ids[*(const int64_t *)a], c->ids[*(const int64_t *)b]);
}

/* Sorted ids; the last val_cases are held out. (Insertion sort: the cache
 * already lists ids sorted, so this only guards the documented order.) */
static int make_split(tr_t *t) {
    int64_t n = t->cache.n_cases, nv = t->set.val_cases;
    if (nv >= n)
        return mp_error_set(MP_ERR_ARG, "%s: %lld validation cases leave none of its %lld for training",
                            t->o->cache_dir, (long long)nv, (long long)n);
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    if (!idx) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        int64_t j = i;
        idx[i] = i;
        while (j > 0 && cmp_ids(&idx[j - 1], &idx[j], &t->cache) > 0) {
            int64_t x = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = x;
            j--;
        }
    }
    t->train_idx = idx;
    t->n_train = n - nv;
    t->val_idx = idx + t->n_train;
    t->n_val = nv;
    return MP_OK;
}

static int create_loader(tr_t *t, int resume) {
    mp_loader_opts_t lo;
    mp_loader_opts_init(&lo);
    lo.cache = &t->cache;
    lo.cases = t->train_idx;
    lo.n_cases = t->n_train;
    lo.batch = t->local_batch; /* this rank's disjoint share of the global batch */
    lo.global_batch = t->spec.unet.batch;
    lo.first_sample = (int64_t)t->rank * t->local_batch;
    for (int a = 0; a < 3; a++) lo.patch_dhw[a] = (int)t->spec.unet.patch[a];
    lo.iters_per_epoch = t->set.iters_per_epoch;
    lo.seed = t->set.seed;
    lo.augment = t->set.augment;
    if (!lo.augment) mp_aug_opts_none(&lo.aug);
    lo.workers = t->o->workers > 0 ? t->o->workers : 0;
    int rc = mp_loader_create(&t->loader, &lo);
    if (!rc && resume && (t->pos.epoch > 0 || t->pos.step_in_epoch > 0))
        rc = mp_loader_seek(t->loader, t->pos.epoch, t->pos.step_in_epoch);
    return rc;
}

/* ---- events: log line + progress callback ---- */

static void emit(tr_t *t, const mp_train_event_t *ev) {
    if (t->o->progress && t->rank == 0) t->o->progress(t->o->progress_user, ev);
}

static void event_base(const tr_t *t, mp_train_event_t *ev, mp_train_event_kind_t kind, int64_t first) {
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->epoch = t->pos.epoch;
    ev->epochs = t->set.epochs;
    ev->step = t->pos.global_step;
    ev->total_steps = t->set.epochs * t->set.iters_per_epoch;
    ev->first_step = first;
    ev->num_classes = t->spec.plan.num_classes;
}

static int log_start(tr_t *t, int resume) {
    const mp_unet_config_t *c = mp_unet_config(t->unet);
    char patch[64];
    snprintf(patch, sizeof patch, "%lldx%lldx%lld", (long long)c->patch[0], (long long)c->patch[1],
             (long long)c->patch[2]);
    return TR_RECORD(t, MP_JF_STR("event", resume ? "resume" : "start"),
                     MP_JF_INT("epoch", t->pos.epoch), MP_JF_INT("step", t->pos.global_step),
                     MP_JF_INT("epochs", t->set.epochs), MP_JF_INT("iters_per_epoch", t->set.iters_per_epoch),
                     MP_JF_INT("batch", t->spec.unet.batch), MP_JF_INT("ranks", t->size),
                     MP_JF_INT("local_batch", c->batch), MP_JF_STR("patch_dhw", patch),
                     MP_JF_INT("stages", c->n_stages), MP_JF_INT("features0", c->features[0]),
                     MP_JF_INT("params", mp_unet_param_count(t->unet)),
                     MP_JF_STR("optimizer", t->set.opt.kind == MP_OPT_ADAMW ? "adamw" : "sgd"),
                     MP_JF_F64("lr", t->set.opt.lr), MP_JF_INT("threads", t->o->threads),
                     MP_JF_STR("engine", mp_unet_uses_ref(t->unet) ? "ref" : "cpu"),
                     MP_JF_INT("train_cases", t->n_train), MP_JF_INT("val_cases", t->n_val),
                     MP_JF_BOOL("deep_supervision", c->deep_supervision), MP_JF_BOOL("augment", t->set.augment));
}

/* Every rank must hold the same parameters after an update (debug aid,
 * and at every epoch end): a line in the log records the hash. */
static int check_replicas(tr_t *t) {
    char hex[17];
    int rc = tr_dist_check_params(t, hex);
    if (!rc)
        rc = TR_RECORD(t, MP_JF_STR("event", "replicas"), MP_JF_INT("step", t->pos.global_step),
                       MP_JF_INT("ranks", t->size), MP_JF_STR("params_fnv1a", hex), MP_JF_BOOL("agree", 1));
    return rc;
}

/* ---- validation and epoch end ---- */

static int run_validation(tr_t *t, int64_t epoch, int64_t first) {
    const int K = t->spec.plan.num_classes;
    double *dice = malloc((size_t)K * sizeof *dice), mean = NAN, t0 = mp_time_now();
    if (!dice) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    int rc = tr_validate(t, dice, &mean);
    int improved = !rc && isfinite(mean) && (isnan(t->best) || mean > t->best);
    if (improved) {
        t->best = mean;
        t->best_epoch = epoch;
        rc = tr_save_best(t, mean, "mean_fg_dice");
    }
    if (!rc) {
        t->last_dice = mean;
        cJSON *r = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        if (r && arr) {
            cJSON_AddStringToObject(r, "event", "validation");
            cJSON_AddNumberToObject(r, "epoch", (double)epoch);
            cJSON_AddNumberToObject(r, "step", (double)t->pos.global_step);
            for (int k = 0; k < K; k++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(dice[k]));
            cJSON_AddItemToObject(r, "dice", arr);
            arr = NULL;
            cJSON_AddNumberToObject(r, "mean_fg_dice", mean);
            cJSON_AddBoolToObject(r, "best", improved);
            cJSON_AddNumberToObject(r, "cases", (double)t->n_val);
            cJSON_AddNumberToObject(r, "time_s", mp_time_now() - t0);
            rc = t->rank == 0 ? mp_jsonl_write(&t->log, r) : MP_OK;
        }
        cJSON_Delete(arr);
        cJSON_Delete(r);
        mp_train_event_t ev;
        event_base(t, &ev, MP_TRAIN_EV_VALIDATION, first);
        ev.epoch = epoch;
        ev.class_dice = dice;
        ev.mean_fg_dice = mean;
        ev.improved = improved;
        emit(t, &ev);
    }
    free(dice);
    return rc;
}

static int epoch_end(tr_t *t, double epoch_s, int stopping, int64_t first) {
    tr_pos_t *p = &t->pos;
    int64_t epoch = p->epoch;
    double mean = p->epoch_loss_n ? p->epoch_loss_sum / (double)p->epoch_loss_n : NAN;
    int last = epoch + 1 == t->set.epochs, due = (epoch + 1) % t->set.val_every == 0 || last;
    int rc = TR_RECORD(t, MP_JF_STR("event", "epoch"), MP_JF_INT("epoch", epoch),
                       MP_JF_INT("step", p->global_step), MP_JF_F64("mean_loss", mean),
                       MP_JF_INT("skipped", p->skipped), MP_JF_F64("time_s", epoch_s));
    mp_train_event_t ev;
    event_base(t, &ev, MP_TRAIN_EV_EPOCH, first);
    ev.loss = mean;
    emit(t, &ev);
    p->epoch++;
    p->step_in_epoch = 0;
    p->epoch_loss_sum = 0;
    p->epoch_loss_n = 0;
    if (!rc && t->set.val_cases == 0 && isfinite(mean) && (isnan(t->best) || -mean > t->best)) {
        t->best = -mean; /* lowest mean training loss */
        t->best_epoch = epoch;
        rc = tr_save_best(t, mean, "train_loss");
    } else if (!rc && t->set.val_cases > 0 && due) {
        if (stopping && !last) p->val_pending = 1; /* a stop should not wait for it; resume runs it first */
        else rc = run_validation(t, epoch, first);
    }
    if (!rc && t->size > 1 && !t->o->check_replicas) rc = check_replicas(t);
    return rc ? rc : tr_save_last(t);
}

/* ---- one step ---- */

typedef struct {
    double step_s, wait_s;
    int64_t steps;
} tr_acc_t;

static int train_step(tr_t *t, tr_acc_t *acc, int64_t first) {
    tr_pos_t *p = &t->pos;
    double t0 = mp_time_now(), wait = 0, loss = NAN;
    const mp_batch_t *b = NULL;
    int rc = mp_loader_next(t->loader, &b, &wait);
    if (rc) return rc;
    if (b->epoch != p->epoch || b->step != p->step_in_epoch)
        return mp_error_set(MP_ERR_INTERNAL, "loader gave batch (%lld, %lld), expected (%lld, %lld)",
                            (long long)b->epoch, (long long)b->step, (long long)p->epoch,
                            (long long)p->step_in_epoch);
    rc = mp_unet_forward_backward(t->unet, &loss, b->img, b->seg, NULL);
    /* src/nn refuses a non-finite loss before its backward pass (gradients
     * then untouched): for training that is a skipped step, not an error */
    int bad_loss = rc == MP_ERR_NONFINITE;
    if (rc && !bad_loss) return rc;
    if ((rc = tr_dist_after_backward(t, &loss, &bad_loss))) return rc;
    int64_t n = mp_unet_param_count(t->unet), total = t->set.epochs * t->set.iters_per_epoch;
    double lr = mp_lr_poly(t->set.opt.lr, p->global_step, total, TR_POLY_EXPONENT);
    double gn = bad_loss ? NAN : mp_grad_norm(mp_unet_grads(t->unet), n);
    rc = MP_OK;
    if (bad_loss) loss = NAN;
    int skipped = !isfinite(loss) || !isfinite(gn);
    if (skipped) {
        p->skipped++; /* the weights never see a non-finite gradient */
        mp_log(MP_LOG_WARN, "step %lld: non-finite loss %g or gradient norm %g: update skipped",
               (long long)p->global_step, loss, gn);
    } else {
        mp_opt_step_norm(&t->opt, mp_unet_params(t->unet), mp_unet_grads(t->unet), lr, gn);
        p->epoch_loss_sum += loss;
        p->epoch_loss_n++;
    }
    p->last_loss = loss;
    p->step_in_epoch++;
    p->global_step++;
    double step_s = mp_time_now() - t0, pps = step_s > 0 ? (double)t->spec.unet.batch / step_s : 0;
    acc->step_s += step_s;
    acc->wait_s += wait;
    acc->steps++;
    if (skipped || p->global_step % t->set.log_every == 0 || p->global_step == first + 1)
        rc = TR_RECORD(t, MP_JF_STR("event", "step"), MP_JF_INT("epoch", p->epoch),
                       MP_JF_INT("step", p->global_step), MP_JF_F64("loss", loss), MP_JF_F64("lr", lr),
                       MP_JF_F64("grad_norm", gn), MP_JF_F64("data_wait_s", wait), MP_JF_F64("step_s", step_s),
                       MP_JF_F64("patches_per_s", pps), MP_JF_BOOL("skipped", skipped));
    mp_train_event_t ev;
    event_base(t, &ev, MP_TRAIN_EV_STEP, first);
    ev.loss = loss;
    ev.lr = lr;
    ev.grad_norm = gn;
    ev.data_wait_s = wait;
    ev.step_s = step_s;
    ev.patches_per_s = pps;
    ev.skipped = skipped;
    emit(t, &ev);
    if (!rc && t->o->check_replicas && t->size > 1) rc = check_replicas(t);
    return rc;
}

/* ---- the run ---- */

/* With several ranks the flag seen by any rank at the last step counts, so
 * that all stop after the same step. */
static int stop_requested(const tr_t *t) { return t->size > 1 ? t->stop_agreed : t->o->stop && *t->o->stop; }

static int loop(tr_t *t, tr_acc_t *acc) {
    int64_t first = t->pos.global_step;
    int rc = MP_OK;
    if (t->pos.val_pending) { /* the stop skipped it at the last epoch end */
        if ((rc = run_validation(t, t->pos.epoch - 1, first))) return rc;
        t->pos.val_pending = 0;
    }
    double t_epoch = mp_time_now();
    while (t->pos.epoch < t->set.epochs) {
        if (stop_requested(t)) {
            if (t->saved_step != t->pos.global_step && (rc = tr_save_last(t))) return rc;
            TR_RECORD(t, MP_JF_STR("event", "stop"), MP_JF_INT("epoch", t->pos.epoch),
                      MP_JF_INT("step", t->pos.global_step));
            return MP_TRAIN_STOPPED;
        }
        if ((rc = train_step(t, acc, first))) return rc;
        if (t->pos.step_in_epoch == t->set.iters_per_epoch) {
            if ((rc = epoch_end(t, mp_time_now() - t_epoch, stop_requested(t), first))) return rc;
            t_epoch = mp_time_now();
        }
    }
    if (t->saved_step != t->pos.global_step && (rc = tr_save_last(t))) return rc;
    TR_RECORD(t, MP_JF_STR("event", "end"), MP_JF_INT("epoch", t->pos.epoch),
              MP_JF_INT("step", t->pos.global_step), MP_JF_F64("best", t->best),
              MP_JF_INT("best_epoch", t->best_epoch));
    return MP_OK;
}

static void tr_deinit(tr_t *t) {
    tr_dist_deinit(t);
    mp_loader_free(t->loader);
    mp_opt_deinit(&t->opt);
    mp_unet_free(t->unet);
    mp_pool_free(t->pool);
    mp_jsonl_close(&t->log);
    free(t->train_idx);
    if (t->cache_open) mp_cache_close(&t->cache);
}

static void fill_result(const tr_t *t, const tr_acc_t *acc, mp_train_result_t *res) {
    res->epoch = t->pos.epoch;
    res->step = t->pos.global_step;
    res->steps_run = acc->steps;
    res->skipped = t->pos.skipped;
    res->last_loss = t->pos.last_loss;
    res->best_dice = t->set.val_cases > 0 ? t->best : NAN;
    res->best_epoch = t->best_epoch;
    res->last_dice = t->last_dice;
    res->mean_step_s = acc->steps ? acc->step_s / (double)acc->steps : 0;
    res->mean_data_wait_s = acc->steps ? acc->wait_s / (double)acc->steps : 0;
    res->error_on_all_ranks = t->setup_failed_all;
}

int mp_train_run(const mp_train_opts_t *o, mp_train_result_t *res) {
    if (!o || !o->cache_dir || !o->run_dir)
        return mp_error_set(MP_ERR_ARG, "training needs a cache folder and a run folder");
    if (strlen(o->run_dir) > 4000) return mp_error_set(MP_ERR_ARG, "run folder path longer than 4000 bytes");
    tr_t *t = calloc(1, sizeof *t);
    if (!t) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    t->o = o;
    t->log.fd = -1;
    t->saved_step = -1;
    t->last_dice = NAN;
    t->pos.last_loss = NAN;
    t->rank = mp_dist_rank();
    t->size = mp_dist_size();
    snprintf(t->path_last, sizeof t->path_last, "%s/checkpoint_last.safetensors", o->run_dir);
    snprintf(t->path_state, sizeof t->path_state, "%s/checkpoint_last.state", o->run_dir);
    snprintf(t->path_best, sizeof t->path_best, "%s/checkpoint_best.safetensors", o->run_dir);
    tr_acc_t acc = {0, 0, 0};
    int rc = mp_cache_open(&t->cache, o->cache_dir);
    t->cache_open = rc == MP_OK;
    if (!rc) rc = o->resume ? setup_resume(t) : setup_fresh(t);
    if (!rc) rc = make_split(t);
    if (!rc) rc = create_loader(t, o->resume);
    if (!rc && !(t->pool = mp_pool_create(o->threads))) rc = mp_error_set(MP_ERR_NOMEM, "cannot start threads");
    rc = tr_dist_agree_setup(t, rc);
    if (!rc) rc = tr_dist_start(t);
    if (!rc) rc = log_start(t, o->resume);
    if (!rc) rc = loop(t, &acc);
    if (res) {
        memset(res, 0, sizeof *res);
        fill_result(t, &acc, res);
    }
    tr_deinit(t);
    free(t);
    return rc;
}
