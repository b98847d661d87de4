"""``python -m napari_dmd.cli``."""
import sys

from . import main

sys.exit(main())
