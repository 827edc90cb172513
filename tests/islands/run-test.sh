#!/usr/bin/env bash
# MPI traffic really crosses the simulated link: 2 simulated hosts (network
# namespaces, scripts/islands), one rank each, MPI over TCP on a tc-shaped veth.
# Checks, from each host's eth0 byte counters and the run's summary.json, that
# the bytes dipaco reports as all-reduced went over the link, that the shaping
# slowed the outer syncs, and that the hosts are gone afterwards, also after a
# failed run. Usage: run-test.sh BUILD_DIR SOURCE_DIR
# Skips (exit 77: ctest's SKIP_RETURN_CODE, reported as skipped) where network namespaces cannot be made (not root / no CAP_NET_ADMIN).
set -u
build=$(cd "${1:?usage: run-test.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: run-test.sh BUILD_DIR SOURCE_DIR}" && pwd)
bin=$build/dipaco
t_start=$SECONDS
skip() { echo "SKIP islands: $1"; echo "0 passed, 0 failed (skipped)"; exit 77; }
[[ -x $bin ]] || { echo "FAIL no binary $bin"; echo "0 passed, 1 failed"; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || skip "ip/tc (iproute2) not installed"
command -v mpirun >/dev/null || skip "mpirun not installed"
export ISLANDS_PREFIX=dpt$$   # own namespace names: never touches another run's hosts
probe=$ISLANDS_PREFIX-probe
if ! ip netns add "$probe" 2>/dev/null; then
  skip "this machine does not allow network namespaces (ip netns add failed: needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN)"
fi
ip netns del "$probe"

tmp=$(mktemp -d /tmp/dpt.XXXX)
cleanup() {
  "$src/scripts/islands" down >/dev/null 2>&1
  if [[ -n ${DIPACO_KEEP_TMP:-} ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$src" || exit 1
export DIPACO_BIN=$bin OMP_NUM_THREADS=1

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {  # bad NAME DETAIL [FILE to show]
  fail=$((fail + 1)); echo "FAIL $1: $2"
  [[ -n ${3:-} && -f ${3:-} ]] && tail -20 "$3" | sed 's/^/     | /'
}
# json FILE EXPR: a value from a JSON file (d is the parsed document)
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

# A tiny model: a few rounds in seconds.
tiny=(--model.d_model=32 --model.n_layers=2 --model.n_heads=2 --model.context=64 --model.layers_per_level=0
      --train.batch_size=4 --train.warmup=5 --eval.every=0 --eval.batches=1 --run.log_every=100
      --run.restart=never --run.threads=1 --run.out_dir="$tmp/runs")
rate_bits=10000000  # 10mbit
replicas=()
"$bin" --help 2>/dev/null | grep -q dipaco.replica_mode && replicas=(--dipaco.replica_mode=diloco)

# 1. DiLoCo-style outer rounds (one path, its 2 ranks as workers: only the outer
#    syncs cross the link) over a 10 Mbit/s link.
"$src/scripts/islands" run 2 10mbit --json "$tmp/bytes-outer.json" -- run inputs/dipaco-2x2.ini --run.name=outer \
  "${tiny[@]}" --dipaco.modules_per_level=1 --dipaco.inner_steps=5 "${replicas[@]}" --train.steps=20 >"$tmp/outer.log" 2>&1
rc=$?
sum=$tmp/runs/outer/summary.json
if ((rc == 0)) && [[ -f $sum ]]; then ok "run across 2 simulated hosts (10mbit) finished"; else bad "run across 2 simulated hosts" "exit $rc" "$tmp/outer.log"; fi
if [[ -f $sum && -f $tmp/bytes-outer.json ]]; then
  reported=$(json "$sum" 'd["sync_bytes_per_rank"] + d["path_allreduce_bytes_per_rank"]')
  rounds=$(json "$sum" 'd["outer_rounds"]')
  for h in 0 1; do
    tx=$(json "$tmp/bytes-outer.json" "d['hosts'][$h]['tx_bytes']")
    rx=$(json "$tmp/bytes-outer.json" "d['hosts'][$h]['rx_bytes']")
    if ((rounds >= 3)) && ge "$reported" 100000 && ge "$tx" "$reported" && ge "$rx" "$reported"; then
      ok "host $((h + 1)) eth0 carried the all-reduced volume (tx $tx, rx $rx >= $reported bytes reported, $rounds rounds)"
    else
      bad "host $((h + 1)) eth0 bytes" "tx $tx rx $rx, reported all-reduced $reported bytes, $rounds rounds" "$tmp/outer.log"
    fi
  done
  # The shaping acted on that traffic: the outer syncs took at least half the
  # time their bytes need at 10 Mbit/s.
  sync_s=$(json "$sum" 'd["sync_seconds"]')
  need=$(json "$sum" "d['sync_bytes_per_rank'] * 8 / $rate_bits")
  if ge "$sync_s" "$(awk -v n="$need" 'BEGIN { print n / 2 }')"; then
    ok "outer syncs were rate-limited by the link ($sync_s s for $need s of bytes at 10 Mbit/s)"
  else
    bad "outer syncs rate-limited" "sync took $sync_s s, bytes need $need s at 10 Mbit/s" "$tmp/outer.log"
  fi
fi
grep -q "tcp_slow_start_after_idle=0" "$tmp/outer.log" && grep -q "shaping: .*tbf rate 10mbit" "$tmp/outer.log" &&
  ok "output says which shaping was applied" || bad "shaping line" "missing in the output" "$tmp/outer.log"

# 2. Data-parallel: the per-step gradient all-reduce crosses the link, unshaped.
"$src/scripts/islands" run 2 none --json "$tmp/bytes-dp.json" -- run inputs/dipaco-2x2.ini --run.name=dp \
  "${tiny[@]}" --dipaco.modules_per_level=1 --dipaco.inner_steps=0 --train.steps=10 >"$tmp/dp.log" 2>&1
rc=$?
sum=$tmp/runs/dp/summary.json
if ((rc == 0)) && [[ -f $sum && -f $tmp/bytes-dp.json ]]; then
  reported=$(json "$sum" 'd["path_allreduce_bytes_per_rank"]')
  tx=$(json "$tmp/bytes-dp.json" "min(h['tx_bytes'] for h in d['hosts'])")
  rx=$(json "$tmp/bytes-dp.json" "min(h['rx_bytes'] for h in d['hosts'])")
  if ge "$reported" 100000 && ge "$tx" "$reported" && ge "$rx" "$reported"; then
    ok "data-parallel gradients crossed the link (each host tx >= $tx, rx >= $rx, reported $reported bytes)"
  else
    bad "data-parallel bytes" "tx $tx rx $rx, reported $reported" "$tmp/dp.log"
  fi
else
  bad "data-parallel run across 2 simulated hosts" "exit $rc" "$tmp/dp.log"
fi

# 3. Teardown: after a run and after a failed run, none of our hosts are left.
left=$(ip netns list | grep -c "^$ISLANDS_PREFIX-")
((left == 0)) && ok "hosts removed after the runs" || bad "teardown" "$left namespace(s) left"
"$src/scripts/islands" run 2 none -- run inputs/dipaco-2x2.ini --run.name=broken "${tiny[@]}" \
  --data.corpus="$tmp/missing.jsonl" >"$tmp/broken.log" 2>&1
rc=$?
left=$(ip netns list | grep -c "^$ISLANDS_PREFIX-")
if ((rc != 0 && left == 0)); then ok "a failed run exits $rc and removes its hosts"; else bad "failed run" "exit $rc, $left namespace(s) left" "$tmp/broken.log"; fi

echo "islands test: $((SECONDS - t_start)) s"
echo "$pass passed, $fail failed"
((fail == 0))
