"""The medpipe command on DICOM, checked with Debian's nibabel and pydicom:
NIfTI -> DICOM (--to-dicom) -> NIfTI round trips (voxels exact for int16,
affine within 1e-4, in both slice orders), a folder of several series
converted to a folder of NIfTI files (names, contents), `info` on pydicom's
DICOMDIR test set and on single files (tags compared with pydicom),
`evaluate` with a DICOM reference, and bad inputs: one clear line, exit 1,
nothing left behind."""
import glob
import json
import os
import shutil
import sys

import numpy as np
import nibabel as nib
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mptest import medpipe, run_tests, scratch  # noqa: E402

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
TMP = scratch("dicomcli")


def rot_affine(spacing, origin, deg=(12.0, -8.0, 25.0)):
    ax, ay, az = np.radians(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def ct_volume(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 3072, size=shape).astype(np.int16)


def save(data, affine, name):
    p = os.path.join(TMP, name)
    nib.save(nib.Nifti1Image(data, affine), p)
    return p


def no_leftovers(parent, stem):
    left = [f for f in os.listdir(parent) if f.startswith(os.path.basename(stem))]
    assert not left, "left behind in %s: %s" % (parent, left)


def index_map(a_in, a_out, shape):
    """The signed permutation (plus offset) taking output voxel indices to
    input ones, from the two affines; asserted to be one."""
    t = np.linalg.inv(a_in) @ a_out
    r = np.round(t)
    assert np.abs(t - r).max() < 1e-3, "not an index permutation:\n%s" % t
    return r.astype(int)


def resample_by_map(data, t):
    """Input data seen through the output index grid (t maps out -> in)."""
    out_shape = [0, 0, 0]
    for j in range(3):
        i = int(np.nonzero(t[:3, j])[0][0])
        out_shape[j] = data.shape[i]
    idx = np.indices(out_shape).reshape(3, -1)
    src = (t[:3, :3] @ idx + t[:3, 3:4]).astype(int)
    return data[tuple(src)].reshape(out_shape)


def roundtrip(affine, name, modality):
    data = ct_volume((24, 20, 9), 1)
    nii = save(data, affine, name + ".nii.gz")
    dcm = os.path.join(TMP, name + "_dcm")
    p = medpipe("convert", nii, dcm, "--to-dicom", "--modality", modality, "--patient-id", "RT-1",
                "--series-description", "round trip", "--series-number", "5")
    assert "9 %s images (exact" % modality in p.stdout, p.stdout
    files = sorted(glob.glob(os.path.join(dcm, "*.dcm")))
    assert len(files) == 9
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == modality and ds.PatientID == "RT-1" and ds.SeriesDescription == "round trip"
    assert ds.SOPClassUID == ("1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2")
    assert int(ds.SeriesNumber) == 5
    back = os.path.join(TMP, name + "_back.nii.gz")
    medpipe("convert", dcm, back)
    img = nib.load(back)
    assert img.get_data_dtype() == np.int16, img.get_data_dtype()
    t = index_map(affine, img.affine, data.shape)
    got = np.asanyarray(img.dataobj)
    assert np.array_equal(got, resample_by_map(data, t)), "voxels differ"
    # the affine, once the index permutation is undone, is the original
    assert np.abs(affine @ t - img.affine).max() < 1e-4
    no_leftovers(TMP, name + "_dcm.tmp")
    return t


def test_roundtrip_same_order():
    t = roundtrip(rot_affine([0.7, 0.8, 2.5], [-30, 20, 50]), "rt_asc", "CT")
    assert np.array_equal(t, np.eye(4, dtype=int)), "expected no reordering:\n%s" % t


def test_roundtrip_reversed_slices():
    # k axis against row x column: DICOM readers order slices along the normal
    t = roundtrip(rot_affine([0.7, 0.8, -2.5], [-30, 20, 50]), "rt_desc", "MR")
    want = np.eye(4, dtype=int)
    want[2, 2], want[2, 3] = -1, 8
    assert np.array_equal(t, want), t


def test_multi_series_folder():
    root = os.path.join(TMP, "study")
    vols = {}
    specs = [("a/s1", 3, "T1 / post-Gd (3D)", 2), ("a/s2", 3, "T1 / post-Gd (3D)", 3), ("b/deep/s3", 12, "", 4)]
    for sub, number, descr, seed in specs:
        data = ct_volume((10 + seed, 8, 4 + seed), seed)
        aff = rot_affine([0.9, 1.1, 3.0], [seed, -seed, 10 * seed])
        nii = save(data, aff, "ms%d.nii.gz" % seed)
        args = ["convert", nii, os.path.join(root, sub), "--to-dicom", "--series-number", number]
        if descr:
            args += ["--series-description", descr]
        medpipe(*args)
        vols[seed] = (data, aff)
    out = os.path.join(TMP, "study_nii")
    p = medpipe("convert", root, out)
    names = sorted(os.listdir(out))
    # numbers sort the series; a repeated name gets _2; "medpipe" is the writer's default description
    assert names == ["12_medpipe.nii.gz", "3_T1_post-Gd_3D.nii.gz", "3_T1_post-Gd_3D_2.nii.gz"], names
    assert p.stdout.count("<- series") == 3, p.stdout
    no_leftovers(TMP, "study_nii.tmp")
    found = set()
    for n in names:
        img = nib.load(os.path.join(out, n))
        got = np.asanyarray(img.dataobj)
        for seed, (data, aff) in vols.items():
            if got.shape == data.shape:
                assert np.array_equal(got, data) and np.abs(img.affine - aff).max() < 1e-4, n
                found.add(seed)
    assert found == {2, 3, 4}
    # again into the existing folder: same names, replaced, no temporary left
    medpipe("convert", root, out)
    assert sorted(os.listdir(out)) == names
    # one output file for several series: refused, listing them
    p = medpipe("convert", root, os.path.join(TMP, "one.nii.gz"), check=False)
    assert p.returncode == 1 and "holds 3 series" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(os.path.join(TMP, "one.nii.gz"))


def dicomdir_truth(path):
    """Series UID -> number of image files, from pydicom's reading of a DICOMDIR."""
    dd = pydicom.dcmread(path)
    base = os.path.dirname(path)
    count = {}
    for rec in dd.DirectoryRecordSequence:
        if rec.DirectoryRecordType != "IMAGE":
            continue
        ds = pydicom.dcmread(os.path.join(base, *rec.ReferencedFileID))
        if "PixelData" in ds:
            count[ds.SeriesInstanceUID] = count.get(ds.SeriesInstanceUID, 0) + 1
    return count


def test_info_dicomdir():
    path = os.path.join(PYDICOM_FILES, "dicomdirtests", "DICOMDIR")
    truth = dicomdir_truth(path)
    info = json.loads(medpipe("info", path, "--json").stdout)
    assert info["format"] == "DICOM" and info["kind"] == "DICOMDIR" and "tags" not in info
    got = {}
    for s in info["series"]:
        got[s["series_uid"]] = got.get(s["series_uid"], 0) + s["slices"]
        assert len(s["dims"]) == 4 and len(s["spacing"]) == 3 and len(s["orientation"]) == 3
    assert got == truth, "medpipe %s\npydicom %s" % (got, truth)
    assert info["files_seen"] == sum(truth.values())
    text = medpipe("info", path).stdout
    assert "series:       %d" % len(info["series"]) in text and "DICOMDIR" in text
    # the folder itself gives the same series
    folder = json.loads(medpipe("info", os.path.dirname(path), "--json").stdout)
    assert sorted(s["series_uid"] for s in folder["series"]) == sorted(s["series_uid"] for s in info["series"])


def test_info_single_file():
    for name, syntax_name in (("CT_small.dcm", "Explicit VR Little Endian"),
                              ("MR_small_bigendian.dcm", "Explicit VR Big Endian"),
                              ("MR_small_implicit.dcm", "Implicit VR Little Endian")):
        path = os.path.join(PYDICOM_FILES, name)
        ds = pydicom.dcmread(path)
        info = json.loads(medpipe("info", path, "--json").stdout)
        t = info["tags"]
        assert info["kind"] == "file" and len(info["series"]) == 1
        assert t["transfer_syntax"] == ds.file_meta.TransferSyntaxUID and t["transfer_syntax_name"] == syntax_name
        assert t["patient_id"] == ds.PatientID and t["study_uid"] == ds.StudyInstanceUID
        assert t["series_uid"] == ds.SeriesInstanceUID and t["sop_class_uid"] == ds.SOPClassUID
        assert t["sop_class_name"] == ("CT Image Storage" if ds.Modality == "CT" else "MR Image Storage")
        assert int(t["rows"]) == ds.Rows and int(t["columns"]) == ds.Columns
        assert int(t["bits_allocated"]) == ds.BitsAllocated and int(t["bits_stored"]) == ds.BitsStored
        assert t["photometric"] == ds.PhotometricInterpretation
        ipp = [float(x) for x in t["image_position"].split("\\")]
        assert np.allclose(ipp, [float(x) for x in ds.ImagePositionPatient])
        ps = [float(x) for x in t["pixel_spacing"].split("\\")]
        assert np.allclose(ps, [float(x) for x in ds.PixelSpacing])
        if "RescaleSlope" in ds:
            assert float(t["rescale_slope"]) == float(ds.RescaleSlope)
            assert float(t["rescale_intercept"]) == float(ds.RescaleIntercept)
        s = info["series"][0]
        assert s["dims"] == [ds.Columns, ds.Rows, 1, 1] and s["modality"] == ds.Modality
    text = medpipe("info", os.path.join(PYDICOM_FILES, "CT_small.dcm")).stdout
    assert "CT Image Storage" in text and "Explicit VR Little Endian" in text


def test_info_flags():
    """A series with a slice taken out: info says so, convert fills it."""
    gap = os.path.join(TMP, "gap_dcm")
    shutil.copytree(os.path.join(TMP, "rt_asc_dcm"), gap)
    os.remove(os.path.join(gap, "IM00004.dcm"))
    info = json.loads(medpipe("info", gap, "--json").stdout)
    s = info["series"][0]
    assert s["slices"] == 8 and s["dims"][2] == 9 and s["flags"] == ["missing-slices"], s
    assert abs(s["spacing"][2] - 2.5) < 1e-4
    text = medpipe("info", gap).stdout
    assert "8 images, 9 volume slices (1 filled)" in text and "missing-slices" in text, text
    out = os.path.join(TMP, "gap.nii")
    p = medpipe("convert", gap, out)
    assert "missing" in p.stderr, p.stderr
    assert nib.load(out).shape == (24, 20, 9)


def test_content_sniffing():
    """DICOM files without a telling name are recognised by their content."""
    src = sorted(glob.glob(os.path.join(TMP, "rt_asc_dcm", "*.dcm")))[0]
    noext = os.path.join(TMP, "IMG0001")
    shutil.copy(src, noext)
    out = os.path.join(TMP, "sniffed.nii")
    medpipe("convert", noext, out)
    img = nib.load(out)
    assert img.shape == (24, 20, 1)
    assert np.array_equal(np.asanyarray(img.dataobj)[:, :, 0], pydicom.dcmread(src).pixel_array.T)
    info = json.loads(medpipe("info", noext, "--json").stdout)
    assert info["format"] == "DICOM"


def expect_failure(args, out_paths, what):
    p = medpipe(*args, check=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1, "%s: exit %d, stderr %s" % (what, p.returncode, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("medpipe %s: " % args[0]), "%s: %r" % (what, p.stderr)
    for o in out_paths:
        assert not os.path.exists(o), "%s: %s left behind" % (what, o)
        no_leftovers(os.path.dirname(o), os.path.basename(o) + ".tmp")
    return lines[0]


def test_bad_inputs():
    empty = os.path.join(TMP, "bad_empty")
    os.makedirs(empty)
    text = os.path.join(TMP, "bad_text")
    os.makedirs(text)
    for i in range(3):
        with open(os.path.join(text, "notes%d.txt" % i), "w") as f:
            f.write("not an image\n" * 20)
    cut = os.path.join(TMP, "bad_cut")
    os.makedirs(cut)
    src = sorted(glob.glob(os.path.join(TMP, "rt_asc_dcm", "*.dcm")))[0]
    raw = open(src, "rb").read()
    with open(os.path.join(cut, "cut.dcm"), "wb") as f:
        f.write(raw[: len(raw) - 300])
    outs = [os.path.join(TMP, "bad_out.nii.gz"), os.path.join(TMP, "bad_outdir")]
    msgs = {}
    for name, path in (("empty folder", empty), ("folder without DICOM", text), ("truncated file", cut),
                       ("truncated file alone", os.path.join(cut, "cut.dcm"))):
        for out in outs:
            msgs[name] = expect_failure(["convert", path, out], outs, name)
        expect_failure(["info", path], [], name)
    assert "no files found" in msgs["empty folder"], msgs
    assert "no DICOM image found in 3 file(s)" in msgs["folder without DICOM"], msgs
    assert "exceeds" in msgs["truncated file alone"] or "truncated" in msgs["truncated file alone"], msgs
    # --to-dicom: unreadable input, two channels, an occupied output folder
    two = save(np.zeros((4, 4, 3, 1, 2), np.int16), np.eye(4), "twochan.nii.gz")
    busy = os.path.join(TMP, "busy")
    os.makedirs(busy)
    open(os.path.join(busy, "keep.txt"), "w").close()
    for args, what in (([text + "/notes0.txt"], "not an image"), ([two], "two channels")):
        expect_failure(["convert"] + args + [os.path.join(TMP, "bad_dcm"), "--to-dicom"],
                       [os.path.join(TMP, "bad_dcm")], what)
    nii = os.path.join(TMP, "rt_asc.nii.gz")
    expect_failure(["convert", nii, busy, "--to-dicom"], [], "occupied folder")
    assert os.listdir(busy) == ["keep.txt"]


def test_failure_midway_leaves_nothing():
    """A study whose second series fails while being read (a slice cut in
    its pixel data, past what the header scan reads): no output folder."""
    root = os.path.join(TMP, "study_bad")
    a = save(ct_volume((10, 8, 3), 5), np.eye(4), "good.nii.gz")
    b = save(ct_volume((200, 200, 3), 6), np.eye(4), "big.nii.gz")
    medpipe("convert", a, os.path.join(root, "s1"), "--to-dicom", "--series-number", "1")
    medpipe("convert", b, os.path.join(root, "s2"), "--to-dicom", "--series-number", "2")
    victim = sorted(glob.glob(os.path.join(root, "s2", "*.dcm")))[1]
    raw = open(victim, "rb").read()
    assert len(raw) > 70000
    with open(victim, "wb") as f:
        f.write(raw[:70000])
    out = os.path.join(TMP, "study_bad_nii")
    msg = expect_failure(["convert", root, out], [out], "second series broken")
    assert os.path.basename(victim) in msg, msg
    os.makedirs(out)
    expect_failure(["convert", root, out], [], "into an existing folder")
    assert os.listdir(out) == [], os.listdir(out)


def test_evaluate_dicom_reference():
    rng = np.random.default_rng(7)
    lab = np.zeros((20, 16, 6), np.uint8)
    lab[4:12, 3:10, 1:5] = 1
    lab[13:18, 8:14, 2:6] = 2
    aff = rot_affine([1.0, 1.2, 2.0], [5, 6, 7])
    ref_dcm = os.path.join(TMP, "labels_dcm")
    medpipe("convert", save(lab, aff, "labels.nii.gz"), ref_dcm, "--to-dicom")
    pred = lab.copy()
    flip = rng.random(lab.shape) < 0.05
    pred[flip] = rng.integers(0, 3, size=int(flip.sum()))
    pred_path = save(pred, aff, "pred.nii.gz")
    summary = os.path.join(TMP, "summary.json")
    medpipe("evaluate", "--ref", ref_dcm, "--pred", pred_path, "--json", summary, "--threads", "1")
    with open(summary) as f:
        s = json.load(f)
    case = s["metric_per_case"][0]["metrics"]
    for k in (1, 2):
        tp = np.sum((pred == k) & (lab == k))
        dice = 2.0 * tp / (np.sum(pred == k) + np.sum(lab == k))
        assert abs(case[str(k)]["Dice"] - dice) < 1e-9, (k, case[str(k)]["Dice"], dice)
    # a folder of NIfTI cases against one DICOM image: refused, clearly
    cases = os.path.join(TMP, "cases")
    os.makedirs(cases)
    shutil.copy(pred_path, cases)
    msg = expect_failure(["evaluate", "--ref", ref_dcm, "--pred", cases], [], "cases vs image")
    assert "folder of NIfTI cases" in msg


run_tests([test_roundtrip_same_order, test_roundtrip_reversed_slices, test_multi_series_folder, test_info_dicomdir,
           test_info_single_file, test_info_flags, test_content_sniffing, test_bad_inputs, test_failure_midway_leaves_nothing,
           test_evaluate_dicom_reference])
shutil.rmtree(TMP, ignore_errors=True)
