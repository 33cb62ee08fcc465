"""``launcher.preview=N``: the first N training samples exactly as the model sees them, trained spans marked (a pair:
its chosen, then its rejected sequence, the answers marked; a PPO prompt: its tokens, none trained, since PPO trains
only the responses it generates)."""

import json
import sys
from pathlib import Path

from belle.config import JobConfig

OPEN, CLOSE = "⟦", "⟧"
"""Markers around trained tokens when the console has no colour."""


def spans(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[bool, str]]:
    """Runs of consecutive tokens that are all trained (True) or all masked (False), decoded."""
    runs: list[tuple[bool, list[int]]] = []
    for token, label in zip(input_ids, labels, strict=True):
        trained = label != -100
        if runs and runs[-1][0] == trained:
            runs[-1][1].append(token)
        else:
            runs.append((trained, [token]))
    return [(trained, tokenizer.decode(ids)) for trained, ids in runs]


def render(parts: list[tuple[bool, str]], colour: bool) -> str:
    """One sample with its trained spans in green (a terminal) or between ⟦ ⟧."""
    if colour:
        return "".join(f"\033[32m{text}\033[0m" if trained else text for trained, text in parts)
    return "".join(f"{OPEN}{text}{CLOSE}" if trained else text for trained, text in parts)


def preview(job: JobConfig, out: Path) -> None:
    """Write ``out`` (one JSON object per sample: text, input_ids, labels) and print the samples."""
    from belle.data.dataset import builder
    from belle.model.load import load_tokenizer
    from belle.rundir import write_atomic

    tokenizer = load_tokenizer(job.model)
    if job.data.format == "prompt":
        samples, references = _prompts(job, tokenizer)
    else:
        samples, _ = builder(job.data.format)(job.data.path, tokenizer, job.data.max_length, limit=job.launcher.preview)
        samples, references = samples[: job.launcher.preview], None
    if job.data.pairs:  # each pair as its chosen, then its rejected sequence
        samples = [sample for pair in samples for sample in pair]
    rows = [{"text": tokenizer.decode(s.input_ids), "input_ids": s.input_ids, "labels": s.labels} for s in samples]
    if references:
        rows = [row | {"reference": reference} for row, reference in zip(rows, references, strict=True)]
    write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    colour = sys.stdout.isatty()
    legend = "green" if colour else f"{OPEN}…{CLOSE}"
    what = ("PPO prompts: none of their tokens is trained, only the responses generated after them"
            if job.data.format == "prompt" else f"trained tokens in {legend}; the rest is masked")
    print(f"\npreview: {len(rows)} sample(s) → {out}   ({what})")
    for i, s in enumerate(samples):
        print(f"\n--- sample {i}: {len(s.input_ids)} tokens, {s.n_trained} trained ---")
        print(render(spans(tokenizer, s.input_ids, s.labels), colour))
        if references and references[i] is not None:
            print(f"(reference answer, compared by the rule, not shown to the model: {references[i]})")


def _prompts(job: JobConfig, tokenizer) -> tuple[list, list[str | None] | None]:
    """The first launcher.preview PPO prompts as untrained samples (prompt tokens only, cut as PPO cuts them), and
    their reference answers when a rule reward reads them (else None)."""
    from belle.data.template import IGNORE_INDEX, Sample
    from belle.recipes.ppo import prompt_source
    from belle.score.rules import REFERENCE_NEEDS

    prompts = prompt_source(job, tokenizer)[: job.launcher.preview]
    samples = [Sample(p.ids, [IGNORE_INDEX] * len(p.ids)) for p in prompts]
    compared = job.method.ppo.reward.rule in REFERENCE_NEEDS
    return samples, [p.reference for p in prompts] if compared else None
