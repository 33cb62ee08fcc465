"""One writer of an engine's state: what the SPMD recipes' saver writes, resume reads back, random state included
(a world of one on CPU, the tiny model)."""

import socket

import pytest
import torch


@pytest.fixture
def engine(job, local_world, monkeypatch):
    """``engine()`` → a fresh DeepSpeed engine of the tiny model (ZeRO-2, fp32) in a world of one."""
    from belle.strategy.engine import build_engine
    from belle.train.worker import start_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                       "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(key, value)
    composed = job("strategy=zero2", "strategy.precision=fp32", "monitor=off", "optim.warmup_steps=0")
    start_worker(composed)

    def _engine():
        return build_engine(composed.model, composed.strategy, composed.optim, None, attention="sdpa", world_size=1,
                            total_steps=4, seed=composed.train.seed)

    return composed, _engine


def test_a_saved_engine_resumes_with_its_state_and_random_state(engine, tmp_path):
    from belle.train.state import resume, saver

    job, build = engine
    run_dir = tmp_path / "run"
    saver(build(), run_dir, {"step": 3, "epoch": 1}, job, rank=0)()
    folder = run_dir / "checkpoints" / "step-000003"
    assert (folder / "rng-rank0.pt").is_file() and (folder / "state").is_dir()
    expected = torch.rand(3)  # the draw after the save

    torch.manual_seed(123)
    state = {"step": 0, "epoch": 0}
    assert resume(build(), run_dir, state, rank=0) == folder
    assert state == {"step": 3, "epoch": 1} and torch.equal(torch.rand(3), expected)

    state = {"step": 0, "epoch": 0}  # a rank the saving world did not have: no random state, the rest loads
    assert resume(build(), run_dir, state, rank=1) == folder and state["step"] == 3
