"""Jobs composed in-process exactly as ``python -m launcher`` composes them, for tests whose fixtures are wider than
one test (the ``job`` fixture of tests/conftest.py is per test)."""

def compose_job(*overrides: str):
    """The typed job of ``python -m launcher OVERRIDES monitor=off``."""
    from hydra import compose, initialize_config_module

    from belle.model.tokenizer import tiny_tokenizer
    from launcher.compose import to_job
    from launcher.store import register

    register()
    tiny_tokenizer()
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        return to_job(compose(config_name="config", overrides=[*overrides, "monitor=off"]))


def refusal(cfg, *overrides: str) -> str:
    """The one-line message ``python -m launcher OVERRIDES`` would print for a job it refuses (``cfg``: the
    composing fixture of tests/conftest.py)."""
    import pytest
    from hydra.errors import HydraException

    from launcher.app import run
    from launcher.errors import explain

    with pytest.raises((ValueError, HydraException)) as info:
        run(cfg(*overrides))
    message = explain(info.value)
    assert "\n" not in message
    return message
