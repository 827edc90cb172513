#!/usr/bin/env bash
# SentencePiece from raw text to routed generation: a 2x2 run with
# data.tokenizer = sentencepiece trains a tokenizer at prepare, encodes the
# corpus into the store (ids equal to Debian's SentencePiece library's own, each
# document's tokens standing for exactly its bytes), reports bits per byte, and
# its checkpoint and export generate and route text; the store is the same at
# np 1 and 2; a given model gives the same store; bad tokenizer input exits 2.
# Usage: tokenizer.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
run() { run2x2 "$1" --route.warm_steps=8 --train.steps=8 --dipaco.inner_steps=4 --data.tokenizer=sentencepiece \
  --data.tokenizer_vocab=1000 "${@:2}"; }

check "a 2x2 run from raw JSONL with a tokenizer trained at prepare" 0 \
  "stage prepare: [0-9]+ SentencePiece tokens \(1000 ids, .*tokenizer.model\)" -- run 2 --route.method=kmeans --run.name=spm
s=$(store spm)
unit=$($py -c "import json,sys; print(json.load(open(sys.argv[1]))['loss_unit'])" "$tmp/runs/spm/summary.json")
grep -qx "tokens = sentencepiece" "$s/meta.txt" && grep -qx "vocab_size = 1000" "$s/meta.txt" && [[ $unit == "bits per byte" ]] &&
  ok "the store holds SentencePiece ids (1000); the run reports bits per byte" || bad "store meta or unit" "$s/meta.txt"
$py - "$s" >"$tmp/check.out" 2>&1 <<'PY' && ok "every document's ids equal SentencePiece's own (python3-sentencepiece); they decode to its text and their pieces to its bytes" || bad "ids against SentencePiece" "$tmp/check.out"
import json, sys, numpy as np, sentencepiece as spm
d = sys.argv[1]
sp = spm.SentencePieceProcessor(model_file=f"{d}/tokenizer.model")
idx = open(f"{d}/corpus.idx", "rb").read()
n = int(np.frombuffer(idx, np.uint64, 1, 18)[0]); assert idx[17] == 8
sizes = np.frombuffer(idx, np.int32, n, 34); pointers = np.frombuffer(idx, np.int64, n, 34 + 4 * n)
tokens = np.memmap(f"{d}/corpus.bin", np.uint16, "r")
texts = [json.loads(l)["text"] for l in open("inputs/corpus/embedded.jsonl")]
assert len(texts) == n
def nbytes(i):
    if sp.is_byte(i): return 1
    if sp.is_control(i) or sp.is_unknown(i): return 0
    return len(sp.id_to_piece(i).replace("\u2581", " ").encode())
for k, t in enumerate(texts):
    ids = tokens[pointers[k] // 2 : pointers[k] // 2 + sizes[k]].tolist()
    assert ids == sp.encode(t), k
    assert sp.decode(ids) == t, k
    assert sum(nbytes(i) for i in ids) == len(t.encode()), (k, sum(nbytes(i) for i in ids), len(t.encode()))
PY
# Debian's spm_encode reads a line at a time: a corpus of one-line documents
# (the embedded corpus's lines) encoded by prepare with the run's model, and by spm_encode.
$py -c "
import json
n = 0
for l in open('inputs/corpus/embedded.jsonl'):
    for line in json.loads(l)['text'].split('\n'):
        if line.strip() and '\r' not in line and n < 400:
            n += 1; print(json.dumps({'id': 'l%d' % n, 'text': line}))" >"$tmp/lines.jsonl"
run 1 --run.name=lines --data.corpus="$tmp/lines.jsonl" --data.tokenizer_model="$s/tokenizer.model" --route.method=hash \
  --route.warm_steps=0 --train.steps=0 --data.val_fraction=0.05 >"$tmp/lines.out" 2>&1 || bad "one-line corpus" "$tmp/lines.out"
$py -c "import json,sys; [print(json.loads(l)['text']) for l in open(sys.argv[1])]" "$tmp/lines.jsonl" |
  spm_encode --model="$s/tokenizer.model" --output_format=id >"$tmp/spm_encode.txt"
$py - "$(store lines)" "$tmp/spm_encode.txt" >"$tmp/check.out" 2>&1 <<'PY' && ok "400 one-line documents: the store's ids are Debian's spm_encode's" || bad "spm_encode" "$tmp/check.out"
import sys, numpy as np
d, cli = sys.argv[1], [list(map(int, l.split())) for l in open(sys.argv[2])]
idx = open(f"{d}/corpus.idx", "rb").read()
n = int(np.frombuffer(idx, np.uint64, 1, 18)[0])
sizes = np.frombuffer(idx, np.int32, n, 34); pointers = np.frombuffer(idx, np.int64, n, 34 + 4 * n)
tokens = np.memmap(f"{d}/corpus.bin", np.uint16, "r")
assert n == len(cli) == 400, (n, len(cli))
for k in range(n): assert tokens[pointers[k] // 2 : pointers[k] // 2 + sizes[k]].tolist() == cli[k], k
PY

# Generation, routing and evaluation speak text through the tokenizer.
ck=$(ls "$tmp"/runs/spm/checkpoints/ckpt-*.h5 | tail -1)
check "generate: routed by the prompt's first tokens, text out" 0 "^\[route: P[0-3], .* from the first [0-9]+ tokens of the prompt" -- \
  "$bin" generate "$ck" --prompt "In the beginning God created the heaven" --tokens 20
grep -q "^In the beginning God created the heaven" "$tmp/out" && grep -qE "^\[20 tokens \([0-9]+ bytes\) in" "$tmp/out" &&
  ok "  ... the prompt and 20 decoded tokens" || bad "  ... generated text"
check "route --text through the tokenizer" 0 "on the first 32 tokens of each document" -- "$bin" route "$ck" --text "package main"
check "an export carries the tokenizer: generate from it alone" 0 "\"tokens\":5" -- \
  bash -c "'$bin' export '$ck' --path 1 '$tmp/p1.h5' >/dev/null && mv '$s/tokenizer.model' '$s/moved' &&
           '$bin' generate '$tmp/p1.h5' --prompt 'func main' --tokens 5 --json; code=\$?; mv '$s/moved' '$s/tokenizer.model'; exit \$code"
check "evaluate --text: bits per byte through the tokenizer" 0 "path 1: [0-9.]+ bits per byte on inputs/quickstart.ini \([0-9]+ bytes scored" -- \
  "$bin" evaluate "$tmp/p1.h5" --text inputs/quickstart.ini
ours=$(grep -oE "path 1: [0-9.]+ bits per byte" "$tmp/out" | grep -oE "[0-9]+\.[0-9]+")
theirs=$($py scripts/load-export "$tmp/p1.h5" inputs/quickstart.ini 2>&1 | grep -oE "[0-9]+\.[0-9]+ bits per byte" | grep -oE "^[0-9.]+")
$py -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(abs(a - b) > 1e-5)" "${ours:-nan}" "${theirs:-0}" &&
  ok "scripts/load-export scores the export with its own tokenizer: $theirs (dipaco: $ours)" || bad "load-export: '$theirs' vs '$ours'"

# The same store at np 1; the same again from the model file given.
run 1 --route.method=hash --run.name=np1 >"$tmp/np1.out" 2>&1 || bad "np 1" "$tmp/np1.out"
same=1
for f in corpus.bin corpus.idx docs.bin ids.bin meta.txt tokenizer.model; do cmp -s "$s/$f" "$(store np1)/$f" || { same=0; echo "differs: $f"; }; done
((same)) && ok "the tokenized store: the same bytes at np 1 and 2" || bad "store differs between rank counts"
run 2 --route.method=hash --run.name=given --data.tokenizer_model="$s/tokenizer.model" >"$tmp/given.out" 2>&1 || bad "given model" "$tmp/given.out"
cmp -s "$s/corpus.bin" "$(store given)/corpus.bin" && ok "data.tokenizer_model: the model given encodes the same ids" || bad "given model: other ids"

# Bad tokenizer input: exit 2, named.
head -c 3000 /dev/urandom >"$tmp/corrupt.model"
check "a missing model file" 2 "cannot open the tokenizer model '$tmp/none.model'" -- run 2 --run.name=b1 --data.tokenizer_model="$tmp/none.model"
check "a corrupt model file" 2 "'$tmp/corrupt.model' is not a SentencePiece model" -- run 2 --run.name=b2 --data.tokenizer_model="$tmp/corrupt.model"
check "a vocabulary larger than model.vocab_size" 2 "the tokenizer's ids .* are at or above model.vocab_size = 500|the tokenizer's ids .* is at or above model.vocab_size = 500" -- \
  run 2 --run.name=spm --model.vocab_size=500
check "data.tokenizer_model without data.tokenizer = sentencepiece" 2 "needs data.tokenizer = sentencepiece" -- \
  run 2 --run.name=b3 --data.tokenizer=bytes --data.tokenizer_model="$s/tokenizer.model"
check "too small a vocabulary to train" 2 "SentencePiece could not train a tokenizer" -- \
  run 2 --run.name=b4 --data.tokenizer_vocab=300 --data.tokenizer_sample_mb=0.01
finish
