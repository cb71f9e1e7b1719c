/* medpipe sysinfo: what this machine offers (CPU ISA and topology, memory,
 * cgroup limits, oneDNN, OpenMP, MPI, CUDA) and what medpipe will use, plus
 * plain-words warnings about mismatches. The probe only reads files, cpuid and
 * libraries it loads with dlopen; it never prints (`medpipe doctor` formats).
 * Optional parts (MPI, CUDA, cuDNN, NCCL) are found at run time, so the library
 * has no link dependency on them. */
#ifndef MEDPIPE_SYSINFO_H
#define MEDPIPE_SYSINFO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- x86 instruction-set features (bits of mp_sysinfo_t.isa_cpu / isa_usable) ---- */
typedef enum {
    MP_ISA_SSE41 = 1u << 0,
    MP_ISA_AVX = 1u << 1,
    MP_ISA_F16C = 1u << 2,
    MP_ISA_FMA = 1u << 3,
    MP_ISA_AVX2 = 1u << 4,
    MP_ISA_AVX_VNNI = 1u << 5,
    MP_ISA_AVX512F = 1u << 6,
    MP_ISA_AVX512DQ = 1u << 7,
    MP_ISA_AVX512CD = 1u << 8,
    MP_ISA_AVX512BW = 1u << 9,
    MP_ISA_AVX512VL = 1u << 10,
    MP_ISA_AVX512_VNNI = 1u << 11,
    MP_ISA_AVX512_BF16 = 1u << 12,
    MP_ISA_AVX512_FP16 = 1u << 13,
    MP_ISA_AMX_TILE = 1u << 14,
    MP_ISA_AMX_BF16 = 1u << 15,
    MP_ISA_AMX_INT8 = 1u << 16
} mp_isa_flag_t;
#define MP_ISA_COUNT 17

/* Name of one flag as Linux spells it in /proc/cpuinfo ("avx512_bf16");
 * NULL for a value that is not a single known flag. */
const char *mp_isa_flag_name(uint32_t flag);

/* ---- the probe result ---- */
#define MP_SYSINFO_MAX_GPUS 16

typedef struct {
    char name[96];
    char pci_bus_id[32];
    int cc_major, cc_minor;   /* compute capability */
    int sm_count;
    uint64_t total_mem;       /* bytes */
} mp_gpu_info_t;

typedef struct {
    /* CPU */
    char cpu_model[128];      /* "model name" of /proc/cpuinfo, else the cpuid brand string */
    char cpu_vendor[16];      /* cpuid vendor, e.g. "AuthenticAMD" */
    int cpu_family, cpu_model_id, cpu_stepping; /* cpuid leaf 1, extended fields folded in */
    uint32_t isa_cpu;         /* MP_ISA_* the CPU reports (cpuid) */
    uint32_t isa_usable;      /* isa_cpu restricted to the register state the OS enables (XCR0) */
    uint64_t xcr0;            /* 0 when the OS does not enable XSAVE */
    int logical_cpus;         /* online logical CPUs */
    int physical_cores;       /* distinct (package, die, core) among the online CPUs */
    int sockets;
    int numa_nodes;           /* 0 when unknown */
    int affinity_cpus;        /* logical CPUs this process may run on */
    int affinity_cores;       /* physical cores among them */
    double cgroup_cpus;       /* cgroup CPU quota in CPUs (quota/period); 0 = no quota */
    uint64_t cache_l1d, cache_l2, cache_l3; /* bytes per instance seen by CPU 0; 0 = unknown */
    char thp_mode[16];        /* transparent huge pages: "always", "madvise", "never" or "" */

    /* memory (bytes) */
    uint64_t mem_total;       /* MemTotal */
    uint64_t mem_available;   /* MemAvailable */
    uint64_t cgroup_mem_limit;/* 0 = no cgroup limit */
    uint64_t cgroup_mem_usage;/* current usage of the cgroup (0 when no limit) */
    uint64_t mem_usable;      /* min(MemAvailable, cgroup limit - usage) */

    /* threads */
    char omp_num_threads_env[32]; /* OMP_NUM_THREADS as set ("" = unset) */
    int omp_num_threads;      /* its first value; 0 = unset, -1 = not a positive integer */
    int omp_max_threads;      /* omp_get_max_threads() of the loaded OpenMP runtime; 0 = none loaded */
    char openmp_lib[64];      /* soname of the loaded OpenMP runtime ("libgomp.so.1"), "" = none */
    int threads_default;      /* threads medpipe uses by default (see mp_sysinfo_probe) */

    /* oneDNN */
    int dnnl_built;           /* medpipe was built with oneDNN */
    int dnnl_major, dnnl_minor, dnnl_patch;
    char dnnl_hash[48];
    char dnnl_runtime[16];    /* CPU runtime: "OpenMP", "TBB", "threadpool", "sequential" */
    unsigned dnnl_isa;        /* dnnl_get_effective_cpu_isa() */
    char dnnl_isa_name[32];   /* "avx2", "avx512_core_bf16", ... */
    unsigned dnnl_isa_best;   /* the best oneDNN ISA the usable features allow */
    char dnnl_isa_best_name[32];
    char dnnl_max_cpu_isa_env[32]; /* DNNL_MAX_CPU_ISA / ONEDNN_MAX_CPU_ISA as set */

    /* MPI */
    int mpi_lib_found;
    char mpi_lib_path[256];
    char mpi_lib_version[128];/* first line of MPI_Get_library_version */
    int mpi_std_major, mpi_std_minor; /* MPI_Get_version */
    char mpirun_path[256];    /* mpirun (or mpiexec) on PATH, "" = none */
    int mpi_env_rank, mpi_env_size; /* from the launcher's environment; -1 = not launched by one */

    /* CUDA */
    char cuda_toolkit_dir[256];     /* "" = no toolkit found */
    char cuda_toolkit_version[32];  /* "13.0" or "13.0.48" */
    int cudart_version;             /* cudaRuntimeGetVersion (13000 = 13.0); 0 = no runtime */
    char cudart_path[256];
    char nvidia_kmod_version[32];   /* kernel module version from /proc/driver/nvidia/version */
    int cuda_driver_found;          /* libcuda.so.1 could be loaded */
    int cuda_driver_version;        /* cuDriverGetVersion (highest CUDA it supports) */
    int cuda_init_rc;               /* cuInit result; 0 = success */
    char cuda_init_error[64];       /* its name, e.g. "CUDA_ERROR_NO_DEVICE" */
    int gpu_count;                  /* devices seen (all, even beyond MP_SYSINFO_MAX_GPUS) */
    mp_gpu_info_t gpus[MP_SYSINFO_MAX_GPUS];
    int cudnn_version;              /* cudnnGetVersion (90100 = 9.1.0); 0 = not found */
    char cudnn_path[256];
    int nccl_version;               /* ncclGetVersion (22809 = 2.28.9); 0 = not found */
    char nccl_path[256];
} mp_sysinfo_t;

/* What to probe. A zeroed struct probes everything on the live system. */
typedef struct {
    /* Prefix for every /proc and /sys path read (tests point it at a fake
     * tree). When set, the process affinity is ignored (all online CPUs count
     * as available) and nothing falls back on sysconf(). */
    const char *root;
    int skip_mpi;  /* do not load an MPI library */
    int skip_cuda; /* do not look for CUDA, cuDNN or NCCL */
} mp_sysinfo_opts_t;

/* Fills *info. Missing optional parts are not errors: they show as empty
 * fields (and as warnings). Fails (MP_ERR_IO) only when neither the CPU count
 * nor the memory size can be found. The default thread count is
 * OMP_NUM_THREADS when set, else the physical cores available to the process,
 * capped by the cgroup CPU quota (at least 1). Libraries loaded to read
 * versions stay loaded. With a driver present the CUDA probe calls cuInit
 * (driver threads, ~0.1-1 s): a process that forks workers afterwards should
 * pass skip_cuda. */
int mp_sysinfo_probe(mp_sysinfo_t *info);
int mp_sysinfo_probe_opts(mp_sysinfo_t *info, const mp_sysinfo_opts_t *opts);

/* One warning: a stable code for scripts and a sentence for people. */
typedef struct {
    char code[32];  /* e.g. "no_bf16", "cuda_driver_old" */
    char text[256];
} mp_sysinfo_warning_t;

/* Writes up to `max` warnings about *info into out[] (out may be NULL when
 * max is 0) and returns how many there are in all. */
int mp_sysinfo_warnings(const mp_sysinfo_t *info, mp_sysinfo_warning_t *out, int max);

/* One line on the GPU backend, e.g. "CUDA toolkit 13.0 found, no NVIDIA
 * driver: GPU backend unavailable". Returns buf. */
const char *mp_sysinfo_gpu_summary(const mp_sysinfo_t *info, char *buf, size_t size);

/* Formats a CUDA-style version number (13000 -> "13.0", 12020 -> "12.2";
 * 0 -> "none"). Returns buf. */
const char *mp_sysinfo_cuda_version_str(int v, char *buf, size_t size);
/* Formats a cuDNN/NCCL version code (91900 -> "9.19.0", 8902 -> "8.9.2",
 * 22809 -> "2.28.9"; 0 -> "none"). Returns buf. */
const char *mp_sysinfo_lib_version_str(int v, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
