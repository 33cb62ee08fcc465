#!/usr/bin/env bash
# Start a real single-machine Slurm for development and CI: munged, slurmctld and
# two slurmd (node1, node2) on this host, partition `debug`. Waits until both nodes
# take jobs, then plain sbatch/srun/squeue work in any shell.
#
#   cluster/dev/start.sh            start (or say it is already up); keeps job state
#   cluster/dev/start.sh --fresh    stop, wipe the controller state (job ids restart at 1), start
#   cluster/dev/stop.sh [--purge]   stop; --purge also removes the state dir and config
#
# State, spool, pid files and logs live in $BELLE_SLURM_STATE (default /tmp/belle-slurm).
# Writes /etc/slurm/slurm.conf and cgroup.conf, but never over files it did not write.
# Installs the Debian packages if missing. Needs root (re-runs itself with sudo).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=cluster/dev/common.sh
source "$HERE/common.sh"
STATE=${BELLE_SLURM_STATE:-/tmp/belle-slurm}
NODES=(node1 node2)
PORTS=(6821 6822)            # one slurmd port per node; slurmctld keeps the default 6817
TIMEOUT=60                   # seconds to wait for the cluster to become usable
export DEBIAN_FRONTEND=noninteractive

parse_flag fresh "$@"
fresh=$FLAG

as_root "$@"

# --- packages -------------------------------------------------------------------
if ! command -v slurmctld >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  pkgs=(slurmctld slurmd slurm-client munge)
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null; } \
    || die "apt-get install ${pkgs[*]} failed"
fi

# --- helpers --------------------------------------------------------------------
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
# node states, "node1 idle" per line; usable = idle/mix/alloc with no flag suffix (*, ~, #, …)
node_states() { sinfo -h -N -o '%N %t' 2>/dev/null || true; }
nodes_ready() {
  local states n
  states=$(node_states)
  for n in "${NODES[@]}"; do grep -Eqx "$n (idle|mix|alloc)" <<<"$states" || return 1; done
}
# registered: each slurmd started by this run (since[node] = launch epoch) has since
# registered with slurmctld, so node states are not stale ones from before a restart
declare -A since=()
registered() {
  local n t
  for n in "${!since[@]}"; do
    t=$(scontrol -o show node "$n" 2>/dev/null | grep -o 'SlurmdStartTime=[0-9T:-]*' | cut -d= -f2)
    [[ -n $t ]] && (($(date -d "$t" +%s) >= since[$n])) || return 1
  done
}
cluster_ready() {
  local n
  alive "$STATE/slurmctld.pid" slurmctld || return 1
  for n in "${NODES[@]}"; do alive "$STATE/slurmd-$n.pid" slurmd || return 1; done
  ctld_up && nodes_ready && registered
}
summary() { log "slurm up: ${#NODES[@]} nodes (${NODES[*]}), partition debug; stop with cluster/dev/stop.sh"; }

# --- config ---------------------------------------------------------------------
# proctrack/cgroup, so that processes a job daemonises (setsid, &) die with the job.
# Slurm 22.05 speaks cgroup v1 (needs the freezer) or v2 (needs systemd); where that
# fails, start.sh falls back to proctrack/linuxproc once and remembers it in $STATE.
proctrack=proctrack/cgroup cgplugin=autodetect
case $(stat -fc %T /sys/fs/cgroup 2>/dev/null) in
  cgroup2fs) cgplugin=cgroup/v2 ;;
  tmpfs) [[ -d /sys/fs/cgroup/freezer ]] && cgplugin=cgroup/v1 || proctrack=proctrack/linuxproc ;;
  *) proctrack=proctrack/linuxproc ;;
esac
[[ -e $STATE/proctrack-linuxproc ]] && proctrack=proctrack/linuxproc cgplugin=autodetect
if [[ $proctrack == proctrack/linuxproc ]]; then
  log "warning: cgroups unusable here; using proctrack/linuxproc (daemonised job processes may outlive their job)"
fi

render_conf() {
  cat <<EOF
$MARKER
# state: $STATE  (remove with cluster/dev/stop.sh --purge; do not edit)
ClusterName=belle-dev
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmUser=root
MailProg=/bin/true
AuthType=auth/munge
MpiDefault=none
SwitchType=switch/none
# proctrack/cgroup kills everything a job started, daemonised children included
# (linuxproc only where cgroups do not work, see start.sh)
ProctrackType=$proctrack
TaskPlugin=task/none
# jobs share nodes by core (no whole-node allocation); LLN puts each job on the least
# loaded node, so two 1-CPU jobs land on node1 and node2 and a 2-node job still fits
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core,CR_LLN
# node CPUs/memory below are taken as declared, whatever this host has
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
EOF
  local i
  for i in "${!NODES[@]}"; do
    echo "NodeName=${NODES[i]} NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=${PORTS[i]} CPUs=2 RealMemory=4000 State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES MaxTime=INFINITE State=UP"
}
render_cgconf() {
  printf '%s\nCgroupPlugin=%s\nConstrainCores=no\nConstrainRAMSpace=no\nConstrainDevices=no\n' \
    "$MARKER" "$cgplugin"
}

for f in "$CONF" "$CGCONF"; do
  if [[ -e $f ]] && ! ours "$f"; then
    die "$f exists and was not written by this script; move it away (e.g. mv $f $f.orig) and rerun"
  fi
done

# same_file FILE TEXT: FILE exists and holds exactly TEXT
same_file() { [[ -e $1 && $(<"$1") == "$2" ]]; }
new_conf=$(render_conf) new_cgconf=$(render_cgconf)
if [[ -e $CONF ]] && ! { same_file "$CONF" "$new_conf" && same_file "$CGCONF" "$new_cgconf"; }; then
  log "config changed; stopping any running cluster first"
  "$HERE/stop.sh"
fi
if ((fresh)); then
  "$HERE/stop.sh"
  log "wiping controller state in $STATE/ctld"
  rm -rf "$STATE/ctld" "$STATE/spool"
fi
mkdir -p /etc/slurm "$STATE/ctld" "$STATE/log" "${NODES[@]/#/$STATE/spool/}"
same_file "$CONF" "$new_conf" || { echo "$new_conf" >"$CONF"; log "wrote $CONF"; }
same_file "$CGCONF" "$new_cgconf" || { echo "$new_cgconf" >"$CGCONF"; log "wrote $CGCONF"; }

# --- munge ----------------------------------------------------------------------
# Reuse a working munged (e.g. a system service); otherwise start one as user munge.
ensure_munge() {
  munge_ok && return 0
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mkdir -p /etc/munge
    mungekey --create --force 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge "$STATE/munge"
  if ! alive "$STATE/munge/munged.pid" munged; then
    log "starting munged"
    runuser -u munge -- munged --pid-file="$STATE/munge/munged.pid" || die "munged failed; see /var/log/munge/munged.log"
  fi
  for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
  die "munge -n | unmunge fails; see /var/log/munge/munged.log"
}
ensure_munge

# --- slurm daemons --------------------------------------------------------------
if cluster_ready; then
  log "already up and healthy"
  summary
  exit 0
fi

start_daemons() {
  local n
  if ! alive "$STATE/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    slurmctld || { failed_log=$STATE/log/slurmctld.log; return 2; }
  fi
  for n in "${NODES[@]}"; do
    if ! alive "$STATE/slurmd-$n.pid" slurmd; then
      log "starting slurmd $n"
      since[$n]=$(date +%s)
      slurmd -N "$n" || { failed_log=$STATE/log/slurmd-$n.log; return 2; }
    fi
  done
}

# wait_ready: poll until usable; 0 ready, 1 timeout, 2 a daemon died
wait_ready() {
  local start=$SECONDS n states resumed=
  while ((SECONDS - start < TIMEOUT)); do
    cluster_ready && return 0
    if ((SECONDS - start >= 5)); then   # daemons have forked and written pid files by now
      alive "$STATE/slurmctld.pid" slurmctld || { failed_log=$STATE/log/slurmctld.log; return 2; }
      for n in "${NODES[@]}"; do
        alive "$STATE/slurmd-$n.pid" slurmd || { failed_log=$STATE/log/slurmd-$n.log; return 2; }
      done
    fi
    # nodes left down/drained by an earlier run: bring them back once they have registered
    if ctld_up; then
      states=$(node_states)
      for n in "${NODES[@]}"; do
        if grep -Eqx "$n (down|drain|drng|fail|failg)" <<<"$states" && [[ " $resumed " != *" $n "* ]]; then
          log "resuming $n (was $(grep "^$n " <<<"$states" | cut -d' ' -f2))"
          scontrol update NodeName="$n" State=RESUME || true
          resumed+=" $n"
        fi
      done
    fi
    sleep 0.25
  done
  failed_log=$STATE/log/slurmctld.log
  return 1
}

failed_log=
rc=0
start_daemons && wait_ready || rc=$?
if ((rc == 2)) && [[ $proctrack == proctrack/cgroup ]] && tail -n 20 "$failed_log" | grep -qi cgroup; then
  # slurm 22.05 can not use cgroups everywhere (e.g. cgroup v2 without systemd)
  log "warning: a daemon failed with proctrack/cgroup:"
  tail -n 20 "$failed_log" | grep -i cgroup | tail -n 3 | sed 's/^/    /'
  log "warning: falling back to proctrack/linuxproc (daemonised job processes may outlive their job)"
  "$HERE/stop.sh" >/dev/null
  touch "$STATE/proctrack-linuxproc"
  proctrack=proctrack/linuxproc cgplugin=autodetect
  render_conf >"$CONF"
  render_cgconf >"$CGCONF"
  ensure_munge
  rc=0 since=()
  start_daemons && wait_ready || rc=$?
fi
if ((rc != 0)); then
  if ((rc == 2)); then
    echo "[slurm-dev] error: $(basename "$failed_log" .log) failed to start; tail of $failed_log:" >&2
    tail -n 15 "$failed_log" >&2 || true
  else
    echo "[slurm-dev] error: cluster not usable after ${TIMEOUT}s; node states: $(node_states | tr '\n' ' ')" >&2
    for f in "$STATE/log/slurmctld.log" "$STATE"/log/slurmd-*.log; do
      echo "--- tail $f" >&2
      tail -n 10 "$f" >&2 || true
    done
  fi
  exit 1
fi
summary
