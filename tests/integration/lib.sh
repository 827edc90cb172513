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
