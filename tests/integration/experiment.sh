#!/usr/bin/env bash
# scripts/experiment's variants, in every regime, resolve to valid decks (dipaco deck checks every
# key of the deck and its overrides), and the saturated regime changes what it says it does.
# Nothing is trained. Usage: experiment.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
cd "$src"
source tests/integration/lib.sh

for regime in early saturated 64x; do
  scripts/experiment --regime "$regime" --dry-run --out "$tmp/$regime" >"$tmp/$regime.cmds" 2>&1 || bad "$regime: --dry-run" "$tmp/$regime.cmds"
  n=0 failed=0
  while IFS= read -r line; do
    # "== LABEL: run DECK OVERRIDES...": the deck and its overrides, as dipaco run gets them
    read -ra words <<<"${line#*: run }"
    n=$((n + 1))
    if ! "$build/dipaco" deck "${words[@]}" >"$tmp/deck-$regime-$n.ini" 2>&1; then
      failed=$((failed + 1))
      bad "$regime: ${line%%: run *}" "$tmp/deck-$regime-$n.ini"
    fi
  done < <(grep '^== ' "$tmp/$regime.cmds")
  ((n > 10 && failed == 0)) && ok "$regime: all $n variants resolve to valid decks" || bad "$regime: $n variants, $failed invalid" "$tmp/$regime.cmds"
done
# The saturated regime: S of d32 with 2 heads and 2,500 inner steps, dense 4xS of d64 for 3,000.
# One line of what each resolved deck holds: d_model, n_heads, steps, lr.
shape() { awk -F' = ' '$1=="d_model"||$1=="n_heads"||$1=="steps"||$1=="lr"{printf "%s=%s ", $1, $2}' "$1"; }
check "saturated: DiPaCo 4x4 has d32 paths with 2 heads, 2500 steps at lr 6e-3" 0 "^d_model=32 n_heads=2 steps=2500 lr=6e-3 $" -- \
  shape "$tmp/deck-saturated-4.ini"
n4=$(grep -n '^== dense 4xS:' "$tmp/saturated.cmds" | cut -d: -f1)
check "saturated: dense 4xS is d64 with 4 heads and 3000 steps" 0 "^d_model=64 n_heads=4 steps=3000 lr=6e-3 $" -- \
  shape "$tmp/deck-saturated-$n4.ini"
check "saturated: a variant's own overrides come last and win" 0 "^d_model=32 n_heads=2 steps=2500 lr=1.2e-2 $" -- \
  shape "$tmp/deck-saturated-3.ini"
check "early: the decks as they are (DiPaCo 4x4: d64, 500 steps)" 0 "^d_model=64 n_heads=4 steps=500 lr=3e-3 $" -- \
  shape "$tmp/deck-early-8.ini"
# The 64x regime: the large corpus, 64 shards of 1% to 2% of the documents, the 16x rows' 16 of 4% to 8%,
# and the rows of seeds 2 and 3 from their own warm starts.
route() { awk -F' = ' '$1=="corpus"||$1=="seed"||$1=="max_shard_fraction"||$1=="min_shard_fraction"||$1=="warm_start"{printf "%s=%s ", $1, $2}' "$1"; }
row() { grep -n "^== $1: run" "$tmp/64x.cmds" | cut -d: -f1; }
check "64x: DiPaCo 8x8 reads the large corpus in shards of 1% to 2%" 0 \
  "^seed=1234 corpus=data/large/corpus.jsonl warm_start=$tmp/64x/warmstart-s-lr1.2e-2.h5 max_shard_fraction=0.02 min_shard_fraction=0.01 $" -- \
  route "$tmp/deck-64x-$(row "DiPaCo 8x8").ini"
check "64x: DiPaCo 4x4 has shards of 4% to 8%" 0 "max_shard_fraction=0.08 min_shard_fraction=0.04" -- \
  route "$tmp/deck-64x-$(row "DiPaCo 4x4").ini"
for seed in 2 3; do
  check "64x: a row of seed $seed starts from seed $seed's warm start" 0 "^seed=$seed .*warm_start=$tmp/64x/warmstart-s-lr1.2e-2-seed$seed.h5 " -- \
    route "$tmp/deck-64x-$(row "DiPaCo 8x8, seed $seed").ini"
done
# Paired differences: a label that names its seed mid-way ("{seed}" in PAIRS) pairs with the row of that seed.
pairs() {
  /usr/bin/python3 - <<'PY'
import importlib.machinery, importlib.util
loader = importlib.machinery.SourceFileLoader("experiment", "scripts/experiment")
m = importlib.util.module_from_spec(importlib.util.spec_from_loader("experiment", loader))
loader.exec_module(m)
seg = ", segment shards of 64, re-routed every 64 tokens by the 64 before"
rows = {"DiLoCo, 64 replicas of S": 2.0, "DiLoCo, 64 replicas of S, seed 2": 2.2,
        "DiPaCo 8x8, level 1 private" + seg: 1.9, "DiPaCo 8x8, level 1 private, seed 2" + seg: 2.31}
lines = m.paired([{"label": k, "val_bpb": v} for k, v in rows.items()], m.PAIRS["64x"])
print("\n".join(l for l in lines if "private" + seg + " against DiLoCo" in l))
PY
}
check "64x: segment rows pair with DiLoCo-64 of their seed" 0 "^\| .* \| -5\.0% \| \+5\.0% \| \+0\.0% \| 7\.1 points \|$" -- pairs
finish
