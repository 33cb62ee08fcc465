"""Where Ray comes from: the embedded local Ray (cluster=local), an existing cluster (cluster=ray), or the Ray a
Slurm job brought up (its driver has connected already, launcher.backends.slurm.ray_join)."""

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

from belle.config import ClusterConfig, JobConfig

LOCAL_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # read at `import ray`: bind the embedded Ray to 127.0.0.1
    "RAY_AUTH_MODE": "disabled",  # a loopback-only cluster; token auth would write ~/.ray/auth_token
}


def check_local_gpus(cluster: ClusterConfig) -> None:
    """cluster=local trains on this machine: the GPUs it asks for must be here (else NCCL fails in the workers)."""
    if cluster.kind != "local" or not cluster.use_gpu:
        return
    import torch

    found = torch.cuda.device_count()
    if found < cluster.gpus_per_node:
        raise ValueError(
            f"cluster.gpus_per_node={cluster.gpus_per_node} but this machine has {found} CUDA GPU(s), and "
            f"cluster=local trains here: set cluster.gpus_per_node={found} (0: CPU workers), or cluster=ray / slurm"
        )


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
def ray_for(job: JobConfig):
    """Connect to the job's Ray: start an embedded one on 127.0.0.1 (shut down afterwards), join cluster.address,
    or use the one this process is connected to already (inside a Slurm job)."""
    if job.cluster.kind == "local":
        os.environ.update(LOCAL_RAY_ENV)
    import ray

    c = job.cluster
    if ray.is_initialized():
        yield
        return
    temp = None
    if c.kind == "ray":
        connect(address=c.address)
    else:
        # Ray's unix sockets live in here: the path must stay short (107 bytes in all), hence /tmp, not $TMPDIR
        temp = Path(c.ray_temp_dir) if c.ray_temp_dir else Path(tempfile.mkdtemp(prefix="belle-ray-", dir="/tmp"))
        connect(num_cpus=c.world_size * c.worker_cpus, num_gpus=c.gpus_per_node, _temp_dir=str(temp))
    try:
        yield
    finally:
        ray.shutdown()
        if temp is not None and not c.ray_temp_dir:
            shutil.rmtree(temp, ignore_errors=True)
