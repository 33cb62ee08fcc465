#!/usr/bin/env bash
# The test suite as CI runs it: a real two-node Slurm on this machine for the `slurm` tests (cluster/dev/start.sh,
# stopped again at the end unless it was already up), then pytest on everything but `gpu`, printing the 30 slowest
# tests. Extra arguments go to pytest, e.g. `tests/run.sh -m "not slurm"` or `tests/run.sh tests/launcher/test_slurm_jobs.py`.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    cluster/dev/start.sh || exit 1
    trap 'cluster/dev/stop.sh' EXIT
fi
python -m pytest -m "not gpu" --durations=30 "$@"
