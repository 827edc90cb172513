#!/usr/bin/env bash
# Real datasets as users have them, end to end: a C4-shaped directory of
# .json.gz files and zstd files in a list with a glob train a 2x2 run; the
# token store is the same bytes at np 1, 2 and 4 and its corpus.idx/.bin read
# back with an independent reader of Megatron's layout (numpy); the route is
# the same at any rank count; a prepare or route killed halfway resumes to the
# same result; peak RSS does not grow with the corpus; each bad input is
# refused with exit 2, naming the file and line or offset, leaving no store a
# later run would trust. Usage: data.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
run() { run2x2 "$@"; }

# ---- inputs: C4's shape (text, timestamp, url; no id, no domain), gz members, zstd, lists, globs
$py - "$tmp" <<'PY'
import gzip, json, sys, zstandard
tmp = sys.argv[1]
lines = [json.loads(l) for l in open("inputs/corpus/embedded.jsonl")]
import os
os.makedirs(f"{tmp}/c4", exist_ok=True)
os.makedirs(f"{tmp}/z", exist_ok=True)
for k in range(3):
    mine = [l for i, l in enumerate(lines) if i % 3 == k]
    with open(f"{tmp}/c4/c4-train.0000{k}-of-00003.json.gz", "wb") as f:
        for half in (mine[: len(mine) // 2], mine[len(mine) // 2 :]):  # two gzip members
            f.write(gzip.compress("".join(json.dumps({"text": l["text"], "timestamp": "2019-04-25T12:57:54Z",
                                                      "url": "https://example.org/" + l["id"]}) + "\n" for l in half).encode()))
    with open(f"{tmp}/z/part-{k}.jsonl.zst", "wb") as f:
        f.write(zstandard.ZstdCompressor().compress("".join(json.dumps(l) + "\n" for l in mine).encode()))
PY
check "C4-shaped .json.gz directory trains a 2x2 run" 0 "stage prepare: $tmp/c4: [0-9]+ training and [0-9]+ validation documents" -- \
  run 2 --data.corpus="$tmp/c4" --route.method=kmeans --run.name=c4
if [[ "$(cat "$(store c4)/domains.txt")" == "$(printf 'c4-train.00000-of-00003\nc4-train.00001-of-00003\nc4-train.00002-of-00003')" ]] &&
   grep -q 'c4-train.00001-of-00003.json.gz:1' "$(store c4)/ids.bin"; then ok "C4 lines: domains are the file stems, ids file:line"
else bad "C4 lines: domains or ids" "$(store c4)/domains.txt"; fi
[[ "$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['loss_unit'])" "$tmp/runs/c4/summary.json")" == "bits per byte" ]] &&
  ok "a text run reports bits per byte" || bad "loss unit of a text run" "$tmp/runs/c4/summary.json"
check "a list with a glob of .zst files" 0 "stage prepare: .*: 1[0-9][0-9] training and [0-9]+ validation" -- \
  run 2 --data.corpus="$tmp/z/part-0.jsonl.zst,$tmp/z/part-[12]*.zst" --run.name=zst

# ---- the store: the same bytes at any rank count; Megatron's layout read back independently
for np in 1 2 4; do
  run $np --data.piece_mb=0.05 --run.name=np$np >"$tmp/np$np.out" 2>&1 || bad "store at np $np" "$tmp/np$np.out"
done
same=1
for f in corpus.bin corpus.idx docs.bin ids.bin domains.txt meta.txt; do
  cmp -s "$(store np1)/$f" "$(store np2)/$f" && cmp -s "$(store np1)/$f" "$(store np4)/$f" || { same=0; echo "differs: $f"; }
done
((same)) && ok "store: the same bytes at np 1, 2 and 4" || bad "store differs between rank counts"
routes() { $py -c "import h5py,sys; f=h5py.File(sys.argv[1]); print([list(f[f'train/P{p}/doc_index'][:]) for p in range(4)])" "$1"; }
[[ "$(routes "$tmp/runs/np1/shards.h5")" == "$(routes "$tmp/runs/np2/shards.h5")" &&
   "$(routes "$tmp/runs/np1/shards.h5")" == "$(routes "$tmp/runs/np4/shards.h5")" ]] &&
  ok "route: the same shards at np 1, 2 and 4" || bad "route differs between rank counts"
$py - "$(store np1)" >"$tmp/megatron.out" 2>&1 <<'PY' && ok "corpus.bin/.idx read as a Megatron dataset give the corpus's texts" || bad "Megatron reader" "$tmp/megatron.out"
# Megatron-LM's indexed_dataset layout, read with numpy alone.
import json, sys, numpy as np
d = sys.argv[1]
idx = open(f"{d}/corpus.idx", "rb").read()
assert idx[:9] == b"MMIDIDX\x00\x00", idx[:9]
version, = np.frombuffer(idx, np.uint64, 1, 9)
dtype = idx[17]
n, docs = np.frombuffer(idx, np.uint64, 2, 18)
assert version == 1 and dtype == 1 and docs == n + 1, (version, dtype, n, docs)
sizes = np.frombuffer(idx, np.int32, int(n), 34)
pointers = np.frombuffer(idx, np.int64, int(n), 34 + 4 * int(n))
doc_idx = np.frombuffer(idx, np.int64, int(docs), 34 + 12 * int(n))
assert len(idx) == 34 + 12 * int(n) + 8 * int(docs)
assert (doc_idx == np.arange(n + 1)).all()
tokens = np.memmap(f"{d}/corpus.bin", np.uint8, "r")
texts = [json.loads(l)["text"].encode() for l in open("inputs/corpus/embedded.jsonl")]
assert len(texts) == n, (len(texts), n)
for i, t in enumerate(texts):
    assert bytes(tokens[pointers[i]:pointers[i] + sizes[i]]) == t, i
print("ok", n)
PY

# ---- a kill during prepare, and during route, resumes to the same result
run 2 --data.piece_mb=0.05 --run.name=killed --fault.kill_at=prepare:3 --fault.kill_rank=1 >"$tmp/out" 2>&1
code=$?
if ((code != 0)) && [[ ! -e $(store killed)/meta.txt ]]; then ok "prepare killed: exit $code, no store to trust"
else bad "prepare killed: exit $code"; fi
check "the next run prepares again" 0 "stage prepare: .* documents" -- run 2 --data.piece_mb=0.05 --run.name=killed
cmp -s "$(store killed)/corpus.idx" "$(store np1)/corpus.idx" && cmp -s "$(store killed)/corpus.bin" "$(store np1)/corpus.bin" &&
  [[ ! -e $(store killed).tmp ]] && ok "after the kill: the same store, no .tmp left" || bad "store after a killed prepare"
run 2 --data.piece_mb=0.05 --run.name=killroute --fault.kill_at=route --fault.kill_rank=1 >"$tmp/out" 2>&1
check "route killed: the next run reuses the store" 0 "stage prepare: .*\(up to date" -- run 2 --data.piece_mb=0.05 --run.name=killroute
[[ "$(routes "$tmp/runs/killroute/shards.h5")" == "$(routes "$tmp/runs/np2/shards.h5")" ]] &&
  ok "after the kill: the same shards" || bad "shards after a killed route"

# ---- peak RSS per rank does not grow with the corpus: 4x the embedded corpus
# (860 documents of about 4 KB) against 160,000 short documents (32 MB). What may
# grow is 4 bytes a document in the split, 4 in the shards of the rank's own
# paths and 12 in their token streams (and, in the warm start, every training
# document's); never the text, the store's index or ids (read, not mapped),
# prepare's per-document records (spilled to disk), nor other ranks' paths.
# Measured 21 bytes; 29 while prepare held its records in memory.
$py - "$tmp" <<'PY'
import json, sys
lines = [json.loads(l) for l in open("inputs/corpus/embedded.jsonl")]
with open(f"{sys.argv[1]}/x4.jsonl", "w") as f:
    for c in range(4):
        for l in lines:
            f.write(json.dumps(dict(l, id=f"{l['id']}#copy{c}")) + "\n")
chunks = [(l["domain"], l["text"][i:i + 200]) for l in lines for i in range(0, len(l["text"]), 200)]
with open(f"{sys.argv[1]}/many.jsonl", "w") as f:
    for i in range(160000):
        domain, text = chunks[i % len(chunks)]
        f.write(json.dumps({"id": f"d{i}", "domain": domain, "text": f"{text} #{i}"}) + "\n")
PY
# The largest rank's peak as the run measured it (summary.json, VmHWM when the
# stages are done): /usr/bin/time's figure adds up to 55 MB that Open MPI and
# the CUDA libraries touch while the process exits, 233 or 252 MB at random.
rss() {
  "${mpi[@]}" -np 2 "$bin" run inputs/dipaco-2x2.ini "${tiny[@]}" --train.steps=20 --data.corpus="$tmp/$1.jsonl" \
    --route.method=kmeans --route.fit_docs=500 --run.name="$1" >"$tmp/$1.out" 2>&1
  $py -c "import json,sys; print(int(json.load(open(sys.argv[1]))['peak_rss_mb_per_rank'] * 1000))" \
    "$tmp/runs/$1/summary.json" 2>/dev/null || echo 0
}
small=$(rss x4) large=$(rss many)
docs=$((160000 - 215 * 4))  # documents added
per_doc=$(( (large - small) * 1000 / docs ))
echo "     peak RSS per rank: $small kB at 860 documents, $large kB at 160,000: $per_doc bytes per added document"
((small > 0 && large > 0 && per_doc < 40)) && ok "peak RSS grows by $per_doc bytes per document (under 40)" ||
  bad "peak RSS grows with the corpus: $small -> $large kB ($per_doc bytes per document)" "$tmp/many.out"
grep -q "peak memory $(((large + 500) / 1000)) MB per rank" "$tmp/many.out" && ok "the run prints its peak memory per rank" ||
  bad "no 'peak memory $(((large + 500) / 1000)) MB per rank' line" "$tmp/many.out"

# ---- bad input: exit 2, the file and line or offset named, nothing half-written trusted
bad_input() {  # NAME PATTERN FILE...
  local name=$1 pattern=$2 spec
  shift 2
  spec=$(IFS=,; echo "$*")
  check "$name" 2 "$pattern" -- run 2 --data.corpus="$spec" --run.name=bad
  [[ ! -e $(store bad)/meta.txt ]] || bad "$name: a store was left"
}
head -c 3000 "$tmp/c4/c4-train.00000-of-00003.json.gz" >"$tmp/truncated.json.gz"
bad_input "truncated .gz" "truncated.json.gz.*truncated" "$tmp/truncated.json.gz"
head -c 3000 "$tmp/z/part-0.jsonl.zst" >"$tmp/truncated.jsonl.zst"
bad_input "truncated .zst" "truncated.jsonl.zst.*truncated" "$tmp/truncated.jsonl.zst"
printf '\xef\xbb\xbf{"text":"x"}\n' >"$tmp/bom.jsonl"
bad_input "UTF-8 BOM" "bom.jsonl: starts with a UTF-8 byte-order mark" "$tmp/bom.jsonl"
printf '{"text":"fine"}\n{"id":"b","body":"no text"}\n' >"$tmp/notext.jsonl"
bad_input "a line without text" "notext.jsonl:2: missing field 'text'" "$tmp/notext.jsonl"
: >"$tmp/empty.jsonl"
bad_input "an empty file among many" "input file '$tmp/empty.jsonl' is empty" inputs/corpus/embedded.jsonl "$tmp/empty.jsonl"
{ cat inputs/corpus/embedded.jsonl; head -3 inputs/corpus/embedded.jsonl; } >"$tmp/dup.jsonl"
bad_input "duplicate ids" "3 duplicate document id\(s\)" "$tmp/dup.jsonl"
bad_input "a glob that matches nothing" "input pattern '$tmp/none\*.jsonl' matches no files" "$tmp/none*.jsonl"
printf '{"text":"a"}\n{"text": "b" oops}\n' >"$tmp/json.jsonl"
bad_input "broken JSON" "json.jsonl:2: .*column" "$tmp/json.jsonl"
# Empty texts are skipped, and counted aloud.
{ cat inputs/corpus/embedded.jsonl; printf '{"id":"e1","text":""}\n{"id":"e2","domain":"d","text":""}\n'; } >"$tmp/empties.jsonl"
check "empty texts are skipped and counted" 0 "stage prepare: 2 line\(s\) with an empty text skipped" -- \
  run 1 --data.corpus="$tmp/empties.jsonl" --route.method=hash --route.warm_steps=0 --run.name=empties

# A full disk while preparing is a write failure (exit 1), not bad input, and no store is left to trust.
mkdir -p "$tmp/small"
if mount -t tmpfs -o size=400k tmpfs "$tmp/small" 2>/dev/null; then
  check "a full disk in prepare: exit 1, nothing trusted" 1 "No space left on device.*no store was written" -- \
    run 2 --data.store="$tmp/small/store" --data.piece_mb=0.1 --run.name=full
  [[ ! -e $tmp/small/store/meta.txt ]] || bad "a full disk left a store"
  umount "$tmp/small"
else
  echo "skip full-disk prepare check: mounting a tmpfs needs root"
fi

# A changed corpus is named as such when training starts over.
cp inputs/corpus/embedded.jsonl "$tmp/grow.jsonl"
run 1 --data.corpus="$tmp/grow.jsonl" --route.method=hash --route.warm_steps=0 --run.name=grow >"$tmp/out" 2>&1 || bad "grow: first run"
printf '{"id":"new-doc","domain":"speech","text":"%s"}\n' "$(printf 'word %.0s' {1..300})" >>"$tmp/grow.jsonl"
check "a changed corpus: training starts over and says the corpus changed" 0 \
  "stage train: the corpus changed \(corpus.content_hash: [0-9]+ -> [0-9]+\)" -- \
  run 1 --data.corpus="$tmp/grow.jsonl" --route.method=hash --route.warm_steps=0 --run.name=grow

# Validation documents no longer than the routing prefix would leave the routed evaluation nothing to score.
$py -c "
import json
for i in range(60): print(json.dumps({'id': f's{i}', 'domain': 'd', 'text': 'short text ' + str(i)}))" >"$tmp/short.jsonl"
# Validation shards shorter than the context: one padded window each, scored, not NaN.
$py -c "
import json
for i in range(40): print(json.dumps({'id': 'd%d' % i, 'domain': 'x', 'text': ('word%d ' % i) * 12}))" >"$tmp/shortval.jsonl"
check "validation shards shorter than the context are scored (one padded window)" 0 "validation bits per byte: [0-9.]+ \(windows" -- \
  run 1 --data.corpus="$tmp/shortval.jsonl" --model.context=256 --route.method=hash --route.prefix_tokens=8 --run.name=shortval
check "validation documents within the prefix are refused before training" 2 "no validation document .* is longer than route.prefix_tokens = 32 tokens" -- \
  run 2 --data.corpus="$tmp/short.jsonl" --route.method=hash --run.name=short
inode=$(stat -c %i "$(store short)/meta.txt")
check "  ... again with the store made: refused the same" 2 "no validation document .* is longer than route.prefix_tokens" -- \
  run 2 --data.corpus="$tmp/short.jsonl" --route.method=hash --run.name=short
[[ $(stat -c %i "$(store short)/meta.txt") == "$inode" ]] && ok "  ... without preparing the store again" ||
  bad "a refused corpus was prepared again"
finish
