"""The plan as a person reads it on the console."""

from belle.monitor.progress import short_count


def _count(n: float | None) -> str:
    return "unknown" if n is None else short_count(n, digits=2)


def describe(plan: dict) -> str:
    """A compact multi-line summary of ``plan`` (plan.json has every number): the shared lines, then the recipe's
    own as it gave them, then the notes."""
    m, c, s, d = plan["model"], plan["cluster"], plan["strategy"], plan["data"]
    offload = [k for k in ("optimizer", "params") if s[f"offload_{k}"]]
    return "\n".join([
        f"plan: {plan['experiment']}  ({plan['method']})",
        f"  recipe     {plan['recipe']['name']} ({plan['recipe']['kind']}): " + (
            f"trains {plan['recipe']['trains']}" if plan["recipe"]["trains"] else plan["recipe"]["produces"]),
        f"  model      {m['name']} ({m['arch']}), attention {m['attn_implementation']}",
        f"  params     total {_count(m['params_total'])} ({m['params_total']:,}), "
        f"trainable {_count(m['params_trainable'])} ({m['params_trainable']:,}, {100 * m['trainable_share']:.3g}%)",
        f"  cluster    {c['kind']}: {c['nodes']} node(s) x {c['workers_per_node']} {c['device']} workers"
        f" = world size {c['world_size']}, {c['cpus_per_worker']} CPU core(s) per worker",
        f"  strategy   ZeRO-{s['zero_stage']}, {s['precision']}, offload {', '.join(offload) or 'none'}, "
        f"activation checkpointing {'on' if s['activation_checkpointing'] else 'off'}",
        f"  data       {d['name']}: {_count(d['num_samples'])} samples x {d['mean_tokens'] or '?'} tokens "
        f"({d['source']}) = {_count(d['tokens_per_epoch'])} tokens/epoch",
        *plan["lines"],
        *(f"  note       {w}" for w in plan["warnings"]),
    ])
