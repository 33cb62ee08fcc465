# Shared by start.sh and stop.sh (sourced): where the dev Slurm keeps its config, logging, the root check.
CONF=/etc/slurm/slurm.conf
CGCONF=/etc/slurm/cgroup.conf
MARKER="# written by belle-launcher cluster/dev/start.sh"
export PATH=$PATH:/usr/sbin:/sbin

log() { echo "[slurm-dev] $*"; }
die() { echo "[slurm-dev] error: $*" >&2; exit 1; }

# parse_flag NAME ARGS: FLAG=1 if ARGS is --NAME, 0 if empty; -h/--help prints the script's header comment.
parse_flag() {
  local name=$1 arg
  shift
  FLAG=0
  for arg in "$@"; do
    case $arg in
      "--$name") FLAG=1 ;;
      -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      *) die "unknown argument '$arg' (usage: $0 [--$name])" ;;
    esac
  done
}

# as_root ARGS: re-run the calling script with sudo unless root already.
as_root() {
  [[ $EUID -eq 0 ]] && return 0
  command -v sudo >/dev/null || die "needs root (or sudo)"
  exec sudo env ${BELLE_SLURM_STATE+BELLE_SLURM_STATE="$BELLE_SLURM_STATE"} "$0" "$@"
}

# ours FILE: FILE exists and was written by start.sh.
ours() { [[ -e $1 ]] && grep -qxF "$MARKER" "$1"; }

# alive FILE NAME: FILE holds the pid of a live (non-zombie) process called NAME.
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}
