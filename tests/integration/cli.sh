#!/usr/bin/env bash
# Whole-program checks of the command line: exit codes and error messages,
# and a real quickstart run that learns. Usage: cli.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none)

printf '[train]\nlrr = 0.1\n' >"$tmp/typo.ini"
printf '[train]\nsteps = lots\n' >"$tmp/type.ini"
printf '[data]\ncorpus = %s/missing.jsonl\n' "$tmp" >"$tmp/nocorpus.ini"

check "help lists keys with defaults" 0 "train.lr <float> .*default: 3e-3" -- "$bin" --help
check "deck prints the resolved deck" 0 "^steps = 500" -- "$bin" deck inputs/dense.ini
check "override shows in resolved deck" 0 "^lr = 0.01" -- "$bin" deck inputs/dense.ini --train.lr=0.01
check "unknown key: file, line, suggestion" 2 "typo.ini:2: unknown key 'train.lrr' \(did you mean train.lr\?\)" -- "$bin" deck "$tmp/typo.ini"
check "unknown override key" 2 "did you mean train.steps\?" -- "$bin" deck inputs/dense.ini --train.stpes=3
check "wrong type" 2 "invalid value 'lots' for train.steps: expected an integer" -- "$bin" deck "$tmp/type.ini"
check "missing deck" 2 "cannot open deck file 'nope.ini'" -- "$bin" deck nope.ini
check "missing corpus under mpirun" 2 "cannot open input file '$tmp/missing.jsonl'" -- "${mpirun[@]}" -np 2 "$bin" run "$tmp/nocorpus.ini" --run.out_dir="$tmp/runs"
check "impossible rank count lists those that work" 2 "rank counts that work: 1, 2, 4, 8" -- "${mpirun[@]}" -np 3 "$bin" run inputs/dipaco-2x2.ini --run.out_dir="$tmp/refused"
[[ ! -e $tmp/refused ]] && ok "  ... and leaves no run directory" || bad "a refused rank count left $tmp/refused"
check "topology printout" 0 "L1.M1 .*2 paths" -- "$bin" topology inputs/dipaco-2x2.ini --ranks 4
check "topology printout, a private level" 0 "L1\\.P\\* \\(blocks 2-3\\) +private +[0-9]+   \\(never communicated\\)" -- "$bin" topology inputs/dipaco-2x2.ini --ranks 4 --dipaco.private_levels=1
check "unknown command" 2 "unknown command" -- "$bin" frobnicate

# The quickstart deck learns: validation bits per byte from 8 to below 3.5.
check "quickstart learns" 0 "validation bits per byte: (1|2|3\.[0-4])" -- \
  env OMP_NUM_THREADS=2 "${mpirun[@]}" -np 1 "$bin" run inputs/dense.ini --run.out_dir="$tmp/runs"
check "quickstart wrote its results" 0 '"type":"eval","step":500' -- cat "$tmp/runs/dense/metrics.jsonl"
check "summary" 0 '"val_bpb":' -- cat "$tmp/runs/dense/summary.json"

# A small DiPaCo run: inspect its checkpoint, export one path, and check that
# evaluating the exported path gives exactly the routed evaluation of that path.
check "2x2 run" 0 "outer rounds: 2" -- env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$bin" run inputs/dipaco-2x2.ini \
  --train.steps=40 --dipaco.inner_steps=20 --model.d_model=32 --eval.every=20 --run.out_dir="$tmp/runs" --run.name=small
ckpt=$tmp/runs/small/checkpoints/ckpt-00000040.h5
check "inspect" 0 "L1/M1 +25408 +[0-9.]+ " -- "$bin" inspect "$ckpt"
check "inspect --json" 0 '"path_table":\[\{"path":0' -- "$bin" inspect --json "$ckpt"
check "inspect --layout" 0 "/paths/adam_v  \[4 x 1 x" -- "$bin" inspect --layout "$ckpt"
check "h5py inspection script and plot" 0 "wrote $tmp/curves.png" -- /usr/bin/python3 scripts/inspect-checkpoint "$ckpt" --png "$tmp/curves.png"
check "h5dump shows self-explaining attributes" 0 'ATTRIBUTE "index_names"' -- h5dump -A -g /modules/L0/M1 "$ckpt"
check "export a path" 0 "exported path 3" -- "$bin" export "$ckpt" --path 3 "$tmp/p3.h5"
want=$(/usr/bin/python3 -c "import json,sys; print('%.6f' % json.load(open(sys.argv[1]))['path_val_bpb'][3])" "$tmp/runs/small/summary.json")
check "exported path evaluates to its routed bpb ($want)" 0 "validation bits per byte $want" -- "$bin" evaluate "$tmp/p3.h5"
check "generate samples text" 0 "^The " -- "$bin" generate "$tmp/p3.h5" --prompt "The " --tokens 20
check "export of a path that does not exist" 2 "paths 0..3" -- "$bin" export "$ckpt" --path 9 "$tmp/p9.h5"

# The routed pipeline: warm start, k-means routing, re-routing by loss, routed
# evaluation; the same command skips finished stages, a changed value re-runs
# exactly the stages that depend on it.
routed=(env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 2 "$bin" run inputs/dipaco-2x2.ini --route.method=kmeans
  --route.warm_steps=10 --route.em_rounds=1 --train.steps=40 --dipaco.inner_steps=20 --model.d_model=32
  --eval.every=20 --route.prefix_tokens=16 --eval.doc_bytes=256 --run.out_dir="$tmp/runs" --run.name=routed)
check "routed pipeline re-routes by loss" 0 "re-routing round 1 at step 20" -- "${routed[@]}"
cp "$tmp/out" "$tmp/last"
check "routed pipeline evaluates per domain" 0 "^  scripture +[0-9.]+ bpb" -- cat "$tmp/last"
# The stages of the last run and what each did, on one line.
stages() { grep -oE "^stage [a-z ]+: (up to date|done|none|kmeans|[0-9]+ steps|the deck changed|a dense)" "$tmp/last" | tr '\n' '|'; }
check "same command: every stage up to date" 0 "stage train: up to date" -- "${routed[@]}"
cp "$tmp/out" "$tmp/last"
check "  ... warm start, route and evaluate too" 0 "warm start: up to date\|stage route: up to date\|.*stage evaluate: up to date" -- stages
check "changed eval.reroute_every re-runs only evaluate" 0 "stage evaluate: done" -- "${routed[@]}" --eval.reroute_every=32
cp "$tmp/out" "$tmp/last"
check "  ... the others are up to date" 0 "warm start: up to date\|stage route: up to date\|stage train: up to date" -- stages
check "changed route.overlap re-routes and retrains, keeps the warm start" 0 "the deck changed \(route.overlap: 1 -> 2\)" -- \
  "${routed[@]}" --route.overlap=2
cp "$tmp/out" "$tmp/last"
check "  ... stages run" 0 "warm start: up to date\|stage route: kmeans\|stage train: the deck changed" -- stages
check "shard file readable with h5dump" 0 'DATASET "doc_index"' -- h5dump -H -g /train/P0 "$tmp/runs/routed/shards.h5"
check "summary lists the files written" 0 '"files":\[.*shards-r1.h5' -- cat "$tmp/runs/routed/summary.json"
check "export a routed path" 0 "exported path 1" -- "$bin" export "$tmp/runs/routed/checkpoints/ckpt-00000040.h5" --path 1 "$tmp/r1.h5"
want=$(/usr/bin/python3 -c "import json,sys; print('%.6f' % json.load(open(sys.argv[1]))['path_val_bpb'][1])" "$tmp/runs/routed/summary.json")
check "routed path evaluates on its re-routed shard ($want)" 0 "validation bits per byte $want" -- "$bin" evaluate "$tmp/r1.h5"

finish
