"""What runs on Ray for an SPMD recipe (KIND "spmd"): one Ray Train worker per GPU (or CPU worker), each running
the job's recipe in one torch.distributed world. Where Ray comes from: launcher.backends.ray_cluster."""

import os
from contextlib import nullcontext
from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from launcher.backends import Outcome

WORKER_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # else every progress line reaches the console twice
    "PYTHONWARNINGS": "ignore::FutureWarning",  # DeepSpeed's own torch.distributed deprecations, per call
}
CONTROLLER_ENV = {
    # Ray Train's node-drain watcher is a restartable actor with arguments in the object store, which Ray reports
    # with an ERROR line at every start; a run here stops through belle.stop (Slurm's signals), not node drains.
    # Ray Train passes it from the driver's environment to its controller; a user's own setting wins.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
LOCAL_CONTROLLER_ENV = {
    # how often the controller polls its workers (Ray's default: 2 s), which is also how long a finished or failed
    # group may go unseen; on one machine's embedded Ray a poll of its few workers costs nothing
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
"""Seconds Ray Train's controller waits for the worker group to be placed and started (Ray's default: 60); set from
cluster.placement_timeout_s, passed on to the controller like CONTROLLER_ENV."""


def _worker(config: dict) -> None:
    """The function every Ray Train worker runs: pick this worker's GPU, then the job's recipe (which knows no Ray)."""
    import torch

    from belle.recipes import recipe

    if torch.cuda.is_available():
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    job = config["job"]
    recipe(job.method.name).train(job, Path(config["run_dir"]))


def trainer(job: JobConfig, run_dir: Path):
    """The TorchTrainer of ``job``: one worker per GPU (or CPU worker); Ray keeps its own records under
    ``run_dir/ray``, the recipe its checkpoints under ``run_dir/checkpoints``."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class EmbeddedTrainer(TorchTrainer):
        """Without Ray Train's placement-group cleaner, a detached actor that asks the State API (the dashboard,
        which an embedded Ray does not start) and warns every few seconds that it cannot: an embedded Ray ends
        with its launcher, placement groups and all."""

        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, PlacementGroupCleanerCallback)]

    c = job.cluster
    resources = {"CPU": c.worker_cpus} | ({"GPU": 1} if c.use_gpu else {})
    return (EmbeddedTrainer if c.kind == "local" else TorchTrainer)(
        _worker,
        train_loop_config={"job": job, "run_dir": str(run_dir)},
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo", timeout_s=c.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=c.world_size, use_gpu=c.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=rundir.RAY,
            storage_path=str(run_dir),
            # a worker group that did not start in time is a controller failure, which Ray retries with no end
            failure_config=FailureConfig(max_failures=job.train.max_failures,
                                         controller_failure_limit=job.train.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            worker_runtime_env={"env_vars": WORKER_ENV | c.worker_env(os.environ)},
        ),
    )


def _reason(error: Exception, job: JobConfig) -> str:
    """One line saying why training failed: the first failing rank's own exception, not Ray's wrapper, or the worker
    group that did not start in time."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    if isinstance(getattr(error, "controller_failure", None), WorkerGroupStartupTimeoutError):
        return _not_started(job)
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, failure = min(failures.items())
        cause = getattr(failure, "cause", None) or failure
        message = str(cause).strip().splitlines()  # an assert without a message has none
        return f"rank {rank}: {type(cause).__name__}" + (f": {message[0]}" if message else "")
    return str(error).strip().splitlines()[-1]


def _not_started(job: JobConfig) -> str:
    """Why the worker group never started: Ray could not place it within cluster.placement_timeout_s."""
    c, tries = job.cluster, job.train.max_failures + 1
    each = f"{c.worker_cpus} CPU" + (", 1 GPU" if c.use_gpu else "")
    return (
        f"Ray Train could not place and start the {c.world_size} training workers ({each} each) within "
        f"cluster.placement_timeout_s={c.placement_timeout_s} s ({tries} tr{'y' if tries == 1 else 'ies'}, "
        "train.max_failures): the cluster's free CPUs/GPUs are taken by other work; free them, or raise "
        "cluster.placement_timeout_s to wait longer"
    )


def run(job: JobConfig, run_dir: Path) -> Outcome:
    """Train ``job`` on the connected Ray → why it failed (None when it completed or stopped on request); Ray Train
    restarts its workers without counting them for us (restarts None)."""
    from ray.train import TrainingFailedError

    from launcher.watchdog import HangWatchdog, on_ray_node

    t = job.train
    if t.hang_timeout_s is None:
        watchdog = nullcontext()
    else:
        watchdog = HangWatchdog(run_dir, t.hang_timeout_s, t.hang_first_step_s, on_node=on_ray_node)
    for key, value in (CONTROLLER_ENV | (LOCAL_CONTROLLER_ENV if job.cluster.kind == "local" else {})).items():
        os.environ.setdefault(key, value)
    os.environ[START_TIMEOUT_ENV] = str(job.cluster.placement_timeout_s)
    try:
        with watchdog:
            trainer(job, run_dir).fit()
    except TrainingFailedError as failure:
        return Outcome(getattr(watchdog, "hang", None) or _reason(failure, job))
    return Outcome()
