"""The napari side of napari-dmd: reader, writers, sample data and the training dock.

Only ``widget.py``, ``curves.py`` and ``demo.py`` import Qt; the other modules hold plain
functions over arrays and napari layers, so they can be tested without a window.
"""
