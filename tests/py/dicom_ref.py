"""Reference values for the DICOM conformance test (tests/test_dicom_conformance.c),
computed with Debian's pydicom + numpy: run by the C test itself.

Usage: dicom_ref.py OUTDIR
Collects every file of pydicom's test data (test_files recursively,
charset_files, palettes) and nibabel's nicom test data (gzipped ones are
unpacked into OUTDIR), and writes OUTDIR/manifest.tsv with one line per file:

  path status rows cols frames samples bits_alloc bits_stored signed syntax
  slope inter ipp iop photometric raw rgb_raw note

status: pixels (pydicom decoded the pixel data: raw holds it),
        nometa (no preamble/meta group: pydicom reads it only with force=True;
                its tags are given, no pixel data),
        nopixels (pydicom parsed it; no Pixel Data),
        pxerror (pydicom parsed it but cannot decode its pixels),
        unreadable (pydicom cannot parse it without force=True).
raw: frames x rows x cols x samples, little endian, in the sample type the C
decoder produces (uint8/int8/uint16/int16/uint32/int32 by BitsAllocated and
PixelRepresentation), after the BitsStored/HighBit masking and sign extension
that PS3.5 8.1.1 defines (pydicom returns the raw words). rgb_raw: for
YBR_FULL / YBR_FULL_422 8-bit images, pydicom's convert_color_space to RGB.
"""
import gzip
import os
import sys
import warnings

import numpy as np
import pydicom
import pydicom.data
from pydicom.pixel_data_handlers.util import convert_color_space

warnings.simplefilter("ignore")

NIBABEL_DATA = "/usr/lib/python3/dist-packages/nibabel/nicom/tests/data"
SKIP_EXT = (".txt", ".json", ".dump", ".md", ".bin", ".py", ".pyc")


def collect(outdir):
    base = os.path.dirname(pydicom.data.__file__)
    roots = [os.path.join(base, d) for d in ("test_files", "charset_files", "palettes")]
    roots.append(NIBABEL_DATA)
    files = []
    for root in roots:
        for dirpath, dirnames, names in os.walk(root):
            dirnames.sort()
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                if n.endswith(SKIP_EXT) or n[:-3].endswith(SKIP_EXT) or n == "README" or "__pycache__" in p:
                    continue
                if n.endswith(".gz"):
                    # gzipped DICOM: unpack for both readers
                    dst = os.path.join(outdir, "gunzip_" + n[:-3])
                    with gzip.open(p, "rb") as fi, open(dst, "wb") as fo:
                        fo.write(fi.read())
                    p = dst
                files.append(p)
    return files


def masked(ds, arr):
    ba, bs = int(ds.BitsAllocated), int(ds.get("BitsStored", ds.BitsAllocated))
    hb = int(ds.get("HighBit", bs - 1))
    signed = int(ds.get("PixelRepresentation", 0))
    if ba == 1:
        return arr.astype(np.uint8)
    size = {8: 1, 16: 2, 32: 4}[ba]
    udt = np.dtype("<u%d" % size)
    u = arr.astype(arr.dtype.newbyteorder("=")).view(arr.dtype.newbyteorder("=").str.replace("i", "u"))
    u = u.astype(np.uint64)
    shift = hb + 1 - bs
    u = (u >> shift) & ((1 << bs) - 1)
    if signed:
        s = u.astype(np.int64)
        s = np.where(s >= (1 << (bs - 1)), s - (1 << bs), s)
        return s.astype(np.dtype("<i%d" % size))
    return u.astype(udt)


def fmt(v):
    if v is None:
        return "-"
    try:
        return ",".join(repr(float(x)) for x in v)
    except TypeError:
        return repr(float(v))


def one(path, outdir, idx):
    row = {"status": "unreadable", "note": ""}
    forced = False
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001 - any failure is the outcome
        row["note"] = str(e).splitlines()[0][:120]
        # No preamble/meta: pydicom reads it only when forced; a forced read
        # that finds a plausible data set gives reference tags (status nometa).
        try:
            ds = pydicom.dcmread(path, force=True)
            if len(ds) < 2 or any(el.tag.group > 0x7FE0 or el.tag.group % 2 for el in ds):
                return row
            ds[0x00080005]  # must begin with ordinary groups
            forced = True
        except Exception:  # noqa: BLE001
            return row
    meta = getattr(ds, "file_meta", None)
    row["syntax"] = str(getattr(meta, "TransferSyntaxUID", "-")) if meta is not None else "-"
    for key, name in (("rows", "Rows"), ("cols", "Columns"), ("samples", "SamplesPerPixel"),
                      ("ba", "BitsAllocated"), ("bs", "BitsStored"), ("signed", "PixelRepresentation")):
        try:
            v = ds.get(name)
            row[key] = str(int(v)) if v is not None else "-"
        except Exception:  # noqa: BLE001
            row[key] = "-"
    try:
        row["frames"] = str(int(ds.get("NumberOfFrames", 1) or 1))
    except Exception:  # noqa: BLE001
        row["frames"] = "-"
    for key, name in (("slope", "RescaleSlope"), ("inter", "RescaleIntercept"),
                      ("ipp", "ImagePositionPatient"), ("iop", "ImageOrientationPatient")):
        try:
            row[key] = fmt(ds.get(name))
        except Exception:  # noqa: BLE001
            row[key] = "-"
    row["photometric"] = str(ds.get("PhotometricInterpretation", "-")).replace(" ", "_") or "-"
    if forced:
        row["status"] = "nometa"
    if "PixelData" not in ds:
        if not forced:
            row["status"] = "nopixels"
        return row
    try:
        arr = ds.pixel_array
    except Exception as e:  # noqa: BLE001
        row["status"] = "pxerror"
        row["note"] = str(e).splitlines()[0][:120]
        return row
    frames, rows, cols = int(row["frames"]), int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1))
    arr = arr.reshape(frames, rows, cols, spp)
    m = masked(ds, arr)
    raw = os.path.join(outdir, "ref%03d.raw" % idx)
    m.tofile(raw)
    row["raw"] = raw
    row["status"] = "pixels"
    if spp == 3 and row["photometric"] in ("YBR_FULL", "YBR_FULL_422") and int(ds.BitsAllocated) == 8:
        rgb = convert_color_space(arr.astype(np.uint8), "YBR_FULL", "RGB")
        rgbp = os.path.join(outdir, "ref%03d_rgb.raw" % idx)
        rgb.astype(np.uint8).tofile(rgbp)
        row["rgb"] = rgbp
    return row


COLS = ["status", "rows", "cols", "frames", "samples", "ba", "bs", "signed", "syntax", "slope", "inter",
        "ipp", "iop", "photometric", "raw", "rgb", "note"]


def main():
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "manifest.tsv"), "w") as out:
        for i, p in enumerate(collect(outdir)):
            row = one(p, outdir, i)
            vals = [p] + [str(row.get(c, "-")).replace("\t", " ") or "-" for c in COLS]
            out.write("\t".join(vals) + "\n")


if __name__ == "__main__":
    main()
