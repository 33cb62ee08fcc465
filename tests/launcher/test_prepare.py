"""`launcher.prepare=true` prepares the data once and says what it holds; a bad record stops a launch before Ray."""

import json

from belle.data.generate import generate_instruction_records


def test_prepare_prints_the_cache_then_reuses_it_and_the_plan_turns_exact(cli, tmp_path):
    args = ("launcher.prepare=true", f"launcher.run_dir={tmp_path / 'run'}", "data.max_length=160",
            f"data.cache_dir={tmp_path / 'cache'}")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert f"data cache {tmp_path / 'cache'}/sft-160-" in first.stdout and "prepared in" in first.stdout
    assert "records 4200, samples 4200" in first.stdout and "padding" in first.stdout
    assert "truncated 0, dropped (no answer token left) 0" in first.stdout
    second = cli(*args)
    assert second.returncode == 0 and "(reused)" in second.stdout and "prepared in" not in second.stdout
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    meta = json.loads(next((tmp_path / "cache").glob("sft-160-*/meta.json")).read_text())
    rows = meta["splits"]["train"]["rows"]
    assert plan["data"]["source"].startswith("exact: prepared cache")
    assert plan["schedule"]["steps_per_epoch"] == rows // 2 // 4  # world 2, micro 2 x accumulation 2, rounded down
    assert plan["batch"]["samples_per_step"] == round(8 * meta["splits"]["train"]["samples"] / rows, 1)


def test_a_bad_last_record_fails_the_launch_before_any_worker(cli, tmp_path):
    """Case 49 of the bad-inputs review: a real data group sets data.num_samples, so only the prepare step reads
    the whole file."""
    lines = [json.dumps(r, ensure_ascii=False) for r in generate_instruction_records(20_000)]
    data = tmp_path / "big.jsonl"
    data.write_text("\n".join([*lines, '{"instruction": "问", "outptu": "答"}']) + "\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    out = cli(f"data.path={data}", "data.num_samples=20001", f"launcher.run_dir={run_dir}",
              f"data.cache_dir={tmp_path / 'cache'}")
    assert out.returncode == 2  # bad input, though found only when the whole file was read
    assert out.stderr.startswith(f"error: {data}:20001: record has neither instruction/output nor conversations")
    assert len(out.stderr.splitlines()) == 1
    assert "Ray" not in out.stdout, "no worker was started"
    assert not run_dir.exists(), "a launch refused for bad input leaves nothing behind"
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
