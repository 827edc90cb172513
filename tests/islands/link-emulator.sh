#!/usr/bin/env bash
# The link emulator behind `scripts/islands up N --delay D`: 2 simulated hosts
# whose eth0s are TAPs of scripts/link-emulator.c. Checks that a round trip
# takes 2 x the one-way delay, that a bulk TCP transfer runs at the link rate,
# the same for rate only (--delay 0), and that `islands down` leaves no
# namespace and no emulator behind. Usage: link-emulator.sh BUILD_DIR SOURCE_DIR
# Skips (exit 77, as run-test.sh: ctest reports it as skipped, with the reason printed) where network namespaces cannot be made (not root / no CAP_NET_ADMIN).
set -u
src=$(cd "${2:?usage: link-emulator.sh BUILD_DIR SOURCE_DIR}" && pwd)
t_start=$SECONDS
skip() { echo "SKIP link-emulator: $1"; echo "0 passed, 0 failed (skipped)"; exit 77; }
((EUID == 0)) || skip "not root"
command -v ip >/dev/null || skip "ip (iproute2) not installed"
command -v cc >/dev/null || skip "no C compiler (cc) to build the emulator"
[[ -x /usr/bin/python3 ]] || skip "no /usr/bin/python3 for the measurements"
[[ -c /dev/net/tun ]] || skip "no /dev/net/tun"
export ISLANDS_PREFIX=dle$$   # own namespace names: never touches another run's hosts
probe=$ISLANDS_PREFIX-probe
if ! ip netns add "$probe" 2>/dev/null; then
  skip "this machine does not allow network namespaces (ip netns add failed: needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN)"
fi
ip netns del "$probe"

islands=$src/scripts/islands
state=/run/$ISLANDS_PREFIX-islands
h1=$ISLANDS_PREFIX-h1 h2=$ISLANDS_PREFIX-h2
tmp=$(mktemp -d /tmp/dle.XXXX)
server=""
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null
  "$islands" down >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {  # bad NAME DETAIL [FILE to show]
  fail=$((fail + 1)); echo "FAIL $1: $2"
  [[ -n ${3:-} && -f ${3:-} ]] && tail -20 "$3" | sed 's/^/     | /'
}
within() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x != "" && x + 0 >= lo && x + 0 <= hi) }'; }
running() { local st; st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null); [[ -n $st && ${st%% *} != Z ]]; }

# The measuring ends: a UDP echo (round trips, where ping is missing) and a TCP
# sink on host 2; the clients on host 1.
cat >"$tmp/net.py" <<'PY'
import socket, sys, time
mode, port = sys.argv[1], 9970
if mode == "serve":  # UDP echo and one bulk TCP receive; prints the receiver's rates
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("0.0.0.0", port)); l.listen(1)
    open(sys.argv[2], "w").close()  # ready
    import select
    while True:
        r, _, _ = select.select([u, l], [], [], 60)
        if not r: sys.exit(1)
        if u in r:
            d, a = u.recvfrom(2048); u.sendto(d, a)
        if l in r:
            c, _ = l.accept(); n = int(sys.argv[3]); got = 0; t0 = tm = None
            while got < n:
                d = c.recv(1 << 20)
                if not d: break
                if t0 is None: t0 = time.perf_counter()
                got += len(d)
                if tm is None and got >= n // 5: tm, gm = time.perf_counter(), got
            t1 = time.perf_counter(); c.sendall(b"k"); c.close()
            # whole transfer (with TCP slow start), and after its first 20 %
            print("%d %.1f %.1f" % (got, got * 8 / (t1 - t0) / 1e6, (got - gm) * 8 / (t1 - tm) / 1e6), flush=True)
elif mode == "rtt":  # median round trip of 20 UDP echoes, ms
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); r = []
    for i in range(21):
        t = time.perf_counter(); s.sendto(b"x" * 56, (sys.argv[2], port))
        try: s.recvfrom(2048); r.append((time.perf_counter() - t) * 1e3)
        except socket.timeout: pass
        time.sleep(0.02)
    r = sorted(r[1:]); print("%.2f" % r[len(r) // 2] if r else "")
elif mode == "send":
    s = socket.socket()
    for _ in range(50):
        try: s.connect((sys.argv[2], port)); break
        except OSError: time.sleep(0.1); s = socket.socket()
    s.sendall(b"\0" * int(sys.argv[3])); s.shutdown(socket.SHUT_WR); s.recv(1)
PY

bytes=20000000
# measure LABEL DELAY RTT_LO RTT_HI: up, round trip, bulk transfer, down.
measure() {
  local label=$1 delay=$2 lo=$3 hi=$4 rtt via got whole steady tx
  if ! "$islands" up 2 --rate 100mbit --delay "$delay" >"$tmp/up.log" 2>&1; then
    bad "$label: islands up" "failed" "$tmp/up.log"; return
  fi
  grep -q "shaping: .*rate 100mbit, one-way delay $delay.*link emulator" "$tmp/up.log" &&
    ok "$label: islands up says the link emulator shapes the links" || bad "$label: shaping line" "missing" "$tmp/up.log"
  rm -f "$tmp/ready"
  ip netns exec "$h2" /usr/bin/python3 "$tmp/net.py" serve "$tmp/ready" "$bytes" >"$tmp/serve.out" 2>&1 &
  server=$!
  for _ in $(seq 100); do [[ -f $tmp/ready ]] && break; sleep 0.05; done
  if command -v ping >/dev/null; then
    via=ping
    ip netns exec "$h1" ping -c 21 -i 0.05 -q 10.99.0.2 >"$tmp/ping.out" 2>&1
    rtt=$(sed -n 's|^rtt [^=]*= [^/]*/\([^/]*\)/.*|\1|p' "$tmp/ping.out")
  else
    via="UDP echo, median of 20"
    rtt=$(ip netns exec "$h1" /usr/bin/python3 "$tmp/net.py" rtt 10.99.0.2)
  fi
  within "$rtt" "$lo" "$hi" && ok "$label: round trip h1-h2 $rtt ms ($via; expected $lo-$hi ms)" ||
    bad "$label: round trip" "'$rtt' ms ($via), expected $lo-$hi ms" "$tmp/ping.out"
  local t0=$SECONDS
  ip netns exec "$h1" /usr/bin/python3 "$tmp/net.py" send 10.99.0.2 "$bytes" 2>"$tmp/send.err"
  for _ in $(seq 100); do [[ -s $tmp/serve.out ]] && break; sleep 0.05; done
  read -r got whole steady <"$tmp/serve.out"
  if [[ ${got:-0} == "$bytes" ]] && within "$steady" 85 100; then
    ok "$label: TCP bulk $((bytes / 1000000)) MB h1->h2 at $steady Mbit/s after slow start ($whole Mbit/s whole transfer, $((SECONDS - t0)) s; expected 85-100)"
  else
    bad "$label: TCP bulk" "received ${got:-nothing} of $bytes bytes, $steady Mbit/s after slow start, $whole whole" "$tmp/send.err"
  fi
  tx=$(ip netns exec "$h1" cat /sys/class/net/eth0/statistics/tx_bytes)
  ((tx >= bytes)) && ok "$label: h1 eth0 (TAP) counted the transfer (tx $tx bytes)" || bad "$label: TAP counters" "tx $tx < $bytes bytes"
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; server=""
  local epid
  epid=$(cat "$state/emulator.pid" 2>/dev/null)
  "$islands" down >"$tmp/down.log" 2>&1
  local left
  left=$(ip netns list | grep -c "^$ISLANDS_PREFIX-")
  if ((left == 0)) && [[ -n $epid ]] && ! running "$epid" && [[ ! -e $state ]]; then
    ok "$label: islands down removed the hosts and stopped the emulator (PID $epid)"
  else
    bad "$label: islands down" "$left namespace(s) left, emulator PID '${epid}' $(running "$epid" && echo running || echo gone)" "$tmp/down.log"
  fi
}

measure "100mbit + 20 ms" 20ms 35 45
measure "100mbit, --delay 0" 0 0 5

echo "link-emulator test: $((SECONDS - t_start)) s"
echo "$pass passed, $fail failed"
((fail == 0))
