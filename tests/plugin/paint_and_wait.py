"""Run by test_workspace_kill: napari with the dock on the workspace ROOT (autosave within N seconds), a stroke on
a new slice of the first case every STEP seconds through the labels layer's brush API, each stroke's slice and
time printed, until the test kills this process."""
import sys
import time

from qtpy.QtWidgets import QApplication

from napari_dmd.plugin.demo import dock_widget


def main(root: str, seconds: int, step: float) -> None:
    import napari

    viewer = napari.Viewer(show=True)
    widget = dock_widget(viewer)
    widget.settings.set(autosave=seconds)
    assert widget.workspace.open(root)
    layer = viewer.layers[f"{widget.workspace.case} labels"]
    app = QApplication.instance()
    for index in range(layer.data.shape[0]):
        layer.paint((index, 1, 1), 1, refresh=True)
        print(f"stroke {index} {time.time():.3f}", flush=True)
        until = time.monotonic() + step
        while time.monotonic() < until:
            app.processEvents()
            time.sleep(0.01)
    print("all painted", flush=True)
    napari.run()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
