"""``launcher.preview=N``: the first N samples exactly as the model sees them, trained spans marked; which samples
(a pair's chosen and rejected sequences, a prompt's tokens) is the recipe's (its face's ``preview``)."""

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
    """Write ``out`` (one JSON object per sample: text, input_ids, labels, and a reference answer where the recipe
    has one) and print the samples."""
    from belle.model.load import load_tokenizer
    from belle.recipes import recipe
    from belle.rundir import write_atomic

    tokenizer = load_tokenizer(job.model)
    samples, references, what = recipe(job.method.name).preview(job, tokenizer)
    rows = [{"text": tokenizer.decode(s.input_ids), "input_ids": s.input_ids, "labels": s.labels} for s in samples]
    if references:
        rows = [row | {"reference": reference} for row, reference in zip(rows, references, strict=True)]
    write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    colour = sys.stdout.isatty()
    legend = "green" if colour else f"{OPEN}…{CLOSE}"
    print(f"\npreview: {len(rows)} sample(s) → {out}   ({what or f'trained tokens in {legend}; the rest is masked'})")
    for i, s in enumerate(samples):
        print(f"\n--- sample {i}: {len(s.input_ids)} tokens, {s.n_trained} trained ---")
        print(render(spans(tokenizer, s.input_ids, s.labels), colour))
        if references and references[i] is not None:
            print(f"(reference answer, compared by the rule, not shown to the model: {references[i]})")
