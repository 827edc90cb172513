#!/usr/bin/env bash
# A full disk, on a real small file system (a 6 MB tmpfs filled to a few KB):
# training stops at once naming what survives; a checkpoint that cannot fit is
# refused before it is written; a warm start or shard file that cannot be
# written stops every rank with exit 1, the file named, no .tmp left, and the
# next run goes on from what is kept. Mounting needs root: without it the test
# exits 77 (ctest: skipped). Usage: full_disk.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
small=$tmp/small
at_exit() { umount "$small" 2>/dev/null; }
mkdir -p "$small"
if ! mount -t tmpfs -o size=6m tmpfs "$small" 2>/dev/null; then
  echo "skip: mounting a tmpfs needs root"
  exit 77
fi
mpirun=(timeout -k 5 120 mpirun --allow-run-as-root --oversubscribe --bind-to none)
tiny=(--model.d_model=32 --model.n_layers=2 --model.context=64 --eval.every=0 --eval.batches=1 --run.log_every=10)
run() {  # run NP OUT_DIR NAME [overrides...]: the dense deck
  local np=$1 out=$2 name=$3
  shift 3
  env OMP_NUM_THREADS=1 "${mpirun[@]}" -np "$np" "$bin" run inputs/dense.ini "${tiny[@]}" --run.out_dir="$out" --run.name="$name" "$@"
}
fill() {  # fill KB: leave about KB kilobytes free
  rm -f "$small/filler"
  local free; free=$(df -k --output=avail "$small" | tail -1)
  dd if=/dev/zero of="$small/filler" bs=1k count=$((free - $1)) status=none
}

# WHAT FILE FAILED AGAIN ARGS...: a 2-rank run whose FILE cannot be written on the
# full disk stops with exit 1 (FAILED) and leaves neither FILE nor a .tmp; with
# room again the same command goes on (AGAIN).
full_then_room() {
  local what=$1 file=$2 failed=$3 again=$4
  shift 4
  check "a $what that does not fit: every rank stops, the file named" 1 "$failed" -- \
    env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$bin" run "$@"
  [[ -z $(find "$small" -name '*.tmp') && ! -e $file ]] && ok "  ... no .tmp and no $what left" ||
    bad "  ... files left" <(find "$small")
  rm -f "$small/filler"
  check "  ... room again: the next run goes on" 0 "$again" -- env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$bin" run "$@"
}

fill 48
check "a full disk while training stops at once" 1 "cannot write metrics file .*No space left on device.*no checkpoint exists yet" -- \
  run 1 "$small" full --train.steps=1000000 --data.store="$tmp/store-full"
rm -rf "$small/full"
fill 200
check "a checkpoint that does not fit: the space check names what exists" 1 \
  "not enough space for checkpoint .*no checkpoint exists yet" -- run 1 "$small" nofit --train.steps=20 \
  --data.store="$tmp/store-nofit"
rm -rf "$small/nofit"

# The warm start written to the full disk (a shared one, route.warm_start), the run on a roomy one.
fill 48
two=(inputs/dipaco-2x2.ini "${tiny[@]}" --model.layers_per_level=1,1 --model.n_heads=2 --route.warm_steps=4
     --train.steps=4 --dipaco.inner_steps=2 --route.method=hash --run.out_dir="$tmp/runs" --run.name=warm
     --route.warm_start="$small/shared/warmstart.h5")
full_then_room "warm start" "$small/shared/warmstart.h5" \
  "writing the warm start $small/shared/warmstart.h5 failed: .*its checkpoints in .*warmstart are kept" \
  "stage warm start: .*resumed from|stage route" "${two[@]}"
[[ -f $small/shared/warmstart.h5 ]] && ok "  ... the warm start is there" || bad "  ... no warm start written"

# The shard file on the full disk (60,000 short documents: a larger file than the
# warm start's checkpoint), the store and the warm start elsewhere. Two ranks route
# by k-means: rank 0 writes the other's lists as they arrive, and a failed write
# must still take them, or that rank would wait.
/usr/bin/python3 - "$tmp/many.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(60000):
        f.write(json.dumps({"id": f"doc-{i:06d}", "domain": "abc"[i % 3], "text": f"text number {i} " * (3 + i % 5)}) + "\n")
PY
rm -rf "$small/shared" "$small/filler"
fill 1000
shards=(inputs/dipaco-2x2.ini "${tiny[@]}" --model.layers_per_level=1,1 --model.n_heads=2 --route.warm_steps=4
        --train.steps=4 --dipaco.inner_steps=2 --route.method=kmeans --run.out_dir="$small" --run.name=shards
        --data.corpus="$tmp/many.jsonl" --data.store="$tmp/store-many" --route.warm_start="$tmp/warm-many.h5")
full_then_room "shard file" "$small/shards/shards.h5" \
  "writing the shard file $small/shards/shards.h5 failed: .*the next run routes again" "stage route: kmeans .*shards.h5" \
  "${shards[@]}"
umount "$small"
finish
