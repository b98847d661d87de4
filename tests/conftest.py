"""Fixtures shared by the engine tests."""
import pytest
from cli_helpers import GEOM

from napari_dmd import settle
from napari_dmd.checkpoint import ModelPair, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.runtime import resolve_device

from synthetic import make_case, write_dataset


@pytest.fixture(autouse=True, scope="session")
def precision_cache(tmp_path_factory):
    """The precision self-check's verdicts go to a folder of this test session, not the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NAPARI_DMD_CACHE", str(tmp_path_factory.mktemp("napari-dmd-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def quick_settling(request, monkeypatch):
    """Batch-norm settling over 2 batches instead of 16 (it runs at every refresh and at every run's end, and on the
    suite's tiny runs took more time than training); a test marked ``real_settling`` keeps the product's count."""
    if request.node.get_closest_marker("real_settling") is None:
        monkeypatch.setattr(settle, "SETTLE_BATCHES", 2)


@pytest.fixture
def tiny_cases():
    """Three labeled-able binary cases of 16×24×24 voxels."""
    return [make_case(s) for s in range(3)]


@pytest.fixture
def data(tmp_path):
    """images/case0..2 (case0, case1 labeled, 3 classes), labels/, truth/ (all three)."""
    return write_dataset(tmp_path, GEOM)


@pytest.fixture
def model(tmp_path):
    """An untrained 3-class checkpoint (no training needed to test predict's refusals)."""
    pair = ModelPair.create(TrainConfig(num_classes=3, patch_size=(16, 16, 16), precision="fp32"), 3,
                            resolve_device("cpu"))
    return save_model(pair, tmp_path / "untrained" / "model.pt")
