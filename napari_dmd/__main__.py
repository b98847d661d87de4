"""``python -m napari_dmd …`` runs the ``napari-dmd`` command line, so ``torchrun -m napari_dmd train …`` works."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
