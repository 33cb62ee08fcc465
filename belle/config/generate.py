"""How a job answers prompts (method.generate): the engine, sampling, samples per prompt, batch and seed."""

import math
from dataclasses import dataclass

from belle.config._checks import one_of, positive, require

ENGINES = ("hf", "vllm", "openai")
"""Engines that answer prompts: hf (Hugging Face generate on the job's workers, under ZeRO-3 in lockstep), vllm
(vLLM on each worker, where the installed vLLM accepts the installed torch), openai (an OpenAI-compatible server,
e.g. `vllm serve` or sglang in an environment of its own)."""


@dataclass
class GenerateConfig:
    engine: str = "hf"
    """hf: Hugging Face generate on the job's workers (data-parallel; ZeRO-3 in lockstep); vllm: a vLLM engine on
    each worker (the whole model on its GPU; continuous batching); openai: the server at ``url`` answers, sent the
    prompts' token ids by model.path's tokenizer (the served model's)."""
    temperature: float = 0.0
    """0 is greedy (BELLE's papers answer at 0.001, which is greedy in effect); > 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling's mass (temperature > 0 only; 1 keeps every token)."""
    max_new_tokens: int = 128
    """Tokens generated at most per answer (the prompt keeps its last data.max_length tokens)."""
    num_samples: int = 1
    """Answers per prompt (temperature > 0: greedy answers would be the same)."""
    batch: int = 8
    """hf: prompts per generate call on each worker, grouped by length (left-padded to the longest); vllm: sequences
    in flight per worker (vLLM's max_num_seqs)."""
    seed: int = 0
    """Seed of the sampling; a batch's RNG is reseeded from (seed, worker, batch), recorded in every row."""
    url: str | None = None
    """engine=openai: the server's base URL (http://HOST:8000/v1)."""
    served_model: str | None = None
    """engine=openai: the model's name at the server."""
    api_key_env: str = "OPENAI_API_KEY"
    """engine=openai: the environment variable holding the server's key (unset: no key)."""
    concurrency: int = 16
    """engine=openai: requests in flight per worker."""
    timeout_s: float = 600.0
    """engine=openai: seconds one request may take before it is retried (timeouts, connection errors,
    408/409/429/5xx, with jittered backoff honouring Retry-After); a request that fails max_attempts times fails
    the run, and a rerun answers what is missing."""
    max_attempts: int = 6
    gpu_memory_utilization: float | None = None
    """engine=vllm: the share of each GPU vLLM takes for weights and KV cache (unset: 0.9); on CPU workers the KV
    cache is sized for ``batch`` sequences at full length instead."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def memory_fraction(self) -> float:
        """engine=vllm: the share of each GPU it takes."""
        return 0.9 if self.gpu_memory_utilization is None else self.gpu_memory_utilization

    def __post_init__(self) -> None:
        one_of("method.generate.engine", self.engine, ENGINES)
        require(math.isfinite(self.temperature) and self.temperature >= 0,
                f"method.generate.temperature={self.temperature} must be >= 0 (0: greedy): set "
                "method.generate.temperature=0")
        require(0 < self.top_p <= 1,
                f"method.generate.top_p={self.top_p} must be in (0, 1]: set method.generate.top_p=1")
        positive("method.generate.max_new_tokens", self.max_new_tokens, 128)
        positive("method.generate.num_samples", self.num_samples, 1)
        positive("method.generate.batch", self.batch, 8)
        require(not (self.greedy and self.num_samples > 1),
                f"method.generate.num_samples={self.num_samples} at temperature 0 (greedy) gives the same answer "
                f"{self.num_samples} times: set method.generate.temperature=0.7 or method.generate.num_samples=1")
        if self.engine == "openai":
            require(self.url is not None and self.served_model is not None,
                    "method.generate.engine=openai needs its server: set method.generate.url=http://HOST:PORT/v1 and "
                    "method.generate.served_model=NAME")
            require(self.url.startswith(("http://", "https://")),
                    f"method.generate.url={self.url} is not an http(s) URL: set method.generate.url=http://HOST:PORT/v1")
            positive("method.generate.concurrency", self.concurrency, 16)
            positive("method.generate.timeout_s", self.timeout_s, 600)
            positive("method.generate.max_attempts", self.max_attempts, 6)
        else:
            require(self.url is None and self.served_model is None,
                    "method.generate.url/served_model are read by engine=openai only: set method.generate.engine="
                    "openai, or remove them")
        if self.engine == "vllm":
            require(self.gpu_memory_utilization is None or 0 < self.gpu_memory_utilization <= 1,
                    f"method.generate.gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]: set "
                    "method.generate.gpu_memory_utilization=0.9")
        else:
            require(self.gpu_memory_utilization is None,
                    "method.generate.gpu_memory_utilization is read by engine=vllm only: set "
                    "method.generate.engine=vllm, or remove it")
        require(not (self.greedy and self.top_p < 1),
                f"method.generate.top_p={self.top_p} shapes sampling, but temperature 0 is greedy: set "
                "method.generate.temperature=0.7 or method.generate.top_p=1")
