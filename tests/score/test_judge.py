"""The judge and its HTTP client against a real OpenAI-compatible server on 127.0.0.1 (tests/openai_server.py):
retries (429 with Retry-After, 5xx, a hang, garbage, a dropped connection), fail-fast 4xx, the re-ask, bounded
concurrency, the key header, and the cache (a rerun sends nothing; torn and damaged lines)."""

import email.utils
import json
import re
import threading
import time

import pytest
from openai_server import OpenAIServer, Reply, chat_reply, completion_reply, error_reply

from belle.score.http import Endpoint, FatalEndpointError, HttpError, chat, complete
from belle.score.judge import Judge, JudgeCache, Judgment, cache_key

REASK = "请按格式给出得分，例如：得分：0.5"


def parse(reply: str) -> float | None:
    """A test parser: the number after 得分: or 得分：."""
    found = re.search(r"得分\s*[:：]\s*(\d+(?:\.\d+)?)", reply)
    return float(found.group(1)) if found else None


def endpoint(server: OpenAIServer, **options) -> Endpoint:
    """An endpoint with test-sized timeouts and backoff; ``sleeps`` (a list) records every wait instead of sleeping."""
    sleeps = options.pop("sleeps", None)
    options = {"timeout_s": 2.0, "max_attempts": 4, "backoff_s": 0.01, "backoff_cap_s": 0.05, **options}
    if sleeps is not None:
        options["sleep"] = sleeps.append
    return Endpoint(server.url, **options)


def judge(server: OpenAIServer, endpoint_: Endpoint | None = None, **options) -> Judge:
    """A judge of "judge-model" on the server (``endpoint_``, else a test-sized one), parsing 得分, 4 at a time."""
    settings = {"template_version": "test-v1", "parse": parse, "reask": REASK, "concurrency": 4, **options}
    return Judge(endpoint_ or endpoint(server), "judge-model", **settings)


def scripted(*replies: Reply):
    """A script answering the n-th request with replies[n], the last one from then on."""
    return lambda path, body, n: replies[min(n, len(replies) - 1)]


def test_429_waits_at_least_retry_after():
    date = email.utils.formatdate(time.time() + 3, usegmt=True)  # the HTTP-date form, whole seconds
    replies = [error_reply(429, "Rate limit reached", headers={"Retry-After": "0.2"}),
               error_reply(429, "Rate limit reached", headers={"Retry-After": date}), chat_reply("得分：0.9")]
    sleeps = []
    with OpenAIServer(scripted(*replies)) as server:
        reply = chat(endpoint(server, sleeps=sleeps), "judge-model", [{"role": "user", "content": "q"}])
    assert (reply.text, reply.attempts, len(server.requests)) == ("得分：0.9", 3, 3)
    assert sleeps[0] >= 0.2  # the jittered backoff alone is at most 0.01
    assert 1.0 <= sleeps[1] <= 3.0


def test_500_then_success():
    with OpenAIServer(scripted(error_reply(500, "internal error"), chat_reply("得分：0.8"))) as server:
        [judgment] = judge(server).judge_all(["q"])
    assert (judgment.status, judgment.score, judgment.attempts) == ("scored", 0.8, 2)


def test_a_hang_past_the_timeout_is_retried():
    with OpenAIServer(scripted(chat_reply("得分：1", delay_s=5), chat_reply("得分：1"))) as server:
        start = time.monotonic()
        reply = chat(endpoint(server, timeout_s=0.3), "judge-model", [{"role": "user", "content": "q"}])
        elapsed = time.monotonic() - start
    assert (reply.text, reply.attempts) == ("得分：1", 2)
    assert 0.3 <= elapsed < 2


def test_garbage_and_a_dropped_connection_are_retried():
    replies = [Reply(raw=b"<html>502 Bad Gateway</html>"), Reply(drop=True), chat_reply("得分：0.5")]
    with OpenAIServer(scripted(*replies)) as server:
        reply = chat(endpoint(server), "judge-model", [{"role": "user", "content": "q"}])
    assert (reply.text, reply.attempts, len(server.requests)) == ("得分：0.5", 3, 3)


def test_connection_refused_is_retried_then_raised():
    with OpenAIServer() as server:
        url = server.url
    sleeps = []
    with pytest.raises(HttpError) as raised:
        chat(Endpoint(url, timeout_s=0.3, max_attempts=3, backoff_s=0.01, sleep=sleeps.append), "m", [])
    assert raised.value.retryable and raised.value.status is None and raised.value.attempts == 3
    assert "failed" in raised.value.message and len(sleeps) == 2


def test_malformed_reply_is_retried_then_kept_as_judge_error():
    with OpenAIServer(scripted(Reply(json={"choices": []}), chat_reply(None))) as server:
        [judgment] = judge(server, endpoint(server, max_attempts=3)).judge_all(["q"])
    assert (judgment.status, judgment.attempts, len(server.requests)) == ("judge_error", 3, 3)
    assert "malformed reply" in judgment.error and "\n" not in judgment.error


def test_5xx_to_the_last_attempt_is_a_judge_error_and_the_run_goes_on():
    def script(path, body, n):
        content = body["messages"][0]["content"]
        return error_reply(503, "overloaded") if content == "bad" else chat_reply("得分：0.6")

    with OpenAIServer(script) as server:
        judgments = judge(server).judge_all(["a", "bad", "b"])
    assert [j.status for j in judgments] == ["scored", "judge_error", "scored"]
    assert judgments[1].attempts == 4 and "503 Service Unavailable: overloaded" in judgments[1].error


def test_400_fails_fast_in_one_line():
    message = "max_tokens is too large:\n 4096 > 2048"
    with OpenAIServer(scripted(error_reply(400, message))) as server:
        j = judge(server)
        [judgment] = j.judge_all(["q"])
    assert (judgment.status, judgment.score, judgment.attempts, j.requests) == ("judge_error", None, 1, 1)
    assert "\n" not in judgment.error
    assert judgment.error.endswith("answered 400 Bad Request: max_tokens is too large: 4096 > 2048")


def test_401_stops_the_run_after_delivering_the_finished_items(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-wrong")
    delivered = []
    fix = r"answered 401 Unauthorized: bad key: set a valid key in \$JUDGE_KEY"
    with OpenAIServer(scripted(*[chat_reply("得分：0.7")] * 3, error_reply(401, "bad key"))) as server:
        j = judge(server, Endpoint.from_env(server.url, "JUDGE_KEY", timeout_s=1), concurrency=1)
        with pytest.raises(FatalEndpointError, match=fix):
            j.judge_all([f"q{i}" for i in range(10)], on_done=lambda i, x: delivered.append((i, x.score)))
    assert delivered == [(0, 0.7), (1, 0.7), (2, 0.7)]
    assert len(server.requests) == 4 and j.requests == 4  # the items after the 401 were never sent


def test_401_delivers_the_items_in_flight_and_sends_no_more():
    def script(path, body, n):
        content = body["messages"][0]["content"]
        # the 401 comes once all four are in flight, the other three finish after it
        return error_reply(401, "bad key", delay_s=0.15) if content == "q1" else chat_reply("得分：0.3", delay_s=0.4)

    delivered = []
    with OpenAIServer(script) as server:
        j = judge(server, endpoint(server, timeout_s=5), concurrency=4)
        with pytest.raises(FatalEndpointError, match=r"set a valid key in \$OPENAI_API_KEY"):
            j.judge_all([f"q{i}" for i in range(8)], on_done=lambda i, x: delivered.append((i, x.score)))
    assert sorted(delivered) == [(0, 0.3), (2, 0.3), (3, 0.3)]  # in flight when the 401 came: finished, handed out
    assert sorted(body["messages"][0]["content"] for _, body, _ in server.requests) == ["q0", "q1", "q2", "q3"]


def test_404_names_the_url_fix():
    fix = "404 Not Found: The model `judge-model` does not exist: check the URL"
    with OpenAIServer(scripted(error_reply(404, "The model `judge-model` does not exist"))) as server, \
            pytest.raises(FatalEndpointError, match=fix):
        judge(server).judge_all(["q"])
    assert len(server.requests) == 1


def test_a_score_is_parsed_and_the_request_is_one_user_message_at_temperature_0():
    with OpenAIServer(scripted(chat_reply("这个回答基本正确。得分：0.7", model="judge-1-2025"))) as server:
        [judgment] = judge(server).judge_all(["评价这个回答"])
    assert judgment == Judgment("scored", 0.7, "这个回答基本正确。得分：0.7", None, 1, False, "judge-1-2025")
    path, body, headers = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body == {"model": "judge-model", "messages": [{"role": "user", "content": "评价这个回答"}],
                    "temperature": 0, "max_tokens": 1024}
    assert "authorization" not in headers  # no key given, none sent


def test_an_unparsable_reply_is_reasked_once_then_kept_unparsed():
    with OpenAIServer(scripted(chat_reply("我觉得不错"), chat_reply("还是不错"))) as server:
        [judgment] = judge(server).judge_all(["q"])
    assert judgment == Judgment("judge_unparsed", None, "还是不错", None, 2, False, "judge-1")
    assert server.requests[1][1]["messages"] == [{"role": "user", "content": "q"},
                                                 {"role": "assistant", "content": "我觉得不错"},
                                                 {"role": "user", "content": REASK}]
    assert len(server.requests) == 2


def test_the_reask_can_score():
    with OpenAIServer(scripted(chat_reply("不错"), chat_reply("得分：0.4"))) as server:
        [judgment] = judge(server).judge_all(["q"])
    assert (judgment.status, judgment.score, judgment.reply, judgment.attempts) == ("scored", 0.4, "得分：0.4", 2)


def test_a_score_outside_0_1_is_unparsed():
    with OpenAIServer(scripted(chat_reply("得分：1.5"))) as server:
        [judgment] = judge(server).judge_all(["q"])
    assert (judgment.status, judgment.score, judgment.reply, len(server.requests)) == ("judge_unparsed", None,
                                                                                       "得分：1.5", 2)


def test_concurrency_is_bounded():
    with OpenAIServer(lambda path, body, n: chat_reply("得分：1", delay_s=0.1)) as server:
        j = judge(server, endpoint(server, timeout_s=5), concurrency=4)
        judgments = j.judge_all([f"q{i}" for i in range(16)])
    assert [x.score for x in judgments] == [1.0] * 16 and j.requests == 16
    assert server.max_in_flight == 4


def test_on_done_is_called_once_per_item_in_the_calling_thread():
    calls = []
    with OpenAIServer(lambda path, body, n: chat_reply(f"得分：0.{body['messages'][0]['content']}")) as server:
        judgments = judge(server).judge_all([str(i) for i in range(10)],
                                            on_done=lambda i, x: calls.append((i, x, threading.get_ident())))
    assert sorted(i for i, _, _ in calls) == list(range(10))
    assert all(judgments[i] is x and thread == threading.get_ident() for i, x, thread in calls)
    assert [x.score for x in judgments] == [i / 10 for i in range(10)]


def test_the_key_goes_in_the_authorization_header(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    with OpenAIServer() as server:
        reply = chat(Endpoint.from_env(server.url, timeout_s=1), "judge-model", [{"role": "user", "content": "q"}])
    assert reply.text == "ok"
    assert server.requests[0][2]["authorization"] == "Bearer sk-test-123"


def test_complete_sends_the_prompt_as_it_is():
    with OpenAIServer(scripted(completion_reply("你好", finish_reason="length"))) as server:
        reply = complete(endpoint(server), "engine", "Human: 你好\n\nAssistant: ", max_tokens=8)
    assert (reply.text, reply.model_reported, reply.finish_reason, reply.attempts) == ("你好", "engine-1", "length", 1)
    assert server.requests[0][:2] == ("/v1/completions",
                                      {"model": "engine", "prompt": "Human: 你好\n\nAssistant: ", "max_tokens": 8})


def test_a_rerun_over_the_cache_sends_nothing(tmp_path):
    path = tmp_path / "cache" / "judge.jsonl"

    def script(path, body, n):
        content = body["messages"][0]["content"]
        return {"unparsable": chat_reply("嗯"), "bad": error_reply(400, "bad request")}.get(
            content, chat_reply(f"得分：0.{content}"))

    messages = ["1", "2", "unparsable", "3", "bad"]
    with OpenAIServer(script) as server:
        first = judge(server, cache=JudgeCache(path)).judge_all(messages)
        sent = len(server.requests)
        again = judge(server, cache=JudgeCache(path))
        second = again.judge_all(messages)
    assert [x.status for x in first] == ["scored", "scored", "judge_unparsed", "scored", "judge_error"]
    assert sent == 6  # one each, two for the unparsable one (the re-ask)
    assert len(server.requests) == sent + 1 and again.requests == 1  # only the judge_error item was asked again
    assert again.cache_hits == 4
    assert [(x.status, x.score, x.reply, x.judge_model) for x in second[:4]] == \
        [(x.status, x.score, x.reply, x.judge_model) for x in first[:4]]
    assert all(x.cached and x.attempts == 0 for x in second[:4]) and not second[4].cached
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4  # errors are never cached


def test_the_cache_key_holds_model_template_request_sampling_and_url(tmp_path):
    messages = [{"role": "user", "content": "q"}]
    base = cache_key("m", "v1", messages, {"temperature": 0}, "http://a/v1")
    others = [cache_key("m2", "v1", messages, {"temperature": 0}, "http://a/v1"),
              cache_key("m", "v2", messages, {"temperature": 0}, "http://a/v1"),
              cache_key("m", "v1", [{"role": "user", "content": "q2"}], {"temperature": 0}, "http://a/v1"),
              cache_key("m", "v1", messages, {"temperature": 0, "max_tokens": 8}, "http://a/v1"),
              cache_key("m", "v1", messages, {"temperature": 0}, "http://b/v1")]
    assert len({base, *others}) == 6
    assert cache_key("m", "v1", messages, {"max_tokens": 8, "temperature": 0}, "http://a/v1") == others[3]
    with OpenAIServer(scripted(chat_reply("得分：1"))) as server:
        cache = JudgeCache(tmp_path / "judge.jsonl")
        judge(server, cache=cache).judge_all(["q"])
        judge(server, cache=cache, template_version="test-v2").judge_all(["q"])
        judge(server, cache=cache, sampling={"temperature": 0.7}).judge_all(["q"])  # sampled: never cached
        judge(server, cache=cache, sampling={"temperature": 0.7}).judge_all(["q"])
    assert len(server.requests) == 4 and len(cache) == 2


def test_a_torn_last_line_is_discarded_and_a_damaged_middle_line_refused(tmp_path):
    path = tmp_path / "judge.jsonl"
    cache = JudgeCache(path)
    cache.put("a", {"status": "scored", "score": 0.5})
    cache.put("b", {"status": "judge_unparsed", "score": None})
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"key": "c", "status": "sco')  # a writer killed mid-line
    reopened = JudgeCache(path)
    assert (len(reopened), reopened.get("b"), reopened.get("c")) == (2, {"status": "judge_unparsed", "score": None},
                                                                     None)
    assert path.read_bytes() == whole  # cut off, so the next line starts on a line of its own
    reopened.put("c", {"status": "scored", "score": 1.0})
    assert JudgeCache(path).get("c") == {"status": "scored", "score": 1.0}

    path.write_bytes(whole + b'{"key": "c", "sta\n')  # unparsable but newline-terminated, still the last line
    assert len(JudgeCache(path)) == 2 and path.read_bytes() == whole

    lines = whole.split(b"\n")
    path.write_bytes(lines[0] + b"\n" + b'{"key": "x", "sta\n' + lines[1] + b"\n")
    with pytest.raises(ValueError, match=r"judge\.jsonl:2: judge cache line is damaged .*: delete the file to judge"):
        JudgeCache(path)
    assert json.loads(path.read_bytes().split(b"\n")[0])["key"] == "a"  # a refused file is left as it was
