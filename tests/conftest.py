"""Fixtures shared by the engine tests."""
import pytest

from synthetic import make_case


@pytest.fixture(autouse=True, scope="session")
def precision_cache(tmp_path_factory):
    """The precision self-check's verdicts go to a folder of this test session, not the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NAPARI_DMD_CACHE", str(tmp_path_factory.mktemp("napari-dmd-cache")))
    yield
    mp.undo()


@pytest.fixture
def tiny_cases():
    """Three labeled-able binary cases of 16×24×24 voxels."""
    return [make_case(s) for s in range(3)]
