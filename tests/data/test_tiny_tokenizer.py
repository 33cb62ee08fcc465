"""The tiny byte-level BPE tokenizer: special ids, no automatic BOS/EOS, deterministic, cached atomically."""

import pytest

from belle.model import tokenizer as tokenizer_module
from belle.model.tokenizer import tiny_tokenizer, train_tokenizer


def test_special_tokens_and_no_automatic_bos_or_eos(tokenizer):
    assert len(tokenizer) == 4096
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        0,
        1,
        2,
        3,
    )
    ids = tokenizer("你好，world")["input_ids"]
    assert ids == tokenizer.encode("你好，world", add_special_tokens=False)
    assert not {0, 1, 2, 3} & set(ids)
    assert tokenizer.decode(ids) == "你好，world"


def test_bytes_outside_the_training_text_round_trip_without_unk(tokenizer):
    text = "Ünïcödé ☃ 𝔘 日本語のテキスト"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == text


def test_training_is_deterministic():
    texts = ["今天天气很好。", "The quick brown fox jumps over the lazy dog.", "机器学习很有趣。"] * 50
    first, second = train_tokenizer(texts, 400), train_tokenizer(texts, 400)
    assert first.get_vocab() == second.get_vocab()
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_cache_is_reused_and_leaves_no_temp_folder(tmp_path, monkeypatch, tokenizer):
    first = tiny_tokenizer(str(tmp_path))
    (folder,) = tmp_path.iterdir()  # one complete folder, no ".tokenizer-*" staging left behind
    assert folder.name.startswith("tokenizer-") and (folder / "tokenizer.json").exists()
    assert first.get_vocab() == tokenizer.get_vocab()  # same samples, same vocab as another cache dir

    def no_training(*_):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(tokenizer_module, "train_tokenizer", no_training)
    monkeypatch.setenv("BELLE_CACHE", str(tmp_path))
    assert tiny_tokenizer().get_vocab() == first.get_vocab()


def test_a_killed_run_leaves_no_cache_behind(tmp_path, monkeypatch):
    def killed(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer_module, "train_tokenizer", killed)
    with pytest.raises(KeyboardInterrupt):
        tiny_tokenizer(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
