#!/usr/bin/env bash
# Datasets other tools tokenized, end to end: a Megatron-LM indexed dataset
# (PREFIX.bin + PREFIX.idx) and a set of llm.c GPT-2 token shards, each written
# here by an independent writer (numpy, following Megatron's indexed_dataset.py
# and llm.c's data_common.py), train a 2x2 DiPaCo run read in place (no copy of
# the tokens); the model's vocabulary comes from the data; the store is the same
# at np 1, 2 and 4; each bad token input is refused with exit 2 naming the file.
# Usage: tokens.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
run() { run2x2 "$@"; }
refuse() {  # refuse NAME PATTERN CORPUS [deck overrides]
  check "$1" 2 "$2" -- run 2 --data.corpus="$3" --route.method=hash --run.name=bad "${@:4}"
  [[ ! -e $(store bad)/meta.txt ]] || bad "$1: a store was left"
  rm -rf "$tmp/runs/bad"
}

# Token ids from the embedded corpus's text: each byte b becomes 300 + 7 b (ids
# past 255, so a byte-level reader would be caught), one document per line.
$py - "$tmp" <<'PY'
import json, os, sys, numpy as np
tmp = sys.argv[1]
docs = [[300 + 7 * b for b in json.loads(l)["text"].encode()] for l in open("inputs/corpus/embedded.jsonl")]

def megatron(prefix, docs, dtype, code, eod=None):
    # Megatron-LM's MMIDIDX writer: one sequence per document, pointers in bytes.
    seqs = [np.array(d + ([eod] if eod is not None else []), dtype) for d in docs]
    with open(prefix + ".bin", "wb") as f:
        for s in seqs: f.write(s.tobytes())
    sizes = np.array([len(s) for s in seqs], np.int32)
    pointers = np.concatenate([[0], np.cumsum(sizes[:-1].astype(np.int64) * np.dtype(dtype).itemsize)]).astype(np.int64)
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00"); f.write(np.uint64(1).tobytes()); f.write(np.uint8(code).tobytes())
        f.write(np.uint64(len(seqs)).tobytes()); f.write(np.uint64(len(seqs) + 1).tobytes())
        f.write(sizes.tobytes()); f.write(pointers.tobytes()); f.write(np.arange(len(seqs) + 1, dtype=np.int64).tobytes())

def llmc(path, docs):
    # llm.c's write_datafile (GPT-2): 256 int32 header, then uint16 tokens, <|endoftext|> before each document.
    toks = np.array([t for d in docs for t in [50256] + d], np.uint16)
    header = np.zeros(256, np.int32); header[:3] = [20240520, 1, len(toks)]
    with open(path, "wb") as f: f.write(header.tobytes()); f.write(toks.tobytes())

os.makedirs(f"{tmp}/mega", exist_ok=True); os.makedirs(f"{tmp}/eod", exist_ok=True); os.makedirs(f"{tmp}/llmc", exist_ok=True)
megatron(f"{tmp}/mega/text_document", docs, np.uint16, 8)
megatron(f"{tmp}/eod/text_document", docs, np.int32, 4, eod=2)  # --append-eod, int32 as for a large vocabulary
llmc(f"{tmp}/llmc/tiny_train_000000.bin", docs[: len(docs) // 2])
llmc(f"{tmp}/llmc/tiny_train_000001.bin", docs[len(docs) // 2 :])
# Bad inputs, each a copy with one fault.
bad = f"{tmp}/bad"; os.makedirs(bad, exist_ok=True)
megatron(f"{bad}/short", docs[:40], np.uint16, 8)
os.truncate(f"{bad}/short.bin", os.path.getsize(f"{bad}/short.bin") - 6)
megatron(f"{bad}/legacy", docs[:40], np.uint16, 8)
with open(f"{bad}/legacy.idx", "r+b") as f: f.write(b"TNTIDX\x00\x00")
megatron(f"{bad}/version", docs[:40], np.uint16, 8)
with open(f"{bad}/version.idx", "r+b") as f: f.seek(9); f.write(np.uint64(2).tobytes())
megatron(f"{bad}/float", [list(map(float, d)) for d in docs[:40]], np.float32, 7)
megatron(f"{bad}/negative", [d if i != 7 else d[:5] + [-3] + d[5:] for i, d in enumerate(docs[:40])], np.int32, 4)
llmc(f"{bad}/count.bin", docs[:40])
with open(f"{bad}/count.bin", "r+b") as f: f.seek(8); f.write(np.int32(12345).tobytes())
PY

# ---- Megatron: read in place, vocabulary from the data
check "a Megatron .bin/.idx pair trains a 2x2 run" 0 "stage prepare: $tmp/mega/text_document: [0-9]+ training and [0-9]+ validation documents" -- \
  run 2 --data.corpus="$tmp/mega/text_document" --route.method=kmeans --run.name=mega
m=$(store mega)
max=$($py -c "import json; print(max(300 + 7 * b for l in open('inputs/corpus/embedded.jsonl') for b in json.loads(l)['text'].encode()))")
if [[ ! -e $m/corpus.bin ]] && grep -qx "$tmp/mega/text_document.bin" "$m/sources.txt" &&
   grep -qx "vocab_size = $((max + 2))" "$m/meta.txt" && grep -qx "eod = $((max + 1))" "$m/meta.txt"; then
  ok "Megatron: the tokens read where they lie; vocabulary = largest id + 2 (a new end-of-document id)"
else bad "Megatron store" "$m/meta.txt"; fi
$py - "$m" "$tmp/mega/text_document" >"$tmp/check.out" 2>&1 <<'PY' && ok "the store's index points at each Megatron document's tokens" || bad "store index vs Megatron" "$tmp/check.out"
import sys, numpy as np
store, prefix = sys.argv[1:]
def idx(path):
    b = open(path, "rb").read(); n = int(np.frombuffer(b, np.uint64, 1, 18)[0])
    return b[17], np.frombuffer(b, np.int32, n, 34), np.frombuffer(b, np.int64, n, 34 + 4 * n)
code, sizes, pointers = idx(f"{store}/corpus.idx")
code0, sizes0, pointers0 = idx(prefix + ".idx")
assert code == code0 == 8, (code, code0)
assert (sizes == sizes0).all() and (pointers == pointers0).all()
PY
check "Megatron with --append-eod (int32): a document's last end-of-text token is its end, not doubled" 0 "stage prepare: .* documents" -- \
  run 2 --data.corpus="$tmp/eod/text_document.idx" --data.eot_token=2 --route.method=hash --run.name=eod
$py - "$(store eod)" "$tmp/mega/text_document" >"$tmp/check.out" 2>&1 <<'PY' && ok "eod-appended documents: the same sizes as without, eod = 2" || bad "eod sizes" "$tmp/check.out"
import sys, numpy as np
store, prefix = sys.argv[1:]
def sizes(path):
    b = open(path, "rb").read(); n = int(np.frombuffer(b, np.uint64, 1, 18)[0])
    return np.frombuffer(b, np.int32, n, 34)
assert (sizes(f"{store}/corpus.idx") == sizes(prefix + ".idx")).all()
assert "eod = 2\n" in open(f"{store}/meta.txt").read()
PY

unit() { $py -c "import json,sys; print(json.load(open(sys.argv[1]))['loss_unit'])" "$1"; }
[[ "$(unit "$tmp/runs/mega/summary.json")" == "bits per token" && "$(unit "$tmp/runs/mega/eval.json")" == "bits per token" ]] &&
  ok "a token run reports its loss as bits per token, named so (summary.json, eval.json)" || bad "loss unit" "$tmp/runs/mega/summary.json"

# ---- llm.c shards: documents between end-of-text tokens, GPT-2's vocabulary
check "llm.c GPT-2 shards (a glob) train a 2x2 run" 0 "stage prepare: .*: [0-9]+ training and [0-9]+ validation documents" -- \
  run 2 --data.corpus="$tmp/llmc/tiny_train_*.bin" --route.method=kmeans --run.name=llmc
l=$(store llmc)
n=$(wc -l <inputs/corpus/embedded.jsonl)
if grep -qx "vocab_size = 50257" "$l/meta.txt" && grep -qx "eod = 50256" "$l/meta.txt" && grep -qx "documents = $n" "$l/meta.txt" &&
   grep -q "tiny_train_000001.bin:1" "$l/ids.bin" && [[ ! -e $l/corpus.bin ]]; then
  ok "llm.c: $n documents split at <|endoftext|>, ids FILE:N, vocabulary 50257, read in place"
else bad "llm.c store" "$l/meta.txt"; fi

# llm.c's tokenizer file as the decode table: each id's bytes (here two for each, so the scored bytes double).
$py - "$tmp/llmc/tokenizer.bin" <<'PY'
import sys, numpy as np
header = np.zeros(256, np.uint32); header[:4] = [20240328, 2, 50257, 50256]
with open(sys.argv[1], "wb") as f:
    f.write(header.tobytes())
    for i in range(50257):
        piece = b"<|endoftext|>" if i == 50256 else bytes([(i - 300) // 7]) * 2 if i >= 300 and (i - 300) % 7 == 0 and (i - 300) // 7 < 256 else b""
        f.write(bytes([len(piece)]) + piece)
PY
check "llm.c shards with their decode table: bits per byte" 0 "routed validation: [0-9.]+ bits per byte over [0-9]+ scored bytes" -- \
  run 2 --data.corpus="$tmp/llmc/tiny_train_*.bin" --data.decode_table="$tmp/llmc/tokenizer.bin" --route.method=kmeans --run.name=llmc_bytes
$py - "$tmp/runs/llmc/eval.json" "$tmp/runs/llmc_bytes/eval.json" >"$tmp/check.out" 2>&1 <<'PY' && ok "  ... each target counts its bytes from the table (two a token, one for <|endoftext|>)" || bad "decode table bytes" "$tmp/check.out"
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
assert a["loss_unit"] == "bits per token" and b["loss_unit"] == "bits per byte", (a["loss_unit"], b["loss_unit"])
assert 1.9 < b["scored_bytes"] / a["scored_bytes"] <= 2.0, (a["scored_bytes"], b["scored_bytes"])
PY
head -c 2000 "$tmp/llmc/tokenizer.bin" >"$tmp/bad/short-tokenizer.bin"
refuse "a decode table cut short" "short-tokenizer.bin: ends at token [0-9]+ of 50257" "$tmp/llmc/tiny_train_*.bin" --data.decode_table="$tmp/bad/short-tokenizer.bin"

# ---- the same store at any rank count (Megatron in pieces of ~20 kB)
for np in 1 2 4; do
  run $np --data.corpus="$tmp/mega/text_document" --data.piece_mb=0.02 --route.method=hash --run.name=np$np \
    >"$tmp/np$np.out" 2>&1 || bad "Megatron at np $np" "$tmp/np$np.out"
done
same=1
for f in corpus.idx docs.bin ids.bin domains.txt meta.txt sources.txt; do
  cmp -s "$(store np1)/$f" "$(store np2)/$f" && cmp -s "$(store np1)/$f" "$(store np4)/$f" || { same=0; echo "differs: $f"; }
done
((same)) && ok "token store: the same bytes at np 1, 2 and 4" || bad "token store differs between rank counts"

# ---- bad token inputs: exit 2, the file named, no store left
refuse "an .idx whose sizes disagree with its .bin" "short.idx: its sizes end at byte [0-9]+ but .*short.bin holds" "$tmp/bad/short"
refuse "Megatron's legacy TNTIDX index" "legacy.idx: Megatron's legacy TNTIDX" "$tmp/bad/legacy"
refuse "an .idx of version 2" "version.idx: version 2, expected 1" "$tmp/bad/version"
refuse "float tokens" "float.idx: dtype code 7 is not an integer type" "$tmp/bad/float"
refuse "a negative token id, with its byte offset" "negative.bin: token id -3 at byte [0-9]+ is negative" "$tmp/bad/negative"
refuse "an llm.c header whose count disagrees with the file" "count.bin: the llm.c header says 12345 tokens" "$tmp/bad/count.bin"
refuse "text and token files mixed" "mix JSONL text with token files" "$tmp/mega/text_document,inputs/corpus/embedded.jsonl"
# The data is sound, the deck is not: the store stays for the corrected deck.
check "a token id at or above model.vocab_size" 2 "token id $max \(document text_document.bin:[0-9]+\) is at or above model.vocab_size = 1000" -- \
  run 2 --data.corpus="$tmp/mega/text_document" --route.method=hash --run.name=mega --model.vocab_size=1000
check "generate on a token model without a tokenizer says so" 2 "vocabulary of $((max + 2)) token ids" -- \
  "$bin" generate "$(ls "$tmp"/runs/mega/checkpoints/ckpt-*.h5 | tail -1)" --prompt hello --tokens 5
check "evaluate a token model's path on its shard: bits per token" 0 "path 1: validation bits per token [0-9.]+ on its own shard" -- \
  "$bin" evaluate "$(ls "$tmp"/runs/mega/checkpoints/ckpt-*.h5 | tail -1)" --path 1
check "route --text on a token model says so" 2 "route reads and writes text, so it needs a byte-level or SentencePiece model" -- \
  "$bin" route "$(ls "$tmp"/runs/mega/checkpoints/ckpt-*.h5 | tail -1)" --text hello
finish
