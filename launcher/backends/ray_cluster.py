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
    # no idle task workers started with the driver: nothing here runs tasks, and on a few cores their start competes
    # with the actors' (the first step came ~3 s sooner on 2 cores)
    "RAY_prestart_worker_first_driver": "0",
    "RAY_enable_worker_prestart": "0",
}


def check_local_machine(cluster: ClusterConfig) -> None:
    """cluster=local trains on this machine: the GPUs it asks for must be here (else NCCL fails in the workers), and
    CPU workers get a core each (more would thrash, each holding a model copy)."""
    if cluster.kind != "local":
        return
    if not cluster.use_gpu:
        cores = os.cpu_count() or 1
        if cluster.world_size > cores:
            raise ValueError(
                f"cluster.cpu_workers_per_node={cluster.cpu_workers_per_node} starts that many training processes on "
                f"this machine's {cores} cores: set cluster.cpu_workers_per_node={cores} (or fewer)"
            )
        return
    import torch

    found = torch.cuda.device_count()
    if found < cluster.gpus_per_node:
        raise ValueError(
            f"cluster.gpus_per_node={cluster.gpus_per_node} but this machine has {found} CUDA GPU(s), and "
            f"cluster=local trains here: set cluster.gpus_per_node={found} (0: CPU workers), or cluster=ray / slurm"
        )


def _host_port(address: str, what: str) -> tuple[str, int]:
    """``host``, ``port`` of ``host:port`` (refused in one line otherwise)."""
    try:
        host, port = address.rsplit(":", 1)
        return host, int(port)
    except ValueError:
        raise ValueError(f"{what} is not <host>:<port>: set cluster.address=<head-ip>:6379") from None


def _answers(host: str, port: int, timeout_s: float) -> OSError | None:
    """None when something accepts a TCP connection at ``host:port`` within ``timeout_s``, else why not."""
    import socket

    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        return exc
    return None


def live_nodes(address: str, timeout_s: float = 10) -> list:
    """The GcsNodeInfo of every live node the Ray GCS at ``address`` records, asked within ``timeout_s`` (a plain
    GcsClient, as ``ray.init`` makes, waits minutes for a GCS that does not answer)."""
    from ray._raylet import InnerGcsClient
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    client = InnerGcsClient.standalone(address, None, int(timeout_s * 1000))
    nodes = client.get_all_node_info(timeout=timeout_s).values()
    return [n for n in nodes if n.state == GcsNodeInfo.GcsNodeState.ALIVE]


def check_reachable(address: str, what: str | None = None, timeout_s: float = 10) -> str:
    """Fail in one line unless something answers at the Ray ``address`` where ``ray.init`` will dial it (it replaces a
    loopback host by this machine's address, and would retry there for minutes); return that address. ``what``
    names the address in the message (default: cluster.address=…)."""
    from ray._private.services import canonicalize_bootstrap_address

    what = what or f"cluster.address={address}"
    given = address.removeprefix("ray://")
    try:  # "auto": the address Ray recorded for this host's cluster
        dial = given if address.startswith("ray://") else canonicalize_bootstrap_address(given)
    except ConnectionError as exc:  # "auto" with no Ray on this host
        raise ValueError(f"{what}: {str(exc).splitlines()[0]}: set cluster.address=<head-ip>:6379") from None
    except ValueError:
        raise ValueError(f"{what} is not <host>:<port>: set cluster.address=<head-ip>:6379") from None
    host, port = _host_port(dial, what)
    refused = _answers(host, port, timeout_s)
    if refused is None:
        return dial
    if dial != given and given != "auto":
        if _answers(*_host_port(given, what), timeout_s) is None:
            raise ValueError(_loopback_only(what, given, dial, timeout_s))
        dial = given  # the user's address: nothing answers there either
    raise ValueError(
        f"{what}: nothing answers at {dial} ({refused.strerror or refused}): start Ray there "
        "(ray start --head) or set cluster.address to the head's address"
    )


def _loopback_only(what: str, given: str, dial: str, timeout_s: float) -> str:
    """Why a head that answers at ``given`` (loopback) cannot be joined at ``dial`` (this host's address), and the
    two fixes."""
    host = dial.rsplit(":", 1)[0]
    from ray.exceptions import RpcError

    try:
        advertised = sorted({n.node_manager_address for n in live_nodes(given, timeout_s)})
    except RpcError:  # a listener that is no Ray GCS: the message stays useful without it
        advertised = []
    return (
        f"{what}: Ray dials a loopback address as this machine's {dial}, where nothing answers: the head listens "
        f"on loopback only" + (f" (it advertises {', '.join(advertised)})" if advertised else "")
        + f": start it with `ray start --head --node-ip-address={host}`, or export "
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before launching to join it on loopback"
    )


def check_capacity(cluster: ClusterConfig, nodes: list, what: str) -> None:
    """Refuse a job whose training workers do not all fit on the live ``nodes`` (GcsNodeInfo) of its Ray cluster by
    their total CPUs and GPUs: their placement would wait with no end."""
    need = {"CPU": cluster.worker_cpus} | ({"GPU": 1} if cluster.use_gpu else {})
    room = sum(min(int(n.resources_total.get(k, 0) // v) for k, v in need.items()) for n in nodes)
    if room >= cluster.world_size:
        return
    has = ", ".join(f"{sum(n.resources_total.get(k, 0) for n in nodes):g} {k}" for k in need)
    each = ", ".join(f"{v} {k}" for k, v in need.items())
    per_node = "cluster.gpus_per_node" if cluster.use_gpu else "cluster.cpu_workers_per_node"
    raise ValueError(
        f"{what}: the cluster's {len(nodes)} live node(s) ({has}) have room for {room} of the job's "
        f"{cluster.world_size} training workers ({each} each): set cluster.nodes={cluster.nodes} x "
        f"{per_node}={cluster.workers_per_node} to at most {room} workers, or lower "
        f"cluster.cpus_per_worker={cluster.worker_cpus}, or add Ray nodes"
    )


def check_ray_cluster(job: JobConfig) -> None:
    """cluster=ray, before anything is written or started: Ray answers at cluster.address where ``ray.init`` will
    dial it, and an SPMD job's training workers fit on its live nodes."""
    from ray.exceptions import RpcError

    from belle.recipes import recipe

    c, what = job.cluster, f"cluster.address={job.cluster.address}"
    dial = check_reachable(c.address)
    if recipe(job.method.name).KIND != "spmd" or c.address.startswith("ray://"):
        return
    try:
        nodes = live_nodes(dial)
    except RpcError as exc:
        raise ValueError(
            f"{what}: {dial} answers, but no Ray GCS replied there within 10 s ({str(exc).splitlines()[0]}): set "
            "cluster.address to the head's GCS address (the one `ray start --head` prints)"
        ) from None
    check_capacity(c, nodes, what)


@contextmanager
def stop_handlers_kept():
    """Restore this process's SIGTERM/SIGUSR1 handlers after the block (entered in the main thread): ray.init installs
    Ray's own (a SIGTERM exits, and its core worker's crash handler aborts), which would cut a graceful stop
    (launcher.launch.graceful_stop) short."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            if callable(handler):
                signal.signal(s, handler)


def connect(**init_args) -> None:
    """``ray.init(**init_args)`` from the main thread, keeping this process's stop handlers (stop_handlers_kept)."""
    import ray

    with stop_handlers_kept():
        ray.init(**init_args)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_TEMP_PREFIX = "belle-ray-pid"
"""Embedded Rays keep their files in /tmp/belle-ray-pid<launcher pid>-*; a launcher killed before it could remove
its folder leaves it to the next one."""


def _remove_orphaned_temp_dirs() -> None:
    import psutil

    for folder in Path("/tmp").glob(f"{_TEMP_PREFIX}*-*"):
        pid = folder.name.removeprefix(_TEMP_PREFIX).split("-")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)) and folder.stat().st_uid == os.getuid():
            shutil.rmtree(folder, ignore_errors=True)


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
    temp, address = None, os.environ.get("RAY_ADDRESS")
    if c.kind == "ray":
        check_reachable(c.address)
        connect(address=c.address)
    else:
        if not c.ray_temp_dir:
            _remove_orphaned_temp_dirs()
        # Ray's unix sockets live in here: the path must stay short (107 bytes in all), hence /tmp, not $TMPDIR
        temp = Path(c.ray_temp_dir or tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-", dir="/tmp"))
        # a process that looks its cluster up with no address (Ray's helpers, a library's ray.init()) would find
        # two beside another Ray on this host and die with a traceback. Every process of the embedded Ray inherits
        # this environment, so the GCS port is chosen here and named in RAY_ADDRESS ("local": the driver itself
        # ignores RAY_ADDRESS).
        port = _free_port()
        os.environ |= {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}"}
        try:
            # nothing reads Ray's dashboard (the workers report through our metrics): not starting it saves seconds
            connect(address="local", num_cpus=c.world_size * c.worker_cpus, num_gpus=c.gpus_per_node,
                    _temp_dir=str(temp), include_dashboard=False)
        finally:
            os.environ.pop("RAY_GCS_SERVER_PORT")
    try:
        yield
    finally:
        ray.shutdown()
        if address is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = address
        if temp is not None and not c.ray_temp_dir:
            shutil.rmtree(temp, ignore_errors=True)
