#!/bin/sh
# make bench: every benchmark program, bench/bench_*.py, and the U-Net
# training-step benchmark at 64^3 and 96^3 (with PyTorch side by side when
# MEDPIPE_TORCH names a Python with torch, or .cache/venv-torch exists).
# Environment: MEDPIPE, BUILD, PYTHON. Figures are noisy on a shared machine:
# compare only numbers taken in the same run.
set -u
for b in "$@"; do echo "== $(basename "$b")"; "$b" || echo "benchmark $(basename "$b") failed"; done
for py in bench/bench_*.py; do
  [ -f "$py" ] || continue
  echo "== $(basename "$py")"; "${PYTHON:-/usr/bin/python3}" "$py" || echo "benchmark $py failed"
done
torch=${MEDPIPE_TORCH:-}
[ -z "$torch" ] && [ -x .cache/venv-torch/bin/python ] && torch=.cache/venv-torch/bin/python
for p in 64 96; do
  echo "== medpipe bench unet --patch $p"
  OMP_WAIT_POLICY=passive "${MEDPIPE:-build/medpipe}" bench unet --patch "$p" --batch 2 --steps 2 --threads 2 \
    --torch "${torch:-none}" || echo "benchmark unet $p failed"
done
