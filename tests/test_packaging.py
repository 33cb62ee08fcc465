"""Every Python package folder ships, and the config tree ships inside the launcher package."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    inits = [p for top in ("launcher", "belle") for p in (ROOT / top).rglob("__init__.py")]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in inits}
    assert found | {"launcher.conf", "launcher.cluster"} == listed


def test_config_tree_is_importable_as_package_data():
    import launcher.conf

    conf = Path(launcher.conf.__file__).parent
    assert (conf / "config.yaml").is_file() and (conf / "exp" / "lora_2m.yaml").is_file()


def test_lower_bounds_are_the_tested_versions_where_older_ones_break():
    """A GPU cluster installs without constraints-cpu.txt: the bounds alone must exclude the DeepSpeed and
    transformers releases that fail LoRA + ZeRO-3 + non-reentrant checkpointing, and admit the tested pins."""
    from packaging.requirements import Requirement

    deps = {r.name: r for r in map(Requirement, tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"])}
    pins = dict(line.split("==") for line in (ROOT / "constraints-cpu.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, pinned in pins.items():
        assert deps[name].specifier.contains(pinned), f"{name} {pinned} is outside {deps[name].specifier}"
    for name in ("deepspeed", "transformers"):
        assert not deps[name].specifier.contains("0.19.7" if name == "deepspeed" else "5.22.0"), name
