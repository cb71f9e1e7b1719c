"""`medpipe bench table --tiny` (the hidden test mode: 4 + 2 tiny synthetic
cases, 3 training steps per row) runs every strategy as child processes and
writes out/bench-style table.md and table.json with one row per strategy:
measured rows carry positive throughputs, a Dice in [0, 1] and a plausible
peak RSS; the bf16 row says it is not supported instead of giving numbers;
the 2-rank row ran under mpirun (this test FAILS without mpirun). A work
folder the command did not make is never deleted."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

SCRATCH = mptest.scratch("bench-table")
KEYS = ["fp32_baseline", "fp32_prefetch", "bf16", "inference_batched", "mpi_2x1"]


def bench_env():
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("OMPI_COMM_WORLD", "PMI_", "PMIX_")):
            del env[k]
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")  # Open MPI's own
    return env


def test_tiny_table():
    if not shutil.which("mpirun"):
        raise AssertionError("mpirun not found on PATH: install openmpi-bin (sh scripts/deps.sh test); "
                             "the 2-rank row of the table cannot be measured without it")
    out = os.path.join(SCRATCH, "bench")
    p = subprocess.run([mptest.MEDPIPE, "bench", "table", "--tiny", "--out", out], capture_output=True,
                       text=True, timeout=120, env=bench_env())
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    with open(os.path.join(out, "table.md")) as f:
        md = f.read()
    assert md == p.stdout, "stdout should be the table"
    with open(os.path.join(out, "table.json")) as f:
        t = json.load(f)
    assert t["mode"] == "tiny" and t["test_cases"] == 2 and t["batch"] >= 2, t
    rows = {r["key"]: r for r in t["rows"]}
    assert [r["key"] for r in t["rows"]] == KEYS, list(rows)
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| strategy")]
    assert len(lines) == len(KEYS), md
    for r, line in zip(t["rows"], lines):
        assert line.startswith("| " + r["strategy"] + " |"), (line, r)
    for k in ["fp32_baseline", "fp32_prefetch", "mpi_2x1"]:
        r = rows[k]
        assert r["status"] == "ok", r
        assert 0 < r["train_patches_per_s"] < 1e5, r
        assert 0 < r["infer_volumes_per_s"] < 1e4, r
        assert 0 <= r["dice"] <= 1, r
        assert 5 < r["peak_rss_mb"] < 8192, r
    assert rows["fp32_baseline"]["workers"] == 0 and rows["fp32_prefetch"]["workers"] == 1
    mpi = rows["mpi_2x1"]
    assert mpi["ranks"] == 2 and mpi["threads"] == 1 and mpi["batch"] == t["batch"], mpi
    run_log = os.path.join(out, "work", "runs", "mpi_2x1", "log.jsonl")
    with open(run_log) as f:
        start = json.loads(f.readline())
    assert start["ranks"] == 2 and start["local_batch"] == t["batch"] // 2, start
    inf = rows["inference_batched"]
    assert inf["status"] == "ok" and inf["batch"] == 2 and inf["batch_compared"] == 1, inf
    assert inf["infer_volumes_per_s"] > 0 and inf["infer_volumes_per_s_compared"] > 0, inf
    assert inf["train_patches_per_s"] is None
    # Batched windows give the model's prediction unchanged: same Dice as the model's own row.
    assert abs(inf["dice"] - rows["fp32_prefetch"]["dice"]) < 1e-9, (inf, rows["fp32_prefetch"])
    bf = rows["bf16"]
    assert bf["status"] == "unsupported" and "not supported" in bf["note"], bf
    for k in ["train_patches_per_s", "infer_volumes_per_s", "dice", "peak_rss_mb"]:
        assert bf[k] is None, bf  # never an invented number
    assert "not supported" in [ln for ln in lines if ln.startswith("| bf16")][0]


def test_foreign_work_folder_kept():
    out = os.path.join(SCRATCH, "foreign")
    os.makedirs(os.path.join(out, "work"))
    keep = os.path.join(out, "work", "precious.txt")
    with open(keep, "w") as f:
        f.write("x")
    p = subprocess.run([mptest.MEDPIPE, "bench", "table", "--tiny", "--out", out], capture_output=True,
                       text=True, timeout=60, env=bench_env())
    assert p.returncode == 1 and "not made by medpipe bench table" in p.stderr, (p.returncode, p.stderr)
    assert os.path.exists(keep)
    assert not os.path.exists(os.path.join(out, "table.md"))


def test_usage():
    p = subprocess.run([mptest.MEDPIPE, "bench", "table", "--epochs"], capture_output=True, text=True)
    assert p.returncode == 2 and "needs a value" in p.stderr, p.stderr
    p = subprocess.run([mptest.MEDPIPE, "bench", "table", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--quick" in p.stdout, p.stdout


mptest.run_tests([test_tiny_table, test_foreign_work_folder_kept, test_usage])
