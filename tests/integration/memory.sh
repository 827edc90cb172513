#!/usr/bin/env bash
# The memory estimate per rank: printed by `dipaco topology` and at the start
# of `dipaco run`; within 30% of the peak resident memory a real run adds over
# the process itself, and of how much the peak grows from one deck to a larger
# one; a deck far too large is refused at once with the figure.
# Usage: memory.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np 1)
quick=(--train.steps=2 --eval.every=0 --eval.batches=1 --checkpoint.every=0 --run.out_dir="$tmp")

"$bin" topology inputs/dipaco-2x2.ini --ranks 4 >"$tmp/out" 2>&1
grep -qE '^memory per rank: about [0-9]+ MB \(params\+optimizer [0-9]+, activations [0-9]+, data [0-9]+' "$tmp/out" \
  && ok "topology prints the memory per rank" || bad "topology: no memory line" "$tmp/out"

# A model of about 3.3e12 weights: refused before anything is allocated or read.
t0=$(date +%s)
OMP_NUM_THREADS=1 timeout 300 "${mpi[@]}" "$bin" run inputs/dense.ini --model.d_model=65536 --model.n_layers=64 \
  "${quick[@]}" --run.name=huge >"$tmp/out" 2>&1
code=$? dt=$(($(date +%s) - t0))
if [[ $code -eq 2 ]] && grep -q "memory per rank: about [0-9]* MB (params+optimizer .* does not fit: 1 rank(s) on a node need" "$tmp/out" && ((dt < 60)); then
  ok "far too large deck: exit 2 after ${dt}s with the figure"
else
  bad "far too large deck: exit $code after ${dt}s" "$tmp/out"
fi

# Peak resident memory (VmHWM of the rank, as the run reports it) of real runs against the printed estimate. The
# process's own memory (libraries, MPI, thread pools) is taken from a tiny run and subtracted.
measure() {  # measure NAME OVERRIDES...: sets est (MB) and peak (MB)
  local name=$1
  shift
  OMP_NUM_THREADS=1 timeout 600 "${mpi[@]}" "$bin" run inputs/dense.ini "${quick[@]}" \
    --run.name="$name" "$@" >"$tmp/$name.out" 2>&1 || { bad "$name: run failed" "$tmp/$name.out"; return 1; }
  est=$(sed -nE 's/.*memory per rank: about ([0-9]+) MB.*/\1/p' "$tmp/$name.out" | head -1)
  # The run's own VmHWM (summary.json): /usr/bin/time's adds what the libraries touch at exit.
  peak=$($py -c "import json,sys; print(round(json.load(open(sys.argv[1]))['peak_rss_mb_per_rank']))" \
    "$tmp/$name/summary.json" 2>/dev/null || echo 0)
  [[ -n $est && $peak -gt 0 ]] || { bad "$name: no estimate or peak" "$tmp/$name.out"; return 1; }
}
# The process's own memory is only roughly the tiny run's peak minus its estimate: transient
# allocations (corpus, HDF5, evaluation) raise a tiny run's peak, and a larger run reuses
# their pages for its buffers. So the medium deck is checked against that base, and the step
# from the small deck to the medium one, where the base cancels, against the estimates' step.
if measure tiny --model.d_model=16 --model.n_layers=1 --model.context=16 --train.batch_size=2; then
  base=$((peak - est))
  echo "     process itself: $base MB (tiny run: peak $peak MB, estimate $est MB)"
  if measure small --model.d_model=128 --model.n_layers=4; then
    small_est=$est small_peak=$peak
    if measure medium --model.d_model=256 --model.n_layers=4 --model.context=256; then
      added=$((peak - base))
      if ((added * 10 >= est * 7 && added * 10 <= est * 13)); then
        ok "medium: estimate $est MB, measured $added MB above the process itself (peak $peak MB)"
      else
        bad "medium: estimate $est MB, measured $added MB above the process itself (peak $peak MB): off by more than 30%" "$tmp/medium.out"
      fi
      grew=$((peak - small_peak)) est_grew=$((est - small_est))
      if ((grew * 10 >= est_grew * 7 && grew * 10 <= est_grew * 13)); then
        ok "small -> medium: the estimate grows $est_grew MB, the peak $grew MB ($small_peak -> $peak MB)"
      else
        bad "small -> medium: the estimate grows $est_grew MB, the peak $grew MB: off by more than 30%" "$tmp/medium.out"
      fi
    fi
  fi
fi
finish
