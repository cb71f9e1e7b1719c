#!/usr/bin/python3
"""Builds the conformance fixtures for tests/test_codecs.c.

Usage: /usr/bin/python3 tests/py/codecs_ref.py OUTDIR

For every compressed DICOM file (the JPEG, JPEG-LS and JPEG 2000 files of
Debian's python3-pydicom test data, plus files encoded here from synthetic
images with dcmtk, GDCM, PVRG-JPEG and Grok), writes each frame's compressed
bytes and the expected decoded pixels from independent decoders:
  JPEG (all processes)  dcmdjpeg (dcmtk's IJG-derived 8/12/16-bit codecs)
  JPEG-LS               dcmdjpls (dcmtk's bundled CharLS 1.x)
  JPEG 2000             grk_decompress (Grok) on the codestream, and
                        gdcmconv --raw (GDCM, which uses OpenJPEG)
and, for files made here, the original pixels. Expected pixels are in the
decoder contract's layout (interleaved, little-endian, bits_allocated/8
bytes a sample) with signed frames sign-extended from BitsStored.
Writes OUTDIR/listing.json: a list of frames with their frame description
and references. A reference tool that fails on a file is recorded as such
(the C test reports the frame as "no reference"); a missing tool makes the
script exit non-zero so the test fails.
"""
import json
import os
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_pixel_data_frame
from pydicom.pixel_data_handlers.util import convert_color_space

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
TOOLS = ["dcmdjpeg", "dcmcjpeg", "dcmdjpls", "dcmcjpls", "gdcmconv", "grk_decompress", "grk_compress", "pvrg-jpeg"]

CODEC = {
    "1.2.840.10008.1.2.4.50": "jpeg", "1.2.840.10008.1.2.4.51": "jpeg", "1.2.840.10008.1.2.4.55": "jpeg",
    "1.2.840.10008.1.2.4.57": "jpegll", "1.2.840.10008.1.2.4.70": "jpegll",
    "1.2.840.10008.1.2.4.80": "jpegls", "1.2.840.10008.1.2.4.81": "jpegls",
    "1.2.840.10008.1.2.4.90": "j2k", "1.2.840.10008.1.2.4.91": "j2k",
    "1.2.840.10008.1.2.4.201": "j2k", "1.2.840.10008.1.2.4.202": "j2k", "1.2.840.10008.1.2.4.203": "j2k",
}
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.55", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91"}

OUT = None
LISTING = []
ORDER = {}  # base name -> position, so that the listing does not depend on thread timing


def parallel(cases, fn):
    """Runs fn(case) for each case on a few threads (the work is mostly
    waiting for the external tools); the first exception is re-raised."""
    for c in cases:
        ORDER.setdefault(c[0], len(ORDER))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for f in [pool.submit(fn, c) for c in cases]:
            f.result()


def run(cmd, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    return p.returncode, (p.stdout + p.stderr).strip()


def path(*parts):
    return os.path.join(OUT, *parts)


def canon(arr, bits_allocated, bits_stored, signed):
    """Contract layout bytes of an integer array: two's complement bit
    pattern in bits_allocated, sign-extended from bits_stored when signed."""
    a = np.asarray(arr).astype(np.int64)
    if signed:
        a = a & ((1 << bits_stored) - 1)
        a = np.where(a & (1 << (bits_stored - 1)), a - (1 << bits_stored), a)
    a = a & ((1 << bits_allocated) - 1)
    return a.astype({8: "<u1", 16: "<u2", 32: "<u4"}[bits_allocated]).tobytes()


def frames_of(arr, nframes, samples):
    """pixel_array -> (frames, rows, cols, samples)."""
    a = np.asarray(arr)
    if nframes == 1:
        a = a[np.newaxis]
    if samples == 1:
        a = a[..., np.newaxis]
    return a


def frame_info(ds):
    return {
        "rows": int(ds.Rows), "cols": int(ds.Columns), "samples": int(ds.SamplesPerPixel),
        "bits_allocated": int(ds.BitsAllocated), "bits_stored": int(ds.BitsStored),
        "signed": int(ds.PixelRepresentation), "photometric": str(ds.PhotometricInterpretation),
        "nframes": int(ds.get("NumberOfFrames", 1) or 1),
    }


def ref_from_native(name, tool, native_path, fi, tol, note=""):
    """Reads a decompressed DICOM file and writes one reference per frame."""
    ds = pydicom.dcmread(native_path)
    arr = ds.pixel_array
    photo = str(ds.PhotometricInterpretation)
    if fi["samples"] == 3 and photo.startswith("YBR_FULL"):
        # GDCM leaves lossy JPEG in YCbCr; the decoder contract says RGB.
        arr = convert_color_space(arr, photo, "RGB")
        tol += 2
        note = (note + " " if note else "") + "%s converted to RGB here" % photo
    a = frames_of(arr, fi["nframes"], fi["samples"])
    out = []
    for k in range(fi["nframes"]):
        p = path("refs", "%s_f%d.%s.raw" % (name, k, tool))
        with open(p, "wb") as f:
            f.write(canon(a[k], fi["bits_allocated"], fi["bits_stored"], fi["signed"]))
        out.append({"tool": tool, "path": p, "tol": tol, "note": note})
    return out


def ref_dicom_tool(name, tool_cmd, tool, src, fi, tol):
    dst = path("work", "%s.%s.dcm" % (name, tool))
    rc, msg = run(tool_cmd + [src, dst])
    if rc != 0 or not os.path.exists(dst):
        return None, "%s failed: %s" % (tool, msg.splitlines()[-1] if msg else "exit %d" % rc)
    try:
        return ref_from_native(name, tool, dst, fi, tol), None
    except Exception as e:  # noqa: BLE001 - recorded as "no reference"
        return None, "%s output unreadable: %s" % (tool, e)


def siz_of(cs):
    """(precision, signed) of the first component from the SIZ marker."""
    i = cs.find(b"\xff\x51")
    if i < 0:
        return None
    ssiz = cs[i + 40]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def ref_grok(name, k, frame, fi):
    """Decodes a J2K codestream or JP2 file with Grok into planar raw."""
    ext = "jp2" if frame[4:8] == b"jP  " else "j2k"
    src = path("work", "%s_f%d.%s" % (name, k, ext))
    dst = path("work", "%s_f%d.grk.rawl" % (name, k))
    with open(src, "wb") as f:
        f.write(frame)
    rc, msg = run(["grk_decompress", "-i", src, "-o", dst])
    siz = siz_of(frame)
    if rc != 0 or not os.path.exists(dst) or not siz:
        return None, "grk_decompress failed: %s" % (msg.splitlines()[-1] if msg else "exit %d" % rc)
    prec, sgnd = siz
    dt = ("<i" if sgnd else "<u") + ("1" if prec <= 8 else "2")
    a = np.fromfile(dst, dtype=dt)
    n = fi["rows"] * fi["cols"] * fi["samples"]
    if a.size != n:
        return None, "grk_decompress wrote %d samples, expected %d" % (a.size, n)
    a = a.reshape(fi["samples"], fi["rows"], fi["cols"]).transpose(1, 2, 0)
    p = path("refs", "%s_f%d.grk.raw" % (name, k))
    with open(p, "wb") as f:
        f.write(canon(a, fi["bits_allocated"], fi["bits_stored"], fi["signed"]))
    return {"tool": "grk_decompress", "path": p, "tol": 0, "note": ""}, None


def add_dicom(name, src, source, orig=None, orig_tol=0, lossy_tol=None, syntax=None):
    """Adds every frame of a compressed DICOM file with its references.
    orig: (frames, rows, cols, samples) array of the pixels before encoding.
    syntax: the transfer syntax to list when the file has to carry another
    (pydicom 2.3 cannot write the HTJ2K UIDs)."""
    ds = pydicom.dcmread(src)
    ts = syntax or str(ds.file_meta.TransferSyntaxUID)
    codec = CODEC[ts]
    fi = frame_info(ds)
    frames = list(generate_pixel_data_frame(ds.PixelData, fi["nframes"]))
    lossy = ts in LOSSY
    tol = (lossy_tol if lossy_tol is not None else 2) if lossy else 0
    refs = [[] for _ in frames]
    notes = []

    def extend(rs, err):
        if err:
            notes.append(err)
        for k, r in enumerate(rs or []):
            refs[k].append(r)

    # Lossy: YCbCr->RGB when the codestream says YCbCr (what libjpeg and the
    # decoder under test do); lossless: never a colour conversion.
    djpeg = ["dcmdjpeg", "+cg" if lossy else "+cn", "+px"]
    if codec in ("jpeg", "jpegll"):
        rs, err = ref_dicom_tool(name, djpeg, "dcmdjpeg", src, fi, tol)
        extend(rs, err)
        if not rs:
            # dcmtk could not read the file: the same frames in a clean container,
            # then GDCM.
            clean = path("work", name + ".rewrapped.dcm")
            wrap_fresh(clean, frames, fi, ts)
            rs, err = ref_dicom_tool(name, djpeg, "dcmdjpeg", clean, fi, tol)
            if rs:
                notes.append("dcmdjpeg read the frames re-wrapped by pydicom")
                for r in rs:
                    r["note"] = "frames re-wrapped"
            else:
                rs, err = ref_dicom_tool(name, ["gdcmconv", "--raw"], "gdcmconv", src, fi, tol)
            extend(rs, err)
    elif codec == "jpegls":
        extend(*ref_dicom_tool(name, ["dcmdjpls", "+px"], "dcmdjpls", src, fi, 0))
    else:
        for k, fr in enumerate(frames):
            r, err = ref_grok(name, k, fr, fi)
            if err:
                notes.append(err)
            else:
                refs[k].append(dict(r, tol=(1 if lossy else 0)))
        extend(*ref_dicom_tool(name, ["gdcmconv", "--raw"], "gdcmconv", src, fi, 0))
    for k, fr in enumerate(frames):
        fp = path("frames", "%s_f%d.bin" % (name, k))
        with open(fp, "wb") as f:
            f.write(fr)
        if orig is not None:
            op = path("orig", "%s_f%d.raw" % (name, k))
            with open(op, "wb") as f:
                f.write(canon(orig[k], fi["bits_allocated"], fi["bits_stored"], fi["signed"]))
            refs[k].append({"tool": "original", "path": op, "tol": orig_tol, "note": ""})
        ORDER.setdefault(name, len(ORDER))
        LISTING.append(dict(fi, name="%s#%d" % (name, k) if fi["nframes"] > 1 else name, base=name, index=k, codec=codec,
                            syntax=ts, lossy=lossy, frame=fp, refs=refs[k], source=source,
                            notes="; ".join(notes)))


# ---- synthetic images ----

def synth(rows, cols, samples, bits, signed, seed):
    """Smooth gradients, edges, a disc and noise over the full value range."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    chans = []
    for c in range(samples):
        v = 0.5 + 0.35 * np.sin(x / (5.0 + 3 * c) + y / 11.0) * np.cos(y / (7.0 + c))
        v += 0.25 * (((x // 8 + y // 8 + c) % 2) - 0.5)
        v += 0.4 * (((x - cols / 2) ** 2 + (y - rows / 3) ** 2) < (rows / 4) ** 2)
        v += rng.normal(0, 0.03, size=v.shape)
        v = np.clip(v / 1.3, 0, 1)
        chans.append(np.round(lo + v * (hi - lo)))
    a = np.stack(chans, axis=-1).astype(np.int64)
    a[0, 0], a[-1, -1] = lo, hi  # the extremes occur
    return a


def base_dataset(rows, cols, samples, bits_allocated, bits_stored, signed, photometric, ts):
    """A minimal secondary-capture data set without pixel data."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Synthetic^Codec"
    ds.PatientID = "MEDPIPE"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    return ds


def write_native(p, a, bits_stored, signed, photometric="MONOCHROME2", bits_allocated=None):
    rows, cols, samples = a.shape
    ba = bits_allocated or (8 if bits_stored <= 8 else 16)
    ds = base_dataset(rows, cols, samples, ba, bits_stored, signed, photometric, pydicom.uid.ExplicitVRLittleEndian)
    ds.PixelData = canon(a, ba, bits_stored, signed)
    ds.save_as(p, write_like_original=False)


def wrap_fresh(p, frames, fi, ts):
    """Frames in a new minimal container (for files whose own one dcmtk cannot parse)."""
    ds = base_dataset(fi["rows"], fi["cols"], fi["samples"], fi["bits_allocated"], fi["bits_stored"], fi["signed"],
                      fi["photometric"], ts)
    if fi["nframes"] > 1:
        ds.NumberOfFrames = fi["nframes"]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.save_as(p, write_like_original=False)


def encode(tool_cmd, src, dst):
    rc, msg = run(tool_cmd + [src, dst])
    if rc != 0 or not os.path.exists(dst):
        raise RuntimeError("%s failed on %s: %s" % (" ".join(tool_cmd), src, msg))


def wrap_jpeg(p, codestream, like, ts):
    """A DICOM file holding encapsulated frame(s) (bytes or a list), header copied from `like`."""
    ds = pydicom.dcmread(like)
    ds.file_meta.TransferSyntaxUID = ts
    ds.PixelData = encapsulate(codestream if isinstance(codestream, list) else [codestream])
    ds["PixelData"].is_undefined_length = True
    ds["PixelData"].VR = "OB"
    ds.is_implicit_VR, ds.is_little_endian = False, True
    ds.save_as(p, write_like_original=False)


def gen_dcmtk_jpeg():
    """JPEG lossless (all 7 predictors, 8/12/16 bits, RGB, signed, point
    transform) and lossy baseline/extended with dcmtk; lossless also with GDCM."""
    imgs = {}
    for bits, signed, samples, photo in [(8, 0, 1, "MONOCHROME2"), (12, 0, 1, "MONOCHROME2"),
                                          (16, 0, 1, "MONOCHROME2"), (16, 1, 1, "MONOCHROME2"),
                                          (12, 1, 1, "MONOCHROME2"), (8, 0, 3, "RGB")]:
        key = "%s%d%s" % ("rgb" if samples == 3 else "mono", bits, "s" if signed else "u")
        a = synth(48, 64, samples, bits, signed, seed=bits * 10 + signed + samples)
        p = path("work", "native_%s.dcm" % key)
        write_native(p, a, bits, signed, photo)
        imgs[key] = (p, a)
    cases = []
    for key in ["mono8u", "mono12u", "mono16u"]:
        for sv in range(1, 8):
            cases.append(("ll_sv%d_%s" % (sv, key), key, ["dcmcjpeg", "+el", "+sv", str(sv)], 0))
    cases += [("ll_sv1_rgb8u", "rgb8u", ["dcmcjpeg", "+e1"], 0),
              ("ll_sv1_mono16s", "mono16s", ["dcmcjpeg", "+e1"], 0),
              ("ll_sv1_mono12s", "mono12s", ["dcmcjpeg", "+e1"], 0),
              ("ll_sv6_rgb8u", "rgb8u", ["dcmcjpeg", "+el", "+sv", "6"], 0),
              ("ll_gdcm_mono16u", "mono16u", ["gdcmconv", "--jpeg"], 0),
              ("ll_gdcm_mono12s", "mono12s", ["gdcmconv", "--jpeg"], 0),
              ("ll_gdcm_rgb8u", "rgb8u", ["gdcmconv", "--jpeg"], 0)]
    # Point transform 2: the decoded image is the original with the low bits cleared.
    cases.append(("ll_pt2_mono12u", "mono12u", ["dcmcjpeg", "+el", "+sv", "7", "+pt", "2"], 2))

    def one(case):
        name, key, cmd, pt = case
        src, a = imgs[key]
        dst = path("work", name + ".dcm")
        encode(cmd, src, dst)
        add_dicom(name, dst, "synthetic %s, %s" % (key, " ".join(cmd)), orig=(a >> pt << pt)[np.newaxis])
    parallel(cases, one)
    lossy = [("jb_mono8u", "mono8u", ["dcmcjpeg", "+eb"]),
             ("jb_rgb_422", "rgb8u", ["dcmcjpeg", "+eb", "+s2"]),
             ("jb_rgb_444", "rgb8u", ["dcmcjpeg", "+eb", "+s4"]),
             ("jb_rgb_411", "rgb8u", ["dcmcjpeg", "+eb", "+n1"]),
             ("jb_rgb_rgb", "rgb8u", ["dcmcjpeg", "+eb", "+cr"]),
             ("jb_prog_mono8u", "mono8u", ["dcmcjpeg", "+ep"]),
             ("je_mono12u", "mono12u", ["dcmcjpeg", "+ee", "+q", "85"]),
             ("je_mono12u_q100", "mono12u", ["dcmcjpeg", "+ee", "+q", "100"]),
             ("je_mono8u", "mono8u", ["dcmcjpeg", "+ee"]),
             ("jb_gdcm_rgb", "rgb8u", ["gdcmconv", "--jpeg", "--lossy", "-q", "90"])]

    def one_lossy(case):
        name, key, cmd = case
        src, _ = imgs[key]
        dst = path("work", name + ".dcm")
        encode(cmd, src, dst)
        add_dicom(name, dst, "synthetic %s, %s" % (key, " ".join(cmd)))
    parallel(lossy, one_lossy)
    return imgs


def gen_pvrg(imgs):
    """PVRG-JPEG (an independent encoder): restart intervals, non-interleaved
    scans, point transform, precisions 2 and 16, and 12-bit DCT with restarts."""
    # PVRG's lossless restart handling (no predictor reset), interleaved
    # multi-component mode, 16-bit prediction and precision < 8 / point
    # transforms disagree with dcmtk (PVRG cannot read dcmtk's interleaved
    # files either), so only these modes are used; the others come from
    # jpegll_encode below.
    cases = [("pv_ll_mono12u", "mono12u", ["-k", "4", "-p", "12"], "1.2.840.10008.1.2.4.57"),
             ("pv_ll_nonint_rgb8u", "rgb8u", ["-k", "5", "-n"], "1.2.840.10008.1.2.4.57"),
             ("pv_dct12_r5_mono12u", "mono12u", ["-p", "12", "-q", "60", "-r", "5"], "1.2.840.10008.1.2.4.51")]

    def one(case):
        name, key, opts, ts = case
        src, a = imgs[key]
        rows, cols, samples = a.shape
        bits = {"mono12u": 12, "mono16u": 16}.get(key, 8)
        comp_files = []
        for c in range(samples):
            cf = path("work", "%s.c%d.raw" % (name, c))
            (a[..., c].astype(">u2") if bits > 8 else a[..., c].astype("u1")).tofile(cf)
            comp_files.append(cf)
        jp = path("work", name + ".jpg")
        cmd = ["pvrg-jpeg", "-iw", str(cols), "-ih", str(rows)] + opts + ["-s", jp] + comp_files
        rc, msg = run(cmd, cwd=path("work"))
        if rc != 0 or not os.path.exists(jp):
            raise RuntimeError("pvrg-jpeg failed: %s" % msg)
        dst = path("work", name + ".dcm")
        with open(jp, "rb") as f:
            wrap_jpeg(dst, f.read(), src, ts)
        orig = a[np.newaxis] if "-k" in opts else None
        add_dicom(name, dst, "synthetic %s, pvrg-jpeg %s" % (key, " ".join(opts)), orig=orig)
    parallel(cases, one)


# ---- a small JPEG lossless (process 14) encoder ----
# dcmtk and GDCM only write precisions 8/12/16 and no restart markers, and
# PVRG-JPEG's restart, interleaving and low-precision modes do not agree with
# dcmtk, so the remaining features are covered by files written here. Each is
# checked against dcmdjpeg as well as against the original pixels, so an
# error in this encoder cannot hide one in the decoder under test.

def _ll_predict(x, r, sv, first_line, initial):
    """Predictions for row r of one component (T.81 H.1.2.1)."""
    row = x[r]
    pred = np.empty_like(row)
    if first_line:
        pred[0] = initial
        pred[1:] = row[:-1]
        return pred
    ra, rb, rc = row[:-1], x[r - 1, 1:], x[r - 1, :-1]
    pred[0] = x[r - 1, 0]
    pred[1:] = {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1),
                6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1}[sv]
    return pred


def _huff_lengths(freq):
    """Code lengths (<= 16) for the 17 difference categories."""
    import heapq
    used = [s for s in range(17) if freq[s]] or [0]
    if len(used) == 1:
        used.append(1 if used[0] != 1 else 0)
    heap = [(freq[s], [s]) for s in used]
    heapq.heapify(heap)
    length = {s: 0 for s in used}
    while len(heap) > 1:
        f1, s1 = heapq.heappop(heap)
        f2, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            length[s] += 1
        heapq.heappush(heap, (f1 + f2, s1 + s2))
    if max(length.values()) > 15:  # keep away from the all-ones code too
        length = {s: 5 for s in range(17)}
    return length


def _huff_table(length):
    """Canonical codes and the DHT payload (counts + symbols)."""
    syms = sorted(length, key=lambda s: (length[s], s))
    codes, code, prev = {}, 0, length[syms[0]]
    for s in syms:
        code <<= length[s] - prev
        prev = length[s]
        codes[s] = (code, length[s])
        code += 1
    counts = [sum(1 for s in syms if length[s] == n) for n in range(1, 17)]
    return codes, bytes(counts) + bytes(syms)


class _Bits:
    def __init__(self):
        self.out, self.acc, self.n = bytearray(), 0, 0

    def put(self, v, n):
        for i in range(n - 1, -1, -1):
            self.acc = (self.acc << 1) | ((v >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)
                self.acc, self.n = 0, 0

    def flush(self):
        if self.n:
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)


def _category(d):
    return 16 if d == 32768 else abs(d).bit_length()


def jpegll_encode(a, precision, sv, pt=0, ri=0, interleaved=True):
    """a: (rows, cols, ncomp) samples < 2**precision. ri: restart interval in
    MCUs (a multiple of the row length). Returns the codestream."""
    rows, cols, nc = a.shape
    x = (a.astype(np.int64) >> pt)
    lines = ri // cols if ri else 0
    initial = 1 << (precision - pt - 1)
    diff = np.zeros_like(x)
    for c in range(nc):
        for r in range(rows):
            first = r == 0 or (lines and r % lines == 0)
            d = (x[r, :, c] - _ll_predict(x[..., c], r, sv, first, initial)) & 0xFFFF
            diff[r, :, c] = np.where(d > 32768, d - 65536, d)
    tabs = []
    for t in range(2 if nc > 1 else 1):
        comps = [0] if t == 0 else list(range(1, nc))
        freq = [0] * 17
        for c in comps:
            for d in diff[..., c].ravel():
                freq[_category(int(d))] += 1
        tabs.append(_huff_table(_huff_lengths(freq)))
    seg = lambda m, p: bytes([0xFF, m]) + (len(p) + 2).to_bytes(2, "big") + p
    out = bytearray(b"\xff\xd8")
    out += seg(0xC3, bytes([precision]) + rows.to_bytes(2, "big") + cols.to_bytes(2, "big") + bytes([nc]) +
               b"".join(bytes([c + 1, 0x11, 0]) for c in range(nc)))
    out += seg(0xC4, b"".join(bytes([t]) + tabs[t][1] for t in range(len(tabs))))
    if ri:
        out += seg(0xDD, ri.to_bytes(2, "big"))
    scans = [list(range(nc))] if interleaved else [[c] for c in range(nc)]
    for sc in scans:
        out += seg(0xDA, bytes([len(sc)]) + b"".join(bytes([c + 1, (0 if c == 0 else 1) << 4]) for c in sc) +
                   bytes([sv, 0, pt]))
        bits, mcu, rst = _Bits(), 0, 0
        for r in range(rows):
            for col in range(cols):
                if ri and mcu and mcu % ri == 0:
                    bits.flush()
                    out += bits.out + bytes([0xFF, 0xD0 + rst % 8])
                    bits, rst = _Bits(), rst + 1
                for c in sc:
                    d = int(diff[r, col, c])
                    s = _category(d)
                    code, n = tabs[0 if c == 0 else 1][0][s]
                    bits.put(code, n)
                    if 0 < s < 16:
                        bits.put(d if d > 0 else d + (1 << s) - 1, s)
                mcu += 1
        bits.flush()
        out += bits.out
    return bytes(out + b"\xff\xd9")


def gen_own_lossless(imgs):
    """Precisions 2-16, restart intervals, interleaved and separate scans."""
    cases = [("own_p2_sv1", 2, 1, 1, 0, 0, True), ("own_p5_sv4_ri", 5, 1, 4, 0, 2, True),
             ("own_p10_sv7", 10, 1, 7, 1, 0, True), ("own_p13_sv5_ri", 13, 1, 5, 0, 1, True),
             ("own_p16_sv6_ri", 16, 1, 6, 0, 3, True), ("own_p15_sv2_pt4", 15, 1, 2, 4, 0, True),
             ("own_rgb_p8_sv7_ri", 8, 3, 7, 0, 2, True), ("own_rgb_p12_sv3_scans_ri", 12, 3, 3, 0, 1, False),
             ("own_rgb_p6_sv1_scans", 6, 3, 1, 2, 0, False)]

    def one(case):
        name, prec, nc, sv, pt, ri_rows, inter = case
        a = synth(40, 56, nc, prec, 0, seed=prec * 7 + nc)
        ba = 8 if prec <= 8 else 16
        src = path("work", "native_%s.dcm" % name)
        write_native(src, a, prec, 0, "RGB" if nc == 3 else "MONOCHROME2", bits_allocated=ba)
        cs = jpegll_encode(a, prec, sv, pt, ri_rows * a.shape[1], inter)
        dst = path("work", name + ".dcm")
        wrap_jpeg(dst, cs, src, "1.2.840.10008.1.2.4.57")
        add_dicom(name, dst, "synthetic, medpipe's test encoder: P=%d SV=%d Pt=%d restart %d rows, %s" %
                  (prec, sv, pt, ri_rows, "interleaved" if inter else "one scan per component"),
                  orig=(a >> pt << pt)[np.newaxis])
    parallel(cases, one)


def gen_jpegls(imgs):
    cases = [("ls_mono8u", "mono8u", ["dcmcjpls"], 0), ("ls_mono12u", "mono12u", ["dcmcjpls"], 0),
             ("ls_mono16u", "mono16u", ["dcmcjpls"], 0), ("ls_mono16s", "mono16s", ["dcmcjpls"], 0),
             ("ls_mono12s", "mono12s", ["dcmcjpls"], 0),
             ("ls_rgb_line", "rgb8u", ["dcmcjpls", "+il"], 0), ("ls_rgb_sample", "rgb8u", ["dcmcjpls", "+is"], 0),
             ("ls_rgb_none", "rgb8u", ["dcmcjpls", "+in"], 0),
             ("ls_near3_mono12u", "mono12u", ["dcmcjpls", "+en", "+md", "3"], 3),
             ("ls_near2_rgb", "rgb8u", ["dcmcjpls", "+en", "+md", "2", "+is"], 2),
             ("ls_gdcm_mono16u", "mono16u", ["gdcmconv", "--jpegls"], 0),
             ("ls_gdcm_near_mono12u", "mono12u", ["gdcmconv", "--jpegls", "-e", "4"], 4)]

    def one(case):
        name, key, cmd, near = case
        src, a = imgs[key]
        dst = path("work", name + ".dcm")
        encode(cmd, src, dst)
        add_dicom(name, dst, "synthetic %s, %s" % (key, " ".join(cmd)), orig=a[np.newaxis], orig_tol=near,
                  lossy_tol=0)
    parallel(cases, one)


def gen_j2k(imgs):
    cases = [("j2k_mono8u", "mono8u", ["gdcmconv", "--j2k"]), ("j2k_mono12u", "mono12u", ["gdcmconv", "--j2k"]),
             ("j2k_mono16u", "mono16u", ["gdcmconv", "--j2k"]), ("j2k_mono16s", "mono16s", ["gdcmconv", "--j2k"]),
             ("j2k_mono12s", "mono12s", ["gdcmconv", "--j2k"]), ("j2k_rgb8u", "rgb8u", ["gdcmconv", "--j2k"]),
             ("j2k_lossy_mono12u", "mono12u", ["gdcmconv", "--j2k", "--irreversible", "-r", "20"]),
             ("j2k_lossy_mono16s", "mono16s", ["gdcmconv", "--j2k", "--irreversible", "-q", "40"]),
             ("j2k_lossy_rgb8u", "rgb8u", ["gdcmconv", "--j2k", "--irreversible", "-r", "10"])]

    def one(case):
        name, key, cmd = case
        src, a = imgs[key]
        dst = path("work", name + ".dcm")
        encode(cmd, src, dst)
        lossless = "--irreversible" not in cmd
        add_dicom(name, dst, "synthetic %s, %s" % (key, " ".join(cmd)), orig=a[np.newaxis] if lossless else None,
                  lossy_tol=1)
    parallel(cases, one)
    # JP2 wrapper and HTJ2K (Part 15) codestreams made with Grok from raw
    # input; the frame is the codestream itself, compared with the original.
    grk = [("grk_jp2_mono12u", "mono12u", [], "1.2.840.10008.1.2.4.90"),
           ("grk_htj2k_mono16u", "mono16u", ["-M", "64"], "1.2.840.10008.1.2.4.201"),
           ("grk_htj2k_rgb8u", "rgb8u", ["-M", "64"], "1.2.840.10008.1.2.4.201")]

    def one_grk(case):
        name, key, opts, ts = case
        src, a = imgs[key]
        rows, cols, samples = a.shape
        bits = {"mono12u": 12, "mono16u": 16}.get(key, 8)
        raw = path("work", name + ".rawl")
        np.ascontiguousarray(a.transpose(2, 0, 1)).astype("<u2" if bits > 8 else "u1").tofile(raw)
        ext = "jp2" if "jp2" in name else "j2k"
        out = path("work", name + "." + ext)
        rc, msg = run(["grk_compress", "-i", raw, "-o", out, "-F", "%d,%d,%d,%d,u" % (cols, rows, samples, bits)] + opts)
        if rc != 0 or not os.path.exists(out):
            raise RuntimeError("grk_compress failed: %s" % msg)
        dst = path("work", name + ".dcm")
        with open(out, "rb") as f:
            wrap_jpeg(dst, f.read(), src, "1.2.840.10008.1.2.4.90")
        add_dicom(name, dst, "synthetic %s, grk_compress %s" % (key, " ".join(opts) or "(lossless)"),
                  orig=a[np.newaxis], syntax=ts)
    parallel(grk, one_grk)


def main():
    global OUT
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    OUT = sys.argv[1]
    warnings.simplefilter("ignore")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        print("codecs_ref: missing reference tools: %s (scripts/deps.sh test installs them)" % " ".join(missing),
              file=sys.stderr)
        return 1
    for d in ["frames", "refs", "orig", "work"]:
        os.makedirs(path(d), exist_ok=True)
    real = []
    for f in sorted(os.listdir(PYDICOM_FILES)):
        if not f.endswith(".dcm"):
            continue
        try:
            ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, f))
            ts = str(ds.file_meta.TransferSyntaxUID)
            if ts not in CODEC or "PixelData" not in ds:
                continue
        except Exception:  # noqa: BLE001 - files pydicom itself cannot read are not codec tests
            continue
        real.append((os.path.splitext(f)[0], f))
    parallel(real, lambda c: add_dicom(c[0], os.path.join(PYDICOM_FILES, c[1]), "pydicom test_files/" + c[1]))
    imgs = gen_dcmtk_jpeg()
    gen_pvrg(imgs)
    gen_own_lossless(imgs)
    gen_jpegls(imgs)
    gen_j2k(imgs)
    LISTING.sort(key=lambda e: (ORDER[e["base"]], e["index"]))
    with open(path("listing.json"), "w") as f:
        json.dump(LISTING, f, indent=1)
    print("codecs_ref: %d frames" % len(LISTING))
    return 0


if __name__ == "__main__":
    sys.exit(main())
