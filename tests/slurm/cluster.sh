#!/usr/bin/env bash
# A private single-node Slurm cluster (munged + slurmctld + slurmd on
# localhost), configured entirely inside one directory; nothing in /etc changes.
#
#   cluster.sh up DIR     start it (DIR: a new, short path such as /tmp/dps.XXXX);
#                         prints `export SLURM_CONF=DIR/slurm.conf`
#   cluster.sh down DIR   cancel its jobs and stop its daemons (by PID)
#
# Or source it and call `cluster_up DIR` / `cluster_down DIR` (cluster_up
# exports SLURM_CONF). Clients find the cluster only through SLURM_CONF, and
# jobs inherit it. Env: CLUSTER_CPUS (CPUs the node offers, default 4).

# Installs the daemons when missing; a policy-rc.d that denies starts keeps
# the packages' own system services from starting.
cluster_install() {
  local need=()
  command -v munged >/dev/null || need+=(munge)
  command -v slurmctld >/dev/null || need+=(slurmctld)
  command -v slurmd >/dev/null || need+=(slurmd)
  command -v sbatch >/dev/null || need+=(slurm-client)
  [[ ${#need[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "cluster.sh: missing ${need[*]} and not root: cannot install" >&2
    return 1
  fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  fi
  echo "cluster.sh: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
    "${need[@]}" >&2 || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2; }
}

# Free TCP ports on localhost, n of them (bound once to port 0 and released,
# then re-checked in case another run took one meanwhile).
_cluster_free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# Is PID alive (not a zombie) and the program we expect?
_cluster_alive() {  # _cluster_alive PID COMM
  local state
  [[ $1 =~ ^[0-9]+$ && $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [[ -n $state && $state != Z && $state != X ]]
}

# The PID in a pid file, if that process is alive and is the program we expect.
_cluster_pid() {  # _cluster_pid PIDFILE COMM
  local pid
  pid=$(cat "$1" 2>/dev/null) && _cluster_alive "$pid" "$2" && echo "$pid"
}

_cluster_stop() {  # _cluster_stop PIDFILE COMM
  local pid i
  pid=$(_cluster_pid "$1" "$2") || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 40; i++)); do
    _cluster_alive "$pid" "$2" || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
}

cluster_up() {
  local dir=${1:?cluster_up DIR}
  cluster_install || return 1
  mkdir -p "$dir"/{munge,state,spool,log} || return 1
  dir=$(cd "$dir" && pwd)
  # munged insists: its socket directory may be o+x but not o+w.
  chmod 711 "$dir" "$dir/munge"
  local node ctld_port slurmd_port srun_lo cpus=${CLUSTER_CPUS:-4}
  node=$(hostname -s)
  read -r ctld_port slurmd_port srun_lo < <(_cluster_free_ports 3)

  mungekey --create --keyfile="$dir/munge/key" >/dev/null 2>&1 ||
    { dd if=/dev/urandom of="$dir/munge/key" bs=1024 count=1 status=none; }
  chmod 600 "$dir/munge/key"
  munged --socket="$dir/munge/sock" --key-file="$dir/munge/key" --pid-file="$dir/munge/pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" --origin=127.0.0.1 --force ||
    { echo "cluster.sh: munged failed to start (see $dir/log/munged.log)" >&2; return 1; }

  : >"$dir/plugstack.conf"
  cat >"$dir/slurm.conf" <<EOF
# Private test cluster; every path lives under $dir.
ClusterName=dps
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SrunPortRange=$srun_lo-$((srun_lo + 50))
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s); short here so that preemption tests finish quickly.
AuthInfo=socket=$dir/munge/sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
PlugStackConfig=$dir/plugstack.conf
# No cgroups here: track processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Start jobs about a second after submission.
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
# Reject impossible jobs at submission instead of leaving them pending.
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
# Keep finished jobs (and array tasks' exit codes) visible to scontrol.
MinJobAge=3600
ReturnToService=2
KillWait=5
MpiDefault=none
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF=$dir/slurm.conf
  slurmctld -c -f "$SLURM_CONF" || { echo "cluster.sh: slurmctld failed (see $dir/log/slurmctld.log)" >&2; return 1; }
  slurmd -f "$SLURM_CONF" -N "$node" || { echo "cluster.sh: slurmd failed (see $dir/log/slurmd.log)" >&2; return 1; }

  local i state
  for ((i = 0; i < 300; i++)); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null)
    [[ $state == idle ]] && return 0
    sleep 0.1
  done
  echo "cluster.sh: node never became idle (state '$state'); logs in $dir/log" >&2
  tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2
  return 1
}

cluster_down() {
  local dir=${1:?cluster_down DIR} i pid
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  local conf=$dir/slurm.conf
  # Cancel jobs first: slurmstepd ignores SIGTERM, and job processes should
  # end through Slurm.
  if _cluster_pid "$dir/slurmctld.pid" slurmctld >/dev/null; then
    SLURM_CONF=$conf scancel --quiet --user="$(id -un)" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      [[ -z $(SLURM_CONF=$conf squeue -h -t R,CG -o %i 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  _cluster_stop "$dir/slurmd.pid" slurmd
  _cluster_stop "$dir/slurmctld.pid" slurmctld
  # Leftovers of this cluster only: step daemons and job processes carry our
  # SLURM_CONF in their environment (the harness itself never runs a job).
  for pid in $(grep -lzx "SLURM_CONF=$conf" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] ||
       grep -qz '^SLURM_JOB_ID=' "/proc/$pid/environ" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  _cluster_stop "$dir/munge/pid" munged
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  case ${1:-} in
    up)
      # A half-started cluster is stopped again.
      cluster_up "${2:?usage: cluster.sh up DIR}" || { cluster_down "$2"; exit 1; }
      echo "export SLURM_CONF=$(cd "$2" && pwd)/slurm.conf" ;;
    down) cluster_down "${2:?usage: cluster.sh down DIR}" ;;
    *) echo "usage: cluster.sh up|down DIR" >&2; exit 2 ;;
  esac
fi
