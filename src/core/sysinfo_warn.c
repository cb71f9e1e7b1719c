/* sysinfo, judgement: turns a probe result into plain-words warnings
 * (mismatches, missing optional parts, settings that will cost speed) and a
 * one-line verdict on the GPU backend. Pure functions of mp_sysinfo_t, so
 * tests can feed them hand-made results. */
#include "core/sysinfo_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Below this much usable memory, the default U-Net at 96^3 patches will not
 * train comfortably (weights, activations and the data pipeline). */
#define LOW_MEMORY_BYTES (2ull << 30)

const char *mp_sysinfo_lib_version_str(int v, char *buf, size_t size) {
    if (v <= 0) snprintf(buf, size, "none");
    else if (v < 10000) snprintf(buf, size, "%d.%d.%d", v / 1000, (v % 1000) / 100, v % 100);
    else snprintf(buf, size, "%d.%d.%d", v / 10000, (v % 10000) / 100, v % 100);
    return buf;
}

const char *mp_sysinfo_gpu_summary(const mp_sysinfo_t *info, char *buf, size_t size) {
    char drv[16], rt[16];
    mp_sysinfo_cuda_version_str(info->cuda_driver_version, drv, sizeof drv);
    mp_sysinfo_cuda_version_str(info->cudart_version, rt, sizeof rt);
    if (info->gpu_count > 0) {
        const mp_gpu_info_t *g = &info->gpus[0];
        snprintf(buf, size, "%d GPU%s usable (%s%s, sm_%d%d), driver supports CUDA %s", info->gpu_count,
                 info->gpu_count > 1 ? "s" : "", g->name[0] ? g->name : "unnamed", info->gpu_count > 1 ? ", ..." : "",
                 g->cc_major, g->cc_minor, drv);
    } else if (info->cuda_driver_found) {
        snprintf(buf, size, "NVIDIA driver found (CUDA %s) but no usable GPU%s%s: GPU backend unavailable", drv,
                 info->cuda_init_error[0] ? ": " : "", info->cuda_init_error);
    } else if (info->nvidia_kmod_version[0]) {
        snprintf(buf, size, "NVIDIA kernel module %s loaded but libcuda.so.1 not found: GPU backend unavailable",
                 info->nvidia_kmod_version);
    } else if (info->cuda_toolkit_dir[0]) {
        snprintf(buf, size, "CUDA toolkit %s found, no NVIDIA driver: GPU backend unavailable",
                 info->cuda_toolkit_version[0] ? info->cuda_toolkit_version : "(unknown version)");
    } else if (info->cudart_version > 0) {
        snprintf(buf, size, "CUDA runtime %s found, no NVIDIA driver: GPU backend unavailable", rt);
    } else {
        snprintf(buf, size, "no NVIDIA driver or CUDA toolkit: GPU backend unavailable (CPU only)");
    }
    return buf;
}

typedef struct {
    mp_sysinfo_warning_t *out;
    int max;
    int n;
} warn_list_t;

__attribute__((format(printf, 3, 4))) static void add(warn_list_t *w, const char *code, const char *fmt, ...) {
    if (w->n < w->max && w->out) {
        mp_sysinfo_warning_t *x = &w->out[w->n];
        mp_sysinfo_copy(x->code, sizeof x->code, code);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->text, sizeof x->text, fmt, ap);
        va_end(ap);
    }
    w->n++;
}

static void warn_cpu(const mp_sysinfo_t *s, warn_list_t *w) {
    uint32_t u = s->isa_usable, c = s->isa_cpu;
    if (!(u & MP_ISA_AVX2) || !(u & MP_ISA_FMA))
        add(w, "cpu_no_avx2", "no usable AVX2/FMA: convolutions will be several times slower than on a current CPU");
    if ((c & MP_ISA_AVX512F) && !(u & MP_ISA_AVX512F))
        add(w, "os_no_avx512",
            "the CPU has AVX-512 but the OS does not enable its registers (XCR0=0x%llx): AVX-512 kernels are off",
            (unsigned long long)s->xcr0);
    if ((c & MP_ISA_AMX_TILE) && !(u & MP_ISA_AMX_TILE))
        add(w, "os_no_amx", "the CPU has AMX but the OS does not enable tile state (XCR0=0x%llx): AMX kernels are off",
            (unsigned long long)s->xcr0);
    if (!(u & (MP_ISA_AVX512_BF16 | MP_ISA_AMX_BF16)))
        add(w, "no_bf16", "no AVX512_BF16 or AMX-BF16 on this CPU: bf16 training will be slow or unsupported; train in fp32");
}

static void warn_dnnl(const mp_sysinfo_t *s, warn_list_t *w) {
    if (!s->dnnl_built) {
        add(w, "dnnl_missing",
            "medpipe was built without oneDNN: convolutions use the slow reference kernels (install libdnnl-dev, rebuild)");
        return;
    }
    if (s->dnnl_isa_best & ~s->dnnl_isa) {
        if (s->dnnl_max_cpu_isa_env[0])
            add(w, "dnnl_isa_low", "oneDNN dispatches to %s but the CPU supports %s: DNNL_MAX_CPU_ISA=%s limits it",
                s->dnnl_isa_name, s->dnnl_isa_best_name, s->dnnl_max_cpu_isa_env);
        else
            add(w, "dnnl_isa_low", "oneDNN %d.%d dispatches to %s but the CPU supports %s: a newer oneDNN would be faster",
                s->dnnl_major, s->dnnl_minor, s->dnnl_isa_name, s->dnnl_isa_best_name);
    }
}

static void warn_threads(const mp_sysinfo_t *s, warn_list_t *w) {
    int cpus = s->affinity_cpus;
    if (s->cgroup_cpus > 0 && s->cgroup_cpus < cpus) cpus = (int)s->cgroup_cpus > 0 ? (int)s->cgroup_cpus : 1;
    if (s->omp_num_threads < 0)
        add(w, "omp_invalid", "OMP_NUM_THREADS='%s' is not a positive integer: it will be ignored or rejected",
            s->omp_num_threads_env);
    else if (s->omp_num_threads > 0 && cpus > 0 && s->omp_num_threads > cpus)
        add(w, "threads_oversubscribed", "OMP_NUM_THREADS=%d exceeds the %d CPU%s available: threads will contend; use at most %d",
            s->omp_num_threads, cpus, cpus == 1 ? "" : "s", cpus);
    else if (s->omp_num_threads > 0 && s->affinity_cores > 0 && s->omp_num_threads > s->affinity_cores)
        add(w, "threads_smt",
            "OMP_NUM_THREADS=%d exceeds the %d physical core%s available: hyper-threads rarely speed up convolutions",
            s->omp_num_threads, s->affinity_cores, s->affinity_cores == 1 ? "" : "s");
    if (s->cgroup_cpus > 0 && s->cgroup_cpus + 0.5 < s->affinity_cpus)
        add(w, "cgroup_cpu_quota", "the cgroup CPU quota is %.2g CPUs while %d CPUs are visible: medpipe uses %d thread%s",
            s->cgroup_cpus, s->affinity_cpus, s->threads_default, s->threads_default == 1 ? "" : "s");
}

static void warn_memory(const mp_sysinfo_t *s, warn_list_t *w) {
    if (s->mem_usable > 0 && s->mem_usable < LOW_MEMORY_BYTES)
        add(w, "low_memory", "only %.1f GiB of memory available%s: use smaller patches or batches",
            (double)s->mem_usable / (double)(1u << 30), s->cgroup_mem_limit ? " (cgroup limit)" : "");
}

static void warn_mpi(const mp_sysinfo_t *s, warn_list_t *w) {
    if (!s->mpi_lib_found)
        add(w, "no_mpi", "no MPI library (libmpi.so.40): multi-process training unavailable (install openmpi-bin)");
    else if (!s->mpirun_path[0])
        add(w, "no_mpirun", "MPI library found but mpirun is not on PATH: multi-process runs cannot be launched");
}

static void warn_cuda(const mp_sysinfo_t *s, warn_list_t *w) {
    char a[16], b[16], line[256];
    if (!s->cuda_driver_found && (s->cuda_toolkit_dir[0] || s->cudart_version > 0 || s->nvidia_kmod_version[0]))
        add(w, "cuda_no_driver", "%s", mp_sysinfo_gpu_summary(s, line, sizeof line));
    if (s->cuda_driver_found && s->cuda_init_rc != 0)
        add(w, "cuda_init_failed", "NVIDIA driver found but cuInit failed (%s): no usable GPU", s->cuda_init_error);
    else if (s->cuda_driver_found && s->gpu_count == 0)
        add(w, "no_gpu", "NVIDIA driver found but it reports no GPU");
    if (s->cuda_driver_version > 0 && s->cudart_version > s->cuda_driver_version)
        add(w, "cuda_driver_old", "the NVIDIA driver supports CUDA %s but the CUDA runtime is %s: update the driver",
            mp_sysinfo_cuda_version_str(s->cuda_driver_version, a, sizeof a),
            mp_sysinfo_cuda_version_str(s->cudart_version, b, sizeof b));
    if (s->gpu_count > 0 && !s->cudart_version)
        add(w, "no_cudart", "GPU present but no CUDA runtime (libcudart) found: GPU backend unavailable");
    if (s->gpu_count > 0 && !s->cudnn_version)
        add(w, "no_cudnn", "GPU present but cuDNN not found: GPU convolutions unavailable");
    if (s->gpu_count > 0 && !s->nccl_version)
        add(w, "no_nccl", "GPU present but NCCL not found: multi-GPU training unavailable");
}

int mp_sysinfo_warnings(const mp_sysinfo_t *info, mp_sysinfo_warning_t *out, int max) {
    warn_list_t w = {out, out ? max : 0, 0};
    if (!info) return 0;
    warn_cpu(info, &w);
    warn_dnnl(info, &w);
    warn_threads(info, &w);
    warn_memory(info, &w);
    warn_mpi(info, &w);
    warn_cuda(info, &w);
    return w.n;
}
