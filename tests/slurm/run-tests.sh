#!/usr/bin/env bash
# The Slurm job scripts on a real (private, single-node) Slurm cluster:
# a run, a preempted run that resumes, a sweep array collected into a table,
# and a broken deck. Usage: run-tests.sh BUILD_DIR SOURCE_DIR
# Installs munge and Slurm when missing (root). Takes about a minute.
set -u
build=$(cd "${1:?usage: run-tests.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: run-tests.sh BUILD_DIR SOURCE_DIR}" && pwd)
bin=$build/dipaco
t_start=$SECONDS
if [[ ! -x $bin ]]; then
  echo "FAIL no binary $bin"
  echo "0 passed, 1 failed"
  exit 1
fi

source "$src/tests/slurm/cluster.sh"
tmp=$(mktemp -d /tmp/dps.XXXX)  # short: munge's socket path must stay short
cleanup() {
  cluster_down "$tmp/c"
  if [[ -n ${DIPACO_KEEP_TMP:-} ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
export CLUSTER_CPUS=8  # more than the cores: the jobs here are tiny
if ! cluster_up "$tmp/c"; then
  echo "FAIL slurm cluster did not start"
  echo "0 passed, 1 failed"
  exit 1
fi

cd "$src" || exit 1  # decks name the corpus relative to the repository root
export DIPACO_BIN=$bin DIPACO_OUT_DIR=$tmp/runs
unset DIPACO_RUN_NAME OMP_NUM_THREADS
mkdir -p "$tmp/out"
sbatch_opts=(--parsable --time=10 --ntasks=1 --output="$tmp/out/%x-%j.out")
# Small enough for a few seconds per run.
tiny=(--train.steps=200 --model.d_model=32 --model.n_layers=2 --eval.batches=1 --eval.every=50 --run.log_every=50)

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {  # bad NAME DETAIL [FILE to show]
  fail=$((fail + 1)); echo "FAIL $1: $2"
  [[ -n ${3:-} && -f ${3:-} ]] && tail -20 "$3" | sed 's/^/     | /'
}

# Waits until the job (every task of an array) has ended; prints the highest
# exit code (128+N when killed by signal N). Fails after TIMEOUT seconds.
wait_job() {  # wait_job ID TIMEOUT
  local id=$1 deadline=$((SECONDS + $2)) info
  while ((SECONDS < deadline)); do
    info=$(scontrol show job -o "$id" 2>/dev/null)
    if [[ -n $info ]] && ! grep -qE 'JobState=(PENDING|RUNNING|REQUEUED|CONFIGURING|COMPLETING|SUSPENDED|REQUEUE_HOLD|RESIZING)' <<<"$info"; then
      grep -oE ' ExitCode=[0-9]+:[0-9]+' <<<"$info" |
        awk -F'[=:]' '{ c = ($3 > 0) ? 128 + $3 : $2; if (c > m) m = c } END { print m + 0 }'
      return 0
    fi
    sleep 0.25
  done
  echo "timeout"
  scancel "$id" 2>/dev/null
  return 1
}
json_value() {  # json_value FILE KEY: a number as written
  grep -o "\"$2\":[^,}]*" "$1" 2>/dev/null | head -1 | cut -d: -f2
}

# --- submit what can run side by side --------------------------------------
# Two ranks: mpirun must take both slots from the allocation and pass the
# stop signal to both.
ref=$(sbatch "${sbatch_opts[@]}" --ntasks=2 -J ref slurm/train.sbatch inputs/dense.ini "${tiny[@]}")
# The job to preempt sleeps 0.05 s a step (fault.step_delay, no effect on the
# results): its 200 steps last at least 10 s on any machine, so the signal sent
# at step 40 always lands mid-run.
pre=$(sbatch "${sbatch_opts[@]}" --ntasks=2 -J pre slurm/train.sbatch inputs/dense.ini "${tiny[@]}" --fault.step_delay=0.05)
{ cat inputs/dense.ini; printf '\n[train]\nlrr = 0.1\n'; } >"$tmp/broken.ini"
broken=$(sbatch "${sbatch_opts[@]}" -J broken slurm/train.sbatch "$tmp/broken.ini")
broken_at=$SECONDS

# --- preemption: stop the run mid-way with the signal Slurm sends before the time limit
pre_dir=$tmp/runs/pre-$pre
signalled=
for ((i = 0; i < 480; i++)); do
  last=$(grep -o '"type":"train","step":[0-9]*' "$pre_dir/metrics.jsonl" 2>/dev/null | tail -1 | grep -o '[0-9]*$')
  if [[ -n $last ]] && ((last >= 40)); then
    scancel --signal=USR1 --batch "$pre" && signalled=$last
    break
  fi
  sleep 0.25
done

# --- a broken deck fails fast, with the deck's error in the job output ------
rc=$(wait_job "$broken" 60)
out=$tmp/out/broken-$broken.out
if [[ $rc == 2 ]] && grep -q "unknown key 'train.lrr' (did you mean train.lr?)" "$out" && ((SECONDS - broken_at < 60)); then
  ok "broken deck: exit 2 with the deck error in $(basename "$out")"
else
  bad "broken deck" "exit '$rc' (wanted 2) or no 'unknown key' error in the output" "$out"
fi

# --- a training job runs to the end ---------------------------------------
rc=$(wait_job "$ref" 180)
ref_dir=$tmp/runs/ref-$ref out=$tmp/out/ref-$ref.out
ref_bpb=$(json_value "$ref_dir/summary.json" val_bpb)
if [[ $rc == 0 && -n $ref_bpb ]]; then
  ok "training job: exit 0, run directory $(basename "$ref_dir") with summary.json (val_bpb $ref_bpb)"
else
  bad "training job" "exit '$rc', summary.json val_bpb '$ref_bpb'" "$out"
fi
if grep -q -- "--run.max_hours=0\.1" "$out"; then
  ok "training job: run.max_hours set from the 10-minute time limit"
else
  bad "training job: run.max_hours" "no --run.max_hours=0.1... in the output" "$out"
fi
ckpt=$(find "$ref_dir" -name 'ckpt-*.h5' 2>/dev/null | sort -V | tail -1)
if "$bin" --help 2>/dev/null | grep -qE '^ +inspect'; then
  if [[ -n $ckpt ]] && "$bin" inspect "$ckpt" >"$tmp/inspect.txt" 2>&1; then
    ok "training job: dipaco inspect reads its checkpoint $(basename "$ckpt")"
  else
    bad "training job: checkpoint" "no ckpt-*.h5 in $ref_dir, or dipaco inspect failed" "$tmp/inspect.txt"
  fi
else
  echo "note: $bin has no inspect command: checkpoint of the training job not inspected"
fi

# --- a 3-point sweep as a job array, collected into a table ----------------
# DiPaCo 2x2 (four paths on one rank), three sync intervals H.
sweep=$tmp/sweep
if scripts/make-sweep inputs/dipaco-2x2.ini --grid dipaco.inner_steps=10,30,60 \
    --set train.steps=60 --set model.d_model=32 --set eval.batches=1 --set eval.every=10 \
    -o "$sweep" >"$tmp/make-sweep.txt" 2>&1; then
  arr=$(sbatch --parsable --time=10 --array=0-2%2 --output="$sweep/slurm-%A_%a.out" slurm/sweep.sbatch "$sweep")
  rc=$(wait_job "$arr" 240)
  scripts/collect-sweep "$sweep" >"$tmp/collect.txt" 2>&1
  crc=$?
  rows_csv=$(($(wc -l <"$sweep/results.csv") - 1))
  rows_md=$(grep -cE '^\| [0-9]+ \|' "$sweep/results.md")
  ok_rows=$(grep -cE '^\| [0-9]+ \| [^|]+ \| ok \|' "$sweep/results.md")
  if [[ $rc == 0 && $crc == 0 && $rows_csv == 3 && $rows_md == 3 && $ok_rows == 3 && -s $sweep/results.png ]]; then
    ok "sweep: 3 array tasks, collect-sweep wrote results.csv, results.md (3 rows) and results.png"
    sed 's/^/     | /' "$sweep/results.md"
  else
    bad "sweep" "array exit '$rc', collect-sweep exit $crc, rows csv $rows_csv md $rows_md ok $ok_rows" "$tmp/collect.txt"
  fi
else
  bad "sweep: make-sweep" "failed" "$tmp/make-sweep.txt"
fi

# A sweep point that fails is listed with its reason; one never run, too.
bad_sweep=$tmp/sweep-bad
if scripts/make-sweep inputs/dense.ini --grid data.corpus=inputs/corpus/embedded.jsonl,missing.jsonl \
    -o "$bad_sweep" >"$tmp/make-sweep.txt" 2>&1; then
  arr=$(sbatch --parsable --time=10 --array=1 --output="$bad_sweep/slurm-%A_%a.out" slurm/sweep.sbatch "$bad_sweep")
  rc=$(wait_job "$arr" 60)
  scripts/collect-sweep "$bad_sweep" >"$tmp/collect.txt" 2>&1
  crc=$?
  if [[ $rc == 2 && $crc == 1 ]] &&
     grep -qE "^1,failed,.*exit 2: bad input.*cannot open input file 'missing.jsonl'" "$bad_sweep/results.csv" &&
     grep -qE '^0,not started,' "$bad_sweep/results.csv"; then
    ok "sweep: failed and unrun points listed with their reasons"
  else
    bad "sweep: failed points" "array exit '$rc' (wanted 2), collect-sweep exit $crc (wanted 1)" "$bad_sweep/results.csv"
  fi
else
  bad "sweep: make-sweep (bad corpus)" "failed" "$tmp/make-sweep.txt"
fi

# --- the preempted job: checkpoint, requeue, resume, same result ----------
rc=$(wait_job "$pre" 240)
out=$tmp/out/pre-$pre.out
pre_bpb=$(json_value "$pre_dir/summary.json" val_bpb)
restarts=$(scontrol show job -o "$pre" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
stop_rc=$(awk -F'\t' '$1 == "end" { print $4; exit }' "$pre_dir/slurm-jobs.tsv" 2>/dev/null)
if [[ -z $signalled ]]; then
  bad "preemption" "the job never reached step 40 to be signalled (exit '$rc')" "$out"
elif [[ $stop_rc != 3 ]]; then
  bad "preemption" "on SIGUSR1 at step $signalled dipaco should checkpoint and exit 3; it exited '$stop_rc' (job exit '$rc')" "$out"
elif [[ ${restarts:-0} -lt 1 ]]; then
  bad "preemption" "dipaco exited 3 but the job was not requeued (restarts '$restarts')" "$out"
elif [[ $rc != 0 || -z $pre_bpb ]]; then
  bad "preemption" "requeued job did not finish: exit '$rc', summary val_bpb '$pre_bpb'" "$out"
elif [[ $pre_bpb != "$ref_bpb" ]]; then
  bad "preemption" "resumed run ends with val_bpb $pre_bpb, uninterrupted run $ref_bpb" "$out"
else
  stopped=$(grep -o 'stopped at step [0-9]*' "$out" | head -1 | grep -o '[0-9]*$')
  ok "preemption: signalled at step $signalled, checkpoint and exit 3 at step ${stopped:-?}, requeued $restarts time(s), resumed to val_bpb $pre_bpb (= uninterrupted)"
fi

echo "$pass passed, $fail failed ($((SECONDS - t_start)) s)"
[[ $fail -eq 0 ]]
