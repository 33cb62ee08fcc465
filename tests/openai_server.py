"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks of judge and generation clients.

    with OpenAIServer(lambda path, body, n: chat_reply("得分：0.7")) as server:
        ... Endpoint(server.url) ...           # server.url == "http://127.0.0.1:PORT/v1"
        server.requests                         # [(path, JSON body, headers with lower-case names), ...]

A real ``ThreadingHTTPServer`` (one thread per connection, port 0) in a daemon thread. ``script(path, body, n)`` —
``path`` as requested ("/v1/chat/completions"), ``body`` the parsed JSON (None if it was not JSON), ``n`` the request's
number from 0 — returns a ``Reply``: a status, a JSON body or raw bytes (garbage), headers, a delay before answering
(latency, or a hang past the client's timeout), or ``drop`` to close the connection without an answer. It can be
replaced at any time (``server.script = …``). ``max_in_flight`` is the most requests handled at once. Leaving the
block wakes every delayed handler and shuts the server down at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server answers: ``status`` with ``json`` (or ``raw`` bytes) and ``headers`` after ``delay_s``;
    ``drop`` closes the connection without answering."""

    status: int = 200
    json: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0
    drop: bool = False


def chat_reply(text: str | None, model: str = "judge-1", finish_reason: str = "stop", **options: Any) -> Reply:
    """A /chat/completions answer whose one choice says ``text`` (None: a message without content)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    body = {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return Reply(json=body, **options)


def completion_reply(text: str, model: str = "engine-1", finish_reason: str = "stop", **options: Any) -> Reply:
    """A /completions answer whose one choice is ``text``."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    body = {"id": "cmpl-test", "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return Reply(json=body, **options)


def error_reply(status: int, message: str, **options: Any) -> Reply:
    """An OpenAI-style error answer: ``{"error": {"message": …}}`` with ``status``."""
    return Reply(status=status, json={"error": {"message": message, "type": "test_error", "code": status}}, **options)


def default_script(path: str, body: Any, n: int) -> Reply:
    """Answers "ok": as a chat completion on /chat/completions, as a completion on any other path."""
    return chat_reply("ok") if path.endswith("/chat/completions") else completion_reply("ok")


class OpenAIServer:
    """The server, started on entering the ``with`` block and stopped on leaving it (see the module docstring)."""

    def __init__(self, script: Callable[[str, Any, int], Reply] = default_script):
        self.script = script
        self.requests: list[tuple[str, Any, dict[str, str]]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT/v1``."""
        assert self._httpd is not None, "the server runs only inside its with block"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                server._handle(self, body)

            def do_GET(self) -> None:
                server._handle(self, None)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # many clients connecting at once

            def handle_error(self, request: Any, client_address: Any) -> None:  # a client that hung up: expected
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()  # delayed handlers return now, without answering
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _handle(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        """Record the request, ask the script, and answer as it says."""
        with self._lock:
            n = len(self.requests)
            self.requests.append((handler.path, body, {k.lower(): v for k, v in handler.headers.items()}))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.script(handler.path, body, n)
            stopped = bool(reply.delay_s) and self._closing.wait(reply.delay_s)
        finally:  # answered from here on: the client may send its next request before this thread is done writing
            with self._lock:
                self.in_flight -= 1
        if stopped or reply.drop:
            handler.close_connection = True
            return
        data = reply.raw if reply.raw is not None else json.dumps(reply.json, ensure_ascii=False).encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json" if reply.raw is None else "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
