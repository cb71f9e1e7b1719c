/* sysinfo, CPU side: ISA features from cpuid checked against the register
 * state the OS enables (XCR0), topology from sysfs (or /proc/cpuinfo), process
 * affinity, cgroup v1/v2 CPU and memory limits, /proc/meminfo, the OpenMP
 * runtime and oneDNN. Everything is read, nothing is printed. */
#include "core/sysinfo_internal.h"
#include "medpipe/core.h"

#include <ctype.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <inttypes.h>
#include <link.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define MP_X86 1
#endif

#ifdef MP_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif

/* Topology arrays are sized by the CPU list; this bounds them. */
#define MAX_CPUS 8192
/* /proc/cpuinfo grows ~1.5 KiB per CPU; more than this is not a real file. */
#define CPUINFO_CAP (16u << 20)

/* oneDNN ISA values (the dnnl_cpu_isa_t bit masks of oneDNN 2.x), kept here
 * so the expected ISA can be computed without the oneDNN header. */
enum {
    DNNL_ISA_SSE41 = 0x1,
    DNNL_ISA_AVX = 0x3,
    DNNL_ISA_AVX2 = 0x7,
    DNNL_ISA_AVX512_CORE = 0x27,
    DNNL_ISA_AVX512_CORE_VNNI = 0x67,
    DNNL_ISA_AVX512_CORE_BF16 = 0xe7,
    DNNL_ISA_AVX512_CORE_AMX = 0x3e7,
    DNNL_ISA_AVX2_VNNI = 0x407
};

static const struct {
    uint32_t flag;
    const char *name;
} isa_names[MP_ISA_COUNT] = {
    {MP_ISA_SSE41, "sse4_1"},         {MP_ISA_AVX, "avx"},           {MP_ISA_F16C, "f16c"},
    {MP_ISA_FMA, "fma"},              {MP_ISA_AVX2, "avx2"},         {MP_ISA_AVX_VNNI, "avx_vnni"},
    {MP_ISA_AVX512F, "avx512f"},      {MP_ISA_AVX512DQ, "avx512dq"}, {MP_ISA_AVX512CD, "avx512cd"},
    {MP_ISA_AVX512BW, "avx512bw"},    {MP_ISA_AVX512VL, "avx512vl"}, {MP_ISA_AVX512_VNNI, "avx512_vnni"},
    {MP_ISA_AVX512_BF16, "avx512_bf16"}, {MP_ISA_AVX512_FP16, "avx512_fp16"},
    {MP_ISA_AMX_TILE, "amx_tile"},    {MP_ISA_AMX_BF16, "amx_bf16"}, {MP_ISA_AMX_INT8, "amx_int8"},
};

const char *mp_isa_flag_name(uint32_t flag) {
    for (int i = 0; i < MP_ISA_COUNT; i++)
        if (isa_names[i].flag == flag) return isa_names[i].name;
    return NULL;
}

/* ---------------------------------------------------------------- files */

void mp_sysinfo_copy(char *dst, size_t size, const char *src) {
    if (!size) return;
    size_t n = src ? strlen(src) : 0;
    if (n >= size) n = size - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

static void join_path(char *out, size_t size, const char *root, const char *path) {
    snprintf(out, size, "%s%s", root ? root : "", path);
}

int mp_sysinfo_read_text(const char *root, const char *path, char *buf, size_t size) {
    char full[1024];
    join_path(full, sizeof full, root, path);
    if (size == 0) return -1;
    buf[0] = '\0';
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t r = read(fd, buf + len, size - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (int)len;
}

/* Whole file into a malloc'd NUL-terminated buffer (at most `cap` bytes). */
static char *read_alloc(const char *root, const char *path, size_t cap) {
    char full[1024];
    join_path(full, sizeof full, root, path);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t len = 0, size = 16384;
    char *buf = malloc(size);
    while (buf) {
        if (len + 1 >= size) {
            if (size >= cap) break;
            char *nb = realloc(buf, size * 2);
            if (!nb) break;
            buf = nb;
            size *= 2;
        }
        ssize_t r = read(fd, buf + len, size - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    if (buf) buf[len] = '\0';
    return buf;
}

/* Reads one unsigned decimal from a file; returns 0 on success. "max" reads
 * as UINT64_MAX (cgroup v2 "no limit"). */
static int read_u64(const char *root, const char *path, uint64_t *out) {
    char buf[64];
    if (mp_sysinfo_read_text(root, path, buf, sizeof buf) <= 0) return -1;
    if (strncmp(buf, "max", 3) == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    char *end;
    if (!isdigit((unsigned char)buf[0])) return -1;
    *out = strtoull(buf, &end, 10);
    return 0;
}

static int read_int(const char *root, const char *path, long *out) {
    char buf[64];
    if (mp_sysinfo_read_text(root, path, buf, sizeof buf) <= 0) return -1;
    char *end;
    long v = strtol(buf, &end, 10);
    if (end == buf) return -1;
    *out = v;
    return 0;
}

/* Parses a kernel CPU list ("0-3,8,10-11") into set[0..n). Returns the
 * number of entries set, or -1 when malformed. */
static int parse_cpu_list(const char *s, unsigned char *set, int n) {
    int count = 0;
    while (*s && *s != '\n') {
        char *end;
        long a = strtol(s, &end, 10), b;
        if (end == s || a < 0) return -1;
        s = end;
        b = a;
        if (*s == '-') {
            b = strtol(s + 1, &end, 10);
            if (end == s + 1 || b < a) return -1;
            s = end;
        }
        for (long i = a; i <= b && i < n; i++) {
            if (!set[i]) count++;
            set[i] = 1;
        }
        if (*s == ',') s++;
        else if (*s && *s != '\n') return -1;
    }
    return count;
}

/* ---------------------------------------------------------------- cpuid */

#ifdef MP_X86
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void probe_cpuid(mp_sysinfo_t *info) {
    unsigned a, b, c, d;
    unsigned max_leaf = (unsigned)__get_cpuid_max(0, NULL);
    if (max_leaf < 1) return;
    __cpuid(0, a, b, c, d);
    memcpy(info->cpu_vendor, &b, 4);
    memcpy(info->cpu_vendor + 4, &d, 4);
    memcpy(info->cpu_vendor + 8, &c, 4);
    info->cpu_vendor[12] = '\0';

    __cpuid(1, a, b, c, d);
    int family = (int)((a >> 8) & 0xf), model = (int)((a >> 4) & 0xf);
    if (family == 0xf) family += (int)((a >> 20) & 0xff);
    if (family == 0x6 || family >= 0xf) model |= (int)((a >> 16) & 0xf) << 4;
    info->cpu_family = family;
    info->cpu_model_id = model;
    info->cpu_stepping = (int)(a & 0xf);
    uint32_t isa = 0;
    if (c & (1u << 19)) isa |= MP_ISA_SSE41;
    if (c & (1u << 28)) isa |= MP_ISA_AVX;
    if (c & (1u << 29)) isa |= MP_ISA_F16C;
    if (c & (1u << 12)) isa |= MP_ISA_FMA;
    int osxsave = (c >> 27) & 1;

    if (max_leaf >= 7) {
        unsigned max_sub;
        __cpuid_count(7, 0, max_sub, b, c, d);
        if (b & (1u << 5)) isa |= MP_ISA_AVX2;
        if (b & (1u << 16)) isa |= MP_ISA_AVX512F;
        if (b & (1u << 17)) isa |= MP_ISA_AVX512DQ;
        if (b & (1u << 28)) isa |= MP_ISA_AVX512CD;
        if (b & (1u << 30)) isa |= MP_ISA_AVX512BW;
        if (b & (1u << 31)) isa |= MP_ISA_AVX512VL;
        if (c & (1u << 11)) isa |= MP_ISA_AVX512_VNNI;
        if (d & (1u << 23)) isa |= MP_ISA_AVX512_FP16;
        if (d & (1u << 22)) isa |= MP_ISA_AMX_BF16;
        if (d & (1u << 24)) isa |= MP_ISA_AMX_TILE;
        if (d & (1u << 25)) isa |= MP_ISA_AMX_INT8;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            if (a & (1u << 4)) isa |= MP_ISA_AVX_VNNI;
            if (a & (1u << 5)) isa |= MP_ISA_AVX512_BF16;
        }
    }
    info->isa_cpu = isa;

    /* A feature is usable only when the OS saves its registers on context
     * switch: YMM (XCR0 bits 1-2), opmask/ZMM (5-7), AMX tiles (17-18). */
    uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    info->xcr0 = xcr0;
    const uint32_t avx_dep = MP_ISA_AVX | MP_ISA_F16C | MP_ISA_FMA | MP_ISA_AVX2 | MP_ISA_AVX_VNNI;
    const uint32_t avx512_dep = MP_ISA_AVX512F | MP_ISA_AVX512DQ | MP_ISA_AVX512CD | MP_ISA_AVX512BW |
                                MP_ISA_AVX512VL | MP_ISA_AVX512_VNNI | MP_ISA_AVX512_BF16 | MP_ISA_AVX512_FP16;
    const uint32_t amx_dep = MP_ISA_AMX_TILE | MP_ISA_AMX_BF16 | MP_ISA_AMX_INT8;
    uint32_t usable = isa;
    if ((xcr0 & 0x6) != 0x6) usable &= ~(avx_dep | avx512_dep | amx_dep);
    if ((xcr0 & 0xe6) != 0xe6) usable &= ~avx512_dep;
    if ((xcr0 & 0x60000) != 0x60000) usable &= ~amx_dep;
    info->isa_usable = usable;

    if ((unsigned)__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        unsigned regs[12];
        for (unsigned i = 0; i < 3; i++)
            __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
        char brand[49];
        memcpy(brand, regs, 48);
        brand[48] = '\0';
        const char *p = brand;
        while (*p == ' ') p++;
        mp_sysinfo_copy(info->cpu_model, sizeof info->cpu_model, p);
    }
}
#else
static void probe_cpuid(mp_sysinfo_t *info) { (void)info; }
#endif

/* ---------------------------------------------------------------- topology */

/* Value of "key : value" on the line at p (key matched exactly); NULL if not. */
static const char *cpuinfo_value(const char *line, const char *key) {
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0) return NULL;
    const char *p = line + k;
    while (*p == ' ' || *p == '\t') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

/* Model name from /proc/cpuinfo; topology fallback when sysfs lacks it. */
static void parse_cpuinfo(mp_sysinfo_t *info, const char *text, int *cores_fallback, int *logical_fallback) {
    int logical = 0;
    long phys = 0;
    int64_t *keys = NULL;
    int nkeys = 0, cap = 0;
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *v;
        if ((v = cpuinfo_value(line, "model name")) && logical <= 1) {
            size_t n = strcspn(v, "\n");
            char tmp[128];
            if (n >= sizeof tmp) n = sizeof tmp - 1;
            memcpy(tmp, v, n);
            tmp[n] = '\0';
            if (n) mp_sysinfo_copy(info->cpu_model, sizeof info->cpu_model, tmp);
        } else if (cpuinfo_value(line, "processor")) {
            logical++;
        } else if ((v = cpuinfo_value(line, "physical id"))) {
            phys = strtol(v, NULL, 10);
        } else if ((v = cpuinfo_value(line, "core id")) && nkeys < MAX_CPUS) {
            if (nkeys == cap) {
                int ncap = cap ? cap * 2 : 64;
                int64_t *nk = realloc(keys, (size_t)ncap * sizeof *nk);
                if (!nk) break;
                keys = nk;
                cap = ncap;
            }
            int64_t key = ((int64_t)phys << 32) | (int64_t)(strtol(v, NULL, 10) & 0xffffffff);
            int seen = 0;
            for (int i = 0; i < nkeys && !seen; i++) seen = keys[i] == key;
            if (!seen) keys[nkeys++] = key;
        }
    }
    free(keys);
    *logical_fallback = logical;
    *cores_fallback = nkeys ? nkeys : logical;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int count_distinct(int64_t *keys, int n) {
    if (n == 0) return 0;
    qsort(keys, (size_t)n, sizeof *keys, cmp_i64);
    int d = 1;
    for (int i = 1; i < n; i++) d += keys[i] != keys[i - 1];
    return d;
}

/* Topology key of one CPU from sysfs: package, die and core id. */
static int cpu_core_key(const char *root, int cpu, int64_t *key, long *package) {
    char path[128];
    long pkg = 0, die = 0, core = 0;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
    if (read_int(root, path, &core)) return -1;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
    if (read_int(root, path, &pkg)) pkg = 0;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/die_id", cpu);
    if (read_int(root, path, &die)) die = 0;
    *key = ((int64_t)(pkg & 0xffff) << 40) | ((int64_t)(die & 0xff) << 32) | (int64_t)(core & 0xffffffff);
    *package = pkg;
    return 0;
}

/* CPUs this process may run on (NULL root: sched_getaffinity). */
static void affinity_set(const char *root, const unsigned char *online, unsigned char *aff, int n) {
    if (root) {
        memcpy(aff, online, (size_t)n);
        return;
    }
    cpu_set_t *set = CPU_ALLOC(MAX_CPUS);
    size_t sz = CPU_ALLOC_SIZE(MAX_CPUS);
    if (!set || sched_getaffinity(0, sz, set) != 0) {
        memcpy(aff, online, (size_t)n);
    } else {
        for (int i = 0; i < n; i++) aff[i] = online[i] && CPU_ISSET_S((size_t)i, sz, set);
    }
    if (set) CPU_FREE(set);
}

static void probe_topology(mp_sysinfo_t *info, const char *root, const char *cpuinfo) {
    int cores_fb = 0, logical_fb = 0;
    if (cpuinfo) parse_cpuinfo(info, cpuinfo, &cores_fb, &logical_fb);

    unsigned char *online = calloc(MAX_CPUS, 1), *aff = calloc(MAX_CPUS, 1);
    int64_t *keys = malloc(MAX_CPUS * sizeof *keys), *akeys = malloc(MAX_CPUS * sizeof *akeys);
    char list[4096];
    int n_online = -1;
    if (online && aff && keys && akeys && mp_sysinfo_read_text(root, "/sys/devices/system/cpu/online", list, sizeof list) > 0)
        n_online = parse_cpu_list(list, online, MAX_CPUS);
    if (n_online > 0) {
        affinity_set(root, online, aff, MAX_CPUS);
        int nk = 0, nak = 0, topo_ok = 1, n_aff = 0;
        int64_t pkgs[64];
        int npkg = 0;
        for (int cpu = 0; cpu < MAX_CPUS; cpu++) {
            if (!online[cpu]) continue;
            int64_t key;
            long pkg;
            n_aff += aff[cpu];
            if (cpu_core_key(root, cpu, &key, &pkg)) {
                topo_ok = 0;
                continue;
            }
            keys[nk++] = key;
            if (aff[cpu]) akeys[nak++] = key;
            int seen = 0;
            for (int i = 0; i < npkg && !seen; i++) seen = pkgs[i] == pkg;
            if (!seen && npkg < 64) pkgs[npkg++] = pkg;
        }
        info->logical_cpus = n_online;
        info->affinity_cpus = n_aff;
        if (topo_ok) {
            info->physical_cores = count_distinct(keys, nk);
            info->affinity_cores = count_distinct(akeys, nak);
            info->sockets = npkg;
        } else {
            /* No sysfs topology (some containers): assume no SMT among the allowed CPUs. */
            info->physical_cores = cores_fb > 0 ? cores_fb : n_online;
            info->affinity_cores = n_aff < info->physical_cores ? n_aff : info->physical_cores;
            info->sockets = 1;
        }
    } else if (logical_fb > 0) {
        info->logical_cpus = info->affinity_cpus = logical_fb;
        info->physical_cores = info->affinity_cores = cores_fb;
        info->sockets = 1;
    } else if (!root) {
        int n = mp_cpu_count();
        info->logical_cpus = info->affinity_cpus = info->physical_cores = info->affinity_cores = n;
        info->sockets = 1;
    }
    free(online);
    free(aff);
    free(keys);
    free(akeys);
}

/* Cache sizes seen by CPU 0 ("32K", "1024K", "32M"). */
static void probe_caches(mp_sysinfo_t *info, const char *root) {
    for (int i = 0; i < 10; i++) {
        char path[128], type[32], size[32];
        long level;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        if (read_int(root, path, &level)) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
        if (mp_sysinfo_read_text(root, path, type, sizeof type) <= 0) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (mp_sysinfo_read_text(root, path, size, sizeof size) <= 0) continue;
        char *end;
        uint64_t bytes = strtoull(size, &end, 10);
        if (*end == 'K') bytes <<= 10;
        else if (*end == 'M') bytes <<= 20;
        else if (*end == 'G') bytes <<= 30;
        if (level == 1 && strncmp(type, "Data", 4) == 0) info->cache_l1d = bytes;
        else if (level == 2 && strncmp(type, "Instruction", 11) != 0) info->cache_l2 = bytes;
        else if (level == 3) info->cache_l3 = bytes;
    }
}

static void probe_misc(mp_sysinfo_t *info, const char *root) {
    char buf[256];
    if (mp_sysinfo_read_text(root, "/sys/devices/system/node/online", buf, sizeof buf) > 0) {
        unsigned char *set = calloc(4096, 1);
        int n = set ? parse_cpu_list(buf, set, 4096) : -1;
        info->numa_nodes = n > 0 ? n : 0;
        free(set);
    }
    if (mp_sysinfo_read_text(root, "/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) > 0) {
        char *a = strchr(buf, '['), *b = a ? strchr(a, ']') : NULL;
        if (a && b) {
            *b = '\0';
            mp_sysinfo_copy(info->thp_mode, sizeof info->thp_mode, a + 1);
        }
    }
}

/* ---------------------------------------------------------------- cgroups */

/* The cgroup path of `controller` in /proc/self/cgroup: "0::/x" for v2
 * (controller NULL), "4:memory:/x" or "2:cpu,cpuacct:/x" for v1. */
static int cgroup_path(const char *text, const char *controller, char *out, size_t size) {
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *c1 = memchr(line, ':', len);
        const char *c2 = c1 ? memchr(c1 + 1, ':', len - (size_t)(c1 + 1 - line)) : NULL;
        if (c2) {
            size_t clen = (size_t)(c2 - c1 - 1), plen = len - (size_t)(c2 + 1 - line);
            int match = 0;
            if (!controller) {
                match = clen == 0 && strncmp(line, "0:", 2) == 0;
            } else {
                /* A comma-separated controller list must contain the name exactly. */
                const char *p = c1 + 1;
                size_t k = strlen(controller);
                while (p < c2 && !match) {
                    const char *q = memchr(p, ',', (size_t)(c2 - p));
                    if (!q) q = c2;
                    match = (size_t)(q - p) == k && strncmp(p, controller, k) == 0;
                    p = q + 1;
                }
            }
            if (match && plen < size) {
                memcpy(out, c2 + 1, plen);
                out[plen] = '\0';
                return 0;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

/* Walks from mount+path up to the mount root, calling fn at each existing
 * level; fn sees the directory (relative to root). */
typedef void (*cg_level_fn)(const char *root, const char *dir, int leaf, void *ctx);

static void cgroup_walk(const char *root, const char *mount, const char *path, cg_level_fn fn, void *ctx) {
    char rel[768], full[1024];
    snprintf(rel, sizeof rel, "%s%s", mount, strcmp(path, "/") == 0 ? "" : path);
    int leaf = 1;
    for (;;) {
        join_path(full, sizeof full, root, rel);
        if (access(full, F_OK) == 0) {
            fn(root, rel, leaf, ctx);
            leaf = 0;
        }
        size_t mlen = strlen(mount);
        char *slash = strrchr(rel, '/');
        if (strlen(rel) <= mlen || !slash || slash < rel + mlen) break;
        *slash = '\0';
    }
}

typedef struct {
    double cpus;          /* smallest quota seen (0 none) */
    uint64_t mem_limit;   /* smallest limit seen (0 none) */
    uint64_t mem_usage;   /* usage at the deepest level with a limit file */
    int have_usage;
    int v2;
} cg_ctx_t;

static void cg_take_cpus(cg_ctx_t *c, double cpus) {
    if (cpus > 0 && (c->cpus == 0 || cpus < c->cpus)) c->cpus = cpus;
}

static void cg_take_mem(cg_ctx_t *c, uint64_t limit) {
    /* v1 reports "unlimited" as a page-rounded INT64_MAX. */
    if (limit == 0 || limit >= ((uint64_t)1 << 62)) return;
    if (c->mem_limit == 0 || limit < c->mem_limit) c->mem_limit = limit;
}

static void cg_level(const char *root, const char *dir, int leaf, void *ctxp) {
    cg_ctx_t *c = ctxp;
    char path[1024], buf[128];
    (void)leaf;
    if (c->v2) {
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (mp_sysinfo_read_text(root, path, buf, sizeof buf) > 0 && strncmp(buf, "max", 3) != 0) {
            double quota = 0, period = 0;
            if (sscanf(buf, "%lf %lf", &quota, &period) == 2 && period > 0) cg_take_cpus(c, quota / period);
        }
        uint64_t v;
        snprintf(path, sizeof path, "%s/memory.max", dir);
        if (read_u64(root, path, &v) == 0) cg_take_mem(c, v);
        snprintf(path, sizeof path, "%s/memory.current", dir);
        if (!c->have_usage && read_u64(root, path, &v) == 0) c->mem_usage = v, c->have_usage = 1;
    }
}

static void cg1_cpu_level(const char *root, const char *dir, int leaf, void *ctxp) {
    cg_ctx_t *c = ctxp;
    char path[1024];
    long quota, period;
    (void)leaf;
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (read_int(root, path, &quota)) return;
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    if (read_int(root, path, &period)) return;
    if (quota > 0 && period > 0) cg_take_cpus(c, (double)quota / (double)period);
}

static void cg1_mem_level(const char *root, const char *dir, int leaf, void *ctxp) {
    cg_ctx_t *c = ctxp;
    char path[1024];
    uint64_t v;
    (void)leaf;
    snprintf(path, sizeof path, "%s/memory.limit_in_bytes", dir);
    if (read_u64(root, path, &v) == 0) cg_take_mem(c, v);
    snprintf(path, sizeof path, "%s/memory.usage_in_bytes", dir);
    if (!c->have_usage && read_u64(root, path, &v) == 0) c->mem_usage = v, c->have_usage = 1;
}

static void probe_cgroups(mp_sysinfo_t *info, const char *root) {
    char text[4096], path[512];
    if (mp_sysinfo_read_text(root, "/proc/self/cgroup", text, sizeof text) <= 0) return;
    cg_ctx_t c = {0};
    /* cgroup v2, mounted alone or (hybrid) under unified/. */
    if (cgroup_path(text, NULL, path, sizeof path) == 0) {
        static const char *mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
        for (int i = 0; i < 2; i++) {
            char probe[256], tmp[8];
            snprintf(probe, sizeof probe, "%s/cgroup.controllers", mounts[i]);
            if (mp_sysinfo_read_text(root, probe, tmp, sizeof tmp) < 0) continue;
            c.v2 = 1;
            cgroup_walk(root, mounts[i], path, cg_level, &c);
            break;
        }
    }
    /* cgroup v1 controllers. */
    if (cgroup_path(text, "cpu", path, sizeof path) == 0) {
        static const char *mounts[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"};
        for (int i = 0; i < 2; i++) cgroup_walk(root, mounts[i], path, cg1_cpu_level, &c);
    }
    if (cgroup_path(text, "memory", path, sizeof path) == 0) {
        c.have_usage = 0;
        cgroup_walk(root, "/sys/fs/cgroup/memory", path, cg1_mem_level, &c);
    }
    info->cgroup_cpus = c.cpus;
    info->cgroup_mem_limit = c.mem_limit;
    info->cgroup_mem_usage = c.mem_limit ? c.mem_usage : 0;
}

/* ---------------------------------------------------------------- memory */

static uint64_t meminfo_kb(const char *text, const char *key) {
    size_t k = strlen(key);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, key, k) == 0 && line[k] == ':') return strtoull(line + k + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line) line++;
    }
    return 0;
}

static void probe_memory(mp_sysinfo_t *info, const char *root) {
    char text[8192];
    if (mp_sysinfo_read_text(root, "/proc/meminfo", text, sizeof text) > 0) {
        info->mem_total = meminfo_kb(text, "MemTotal") << 10;
        uint64_t avail = meminfo_kb(text, "MemAvailable");
        if (!avail) avail = meminfo_kb(text, "MemFree") + meminfo_kb(text, "Cached");
        info->mem_available = avail << 10;
    } else if (!root) {
        long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
        if (pages > 0 && psize > 0) info->mem_total = (uint64_t)pages * (uint64_t)psize;
        if (avail > 0 && psize > 0) info->mem_available = (uint64_t)avail * (uint64_t)psize;
    }
    info->mem_usable = info->mem_available;
    if (info->cgroup_mem_limit) {
        uint64_t room = info->cgroup_mem_limit > info->cgroup_mem_usage ? info->cgroup_mem_limit - info->cgroup_mem_usage : 0;
        if (room < info->mem_usable || info->mem_usable == 0) info->mem_usable = room;
    }
}

/* ---------------------------------------------------------------- threads */

typedef struct {
    char *out;
    size_t size;
} omp_find_t;

static int find_omp_lib(struct dl_phdr_info *ph, size_t sz, void *ctxp) {
    omp_find_t *f = ctxp;
    (void)sz;
    const char *name = ph->dlpi_name ? strrchr(ph->dlpi_name, '/') : NULL;
    name = name ? name + 1 : ph->dlpi_name;
    if (!name) return 0;
    if (strncmp(name, "libgomp", 7) == 0 || strncmp(name, "libiomp5", 8) == 0 || strncmp(name, "libomp.", 7) == 0) {
        mp_sysinfo_copy(f->out, f->size, name);
        return 1;
    }
    return 0;
}

static void probe_threads(mp_sysinfo_t *info) {
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && *env) {
        mp_sysinfo_copy(info->omp_num_threads_env, sizeof info->omp_num_threads_env, env);
        char *end;
        long v = strtol(env, &end, 10);
        /* A nested list ("4,2") sets the outer level first. */
        info->omp_num_threads = (end != env && v > 0 && v <= 1000000 && (*end == '\0' || *end == ',')) ? (int)v : -1;
    }
    omp_find_t f = {info->openmp_lib, sizeof info->openmp_lib};
    dl_iterate_phdr(find_omp_lib, &f);
    if (info->openmp_lib[0]) {
        int (*max_threads)(void);
        void *sym = dlsym(RTLD_DEFAULT, "omp_get_max_threads");
        memcpy(&max_threads, &sym, sizeof sym);
        if (max_threads) info->omp_max_threads = max_threads();
    }
    int t = info->affinity_cores > 0 ? info->affinity_cores : (info->affinity_cpus > 0 ? info->affinity_cpus : 1);
    if (info->cgroup_cpus > 0 && t > (int)info->cgroup_cpus) t = (int)info->cgroup_cpus;
    if (t < 1) t = 1;
    if (info->omp_num_threads > 0) t = info->omp_num_threads;
    info->threads_default = t;
}

/* ---------------------------------------------------------------- oneDNN */

const char *mp_sysinfo_dnnl_isa_name(unsigned isa, char *buf, size_t size) {
    const char *name = NULL;
    switch (isa) {
    case 0: name = "all"; break;
    case DNNL_ISA_SSE41: name = "sse41"; break;
    case DNNL_ISA_AVX: name = "avx"; break;
    case DNNL_ISA_AVX2: name = "avx2"; break;
    case 0xf: name = "avx512_mic"; break;
    case 0x1f: name = "avx512_mic_4ops"; break;
    case DNNL_ISA_AVX512_CORE: name = "avx512_core"; break;
    case DNNL_ISA_AVX512_CORE_VNNI: name = "avx512_core_vnni"; break;
    case DNNL_ISA_AVX512_CORE_BF16: name = "avx512_core_bf16"; break;
    case DNNL_ISA_AVX512_CORE_AMX: name = "avx512_core_amx"; break;
    case DNNL_ISA_AVX2_VNNI: name = "avx2_vnni"; break;
    default: break;
    }
    if (name) mp_sysinfo_copy(buf, size, name);
    else snprintf(buf, size, "isa 0x%x", isa);
    return buf;
}

/* The oneDNN ISA that the usable features allow, in oneDNN's own order. */
static unsigned best_dnnl_isa(uint32_t u) {
    const uint32_t core = MP_ISA_AVX512F | MP_ISA_AVX512BW | MP_ISA_AVX512VL | MP_ISA_AVX512DQ | MP_ISA_AVX512CD;
    const uint32_t amx = MP_ISA_AMX_TILE | MP_ISA_AMX_BF16 | MP_ISA_AMX_INT8;
    if ((u & core) == core) {
        if (!(u & MP_ISA_AVX512_VNNI)) return DNNL_ISA_AVX512_CORE;
        if (!(u & MP_ISA_AVX512_BF16)) return DNNL_ISA_AVX512_CORE_VNNI;
        if ((u & amx) != amx) return DNNL_ISA_AVX512_CORE_BF16;
        return DNNL_ISA_AVX512_CORE_AMX;
    }
    if ((u & MP_ISA_AVX2) && (u & MP_ISA_AVX_VNNI)) return DNNL_ISA_AVX2_VNNI;
    if (u & MP_ISA_AVX2) return DNNL_ISA_AVX2;
    if (u & MP_ISA_AVX) return DNNL_ISA_AVX;
    if (u & MP_ISA_SSE41) return DNNL_ISA_SSE41;
    return 0;
}

static void probe_dnnl(mp_sysinfo_t *info) {
    info->dnnl_isa_best = best_dnnl_isa(info->isa_usable);
    mp_sysinfo_dnnl_isa_name(info->dnnl_isa_best, info->dnnl_isa_best_name, sizeof info->dnnl_isa_best_name);
    const char *env = getenv("ONEDNN_MAX_CPU_ISA");
    if (!env || !*env) env = getenv("DNNL_MAX_CPU_ISA");
    if (env) mp_sysinfo_copy(info->dnnl_max_cpu_isa_env, sizeof info->dnnl_max_cpu_isa_env, env);
#ifdef MP_HAVE_DNNL
    const dnnl_version_t *v = dnnl_version();
    info->dnnl_built = 1;
    info->dnnl_major = v->major;
    info->dnnl_minor = v->minor;
    info->dnnl_patch = v->patch;
    mp_sysinfo_copy(info->dnnl_hash, sizeof info->dnnl_hash, v->hash ? v->hash : "");
    const char *rt = "unknown";
    switch (v->cpu_runtime) {
    case DNNL_RUNTIME_SEQ: rt = "sequential"; break;
    case DNNL_RUNTIME_OMP: rt = "OpenMP"; break;
    case DNNL_RUNTIME_TBB: rt = "TBB"; break;
    case DNNL_RUNTIME_THREADPOOL: rt = "threadpool"; break;
    case DNNL_RUNTIME_NONE: rt = "none"; break;
    default: break;
    }
    mp_sysinfo_copy(info->dnnl_runtime, sizeof info->dnnl_runtime, rt);
    info->dnnl_isa = (unsigned)dnnl_get_effective_cpu_isa();
    mp_sysinfo_dnnl_isa_name(info->dnnl_isa, info->dnnl_isa_name, sizeof info->dnnl_isa_name);
#endif
}

/* ---------------------------------------------------------------- entry */

int mp_sysinfo_probe_opts(mp_sysinfo_t *info, const mp_sysinfo_opts_t *opts) {
    if (!info) return mp_error_set(MP_ERR_ARG, "sysinfo: NULL result");
    mp_sysinfo_opts_t none = {0};
    if (!opts) opts = &none;
    const char *root = opts->root && *opts->root ? opts->root : NULL;
    memset(info, 0, sizeof *info);
    info->mpi_env_rank = info->mpi_env_size = -1;

    probe_cpuid(info);
    char *cpuinfo = read_alloc(root, "/proc/cpuinfo", CPUINFO_CAP);
    probe_topology(info, root, cpuinfo);
    free(cpuinfo);
    probe_caches(info, root);
    probe_misc(info, root);
    probe_cgroups(info, root);
    probe_memory(info, root);
    probe_threads(info);
    probe_dnnl(info);
    if (!opts->skip_mpi) mp_sysinfo_probe_mpi(info);
    if (!opts->skip_cuda) mp_sysinfo_probe_cuda(info, root);

    if (info->logical_cpus <= 0 && info->mem_total == 0)
        return mp_error_set(MP_ERR_IO, "%s/proc: cannot read the CPU list or the memory size", root ? root : "");
    return MP_OK;
}

int mp_sysinfo_probe(mp_sysinfo_t *info) { return mp_sysinfo_probe_opts(info, NULL); }
