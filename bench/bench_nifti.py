"""NIfTI .nii.gz decode speed, medpipe vs nibabel, side by side in one run.

Files: a CT-like 256x256x160 int16 volume written by nibabel with its default
gzip settings, and mricron-data's ch2.nii.gz (a real T1 MRI). For each, the
C program bench_nifti_read (mp_image_read, N runs) and nibabel's
np.asanyarray(nib.load(f).dataobj) (N runs) are timed; MB/s of decompressed
data and the ratio medpipe/nibabel are printed (best and median runs).
"""
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "py"))
import mptest  # noqa: E402

import nibabel as nib  # noqa: E402

BUILD = os.environ.get("BUILD", os.path.join(mptest.ROOT, "build"))
READER = os.path.join(BUILD, "bench", "bench_nifti_read")
RUNS = int(os.environ.get("MP_BENCH_RUNS", "7"))


def ct_like(path):
    rng = np.random.default_rng(42)
    z, y, x = np.mgrid[0:160, 0:256, 0:256].astype(np.float32)
    body = ((x - 128) / 110) ** 2 + ((y - 128) / 80) ** 2 < 1
    spine = np.hypot(x - 128, y - 170) < 14
    hu = np.full(body.shape, -1000.0, dtype=np.float32)
    hu[body] = 40 + 15 * rng.standard_normal(int(body.sum()))
    hu[spine] = 700 + 40 * rng.standard_normal(int(spine.sum()))
    arr = np.ascontiguousarray(np.rint(hu).astype(np.int16).transpose(2, 1, 0))  # x fastest on disk
    img = nib.Nifti1Image(arr, np.diag([0.8, 0.8, 1.5, 1.0]))
    nib.save(img, path)


def time_nibabel(path):
    ts, nbytes = [], 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        a = np.asanyarray(nib.load(path).dataobj)
        ts.append(time.perf_counter() - t0)
        nbytes = a.nbytes
    ts.sort()
    return nbytes / 1e6 / ts[0], nbytes / 1e6 / ts[len(ts) // 2]


def time_medpipe(path):
    out = subprocess.run([READER, path, str(RUNS)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"\((\d+) MB/s\), median .*\((\d+) MB/s\)", out)
    return float(m.group(1)), float(m.group(2))


def main():
    files = []
    tmp = tempfile.mkdtemp(prefix="medpipe-bench-nifti-")
    ct = os.path.join(tmp, "ct_like_256x256x160_i16.nii.gz")
    ct_like(ct)
    files.append(ct)
    pkg = mptest.debian_package_dir("mricron-data")
    files.append(os.path.join(pkg, "usr", "share", "mricron", "templates", "ch2.nii.gz"))
    print("%-34s %8s %8s | %-19s | %-19s | %s" % ("file", "MB raw", "MB gz", "medpipe MB/s best/med",
                                                 "nibabel MB/s best/med", "ratio best/med"))
    for f in files:
        raw = np.prod(nib.load(f).shape) * nib.load(f).get_data_dtype().itemsize / 1e6
        mp_best, mp_med = time_medpipe(f)
        nb_best, nb_med = time_nibabel(f)
        print("%-34s %8.1f %8.1f | %8.0f / %-8.0f | %8.0f / %-8.0f | %.2fx / %.2fx" % (
            os.path.basename(f), raw, os.path.getsize(f) / 1e6, mp_best, mp_med, nb_best, nb_med,
            mp_best / nb_best, mp_med / nb_med))
    os.remove(ct)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
