"""`medpipe synth` checked from outside with nibabel (Debian's python3-nibabel):
the dataset folder and dataset.json follow the nnU-Net layout, the files
load in nibabel with the right types, affine and scaling, labels and
intensities look like the phantom they describe, two runs with different
thread counts give identical bytes, and the command's usage errors and
failures follow the exit-code rules."""
import glob
import hashlib
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

import nibabel as nib  # noqa: E402
from scipy import ndimage  # noqa: E402

# tmpfs when available: medpipe fsyncs every file it writes.
if os.access("/dev/shm", os.W_OK) and not os.environ.get("TMPDIR"):
    import tempfile
    SCRATCH = tempfile.mkdtemp(prefix="medpipe-synth-py-", dir="/dev/shm")
else:
    SCRATCH = mptest.scratch("synth-py")

SIZE = (64, 64, 32)
SPACING = (3.0, 3.0, 6.0)
ARGS = ["--cases", 3, "--test-cases", 1, "--size", "64,64,32", "--spacing", "3,3,6", "--classes", 4,
        "--seed", 5, "--quiet"]
NOMINAL = {1: 60, 2: 50, 3: 30, 4: 10}


def tree_digest(root):
    out = {}
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def make(name, *extra):
    d = os.path.join(SCRATCH, name)
    mptest.medpipe("synth", "--out", d, *(ARGS + list(extra)))
    return d


def test_layout_and_dataset_json():
    d = make("layout", "--threads", 1)
    files = sorted(os.path.relpath(p, d) for p in glob.glob(os.path.join(d, "**", "*"), recursive=True)
                   if os.path.isfile(p))
    want = ["dataset.json", "imagesTr/case_000_0000.nii.gz", "imagesTr/case_001_0000.nii.gz",
            "imagesTr/case_002_0000.nii.gz", "imagesTs/case_003_0000.nii.gz", "labelsTr/case_000.nii.gz",
            "labelsTr/case_001.nii.gz", "labelsTr/case_002.nii.gz", "labelsTs/case_003.nii.gz"]
    assert files == want, files
    with open(os.path.join(d, "dataset.json")) as f:
        ds = json.load(f)
    assert ds["channel_names"] == {"0": "CT"}, ds
    assert ds["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3, "lesion": 4}, ds
    assert ds["numTraining"] == 3 and ds["file_ending"] == ".nii.gz" and ds["numTest"] == 1, ds
    s = ds["medpipe_synth"]
    assert s["seed"] == 5 and s["size"] == list(SIZE) and s["spacing"] == list(SPACING), s
    assert s["classes"] == 4 and s["train_cases"] == 3 and s["test_cases"] == 1, s


def test_same_bytes_for_any_thread_count():
    a = tree_digest(make("t1", "--threads", 1))
    b = tree_digest(make("t2", "--threads", 2))
    c = tree_digest(make("t5", "--threads", 5))
    assert len(a) == 9 and a == b == c, (a, b, c)
    d = tree_digest(make("seed6", "--threads", 2, "--seed", 6))
    assert d["imagesTr/case_000_0000.nii.gz"] != a["imagesTr/case_000_0000.nii.gz"]


def test_nibabel_reads_ct_and_labels():
    d = make("nib", "--threads", 2)
    origin = [-(n - 1) / 2.0 * s for n, s in zip(SIZE, SPACING)]
    want_affine = np.array([[SPACING[0], 0, 0, origin[0]], [0, SPACING[1], 0, origin[1]],
                            [0, 0, SPACING[2], origin[2]], [0, 0, 0, 1]])
    seen = set()
    for case in range(4):
        split = "Tr" if case < 3 else "Ts"
        im = nib.load(os.path.join(d, "images%s/case_%03d_0000.nii.gz" % (split, case)))
        lb = nib.load(os.path.join(d, "labels%s/case_%03d.nii.gz" % (split, case)))
        assert im.shape == SIZE and lb.shape == SIZE
        assert im.get_data_dtype() == np.int16 and lb.get_data_dtype() == np.uint8
        assert im.dataobj.slope == 1 and im.dataobj.inter == 0
        for img in (im, lb):
            assert np.allclose(img.affine, want_affine, atol=1e-4), img.affine
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        a = np.asanyarray(im.dataobj)
        lab = np.asanyarray(lb.dataobj)
        assert a.dtype == np.int16 and lab.dtype == np.uint8
        labels = set(np.unique(lab).tolist())
        assert labels <= {0, 1, 2, 3, 4}, labels
        seen |= labels
        # Air around the body, a body of soft tissue, fat, unlabelled bone.
        corner = a[:4, :4, :].astype(float)
        assert -1012 < corner.mean() < -985, corner.mean()
        assert a.min() >= -1024 and a.max() > 500
        body = a > -500
        assert 0.3 < body.mean() < 0.8, body.mean()
        assert ((a >= -160) & (a <= -60)).sum() > body.sum() / 50
        assert (lab[a > 400] == 0).all()
        # Organ interiors near their nominal intensities, liver > kidney > lesion.
        means = {}
        for l in range(1, 5):
            core = ndimage.binary_erosion(lab == l, iterations=1)
            if core.sum() >= 20:
                means[l] = float(a[core].mean())
                assert abs(means[l] - NOMINAL[l]) < 25, (case, l, means[l])
        if 1 in means and 3 in means:
            assert means[1] > means[3] + 10, means
        if 3 in means and 4 in means:
            assert means[3] > means[4], means
    assert seen == {0, 1, 2, 3, 4}, seen


def test_usage_and_failures():
    p = mptest.medpipe("synth", "--help")
    assert "usage: medpipe synth" in p.stdout and "--classes" in p.stdout
    for bad in (["--cases", 2], ["--out", os.path.join(SCRATCH, "u"), "--classes", 9],
                ["--out", os.path.join(SCRATCH, "u"), "--size", "10,10,10"],
                ["--out", os.path.join(SCRATCH, "u"), "--size", "64,64"],
                ["--out", os.path.join(SCRATCH, "u"), "--seed", "-1"],
                ["--out", os.path.join(SCRATCH, "u"), "--bogus"]):
        r = mptest.medpipe("synth", *bad, check=False)
        assert r.returncode == 2 and r.stderr.startswith("medpipe synth: "), (bad, r.returncode, r.stderr)
    assert not os.path.exists(os.path.join(SCRATCH, "u"))
    # A folder that is not a synth dataset is left alone, with a one-line error.
    mine = os.path.join(SCRATCH, "mine")
    os.makedirs(mine)
    with open(os.path.join(mine, "notes.txt"), "w") as f:
        f.write("keep me\n")
    r = mptest.medpipe("synth", "--out", mine, "--force", *ARGS, check=False)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "not a medpipe synth dataset" in r.stderr, r.stderr
    assert os.listdir(mine) == ["notes.txt"]
    assert not [n for n in os.listdir(SCRATCH) if ".tmp." in n]
    # Progress on stderr and a summary on stdout without --quiet.
    args = [a for a in ARGS if a != "--quiet"]
    r = mptest.medpipe("synth", "--out", os.path.join(SCRATCH, "loud"), *args)
    assert "synth" in r.stderr and "4/4" in r.stderr, r.stderr
    assert r.stdout.startswith("wrote 3 training + 1 test cases"), r.stdout


try:
    mptest.run_tests([test_layout_and_dataset_json, test_same_bytes_for_any_thread_count,
                      test_nibabel_reads_ct_and_labels, test_usage_and_failures])
finally:
    shutil.rmtree(SCRATCH, ignore_errors=True)
