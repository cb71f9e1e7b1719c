#!/bin/sh
# Installs the Debian packages medpipe needs for one purpose, only when some
# are missing. Usage: scripts/deps.sh build|test|fuzz|all
# All output goes to stderr so the Makefile can call it from $(shell).
set -u
exec 1>&2

build_pkgs="pkg-config zlib1g-dev libdeflate-dev libcjson-dev libdnnl-dev libjpeg62-turbo-dev libcharls-dev libopenjp2-7-dev libopenmpi-dev openmpi-bin"
test_pkgs="python3 python3-numpy python3-scipy python3-nibabel python3-pydicom dcmtk libgdcm-tools dicom3tools dcm2niix grokj2k-tools pvrg-jpeg"
fuzz_pkgs="clang libclang-rt-14-dev"

case "${1:-build}" in
  build) want="$build_pkgs" ;;
  test)  want="$build_pkgs $test_pkgs" ;;
  fuzz)  want="$build_pkgs $fuzz_pkgs" ;;
  all)   want="$build_pkgs $test_pkgs $fuzz_pkgs" ;;
  *) echo "usage: $0 build|test|fuzz|all"; exit 2 ;;
esac

missing=""
for p in $want; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

echo "medpipe deps: installing missing Debian packages:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "medpipe deps: missing packages:$missing"
    echo "medpipe deps: not root and no sudo; install them with: apt-get install$missing"
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -q >/tmp/medpipe-apt-update.log 2>&1; then
  echo "medpipe deps: 'apt-get update' failed (see /tmp/medpipe-apt-update.log); trying the install anyway"
fi
if ! $SUDO apt-get install -y -q --no-install-recommends $missing >/tmp/medpipe-apt-install.log 2>&1; then
  tail -n 20 /tmp/medpipe-apt-install.log
  echo "medpipe deps: could not install:$missing (log: /tmp/medpipe-apt-install.log)"
  exit 1
fi
echo "medpipe deps: installed$missing"
