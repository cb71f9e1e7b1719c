/* medpipe doctor: prints what this machine offers (CPU, memory, oneDNN,
 * threads, MPI, CUDA), what medpipe will use, and warnings in plain words;
 * --json prints the same as one JSON document. The probing is
 * mp_sysinfo_probe(); this file only formats. */
#include "cli/cli.h"
#include "medpipe/core.h"
#include "medpipe/medpipe.h"
#include "medpipe/sysinfo.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WARNINGS 32

static void usage(FILE *f) {
    fprintf(f,
            "usage: medpipe doctor [--json]\n\n"
            "Checks this machine: CPU model and instruction sets (and whether the OS enables\n"
            "them), cores, cgroup limits, memory, oneDNN version and kernel ISA, OpenMP threads,\n"
            "MPI, and the NVIDIA stack (driver, CUDA runtime, cuDNN, NCCL, GPUs). Ends with\n"
            "what medpipe will use and warnings in plain words.\n\n"
            "  --json   print the same as JSON on stdout\n"
            "  --help   this text\n\n"
            "exit status: 0 (also with warnings), 1 if probing failed, 2 usage error\n");
}

static const char *gib(uint64_t bytes, char *buf, size_t size) {
    double g = (double)bytes / (double)(1u << 30);
    if (bytes == 0) snprintf(buf, size, "unknown");
    else if (g >= 1) snprintf(buf, size, "%.1f GiB", g);
    else snprintf(buf, size, "%.0f MiB", (double)bytes / (double)(1u << 20));
    return buf;
}

static const char *kib(uint64_t bytes, char *buf, size_t size) {
    if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) snprintf(buf, size, "%llu MiB", (unsigned long long)(bytes >> 20));
    else snprintf(buf, size, "%llu KiB", (unsigned long long)(bytes >> 10));
    return buf;
}

/* Space-separated names of the flags set in mask ("-" when none). */
static const char *isa_list(uint32_t mask, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < MP_ISA_COUNT; i++) {
        if (!(mask & (1u << i))) continue;
        int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", mp_isa_flag_name(1u << i));
        if (n < 0 || (size_t)n >= size - len) break;
        len += (size_t)n;
    }
    if (!len) snprintf(buf, size, "-");
    return buf;
}

static void kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kv(const char *key, const char *fmt, ...) {
    va_list ap;
    char k[40];
    snprintf(k, sizeof k, "%s:", key);
    printf("  %-18s ", k);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* What medpipe picks from the probe; shared by both output forms. */
typedef struct {
    char engine[96];
    char precision[96];
    char processes[128];
} plan_t;

static void make_plan(const mp_sysinfo_t *s, plan_t *p) {
    if (s->dnnl_built)
        snprintf(p->engine, sizeof p->engine, "oneDNN %d.%d.%d (%s kernels)", s->dnnl_major, s->dnnl_minor, s->dnnl_patch,
                 s->dnnl_isa_name);
    else
        snprintf(p->engine, sizeof p->engine, "plain C reference kernels (built without oneDNN)");
    if (s->isa_usable & (MP_ISA_AMX_BF16 | MP_ISA_AVX512_BF16))
        snprintf(p->precision, sizeof p->precision, "fp32; bf16 mixed precision available (%s)",
                 (s->isa_usable & MP_ISA_AMX_BF16) ? "AMX-BF16" : "AVX512_BF16");
    else
        snprintf(p->precision, sizeof p->precision, "fp32 (no native bf16 on this CPU)");
    if (s->mpi_env_size > 1)
        snprintf(p->processes, sizeof p->processes, "rank %d of %d (launched by MPI)", s->mpi_env_rank, s->mpi_env_size);
    else if (s->mpi_lib_found && s->mpirun_path[0])
        snprintf(p->processes, sizeof p->processes, "one; multi-process training available with mpirun");
    else
        snprintf(p->processes, sizeof p->processes, "one (no MPI)");
}

static void print_cpu(const mp_sysinfo_t *s) {
    char a[256], b[64], c[32], d[32];
    printf("CPU\n");
    kv("model", "%s", s->cpu_model[0] ? s->cpu_model : "unknown");
    kv("vendor", "%s (family 0x%x, model 0x%x, stepping %d)", s->cpu_vendor[0] ? s->cpu_vendor : "unknown", s->cpu_family,
       s->cpu_model_id, s->cpu_stepping);
    kv("ISA", "%s", isa_list(s->isa_usable, a, sizeof a));
    if (s->isa_cpu != s->isa_usable)
        kv("ISA, OS-disabled", "%s", isa_list(s->isa_cpu & ~s->isa_usable, a, sizeof a));
    kv("XCR0", "0x%llx (AVX state %s, AVX-512 state %s, AMX state %s)", (unsigned long long)s->xcr0,
       (s->xcr0 & 0x6) == 0x6 ? "on" : "off", (s->xcr0 & 0xe0) == 0xe0 ? "on" : "off",
       (s->xcr0 & 0x60000) == 0x60000 ? "on" : "off");
    kv("cores", "%d physical, %d logical, %d socket%s, %d NUMA node%s", s->physical_cores, s->logical_cpus, s->sockets,
       s->sockets == 1 ? "" : "s", s->numa_nodes, s->numa_nodes == 1 ? "" : "s");
    if (s->cgroup_cpus > 0) snprintf(b, sizeof b, "%.2g CPUs", s->cgroup_cpus);
    else snprintf(b, sizeof b, "none");
    kv("this process", "%d CPUs (%d cores); cgroup CPU quota: %s", s->affinity_cpus, s->affinity_cores, b);
    if (s->cache_l1d || s->cache_l2 || s->cache_l3)
        kv("caches", "L1d %s, L2 %s, L3 %s", kib(s->cache_l1d, a, sizeof a), kib(s->cache_l2, c, sizeof c),
           kib(s->cache_l3, d, sizeof d));
}

static void print_memory(const mp_sysinfo_t *s) {
    char a[32];
    printf("memory\n");
    kv("total", "%s", gib(s->mem_total, a, sizeof a));
    kv("available", "%s", gib(s->mem_available, a, sizeof a));
    if (s->cgroup_mem_limit) {
        char b[32];
        kv("cgroup limit", "%s (in use %s)", gib(s->cgroup_mem_limit, a, sizeof a), gib(s->cgroup_mem_usage, b, sizeof b));
    } else {
        kv("cgroup limit", "none");
    }
    kv("usable", "%s", gib(s->mem_usable, a, sizeof a));
    kv("huge pages (THP)", "%s", s->thp_mode[0] ? s->thp_mode : "unknown");
}

static void print_dnnl_threads(const mp_sysinfo_t *s) {
    printf("oneDNN\n");
    if (!s->dnnl_built) {
        kv("status", "not built in (no /usr/include/oneapi/dnnl/dnnl.h at build time)");
    } else {
        kv("version", "%d.%d.%d (git %s)", s->dnnl_major, s->dnnl_minor, s->dnnl_patch, s->dnnl_hash[0] ? s->dnnl_hash : "?");
        kv("CPU runtime", "%s", s->dnnl_runtime);
        kv("kernel ISA", "%s (best this CPU allows: %s)", s->dnnl_isa_name, s->dnnl_isa_best_name);
    }
    if (s->dnnl_max_cpu_isa_env[0]) kv("DNNL_MAX_CPU_ISA", "%s", s->dnnl_max_cpu_isa_env);
    printf("threads\n");
    kv("OMP_NUM_THREADS", "%s", s->omp_num_threads_env[0] ? s->omp_num_threads_env : "unset");
    if (s->openmp_lib[0]) kv("OpenMP runtime", "%s (omp_get_max_threads %d)", s->openmp_lib, s->omp_max_threads);
    else kv("OpenMP runtime", "none loaded");
    kv("medpipe default", "%d thread%s", s->threads_default, s->threads_default == 1 ? "" : "s");
}

static void print_mpi(const mp_sysinfo_t *s) {
    printf("MPI\n");
    if (s->mpi_lib_found) {
        kv("library", "%s", s->mpi_lib_version);
        kv("standard", "MPI %d.%d", s->mpi_std_major, s->mpi_std_minor);
        kv("path", "%s", s->mpi_lib_path);
    } else {
        kv("library", "not found (libmpi.so.40)");
    }
    kv("mpirun", "%s", s->mpirun_path[0] ? s->mpirun_path : "not on PATH");
    if (s->mpi_env_size > 0) kv("this process", "rank %d of %d", s->mpi_env_rank, s->mpi_env_size);
}

static void print_cuda(const mp_sysinfo_t *s) {
    char a[256], v[32];
    printf("CUDA\n");
    kv("status", "%s", mp_sysinfo_gpu_summary(s, a, sizeof a));
    if (s->cuda_toolkit_dir[0])
        kv("toolkit", "%s (%s)", s->cuda_toolkit_version[0] ? s->cuda_toolkit_version : "unknown version", s->cuda_toolkit_dir);
    else kv("toolkit", "not found");
    if (s->cudart_version) kv("runtime", "%s (%s)", mp_sysinfo_cuda_version_str(s->cudart_version, v, sizeof v), s->cudart_path);
    else kv("runtime", "not found (libcudart.so)");
    if (s->cuda_driver_found)
        kv("driver", "supports CUDA %s%s%s%s%s", mp_sysinfo_cuda_version_str(s->cuda_driver_version, v, sizeof v),
           s->nvidia_kmod_version[0] ? ", kernel module " : "", s->nvidia_kmod_version,
           s->cuda_init_rc ? ", cuInit: " : "", s->cuda_init_rc ? s->cuda_init_error : "");
    else kv("driver", "not found (libcuda.so.1)%s%s", s->nvidia_kmod_version[0] ? "; kernel module " : "", s->nvidia_kmod_version);
    if (s->cudnn_version) kv("cuDNN", "%s (%s)", mp_sysinfo_lib_version_str(s->cudnn_version, v, sizeof v), s->cudnn_path);
    else kv("cuDNN", "not found");
    if (s->nccl_version) kv("NCCL", "%s (%s)", mp_sysinfo_lib_version_str(s->nccl_version, v, sizeof v), s->nccl_path);
    else kv("NCCL", "not found");
    for (int i = 0; i < s->gpu_count && i < MP_SYSINFO_MAX_GPUS; i++) {
        const mp_gpu_info_t *g = &s->gpus[i];
        char key[16];
        snprintf(key, sizeof key, "GPU %d", i);
        kv(key, "%s, sm_%d%d, %s, %d SMs, PCI %s", g->name, g->cc_major, g->cc_minor, gib(g->total_mem, a, sizeof a),
           g->sm_count, g->pci_bus_id[0] ? g->pci_bus_id : "?");
    }
    if (s->gpu_count > MP_SYSINFO_MAX_GPUS) kv("more GPUs", "%d not listed", s->gpu_count - MP_SYSINFO_MAX_GPUS);
}

static void print_human(const mp_sysinfo_t *s, const plan_t *p, const mp_sysinfo_warning_t *w, int nw) {
    print_cpu(s);
    print_memory(s);
    print_dnnl_threads(s);
    print_mpi(s);
    print_cuda(s);
    printf("medpipe will use\n");
    kv("engine", "%s", p->engine);
    kv("threads", "%d", s->threads_default);
    kv("precision", "%s", p->precision);
    kv("processes", "%s", p->processes);
    printf("warnings:%s\n", nw ? "" : " none");
    for (int i = 0; i < nw && i < MAX_WARNINGS; i++) printf("  - %s\n", w[i].text);
}

/* ---------------------------------------------------------------- JSON */

static void add_str_or_null(cJSON *o, const char *key, const char *s) {
    if (s && *s) cJSON_AddStringToObject(o, key, s);
    else cJSON_AddNullToObject(o, key);
}

static cJSON *isa_array(uint32_t mask) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < MP_ISA_COUNT; i++)
        if (mask & (1u << i)) cJSON_AddItemToArray(a, cJSON_CreateString(mp_isa_flag_name(1u << i)));
    return a;
}

static cJSON *json_cpu_memory(const mp_sysinfo_t *s, cJSON *root) {
    cJSON *cpu = cJSON_AddObjectToObject(root, "cpu");
    add_str_or_null(cpu, "model", s->cpu_model);
    add_str_or_null(cpu, "vendor", s->cpu_vendor);
    cJSON_AddNumberToObject(cpu, "family", s->cpu_family);
    cJSON_AddNumberToObject(cpu, "model_id", s->cpu_model_id);
    cJSON_AddNumberToObject(cpu, "stepping", s->cpu_stepping);
    cJSON_AddItemToObject(cpu, "isa", isa_array(s->isa_usable));
    cJSON_AddItemToObject(cpu, "isa_os_disabled", isa_array(s->isa_cpu & ~s->isa_usable));
    cJSON_AddNumberToObject(cpu, "xcr0", (double)s->xcr0);
    cJSON_AddNumberToObject(cpu, "physical_cores", s->physical_cores);
    cJSON_AddNumberToObject(cpu, "logical_cpus", s->logical_cpus);
    cJSON_AddNumberToObject(cpu, "sockets", s->sockets);
    cJSON_AddNumberToObject(cpu, "numa_nodes", s->numa_nodes);
    cJSON_AddNumberToObject(cpu, "affinity_cpus", s->affinity_cpus);
    cJSON_AddNumberToObject(cpu, "affinity_cores", s->affinity_cores);
    if (s->cgroup_cpus > 0) cJSON_AddNumberToObject(cpu, "cgroup_cpus", s->cgroup_cpus);
    else cJSON_AddNullToObject(cpu, "cgroup_cpus");
    cJSON_AddNumberToObject(cpu, "cache_l1d", (double)s->cache_l1d);
    cJSON_AddNumberToObject(cpu, "cache_l2", (double)s->cache_l2);
    cJSON_AddNumberToObject(cpu, "cache_l3", (double)s->cache_l3);

    cJSON *mem = cJSON_AddObjectToObject(root, "memory");
    cJSON_AddNumberToObject(mem, "total", (double)s->mem_total);
    cJSON_AddNumberToObject(mem, "available", (double)s->mem_available);
    if (s->cgroup_mem_limit) {
        cJSON_AddNumberToObject(mem, "cgroup_limit", (double)s->cgroup_mem_limit);
        cJSON_AddNumberToObject(mem, "cgroup_usage", (double)s->cgroup_mem_usage);
    } else {
        cJSON_AddNullToObject(mem, "cgroup_limit");
        cJSON_AddNullToObject(mem, "cgroup_usage");
    }
    cJSON_AddNumberToObject(mem, "usable", (double)s->mem_usable);
    add_str_or_null(mem, "thp", s->thp_mode);
    return root;
}

static void json_dnnl_threads_mpi(const mp_sysinfo_t *s, cJSON *root) {
    char v[32];
    cJSON *d = cJSON_AddObjectToObject(root, "onednn");
    cJSON_AddBoolToObject(d, "built", s->dnnl_built);
    if (s->dnnl_built) {
        snprintf(v, sizeof v, "%d.%d.%d", s->dnnl_major, s->dnnl_minor, s->dnnl_patch);
        cJSON_AddStringToObject(d, "version", v);
        add_str_or_null(d, "hash", s->dnnl_hash);
        add_str_or_null(d, "cpu_runtime", s->dnnl_runtime);
        add_str_or_null(d, "isa", s->dnnl_isa_name);
    }
    add_str_or_null(d, "isa_best", s->dnnl_isa_best_name);
    add_str_or_null(d, "max_cpu_isa_env", s->dnnl_max_cpu_isa_env);

    cJSON *t = cJSON_AddObjectToObject(root, "threads");
    add_str_or_null(t, "omp_num_threads_env", s->omp_num_threads_env);
    if (s->omp_num_threads > 0) cJSON_AddNumberToObject(t, "omp_num_threads", s->omp_num_threads);
    else cJSON_AddNullToObject(t, "omp_num_threads");
    add_str_or_null(t, "openmp_lib", s->openmp_lib);
    cJSON_AddNumberToObject(t, "omp_max_threads", s->omp_max_threads);
    cJSON_AddNumberToObject(t, "default", s->threads_default);

    cJSON *m = cJSON_AddObjectToObject(root, "mpi");
    cJSON_AddBoolToObject(m, "found", s->mpi_lib_found);
    add_str_or_null(m, "library", s->mpi_lib_version);
    add_str_or_null(m, "path", s->mpi_lib_path);
    if (s->mpi_lib_found) {
        snprintf(v, sizeof v, "%d.%d", s->mpi_std_major, s->mpi_std_minor);
        cJSON_AddStringToObject(m, "standard", v);
    }
    add_str_or_null(m, "mpirun", s->mpirun_path);
    if (s->mpi_env_size > 0) {
        cJSON_AddNumberToObject(m, "env_rank", s->mpi_env_rank);
        cJSON_AddNumberToObject(m, "env_size", s->mpi_env_size);
    }
}

static void json_cuda(const mp_sysinfo_t *s, cJSON *root) {
    char v[32], line[256];
    cJSON *c = cJSON_AddObjectToObject(root, "cuda");
    cJSON_AddStringToObject(c, "status", mp_sysinfo_gpu_summary(s, line, sizeof line));
    add_str_or_null(c, "toolkit_dir", s->cuda_toolkit_dir);
    add_str_or_null(c, "toolkit_version", s->cuda_toolkit_version);
    add_str_or_null(c, "runtime_version", s->cudart_version ? mp_sysinfo_cuda_version_str(s->cudart_version, v, sizeof v) : NULL);
    add_str_or_null(c, "runtime_path", s->cudart_path);
    cJSON_AddBoolToObject(c, "driver_found", s->cuda_driver_found);
    add_str_or_null(c, "driver_cuda_version",
                    s->cuda_driver_version ? mp_sysinfo_cuda_version_str(s->cuda_driver_version, v, sizeof v) : NULL);
    add_str_or_null(c, "kernel_module", s->nvidia_kmod_version);
    add_str_or_null(c, "init_error", s->cuda_init_error);
    add_str_or_null(c, "cudnn_version", s->cudnn_version ? mp_sysinfo_lib_version_str(s->cudnn_version, v, sizeof v) : NULL);
    add_str_or_null(c, "cudnn_path", s->cudnn_path);
    add_str_or_null(c, "nccl_version", s->nccl_version ? mp_sysinfo_lib_version_str(s->nccl_version, v, sizeof v) : NULL);
    add_str_or_null(c, "nccl_path", s->nccl_path);
    cJSON_AddNumberToObject(c, "gpu_count", s->gpu_count);
    cJSON *gpus = cJSON_AddArrayToObject(c, "gpus");
    for (int i = 0; i < s->gpu_count && i < MP_SYSINFO_MAX_GPUS; i++) {
        const mp_gpu_info_t *g = &s->gpus[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", g->name);
        snprintf(v, sizeof v, "%d.%d", g->cc_major, g->cc_minor);
        cJSON_AddStringToObject(o, "compute_capability", v);
        cJSON_AddNumberToObject(o, "memory", (double)g->total_mem);
        cJSON_AddNumberToObject(o, "sm_count", g->sm_count);
        add_str_or_null(o, "pci_bus_id", g->pci_bus_id);
        cJSON_AddItemToArray(gpus, o);
    }
}

static int print_json(const mp_sysinfo_t *s, const plan_t *p, const mp_sysinfo_warning_t *w, int nw) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return -1;
    cJSON_AddStringToObject(root, "medpipe", MP_VERSION);
    json_cpu_memory(s, root);
    json_dnnl_threads_mpi(s, root);
    json_cuda(s, root);
    cJSON *plan = cJSON_AddObjectToObject(root, "plan");
    cJSON_AddStringToObject(plan, "engine", p->engine);
    cJSON_AddNumberToObject(plan, "threads", s->threads_default);
    cJSON_AddStringToObject(plan, "precision", p->precision);
    cJSON_AddStringToObject(plan, "processes", p->processes);
    cJSON *warr = cJSON_AddArrayToObject(root, "warnings");
    for (int i = 0; i < nw && i < MAX_WARNINGS; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "code", w[i].code);
        cJSON_AddStringToObject(o, "text", w[i].text);
        cJSON_AddItemToArray(warr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return -1;
    puts(text);
    free(text);
    return 0;
}

int mp_cli_doctor(int argc, char **argv) {
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return MP_EXIT_OK;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            return mp_cli_usage_error("doctor", "unknown option '%s'", argv[i]);
        }
    }
    mp_sysinfo_t *s = calloc(1, sizeof *s);
    if (!s) {
        mp_error_set(MP_ERR_NOMEM, "out of memory");
        return mp_cli_fail("doctor");
    }
    if (mp_sysinfo_probe(s) != MP_OK) {
        free(s);
        return mp_cli_fail("doctor");
    }
    mp_sysinfo_warning_t w[MAX_WARNINGS];
    int nw = mp_sysinfo_warnings(s, w, MAX_WARNINGS);
    if (nw > MAX_WARNINGS) nw = MAX_WARNINGS;
    plan_t plan;
    make_plan(s, &plan);
    int rc = MP_EXIT_OK;
    if (json) {
        if (print_json(s, &plan, w, nw) != 0) {
            mp_error_set(MP_ERR_NOMEM, "out of memory while formatting JSON");
            rc = mp_cli_fail("doctor");
        }
    } else {
        print_human(s, &plan, w, nw);
    }
    free(s);
    return rc;
}
