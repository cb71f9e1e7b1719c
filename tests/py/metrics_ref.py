"""Independent SciPy reference for medpipe's distance transform, connected
components and surface metrics. Not a test on its own (tests/test_metrics.c
writes random masks and medpipe's results to DIR and runs this script):

    /usr/bin/python3 tests/py/metrics_ref.py DIR

DIR/cases.json lists cases; each names raw files (x fastest, so numpy shape
(nz, ny, nx)) and medpipe's numbers. The metrics are recomputed the way MONAI
defines them (edges = mask XOR binary_erosion(mask); distances from
scipy.ndimage.distance_transform_edt with sampling; numpy.percentile), with
medpipe's documented empty-mask conventions. Exit status 1 on any mismatch.

Also importable: surface_metrics() is used by tests/py/test_metrics_ref.py."""
import json
import math
import os
import sys

import numpy as np
from scipy import ndimage

REL = 1e-9


def edges(mask):
    """Mask voxels with a 6-neighbour outside the mask or the grid."""
    cross = ndimage.generate_binary_structure(3, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def directed(a_edges, b_edges, sampling):
    """Distances (mm) from each edge voxel of a to the nearest edge voxel of b."""
    dt = ndimage.distance_transform_edt(~b_edges, sampling=sampling)
    return dt[a_edges]


def surface_metrics(pred, ref, sampling, tol, empty_distance):
    """Dice, IoU, HD95, ASSD, NSD of two boolean arrays (numpy axis order)."""
    tp = int(np.sum(pred & ref))
    fp = int(np.sum(pred & ~ref))
    fn = int(np.sum(~pred & ref))
    out = {"TP": tp, "FP": fp, "FN": fn, "TN": int(pred.size - tp - fp - fn),
           "n_pred": tp + fp, "n_ref": tp + fn}
    if tp + fp + fn == 0:
        out.update(Dice=math.nan, IoU=math.nan, HD95=math.nan, ASSD=math.nan, NSD=math.nan)
        return out
    out["Dice"] = 2 * tp / (2 * tp + fp + fn)
    out["IoU"] = tp / (tp + fp + fn)
    if not pred.any() or not ref.any():
        out.update(HD95=empty_distance, ASSD=empty_distance, NSD=0.0)
        return out
    ep, er = edges(pred), edges(ref)
    dp = directed(ep, er, sampling)
    dr = directed(er, ep, sampling)
    out["HD95"] = max(np.percentile(dp, 95), np.percentile(dr, 95))
    out["ASSD"] = float(np.mean(np.concatenate([dp, dr])))
    out["NSD"] = (np.sum(dp <= tol) + np.sum(dr <= tol)) / (dp.size + dr.size)
    return out


def close(a, b, rel=REL):
    if a is None:
        a = math.nan
    if b is None:
        b = math.nan
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def load(folder, name, dtype, shape):
    a = np.fromfile(os.path.join(folder, name), dtype=dtype)
    if a.size != int(np.prod(shape)):
        raise ValueError("%s: %d values, expected %d" % (name, a.size, int(np.prod(shape))))
    return a.reshape(shape)


def check_case(folder, case):
    """Returns a list of mismatch descriptions for one case."""
    nx, ny, nz = case["dim"]
    shape = (nz, ny, nx)
    sampling = tuple(reversed(case["spacing"]))
    pred = load(folder, case["pred"], np.uint8, shape).astype(bool)
    ref = load(folder, case["ref"], np.uint8, shape).astype(bool)
    bad = []
    # Distance to the nearest reference voxel, and scipy's own semantics
    # (distance of each non-zero voxel to the nearest zero) on pred.
    if ref.any():
        want = ndimage.distance_transform_edt(~ref, sampling=sampling)
        got = load(folder, case["edt_ref"], np.float64, shape)
        err = np.abs(got - want) / np.maximum(1.0, want)
        if not err.max() <= REL:
            bad.append("EDT to ref: max relative error %.3g" % err.max())
    if (~pred).any():
        want = ndimage.distance_transform_edt(pred, sampling=sampling)
        got = load(folder, case["edt_pred_to_zero"], np.float64, shape)
        err = np.abs(got - want) / np.maximum(1.0, want)
        if not err.max() <= REL:
            bad.append("EDT of pred to zero: max relative error %.3g" % err.max())
    for conn, rank in (("cc6", 1), ("cc26", 3)):
        want, n = ndimage.label(pred, structure=ndimage.generate_binary_structure(3, rank))
        got = load(folder, case[conn], np.uint32, shape)
        if n != case[conn + "_n"] or not np.array_equal(got, want):
            bad.append("%s: %d components vs scipy %d, labels %s" %
                       (conn, case[conn + "_n"], n, "equal" if np.array_equal(got, want) else "differ"))
    ext = case["dim"][0] * case["spacing"][0], case["dim"][1] * case["spacing"][1], case["dim"][2] * case["spacing"][2]
    diag = math.sqrt(sum(e * e for e in ext))
    want = surface_metrics(pred, ref, sampling, case["tolerance"], diag)
    for key, value in want.items():
        if not close(case["metrics"][key], value):
            bad.append("%s: medpipe %r vs reference %r" % (key, case["metrics"][key], value))
    return bad


def main():
    if len(sys.argv) != 2:
        print("usage: metrics_ref.py DIR", file=sys.stderr)
        return 2
    folder = sys.argv[1]
    with open(os.path.join(folder, "cases.json")) as f:
        cases = json.load(f)
    failed = 0
    for case in cases:
        bad = check_case(folder, case)
        status = "ok  " if not bad else "FAIL"
        print("%s %s (%dx%dx%d, spacing %s)" % (status, case["name"], *case["dim"], case["spacing"]))
        for b in bad:
            print("     " + b)
        failed += bool(bad)
    print("reference: %d cases, %d mismatched" % (len(cases), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
