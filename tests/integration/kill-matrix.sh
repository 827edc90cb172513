#!/usr/bin/env bash
# The kill matrix: SIGKILL of one rank, and of mpirun, and SIGSTOP of a rank
# (a hung peer: the job must end with exit 4), at each phase of a run
# (warm start, routing, the middle of an outer round, an outer round's
# all-reduce, a checkpoint write, an evaluation). Each time the same command
# (without the fault.* keys) resumes and finishes with weights, optimizer
# state and step bitwise equal to an uninterrupted run's final checkpoint.
# The kill is placed by fault.kill_at (a named point reached N times), so it
# lands at the same place on a slow and a fast machine.
# Usage: kill-matrix.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
# Two paths on two ranks: a warm start, k-means routing, outer rounds every 10
# steps, checkpoints every 10, evaluations every 20.
deck=(inputs/dense.ini --model.d_model=32 --model.n_layers=2 --model.context=64 --train.steps=40
      --dipaco.modules_per_level=2 --dipaco.inner_steps=10 --route.method=kmeans --route.warm_steps=20
      --checkpoint.every=10 --eval.every=20 --eval.batches=1 --run.log_every=10 --run.collective_timeout=5)
run() {  # run NAME [extra keys...]: the 2-rank job in the foreground
  local name=$1
  shift
  OMP_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" run "${deck[@]}" \
    --run.out_dir="$tmp" --run.name="$name" "$@" >"$tmp/out" 2>&1
}
final=checkpoints/ckpt-00000040.h5

run reference
[[ $? -eq 0 && -f $tmp/reference/$final ]] && ok "uninterrupted run" || { bad "uninterrupted run"; exit 1; }

for target in rank mpirun stop; do
  for at in warm_start:15 route:1 inner:15 outer_allreduce:3 checkpoint:2 eval:4; do
    name=${target}-${at%%:*}
    run "$name" --fault.kill_at="$at" --fault.kill_rank=1 --fault.kill_target="$target"
    code=$?
    # With mpirun gone nobody ends the other rank: do what the scheduler would.
    pkill -KILL -f "run.name=$name" 2>/dev/null
    grep -q "fault: rank 1 at ${at%%:*}" "$tmp/out" || { bad "$name: the fault did not fire (exit $code)"; continue; }
    [[ $code -ne 0 ]] || { bad "$name: exit 0 after a kill"; continue; }
    # A stopped rank: its peer's watchdog ends the job with exit 4 (every blocking collective is watched).
    if [[ $target == stop ]] && ! { [[ $code -eq 4 ]] && grep -q "a peer rank died or stopped responding" "$tmp/out"; }; then
      bad "$name: exit $code, wanted 4 with the watchdog's message"; continue
    fi
    run "$name"
    code=$?
    if [[ $code -ne 0 ]]; then bad "$name: resume exited $code"; continue; fi
    if cmp=$(tests/integration/same-weights.py "$tmp/reference/$final" "$tmp/$name/$final" 2>&1); then
      what=$([[ $target == stop ]] && echo "SIGSTOP of rank 1" || echo "SIGKILL of $target")
      ok "$what at $at: resumed ($(grep -oE 'resumed from [^ ]+ at step [0-9]+|stage train: [0-9]+ steps' "$tmp/out" | head -1 | sed 's|.*/||')), $cmp"
    else
      bad "$target at $at: final weights $cmp"
    fi
  done
done
# A job time limit shorter than the whole run (run.max_hours = 0.3 s, steps
# that last 0.05 s each): every session stops with a checkpoint after at least
# one chunk of 10 steps (exit 3), in the warm start too, and the same command
# run again until it exits 0 ends on the uninterrupted run's weights.
sessions=0 codes= warm_resumed=0
while ((sessions < 12)); do
  run requeued --run.max_hours=0.0000833 --fault.step_delay=0.05
  code=$?
  sessions=$((sessions + 1)) codes+="$code "
  grep -q "stage warm start: .*resumed from .*warmstart/checkpoints/ckpt-" "$tmp/out" && warm_resumed=1
  [[ $code -eq 3 ]] || break
done
if [[ $code -eq 0 ]] && ((sessions > 2 && warm_resumed)) && cmp=$(tests/integration/same-weights.py "$tmp/reference/$final" "$tmp/requeued/$final" 2>&1); then
  ok "a time limit shorter than the run: $sessions sessions (exits $codes), the warm start resumed, $cmp"
else
  bad "time limit: $sessions sessions, exits $codes, ${cmp:-}"
fi
finish
