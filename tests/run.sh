#!/bin/sh
# Runs every test program given on the command line and every tests/py/test_*.py
# (with the Debian python that has nibabel/scipy), adds up their
# "N passed, N failed" lines and prints the total last. Exit 1 if any failed.
# Environment: MEDPIPE (the command), BUILD (build dir), PYTHON.
set -u
total_pass=0
total_fail=0
failed_progs=""
log_dir="${BUILD:-build}/test-logs"
mkdir -p "$log_dir"

run_one() {
  name=$1; shift
  log="$log_dir/$name.log"
  start=$(date +%s)
  "$@" >"$log" 2>&1
  rc=$?
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    p=0; f=1
    echo "  $name: no summary line (exit $rc)"
  else
    p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; echo "  $name: exit $rc"; fi
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  printf '%-28s %4s passed, %s failed  (%ss)\n' "$name" "$p" "$f" "$(( $(date +%s) - start ))"
  if [ "$f" != 0 ]; then
    failed_progs="$failed_progs $name"
    grep -E 'FAIL|error|Error|Traceback|ERROR|Sanitizer' "$log" | head -n 30 | sed 's/^/    /'
  fi
}

for t in "$@"; do
  run_one "$(basename "$t")" "$t"
done
for py in tests/py/test_*.py; do
  [ -f "$py" ] || continue
  run_one "$(basename "$py")" "${PYTHON:-/usr/bin/python3}" "$py"
done

[ -n "$failed_progs" ] && echo "failed:$failed_progs (logs in $log_dir)"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
