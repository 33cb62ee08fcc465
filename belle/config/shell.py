"""Shell lines the config writes into the sbatch script (cluster.setup, srun_args, sbatch_extra): what in them would
write a credential as literal text."""

import re
import shlex

from belle.config._checks import SECRET

_ASSIGNED = re.compile(r"(?:^|[,=])([A-Za-z_][A-Za-z0-9_]*)=([^,]*)")
"""NAME=value in a shell word, also inside a comma list (sbatch --export=ALL,HF_TOKEN=…)."""
_NOT_A_CREDENTIAL = re.compile(r"_(file|path|stdin|env|dir)$", re.IGNORECASE)
"""Options that name where a credential is (--password-file, --password-stdin), not the credential."""


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
    argument of ``login`` (``wandb login KEY``; a host name, with a dot, colon or slash, is no credential). Values
    that refer to one ($VAR, "$VAR", $(cat file)) are fine. ValueError when ``line`` is not valid shell."""
    words, found, logins = _words(line), [], []
    for i, word in enumerate(words):
        after = [w for w in words[i + 1:] if not w.startswith("-")]
        following = words[i + 1] if i + 1 < len(words) else ""
        found += [name for name, value in _ASSIGNED.findall(word) if SECRET.search(name) and _literal(value)]
        if word.startswith("-"):
            option, has_value, value = word.partition("=")
            key = option.lstrip("-").replace("-", "_")
            if SECRET.search(key) and not _NOT_A_CREDENTIAL.search(key) and _literal(value if has_value else following):
                found.append(option)
        if word == "login" and after and _literal(after[0]) and not re.search(r"[.:/]", after[0]):
            logins.append("the argument of `login`")
    return list(dict.fromkeys(found + logins))
