"""Rule scorers of decoded response text, picked by name (PPO's ``method.ppo.reward.rule``).

Every rule is ``rule(response, reference) -> float``; ``reference`` is the prompt record's own answer, when it has
one (instruction and conversation records), else None.
"""

import re
from collections.abc import Callable
from fractions import Fraction

ANSWER_MARKER = "答案"
# an optional minus (ASCII, U+2212 or full-width), an integer with or without thousands commas, then an optional
# decimal part or a denominator: 68, -5, 1,200, 0.75, 3/4
_NUMBER = re.compile(r"[-−－]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+|/\d+)?")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _value(number: str) -> Fraction | None:
    """The exact value of a ``_NUMBER`` match (0.75 equals 3/4); None for a zero denominator."""
    try:
        return Fraction(number.replace(",", "").replace("−", "-").replace("－", "-"))
    except ZeroDivisionError:
        return None


def _answer(text: str) -> Fraction | None:
    """The last number after the last 答案 in ``text`` (``答案：68（米）`` → 68); None without one."""
    _, marker, tail = text.rpartition(ANSWER_MARKER)
    numbers = _NUMBER.findall(tail) if marker else []
    return _value(numbers[-1]) if numbers else None


def _expected(reference: str) -> Fraction | None:
    """A reference's final answer: the last number after its last 答案, else the whole reference as a bare number."""
    expected = _answer(reference)
    if expected is None and _NUMBER.fullmatch(reference.strip()):
        expected = _value(reference.strip())
    return expected


def math_answer(response: str, reference: str | None = None) -> float:
    """1.0 when the response's final answer (the last number after its last ``答案``, as BELLE school-math answers
    end with ``答案：N``) equals the reference's, else 0.0. The reference is such an answer text or a bare number."""
    problem = unscorable("math_answer", reference)
    if problem:
        raise ValueError(f"math_answer cannot score this prompt: {problem}: fix the record or use another rule")
    return float(_answer(response) == _expected(reference))


def chinese_ratio(response: str, reference: str | None = None) -> float:
    """Share of CJK ideographs among the response's non-space characters, in [0, 1]; 0 for an empty response."""
    characters = "".join(response.split())
    return len(_CJK.findall(characters)) / len(characters) if characters else 0.0


def length_target(response: str, reference: str | None = None, target: int = 64) -> float:
    """1 − |len − target| / target for the response length in characters, clipped at 0."""
    if target <= 0:
        raise ValueError(f"length_target needs a positive target, got {target}")
    return max(0.0, 1 - abs(len(response) - target) / target)


def _final(text: str) -> Fraction | None:
    """A text's final answer: the first number after its last 答案 when one follows it (``答案：15，验算2次`` → 15),
    else its last number; None without a number."""
    _, marker, tail = text.rpartition(ANSWER_MARKER)
    after = _NUMBER.search(tail) if marker else None
    numbers = [after.group()] if after else _NUMBER.findall(text)
    return _value(numbers[-1]) if numbers else None


def math_final(response: str, reference: str | None = None) -> float:
    """1.0 when the response's final answer equals the reference's exactly (0.75 equals 3/4; thousands commas and
    units such as 米 or 元 do not count), else 0.0. A text's final answer is the first number after its last
    ``答案`` when one follows it, else its last number, so chain-of-thought references without BELLE's
    ``答案：N`` (most of the eval set's math items) are scorable."""
    problem = unscorable("math_final", reference)
    if problem:
        raise ValueError(f"math_final cannot score this prompt: {problem}: fix the record or use another rule")
    return float(_final(response) == _final(reference))


def _label(text: str) -> str:
    """A short answer as compared: stripped, trailing 。.！! removed, case-folded."""
    return text.strip().rstrip("。.！!").strip().casefold()


def exact_match(response: str, reference: str | None = None) -> float:
    """1.0 when the response equals the reference as a label (both stripped, trailing 。.！! removed, case-folded),
    else 0.0: for eval sets whose references are short labels."""
    problem = unscorable("exact_match", reference)
    if problem:
        raise ValueError(f"exact_match cannot score this prompt: {problem}: fix the record or use another rule")
    return float(_label(response) == _label(reference))


RULES: dict[str, Callable[..., float]] = {
    "math_answer": math_answer,
    "chinese_ratio": chinese_ratio,
    "length_target": length_target,
    "math_final": math_final,
    "exact_match": exact_match,
}


REFERENCE_NEEDS = {
    "math_answer": "prompt records whose answer ends with BELLE's 答案：N (instruction or conversation records, e.g. "
                   "data=sample_math_prompts)",
    "math_final": "records whose answer holds a number, the last one (or the first after a final 答案) being the "
                  "answer (instruction or conversation records, or the math items of BELLE's eval set)",
    "exact_match": "records whose answer is a short label, such as a class name (BELLE's classification answers "
                   "are prose)",
}
"""What each rule that compares a response with the prompt's reference answer needs of the data (the other rules
read the response alone)."""


def unscorable(name: str, reference: str | None) -> str | None:
    """Why rule ``name`` cannot score the responses to a prompt with this reference answer; None when it can."""
    if name not in REFERENCE_NEEDS:
        return None
    if reference is None:
        return 'it has no reference answer ({"text"} prompts carry none)'
    if name == "math_answer" and _expected(reference) is None:
        return f"its reference answer {reference[-40:]!r} has no final 答案：N"
    if name == "math_final" and _final(reference) is None:
        return f"its reference answer {reference[-40:]!r} has no number"
    if name == "exact_match" and not _label(reference):
        return "its reference answer is empty"
    return None


def rule(name: str) -> Callable[..., float]:
    """The rule called ``name``."""
    if name not in RULES:
        raise ValueError(f"unknown reward rule {name!r}: choose one of {', '.join(RULES)}")
    return RULES[name]
