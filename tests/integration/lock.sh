#!/usr/bin/env bash
# One run at a time in a run directory: a second run into a directory in use
# exits 2 naming the holder, on every rank; the lock of a killed run is taken
# over, and the resumed run writes each step once. Usage: lock.sh BUILD_DIR SOURCE_DIR
# The first run is long by construction (fault.step_delay: its 200 steps last
# at least 10 s on any machine); the second starts once its first checkpoint exists.
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
deck=(inputs/dense.ini --model.d_model=32 --model.n_layers=2 --model.context=64 --eval.every=0 --eval.batches=1
      --checkpoint.every=20 --train.steps=200 --fault.step_delay=0.05 --run.log_every=20)
run() {  # run OUTPUT: a 2-rank run into $tmp/shared
  OMP_NUM_THREADS=1 timeout 600 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" run "${deck[@]}" \
    --run.out_dir="$tmp" --run.name=shared >"$1" 2>&1
}
dir=$tmp/shared

run "$tmp/first" &
job=$!
for _ in $(seq 3000); do
  [[ -f $dir/checkpoints/latest ]] && break
  sleep 0.1
done
if [[ ! -f $dir/checkpoints/latest ]]; then
  bad "the first run wrote no checkpoint" "$tmp/first"
  echo "$pass passed, $fail failed"
  exit 1
fi
holder=$(sed -n 's/^pid = //p' "$dir/lock")
[[ -n $holder ]] && grep -qx "host = $(hostname)" "$dir/lock" && ok "the running job holds $dir/lock (pid $holder)" \
  || bad "lock file contents" "$dir/lock"

# A second run into the same directory: exit 2 at once, naming the holder; the first one is left alone.
t0=$(date +%s)
run "$tmp/second"; code=$?
dt=$(($(date +%s) - t0))
if [[ $code -eq 2 ]] && grep -q "run directory $dir is in use by host $(hostname) pid $holder since " "$tmp/second" && ((dt < 60)); then
  ok "second run: exit 2 after ${dt}s naming pid $holder"
else
  bad "second run: exit $code after ${dt}s" "$tmp/second"
fi
[[ $(grep -c 'is in use by' "$tmp/second") -eq 1 ]] && ok "the refusal is printed once" || bad "refusal printed $(grep -c 'is in use by' "$tmp/second") times" "$tmp/second"
kill -0 "$job" 2>/dev/null && ok "the first run is still running" || bad "the first run ended before the check (inconclusive)" "$tmp/first"

# kill -9 the first job (mpirun and its ranks): the lock file stays, its holder is gone.
pkill -KILL -f "run.out_dir=$tmp"
wait "$job"
for _ in $(seq 100); do kill -0 "$holder" 2>/dev/null || break; sleep 0.1; done  # until it is reaped
[[ -f $dir/lock ]] && ! kill -0 "$holder" 2>/dev/null && ok "a killed run leaves a stale lock" || bad "no stale lock after kill -9"

# The same command again: takes the stale lock over, resumes, finishes; every step once in metrics.jsonl.
run "$tmp/third"; code=$?
if [[ $code -eq 0 ]] && grep -q "taking over the stale lock of pid $holder" "$tmp/third" && grep -q "resumed from" "$tmp/third"; then
  ok "third run: took over the stale lock of pid $holder, resumed, exit 0"
else
  bad "third run: exit $code" "$tmp/third"
fi
steps=$(grep '"type":"train"' "$dir/metrics.jsonl" | sed -E 's/.*"step":([0-9]+).*/\1/')
if [[ $(echo "$steps" | sort -n | uniq | wc -l) -eq 200 && $(echo "$steps" | wc -l) -eq 200 && $(echo "$steps" | sort -n | head -1) -eq 1 ]] \
   && ! grep -qaP '\x00' "$dir/metrics.jsonl"; then
  ok "metrics.jsonl: train steps 1..200, each once"
else
  bad "metrics.jsonl: $(echo "$steps" | wc -l) train records, $(echo "$steps" | sort -n | uniq | wc -l) distinct" "$dir/metrics.jsonl"
fi
[[ ! -f $dir/lock ]] && ok "the lock is removed at the end" || bad "lock left after a finished run" "$dir/lock"
finish
