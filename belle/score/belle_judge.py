"""The BELLE judge request, template "belle-v1", and the parser of the judge's score.

``judge_message`` builds the one user message BELLE's scoring page (eval/template_html/ChatGPT_Score.html.temp)
sends, byte for byte, spacing quirks included (TAIL = ``。请针对模型回答给出得分，顺便给出理由：``):

    with a reference:     {prompt} {question} 标准回答:{reference}  模型回答：' {answer}'TAIL
    without a reference:  {prompt} {question}  模型回答： '{answer}'TAIL

The page picks the shape by class (generation, brainstorming and rewrite without the reference); belle-v1 picks it
by whether the item has a reference. On BELLE's stored 11-class set the two agree item for item (only those three
classes have an empty std_answer); on HEAD's 10-class set the 39 translations relabelled rewrite keep their
reference here, where the page drops it. ``by_class=True`` reproduces the page exactly.

The judge is asked for ``得分:`` followed by a score in [0, 1]; ``parse_score`` reads it strictly and ``REASK`` is
the one follow-up message for a reply without one.
"""

from __future__ import annotations

import re

from belle.data.eval_set import EvalItem

TEMPLATE_VERSION = "belle-v1"
NO_REFERENCE_CLASSES = frozenset({"generation", "brainstorming", "rewrite"})
"""Class keys BELLE's page judges without the reference."""
REASK = '请按照"得分:"这样的形式输出你对上面模型回答的得分，分数在0到1之间，只输出一个分数。'
"""The follow-up user message sent once when a reply holds no score ``parse_score`` can read."""
TAIL = "。请针对模型回答给出得分，顺便给出理由："
"""How every message ends: the page's request for a score and a reason."""
# 得分, an ASCII or full-width colon, spaces (and Markdown bold's asterisks) around it, then a decimal, read with its
# sign so that a negative score counts as out of range; a fraction (0.8/1) is no score
_SCORE = re.compile(r"得分[ \t\u3000*]*[:：][ \t\u3000*]*([-−]?(?:\d+(?:\.\d+)?|\.\d+))(?![\d/]|\.\d)")


def judge_message(prompt: str, item: EvalItem, answer: str, *, by_class: bool = False) -> str:
    """The user message asking the judge to score ``answer`` to ``item`` with its class's ``prompt``: with the
    reference when the item has one (``by_class``: when its class is not in NO_REFERENCE_CLASSES, as BELLE's page
    does, an empty reference written as "")."""
    with_reference = item.key not in NO_REFERENCE_CLASSES if by_class else item.reference is not None
    if with_reference:
        return f"{prompt} {item.question} 标准回答:{item.reference or ''}  模型回答：' {answer}'{TAIL}"
    return f"{prompt} {item.question}  模型回答： '{answer}'{TAIL}"


def parse_score(reply: str) -> float | None:
    """The score in a judge reply: the number after ``得分:`` or ``得分：`` (spaces allowed around the colon; a
    trailing 分 is fine), when it is in [0, 1]. None when the reply has none, when it is out of range, and when it
    gives different scores (the same score repeated counts once)."""
    scores = {float(number.replace("−", "-")) for number in _SCORE.findall(reply)}
    if len(scores) != 1:
        return None
    (score,) = scores
    return score if 0 <= score <= 1 else None
