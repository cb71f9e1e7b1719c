"""`medpipe bench unet` on a tiny U-Net: the last line is one JSON object
whose step statistics agree with each other (best <= median, best <= mean,
GFLOP/s from the mean step), and PyTorch peers given with --torch (here
stand-in scripts that print a peer's JSON line, or fail) are each reported
with their ratio in the same run; a peer that fails is named on stderr and
does not fail the benchmark."""
import json
import os
import stat
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

SCRATCH = mptest.scratch("bench-unet")
TINY = ["bench", "unet", "--patch", "16", "--batch", "1", "--features", "4,8", "--steps", "3", "--threads", "1"]


def fake_peer(name, body):
    path = os.path.join(SCRATCH, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def bench(*extra):
    p = subprocess.run([mptest.MEDPIPE] + TINY + list(extra), capture_output=True, text=True, timeout=120,
                       cwd=mptest.ROOT)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p, json.loads(p.stdout.strip().splitlines()[-1])


def test_json_statistics():
    p, j = bench("--torch", "none")
    for k in ["train_step_ms", "train_step_ms_median", "train_step_ms_best", "forward_ms", "gflops_train",
              "gflops_forward", "peak_rss_mb", "fma_peak_gflops"]:
        assert j[k] > 0, (k, j)
    assert j["train_step_ms_best"] <= j["train_step_ms_median"] + 1e-6, j
    assert j["train_step_ms_best"] <= j["train_step_ms"] + 0.1, j
    assert j["patch"] == 16 and j["batch"] == 1 and j["threads"] == 1, j
    assert j["torch_peers"] == [] and j["torch_train_step_ms"] == -1, j
    assert "median" in p.stdout and "FMA peak" in p.stdout, p.stdout


def test_peers_side_by_side():
    good = fake_peer("peer-ok", 'echo "warming up"; echo \'{"impl": "pytorch 9.9", "train_step_ms": 50.0, '
                     '"train_step_ms_median": 40.0, "forward_ms": 5.0, "peak_rss_mb": 123}\'')
    bad = fake_peer("peer-bad", "echo 'no torch here' >&2; exit 3")
    p, j = bench("--torch", good + "," + bad)
    assert [x["impl"] for x in j["torch_peers"]] == ["pytorch 9.9"], j
    peer = j["torch_peers"][0]
    assert peer["train_step_ms"] == 50.0 and peer["train_step_ms_median"] == 40.0 and peer["peak_rss_mb"] == 123
    assert j["torch_train_step_ms"] == 50.0, j
    ratio = [ln for ln in p.stdout.splitlines() if ln.startswith("ratio:")]
    assert len(ratio) == 1 and "pytorch 9.9" in ratio[0], p.stdout
    mean = float(ratio[0].split("= ")[1].split(" ")[0])
    ms = j["train_step_ms"]  # rounded to 0.1 ms in the JSON; the ratio was taken before rounding
    assert 50.0 / (ms + 0.05) - 0.01 <= mean <= 50.0 / max(ms - 0.05, 1e-3) + 0.01, (ratio, j)
    assert "peer-bad" in p.stderr and "did not run" in p.stderr, p.stderr


def test_bad_option():
    p = subprocess.run([mptest.MEDPIPE, "bench", "unet", "--steps", "0"], capture_output=True, text=True)
    assert p.returncode != 0 and "--steps" in p.stderr, (p.returncode, p.stderr)


mptest.run_tests([test_json_statistics, test_peers_side_by_side, test_bad_option])
