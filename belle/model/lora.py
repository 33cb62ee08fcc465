"""LoRA adapters through PEFT."""

from belle.config import LoraConfig


def apply_lora(model, lora: LoraConfig):
    """Wrap ``model`` with LoRA adapters; only the adapters (and modules_to_save) stay trainable."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None,
    )
    return get_peft_model(model, peft_config)
