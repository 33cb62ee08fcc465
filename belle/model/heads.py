"""Score models: a reward model (and, later, PPO's critic) is the job's model with a one-output linear head,
transformers' ``…ForSequenceClassification`` with num_labels=1, scoring the last token that is not padding (the
answer's EOS in our pair rows). From a causal-LM folder the backbone is loaded and the head starts fresh; from a
reward-model folder both are loaded."""

from belle.config import ModelConfig

CAUSAL_LM, SCORE = "causal_lm", "score"
TASKS = (CAUSAL_LM, SCORE)
"""What a model is built for: next-token prediction, or one score per sequence."""


def score_head_kwargs(model: ModelConfig) -> dict:
    """Config overrides that make ``model`` a score model: one output, and a pad id that is never the EOS
    (belle.data.pairs.score_pad_id of the job's tokenizer)."""
    from belle.data.pairs import score_pad_id
    from belle.model.load import load_tokenizer

    return {"num_labels": 1, "pad_token_id": score_pad_id(load_tokenizer(model))}


def auto_class(task: str):
    """The transformers auto class that builds a model for ``task``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {CAUSAL_LM: AutoModelForCausalLM, SCORE: AutoModelForSequenceClassification}[task]


def folder_task(folder) -> str:
    """The task of a saved model folder, from its config's architecture name."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(folder).architectures or []
    return SCORE if any(name.endswith("ForSequenceClassification") for name in architectures) else CAUSAL_LM


def scores(model, rows, varlen: bool = False):
    """One float32 score per row of ``rows`` (belle.data.packing.PackedRow, pad tails included) from a score
    model (a DeepSpeed engine or a plain module) on its device."""
    from belle.data.packing import collate, to_device

    batch = to_device(collate(rows, varlen), next(model.parameters()).device)
    batch.pop("labels")
    return model(**batch, attention_mask=None, use_cache=False).logits.squeeze(-1).float()
