"""Synthetic DICOM series for tests/test_dicom_series.c, written with Debian's
pydicom, plus Debian dcm2niix's conversion of each (read back with nibabel).

Usage: dicom_make_series.py OUTDIR
For each case NAME it writes:
  OUTDIR/dcm/NAME/...         the DICOM files (random file names: order must come from positions)
  OUTDIR/NAME.truth           text: "dims NX NY NZ", "spacing ROW COL", "iop 6 numbers",
                              then one "slice Z X Y Z" line per slice present (z index in the
                              volume, ImagePositionPatient as written, LPS)
  OUTDIR/NAME.truth.raw       float64 real values (stored * slope + intercept), x fastest,
                              z in volume order (missing slices: zeros, not compared)
  OUTDIR/NAME.d2n/            dcm2niix output folder
  OUTDIR/NAME.d2n.txt         per NIfTI written by dcm2niix: "nifti FILE NX NY NZ" then
                              4 affine rows (nibabel RAS), data as FILE.f64 (real values,
                              x fastest)
The volume value at (x, y, z) is x + 25 y + 500 z - 2000 (stored), unique per
voxel so any flip or shuffle shows.
"""
import math
import os
import random
import subprocess
import sys

import numpy as np
import nibabel as nib
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

NX, NY, NZ = 24, 20, 20
ROW_SP, COL_SP, SLICE_SP = 0.9, 0.8, 2.5


def rot(ax, ay, az):
    ax, ay, az = (math.radians(a) for a in (ax, ay, az))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ds_num(v):
    """A DS string of at most 16 characters, and the value it really holds."""
    s = "%.8g" % v
    if s == "-0":
        s = "0"
    return s, float(s)


def base_ds(series_uid, study_uid, for_uid, number, descr, sop_class="1.2.840.10008.5.1.4.1.1.2"):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.PatientID = "MEDPIPE-TEST"
    ds.PatientName = "Test^Synthetic"
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.Modality = "CT" if sop_class.endswith(".2") else "MR"
    ds.SeriesNumber = number
    ds.SeriesDescription = descr
    ds.Manufacturer = "medpipe"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = NY, NX
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    return ds


def stored(z):
    y, x = np.mgrid[0:NY, 0:NX]
    return (x + 25 * y + 500 * z - 2000).astype(np.int16)


def write_truth(out, name, positions, iop, zs, real_slices, nz):
    with open(os.path.join(out, name + ".truth"), "w") as f:
        f.write("dims %d %d %d\n" % (NX, NY, nz))
        f.write("spacing %r %r\n" % (ROW_SP, COL_SP))
        f.write("iop %s\n" % " ".join(repr(v) for v in iop))
        for z, p in sorted(zip(zs, positions)):
            f.write("slice %d %r %r %r\n" % (z, p[0], p[1], p[2]))
    vol = np.zeros((nz, NY, NX))
    for z, arr in zip(zs, real_slices):
        vol[z] = arr
    vol.astype("<f8").tofile(os.path.join(out, name + ".truth.raw"))


def classic_series(out, name, rng, number, angles, drop=(), tilt_deg=0.0, slopes=None, implicit=False,
                   dup_acq=False, extra=None):
    """Single-frame slices; z index k is the k-th position along the normal."""
    d = os.path.join(out, "dcm", name)
    os.makedirs(d, exist_ok=True)
    R = rot(*angles)
    r, c = R[:, 0], R[:, 1]
    n = np.cross(r, c)
    origin = np.array([-20.5, 31.25, -47.0])
    step = SLICE_SP * n + math.tan(math.radians(tilt_deg)) * SLICE_SP * c
    series_uid, study_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    iop_s = [ds_num(v) for v in list(r) + list(c)]
    positions, zs, reals = [], [], []
    names = ["%08X" % rng.getrandbits(32) for _ in range(NZ * 2)]
    acqs = (1, 2) if dup_acq else (1,)
    for acq in acqs:
        for z in range(NZ):
            if z in drop:
                continue
            ds = base_ds(series_uid, study_uid, for_uid, number, name)
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = z + 1 + (acq - 1) * NZ
            ds.AcquisitionNumber = acq
            p = origin + z * step
            ipp_s = [ds_num(v) for v in p]
            ds.ImagePositionPatient = [s for s, _ in ipp_s]
            ds.ImageOrientationPatient = [s for s, _ in iop_s]
            ds.PixelSpacing = [ds_num(ROW_SP)[0], ds_num(COL_SP)[0]]
            ds.SliceThickness = ds_num(SLICE_SP)[0]
            if tilt_deg:
                ds.GantryDetectorTilt = ds_num(tilt_deg)[0]
            slope = slopes[z] if slopes else 1.0
            ds.RescaleSlope = ds_num(slope)[0]
            ds.RescaleIntercept = "-1024"
            arr = stored(z) + (acq - 1) * 7
            ds.PixelData = arr.astype("<i2").tobytes()
            if extra:
                extra(ds, z)
            if implicit:
                ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.is_little_endian, ds.is_implicit_VR = True, implicit
            ds.save_as(os.path.join(d, names.pop()), write_like_original=False)
            if acq == 1:
                positions.append([v for _, v in ipp_s])
                zs.append(z)
                reals.append(arr.astype(np.float64) * ds_num(slope)[1] - 1024)
    write_truth(out, name, positions, [v for _, v in iop_s], zs, reals, NZ)


def enhanced_mr(out, name, rng, number):
    """One Enhanced MR file, frames stored in shuffled order, geometry only in
    the functional groups."""
    d = os.path.join(out, "dcm", name)
    os.makedirs(d, exist_ok=True)
    R = rot(-12, 25, 40)
    r, c = R[:, 0], R[:, 1]
    n = np.cross(r, c)
    origin = np.array([10.0, -5.5, 22.0])
    iop_s = [ds_num(v) for v in list(r) + list(c)]
    ds = base_ds(generate_uid(), generate_uid(), generate_uid(), number, name, "1.2.840.10008.5.1.4.1.1.4.1")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.NumberOfFrames = NZ
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [ds_num(ROW_SP)[0], ds_num(COL_SP)[0]]
    pm.SliceThickness = ds_num(SLICE_SP)[0]
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = [s for s, _ in iop_s]
    shared.PlaneOrientationSequence = Sequence([po])
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = "2", "-10", "US"
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    order = list(range(NZ))
    rng.shuffle(order)
    per, frames, positions = [], [], {}
    for z in order:
        fg = Dataset()
        pp = Dataset()
        ipp_s = [ds_num(v) for v in origin + z * SLICE_SP * n]
        pp.ImagePositionPatient = [s for s, _ in ipp_s]
        positions[z] = [v for _, v in ipp_s]
        fg.PlanePositionSequence = Sequence([pp])
        fc = Dataset()
        fc.InStackPositionNumber = z + 1
        fc.StackID = "1"
        fc.DimensionIndexValues = [1, z + 1]
        fg.FrameContentSequence = Sequence([fc])
        per.append(fg)
        frames.append(stored(z).astype("<i2").tobytes())
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    ds.PixelData = b"".join(frames)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(os.path.join(d, "ENHANCED"), write_like_original=False)
    zs = list(range(NZ))
    write_truth(out, name, [positions[z] for z in zs], [v for _, v in iop_s], zs,
                [stored(z).astype(np.float64) * 2 - 10 for z in zs], NZ)


def split_series(out, name, rng, number):
    """One SeriesInstanceUID holding 10 axial slices and 3 sagittal ones."""
    d = os.path.join(out, "dcm", name)
    os.makedirs(d, exist_ok=True)
    uid, study, fr = generate_uid(), generate_uid(), generate_uid()
    for z in range(13):
        ds = base_ds(uid, study, fr, number, name)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = z + 1
        if z < 10:
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.ImagePositionPatient = ["0", "0", str(z * 3)]
        else:
            ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
            ds.ImagePositionPatient = [str((z - 10) * 5), "0", "0"]
        ds.PixelSpacing = ["1", "1"]
        ds.PixelData = stored(z).astype("<i2").tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(os.path.join(d, "%08X" % rng.getrandbits(32)), write_like_original=False)


def run_dcm2niix(out, name):
    src = os.path.join(out, "dcm", name)
    dst = os.path.join(out, name + ".d2n")
    os.makedirs(dst, exist_ok=True)
    p = subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "%s_%j", "-o", dst, src], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit("dcm2niix failed on %s: %s" % (src, p.stdout + p.stderr))
    with open(os.path.join(out, name + ".d2n.txt"), "w") as f:
        for fn in sorted(os.listdir(dst)):
            if not fn.endswith(".nii"):
                continue
            img = nib.load(os.path.join(dst, fn))
            data = np.asarray(img.get_fdata(), dtype="<f8")
            shape = list(data.shape) + [1] * (3 - data.ndim)
            f.write("nifti %s %d %d %d\n" % (fn, shape[0], shape[1], shape[2]))
            for row in img.affine:
                f.write(" ".join(repr(float(v)) for v in row) + "\n")
            data.reshape(shape[:3]).transpose(2, 1, 0).tofile(os.path.join(dst, fn + ".f64"))
        f.write("log %s\n" % " | ".join(l for l in p.stdout.splitlines() if "arning" in l or "Tilt" in l or "issing" in l))


def dicomdir_counts(out):
    """Images a DICOMDIR of pydicom's test data refers to and their series, per pydicom."""
    root = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "dicomdirtests")
    dd = pydicom.dcmread(os.path.join(root, "DICOMDIR"))
    images, series = 0, set()
    for rec in dd.DirectoryRecordSequence:
        if "ReferencedFileID" not in rec or rec.DirectoryRecordType in ("PATIENT", "STUDY", "SERIES"):
            continue
        fid = rec.ReferencedFileID
        parts = [fid] if isinstance(fid, str) else list(fid)
        ds = pydicom.dcmread(os.path.join(root, *parts))
        images += 1
        if "PixelData" in ds:
            series.add(ds.SeriesInstanceUID)
    with open(os.path.join(out, "dicomdir.txt"), "w") as f:
        f.write("images %d series %d\n" % (images, len(series)))


def main():
    out = sys.argv[1]
    rng = random.Random(1234)
    os.makedirs(os.path.join(out, "dcm"), exist_ok=True)
    classic_series(out, "oblique", rng, 1, (20, -10, 35))
    classic_series(out, "missing", rng, 2, (20, -10, 35), drop=(7,))
    classic_series(out, "tilt", rng, 3, (0, 0, 0), tilt_deg=15.0)
    classic_series(out, "slopes", rng, 4, (90, 0, 0), slopes=[1 + 0.25 * (z % 3) for z in range(NZ)], implicit=True)
    classic_series(out, "twoacq", rng, 5, (0, 30, 0), dup_acq=True)
    enhanced_mr(out, "enhanced", rng, 6)
    split_series(out, "split", rng, 7)
    dicomdir_counts(out)
    for name in ("oblique", "missing", "tilt", "slopes", "enhanced"):
        run_dcm2niix(out, name)


if __name__ == "__main__":
    main()
