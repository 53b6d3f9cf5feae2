"""The folder -> package mapping in pyproject.toml lists every subpackage (see DESIGN.md §1)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_folder_with_init_is_a_listed_package() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = cfg["package-dir"]
    listed = set(cfg["packages"])
    assert set(mapping) == listed, "package-dir and packages must name the same packages"
    found = set()
    for top in ("realtime", "model", "export"):
        for init in (ROOT / top).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(ROOT).as_posix()
            found.add("emostream." + rel.replace("/", "."))
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but missing: {sorted(listed - found)}"
    for pkg, folder in mapping.items():
        assert pkg == "emostream." + folder.replace("/", "."), f"{pkg} maps to an unexpected folder {folder}"


def test_console_script_points_at_a_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["emostream"] == "emostream.realtime.cli:main"
    from emostream.realtime.cli import main

    assert main(["--help-commands"]) == 0


def test_every_subcommand_module_exists() -> None:
    import importlib

    from emostream.realtime.cli import SUBCOMMANDS

    for command, (module, func) in SUBCOMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), command


def test_bench_lists_the_benchmarks(capsys) -> None:
    from emostream.realtime.cli import main

    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "engines" in out
    assert main(["bench", "nope"]) == 2
