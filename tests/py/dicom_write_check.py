"""Independent checks of DICOM files written by medpipe (called by
tests/test_dicom_write.c with the folder it filled; not a stand-alone test).

Each sub-folder holds a case.txt. For "series" cases (series/IM*.dcm plus the
source's real values in values.f64 and its RAS affine): pydicom reads every
file; pixel values with RescaleSlope/Intercept must equal the source (exactly,
or within the quantization error the writer reported); ImagePositionPatient,
ImageOrientationPatient and PixelSpacing must follow from the affine in LPS;
dciodvfy must report no error; dcm2niix must convert the folder to a NIfTI
whose voxels equal the source once its index transform (a signed axis
permutation plus offsets, found from the two affines) is undone.

dcm2niix conventions allowed for: it sorts slices by position along the slice
normal (so a series whose slice axis points against the normal comes out with
z reversed), flips the row order of each slice (NIfTI's first row is DICOM's
last), writes the LPS geometry as a RAS sform/qform in float32, and keeps the
stored integers with scl_slope/scl_inter (NaN when slope 1 / intercept 0).

For "seg" cases (seg.dcm + labels.i32): pydicom's pixel_array and our own bit
unpacking (LSB first, continuous across frames) must agree; every frame is
placed with its ReferencedSOPInstanceUID and PlanePositionSequence and the
per-segment masks rebuild the label map exactly; patient/study/frame of
reference match the source, all source instances are referenced, codes and
dimension indices are consistent; dciodvfy reports no error."""
import glob
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import nibabel as nib
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

ROOT = sys.argv[1] if len(sys.argv) > 1 else None
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
WARNINGS = set()


def read_case(d):
    info = {}
    segs = []
    with open(os.path.join(d, "case.txt"), encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "segment":
                segs.append({"number": int(parts[1]), "label": int(parts[2]), "name": parts[3], "type": parts[4]})
            elif len(parts) == 2:
                info[parts[0]] = parts[1]
    info["segments"] = segs
    return info


def cases(kind):
    out = []
    for c in sorted(glob.glob(os.path.join(ROOT, "*", "case.txt"))):
        d = os.path.dirname(c)
        info = read_case(d)
        if info["kind"] == kind:
            out.append((d, info))
    assert out, "no %s cases under %s" % (kind, ROOT)
    return out


def check_uid(u):
    assert len(u) <= 64 and UID_RE.match(u), "bad UID %r" % u


def dciodvfy(path):
    """Runs dciodvfy; fails on any Error line, records warnings."""
    p = subprocess.run(["dciodvfy", path], capture_output=True, text=True)
    lines = (p.stdout + p.stderr).splitlines()
    errors = [l for l in lines if l.startswith("Error")]
    for l in lines:
        if l.startswith("Warning"):
            WARNINGS.add(re.sub(r"\[[0-9]+\] = <[^>]*>", "", l))
    assert not errors, "dciodvfy %s:\n%s" % (path, "\n".join(errors))
    return lines


def load_series(d, info):
    nx, ny, nz = map(int, info["dims"].split())
    aff = np.array(list(map(float, info["affine"].split()))).reshape(4, 4)
    vals = np.fromfile(os.path.join(d, "values.f64"), dtype="<f8").reshape(nz, ny, nx)
    files = sorted(glob.glob(os.path.join(d, "series", "*.dcm")))
    dss = [pydicom.dcmread(f) for f in files]
    return (nx, ny, nz), aff, vals, files, dss


def lps(aff):
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def check_series_headers(info, dims, dss):
    nx, ny, nz = dims
    assert len(dss) == nz, "%d files for %d slices" % (len(dss), nz)
    cls = MR_STORAGE if info["modality"] == "MR" else CT_STORAGE
    sops = set()
    for ds in dss:
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == cls and ds.Modality == info["modality"]
        for u in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID):
            check_uid(u)
        assert ds.SOPInstanceUID.startswith("2.25.")
        sops.add(ds.SOPInstanceUID)
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"):
            assert getattr(ds, key) == getattr(dss[0], key), key
        assert (ds.Rows, ds.Columns) == (ny, nx)
        assert str(ds.PatientName) == info["patient"], (str(ds.PatientName), info["patient"])
        ascii_only = all(ord(ch) < 128 for ch in info["patient"])
        assert getattr(ds, "SpecificCharacterSet", None) == (None if ascii_only else "ISO_IR 192")
    assert len(sops) == nz, "SOP instance UIDs are not unique"


def check_series_values(info, vals, dss):
    exact = info["exact"] == "1"
    max_err = float(info["max_error"])
    slope_rep = float(info["slope"])
    worst = 0.0
    for ds in dss:
        k = int(ds.InstanceNumber) - 1
        slope = float(getattr(ds, "RescaleSlope", 1.0))
        inter = float(getattr(ds, "RescaleIntercept", 0.0))
        assert slope == slope_rep, "slope %r vs reported %r" % (slope, slope_rep)
        got = ds.pixel_array.astype(np.float64) * slope + inter
        err = np.abs(got - vals[k]).max()
        worst = max(worst, err)
        if exact:
            assert err == 0, "slice %d differs by %g" % (k, err)
    assert worst <= max_err * (1 + 1e-12), "error %g above reported %g" % (worst, max_err)
    if not exact:
        assert 0 < max_err <= slope_rep / 2 * (1 + 1e-9), "quantization error %g, slope %g" % (max_err, slope_rep)
    return worst


def check_series_geometry(aff, dss):
    m = lps(aff)
    ci, cj, ck = m[:3, 0], m[:3, 1], m[:3, 2]
    u, w = ci / np.linalg.norm(ci), cj / np.linalg.norm(cj)
    for ds in dss:
        k = int(ds.InstanceNumber) - 1
        ipp = np.array(ds.ImagePositionPatient, dtype=float)
        want = (m @ np.array([0, 0, k, 1.0]))[:3]
        assert np.allclose(ipp, want, rtol=0, atol=1e-9), "slice %d IPP %s, want %s" % (k, ipp, want)
        iop = np.array(ds.ImageOrientationPatient, dtype=float)
        assert np.allclose(iop, np.concatenate([u, w]), atol=1e-12), iop
        ps = np.array(ds.PixelSpacing, dtype=float)
        assert np.allclose(ps, [np.linalg.norm(cj), np.linalg.norm(ci)], rtol=1e-14), ps
        n = np.cross(u, w)
        assert abs(float(ds.SliceThickness) - abs(ck @ n)) < 1e-12
        assert abs(float(ds.SliceLocation) - ipp @ n) < 1e-9


def dcm2niix_volume(series_dir):
    out = tempfile.mkdtemp(prefix="medpipe-d2n-")
    p = subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "conv", "-o", out, series_dir],
                       capture_output=True, text=True)
    assert p.returncode == 0, "dcm2niix failed: %s %s" % (p.stdout, p.stderr)
    nii = glob.glob(os.path.join(out, "conv*.nii"))
    assert len(nii) == 1, "dcm2niix wrote %s: %s" % (nii, p.stdout)
    img = nib.load(nii[0])
    return img, out


def check_dcm2niix(d, dims, aff, vals, info):
    img, out = dcm2niix_volume(os.path.join(d, "series"))
    try:
        data = np.asarray(img.dataobj, dtype=np.float64)
        slope, inter = img.header.get_slope_inter()
        if slope is not None:
            data = data * slope + (inter or 0.0)
        if data.ndim == 4:
            data = data[..., 0]
        # Voxel index in dcm2niix's output -> voxel index in the source.
        t = np.linalg.inv(aff) @ img.affine
        r = np.round(t)
        assert np.abs(t - r).max() < 2e-3, "dcm2niix affine is not a re-indexing of the source:\n%s" % t
        perm = r[:3, :3]
        assert all(sorted(np.abs(perm[i]).tolist()) == [0, 0, 1] for i in range(3)), perm
        assert sorted(data.shape) == sorted(dims), (data.shape, dims)
        idx = np.indices(data.shape).reshape(3, -1)
        src = (perm @ idx + r[:3, 3:4]).astype(np.int64)
        nx, ny, nz = dims
        assert src.min() >= 0 and (src[0] < nx).all() and (src[1] < ny).all() and (src[2] < nz).all()
        want = vals[src[2], src[1], src[0]]
        got = data.reshape(-1)
        tol = float(info["max_error"]) + 1e-6 + 2.4e-7 * (32768 * abs(float(info["slope"])) + abs(float(info["intercept"])))
        err = np.abs(got - want).max()
        assert err <= tol, "dcm2niix values differ by %g (tolerance %g)" % (err, tol)
        return perm, err
    finally:
        for f in glob.glob(os.path.join(out, "*")):
            os.remove(f)
        os.rmdir(out)


def test_series():
    for d, info in cases("series"):
        dims, aff, vals, files, dss = load_series(d, info)
        check_series_headers(info, dims, dss)
        worst = check_series_values(info, vals, dss)
        check_series_geometry(aff, dss)
        for f in {files[0], files[len(files) // 2], files[-1]}:
            dciodvfy(f)
        perm, err = check_dcm2niix(d, dims, aff, vals, info)
        print("  %s: %d files, max error %g (reported %s), dcm2niix index map %s, max diff %g" % (
            os.path.basename(d), len(files), worst, info["max_error"],
            [("-" if perm[i].sum() < 0 else "+") + "ijk"[int(np.argmax(np.abs(perm[i])))] for i in range(3)], err))


def unpack_frames(ds):
    n, rows, cols = int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)
    raw = np.frombuffer(ds.PixelData, dtype=np.uint8)
    assert len(raw) == (n * rows * cols + 7) // 8 + ((n * rows * cols + 7) // 8) % 2, "PixelData length %d" % len(raw)
    bits = np.unpackbits(raw, bitorder="little")[: n * rows * cols]
    return bits.reshape(n, rows, cols)


def check_seg_headers(ds, src):
    s0 = src[0]
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (1, 1, 0, 0)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "AccessionNumber", "FrameOfReferenceUID"):
        assert getattr(ds, key) == getattr(s0, key), key
    assert ds.SeriesInstanceUID != s0.SeriesInstanceUID
    check_uid(ds.SOPInstanceUID)
    refs = ds.ReferencedSeriesSequence
    assert len(refs) == 1 and refs[0].SeriesInstanceUID == s0.SeriesInstanceUID
    got = {(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in refs[0].ReferencedInstanceSequence}
    assert got == {(s.SOPClassUID, s.SOPInstanceUID) for s in src}, "ReferencedInstanceSequence"
    sh = ds.SharedFunctionalGroupsSequence[0]
    assert np.allclose(sh.PlaneOrientationSequence[0].ImageOrientationPatient, s0.ImageOrientationPatient, atol=1e-12)
    assert np.allclose(sh.PixelMeasuresSequence[0].PixelSpacing, s0.PixelSpacing, rtol=1e-14)
    assert abs(float(sh.PixelMeasuresSequence[0].SliceThickness) - float(s0.SliceThickness)) < 1e-12
    dims = ds.DimensionIndexSequence
    assert [(int(x.DimensionIndexPointer), int(x.FunctionalGroupPointer)) for x in dims] == [
        (0x0062000B, 0x0062000A), (0x00200032, 0x00209113)]
    assert ds.DimensionOrganizationSequence[0].DimensionOrganizationUID == dims[0].DimensionOrganizationUID
    assert int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence)


def check_segments(ds, info):
    listed = info["segments"]
    segs = ds.SegmentSequence
    if listed:
        assert len(segs) == len(listed)
    for i, s in enumerate(segs):
        assert int(s.SegmentNumber) == i + 1
        assert s.SegmentAlgorithmType == "AUTOMATIC" and s.SegmentAlgorithmName
        cat, typ = s.SegmentedPropertyCategoryCodeSequence[0], s.SegmentedPropertyTypeCodeSequence[0]
        assert (cat.CodeValue, cat.CodingSchemeDesignator, cat.CodeMeaning) == ("123037004", "SCT", "Anatomical Structure")
        assert typ.CodingSchemeDesignator == "SCT" and typ.CodeValue and typ.CodeMeaning
        assert len(s.RecommendedDisplayCIELabValue) == 3
        if listed:
            assert s.SegmentLabel == listed[i]["name"] and typ.CodeValue == listed[i]["type"]
    if listed:
        return {l["number"]: l["label"] for l in listed}
    # Default segments: one per distinct label, named after it.
    return {int(s.SegmentNumber): int(s.SegmentLabel.split()[-1]) for s in segs}


def test_seg():
    for d, info in cases("seg"):
        src_dir = os.path.join(ROOT, info["source"])
        sinfo = read_case(src_dir)
        dims, aff, vals, files, src = load_series(src_dir, sinfo)
        nx, ny, nz = dims
        ds = pydicom.dcmread(os.path.join(d, "seg.dcm"))
        check_seg_headers(ds, src)
        label_of = check_segments(ds, info)
        frames = unpack_frames(ds)
        pyd = ds.pixel_array.reshape(frames.shape)
        assert (pyd == frames).all(), "pydicom and bit unpacking disagree"
        by_uid = {s.SOPInstanceUID: s for s in src}
        normal = np.cross(np.array(src[0].ImageOrientationPatient[:3], float), np.array(src[0].ImageOrientationPatient[3:], float))
        proj = sorted(float(np.array(s.ImagePositionPatient, float) @ normal) for s in src)
        labels = np.fromfile(os.path.join(d, "labels.i32"), dtype="<i4").reshape(nz, ny, nx)
        expect = np.where(np.isin(labels, list(label_of.values())), labels, 0)
        rebuilt = np.zeros_like(labels)
        seen = set()
        for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
            segnum = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            ref = item.DerivationImageSequence[0].SourceImageSequence[0]
            s = by_uid[ref.ReferencedSOPInstanceUID]
            assert ref.ReferencedSOPClassUID == s.SOPClassUID
            k = int(s.InstanceNumber) - 1
            ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
            assert np.allclose(ipp, np.array(s.ImagePositionPatient, float), atol=1e-9), "frame %d position" % f
            div = list(item.FrameContentSequence[0].DimensionIndexValues)
            assert div == [segnum, proj.index(float(ipp @ normal)) + 1], "frame %d dimension index %s" % (f, div)
            mask = frames[f].astype(bool)
            if info["include_empty"] == "0":
                assert mask.any(), "empty frame %d kept" % f
            assert not (mask & (rebuilt[k] != 0)).any(), "segments overlap in frame %d" % f
            rebuilt[k][mask] = label_of[segnum]
            seen.add((segnum, k))
        assert (rebuilt == expect).all(), "label map differs in %d voxels" % int((rebuilt != expect).sum())
        pairs = {(n, k) for n, l in label_of.items() for k in range(nz) if (labels[k] == l).any()}
        want_frames = len(label_of) * nz if info["include_empty"] == "1" else len(pairs)
        assert len(seen) == want_frames == int(ds.NumberOfFrames) == int(info["frames"]), (len(seen), want_frames)
        dciodvfy(os.path.join(d, "seg.dcm"))
        print("  %s: %d segments, %d frames of %dx%d, references %d source images" % (
            os.path.basename(d), len(label_of), int(ds.NumberOfFrames), ny, nx, nz))


def test_report_warnings():
    # Runs last: the dciodvfy warnings seen (allowed, but listed).
    for w in sorted(WARNINGS):
        print("  dciodvfy: " + w)


if __name__ == "__main__":
    if not ROOT:
        print("usage: dicom_write_check.py DIR (made by tests/test_dicom_write.c)")
        sys.exit(2)
    mptest.run_tests([test_series, test_seg, test_report_warnings])
