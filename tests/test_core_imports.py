"""Every module outside plugin/ imports no Qt, napari or magicgui, and nothing from plugin/: the engine, the
command line and the dock's state run headless."""
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "napari_dmd"
CORE = sorted(p.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
              for p in PACKAGE.rglob("*.py")
              if p.stem not in ("__init__", "__main__") and p.relative_to(PACKAGE).parts[0] != "plugin")
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt", "napari_dmd.plugin")


def test_the_core_is_every_module_outside_plugin():
    assert {"cli.train", "cli.predict", "config", "data", "inference", "jobs", "pairing", "plan", "session",
            "training", "workspace"} <= set(CORE)


def test_core_imports_no_gui_and_nothing_of_the_plugin():
    code = (
        "import sys\n"
        + "".join(f"import napari_dmd.{m}\n" for m in CORE)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r} or m.startswith('napari_dmd.plugin'))\n"
        + "print(bad); assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
