#!/bin/sh
# Runs each fuzz target for a few seconds from its seed corpus (fuzz/corpus/NAME)
# under ASan+UBSan. Usage: fuzz/smoke.sh SECONDS BIN...
set -u
secs=$1; shift
fails=0
passed=0
for bin in "$@"; do
  name=$(basename "$bin")
  seeds="fuzz/corpus/${name#fuzz_}"
  work="${TMPDIR:-/tmp}/medpipe-fuzz-$name"
  rm -rf "$work"; mkdir -p "$work"
  [ -d "$seeds" ] && cp -r "$seeds"/. "$work"/ 2>/dev/null
  if "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
       -print_final_stats=0 "$work" >"$work.log" 2>&1; then
    echo "fuzz $name: ok ($(grep -c . "$work.log") log lines, ${secs}s)"
    passed=$((passed + 1))
  else
    echo "fuzz $name: FAILED"; tail -n 40 "$work.log"; fails=$((fails + 1))
  fi
done
echo "$passed passed, $fails failed"
[ "$fails" = 0 ]
