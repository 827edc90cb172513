#!/usr/bin/env bash
# Between two outer rounds a rank talks only to the ranks of its own path: no
# world and no module collective, counted through the MPI profiling interface
# (collective_count.c, preloaded) at np 2 and 4, replica modes data and diloco.
# Evaluations (every 5 steps) and progress lines (every 2) fall inside rounds of 10.
# Usage: collectives.sh BUILD_DIR SOURCE_DIR
set -u
build=$(realpath "$1") src=$(realpath "$2")
. "$src/tests/integration/lib.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
lib=$build/tests/libdipaco_collective_count.so
[[ -f $lib ]] || { echo "FAIL $lib is not built"; exit 1; }
cd "$src"

tiny=(--model.d_model=32 --model.n_layers=2 --model.n_heads=2 --model.context=32 --model.layers_per_level=1,1
      --train.batch_size=4 --train.steps=40 --dipaco.inner_steps=10 --run.log_every=2 --eval.every=5
      --eval.batches=1 --eval.doc_bytes=256 --route.warm_steps=0 --route.method=hash --checkpoint.every=20)

count() {  # count NAME NP MODULES REPLICA_MODE: run, then sum the ranks' counts into $tmp/$name.sum
  local name=$1 np=$2 modules=$3 mode=$4
  mkdir -p "$tmp/$name"
  mpirun -np "$np" --oversubscribe --bind-to none -x LD_PRELOAD="$lib" -x DIPACO_COLLECTIVES_DIR="$tmp/$name" \
    "$build/dipaco" run inputs/dipaco-2x2.ini "${tiny[@]}" --dipaco.modules_per_level="$modules" \
    --dipaco.replica_mode="$mode" --run.out_dir="$tmp" --run.name="$name" >"$tmp/out" 2>&1 || { bad "$name: the run failed"; return 1; }
  cat "$tmp/$name"/rank-*.txt | awk '{ if ($1 == "stretches") s += $2; else n[$1 " " $2] += $3 }
    END { print "stretches", s; for (k in n) print k, n[k] }' >"$tmp/$name.sum"
}
get() { awk -v k="$2" '$0 ~ "^"k" " { print $NF }' "$tmp/$1.sum"; }

for c in "np2-4paths 2 2,2 data" "np4-4paths 4 2,2 data" "np4-2paths-data 4 2,1 data" "np4-2paths-diloco 4 2,1 diloco"; do
  set -- $c
  count "$1" "$2" "$3" "$4" || continue
  w=$(get "$1" "between world") m=$(get "$1" "between module") s=$(get "$1" "stretches") bw=$(get "$1" "boundary world")
  if [[ $w == 0 && $m == 0 && ${s:-0} -ge 4 && ${bw:-0} -gt 0 ]]; then
    ok "$1: 0 world and 0 module collectives in $s stretches between rounds ($bw world collectives at boundaries)"
  else bad "$1: between rounds world $w, module $m; stretches $s; at boundaries world $bw" "$tmp/$1.sum"; fi
done
# Data-parallel paths all-reduce their gradients every step, inside the round: the counter sees them.
p=$(get np4-2paths-data "between path")
if [[ ${p:-0} -ge 30 ]]; then ok "data mode: $p path all-reduces between rounds (one per step and rank)"
else bad "data mode: $p path collectives between rounds, expected one per inner step" "$tmp/np4-2paths-data.sum"; fi

# Compressed outer gradients: the bytes a rank reports sending (summary.json) are the
# bytes it handed to MPI's point-to-point sends on module communicators, counted by the
# profiling library, and an int8 round sends about half of what bf16 does (1 byte a value and a scale per 128).
for dt in int8 bf16; do
  mkdir -p "$tmp/ring-$dt"
  mpirun -np 4 --oversubscribe --bind-to none -x LD_PRELOAD="$lib" -x DIPACO_COLLECTIVES_DIR="$tmp/ring-$dt" \
    "$build/dipaco" run inputs/dipaco-2x2.ini "${tiny[@]}" --dipaco.outer_dtype=$dt --run.out_dir="$tmp" \
    --run.name="ring-$dt" >"$tmp/out" 2>&1 || bad "ring $dt: the run failed"
done
counted=$(awk '$1 == "module_sent_bytes" { print $2 }' "$tmp/ring-int8/rank-0.txt")
reported=$(grep -oE '"sync_bytes_per_rank":[0-9.e+]+' "$tmp/ring-int8/summary.json" | cut -d: -f2)
bf=$(grep -oE '"sync_bytes_per_rank":[0-9.e+]+' "$tmp/ring-bf16/summary.json" | cut -d: -f2)
if [[ -n $counted && $counted -gt 0 ]] && awk -v c="$counted" -v r="$reported" -v b="$bf" 'BEGIN { exit !(c == r && r < 0.53 * b && r > 0.5 * b) }'; then
  ok "int8 ring: rank 0 reports $reported bytes sent, MPI counted $counted (bf16: $bf)"
else bad "int8 ring: reported '$reported' bytes, MPI counted '$counted', bf16 '$bf'"; fi

# A stop between rounds does not wait for the round boundary (step 1000 here): the
# ranks agree without blocking (dist/stop_agreement.hpp) and stop within a few steps.
mpirun -np 2 --oversubscribe --bind-to none "$build/dipaco" run inputs/dipaco-2x2.ini "${tiny[@]}" \
  --train.steps=3000 --dipaco.inner_steps=1000 --checkpoint.every=0 --eval.every=0 --fault.step_delay=0.02 \
  --run.out_dir="$tmp" --run.name=stop >"$tmp/out" 2>&1 &
job=$!
for _ in $(seq 1200); do grep -q "^step *1[0-9]/" "$tmp/out" 2>/dev/null && break; sleep 0.1; done
kill -USR1 $job
wait $job; code=$?
at=$(grep -oE "stopped at step [0-9]+" "$tmp/out" | grep -oE "[0-9]+$")
if [[ $code -eq 3 && -n $at && $at -lt 1000 && -f $tmp/stop/checkpoints/latest ]]; then
  ok "SIGUSR1 mid-round: stopped at step $at with a checkpoint (the round boundary is step 1000), exit 3"
else bad "SIGUSR1 mid-round: exit $code, stopped at step '${at}'"; fi
finish
