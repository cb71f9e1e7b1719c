"""`medpipe train` from outside: a tiny run writes the run folder and a
log.jsonl of valid JSON lines; Ctrl-C (SIGINT) mid-run saves, exits 130 and
says how to resume; --resume continues at the exact next step (the logged
steps run 1..N with no gap and no repeat); resuming against another cache
exits 1 naming the problem; usage errors exit 2."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mptest  # noqa: E402

SCRATCH = mptest.scratch("train-py")
TINY = ["--patch", "16,32,32", "--stages", "3", "--features", "4,16", "--threads", "1", "--val-cases", "1"]


def make_cache(name, cases, seed):
    ds = os.path.join(SCRATCH, name + "_ds")
    cache = os.path.join(SCRATCH, name)
    mptest.medpipe("synth", "--out", ds, "--cases", cases, "--test-cases", 0, "--size", "32,32,24",
                   "--spacing", "6,6,6", "--classes", 1, "--seed", seed, "--quiet")
    mptest.medpipe("preprocess", ds, "--out", cache, "--quiet")
    return cache


CACHE = make_cache("cache", 5, 1)
CACHE2 = make_cache("cache2", 4, 2)


def read_log(run):
    with open(os.path.join(run, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_tiny_run():
    run = os.path.join(SCRATCH, "tiny")
    r = mptest.medpipe("train", CACHE, "--out", run, "--epochs", 2, "--iters-per-epoch", 4, *TINY)
    assert "trained 2 epochs (8 steps" in r.stdout, r.stdout
    for f in ["plan.json", "model.json", "checkpoint_last.safetensors", "checkpoint_last.state",
              "checkpoint_best.safetensors", "log.jsonl"]:
        assert os.path.isfile(os.path.join(run, f)), f
    log = read_log(run)
    steps = [e for e in log if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 9))
    for e in steps:
        for k in ["loss", "lr", "grad_norm", "data_wait_s", "step_s", "patches_per_s"]:
            assert isinstance(e[k], float), (k, e)
    val = [e for e in log if e["event"] == "validation"]
    assert len(val) == 2 and len(val[0]["dice"]) == 2
    with open(os.path.join(run, "plan.json")) as f:
        plan = json.load(f)
    assert plan["patch_size_dhw"] == [16, 32, 32] and plan["features"] == [4, 8, 16]
    # the dataset description (class names for DICOM SEG) travels cache -> run
    with open(os.path.join(run, "dataset.json")) as f:
        names = json.load(f)["labels"]
    assert names.get("liver") == 1 and names.get("background") == 0, names


def test_sigint_then_resume():
    run = os.path.join(SCRATCH, "interrupted")
    args = [mptest.MEDPIPE, "train", CACHE, "--out", run, "--epochs", 1, "--iters-per-epoch", 40, *TINY]
    p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logp = os.path.join(run, "log.jsonl")
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(logp) and sum(1 for _ in open(logp)) >= 4:  # start + 3 steps
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert "--resume" in err and "checkpoint_last saved" in err, err
    stopped_at = [e for e in read_log(run) if e["event"] == "stop"][0]["step"]
    assert 3 <= stopped_at < 40, stopped_at
    r = mptest.medpipe("train", CACHE, "--out", run, "--resume", "--threads", 1)
    assert "trained 1 epochs (40 steps, %d this run)" % (40 - stopped_at) in r.stdout, r.stdout
    log = read_log(run)
    assert [e["step"] for e in log if e["event"] == "step"] == list(range(1, 41))
    assert [e["event"] for e in log].count("resume") == 1


def test_resume_refuses_other_cache():
    run = os.path.join(SCRATCH, "tiny")
    r = mptest.medpipe("train", CACHE2, "--out", run, "--resume", check=False)
    assert r.returncode == 1, r
    assert "resume with the cache it was started on" in r.stderr, r.stderr


def test_usage_errors():
    for args in [["train"], ["train", CACHE], ["train", CACHE, "--out", "x", "--patch", "1,2"],
                 ["train", CACHE, "--out", "x", "--optimizer", "adam"],
                 ["train", CACHE, "--out", "x", "--resume", "--patch", "16,32,32"],
                 ["train", CACHE, "--out", "x", "--bogus"]]:
        r = mptest.medpipe(*args, check=False)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
    r = mptest.medpipe("train", "--help")
    assert "usage: medpipe train" in r.stdout and "--resume" in r.stdout


try:
    mptest.run_tests([test_tiny_run, test_sigint_then_resume, test_resume_refuses_other_cache, test_usage_errors])
finally:
    shutil.rmtree(SCRATCH, ignore_errors=True)
