"""Where the job runs: an embedded local Ray, an existing Ray cluster, or Slurm."""

from dataclasses import dataclass

from belle.config._checks import one_of, positive, require

KINDS = ("local", "ray", "slurm")

# Peak dense bf16/fp16 tensor throughput (TFLOP/s) and memory (GiB) per GPU type, for plans.
GPU_TYPES = {
    "A100-40GB": (312.0, 40.0),
    "A100-80GB": (312.0, 80.0),
    "H100-80GB": (989.0, 80.0),
    "H200-141GB": (989.0, 141.0),
    "A800-80GB": (312.0, 80.0),
    "V100-32GB": (125.0, 32.0),
}


@dataclass
class ClusterConfig:
    kind: str = "local"
    """local (embedded Ray on this machine), ray (an existing Ray cluster) or slurm (sbatch brings up Ray)."""
    address: str | None = None
    """Address of an existing Ray cluster (cluster.kind=ray), e.g. ``10.0.0.1:6379`` or ``auto``."""
    nodes: int = 1
    """Machines in the job."""
    gpus_per_node: int = 0
    """GPUs per machine, one training worker each; 0 runs CPU workers."""
    cpu_workers_per_node: int = 2
    """Training workers per machine when gpus_per_node is 0."""
    cpus_per_worker: int = 1
    """CPU cores reserved for each training worker."""
    gpu_type: str = "A100-40GB"
    """GPU model, for the memory-fit check and time estimate in the plan."""
    mfu: float = 0.35
    """Model-FLOPs utilisation assumed by the time estimate."""
    collective_timeout_s: int = 1800
    """Seconds a collective (all-reduce, barrier) may wait before the job fails instead of hanging."""
    ray_temp_dir: str | None = None
    """Temp folder of the embedded Ray (cluster=local), kept short for its sockets; None: a new /tmp/belle-ray-*
    folder, removed at the end."""

    def __post_init__(self) -> None:
        one_of("cluster.kind", self.kind, KINDS)
        one_of("cluster.gpu_type", self.gpu_type, GPU_TYPES)
        positive("cluster.nodes", self.nodes, 1)
        require(self.gpus_per_node >= 0, f"cluster.gpus_per_node={self.gpus_per_node} must be >= 0")
        positive("cluster.cpu_workers_per_node", self.cpu_workers_per_node, 2)
        positive("cluster.cpus_per_worker", self.cpus_per_worker, 1)
        require(0 < self.mfu <= 1, f"cluster.mfu={self.mfu} must be in (0, 1]: set cluster.mfu=0.35")
        positive("cluster.collective_timeout_s", self.collective_timeout_s, 1800)
        require(
            self.kind != "ray" or bool(self.address),
            "cluster=ray needs the cluster's address: set cluster.address=<head-ip>:6379 (or auto)",
        )

    @property
    def use_gpu(self) -> bool:
        """Whether workers train on GPUs."""
        return self.gpus_per_node > 0

    @property
    def world_size(self) -> int:
        """Training workers in the whole job."""
        return self.nodes * (self.gpus_per_node if self.use_gpu else self.cpu_workers_per_node)
