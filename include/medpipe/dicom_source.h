/* medpipe DICOM bridge between reading and writing: the description of a
 * scanned series that derived objects (DICOM SEG) refer to, and names of
 * well-known UIDs for reports (`medpipe info`).
 *
 * A series read with mp_dicom_series_read becomes a volume whose slice z is
 * image z of the series (ascending position along the slice normal); the SEG
 * writer needs, for the label volume's slice z, the SOP class and instance of
 * that image and its ImagePositionPatient. mp_dicom_source_from_series gives
 * exactly that, in the same z order, plus patient, study and Frame of
 * Reference taken from the series' first image. */
#ifndef MEDPIPE_DICOM_SOURCE_H
#define MEDPIPE_DICOM_SOURCE_H

#include "medpipe/dicom.h"
#include "medpipe/dicom_write.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills `src` (initialised here; free with mp_dicom_source_deinit, also
 * after an error) from a series found by mp_dicom_scan. Re-reads each
 * image's header (the first 64 KB) for its SOP class and checks that its
 * SOPInstanceUID is still the scanned one. Text is converted to what the
 * writers accept: UTF-8 (from ASCII, ISO_IR 100 or ISO_IR 192; other
 * character sets keep their ASCII and get '?' for the rest), cut to the
 * VR's length; malformed dates and times are left empty.
 * MP_ERR_UNSUPPORTED for series a SEG cannot reference slice by slice:
 * missing slices (the volume has slices no image stands for) and frames of
 * multi-frame images. Positions are the images' own ImagePositionPatient
 * (has_positions = 0 without geometry), so the SEG writer refuses a label
 * volume that does not lie on them (e.g. a non-uniform series, whose volume
 * uses the mean spacing). */
int mp_dicom_source_from_series(mp_dicom_source_t *src, const mp_dicom_series_t *series);

/* Name of a well-known transfer syntax or SOP class UID ("CT Image Storage",
 * "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14,
 * SV1)"), or NULL for others. */
const char *mp_dicom_uid_name(const char *uid);

#ifdef __cplusplus
}
#endif
#endif
