"""Fixtures for the data tests: the tiny tokenizer (cached in a tmp dir) and a hand-made character tokenizer."""

import pytest

from belle.data.records import SAMPLES_DIR

SFT_FILES = [SAMPLES_DIR / name for name in ("instruction.jsonl", "conversations.jsonl", "math.jsonl")]
SFT_SPEC = ",".join(map(str, SFT_FILES))
CHARS = "Human: \nAssistant你好的谢再见早上午安abc"
MERGED = "\n好"  # the one merge: a prompt ending "\n" and an answer starting "好" fuse when tokenised together


@pytest.fixture(scope="session")
def sft_spec() -> str:
    """The bundled instruction, conversation and math files as one comma-separated data.path."""
    return SFT_SPEC


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from belle.model.tokenizer import tiny_tokenizer

    return tiny_tokenizer(str(tmp_path_factory.mktemp("belle-cache")))


@pytest.fixture(scope="session")
def char_vocab() -> dict[str, int]:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    for char in dict.fromkeys(CHARS):
        vocab[char] = len(vocab)
    vocab[MERGED] = len(vocab)
    return vocab


@pytest.fixture(scope="session")
def char_tokenizer(char_vocab):
    """One token per character plus the merge "\\n"+"好", with no pre-tokenizer (like SentencePiece, whose
    merges cross the prompt/answer border)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab=char_vocab, merges=[("\n", "好")], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
