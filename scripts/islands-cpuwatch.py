#!/usr/bin/python3
"""CPU used on this machine by processes outside the simulated hosts while a run
goes on (another build, another job): a run that shared its cores is not a fair
timing. Samples every INTERVAL seconds until SIGTERM, then writes JSON to OUT:
total busy CPU seconds, CPU seconds of processes inside the PREFIX-* network
namespaces and of the link emulator, and the rest ("foreign").
  islands-cpuwatch.py OUT PREFIX [INTERVAL]          (used by scripts/islands-bench)
  islands-cpuwatch.py --idle SECONDS                  prints the busy share of all cores"""
import json, os, signal, sys, time

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1

def busy_total():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / HZ, sum(v[:8]) / HZ

if sys.argv[1] == "--idle":
    b0, t0 = busy_total(); time.sleep(float(sys.argv[2])); b1, t1 = busy_total()
    print(f"{(b1 - b0) / max(t1 - t0, 1e-9):.3f}")
    sys.exit(0)

out, prefix = sys.argv[1], sys.argv[2]
interval = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)

def ns_inodes():
    s = set()
    try:
        for n in os.listdir("/run/netns"):
            if n.startswith(prefix + "-"):
                try: s.add(os.stat(f"/run/netns/{n}").st_ino)
                except OSError: pass
    except OSError: pass
    return s

ours = {}  # pid -> (start time, cpu seconds) of processes seen inside our namespaces
def sample():
    inos = ns_inodes()
    if not inos: return
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try:
            # scripts/link-emulator runs in the root namespace but is the hosts' link: ours too.
            if os.stat(f"/proc/{p}/ns/net").st_ino not in inos:
                with open(f"/proc/{p}/comm") as f:
                    if f.read().strip() != "link-emulator": continue
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / HZ   # utime + stime
            ours[(p, fields[19])] = cpu                     # keyed by pid and start time
        except (OSError, IndexError, ValueError):
            pass

b0, _ = busy_total()
t0 = time.time()
while not stop:
    sample()
    time.sleep(interval)
sample()
b1, _ = busy_total()
wall = time.time() - t0
own = sum(ours.values())
foreign = max(0.0, (b1 - b0) - own)
json.dump({"wall": wall, "busy_cpu_seconds": b1 - b0, "run_cpu_seconds": own, "foreign_cpu_seconds": foreign,
           "foreign_share_of_cores": foreign / max(wall * NCPU, 1e-9), "cores": NCPU}, open(out, "w"))
