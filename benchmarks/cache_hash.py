"""What checking a ``--cache`` entry by content costs, against the read the cache saves.

Each source's SHA-256 (``volume_cache.file_state``) is computed once per run; the run without a cache reads and
decodes every image instead. Measured: (1) la_half's 100 labeled images and labels, ``load_training_data``
without a cache, with a warm cache (hashes included) and the hashes alone; (2) one synthetic 512×512×``--depth``
int16 CT-like volume as .nii.gz and as .nii: ``read_image`` against its hash. Times are the best of ``--repeat``.

    .venv/bin/python benchmarks/cache_hash.py --repeat 3
"""
from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_dmd.folders import load_training_data
from napari_dmd.io import Geometry, read_image, write_image
from napari_dmd.volume_cache import file_state

from datasets import SHARED


def best(call: Callable[[], object], repeat: int) -> float:
    """The shortest of ``repeat`` runs of ``call``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def la_half(repeat: int, work: Path) -> None:
    """The whole la_half set: a run's reading with and without the cache, and the hashing alone."""
    images, labels = SHARED / "la_half" / "imagesTr", SHARED / "la_half" / "labelsTr"
    cache = work / "cache"
    load_training_data(images, labels, [], cache=cache)  # the entries written once
    sources = sorted(images.iterdir()) + sorted(labels.iterdir())
    size = sum(p.stat().st_size for p in sources) / 1e6
    plain = best(lambda: load_training_data(images, labels, []), repeat)
    cached = best(lambda: load_training_data(images, labels, [], cache=cache), repeat)
    hashed = best(lambda: [file_state(p) for p in sources], repeat)
    print(f"la_half, {len(sources)} files, {size:.1f} MB: read without cache {plain:.2f} s, with the cache "
          f"{cached:.2f} s, of which hashing the sources {hashed:.2f} s ({hashed / plain:.1%} of the read it saves)")


def large(repeat: int, work: Path, depth: int) -> None:
    """One large volume: decoding it against hashing its file."""
    rng = np.random.default_rng(0)
    volume = (rng.normal(0, 200, (depth, 512, 512)) + 40).astype(np.int16)
    for name in ("ct.nii.gz", "ct.nii"):
        path = work / name
        write_image(path, volume, Geometry.from_scale((1.0, 0.7, 0.7)))
        read = best(lambda p=path: read_image(p), repeat)
        hashed = best(lambda p=path: file_state(p), repeat)
        print(f"512×512×{depth} int16 {name} ({path.stat().st_size / 1e6:.0f} MB): read_image {read:.2f} s, hash "
              f"{hashed:.2f} s ({hashed / read:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--depth", type=int, default=200, help="slices of the synthetic volume")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, best of {args.repeat}")
    work = Path(tempfile.mkdtemp(prefix="cache-hash-"))
    try:
        la_half(args.repeat, work)
        large(args.repeat, work, args.depth)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
