"""Reads the U-Net checkpoint written by tests/test_nn_ckpt.c (in
$BUILD/test-artifacts) with plain Python (struct + json + numpy) and, when the
PyPI packages are installed in .cache/venv-torch, with safetensors + PyTorch;
compares every tensor with the raw parameter dump written next to it."""
import json
import os
import struct
import subprocess
import sys

import numpy as np

from mptest import ROOT, run_tests

ART = os.path.join(os.environ.get("BUILD", os.path.join(ROOT, "build")), "test-artifacts")
CKPT = os.path.join(ART, "unet_tiny.safetensors")
VENV_PY = os.path.join(ROOT, ".cache", "venv-torch", "bin", "python")


def expected():
    """name -> array from the raw slab and the index (independent of the writer)."""
    slab = np.fromfile(os.path.join(ART, "unet_tiny.params.f32"), dtype="<f4")
    out = {}
    with open(os.path.join(ART, "unet_tiny.index.txt")) as f:
        for line in f:
            parts = line.split()
            name, off, shape = parts[0], int(parts[1]), tuple(int(x) for x in parts[2:])
            n = int(np.prod(shape))
            out[name] = slab[off:off + n].reshape(shape)
    return out


def test_plain_python_reader():
    with open(CKPT, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    assert hlen % 8 == 0 and 8 + hlen <= len(raw)
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    data = raw[8 + hlen:]
    assert header["__metadata__"]["format"] == "pt"
    want = expected()
    names = [k for k in header if k != "__metadata__"]
    assert sorted(names) == sorted(want), set(names) ^ set(want)
    assert "encoder.stages.0.0.convs.0.conv.weight" in names
    assert "decoder.transpconvs.0.weight" in names and "decoder.seg_layers.1.weight" in names
    end = 0
    for name in sorted(names, key=lambda k: header[k]["data_offsets"][0]):
        e = header[name]
        assert e["dtype"] == "F32"
        b, t = e["data_offsets"]
        assert b == end, "tensors must be contiguous without holes"
        end = t
        arr = np.frombuffer(data[b:t], dtype="<f4").reshape(e["shape"])
        assert arr.shape == want[name].shape, (name, arr.shape, want[name].shape)
        assert np.array_equal(arr, want[name]), name
    assert end == len(data)
    # nnU-Net's initialisation: Kaiming normal with a=0.01 (std = gain / sqrt(fan_in)).
    w = want["encoder.stages.1.0.convs.0.conv.weight"]
    std = np.sqrt(2.0 / (1 + 0.01 ** 2)) / np.sqrt(w.shape[1] * 27)
    assert abs(w.std() / std - 1) < 0.1, (w.std(), std)


def test_pytorch_safetensors_reader():
    script = r"""
import sys, numpy as np
from safetensors.torch import load_file
t = load_file(sys.argv[1])
slab = np.fromfile(sys.argv[2], dtype='<f4')
n = 0
for line in open(sys.argv[3]):
    p = line.split(); name, off, shape = p[0], int(p[1]), [int(x) for x in p[2:]]
    x = t[name]
    assert list(x.shape) == shape, (name, x.shape, shape)
    assert str(x.dtype) == 'torch.float32'
    assert np.array_equal(x.numpy().ravel(), slab[off:off + x.numel()]), name
    n += 1
assert n == len(t)
print('torch ok', n)
"""
    r = subprocess.run([VENV_PY, "-c", script, CKPT, os.path.join(ART, "unet_tiny.params.f32"),
                        os.path.join(ART, "unet_tiny.index.txt")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "torch ok" in r.stdout, r.stdout + r.stderr


if __name__ == "__main__":
    tests = [test_plain_python_reader]
    if os.path.exists(VENV_PY):
        tests.append(test_pytorch_safetensors_reader)
    else:
        # Not counted as a pass: PyTorch from PyPI is several GB, so only a
        # session that installed it into .cache/venv-torch runs this check.
        print("skipped (not counted): .cache/venv-torch missing, PyTorch safetensors reader not run", flush=True)
    run_tests(tests)
