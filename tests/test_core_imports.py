"""The engine imports no Qt, napari or magicgui, so it runs headless and from the CLI."""
import subprocess
import sys

CORE = ["checkpoint", "cli", "config", "data", "distributed", "errors", "folders", "heads", "inference", "io",
        "losses", "metrics", "networks", "precision", "ranking", "review", "runtime", "sample_data", "session",
        "training"]


def test_core_imports_no_gui():
    code = (
        "import sys\n"
        + "".join(f"import napari_dmd.{m}\n" for m in CORE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
          "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'vispy'))\n"
        + "print(bad); assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
