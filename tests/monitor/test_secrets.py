"""Secret-looking config keys are redacted, ordinary ones that merely mention tokens are kept."""

from belle.monitor.secrets import REDACTED, scrub


def test_scrub():
    config = {
        "wandb": {"api_key": "k", "WANDB_API_KEY": "k"},
        "hub": [{"hf_token": "t", "token": "t", "db_password": "p", "client_secret": "s"}],
        "model": {"tokenizer_path": "tok/", "max_new_tokens": 64},
        "data": {"mean_tokens": 300},
    }
    assert scrub(config) == {
        "wandb": {"api_key": REDACTED, "WANDB_API_KEY": REDACTED},
        "hub": [{"hf_token": REDACTED, "token": REDACTED, "db_password": REDACTED, "client_secret": REDACTED}],
        "model": {"tokenizer_path": "tok/", "max_new_tokens": 64},
        "data": {"mean_tokens": 300},
    }
