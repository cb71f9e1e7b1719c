/* sysinfo: the live probe gives sane figures consistent with /proc/cpuinfo,
 * oneDNN and the libraries actually loadable here; fake /proc+/sys trees pin
 * down topology, cgroup v1/v2 and meminfo parsing; hand-made results pin
 * down the warnings and the GPU verdict. */
#include "harness.h"
#include "medpipe/medpipe.h"
#include "medpipe/sysinfo.h"

#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/utsname.h>

#ifdef MP_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

static int has_warning(const mp_sysinfo_t *s, const char *code, char *text, size_t size) {
    mp_sysinfo_warning_t w[32];
    int n = mp_sysinfo_warnings(s, w, 32);
    for (int i = 0; i < n && i < 32; i++) {
        if (strcmp(w[i].code, code) == 0) {
            if (text) snprintf(text, size, "%s", w[i].text);
            return 1;
        }
    }
    return 0;
}

static void test_probe_live_sane(void) {
    static mp_sysinfo_t s;
    MP_CHECK_OK(mp_sysinfo_probe(&s));
    MP_CHECKF(s.logical_cpus >= 1, "%d", s.logical_cpus);
    MP_CHECKF(s.physical_cores >= 1 && s.physical_cores <= s.logical_cpus, "%d of %d", s.physical_cores, s.logical_cpus);
    MP_CHECK(s.affinity_cpus >= 1 && s.affinity_cpus <= s.logical_cpus);
    MP_CHECK(s.affinity_cores >= 1 && s.affinity_cores <= s.affinity_cpus);
    MP_CHECK(s.sockets >= 1);
    /* Linux counts the same CPUs as the sysconf figure. */
    MP_CHECKF(s.logical_cpus == (int)sysconf(_SC_NPROCESSORS_ONLN), "%d vs %ld", s.logical_cpus,
              sysconf(_SC_NPROCESSORS_ONLN));
    MP_CHECK(s.mem_total > 0 && s.mem_available > 0 && s.mem_available <= s.mem_total);
    MP_CHECK(s.mem_usable > 0 && s.mem_usable <= s.mem_available);
    uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    MP_CHECKF(s.mem_total == phys, "%llu vs %llu", (unsigned long long)s.mem_total, (unsigned long long)phys);
    MP_CHECK(s.threads_default >= 1);
    MP_CHECK(s.cpu_model[0] != '\0');
#if defined(__x86_64__)
    MP_CHECK(strcmp(s.cpu_vendor, "GenuineIntel") == 0 || strcmp(s.cpu_vendor, "AuthenticAMD") == 0 ||
             s.cpu_vendor[0] != '\0');
    MP_CHECK(s.cpu_family > 0);
    /* The test binary is built for x86-64-v3, so AVX2 and FMA must be usable. */
    MP_CHECK((s.isa_usable & (MP_ISA_AVX | MP_ISA_AVX2 | MP_ISA_FMA)) == (MP_ISA_AVX | MP_ISA_AVX2 | MP_ISA_FMA));
    MP_CHECK((s.xcr0 & 0x6) == 0x6);
#endif
    MP_CHECK((s.isa_usable & ~s.isa_cpu) == 0);
    if (s.isa_usable & MP_ISA_AVX512BW) MP_CHECK(s.isa_usable & MP_ISA_AVX512F);
    if (s.isa_usable & MP_ISA_AVX512F) MP_CHECK((s.xcr0 & 0xe6) == 0xe6);
    /* Probing twice gives the same static facts (libraries already loaded). */
    static mp_sysinfo_t t;
    MP_CHECK_OK(mp_sysinfo_probe(&t));
    MP_CHECK(t.isa_usable == s.isa_usable && t.physical_cores == s.physical_cores && t.cudart_version == s.cudart_version &&
             t.mpi_lib_found == s.mpi_lib_found);
}

/* The "flags" line of the first CPU in /proc/cpuinfo, space-padded. */
static int cpuinfo_flags(char *out, size_t size) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return -1;
    char line[8192];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) == 0) {
            char *c = strchr(line, ':');
            if (!c) break;
            c[strcspn(c, "\n")] = '\0';
            snprintf(out, size, " %s ", c + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static void test_isa_matches_proc_cpuinfo(void) {
#if defined(__x86_64__)
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.skip_mpi = 1, .skip_cuda = 1};
    MP_CHECK_OK(mp_sysinfo_probe_opts(&s, &o));
    static char flags[8192];
    MP_CHECK(cpuinfo_flags(flags, sizeof flags) == 0);
    struct utsname u;
    MP_CHECK(uname(&u) == 0);
    int kmaj = 0, kmin = 0;
    sscanf(u.release, "%d.%d", &kmaj, &kmin);
    /* Flags every kernel from 4.x knows; newer ones (bf16, avx_vnni, fp16,
     * amx) are listed only by kernels from about 5.18 on. */
    int new_kernel = kmaj > 5 || (kmaj == 5 && kmin >= 18);
    const uint32_t old = MP_ISA_SSE41 | MP_ISA_AVX | MP_ISA_F16C | MP_ISA_FMA | MP_ISA_AVX2 | MP_ISA_AVX512F |
                         MP_ISA_AVX512DQ | MP_ISA_AVX512CD | MP_ISA_AVX512BW | MP_ISA_AVX512VL | MP_ISA_AVX512_VNNI;
    int checked = 0;
    for (int i = 0; i < MP_ISA_COUNT; i++) {
        uint32_t f = 1u << i;
        const char *name = mp_isa_flag_name(f);
        MP_CHECK(name != NULL);
        char pat[64];
        snprintf(pat, sizeof pat, " %s ", name);
        int kernel = strstr(flags, pat) != NULL, ours = (s.isa_usable & f) != 0;
        if (kernel) MP_CHECKF(ours, "/proc/cpuinfo lists %s, the probe does not", name);
        if (ours && ((old & f) || new_kernel)) MP_CHECKF(kernel, "the probe reports %s, /proc/cpuinfo does not", name);
        checked++;
    }
    MP_CHECK(checked == MP_ISA_COUNT);
    MP_CHECK(mp_isa_flag_name(0) == NULL && mp_isa_flag_name(3) == NULL);
#endif
}

static void test_onednn_matches_library(void) {
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.skip_mpi = 1, .skip_cuda = 1};
    MP_CHECK_OK(mp_sysinfo_probe_opts(&s, &o));
#ifdef MP_HAVE_DNNL
    const dnnl_version_t *v = dnnl_version();
    MP_CHECK(s.dnnl_built == 1);
    MP_CHECK(s.dnnl_major == v->major && s.dnnl_minor == v->minor && s.dnnl_patch == v->patch);
    MP_CHECK(s.dnnl_isa == (unsigned)dnnl_get_effective_cpu_isa());
    MP_CHECK(s.dnnl_runtime[0] != '\0' && strcmp(s.dnnl_runtime, "unknown") != 0);
    if (v->cpu_runtime == DNNL_RUNTIME_OMP) {
        MP_CHECK(strcmp(s.dnnl_runtime, "OpenMP") == 0);
        MP_CHECKF(s.openmp_lib[0] && s.omp_max_threads >= 1, "lib '%s' threads %d", s.openmp_lib, s.omp_max_threads);
    }
    /* Without an ISA cap oneDNN dispatches to the best ISA it knows; the
     * probe's own expectation must agree (else doctor would warn wrongly). */
    if (!getenv("DNNL_MAX_CPU_ISA") && !getenv("ONEDNN_MAX_CPU_ISA")) {
        MP_CHECKF(s.dnnl_isa == s.dnnl_isa_best, "oneDNN %s, probe expects %s", s.dnnl_isa_name, s.dnnl_isa_best_name);
        MP_CHECK(!has_warning(&s, "dnnl_isa_low", NULL, 0));
    }
#else
    MP_CHECK(s.dnnl_built == 0);
    MP_CHECK(has_warning(&s, "dnnl_missing", NULL, 0));
#endif
}

static void test_cuda_probe_consistent(void) {
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.skip_mpi = 1};
    MP_CHECK_OK(mp_sysinfo_probe_opts(&s, &o));
    char line[256];
    mp_sysinfo_gpu_summary(&s, line, sizeof line);
    void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv) {
        /* This machine (no NVIDIA driver): reported in plain words, no GPU. */
        MP_CHECK(!s.cuda_driver_found && s.gpu_count == 0);
        MP_CHECKF(strstr(line, "GPU backend unavailable") != NULL, "%s", line);
        int toolkit = access("/usr/local/cuda/include/cuda.h", R_OK) == 0;
        if (toolkit) {
            MP_CHECK(s.cuda_toolkit_dir[0] != '\0');
            MP_CHECKF(strstr(line, "no NVIDIA driver") != NULL, "%s", line);
            MP_CHECK(has_warning(&s, "cuda_no_driver", NULL, 0));
        }
    } else {
        dlclose(drv);
        MP_CHECK(s.cuda_driver_found && s.cuda_driver_version > 0);
        if (s.cuda_init_rc == 0 && s.gpu_count > 0) {
            MP_CHECK(s.gpus[0].name[0] != '\0' && s.gpus[0].total_mem > 0 && s.gpus[0].cc_major >= 3);
            MP_CHECKF(strstr(line, "usable") != NULL, "%s", line);
        }
    }
    /* Runtime, cuDNN and NCCL versions agree with what dlopen finds here. */
    void *rt = dlopen("libcudart.so", RTLD_NOW | RTLD_LOCAL);
    if (rt) {
        int (*fn)(int *);
        void *sym = dlsym(rt, "cudaRuntimeGetVersion");
        memcpy(&fn, &sym, sizeof sym);
        int v = 0;
        MP_CHECK(fn && fn(&v) == 0);
        MP_CHECKF(s.cudart_version == v, "%d vs %d", s.cudart_version, v);
        if (s.cuda_toolkit_version[0]) {
            char want[16];
            mp_sysinfo_cuda_version_str(v, want, sizeof want);
            MP_CHECKF(strncmp(s.cuda_toolkit_version, want, strlen(want)) == 0, "toolkit %s, runtime %s",
                      s.cuda_toolkit_version, want);
        }
    }
    void *dnn = dlopen("libcudnn.so", RTLD_NOW | RTLD_LOCAL);
    if (dnn) {
        size_t (*fn)(void);
        void *sym = dlsym(dnn, "cudnnGetVersion");
        memcpy(&fn, &sym, sizeof sym);
        MP_CHECK(fn && (size_t)s.cudnn_version == fn());
    }
}

static void test_mpi_probe_consistent(void) {
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.skip_cuda = 1};
    MP_CHECK_OK(mp_sysinfo_probe_opts(&s, &o));
    void *lib = dlopen("libmpi.so.40", RTLD_NOW | RTLD_LOCAL);
    if (lib) {
        MP_CHECK(s.mpi_lib_found);
        MP_CHECKF(strstr(s.mpi_lib_version, "MPI") != NULL, "'%s'", s.mpi_lib_version);
        MP_CHECK(s.mpi_std_major >= 2);
        MP_CHECK(!has_warning(&s, "no_mpi", NULL, 0));
    } else {
        MP_CHECK(!s.mpi_lib_found);
        MP_CHECK(has_warning(&s, "no_mpi", NULL, 0));
    }
    int on_path = system("command -v mpirun >/dev/null 2>&1 || command -v mpiexec >/dev/null 2>&1") == 0;
    MP_CHECK(on_path == (s.mpirun_path[0] != '\0'));
}

/* ---- fake /proc and /sys trees ---- */

static void put(const char *root, const char *rel, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(const char *root, const char *rel, const char *fmt, ...) {
    char path[1024], dir[1024];
    snprintf(path, sizeof path, "%s%s", root, rel);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    mp_mkdir_p(dir);
    FILE *f = fopen(path, "w");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static void fake_cpuinfo(const char *root, int with_topology_fields) {
    char buf[4096];
    size_t len = 0;
    for (int cpu = 0; cpu < 4; cpu++) {
        len += (size_t)snprintf(buf + len, sizeof buf - len, "processor\t: %d\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU 9000\n",
                                cpu);
        if (with_topology_fields)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "physical id\t: 0\ncore id\t\t: %d\n", cpu % 2);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "flags\t\t: fpu avx avx2\n\n");
    }
    put(root, "/proc/cpuinfo", "%s", buf);
}

static void test_fake_root_cgroup_v2(void) {
    char root[600];
    snprintf(root, sizeof root, "%s/v2", mp_test_tmpdir("sysinfo"));
    fake_cpuinfo(root, 0);
    put(root, "/proc/meminfo", "MemTotal:        8000000 kB\nMemFree:          500000 kB\nMemAvailable:    1000000 kB\n");
    put(root, "/sys/devices/system/cpu/online", "0-3\n");
    for (int cpu = 0; cpu < 4; cpu++) {
        char rel[128];
        snprintf(rel, sizeof rel, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        put(root, rel, "%d\n", cpu % 2); /* two cores, two threads each */
        snprintf(rel, sizeof rel, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        put(root, rel, "0\n");
    }
    put(root, "/sys/devices/system/cpu/cpu0/cache/index0/level", "1\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index0/type", "Data\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index0/size", "48K\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index1/level", "1\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index1/type", "Instruction\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index1/size", "32K\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index2/level", "2\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index2/type", "Unified\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index2/size", "2048K\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index3/level", "3\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index3/type", "Unified\n");
    put(root, "/sys/devices/system/cpu/cpu0/cache/index3/size", "32M\n");
    put(root, "/sys/devices/system/node/online", "0-1\n");
    put(root, "/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
    put(root, "/proc/self/cgroup", "0::/job/step\n");
    put(root, "/sys/fs/cgroup/cgroup.controllers", "cpu memory\n");
    /* The quota sits on the parent, the memory limit on the leaf. */
    put(root, "/sys/fs/cgroup/job/cpu.max", "150000 100000\n");
    put(root, "/sys/fs/cgroup/job/memory.max", "max\n");
    put(root, "/sys/fs/cgroup/job/step/cpu.max", "max 100000\n");
    put(root, "/sys/fs/cgroup/job/step/memory.max", "2147483648\n");
    put(root, "/sys/fs/cgroup/job/step/memory.current", "1073741824\n");

    char *saved = getenv("OMP_NUM_THREADS") ? strdup(getenv("OMP_NUM_THREADS")) : NULL;
    unsetenv("OMP_NUM_THREADS");
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.root = root, .skip_mpi = 1, .skip_cuda = 1};
    int rc = mp_sysinfo_probe_opts(&s, &o);
    if (saved) setenv("OMP_NUM_THREADS", saved, 1);
    free(saved);
    MP_CHECK_OK(rc);
    MP_CHECKF(strcmp(s.cpu_model, "Test CPU 9000") == 0, "'%s'", s.cpu_model);
    MP_CHECK(s.logical_cpus == 4 && s.physical_cores == 2 && s.sockets == 1);
    MP_CHECK(s.affinity_cpus == 4 && s.affinity_cores == 2);
    MP_CHECK(s.numa_nodes == 2);
    MP_CHECK(s.cache_l1d == 48 * 1024 && s.cache_l2 == 2048 * 1024 && s.cache_l3 == 32u << 20);
    MP_CHECKF(strcmp(s.thp_mode, "madvise") == 0, "'%s'", s.thp_mode);
    MP_CHECK_NEAR(s.cgroup_cpus, 1.5, 1e-12);
    MP_CHECK(s.threads_default == 1); /* 2 cores, capped by the 1.5-CPU quota */
    MP_CHECK(s.mem_total == 8000000ull * 1024 && s.mem_available == 1000000ull * 1024);
    MP_CHECK(s.cgroup_mem_limit == 2147483648ull && s.cgroup_mem_usage == 1073741824ull);
    MP_CHECK(s.mem_usable == 1000000ull * 1024); /* MemAvailable is below limit - usage */
    char text[256];
    MP_CHECK(has_warning(&s, "low_memory", text, sizeof text));
    MP_CHECKF(strstr(text, "cgroup") != NULL, "%s", text);
    MP_CHECK(has_warning(&s, "cgroup_cpu_quota", text, sizeof text));
    MP_CHECKF(strstr(text, "1.5 CPUs") && strstr(text, "4 CPUs") && strstr(text, "1 thread"), "%s", text);
}

static void test_fake_root_cgroup_v1_no_sysfs(void) {
    char root[600];
    snprintf(root, sizeof root, "%s/v1", mp_test_tmpdir("sysinfo"));
    fake_cpuinfo(root, 1);
    put(root, "/proc/meminfo", "MemTotal:       16000000 kB\nMemAvailable:   12000000 kB\n");
    put(root, "/proc/self/cgroup", "11:memory:/grp\n4:cpu,cpuacct:/grp\n1:name=systemd:/\n");
    put(root, "/sys/fs/cgroup/cpu,cpuacct/grp/cpu.cfs_quota_us", "50000\n");
    put(root, "/sys/fs/cgroup/cpu,cpuacct/grp/cpu.cfs_period_us", "100000\n");
    put(root, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    put(root, "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    put(root, "/sys/fs/cgroup/memory/grp/memory.limit_in_bytes", "4294967296\n");
    put(root, "/sys/fs/cgroup/memory/grp/memory.usage_in_bytes", "1073741824\n");
    put(root, "/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");

    setenv("OMP_NUM_THREADS", "3", 1);
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.root = root, .skip_mpi = 1, .skip_cuda = 1};
    int rc = mp_sysinfo_probe_opts(&s, &o);
    unsetenv("OMP_NUM_THREADS");
    MP_CHECK_OK(rc);
    /* No sysfs: topology from the "physical id" / "core id" lines. */
    MP_CHECK(s.logical_cpus == 4 && s.physical_cores == 2);
    MP_CHECK_NEAR(s.cgroup_cpus, 0.5, 1e-12);
    MP_CHECK(s.omp_num_threads == 3 && s.threads_default == 3);
    MP_CHECK(s.cgroup_mem_limit == 4294967296ull && s.cgroup_mem_usage == 1073741824ull);
    MP_CHECK(s.mem_usable == 3221225472ull); /* limit - usage < MemAvailable */
    MP_CHECK(has_warning(&s, "threads_oversubscribed", NULL, 0));
    MP_CHECK(!has_warning(&s, "low_memory", NULL, 0));
}

static void test_fake_root_empty_fails(void) {
    char root[600];
    snprintf(root, sizeof root, "%s/empty", mp_test_tmpdir("sysinfo"));
    mp_mkdir_p(root);
    static mp_sysinfo_t s;
    mp_sysinfo_opts_t o = {.root = root, .skip_mpi = 1, .skip_cuda = 1};
    MP_CHECK(mp_sysinfo_probe_opts(&s, &o) == MP_ERR_IO);
    MP_CHECK(strstr(mp_error_message(), root) != NULL);
    MP_CHECK(mp_sysinfo_probe_opts(NULL, &o) == MP_ERR_ARG);
}

/* ---- warnings and verdicts from hand-made results ---- */

static void base_info(mp_sysinfo_t *s) {
    memset(s, 0, sizeof *s);
    s->isa_cpu = s->isa_usable = MP_ISA_AVX | MP_ISA_FMA | MP_ISA_AVX2 | MP_ISA_AVX512F | MP_ISA_AVX512BW |
                                 MP_ISA_AVX512VL | MP_ISA_AVX512DQ | MP_ISA_AVX512CD | MP_ISA_AVX512_VNNI |
                                 MP_ISA_AVX512_BF16;
    s->logical_cpus = s->affinity_cpus = 8;
    s->physical_cores = s->affinity_cores = 4;
    s->threads_default = 4;
    s->mem_total = s->mem_available = s->mem_usable = 64ull << 30;
    s->dnnl_built = 1;
    s->dnnl_isa = s->dnnl_isa_best = 0xe7;
    s->mpi_lib_found = 1;
    snprintf(s->mpirun_path, sizeof s->mpirun_path, "/usr/bin/mpirun");
}

static void test_warnings_quiet_machine(void) {
    static mp_sysinfo_t s;
    base_info(&s);
    MP_CHECKF(mp_sysinfo_warnings(&s, NULL, 0) == 0, "%d warnings", mp_sysinfo_warnings(&s, NULL, 0));
    char line[256];
    mp_sysinfo_gpu_summary(&s, line, sizeof line);
    MP_CHECK(strcmp(line, "no NVIDIA driver or CUDA toolkit: GPU backend unavailable (CPU only)") == 0);
}

static void test_warnings_each_problem(void) {
    static mp_sysinfo_t s;
    char text[256];
    base_info(&s);
    s.isa_usable &= ~(uint32_t)MP_ISA_AVX512_BF16;
    MP_CHECK(has_warning(&s, "no_bf16", text, sizeof text) && strstr(text, "AVX512_BF16"));

    base_info(&s);
    s.isa_usable = MP_ISA_AVX | MP_ISA_FMA | MP_ISA_AVX2; /* OS without ZMM state */
    s.xcr0 = 0x7;
    MP_CHECK(has_warning(&s, "os_no_avx512", text, sizeof text) && strstr(text, "XCR0=0x7"));

    base_info(&s);
    s.dnnl_isa = 0x7;
    snprintf(s.dnnl_isa_name, sizeof s.dnnl_isa_name, "avx2");
    snprintf(s.dnnl_isa_best_name, sizeof s.dnnl_isa_best_name, "avx512_core_bf16");
    MP_CHECK(has_warning(&s, "dnnl_isa_low", text, sizeof text));
    MP_CHECKF(strstr(text, "avx2") && strstr(text, "avx512_core_bf16"), "%s", text);

    base_info(&s);
    s.dnnl_built = 0;
    MP_CHECK(has_warning(&s, "dnnl_missing", NULL, 0));

    base_info(&s);
    s.omp_num_threads = 6; /* <= 8 CPUs, > 4 cores */
    MP_CHECK(has_warning(&s, "threads_smt", NULL, 0) && !has_warning(&s, "threads_oversubscribed", NULL, 0));
    s.omp_num_threads = 16;
    MP_CHECK(has_warning(&s, "threads_oversubscribed", text, sizeof text) && strstr(text, "use at most 8"));
    s.omp_num_threads = -1;
    snprintf(s.omp_num_threads_env, sizeof s.omp_num_threads_env, "lots");
    MP_CHECK(has_warning(&s, "omp_invalid", text, sizeof text) && strstr(text, "'lots'"));

    base_info(&s);
    s.mem_usable = 1ull << 30;
    MP_CHECK(has_warning(&s, "low_memory", text, sizeof text) && strstr(text, "1.0 GiB"));

    base_info(&s);
    s.mpi_lib_found = 0;
    MP_CHECK(has_warning(&s, "no_mpi", text, sizeof text) && strstr(text, "multi-process training unavailable"));
    base_info(&s);
    s.mpirun_path[0] = '\0';
    MP_CHECK(has_warning(&s, "no_mpirun", NULL, 0));
}

static void test_warnings_cuda(void) {
    static mp_sysinfo_t s;
    char text[256], line[256];
    base_info(&s);
    snprintf(s.cuda_toolkit_dir, sizeof s.cuda_toolkit_dir, "/usr/local/cuda-13.0");
    snprintf(s.cuda_toolkit_version, sizeof s.cuda_toolkit_version, "13.0");
    s.cudart_version = 13000;
    MP_CHECK(has_warning(&s, "cuda_no_driver", text, sizeof text));
    MP_CHECKF(strcmp(text, "CUDA toolkit 13.0 found, no NVIDIA driver: GPU backend unavailable") == 0, "%s", text);

    /* Driver older than the runtime. */
    s.cuda_driver_found = 1;
    s.cuda_driver_version = 12020;
    s.gpu_count = 1;
    snprintf(s.gpus[0].name, sizeof s.gpus[0].name, "NVIDIA A100-SXM4-80GB");
    s.gpus[0].cc_major = 8;
    s.cudnn_version = 91900;
    s.nccl_version = 22809;
    MP_CHECK(!has_warning(&s, "cuda_no_driver", NULL, 0));
    MP_CHECK(has_warning(&s, "cuda_driver_old", text, sizeof text));
    MP_CHECKF(strstr(text, "CUDA 12.2") && strstr(text, "runtime is 13.0"), "%s", text);
    mp_sysinfo_gpu_summary(&s, line, sizeof line);
    MP_CHECKF(strstr(line, "1 GPU usable (NVIDIA A100-SXM4-80GB, sm_80)") != NULL, "%s", line);
    s.cudnn_version = 0;
    s.nccl_version = 0;
    MP_CHECK(has_warning(&s, "no_cudnn", NULL, 0) && has_warning(&s, "no_nccl", NULL, 0));

    /* Driver present, cuInit fails. */
    s.gpu_count = 0;
    s.cuda_init_rc = 100;
    snprintf(s.cuda_init_error, sizeof s.cuda_init_error, "CUDA_ERROR_NO_DEVICE");
    MP_CHECK(has_warning(&s, "cuda_init_failed", text, sizeof text) && strstr(text, "CUDA_ERROR_NO_DEVICE"));
    mp_sysinfo_gpu_summary(&s, line, sizeof line);
    MP_CHECKF(strstr(line, "no usable GPU") && strstr(line, "CUDA_ERROR_NO_DEVICE"), "%s", line);

    /* Warnings beyond `max` are counted, not written. */
    mp_sysinfo_warning_t one[1];
    int total = mp_sysinfo_warnings(&s, one, 1);
    MP_CHECK(total >= 2 && one[0].code[0] != '\0');
}

static void test_version_strings(void) {
    char b[32];
    MP_CHECK(strcmp(mp_sysinfo_cuda_version_str(13000, b, sizeof b), "13.0") == 0);
    MP_CHECK(strcmp(mp_sysinfo_cuda_version_str(12020, b, sizeof b), "12.2") == 0);
    MP_CHECK(strcmp(mp_sysinfo_cuda_version_str(11080, b, sizeof b), "11.8") == 0);
    MP_CHECK(strcmp(mp_sysinfo_cuda_version_str(0, b, sizeof b), "none") == 0);
    MP_CHECK(strcmp(mp_sysinfo_lib_version_str(91900, b, sizeof b), "9.19.0") == 0);
    MP_CHECK(strcmp(mp_sysinfo_lib_version_str(8902, b, sizeof b), "8.9.2") == 0);
    MP_CHECK(strcmp(mp_sysinfo_lib_version_str(22809, b, sizeof b), "2.28.9") == 0);
    MP_CHECK(strcmp(mp_sysinfo_lib_version_str(2708, b, sizeof b), "2.7.8") == 0);
}

/* The doctor command itself: exit 0, sections present, --json parses. */
static void test_doctor_command(void) {
    const char *medpipe = getenv("MEDPIPE");
    char cmd[1024], out[600];
    if (!medpipe) medpipe = "build/medpipe";
    snprintf(out, sizeof out, "%s/doctor.txt", mp_test_tmpdir("sysinfo"));
    snprintf(cmd, sizeof cmd, "%s doctor > %s 2>&1", medpipe, out);
    MP_CHECK(system(cmd) == 0);
    uint8_t *text = NULL;
    size_t len = 0;
    MP_CHECK_OK(mp_file_read_all(out, &text, &len));
    const char *want[] = {"CPU\n", "memory\n", "oneDNN\n", "threads\n", "MPI\n", "CUDA\n", "medpipe will use\n", "warnings:"};
    int ok = 1;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) ok &= strstr((char *)text, want[i]) != NULL;
    free(text);
    MP_CHECK(ok);
    snprintf(cmd, sizeof cmd, "%s doctor --json > %s", medpipe, out);
    MP_CHECK(system(cmd) == 0);
    MP_CHECK_OK(mp_file_read_all(out, &text, &len));
    cJSON *doc = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    const cJSON *cpu = cJSON_GetObjectItemCaseSensitive(doc, "cpu");
    const cJSON *ncpu = cJSON_GetObjectItemCaseSensitive(cpu, "logical_cpus");
    const cJSON *warn = cJSON_GetObjectItemCaseSensitive(doc, "warnings");
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "cuda"), "status");
    int json_ok = cJSON_IsNumber(ncpu) && ncpu->valueint == (int)sysconf(_SC_NPROCESSORS_ONLN) && cJSON_IsArray(warn) &&
                  cJSON_IsString(status) && strstr(status->valuestring, "GPU") != NULL;
    cJSON_Delete(doc);
    MP_CHECK(json_ok);
    snprintf(cmd, sizeof cmd, "%s doctor --nonsense > /dev/null 2>&1", medpipe);
    int rc = system(cmd);
    MP_CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}

int main(void) {
    MP_RUN(test_probe_live_sane);
    MP_RUN(test_isa_matches_proc_cpuinfo);
    MP_RUN(test_onednn_matches_library);
    MP_RUN(test_cuda_probe_consistent);
    MP_RUN(test_mpi_probe_consistent);
    MP_RUN(test_fake_root_cgroup_v2);
    MP_RUN(test_fake_root_cgroup_v1_no_sysfs);
    MP_RUN(test_fake_root_empty_fails);
    MP_RUN(test_warnings_quiet_machine);
    MP_RUN(test_warnings_each_problem);
    MP_RUN(test_warnings_cuda);
    MP_RUN(test_version_strings);
    MP_RUN(test_doctor_command);
    return mp_test_summary();
}
