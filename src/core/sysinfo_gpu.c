/* sysinfo, run-time probes of optional libraries: MPI (libmpi, mpirun on
 * PATH, launcher environment) and the NVIDIA stack (CUDA toolkit, runtime,
 * driver and devices, cuDNN, NCCL). Everything is found with dlopen so that
 * medpipe has no link dependency on any of them; libraries that were loaded
 * stay loaded (unloading CUDA or MPI libraries is not reliably safe). */
#include "core/sysinfo_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Resolves a symbol into a function pointer without the object/function
 * pointer cast that ISO C leaves undefined. */
#define LOAD_SYM(lib, name, fp)                     \
    do {                                            \
        void *sym_ = dlsym((lib), (name));          \
        memcpy(&(fp), &sym_, sizeof sym_);          \
    } while (0)

/* Real file of a loaded library, found through one of its symbols. */
static void lib_path(void *lib, const char *sym, const char *fallback, char *out, size_t size) {
    Dl_info di;
    void *p = dlsym(lib, sym);
    if (p && dladdr(p, &di) && di.dli_fname) mp_sysinfo_copy(out, size, di.dli_fname);
    else mp_sysinfo_copy(out, size, fallback);
}

/* Searches PATH for an executable; returns 0 and its path when found. */
static int find_on_path(const char *name, char *out, size_t size) {
    const char *path = getenv("PATH");
    if (!path) return -1;
    while (*path) {
        size_t n = strcspn(path, ":");
        char cand[1024];
        if (n > 0 && n + strlen(name) + 2 < sizeof cand) {
            memcpy(cand, path, n);
            snprintf(cand + n, sizeof cand - n, "/%s", name);
            if (access(cand, X_OK) == 0) {
                mp_sysinfo_copy(out, size, cand);
                return 0;
            }
        }
        path += n;
        if (*path == ':') path++;
    }
    return -1;
}

/* ---------------------------------------------------------------- MPI */

static int env_int(const char *a, const char *b) {
    const char *v = getenv(a);
    if (!v && b) v = getenv(b);
    if (!v || !*v) return -1;
    char *end;
    long x = strtol(v, &end, 10);
    return (*end == '\0' && x >= 0 && x < 1 << 30) ? (int)x : -1;
}

void mp_sysinfo_probe_mpi(mp_sysinfo_t *info) {
    /* Open MPI first (what medpipe links), then MPICH's soname. */
    static const char *names[] = {"libmpi.so.40", "libmpi.so.12", "libmpi.so"};
    void *lib = NULL;
    const char *name = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) {
        lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        name = names[i];
    }
    if (lib) {
        int (*get_lib_version)(char *, int *) = NULL;
        int (*get_version)(int *, int *) = NULL;
        LOAD_SYM(lib, "MPI_Get_library_version", get_lib_version);
        LOAD_SYM(lib, "MPI_Get_version", get_version);
        if (get_lib_version) {
            /* MPI allows both calls before MPI_Init. The buffer covers
             * MPI_MAX_LIBRARY_VERSION_STRING of Open MPI (256) and MPICH (8192). */
            enum { VERSION_MAX = 8192 };
            char *buf = calloc(VERSION_MAX + 1, 1);
            int len = 0;
            if (buf && get_lib_version(buf, &len) == 0) {
                buf[VERSION_MAX] = '\0';
                size_t n = strcspn(buf, "\n");
                buf[n] = '\0';
                while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == ',')) buf[--n] = '\0';
                mp_sysinfo_copy(info->mpi_lib_version, sizeof info->mpi_lib_version, buf);
                info->mpi_lib_found = 1;
            }
            free(buf);
            if (get_version) get_version(&info->mpi_std_major, &info->mpi_std_minor);
            lib_path(lib, "MPI_Get_library_version", name, info->mpi_lib_path, sizeof info->mpi_lib_path);
        }
    }
    if (find_on_path("mpirun", info->mpirun_path, sizeof info->mpirun_path) != 0)
        find_on_path("mpiexec", info->mpirun_path, sizeof info->mpirun_path);
    info->mpi_env_rank = env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK");
    info->mpi_env_size = env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE");
}

/* ---------------------------------------------------------------- CUDA */

const char *mp_sysinfo_cuda_version_str(int v, char *buf, size_t size) {
    if (v <= 0) snprintf(buf, size, "none");
    else snprintf(buf, size, "%d.%d", v / 1000, (v % 1000) / 10);
    return buf;
}

/* Candidate library directories: the toolkit's, CUDA_HOME's and LD_LIBRARY_PATH. */
static int lib_dirs(const mp_sysinfo_t *info, char dirs[][512], int max) {
    int n = 0;
    const char *home[] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), info->cuda_toolkit_dir[0] ? info->cuda_toolkit_dir : NULL,
                          "/usr/local/cuda"};
    for (size_t i = 0; i < sizeof home / sizeof home[0]; i++) {
        if (!home[i] || !*home[i]) continue;
        if (n < max) snprintf(dirs[n++], 512, "%s/lib64", home[i]);
        if (n < max) snprintf(dirs[n++], 512, "%s/lib", home[i]);
    }
    const char *ld = getenv("LD_LIBRARY_PATH");
    while (ld && *ld && n < max) {
        size_t k = strcspn(ld, ":");
        if (k > 0 && k < 512) {
            memcpy(dirs[n], ld, k);
            dirs[n++][k] = '\0';
        }
        ld += k;
        if (*ld == ':') ld++;
    }
    return n;
}

/* Loads the first of `sonames` the dynamic loader finds, else any file named
 * prefix* (e.g. "libcudart.so.12.4") in the candidate directories that
 * exports `sym`. Returns the handle or NULL. */
static void *open_lib(const mp_sysinfo_t *info, const char *const *sonames, const char *prefix, const char *sym) {
    for (int i = 0; sonames[i]; i++) {
        void *lib = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
        if (lib && dlsym(lib, sym)) return lib;
        if (lib) dlclose(lib);
    }
    char dirs[16][512];
    int nd = lib_dirs(info, dirs, 16);
    size_t plen = strlen(prefix);
    for (int d = 0; d < nd; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir) continue;
        struct dirent *e;
        void *found = NULL;
        while (!found && (e = readdir(dir)) != NULL) {
            if (strncmp(e->d_name, prefix, plen) != 0) continue;
            char full[800];
            snprintf(full, sizeof full, "%.511s/%.255s", dirs[d], e->d_name);
            void *lib = dlopen(full, RTLD_NOW | RTLD_LOCAL);
            if (lib && dlsym(lib, sym)) found = lib;
            else if (lib) dlclose(lib);
        }
        closedir(dir);
        if (found) return found;
    }
    return NULL;
}

/* Toolkit: nvcc on PATH, else CUDA_HOME or /usr/local/cuda; its version from
 * version.json, else CUDA_VERSION in include/cuda.h. */
static void probe_toolkit(mp_sysinfo_t *info) {
    char nvcc[512] = "", dir[512] = "";
    if (find_on_path("nvcc", nvcc, sizeof nvcc) == 0) {
        char *real = realpath(nvcc, NULL);
        if (real) {
            mp_sysinfo_copy(nvcc, sizeof nvcc, real);
            free(real);
        }
        char *s = strrchr(nvcc, '/');
        if (s) *s = '\0';
        s = strrchr(nvcc, '/');
        if (s && strcmp(s, "/bin") == 0) {
            *s = '\0';
            mp_sysinfo_copy(dir, sizeof dir, nvcc);
        }
    }
    const char *cands[] = {getenv("CUDA_HOME"), getenv("CUDA_PATH"), "/usr/local/cuda"};
    for (size_t i = 0; i < 3 && !dir[0]; i++) {
        char probe[600];
        if (!cands[i] || !*cands[i]) continue;
        snprintf(probe, sizeof probe, "%s/include/cuda.h", cands[i]);
        if (access(probe, R_OK) != 0) continue;
        char *real = realpath(cands[i], NULL);
        mp_sysinfo_copy(dir, sizeof dir, real ? real : cands[i]);
        free(real);
    }
    if (!dir[0]) return;
    mp_sysinfo_copy(info->cuda_toolkit_dir, sizeof info->cuda_toolkit_dir, dir);

    char path[600], buf[16384];
    snprintf(path, sizeof path, "%s/version.json", dir);
    if (mp_sysinfo_read_text(NULL, path, buf, sizeof buf) > 0) {
        cJSON *j = cJSON_Parse(buf);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "cuda"), "version");
        if (cJSON_IsString(v)) mp_sysinfo_copy(info->cuda_toolkit_version, sizeof info->cuda_toolkit_version, v->valuestring);
        cJSON_Delete(j);
    }
    if (!info->cuda_toolkit_version[0]) {
        snprintf(path, sizeof path, "%s/include/cuda.h", dir);
        char *text = malloc(1 << 20);
        if (text && mp_sysinfo_read_text(NULL, path, text, 1 << 20) > 0) {
            const char *p = strstr(text, "#define CUDA_VERSION ");
            if (p) mp_sysinfo_cuda_version_str(atoi(p + 21), info->cuda_toolkit_version, sizeof info->cuda_toolkit_version);
        }
        free(text);
    }
}

/* CUresult values worth naming when cuGetErrorName is unavailable. */
static const char *cu_error_name(int rc) {
    switch (rc) {
    case 3: return "CUDA_ERROR_NOT_INITIALIZED";
    case 35: return "CUDA_ERROR_INSUFFICIENT_DRIVER";
    case 100: return "CUDA_ERROR_NO_DEVICE";
    case 101: return "CUDA_ERROR_INVALID_DEVICE";
    case 999: return "CUDA_ERROR_UNKNOWN";
    default: return NULL;
    }
}

typedef struct {
    int (*init)(unsigned);
    int (*driver_version)(int *);
    int (*count)(int *);
    int (*get)(int *, int);
    int (*name)(char *, int, int);
    int (*total_mem)(size_t *, int);
    int (*attr)(int *, int, int);
    int (*pci)(char *, int, int);
    int (*err_name)(int, const char **);
} cu_api_t;

static void probe_devices(mp_sysinfo_t *info, const cu_api_t *cu) {
    int n = 0;
    if (!cu->count || cu->count(&n) != 0 || n <= 0) return;
    info->gpu_count = n;
    for (int i = 0; i < n && i < MP_SYSINFO_MAX_GPUS; i++) {
        mp_gpu_info_t *g = &info->gpus[i];
        int dev = 0;
        if (cu->get && cu->get(&dev, i) != 0) continue;
        if (cu->name) {
            char name[256] = "";
            if (cu->name(name, (int)sizeof name - 1, dev) == 0) mp_sysinfo_copy(g->name, sizeof g->name, name);
        }
        size_t bytes = 0;
        if (cu->total_mem && cu->total_mem(&bytes, dev) == 0) g->total_mem = bytes;
        if (cu->attr) {
            cu->attr(&g->cc_major, 75, dev); /* CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR */
            cu->attr(&g->cc_minor, 76, dev); /* ..._MINOR */
            cu->attr(&g->sm_count, 16, dev); /* CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT */
        }
        if (cu->pci) {
            char bus[64] = "";
            if (cu->pci(bus, (int)sizeof bus - 1, dev) == 0) mp_sysinfo_copy(g->pci_bus_id, sizeof g->pci_bus_id, bus);
        }
    }
}

static void probe_driver(mp_sysinfo_t *info, const char *root) {
    char buf[512];
    if (mp_sysinfo_read_text(root, "/proc/driver/nvidia/version", buf, sizeof buf) > 0) {
        const char *p = strstr(buf, "Kernel Module");
        if (p) {
            p += strlen("Kernel Module");
            while (*p == ' ' || *p == '\t') p++;
            char v[32];
            size_t n = strcspn(p, " \t\n");
            if (n >= sizeof v) n = sizeof v - 1;
            memcpy(v, p, n);
            v[n] = '\0';
            mp_sysinfo_copy(info->nvidia_kmod_version, sizeof info->nvidia_kmod_version, v);
        }
    }
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    info->cuda_driver_found = 1;
    cu_api_t cu;
    memset(&cu, 0, sizeof cu);
    LOAD_SYM(lib, "cuInit", cu.init);
    LOAD_SYM(lib, "cuDriverGetVersion", cu.driver_version);
    LOAD_SYM(lib, "cuDeviceGetCount", cu.count);
    LOAD_SYM(lib, "cuDeviceGet", cu.get);
    LOAD_SYM(lib, "cuDeviceGetName", cu.name);
    LOAD_SYM(lib, "cuDeviceTotalMem_v2", cu.total_mem);
    LOAD_SYM(lib, "cuDeviceGetAttribute", cu.attr);
    LOAD_SYM(lib, "cuDeviceGetPCIBusId", cu.pci);
    LOAD_SYM(lib, "cuGetErrorName", cu.err_name);
    if (cu.driver_version) cu.driver_version(&info->cuda_driver_version);
    if (!cu.init) {
        info->cuda_init_rc = -1;
        mp_sysinfo_copy(info->cuda_init_error, sizeof info->cuda_init_error, "cuInit missing from libcuda.so.1");
        return;
    }
    int rc = cu.init(0);
    info->cuda_init_rc = rc;
    if (rc != 0) {
        const char *name = NULL;
        if (cu.err_name) cu.err_name(rc, &name);
        if (!name) name = cu_error_name(rc);
        if (name) mp_sysinfo_copy(info->cuda_init_error, sizeof info->cuda_init_error, name);
        else snprintf(info->cuda_init_error, sizeof info->cuda_init_error, "CUresult %d", rc);
        return;
    }
    probe_devices(info, &cu);
}

void mp_sysinfo_probe_cuda(mp_sysinfo_t *info, const char *root) {
    probe_toolkit(info);

    static const char *const cudart[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", NULL};
    void *rt = open_lib(info, cudart, "libcudart.so", "cudaRuntimeGetVersion");
    if (rt) {
        int (*rt_version)(int *) = NULL;
        LOAD_SYM(rt, "cudaRuntimeGetVersion", rt_version);
        if (rt_version && rt_version(&info->cudart_version) != 0) info->cudart_version = 0;
        lib_path(rt, "cudaRuntimeGetVersion", "libcudart.so", info->cudart_path, sizeof info->cudart_path);
    }

    probe_driver(info, root);

    static const char *const cudnn[] = {"libcudnn.so", "libcudnn.so.9", "libcudnn.so.8", NULL};
    void *dnn = open_lib(info, cudnn, "libcudnn.so", "cudnnGetVersion");
    if (dnn) {
        size_t (*dnn_version)(void) = NULL;
        LOAD_SYM(dnn, "cudnnGetVersion", dnn_version);
        if (dnn_version) info->cudnn_version = (int)dnn_version();
        lib_path(dnn, "cudnnGetVersion", "libcudnn.so", info->cudnn_path, sizeof info->cudnn_path);
    }

    static const char *const nccl[] = {"libnccl.so", "libnccl.so.2", NULL};
    void *nc = open_lib(info, nccl, "libnccl.so", "ncclGetVersion");
    if (nc) {
        int (*nccl_version)(int *) = NULL;
        LOAD_SYM(nc, "ncclGetVersion", nccl_version);
        if (nccl_version && nccl_version(&info->nccl_version) != 0) info->nccl_version = 0;
        lib_path(nc, "ncclGetVersion", "libnccl.so", info->nccl_path, sizeof info->nccl_path);
    }
}
