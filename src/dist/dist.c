/* The process world for data-parallel training: MPI only when a launcher
 * started us (so a plain run never loads a network stack), the blocking
 * collectives a trainer needs, and the bucketed gradient allreduce that
 * overlaps communication with the backward pass. Built without MPI, every
 * function behaves as a world of one process. */
#include "medpipe/dist.h"
#include "medpipe/core.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef MP_HAVE_MPI
#include <mpi.h>
#endif

/* One MPI call moves at most this many elements (MPI counts are int). */
#define CHUNK_ELEMS ((int64_t)1 << 30)

static struct {
    int inited, finalized, mpi, we_started;
    int rank, size, local_rank, local_size;
#ifdef MP_HAVE_MPI
    MPI_Comm comm, local;
#endif
} W = {0, 0, 0, 0, 0, 1, 0, 1
#ifdef MP_HAVE_MPI
       , MPI_COMM_NULL, MPI_COMM_NULL
#endif
};

/* Size announced by a launcher's environment: > 1 a world size, 1 when a
 * launcher is present but gave no size (PMIx), 0 when there is none. */
static int launcher_size(const char **var) {
    static const char *const sized[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof sized / sizeof *sized; i++) {
        const char *v = getenv(sized[i]);
        if (v && *v) {
            long s = strtol(v, NULL, 10);
            *var = sized[i];
            return s > 1 ? (int)(s < INT_MAX ? s : INT_MAX) : 1;
        }
    }
    const char *f = getenv("MEDPIPE_MPI");
    if ((f && strcmp(f, "1") == 0) || getenv("PMIX_RANK")) {
        *var = f && strcmp(f, "1") == 0 ? "MEDPIPE_MPI" : "PMIX_RANK";
        return 1;
    }
    return 0;
}

static void world_single(void) {
    W.mpi = 0;
    W.rank = W.local_rank = 0;
    W.size = W.local_size = 1;
}

#ifdef MP_HAVE_MPI
/* An MPI failure as a medpipe status with MPI's own words. */
static int mpi_fail(int code, const char *what) {
    char s[MPI_MAX_ERROR_STRING];
    int len = 0, cls = MPI_ERR_OTHER;
    if (MPI_Error_string(code, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", code);
    MPI_Error_class(code, &cls);
    int st = MP_ERR_IO; /* a communication failure: the peer or the network */
    if (cls == MPI_ERR_NO_MEM) st = MP_ERR_NOMEM;
    else if (cls == MPI_ERR_ARG || cls == MPI_ERR_COUNT || cls == MPI_ERR_BUFFER || cls == MPI_ERR_TYPE ||
             cls == MPI_ERR_OP || cls == MPI_ERR_COMM || cls == MPI_ERR_REQUEST)
        st = MP_ERR_ARG;
    else if (cls == MPI_ERR_TRUNCATE) st = MP_ERR_MISMATCH;
    return mp_error_set(st, "mpi: %s failed on rank %d of %d: %s", what, W.rank, W.size, s);
}

#define MPI_TRY(call, what)                          \
    do {                                             \
        int e_ = (call);                             \
        if (e_ != MPI_SUCCESS) return mpi_fail(e_, what); \
    } while (0)

static int mpi_start(int *argc, char ***argv) {
    int flag = 0, prov = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        /* Errors here use MPI's default handler (abort): nothing is set up yet. */
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &prov) != MPI_SUCCESS)
            return mp_error_set(MP_ERR_IO, "mpi: MPI_Init_thread failed");
        W.we_started = 1;
    } else {
        MPI_Query_thread(&prov);
    }
    W.mpi = 1;
    if (prov < MPI_THREAD_FUNNELED)
        return mp_error_set(MP_ERR_UNSUPPORTED, "mpi: the MPI library gives thread level %d, medpipe needs FUNNELED", prov);
    MPI_TRY(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    /* A private communicator: our collectives never match a caller's. */
    MPI_TRY(MPI_Comm_dup(MPI_COMM_WORLD, &W.comm), "MPI_Comm_dup");
    MPI_TRY(MPI_Comm_set_errhandler(W.comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    MPI_TRY(MPI_Comm_rank(W.comm, &W.rank), "MPI_Comm_rank");
    MPI_TRY(MPI_Comm_size(W.comm, &W.size), "MPI_Comm_size");
    MPI_TRY(MPI_Comm_split_type(W.comm, MPI_COMM_TYPE_SHARED, W.rank, MPI_INFO_NULL, &W.local), "MPI_Comm_split_type");
    MPI_TRY(MPI_Comm_rank(W.local, &W.local_rank), "MPI_Comm_rank (node)");
    MPI_TRY(MPI_Comm_size(W.local, &W.local_size), "MPI_Comm_size (node)");
    return MP_OK;
}
#endif

int mp_dist_init(int *argc, char ***argv) {
    if (W.inited) return MP_OK;
    const char *var = "";
    int env = launcher_size(&var);
    world_single();
#ifdef MP_HAVE_MPI
    if (env) {
        if (W.finalized) return mp_error_set(MP_ERR_ARG, "mpi: cannot start again after mp_dist_finalize");
        int rc = mpi_start(argc, argv);
        if (rc) return rc;
        mp_log(MP_LOG_DEBUG, "dist: rank %d of %d (node rank %d of %d), launcher variable %s", W.rank, W.size,
               W.local_rank, W.local_size, var);
    }
#else
    (void)argc, (void)argv;
    if (env > 1)
        return mp_error_set(MP_ERR_UNSUPPORTED, "dist: launched as one of %d processes (%s) but medpipe was built "
                            "without MPI (install libopenmpi-dev and rebuild)", env, var);
#endif
    W.inited = 1;
    return MP_OK;
}

int mp_dist_finalize(void) {
    if (!W.inited) return MP_OK;
    W.inited = 0;
#ifdef MP_HAVE_MPI
    if (W.mpi) {
        if (W.local != MPI_COMM_NULL) MPI_Comm_free(&W.local);
        if (W.comm != MPI_COMM_NULL) MPI_Comm_free(&W.comm);
        W.finalized = 1;
        if (W.we_started) {
            int done = 0;
            MPI_Finalized(&done);
            if (!done && MPI_Finalize() != MPI_SUCCESS) {
                world_single();
                return mp_error_set(MP_ERR_IO, "mpi: MPI_Finalize failed");
            }
        }
    }
#endif
    world_single();
    return MP_OK;
}

int mp_dist_is_mpi(void) { return W.mpi; }
int mp_dist_rank(void) { return W.rank; }
int mp_dist_size(void) { return W.size; }
int mp_dist_local_rank(void) { return W.local_rank; }
int mp_dist_local_size(void) { return W.local_size; }

int mp_dist_threads_per_rank(void) {
    int t = mp_cpu_count() / (W.local_size > 0 ? W.local_size : 1);
    return t > 0 ? t : 1;
}

int mp_dist_barrier(void) {
#ifdef MP_HAVE_MPI
    if (W.mpi) MPI_TRY(MPI_Barrier(W.comm), "MPI_Barrier");
#endif
    return MP_OK;
}

int mp_dist_bcast_f32(float *buf, int64_t n) {
    if (n < 0 || (n > 0 && !buf)) return mp_error_set(MP_ERR_ARG, "dist: broadcast of %lld floats", (long long)n);
#ifdef MP_HAVE_MPI
    if (W.mpi)
        for (int64_t off = 0; off < n; off += CHUNK_ELEMS) {
            int64_t c = n - off < CHUNK_ELEMS ? n - off : CHUNK_ELEMS;
            MPI_TRY(MPI_Bcast(buf + off, (int)c, MPI_FLOAT, 0, W.comm), "MPI_Bcast");
        }
#endif
    return MP_OK;
}

int mp_dist_allreduce_f64_sum(double *buf, int64_t n) {
    if (n < 0 || (n > 0 && !buf)) return mp_error_set(MP_ERR_ARG, "dist: allreduce of %lld doubles", (long long)n);
#ifdef MP_HAVE_MPI
    if (W.mpi)
        for (int64_t off = 0; off < n; off += CHUNK_ELEMS) {
            int64_t c = n - off < CHUNK_ELEMS ? n - off : CHUNK_ELEMS;
            MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)c, MPI_DOUBLE, MPI_SUM, W.comm), "MPI_Allreduce");
        }
#endif
    return MP_OK;
}

int mp_dist_abort(const char *msg) {
    mp_log(MP_LOG_ERROR, "rank %d of %d stops the job: %s", W.rank, W.size, msg ? msg : "");
#ifdef MP_HAVE_MPI
    if (W.mpi) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    return mp_error_set(MP_ERR_INTERNAL, "%s", msg ? msg : "aborted");
}

/* ---- bucketed gradient allreduce ---- */
static int64_t bucket_len(const mp_dist_grad_t *g, int b) {
    int64_t start = (int64_t)b * g->bucket_elems, left = g->n - start;
    return left < g->bucket_elems ? left : g->bucket_elems;
}

/* Bit range [a, b) of the report bitmap: any bit set (set = 0), or set them. */
static int bits_range(uint64_t *w, int64_t a, int64_t b, int set) {
    while (a < b) {
        int64_t i = a >> 6, hi = (i + 1) << 6 < b ? (i + 1) << 6 : b;
        int lo_bit = (int)(a & 63), n = (int)(hi - a);
        uint64_t mask = (n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << lo_bit;
        if (set) w[i] |= mask;
        else if (w[i] & mask) return 1;
        a = hi;
    }
    return 0;
}

static void grad_reset(mp_dist_grad_t *g) {
    if (g->seen) memset(g->seen, 0, (size_t)((g->n + 63) / 64) * sizeof *g->seen);
    g->next = g->nbuckets - 1;
    g->early_now = 0;
    g->err = 0;
    g->errmsg[0] = 0;
    for (int b = 0; b < g->nbuckets; b++) {
        g->filled[b] = 0;
        g->started[b] = 0;
#ifdef MP_HAVE_MPI
        if (g->req) ((MPI_Request *)g->req)[b] = MPI_REQUEST_NULL;
#endif
    }
}

int mp_dist_grad_init(mp_dist_grad_t *g, float *grad, int64_t n, int64_t bucket_bytes) {
    memset(g, 0, sizeof *g);
    if (n < 0 || (n > 0 && !grad)) return mp_error_set(MP_ERR_ARG, "dist: gradient buffer of %lld floats", (long long)n);
    if (bucket_bytes <= 0) bucket_bytes = (int64_t)25 << 20;
    int64_t be = bucket_bytes / (int64_t)sizeof(float);
    if (be < 1) be = 1;
    if (be > CHUNK_ELEMS) be = CHUNK_ELEMS;
    int64_t nb = (n + be - 1) / be;
    if (nb > INT_MAX / 2) return mp_error_set(MP_ERR_LIMIT, "dist: %lld gradient buckets of %lld bytes",
                                             (long long)nb, (long long)bucket_bytes);
    g->grad = grad, g->n = n, g->bucket_elems = be, g->nbuckets = (int)nb;
    g->filled = calloc((size_t)nb + 1, sizeof *g->filled);
    g->started = calloc((size_t)nb + 1, 1);
    g->seen = calloc((size_t)((n + 63) / 64) + 1, sizeof *g->seen);
    int ok = g->filled && g->started && g->seen;
#ifdef MP_HAVE_MPI
    if (ok && W.mpi) ok = (g->req = calloc((size_t)nb + 1, sizeof(MPI_Request))) != NULL;
#endif
    if (!ok) {
        mp_dist_grad_deinit(g);
        return mp_error_set(MP_ERR_NOMEM, "dist: cannot allocate %lld gradient buckets", (long long)nb);
    }
    grad_reset(g);
    return MP_OK;
}

void mp_dist_grad_deinit(mp_dist_grad_t *g) {
#ifdef MP_HAVE_MPI
    /* Never leave a reduction writing into a buffer the caller may free. */
    if (g->req && W.mpi) MPI_Waitall(g->nbuckets, g->req, MPI_STATUSES_IGNORE);
#endif
    free(g->filled);
    free(g->started);
    free(g->seen);
    free(g->req);
    memset(g, 0, sizeof *g);
}

static int bucket_start(mp_dist_grad_t *g, int b) {
    g->started[b] = 1;
#ifdef MP_HAVE_MPI
    if (g->req && W.mpi) {
        MPI_Request *r = (MPI_Request *)g->req + b;
        MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, g->grad + (int64_t)b * g->bucket_elems, (int)bucket_len(g, b), MPI_FLOAT,
                               MPI_SUM, W.comm, r),
                "MPI_Iallreduce");
    }
#endif
    return MP_OK;
}

int mp_dist_grad_ready(mp_dist_grad_t *g, int64_t offset, int64_t count) {
    if (offset < 0 || count < 0 || offset > g->n || count > g->n - offset)
        return mp_error_set(MP_ERR_ARG, "dist: gradient range [%lld, +%lld) outside the buffer of %lld floats",
                            (long long)offset, (long long)count, (long long)g->n);
    if (count == 0) return MP_OK;
    /* A float reported twice would let a bucket start before all of it is final. */
    if (bits_range(g->seen, offset, offset + count, 0))
        return mp_error_set(MP_ERR_ARG, "dist: gradient range [%lld, %lld) overlaps one already reported this step",
                            (long long)offset, (long long)(offset + count));
    bits_range(g->seen, offset, offset + count, 1);
    int b0 = (int)(offset / g->bucket_elems), b1 = (int)((offset + count - 1) / g->bucket_elems);
    for (int b = b0; b <= b1; b++) {
        int64_t lo = (int64_t)b * g->bucket_elems, hi = lo + bucket_len(g, b);
        g->filled[b] += (offset + count < hi ? offset + count : hi) - (offset > lo ? offset : lo);
    }
    int rc = MP_OK;
    while (!rc && g->next >= 0 && g->filled[g->next] == bucket_len(g, g->next)) {
        rc = bucket_start(g, g->next--);
        g->early_now++;
    }
#ifdef MP_HAVE_MPI
    /* Without an asynchronous progress thread MPI advances the reductions
     * only inside MPI calls: give it one per report. */
    int flag = 0;
    if (!rc && g->req && W.mpi && g->next < g->nbuckets - 1)
        MPI_TRY(MPI_Testall(g->nbuckets, g->req, &flag, MPI_STATUSES_IGNORE), "MPI_Testall");
#endif
    return rc;
}

void mp_dist_grad_hook(void *user, int64_t offset, int64_t count) {
    mp_dist_grad_t *g = user;
    if (g->err) return;
    int rc = mp_dist_grad_ready(g, offset, count);
    if (rc) {
        g->err = rc;
        snprintf(g->errmsg, sizeof g->errmsg, "%s", mp_error_message());
    }
}

int mp_dist_grad_wait(mp_dist_grad_t *g) {
    int rc = g->err, early = g->early_now;
    char msg[sizeof g->errmsg];
    memcpy(msg, g->errmsg, sizeof msg);
    /* Every rank starts every bucket, in the same order, even after an
     * error: a rank that skipped one would leave the others waiting. */
    while (g->next >= 0) {
        int r = bucket_start(g, g->next--);
        if (r && !rc) rc = r, snprintf(msg, sizeof msg, "%s", mp_error_message());
    }
#ifdef MP_HAVE_MPI
    if (g->req && W.mpi) {
        int e = MPI_Waitall(g->nbuckets, g->req, MPI_STATUSES_IGNORE);
        if (e != MPI_SUCCESS && !rc) rc = mpi_fail(e, "MPI_Waitall"), snprintf(msg, sizeof msg, "%s", mp_error_message());
    }
#endif
    if (W.size > 1) {
        float s = (float)W.size;
        for (int64_t i = 0; i < g->n; i++) g->grad[i] /= s;
    }
    grad_reset(g);
    g->early = early;
    return rc ? mp_error_set(rc, "%s", msg) : MP_OK;
}
