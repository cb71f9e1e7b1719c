/* DICOM UIDs derived from UUIDs (PS3.5 B.2): "2.25." followed by the
 * decimal value of a 128-bit version-4 UUID, at most 44 characters. Random
 * bits come from the kernel (getrandom, falling back to /dev/urandom), or
 * from a Philox stream when output must be reproducible (tests). */
#include "medpipe/dicom_write.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

/* Sets the UUID version (4) and variant (10xx) bits, then writes the 128-bit
 * big-endian number in decimal by repeated division of four 32-bit limbs. */
static void uid_from_bytes(char out[MP_DICOM_UID_SIZE], uint8_t b[16]) {
    b[6] = (uint8_t)((b[6] & 0x0F) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);
    uint32_t limb[4];
    for (int i = 0; i < 4; i++)
        limb[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    char digits[40];
    int nd = 0;
    for (;;) {
        uint64_t rem = 0;
        int nonzero = 0;
        for (int i = 0; i < 4; i++) {
            uint64_t cur = rem << 32 | limb[i];
            limb[i] = (uint32_t)(cur / 10);
            rem = cur % 10;
            nonzero |= limb[i] != 0;
        }
        digits[nd++] = (char)('0' + rem);
        if (!nonzero) break;
    }
    memcpy(out, "2.25.", 5);
    for (int i = 0; i < nd; i++) out[5 + i] = digits[nd - 1 - i];
    out[5 + nd] = '\0';
}

static int random_bytes(uint8_t *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        break;
    }
    if (got == n) return MP_OK;
    FILE *fp = fopen("/dev/urandom", "rb");
    if (!fp) return mp_error_set(MP_ERR_IO, "no source of random bits for a DICOM UID (getrandom and /dev/urandom failed)");
    size_t r = fread(buf, 1, n, fp);
    fclose(fp);
    if (r != n) return mp_error_set(MP_ERR_IO, "/dev/urandom: short read while making a DICOM UID");
    return MP_OK;
}

int mp_dicom_uid_generate(char out[MP_DICOM_UID_SIZE]) {
    uint8_t b[16];
    out[0] = '\0';
    int rc = random_bytes(b, sizeof b);
    if (rc) return rc;
    uid_from_bytes(out, b);
    return MP_OK;
}

void mp_dicom_uid_from_rng(char out[MP_DICOM_UID_SIZE], mp_rng_t *rng) {
    uint8_t b[16];
    for (int i = 0; i < 4; i++) {
        uint32_t w = mp_rng_u32(rng);
        for (int j = 0; j < 4; j++) b[4 * i + j] = (uint8_t)(w >> (24 - 8 * j));
    }
    uid_from_bytes(out, b);
}

int mp_dicom_uid_make(char out[MP_DICOM_UID_SIZE], mp_rng_t *rng) {
    if (rng) {
        mp_dicom_uid_from_rng(out, rng);
        return MP_OK;
    }
    return mp_dicom_uid_generate(out);
}

int mp_dicom_uid_is_valid(const char *uid) {
    if (!uid) return 0;
    size_t n = strlen(uid);
    if (n == 0 || n > 64) return 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && uid[i] != '.') {
            if (uid[i] < '0' || uid[i] > '9') return 0;
            continue;
        }
        if (i == start || (uid[start] == '0' && i - start > 1)) return 0;
        start = i + 1;
    }
    return 1;
}
