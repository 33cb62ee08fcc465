"""A small client for OpenAI-compatible HTTP endpoints (OpenAI, vLLM, sglang, LLaMA-Factory's api), on the standard
library only.

``Endpoint.post`` sends one JSON request and retries what a later attempt can fix — timeouts, connection errors,
408/409/429/5xx, and a 200 whose body is not a JSON object (or fails the caller's check) — with full-jitter exponential
backoff that never waits less than the server's Retry-After; any other 4xx fails at once, and 401/403/404 (wrong key,
URL or model: no request can succeed) raise ``FatalEndpointError``. ``chat`` and ``complete`` call
``/chat/completions`` and ``/completions`` and return the first choice's text.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class HttpError(Exception):
    """A request that failed: ``status`` (None without an HTTP answer), a one-line ``message`` with the server's error
    text, whether a later attempt may succeed, the server's Retry-After in seconds, and the attempts made."""

    def __init__(self, status: int | None, message: str, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.message, self.retryable, self.retry_after_s = status, message, retryable, retry_after_s
        self.attempts = 1


class FatalEndpointError(Exception):
    """401/403/404: the key, URL or model is wrong, so no request to this endpoint can succeed; the message names the
    fix. ``attempts`` counts this request's attempts."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class ChatReply:
    """The first choice of a reply: its text, the model the endpoint reported, why it stopped, HTTP attempts made,
    and the tokens generated as the reply's usage counts them (None without one)."""

    text: str
    model_reported: str | None
    finish_reason: str | None
    attempts: int
    tokens: int | None = None


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP-date); None without either."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _server_text(body: bytes) -> str:
    """The error message of an OpenAI-style ``{"error": {"message": …}}`` body, else the body as text."""
    try:
        error = json.loads(body).get("error")
        return str(error.get("message", error) if isinstance(error, dict) else error)
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")


class Endpoint:
    """An OpenAI-compatible endpoint at base ``url`` (e.g. ``http://127.0.0.1:8000/v1``), safe to share between threads.

    ``key_hint`` says where the key comes from, for the 401/403 message; ``name`` names the endpoint in messages.
    ``rng`` and ``sleep`` are injectable for tests. Loopback URLs bypass any proxy set in the environment.
    """

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60, max_attempts: int = 6,
                 backoff_s: float = 1.0, backoff_cap_s: float = 60.0, rng: random.Random | None = None,
                 sleep: Callable[[float], None] = time.sleep, *, key_hint: str = "$OPENAI_API_KEY",
                 name: str = "endpoint"):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.url, self.api_key, self.timeout_s, self.max_attempts = url.rstrip("/"), api_key, timeout_s, max_attempts
        self.backoff_s, self.backoff_cap_s, self.sleep = backoff_s, backoff_cap_s, sleep
        self.key_hint, self.name = key_hint, name
        self._rng, self._rng_lock = rng or random.Random(), threading.Lock()
        proxies = {} if urllib.parse.urlsplit(self.url).hostname in LOOPBACK else None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies), _KeepStatus)

    @classmethod
    def from_env(cls, url: str, api_key_env: str = "OPENAI_API_KEY", **options: Any) -> Endpoint:
        """An endpoint whose key is read from ``$api_key_env`` (none when unset or empty: local servers need none)."""
        options.setdefault("key_hint", f"${api_key_env}")
        return cls(url, os.environ.get(api_key_env) or None, **options)

    def post(self, path: str, payload: dict, check: Callable[[dict], None] | None = None) -> tuple[dict, int]:
        """POST ``payload`` as JSON to ``url + path``; returns (the reply's JSON object, attempts made). ``check`` may
        raise a retryable HttpError for a reply of the wrong shape, which is then retried like garbage."""
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self._attempt(self.url + path, payload)
                if check:
                    check(reply)
                return reply, attempt
            except (HttpError, FatalEndpointError) as error:
                error.attempts = attempt
                if isinstance(error, FatalEndpointError) or not error.retryable or attempt >= self.max_attempts:
                    raise
                with self._rng_lock:
                    delay = self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 1)))
                self.sleep(max(delay, error.retry_after_s or 0.0))

    def _attempt(self, url: str, payload: dict) -> dict:
        """One request; any failure as HttpError (retryable or not) or FatalEndpointError."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, json.dumps(payload, ensure_ascii=False).encode(), headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status, reply_headers, body = response.status, response.headers, response.read()
        except (OSError, http.client.HTTPException) as error:  # URLError is an OSError; so are timeouts and resets
            reason = getattr(error, "reason", error)
            timed_out = isinstance(reason, TimeoutError)
            what = f"timed out after {self.timeout_s:g} s" if timed_out else f"failed: {reason!r}"
            raise HttpError(None, one_line(f"{self.name} {url} {what}"), retryable=True) from error
        if not 200 <= status < 300:
            raise self._status_error(url, status, body, reply_headers)
        try:
            reply = json.loads(body)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise HttpError(status, one_line(f"{self.name} {url} answered {status} with a body that is no JSON object: "
                                             f"{body[:120].decode('utf-8', 'replace')!r}"), retryable=True)
        return reply

    def _status_error(self, url: str, status: int, body: bytes, headers: Any) -> HttpError | FatalEndpointError:
        """The error for a status other than 2xx (fatal for 401/403/404, retryable for 408/409/429/5xx)."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        said = one_line(f"{self.name} {url} answered {status} {phrase}: {_server_text(body)}")
        if status in (401, 403):
            return FatalEndpointError(f"{said}: set a valid key in {self.key_hint}")
        if status == 404:
            return FatalEndpointError(f"{said}: check the URL (the base, e.g. http://host:8000/v1) and the model name")
        retryable = status in RETRYABLE_STATUS or status >= 500
        return HttpError(status, said, retryable, retry_after(headers) if retryable else None)


class _KeepStatus(urllib.request.HTTPErrorProcessor):
    """Hands every response back as it is: no HTTPError for a 4xx/5xx, no redirect of a POST."""

    def http_response(self, request: urllib.request.Request, response: Any) -> Any:
        return response

    https_response = http_response


def _first_choice(field: str) -> Callable[[dict], None]:
    """A reply check: ``choices[0]`` exists and holds a string at ``field`` (a dotted path)."""

    def check(reply: dict) -> None:
        value: Any = reply.get("choices")
        value = value[0] if isinstance(value, list) and value else None
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str):
            raise HttpError(200, one_line(f"malformed reply, no choices[0].{field}: {json.dumps(reply)[:120]}"), True)

    return check


def chat(endpoint: Endpoint, model: str, messages: list[dict], **sampling: Any) -> ChatReply:
    """One chat completion on ``/chat/completions``: ``messages`` as they are, ``sampling`` (temperature, max_tokens…)
    merged into the request."""
    reply, attempts = endpoint.post("/chat/completions", {"model": model, "messages": messages, **sampling},
                                    _first_choice("message.content"))
    choice = reply["choices"][0]
    return ChatReply(choice["message"]["content"], reply.get("model"), choice.get("finish_reason"), attempts)


def complete(endpoint: Endpoint, model: str, prompt: str | list[int], **sampling: Any) -> ChatReply:
    """One completion on ``/completions``: a rendered ``prompt`` (text, or token ids) sent as it is (no chat
    template applied)."""
    reply, attempts = endpoint.post("/completions", {"model": model, "prompt": prompt, **sampling},
                                    _first_choice("text"))
    choice = reply["choices"][0]
    usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
    tokens = usage.get("completion_tokens")
    return ChatReply(choice["text"], reply.get("model"), choice.get("finish_reason"), attempts,
                     tokens if isinstance(tokens, int) else None)
