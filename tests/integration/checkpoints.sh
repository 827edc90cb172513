#!/usr/bin/env bash
# Checkpoints end to end: a fresh start moves earlier checkpoints aside and
# rotation never deletes the one just written; a file-size limit stops the run
# at once with what survives named (a full disk: full_disk.sh).
# Usage: checkpoints.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
# A bound on every run, so that a run that hangs or never stops fails its check.
mpirun=(timeout -k 5 120 mpirun --allow-run-as-root --oversubscribe --bind-to none)
tiny=(inputs/dense.ini --model.d_model=32 --model.n_layers=2 --model.context=64 --eval.every=0 --eval.batches=1
      --run.log_every=10)
run() {  # run NP OUT_DIR NAME [overrides...]
  local np=$1 out=$2 name=$3
  shift 3
  env OMP_NUM_THREADS=1 "${mpirun[@]}" -np "$np" "$bin" run "${tiny[@]}" --run.out_dir="$out" --run.name="$name" "$@"
}
latest() { local f; f=$(cat "$1/latest") && [[ -f $1/$f ]] && echo "latest: $f"; }  # latest CKPT_DIR: what it names, if it exists

# 1. A fresh start below higher-numbered checkpoints (restart=never in a
# finished run): they move aside, and the new run's own checkpoints survive.
r=$tmp/runs/rot
check "a run to step 40" 0 "checkpoint step 40" -- run 1 "$tmp/runs" rot --train.steps=40 --checkpoint.every=20
check "restart=never moves the old checkpoints aside" 0 "run.restart = never: earlier checkpoints moved to $r/checkpoints.stale" -- \
  run 1 "$tmp/runs" rot --train.steps=30 --checkpoint.every=10 --checkpoint.keep=1 --run.restart=never
check "  ... latest names its final checkpoint, which exists" 0 "^latest: ckpt-00000030.h5$" -- latest "$r/checkpoints"
check "  ... only that one is left" 0 "^ckpt-00000030.h5 latest $" -- bash -c "ls '$r/checkpoints' | tr '\n' ' '"
check "  ... the old ones are in checkpoints.stale/" 0 "ckpt-00000020.h5 ckpt-00000040.h5" -- bash -c "ls '$r/checkpoints.stale' | tr '\n' ' '"
check "a plain run is up to date at the new step" 0 "stage train: up to date \(.*ckpt-00000030.h5 at step 30\)" -- \
  run 1 "$tmp/runs" rot --train.steps=30 --checkpoint.every=10 --checkpoint.keep=1
# As an older dipaco left it: its stamps lack a key added since (at its default). Nothing is redone.
sed -i '/^route.segment_window = 0$/d' "$r/train.stamp" "$r/eval.stamp"
check "  ... and with stamps from before a key was added (at its default)" 0 \
  "stage train: up to date \(.*ckpt-00000030.h5 at step 30\)" -- \
  run 1 "$tmp/runs" rot --train.steps=30 --checkpoint.every=10 --checkpoint.keep=1
check "  ... its evaluation too" 0 "stage evaluate: up to date" -- \
  run 1 "$tmp/runs" rot --train.steps=30 --checkpoint.every=10 --checkpoint.keep=1

# Every checkpoint corrupt: the run starts fresh, and what it writes is what the next one resumes from.
r=$tmp/runs/corrupt
check "a run with two checkpoints" 0 "checkpoint step 40" -- run 1 "$tmp/runs" corrupt --train.steps=40 --checkpoint.every=20
truncate -s 1000 "$r"/checkpoints/ckpt-*.h5
check "every checkpoint corrupt: starts fresh, moves them aside" 3 "no usable checkpoint: earlier checkpoints moved to $r/checkpoints.stale" -- \
  run 1 "$tmp/runs" corrupt --train.steps=40 --checkpoint.every=20 --checkpoint.keep=1 --run.stop_after=20
check "  ... its checkpoint is the latest" 0 "^latest: ckpt-00000020.h5$" -- latest "$r/checkpoints"
check "the next run resumes from it" 0 "resumed from .*ckpt-00000020.h5 at step 20 of 40" -- \
  run 1 "$tmp/runs" corrupt --train.steps=40 --checkpoint.every=20 --checkpoint.keep=1

# A corrupt newest checkpoint is skipped and set aside, so that rotation keeps the verified one it resumed from.
r=$tmp/runs/rotc
check "a run stopped at step 35 keeps ckpt-30 and ckpt-35" 3 "checkpoint step 35" -- \
  run 1 "$tmp/runs" rotc --train.steps=40 --checkpoint.every=10 --checkpoint.keep=2 --run.stop_after=35
truncate -s 1000 "$r/checkpoints/ckpt-00000035.h5"
check "the corrupt one is skipped with its reason and moved aside" 0 \
  "skipping checkpoint .*ckpt-00000035.h5: .*; moved to .*ckpt-00000035.h5.corrupt" -- \
  run 1 "$tmp/runs" rotc --train.steps=40 --checkpoint.every=10 --checkpoint.keep=2
check "  ... rotation kept the verified ckpt-30 beside the new ckpt-40" 0 \
  "^ckpt-00000030.h5 ckpt-00000035.h5.corrupt ckpt-00000040.h5 latest $" -- bash -c "ls '$r/checkpoints' | tr '\n' ' '"

# 2. A full disk: full_disk.sh (it needs root for a tmpfs, and is skipped without).

# 3. A write that fails inside a parallel checkpoint (a file-size limit on
# each rank, below the checkpoint's size; the space check passes): exit 1,
# the previous checkpoint intact, no .tmp left, and the next run resumes.
r=$tmp/runs/fsize
two=(inputs/dipaco-2x2.ini --model.d_model=32 --model.context=64 --eval.every=0 --eval.batches=1 --dipaco.inner_steps=10
     --train.steps=40 --run.out_dir="$tmp/runs" --run.name=fsize)
limited() {  # limited KB: a 2-rank run, each rank under ulimit -f KB (mpirun itself is not limited)
  env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 bash -c 'ulimit -f $0; exec "$@"' "$1" "$bin" run "${two[@]}"
}
check "a 2x2 run on 2 ranks stops at step 20" 3 "checkpoint step 20" -- \
  env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$bin" run "${two[@]}" --run.stop_after=20
kb=$(( $(stat -c %s "$r/checkpoints/ckpt-00000020.h5") / 1024 ))
for limit in $((kb / 2)) $((kb + 4)); do  # a data write fails; the data fits, the room for the whole file does not
  check "ulimit -f $limit KB: the checkpoint at step 40 fails cleanly" 1 \
    "error: writing checkpoint '.*ckpt-00000040.h5' failed: .*the previous checkpoint $r/checkpoints/ckpt-00000020.h5 is intact" -- \
    limited "$limit"
  check "  ... no .tmp left, latest unchanged" 0 "^ckpt-00000020.h5 latest $" -- bash -c "ls '$r/checkpoints' | tr '\n' ' '"
done
check "  ... and the next run resumes from it" 0 "resumed from .*ckpt-00000020.h5 at step 20 of 40" -- \
  env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$bin" run "${two[@]}"
# Only rank 1 limited: the checkpoint is abandoned on every rank, and rank 0's run lock goes with the job.
rm -rf "$r"
check "ulimit -f on rank 1 alone: the first checkpoint fails cleanly" 1 "error: writing checkpoint '.*ckpt-00000020.h5' failed" -- \
  env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 bash -c 'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then ulimit -f 64; fi; exec "$@"' x \
  "$bin" run "${two[@]}" --checkpoint.every=20
[[ -d $r && ! -e $r/lock ]] && ok "  ... and leaves no run lock behind" || bad "  ... the run lock was left" <(ls -la "$r")

finish
