"""The Ray of a Slurm job, as its driver sees it: the head's address (written by launcher.backends.slurm.node once
its GCS answers), then every node of the allocation joined with its CPUs/GPUs. The wait ends at once, naming the
node and its last line, when a node's Ray has ended (its exit file), and ends early when a stop is requested."""

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from launcher.backends.ray_cluster import check_reachable, stop_handlers_kept
from launcher.backends.slurm.node import RAY_ENV, ended, node_resource, wait_for_head


class StopRequested(Exception):
    """A stop (SIGTERM, SIGUSR1) was requested while the job's Ray was coming up; ``blocked``: the thread that
    connects to Ray is still inside Ray, so this process cannot shut Ray down and must end with os._exit."""

    def __init__(self, blocked: bool = False):
        super().__init__("a stop was requested while the job's Ray was coming up")
        self.blocked = blocked


def wait_for_nodes(nodes: list[str], cpus: int, gpus: int, timeout: float, since: float | None = None,
                   failed: Callable[[], str | None] = lambda: None) -> None:
    """Poll Ray until each Slurm node in ``nodes`` has a live Ray node with ``cpus`` CPUs and ``gpus`` GPUs, at most
    ``timeout`` seconds from ``since`` (a time.monotonic(); default now); ``failed()`` returning a message ends the
    wait with it."""
    import ray

    deadline = (since or time.monotonic()) + timeout
    while True:
        joined = {}
        for node in ray.nodes():
            resources = node["Resources"] if node["Alive"] else {}
            joined |= {name: resources for name in nodes if node_resource(name) in resources}
        short = [n for n, r in joined.items() if r.get("CPU", 0) < cpus or r.get("GPU", 0) < gpus]
        missing = [n for n in nodes if n not in joined] + short
        if not missing:
            return
        reason = failed()
        if reason:
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray on {', '.join(missing)} did not join with {cpus} CPUs and {gpus} GPUs within {timeout:g} s "
                f"({len(nodes) - len(missing)} of {len(nodes)} nodes did): see that node's lines in the job log; "
                "raise cluster.ray_join_timeout_s if nodes start slowly"
            )
        time.sleep(1)


def _connect_off_main(address: str) -> None:
    """ray.init off the main thread (which still sets Ray's crash handlers; the caller restores its own), without
    Ray's warning that it could not set its SIGTERM handler there: not setting it is the point."""
    import logging

    import ray

    quiet = logging.Filter()
    quiet.filter = lambda record: "SIGTERM handler is not set" not in record.getMessage()
    logging.getLogger("ray._private.worker").addFilter(quiet)
    try:
        ray.init(address=address)
    finally:
        logging.getLogger("ray._private.worker").removeFilter(quiet)


def join(info: Path, nodes: list[str], cpus: int, gpus: int, timeout: float,
         stopping: Callable[[], bool] = lambda: False) -> None:
    """Connect this process to the job's Ray once its head has written ``info``, then wait until every node of
    ``nodes`` (head first) has joined, all within ``timeout`` seconds; raise StopRequested when ``stopping()``.

    Connecting can block inside gRPC and Ray's C++ core for many seconds (a loaded head, a head going down), and
    Python runs signal handlers only in the main thread, between its bytecodes: so the connection is made in a
    daemon thread while the main one polls ``stopping()``, and a stop is seen at once, well inside Slurm's KillWait."""
    os.environ.update(RAY_ENV)
    since = time.monotonic()

    def failed() -> str | None:
        if stopping():
            raise StopRequested
        return ended(info)

    address = wait_for_head(info, timeout, failed)
    raised: list[BaseException] = []

    def reach_and_connect() -> None:
        try:
            check_reachable(address, f"the job's Ray head at {address}")
            _connect_off_main(address)
        except BaseException as exc:  # raised again in the main thread
            raised.append(exc)

    with stop_handlers_kept():
        connecting = threading.Thread(target=reach_and_connect, name="ray-connect", daemon=True)
        connecting.start()
        while connecting.is_alive():
            connecting.join(timeout=0.2)
            if connecting.is_alive() and stopping():
                raise StopRequested(blocked=True)
    if raised:
        raise raised[0]
    wait_for_nodes(nodes, cpus, gpus, timeout, since, failed)
