"""How an evaluation scores its answers (the ``eval`` section, read by method=eval): BELLE's judge prompts, an LLM
judge over an OpenAI-compatible endpoint, rule scorers, and the bootstrap of the scores."""

import re
from dataclasses import dataclass, field

from belle.config._checks import one_of, positive, require
from belle.config.generate import GenerateConfig
from belle.config.paths import path_field

SCORERS = ("judge", "rule")
RULES = ("math_final", "math_answer", "exact_match")
"""Rule scorers an evaluation may use (belle.score.rules), each comparing the answer with the item's reference."""
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class JudgeConfig:
    url: str | None = None
    """Base URL of an OpenAI-compatible endpoint (https://…/v1, or a `vllm serve` at http://HOST:8000/v1)."""
    model: str | None = None
    """The judge model's name at that endpoint (BELLE's papers: gpt-3.5-turbo of April 2023)."""
    api_key_env: str = "OPENAI_API_KEY"
    """The environment variable holding the endpoint's key (the key itself is never in the config); unset: no key."""
    concurrency: int = 8
    """Requests in flight at once."""
    timeout_s: float = 120.0
    """Seconds one request may take before it is retried."""
    max_attempts: int = 6
    """Attempts per request (timeouts, connection errors, 408/409/429/5xx are retried with jittered backoff that
    honours Retry-After); after the last, the item is judge_error and the evaluation goes on."""
    max_tokens: int = 1024
    """Tokens the judge may write per reply (BELLE's page: 3000)."""
    cache: str | None = path_field(None)
    """Judgments cache (JSON lines, shared by runs that name it); None: <run_dir>/eval/judge_cache.jsonl."""
    model_path: str | None = path_field(None)
    """A local judge model (a Hugging Face folder) the job runs itself on its workers after answering, greedy, its
    chat template (else BELLE's) around each message, instead of an endpoint; its replies are kept in
    eval/judge/ (a rerun judges only what is missing); not re-asked."""

    def __post_init__(self) -> None:
        require(self.model_path is None or self.url is None,
                "eval.judge.model_path (a local judge run by the job) and eval.judge.url (an endpoint) are two "
                "judges: set one of them")
        require(self.url is None or self.url.startswith(("http://", "https://")),
                f"eval.judge.url={self.url} is not an http(s) URL: set eval.judge.url=http://HOST:PORT/v1")
        require(bool(_ENV_NAME.match(self.api_key_env)),
                f"eval.judge.api_key_env={self.api_key_env!r} is not an environment variable's name (the key itself "
                "never goes into the config): set eval.judge.api_key_env=OPENAI_API_KEY and export the key there")
        positive("eval.judge.concurrency", self.concurrency, 8)
        positive("eval.judge.timeout_s", self.timeout_s, 120)
        positive("eval.judge.max_attempts", self.max_attempts, 6)
        positive("eval.judge.max_tokens", self.max_tokens, 1024)


@dataclass
class EvalConfig:
    prompts: str | None = path_field(None)
    """BELLE's judge-prompt file ({"class","prompt"} per line; eval/eval_prompt.json): one prompt per class of the
    eval set (scorer=judge)."""
    scorer: str = "judge"
    """judge: every item by the judge (eval.judge), with ``agreement_rule`` beside it on its classes; rule: every
    item by ``rule`` (sets whose references are checkable, e.g. short labels)."""
    rule: str = "exact_match"
    """The rule of scorer=rule."""
    agreement_rule: str | None = "math_final"
    """Under scorer=judge, a rule also scored on the classes in ``agreement_classes`` and reported as its agreement
    with the judge (BELLE's math references are prose with some errors, so the rule is a second opinion); None: off."""
    agreement_classes: list[str] = field(default_factory=lambda: ["math"])
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    data: str | None = path_field(None)
    """On a training job: the eval set its export is evaluated on when training completes (``eval=sample``: the
    bundled stand-in; method=eval reads data.path instead)."""
    generate: GenerateConfig | None = None
    """On a training job: how that evaluation answers (None: method.generate's defaults; method=eval reads
    method.generate instead)."""
    boot: int = 1000
    """Bootstrap resamples of the 95% intervals."""
    seed: int = 0
    """Seed of the bootstrap."""

    def __post_init__(self) -> None:
        one_of("eval.scorer", self.scorer, SCORERS)
        one_of("eval.rule", self.rule, RULES)
        require(self.agreement_rule is None or self.agreement_rule in RULES,
                f"eval.agreement_rule={self.agreement_rule} is not one of {', '.join(RULES)}: set "
                "eval.agreement_rule=math_final (or null)")
        positive("eval.boot", self.boot, 1000)

    def missing(self) -> str | None:
        """What an evaluation by the judge lacks to start (checked at launch; a dry run notes it), or None."""
        if self.scorer != "judge":
            return None
        if self.judge.model_path is None and (self.judge.url is None or self.judge.model is None):
            return ("eval.scorer=judge needs the judge's endpoint: set eval.judge.url=http://HOST:PORT/v1 and "
                    "eval.judge.model=NAME (or eval.scorer=rule for sets whose references a rule can check)")
        if self.prompts is None:
            return ('eval.scorer=judge needs the judge prompts: set eval.prompts=<BELLE\'s eval_prompt.json, one '
                    '{"class","prompt"} per class>')
        return None
