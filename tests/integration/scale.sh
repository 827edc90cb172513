#!/usr/bin/env bash
# 256 paths (16x16, a tiny model) at 4 and 64 ranks, oversubscribed: each
# run stops half-way and resumes, and the final checkpoints hold the same
# bytes in every floating-point dataset at every rank count.
# Usage: scale.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
cd "$src"
source tests/integration/lib.sh
export DIPACO_BIN=$build/dipaco OMP_NUM_THREADS=1
check "256 paths at 4 and 64 ranks give bitwise-equal checkpoints" 0 "^bitwise: the [0-9]+ floating-point datasets" -- \
  /usr/bin/python3 scripts/scale --ranks 4,64 --steps 8 --bitwise --out "$tmp/scale"
grep "^|" "$tmp/out"  # the scale table, for the log
finish
