/* gzip helpers for the NIfTI reader and writer (private to src/io).
 * Decompression goes straight into a caller-sized buffer (the size comes
 * from the image header): libdeflate member by member for speed, zlib's
 * streaming inflate for the rare streams that hold more than the image needs
 * and for precise diagnostics of broken streams. */
#ifndef MP_IO_GZ_H
#define MP_IO_GZ_H

#include <stddef.h>
#include <stdint.h>

/* True when buf starts with the gzip magic bytes 1f 8b. */
int mp_gz_is_gzip(const uint8_t *buf, size_t len);

/* Decompresses the first bytes of a gzip stream (up to `want`) into out;
 * *got receives how many were produced (fewer when the stream is shorter).
 * Errors name `name`. */
int mp_gz_peek(const char *name, const uint8_t *in, size_t len, uint8_t *out, size_t want, size_t *got);

/* Decompresses exactly `need` bytes of the (possibly multi-member) gzip
 * stream into out. Members are CRC- and length-checked, including the member
 * in which the `need`-th byte falls; data after that member is ignored. A
 * stream that ends early, is corrupt or fails a check gives MP_ERR_FORMAT
 * with the file name, the compressed offset and what went wrong. */
int mp_gz_decompress(const char *name, const uint8_t *in, size_t len, uint8_t *out, size_t need);

/* Largest output a gzip stream of `len` bytes can possibly decompress to
 * (deflate expands at most ~1032:1), used to refuse absurd sizes early. */
uint64_t mp_gz_max_output(size_t len);

/* Compresses `len` bytes as one gzip member at `level` (1..12, libdeflate);
 * *out is freed with free(). */
int mp_gz_compress(const char *name, const uint8_t *in, size_t len, int level, uint8_t **out, size_t *out_len);

#endif
