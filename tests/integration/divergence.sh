#!/usr/bin/env bash
# Runs that diverge: a dense run that diverges goes back to its last good
# weights and skips ahead, said and counted, and finishes; one with a learning
# rate far too high keeps diverging and ends past train.diverge_limit with exit
# 5 and a message, no checkpoint after the divergence and no score of 0; a
# DiPaCo path whose loss turns NaN goes back to its anchors, is left out of its
# round, said once and counted, and the run finishes finite; a path that keeps
# diverging past train.diverge_limit, or a warm start that does, ends the job
# with exit 5, the last checkpoint finite.
# Usage: divergence.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mpi() { local np=$1; shift; mpirun --oversubscribe --bind-to none -np "$np" "$bin" "$@"; }
dense=(inputs/dense.ini --model.d_model=32 --model.n_layers=2 --model.context=64 --train.batch_size=4 --eval.batches=1
       --train.steps=60 --train.warmup=1 --eval.every=20 --run.out_dir="$tmp")
tiny=(inputs/dipaco-2x2.ini --model.d_model=32 --model.n_layers=2 --model.n_heads=2 --model.context=32
      --model.layers_per_level=1,1 --train.batch_size=4 --train.steps=30 --dipaco.inner_steps=10 --eval.every=10
      --eval.batches=1 --eval.doc_bytes=256 --checkpoint.every=10 --run.out_dir="$tmp")

no_zero_score() {  # no_zero_score RUN: no eval.json or summary.json scoring 0 (NaN summed to 0 once)
  ! grep -qs '"routed_val_bpb":0[,}]\|"val_bpb":0[,}]' "$tmp/$1/summary.json" "$tmp/$1/eval.json"
}

# 1. lr 10 and weight decay 10 (NaN from the weights' overflow): exit 5 on the step, no checkpoint.
check "dense NaN blow-up: exit 5 with the step and the value" 5 "training diverged at step [0-9]+: (loss|gradient norm) " -- \
  mpi 1 run "${dense[@]}" --train.lr=10 --train.weight_decay=10 --run.name=nan --checkpoint.every=1
at=$(grep -oE "diverged at step [0-9]+" "$tmp/out" | tail -1 | grep -oE "[0-9]+$")
last=$(sed -n 's/^ckpt-0*\([0-9]*\)\.h5$/\1/p' "$tmp/nan/checkpoints/latest" 2>/dev/null)
if [[ -n $at && -n $last && $last -lt $at ]] && no_zero_score nan; then
  ok "dense NaN blow-up: the last checkpoint (step $last) is before the divergence (step $at), no score of 0"
else bad "dense NaN blow-up: last checkpoint '$last', diverged at '$at'"; fi
check "dense NaN blow-up: the last checkpoint evaluates finite" 0 "validation bits per byte [0-9]" -- \
  "$bin" evaluate "$tmp/nan/checkpoints/$(cat "$tmp/nan/checkpoints/latest")"

check "dense NaN blow-up, train.diverge_factor = 0: exit 5 on the first value that is not finite" 5 \
  "diverged at step [0-9]+: (loss|gradient norm) (nan|inf)" -- \
  mpi 1 run "${dense[@]}" --train.lr=10 --train.weight_decay=10 --train.diverge_factor=0 --run.name=nan0

# A dense run that diverges twice (NaN losses at steps 15 and 33, 2 ranks): back to its last good weights each time.
check "dense run diverging twice: finishes" 0 "^done: 60 steps" -- \
  mpi 2 run "${dense[@]}" --run.name=back --fault.diverge_path=0 --fault.diverge_steps=15,33 --checkpoint.every=10
[[ $(grep -c "back to its last good weights" "$tmp/out") == 2 ]] && grep -q "diverged at step 15: loss nan; back to its last good weights (step 10" "$tmp/out" &&
  grep -q '"rolled_back":2' "$tmp/back/summary.json" && no_zero_score back &&
  ok "dense run diverging twice: back to step 10's and step 30's weights, said once each, counted in summary.json" ||
  bad "dense run diverging twice: what was said or counted"

# 2. lr 10 alone (a finite blow-up, val bpb 90 once): above train.diverge_factor x the running mean.
check "dense finite blow-up: exit 5" 5 "diverged at step [0-9]+: loss [0-9.]+ above 4 x its running mean" -- \
  mpi 1 run "${dense[@]}" --train.lr=10 --run.name=finite
no_zero_score finite && ok "dense finite blow-up: no score of 0" || bad "dense finite blow-up: a score of 0"

# 3. One DiPaCo path's loss NaN at step 7: reset, left out of round 0, said once, counted; the run finishes.
check "DiPaCo path diverges once: finishes" 0 "routed validation: [0-9]" -- \
  mpi 2 run "${tiny[@]}" --fault.diverge_path=1 --fault.diverge_steps=7 --run.name=once
n=$(grep -c "diverged" "$tmp/out")
said=$(grep -c "^path 1 diverged at step 7: loss nan; back to its anchors, the batch skipped, left out of outer round 0$" "$tmp/out")
[[ $n == 1 && $said == 1 ]] && ok "DiPaCo path diverges once: said once with path, step and value" || bad "said $said of $n lines"
if grep -q '"round":0,.*"diverged":1' "$tmp/once/metrics.jsonl" && grep -q '"round":1,.*"diverged":0' "$tmp/once/metrics.jsonl" &&
   grep -q '"diverged_contributions":1' "$tmp/once/summary.json" && grep -qE '"routed_val_bpb":[1-9]' "$tmp/once/summary.json"; then
  ok "DiPaCo path diverges once: counted in metrics.jsonl and summary.json, routed bpb finite"
else bad "DiPaCo path diverges once: counts" "$tmp/once/metrics.jsonl"; fi
check "DiPaCo path diverges once: its checkpoint evaluates finite" 0 "validation bits per byte [0-9]" -- \
  "$bin" evaluate "$tmp/once/checkpoints/ckpt-00000030.h5" --path 1

# 4. The same path again and again: past train.diverge_limit = 2 the job ends at the round, exit 5.
check "DiPaCo path past the limit: exit 5" 5 "path 1 diverged 4 times by step 20 \(train.diverge_limit = 2\)" -- \
  mpi 2 run "${tiny[@]}" --fault.diverge_path=1 --fault.diverge_steps=3,7,12,17 --train.diverge_limit=2 --run.name=limit
if [[ $(cat "$tmp/limit/checkpoints/latest" 2>/dev/null) == ckpt-00000010.h5 ]] && no_zero_score limit; then
  ok "DiPaCo path past the limit: the last checkpoint is step 10's"
else bad "DiPaCo path past the limit: checkpoints" ; fi
check "DiPaCo path past the limit: step 10's checkpoint evaluates finite" 0 "validation bits per byte [0-9]" -- \
  "$bin" evaluate "$tmp/limit/checkpoints/ckpt-00000010.h5" --path 1

# 5. Every path at lr 10: each diverges, is reset, and the job ends past the limit instead of finishing on garbage.
check "DiPaCo at lr 10: exit 5" 5 "diverged [0-9]+ times by step" -- mpi 2 run "${tiny[@]}" --train.lr=10 --run.name=all

# 6. A warm start that keeps diverging: back to its last good weights each time, then exit 5 past the limit.
check "warm start diverges: exit 5" 5 "the warm start diverged at step [0-9]+" -- \
  mpi 2 run "${tiny[@]}" --route.warm_steps=20 --train.lr=10 --train.weight_decay=10 --run.name=warm

finish
