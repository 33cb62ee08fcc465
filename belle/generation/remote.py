"""Answers from an OpenAI-compatible server (method.generate.engine=openai: a `vllm serve` or sglang in its own
environment): this rank's share of the open units sent as token ids to /completions, method.generate.concurrency at
a time, each row appended to the rank's shard as it comes back (a rerun skips them, as for engine=hf)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from belle import stop
from belle.config.generate import GenerateConfig
from belle.data.prompts import Prompt
from belle.generation.answer import Answered, deal
from belle.generation.shards import ShardWriter, Unit
from belle.model.generate import step_seed

FINISH = {"stop": "eos", "length": "length"}
"""The server's finish_reason → the row's."""


def unit_seed(seed: int, prompt_id: str, sample: int) -> int:
    """The seed sent with one unit's request: the same unit gets the same seed on every attempt and world size."""
    return step_seed(seed, int.from_bytes(prompt_id.encode()[:7].ljust(7, b"\0"), "big"), sample) % (2**31)


def answer_remote(
    run_dir: Path, settings: GenerateConfig, prompts: dict[str, Prompt], units: list[Unit], *, rank: int,
    world: int, tokenizer, describe: Callable[..., dict], after_batch: Callable[[int, int, int, float], None],
    folder: Path | None = None,
) -> Answered:
    """Answer this rank's share of ``units`` at the server (each row records the model the server reported) → what
    it did. A stop request ends it after the requests in flight."""
    from belle.score.http import Endpoint, complete

    endpoint = Endpoint.from_env(settings.url, settings.api_key_env, timeout_s=settings.timeout_s,
                                 max_attempts=settings.max_attempts, name="generation endpoint",
                                 key_hint=f"${settings.api_key_env} (method.generate.api_key_env)")
    mine = deal(prompts, units, rank, world)
    writer, done, lock = ShardWriter(folder or run_dir, rank), Answered(), threading.Lock()
    sampling = {"max_tokens": settings.max_new_tokens, "temperature": settings.temperature, "top_p": settings.top_p}

    def ask(unit: Unit):
        prompt_id, sample = unit
        seed = unit_seed(settings.seed, prompt_id, sample)
        started = time.time()
        reply = complete(endpoint, settings.served_model, prompts[prompt_id].ids, seed=seed, **sampling)
        return unit, seed, reply, time.time() - started

    try:
        with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
            pending = [pool.submit(ask, unit) for unit in mine]
            for future in as_completed(pending):
                (prompt_id, sample), seed, reply, seconds = future.result()
                tokens = reply.tokens if reply.tokens is not None else len(tokenizer.encode(
                    reply.text, add_special_tokens=False))
                row = describe(prompts[prompt_id], sample, reply.text, tokens,
                               FINISH.get(reply.finish_reason, reply.finish_reason), seed)
                row["model"] = row["model"] | {"reported": reply.model_reported}
                with lock:
                    writer.write([row])
                    done.rows, done.tokens, done.batches = done.rows + 1, done.tokens + tokens, done.batches + 1
                after_batch(done.batches, 1, tokens, seconds)
                if stop.requested(run_dir):
                    done.stopped = True
                    for other in pending:
                        other.cancel()
                    break
    finally:
        writer.close()
    return done
