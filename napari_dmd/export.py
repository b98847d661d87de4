"""A trained model for other tools: network A (and optionally B) as TorchScript or ONNX, with a JSON file
(``EXPORT_JSON``) that says what the networks need and give, and the ``napari-dmd export`` sub-command.

Each network takes a float32 batch of normalised windows of the training patch, (B, C, *patch), and returns
logits (B, K, *patch) in eval mode (dropout off, batch-norm running statistics). Every file is serialised in
memory and written by the one atomic write path (``io.write_bytes``: a temporary file beside it, read back,
renamed into place), the JSON last, under the output guard of every command (``outputs``): a file in the
output folder is replaced only if an earlier export wrote it, unchanged.
"""
from __future__ import annotations

import argparse
import json
import logging
import warnings
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import WEIGHTING
from .errors import DataError
from .io import write_bytes, write_text
from .outputs import locked

if TYPE_CHECKING:  # torch is imported when exporting, so that the command line starts fast
    import torch
    from torch import nn

    from .checkpoint import ModelPair

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}  # export format: file extension
EXPORT_JSON = "napari-dmd-export.json"
EXPORT_FORMAT = "napari-dmd-export/1"
NORMALIZATION_STEPS = ("per image and channel: replace NaN/Inf by 0; clip to the channel's 0.5th and 99.5th "
                       "percentiles; subtract the clipped channel's mean and divide by its standard deviation "
                       "(all zeros for a constant channel)")
ONNX_MISSING = "ONNX export needs the packages onnx and onnxscript: pip install \"napari-dmd[export]\""


def describe(model: ModelPair, networks: dict[str, str], fmt: str) -> dict[str, Any]:
    """What a tool needs to run the exported networks: the JSON written beside them."""
    from .heads import out_channels
    from .inference import default_stride

    patch = list(model.config.patch_size)
    channels = len(model.channels)
    k = out_channels(model.num_classes)
    return {
        "format": EXPORT_FORMAT,
        "written_by": f"napari-dmd {__version__}",
        "model_iterations": model.model_iterations,
        "export_format": fmt,
        "networks": networks,
        "ndim": model.ndim,
        "input": {"name": "image", "shape": ["batch", channels, *patch], "dtype": "float32",
                  "axes": "batch, channel, " + ", ".join("zyx"[-model.ndim:]), "channels": channels,
                  "channel_names": list(model.channels)},
        "normalization": {"name": model.normalization, "steps": NORMALIZATION_STEPS},
        "patch": patch,
        "spacing": list(model.config.spacing) if model.config.spacing else None,
        "sliding_window": {"stride": list(default_stride(tuple(patch))), "weighting": WEIGHTING,
                           "outside_image": "zeros (after normalisation)",
                           "combine": "weighted mean of the probabilities where windows overlap, then argmax",
                           "labels": "napari-dmd's: the argmax of the mean of network A's and B's "
                                       "probabilities (export both); network A alone as the paper"},
        "class_names": list(model.class_names),
        "output": {"name": "logits", "shape": ["batch", k, *patch],
                   "activation": "sigmoid" if k == 1 else "softmax",
                   "classes": "one sigmoid channel: the probability of class 1 (background is 1 - p)" if k == 1
                   else "one softmax channel per class, background first"},
    }


def _save_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Network ``net`` traced at the patch size (any batch size) and saved. It is serialised into memory and
    written by ``io.write_bytes``: torch's own file writer aborts the process on a full disk."""
    import torch

    traced = torch.jit.trace(net, example, check_trace=False)
    buffer = BytesIO()
    torch.jit.save(traced, buffer)
    write_bytes(path, buffer.getvalue())


def _save_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Network ``net`` as one ONNX file (weights inside) at the patch size, with a dynamic batch axis, serialised
    into memory and written by ``io.write_bytes``."""
    import torch

    try:
        import onnx  # noqa: F401  (the exporter needs both)
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise DataError(ONNX_MISSING) from exc
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    program = torch.onnx.export(net, (example,), input_names=["image"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False)
    write_bytes(path, program.model_proto.SerializeToString())


def export_model(checkpoint_path: Path, out_dir: Path, fmt: str, both: bool = False) -> list[Path]:
    """Write network A (and B with ``both``) of the checkpoint as ``fmt`` (one of ``FORMATS``) into ``out_dir``,
    then ``EXPORT_JSON``; the paths written. ``DataError`` (nothing written) when a file there would be replaced
    that export did not write; ``CheckpointError`` for a checkpoint that does not load."""
    import torch

    from .checkpoint import load_model

    if fmt not in FORMATS:
        raise DataError(f"export format {fmt!r}: one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    names = {n: f"network_{n.lower()}{FORMATS[fmt]}" for n in ("AB" if both else "A")}
    paths = [out_dir / name for name in (*names.values(), EXPORT_JSON)]
    model = load_model(Path(checkpoint_path), "cpu")
    if not model.config.patch_size:
        raise DataError(f"{checkpoint_path} records no patch size, so the exported networks' input is unknown")
    with locked(out_dir, "export") as outputs:
        outputs.claim(paths)
        save = _save_torchscript if fmt == "torchscript" else _save_onnx
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracers' warnings about the padding branch: the size is fixed
            for net, path in zip(model.nets, paths[:-1]):
                net.eval()  # dropout off, batch-norm running statistics
                example = torch.zeros(1, len(model.channels), *model.config.patch_size)
                with torch.no_grad():
                    save(net, example, path)
                outputs.wrote(path)
        write_text(paths[-1], json.dumps(describe(model, names, fmt), indent=2) + "\n")
        outputs.wrote(paths[-1])
    return paths


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``export`` sub-command."""
    p = sub.add_parser("export", help="write a trained network as TorchScript or ONNX for other tools")
    p.add_argument("--model", type=Path, required=True, help="model.pt of a run folder")
    p.add_argument("--format", choices=tuple(FORMATS), required=True, dest="fmt")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the network(s) and " + EXPORT_JSON + "; files there are replaced only if export "
                        "wrote them")
    p.add_argument("--both", action="store_true",
                   help="network B as well (napari-dmd's labels are the argmax of the mean of both)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export as the command line asked; print what was written."""
    written = export_model(args.model, args.out, args.fmt, args.both)
    print(f"exported {', '.join(p.name for p in written[:-1])} and {written[-1].name} into {args.out}")
    return 0
