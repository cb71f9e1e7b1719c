/* Private helpers shared by the sysinfo sources (CPU/memory probe, MPI/CUDA
 * probe, warnings). Not part of the public API. */
#ifndef MP_SYSINFO_INTERNAL_H
#define MP_SYSINFO_INTERNAL_H

#include "medpipe/sysinfo.h"

#include <stddef.h>

/* Reads at most size-1 bytes of root+path into buf (NUL-terminated);
 * returns the length or -1 when the file cannot be opened. */
int mp_sysinfo_read_text(const char *root, const char *path, char *buf, size_t size);
/* Copies src into dst[size], truncating; dst is always terminated. */
void mp_sysinfo_copy(char *dst, size_t size, const char *src);
/* Fills the MPI fields (loads the MPI library when one is found). */
void mp_sysinfo_probe_mpi(mp_sysinfo_t *info);
/* Fills the CUDA fields: toolkit, runtime, driver, devices, cuDNN, NCCL. */
void mp_sysinfo_probe_cuda(mp_sysinfo_t *info, const char *root);
/* Name of a oneDNN ISA value ("avx2"); writes "isa 0x..." for unknown ones. */
const char *mp_sysinfo_dnnl_isa_name(unsigned isa, char *buf, size_t size);

#endif
