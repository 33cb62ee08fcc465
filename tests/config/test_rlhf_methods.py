"""The reward-model and DPO settings: each bad one fails when the job is composed, in one line naming the fix."""

import pytest
from hydra.errors import HydraException

from launcher.errors import explain


def _error(job, *overrides) -> str:
    with pytest.raises((ValueError, HydraException)) as info:
        job(*overrides)
    message = explain(info.value)
    assert "\n" not in message
    return message


def test_rm_and_dpo_compose_with_their_bundled_pairs(job):
    rm = job("method=rm", "data=sample_preference")
    assert (rm.method.rm.margin, rm.method.rm.center_coef, rm.method.dpo) == (0.0, 0.0, None)
    dpo = job("method=dpo", "data=sample_dpo")
    assert (dpo.method.dpo.beta, dpo.method.dpo.max_prompt_length, dpo.method.rm) == (0.1, 128, None)


def test_the_dpo_reference_auto_follows_lora(job):
    assert job("method=dpo", "data=sample_dpo").method.dpo_reference == "precomputed"
    assert job("method=dpo_lora", "data=sample_dpo").method.dpo_reference == "adapters_off"


@pytest.mark.parametrize("overrides,fix", [
    (["method.dpo.beta=0"], "set method.dpo.beta=0.1"),
    (["method.dpo.beta=-1"], "set method.dpo.beta=0.1"),
    (["method.dpo.label_smoothing=0.5"], "set method.dpo.label_smoothing=0"),
    (["method.dpo.label_smoothing=-0.1"], "set method.dpo.label_smoothing=0"),
    (["method.dpo.loss=ipo", "method.dpo.label_smoothing=0.1"], "set method.dpo.label_smoothing=0 or method.dpo.loss"),
    (["method.dpo.loss=hinge"], "set method.dpo.loss=<one of them>"),
    (["method.dpo.reference=adapters_off"], "set method.dpo.reference=precomputed or method=dpo_lora"),
    (["method.dpo.reference=engine"], "set method.dpo.reference=auto"),
    (["method.dpo.max_prompt_length=256"], "set method.dpo.max_prompt_length=64"),
])
def test_bad_dpo_settings(job, overrides, fix):
    assert fix in _error(job, "method=dpo", "data=sample_dpo", "data.max_length=256", *overrides)


def test_a_negative_center_coefficient(job):
    message = _error(job, "method=rm", "data=sample_preference", "method.rm.center_coef=-1")
    assert "set method.rm.center_coef=0" in message


def test_only_the_block_of_the_method_may_be_set(job):
    assert _error(job, "method=rm", "data=sample_preference", "method.name=sft", "data=sample") == (
        "method.rm is set but method.name=sft: set method=rm (or method.rm=null)"
    )
    assert _error(job, "method.name=dpo", "data=sample_dpo") == (
        "method.name=dpo needs its method.dpo block: set method=dpo"
    )


@pytest.mark.parametrize("method,data", [("rm", "sample_preference"), ("dpo", "sample_dpo")])
def test_packing_pairs_is_refused(job, method, data):
    assert _error(job, f"method={method}", f"data={data}", "data.pack=true") == (
        f"method.name={method} trains on one (chosen, rejected) pair per row, never packed: set data.pack=false"
    )


def test_a_method_on_data_of_another_format_names_the_bundled_pairs(job):
    assert _error(job, "method=rm", "data=sample") == (
        "method.name=rm reads data.format=preference records, but data=sample is data.format=sft: "
        "set data=sample_preference (or other preference data), or method.name=sft"
    )
    assert "set data=sample_dpo" in _error(job, "method=dpo", "data=sample_preference")
