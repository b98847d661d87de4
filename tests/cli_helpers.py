"""What the command-line tests share: a geometry, fast training flags and ``run`` (the command's exit code,
its output, one line per error). The tiny data set and checkpoint are the fixtures ``data`` and ``model``
(conftest.py)."""
from napari_dmd import cli
from napari_dmd.io import Geometry

GEOM = Geometry(spacing=(0.8, 0.8, 2.0), origin=(10.0, -5.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
FAST = ["--iterations", "1", "--patch", "16", "16", "16", "--labeled-batch", "1", "--unlabeled-batch", "1",
        "--device", "cpu", "--precision", "fp32"]


def run(argv, capsys, code=0):
    """``main(argv)`` must return ``code``; returns (stdout, stderr). Errors must be one line."""
    assert cli.main([str(a) for a in argv]) == code
    out, err = capsys.readouterr()
    if code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return out, err
