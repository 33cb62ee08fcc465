"""A credential typed into cluster.setup (or srun_args, sbatch_extra) in any shell shape is refused in one line that
names the fix and never echoes the value; lines that only refer to a credential, or merely mention tokens, stay
allowed."""

import pytest

from belle.config import ClusterConfig

SECRET_VALUE = "hf_abc123"
TOKEN = "hf_" + "a1B2" * 8  # shaped like a Hugging Face token

FIX = ("a literal value (entry {n}), which would be written to config.yaml, the sbatch script and the console: "
       "export it in your shell before submitting (the job inherits your environment) and write ${name} there, or "
       "read it from a file there ({name}=$(cat <file>))")


@pytest.mark.parametrize("line, gives, name", [
    (f"export HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"module load cuda; export HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"module load cuda && export HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"echo x | HF_TOKEN={SECRET_VALUE} cmd", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"FOO=1 HF_TOKEN={SECRET_VALUE} cmd", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"export A=1 HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"env WANDB_API_KEY={SECRET_VALUE} python train.py", "sets WANDB_API_KEY to", "WANDB_API_KEY"),
    (f"declare -x HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to", "HF_TOKEN"),
    (f"export MY_SECRET='{SECRET_VALUE}'", "sets MY_SECRET to", "MY_SECRET"),
    (f"# export HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to", "HF_TOKEN"),  # a comment is written too
    (f"huggingface-cli login --token {SECRET_VALUE}", "passes --token", "TOKEN"),
    (f"huggingface-cli login --token={SECRET_VALUE}", "passes --token", "TOKEN"),
    (f"tool --password={SECRET_VALUE}", "passes --password", "TOKEN"),
    (f"tool --password {SECRET_VALUE}", "passes --password", "TOKEN"),
    (f"tool --api-key {SECRET_VALUE}", "passes --api-key", "TOKEN"),
    (f"wandb login {SECRET_VALUE}", "passes the argument of `login`", "TOKEN"),
    (f"wandb login --relogin {SECRET_VALUE}", "passes the argument of `login`", "TOKEN"),
])
def test_a_literal_credential_in_a_setup_line_is_refused(line, gives, name):
    with pytest.raises(ValueError) as refused:
        ClusterConfig(kind="slurm", setup=["module load cuda/12", line])
    message = str(refused.value)
    assert message == f"cluster.setup {gives} " + FIX.format(n=2, name=name)
    assert SECRET_VALUE not in message and "\n" not in message


@pytest.mark.parametrize("line, what", [
    (f'curl -H "Authorization: Bearer {TOKEN}" https://example.com/x', "an Authorization header"),
    (f"git clone https://user:{TOKEN}@example.com/repo.git", "a password in a URL"),
    (f"echo {TOKEN} > ~/.cache/huggingface/token", "a Hugging Face token (hf_…)"),
    (f"printf %s {TOKEN} | huggingface-cli login --token-stdin", "a Hugging Face token (hf_…)"),
    (f'bash -c "export HF_TOKEN={TOKEN}"', "a Hugging Face token (hf_…)"),
    (f"tool -t ghp_{'x' * 36}", "a GitHub token"),
    (f"export AWS_ACCESS_KEY_ID=AKIA{'A' * 16}", "an AWS access key"),
])
def test_text_shaped_like_a_credential_is_refused_whatever_carries_it(line, what):
    with pytest.raises(ValueError) as refused:
        ClusterConfig(kind="slurm", setup=[line])
    message = str(refused.value)
    assert message == f"cluster.setup holds {what} as " + FIX.format(n=1, name="TOKEN")
    assert TOKEN not in message and "\n" not in message


@pytest.mark.parametrize("key, line, gives", [
    ("sbatch_extra", f"--export=ALL,HF_TOKEN={SECRET_VALUE}", "sets HF_TOKEN to"),
    ("srun_args", f"--container-env-token={SECRET_VALUE}", "passes --container-env-token"),
])
def test_a_literal_credential_in_other_written_lines_is_refused(key, line, gives):
    with pytest.raises(ValueError, match=f"^cluster.{key} {gives} a literal value \\(entry 1\\)") as refused:
        ClusterConfig(kind="slurm", **{key: [line]})
    assert SECRET_VALUE not in str(refused.value)


@pytest.mark.parametrize("line", [
    "source venv/bin/activate",
    "export TOKENIZERS_PARALLELISM=false",
    "module load cuda/12",
    "export HF_TOKEN=$HF_TOKEN",
    'export HF_TOKEN="$HF_TOKEN"',
    "export HF_TOKEN=${HF_TOKEN:-}",
    "export HF_TOKEN=$(cat ~/.hf_token)",
    'export HF_TOKEN="$(cat ~/.hf_token)"',
    "export HF_TOKEN=",
    "export MAX_NEW_TOKENS=64",
    'huggingface-cli login --token "$HF_TOKEN"',
    'wandb login "$WANDB_API_KEY"',
    "huggingface-cli login",
    "docker login registry.example.com",
    "docker login --password-stdin ghcr.io < ~/.ghcr",
    "tool --password-file ~/.pw",
    'curl -H "Authorization: Bearer $HF_TOKEN" https://example.com/x',
    "git clone https://github.com/org/repo.git",
    "git clone https://user@example.com/repo.git",
    'git clone "https://user:$GIT_TOKEN@example.com/repo.git"',
    "git checkout 0123456789abcdef0123456789abcdef01234567",
    "pip install --index-url http://localhost:8080/simple pkg",
])
def test_lines_that_only_refer_to_a_credential_stay_allowed(line):
    assert ClusterConfig(kind="slurm", setup=[line]).setup == [line]


@pytest.mark.parametrize("line, message", [
    ('echo "unterminated', "cluster.setup entry 1 is not valid shell (No closing quotation): fix it"),
    ("module load a \\", "cluster.setup entry 'module load a \\\\' ends with a line continuation"),
])
def test_a_setup_line_the_job_could_not_run_as_written_is_refused(line, message):
    with pytest.raises(ValueError) as refused:
        ClusterConfig(kind="slurm", setup=[line])
    assert str(refused.value).startswith(message)
