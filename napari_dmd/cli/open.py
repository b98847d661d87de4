"""``napari-dmd open FOLDER``: napari with the DMD dock on a workspace."""
from __future__ import annotations

import argparse

from ..workspace import Workspace


def cmd_open(args: argparse.Namespace) -> None:
    """Check the workspace (one line and exit status 2 where it cannot be listed), then napari on it."""
    with Workspace(args.folder, writable=False) as ws:
        ws.cases()
    import napari

    from ..plugin.demo import open_workspace

    open_workspace(args.folder)
    napari.run()
