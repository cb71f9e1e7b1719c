#!/bin/sh
# Runs every benchmark program and bench/*.py given the environment of `make bench`.
set -u
for b in "$@"; do echo "== $(basename "$b")"; "$b" || echo "benchmark $(basename "$b") failed"; done
for py in bench/bench_*.py; do
  [ -f "$py" ] || continue
  echo "== $(basename "$py")"; "${PYTHON:-/usr/bin/python3}" "$py" || echo "benchmark $py failed"
done
