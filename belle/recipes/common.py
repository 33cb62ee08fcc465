"""What the recipes do the same way: the SPMD step loop, a stop request, the finite-loss check, what is due at a
step, rank 0's outputs and a rank's share of the pairs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from belle import stop
from belle.config import JobConfig, job_dict
from belle.heartbeat import Heartbeat
from belle.monitor.flops import model_flops_per_token
from belle.monitor.metrics import MetricsLog, StepMeter
from belle.monitor.progress import Progress
from belle.monitor.wandb_run import start_wandb
from belle.train.state import saver


def spmd_loop(
    job: JobConfig, run_dir: Path, engine, state: dict, micro_batches: Iterator[list], *, rank: int, world: int,
    accumulation: int, total_steps: int, counts: Callable[[list], dict], micro_loss: Callable[[list, dict], tuple],
    metrics: Callable[[object], dict], evaluate: Callable[[], dict] | None, export: Callable[[], None],
    extra: Callable[[Path], None] | None = None, tokenizer=None,
) -> dict:
    """Train from ``state["step"]`` to ``total_steps`` on every rank, then ``export()``; return ``state``.

    Each optimizer step takes ``accumulation`` micro-batches from ``micro_batches``. ``counts(items)`` (the window's
    rows or pairs) gives this rank's sums, at least "tokens" and "samples"; they are summed over all ranks together
    with the stop flag, so all ranks stop at the same step (a stop request saves and leaves without the export).
    ``micro_loss(micro, counts)`` gives the loss to back-propagate and the float64 totals it adds to the step's sums;
    ``metrics(totals)`` turns all ranks' summed totals into the step's metrics, "loss" among them. ``evaluate()``
    (None: no held-out data) gives the held-out metrics, logged with an ``eval_`` prefix; every
    train.eval_generate_every steps the eval section's set is answered and scored (belle.generation.while_training,
    with ``tokenizer``), logged as eval_score and eval_score_wo_others. Rank 0 logs through a
    Monitor; every rank writes its heartbeat after each step and takes part in checkpoints (``extra`` writes more
    into each checkpoint folder, as belle.train.state.saver)."""
    import torch
    import torch.distributed as dist

    start = state["step"]
    monitor = Monitor(job, run_dir, total_steps, start, engine.device, world) if rank == 0 else None
    heartbeat = Heartbeat(run_dir, rank, start)  # read by the launcher's hang watchdog
    save = saver(engine, run_dir, state, job, rank, extra=extra)
    score = None
    if job.train.eval_generate_every:
        from belle.generation.while_training import ScoreWhileTraining

        score = ScoreWhileTraining(job, run_dir, tokenizer, rank, world)
    for step in range(start + 1, total_steps + 1):
        step_start, lr = time.time(), engine.get_lr()[0]
        window = [next(micro_batches) for _ in range(accumulation)]
        mine = counts([item for micro in window for item in micro])
        reduced = torch.tensor(  # on the device: NCCL groups have no CPU backend
            [*mine.values(), stop.requested(run_dir)], dtype=torch.float64, device=engine.device
        )
        dist.all_reduce(reduced)  # one rank seeing the request is enough: all stop at this same step
        *sums, stopping = reduced.tolist()
        if stopping:  # preemption: keep what was trained, then leave without the export
            return leave(job, run_dir, state, start, save, monitor)
        summed = dict(zip(mine, sums, strict=True))
        parts = []
        for micro in window:
            loss, part = micro_loss(micro, summed)
            engine.backward(loss)
            engine.step()
            parts.append(part.double())
        totals = sum(parts)  # on the device: one host sync per step, in metrics
        dist.all_reduce(totals)
        step_metrics = metrics(totals)
        state["step"], state["loss"] = step, step_metrics["loss"]
        check_finite(state["loss"], step)
        record = {}
        if due(job.monitor.log_every, step, total_steps):
            grad_norm = engine.get_global_grad_norm()
            record = {
                "step": step, **step_metrics, "lr": lr, "grad_norm": None if grad_norm is None else float(grad_norm),
            }
            if monitor:
                record |= monitor.meter.measure(summed["tokens"], int(summed["samples"]), time.time() - step_start)
        if evaluate and due(job.train.eval_every, step, total_steps):
            held_out = evaluate()
            state["eval_loss"] = held_out["loss"]
            record |= {"step": step} | {f"eval_{key}": value for key, value in held_out.items()}
        if score and due(job.train.eval_generate_every, step, total_steps):
            record |= {"step": step} | {f"eval_{key}": value for key, value in score(engine, step).items()}
        if record and monitor:
            monitor.log(record)
        if due(job.train.save_every, step, total_steps):
            save()
        heartbeat(step)
    export()
    if monitor:
        monitor.finish()
    return state


def pair_counts(pairs) -> dict:
    """A window's counts for spmd_loop when its items are preference pairs: tokens of both sides, and pairs."""
    return {"tokens": sum(len(pair.chosen) + len(pair.rejected) for pair in pairs), "samples": len(pairs)}


def leave(job: JobConfig, run_dir: Path, state: dict, start: int, save: Callable[[], None], monitor) -> dict:
    """A stop request (preemption) reached every rank: keep what was trained (unless just saved), acknowledge it
    and return ``state``, without the export."""
    if state["step"] > start and state["step"] % job.train.save_every:
        save()
    if monitor:
        stop.acknowledge(run_dir, state["step"])
        monitor.finish()
    return state


def check_finite(loss: float, step: int) -> None:
    """Stop the run at a NaN or infinite loss (the last good checkpoint stays). At step 1 the loss comes from the
    starting weights, so the message points at the inputs rather than the learning rate."""
    if math.isfinite(loss):
        return
    if step == 1:
        raise RuntimeError(
            f"the training loss is {loss} at optimizer step 1, before the learning rate could move the weights far: "
            "most likely an input is not finite: check the weights at model.path, the data and the method's "
            "settings (e.g. method.rm.margin); no checkpoint was written"
        )
    raise RuntimeError(
        f"the training loss is {loss} at optimizer step {step}: lower optim.lr, raise optim.warmup_steps, or "
        "use strategy.precision=bf16 instead of fp16; the last good checkpoint is kept"
    )


def due(every: int | None, step: int, total_steps: int) -> bool:
    """Whether something done every ``every`` steps (and at the last; None or 0: only at the last) is due."""
    return step == total_steps or bool(every and step % every == 0)


class Monitor:
    """Rank 0's outputs: metrics.jsonl, W&B, the progress line."""

    def __init__(self, job: JobConfig, run_dir: Path, total_steps: int, start: int, device, world: int):
        from belle.model.anatomy import anatomy

        m = job.model
        flops = model_flops_per_token(
            anatomy(m).matmul_params, m.num_layers, m.hidden_size, job.data.max_length, job.method.lora is not None
        )
        self.meter = StepMeter.on(device, flops, world)
        resumed = start or None
        self.metrics = MetricsLog(run_dir, resume_step=resumed)
        self.wandb = start_wandb(job.monitor, run_dir, job.launcher.name, job_dict(job), resume_step=resumed)
        self.progress = Progress(total_steps, start)

    def log(self, record: dict) -> None:
        self.metrics.log(record)
        if self.wandb:
            self.wandb.log(record, step=record["step"])
        self.progress.update(record)

    def finish(self) -> None:
        if self.wandb:
            self.wandb.finish()


def shard(items, rank: int, world: int) -> list[tuple[object, bool]]:
    """This rank's share of ``items`` (every world-th from ``rank``) as (item, real), padded with (items[0], False)
    so every rank has as many: under ZeRO-3 every rank must run the same number of forward passes."""
    mine = [(items[i], True) for i in range(rank, len(items), world)]
    return mine + [(items[0], False)] * (-(-len(items) // world) - len(mine))
