"""Reference checks for medpipe's volume operations, run by
tests/test_vol_ops_py.c on a folder holding case.json and raw .bin volumes
(layout (c, z, y, x), x fastest, as the C code writes them). Recomputes each
result independently (scipy.ndimage.map_coordinates, nibabel's
as_closest_canonical / orientation transforms, numpy.percentile) and exits 1
on any mismatch. Not named test_*.py: tests/run.sh must not run it alone."""
import json
import os
import sys

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print("  mismatch: " + msg, file=sys.stderr)


def load(case, d, name):
    """Returns (array (x, y, z, c) of stored values, affine, slope, inter)."""
    m = case[name]
    raw = np.fromfile(os.path.join(d, m["file"]), dtype=np.dtype(m["dtype"]).newbyteorder("<"))
    nc, nz, ny, nx = m["shape"]
    arr = raw.reshape(nc, nz, ny, nx).transpose(3, 2, 1, 0)
    return arr, np.array(m["affine"], dtype=np.float64), m["slope"], m["inter"]


def real(arr, slope, inter):
    a = arr.astype(np.float64)
    if slope != 0 and (slope != 1 or inter != 0):
        a = a * slope + inter
    return a


def fov_coords(in_shape, out_shape):
    """Per-axis sample positions of a field-of-view-keeping resize."""
    return [(np.arange(o) + 0.5) * (i / o) - 0.5 for i, o in zip(in_shape, out_shape)]


def spacing_shape(affine, shape, target):
    sp = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    return [max(1, int(v)) for v in np.round((sp / np.array(target)) * np.array(shape))]


def fov_affine(affine, in_shape, out_shape):
    s = np.array(in_shape, dtype=np.float64) / np.array(out_shape)
    vox = np.eye(4)
    vox[:3, :3] = np.diag(s)
    vox[:3, 3] = 0.5 * s - 0.5
    return affine @ vox


def check_resized(name, inp, out, aff_in, aff_out, target, order_ref):
    in_shape = inp.shape[:3]
    want_shape = spacing_shape(aff_in, in_shape, target)
    check(list(out.shape[:3]) == want_shape, "%s: shape %s, want %s" % (name, out.shape[:3], want_shape))
    if list(out.shape[:3]) != want_shape:
        return
    check(np.allclose(aff_out, fov_affine(aff_in, in_shape, want_shape), atol=1e-9), "%s: affine" % name)
    cx, cy, cz = fov_coords(in_shape, want_shape)
    gx, gy, gz = np.meshgrid(cx, cy, cz, indexing="ij")
    for c in range(inp.shape[3]):
        ref = order_ref(inp[..., c], np.array([gx, gy, gz]))
        yield c, ref


def grid_coords(aff_in, aff_out, shape_in, shape_out):
    """Input voxel coordinates of every output voxel and the inside mask;
    `ambiguous` marks points too close to the extent's border to call."""
    m = np.linalg.inv(aff_in) @ aff_out
    idx = np.indices(shape_out, dtype=np.float64).reshape(3, -1)
    x = (m[:3, :3] @ idx + m[:3, 3:4])
    lo = -0.5
    hi = np.array(shape_in, dtype=np.float64)[:, None] - 0.5
    inside = np.all((x >= lo - 1e-6) & (x <= hi + 1e-6), axis=0)
    near = np.any((np.abs(x - lo) < 1e-4) | (np.abs(x - hi) < 1e-4), axis=0)
    return x.reshape((3,) + tuple(shape_out)), inside.reshape(shape_out), near.reshape(shape_out)


def case_linear(case, d):
    inp, a_in, sl, it = load(case, d, "in")
    out, a_out, _, _ = load(case, d, "out")
    lin = lambda vol, coords: ndimage.map_coordinates(vol, coords, order=1, mode="nearest")
    for c, ref in check_resized("linear f32", real(inp, sl, it), out, a_in, a_out, case["target"], lin):
        err = np.abs(out[..., c] - ref).max()
        check(err < 1e-4, "linear f32 channel %d: max error %g" % (c, err))
    inp, a_in, sl, it = load(case, d, "in_i16")
    out, a_out, _, _ = load(case, d, "out_i16")
    for c, ref in check_resized("linear i16", real(inp, sl, it), out, a_in, a_out, case["target_i16"], lin):
        err = np.abs(out[..., c] - ref).max() / np.abs(ref).max()
        check(err < 1e-6, "linear i16: relative error %g" % err)
    # Oblique grid: inside points interpolate (edges clamped), outside = fill.
    inp, a_in, sl, it = load(case, d, "in")
    out, a_out, _, _ = load(case, d, "out_grid")
    x, inside, near = grid_coords(a_in, a_out, inp.shape[:3], out.shape[:3])
    fill = case["grid_fill"][0]
    check(inside.sum() > 100 and (~inside).sum() > 100, "grid: inside %d of %d" % (inside.sum(), inside.size))
    for c in range(inp.shape[3]):
        ref = np.where(inside, ndimage.map_coordinates(real(inp[..., c], sl, it), x, order=1, mode="nearest"), fill)
        err = np.abs(out[..., c] - ref)[~near].max()
        check(err < 1e-4, "grid channel %d: max error %g" % (c, err))


def label_ref(vol, coords, labels):
    """Per-label linear: each one-hot interpolated, argmax (ties to the first,
    i.e. smallest label). Also returns the gap between the two best scores."""
    scores = np.stack([ndimage.map_coordinates((vol == l).astype(np.float64), coords, order=1, mode="nearest")
                       for l in labels])
    srt = np.sort(scores, axis=0)
    return labels[np.argmax(scores, axis=0)], srt[-1] - srt[-2]


def case_labels(case, d):
    inp, a_in, _, _ = load(case, d, "in")
    lab, a_l, _, _ = load(case, d, "label")
    nn, a_n, _, _ = load(case, d, "nearest")
    vol = inp[..., 0]
    labels = np.unique(vol)
    check(len(labels) >= 4, "labels: only %s in the input" % labels)
    shape = spacing_shape(a_in, vol.shape, case["target"])
    check(list(lab.shape[:3]) == shape and list(nn.shape[:3]) == shape, "labels: shapes")
    check(np.allclose(a_l, fov_affine(a_in, vol.shape, shape), atol=1e-9), "labels: affine")
    cx, cy, cz = fov_coords(vol.shape, shape)
    g = np.array(np.meshgrid(cx, cy, cz, indexing="ij"))
    ref, gap = label_ref(vol, g, labels)
    clear = gap > 1e-9
    bad = (lab[..., 0] != ref) & clear
    check(bad.sum() == 0, "per-label linear: %d of %d voxels differ" % (bad.sum(), bad.size))
    check(clear.mean() > 0.95, "per-label linear: %.3f of voxels are ties" % (1 - clear.mean()))
    idx = [np.clip(np.floor(c + 0.5), 0, n - 1).astype(int) for c, n in zip((cx, cy, cz), vol.shape)]
    nref = vol[np.ix_(*idx)]
    check(np.array_equal(nn[..., 0], nref), "nearest: %d voxels differ" % (nn[..., 0] != nref).sum())
    check(set(np.unique(nn)) <= set(labels), "nearest: new label values")
    # Oblique grid with fill 9 outside.
    lg, a_g, _, _ = load(case, d, "label_grid")
    x, inside, near = grid_coords(a_in, a_g, vol.shape, lg.shape[:3])
    ref, gap = label_ref(vol, x, labels)
    ref = np.where(inside, ref, 9)
    clear = (gap > 1e-9) & ~near
    bad = (lg[..., 0] != ref) & clear
    check(bad.sum() == 0, "per-label grid: %d of %d voxels differ" % (bad.sum(), bad.size))
    check(inside.sum() > 1000 and (~inside).sum() > 1000, "per-label grid: inside %d" % inside.sum())


def case_reorient(case, d):
    for k in range(int(case["count"][0])):
        inp, a_in, _, _ = load(case, d, "in%d" % k)
        ras, a_ras, _, _ = load(case, d, "ras%d" % k)
        img = nib.Nifti1Image(inp[..., 0], a_in)
        can = nib.as_closest_canonical(img)
        check(np.allclose(can.affine, a_ras, atol=1e-9), "reorient %d: RAS affine\n%s\nvs\n%s" % (k, can.affine, a_ras))
        check(np.array_equal(np.asanyarray(can.dataobj), ras[..., 0]), "reorient %d: RAS data" % k)
        check(nib.aff2axcodes(a_ras) == ("R", "A", "S"), "reorient %d: codes %s" % (k, nib.aff2axcodes(a_ras)))
        code = case["codename%d" % k]
        out, a_out, _, _ = load(case, d, "code%d" % k)
        t = nio.ornt_transform(nio.io_orientation(a_in), nio.axcodes2ornt(tuple(code)))
        want = nio.apply_orientation(inp[..., 0], t)
        want_aff = a_in @ nio.inv_ornt_aff(t, inp.shape[:3])
        check(np.allclose(want_aff, a_out, atol=1e-9), "reorient %d to %s: affine" % (k, code))
        check(want.shape == out.shape[:3] and np.array_equal(want, out[..., 0]), "reorient %d to %s: data" % (k, code))
        check("".join(nib.aff2axcodes(a_out)) == code, "reorient %d: %s, want %s" % (k, nib.aff2axcodes(a_out), code))


def case_stats(case, d):
    inp, _, sl, it = load(case, d, "in")
    mask, _, _, _ = load(case, d, "mask")
    vals = real(inp, sl, it)[..., 0]
    m = mask[..., 0] != 0
    q = np.array(case["q"])
    for name, v in (("all", vals.ravel()), ("fg", vals[m])):
        want = np.percentile(v, q)
        got = np.array(case["pct_" + name])
        check(np.array_equal(want, got) or np.allclose(want, got, rtol=1e-14, atol=1e-12),
              "percentiles %s: %s vs numpy %s" % (name, got, want))
        st = case["stats_" + name]
        check(st[0] == v.size, "stats %s: count %d vs %d" % (name, st[0], v.size))
        check(abs(st[1] - v.mean()) <= 1e-10 * abs(v.mean()) + 1e-10, "stats %s: mean %r vs %r" % (name, st[1], v.mean()))
        check(abs(st[2] - v.std()) <= 1e-10 * v.std(), "stats %s: std %r vs %r" % (name, st[2], v.std()))
        check(st[3] == v.min() and st[4] == v.max(), "stats %s: min/max" % name)
    z, _, _, _ = load(case, d, "zscore")
    fg = vals[m]
    want = np.where(m, (vals - fg.mean()) / max(fg.std(), 1e-8), vals)
    err = np.abs(z[..., 0] - want).max()
    check(err < 1e-4, "z-score (masked): max error %g" % err)


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "case.json")) as f:
        case = json.load(f)
    {"linear": case_linear, "labels": case_labels, "reorient": case_reorient, "stats": case_stats}[case["case"]](case, d)
    print("%s: %s" % (case["case"], "FAILED (%d)" % len(FAILS) if FAILS else "ok"))
    sys.exit(1 if FAILS else 0)


if __name__ == "__main__":
    main()
