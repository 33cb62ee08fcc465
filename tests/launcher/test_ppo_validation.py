"""PPO's model folders and resume, refused before anything starts in one line naming the fix: a reward model that is
a causal LM, missing, or with another vocabulary or tokenizer than the policy; a resume on other world sizes or ZeRO
stages, or with a frozen folder changed since the checkpoint. And the summary of a run that method.ppo.stop_kl ended
says so. No Ray."""

import contextlib
import dataclasses
import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from belle import checkpoint
from belle.model.architecture import check_model_path, check_same_tokenizer, folder_fingerprint
from belle.model.tokenizer import tiny_tokenizer
from belle.rlhf.state import check_resume, frozen_fingerprints, prompts_fingerprint
from belle.rundir import CONTROLLER
from launcher.app import run
from launcher.errors import explain

PPO = ("+exp=ppo_7b", "+smoke=tiny")
"""A reward model scores the responses, and the critic starts from it; the policy is tiny_llama (no folder)."""
WORLDS = {"actor": 2, "critic": 2, "reward": 2}


def _reward_model(folder, model, architecture="LlamaForSequenceClassification", tokenizer=True, **numbers):
    """A reward model's export folder with ``model``'s numbers (``numbers`` changed) and the tiny tokenizer."""
    folder.mkdir()
    config = {"model_type": model.arch, "architectures": [architecture], "vocab_size": model.vocab_size,
              "hidden_size": model.hidden_size, "num_hidden_layers": model.num_layers} | numbers
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"weights": np.zeros(1, np.float32)}, folder / "model.safetensors")  # whole: the folder check reads it
    if tokenizer:
        tiny_tokenizer().save_pretrained(folder)
    return folder


def _refused(cfg, tmp_path, *overrides) -> str:
    """The one-line error of a launch-like preview with these overrides."""
    with pytest.raises(ValueError) as info:
        run(cfg(*PPO, "launcher.preview=1", f"launcher.run_dir={tmp_path / 'run'}", *overrides))
    message = explain(info.value)
    assert "\n" not in message
    return message


def test_a_missing_reward_model_folder_is_named(cfg, tmp_path):
    message = _refused(cfg, tmp_path, f"method.ppo.reward_model={tmp_path / 'nowhere'}")
    assert message == (f"method.ppo.reward_model={tmp_path / 'nowhere'} does not exist: point method.ppo.reward_model "
                       "at a reward model's export folder (the export/ of a method=rm run)")


def test_a_causal_lm_is_no_reward_model(cfg, job, tmp_path):
    folder = _reward_model(tmp_path / "sft", job(*PPO).model, architecture="LlamaForCausalLM")
    assert _refused(cfg, tmp_path, f"method.ppo.reward_model={folder}") == (
        f"method.ppo.reward_model={folder} holds a LlamaForCausalLM, not a reward model (…ForSequenceClassification): "
        "point method.ppo.reward_model at a reward model's export folder (the export/ of a method=rm run)")


def test_a_reward_model_of_another_vocabulary_size(cfg, job, tmp_path):
    folder = _reward_model(tmp_path / "rm", job(*PPO).model, vocab_size=32000)
    assert _refused(cfg, tmp_path, f"method.ppo.reward_model={folder}") == (
        f"method.ppo.reward_model={folder} has vocab_size=32000 but the policy's is 4096: a reward model must score "
        "the policy's tokens: point method.ppo.reward_model at a reward model trained with the policy's tokenizer "
        "(method=rm from the policy or its base)")


def test_a_reward_model_with_another_tokenizer(cfg, job, tmp_path):
    folder = _reward_model(tmp_path / "rm", job(*PPO).model)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[100:102]  # two tokens swap ids: same size, other vocabulary
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    message = _refused(cfg, tmp_path, f"method.ppo.reward_model={folder}")
    assert message.startswith(f"method.ppo.reward_model={folder} has another tokenizer than the policy's (")
    assert message.endswith("its tokenizer.json holds another vocabulary: point method.ppo.reward_model at a reward "
                            "model trained with the policy's tokenizer (method=rm from the policy or its base)")


def test_a_reward_model_export_passes(job, tmp_path):
    j = job(*PPO)
    folder = _reward_model(tmp_path / "rm", j.model)
    check_model_path(dataclasses.replace(j.model, path=str(folder)), "method.ppo.reward_model", policy=j.model)
    check_same_tokenizer(str(folder), "method.ppo.reward_model", tiny_tokenizer().name_or_path)
    # formatted otherwise, with merges in the older "a b" notation: the same vocabulary is the same tokenizer
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["model"]["merges"] = [" ".join(pair) for pair in tokenizer["model"]["merges"]]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, indent=4))
    check_same_tokenizer(str(folder), "method.ppo.reward_model", tiny_tokenizer().name_or_path)


def _checkpoint(run_dir, job, step=2, worlds=WORLDS, stage=3):
    """A PPO checkpoint of ``step`` as the controller writes it (its controller.json; no role states)."""
    folder = checkpoint.begin(run_dir, step)
    roles = {role: {"world": world, "zero_stage": stage} for role, world in worlds.items()}
    (folder / CONTROLLER).write_text(json.dumps({"step": step, "roles": roles, "frozen": frozen_fingerprints(job),
                                                 "prompts": prompts_fingerprint(job)}))
    checkpoint.commit(run_dir, step, keep_last=2)
    return folder


def _resume_error(job, folder, worlds=WORLDS) -> str:
    with pytest.raises(ValueError) as info:
        check_resume(job, folder, worlds)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_resume_on_another_world_size_or_zero_stage_is_refused(job, tmp_path):
    j = job(*PPO)
    folder = _checkpoint(tmp_path, j, worlds={"actor": 4, "critic": 4, "reward": 4})
    assert _resume_error(j, folder) == (
        "checkpoint step-000002 holds roles.actor saved on 4 ranks with ZeRO-3, but this run places it on 2 ranks "
        "with ZeRO-3: place it as before (roles.actor.zero_stage=3, 4 workers) or start a new run "
        "(launcher.run_dir=<a new folder>)")
    folder = _checkpoint(tmp_path, j, stage=2)
    assert "saved on 2 ranks with ZeRO-2, but this run places it on 2 ranks with ZeRO-3" in _resume_error(j, folder)


def test_a_resume_with_a_changed_frozen_folder_is_refused(job, tmp_path):
    folder = _reward_model(tmp_path / "rm", job(*PPO).model, tokenizer=False)
    j = job(*PPO, f"method.ppo.reward_model={folder}")
    saved = _checkpoint(tmp_path / "run", j)
    assert json.loads((saved / CONTROLLER).read_text())["frozen"] == {"reference": None,  # built from numbers
                                                                   "reward": folder_fingerprint(str(folder))}
    check_resume(j, saved, WORLDS)  # unchanged: resumes

    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten since
    assert _resume_error(j, saved) == (
        f"checkpoint step-000002 was saved with method.ppo.reward_model={folder} as it was then, but its config.json "
        "or weight files have changed since: put that folder back as it was, or start a new run "
        "(launcher.run_dir=<a new folder>)")


def test_a_resume_on_replaced_prompts_is_refused_and_a_touched_file_resumes(job, tmp_path):
    from belle.data.generate import SAMPLES_DIR

    prompts = tmp_path / "prompts.jsonl"
    lines = (SAMPLES_DIR / "prompts.jsonl").read_text().splitlines(keepends=True)
    prompts.write_text("".join(lines))
    j = job(*PPO, f"data.path={prompts}")
    saved = _checkpoint(tmp_path / "run", j)
    os.utime(prompts, ns=(prompts.stat().st_atime_ns, prompts.stat().st_mtime_ns + 10**9))  # touched, same bytes
    check_resume(j, saved, WORLDS)

    prompts.write_text("".join(reversed(lines)))  # the same prompts in another order: other prompts at the cursor
    assert _resume_error(j, saved) == (
        f"checkpoint step-000002 was trained on the prompts of data.path={prompts} as they were then, but their files "
        "have changed since: put them back as they were to resume, or start a new run on the new prompts "
        "(launcher.run_dir=<a new folder>)")


def test_the_launcher_refuses_a_resume_before_anything_starts(cfg, job, tmp_path, monkeypatch):
    """The checks run in the launch's validation: a checkpoint saved on 4 ranks stops the launch before Ray."""
    import launcher.app

    args = (*PPO, f"launcher.run_dir={tmp_path / 'run'}", "monitor.wandb_mode=offline")
    run(cfg(*args, "launcher.dry_run=true"))  # the run's files, as its first launch wrote them
    _checkpoint(tmp_path / "run", job(*args), worlds={"actor": 4, "critic": 4, "reward": 4})
    monkeypatch.setattr(launcher.app, "_start", lambda *_: pytest.fail("the launch started"))
    with pytest.raises(ValueError, match="holds roles.actor saved on 4 ranks with ZeRO-3, but this run places it on 2"):
        run(cfg(*args))


def test_a_kl_stop_is_the_summarys_note(job, tmp_path, monkeypatch, capsys):
    """The backend's outcome (restarts, why the recipe stopped early) reaches summary.json and the last line."""
    from launcher.backends import Outcome, pools
    from launcher.launch import launch

    note = "KL 12.3 > method.ppo.stop_kl=10 at step 3"

    def run(job, run_dir):
        (run_dir / "metrics.jsonl").write_text('{"step": 3, "kl": 12.3}\n')
        return Outcome(restarts=0, note=note)

    monkeypatch.setattr("launcher.backends.ray_cluster.ray_for", lambda job: contextlib.nullcontext())
    monkeypatch.setattr(pools, "run", run)
    summary = launch(job(*PPO), tmp_path)
    assert (summary["status"], summary["steps"], summary["restarts"], summary["note"]) == ("completed", 3, 0, note)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert capsys.readouterr().out.rstrip().endswith(f"; {note}")
