/* medpipe train: trains a U-Net on a preprocessing cache into a run folder,
 * with a progress bar, validation lines, Ctrl-C that saves a resumable
 * checkpoint (exit 130) and --resume. The work is mp_train_run. */
#include "cli/cli.h"
#include "medpipe/core.h"
#include "medpipe/dist.h"
#include "medpipe/train.h"

#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe train CACHE --out RUN [options]\n\n"
            "Trains nnU-Net's plain U-Net on CACHE (made by 'medpipe preprocess') and writes RUN/: plan.json and\n"
            "model.json (the network), log.jsonl (one JSON line per step, epoch and validation),\n"
            "checkpoint_last.safetensors + checkpoint_last.state (every epoch end and on Ctrl-C) and\n"
            "checkpoint_best.safetensors (best validation mean foreground Dice). The cases with the last\n"
            "--val-cases ids (sorted) are held out and validated by sliding window every --val-every epochs\n"
            "and at the end; with --val-cases 0 checkpoint_best follows the lowest mean training loss.\n"
            "Ctrl-C finishes the current step, saves checkpoint_last and exits 130; --resume continues exactly\n"
            "(same weights as an uninterrupted run with the same --threads).\n\n"
            "Data parallel: 'mpirun -np N medpipe train ...' trains one model on N processes. --batch is the\n"
            "global batch (divisible by N; each rank takes batch/N disjoint patches), gradients are averaged\n"
            "over the ranks, rank 0 alone writes RUN/, validation cases are shared out, and --threads defaults\n"
            "to the CPUs per rank on the node. A run resumes with any N dividing its batch.\n"
            "MEDPIPE_CHECK_REPLICAS=1 checks after every step that all ranks hold the same weights.\n\n"
            "options:\n"
            "  --out RUN                run folder (created)\n"
            "  --epochs E               epochs (default 1000; with --resume: extend the run to E)\n"
            "  --iters-per-epoch I      steps per epoch (default 250)\n"
            "  --batch B                patches per step (default: the plan's)\n"
            "  --patch D,H,W            patch size (default: the plan's; multiples of 2^(stages-1))\n"
            "  --features BASE[,CAP]    features of stage s = min(BASE * 2^s, CAP) (default: the plan's; CAP 320)\n"
            "  --stages S               U-Net stages (default: the plan's)\n"
            "  --optimizer sgd|adamw    sgd: nnU-Net's (lr 1e-2, Nesterov 0.99, wd 3e-5); adamw: lr 1e-3, wd 0.01\n"
            "  --lr X                   initial learning rate (poly decay, exponent 0.9, over all steps)\n"
            "  --weight-decay X         weight decay (default: the optimizer's)\n"
            "  --seed S                 weights and batches (default 12345)\n"
            "  --threads T              compute threads per process (default: all CPUs, or CPUs / ranks)\n"
            "  --workers W              loader threads (default: 1; 0 = in the training thread)\n"
            "  --val-cases N            held-out cases (default: 1/5 of the cases, at least 1)\n"
            "  --val-every K            validate every K epochs (default 1)\n"
            "  --log-every K            a log.jsonl step line every K steps (default 1)\n"
            "  --deep-supervision       nnU-Net's multi-scale loss\n"
            "  --no-augment             patches only, no augmentation\n"
            "  --resume                 continue RUN from checkpoint_last with the run's own settings (only\n"
            "                           --epochs, --threads, --workers and --quiet apply)\n"
            "  --quiet                  no progress output\n"
            "  --help                   this text\n\n"
            "exit status: 0 done, 1 failure, 2 usage, 130 stopped by Ctrl-C (resumable)\n");
}

typedef struct {
    mp_train_opts_t t;
    int quiet;
    const char *fixed; /* an option given that --resume cannot honour */
} tr_cli_t;

static int int_opt(const char *a, const char *v, int64_t lo, int64_t hi, int64_t *out) {
    if (mp_cli_parse_int(v, out) || *out < lo || *out > hi)
        return mp_cli_usage_error("train", "%s %s: not an integer %lld..%lld", a, v, (long long)lo, (long long)hi);
    return 0;
}

static int value_opt(tr_cli_t *c, const char *a, const char *v) {
    mp_train_opts_t *o = &c->t;
    int64_t x = 0, tri[3];
    double d = 0;
    int rc = 0;
    if (!strcmp(a, "--out")) o->run_dir = v;
    else if (!strcmp(a, "--epochs")) rc = int_opt(a, v, 1, 1000000, &o->epochs);
    else if (!strcmp(a, "--threads")) rc = int_opt(a, v, 0, 4096, &x), o->threads = (int)x;
    else if (!strcmp(a, "--workers")) rc = int_opt(a, v, 0, 256, &x), o->workers = (int)x;
    else {
        c->fixed = a;
        if (!strcmp(a, "--iters-per-epoch")) rc = int_opt(a, v, 1, 100000000, &o->iters_per_epoch);
        else if (!strcmp(a, "--batch")) rc = int_opt(a, v, 1, 4096, &x), o->batch = (int)x;
        else if (!strcmp(a, "--stages")) rc = int_opt(a, v, 1, 8, &x), o->n_stages = (int)x;
        else if (!strcmp(a, "--seed")) rc = int_opt(a, v, 0, (int64_t)1 << 53, &x), o->seed = (uint64_t)x;
        else if (!strcmp(a, "--val-cases")) rc = int_opt(a, v, 0, 1000000, &o->val_cases);
        else if (!strcmp(a, "--val-every")) rc = int_opt(a, v, 1, 1000000, &o->val_every);
        else if (!strcmp(a, "--log-every")) rc = int_opt(a, v, 1, 1000000, &o->log_every);
        else if (!strcmp(a, "--patch")) {
            if (mp_cli_parse_ints(v, tri, 3) || tri[0] < 1 || tri[1] < 1 || tri[2] < 1 || tri[0] > 4096 ||
                tri[1] > 4096 || tri[2] > 4096)
                return mp_cli_usage_error("train", "--patch %s: expected D,H,W (positive integers)", v);
            for (int i = 0; i < 3; i++) o->patch_dhw[i] = (int)tri[i];
        } else if (!strcmp(a, "--features")) {
            if (mp_cli_parse_ints(v, tri, 2) == 0) {
                o->base_features = (int)tri[0];
                o->max_features = (int)tri[1];
            } else if (mp_cli_parse_ints(v, tri, 1) == 0) {
                o->base_features = (int)tri[0];
            } else tri[0] = 0;
            if (tri[0] < 1 || tri[0] > 4096 || o->max_features < 0 || o->max_features > 4096)
                return mp_cli_usage_error("train", "--features %s: expected BASE or BASE,CAP (1..4096)", v);
        } else if (!strcmp(a, "--optimizer")) {
            if (!strcmp(v, "sgd")) o->optimizer = MP_OPT_SGD;
            else if (!strcmp(v, "adamw")) o->optimizer = MP_OPT_ADAMW;
            else return mp_cli_usage_error("train", "--optimizer %s: expected sgd or adamw", v);
        } else if (!strcmp(a, "--lr") || !strcmp(a, "--weight-decay")) {
            int lr = !strcmp(a, "--lr");
            if (mp_cli_parse_double(v, &d) || !(lr ? d > 0 && d < 100 : d >= 0 && d < 100))
                return mp_cli_usage_error("train", "%s %s: not a number in %s", a, v, lr ? "(0, 100)" : "[0, 100)");
            if (lr) o->lr = d;
            else o->weight_decay = d;
        } else return -1;
    }
    return rc;
}

static int parse_args(int argc, char **argv, tr_cli_t *c, const char **cache, int *batch_given) {
    static const char *const flags_with_value[] = {
        "--out", "--epochs", "--iters-per-epoch", "--batch", "--patch", "--features", "--stages", "--optimizer",
        "--lr", "--weight-decay", "--seed", "--threads", "--workers", "--val-cases", "--val-every", "--log-every"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int takes = 0;
        for (size_t k = 0; k < sizeof flags_with_value / sizeof *flags_with_value; k++)
            takes |= !strcmp(a, flags_with_value[k]);
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        } else if (takes) {
            if (i + 1 >= argc) return mp_cli_usage_error("train", "%s needs a value", a);
            *batch_given |= !strcmp(a, "--batch");
            int rc = value_opt(c, a, argv[++i]);
            if (rc) return rc;
        } else if (!strcmp(a, "--deep-supervision")) c->t.deep_supervision = 1, c->fixed = a;
        else if (!strcmp(a, "--no-augment")) c->t.augment = 0, c->fixed = a;
        else if (!strcmp(a, "--resume")) c->t.resume = 1;
        else if (!strcmp(a, "--quiet")) c->quiet = 1;
        else if (a[0] == '-') return mp_cli_usage_error("train", "unknown option '%s'", a);
        else if (!*cache) *cache = a;
        else return mp_cli_usage_error("train", "unexpected argument '%s'", a);
    }
    if (!*cache) return mp_cli_usage_error("train", "CACHE is required");
    if (!c->t.run_dir) return mp_cli_usage_error("train", "--out RUN is required");
    if (c->t.resume && c->fixed)
        return mp_cli_usage_error("train", "%s is fixed by the run; with --resume only --epochs, --threads, "
                                           "--workers and --quiet apply", c->fixed);
    return 0;
}

/* ---- progress ---- */

typedef struct {
    mp_progress_t bar;
    int started, quiet;
} tr_view_t;

static void line(tr_view_t *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line(tr_view_t *v, const char *fmt, ...) {
    if (v->quiet) return;
    if (v->bar.is_tty) fputs("\r\033[K", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static void on_event(void *user, const mp_train_event_t *ev) {
    tr_view_t *v = user;
    if (v->quiet) return;
    if (!v->started) {
        mp_progress_init(&v->bar, stderr, "train", "steps", ev->total_steps - ev->first_step);
        v->started = 1;
    }
    char extra[160];
    if (ev->kind == MP_TRAIN_EV_STEP) {
        snprintf(extra, sizeof extra, "epoch %lld/%lld loss %.4f %.2f patches/s%s", (long long)ev->epoch + 1,
                 (long long)ev->epochs, ev->loss, ev->patches_per_s, ev->skipped ? " (skipped)" : "");
        mp_progress_update(&v->bar, ev->step - ev->first_step, extra);
    } else if (ev->kind == MP_TRAIN_EV_EPOCH) {
        line(v, "epoch %lld/%lld: mean loss %.4f (step %lld)", (long long)ev->epoch + 1, (long long)ev->epochs,
             ev->loss, (long long)ev->step);
    } else {
        char dice[120] = "";
        size_t o = 0;
        for (int k = 1; k < ev->num_classes && o + 16 < sizeof dice; k++)
            o += (size_t)snprintf(dice + o, sizeof dice - o, "%s%.3f", k > 1 ? " " : "", ev->class_dice[k]);
        line(v, "epoch %lld/%lld: validation mean Dice %.4f [%s]%s", (long long)ev->epoch + 1, (long long)ev->epochs,
             ev->mean_fg_dice, dice, ev->improved ? " (best, saved)" : "");
    }
}

/* ---- Ctrl-C ---- */

static volatile sig_atomic_t g_stop;
static int g_signal_silent; /* ranks other than 0 do not echo the signal */

static void on_sigint(int sig) {
    (void)sig;
    static const char msg[] = "\nmedpipe train: stopping after this step (Ctrl-C again aborts without saving)\n";
    g_stop = 1;
    if (g_signal_silent) return;
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
}

/* ---- ranks ---- */

/* Ranks other than 0 print errors only, each tagged with its rank. */
static void log_rank_errors(mp_log_level_t level, const char *msg, void *user) {
    (void)user;
    if (level >= MP_LOG_ERROR)
        fprintf(stderr, "medpipe train: rank %d of %d: %s\n", mp_dist_rank(), mp_dist_size(), msg);
}

/* Starts the world (MPI under mpirun) and applies the per-rank defaults.
 * Returns 0, or an exit status. */
static int start_world(int *argc, char ***argv, tr_cli_t *c, int batch_given) {
    if (mp_dist_init(argc, argv)) return mp_cli_fail("train");
    int n = mp_dist_size();
    if (n == 1) return 0;
    if (mp_dist_rank() != 0) {
        mp_log_set_callback(log_rank_errors, NULL);
        c->quiet = 1;
    }
    if (batch_given && c->t.batch % n != 0) {
        int rc = MP_EXIT_USAGE;
        if (mp_dist_rank() == 0)
            rc = mp_cli_usage_error("train", "--batch %d is the global batch: it must be divisible by the %d ranks",
                                    c->t.batch, n);
        return rc;
    }
    if (c->t.threads <= 0) c->t.threads = mp_dist_threads_per_rank();
    return 0;
}

/* A failed rank: its message, then (several ranks, error not agreed by all)
 * the whole job stops, since the others wait in a collective. */
static int fail_rank(const mp_train_result_t *res) {
    if (mp_dist_size() == 1) return mp_cli_fail("train");
    char msg[1200];
    snprintf(msg, sizeof msg, "%s", mp_error_message());
    fprintf(stderr, "medpipe train: rank %d of %d: %s\n", mp_dist_rank(), mp_dist_size(), msg[0] ? msg : "failed");
    fflush(stderr);
    if (!res->error_on_all_ranks) {
        mp_log_set_callback(NULL, NULL); /* the message is out already */
        mp_dist_abort(msg);
    }
    return MP_EXIT_FAIL;
}

int mp_cli_train(int argc, char **argv) {
    tr_cli_t c;
    memset(&c, 0, sizeof c);
    mp_train_opts_init(&c.t);
    c.t.workers = 1;
    const char *cache = NULL;
    int batch_given = 0;
    int r = parse_args(argc, argv, &c, &cache, &batch_given);
    if (r) return r == 1 ? MP_EXIT_OK : r;
    if ((r = start_world(&argc, &argv, &c, batch_given))) {
        mp_dist_finalize();
        return r;
    }
    const char *chk = getenv("MEDPIPE_CHECK_REPLICAS");
    c.t.check_replicas = chk && !strcmp(chk, "1");
    c.t.cache_dir = cache;
    tr_view_t view;
    memset(&view, 0, sizeof view);
    view.quiet = c.quiet;
    c.t.progress = on_event;
    c.t.progress_user = &view;
    c.t.stop = &g_stop;
    struct sigaction sa, old, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = (int)SA_RESETHAND; /* a second Ctrl-C kills at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    /* mpirun turns Ctrl-C into SIGTERM for every rank (then SIGKILL after a
     * grace period): the ranks agree to stop after the step and rank 0
     * saves, if the grace period allows; checkpoint_last stays whole anyway. */
    g_signal_silent = mp_dist_rank() != 0;
    if (mp_dist_size() > 1) sigaction(SIGTERM, &sa, &old_term);
    mp_train_result_t res;
    memset(&res, 0, sizeof res);
    int rc = mp_train_run(&c.t, &res);
    sigaction(SIGINT, &old, NULL);
    if (mp_dist_size() > 1) sigaction(SIGTERM, &old_term, NULL);
    if (view.started && !view.quiet) mp_progress_finish(&view.bar, NULL);
    if (rc < 0) {
        rc = fail_rank(&res);
        mp_dist_finalize();
        return rc;
    }
    /* Messages before finalize: under mpirun a rank that exits non-zero
     * first gets the others killed. */
    if (rc == MP_TRAIN_STOPPED && mp_dist_rank() == 0)
        fprintf(stderr,
                "medpipe train: stopped at epoch %lld, step %lld; %s/checkpoint_last saved. Continue with:\n"
                "  %smedpipe train %s --out %s --resume\n",
                (long long)res.epoch + 1, (long long)res.step, c.t.run_dir, mp_dist_size() > 1 ? "mpirun ... " : "",
                cache, c.t.run_dir);
    fflush(stderr);
    mp_dist_finalize();
    if (rc == MP_TRAIN_STOPPED) return MP_EXIT_INTERRUPT;
    if (!c.quiet) {
        printf("trained %lld epochs (%lld steps, %lld this run) into %s: last loss %.4f", (long long)res.epoch,
               (long long)res.step, (long long)res.steps_run, c.t.run_dir, res.last_loss);
        if (!isnan(res.best_dice))
            printf(", best mean Dice %.4f (epoch %lld)", res.best_dice, (long long)res.best_epoch + 1);
        printf("; %.3f s/step, %.3f s data wait\n", res.mean_step_s, res.mean_data_wait_s);
    }
    return MP_EXIT_OK;
}
