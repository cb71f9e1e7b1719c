#!/bin/sh
# Builds the DICOM developer tool against build/libmedpipe.a (run `make` first).
set -e
cd "$(dirname "$0")/.."
gcc -std=c11 -O1 -g -Wall -Wextra -D_GNU_SOURCE -Iinclude -Isrc dev/dicomtool.c build/libmedpipe.a \
  -lz -ldeflate -ljpeg -lcharls -lopenjp2 -lcjson $(test -f /usr/include/oneapi/dnnl/dnnl.h && echo -ldnnl) \
  -lm -pthread -o build/dicomtool
