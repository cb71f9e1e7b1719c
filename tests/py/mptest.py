"""Shared helpers for the Python-side tests (run with Debian's /usr/bin/python3,
which has numpy, scipy and nibabel): checks that count passes and failures
and print the "N passed, N failed" line tests/run.sh reads, the medpipe
binary, scratch folders, and real test files fetched from Debian packages."""
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEDPIPE = os.environ.get("MEDPIPE", os.path.join(ROOT, "build", "medpipe"))
CACHE = os.environ.get("MP_TEST_CACHE", os.path.join(ROOT, ".cache", "testdata"))

_passed = 0
_failed = 0


def run_tests(tests):
    """Runs each callable; an exception or failed assert fails it. Exits 0/1."""
    global _passed, _failed
    for t in tests:
        try:
            t()
            _passed += 1
            print("ok   " + t.__name__, flush=True)
        except Exception:  # noqa: BLE001 - a test harness reports everything
            _failed += 1
            print("FAIL " + t.__name__, file=sys.stderr)
            traceback.print_exc()
    print("%d passed, %d failed" % (_passed, _failed))
    sys.exit(1 if _failed else 0)


def medpipe(*args, check=True):
    """Runs the medpipe command; returns CompletedProcess (text)."""
    p = subprocess.run([MEDPIPE] + [str(a) for a in args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError("medpipe %s failed (%d): %s" % (" ".join(map(str, args)), p.returncode, p.stderr))
    return p


def scratch(name):
    d = tempfile.mkdtemp(prefix="medpipe-%s-" % name)
    return d


def debian_package_dir(pkg):
    """Unpacks a Debian package (apt-get download + dpkg -x) into the cache and
    returns the folder; None when it cannot be fetched (no network/apt)."""
    dest = os.path.join(CACHE, pkg)
    stamp = os.path.join(dest, ".unpacked")
    if os.path.exists(stamp):
        return dest
    os.makedirs(CACHE, exist_ok=True)
    work = tempfile.mkdtemp(prefix="medpipe-deb-", dir=CACHE)
    try:
        r = subprocess.run(["apt-get", "download", pkg], cwd=work, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            r = subprocess.run(["apt-get", "download", pkg], cwd=work, capture_output=True, text=True)
        debs = [f for f in os.listdir(work) if f.endswith(".deb")]
        if r.returncode != 0 or not debs:
            raise RuntimeError("apt-get download %s failed: %s" % (pkg, r.stderr.strip()))
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)
        subprocess.run(["dpkg", "-x", os.path.join(work, debs[0]), dest], check=True)
        open(stamp, "w").close()
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)
