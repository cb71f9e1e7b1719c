"""NIfTI conformance against nibabel (Debian's python3-nibabel).

(1) Files nobody here wrote: nibabel's own test data (NIfTI-1/2, big-endian,
    .nii/.nii.gz, pair headers) and mricron-data's templates. For each,
    `medpipe info --json` must report the dims, datatype, affine, scaling and
    the sum/min/max of the scaled data that nibabel reports. Files medpipe
    rejects must be ones nibabel cannot read as a plain 3D/4D image either;
    the test checks that for each rejection.
    nibabel ships only the headers of its pair examples (analyze.hdr,
    nifti1.hdr, nifti2.hdr: real headers, no .img). Each is also paired here
    with a generated .img of the right size, so the real header's geometry
    and scaling conventions (SPM2 Analyze included) are compared too.
(2) Files medpipe writes (convert to .nii, .nii.gz, .hdr/.img, .img.gz,
    NIfTI-1 and -2, every data type, with and without --dtype) must read back
    in nibabel with equal data, affine and header fields.
"""
import glob
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

import nibabel as nib  # noqa: E402

NIB_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")
# Scratch space on tmpfs when there is one: medpipe fsyncs every file it
# writes (atomic output), which costs tens of ms per file on a real disk.
if os.access("/dev/shm", os.W_OK) and not os.environ.get("TMPDIR"):
    import tempfile
    SCRATCH = tempfile.mkdtemp(prefix="medpipe-nifti-nibabel-", dir="/dev/shm")
else:
    SCRATCH = mptest.scratch("nifti-nibabel")

DTYPES = ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"]
NP_OF = {"u8": np.uint8, "i8": np.int8, "u16": np.uint16, "i16": np.int16, "u32": np.uint32,
         "i32": np.int32, "u64": np.uint64, "i64": np.int64, "f32": np.float32, "f64": np.float64}
NAME_OF = {np.dtype(v).newbyteorder("<"): k for k, v in NP_OF.items()}


def info(path):
    p = mptest.medpipe("info", "--json", path)
    return json.loads(p.stdout)


def nib_plain(img):
    """nibabel's view as medpipe models it: shape padded to (x, y, z, c) or
    None when the image is not a plain 3D/4D image."""
    shape = list(img.shape)
    if len(shape) > 4 and any(s != 1 for s in shape[4:]):
        return None
    shape = (shape + [1, 1, 1, 1])[:4]
    return shape


def close(a, b, rel=1e-5):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(1.0, float(np.nanmax(np.abs(b))) if b.size else 1.0)
    return np.all(np.abs(a - b) <= rel * scale)


def compare_info(path, report):
    """Compares medpipe info with nibabel for one file; returns a message
    or None when they agree."""
    img = nib.load(path)
    shape = nib_plain(img)
    data = np.asanyarray(img.dataobj)
    m = info(path)
    problems = []
    if m["dims"] != shape:
        problems.append("dims %s vs nibabel %s" % (m["dims"], shape))
    hdr = img.header
    if int(m["nifti_datatype_code"]) != int(hdr["datatype"]):
        problems.append("datatype %s vs %s" % (m["nifti_datatype_code"], hdr["datatype"]))
    raw_dt = hdr.get_data_dtype().newbyteorder("<")
    if NAME_OF.get(raw_dt) != m["dtype"]:
        problems.append("dtype %s vs nibabel %s" % (m["dtype"], raw_dt))
    if not close(m["affine"], img.affine):
        problems.append("affine\n%s\nvs nibabel\n%s" % (np.array(m["affine"]), img.affine))
    slope = float(img.dataobj.slope)
    inter = float(img.dataobj.inter)
    if not (close(m["scl_slope"], slope, 1e-7) and close(m["scl_inter"], inter, 1e-7)):
        problems.append("scaling %g %g vs %g %g" % (m["scl_slope"], m["scl_inter"], slope, inter))
    # Reductions in float64 without a float64 copy of the whole image.
    if data.dtype.kind == "f" and np.isnan(data).all():
        nb = (None, None, 0.0)
    elif data.dtype.kind == "f":
        nb = (np.nanmin(data), np.nanmax(data), np.nansum(data, dtype=np.float64))
    else:
        nb = (data.min(), data.max(), data.sum(dtype=np.float64))
    if nb[0] is not None and not (close(m["min"], nb[0]) and close(m["max"], nb[1])):
        problems.append("min/max %g %g vs %g %g" % (m["min"], m["max"], nb[0], nb[1]))
    if not np.isclose(m["sum"], nb[2], rtol=1e-6, atol=1e-6):
        problems.append("sum %r vs %r" % (m["sum"], nb[2]))
    report.append("%-60s %s %-14s %s  sum=%.6g" % (os.path.relpath(path, SCRATCH) if path.startswith(SCRATCH)
                                                   else os.path.basename(path),
                                                   "x".join(map(str, m["dims"])), m["format"], m["dtype"], m["sum"]))
    return "; ".join(problems) or None


# Files medpipe rejects although nibabel loads them, each with the reason it
# is not a plain 3D/4D image.
EXPECTED_REJECTS = {
    "row_major.dconn.nii": "a CIFTI-2 dense connectivity matrix: NIfTI-2 with dims (1,1,1,1,N,M) whose axes are "
                           "brain models, not voxels; nibabel loads it as a Cifti2Image (a matrix), not a volume",
}


def nibabel_can_read_plain(path):
    """True when nibabel reads the file as a plain 3D/4D image with data."""
    try:
        img = nib.load(path)
        if isinstance(img, nib.Cifti2Image) or nib_plain(img) is None:
            return False
        np.asanyarray(img.dataobj)
        return True
    except Exception:  # noqa: BLE001 - any failure means "cannot read"
        return False


def pair_with_generated_img(hdr_path):
    """Copies a real pair header and writes a matching .img (values from a
    fixed pattern) so that nibabel and medpipe can both read the pair."""
    base = os.path.join(SCRATCH, "pairs", os.path.splitext(os.path.basename(hdr_path))[0])
    os.makedirs(os.path.dirname(base), exist_ok=True)
    shutil.copy(hdr_path, base + ".hdr")
    img = nib.load(base + ".hdr")
    hdr = img.header
    dt = hdr.get_data_dtype()
    n = int(np.prod(img.shape))
    vals = (np.arange(n, dtype=np.int64) * 7919 % 251).astype(dt)
    off = int(img.dataobj.offset)  # img.header has vox_offset reset to 0
    with open(base + ".img", "wb") as f:
        f.write(b"\0" * off)
        f.write(vals.tobytes())
    return base + ".hdr"


def conformance_files():
    files = sorted(glob.glob(os.path.join(NIB_DATA, "*.nii")) + glob.glob(os.path.join(NIB_DATA, "*.nii.gz"))
                   + glob.glob(os.path.join(NIB_DATA, "*.hdr")))
    pkg = mptest.debian_package_dir("mricron-data")
    templates = sorted(glob.glob(os.path.join(pkg, "usr", "share", "mricron", "templates", "*.nii.gz")))
    assert len(templates) >= 8, "mricron-data templates not found under %s" % pkg
    hdrs = [f for f in files if f.endswith(".hdr")]
    return files + templates + [pair_with_generated_img(h) for h in hdrs]


def test_conformance_real_files():
    files = conformance_files()
    report, failures, rejected = [], [], []
    for f in files:
        p = mptest.medpipe("info", "--json", f, check=False)
        if p.returncode != 0:
            msg = p.stderr.strip()
            ok = not nibabel_can_read_plain(f)
            why = "nibabel cannot read it as a plain 3D/4D image either" if ok else "BUT NIBABEL CAN"
            if ok and os.path.basename(f) in EXPECTED_REJECTS:
                why = EXPECTED_REJECTS[os.path.basename(f)]
            rejected.append("%-40s rejected (%s): %s" % (os.path.basename(f), why, msg))
            if not ok:
                failures.append("%s: medpipe rejects a file nibabel reads: %s" % (f, msg))
            continue
        problem = compare_info(f, report)
        if problem:
            failures.append("%s: %s" % (f, problem))
    for line in report:
        print("  agree   " + line)
    for line in rejected:
        print("  " + line)
    print("  %d files compared, %d rejected by both" % (len(report), len(rejected)))
    # Keep the coverage honest: big-endian, NIfTI-2, 4D, extensions, pairs.
    assert len(report) >= 20, "too few files compared"
    assert not failures, "\n".join(failures)


def make_variants():
    """nibabel-written files that exercise each geometry and scaling path:
    qform only (qfac -1), no xform (pixdim-only affine), big-endian NIfTI-1
    and -2, scaled data, 2D, 4D, Analyze (SPM2 origin and scale factor)."""
    d = os.path.join(SCRATCH, "variants")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(3)
    out = []
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # det -1: qfac -1
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 1.3, 3.0])
    aff[:3, 3] = [10.5, -20.25, 33.0]
    arr = rng.integers(-1000, 1000, size=(10, 9, 8)).astype(np.int16)

    def save(img, name):
        out.append(os.path.join(d, name))
        nib.save(img, out[-1])

    img = nib.Nifti1Image(arr, None)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(None, code=0)
    save(img, "qform_only.nii.gz")
    img = nib.Nifti1Image(arr, None)
    img.header.set_zooms((1.5, 2.0, 2.5))
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    save(img, "no_xform.nii")
    for klass, name in ((nib.Nifti1Image, "big_endian.nii"), (nib.Nifti2Image, "big_endian_v2.nii.gz")):
        hdr = klass.header_class(endianness=">")
        img = klass(arr.astype(">f4") * 0.5, aff, header=hdr)
        img.header.set_slope_inter(0.25, 3.0)
        save(img, name)
    img = nib.Nifti1Image(arr, aff)
    img.header.set_slope_inter(-1.5, 1000.0)
    save(img, "scaled_negative.nii")
    img = nib.Nifti1Image(arr[:, :, 0], aff)
    save(img, "two_d.nii.gz")
    img = nib.Nifti2Image(rng.random((5, 4, 3, 6)).astype(np.float64), aff)
    save(img, "four_d_v2.nii")
    spm = nib.Spm2AnalyzeImage(arr.astype(np.int16), None)
    spm.header["origin"][:3] = [4, 5, 2]
    spm.header.set_zooms((2.0, 2.0, 3.0))
    spm.header["scl_slope"] = 0.5
    save(spm, "spm_origin.hdr")
    ana = nib.AnalyzeImage(arr.astype(np.float32), None)
    ana.header.set_zooms((1.0, 1.25, 1.5))
    save(ana, "analyze_centred.img")
    ana = nib.Spm2AnalyzeImage(arr.astype(np.uint8), None)
    ana.header["scl_slope"] = 0.0
    ana.header["glmin"], ana.header["glmax"] = 0, 200
    ana.header["cal_min"], ana.header["cal_max"] = -1.0, 3.0
    save(ana, "analyze_glcal.hdr")
    return out


def test_info_matches_nibabel_on_nibabel_written_variants():
    report, failures = [], []
    for f in make_variants():
        problem = compare_info(f, report)
        if problem:
            failures.append("%s: %s" % (f, problem))
    for line in report:
        print("  agree   " + line)
    assert not failures, "\n".join(failures)


# ---- (2) files medpipe writes ----
HEADER_FIELDS = ["qform_code", "sform_code", "intent_code", "intent_name", "descrip", "aux_file", "xyzt_units",
                 "cal_min", "cal_max", "slice_code", "slice_start", "slice_end", "slice_duration", "toffset",
                 "dim_info", "intent_p1", "intent_p2", "intent_p3"]


def check_written(src, dst, dtype=None):
    """dst (written by medpipe from src) must read in nibabel like src."""
    a, b = nib.load(src), nib.load(dst)
    ha, hb = a.header, b.header
    problems = []
    if dtype is None:
        ua = np.asanyarray(a.dataobj.get_unscaled())
        ub = np.asanyarray(b.dataobj.get_unscaled())
        if ua.shape[:3] != ub.shape[:3] or ua.dtype.newbyteorder("=") != ub.dtype.newbyteorder("=") \
                or not np.array_equal(ua.reshape(ub.shape), ub, equal_nan=ua.dtype.kind == "f"):
            problems.append("stored data differ (%s %s vs %s %s)" % (ua.dtype, ua.shape, ub.dtype, ub.shape))
        if float(a.dataobj.slope) != float(b.dataobj.slope) or float(a.dataobj.inter) != float(b.dataobj.inter):
            problems.append("scaling %r %r vs %r %r" % (a.dataobj.slope, a.dataobj.inter, b.dataobj.slope,
                                                        b.dataobj.inter))
    else:
        real = np.asanyarray(a.dataobj).astype(np.float64)
        t = NP_OF[dtype]
        if np.issubdtype(t, np.integer):
            info_t = np.iinfo(t)
            want = np.where(real < 0, np.ceil(real - 0.5), np.floor(real + 0.5))
            want = np.nan_to_num(want, nan=0.0)
            want = np.clip(want, float(info_t.min), float(info_t.max))
            got = np.asanyarray(b.dataobj).astype(np.float64)
        else:
            want = real.astype(t).astype(np.float64)
            got = np.asanyarray(b.dataobj).astype(np.float64)
        if hb.get_data_dtype().newbyteorder("=") != np.dtype(t):
            problems.append("dtype %s, wanted %s" % (hb.get_data_dtype(), dtype))
        if not np.array_equal(want.reshape(got.shape), got, equal_nan=True):
            problems.append("converted values differ (max diff %g)" % np.nanmax(np.abs(want.reshape(got.shape) - got)))
    if not np.allclose(a.affine, b.affine, rtol=0, atol=1e-6 * max(1.0, np.abs(a.affine).max())):
        problems.append("affine\n%s\nvs\n%s" % (a.affine, b.affine))
    for k in HEADER_FIELDS:
        if k in ha and k in hb:
            va, vb = ha[k], hb[k]
            if k in ("intent_p1", "intent_p2", "intent_p3", "cal_min", "cal_max", "slice_duration", "toffset"):
                same = float(va) == float(vb)
            else:
                same = np.array_equal(np.asarray(va), np.asarray(vb))
            if not same:
                problems.append("%s: %r vs %r" % (k, va, vb))
    zooms_a, zooms_b = ha.get_zooms(), hb.get_zooms()
    if not np.allclose(zooms_a[:3], zooms_b[:3], rtol=1e-6):
        problems.append("zooms %s vs %s" % (zooms_a, zooms_b))
    if len(a.shape) >= 4 and a.shape[3] > 1 and zooms_a[3] != zooms_b[3]:
        problems.append("time step %s vs %s" % (zooms_a[3], zooms_b[3]))
    return "; ".join(problems) or None


def make_sources():
    """nibabel-written sources: every dtype with an oblique affine and full
    header fields; a scaled int16; a 4D series."""
    d = os.path.join(SCRATCH, "src")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(7)
    aff = np.array([[0.9, -0.1, 0.05, -80.5], [0.1, 1.1, 0.0, -100.25], [0.0, 0.02, 2.5, -40.0], [0, 0, 0, 1]])
    out = {}
    for name in DTYPES:
        t = NP_OF[name]
        if np.issubdtype(t, np.integer):
            ii = np.iinfo(t)
            arr = rng.integers(max(ii.min, -2**40), min(ii.max, 2**40), size=(9, 7, 5), endpoint=True).astype(t)
            arr.flat[0], arr.flat[1] = ii.min, ii.max
        else:
            arr = (rng.standard_normal((9, 7, 5)) * 1000).astype(t)
            arr.flat[0] = np.nan
        img = nib.Nifti1Image(arr, aff, dtype=t)
        h = img.header
        h.set_qform(aff, code=1)
        h.set_sform(aff, code=2)
        h["descrip"] = b"source " + name.encode()
        h["aux_file"] = b"aux"
        h["intent_code"] = 1001
        h["intent_name"] = b"estimate"
        h["cal_min"], h["cal_max"] = -5.0, 123.5
        h["xyzt_units"] = 10
        h["dim_info"] = 57
        h["slice_code"], h["slice_start"], h["slice_end"], h["slice_duration"] = 1, 0, 4, 0.125
        h["toffset"] = 1.5
        out[name] = os.path.join(d, "src_%s.nii.gz" % name)
        nib.save(img, out[name])
    arr = rng.integers(-3000, 3000, size=(8, 6, 4), dtype=np.int16)
    img = nib.Nifti1Image(arr, aff)
    img.header.set_slope_inter(2.5, -10.0)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(None, code=0)
    out["scaled"] = os.path.join(d, "src_scaled.nii")
    nib.save(img, out["scaled"])
    arr = rng.integers(0, 500, size=(6, 5, 4, 3), dtype=np.uint16)
    img = nib.Nifti1Image(arr, aff)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    out["4d"] = os.path.join(d, "src_4d.nii.gz")
    nib.save(img, out["4d"])
    return out


def test_written_files_read_back_in_nibabel():
    sources = make_sources()
    sources["anatomical_be"] = os.path.join(NIB_DATA, "anatomical.nii")
    sources["example_nifti2"] = os.path.join(NIB_DATA, "example_nifti2.nii.gz")
    d = os.path.join(SCRATCH, "out")
    os.makedirs(d, exist_ok=True)
    failures, n = [], 0
    for key, src in sorted(sources.items()):
        for ext in (".nii", ".nii.gz", ".hdr", ".img.gz"):
            for v2 in (False, True):
                dst = os.path.join(d, "%s%s%s" % (key, "_v2" if v2 else "", ext))
                mptest.medpipe("convert", src, dst, *(["--nifti2"] if v2 else []))
                want = nib.Nifti2Pair if v2 and ext in (".hdr", ".img.gz") else \
                    nib.Nifti2Image if v2 else nib.Nifti1Pair if ext in (".hdr", ".img.gz") else nib.Nifti1Image
                img = nib.load(dst)
                problem = None if type(img) is want else "nibabel reads it as %s" % type(img).__name__
                problem = problem or check_written(src, dst)
                n += 1
                print("  %-28s %s" % (os.path.basename(dst), "ok" if not problem else "FAIL " + problem))
                if problem:
                    failures.append("%s: %s" % (dst, problem))
    print("  %d written files compared" % n)
    assert not failures, "\n".join(failures)


def test_dtype_conversion_read_back():
    sources = make_sources()
    conv = [sources["scaled"], sources["f64"], sources["i16"],
            os.path.join(NIB_DATA, "anatomical.nii")]
    d = os.path.join(SCRATCH, "conv")
    os.makedirs(d, exist_ok=True)
    failures, n = [], 0
    for src in conv:
        stem = os.path.basename(src).split(".")[0]
        for t in DTYPES:
            dst = os.path.join(d, "%s_to_%s.nii.gz" % (stem, t))
            mptest.medpipe("convert", src, dst, "--dtype", t)
            problem = check_written(src, dst, dtype=t)
            n += 1
            print("  %-32s %s" % (os.path.basename(dst), "ok" if not problem else "FAIL " + problem))
            if problem:
                failures.append("%s: %s" % (dst, problem))
    print("  %d conversions compared" % n)
    assert not failures, "\n".join(failures)


def test_cli_errors_and_no_partial_output():
    d = os.path.join(SCRATCH, "fail")
    os.makedirs(d, exist_ok=True)
    bad = os.path.join(d, "bad.nii")
    with open(bad, "wb") as f:
        f.write(b"\x5c\x01\x00\x00" + b"\0" * 100)
    out = os.path.join(d, "out.nii.gz")
    p = mptest.medpipe("convert", bad, out, check=False)
    assert p.returncode == 1, p.returncode
    assert "bad.nii" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert os.listdir(d) == ["bad.nii"], os.listdir(d)
    p = mptest.medpipe("convert", bad, os.path.join(d, "out.xyz"), check=False)
    assert p.returncode == 2, p.returncode
    good = os.path.join(NIB_DATA, "example4d.nii.gz")
    p = mptest.medpipe("info", "--mem-limit", "1M", good, check=False)
    assert p.returncode == 1 and "memory limit" in p.stderr and "example4d" in p.stderr, p.stderr
    p = mptest.medpipe("convert", good, out, "--dtype", "u8", "--mem-limit", "1K", check=False)
    assert p.returncode == 1 and not os.path.exists(out), p.stderr
    for cmd in ("info", "convert"):
        p = mptest.medpipe(cmd, "--help")
        assert "usage: medpipe " + cmd in p.stdout, p.stdout
        assert mptest.medpipe(cmd, check=False).returncode == 2
    text = mptest.medpipe("info", good).stdout
    for key in ("dims:", "spacing:", "orientation:", "datatype:", "scaling:", "range:", "affine:", "qform_code:",
                "sform_code:"):
        assert key in text, text
    # --dtype with clamping warns with the count and still writes the file.
    p = mptest.medpipe("convert", good, out, "--dtype", "u8")
    assert "clamped" in p.stderr, p.stderr
    data = np.asanyarray(nib.load(good).dataobj)
    n_out = int(np.sum((data < 0) | (data > 255)))
    assert ("%d voxels" % n_out) in p.stderr, (n_out, p.stderr)


if __name__ == "__main__":
    try:
        mptest.run_tests([test_conformance_real_files, test_info_matches_nibabel_on_nibabel_written_variants,
                          test_written_files_read_back_in_nibabel,
                          test_dtype_conversion_read_back, test_cli_errors_and_no_partial_output])
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
