#!/bin/sh
# Builds the developer tools against build/libmedpipe.a (run `make` first).
set -e
cd "$(dirname "$0")/.."
gcc -std=c11 -O1 -g -Wall -Wextra -D_GNU_SOURCE -Iinclude -Isrc dev/dicomtool.c build/libmedpipe.a \
  -lz -ldeflate -ljpeg -lcharls -lopenjp2 -lcjson $(test -f /usr/include/oneapi/dnnl/dnnl.h && echo -ldnnl) \
  -lm -pthread -o build/dicomtool
# The single-convolution timer (dev/convbench.c).
gcc -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -DMP_HAVE_DNNL=1 -Iinclude -Isrc dev/convbench.c build/libmedpipe.a \
  -ldnnl -lm -pthread -o build/convbench
# The data-parallel timer (dev/distbench.c; run it under mpirun).
if command -v mpicc >/dev/null 2>&1; then
  gcc -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE $(mpicc --showme:compile) -Iinclude -Isrc dev/distbench.c \
    build/libmedpipe.a $(mpicc --showme:link) -lz -ldeflate -ljpeg -lcharls -lopenjp2 -lcjson \
    $(test -f /usr/include/oneapi/dnnl/dnnl.h && echo -ldnnl) -lm -pthread -o build/distbench
fi
# Where the U-Net's arena goes (dev/arenamap.c) and the instance-norm kernel timer (dev/inormbench.c).
gcc -std=c11 -O1 -g -Wall -Wextra -D_GNU_SOURCE -DMP_HAVE_DNNL=1 -Iinclude -Isrc dev/arenamap.c build/libmedpipe.a \
  -ldnnl -lz -ldeflate -ljpeg -lcharls -lopenjp2 -lcjson -lm -pthread -o build/arenamap
gcc -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -DMP_HAVE_DNNL=1 -Iinclude -Isrc dev/inormbench.c build/libmedpipe.a \
  -ldnnl -lm -pthread -o build/inormbench
