"""Runs tests/test_dist_mpi.c as two MPI ranks (mpirun -np 2): bucketed
gradient allreduce with each rank reporting in its own random order, broadcast,
f64 sum, and a 2-rank U-Net step equal to the 1-process batch-2 step. Needs
Open MPI's mpirun (openmpi-bin, in scripts/deps.sh): without it this test
FAILS, since data-parallel training would be untested."""
import os
import re
import shutil
import subprocess

from mptest import ROOT, run_tests

BUILD = os.environ.get("BUILD", os.path.join(ROOT, "build"))
PROG = os.path.join(BUILD, "tests", "test_dist_mpi")
RANKS = 2


def mpirun_env():
    env = dict(os.environ)
    # A launcher's variables from an enclosing job would confuse mpirun.
    for k in list(env):
        if k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_")):
            del env[k]
    # Two ranks on a small container: shared memory only, no network probing,
    # no ptrace-based single copy (often denied in containers).
    env.setdefault("OMPI_MCA_btl", "self,vader")
    env.setdefault("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    # Under `make asan` the program is instrumented: Open MPI's own start-up
    # allocations are still held at exit (not medpipe's to free).
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    return env


def test_two_ranks():
    mpirun = shutil.which("mpirun")
    if not mpirun:
        raise AssertionError("mpirun not found on PATH: install openmpi-bin (sh scripts/deps.sh test); "
                             "the 2-rank data-parallel test cannot run without it")
    if not os.access(PROG, os.X_OK):
        raise AssertionError("%s is missing: build it with make test" % PROG)
    cmd = [mpirun, "--allow-run-as-root", "--oversubscribe", "--tag-output", "-np", str(RANKS), PROG]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=mpirun_env())
    except subprocess.TimeoutExpired as e:
        raise AssertionError("mpirun -np %d timed out (a rank stuck in a collective?); output so far:\n%s%s"
                             % (RANKS, e.stdout or "", e.stderr or ""))
    out = p.stdout + p.stderr
    print(out)
    assert p.returncode == 0, "mpirun -np %d %s exited %d" % (RANKS, PROG, p.returncode)
    for r in range(RANKS):
        tag = r"^\[\d+,%d\]<stdout>:" % r  # mpirun --tag-output: [job,rank]<stdout>:
        # Each rank ran MPI as one of RANKS, not as a world of its own.
        assert re.search(tag + r"rank %d of %d: node rank \d+ of %d, mpi 1," % (r, RANKS, RANKS), out, re.M), \
            "rank %d did not join a %d-rank MPI world" % (r, RANKS)
        m = re.search(tag + r"(\d+) passed, (\d+) failed", out, re.M)
        assert m, "rank %d printed no summary" % r
        assert int(m.group(1)) == 3 and int(m.group(2)) == 0, "rank %d: %s" % (r, m.group(0))
        g = re.search(tag + r"rank %d of %d: U-Net .* gradient max rel diff (\S+)" % (r, RANKS), out, re.M)
        assert g and float(g.group(1)) < 1e-5, "rank %d: U-Net gradient line missing or off" % r


run_tests([test_two_ranks])
