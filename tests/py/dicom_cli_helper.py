"""Helpers for tests/test_dicom_cli.c (not a stand-alone test), run with
Debian's /usr/bin/python3 (pydicom, numpy):

  dicom_cli_helper.py latin1 OUTDIR
      writes a 3-slice CT series with SpecificCharacterSet ISO_IR 100,
      Latin-1 names, ACR-NEMA-style date/time and over-long or malformed
      values, for the text cleaning of mp_dicom_source_from_series.

  dicom_cli_helper.py check-seg SRCDIR SEG HI LO
      checks a SEG written from a series read back by medpipe, using only
      pydicom: every frame references an image of the source series (SOP
      class and instance), sits at that image's ImagePositionPatient, and
      holds exactly that image's mask for its segment, computed here from
      the rescaled pixel values (segment 1: value > HI, segment 2:
      value < LO); a frame exists exactly where the mask is not empty;
      study, series, patient and Frame of Reference match the source; the
      referenced series lists every source instance; dciodvfy reports no
      error."""
import glob
import os
import subprocess
import sys
import warnings

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def latin1(out):
    warnings.filterwarnings("ignore", module="pydicom")  # the malformed values are on purpose
    os.makedirs(out, exist_ok=True)
    study, series, fo = generate_uid(), generate_uid(), generate_uid()
    for k in range(3):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CT_STORAGE
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID, ds.SOPInstanceUID = CT_STORAGE, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, fo
        ds.PatientName = "Müller^Jürgen"
        ds.PatientID = "LATIN1"
        ds.PatientBirthDate = "197002"        # not a date: dropped
        ds.PatientSex = "FEMALE"              # not M/F/O: dropped
        ds.StudyDate = "2001.02.03"           # ACR-NEMA style: dots removed
        ds.StudyTime = "12:30:45.1234567"     # colons removed, fraction cut to 6 digits
        ds.StudyID = "ABCDEFGHIJKLMNOPQRS"    # SH: cut to 16
        ds.StudyDescription = "Étude thoracique"
        ds.Modality = "CT"
        ds.SeriesNumber = 4
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = 4, 5
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.arange(20, dtype=np.int16) + 100 * k).tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(os.path.join(out, "slice%d.dcm" % k), write_like_original=False)
    raw = open(os.path.join(out, "slice0.dcm"), "rb").read()
    assert "Müller".encode("latin-1") in raw, "pydicom did not write Latin-1"


def dciodvfy(path):
    p = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    errors = [l for l in (p.stdout + p.stderr).splitlines() if l.startswith("Error")]
    assert not errors, "dciodvfy %s:\n%s" % (path, "\n".join(errors))


def check_seg(src_dir, seg_path, hi, lo):
    src = {}
    for f in sorted(glob.glob(os.path.join(src_dir, "*.dcm"))):
        ds = pydicom.dcmread(f)
        real = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        src[ds.SOPInstanceUID] = (ds, real)
    first = next(iter(src.values()))[0]
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG"
    for kw in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "StudyDate"):
        assert str(getattr(seg, kw)) == str(getattr(first, kw)), "%s: %r vs %r" % (
            kw, getattr(seg, kw), getattr(first, kw))
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == first.SeriesInstanceUID
    listed = {(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in ref.ReferencedInstanceSequence}
    assert listed == {(d.SOPClassUID, u) for u, (d, _) in src.items()}, "referenced instances differ from the source"
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    seen = set()
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        s = item.DerivationImageSequence[0].SourceImageSequence[0]
        uid = s.ReferencedSOPInstanceUID
        assert uid in src, "frame %d references %s, not a source image" % (f, uid)
        ds, real = src[uid]
        assert s.ReferencedSOPClassUID == ds.SOPClassUID
        ipp = np.array([float(x) for x in item.PlanePositionSequence[0].ImagePositionPatient])
        assert np.abs(ipp - np.array([float(x) for x in ds.ImagePositionPatient])).max() < 1e-3, \
            "frame %d at %s, its image at %s" % (f, ipp, ds.ImagePositionPatient)
        segnum = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        want = real > hi if segnum == 1 else real < lo
        assert np.array_equal(frames[f] != 0, want), "frame %d (segment %d, image %s): mask differs" % (f, segnum, uid)
        assert (segnum, uid) not in seen
        seen.add((segnum, uid))
    for uid, (_, real) in src.items():
        for segnum, mask in ((1, real > hi), (2, real < lo)):
            assert ((segnum, uid) in seen) == bool(mask.any()), "segment %d of %s: frame presence" % (segnum, uid)
    dciodvfy(seg_path)
    print("  %s: %d frames reference %d images correctly" % (os.path.basename(os.path.dirname(seg_path)),
                                                             len(seen), len(src)))


def main():
    if sys.argv[1] == "latin1":
        latin1(sys.argv[2])
    elif sys.argv[1] == "check-seg":
        check_seg(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit("unknown command %s" % sys.argv[1])


if __name__ == "__main__":
    main()
