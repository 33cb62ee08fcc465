"""The BELLE template: exact ids and labels, separate-segment tokenisation, truncation, batched == reference."""

import pytest

from belle.data.conversation import to_turns
from belle.data.records import DataError, iter_records
from belle.data.template import IGNORE_INDEX, Sample, encode, encode_many, pad_id

EOS = 2
MERGED = "\n好"  # the char tokenizer's one merge
TURNS = [("human", "你好"), ("assistant", "好的"), ("human", "早上好"), ("assistant", "午安")]


def chars(vocab, text):
    return [vocab[c] for c in text]


def test_two_turn_conversation_exact_ids_and_labels(char_tokenizer, char_vocab):
    prompt1 = chars(char_vocab, "Human: \n你好\n\nAssistant: \n")
    answer1 = chars(char_vocab, "好的") + [EOS]
    prompt2 = chars(char_vocab, "Human: \n早上好\n\nAssistant: \n")
    answer2 = chars(char_vocab, "午安") + [EOS]

    sample = encode(TURNS, char_tokenizer, max_length=100)

    assert sample.input_ids == prompt1 + answer1 + prompt2 + answer2
    assert sample.labels == [IGNORE_INDEX] * len(prompt1) + answer1 + [IGNORE_INDEX] * len(prompt2) + answer2
    assert sample.n_trained == 6 and not sample.truncated
    assert char_tokenizer.decode(
        [i for i, lab in zip(sample.input_ids, sample.labels, strict=True) if lab != -100]
    ) == ("好的</s>午安</s>")


def test_prompt_end_and_answer_start_are_never_merged(char_tokenizer, char_vocab):
    joint = char_tokenizer.encode("Human: \n你好\n\nAssistant: \n好的", add_special_tokens=False)
    assert char_vocab[MERGED] in joint  # tokenised together, "\n" + "好" fuse across the prompt/answer border
    sample = encode(TURNS, char_tokenizer, max_length=100)
    assert char_vocab[MERGED] not in sample.input_ids
    first_answer = sample.labels.index(char_vocab["好"])
    assert sample.input_ids[first_answer - 1] == char_vocab["\n"]  # the prompt keeps its own last token


@pytest.mark.parametrize(("max_length", "trained"), [(30, 3), (25, 1), (24, 0)])
def test_right_truncation_keeps_the_head(char_tokenizer, max_length, trained):
    full = encode(TURNS, char_tokenizer, max_length=100)
    sample = encode(TURNS, char_tokenizer, max_length)  # prompt 1 is 24 tokens, answer 1 + EOS 3
    assert sample == Sample(full.input_ids[:max_length], full.labels[:max_length], truncated=True)
    assert sample.n_trained == trained


def test_encode_many_equals_encode_on_the_bundled_data(tokenizer, sft_spec):
    conversations = [to_turns(record, where) for record, where in iter_records(sft_spec)]
    for max_length in (1024, 48):
        batched = encode_many(conversations, tokenizer, max_length)
        assert batched == [encode(turns, tokenizer, max_length) for turns in conversations]
    assert sum(s.truncated for s in batched) > 100  # the short limit really cut samples


def test_every_answer_of_a_bundled_multiturn_record_is_trained(tokenizer, sft_spec):
    record = next(r for r, _ in iter_records(sft_spec) if r.get("instruction", "").startswith("Human:"))
    turns = to_turns(record, "x")
    sample = encode(turns, tokenizer, 1024)
    trained = [i for i, lab in zip(sample.input_ids, sample.labels, strict=True) if lab != IGNORE_INDEX]
    answers = [text for role, text in turns if role == "assistant"]
    assert len(answers) >= 2
    assert tokenizer.decode(trained) == "".join(a + tokenizer.eos_token for a in answers)


def test_a_tokenizer_without_eos_is_refused(char_tokenizer):
    from copy import deepcopy

    no_eos = deepcopy(char_tokenizer)
    no_eos.eos_token = None
    with pytest.raises(DataError, match="has no eos_token"):
        encode_many([TURNS], no_eos, 100)


def test_a_tokenizer_without_a_rust_backend_gives_the_same_samples(char_tokenizer):
    class PythonOnly:  # the interface of a slow (Python) tokenizer: no backend_tokenizer
        eos_token_id = char_tokenizer.eos_token_id

        def __call__(self, texts, add_special_tokens):
            return {"input_ids": [self.encode(t, add_special_tokens) for t in texts]}

        def encode(self, text, add_special_tokens):
            return char_tokenizer.encode(text, add_special_tokens=add_special_tokens)

    assert encode_many([TURNS, TURNS[:2]], PythonOnly(), 100) == [
        encode(TURNS, char_tokenizer, 100),
        encode(TURNS[:2], char_tokenizer, 100),
    ]


def test_the_pad_id_is_never_the_eos(tokenizer):
    class NoPad:
        eos_token_id, pad_token_id, unk_token_id = 2, None, 0

    class PadIsEos:
        eos_token_id, pad_token_id, unk_token_id = 0, 0, None

    assert pad_id(tokenizer) == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert (pad_id(NoPad()), pad_id(PadIsEos())) == (0, 1)
