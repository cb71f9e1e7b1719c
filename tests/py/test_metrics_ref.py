"""medpipe evaluate on NIfTI files written by nibabel, checked against an
independent SciPy computation (tests/py/metrics_ref.py: MONAI-style edges via
binary_erosion, distance_transform_edt with sampling, numpy percentiles) and
nnU-Net's summary.json layout; plus the command's error handling (missing
predictions, geometry mismatches, usage errors)."""
import json
import math
import os
import shutil
import sys

import nibabel as nib
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics_ref import close, surface_metrics  # noqa: E402
from mptest import medpipe, run_tests, scratch  # noqa: E402

SPACING = (0.9, 1.3, 2.1)
SHAPE = (40, 36, 22)


def affine(spacing=SPACING, shift=0.0):
    a = np.diag(list(spacing) + [1.0])
    a[:3, 3] = (-20.0 + shift, 11.0, -7.5)
    return a


def blobs(rng, labels, shape=SHAPE, noise=0.002):
    """Label map with a few random ellipsoids per label and sparse noise."""
    out = np.zeros(shape, dtype=np.int16)
    grid = np.indices(shape).astype(float)
    for lab in labels:
        for _ in range(2):
            c = [rng.uniform(0, s) for s in shape]
            r = [rng.uniform(2, s / 3 + 2) for s in shape]
            inside = sum(((grid[i] - c[i]) / r[i]) ** 2 for i in range(3)) <= 1
            out[inside] = lab
    flip = rng.random(shape) < noise
    out[flip] = rng.choice([0] + list(labels), size=int(flip.sum()))
    return out


def save(path, data, aff=None, dtype=None):
    img = nib.Nifti1Image(data.astype(dtype or data.dtype), aff if aff is not None else affine())
    nib.save(img, path)


def expected(pred, ref, label, tol, ref_path):
    """Reference metrics; geometry as stored in the file (NIfTI keeps float32)."""
    aff = nib.load(ref_path).affine
    spacing = tuple(np.linalg.norm(aff[:3, :3], axis=0))
    ext = [n * s for n, s in zip(pred.shape, spacing)]
    diag = math.sqrt(sum(e * e for e in ext))
    want = surface_metrics(pred == label, ref == label, spacing, tol, diag)
    vox_ml = abs(np.linalg.det(aff[:3, :3])) / 1000.0
    want["VolumeDiff_ml"] = (want["n_pred"] - want["n_ref"]) * vox_ml
    want["VolumeDiff_rel"] = (want["n_pred"] - want["n_ref"]) / want["n_ref"] if want["n_ref"] else math.nan
    return want


def nanmean(values):
    v = [math.nan if x is None else x for x in values]
    v = [x for x in v if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def make_folders(name, rng, cases):
    root = scratch(name)
    pred_dir, ref_dir = os.path.join(root, "pred"), os.path.join(root, "ref")
    os.makedirs(pred_dir)
    os.makedirs(ref_dir)
    arrays = {}
    for case, ref_labels, pred_labels in cases:
        ref = blobs(rng, ref_labels, noise=0.0)
        pred = blobs(rng, pred_labels)
        save(os.path.join(ref_dir, case), ref)
        save(os.path.join(pred_dir, case), pred, dtype=np.uint8)
        arrays[case] = (pred.astype(np.int64), ref.astype(np.int64))
    return root, pred_dir, ref_dir, arrays


def test_folder_matches_scipy_and_nnunet_layout():
    rng = np.random.default_rng(7)
    # Label 3 missing from one reference, label 4 only in a prediction (not
    # reported: labels come from the references), label 2 absent from a case.
    cases = [("case_a.nii.gz", [1, 2, 3], [1, 2, 3]),
             ("case_b.nii.gz", [1, 2], [1, 2, 3, 4]),
             ("case_c.nii", [1, 3], [1, 3])]
    root, pred_dir, ref_dir, arrays = make_folders("evaluate-ref", rng, cases)
    out = os.path.join(root, "summary.json")
    p = medpipe("evaluate", "--pred", pred_dir, "--ref", ref_dir, "--json", out, "--tolerance", "1.37",
                "--threads", "2")
    assert "foreground mean" in p.stdout and "case_b.nii.gz" in p.stdout, p.stdout
    with open(out) as f:
        text = f.read()
    assert "NaN" not in text  # strict JSON: NaN is written as null
    summary = json.loads(text)
    assert list(summary) == ["foreground_mean", "mean", "metric_per_case"]
    assert list(summary["mean"]) == ["1", "2", "3"]
    per_case = summary["metric_per_case"]
    assert [os.path.basename(c["reference_file"]) for c in per_case] == sorted(a for a, _, _ in cases)
    keys = ["ASSD", "Dice", "FN", "FP", "HD95", "IoU", "NSD", "TN", "TP", "VolumeDiff_ml", "VolumeDiff_rel",
            "n_pred", "n_ref"]
    bad = []
    for c in per_case:
        name = os.path.basename(c["reference_file"])
        assert c["prediction_file"] == os.path.join(pred_dir, name)
        pred, ref = arrays[name]
        for lab in ("1", "2", "3"):
            got = c["metrics"][lab]
            assert list(got) == keys, list(got)
            want = expected(pred, ref, int(lab), 1.37, c["reference_file"])
            for k in keys:
                if not close(got[k], want[k]):
                    bad.append("%s class %s %s: medpipe %r, scipy %r" % (name, lab, k, got[k], want[k]))
    assert not bad, "\n".join(bad)
    # case_b has no label 3 in its reference but in its prediction.
    b = [c for c in per_case if c["reference_file"].endswith("case_b.nii.gz")][0]["metrics"]["3"]
    assert b["Dice"] == 0 and b["n_ref"] == 0 and b["n_pred"] > 0 and b["VolumeDiff_rel"] is None
    for lab in ("1", "2", "3"):
        for k in keys:
            want = nanmean([c["metrics"][lab][k] for c in per_case])
            assert close(summary["mean"][lab][k], want), (lab, k, summary["mean"][lab][k], want)
    for k in keys:
        want = nanmean([summary["mean"][lab][k] for lab in ("1", "2", "3")])
        assert close(summary["foreground_mean"][k], want), (k, summary["foreground_mean"][k], want)
    assert not [f for f in os.listdir(root) if ".tmp." in f]
    shutil.rmtree(root)


def test_single_files_with_labels():
    rng = np.random.default_rng(11)
    root, pred_dir, ref_dir, arrays = make_folders("evaluate-files", rng, [("x.nii.gz", [2, 5], [2, 5])])
    out = os.path.join(root, "s.json")
    medpipe("evaluate", "--pred", os.path.join(pred_dir, "x.nii.gz"), "--ref", os.path.join(ref_dir, "x.nii.gz"),
            "--labels", "5,7", "--tolerance", "2", "--json", out, "--threads", "1")
    with open(out) as f:
        summary = json.load(f)
    m = summary["metric_per_case"][0]["metrics"]
    assert list(m) == ["5", "7"]
    pred, ref = arrays["x.nii.gz"]
    want = expected(pred, ref, 5, 2.0, os.path.join(ref_dir, "x.nii.gz"))
    for k in ("Dice", "HD95", "ASSD", "NSD", "TP", "TN"):
        assert close(m["5"][k], want[k]), (k, m["5"][k], want[k])
    # Label 7 is in neither: NaN (null) metrics, counts 0, TN = all voxels.
    assert m["7"]["Dice"] is None and m["7"]["HD95"] is None and m["7"]["TN"] == pred.size
    assert summary["foreground_mean"]["Dice"] == m["5"]["Dice"]
    shutil.rmtree(root)


def test_missing_predictions_are_listed():
    rng = np.random.default_rng(3)
    root, pred_dir, ref_dir, _ = make_folders("evaluate-missing", rng,
                                              [("a.nii.gz", [1], [1]), ("b.nii.gz", [1], [1]),
                                               ("c.nii.gz", [1], [1])])
    os.remove(os.path.join(pred_dir, "a.nii.gz"))
    os.remove(os.path.join(pred_dir, "c.nii.gz"))
    out = os.path.join(root, "summary.json")
    p = medpipe("evaluate", "--pred", pred_dir, "--ref", ref_dir, "--json", out, check=False)
    assert p.returncode == 1, p
    assert "a.nii.gz" in p.stderr and "c.nii.gz" in p.stderr and "2 references" in p.stderr, p.stderr
    assert not os.path.exists(out)
    shutil.rmtree(root)


def test_geometry_mismatch_is_an_error():
    rng = np.random.default_rng(5)
    root, pred_dir, ref_dir, arrays = make_folders("evaluate-geom", rng, [("g.nii.gz", [1], [1])])
    pred, _ = arrays["g.nii.gz"]
    ppath = os.path.join(pred_dir, "g.nii.gz")
    save(ppath, pred, aff=affine(shift=5e-5), dtype=np.uint8)  # within 1e-4: accepted
    medpipe("evaluate", "--pred", pred_dir, "--ref", ref_dir)
    save(ppath, pred, aff=affine(shift=1e-3), dtype=np.uint8)
    p = medpipe("evaluate", "--pred", pred_dir, "--ref", ref_dir, check=False)
    assert p.returncode == 1 and ppath in p.stderr and os.path.join(ref_dir, "g.nii.gz") in p.stderr, p.stderr
    assert "affine" in p.stderr, p.stderr
    save(ppath, pred[:, :, :-1], dtype=np.uint8)
    p = medpipe("evaluate", "--pred", pred_dir, "--ref", ref_dir, check=False)
    assert p.returncode == 1 and "dims" in p.stderr and ppath in p.stderr, p.stderr
    shutil.rmtree(root)


def test_usage_errors():
    for args in ([], ["--pred", "x"], ["--pred", "a", "--ref", "b", "--labels", "1,1"],
                 ["--pred", "a", "--ref", "b", "--tolerance", "-1"], ["--pred", "a", "--ref", "b", "--bogus"]):
        p = medpipe("evaluate", *args, check=False)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert medpipe("evaluate", "--help").stdout.startswith("usage: medpipe evaluate")
    root = scratch("evaluate-kinds")
    save(os.path.join(root, "f.nii"), np.zeros((4, 4, 4), np.uint8))
    p = medpipe("evaluate", "--pred", root, "--ref", os.path.join(root, "f.nii"), check=False)
    assert p.returncode == 1 and "is a folder of NIfTI cases but" in p.stderr, p.stderr
    shutil.rmtree(root)


if __name__ == "__main__":
    run_tests([test_folder_matches_scipy_and_nnunet_layout, test_single_files_with_labels,
               test_missing_predictions_are_listed, test_geometry_mismatch_is_an_error, test_usage_errors])
