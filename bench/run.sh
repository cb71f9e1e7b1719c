#!/bin/sh
# make bench: every benchmark program, bench/bench_*.py, and the U-Net
# training-step benchmark at 64^3 and 96^3 (with PyTorch side by side when
# MEDPIPE_TORCH names Pythons with torch, comma-separated, or by default the
# ones found below).
# Environment: MEDPIPE, BUILD, PYTHON. Figures are noisy on a shared machine:
# compare only numbers taken in the same run.
set -u
for b in "$@"; do echo "== $(basename "$b")"; "$b" || echo "benchmark $(basename "$b") failed"; done
for py in bench/bench_*.py; do
  [ -f "$py" ] || continue
  echo "== $(basename "$py")"; "${PYTHON:-/usr/bin/python3}" "$py" || echo "benchmark $py failed"
done
# PyTorch peers, in the same run: PyTorch 2.x from PyPI in .cache/venv-torch
# and Debian's python3-torch 1.13 (through bench/debian-torch), when present.
torch=${MEDPIPE_TORCH:-}
if [ -z "$torch" ]; then
  [ -x .cache/venv-torch/bin/python ] && torch=.cache/venv-torch/bin/python
  if /usr/bin/python3 -c "import torch" 2>/dev/null; then torch="${torch:+$torch,}bench/debian-torch"; fi
fi
for p in 64 96; do
  steps=5; [ "$p" = 96 ] && steps=3
  echo "== medpipe bench unet --patch $p"
  OMP_WAIT_POLICY=passive "${MEDPIPE:-build/medpipe}" bench unet --patch "$p" --batch 2 --steps "$steps" --threads 2 \
    --torch "${torch:-none}" || echo "benchmark unet $p failed"
done
