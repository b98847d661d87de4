"""The napari side of napari-dmd: reader, writers, sample data and the training dock.

The dock's state is ``napari_dmd.session.Session`` (no Qt). Qt is imported only by the dock's views
(``widget.py`` and the panels it is made of, ``curves.py``, ``job_thread.py``, ``closing.py``,
``result_refresh.py``) and ``demo.py``; the other modules hold plain functions over arrays and
napari layers, so they can be tested without a window.
"""
