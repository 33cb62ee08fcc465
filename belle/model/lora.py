"""LoRA adapters through PEFT."""

from belle.config import LoraConfig


def apply_lora(model, lora: LoraConfig, task: str = "causal_lm"):
    """Wrap ``model`` with LoRA adapters; only the adapters (and modules_to_save, and a score model's head) stay
    trainable."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_config = PeftLoraConfig(
        task_type=TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None,
    )
    # adapters in the base weights' dtype: PEFT would upcast them to fp32 beside bf16 modules_to_save copies, and
    # ZeRO-3 partitions one dtype (DeepSpeed keeps fp32 master weights for every trained parameter anyway)
    return get_peft_model(model, peft_config, autocast_adapter_dtype=False)
