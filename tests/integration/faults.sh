#!/usr/bin/env bash
# A rank that stops responding (SIGSTOP) or dies (SIGKILL) mid-run: the job
# ends within a bounded time with a clear message, the last checkpoint stays
# intact, and the same command resumes from it. Usage: faults.sh BUILD_DIR SOURCE_DIR
# The runs are long by construction (fault.step_delay: every step sleeps, so the
# 100 steps last at least 5 s on any machine); each fault is injected only once
# the first checkpoint exists, never by hoping the machine is slow.
set -u
build=$1 src=$2
bin=$build/dipaco
cd "$src"
source tests/integration/lib.sh
deck=(inputs/dense.ini --model.d_model=32 --model.n_layers=2 --model.context=64 --train.steps=100
      --fault.step_delay=0.05 --checkpoint.every=20 --run.log_every=5 --eval.every=0 --eval.batches=1 --run.collective_timeout=4)

# Starts a 2-rank run in the background; waits for its first checkpoint.
start() {  # start NAME
  OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" run "${deck[@]}" \
    --run.out_dir="$tmp" --run.name="$1" >"$tmp/out" 2>&1 &
  job=$!
  for _ in $(seq 600); do
    [[ -f $tmp/$1/checkpoints/latest ]] && return 0
    sleep 0.1
  done
  return 1
}
rank_pid() {  # rank_pid NAME RANK: the PID of that rank of our own run
  for p in $(pgrep -f "run.name=$1"); do
    [[ $(cat /proc/$p/comm 2>/dev/null) == dipaco ]] || continue
    tr '\0' '\n' </proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return; }
  done
}

# 1. An unresponsive peer: exit 4 with the message, well within a minute.
if start stopped; then
  pid=$(rank_pid stopped 1)
  kill -STOP "$pid"
  t0=$(date +%s)
  wait "$job"; code=$?
  dt=$(($(date +%s) - t0))
  kill -KILL "$pid" 2>/dev/null
  if [[ $code -eq 4 ]] && grep -q "a peer rank died or stopped responding" "$tmp/out" && ((dt < 60)); then
    ok "stopped peer: exit 4 after ${dt}s with a clear message"
  else
    bad "stopped peer: exit $code after ${dt}s"
  fi
  "$bin" inspect "$tmp/stopped/checkpoints/$(cat "$tmp/stopped/checkpoints/latest")" >/dev/null && ok "checkpoint intact after a hang" || bad "checkpoint after a hang"
else
  bad "stopped peer: no checkpoint appeared"
fi

# 2. A killed rank: the job ends; the same command resumes from the last checkpoint and finishes.
if start killed; then
  kill -KILL "$(rank_pid killed 1)"
  wait "$job"; code=$?
  [[ $code -ne 0 ]] && ok "killed rank: job ended (exit $code)" || bad "killed rank: exit 0?"
  last=$(cat "$tmp/killed/checkpoints/latest")
  step=$((10#$(echo "$last" | sed -E "s/^ckpt-([0-9]+)\\.h5$/\\1/")))
  OMP_NUM_THREADS=1 timeout 600 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" run "${deck[@]}" \
    --run.out_dir="$tmp" --run.name=killed >"$tmp/out" 2>&1
  code=$?
  if [[ $code -eq 0 ]] && grep -q "resumed from .*at step $step " "$tmp/out"; then
    ok "killed rank: resumed at step $step (the last checkpoint) and finished"
  else
    bad "killed rank: resume (exit $code, wanted resume at step $step)"
  fi
else
  bad "killed rank: no checkpoint appeared"
fi
# 3. How users stop a job: SIGUSR1 to mpirun is passed on to the ranks: exit 3.
#    SIGTERM (kill) and SIGINT (Ctrl-C) make mpirun end the job: it sends SIGTERM
#    to the ranks, which write a checkpoint and exit 3, but mpirun itself
#    reports 1 (the README documents both; slurm/train.sbatch turns a SIGTERM
#    into SIGUSR1, so scancel gives 3). mpirun passes the SIGTERM on after
#    odls_base_sigkill_timeout seconds (1 by default) and sends SIGKILL as long
#    again later: the run never finishes (100 steps last at least 5 s), and it
#    ends on a checkpoint that verifies, the one of its stop when it printed one.
for sig in USR1 TERM INT; do
  name=sig-$sig
  want=$([[ $sig == USR1 ]] && echo 3 || echo 1)
  if start "$name"; then
    kill -"$sig" "$job"
    wait "$job"; code=$?
    stop=$(grep -oE "stopped at step [0-9]+ \(signal received\)" "$tmp/out" | grep -oE "[0-9]+")
    ckpt=$(printf 'ckpt-%08d.h5' "${stop:-0}")
    latest=$(cat "$tmp/$name/checkpoints/latest" 2>/dev/null)
    if [[ $sig != USR1 && -z $stop && $code -eq $want && $latest != ckpt-00000100.h5 ]] &&
       "$bin" inspect "$tmp/$name/checkpoints/$latest" >/dev/null 2>&1; then
      ok "SIG$sig to mpirun: killed before its checkpoint, exit $code, $latest intact"
    elif [[ $code -eq $want && -n $stop && $latest == "$ckpt" ]]; then
      ok "SIG$sig to mpirun: checkpoint at step $stop, exit $code"
    else
      bad "SIG$sig to mpirun: exit $code (wanted $want), stopped at '${stop}', latest $(cat "$tmp/$name/checkpoints/latest" 2>/dev/null)"
    fi
  else
    bad "SIG$sig: no checkpoint appeared"
  fi
done
# 4. Stop signals land anywhere: a storm of SIGUSR1 sent straight to both ranks
#    (as fast as the shell goes, from the moment both block it, i.e. before
#    their first step, until the job has exited) lands in the set-up stages,
#    the matmuls, the all-reduces, the checkpoint. Taken by one waiting thread,
#    none of them disturbs the others: since the first signal is in before step
#    1 on any machine, the run stops at its first chunk end (step 300, no
#    sleeping steps) with exit 3 and a checkpoint that verifies. Handled on
#    whichever thread it hit, such a storm corrupted the heap inside oneDNN
#    within seconds.
OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" run "${deck[@]}" \
  --model.context=128 --fault.step_delay=0 --train.steps=2000 --run.log_every=300 --checkpoint.every=0 \
  --run.out_dir="$tmp" --run.name=storm >"$tmp/out" 2>&1 &
job=$!
# SIGUSR1 is bit 10 of SigBlk (mask 0x200) once a rank has installed its stop thread.
blocks_usr1() { local m; m=$(awk '/^SigBlk/ { print $2 }' "/proc/$1/status" 2>/dev/null) && ((0x${m:-0} & 0x200)); }
ranks=
for ((i = 0; i < 1200; i++)); do  # at most a minute
  ranks=$(pgrep -P "$job" -f "run.name=storm" | tr '\n' ' ')
  n=0
  for r in $ranks; do blocks_usr1 "$r" && n=$((n + 1)); done
  ((n == 2)) && break
  sleep 0.05
done
sent=0
for ((i = 0; i < 60000; i++)); do  # until mpirun has exited; at most about a minute
  kill -0 "$job" 2>/dev/null || break
  kill -USR1 $ranks 2>/dev/null && sent=$((sent + 1))  # builtin: as fast as the shell goes
  ((i % 4)) || sleep 0.001
done
kill -0 "$job" 2>/dev/null && kill -KILL "$job"  # never stopped: the check below fails
wait "$job"; code=$?
latest=$(cat "$tmp/storm/checkpoints/latest" 2>/dev/null)
if [[ $code -eq 3 && $latest == ckpt-00000300.h5 ]] && grep -q "stopped at step 300 (signal received)" "$tmp/out" &&
   "$bin" inspect "$tmp/storm/checkpoints/$latest" >/dev/null 2>&1; then
  ok "a storm of $sent SIGUSR1 rounds to both ranks: stopped at step 300 with exit 3, $latest intact"
else
  bad "a storm of $sent SIGUSR1 rounds to both ranks: exit $code (wanted 3), latest checkpoint '$latest' (wanted ckpt-00000300.h5)"
fi
finish
