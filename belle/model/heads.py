"""Score models: a reward model or PPO's critic is the job's model with a one-output linear head,
transformers' ``…ForSequenceClassification`` with num_labels=1, scoring the last token that is not padding (the
answer's EOS in our pair rows). From a causal-LM folder the backbone is loaded and the head starts fresh; from a
reward-model folder both are loaded."""

CAUSAL_LM, SCORE = "causal_lm", "score"
TASKS = (CAUSAL_LM, SCORE)
"""What a model is built for: next-token prediction, or one score per sequence."""


def score_head_kwargs(pad_token_id: int) -> dict:
    """Config overrides that make a model a score model: one output, and ``pad_token_id`` (never the EOS:
    belle.data.template.pad_id of the job's tokenizer)."""
    return {"num_labels": 1, "pad_token_id": pad_token_id}


def auto_class(task: str):
    """The transformers auto class that builds a model for ``task``."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return {CAUSAL_LM: AutoModelForCausalLM, SCORE: AutoModelForSequenceClassification}[task]


def folder_task(folder) -> str:
    """The task of a saved model folder, from its config's architecture name."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(folder).architectures or []
    return SCORE if any(name.endswith("ForSequenceClassification") for name in architectures) else CAUSAL_LM
