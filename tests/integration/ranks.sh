#!/usr/bin/env bash
# The same deck gives bitwise the same final weights, optimizer state and step
# at 1, 2 and 4 ranks, and a run stopped at one rank count and resumed at
# another matches them too. The deck has a warm start (data-parallel over all
# ranks, in fixed micro-batches: train.micro_batch), k-means routing and
# outer rounds over 4 paths. Usage: ranks.sh BUILD_DIR SOURCE_DIR
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
deck=(inputs/dipaco-2x2.ini --model.d_model=32 --model.context=64 --train.steps=30 --dipaco.inner_steps=10
      --route.method=kmeans --route.warm_steps=10 --train.micro_batch=4 --eval.every=10 --eval.batches=1
      --checkpoint.every=10 --run.log_every=10)
run() {  # run NP NAME [keys...]
  local np=$1 name=$2
  shift 2
  OMP_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$bin" run "${deck[@]}" \
    --run.out_dir="$tmp" --run.name="$name" "$@" >"$tmp/out" 2>&1
}
final=checkpoints/ckpt-00000030.h5
for np in 1 2 4; do
  run $np np$np && [[ -f $tmp/np$np/$final ]] && ok "np $np: trained" || bad "np $np: run failed"
done
for np in 2 4; do
  if cmp=$(tests/integration/same-weights.py "$tmp/np1/$final" "$tmp/np$np/$final" 2>&1); then ok "np 1 and np $np: $cmp"
  else bad "np 1 and np $np: $cmp"; fi
done
# Stopped at 2 ranks after 20 steps (exit 3), resumed at 4, then at 1 for the last 10.
run 2 moved --run.stop_after=20
[[ $? -eq 3 ]] && ok "np 2: stopped with a checkpoint (exit 3)" || bad "np 2: stop_after did not exit 3"
run 4 moved
if [[ $? -eq 0 ]] && grep -q "resumed from .*at step 20 " "$tmp/out"; then ok "np 4: resumed at step 20 and finished"
else bad "np 4: resume"; fi
if cmp=$(tests/integration/same-weights.py "$tmp/np1/$final" "$tmp/moved/$final" 2>&1); then ok "stopped at np 2, resumed at np 4: $cmp"
else bad "stopped at np 2, resumed at np 4: $cmp"; fi
g1=$(grep -o '"routed_val_bpb":[^,]*' "$tmp/np1/summary.json") g4=$(grep -o '"routed_val_bpb":[^,]*' "$tmp/np4/summary.json")
[[ -n $g1 && $g1 == "$g4" ]] && ok "routed validation equal at np 1 and 4 ($g1)" || bad "routed validation: '$g1' vs '$g4'"
# Compressed outer gradients (int8 with error feedback): the ring sums in an order
# fixed by the paths alone, so weights and residuals (/paths/outer_error) are bitwise
# the same at 1 and 4 ranks, and after a stop mid-round at 2 ranks resumed at 4 (the
# residuals kept since step 10 come back from the checkpoint for the round at step 20).
for np in 1 4; do
  run $np int8-np$np --dipaco.outer_dtype=int8 || bad "int8 at np $np: run failed"
done
run 2 int8-moved --dipaco.outer_dtype=int8 --run.stop_after=15
[[ $? -eq 3 ]] || bad "int8 at np 2: stop_after did not exit 3"
run 4 int8-moved --dipaco.outer_dtype=int8 || bad "int8 resumed at np 4: run failed"
for other in int8-np4 int8-moved; do
  if cmp=$(tests/integration/same-weights.py "$tmp/int8-np1/$final" "$tmp/$other/$final" 2>&1); then ok "int8, np 1 and $other: $cmp"
  else bad "int8, np 1 and $other: $cmp"; fi
done
if /usr/bin/python3 - "$tmp/int8-np1/$final" "$tmp/np1/$final" <<'PY'
import sys, h5py, numpy as np
q, f = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
e = q["paths/outer_error"][()]
# Residuals are held, small against the moves they correct, and fp32 runs keep none.
ok = np.abs(e).max() > 0 and "outer_error" not in f["paths"]
a, b = q["modules/L0/M0/anchor"][()], f["modules/L0/M0/anchor"][()]
ok = ok and 0 < np.abs(a - b).max() < 0.05 * np.abs(b).max()
sys.exit(0 if ok else 1)
PY
then ok "int8: residuals stored in /paths/outer_error, anchors within 5% of fp32's"
else bad "int8: /paths/outer_error missing or zero, or the anchors far from fp32's"; fi

# Segment shards (route.segment_tokens): each path's windows are cut at the
# first start and read back from segments.h5 at the next (at another rank count);
# without that file they are cut again, the same ones.
seg=(--route.segment_tokens=16 --route.segment_window=24)
run 1 seg-np1 "${seg[@]}" && grep -q "^segment shards: .* placed by the 24 tokens before them, cut in" "$tmp/out" ||
  bad "segments at np 1: run failed or no 'segment shards ... cut' line"
run 2 seg-moved "${seg[@]}" --run.stop_after=20
[[ $? -eq 3 && -f $tmp/seg-moved/segments.h5 ]] || bad "segments at np 2: stop_after did not exit 3 or left no segments.h5"
run 4 seg-moved "${seg[@]}" && grep -q "^segment shards: .* read back in" "$tmp/out" ||
  bad "segments resumed at np 4: run failed or did not read segments.h5 back"
run 2 seg-cut --run.stop_after=20 "${seg[@]}"
rm "$tmp/seg-cut/segments.h5" || bad "segments at np 2: no segments.h5 to remove"
run 4 seg-cut "${seg[@]}" && grep -q "^segment shards: .* cut in" "$tmp/out" || bad "segments without segments.h5: not cut again"
if cmp=$(tests/integration/same-weights.py "$tmp/seg-np1/$final" "$tmp/seg-cut/$final" 2>&1); then
  ok "segment shards, np 1 and stopped at np 2, cut again at np 4: $cmp"
else bad "segment shards, np 1 and stopped at np 2, cut again at np 4: $cmp"; fi
if cmp=$(tests/integration/same-weights.py "$tmp/seg-np1/$final" "$tmp/seg-moved/$final" 2>&1); then
  ok "segment shards, np 1 and stopped at np 2, resumed at np 4: $cmp"
else bad "segment shards, np 1 and stopped at np 2, resumed at np 4: $cmp"; fi
tests/integration/same-weights.py "$tmp/np1/$final" "$tmp/seg-np1/$final" >/dev/null 2>&1 &&
  bad "segment shards trained the same weights as whole documents" || ok "segment shards train other weights than whole documents"

# Overlapped rounds (int8, tau = 3): the sums travel while the paths train steps
# 11-13, merged at 13; the checkpoint due at 20 waits for the merge at 23, and a stop
# at step 12 (inside the flight) writes its checkpoint at 13. Bitwise the same at 1
# and 4 ranks and after that stop at 2 ranks resumed at 4.
ov=(--dipaco.outer_dtype=int8 --dipaco.overlap_steps=3)
for np in 1 4; do
  run $np ov-np$np "${ov[@]}" || bad "overlap at np $np: run failed"
done
run 2 ov-moved "${ov[@]}" --run.stop_after=12
code=$?
[[ $code -eq 3 && -f $tmp/ov-moved/checkpoints/ckpt-00000013.h5 ]] && ok "overlap: a stop at step 12 waited for the merge at 13 (exit 3)" ||
  bad "overlap: stop at 12 gave exit $code, $(ls "$tmp/ov-moved/checkpoints" 2>&1 | tr '\n' ' ')"
run 4 ov-moved "${ov[@]}" || bad "overlap resumed at np 4: run failed"
[[ -f $tmp/ov-np1/checkpoints/ckpt-00000023.h5 && ! -f $tmp/ov-np1/checkpoints/ckpt-00000020.h5 ]] &&
  ok "overlap: the checkpoint due at 20 was written after the merge, at 23" || bad "overlap: checkpoint steps $(ls "$tmp/ov-np1/checkpoints" | tr '\n' ' ')"
for other in ov-np4 ov-moved; do
  if cmp=$(tests/integration/same-weights.py "$tmp/ov-np1/$final" "$tmp/$other/$final" 2>&1); then ok "overlap, np 1 and $other: $cmp"
  else bad "overlap, np 1 and $other: $cmp"; fi
done
if /usr/bin/python3 - "$tmp/ov-np1/checkpoints/ckpt-00000023.h5" "$tmp/ov-np1/$final" <<'PY'
import sys, h5py
groups = lambda f: h5py.File(f, "r")["paths/params"].attrs["groups"]
g23, g30 = groups(sys.argv[1]), groups(sys.argv[2])
g23 = (g23.decode() if isinstance(g23, bytes) else g23).split()
g30 = (g30.decode() if isinstance(g30, bytes) else g30).split()
# After a merge each path keeps what it learnt in flight: its copies differ from the anchors and are
# stored; the last round (step 30) is blocking, so the copies equal the anchors and are left out.
sys.exit(0 if g23 == ["embeddings", "L0", "L1"] and g30 == [] else 1)
PY
then ok "overlap: merged copies keep the steps trained in flight (stored at 23), the last round leaves the anchors (30)"
else bad "overlap: stored params groups at 23 and 30 not as expected"; fi

# DiLoCo replicas (two ranks, one path, H = 4): a run stopped every 2 steps and
# resumed ends bitwise where an uninterrupted one does (each replica is stored
# and restored), and with private embeddings the replicas' embeddings agree
# after the last round (they are averaged among the replicas of the path).
replicas=(inputs/dense.ini --model.d_model=32 --model.n_layers=2 --model.context=64 --train.steps=8
          --dipaco.inner_steps=4 --dipaco.replica_mode=diloco --dipaco.shared=none --eval.every=0 --eval.batches=1
          --checkpoint.every=2 --run.log_every=2)
rrun() { OMP_NUM_THREADS=1 timeout 300 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" run "${replicas[@]}" \
           --run.out_dir="$tmp" "$@" >"$tmp/out" 2>&1; }
rrun --run.name=replicas
codes=
for i in 1 2 3 4 5; do
  rrun --run.name=replicas-stopped --run.stop_after=2
  code=$?
  codes+="$code "
  [[ $code -eq 3 ]] || break
done
last=checkpoints/ckpt-00000008.h5
if [[ $code -eq 0 ]] && cmp=$(tests/integration/same-weights.py "$tmp/replicas/$last" "$tmp/replicas-stopped/$last" 2>&1); then
  ok "DiLoCo replicas stopped every 2 steps (exits $codes): $cmp"
else
  bad "DiLoCo replicas resume: exits $codes ${cmp:-}"
fi
if /usr/bin/python3 - "$tmp/replicas/$last" <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
groups = f["paths/params"].attrs["groups"]
groups = (groups.decode() if isinstance(groups, bytes) else groups).split()
m = f["paths/adam_m"]
differ_inside = m.shape[1] == 2 and not np.array_equal(m[0, 0], m[0, 1])
# The replicas' embeddings equal their anchor bitwise, so params leaves them out: they are stored once.
sys.exit(0 if "embeddings" not in groups and differ_inside and "path_embeddings" in f["modules"] else 1)
PY
then ok "DiLoCo replicas with private embeddings: both stored, embeddings equal after the last round (stored once)"
else bad "DiLoCo replicas: embeddings of the two replicas differ, or replica 1 not stored"; fi
finish
