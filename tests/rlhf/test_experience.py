"""Response masks, token rewards and running moments, on hand-made batches."""

import pytest
import torch

from belle.rlhf.experience import RunningMoments, response_mask, token_rewards

EOS, PAD = 2, 0


def test_response_mask_cuts_at_the_first_eos():
    responses = torch.tensor([
        [5, 6, EOS, PAD, PAD],  # ended, padded after
        [5, EOS, 7, EOS, 8],  # tokens after the first EOS are dropped, even real ones
        [5, 6, 7, 8, 9],  # cut at the token limit
        [EOS, PAD, PAD, PAD, PAD],  # an empty answer still scores its EOS
        [5, PAD, 6, PAD, PAD],  # no EOS: a sampled pad id inside is kept, trailing pads are not
    ])
    mask, ended = response_mask(responses, EOS, PAD)
    assert mask.dtype == torch.bool
    assert mask.int().tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0],
    ]
    assert ended.tolist() == [True, True, False, True, False]


def test_response_mask_when_pad_is_eos():
    responses = torch.tensor([[5, EOS, EOS, EOS], [5, 6, 7, 8]])
    mask, ended = response_mask(responses, EOS, EOS)
    assert mask.int().tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, False]


def test_score_sits_at_the_eos_and_nothing_after_it():
    responses = torch.tensor([[5, 6, EOS, PAD, PAD], [5, 6, 7, 8, 9]])
    mask, ended = response_mask(responses, EOS, PAD)
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0, 9.0], [0.5, -0.5, 0.0, 0.1, 0.2]])
    score = torch.tensor([1.5, 0.25])
    rewards = token_rewards(score, kl, mask, ended, kl_coef=0.1, clip=5.0, missing_eos_penalty=0.0)
    expected = [[-0.01, -0.02, -0.03 + 1.5, 0.0, 0.0], [-0.05, 0.05, 0.0, -0.01, -0.02 + 0.25]]
    assert rewards.tolist()[0] == pytest.approx(expected[0])
    assert rewards.tolist()[1] == pytest.approx(expected[1])


def test_score_is_clipped_and_the_missing_eos_penalty_applies_only_without_eos():
    responses = torch.tensor([[5, EOS, PAD], [5, 6, 7]])
    mask, ended = response_mask(responses, EOS, PAD)
    score = torch.tensor([9.0, -9.0])
    rewards = token_rewards(score, torch.zeros(2, 3), mask, ended, kl_coef=0.1, clip=5.0, missing_eos_penalty=1.0)
    assert rewards.tolist() == [[0.0, 5.0, 0.0], [0.0, 0.0, -6.0]]


def test_token_rewards_refuse_a_row_without_response_tokens():
    mask, ended = torch.tensor([[True, False], [False, False]]), torch.ones(2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        token_rewards(torch.zeros(2), torch.zeros(2, 2), mask, ended, kl_coef=0.1, clip=5.0, missing_eos_penalty=0.0)


def test_running_moments_merge_equals_the_concatenation():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, generator=g) * 3 + 2 for n in (5, 1, 17, 0, 8)]
    everything = torch.cat(parts).double()
    streamed = RunningMoments()
    for part in parts:
        streamed.update(part)
    merged = RunningMoments()  # as the driver merges each rank's triple
    for triple in map(RunningMoments.moments, parts):
        merged.merge(*triple)
    for moments in (streamed, merged):
        assert moments.count == 31
        assert moments.mean == pytest.approx(everything.mean().item(), rel=1e-12)
        assert moments.var == pytest.approx(everything.var(unbiased=True).item(), rel=1e-12)
    normalized = streamed.normalize(everything)
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert normalized.std().item() == pytest.approx(1.0, rel=1e-6)


def test_running_moments_state_round_trip():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 2.0, 4.0]))
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    for m in (moments, restored):
        m.update(torch.tensor([8.0]))
    assert restored.state_dict() == moments.state_dict()
    assert restored.mean == pytest.approx(3.75) and restored.var == pytest.approx(9.583333333)


def test_running_moments_refuse_a_variance_of_one_value():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        _ = moments.std
