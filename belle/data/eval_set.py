"""BELLE's evaluation set (eval/eval_set.json) and its judge prompts (eval/eval_prompt.json), read as they are.

An eval item is a ``{"question", "std_answer", "class"}`` record (optionally with an ``"id"``); a judge prompt is a
``{"class", "prompt"}`` record. Both files are JSON lines in BELLE (under .json names); a JSON array or Parquet
works too. BELLE's two files write the same class differently ("open qa" / "open QA", "closed\\u00a0qa" with a
NO-BREAK SPACE / "closed\\u00a0QA"), so classes are matched by ``class_key``: U+00A0 → space, case-folded,
stripped, inner runs of spaces collapsed. Each item also carries its paper category (``CATEGORIES``, Table 1 of
arXiv 2304.08109): translation counts as rewrite, math and code as others; a class outside BELLE's is its own
category.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from belle.data.records import DataError, iter_records

OTHERS = "others"
CATEGORIES = ("open qa", "brainstorming", "classification", "generation", "summarization", "rewrite", "closed qa",
              "extract", OTHERS)
"""The paper's 9 categories, in its order."""
FOLDED = {"translation": "rewrite", "math": OTHERS, "code": OTHERS}
"""BELLE classes counted in another paper category (class key → category)."""
ITEM_KEYS = ("question", "std_answer", "class", "id")
"""The keys an eval item may have (any other is refused, so a misspelt std_answer is not read as no reference)."""
PROMPT_KEYS = ("class", "prompt")
"""The keys of a judge prompt record."""
_SPACES = re.compile(" {2,}")


def class_key(name: str) -> str:
    """The class name as matched: U+00A0 → " ", case-folded, stripped, inner runs of spaces made one."""
    return _SPACES.sub(" ", name.replace("\u00a0", " ").casefold().strip())


def category(key: str) -> str:
    """The paper category of class key ``key``: translation → rewrite, math and code → others, else ``key``."""
    return FOLDED.get(key, key)


@dataclass(frozen=True)
class EvalItem:
    """One eval item. ``id`` is the record's "id" (a string or an integer, as a string) or, without one, the first
    12 hex digits of sha256 over the JSON of [class key, question] — stable across files and versions that keep
    the question and the class (so HEAD's translations relabelled rewrite get new ids). ``reference`` is
    std_answer, None when it is missing or blank; ``cls`` the class as written, ``key`` its ``class_key``,
    ``category`` its paper category; ``where`` the record's file:line."""

    id: str
    question: str
    reference: str | None
    cls: str
    key: str
    category: str
    where: str


def item_id(question: str, key: str) -> str:
    """The id of an item that has none: a short hash of its class key and question."""
    text = json.dumps([key, question], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _text(record: dict, field: str, where: str, fix: str, required: bool = True) -> str | None:
    value = record.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        what = "is missing" if value is None else f"is not a string (got {type(value).__name__})"
        raise DataError(f"{where}: {field!r} {what}: {fix}")
    if required and not value.strip():
        raise DataError(f"{where}: {field!r} is empty: {fix}")
    return value


def _unknown_keys(record: dict, allowed: tuple[str, ...], where: str, fix: str) -> None:
    unknown = [k for k in record if k not in allowed]
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}: {fix}")


def read_eval_set(path: str | Path) -> list[EvalItem]:
    """Every item of the eval set at ``path``, in file order. Raises DataError naming file:line for a record that
    is no eval item, a repeated id (naming both places) or a file without items."""
    fix = 'an eval item is {"question": str, "std_answer": str, "class": str} (plus an optional "id")'
    items, seen = [], {}
    for record, where in iter_records(str(path)):
        _unknown_keys(record, ITEM_KEYS, where, fix)
        question = _text(record, "question", where, fix)
        cls = _text(record, "class", where, fix)
        reference = _text(record, "std_answer", where, fix, required=False)
        key = class_key(cls)
        given = record.get("id")
        if given is None:
            id_ = item_id(question, key)
        elif isinstance(given, (str, int)) and not isinstance(given, bool) and str(given).strip():
            id_ = str(given)
        else:
            raise DataError(f"{where}: 'id' {given!r} is no id: give a non-empty string or an integer, or leave it out")
        if id_ in seen:
            what = "this question and class" if given is None else f"id {id_!r}"
            raise DataError(f"{where}: {what} is also at {seen[id_]}: remove the duplicate or give each its own id")
        seen[id_] = where
        reference = reference if reference and reference.strip() else None
        items.append(EvalItem(id_, question, reference, cls, key, category(key), where))
    if not items:
        raise DataError(f"{path}: holds no eval item: point it at BELLE's eval_set.json or a file of "
                        '{"question","std_answer","class"} records')
    return items


def read_judge_prompts(path: str | Path) -> dict[str, str]:
    """Class key → judge prompt, from the ``{"class", "prompt"}`` records at ``path``. Raises DataError naming
    file:line for a record that is no prompt, a class given twice (both places named) or a file without prompts."""
    fix = 'a judge prompt is {"class": str, "prompt": str}'
    prompts, seen = {}, {}
    for record, where in iter_records(str(path)):
        _unknown_keys(record, PROMPT_KEYS, where, fix)
        key = class_key(_text(record, "class", where, fix))
        prompt = _text(record, "prompt", where, fix)
        if key in prompts:
            raise DataError(f"{where}: class {record['class']!r} has a prompt already at {seen[key]}: keep one")
        prompts[key], seen[key] = prompt, where
    if not prompts:
        raise DataError(f'{path}: holds no judge prompt: point it at BELLE\'s eval_prompt.json or a file of '
                        '{"class","prompt"} records')
    return prompts


def check_prompts(items: Iterable[EvalItem], prompts: Mapping[str, str], *, source: str = "the judge prompts") -> None:
    """Raise DataError naming every class of ``items`` that has no prompt in ``prompts`` (from ``source``, the
    prompt file's name), with its item count."""
    items = list(items)
    counts = Counter(item.key for item in items)
    written = {}
    for item in items:
        written.setdefault(item.key, item.cls)
    missing = [f"class {written[key]!r} ({n} item{'s' if n != 1 else ''})" for key, n in counts.items()
               if key not in prompts]
    if missing:
        one = len(missing) == 1
        raise DataError(f"{', '.join(missing)} {'has' if one else 'have'} no judge prompt in {source}: add a "
                        f'{{"class","prompt"}} line for {"it" if one else "each"}')


def read_eval(set_path: str | Path, prompt_path: str | Path) -> tuple[list[EvalItem], dict[str, str]]:
    """The eval set and its judge prompts, checked so that every class has a prompt (``check_prompts``)."""
    items, prompts = read_eval_set(set_path), read_judge_prompts(prompt_path)
    check_prompts(items, prompts, source=str(prompt_path))
    return items, prompts
