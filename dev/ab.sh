#!/bin/sh
# Developer tool: interleaved A/B timing of `medpipe bench unet` under two
# environments, because this shared VM drifts by 20% between runs.
# Usage: sh dev/ab.sh "ENV_A" "ENV_B" [PAIRS] [bench args...]
# e.g.   sh dev/ab.sh "MEDPIPE_NO_HUGEPAGES=1" "" 3 --patch 64 --steps 2
a=$1 b=$2 pairs=${3:-3}
shift 3 2>/dev/null || shift $#
i=0
while [ $i -lt "$pairs" ]; do
  for e in "$a" "$b"; do
    line=$(env $e OMP_WAIT_POLICY=passive build/medpipe bench unet --torch none "$@" 2>&1 | tail -1)
    echo "[$e] $line" | sed 's/"patch".*"fma_peak_gflops"/... "fma_peak_gflops"/'
  done
  i=$((i + 1))
done
