"""What napari itself costs to add a result layer: the floor under the dock's event-loop stalls.

Opens the demo viewer (12 sample images, 3 with labels, the DMD dock) at 1280x800, then for each of the
first ``--images`` images adds a prediction (Labels) and a disagreement (Image) layer exactly as the dock
does (``plugin.results.show_prediction`` / ``show_disagreement``, the user's selection left as it is),
one at a time, with only that image's layers visible. Prints the milliseconds of each insert (one
call on the GUI thread, nothing else running) and of the canvas draw that follows.

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/layer_insert.py --images 6
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6)
    opts = ap.parse_args()

    from napari.layers import Image
    from qtpy.QtWidgets import QApplication

    from napari_dmd.plugin.demo import open_demo
    from napari_dmd.plugin.result_layers import focus, show_disagreement, show_prediction

    viewer = open_demo()
    viewer.window.resize(1280, 800)
    app = QApplication.instance()

    def settle(seconds: float = 0.3) -> float:
        """Process events for ``seconds``; the milliseconds spent inside the first processEvents call."""
        t0 = time.perf_counter()
        app.processEvents()
        first = 1000 * (time.perf_counter() - t0)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.005)
        return first

    settle(1.0)
    images = [la for la in viewer.layers if isinstance(la, Image)][:opts.images]
    print(f"{len(viewer.layers)} layers in the viewer; napari {__import__('napari').__version__}")
    rows = []
    for image in images:
        focus(viewer, image.name)
        settle()
        data = np.asarray(image.data, np.float32)
        labels = (data > np.percentile(data, 90)).astype(np.uint8)
        disagreement = np.random.default_rng(0).random(data.shape, np.float32) * 0.3
        row = []
        for show, values in ((show_prediction, labels), (show_disagreement, disagreement)):
            t0 = time.perf_counter()
            show(viewer, image.name, values)
            insert = 1000 * (time.perf_counter() - t0)
            draw = settle()
            row += [insert, draw]
        rows.append(row)
        print(f"{image.name}: prediction insert {row[0]:.0f} ms, draw {row[1]:.0f} | "
              f"disagreement insert {row[2]:.0f} ms, draw {row[3]:.0f}", flush=True)
    inserts = np.array(rows)[:, [0, 2]]
    print(f"inserts: median {np.median(inserts):.0f} ms, range {inserts.min():.0f}-{inserts.max():.0f} ms "
          f"({inserts.size} layers)")
    viewer.close()


if __name__ == "__main__":
    main()
