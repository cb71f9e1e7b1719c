"""`medpipe preprocess` from outside: a broken dataset gets one error listing
every problem; --plan-only writes the plan and no cases; an edited plan.json
is honoured by the next run; the cache files read with numpy (memory-mapped)
have the sizes their JSON states, labels only declared values and
foreground locations on their class; 1 and 2 threads give the same bytes;
usage errors exit 2."""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

import nibabel as nib  # noqa: E402

if os.access("/dev/shm", os.W_OK) and not os.environ.get("TMPDIR"):
    import tempfile
    SCRATCH = tempfile.mkdtemp(prefix="medpipe-prep-py-", dir="/dev/shm")
else:
    SCRATCH = mptest.scratch("prep-py")
DS = os.path.join(SCRATCH, "ds")


def setup():
    mptest.medpipe("synth", "--out", DS, "--cases", 4, "--test-cases", 0, "--size", "48,48,24",
                   "--spacing", "4,4,6", "--classes", 2, "--quiet")


def test_broken_dataset_lists_all():
    bad = os.path.join(SCRATCH, "bad")
    shutil.copytree(DS, bad)
    os.remove(os.path.join(bad, "labelsTr", "case_000.nii.gz"))
    p = os.path.join(bad, "labelsTr", "case_001.nii.gz")
    img = nib.load(p)
    aff = img.affine.copy()
    aff[1, 3] += 0.01
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff, img.header), p)
    p = os.path.join(bad, "labelsTr", "case_002.nii.gz")
    img = nib.load(p)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(data, img.affine, img.header), p)
    r = mptest.medpipe("preprocess", bad, "--out", os.path.join(SCRATCH, "badcache"), check=False)
    assert r.returncode == 1, r
    assert "3 problem(s)" in r.stderr, r.stderr
    assert "case_000.nii.gz: missing label" in r.stderr, r.stderr
    assert "case_001.nii.gz: affine differs" in r.stderr, r.stderr
    assert "case_002.nii.gz: label value 9" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(SCRATCH, "badcache", "DONE"))


def read_case(cache, cid):
    with open(os.path.join(cache, "cases", cid + ".json")) as f:
        meta = json.load(f)
    x, y, z, c = meta["dim"]
    base = os.path.join(cache, "cases", cid)
    img = np.memmap(base + ".img.f32", dtype="<f4", mode="r", shape=(c, z, y, x))
    seg = np.memmap(base + ".seg.u8", dtype="u1", mode="r", shape=(z, y, x))
    fg = np.fromfile(base + ".fg.i32", dtype="<i4").reshape(-1, 3)
    assert os.path.getsize(base + ".img.f32") == meta["img_bytes"] == img.size * 4
    assert fg.shape[0] * 12 == meta["fg_bytes"]
    return meta, img, seg, fg


def test_plan_only_edit_and_cache():
    cache = os.path.join(SCRATCH, "cache")
    r = mptest.medpipe("preprocess", DS, "--out", cache, "--plan-only", "--memory-budget-gb", "2")
    assert "wrote" in r.stdout, r.stdout
    assert os.path.exists(os.path.join(cache, "plan.json"))
    assert os.path.exists(os.path.join(cache, "fingerprint.json"))
    assert not os.path.exists(os.path.join(cache, "DONE"))
    assert not os.path.exists(os.path.join(cache, "cases"))
    with open(os.path.join(cache, "plan.json")) as f:
        plan = json.load(f)
    assert plan["channels"][0]["normalization"] == "CT"
    assert plan["num_classes"] == 3 and plan["batch_size"] == 2
    assert plan["target_spacing"] == [4, 4, 6]
    plan["target_spacing"] = [6.0, 5.0, 4.0]
    plan["fg_samples_per_class"] = 100
    with open(os.path.join(cache, "plan.json"), "w") as f:
        json.dump(plan, f)
    r = mptest.medpipe("preprocess", DS, "--out", cache, "--threads", 2)
    assert "reused" in r.stdout, r.stdout
    with open(os.path.join(cache, "DONE")) as f:
        done = json.load(f)
    assert done["cases"] == ["case_000", "case_001", "case_002", "case_003"]
    for cid in done["cases"]:
        meta, img, seg, fg = read_case(cache, cid)
        assert np.allclose(meta["spacing"], [6.0, 5.0, 4.0], rtol=0.05), meta["spacing"]
        assert np.isfinite(img).all()
        assert set(np.unique(seg)) <= {0, 1, 2}
        for e in meta["fg"]:
            locs = fg[e["offset"]:e["offset"] + e["count"]]
            assert e["count"] == min(100, int((seg == e["label"]).sum()))
            assert (seg[locs[:, 2], locs[:, 1], locs[:, 0]] == e["label"]).all()
    # one thread: the same bytes
    cache1 = os.path.join(SCRATCH, "cache1")
    os.makedirs(cache1)
    shutil.copy(os.path.join(cache, "plan.json"), cache1)
    mptest.medpipe("preprocess", DS, "--out", cache1, "--threads", 1, "--quiet")
    for name in sorted(os.listdir(os.path.join(cache, "cases"))):
        with open(os.path.join(cache, "cases", name), "rb") as a, open(os.path.join(cache1, "cases", name), "rb") as b:
            assert a.read() == b.read(), name


def test_usage():
    assert mptest.medpipe("preprocess", "--help").returncode == 0
    assert mptest.medpipe("preprocess", DS, check=False).returncode == 2
    assert mptest.medpipe("preprocess", "--out", "x", check=False).returncode == 2
    assert mptest.medpipe("preprocess", DS, "--out", "x", "--threads", "-1", check=False).returncode == 2
    r = mptest.medpipe("preprocess", os.path.join(SCRATCH, "nope"), "--out", "x", check=False)
    assert r.returncode == 1 and "medpipe preprocess:" in r.stderr, r.stderr


if __name__ == "__main__":
    setup()
    try:
        mptest.run_tests([test_broken_dataset_lists_all, test_plan_only_edit_and_cache, test_usage])
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
