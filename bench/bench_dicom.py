"""DICOM series -> NIfTI: `medpipe convert DIR out.nii` against Debian's
`dcm2niix -z n -o OUT DIR` on the same files, side by side in one run
(issue 5: at least as fast as dcm2niix).

The series is a synthetic CT (int16 HU phantom with noise, 512 x 512 x 300,
0.7 x 0.7 x 1.25 mm), written by medpipe's own series writer
(`medpipe convert vol.nii DIR --to-dicom`); a JPEG Lossless (process 14,
SV1) copy is made with dcmtk's `dcmcjpeg +e1`, file by file. Both are cached
under $BUILD/bench-data/dicom. Each converter runs 3 times per case,
alternating, into an emptied output folder; the best wall time is reported
with the CPU time (user + system) of that run. medpipe's output is checked
against the synthetic volume; if medpipe cannot decode the JPEG copy (codecs
not merged yet) the case says so instead of a time.

Run with Debian's /usr/bin/python3 (numpy, nibabel) by `make bench`
(bench/run.sh), environment MEDPIPE and BUILD."""
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import nibabel as nib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDPIPE = os.environ.get("MEDPIPE", os.path.join(ROOT, "build", "medpipe"))
BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
NX, NY, NZ = 512, 512, int(os.environ.get("MP_BENCH_DICOM_SLICES", "300"))
REPEATS = 3
DATA = os.path.join(BUILD, "bench-data", "dicom")
STAMP = "v2 %dx%dx%d" % (NX, NY, NZ)


def phantom():
    """CT-like int16 volume: air, an elliptic body with organs and bone, noise."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:NY, 0:NX].astype(np.float32)
    u, w = (x - NX / 2) / (NX * 0.42), (y - NY / 2) / (NY * 0.33)
    body = u * u + w * w < 1
    vol = np.empty((NX, NY, NZ), np.int16)
    for z in range(NZ):
        t = z / NZ
        sl = np.full((NY, NX), -1000.0, np.float32)
        sl[body] = 40
        organ = ((u - 0.25) / 0.35) ** 2 + ((w + 0.1) / (0.4 + 0.2 * t)) ** 2 < 1
        sl[organ] = 60
        spine = (u ** 2 + (w - 0.6) ** 2) < 0.02
        sl[spine] = 700 + 300 * t
        sl += rng.normal(0, 15, size=sl.shape).astype(np.float32)
        vol[:, :, z] = np.rint(sl).T.astype(np.int16)
    return vol


def run_timed(cmd):
    """(wall s, CPU s of the child, returncode, stderr) of one run."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_utime + ru.ru_stime, p.returncode, err


def prepare():
    stamp_path = os.path.join(DATA, "stamp")
    if os.path.exists(stamp_path) and open(stamp_path).read() == STAMP:
        return np.asanyarray(nib.load(os.path.join(DATA, "volume.nii")).dataobj)
    shutil.rmtree(DATA, ignore_errors=True)
    os.makedirs(DATA)
    t0 = time.perf_counter()
    vol = phantom()
    aff = np.diag([-0.7, -0.7, 1.25, 1.0])  # LPS-aligned axial, as scanners write it
    aff[:3, 3] = [180, 180, -200]
    nib.save(nib.Nifti1Image(vol, aff), os.path.join(DATA, "volume.nii"))
    raw = os.path.join(DATA, "raw")
    subprocess.run([MEDPIPE, "convert", os.path.join(DATA, "volume.nii"), raw, "--to-dicom", "--series-description",
                    "bench CT"], check=True, stdout=subprocess.DEVNULL)
    jpg = os.path.join(DATA, "jpeg_lossless_sv1")
    os.makedirs(jpg)
    names = sorted(os.listdir(raw))

    def encode(n):
        subprocess.run(["dcmcjpeg", "+e1", os.path.join(raw, n), os.path.join(jpg, n)], check=True)

    with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        list(ex.map(encode, names))
    with open(stamp_path, "w") as f:
        f.write(STAMP)
    print("  (made the test series in %.1f s: %s)" % (time.perf_counter() - t0, DATA))
    return vol


def folder_mib(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 2 ** 20


def bench_case(label, src, vol):
    out_m = os.path.join(DATA, "out_medpipe")
    out_d = os.path.join(DATA, "out_dcm2niix")
    best = {"medpipe": None, "dcm2niix": None}
    pending = None
    for _ in range(REPEATS):
        for tool in ("medpipe", "dcm2niix"):
            for d in (out_m, out_d):
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
            if tool == "medpipe":
                if pending:
                    continue
                cmd = [MEDPIPE, "convert", src, os.path.join(out_m, "vol.nii")]
            else:
                cmd = ["dcm2niix", "-z", "n", "-o", out_d, src]
            wall, cpu, rc, err = run_timed(cmd)
            if rc != 0:
                if tool == "medpipe" and "codec pending" in err:
                    pending = err.strip().splitlines()[-1]
                    continue
                raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), rc, err))
            if tool == "medpipe":
                got = np.asanyarray(nib.load(os.path.join(out_m, "vol.nii")).dataobj)
                assert got.shape == vol.shape and np.array_equal(got, vol), "medpipe output differs from the volume"
            else:
                nii = [f for f in os.listdir(out_d) if f.endswith(".nii")]
                assert len(nii) == 1 and nib.load(os.path.join(out_d, nii[0])).shape == vol.shape, nii
            if best[tool] is None or wall < best[tool][0]:
                best[tool] = (wall, cpu)
    for d in (out_m, out_d):
        shutil.rmtree(d, ignore_errors=True)
    d = best["dcm2niix"]
    if pending:
        m_text, ratio = "codec pending", "-"
        print("  note: medpipe on %s: %s" % (label, pending))
    else:
        m = best["medpipe"]
        m_text, ratio = "%6.2f / %5.2f" % m, "%.2fx" % (d[0] / m[0])
    print("%-22s %9.0f MiB  %16s  %16s  %8s" % (label, folder_mib(src), m_text, "%6.2f / %5.2f" % d, ratio))


def main():
    for tool in ("dcm2niix", "dcmcjpeg"):
        if not shutil.which(tool):
            sys.exit("bench_dicom: %s not found (Debian packages dcm2niix, dcmtk: scripts/deps.sh test)" % tool)
    vol = prepare()
    print("DICOM series -> NIfTI (.nii), %d slices of %dx%d int16, best of %d, %d CPUs" % (NZ, NX, NY, REPEATS,
                                                                                          os.cpu_count() or 1))
    print("%-22s %13s  %16s  %16s  %8s" % ("case", "input", "medpipe wall/CPU", "dcm2niix wall/CPU",
                                            "speed-up"))
    bench_case("uncompressed", os.path.join(DATA, "raw"), vol)
    bench_case("JPEG lossless SV1", os.path.join(DATA, "jpeg_lossless_sv1"), vol)
    print("  (seconds; medpipe: `medpipe convert DIR out.nii`, fsyncs its output; dcm2niix: `dcm2niix -z n -o OUT "
          "DIR`, also writes its JSON sidecar; speed-up = dcm2niix wall / medpipe wall)")


if __name__ == "__main__":
    main()
