# Shared by the whole-program test scripts (sourced): a scratch directory
# removed at exit (with any run still writing into it), pass/fail counters,
# and the ok / bad / check / finish reporting. A script may define at_exit.
tmp=$(mktemp -d)
pass=0 fail=0
at_exit() { :; }
cleanup() { pkill -KILL -f "run.out_dir=$tmp" 2>/dev/null; at_exit; rm -rf "$tmp"; }
trap cleanup EXIT
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {  # bad NAME [FILE to show, default $tmp/out]
  fail=$((fail + 1))
  echo "FAIL $1"
  local f=${2:-$tmp/out}
  [[ -f $f ]] && sed 's/^/     | /' "$f" | tail -15
  return 0
}
check() {  # check NAME EXPECTED_CODE PATTERN -- command...
  local name=$1 want=$2 pattern=$3
  shift 4
  "$@" >"$tmp/out" 2>&1
  local code=$?
  if [[ $code -eq $want ]] && grep -qE -- "$pattern" "$tmp/out"; then ok "$name"
  else bad "$name (exit $code, wanted $want; pattern '$pattern')"; fi
}
finish() { echo "$pass passed, $fail failed"; [[ $fail -eq 0 ]]; }

# The data tests' tiny 2x2 run (a script sets bin first): run2x2 NP [overrides...]
# runs inputs/dipaco-2x2.ini into $tmp/runs; store NAME is that run's token store.
py=/usr/bin/python3
mpi=(env OMP_NUM_THREADS=1 mpirun --allow-run-as-root --oversubscribe --bind-to none)
tiny=(--model.d_model=32 --model.n_layers=2 --model.layers_per_level=1,1 --model.n_heads=2 --model.context=64
      --train.batch_size=4 --route.warm_steps=4 --train.steps=4 --dipaco.inner_steps=2 --eval.every=0
      --eval.batches=1 --checkpoint.every=0 --run.log_every=1000 --run.out_dir="$tmp/runs")
run2x2() { "${mpi[@]}" -np "$1" "$bin" run inputs/dipaco-2x2.ini "${tiny[@]}" "${@:2}"; }
store() { echo "$tmp/runs/$1/store"; }
