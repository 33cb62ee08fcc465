"""Run the recipe on Ray Train workers: the embedded local Ray (cluster=local), an existing cluster (cluster=ray),
or the Ray a Slurm job brought up (the driver has connected already)."""

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

from belle.config import JobConfig

WORKER_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # else every progress line reaches the console twice
    "PYTHONWARNINGS": "ignore::FutureWarning",  # DeepSpeed's own torch.distributed deprecations, per call
}
LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # read at `import ray`: bind the embedded Ray to 127.0.0.1
    "RAY_AUTH_MODE": "disabled",  # a loopback-only cluster; token auth would write ~/.ray/auth_token
}


def _worker(config: dict) -> None:
    """The function every Ray Train worker runs: pick this worker's GPU, then the recipe (which knows no Ray)."""
    import torch

    from belle.recipes.sft import train

    if torch.cuda.is_available():
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    train(config["job"], Path(config["run_dir"]))


def connect(**init_args) -> None:
    """``ray.init(**init_args)``, keeping this process's SIGTERM/SIGUSR1 handlers: Ray's core worker installs a crash
    handler that aborts on SIGTERM, which would cut a graceful stop (launcher.launch.graceful_stop) short."""
    import ray

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    ray.init(**init_args)
    for s, handler in handlers.items():
        if callable(handler):
            signal.signal(s, handler)


@contextmanager
def _ray(job: JobConfig):
    """Connect to the job's Ray: start an embedded one on 127.0.0.1 (shut down afterwards) or join cluster.address."""
    if job.cluster.kind == "local":
        os.environ.update(LOCAL_RAY_ENV)
    import ray

    c = job.cluster
    if ray.is_initialized():  # inside a Slurm job: its driver connected and waited for every node
        yield
        return
    if c.kind == "ray":
        connect(address=c.address)
        try:
            yield
        finally:
            ray.shutdown()
        return
    # Ray's unix sockets live in here: the path must stay short (107 bytes in all), hence /tmp rather than $TMPDIR
    temp = Path(c.ray_temp_dir) if c.ray_temp_dir else Path(tempfile.mkdtemp(prefix="belle-ray-", dir="/tmp"))
    connect(num_cpus=c.world_size * c.worker_cpus, num_gpus=c.gpus_per_node, _temp_dir=str(temp))
    try:
        yield
    finally:
        ray.shutdown()
        if not c.ray_temp_dir:
            shutil.rmtree(temp, ignore_errors=True)


def trainer(job: JobConfig, run_dir: Path):
    """The TorchTrainer of ``job``: one worker per GPU (or CPU worker); Ray keeps its own records under
    ``run_dir/ray``, the recipe its checkpoints under ``run_dir/checkpoints``."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    c = job.cluster
    resources = {"CPU": c.worker_cpus} | ({"GPU": 1} if c.use_gpu else {})
    return TorchTrainer(
        _worker,
        train_loop_config={"job": job, "run_dir": str(run_dir)},
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo", timeout_s=c.collective_timeout_s),
        scaling_config=ScalingConfig(num_workers=c.world_size, use_gpu=c.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name="ray",
            storage_path=str(run_dir),
            failure_config=FailureConfig(max_failures=job.train.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            worker_runtime_env={"env_vars": WORKER_ENV | c.worker_env(os.environ)},
        ),
    )


def _reason(error: Exception) -> str:
    """One line saying why training failed: the first failing rank's own exception, not Ray's wrapper."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        rank, failure = min(failures.items())
        cause = getattr(failure, "cause", None) or failure
        return f"rank {rank}: {type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
    return str(error).strip().splitlines()[-1]


def run_on_ray(job: JobConfig, run_dir: Path) -> str | None:
    """Train ``job``; return None when training ended (completed, or stopped on request), else why it failed."""
    from ray.train import TrainingFailedError

    from launcher.watchdog import HangWatchdog, on_ray_node

    t = job.train
    with _ray(job):
        if t.hang_timeout_s is None:
            watchdog = nullcontext()
        else:
            watchdog = HangWatchdog(run_dir, t.hang_timeout_s, t.hang_first_step_s, on_node=on_ray_node)
        try:
            with watchdog:
                trainer(job, run_dir).fit()
        except TrainingFailedError as failure:
            return getattr(watchdog, "hang", None) or _reason(failure)
    return None
