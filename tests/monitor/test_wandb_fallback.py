"""W&B online without a key is refused before the launch (one line naming the fix); online with the server
unreachable logs offline instead, said in one line with how to upload later: on the submitting host before Ray, and
in rank 0. Real sockets on 127.0.0.1: a bound port that does not listen, and a running HTTP server."""

import http.server
import socket
import threading

import pytest

from belle.config.run import MonitorConfig
from belle.monitor import wandb_run
from belle.monitor.wandb_run import check_wandb, reachable, start_wandb, usable_mode

KEY = "k" * 40
PROXIES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_and_a_fresh_check(monkeypatch):
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    wandb_run._reachable_or_said.cache_clear()
    yield
    wandb_run._reachable_or_said.cache_clear()


@pytest.fixture
def closed_url():
    """http://127.0.0.1:PORT where PORT is bound by this test but not listening: a connection is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"


@pytest.fixture
def server_url():
    """A real HTTP server on 127.0.0.1, for the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _fallback_line(url: str) -> str:
    return (f"W&B server {url} is unreachable from {socket.gethostname()} (no connection within 3 s): logging "
            "offline instead; `wandb sync` uploads the run later (the command is printed when it starts)")


@pytest.mark.parametrize(("mode", "exported", "asked"), [
    ("online", None, "monitor.wandb_mode=online"), ("auto", "online", "WANDB_MODE=online"),
    ("auto", "run", "WANDB_MODE=run"),
])
def test_online_without_a_key_is_refused(wandb_env, monkeypatch, mode, exported, asked):
    if exported:
        monkeypatch.setenv("WANDB_MODE", exported)
    with pytest.raises(ValueError) as refused:
        check_wandb(mode)
    assert str(refused.value) == (
        f"{asked} asks for W&B online but no API key is set for https://api.wandb.ai: export WANDB_API_KEY or run "
        "`wandb login`, or set monitor.wandb_mode=offline")


def test_a_netrc_entry_for_the_server_is_a_key(wandb_env, monkeypatch, server_url):
    monkeypatch.setenv("WANDB_BASE_URL", server_url)
    netloc = server_url.removeprefix("http://")  # `wandb login` names the machine host:port
    (wandb_env / "netrc").write_text(f"machine {netloc}\n  login user\n  password {KEY}\n")
    check_wandb("online")
    assert usable_mode("online") == "online"


def test_no_key_and_no_online_ask_is_offline_without_a_word(wandb_env, capsys):
    check_wandb("auto")
    check_wandb("offline")
    assert usable_mode("auto") == "offline" and capsys.readouterr().out == ""


def test_an_unreachable_server_falls_back_to_offline_in_one_line(wandb_env, monkeypatch, capsys, closed_url):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", closed_url)
    assert not reachable(closed_url)
    check_wandb("online")
    assert capsys.readouterr().out.splitlines() == [_fallback_line(closed_url)]
    assert usable_mode("online") == "offline" and usable_mode("auto") == "offline"
    assert capsys.readouterr().out == ""  # said once a process


def test_a_reachable_server_stays_online(wandb_env, monkeypatch, capsys, server_url):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", server_url)
    check_wandb("online")
    assert usable_mode("online") == "online" and capsys.readouterr().out == ""


def test_rank_0_logs_offline_when_the_server_is_unreachable(wandb_env, monkeypatch, capsys, closed_url):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", closed_url)
    run_dir = wandb_env / "run"
    run = start_wandb(MonitorConfig(wandb_mode="online"), run_dir, "demo", {}, resume_step=None)
    run.finish(0)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == _fallback_line(closed_url)
    assert lines[-1] == f"W&B is offline; upload this run with: wandb sync {offline}"


def test_the_check_goes_to_the_proxy_the_environment_sets(monkeypatch, server_url, closed_url):
    monkeypatch.setenv("HTTPS_PROXY", server_url)
    assert reachable("https://wandb.example.invalid")  # through the proxy: the server itself is never looked up
    monkeypatch.setenv("NO_PROXY", "wandb.example.invalid")
    assert not reachable("https://wandb.example.invalid")
    monkeypatch.setenv("HTTPS_PROXY", closed_url)
    monkeypatch.delenv("NO_PROXY")
    assert not reachable("https://wandb.example.invalid")


def test_the_launch_checks_before_anything_starts(cfg, tmp_path, wandb_env, monkeypatch, capsys, closed_url):
    """In the launcher's validation: refused without a key (nothing written); with a key and no server, the launch
    goes on, offline, after the one line."""
    import launcher.app

    started = []
    monkeypatch.setattr(launcher.app, "_start", lambda job, *_: started.append(job))
    args = ("monitor.wandb_mode=online", f"launcher.run_dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match="asks for W&B online but no API key is set"):
        launcher.app.run(cfg(*args))
    assert not (tmp_path / "run").exists() and not started
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", closed_url)
    launcher.app.run(cfg(*args))
    assert len(started) == 1 and _fallback_line(closed_url) in capsys.readouterr().out.splitlines()
