"""One Ray node of a Slurm job, run as that node's srun step by the sbatch script:

    python -m launcher.backends.slurm.node --info FILE --cpus N --gpus G --ports LOW HIGH --timeout S head|worker NODE

The head picks its ports, runs ``ray start --head --block`` and, once its GCS answers, writes the cluster address to
FILE (in the run directory, which every node sees); a worker waits for FILE, then runs ``ray start --block`` against
that address. Ray's CLI runs from this interpreter's environment (no ``ray`` on PATH needed). A node whose Ray ends
before the job's teardown records its exit code and last output line beside FILE (``exit_file``), so the driver
fails at once, naming it.
Every port is picked from LOW..HIGH and checked free on this node at start, so two jobs sharing a node (or the
several Slurm nodes of one development machine) never collide. Each node carries the resource ``slurm-node:NODE``,
by which the driver tells which node has joined. The node stops its own Ray processes (never another job's, which
``ray stop`` would) when FILE is removed (the script's teardown) or on SIGTERM.
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from belle.rundir import write_atomic

NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-grpc-port",
              "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port")
HEAD_PORTS = ("port", "ray-client-server-port", "dashboard-port")
WORKER_PORTS = 64
"""Ports for the node's Ray worker processes (one each): the training workers and spares."""
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # the job's own cluster, reachable only inside the allocation's network
    "RAY_COLOR_PREFIX": "0",  # plain "(PoolWorker pid=…)" prefixes in the job log
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # at teardown the job is over: nothing to drain
}


def node_resource(node: str) -> str:
    """The custom resource that marks the Ray node of Slurm node ``node``."""
    return f"slurm-node:{node}"


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def pick_ports(count: int, block: int, low: int, high: int) -> tuple[list[int], range]:
    """``count`` single ports and one block of ``block`` consecutive ports in low..high, all free now; random
    starting points keep jobs that start at the same moment apart."""
    need = count + block
    for start in random.Random().sample(range(low, high - need + 1), min(200, high - need + 1 - low)):
        ports = range(start, start + need)
        if all(_free(p) for p in ports):
            return list(ports[:count]), ports[count:]
    raise RuntimeError(f"no {need} consecutive free ports in {low}..{high} on {socket.gethostname()}: "
                       "widen cluster.ray_port_min/ray_port_max")


def exit_file(info: Path, node: str) -> Path:
    """Where ``node`` records that its Ray ended early (beside the head's address file ``info``)."""
    from belle.rundir import SLURM_HEAD_INFO, SLURM_NODE_EXIT

    job = info.name.removeprefix(Path(SLURM_HEAD_INFO).name.split("{")[0]).removesuffix(".json")
    return info.with_name(Path(SLURM_NODE_EXIT).name.format(job_id=job, node=node))


def ended(info: Path) -> str | None:
    """Why the job cannot come up: a node whose Ray has ended, with its exit code and last line; else None."""
    for path in sorted(info.parent.glob(exit_file(info, "*").name)):
        node = json.loads(path.read_text())
        return (f"Ray on {node['node']} ended with exit code {node['code']} before the job could start: "
                f"{node['last_line'] or 'no output'} (see that node's lines in the job log)")
    return None


def wait_for_head(info: Path, timeout: float, failed=lambda: None) -> str:
    """The Ray address the head wrote to ``info``, waiting up to ``timeout`` seconds for it; ``failed()`` returning a
    message (a node's Ray has ended) ends the wait with that message."""
    deadline = time.monotonic() + timeout
    while not info.is_file():
        reason = failed()
        if reason:
            raise RuntimeError(reason)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray head wrote no address to {info} within {timeout:g} s")
        time.sleep(0.5)
    return json.loads(info.read_text())["address"]


def ray_start_args(role: str, node: str, args: argparse.Namespace, ip: str, address: str | None) -> tuple[list, str]:
    """The ``ray start`` command of this node and the cluster's address (the head's GCS)."""
    names = NODE_PORTS + (HEAD_PORTS if role == "head" else ())
    ports, workers = pick_ports(len(names), WORKER_PORTS, *args.ports)
    job = os.environ.get("SLURM_JOB_ID", "0")
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--log-style=record", "--log-color=false",
        f"--node-ip-address={ip}", f"--num-cpus={args.cpus}", f"--num-gpus={args.gpus}",
        f"--resources={json.dumps({node_resource(node): 1})}", f"--temp-dir=/tmp/belle-ray-{job}-{node}",
        f"--min-worker-port={workers.start}", f"--max-worker-port={workers.stop - 1}", "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in zip(names, ports, strict=True)),
    ]
    if role == "head":
        command += ["--head", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        return command, f"{ip}:{ports[names.index('port')]}"
    return command + [f"--address={address}"], address


class _Output(threading.Thread):
    """Copies the node's ``ray start`` output to this step's (the job log), keeping the last line for the driver."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream, self.last = stream, ""

    def run(self) -> None:
        for line in self.stream:
            print(line, end="", flush=True)
            self.last = line.strip() or self.last


def _answers(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=2):
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--info", type=Path, required=True, help="file the head writes its address to")
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--ports", type=int, nargs=2, required=True, metavar=("LOW", "HIGH"))
    parser.add_argument("--timeout", type=float, required=True, help="seconds a worker waits for the head")
    parser.add_argument("role", choices=("head", "worker"))
    parser.add_argument("node", help="this Slurm node's name")
    args = parser.parse_args(argv)

    import ray.util

    ip = ray.util.get_node_ip_address()  # the routable address (a hostname may resolve to 127.0.1.1)
    address = wait_for_head(args.info, args.timeout, lambda: ended(args.info)) if args.role == "worker" else None
    command, address = ray_start_args(args.role, args.node, args, ip, address)
    print(f"{args.node}: Ray {args.role} on {ip}" + (f", joining {address}" if args.role == "worker" else ""),
          flush=True)
    node = subprocess.Popen(command, env=os.environ | RAY_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = _Output(node.stdout)
    output.start()
    ending = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: ending.set())
    if args.role == "head":  # the address goes out once the GCS answers: the driver never waits on a dead head
        deadline = time.monotonic() + args.timeout
        while node.poll() is None and not ending.is_set() and not _answers(address):
            if time.monotonic() > deadline:
                print(f"{args.node}: Ray's GCS did not answer at {address} within {args.timeout:g} s", flush=True)
                node.terminate()
                node.wait()
                break
            ending.wait(0.5)
        else:
            if node.poll() is None and not ending.is_set():
                write_atomic(args.info, json.dumps({"address": address, "node": args.node}) + "\n")
    while node.poll() is None and not ending.is_set() and args.info.exists():  # until the teardown removes it
        ending.wait(1)
    code = node.poll()
    if code is not None and not ending.is_set():  # Ray ended on its own, before the teardown: say so at once
        output.join(timeout=5)
        write_atomic(exit_file(args.info, args.node), json.dumps(
            {"node": args.node, "code": code, "last_line": output.last[-300:]}) + "\n")
    _stop(node)
    shutil.rmtree(next(a for a in command if a.startswith("--temp-dir=")).split("=", 1)[1], ignore_errors=True)
    return 0 if code is None else code


def _stop(node: subprocess.Popen) -> None:
    """End ``ray start --block`` (on SIGTERM it drains the node and stops what it started), then whatever of its
    processes outlived it (raylet, GCS, Ray workers)."""
    import psutil

    try:
        processes = psutil.Process(node.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        processes = []
    node.terminate()
    try:
        node.wait(timeout=40)
    except subprocess.TimeoutExpired:
        node.kill()
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
