"""An LLM judge over any OpenAI-compatible chat endpoint, with a cache that makes a finished evaluation's rerun free.

Each item is one user message sent with fixed sampling (temperature 0 by default). The caller's ``parse`` turns the
reply into a score in [0, 1]; a reply without one is re-asked once (the reply and a reminder appended as a follow-up
turn), then kept as ``judge_unparsed`` with the raw reply — never scored 0, never dropped. A transport failure that
outlived the endpoint's retries makes that item ``judge_error`` and the run goes on; a wrong key, URL or model
(``FatalEndpointError``) stops it after the finished judgments were handed out. ``JudgeCache`` keeps scored and
unparsed outcomes in an append-only JSON-lines file keyed by (judge model, template version, request, sampling, URL).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from belle.score.http import Endpoint, FatalEndpointError, HttpError, chat, one_line

DEFAULT_SAMPLING = {"temperature": 0, "max_tokens": 1024}


@dataclass(frozen=True)
class Judgment:
    """One item's outcome: ``status`` is "scored" (``score`` in [0, 1]), "judge_unparsed" (no score after the re-ask)
    or "judge_error" (``error``: why, on one line); ``reply`` is the judge's last raw reply, ``attempts`` the HTTP
    attempts in all (the re-ask's included, 0 from the cache), ``judge_model`` the model the endpoint reported."""

    status: str
    score: float | None
    reply: str | None
    error: str | None
    attempts: int
    cached: bool
    judge_model: str | None


def cache_key(model: str, template_version: str, messages: list[dict], sampling: dict, url: str) -> str:
    """sha256 (hex) of the canonical JSON of everything that decides a judgment."""
    identity = {"model": model, "template_version": template_version, "messages": messages, "sampling": sampling,
                "url": url}
    canonical = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class JudgeCache:
    """Judgments by cache key in an append-only JSON-lines file (``{"key": …, **entry}`` per line), shared by threads.

    Opening loads every line; a torn last line (no newline, or unparsable: a writer killed mid-line) is cut off the
    file, a damaged line before it is refused. Each ``put`` is one ``write`` to a file opened for appending, so
    processes sharing the file interleave whole lines; the last line for a key wins.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        data = self.path.read_bytes() if self.path.exists() else b""
        *lines, tail = data.split(b"\n")  # tail: what follows the last newline, b"" unless a line was torn
        good = len(data) - len(tail)
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                key = entry.pop("key")
            except (ValueError, AttributeError, KeyError, TypeError) as error:
                if number == len(lines) and not tail:  # the last line, written in part
                    good -= len(line) + 1
                    break
                raise ValueError(f"{self.path}:{number}: judge cache line is damaged ({one_line(str(error), 80)}): "
                                 f"delete the file to judge again") from error
            self._entries[key] = entry
        if good < len(data):
            with open(self.path, "r+b") as file:
                file.truncate(good)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        """The entry stored under ``key``, or None."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        """Store ``entry`` (a JSON-able dict) under ``key``: one line appended and written through."""
        line = json.dumps({"key": key, **entry}, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            with open(self.path, "ab", buffering=0) as file:  # unbuffered: the line goes out in one write
                file.write(line.encode("utf-8"))
            self._entries[key] = dict(entry)


class Judge:
    """Judges user messages on ``endpoint`` with ``model``, at most ``concurrency`` requests in flight.

    ``parse(reply) -> float | None`` reads a score (outside [0, 1] counts as none); ``reask`` is the follow-up user
    message sent once after an unparsable reply; ``template_version`` names how the messages and the reask were built
    (change it when either changes: it is part of the cache key).
    Results are written to ``cache`` only at temperature 0. ``requests`` counts HTTP attempts sent, ``cache_hits`` the
    items answered from the cache.
    """

    def __init__(self, endpoint: Endpoint, model: str, *, template_version: str,
                 parse: Callable[[str], float | None], reask: str, concurrency: int = 8,
                 sampling: dict[str, Any] | None = None, cache: JudgeCache | None = None):
        if concurrency < 1:
            raise ValueError(f"judge concurrency must be at least 1, got {concurrency}")
        self.endpoint, self.model, self.template_version = endpoint, model, template_version
        self.parse, self.reask, self.concurrency, self.cache = parse, reask, concurrency, cache
        self.sampling = dict(DEFAULT_SAMPLING if sampling is None else sampling)
        self.requests = 0
        self.cache_hits = 0
        self._lock = threading.Lock()

    def judge_all(self, messages: list[str], on_done: Callable[[int, Judgment], None] | None = None) -> list[Judgment]:
        """Judge every message; ``on_done(index, judgment)`` is called in this thread as each one finishes, so the
        caller can append rows as they come. An item's transport failure becomes its ``judge_error`` judgment; a
        FatalEndpointError cancels the items not started, hands out those that finished, then is raised."""
        results: list[Judgment | None] = [None] * len(messages)
        stopped = threading.Event()  # set by the first FatalEndpointError: items not yet sent are skipped

        def judge_unless_stopped(message: str) -> Judgment | None:
            if stopped.is_set():
                return None
            try:
                return self.judge(message)
            except FatalEndpointError:
                stopped.set()
                raise

        def deliver(index: int, judgment: Judgment | None) -> None:
            if judgment is not None and results[index] is None:
                results[index] = judgment
                if on_done:
                    on_done(index, judgment)

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            futures = {pool.submit(judge_unless_stopped, message): index for index, message in enumerate(messages)}
            try:
                for future in as_completed(futures):
                    deliver(futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # the requests in flight finish: hand them out too
                for future, index in futures.items():
                    if not future.cancelled() and future.exception() is None:
                        deliver(index, future.result())
                raise
        return results  # every slot is filled

    def judge(self, message: str) -> Judgment:
        """Judge one user message (the cache first); raises only FatalEndpointError."""
        messages = [{"role": "user", "content": message}]
        cacheable = self.cache is not None and self.sampling.get("temperature") == 0
        key = cache_key(self.model, self.template_version, messages, self.sampling, self.endpoint.url)
        entry = self.cache.get(key) if cacheable else None
        if entry is not None:
            with self._lock:
                self.cache_hits += 1
            return Judgment(entry["status"], entry["score"], entry["reply"], None, 0, True, entry["judge_model"])
        attempts, text, judge_model, score, conversation = 0, None, None, None, messages
        try:
            for _ in range(2):
                reply = chat(self.endpoint, self.model, conversation, **self.sampling)
                attempts, text, judge_model = attempts + reply.attempts, reply.text, reply.model_reported
                score = self._score(text)
                if score is not None:
                    break
                conversation = [*messages, {"role": "assistant", "content": text},
                                {"role": "user", "content": self.reask}]
        except (HttpError, FatalEndpointError) as error:
            self._count(attempts + error.attempts)
            if isinstance(error, FatalEndpointError):
                raise
            return Judgment("judge_error", None, text, error.message, attempts + error.attempts, False, judge_model)
        self._count(attempts)
        judgment = Judgment("scored" if score is not None else "judge_unparsed", score, text, None, attempts, False,
                            judge_model)
        if cacheable:
            self.cache.put(key, {"status": judgment.status, "score": score, "reply": text, "judge_model": judge_model})
        return judgment

    def _score(self, reply: str) -> float | None:
        """The parsed score when it lies in [0, 1], else None."""
        score = self.parse(reply)
        return float(score) if score is not None and math.isfinite(score) and 0 <= score <= 1 else None

    def _count(self, attempts: int) -> None:
        with self._lock:
            self.requests += attempts
