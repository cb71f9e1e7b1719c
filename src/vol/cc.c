/* Label maps and connected components: the distinct labels of a label map,
 * the per-voxel class index used by components and metrics, a two-pass
 * union-find component labelling (linear time, no recursion, numbering by
 * first voxel in memory order), and nnU-Net's keep-largest-component
 * post-processing. */
#include "medpipe/vol_morph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- reading label values ---- */

typedef struct {
    const mp_vol_t *v;
    double slope, inter;
    int identity;
    double last_raw; /* label maps hold long runs: skip the conversion for them */
    int64_t last;
    int have_last;
} label_reader_t;

static int reader_init(label_reader_t *r, const mp_vol_t *v) {
    if (v->dim[3] != 1)
        return mp_error_set(MP_ERR_ARG, "a label map must have one channel (this volume has %lld)",
                            (long long)v->dim[3]);
    memset(r, 0, sizeof *r);
    r->v = v;
    r->slope = v->scl_slope;
    r->inter = v->scl_inter;
    if (r->slope == 0) r->slope = 1, r->inter = 0; /* NIfTI: slope 0 means unscaled */
    r->identity = r->slope == 1 && r->inter == 0;
    return MP_OK;
}

/* Integer label of voxel i, or MP_ERR_FORMAT naming the voxel. */
static inline int reader_get(label_reader_t *r, int64_t i, int64_t *out) {
    double x = mp_vol_get(r->v, i);
    if (r->have_last && x == r->last_raw) {
        *out = r->last;
        return MP_OK;
    }
    double y = r->identity ? x : x * r->slope + r->inter;
    if (!(y == floor(y) && fabs(y) < 4.0e18))
        return mp_error_set(MP_ERR_FORMAT, "voxel %lld of the label map holds %g, which is not an integer label",
                            (long long)i, y);
    r->last_raw = x;
    r->last = (int64_t)y;
    r->have_last = 1;
    *out = r->last;
    return MP_OK;
}

/* Index of value in sorted a[0..n) or -(insertion point) - 1. */
static int64_t search_i64(const int64_t *a, int64_t n, int64_t value) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < value) lo = mid + 1;
        else if (a[mid] > value) hi = mid;
        else return mid;
    }
    return -lo - 1;
}

/* Adds x to the sorted set vals[0..*count). */
static int insert_value(int64_t *vals, int64_t *count, int64_t x) {
    int64_t at = search_i64(vals, *count, x);
    if (at >= 0) return MP_OK;
    if (*count == MP_LABEL_MAX_CLASSES)
        return mp_error_set(MP_ERR_LIMIT, "the label map holds more than %d distinct labels", MP_LABEL_MAX_CLASSES);
    at = -at - 1;
    memmove(vals + at + 1, vals + at, (size_t)(*count - at) * sizeof *vals);
    vals[at] = x;
    (*count)++;
    return MP_OK;
}

typedef struct {
    int64_t value;
    int index;
} label_slot_t;

/* Requested labels sorted by value, with their positions in the request. */
typedef struct {
    const int64_t *sorted;
    const label_slot_t *slots;
    int n;
} label_map_t;

static inline uint16_t map_key(const label_map_t *m, int64_t x) {
    int64_t at = search_i64(m->sorted, m->n, x);
    return at >= 0 ? (uint16_t)(m->slots[at].index + 1) : 0;
}

/* Fast paths for unscaled integer label maps (the usual case): typed loops,
 * with the label lookup repeated only where the value changes. A uint64
 * value above 2^63 has no int64 label. */
#define INT_LABEL_PATHS(T, NAME)                                                                       \
    static int values_##NAME(const void *data, int64_t nv, int64_t *vals, int64_t *count) {            \
        const T *d = data;                                                                             \
        T last = 0;                                                                                    \
        for (int64_t i = 0; i < nv; i++) {                                                             \
            T x = d[i];                                                                                \
            if (x == 0 || x == last) continue;                                                         \
            last = x;                                                                                  \
            if ((x > 0) != ((int64_t)x > 0))                                                           \
                return mp_error_set(MP_ERR_FORMAT, "voxel %lld holds a label above 2^63", (long long)i); \
            int rc = insert_value(vals, count, (int64_t)x);                                            \
            if (rc) return rc;                                                                         \
        }                                                                                              \
        return MP_OK;                                                                                  \
    }                                                                                                  \
    static void index_##NAME(uint16_t *keys, const void *data, int64_t nv, const label_map_t *m) {     \
        const T *d = data;                                                                             \
        T last = 0;                                                                                    \
        uint16_t key = map_key(m, 0);                                                                  \
        for (int64_t i = 0; i < nv; i++) {                                                             \
            T x = d[i];                                                                                \
            if (x != last) {                                                                           \
                last = x;                                                                              \
                key = (x > 0) == ((int64_t)x > 0) ? map_key(m, (int64_t)x) : 0;                       \
            }                                                                                          \
            keys[i] = key;                                                                             \
        }                                                                                              \
    }
INT_LABEL_PATHS(uint8_t, u8)
INT_LABEL_PATHS(int8_t, i8)
INT_LABEL_PATHS(uint16_t, u16)
INT_LABEL_PATHS(int16_t, i16)
INT_LABEL_PATHS(uint32_t, u32)
INT_LABEL_PATHS(int32_t, i32)
INT_LABEL_PATHS(uint64_t, u64)
INT_LABEL_PATHS(int64_t, i64)

typedef int (*values_fn)(const void *, int64_t, int64_t *, int64_t *);
typedef void (*index_fn)(uint16_t *, const void *, int64_t, const label_map_t *);
static const values_fn values_fast[MP_DTYPE_COUNT] = {
    [MP_DTYPE_U8] = values_u8,   [MP_DTYPE_I8] = values_i8,   [MP_DTYPE_U16] = values_u16,
    [MP_DTYPE_I16] = values_i16, [MP_DTYPE_U32] = values_u32, [MP_DTYPE_I32] = values_i32,
    [MP_DTYPE_U64] = values_u64, [MP_DTYPE_I64] = values_i64};
static const index_fn index_fast[MP_DTYPE_COUNT] = {
    [MP_DTYPE_U8] = index_u8,   [MP_DTYPE_I8] = index_i8,   [MP_DTYPE_U16] = index_u16,
    [MP_DTYPE_I16] = index_i16, [MP_DTYPE_U32] = index_u32, [MP_DTYPE_I32] = index_i32,
    [MP_DTYPE_U64] = index_u64, [MP_DTYPE_I64] = index_i64};

static int fast_ok(const label_reader_t *r) {
    return r->identity && (unsigned)r->v->dtype < MP_DTYPE_COUNT && values_fast[r->v->dtype];
}

int mp_vol_label_values(int64_t **values, int *n, const mp_vol_t *v) {
    *values = NULL;
    *n = 0;
    label_reader_t r;
    int rc = reader_init(&r, v);
    if (rc) return rc;
    int64_t *vals = mp_alloc(sizeof *vals * MP_LABEL_MAX_CLASSES);
    if (!vals) return mp_error_set(MP_ERR_NOMEM, "out of memory");
    int64_t count = 0, nv = mp_vol_voxels(v), last = 0;
    if (fast_ok(&r)) {
        rc = values_fast[v->dtype](v->data, nv, vals, &count);
    } else {
        for (int64_t i = 0; i < nv && !rc; i++) {
            int64_t x = 0;
            if ((rc = reader_get(&r, i, &x))) break;
            if (x == 0 || x == last) continue;
            last = x;
            rc = insert_value(vals, &count, x);
        }
    }
    if (rc || count == 0) {
        mp_free(vals);
        return rc;
    }
    *values = vals;
    *n = (int)count;
    return MP_OK;
}

static int slot_cmp(const void *a, const void *b) {
    int64_t x = ((const label_slot_t *)a)->value, y = ((const label_slot_t *)b)->value;
    return (x > y) - (x < y);
}

int mp_vol_label_index(uint16_t *keys, const mp_vol_t *v, const int64_t *labels, int n_labels) {
    if (n_labels < 0 || n_labels > MP_LABEL_MAX_CLASSES)
        return mp_error_set(MP_ERR_ARG, "%d labels requested (at most %d)", n_labels, MP_LABEL_MAX_CLASSES);
    label_reader_t r;
    int rc = reader_init(&r, v);
    if (rc) return rc;
    label_slot_t *slots = malloc(sizeof *slots * (size_t)(n_labels ? n_labels : 1));
    int64_t *sorted = malloc(sizeof *sorted * (size_t)(n_labels ? n_labels : 1));
    if (!slots || !sorted) {
        free(slots);
        free(sorted);
        return mp_error_set(MP_ERR_NOMEM, "out of memory");
    }
    for (int k = 0; k < n_labels; k++) slots[k] = (label_slot_t){labels[k], k};
    qsort(slots, (size_t)n_labels, sizeof *slots, slot_cmp);
    for (int k = 0; k < n_labels; k++) {
        sorted[k] = slots[k].value;
        if (k > 0 && sorted[k] == sorted[k - 1]) {
            rc = mp_error_set(MP_ERR_ARG, "label %lld is listed twice", (long long)sorted[k]);
            goto done;
        }
    }
    label_map_t m = {sorted, slots, n_labels};
    int64_t nv = mp_vol_voxels(v), last_value = 0;
    if (fast_ok(&r)) {
        index_fast[v->dtype](keys, v->data, nv, &m);
        goto done;
    }
    uint16_t last_key = map_key(&m, 0);
    for (int64_t i = 0; i < nv; i++) {
        int64_t x = 0;
        if ((rc = reader_get(&r, i, &x))) goto done;
        if (x != last_value) {
            last_key = map_key(&m, x);
            last_value = x;
        }
        keys[i] = last_key;
    }
done:
    free(slots);
    free(sorted);
    return rc;
}

/* ---- union-find over provisional labels ---- */

/* Invariant: parent[x] <= x, so every set's root is its smallest label, i.e.
 * the label created first in the scan. */
typedef struct {
    uint32_t *parent;
    uint32_t count; /* labels in use: 1..count-1 (0 = background) */
    uint32_t cap;
} uf_t;

static inline uint32_t uf_find(uint32_t *p, uint32_t x) {
    uint32_t root = x;
    while (p[root] != root) root = p[root];
    while (p[x] != root) {
        uint32_t next = p[x];
        p[x] = root;
        x = next;
    }
    return root;
}

static inline void uf_union(uint32_t *p, uint32_t a, uint32_t b) {
    uint32_t ra = uf_find(p, a), rb = uf_find(p, b);
    if (ra < rb) p[rb] = ra;
    else if (rb < ra) p[ra] = rb;
}

static int uf_new(uf_t *u, uint32_t *label) {
    if (u->count == u->cap) {
        uint64_t cap = (uint64_t)u->cap * 2;
        if (cap > UINT32_MAX) cap = UINT32_MAX;
        if (cap * sizeof(uint32_t) > mp_mem_limit())
            return mp_error_set(MP_ERR_LIMIT, "connected components: label table exceeds the memory limit");
        uint32_t *p = realloc(u->parent, (size_t)cap * sizeof *p);
        if (!p) return mp_error_set(MP_ERR_NOMEM, "connected components: out of memory");
        u->parent = p;
        u->cap = (uint32_t)cap;
    }
    *label = u->count;
    u->parent[u->count] = u->count;
    u->count++;
    return MP_OK;
}

/* Offsets (dx, dy, dz) of the neighbours already visited by an x-fastest scan. */
static const int8_t prior26[13][3] = {
    {-1, -1, -1}, {0, -1, -1}, {1, -1, -1}, {-1, 0, -1}, {0, 0, -1}, {1, 0, -1}, {-1, 1, -1},
    {0, 1, -1},   {1, 1, -1},  {-1, -1, 0}, {0, -1, 0},  {1, -1, 0}, {-1, 0, 0}};
static const int8_t prior6[3][3] = {{0, 0, -1}, {0, -1, 0}, {-1, 0, 0}};

/* First pass: provisional labels into `labels`, equivalences into u. */
static int cc_scan(uint32_t *labels, uf_t *u, const uint16_t *keys, const int64_t dim[3], mp_conn_t conn) {
    const int64_t nx = dim[0], ny = dim[1], nz = dim[2];
    const int nn = conn == MP_CONN_26 ? 13 : 3;
    const int8_t(*off)[3] = conn == MP_CONN_26 ? prior26 : prior6;
    int64_t delta[13];
    for (int k = 0; k < nn; k++) delta[k] = off[k][0] + nx * (off[k][1] + ny * off[k][2]);
    int64_t i = 0;
    for (int64_t z = 0; z < nz; z++)
        for (int64_t y = 0; y < ny; y++)
            for (int64_t x = 0; x < nx; x++, i++) {
                uint16_t key = keys[i];
                if (!key) {
                    labels[i] = 0;
                    continue;
                }
                uint32_t lab = 0;
                for (int k = 0; k < nn; k++) {
                    int64_t xx = x + off[k][0], yy = y + off[k][1], zz = z + off[k][2];
                    if (xx < 0 || xx >= nx || yy < 0 || yy >= ny || zz < 0) continue;
                    int64_t j = i + delta[k];
                    if (keys[j] != key) continue;
                    if (!lab) lab = labels[j];
                    else if (labels[j] != lab) uf_union(u->parent, lab, labels[j]);
                }
                if (!lab) {
                    int rc = uf_new(u, &lab);
                    if (rc) return rc;
                }
                labels[i] = lab;
            }
    return MP_OK;
}

int mp_cc_label_keys(uint32_t *labels, int64_t *n_components, int64_t **sizes, const uint16_t *keys,
                     const int64_t dim[3], mp_conn_t conn) {
    *n_components = 0;
    if (sizes) *sizes = NULL;
    if (conn != MP_CONN_6 && conn != MP_CONN_26)
        return mp_error_set(MP_ERR_ARG, "connectivity must be 6 or 26 (got %d)", (int)conn);
    uint64_t nv = 1;
    for (int a = 0; a < 3; a++)
        if (dim[a] < 1 || mp_mul_u64(nv, (uint64_t)dim[a], &nv))
            return mp_error_set(MP_ERR_ARG, "connected components: bad grid dimension %lld", (long long)dim[a]);
    if (nv >= UINT32_MAX)
        return mp_error_set(MP_ERR_LIMIT, "connected components: %llu voxels (at most 2^32 - 2)",
                            (unsigned long long)nv);
    uf_t u = {malloc(1024 * sizeof(uint32_t)), 1, 1024};
    if (!u.parent) return mp_error_set(MP_ERR_NOMEM, "connected components: out of memory");
    u.parent[0] = 0;
    int rc = cc_scan(labels, &u, keys, dim, conn);
    if (rc) {
        free(u.parent);
        return rc;
    }
    /* Final numbers: roots in creation order (= order of first voxel). Since
     * parent[l] < l for non-roots, parent[parent[l]] already holds the final
     * number of l's root when l is reached in this forward sweep. */
    uint32_t n = 0;
    for (uint32_t l = 1; l < u.count; l++) {
        uint32_t p = u.parent[l];
        u.parent[l] = p == l ? ++n : u.parent[p];
    }
    int64_t *sz = NULL;
    if (sizes) {
        sz = mp_zalloc(sizeof *sz * ((size_t)n + 1));
        if (!sz) {
            free(u.parent);
            return mp_error_set(MP_ERR_NOMEM, "connected components: out of memory");
        }
    }
    for (uint64_t i = 0; i < nv; i++) {
        uint32_t l = labels[i] ? u.parent[labels[i]] : 0;
        labels[i] = l;
        if (sz) sz[l]++;
    }
    free(u.parent);
    *n_components = n;
    if (sizes) *sizes = sz;
    return MP_OK;
}

/* Key grid of a volume: non-zero voxels (per_value = 0) or class indices. */
static int volume_keys(uint16_t **keys, const mp_vol_t *v, int per_value, const int64_t *classes, int n_classes) {
    *keys = NULL;
    if (v->dim[3] != 1)
        return mp_error_set(MP_ERR_ARG, "connected components need a one-channel volume (this one has %lld)",
                            (long long)v->dim[3]);
    int64_t nv = mp_vol_voxels(v);
    if ((uint64_t)nv * sizeof(uint16_t) > mp_mem_limit())
        return mp_error_set(MP_ERR_LIMIT, "connected components: volume exceeds the memory limit");
    uint16_t *k = mp_alloc((size_t)nv * sizeof *k);
    if (!k) return mp_error_set(MP_ERR_NOMEM, "connected components: out of memory");
    int rc = MP_OK;
    if (!per_value) {
        double slope = v->scl_slope == 0 ? 1 : v->scl_slope, inter = v->scl_slope == 0 ? 0 : v->scl_inter;
        for (int64_t i = 0; i < nv; i++) k[i] = mp_vol_get(v, i) * slope + inter != 0;
    } else if (classes) {
        rc = mp_vol_label_index(k, v, classes, n_classes);
    } else {
        int64_t *vals;
        int n;
        rc = mp_vol_label_values(&vals, &n, v);
        if (!rc) rc = mp_vol_label_index(k, v, vals, n);
        mp_free(vals);
    }
    if (rc) {
        mp_free(k);
        return rc;
    }
    *keys = k;
    return MP_OK;
}

int mp_vol_cc_label(mp_vol_t **labels, int64_t *n_components, int64_t **sizes, const mp_vol_t *v, mp_conn_t conn,
                    int per_value) {
    *labels = NULL;
    *n_components = 0;
    if (sizes) *sizes = NULL;
    uint16_t *keys;
    int rc = volume_keys(&keys, v, per_value, NULL, 0);
    if (rc) return rc;
    mp_vol_t *out;
    if ((rc = mp_vol_create_like(&out, v, MP_DTYPE_U32))) {
        mp_free(keys);
        return rc;
    }
    rc = mp_cc_label_keys(out->data, n_components, sizes, keys, v->dim, conn);
    mp_free(keys);
    if (rc) {
        mp_vol_free(out);
        return rc;
    }
    *labels = out;
    return MP_OK;
}

/* Picks, for each key, the largest component (ties: smallest label). */
static int largest_per_key(uint32_t **best, const uint32_t *labels, const uint16_t *keys, int64_t nv,
                           const int64_t *sizes, int64_t n_comp, int n_keys) {
    uint16_t *comp_key = calloc((size_t)n_comp + 1, sizeof *comp_key);
    uint32_t *b = calloc((size_t)n_keys + 1, sizeof *b);
    if (!comp_key || !b) {
        free(comp_key);
        free(b);
        return mp_error_set(MP_ERR_NOMEM, "keep largest component: out of memory");
    }
    for (int64_t i = 0; i < nv; i++) comp_key[labels[i]] = keys[i];
    for (int64_t l = 1; l <= n_comp; l++) {
        uint16_t k = comp_key[l];
        if (!b[k] || sizes[l] > sizes[b[k]]) b[k] = (uint32_t)l;
    }
    free(comp_key);
    *best = b;
    return MP_OK;
}

int mp_vol_keep_largest(mp_vol_t *v, mp_conn_t conn, const int64_t *classes, int n_classes, int foreground_as_one,
                        int64_t *removed) {
    if (removed) *removed = 0;
    int64_t *vals = NULL;
    int n = n_classes, rc;
    if (!classes) {
        if ((rc = mp_vol_label_values(&vals, &n, v))) return rc;
        classes = vals;
    }
    uint16_t *keys = NULL;
    uint32_t *labels = NULL, *best = NULL;
    int64_t *sizes = NULL, n_comp = 0, nv = mp_vol_voxels(v), count = 0;
    if ((rc = volume_keys(&keys, v, 1, classes, n))) goto done;
    if (foreground_as_one)
        for (int64_t i = 0; i < nv; i++) keys[i] = keys[i] != 0;
    labels = mp_alloc((size_t)nv * sizeof *labels);
    if (!labels) {
        rc = mp_error_set(MP_ERR_NOMEM, "keep largest component: out of memory");
        goto done;
    }
    if ((rc = mp_cc_label_keys(labels, &n_comp, &sizes, keys, v->dim, conn))) goto done;
    if ((rc = largest_per_key(&best, labels, keys, nv, sizes, n_comp, foreground_as_one ? 1 : n))) goto done;
    double slope = v->scl_slope == 0 ? 1 : v->scl_slope, inter = v->scl_slope == 0 ? 0 : v->scl_inter;
    double background = -inter / slope; /* the stored value that reads as 0 */
    for (int64_t i = 0; i < nv; i++) {
        if (labels[i] && labels[i] != best[keys[i]]) {
            mp_vol_set(v, i, background);
            count++;
        }
    }
    if (removed) *removed = count;
done:
    mp_free(vals);
    mp_free(keys);
    mp_free(labels);
    mp_free(sizes);
    free(best);
    return rc;
}
