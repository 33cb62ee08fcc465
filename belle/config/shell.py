"""Shell lines the config writes into the sbatch script (cluster.setup, srun_args, sbatch_extra): what in them would
write a credential as literal text."""

import re
import shlex

from belle.config._checks import NAMES_A_PLACE, SECRET

_ASSIGNED = re.compile(r"(?:^|[,=])([A-Za-z_][A-Za-z0-9_]*)=([^,]*)")
"""NAME=value in a shell word, also inside a comma list (sbatch --export=ALL,HF_TOKEN=…)."""
_TOKEN_SHAPES = (
    (re.compile(r"(?i)\bauthorization:\s*(bearer|token|basic)\s+[^\s$`]"), "an Authorization header"),
    (re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@$`][^/\s@]*@"), "a password in a URL"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "a Hugging Face token (hf_…)"),
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"), "a GitHub token"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), "a GitLab token"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), "an API key (sk-…)"),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), "a Slack token"),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "an AWS access key"),
)
"""Literal text shaped like a credential, whatever name or option carries it (`curl -H "Authorization: Bearer …"`,
`git clone https://user:…@host`, `echo hf_… > file`, `bash -c "…"`)."""


def _words(line: str) -> list[str]:
    """The shell words of ``line``, its operators (``;``, ``&&``, ``|``, parentheses) as words of their own and its
    comments kept (they are written too); ValueError for unbalanced quotes."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.commenters = ""
    lexer.whitespace_split = True
    return list(lexer)


def _literal(value: str) -> bool:
    """Whether ``value`` is literal text: not empty, not an operator, not a reference ($VAR, "$VAR", $(…), `…`)."""
    return bool(value) and not value.startswith(("$", "`")) and not set(value) <= set("();<>|&")


def literal_credentials(line: str) -> list[str]:
    """What the shell ``line`` sets or passes to literal credential text, in order: secret-looking names assigned
    anywhere in it (after ``;``/``&&``/``|``, ``export``/``env``/``declare``, several at once, in comma lists),
    secret-looking options with a value (``--token X``, ``--token=X``, ``--password=…``, ``--api-key``) and the
    argument of ``login`` (``wandb login KEY``; a host name, with a dot, colon or slash, is no credential), then text
    shaped like a credential wherever it stands (a known token prefix, an Authorization header, a URL's password).
    Values that refer to one ($VAR, "$VAR", $(cat file)) are fine. ValueError when ``line`` is not valid shell."""
    words, found, logins = _words(line), [], []
    for i, word in enumerate(words):
        after = [w for w in words[i + 1:] if not w.startswith("-")]
        following = words[i + 1] if i + 1 < len(words) else ""
        found += [name for name, value in _ASSIGNED.findall(word) if SECRET.search(name) and _literal(value)]
        if word.startswith("-"):
            option, has_value, value = word.partition("=")
            key = option.lstrip("-").replace("-", "_")
            if SECRET.search(key) and not NAMES_A_PLACE.search(key) and _literal(value if has_value else following):
                found.append(option)
        if word == "login" and after and _literal(after[0]) and not re.search(r"[.:/]", after[0]):
            logins.append("the argument of `login`")
    shaped = [what for pattern, what in _TOKEN_SHAPES if any(pattern.search(word) for word in words)]
    return list(dict.fromkeys(found + logins + shaped))
