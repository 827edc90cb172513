#!/usr/bin/env bash
# bf16 on a CPU without bf16 matmul instructions is emulated (fp32 matmuls on
# bf16-rounded operands) and slower than fp32: a run says so once at start-up,
# and says nothing where the instructions exist or in fp32.
# Usage: bf16-note.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bench=$build/tests/dipaco_bench
cd "$src"
source tests/integration/lib.sh
note="no bf16 matmul instructions"
small=(--d 64 --layers 2 --heads 2 --T 32 --B 2 --steps 1)

OMP_NUM_THREADS=1 "$bench" "${small[@]}" --bf16 >"$tmp/out" 2>&1 || bad "bf16 run failed"
said=$(grep -c "$note" "$tmp/out")
# What oneDNN itself reports decides: an AVX-512 bf16 / AMX matmul exists, or not.
if ONEDNN_VERBOSE=1 OMP_NUM_THREADS=1 "$bench" "${small[@]}" --bf16 2>/dev/null | grep -q "matmul.*src_bf16"; then
  want=0
else
  want=1
fi
if [[ $said -eq $want ]]; then ok "bf16 note said $said time(s) (native bf16 matmul: $((1 - want)))"
else bad "bf16 note said $said time(s), wanted $want"; fi

OMP_NUM_THREADS=1 "$bench" "${small[@]}" >"$tmp/out" 2>&1 || bad "fp32 run failed"
if grep -q "$note" "$tmp/out"; then bad "fp32 run printed the bf16 note"; else ok "fp32 run says nothing about bf16"; fi
finish
