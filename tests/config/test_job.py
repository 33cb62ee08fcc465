"""Checks that span config sections run when the job is composed, each failing in one line that names the fix."""

import pytest
from hydra.errors import HydraException

from launcher.errors import explain


def _error(job, *overrides) -> str:
    with pytest.raises((ValueError, HydraException)) as info:
        job(*overrides)
    message = explain(info.value)
    assert "\n" not in message
    return message


def test_pretrain_method_on_instruction_data_is_refused(job):
    assert _error(job, "method=pretrain", "data=belle_2m") == (
        "method.name=pretrain reads data.format=pretrain records, but data=belle_2m is data.format=sft: "
        "set data=sample_pretrain (or other pretrain data), or method.name=sft"
    )


def test_sft_method_on_text_data_is_refused(job):
    message = _error(job, "method=sft", "data=sample_pretrain")
    assert message.startswith("method.name=sft reads data.format=sft records") and "set data=sample" in message


def test_a_wrong_data_format_names_the_method_too(job):
    assert "data=sample is data.format=pretrain" in _error(job, "data=sample", "data.format=pretrain")


def test_lora_with_pretraining_is_allowed(job):
    composed = job("method=lora", "method.name=pretrain", "data=sample_pretrain")
    assert composed.method.lora is not None and composed.data.format == "pretrain"


def test_max_length_beyond_the_model_positions(job):
    assert "set data.max_length=" in _error(job, "data.max_length=100000")
