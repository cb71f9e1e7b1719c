/* Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 * A draw is a pure function of (seed, stream, counter), so workers that key
 * their streams by (epoch, step, sample) give the same numbers in any thread
 * order and on any machine. */
#include "medpipe/core.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void mp_philox4x32(uint32_t out[4], const uint32_t ctr[4], const uint32_t key[2]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

void mp_rng_init(mp_rng_t *r, uint64_t seed, uint64_t stream) {
    r->key = seed;
    r->stream = stream;
    r->counter = 0;
    r->pos = 4;
}

/* SplitMix64 finaliser: spreads nearby integers over the whole 64-bit space. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t mp_rng_stream_id(uint64_t a, uint64_t b, uint64_t c) {
    return mix64(mix64(mix64(a) ^ b) ^ c);
}

uint32_t mp_rng_u32(mp_rng_t *r) {
    if (r->pos >= 4) {
        uint32_t ctr[4] = {(uint32_t)r->counter, (uint32_t)(r->counter >> 32),
                           (uint32_t)r->stream, (uint32_t)(r->stream >> 32)};
        uint32_t key[2] = {(uint32_t)r->key, (uint32_t)(r->key >> 32)};
        mp_philox4x32(r->buf, ctr, key);
        r->counter++;
        r->pos = 0;
    }
    return r->buf[r->pos++];
}

uint64_t mp_rng_u64(mp_rng_t *r) {
    uint64_t hi = mp_rng_u32(r);
    return (hi << 32) | mp_rng_u32(r);
}

double mp_rng_uniform(mp_rng_t *r) {
    return (double)(mp_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

double mp_rng_range(mp_rng_t *r, double lo, double hi) {
    return lo + (hi - lo) * mp_rng_uniform(r);
}

uint64_t mp_rng_below(mp_rng_t *r, uint64_t n) {
    if (n <= 1) return 0;
    /* Rejection sampling removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = mp_rng_u64(r);
    } while (x >= limit);
    return x % n;
}

double mp_rng_normal(mp_rng_t *r) {
    /* Box-Muller; u1 in (0, 1] so log() is finite. */
    double u1 = 1.0 - mp_rng_uniform(r);
    double u2 = mp_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
