"""method=generate and method=eval refuse bad input in one line that names the fix, before anything starts."""

import json

import pytest
from composed import refusal


@pytest.fixture
def launch(cfg, tmp_path, workers_env):
    """Overrides → the one-line refusal of a launch (nothing starts: every check runs before Ray)."""
    return lambda *o: refusal(cfg, f"launcher.run_dir={tmp_path / 'run'}", "monitor=off", *o)


@pytest.mark.parametrize("overrides,fix", [
    (("method=generate", "method.generate.num_samples=4"), "set method.generate.temperature=0.7 or "
                                                            "method.generate.num_samples=1"),
    (("method=generate", "method.generate.top_p=0.9"), "temperature 0 is greedy"),
    (("method=generate", "method.generate.engine=vllm"), "engine=vllm loads the model from a folder: set model.path"),
    (("method=generate", "method.generate.gpu_memory_utilization=0.5"), "read by engine=vllm only"),
    (("method=generate", "method.generate.engine=vllm", "model=llama_7b", "model.path=/models/7b",
      "launcher.dry_run=true", "cluster.gpus_per_node=1", "strategy.precision=bf16", "method.generate.batch=256"),
     "or set method.generate.engine=hf strategy=zero3 to partition the weights"),
    (("method=generate", "method.generate.engine=openai"), "set method.generate.url=http://HOST:PORT/v1"),
    (("method=generate", "method.generate.url=http://h:1/v1"), "read by engine=openai only"),
    (("method=generate", "method.generate.max_new_tokens=2000"), "exceed model.max_position_embeddings=1024"),
    (("method=generate", "data=sample_preference"), "set data=sample_prompts"),
    (("method=eval", "method.generate.num_samples=2", "method.generate.temperature=0.7"),
     "set method.generate.num_samples=1"),
    (("eval=sample", "eval.judge.url=http://h:1/v1", "eval.judge.model=m", "eval.generate.num_samples=2",
      "eval.generate.temperature=0.7"), "set eval.generate.num_samples=1"),  # before the training, not after it
    (("eval=sample", "eval.scorer=rule", "train.eval_generate_every=5", "eval.generate.engine=openai",
      "eval.generate.url=http://h:1/v1", "eval.generate.served_model=m"), "set eval.generate.engine=hf"),
    (("method=eval",), "set eval.judge.url=http://HOST:PORT/v1 and eval.judge.model=NAME"),
    (("method=eval", "eval.judge.url=ftp://x", "eval.judge.model=m"), "set eval.judge.url=http://HOST:PORT/v1"),
    (("method=eval", "eval.judge.model_path=/models/judge", "eval.judge.url=http://h:1/v1"), "two judges"),
    (("method=eval", "eval.judge.model_path=/models/judge"), "eval.judge.model_path=/models/judge has no config.json"),
    (("method=eval", "eval.judge.api_key_env=sk-abc123"), "export the key there"),
    (("method=eval", "eval=sample"), "method=eval reads its eval set from data.path"),
    (("eval=sample",), "set eval.judge.url=http://HOST:PORT/v1"),  # a training job's evaluation, refused up front
    (("method=rm", "data=sample_preference", "eval=sample"), "exports a reward model"),
    (("eval=sample", "eval.judge.url=http://h:1/v1", "eval.judge.model=m", "cluster=slurm"),
     "submit method=eval model.path=<the run dir> once the job completes"),
])
def test_refusals(launch, overrides, fix):
    assert fix in launch(*overrides)


def test_lora_settings_on_a_job_that_trains_nothing_are_refused():
    from belle.config.generate import GenerateConfig
    from belle.config.method import LoraConfig, MethodConfig

    with pytest.raises(ValueError, match="trains nothing, so method.lora is unread"):
        MethodConfig(name="eval", lora=LoraConfig(), generate=GenerateConfig())


def test_an_eval_set_class_without_a_judge_prompt_is_refused_naming_it(launch, tmp_path):
    items = tmp_path / "set.json"
    items.write_text(json.dumps([{"question": "q1", "std_answer": "", "class": "poetry"},
                                 {"question": "q2", "std_answer": "a", "class": "open qa"}]), encoding="utf-8")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"class": "open QA", "prompt": "评价。"}, ensure_ascii=False) + "\n",
                       encoding="utf-8")
    message = launch("method=eval", f"data.path={items}", f"eval.prompts={prompts}", "eval.judge.url=http://h:1/v1",
                     "eval.judge.model=m")
    assert "'poetry' (1 item" in message and str(prompts) in message


def test_the_bundled_judge_prompts_are_refused_for_another_eval_set(launch, tmp_path):
    items = tmp_path / "set.jsonl"
    items.write_text(json.dumps({"question": "q", "std_answer": "", "class": "generation"}) + "\n", encoding="utf-8")
    message = launch("method=eval", f"data.path={items}", "eval.judge.url=http://h:1/v1", "eval.judge.model=m")
    assert "set eval.prompts=<the judge prompts of your eval set>" in message


def test_a_folder_that_is_no_model_nor_adapter_is_refused(launch, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in launch("method=generate", f"model.path={tmp_path / 'empty'}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    assert "names no base model" in launch("method=generate", f"model.path={adapter}")


def test_keys_a_generation_never_reads_are_refused_on_the_command_line(cli):
    done = cli("method=generate", "optim.lr=1e-4", "launcher.dry_run=true")
    assert done.returncode == 2
    assert "optim.lr is not read by method=generate" in done.stderr and done.stderr.count("\n") == 1


def test_engine_vllm_reads_no_zero_stage(tmp_path):
    from composed import compose_job

    from belle.recipes import recipe

    job = compose_job("method=generate", "method.generate.engine=vllm", "model.path=/models/x",
                      "launcher.dry_run=true")
    recipe("generate").check(job, {"strategy.precision"}, tmp_path)
    with pytest.raises(ValueError, match=r"^strategy.zero_stage is not read by method=generate with engine=vllm, "):
        recipe("generate").check(job, {"strategy.zero_stage"}, tmp_path)
