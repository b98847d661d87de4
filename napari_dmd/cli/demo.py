"""``napari-dmd demo``: napari with the plugin and the sample data, or the same loop headless."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..sample_data import SAMPLE_DIR


def _free_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... whichever does not exist yet."""
    candidates = (base.with_name(f"{base.name}-{k}") if k > 1 else base for k in range(1, 10_000))
    return next(p for p in candidates if not p.exists())


def sample_workspace(out: Path) -> Path:
    """A copy of the sample workspace in a new folder under ``out`` (its labels are saved there as you go)."""
    import shutil

    workspace = _free_folder(out / "workspace")
    shutil.copytree(SAMPLE_DIR, workspace, ignore=shutil.ignore_patterns("__init__.py", "__pycache__", ".*"))
    print(f"the sample workspace copied to {workspace}")
    return workspace


def cmd_demo(args: argparse.Namespace) -> int | None:
    """napari with the dock on a copy of the sample workspace, or the same loop headless."""
    if args.headless:
        from .parser import build_parser

        workspace = sample_workspace(args.out)
        for argv in (["train", "--workspace", str(workspace), "--iterations", str(args.iterations), "--lr-step",
                      str(args.iterations)],
                     ["predict", "--workspace", str(workspace)]):
            print("napari-dmd " + " ".join(argv))
            cmd = build_parser().parse_args(argv)
            code = cmd.func(cmd)
            if code:
                return code
        return None
    import napari

    from ..plugin.demo import check_screen, open_workspace, train_and_screenshot

    if args.screenshot:
        print(train_and_screenshot(args.screenshot, args.iterations, args.iterations // 3))
        return None
    check_screen()
    open_workspace(sample_workspace(args.out))
    napari.run()
    return None


