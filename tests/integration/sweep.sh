#!/usr/bin/env bash
# A sweep without Slurm: make-sweep writes the points, run-sweep runs them here
# (and skips the finished ones when run again), collect-sweep tables them with
# the routed evaluation. Usage: sweep.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
cd "$src"
source tests/integration/lib.sh
export DIPACO_BIN=$build/dipaco OMP_NUM_THREADS=1

# Two points of a tiny routed 2x2 deck; both share one warm start in a folder no run has made.
check "make-sweep writes two points" 0 "point-1.ini" -- scripts/make-sweep inputs/quickstart.ini \
  --grid dipaco.outer_momentum=0,0.9 --set model.d_model=32 --set model.context=64 --set route.warm_steps=10 \
  --set route.prefix_tokens=16 --set train.steps=20 --set dipaco.inner_steps=10 --set eval.every=10 \
  --set eval.batches=1 --set eval.doc_bytes=128 --set route.warm_start="$tmp/shared/warm/ws.h5" -o "$tmp/sw"
check "run-sweep runs both points" 0 "point 1: validation bits per byte: [0-9.]+ .*routed: [0-9.]+" -- \
  scripts/run-sweep "$tmp/sw" --ranks 1
check "  ... the shared warm start was written where the deck names it" 0 "ws.h5" -- ls "$tmp/shared/warm"
check "  ... and skips them when run again" 0 "point 1 of 2: done before" -- scripts/run-sweep "$tmp/sw" --ranks 1
check "collect-sweep ranks the points by the routed evaluation" 0 "\| 1 \| 0.9 \| ok \| [0-9.]+ \| [*0-9.]+ \|" -- \
  scripts/collect-sweep "$tmp/sw"
check "  ... and the routed column is in results.csv" 0 "^point,status,dipaco.outer_momentum,val_bpb,routed_val_bpb," -- \
  cat "$tmp/sw/results.csv"
# Every boundary records each path's time since the last one (the island wall time of scripts/experiment).
check "round records carry each path's seconds" 0 '"type":"round".*"path_seconds":\[[0-9.e-]+,[0-9.e-]+,[0-9.e-]+,[0-9.e-]+\]' -- \
  cat "$tmp/sw/runs/point-0/metrics.jsonl"
check "a run without outer rounds" 0 "^done: 20 steps" -- mpirun --allow-run-as-root --oversubscribe --bind-to none -np 1 \
  "$DIPACO_BIN" run inputs/dense.ini --model.d_model=32 --model.context=64 --train.steps=20 --run.log_every=10 \
  --eval.every=0 --eval.batches=1 --eval.doc_bytes=128 --run.out_dir="$tmp/runs" --run.name=d
check "  ... records each path's seconds at its boundaries" 0 '"type":"boundary","step":20,"path_seconds":\[[0-9.e-]+\]' -- \
  cat "$tmp/runs/d/metrics.jsonl"
check "  ... every run.log_every steps" 0 '"type":"boundary","step":10,' -- cat "$tmp/runs/d/metrics.jsonl"
# The straggler benchmark on a tiny deck: each chunk's path times, which add up to the round's.
check "scripts/straggler tables a moving straggler against none" 0 "\| moving-straggler \| 2 \| 4 \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ \| [0-9.]+ s \|" -- \
  scripts/straggler --out "$tmp/st" --steps 20 --log-every 5 --moves 5 --factor 1.5 --set model.d_model=32 \
  --set model.context=32 --set train.batch_size=2 --set dipaco.inner_steps=10 --set eval.every=0 --set eval.batches=1 \
  --set eval.doc_bytes=64
check "  ... whose chunk times add up to each path's time in the round" 0 "^chunks add up: 2 rounds$" -- /usr/bin/python3 -c '
import json, sys
rounds = [r for r in map(json.loads, open(sys.argv[1])) if r.get("type") == "round"]
for r in rounds:
    c = r["chunk_seconds"]
    assert len(c) == 2 and all(len(x) == 4 for x in c), r
    assert all(abs(sum(x[p] for x in c) - r["path_seconds"][p]) < 1e-6 for p in range(4)), r
print("chunks add up: %d rounds" % len(rounds))' "$tmp/st/moving-straggler/metrics.jsonl"
check "run-sweep names a missing sweep" 2 "no $tmp/none/index.csv" -- scripts/run-sweep "$tmp/none"
finish
