"""napari-dmd: semi-supervised segmentation with Deep Mutual Distillation."""
__version__ = "0.1.0"
