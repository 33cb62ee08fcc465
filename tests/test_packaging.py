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
