/* medpipe distributed training: the process world (MPI when launched by
 * mpirun, otherwise one process and no MPI call at all), the few collectives
 * a data-parallel trainer needs, and a bucketed gradient allreduce over one
 * contiguous fp32 buffer that overlaps with the backward pass.
 *
 * Typical use (the U-Net's gradient buffer, every rank the same code):
 *   mp_dist_init(&argc, &argv);
 *   ... mp_unet_create with threads = mp_dist_threads_per_rank() ...
 *   mp_dist_bcast_f32(mp_unet_params(net), mp_unet_param_count(net));
 *   mp_dist_grad_t g;
 *   mp_dist_grad_init(&g, mp_unet_grads(net), mp_unet_param_count(net), 0);
 *   mp_unet_set_grad_hook(net, mp_dist_grad_hook, &g);
 *   per step: mp_unet_forward_backward(...); mp_dist_grad_wait(&g); optimizer step
 *   mp_dist_grad_deinit(&g); mp_dist_finalize();
 *
 * Threading: MPI is initialised with MPI_THREAD_FUNNELED, so every function
 * here must be called from the thread that called mp_dist_init (the U-Net
 * calls its gradient hook from the thread that runs the step).
 * Built without MPI (no mpicc at build time) everything works as a world of
 * size 1; launched by mpirun with more than one rank, such a build refuses
 * to start instead of training N unrelated copies. */
#ifndef MEDPIPE_DIST_H
#define MEDPIPE_DIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the world ---- */
/* Starts MPI (MPI_Init_thread, FUNNELED) when a launcher set its environment
 * (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK or MV2_COMM_WORLD_SIZE), or
 * MEDPIPE_MPI=1; otherwise sets up a world of one process without touching
 * MPI. argc/argv may be NULL. A second call is a no-op. */
int mp_dist_init(int *argc, char ***argv);
/* Ends MPI if mp_dist_init started it; the world is size 1 afterwards. */
int mp_dist_finalize(void);
/* 1 when MPI is in use (initialised and not finalised). */
int mp_dist_is_mpi(void);
int mp_dist_rank(void);        /* 0 .. size-1 */
int mp_dist_size(void);        /* 1 without MPI */
int mp_dist_local_rank(void);  /* rank among the processes on this node */
int mp_dist_local_size(void);  /* processes on this node */
/* Compute threads for this rank: online CPUs / ranks on this node, at least 1. */
int mp_dist_threads_per_rank(void);

/* ---- collectives (blocking; every rank calls them in the same order) ---- */
int mp_dist_barrier(void);
/* Rank 0's n floats to every rank (e.g. the initial parameters). */
int mp_dist_bcast_f32(float *buf, int64_t n);
/* In-place sum over ranks of a small double array (loss, Dice counts). */
int mp_dist_allreduce_f64_sum(double *buf, int64_t n);
/* Stops the whole job: logs msg at MP_LOG_ERROR and, under MPI, calls
 * MPI_Abort (does not return). Without MPI it returns MP_ERR_INTERNAL so the
 * single process can exit through its normal error path. */
int mp_dist_abort(const char *msg);

/* ---- bucketed gradient allreduce ----
 * The buffer [0, n) is cut into fixed buckets of bucket_bytes. Ranges are
 * reported (in any order, each element exactly once per step) as their
 * values become final; a bucket is started (MPI_Iallreduce in place, SUM)
 * once all of it has been reported AND every bucket after it has been
 * started: buckets start strictly from the last (highest offsets, which the
 * U-Net's backward finishes first) to the first, so every rank issues the
 * same sequence of collectives whatever order its ranges arrive in. */
typedef struct {
    float *grad;            /* the buffer (not owned) */
    int64_t n;              /* floats in it */
    int64_t bucket_elems;   /* floats per bucket (the last may be shorter) */
    int nbuckets;
    int next;               /* next bucket to start (counts down); -1: all started */
    int64_t *filled;        /* floats reported per bucket this step */
    uint64_t *seen;         /* one bit per float reported this step */
    unsigned char *started; /* per bucket: started this step */
    void *req;              /* MPI requests, one per bucket (NULL without MPI) */
    int early_now;          /* buckets started by reports so far in this step */
    int early;              /* buckets started before mp_dist_grad_wait in the last step */
    int err;                /* first error reported through the hook this step */
    char errmsg[256];
} mp_dist_grad_t;

/* bucket_bytes <= 0: 25 MiB (PyTorch DDP's default). The buffer must stay
 * valid and untouched by the caller between the first report of a step and
 * mp_dist_grad_wait. */
int mp_dist_grad_init(mp_dist_grad_t *g, float *grad, int64_t n, int64_t bucket_bytes);
void mp_dist_grad_deinit(mp_dist_grad_t *g);
/* Marks [offset, offset+count) final for this step; may start buckets.
 * Errors: out of range, or reported twice in a step. */
int mp_dist_grad_ready(mp_dist_grad_t *g, int64_t offset, int64_t count);
/* mp_dist_grad_ready with the signature of mp_unet_set_grad_hook (user = g);
 * an error is kept and returned by mp_dist_grad_wait. */
void mp_dist_grad_hook(void *user, int64_t offset, int64_t count);
/* Starts the buckets not started yet (ranges never reported are reduced as
 * they are), waits for all, divides by the world size (the mean gradient of
 * the ranks) and resets for the next step. Returns the first error of the step. */
int mp_dist_grad_wait(mp_dist_grad_t *g);

#ifdef __cplusplus
}
#endif
#endif
