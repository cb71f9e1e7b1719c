"""medpipe predict end to end with tiny random-weight models (run folders
written by tests/test_model.c into $BUILD/test-artifacts: predict_run has 1
channel and 3 classes with only checkpoint_best, predict_run2 has 2 channels
and 2 classes with only checkpoint_last). Random weights are enough for what
is checked here: geometry, file handling, DICOM SEG structure, probabilities,
determinism and errors."""
import glob
import json
import os

import nibabel as nib
import numpy as np
import pydicom

from mptest import ROOT, medpipe, run_tests, scratch

ART = os.path.join(os.environ.get("BUILD", os.path.join(ROOT, "build")), "test-artifacts")
RUN1 = os.path.join(ART, "predict_run")
RUN2 = os.path.join(ART, "predict_run2")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def need_runs():
    for r in (RUN1, RUN2):
        assert os.path.isfile(os.path.join(r, "model.json")), \
            "%s missing: tests/test_model.c writes it (run make test)" % r


def image(shape=(30, 26, 14), seed=0, affine=None, dtype=np.int16):
    """Body-like image: zero border (so the pipeline crops), noise inside."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, dtype)
    x, y, z = shape
    a[2:x - 3, 3:y - 2, 1:z - 1] = rng.integers(-200, 900, (x - 5, y - 5, z - 2))
    if affine is None:
        # LPS voxel axes, anisotropic, slightly oblique, not the plan's 1.5/1.5/2.0 spacing
        c, s = np.cos(0.2), np.sin(0.2)
        affine = np.array([[-0.8 * c, -0.7 * s, 0, 40.5], [-0.8 * s, 0.7 * c, 0, 31.2],
                           [0, 0, 3.0, -22.0], [0, 0, 0, 1]])
    return nib.Nifti1Image(a, affine)


def labels_of(path):
    img = nib.load(path)
    return img, np.asarray(img.dataobj)


def test_nifti_geometry():
    need_runs()
    d = scratch("pred-nifti")
    src = image()
    src.to_filename(os.path.join(d, "ct_0000.nii.gz"))
    p = medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "ct_0000.nii.gz"), "--out", os.path.join(d, "o"))
    assert "ct" in p.stdout and "peak RSS" in p.stdout, p.stdout
    out, lab = labels_of(os.path.join(d, "o", "ct.nii.gz"))
    assert lab.shape == src.shape, lab.shape
    assert np.allclose(out.affine, src.affine, atol=1e-6), (out.affine, src.affine)
    assert np.allclose(out.header.get_qform(), src.header.get_qform(), atol=1e-6)
    assert lab.dtype == np.uint8 and lab.max() <= 2
    assert (lab[0] == 0).all() and (lab[:, :, 0] == 0).all(), "outside the non-zero box is background"
    assert len(np.unique(lab)) >= 2, "random weights still give more than one class"
    log = [json.loads(l) for l in open(os.path.join(d, "o", "predict.jsonl"))]
    assert log[-1]["case"] == "ct" and log[-1]["status"] == "ok" and log[-1]["dims"] == "30x26x14"


def test_probs_and_tta():
    need_runs()
    d = scratch("pred-probs")
    src = image(seed=1)
    src.to_filename(os.path.join(d, "a.nii"))
    medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "a.nii"), "--out", os.path.join(d, "f"), "--probs",
            "--quiet")
    _, lab = labels_of(os.path.join(d, "f", "a.nii.gz"))
    pimg = nib.load(os.path.join(d, "f", "a_probs.nii.gz"))
    pr = np.asarray(pimg.dataobj).reshape(src.shape + (3,))
    assert pr.dtype == np.float32
    assert np.abs(pr.sum(-1) - 1).max() < 1e-5
    assert (pr.argmax(-1) == lab).mean() > 0.999  # argmax of the probabilities (ties aside)
    assert np.allclose(pimg.affine, src.affine, atol=1e-6)
    medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "a.nii"), "--out", os.path.join(d, "u"),
            "--probs-u8", "--quiet")
    pu = np.asarray(nib.load(os.path.join(d, "u", "a_probs.nii.gz")).dataobj).reshape(src.shape + (3,))
    assert pu.dtype == np.uint8
    assert np.abs(pu.astype(int).sum(-1) - 255).max() <= 2
    assert np.abs(pu / 255.0 - pr).max() <= 0.5 / 255 + 1e-6
    medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "a.nii"), "--out", os.path.join(d, "t"), "--tta",
            "--probs", "--quiet", "--keep-largest")
    timg, tl = labels_of(os.path.join(d, "t", "a.nii.gz"))
    assert tl.shape == src.shape and np.allclose(timg.affine, src.affine, atol=1e-6)
    tp = np.asarray(nib.load(os.path.join(d, "t", "a_probs.nii.gz")).dataobj).reshape(src.shape + (3,))
    assert np.abs(tp.sum(-1) - 1).max() < 1e-5
    assert not np.array_equal(tp, pr), "mirroring averages 8 passes: a random net is not mirror symmetric"


def test_deterministic_threads_batch():
    need_runs()
    d = scratch("pred-det")
    image(shape=(41, 37, 19), seed=2).to_filename(os.path.join(d, "c.nii.gz"))
    outs = []
    for t, b in (("1", "1"), ("2", "2")):
        o = os.path.join(d, "o%s" % t)
        medpipe("predict", "--model", RUN1, "--in", d, "--out", o, "--threads", t, "--batch", b, "--probs", "--quiet")
        outs.append(o)
    for name in ("c.nii.gz", "c_probs.nii.gz"):
        a = open(os.path.join(outs[0], name), "rb").read()
        b = open(os.path.join(outs[1], name), "rb").read()
        assert a == b, name


def test_corrupt_input_and_missing_model():
    need_runs()
    d = scratch("pred-bad")
    ind = os.path.join(d, "in")
    os.makedirs(ind)
    image(seed=3).to_filename(os.path.join(ind, "good.nii.gz"))
    with open(os.path.join(ind, "bad.nii.gz"), "wb") as f:
        f.write(b"\x1f\x8b\x08\x00garbage, not a gzip stream" * 3)
    image(seed=4).to_filename(os.path.join(ind, "zz.nii.gz"))
    out = os.path.join(d, "o")
    p = medpipe("predict", "--model", RUN1, "--in", ind, "--out", out, check=False)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert os.path.join(ind, "bad.nii.gz") in p.stderr, p.stderr
    assert "1 failed" in p.stdout, p.stdout
    names = sorted(os.listdir(out))
    assert names == ["good.nii.gz", "predict.jsonl", "zz.nii.gz"], names  # nothing for bad, no temporaries
    log = [json.loads(l) for l in open(os.path.join(out, "predict.jsonl"))]
    assert [r["status"] for r in log] == ["failed", "ok", "ok"] and "bad.nii.gz" in log[0]["error"]
    # missing model folder, folder without a model
    p = medpipe("predict", "--model", os.path.join(d, "nope"), "--in", ind, "--out", out, check=False)
    assert p.returncode == 1 and "nope: model folder not found" in p.stderr, p.stderr
    p = medpipe("predict", "--model", ind, "--in", ind, "--out", out, check=False)
    assert p.returncode == 1 and "plan.json" in p.stderr, p.stderr
    # a missing input path
    p = medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "missing.nii.gz"), "--out", out, check=False)
    assert p.returncode == 1 and "missing.nii.gz: no such file" in p.stderr, p.stderr


def test_channels_and_checkpoint():
    need_runs()
    d = scratch("pred-ch")
    ind = os.path.join(d, "in")
    os.makedirs(ind)
    a, b = image(seed=5), image(seed=6)
    a.to_filename(os.path.join(ind, "two_0000.nii.gz"))
    b.to_filename(os.path.join(ind, "two_0001.nii.gz"))
    a.to_filename(os.path.join(ind, "half_0000.nii.gz"))
    a.to_filename(os.path.join(ind, "plain.nii.gz"))
    out = os.path.join(d, "o")
    p = medpipe("predict", "--model", RUN2, "--in", ind, "--out", out, check=False)
    assert p.returncode == 1, p.stderr
    assert "no checkpoint_best.safetensors" in p.stderr and "checkpoint_last" in p.stderr, p.stderr
    assert "half" in p.stderr and "_0001 is missing" in p.stderr, p.stderr
    assert "plain.nii.gz: has 1 channel, the model takes 2" in p.stderr, p.stderr
    assert sorted(os.listdir(out)) == ["predict.jsonl", "two.nii.gz"], os.listdir(out)
    img, lab = labels_of(os.path.join(out, "two.nii.gz"))
    assert lab.shape == a.shape and lab.max() <= 1
    # channel files given one by one are grouped across --in
    out2 = os.path.join(d, "o2")
    medpipe("predict", "--model", RUN2, "--in", os.path.join(ind, "two_0001.nii.gz"), "--in",
            os.path.join(ind, "two_0000.nii.gz"), "--out", out2, "--quiet")
    assert open(os.path.join(out2, "two.nii.gz"), "rb").read() == open(os.path.join(out, "two.nii.gz"), "rb").read()
    # an explicit best is not replaced by last
    p = medpipe("predict", "--model", RUN2, "--checkpoint", "best", "--in", ind, "--out", out, check=False)
    assert p.returncode == 1 and "checkpoint_best.safetensors: no such checkpoint" in p.stderr, p.stderr
    # a checkpoint by path: RUN1's weights do not fit RUN2's network
    p = medpipe("predict", "--model", RUN2, "--checkpoint", os.path.join(RUN1, "checkpoint_best.safetensors"),
                "--in", ind, "--out", out, check=False)
    assert p.returncode == 1 and "predict_run/checkpoint_best.safetensors" in p.stderr, p.stderr


def test_usage_errors():
    need_runs()
    d = scratch("pred-usage")
    image().to_filename(os.path.join(d, "x.nii.gz"))
    p = medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "x.nii.gz"), "--out", os.path.join(d, "o"),
                "--dicom-seg", check=False)
    assert p.returncode == 2 and "--dicom-seg" in p.stderr and "x.nii.gz" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(d, "o"))
    for args in (["--model", RUN1, "--in", d], ["--model", RUN1, "--out", d, "--in", d, "--step", "0"],
                 ["--model", RUN1, "--out", d, "--in", d, "--batch", "x"], ["--bogus"]):
        p = medpipe("predict", *args, check=False)
        assert p.returncode == 2, (args, p.stderr)
    assert medpipe("predict", "--help").stdout.startswith("usage: medpipe predict")


def source_series(dcm_dir):
    files = sorted(glob.glob(os.path.join(dcm_dir, "*.dcm")))
    return [pydicom.dcmread(f) for f in files]


def check_seg(seg_path, src, lab, lab_affine):
    """SEG structure and every frame against the label map."""
    seg = pydicom.dcmread(seg_path)
    assert seg.SOPClassUID == SEG_SOP_CLASS
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert len(seg.SegmentSequence) == 2
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["class 1", "class 2"]
    sop_uids = {s.SOPInstanceUID for s in src}
    refd = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refd <= sop_uids
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    # LPS position of slice z from the label affine (RAS)
    zpos = [np.array([-1, -1, 1]) * (lab_affine @ [0, 0, z, 1])[:3] for z in range(lab.shape[2])]
    seen = 0
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        k = fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        ipp = np.array([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        z = int(np.argmin([np.abs(ipp - p).max() for p in zpos]))
        assert np.abs(ipp - zpos[z]).max() < 1e-3
        assert np.array_equal(frames[i].astype(bool), (lab[:, :, z] == k).T), (i, k, z)
        seen += int((lab[:, :, z] == k).any())
    want = sum(int((lab[:, :, z] == k).any()) for k in (1, 2) for z in range(lab.shape[2]))
    assert seen == want, (seen, want)


def test_dicom_series_and_seg():
    need_runs()
    d = scratch("pred-dicom")
    src = image(shape=(28, 24, 10), seed=7)
    src.to_filename(os.path.join(d, "vol.nii.gz"))
    dcm = os.path.join(d, "ct_series")
    medpipe("convert", os.path.join(d, "vol.nii.gz"), dcm, "--to-dicom", "--modality", "CT")
    medpipe("convert", dcm, os.path.join(d, "ref.nii.gz"))
    ref = nib.load(os.path.join(d, "ref.nii.gz"))
    out = os.path.join(d, "o")
    medpipe("predict", "--model", RUN1, "--in", dcm, "--out", out, "--dicom-seg", "--quiet")
    assert sorted(os.listdir(out)) == ["ct_series.nii.gz", "ct_series_seg.dcm", "predict.jsonl"], os.listdir(out)
    img, lab = labels_of(os.path.join(out, "ct_series.nii.gz"))
    assert lab.shape == ref.shape and np.allclose(img.affine, ref.affine, atol=1e-5)
    # the same voxels as predicting the NIfTI of that series
    medpipe("predict", "--model", RUN1, "--in", os.path.join(d, "ref.nii.gz"), "--out", os.path.join(d, "n"), "--quiet")
    assert np.array_equal(lab, np.asarray(nib.load(os.path.join(d, "n", "ref.nii.gz")).dataobj))
    check_seg(os.path.join(out, "ct_series_seg.dcm"), source_series(dcm), lab, img.affine)


def test_dicom_folder_of_series():
    need_runs()
    d = scratch("pred-study")
    study = os.path.join(d, "study")
    os.makedirs(study)
    for i, seed in ((3, 8), (5, 9)):
        image(shape=(20, 22, 8), seed=seed).to_filename(os.path.join(d, "v%d.nii.gz" % i))
        medpipe("convert", os.path.join(d, "v%d.nii.gz" % i), os.path.join(study, "s%d" % i), "--to-dicom",
                "--series-number", i, "--series-description", "axial ct/%d" % i)
    out = os.path.join(d, "o")
    medpipe("predict", "--model", RUN1, "--in", study, "--out", out, "--dicom-seg", "--quiet")
    names = sorted(os.listdir(out))
    assert names == ["3_axial_ct_3.nii.gz", "3_axial_ct_3_seg.dcm", "5_axial_ct_5.nii.gz", "5_axial_ct_5_seg.dcm",
                     "predict.jsonl"], names
    for i in (3, 5):
        seg = pydicom.dcmread(os.path.join(out, "%d_axial_ct_%d_seg.dcm" % (i, i)))
        src = source_series(os.path.join(study, "s%d" % i))
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID


if __name__ == "__main__":
    run_tests([test_nifti_geometry, test_probs_and_tta, test_deterministic_threads_batch,
               test_corrupt_input_and_missing_model, test_channels_and_checkpoint, test_usage_errors,
               test_dicom_series_and_seg, test_dicom_folder_of_series])
