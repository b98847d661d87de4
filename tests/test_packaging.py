"""The wheel installs whole: every module, the napari manifest and the sample data; dependencies match the imports."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from npe2 import PluginManifest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES, MAX_CLASS_LINES = 450, 200
# What the build reads; copied away so the build leaves nothing in the working tree.
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "LICENSE", "napari_dmd", "sample_data")


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A copy of the sources the wheel is built from."""
    src = tmp_path_factory.mktemp("wheel") / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    return src


@pytest.fixture(scope="module")
def wheel(src) -> Path:
    """A wheel built offline from the copy (no index, the installed setuptools)."""
    out = src.parent / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
           "-w", str(out), str(src)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = out.glob("napari_dmd-*.whl")
    return path


def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def metadata(wheel: Path, file: str) -> str:
    (name,) = [n for n in names(wheel) if n.endswith(f".dist-info/{file}")]
    with zipfile.ZipFile(wheel) as z:
        return z.read(name).decode()


def test_wheel_holds_every_module_and_the_manifest(src, wheel):
    inside = names(wheel)
    expected = {p.relative_to(src).as_posix() for p in (src / "napari_dmd").rglob("*.py")}
    assert expected - inside == set(), "modules missing from the wheel; list their package in setup.cfg"
    assert "napari_dmd/napari.yaml" in inside
    assert "napari-dmd = napari_dmd:napari.yaml" in metadata(wheel, "entry_points.txt")


def test_wheel_holds_the_licence(src, wheel):
    assert metadata(wheel, "licenses/LICENSE") == (src / "LICENSE").read_text()
    assert "License-Expression: BSD-3-Clause" in metadata(wheel, "METADATA")
    assert "BSD 3-Clause License" in (src / "LICENSE").read_text()


def test_no_module_or_class_is_a_hall():
    """Small rooms: no module of the package over 450 lines, no class over 200 (each offender listed)."""
    offenders = []
    for path in sorted((ROOT / "napari_dmd").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            offenders.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                offenders.append(f"{name}: class {node.name} {node.end_lineno - node.lineno + 1} lines")
    assert offenders == []


def test_wheel_holds_the_sample_data(src, wheel):
    inside = names(wheel)
    sample = src / "sample_data"
    files = [p.relative_to(sample).as_posix() for p in sample.rglob("*") if p.is_file()]
    assert any(f.startswith("imagesTr/") for f in files) and any(f.startswith("labelsTr/") for f in files)
    assert "dataset.json" in files
    missing = {f for f in files if f"napari_dmd/_sample/{f}" not in inside}
    assert missing == set()


def test_manifest_sample_command_loads_files_from_the_installed_wheel(src, wheel, tmp_path):
    """Unpacked outside the repository, the manifest's sample-data command loads every sample image and label."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    manifest = PluginManifest.from_file(site / "napari_dmd" / "napari.yaml")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    (sample,) = manifest.contributions.sample_data
    module, func = commands[sample.command].split(":")
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import importlib, napari_dmd.sample_data as s\n"
        f"layers = getattr(importlib.import_module({module!r}), {func!r})()\n"
        "print(s.SAMPLE_DIR)\n"
        "print(sum(t == 'image' for *_, t in layers), sum(t == 'labels' for *_, t in layers))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    sample_dir, counts = result.stdout.splitlines()[-2:]
    assert Path(sample_dir) == site / "napari_dmd" / "_sample"
    n_images = len(list((src / "sample_data" / "imagesTr").glob("*.nii.gz")))
    n_labels = len(list((src / "sample_data" / "labelsTr").glob("*.nii.gz")))
    assert counts.split() == [str(n_images), str(n_labels)]


def _nodes(node: ast.AST, module_level: bool) -> Iterator[ast.AST]:
    """The node and those below it; with module_level, not the bodies of functions (run only when called)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not (module_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))):
            yield from _nodes(child, module_level)


def _imports(paths: list[Path], module_level: bool) -> set[str]:
    """Top-level names of the absolute imports in these files (with module_level, those run on import)."""
    found: set[str] = set()
    for path in paths:
        for node in _nodes(ast.parse(path.read_text(encoding="utf-8")), module_level):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"napari_dmd"}


def _distributions(modules: set[str]) -> set[str]:
    owners = packages_distributions()
    missing = modules - owners.keys()
    assert not missing, f"imported but not installed: {missing}"
    return {canonicalize_name(d) for m in modules for d in owners[m]}


def _declared(wheel: Path, extra: str) -> set[str]:
    """The distributions the wheel requires, with this extra ("" for none)."""
    reqs = [Requirement(line.removeprefix("Requires-Dist:").strip())
            for line in metadata(wheel, "METADATA").splitlines() if line.startswith("Requires-Dist:")]
    return {canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate({"extra": extra})}


def test_engine_dependencies_are_declared_and_hold_no_gui(src, wheel):
    """The engine's module-level imports are core dependencies; napari and Qt are not."""
    core = _declared(wheel, "")
    assert _distributions(_imports(list((src / "napari_dmd").glob("*.py")), module_level=True)) - core == set()
    gui = {"napari", "qtpy", "superqt", "magicgui", "pyqt5", "pyqt6", "pyside2", "pyside6", "vispy"}
    assert core & gui == set(), "the engine must install without napari or Qt"


def test_every_import_is_declared_with_the_napari_or_export_extra(src, wheel):
    """The plugin's imports, and the engine's deferred ones (the napari demo, ONNX export), come with
    napari-dmd[napari] or napari-dmd[export]."""
    every = _imports(list((src / "napari_dmd").rglob("*.py")), module_level=False)
    assert _distributions(every) - _declared(wheel, "napari") - _declared(wheel, "export") == set()


def test_metadata_is_declared_once_in_setup_cfg(src, wheel):
    """setup.cfg holds the metadata and options, pyproject.toml the build system and tools: no field in both."""
    import configparser

    import tomllib

    pyproject = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    assert "project" not in pyproject and {"build-system", "tool"} <= pyproject.keys()
    cfg = configparser.ConfigParser()
    cfg.read(src / "setup.cfg", encoding="utf-8")
    assert cfg["metadata"]["name"] == "napari-dmd" and "install_requires" in cfg["options"]
    meta = metadata(wheel, "METADATA")
    assert "License-Expression: BSD-3-Clause" in meta and "Name: napari-dmd" in meta


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md", "docs/precision.md", "docs/distributed.md",
                                 "docs/method.md", "docs/command-line.md"])
def test_the_documents_close_every_code_block(doc):
    """An unclosed fence turns the rest of a page into code on PyPI and GitHub."""
    fences = [line for line in (ROOT / doc).read_text(encoding="utf-8").splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0 and all(f == "```" for f in fences[1::2]), fences
