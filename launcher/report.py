"""The plan as a person reads it on the console."""

from belle.monitor.progress import short_count


def _count(n: float | None) -> str:
    return "unknown" if n is None else short_count(n, digits=2)


def describe(plan: dict) -> str:
    """A compact multi-line summary of ``plan`` (plan.json has every number)."""
    m, c, s, d, sch = plan["model"], plan["cluster"], plan["strategy"], plan["data"], plan["schedule"]
    offload = [k for k in ("optimizer", "params") if s[f"offload_{k}"]]
    head = [
        f"plan: {plan['experiment']}  ({plan['method']})",
        f"  recipe     {plan['recipe']['name']} ({plan['recipe']['kind']}): trains {plan['recipe']['trains']}",
        f"  model      {m['name']} ({m['arch']}), attention {m['attn_implementation']}",
        f"  params     total {_count(m['params_total'])} ({m['params_total']:,}), "
        f"trainable {_count(m['params_trainable'])} ({m['params_trainable']:,}, {100 * m['trainable_share']:.3g}%)",
        f"  cluster    {c['kind']}: {c['nodes']} node(s) x {c['workers_per_node']} {c['device']} workers"
        f" = world size {c['world_size']}, {c['cpus_per_worker']} CPU core(s) per worker",
    ]
    strategy = (f"  strategy   ZeRO-{s['zero_stage']}, {s['precision']}, offload {', '.join(offload) or 'none'}, "
                f"activation checkpointing {'on' if s['activation_checkpointing'] else 'off'}")
    data = (f"  data       {d['name']}: {_count(d['num_samples'])} samples x {d['mean_tokens'] or '?'} tokens "
            f"({d['source']}) = {_count(d['tokens_per_epoch'])} tokens/epoch")
    placement = plan.get("placement")
    if placement:  # PPO: the step, and each pool's roles, ranks and memory instead of one worker group's
        body = [f"  step       {plan['recipe']['step']}", strategy, *placement["lines"], data,
                f"  schedule   {sch['total_steps'] or '?'} PPO steps, lr {sch['lr']:g} {sch['schedule']}"]
    else:
        body = _worker_group(plan, strategy, data)
    return "\n".join(head + body + [f"  note       {w}" for w in plan["warnings"]])


def _worker_group(plan: dict, strategy: str, data: str) -> list[str]:
    """The batch, strategy, memory, data, schedule and time lines of one worker group's plan."""
    c, b, sch, mem = plan["cluster"], plan["batch"], plan["schedule"], plan["memory_gib_per_gpu"]
    est, ref = plan["estimate"], plan["reference"]
    fits = {True: "fits", False: "DOES NOT FIT", None: "no GPU"}[mem["fits"]]
    capacity = f" of {mem['capacity']:g} GiB ({fits})" if mem["capacity"] else " (CPU workers)"
    hours = f"{est['hours_per_epoch']} h" if est["hours_per_epoch"] is not None else "n/a"
    paper = f"   paper: {ref['hours_per_epoch']:g} h on {ref['hardware']}" if ref["hours_per_epoch"] else ""
    return [
        f"  batch      micro {b['micro']} x world {c['world_size']} x accumulation {b['grad_accumulation']}"
        f" = global {b['global']} sequences of {b['max_length']} tokens ({'packed' if b['packed'] else 'padded'}): "
        f"{b['samples_per_step']:g} samples, {_count(b['tokens_per_step'])} tokens per optimizer step",
        strategy,
        f"  memory/GPU {mem['total']} GiB{capacity}: weights {mem['weights']}, grads {mem['gradients']}, "
        f"optimizer {mem['optimizer']}, ZeRO-3 gather {mem['zero3_working_set']}, comm {mem['comm_buckets']}, "
        f"activations {mem['activations']}, logits {mem['logits']}, overhead {mem['overhead']}",
        data,
        f"  schedule   {sch['epochs']:g} epoch(s), {sch['steps_per_epoch'] or '?'} steps/epoch, "
        f"{sch['total_steps'] or '?'} steps, warmup {sch['warmup_steps']}, lr {sch['lr']:g} {sch['schedule']}",
        f"  time       est. {hours}/epoch at MFU {est['mfu_assumed'] or 'n/a'}{paper}",
    ]
