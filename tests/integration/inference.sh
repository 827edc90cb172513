#!/usr/bin/env bash
# Inference from a trained DiPaCo model: routed generation with a KV cache,
# dipaco route, named exports, and scripts/load-export against dipaco
# evaluate. Usage: inference.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
py=/usr/bin/python3

# A small routed 2x2 run: warm start, k-means routing, two outer rounds.
check "routed 2x2 run" 0 "outer rounds: 2" -- env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 1 "$bin" run inputs/quickstart.ini \
  --model.d_model=32 --model.context=64 --route.warm_steps=20 --route.prefix_tokens=16 --route.routing=product --train.steps=20 \
  --dipaco.inner_steps=10 --eval.every=10 --eval.batches=1 --eval.doc_bytes=128 --run.log_every=10 --run.out_dir="$tmp/runs" --run.name=r
# A progress line shows the last evaluation's value with its step when that is older than the line's.
grep -qE "^step +10/20 \| .*\| val bpb [0-9.]+ \(step 0\) \|" "$tmp/out" && grep -qE "^step +20/20 \| .*\| val bpb [0-9.]+ \(step 10\) \|" "$tmp/out" &&
  ok "progress lines date an older evaluation" || bad "progress lines' val bpb" "$tmp/out"
run=$tmp/runs/r
ckpt=$run/checkpoints/ckpt-00000020.h5
gen() { "$bin" generate "$ckpt" --tokens 100 "$@"; }

# generate: routed by the prompt's prefix, deterministic for a seed.
check "generate routes the prompt" 0 "^\[route: P[0-3], squared distance .* from the first 11 bytes of the prompt" -- \
  gen --prompt "def main():"
check "an empty prompt says what routed it" 0 "from a newline \(no --prompt given: the default prompt\)" -- gen --prompt ""
cp "$tmp/out" "$tmp/gen.txt"
check "  ... and prints its speed" 0 "^\[100 bytes in .* tokens/s, KV cache" -- cat "$tmp/gen.txt"
text() { "$@" --json | $py -c "import json,sys; print(json.load(sys.stdin)['text'])"; }
same() { text "$@" >"$tmp/g1" && text "$@" >"$tmp/g2" && cmp -s "$tmp/g1" "$tmp/g2" && echo same; }
check "the same seed gives the same text" 0 "^same$" -- same gen --prompt "The " --seed 5 --temperature 1
differs() { text gen --prompt "The " --seed 5 --temperature 1 >"$tmp/g1" && text gen --prompt "The " --seed 6 --temperature 1 >"$tmp/g2" &&
  ! cmp -s "$tmp/g1" "$tmp/g2" && echo differs; }
check "another seed gives another text" 0 "^differs$" -- differs
# The cache changes the cost, not the numbers: the text with and without it is the same,
# also across refills of the context (a 300-byte prompt and 300 bytes for a context of 64).
long=$(head -c 300 inputs/corpus/embedded.jsonl)
nocache() { text gen --prompt "$long" --tokens 300 --seed 3 >"$tmp/g1" && text gen --prompt "$long" --tokens 300 --seed 3 --no-cache >"$tmp/g2" &&
  cmp -s "$tmp/g1" "$tmp/g2" && echo same; }
check "KV cache and full windows give the same text (prompt longer than the context)" 0 "^same$" -- nocache
check "--json has tokens/s and the route" 0 '"routes":\[\{"at":0,"path":[0-3],"why":"squared distance.*"tokens_per_second":[0-9]' -- \
  gen --prompt "The " --json
check "--reroute-every re-routes while generating" 0 '"reroute_every":8' -- gen --prompt "The " --reroute-every 8 --json
# Trained on segment shards: generation re-routes by the windows router that cut them (segments.h5).
seg_run() { env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 1 "$bin" run \
  inputs/quickstart.ini --model.d_model=32 --model.context=64 --route.warm_steps=20 --route.prefix_tokens=16 --train.steps=10 \
  --route.segment_tokens=16 --route.segment_window=24 --eval.every=10 --eval.batches=1 --eval.doc_bytes=128 \
  --eval.reroute_every=16 --eval.reroute_window=24 --run.out_dir="$tmp/runs" --run.name=seg; }
seg_bpb() { $py -c "import json; print(json.load(open('$tmp/runs/seg/eval.json'))['val_bpb'])"; }
check "routed 2x2 run on segment shards" 0 "^segment shards: .* cut in" -- seg_run
cp "$tmp/out" "$tmp/seg-run.out"
check "  ... evaluated by the router that cut them" 0 "^re-routing by the windows router that cut the segment shards" -- cat "$tmp/seg-run.out"
seg_bpb >"$tmp/seg-bpb1"
rm "$tmp/runs/seg/eval.json"
check "  ... and again when only the evaluation runs (read back from segments.h5)" 0 \
  "^re-routing by the windows router that cut the segment shards" -- seg_run
seg_bpb >"$tmp/seg-bpb2"
seg_gen() { "$bin" generate "$tmp/runs/seg/checkpoints/ckpt-00000010.h5" --tokens 60 --prompt "The " "$@"; }
check "  ... generate re-routes by its windows router" 0 \
  "^\[re-routing every 8 by the last 24 bytes, by the windows router of .*/seg/segments.h5\]" -- seg_gen --reroute-every 8
# A routed generation names its route (and its re-routing), never a forced or only path.
path_lines() { "$@" | grep -c '^\[path:' || true; }
check "  ... and prints no [path: ...] line" 0 "^0$" -- path_lines seg_gen --reroute-every 8
check "a routed generation prints no [path: ...] line" 0 "^0$" -- path_lines gen --prompt "The "
# An --all export carries the windows router (/segment_router): the same text and the same routes as the checkpoint.
seg_ckpt=$tmp/runs/seg/checkpoints/ckpt-00000010.h5
check "  ... export --all carries the windows router" 0 "exported 4 paths" -- "$bin" export "$seg_ckpt" --all "$tmp/seg-all.h5"
seg_same() {
  "$bin" generate "$seg_ckpt" --tokens 60 --prompt "The " --reroute-every 8 --temperature 1 --seed 4 --json >"$tmp/s1" &&
    "$bin" generate "$tmp/seg-all.h5" --tokens 60 --prompt "The " --reroute-every 8 --temperature 1 --seed 4 --json >"$tmp/s2" &&
    $py -c "import json,sys; a, b = (json.load(open(f)) for f in sys.argv[1:]); n = len(a['routes'])
print('same text and routes' if (a['text'], a['routes']) == (b['text'], b['routes']) else 'differ', n)" "$tmp/s1" "$tmp/s2"
}
check "  ... generate on the export re-routes as on the checkpoint" 0 "^same text and routes [1-9]" -- seg_same
check "  ... and names it" 0 "by the windows router of .*seg-all.h5:/segment_router\]" -- \
  "$bin" generate "$tmp/seg-all.h5" --tokens 20 --prompt "The " --reroute-every 8
rm -f "$tmp/runs/seg/segments.h5"
check "  ... without segments.h5, a clear refusal" 2 "segments.h5 \\(its windows router\\) is missing" -- seg_gen --reroute-every 8
# Without segments.h5 the evaluation fits the windows router again: the same router, the same bits per byte.
rm "$tmp/runs/seg/eval.json"
refit_same() {
  seg_run >"$tmp/refit.out" 2>&1 && ! grep -q "router that cut the segment shards" "$tmp/refit.out" && seg_bpb >"$tmp/seg-bpb3" &&
    cat "$tmp/seg-bpb1" "$tmp/seg-bpb2" "$tmp/seg-bpb3" | uniq | wc -l
}
check "  ... the evaluation without segments.h5 fits it again, to the same bits per byte" 0 "^1$" -- refit_same
check "  ... an export without it says so" 0 "^note: the run trained on segment shards, but its segments.h5 is gone" -- \
  "$bin" export "$seg_ckpt" --all "$tmp/seg-all2.h5"
check "  ... and generate --reroute-every on it refuses" 2 "holds no /segment_router" -- \
  "$bin" generate "$tmp/seg-all2.h5" --tokens 20 --prompt "The " --reroute-every 8
check "--path forces a path" 0 '^\[path: P2, forced by --path\]' -- gen --prompt "The " --path 2
# Bytes that are not UTF-8 (a byte model emits any byte) are escaped: the JSON loads, the bytes come back as U+00XX.
prompt_back() { gen --prompt $'\xff\xfe<' --tokens 40 --temperature 2 --json |
  $py -c "import json,sys; r = json.load(sys.stdin); print('loads' if r['prompt'] == '\u00ff\u00fe<' else r['prompt'])"; }
check "--json with bytes that are not UTF-8 is valid JSON" 0 "^loads$" -- prompt_back
greedy() { text gen --prompt "The " --temperature 0 --seed 1 >"$tmp/g1" && text gen --prompt "The " --temperature 0 --seed 2 >"$tmp/g2" &&
  cmp -s "$tmp/g1" "$tmp/g2" && echo same; }
check "temperature 0 is greedy: the same for any seed" 0 "^same$" -- greedy

# Refusals, exit code 2, the flag named.
check "--path beyond the paths" 2 "--path 9: the model has paths 0..3" -- gen --path 9
check "--path with --reroute-every" 2 "--path forces one path; --reroute-every needs the router" -- gen --path 1 --reroute-every 8
check "--top-p 0" 2 "--top-p needs a number in \(0, 1\]" -- gen --top-p 0
check "--top-k 300" 2 "--top-k needs an integer in \[0, 256\], got '300'" -- gen --top-k 300
check "--reroute-every 0" 2 "--reroute-every needs an integer in \[1, " -- gen --reroute-every 0
check "unknown flag" 2 "unknown option '--topk'" -- gen --topk 3
check "inspect names a warm-start file" 2 "warmstart.h5 is a warm-start file .*, not a checkpoint" -- "$bin" inspect "$run/warmstart.h5"
check "missing model" 2 "no such file" -- "$bin" generate "$tmp/none.h5"
check "a shard file is no model" 2 "neither a checkpoint nor an exported model" -- "$bin" generate "$run/shards.h5"

# route: every validation document goes where the run's routing sent it.
check "route a corpus" 0 "^all +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +215$" -- "$bin" route "$ckpt" inputs/corpus/embedded.jsonl
# A malformed corpus line is bad input for route as it is for run: exit 2, the file and line named.
printf '{"text":"fine"}\n{"text": oops}\n' >"$tmp/badline.jsonl"
check "route: a malformed line exits 2 like run" 2 "badline.jsonl:2: " -- "$bin" route "$ckpt" "$tmp/badline.jsonl"
gzip -c inputs/corpus/embedded.jsonl >"$tmp/corpus.jsonl.gz"
check "route a compressed corpus" 0 "^all +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +215$" -- "$bin" route "$ckpt" "$tmp/corpus.jsonl.gz"
cp "$tmp/out" "$tmp/route.txt"
check "  ... with a row per domain" 0 "^scripture +[0-9]+ " -- cat "$tmp/route.txt"
check "route --text" 0 "^text +- +P[0-3]  squared distance" -- "$bin" route "$ckpt" --text "package main"
"$bin" route "$ckpt" inputs/corpus/embedded.jsonl --json >"$tmp/routes.jsonl"
agree() { $py - "$run/shards.h5" "$tmp/routes.jsonl" <<'PY'
import h5py, json, sys
got = {r["id"]: r["path"] for r in map(json.loads, open(sys.argv[2]))}
with h5py.File(sys.argv[1]) as f:
    want = {i.decode(): int(p[1:]) for p in f["val"] for i in f["val"][p]["ids"][:]}
bad = [i for i in want if got[i] != want[i]]
print(f"{len(want) - len(bad)} of {len(want)} agree")
PY
}
check "route sends validation documents to their shard file's path" 0 "^([0-9]+) of \1 agree$" -- agree
check "route needs a router" 2 "holds one path" -- sh -c "'$bin' export '$ckpt' --path 1 '$tmp/p1.h5' >/dev/null && '$bin' route '$tmp/p1.h5' --text x"

# Exports: one dataset per tensor, shapes and layouts, hyperparameters; --all with the router.
check "export a path" 0 "exported path 1" -- "$bin" export "$ckpt" --path 1 "$tmp/p1.h5"
check "  ... named tensors with shapes" 0 'DATASET "blocks.3.attn.qkv.weight".*\( 32, 96 \)' -- \
  sh -c "h5dump -H '$tmp/p1.h5' | tr -d '\n'"
check "  ... their layout" 0 '"\[in C, out 3C\]: y = x W \+ b' -- h5dump -a /tensors/blocks.0.attn.qkv.weight/layout "$tmp/p1.h5"
check "  ... hyperparameters" 0 "ATTRIBUTE \"d_model\"" -- h5dump -A -g / "$tmp/p1.h5"
check "export --all" 0 "exported 4 paths" -- "$bin" export "$ckpt" --all "$tmp/all.h5"
check "  ... every module once, the path table, the router" 0 \
  'GROUP "L1.M1".*DATASET "blocks.2.ln1.weight".*GROUP "router".*DATASET "centroids_1".*DATASET "path_table"' -- \
  sh -c "h5dump -H '$tmp/all.h5' | tr -d '\n'"
check "export needs --path or --all" 2 "usage: dipaco export" -- "$bin" export "$ckpt" "$tmp/x.h5"
cp "$ckpt" "$tmp/own.h5"
check "export onto its own checkpoint is refused" 2 "is the checkpoint it reads" -- "$bin" export "$tmp/own.h5" --path 1 "$tmp/own.h5"
cmp -s "$ckpt" "$tmp/own.h5" && ok "  ... and the checkpoint is untouched" || bad "  ... the checkpoint changed"

# scripts/load-export (h5py + numpy) against dipaco evaluate on the same text: 1e-5 relative.
$py -c "import json; print(json.loads(open('inputs/corpus/embedded.jsonl').readlines()[7])['text'][:3000], end='')" >"$tmp/text.txt"
close() {  # close A B: two "N bits per byte" outputs within 1e-5 relative
  $py - "$1" "$2" <<'PY'
import re, sys
a, b = (float(re.search(r"([0-9.]+) bits per byte", open(f).read()).group(1)) for f in sys.argv[1:])
print(f"{a:.8f} {b:.8f} rel {abs(a - b) / b:.2e}", "close" if abs(a - b) <= 1e-5 * b else "far")
PY
}
compare() {  # compare MODEL [--path N]
  "$bin" evaluate "$@" --text "$tmp/text.txt" >"$tmp/e1" && scripts/load-export "$1" "$tmp/text.txt" "${@:2}" >"$tmp/e2" &&
    close "$tmp/e1" "$tmp/e2"
}
check "load-export equals evaluate on a path export" 0 " close$" -- compare "$tmp/p1.h5"
check "load-export equals evaluate on path 2 of an --all export" 0 " close$" -- compare "$tmp/all.h5" --path 2
ckpt_vs_export() {
  "$bin" evaluate "$ckpt" --path 1 --text "$tmp/text.txt" >"$tmp/e3" && "$bin" evaluate "$tmp/p1.h5" --text "$tmp/text.txt" >"$tmp/e4" &&
    close "$tmp/e3" "$tmp/e4"
}
check "evaluate a checkpoint's path on text: the same as its export" 0 " close$" -- ckpt_vs_export
routes_same() {
  a=$("$bin" route "$ckpt" --text "$(cat "$tmp/text.txt")" | grep -oE "^text +- +P[0-3]" | grep -oE "P[0-3]")
  b=$(scripts/load-export "$tmp/all.h5" "$tmp/text.txt" --route | grep -oE "^route: P[0-3]" | cut -c8-)
  [[ -n "$a" && "$a" == "$b" ]] && echo "same path $a"
}
check "load-export --route picks the path dipaco route picks" 0 "^same path P[0-3]" -- routes_same
# A private level (a module per path there) exports whole too: each path of the export is the checkpoint's path.
check "routed 2x2 run, level 1 private" 0 "outer rounds: 1" -- env OMP_NUM_THREADS=1 "${mpirun[@]}" -np 1 "$bin" run \
  inputs/quickstart.ini --model.d_model=32 --model.context=64 --route.warm_steps=20 --route.prefix_tokens=16 --train.steps=10 \
  --dipaco.inner_steps=10 --dipaco.private_levels=1 --eval.every=10 --eval.batches=1 --eval.doc_bytes=128 \
  --run.out_dir="$tmp/runs" --run.name=priv
priv=$tmp/runs/priv/checkpoints/ckpt-00000010.h5
check "  ... export --all" 0 "exported 4 paths" -- "$bin" export "$priv" --all "$tmp/priv-all.h5"
check "  ... the path table gives each path its own level 1 module" 0 "^\[\[0, 0\], \[0, 1\], \[1, 2\], \[1, 3\]\] 1$" -- \
  $py -c "import h5py; t = h5py.File('$tmp/priv-all.h5')['topology']; print(t['path_table'][()].tolist(), t.attrs['private_levels'].decode() if isinstance(t.attrs['private_levels'], bytes) else t.attrs['private_levels'])"
priv_paths_same() {
  local a b
  for p in 0 1 2 3; do
    a=$("$bin" evaluate "$priv" --path $p --text "$tmp/text.txt" | grep -oE "[0-9.]+ bits per byte")
    b=$("$bin" evaluate "$tmp/priv-all.h5" --path $p --text "$tmp/text.txt" | grep -oE "[0-9.]+ bits per byte")
    [[ -n "$a" && "$a" == "$b" ]] || { echo "path $p: '$a' against '$b'"; return 1; }
  done
  echo "every path the same"
}
check "  ... every path evaluates as the checkpoint's" 0 "^every path the same$" -- priv_paths_same
check "  ... load-export reads it" 0 " close$" -- compare "$tmp/priv-all.h5" --path 3
if ! $py -c "import torch" 2>/dev/null; then
  check "--state-dict without PyTorch says what it needs" 1 "--state-dict needs PyTorch" -- \
    scripts/load-export "$tmp/p1.h5" "$tmp/text.txt" --state-dict "$tmp/sd.pt"
fi
check "load-export refuses a checkpoint" 1 "is not a dipaco export" -- scripts/load-export "$ckpt" "$tmp/text.txt"

finish
