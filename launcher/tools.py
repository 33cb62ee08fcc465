"""``python -m launcher.tools merge_lora RUN_DIR_OR_ADAPTER --out DIR`` and ``python -m launcher.tools export RUN_DIR
[--step N] --out DIR``: Hugging Face folders that plain transformers loads, from any run's adapter or checkpoint.

merge_lora: the adapter (a run dir's export/adapter, its export, or an adapter folder) merged into the base its
config names. export: a checkpoint (the latest intact one, or step N) read back from its ZeRO shards (ZeRO-2 or 3,
full or LoRA; a PPO run's actor; a reward model with its adapters merged: belle.train.checkpoint_export) and
written as the end of training writes its export. Both write whole (a staged folder, checked, then moved) and
fail in one line for a folder that is not what they need."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from belle import checkpoint, rundir


def merge_lora(path: str, out: str) -> Path:
    """The adapter at ``path`` merged into its base → the folder written."""
    from transformers import AutoTokenizer

    from belle.model.export import merge_adapter
    from belle.model.load import TOKENIZER_FILES
    from belle.model.source import model_source

    source = model_source(path)
    if source.adapter is None:
        full = source.folder and (Path(source.folder) / "config.json").is_file()
        raise ValueError(f"{path} holds {'a full model, which needs no merge' if full else 'no LoRA adapter'}: point "
                         "at a LoRA run's dir, its export/ or an adapter folder (adapter_config.json)")
    holder = next((f for f in (source.adapter, source.folder)
                   if any((Path(f) / name).is_file() for name in TOKENIZER_FILES)), None)
    if holder is None:
        raise ValueError(f"neither the adapter {source.adapter} nor its base {source.folder} holds a tokenizer: copy "
                         "the model's tokenizer files into the adapter folder")
    return merge_adapter(source.folder, source.adapter, AutoTokenizer.from_pretrained(holder), Path(out))


def _checkpoint(run_dir: Path, step: int | None) -> Path:
    if not (run_dir / rundir.CONFIG).is_file():
        raise ValueError(f"{run_dir} is not a run dir (no {rundir.CONFIG}): point at a run's directory")
    if step is None:
        folder = checkpoint.latest(run_dir)
        if folder is None:
            raise ValueError(f"{run_dir} holds no intact checkpoint: train with train.save_every set, or pass its "
                             "export/ to merge_lora")
        return folder
    folder = run_dir / rundir.CHECKPOINTS / f"step-{step:06d}"
    if not folder.is_dir():
        steps = sorted(p.name for p in (run_dir / rundir.CHECKPOINTS).glob("step-*"))
        raise ValueError(f"{run_dir} has no checkpoint of step {step}: choose one of {', '.join(steps) or 'none'}")
    return folder


def export(run_dir: str, step: int | None, out: str) -> list[Path]:
    """The run's checkpoint (``step``, else the latest intact one) as a Hugging Face folder → the folders written
    (belle.train.checkpoint_export)."""
    from belle.train.checkpoint_export import export_checkpoint
    from launcher.compose import load_job

    folder = Path(run_dir).expanduser()
    found = _checkpoint(folder, step)
    return export_checkpoint(load_job(folder), found, Path(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.tools", description=__doc__.split("\n\n")[0])
    tools = parser.add_subparsers(dest="tool", required=True)
    merging = tools.add_parser("merge_lora", help="an adapter merged into its base")
    merging.add_argument("path", help="a run dir, its export/, or an adapter folder")
    merging.add_argument("--out", required=True)
    exporting = tools.add_parser("export", help="a run's checkpoint as a Hugging Face folder")
    exporting.add_argument("run_dir")
    exporting.add_argument("--step", type=int, help="the checkpoint's step (default: the latest intact one)")
    exporting.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        written = [merge_lora(args.path, args.out)] if args.tool == "merge_lora" else export(args.run_dir, args.step,
                                                                                              args.out)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("written: " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
