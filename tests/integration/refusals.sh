#!/usr/bin/env bash
# Inputs that are refused with a clear message and exit code 2 (bad input)
# instead of running with a surprising meaning. Usage: refusals.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
mpirun=(env OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 1)

# Integers beyond what the field holds were cut to 32 bits (2^32 + 20 steps trained 20).
for key in train.steps checkpoint.every eval.every run.log_every dipaco.inner_steps; do
  for v in 2147483648 4294967316; do
    check "$key=$v refused" 2 "invalid value '$v' for $key: expected an integer in \[[01], 2147483647\]" -- \
      "$bin" deck inputs/dense.ini --$key=$v
  done
done
check "run with 2^32 + 20 steps refused" 2 "invalid value '4294967316' for train.steps" -- \
  "${mpirun[@]}" "$bin" run inputs/dense.ini --train.steps=4294967316 --run.out_dir="$tmp/runs"

# "--key=" sets a text key to "" (route.warm_start's documented default).
printf '[route]\nwarm_start = shared.h5\n' >"$tmp/warm.ini"
check "--route.warm_start= sets the empty default" 0 "^warm_start = $" -- "$bin" deck "$tmp/warm.ini" --route.warm_start=
check "--train.steps= is not an integer" 2 "invalid value '' for train.steps: expected an integer" -- \
  "$bin" deck inputs/dense.ini --train.steps=

# A directory is not a deck (it read as an empty one: the defaults ran).
check "deck: a directory" 2 "deck 'inputs' is a directory" -- "$bin" deck inputs
check "run: a directory" 2 "deck 'inputs' is a directory" -- "${mpirun[@]}" "$bin" run inputs --run.out_dir="$tmp/runs"
check "deck: a missing file" 2 "cannot open deck file '$tmp/none.ini'" -- "$bin" deck "$tmp/none.ini"

# run.name is one directory under run.out_dir.
for name in ../../escape /abs . .. "" x/y; do
  check "run.name '$name' refused" 2 "invalid value '$name' for run.name: expected one path component" -- \
    "$bin" deck inputs/dense.ini --run.name="$name"
done
mkdir -p "$tmp/a/b"
check "run with run.name ../../escape refused" 2 "for run.name: expected one path component" -- \
  "${mpirun[@]}" "$bin" run inputs/dense.ini --run.out_dir="$tmp/a/b" --run.name=../../escape
absent() { [[ ! -e $1 ]] && echo absent; }
check "  ... and nothing written outside run.out_dir" 0 "^absent$" -- absent "$tmp/escape"

# A corpus without validation documents gave NaN; a one-document domain is named.
head -3 inputs/corpus/embedded.jsonl | sed 's/"domain": *"[^"]*"/"domain":"many"/' >"$tmp/corpus.jsonl"
sed -n 200p inputs/corpus/embedded.jsonl | sed 's/"domain": *"[^"]*"/"domain":"single"/' >>"$tmp/corpus.jsonl"
tiny=("${mpirun[@]}" "$bin" run inputs/dense.ini --data.corpus="$tmp/corpus.jsonl" --model.d_model=32
  --model.n_layers=2 --model.context=64 --train.steps=20 --eval.every=0 --eval.batches=1 --data.val_fraction=0 --run.out_dir="$tmp/runs" --run.name=t)
check "no validation documents refused" 2 "leaves no validation documents \(data.val_fraction = 0, data.min_val_docs = 0" -- \
  "${tiny[@]}" --data.min_val_docs=0
check "a domain without validation documents is named" 0 "warning: domain 'single' has no validation document" -- "${tiny[@]}"
check "  ... the run still validates the others" 0 '"val_bpb":[0-9]' -- cat "$tmp/runs/t/summary.json"
ckpt=$(ls "$tmp"/runs/t/checkpoints/ckpt-*.h5 | tail -1)
check "export" 0 "exported path 0" -- "$bin" export "$ckpt" --path 0 "$tmp/model.h5"

# generate: temperature 0 is greedy (every weight underflowed to 0: NUL bytes);
# numeric flags are checked and named.
gen() { "$bin" generate "$tmp/model.h5" --prompt "The " --tokens 40 "$@"; }
printable() {  # the command's output holds only printable bytes and whitespace
  "$@" >"$tmp/gen" 2>&1 || return
  [[ $(tr -d '[:print:][:space:]' <"$tmp/gen" | wc -c) -eq 0 ]] && echo printable
}
# The text only: the [bracketed] lines report the path and the speed.
same_twice() { "$@" 2>&1 | grep -v '^\[' >"$tmp/gen1" && "$@" --seed 7 2>&1 | grep -v '^\[' >"$tmp/gen2" && cmp "$tmp/gen1" "$tmp/gen2" && echo same; }
check "temperature 0 prints text" 0 "^printable$" -- printable gen --temperature 0
check "temperature 0.01 prints text" 0 "^printable$" -- printable gen --temperature 0.01
check "temperature 0 is deterministic (any seed)" 0 "^same$" -- same_twice gen --temperature 0
check "--tokens -5" 2 "--tokens needs an integer in \[0, [0-9]+\], got '-5'" -- gen --tokens -5
check "--tokens abc" 2 "--tokens needs an integer .*got 'abc'" -- gen --tokens abc
check "--temperature abc" 2 "--temperature needs a number in \[0, 100\].*got 'abc'" -- gen --temperature abc
check "--temperature -1" 2 "--temperature needs a number .*got '-1'" -- gen --temperature=-1

# inspect reads checkpoints; other files are named for what they are.
check "inspect a checkpoint" 0 "inner step 20" -- "$bin" inspect "$ckpt"
check "inspect a missing file" 2 "'$tmp/none.h5': no such file" -- "$bin" inspect "$tmp/none.h5"
check "inspect a directory" 2 "'$tmp': it is a directory" -- "$bin" inspect "$tmp"
check "inspect a text file" 2 "not an HDF5 file" -- "$bin" inspect "$tmp/corpus.jsonl"
check "inspect a shard file" 2 "shards.h5 is a dipaco shard file, not a checkpoint; inspect reads training checkpoints" -- \
  "$bin" inspect "$tmp/runs/t/shards.h5"
check "inspect an exported model" 2 "model.h5 is an exported path model, not a checkpoint" -- "$bin" inspect "$tmp/model.h5"
check "inspect --layout of an exported model" 2 "is an exported path model" -- "$bin" inspect --layout "$tmp/model.h5"

finish
