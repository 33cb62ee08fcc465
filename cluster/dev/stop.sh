#!/usr/bin/env bash
# Stop the single-machine Slurm started by cluster/dev/start.sh: cancel every job,
# wait for them to end, then stop the slurmd(s), slurmctld and the munged it started
# (by their pid files: SIGTERM, then SIGKILL if they linger). Safe to run when nothing runs.
#
#   cluster/dev/stop.sh            stop; keeps the state dir (jobs, logs) and the config
#   cluster/dev/stop.sh --purge    also remove the state dir and the /etc/slurm files start.sh wrote
#
# The state dir is the one recorded in /etc/slurm/slurm.conf by start.sh, else
# $BELLE_SLURM_STATE (default /tmp/belle-slurm). Needs root (re-runs itself with sudo).
set -euo pipefail
# shellcheck source=cluster/dev/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"



parse_flag purge "$@"
purge=$FLAG

as_root "$@"

STATE=${BELLE_SLURM_STATE:-/tmp/belle-slurm}
if ours "$CONF"; then
  STATE=$(sed -n 's/^# state: \([^ ]*\).*/\1/p' "$CONF")
  [[ -n $STATE ]] || die "$CONF has no '# state:' line; rerun cluster/dev/start.sh"
fi

gone() { [[ ! -e /proc/$1 ]] || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }

# stop_daemon FILE NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_daemon() {
  local pid i
  if alive "$1" "$2"; then
    pid=$(<"$1")
    log "stopping $2 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do gone "$pid" && break; sleep 0.1; done
    if ! gone "$pid"; then
      log "warning: $2 (pid $pid) ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do gone "$pid" && break; sleep 0.1; done
    fi
  fi
  rm -f "$1"
}

pidfiles=()
for f in "$STATE"/slurmd-*.pid "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
  [[ -e $f ]] && pidfiles+=("$f")
done
running=0
for f in "${pidfiles[@]}"; do
  case $f in */slurmd-*) n=slurmd ;; */slurmctld.pid) n=slurmctld ;; *) n=munged ;; esac
  alive "$f" "$n" && running=1
done

if ((running == 0)); then
  log "slurm is not running (state $STATE)"
  rm -f "${pidfiles[@]}"
else
  # cancel every job while the controller still answers, and wait (bounded) for them to end
  if alive "$STATE/slurmctld.pid" slurmctld && scontrol ping 2>/dev/null | grep -q 'is UP'; then
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null)
    if ((${#jobs[@]})); then
      log "cancelling jobs: ${jobs[*]}"
      scancel "${jobs[@]}" 2>/dev/null || true
      active() { squeue -h -t running,completing,configuring,suspended -o %A 2>/dev/null | xargs; }
      for ((i = 0; i < 300; i++)); do [[ -z $(active) ]] && break; sleep 0.1; done   # <= 30 s
      left=$(active)
      [[ -z $left ]] || log "warning: jobs still running after 30 s: $left; stopping anyway"
    fi
  fi
  for f in "$STATE"/slurmd-*.pid; do [[ -e $f ]] && stop_daemon "$f" slurmd; done
  stop_daemon "$STATE/slurmctld.pid" slurmctld
  stop_daemon "$STATE/munge/munged.pid" munged   # only a munged that start.sh started
  log "slurm stopped"
fi

if ((purge)); then
  case $STATE in /|/tmp|/etc|/root|/home|"") die "refusing to remove state dir '$STATE'" ;; esac
  [[ -e $STATE ]] && { rm -rf "$STATE"; log "removed $STATE"; }
  for f in "$CONF" "$CGCONF"; do
    ours "$f" && { rm -f "$f"; log "removed $f"; }
  done
fi
exit 0
