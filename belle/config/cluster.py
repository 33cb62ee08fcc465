"""Where the job runs: an embedded local Ray, an existing Ray cluster, or Slurm."""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from belle.config._checks import one_of, positive, require
from belle.config.hardware import GPU_TYPES

KINDS = ("local", "ray", "slurm")

GPU_WORKER_CPUS = 8
"""CPU cores per GPU worker where the node's cores are unknown at planning time (Slurm or an existing Ray cluster
without cluster.cpus_per_node): a low share of common 8-GPU nodes (64-224 cores)."""
NCCL_PREFIXES = ("NCCL_", "TORCH_NCCL_")
"""Environment variables passed from the launcher's environment to every worker."""

# What Slurm accepts in the options we render (sbatch reads #SBATCH lines itself, no shell): names, lists of names,
# and for constraints its &|[]*() operators. Anything else (quotes, spaces, $, newlines) is refused, not escaped.
SLURM_NAME = re.compile(r"^[A-Za-z0-9_.,:+\-]+$")
SLURM_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.,:+\-&|\[\]*()]+$")
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(text: str) -> int:
    """Seconds in a Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    match = _SLURM_TIME.match(text)
    require(match is not None, f"cluster.time={text!r} is not a Slurm time: set cluster.time=HH:MM:SS or D-HH:MM:SS")
    days, first, second, third = (int(g) if g else None for g in match.groups())
    if days is None:  # MM, MM:SS or HH:MM:SS
        hours, minutes, seconds = (first, second, third) if third is not None else (0, first, second or 0)
        return hours * 3600 + minutes * 60 + seconds
    return days * 86400 + first * 3600 + (second or 0) * 60 + (third or 0)


def _slurm_value(key: str, value: str | None, pattern: re.Pattern = SLURM_NAME) -> None:
    require(
        value is None or bool(pattern.match(value)),
        f"{key}={value!r} has characters Slurm names do not use: set {key} to the name `sinfo`/`sacctmgr` shows",
    )


def _literal_credential(key: str, number: int, what: str) -> str:
    """The refusal of cluster.<key> entry ``number``, which gives ``what`` (a variable name, an option, ``login``'s
    argument, a credential's shape) a literal credential."""
    name = what if what.isidentifier() else "TOKEN"
    if what.isidentifier():
        gives = f"sets {what} to"
    elif what.startswith(("-", "the ")):  # an option, login's argument
        gives = f"passes {what}"
    else:  # a credential's shape
        gives = f"holds {what} as"
    return (
        f"cluster.{key} {gives} a literal value (entry {number}), which would be written to config.yaml, the sbatch "
        f"script and the console: export it in your shell before submitting (the job inherits your environment) and "
        f"write ${name} there, or read it from a file there ({name}=$(cat <file>))"
    )


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
    cpus_per_worker: int | None = None
    """CPU cores reserved for each training worker; None: 1 for CPU workers, the node's share for GPU workers
    (cluster.cpus_per_node / gpus_per_node; this machine's cores / gpus_per_node for cluster=local; else
    GPU_WORKER_CPUS). DataLoader-free, but CPU Adam under offload and the host side of each step use them."""
    gpu_type: str = "A100-40GB"
    """GPU model, for the memory-fit check and time estimate in the plan."""
    mfu: float = 0.35
    """Model-FLOPs utilisation assumed by the time estimate: the same definition as the ``mfu`` a run logs
    (belle.monitor.flops), so a measured value can be copied here."""
    collective_timeout_s: int = 1800
    """Seconds a collective (all-reduce, barrier) may wait before the job fails instead of hanging."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables for every training worker, e.g. for multi-node InfiniBand
    ``{NCCL_SOCKET_IFNAME: ib0, NCCL_IB_HCA: mlx5, NCCL_DEBUG: WARN}``; NCCL_*/TORCH_NCCL_* variables set where the
    launcher runs are passed on as well."""
    ray_temp_dir: str | None = None
    """Temp folder of the embedded Ray (cluster=local), kept short for its sockets; None: a new /tmp/belle-ray-*
    folder, removed at the end."""
    # --- cluster=slurm: the sbatch job (cluster/slurm/ray_job.sbatch.j2) ---
    partition: str | None = None
    """Slurm partition (sbatch --partition); None: the cluster's default."""
    account: str | None = None
    """Slurm account to charge (sbatch --account)."""
    qos: str | None = None
    """Slurm quality of service (sbatch --qos)."""
    constraint: str | None = None
    """Node features the job needs (sbatch --constraint), e.g. ``a100&ib``."""
    time: str = "04:00:00"
    """Time limit of one attempt (sbatch --time); a preempted or timed-out attempt is requeued and resumes."""
    cpus_per_node: int | None = None
    """CPUs to allocate per node; None: the training workers' share (workers per node × cluster.cpus_per_worker)."""
    sbatch_extra: list[str] = field(default_factory=list)
    """More sbatch options, one per ``#SBATCH`` line, e.g. ``[--exclusive, --mem=0]``."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run first in the job (your own code: ``module load cuda``, ``source venv/bin/activate``); the first
    whose exit status is not 0 ends the job, naming it (in ``a; b`` that is b's: chain with ``&&``)."""
    srun_args: list[str] = field(default_factory=list)
    """Options for every srun step that runs Ray or the driver, e.g. container options
    ``[--container-image=/images/belle.sqsh, --container-mounts=/data:/data]``."""
    python: str | None = None
    """Python interpreter on the nodes; None: the one running the launcher (a shared filesystem)."""
    signal_delay_s: int = 300
    """Seconds before the time limit at which Slurm warns the job (USR1): it saves a checkpoint and requeues."""
    max_requeues: int = 3
    """Times a preempted or timed-out job requeues itself before it stays stopped."""
    ray_join_timeout_s: int = 300
    """Seconds the Ray head waits for every node to join with its CPUs/GPUs before the job fails."""
    placement_timeout_s: int = 300
    """Seconds Ray may take to place and start the training workers (SFT's worker group, PPO's role pools) before
    the run fails, naming what is missing."""
    ray_port_min: int = 20000
    """Lowest port of the range Ray's ports are picked from (each checked free on its node at start)."""
    ray_port_max: int = 30000
    """Highest port of that range."""

    def __post_init__(self) -> None:
        one_of("cluster.kind", self.kind, KINDS)
        one_of("cluster.gpu_type", self.gpu_type, GPU_TYPES)
        positive("cluster.nodes", self.nodes, 1)
        positive("cluster.placement_timeout_s", self.placement_timeout_s, 300)
        require(
            self.gpus_per_node >= 0,
            f"cluster.gpus_per_node={self.gpus_per_node} must be >= 0: set cluster.gpus_per_node=<GPUs per machine>, "
            "or 0 for CPU workers",
        )
        positive("cluster.cpu_workers_per_node", self.cpu_workers_per_node, 2)
        require(
            self.cpus_per_worker is None or self.cpus_per_worker > 0,
            f"cluster.cpus_per_worker={self.cpus_per_worker} must be > 0: set cluster.cpus_per_worker=null "
            "(the node's share)",
        )
        for key in self.env:
            require(
                re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) is not None,
                f"cluster.env key {key!r} is not an environment variable name: fix it",
            )
        require(0 < self.mfu <= 1, f"cluster.mfu={self.mfu} must be in (0, 1]: set cluster.mfu=0.35")
        positive("cluster.collective_timeout_s", self.collective_timeout_s, 1800)
        self._check_slurm()
        require(
            self.kind != "ray" or bool(self.address),
            "cluster=ray needs the cluster's address: set cluster.address=<head-ip>:6379 (or auto)",
        )
        require(
            self.kind != "local" or self.nodes == 1,
            f"cluster=local runs on this one machine, not cluster.nodes={self.nodes}: set cluster.nodes=1, or "
            "cluster=ray / cluster=slurm for several machines",
        )

    def _check_slurm(self) -> None:
        for key in ("partition", "account", "qos"):
            _slurm_value(f"cluster.{key}", getattr(self, key))
        _slurm_value("cluster.constraint", self.constraint, SLURM_CONSTRAINT)
        limit = slurm_time_seconds(self.time)
        require(
            0 < self.signal_delay_s < limit,
            f"cluster.signal_delay_s={self.signal_delay_s} must be > 0 and below cluster.time={self.time} "
            f"({limit} s): set cluster.signal_delay_s={max(1, min(300, limit // 10))}",
        )
        if self.cpus_per_node is not None:
            need = self.ray_cpus_per_node
            require(
                self.cpus_per_node >= need,
                f"cluster.cpus_per_node={self.cpus_per_node} is below the {need} CPUs the node's workers reserve: "
                f"set cluster.cpus_per_node={need} or lower cluster.cpus_per_worker",
            )
        for line in self.setup:
            require(
                (len(line) - len(line.rstrip("\\"))) % 2 == 0,  # an odd run of trailing backslashes continues
                f"cluster.setup entry {line!r} ends with a line continuation (\\), which would join it to the "
                "script's own next line: write the whole command in one entry",
            )
        self._check_no_secret_written()
        for key, lines in (("sbatch_extra", self.sbatch_extra), ("srun_args", self.srun_args)):
            for line in lines:
                require(
                    line.startswith("-") and not any(c in line for c in "\n\r"),
                    f"cluster.{key} entry {line!r} is not one option: write each as --name=value",
                )
        require(self.max_requeues >= 0, f"cluster.max_requeues={self.max_requeues} must be >= 0")
        positive("cluster.ray_join_timeout_s", self.ray_join_timeout_s, 300)
        require(
            self.ray_port_min >= 1024 and self.ray_port_min + 200 <= self.ray_port_max <= 65535,
            f"cluster.ray_port_min..max={self.ray_port_min}..{self.ray_port_max} needs 200+ ports within 1024..65535:"
            " set cluster.ray_port_min=20000 cluster.ray_port_max=30000",
        )

    def _check_no_secret_written(self) -> None:
        """Credentials typed into cluster.setup, srun_args, sbatch_extra or cluster.env would land in config.yaml,
        the sbatch script and the console."""
        from belle.config._checks import SECRET
        from belle.config.shell import literal_credentials

        for key in ("setup", "srun_args", "sbatch_extra"):
            for number, line in enumerate(getattr(self, key), 1):
                try:
                    found = literal_credentials(line)
                except ValueError as exc:  # the job's shell would refuse it too, and it may hide a credential
                    raise ValueError(f"cluster.{key} entry {number} is not valid shell ({exc}): fix it") from None
                if found:
                    raise ValueError(_literal_credential(key, number, found[0]))
        for name in self.env:
            require(
                not SECRET.search(name),
                f"cluster.env.{name} looks like a credential and would be written to config.yaml: export it in your "
                "shell instead (every backend passes your environment on)",
            )

    @property
    def workers_per_node(self) -> int:
        """Training workers on each machine."""
        return self.gpus_per_node if self.use_gpu else self.cpu_workers_per_node

    @property
    def ray_cpus_per_node(self) -> int:
        """CPUs each node's Ray offers: its training workers' share."""
        return self.workers_per_node * self.worker_cpus

    @property
    def worker_cpus(self) -> int:
        """CPU cores each training worker reserves (cpus_per_worker with its default resolved)."""
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        if not self.use_gpu:
            return 1
        if self.cpus_per_node is not None:
            return max(1, self.cpus_per_node // self.gpus_per_node)
        if self.kind == "local":
            return max(1, (os.cpu_count() or 1) // self.gpus_per_node)
        return GPU_WORKER_CPUS

    def worker_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Variables every training worker gets, on every backend: the submitting environment's NCCL settings
        (NCCL_*, TORCH_NCCL_*), then cluster.env on top."""
        forwarded = {k: v for k, v in environ.items() if k.startswith(NCCL_PREFIXES)}
        return forwarded | dict(self.env)

    @property
    def slurm_cpus_per_node(self) -> int:
        """CPUs the Slurm job allocates on each node."""
        return self.cpus_per_node or self.ray_cpus_per_node

    @property
    def use_gpu(self) -> bool:
        """Whether workers train on GPUs."""
        return self.gpus_per_node > 0

    @property
    def world_size(self) -> int:
        """Training workers in the whole job."""
        return self.nodes * self.workers_per_node
